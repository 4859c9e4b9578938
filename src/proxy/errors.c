/*
 * errors.c -- keyrail's own responses on the LLM routes: JSON errors in the
 * protocol's shape (Anthropic or OpenAI, chosen by the route) and small JSON
 * bodies. Every one carries the request id, in the header each protocol's
 * SDK reads.
 */
#include "proxy/proxy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kr_proto_id_header(kr_proto p)
{
    /* Google's API names none for clients: x-keyrail-request-id alone */
    return p == KR_PROTO_OPENAI ? "x-request-id" : p == KR_PROTO_GEMINI ? NULL : "request-id";
}

/* google.rpc.Code names of the statuses keyrail answers with. */
static const char *google_status(int status)
{
    switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 402:
    case 429: return "RESOURCE_EXHAUSTED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 405: return "UNIMPLEMENTED";
    case 408:
    case 504: return "DEADLINE_EXCEEDED";
    case 409: return "ABORTED";
    case 413: return "INVALID_ARGUMENT";
    case 422: return "FAILED_PRECONDITION";
    case 499: return "CANCELLED";
    case 501: return "UNIMPLEMENTED";
    case 503: return "UNAVAILABLE";
    default: return status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
    }
}

static const char *openai_code(int status)
{
    switch (status) {
    case 401: return "\"invalid_api_key\"";
    case 402: return "\"insufficient_quota\"";
    case 403: return "\"model_not_allowed\"";
    case 404: return "\"not_found\"";
    case 429: return "\"rate_limit_exceeded\"";
    default: return "null";
    }
}

/* The error body alone. */
static void error_body(kr_buf *b, kr_proto proto, int status, const char *type, const char *msg,
                       const char *id)
{
    if (proto == KR_PROTO_GEMINI) { /* Google's shape; keyrail's type rides along as a reason */
        kr_buf_printf(b, "{\"error\":{\"code\":%d,\"message\":\"", status);
        kr_buf_json_str(b, msg, strlen(msg));
        kr_buf_printf(b, "\",\"status\":\"%s\",\"details\":[{\"@type\":"
                         "\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"%s\","
                         "\"domain\":\"keyrail\",\"metadata\":{\"request_id\":\"%s\"}}]}}",
                      google_status(status), type, id);
    } else if (proto == KR_PROTO_OPENAI) { /* every /openai/… path, matched or not */
        kr_buf_puts(b, "{\"error\":{\"message\":\"");
        kr_buf_json_str(b, msg, strlen(msg));
        kr_buf_printf(b, "\",\"type\":\"%s\",\"param\":null,\"code\":%s},\"request_id\":\"%s\"}",
                      type, openai_code(status), id);
    } else {
        kr_buf_printf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"", type);
        kr_buf_json_str(b, msg, strlen(msg));
        kr_buf_printf(b, "\"},\"request_id\":\"%s\"}", id);
    }
}

static void verror(kr_exchange *x, kr_proto proto, int status, const char *type,
                   const char *extra, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    kr_strlcpy(x->error_type, type, sizeof x->error_type);
    kr_buf b = KR_BUF_INIT(4096);
    error_body(&b, proto, status, type, msg, x->id);
    kr_x_respond(x, status, "application/json", b.data, b.len, extra, kr_proto_id_header(proto));
    kr_buf_free(&b);
}

void kr_proxy_error(kr_exchange *x, kr_proto proto, int status, const char *type,
                    const char *extra_headers, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(x, proto, status, type, extra_headers, fmt, ap);
    va_end(ap);
}

void kr_respond_error(kr_req *r, int status, const char *type, const char *fmt, ...)
{
    char extra[96] = "";
    if (status == 429 && r->retry_after > 0)
        snprintf(extra, sizeof extra, "retry-after: %d\r\n", r->retry_after);
    if (status == 405 && r->rd)
        kr_strlcpy(extra, !strcmp(r->rd->method, "GET") ? "allow: GET, HEAD\r\n" : "allow: POST\r\n",
                   sizeof extra);
    va_list ap;
    va_start(ap, fmt);
    verror(&r->x, r->proto, status, type, extra, fmt, ap);
    va_end(ap);
}

void kr_respond_json(kr_req *r, int status, const char *body, size_t n, const char *extra_headers)
{
    kr_x_respond(&r->x, status, "application/json", body, n, extra_headers,
                 kr_proto_id_header(r->proto));
}

void kr_proxy_refusal(void *ctx, const kr_http_req *h, int status, const char *msg,
                      const char *request_id, kr_buf *body, const char **id_header)
{
    (void)ctx;
    /* the path is known once the parser reached the end of the head */
    kr_proto proto = !h->path.p                          ? KR_PROTO_ANTHROPIC
                     : kr_slice_starts(h->path, "/openai/") ? KR_PROTO_OPENAI
                     : kr_slice_starts(h->path, "/gemini/") ? KR_PROTO_GEMINI
                                                            : KR_PROTO_ANTHROPIC;
    /* the Anthropic API's own type for a 413 (docs/PROXY.md) */
    const char *type = proto == KR_PROTO_ANTHROPIC && status == 413 ? "request_too_large"
                                                                    : "invalid_request_error";
    if (proto == KR_PROTO_GEMINI) {
        error_body(body, proto, status, type, msg, request_id);
    } else if (proto == KR_PROTO_OPENAI) {
        /* a refusal before routing: no OpenAI error code */
        kr_buf_puts(body, "{\"error\":{\"message\":\"");
        kr_buf_json_str(body, msg, strlen(msg));
        kr_buf_printf(body, "\",\"type\":\"%s\",\"param\":null,\"code\":null},\"request_id\":\"%s\"}",
                      type, request_id);
    } else {
        error_body(body, proto, status, type, msg, request_id);
    }
    *id_header = kr_proto_id_header(proto);
}
