/*
 * limits.h -- admission control at the proxy: model allow-lists, credits and
 * rate limits, enforced for every metered route, streams included.
 *
 * A request is admitted when (in this order):
 *   1. its canonical model is in the workspace's allow-list and the org's
 *      (no list: every priced platform model)                    -> else 403
 *   2. the org's balance plus overage cap is above zero           -> else 402
 *   3. the workspace's and the org's requests and tokens in the current
 *      UTC minute stay within rpm / tpm                           -> else 429
 * Tokens are estimated at admission (body bytes / 4 + the output cap the
 * request names: max_tokens, max_completion_tokens or max_output_tokens, the
 * largest; 4096 when none) and settled to the real usage when the response
 * ends. An estimate larger than the tpm limit counts as the limit: such a
 * request is admitted into an empty window, never refused forever.
 *
 * Shared state lives in the store so that every instance sees it: each
 * instance adds its counts to rate_windows and reads the totals back every
 * sync interval (KR_LIMITS_SYNC_MS), and re-reads its orgs' balances. Bounds
 * (docs/SECURITY.md): an org can overshoot its cap by the cost of requests
 * already admitted when it crossed (in flight, on all instances) plus what
 * other instances admit before the next sync; a window can be exceeded by
 * what other instances admit within one sync interval.
 *
 * Within an instance the state is one for all its event loops
 * (server.workers): 16 shards, each a mutex over its own tables, an owner's
 * windows and an org's credits always in the shard of its id. A request
 * takes the shards of its workspace and its org (in shard order), so two
 * loops wait on each other only for the same org or workspace, or for a
 * shard collision (/metrics: keyrail_lock_contended_total{lock="limits"}).
 * The sync runs on one loop.
 */
#ifndef KR_LIMITS_H
#define KR_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/usage.h"

#include <pthread.h>

#define KR_LIMITS_SYNC_MS 200
#define KR_LIMITS_SHARDS 16
#define KR_LIMITS_SLOTS 256 /* per shard */

typedef struct kr_proxy kr_proxy;
typedef struct kr_req kr_req;

typedef struct kr_window {
    bool used;
    int scope; /* kr_scope */
    int64_t owner;
    int64_t window;                /* unix seconds of the minute */
    int64_t store_req, store_tok;  /* totals in the store at the last sync */
    int64_t local_req, local_tok;  /* added here since the last sync */
    int64_t flight_req, flight_tok; /* being flushed by the running sync */
} kr_window;

typedef struct kr_credit {
    bool used;
    int64_t org;
    int64_t balance, cap; /* at the last sync */
    int64_t pending;      /* costs handed to the usage writer, not committed yet */
    uint64_t seen_ns;
} kr_credit;

typedef struct kr_limits_shard {
    pthread_mutex_t mu;
    kr_window win[KR_LIMITS_SLOTS];
    kr_credit cred[KR_LIMITS_SLOTS];
} __attribute__((aligned(64))) kr_limits_shard;

typedef struct kr_limits {
    kr_limits_shard shard[KR_LIMITS_SHARDS];
    /* the sync's own (the loop that runs it) */
    bool syncing;
    uint64_t syncs, sync_failures;
} kr_limits;

kr_limits *kr_limits_new(void);
void kr_limits_free(kr_limits *l);
/* Starts the periodic sync on the proxy's loop (one proxy of the instance
 * runs it). */
void kr_limits_start(kr_proxy *s);
void kr_limits_stop(kr_proxy *s);

/* Admission for a request whose auth and model are known. Returns 0, or an
 * HTTP status (403, 402, 429) after answering the client itself. */
int kr_limits_admit(kr_proxy *s, kr_req *r, uint64_t est_tokens, bool metered);
/* Settles the estimate against the real usage and notes the cost. */
void kr_limits_settle(kr_proxy *s, kr_req *r, const kr_usage *u, int64_t cost);
/* The usage writer committed a cost. */
void kr_limits_committed(kr_proxy *s, int64_t org, int64_t cost);

#endif
