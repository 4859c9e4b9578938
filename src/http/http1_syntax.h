/*
 * http1_syntax.h -- the HTTP/1.1 grammar (RFC 9110 / RFC 9112) that
 * keyrail's two parsers share: the request parser (http1.c, what clients
 * send) and the upstream response parser (http1_resp.c, what vendors send).
 *
 * Owns: the byte classes (token characters, field-value bytes, optional
 * whitespace, hex digits), the CRLF rule for a completed line, the shape of
 * one "name: value" field line, and comma-separated token lists. Each
 * parser keeps its own states, caps and wording: a syntax error comes back
 * as a kr_h1_err and the parser turns it into its own message (a request
 * parser says "in request", the response parser "in the upstream
 * response"). Stateless and allocation-free; every function reads only
 * s[0..n).
 */
#ifndef KR_HTTP1_SYNTAX_H
#define KR_HTTP1_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "core/buf.h"

typedef enum {
    KR_H1_OK = 0,
    KR_H1_BARE_LF,       /* a line ends in LF without CR */
    KR_H1_BARE_CR,       /* a CR inside a line */
    KR_H1_OBS_FOLD,      /* a field line starts with SP/HTAB */
    KR_H1_NO_COLON,      /* a field line without ':' */
    KR_H1_SPACE_IN_NAME, /* whitespace between the name and ':' */
    KR_H1_BAD_NAME,      /* a byte in the name that is not a token character */
    KR_H1_EMPTY_NAME,    /* ":" first */
    KR_H1_NUL_IN_VALUE,  /* a NUL byte in the value */
    KR_H1_CTL_IN_VALUE,  /* another control character in the value */
} kr_h1_err;

/* tchar: "!#$%&'*+-.^_`|~", digits and letters (RFC 9110 5.6.2). */
static inline bool kr_h1_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar / obs-text / SP / HTAB: what a field value or chunk-ext may hold. */
static inline bool kr_h1_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* OWS: SP / HTAB. */
static inline bool kr_h1_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A hex digit's value, or -1. */
static inline int kr_h1_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A completed line s[0..n) ending in LF: its length without CRLF in *out. */
kr_h1_err kr_h1_line(const char *s, size_t n, size_t *out);

/*
 * A field line s[0..n) (CRLF removed): "name ':' OWS value OWS". Sets the
 * name's length and the value's offset and length, OWS trimmed.
 */
kr_h1_err kr_h1_field(const char *s, size_t n, size_t *name_n, size_t *val_off, size_t *val_n);

/* Whether the comma-separated list v holds token (case-insensitive, OWS around elements ignored).
 */
bool kr_h1_has_token(kr_slice v, const char *token);

#endif
