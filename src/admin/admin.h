/*
 * admin.h -- the admin HTTP API (/admin/v1/…) and the web console
 * (/console), served by `keyrail serve` on its admin listener
 * (server.admin_listen).
 *
 *   admin_http.c  routing from the operations table (src/ops), admin-token
 *                 and session authentication, CSRF, request bodies, the
 *                 JSON responses; operations run on the store workers
 *   openapi.c     the OpenAPI 3.1 document, generated from the same table
 *   console.c     the console assets (src/admin/console, built into the binary)
 *                 with a strict Content-Security-Policy
 *
 * Authentication: `Authorization: Bearer kradm_…` (an admin token), or the
 * console's session cookie (HttpOnly, SameSite=Strict, Secure behind TLS)
 * exchanged for one at POST /admin/v1/session, with an X-CSRF-Token header
 * on every mutation. Workspace tokens never open this API, and admin
 * tokens never open the LLM routes; either way the 401 names the class.
 */
#ifndef KR_ADMIN_H
#define KR_ADMIN_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"
#include "http/http.h"
#include "provision/provision.h"
#include "registry/registry.h"
#include "secrets/secrets.h"

typedef struct kr_workq kr_workq;
struct kr_op;
struct cJSON;

enum { SP_NONE = 0, SP_SESSION_CREATE, SP_SESSION_GET, SP_SESSION_DELETE, SP_OPENAPI };

/* What an admin request asks, read from its method, path, query, headers and
 * body before anything touches the store (pure: the fuzz driver calls it). */
typedef struct kr_admin_call {
    const struct kr_op *op; /* the operation, or NULL for a special route */
    int special;            /* SP_*: the session routes, the OpenAPI document */
    struct cJSON *params;   /* from the path, the query and the body */
    char bearer_hash[65];   /* an admin token's hash, or "" */
    char session_hash[65];  /* the session cookie's hash, or "" */
    char csrf[96];          /* the X-CSRF-Token header */
    char idem[136];         /* Idempotency-Key of a create */
    char cred_class[24];    /* for the log line */
    bool mutation;          /* not GET/HEAD: a session needs the CSRF token */
    bool secure_cookie;
    int status;             /* a refusal already: 400, 401, 404, 405, 415 */
    char code[24];
    char msg[300];
} kr_admin_call;

/* secure_cookie: server.admin_secure_cookie (0 never, 1 always, 2 behind TLS). */
void kr_admin_parse(const kr_http_req *h, int secure_cookie, kr_admin_call *c);
void kr_admin_call_free(kr_admin_call *c);

/* What the admin API reads: loaded by serve, outliving it. Operations run
 * on the store workers. */
typedef struct kr_admin {
    kr_plane p;
    kr_workq *workers;
} kr_admin;

/* Mount entry points (kr_http_start_fn; ctx: the kr_admin): /admin (the
 * API) and /console (the console's pages). */
void kr_admin_start(void *ctx, kr_conn *c, const kr_http_req *h);
void kr_console_start(void *ctx, kr_conn *c, const kr_http_req *h);

/* The OpenAPI 3.1 document of /admin/v1 (openapi.c). */
void kr_admin_openapi(kr_buf *out);

/* A built-in console asset by path ("/console", "/console/app.js", …):
 * NULL when there is none. */
const char *kr_console_asset(const char *path, size_t plen, size_t *len, const char **ctype);

#endif
