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

#include "core/buf.h"

typedef struct kr_req kr_req;
typedef struct kr_http_req kr_http_req;

/* True for a path the admin listener serves (/admin/…, /console…). */
bool kr_admin_path(const kr_http_req *h);
/* Serves r (the connection came in on the admin listener). */
void kr_admin_start(kr_req *r);

/* The OpenAPI 3.1 document of /admin/v1 (openapi.c). */
void kr_admin_openapi(kr_buf *out);

/* A built-in console asset by path ("/console", "/console/app.js", …):
 * NULL when there is none. */
const char *kr_console_asset(const char *path, size_t plen, size_t *len, const char **ctype);

#endif
