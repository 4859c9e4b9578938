/*
 * server.c -- listeners, client connections and exchanges (http.h).
 *
 * A connection reads, feeds the parser, and hands a complete request to
 * the first mount of its listener whose path matches. One request is served
 * at a time per connection; bytes of a pipelined next request wait in
 * conn->pending (capped; reading pauses at the cap). Writes go out with
 * uv_try_write first and queue the rest; the queued byte count is the
 * back-pressure signal a handler (the proxy) uses to pause its upstream,
 * and the exchange hears when it drains. Timers: a complete head must arrive within header_timeout_ms,
 * the body may not pause longer than that, and the whole request (head and
 * body) must arrive within request_timeout_ms of its first byte, however
 * steadily it trickles -- a request that misses a bound is answered 408 and
 * the connection closed. Idle keep-alive connections close after
 * idle_timeout_ms, and a client that accepts no bytes for send_timeout_ms
 * is dropped.
 */
#include "http/http.h"
#include "core/log.h"

#include <errno.h>
#include <sodium.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_CAP (64 * 1024)

/* each loop thread reads into its own */
static _Thread_local char read_buf[64 * 1024];

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

static void on_write(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    kr_conn *c = wr->conn;
    KR_ASSERT(c->write_pending >= wr->len);
    c->write_pending -= wr->len;
    free(wr);
    if (status < 0) {
        kr_conn_close(c);
        return;
    }
    if (c->x && c->x->ops->writable && c->write_pending < 64 * 1024) c->x->ops->writable(c->x);
    if (c->write_pending == 0) {
        if (c->close_after && !c->x) close_or_linger(c);
        else if (!c->x) timer_arm(c, (uint64_t)c->srv->cfg->idle_timeout_ms);
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
    KR_ASSERT(c->handles_open > 0);
    if (--c->handles_open > 0) return;
    kr_http_parser_free(&c->parser);
    kr_buf_free(&c->pending);
    free(c);
}

void kr_conn_close(kr_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    kr_http_server *s = c->srv;
    if (c->x) {
        kr_exchange *x = c->x;
        c->x = NULL;
        x->conn = NULL;
        if (x->ops->abort) x->ops->abort(x);
        x->ops->release(x);
    }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->metrics.open_connections--;
    if (s->shared_conns) atomic_fetch_sub_explicit(s->shared_conns, 1, memory_order_relaxed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->xtimer, on_handle_closed);
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
    if (c->x) return; /* the exchange's own timers decide */
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
        if (c->x && !c->x->finished) c->srv->metrics.client_disconnects++;
        kr_conn_close(c);
        return;
    }
    if (!c->x && c->pending.len == 0) {
        conn_feed_direct(c, buf->base, (size_t)n);
        return;
    }
    if (kr_buf_append(&c->pending, buf->base, (size_t)n)) {
        /* cannot happen: reading stops at the cap */
        kr_conn_close(c);
        return;
    }
    if (c->x) {
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
 * Refuses the request arriving on c before any handler saw it (a parse
 * error, an arrival timeout): one error with its own request id, like every
 * keyrail response -- worded by the server's refusal hook in the shape of
 * the protocol the path names (the proxy's: OpenAI for /openai/, else
 * Anthropic) --, `connection: close`, then the lingering close, so no byte
 * after it is ever parsed.
 */
static void respond_conn_error(kr_conn *c, int status, const char *fmt, ...)
{
    char msg[256], id[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kr_http_request_id(c->srv, id, sizeof id);
    /* the path is known once the parser reached the end of the head */
    kr_buf body = KR_BUF_INIT(4096);
    const char *idh = NULL;
    if (c->srv->refusal) c->srv->refusal(c->srv->refusal_ctx, &c->parser.req, status, msg, id, &body, &idh);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
                      "x-keyrail-request-id: %s\r\n%s%s%s%sconnection: close\r\n\r\n",
                      status, kr_status_text(status), body.len, id, idh ? idh : "",
                      idh ? ": " : "", idh ? id : "", idh ? "\r\n" : "");
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

/* The first mount of the listener whose path matches serves the request. */
static void dispatch(kr_conn *c)
{
    c->in_body = false;
    c->got_bytes = false;
    uv_timer_stop(&c->timer);
    if (c->srv->draining) c->parser.req.keep_alive = false;
    const kr_http_req *h = &c->parser.req;
    const kr_http_listener *l = c->l;
    for (size_t i = 0; i < l->nmounts; i++) {
        const kr_http_mount *m = &l->mounts[i];
        size_t n = strlen(m->path);
        if (n && !(h->path.n >= n && !memcmp(h->path.p, m->path, n) &&
                   (h->path.n == n || (m->prefix && h->path.p[n] == '/'))))
            continue;
        m->start(m->ctx, c, h);
        return;
    }
    respond_conn_error(c, 404, "no handler for this path");
}

/* A body may be complete with zero further bytes (HEAD came first). */
static void finish_empty_body(kr_conn *c)
{
    if (c->closing || c->x || !c->in_body || c->pending.len) return;
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
    while (!c->closing && !c->x && c->pending.len > 0) {
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
    while (left && !c->closing && !c->x) {
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

/* The exchange in flight is finished: let go of it and go on with the
 * pipelined bytes, or close. */
static void conn_request_done(kr_conn *c)
{
    kr_exchange *x = c->x;
    c->x = NULL;
    bool keep = x && x->keep_alive && !c->srv->draining;
    if (x) x->ops->release(x);
    if (c->closing) return;
    uv_timer_stop(&c->xtimer);
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

static void on_connection(uv_stream_t *ls, int status)
{
    kr_http_listener *l = ls->data;
    kr_http_server *s = l->srv;
    if (status < 0) return;
    kr_conn *c = kr_xcalloc(1, sizeof *c);
    c->srv = s;
    c->l = l;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles_open = 1;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    uv_timer_init(s->loop, &c->xtimer);
    c->timer.data = c->xtimer.data = c;
    c->handles_open = 3;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->metrics.open_connections++;
    /* the limit is the instance's: with several loops, their shared count */
    int64_t open = s->shared_conns
                       ? (int64_t)atomic_fetch_add_explicit(s->shared_conns, 1, memory_order_relaxed) + 1
                       : s->metrics.open_connections;
    if (s->draining || open > s->cfg->max_connections) {
        kr_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    kr_http_parser_init(&c->parser, &s->limits);
    kr_buf_init(&c->pending, PENDING_CAP + sizeof read_buf);
    reading(c, true);
    timer_arm(c, (uint64_t)s->cfg->idle_timeout_ms);
}

/* ---- exchanges ---- */

void kr_x_init(kr_exchange *x, const kr_exchange_ops *ops, kr_conn *c, const kr_http_req *h,
               kr_route_id route)
{
    KR_ASSERT(!c->x && !c->closing && ops->release);
    x->ops = ops;
    x->conn = c;
    x->srv = c->srv;
    x->http = h;
    x->keep_alive = h->keep_alive;
    x->t0_ns = kr_mono_ns();
    x->route = route;
    kr_http_request_id(c->srv, x->id, sizeof x->id);
    c->x = x;
    c->srv->metrics.inflight++;
}

void kr_x_write(kr_exchange *x, const uv_buf_t *bufs, unsigned n)
{
    if (x->conn) kr_conn_write(x->conn, bufs, n);
}

size_t kr_x_backlog(const kr_exchange *x)
{
    return x->conn ? x->conn->write_pending : 0;
}

void kr_x_finish(kr_exchange *x)
{
    if (x->finished) return;
    x->finished = true;
    kr_http_server *s = x->srv;
    kr_metrics_request(&s->metrics, x->route, x->status);
    KR_ASSERT(s->metrics.inflight > 0);
    s->metrics.inflight--;
    if (x->ops->log) x->ops->log(x);
    else kr_x_log(x);
    if (x->conn) {
        KR_ASSERT(x->conn->x == x);
        conn_request_done(x->conn);
    }
}

void kr_x_abandon(kr_exchange *x)
{
    if (x->finished) return;
    x->finished = true;
    if (!x->status) x->status = 499;
    kr_metrics_request(&x->srv->metrics, x->route, x->status);
    x->srv->metrics.inflight--;
}

/* ---- draining and stopping ---- */

void kr_http_drain(kr_http_server *s)
{
    s->draining = true;
    for (int i = 0; i < s->nlisteners; i++)
        if (s->listeners[i].open) {
            s->listeners[i].open = false;
            uv_close((uv_handle_t *)&s->listeners[i].tcp, NULL);
        }
}

size_t kr_http_close_idle(kr_http_server *s)
{
    size_t left = 0;
    for (kr_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (!c->x && c->write_pending == 0) kr_conn_close(c);
        else left++;
    }
    return left;
}

void kr_http_close_all(kr_http_server *s)
{
    for (kr_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        kr_conn_close(c);
    }
}

/* ---- start ---- */

int kr_http_parse_listen(const char *listen, struct sockaddr_storage *ss, kr_diag *d)
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

/* A listener slot with its mount table; its handle is initialised. */
static kr_http_listener *listener_add(kr_http_server *s, const kr_http_mount *mounts, size_t nmounts,
                                      int family, kr_diag *d)
{
    if (s->nlisteners == KR_HTTP_MAX_LISTENERS) {
        kr_fail(d, KR_ECONFIG, "more than %d listeners", KR_HTTP_MAX_LISTENERS);
        return NULL;
    }
    kr_http_listener *l = &s->listeners[s->nlisteners++];
    l->srv = s;
    l->mounts = mounts;
    l->nmounts = nmounts;
    /* with a family the socket is made now (so options can be set on it) */
    if (family) uv_tcp_init_ex(s->loop, &l->tcp, (unsigned)family);
    else uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    l->open = true;
    return l;
}

int kr_http_listen_fd(kr_http_server *s, int fd, const kr_http_mount *mounts, size_t nmounts,
                      kr_diag *d)
{
    kr_http_listener *l = listener_add(s, mounts, nmounts, 0, d);
    if (!l) return KR_ECONFIG;
    int rc;
    if ((rc = uv_tcp_open(&l->tcp, fd)) || (rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection)))
        return kr_fail(d, KR_ECONFIG, "cannot serve an inherited socket: %s", uv_strerror(rc));
    return 0;
}

void kr_http_server_init(kr_http_server *s, uv_loop_t *loop, const kr_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->worker = -1;
    s->cfg = cfg;
    s->limits = (kr_http_limits){(size_t)cfg->max_header_bytes, (unsigned)cfg->max_headers,
                                 (uint64_t)cfg->max_body_bytes};
    uint8_t inst[8];
    randombytes_buf(inst, sizeof inst);
    kr_hex(inst, sizeof inst, s->instance);
}

int kr_http_listen(kr_http_server *s, const char *addr, int port, bool reuseport, int backlog,
                   const kr_http_mount *mounts, size_t nmounts, kr_http_listener **out, kr_diag *d)
{
    struct sockaddr_storage ss;
    int rc;
    if ((rc = kr_http_parse_listen(addr, &ss, d))) return rc;
    if (port > 0) {
        if (ss.ss_family == AF_INET6) ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        else ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    }
    /* several loops, one listening socket each on the same port: the kernel
     * spreads new connections over them (libuv 1.44 has no flag for it, so
     * the socket is made first and set before the bind) */
    kr_http_listener *l = listener_add(s, mounts, nmounts, reuseport ? ss.ss_family : 0, d);
    if (!l) return KR_ECONFIG;
    if (reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&l->tcp, &fd) ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            return kr_fail(d, KR_ECONFIG, "cannot listen on %s: SO_REUSEPORT: %s", addr,
                           strerror(errno));
    }
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, backlog, on_connection)))
        return kr_fail(d, KR_ECONFIG, "cannot listen on %s: %s", addr, uv_strerror(rc));
    struct sockaddr_storage b;
    int blen = sizeof b;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&b, &blen);
    l->port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                            : ((struct sockaddr_in *)&b)->sin_port);
    if (out) *out = l;
    return 0;
}
