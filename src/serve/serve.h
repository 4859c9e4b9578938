/*
 * serve.h -- `keyrail serve`: puts the parts together and runs them.
 *
 *   serve.c  start (the master key and its check against the store, the
 *            registry, the runtime profiles, the store, the listeners, the
 *            store workers and the usage writer), the mount tables, signals,
 *            the graceful drain and the stop
 *   local.c  the handlers that look across parts: /healthz, /readyz (the
 *            store, the usage writer, draining) and /metrics (the transport's,
 *            the proxy's and the usage writer's counters)
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

#include <stdbool.h>

#include "admin/admin.h"
#include "config/config.h"
#include "http/http.h"
#include "proxy/proxy.h"

/* One running `keyrail serve`: what start loaded and every part's state. */
typedef struct kr_serve {
    const kr_config *cfg;
    uv_loop_t *loop;
    kr_registry *reg;
    kr_runtimes *rts; /* agent runtime profiles (the provisioner reads them) */
    kr_policy pol;
    kr_master_key mk;
    char proxy_url[300];
    kr_workq *workers;
    kr_meter *meter;
    kr_http_server http;
    kr_proxy proxy;
    bool proxy_up;
    kr_admin admin;
    kr_http_mount main_mounts[6], admin_mounts[6];
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    uv_timer_t log_timer; /* flushes buffered log lines (server.log_flush_ms) */
    bool stopped;
} kr_serve;

/* Runs until SIGTERM/SIGINT and the drain. 0, or 1 after a refusal to start
 * (logged, and on stderr when the log is not). */
int kr_serve_run(const kr_config *cfg, bool dev);

/* local.c: the mount entry points (ctx: the kr_serve). */
void kr_serve_healthz(void *ctx, kr_conn *c, const kr_http_req *h);
void kr_serve_readyz(void *ctx, kr_conn *c, const kr_http_req *h);
void kr_serve_metrics(void *ctx, kr_conn *c, const kr_http_req *h);

#endif
