/*
 * fuzz_http1.c -- libFuzzer driver for the HTTP/1.1 request parser.
 *
 * Each input is parsed twice the way a connection would feed it (HEAD ->
 * feed the rest, DONE -> reset and feed the pipelined rest, ERROR -> stop):
 * once as a single arrival and once split into arrivals whose sizes come from
 * a PRNG seeded by the input. Both runs must produce the same sequence of
 * events, and every return is checked against the header's contract.
 */
#include "fuzz_check.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

/* The first set is the normal one; the tiny one makes the 413/431 paths
 * reachable with short inputs. The input's hash picks one. */
static const kr_http_limits limits[2] = {{4096, 32, 65536}, {200, 6, 300}};

typedef struct trace {
    uint64_t h;      /* rolling hash of the events */
    unsigned events; /* HEAD/DONE/ERROR returns */
} trace;

static uint64_t mix_slice(uint64_t h, kr_slice s)
{
    return mix(mix_u64(h, s.n), s.p, s.n);
}

static void check_head(const kr_http_parser *p, trace *t, size_t off)
{
    const kr_http_limits lim = p->lim;
    const kr_http_req *r = &p->req;
    CHECK(p->head.len <= lim.max_head);
    CHECK(r->method.n > 0 && r->target.n > 0);
    CHECK(inside(&p->head, r->method.p, r->method.n));
    CHECK(inside(&p->head, r->target.p, r->target.n));
    CHECK(inside(&p->head, r->path.p, r->path.n));
    CHECK(inside(&p->head, r->query.p, r->query.n));
    CHECK(r->path.p == r->target.p && r->path.n <= r->target.n);
    CHECK(r->query.p >= r->target.p && r->query.p + r->query.n <= r->target.p + r->target.n);
    CHECK(r->minor == 0 || r->minor == 1);
    CHECK(r->nheaders <= lim.max_headers && r->nheaders <= KR_HTTP_MAX_HEADERS);
    CHECK(!(r->chunked && r->has_length));
    CHECK(!r->has_length || r->content_length <= lim.max_body);
    CHECK(!r->chunked || r->minor == 1);
    for (size_t i = 0; i < r->target.n; i++)
        CHECK((unsigned char)r->target.p[i] > 0x20 && (unsigned char)r->target.p[i] < 0x7f);
    unsigned hosts = 0;
    for (unsigned k = 0; k < r->nheaders; k++) {
        const kr_http_header *f = &r->headers[k];
        CHECK(f->name.n > 0);
        CHECK(inside(&p->head, f->name.p, f->name.n));
        CHECK(inside(&p->head, f->value.p, f->value.n));
        for (size_t i = 0; i < f->value.n; i++) {
            unsigned char c = (unsigned char)f->value.p[i];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (f->value.n) CHECK(f->value.p[0] != ' ' && f->value.p[f->value.n - 1] != ' ');
        if (kr_slice_eq_ci(f->name, "host")) hosts++;
        CHECK(kr_http_find(r, "host") != NULL || hosts == 0);
    }
    CHECK(hosts <= 1);
    CHECK(r->minor == 0 || hosts == 1);

    uint64_t h = mix_u64(t->h, 1);
    h = mix_u64(h, off);
    h = mix_slice(h, r->method);
    h = mix_slice(h, r->target);
    h = mix_slice(h, r->query);
    h = mix_u64(h, (uint64_t)r->minor << 32 | r->nheaders);
    h = mix_u64(h, (uint64_t)r->keep_alive | (uint64_t)r->expect_continue << 1 |
                       (uint64_t)r->chunked << 2 | (uint64_t)r->has_length << 3);
    h = mix_u64(h, r->content_length);
    for (unsigned k = 0; k < r->nheaders; k++)
        h = mix_slice(mix_slice(h, r->headers[k].name), r->headers[k].value);
    t->h = h;
    t->events++;
}

static void check_done(const kr_http_parser *p, trace *t, size_t off)
{
    const kr_http_limits lim = p->lim;
    const kr_http_req *r = &p->req;
    CHECK(r->body != NULL);
    CHECK(r->body_len <= lim.max_body);
    CHECK(r->body[r->body_len] == 0);
    CHECK(inside(&p->body, r->body, r->body_len));
    CHECK(!r->has_length || r->body_len == r->content_length);
    CHECK(r->chunked || r->has_length || r->body_len == 0);
    t->h = mix(mix_u64(mix_u64(mix_u64(t->h, 2), off), r->body_len), r->body, r->body_len);
    t->events++;
}

static void check_error(kr_http_parser *p, trace *t)
{
    CHECK(p->status == 400 || p->status == 413 || p->status == 431 || p->status == 501 ||
          p->status == 505);
    CHECK(p->error != NULL && p->error[0] != 0);
    size_t c = 1;
    CHECK(kr_http_feed(p, "GET / HTTP/1.1\r\n", 16, &c) == KR_HTTP_ERROR);
    CHECK(c == 0);
    t->h = mix(mix_u64(mix_u64(t->h, 3), (uint64_t)p->status), p->error, strlen(p->error));
    t->events++;
}

/*
 * Feeds d[0..n) in arrivals; g == NULL means one arrival. Returns the trace.
 * Each arrival is copied to a scratch buffer that is wiped afterwards, so
 * nothing may point into it once the call returns.
 */
static trace run(const uint8_t *d, size_t n, const kr_http_limits *lim, rng *g)
{
    trace t = {0xcbf29ce484222325ull, 0};
    kr_http_parser p;
    kr_http_parser_init(&p, lim);
    unsigned mode = g ? next(g) % 4 : 0;
    size_t pos = 0, calls = 0;
    bool stop = false;
    while (pos < n && !stop) {
        size_t want = n - pos;
        if (g) {
            size_t cap = mode == 0 ? 1 : mode == 1 ? 8 : mode == 2 ? 64 : 1024;
            want = 1 + next(g) % cap;
            if (want > n - pos) want = n - pos;
        }
        char *buf = malloc(want ? want : 1);
        CHECK(buf != NULL);
        memcpy(buf, d + pos, want);
        size_t off = 0;
        for (;;) {
            CHECK(++calls <= 4 * n + 16);
            size_t c = (size_t)-1;
            int rc = kr_http_feed(&p, buf + off, want - off, &c);
            CHECK(c <= want - off);
            off += c;
            if (rc == KR_HTTP_AGAIN) {
                CHECK(off == want);
                break;
            }
            if (rc == KR_HTTP_HEAD) {
                check_head(&p, &t, pos + off);
                continue; /* feed the rest of this arrival, even if empty */
            }
            if (rc == KR_HTTP_DONE) {
                check_done(&p, &t, pos + off);
                kr_http_parser_reset(&p);
                if (off == want) break;
                continue;
            }
            CHECK(rc == KR_HTTP_ERROR);
            check_error(&p, &t);
            stop = true;
            break;
        }
        memset(buf, 0xAA, want);
        free(buf);
        pos += want;
    }
    kr_http_parser_free(&p);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 1 << 16) return 0;
    uint64_t seed = mix_u64(0x9e3779b97f4a7c15ull, n);
    seed = mix(seed, d, n < 32 ? n : 32);
    const kr_http_limits *lim = &limits[(seed >> 17) & 1];
    trace whole = run(d, n, lim, NULL);
    rng g = {seed | 1};
    trace split = run(d, n, lim, &g);
    CHECK(whole.events == split.events);
    CHECK(whole.h == split.h);
    return 0;
}
