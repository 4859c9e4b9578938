/*
 * server.c -- the listener and client connections of `keyrail serve`.
 *
 * A connection reads, feeds the parser, and hands a complete request to
 * routes.c. One request is served at a time per connection; bytes of a
 * pipelined next request wait in conn->pending (capped; reading pauses at
 * the cap). Writes go out with uv_try_write first and queue the rest; the
 * queued byte count is the back-pressure signal routes.c uses to pause the
 * upstream. Timers: a complete head must arrive within header_timeout_ms,
 * the body may not pause longer than that, and the whole request (head and
 * body) must arrive within request_timeout_ms of its first byte, however
 * steadily it trickles -- a request that misses a bound is answered 408 and
 * the connection closed. Idle keep-alive connections close after
 * idle_timeout_ms, and a client that accepts no bytes for send_timeout_ms
 * is dropped.
 */
#include "proxy/proxy.h"
#include "core/log.h"

#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_CAP (64 * 1024)

static char read_buf[64 * 1024];

static void conn_process(kr_conn *c);
static void conn_feed_direct(kr_conn *c, const char *p, size_t left);

/* ---- writes ---- */

typedef struct {
    uv_write_t req;
    kr_conn *conn;
    size_t len;
    char data[];
} write_req;

static void timer_arm(kr_conn *c, uint64_t ms);
static void on_timeout(uv_timer_t *t);
static void close_or_linger(kr_conn *c);
static void respond_conn_error(kr_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void kr_server_request_id(kr_server *s, char *out, size_t cap)
{
    /* "req_" + the instance (16 hex) + the sequence (16 hex); no printf:
     * this runs once per request */
    static const char hx[] = "0123456789abcdef";
    if (cap < 37) {
        if (cap) out[0] = 0;
        return;
    }
    memcpy(out, "req_", 4);
    memcpy(out + 4, s->instance, 16);
    uint64_t v = ++s->reqseq;
    for (int i = 35; i >= 20; i--, v >>= 4)
        out[i] = hx[v & 15];
    out[36] = 0;
}

static void on_write(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    kr_conn *c = wr->conn;
    c->write_pending -= wr->len;
    free(wr);
    if (status < 0) {
        kr_conn_close(c);
        return;
    }
    if (c->req && c->req->paused && c->write_pending < 64 * 1024) kr_req_resume_upstream(c->req);
    if (c->write_pending == 0) {
        if (c->close_after && !c->req) close_or_linger(c);
        else if (!c->req) timer_arm(c, (uint64_t)c->srv->cfg->idle_timeout_ms);
    }
}

void kr_conn_write(kr_conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing) return;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    if (total == 0) return;
    size_t done = 0;
    if (c->write_pending == 0) {
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (w > 0) done = (size_t)w;
        else if (w < 0 && w != UV_EAGAIN) {
            kr_conn_close(c);
            return;
        }
    }
    if (done == total) return;
    write_req *wr = kr_xmalloc(sizeof *wr + total - done);
    wr->conn = c;
    wr->len = total - done;
    size_t skip = done, o = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(wr->data + o, bufs[i].base + skip, l - skip);
        o += l - skip;
        skip = 0;
    }
    c->write_pending += wr->len;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        c->write_pending -= wr->len;
        free(wr);
        kr_conn_close(c);
        return;
    }
    /* a client that takes nothing for send_timeout_ms is dropped */
    timer_arm(c, (uint64_t)c->srv->cfg->send_timeout_ms);
}

/* ---- lifecycle ---- */

static void on_handle_closed(uv_handle_t *h)
{
    kr_conn *c = h->data;
    if (--c->handles_open > 0) return;
    kr_http_parser_free(&c->parser);
    kr_buf_free(&c->pending);
    free(c);
}

void kr_conn_close(kr_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    kr_server *s = c->srv;
    if (c->req) {
        kr_req *r = c->req;
        c->req = NULL;
        r->conn = NULL;
        kr_req_abort(r);
        kr_req_unref(r);
    }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->metrics.open_connections--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->uptimer, on_handle_closed);
}

static void timer_arm(kr_conn *c, uint64_t ms)
{
    if (!c->closing) uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_timeout(uv_timer_t *t)
{
    kr_conn *c = t->data;
    if (c->write_pending > 0) {
        KR_INFO("dropping a client that accepted no bytes for %lld ms",
                (long long)c->srv->cfg->send_timeout_ms);
        kr_conn_close(c);
        return;
    }
    if (c->req) return; /* the request's own timers decide */
    if (c->linger || !c->got_bytes) {
        kr_conn_close(c); /* the drain after a refusal is over, or an idle connection */
        return;
    }
    /* a request began and missed one of its arrival bounds */
    const kr_config *cfg = c->srv->cfg;
    if (uv_now(c->srv->loop) >= c->deadline)
        respond_conn_error(c, 408,
                           "the request did not arrive within %lld ms (server.request_timeout_ms)",
                           (long long)cfg->request_timeout_ms);
    else if (c->in_body)
        respond_conn_error(c, 408,
                           "the request body paused for %lld ms (server.header_timeout_ms)",
                           (long long)cfg->header_timeout_ms);
    else
        respond_conn_error(c, 408,
                           "the request head did not arrive within %lld ms (server.header_timeout_ms)",
                           (long long)cfg->header_timeout_ms);
}

/* Until the next arrival bound: header_timeout_ms of silence, capped by the
 * request's total deadline. */
static void arm_arrival(kr_conn *c)
{
    uint64_t now = uv_now(c->srv->loop);
    uint64_t ms = (uint64_t)c->srv->cfg->header_timeout_ms;
    uint64_t left = c->deadline > now ? c->deadline - now : 0;
    timer_arm(c, ms < left ? ms : left);
}

/* ---- reads ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h, (void)hint;
    buf->base = read_buf;
    buf->len = sizeof read_buf;
}

static void reading(kr_conn *c, bool on);

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    kr_conn *c = st->data;
    if (n == 0) return;
    if (c->linger && n > 0) {
        /* the client may still be sending the body we refused: drain it so
         * our error reply is not destroyed by a reset */
        c->discarded += (size_t)n;
        if (c->discarded > (8u << 20)) kr_conn_close(c);
        return;
    }
    if (n < 0) {
        c->read_eof = true;
        if (c->req && !c->req->finished) c->srv->metrics.client_disconnects++;
        kr_conn_close(c);
        return;
    }
    if (!c->req && c->pending.len == 0) {
        conn_feed_direct(c, buf->base, (size_t)n);
        return;
    }
    if (kr_buf_append(&c->pending, buf->base, (size_t)n)) {
        /* cannot happen: reading stops at the cap */
        kr_conn_close(c);
        return;
    }
    if (c->req) {
        if (c->pending.len >= PENDING_CAP) reading(c, false);
        return;
    }
    conn_process(c);
}

static void reading(kr_conn *c, bool on)
{
    if (c->closing || c->reading == on) return;
    c->reading = on;
    if (on) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else uv_read_stop((uv_stream_t *)&c->tcp);
}

/*
 * Refuses the request arriving on c before it became a kr_req (a parse
 * error, an arrival timeout): one JSON error with its own request id, like
 * every keyrail response -- in the OpenAI shape when the head named an
 * /openai/ path, else in the Anthropic shape --, `connection: close`, then
 * the lingering close, so no byte after it is ever parsed.
 */
static void respond_conn_error(kr_conn *c, int status, const char *fmt, ...)
{
    char msg[256], id[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kr_server_request_id(c->srv, id, sizeof id);
    /* the path is known once the parser reached the end of the head */
    bool openai = c->parser.req.path.p && kr_slice_starts(c->parser.req.path, "/openai/");
    kr_buf body = KR_BUF_INIT(4096);
    if (openai) {
        kr_buf_puts(&body, "{\"error\":{\"message\":\"");
        kr_buf_json_str(&body, msg, strlen(msg));
        kr_buf_printf(&body, "\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null},"
                             "\"request_id\":\"%s\"}",
                      id);
    } else {
        /* the Anthropic API's own type for a 413 (docs/PROXY.md) */
        kr_buf_printf(&body, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"",
                      status == 413 ? "request_too_large" : "invalid_request_error");
        kr_buf_json_str(&body, msg, strlen(msg));
        kr_buf_printf(&body, "\"},\"request_id\":\"%s\"}", id);
    }
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
                      "x-keyrail-request-id: %s\r\n%s: %s\r\nconnection: close\r\n\r\n",
                      status, kr_status_text(status), body.len, id,
                      openai ? "x-request-id" : "request-id", id);
    uv_buf_t b[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init(body.data, (unsigned)body.len)};
    kr_metrics_request(&c->srv->metrics, KR_ROUTE_OTHER, status);
    KR_INFO("refused a request before routing: %d %s (request_id %s)", status, msg, id);
    c->close_after = true;
    c->linger = true;
    uv_timer_stop(&c->timer);
    kr_conn_write(c, b, 2);
    kr_buf_free(&body);
    if (c->write_pending == 0) close_or_linger(c);
}

static void respond_parse_error(kr_conn *c)
{
    respond_conn_error(c, c->parser.status ? c->parser.status : 400, "%s",
                       c->parser.error ? c->parser.error : "bad request");
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req, (void)status;
}

/* Lingering close: after an error reply to a request whose body may still
 * be arriving, shut down our side, read and discard for up to two seconds,
 * then close. Closing at once would make the kernel reset the connection
 * and the client would never read the reply. */
static void close_or_linger(kr_conn *c)
{
    if (c->closing) return;
    if (!c->linger || c->read_eof) {
        kr_conn_close(c);
        return;
    }
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        kr_conn_close(c);
        return;
    }
    reading(c, true);
    uv_timer_start(&c->timer, on_timeout, 2000, 0);
}

/* One parser step over data[0..len): handles the head (100-continue, the
 * body timer) and errors. Returns the parser's result; *used bytes taken. */
static int conn_step(kr_conn *c, const char *data, size_t len, size_t *used)
{
    *used = 0;
    if (!c->got_bytes) {
        /* the first byte of a request: its arrival bounds start now */
        c->got_bytes = true;
        c->deadline = uv_now(c->srv->loop) + (uint64_t)c->srv->cfg->request_timeout_ms;
        arm_arrival(c);
    }
    int rc = kr_http_feed(&c->parser, data, len, used);
    if (rc == KR_HTTP_HEAD) {
        c->in_body = true;
        if (c->parser.req.expect_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
            kr_conn_write(c, &b, 1);
        }
        arm_arrival(c);
    } else if (rc == KR_HTTP_AGAIN && c->in_body) {
        arm_arrival(c); /* the body moved: silence restarts, the deadline stays */
    }
    return rc;
}

static void dispatch(kr_conn *c)
{
    c->in_body = false;
    c->got_bytes = false;
    uv_timer_stop(&c->timer);
    if (c->srv->draining) c->parser.req.keep_alive = false;
    kr_req_start(c, &c->parser.req);
}

/* A body may be complete with zero further bytes (HEAD came first). */
static void finish_empty_body(kr_conn *c)
{
    if (c->closing || c->req || !c->in_body || c->pending.len) return;
    size_t used;
    int rc = kr_http_feed(&c->parser, "", 0, &used);
    if (rc == KR_HTTP_DONE) dispatch(c);
    else if (rc == KR_HTTP_ERROR) respond_parse_error(c);
}

/* Feeds pending bytes to the parser until a request is complete. Bytes are
 * consumed before a request is dispatched, since a request answered at once
 * comes back here for the next pipelined one. */
static void conn_process(kr_conn *c)
{
    while (!c->closing && !c->req && c->pending.len > 0) {
        size_t used;
        int rc = conn_step(c, c->pending.data, c->pending.len, &used);
        kr_buf_consume(&c->pending, used);
        if (rc == KR_HTTP_ERROR) {
            respond_parse_error(c);
            return;
        }
        if (rc == KR_HTTP_DONE) {
            dispatch(c);
            return;
        }
        if (rc == KR_HTTP_AGAIN) break;
    }
    finish_empty_body(c);
}

/* The common case: nothing pending, no request in flight. Parse straight
 * from the read buffer (the parser copies what it keeps) and keep only the
 * bytes after a complete request, instead of copying everything through
 * conn->pending first. */
static void conn_feed_direct(kr_conn *c, const char *p, size_t left)
{
    while (left && !c->closing && !c->req) {
        size_t used;
        int rc = conn_step(c, p, left, &used);
        p += used;
        left -= used;
        if (rc == KR_HTTP_ERROR) {
            respond_parse_error(c);
            return;
        }
        if (rc == KR_HTTP_DONE) {
            if (left && kr_buf_append(&c->pending, p, left)) {
                kr_conn_close(c);
                return;
            }
            dispatch(c);
            return;
        }
        if (rc == KR_HTTP_AGAIN) break;
    }
    finish_empty_body(c);
}

void kr_conn_request_done(kr_conn *c)
{
    kr_req *r = c->req;
    c->req = NULL;
    bool keep = r && r->keep_alive && !c->srv->draining;
    if (r) kr_req_unref(r);
    if (c->closing) return;
    uv_timer_stop(&c->uptimer);
    if (!keep) {
        c->close_after = true;
        reading(c, false);
        if (c->write_pending == 0) kr_conn_close(c);
        return;
    }
    kr_http_parser_reset(&c->parser);
    reading(c, true);
    if (c->write_pending == 0) timer_arm(c, (uint64_t)c->srv->cfg->idle_timeout_ms);
    conn_process(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    kr_server *s = l->data;
    if (status < 0) return;
    kr_conn *c = kr_xcalloc(1, sizeof *c);
    c->srv = s;
    c->admin = l == (uv_stream_t *)&s->admin_listener || !strcmp(s->cfg->admin_listen, "main");
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles_open = 1;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    uv_timer_init(s->loop, &c->uptimer);
    c->timer.data = c->uptimer.data = c;
    c->handles_open = 3;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->metrics.open_connections++;
    if (s->draining || s->metrics.open_connections > s->cfg->max_connections) {
        kr_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    kr_http_parser_init(&c->parser, &s->limits);
    kr_buf_init(&c->pending, PENDING_CAP + sizeof read_buf);
    reading(c, true);
    timer_arm(c, (uint64_t)s->cfg->idle_timeout_ms);
}

/* ---- shutdown ---- */

static void stop_everything(kr_server *s)
{
    if (s->stopped) return;
    s->stopped = true;
    for (kr_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        kr_conn_close(c);
    }
    uv_timer_stop(&s->drain_timer);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    kr_limits_stop(s);
    if (s->cfg->log_flush_ms > 0) {
        uv_timer_stop(&s->log_timer);
        uv_close((uv_handle_t *)&s->log_timer, NULL);
    }
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    kr_upstream_free(s);
    kr_workq_stop(s->workers);
    s->workers = NULL;
    kr_meter_stop(s->meter); /* flushes every usage row */
    s->meter = NULL;
}

static void on_drain_tick(uv_timer_t *t)
{
    kr_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    static uint64_t deadline;
    if (!deadline) deadline = now + (uint64_t)s->cfg->shutdown_grace_ms;
    /* idle keep-alive connections go now; busy ones finish */
    for (kr_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (!c->req && c->write_pending == 0) kr_conn_close(c);
    }
    if (!s->conns) {
        KR_INFO("drained: every request finished");
        stop_everything(s);
    } else if (now >= deadline) {
        KR_WARN("shutdown grace of %lld ms over: closing %lld connection(s)",
                (long long)s->cfg->shutdown_grace_ms, (long long)s->metrics.open_connections);
        stop_everything(s);
    }
}

static void on_signal(uv_signal_t *sig, int signum)
{
    kr_server *s = sig->data;
    if (s->draining) {
        KR_WARN("second signal: stopping now");
        stop_everything(s);
        return;
    }
    KR_INFO("signal %d: draining (no new connections, running requests may finish within %lld ms)",
            signum, (long long)s->cfg->shutdown_grace_ms);
    s->draining = true;
    uv_close((uv_handle_t *)&s->listener, NULL);
    if (s->admin_listening) uv_close((uv_handle_t *)&s->admin_listener, NULL);
    uv_timer_start(&s->drain_timer, on_drain_tick, 0, 50);
}

/* ---- start ---- */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, kr_diag *d)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    if (!colon) return kr_fail(d, KR_ECONFIG, "listen '%s' is not HOST:PORT", listen);
    if (kr_memlcpy(host, sizeof host, listen, (size_t)(colon - listen)))
        return kr_fail(d, KR_ECONFIG, "listen host too long");
    uint64_t port;
    if (kr_parse_u64(colon + 1, strlen(colon + 1), &port) || port > 65535)
        return kr_fail(d, KR_ECONFIG, "listen port in '%s' is not 0..65535", listen);
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen(h) - 1] = 0;
    }
    if (uv_ip4_addr(h, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(h, (int)port, (struct sockaddr_in6 *)ss) == 0) return 0;
    return kr_fail(d, KR_ECONFIG, "listen host '%s' is not an IP address", host);
}

static int load_platform_keys(kr_server *s)
{
    int n = 0;
    for (size_t i = 0; i < s->reg->nproviders; i++) {
        const kr_provider *p = &s->reg->providers[i];
        if (!p->platform) continue;
        const char *k = getenv(p->platform_key_env);
        if (!k || !*k) {
            KR_WARN("platform provider '%s': %s is not set; its models will answer 503",
                    p->name, p->platform_key_env);
            continue;
        }
        kr_buf b = KR_BUF_INIT(8192);
        if (kr_buf_printf(&b, p->header == KR_AUTH_BEARER ? "Authorization: Bearer %s" : "x-api-key: %s",
                          k)) {
            kr_buf_free(&b);
            continue;
        }
        s->platform_auth[i] = kr_buf_steal(&b);
        char fp[KR_FP_LEN];
        kr_cred_fingerprint(k, strlen(k), fp);
        KR_INFO("platform provider '%s': key loaded (%s %s)", p->name,
                kr_cred_class_name(kr_cred_classify(k, strlen(k))), fp);
        n++;
    }
    return n;
}

static void on_log_flush(uv_timer_t *t)
{
    (void)t;
    kr_log_flush();
}

static const char *journal_path(const kr_config *cfg, char *buf, size_t cap)
{
    if (!cfg->usage_sync) return NULL;
    if (cfg->usage_journal[0]) return cfg->usage_journal;
    const char *u = cfg->store_url;
    if (!strncmp(u, "postgres", 8)) return "keyrail-usage.journal";
    if (!strncmp(u, "sqlite:", 7)) u += 7;
    kr_snprintf(buf, cap, "%s-usage-journal", u);
    return buf;
}

/*
 * Request bodies (a Claude Code request is 50-200 KB) and libcurl's upload
 * buffer sized to them are allocated and freed per request. With glibc's
 * defaults (mmap above 128 KiB, the heap top trimmed above 128 KiB, both
 * thresholds moving with history) that churn can turn into brk/mmap and a
 * page fault per touched page on every request: measured here, 0.1 to 2.3
 * faults per request from run to run and up to 2.5x the CPU per stream.
 * Fixed thresholds keep such buffers in the heap. An operator's own
 * GLIBC_TUNABLES wins.
 */
static void tune_malloc(void)
{
    if (getenv("GLIBC_TUNABLES")) return;
    mallopt(M_MMAP_THRESHOLD, 4 << 20); /* above any body (server.max_body_bytes 1 MiB) */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

/* Every refusal to start is logged and, when the log is not stderr (or
 * would not show it), also written to stderr: an operator starting keyrail
 * by hand or under systemd sees why it did not start. Returns 1. */
static int refuse_to_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse_to_start(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    KR_ERROR("refusing to start: %s", msg);
    kr_log_flush();
    if (!kr_log_is_stderr() || kr_log_level > KR_LOG_ERROR) {
        kr_buf b = KR_BUF_INIT(4096);
        kr_redact(msg, strlen(msg), &b); /* like every log line */
        fprintf(stderr, "keyrail: refusing to start: %s\n", b.data ? b.data : "");
        kr_buf_free(&b);
    }
    return 1;
}

/* What start read and derived: the platform keys (wiped), the registry, the
 * runtime profiles, the master key (wiped); then the server itself. */
static void server_free(kr_server *s)
{
    for (size_t i = 0; i < KR_REGISTRY_MAX_PROVIDERS; i++)
        if (s->platform_auth[i]) {
            sodium_memzero(s->platform_auth[i], strlen(s->platform_auth[i]));
            free(s->platform_auth[i]);
        }
    kr_registry_free(s->reg);
    kr_runtimes_free(s->rts);
    sodium_memzero(&s->mk, sizeof s->mk);
    free(s);
}

int kr_server_run(const kr_config *cfg, bool dev)
{
    char journal[600];
    tune_malloc();
    kr_diag d = {{0}};
    int rc;
    if ((rc = kr_upstream_check_config(cfg, &d))) {
        refuse_to_start("%s", d.msg);
        return 1;
    }
    kr_server *s = kr_xcalloc(1, sizeof *s);
    bool listening = false;
    s->cfg = cfg;
    s->loop = uv_default_loop();
    s->limits = (kr_http_limits){(size_t)cfg->max_header_bytes, (unsigned)cfg->max_headers,
                                 (uint64_t)cfg->max_body_bytes};
    bool created = false;
    if ((rc = kr_master_key_load(cfg->master_key_file, dev, &s->mk, &created, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    if (created)
        KR_WARN("DEVELOPMENT MODE: created a new master key at %s (mode 0600). Secrets encrypted "
                "with it are lost if it is lost. Never use --dev in production.",
                cfg->master_key_file);
    if ((rc = kr_config_load_registry(cfg, &s->reg, &d))) {
        refuse_to_start("registry: %s", d.msg);
        goto refused;
    }
    if ((rc = kr_runtimes_load(cfg->runtimes_file, &s->rts, &d))) {
        refuse_to_start("runtime profiles: %s", d.msg);
        goto refused;
    }
    for (size_t i = 0; i < cfg->nprovider_urls; i++)
        KR_INFO("provider '%s': base_url overridden by the %s (%s)", cfg->provider_url[i].provider,
                cfg->provider_url[i].origin == KR_CFG_ENV ? "environment" : "config file",
                cfg->provider_url[i].base_url);
    kr_policy_init(&s->pol);
    if ((rc = kr_policy_add_prefixes(&s->pol, cfg->operator_prefixes, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    /* the store must open (and migrate) before we listen */
    kr_store *probe;
    if ((rc = kr_store_open(cfg->store_url, &probe, &d))) {
        refuse_to_start("store: %s", d.msg);
        goto refused;
    }
    /* the console's first start: say how to sign in */
    kr_admin_token *admins = NULL;
    size_t nadmins = 1;
    if (cfg->admin_listen[0] && !kr_admin_token_list(probe, &admins, &nadmins, &d) && !nadmins)
        KR_INFO("no admin token yet: mint one with `keyrail admin-token mint --scope operator` "
                "(same config) and sign in to the console at http://%s/console",
                strcmp(cfg->admin_listen, "main") ? cfg->admin_listen : cfg->listen);
    free(admins);
    /* the master key must be the one the stored secrets are sealed under */
    rc = kr_master_key_verify(probe, &s->mk, &d);
    kr_store_close(probe);
    if (rc) {
        char buf[600];
        const char *origin = kr_master_key_origin(cfg->master_key_file, buf, sizeof buf);
        refuse_to_start("%s (the master key from %s): %s",
                        rc == KR_EWRONG_MASTER_KEY ? "wrong master key" : "key check", origin,
                        kr_diag_msg(&d, rc));
        goto refused;
    }
    /* bound now, served from uv_run on: nothing is accepted before the rest */
    struct sockaddr_storage ss;
    if ((rc = parse_listen(cfg->listen, &ss, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    listening = true;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection))) {
        refuse_to_start("cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
        goto refused;
    }
    if (cfg->admin_listen[0] && strcmp(cfg->admin_listen, "main")) {
        struct sockaddr_storage as;
        if ((rc = parse_listen(cfg->admin_listen, &as, &d))) {
            refuse_to_start("server.admin_listen: %s", d.msg);
            goto refused;
        }
        uv_tcp_init(s->loop, &s->admin_listener);
        s->admin_listener.data = s;
        s->admin_listening = true;
        if ((rc = uv_tcp_bind(&s->admin_listener, (struct sockaddr *)&as, 0)) ||
            (rc = uv_listen((uv_stream_t *)&s->admin_listener, 128, on_connection))) {
            refuse_to_start("cannot listen on %s (server.admin_listen): %s", cfg->admin_listen,
                            uv_strerror(rc));
            goto refused;
        }
        struct sockaddr_storage ab;
        int al = sizeof ab;
        uv_tcp_getsockname(&s->admin_listener, (struct sockaddr *)&ab, &al);
        s->admin_port = ntohs(ab.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ab)->sin6_port
                                                       : ((struct sockaddr_in *)&ab)->sin_port);
    }
    if ((rc = kr_workq_start(&s->workers, s->loop, cfg->store_url, 2, &d)) ||
        (rc = kr_meter_start(&s->meter, s->loop, cfg->store_url, journal_path(cfg, journal, sizeof journal), &d))) {
        refuse_to_start("store: %s", d.msg);
        goto refused;
    }
    load_platform_keys(s);
    if (kr_upstream_init(s)) {
        refuse_to_start("libcurl multi could not be created");
        goto refused;
    }
    kr_auth_init(&s->auth, cfg->token_cache_ms);
    kr_limits_init(&s->adm);
    kr_limits_start(s);
    if (cfg->log_flush_ms > 0) {
        kr_log_set_buffered(true);
        uv_timer_init(s->loop, &s->log_timer);
        uv_timer_start(&s->log_timer, on_log_flush, (uint64_t)cfg->log_flush_ms,
                       (uint64_t)cfg->log_flush_ms);
    }
    uint8_t inst[8];
    randombytes_buf(inst, sizeof inst);
    kr_hex(inst, sizeof inst, s->instance);

    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    if (cfg->public_url[0]) kr_strlcpy(s->proxy_url, cfg->public_url, sizeof s->proxy_url);
    else kr_snprintf(s->proxy_url, sizeof s->proxy_url, "http://127.0.0.1:%d", s->port);
    size_t ul = strlen(s->proxy_url);
    while (ul && s->proxy_url[ul - 1] == '/') s->proxy_url[--ul] = 0;

    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    signal(SIGPIPE, SIG_IGN);
    KR_INFO("keyrail serving on %s port %d (store %s)", cfg->listen, s->port,
            strncmp(cfg->store_url, "postgres", 8) ? cfg->store_url : "postgres");
    if (s->admin_listening)
        KR_INFO("admin API and console on %s port %d: /admin/v1, /console", cfg->admin_listen,
                s->admin_port);
    else if (!strcmp(cfg->admin_listen, "main"))
        KR_INFO("admin API and console on the proxy's listener: /admin/v1, /console");
    uv_run(s->loop, UV_RUN_DEFAULT);
    uv_run(s->loop, UV_RUN_NOWAIT);
    kr_auth_free(&s->auth);
    kr_limits_free(&s->adm);
    int loop_rc = uv_loop_close(s->loop);
    if (loop_rc) KR_WARN("event loop closed with open handles");
    server_free(s);
    KR_INFO("keyrail stopped");
    kr_log_set_buffered(false);
    return 0;

refused:
    /* undo what was started, so a refusal exits clean (and leak-free) */
    kr_meter_stop(s->meter);
    kr_workq_stop(s->workers);
    if (listening) uv_close((uv_handle_t *)&s->listener, NULL);
    if (s->admin_listening) uv_close((uv_handle_t *)&s->admin_listener, NULL);
    uv_run(s->loop, UV_RUN_NOWAIT);
    uv_loop_close(s->loop);
    server_free(s);
    return 1;
}
