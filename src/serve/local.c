/*
 * local.c -- /healthz, /readyz and /metrics: answered by keyrail itself,
 * without a credential, looking across the parts (serve.h). They are
 * proxy requests (kr_req: the same shapes, the same log line); errors are
 * in the Anthropic shape, like every path that names no protocol.
 */
#include "serve/serve.h"
#include "core/lock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The request, or NULL after a 405 (these take GET and HEAD). */
static kr_req *local_new(kr_serve_loop *l, kr_conn *c, const kr_http_req *h, kr_route_id route)
{
    kr_req *r = kr_req_new(&l->proxy, c, h, route);
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
    kr_serve_loop *l;
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
    kr_serve_loop *l = p->l;
    r->job = NULL;
    bool meter_ok = kr_meter_healthy(l->s->meter);
    if (p->rc == 0 && meter_ok && !l->http.draining) {
        static const char ok[] = "{\"status\":\"ready\"}";
        kr_respond_json(r, 200, ok, sizeof ok - 1, NULL);
    } else {
        kr_respond_error(r, 503, "api_error", "not ready: %s",
                         l->http.draining ? "shutting down"
                         : p->rc          ? "the store is unreachable"
                                          : "usage writes are failing");
    }
}

void kr_serve_readyz(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_serve_loop *l = ctx;
    kr_req *r = local_new(l, c, h, KR_ROUTE_READYZ);
    if (!r) return;
    ping_job *p = kr_xcalloc(1, sizeof *p);
    p->job.work = ping_work;
    p->job.done = ping_done;
    p->req = r;
    p->l = l;
    r->job = &p->job;
    kr_workq_submit(l->workers, &p->job);
}

typedef struct {
    kr_req *r; /* held: the answer may come after the client went */
    kr_serve *s;
} metrics_call;

/* Every loop's counters are in: the answer (unless the client went). */
static void metrics_done(void *ctx, const kr_metrics *m, uint64_t hits, uint64_t misses)
{
    metrics_call *mc = ctx;
    kr_req *r = mc->r;
    kr_serve *s = mc->s;
    free(mc);
    if (!r->x.finished) {
        char extra[2048];
        snprintf(extra, sizeof extra,
                 "# HELP keyrail_usage_queue Usage rows waiting to be written.\n"
                 "# TYPE keyrail_usage_queue gauge\nkeyrail_usage_queue %zu\n"
                 "# HELP keyrail_usage_rows_total Usage rows committed.\n"
                 "# TYPE keyrail_usage_rows_total counter\nkeyrail_usage_rows_total %llu\n"
                 "# HELP keyrail_auth_cache_total Token cache lookups (every event loop's cache).\n"
                 "# TYPE keyrail_auth_cache_total counter\n"
                 "keyrail_auth_cache_total{result=\"hit\"} "
                 "%llu\nkeyrail_auth_cache_total{result=\"miss\"} %llu\n"
                 "# HELP keyrail_event_loops Event loops serving (server.workers).\n"
                 "# TYPE keyrail_event_loops gauge\nkeyrail_event_loops %d\n"
                 "# HELP keyrail_lock_contended_total Times a lock shared by the event loops was "
                 "found held.\n"
                 "# TYPE keyrail_lock_contended_total counter\n"
                 "keyrail_lock_contended_total{lock=\"%s\"} %llu\n"
                 "keyrail_lock_contended_total{lock=\"%s\"} %llu\n",
                 kr_meter_depth(s->meter), (unsigned long long)kr_meter_committed(s->meter),
                 (unsigned long long)hits, (unsigned long long)misses, s->nloops,
                 kr_lock_name(KR_LOCK_LIMITS),
                 (unsigned long long)atomic_load(&kr_lock_contended[KR_LOCK_LIMITS]),
                 kr_lock_name(KR_LOCK_METER),
                 (unsigned long long)atomic_load(&kr_lock_contended[KR_LOCK_METER]));
        if (s->otel) {
            uint64_t exported, dropped;
            kr_otel_counts(s->otel, &exported, &dropped);
            size_t el = strlen(extra);
            snprintf(extra + el, sizeof extra - el,
                     "# HELP keyrail_otel_spans_total Spans of proxied requests, by what became of "
                     "them.\n# TYPE keyrail_otel_spans_total counter\n"
                     "keyrail_otel_spans_total{result=\"exported\"} %llu\n"
                     "keyrail_otel_spans_total{result=\"dropped\"} %llu\n",
                     (unsigned long long)exported, (unsigned long long)dropped);
        }
        kr_buf b = KR_BUF_INIT(1 << 20);
        kr_metrics_render(m, extra, &b);
        kr_pool_metrics(s->pools, &b);
        kr_x_respond(&r->x, 200, "text/plain; version=0.0.4", b.data, b.len, NULL, NULL);
        kr_buf_free(&b);
    }
    kr_req_unref(r);
}

void kr_serve_metrics(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_serve_loop *l = ctx;
    kr_req *r = local_new(l, c, h, KR_ROUTE_METRICS);
    if (!r) return;
    metrics_call *mc = kr_xcalloc(1, sizeof *mc);
    mc->r = r;
    mc->s = l->s;
    r->refs++;
    kr_serve_gather(l, metrics_done, mc);
}
