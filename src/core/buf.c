#include "core/buf.h"
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *kr_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("keyrail: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *kr_xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) {
        fputs("keyrail: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *kr_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("keyrail: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *kr_strndup(const char *s, size_t n)
{
    if (!s) return NULL;
    char *d = kr_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *kr_strdup(const char *s)
{
    return s ? kr_strndup(s, strlen(s)) : NULL;
}

void kr_buf_init(kr_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void kr_buf_free(kr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void kr_buf_reset(kr_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

int kr_buf_reserve(kr_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) return KR_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1) cap = b->max + 1;
    b->data = kr_xrealloc(b->data, cap);
    b->cap = cap;
    KR_ASSERT(b->len + extra < b->cap); /* room for the bytes and the NUL */
    return 0;
}

int kr_buf_append(kr_buf *b, const void *p, size_t n)
{
    int rc = kr_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    KR_ASSERT(b->len < b->cap && b->len <= b->max);
    b->data[b->len] = 0;
    return 0;
}

int kr_buf_puts(kr_buf *b, const char *s)
{
    return kr_buf_append(b, s, strlen(s));
}

int kr_buf_putc(kr_buf *b, char c)
{
    return kr_buf_append(b, &c, 1);
}

int kr_buf_put_u64(kr_buf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do
        tmp[--i] = (char)('0' + v % 10);
    while ((v /= 10) && i);
    return kr_buf_append(b, tmp + i, sizeof tmp - i);
}

int kr_buf_put_i64(kr_buf *b, int64_t v)
{
    if (v >= 0) return kr_buf_put_u64(b, (uint64_t)v);
    int rc = kr_buf_putc(b, '-');
    return rc ? rc : kr_buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
}

int kr_buf_put_ms3(kr_buf *b, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    char frac[4] = {'.', (char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
                    (char)('0' + us % 10)};
    int rc = kr_buf_put_u64(b, us / 1000);
    return rc ? rc : kr_buf_append(b, frac, sizeof frac);
}

int kr_buf_printf(kr_buf *b, const char *fmt, ...)
{
    /* one formatting pass in the common case: into the space already there */
    if (b->cap < b->len + 256) (void)kr_buf_reserve(b, 256); /* may fail near the cap: fine */
    va_list ap;
    if (b->data && b->cap > b->len + 1) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->data[b->len] = 0;
            return KR_EINVAL;
        }
        if ((size_t)n < room) {
            if ((size_t)n > b->max - b->len) {
                b->data[b->len] = 0;
                return KR_ETOOBIG;
            }
            b->len += (size_t)n;
            return 0;
        }
        b->data[b->len] = 0;
    }
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return KR_EINVAL;
    int rc = kr_buf_reserve(b, (size_t)n);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of a valid UTF-8 sequence starting at s (max n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len) return 0;
    unsigned cp = c & (0xff >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* The code point of a valid sequence of utf8_len l. */
static unsigned utf8_cp(const unsigned char *s, size_t l)
{
    unsigned cp = s[0] & (0xff >> (l + 1));
    for (size_t i = 1; i < l; i++) cp = (cp << 6) | (s[i] & 0x3f);
    return l == 1 ? s[0] : cp;
}

/* Code points that steer a terminal or reorder text: C1 controls, the
 * bidirectional embeddings, overrides and isolates, line/paragraph
 * separators. */
static bool steers(unsigned cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e || cp == 0x200f || cp == 0x061c ||
           cp == 0x2028 || cp == 0x2029;
}

int kr_buf_put_escaped(kr_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '\\')
            run++;
        int rc;
        if (run > i) {
            if ((rc = kr_buf_append(b, s + i, run - i))) return rc;
            i = run;
            continue;
        }
        unsigned char c = u[i];
        size_t l = 1;
        if (c == '\\') rc = kr_buf_append(b, "\\\\", 2);
        else if (c == '\n') rc = kr_buf_append(b, "\\n", 2);
        else if (c == '\r') rc = kr_buf_append(b, "\\r", 2);
        else if (c == '\t') rc = kr_buf_append(b, "\\t", 2);
        else if (c < 0x80) rc = kr_buf_printf(b, "\\x%02x", c); /* C0 controls, DEL */
        else if ((l = utf8_len(u + i, n - i)) == 0) {
            l = 1;
            rc = kr_buf_printf(b, "\\x%02x", c); /* not UTF-8 */
        } else if (steers(utf8_cp(u + i, l))) {
            rc = kr_buf_printf(b, "\\u{%04x}", utf8_cp(u + i, l));
        } else {
            rc = kr_buf_append(b, s + i, l);
        }
        if (rc) return rc;
        i += l;
    }
    return 0;
}

const char *kr_esc(const char *s, char *out, size_t cap)
{
    if (!cap) return "";
    /* each input byte gives at least one output byte: more than cap + 4
     * input bytes (a last UTF-8 sequence) cannot fit anyway */
    size_t n = s ? strlen(s) : 0, take = n > cap + 4 ? cap + 4 : n;
    kr_buf b = KR_BUF_INIT(8 * cap + 64);
    int rc = kr_buf_put_escaped(&b, s ? s : "", take);
    if (!rc && take == n && b.len < cap) {
        memcpy(out, b.data ? b.data : "", b.len + 1);
    } else {
        /* cut at a character boundary (the escaped text is ASCII or valid UTF-8) */
        size_t room = cap - 1, dots = room < 3 ? room : 3, keep = room - dots;
        if (keep > b.len) keep = b.len;
        while (keep && ((unsigned char)b.data[keep] & 0xc0) == 0x80) keep--;
        if (keep) memcpy(out, b.data, keep);
        memcpy(out + keep, "...", dots);
        out[keep + dots] = 0;
    }
    kr_buf_free(&b);
    return out;
}

int kr_buf_json_str(kr_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            int rc = kr_buf_append(b, s + i, run - i);
            if (rc) return rc;
            i = run;
            continue;
        }
        unsigned char c = u[i];
        int rc;
        if (c == '"')
            rc = kr_buf_append(b, "\\\"", 2);
        else if (c == '\\')
            rc = kr_buf_append(b, "\\\\", 2);
        else if (c == '\n')
            rc = kr_buf_append(b, "\\n", 2);
        else if (c == '\r')
            rc = kr_buf_append(b, "\\r", 2);
        else if (c == '\t')
            rc = kr_buf_append(b, "\\t", 2);
        else if (c < 0x20)
            rc = kr_buf_printf(b, "\\u%04x", c);
        else {
            size_t l = utf8_len(u + i, n - i);
            if (l == 0) {
                rc = kr_buf_append(b, "\\ufffd", 6);
                l = 1;
            } else {
                rc = kr_buf_append(b, s + i, l);
            }
            if (rc) return rc;
            i += l;
            continue;
        }
        if (rc) return rc;
        i++;
    }
    return 0;
}

void kr_buf_consume(kr_buf *b, size_t n)
{
    if (n >= b->len) {
        kr_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

char *kr_buf_steal(kr_buf *b)
{
    char *p = b->data ? b->data : kr_strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

bool kr_slice_eq(kr_slice a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && memcmp(a.p, lit, n) == 0;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

bool kr_slice_eq_ci(kr_slice a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)lit[i])) return false;
    return true;
}

bool kr_slice_starts(kr_slice a, const char *prefix)
{
    size_t n = strlen(prefix);
    return a.n >= n && memcmp(a.p, prefix, n) == 0;
}

int kr_memlcpy(char *dst, size_t cap, const char *src, size_t n)
{
    if (cap == 0) return KR_ETOOBIG;
    int rc = 0;
    if (n >= cap) {
        n = cap - 1;
        rc = KR_ETOOBIG;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
    return rc;
}

int kr_strlcpy(char *dst, const char *src, size_t cap)
{
    return kr_memlcpy(dst, cap, src, strlen(src));
}

int kr_snprintf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    if (n < 0) return KR_EINVAL;
    return (size_t)n >= cap ? KR_ETOOBIG : 0;
}

int kr_parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20) return KR_EPARSE;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return KR_EPARSE;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return KR_EPARSE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int kr_parse_i64(const char *s, size_t n, int64_t *out)
{
    bool neg = n > 0 && s[0] == '-';
    uint64_t u;
    int rc = kr_parse_u64(s + neg, n - neg, &u);
    if (rc) return rc;
    if (u > (uint64_t)INT64_MAX + (neg ? 1 : 0)) return KR_EPARSE;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 0;
}

int kr_parse_micros(const char *s, size_t n, int64_t *out)
{
    size_t dot = n;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.') {
            dot = i;
            break;
        }
    uint64_t whole = 0, frac = 0;
    if (dot == 0) return KR_EPARSE;
    if (kr_parse_u64(s, dot, &whole)) return KR_EPARSE;
    if (dot < n) {
        size_t fl = n - dot - 1;
        if (fl == 0 || fl > 6) return KR_EPARSE;
        if (kr_parse_u64(s + dot + 1, fl, &frac)) return KR_EPARSE;
        for (size_t i = fl; i < 6; i++)
            frac *= 10;
    }
    if (whole > (uint64_t)INT64_MAX / 1000000 - 1) return KR_EPARSE;
    *out = (int64_t)(whole * 1000000 + frac);
    return 0;
}

void kr_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int kr_unhex(const char *s, size_t slen, uint8_t *out, size_t outlen)
{
    if (slen != 2 * outlen) return KR_EPARSE;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) return KR_EPARSE;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int64_t kr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t kr_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t kr_fnv64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
