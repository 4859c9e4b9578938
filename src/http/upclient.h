/*
 * upclient.h -- keyrail's own HTTP/1.1 upstream client on the libuv loop
 * (`upstream.client = native`, the default; docs/PROXY.md "The upstream
 * client").
 *
 * Owns: the connections to upstream vendors -- a keep-alive pool per origin
 * (scheme, host, port), bounded (upstream.pool_size idle connections per
 * origin) and aged out (upstream.idle_timeout_ms, or sooner when the vendor's
 * Keep-Alive header says so); name resolution, TCP, TLS through OpenSSL with
 * certificate chain AND host name verification against the system CA store
 * or upstream.ca_file (TLS 1.2 at least, SNI, ALPN http/1.1, no way to turn
 * any of it off, never a plaintext fallback); writing the request; reading
 * the response through the strict parser (http1_resp.h) and handing the
 * status line, the header lines and the body to the transfer's callbacks
 * (upstream.h: libcurl's shapes and pause convention, CURL_WRITEFUNC_PAUSE
 * stops reading the socket until kr_upc_resume). The end of every transfer
 * is reported through x->done with the CURLcode libcurl would have used and
 * libcurl's wording in x->err, so the caller maps it to 502/504 or the
 * in-stream error exactly as it does for libcurl.
 *
 * The retry rule (a request is never sent twice when the vendor may have
 * acted on it): only a request that runs on a *reused* connection, and only
 * when that connection is lost before any byte of the response arrived, is
 * retried -- once, on a fresh connection -- and only if either
 *   - the request had not been completely handed to the kernel (the write
 *     failed or was cut short: the vendor cannot hold a complete request), or
 *   - the route is known to be safe to repeat (count_tokens: free, no side
 *     effect; call->retry_safe).
 * A POST to a metered route whose bytes were all written is never repeated:
 * the client gets the 502. Before reusing a connection idle for over a
 * second keyrail checks (one non-blocking peek) that the vendor has not
 * closed it, so the common stale-connection case never reaches the rule.
 *
 * What it does not do (libcurl does; `upstream.client = curl`): egress
 * proxies (when a proxy variable is set at start, serve uses libcurl and
 * says so in its log), HTTP/2, content codings (keyrail asks for identity).
 */
#ifndef KR_UPCLIENT_H
#define KR_UPCLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "http/upstream.h"

typedef struct kr_upc kr_upc;

typedef struct kr_upc_url {
    bool tls;
    bool ip; /* the host is an IP literal (no SNI; verified as an IP address) */
    char host[256]; /* without brackets */
    uint16_t port;
    const char *path; /* into the URL; "/..." (the request target) */
    size_t path_len;
} kr_upc_url;

/* Creates the client (the TLS context with its trust anchors) for up's loop
 * and settings. */
int kr_upc_new(kr_upstream *up, kr_upc **out, kr_diag *d);
/* Closes every connection; no transfer may be running. */
void kr_upc_free(kr_upc *u);
/* Starts x (x->uc is set). Never reports synchronously: 0, or KR_EINVAL
 * (the URL is not one the client takes) / KR_ETOOBIG. */
int kr_upc_start(kr_upc *u, kr_upx *x, const kr_upx_req *q);
/* The caller drained: hand the held bytes on and read again. */
void kr_upc_resume(kr_upx *x);
/* Ends x without a report (client gone, timeout); its connection is closed
 * (a response cut midway cannot be reused). */
void kr_upc_cancel(kr_upx *x);
/* Strict: http or https, a host name, IPv4 or [IPv6], an optional port
 * 1..65535, a path of visible characters; no user info, no fragment. */
int kr_upc_parse_url(const char *url, kr_upc_url *out);

#endif
