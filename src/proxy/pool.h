/*
 * pool.h -- the platform's upstreams: for each platform provider, its
 * deployments (the registry's base_url, then `fallback`, `fallback_2`,
 * `fallback_3`) and each deployment's key pool (its `platform_key_env`
 * names), loaded once by `keyrail serve` and shared by every event loop.
 *
 * A request takes one (deployment, key) (kr_pool_pick): the first deployment,
 * in the registry's order, whose circuit is closed (or half-open and this
 * request is its one probe) and that has a usable key; within it, weighted
 * round robin over the keys in rotation, or, when the client names a session
 * (x-claude-code-session-id, session_id, x-session-id, conversation_id,
 * x-conversation-id), the key the session's hash maps to, so that its prompt
 * cache stays warm.
 *
 * What happens to a request changes the pool (kr_pool_report):
 *   401, 403        the key leaves the rotation until the next start (logged,
 *                   counted, in the admin API);
 *   429             the key cools for the answer's retry-after (1 s without);
 *   503, 529, 5xx,  a failure of the deployment: after [upstream]
 *   no connection   breaker_failures in a row its circuit opens for
 *                   breaker_cooldown_ms, then lets one probe through
 *                   (half-open): a success closes it, a failure opens it again;
 *   anything else   a success: the deployment's failures start over.
 * Before any byte reached the client, the proxy sends a refused request
 * (401, 403, 429, 503, 529) or one that could not connect again with another
 * key or deployment (src/proxy/forward.c); never after.
 *
 * State is atomics only: the loops never lock each other here.
 */
#ifndef KR_POOL_H
#define KR_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/cred.h"
#include "registry/registry.h"

/* Attempts of one request beyond its first (each on another key or deployment). */
#define KR_POOL_MAX_TRIES 3
#define KR_POOL_MAX_DEPS  (1 + KR_REG_MAX_FALLBACKS)
/* A pick: deployment * KR_REG_MAX_LIST + key (a bit each in a uint32_t). */
#define KR_POOL_ID(dep, key) ((dep) * KR_REG_MAX_LIST + (key))

typedef struct kr_pool_key {
    char env[64];
    char *auth; /* the provider's header line with the key; NULL: the variable is not set */
    int weight;
    char fp[KR_FP_LEN];
    const char *cls;
    atomic_int out_status;          /* 0 in rotation; else the status that took it out */
    atomic_int_fast64_t cool_until; /* ms (kr_now_ms): not picked before, unless nothing else */
    atomic_uint_fast64_t picked;
} kr_pool_key;

typedef struct kr_pool_dep {
    const char *base_url; /* the registry's */
    char origin[300];     /* for logs and metrics */
    size_t nkeys;
    kr_pool_key keys[KR_REG_MAX_LIST];
    atomic_uint_fast64_t rr;
    atomic_int fails;               /* failures in a row */
    atomic_int_fast64_t open_until; /* ms; 0: closed */
    atomic_int_fast64_t probe_at;   /* half-open: when the probe went out (ms; 0: none); a
                                       probe never reported (its client went away) expires
                                       after a cooldown */
} kr_pool_dep;

typedef struct kr_pool {
    size_t ndeps;
    kr_pool_dep deps[KR_POOL_MAX_DEPS];
} kr_pool;

typedef struct kr_pools {
    const kr_registry *reg;
    int breaker_failures;
    int64_t breaker_cooldown_ms;
    kr_pool pools[KR_REGISTRY_MAX_PROVIDERS];
} kr_pools;

/* Reads every platform provider's keys from the environment; logs each
 * (class and fingerprint) and each missing one. */
kr_pools *kr_pools_load(const kr_registry *reg, const kr_config *cfg);
/* Wipes the keys. */
void kr_pools_free(kr_pools *p);
/* A (deployment, key) for a request: not in `tried` (bit KR_POOL_ID), in
 * rotation, not cooling (a cooling key when nothing else is left), on a
 * deployment whose circuit lets it through. session: the session's hash, 0
 * for none. -1: nothing usable. */
int kr_pool_pick(kr_pools *p, size_t provider, uint64_t session, uint32_t tried);
/* What the attempt got: an HTTP status, or 0 when no connection could be
 * made (the deployment failed, the key is not to blame). */
void kr_pool_report(kr_pools *p, size_t provider, int id, int status, int retry_after_s);
/* The header line and the base URL of a pick. */
const char *kr_pool_auth(const kr_pools *p, size_t provider, int id);
const char *kr_pool_base(const kr_pools *p, size_t provider, int id);
/* Every key of the pick's deployment: a connection failure rules out its
 * other keys too. */
uint32_t kr_pool_dep_mask(const kr_pools *p, size_t provider, int id);
/* /metrics lines for every key and deployment. */
void kr_pool_metrics(const kr_pools *p, kr_buf *out);

#endif
