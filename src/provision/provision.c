/*
 * provision.c -- the secret set, the environment builder and kr_provision(),
 * the one code path for a fresh create and a rebuild. See provision.h.
 */
#include "provision/provision.h"
#include "config/config.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- secret set ---- */

void kr_secrets_free(kr_secrets *s)
{
    for (size_t i = 0; i < s->n; i++) kr_secret_read_free(&s->e[i].read);
    free(s->e);
    memset(s, 0, sizeof *s);
}

static kr_secret_entry *set_find(kr_secrets *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->e[i].key, key)) return &s->e[i];
    return NULL;
}

const kr_secret_entry *kr_secrets_get(const kr_secrets *s, const char *key)
{
    return set_find((kr_secrets *)s, key);
}

void kr_secrets_put(kr_secrets *s, const char *key, kr_secret_state st, const char *value,
                       kr_origin origin)
{
    kr_secret_entry *e = set_find(s, key);
    bool had_org = false;
    if (e) {
        had_org = e->origin == KR_ORIGIN_ORG || e->overrides_org;
        kr_secret_read_free(&e->read);
    } else {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 16;
            s->e = kr_xrealloc(s->e, s->cap * sizeof *s->e);
        }
        e = &s->e[s->n++];
        memset(e, 0, sizeof *e);
        kr_strlcpy(e->key, key, sizeof e->key);
    }
    e->origin = origin;
    e->overrides_org = had_org && origin != KR_ORIGIN_ORG;
    e->read.state = st;
    if (st == KR_SECRET_VALUE) {
        e->read.value = kr_strdup(value ? value : "");
        e->read.len = strlen(e->read.value);
    } else if (st == KR_SECRET_UNREADABLE) {
        e->read.err = KR_ECRYPTO;
    }
}

static int load_scope(kr_store *st, const kr_master_key *mk, kr_scope scope, int64_t owner,
                      kr_origin origin, kr_secrets *out, kr_diag *d)
{
    kr_secret_row *rows;
    size_t n;
    int rc = kr_store_secret_list(st, scope, owner, &rows, &n, d);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        kr_buf b = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
        int orc = kr_secret_open(mk, scope, owner, rows[i].key, rows[i].ciphertext,
                                 strlen(rows[i].ciphertext), &b);
        kr_secrets_put(out, rows[i].key, orc ? KR_SECRET_UNREADABLE : KR_SECRET_VALUE,
                          orc ? NULL : (b.data ? b.data : ""), origin);
        if (b.data) sodium_memzero(b.data, b.len);
        kr_buf_free(&b);
    }
    kr_secret_rows_free(rows, n);
    return 0;
}

int kr_secrets_load(kr_store *st, const kr_master_key *mk, const kr_workspace *ws,
                       kr_secrets *out, kr_diag *d)
{
    memset(out, 0, sizeof *out);
    int rc = load_scope(st, mk, KR_SCOPE_ORG, ws->org_id, KR_ORIGIN_ORG, out, d);
    if (!rc) rc = load_scope(st, mk, KR_SCOPE_WORKSPACE, ws->id, KR_ORIGIN_WORKSPACE, out, d);
    if (rc) kr_secrets_free(out);
    return rc;
}

/* ---- environment ---- */

void kr_env_free(kr_env *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].key);
        if (e->v[i].value) {
            sodium_memzero(e->v[i].value, strlen(e->v[i].value));
            free(e->v[i].value);
        }
    }
    free(e->v);
    memset(e, 0, sizeof *e);
}

const kr_env_var *kr_env_get(const kr_env *e, const char *key)
{
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->v[i].key, key)) return &e->v[i];
    return NULL;
}

void kr_env_set(kr_env *e, const char *key, const char *value, kr_origin origin)
{
    kr_env_var *v = (kr_env_var *)kr_env_get(e, key);
    if (v) {
        sodium_memzero(v->value, strlen(v->value));
        free(v->value);
    } else {
        if (e->n == e->cap) {
            e->cap = e->cap ? e->cap * 2 : 32;
            e->v = kr_xrealloc(e->v, e->cap * sizeof *e->v);
        }
        v = &e->v[e->n++];
        v->key = kr_strdup(key);
    }
    v->value = kr_strdup(value);
    v->origin = origin;
    v->cls = kr_env_var_class(NULL, NULL, key, value);
}

void kr_env_unset(kr_env *e, const char *key)
{
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->v[i].key, key)) {
            free(e->v[i].key);
            if (e->v[i].value) {
                sodium_memzero(e->v[i].value, strlen(e->v[i].value));
                free(e->v[i].value);
            }
            memmove(&e->v[i], &e->v[i + 1], (e->n - i - 1) * sizeof e->v[0]);
            e->n--;
            return;
        }
}

static int cmp_var(const void *a, const void *b)
{
    return strcmp(((const kr_env_var *)a)->key, ((const kr_env_var *)b)->key);
}

void kr_env_sort(kr_env *e)
{
    if (e->n) qsort(e->v, e->n, sizeof e->v[0], cmp_var);
}

static bool registry_cred_name(const kr_registry *reg, const char *key)
{
    for (size_t i = 0; reg && i < reg->nproviders; i++)
        for (size_t j = 0; j < reg->providers[i].ncredential_env; j++)
            if (!strcmp(key, reg->providers[i].credential_env[j])) return true;
    return false;
}

kr_cred_class kr_env_var_class(const kr_runtimes *rts, const kr_registry *reg, const char *key,
                               const char *value)
{
    kr_cred_class c = kr_cred_classify(value, strlen(value));
    if (c != KR_CRED_UNKNOWN) return c;
    bool named = registry_cred_name(reg, key) ||
                 (rts && (kr_runtimes_names(rts, key, KR_RTVAR_CREDENTIAL, -1) ||
                          kr_runtimes_names(rts, key, KR_RTVAR_HEADERS, -1)));
    if (!named && !rts && !reg) { /* no profiles at hand: the usual spelling of a secret */
        size_t l = strlen(key);
        named = (l > 4 && !strcmp(key + l - 4, "_KEY")) || (l > 6 && !strcmp(key + l - 6, "_TOKEN"));
    }
    return named ? KR_CRED_UNKNOWN : KR_CRED_NONE;
}

bool kr_env_is_agent_var(const kr_provision_ctx *ctx, const char *key)
{
    if (registry_cred_name(ctx->reg, key)) return true;
    int role = kr_runtimes_role(ctx->rts, key);
    return role >= 0 && role != KR_RTVAR_MODEL;
}

static void trace_rule(kr_resolution *r, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void trace_rule(kr_resolution *r, const char *rule, const char *fmt, ...)
{
    if (r->ntrace >= KR_TRACE_MAX) {
        /* keep the last slot as a marker that the trace was cut */
        kr_strlcpy(r->trace[KR_TRACE_MAX - 1].text, "… more environment decisions",
                   sizeof r->trace[0].text);
        return;
    }
    kr_trace_step *s = &r->trace[r->ntrace++];
    kr_strlcpy(s->rule, rule, sizeof s->rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text, sizeof s->text, fmt, ap);
    va_end(ap);
}

static void base_url_for(const char *root, kr_proto proto, char *out, size_t cap)
{
    /* Anthropic clients append /v1/messages; OpenAI clients append to …/v1;
     * Gemini clients append /v1beta/models/… themselves. */
    kr_snprintf(out, cap, "%s%s", root, proto == KR_PROTO_OPENAI ? "/v1" : "");
}

/* BYOK: the variable a profile reads a credential of this class from. */
static const char *byok_var(const kr_runtime *rt, const kr_provider *p, kr_cred_class cls)
{
    if (cls == KR_CRED_ANTHROPIC_OAUTH) return rt->set_oauth;
    if (p->header == KR_AUTH_X_API_KEY && rt->set_api_key[0]) return rt->set_api_key;
    return rt->set_bearer;
}

int kr_env_build(const kr_provision_ctx *ctx, const kr_secrets *secrets, kr_resolution *res,
                 const char *token, kr_env *out, kr_diag *d)
{
    memset(out, 0, sizeof *out);
    if (res->err) return res->err;
    /* 1. every stored value, after the forbidden-key check */
    for (size_t i = 0; i < secrets->n; i++) {
        const kr_secret_entry *e = &secrets->e[i];
        if (e->read.state != KR_SECRET_VALUE) continue;
        kr_diag fd = {{0}};
        int rc = kr_policy_check_key(ctx->policy, e->key, &fd);
        if (rc) {
            kr_env_free(out);
            res->err = rc;
            kr_snprintf(res->msg, sizeof res->msg, "%s (found at %s scope)", fd.msg,
                        kr_origin_name(e->origin));
            trace_rule(res, "FORBID", "%s: %s", kr_err_name(rc), res->msg);
            return kr_fail(d, rc, "%s", res->msg);
        }
        kr_env_set(out, e->key, e->read.value, e->origin);
    }
    /* 2. nothing that steers an agent's credential survives from the store:
     *    the provisioner sets exactly the ones the route needs */
    bool byok = res->route == KR_ROUTE_BYOK;
    const char *keep_cred = byok ? res->credential_key : "";
    char *cred_value = NULL;
    for (size_t i = 0; i < out->n;) {
        kr_env_var *v = &out->v[i];
        v->cls = kr_env_var_class(ctx->rts, ctx->reg, v->key, v->value);
        bool agent_var = kr_env_is_agent_var(ctx, v->key);
        bool is_cred = kr_cred_is_vendor(v->cls) || v->cls == KR_CRED_WORKSPACE_TOKEN ||
                       (agent_var && v->cls == KR_CRED_UNKNOWN);
        if (is_cred || agent_var) {
            bool own = !strcmp(v->key, keep_cred);
            if (own) cred_value = kr_strdup(v->value);
            if (is_cred && (!own || !res->byok_direct))
                trace_rule(res, "ENV", "removed %s (%s, %s scope): %s", v->key,
                           kr_cred_class_name(v->cls), kr_origin_name(v->origin),
                           res->route == KR_ROUTE_PLATFORM
                               ? "the platform route takes no direct-vendor credential"
                           : own ? "BYOK through the proxy: the key stays on the server"
                                 : "not the BYOK provider's credential");
            kr_env_unset(out, v->key);
            continue;
        }
        i++;
    }
    /* 3. the route's own base URL and credential, for every runtime profile
     *    that speaks the route's protocol */
    char url[512];
    if (res->route == KR_ROUTE_PLATFORM) {
        /* Both protocols go to the proxy with the workspace token, so an
         * agent of either protocol has exactly one credential, and it is the
         * one issued for the host it calls. */
        const char *tok = token ? token : KR_TOKEN_PLACEHOLDER;
        for (size_t i = 0; i < ctx->rts->n; i++) {
            const kr_runtime *rt = &ctx->rts->rt[i];
            char root[400];
            kr_snprintf(root, sizeof root, "%s/%s", ctx->proxy_url, kr_proto_name(rt->proto));
            base_url_for(root, rt->proto, url, sizeof url);
            kr_env_set(out, rt->set_base_url, url, KR_ORIGIN_PROVISIONER);
            kr_env_set(out, rt->set_bearer, tok, KR_ORIGIN_PROVISIONER);
        }
        trace_rule(res, "ENV", "set every runtime's base URL to the keyrail proxy and the workspace "
                               "token as its only credential");
    } else {
        const kr_provider *p = kr_registry_provider(ctx->reg, res->provider);
        int rc = 0;
        if (!p || !cred_value) {
            rc = KR_EMISSING_BYOK_CREDENTIAL;
            kr_snprintf(res->msg, sizeof res->msg, "BYOK credential for '%s' is missing",
                        res->provider);
        } else {
            /* A credential of a recognisable shape only goes to its issuer. */
            const kr_provider *issuer = kr_registry_key_issuer(ctx->reg, cred_value);
            char o1[300], o2[300];
            if (issuer && issuer != p &&
                (kr_url_origin(issuer->base_url, o1, sizeof o1) ||
                 kr_url_origin(p->base_url, o2, sizeof o2) || strcmp(o1, o2))) {
                rc = KR_EMISSING_BYOK_CREDENTIAL;
                kr_snprintf(res->msg, sizeof res->msg,
                            "%s holds a %s credential (%s), which is not issued for provider '%s'; "
                            "it is never sent there",
                            res->credential_key, issuer->name,
                            kr_cred_class_name(kr_cred_classify(cred_value, strlen(cred_value))),
                            p->name);
            }
        }
        kr_cred_class cls = cred_value ? kr_cred_classify(cred_value, strlen(cred_value))
                                       : KR_CRED_NONE;
        const kr_runtime *own = kr_runtimes_find(ctx->rts, res->runtime);
        if (!rc && !res->byok_direct && cls == KR_CRED_ANTHROPIC_OAUTH) {
            rc = KR_EMISSING_BYOK_CREDENTIAL;
            kr_snprintf(res->msg, sizeof res->msg,
                        "%s holds an OAuth token, which keyrail's proxy does not forward (it is "
                        "bound to its own client); set BYOK_ROUTE=direct, or store an API key",
                        res->credential_key);
        }
        if (!rc && res->byok_direct && own && !byok_var(own, p, cls)[0]) {
            rc = KR_EMISSING_BYOK_CREDENTIAL;
            kr_snprintf(res->msg, sizeof res->msg,
                        "runtime '%s' cannot take a %s credential (its profile names no variable "
                        "for one)",
                        own->name, kr_cred_class_name(cls));
        }
        if (rc) {
            if (cred_value) sodium_memzero(cred_value, strlen(cred_value));
            free(cred_value);
            kr_env_free(out);
            res->err = rc;
            trace_rule(res, "ENV", "%s: %s", kr_err_name(rc), res->msg);
            return kr_fail(d, rc, "%s", res->msg);
        }
        if (!res->byok_direct) {
            /* through the proxy: the workspace token for the provider's
             * protocol, exactly as on the platform route; the proxy adds
             * the key (read from the store per request) */
            const char *tok = token ? token : KR_TOKEN_PLACEHOLDER;
            char root[400];
            kr_snprintf(root, sizeof root, "%s/%s", ctx->proxy_url, kr_proto_name(p->proto));
            base_url_for(root, p->proto, url, sizeof url);
            for (size_t i = 0; i < ctx->rts->n; i++) {
                const kr_runtime *rt = &ctx->rts->rt[i];
                if (rt->proto != p->proto) continue;
                kr_env_set(out, rt->set_base_url, url, KR_ORIGIN_PROVISIONER);
                kr_env_set(out, rt->set_bearer, tok, KR_ORIGIN_PROVISIONER);
            }
            trace_rule(res, "ENV",
                       "set the %s runtimes' base URL to the keyrail proxy and the workspace token "
                       "as their only credential; the proxy forwards to provider '%s' with %s (%s)",
                       kr_proto_name(p->proto), p->name, res->credential_key,
                       kr_cred_class_name(cls));
        } else {
            base_url_for(p->base_url, p->proto, url, sizeof url);
            const kr_secret_entry *ce = kr_secrets_get(secrets, res->credential_key);
            const char *first = NULL;
            for (size_t i = 0; i < ctx->rts->n; i++) {
                const kr_runtime *rt = &ctx->rts->rt[i];
                const char *var = byok_var(rt, p, cls);
                if (rt->proto != p->proto || !var[0]) continue; /* e.g. an SDK takes no OAuth token */
                if (!first) first = var;
                kr_env_set(out, rt->set_base_url, url, KR_ORIGIN_PROVISIONER);
                kr_env_set(out, var, cred_value, ce ? ce->origin : KR_ORIGIN_PROVISIONER);
            }
            trace_rule(res, "ENV", "set the %s runtimes' base URL to provider '%s' and its key (%s) in %s",
                       kr_proto_name(p->proto), p->name, kr_cred_class_name(cls), first ? first : "-");
        }
        sodium_memzero(cred_value, strlen(cred_value));
        free(cred_value);
    }
    /* 4. the decision itself travels with the workspace */
    const kr_secret_entry *pe = kr_secrets_get(secrets, "LLM_PROVIDER");
    kr_env_set(out, "LLM_PROVIDER", res->provider,
               pe && pe->read.state == KR_SECRET_VALUE && !strcmp(pe->read.value, res->provider)
                   ? pe->origin
                   : KR_ORIGIN_PROVISIONER);
    if (res->model[0]) {
        kr_env_set(out, "MODEL", res->model, res->model_origin);
        for (size_t i = 0; i < ctx->rts->n; i++) {
            const kr_runtime *rt = &ctx->rts->rt[i];
            if (rt->proto == res->proto && rt->set_model[0])
                kr_env_set(out, rt->set_model, res->model, res->model_origin);
        }
    }
    for (size_t i = 0; i < out->n; i++)
        out->v[i].cls = kr_env_var_class(ctx->rts, ctx->reg, out->v[i].key, out->v[i].value);
    kr_env_sort(out);
    return 0;
}

kr_provision_ctx kr_plane_ctx(const kr_plane *p)
{
    kr_provision_ctx c = {p->reg, p->rts, p->pol, p->proxy_url,
                          p->cfg ? p->cfg->concierge_default_model : "", false};
    return c;
}

/* ---- kr_provision ---- */

void kr_provision_result_free(kr_provision_result *r)
{
    kr_env_free(&r->env);
    kr_secrets_free(&r->secrets);
}

int kr_provision(kr_store *st, const kr_master_key *mk, const kr_provision_ctx *ctx,
                 const kr_workspace *ws, const kr_payload_var *payload, size_t npayload,
                 const char *token, kr_provision_result *out, kr_diag *d)
{
    memset(out, 0, sizeof *out);
    out->ws = *ws;
    /* Payload keys are checked like every secret writer would. */
    for (size_t i = 0; i < npayload; i++) {
        if (!kr_secret_key_valid(payload[i].key))
            return kr_fail(d, KR_EINVAL, "payload key '%.64s' is not a valid name", payload[i].key);
        int rc = kr_policy_check_key(ctx->policy, payload[i].key, d);
        if (rc) return rc;
    }
    int rc = kr_secrets_load(st, mk, ws, &out->secrets, d);
    if (rc) {
        /* A store error is an unreadable secret set: fail closed. */
        out->res.err = KR_ESECRET_UNREADABLE;
        kr_snprintf(out->res.msg, sizeof out->res.msg, "secrets could not be listed: %s",
                    kr_diag_msg(d, rc));
        return kr_fail(d, KR_ESECRET_UNREADABLE, "%s", out->res.msg);
    }
    for (size_t i = 0; i < npayload; i++)
        kr_secrets_put(&out->secrets, payload[i].key, KR_SECRET_VALUE, payload[i].value,
                          KR_ORIGIN_PAYLOAD);
    kr_resolve(ctx, ws->kind, ws->runtime, &out->secrets, &out->res);
    if (out->res.err) return kr_fail(d, out->res.err, "%s", out->res.msg);
    rc = kr_env_build(ctx, &out->secrets, &out->res, token, &out->env, d);
    if (rc) return rc;
    if (ctx->dry_run) return 0; /* explain: never writes */
    /* Everything resolved: now, and only now, persist. */
    for (size_t i = 0; i < npayload; i++) {
        rc = kr_secret_set(st, mk, ctx->policy, KR_SCOPE_WORKSPACE, ws->id, payload[i].key,
                           payload[i].value, d);
        if (rc) return rc;
    }
    if (out->res.pin_platform) {
        const kr_secret_entry *pe = kr_secrets_get(&out->secrets, "LLM_PROVIDER");
        if (!pe || pe->read.state != KR_SECRET_VALUE || strcmp(pe->read.value, "platform")) {
            rc = kr_secret_set(st, mk, ctx->policy, KR_SCOPE_WORKSPACE, ws->id, "LLM_PROVIDER",
                               "platform", d);
            if (rc) return rc;
            kr_trace_step *s = out->res.ntrace < KR_TRACE_MAX ? &out->res.trace[out->res.ntrace++]
                                                              : &out->res.trace[KR_TRACE_MAX - 1];
            kr_strlcpy(s->rule, "PIN", sizeof s->rule);
            kr_strlcpy(s->text, "persisted LLM_PROVIDER=platform at workspace scope", sizeof s->text);
        }
    }
    return 0;
}

/* ---- rendering ---- */

static void shell_quote(kr_buf *out, const char *s)
{
    kr_buf_putc(out, '\'');
    for (; *s; s++) {
        if (*s == '\'') kr_buf_puts(out, "'\\''");
        else kr_buf_putc(out, *s);
    }
    kr_buf_putc(out, '\'');
}

void kr_env_render_env(const kr_env *e, kr_buf *out)
{
    for (size_t i = 0; i < e->n; i++) {
        kr_buf_printf(out, "%s=", e->v[i].key);
        shell_quote(out, e->v[i].value);
        kr_buf_putc(out, '\n');
    }
}

static void json_str(kr_buf *out, const char *s)
{
    kr_buf_putc(out, '"');
    kr_buf_json_str(out, s, strlen(s));
    kr_buf_putc(out, '"');
}

void kr_provision_render_json(const kr_provision_result *r, bool with_values, kr_buf *out)
{
    kr_buf_puts(out, "{\"workspace\":");
    json_str(out, r->ws.name);
    kr_buf_printf(out, ",\"workspace_id\":%lld,\"kind\":\"%s\",\"runtime\":", (long long)r->ws.id,
                  kr_ws_kind_name(r->ws.kind));
    json_str(out, r->ws.runtime);
    if (r->res.err) {
        kr_buf_printf(out, ",\"error\":\"%s\",\"message\":", kr_err_name(r->res.err));
        json_str(out, r->res.msg);
    } else {
        kr_buf_printf(out, ",\"route\":\"%s\",\"provider\":", kr_route_name(r->res.route));
        json_str(out, r->res.provider);
        kr_buf_printf(out, ",\"protocol\":\"%s\",\"model\":", kr_proto_name(r->res.proto));
        json_str(out, r->res.model);
    }
    kr_buf_puts(out, ",\"trace\":[");
    for (size_t i = 0; i < r->res.ntrace; i++) {
        kr_buf_printf(out, "%s{\"rule\":", i ? "," : "");
        json_str(out, r->res.trace[i].rule);
        kr_buf_puts(out, ",\"text\":");
        json_str(out, r->res.trace[i].text);
        kr_buf_putc(out, '}');
    }
    kr_buf_puts(out, "],\"env\":[");
    for (size_t i = 0; i < r->env.n; i++) {
        const kr_env_var *v = &r->env.v[i];
        kr_buf_printf(out, "%s{\"key\":", i ? "," : "");
        json_str(out, v->key);
        bool ph = !strcmp(v->value, KR_TOKEN_PLACEHOLDER); /* the launcher fills it */
        kr_buf_printf(out, ",\"origin\":\"%s\",\"class\":\"%s\"%s", kr_origin_name(v->origin),
                      kr_cred_class_name(ph ? KR_CRED_WORKSPACE_TOKEN : v->cls),
                      ph ? ",\"placeholder\":true" : "");
        if (v->cls != KR_CRED_NONE && !ph) {
            char fp[KR_FP_LEN];
            kr_cred_fingerprint(v->value, strlen(v->value), fp);
            kr_buf_printf(out, ",\"fingerprint\":\"%s\"", fp);
        }
        if (with_values) {
            kr_buf_puts(out, ",\"value\":");
            json_str(out, v->value);
        }
        kr_buf_putc(out, '}');
    }
    kr_buf_puts(out, "]}");
}
