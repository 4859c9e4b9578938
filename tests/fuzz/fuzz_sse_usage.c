/*
 * fuzz_sse_usage.c -- libFuzzer driver for the streaming usage reader.
 *
 * Input: byte 0 picks the body dialect (bits 0-1: Anthropic, OpenAI Chat
 * Completions, OpenAI Responses, Gemini) and seeds the chunk sizes (bits
 * 2-7); byte 1 picks max_event (small caps, so the overflow paths run); the
 * rest is the stream. The stream is parsed once in one piece and once in
 * pseudo-random pieces of 1..64 bytes; both must give the same result.
 *
 * Invariants checked after every piece:
 *   - the line and data buffers stay within max_event (allocation within
 *     max_event + 1), model and event stay NUL-terminated;
 *   - done, error_event, malformed and usage.seen never go back to false,
 *     events never decreases;
 *   - OpenAI never reports cache writes.
 * Usage fields are NOT monotonic for Anthropic: message_delta values
 * overwrite (they are cumulative in real streams, but the reader trusts the
 * last value sent, and a second message_start resets them), and an OpenAI
 * usage chunk replaces the whole record. So "never decrease" is not an
 * invariant; chunking-independence is the strong property instead.
 * Finally kr_usage_from_json_wire runs on the stream bytes for every dialect
 * (Gemini's accepts a JSON array of responses: a stream without alt=sse).
 */
#include "fuzz_check.h"
#include "core/err.h"
#include "proxy/jscan.h"
#include "proxy/sse_usage.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_state(const kr_sse_usage *s)
{
    CHECK(s->line.len <= s->max_event);
    CHECK(s->data.len <= s->max_event);
    CHECK(s->line.cap <= s->max_event + 1);
    CHECK(s->data.cap <= s->max_event + 1);
    CHECK(memchr(s->model, 0, sizeof s->model) != NULL);
    CHECK(memchr(s->event, 0, sizeof s->event) != NULL);
    if (s->proto != KR_PROTO_ANTHROPIC) CHECK(s->usage.cache_write_tokens == 0);
}

static void check_sticky(const kr_sse_usage *before, const kr_sse_usage *after)
{
    CHECK(!before->done || after->done);
    CHECK(!before->error_event || after->error_event);
    CHECK(!before->malformed || after->malformed);
    CHECK(!before->usage.seen || after->usage.seen);
    CHECK(after->events >= before->events);
}

static void check_same(const kr_sse_usage *a, const kr_sse_usage *b)
{
    CHECK(a->usage.input_tokens == b->usage.input_tokens);
    CHECK(a->usage.output_tokens == b->usage.output_tokens);
    CHECK(a->usage.cache_read_tokens == b->usage.cache_read_tokens);
    CHECK(a->usage.cache_write_tokens == b->usage.cache_write_tokens);
    CHECK(a->usage.seen == b->usage.seen);
    CHECK(a->done == b->done);
    CHECK(a->error_event == b->error_event);
    CHECK(a->malformed == b->malformed);
    CHECK(a->events == b->events);
    CHECK(strcmp(a->model, b->model) == 0);
}

static void check_from_json(kr_wire wire, const char *p, size_t n)
{
    kr_usage u;
    char model[16];
    int rc = kr_usage_from_json_wire(wire, p, n, &u, model, sizeof model);
    CHECK(rc == 0 || rc == KR_ENOTFOUND || rc == KR_EPARSE);
    CHECK(memchr(model, 0, sizeof model) != NULL);
    if (rc == 0) {
        CHECK(u.seen);
        CHECK(kr_json_validate(p, n) == 0);
        if (wire != KR_WIRE_ANTHROPIC) CHECK(u.cache_write_tokens == 0);
    } else {
        CHECK(!u.seen && !u.input_tokens && !u.output_tokens && !u.cache_read_tokens &&
              !u.cache_write_tokens);
        if (rc == KR_ENOTFOUND) CHECK(kr_json_validate(p, n) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 2) return 0;
    kr_wire wire = (kr_wire)(d[0] & 3);
    uint32_t rnd = (uint32_t)(d[0] >> 2) * 2654435761u + 1;
    size_t max = d[1] == 255 ? ((size_t)1 << 20) : 8 + (size_t)d[1] * 4;
    const char *p = (const char *)d + 2;
    n -= 2;

    /* reference: one piece (an exact-size copy, for ASan) */
    kr_sse_usage whole;
    kr_sse_usage_init_wire(&whole, wire, max);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    kr_sse_usage_feed(&whole, copy, n);
    free(copy);
    check_state(&whole);
    kr_sse_usage_finish(&whole);
    check_state(&whole);

    /* pieces of 1..64 bytes */
    kr_sse_usage s;
    kr_sse_usage_init_wire(&s, wire, max);
    size_t off = 0;
    while (off < n) {
        rnd = rnd * 1103515245u + 12345u;
        size_t k = 1 + ((rnd >> 16) & 63);
        if (k > n - off) k = n - off;
        char *piece = malloc(k);
        memcpy(piece, p + off, k);
        kr_sse_usage before = s;
        kr_sse_usage_feed(&s, piece, k);
        free(piece);
        check_state(&s);
        check_sticky(&before, &s);
        off += k;
    }
    kr_sse_usage before = s;
    kr_sse_usage_finish(&s);
    check_state(&s);
    check_sticky(&before, &s);
    check_same(&whole, &s);

    /* finish is idempotent */
    before = s;
    kr_sse_usage_finish(&s);
    check_same(&before, &s);

    kr_sse_usage_free(&whole);
    kr_sse_usage_free(&s);

    for (int w = 0; w <= KR_WIRE_GEMINI; w++) check_from_json((kr_wire)w, p, n);
    return 0;
}
