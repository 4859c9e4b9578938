/*
 * http1_resp.h -- the strict, bounded, incremental HTTP/1.1 *response*
 * parser of keyrail's own upstream client (upclient.c).
 *
 * Owns: turning the bytes an upstream vendor sends on one connection into
 * one response head and its body, with hard caps (head size, header count,
 * interim responses, trailer size) and refusing every ambiguity a
 * response-splitting or desync attack relies on:
 *
 *   - the status line must be "HTTP/1.0" or "HTTP/1.1", a 3-digit status
 *     100..599 and an optional reason of visible characters;
 *   - every line ends in CRLF (bare LF, bare CR refused); obs-fold (a line
 *     starting with SP/HTAB) refused; header names are tokens directly
 *     followed by ':'; values hold no NUL or control character;
 *   - Content-Length: digits only, one header only (two, even equal, are
 *     refused), no overflow; Transfer-Encoding: exactly "chunked", one
 *     header, never with Content-Length, never in HTTP/1.0;
 *   - chunk sizes: 1..16 hex digits, extensions bounded and checked, CRLF
 *     after every chunk's data; trailers are bounded in count and bytes,
 *     checked like header fields and then dropped (never relayed);
 *   - 1xx interim responses (100, 103, ...) are checked and skipped, at most
 *     lim.max_interim of them; 101 (an upgrade nobody asked for) is refused;
 *   - 204 and 304 have no body whatever their headers say; a final response
 *     with neither length nor chunking runs until the connection closes
 *     (and the connection is not reused).
 *
 * Body bytes are not copied: each KR_RESP_BODY event hands back a slice of
 * the caller's input. The head is copied into a capped buffer (it may
 * arrive in pieces). Every decision is taken at a fixed byte position, so
 * the outcome does not depend on how the input was split (fuzz_http1_resp
 * checks exactly that).
 */
#ifndef KR_HTTP1_RESP_H
#define KR_HTTP1_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define KR_RESP_MAX_HEADERS 100 /* vendors send 20-40 */
#define KR_RESP_MAX_HEAD    65535

typedef struct kr_resp_limits {
    size_t max_head;      /* status line + fields of one head, bytes (<= KR_RESP_MAX_HEAD) */
    unsigned max_headers; /* fields of one head (<= KR_RESP_MAX_HEADERS) */
    size_t max_trailer;   /* trailer section, bytes (fields counted against max_headers) */
    unsigned max_interim; /* 1xx heads before the final one */
} kr_resp_limits;

enum {
    KR_RESP_AGAIN = 0, /* every byte consumed; feed more */
    KR_RESP_HEAD = 1,  /* the final head is complete (fields below valid); feed the rest */
    KR_RESP_BODY = 2,  /* *body holds body bytes (a slice of the input); feed the rest */
    KR_RESP_DONE = 3,  /* the response is complete; bytes after *used are not part of it */
    KR_RESP_ERROR = -1 /* p->error says why; the connection must be closed */
};

typedef struct kr_resp_field {
    kr_slice name;  /* as sent */
    kr_slice value; /* OWS trimmed */
    kr_slice line;  /* the whole raw line, CRLF included */
} kr_resp_field;

typedef struct kr_resp_parser {
    kr_resp_limits lim;
    /* the final head: valid from KR_RESP_HEAD until reset */
    int status;
    int minor;               /* HTTP/1.<minor> */
    bool keep_alive;         /* the connection may carry another request afterwards */
    bool chunked;            /* Transfer-Encoding: chunked */
    bool has_length;         /* Content-Length */
    bool until_eof;          /* the body ends when the connection closes */
    bool no_body;            /* 204 / 304 */
    uint64_t content_length; /* when has_length */
    int64_t ka_timeout_s;    /* Keep-Alive: timeout=N, -1 when absent */
    unsigned nheaders;
    const char *error; /* on KR_RESP_ERROR: a short static reason */
    bool any;          /* some byte of this response arrived */
    /* private */
    int state;
    kr_buf head;
    size_t scan;
    uint16_t status_len; /* status line, CRLF included */
    uint16_t f[KR_RESP_MAX_HEADERS][5]; /* line off, line len, name len, value off (in line), value len */
    uint64_t remaining;
    kr_buf line; /* chunk-size line or trailer line being collected */
    size_t trailer_bytes;
    unsigned ntrailers;
    unsigned interim;
    bool done_told; /* KR_RESP_DONE was returned */
} kr_resp_parser;

void kr_resp_parser_init(kr_resp_parser *p, const kr_resp_limits *lim);
/* Ready for the next response on the same connection; keeps allocations. */
void kr_resp_parser_reset(kr_resp_parser *p);
void kr_resp_parser_free(kr_resp_parser *p);

/* Feeds data[0..len); *used is set to the bytes consumed (see the enum).
 * After KR_RESP_DONE or KR_RESP_ERROR, every further call returns
 * KR_RESP_ERROR (a byte after the response is a protocol error on a
 * connection that pipelines nothing). */
int kr_resp_feed(kr_resp_parser *p, const char *data, size_t len, size_t *used, kr_slice *body);
/* The connection ended: KR_RESP_DONE when that ends a body that runs until
 * the connection closes, else KR_RESP_ERROR (a truncated response). */
int kr_resp_eof(kr_resp_parser *p);
/* The final head's status line (CRLF included) and fields, after KR_RESP_HEAD. */
kr_slice kr_resp_status_line(const kr_resp_parser *p);
void kr_resp_field_at(const kr_resp_parser *p, unsigned i, kr_resp_field *f);
/* True between KR_RESP_HEAD and the end: body bytes may still come. */
bool kr_resp_in_body(const kr_resp_parser *p);

#endif
