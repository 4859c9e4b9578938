/*
 * gemini_path.h -- the Gemini API's request line, parsed: the path
 * (/gemini/{v1beta|v1}/models[/{model}[:{action}]]) and the query (alt=,
 * key=). Pure functions over bytes, bounded by their output fields; the
 * proxy's routes (routes.c) use them and fuzz_gemini_path drives them.
 */
#ifndef KR_GEMINI_PATH_H
#define KR_GEMINI_PATH_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    KR_GEM_GENERATE = 0, /* POST .../models/M:generateContent */
    KR_GEM_STREAM,       /* POST .../models/M:streamGenerateContent */
    KR_GEM_COUNT_TOKENS, /* POST .../models/M:countTokens */
    KR_GEM_LIST,         /* GET .../models */
    KR_GEM_MODEL,        /* GET .../models/M */
} kr_gem_action;

#define KR_GEM_MODEL_MAX 128 /* with its NUL */

typedef struct kr_gem_path {
    kr_gem_action action;
    char version[8];              /* "v1beta" or "v1" */
    char model[KR_GEM_MODEL_MAX]; /* [A-Za-z0-9._-]+, "" for the list */
} kr_gem_path;

/* path: the whole path, starting "/gemini/". 0, or -1 when it is none of
 * the API's paths (out is then unspecified). */
int kr_gemini_path_parse(const char *path, size_t n, kr_gem_path *out);

typedef struct kr_gem_query {
    bool alt_sse;    /* alt=sse (stream only) */
    const char *key; /* key=VALUE: a credential (points into the query) */
    size_t key_n;
} kr_gem_query;

/* The query string (without '?'): alt=sse or alt=json (stream only) and one
 * key=; anything else is refused (-1) rather than silently dropped. */
int kr_gemini_query_parse(const char *q, size_t n, bool stream, kr_gem_query *out);

#endif
