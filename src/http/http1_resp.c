/*
 * http1_resp.c -- strict, bounded, incremental HTTP/1.1 response parser
 * (see http1_resp.h for the rules).
 *
 * Like the request parser (http1.c): the head is collected line by line
 * into p->head, each call looks for LF only in new bytes, each completed
 * line is checked once, and every decision is taken at a fixed byte
 * position (a cap crossed, a line completed), so the result does not
 * depend on how the input was split. Field positions are kept as 16-bit
 * offsets (the head is capped below 64 KiB) and turned into slices on
 * demand.
 */
#include "http/http1_resp.h"
#include "http/http1_syntax.h"
#include "core/err.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

enum {
    ST_STATUS = 0, /* the status line */
    ST_FIELDS,     /* header field lines */
    ST_BODY_CL,    /* Content-Length body */
    ST_BODY_EOF,   /* body until the connection closes */
    ST_CHUNK_SIZE, /* chunk-size [chunk-ext] CRLF */
    ST_CHUNK_DATA, /* chunk data */
    ST_CHUNK_CR,   /* CR after chunk data */
    ST_CHUNK_LF,   /* LF after chunk data */
    ST_TRAILER,    /* trailer field lines, then the final CRLF */
    ST_DONE,
    ST_ERROR,
};

#define CHUNK_LINE_MAX    256 /* chunk-size line with extensions and CRLF */
#define CHUNK_SIZE_DIGITS 16

static const kr_resp_limits default_limits = {16384, 100, 4096, 4};

static int fail(kr_resp_parser *p, const char *why)
{
    p->state = ST_ERROR;
    p->error = why;
    return KR_RESP_ERROR;
}

void kr_resp_parser_init(kr_resp_parser *p, const kr_resp_limits *lim)
{
    memset(p, 0, sizeof *p);
    p->lim = lim ? *lim : default_limits;
    if (p->lim.max_head > KR_RESP_MAX_HEAD) p->lim.max_head = KR_RESP_MAX_HEAD;
    if (p->lim.max_headers > KR_RESP_MAX_HEADERS) p->lim.max_headers = KR_RESP_MAX_HEADERS;
    kr_buf_init(&p->head, p->lim.max_head);
    kr_buf_init(&p->line, CHUNK_LINE_MAX > p->lim.max_trailer ? CHUNK_LINE_MAX : p->lim.max_trailer);
    p->ka_timeout_s = -1;
    p->state = ST_STATUS;
}

void kr_resp_parser_reset(kr_resp_parser *p)
{
    kr_buf head = p->head, line = p->line;
    kr_resp_limits lim = p->lim;
    kr_buf_reset(&head);
    kr_buf_reset(&line);
    memset(p, 0, offsetof(kr_resp_parser, f)); /* f[] is rewritten before it is read */
    p->remaining = 0;
    p->trailer_bytes = 0;
    p->ntrailers = 0;
    p->interim = 0;
    p->done_told = false;
    p->head = head;
    p->line = line;
    p->lim = lim;
    p->ka_timeout_s = -1;
    p->state = ST_STATUS;
}

void kr_resp_parser_free(kr_resp_parser *p)
{
    kr_buf_free(&p->head);
    kr_buf_free(&p->line);
}

/* The response parser's words for the shared grammar's errors (kr_h1_err). */
static const char *const syntax_error[] = {
    [KR_H1_BARE_LF] = "bare LF in the upstream response",
    [KR_H1_BARE_CR] = "bare CR in the upstream response",
    [KR_H1_OBS_FOLD] = "obsolete line folding in the upstream response",
    [KR_H1_NO_COLON] = "header field without colon in the upstream response",
    [KR_H1_SPACE_IN_NAME] = "invalid header name in the upstream response",
    [KR_H1_BAD_NAME] = "invalid header name in the upstream response",
    [KR_H1_EMPTY_NAME] = "empty header name in the upstream response",
    [KR_H1_NUL_IN_VALUE] = "control character in an upstream header value",
    [KR_H1_CTL_IN_VALUE] = "control character in an upstream header value",
};

/* A completed line s[0..n) ending in LF: its length without CRLF, or an error. */
static const char *check_line(const char *s, size_t n, size_t *out)
{
    kr_h1_err e = kr_h1_line(s, n, out);
    return e ? syntax_error[e] : NULL;
}

/* "name ":" OWS value OWS" in s[0..n). */
static const char *parse_field(const char *s, size_t n, size_t *name_n, size_t *val_off,
                               size_t *val_n)
{
    kr_h1_err e = kr_h1_field(s, n, name_n, val_off, val_n);
    return e ? syntax_error[e] : NULL;
}

/* "HTTP/1.x SP 3DIGIT [SP reason]" in s[0..n). */
static int parse_status_line(kr_resp_parser *p, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        return fail(p, "the upstream's status line is not HTTP/1.0 or HTTP/1.1");
    if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
        return fail(p, "the upstream's status code is invalid");
    if (n > 12) {
        if (s[12] != ' ') return fail(p, "the upstream's status code is invalid");
        for (size_t i = 13; i < n; i++)
            if (!kr_h1_value_byte((unsigned char)s[i]))
                return fail(p, "control character in the upstream's reason phrase");
    }
    p->minor = s[7] - '0';
    p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (p->status == 101) return fail(p, "the upstream switched protocols (101) unasked");
    return KR_RESP_AGAIN;
}

static kr_slice field_name(const kr_resp_parser *p, unsigned k)
{
    return (kr_slice){p->head.data + p->f[k][0], p->f[k][2]};
}

static kr_slice field_value(const kr_resp_parser *p, unsigned k)
{
    return (kr_slice){p->head.data + p->f[k][0] + p->f[k][3], p->f[k][4]};
}

/* Keep-Alive: timeout=N (a hint; anything unreadable is ignored). */
static int64_t keepalive_timeout(kr_slice v)
{
    for (size_t i = 0; i + 8 <= v.n; i++) {
        if ((i == 0 || v.p[i - 1] == ' ' || v.p[i - 1] == ',') &&
            !strncasecmp(v.p + i, "timeout=", 8)) {
            size_t j = i + 8, e = j;
            while (e < v.n && e - j < 9 && v.p[e] >= '0' && v.p[e] <= '9')
                e++;
            uint64_t t;
            if (e > j && kr_parse_u64(v.p + j, e - j, &t) == 0) return (int64_t)t;
            return -1;
        }
    }
    return -1;
}

/* The empty line ending a head: an interim one is dropped, the final one
 * decides the framing. */
static int end_of_head(kr_resp_parser *p)
{
    unsigned cls = 0, tes = 0;
    int te = -1;
    bool close = false;
    for (unsigned k = 0; k < p->nheaders; k++) {
        kr_slice name = field_name(p, k), v = field_value(p, k);
        if (kr_slice_eq_ci(name, "content-length")) {
            if (++cls > 1) return fail(p, "the upstream sent Content-Length twice");
            if (v.n == 0 || v.n > 19 || kr_parse_u64(v.p, v.n, &p->content_length) != 0)
                return fail(p, "the upstream's Content-Length is invalid");
            p->has_length = true;
        } else if (kr_slice_eq_ci(name, "transfer-encoding")) {
            if (++tes > 1) return fail(p, "the upstream sent Transfer-Encoding twice");
            te = (int)k;
        } else if (kr_slice_eq_ci(name, "connection")) {
            if (kr_h1_has_token(v, "close")) close = true;
        } else if (kr_slice_eq_ci(name, "keep-alive")) {
            p->ka_timeout_s = keepalive_timeout(v);
        }
    }
    if (te >= 0) {
        if (p->has_length) return fail(p, "the upstream sent Content-Length and Transfer-Encoding");
        if (p->minor == 0) return fail(p, "the upstream sent Transfer-Encoding in HTTP/1.0");
        if (!kr_slice_eq_ci(field_value(p, (unsigned)te), "chunked"))
            return fail(p, "the upstream's Transfer-Encoding is not chunked");
        p->chunked = true;
    }
    if (p->status < 200) {
        /* interim (100 Continue, 103 Early Hints, ...): checked, then dropped */
        if (++p->interim > p->lim.max_interim) return fail(p, "too many interim upstream responses");
        kr_buf_reset(&p->head);
        p->scan = 0;
        p->nheaders = 0;
        p->has_length = p->chunked = false;
        p->content_length = 0;
        p->ka_timeout_s = -1;
        p->state = ST_STATUS;
        return KR_RESP_AGAIN;
    }
    p->keep_alive = p->minor == 1 && !close;
    if (p->status == 204 || p->status == 304) {
        p->no_body = true;
        p->state = ST_DONE;
    } else if (p->chunked) {
        kr_buf_reset(&p->line);
        p->state = ST_CHUNK_SIZE;
    } else if (p->has_length) {
        p->remaining = p->content_length;
        p->state = p->remaining ? ST_BODY_CL : ST_DONE;
    } else {
        p->until_eof = true;
        p->keep_alive = false;
        p->state = ST_BODY_EOF;
    }
    return KR_RESP_HEAD;
}

/* A complete head line sits in head.data[scan..len). */
static int head_line(kr_resp_parser *p)
{
    const char *s = p->head.data + p->scan;
    size_t n;
    const char *why = check_line(s, p->head.len - p->scan, &n);
    if (why) return fail(p, why);
    if (p->state == ST_STATUS) {
        int rc = parse_status_line(p, s, n);
        if (rc != KR_RESP_AGAIN) return rc;
        p->status_len = (uint16_t)(n + 2);
        p->state = ST_FIELDS;
        p->scan = p->head.len;
        return KR_RESP_AGAIN;
    }
    if (n == 0) return end_of_head(p);
    size_t name_n, voff, vn;
    why = parse_field(s, n, &name_n, &voff, &vn);
    if (why) return fail(p, why);
    if (p->nheaders >= p->lim.max_headers) return fail(p, "too many upstream header fields");
    uint16_t *f = p->f[p->nheaders++];
    f[0] = (uint16_t)p->scan;
    f[1] = (uint16_t)(n + 2);
    f[2] = (uint16_t)name_n;
    f[3] = (uint16_t)voff;
    f[4] = (uint16_t)vn;
    p->scan = p->head.len;
    return KR_RESP_AGAIN;
}

static int feed_head(kr_resp_parser *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
        if (kr_buf_append(&p->head, data + i, take) != 0) {
            *used = i + take;
            return fail(p, "the upstream's response head is too large");
        }
        i += take;
        if (!nl) break;
        int rc = head_line(p);
        if (rc != KR_RESP_AGAIN) {
            *used = i;
            return rc;
        }
    }
    *used = i;
    return KR_RESP_AGAIN;
}

/* chunk-size [ chunk-ext ] in s[0..n) (CRLF removed). */
static int chunk_size_line(kr_resp_parser *p, const char *s, size_t n)
{
    size_t i = 0;
    uint64_t size = 0;
    while (i < n && kr_h1_hexval((unsigned char)s[i]) >= 0) {
        if (i >= CHUNK_SIZE_DIGITS) return fail(p, "an upstream chunk size is too large");
        size = size << 4 | (uint64_t)kr_h1_hexval((unsigned char)s[i]);
        i++;
    }
    if (i == 0) return fail(p, "an upstream chunk size is invalid");
    size_t j = i;
    while (j < n && kr_h1_ows(s[j]))
        j++;
    if (j < n) {
        if (s[j] != ';') return fail(p, "an upstream chunk size is invalid");
        for (size_t k = j; k < n; k++)
            if (!kr_h1_value_byte((unsigned char)s[k]))
                return fail(p, "control character in an upstream chunk extension");
    } else if (j != i) {
        return fail(p, "an upstream chunk size is invalid"); /* trailing whitespace, no extension */
    }
    if (size == 0) {
        kr_buf_reset(&p->line);
        p->state = ST_TRAILER;
    } else {
        p->remaining = size;
        p->state = ST_CHUNK_DATA;
    }
    return KR_RESP_AGAIN;
}

/* Collects a line into p->line: returns 1 with the line complete (LF
 * included), 0 when every byte was taken, or an error. */
static int collect_line(kr_resp_parser *p, const char *d, size_t n, size_t *used, size_t cap,
                        const char *too_long)
{
    const char *nl = memchr(d, '\n', n);
    size_t take = nl ? (size_t)(nl - d) + 1 : n;
    *used = take;
    if (p->line.len + take > cap || kr_buf_append(&p->line, d, take) != 0) return fail(p, too_long);
    return nl ? 1 : 0;
}

int kr_resp_feed(kr_resp_parser *p, const char *data, size_t len, size_t *used, kr_slice *body)
{
    *used = 0;
    if (p->state == ST_ERROR) return KR_RESP_ERROR;
    if (p->state == ST_DONE) {
        if (!p->done_told || len == 0) {
            p->done_told = true;
            return KR_RESP_DONE;
        }
        return fail(p, "the upstream sent bytes after its response");
    }
    size_t i = 0;
    if (len) p->any = true;
    for (;;) {
        switch (p->state) {
        case ST_STATUS:
        case ST_FIELDS: {
            size_t u;
            int rc = feed_head(p, data + i, len - i, &u);
            i += u;
            *used = i;
            return rc; /* AGAIN (every byte taken), HEAD (DONE comes next call) or ERROR */
        }
        case ST_BODY_CL:
        case ST_CHUNK_DATA: {
            if (p->remaining == 0) {
                p->state = p->state == ST_BODY_CL ? ST_DONE : ST_CHUNK_CR;
                continue;
            }
            if (i == len) {
                *used = i;
                return KR_RESP_AGAIN;
            }
            size_t take = len - i;
            if ((uint64_t)take > p->remaining) take = (size_t)p->remaining;
            body->p = data + i;
            body->n = take;
            KR_ASSERT(take <= p->remaining && i + take <= len);
            p->remaining -= take;
            i += take;
            *used = i;
            return KR_RESP_BODY;
        }
        case ST_BODY_EOF:
            if (i == len) {
                *used = i;
                return KR_RESP_AGAIN;
            }
            body->p = data + i;
            body->n = len - i;
            *used = len;
            return KR_RESP_BODY;
        case ST_CHUNK_CR:
        case ST_CHUNK_LF:
            if (i == len) {
                *used = i;
                return KR_RESP_AGAIN;
            }
            if (data[i] != (p->state == ST_CHUNK_CR ? '\r' : '\n')) {
                *used = i + 1;
                return fail(p, "an upstream chunk does not end in CRLF");
            }
            i++;
            if (p->state == ST_CHUNK_CR) {
                p->state = ST_CHUNK_LF;
            } else {
                kr_buf_reset(&p->line);
                p->state = ST_CHUNK_SIZE;
            }
            continue;
        case ST_CHUNK_SIZE: {
            if (i == len) {
                *used = i;
                return KR_RESP_AGAIN;
            }
            size_t u;
            int rc = collect_line(p, data + i, len - i, &u, CHUNK_LINE_MAX,
                                  "an upstream chunk-size line is too long");
            i += u;
            *used = i;
            if (rc < 0) return rc;
            if (rc == 0) return KR_RESP_AGAIN;
            size_t n;
            const char *why = check_line(p->line.data, p->line.len, &n);
            if (why) return fail(p, why);
            if ((rc = chunk_size_line(p, p->line.data, n)) < 0) return rc;
            continue;
        }
        case ST_TRAILER: {
            if (i == len) {
                *used = i;
                return KR_RESP_AGAIN;
            }
            KR_ASSERT(p->trailer_bytes <= p->lim.max_trailer);
            size_t u, budget = p->lim.max_trailer - p->trailer_bytes;
            int rc = collect_line(p, data + i, len - i, &u, budget,
                                  "the upstream's trailer section is too large");
            i += u;
            *used = i;
            if (rc < 0) return rc;
            if (rc == 0) return KR_RESP_AGAIN;
            size_t n;
            const char *why = check_line(p->line.data, p->line.len, &n);
            if (why) return fail(p, why);
            p->trailer_bytes += p->line.len;
            if (n == 0) {
                p->state = ST_DONE;
                continue;
            }
            size_t name_n, voff, vn;
            if ((why = parse_field(p->line.data, n, &name_n, &voff, &vn))) return fail(p, why);
            if (++p->ntrailers > p->lim.max_headers) return fail(p, "too many upstream trailer fields");
            kr_buf_reset(&p->line); /* trailers are never relayed */
            continue;
        }
        case ST_DONE:
            *used = i;
            p->done_told = true;
            return KR_RESP_DONE;
        default:
            return fail(p, "upstream parser state");
        }
    }
}

int kr_resp_eof(kr_resp_parser *p)
{
    if (p->state == ST_BODY_EOF || p->state == ST_DONE ||
        (p->state == ST_BODY_CL && p->remaining == 0)) {
        p->state = ST_DONE;
        return KR_RESP_DONE;
    }
    if (p->state != ST_ERROR)
        fail(p, p->any ? "the upstream closed the connection before its response ended"
                       : "the upstream closed the connection without answering");
    return KR_RESP_ERROR;
}

kr_slice kr_resp_status_line(const kr_resp_parser *p)
{
    return (kr_slice){p->head.data, p->status_len};
}

void kr_resp_field_at(const kr_resp_parser *p, unsigned i, kr_resp_field *f)
{
    const uint16_t *x = p->f[i];
    const char *l = p->head.data + x[0];
    f->line = (kr_slice){l, x[1]};
    f->name = (kr_slice){l, x[2]};
    f->value = (kr_slice){l + x[3], x[4]};
}

bool kr_resp_in_body(const kr_resp_parser *p)
{
    return p->state >= ST_BODY_CL && p->state <= ST_TRAILER;
}
