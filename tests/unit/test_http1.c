/*
 * test_http1.c -- the proxy's strict HTTP/1.1 request parser.
 *
 * Sample tables (valid, invalid with the exact status, incomplete) are run
 * all at once and then at every split point and one byte at a time; the
 * outcome must not depend on the split. Every feed goes through a scratch
 * copy that is clobbered and freed right after the call, so anything the
 * parser keeps must live in its own buffers.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

static const kr_http_limits LIM = {8192, 64, 65536};
static const kr_http_limits SMALL = {128, 4, 16};

/* ---- running a sample ---------------------------------------------------- */

typedef struct outcome {
    int rc; /* KR_HTTP_DONE, KR_HTTP_ERROR, or KR_HTTP_AGAIN when input ran out */
    int status;
    const char *error;
    size_t consumed;
    int heads;
    char method[32], target[256], path[256], query[256];
    int minor;
    unsigned nheaders;
    bool keep_alive, expect_continue, chunked, has_length;
    uint64_t content_length;
    char body[1024];
    size_t body_len;
} outcome;

static void cpy(char *dst, size_t cap, kr_slice s)
{
    cr_assert_lt(s.n, cap);
    memcpy(dst, s.p, s.n);
    dst[s.n] = 0;
}

/* Pointer p[0..n) lies inside buffer b. */
static bool inside(const kr_buf *b, const char *p, size_t n)
{
    return b->data && p >= b->data && n <= b->len && (size_t)(p - b->data) <= b->len - n;
}

static void check_slices(const kr_http_parser *p)
{
    const kr_http_req *r = &p->req;
    cr_assert(inside(&p->head, r->method.p, r->method.n));
    cr_assert(inside(&p->head, r->target.p, r->target.n));
    cr_assert(inside(&p->head, r->path.p, r->path.n));
    cr_assert(inside(&p->head, r->query.p, r->query.n));
    for (unsigned k = 0; k < r->nheaders; k++) {
        cr_assert(inside(&p->head, r->headers[k].name.p, r->headers[k].name.n));
        cr_assert(inside(&p->head, r->headers[k].value.p, r->headers[k].value.n));
    }
}

/* One call, through a scratch copy that is clobbered afterwards. */
static int feed(kr_http_parser *p, const char *d, size_t n, size_t *c)
{
    char *scratch = malloc(n + 1);
    cr_assert_not_null(scratch);
    if (n) memcpy(scratch, d, n);
    *c = (size_t)-1;
    int rc = kr_http_feed(p, scratch, n, c);
    cr_assert_leq(*c, n);
    memset(scratch, 'Z', n + 1);
    free(scratch);
    return rc;
}

static void record(const kr_http_parser *p, outcome *o)
{
    const kr_http_req *r = &p->req;
    if (o->rc == KR_HTTP_ERROR) {
        o->status = p->status;
        o->error = p->error;
        cr_assert_not_null(p->error);
        return;
    }
    if (o->rc != KR_HTTP_DONE) return;
    check_slices(p);
    cpy(o->method, sizeof o->method, r->method);
    cpy(o->target, sizeof o->target, r->target);
    cpy(o->path, sizeof o->path, r->path);
    cpy(o->query, sizeof o->query, r->query);
    o->minor = r->minor;
    o->nheaders = r->nheaders;
    o->keep_alive = r->keep_alive;
    o->expect_continue = r->expect_continue;
    o->chunked = r->chunked;
    o->has_length = r->has_length;
    o->content_length = r->content_length;
    cr_assert_not_null(r->body);
    cr_assert_eq(r->body[r->body_len], 0, "body not NUL-terminated");
    cr_assert(inside(&p->body, r->body, r->body_len));
    cpy(o->body, sizeof o->body, (kr_slice){r->body, r->body_len});
    o->body_len = r->body_len;
}

/*
 * Feeds d[0..n) arriving in chunks that end at ends[0..nends) (the last is n),
 * like a connection would: after HEAD the rest of the arrival is fed again
 * (possibly zero bytes), after AGAIN the next arrival is awaited. Stops at the
 * first DONE or ERROR.
 */
static void run_chunks(const char *d, size_t n, const kr_http_limits *lim, const size_t *ends,
                       size_t nends, outcome *o)
{
    kr_http_parser p;
    kr_http_parser_init(&p, lim);
    memset(o, 0, sizeof *o);
    o->rc = KR_HTTP_AGAIN;
    size_t pos = 0;
    for (size_t k = 0; k < nends && o->rc == KR_HTTP_AGAIN; k++) {
        cr_assert_leq(ends[k], n);
        for (;;) {
            size_t c;
            int rc = feed(&p, d + pos, ends[k] - pos, &c);
            pos += c;
            if (rc == KR_HTTP_HEAD) {
                o->heads++;
                cr_assert_eq(o->heads, 1, "HEAD reported twice");
                check_slices(&p);
                continue;
            }
            if (rc == KR_HTTP_AGAIN) {
                cr_assert_eq(pos, ends[k], "AGAIN without consuming everything");
                break;
            }
            cr_assert(rc == KR_HTTP_DONE || rc == KR_HTTP_ERROR, "unexpected rc %d", rc);
            o->rc = rc;
            break;
        }
    }
    o->consumed = pos;
    record(&p, o);
    if (o->rc == KR_HTTP_ERROR) { /* sticky */
        size_t c;
        cr_assert_eq(feed(&p, "GET / HTTP/1.1\r\n", 16, &c), KR_HTTP_ERROR);
        cr_assert_eq(c, 0);
        cr_assert_eq(feed(&p, "", 0, &c), KR_HTTP_ERROR);
        cr_assert_eq(p.status, o->status);
    }
    kr_http_parser_free(&p);
}

static void run_whole(const char *d, size_t n, const kr_http_limits *lim, outcome *o)
{
    size_t end = n;
    run_chunks(d, n, lim, &end, 1, o);
}

static void same_outcome(const outcome *a, const outcome *b, const char *name, const char *how)
{
    cr_assert_eq(a->rc, b->rc, "%s (%s): rc %d vs %d", name, how, a->rc, b->rc);
    cr_assert_eq(a->status, b->status, "%s (%s): status %d vs %d", name, how, a->status, b->status);
    cr_assert_eq(a->error, b->error, "%s (%s): error '%s' vs '%s'", name, how,
                 a->error ? a->error : "", b->error ? b->error : "");
    cr_assert_eq(a->heads, b->heads, "%s (%s): heads", name, how);
    if (a->rc == KR_HTTP_ERROR) return; /* consumed is meaningless after an error */
    cr_assert_eq(a->consumed, b->consumed, "%s (%s): consumed %zu vs %zu", name, how, a->consumed,
                 b->consumed);
    cr_assert_str_eq(a->method, b->method, "%s (%s)", name, how);
    cr_assert_str_eq(a->target, b->target, "%s (%s)", name, how);
    cr_assert_str_eq(a->path, b->path, "%s (%s)", name, how);
    cr_assert_str_eq(a->query, b->query, "%s (%s)", name, how);
    cr_assert_eq(a->minor, b->minor, "%s (%s)", name, how);
    cr_assert_eq(a->nheaders, b->nheaders, "%s (%s)", name, how);
    cr_assert_eq(a->keep_alive, b->keep_alive, "%s (%s)", name, how);
    cr_assert_eq(a->expect_continue, b->expect_continue, "%s (%s)", name, how);
    cr_assert_eq(a->chunked, b->chunked, "%s (%s)", name, how);
    cr_assert_eq(a->has_length, b->has_length, "%s (%s)", name, how);
    cr_assert_eq(a->content_length, b->content_length, "%s (%s)", name, how);
    cr_assert_eq(a->body_len, b->body_len, "%s (%s)", name, how);
    cr_assert_eq(memcmp(a->body, b->body, a->body_len), 0, "%s (%s): body", name, how);
}

/* ---- sample tables -------------------------------------------------------- */

typedef struct sample {
    const char *name;
    const char *d;
    size_t n;
    int status;                /* invalid: expected status; valid: 0 */
    const char *body;          /* valid: expected decoded body */
    const kr_http_limits *lim; /* NULL: LIM */
} sample;

/* clang-format off */
#define OK(nm, body, s)      {nm, s, sizeof(s) - 1, 0, body, NULL}
#define BAD(nm, st, s)       {nm, s, sizeof(s) - 1, st, NULL, NULL}
#define BADL(nm, st, lim, s) {nm, s, sizeof(s) - 1, st, NULL, lim}
#define H11                  " HTTP/1.1\r\nHost: a\r\n"
#define CH                   "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n"
/* clang-format on */

static const sample valid[] = {
    OK("simple GET", "", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    OK("GET with query", "", "GET /v1/models?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"),
    OK("POST with CL", "{\"a\":1}",
       "POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n{\"a\":1}"),
    OK("POST CL 0", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    OK("CL leading zeros", "abc", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc"),
    OK("CL with OWS", "abcd", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t 4 \t\r\n\r\nabcd"),
    OK("chunked ext+trailers", "hello world",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;name=val\r\nhello\r\n6;a;b=\"q r\"\r\n world\r\n0;last\r\n"
       "X-Trailer: t\r\nX-Empty:\r\n\r\n"),
    OK("chunked upper hex", "0123456789",
       "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
       "chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"),
    OK("chunked 16 digits", "hello",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0000000000000005\r\nhello\r\n0000\r\n\r\n"),
    OK("chunked CRLF in data", "\r\n\r\n",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
       "chunked\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n"),
    OK("TE case and OWS", "xy",
       "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  CHUNKED \t\r\n\r\n2\r\nxy\r\n0\r\n\r\n"),
    OK("HTTP/1.0 GET no Host", "", "GET /x HTTP/1.0\r\n\r\n"),
    OK("HTTP/1.0 POST with CL", "hi", "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"),
    OK("HTTP/1.0 DELETE no CL", "", "DELETE /x HTTP/1.0\r\n\r\n"),
    OK("leading empty lines", "", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    OK("OPTIONS *", "", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    OK("empty values", "", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\nX-B: \t \r\n\r\n"),
    OK("obs-text value", "", "GET / HTTP/1.1\r\nHost: a\r\nX-U: caf\xc3\xa9 \xff\r\n\r\n"),
    OK("inner whitespace", "", "GET / HTTP/1.1\r\nHost: a\r\nX: a \t b\r\n\r\n"),
    OK("tchar method", "", "M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n"),
    OK("expect continue", "z",
       "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nz"),
    OK("connection list", "", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\n\r\n"),
    OK("empty Host", "", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
};

static const sample invalid[] = {
    /* line endings */
    BAD("bare LF request line", 400, "GET / HTTP/1.1\nHost: a\r\n\r\n"),
    BAD("bare LF header", 400, "GET / HTTP/1.1\r\nHost: a\n\r\n"),
    BAD("bare LF end of head", 400, "GET / HTTP/1.1\r\nHost: a\r\n\n"),
    BAD("bare LF leading", 400, "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("bare CR request line", 400, "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("bare CR header value", 400, "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
    BAD("bare CR before CRLF", 400, "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"),
    BAD("bare CR as empty line", 400, "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"),
    BAD("too many empty lines", 400, "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    /* request line */
    BAD("empty method", 400, " / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("bad method char", 400, "G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("method only", 400, "GET\r\nHost: a\r\n\r\n"),
    BAD("two spaces after method", 400, "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("two spaces before version", 400, "GET /  HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("space after version", 400, "GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    BAD("tab separator", 400, "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("missing version", 400, "GET /\r\nHost: a\r\n\r\n"),
    BAD("absolute-form", 400, "GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("authority-form", 400, "CONNECT evil:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("asterisk with GET", 400, "GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("asterisk plus path", 400, "OPTIONS */x HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("target DEL", 400, "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("target high byte", 400, "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("target NUL", 400, "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("target fragment", 400, "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("lowercase http", 400, "GET / http/1.1\r\nHost: a\r\n\r\n"),
    BAD("version x", 400, "GET / HTTP/1.x\r\nHost: a\r\n\r\n"),
    BAD("version short", 400, "GET / HTTP/1\r\nHost: a\r\n\r\n"),
    BAD("version long", 400, "GET / HTTP/11.1\r\nHost: a\r\n\r\n"),
    BAD("version HTTX", 400, "GET / HTTX/1.1\r\nHost: a\r\n\r\n"),
    BAD("HTTP/2.0", 505, "GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    BAD("HTTP/1.2", 505, "GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
    BAD("HTTP/0.9", 505, "GET / HTTP/0.9\r\nHost: a\r\n\r\n"),
    BAD("HTTP/3.0", 505, "GET / HTTP/3.0\r\n\r\n"),
    /* header syntax */
    BAD("space before colon", 400, "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    BAD("tab before colon", 400, "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
    BAD("TE space before colon", 400, "POST /" H11 "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    BAD("no colon", 400, "GET / HTTP/1.1\r\nHost a\r\n\r\n"),
    BAD("empty name", 400, "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n"),
    BAD("bad name char", 400, "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"),
    BAD("name high byte", 400, "GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: a\r\n\r\n"),
    BAD("NUL in value", 400, "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n"),
    BAD("control in value", 400, "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"),
    BAD("DEL in value", 400, "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"),
    BAD("VT before TE value", 400,
        "POST /" H11 "Transfer-Encoding:\x0b"
        "chunked\r\n\r\n0\r\n\r\n"),
    BAD("obs-fold SP", 400, "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
    BAD("obs-fold HTAB", 400, "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
    BAD("whitespace first line", 400, "GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    /* Host */
    BAD("missing Host", 400, "GET / HTTP/1.1\r\nX: a\r\n\r\n"),
    BAD("two Host", 400, "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
    BAD("two Host same", 400, "GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n"),
    BAD("two Host 1.0", 400, "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
    /* Content-Length */
    BAD("CL negative", 400, "POST /" H11 "Content-Length: -1\r\n\r\n"),
    BAD("CL plus", 400, "POST /" H11 "Content-Length: +5\r\n\r\nhello"),
    BAD("CL list", 400, "POST /" H11 "Content-Length: 1,1\r\n\r\nx"),
    BAD("CL inner space", 400, "POST /" H11 "Content-Length: 1 1\r\n\r\nx"),
    BAD("CL hex", 400, "POST /" H11 "Content-Length: 0x10\r\n\r\n"),
    BAD("CL empty", 400, "POST /" H11 "Content-Length:\r\n\r\n"),
    BAD("CL letters", 400, "POST /" H11 "Content-Length: abc\r\n\r\n"),
    BAD("CL overflow", 400, "POST /" H11 "Content-Length: 99999999999999999999999\r\n\r\n"),
    BAD("CL u64 overflow", 400, "POST /" H11 "Content-Length: 18446744073709551616\r\n\r\n"),
    BAD("two CL equal", 400, "POST /" H11 "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
    BAD("two CL differ", 400, "POST /" H11 "Content-Length: 1\r\ncontent-length: 2\r\n\r\nxy"),
    /* Transfer-Encoding */
    BAD("CL then TE", 400,
        "POST /" H11 "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
    BAD("TE then CL", 400,
        "POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX"),
    BAD("CL and TE gzip", 400,
        "POST /" H11 "Transfer-Encoding: gzip\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX"),
    BAD("two TE", 400,
        "POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    BAD("TE in 1.0", 400, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    BAD("TE empty", 400, "POST /" H11 "Transfer-Encoding:\r\n\r\n"),
    BAD("TE gzip", 501, "POST /" H11 "Transfer-Encoding: gzip\r\n\r\n"),
    BAD("TE identity", 501, "POST /" H11 "Transfer-Encoding: identity\r\n\r\n"),
    BAD("TE gzip, chunked", 501, "POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    BAD("TE chunked, chunked", 501,
        "POST /" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    BAD("TE chunked param", 501, "POST /" H11 "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"),
    BAD("TE xchunked", 501, "POST /" H11 "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    /* HTTP/1.0 bodies */
    BAD("1.0 POST no CL", 400, "POST / HTTP/1.0\r\n\r\nbody"),
    BAD("1.0 PUT no CL", 400, "PUT / HTTP/1.0\r\nHost: a\r\n\r\n"),
    BAD("1.0 PATCH no CL", 400, "PATCH / HTTP/1.0\r\n\r\n"),
    /* chunked framing */
    BAD("chunk non-hex", 400, CH "g\r\nx\r\n0\r\n\r\n"),
    BAD("chunk empty size", 400, CH "\r\n0\r\n\r\n"),
    BAD("chunk leading space", 400, CH " 5\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk trailing space", 400, CH "5 \r\nhello\r\n0\r\n\r\n"),
    BAD("chunk space before ext", 400, CH "5 ;x\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk 17 digits", 400, CH "00000000000000005\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk overflow", 400, CH "10000000000000000\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk negative", 400, CH "-5\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk 0x", 400, CH "0x5\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk size bare LF", 400, CH "5\nhello\r\n0\r\n\r\n"),
    BAD("chunk size bare CR", 400, CH "5\rX\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk data no CRLF", 400, CH "5\r\nhelloX\r\n0\r\n\r\n"),
    BAD("chunk data LF only", 400, CH "5\r\nhello\n0\r\n\r\n"),
    BAD("chunk data CR only", 400, CH "5\r\nhello\r0\r\n\r\n"),
    BAD("chunk ext NUL", 400, CH "5;a\0\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk ext bare LF", 400, CH "5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n"),
    BAD("last chunk bare LF end", 400, CH "0\r\n\n"),
    BAD("trailer obs-fold", 400, CH "0\r\nX: a\r\n b\r\n\r\n"),
    BAD("trailer no colon", 400, CH "0\r\nX a\r\n\r\n"),
    BAD("trailer bare LF", 400, CH "0\r\nX: a\n\r\n"),
    BAD("trailer NUL", 400, CH "0\r\nX: a\0\r\n\r\n"),
    BAD("chunk line too long", 400,
        CH "5;"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "\r\nhello\r\n0\r\n\r\n"),
    /* caps */
    BAD("CL over max_body", 413, "POST /" H11 "Content-Length: 65537\r\n\r\n"),
    BAD("chunk over max_body", 413, CH "10001\r\n"),
    BAD("chunk max u64", 413, CH "ffffffffffffffff\r\n"),
    BADL("chunks sum over max_body", 413, &SMALL,
         CH "8\r\n12345678\r\n9\r\n123456789\r\n0\r\n\r\n"),
    BADL("head over max_head", 431, &SMALL,
         "GET /"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx HTTP/1.1\r\nHost: "
         "a\r\n\r\n"),
    BADL("too many headers", 431, &SMALL,
         "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"),
    BADL("huge line no LF", 431, &SMALL,
         "GET / HTTP/1.1\r\nHost: a\r\nX: "
         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"),
    BADL("bare CR beyond max_head", 431, &SMALL,
         "GET / HTTP/1.1\r\nHost: a\r\nX: \r"
         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n\r\n"),
    BADL("trailers over max_head", 431, &SMALL,
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         "X-T: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n\r\n"),
};

/* Valid prefixes: the parser must ask for more. */
static const sample incomplete[] = {
    OK("empty input", "", ""),
    OK("only empty lines", "", "\r\n\r\n"),
    OK("request line only", "", "GET / HTTP/1.1\r\n"),
    OK("head without end", "", "GET / HTTP/1.1\r\nHost: a\r\n"),
    OK("head ends in CR", "", "GET / HTTP/1.1\r\nHost: a\r\n\r"),
    OK("CL body short", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhell"),
    OK("chunk data short", "", CH "5\r\nhel"),
    OK("chunk data CR only", "", CH "5\r\nhello\r"),
    OK("chunk no last", "", CH "5\r\nhello\r\n"),
    OK("no final CRLF", "", CH "0\r\nX: y\r\n"),
    OK("final CR only", "", CH "0\r\n\r"),
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const kr_http_limits *lim_of(const sample *s)
{
    return s->lim ? s->lim : &LIM;
}

/* ---- tables, all at once ------------------------------------------------- */

Test(http1, valid_samples)
{
    for (size_t i = 0; i < N(valid); i++) {
        const sample *s = &valid[i];
        outcome o;
        run_whole(s->d, s->n, lim_of(s), &o);
        cr_assert_eq(o.rc, KR_HTTP_DONE, "%s: rc %d status %d (%s)", s->name, o.rc, o.status,
                     o.error ? o.error : "");
        cr_assert_eq(o.heads, 1, "%s", s->name);
        cr_assert_eq(o.consumed, s->n, "%s: consumed %zu of %zu", s->name, o.consumed, s->n);
        cr_assert_eq(o.body_len, strlen(s->body), "%s", s->name);
        cr_assert_str_eq(o.body, s->body, "%s", s->name);
    }
}

Test(http1, invalid_samples_exact_status)
{
    for (size_t i = 0; i < N(invalid); i++) {
        const sample *s = &invalid[i];
        outcome o;
        run_whole(s->d, s->n, lim_of(s), &o);
        cr_assert_eq(o.rc, KR_HTTP_ERROR, "%s: rc %d", s->name, o.rc);
        cr_assert_eq(o.status, s->status, "%s: status %d, want %d (%s)", s->name, o.status,
                     s->status, o.error);
        cr_assert_gt(strlen(o.error), 0, "%s", s->name);
    }
}

Test(http1, incomplete_samples_ask_for_more)
{
    for (size_t i = 0; i < N(incomplete); i++) {
        const sample *s = &incomplete[i];
        outcome o;
        run_whole(s->d, s->n, lim_of(s), &o);
        cr_assert_eq(o.rc, KR_HTTP_AGAIN, "%s: rc %d (%s)", s->name, o.rc, o.error ? o.error : "");
        cr_assert_eq(o.consumed, s->n, "%s", s->name);
    }
}

/* ---- splits ---------------------------------------------------------------- */

static void split_check(const sample *s)
{
    outcome whole, o;
    run_whole(s->d, s->n, lim_of(s), &whole);
    size_t *ends = malloc((s->n + 3) * sizeof *ends);
    cr_assert_not_null(ends);
    char how[64];
    for (size_t k = 0; k <= s->n; k++) { /* k == 0 and k == n: an empty arrival */
        ends[0] = k;
        ends[1] = s->n;
        run_chunks(s->d, s->n, lim_of(s), ends, 2, &o);
        snprintf(how, sizeof how, "split at %zu", k);
        same_outcome(&whole, &o, s->name, how);
    }
    for (size_t k = 0; k < s->n; k++)
        ends[k] = k + 1;
    run_chunks(s->d, s->n, lim_of(s), ends, s->n, &o);
    same_outcome(&whole, &o, s->name, "byte at a time");
    /* three pieces at a few spots */
    for (size_t a = 1; a + 2 < s->n; a += 7)
        for (size_t b = a + 1; b < s->n; b += 5) {
            ends[0] = a;
            ends[1] = b;
            ends[2] = s->n;
            run_chunks(s->d, s->n, lim_of(s), ends, 3, &o);
            snprintf(how, sizeof how, "split at %zu,%zu", a, b);
            same_outcome(&whole, &o, s->name, how);
        }
    free(ends);
}

Test(http1, split_valid_samples)
{
    for (size_t i = 0; i < N(valid); i++)
        split_check(&valid[i]);
}

Test(http1, split_invalid_samples)
{
    for (size_t i = 0; i < N(invalid); i++)
        split_check(&invalid[i]);
}

Test(http1, split_incomplete_samples)
{
    for (size_t i = 0; i < N(incomplete); i++)
        split_check(&incomplete[i]);
}

/* ---- fields and protocol --------------------------------------------------- */

Test(http1, request_fields)
{
    static const char req[] = "PATCH /v1/x/y?a=1&b=?c HTTP/1.1\r\nHost: api.example\r\n"
                              "X-Key:   secret value \t\r\nAccept: a\r\nx-key: second\r\n\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c;
    cr_assert_eq(feed(&p, req, sizeof req - 1, &c), KR_HTTP_HEAD);
    cr_assert_eq(c, sizeof req - 1);
    const kr_http_req *r = &p.req;
    cr_assert(kr_slice_eq(r->method, "PATCH"));
    cr_assert(kr_slice_eq(r->target, "/v1/x/y?a=1&b=?c"));
    cr_assert(kr_slice_eq(r->path, "/v1/x/y"));
    cr_assert(kr_slice_eq(r->query, "a=1&b=?c"));
    cr_assert_eq(r->minor, 1);
    cr_assert_eq(r->nheaders, 4);
    cr_assert(kr_slice_eq(r->headers[1].name, "X-Key"), "case preserved");
    cr_assert(kr_slice_eq(r->headers[1].value, "secret value"), "OWS trimmed");
    cr_assert(kr_slice_eq(r->headers[0].value, "api.example"));
    const kr_http_header *h = kr_http_find(r, "x-KEY");
    cr_assert_eq(h, &r->headers[1], "first match, case-insensitive");
    cr_assert_null(kr_http_find(r, "X-Ke"));
    cr_assert_null(kr_http_find(r, "Content-Length"));
    cr_assert_not(r->has_length);
    cr_assert_not(r->chunked);
    cr_assert(r->keep_alive);
    cr_assert_not(r->expect_continue);
    check_slices(&p);
    cr_assert_eq(feed(&p, "", 0, &c), KR_HTTP_DONE, "no body: DONE on an empty call");
    cr_assert_eq(c, 0);
    cr_assert_not_null(r->body);
    cr_assert_eq(r->body_len, 0);
    cr_assert_eq(r->body[0], 0);
    kr_http_parser_free(&p);
}

Test(http1, no_query_and_asterisk)
{
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c;
    static const char a[] = "GET /plain HTTP/1.0\r\n\r\n";
    cr_assert_eq(feed(&p, a, sizeof a - 1, &c), KR_HTTP_HEAD);
    cr_assert(kr_slice_eq(p.req.path, "/plain"));
    cr_assert_eq(p.req.query.n, 0);
    cr_assert_eq(p.req.minor, 0);
    cr_assert_not(p.req.keep_alive);
    kr_http_parser_reset(&p);
    static const char b[] = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    cr_assert_eq(feed(&p, b, sizeof b - 1, &c), KR_HTTP_HEAD);
    cr_assert(kr_slice_eq(p.req.target, "*"));
    cr_assert(kr_slice_eq(p.req.path, "*"));
    cr_assert_eq(p.req.query.n, 0);
    static const char e[] = "GET /?x HTTP/1.1\r\nHost: h\r\n\r\n";
    kr_http_parser_reset(&p);
    cr_assert_eq(feed(&p, e, sizeof e - 1, &c), KR_HTTP_HEAD);
    cr_assert(kr_slice_eq(p.req.path, "/"));
    cr_assert(kr_slice_eq(p.req.query, "x"));
    kr_http_parser_free(&p);
}

Test(http1, post_content_length_protocol)
{
    static const char head[] = "POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c;
    /* head plus part of the body: HEAD consumes exactly the head */
    char buf[128];
    memcpy(buf, head, sizeof head - 1);
    memcpy(buf + sizeof head - 1, "hello", 5);
    cr_assert_eq(feed(&p, buf, sizeof head - 1 + 5, &c), KR_HTTP_HEAD);
    cr_assert_eq(c, sizeof head - 1);
    cr_assert(p.req.has_length);
    cr_assert_eq(p.req.content_length, 11);
    cr_assert_eq(feed(&p, "hello", 5, &c), KR_HTTP_AGAIN);
    cr_assert_eq(c, 5);
    cr_assert_eq(feed(&p, "", 0, &c), KR_HTTP_AGAIN);
    cr_assert_eq(feed(&p, " worldGET", 9, &c), KR_HTTP_DONE);
    cr_assert_eq(c, 6, "bytes after the body are not consumed");
    cr_assert_eq(p.req.body_len, 11);
    cr_assert_str_eq(p.req.body, "hello world");
    cr_assert_eq(feed(&p, "x", 1, &c), KR_HTTP_DONE, "DONE until reset");
    cr_assert_eq(c, 0);
    kr_http_parser_free(&p);
}

Test(http1, chunked_with_extensions_and_trailers)
{
    static const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                              "X-Before: 1\r\n\r\n"
                              "3;ext=1;quoted=\"a b\"\r\nabc\r\n"
                              "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                              "0;final\r\nX-Sum: deadbeef\r\nX-More:  m \r\n\r\nNEXT";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c, off = 0, n = sizeof req - 1;
    cr_assert_eq(feed(&p, req, n, &c), KR_HTTP_HEAD);
    off += c;
    cr_assert(p.req.chunked);
    cr_assert_not(p.req.has_length);
    cr_assert_eq(p.req.nheaders, 3);
    cr_assert_eq(feed(&p, req + off, n - off, &c), KR_HTTP_DONE);
    off += c;
    cr_assert_eq(n - off, 4, "pipelined bytes left");
    cr_assert_str_eq(p.req.body, "abcabcdefghijklmnopqrstuvwxyz");
    cr_assert_eq(p.req.body_len, 29);
    cr_assert_eq(p.req.nheaders, 3, "trailers are discarded");
    cr_assert_null(kr_http_find(&p.req, "X-Sum"));
    kr_http_parser_free(&p);
}

Test(http1, keep_alive_rules)
{
    static const struct {
        const char *req;
        bool keep;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: ,, close ,\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: TE,\tKEEP-ALIVE\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n", false},
    };
    for (size_t i = 0; i < N(cases); i++) {
        outcome o;
        run_whole(cases[i].req, strlen(cases[i].req), &LIM, &o);
        cr_assert_eq(o.rc, KR_HTTP_DONE, "case %zu", i);
        cr_assert_eq(o.keep_alive, cases[i].keep, "case %zu: %s", i, cases[i].req);
    }
}

Test(http1, expect_continue)
{
    static const struct {
        const char *req;
        bool expect;
    } cases[] = {
        {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", true},
        {"POST / HTTP/1.1\r\nHost: a\r\nexpect:  100-CONTINUE \r\nContent-Length: 0\r\n\r\n", true},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", false},
        {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continued\r\nContent-Length: 0\r\n\r\n", false},
        /* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored */
        {"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", false},
    };
    for (size_t i = 0; i < N(cases); i++) {
        outcome o;
        run_whole(cases[i].req, strlen(cases[i].req), &LIM, &o);
        cr_assert_eq(o.rc, KR_HTTP_DONE, "case %zu", i);
        cr_assert_eq(o.expect_continue, cases[i].expect, "case %zu", i);
    }
}

/* ---- pipelining ---------------------------------------------------------- */

/* Parses one request from d[0..n) at once; returns bytes consumed. */
static size_t parse_one(kr_http_parser *p, const char *d, size_t n, int want)
{
    size_t c, off = 0;
    int rc = kr_http_feed(p, d, n, &c);
    off += c;
    if (rc == KR_HTTP_HEAD) {
        rc = kr_http_feed(p, d + off, n - off, &c);
        off += c;
    }
    cr_assert_eq(rc, want, "rc %d status %d (%s)", rc, p->status, p->error ? p->error : "");
    return off;
}

Test(http1, pipelined_two_requests)
{
    static const char two[] = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                              "GET /two?q HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t n = sizeof two - 1;
    size_t off = parse_one(&p, two, n, KR_HTTP_DONE);
    cr_assert_eq(off, strlen("GET /one HTTP/1.1\r\nHost: a\r\n\r\n"));
    cr_assert(kr_slice_eq(p.req.target, "/one"));
    cr_assert(p.req.keep_alive);
    kr_http_parser_reset(&p);
    off += parse_one(&p, two + off, n - off, KR_HTTP_DONE);
    cr_assert_eq(off, n);
    cr_assert(kr_slice_eq(p.req.target, "/two?q"));
    cr_assert(kr_slice_eq(kr_http_find(&p.req, "host")->value, "b"));
    cr_assert_not(p.req.keep_alive);
    kr_http_parser_free(&p);
}

Test(http1, pipelined_after_smuggling_body)
{
    /* The body looks like a request, but Content-Length says it is body. */
    static const char hidden[] = "GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
    char buf[512];
    int len = snprintf(buf, sizeof buf,
                       "POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n%s"
                       "GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
                       sizeof hidden - 1, hidden);
    cr_assert_lt((size_t)len, sizeof buf);
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t off = parse_one(&p, buf, (size_t)len, KR_HTTP_DONE);
    cr_assert(kr_slice_eq(p.req.method, "POST"));
    cr_assert_str_eq(p.req.body, hidden);
    kr_http_parser_reset(&p);
    off += parse_one(&p, buf + off, (size_t)len - off, KR_HTTP_DONE);
    cr_assert_eq(off, (size_t)len);
    cr_assert(kr_slice_eq(p.req.target, "/after"), "the next request is the one after the body");
    kr_http_parser_free(&p);
}

Test(http1, pipelined_after_chunked_with_smuggled_request)
{
    static const char buf[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "20\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"
                              "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t n = sizeof buf - 1;
    size_t off = parse_one(&p, buf, n, KR_HTTP_DONE);
    cr_assert_str_eq(p.req.body, "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
    kr_http_parser_reset(&p);
    off += parse_one(&p, buf + off, n - off, KR_HTTP_DONE);
    cr_assert_eq(off, n);
    cr_assert(kr_slice_eq(p.req.target, "/next"));
    kr_http_parser_free(&p);
}

Test(http1, cl_te_smuggling_rejected_with_reason)
{
    static const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c;
    cr_assert_eq(kr_http_feed(&p, req, sizeof req - 1, &c), KR_HTTP_ERROR);
    cr_assert_eq(p.status, 400);
    cr_assert_str_eq(p.error, "both Content-Length and Transfer-Encoding");
    kr_http_parser_free(&p);
}

Test(http1, error_reasons)
{
    /* the status is the contract; the reason must name the actual problem */
    static const struct {
        const char *req, *why;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "obsolete line folding"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb: c\r\n\r\n", "obsolete line folding"},
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF in request"},
        {"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "bare CR in request"},
        {"GET / HTTP/1.1\r\nHost a\r\n\r\n", "header field without colon"},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace before colon in header field"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
         "multiple Content-Length headers"},
        {"GET / HTTP/1.1\r\nX: a\r\n\r\n", "missing Host header"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        outcome o;
        run_whole(cases[i].req, strlen(cases[i].req), &LIM, &o);
        cr_assert_eq(o.rc, KR_HTTP_ERROR, "case %zu", i);
        cr_assert_eq(o.status, 400, "case %zu", i);
        cr_assert_str_eq(o.error, cases[i].why, "case %zu", i);
    }
}

Test(http1, error_is_sticky_until_reset)
{
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    size_t c;
    static const char bad[] = "GET http://x/ HTTP/1.1\r\n";
    static const char good[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    cr_assert_eq(kr_http_feed(&p, bad, sizeof bad - 1, &c), KR_HTTP_ERROR);
    cr_assert_eq(p.status, 400);
    cr_assert_eq(kr_http_feed(&p, good, sizeof good - 1, &c), KR_HTTP_ERROR);
    cr_assert_eq(c, 0);
    cr_assert_eq(p.status, 400);
    kr_http_parser_reset(&p);
    cr_assert_eq(p.status, 0);
    cr_assert_null(p.error);
    cr_assert_eq(parse_one(&p, good, sizeof good - 1, KR_HTTP_DONE), sizeof good - 1);
    kr_http_parser_free(&p);
}

Test(http1, reset_keeps_allocations)
{
    static const char req[] = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    parse_one(&p, req, sizeof req - 1, KR_HTTP_DONE);
    const char *head = p.head.data, *body = p.body.data;
    cr_assert_not_null(head);
    cr_assert_not_null(body);
    kr_http_parser_reset(&p);
    cr_assert_eq(p.head.data, head);
    cr_assert_eq(p.body.data, body);
    parse_one(&p, req, sizeof req - 1, KR_HTTP_DONE);
    cr_assert_eq(p.head.data, head);
    cr_assert_eq(p.req.body, body);
    kr_http_parser_free(&p);
}

Test(http1, slices_survive_caller_buffer_reuse)
{
    char *buf = strdup("GET /keep?me HTTP/1.1\r\nHost: survives\r\n\r\n");
    cr_assert_not_null(buf);
    size_t n = strlen(buf), c;
    kr_http_parser p;
    kr_http_parser_init(&p, &LIM);
    cr_assert_eq(kr_http_feed(&p, buf, n, &c), KR_HTTP_HEAD);
    memset(buf, 'Z', n);
    free(buf);
    cr_assert(kr_slice_eq(p.req.target, "/keep?me"));
    cr_assert(kr_slice_eq(p.req.headers[0].value, "survives"));
    check_slices(&p);
    kr_http_parser_free(&p);
}

/* ---- caps ------------------------------------------------------------------- */

/* "GET / HTTP/1.1\r\nHost: a\r\nX: <pad>\r\n\r\n" of exactly total bytes. */
static char *sized_head(size_t total)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t fixed = sizeof pre - 1 + 4;
    cr_assert_gt(total, fixed);
    char *s = malloc(total + 1);
    cr_assert_not_null(s);
    memcpy(s, pre, sizeof pre - 1);
    memset(s + sizeof pre - 1, 'p', total - fixed);
    memcpy(s + total - 4, "\r\n\r\n", 4);
    s[total] = 0;
    return s;
}

Test(http1, max_head_exact_and_one_over)
{
    kr_http_limits lim = {200, 8, 100};
    outcome o;
    char *s = sized_head(200);
    run_whole(s, 200, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE, "exactly max_head is fine");
    free(s);
    s = sized_head(201);
    run_whole(s, 201, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_ERROR);
    cr_assert_eq(o.status, 431);
    free(s);
    /* leading empty lines count against max_head */
    char *t = sized_head(198), buf[256];
    memcpy(buf, "\r\n", 2);
    memcpy(buf + 2, t, 198);
    run_whole(buf, 200, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    cr_assert_str_eq(o.target, "/");
    free(t);
    t = sized_head(199);
    memcpy(buf + 2, t, 199);
    run_whole(buf, 201, &lim, &o);
    cr_assert_eq(o.status, 431);
    free(t);
}

Test(http1, header_count_cap)
{
    kr_http_limits lim = {65536, 3, 100};
    outcome o;
    static const char three[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    static const char four[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    run_whole(three, sizeof three - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    cr_assert_eq(o.nheaders, 3);
    run_whole(four, sizeof four - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_ERROR);
    cr_assert_eq(o.status, 431);
}

static char *many_headers(unsigned n, size_t *len)
{
    kr_buf b = KR_BUF_INIT(1 << 20);
    cr_assert_eq(kr_buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\n"), 0);
    for (unsigned i = 1; i < n; i++)
        cr_assert_eq(kr_buf_printf(&b, "X-%u: v\r\n", i), 0);
    cr_assert_eq(kr_buf_puts(&b, "\r\n"), 0);
    *len = b.len;
    return kr_buf_steal(&b);
}

Test(http1, header_count_never_above_compile_time_max)
{
    kr_http_limits lim = {1 << 20, 100000, 100};
    size_t n;
    outcome o;
    char *s = many_headers(KR_HTTP_MAX_HEADERS, &n);
    run_whole(s, n, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    cr_assert_eq(o.nheaders, KR_HTTP_MAX_HEADERS);
    free(s);
    s = many_headers(KR_HTTP_MAX_HEADERS + 1, &n);
    run_whole(s, n, &lim, &o);
    cr_assert_eq(o.status, 431);
    free(s);
}

Test(http1, content_length_cap_reported_at_head)
{
    kr_http_limits lim = {4096, 16, 10};
    outcome o;
    static const char ok[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
    run_whole(ok, sizeof ok - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    cr_assert_eq(o.body_len, 10);
    /* only the head is sent: 413 before any body byte */
    static const char big[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    kr_http_parser p;
    kr_http_parser_init(&p, &lim);
    size_t c;
    cr_assert_eq(kr_http_feed(&p, big, sizeof big - 1, &c), KR_HTTP_ERROR);
    cr_assert_eq(p.status, 413);
    kr_http_parser_free(&p);
}

Test(http1, chunked_body_cap)
{
    kr_http_limits lim = {4096, 16, 10};
    outcome o;
    static const char ok[] = CH "4\r\n0123\r\n6\r\n456789\r\n0\r\n\r\n";
    static const char big[] = CH "4\r\n0123\r\n7\r\n456789a\r\n0\r\n\r\n";
    run_whole(ok, sizeof ok - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    cr_assert_str_eq(o.body, "0123456789");
    run_whole(big, sizeof big - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_ERROR);
    cr_assert_eq(o.status, 413);
}

Test(http1, zero_max_body)
{
    kr_http_limits lim = {4096, 16, 0};
    outcome o;
    static const char get[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char cl0[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    static const char cl1[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    static const char ch0[] = CH "0\r\n\r\n";
    static const char ch1[] = CH "1\r\nx\r\n0\r\n\r\n";
    run_whole(get, sizeof get - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    run_whole(cl0, sizeof cl0 - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    run_whole(ch0, sizeof ch0 - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    run_whole(cl1, sizeof cl1 - 1, &lim, &o);
    cr_assert_eq(o.status, 413);
    run_whole(ch1, sizeof ch1 - 1, &lim, &o);
    cr_assert_eq(o.status, 413);
}

Test(http1, trailers_count_against_max_head)
{
    static const char req[] = CH "0\r\nX-Trailer: 0123456789\r\n\r\n";
    size_t head_len = strlen(CH), trailer = strlen("X-Trailer: 0123456789\r\n");
    kr_http_limits lim = {head_len + trailer, 16, 100};
    outcome o;
    run_whole(req, sizeof req - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE, "head + trailer fields exactly at max_head");
    lim.max_head--;
    run_whole(req, sizeof req - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_ERROR);
    cr_assert_eq(o.status, 431);
}

Test(http1, trailer_bytes_accumulate)
{
    /* each trailer fits on its own; together they pass max_head */
    static const char req[] = CH "0\r\nA: 0123456789\r\nB: 0123456789\r\n\r\n";
    size_t fields = 2 * strlen("A: 0123456789\r\n");
    kr_http_limits lim = {strlen(CH) + fields, 16, 100};
    outcome o;
    run_whole(req, sizeof req - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    lim.max_head--;
    run_whole(req, sizeof req - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_ERROR);
    cr_assert_eq(o.status, 431);
}

Test(http1, trailer_count_cap)
{
    kr_http_limits lim = {4096, 2, 100};
    static const char two[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "0\r\nA: 1\r\nB: 2\r\n\r\n";
    static const char three[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    outcome o;
    run_whole(two, sizeof two - 1, &lim, &o);
    cr_assert_eq(o.rc, KR_HTTP_DONE);
    run_whole(three, sizeof three - 1, &lim, &o);
    cr_assert_eq(o.status, 431);
}

Test(http1, chunk_line_cap)
{
    /* chunk line of exactly 256 bytes with CRLF is fine, 257 is not */
    char buf[1024];
    size_t h = strlen(CH);
    for (size_t line = 256; line <= 257; line++) {
        memcpy(buf, CH, h);
        size_t off = h;
        memcpy(buf + off, "1;", 2);
        memset(buf + off + 2, 'e', line - 4);
        off += line - 2;
        memcpy(buf + off, "\r\nx\r\n0\r\n\r\n", 10);
        off += 10;
        outcome o;
        run_whole(buf, off, &LIM, &o);
        if (line == 256) {
            cr_assert_eq(o.rc, KR_HTTP_DONE);
            cr_assert_str_eq(o.body, "x");
        } else {
            cr_assert_eq(o.rc, KR_HTTP_ERROR);
            cr_assert_eq(o.status, 400);
        }
    }
}

Test(http1, large_head_byte_at_a_time)
{
    /* a 60 KiB head fed one byte per call: linear work, correct result */
    kr_http_limits lim = {65536, 16, 100};
    size_t n = 60000;
    char *s = sized_head(n);
    kr_http_parser p;
    kr_http_parser_init(&p, &lim);
    size_t c;
    int rc = KR_HTTP_AGAIN;
    size_t i = 0;
    for (; i < n && rc == KR_HTTP_AGAIN; i++) {
        rc = kr_http_feed(&p, s + i, 1, &c);
        cr_assert_eq(c, 1);
    }
    cr_assert_eq(rc, KR_HTTP_HEAD);
    cr_assert_eq(i, n);
    cr_assert_eq(p.req.headers[1].value.n, n - strlen("GET / HTTP/1.1\r\nHost: a\r\nX: ") - 4);
    free(s);
    kr_http_parser_free(&p);
}
