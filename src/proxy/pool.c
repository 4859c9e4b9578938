/*
 * pool.c -- the platform's deployments and key pools, with a circuit
 * breaker per deployment (pool.h).
 */
#include "proxy/pool.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void load_key(const kr_provider *pr, kr_pool_dep *dep, const char *env, int weight,
                     size_t nkeys)
{
    kr_pool_key *key = &dep->keys[dep->nkeys++];
    kr_strlcpy(key->env, env, sizeof key->env);
    key->weight = weight;
    atomic_init(&key->out_status, 0);
    atomic_init(&key->cool_until, 0);
    atomic_init(&key->picked, 0);
    const char *v = getenv(key->env);
    if (!v || !*v) {
        KR_WARN("platform provider '%s' (%s): %s is not set; %s", pr->name, dep->origin, key->env,
                nkeys > 1 ? "the pool goes on without it" : "it cannot be used");
        return;
    }
    kr_buf b = KR_BUF_INIT(8192);
    if (kr_buf_puts(&b, kr_auth_style_prefix(pr->header)) || kr_buf_puts(&b, v)) {
        kr_buf_free(&b);
        return;
    }
    key->auth = kr_buf_steal(&b);
    kr_cred_fingerprint(v, strlen(v), key->fp);
    key->cls = kr_cred_class_name(kr_cred_classify(v, strlen(v)));
    KR_INFO("platform provider '%s' (%s): key %s loaded (%s %s)", pr->name, dep->origin, key->env,
            key->cls, key->fp);
}

static void init_dep(kr_pool_dep *dep, const char *base)
{
    dep->base_url = base;
    if (kr_url_origin(base, dep->origin, sizeof dep->origin))
        kr_strlcpy(dep->origin, "(invalid)", sizeof dep->origin);
    atomic_init(&dep->rr, 0);
    atomic_init(&dep->fails, 0);
    atomic_init(&dep->open_until, 0);
    atomic_init(&dep->probe_at, 0);
}

kr_pools *kr_pools_load(const kr_registry *reg, const kr_config *cfg)
{
    kr_pools *ps = kr_xcalloc(1, sizeof *ps);
    ps->reg = reg;
    ps->breaker_failures = (int)cfg->upstream_breaker_failures;
    ps->breaker_cooldown_ms = cfg->upstream_breaker_cooldown_ms;
    for (size_t i = 0; i < reg->nproviders && i < KR_REGISTRY_MAX_PROVIDERS; i++) {
        const kr_provider *pr = &reg->providers[i];
        if (!pr->platform) continue;
        kr_pool *pool = &ps->pools[i];
        for (size_t dp = 0; dp < kr_provider_ndeployments(pr); dp++) {
            kr_deployment_view v;
            kr_provider_deployment(pr, dp, &v);
            kr_pool_dep *dep = &pool->deps[pool->ndeps++];
            init_dep(dep, v.base_url);
            for (size_t k = 0; k < v.nkeys; k++)
                load_key(pr, dep, v.keys[k], v.weight[k], v.nkeys);
        }
    }
    return ps;
}

void kr_pools_free(kr_pools *ps)
{
    if (!ps) return;
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS; i++)
        for (size_t d = 0; d < ps->pools[i].ndeps; d++)
            for (size_t k = 0; k < ps->pools[i].deps[d].nkeys; k++) {
                char *a = ps->pools[i].deps[d].keys[k].auth;
                if (a) {
                    sodium_memzero(a, strlen(a));
                    free(a);
                }
            }
    free(ps);
}

static kr_pool_dep *dep_of(const kr_pools *ps, size_t provider, int id, kr_pool_key **key)
{
    if (provider >= KR_REGISTRY_MAX_PROVIDERS || id < 0) return NULL;
    const kr_pool *p = &ps->pools[provider];
    size_t d = (size_t)id / KR_REG_MAX_LIST, k = (size_t)id % KR_REG_MAX_LIST;
    if (d >= p->ndeps || k >= p->deps[d].nkeys) return NULL;
    kr_pool_dep *dep = (kr_pool_dep *)&p->deps[d];
    if (key) *key = &dep->keys[k];
    return dep;
}

const char *kr_pool_auth(const kr_pools *ps, size_t provider, int id)
{
    kr_pool_key *k;
    return dep_of(ps, provider, id, &k) ? k->auth : NULL;
}

const char *kr_pool_base(const kr_pools *ps, size_t provider, int id)
{
    kr_pool_dep *dep = dep_of(ps, provider, id, NULL);
    return dep ? dep->base_url : NULL;
}

uint32_t kr_pool_dep_mask(const kr_pools *ps, size_t provider, int id)
{
    kr_pool_dep *dep = dep_of(ps, provider, id, NULL);
    if (!dep) return 0;
    uint32_t m = 0, base = (uint32_t)(id / KR_REG_MAX_LIST * KR_REG_MAX_LIST);
    for (size_t k = 0; k < dep->nkeys; k++)
        m |= 1u << (base + k);
    return m;
}

/* In rotation and set, not tried; cooling or not per `cool_ok`. */
static bool usable(kr_pool_key *k, uint32_t tried, int id, int64_t now, bool cool_ok)
{
    return k->auth && !(tried & (1u << id)) && !atomic_load(&k->out_status) &&
           (cool_ok || atomic_load(&k->cool_until) <= now);
}

/* A key of one deployment, or -1. */
static int pick_key(kr_pool_dep *dep, int d, uint64_t session, uint32_t tried, int64_t now,
                    bool cool_ok)
{
    int base = d * KR_REG_MAX_LIST;
    if (session) {
        /* the session's key: its hash over the keys in rotation (cooling
         * ones count, so one cooling key does not move every session) */
        int total = 0;
        for (size_t i = 0; i < dep->nkeys; i++)
            if (usable(&dep->keys[i], 0, base + (int)i, now, true)) total += dep->keys[i].weight;
        if (total > 0) {
            int at = (int)(session % (uint64_t)total);
            for (size_t i = 0; i < dep->nkeys; i++) {
                if (!usable(&dep->keys[i], 0, base + (int)i, now, true)) continue;
                if (at < dep->keys[i].weight) {
                    if (usable(&dep->keys[i], tried, base + (int)i, now, cool_ok)) return (int)i;
                    break; /* it cannot serve now: round robin over the rest */
                }
                at -= dep->keys[i].weight;
            }
        }
    }
    int total = 0;
    for (size_t i = 0; i < dep->nkeys; i++)
        if (usable(&dep->keys[i], tried, base + (int)i, now, cool_ok)) total += dep->keys[i].weight;
    if (!total) return -1;
    int at = (int)(atomic_fetch_add(&dep->rr, 1) % (uint64_t)total);
    for (size_t i = 0; i < dep->nkeys; i++) {
        if (!usable(&dep->keys[i], tried, base + (int)i, now, cool_ok)) continue;
        if (at < dep->keys[i].weight) return (int)i;
        at -= dep->keys[i].weight;
    }
    return -1;
}

/* The circuit lets a request through: closed, or open past its cooldown
 * and this request takes the one probe. */
static bool probe_out(kr_pools *ps, kr_pool_dep *dep, int64_t now, int64_t *at)
{
    *at = atomic_load(&dep->probe_at);
    return *at && now - *at < ps->breaker_cooldown_ms;
}

static bool circuit_admits(kr_pools *ps, kr_pool_dep *dep, int64_t now)
{
    int64_t until = atomic_load(&dep->open_until);
    if (!until) return true;
    if (now < until) return false;
    int64_t at;
    if (probe_out(ps, dep, now, &at)) return false;
    return atomic_compare_exchange_strong(&dep->probe_at, &at, now);
}

int kr_pool_pick(kr_pools *ps, size_t provider, uint64_t session, uint32_t tried)
{
    if (provider >= KR_REGISTRY_MAX_PROVIDERS) return -1;
    kr_pool *p = &ps->pools[provider];
    int64_t now = kr_now_ms();
    /* first a deployment whose circuit admits and that has a key not
     * cooling; then cooling keys; last, deployments with an open circuit
     * (better a try than a sure refusal) */
    for (int pass = 0; pass < 3; pass++)
        for (size_t d = 0; d < p->ndeps; d++) {
            kr_pool_dep *dep = &p->deps[d];
            if (pass < 2) {
                int64_t until = atomic_load(&dep->open_until), at;
                if (until && (now < until || probe_out(ps, dep, now, &at))) continue;
            }
            int k = pick_key(dep, (int)d, session, tried, now, pass > 0);
            if (k < 0) continue;
            if (pass < 2 && !circuit_admits(ps, dep, now)) continue;
            atomic_fetch_add(&dep->keys[k].picked, 1);
            return KR_POOL_ID((int)d, k);
        }
    return -1;
}

void kr_pool_report(kr_pools *ps, size_t provider, int id, int status, int retry_after_s)
{
    kr_pool_key *k;
    kr_pool_dep *dep = dep_of(ps, provider, id, &k);
    if (!dep) return;
    const char *name = ps->reg->providers[provider].name;
    if (status == 401 || status == 403) {
        int was = 0;
        if (atomic_compare_exchange_strong(&k->out_status, &was, status))
            KR_ERROR("platform provider '%s' (%s): key %s (%s %s) was refused with %d: out of "
                     "rotation until the next start; replace it",
                     name, dep->origin, k->env, k->cls ? k->cls : "?", k->fp, status);
    } else if (status == 429) {
        int64_t s = retry_after_s > 0 ? (retry_after_s > 3600 ? 3600 : retry_after_s) : 1;
        atomic_store(&k->cool_until, kr_now_ms() + s * 1000);
    }
    /* the deployment: no connection, or a server-side failure */
    bool failed = status == 0 || status >= 500;
    bool was_probe = atomic_exchange(&dep->probe_at, 0) != 0;
    if (!failed) {
        atomic_store(&dep->fails, 0);
        if (atomic_exchange(&dep->open_until, 0))
            KR_WARN("platform provider '%s': deployment %s answers again: circuit closed", name,
                    dep->origin);
        return;
    }
    int n = atomic_fetch_add(&dep->fails, 1) + 1;
    if (was_probe || n >= ps->breaker_failures) {
        int64_t until = kr_now_ms() + ps->breaker_cooldown_ms;
        if (!atomic_exchange(&dep->open_until, until) || was_probe)
            KR_WARN("platform provider '%s': deployment %s failed %d time(s) in a row (last: %s): "
                    "circuit open for %lld ms; requests go to its fallbacks",
                    name, dep->origin, n, status ? "an answer >= 500" : "no connection",
                    (long long)ps->breaker_cooldown_ms);
    }
}

void kr_pool_metrics(const kr_pools *ps, kr_buf *out)
{
    const kr_registry *reg = ps->reg;
    kr_buf_puts(out, "# HELP keyrail_platform_key_in_rotation 1 while a platform key is used; 0 "
                     "after the vendor refused it (401/403) or when it is not set.\n"
                     "# TYPE keyrail_platform_key_in_rotation gauge\n");
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS && i < reg->nproviders; i++)
        for (size_t d = 0; d < ps->pools[i].ndeps; d++)
            for (size_t k = 0; k < ps->pools[i].deps[d].nkeys; k++) {
                const kr_pool_key *key = &ps->pools[i].deps[d].keys[k];
                kr_buf_printf(out,
                              "keyrail_platform_key_in_rotation{provider=\"%s\",deployment=\"%s\","
                              "key=\"%s\"} %d\n",
                              reg->providers[i].name, ps->pools[i].deps[d].origin, key->env,
                              key->auth && !atomic_load(&((kr_pool_key *)key)->out_status) ? 1 : 0);
            }
    kr_buf_puts(out, "# HELP keyrail_platform_key_requests_total Requests sent with each platform "
                     "key.\n# TYPE keyrail_platform_key_requests_total counter\n");
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS && i < reg->nproviders; i++)
        for (size_t d = 0; d < ps->pools[i].ndeps; d++)
            for (size_t k = 0; k < ps->pools[i].deps[d].nkeys; k++) {
                const kr_pool_key *key = &ps->pools[i].deps[d].keys[k];
                kr_buf_printf(out,
                              "keyrail_platform_key_requests_total{provider=\"%s\",deployment=\"%s\","
                              "key=\"%s\"} %llu\n",
                              reg->providers[i].name, ps->pools[i].deps[d].origin, key->env,
                              (unsigned long long)atomic_load(&((kr_pool_key *)key)->picked));
            }
    kr_buf_puts(out, "# HELP keyrail_upstream_circuit_open 1 while a deployment's circuit is open "
                     "(its requests go to its fallbacks).\n"
                     "# TYPE keyrail_upstream_circuit_open gauge\n");
    int64_t now = kr_now_ms();
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS && i < reg->nproviders; i++)
        for (size_t d = 0; d < ps->pools[i].ndeps; d++) {
            const kr_pool_dep *dep = &ps->pools[i].deps[d];
            int64_t until = atomic_load(&((kr_pool_dep *)dep)->open_until);
            kr_buf_printf(out,
                          "keyrail_upstream_circuit_open{provider=\"%s\",deployment=\"%s\"} %d\n",
                          reg->providers[i].name, dep->origin, until && now < until ? 1 : 0);
        }
}
