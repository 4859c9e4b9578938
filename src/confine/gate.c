/*
 * gate.c -- the parent side of `keyrail run --confine` (confine.h): serves
 * the sockets the sandbox bound inside, on a libuv loop, until the agent
 * exits.
 *
 *   the relay    every request on the relay port is forwarded to the
 *                keyrail server (method, target, headers less hop-by-hop,
 *                body), through the transport's upstream client (TLS
 *                verified), and the response streamed back re-framed
 *                (chunked); the Host header is the server's own, so a
 *                keyrail behind a name-based load balancer works
 *   the gate     HTTP CONNECT only: the target must be on the allow-list;
 *                the name is resolved here and only public answers are
 *                used; then bytes pass both ways (back-pressured) until
 *                either side closes. Every other request: 403/405.
 *   the child    SIGCHLD: the agent's status is the exit status; SIGTERM
 *                and SIGHUP are passed on; SIGINT is the terminal's to
 *                deliver (it reaches the agent's process group itself).
 */
#include "confine/confine.h"
#include "core/log.h"
#include "http/http.h"
#include "http/upstream.h"
#include "proxy/proxy.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define TUNNEL_HIGH   (1u << 20) /* bytes queued toward one side before the other pauses */
#define MAX_TUNNELS   256
#define HEAD_TIMEOUT  10000
#define RELAY_HIGH    (256 * 1024)

typedef struct gate gate;

/* ---- the relay ---- */

typedef struct relay_req {
    kr_exchange x; /* first */
    gate *g;
    kr_upx up;
    kr_buf head; /* the response head as it arrives */
    kr_buf out;
    int up_status;
    bool head_sent, paused;
    int refs; /* the connection + a running transfer */
} relay_req;

struct gate {
    uv_loop_t *loop;
    const kr_confine_opts *o;
    kr_config cfg;
    kr_http_server http;
    kr_upstream up;
    kr_http_mount mounts[1];
    uv_tcp_t gate_l[2];
    int ngate;
    uv_signal_t sigchld, sigterm, sighup;
    pid_t child;
    int status; /* the exit status keyrail run returns */
    bool done;
    int ntunnels;
    struct tunnel *tunnels;
    char server[300]; /* the relay's origin, no trailing slash */
};

static void relay_unref(relay_req *r)
{
    KR_ASSERT(r->refs > 0);
    if (--r->refs > 0) return;
    kr_buf_free(&r->head);
    kr_buf_free(&r->out);
    free(r);
}

static void relay_flush(relay_req *r)
{
    if (r->out.len && r->x.conn) {
        uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
        kr_x_write(&r->x, &b, 1);
    }
    kr_buf_reset(&r->out);
}

static void relay_abort(kr_exchange *x)
{
    relay_req *r = (relay_req *)x;
    if (r->up.active) {
        kr_upstream_cancel(&r->g->up, &r->up);
        relay_unref(r); /* the transfer's reference */
    }
    kr_x_abandon(x);
}

static void relay_release(kr_exchange *x)
{
    relay_unref((relay_req *)x);
}

static void relay_writable(kr_exchange *x)
{
    relay_req *r = (relay_req *)x;
    if (!r->paused || !r->up.active) return;
    r->paused = false;
    kr_upstream_resume(&r->g->up, &r->up);
}

static const kr_exchange_ops relay_ops = {relay_abort, relay_release, relay_writable, NULL};

static bool hop_by_hop(const char *n, size_t l)
{
    static const char *const h[] = {"connection", "keep-alive", "transfer-encoding", "te",
                                    "trailer", "upgrade", "proxy-authorization",
                                    "proxy-authenticate", "proxy-connection", "content-length",
                                    "host", "expect"};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        if (strlen(h[i]) == l && !strncasecmp(n, h[i], l)) return true;
    return false;
}

static void send_head(relay_req *r)
{
    if (r->head_sent) return;
    r->head_sent = true;
    r->x.status = r->up_status;
    kr_buf_puts(&r->out, "HTTP/1.1 ");
    kr_buf_put_i64(&r->out, r->up_status);
    kr_buf_putc(&r->out, ' ');
    kr_buf_puts(&r->out, kr_status_text(r->up_status));
    kr_buf_append(&r->out, "\r\n", 2);
    kr_buf_append(&r->out, r->head.data ? r->head.data : "", r->head.len);
    kr_buf_puts(&r->out, "transfer-encoding: chunked\r\n");
    if (!r->x.keep_alive) kr_buf_puts(&r->out, "connection: close\r\n");
    kr_buf_append(&r->out, "\r\n", 2);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    relay_req *r = ud;
    n *= size;
    if (n >= 5 && !memcmp(p, "HTTP/", 5)) {
        const char *sp = memchr(p, ' ', n);
        r->up_status = sp && sp + 4 <= p + n ? (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0') : 0;
        kr_buf_reset(&r->head);
        return n;
    }
    if (n <= 2) {
        if (r->up_status >= 200) send_head(r);
        return n;
    }
    const char *colon = memchr(p, ':', n);
    if (!colon || r->up_status < 200 || hop_by_hop(p, (size_t)(colon - p))) return n;
    return kr_buf_append(&r->head, p, n) ? 0 : n;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    relay_req *r = ud;
    n *= size;
    if (!r->x.conn) return 0;
    if (!r->head_sent) send_head(r);
    if (kr_x_backlog(&r->x) + r->out.len > RELAY_HIGH) {
        relay_flush(r);
        r->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (n == 0) return 0;
    char pre[24];
    int pl = snprintf(pre, sizeof pre, "%zx\r\n", n);
    kr_buf_append(&r->out, pre, (size_t)pl);
    kr_buf_append(&r->out, p, n);
    kr_buf_append(&r->out, "\r\n", 2);
    relay_flush(r);
    return n;
}

static void relay_error(relay_req *r, int status, const char *fmt, const char *why)
{
    kr_proto proto = r->x.http && kr_slice_starts(r->x.http->path, "/openai/") ? KR_PROTO_OPENAI
                                                                              : KR_PROTO_ANTHROPIC;
    kr_proxy_error(&r->x, proto, status, "api_error", NULL, fmt, why);
}

static void on_done(kr_upx *x, CURLcode rc)
{
    relay_req *r = x->ud;
    if (rc == CURLE_OK) {
        if (!r->head_sent) send_head(r);
        kr_buf_append(&r->out, "0\r\n\r\n", 5);
        relay_flush(r);
        kr_x_finish(&r->x);
    } else if (!r->head_sent) {
        char why[400];
        kr_upstream_describe(rc, r->up.err, why, sizeof why);
        relay_error(r, 502, "keyrail run could not relay to the keyrail server: %s", why);
    } else {
        /* cut midway: the client sees an unterminated chunked body */
        r->x.keep_alive = false;
        relay_flush(r);
        if (r->x.conn) kr_conn_close(r->x.conn);
        else kr_x_abandon(&r->x);
    }
    relay_unref(r);
}

static void relay_start(void *ctx, kr_conn *c, const kr_http_req *h)
{
    gate *g = ctx;
    relay_req *r = kr_xcalloc(1, sizeof *r);
    r->g = g;
    r->refs = 1;
    kr_buf_init(&r->head, 64 * 1024);
    kr_buf_init(&r->out, 4u << 20);
    kr_x_init(&r->x, &relay_ops, c, h, KR_ROUTE_OTHER);
    char method[16];
    if (kr_memlcpy(method, sizeof method, h->method.p, h->method.n) || !strcmp(method, "HEAD") ||
        !strcmp(method, "CONNECT") || !strcmp(method, "OPTIONS") || !strcmp(method, "TRACE")) {
        relay_error(r, 405, "%s", "keyrail run relays GET, POST, PUT, PATCH and DELETE");
        return;
    }
    static _Thread_local kr_buf url = KR_BUF_INIT(16384), hb = KR_BUF_INIT(1u << 20);
    kr_buf_reset(&url);
    kr_buf_reset(&hb);
    kr_buf_puts(&url, g->server);
    kr_buf_append(&url, h->target.p, h->target.n);
    for (unsigned i = 0; i < h->nheaders; i++) {
        const kr_http_header *f = &h->headers[i];
        if (hop_by_hop(f->name.p, f->name.n)) continue;
        kr_buf_append(&hb, f->name.p, f->name.n);
        kr_buf_append(&hb, ": ", 2);
        kr_buf_append(&hb, f->value.p, f->value.n);
        kr_buf_append(&hb, "\r\n", 2);
    }
    kr_upx_req q = {url.data, hb.data ? hb.data : "", hb.len, h->body ? h->body : "", h->body_len,
                    !strcmp(method, "GET"), method};
    r->up.ud = r;
    r->up.on_header = on_header;
    r->up.on_body = on_body;
    r->up.done = on_done;
    r->up.who = "keyrail";
    r->up.id = r->x.id;
    int rc = kr_upstream_send(&g->up, &r->up, &q);
    if (rc) {
        relay_error(r, 502, "keyrail run could not relay to the keyrail server: %s",
                    rc == KR_EINVAL ? "its URL is not one the relay takes" : "the request could not start");
        return;
    }
    r->refs++;
}

static void flush_nothing(void *ctx)
{
    (void)ctx;
}

/* ---- the CONNECT gate ---- */

typedef struct tunnel {
    uv_tcp_t in, out; /* the agent's side, the destination's */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    gate *g;
    struct tunnel *prev, *next; /* every open tunnel of the gate */
    char head[KR_CONNECT_MAX_HEAD];
    size_t hlen;
    kr_connect_req req;
    char early[KR_CONNECT_MAX_HEAD]; /* bytes after the head, before the tunnel opened */
    size_t early_len;
    size_t q_in, q_out; /* bytes queued toward each side */
    int handles;        /* open handles; freed at 0 */
    bool out_open, connected, closing, resolving;
} tunnel;

typedef struct {
    uv_write_t w;
    tunnel *t;
    bool to_out;
    size_t n;
    char data[];
} twrite;

static void on_tunnel_closed(uv_handle_t *h)
{
    tunnel *t = h->data;
    KR_ASSERT(t->handles > 0);
    if (--t->handles > 0) return;
    t->g->ntunnels--;
    free(t);
}

static void tunnel_close(tunnel *t)
{
    if (t->closing) return;
    t->closing = true;
    if (t->prev) t->prev->next = t->next;
    else t->g->tunnels = t->next;
    if (t->next) t->next->prev = t->prev;
    uv_close((uv_handle_t *)&t->in, on_tunnel_closed);
    uv_close((uv_handle_t *)&t->timer, on_tunnel_closed);
    if (t->out_open) uv_close((uv_handle_t *)&t->out, on_tunnel_closed);
    if (t->resolving) uv_cancel((uv_req_t *)&t->gai); /* on_resolved sees closing */
}

static void on_twrite(uv_write_t *w, int status);
static void on_in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b);

static void on_timer_close(uv_timer_t *tm)
{
    tunnel_close(tm->data);
}

static int twrite_to(tunnel *t, bool to_out, const char *p, size_t n)
{
    twrite *w = kr_xmalloc(sizeof *w + n);
    w->t = t;
    w->to_out = to_out;
    w->n = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = uv_write(&w->w, (uv_stream_t *)(to_out ? &t->out : &t->in), &b, 1, on_twrite);
    if (rc) {
        free(w);
        return rc;
    }
    if (to_out) t->q_out += n;
    else t->q_in += n;
    return 0;
}

static void on_twrite(uv_write_t *w, int status)
{
    twrite *tw = (twrite *)w;
    tunnel *t = tw->t;
    bool to_out = tw->to_out;
    KR_ASSERT((to_out ? t->q_out : t->q_in) >= tw->n);
    if (to_out) t->q_out -= tw->n;
    else t->q_in -= tw->n;
    free(tw);
    if (t->closing) return;
    if (status < 0) {
        tunnel_close(t);
        return;
    }
    /* the side that was paused for this one reads again */
    if (!t->connected) return;
    if (to_out && t->q_out < TUNNEL_HIGH / 2) uv_read_start((uv_stream_t *)&t->in, on_alloc, on_in_read);
    if (!to_out && t->q_in < TUNNEL_HIGH / 2) uv_read_start((uv_stream_t *)&t->out, on_alloc, on_out_read);
}

static void tunnel_refuse(tunnel *t, int status, const char *why)
{
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                     "connection: close\r\n\r\n%s\n",
                     status, kr_status_text(status), strlen(why) + 1, why);
    if (!t->g->o->quiet) {
        if (t->req.host[0])
            fprintf(stderr, "keyrail run: egress refused: %s:%u (%s)\n", t->req.host,
                    (unsigned)t->req.port, why);
        else
            fprintf(stderr, "keyrail run: egress refused: %s\n", why);
    }
    uv_read_stop((uv_stream_t *)&t->in);
    if (twrite_to(t, false, resp, (size_t)n)) tunnel_close(t);
    else uv_timer_start(&t->timer, on_timer_close, 1000, 0); /* the answer leaves, then close */
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h, (void)sz;
    static char buf[64 * 1024];
    b->base = buf;
    b->len = sizeof buf;
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    tunnel *t = s->data;
    if (n == 0 || t->closing) return;
    if (n < 0) {
        tunnel_close(t);
        return;
    }
    if (twrite_to(t, false, b->base, (size_t)n)) {
        tunnel_close(t);
        return;
    }
    if (t->q_in > TUNNEL_HIGH) uv_read_stop(s);
}

static void on_connected(uv_connect_t *c, int status)
{
    tunnel *t = c->data;
    if (t->closing) return;
    uv_timer_stop(&t->timer);
    if (status < 0) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", uv_strerror(status));
        tunnel_refuse(t, 502, why);
        return;
    }
    t->connected = true;
    static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
    if (twrite_to(t, false, ok, sizeof ok - 1) ||
        (t->early_len && twrite_to(t, true, t->early, t->early_len))) {
        tunnel_close(t);
        return;
    }
    uv_read_start((uv_stream_t *)&t->out, on_alloc, on_out_read);
    uv_read_start((uv_stream_t *)&t->in, on_alloc, on_in_read);
}

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *ai)
{
    tunnel *t = r->data;
    t->resolving = false;
    if (t->closing) {
        uv_freeaddrinfo(ai);
        return;
    }
    if (status < 0) {
        uv_freeaddrinfo(ai);
        tunnel_refuse(t, 502, "the name does not resolve");
        return;
    }
    const struct addrinfo *pick = NULL;
    bool any = false;
    for (const struct addrinfo *a = ai; a && !pick; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
        any = true;
        if (kr_addr_is_public(a->ai_addr)) pick = a;
    }
    if (!pick) {
        uv_freeaddrinfo(ai);
        tunnel_refuse(t, 403,
                      any ? "it resolves to a loopback, link-local or private address only"
                          : "no address");
        return;
    }
    uv_tcp_init(t->g->loop, &t->out);
    t->out.data = t;
    t->out_open = true;
    t->handles++;
    t->creq.data = t;
    int rc = uv_tcp_connect(&t->creq, &t->out, pick->ai_addr, on_connected);
    uv_freeaddrinfo(ai);
    if (rc) {
        tunnel_refuse(t, 502, "cannot connect");
        return;
    }
    uv_timer_start(&t->timer, on_timer_close, 10000, 0);
}

static void tunnel_head(tunnel *t)
{
    int rc = kr_connect_parse(t->head, t->hlen, &t->req);
    if (rc == KR_EAGAIN_HEAD) return;
    uv_read_stop((uv_stream_t *)&t->in);
    uv_timer_stop(&t->timer);
    if (rc) {
        tunnel_refuse(t, t->req.not_connect ? 405 : 400,
                      t->req.not_connect
                          ? "only CONNECT tunnels pass this proxy (https through the allow-list)"
                          : "a CONNECT request keyrail run cannot read");
        return;
    }
    if (!kr_egress_allows(&t->g->o->egress, t->req.host, t->req.port)) {
        tunnel_refuse(t, 403, "not on the workspace's egress allow-list");
        return;
    }
    t->early_len = t->hlen - t->req.head_len;
    memcpy(t->early, t->head + t->req.head_len, t->early_len);
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)t->req.port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    t->gai.data = t;
    t->resolving = true;
    if (uv_getaddrinfo(t->g->loop, &t->gai, on_resolved, t->req.host, port, &hints)) {
        t->resolving = false;
        tunnel_refuse(t, 502, "the name cannot be resolved");
        return;
    }
    uv_timer_start(&t->timer, on_timer_close, 10000, 0);
}

static void on_in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    tunnel *t = s->data;
    if (n == 0 || t->closing) return;
    if (n < 0) {
        tunnel_close(t);
        return;
    }
    if (!t->connected) {
        if (t->resolving || t->out_open) {
            tunnel_close(t); /* bytes before the answer: only a well-behaved client passes */
            return;
        }
        size_t take = (size_t)n;
        if (take > sizeof t->head - t->hlen) take = sizeof t->head - t->hlen;
        memcpy(t->head + t->hlen, b->base, take);
        t->hlen += take;
        if (take < (size_t)n) {
            tunnel_refuse(t, 431, "the CONNECT head is too large");
            return;
        }
        tunnel_head(t);
        return;
    }
    if (twrite_to(t, true, b->base, (size_t)n)) {
        tunnel_close(t);
        return;
    }
    if (t->q_out > TUNNEL_HIGH) uv_read_stop(s);
}

static void on_gate_conn(uv_stream_t *l, int status)
{
    gate *g = l->data;
    if (status < 0) return;
    tunnel *t = kr_xcalloc(1, sizeof *t);
    t->g = g;
    uv_tcp_init(g->loop, &t->in);
    t->in.data = t;
    t->handles = 1;
    g->ntunnels++;
    if (uv_accept(l, (uv_stream_t *)&t->in)) {
        t->closing = true;
        uv_close((uv_handle_t *)&t->in, on_tunnel_closed);
        return;
    }
    t->next = g->tunnels;
    if (g->tunnels) g->tunnels->prev = t;
    g->tunnels = t;
    uv_timer_init(g->loop, &t->timer);
    t->timer.data = t;
    t->handles++;
    if (g->ntunnels > MAX_TUNNELS) {
        tunnel_refuse(t, 503, "too many tunnels");
        return;
    }
    uv_timer_start(&t->timer, on_timer_close, HEAD_TIMEOUT, 0);
    uv_read_start((uv_stream_t *)&t->in, on_alloc, on_in_read);
}

/* ---- the child and the end ---- */

static void gate_stop(gate *g)
{
    if (g->done) return;
    g->done = true;
    kr_http_drain(&g->http);
    kr_http_close_all(&g->http);
    for (int i = 0; i < g->ngate; i++) uv_close((uv_handle_t *)&g->gate_l[i], NULL);
    while (g->tunnels) tunnel_close(g->tunnels);
    uv_close((uv_handle_t *)&g->sigchld, NULL);
    uv_close((uv_handle_t *)&g->sigterm, NULL);
    uv_close((uv_handle_t *)&g->sighup, NULL);
    kr_upstream_free(&g->up);
    uv_stop(g->loop);
}

static void on_sigchld(uv_signal_t *s, int sig)
{
    (void)sig;
    gate *g = s->data;
    int st;
    pid_t p;
    while ((p = waitpid(g->child, &st, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (p != g->child) return;
    g->status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
    gate_stop(g);
}

static void on_pass_signal(uv_signal_t *s, int sig)
{
    gate *g = s->data;
    kill(g->child, sig);
}

int kr_confine_serve(const kr_confine_opts *o, pid_t child, int sock, const int *fds, int nfds)
{
    gate *g = kr_xcalloc(1, sizeof *g);
    g->o = o;
    g->child = child;
    g->status = 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    g->loop = &loop;
    kr_diag d = {{0}};
    kr_config_load(&g->cfg, NULL, &d);
    /* the relay is keyrail run's, on the user's terminal: no line per request */
    if (kr_log_level < KR_LOG_WARN) kr_log_level = KR_LOG_WARN;
    if (o->ca_file && o->ca_file[0]) kr_strlcpy(g->cfg.upstream_ca_file, o->ca_file, sizeof g->cfg.upstream_ca_file);
    kr_strlcpy(g->server, o->server, sizeof g->server);
    size_t sl = strlen(g->server);
    while (sl && g->server[sl - 1] == '/') g->server[--sl] = 0;
    int rc = -1;
    kr_http_server_init(&g->http, &loop, &g->cfg);
    g->mounts[0] = (kr_http_mount){"", false, relay_start, g};
    if (kr_upstream_init(&g->up, &loop, &g->cfg, flush_nothing, g)) {
        fprintf(stderr, "keyrail run: confinement: the relay's client could not start\n");
        goto out;
    }
    for (int i = 0; i < nfds; i++) {
        if (i / 2 == 0) {
            if (kr_http_listen_fd(&g->http, fds[i], g->mounts, 1, &d)) {
                fprintf(stderr, "keyrail run: confinement: %s\n", d.msg);
                goto out;
            }
        } else {
            uv_tcp_t *l = &g->gate_l[g->ngate++];
            uv_tcp_init(&loop, l);
            l->data = g;
            if (uv_tcp_open(l, fds[i]) || uv_listen((uv_stream_t *)l, 128, on_gate_conn)) {
                fprintf(stderr, "keyrail run: confinement: cannot serve the egress gate\n");
                goto out;
            }
        }
    }
    uv_signal_init(&loop, &g->sigchld);
    uv_signal_init(&loop, &g->sigterm);
    uv_signal_init(&loop, &g->sighup);
    g->sigchld.data = g->sigterm.data = g->sighup.data = g;
    uv_signal_start(&g->sigchld, on_sigchld, SIGCHLD);
    uv_signal_start(&g->sigterm, on_pass_signal, SIGTERM);
    uv_signal_start(&g->sighup, on_pass_signal, SIGHUP);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* serving: the sandbox may go on */
    if (write(sock, "g", 1) != 1) goto out;
    close(sock);
    sock = -1;
    on_sigchld(&g->sigchld, SIGCHLD); /* it may be gone already */
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = 0;
out:
    if (sock >= 0) close(sock); /* the child reads EOF: no agent */
    if (rc) {
        kill(child, SIGKILL);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
        if (!g->done) gate_stop(g);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    int status = rc ? 1 : g->status;
    free(g);
    return status;
}
