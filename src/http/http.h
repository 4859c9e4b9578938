/*
 * http.h -- keyrail's HTTP/1.1 transport. It knows nothing of LLMs, tenants
 * or tokens: it carries bytes to and from handlers that `keyrail serve`
 * mounts (src/serve: the LLM proxy, the admin API, the console, health,
 * metrics) and to and from upstream vendors.
 *
 *   server.c       listeners and their mount tables, client connections,
 *                  reads, writes with back-pressure, timeouts (slow clients,
 *                  idle keep-alive, stuck writes), the lingering close,
 *                  refusals before a handler is found, draining
 *   respond.c      exchanges: complete responses, status texts, request
 *                  ids, the per-request log line, the end of a request
 *   http1.c        the strict incremental request parser (http1.h)
 *   http1_resp.c   the strict response parser of the upstream client
 *                  (http1_resp.h)
 *   http1_syntax.c the grammar both parsers share (http1_syntax.h)
 *   upstream.h     one interface over the two upstream clients:
 *   upclient.c       keyrail's own HTTP/1.1 client (upclient.h; OpenSSL)
 *   upcurl.c         libcurl's multi interface on the loop
 *   metrics.c      the server's counters (metrics.h), rendered by /metrics
 *
 * The sub-headers are the parsers' and the clients' own contracts (the
 * fuzz drivers and unit tests include them); a handler needs this header
 * and, if it forwards, upstream.h.
 *
 * Everything here runs on the loop thread of its kr_http_server; `keyrail
 * serve` runs one server per event loop (server.workers), each with its own
 * listening sockets on the same ports.
 *
 * The life of a request: a connection reads and feeds the parser; when a
 * request is complete the server picks the first mount of the listener
 * whose path matches and calls its start function with the connection and
 * the parsed request. The handler makes an exchange (kr_x_init: a request
 * id, the start time; usually the first member of its own request struct),
 * answers through kr_x_respond or writes a response of its own with
 * kr_x_write and ends it with kr_x_finish. Until then the connection holds
 * one reference to the exchange and tells it, through its ops, when the
 * client went away (abort), when queued output drained (writable) and when
 * it lets go (release).
 */
#ifndef KR_HTTP_H
#define KR_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/err.h"
#include "http/http1.h"
#include "http/metrics.h"

typedef struct kr_http_server kr_http_server;
typedef struct kr_http_listener kr_http_listener;
typedef struct kr_conn kr_conn;
typedef struct kr_exchange kr_exchange;

/* ---- mounts ---- */

/* A handler's entry point: a complete request arrived on c. The handler
 * must kr_x_init an exchange for it (at once; it may answer later). */
typedef void (*kr_http_start_fn)(void *ctx, kr_conn *c, const kr_http_req *h);

typedef struct kr_http_mount {
    const char *path; /* "" matches every path (put it last) */
    bool prefix;      /* also "path/…" (never "pathx") */
    kr_http_start_fn start;
    void *ctx;
} kr_http_mount;

/* The body of a refusal made before any handler saw the request (a parse
 * error, an arrival timeout): the handler that owns the path's protocol
 * words it. h may be partial (h->path.p is NULL before the head ended).
 * *id_header: the response header the protocol's SDKs read the request id
 * from ("request-id", "x-request-id"). */
typedef void (*kr_http_refusal_fn)(void *ctx, const kr_http_req *h, int status, const char *msg,
                                   const char *request_id, kr_buf *body, const char **id_header);

/* ---- the server ---- */

#define KR_HTTP_MAX_LISTENERS 4

struct kr_http_listener {
    uv_tcp_t tcp;
    kr_http_server *srv;
    const kr_http_mount *mounts;
    size_t nmounts;
    int port; /* bound */
    bool open;
};

struct kr_http_server {
    uv_loop_t *loop;
    const kr_config *cfg; /* server.*: timeouts, caps */
    kr_http_limits limits;
    kr_http_listener listeners[KR_HTTP_MAX_LISTENERS];
    int nlisteners;
    kr_conn *conns; /* every open connection */
    kr_metrics metrics;
    kr_http_refusal_fn refusal;
    void *refusal_ctx;
    bool draining;    /* no new connections; keep-alive ends after the current request */
    int worker;       /* the event loop's index in request lines; -1: the only loop */
    /* server.max_connections counts every loop's connections: the count
     * they share (one atomic add per connection), or NULL for one loop */
    atomic_int_fast64_t *shared_conns;
    uint64_t reqseq;
    char instance[17]; /* random per process: request ids are unique across instances */
};

struct kr_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* client-side timeouts */
    uv_timer_t xtimer; /* the exchange's own (the proxy: upstream inactivity);
                          stopped when the exchange ends, closed with the connection */
    kr_http_server *srv;
    const kr_http_listener *l;
    kr_conn *prev, *next;
    kr_http_parser parser;
    kr_buf pending;       /* bytes after the current request (pipelining), capped */
    kr_exchange *x;       /* the request being served */
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
    size_t discarded; /* bytes drained while lingering */
    uv_shutdown_t shutdown_req;
};

/* Sets up s on loop (the request parser's caps and the timeouts come from
 * cfg's server.* settings) and picks the instance id. */
void kr_http_server_init(kr_http_server *s, uv_loop_t *loop, const kr_config *cfg);
/* Binds and listens on addr ("HOST:PORT", IPv4 or [IPv6]) with its own
 * mount table (kept by reference: it must outlive the listener). port > 0
 * replaces addr's port; reuseport: SO_REUSEPORT, so that each of several
 * loops can listen on the same port (the kernel spreads connections). */
int kr_http_listen(kr_http_server *s, const char *addr, int port, bool reuseport, int backlog,
                   const kr_http_mount *mounts, size_t nmounts, kr_http_listener **out, kr_diag *d);
/* The same on a socket already bound and listening (keyrail run's relay:
 * bound inside the agent's network namespace, served from outside). */
int kr_http_listen_fd(kr_http_server *s, int fd, const kr_http_mount *mounts, size_t nmounts,
                      kr_diag *d);
/* Stops accepting (every listener); running requests go on. */
void kr_http_drain(kr_http_server *s);
/* Closes the connections that serve no request; returns how many stay. */
size_t kr_http_close_idle(kr_http_server *s);
/* Closes every connection (running requests are aborted). */
void kr_http_close_all(kr_http_server *s);
/* A new request id, unique across instances (random instance id +
 * sequence): every response carries one, those refused before routing too. */
void kr_http_request_id(kr_http_server *s, char *out, size_t cap);

/* Frees the calling thread's reused buffers (a loop thread that ends). */
void kr_http_thread_end(void);

/* "HOST:PORT" -> an address (IPv4, or IPv6 in brackets). */
int kr_http_parse_listen(const char *listen, struct sockaddr_storage *ss, kr_diag *d);

void kr_conn_write(kr_conn *c, const uv_buf_t *bufs, unsigned n);
void kr_conn_close(kr_conn *c);

/* ---- exchanges (respond.c) ---- */

typedef struct kr_exchange_ops {
    /* The client went away before the exchange finished (x->conn is NULL
     * already): stop whatever works for it. Optional. */
    void (*abort)(kr_exchange *x);
    /* The connection lets go of x (after it finished, or after abort). */
    void (*release)(kr_exchange *x);
    /* Queued output fell below the low-water mark. Optional. */
    void (*writable)(kr_exchange *x);
    /* The request's log line at kr_x_finish. Optional: kr_x_log by default. */
    void (*log)(kr_exchange *x);
} kr_exchange_ops;

struct kr_exchange {
    const kr_exchange_ops *ops;
    kr_conn *conn;           /* NULL once the client is gone */
    kr_http_server *srv;
    const kr_http_req *http; /* the parser's; valid while the connection lives */
    char id[40];
    uint64_t t0_ns;
    int status;
    kr_route_id route; /* metrics and log label */
    bool keep_alive;
    bool finished; /* the response is complete on the wire (or abandoned) */
    char cred_class[24];
    char error_type[32];
};

/* Starts serving h on c with x (a request id, the start time, one
 * connection reference). */
void kr_x_init(kr_exchange *x, const kr_exchange_ops *ops, kr_conn *c, const kr_http_req *h,
               kr_route_id route);
/* A complete response (head and body), then kr_x_finish. id_header: the
 * protocol's request-id header besides x-keyrail-request-id (NULL: none);
 * extra_headers: "name: value\r\n" lines of the handler's own. */
void kr_x_respond(kr_exchange *x, int status, const char *ctype, const char *body, size_t n,
                  const char *extra_headers, const char *id_header);
/* Writes bytes of a response the handler frames itself. */
void kr_x_write(kr_exchange *x, const uv_buf_t *bufs, unsigned n);
/* The response is complete: counted, logged, and the connection goes on
 * with the next request (or closes). Once. */
void kr_x_finish(kr_exchange *x);
/* The client is gone: counted as 499 (unless a status was set) and logged
 * by the caller's choice; no connection to go on with. */
void kr_x_abandon(kr_exchange *x);
bool kr_x_is_head(const kr_exchange *x);
/* Bytes the connection queued and the kernel did not take yet. */
size_t kr_x_backlog(const kr_exchange *x);

/* The request log line: begin writes the common fields (time, request id,
 * method, path, route, status, credential class), a handler appends its own
 * (",\"key\":value"), end adds the latency and error and writes the line. */
void kr_x_log_begin(const kr_exchange *x, kr_buf *b);
void kr_x_log_end(const kr_exchange *x, kr_buf *b, uint64_t t_up_ns);
void kr_x_log(kr_exchange *x);

const char *kr_status_text(int status);

#endif
