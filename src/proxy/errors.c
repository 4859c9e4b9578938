/*
 * errors.c -- keyrail's own responses: JSON errors in the protocol's shape
 * (Anthropic or OpenAI, chosen by the route) and small JSON bodies. Every
 * one carries the request id, in the header each protocol's SDK reads.
 */
#include "proxy/proxy.h"

#include <stdarg.h>
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

void kr_respond_error(kr_req *r, int status, const char *type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kr_strlcpy(r->error_type, type, sizeof r->error_type);
    kr_buf b = KR_BUF_INIT(4096);
    if (r->proto == KR_PROTO_OPENAI) { /* every /openai/… path, matched or not */
        kr_buf_puts(&b, "{\"error\":{\"message\":\"");
        kr_buf_json_str(&b, msg, strlen(msg));
        kr_buf_printf(&b, "\",\"type\":\"%s\",\"param\":null,\"code\":%s},\"request_id\":\"%s\"}",
                      type, openai_code(status), r->id);
    } else {
        kr_buf_printf(&b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"", type);
        kr_buf_json_str(&b, msg, strlen(msg));
        kr_buf_printf(&b, "\"},\"request_id\":\"%s\"}", r->id);
    }
    char extra[96] = "";
    if (status == 429 && r->retry_after > 0)
        snprintf(extra, sizeof extra, "retry-after: %d\r\n", r->retry_after);
    if (status == 405 && r->rd)
        kr_strlcpy(extra, !strcmp(r->rd->method, "GET") ? "allow: GET, HEAD\r\n" : "allow: POST\r\n",
                   sizeof extra);
    kr_respond_json(r, status, b.data, b.len, extra);
    kr_buf_free(&b);
}
