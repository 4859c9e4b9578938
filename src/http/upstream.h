/*
 * upstream.h -- requests to upstream vendors, through one interface over
 * keyrail's two HTTP clients on the loop (`upstream.client`):
 *
 *   native  keyrail's own HTTP/1.1 client (upclient.c, upclient.h): a
 *           keep-alive pool per origin, OpenSSL, the strict response parser
 *   curl    libcurl's multi interface (upcurl.c); always when an egress
 *           proxy variable is set at start (only libcurl speaks to proxies)
 *
 * A transfer is a kr_upx the caller embeds in its own request. The caller
 * sets the callbacks and starts it with kr_upstream_send; the client calls
 * on_header with the status line and each header line, on_body with each
 * piece of the body (libcurl's shapes and its pause convention: returning
 * CURL_WRITEFUNC_PAUSE stops reading until kr_upstream_resume), and done
 * exactly once with the CURLcode libcurl would have used (the cause in
 * x->err). kr_upstream_cancel ends a transfer with no report. After each
 * batch of callbacks the client calls the flush hook given at init (the
 * proxy writes what it staged for its clients then).
 *
 * TLS to a vendor is always verified -- chain and host name, against the
 * system CA store or upstream.ca_file alone, TLS 1.2 at least -- by both
 * clients, and nothing can turn it off. A request is never sent twice once
 * the vendor may have acted on it (the retry rule in upclient.h).
 */
#ifndef KR_UPSTREAM_H
#define KR_UPSTREAM_H

#include <curl/curl.h>
#include <stdbool.h>
#include <uv.h>

#include "config/config.h"
#include "core/err.h"

typedef struct kr_upx kr_upx;

/* libcurl's callback shape: returns n to go on, CURL_WRITEFUNC_PAUSE to stop
 * reading (the bytes are handed again after kr_upstream_resume), anything
 * else aborts the transfer. */
typedef size_t (*kr_upx_data_fn)(char *p, size_t size, size_t n, void *ud);

struct kr_upx {
    /* the caller's, set before kr_upstream_send */
    void *ud; /* handed to on_header and on_body */
    kr_upx_data_fn on_header, on_body;
    void (*done)(kr_upx *x, CURLcode rc);
    const char *who; /* for log lines: the vendor (provider name) */
    const char *id;  /* for log lines: the request id */
    /* the client's while the transfer runs */
    CURL *easy;
    struct kr_upc_conn *uc;
    struct curl_slist *hdrs;
    bool active;
    char err[CURL_ERROR_SIZE]; /* why it failed, in libcurl's words */
};

typedef struct kr_upx_req {
    const char *url;     /* http(s)://host[:port]/path[?query] */
    const char *headers; /* "Name: value\r\n" lines, without Host and Content-Length */
    size_t headers_len;
    const char *body; /* not copied: must stay valid until the transfer ends */
    size_t body_len;
    bool retry_safe; /* the request may be repeated (upclient.h's retry rule) */
    const char *method; /* NULL: POST; GET, PUT, PATCH, DELETE (not HEAD: a response without a body) */
} kr_upx_req;

typedef struct kr_upstream {
    uv_loop_t *loop;
    const kr_config *cfg;
    void (*flush)(void *ctx);
    void *flush_ctx;
    bool stopped; /* no connection goes back to a pool */
    /* libcurl */
    CURLM *multi;
    uv_timer_t curl_timer;
    CURL *easy_pool[256];
    int neasy;
    struct {
        char *url;
        CURLU *u;
    } urls[64]; /* parsed upstream URLs, made on first use */
    int nurls;
    bool env_proxy; /* a proxy variable is set: libcurl reads them per transfer */
    /* the native client; NULL: libcurl carries every transfer */
    struct kr_upc *upc;
} kr_upstream;

/* Refuses (at start) an upstream.client that is neither native nor curl,
 * and an upstream.ca_file that cannot be read or holds no PEM certificate. */
int kr_upstream_check_config(const kr_config *cfg, kr_diag *d);
int kr_upstream_init(kr_upstream *u, uv_loop_t *loop, const kr_config *cfg, void (*flush)(void *),
                     void *flush_ctx);
/* No transfer may be running. */
void kr_upstream_free(kr_upstream *u);
/* Starts x. Never reports synchronously: 0, or KR_EINVAL (the URL is not
 * one the client takes) / another error (it could not be started). */
int kr_upstream_send(kr_upstream *u, kr_upx *x, const kr_upx_req *q);
/* The caller drained: hand the held bytes on and read again. */
void kr_upstream_resume(kr_upstream *u, kr_upx *x);
/* Ends x without a report (client gone, timeout). */
void kr_upstream_cancel(kr_upstream *u, kr_upx *x);

/* The message of a 502 for a transfer that failed before the response
 * head: the cause in libcurl's words (errbuf), redacted; TLS failures say so
 * and that the request was not sent. */
void kr_upstream_describe(CURLcode rc, const char *errbuf, char *out, size_t cap);
/* A TLS handshake or verification failure (always before any request byte). */
bool kr_upstream_is_tls_error(CURLcode rc);

#endif
