/*
 * fv_server.c -- the fake vendor's connections: the http_parser callbacks
 * (headers, credentials, x-fake overrides, the body), TLS over memory BIOs,
 * non-blocking I/O with a high-water mark, the per-connection state machine
 * (drive), timers, signals and main.  A complete request goes to
 * fv_handle_request (fv_core.c), which renders its response into c->out.
 * See fv.h.
 */

#include "fv.h"

/* ------------------------------------------------------------------------ */
/* Globals                                                                   */

uv_loop_t                  *g_loop;
static uv_tcp_t             g_server;
static uv_signal_t          g_sigterm, g_sigint;
static http_parser_settings g_settings;
static conn_t              *g_conns;
bool                        g_quiet;
static bool                 g_stopping;
uint64_t                    g_start_ms;
static char                 g_readbuf[READBUF_SIZE];
static SSL_CTX             *g_tls; /* --tls-cert: every connection is TLS */
static char                 g_tlsbuf[READBUF_SIZE]; /* decrypted input, consumed at once */

/* ------------------------------------------------------------------------ */
/* Connection machinery (forward declarations)                               */

static void drive(conn_t *c);
static void close_conn(conn_t *c, bool reset);
static void on_timer(uv_timer_t *t);
static int try_flush(conn_t *c);

/* Enough output is queued: stop parsing and rendering until it drains. */
bool fv_over_high(const conn_t *c)
{
    return c->out.len + c->tout.len + c->wb.len >= HIGH_WATER || c->npend >= MAXPEND;
}

/* Arm the connection's timer: T_DELAY, T_DRIP or T_RESET. */
void fv_start_timer(conn_t *c, int kind, int64_t ms)
{
    c->timer_kind = kind;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

/* ------------------------------------------------------------------------ */
/* http_parser callbacks                                                     */

static int cb_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    r->url_len = 0;
    r->hname_len = r->hval_len = 0;
    r->hval_over = false;
    r->hstate = 0;
    r->hkind = H_OTHER;
    r->names_len = 0;
    r->names_over = false;
    r->ver_len = r->beta_len = r->tp_len = 0;
    r->has_ver = r->has_beta = r->has_tp = false;
    r->xkey.present = r->gkey.present = r->qkey.present = r->authz.present = false;
    r->nauth = 0;
    r->hov.set = 0;
    r->expect100 = false;
    r->body_bytes = 0;
    r->body_over = false;
    c->body.len = 0;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    req_t *r = &((conn_t *)p->data)->req;
    if (r->url_len + n > URL_MAX)
        n = URL_MAX - r->url_len;
    memcpy(r->url + r->url_len, at, n);
    r->url_len += n;
    return 0;
}

static void trim(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t' || (*v)[*n - 1] == '\r' ||
                  (*v)[*n - 1] == '\n'))
        (*n)--;
}

/* Header name complete: lower-case it, classify it, add it to the name list. */
static void header_name_done(req_t *r)
{
    for (size_t i = 0; i < r->hname_len; i++) {
        char ch = r->hname[i];
        if (ch >= 'A' && ch <= 'Z')
            r->hname[i] = (char)(ch + 32);
    }
    const char *h = r->hname;
    size_t n = r->hname_len;
#define HN(lit) (n == sizeof(lit) - 1 && memcmp(h, lit, n) == 0)
    if (HN("x-api-key"))
        r->hkind = H_XAPIKEY;
    else if (HN("x-goog-api-key"))
        r->hkind = H_XGOOGKEY;
    else if (HN("authorization"))
        r->hkind = H_AUTHZ;
    else if (HN("anthropic-version"))
        r->hkind = H_VER;
    else if (HN("anthropic-beta"))
        r->hkind = H_BETA;
    else if (HN("x-fake"))
        r->hkind = H_FAKE;
    else if (n > 7 && memcmp(h, "x-fake-", 7) == 0)
        r->hkind = H_FAKE_KEY;
    else if (HN("expect"))
        r->hkind = H_EXPECT;
    else if (HN("traceparent"))
        r->hkind = H_TRACEPARENT;
    else
        r->hkind = H_OTHER;
#undef HN
    if (!r->names_over) {
        if (r->names_len + n + 3 > NAMES_MAX) {
            r->names_over = true;
        } else {
            char *d = r->names + r->names_len;
            if (r->names_len)
                *d++ = ',';
            *d++ = '"';
            for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)h[i];
                *d++ = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '_' : (char)ch;
            }
            *d++ = '"';
            r->names_len = (size_t)(d - r->names);
        }
    }
}

static void header_done(conn_t *c)
{
    req_t *r = &c->req;
    const char *v = r->hval;
    size_t n = r->hval_len;
    r->hstate = 0;
    trim(&v, &n);
    switch (r->hkind) {
    case H_XAPIKEY:
        fv_cred_set(&r->xkey, v, n);
        r->nauth++;
        break;
    case H_XGOOGKEY:
        fv_cred_set(&r->gkey, v, n);
        r->nauth++;
        break;
    case H_AUTHZ:
        if (n >= 7 && strncasecmp(v, "bearer ", 7) == 0) {
            v += 7;
            n -= 7;
            trim(&v, &n);
        }
        fv_cred_set(&r->authz, v, n);
        r->nauth++;
        break;
    case H_VER:
        r->ver_len = n < VER_MAX ? n : VER_MAX;
        memcpy(r->ver, v, r->ver_len);
        r->has_ver = true;
        break;
    case H_TRACEPARENT:
        r->tp_len = n < VER_MAX ? n : VER_MAX;
        memcpy(r->tp, v, r->tp_len);
        r->has_tp = true;
        break;
    case H_BETA:
        if (r->has_beta && r->beta_len < BETA_MAX)
            r->beta[r->beta_len++] = ',';
        if (n > BETA_MAX - r->beta_len)
            n = BETA_MAX - r->beta_len;
        memcpy(r->beta + r->beta_len, v, n);
        r->beta_len += n;
        r->has_beta = true;
        break;
    case H_FAKE:
        if (r->hval_over) /* the last token was cut: drop it (e.g. a tool= command) */
            while (n && v[n - 1] != ' ' && v[n - 1] != '\t' && v[n - 1] != ',')
                n--;
        fv_ov_parse(&r->hov, v, n);
        break;
    case H_FAKE_KEY:
        for (size_t i = 7; i < r->hname_len; i++)
            if (r->hname[i] == '-')
                r->hname[i] = '_';
        fv_ov_apply(&r->hov, r->hname + 7, r->hname_len - 7, v, n);
        break;
    case H_EXPECT:
        if (n == 12 && strncasecmp(v, "100-continue", 12) == 0)
            r->expect100 = true;
        break;
    default:
        break;
    }
}

static int cb_header_field(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 2)
        header_done(c);
    if (r->hstate != 1) {
        r->hname_len = r->hval_len = 0;
        r->hval_over = false;
    }
    if (r->hname_len + n > HNAME_MAX)
        n = HNAME_MAX - r->hname_len;
    memcpy(r->hname + r->hname_len, at, n);
    r->hname_len += n;
    r->hstate = 1;
    return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 1)
        header_name_done(r);
    r->hstate = 2;
    if (r->hkind != H_OTHER) {
        if (r->hval_len + n > HVAL_MAX) {
            n = HVAL_MAX - r->hval_len;
            r->hval_over = true;
        }
        memcpy(r->hval + r->hval_len, at, n);
        r->hval_len += n;
    }
    return 0;
}


static int cb_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 1)
        header_name_done(r);
    if (r->hstate != 0)
        header_done(c);
    if (r->expect100 && p->http_major == 1 && p->http_minor == 1) {
        BUF_LIT(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        try_flush(c);
    }
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    r->body_bytes += n;
    if (!r->body_over) {
        if (c->body.len + n > BODY_MAX)
            r->body_over = true;
        else
            buf_put(&c->body, at, n);
    }
    return 0;
}

static int cb_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    fv_handle_request(c);
    if (c->body.cap > BODY_KEEP)
        buf_free(&c->body);
    /* one request per http_parser_execute() call: keeps responses in order */
    http_parser_pause(p, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* TLS over memory BIOs (--tls-cert)                                         */

/* A TLS connection ended before its handshake completed: count it once and
 * say why (OpenSSL's reason, e.g. the alert the client sent). */
static void tls_count_failure(conn_t *c, const char *what)
{
    if (c->tls_counted || c->tls_done || !c->tls_seen)
        return;
    c->tls_counted = true;
    g_stats.tls_failed++;
    if (!g_quiet) {
        char why[256] = "";
        unsigned long e = ERR_peek_last_error();
        if (e)
            ERR_error_string_n(e, why, sizeof why);
        fprintf(stderr, "fakevendor: TLS handshake failed: %s%s%s\n", what, why[0] ? ": " : "",
                why);
    }
    ERR_clear_error();
}

/* Seal the plaintext in c->out into TLS records and move every pending
 * record (handshake messages, tickets, alerts, close_notify) to c->tout.
 * -1: the TLS engine failed. */
static int tls_seal(conn_t *c)
{
    size_t off = 0;
    while (c->tls_done && off < c->out.len) {
        size_t n = c->out.len - off;
        if (n > (1u << 20))
            n = 1u << 20;
        ERR_clear_error();
        int w = SSL_write(c->ssl, c->out.p + off, (int)n);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    if (c->tls_done)
        c->out.len = 0;
    size_t pend = BIO_ctrl_pending(c->wbio);
    if (pend) {
        buf_reserve(&c->tout, pend);
        int r = BIO_read(c->wbio, c->tout.p + c->tout.len, (int)pend);
        if (r > 0)
            c->tout.len += (size_t)r;
    }
    return 0;
}

/* Bytes from the socket: into the TLS engine; what it decrypts is appended
 * to c->in.  -1: the connection was closed. */
static int tls_input(conn_t *c, const char *p, size_t n)
{
    if (!c->tls_seen) {
        c->tls_seen = true;
        if ((unsigned char)p[0] != 0x16) { /* not a TLS handshake record */
            c->tls_counted = true;
            g_stats.tls_plain++;
            if (!g_quiet)
                fprintf(stderr, "fakevendor: plaintext on a TLS listener; connection closed\n");
            close_conn(c, false);
            return -1;
        }
    }
    if (BIO_write(c->rbio, p, (int)n) != (int)n)
        fv_die("out of memory");
    ERR_clear_error();
    if (!c->tls_done) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0; /* more to come; drive() sends what the engine wrote */
            tls_count_failure(c, "handshake error");
            if (tls_seal(c) == 0 && c->tout.len && !c->writing) { /* our alert, if any */
                uv_buf_t b = uv_buf_init(c->tout.p, (unsigned)c->tout.len);
                (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
            }
            close_conn(c, false);
            return -1;
        }
        c->tls_done = true;
        g_stats.tls_ok++;
        const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        if (sni) {
            size_t l = strlen(sni);
            if (l >= sizeof c->sni)
                l = sizeof c->sni - 1;
            memcpy(c->sni, sni, l);
            c->sni[l] = 0;
            c->has_sni = true;
        }
    }
    for (;;) {
        int r = SSL_read(c->ssl, g_tlsbuf, (int)sizeof g_tlsbuf);
        if (r > 0) {
            buf_put(&c->in, g_tlsbuf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer is done sending */
            c->read_eof = true;
            return 0;
        }
        if (!g_quiet) {
            char why[256] = "";
            ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
            fprintf(stderr, "fakevendor: TLS error: %s; connection closed\n", why);
        }
        ERR_clear_error();
        close_conn(c, false);
        return -1;
    }
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, h11, sizeof h11 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static void tls_setup(const char *cert, const char *key)
{
    g_tls = SSL_CTX_new(TLS_server_method());
    if (!g_tls || !SSL_CTX_set_min_proto_version(g_tls, TLS1_2_VERSION))
        fv_die("cannot create the TLS context");
    char why[256] = "";
    if (SSL_CTX_use_certificate_chain_file(g_tls, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(g_tls, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(g_tls) != 1) {
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        fprintf(stderr, "keyrail-fakevendor: --tls-cert %s / --tls-key %s: %s\n", cert, key, why);
        exit(1);
    }
    SSL_CTX_set_options(g_tls, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_alpn_select_cb(g_tls, alpn_select, NULL);
}

/* ------------------------------------------------------------------------ */
/* I/O                                                                       */

static void on_write(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    c->writing = false;
    c->wb.len = 0;
    if (c->wb.cap > BUF_KEEP)
        buf_free(&c->wb);
    if (c->closing)
        return;
    if (status < 0) {
        close_conn(c, false);
        return;
    }
    drive(c);
}

/* 1: all output written; 0: a write is in flight; -1: connection closed. */
static int try_flush(conn_t *c)
{
    if (c->closing)
        return -1;
    if (c->writing)
        return 0;
    buf_t *src = &c->out; /* the bytes for the socket */
    if (c->ssl) {
        if (tls_seal(c) != 0) {
            close_conn(c, false);
            return -1;
        }
        src = &c->tout;
    }
    if (src->len == 0)
        return 1;
    uv_buf_t b = uv_buf_init(src->p, (unsigned)src->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        close_conn(c, false);
        return -1;
    }
    if ((size_t)n == src->len) {
        src->len = 0;
        return 1;
    }
    buf_t t = c->wb; /* hand the unsent tail to uv_write, keep accumulating in the other buffer */
    c->wb = *src;
    *src = t;
    src->len = 0;
    b = uv_buf_init(c->wb.p + n, (unsigned)(c->wb.len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        close_conn(c, false);
        return -1;
    }
    c->writing = true;
    return 0;
}

static void send_parse_error(conn_t *c)
{
    c->keep_alive = false;
    c->http10 = false;
    c->head_req = false;
    c->no_more = true;
    c->close_after_flush = true;
    char msg[160];
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    snprintf(msg, sizeof msg, "fakevendor: bad HTTP request (%s)", http_errno_name(e));
    fv_send_error(c, 400, &fv_anthropic, 0, msg);
}

static void parse_input(conn_t *c)
{
    while (!c->no_more && !c->closing && !c->job.active && !fv_over_high(c) &&
           c->in_off < c->in.len) {
        size_t avail = c->in.len - c->in_off;
        size_t n = http_parser_execute(&c->parser, &g_settings, c->in.p + c->in_off, avail);
        if (c->closing)
            return;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            c->in_off += n;
            continue;
        }
        if (e != HPE_OK || c->parser.upgrade || n != avail) {
            send_parse_error(c);
            c->in_off = c->in.len;
            break;
        }
        c->in_off += n;
    }
    if (c->in_off >= c->in.len) {
        c->in_off = c->in.len = 0;
        if (c->in.cap > BUF_KEEP)
            buf_free(&c->in);
    } else if (c->in_off > 65536) {
        memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
}

static void complete_pending(conn_t *c)
{
    for (int i = 0; i < c->npend; i++)
        fv_rec_done(c->pend[i], true);
    c->npend = 0;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    *b = uv_buf_init(g_readbuf, READBUF_SIZE); /* consumed synchronously in on_read */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            close_conn(c, false);
            return;
        }
        c->read_eof = true;
        uv_read_stop(s);
        drive(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->no_more || (c->job.active && (c->job.phase == PH_STALL || c->job.phase == PH_RESET)))
        return; /* nothing more will be answered on this connection: discard */
    if (c->ssl) {
        if (tls_input(c, b->base, (size_t)nread) < 0)
            return; /* closed */
    } else {
        buf_put(&c->in, b->base, (size_t)nread);
    }
    if (c->in.len - c->in_off > IN_MAX) {
        uv_read_stop(s);
        c->read_stopped = true;
    }
    drive(c);
}

/* The per-connection state machine: continue streams, parse and answer
 * requests, flush output, and act on a fully flushed socket. */
static void drive(conn_t *c)
{
    if (c->in_drive) {
        c->redrive = true;
        return;
    }
    c->in_drive = true;
    do {
        c->redrive = false;
        if (c->closing)
            break;
        job_t *j = &c->job;
        if (j->active && j->phase == PH_STREAM && !j->timer_wait && !fv_over_high(c))
            fv_run_stream(c);
        if (!j->active)
            parse_input(c);
        if (c->closing)
            break;
        if (c->read_eof) {
            if (j->active) { /* peer went away while we still owed it a response */
                close_conn(c, false);
                break;
            }
            if (c->no_more || c->in_off >= c->in.len)
                c->close_after_flush = true;
        }
        int r = try_flush(c);
        if (r <= 0)
            break; /* closed, or on_write will call us again */
        complete_pending(c);
        if (c->close_after_flush && !j->active) {
            if (c->ssl && c->tls_done && !c->tls_shut) { /* end with a close_notify */
                c->tls_shut = true;
                ERR_clear_error();
                SSL_shutdown(c->ssl);
                ERR_clear_error();
                c->redrive = true;
                continue;
            }
            close_conn(c, false);
            break;
        }
        if (c->reset_after_flush && !c->reset_armed) {
            c->reset_armed = true;
            fv_start_timer(c, T_RESET, RESET_DELAY_MS);
        }
        if (c->out.cap > BUF_KEEP)
            buf_free(&c->out);
        if (c->tout.cap > BUF_KEEP)
            buf_free(&c->tout);
        if (c->read_stopped && !c->read_eof && c->in.len - c->in_off < IN_MAX / 2) {
            c->read_stopped = false;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
        if (!j->active && !c->no_more && c->in_off < c->in.len)
            c->redrive = true;
        if (j->active && j->phase == PH_STREAM && !j->timer_wait)
            c->redrive = true;
    } while (c->redrive && !c->closing);
    c->in_drive = false;
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->closing)
        return;
    switch (c->timer_kind) {
    case T_DELAY:
        if (c->job.active && c->job.phase == PH_DELAY)
            fv_respond_now(c);
        break;
    case T_DRIP:
        c->job.timer_wait = false;
        break;
    case T_RESET:
        close_conn(c, true);
        return;
    default:
        break;
    }
    drive(c);
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wb);
    buf_free(&c->body);
    buf_free(&c->tout);
    SSL_free(c->ssl); /* and its BIOs */
    free(c);
}

static void close_conn(conn_t *c, bool reset)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->ssl)
        tls_count_failure(c, "connection closed during the handshake");
    if (c->job.active) {
        fv_rec_result(&c->job);
        fv_rec_done(c->job.seq, false);
        c->job.active = false;
    }
    for (int i = 0; i < c->npend; i++)
        fv_rec_done(c->pend[i], false);
    c->npend = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    if (!reset || uv_tcp_close_reset(&c->tcp, on_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0 || g_stopping)
        return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        fv_die("out of memory");
    uv_tcp_init(g_loop, &c->tcp);
    c->tcp.data = c;
    c->open_handles = 1;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_timer_init(g_loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    if (g_tls) {
        c->ssl = SSL_new(g_tls);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio)
            fv_die("out of memory");
        BIO_set_mem_eof_return(c->rbio, -1); /* empty: "retry", not EOF */
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        close_conn(c, false);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (g_stopping)
        return;
    g_stopping = true;
    uv_close((uv_handle_t *)&g_server, NULL);
    while (g_conns)
        close_conn(g_conns, false);
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

static void usage(FILE *f)
{
    fprintf(f, "usage: keyrail-fakevendor [--listen HOST:PORT] [--port-file FILE] "
               "[--record FILE] [--quiet]\n"
               "                          [--tls-cert FILE --tls-key FILE]\n"
               "       keyrail-fakevendor --sha256-stdin\n"
               "Fake Anthropic/OpenAI upstream for tests; see src/fakevendor/fv.h.\n");
}

int main(int argc, char **argv)
{
    const char *listen_arg = "127.0.0.1:0", *port_file = NULL, *record = NULL;
    const char *tls_cert = NULL, *tls_key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char *eq = strchr(a, '=');
        size_t al = eq ? (size_t)(eq - a) : strlen(a);
#define OPT(name) (al == sizeof(name) - 1 && memcmp(a, name, al) == 0)
        bool needs = OPT("--listen") || OPT("--port-file") || OPT("--record") ||
                     OPT("--tls-cert") || OPT("--tls-key");
        if (needs) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else {
                usage(stderr);
                return 2;
            }
        }
        if (OPT("--listen"))
            listen_arg = v;
        else if (OPT("--port-file"))
            port_file = v;
        else if (OPT("--record"))
            record = v;
        else if (OPT("--tls-cert"))
            tls_cert = v;
        else if (OPT("--tls-key"))
            tls_key = v;
        else if (OPT("--quiet"))
            g_quiet = true;
        else if (OPT("--sha256-stdin"))
            return fv_sha256_stdin();
        else if (OPT("--help") || OPT("-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
#undef OPT
    }

    /* HOST:PORT, [V6]:PORT, or just PORT */
    char host[256];
    int port = 0;
    const char *colon = strrchr(listen_arg, ':');
    if (listen_arg[0] == '[') {
        const char *rb = strchr(listen_arg, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - listen_arg - 1) >= sizeof host)
            fv_die("bad --listen (want [V6ADDR]:PORT)");
        memcpy(host, listen_arg + 1, (size_t)(rb - listen_arg - 1));
        host[rb - listen_arg - 1] = 0;
        port = atoi(rb + 2);
    } else if (colon) {
        if ((size_t)(colon - listen_arg) >= sizeof host)
            fv_die("bad --listen");
        memcpy(host, listen_arg, (size_t)(colon - listen_arg));
        host[colon - listen_arg] = 0;
        if (!host[0])
            strcpy(host, "127.0.0.1");
        port = atoi(colon + 1);
    } else {
        strcpy(host, "127.0.0.1");
        port = atoi(listen_arg);
    }
    if (port < 0 || port > 65535)
        fv_die("bad port");
    if (!tls_cert != !tls_key)
        fv_die("--tls-cert and --tls-key go together");
    if (tls_cert)
        tls_setup(tls_cert, tls_key);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    if (fv_records_open(record) != 0)
        return 1;

    g_settings.on_message_begin = cb_message_begin;
    g_settings.on_url = cb_url;
    g_settings.on_header_field = cb_header_field;
    g_settings.on_header_value = cb_header_value;
    g_settings.on_headers_complete = cb_headers_complete;
    g_settings.on_body = cb_body;
    g_settings.on_message_complete = cb_message_complete;

    g_loop = uv_default_loop();
    g_start_ms = uv_now(g_loop);
    struct sockaddr_storage ss;
    bool v6 = strchr(host, ':') != NULL;
    int rc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        fv_die("bad --listen address");
    uv_tcp_init(g_loop, &g_server);
    if ((rc = uv_tcp_bind(&g_server, (const struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&g_server, 4096, on_connection)) != 0) {
        fprintf(stderr, "keyrail-fakevendor: listen on %s: %s\n", listen_arg, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&g_server, (struct sockaddr *)&bound, &blen);
    port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&bound)->sin_port);

    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", port_file, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "keyrail-fakevendor: cannot write port file %s: %s\n", port_file,
                    strerror(errno));
            return 1;
        }
    }
    if (v6)
        printf("listening on [%s]:%d\n", host, port);
    else
        printf("listening on %s:%d\n", host, port);
    fflush(stdout);

    uv_signal_init(g_loop, &g_sigterm);
    uv_signal_init(g_loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);

    uv_run(g_loop, UV_RUN_DEFAULT);

    fv_records_free();
    uv_loop_close(g_loop);
    SSL_CTX_free(g_tls);
    return 0;
}
