/*
 * fv.h -- keyrail-fakevendor, a fake upstream LLM vendor (Anthropic Messages,
 * OpenAI chat completions, OpenAI Responses and Google Gemini wire formats)
 * for keyrail's integration tests, end-to-end tests with the real Claude
 * Code / Codex / Gemini CLIs and official SDKs, demos and benchmarks.
 *
 * FILES (this header is the module's only one; it holds the shared types and
 * the functions the files share, each such function named fv_*):
 *   fv.h            this description; limits, the byte buffer (inline),
 *                   overrides, records, requests, jobs, connections, the
 *                   per-protocol table (fv_proto_t)
 *   fv_util.c       protocol-independent helpers: JSON escaping, SHA-256,
 *                   the override parser, the request body scanner
 *   fv_core.c       from a parsed request to response bytes: routing (a
 *                   lookup in the protocol table), the record and the stats,
 *                   the response head and JSON errors, the fault modes, the
 *                   stream loop, /_fake/...
 *   fv_server.c     connections: http_parser callbacks, TLS, I/O, the
 *                   per-connection state machine, timers, signals, main
 *   fv_anthropic.c  Anthropic Messages: message bodies, SSE events,
 *                   count_tokens, the model list, Anthropic-shaped errors
 *   fv_openai.c     OpenAI chat completions: bodies, stream chunks, the model
 *                   list, OpenAI-shaped errors (Responses uses them too)
 *   fv_responses.c  OpenAI Responses API (its wire format is described there,
 *                   RESPONSES API)
 *   fv_gemini.c     Google Gemini API (generateContent, streamGenerateContent,
 *                   countTokens, models; its wire format is described there,
 *                   GEMINI API), Google-shaped errors
 *   A new wire protocol is a new fv_NAME.c defining one fv_proto_t, declared
 *   at the end of this header and listed in FV_PROTOS (fv_core.c).
 *
 * Standalone: the files above, libuv + libhttp-parser (2.9) + OpenSSL (for
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
 *                                      RESPONSES API in fv_responses.c); errors
 *                                      OpenAI-shaped
 *   POST .../v1beta/models/{model}:generateContent   Gemini (also under
 *   POST .../v1beta/models/{model}:streamGenerateContent   .../v1/models/;
 *   POST .../v1beta/models/{model}:countTokens   see GEMINI API in
 *                                      fv_gemini.c): the model is the path's;
 *                                      streamGenerateContent streams SSE with
 *                                      ?alt=sse, else one JSON array;
 *                                      countTokens {"totalTokens": IN +
 *                                      cache_read, ...}; errors Google-shaped
 *   GET  .../v1beta/models[/{model}]   Gemini model list / one model
 *   GET  .../v1/models                 Gemini's list if the request carries a
 *                                      Google credential (x-goog-api-key,
 *                                      ?key=, a ya29. OAuth token; so does
 *                                      .../v1/models/{model}), else the
 *                                      Anthropic list shape if the request has
 *                                      an anthropic-version header, else the
 *                                      OpenAI {"object":"list",...} shape
 *   GET    /_fake/requests[?since=SEQ] JSON array of recorded requests
 *   DELETE /_fake/requests             hide all records so far, reset storm
 *                                      and the /_fake/stats counters
 *   GET    /_fake/stats                cumulative counters since start or the
 *                                      last DELETE (see STATS below)
 *   GET    /_fake/healthz              200 {"ok":true}
 *   anything else                      404, Anthropic-shaped JSON error (a
 *                                      path with a /v1beta/ segment, another
 *                                      action on .../models/{model}: Google-
 *                                      shaped)
 *   /_fake/... requests are never recorded and ignore overrides/fault modes.
 *
 * DETERMINISM (the defaults; every value is overridable, see below)
 *   IN    = 1 + body_bytes / 4       (integer division; decoded body length)
 *   N     = 8                        text delta events in a stream
 *   OUT   = 2 * N                    (16 by default)
 *   cache_read = cache_write = 0
 *   REPLY = "Hello from fakevendor."  split into N byte-ranges (never inside a
 *           UTF-8 sequence; pieces may be empty if N > length)
 *   REASONING = 0                    reasoning tokens, part of OUT (OpenAI,
 *                                    Gemini)
 *   TOOL_USE_PROMPT = 0              Gemini's toolUsePromptTokenCount
 *   If the request has max_tokens (or max_completion_tokens; for Responses
 *   only max_output_tokens; for Gemini only generationConfig.maxOutputTokens)
 *   < OUT, OUT is clamped to it and stop_reason is "max_tokens" (OpenAI
 *   finish_reason "length", Responses status "incomplete", Gemini
 *   finishReason "MAX_TOKENS"); the reply text is not shortened.  REASONING
 *   is then clamped to OUT.
 *   "in" always means uncached input tokens (Anthropic semantics).  OpenAI:
 *   prompt_tokens = IN + cache_read, prompt_tokens_details.cached_tokens =
 *   cache_read, completion_tokens = OUT (which includes
 *   completion_tokens_details.reasoning_tokens = REASONING); cache_write has
 *   no OpenAI field.  Responses: input_tokens = IN + cache_read,
 *   input_tokens_details.cached_tokens = cache_read, output_tokens = OUT
 *   (including output_tokens_details.reasoning_tokens = REASONING),
 *   total_tokens = input_tokens + output_tokens.  Anthropic has no reasoning
 *   field: REASONING only shows in the OpenAI and Gemini shapes.
 *   Gemini usageMetadata (zero counts left out as the real API does, except
 *   promptTokenCount and totalTokenCount; streams carry running totals, see
 *   fv_gemini.c):
 *     promptTokenCount        = IN + cache_read
 *     cachedContentTokenCount = cache_read            (when > 0)
 *     candidatesTokenCount    = OUT - REASONING       (when > 0)
 *     thoughtsTokenCount      = REASONING             (when > 0)
 *     toolUsePromptTokenCount = TOOL_USE_PROMPT       (when > 0)
 *     totalTokenCount         = promptTokenCount + candidatesTokenCount +
 *                               thoughtsTokenCount + toolUsePromptTokenCount
 *   (the real API's sum); cache_write has no Gemini field.  In keyrail's
 *   sense (the record's planned and served, one source of truth for the
 *   metering tests): input = IN + TOOL_USE_PROMPT (uncached prompt plus
 *   tool-use prompt), output = candidates + thoughts = OUT, cache_read =
 *   cache_read, cache_write = 0.
 *   Ids: msg_fake_<seq>, chatcmpl-fake-<seq>, resp_fake_<seq>, Gemini
 *   responseId gem_fake_<seq>, request-id (x-request-id) req_fake_<seq>,
 *   where <seq> is the 12-digit zero-padded record sequence number.
 *
 * OVERRIDES, per request.  Keys:
 *   in out cache_read cache_write events reply mode delay_ms after status
 *   interval_ms reasoning pad tool_use_prompt tool tool_name stamp
 *                                      (reply: one word, '_' becomes ' ')
 *   fail_auth=N  the mode (status=, reset_mid, ...) applies only to requests whose
 *                credential's SHA-256 begins with the 4 bytes N (big-endian,
 *                decimal); others are answered normally (a key pool's one
 *                failing key, tests/integration/test_pool.py)
 *   stamp=1      Anthropic content_block_delta events carry "sent_ns": the
 *                vendor's CLOCK_MONOTONIC when the event was made (the
 *                benchmark's per-event delay, bench/kbench.c)
 *   reasoning=N  reasoning tokens within OUT (clamped to OUT); OpenAI and
 *                Gemini shapes
 *   tool_use_prompt=N  Gemini only: toolUsePromptTokenCount (tokens of tool
 *                results the model was prompted with), counted as input in
 *                the record's planned and served; ignored elsewhere
 *   pad=BYTES    Responses API only: the final response object (non-stream
 *                body, response.completed / response.incomplete) gets a
 *                second output item, a message "msg_fake_<seq>_pad" whose
 *                output_text is BYTES bytes of plain ASCII filler (no JSON
 *                escapes), for testing usage parsers on huge final events.
 *                Streamed deltas and output_item events do not carry it, and
 *                it changes no token count.  At most 64 MiB.
 *   tool=HEX     answer with one scripted tool call running the command
 *                whose UTF-8 bytes HEX spells (hex digits of either case,
 *                two per byte, so any command survives the directive
 *                syntax), when the request qualifies; see SCRIPTED TOOL
 *                CALLS below.  At most 4096 bytes decoded.
 *   tool_name=NAME  the tool call's name instead of the protocol's default
 *                (Bash, exec_command, shell, run_shell_command); 1 to 128 of
 *                A-Z a-z 0-9 _ - . :
 *   (aliases: cache_creation=cache_write, delay=delay_ms, interval=interval_ms)
 *   Invalid values: a numeric value that is not 1 to 15 digits is ignored
 *   (the key keeps its default); an unknown mode, a tool= that is empty, has
 *   an odd number of digits, a non-hex digit, more than 8192 digits or
 *   decodes to something not UTF-8, and a bad tool_name=, get a 400 error
 *   (vendor-shaped, naming the problem) for every request carrying them,
 *   whatever the endpoint.  The last value of a key wins, so a later good
 *   tool= replaces an earlier bad one.
 *   Sources, lowest to highest precedence:
 *   1. directives "[[fake k=v k=v ...]]" anywhere in the raw request body
 *      (works through clients that only let you set prompt text, e.g.
 *      claude -p "[[fake out=42 mode=drip]] hi"); all directives in the body
 *      are applied in order, so the last one wins per key.  A bare word is
 *      taken as the mode ("[[fake stall]]").  Values stop at whitespace, ',',
 *      '"', '\', ']'.  A directive's "]]" must come within 16 KiB of its
 *      "[[fake" (else that directive and the rest of the body are ignored);
 *      at most 64 directives are read.
 *   2. header "x-fake: k=v k=v ..." (same syntax; a value over 16 KiB is
 *      cut there and its last, cut-off token dropped)
 *   3. headers "x-fake-KEY: VALUE" ('-' and '_' interchangeable in KEY,
 *      e.g. x-fake-cache-read: 100)
 *
 * SCRIPTED TOOL CALLS (tool=HEX), so an end-to-end test can make a real
 * agent CLI run a shell command of its choosing:
 *   A request to a protocol's own endpoint (not count_tokens, not the model
 *   list) with tool= set gets the tool call instead of the text reply when
 *   both hold:
 *   a. it declares tools: its top-level "tools" is a non-empty array (for
 *      Gemini: one of its elements has a non-empty "functionDeclarations"
 *      array, so a tools array of only googleSearch / codeExecution
 *      declares none).  Utility calls a CLI makes with the same prompt but
 *      no tools (titles, topics, summaries, Gemini CLI's model router) get
 *      the text reply.
 *   b. it carries no tool result yet, so the agent loop ends: tool call,
 *      tool result, text.  A tool result is, in the top-level "messages" or
 *      "input" array, an element with "role":"tool" (chat completions) or
 *      "type":"function_call_output" / "custom_tool_call_output"
 *      (Responses), or in such an element's "content" array an element with
 *      "type":"tool_result" (Anthropic); in Gemini's top-level "contents"
 *      array, an element whose "parts" array has an element with a
 *      "functionResponse" member.  These are found by a bounded scan of the
 *      body's JSON structure (no DOM, linear in the body, two levels below
 *      the array): strings are skipped whole, so prompt text that mentions
 *      "tool_result" is no tool result; a key or value spelt with \u
 *      escapes is not recognised (Gemini's keys are also taken in
 *      snake_case, functionDeclarations / function_declarations,
 *      functionResponse / function_response, as Google's parser takes
 *      both).  Any tool result anywhere in the conversation counts, so one
 *      conversation gets at most one scripted call.
 *   The call, per protocol (<seq> as in DETERMINISM; CMD JSON-escaped):
 *     Anthropic   a tool_use block, id toolu_fake_<seq>, default name Bash,
 *                 input {"command":CMD}; stop_reason "tool_use"
 *     Responses   a function_call item, id fc_fake_<seq>, call_id
 *                 call_fake_<seq>, default name exec_command (Codex's shell
 *                 tool), arguments "{\"cmd\":CMD}"
 *     chat        message.tool_calls [{id call_fake_<seq>, type function,
 *                 default name shell, arguments "{\"command\":CMD}"}],
 *                 content null; finish_reason "tool_calls"
 *     Gemini      a part {"functionCall":{"name":NAME,"args":{"command":
 *                 CMD}}}, default name run_shell_command (Gemini CLI's
 *                 shell tool, parameter "command"); finishReason "STOP"
 *                 as the real API gives (no id: the Gemini API sends none)
 *   The argument key (command, cmd, command, command) stays with
 *   tool_name=.  The exact shapes and stream events are described at the
 *   top of each protocol's file.  Streams keep their event counts
 *   (Anthropic N+6, chat N+3 [+1]; Responses N+6, see fv_responses.c;
 *   Gemini max(N,1)): the N text deltas become N deltas of the arguments'
 *   JSON text (input_json_delta partial_json, function_call_arguments.delta,
 *   delta.tool_calls arguments), split like the reply, their concatenation
 *   the arguments JSON; Gemini has no partial arguments, so its last chunk
 *   carries the whole functionCall and the ones before it an empty content.
 *   Usage is exactly as for a text reply (DETERMINISM); OUT clamped to
 *   max_tokens still gives "max_tokens" / "length" / "incomplete" /
 *   "MAX_TOKENS" (the call itself stays whole).  Fault modes apply
 *   unchanged.  The record's "tool_call" says whether the answer was one.
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
 *              (Anthropic, OpenAI or Google depending on endpoint); 429 adds
 *              retry-after: 1 (and Google's RetryInfo retryDelay "1s")
 *   malformed  stream `after` good events, then one event whose data: line is
 *              broken JSON, then the rest of the stream normally (a Gemini
 *              JSON-array stream: one broken array element).
 *              Non-stream: a truncated JSON body (content-length consistent).
 *   drip       stream with interval_ms (default 100) between events
 *   storm      the 1st, 3rd, 5th, ... request in storm mode (counted since
 *              start or the last DELETE /_fake/requests) gets a 503 error,
 *              the others succeed
 *   An unknown mode gets a 400 error naming it.
 *   "after" counts complete SSE events: Anthropic counts message_start,
 *   content_block_start, ping, each delta, ...; OpenAI counts every "data:"
 *   chunk including the final [DONE]; Responses counts every event from
 *   response.created on; Gemini counts chunks (SSE events or JSON-array
 *   elements).  Stream event order:
 *   Anthropic (N+6 events): message_start, content_block_start, ping,
 *     N x content_block_delta, content_block_stop, message_delta, message_stop
 *   OpenAI (N+3 events, +1 with include_usage): role chunk, N content chunks,
 *     finish chunk (finish_reason "stop"), [usage chunk], [DONE]
 *   (a scripted tool call, SCRIPTED TOOL CALLS below, keeps these counts
 *   except for Responses, N+6)
 *   Responses (N+8 events, see RESPONSES API in fv_responses.c):
 *     response.created, response.in_progress, response.output_item.added,
 *     response.content_part.added, N x response.output_text.delta,
 *     response.output_text.done, response.content_part.done,
 *     response.output_item.done, response.completed (response.incomplete
 *     when OUT was clamped)
 *   Gemini (max(N,1) chunks, see GEMINI API in fv_gemini.c): chunk k with
 *     reply piece k and running usage; the last with finishReason.  SSE
 *     events end in "\r\n\r\n" (Google's separator), with no [DONE]; the
 *     JSON array is "[" CHUNK ("\n,\r\n" CHUNK)... "\n]".
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
 *    "query":"beta=true" (every key= value replaced by REDACTED: Gemini's
 *            ?key= is a credential),
 *    "tls": true if the request came over TLS (--tls-cert), else false,
 *    "sni": the SNI host name the client sent in the TLS handshake | null
 *           (plain TCP, or no SNI, e.g. a client connecting to an IP),
 *    "auth_header":"x-api-key"|"x-goog-api-key"|"query-key"|"authorization"|
 *                  "none"  (query-key: Gemini's ?key=KEY, counted only on
 *                  Gemini's endpoints),
 *    "auth_class":"anthropic-oauth"|"anthropic-api-key"|"openai-key"|
 *                 "workspace-token"|"google-api-key" (AIza...)|
 *                 "google-oauth" (ya29....)|"unknown"|"none",
 *    "auth_sha256": hex SHA-256 of the credential (Authorization: "Bearer "
 *                   stripped; ?key= percent-decoded; values over 16 KiB are
 *                   hashed truncated) | null,
 *    "auth_multiple": true if more than one credential was present (the
 *                     headers and ?key=; auth_header prefers x-api-key,
 *                     then x-goog-api-key, then ?key=, then Authorization),
 *    "traceparent": str|null (W3C trace context, as received),
 *    "anthropic_version": str|null, "anthropic_beta": str|null (repeated
 *    headers joined with ','), "model": str|null (Gemini: the path's),
 *    "stream": bool (Gemini: streamGenerateContent), "include_usage": bool,
 *    "max_tokens": N|null (for /v1/responses: the request's
 *    max_output_tokens; Gemini: generationConfig.maxOutputTokens),
 *    "mode": "none"|"delay"|...|the unknown mode string, "body_bytes": N,
 *    "planned": {"input","output","cache_read","cache_write"}  (the values a
 *               fault-free response carries),
 *    "headers": [every request header name, lower-case, in order],
 *    "tool_call": true if the answer is the scripted tool call (tool=, see
 *                 SCRIPTED TOOL CALLS): set when the 200 head goes out, so
 *                 false while a delay or stall is pending, and for errors
 *                 and text replies,
 *    "served": {"input","output","cache_read","cache_write"}  (usage the
 *               vendor actually put on the wire: Anthropic message_start
 *               serves input/cache and output 1, message_delta serves OUT;
 *               OpenAI streams serve usage only in the include_usage chunk;
 *               Responses streams only in the final response.completed /
 *               response.incomplete event; Gemini streams serve the
 *               running totals of the last chunk sent, in keyrail's sense
 *               (DETERMINISM: input IN + TOOL_USE_PROMPT, output
 *               candidates + thoughts so far, cache_read); Gemini
 *               countTokens serves input IN; output is OUT, reasoning
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

#ifndef FV_H
#define FV_H

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
#define HVAL_MAX       16384u          /* buffered values of interesting headers */
#define NAMES_MAX      2048u           /* JSON list of header names */
#define VER_MAX        128u
#define BETA_MAX       1024u
#define MODEL_MAX      256u
#define REPLY_MAX      512u
#define BODY_MAX       (64u << 20)     /* larger bodies get 413 */
#define PAD_MAX        (64u << 20)     /* largest pad= (Responses API) */
#define TOOL_MAX       4096u           /* largest tool= command, decoded bytes */
#define TOOL_NAME_MAX  128u            /* longest tool_name= */
#define DIRECTIVE_MAX  16384u          /* "[[fake" to its "]]", at most */
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
/* Growable byte buffer (inline: every file renders into these)              */

typedef struct {
    char  *p;
    size_t len, cap;
} buf_t;

void fv_die(const char *msg);
void fv_buf_grow(buf_t *b, size_t need);

static inline void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra > b->cap)
        fv_buf_grow(b, b->len + extra);
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

static inline void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

static inline void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static inline void buf_u64(buf_t *b, uint64_t v)
{
    char t[24];
    int i = 24;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(b, t + i, (size_t)(24 - i));
}

static inline void buf_num(buf_t *b, int64_t v) { buf_u64(b, v < 0 ? 0 : (uint64_t)v); }

static inline void buf_pad12(buf_t *b, uint64_t v)
{
    char t[12];
    for (int i = 11; i >= 0; i--) {
        t[i] = (char)('0' + v % 10);
        v /= 10;
    }
    buf_put(b, t, 12);
}

static inline void buf_hex(buf_t *b, size_t v)
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

static inline void buf_bool(buf_t *b, bool v)
{
    if (v)
        BUF_LIT(b, "true");
    else
        BUF_LIT(b, "false");
}

/* Append s as JSON string contents (no quotes); invalid UTF-8 -> U+FFFD. */
void fv_buf_jesc(buf_t *b, const char *s, size_t n);

static inline void buf_jstr(buf_t *b, const char *s, size_t n)
{
    BUF_LIT(b, "\"");
    fv_buf_jesc(b, s, n);
    BUF_LIT(b, "\"");
}

/* ------------------------------------------------------------------------ */
/* Overrides ("[[fake k=v]]", x-fake, x-fake-KEY; parsed in fv_util.c)       */

enum {
    K_IN, K_OUT, K_CACHE_READ, K_CACHE_WRITE, K_EVENTS, K_DELAY_MS, K_AFTER, K_STATUS,
    K_INTERVAL_MS, K_REASONING, K_PAD, K_TOOL_USE_PROMPT, K_STAMP, K_FAIL_AUTH,
    K_NNUM, /* numeric keys end here */
    K_REPLY = K_NNUM, K_MODE, K_TOOL, K_TOOL_NAME
};

typedef struct {
    unsigned    set; /* bit per K_* */
    int64_t     num[K_NNUM];
    char        reply[REPLY_MAX];
    size_t      reply_len;
    char        mode[24];
    size_t      mode_len;
    char        tool[TOOL_MAX]; /* tool=: the decoded command */
    size_t      tool_len;
    const char *tool_bad;       /* tool=: why the value is unusable, or NULL */
    char        tool_name[TOOL_NAME_MAX];
    size_t      tool_name_len;
    const char *tool_name_bad;  /* tool_name=: likewise */
} ov_t;

#define OV_HAS(o, k) (((o)->set >> (k)) & 1u)

/* ------------------------------------------------------------------------ */
/* The request body's top-level keys (scanned in fv_util.c), and what a      */
/* protocol's request hook adds from the path and query (fv_proto_t)         */

typedef struct {
    const char *model;
    size_t      model_len;
    bool        has_model, stream, include_usage;
    bool        json_array;      /* stream as a JSON array, not SSE (Gemini's
                                  * streamGenerateContent without alt=sse) */
    bool        has_tools;       /* a non-empty top-level "tools" array */
    bool        has_fn_decls;    /* Gemini: an element of "tools" with a
                                  * non-empty "functionDeclarations" array */
    bool        has_tool_result; /* a tool result in the conversation (see
                                  * SCRIPTED TOOL CALLS) */
    int64_t     max_tokens;        /* -1 if absent */
    int64_t     max_output_tokens; /* Responses API; -1 if absent */
    int64_t     gen_max_output;    /* Gemini generationConfig.maxOutputTokens;
                                    * -1 if absent */
} bodyinfo_t;

/* ------------------------------------------------------------------------ */
/* Types: records, requests, jobs, connections                               */

enum { AC_NONE, AC_OAUTH, AC_APIKEY, AC_OPENAI, AC_WS, AC_GOOGLE_KEY, AC_GOOGLE_OAUTH,
       AC_UNKNOWN };

enum { M_NONE, M_DELAY, M_STALL, M_STALL_MID, M_RESET_MID, M_STATUS, M_MALFORMED, M_DRIP,
       M_STORM, M_BAD };

/* EP_GEN: the protocol's own endpoint (messages, chat completions,
 * responses, generateContent); EP_COUNT: its token counting (Anthropic
 * count_tokens, Gemini countTokens); EP_MODELS: the model list; EP_MODEL:
 * one model (Gemini's GET .../models/{model}); EP_404: no endpoint (a route
 * may return it for a path that is its protocol's, for an error in its
 * shape) */
enum { EP_GEN = 1, EP_COUNT, EP_MODELS, EP_MODEL, EP_404 };
enum { PH_NONE, PH_DELAY, PH_STREAM, PH_STALL, PH_RESET };
enum { T_DELAY = 1, T_DRIP, T_RESET };
enum { H_OTHER, H_XAPIKEY, H_XGOOGKEY, H_AUTHZ, H_VER, H_BETA, H_FAKE, H_FAKE_KEY, H_EXPECT,
       H_TRACEPARENT };

typedef struct {
    uint64_t seq; /* 0 = empty slot */
    buf_t    js;  /* static JSON members, each starting with ',' */
    int      status;
    bool     completed, pending;
    bool     tool_call; /* answered with a scripted tool call (200 only) */
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
    bool   hval_over; /* the value was cut at HVAL_MAX */
    int    hstate; /* 0 none, 1 in field, 2 in value */
    int    hkind;
    char   names[NAMES_MAX];
    size_t names_len;
    bool   names_over;
    char   ver[VER_MAX];
    size_t ver_len;
    bool   has_ver;
    char   tp[VER_MAX]; /* traceparent (the last one) */
    size_t tp_len;
    bool   has_tp;
    char   beta[BETA_MAX];
    size_t beta_len;
    bool   has_beta;
    cred_t xkey, gkey, qkey, authz; /* x-api-key, x-goog-api-key, ?key= (set
                                     * by the core for protocols with
                                     * query_key), Authorization */
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
    const struct fv_proto *proto; /* the wire protocol (fv_proto_t below) */
    bool     stream, include_usage, chunked, clamped;
    bool     json_array; /* the stream is a JSON array, not SSE (Gemini) */
    bool     tool_call;  /* answer with the scripted tool call (tool_*) */
    int      err_status; /* nonzero: answer with this error */
    int64_t  in, out, cr, cw, events, delay_ms, after, status, interval_ms;
    bool     stamp; /* stamp=1: Anthropic text deltas carry "sent_ns" (CLOCK_MONOTONIC) */
    int64_t  reasoning, pad, max_out; /* max_out: the request's limit, -1 if none */
    int64_t  tool_use_prompt; /* tool_use_prompt= (protocols with the field) */
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
    char     tool_cmd[TOOL_MAX];        /* tool_call: the command, */
    size_t   tool_cmd_len;
    char     tool_name[TOOL_NAME_MAX];  /* the tool's name */
    size_t   tool_name_len;
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
/* Wire protocols                                                            */

/* A request's target as the routes see it: the method, the path and the
 * query (split, no '?'), and the headers seen (credentials, ...). */
typedef struct {
    int          method;
    const char  *path, *query;
    size_t       plen, qlen;
    const req_t *req;
} fv_target_t;

/* One wire protocol: how its requests are routed and its responses rendered.
 * The core (fv_core.c) owns everything else -- the HTTP head, the fault
 * modes, chunked framing, the record and the stats -- and calls these in
 * place of a per-protocol if-chain.  The render functions append to b (the
 * core empties it first); the job's usage numbers (in, out, cr, cw,
 * reasoning), reply, model, seq and created are set up before any call. */
typedef struct fv_proto {
    /* EP_* if this request is this protocol's, else 0; tried in FV_PROTOS
     * order, the first nonzero wins */
    int (*route)(const fv_target_t *t);
    /* optional: what the path and query say, for protocols that carry
     * request fields there (Gemini: the model, streaming, alt=sse), called
     * with the route's ep after the body scan; adjusts bi (model, stream,
     * json_array, max_tokens, has_tools).  Returns 0, or an HTTP status to
     * answer with the error message it wrote to msg (msz bytes). */
    int (*request)(const fv_target_t *t, int ep, bodyinfo_t *bi, char *msg, size_t msz);
    const char *id_header;  /* response header carrying req_fake_<seq> */
    const char *models;     /* the model list's body (EP_MODELS; GET
                             * .../v1/models), NULL if never chosen */
    /* EP_MODEL: one model, j->model; NULL without */
    void (*model)(buf_t *b, const job_t *j);
    bool        cache_write; /* the usage has a cache-write field (planned
                              * and served cache_write; else they are 0) */
    bool        limit_max_output; /* the output limit is max_output_tokens
                                   * alone (recorded as max_tokens) */
    bool        query_key;   /* a key= query parameter is a credential */
    bool        tool_use_prompt; /* the usage has a tool-use-prompt field
                                  * (tool_use_prompt=, counted as input in
                                  * planned and served; else it is 0) */
    /* a JSON error body with status, for the request seq (0: none) */
    void (*error)(buf_t *b, int status, uint64_t seq, const char *msg);
    /* the non-stream EP_GEN body */
    void (*body)(buf_t *b, const job_t *j);
    /* the EP_COUNT body; sets the served counters (j->s_*); NULL without */
    void (*count)(buf_t *b, job_t *j);
    /* the number of stream events for j (j->ev_total) */
    int (*events)(const job_t *j);
    /* stream event k (0 .. events-1), a complete SSE event; sets the served
     * counters (j->s_*) when it carries usage */
    void (*event)(buf_t *b, job_t *j, int k);
    const char *malformed;  /* mode=malformed: the one event with broken JSON */
    const char *malformed_array; /* the same in a JSON-array stream */
    /* scripted tool calls (tool=): the default tool name and the key of the
     * command in its arguments object */
    const char *tool_name, *tool_arg;
} fv_proto_t;

extern const fv_proto_t fv_anthropic;        /* fv_anthropic.c */
extern const fv_proto_t fv_openai_chat;      /* fv_openai.c */
extern const fv_proto_t fv_openai_responses; /* fv_responses.c */
extern const fv_proto_t fv_gemini;           /* fv_gemini.c */

/* OpenAI's error shape (fv_openai.c), which the Responses API shares. */
void fv_openai_error(buf_t *b, int status, uint64_t seq, const char *msg);

/* ------------------------------------------------------------------------ */
/* Shared state and functions, by the file that defines them                 */

/* fv_util.c */
bool fv_json_raw_ok(const char *s, size_t n);
void fv_cred_set(cred_t *cr, const char *v, size_t n);
bool fv_query_param(const char *q, size_t qn, const char *name, const char **v, size_t *vn);
size_t fv_pct_decode(char *dst, size_t cap, const char *s, size_t n);
void fv_sha256(const void *data, size_t len, unsigned char out[32]);
void fv_hex32(char out[64], const unsigned char d[32]);
int  fv_sha256_stdin(void);
void fv_ov_apply(ov_t *o, const char *k, size_t kl, const char *v, size_t vl);
void fv_ov_parse(ov_t *o, const char *s, size_t n);
void fv_ov_merge(ov_t *dst, const ov_t *src);
void fv_ov_scan_body(ov_t *o, const char *b, size_t n);
void fv_js_scan_obj(const char *p, const char *e, int level, bodyinfo_t *bi);

/* fv_core.c */
typedef struct {
    uint64_t completed, incomplete, errors;
    int64_t  in, out, cr, cw;
    uint64_t tls_ok, tls_failed, tls_plain;
} fv_stats_t;
extern fv_stats_t g_stats; /* GET /_fake/stats; reset by DELETE /_fake/requests */

int  fv_records_open(const char *record); /* the ring and --record FILE; -1: said why */
void fv_records_free(void);
void fv_rec_result(job_t *j);
void fv_rec_done(uint64_t seq, bool completed);
void fv_send_error(conn_t *c, int status, const fv_proto_t *pr, uint64_t seq, const char *msg);
void fv_handle_request(conn_t *c);
void fv_run_stream(conn_t *c);
void fv_respond_now(conn_t *c);
bool fv_path_ends(const char *p, size_t n, const char *suf);
void fv_put_model(buf_t *b, const job_t *j);
void fv_reply_piece(const job_t *j, int i, const char **ps, size_t *pn);
void fv_tool_args(buf_t *b, const job_t *j);
size_t fv_tool_text(const job_t *j, const char **ps);
void fv_tool_piece(const job_t *j, int i, const char **ps, size_t *pn);

/* fv_server.c */
extern uv_loop_t *g_loop;
extern uint64_t   g_start_ms;
extern bool       g_quiet;

bool fv_over_high(const conn_t *c);
void fv_start_timer(conn_t *c, int kind, int64_t ms);

#endif
