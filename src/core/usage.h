/*
 * usage.h -- the two wire protocols keyrail speaks and the token usage of one
 * LLM call, as read from the vendor's response. Shared by the registry
 * (prices), the proxy (metering) and the store (ledger).
 */
#ifndef KR_USAGE_H
#define KR_USAGE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { KR_PROTO_ANTHROPIC = 0, KR_PROTO_OPENAI = 1 } kr_proto;

static inline const char *kr_proto_name(kr_proto p)
{
    return p == KR_PROTO_OPENAI ? "openai" : "anthropic";
}

typedef struct kr_usage {
    uint64_t input_tokens;       /* uncached input tokens (OpenAI: prompt - cached) */
    uint64_t output_tokens;      /* completion / output tokens */
    uint64_t cache_read_tokens;  /* Anthropic cache_read_input_tokens, OpenAI cached_tokens */
    uint64_t cache_write_tokens; /* Anthropic cache_creation_input_tokens */
    bool seen;                   /* at least one usage object was read */
} kr_usage;

#endif
