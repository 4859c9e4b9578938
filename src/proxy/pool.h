/*
 * pool.h -- the platform key pools: for each platform provider, the keys
 * its `platform_key_env` names (registry), loaded once by `keyrail serve`
 * and shared by every event loop.
 *
 * A request takes one key (kr_pool_pick): weighted round robin over the keys
 * in rotation, or, when the client names a session (x-claude-code-session-id,
 * session_id, x-session-id, conversation_id, x-conversation-id), the key the
 * session's hash maps to, so that a session's requests keep one key and its
 * prompt cache stays warm. What a vendor answers changes the pool
 * (kr_pool_report): 401 or 403 takes the key out of rotation (logged,
 * counted, in the admin API) until the next start; 429 cools it for the
 * answer's retry-after (1 s when it gives none). Before any byte reached the
 * client, the proxy retries such an answer, and a failed connect, on
 * another key (src/proxy/forward.c); never after.
 *
 * State is atomics only: the loops never lock each other here.
 */
#ifndef KR_POOL_H
#define KR_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/cred.h"
#include "registry/registry.h"

/* Attempts of one request beyond its first (each on another key). */
#define KR_POOL_MAX_TRIES 3

typedef struct kr_pool_key {
    char env[64];
    char *auth; /* the provider's header line with the key; NULL: the variable is not set */
    int weight;
    char fp[KR_FP_LEN];
    const char *cls;
    atomic_int out_status;           /* 0 in rotation; else the status that took it out */
    atomic_int_fast64_t cool_until;  /* ms (kr_now_ms): not picked before, unless nothing else */
    atomic_uint_fast64_t picked, retried_off;
} kr_pool_key;

typedef struct kr_pool {
    size_t nkeys;
    kr_pool_key keys[KR_REG_MAX_LIST];
    atomic_uint_fast64_t rr;
} kr_pool;

typedef struct kr_pools {
    const kr_registry *reg;
    kr_pool pools[KR_REGISTRY_MAX_PROVIDERS];
} kr_pools;

/* Reads every platform provider's keys from the environment; logs each
 * (class and fingerprint) and each missing one. */
kr_pools *kr_pools_load(const kr_registry *reg);
/* Wipes the keys. */
void kr_pools_free(kr_pools *p);
/* A key of the provider's pool for a request: not in `tried` (bit i: key
 * i), in rotation, not cooling (a cooling one when nothing else is left).
 * session: the session's hash, 0 for none. -1: no usable key. */
int kr_pool_pick(kr_pools *p, size_t provider, uint64_t session, uint32_t tried);
/* What the key got: 401/403 take it out; 429 cools it for retry_after_s. */
void kr_pool_report(kr_pools *p, size_t provider, int key, int status, int retry_after_s);
/* The header line of a picked key. */
const char *kr_pool_auth(const kr_pools *p, size_t provider, int key);
/* /metrics lines for every key. */
void kr_pool_metrics(const kr_pools *p, kr_buf *out);

#endif
