/*
 * http1.h -- the proxy's incremental, strict HTTP/1.1 request parser.
 *
 * Owns: turning bytes from a client connection into one request at a time,
 * with hard caps on head size, header count and body size, and refusing
 * every ambiguity a request-smuggling attack relies on (CL+TE, duplicate
 * Content-Length, obs-fold, bad chunk sizes, NUL/CR/LF in values,
 * absolute-form targets, HTTP/1.0 bodies without a length, bare LF).
 *
 * The parser copies what it keeps (head, decoded body) into its own capped
 * buffers, so the caller can reuse its read buffer at once. Bytes after a
 * complete request are not consumed: they belong to the next (pipelined)
 * request and are fed again after kr_http_parser_reset().
 */
#ifndef KR_HTTP1_H
#define KR_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct kr_http_limits {
    size_t max_head;      /* request line + headers (+ chunked trailers), bytes; 431 past it */
    unsigned max_headers; /* header fields; 431 past it (at most KR_HTTP_MAX_HEADERS) */
    uint64_t max_body;    /* decoded body bytes; 413 past it */
} kr_http_limits;

#define KR_HTTP_MAX_HEADERS 64 /* every client seen sends fewer than 30 */

typedef struct kr_http_header {
    kr_slice name;  /* as sent (case preserved); compare with kr_slice_eq_ci */
    kr_slice value; /* leading/trailing OWS removed */
} kr_http_header;

typedef struct kr_http_req {
    kr_slice method;
    kr_slice target; /* origin-form "/path?query" (or "*" for OPTIONS) */
    kr_slice path;   /* target before '?' */
    kr_slice query;  /* after '?', without it; n == 0 when absent */
    int minor;       /* HTTP/1.<minor>, 0 or 1 */
    kr_http_header headers[KR_HTTP_MAX_HEADERS];
    unsigned nheaders;
    bool keep_alive;      /* version default adjusted by Connection */
    bool expect_continue; /* "Expect: 100-continue" */
    bool chunked;         /* Transfer-Encoding: chunked */
    bool has_length;      /* Content-Length present */
    uint64_t content_length;
    const char *body; /* complete body, valid after KR_HTTP_DONE (NUL-terminated) */
    size_t body_len;
} kr_http_req;

enum {
    KR_HTTP_AGAIN = 0, /* every byte consumed; the request is not complete yet */
    KR_HTTP_HEAD = 1,  /* head complete (req fields valid except body); feed the rest */
    KR_HTTP_DONE = 2,  /* request complete; bytes after *consumed are the next request's */
    KR_HTTP_ERROR = -1 /* p->status and p->error say why; close the connection after replying */
};

typedef struct kr_http_parser {
    kr_http_limits lim;
    kr_http_req req;
    int status;        /* on error: 400, 413, 431, 501 or 505 */
    const char *error; /* on error: a short static reason, safe to show a client */
    /* private */
    int state;
    kr_buf head;       /* raw head bytes (capped by lim.max_head) */
    size_t scan;       /* resume offset when looking for the end of the head */
    kr_buf body;       /* decoded body (capped by lim.max_body) */
    uint64_t remaining; /* bytes left in a Content-Length body or the current chunk */
    kr_buf line;       /* chunk-size / trailer line being collected */
    size_t trailer_bytes;
    bool head_reported;

    size_t skipped;     /* empty lines skipped before the request line (count against max_head) */
    unsigned ntrailers; /* trailer fields seen (capped like header fields) */
    /* name/value offsets into head while it may still move; slices are set at the end */
    uint32_t hoff[KR_HTTP_MAX_HEADERS][2]; /* head offsets: the head is capped far below 4 GiB */
} kr_http_parser;

void kr_http_parser_init(kr_http_parser *p, const kr_http_limits *lim);
/* Ready for the next request on the same connection; keeps allocations. */
void kr_http_parser_reset(kr_http_parser *p);
void kr_http_parser_free(kr_http_parser *p);

/*
 * Feeds data[0..len). *consumed is set to the bytes used. Returns
 * KR_HTTP_AGAIN, KR_HTTP_HEAD (once per request, then call again with
 * data + *consumed), KR_HTTP_DONE or KR_HTTP_ERROR. After an error every
 * further call returns KR_HTTP_ERROR.
 */
int kr_http_feed(kr_http_parser *p, const char *data, size_t len, size_t *consumed);

/* First header with this (case-insensitive) name, or NULL. */
const kr_http_header *kr_http_find(const kr_http_req *r, const char *name);

#endif
