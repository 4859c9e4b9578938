/*
 * otel.h -- OpenTelemetry traces: one span per proxied request, exported
 * over OTLP/HTTP with the JSON encoding to [otel] traces_endpoint. Off by
 * default (an empty endpoint).
 *
 * A span follows the GenAI semantic conventions (gen_ai.system,
 * gen_ai.operation.name, gen_ai.request.model, gen_ai.usage.input_tokens,
 * gen_ai.usage.output_tokens) plus keyrail's own attributes (keyrail.org_id,
 * keyrail.workspace_id, keyrail.route, keyrail.request_id, ...). It never
 * holds a credential, a header value or a byte of a prompt or an answer:
 * only ids, names from the registry, counts and statuses (kr_span has no
 * field that could).
 *
 * W3C trace context: a valid `traceparent` from the client makes the span a
 * child of the client's (same trace id, the client's span as parent); the
 * vendor then gets keyrail's own traceparent (the same trace, keyrail's span
 * as parent) instead of the client's. An invalid one is ignored (a new
 * trace starts), never forwarded.
 *
 * Off the request path: a loop copies the finished span into its port (a
 * bounded buffer under a mutex only that loop and the exporter take; full:
 * the span is dropped and counted); one exporter thread takes every port's
 * spans each [otel] batch_ms, renders one OTLP request and POSTs it with
 * libcurl (TLS verified). A failed export is dropped and counted, not
 * retried into a growing backlog: traces are telemetry, usage rows are the
 * record.
 */
#ifndef KR_OTEL_H
#define KR_OTEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/err.h"

typedef struct kr_otel kr_otel;
typedef struct kr_otel_port kr_otel_port;

#define KR_OTEL_MAX_PORTS 64

/* What a span says; fixed-size, copied into a port. */
typedef struct kr_span {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent;
    uint8_t flags;                /* trace-flags (01: sampled) */
    uint64_t start_ns, end_ns;    /* unix time */
    char operation[24];           /* gen_ai.operation.name: chat, generate_content, count_tokens */
    char system[32];              /* gen_ai.system: anthropic, openai, gcp.gemini, or the provider */
    char provider[32];            /* the registry's provider */
    char model[128];              /* gen_ai.request.model: the registry's model id */
    char request_id[48];          /* keyrail.request_id */
    char route[12];               /* keyrail.route: platform, byok */
    char http_route[40];          /* keyrail.http_route: the route's label */
    char error_type[32];          /* error.type, or "" */
    int64_t org_id, ws_id;
    uint64_t input_tokens, output_tokens, cache_read_tokens, cache_write_tokens;
    int64_t cost_micros;
    int status; /* http.response.status_code (what the client got) */
    bool stream;
    bool usage; /* the usage fields were read from the response */
} kr_span;

/* NULL in *out (and 0) when [otel] traces_endpoint is empty. */
int kr_otel_start(kr_otel **out, const kr_config *cfg, int nports, kr_diag *d);
kr_otel_port *kr_otel_port_of(kr_otel *o, int i);
/* On the port's loop: queue a copy (dropped and counted when full). */
void kr_otel_submit(kr_otel_port *p, const kr_span *s);
/* Exports what is queued (bounded by a timeout), stops the thread. */
void kr_otel_stop(kr_otel *o);
/* Counters for /metrics: spans exported, dropped (queue full or export failed). */
void kr_otel_counts(kr_otel *o, uint64_t *exported, uint64_t *dropped);

/* ---- W3C trace context (pure) ---- */

/* "00-<32 hex>-<16 hex>-<2 hex>" (lower-case hex; version 00, or a later
 * version with at least these fields); an all-zero trace or parent id is
 * invalid. 0 or -1. */
int kr_traceparent_parse(const char *v, size_t n, uint8_t trace[16], uint8_t parent[8],
                         uint8_t *flags);
/* The header value for (trace, span, flags): 55 characters and a NUL. */
void kr_traceparent_format(const uint8_t trace[16], const uint8_t span[8], uint8_t flags,
                           char out[56]);

/* The OTLP/JSON export request of n spans (pure: the tests and the fuzz
 * driver check it). */
void kr_otel_render(const kr_span *s, size_t n, const char *service, kr_buf *out);

#endif
