/*
 * upcurl.c -- the upstream interface (upstream.h): kr_upstream_send picks
 * the client, and the libcurl path itself, libcurl's multi interface driven
 * by the libuv loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to wake it (CURLMOPT_TIMERFUNCTION); we watch them with uv_poll and a
 * uv_timer and hand events back with curl_multi_socket_action. The multi
 * handle keeps the connection cache, so upstream connections (HTTP/1.1
 * keep-alive, HTTP/2 over TLS) are reused across requests. Easy handles are
 * pooled and reused without a reset.
 *
 * TLS to vendors: every handle verifies the peer's certificate chain and
 * its host name (CURLOPT_SSL_VERIFYPEER 1, CURLOPT_SSL_VERIFYHOST 2, TLS 1.2
 * at least), against upstream.ca_file when set (and then only against it),
 * else the system CA store. These options are set once per handle, when it
 * is created, and nothing ever changes them: there is no setting to weaken
 * them, and libcurl never falls back from https to plain http. A transfer
 * that fails before the response head is described by kr_upstream_describe
 * from libcurl's error text (the certificate problem, the host name) for the
 * 502 body.
 */
#include "http/upstream.h"
#include "core/buf.h"
#include "core/ini.h"
#include "core/log.h"
#include "http/upclient.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    kr_upstream *srv;
} sock_ctx;

static void release_easy(kr_upstream *s, CURL *e);
static void free_headers(kr_upx *x);

/* A finished transfer: its handle and header list go back before the
 * caller hears of it (the caller may start the next transfer at once). */
static void check_done(kr_upstream *s)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        kr_upx *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(s->multi, e);
        if (!x) continue;
        KR_ASSERT(x->easy == e && x->active);
        if (rc != CURLE_OK && kr_upstream_is_tls_error(rc))
            KR_WARN("upstream TLS failure (%s, request %s): %s", x->who ? x->who : "?",
                    x->id ? x->id : "?", x->err[0] ? x->err : curl_easy_strerror(rc));
        x->active = false;
        x->easy = NULL;
        release_easy(s, e);
        free_headers(x);
        x->done(x, rc);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *sc = p->data;
    kr_upstream *s = sc->srv;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(s->multi, sc->fd, flags, &running);
    s->flush(s->flush_ctx);
    check_done(s);
}

static void on_curl_timer(uv_timer_t *t)
{
    kr_upstream *s = t->data;
    int running;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s->flush(s->flush_ctx);
    check_done(s);
}

static int timer_cb(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    kr_upstream *s = ud;
    if (timeout_ms < 0)
        uv_timer_stop(&s->curl_timer);
    else
        uv_timer_start(&s->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static int socket_cb(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp)
{
    (void)e;
    kr_upstream *s = ud;
    sock_ctx *sc = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, on_poll_closed);
            curl_multi_assign(s->multi, fd, NULL);
        }
        return 0;
    }
    if (!sc) {
        sc = kr_xcalloc(1, sizeof *sc);
        sc->fd = fd;
        sc->srv = s;
        if (uv_poll_init_socket(s->loop, &sc->poll, fd) != 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        curl_multi_assign(s->multi, fd, sc);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    uv_poll_start(&sc->poll, ev, on_poll);
    return 0;
}

int kr_upstream_init(kr_upstream *s, uv_loop_t *loop, const kr_config *cfg, void (*flush)(void *),
                     void *flush_ctx)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    s->flush = flush;
    s->flush_ctx = flush_ctx;
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return -1;
    s->multi = curl_multi_init();
    if (!s->multi) return -1;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, 1024L);
    curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    /* without proxy variables every transfer says "no proxy" itself, which
     * spares libcurl reading the environment for each one */
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                       "ALL_PROXY"};
    s->env_proxy = false;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) s->env_proxy = true;
    }
    uv_timer_init(s->loop, &s->curl_timer);
    s->curl_timer.data = s;
    /* the native client carries every transfer unless libcurl must: only
     * libcurl speaks to an egress proxy */
    s->upc = NULL;
    if (!strcmp(s->cfg->upstream_client, "native")) {
        if (s->env_proxy) {
            KR_INFO("upstream client: libcurl (a proxy variable is set; keyrail's own client does "
                    "not use egress proxies)");
        } else {
            kr_diag d = {{0}};
            if (kr_upc_new(s, &s->upc, &d)) {
                KR_ERROR("refusing to start: upstream client: %s", d.msg);
                return -1;
            }
            KR_INFO("upstream client: native (HTTP/1.1, keep-alive pool of %lld per vendor)",
                    (long long)s->cfg->upstream_pool_size);
        }
    } else {
        KR_INFO("upstream client: libcurl (upstream.client = curl)");
    }
    return 0;
}

void kr_upstream_free(kr_upstream *s)
{
    s->stopped = true;
    kr_upc_free(s->upc);
    s->upc = NULL;
    if (!s->multi) return;
    for (int i = 0; i < s->neasy; i++)
        curl_easy_cleanup(s->easy_pool[i]);
    s->neasy = 0;
    for (int i = 0; i < s->nurls; i++) {
        curl_url_cleanup(s->urls[i].u);
        free(s->urls[i].url);
    }
    s->nurls = 0;
    curl_multi_cleanup(s->multi); /* closes cached connections: sockets are removed */
    s->multi = NULL;
    uv_timer_stop(&s->curl_timer);
    uv_close((uv_handle_t *)&s->curl_timer, NULL);
}

/* The registry's few upstream URLs are parsed once: libcurl copies a
 * CURLOPT_CURLU handle per transfer instead of parsing the string. */
static int set_url(kr_upstream *s, CURL *e, const char *url)
{
    for (int i = 0; i < s->nurls; i++)
        if (!strcmp(s->urls[i].url, url))
            return curl_easy_setopt(e, CURLOPT_CURLU, s->urls[i].u) ? -1 : 0;
    if (s->nurls == (int)(sizeof s->urls / sizeof s->urls[0]))
        return curl_easy_setopt(e, CURLOPT_CURLU, NULL) || curl_easy_setopt(e, CURLOPT_URL, url)
                   ? -1
                   : 0;
    CURLU *u = curl_url();
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0)) {
        curl_url_cleanup(u);
        return -1;
    }
    s->urls[s->nurls].url = kr_strdup(url);
    s->urls[s->nurls].u = u;
    s->nurls++;
    return curl_easy_setopt(e, CURLOPT_CURLU, u) ? -1 : 0;
}

int kr_upstream_check_config(const kr_config *cfg, kr_diag *d)
{
    if (strcmp(cfg->upstream_client, "native") && strcmp(cfg->upstream_client, "curl"))
        return kr_fail(d, KR_ECONFIG, "upstream.client: '%s' is not native or curl",
                       cfg->upstream_client);
    if (!cfg->upstream_ca_file[0]) return 0;
    char *text;
    size_t n;
    kr_diag inner = {{0}};
    int rc = kr_read_file(cfg->upstream_ca_file, 64u << 20, &text, &n, &inner);
    if (rc) return kr_fail(d, rc, "upstream.ca_file: %s", kr_diag_msg(&inner, rc));
    static const char pem[] = "-----BEGIN CERTIFICATE-----";
    bool found = memmem(text, n, pem, sizeof pem - 1) != NULL;
    free(text);
    if (!found)
        return kr_fail(d, KR_ECONFIG, "upstream.ca_file: %s holds no PEM certificate",
                       cfg->upstream_ca_file);
    return 0;
}

static CURL *get_easy(kr_upstream *s)
{
    if (s->neasy > 0) return s->easy_pool[--s->neasy];
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    /* TLS verification, for the handle's life (see the top of this file) */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (s->cfg->upstream_ca_file[0]) {
        curl_easy_setopt(e, CURLOPT_CAINFO, s->cfg->upstream_ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL); /* the bundle alone, not /etc/ssl/certs too */
    }
    return e;
}

static void release_easy(kr_upstream *s, CURL *e)
{
    if (!e) return;
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL); /* it belongs to the finished request */
    /* no curl_easy_reset: send_curl() sets every option it relies on for
     * each request, and a reset per request is measurable work */
    if (s->multi && s->neasy < (int)(sizeof s->easy_pool / sizeof s->easy_pool[0]))
        s->easy_pool[s->neasy++] = e;
    else
        curl_easy_cleanup(e);
}

bool kr_upstream_is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return true; /* all of them before any request byte */
    default:
        return false;
    }
}

void kr_upstream_describe(CURLcode rc, const char *errbuf, char *out, size_t cap)
{
    /* libcurl's own text names the cause ("SSL certificate problem:
     * certificate has expired", "… self-signed certificate", "… unable to
     * get local issuer certificate", "SSL: no alternative certificate
     * subject name matches target host name 'x'"); it holds host names and
     * certificate fields, never request headers, and is redacted anyway */
    const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(rc);
    kr_buf red = KR_BUF_INIT(CURL_ERROR_SIZE * 4);
    kr_redact(why, strnlen(why, CURL_ERROR_SIZE), &red);
    int n = (int)red.len;
    const char *t = red.data ? red.data : "";
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
        kr_snprintf(out, cap,
                    "the upstream vendor's TLS certificate failed verification (%.*s); the request "
                    "was not sent",
                    n, t);
    else if (rc == CURLE_SSL_CACERT_BADFILE)
        kr_snprintf(out, cap,
                    "the CA bundle for upstream TLS could not be used (%.*s); the request "
                    "was not sent",
                    n, t);
    else if (kr_upstream_is_tls_error(rc))
        kr_snprintf(out, cap,
                    "the TLS handshake with the upstream vendor failed (%.*s); the request "
                    "was not sent",
                    n, t);
    else
        kr_snprintf(out, cap, "the upstream vendor could not be reached (%.*s)", n, t);
    kr_buf_free(&red);
}

/* The request through libcurl: the header lines split into a list, the
 * same options for every transfer (a pooled handle keeps the others). */
static int send_curl(kr_upstream *s, kr_upx *x, const kr_upx_req *q)
{
    struct curl_slist *hl = NULL;
    char line[8300];
    const char *p = q->headers, *end = q->headers + q->headers_len;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t l = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (l && l < sizeof line) {
            memcpy(line, p, l);
            line[l] = 0;
            hl = curl_slist_append(hl, line);
        }
        p += l + (eol ? 2 : 0);
    }
    hl = curl_slist_append(hl, "Expect:");
    x->hdrs = hl;
    CURL *e = get_easy(s);
    if (!e) return KR_ENOMEM;
    x->easy = e;
    if (set_url(s, e, q->url)) return KR_EINVAL;
    x->err[0] = 0;
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->err);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    /* another method keeps the body framing of a POST (GET: an empty body) */
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method && strcmp(q->method, "POST") ? q->method : NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, x->on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x->ud);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, x->on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x->ud);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->cfg->upstream_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 16384L); /* one per open transfer */
    /* the body leaves in one send when it fits libcurl's upload buffer (at
     * most 2 MiB); the buffer is freed when the option is set for the next
     * transfer of this handle */
    size_t n = q->body_len;
    long ulbuf = n > 16384 ? (long)(n < (2u << 20) ? n : (2u << 20)) : 16384L;
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, ulbuf);
    if (!s->env_proxy) curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) return KR_EIO;
    return 0;
}

/* The header list holds the vendor key's line: wiped, then freed. */
static void free_headers(kr_upx *x)
{
    for (struct curl_slist *h = x->hdrs; h; h = h->next)
        if (h->data) sodium_memzero(h->data, strlen(h->data));
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
}

/* What a transfer that could not start holds goes back. */
static void undo(kr_upstream *s, kr_upx *x)
{
    if (x->easy) release_easy(s, x->easy);
    x->easy = NULL;
    free_headers(x);
}

int kr_upstream_send(kr_upstream *s, kr_upx *x, const kr_upx_req *q)
{
    KR_ASSERT(!x->active && !x->easy && !x->uc);
    int rc = s->upc ? kr_upc_start(s->upc, x, q) : send_curl(s, x, q);
    if (rc) {
        undo(s, x);
        return rc;
    }
    x->active = true;
    return 0;
}

void kr_upstream_resume(kr_upstream *s, kr_upx *x)
{
    (void)s;
    if (x->uc) kr_upc_resume(x);
    else if (x->easy) curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

void kr_upstream_cancel(kr_upstream *s, kr_upx *x)
{
    if (x->uc) {
        kr_upc_cancel(x);
    } else if (x->easy) {
        if (s->multi) curl_multi_remove_handle(s->multi, x->easy);
    }
    undo(s, x);
    x->active = false;
}
