/*
 * fuzz_http1_resp.c -- libFuzzer driver for the upstream response parser
 * (src/proxy/http1_resp.c).
 *
 * The input is what a vendor sends on one connection. It is parsed the way
 * the upstream client feeds it (HEAD -> feed the rest, BODY -> feed the
 * rest, DONE -> reset and parse what follows as the next response, ERROR ->
 * stop; at the end of the input, the connection's end), twice: once as a
 * single arrival and once in arrivals whose sizes come from a PRNG seeded by
 * the input. Both runs must give the same events, the same heads and the
 * same body bytes (however they were sliced), and every return is checked
 * against the header's contract.
 */
#include "fuzz_check.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static const kr_resp_limits limits[2] = {{4096, 32, 512, 4}, {120, 4, 40, 1}};

typedef struct trace {
    uint64_t h;      /* rolling hash of the events */
    uint64_t body;   /* hash of the body bytes of the current response */
    uint64_t blen;   /* body bytes of the current response */
    unsigned events; /* HEAD/DONE/ERROR/EOF */
} trace;

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_head(const kr_resp_parser *p, trace *t, size_t off)
{
    CHECK(p->status >= 200 && p->status <= 599);
    CHECK(p->minor == 0 || p->minor == 1);
    CHECK(!(p->chunked && p->has_length));
    CHECK(!p->chunked || p->minor == 1);
    CHECK(!p->until_eof || (!p->chunked && !p->has_length && !p->keep_alive));
    CHECK(!p->keep_alive || p->minor == 1);
    CHECK(p->no_body == (p->status == 204 || p->status == 304));
    CHECK(p->nheaders <= p->lim.max_headers);
    CHECK(p->head.len <= p->lim.max_head);
    kr_slice sl = kr_resp_status_line(p);
    CHECK(inside(&p->head, sl.p, sl.n));
    CHECK(sl.n >= 14 && !memcmp(sl.p, "HTTP/1.", 7) && !memcmp(sl.p + sl.n - 2, "\r\n", 2));
    unsigned cls = 0, tes = 0;
    uint64_t h = mix_u64(mix_u64(t->h, 1), off);
    h = mix(h, sl.p, sl.n);
    for (unsigned i = 0; i < p->nheaders; i++) {
        kr_resp_field f;
        kr_resp_field_at(p, i, &f);
        CHECK(inside(&p->head, f.line.p, f.line.n));
        CHECK(f.name.p == f.line.p && f.name.n > 0);
        for (size_t k = 0; k < f.name.n; k++)
            CHECK(tchar((unsigned char)f.name.p[k]));
        CHECK(f.line.p[f.name.n] == ':');
        CHECK(f.value.p >= f.line.p + f.name.n + 1 && f.value.p + f.value.n <= f.line.p + f.line.n - 2);
        CHECK(!memcmp(f.line.p + f.line.n - 2, "\r\n", 2));
        for (size_t k = 0; k < f.line.n - 2; k++) {
            unsigned char c = (unsigned char)f.line.p[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (f.value.n) CHECK(f.value.p[0] != ' ' && f.value.p[f.value.n - 1] != ' ');
        if (kr_slice_eq_ci(f.name, "content-length")) cls++;
        if (kr_slice_eq_ci(f.name, "transfer-encoding")) tes++;
        h = mix(h, f.line.p, f.line.n);
    }
    CHECK(cls <= 1 && tes <= 1 && !(cls && tes));
    CHECK(p->has_length == (cls == 1));
    CHECK(p->chunked == (tes == 1));
    h = mix_u64(h, (uint64_t)p->status << 8 | (uint64_t)p->keep_alive << 1 | p->until_eof);
    h = mix_u64(h, p->content_length);
    t->h = h;
    t->body = 0xcbf29ce484222325ull;
    t->blen = 0;
    t->events++;
}

static void check_end(const kr_resp_parser *p, trace *t, uint64_t kind, size_t off)
{
    if (kind == 2 && p->has_length && !p->no_body) CHECK(t->blen == p->content_length);
    if (kind == 2 && p->no_body) CHECK(t->blen == 0);
    t->h = mix_u64(mix_u64(mix_u64(mix_u64(t->h, kind), off), t->blen), t->body);
    t->events++;
}

static void check_error(kr_resp_parser *p, trace *t)
{
    CHECK(p->error != NULL && p->error[0] != 0);
    size_t u = 1;
    kr_slice b;
    CHECK(kr_resp_feed(p, "HTTP/1.1 200 OK\r\n", 17, &u, &b) == KR_RESP_ERROR);
    CHECK(u == 0);
    t->h = mix(mix_u64(mix_u64(t->h, 3), t->blen), p->error, strlen(p->error));
    t->events++;
}

static trace run(const uint8_t *d, size_t n, const kr_resp_limits *lim, rng *g)
{
    trace t = {0xcbf29ce484222325ull, 0xcbf29ce484222325ull, 0, 0};
    kr_resp_parser p;
    kr_resp_parser_init(&p, lim);
    unsigned mode = g ? next(g) % 4 : 0;
    size_t pos = 0, calls = 0;
    bool stop = false, in_resp = false;
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
            CHECK(++calls <= 8 * n + 64);
            size_t u = (size_t)-1;
            kr_slice body = {NULL, 0};
            int rc = kr_resp_feed(&p, buf + off, want - off, &u, &body);
            CHECK(u <= want - off);
            if (rc == KR_RESP_AGAIN) {
                CHECK(u == want - off);
                off += u;
                break;
            }
            if (rc == KR_RESP_BODY) {
                CHECK(body.n > 0 && body.p >= buf + off && body.p + body.n == buf + off + u);
                t.body = mix(t.body, body.p, body.n);
                t.blen += body.n;
                off += u;
                continue;
            }
            off += u;
            if (rc == KR_RESP_HEAD) {
                CHECK(!in_resp);
                in_resp = true;
                check_head(&p, &t, pos + off);
                continue;
            }
            if (rc == KR_RESP_DONE) {
                CHECK(in_resp);
                in_resp = false;
                check_end(&p, &t, 2, pos + off);
                kr_resp_parser_reset(&p);
                if (off == want) break;
                continue;
            }
            CHECK(rc == KR_RESP_ERROR);
            check_error(&p, &t);
            stop = true;
            break;
        }
        memset(buf, 0xAA, want);
        free(buf);
        pos += want;
    }
    if (!stop) {
        /* the connection ends here */
        int rc = kr_resp_eof(&p);
        if (rc == KR_RESP_DONE) {
            CHECK(in_resp && p.until_eof);
            check_end(&p, &t, 4, n);
        } else {
            CHECK(rc == KR_RESP_ERROR && p.error);
            t.h = mix(mix_u64(t.h, 5), p.error, strlen(p.error));
            t.events++;
        }
    }
    kr_resp_parser_free(&p);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 1 << 16) return 0;
    uint64_t seed = mix_u64(0x9e3779b97f4a7c15ull, n);
    seed = mix(seed, d, n < 32 ? n : 32);
    const kr_resp_limits *lim = &limits[(seed >> 17) & 1];
    trace whole = run(d, n, lim, NULL);
    rng g = {seed | 1};
    trace split = run(d, n, lim, &g);
    CHECK(whole.events == split.events);
    CHECK(whole.h == split.h);
    return 0;
}
