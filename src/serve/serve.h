/*
 * serve.h -- `keyrail serve`: puts the parts together and runs them.
 *
 *   serve.c        start (the master key and its check against the store,
 *                  the registry, the runtime profiles, the store, the usage
 *                  writer, the admission state), each loop's parts and
 *                  mount tables, the stop
 *   serve_loops.c  the event loops (server.workers): their threads, the
 *                  mailbox through which they talk, signals, the graceful
 *                  drain of every loop, /metrics gathered across loops
 *   local.c        the handlers that look across parts: /healthz, /readyz
 *                  (the store, the usage writer, draining) and /metrics
 *                  (the transport's, the proxy's and the usage writer's
 *                  counters, summed over the loops)
 *
 * The loops: N of them (server.workers; 0 = one per CPU), each on its own
 * thread (loop 0 on the main thread) with its own listening socket on the
 * same port (SO_REUSEPORT: the kernel spreads new connections), transport,
 * proxy (upstream connections, token cache), store workers and usage-writer
 * port. Shared, and safe to share: what start loaded (read-only), the
 * admission state (its shard locks), the usage writer (one thread), the
 * log. The admin listener, the signals and the admission sync live on loop
 * 0; loop 0 stops last. Loops never touch each other's state: they post
 * commands to each other's mailbox (a mutex-guarded list and a uv_async).
 *
 * What each listener serves (first match wins):
 *
 *   server.listen        /healthz /readyz /metrics    local.c
 *                        /admin… /console…            the admin API and the
 *                                                     console when
 *                                                     server.admin_listen = main,
 *                                                     else a 404 (the proxy's)
 *                        everything else              the LLM proxy
 *   server.admin_listen  /admin… /console…            the admin API, the console
 *                        the rest as on server.listen
 */
#ifndef KR_SERVE_H
#define KR_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "admin/admin.h"
#include "config/config.h"
#include "http/http.h"
#include "proxy/proxy.h"

#define KR_SERVE_MAX_LOOPS KR_METER_MAX_PORTS

typedef struct kr_serve kr_serve;
typedef struct kr_serve_cmd kr_serve_cmd;

/* One event loop and everything that runs on it. */
typedef struct kr_serve_loop {
    kr_serve *s;
    int index;
    uv_loop_t loop;
    uv_thread_t thread; /* loops 1..: their own; loop 0 runs on the main thread */
    bool thread_up, loop_up;
    kr_workq *workers;
    kr_meter_port *port;
    kr_http_server http;
    kr_proxy proxy;
    bool proxy_up;
    kr_admin admin;
    kr_http_mount main_mounts[6], admin_mounts[6];
    /* the mailbox: other loops post, this loop runs the commands */
    pthread_mutex_t mu;
    kr_serve_cmd *cmds, *cmds_tail;
    bool closed; /* under mu: posts fail */
    uv_async_t wake;
    /* its stop */
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    uv_timer_t log_timer; /* flushes this thread's buffered log lines */
    bool draining, stopped, finished;
    int gathers; /* /metrics answers waiting for other loops */
} kr_serve_loop;

/* One running `keyrail serve`: what start loaded and the loops. */
struct kr_serve {
    const kr_config *cfg;
    kr_registry *reg;
    kr_runtimes *rts; /* agent runtime profiles (the provisioner reads them) */
    kr_policy pol;
    kr_master_key mk;
    char proxy_url[300];
    kr_meter *meter;
    kr_limits *limits;
    kr_pools *pools; /* the platform keys, loaded once */
    kr_otel *otel; /* NULL: no traces */
    struct kr_notifier *notifier; /* budget alerts (src/alerts) */
    int nloops;
    kr_serve_loop *loops[KR_SERVE_MAX_LOOPS];
    /* loop 0's */
    uv_signal_t sigterm, sigint;
    int loops_done; /* other loops that have stopped */
    atomic_int_fast64_t conns; /* client connections of every loop (server.max_connections) */
};

/* Runs until SIGTERM/SIGINT and the drain. 0, or 1 after a refusal to start
 * (logged, and on stderr when the log is not). */
int kr_serve_run(const kr_config *cfg, bool dev);

/* serve_loops.c */
/* Sets up loop i's mailbox and timers (on the main thread, before it runs). */
void kr_serve_loop_init(kr_serve_loop *l);
/* Undoes what a refused start set up on a loop that never ran. */
void kr_serve_loop_teardown(kr_serve_loop *l);
/* Runs loops 1.. on their threads and loop 0 here, until every loop has
 * stopped; joins the threads. */
void kr_serve_loops_run(kr_serve *s);
/* Sums every loop's counters into m (and the token caches' hits and
 * misses), then calls done on loop l's thread: at once when l is the only
 * loop, else when the others have answered (ctx is done's). */
typedef void (*kr_serve_gather_fn)(void *ctx, const kr_metrics *m, uint64_t hits, uint64_t misses);
void kr_serve_gather(kr_serve_loop *l, kr_serve_gather_fn done, void *ctx);

/* local.c: the mount entry points (ctx: the kr_serve_loop). */
void kr_serve_healthz(void *ctx, kr_conn *c, const kr_http_req *h);
void kr_serve_readyz(void *ctx, kr_conn *c, const kr_http_req *h);
void kr_serve_metrics(void *ctx, kr_conn *c, const kr_http_req *h);

#endif
