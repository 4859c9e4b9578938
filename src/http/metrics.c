#include "http/metrics.h"

static const char *const labels[KR_ROUTE__COUNT] = {
    [KR_ROUTE_HEALTHZ] = "healthz",
    [KR_ROUTE_READYZ] = "readyz",
    [KR_ROUTE_METRICS] = "metrics",
    [KR_ROUTE_ANTHROPIC_MESSAGES] = "anthropic_messages",
    [KR_ROUTE_ANTHROPIC_COUNT_TOKENS] = "anthropic_count_tokens",
    [KR_ROUTE_ANTHROPIC_MODELS] = "anthropic_models",
    [KR_ROUTE_OPENAI_CHAT] = "openai_chat_completions",
    [KR_ROUTE_OPENAI_RESPONSES] = "openai_responses",
    [KR_ROUTE_OPENAI_MODELS] = "openai_models",
    [KR_ROUTE_WORKSPACE_ENV] = "workspace_env",
    [KR_ROUTE_GEMINI_GENERATE] = "gemini_generate_content",
    [KR_ROUTE_GEMINI_STREAM] = "gemini_stream_generate_content",
    [KR_ROUTE_GEMINI_COUNT_TOKENS] = "gemini_count_tokens",
    [KR_ROUTE_GEMINI_MODELS] = "gemini_models",
    [KR_ROUTE_ADMIN] = "admin",
    [KR_ROUTE_OTHER] = "other",
};

const char *kr_route_label(kr_route_id id)
{
    return (unsigned)id < KR_ROUTE__COUNT && labels[id] ? labels[id] : "other";
}

static const double bounds[KR_LATENCY_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,    10};

void kr_metrics_request(kr_metrics *m, kr_route_id route, int status)
{
    if ((unsigned)route >= KR_ROUTE__COUNT) route = KR_ROUTE_OTHER;
    for (int i = 0; i < KR_METRICS_STATUSES; i++) {
        if (m->requests[route][i].status == status || m->requests[route][i].status == 0) {
            m->requests[route][i].status = status;
            m->requests[route][i].count++;
            return;
        }
    }
    /* more distinct statuses than slots: count under the last one */
    m->requests[route][KR_METRICS_STATUSES - 1].count++;
}

void kr_metrics_add(kr_metrics *dst, const kr_metrics *src)
{
    for (int r = 0; r < KR_ROUTE__COUNT; r++)
        for (int i = 0; i < KR_METRICS_STATUSES && src->requests[r][i].status; i++) {
            int st = src->requests[r][i].status, j = 0;
            while (j < KR_METRICS_STATUSES - 1 && dst->requests[r][j].status &&
                   dst->requests[r][j].status != st)
                j++;
            if (!dst->requests[r][j].status) dst->requests[r][j].status = st;
            dst->requests[r][j].count += src->requests[r][i].count;
        }
    for (int i = 0; i < KR_LATENCY_BUCKETS; i++)
        dst->upstream_buckets[i] += src->upstream_buckets[i];
    dst->upstream_count += src->upstream_count;
    dst->upstream_sum += src->upstream_sum;
    for (int i = 0; i < 4; i++)
        dst->tokens[i] += src->tokens[i];
    dst->upstream_errors += src->upstream_errors;
    dst->open_streams += src->open_streams;
    dst->open_connections += src->open_connections;
    dst->inflight += src->inflight;
    dst->client_disconnects += src->client_disconnects;
    dst->usage_unreadable += src->usage_unreadable;
    dst->upstream_retries += src->upstream_retries;
}

void kr_metrics_upstream_latency(kr_metrics *m, double s)
{
    for (int i = 0; i < KR_LATENCY_BUCKETS; i++)
        if (s <= bounds[i]) {
            m->upstream_buckets[i]++;
            break;
        }
    m->upstream_count++;
    m->upstream_sum += s;
}

void kr_metrics_tokens(kr_metrics *m, const kr_usage *u)
{
    m->tokens[0] += u->input_tokens;
    m->tokens[1] += u->output_tokens;
    m->tokens[2] += u->cache_read_tokens;
    m->tokens[3] += u->cache_write_tokens;
}

void kr_metrics_render(const kr_metrics *m, const char *extra, kr_buf *out)
{
    kr_buf_puts(out, "# HELP keyrail_requests_total Requests by route and status.\n"
                     "# TYPE keyrail_requests_total counter\n");
    for (int r = 0; r < KR_ROUTE__COUNT; r++)
        for (int i = 0; i < KR_METRICS_STATUSES && m->requests[r][i].status; i++)
            kr_buf_printf(out, "keyrail_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          kr_route_label((kr_route_id)r), m->requests[r][i].status,
                          (unsigned long long)m->requests[r][i].count);
    kr_buf_puts(out, "# HELP keyrail_upstream_latency_seconds Time to the upstream response head.\n"
                     "# TYPE keyrail_upstream_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < KR_LATENCY_BUCKETS; i++) {
        cum += m->upstream_buckets[i];
        kr_buf_printf(out, "keyrail_upstream_latency_seconds_bucket{le=\"%g\"} %llu\n", bounds[i],
                      (unsigned long long)cum);
    }
    kr_buf_printf(out,
                  "keyrail_upstream_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "keyrail_upstream_latency_seconds_sum %.6f\n"
                  "keyrail_upstream_latency_seconds_count %llu\n",
                  (unsigned long long)m->upstream_count, m->upstream_sum,
                  (unsigned long long)m->upstream_count);
    static const char *const kinds[4] = {"input", "output", "cache_read", "cache_write"};
    kr_buf_puts(out, "# HELP keyrail_tokens_total Tokens metered.\n# TYPE keyrail_tokens_total counter\n");
    for (int i = 0; i < 4; i++)
        kr_buf_printf(out, "keyrail_tokens_total{kind=\"%s\"} %llu\n", kinds[i],
                      (unsigned long long)m->tokens[i]);
    kr_buf_printf(out,
                  "# HELP keyrail_open_streams Streaming responses in progress.\n"
                  "# TYPE keyrail_open_streams gauge\nkeyrail_open_streams %lld\n"
                  "# HELP keyrail_open_connections Client connections open.\n"
                  "# TYPE keyrail_open_connections gauge\nkeyrail_open_connections %lld\n"
                  "# HELP keyrail_inflight_requests Requests in progress.\n"
                  "# TYPE keyrail_inflight_requests gauge\nkeyrail_inflight_requests %lld\n"
                  "# HELP keyrail_upstream_errors_total Upstream transport failures.\n"
                  "# TYPE keyrail_upstream_errors_total counter\nkeyrail_upstream_errors_total %llu\n"
                  "# HELP keyrail_client_disconnects_total Clients gone before the response ended.\n"
                  "# TYPE keyrail_client_disconnects_total counter\n"
                  "keyrail_client_disconnects_total %llu\n"
                  "# HELP keyrail_usage_unreadable_total Metered responses whose usage could not be "
                  "read (an event or body over its cap, or none sent); their rows say so.\n"
                  "# TYPE keyrail_usage_unreadable_total counter\n"
                  "keyrail_usage_unreadable_total %llu\n"
                  "# HELP keyrail_upstream_retries_total Requests sent again with another platform "
                  "key (the first one refused before any byte reached the client).\n"
                  "# TYPE keyrail_upstream_retries_total counter\n"
                  "keyrail_upstream_retries_total %llu\n",
                  (long long)m->open_streams, (long long)m->open_connections, (long long)m->inflight,
                  (unsigned long long)m->upstream_errors,
                  (unsigned long long)m->client_disconnects,
                  (unsigned long long)m->usage_unreadable,
                  (unsigned long long)m->upstream_retries);
    if (extra) kr_buf_puts(out, extra);
}
