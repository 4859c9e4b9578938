/*
 * buf.h -- bounded growable byte buffers and string helpers.
 *
 * Every buffer that grows from input has a hard cap set by whoever creates it
 * (kr_buf.max); an append past the cap fails with KR_ETOOBIG and leaves the
 * buffer unchanged. The data is always NUL-terminated for convenience, the NUL
 * is not counted in len. Also: {ptr,len} slices and the bounded string
 * helpers keyrail uses instead of strcpy/sprintf/atoi.
 */
#ifndef KR_BUF_H
#define KR_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kr_buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* hard cap on len, set by the creator */
} kr_buf;

#define KR_BUF_INIT(maxbytes)                                                                      \
    {                                                                                              \
        NULL, 0, 0, (maxbytes)                                                                     \
    }

void kr_buf_init(kr_buf *b, size_t max);
void kr_buf_free(kr_buf *b);
void kr_buf_reset(kr_buf *b); /* len = 0, keeps memory */
int kr_buf_reserve(kr_buf *b, size_t extra);
int kr_buf_append(kr_buf *b, const void *p, size_t n);
int kr_buf_puts(kr_buf *b, const char *s);
int kr_buf_putc(kr_buf *b, char c);
int kr_buf_printf(kr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Decimal integers without printf (hot paths: the request log line). */
int kr_buf_put_u64(kr_buf *b, uint64_t v);
int kr_buf_put_i64(kr_buf *b, int64_t v);
/* ns as milliseconds with three decimals ("12.345"). */
int kr_buf_put_ms3(kr_buf *b, uint64_t ns);
/* Appends s as the inside of a JSON string (escapes quotes, controls, and
 * non-ASCII bytes that do not form valid UTF-8). */
int kr_buf_json_str(kr_buf *b, const char *s, size_t n);
/* Appends s[0..n) for a person to read (CLI errors and tables): printable
 * ASCII and valid UTF-8 pass; a backslash, \n, \r, \t, other controls and
 * DEL (\xHH), bytes that are not UTF-8 (\xHH) and code points that steer a
 * terminal or reorder text -- C1 controls, bidi overrides (\u{HHHH}) -- are
 * escaped. The result is one line that cannot move a cursor or forge a row. */
int kr_buf_put_escaped(kr_buf *b, const char *s, size_t n);
/* The same for the string s into out (cap bytes, NUL-terminated), cut with
 * "..." when it does not fit; returns out. For printf arguments. */
const char *kr_esc(const char *s, char *out, size_t cap);
/* Removes the first n bytes. */
void kr_buf_consume(kr_buf *b, size_t n);
/* Hands the data to the caller (who frees it) and resets b. */
char *kr_buf_steal(kr_buf *b);

typedef struct kr_slice {
    const char *p;
    size_t n;
} kr_slice;

#define KR_SLICE_LIT(s) ((kr_slice){(s), sizeof(s) - 1})
static inline kr_slice kr_slice_cstr(const char *s)
{
    kr_slice x = {s, 0};
    if (s)
        while (s[x.n])
            x.n++;
    return x;
}
bool kr_slice_eq(kr_slice a, const char *lit);
bool kr_slice_eq_ci(kr_slice a, const char *lit);
bool kr_slice_starts(kr_slice a, const char *prefix);

/* Copies at most cap-1 bytes and NUL-terminates; returns KR_ETOOBIG on
 * truncation (dst still terminated). */
int kr_strlcpy(char *dst, const char *src, size_t cap);
int kr_memlcpy(char *dst, size_t cap, const char *src, size_t n);
/* snprintf that reports truncation as KR_ETOOBIG. */
int kr_snprintf(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Strict unsigned/signed decimal parse of the whole string, no sign for u64. */
int kr_parse_u64(const char *s, size_t n, uint64_t *out);
int kr_parse_i64(const char *s, size_t n, int64_t *out);
/* Decimal with up to 6 fractional digits to micro-units ("3.75" -> 3750000). */
int kr_parse_micros(const char *s, size_t n, int64_t *out);
/* Lower-case hex. out must hold 2*n+1 bytes. */
void kr_hex(const uint8_t *in, size_t n, char *out);
/* A 64-bit FNV-1a-style hash (its offset basis is keyrail's own: the usage
 * journal's checksums depend on it; never change it). */
uint64_t kr_fnv64(const void *p, size_t n);
int kr_unhex(const char *s, size_t slen, uint8_t *out, size_t outlen);
/* strdup that aborts on OOM; NULL in, NULL out. */
char *kr_strdup(const char *s);
char *kr_strndup(const char *s, size_t n);
/* Allocation helpers that abort on OOM (keyrail treats OOM as fatal). */
void *kr_xmalloc(size_t n);
void *kr_xcalloc(size_t n, size_t m);
void *kr_xrealloc(void *p, size_t n);
/* Milliseconds / microseconds since the Unix epoch, and monotonic ns. */
int64_t kr_now_ms(void);
uint64_t kr_mono_ns(void);

#endif
