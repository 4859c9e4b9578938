/*
 * upclient.c -- keyrail's own HTTP/1.1 upstream client (see upclient.h).
 *
 * One connection carries one request at a time. Its life:
 *
 *   new ── resolve ── connect ── [TLS handshake] ── active ⇄ idle (pool) ── closed
 *
 * A connection is owned by exactly one of: its transfer (c->q.x, the
 * transfer's x->uc points back), its origin's idle list, or nobody (closing).
 * Reading stays on for the connection's whole life except while the client
 * side is backed up (paused), so an idle connection the vendor closes is
 * noticed at once and no epoll_ctl is spent per request.
 *
 * Re-entrancy: the callbacks into the caller can end the request on the spot
 * (the client went away: kr_upc_cancel closes the connection; or the
 * response completed and the next pipelined request already took this
 * connection from the pool). Every loop that calls out compares the
 * connection's generation (bumped whenever it changes hands) and stops.
 * Memory of a closed connection lives until its handles' close callbacks.
 *
 * Reads land in one buffer shared by all connections (the loop handles one
 * read at a time); only bytes held back by a pause are copied.
 */
#include "http/upclient.h"
#include "core/log.h"
#include "http/http1_resp.h"
#include "http/upstream.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define RBUF_SIZE     (64 * 1024)
#define MAX_ORIGINS   64
#define HOLD_CAP      (4u << 20)
#define PEEK_AFTER_MS 1000 /* idle longer than this: check the vendor did not close it */
#define SWEEP_MS      1000
#define HEAD_CAP      (1u << 20)
#define PIECE         ((size_t)1 << 30) /* largest single write of a body */

static const kr_resp_limits resp_limits = {
    .max_head = 65535, .max_headers = 100, .max_trailer = 8192, .max_interim = 8};

enum { C_RESOLVE, C_CONNECT, C_HANDSHAKE, C_ACTIVE, C_IDLE };

typedef struct origin origin;
typedef struct kr_upc_conn conn;

struct origin {
    bool tls, ip;
    char host[256];
    uint16_t port;
    char hosthdr[300]; /* Host header value */
    conn *idle;        /* most recently used first */
    unsigned nidle;
};

/* What a request needs from its connection; moves whole on a retry. */
typedef struct upreq {
    kr_upx *x;
    kr_buf head; /* the request head, built once */
    const char *body;
    size_t body_len;
    bool retry_safe, retried;
} upreq;

struct kr_upc_conn {
    uv_tcp_t *tcp; /* separately allocated: a failed connect swaps it for the next address */
    uv_timer_t timer; /* connect + handshake deadline */
    kr_upc *u;
    origin *o;
    conn *all_prev, *all_next;   /* every connection of the client */
    conn *idle_prev, *idle_next; /* the origin's idle list */
    int refs; /* open handles + a pending resolve; freed at 0 */
    int state;
    unsigned gen; /* bumped whenever the connection changes hands */
    bool closing, in_idle;
    bool reused;    /* the current request is not the connection's first */
    bool sent_all;  /* the whole request reached the kernel */
    bool writing;   /* a write of the request is pending (its buffers are the request's) */
    bool reusable;  /* nothing unexpected happened: may go back to the pool */
    bool paused;
    bool reading;
    bool resolving;
    SSL *ssl;
    BIO *rbio, *wbio;
    kr_resp_parser rp;
    upreq q;
    kr_buf hold;      /* bytes held back by a pause: the refused body bytes first */
    size_t hold_body; /* how many of them the parser already gave as body */
    uv_write_t wreq;
    uint64_t idle_since; /* uv_now, ms */
    uint64_t expires;    /* uv_now deadline from the vendor's Keep-Alive hint; 0 none */
    struct addrinfo *ai, *ai_next;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    CURLcode deferred_rc;
    bool deferred_lost;
};

struct kr_upc {
    kr_upstream *up;
    SSL_CTX *ctx;
    origin origins[MAX_ORIGINS];
    int norigins;
    conn *all;
    uv_timer_t sweep;
    uint64_t idle_ms;
    unsigned pool_size;
    char rbuf[RBUF_SIZE];
    char pbuf[RBUF_SIZE]; /* TLS plaintext */
};

typedef struct {
    uv_write_t req;
    conn *c;
    bool request;
    size_t len;
    char data[];
} twrite;

static void conn_close(conn *c);
static void conn_connect(conn *c);
static void send_request(conn *c);
static void process(conn *c, const char *d, size_t n);
static void tls_pump(conn *c);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void lost(conn *c, CURLcode rc);

/* ---- URLs ---- */

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

int kr_upc_parse_url(const char *url, kr_upc_url *out)
{
    memset(out, 0, sizeof *out);
    const char *p;
    if (!strncasecmp(url, "https://", 8)) {
        out->tls = true;
        out->port = 443;
        p = url + 8;
    } else if (!strncasecmp(url, "http://", 7)) {
        out->port = 80;
        p = url + 7;
    } else {
        return KR_EINVAL;
    }
    const char *end = p + strcspn(p, "/?#");
    if (*end == '?' || *end == '#') return KR_EINVAL;
    if (memchr(p, '@', (size_t)(end - p))) return KR_EINVAL; /* no user info */
    const char *hs, *he, *q;
    if (*p == '[') {
        hs = p + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) return KR_EINVAL;
        for (const char *x = hs; x < he; x++)
            if (!(host_char(*x) || *x == ':') || *x == '_') return KR_EINVAL;
        q = he + 1;
        out->ip = true;
    } else {
        hs = p;
        he = memchr(hs, ':', (size_t)(end - hs));
        if (!he) he = end;
        for (const char *x = hs; x < he; x++)
            if (!host_char(*x)) return KR_EINVAL;
        q = he;
    }
    if (he == hs || kr_memlcpy(out->host, sizeof out->host, hs, (size_t)(he - hs)))
        return KR_EINVAL;
    if (q < end) {
        if (*q != ':' || q + 1 == end || end - q > 6) return KR_EINVAL;
        uint64_t port;
        if (kr_parse_u64(q + 1, (size_t)(end - q - 1), &port) || port == 0 || port > 65535)
            return KR_EINVAL;
        out->port = (uint16_t)port;
    }
    unsigned char tmp[16];
    if (out->ip) {
        if (uv_inet_pton(AF_INET6, out->host, tmp)) return KR_EINVAL;
    } else {
        out->ip = uv_inet_pton(AF_INET, out->host, tmp) == 0;
    }
    out->path = *end ? end : "/";
    out->path_len = *end ? strlen(end) : 1;
    for (size_t i = 0; i < out->path_len; i++) {
        unsigned char ch = (unsigned char)out->path[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#') return KR_EINVAL;
    }
    return 0;
}

static origin *find_origin(kr_upc *u, const kr_upc_url *url)
{
    for (int i = 0; i < u->norigins; i++) {
        origin *o = &u->origins[i];
        if (o->tls == url->tls && o->port == url->port && !strcasecmp(o->host, url->host)) return o;
    }
    if (u->norigins == MAX_ORIGINS) return NULL;
    origin *o = &u->origins[u->norigins++];
    memset(o, 0, sizeof *o);
    o->tls = url->tls;
    o->ip = url->ip;
    o->port = url->port;
    kr_strlcpy(o->host, url->host, sizeof o->host);
    bool v6 = strchr(o->host, ':') != NULL;
    bool dflt = o->port == (o->tls ? 443 : 80);
    if (dflt)
        snprintf(o->hosthdr, sizeof o->hosthdr, v6 ? "[%s]" : "%s", o->host);
    else
        snprintf(o->hosthdr, sizeof o->hosthdr, v6 ? "[%s]:%u" : "%s:%u", o->host,
                 (unsigned)o->port);
    return o;
}

/* ---- errors ---- */

static void set_err(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(conn *c, const char *fmt, ...)
{
    kr_upx *x = c->q.x;
    if (!x) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, sizeof x->err, fmt, ap);
    va_end(ap);
}

/* ---- the end of a transfer ---- */

/* The request head holds the vendor key's line: gone with the transfer. */
static void wipe_head(conn *c)
{
    if (c->q.head.data) sodium_memzero(c->q.head.data, c->q.head.len);
    kr_buf_reset(&c->q.head);
}

static void idle_unlink(conn *c)
{
    if (!c->in_idle) return;
    origin *o = c->o;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        o->idle = c->idle_next;
    if (c->idle_next) c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->in_idle = false;
    o->nidle--;
}

static void reading(conn *c, bool on)
{
    if (c->closing || !c->tcp || on == c->reading) return;
    c->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)c->tcp);
}

/* No unexpected TLS record waits after the response (a peek, nothing taken). */
static bool tls_quiet(conn *c)
{
    char x[1];
    ERR_clear_error();
    int n = SSL_peek(c->ssl, x, 1);
    if (n > 0) return false;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ;
}

static void pool_put(conn *c)
{
    origin *o = c->o;
    kr_upc *u = c->u;
    if (o->nidle >= u->pool_size || u->up->stopped) {
        conn_close(c);
        return;
    }
    kr_resp_parser_reset(&c->rp);
    kr_buf_reset(&c->hold);
    c->hold_body = 0;
    c->state = C_IDLE;
    c->idle_since = uv_now(u->up->loop);
    c->idle_next = o->idle;
    c->idle_prev = NULL;
    if (o->idle) o->idle->idle_prev = c;
    o->idle = c;
    c->in_idle = true;
    o->nidle++;
    reading(c, true);
}

/* Ends the transfer: the connection goes back to the pool (or is closed),
 * then the caller hears of it. The transfer is the caller's no more. */
static void complete(conn *c, CURLcode rc)
{
    kr_upx *x = c->q.x;
    kr_upc *u = c->u;
    KR_ASSERT(x && x->uc == c);
    wipe_head(c);
    c->q.x = NULL;
    c->gen++;
    x->uc = NULL;
    x->active = false;
    if (rc != CURLE_OK && kr_upstream_is_tls_error(rc))
        KR_WARN("upstream TLS failure (%s, request %s): %s", x->who ? x->who : "?",
                x->id ? x->id : "?", x->err);
    bool keep = rc == CURLE_OK && c->reusable && !c->writing && !c->paused &&
                c->rp.keep_alive && c->state == C_ACTIVE && (!c->ssl || tls_quiet(c));
    if (keep) {
        c->expires = 0;
        if (c->rp.ka_timeout_s >= 0) {
            /* the vendor says how long it keeps the connection: leave a second early */
            uint64_t t = (uint64_t)c->rp.ka_timeout_s * 1000;
            c->expires = uv_now(u->up->loop) + (t > 1000 ? t - 1000 : 0);
        }
        pool_put(c);
    } else {
        conn_close(c);
    }
    u->up->flush(u->up->flush_ctx);
    x->done(x, rc);
}

static void fail(conn *c, CURLcode rc)
{
    c->reusable = false;
    complete(c, rc);
}

/* A failure found while kr_upc_start runs is reported from the loop, never
 * synchronously (routes.c marks the transfer active after the start). */
static void on_deferred(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->closing || !c->q.x) return;
    if (c->deferred_lost)
        lost(c, c->deferred_rc);
    else
        fail(c, c->deferred_rc);
}

static void defer(conn *c, CURLcode rc, bool is_lost)
{
    c->deferred_rc = rc;
    c->deferred_lost = is_lost;
    uv_timer_start(&c->timer, on_deferred, 0, 0);
}

static void fail_soon(conn *c, CURLcode rc)
{
    defer(c, rc, false);
}

/* The connection died before any byte of the response: maybe once more on a
 * fresh connection (the retry rule in upclient.h), else the error. */
static void lost(conn *c, CURLcode rc)
{
    upreq *q = &c->q;
    if (c->reused && !q->retried && !c->rp.any && (!c->sent_all || q->retry_safe)) {
        kr_upc *u = c->u;
        conn *n = kr_xcalloc(1, sizeof *n);
        n->u = u;
        n->o = c->o;
        n->q = *q;
        n->q.retried = true;
        n->q.x->uc = n;
        n->gen = 1;
        kr_buf_init(&q->head, HEAD_CAP); /* the old connection keeps an empty one */
        q->x = NULL;
        c->gen++;
        conn_close(c);
        KR_INFO("request %s: a reused upstream connection was lost before the vendor answered "
                "(%s); sent again on a fresh connection",
                n->q.x->id ? n->q.x->id : "?", n->q.retry_safe ? "the route is safe to repeat" : "the request had not been sent whole");
        conn_connect(n);
        return;
    }
    fail(c, rc);
}

/* ---- connections ---- */

static void conn_unref(conn *c)
{
    if (--c->refs > 0) return;
    if (c->ssl) SSL_free(c->ssl); /* frees the BIOs */
    if (c->ai) uv_freeaddrinfo(c->ai);
    kr_resp_parser_free(&c->rp);
    kr_buf_free(&c->q.head);
    kr_buf_free(&c->hold);
    free(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn *c = h->data;
    free(h);
    conn_unref(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(conn *c)
{
    if (c->closing) return;
    c->closing = true;
    idle_unlink(c);
    kr_upc *u = c->u;
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        u->all = c->all_next;
    if (c->all_next) c->all_next->all_prev = c->all_prev;
    c->all_prev = c->all_next = NULL;
    if (c->ssl && c->state >= C_ACTIVE && c->tcp) {
        /* a close_notify, best effort: the connection carries nothing any more */
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        char out[256];
        int n = BIO_read(c->wbio, out, sizeof out);
        if (n > 0) {
            uv_buf_t b = uv_buf_init(out, (unsigned)n);
            uv_try_write((uv_stream_t *)c->tcp, &b, 1);
        }
        ERR_clear_error();
    }
    if (c->resolving) uv_cancel((uv_req_t *)&c->gai);
    if (c->tcp) uv_close((uv_handle_t *)c->tcp, on_tcp_closed);
    c->tcp = NULL;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_connect_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->closing || !c->q.x || c->state >= C_ACTIVE) return;
    kr_upc *u = c->u;
    if (c->state == C_HANDSHAKE)
        set_err(c, "SSL connection timeout after %lld milliseconds",
                (long long)u->up->cfg->upstream_connect_timeout_ms);
    else
        set_err(c, "Connection timed out after %lld milliseconds",
                (long long)u->up->cfg->upstream_connect_timeout_ms);
    fail(c, CURLE_OPERATION_TIMEDOUT);
}

static conn *conn_new(kr_upc *u, origin *o)
{
    conn *c = kr_xcalloc(1, sizeof *c);
    c->u = u;
    c->o = o;
    c->gen = 1;
    kr_buf_init(&c->q.head, HEAD_CAP);
    return c;
}

/* ---- TLS ---- */

static void on_twrite(uv_write_t *w, int status)
{
    twrite *tw = (twrite *)w;
    conn *c = tw->c;
    bool request = tw->request;
    free(tw);
    if (request) c->writing = false;
    if (c->closing) return;
    if (status < 0) {
        c->reusable = false;
        if (request && c->q.x && !c->rp.any) {
            set_err(c, "Send failure: %s", uv_strerror(status));
            lost(c, CURLE_SEND_ERROR);
        }
        return;
    }
    if (request) c->sent_all = true;
}

/* Writes what TLS produced (a handshake flight, the request, an alert).
 * Returns false when the connection failed (the caller reports it). */
static bool tls_flush(conn *c, bool request)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    if (!n) {
        if (request) c->sent_all = true;
        return true;
    }
    twrite *tw = kr_xmalloc(sizeof *tw + n);
    int got = BIO_read(c->wbio, tw->data, (int)n);
    if (got <= 0) {
        free(tw);
        return false;
    }
    uv_buf_t b = uv_buf_init(tw->data, (unsigned)got);
    int w = uv_try_write((uv_stream_t *)c->tcp, &b, 1);
    if (w == got) {
        free(tw);
        if (request) c->sent_all = true;
        return true;
    }
    if (w < 0 && w != UV_EAGAIN) {
        free(tw);
        set_err(c, "Send failure: %s", uv_strerror(w));
        return false;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    tw->c = c;
    tw->request = request;
    tw->len = (size_t)got - done;
    b = uv_buf_init(tw->data + done, (unsigned)tw->len);
    if (uv_write(&tw->req, (uv_stream_t *)c->tcp, &b, 1, on_twrite)) {
        free(tw);
        set_err(c, "Send failure");
        return false;
    }
    if (request) c->writing = true;
    return true;
}

static void describe_tls_failure(conn *c, CURLcode *rc)
{
    long vr = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        *rc = CURLE_PEER_FAILED_VERIFICATION;
        if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
            set_err(c, "SSL: no alternative certificate subject name matches target host name '%s'",
                    c->o->host);
        else
            set_err(c, "SSL certificate problem: %s", X509_verify_cert_error_string(vr));
    } else {
        *rc = CURLE_SSL_CONNECT_ERROR;
        char why[200];
        if (e)
            ERR_error_string_n(e, why, sizeof why);
        else
            kr_strlcpy(why, "the connection closed during the handshake", sizeof why);
        set_err(c, "OpenSSL: %s (connecting to %s port %u)", why, c->o->host, (unsigned)c->o->port);
    }
    ERR_clear_error();
}

static void handshake(conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        if (!tls_flush(c, false)) {
            fail(c, CURLE_SEND_ERROR);
            return;
        }
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        X509 *peer = SSL_get0_peer_certificate(c->ssl);
        if (!peer || SSL_get_verify_result(c->ssl) != X509_V_OK) {
            set_err(c, "SSL: the vendor's certificate was not verified");
            fail(c, CURLE_PEER_FAILED_VERIFICATION);
            return;
        }
        if (alen && !(alen == 8 && !memcmp(alpn, "http/1.1", 8))) {
            set_err(c, "OpenSSL: the vendor chose the protocol '%.*s' (ALPN); keyrail asked for "
                       "http/1.1 only",
                    (int)(alen < 32 ? alen : 32), (const char *)alpn);
            fail(c, CURLE_SSL_CONNECT_ERROR);
            return;
        }
        uv_timer_stop(&c->timer);
        c->state = C_ACTIVE;
        send_request(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        if (!tls_flush(c, false)) fail(c, CURLE_SSL_CONNECT_ERROR);
        return;
    }
    CURLcode code;
    describe_tls_failure(c, &code);
    /* the alert, so the vendor sees why (best effort) */
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n) {
        char out[512];
        int got = BIO_read(c->wbio, out, (int)(n < sizeof out ? n : sizeof out));
        if (got > 0) {
            uv_buf_t b = uv_buf_init(out, (unsigned)got);
            uv_try_write((uv_stream_t *)c->tcp, &b, 1);
        }
    }
    fail(c, code);
}

static int tls_start(conn *c)
{
    kr_upc *u = c->u;
    c->ssl = SSL_new(u->ctx);
    if (!c->ssl) return -1;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        return -1;
    }
    BIO_set_mem_eof_return(c->rbio, -1); /* an empty read buffer means "more later" */
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (c->o->ip) {
        /* an IP literal: matched against the certificate's IP addresses; no SNI (RFC 6066) */
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->o->host) != 1) return -1;
    } else {
        if (SSL_set_tlsext_host_name(c->ssl, c->o->host) != 1) return -1;
        if (SSL_set1_host(c->ssl, c->o->host) != 1) return -1;
    }
    c->state = C_HANDSHAKE;
    handshake(c);
    return 0;
}

/* ---- connecting ---- */

static void try_connect(conn *c);

static void on_connect(uv_connect_t *cr, int status)
{
    conn *c = cr->data;
    if (c->closing) return;
    if (status < 0) {
        if (c->ai_next) {
            /* the next address, on a new socket */
            uv_close((uv_handle_t *)c->tcp, on_tcp_closed); /* drops its reference */
            c->tcp = NULL;
            try_connect(c);
            return;
        }
        set_err(c, "Failed to connect to %s port %u: %s", c->o->host, (unsigned)c->o->port,
                uv_strerror(status));
        fail(c, CURLE_COULDNT_CONNECT);
        return;
    }
    uv_tcp_nodelay(c->tcp, 1);
    reading(c, true);
    if (c->o->tls) {
        if (tls_start(c)) {
            set_err(c, "OpenSSL: the TLS session could not be set up");
            fail(c, CURLE_SSL_CONNECT_ERROR);
        }
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = C_ACTIVE;
    send_request(c);
}

static void try_connect(conn *c)
{
    kr_upc *u = c->u;
    struct addrinfo *a = c->ai_next;
    c->ai_next = a->ai_next;
    c->tcp = kr_xcalloc(1, sizeof *c->tcp);
    uv_tcp_init(u->up->loop, c->tcp);
    c->tcp->data = c;
    c->refs++;
    c->reading = false;
    c->state = C_CONNECT;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, c->tcp, a->ai_addr, on_connect);
    if (rc) {
        set_err(c, "Failed to connect to %s port %u: %s", c->o->host, (unsigned)c->o->port,
                uv_strerror(rc));
        fail_soon(c, CURLE_COULDNT_CONNECT);
    }
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    conn *c = g->data;
    c->resolving = false;
    if (c->closing) {
        if (res) uv_freeaddrinfo(res);
        conn_unref(c);
        return;
    }
    c->refs--; /* the resolve's reference; the handles hold the rest */
    if (status < 0 || !res) {
        if (res) uv_freeaddrinfo(res);
        set_err(c, "Could not resolve host: %s", c->o->host);
        fail(c, CURLE_COULDNT_RESOLVE_HOST);
        return;
    }
    c->ai = c->ai_next = res;
    try_connect(c);
}

/* A fresh connection for c->q.x: resolve (unless an IP literal), connect,
 * handshake, then send; all of it within the connect timeout. */
static void conn_connect(conn *c)
{
    kr_upc *u = c->u;
    kr_resp_parser_init(&c->rp, &resp_limits);
    kr_buf_init(&c->hold, HOLD_CAP);
    c->reusable = true;
    c->all_next = u->all;
    if (u->all) u->all->all_prev = c;
    u->all = c;
    uv_timer_init(u->up->loop, &c->timer);
    c->timer.data = c;
    c->refs = 1; /* the timer */
    uv_timer_start(&c->timer, on_connect_timeout, (uint64_t)u->up->cfg->upstream_connect_timeout_ms, 0);
    if (c->o->ip) {
        /* no resolver round trip for an IP literal */
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        hints.ai_socktype = SOCK_STREAM;
        char port[8];
        snprintf(port, sizeof port, "%u", (unsigned)c->o->port);
        if (getaddrinfo(c->o->host, port, &hints, &res) || !res) {
            set_err(c, "Could not resolve host: %s", c->o->host);
            fail_soon(c, CURLE_COULDNT_RESOLVE_HOST);
            return;
        }
        c->ai = c->ai_next = res;
        try_connect(c);
        return;
    }
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)c->o->port);
    c->state = C_RESOLVE;
    c->gai.data = c;
    c->refs++; /* the pending resolve */
    c->resolving = true;
    int rc = uv_getaddrinfo(u->up->loop, &c->gai, on_resolved, c->o->host, port, &hints);
    if (rc) {
        c->resolving = false;
        c->refs--;
        set_err(c, "Could not resolve host: %s (%s)", c->o->host, uv_strerror(rc));
        fail_soon(c, CURLE_COULDNT_RESOLVE_HOST);
    }
}

/* ---- the request ---- */

static void on_pwrite(uv_write_t *w, int status)
{
    conn *c = w->data;
    c->writing = false;
    if (c->closing) return;
    if (status < 0) {
        c->reusable = false;
        if (c->q.x && !c->rp.any) {
            set_err(c, "Send failure: %s", uv_strerror(status));
            lost(c, CURLE_SEND_ERROR);
        }
        return;
    }
    c->sent_all = true;
}

/* Queues the rest of the request (b[0..nb)) behind a uv_write; on_pwrite
 * goes on when the kernel has taken it. */
static void write_queued(conn *c, uv_buf_t *b, unsigned nb)
{
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)c->tcp, b, nb, on_pwrite);
    if (rc) {
        set_err(c, "Send failure: %s", uv_strerror(rc));
        defer(c, CURLE_SEND_ERROR, true);
        return;
    }
    c->writing = true;
}

/* A body over PIECE bytes (at most server.max_body_bytes, 4 GiB): queued in
 * pieces a uv_buf_t can describe. */
static void send_big(conn *c)
{
    upreq *q = &c->q;
    uv_buf_t b[8];
    unsigned nb = 0;
    b[nb++] = uv_buf_init(q->head.data, (unsigned)q->head.len);
    for (size_t off = 0; off < q->body_len && nb < 8; off += PIECE) {
        size_t k = q->body_len - off < PIECE ? q->body_len - off : PIECE;
        b[nb++] = uv_buf_init((char *)q->body + off, (unsigned)k);
    }
    write_queued(c, b, nb);
}

/* Builds the head (once per request) and writes head and body: one writev
 * in the common case, the rest queued. */
static void send_request(conn *c)
{
    upreq *q = &c->q;
    c->sent_all = false;
    if (c->ssl) {
        ERR_clear_error();
        bool ok = SSL_write(c->ssl, q->head.data, (int)q->head.len) > 0;
        for (size_t off = 0; ok && off < q->body_len; off += PIECE) {
            size_t k = q->body_len - off < PIECE ? q->body_len - off : PIECE;
            ok = SSL_write(c->ssl, q->body + off, (int)k) > 0;
        }
        if (!ok) {
            ERR_clear_error();
            set_err(c, "OpenSSL: the request could not be encrypted");
            defer(c, CURLE_SEND_ERROR, false);
            return;
        }
        if (!tls_flush(c, true)) defer(c, CURLE_SEND_ERROR, true);
        return;
    }
    if (q->body_len > PIECE) {
        send_big(c);
        return;
    }
    uv_buf_t b[2] = {uv_buf_init(q->head.data, (unsigned)q->head.len),
                     uv_buf_init((char *)q->body, (unsigned)q->body_len)};
    unsigned nb = q->body_len ? 2 : 1;
    size_t total = q->head.len + q->body_len;
    int w = uv_try_write((uv_stream_t *)c->tcp, b, nb);
    if (w >= 0 && (size_t)w == total) {
        c->sent_all = true; /* handed to the kernel whole: never sent again */
        return;
    }
    if (w < 0 && w != UV_EAGAIN) {
        set_err(c, "Send failure: %s", uv_strerror(w));
        defer(c, CURLE_SEND_ERROR, true);
        return;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    if (done >= q->head.len) {
        b[0] = uv_buf_init((char *)q->body + (done - q->head.len),
                           (unsigned)(q->body_len - (done - q->head.len)));
        nb = 1;
    } else {
        b[0] = uv_buf_init(q->head.data + done, (unsigned)(q->head.len - done));
    }
    write_queued(c, b, nb);
}

/* ---- the response ---- */

static char crlf[] = "\r\n";

/* Hands the final head to the caller as libcurl does: the status line, each
 * field line, the empty line. False when the transfer ended meanwhile. */
static bool deliver_head(conn *c)
{
    kr_upx *x = c->q.x;
    void *r = x->ud;
    unsigned gen = c->gen;
    kr_upx_data_fn cb = x->on_header;
    kr_slice sl = kr_resp_status_line(&c->rp);
    bool ok = cb((char *)sl.p, 1, sl.n, r) == sl.n;
    for (unsigned i = 0; ok && c->gen == gen && i < c->rp.nheaders; i++) {
        kr_resp_field f;
        kr_resp_field_at(&c->rp, i, &f);
        ok = cb((char *)f.line.p, 1, f.line.n, r) == f.line.n;
    }
    if (c->gen != gen) return false;
    if (ok) ok = cb(crlf, 1, 2, r) == 2;
    if (c->gen != gen) return false;
    if (!ok) {
        set_err(c, "the upstream's response head was refused");
        fail(c, CURLE_WRITE_ERROR);
        return false;
    }
    return true;
}

/* Keeps the bytes a pause refused: body bytes the parser already gave
 * (handed again first on resume), then the unparsed rest. */
static void hold(conn *c, const char *body, size_t bn, const char *rest, size_t rn)
{
    if (kr_buf_append(&c->hold, body, bn) || kr_buf_append(&c->hold, rest, rn)) {
        set_err(c, "the upstream's response could not be held");
        fail(c, CURLE_OUT_OF_MEMORY);
        return;
    }
    c->hold_body += bn;
    c->paused = true;
    reading(c, false);
}

/* Plaintext response bytes. Every outcome is handled here (pause, end,
 * failure); the caller only checks the generation afterwards. */
static void process(conn *c, const char *d, size_t n)
{
    kr_upx *x = c->q.x;
    unsigned gen = c->gen;
    size_t off = 0;
    for (;;) {
        size_t used;
        kr_slice body = {NULL, 0};
        int rc = kr_resp_feed(&c->rp, d + off, n - off, &used, &body);
        off += used;
        switch (rc) {
        case KR_RESP_AGAIN:
            return;
        case KR_RESP_HEAD:
            if (!deliver_head(c)) return;
            continue;
        case KR_RESP_BODY: {
            size_t w = x->on_body((char *)body.p, 1, body.n, x->ud);
            if (c->gen != gen) return; /* the request ended inside the callback */
            if (w == CURL_WRITEFUNC_PAUSE) {
                hold(c, body.p, body.n, d + off, n - off);
                return;
            }
            if (w != body.n) {
                set_err(c, "the client side refused the response body");
                fail(c, CURLE_WRITE_ERROR);
                return;
            }
            continue;
        }
        case KR_RESP_DONE:
            if (off < n) c->reusable = false; /* bytes after the response: never reused */
            complete(c, CURLE_OK);
            return;
        default:
            set_err(c, "the upstream's response is malformed: %s", c->rp.error);
            fail(c, CURLE_WEIRD_SERVER_REPLY);
            return;
        }
    }
}

/* The connection ended (clean: 0, or a libuv error) while c->q.x waits. */
static void ended(conn *c, int err, bool tls_clean)
{
    if (!c->q.x) {
        conn_close(c);
        return;
    }
    c->reusable = false;
    if (c->state == C_HANDSHAKE) {
        ERR_clear_error();
        set_err(c, "OpenSSL SSL_connect: %s in connection to %s:%u",
                err ? uv_strerror(err) : "the connection was closed", c->o->host,
                (unsigned)c->o->port);
        fail(c, CURLE_SSL_CONNECT_ERROR);
        return;
    }
    if (!c->rp.any) {
        if (err)
            set_err(c, "Recv failure: %s", uv_strerror(err));
        else
            set_err(c, "Empty reply from server");
        lost(c, err ? CURLE_RECV_ERROR : CURLE_GOT_NOTHING);
        return;
    }
    /* a body that runs to the end of the connection must end cleanly: over
     * TLS with a close_notify (else the end may be an attacker's cut) */
    if (!err && (!c->ssl || tls_clean) && kr_resp_eof(&c->rp) == KR_RESP_DONE) {
        complete(c, CURLE_OK);
        return;
    }
    if (err)
        set_err(c, "Recv failure: %s", uv_strerror(err));
    else
        set_err(c, "transfer closed with outstanding read data remaining");
    fail(c, err ? CURLE_RECV_ERROR : CURLE_PARTIAL_FILE);
}

static void tls_pump(conn *c)
{
    kr_upc *u = c->u;
    unsigned gen = c->gen;
    for (;;) {
        if (c->closing || c->gen != gen || c->paused) return;
        ERR_clear_error();
        int n = SSL_read(c->ssl, u->pbuf, sizeof u->pbuf);
        if (n > 0) {
            if (!c->q.x) { /* application data on an idle connection */
                conn_close(c);
                return;
            }
            process(c, u->pbuf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ) {
            /* post-handshake messages may want an answer (key update) */
            if (BIO_ctrl_pending(c->wbio) && !tls_flush(c, false)) ended(c, UV_EPIPE, false);
            return;
        }
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify */
            ended(c, 0, true);
            return;
        }
        ended(c, UV_EPROTO, false);
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    conn *c = h->data;
    b->base = c->u->rbuf;
    b->len = RBUF_SIZE;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    conn *c = st->data;
    if (n == 0 || c->closing) return;
    kr_upc *u = c->u;
    if (n < 0) {
        if (c->ssl && c->state >= C_ACTIVE) {
            /* plaintext still inside TLS first, then the end */
            tls_pump(c);
            if (c->closing || c->paused || !c->q.x) {
                if (!c->closing && !c->q.x) conn_close(c);
                return;
            }
        }
        ended(c, n == UV_EOF ? 0 : (int)n, false);
        return;
    }
    if (c->ssl) {
        if (BIO_write(c->rbio, b->base, (int)n) != (int)n) {
            ended(c, UV_ENOMEM, false);
            return;
        }
        if (c->state == C_HANDSHAKE) {
            handshake(c);
            if (c->closing || c->state != C_ACTIVE) return;
        }
        tls_pump(c);
    } else if (!c->q.x) {
        conn_close(c); /* bytes nobody asked for, on an idle connection */
        return;
    } else {
        process(c, b->base, (size_t)n);
    }
    u->up->flush(u->up->flush_ctx);
}

/* ---- the pool ---- */

/* Closes idle connections past their age (upstream.idle_timeout_ms, or the
 * vendor's Keep-Alive hint). */
static void on_sweep(uv_timer_t *t)
{
    kr_upc *u = t->data;
    uint64_t now = uv_now(u->up->loop);
    for (int i = 0; i < u->norigins; i++) {
        origin *o = &u->origins[i];
        for (conn *c = o->idle, *next; c; c = next) {
            next = c->idle_next;
            if (now - c->idle_since >= u->idle_ms || (c->expires && now >= c->expires))
                conn_close(c);
        }
    }
}

/* An idle connection the vendor may have closed since the loop last looked:
 * one non-blocking peek (only after PEEK_AFTER_MS of idleness). */
static bool still_open(conn *c, uint64_t now)
{
    if (c->expires && now >= c->expires) return false;
    if (now - c->idle_since < PEEK_AFTER_MS) return true;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)c->tcp, &fd)) return false;
    char x;
    ssize_t n = recv(fd, &x, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0) return false;
    return c->ssl != NULL; /* TLS: a session ticket or the like; plain: unsolicited bytes */
}

static conn *pool_get(kr_upc *u, origin *o)
{
    uint64_t now = uv_now(u->up->loop);
    while (o->idle) {
        conn *c = o->idle;
        idle_unlink(c);
        if (still_open(c, now)) return c;
        conn_close(c);
    }
    return NULL;
}

/* ---- the interface ---- */

int kr_upc_start(kr_upc *u, kr_upx *x, const kr_upx_req *call)
{
    kr_upc_url url;
    if (kr_upc_parse_url(call->url, &url)) return KR_EINVAL;
    origin *o = find_origin(u, &url);
    if (!o) return KR_ETOOBIG;
    x->err[0] = 0;
    conn *c = pool_get(u, o);
    bool fresh = c == NULL;
    if (fresh) c = conn_new(u, o);
    upreq *q = &c->q;
    q->x = x;
    q->body = call->body;
    q->body_len = call->body_len;
    q->retry_safe = call->retry_safe;
    q->retried = false;
    kr_buf_reset(&q->head);
    if (kr_buf_puts(&q->head, call->method ? call->method : "POST") ||
        kr_buf_putc(&q->head, ' ') || kr_buf_append(&q->head, url.path, url.path_len) ||
        kr_buf_puts(&q->head, " HTTP/1.1\r\nHost: ") || kr_buf_puts(&q->head, o->hosthdr) ||
        kr_buf_append(&q->head, "\r\n", 2) ||
        kr_buf_append(&q->head, call->headers, call->headers_len) ||
        kr_buf_puts(&q->head, "Content-Length: ") || kr_buf_put_u64(&q->head, call->body_len) ||
        kr_buf_append(&q->head, "\r\n\r\n", 4)) {
        q->x = NULL;
        if (fresh) {
            kr_buf_free(&q->head);
            free(c);
        } else {
            conn_close(c);
        }
        return KR_ETOOBIG;
    }
    x->uc = c;
    c->gen++;
    if (fresh) {
        c->reused = false;
        conn_connect(c);
    } else {
        c->reused = true;
        c->state = C_ACTIVE;
        c->reusable = true;
        send_request(c);
    }
    return 0;
}

void kr_upc_resume(kr_upx *x)
{
    conn *c = x->uc;
    if (!c || !c->paused || c->closing) return;
    kr_upc *u = c->u;
    unsigned gen = c->gen;
    c->paused = false;
    kr_buf h = c->hold;
    size_t hb = c->hold_body;
    kr_buf_init(&c->hold, HOLD_CAP);
    c->hold_body = 0;
    size_t off = 0;
    if (hb) {
        size_t w = x->on_body(h.data, 1, hb, x->ud);
        if (c->gen != gen) {
            kr_buf_free(&h);
            return;
        }
        if (w == CURL_WRITEFUNC_PAUSE) { /* still backed up: keep it all */
            kr_buf_free(&c->hold);
            c->hold = h;
            c->hold_body = hb;
            c->paused = true;
            return;
        }
        if (w != hb) {
            kr_buf_free(&h);
            set_err(c, "the client side refused the response body");
            fail(c, CURLE_WRITE_ERROR);
            return;
        }
        off = hb;
    }
    if (off < h.len) process(c, h.data + off, h.len - off);
    kr_buf_free(&h);
    if (c->gen != gen || c->closing || c->paused) {
        u->up->flush(u->up->flush_ctx);
        return;
    }
    if (c->ssl) tls_pump(c);
    if (c->gen == gen && !c->closing && !c->paused) reading(c, true);
    u->up->flush(u->up->flush_ctx);
}

void kr_upc_cancel(kr_upx *x)
{
    conn *c = x->uc;
    if (!c) return;
    KR_ASSERT(c->q.x == x);
    wipe_head(c);
    x->uc = NULL;
    c->q.x = NULL;
    c->gen++;
    conn_close(c);
}

static int load_trust(SSL_CTX *ctx, const char *ca_file, kr_diag *d)
{
    if (ca_file && ca_file[0]) {
        /* the bundle alone: not the system store too */
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            char why[200];
            ERR_error_string_n(ERR_get_error(), why, sizeof why);
            ERR_clear_error();
            return kr_fail(d, KR_ECONFIG, "upstream.ca_file: %s cannot be used (%s)", ca_file, why);
        }
        return 0;
    }
    /* the system store: OpenSSL's built-in file and directory (SSL_CERT_FILE
     * and SSL_CERT_DIR in the environment do not move it) */
    int ok = 0;
    const char *f = X509_get_default_cert_file(), *dir = X509_get_default_cert_dir();
    if (f && SSL_CTX_load_verify_locations(ctx, f, NULL) == 1) ok++;
    ERR_clear_error();
    if (dir && SSL_CTX_load_verify_locations(ctx, NULL, dir) == 1) ok++;
    ERR_clear_error();
    if (!ok)
        return kr_fail(d, KR_ECONFIG, "the system CA store (%s, %s) cannot be read", f ? f : "-",
                       dir ? dir : "-");
    return 0;
}

int kr_upc_new(kr_upstream *s, kr_upc **out, kr_diag *d)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return kr_fail(d, KR_ECONFIG, "OpenSSL: no TLS context");
    /* verification for every connection, with no way to turn it off */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    int rc = load_trust(ctx, s->cfg->upstream_ca_file, d);
    if (rc) {
        SSL_CTX_free(ctx);
        return rc;
    }
    kr_upc *u = kr_xcalloc(1, sizeof *u);
    u->up = s;
    u->ctx = ctx;
    u->idle_ms = (uint64_t)s->cfg->upstream_idle_timeout_ms;
    u->pool_size = (unsigned)s->cfg->upstream_pool_size;
    uv_timer_init(s->loop, &u->sweep);
    u->sweep.data = u;
    uv_timer_start(&u->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&u->sweep);
    *out = u;
    return 0;
}

static void on_sweep_closed(uv_handle_t *h)
{
    free(h->data);
}

void kr_upc_free(kr_upc *u)
{
    if (!u) return;
    while (u->all) {
        conn *c = u->all;
        if (c->q.x) kr_upc_cancel(c->q.x);
        else conn_close(c); /* unlinks it */
    }
    SSL_CTX_free(u->ctx); /* each SSL holds its own reference */
    u->ctx = NULL;
    uv_timer_stop(&u->sweep);
    uv_close((uv_handle_t *)&u->sweep, on_sweep_closed);
}
