/*
 * sse_usage.h -- reads token usage out of a vendor response as it streams by.
 *
 * The proxy relays every upstream chunk to the client unchanged and also
 * feeds it here. This parser splits the Server-Sent Events stream into
 * events (any chunking, LF or CRLF, multi-line data) with capped line and
 * event sizes, and picks up usage:
 *   Anthropic  message_start  message.usage.{input_tokens, output_tokens,
 *                             cache_read_input_tokens, cache_creation_input_tokens}
 *              message_delta  usage.* (cumulative; each field present overwrites)
 *              message_stop   -> done;  error -> error_event
 *   OpenAI     any chunk whose "usage" is an object: prompt_tokens,
 *   chat       completion_tokens, prompt_tokens_details.cached_tokens
 *              (input = prompt - cached); "data: [DONE]" -> done
 *   OpenAI     response.completed / response.incomplete / response.failed
 *   responses  -> response.usage.{input_tokens, input_tokens_details.
 *              cached_tokens, output_tokens (reasoning included)}, input =
 *              input_tokens - cached; -> done. "error" -> error_event. The
 *              final event repeats the whole response object and can be
 *              large: an event over max_event that was a final one sets
 *              `usage_lost` (the caller records the row as such and says so).
 *   Gemini     every chunk (data only, no event names) is a
 *              GenerateContentResponse whose usageMetadata is a running total:
 *              the last one seen wins, never a sum. input = promptTokenCount -
 *              cachedContentTokenCount + toolUsePromptTokenCount, cache_read =
 *              cachedContentTokenCount, output = candidatesTokenCount +
 *              thoughtsTokenCount. A candidate with a finishReason -> done;
 *              an "error" object -> error_event. Non-streaming: one such
 *              object, or (streamGenerateContent without alt=sse) an array of
 *              them, of which the last usage counts.
 * Malformed input never stops the relay; it only sets `malformed`.
 */
#ifndef KR_SSE_USAGE_H
#define KR_SSE_USAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/usage.h"

/* The body dialect whose usage is read: the wire protocol and, for OpenAI,
 * which API (values 0 and 1 are kr_proto's). */
typedef enum {
    KR_WIRE_ANTHROPIC = 0,
    KR_WIRE_OPENAI_CHAT = 1,
    KR_WIRE_OPENAI_RESPONSES = 2,
    KR_WIRE_GEMINI = 3,
} kr_wire;

typedef struct kr_sse_usage {
    kr_proto proto;
    kr_wire wire;
    kr_usage usage;
    bool done;        /* terminal event seen (message_stop / [DONE]) */
    bool error_event; /* the vendor sent an error event mid-stream */
    bool malformed;   /* a line or event over the cap, or data that is not JSON */
    bool usage_lost;  /* a final (usage-bearing) event was over the cap */
    char model[128];  /* model the vendor reported, "" if none */
    size_t events;    /* events seen */
    /* private */
    size_t max_event;
    kr_buf line; /* partial line carried between chunks */
    kr_buf data; /* data lines of the current event */
    char event[64];
    bool skip_line;  /* current line overflowed the cap: discard to its end */
    bool cr;         /* previous chunk ended in CR */
    bool skip_event; /* current event overflowed: ignore its lines until the blank line */
    bool has_data;   /* current event has at least one data line */
    bool first_line; /* no line completed yet (a leading UTF-8 BOM is dropped) */
} kr_sse_usage;

/* max_event caps one event's data (and one line); 1 MiB is plenty. */
void kr_sse_usage_init(kr_sse_usage *s, kr_proto proto, size_t max_event);
void kr_sse_usage_init_wire(kr_sse_usage *s, kr_wire wire, size_t max_event);
void kr_sse_usage_feed(kr_sse_usage *s, const char *p, size_t n);
/* End of stream: dispatches a final event that had no blank line after it. */
void kr_sse_usage_finish(kr_sse_usage *s);
void kr_sse_usage_free(kr_sse_usage *s);

/* Usage of a non-streaming JSON response body. 0, KR_ENOTFOUND (valid JSON
 * without usage) or KR_EPARSE. model may be NULL. */
int kr_usage_from_json(kr_proto proto, const char *body, size_t n, kr_usage *u, char *model,
                       size_t modelcap);
int kr_usage_from_json_wire(kr_wire wire, const char *body, size_t n, kr_usage *u, char *model,
                            size_t modelcap);

#endif
