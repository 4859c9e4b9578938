/*
 * usage.h -- the wire protocols keyrail speaks (Anthropic Messages, OpenAI,
 * the Gemini API) and the token usage of one LLM call, as read from the
 * vendor's response. Shared by the registry (prices), the proxy (metering)
 * and the store (ledger).
 */
#ifndef KR_USAGE_H
#define KR_USAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef enum { KR_PROTO_ANTHROPIC = 0, KR_PROTO_OPENAI = 1, KR_PROTO_GEMINI = 2 } kr_proto;
#define KR_PROTO__COUNT 3

static inline const char *kr_proto_name(kr_proto p)
{
    return p == KR_PROTO_OPENAI ? "openai" : p == KR_PROTO_GEMINI ? "gemini" : "anthropic";
}

/* "anthropic", "openai" or "gemini" -> the protocol; -1 for anything else. */
static inline int kr_proto_parse(const char *s)
{
    for (int p = 0; p < KR_PROTO__COUNT; p++)
        if (s && !strcmp(s, kr_proto_name((kr_proto)p))) return p;
    return -1;
}

typedef struct kr_usage {
    uint64_t input_tokens;       /* uncached input tokens (OpenAI: prompt - cached; Gemini:
                                    prompt - cached + tool-use prompt) */
    uint64_t output_tokens;      /* completion / output tokens (Gemini: candidates + thoughts) */
    uint64_t cache_read_tokens;  /* Anthropic cache_read_input_tokens, OpenAI cached_tokens,
                                    Gemini cachedContentTokenCount */
    uint64_t cache_write_tokens; /* Anthropic cache_creation_input_tokens */
    bool seen;                   /* at least one usage object was read */
} kr_usage;

#endif
