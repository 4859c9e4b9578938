/*
 * test_sse_usage.c -- the streaming usage reader: realistic Anthropic and
 * OpenAI streams fed at every split point and byte by byte, line-end
 * variants, caps, cut streams, malformed data, error events, and the
 * non-streaming kr_usage_from_json.
 */
#include <criterion/criterion.h>

#include "core/buf.h"
#include "core/err.h"
#include "proxy/sse_usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)

/* ---- fixtures ---------------------------------------------------------- */

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-"
    "20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,"
    "\"cache_creation_input_tokens\":3011,\"cache_read_input_tokens\":45120,"
    "\"cache_creation\":{\"ephemeral_5m_input_tokens\":3011,\"ephemeral_1h_input_tokens\":0},"
    "\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" world \xe2\x80\x94 a \\\"message_delta\\\" with an error\\n\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    ": a comment line, as proxies send to keep the connection alive\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"Read\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"file_path\\\": \\\"/tmp/a.c\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":215}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";
#define ANTHROPIC_EVENTS 12

static const char openai_stream[] =
    "data: {\"id\":\"chatcmpl-AZ1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,"
    "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_831e067d82\",\"choices\":[{"
    "\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-AZ1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,"
    "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_831e067d82\",\"choices\":[{"
    "\"index\":0,\"delta\":{\"content\":\"Hi \xc3\xa9 \\\"usage\\\"\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-AZ1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,"
    "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_831e067d82\",\"choices\":[{"
    "\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-AZ1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,"
    "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_831e067d82\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,"
    "\"prompt_tokens_details\":{\"cached_tokens\":1920,\"audio_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";
#define OPENAI_EVENTS 5

/* ---- helpers ----------------------------------------------------------- */

typedef struct {
    kr_usage usage;
    bool done, error_event, malformed;
    char model[128];
    size_t events;
} result;

static result snap(const kr_sse_usage *s)
{
    result r;
    memset(&r, 0, sizeof r);
    r.usage = s->usage;
    r.done = s->done;
    r.error_event = s->error_event;
    r.malformed = s->malformed;
    memcpy(r.model, s->model, sizeof r.model);
    r.events = s->events;
    return r;
}

static void expect_same(const result *a, const result *b, const char *what, size_t at)
{
    cr_expect_eq(a->usage.input_tokens, b->usage.input_tokens, "%s @%zu", what, at);
    cr_expect_eq(a->usage.output_tokens, b->usage.output_tokens, "%s @%zu", what, at);
    cr_expect_eq(a->usage.cache_read_tokens, b->usage.cache_read_tokens, "%s @%zu", what, at);
    cr_expect_eq(a->usage.cache_write_tokens, b->usage.cache_write_tokens, "%s @%zu", what, at);
    cr_expect_eq(a->usage.seen, b->usage.seen, "%s @%zu", what, at);
    cr_expect_eq(a->done, b->done, "%s @%zu", what, at);
    cr_expect_eq(a->error_event, b->error_event, "%s @%zu", what, at);
    cr_expect_eq(a->malformed, b->malformed, "%s @%zu", what, at);
    cr_expect_str_eq(a->model, b->model, "%s @%zu", what, at);
    cr_expect_eq(a->events, b->events, "%s @%zu", what, at);
}

/* Feeds d in pieces of `step` bytes (0: all at once); each piece is an
 * exact-size heap copy so ASan sees any read past a chunk. */
static result run_step(kr_proto proto, size_t max, const char *d, size_t n, size_t step, bool fin)
{
    kr_sse_usage s;
    kr_sse_usage_init(&s, proto, max);
    size_t off = 0;
    while (off < n) {
        size_t k = step && n - off > step ? step : n - off;
        char *piece = malloc(k);
        memcpy(piece, d + off, k);
        kr_sse_usage_feed(&s, piece, k);
        free(piece);
        off += k;
        cr_assert_leq(s.line.len, s.max_event);
        cr_assert_leq(s.data.len, s.max_event);
    }
    if (fin) kr_sse_usage_finish(&s);
    result r = snap(&s);
    kr_sse_usage_free(&s);
    return r;
}

static result run_split(kr_proto proto, size_t max, const char *d, size_t n, size_t cut)
{
    kr_sse_usage s;
    kr_sse_usage_init(&s, proto, max);
    kr_sse_usage_feed(&s, d, cut);
    kr_sse_usage_feed(&s, d + cut, n - cut);
    kr_sse_usage_finish(&s);
    result r = snap(&s);
    kr_sse_usage_free(&s);
    return r;
}

/* Whole, then at every two-way split point, then byte by byte and in a few
 * odd piece sizes: all must agree with `want`. */
static void check_all_splits(kr_proto proto, size_t max, const char *d, size_t n,
                             const result *want)
{
    result r = run_step(proto, max, d, n, 0, true);
    expect_same(&r, want, "whole", 0);
    for (size_t cut = 0; cut <= n; cut++) {
        r = run_split(proto, max, d, n, cut);
        expect_same(&r, want, "split", cut);
    }
    static const size_t steps[] = {1, 2, 3, 7, 64, 1000};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        r = run_step(proto, max, d, n, steps[i], true);
        expect_same(&r, want, "step", steps[i]);
    }
}

/* Replaces every LF with `eol`. */
static char *with_eol(const char *d, size_t n, const char *eol, size_t *outn)
{
    size_t el = strlen(eol), m = 0;
    char *o = malloc(n * el + 1);
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\n') {
            memcpy(o + m, eol, el);
            m += el;
        } else {
            o[m++] = d[i];
        }
    }
    *outn = m;
    return o;
}

static result anthropic_want(void)
{
    result w;
    memset(&w, 0, sizeof w);
    w.usage.input_tokens = 12;
    w.usage.output_tokens = 215;
    w.usage.cache_read_tokens = 45120;
    w.usage.cache_write_tokens = 3011;
    w.usage.seen = true;
    w.done = true;
    kr_strlcpy(w.model, "claude-sonnet-4-5-20250929", sizeof w.model);
    w.events = ANTHROPIC_EVENTS;
    return w;
}

static result openai_want(void)
{
    result w;
    memset(&w, 0, sizeof w);
    w.usage.input_tokens = 2006 - 1920;
    w.usage.output_tokens = 300;
    w.usage.cache_read_tokens = 1920;
    w.usage.seen = true;
    w.done = true;
    kr_strlcpy(w.model, "gpt-4o-2024-08-06", sizeof w.model);
    w.events = OPENAI_EVENTS;
    return w;
}

static result feed_str(kr_proto proto, size_t max, const char *d)
{
    return run_step(proto, max, d, strlen(d), 0, true);
}

/* ---- realistic streams ------------------------------------------------- */

Test(sse_usage, anthropic_stream_every_split)
{
    result w = anthropic_want();
    check_all_splits(KR_PROTO_ANTHROPIC, MIB, anthropic_stream, sizeof anthropic_stream - 1, &w);
}

Test(sse_usage, openai_stream_every_split)
{
    result w = openai_want();
    check_all_splits(KR_PROTO_OPENAI, MIB, openai_stream, sizeof openai_stream - 1, &w);
}

Test(sse_usage, crlf_and_cr_line_ends)
{
    static const char *const eols[] = {"\r\n", "\r"};
    for (size_t i = 0; i < 2; i++) {
        size_t n;
        char *d = with_eol(anthropic_stream, sizeof anthropic_stream - 1, eols[i], &n);
        result w = anthropic_want();
        check_all_splits(KR_PROTO_ANTHROPIC, MIB, d, n, &w);
        free(d);
        d = with_eol(openai_stream, sizeof openai_stream - 1, eols[i], &n);
        w = openai_want();
        check_all_splits(KR_PROTO_OPENAI, MIB, d, n, &w);
        free(d);
    }
}

#define FEED(s, lit) kr_sse_usage_feed((s), (lit), strlen(lit))

Test(sse_usage, cr_lf_split_across_chunks)
{
    kr_sse_usage s;
    kr_sse_usage_init(&s, KR_PROTO_ANTHROPIC, MIB);
    FEED(&s, "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\r");
    cr_expect(s.cr);
    /* the LF completes the CR: one line end, not a blank line */
    FEED(&s, "\n");
    cr_expect_not(s.cr);
    cr_expect_eq(s.events, 0);
    FEED(&s, "\r");
    cr_expect_eq(s.events, 1); /* a lone CR is a line end: this blank line dispatches */
    cr_expect_eq(s.usage.output_tokens, 3);
    FEED(&s, "\ndata: {\"type\":\"message_stop\"}\r");
    cr_expect_not(s.done);
    FEED(&s, "\r"); /* CR CR: a line end, then a blank line */
    cr_expect(s.done);
    cr_expect_eq(s.events, 2);
    cr_expect_not(s.malformed);
    kr_sse_usage_free(&s);
}

/* ---- framing ----------------------------------------------------------- */

Test(sse_usage, comments_fields_and_spaces)
{
    const char *d =
        ":ok\n"
        ": comment with data: {\"type\":\"message_stop\"}\n"
        "id: 1\n"
        "retry: 1000\n"
        "unknown-field: x\n"
        "event:message_delta\n"
        ":\n"
        "data:{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n"
        "\n"
        "data:  {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":4}}\n" /* two spaces */
        "\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect_eq(r.events, 2);
    cr_expect_eq(r.usage.output_tokens, 9);
    cr_expect_eq(r.usage.input_tokens, 4);
    cr_expect_not(r.done);
    cr_expect_not(r.malformed);
}

Test(sse_usage, multi_line_data)
{
    const char *d = "event: message_delta\n"
                    "data: {\"type\":\"message_delta\",\n"
                    "data:  \"usage\":\n"
                    "data: {\"output_tokens\":77}}\n"
                    "\n";
    result w;
    memset(&w, 0, sizeof w);
    w.usage.output_tokens = 77;
    w.usage.seen = true;
    w.events = 1;
    check_all_splits(KR_PROTO_ANTHROPIC, MIB, d, strlen(d), &w);

    /* lines are joined with LF: a string split across lines is invalid */
    const char *bad =
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1},\"x\":\"a\n"
        "data: b\"}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, bad);
    cr_expect(r.malformed);
    cr_expect_not(r.usage.seen);
}

Test(sse_usage, data_without_colon_and_empty_data)
{
    /* "data" alone is a data line with an empty value; an event of empty
     * data is dispatched (and is not JSON) */
    const char *d = "event: message_stop\ndata\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect_eq(r.events, 1);
    cr_expect(r.done); /* identified by its event name */
    cr_expect(r.malformed);
    /* an event with no data line is not dispatched at all */
    r = feed_str(KR_PROTO_ANTHROPIC, MIB, "event: message_stop\n\n");
    cr_expect_eq(r.events, 0);
    cr_expect_not(r.done);
}

Test(sse_usage, leading_bom)
{
    const char *d = "\xef\xbb\xbf"
                    "data: {\"type\":\"message_stop\"}\n\n";
    result w;
    memset(&w, 0, sizeof w);
    w.done = true;
    w.events = 1;
    check_all_splits(KR_PROTO_ANTHROPIC, MIB, d, strlen(d), &w);
}

Test(sse_usage, long_event_name_is_truncated)
{
    char d[512];
    int n = snprintf(d, sizeof d, "event: %0300d\ndata: {\"type\":\"message_stop\"}\n\n", 7);
    kr_sse_usage s;
    kr_sse_usage_init(&s, KR_PROTO_ANTHROPIC, MIB);
    kr_sse_usage_feed(&s, d, (size_t)n - 1); /* stop before the blank line */
    cr_expect_eq(strlen(s.event), sizeof s.event - 1);
    kr_sse_usage_feed(&s, "\n", 1);
    cr_expect(s.done);
    cr_expect_eq(s.event[0], 0);
    kr_sse_usage_free(&s);
}

/* ---- caps -------------------------------------------------------------- */

static char *oversized_then_normal(size_t payload, size_t *n, bool many_lines)
{
    size_t cap = payload * 2 + 512;
    char *d = malloc(cap);
    size_t m = 0;
    m += (size_t)snprintf(d + m, cap - m, "event: message_delta\n");
    if (many_lines) {
        /* many short data lines that together overflow */
        for (size_t i = 0; i < payload / 16; i++)
            m += (size_t)snprintf(d + m, cap - m, "data: 0123456789\n");
    } else {
        m += (size_t)snprintf(d + m, cap - m, "data: {\"type\":\"message_delta\",\"pad\":\"");
        memset(d + m, 'x', payload);
        m += payload;
        m += (size_t)snprintf(d + m, cap - m, "\",\"usage\":{\"output_tokens\":999}}\n");
    }
    m += (size_t)snprintf(d + m, cap - m,
                          "\nevent: message_delta\n"
                          "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n"
                          "data: {\"type\":\"message_stop\"}\n\n");
    *n = m;
    return d;
}

Test(sse_usage, oversized_event_then_normal)
{
    size_t max = 256;
    result w;
    memset(&w, 0, sizeof w);
    w.usage.output_tokens = 5;
    w.usage.seen = true;
    w.done = true;
    w.malformed = true;
    w.events = 2; /* the dropped event is not counted */
    for (int many = 0; many < 2; many++) {
        size_t n;
        char *d = oversized_then_normal(1000, &n, many);
        check_all_splits(KR_PROTO_ANTHROPIC, max, d, n, &w);
        free(d);
    }
}

Test(sse_usage, line_and_data_exactly_at_cap)
{
    /* a data line of exactly max bytes fits; its value is max - 6 bytes */
    const char *payload = "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}";
    char d[256];
    int n = snprintf(d, sizeof d, "data: %s\n\n", payload);
    size_t line = strlen("data: ") + strlen(payload);
    result r = run_step(KR_PROTO_ANTHROPIC, line, d, (size_t)n, 1, true);
    cr_expect_not(r.malformed);
    cr_expect_eq(r.usage.output_tokens, 5);
    r = run_step(KR_PROTO_ANTHROPIC, line, d, (size_t)n, 0, true);
    cr_expect_not(r.malformed);
    cr_expect_eq(r.usage.output_tokens, 5);
    r = run_step(KR_PROTO_ANTHROPIC, line - 1, d, (size_t)n, 1, true);
    cr_expect(r.malformed);
    cr_expect_eq(r.events, 0);
    r = run_step(KR_PROTO_ANTHROPIC, line - 1, d, (size_t)n, 0, true);
    cr_expect(r.malformed);
    cr_expect_eq(r.events, 0);
}

Test(sse_usage, huge_stream_without_line_end_is_bounded)
{
    kr_sse_usage s;
    kr_sse_usage_init(&s, KR_PROTO_OPENAI, 4096);
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 10000; i++) {
        kr_sse_usage_feed(&s, chunk, sizeof chunk);
        cr_assert_leq(s.line.len, 4096);
        cr_assert_leq(s.line.cap, 4097);
    }
    cr_expect(s.malformed);
    /* the next line is read normally */
    const char *rest = "\n\ndata: [DONE]\n\n";
    kr_sse_usage_feed(&s, rest, strlen(rest));
    cr_expect(s.done);
    kr_sse_usage_free(&s);
}

/* ---- cut streams ------------------------------------------------------- */

Test(sse_usage, stream_cut_midway)
{
    const char *d = anthropic_stream;
    const char *cut = strstr(d, "event: content_block_stop");
    cr_assert_not_null(cut);
    result r = run_step(KR_PROTO_ANTHROPIC, MIB, d, (size_t)(cut - d), 5, true);
    cr_expect(r.usage.seen);
    cr_expect_eq(r.usage.input_tokens, 12);
    cr_expect_eq(r.usage.output_tokens, 1);
    cr_expect_eq(r.usage.cache_read_tokens, 45120);
    cr_expect_eq(r.usage.cache_write_tokens, 3011);
    cr_expect_not(r.done);
    cr_expect_not(r.malformed);
    cr_expect_str_eq(r.model, "claude-sonnet-4-5-20250929");

    /* cut inside the message_delta data line: that event is broken */
    const char *md = strstr(d, "\"usage\":{\"output_tokens\":215");
    cr_assert_not_null(md);
    r = run_step(KR_PROTO_ANTHROPIC, MIB, d, (size_t)(md - d), 0, true);
    cr_expect_eq(r.usage.output_tokens, 1);
    cr_expect(r.malformed);
    cr_expect_not(r.done);
}

Test(sse_usage, finish_dispatches_last_event)
{
    /* no blank line (and no line end) after the last event */
    const char *d = "event: message_delta\n"
                    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}";
    kr_sse_usage s;
    kr_sse_usage_init(&s, KR_PROTO_ANTHROPIC, MIB);
    kr_sse_usage_feed(&s, d, strlen(d));
    cr_expect_eq(s.events, 0);
    kr_sse_usage_finish(&s);
    cr_expect_eq(s.events, 1);
    cr_expect_eq(s.usage.output_tokens, 42);
    cr_expect_not(s.malformed);
    kr_sse_usage_finish(&s); /* idempotent */
    cr_expect_eq(s.events, 1);
    kr_sse_usage_free(&s);

    /* OpenAI [DONE] without a trailing blank line */
    result r = feed_str(KR_PROTO_OPENAI, MIB, "data: [DONE]");
    cr_expect(r.done);
}

/* ---- content rules ----------------------------------------------------- */

Test(sse_usage, malformed_data_is_ignored)
{
    const char *d =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":500}\n\n" /* no } */
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7},}\n\n"
        "event: message_delta\n"
        "data: not json at all, message_delta\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect(r.malformed);
    cr_expect_eq(r.usage.input_tokens, 10);
    cr_expect_eq(r.usage.output_tokens, 20);
    cr_expect_eq(r.events, 5);
    cr_expect_not(r.done);

    const char *o = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\n\n"
                    "data: [DONE]\n\n";
    r = feed_str(KR_PROTO_OPENAI, MIB, o);
    cr_expect(r.malformed);
    cr_expect_not(r.usage.seen);
    cr_expect(r.done);
}

Test(sse_usage, anthropic_bad_fields)
{
    /* null fields are skipped; a bad value is skipped and flagged; the
     * others are still taken */
    const char *d = "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30,"
                    "\"input_tokens\":null,\"cache_read_input_tokens\":-1,"
                    "\"cache_creation_input_tokens\":1.5}}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect(r.usage.seen);
    cr_expect_eq(r.usage.output_tokens, 30);
    cr_expect_eq(r.usage.input_tokens, 0);
    cr_expect_eq(r.usage.cache_read_tokens, 0);
    cr_expect(r.malformed);

    /* two "usage" members: ambiguous, ignored */
    const char *dup = "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1},"
                      "\"usage\":{\"output_tokens\":100000}}\n\n";
    r = feed_str(KR_PROTO_ANTHROPIC, MIB, dup);
    cr_expect(r.malformed);
    cr_expect_not(r.usage.seen);
    cr_expect_eq(r.usage.output_tokens, 0);
}

Test(sse_usage, anthropic_cumulative_delta)
{
    /* newer streams repeat the input and cache counts in message_delta */
    const char *d =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-1\",\"usage\":"
        "{\"input_tokens\":100,\"output_tokens\":1,\"cache_read_input_tokens\":0,"
        "\"cache_creation_input_tokens\":0}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":120,\"output_tokens\":80,"
        "\"cache_read_input_tokens\":9,\"cache_creation_input_tokens\":11,"
        "\"server_tool_use\":{\"web_search_requests\":1}}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect_eq(r.usage.input_tokens, 120);
    cr_expect_eq(r.usage.output_tokens, 80);
    cr_expect_eq(r.usage.cache_read_tokens, 9);
    cr_expect_eq(r.usage.cache_write_tokens, 11);
    cr_expect_str_eq(r.model, "claude-opus-4-1");
    cr_expect(r.done);
    cr_expect_not(r.malformed);
}

Test(sse_usage, anthropic_type_wins_over_event_name)
{
    /* the JSON type decides; the event name is only a fallback */
    const char *d = "event: content_block_delta\n"
                    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n\n"
                    "event: message_stop\n"
                    "data: {\"type\":\"ping\"}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, d);
    cr_expect_eq(r.usage.output_tokens, 6);
    cr_expect_not(r.done);

    /* no type: the event name is used */
    r = feed_str(KR_PROTO_ANTHROPIC, MIB, "event: message_stop\ndata: {}\n\n");
    cr_expect(r.done);
    r = feed_str(KR_PROTO_ANTHROPIC, MIB,
                 "event: message_delta\ndata: {\"usage\":{\"output_tokens\":2}}\n\n");
    cr_expect_eq(r.usage.output_tokens, 2);

    /* a type spelled with escapes is still that type */
    r = feed_str(
        KR_PROTO_ANTHROPIC, MIB,
        "data: {\"typ\\u0065\":\"messag\\u0065_delta\",\"usage\":{\"output_tokens\":3}}\n\n"
        "data: {\"type\":\"m\\u0065ssage_stop\"}\n\n");
    cr_expect_eq(r.usage.output_tokens, 3);
    cr_expect(r.done);

    /* message_start's usage is under "message"; a top-level one is not read */
    r = feed_str(KR_PROTO_ANTHROPIC, MIB,
                 "data: {\"type\":\"message_start\",\"usage\":{\"input_tokens\":9}}\n\n");
    cr_expect_not(r.usage.seen);

    /* valid JSON that is not an object is not interesting, not malformed */
    r = feed_str(KR_PROTO_ANTHROPIC, MIB, "event: message_delta\ndata: [1,2]\n\n");
    cr_expect_not(r.malformed);
    cr_expect_not(r.usage.seen);
}

Test(sse_usage, error_events)
{
    const char *a = "event: message_start\n"
                    "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":8,"
                    "\"output_tokens\":1}}}\n\n"
                    "event: error\n"
                    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                    "\"message\":\"Overloaded\"}}\n\n";
    result r = feed_str(KR_PROTO_ANTHROPIC, MIB, a);
    cr_expect(r.error_event);
    cr_expect_not(r.done);
    cr_expect_eq(r.usage.input_tokens, 8);

    /* an error chunk in an OpenAI stream */
    const char *o = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":"
                    "{\"content\":\"a\"}}]}\n\n"
                    "data: {\"error\":{\"message\":\"The server had an error\",\"type\":"
                    "\"server_error\",\"param\":null,\"code\":null}}\n\n";
    r = feed_str(KR_PROTO_OPENAI, MIB, o);
    cr_expect(r.error_event);
    cr_expect_not(r.done);
    cr_expect_str_eq(r.model, "gpt-4o");

    /* "error" that is not an object, or only inside content, is no error */
    r = feed_str(KR_PROTO_OPENAI, MIB,
                 "data: {\"error\":null,\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\n");
    cr_expect_not(r.error_event);
    r = feed_str(KR_PROTO_ANTHROPIC, MIB,
                 "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":"
                 "{\"type\":\"text_delta\",\"text\":\"error\"}}\n\n");
    cr_expect_not(r.error_event);
}

Test(sse_usage, openai_usage_rules)
{
    /* no details: cached is 0 */
    result r = feed_str(KR_PROTO_OPENAI, MIB,
                        "data: {\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,"
                        "\"completion_tokens\":3,\"total_tokens\":13}}\n\n");
    cr_expect(r.usage.seen);
    cr_expect_eq(r.usage.input_tokens, 10);
    cr_expect_eq(r.usage.output_tokens, 3);
    cr_expect_eq(r.usage.cache_read_tokens, 0);
    cr_expect_str_eq(r.model, "m1");

    /* cached larger than prompt never underflows */
    r = feed_str(KR_PROTO_OPENAI, MIB,
                 "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":9}}}\n\n");
    cr_expect_eq(r.usage.input_tokens, 0);
    cr_expect_eq(r.usage.cache_read_tokens, 9);

    /* details null; usage null alone is not usage */
    r = feed_str(KR_PROTO_OPENAI, MIB,
                 "data: {\"usage\":{\"prompt_tokens\":5,\"prompt_tokens_details\":null}}\n\n");
    cr_expect(r.usage.seen);
    cr_expect_eq(r.usage.input_tokens, 5);
    cr_expect_not(r.malformed);
    r = feed_str(KR_PROTO_OPENAI, MIB, "data: {\"model\":\"x\",\"usage\":null}\n\n");
    cr_expect_not(r.usage.seen);
    cr_expect_str_eq(r.model, "x");

    /* the usage chunk's model wins over the first chunk's */
    r = feed_str(KR_PROTO_OPENAI, MIB,
                 "data: {\"model\":\"first\",\"choices\":[]}\n\n"
                 "data: {\"model\":\"second\",\"choices\":[]}\n\n"
                 "data: {\"model\":\"final\",\"usage\":{\"prompt_tokens\":1}}\n\n");
    cr_expect_str_eq(r.model, "final");
    r = feed_str(KR_PROTO_OPENAI, MIB,
                 "data: {\"model\":\"first\",\"choices\":[]}\n\n"
                 "data: {\"model\":\"second\",\"choices\":[]}\n\n");
    cr_expect_str_eq(r.model, "first");

    /* [DONE] must be exact */
    r = feed_str(KR_PROTO_OPENAI, MIB, "data: [DONE] \n\n");
    cr_expect_not(r.done);
    cr_expect(r.malformed);
}

Test(sse_usage, model_is_bounded)
{
    char d[600];
    char name[300];
    memset(name, 'm', sizeof name - 1);
    name[sizeof name - 1] = 0;
    int n = snprintf(d, sizeof d,
                     "data: {\"type\":\"message_start\",\"message\":{\"model\":\"%s\"}}\n\n", name);
    result r = run_step(KR_PROTO_ANTHROPIC, MIB, d, (size_t)n, 0, true);
    cr_expect_eq(strlen(r.model), 127);
    cr_expect_not(r.malformed);
}

Test(sse_usage, init_free_and_empty_feeds)
{
    kr_sse_usage s;
    kr_sse_usage_init(&s, KR_PROTO_ANTHROPIC, 0); /* 0: the default cap */
    cr_expect_gt(s.max_event, 0);
    kr_sse_usage_feed(&s, NULL, 0);
    kr_sse_usage_feed(&s, "", 0);
    kr_sse_usage_finish(&s);
    cr_expect_eq(s.events, 0);
    cr_expect_not(s.malformed);
    kr_sse_usage_free(&s);
    kr_sse_usage_free(&s);
}

/* ---- kr_usage_from_json ------------------------------------------------ */

Test(sse_usage, from_json_anthropic)
{
    const char *body =
        "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-"
        "sonnet-4-5-20250929\",\"content\":[{\"type\":\"text\",\"text\":\"Hi, \\\"usage\\\"\"}],"
        "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,"
        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":1500,\"output_tokens\":503,"
        "\"service_tier\":\"standard\"}}";
    kr_usage u;
    char model[64];
    cr_assert_eq(
        kr_usage_from_json(KR_PROTO_ANTHROPIC, body, strlen(body), &u, model, sizeof model), 0);
    cr_expect_eq(u.input_tokens, 2095);
    cr_expect_eq(u.output_tokens, 503);
    cr_expect_eq(u.cache_read_tokens, 1500);
    cr_expect_eq(u.cache_write_tokens, 0);
    cr_expect(u.seen);
    cr_expect_str_eq(model, "claude-sonnet-4-5-20250929");
    cr_expect_eq(kr_usage_from_json(KR_PROTO_ANTHROPIC, body, strlen(body), &u, NULL, 0), 0);
    /* a model that does not fit is cut */
    char small[7];
    cr_expect_eq(
        kr_usage_from_json(KR_PROTO_ANTHROPIC, body, strlen(body), &u, small, sizeof small), 0);
    cr_expect_str_eq(small, "claude");
}

Test(sse_usage, from_json_openai)
{
    const char *body =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1731000000,"
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"Hello\",\"refusal\":null},\"logprobs\":null,"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":9,"
        "\"total_tokens\":1209,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":"
        "0},\"completion_tokens_details\":{\"reasoning_tokens\":0}},\"system_fingerprint\":"
        "\"fp_1\"}";
    kr_usage u;
    char model[64];
    cr_assert_eq(kr_usage_from_json(KR_PROTO_OPENAI, body, strlen(body), &u, model, sizeof model),
                 0);
    cr_expect_eq(u.input_tokens, 176);
    cr_expect_eq(u.output_tokens, 9);
    cr_expect_eq(u.cache_read_tokens, 1024);
    cr_expect_eq(u.cache_write_tokens, 0);
    cr_expect(u.seen);
    cr_expect_str_eq(model, "gpt-4o-mini-2024-07-18");
}

Test(sse_usage, from_json_errors)
{
    static const struct {
        kr_proto proto;
        const char *body;
        int rc;
    } cases[] = {
        {KR_PROTO_ANTHROPIC, "{\"model\":\"m\"}", KR_ENOTFOUND},
        {KR_PROTO_ANTHROPIC, "{\"usage\":null}", KR_ENOTFOUND},
        {KR_PROTO_OPENAI, "{\"usage\":[1]}", KR_ENOTFOUND},
        {KR_PROTO_OPENAI, "[{\"usage\":{}}]", KR_ENOTFOUND},
        {KR_PROTO_OPENAI, "\"usage\"", KR_ENOTFOUND},
        {KR_PROTO_ANTHROPIC, "{\"type\":\"error\",\"error\":{\"type\":\"x\"}}", KR_ENOTFOUND},
        {KR_PROTO_ANTHROPIC, "", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "{\"usage\":{\"input_tokens\":1}", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "{\"usage\":{\"input_tokens\":1},}", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "[1,]", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "{\"usage\":{},\"usage\":{\"input_tokens\":1}}", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "{\"usage\":{\"input_tokens\":-1}}", KR_EPARSE},
        {KR_PROTO_ANTHROPIC, "{\"usage\":{\"input_tokens\":\"1\"}}", KR_EPARSE},
        {KR_PROTO_OPENAI, "{\"usage\":{\"prompt_tokens\":1e3}}", KR_EPARSE},
        {KR_PROTO_OPENAI, "{\"usage\":{\"prompt_tokens_details\":5}}", KR_EPARSE},
        {KR_PROTO_OPENAI, "{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2}}", KR_EPARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kr_usage u;
        char model[16];
        int rc = kr_usage_from_json(cases[i].proto, cases[i].body, strlen(cases[i].body), &u, model,
                                    sizeof model);
        cr_expect_eq(rc, cases[i].rc, "%s: %d", cases[i].body, rc);
        cr_expect_not(u.seen, "%s", cases[i].body);
        cr_expect_eq(u.input_tokens, 0, "%s", cases[i].body);
    }
    /* an empty usage object is usage of zero */
    kr_usage u;
    cr_expect_eq(kr_usage_from_json(KR_PROTO_ANTHROPIC, "{\"usage\":{}}", 12, &u, NULL, 0), 0);
    cr_expect(u.seen);
    cr_expect_eq(kr_usage_from_json(KR_PROTO_ANTHROPIC, NULL, 0, &u, NULL, 0), KR_EPARSE);
}

/* ---- Gemini ------------------------------------------------------------- */

/* A Gemini stream (alt=sse): usageMetadata is a running total on every
 * chunk; the last one counts, never the sum. CRLF framing as Google sends
 * it; the text of one chunk spells the field names to fool a substring
 * search. */
static const char gemini_stream[] =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},"
    "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 1200,\"cachedContentTokenCount\": "
    "1000,\"candidatesTokenCount\": 1,\"totalTokenCount\": 1201,\"promptTokensDetails\": "
    "[{\"modality\": \"TEXT\",\"tokenCount\": 1200}]},\"modelVersion\": \"gemini-2.5-flash\","
    "\"responseId\": \"r1\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo \\\"finishReason\\\": "
    "\\\"usageMetadata\\\"\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": "
    "{\"promptTokenCount\": 1200,\"cachedContentTokenCount\": 1000,\"candidatesTokenCount\": 7,"
    "\"thoughtsTokenCount\": 40,\"totalTokenCount\": 1247},\"modelVersion\": "
    "\"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"}],\"role\": \"model\"},"
    "\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 1200,"
    "\"cachedContentTokenCount\": 1000,\"candidatesTokenCount\": 9,\"thoughtsTokenCount\": 40,"
    "\"toolUsePromptTokenCount\": 25,\"totalTokenCount\": 1274},\"modelVersion\": "
    "\"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n";

static kr_usage gemini_feed(const char *d, size_t n, size_t step, kr_sse_usage *s)
{
    kr_sse_usage_init_wire(s, KR_WIRE_GEMINI, MIB);
    for (size_t i = 0; i < n; i += step)
        kr_sse_usage_feed(s, d + i, n - i < step ? n - i : step);
    kr_sse_usage_finish(s);
    return s->usage;
}

Test(sse_usage, gemini_stream_last_usage_wins_at_every_split)
{
    size_t n = sizeof gemini_stream - 1;
    for (size_t step = 1; step <= n; step += step < 64 ? 1 : 97) {
        kr_sse_usage s;
        kr_usage u = gemini_feed(gemini_stream, n, step, &s);
        /* input = prompt - cached + tool-use prompt; output = candidates + thoughts */
        cr_assert_eq(u.input_tokens, 1200 - 1000 + 25, "step %zu", step);
        cr_assert_eq(u.cache_read_tokens, 1000);
        cr_assert_eq(u.output_tokens, 9 + 40);
        cr_assert_eq(u.cache_write_tokens, 0);
        cr_assert(u.seen && s.done && !s.malformed && !s.error_event);
        cr_assert_eq(s.events, 3);
        cr_assert_str_eq(s.model, "gemini-2.5-flash");
        kr_sse_usage_free(&s);
    }
}

Test(sse_usage, gemini_cut_stream_is_not_done_but_keeps_its_usage)
{
    const char *cut = strstr(gemini_stream, "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"");
    kr_sse_usage s;
    kr_usage u = gemini_feed(gemini_stream, (size_t)(cut - gemini_stream), 7, &s);
    cr_assert(!s.done, "the text of a chunk named finishReason: not a finish");
    cr_assert_eq(u.output_tokens, 7 + 40);
    cr_assert_eq(u.input_tokens, 200);
    kr_sse_usage_free(&s);
}

Test(sse_usage, gemini_error_chunk_and_garbage)
{
    const char *d = "data: {\"error\": {\"code\": 503, \"message\": \"overloaded\", \"status\": "
                    "\"UNAVAILABLE\"}}\r\n\r\ndata: [1,2\r\n\r\ndata: \"text\"\r\n\r\n";
    kr_sse_usage s;
    gemini_feed(d, strlen(d), 5, &s);
    cr_assert(s.error_event && s.malformed && !s.usage.seen && !s.done);
    kr_sse_usage_free(&s);
}

Test(sse_usage, from_json_gemini_object_and_array)
{
    const char *one = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}],\"role\":\"model\"},"
                      "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":50,"
                      "\"candidatesTokenCount\":5,\"thoughtsTokenCount\":3,\"totalTokenCount\":58},"
                      "\"modelVersion\":\"gemini-2.5-pro\"}";
    kr_usage u;
    char model[64];
    cr_assert_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, one, strlen(one), &u, model, sizeof model), 0);
    cr_expect_eq(u.input_tokens, 50);
    cr_expect_eq(u.output_tokens, 8);
    cr_expect_str_eq(model, "gemini-2.5-pro");
    /* streamGenerateContent without alt=sse: a JSON array of chunks, running totals */
    const char *arr = "[{\"usageMetadata\":{\"promptTokenCount\":50,\"candidatesTokenCount\":1}},"
                      "{\"candidates\":[]},"
                      "{\"usageMetadata\":{\"promptTokenCount\":50,\"candidatesTokenCount\":9,"
                      "\"cachedContentTokenCount\":20}}]";
    cr_assert_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, arr, strlen(arr), &u, NULL, 0), 0);
    cr_expect_eq(u.input_tokens, 30);
    cr_expect_eq(u.cache_read_tokens, 20);
    cr_expect_eq(u.output_tokens, 9);
    cr_expect_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, "{\"candidates\":[]}", 17, &u, NULL, 0),
                 KR_ENOTFOUND);
    cr_expect_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, "[{\"a\":1},", 9, &u, NULL, 0), KR_EPARSE);
    cr_expect_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, "{\"usageMetadata\":{\"promptTokenCount\":-1}}",
                                         41, &u, NULL, 0),
                 KR_EPARSE);
    /* a bad element after a good one: an error, and nothing of the good one
     * is kept (found by fuzz_sse_usage) */
    const char *bad = "[{\"usageMetadata\":{\"promptTokenCount\":50,\"candidatesTokenCount\":1}},"
                      "{\"usageMetadata\":{\"promptTokenCount\":-1}}]";
    cr_expect_eq(kr_usage_from_json_wire(KR_WIRE_GEMINI, bad, strlen(bad), &u, NULL, 0), KR_EPARSE);
    cr_expect(!u.seen && !u.input_tokens && !u.output_tokens);
}
