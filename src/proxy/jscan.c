/*
 * jscan.c -- non-DOM JSON scanner (see jscan.h).
 *
 * One forward pass, no allocation, no recursion. A value is scanned by a small
 * goto state machine whose only memory is a byte stack of the open containers
 * (KR_JSON_MAX_DEPTH bytes on the C stack), so hostile nesting costs a
 * counter compare, never stack depth.
 *
 * String bodies are the bulk of a request (system prompt, tool schemas,
 * message text), so they get the fast path: eight bytes at a time, a SWAR
 * test asks "is any byte a quote, a backslash, a control character or
 * non-ASCII?"; only when one is, a 256-entry table finds it and the slow path
 * handles that one byte (end of string, escape, UTF-8 sequence check).
 *
 * Validation is RFC 8259 plus RFC 3629 for string bytes: no overlong
 * encodings, no UTF-16 surrogates encoded in UTF-8, nothing above U+10FFFF;
 * \u escapes must pair surrogates properly (a high one followed by a low
 * one, never alone).
 *
 * Object members are matched by their unescaped names, decoded on the fly
 * while comparing, so no buffer is needed for names either.
 */
#include "proxy/jscan.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/err.h"

#include <string.h>

typedef unsigned char u8;

/* ---- string bodies ----------------------------------------------------- */

/* 1 for bytes that end the fast path inside a string: '"', '\\', controls,
 * and every byte >= 0x80 (validated as UTF-8 by the slow path). */
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
/* clang-format off */
static const u8 str_stop[256] = {
    R16(1), R16(1),                                 /* 0x00-0x1f */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20-0x2f: '"' */
    R16(0), R16(0),                                 /* 0x30-0x4f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50-0x5f: '\\' */
    R16(0), R16(0),                                 /* 0x60-0x7f */
    R16(1), R16(1), R16(1), R16(1),                 /* 0x80-0xbf */
    R16(1), R16(1), R16(1), R16(1),                 /* 0xc0-0xff */
};
/* clang-format on */
#undef R16

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero when any of the 8 bytes would stop the fast path. The classic
 * "has zero byte" / "has byte less than n" tests are exact as booleans. */
static inline uint64_t swar_stop(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');
    uint64_t hit = ((q - ONES) & ~q) | ((b - ONES) & ~b) | (v - ONES * 0x20) | v;
    return hit & HIGHS;
}

static inline uint64_t load8(const u8 *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The byte a two-character escape stands for (\" \\ \/ \b \f \n \r \t), else 0. */
static const u8 esc2[256] = {
    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
};

static int hexval(u8 c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Four hex digits at p (caller guarantees 4 readable bytes), or -1. */
static long hex4(const u8 *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = (v << 4) | h;
    }
    return v;
}

/*
 * Decodes the escape sequence at p (p[0] == '\\') into its code point.
 * Returns the pointer past it, or NULL when malformed (unknown escape, bad
 * hex, a surrogate that is not part of a proper pair, or running past end).
 */
static const u8 *unescape1(const u8 *p, const u8 *end, uint32_t *cp)
{
    if (end - p < 2) return NULL;
    if (esc2[p[1]]) {
        *cp = esc2[p[1]];
        return p + 2;
    }
    if (p[1] != 'u') return NULL;
    if (end - p < 6) return NULL;
    long hi = hex4(p + 2);
    if (hi < 0) return NULL;
    if (hi >= 0xDC00 && hi <= 0xDFFF) return NULL; /* lone low surrogate */
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = (uint32_t)hi;
        return p + 6;
    }
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u') return NULL;
    long lo = hex4(p + 8);
    if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
    *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    return p + 12;
}

static size_t utf8_put(uint32_t cp, u8 out[4])
{
    if (cp < 0x80) {
        out[0] = (u8)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (u8)(0xC0 | (cp >> 6));
        out[1] = (u8)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (u8)(0xE0 | (cp >> 12));
        out[1] = (u8)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (u8)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (u8)(0xF0 | (cp >> 18));
    out[1] = (u8)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (u8)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (u8)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at p (p[0] >= 0x80), or 0. */
static size_t utf8_len(const u8 *p, const u8 *end)
{
    u8 c = p[0];
    size_t need;
    u8 lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong, F5..FF */
    }
    if ((size_t)(end - p) < need) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return need;
}

/* Pointer to the first byte at or after p that stops the fast path, or end. */
static inline const u8 *skip_plain(const u8 *p, const u8 *end)
{
#ifdef __SSE2__
    /* 16 bytes at a time: stop at '"', '\\', a control byte or a non-ASCII
     * byte (a signed compare with 0x20 catches both 0x00-0x1f and 0x80-0xff) */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmplt_epi8(v, space));
        int m = _mm_movemask_epi8(hit);
        if (m) return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
#endif
    while (end - p >= 8) {
        uint64_t m = swar_stop(load8(p));
        if (m) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* the lowest flagged byte is always a true hit (borrows only
             * run upwards from a byte that is itself a hit) */
            return p + (__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }
        p += 8;
    }
    while (p < end && !str_stop[*p])
        p++;
    return p;
}

/*
 * Scans a string body; p is just past the opening quote. Returns the pointer
 * just past the closing quote, or NULL when the string is invalid or
 * unterminated. *esc is set when the body holds a backslash escape.
 */
static const u8 *scan_str(const u8 *p, const u8 *end, bool *esc)
{
    for (;;) {
        p = skip_plain(p, end);
        if (p >= end) return NULL;
        u8 c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            *esc = true;
            if (end - p >= 2 && esc2[p[1]]) { /* the common short escapes */
                p += 2;
                continue;
            }
            uint32_t cp;
            p = unescape1(p, end, &cp);
            if (!p) return NULL;
        } else if (c < 0x20) {
            return NULL;
        } else {
            size_t l = utf8_len(p, end);
            if (!l) return NULL;
            p += l;
        }
    }
}

/* ---- other tokens ------------------------------------------------------ */

static inline const u8 *skip_ws(const u8 *p, const u8 *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline bool is_digit(u8 c)
{
    return c >= '0' && c <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? ; NULL when malformed. */
static const u8 *scan_num(const u8 *p, const u8 *end)
{
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    return p;
}

static const u8 *scan_lit(const u8 *p, const u8 *end, const char *lit, size_t n)
{
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

/*
 * Scans one value starting exactly at p (no leading whitespace) that sits
 * inside `depth` already open containers. Returns the pointer just past it,
 * or NULL when it is invalid or nests deeper than KR_JSON_MAX_DEPTH in total.
 */
static const u8 *scan_value(const u8 *p, const u8 *end, unsigned depth)
{
    u8 stk[KR_JSON_MAX_DEPTH]; /* closing bracket of each open container */
    unsigned d = 0;
    bool esc;

value:
    if (p >= end) return NULL;
    switch (*p) {
    case '{':
    case '[':
        if (depth + d >= KR_JSON_MAX_DEPTH) return NULL;
        stk[d++] = (u8)(*p == '{' ? '}' : ']');
        p = skip_ws(p + 1, end);
        if (p < end && *p == stk[d - 1]) {
            p++;
            d--;
            goto after;
        }
        if (stk[d - 1] == '}') goto key;
        goto value;
    case '"':
        p = scan_str(p + 1, end, &esc);
        break;
    case 't':
        p = scan_lit(p, end, "true", 4);
        break;
    case 'f':
        p = scan_lit(p, end, "false", 5);
        break;
    case 'n':
        p = scan_lit(p, end, "null", 4);
        break;
    default:
        p = scan_num(p, end);
        break;
    }
    if (!p) return NULL;

after:
    if (d == 0) return p;
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (stk[d - 1] == ']') goto value;
        goto key;
    }
    if (*p != stk[d - 1]) return NULL;
    p++;
    d--;
    goto after;

key:
    if (p >= end || *p != '"') return NULL;
    p = scan_str(p + 1, end, &esc);
    if (!p) return NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != ':') return NULL;
    p = skip_ws(p + 1, end);
    goto value;
}

static kr_json_type type_of(u8 c)
{
    switch (c) {
    case '"':
        return KR_JSON_STRING;
    case '{':
        return KR_JSON_OBJECT;
    case '[':
        return KR_JSON_ARRAY;
    case 't':
        return KR_JSON_TRUE;
    case 'f':
        return KR_JSON_FALSE;
    case 'n':
        return KR_JSON_NULL;
    default:
        return KR_JSON_NUMBER;
    }
}

/* ---- member names ------------------------------------------------------ */

/*
 * True when the raw string body s[0..n) (between the quotes, already
 * validated) unescapes to exactly name[0..namen).
 */
static bool body_eq(const u8 *s, size_t n, bool esc, const char *name, size_t namen)
{
    if (!esc) return n == namen && memcmp(s, name, n) == 0;
    const u8 *end = s + n;
    const u8 *nm = (const u8 *)name;
    size_t i = 0;
    while (s < end) {
        if (*s != '\\') {
            if (i >= namen || nm[i] != *s) return false;
            i++;
            s++;
            continue;
        }
        uint32_t cp;
        u8 enc[4];
        s = unescape1(s, end, &cp);
        if (!s) return false;
        size_t k = utf8_put(cp, enc);
        if (namen - i < k || memcmp(nm + i, enc, k) != 0) return false;
        i += k;
    }
    return i == namen;
}

/* ---- objects ----------------------------------------------------------- */

typedef struct objit {
    const u8 *p, *end;
    unsigned depth; /* containers open around the members' values */
    bool first;
} objit;

/* p is at '{'. */
static void objit_init(objit *it, const u8 *p, const u8 *end, unsigned depth)
{
    it->p = p + 1;
    it->end = end;
    it->depth = depth + 1;
    it->first = true;
}

/*
 * Next member: 1 with its name body (between the quotes) and value, 0 at the
 * closing brace (it->p is then just past it), -1 when invalid.
 */
static int objit_next(objit *it, const u8 **name, size_t *namen, bool *esc, kr_jval *v)
{
    const u8 *p = skip_ws(it->p, it->end), *end = it->end;
    if (p >= end) return -1;
    if (*p == '}' && it->first) {
        it->p = p + 1;
        return 0;
    }
    if (!it->first) {
        if (*p == '}') {
            it->p = p + 1;
            return 0;
        }
        if (*p != ',') return -1;
        p = skip_ws(p + 1, end);
    }
    it->first = false;
    if (p >= end || *p != '"') return -1;
    *esc = false;
    const u8 *q = scan_str(p + 1, end, esc);
    if (!q) return -1;
    *name = p + 1;
    *namen = (size_t)(q - 1 - (p + 1));
    p = skip_ws(q, end);
    if (p >= end || *p != ':') return -1;
    p = skip_ws(p + 1, end);
    if (p >= end) return -1;
    q = scan_value(p, end, it->depth);
    if (!q) return -1;
    v->type = type_of(*p);
    v->p = (const char *)p;
    v->n = (size_t)(q - p);
    it->p = q;
    return 1;
}

static void set_absent(kr_jval *v)
{
    v->type = KR_JSON_ABSENT;
    v->p = NULL;
    v->n = 0;
}

/*
 * Walks the whole object at p ('{', inside `depth` containers) and finds the
 * member named name[0..namen). Returns 0 (found), KR_ENOTFOUND, or KR_EPARSE
 * (invalid, or the name occurs twice). *after is set past the '}'.
 */
static int find_member(const u8 *p, const u8 *end, unsigned depth, const char *name, size_t namen,
                       kr_jval *out, const u8 **after)
{
    objit it;
    const u8 *nm;
    size_t nn;
    bool esc;
    kr_jval v;
    int r;
    set_absent(out);
    objit_init(&it, p, end, depth);
    while ((r = objit_next(&it, &nm, &nn, &esc, &v)) > 0) {
        if (!body_eq(nm, nn, esc, name, namen)) continue;
        if (out->type != KR_JSON_ABSENT) return KR_EPARSE;
        *out = v;
    }
    if (r < 0) return KR_EPARSE;
    *after = it.p;
    return out->type == KR_JSON_ABSENT ? KR_ENOTFOUND : 0;
}

/* ---- public ------------------------------------------------------------ */

int kr_json_validate(const char *js, size_t n)
{
    if (!js) return KR_EPARSE;
    const u8 *p = (const u8 *)js, *end = p + n;
    p = skip_ws(p, end);
    if (p >= end) return KR_EPARSE;
    p = scan_value(p, end, 0);
    if (!p) return KR_EPARSE;
    return skip_ws(p, end) == end ? 0 : KR_EPARSE;
}

int kr_json_object_get(const char *js, size_t n, const char *const *keys, kr_jval *out,
                       size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++)
        set_absent(&out[i]);
    if (!js) return KR_EPARSE;
    const u8 *p = (const u8 *)js, *end = p + n;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return KR_EPARSE;

    objit it;
    const u8 *nm;
    size_t nn;
    bool esc;
    kr_jval v;
    int r;
    objit_init(&it, p, end, 0);
    while ((r = objit_next(&it, &nm, &nn, &esc, &v)) > 0) {
        for (size_t i = 0; i < nkeys; i++) {
            /* cheap reject before the full compare */
            if (!esc && (nn == 0 ? keys[i][0] != 0 : (u8)keys[i][0] != nm[0])) continue;
            if (!body_eq(nm, nn, esc, keys[i], strlen(keys[i]))) continue;
            if (out[i].type != KR_JSON_ABSENT) goto fail; /* duplicate */
            out[i] = v;
        }
    }
    if (r < 0 || skip_ws(it.p, end) != end) goto fail;
    return 0;
fail:
    for (size_t i = 0; i < nkeys; i++)
        set_absent(&out[i]);
    return KR_EPARSE;
}

int kr_json_get(const char *js, size_t n, const char *path, kr_jval *out)
{
    set_absent(out);
    if (!js || !path) return KR_EPARSE;
    const u8 *p = (const u8 *)js, *end = p + n;
    p = skip_ws(p, end);
    if (p >= end) return KR_EPARSE;
    if (*p != '{' || !*path) {
        /* nothing to walk: the whole document must still be valid */
        const u8 *q = scan_value(p, end, 0);
        if (!q || skip_ws(q, end) != end) return KR_EPARSE;
        if (*path) return KR_ENOTFOUND;
        out->type = type_of(*p);
        out->p = (const char *)p;
        out->n = (size_t)(q - p);
        return 0;
    }

    /* The first level validates the whole document (every member value is
     * scanned); deeper levels re-walk spans that are already known valid, so
     * from there on only KR_ENOTFOUND or a duplicate name can come back. */
    const char *seg = path;
    const u8 *vend = end;
    unsigned depth = 0;
    kr_jval v;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t segn = dot ? (size_t)(dot - seg) : strlen(seg);
        const u8 *after;
        int rc = find_member(p, vend, depth, seg, segn, &v, &after);
        if (rc == KR_EPARSE) return KR_EPARSE;
        if (depth == 0 && skip_ws(after, end) != end) return KR_EPARSE;
        if (rc) return rc;
        if (!dot) break;
        if (v.type != KR_JSON_OBJECT) return KR_ENOTFOUND; /* arrays are not addressed */
        p = (const u8 *)v.p;
        vend = p + v.n;
        depth++;
        seg = dot + 1;
    }
    *out = v;
    return 0;
}

int kr_json_array_next(const kr_jval *arr, const char **pos, kr_jval *out)
{
    set_absent(out);
    if (!arr || !arr->p) return KR_EPARSE;
    const u8 *p, *end = (const u8 *)arr->p + arr->n;
    if (!*pos) {
        p = skip_ws((const u8 *)arr->p, end);
        if (p >= end || *p != '[') return KR_EPARSE;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') return KR_ENOTFOUND;
    } else {
        p = skip_ws((const u8 *)*pos, end);
        if (p >= end) return KR_EPARSE;
        if (*p == ']') return KR_ENOTFOUND;
        if (*p != ',') return KR_EPARSE;
        p = skip_ws(p + 1, end);
    }
    const u8 *q = scan_value(p, end, 1);
    if (!q) return KR_EPARSE;
    out->type = type_of(*p);
    out->p = (const char *)p;
    out->n = (size_t)(q - p);
    *pos = (const char *)q;
    return 0;
}

int kr_json_array_at(const kr_jval *arr, size_t i, kr_jval *out)
{
    const char *pos = NULL;
    int rc;
    size_t k = 0;
    while (!(rc = kr_json_array_next(arr, &pos, out)))
        if (k++ == i) return 0;
    set_absent(out);
    return rc;
}

int kr_jval_u64(const kr_jval *v, uint64_t *out)
{
    if (!v || v->type != KR_JSON_NUMBER || !v->p) return KR_EINVAL;
    const u8 *p = (const u8 *)v->p;
    size_t n = v->n;
    if (n == 0 || (p[0] == '0' && n > 1)) return KR_EPARSE;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i])) return KR_EPARSE;
        unsigned dg = (unsigned)(p[i] - '0');
        if (x > (UINT64_MAX - dg) / 10) return KR_EPARSE;
        x = x * 10 + dg;
    }
    if (out) *out = x;
    return 0;
}

/* The body of a string jval (between the quotes), or false. */
static bool str_body(const kr_jval *v, const u8 **s, const u8 **end)
{
    if (!v || v->type != KR_JSON_STRING || !v->p || v->n < 2) return false;
    const u8 *p = (const u8 *)v->p;
    if (p[0] != '"' || p[v->n - 1] != '"') return false;
    *s = p + 1;
    *end = p + v->n - 1;
    return true;
}

int kr_jval_str(const kr_jval *v, char *out, size_t cap, size_t *len)
{
    const u8 *s, *end;
    size_t o = 0;
    int rc = 0;
    if (len) *len = 0;
    if (!out || cap == 0) return str_body(v, &s, &end) ? KR_ETOOBIG : KR_EINVAL;
    out[0] = 0;
    if (!str_body(v, &s, &end)) return KR_EINVAL;
    while (s < end) {
        /* copy the run up to the next backslash in one go */
        const u8 *bs = memchr(s, '\\', (size_t)(end - s));
        size_t run = (size_t)((bs ? bs : end) - s);
        if (run) {
            if (cap - 1 - o < run) {
                /* keep whole UTF-8 characters only */
                size_t k = cap - 1 - o;
                while (k > 0 && (s[k] & 0xC0) == 0x80)
                    k--;
                memcpy(out + o, s, k);
                o += k;
                rc = KR_ETOOBIG;
                break;
            }
            memcpy(out + o, s, run);
            o += run;
            s += run;
        }
        if (!bs) break;
        uint32_t cp;
        u8 enc[4];
        s = unescape1(s, end, &cp);
        if (!s) {
            o = 0;
            rc = KR_EINVAL;
            break;
        }
        size_t k = utf8_put(cp, enc);
        if (cap - 1 - o < k) {
            rc = KR_ETOOBIG;
            break;
        }
        memcpy(out + o, enc, k);
        o += k;
    }
    out[o] = 0;
    if (len) *len = o;
    return rc;
}

bool kr_jval_str_eq(const kr_jval *v, const char *lit)
{
    const u8 *s, *end;
    if (!lit || !str_body(v, &s, &end)) return false;
    return body_eq(s, (size_t)(end - s), memchr(s, '\\', (size_t)(end - s)) != NULL, lit,
                   strlen(lit));
}
