/*
 * fuzz_registry.c -- libFuzzer driver for the provider registry
 * (registry/registry.c, over core/ini.c).
 *
 * The input is a registry file. kr_registry_parse must return 0 or
 * KR_EPARSE/KR_ETOOBIG with a message. On success the registry must hold
 * what the rest of keyrail relies on:
 *   - every provider has a name, an http(s) base_url without a trailing
 *     '/', at least one credential_env, and platform_key_env when it is
 *     platform-managed; names are unique (kr_registry_provider finds each);
 *   - every model's provider index is valid; ids and aliases are unique:
 *     kr_registry_model(id or alias) is that model, and kr_registry_claim of
 *     it is the model's provider (an alias can never reach another model);
 *   - for names taken from the input (every token, every prefix of a model
 *     id): kr_registry_claim agrees with the model table and the
 *     model_prefixes (first provider whose prefix matches), a name claimed by
 *     no provider gets NULL, kr_registry_key_issuer returns the longest
 *     matching key prefix;
 *   - kr_model_cost is zero for no usage, never negative, rounds up to the
 *     next micro-unit exactly, and never decreases when a count grows.
 */
#include "fuzz_check.h"
#include "core/err.h"
#include "core/usage.h"
#include "registry/registry.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static bool terminated(const char *s, size_t cap)
{
    return memchr(s, 0, cap) != NULL;
}

/* Reference claim: the model table, else the first provider (in file order)
 * with a matching model prefix. */
static const kr_provider *ref_claim(const kr_registry *r, const char *name)
{
    for (size_t i = 0; i < r->nmodels; i++) {
        if (!strcmp(r->models[i].id, name)) return &r->providers[r->models[i].provider];
        for (size_t a = 0; a < r->models[i].naliases; a++)
            if (!strcmp(r->models[i].aliases[a], name)) return &r->providers[r->models[i].provider];
    }
    for (size_t i = 0; i < r->nproviders; i++)
        for (size_t j = 0; j < r->providers[i].nmodel_prefixes; j++) {
            const char *pre = r->providers[i].model_prefixes[j];
            if (!strncmp(name, pre, strlen(pre))) return &r->providers[i];
        }
    return NULL;
}

static void check_name(const kr_registry *r, const char *name)
{
    const kr_model *m = kr_registry_model(r, name);
    const kr_provider *p = kr_registry_claim(r, name);
    CHECK(p == ref_claim(r, name));
    if (m) {
        CHECK(m >= r->models && m < r->models + r->nmodels);
        CHECK(p == &r->providers[m->provider]);
        bool named = !strcmp(m->id, name);
        for (size_t a = 0; a < m->naliases; a++) named |= !strcmp(m->aliases[a], name);
        CHECK(named);
    }
    const kr_provider *iss = kr_registry_key_issuer(r, name);
    size_t best = 0;
    for (size_t i = 0; i < r->nproviders; i++)
        for (size_t j = 0; j < r->providers[i].nkey_prefixes; j++) {
            size_t l = strlen(r->providers[i].key_prefixes[j]);
            if (l > best && !strncmp(name, r->providers[i].key_prefixes[j], l)) best = l;
        }
    if (!best) {
        CHECK(iss == NULL);
    } else {
        CHECK(iss != NULL);
        bool has = false;
        for (size_t j = 0; j < iss->nkey_prefixes; j++)
            has |= strlen(iss->key_prefixes[j]) == best && !strncmp(name, iss->key_prefixes[j], best);
        CHECK(has);
    }
}

static void check_cost(const kr_model *m, const uint8_t *d, size_t n)
{
    kr_usage z = {0};
    CHECK(kr_model_cost(m, &z) == 0);
    uint64_t v[4] = {0};
    for (size_t i = 0; i < n && i < 32; i++) v[i / 8] = v[i / 8] << 8 | d[i];
    kr_usage u = {0};
    u.input_tokens = v[0] >> (v[0] & 31);
    u.output_tokens = v[1] >> (v[1] & 31);
    u.cache_read_tokens = v[2] >> (v[2] & 31);
    u.cache_write_tokens = v[3] >> (v[3] & 31);
    int64_t c = kr_model_cost(m, &u);
    CHECK(c >= 0);
    unsigned __int128 t = (unsigned __int128)u.input_tokens * (uint64_t)m->price_input +
                          (unsigned __int128)u.output_tokens * (uint64_t)m->price_output +
                          (unsigned __int128)u.cache_read_tokens * (uint64_t)m->price_cache_read +
                          (unsigned __int128)u.cache_write_tokens * (uint64_t)m->price_cache_write;
    if (c < INT64_MAX) {
        /* the smallest whole micro-unit that covers the exact cost */
        CHECK((unsigned __int128)c * 1000000 >= t);
        CHECK(c == 0 || (unsigned __int128)(c - 1) * 1000000 < t);
    }
    kr_usage more = u;
    more.output_tokens += more.output_tokens < UINT64_MAX;
    CHECK(kr_model_cost(m, &more) >= c);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 64 * 1024) return 0;
    char *text = malloc(n ? n : 1);
    memcpy(text, d, n);
    kr_registry *r = NULL;
    kr_diag dg = {{0}};
    int rc = kr_registry_parse(text, n, &r, &dg);
    CHECK(rc == 0 || rc == KR_EPARSE || rc == KR_ETOOBIG);
    if (rc) {
        CHECK(r == NULL && dg.msg[0] != 0);
        free(text);
        return 0;
    }
    CHECK(r != NULL);
    CHECK(r->nproviders <= KR_REGISTRY_MAX_PROVIDERS && r->nmodels <= KR_REGISTRY_MAX_MODELS);

    for (size_t i = 0; i < r->nproviders; i++) {
        const kr_provider *p = &r->providers[i];
        CHECK(terminated(p->name, sizeof p->name) && p->name[0]);
        CHECK(terminated(p->base_url, sizeof p->base_url));
        CHECK(!strncmp(p->base_url, "https://", 8) || !strncmp(p->base_url, "http://", 7));
        size_t bl = strlen(p->base_url);
        CHECK(bl > 0 && p->base_url[bl - 1] != '/');
        CHECK(p->ncredential_env >= 1 && p->ncredential_env <= KR_REG_MAX_LIST);
        CHECK(p->nmodel_prefixes <= KR_REG_MAX_LIST && p->nkey_prefixes <= KR_REG_MAX_LIST);
        CHECK(terminated(p->platform_key_env, sizeof p->platform_key_env));
        if (p->platform) CHECK(p->platform_key_env[0]);
        for (size_t j = 0; j < p->ncredential_env; j++)
            CHECK(terminated(p->credential_env[j], sizeof p->credential_env[j]) && p->credential_env[j][0]);
        for (size_t j = 0; j < p->nmodel_prefixes; j++)
            CHECK(terminated(p->model_prefixes[j], sizeof p->model_prefixes[j]) && p->model_prefixes[j][0]);
        for (size_t j = 0; j < p->nkey_prefixes; j++)
            CHECK(terminated(p->key_prefixes[j], sizeof p->key_prefixes[j]) && p->key_prefixes[j][0]);
        CHECK(kr_registry_provider(r, p->name) == p);
        check_name(r, p->name);
    }
    for (size_t i = 0; i < r->nmodels; i++) {
        const kr_model *m = &r->models[i];
        CHECK(terminated(m->id, sizeof m->id) && m->id[0]);
        CHECK(m->provider < r->nproviders);
        CHECK(m->naliases <= KR_REG_MAX_LIST);
        CHECK(m->price_input >= 0 && m->price_output >= 0 && m->price_cache_read >= 0 &&
              m->price_cache_write >= 0);
        CHECK(kr_registry_model(r, m->id) == m);
        CHECK(kr_registry_claim(r, m->id) == &r->providers[m->provider]);
        for (size_t a = 0; a < m->naliases; a++) {
            CHECK(terminated(m->aliases[a], sizeof m->aliases[a]) && m->aliases[a][0]);
            CHECK(kr_registry_model(r, m->aliases[a]) == m);
            CHECK(kr_registry_claim(r, m->aliases[a]) == &r->providers[m->provider]);
        }
        /* prefixes of the id: an alias table lookup must not match partially */
        char pre[128];
        size_t il = strlen(m->id);
        for (size_t k = 1; k < il; k += 1 + il / 8) {
            memcpy(pre, m->id, k);
            pre[k] = 0;
            check_name(r, pre);
        }
        check_cost(m, d, n);
    }

    /* names from the input: every run of bytes between separators */
    size_t checked = 0;
    for (size_t i = 0; i < n && checked < 64;) {
        while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '=' || text[i] == ',' ||
                         text[i] == '[' || text[i] == ']' || text[i] == '\t' || text[i] == 0))
            i++;
        size_t s = i;
        while (i < n && !(text[i] == ' ' || text[i] == '\n' || text[i] == '=' || text[i] == ',' ||
                          text[i] == '[' || text[i] == ']' || text[i] == '\t' || text[i] == 0))
            i++;
        if (i > s && i - s < 200) {
            char name[200];
            memcpy(name, text + s, i - s);
            name[i - s] = 0;
            check_name(r, name);
            checked++;
        }
    }
    check_name(r, "");

    kr_registry_free(r);
    free(text);
    return 0;
}
