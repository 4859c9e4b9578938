/*
 * keyrail-fakevendor -- a fake upstream LLM vendor (Anthropic Messages, OpenAI
 * chat completions and OpenAI Responses wire formats) for keyrail's
 * integration tests, end-to-end tests with the real Claude Code / Codex CLIs
 * and official SDKs, demos and benchmarks.
 *
 * Standalone: one C file, libuv + libhttp-parser (2.9) + OpenSSL (for
 * --tls-cert only), nothing from keyrail itself.  Single-threaded libuv loop;
 * keep-alive; pipelined requests are answered strictly in order; no
 * per-request heap allocation in steady state (connection, record and
 * scratch buffers are reused; only a buffer grown past 1 MiB, e.g. by pad=,
 * is freed after use).
 *
 * USAGE
 *   keyrail-fakevendor [--listen HOST:PORT] [--port-file FILE] [--record FILE]
 *                      [--quiet] [--tls-cert FILE --tls-key FILE]
 *     --listen     default 127.0.0.1:0; port 0 picks a free port.  IPv6 as
 *                  [::1]:PORT.
 *     --port-file  after listening, the actual port ("PORT\n") is written to
 *                  FILE.tmp.<pid> and renamed to FILE (atomic for pollers).
 *     --record     append one JSON line per finished request to FILE.
 *     --quiet      no per-request log lines on stderr (use for benchmarks).
 *     --tls-cert, --tls-key
 *                  serve HTTPS: every connection is TLS (1.2 or 1.3), with
 *                  this certificate chain (PEM, leaf first) and private key
 *                  (PEM).  Both or neither.  See TLS below.
 *   Always prints "listening on HOST:PORT" to stdout once listening.
 *   SIGTERM / SIGINT: clean exit (status 0).
 *   Debug aid: `keyrail-fakevendor --sha256-stdin` prints the SHA-256 of stdin.
 *
 * ENDPOINTS (matched by path suffix, so base URLs may carry a prefix such as
 * /minimax/anthropic; absolute-form request targets are accepted too)
 *   POST .../v1/messages               Anthropic Messages (stream or not;
 *                                      ?beta=true and other queries ignored)
 *   POST .../v1/messages/count_tokens  {"input_tokens": IN}
 *   POST .../v1/chat/completions       OpenAI chat completions (stream or not;
 *                                      honours stream_options.include_usage)
 *   POST .../v1/responses              OpenAI Responses API (stream or not; see
 *                                      RESPONSES API below); errors OpenAI-shaped
 *   GET  .../v1/models                 Anthropic list shape if the request has
 *                                      an anthropic-version header, else the
 *                                      OpenAI {"object":"list",...} shape
 *   GET    /_fake/requests[?since=SEQ] JSON array of recorded requests
 *   DELETE /_fake/requests             hide all records so far, reset storm
 *                                      and the /_fake/stats counters
 *   GET    /_fake/stats                cumulative counters since start or the
 *                                      last DELETE (see STATS below)
 *   GET    /_fake/healthz              200 {"ok":true}
 *   anything else                      404, Anthropic-shaped JSON error
 *   /_fake/... requests are never recorded and ignore overrides/fault modes.
 *
 * DETERMINISM (the defaults; every value is overridable, see below)
 *   IN    = 1 + body_bytes / 4       (integer division; decoded body length)
 *   N     = 8                        text delta events in a stream
 *   OUT   = 2 * N                    (16 by default)
 *   cache_read = cache_write = 0
 *   REPLY = "Hello from fakevendor."  split into N byte-ranges (never inside a
 *           UTF-8 sequence; pieces may be empty if N > length)
 *   REASONING = 0                    reasoning tokens, part of OUT (OpenAI)
 *   If the request has max_tokens (or max_completion_tokens; for Responses
 *   only max_output_tokens) < OUT, OUT is clamped to it and stop_reason is
 *   "max_tokens" (OpenAI finish_reason "length", Responses status
 *   "incomplete"); the reply text is not shortened.  REASONING is then
 *   clamped to OUT.
 *   "in" always means uncached input tokens (Anthropic semantics).  OpenAI:
 *   prompt_tokens = IN + cache_read, prompt_tokens_details.cached_tokens =
 *   cache_read, completion_tokens = OUT (which includes
 *   completion_tokens_details.reasoning_tokens = REASONING); cache_write has
 *   no OpenAI field.  Responses: input_tokens = IN + cache_read,
 *   input_tokens_details.cached_tokens = cache_read, output_tokens = OUT
 *   (including output_tokens_details.reasoning_tokens = REASONING),
 *   total_tokens = input_tokens + output_tokens.  Anthropic has no reasoning
 *   field: REASONING only shows in the OpenAI shapes.
 *   Ids: msg_fake_<seq>, chatcmpl-fake-<seq>, resp_fake_<seq>, request-id
 *   req_fake_<seq>, where <seq> is the 12-digit zero-padded record sequence
 *   number.
 *
 * OVERRIDES, per request.  Keys:
 *   in out cache_read cache_write events reply mode delay_ms after status
 *   interval_ms reasoning pad          (reply: one word, '_' becomes ' ')
 *   reasoning=N  reasoning tokens within OUT (clamped to OUT); OpenAI shapes
 *   pad=BYTES    Responses API only: the final response object (non-stream
 *                body, response.completed / response.incomplete) gets a
 *                second output item, a message "msg_fake_<seq>_pad" whose
 *                output_text is BYTES bytes of plain ASCII filler (no JSON
 *                escapes), for testing usage parsers on huge final events.
 *                Streamed deltas and output_item events do not carry it, and
 *                it changes no token count.  At most 64 MiB.
 *   (aliases: cache_creation=cache_write, delay=delay_ms, interval=interval_ms)
 *   Sources, lowest to highest precedence:
 *   1. directives "[[fake k=v k=v ...]]" anywhere in the raw request body
 *      (works through clients that only let you set prompt text, e.g.
 *      claude -p "[[fake out=42 mode=drip]] hi"); all directives in the body
 *      are applied in order, so the last one wins per key.  A bare word is
 *      taken as the mode ("[[fake stall]]").  Values stop at whitespace, ',',
 *      '"', '\', ']'.
 *   2. header "x-fake: k=v k=v ..." (same syntax)
 *   3. headers "x-fake-KEY: VALUE" ('-' and '_' interchangeable in KEY,
 *      e.g. x-fake-cache-read: 100)
 *
 * FAULT MODES (key mode=...).  delay_ms / interval_ms also work with any mode.
 *   delay      wait delay_ms (default 1000) before sending the response head
 *   stall      read the request, never answer; the connection stays open
 *              until the peer closes it
 *   stall_mid  stream the head and `after` (default 3) SSE events, then send
 *              nothing more, forever.  Non-stream: head + half the body.
 *   reset_mid  same, then reset the TCP connection (RST, ~20 ms after the
 *              bytes were handed to the kernel so the peer receives them)
 *   status     answer `status` (default 500) with a vendor-shaped JSON error
 *              (Anthropic or OpenAI depending on endpoint); 429 adds
 *              retry-after: 1
 *   malformed  stream `after` good events, then one event whose data: line is
 *              broken JSON, then the rest of the stream normally.
 *              Non-stream: a truncated JSON body (content-length consistent).
 *   drip       stream with interval_ms (default 100) between events
 *   storm      the 1st, 3rd, 5th, ... request in storm mode (counted since
 *              start or the last DELETE /_fake/requests) gets a 503 error,
 *              the others succeed
 *   An unknown mode gets a 400 error naming it.
 *   "after" counts complete SSE events: Anthropic counts message_start,
 *   content_block_start, ping, each delta, ...; OpenAI counts every "data:"
 *   chunk including the final [DONE]; Responses counts every event from
 *   response.created on.  Stream event order:
 *   Anthropic (N+6 events): message_start, content_block_start, ping,
 *     N x content_block_delta, content_block_stop, message_delta, message_stop
 *   OpenAI (N+3 events, +1 with include_usage): role chunk, N content chunks,
 *     finish chunk (finish_reason "stop"), [usage chunk], [DONE]
 *   Responses (N+8 events, see RESPONSES API): response.created,
 *     response.in_progress, response.output_item.added,
 *     response.content_part.added, N x response.output_text.delta,
 *     response.output_text.done, response.content_part.done,
 *     response.output_item.done, response.completed (response.incomplete
 *     when OUT was clamped)
 *   No mode ends a Responses stream with response.failed or an error event:
 *   status/storm errors come before the head (HTTP error, OpenAI-shaped), the
 *   mid-stream faults cut the stream.
 *   Streams use chunked transfer-encoding (close-delimited for HTTP/1.0).
 *   If the peer closes (EOF) while a response is still pending (delay, drip,
 *   stall, ...) it counts as vanished: the connection is closed and the
 *   record gets completed=false.
 *
 * RECORD FORMAT (GET /_fake/requests returns an array of these; --record FILE
 * gets the same objects as JSON lines, written when each request finishes,
 * so file order is finish order).  In memory: the last 10,000 requests.
 *   {"seq":N, "t_ms": ms since start, "method":"POST", "path":"/v1/messages",
 *    "query":"beta=true",
 *    "tls": true if the request came over TLS (--tls-cert), else false,
 *    "sni": the SNI host name the client sent in the TLS handshake | null
 *           (plain TCP, or no SNI, e.g. a client connecting to an IP),
 *    "auth_header":"x-api-key"|"authorization"|"none",
 *    "auth_class":"anthropic-oauth"|"anthropic-api-key"|"openai-key"|
 *                 "workspace-token"|"unknown"|"none",
 *    "auth_sha256": hex SHA-256 of the credential (Authorization: "Bearer "
 *                   stripped; values over 8 KiB are hashed truncated) | null,
 *    "auth_multiple": true if more than one credential header was present
 *                     (auth_header prefers x-api-key),
 *    "anthropic_version": str|null, "anthropic_beta": str|null (repeated
 *    headers joined with ','), "model": str|null, "stream": bool,
 *    "include_usage": bool, "max_tokens": N|null (for /v1/responses: the
 *    request's max_output_tokens),
 *    "mode": "none"|"delay"|...|the unknown mode string, "body_bytes": N,
 *    "planned": {"input","output","cache_read","cache_write"}  (the values a
 *               fault-free response carries),
 *    "headers": [every request header name, lower-case, in order],
 *    "served": {"input","output","cache_read","cache_write"}  (usage the
 *               vendor actually put on the wire: Anthropic message_start
 *               serves input/cache and output 1, message_delta serves OUT;
 *               OpenAI streams serve usage only in the include_usage chunk;
 *               Responses streams only in the final response.completed /
 *               response.incomplete event; output is OUT, reasoning
 *               included; error responses and cut non-stream bodies serve 0),
 *    "status": HTTP status sent (0 if no head was sent),
 *    "completed": true once the whole response was written to the socket;
 *                 false if the client vanished or a fault cut it,
 *    "pending": true while the response is still in progress}
 *   Raw credentials are never stored.  seq is monotonic over the process
 *   lifetime (DELETE only hides older records).  A request still pending
 *   after 10,000 newer ones (e.g. a long stall) loses its slot and is never
 *   written to the --record file.  "completed" for a record means the bytes
 *   were accepted by the local socket, not that the peer read them.
 *
 * STATS (GET /_fake/stats; exact however many requests, unlike the 10,000
 * records kept in memory -- for benchmarks comparing metered with served):
 *   {"requests": N   requests since start or the last DELETE (= records),
 *    "completed": N, "incomplete": N   of those, finished with completed
 *                 true / false (a request whose record lost its slot, see
 *                 above, is in neither),
 *    "errors": N     of the finished ones, those answered with status >= 400,
 *    "served": {"input","output","cache_read","cache_write"}  the sum of the
 *              records' "served" over those requests, updated as it goes out,
 *    "tls": {"handshakes": N       TLS handshakes completed,
 *            "handshake_failures": N  TLS connections that sent handshake
 *                                  bytes but closed or failed before the
 *                                  handshake completed (e.g. the client
 *                                  refused our certificate),
 *            "plaintext": N        connections to a TLS listener whose first
 *                                  byte was not a TLS handshake record}
 *           (all 0 without --tls-cert; connections, not requests: the
 *           /_fake/... requests' own connections count too)}
 *   Requests that began before the last DELETE add nothing, even if they
 *   finish after it.
 *
 * RESPONSES API (POST .../v1/responses), the real API's shapes:
 *   Response object: {"id":"resp_fake_<seq>","object":"response",
 *     "created_at":<unix>,"status":"completed"|"incomplete"|"in_progress",
 *     "background":false,"error":null,"incomplete_details":null |
 *     {"reason":"max_output_tokens"},"instructions":null,
 *     "max_output_tokens":<the request's>|null,"max_tool_calls":null,
 *     "model":<request model>,"output":[MESSAGE (+ the pad item)],
 *     "parallel_tool_calls":true,"previous_response_id":null,
 *     "prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},
 *     "safety_identifier":null,"service_tier":"default","store":true,
 *     "temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},
 *     "tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,
 *     "truncation":"disabled","usage":USAGE|null,"user":null,"metadata":{}}
 *   MESSAGE: {"id":"msg_fake_<seq>","type":"message","status":"completed"
 *     ("incomplete" when clamped),"content":[{"type":"output_text",
 *     "annotations":[],"logprobs":[],"text":REPLY}],"role":"assistant"}
 *   USAGE: {"input_tokens","input_tokens_details":{"cached_tokens"},
 *     "output_tokens","output_tokens_details":{"reasoning_tokens"},
 *     "total_tokens"} as in DETERMINISM.
 *   Non-stream: the final response object.  Stream (text/event-stream):
 *   "event: TYPE\ndata: {"type":"TYPE","sequence_number":K,...}\n\n", K
 *   counting from 0; response.created / response.in_progress carry the
 *   object with status "in_progress", output [] and usage null; the item
 *   events carry "output_index":0 (and "item_id", "content_index":0 for
 *   parts and text); the last event carries the final object.  There is no
 *   [DONE] line.
 *   What Codex CLI 0.171.0 needs (found by removing events and fields one at
 *   a time): it dispatches on the data's "type" (the event: line and
 *   sequence_number are optional); the reply it prints comes only from
 *   response.output_item.done (item type "message", role, content[] of
 *   {"type":"output_text","text"}; without them the item is dropped and
 *   it prints nothing, still exiting 0); response.output_item.added must
 *   precede the deltas (else it logs "OutputTextDelta without active
 *   item"); response.completed must come ("stream closed before
 *   response.completed" and retries otherwise) with response.id, and a
 *   usage, if present, needs input_tokens, output_tokens and total_tokens
 *   (the *_details are optional).  response.incomplete makes it print the
 *   text, report "Incomplete response returned, reason: max_output_tokens"
 *   and exit 1.  Leaving out any one of the other events changes nothing it
 *   prints.  Its request body is plain JSON (no content-encoding) although
 *   it sends accept-encoding: zstd,gzip; answers are never compressed.  A
 *   20 MB pad is fine for it.
 *
 * TLS (--tls-cert/--tls-key): OpenSSL with memory BIOs on the same loop;
 * the HTTP layer above is unchanged, so keep-alive, pipelining, streaming,
 * every fault mode, the record and the stats work the same over TLS
 * (reset_mid still resets the TCP connection, without a close_notify; a
 * connection closed by us otherwise ends with a close_notify).  ALPN: the
 * server selects http/1.1 when the client offers it, otherwise none (never
 * h2).  The SNI name the client sent is kept per connection and recorded
 * ("sni").  A connection whose first byte is not a TLS handshake record
 * (e.g. a plaintext HTTP request) is counted as "plaintext" and closed
 * unanswered; a handshake that fails (the client refused the certificate
 * and sent an alert, or closed) is counted and, without --quiet, logged on
 * stderr with OpenSSL's reason.  Neither is ever a record.
 *
 * HTTP NOTES: HTTP/1.1 keep-alive (and HTTP/1.0 keep-alive), pipelining,
 * Expect: 100-continue, chunked request bodies, absolute-form targets and
 * HEAD (no body) are handled; an unparsable request gets 400 and a close.
 * Bodies over 64 MiB get 413.  /_fake/... is exempt from faults and records.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

/* ------------------------------------------------------------------------ */
/* Limits                                                                    */

#define REC_CAP        10000u          /* records kept in memory */
#define URL_MAX        4096u
#define HNAME_MAX      128u
#define HVAL_MAX       8192u           /* buffered values of interesting headers */
#define NAMES_MAX      2048u           /* JSON list of header names */
#define VER_MAX        128u
#define BETA_MAX       1024u
#define MODEL_MAX      256u
#define REPLY_MAX      512u
#define BODY_MAX       (64u << 20)     /* larger bodies get 413 */
#define PAD_MAX        (64u << 20)     /* largest pad= (Responses API) */
#define BODY_KEEP      (256u << 10)    /* body buffer capacity kept between requests */
#define BUF_KEEP       (1u << 20)      /* output buffer capacity kept when idle */
#define IN_MAX         (1u << 20)      /* unparsed input before we stop reading */
#define HIGH_WATER     (256u << 10)    /* unflushed output before we pause */
#define MAXPEND        64              /* responses awaiting flush confirmation */
#define MAX_EVENTS     100000
#define MAX_MS         3600000
#define RESET_DELAY_MS 20
#define READBUF_SIZE   65536u

#define DEFAULT_REPLY  "Hello from fakevendor."
#define DEFAULT_EVENTS 8

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                      */

typedef struct {
    char  *p;
    size_t len, cap;
} buf_t;

static void die(const char *msg)
{
    fprintf(stderr, "keyrail-fakevendor: %s\n", msg);
    exit(1);
}

static void buf_grow(buf_t *b, size_t need)
{
    size_t nc = b->cap ? b->cap : 256;
    while (nc < need)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np)
        die("out of memory");
    b->p = np;
    b->cap = nc;
}

static inline void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra > b->cap)
        buf_grow(b, b->len + extra);
}

static inline void buf_put(buf_t *b, const void *s, size_t n)
{
    if (!n)
        return;
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define BUF_LIT(b, s) buf_put((b), "" s, sizeof(s) - 1)

static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void buf_u64(buf_t *b, uint64_t v)
{
    char t[24];
    int i = 24;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(b, t + i, (size_t)(24 - i));
}

static void buf_num(buf_t *b, int64_t v) { buf_u64(b, v < 0 ? 0 : (uint64_t)v); }

static void buf_pad12(buf_t *b, uint64_t v)
{
    char t[12];
    for (int i = 11; i >= 0; i--) {
        t[i] = (char)('0' + v % 10);
        v /= 10;
    }
    buf_put(b, t, 12);
}

static void buf_hex(buf_t *b, size_t v)
{
    static const char hx[] = "0123456789abcdef";
    char t[20];
    int i = 20;
    do {
        t[--i] = hx[v & 15];
        v >>= 4;
    } while (v);
    buf_put(b, t + i, (size_t)(20 - i));
}

static void buf_bool(buf_t *b, bool v)
{
    if (v)
        BUF_LIT(b, "true");
    else
        BUF_LIT(b, "false");
}

/* Length of a valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0;
        if (c == 0xED && s[1] > 0x9F)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0;
        if (c == 0xF4 && s[1] > 0x8F)
            return 0;
        return 4;
    }
    return 0;
}

/* Append s as JSON string contents (no quotes); invalid UTF-8 -> U+FFFD. */
static void buf_jesc(buf_t *b, const char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    buf_reserve(b, n + 2);
    while (i < n) {
        size_t j = i;
        while (j < n && u[j] >= 0x20 && u[j] < 0x80 && u[j] != '"' && u[j] != '\\')
            j++;
        buf_put(b, s + i, j - i);
        if (j >= n)
            break;
        i = j;
        unsigned c = u[i];
        if (c < 0x80) {
            char e[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
            switch (c) {
            case '"': BUF_LIT(b, "\\\""); break;
            case '\\': BUF_LIT(b, "\\\\"); break;
            case '\n': BUF_LIT(b, "\\n"); break;
            case '\r': BUF_LIT(b, "\\r"); break;
            case '\t': BUF_LIT(b, "\\t"); break;
            default: buf_put(b, e, 6); break;
            }
            i++;
            continue;
        }
        size_t l = utf8_len(u + i, n - i);
        if (l) {
            buf_put(b, s + i, l);
            i += l;
        } else {
            BUF_LIT(b, "\\ufffd");
            i++;
        }
    }
}

static void buf_jstr(buf_t *b, const char *s, size_t n)
{
    BUF_LIT(b, "\"");
    buf_jesc(b, s, n);
    BUF_LIT(b, "\"");
}

static bool is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Is s (raw contents of a JSON string) valid to emit verbatim between quotes? */
static bool json_raw_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x20 || c == '"')
            return false;
        if (c == '\\') {
            if (i + 1 >= n)
                return false;
            unsigned d = u[i + 1];
            if (d == '"' || d == '\\' || d == '/' || d == 'b' || d == 'f' || d == 'n' || d == 'r' ||
                d == 't') {
                i += 2;
            } else if (d == 'u' && i + 5 < n && is_hex(u[i + 2]) && is_hex(u[i + 3]) &&
                       is_hex(u[i + 4]) && is_hex(u[i + 5])) {
                i += 6;
            } else {
                return false;
            }
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_len(u + i, n - i);
            if (!l)
                return false;
            i += l;
            continue;
        }
        i++;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4)                                                      */

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char blk[64];
    size_t n;
} sha256_t;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_t *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K256[i] + w[i];
        uint32_t S0 = ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha256_init(sha256_t *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->n = 0;
}

static void sha256_update(sha256_t *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->bytes += len;
    if (s->n) {
        size_t take = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->blk + s->n, p, take);
        s->n += take;
        p += take;
        len -= take;
        if (s->n < 64)
            return;
        sha256_block(s, s->blk);
        s->n = 0;
    }
    while (len >= 64) {
        sha256_block(s, p);
        p += 64;
        len -= 64;
    }
    memcpy(s->blk, p, len);
    s->n = len;
}

static void sha256_final(sha256_t *s, unsigned char out[32])
{
    uint64_t bits = s->bytes * 8;
    s->blk[s->n++] = 0x80;
    if (s->n > 56) {
        memset(s->blk + s->n, 0, 64 - s->n);
        sha256_block(s, s->blk);
        s->n = 0;
    }
    memset(s->blk + s->n, 0, 56 - s->n);
    for (int i = 0; i < 8; i++)
        s->blk[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(s, s->blk);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, out);
}

static void hex32(char out[64], const unsigned char d[32])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
}

/* ------------------------------------------------------------------------ */
/* Overrides ("[[fake k=v]]", x-fake, x-fake-KEY)                            */

enum {
    K_IN, K_OUT, K_CACHE_READ, K_CACHE_WRITE, K_EVENTS, K_DELAY_MS, K_AFTER, K_STATUS,
    K_INTERVAL_MS, K_REASONING, K_PAD, K_NNUM, /* numeric keys end here */
    K_REPLY = K_NNUM, K_MODE
};

static const struct {
    const char *name;
    int key;
} OV_KEYS[] = {
    {"in", K_IN}, {"out", K_OUT}, {"cache_read", K_CACHE_READ}, {"cache_write", K_CACHE_WRITE},
    {"cache_creation", K_CACHE_WRITE}, {"events", K_EVENTS}, {"delay_ms", K_DELAY_MS},
    {"delay", K_DELAY_MS}, {"after", K_AFTER}, {"status", K_STATUS},
    {"interval_ms", K_INTERVAL_MS}, {"interval", K_INTERVAL_MS}, {"reasoning", K_REASONING},
    {"pad", K_PAD}, {"reply", K_REPLY}, {"mode", K_MODE},
};

typedef struct {
    unsigned set; /* bit per K_* */
    int64_t  num[K_NNUM];
    char     reply[REPLY_MAX];
    size_t   reply_len;
    char     mode[24];
    size_t   mode_len;
} ov_t;

#define OV_HAS(o, k) (((o)->set >> (k)) & 1u)

static void ov_apply(ov_t *o, const char *k, size_t kl, const char *v, size_t vl)
{
    int key = -1;
    for (size_t i = 0; i < sizeof OV_KEYS / sizeof OV_KEYS[0]; i++) {
        if (strlen(OV_KEYS[i].name) == kl && strncasecmp(OV_KEYS[i].name, k, kl) == 0) {
            key = OV_KEYS[i].key;
            break;
        }
    }
    if (key < 0)
        return;
    if (key < K_NNUM) {
        if (vl == 0 || vl > 15)
            return;
        int64_t x = 0;
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9')
                return;
            x = x * 10 + (v[i] - '0');
        }
        o->num[key] = x;
    } else if (key == K_REPLY) {
        size_t n = vl < REPLY_MAX ? vl : REPLY_MAX;
        for (size_t i = 0; i < n; i++)
            o->reply[i] = v[i] == '_' ? ' ' : v[i];
        o->reply_len = n;
    } else {
        size_t n = vl < sizeof o->mode ? vl : sizeof o->mode;
        for (size_t i = 0; i < n; i++)
            o->mode[i] = (char)(v[i] == '-' ? '_' : (v[i] >= 'A' && v[i] <= 'Z' ? v[i] + 32 : v[i]));
        o->mode_len = n;
    }
    o->set |= 1u << key;
}

static bool dir_sep(unsigned char c)
{
    return c <= ' ' || c == ',' || c == '"' || c == '\\' || c == ']' || c == 0x7f;
}

/* Parse "k=v k=v word" (contents of a directive or an x-fake header). */
static void ov_parse(ov_t *o, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && dir_sep((unsigned char)s[i]))
            i += (s[i] == '\\') ? 2 : 1; /* skip JSON escapes like \n as separators */
        if (i >= n)
            break;
        size_t st = i;
        while (i < n && !dir_sep((unsigned char)s[i]))
            i++;
        const char *t = s + st;
        size_t tl = i - st;
        const char *eq = memchr(t, '=', tl);
        if (eq)
            ov_apply(o, t, (size_t)(eq - t), eq + 1, tl - (size_t)(eq - t) - 1);
        else
            ov_apply(o, "mode", 4, t, tl);
    }
}

static void ov_merge(ov_t *dst, const ov_t *src)
{
    for (int k = 0; k < K_NNUM; k++)
        if (OV_HAS(src, k))
            dst->num[k] = src->num[k];
    if (OV_HAS(src, K_REPLY)) {
        memcpy(dst->reply, src->reply, src->reply_len);
        dst->reply_len = src->reply_len;
    }
    if (OV_HAS(src, K_MODE)) {
        memcpy(dst->mode, src->mode, src->mode_len);
        dst->mode_len = src->mode_len;
    }
    dst->set |= src->set;
}

static void ov_scan_body(ov_t *o, const char *b, size_t n)
{
    const char *p = b, *e = b + n;
    int count = 0;
    while (p < e && count++ < 64) {
        const char *q = memmem(p, (size_t)(e - p), "[[fake", 6);
        if (!q)
            break;
        const char *s = q + 6;
        size_t lim = (size_t)(e - s) < 4096 ? (size_t)(e - s) : 4096;
        const char *end = memmem(s, lim, "]]", 2);
        if (!end)
            break;
        if (s == end || dir_sep((unsigned char)*s))
            ov_parse(o, s, (size_t)(end - s));
        p = end + 2;
    }
}

/* ------------------------------------------------------------------------ */
/* Minimal JSON scanning of the request body (top-level keys only)           */

typedef struct {
    const char *model;
    size_t      model_len;
    bool        has_model, stream, include_usage;
    int64_t     max_tokens;        /* -1 if absent */
    int64_t     max_output_tokens; /* Responses API; -1 if absent */
} bodyinfo_t;

static const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p just after an opening quote; returns the closing quote or NULL. */
static const char *js_str_end(const char *p, const char *e)
{
    while (p < e) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q)
            return NULL;
        size_t bs = 0;
        for (const char *r = q; r > p && r[-1] == '\\'; r--)
            bs++;
        if (!(bs & 1))
            return q;
        p = q + 1;
    }
    return NULL;
}

static const char *js_skip(const char *p, const char *e)
{
    p = js_ws(p, e);
    if (p >= e)
        return e;
    if (*p == '"') {
        const char *q = js_str_end(p + 1, e);
        return q ? q + 1 : e;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char ch = *p;
            if (ch == '"') {
                const char *q = js_str_end(p + 1, e);
                if (!q)
                    return e;
                p = q + 1;
                continue;
            }
            if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return e;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p;
}

static bool js_true(const char *p, const char *e) { return e - p >= 4 && memcmp(p, "true", 4) == 0; }

/* A non-negative integer of at most 15 digits at p, else -1. */
static int64_t js_uint(const char *p, const char *e)
{
    int64_t v = 0;
    int nd = 0;
    while (p + nd < e && nd < 15 && p[nd] >= '0' && p[nd] <= '9') {
        v = v * 10 + (p[nd] - '0');
        nd++;
    }
    return nd ? v : -1;
}

#define KEY_IS(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, kl) == 0)

static void js_scan_obj(const char *p, const char *e, int level, bodyinfo_t *bi)
{
    p = js_ws(p, e);
    if (p >= e || *p != '{')
        return;
    p++;
    while (p < e) {
        p = js_ws(p, e);
        if (p >= e || *p == '}')
            return;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '"')
            return;
        const char *k = p + 1, *ke = js_str_end(k, e);
        if (!ke)
            return;
        size_t kl = (size_t)(ke - k);
        p = js_ws(ke + 1, e);
        if (p >= e || *p != ':')
            return;
        p = js_ws(p + 1, e);
        if (p >= e)
            return;
        if (level == 0) {
            if (KEY_IS("model") && *p == '"') {
                const char *ve = js_str_end(p + 1, e);
                if (!ve)
                    return;
                bi->model = p + 1;
                bi->model_len = (size_t)(ve - p - 1);
                bi->has_model = true;
                p = ve + 1;
                continue;
            }
            if (KEY_IS("stream")) {
                bi->stream = js_true(p, e);
            } else if (KEY_IS("max_tokens") || KEY_IS("max_completion_tokens")) {
                int64_t v = js_uint(p, e);
                if (v >= 0)
                    bi->max_tokens = v;
            } else if (KEY_IS("max_output_tokens")) {
                int64_t v = js_uint(p, e);
                if (v >= 0)
                    bi->max_output_tokens = v;
            } else if (KEY_IS("stream_options") && *p == '{') {
                js_scan_obj(p, e, 1, bi);
            }
        } else if (KEY_IS("include_usage")) {
            bi->include_usage = js_true(p, e);
        }
        p = js_skip(p, e);
    }
}

/* ------------------------------------------------------------------------ */
/* Types: records, requests, jobs, connections                               */

enum { AC_NONE, AC_OAUTH, AC_APIKEY, AC_OPENAI, AC_WS, AC_UNKNOWN };
static const char *const AC_NAMES[] = {"none", "anthropic-oauth", "anthropic-api-key",
                                       "openai-key", "workspace-token", "unknown"};

enum { M_NONE, M_DELAY, M_STALL, M_STALL_MID, M_RESET_MID, M_STATUS, M_MALFORMED, M_DRIP,
       M_STORM, M_BAD };
static const char *const MODE_NAMES[] = {"none", "delay", "stall", "stall_mid", "reset_mid",
                                         "status", "malformed", "drip", "storm"};

enum { EP_MESSAGES = 1, EP_COUNT, EP_CHAT, EP_MODELS, EP_RESP, EP_404 };
enum { PH_NONE, PH_DELAY, PH_STREAM, PH_STALL, PH_RESET };
enum { T_DELAY = 1, T_DRIP, T_RESET };
enum { H_OTHER, H_XAPIKEY, H_AUTHZ, H_VER, H_BETA, H_FAKE, H_FAKE_KEY, H_EXPECT };

typedef struct {
    uint64_t seq; /* 0 = empty slot */
    buf_t    js;  /* static JSON members, each starting with ',' */
    int      status;
    bool     completed, pending;
    int64_t  s_in, s_out, s_cr, s_cw;
    char     logline[96];
} rec_t;

typedef struct {
    bool          present;
    int           cls;
    unsigned char sha[32];
} cred_t;

typedef struct {
    char   url[URL_MAX];
    size_t url_len;
    char   hname[HNAME_MAX];
    size_t hname_len;
    char   hval[HVAL_MAX];
    size_t hval_len;
    int    hstate; /* 0 none, 1 in field, 2 in value */
    int    hkind;
    char   names[NAMES_MAX];
    size_t names_len;
    bool   names_over;
    char   ver[VER_MAX];
    size_t ver_len;
    bool   has_ver;
    char   beta[BETA_MAX];
    size_t beta_len;
    bool   has_beta;
    cred_t xkey, authz;
    int    nauth;
    ov_t   hov;
    bool   expect100;
    size_t body_bytes;
    bool   body_over;
} req_t;

typedef struct {
    bool     active;
    int      phase;
    bool     timer_wait, fault_done;
    uint64_t seq;
    int      ep, mode;
    bool     openai, stream, include_usage, chunked, clamped;
    int      err_status; /* nonzero: answer with this error */
    int64_t  in, out, cr, cw, events, delay_ms, after, status, interval_ms;
    int64_t  reasoning, pad, max_out; /* max_out: the request's limit, -1 if none */
    int      ev_idx, ev_total;
    int      http_status;
    int64_t  s_in, s_out, s_cr, s_cw; /* served so far */
    int64_t  a_in, a_out, a_cr, a_cw; /* of those, already added to g_stats */
    int64_t  created;
    char     model[MODEL_MAX];
    size_t   model_len;
    bool     model_raw_ok;
    char     reply[REPLY_MAX];
    size_t   reply_len;
} job_t;

typedef struct conn {
    uv_tcp_t     tcp;
    uv_timer_t   timer;
    uv_write_t   wreq;
    http_parser  parser;
    struct conn *prev, *next;
    int          open_handles;
    int          timer_kind;
    buf_t        in;
    size_t       in_off;
    buf_t        out, wb, body;
    bool writing, closing, read_eof, read_stopped, no_more, close_after_flush, reset_after_flush,
        reset_armed, in_drive, redrive, keep_alive, http10, head_req;
    uint64_t pend[MAXPEND];
    int      npend;
    req_t    req;
    job_t    job;
    /* TLS (--tls-cert); ssl == NULL on a plain TCP listener.  c->out stays
     * plaintext; try_flush seals it into records in tout, which then goes
     * the way c->out goes on plain TCP (uv_try_write, the tail via wb). */
    SSL  *ssl;
    BIO  *rbio, *wbio;  /* network bytes into / out of the TLS engine */
    buf_t tout;
    bool  tls_seen;     /* some bytes arrived */
    bool  tls_done;     /* handshake completed */
    bool  tls_shut;     /* our close_notify is queued */
    bool  tls_counted;  /* counted as failed or plaintext */
    bool  has_sni;
    char  sni[256];
} conn_t;

/* ------------------------------------------------------------------------ */
/* Globals                                                                   */

static uv_loop_t           *g_loop;
static uv_tcp_t             g_server;
static uv_signal_t          g_sigterm, g_sigint;
static http_parser_settings g_settings;
static conn_t              *g_conns;
static bool                 g_quiet, g_stopping;
static int                  g_rec_fd = -1;
static rec_t               *g_ring;
static uint64_t             g_seq, g_visible_from = 1, g_storm;
static uint64_t             g_start_ms;
static char                 g_readbuf[READBUF_SIZE];
static buf_t                g_body, g_ev, g_line;
static SSL_CTX             *g_tls; /* --tls-cert: every connection is TLS */
static char                 g_tlsbuf[READBUF_SIZE]; /* decrypted input, consumed at once */
static struct {
    uint64_t completed, incomplete, errors;
    int64_t  in, out, cr, cw;
    uint64_t tls_ok, tls_failed, tls_plain;
} g_stats; /* GET /_fake/stats; reset by DELETE /_fake/requests */

static const char MODELS_ANTHROPIC[] =
    "{\"data\":["
    "{\"type\":\"model\",\"id\":\"claude-sonnet-4-5-20250929\",\"display_name\":\"Claude Sonnet 4.5\","
    "\"created_at\":\"2025-09-29T00:00:00Z\"},"
    "{\"type\":\"model\",\"id\":\"claude-haiku-4-5-20251001\",\"display_name\":\"Claude Haiku 4.5\","
    "\"created_at\":\"2025-10-01T00:00:00Z\"},"
    "{\"type\":\"model\",\"id\":\"claude-opus-4-1-20250805\",\"display_name\":\"Claude Opus 4.1\","
    "\"created_at\":\"2025-08-05T00:00:00Z\"}],"
    "\"has_more\":false,\"first_id\":\"claude-sonnet-4-5-20250929\","
    "\"last_id\":\"claude-opus-4-1-20250805\"}";

static const char MODELS_OPENAI[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":1715367049,\"owned_by\":\"system\"},"
    "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1721172741,\"owned_by\":\"system\"},"
    "{\"id\":\"gpt-4.1\",\"object\":\"model\",\"created\":1744316542,\"owned_by\":\"system\"}]}";

/* ------------------------------------------------------------------------ */
/* Records                                                                   */

static rec_t *rec_get(uint64_t seq)
{
    rec_t *r = &g_ring[seq % REC_CAP];
    return (seq && r->seq == seq) ? r : NULL;
}

static void rec_render(buf_t *b, const rec_t *r)
{
    BUF_LIT(b, "{\"seq\":");
    buf_u64(b, r->seq);
    buf_put(b, r->js.p, r->js.len);
    BUF_LIT(b, ",\"served\":{\"input\":");
    buf_num(b, r->s_in);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, r->s_out);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, r->s_cr);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, r->s_cw);
    BUF_LIT(b, "},\"status\":");
    buf_u64(b, (uint64_t)r->status);
    BUF_LIT(b, ",\"completed\":");
    buf_bool(b, r->completed);
    BUF_LIT(b, ",\"pending\":");
    buf_bool(b, r->pending);
    BUF_LIT(b, "}");
}

/* Add what the job served since the last call to the /_fake/stats totals
 * (jobs from before the last DELETE add nothing). */
static void stats_served(job_t *j)
{
    if (j->seq >= g_visible_from) {
        g_stats.in += j->s_in - j->a_in;
        g_stats.out += j->s_out - j->a_out;
        g_stats.cr += j->s_cr - j->a_cr;
        g_stats.cw += j->s_cw - j->a_cw;
    }
    j->a_in = j->s_in;
    j->a_out = j->s_out;
    j->a_cr = j->s_cr;
    j->a_cw = j->s_cw;
}

static void rec_result(job_t *j)
{
    stats_served(j);
    rec_t *r = rec_get(j->seq);
    if (!r)
        return;
    r->status = j->http_status;
    r->s_in = j->s_in;
    r->s_out = j->s_out;
    r->s_cr = j->s_cr;
    r->s_cw = j->s_cw;
}

static void rec_done(uint64_t seq, bool completed)
{
    rec_t *r = rec_get(seq);
    if (!r || !r->pending)
        return;
    r->pending = false;
    r->completed = completed;
    if (seq >= g_visible_from) {
        if (completed)
            g_stats.completed++;
        else
            g_stats.incomplete++;
        if (r->status >= 400)
            g_stats.errors++;
    }
    if (g_rec_fd >= 0) {
        g_line.len = 0;
        rec_render(&g_line, r);
        BUF_LIT(&g_line, "\n");
        const char *p = g_line.p;
        size_t n = g_line.len;
        while (n) {
            ssize_t w = write(g_rec_fd, p, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            p += w;
            n -= (size_t)w;
        }
    }
    if (!g_quiet)
        fprintf(stderr, "fakevendor: #%" PRIu64 " %s -> %d%s\n", seq, r->logline, r->status,
                completed ? "" : " (incomplete)");
}

/* ------------------------------------------------------------------------ */
/* Output helpers                                                            */

static const char *reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return "Status";
    }
}

static void put_head(conn_t *c, int status, const char *ctype, bool stream, size_t clen,
                     uint64_t seq, bool openai)
{
    buf_t *o = &c->out;
    buf_reserve(o, 256);
    BUF_LIT(o, "HTTP/1.1 ");
    buf_u64(o, (uint64_t)status);
    BUF_LIT(o, " ");
    buf_str(o, reason(status));
    BUF_LIT(o, "\r\ncontent-type: ");
    buf_str(o, ctype);
    if (stream) {
        if (c->job.chunked)
            BUF_LIT(o, "\r\ntransfer-encoding: chunked");
        BUF_LIT(o, "\r\ncache-control: no-cache");
    } else {
        BUF_LIT(o, "\r\ncontent-length: ");
        buf_u64(o, clen);
    }
    if (seq) {
        if (openai)
            BUF_LIT(o, "\r\nx-request-id: req_fake_");
        else
            BUF_LIT(o, "\r\nrequest-id: req_fake_");
        buf_pad12(o, seq);
    }
    if (status == 429)
        BUF_LIT(o, "\r\nretry-after: 1");
    if (!c->keep_alive)
        BUF_LIT(o, "\r\nconnection: close");
    else if (c->http10)
        BUF_LIT(o, "\r\nconnection: keep-alive");
    BUF_LIT(o, "\r\n\r\n");
}

/* Send g_body as a complete JSON response. */
static void send_body(conn_t *c, int status, uint64_t seq, bool openai)
{
    put_head(c, status, "application/json", false, g_body.len, seq, openai);
    if (!c->head_req) /* a response to HEAD has no body */
        buf_put(&c->out, g_body.p, g_body.len);
}

static const char *anth_err_type(int s)
{
    switch (s) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    case 504: return "timeout_error";
    default: return s >= 400 && s < 500 ? "invalid_request_error" : "api_error";
    }
}

static const char *oai_err_type(int s)
{
    switch (s) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return s >= 400 && s < 500 ? "invalid_request_error" : "server_error";
    }
}

static void send_error(conn_t *c, int status, bool openai, uint64_t seq, const char *msg)
{
    buf_t *b = &g_body;
    b->len = 0;
    if (openai) {
        BUF_LIT(b, "{\"error\":{\"message\":");
        buf_jstr(b, msg, strlen(msg));
        BUF_LIT(b, ",\"type\":\"");
        buf_str(b, oai_err_type(status));
        BUF_LIT(b, "\",\"param\":null,\"code\":null}}");
    } else {
        BUF_LIT(b, "{\"type\":\"error\",\"error\":{\"type\":\"");
        buf_str(b, anth_err_type(status));
        BUF_LIT(b, "\",\"message\":");
        buf_jstr(b, msg, strlen(msg));
        BUF_LIT(b, "}");
        if (seq) {
            BUF_LIT(b, ",\"request_id\":\"req_fake_");
            buf_pad12(b, seq);
            BUF_LIT(b, "\"");
        }
        BUF_LIT(b, "}");
    }
    send_body(c, status, seq, openai);
}

/* ------------------------------------------------------------------------ */
/* Response bodies and stream events                                         */

static void put_model(buf_t *b, const job_t *j)
{
    if (j->model_raw_ok) {
        BUF_LIT(b, "\"");
        buf_put(b, j->model, j->model_len);
        BUF_LIT(b, "\"");
    } else {
        buf_jstr(b, j->model, j->model_len);
    }
}

static void reply_piece(const job_t *j, int i, const char **ps, size_t *pn)
{
    size_t L = j->reply_len, N = (size_t)j->events;
    size_t a = L * (size_t)i / N, b = L * (size_t)(i + 1) / N;
    while (a < L && ((unsigned char)j->reply[a] & 0xC0) == 0x80)
        a++;
    while (b < L && ((unsigned char)j->reply[b] & 0xC0) == 0x80)
        b++;
    *ps = j->reply + a;
    *pn = b > a ? b - a : 0;
}

static void anth_message_body(const job_t *j)
{
    buf_t *b = &g_body;
    b->len = 0;
    BUF_LIT(b, "{\"id\":\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    put_model(b, j);
    BUF_LIT(b, ",\"content\":[{\"type\":\"text\",\"text\":");
    buf_jstr(b, j->reply, j->reply_len);
    BUF_LIT(b, "}],\"stop_reason\":");
    if (j->clamped)
        BUF_LIT(b, "\"max_tokens\"");
    else
        BUF_LIT(b, "\"end_turn\"");
    BUF_LIT(b, ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    buf_num(b, j->in);
    BUF_LIT(b, ",\"cache_creation_input_tokens\":");
    buf_num(b, j->cw);
    BUF_LIT(b, ",\"cache_read_input_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, ",\"output_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, "}}");
}

static void oai_usage(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "\"usage\":{\"prompt_tokens\":");
    buf_num(b, j->in + j->cr);
    BUF_LIT(b, ",\"completion_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, ",\"total_tokens\":");
    buf_num(b, j->in + j->cr + j->out);
    BUF_LIT(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, ",\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":");
    buf_num(b, j->reasoning);
    BUF_LIT(b, ",\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
               "\"rejected_prediction_tokens\":0}}");
}

static void oai_completion_body(const job_t *j)
{
    buf_t *b = &g_body;
    b->len = 0;
    BUF_LIT(b, "{\"id\":\"chatcmpl-fake-");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"chat.completion\",\"created\":");
    buf_num(b, j->created);
    BUF_LIT(b, ",\"model\":");
    put_model(b, j);
    BUF_LIT(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    buf_jstr(b, j->reply, j->reply_len);
    BUF_LIT(b, ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":");
    if (j->clamped)
        BUF_LIT(b, "\"length\"");
    else
        BUF_LIT(b, "\"stop\"");
    BUF_LIT(b, "}],");
    oai_usage(b, j);
    BUF_LIT(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fakevendor\"}");
}

/* Render Anthropic stream event k into g_ev; updates served counters. */
static void anth_event(job_t *j, int k)
{
    buf_t *b = &g_ev;
    int N = (int)j->events;
    b->len = 0;
    if (k == 0) {
        BUF_LIT(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                   "{\"id\":\"msg_fake_");
        buf_pad12(b, j->seq);
        BUF_LIT(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        put_model(b, j);
        BUF_LIT(b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
                   "{\"input_tokens\":");
        buf_num(b, j->in);
        BUF_LIT(b, ",\"cache_creation_input_tokens\":");
        buf_num(b, j->cw);
        BUF_LIT(b, ",\"cache_read_input_tokens\":");
        buf_num(b, j->cr);
        BUF_LIT(b, ",\"output_tokens\":1}}}\n\n");
        j->s_in = j->in;
        j->s_cw = j->cw;
        j->s_cr = j->cr;
        j->s_out = 1;
        rec_result(j);
    } else if (k == 1) {
        BUF_LIT(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                   "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    } else if (k == 2) {
        BUF_LIT(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    } else if (k < 3 + N) {
        const char *s;
        size_t n;
        reply_piece(j, k - 3, &s, &n);
        BUF_LIT(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                   "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        buf_jstr(b, s, n);
        BUF_LIT(b, "}}\n\n");
    } else if (k == 3 + N) {
        BUF_LIT(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                   "\"index\":0}\n\n");
    } else if (k == 4 + N) {
        BUF_LIT(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":");
        if (j->clamped)
            BUF_LIT(b, "\"max_tokens\"");
        else
            BUF_LIT(b, "\"end_turn\"");
        BUF_LIT(b, ",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        buf_num(b, j->out);
        BUF_LIT(b, "}}\n\n");
        j->s_out = j->out;
        rec_result(j);
    } else {
        BUF_LIT(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
}

static void oai_prefix(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "data: {\"id\":\"chatcmpl-fake-");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    buf_num(b, j->created);
    BUF_LIT(b, ",\"model\":");
    put_model(b, j);
    BUF_LIT(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fakevendor\",\"choices\":[");
}

static void oai_suffix(buf_t *b, const job_t *j)
{
    if (j->include_usage)
        BUF_LIT(b, "],\"usage\":null}\n\n");
    else
        BUF_LIT(b, "]}\n\n");
}

static void oai_event(job_t *j, int k)
{
    buf_t *b = &g_ev;
    int N = (int)j->events;
    b->len = 0;
    if (k == j->ev_total - 1) {
        BUF_LIT(b, "data: [DONE]\n\n");
    } else if (k == 0) {
        oai_prefix(b, j);
        BUF_LIT(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
                   "\"logprobs\":null,\"finish_reason\":null}");
        oai_suffix(b, j);
    } else if (k <= N) {
        const char *s;
        size_t n;
        reply_piece(j, k - 1, &s, &n);
        oai_prefix(b, j);
        BUF_LIT(b, "{\"index\":0,\"delta\":{\"content\":");
        buf_jstr(b, s, n);
        BUF_LIT(b, "},\"logprobs\":null,\"finish_reason\":null}");
        oai_suffix(b, j);
    } else if (k == N + 1) {
        oai_prefix(b, j);
        BUF_LIT(b, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":");
        if (j->clamped)
            BUF_LIT(b, "\"length\"}");
        else
            BUF_LIT(b, "\"stop\"}");
        oai_suffix(b, j);
    } else { /* usage chunk (only exists with include_usage) */
        oai_prefix(b, j);
        BUF_LIT(b, "],");
        oai_usage(b, j);
        BUF_LIT(b, "}\n\n");
        j->s_in = j->in;
        j->s_cr = j->cr;
        j->s_out = j->out;
        rec_result(j);
    }
}

/* OpenAI Responses API.  The response object: status "in_progress" (output
 * [] and usage null) unless final; final is "completed", or "incomplete" when
 * OUT was clamped to max_output_tokens. */
static void resp_msg_id(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\"");
}

static void resp_text_part(buf_t *b, const char *text, size_t n)
{
    BUF_LIT(b, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
    buf_jstr(b, text, n);
    BUF_LIT(b, "}");
}

/* The assistant message item; done: with its text and final status. */
static void resp_item(buf_t *b, const job_t *j, bool done)
{
    BUF_LIT(b, "{\"id\":");
    resp_msg_id(b, j);
    BUF_LIT(b, ",\"type\":\"message\",\"status\":");
    if (!done)
        BUF_LIT(b, "\"in_progress\",\"content\":[");
    else if (j->clamped)
        BUF_LIT(b, "\"incomplete\",\"content\":[");
    else
        BUF_LIT(b, "\"completed\",\"content\":[");
    if (done)
        resp_text_part(b, j->reply, j->reply_len);
    BUF_LIT(b, "],\"role\":\"assistant\"}");
}

/* pad=BYTES: a second message item whose text is BYTES bytes of plain ASCII
 * (nothing to escape, so it is BYTES bytes inside the JSON string too). */
static void resp_pad_item(buf_t *b, const job_t *j)
{
    static const char fill[] = "fakevendor padding, not model output; it only makes the body big. ";
    size_t n = (size_t)j->pad, fl = sizeof fill - 1;
    buf_reserve(b, n + 256);
    BUF_LIT(b, "{\"id\":\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "_pad\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":"
               "\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"");
    while (n) {
        size_t k = n < fl ? n : fl;
        buf_put(b, fill, k);
        n -= k;
    }
    BUF_LIT(b, "\"}],\"role\":\"assistant\"}");
}

static void resp_usage(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "{\"input_tokens\":");
    buf_num(b, j->in + j->cr);
    BUF_LIT(b, ",\"input_tokens_details\":{\"cached_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, "},\"output_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, ",\"output_tokens_details\":{\"reasoning_tokens\":");
    buf_num(b, j->reasoning);
    BUF_LIT(b, "},\"total_tokens\":");
    buf_num(b, j->in + j->cr + j->out);
    BUF_LIT(b, "}");
}

static void resp_object(buf_t *b, const job_t *j, bool final)
{
    BUF_LIT(b, "{\"id\":\"resp_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"response\",\"created_at\":");
    buf_num(b, j->created);
    if (!final)
        BUF_LIT(b, ",\"status\":\"in_progress\"");
    else if (j->clamped)
        BUF_LIT(b, ",\"status\":\"incomplete\"");
    else
        BUF_LIT(b, ",\"status\":\"completed\"");
    BUF_LIT(b, ",\"background\":false,\"error\":null,\"incomplete_details\":");
    if (final && j->clamped)
        BUF_LIT(b, "{\"reason\":\"max_output_tokens\"}");
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"instructions\":null,\"max_output_tokens\":");
    if (j->max_out >= 0)
        buf_num(b, j->max_out);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"max_tool_calls\":null,\"model\":");
    put_model(b, j);
    BUF_LIT(b, ",\"output\":[");
    if (final) {
        resp_item(b, j, true);
        if (j->pad > 0) {
            BUF_LIT(b, ",");
            resp_pad_item(b, j);
        }
    }
    BUF_LIT(b, "],\"parallel_tool_calls\":true,\"previous_response_id\":null,"
               "\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},"
               "\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,"
               "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":"
               "\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,"
               "\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":");
    if (final)
        resp_usage(b, j);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"user\":null,\"metadata\":{}}");
}

static void resp_body(const job_t *j)
{
    g_body.len = 0;
    resp_object(&g_body, j, true);
}

/* "event: TYPE\ndata: {"type":"TYPE","sequence_number":K" -- the caller adds
 * the other members and "}\n\n". */
static void resp_ev_head(buf_t *b, const char *type, int k)
{
    BUF_LIT(b, "event: ");
    buf_str(b, type);
    BUF_LIT(b, "\ndata: {\"type\":\"");
    buf_str(b, type);
    BUF_LIT(b, "\",\"sequence_number\":");
    buf_u64(b, (uint64_t)k);
}

static void resp_ev_part(buf_t *b, const job_t *j)
{
    BUF_LIT(b, ",\"item_id\":");
    resp_msg_id(b, j);
    BUF_LIT(b, ",\"output_index\":0,\"content_index\":0");
}

/* Render Responses stream event k into g_ev; updates served counters. */
static void resp_event(job_t *j, int k)
{
    buf_t *b = &g_ev;
    int N = (int)j->events;
    b->len = 0;
    if (k <= 1) {
        resp_ev_head(b, k == 0 ? "response.created" : "response.in_progress", k);
        BUF_LIT(b, ",\"response\":");
        resp_object(b, j, false);
    } else if (k == 2) {
        resp_ev_head(b, "response.output_item.added", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_item(b, j, false);
    } else if (k == 3) {
        resp_ev_head(b, "response.content_part.added", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"part\":");
        resp_text_part(b, "", 0);
    } else if (k < 4 + N) {
        const char *s;
        size_t n;
        reply_piece(j, k - 4, &s, &n);
        resp_ev_head(b, "response.output_text.delta", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"delta\":");
        buf_jstr(b, s, n);
        BUF_LIT(b, ",\"logprobs\":[]");
    } else if (k == 4 + N) {
        resp_ev_head(b, "response.output_text.done", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"text\":");
        buf_jstr(b, j->reply, j->reply_len);
        BUF_LIT(b, ",\"logprobs\":[]");
    } else if (k == 5 + N) {
        resp_ev_head(b, "response.content_part.done", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"part\":");
        resp_text_part(b, j->reply, j->reply_len);
    } else if (k == 6 + N) {
        resp_ev_head(b, "response.output_item.done", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_item(b, j, true);
    } else {
        resp_ev_head(b, j->clamped ? "response.incomplete" : "response.completed", k);
        BUF_LIT(b, ",\"response\":");
        resp_object(b, j, true);
        j->s_in = j->in;
        j->s_cr = j->cr;
        j->s_out = j->out;
        rec_result(j);
    }
    BUF_LIT(b, "}\n\n");
}

static void frame_event(conn_t *c)
{
    buf_t *o = &c->out;
    if (c->job.chunked) {
        buf_reserve(o, g_ev.len + 16);
        buf_hex(o, g_ev.len);
        BUF_LIT(o, "\r\n");
        buf_put(o, g_ev.p, g_ev.len);
        BUF_LIT(o, "\r\n");
    } else {
        buf_put(o, g_ev.p, g_ev.len);
    }
    if (g_ev.cap > BUF_KEEP) /* after a pad= event: do not keep megabytes around */
        buf_free(&g_ev);
}

/* ------------------------------------------------------------------------ */
/* Connection machinery (forward declarations)                               */

static void drive(conn_t *c);
static void close_conn(conn_t *c, bool reset);
static void on_timer(uv_timer_t *t);

static bool over_high(const conn_t *c)
{
    return c->out.len + c->tout.len + c->wb.len >= HIGH_WATER || c->npend >= MAXPEND;
}

static void start_timer(conn_t *c, int kind, int64_t ms)
{
    c->timer_kind = kind;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

/* The current job's response is fully rendered into c->out. */
static void job_end(conn_t *c)
{
    job_t *j = &c->job;
    j->active = false;
    j->phase = PH_NONE;
    rec_result(j);
    if (c->npend < MAXPEND)
        c->pend[c->npend++] = j->seq;
    else
        rec_done(j->seq, true);
    if (!c->keep_alive)
        c->close_after_flush = true;
}

/* Emit events until the stream ends, a fault triggers, a drip pause starts or
 * the output buffer is over the high-water mark. */
static void run_stream(conn_t *c)
{
    job_t *j = &c->job;
    int after = -1;
    if (j->mode == M_STALL_MID || j->mode == M_RESET_MID || j->mode == M_MALFORMED)
        after = j->after < j->ev_total ? (int)j->after : j->ev_total;
    while (j->active && j->phase == PH_STREAM && !j->timer_wait) {
        if (j->ev_idx == after && !j->fault_done) {
            j->fault_done = true;
            if (j->mode == M_STALL_MID) {
                j->phase = PH_STALL;
                return;
            }
            if (j->mode == M_RESET_MID) {
                j->phase = PH_RESET;
                c->reset_after_flush = true;
                return;
            }
            g_ev.len = 0; /* malformed: one event with broken JSON */
            if (j->ep == EP_RESP)
                BUF_LIT(&g_ev, "event: response.output_text.delta\ndata: {\"type\":\"response."
                               "output_text.delta\",\"item_id\":\"msg_fake_broken\",\"output_index\":"
                               "0,\"content_index\":0,\"delta\":\"oops\n\n");
            else if (j->openai)
                BUF_LIT(&g_ev, "data: {\"id\":\"chatcmpl-fake-broken\",\"object\":\"chat.completion"
                               ".chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\n\n");
            else
                BUF_LIT(&g_ev, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                               "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"oops\n\n");
            frame_event(c);
        }
        if (j->ev_idx >= j->ev_total) {
            if (j->chunked)
                BUF_LIT(&c->out, "0\r\n\r\n");
            job_end(c);
            return;
        }
        if (j->ep == EP_RESP)
            resp_event(j, j->ev_idx);
        else if (j->openai)
            oai_event(j, j->ev_idx);
        else
            anth_event(j, j->ev_idx);
        j->ev_idx++;
        frame_event(c);
        if (j->interval_ms > 0 && j->ev_idx < j->ev_total) {
            j->timer_wait = true;
            start_timer(c, T_DRIP, j->interval_ms);
            return;
        }
        if (over_high(c))
            return;
    }
}

static void stream_start(conn_t *c)
{
    job_t *j = &c->job;
    j->chunked = !c->http10;
    if (c->http10) { /* close-delimited */
        c->keep_alive = false;
        c->no_more = true;
    }
    put_head(c, 200, "text/event-stream", true, 0, j->seq, j->openai);
    j->http_status = 200;
    rec_result(j);
    j->phase = PH_STREAM;
    j->ev_idx = 0;
    if (j->ep == EP_RESP)
        j->ev_total = (int)j->events + 8;
    else if (j->openai)
        j->ev_total = (int)j->events + 3 + (j->include_usage ? 1 : 0);
    else
        j->ev_total = (int)j->events + 6;
    run_stream(c);
}

/* Non-streaming success body is in g_body; apply body-level faults. */
static void send_nonstream(conn_t *c, bool full_served)
{
    job_t *j = &c->job;
    j->http_status = 200;
    size_t len = g_body.len, half = len / 2;
    if (j->mode == M_STALL_MID || j->mode == M_RESET_MID) {
        put_head(c, 200, "application/json", false, len, j->seq, j->openai);
        buf_put(&c->out, g_body.p, half);
        rec_result(j);
        if (j->mode == M_STALL_MID) {
            j->phase = PH_STALL;
        } else {
            j->phase = PH_RESET;
            c->reset_after_flush = true;
        }
        return;
    }
    if (j->mode == M_MALFORMED) {
        put_head(c, 200, "application/json", false, half, j->seq, j->openai);
        buf_put(&c->out, g_body.p, half);
        job_end(c);
        return;
    }
    send_body(c, 200, j->seq, j->openai);
    if (full_served) {
        j->s_in = j->in;
        j->s_cr = j->cr;
        j->s_out = j->out;
        j->s_cw = j->openai ? 0 : j->cw;
    }
    job_end(c);
}

/* Produce the response now (no delay pending). */
static void respond_now(conn_t *c)
{
    job_t *j = &c->job;
    j->phase = PH_NONE;
    if (j->err_status) {
        char msg[160];
        if (j->mode == M_STORM)
            snprintf(msg, sizeof msg, "fakevendor: injected %d (mode=storm)", j->err_status);
        else
            snprintf(msg, sizeof msg, "fakevendor: injected %d (mode=status)", j->err_status);
        send_error(c, j->err_status, j->openai, j->seq, msg);
        j->http_status = j->err_status;
        job_end(c);
        return;
    }
    switch (j->ep) {
    case EP_COUNT:
        g_body.len = 0;
        BUF_LIT(&g_body, "{\"input_tokens\":");
        buf_num(&g_body, j->in);
        BUF_LIT(&g_body, "}");
        j->s_in = j->in;
        send_nonstream(c, false);
        break;
    case EP_MODELS:
        g_body.len = 0;
        if (j->openai)
            buf_put(&g_body, MODELS_OPENAI, sizeof MODELS_OPENAI - 1);
        else
            buf_put(&g_body, MODELS_ANTHROPIC, sizeof MODELS_ANTHROPIC - 1);
        send_nonstream(c, false);
        break;
    case EP_MESSAGES:
    case EP_CHAT:
    case EP_RESP:
        if (j->stream) {
            stream_start(c);
        } else {
            if (j->ep == EP_RESP)
                resp_body(j);
            else if (j->ep == EP_CHAT)
                oai_completion_body(j);
            else
                anth_message_body(j);
            send_nonstream(c, true);
        }
        break;
    default:
        break;
    }
    if (g_body.cap > BUF_KEEP) /* after a pad= body: do not keep megabytes around */
        buf_free(&g_body);
}

/* ------------------------------------------------------------------------ */
/* Request handling                                                          */

static bool path_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static bool path_ends(const char *p, size_t n, const char *suf)
{
    size_t m = strlen(suf);
    return n >= m && memcmp(p + n - m, suf, m) == 0;
}

static void fake_requests(conn_t *c, int method, const char *q, size_t ql)
{
    buf_t *b = &g_body;
    b->len = 0;
    if (method == HTTP_DELETE) {
        uint64_t n = g_seq + 1 - g_visible_from;
        g_visible_from = g_seq + 1;
        g_storm = 0;
        memset(&g_stats, 0, sizeof g_stats);
        BUF_LIT(b, "{\"cleared\":");
        buf_u64(b, n);
        BUF_LIT(b, "}");
        send_body(c, 200, 0, false);
        return;
    }
    if (method != HTTP_GET) {
        send_error(c, 405, false, 0, "fakevendor: use GET or DELETE");
        return;
    }
    uint64_t since = 0;
    for (size_t i = 0; i + 6 <= ql; i++) {
        if ((i == 0 || q[i - 1] == '&') && memcmp(q + i, "since=", 6) == 0) {
            for (size_t k = i + 6; k < ql && q[k] >= '0' && q[k] <= '9' && k < i + 24; k++)
                since = since * 10 + (uint64_t)(q[k] - '0');
            break;
        }
    }
    uint64_t from = g_visible_from;
    if (since + 1 > from)
        from = since + 1;
    if (g_seq >= REC_CAP && g_seq - REC_CAP + 1 > from)
        from = g_seq - REC_CAP + 1;
    BUF_LIT(b, "[");
    bool first = true;
    for (uint64_t s = from; s <= g_seq; s++) {
        const rec_t *r = rec_get(s);
        if (!r)
            continue;
        if (!first)
            BUF_LIT(b, ",");
        BUF_LIT(b, "\n");
        first = false;
        rec_render(b, r);
    }
    BUF_LIT(b, "\n]\n");
    send_body(c, 200, 0, false);
}

static void fake_stats(conn_t *c, int method)
{
    buf_t *b = &g_body;
    if (method != HTTP_GET) {
        send_error(c, 405, false, 0, "fakevendor: use GET");
        return;
    }
    b->len = 0;
    BUF_LIT(b, "{\"requests\":");
    buf_u64(b, g_seq + 1 - g_visible_from);
    BUF_LIT(b, ",\"completed\":");
    buf_u64(b, g_stats.completed);
    BUF_LIT(b, ",\"incomplete\":");
    buf_u64(b, g_stats.incomplete);
    BUF_LIT(b, ",\"errors\":");
    buf_u64(b, g_stats.errors);
    BUF_LIT(b, ",\"served\":{\"input\":");
    buf_num(b, g_stats.in);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, g_stats.out);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, g_stats.cr);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, g_stats.cw);
    BUF_LIT(b, "},\"tls\":{\"handshakes\":");
    buf_u64(b, g_stats.tls_ok);
    BUF_LIT(b, ",\"handshake_failures\":");
    buf_u64(b, g_stats.tls_failed);
    BUF_LIT(b, ",\"plaintext\":");
    buf_u64(b, g_stats.tls_plain);
    BUF_LIT(b, "}}\n");
    send_body(c, 200, 0, false);
}

/* Render the static part of the record for the job just set up. */
static void rec_open(conn_t *c, int method, const char *path, size_t plen, const char *query,
                     size_t qlen, const bodyinfo_t *bi, const char *bad_mode, size_t bad_mode_len)
{
    job_t *j = &c->job;
    req_t *r = &c->req;
    rec_t *s = &g_ring[j->seq % REC_CAP];
    s->seq = j->seq;
    s->status = 0;
    s->completed = false;
    s->pending = true;
    s->s_in = s->s_out = s->s_cr = s->s_cw = 0;
    snprintf(s->logline, sizeof s->logline, "%s %.*s mode=%s", http_method_str((enum http_method)method),
             (int)(plen < 48 ? plen : 48), path,
             j->mode == M_BAD ? "invalid" : MODE_NAMES[j->mode]);

    buf_t *b = &s->js;
    b->len = 0;
    BUF_LIT(b, ",\"t_ms\":");
    buf_u64(b, uv_now(g_loop) - g_start_ms);
    BUF_LIT(b, ",\"method\":\"");
    buf_str(b, http_method_str((enum http_method)method));
    BUF_LIT(b, "\",\"path\":");
    buf_jstr(b, path, plen);
    BUF_LIT(b, ",\"query\":");
    buf_jstr(b, query, qlen);
    BUF_LIT(b, ",\"tls\":");
    buf_bool(b, c->ssl != NULL);
    BUF_LIT(b, ",\"sni\":");
    if (c->has_sni)
        buf_jstr(b, c->sni, strlen(c->sni));
    else
        BUF_LIT(b, "null");
    const cred_t *cr = r->xkey.present ? &r->xkey : r->authz.present ? &r->authz : NULL;
    BUF_LIT(b, ",\"auth_header\":\"");
    buf_str(b, r->xkey.present ? "x-api-key" : r->authz.present ? "authorization" : "none");
    BUF_LIT(b, "\",\"auth_class\":\"");
    buf_str(b, AC_NAMES[cr ? cr->cls : AC_NONE]);
    BUF_LIT(b, "\",\"auth_sha256\":");
    if (cr) {
        char hx[64];
        hex32(hx, cr->sha);
        BUF_LIT(b, "\"");
        buf_put(b, hx, 64);
        BUF_LIT(b, "\"");
    } else {
        BUF_LIT(b, "null");
    }
    BUF_LIT(b, ",\"auth_multiple\":");
    buf_bool(b, r->nauth > 1);
    BUF_LIT(b, ",\"anthropic_version\":");
    if (r->has_ver)
        buf_jstr(b, r->ver, r->ver_len);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"anthropic_beta\":");
    if (r->has_beta)
        buf_jstr(b, r->beta, r->beta_len);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"model\":");
    if (bi->has_model)
        put_model(b, j);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"stream\":");
    buf_bool(b, bi->stream);
    BUF_LIT(b, ",\"include_usage\":");
    buf_bool(b, bi->include_usage);
    BUF_LIT(b, ",\"max_tokens\":");
    if (bi->max_tokens >= 0)
        buf_num(b, bi->max_tokens);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"mode\":");
    if (j->mode == M_BAD)
        buf_jstr(b, bad_mode, bad_mode_len);
    else
        buf_jstr(b, MODE_NAMES[j->mode], strlen(MODE_NAMES[j->mode]));
    BUF_LIT(b, ",\"body_bytes\":");
    buf_u64(b, r->body_bytes);
    bool llm = j->ep == EP_MESSAGES || j->ep == EP_CHAT || j->ep == EP_RESP;
    BUF_LIT(b, ",\"planned\":{\"input\":");
    buf_num(b, (llm || j->ep == EP_COUNT) ? j->in : 0);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, llm ? j->out : 0);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, llm ? j->cr : 0);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, (llm && !j->openai) ? j->cw : 0);
    BUF_LIT(b, "},\"headers\":[");
    buf_put(b, r->names, r->names_len);
    BUF_LIT(b, "]");
}

static int parse_mode(const ov_t *o)
{
    if (!OV_HAS(o, K_MODE) || o->mode_len == 0)
        return M_NONE;
    for (int m = 0; m < M_BAD; m++)
        if (strlen(MODE_NAMES[m]) == o->mode_len && memcmp(MODE_NAMES[m], o->mode, o->mode_len) == 0)
            return m;
    return M_BAD;
}

static void handle_request(conn_t *c)
{
    req_t *r = &c->req;
    http_parser *p = &c->parser;
    job_t *j = &c->job;
    if (c->closing)
        return;
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->http10 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    c->head_req = p->method == HTTP_HEAD;
    if (!c->keep_alive)
        c->no_more = true;

    /* split the request target */
    const char *url = r->url;
    size_t ulen = r->url_len;
    if (ulen > 8 && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0)) {
        const char *hs = memchr(url, ':', ulen) + 3;
        const char *sl = memchr(hs, '/', ulen - (size_t)(hs - url));
        if (sl) {
            ulen -= (size_t)(sl - url);
            url = sl;
        } else {
            url = "/";
            ulen = 1;
        }
    }
    const char *qm = memchr(url, '?', ulen);
    size_t plen = qm ? (size_t)(qm - url) : ulen;
    const char *query = qm ? qm + 1 : "";
    size_t qlen = qm ? ulen - plen - 1 : 0;
    const char *hash = memchr(query, '#', qlen);
    if (hash)
        qlen = (size_t)(hash - query);
    int method = p->method;

    if (path_is(url, plen, "/_fake/requests")) {
        fake_requests(c, method, query, qlen);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }
    if (path_is(url, plen, "/_fake/stats")) {
        fake_stats(c, method);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }
    if (path_is(url, plen, "/_fake/healthz")) {
        g_body.len = 0;
        BUF_LIT(&g_body, "{\"ok\":true}");
        send_body(c, 200, 0, false);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }

    int ep = EP_404;
    if (method == HTTP_POST && path_ends(url, plen, "/v1/messages/count_tokens"))
        ep = EP_COUNT;
    else if (method == HTTP_POST && path_ends(url, plen, "/v1/messages"))
        ep = EP_MESSAGES;
    else if (method == HTTP_POST && path_ends(url, plen, "/v1/chat/completions"))
        ep = EP_CHAT;
    else if (method == HTTP_POST && path_ends(url, plen, "/v1/responses"))
        ep = EP_RESP;
    else if (method == HTTP_GET && path_ends(url, plen, "/v1/models"))
        ep = EP_MODELS;

    /* request body fields and overrides */
    bodyinfo_t bi = {.max_tokens = -1, .max_output_tokens = -1};
    if (c->body.len)
        js_scan_obj(c->body.p, c->body.p + c->body.len, 0, &bi);
    if (ep == EP_RESP) /* its only limit; recorded as max_tokens */
        bi.max_tokens = bi.max_output_tokens;
    ov_t eff;
    eff.set = 0;
    if (c->body.len)
        ov_scan_body(&eff, c->body.p, c->body.len);
    ov_merge(&eff, &r->hov);

    memset(j, 0, offsetof(job_t, model));
    j->seq = ++g_seq;
    j->ep = ep;
    j->openai = ep == EP_CHAT || ep == EP_RESP || (ep == EP_MODELS && !r->has_ver);
    j->stream = bi.stream;
    j->include_usage = bi.include_usage;
    j->created = (int64_t)time(NULL);
    j->in = OV_HAS(&eff, K_IN) ? eff.num[K_IN] : 1 + (int64_t)(r->body_bytes / 4);
    j->events = OV_HAS(&eff, K_EVENTS) ? eff.num[K_EVENTS] : DEFAULT_EVENTS;
    if (j->events > MAX_EVENTS)
        j->events = MAX_EVENTS;
    j->out = OV_HAS(&eff, K_OUT) ? eff.num[K_OUT] : 2 * j->events;
    j->cr = OV_HAS(&eff, K_CACHE_READ) ? eff.num[K_CACHE_READ] : 0;
    j->cw = OV_HAS(&eff, K_CACHE_WRITE) ? eff.num[K_CACHE_WRITE] : 0;
    j->mode = parse_mode(&eff);
    j->delay_ms = OV_HAS(&eff, K_DELAY_MS) ? eff.num[K_DELAY_MS] : (j->mode == M_DELAY ? 1000 : 0);
    j->interval_ms =
        OV_HAS(&eff, K_INTERVAL_MS) ? eff.num[K_INTERVAL_MS] : (j->mode == M_DRIP ? 100 : 0);
    if (j->delay_ms > MAX_MS)
        j->delay_ms = MAX_MS;
    if (j->interval_ms > MAX_MS)
        j->interval_ms = MAX_MS;
    j->after = OV_HAS(&eff, K_AFTER) ? eff.num[K_AFTER] : 3;
    if (j->after > MAX_EVENTS + 10)
        j->after = MAX_EVENTS + 10;
    j->status = OV_HAS(&eff, K_STATUS) ? eff.num[K_STATUS] : 500;
    if (j->status < 200 || j->status > 599)
        j->status = 500;
    j->max_out = bi.max_tokens;
    if (bi.max_tokens >= 0 && j->out > bi.max_tokens &&
        (ep == EP_MESSAGES || ep == EP_CHAT || ep == EP_RESP)) {
        j->out = bi.max_tokens;
        j->clamped = true;
    }
    j->reasoning = OV_HAS(&eff, K_REASONING) ? eff.num[K_REASONING] : 0;
    if (j->reasoning > j->out)
        j->reasoning = j->out;
    j->pad = OV_HAS(&eff, K_PAD) ? eff.num[K_PAD] : 0;
    if (j->pad > PAD_MAX)
        j->pad = PAD_MAX;
    j->model_len = 0;
    if (bi.has_model) {
        j->model_len = bi.model_len < MODEL_MAX ? bi.model_len : MODEL_MAX;
        memcpy(j->model, bi.model, j->model_len);
    }
    j->model_raw_ok = json_raw_ok(j->model, j->model_len);
    if (OV_HAS(&eff, K_REPLY)) {
        memcpy(j->reply, eff.reply, eff.reply_len);
        j->reply_len = eff.reply_len;
    } else {
        memcpy(j->reply, DEFAULT_REPLY, sizeof DEFAULT_REPLY - 1);
        j->reply_len = sizeof DEFAULT_REPLY - 1;
    }

    rec_open(c, method, url, plen, query, qlen, &bi, eff.mode, eff.mode_len);
    j->active = true;

    char msg[200];
    if (r->body_over) {
        snprintf(msg, sizeof msg, "fakevendor: request body over %u bytes", BODY_MAX);
        j->err_status = 413;
    } else if (ep == EP_404) {
        snprintf(msg, sizeof msg, "fakevendor: no route for %s %.*s",
                 http_method_str((enum http_method)method), (int)(plen < 120 ? plen : 120), url);
        j->err_status = 404;
    } else if (j->mode == M_BAD) {
        snprintf(msg, sizeof msg, "fakevendor: unknown mode '%.*s'", (int)eff.mode_len, eff.mode);
        j->err_status = 400;
    } else {
        msg[0] = 0;
    }
    if (msg[0]) {
        send_error(c, j->err_status, j->openai, j->seq, msg);
        j->http_status = j->err_status;
        job_end(c);
        return;
    }
    if (j->mode == M_STORM && (++g_storm & 1))
        j->err_status = 503;
    if (j->mode == M_STATUS)
        j->err_status = (int)j->status;
    if (j->mode == M_STALL) {
        j->phase = PH_STALL;
        return;
    }
    if (j->delay_ms > 0) {
        j->phase = PH_DELAY;
        start_timer(c, T_DELAY, j->delay_ms);
        return;
    }
    respond_now(c);
}

/* ------------------------------------------------------------------------ */
/* http_parser callbacks                                                     */

static int cb_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    r->url_len = 0;
    r->hname_len = r->hval_len = 0;
    r->hstate = 0;
    r->hkind = H_OTHER;
    r->names_len = 0;
    r->names_over = false;
    r->ver_len = r->beta_len = 0;
    r->has_ver = r->has_beta = false;
    r->xkey.present = r->authz.present = false;
    r->nauth = 0;
    r->hov.set = 0;
    r->expect100 = false;
    r->body_bytes = 0;
    r->body_over = false;
    c->body.len = 0;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    req_t *r = &((conn_t *)p->data)->req;
    if (r->url_len + n > URL_MAX)
        n = URL_MAX - r->url_len;
    memcpy(r->url + r->url_len, at, n);
    r->url_len += n;
    return 0;
}

static void cred_set(cred_t *cr, const char *v, size_t n)
{
    cr->present = true;
    if (n == 0)
        cr->cls = AC_UNKNOWN;
    else if (n >= 10 && memcmp(v, "sk-ant-oat", 10) == 0)
        cr->cls = AC_OAUTH;
    else if (n >= 7 && memcmp(v, "sk-ant-", 7) == 0)
        cr->cls = AC_APIKEY;
    else if (n >= 3 && memcmp(v, "sk-", 3) == 0)
        cr->cls = AC_OPENAI;
    else if (n >= 5 && memcmp(v, "krws_", 5) == 0)
        cr->cls = AC_WS;
    else
        cr->cls = AC_UNKNOWN;
    sha256(v, n, cr->sha);
}

static void trim(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t' || (*v)[*n - 1] == '\r' ||
                  (*v)[*n - 1] == '\n'))
        (*n)--;
}

/* Header name complete: lower-case it, classify it, add it to the name list. */
static void header_name_done(req_t *r)
{
    for (size_t i = 0; i < r->hname_len; i++) {
        char ch = r->hname[i];
        if (ch >= 'A' && ch <= 'Z')
            r->hname[i] = (char)(ch + 32);
    }
    const char *h = r->hname;
    size_t n = r->hname_len;
#define HN(lit) (n == sizeof(lit) - 1 && memcmp(h, lit, n) == 0)
    if (HN("x-api-key"))
        r->hkind = H_XAPIKEY;
    else if (HN("authorization"))
        r->hkind = H_AUTHZ;
    else if (HN("anthropic-version"))
        r->hkind = H_VER;
    else if (HN("anthropic-beta"))
        r->hkind = H_BETA;
    else if (HN("x-fake"))
        r->hkind = H_FAKE;
    else if (n > 7 && memcmp(h, "x-fake-", 7) == 0)
        r->hkind = H_FAKE_KEY;
    else if (HN("expect"))
        r->hkind = H_EXPECT;
    else
        r->hkind = H_OTHER;
#undef HN
    if (!r->names_over) {
        if (r->names_len + n + 3 > NAMES_MAX) {
            r->names_over = true;
        } else {
            char *d = r->names + r->names_len;
            if (r->names_len)
                *d++ = ',';
            *d++ = '"';
            for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)h[i];
                *d++ = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '_' : (char)ch;
            }
            *d++ = '"';
            r->names_len = (size_t)(d - r->names);
        }
    }
}

static void header_done(conn_t *c)
{
    req_t *r = &c->req;
    const char *v = r->hval;
    size_t n = r->hval_len;
    r->hstate = 0;
    trim(&v, &n);
    switch (r->hkind) {
    case H_XAPIKEY:
        cred_set(&r->xkey, v, n);
        r->nauth++;
        break;
    case H_AUTHZ:
        if (n >= 7 && strncasecmp(v, "bearer ", 7) == 0) {
            v += 7;
            n -= 7;
            trim(&v, &n);
        }
        cred_set(&r->authz, v, n);
        r->nauth++;
        break;
    case H_VER:
        r->ver_len = n < VER_MAX ? n : VER_MAX;
        memcpy(r->ver, v, r->ver_len);
        r->has_ver = true;
        break;
    case H_BETA:
        if (r->has_beta && r->beta_len < BETA_MAX)
            r->beta[r->beta_len++] = ',';
        if (n > BETA_MAX - r->beta_len)
            n = BETA_MAX - r->beta_len;
        memcpy(r->beta + r->beta_len, v, n);
        r->beta_len += n;
        r->has_beta = true;
        break;
    case H_FAKE:
        ov_parse(&r->hov, v, n);
        break;
    case H_FAKE_KEY:
        for (size_t i = 7; i < r->hname_len; i++)
            if (r->hname[i] == '-')
                r->hname[i] = '_';
        ov_apply(&r->hov, r->hname + 7, r->hname_len - 7, v, n);
        break;
    case H_EXPECT:
        if (n == 12 && strncasecmp(v, "100-continue", 12) == 0)
            r->expect100 = true;
        break;
    default:
        break;
    }
}

static int cb_header_field(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 2)
        header_done(c);
    if (r->hstate != 1)
        r->hname_len = r->hval_len = 0;
    if (r->hname_len + n > HNAME_MAX)
        n = HNAME_MAX - r->hname_len;
    memcpy(r->hname + r->hname_len, at, n);
    r->hname_len += n;
    r->hstate = 1;
    return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 1)
        header_name_done(r);
    r->hstate = 2;
    if (r->hkind != H_OTHER) {
        if (r->hval_len + n > HVAL_MAX)
            n = HVAL_MAX - r->hval_len;
        memcpy(r->hval + r->hval_len, at, n);
        r->hval_len += n;
    }
    return 0;
}

static int try_flush(conn_t *c);

static int cb_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    if (r->hstate == 1)
        header_name_done(r);
    if (r->hstate != 0)
        header_done(c);
    if (r->expect100 && p->http_major == 1 && p->http_minor == 1) {
        BUF_LIT(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        try_flush(c);
    }
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = &c->req;
    r->body_bytes += n;
    if (!r->body_over) {
        if (c->body.len + n > BODY_MAX)
            r->body_over = true;
        else
            buf_put(&c->body, at, n);
    }
    return 0;
}

static int cb_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    handle_request(c);
    if (c->body.cap > BODY_KEEP)
        buf_free(&c->body);
    /* one request per http_parser_execute() call: keeps responses in order */
    http_parser_pause(p, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* TLS over memory BIOs (--tls-cert)                                         */

/* A TLS connection ended before its handshake completed: count it once and
 * say why (OpenSSL's reason, e.g. the alert the client sent). */
static void tls_count_failure(conn_t *c, const char *what)
{
    if (c->tls_counted || c->tls_done || !c->tls_seen)
        return;
    c->tls_counted = true;
    g_stats.tls_failed++;
    if (!g_quiet) {
        char why[256] = "";
        unsigned long e = ERR_peek_last_error();
        if (e)
            ERR_error_string_n(e, why, sizeof why);
        fprintf(stderr, "fakevendor: TLS handshake failed: %s%s%s\n", what, why[0] ? ": " : "",
                why);
    }
    ERR_clear_error();
}

/* Seal the plaintext in c->out into TLS records and move every pending
 * record (handshake messages, tickets, alerts, close_notify) to c->tout.
 * -1: the TLS engine failed. */
static int tls_seal(conn_t *c)
{
    size_t off = 0;
    while (c->tls_done && off < c->out.len) {
        size_t n = c->out.len - off;
        if (n > (1u << 20))
            n = 1u << 20;
        ERR_clear_error();
        int w = SSL_write(c->ssl, c->out.p + off, (int)n);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    if (c->tls_done)
        c->out.len = 0;
    size_t pend = BIO_ctrl_pending(c->wbio);
    if (pend) {
        buf_reserve(&c->tout, pend);
        int r = BIO_read(c->wbio, c->tout.p + c->tout.len, (int)pend);
        if (r > 0)
            c->tout.len += (size_t)r;
    }
    return 0;
}

/* Bytes from the socket: into the TLS engine; what it decrypts is appended
 * to c->in.  -1: the connection was closed. */
static int tls_input(conn_t *c, const char *p, size_t n)
{
    if (!c->tls_seen) {
        c->tls_seen = true;
        if ((unsigned char)p[0] != 0x16) { /* not a TLS handshake record */
            c->tls_counted = true;
            g_stats.tls_plain++;
            if (!g_quiet)
                fprintf(stderr, "fakevendor: plaintext on a TLS listener; connection closed\n");
            close_conn(c, false);
            return -1;
        }
    }
    if (BIO_write(c->rbio, p, (int)n) != (int)n)
        die("out of memory");
    ERR_clear_error();
    if (!c->tls_done) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0; /* more to come; drive() sends what the engine wrote */
            tls_count_failure(c, "handshake error");
            if (tls_seal(c) == 0 && c->tout.len && !c->writing) { /* our alert, if any */
                uv_buf_t b = uv_buf_init(c->tout.p, (unsigned)c->tout.len);
                (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
            }
            close_conn(c, false);
            return -1;
        }
        c->tls_done = true;
        g_stats.tls_ok++;
        const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        if (sni) {
            size_t l = strlen(sni);
            if (l >= sizeof c->sni)
                l = sizeof c->sni - 1;
            memcpy(c->sni, sni, l);
            c->sni[l] = 0;
            c->has_sni = true;
        }
    }
    for (;;) {
        int r = SSL_read(c->ssl, g_tlsbuf, (int)sizeof g_tlsbuf);
        if (r > 0) {
            buf_put(&c->in, g_tlsbuf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer is done sending */
            c->read_eof = true;
            return 0;
        }
        if (!g_quiet) {
            char why[256] = "";
            ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
            fprintf(stderr, "fakevendor: TLS error: %s; connection closed\n", why);
        }
        ERR_clear_error();
        close_conn(c, false);
        return -1;
    }
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, h11, sizeof h11 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static void tls_setup(const char *cert, const char *key)
{
    g_tls = SSL_CTX_new(TLS_server_method());
    if (!g_tls || !SSL_CTX_set_min_proto_version(g_tls, TLS1_2_VERSION))
        die("cannot create the TLS context");
    char why[256] = "";
    if (SSL_CTX_use_certificate_chain_file(g_tls, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(g_tls, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(g_tls) != 1) {
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        fprintf(stderr, "keyrail-fakevendor: --tls-cert %s / --tls-key %s: %s\n", cert, key, why);
        exit(1);
    }
    SSL_CTX_set_options(g_tls, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_alpn_select_cb(g_tls, alpn_select, NULL);
}

/* ------------------------------------------------------------------------ */
/* I/O                                                                       */

static void on_write(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    c->writing = false;
    c->wb.len = 0;
    if (c->wb.cap > BUF_KEEP)
        buf_free(&c->wb);
    if (c->closing)
        return;
    if (status < 0) {
        close_conn(c, false);
        return;
    }
    drive(c);
}

/* 1: all output written; 0: a write is in flight; -1: connection closed. */
static int try_flush(conn_t *c)
{
    if (c->closing)
        return -1;
    if (c->writing)
        return 0;
    buf_t *src = &c->out; /* the bytes for the socket */
    if (c->ssl) {
        if (tls_seal(c) != 0) {
            close_conn(c, false);
            return -1;
        }
        src = &c->tout;
    }
    if (src->len == 0)
        return 1;
    uv_buf_t b = uv_buf_init(src->p, (unsigned)src->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        close_conn(c, false);
        return -1;
    }
    if ((size_t)n == src->len) {
        src->len = 0;
        return 1;
    }
    buf_t t = c->wb; /* hand the unsent tail to uv_write, keep accumulating in the other buffer */
    c->wb = *src;
    *src = t;
    src->len = 0;
    b = uv_buf_init(c->wb.p + n, (unsigned)(c->wb.len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        close_conn(c, false);
        return -1;
    }
    c->writing = true;
    return 0;
}

static void send_parse_error(conn_t *c)
{
    c->keep_alive = false;
    c->http10 = false;
    c->head_req = false;
    c->no_more = true;
    c->close_after_flush = true;
    char msg[160];
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    snprintf(msg, sizeof msg, "fakevendor: bad HTTP request (%s)", http_errno_name(e));
    send_error(c, 400, false, 0, msg);
}

static void parse_input(conn_t *c)
{
    while (!c->no_more && !c->closing && !c->job.active && !over_high(c) && c->in_off < c->in.len) {
        size_t avail = c->in.len - c->in_off;
        size_t n = http_parser_execute(&c->parser, &g_settings, c->in.p + c->in_off, avail);
        if (c->closing)
            return;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            c->in_off += n;
            continue;
        }
        if (e != HPE_OK || c->parser.upgrade || n != avail) {
            send_parse_error(c);
            c->in_off = c->in.len;
            break;
        }
        c->in_off += n;
    }
    if (c->in_off >= c->in.len) {
        c->in_off = c->in.len = 0;
        if (c->in.cap > BUF_KEEP)
            buf_free(&c->in);
    } else if (c->in_off > 65536) {
        memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
}

static void complete_pending(conn_t *c)
{
    for (int i = 0; i < c->npend; i++)
        rec_done(c->pend[i], true);
    c->npend = 0;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    *b = uv_buf_init(g_readbuf, READBUF_SIZE); /* consumed synchronously in on_read */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            close_conn(c, false);
            return;
        }
        c->read_eof = true;
        uv_read_stop(s);
        drive(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->no_more || (c->job.active && (c->job.phase == PH_STALL || c->job.phase == PH_RESET)))
        return; /* nothing more will be answered on this connection: discard */
    if (c->ssl) {
        if (tls_input(c, b->base, (size_t)nread) < 0)
            return; /* closed */
    } else {
        buf_put(&c->in, b->base, (size_t)nread);
    }
    if (c->in.len - c->in_off > IN_MAX) {
        uv_read_stop(s);
        c->read_stopped = true;
    }
    drive(c);
}

/* The per-connection state machine: continue streams, parse and answer
 * requests, flush output, and act on a fully flushed socket. */
static void drive(conn_t *c)
{
    if (c->in_drive) {
        c->redrive = true;
        return;
    }
    c->in_drive = true;
    do {
        c->redrive = false;
        if (c->closing)
            break;
        job_t *j = &c->job;
        if (j->active && j->phase == PH_STREAM && !j->timer_wait && !over_high(c))
            run_stream(c);
        if (!j->active)
            parse_input(c);
        if (c->closing)
            break;
        if (c->read_eof) {
            if (j->active) { /* peer went away while we still owed it a response */
                close_conn(c, false);
                break;
            }
            if (c->no_more || c->in_off >= c->in.len)
                c->close_after_flush = true;
        }
        int r = try_flush(c);
        if (r <= 0)
            break; /* closed, or on_write will call us again */
        complete_pending(c);
        if (c->close_after_flush && !j->active) {
            if (c->ssl && c->tls_done && !c->tls_shut) { /* end with a close_notify */
                c->tls_shut = true;
                ERR_clear_error();
                SSL_shutdown(c->ssl);
                ERR_clear_error();
                c->redrive = true;
                continue;
            }
            close_conn(c, false);
            break;
        }
        if (c->reset_after_flush && !c->reset_armed) {
            c->reset_armed = true;
            start_timer(c, T_RESET, RESET_DELAY_MS);
        }
        if (c->out.cap > BUF_KEEP)
            buf_free(&c->out);
        if (c->tout.cap > BUF_KEEP)
            buf_free(&c->tout);
        if (c->read_stopped && !c->read_eof && c->in.len - c->in_off < IN_MAX / 2) {
            c->read_stopped = false;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
        if (!j->active && !c->no_more && c->in_off < c->in.len)
            c->redrive = true;
        if (j->active && j->phase == PH_STREAM && !j->timer_wait)
            c->redrive = true;
    } while (c->redrive && !c->closing);
    c->in_drive = false;
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->closing)
        return;
    switch (c->timer_kind) {
    case T_DELAY:
        if (c->job.active && c->job.phase == PH_DELAY)
            respond_now(c);
        break;
    case T_DRIP:
        c->job.timer_wait = false;
        break;
    case T_RESET:
        close_conn(c, true);
        return;
    default:
        break;
    }
    drive(c);
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wb);
    buf_free(&c->body);
    buf_free(&c->tout);
    SSL_free(c->ssl); /* and its BIOs */
    free(c);
}

static void close_conn(conn_t *c, bool reset)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->ssl)
        tls_count_failure(c, "connection closed during the handshake");
    if (c->job.active) {
        rec_result(&c->job);
        rec_done(c->job.seq, false);
        c->job.active = false;
    }
    for (int i = 0; i < c->npend; i++)
        rec_done(c->pend[i], false);
    c->npend = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    if (!reset || uv_tcp_close_reset(&c->tcp, on_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0 || g_stopping)
        return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    uv_tcp_init(g_loop, &c->tcp);
    c->tcp.data = c;
    c->open_handles = 1;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_timer_init(g_loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    if (g_tls) {
        c->ssl = SSL_new(g_tls);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio)
            die("out of memory");
        BIO_set_mem_eof_return(c->rbio, -1); /* empty: "retry", not EOF */
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        close_conn(c, false);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (g_stopping)
        return;
    g_stopping = true;
    uv_close((uv_handle_t *)&g_server, NULL);
    while (g_conns)
        close_conn(g_conns, false);
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

static void usage(FILE *f)
{
    fprintf(f, "usage: keyrail-fakevendor [--listen HOST:PORT] [--port-file FILE] "
               "[--record FILE] [--quiet]\n"
               "                          [--tls-cert FILE --tls-key FILE]\n"
               "       keyrail-fakevendor --sha256-stdin\n"
               "Fake Anthropic/OpenAI upstream for tests; see the top of fakevendor.c.\n");
}

static int sha256_stdin(void)
{
    sha256_t s;
    unsigned char buf[65536], d[32];
    char hx[65];
    sha256_init(&s);
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        sha256_update(&s, buf, (size_t)n);
    }
    sha256_final(&s, d);
    hex32(hx, d);
    hx[64] = 0;
    printf("%s\n", hx);
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_arg = "127.0.0.1:0", *port_file = NULL, *record = NULL;
    const char *tls_cert = NULL, *tls_key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char *eq = strchr(a, '=');
        size_t al = eq ? (size_t)(eq - a) : strlen(a);
#define OPT(name) (al == sizeof(name) - 1 && memcmp(a, name, al) == 0)
        bool needs = OPT("--listen") || OPT("--port-file") || OPT("--record") ||
                     OPT("--tls-cert") || OPT("--tls-key");
        if (needs) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else {
                usage(stderr);
                return 2;
            }
        }
        if (OPT("--listen"))
            listen_arg = v;
        else if (OPT("--port-file"))
            port_file = v;
        else if (OPT("--record"))
            record = v;
        else if (OPT("--tls-cert"))
            tls_cert = v;
        else if (OPT("--tls-key"))
            tls_key = v;
        else if (OPT("--quiet"))
            g_quiet = true;
        else if (OPT("--sha256-stdin"))
            return sha256_stdin();
        else if (OPT("--help") || OPT("-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
#undef OPT
    }

    /* HOST:PORT, [V6]:PORT, or just PORT */
    char host[256];
    int port = 0;
    const char *colon = strrchr(listen_arg, ':');
    if (listen_arg[0] == '[') {
        const char *rb = strchr(listen_arg, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - listen_arg - 1) >= sizeof host)
            die("bad --listen (want [V6ADDR]:PORT)");
        memcpy(host, listen_arg + 1, (size_t)(rb - listen_arg - 1));
        host[rb - listen_arg - 1] = 0;
        port = atoi(rb + 2);
    } else if (colon) {
        if ((size_t)(colon - listen_arg) >= sizeof host)
            die("bad --listen");
        memcpy(host, listen_arg, (size_t)(colon - listen_arg));
        host[colon - listen_arg] = 0;
        if (!host[0])
            strcpy(host, "127.0.0.1");
        port = atoi(colon + 1);
    } else {
        strcpy(host, "127.0.0.1");
        port = atoi(listen_arg);
    }
    if (port < 0 || port > 65535)
        die("bad port");
    if (!tls_cert != !tls_key)
        die("--tls-cert and --tls-key go together");
    if (tls_cert)
        tls_setup(tls_cert, tls_key);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_ring = calloc(REC_CAP, sizeof *g_ring);
    if (!g_ring)
        die("out of memory");
    if (record) {
        g_rec_fd = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (g_rec_fd < 0) {
            fprintf(stderr, "keyrail-fakevendor: %s: %s\n", record, strerror(errno));
            return 1;
        }
    }

    g_settings.on_message_begin = cb_message_begin;
    g_settings.on_url = cb_url;
    g_settings.on_header_field = cb_header_field;
    g_settings.on_header_value = cb_header_value;
    g_settings.on_headers_complete = cb_headers_complete;
    g_settings.on_body = cb_body;
    g_settings.on_message_complete = cb_message_complete;

    g_loop = uv_default_loop();
    g_start_ms = uv_now(g_loop);
    struct sockaddr_storage ss;
    bool v6 = strchr(host, ':') != NULL;
    int rc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        die("bad --listen address");
    uv_tcp_init(g_loop, &g_server);
    if ((rc = uv_tcp_bind(&g_server, (const struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&g_server, 4096, on_connection)) != 0) {
        fprintf(stderr, "keyrail-fakevendor: listen on %s: %s\n", listen_arg, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&g_server, (struct sockaddr *)&bound, &blen);
    port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&bound)->sin_port);

    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", port_file, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "keyrail-fakevendor: cannot write port file %s: %s\n", port_file,
                    strerror(errno));
            return 1;
        }
    }
    if (v6)
        printf("listening on [%s]:%d\n", host, port);
    else
        printf("listening on %s:%d\n", host, port);
    fflush(stdout);

    uv_signal_init(g_loop, &g_sigterm);
    uv_signal_init(g_loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);

    uv_run(g_loop, UV_RUN_DEFAULT);

    for (size_t i = 0; i < REC_CAP; i++)
        buf_free(&g_ring[i].js);
    free(g_ring);
    buf_free(&g_body);
    buf_free(&g_ev);
    buf_free(&g_line);
    if (g_rec_fd >= 0)
        close(g_rec_fd);
    uv_loop_close(g_loop);
    SSL_CTX_free(g_tls);
    return 0;
}
