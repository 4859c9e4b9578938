/*
 * http1.c -- strict, incremental HTTP/1.1 request parser (see http1.h).
 *
 * The head is collected line by line into p->head: each call looks for LF
 * only in the new bytes (memchr), and each completed line is checked once, so
 * the work is linear however the input is split. Every decision is taken at a
 * fixed byte position (a cap crossed, a line completed), which makes the
 * outcome independent of how the bytes were split across calls.
 *
 * While the head grows, p->head.data may move, so header positions are kept
 * as offsets (p->hoff) and turned into slices once the head is complete; after
 * that p->head is not touched until kr_http_parser_reset().
 */
#include "http/http1.h"
#include "http/http1_syntax.h"

#include "core/err.h"

#include <string.h>

enum {
    ST_REQLINE = 0, /* waiting for the request line (leading empty lines skipped) */
    ST_HEADERS,     /* header field lines */
    ST_BODY_CL,     /* Content-Length body (also: no body, remaining 0) */
    ST_CHUNK_SIZE,  /* chunk-size [chunk-ext] CRLF */
    ST_CHUNK_DATA,  /* chunk data */
    ST_CHUNK_CR,    /* CR after chunk data */
    ST_CHUNK_LF,    /* LF after chunk data */
    ST_TRAILER,     /* trailer field lines, then the final CRLF */
    ST_DONE,
    ST_ERROR,
};

#define MAX_LEADING_EMPTY 4   /* empty lines tolerated before the request line */
#define CHUNK_LINE_MAX    256 /* chunk-size line incl. extensions and CRLF */
#define CHUNK_SIZE_DIGITS 16

static const kr_http_limits default_limits = {16384, 100, 1u << 20};

static int fail(kr_http_parser *p, int status, const char *why)
{
    p->state = ST_ERROR;
    p->status = status;
    p->error = why;
    return KR_HTTP_ERROR;
}

static unsigned max_fields(const kr_http_parser *p)
{
    return p->lim.max_headers < KR_HTTP_MAX_HEADERS ? p->lim.max_headers : KR_HTTP_MAX_HEADERS;
}

/* Head bytes still allowed (request line, headers, trailers). */
static size_t head_budget(const kr_http_parser *p)
{
    size_t used = p->head.len + p->skipped + p->trailer_bytes;
    return used >= p->lim.max_head ? 0 : p->lim.max_head - used;
}

/* The request parser's words for the shared grammar's errors (kr_h1_err). */
static const char *const syntax_error[] = {
    [KR_H1_BARE_LF] = "bare LF in request",
    [KR_H1_BARE_CR] = "bare CR in request",
    [KR_H1_OBS_FOLD] = "obsolete line folding",
    [KR_H1_NO_COLON] = "header field without colon",
    [KR_H1_SPACE_IN_NAME] = "whitespace before colon in header field",
    [KR_H1_BAD_NAME] = "invalid character in header name",
    [KR_H1_EMPTY_NAME] = "empty header name",
    [KR_H1_NUL_IN_VALUE] = "NUL in header value",
    [KR_H1_CTL_IN_VALUE] = "control character in header value",
};

/* A completed line s[0..n) ending in LF: its length without CRLF, or an error. */
static const char *check_line(const char *s, size_t n, size_t *out)
{
    kr_h1_err e = kr_h1_line(s, n, out);
    return e ? syntax_error[e] : NULL;
}

/* "name ":" OWS value OWS" in s[0..n): name length, value offset/length. */
static const char *parse_field(const char *s, size_t n, size_t *name_n, size_t *val_off,
                               size_t *val_n)
{
    kr_h1_err e = kr_h1_field(s, n, name_n, val_off, val_n);
    return e ? syntax_error[e] : NULL;
}

/* The request line: head.data[0..n). Records lengths; pointers come later. */
static int parse_request_line(kr_http_parser *p, size_t n)
{
    const char *h = p->head.data;
    kr_http_req *r = &p->req;
    size_t i = 0;
    while (i < n && kr_h1_tchar((unsigned char)h[i]))
        i++;
    if (i == 0 || i == n || h[i] != ' ') return fail(p, 400, "malformed request method");
    r->method.n = i;
    size_t t0 = ++i;
    while (i < n && h[i] != ' ') {
        unsigned char c = (unsigned char)h[i];
        if (c < 0x21 || c > 0x7e) return fail(p, 400, "invalid character in request target");
        i++;
    }
    if (i == t0) return fail(p, 400, "malformed request line");
    if (i == n) return fail(p, 400, "missing HTTP version");
    r->target.n = i - t0;

    kr_slice method = {h, r->method.n}, target = {h + t0, r->target.n};
    if (target.p[0] == '/') {
        const char *q = memchr(target.p, '?', target.n);
        if (memchr(target.p, '#', target.n)) return fail(p, 400, "fragment in request target");
        r->path.n = q ? (size_t)(q - target.p) : target.n;
        r->query.n = q ? target.n - r->path.n - 1 : 0;
    } else if (kr_slice_eq(target, "*")) {
        if (!kr_slice_eq(method, "OPTIONS")) return fail(p, 400, "asterisk target needs OPTIONS");
        r->path.n = 1;
        r->query.n = 0;
    } else {
        return fail(p, 400, "request target must be origin-form");
    }

    const char *v = h + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return fail(p, 400, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(p, 505, "HTTP version not supported");
    r->minor = v[7] - '0';
    return KR_HTTP_AGAIN;
}

/* The empty line ending the head has been seen: set slices, check framing. */
static int end_of_head(kr_http_parser *p)
{
    kr_http_req *r = &p->req;
    const char *h = p->head.data;
    r->method.p = h;
    r->target.p = h + r->method.n + 1;
    r->path.p = r->target.p;
    r->query.p = r->query.n ? r->path.p + r->path.n + 1 : r->target.p + r->target.n;
    for (unsigned k = 0; k < r->nheaders; k++) {
        r->headers[k].name.p = h + p->hoff[k][0];
        r->headers[k].value.p = h + p->hoff[k][1];
    }

    unsigned hosts = 0, cls = 0, tes = 0;
    const kr_http_header *te = NULL;
    bool close = false, keep = false;
    for (unsigned k = 0; k < r->nheaders; k++) {
        const kr_http_header *f = &r->headers[k];
        if (kr_slice_eq_ci(f->name, "host")) {
            if (++hosts > 1) return fail(p, 400, "multiple Host headers");
        } else if (kr_slice_eq_ci(f->name, "content-length")) {
            if (++cls > 1) return fail(p, 400, "multiple Content-Length headers");
            if (kr_parse_u64(f->value.p, f->value.n, &r->content_length) != 0)
                return fail(p, 400, "invalid Content-Length");
            r->has_length = true;
        } else if (kr_slice_eq_ci(f->name, "transfer-encoding")) {
            if (++tes > 1) return fail(p, 400, "multiple Transfer-Encoding headers");
            te = f;
        } else if (kr_slice_eq_ci(f->name, "connection")) {
            close = close || kr_h1_has_token(f->value, "close");
            keep = keep || kr_h1_has_token(f->value, "keep-alive");
        } else if (kr_slice_eq_ci(f->name, "expect")) {
            /* RFC 9110 10.1.1: ignored in HTTP/1.0 requests */
            if (r->minor == 1 && kr_slice_eq_ci(f->value, "100-continue"))
                r->expect_continue = true;
        }
    }
    if (r->minor == 1 && hosts == 0) return fail(p, 400, "missing Host header");
    if (te) {
        if (r->has_length) return fail(p, 400, "both Content-Length and Transfer-Encoding");
        if (r->minor == 0) return fail(p, 400, "Transfer-Encoding in HTTP/1.0");
        if (te->value.n == 0) return fail(p, 400, "empty Transfer-Encoding");
        if (!kr_slice_eq_ci(te->value, "chunked"))
            return fail(p, 501, "unsupported Transfer-Encoding");
        r->chunked = true;
    }
    if (r->has_length && r->content_length > p->lim.max_body)
        return fail(p, 413, "request body too large");
    if (r->minor == 0 && !r->has_length &&
        (kr_slice_eq(r->method, "POST") || kr_slice_eq(r->method, "PUT") ||
         kr_slice_eq(r->method, "PATCH")))
        return fail(p, 400, "HTTP/1.0 request body without Content-Length");

    r->keep_alive = close ? false : (r->minor == 1 || keep);

    /* Make the (NUL-terminated) body buffer exist so req.body is never NULL. */
    if (kr_buf_append(&p->body, "", 0) != 0) return fail(p, 413, "request body too large");
    r->body = p->body.data;
    r->body_len = 0;
    if (r->chunked) {
        kr_buf_reset(&p->line);
        p->state = ST_CHUNK_SIZE;
    } else {
        p->remaining = r->has_length ? r->content_length : 0;
        p->state = ST_BODY_CL;
    }
    p->head_reported = true;
    return KR_HTTP_HEAD;
}

/* A complete head line sits in head.data[scan..len). */
static int head_line(kr_http_parser *p)
{
    const char *s = p->head.data + p->scan;
    size_t n;
    const char *why = check_line(s, p->head.len - p->scan, &n);
    if (why) return fail(p, 400, why);

    if (p->state == ST_REQLINE) {
        if (n == 0) {
            if (p->skipped >= 2 * MAX_LEADING_EMPTY)
                return fail(p, 400, "too many empty lines before request");
            p->skipped += 2;
            kr_buf_reset(&p->head);
            p->scan = 0;
            return KR_HTTP_AGAIN;
        }
        int rc = parse_request_line(p, n);
        if (rc != KR_HTTP_AGAIN) return rc;
        p->state = ST_HEADERS;
        p->scan = p->head.len;
        return KR_HTTP_AGAIN;
    }

    if (n == 0) return end_of_head(p);
    size_t name_n, voff, vn;
    why = parse_field(s, n, &name_n, &voff, &vn);
    if (why) return fail(p, 400, why);
    kr_http_req *r = &p->req;
    if (r->nheaders >= max_fields(p)) return fail(p, 431, "too many header fields");
    p->hoff[r->nheaders][0] = (uint32_t)p->scan;
    p->hoff[r->nheaders][1] = (uint32_t)(p->scan + voff);
    r->headers[r->nheaders].name.n = name_n;
    r->headers[r->nheaders].value.n = vn;
    r->nheaders++;
    p->scan = p->head.len;
    return KR_HTTP_AGAIN;
}

static int feed_head(kr_http_parser *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
        if (take > head_budget(p)) {
            *used = i + take;
            return fail(p, 431, "request head too large");
        }
        if (kr_buf_append(&p->head, data + i, take) != 0) {
            *used = i + take;
            return fail(p, 431, "request head too large");
        }
        i += take;
        if (!nl) break;
        int rc = head_line(p);
        if (rc != KR_HTTP_AGAIN) {
            *used = i;
            return rc;
        }
    }
    *used = i;
    return KR_HTTP_AGAIN;
}

/* chunk-size [chunk-ext] in s[0..n) (CRLF already removed). */
static int chunk_size_line(kr_http_parser *p, const char *s, size_t n)
{
    size_t k = 0;
    uint64_t v = 0;
    while (k < n && kr_h1_hexval((unsigned char)s[k]) >= 0) {
        if (k == CHUNK_SIZE_DIGITS) return fail(p, 400, "chunk size too long");
        v = v << 4 | (uint64_t)kr_h1_hexval((unsigned char)s[k]);
        k++;
    }
    if (k == 0 || (k < n && s[k] != ';')) return fail(p, 400, "invalid chunk size");
    for (size_t j = k; j < n; j++)
        if (!kr_h1_value_byte((unsigned char)s[j])) return fail(p, 400, "invalid chunk extension");
    if (v > p->lim.max_body || v > p->lim.max_body - p->body.len)
        return fail(p, 413, "request body too large");
    kr_buf_reset(&p->line);
    if (v == 0) {
        p->state = ST_TRAILER;
    } else {
        p->remaining = v;
        p->state = ST_CHUNK_DATA;
    }
    return KR_HTTP_AGAIN;
}

/* One trailer line in s[0..n) (CRLF removed); n == 0 ends the body. */
static int trailer_line(kr_http_parser *p, const char *s, size_t n)
{
    if (n == 0) {
        p->state = ST_DONE;
        return KR_HTTP_DONE;
    }
    size_t name_n, voff, vn;
    const char *why = parse_field(s, n, &name_n, &voff, &vn);
    if (why) return fail(p, 400, why);
    if (p->ntrailers >= max_fields(p)) return fail(p, 431, "too many trailer fields");
    p->ntrailers++;
    /* Trailer field lines count against max_head; the final empty line is
     * framing and is allowed two bytes past the budget (see feed_line). */
    if (n + 2 > head_budget(p)) return fail(p, 431, "request head too large");
    p->trailer_bytes += n + 2;
    kr_buf_reset(&p->line);
    return KR_HTTP_AGAIN;
}

/* Collects a chunk-size or trailer line; processes it once its LF arrives. */
static int feed_line(kr_http_parser *p, const char *data, size_t len, size_t *i)
{
    const char *nl = memchr(data + *i, '\n', len - *i);
    size_t take = nl ? (size_t)(nl - (data + *i)) + 1 : len - *i;
    if (p->state == ST_CHUNK_SIZE) {
        if (p->line.len + take > CHUNK_LINE_MAX) {
            *i += take;
            return fail(p, 400, "chunk size line too long");
        }
    } else if (p->line.len + take > head_budget(p) + 2) {
        *i += take;
        return fail(p, 431, "request head too large");
    }
    if (kr_buf_append(&p->line, data + *i, take) != 0) {
        *i += take;
        return fail(p, 431, "request head too large");
    }
    *i += take;
    if (!nl) return KR_HTTP_AGAIN;
    size_t n;
    const char *why = check_line(p->line.data, p->line.len, &n);
    if (why) return fail(p, 400, why);
    if (p->state == ST_CHUNK_SIZE) return chunk_size_line(p, p->line.data, n);
    return trailer_line(p, p->line.data, n);
}

static int body_append(kr_http_parser *p, const char *data, size_t n)
{
    KR_ASSERT(n <= p->remaining); /* never past the length or the chunk */
    if (kr_buf_append(&p->body, data, n) != 0) return fail(p, 413, "request body too large");
    p->remaining -= n;
    return KR_HTTP_AGAIN;
}

static int feed_body(kr_http_parser *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    int rc = KR_HTTP_AGAIN;
    while (rc == KR_HTTP_AGAIN) {
        switch (p->state) {
        case ST_BODY_CL:
        case ST_CHUNK_DATA: {
            size_t n = len - i;
            if (n > p->remaining) n = (size_t)p->remaining;
            if (n) {
                rc = body_append(p, data + i, n);
                i += n;
                if (rc != KR_HTTP_AGAIN) break;
            }
            if (p->remaining > 0) goto out; /* all input used */
            if (p->state == ST_BODY_CL) {
                p->state = ST_DONE;
                rc = KR_HTTP_DONE;
            } else {
                p->state = ST_CHUNK_CR;
            }
            break;
        }
        case ST_CHUNK_CR:
        case ST_CHUNK_LF:
            if (i == len) goto out;
            if (data[i++] != (p->state == ST_CHUNK_CR ? '\r' : '\n'))
                rc = fail(p, 400, "chunk data not followed by CRLF");
            else
                p->state = p->state == ST_CHUNK_CR ? ST_CHUNK_LF : ST_CHUNK_SIZE;
            break;
        case ST_CHUNK_SIZE:
        case ST_TRAILER:
            if (i == len) goto out;
            rc = feed_line(p, data, len, &i);
            break;
        default:
            rc = fail(p, 400, "internal parser state");
            break;
        }
    }
out:
    KR_ASSERT(i <= len);
    if (rc == KR_HTTP_DONE) {
        p->req.body = p->body.data;
        p->req.body_len = p->body.len;
    }
    *used = i;
    return rc;
}

void kr_http_parser_init(kr_http_parser *p, const kr_http_limits *lim)
{
    memset(p, 0, sizeof *p);
    p->lim = lim ? *lim : default_limits;
    kr_buf_init(&p->head, p->lim.max_head);
    kr_buf_init(&p->body, p->lim.max_body < SIZE_MAX - 1 ? (size_t)p->lim.max_body : SIZE_MAX - 1);
    /* The line buffer holds a chunk-size line or one trailer line; both are
     * capped before appending (CHUNK_LINE_MAX / the head budget). */
    size_t lmax = p->lim.max_head < SIZE_MAX - 2 ? p->lim.max_head + 2 : SIZE_MAX;
    kr_buf_init(&p->line, lmax > CHUNK_LINE_MAX ? lmax : CHUNK_LINE_MAX);
    kr_http_parser_reset(p);
}

void kr_http_parser_reset(kr_http_parser *p)
{
    memset(&p->req, 0, sizeof p->req);
    p->status = 0;
    p->error = NULL;
    p->state = ST_REQLINE;
    kr_buf_reset(&p->head);
    kr_buf_reset(&p->body);
    kr_buf_reset(&p->line);
    p->scan = 0;
    p->remaining = 0;
    p->trailer_bytes = 0;
    p->head_reported = false;
    p->skipped = 0;
    p->ntrailers = 0;
}

void kr_http_parser_free(kr_http_parser *p)
{
    kr_buf_free(&p->head);
    kr_buf_free(&p->body);
    kr_buf_free(&p->line);
}

int kr_http_feed(kr_http_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t dummy;
    if (!consumed) consumed = &dummy;
    *consumed = 0;
    if (len > 0 && !data) return fail(p, 400, "no data");
    switch (p->state) {
    case ST_ERROR:
        return KR_HTTP_ERROR;
    case ST_DONE:
        return KR_HTTP_DONE;
    case ST_REQLINE:
    case ST_HEADERS:
        return feed_head(p, data, len, consumed);
    default:
        return feed_body(p, data, len, consumed);
    }
}

const kr_http_header *kr_http_find(const kr_http_req *r, const char *name)
{
    if (!r || !name) return NULL;
    for (unsigned k = 0; k < r->nheaders; k++)
        if (kr_slice_eq_ci(r->headers[k].name, name)) return &r->headers[k];
    return NULL;
}
