/*
 * proxy.h -- the LLM proxy (`keyrail serve`): what its parts own and the
 * structs they share. A request flows through the files in this order:
 *
 *   server.c    listener, connections, reads, writes with back-pressure,
 *               timeouts (slow clients, idle keep-alive, stuck writes),
 *               graceful shutdown on SIGTERM
 *   http1.c     the strict request parser (one request at a time; pipelined
 *               bytes wait in conn->pending)
 *   routes.c    routing, local endpoints (/healthz, /readyz, /metrics,
 *               models, the workspace environment), request checks, the
 *               upstream request, response relay, metering, the log line
 *   auth.c      workspace-token authentication with a short-lived cache;
 *               lookups and provider resolution run on the store workers
 *   upstream.c  the upstream client in use (upstream.client): libcurl multi
 *               on the libuv loop (sockets, timers, handles), or
 *   upclient.c  keyrail's own HTTP/1.1 client (keep-alive pool, OpenSSL),
 *               reading responses with http1_resp.c
 *   jscan.c     the non-DOM scan of request bodies
 *   sse_usage.c usage read from the response as it streams by
 *   meter.c     usage rows, rollup and credit debit, batched on a thread
 *   workq.c     store work off the loop
 *   metrics.c   Prometheus counters
 *   errors.c    error bodies in each protocol's own shape
 *
 * Everything here runs on the one loop thread except the work done inside
 * workq/meter jobs.
 */
#ifndef KR_PROXY_H
#define KR_PROXY_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/usage.h"
#include "provision/provision.h"
#include "proxy/http1.h"
#include "proxy/limits.h"
#include "proxy/meter.h"
#include "proxy/metrics.h"
#include "proxy/sse_usage.h"
#include "proxy/workq.h"
#include "registry/registry.h"
#include "secrets/secrets.h"

typedef struct kr_server kr_server;
typedef struct kr_conn kr_conn;
typedef struct kr_req kr_req;

/* ---- auth (auth.c) ---- */

typedef struct kr_auth_info {
    int rc;           /* 0, or why the token is refused (KR_ENOTFOUND, KR_EDENIED, …) */
    char reason[160]; /* for rc != 0: safe to show the client */
    int64_t token_id, ws_id, org_id;
    int64_t expires_at; /* 0 = never; checked at every use */
    kr_route route;     /* the workspace's resolved route */
    kr_proto proto;
    char provider[32];
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
bool kr_auth_lookup(kr_server *s, kr_req *r, const char *tok, size_t n, kr_auth_cb cb);

/* ---- upstream (upstream.c) ---- */

int kr_upstream_init(kr_server *s);
void kr_upstream_free(kr_server *s);
/* Ends r's transfer, whichever client carries it; no completion is reported. */
void kr_upstream_stop(kr_req *r);
/* Starts the transfer of an easy handle set up by routes.c. */
int kr_upstream_start(kr_server *s, CURL *easy);
/* Removes a transfer (client gone, timeout); no completion is reported. */
void kr_upstream_cancel(kr_server *s, CURL *easy);
/* Sets the transfer's URL from a parsed copy kept for the server's life. */
int kr_upstream_url(kr_server *s, CURL *e, const char *url);
CURL *kr_upstream_easy(kr_server *s);
void kr_upstream_release(kr_server *s, CURL *easy);
/* Called by upstream.c when a transfer ends (routes.c implements it). */
void kr_req_upstream_done(kr_req *r, CURLcode rc);
/* Refuses (at start) an upstream.ca_file that cannot be read or holds no
 * PEM certificate. */
int kr_upstream_check_config(const kr_config *cfg, kr_diag *d);
/* The message of a 502 for a transfer that failed before the response head:
 * the cause in libcurl's words (errbuf: the request's up_err), redacted;
 * TLS failures say so and that the request was not sent. */
void kr_upstream_describe(CURLcode rc, const char *errbuf, char *out, size_t cap);
/* A TLS handshake or verification failure (always before any request byte). */
bool kr_upstream_is_tls_error(CURLcode rc);

/* ---- server and connections (server.c) ---- */

struct kr_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_tcp_t admin_listener; /* server.admin_listen, when separate */
    bool admin_listening;
    int admin_port;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    const kr_config *cfg;
    kr_registry *reg;
    kr_runtimes *rts; /* agent runtime profiles (the provisioner reads them) */
    kr_policy pol;
    kr_master_key mk;
    char proxy_url[300];
    kr_http_limits limits;
    /* platform credentials, one per registry provider (NULL: none) */
    char *platform_auth[KR_REGISTRY_MAX_PROVIDERS]; /* full header line */
    /* upstream */
    CURLM *multi;
    uv_timer_t curl_timer;
    CURL *easy_pool[256];
    int neasy;
    /* parsed upstream URLs (registry base URL + route path), made on first use */
    struct {
        char *url;
        CURLU *u;
    } urls[64];
    int nurls;
    bool env_proxy; /* a proxy variable is set: libcurl reads them per transfer */
    struct kr_upc *upc; /* the native client (upclient.h); NULL: libcurl carries every transfer */
    /* state */
    kr_auth_cache auth;
    kr_limits adm; /* admission control state (limits.c) */
    uv_timer_t limits_timer;
    uv_timer_t log_timer; /* flushes buffered log lines (server.log_flush_ms) */
    kr_workq *workers;
    kr_meter *meter;
    kr_metrics metrics;
    kr_conn *conns; /* all open connections */
    kr_req *dirty;  /* requests with staged output, flushed after each curl event */
    bool draining;
    bool stopped;
    uint64_t reqseq;
    char instance[17]; /* random per process: request ids are unique across instances */
    int port;          /* bound port */
};

struct kr_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;   /* client-side timeouts */
    uv_timer_t uptimer; /* upstream inactivity of the in-flight request */
    kr_server *srv;
    kr_conn *prev, *next;
    kr_http_parser parser;
    kr_buf pending;       /* bytes after the current request (pipelining), capped */
    kr_req *req;          /* the request being served */
    size_t write_pending; /* bytes handed to uv_write and not yet written */
    int handles_open;
    bool reading;
    bool closing;
    bool close_after; /* close once the response is written */
    bool read_eof;
    bool in_body;     /* head parsed, body arriving */
    bool got_bytes;   /* some bytes of the current request arrived */
    uint64_t deadline; /* loop time (ms) by which the whole request must have arrived */
    bool linger;      /* after an error reply: half-close, drain input, then close */
    bool admin;       /* accepted on the admin listener: serves /admin and /console */
    size_t discarded; /* bytes drained while lingering */
    uv_shutdown_t shutdown_req;
};

void kr_conn_write(kr_conn *c, const uv_buf_t *bufs, unsigned n);
void kr_conn_close(kr_conn *c);
/* The request is finished: free it and continue with pipelined bytes. */
void kr_conn_request_done(kr_conn *c);

int kr_server_run(const kr_config *cfg, bool dev);
/* A new request id, unique across instances (random instance id + sequence):
 * every response carries one, those refused before routing too. */
void kr_server_request_id(kr_server *s, char *out, size_t cap);

/* ---- requests (routes.c) ---- */

/* What the proxy does with a route. routes.c holds the table: one row per
 * route carries all of its facts. */
typedef enum {
    KR_RK_HEALTHZ = 0,
    KR_RK_READYZ,
    KR_RK_METRICS,
    KR_RK_MODELS,   /* the platform models of the route's protocol */
    KR_RK_ENV,      /* the workspace environment (the launcher's) */
    KR_RK_UPSTREAM, /* forwarded to the platform's vendor */
} kr_route_kind;

typedef struct kr_route_def {
    const char *path;
    const char *method; /* "GET" (also answers HEAD) or "POST" */
    kr_route_id id;     /* metrics slot */
    const char *label;  /* metrics and log label */
    kr_proto proto;     /* error shape; the protocol a workspace speaks here */
    kr_route_kind kind;
    kr_wire wire;         /* upstream: body and usage dialect */
    const char *upstream; /* upstream: path appended to the provider's base URL */
    bool metered;         /* upstream: usage recorded, debited, admitted by credits and limits */
} kr_route_def;

struct kr_req {
    kr_server *srv;
    kr_conn *conn; /* NULL once the client is gone */
    const kr_route_def *rd; /* the matched route; NULL: none */
    kr_route_id route;
    kr_proto proto;
    char id[40];
    uint64_t t0_ns, t_up_ns;
    const kr_http_req *http;
    int status;
    bool keep_alive;
    /* auth */
    kr_job *job;
    kr_auth_info auth;
    char cred_class[24];
    /* request body facts */
    const kr_model *model;
    const kr_provider *prov;
    char model_id[128];
    bool stream;
    kr_buf upbody; /* rewritten body, when the body had to change */
    /* upstream: one of easy (libcurl) and uc (the native client) while it runs */
    CURL *easy;
    struct kr_upc_conn *uc;
    struct curl_slist *hdrs;
    bool upstream_active;
    bool head_sent;
    bool chunked;
    bool paused;
    bool is_sse;
    bool timed_out;
    bool meter; /* record usage for this request */
    int up_status;
    bool usage_unreadable; /* the usage of a metered response could not be read */
    char up_err[CURL_ERROR_SIZE]; /* libcurl's error text for the transfer (ERRORBUFFER) */
    kr_buf resp_head; /* response head being assembled from the upstream's */
    kr_buf out;       /* response bytes staged for one write: head with the
                         first chunk; whole small bodies; for streams, every
                         chunk curl delivered in one event */
    kr_req *dirty_next;
    bool dirty;
    kr_sse_usage sse;
    kr_buf json; /* non-streaming body copy for usage (capped) */
    char error_type[32];
    uint64_t est_tokens; /* admission estimate, settled at the end */
    bool admitted;       /* counted in the rate windows */
    int64_t cost;        /* priced usage, handed to the usage writer */
    int retry_after;     /* seconds, for a 429 */
    bool finished;       /* response complete on the wire (or abandoned) */
    bool client_gone;
    int refs; /* the connection + a running upstream transfer */
};

void kr_req_start(kr_conn *c, const kr_http_req *http);
/* The client went away: cancel upstream work, record what was used. */
void kr_req_abort(kr_req *r);
void kr_req_unref(kr_req *r);
void kr_req_resume_upstream(kr_req *r);
/* Writes the staged output of every request curl touched (upstream.c calls
 * it after each curl event). */
void kr_req_flush_dirty(kr_server *s);

/* ---- errors (errors.c) ---- */

/* Writes a complete response with a JSON error body in the protocol's
 * shape. type: the vendor-style error type (authentication_error, …). */
void kr_respond_error(kr_req *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void kr_respond_json(kr_req *r, int status, const char *body, size_t n, const char *extra_headers);
/* A complete response of any content type (extra_headers: "name: v\r\n"…). */
void kr_respond(kr_req *r, int status, const char *ctype, const char *body, size_t n,
                const char *extra_headers);
const char *kr_status_text(int status);

#endif
