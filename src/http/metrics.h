/*
 * metrics.h -- the server's counters, rendered in Prometheus text format at
 * /metrics: requests by route and status and the connection gauges (counted
 * by the transport as each request ends), upstream latency, tokens and
 * streams (counted by the proxy). Each event loop keeps its own, updated on
 * its thread only, so plain integers suffice; /metrics sums them
 * (kr_metrics_add) from copies each loop makes on its own thread. The route ids are the metrics and log labels of every
 * handler's routes.
 */
#ifndef KR_METRICS_H
#define KR_METRICS_H

#include <stdint.h>

#include "core/buf.h"
#include "core/usage.h"

typedef enum {
    KR_ROUTE_HEALTHZ = 0,
    KR_ROUTE_READYZ,
    KR_ROUTE_METRICS,
    KR_ROUTE_ANTHROPIC_MESSAGES,
    KR_ROUTE_ANTHROPIC_COUNT_TOKENS,
    KR_ROUTE_ANTHROPIC_MODELS,
    KR_ROUTE_OPENAI_CHAT,
    KR_ROUTE_OPENAI_RESPONSES,
    KR_ROUTE_OPENAI_MODELS,
    KR_ROUTE_WORKSPACE_ENV,
    KR_ROUTE_GEMINI_GENERATE,
    KR_ROUTE_GEMINI_STREAM,
    KR_ROUTE_GEMINI_COUNT_TOKENS,
    KR_ROUTE_GEMINI_MODELS,
    KR_ROUTE_ADMIN, /* the admin API and the console */
    KR_ROUTE_OTHER,
    KR_ROUTE__COUNT
} kr_route_id;

#define KR_METRICS_STATUSES 16
#define KR_LATENCY_BUCKETS 14

typedef struct kr_metrics {
    struct {
        int status;
        uint64_t count;
    } requests[KR_ROUTE__COUNT][KR_METRICS_STATUSES];
    uint64_t upstream_buckets[KR_LATENCY_BUCKETS]; /* cumulative at render time */
    uint64_t upstream_count;
    double upstream_sum;
    uint64_t tokens[4]; /* input, output, cache_read, cache_write */
    uint64_t upstream_errors;
    int64_t open_streams;
    int64_t open_connections;
    int64_t inflight;
    uint64_t client_disconnects;
    uint64_t usage_unreadable; /* metered responses whose usage could not be read */
    uint64_t upstream_retries; /* requests sent again with another platform key */
} kr_metrics;

/* The metrics and log label of a route. */
const char *kr_route_label(kr_route_id r);
void kr_metrics_request(kr_metrics *m, kr_route_id route, int status);
void kr_metrics_upstream_latency(kr_metrics *m, double seconds);
void kr_metrics_tokens(kr_metrics *m, const kr_usage *u);
/* dst += src (requests matched by route and status). */
void kr_metrics_add(kr_metrics *dst, const kr_metrics *src);
/* extra: gauges owned by others (usage queue depth, …) appended verbatim */
void kr_metrics_render(const kr_metrics *m, const char *extra, kr_buf *out);

#endif
