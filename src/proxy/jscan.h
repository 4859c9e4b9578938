/*
 * jscan.h -- a non-DOM JSON scanner for the proxy's hot path.
 *
 * Claude Code request bodies are 50-200 KB; the proxy needs three or four
 * fields of them (model, stream, max_tokens, stream_options). These functions
 * validate strict RFC 8259 JSON with a nesting cap and hand back the raw span
 * of the wanted values, without allocating and without building a tree.
 * cJSON is used elsewhere (config, admin paths) where a DOM is convenient.
 */
#ifndef KR_JSCAN_H
#define KR_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KR_JSON_MAX_DEPTH 128

typedef enum {
    KR_JSON_ABSENT = 0,
    KR_JSON_STRING,
    KR_JSON_NUMBER,
    KR_JSON_TRUE,
    KR_JSON_FALSE,
    KR_JSON_NULL,
    KR_JSON_OBJECT,
    KR_JSON_ARRAY
} kr_json_type;

typedef struct kr_jval {
    kr_json_type type;
    const char *p; /* raw text of the value: strings include their quotes */
    size_t n;
} kr_jval;

/* 0 when js[0..n) is exactly one valid JSON value (with optional surrounding
 * whitespace), else KR_EPARSE. */
int kr_json_validate(const char *js, size_t n);

/*
 * The document must be a JSON object. For each keys[i] (a plain ASCII name,
 * compared against the unescaped member name) out[i] receives the value of
 * that top-level member, or type KR_JSON_ABSENT. The whole document is
 * validated. Returns 0, or KR_EPARSE when the document is invalid, is not an
 * object, or names one of the wanted keys twice (two "model" members could
 * otherwise mean one thing to keyrail and another to the vendor).
 */
int kr_json_object_get(const char *js, size_t n, const char *const *keys, kr_jval *out,
                       size_t nkeys);

/*
 * Value at a dotted path of object members ("message.usage.input_tokens").
 * Validates the whole document. Returns 0, KR_ENOTFOUND, or KR_EPARSE.
 */
int kr_json_get(const char *js, size_t n, const char *path, kr_jval *out);

/* Element i (from 0) of an array value (a kr_jval of type KR_JSON_ARRAY, or
 * the text of an array; the elements up to i and the separators between
 * them are validated on the way). Returns 0, KR_ENOTFOUND (fewer elements),
 * or KR_EPARSE. */
int kr_json_array_at(const kr_jval *arr, size_t i, kr_jval *out);
/* The elements of an array one after the other: *pos starts NULL. Returns 0
 * with the next element, KR_ENOTFOUND after the last, or KR_EPARSE. */
int kr_json_array_next(const kr_jval *arr, const char **pos, kr_jval *out);

/* A non-negative integer without fraction or exponent that fits in 64 bits. */
int kr_jval_u64(const kr_jval *v, uint64_t *out);
/* Unescapes a string value into out (NUL-terminated). KR_ETOOBIG when it does
 * not fit, KR_EINVAL when v is not a string. *len may be NULL. */
int kr_jval_str(const kr_jval *v, char *out, size_t cap, size_t *len);
/* True when v is a string whose unescaped value equals lit. */
bool kr_jval_str_eq(const kr_jval *v, const char *lit);

#endif
