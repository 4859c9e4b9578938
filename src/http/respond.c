/*
 * respond.c -- complete responses, status texts, request ids and the
 * per-request log line (http.h).
 */
#include "http/http.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

const char *kr_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Overloaded";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

void kr_http_request_id(kr_http_server *s, char *out, size_t cap)
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

bool kr_x_is_head(const kr_exchange *x)
{
    return x->http && kr_slice_eq(x->http->method, "HEAD");
}

void kr_x_respond(kr_exchange *x, int status, const char *ctype, const char *body, size_t n,
                  const char *extra_headers, const char *id_header)
{
    x->status = status;
    if (x->conn) {
        char head[2048];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                          "x-keyrail-request-id: %s\r\n%s%s%s%s%s%s\r\n",
                          status, kr_status_text(status), ctype, n, x->id, id_header ? id_header : "",
                          id_header ? ": " : "", id_header ? x->id : "", id_header ? "\r\n" : "",
                          extra_headers ? extra_headers : "",
                          x->keep_alive ? "" : "connection: close\r\n");
        /* extra headers are keyrail's own: never too long */
        KR_ASSERT(hl > 0 && (size_t)hl < sizeof head);
        uv_buf_t b[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init((char *)body, (unsigned)n)};
        kr_conn_write(x->conn, b, kr_x_is_head(x) ? 1 : 2);
    }
    kr_x_finish(x);
}

/* ---- the log line ---- */

void kr_x_log_begin(const kr_exchange *x, kr_buf *b)
{
    char ts[KR_LOG_TS_LEN];
    kr_log_ts(ts);
    kr_buf_puts(b, "{\"ts\":\"");
    kr_buf_puts(b, ts);
    kr_buf_puts(b, "\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":\"");
    kr_buf_puts(b, x->id);
    kr_buf_puts(b, "\",\"method\":\"");
    if (x->http) {
        kr_buf_json_str(b, x->http->method.p, x->http->method.n < 16 ? x->http->method.n : 16);
        kr_buf_puts(b, "\",\"path\":\"");
        kr_buf_json_str(b, x->http->path.p, x->http->path.n < 256 ? x->http->path.n : 256);
    }
    kr_buf_puts(b, "\",\"route\":\"");
    kr_buf_puts(b, kr_route_label(x->route));
    kr_buf_puts(b, "\",\"status\":");
    kr_buf_put_i64(b, x->status);
    if (x->srv && x->srv->worker >= 0) {
        kr_buf_puts(b, ",\"worker\":");
        kr_buf_put_i64(b, x->srv->worker);
    }
    if (x->cred_class[0]) {
        kr_buf_puts(b, ",\"credential\":\"");
        kr_buf_puts(b, x->cred_class);
        kr_buf_putc(b, '"');
    }
}

void kr_x_log_end(const kr_exchange *x, kr_buf *b, uint64_t t_up_ns)
{
    uint64_t now = kr_mono_ns();
    kr_buf_puts(b, ",\"latency_ms\":");
    kr_buf_put_ms3(b, now - x->t0_ns);
    if (t_up_ns) {
        kr_buf_puts(b, ",\"upstream_ms\":");
        kr_buf_put_ms3(b, now - t_up_ns);
    }
    if (x->error_type[0]) {
        kr_buf_puts(b, ",\"error\":\"");
        kr_buf_puts(b, x->error_type);
        kr_buf_putc(b, '"');
    }
    kr_buf_putc(b, '}');
    kr_log_json_line(b);
}

/* one line per request: appends into a reused buffer, no printf */
static _Thread_local kr_buf log_line = KR_BUF_INIT(4096);

void kr_x_log(kr_exchange *x)
{
    if (kr_log_level > KR_LOG_INFO) return;
    kr_buf_reset(&log_line);
    kr_x_log_begin(x, &log_line);
    kr_x_log_end(x, &log_line, 0);
}

void kr_http_thread_end(void)
{
    kr_buf_free(&log_line);
}
