#include "registry/registry.h"
#include "core/buf.h"
#include "core/ini.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    kr_registry *r;
    kr_provider *cur_p;
    kr_model *cur_m;
    char cur_model_provider[32];
    /* model -> provider name, resolved once every provider is known */
    char (*model_provider)[32];
} parse_ctx;

static int split_list(const char *v, char (*out)[64], size_t cap_each, size_t max, size_t *n,
                      kr_diag *d, int line)
{
    const char *item;
    size_t len;
    for (*n = 0; kr_list_next(&v, &item, &len); (*n)++) {
        if (*n >= max) return kr_fail(d, KR_EPARSE, "line %d: more than %zu entries", line, max);
        if (kr_memlcpy((char *)out + *n * cap_each, cap_each, item, len))
            return kr_fail(d, KR_EPARSE, "line %d: list entry too long", line);
    }
    return 0;
}

/* "A, B*3": environment variable names with weights (1 when not given). */
static int key_pool(const char *value, char (*keys)[64], int *weight, size_t *n, kr_diag *d,
                    int line)
{
    int rc = split_list(value, keys, 64, KR_REG_MAX_LIST, n, d, line);
    if (rc) return rc;
    for (size_t i = 0; i < *n; i++) {
        char *star = strchr(keys[i], '*');
        weight[i] = 1;
        if (star) {
            int64_t w;
            if (kr_parse_i64(star + 1, strlen(star + 1), &w) || w < 1 || w > 1000)
                return kr_fail(d, KR_EPARSE, "line %d: a key weight is 1..1000 ('%s')", line,
                               keys[i]);
            weight[i] = (int)w;
            *star = 0;
            size_t l = strlen(keys[i]);
            while (l && keys[i][l - 1] == ' ')
                keys[i][--l] = 0;
        }
        if (!keys[i][0]) return kr_fail(d, KR_EPARSE, "line %d: an empty key name", line);
    }
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1")) *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0")) *out = false;
    else return -1;
    return 0;
}

static int price(const char *v, int64_t *out, kr_diag *d, int line)
{
    int64_t x;
    if (kr_parse_micros(v, strlen(v), &x) || x > 1000000000000LL)
        return kr_fail(d, KR_EPARSE, "line %d: price '%s' is not a decimal like 3.75", line, v);
    *out = x;
    return 0;
}

/* A provider's base URL: http(s)://, no control bytes or spaces, trailing
 * slashes dropped. */
static int set_base_url(kr_provider *p, const char *value, kr_diag *d)
{
    if (strncmp(value, "https://", 8) && strncmp(value, "http://", 7))
        return kr_fail(d, KR_EPARSE, "base_url must be http(s)://");
    for (const char *c = value; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return kr_fail(d, KR_EPARSE, "base_url holds a space or a control byte");
    char url[sizeof p->base_url];
    if (kr_strlcpy(url, value, sizeof url)) return kr_fail(d, KR_EPARSE, "base_url too long");
    size_t l = strlen(url);
    while (l > 0 && url[l - 1] == '/') url[--l] = 0;
    memcpy(p->base_url, url, sizeof url);
    return 0;
}

int kr_registry_set_base_url(kr_registry *r, const char *provider, const char *url, kr_diag *d)
{
    kr_provider *p = (kr_provider *)kr_registry_provider(r, provider);
    if (!p) return kr_fail(d, KR_EUNKNOWN_PROVIDER, "no provider '%.64s' in the registry", provider);
    kr_diag inner = {{0}};
    int rc = set_base_url(p, url, &inner);
    if (rc) return kr_fail(d, rc, "provider '%s': %s", p->name, inner.msg);
    return 0;
}

static int on_kv(void *ud, const char *section, const char *name, const char *key,
                 const char *value, int line, kr_diag *d)
{
    parse_ctx *c = ud;
    kr_registry *r = c->r;
    if (!strcmp(section, "provider")) {
        if (!name[0]) return kr_fail(d, KR_EPARSE, "line %d: [provider NAME] needs a name", line);
        if (!key) {
            if (kr_registry_provider(r, name))
                return kr_fail(d, KR_EPARSE, "line %d: provider '%s' defined twice", line, name);
            if (r->nproviders >= KR_REGISTRY_MAX_PROVIDERS)
                return kr_fail(d, KR_EPARSE, "line %d: too many providers", line);
            c->cur_p = &r->providers[r->nproviders++];
            memset(c->cur_p, 0, sizeof *c->cur_p);
            if (kr_strlcpy(c->cur_p->name, name, sizeof c->cur_p->name))
                return kr_fail(d, KR_EPARSE, "line %d: provider name too long", line);
            c->cur_m = NULL;
            return 0;
        }
        kr_provider *p = c->cur_p;
        if (!strcmp(key, "protocol")) {
            int pr = kr_proto_parse(value);
            if (pr < 0)
                return kr_fail(d, KR_EPARSE, "line %d: protocol must be anthropic, openai or gemini",
                               line);
            p->proto = (kr_proto)pr;
        } else if (!strcmp(key, "base_url")) {
            kr_diag inner = {{0}};
            int rc = set_base_url(p, value, &inner);
            if (rc) return kr_fail(d, rc, "line %d: %s", line, inner.msg);
        } else if (!strcmp(key, "credential_env")) {
            return split_list(value, p->credential_env, 64, KR_REG_MAX_LIST, &p->ncredential_env,
                              d, line);
        } else if (!strcmp(key, "header")) {
            if (!strcmp(value, "x-api-key")) p->header = KR_AUTH_X_API_KEY;
            else if (!strcmp(value, "bearer")) p->header = KR_AUTH_BEARER;
            else if (!strcmp(value, "x-goog-api-key")) p->header = KR_AUTH_X_GOOG_API_KEY;
            else
                return kr_fail(d, KR_EPARSE, "line %d: header must be x-api-key, bearer or x-goog-api-key",
                               line);
        } else if (!strcmp(key, "platform")) {
            if (parse_bool(value, &p->platform))
                return kr_fail(d, KR_EPARSE, "line %d: platform must be true or false", line);
        } else if (!strcmp(key, "platform_key_env")) {
            /* one name, or a pool: "A, B*3" (a weight after '*', 1..1000) */
            int rc = key_pool(value, p->platform_keys, p->key_weight, &p->nplatform_keys, d, line);
            if (rc) return rc;
            if (!p->nplatform_keys)
                return kr_fail(d, KR_EPARSE, "line %d: platform_key_env is empty", line);
            kr_strlcpy(p->platform_key_env, p->platform_keys[0], sizeof p->platform_key_env);
        } else if (!strcmp(key, "fallback") || !strcmp(key, "fallback_2") ||
                   !strcmp(key, "fallback_3")) {
            size_t i = key[8] ? (size_t)(key[9] - '1') : 0;
            if (i != p->nfallback)
                return kr_fail(d, KR_EPARSE, "line %d: fallbacks go in order: fallback, fallback_2, "
                                             "fallback_3", line);
            kr_deployment *dep = &p->fallback[p->nfallback++];
            /* "URL" then, after a space, the deployment's keys */
            const char *sp = strchr(value, ' ');
            size_t ul = sp ? (size_t)(sp - value) : strlen(value);
            char url[300];
            if (kr_memlcpy(url, sizeof url, value, ul))
                return kr_fail(d, KR_EPARSE, "line %d: fallback URL too long", line);
            kr_provider tmp;
            memset(&tmp, 0, sizeof tmp);
            kr_diag inner = {{0}};
            int rc = set_base_url(&tmp, url, &inner);
            if (rc) return kr_fail(d, rc, "line %d: %s", line, inner.msg);
            memcpy(dep->base_url, tmp.base_url, sizeof dep->base_url);
            if (sp && (rc = key_pool(sp + 1, dep->keys, dep->weight, &dep->nkeys, d, line)))
                return rc;
        } else if (!strcmp(key, "model_prefixes")) {
            return split_list(value, p->model_prefixes, 64, KR_REG_MAX_LIST, &p->nmodel_prefixes,
                              d, line);
        } else if (!strcmp(key, "key_prefixes")) {
            char tmp[KR_REG_MAX_LIST][64];
            int rc = split_list(value, tmp, 64, KR_REG_MAX_LIST, &p->nkey_prefixes, d, line);
            if (rc) return rc;
            for (size_t i = 0; i < p->nkey_prefixes; i++)
                if (kr_strlcpy(p->key_prefixes[i], tmp[i], sizeof p->key_prefixes[i]))
                    return kr_fail(d, KR_EPARSE, "line %d: key prefix too long", line);
        } else {
            return kr_fail(d, KR_EPARSE, "line %d: unknown provider setting '%s'", line, key);
        }
        return 0;
    }
    if (!strcmp(section, "model")) {
        if (!name[0]) return kr_fail(d, KR_EPARSE, "line %d: [model ID] needs an id", line);
        if (!key) {
            for (size_t i = 0; i < r->nmodels; i++)
                if (!strcmp(r->models[i].id, name))
                    return kr_fail(d, KR_EPARSE, "line %d: model '%s' defined twice", line, name);
            if (r->nmodels >= KR_REGISTRY_MAX_MODELS)
                return kr_fail(d, KR_EPARSE, "line %d: too many models", line);
            c->cur_m = &r->models[r->nmodels++];
            memset(c->cur_m, 0, sizeof *c->cur_m);
            c->cur_m->provider = (size_t)-1;
            c->model_provider[c->cur_m - r->models][0] = 0;
            if (kr_strlcpy(c->cur_m->id, name, sizeof c->cur_m->id))
                return kr_fail(d, KR_EPARSE, "line %d: model id too long", line);
            c->cur_p = NULL;
            return 0;
        }
        kr_model *m = c->cur_m;
        size_t mi = (size_t)(m - r->models);
        if (!strcmp(key, "provider")) {
            if (kr_strlcpy(c->model_provider[mi], value, sizeof c->model_provider[mi]))
                return kr_fail(d, KR_EPARSE, "line %d: provider name too long", line);
        } else if (!strcmp(key, "aliases")) {
            char tmp[KR_REG_MAX_LIST][64];
            int rc = split_list(value, tmp, 64, KR_REG_MAX_LIST, &m->naliases, d, line);
            if (rc) return rc;
            for (size_t i = 0; i < m->naliases; i++) kr_strlcpy(m->aliases[i], tmp[i], 128);
        } else if (!strcmp(key, "price_input")) {
            m->priced = true;
            return price(value, &m->price_input, d, line);
        } else if (!strcmp(key, "price_output")) {
            m->priced = true;
            return price(value, &m->price_output, d, line);
        } else if (!strcmp(key, "price_cache_read")) {
            return price(value, &m->price_cache_read, d, line);
        } else if (!strcmp(key, "price_cache_write")) {
            return price(value, &m->price_cache_write, d, line);
        } else {
            return kr_fail(d, KR_EPARSE, "line %d: unknown model setting '%s'", line, key);
        }
        return 0;
    }
    if (!key) return kr_fail(d, KR_EPARSE, "line %d: unknown section [%s]", line, section);
    return kr_fail(d, KR_EPARSE, "line %d: '%s' outside a [provider] or [model] section", line, key);
}

void kr_provider_deployment(const kr_provider *p, size_t d, kr_deployment_view *out)
{
    const kr_deployment *f = d ? &p->fallback[d - 1] : NULL;
    bool own = f && f->nkeys;
    out->base_url = f ? f->base_url : p->base_url;
    out->keys = (const char(*)[64])(own ? f->keys : p->platform_keys);
    out->weight = own ? f->weight : p->key_weight;
    out->nkeys = own ? f->nkeys : p->nplatform_keys;
}

int kr_registry_parse(const char *text, size_t n, kr_registry **out, kr_diag *d)
{
    kr_registry *r = kr_xcalloc(1, sizeof *r);
    r->providers = kr_xcalloc(KR_REGISTRY_MAX_PROVIDERS, sizeof *r->providers);
    r->models = kr_xcalloc(KR_REGISTRY_MAX_MODELS, sizeof *r->models);
    parse_ctx c = {.r = r, .model_provider = kr_xcalloc(KR_REGISTRY_MAX_MODELS, 32)};
    int rc = kr_ini_parse(text, n, on_kv, &c, d);
    for (size_t i = 0; !rc && i < r->nproviders; i++) {
        kr_provider *p = &r->providers[i];
        if (!p->base_url[0]) rc = kr_fail(d, KR_EPARSE, "provider '%s' has no base_url", p->name);
        else if (p->platform && !p->platform_key_env[0])
            rc = kr_fail(d, KR_EPARSE, "platform provider '%s' needs platform_key_env", p->name);
        else if (!p->ncredential_env)
            rc = kr_fail(d, KR_EPARSE, "provider '%s' has no credential_env", p->name);
    }
    for (size_t i = 0; !rc && i < r->nmodels; i++) {
        kr_model *m = &r->models[i];
        for (size_t j = 0; j < r->nproviders; j++)
            if (!strcmp(r->providers[j].name, c.model_provider[i])) m->provider = j;
        if (m->provider == (size_t)-1)
            rc = kr_fail(d, KR_EPARSE, "model '%s': unknown provider '%s'", m->id,
                         c.model_provider[i]);
        for (size_t a = 0; !rc && a < m->naliases; a++)
            for (size_t j = 0; j < r->nmodels; j++)
                if (!strcmp(r->models[j].id, m->aliases[a]) ||
                    (j < i && kr_registry_model(r, m->aliases[a]) == &r->models[j]))
                    rc = kr_fail(d, KR_EPARSE, "alias '%s' of '%s' is already a model or alias",
                                 m->aliases[a], m->id);
    }
    free(c.model_provider);
    if (rc) {
        kr_registry_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int parse_any(const char *text, size_t n, void *out, kr_diag *d)
{
    return kr_registry_parse(text, n, out, d);
}

int kr_registry_load(const char *path, kr_registry **out, kr_diag *d)
{
    return kr_ini_load(path, parse_any, out, d);
}

void kr_registry_free(kr_registry *r)
{
    if (!r) return;
    free(r->providers);
    free(r->models);
    free(r);
}

const kr_provider *kr_registry_provider(const kr_registry *r, const char *name)
{
    for (size_t i = 0; i < r->nproviders; i++)
        if (!strcmp(r->providers[i].name, name)) return &r->providers[i];
    return NULL;
}

const kr_model *kr_registry_model(const kr_registry *r, const char *name)
{
    for (size_t i = 0; i < r->nmodels; i++) {
        if (!strcmp(r->models[i].id, name)) return &r->models[i];
        for (size_t a = 0; a < r->models[i].naliases; a++)
            if (!strcmp(r->models[i].aliases[a], name)) return &r->models[i];
    }
    return NULL;
}

static const kr_provider *by_prefix(const kr_registry *r, const char *model, int proto)
{
    for (size_t i = 0; i < r->nproviders; i++) {
        if (proto >= 0 && (int)r->providers[i].proto != proto) continue;
        for (size_t j = 0; j < r->providers[i].nmodel_prefixes; j++) {
            const char *pre = r->providers[i].model_prefixes[j];
            if (!strncmp(model, pre, strlen(pre))) return &r->providers[i];
        }
    }
    return NULL;
}

const kr_provider *kr_registry_claim_proto(const kr_registry *r, const char *model, int proto)
{
    const kr_model *m = kr_registry_model(r, model);
    const kr_provider *p = m ? &r->providers[m->provider] : NULL;
    if (p && (proto < 0 || (int)p->proto == proto)) return p;
    const kr_provider *q = proto >= 0 ? by_prefix(r, model, proto) : NULL;
    if (q) return q;
    return p ? p : by_prefix(r, model, -1);
}

const kr_provider *kr_registry_claim(const kr_registry *r, const char *model)
{
    return kr_registry_claim_proto(r, model, -1);
}

int64_t kr_model_cost(const kr_model *m, const kr_usage *u)
{
    unsigned __int128 t = (unsigned __int128)u->input_tokens * (uint64_t)m->price_input +
                          (unsigned __int128)u->output_tokens * (uint64_t)m->price_output +
                          (unsigned __int128)u->cache_read_tokens * (uint64_t)m->price_cache_read +
                          (unsigned __int128)u->cache_write_tokens * (uint64_t)m->price_cache_write;
    t = (t + 999999) / 1000000;
    return t > (unsigned __int128)INT64_MAX ? INT64_MAX : (int64_t)t;
}

const kr_provider *kr_registry_key_issuer(const kr_registry *r, const char *value)
{
    const kr_provider *best = NULL;
    size_t bestlen = 0;
    for (size_t i = 0; i < r->nproviders; i++)
        for (size_t j = 0; j < r->providers[i].nkey_prefixes; j++) {
            const char *pre = r->providers[i].key_prefixes[j];
            size_t l = strlen(pre);
            if (l > bestlen && !strncmp(value, pre, l)) {
                best = &r->providers[i];
                bestlen = l;
            }
        }
    return best;
}
