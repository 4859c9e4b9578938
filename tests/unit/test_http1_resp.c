/*
 * test_http1_resp.c -- the upstream client's strict HTTP/1.1 response
 * parser (src/proxy/http1_resp.c) and its URL parser (upclient.c).
 *
 * Every sample is run whole, split at every point, and one byte at a time;
 * the outcome (events, head, body bytes, error) must not depend on the
 * split. Each feed goes through a scratch copy clobbered right after the
 * call: what the parser keeps must live in its own buffers, and body slices
 * must be used before the next call (as the client does).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1_resp.h"
#include "http/upclient.h"

static const kr_resp_limits LIM = {8192, 64, 1024, 4};
static const kr_resp_limits SMALL = {64, 3, 32, 1};

typedef struct outcome {
    int rc; /* KR_RESP_DONE, KR_RESP_ERROR, or KR_RESP_AGAIN when input ran out */
    const char *error;
    int heads;
    int status, minor;
    bool keep_alive, chunked, has_length, until_eof, no_body;
    uint64_t content_length;
    int64_t ka;
    unsigned nheaders;
    char first_field[128];
    char body[2048];
    size_t body_len;
    size_t consumed; /* bytes taken up to DONE / ERROR */
} outcome;

/* Feeds s in pieces of the given sizes (0: the rest at once). */
static outcome run(const kr_resp_limits *lim, const char *s, size_t n, size_t split, bool bytewise)
{
    outcome o;
    memset(&o, 0, sizeof o);
    kr_resp_parser p;
    kr_resp_parser_init(&p, lim);
    size_t pos = 0;
    o.rc = KR_RESP_AGAIN;
    while (pos < n) {
        size_t want = bytewise ? 1 : (split && pos < split ? split - pos : n - pos);
        char *buf = malloc(want);
        memcpy(buf, s + pos, want);
        size_t off = 0;
        bool stop = false;
        for (;;) {
            size_t u;
            kr_slice b = {0};
            int rc = kr_resp_feed(&p, buf + off, want - off, &u, &b);
            off += u;
            if (rc == KR_RESP_AGAIN) break;
            if (rc == KR_RESP_BODY) {
                cr_assert_leq(o.body_len + b.n, sizeof o.body);
                memcpy(o.body + o.body_len, b.p, b.n);
                o.body_len += b.n;
                continue;
            }
            if (rc == KR_RESP_HEAD) {
                o.heads++;
                o.status = p.status;
                o.minor = p.minor;
                o.keep_alive = p.keep_alive;
                o.chunked = p.chunked;
                o.has_length = p.has_length;
                o.until_eof = p.until_eof;
                o.no_body = p.no_body;
                o.content_length = p.content_length;
                o.ka = p.ka_timeout_s;
                o.nheaders = p.nheaders;
                if (p.nheaders) {
                    kr_resp_field f;
                    kr_resp_field_at(&p, 0, &f);
                    snprintf(o.first_field, sizeof o.first_field, "%.*s=%.*s", (int)f.name.n,
                             f.name.p, (int)f.value.n, f.value.p);
                }
                continue;
            }
            o.rc = rc;
            o.error = p.error;
            o.consumed = pos + off;
            stop = true;
            break;
        }
        memset(buf, 0xAA, want);
        free(buf);
        if (stop) break;
        pos += want;
    }
    if (o.rc == KR_RESP_AGAIN) o.consumed = n;
    kr_resp_parser_free(&p);
    return o;
}

static void same(const outcome *a, const outcome *b, const char *what, size_t at)
{
    cr_assert_eq(a->rc, b->rc, "%s: rc differs at split %zu", what, at);
    cr_assert_eq(a->heads, b->heads, "%s: heads differ at split %zu", what, at);
    cr_assert_eq(a->status, b->status, "%s", what);
    if (a->rc != KR_RESP_ERROR) /* after an error the connection is closed: no offset matters */
        cr_assert_eq(a->consumed, b->consumed, "%s: consumed differs at split %zu", what, at);
    cr_assert_eq(a->body_len, b->body_len, "%s: body differs at split %zu", what, at);
    cr_assert(!memcmp(a->body, b->body, a->body_len), "%s", what);
    cr_assert(a->error == b->error || (a->error && b->error && !strcmp(a->error, b->error)), "%s",
              what);
    cr_assert_str_eq(a->first_field, b->first_field, "%s", what);
}

/* The outcome, checked to be the same at every split. */
static outcome parse(const kr_resp_limits *lim, const char *s)
{
    size_t n = strlen(s);
    outcome whole = run(lim, s, n, 0, false);
    for (size_t k = 1; k < n; k++) {
        outcome x = run(lim, s, n, k, false);
        same(&whole, &x, s, k);
    }
    outcome b = run(lim, s, n, 0, true);
    same(&whole, &b, s, 0);
    return whole;
}

Test(resp, content_length_body)
{
    outcome o = parse(&LIM, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            "content-length: 11\r\n\r\n{\"a\":\"bcd\"}");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    cr_assert_eq(o.status, 200);
    cr_assert(o.keep_alive && o.has_length && !o.chunked);
    cr_assert_eq(o.body_len, 11);
    cr_assert_str_eq(o.first_field, "Content-Type=application/json");
}

Test(resp, chunked_sse_with_extension_and_trailers)
{
    outcome o = parse(&LIM, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                            "Transfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n"
                            "0\r\nx-checksum: abc\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    cr_assert(o.chunked && o.keep_alive);
    cr_assert_eq(o.body_len, 15);
    cr_assert(!memcmp(o.body, "hello, world!!!", 15));
}

Test(resp, interim_responses_are_skipped)
{
    outcome o = parse(&LIM, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
                            "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    cr_assert_eq(o.heads, 1);
    cr_assert_eq(o.status, 201);
    cr_assert_eq(o.nheaders, 1);
    outcome too_many = parse(&SMALL, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
                                     "HTTP/1.1 200 OK\r\n\r\n");
    cr_assert_eq(too_many.rc, KR_RESP_ERROR);
}

Test(resp, no_body_statuses_and_zero_length)
{
    outcome o = parse(&LIM, "HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    cr_assert(o.no_body && o.keep_alive);
    cr_assert_eq(o.body_len, 0);
    o = parse(&LIM, "HTTP/1.1 304 Not Modified\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    o = parse(&LIM, "HTTP/1.1 500\r\ncontent-length: 0\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_DONE);
    cr_assert_eq(o.status, 500);
}

Test(resp, connection_and_keep_alive)
{
    outcome o = parse(&LIM, "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n");
    cr_assert(!o.keep_alive);
    o = parse(&LIM, "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
    cr_assert(!o.keep_alive, "HTTP/1.0: never reused");
    o = parse(&LIM, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=1000\r\ncontent-length: 0\r\n\r\n");
    cr_assert(o.keep_alive);
    cr_assert_eq(o.ka, 5);
    o = parse(&LIM, "HTTP/1.1 200 OK\r\nKeep-Alive: max=2\r\ncontent-length: 0\r\n\r\n");
    cr_assert_eq(o.ka, -1);
}

Test(resp, body_until_eof)
{
    const char *s = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n\n";
    outcome o = parse(&LIM, s);
    cr_assert_eq(o.rc, KR_RESP_AGAIN);
    cr_assert(o.until_eof && !o.keep_alive);
    cr_assert_eq(o.body_len, 9);
    kr_resp_parser p;
    kr_resp_parser_init(&p, &LIM);
    size_t u;
    kr_slice b;
    int rc;
    size_t off = 0;
    while ((rc = kr_resp_feed(&p, s + off, strlen(s) - off, &u, &b)) != KR_RESP_AGAIN) off += u;
    cr_assert_eq(kr_resp_eof(&p), KR_RESP_DONE);
    kr_resp_parser_free(&p);
}

Test(resp, truncated_bodies_are_errors_at_eof)
{
    const char *cases[] = {
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\ncontent-le",
        "",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kr_resp_parser p;
        kr_resp_parser_init(&p, &LIM);
        size_t u, off = 0, n = strlen(cases[i]);
        kr_slice b;
        while (kr_resp_feed(&p, cases[i] + off, n - off, &u, &b) != KR_RESP_AGAIN) off += u;
        cr_assert_eq(kr_resp_eof(&p), KR_RESP_ERROR, "%s", cases[i]);
        cr_assert_not_null(p.error);
        cr_assert_eq(!!strstr(p.error, "without answering"), n == 0, "%s", p.error);
        kr_resp_parser_free(&p);
    }
}

Test(resp, two_responses_in_a_row_and_bytes_after)
{
    const char *s = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    kr_resp_parser p;
    kr_resp_parser_init(&p, &LIM);
    size_t u, off = 0, n = strlen(s);
    kr_slice b;
    int rc;
    while ((rc = kr_resp_feed(&p, s + off, n - off, &u, &b)) != KR_RESP_DONE) {
        cr_assert_neq(rc, KR_RESP_ERROR);
        off += u;
    }
    off += u;
    cr_assert_eq(off, 40, "DONE stops at the response's end");
    /* without a reset, anything more is an error (no pipelining upstream) */
    cr_assert_eq(kr_resp_feed(&p, s + off, n - off, &u, &b), KR_RESP_ERROR);
    kr_resp_parser_reset(&p);
    cr_assert_eq(kr_resp_feed(&p, s + off, n - off, &u, &b), KR_RESP_AGAIN);
    kr_resp_parser_free(&p);
}

Test(resp, refused)
{
    static const struct {
        const char *in;
        const char *why;
    } bad[] = {
        {"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok", "twice"},
        {"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", "invalid"},
        {"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok", "invalid"},
        {"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid"},
        {"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n", "invalid"},
        {"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n", "and Transfer"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n", "twice"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "not chunked"},
        {"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", "HTTP/1.0"},
        {"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n", "folding"},
        {"HTTP/1.1 200 OK\r\nx-a: 1\r\n\tfolded\r\n\r\n", "folding"},
        {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF"},
        {"HTTP/1.1 200 OK\r\nx-a: a\rb\r\n\r\n", "bare CR"},
        {"HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n", "header name"},
        {"HTTP/1.1 200 OK\r\n: 1\r\n\r\n", "empty header name"},
        {"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "without colon"},
        {"HTTP/1.1 200 OK\r\nx-a: a\x01" "b\r\n\r\n", "control"},
        {"HTTP/1.1 200 OK\r\nx-a: a\x7f\r\n\r\n", "control"},
        {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.0 or HTTP/1.1"},
        {"HTTP/1.2 200 OK\r\n\r\n", "HTTP/1.0 or HTTP/1.1"},
        {"http/1.1 200 OK\r\n\r\n", "HTTP/1.0 or HTTP/1.1"},
        {"HTTP/1.1 2000 OK\r\n\r\n", "status code"},
        {"HTTP/1.1 099 OK\r\n\r\n", "status code"},
        {"HTTP/1.1 600 OK\r\n\r\n", "status code"},
        {"HTTP/1.1  200 OK\r\n\r\n", "status code"},
        {"HTTP/1.1 200 O\x01K\r\n\r\n", "reason"},
        {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n", "chunk size"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\n", "too large"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 \r\nok\r\n", "chunk size"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a\x01\r\nok\r\n", "extension"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokX\r\n", "CRLF"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\rX", "CRLF"},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: 1\r\n 2\r\n\r\n", "folding"},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.0 or HTTP/1.1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        outcome o = parse(&LIM, bad[i].in);
        cr_assert_eq(o.rc, KR_RESP_ERROR, "%s", bad[i].in);
        cr_assert(strstr(o.error, bad[i].why), "%s: %s", bad[i].in, o.error);
    }
}

Test(resp, caps)
{
    /* head size, field count, trailer bytes and count */
    outcome o = parse(&SMALL, "HTTP/1.1 200 OK\r\nx-long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_ERROR);
    cr_assert(strstr(o.error, "too large"), "%s", o.error);
    o = parse(&SMALL, "HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_ERROR);
    cr_assert(strstr(o.error, "too many"), "%s", o.error);
    o = parse(&SMALL, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n"
                      "x-trailer: 0123456789012345678901234567890\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_ERROR);
    cr_assert(strstr(o.error, "trailer"), "%s", o.error);
    o = parse(&SMALL, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_ERROR);
    o = parse(&LIM, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "\r\nx\r\n0\r\n\r\n");
    cr_assert_eq(o.rc, KR_RESP_ERROR);
    cr_assert(strstr(o.error, "chunk-size line"), "%s", o.error);
}

/* ---- URLs ---- */

Test(upc_url, accepted)
{
    kr_upc_url u;
    cr_assert_eq(kr_upc_parse_url("https://api.anthropic.com/v1/messages?beta=true", &u), 0);
    cr_assert(u.tls && !u.ip);
    cr_assert_str_eq(u.host, "api.anthropic.com");
    cr_assert_eq(u.port, 443);
    cr_assert_eq(u.path_len, strlen("/v1/messages?beta=true"));
    cr_assert_eq(kr_upc_parse_url("HTTP://127.0.0.1:8080/a", &u), 0);
    cr_assert(!u.tls && u.ip);
    cr_assert_eq(u.port, 8080);
    cr_assert_eq(kr_upc_parse_url("https://[::1]:9443/v1", &u), 0);
    cr_assert(u.ip);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(kr_upc_parse_url("http://localhost", &u), 0);
    cr_assert_eq(u.path_len, 1);
    cr_assert_eq(u.path[0], '/');
}

Test(upc_url, refused)
{
    static const char *const bad[] = {
        "ftp://x/",           "https://user:pw@host/", "https://host:0/",      "https://host:65536/",
        "https://host:/",     "https://host:12a/",     "https:///v1",          "https://ho st/",
        "https://host/a b",   "https://host/a#frag",   "https://host?x",       "https://[::1/",
        "https://[zz]/",      "//host/",               "https://host/\x7f",    "https://h\x01/",
        "https://[::1]x:1/",  "https://host:1234567/",
    };
    kr_upc_url u;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_neq(kr_upc_parse_url(bad[i], &u), 0, "%s", bad[i]);
}
