/*
 * local.c -- /healthz, /readyz and /metrics: answered by keyrail itself,
 * without a credential, looking across the parts (serve.h). They are
 * proxy requests (kr_req: the same shapes, the same log line); errors are
 * in the Anthropic shape, like every path that names no protocol.
 */
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The request, or NULL after a 405 (these take GET and HEAD). */
static kr_req *local_new(kr_serve *s, kr_conn *c, const kr_http_req *h, kr_route_id route)
{
    kr_req *r = kr_req_new(&s->proxy, c, h, route);
    if (!kr_slice_eq(h->method, "GET") && !kr_slice_eq(h->method, "HEAD")) {
        kr_proxy_error(&r->x, KR_PROTO_ANTHROPIC, 405, "invalid_request_error",
                       "allow: GET, HEAD\r\n", "%.*s takes GET", (int)(h->path.n < 64 ? h->path.n : 64),
                       h->path.p);
        return NULL;
    }
    return r;
}

void kr_serve_healthz(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_req *r = local_new(ctx, c, h, KR_ROUTE_HEALTHZ);
    if (!r) return;
    static const char ok[] = "{\"status\":\"ok\"}";
    kr_respond_json(r, 200, ok, sizeof ok - 1, NULL);
}

typedef struct {
    kr_job job;
    kr_req *req;
    kr_serve *s;
    int rc;
} ping_job;

static void ping_work(kr_store *st, kr_job *j)
{
    ((ping_job *)j)->rc = kr_store_ping(st, NULL);
}

static void ping_done(kr_job *j)
{
    ping_job *p = (ping_job *)j;
    kr_req *r = p->req;
    kr_serve *s = p->s;
    r->job = NULL;
    bool meter_ok = kr_meter_healthy(s->meter);
    if (p->rc == 0 && meter_ok && !s->http.draining) {
        static const char ok[] = "{\"status\":\"ready\"}";
        kr_respond_json(r, 200, ok, sizeof ok - 1, NULL);
    } else {
        kr_respond_error(r, 503, "api_error", "not ready: %s",
                         s->http.draining ? "shutting down"
                         : p->rc          ? "the store is unreachable"
                                          : "usage writes are failing");
    }
}

void kr_serve_readyz(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_serve *s = ctx;
    kr_req *r = local_new(s, c, h, KR_ROUTE_READYZ);
    if (!r) return;
    ping_job *p = kr_xcalloc(1, sizeof *p);
    p->job.work = ping_work;
    p->job.done = ping_done;
    p->req = r;
    p->s = s;
    r->job = &p->job;
    kr_workq_submit(s->workers, &p->job);
}

void kr_serve_metrics(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_serve *s = ctx;
    kr_req *r = local_new(s, c, h, KR_ROUTE_METRICS);
    if (!r) return;
    char extra[512];
    snprintf(extra, sizeof extra,
             "# HELP keyrail_usage_queue Usage rows waiting to be written.\n"
             "# TYPE keyrail_usage_queue gauge\nkeyrail_usage_queue %zu\n"
             "# HELP keyrail_usage_rows_total Usage rows committed.\n"
             "# TYPE keyrail_usage_rows_total counter\nkeyrail_usage_rows_total %llu\n"
             "# HELP keyrail_auth_cache_total Token cache lookups.\n"
             "# TYPE keyrail_auth_cache_total counter\n"
             "keyrail_auth_cache_total{result=\"hit\"} "
             "%llu\nkeyrail_auth_cache_total{result=\"miss\"} %llu\n",
             kr_meter_depth(s->meter), (unsigned long long)kr_meter_committed(s->meter),
             (unsigned long long)s->proxy.auth.hits, (unsigned long long)s->proxy.auth.misses);
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_metrics_render(&s->http.metrics, extra, &b);
    kr_x_respond(&r->x, 200, "text/plain; version=0.0.4", b.data, b.len, NULL, NULL);
    kr_buf_free(&b);
}
