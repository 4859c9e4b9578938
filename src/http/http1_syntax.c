/*
 * http1_syntax.c -- the HTTP/1.1 grammar shared by the request and the
 * upstream response parsers (see http1_syntax.h).
 */
#include "http/http1_syntax.h"

kr_h1_err kr_h1_line(const char *s, size_t n, size_t *out)
{
    if (n < 2 || s[n - 2] != '\r') return KR_H1_BARE_LF;
    n -= 2;
    if (memchr(s, '\r', n)) return KR_H1_BARE_CR;
    *out = n;
    return KR_H1_OK;
}

kr_h1_err kr_h1_field(const char *s, size_t n, size_t *name_n, size_t *val_off, size_t *val_n)
{
    if (n > 0 && kr_h1_ows(s[0])) return KR_H1_OBS_FOLD;
    if (!memchr(s, ':', n)) return KR_H1_NO_COLON;
    size_t i = 0;
    while (kr_h1_tchar((unsigned char)s[i]))
        i++; /* stops at the colon at the latest */
    if (s[i] != ':') return kr_h1_ows(s[i]) ? KR_H1_SPACE_IN_NAME : KR_H1_BAD_NAME;
    if (i == 0) return KR_H1_EMPTY_NAME;
    for (size_t j = i + 1; j < n; j++) {
        unsigned char c = (unsigned char)s[j];
        if (c == 0) return KR_H1_NUL_IN_VALUE;
        if (!kr_h1_value_byte(c)) return KR_H1_CTL_IN_VALUE;
    }
    size_t v = i + 1, e = n;
    while (v < e && kr_h1_ows(s[v]))
        v++;
    while (e > v && kr_h1_ows(s[e - 1]))
        e--;
    *name_n = i;
    *val_off = v;
    *val_n = e - v;
    return KR_H1_OK;
}

bool kr_h1_has_token(kr_slice v, const char *token)
{
    size_t i = 0;
    while (i < v.n) {
        size_t s = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t e = i;
        while (s < e && kr_h1_ows(v.p[s]))
            s++;
        while (e > s && kr_h1_ows(v.p[e - 1]))
            e--;
        if (kr_slice_eq_ci((kr_slice){v.p + s, e - s}, token)) return true;
        i++; /* past the comma */
    }
    return false;
}
