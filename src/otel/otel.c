/*
 * otel.c -- spans, their ports and the OTLP/HTTP exporter (otel.h).
 */
#include "otel/otel.h"
#include "core/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT_TIMEOUT_MS 10000
#define MIN_PORT_SPANS    256

struct kr_otel_port {
    pthread_mutex_t mu; /* this port's spans: its loop and the exporter */
    kr_span *spans;
    size_t n, cap;
    kr_otel *o;
};

struct kr_otel {
    char endpoint[512];
    char service[128];
    uint64_t batch_ms;
    pthread_t thread;
    pthread_mutex_t mu; /* the exporter's wait */
    pthread_cond_t cv;
    bool stopping;
    atomic_uint_fast64_t exported, dropped;
    bool logged_failure; /* exporter thread: one warning per run of failures */
    int nports;
    kr_otel_port ports[];
};

/* ---- W3C trace context ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* n hex digits at p into out[n/2]; false on a non-hex digit. Lower-case only, as
 * W3C trace context requires (kr_unhex also takes upper case). */
static bool unhex(const char *p, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(p[i]), lo = hexval(p[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

int kr_traceparent_parse(const char *v, size_t n, uint8_t trace[16], uint8_t parent[8],
                         uint8_t *flags)
{
    /* surrounding optional whitespace (a header value may carry it) */
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    uint8_t ver, f;
    if (n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return -1;
    if (!unhex(v, 2, &ver) || ver == 0xff) return -1;
    /* version 00 is exactly 55 characters; a later one may add "-..." */
    if ((ver == 0 && n != 55) || (ver != 0 && n > 55 && v[55] != '-')) return -1;
    uint8_t t[16], p[8];
    if (!unhex(v + 3, 32, t) || !unhex(v + 36, 16, p) || !unhex(v + 53, 2, &f)) return -1;
    if (all_zero(t, 16) || all_zero(p, 8)) return -1;
    memcpy(trace, t, 16);
    memcpy(parent, p, 8);
    *flags = f;
    return 0;
}

void kr_traceparent_format(const uint8_t trace[16], const uint8_t span[8], uint8_t flags,
                           char out[56])
{
    char t[33], s[17], f[3];
    kr_hex(trace, 16, t);
    kr_hex(span, 8, s);
    kr_hex(&flags, 1, f);
    snprintf(out, 56, "00-%s-%s-%s", t, s, f);
}

/* ---- the OTLP/JSON request ---- */

static void attr_str(kr_buf *b, bool *first, const char *key, const char *v)
{
    if (!v || !*v) return;
    kr_buf_puts(b, *first ? "{\"key\":\"" : ",{\"key\":\"");
    *first = false;
    kr_buf_puts(b, key);
    kr_buf_puts(b, "\",\"value\":{\"stringValue\":\"");
    kr_buf_json_str(b, v, strlen(v));
    kr_buf_puts(b, "\"}}");
}

/* OTLP/JSON writes 64-bit integers as strings */
static void attr_int(kr_buf *b, bool *first, const char *key, int64_t v)
{
    kr_buf_puts(b, *first ? "{\"key\":\"" : ",{\"key\":\"");
    *first = false;
    kr_buf_puts(b, key);
    kr_buf_puts(b, "\",\"value\":{\"intValue\":\"");
    kr_buf_put_i64(b, v);
    kr_buf_puts(b, "\"}}");
}

static void attr_bool(kr_buf *b, bool *first, const char *key, bool v)
{
    kr_buf_puts(b, *first ? "{\"key\":\"" : ",{\"key\":\"");
    *first = false;
    kr_buf_puts(b, key);
    kr_buf_puts(b, v ? "\",\"value\":{\"boolValue\":true}}" : "\",\"value\":{\"boolValue\":false}}");
}

static void render_span(const kr_span *s, kr_buf *b)
{
    char tid[33], sid[17], pid[17];
    kr_hex(s->trace_id, 16, tid);
    kr_hex(s->span_id, 8, sid);
    kr_buf_puts(b, "{\"traceId\":\"");
    kr_buf_puts(b, tid);
    kr_buf_puts(b, "\",\"spanId\":\"");
    kr_buf_puts(b, sid);
    kr_buf_putc(b, '"');
    if (s->has_parent) {
        kr_hex(s->parent_id, 8, pid);
        kr_buf_puts(b, ",\"parentSpanId\":\"");
        kr_buf_puts(b, pid);
        kr_buf_putc(b, '"');
    }
    kr_buf_puts(b, ",\"flags\":");
    kr_buf_put_i64(b, s->flags);
    /* the GenAI convention's span name: "{operation} {model}" */
    kr_buf_puts(b, ",\"name\":\"");
    kr_buf_json_str(b, s->operation, strlen(s->operation));
    if (s->model[0]) {
        kr_buf_putc(b, ' ');
        kr_buf_json_str(b, s->model, strlen(s->model));
    }
    kr_buf_puts(b, "\",\"kind\":3,\"startTimeUnixNano\":\"");
    kr_buf_put_u64(b, s->start_ns);
    kr_buf_puts(b, "\",\"endTimeUnixNano\":\"");
    kr_buf_put_u64(b, s->end_ns);
    kr_buf_puts(b, "\",\"attributes\":[");
    bool first = true;
    attr_str(b, &first, "gen_ai.system", s->system);
    attr_str(b, &first, "gen_ai.operation.name", s->operation);
    attr_str(b, &first, "gen_ai.request.model", s->model);
    if (s->usage) {
        attr_int(b, &first, "gen_ai.usage.input_tokens", (int64_t)s->input_tokens);
        attr_int(b, &first, "gen_ai.usage.output_tokens", (int64_t)s->output_tokens);
        attr_int(b, &first, "keyrail.usage.cache_read_tokens", (int64_t)s->cache_read_tokens);
        attr_int(b, &first, "keyrail.usage.cache_write_tokens", (int64_t)s->cache_write_tokens);
        attr_int(b, &first, "keyrail.cost_micros", s->cost_micros);
    }
    attr_int(b, &first, "http.response.status_code", s->status);
    attr_str(b, &first, "error.type", s->error_type);
    attr_str(b, &first, "keyrail.request_id", s->request_id);
    attr_int(b, &first, "keyrail.org_id", s->org_id);
    attr_int(b, &first, "keyrail.workspace_id", s->ws_id);
    attr_str(b, &first, "keyrail.route", s->route);
    attr_str(b, &first, "keyrail.provider", s->provider);
    attr_str(b, &first, "keyrail.http_route", s->http_route);
    attr_bool(b, &first, "keyrail.stream", s->stream);
    /* status: ERROR (2) with the error's type, else UNSET (0) */
    if (s->error_type[0] || s->status >= 500) {
        kr_buf_puts(b, "],\"status\":{\"code\":2,\"message\":\"");
        const char *m = s->error_type[0] ? s->error_type : "error";
        kr_buf_json_str(b, m, strlen(m));
        kr_buf_puts(b, "\"}}");
    } else {
        kr_buf_puts(b, "],\"status\":{}}");
    }
}

void kr_otel_render(const kr_span *s, size_t n, const char *service, kr_buf *b)
{
    kr_buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    bool first = true;
    attr_str(b, &first, "service.name", service);
    attr_str(b, &first, "telemetry.sdk.name", "keyrail");
    kr_buf_puts(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"keyrail\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) kr_buf_putc(b, ',');
        render_span(&s[i], b);
    }
    kr_buf_puts(b, "]}]}]}");
}

/* ---- the exporter ---- */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One POST; true on a 2xx. */
static bool post(kr_otel *o, CURL *h, const kr_buf *body)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, o->endpoint);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)EXPORT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdr);
    if (rc == CURLE_OK && code >= 200 && code < 300) {
        if (o->logged_failure) KR_INFO("otel: exports to the trace collector work again");
        o->logged_failure = false;
        return true;
    }
    if (!o->logged_failure)
        KR_WARN("otel: export to the trace collector failed (%s); spans are dropped until it "
                "answers",
                rc != CURLE_OK ? curl_easy_strerror(rc) : code ? "a non-2xx status" : "no answer");
    o->logged_failure = true;
    return false;
}

/* Takes every port's spans into batch (cap: the sum of the ports'). */
static size_t take(kr_otel *o, kr_span *batch)
{
    size_t n = 0;
    for (int i = 0; i < o->nports; i++) {
        kr_otel_port *p = &o->ports[i];
        pthread_mutex_lock(&p->mu);
        memcpy(batch + n, p->spans, p->n * sizeof *batch);
        n += p->n;
        p->n = 0;
        pthread_mutex_unlock(&p->mu);
    }
    return n;
}

static void *exporter(void *arg)
{
    kr_otel *o = arg;
    size_t total = 0;
    for (int i = 0; i < o->nports; i++)
        total += o->ports[i].cap;
    kr_span *batch = kr_xmalloc(total * sizeof *batch);
    kr_buf body = KR_BUF_INIT((size_t)1 << 30);
    CURL *h = curl_easy_init();
    pthread_mutex_lock(&o->mu);
    for (;;) {
        bool stopping = o->stopping;
        if (!stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += (time_t)(o->batch_ms / 1000);
            until.tv_nsec += (long)(o->batch_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!o->stopping && pthread_cond_timedwait(&o->cv, &o->mu, &until) == 0) {
            }
            stopping = o->stopping;
        }
        pthread_mutex_unlock(&o->mu);
        size_t n = take(o, batch);
        if (n) {
            kr_buf_reset(&body);
            kr_otel_render(batch, n, o->service, &body);
            if (h && post(o, h, &body))
                atomic_fetch_add(&o->exported, n);
            else
                atomic_fetch_add(&o->dropped, n);
        }
        pthread_mutex_lock(&o->mu);
        if (stopping) break;
    }
    pthread_mutex_unlock(&o->mu);
    if (h) curl_easy_cleanup(h);
    kr_buf_free(&body);
    free(batch);
    return NULL;
}

int kr_otel_start(kr_otel **out, const kr_config *cfg, int nports, kr_diag *d)
{
    *out = NULL;
    if (!cfg->otel_traces_endpoint[0]) return 0;
    if (strncmp(cfg->otel_traces_endpoint, "http://", 7) &&
        strncmp(cfg->otel_traces_endpoint, "https://", 8))
        return kr_fail(d, KR_ECONFIG, "otel.traces_endpoint must be an http:// or https:// URL");
    KR_ASSERT(nports >= 1 && nports <= KR_OTEL_MAX_PORTS);
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return kr_fail(d, KR_ECONFIG, "libcurl: init failed");
    kr_otel *o = kr_xcalloc(1, sizeof *o + (size_t)nports * sizeof o->ports[0]);
    kr_strlcpy(o->endpoint, cfg->otel_traces_endpoint, sizeof o->endpoint);
    kr_strlcpy(o->service, cfg->otel_service_name, sizeof o->service);
    o->batch_ms = (uint64_t)cfg->otel_batch_ms;
    o->nports = nports;
    size_t per = (size_t)cfg->otel_queue_spans / (size_t)nports;
    if (per < MIN_PORT_SPANS) per = MIN_PORT_SPANS;
    for (int i = 0; i < nports; i++) {
        kr_otel_port *p = &o->ports[i];
        pthread_mutex_init(&p->mu, NULL);
        p->cap = per;
        p->spans = kr_xmalloc(per * sizeof *p->spans);
        p->o = o;
    }
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    atomic_init(&o->exported, 0);
    atomic_init(&o->dropped, 0);
    pthread_create(&o->thread, NULL, exporter, o);
    KR_INFO("otel: one span per proxied request to %s every %llu ms", o->endpoint,
            (unsigned long long)o->batch_ms);
    *out = o;
    return 0;
}

kr_otel_port *kr_otel_port_of(kr_otel *o, int i)
{
    return o && i >= 0 && i < o->nports ? &o->ports[i] : NULL;
}

void kr_otel_submit(kr_otel_port *p, const kr_span *s)
{
    pthread_mutex_lock(&p->mu);
    bool full = p->n == p->cap;
    if (!full) p->spans[p->n++] = *s;
    pthread_mutex_unlock(&p->mu);
    if (full) atomic_fetch_add(&p->o->dropped, 1);
}

void kr_otel_counts(kr_otel *o, uint64_t *exported, uint64_t *dropped)
{
    *exported = o ? atomic_load(&o->exported) : 0;
    *dropped = o ? atomic_load(&o->dropped) : 0;
}

void kr_otel_stop(kr_otel *o)
{
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    for (int i = 0; i < o->nports; i++) {
        pthread_mutex_destroy(&o->ports[i].mu);
        free(o->ports[i].spans);
    }
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}
