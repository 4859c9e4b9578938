/*
 * pool.c -- platform key pools (pool.h).
 */
#include "proxy/pool.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kr_pools *kr_pools_load(const kr_registry *reg)
{
    kr_pools *ps = kr_xcalloc(1, sizeof *ps);
    ps->reg = reg;
    for (size_t i = 0; i < reg->nproviders; i++) {
        const kr_provider *pr = &reg->providers[i];
        if (!pr->platform) continue;
        kr_pool *pool = &ps->pools[i];
        size_t n = pr->nplatform_keys ? pr->nplatform_keys : 1;
        for (size_t k = 0; k < n; k++) {
            kr_pool_key *key = &pool->keys[pool->nkeys++];
            kr_strlcpy(key->env, pr->nplatform_keys ? pr->platform_keys[k] : pr->platform_key_env,
                       sizeof key->env);
            key->weight = pr->nplatform_keys ? pr->key_weight[k] : 1;
            atomic_init(&key->out_status, 0);
            atomic_init(&key->cool_until, 0);
            const char *v = getenv(key->env);
            if (!v || !*v) {
                KR_WARN("platform provider '%s': %s is not set; %s", pr->name, key->env,
                        n > 1 ? "the pool goes on without it" : "its models will answer 503");
                continue;
            }
            kr_buf b = KR_BUF_INIT(8192);
            if (kr_buf_puts(&b, kr_auth_style_prefix(pr->header)) || kr_buf_puts(&b, v)) {
                kr_buf_free(&b);
                continue;
            }
            key->auth = kr_buf_steal(&b);
            kr_cred_fingerprint(v, strlen(v), key->fp);
            key->cls = kr_cred_class_name(kr_cred_classify(v, strlen(v)));
            KR_INFO("platform provider '%s': key %s loaded (%s %s)%s", pr->name, key->env,
                    key->cls, key->fp, n > 1 ? ", in its pool" : "");
        }
    }
    return ps;
}

void kr_pools_free(kr_pools *ps)
{
    if (!ps) return;
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS; i++)
        for (size_t k = 0; k < ps->pools[i].nkeys; k++) {
            char *a = ps->pools[i].keys[k].auth;
            if (a) {
                sodium_memzero(a, strlen(a));
                free(a);
            }
        }
    free(ps);
}

const char *kr_pool_auth(const kr_pools *ps, size_t provider, int key)
{
    if (provider >= KR_REGISTRY_MAX_PROVIDERS || key < 0 || (size_t)key >= ps->pools[provider].nkeys)
        return NULL;
    return ps->pools[provider].keys[key].auth;
}

/* In rotation and set; cooling or not per `cool_ok`. */
static bool usable(kr_pool_key *k, uint32_t tried, int i, int64_t now, bool cool_ok)
{
    return k->auth && !(tried & (1u << i)) && !atomic_load(&k->out_status) &&
           (cool_ok || atomic_load(&k->cool_until) <= now);
}

int kr_pool_pick(kr_pools *ps, size_t provider, uint64_t session, uint32_t tried)
{
    if (provider >= KR_REGISTRY_MAX_PROVIDERS) return -1;
    kr_pool *p = &ps->pools[provider];
    int64_t now = kr_now_ms();
    if (session) {
        /* the session's key: its hash over the keys in rotation (cooling
         * ones count, so one cooling key does not move every session) */
        int total = 0;
        for (size_t i = 0; i < p->nkeys; i++)
            if (usable(&p->keys[i], 0, (int)i, now, true)) total += p->keys[i].weight;
        if (total > 0) {
            int at = (int)(session % (uint64_t)total);
            for (size_t i = 0; i < p->nkeys; i++) {
                if (!usable(&p->keys[i], 0, (int)i, now, true)) continue;
                if (at < p->keys[i].weight) {
                    if (usable(&p->keys[i], tried, (int)i, now, false)) {
                        atomic_fetch_add(&p->keys[i].picked, 1);
                        return (int)i;
                    }
                    break; /* it cannot serve now: round robin over the rest */
                }
                at -= p->keys[i].weight;
            }
        }
    }
    for (int pass = 0; pass < 2; pass++) { /* cooling keys only when nothing else is left */
        int total = 0;
        for (size_t i = 0; i < p->nkeys; i++)
            if (usable(&p->keys[i], tried, (int)i, now, pass)) total += p->keys[i].weight;
        if (!total) continue;
        int at = (int)(atomic_fetch_add(&p->rr, 1) % (uint64_t)total);
        for (size_t i = 0; i < p->nkeys; i++) {
            if (!usable(&p->keys[i], tried, (int)i, now, pass)) continue;
            if (at < p->keys[i].weight) {
                atomic_fetch_add(&p->keys[i].picked, 1);
                return (int)i;
            }
            at -= p->keys[i].weight;
        }
    }
    return -1;
}

void kr_pool_report(kr_pools *ps, size_t provider, int key, int status, int retry_after_s)
{
    if (provider >= KR_REGISTRY_MAX_PROVIDERS || key < 0 || (size_t)key >= ps->pools[provider].nkeys)
        return;
    kr_pool_key *k = &ps->pools[provider].keys[key];
    const char *name = ps->reg->providers[provider].name;
    if (status == 401 || status == 403) {
        int was = 0;
        if (atomic_compare_exchange_strong(&k->out_status, &was, status))
            KR_ERROR("platform provider '%s': key %s (%s %s) was refused with %d: out of rotation "
                     "until the next start; replace it",
                     name, k->env, k->cls ? k->cls : "?", k->fp, status);
    } else if (status == 429) {
        int64_t s = retry_after_s > 0 ? (retry_after_s > 3600 ? 3600 : retry_after_s) : 1;
        atomic_store(&k->cool_until, kr_now_ms() + s * 1000);
    }
}

void kr_pool_metrics(const kr_pools *ps, kr_buf *out)
{
    kr_buf_puts(out, "# HELP keyrail_platform_key_in_rotation 1 while a platform key is used; 0 "
                     "after the vendor refused it (401/403) or when it is not set.\n"
                     "# TYPE keyrail_platform_key_in_rotation gauge\n");
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS && i < ps->reg->nproviders; i++)
        for (size_t k = 0; k < ps->pools[i].nkeys; k++) {
            const kr_pool_key *key = &ps->pools[i].keys[k];
            kr_buf_printf(out, "keyrail_platform_key_in_rotation{provider=\"%s\",key=\"%s\"} %d\n",
                          ps->reg->providers[i].name, key->env,
                          key->auth && !atomic_load(&key->out_status) ? 1 : 0);
        }
    kr_buf_puts(out, "# HELP keyrail_platform_key_requests_total Requests sent with each platform "
                     "key.\n# TYPE keyrail_platform_key_requests_total counter\n");
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS && i < ps->reg->nproviders; i++)
        for (size_t k = 0; k < ps->pools[i].nkeys; k++) {
            const kr_pool_key *key = &ps->pools[i].keys[k];
            kr_buf_printf(out, "keyrail_platform_key_requests_total{provider=\"%s\",key=\"%s\"} %llu\n",
                          ps->reg->providers[i].name, key->env,
                          (unsigned long long)atomic_load(&key->picked));
        }
}
