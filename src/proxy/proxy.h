/*
 * proxy.h -- the LLM gateway: what a workspace's request to an LLM route
 * meets between the transport (src/http) and the vendor. `keyrail serve`
 * (src/serve) mounts it on its listeners; it owns these routes:
 *
 *   POST /anthropic/v1/messages, /anthropic/v1/messages/count_tokens,
 *        /openai/v1/chat/completions, /openai/v1/responses
 *   GET  /anthropic/v1/models, /openai/v1/models, /v1/workspace/env
 *
 * and words every error in the protocol's own shape. Its files:
 *
 *   routes.c    the route table, credentials, the models and environment
 *               endpoints, the request object and its log line
 *   forward.c   request checks, the upstream request, the response relay
 *               with back-pressure, metering at the end
 *   auth.c      workspace-token authentication with a short-lived cache;
 *               lookups and provider resolution run on the store workers
 *   limits.c    admission: allow-lists, credits, rpm/tpm (limits.h)
 *   pool.c      the platform's deployments and key pools, circuit breakers
 *               (pool.h)
 *   jscan.c     the non-DOM scan of request bodies (jscan.h)
 *   sse_usage.c usage read from the response as it streams by (sse_usage.h)
 *   meter.c     usage rows, rollup and credit debit, batched on a thread
 *               (meter.h)
 *   errors.c    error bodies in each protocol's own shape
 *
 * `keyrail serve` runs one kr_proxy per event loop (server.workers); each
 * runs on its loop's thread with its own upstream client, token cache, store
 * workers and usage-writer port. What they share: the registry, profiles,
 * policy and master key (read-only), the admission state (limits.h, under
 * its shard locks; one proxy runs its sync) and the usage writer (meter.h).
 */
#ifndef KR_PROXY_H
#define KR_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/usage.h"
#include "http/http.h"
#include "http/upstream.h"
#include "otel/otel.h"
#include "provision/provision.h"
#include "proxy/limits.h"
#include "proxy/meter.h"
#include "proxy/pool.h"
#include "proxy/sse_usage.h"
#include "registry/registry.h"
#include "secrets/secrets.h"
#include "store/workq.h"

typedef struct kr_proxy kr_proxy;
typedef struct kr_req kr_req;

/* ---- auth (auth.c) ---- */

typedef struct kr_auth_info {
    int rc;           /* 0, or why the token is refused (KR_ENOTFOUND, KR_EDENIED, …) */
    char reason[160]; /* for rc != 0: safe to show the client */
    int64_t token_id, ws_id, org_id;
    int64_t expires_at; /* 0 = never; checked at every use */
    kr_route route;     /* the workspace's resolved route */
    bool byok_direct;   /* BYOK with the key in the agent's hands: not served here */
    kr_proto proto;
    char provider[32];
    /* BYOK through the proxy: the org's key as the provider's header line,
     * unsealed by the lookup, owned by the cache slot (or the job) like
     * allow, wiped when it goes; never logged. NULL otherwise. */
    char *upstream_auth;
    /* admission policy, read with the token */
    int64_t ws_rpm, ws_tpm, org_rpm, org_tpm; /* 0 = unlimited */
    char *allow;          /* "\nm1\nm2\n": effective allow-list; NULL = all priced
                             platform models; owned by the cache slot (or the job) */
    int64_t balance, cap; /* the org's credits when read */
} kr_auth_info;

typedef void (*kr_auth_cb)(kr_req *r, const kr_auth_info *info);

typedef struct kr_auth_slot {
    uint8_t hash[32];
    uint64_t until_ns;
    uint64_t read_ns; /* when its token row was read: an older read never replaces it */
    bool used;
    bool refreshing; /* a lookup is under way to renew it before it expires */
    kr_auth_info info;
} kr_auth_slot;

#define KR_AUTH_SLOTS 8192

typedef struct kr_auth_cache {
    kr_auth_slot *slots;
    uint64_t ttl_ns;
    uint64_t hits, misses;
} kr_auth_cache;

void kr_auth_init(kr_auth_cache *c, int64_t ttl_ms);
void kr_auth_free(kr_auth_cache *c);
/* Looks the token up (cache, else a store job). Calls cb now or later;
 * returns true when the answer came from the cache (cb already called). */
bool kr_auth_lookup(kr_proxy *s, kr_req *r, const char *tok, size_t n, kr_auth_cb cb);

/* ---- the gateway (routes.c) ---- */

/* What the gateway reads and shares: the registry, the runtime profiles,
 * the forbidden-key policy and the master key are loaded by serve and
 * outlive it; the platform keys are its own. */
typedef struct kr_proxy_env {
    kr_plane p;
    kr_workq *workers;    /* the loop's own */
    kr_meter *meter;      /* the instance's */
    kr_meter_port *port;  /* the loop's port of it */
    kr_limits *limits;    /* the instance's admission state */
    bool limits_sync;     /* this proxy runs the admission sync */
    int index;            /* the loop's index (0 says what is loaded) */
    kr_otel_port *otel;   /* the loop's span port; NULL: no traces */
    kr_pools *pools;      /* the instance's platform key pools */
} kr_proxy_env;

struct kr_proxy {
    uv_loop_t *loop;
    kr_http_server *http; /* its transport: counters, draining */
    kr_metrics *metrics;
    kr_plane p;
    const kr_config *cfg; /* p.cfg */
    kr_workq *workers;
    kr_meter *meter;
    kr_meter_port *port;
    kr_otel_port *otel; /* NULL: no traces */
    kr_pools *pools;    /* the platform keys (shared by the loops) */
    kr_upstream up;
    kr_auth_cache auth; /* this loop's (a revocation reaches each within its lifetime) */
    kr_limits *lim;     /* admission control state (limits.c), shared */
    bool limits_sync;
    uv_timer_t limits_timer;
    kr_req *dirty; /* requests with staged output, flushed after each upstream event */
};

/* Reads the platform keys (from the environment variables the registry
 * names), starts the upstream client and the admission sync. */
int kr_proxy_init(kr_proxy *px, kr_http_server *http, const kr_proxy_env *env, kr_diag *d);
/* Stops the timers and the upstream client (no request may be running). */
void kr_proxy_stop(kr_proxy *px);
/* Frees what stop left (the caches) and wipes the platform keys. */
void kr_proxy_free(kr_proxy *px);
/* Frees the calling loop thread's reused buffers (before the thread ends). */
void kr_proxy_thread_end(void);
void kr_req_forward_thread_end(void);

/* Mount entry points (kr_http_start_fn): the gateway's routes, and a 404
 * for the admin API's paths on a listener that does not serve it. */
void kr_proxy_start(void *px, kr_conn *c, const kr_http_req *h);
void kr_proxy_not_here(void *px, kr_conn *c, const kr_http_req *h);
/* The transport's refusal hook (kr_http_refusal_fn): the OpenAI shape for
 * an /openai/ path, else the Anthropic shape. */
void kr_proxy_refusal(void *ctx, const kr_http_req *h, int status, const char *msg,
                      const char *request_id, kr_buf *body, const char **id_header);

/* What the proxy does with a route. routes.c holds the table: one row per
 * route carries all of its facts. */
typedef enum {
    KR_RK_MODELS,   /* the platform models of the route's protocol */
    KR_RK_ENV,      /* the workspace environment (the launcher's) */
    KR_RK_UPSTREAM, /* forwarded to the platform's vendor */
} kr_route_kind;

typedef struct kr_route_def {
    const char *path;
    const char *method; /* "GET" (also answers HEAD) or "POST" */
    kr_route_id id;     /* metrics and log label */
    kr_proto proto;     /* error shape; the protocol a workspace speaks here */
    kr_route_kind kind;
    kr_wire wire;         /* upstream: body and usage dialect */
    const char *upstream; /* upstream: path appended to the provider's base URL */
    bool metered;         /* upstream: usage recorded, debited, admitted by credits and limits */
} kr_route_def;

struct kr_req {
    kr_exchange x; /* first: the transport's view (id, status, connection) */
    kr_proxy *px;
    const kr_route_def *rd; /* the matched route; NULL: none */
    kr_proto proto;
    /* the Gemini API names the model and the version in the path */
    char path_model[128];
    char api_version[8]; /* "v1beta" or "v1" */
    bool alt_sse;        /* ?alt=sse: server-sent events, not a JSON array */
    kr_slice query_key;  /* ?key=: a credential in the query */
    uint64_t t_up_ns;
    /* auth */
    kr_job *job;
    kr_auth_info auth;
    /* request body facts */
    const kr_model *model;
    const kr_provider *prov;
    char model_id[128];
    bool stream;
    kr_buf upbody; /* rewritten body, when the body had to change */
    /* upstream */
    kr_upx up;
    bool head_sent;
    bool chunked;
    bool paused;
    bool is_sse;
    bool timed_out;
    bool meter; /* record usage for this request */
    int up_status;
    bool usage_unreadable; /* the usage of a metered response could not be read */
    kr_buf resp_head; /* response head being assembled from the upstream's */
    kr_buf out;       /* response bytes staged for one write: head with the
                         first chunk; whole small bodies; for streams, every
                         chunk the upstream delivered in one event */
    kr_req *dirty_next;
    bool dirty;
    kr_sse_usage sse;
    kr_buf json; /* non-streaming body copy for usage (capped) */
    uint64_t est_tokens; /* admission estimate, settled at the end */
    bool admitted;       /* counted in the rate windows */
    int64_t cost;        /* priced usage, handed to the usage writer */
    int retry_after;     /* seconds, for a 429 */
    char up_error[160];  /* why the upstream could not be reached (a 502), for the log line */
    /* the platform key pool (pool.h): the key this attempt uses (-1: BYOK
     * or none), the keys tried, a retry on another key before any byte */
    size_t pool_provider;
    int pool_key, pool_next;
    uint32_t pool_tried;
    int pool_tries;
    uint64_t pool_session;
    bool pool_retry, pool_retry_due;
    int up_retry_after; /* the vendor's retry-after, seconds */
    const char *fwd_body; /* the body sent upstream (kept for a retry) */
    size_t fwd_len;
    /* tracing (when the proxy has a span port): this request's span */
    bool traced, trace_parent;
    uint8_t trace_id[16], span_id[8], parent_id[8], trace_flags;
    kr_usage usage; /* what record_usage read */
    bool usage_read;
    int refs; /* the connection + a running upstream transfer */
};

/* A request on c (the proxy's, or another handler's that answers in the
 * proxy's shapes and may wait on a store job: r->job is cancelled when the
 * client goes away). */
kr_req *kr_req_new(kr_proxy *px, kr_conn *c, const kr_http_req *h, kr_route_id route);
void kr_req_unref(kr_req *r);
/* The request's log line (with usage when u is not NULL). */
void kr_req_log(kr_req *r, const kr_usage *u, int64_t cost);
/* The request's span, at its end (forward.c; when traced). */
void kr_req_span(kr_req *r);
/* The checked request goes to the vendor (forward.c). */
void kr_req_forward(kr_req *r);
/* The client went away: cancel upstream work, record what was used. */
void kr_req_abort_upstream(kr_req *r);
void kr_req_resume_upstream(kr_req *r);
/* Writes the staged output of every request the upstream client touched
 * (the client calls it after each batch of events). */
void kr_proxy_flush_dirty(void *px);
/* Takes r off the list of requests with staged output. */
void kr_req_undirty(kr_req *r);
/* The workspace token a request presents, or a refusal (401); routes.c. */
bool kr_req_take_credential(kr_req *r, const char **tok, size_t *n);

/* ---- errors (errors.c) ---- */

/* A complete response with a JSON error body in the protocol's shape
 * (proto), on any exchange. type: the vendor-style error type
 * (authentication_error, …). */
void kr_proxy_error(kr_exchange *x, kr_proto proto, int status, const char *type,
                    const char *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* The same for a gateway request: its protocol, a 429's retry-after, a
 * 405's allow. */
void kr_respond_error(kr_req *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void kr_respond_json(kr_req *r, int status, const char *body, size_t n, const char *extra_headers);
/* The request-id header the protocol's SDKs read. */
const char *kr_proto_id_header(kr_proto p);

#endif
