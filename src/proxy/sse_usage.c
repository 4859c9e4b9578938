/*
 * sse_usage.c -- token usage out of a streamed vendor response (see
 * sse_usage.h).
 *
 * Framing follows the HTML "server-sent events" parsing rules: a line ends at
 * LF, CRLF or a lone CR (a CR that ends one chunk and an LF that starts the
 * next are one line end, hence s->cr); "field: value" with one optional
 * space; ':' starts a comment; data lines are joined with LF; a blank line
 * dispatches; an event without data lines is not dispatched; a leading UTF-8
 * BOM is dropped. Unlike a browser, kr_sse_usage_finish() dispatches a last
 * event that the stream cut before its blank line: its usage is still real.
 *
 * Lines are found with memchr and, when complete inside one chunk, handled in
 * place; only a line split across chunks is copied into s->line. Every cap
 * decision depends on a line's or an event's total length alone, so the
 * result is the same however the stream is chunked. A line longer than
 * max_event (or an event whose data grows past it) sets `malformed` and the
 * whole event is dropped up to its blank line; parsing resumes with the next.
 *
 * Only events that can carry what we want are JSON-scanned (the filters are
 * exact: see anthropic_event / openai_event); when one is, the document is
 * fully validated by jscan before any value is taken from it.
 */
#include "proxy/sse_usage.h"

#include "core/err.h"
#include "proxy/jscan.h"

#include <string.h>

#define DEFAULT_MAX_EVENT ((size_t)1 << 20)

void kr_sse_usage_init(kr_sse_usage *s, kr_proto proto, size_t max_event)
{
    kr_sse_usage_init_wire(s, proto == KR_PROTO_OPENAI   ? KR_WIRE_OPENAI_CHAT
                              : proto == KR_PROTO_GEMINI ? KR_WIRE_GEMINI
                                                         : KR_WIRE_ANTHROPIC,
                           max_event);
}

void kr_sse_usage_init_wire(kr_sse_usage *s, kr_wire wire, size_t max_event)
{
    memset(s, 0, sizeof *s);
    s->wire = wire;
    s->proto = wire == KR_WIRE_ANTHROPIC ? KR_PROTO_ANTHROPIC
               : wire == KR_WIRE_GEMINI  ? KR_PROTO_GEMINI
                                         : KR_PROTO_OPENAI;
    s->max_event = max_event ? max_event : DEFAULT_MAX_EVENT;
    kr_buf_init(&s->line, s->max_event);
    kr_buf_init(&s->data, s->max_event);
    s->first_line = true;
}

void kr_sse_usage_free(kr_sse_usage *s)
{
    kr_buf_free(&s->line);
    kr_buf_free(&s->data);
}

/* ---- usage objects (shared with kr_usage_from_json) -------------------- */

/* 1 and *x for an unsigned integer, 0 for absent or null, KR_EPARSE else. */
static int field_u64(const kr_jval *v, uint64_t *x)
{
    if (v->type == KR_JSON_ABSENT || v->type == KR_JSON_NULL) return 0;
    return kr_jval_u64(v, x) == 0 ? 1 : KR_EPARSE;
}

/* Anthropic usage object: each field present overwrites (values are
 * cumulative). Good fields are taken even when another one is bad. */
static int anthropic_usage(const kr_jval *obj, kr_usage *u)
{
    static const char *const keys[] = {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                       "cache_creation_input_tokens"};
    uint64_t *dst[] = {&u->input_tokens, &u->output_tokens, &u->cache_read_tokens,
                       &u->cache_write_tokens};
    kr_jval f[4];
    if (kr_json_object_get(obj->p, obj->n, keys, f, 4)) return KR_EPARSE;
    int rc = 0;
    u->seen = true;
    for (size_t i = 0; i < 4; i++) {
        uint64_t x;
        int r = field_u64(&f[i], &x);
        if (r == 1)
            *dst[i] = x;
        else if (r < 0)
            rc = KR_EPARSE;
    }
    return rc;
}

/* OpenAI usage object: the whole record is replaced; missing fields are 0;
 * input = prompt - cached, clamped at 0. */
static int openai_usage(const kr_jval *obj, kr_usage *u)
{
    static const char *const keys[] = {"prompt_tokens", "completion_tokens",
                                       "prompt_tokens_details"};
    static const char *const dkeys[] = {"cached_tokens"};
    kr_jval f[3], c;
    uint64_t prompt = 0, completion = 0, cached = 0;
    int rc = 0;
    if (kr_json_object_get(obj->p, obj->n, keys, f, 3)) return KR_EPARSE;
    if (field_u64(&f[0], &prompt) < 0) rc = KR_EPARSE;
    if (field_u64(&f[1], &completion) < 0) rc = KR_EPARSE;
    if (f[2].type == KR_JSON_OBJECT) {
        if (kr_json_object_get(f[2].p, f[2].n, dkeys, &c, 1) || field_u64(&c, &cached) < 0)
            rc = KR_EPARSE;
    } else if (f[2].type != KR_JSON_ABSENT && f[2].type != KR_JSON_NULL) {
        rc = KR_EPARSE;
    }
    u->input_tokens = prompt > cached ? prompt - cached : 0;
    u->output_tokens = completion;
    u->cache_read_tokens = cached;
    u->cache_write_tokens = 0;
    u->seen = true;
    return rc;
}

/* Responses API usage object: input_tokens includes the cached ones;
 * output_tokens includes reasoning. The whole record is replaced. */
static int responses_usage(const kr_jval *obj, kr_usage *u)
{
    static const char *const keys[] = {"input_tokens", "output_tokens", "input_tokens_details"};
    static const char *const dkeys[] = {"cached_tokens"};
    kr_jval f[3], c;
    uint64_t input = 0, output = 0, cached = 0;
    int rc = 0;
    if (kr_json_object_get(obj->p, obj->n, keys, f, 3)) return KR_EPARSE;
    if (field_u64(&f[0], &input) < 0) rc = KR_EPARSE;
    if (field_u64(&f[1], &output) < 0) rc = KR_EPARSE;
    if (f[2].type == KR_JSON_OBJECT) {
        if (kr_json_object_get(f[2].p, f[2].n, dkeys, &c, 1) || field_u64(&c, &cached) < 0)
            rc = KR_EPARSE;
    } else if (f[2].type != KR_JSON_ABSENT && f[2].type != KR_JSON_NULL) {
        rc = KR_EPARSE;
    }
    u->input_tokens = input > cached ? input - cached : 0;
    u->output_tokens = output;
    u->cache_read_tokens = cached;
    u->cache_write_tokens = 0;
    u->seen = true;
    return rc;
}

/* Gemini usageMetadata: a running total, so the whole record is replaced.
 * promptTokenCount includes the cached tokens; the tool-use prompt is billed
 * at the input rate, thoughts at the output rate. */
static int gemini_usage(const kr_jval *obj, kr_usage *u)
{
    static const char *const keys[] = {"promptTokenCount", "cachedContentTokenCount",
                                       "candidatesTokenCount", "thoughtsTokenCount",
                                       "toolUsePromptTokenCount"};
    kr_jval f[5];
    uint64_t x[5] = {0, 0, 0, 0, 0};
    int rc = 0;
    if (kr_json_object_get(obj->p, obj->n, keys, f, 5)) return KR_EPARSE;
    for (size_t i = 0; i < 5; i++)
        if (field_u64(&f[i], &x[i]) < 0) rc = KR_EPARSE;
    uint64_t prompt = x[0], cached = x[1];
    u->input_tokens = (prompt > cached ? prompt - cached : 0) + x[4];
    u->cache_read_tokens = cached;
    u->output_tokens = x[2] + x[3];
    u->cache_write_tokens = 0;
    u->seen = true;
    return rc;
}

static void copy_model(char *dst, size_t cap, const kr_jval *v)
{
    /* too long: kr_jval_str keeps the longest whole-character prefix */
    if (kr_jval_str(v, dst, cap, NULL) == KR_EINVAL) dst[0] = 0;
}

static bool starts_object(const char *d, size_t n)
{
    size_t i = 0;
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r'))
        i++;
    return i < n && d[i] == '{';
}

/* kr_json_object_get that records invalid JSON (or an object naming a wanted
 * key twice) as malformed. Valid JSON that is not an object is just not
 * interesting. */
static bool event_object(kr_sse_usage *s, const char *d, size_t n, const char *const *keys,
                         kr_jval *v, size_t nkeys)
{
    if (kr_json_object_get(d, n, keys, v, nkeys) == 0) return true;
    if (starts_object(d, n) || kr_json_validate(d, n) != 0) s->malformed = true;
    return false;
}

/* Whether any of the needles (a NULL-terminated list, each at least two
 * bytes) occurs in d[0..n): one pass over d, a byte's needles tried only
 * where it starts one. The pre-filter below runs on every event of a
 * stream, so this is the stream's hottest search (three memmem calls per
 * event cost more than the pass). */
static bool contains_any(const char *d, size_t n, const char *const *needles)
{
    unsigned char first[256] = {0};
    size_t len[8];
    size_t k = 0;
    for (; k < 8 && needles[k]; k++) {
        first[(unsigned char)needles[k][0]] = 1;
        len[k] = strlen(needles[k]);
    }
    for (size_t i = 0; i < n; i++) {
        if (!first[(unsigned char)d[i]]) continue;
        for (size_t j = 0; j < k; j++)
            if (d[i] == needles[j][0] && len[j] <= n - i && !memcmp(d + i, needles[j], len[j]))
                return true;
    }
    return false;
}

/* ---- events ------------------------------------------------------------ */

enum { EV_OTHER = 0, EV_START, EV_DELTA, EV_STOP, EV_ERROR };

static int kind_of_name(const char *name)
{
    if (!strcmp(name, "message_start")) return EV_START;
    if (!strcmp(name, "message_delta")) return EV_DELTA;
    if (!strcmp(name, "message_stop")) return EV_STOP;
    if (!strcmp(name, "error")) return EV_ERROR;
    return EV_OTHER;
}

static int kind_of_type(const kr_jval *t)
{
    if (kr_jval_str_eq(t, "message_start")) return EV_START;
    if (kr_jval_str_eq(t, "message_delta")) return EV_DELTA;
    if (kr_jval_str_eq(t, "message_stop")) return EV_STOP;
    if (kr_jval_str_eq(t, "error")) return EV_ERROR;
    return EV_OTHER;
}

static void anthropic_event(kr_sse_usage *s, const char *d, size_t n)
{
    static const char *const keys[] = {"type", "message", "usage"};
    int byname = kind_of_name(s->event);
    /* The bulk of a stream is content_block_delta. A "type" that names one
     * of ours contains "message_" or "error" literally, or spells them with
     * a \u escape (no other escape yields a letter or '_'); otherwise the
     * event is none of ours and is left unscanned. */
    static const char *const ours[] = {"message_", "error", "\\u", NULL};
    if (byname == EV_OTHER && !contains_any(d, n, ours)) return;

    kr_jval v[3];
    bool ok = event_object(s, d, n, keys, v, 3);
    int kind = ok && v[0].type == KR_JSON_STRING ? kind_of_type(&v[0]) : byname;
    switch (kind) {
    case EV_START:
        if (ok && v[1].type == KR_JSON_OBJECT) {
            static const char *const mkeys[] = {"usage", "model"};
            kr_jval m[2];
            if (kr_json_object_get(v[1].p, v[1].n, mkeys, m, 2)) {
                s->malformed = true; /* a duplicate "usage" or "model" */
                break;
            }
            if (m[0].type == KR_JSON_OBJECT && anthropic_usage(&m[0], &s->usage))
                s->malformed = true;
            if (m[1].type == KR_JSON_STRING) copy_model(s->model, sizeof s->model, &m[1]);
        }
        break;
    case EV_DELTA:
        if (ok && v[2].type == KR_JSON_OBJECT && anthropic_usage(&v[2], &s->usage))
            s->malformed = true;
        break;
    case EV_STOP:
        s->done = true;
        break;
    case EV_ERROR:
        s->error_event = true;
        break;
    default:
        break;
    }
}

static void openai_event(kr_sse_usage *s, const char *d, size_t n)
{
    static const char *const keys[] = {"usage", "model", "error"};
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
        s->done = true;
        return;
    }
    /* Scan the chunks that can name "usage" or "error" (literally or via a
     * \u escape), and the first ones until a model is known. */
    static const char *const ours[] = {"usage", "error", "\\u", NULL};
    if (s->model[0] && !contains_any(d, n, ours)) return;

    kr_jval v[3];
    if (!event_object(s, d, n, keys, v, 3)) return;
    bool has_usage = v[0].type == KR_JSON_OBJECT;
    if (has_usage && openai_usage(&v[0], &s->usage)) s->malformed = true;
    /* the model of the usage chunk wins; until then the first one seen */
    if (v[1].type == KR_JSON_STRING && (has_usage || !s->model[0]))
        copy_model(s->model, sizeof s->model, &v[1]);
    if (v[2].type == KR_JSON_OBJECT) s->error_event = true;
}

/* Responses API: the final events carry the whole response object. */
static bool responses_final(const char *name)
{
    return !strcmp(name, "response.completed") || !strcmp(name, "response.incomplete") ||
           !strcmp(name, "response.failed");
}

static void responses_event(kr_sse_usage *s, const char *d, size_t n)
{
    static const char *const keys[] = {"type", "response"};
    /* The bulk of a stream is output_text deltas: only an event named (or
     * typed) as one of ours is scanned; a "type" spelled with \u escapes is
     * scanned too. */
    bool named = s->event[0] != 0;
    if (named && !responses_final(s->event) && strcmp(s->event, "error") &&
        strcmp(s->event, "response.created"))
        return;
    static const char *const ours[] = {"response.completed", "response.incomplete",
                                       "response.failed",    "error",
                                       "response.created",   "\\u",
                                       NULL};
    if (!named && !contains_any(d, n, ours))
        return;
    kr_jval v[2];
    if (!event_object(s, d, n, keys, v, 2)) return;
    char type[64] = "";
    if (v[0].type == KR_JSON_STRING && kr_jval_str(&v[0], type, sizeof type, NULL)) type[0] = 0;
    if (!type[0] && named) kr_strlcpy(type, s->event, sizeof type);
    if (!strcmp(type, "error")) {
        s->error_event = true;
        return;
    }
    bool final = responses_final(type);
    if (!final && strcmp(type, "response.created")) return;
    if (v[1].type != KR_JSON_OBJECT) return;
    static const char *const rkeys[] = {"usage", "model"};
    kr_jval r[2];
    if (kr_json_object_get(v[1].p, v[1].n, rkeys, r, 2)) {
        s->malformed = true;
        return;
    }
    if (r[1].type == KR_JSON_STRING && (final || !s->model[0]))
        copy_model(s->model, sizeof s->model, &r[1]);
    if (!final) return;
    if (r[0].type == KR_JSON_OBJECT && responses_usage(&r[0], &s->usage)) s->malformed = true;
    if (!strcmp(type, "response.failed")) s->error_event = true;
    else s->done = true;
}

/* A GenerateContentResponse (one stream chunk, or a whole body): its usage,
 * its model and whether a candidate finished. */
static int gemini_response(const char *d, size_t n, kr_usage *u, char *model, size_t modelcap,
                           bool *finished, bool *error)
{
    static const char *const keys[] = {"usageMetadata", "modelVersion", "candidates", "error"};
    kr_jval v[4];
    if (kr_json_object_get(d, n, keys, v, 4)) return KR_EPARSE;
    int rc = 0;
    if (v[0].type == KR_JSON_OBJECT && gemini_usage(&v[0], u)) rc = KR_EPARSE;
    if (model && v[1].type == KR_JSON_STRING) copy_model(model, modelcap, &v[1]);
    if (error && v[3].type == KR_JSON_OBJECT) *error = true;
    kr_jval c, fr;
    static const char *const ckeys[] = {"finishReason"};
    const char *pos = NULL;
    while (finished && v[2].type == KR_JSON_ARRAY && !kr_json_array_next(&v[2], &pos, &c)) {
        if (c.type == KR_JSON_OBJECT && !kr_json_object_get(c.p, c.n, ckeys, &fr, 1) &&
            fr.type == KR_JSON_STRING)
            *finished = true;
    }
    return rc;
}

static void gemini_event(kr_sse_usage *s, const char *d, size_t n)
{
    if (!starts_object(d, n)) {
        if (kr_json_validate(d, n)) s->malformed = true;
        return;
    }
    if (gemini_response(d, n, &s->usage, s->model, sizeof s->model, &s->done, &s->error_event))
        s->malformed = true;
}

static void end_event(kr_sse_usage *s)
{
    kr_buf_reset(&s->data);
    s->has_data = false;
    s->skip_event = false;
    s->event[0] = 0;
}

static void dispatch(kr_sse_usage *s)
{
    if (!s->skip_event && s->has_data) {
        s->events++;
        const char *d = s->data.data ? s->data.data : "";
        if (s->wire == KR_WIRE_OPENAI_RESPONSES)
            responses_event(s, d, s->data.len);
        else if (s->wire == KR_WIRE_GEMINI)
            gemini_event(s, d, s->data.len);
        else if (s->proto == KR_PROTO_OPENAI)
            openai_event(s, d, s->data.len);
        else
            anthropic_event(s, d, s->data.len);
    }
    end_event(s);
}

/* The event ran over the cap: drop it up to its blank line. */
static void event_overflow(kr_sse_usage *s)
{
    s->malformed = true;
    /* a final Responses event too large to read: its usage is lost, and the
     * stream is over all the same */
    if (s->wire == KR_WIRE_OPENAI_RESPONSES && responses_final(s->event)) {
        s->usage_lost = true;
        s->done = true;
    }
    s->skip_event = true;
    kr_buf_reset(&s->data);
    s->has_data = false;
}

/* ---- lines ------------------------------------------------------------- */

/* One complete line, without its terminator. */
static void process_line(kr_sse_usage *s, const char *l, size_t n)
{
    if (s->first_line) {
        s->first_line = false;
        if (n >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0) {
            l += 3;
            n -= 3;
        }
    }
    if (n == 0) {
        dispatch(s);
        return;
    }
    if (l[0] == ':' || s->skip_event) return;

    const char *colon = memchr(l, ':', n);
    size_t fn = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vn = (size_t)(l + n - v);
    if (vn && *v == ' ') {
        v++;
        vn--;
    }
    if (fn == 4 && memcmp(l, "data", 4) == 0) {
        if ((s->has_data && kr_buf_putc(&s->data, '\n')) || kr_buf_append(&s->data, v, vn)) {
            event_overflow(s);
            return;
        }
        s->has_data = true;
    } else if (fn == 5 && memcmp(l, "event", 5) == 0) {
        size_t k = vn < sizeof s->event - 1 ? vn : sizeof s->event - 1;
        memcpy(s->event, v, k);
        s->event[k] = 0;
    }
    /* id, retry and unknown fields do not matter here */
}

/* A line end was found; p[0..n) is the part of the line in this chunk. */
static void take_line(kr_sse_usage *s, const char *p, size_t n)
{
    if (s->skip_line) { /* tail of an over-long line */
        s->skip_line = false;
        s->first_line = false;
        return;
    }
    if (s->line.len) {
        if (kr_buf_append(&s->line, p, n) == 0) {
            process_line(s, s->line.data, s->line.len);
        } else {
            s->first_line = false;
            event_overflow(s);
        }
        kr_buf_reset(&s->line);
        return;
    }
    if (n > s->max_event) {
        s->first_line = false;
        event_overflow(s);
        return;
    }
    process_line(s, p, n);
}

/* The chunk ended inside a line: keep the start for the next chunk. */
static void carry(kr_sse_usage *s, const char *p, size_t n)
{
    if (s->skip_line) return;
    if (kr_buf_append(&s->line, p, n)) {
        kr_buf_reset(&s->line);
        s->skip_line = true;
        event_overflow(s);
    }
}

void kr_sse_usage_feed(kr_sse_usage *s, const char *p, size_t n)
{
    if (!p || !n) return;
    const char *end = p + n;
    const char *nl = NULL; /* next LF at or after p (end when none); NULL: not searched */
    if (s->cr) {
        s->cr = false;
        if (*p == '\n') p++;
    }
    while (p < end) {
        if (!nl || nl < p) {
            nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) nl = end;
        }
        const char *eol = memchr(p, '\r', (size_t)(nl - p));
        if (!eol) eol = nl;
        if (eol == end) {
            carry(s, p, (size_t)(end - p));
            return;
        }
        take_line(s, p, (size_t)(eol - p));
        p = eol + 1;
        if (*eol == '\r') {
            if (p == end) {
                s->cr = true;
                return;
            }
            if (*p == '\n') p++;
        }
    }
}

void kr_sse_usage_finish(kr_sse_usage *s)
{
    s->cr = false;
    if (s->skip_line)
        s->skip_line = false;
    else if (s->line.len)
        process_line(s, s->line.data, s->line.len);
    kr_buf_reset(&s->line);
    dispatch(s);
}

/* ---- non-streaming ----------------------------------------------------- */

/* A whole Gemini body: one response, or the array a stream without alt=sse
 * answers (the last element's usage: a running total). */
static int gemini_body(const char *body, size_t n, kr_usage *u, char *model, size_t modelcap)
{
    if (!body) return KR_EPARSE;
    size_t i = 0;
    while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) i++;
    int rc;
    if (i < n && body[i] == '[') {
        if (kr_json_validate(body, n)) return KR_EPARSE;
        kr_jval arr = {KR_JSON_ARRAY, body + i, n - i}, e;
        const char *pos = NULL;
        rc = KR_ENOTFOUND;
        while (!kr_json_array_next(&arr, &pos, &e)) {
            if (e.type != KR_JSON_OBJECT) continue;
            kr_usage one = {0};
            if (gemini_response(e.p, e.n, &one, model, modelcap, NULL, NULL)) {
                rc = KR_EPARSE; /* nothing of the earlier elements is kept */
                break;
            }
            if (one.seen) *u = one, rc = 0;
        }
    } else {
        rc = gemini_response(body, n, u, model, modelcap, NULL, NULL);
        if (!rc && !u->seen) rc = KR_ENOTFOUND;
    }
    if (rc) memset(u, 0, sizeof *u);
    return rc;
}

int kr_usage_from_json(kr_proto proto, const char *body, size_t n, kr_usage *u, char *model,
                       size_t modelcap)
{
    return kr_usage_from_json_wire(proto == KR_PROTO_OPENAI   ? KR_WIRE_OPENAI_CHAT
                                   : proto == KR_PROTO_GEMINI ? KR_WIRE_GEMINI
                                                              : KR_WIRE_ANTHROPIC,
                                   body, n, u, model, modelcap);
}

int kr_usage_from_json_wire(kr_wire wire, const char *body, size_t n, kr_usage *u, char *model,
                            size_t modelcap)
{
    static const char *const keys[] = {"usage", "model"};
    kr_jval v[2];
    int rc;
    if (!u) return KR_EINVAL;
    memset(u, 0, sizeof *u);
    if (model && modelcap) model[0] = 0;
    if (wire == KR_WIRE_GEMINI) return gemini_body(body, n, u, model, modelcap);
    if (kr_json_object_get(body, n, keys, v, 2)) {
        if (body && !starts_object(body, n) && kr_json_validate(body, n) == 0) return KR_ENOTFOUND;
        return KR_EPARSE;
    }
    if (model && modelcap && v[1].type == KR_JSON_STRING) copy_model(model, modelcap, &v[1]);
    if (v[0].type != KR_JSON_OBJECT) return KR_ENOTFOUND;
    rc = wire == KR_WIRE_OPENAI_RESPONSES ? responses_usage(&v[0], u)
         : wire == KR_WIRE_OPENAI_CHAT    ? openai_usage(&v[0], u)
                                          : anthropic_usage(&v[0], u);
    if (rc) {
        memset(u, 0, sizeof *u);
        return KR_EPARSE;
    }
    return 0;
}
