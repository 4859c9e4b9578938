/*
 * admin_http.c -- the admin HTTP API: routing from the operations table,
 * authentication (admin tokens, console sessions with CSRF), bodies and
 * responses. The operation itself runs on a store worker (kr_ops_run with
 * that thread's store). See admin.h.
 */
#include "admin/admin.h"
#include "core/cred.h"
#include "core/log.h"
#include "ops/ops.h"
#include "store/workq.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define API "/admin/v1"
#define MAX_PARAMS 16
#define SESSION_COOKIE "kr_session"


/* An admin API request (the exchange) and its operation (the job). */
typedef struct {
    kr_exchange x; /* first */
    kr_admin *a;
    kr_job *job;
} admin_req;

typedef struct {
    kr_job job;
    admin_req *req;
    kr_admin *srv;
    kr_admin_call c; /* what the request asks, parsed on the loop thread */
    char request_id[48];
    /* result */
    int status;
    kr_buf body;
    char set_cookie[300];
    bool replayed; /* an idempotent replay: says so in a header */
} admin_job;

/* ---- requests ---- */

static void req_abort(kr_exchange *x)
{
    admin_req *r = (admin_req *)x;
    if (r->job) {
        kr_job_cancel(r->job);
        r->job = NULL;
    }
    kr_x_abandon(x);
}

static void req_release(kr_exchange *x)
{
    free(x);
}

static const kr_exchange_ops req_ops = {req_abort, req_release, NULL, NULL};

static admin_req *req_new(kr_admin *a, kr_conn *c, const kr_http_req *h)
{
    admin_req *r = kr_xcalloc(1, sizeof *r);
    r->a = a;
    kr_x_init(&r->x, &req_ops, c, h, KR_ROUTE_ADMIN);
    return r;
}

static const char sec_headers[] =
    "cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
    "referrer-policy: no-referrer\r\nx-frame-options: DENY\r\n"
    "content-security-policy: default-src 'none'; frame-ancestors 'none'\r\n";

/* more: further header lines of the answer's own ("name: value\r\n"). */
static void respond_body_more(kr_exchange *x, int status, const char *body, size_t n,
                              const char *cookie, const char *more)
{
    char extra[1024];
    kr_snprintf(extra, sizeof extra, "%s%s%s%s%s", sec_headers, cookie && *cookie ? "set-cookie: " : "",
                cookie && *cookie ? cookie : "", cookie && *cookie ? "\r\n" : "", more ? more : "");
    kr_x_respond(x, status, "application/json", body, n, extra, "request-id");
}

static void respond_body(kr_exchange *x, int status, const char *body, size_t n, const char *cookie)
{
    respond_body_more(x, status, body, n, cookie, NULL);
}


/* {"error":{"code","message"},"request_id"}: the admin API's error shape. */
static void respond_err(kr_exchange *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void respond_err(kr_exchange *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kr_strlcpy(r->error_type, code, sizeof r->error_type);
    kr_buf b = KR_BUF_INIT(4096);
    kr_buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    kr_buf_json_str(&b, msg, strlen(msg));
    kr_buf_printf(&b, "\"},\"request_id\":\"%s\"}", r->id);
    respond_body(r, status, b.data, b.len, NULL);
    kr_buf_free(&b);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                        : c >= 'A' && c <= 'F'   ? c - 'A' + 10
                                                                 : -1;
}

/* Percent-decodes [p, p+n) ('+' is a space in a query); refuses NUL and bad
 * escapes. out holds at least n+1. */
static int pct_decode(const char *p, size_t n, bool query, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 1 >= cap) return -1;
        char ch = p[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int h = hexval((unsigned char)p[i + 1]), l = hexval((unsigned char)p[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) return -1;
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else if (ch == '+' && query) {
            out[o++] = ' ';
        } else {
            out[o++] = ch;
        }
    }
    out[o] = 0;
    return 0;
}

static const kr_op_param *param_of(const kr_op *op, const char *name)
{
    for (size_t i = 0; i < op->nparams; i++)
        if (!strcmp(op->params[i].name, name)) return &op->params[i];
    return NULL;
}

/* A query or path value typed by the operation's parameter spec. */
static cJSON *typed(const kr_op_param *p, const char *v)
{
    if (p && p->type == KR_P_INT) {
        int64_t x;
        if (!kr_parse_i64(v, strlen(v), &x)) return cJSON_CreateNumber((double)x);
    } else if (p && p->type == KR_P_BOOL) {
        if (!strcmp(v, "true")) return cJSON_CreateTrue();
        if (!strcmp(v, "false")) return cJSON_CreateFalse();
    }
    return cJSON_CreateString(v); /* a wrong type is refused by kr_ops_run with its message */
}

/* Matches "/orgs/acme/workspaces/dev" against "/orgs/{org}/workspaces/{ws}";
 * captured values go into params (when not NULL). */
static bool match(const char *tmpl, const char *path, size_t plen, const kr_op *op, cJSON *params)
{
    const char *t = tmpl, *p = path, *pe = path + plen;
    while (*t && p < pe) {
        if (*t != '/' || *p != '/') return false;
        t++, p++;
        const char *te = strchr(t, '/');
        if (!te) te = t + strlen(t);
        const char *se = memchr(p, '/', (size_t)(pe - p));
        if (!se) se = pe;
        if (*t == '{') {
            if (se == p || se - p > 1024) return false;
            if (params) {
                char name[32], val[1100];
                kr_memlcpy(name, sizeof name, t + 1, (size_t)(te - t - 2));
                if (pct_decode(p, (size_t)(se - p), false, val, sizeof val)) return false;
                cJSON_AddItemToObject(params, name, typed(param_of(op, name), val));
            }
        } else if ((size_t)(te - t) != (size_t)(se - p) || memcmp(t, p, (size_t)(te - t))) {
            return false;
        }
        t = te, p = se;
    }
    return !*t && p == pe;
}

/* ---- the worker: authenticate, run ---- */

static void set_result(admin_job *j, int status, cJSON *body)
{
    j->status = status;
    char *s = cJSON_PrintUnformatted(body);
    kr_buf_init(&j->body, 64u << 20);
    kr_buf_puts(&j->body, s ? s : "{}");
    if (s) {
        sodium_memzero(s, strlen(s)); /* a minted token is shown once, then wiped */
        free(s);
    }
}

static void set_error(admin_job *j, int status, const char *code, const char *msg)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *in = cJSON_AddObjectToObject(e, "error");
    cJSON_AddStringToObject(in, "code", code);
    cJSON_AddStringToObject(in, "message", msg);
    cJSON_AddStringToObject(e, "request_id", j->request_id);
    set_result(j, status, e);
    cJSON_Delete(e);
}

/* The admin token behind a hash: 0 and *t, or an error (401 semantics). */
static int token_ok(kr_store *st, const char *hash, kr_admin_token *t, const char **why)
{
    kr_diag d = {{0}};
    int rc = kr_admin_token_by_hash(st, hash, t, &d);
    if (rc == KR_ENOTFOUND) *why = "unknown admin token";
    else if (rc) *why = "the store is unavailable";
    else if (t->revoked_at) *why = "this admin token has been revoked", rc = KR_EDENIED;
    else if (t->expires_at && t->expires_at <= kr_now_ms())
        *why = "this admin token has expired", rc = KR_EDENIED;
    return rc;
}

static void actor_of(const kr_admin_token *t, kr_actor *a)
{
    memset(a, 0, sizeof *a);
    kr_snprintf(a->name, sizeof a->name, "admin:%s", t->prefix);
    a->scope = t->scope;
    a->org_id = t->org_id;
    a->token_id = t->id;
}

static void whoami(cJSON *o, const kr_admin_token *t)
{
    cJSON_AddStringToObject(o, "actor", t->prefix);
    cJSON_AddStringToObject(o, "scope", kr_admin_scope_name(t->scope));
    if (t->scope == KR_ADMIN_ORG) cJSON_AddStringToObject(o, "org", t->org_slug);
    else cJSON_AddNullToObject(o, "org");
    cJSON_AddStringToObject(o, "name", t->name);
}

static void session_create(admin_job *j, kr_store *st)
{
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(j->c.params, "token");
    if (!cJSON_IsString(tk) || kr_cred_classify(tk->valuestring, strlen(tk->valuestring)) != KR_CRED_ADMIN_TOKEN) {
        set_error(j, 401, "UNAUTHENTICATED", "sign in with an admin token (kradm_…)");
        return;
    }
    char hash[65];
    kr_token_hash(tk->valuestring, strlen(tk->valuestring), hash);
    kr_admin_token t;
    const char *why = "";
    int rc = token_ok(st, hash, &t, &why);
    if (rc) {
        set_error(j, rc == KR_ESTORE ? 503 : 401, rc == KR_ESTORE ? "STORE" : "UNAUTHENTICATED", why);
        return;
    }
    uint8_t raw[32];
    char sid[64], sid_hash[65], csrf[65];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(sid, sizeof sid, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    randombytes_buf(raw, sizeof raw);
    kr_hex(raw, sizeof raw, csrf);
    sodium_memzero(raw, sizeof raw);
    kr_token_hash(sid, strlen(sid), sid_hash);
    int64_t ttl = j->srv->p.cfg->admin_session_ms;
    int64_t until = kr_now_ms() + ttl;
    if (t.expires_at && t.expires_at < until) until = t.expires_at; /* never outlive the token */
    kr_diag d = {{0}};
    rc = kr_session_insert(st, sid_hash, t.id, csrf, until, &d);
    if (rc) {
        sodium_memzero(sid, sizeof sid);
        set_error(j, 503, "STORE", "the session could not be stored");
        return;
    }
    kr_audit_row a;
    memset(&a, 0, sizeof a);
    kr_snprintf(a.actor, sizeof a.actor, "admin:%s", t.prefix);
    kr_strlcpy(a.actor_scope, kr_admin_scope_name(t.scope), sizeof a.actor_scope);
    kr_org own;
    if (t.scope == KR_ADMIN_ORG && !kr_org_get(st, t.org_id, &own, &d)) /* "org:acme", as ops.c */
        kr_snprintf(a.actor_scope, sizeof a.actor_scope, "org:%s", own.slug);
    kr_strlcpy(a.action, "session.create", sizeof a.action);
    kr_strlcpy(a.target, "console", sizeof a.target);
    a.org_id = t.org_id;
    kr_strlcpy(a.request_id, j->request_id, sizeof a.request_id);
    kr_strlcpy(a.outcome, "ok", sizeof a.outcome);
    kr_audit_append(st, &a, &d);
    kr_snprintf(j->set_cookie, sizeof j->set_cookie,
                SESSION_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld%s", sid,
                (long long)((until - kr_now_ms()) / 1000), j->c.secure_cookie ? "; Secure" : "");
    sodium_memzero(sid, sizeof sid);
    cJSON *o = cJSON_CreateObject();
    whoami(o, &t);
    cJSON_AddStringToObject(o, "csrf", csrf);
    kr_ops_add_time(o, "expires_at", until);
    set_result(j, 200, o);
    cJSON_Delete(o);
}

static void admin_work(kr_store *st, kr_job *job)
{
    admin_job *j = (admin_job *)job;
    if (j->c.special == SP_SESSION_CREATE) {
        session_create(j, st);
        return;
    }
    /* who is asking */
    kr_admin_token t;
    const char *why = "";
    int rc;
    char csrf[65] = "";
    if (j->c.bearer_hash[0]) {
        rc = token_ok(st, j->c.bearer_hash, &t, &why);
    } else {
        int64_t tid = 0, until = 0;
        kr_diag d = {{0}};
        rc = kr_session_get(st, j->c.session_hash, &tid, csrf, &until, &d);
        if (rc == KR_ENOTFOUND || (!rc && until <= kr_now_ms()))
            why = "the console session has expired or was ended: sign in again", rc = KR_EDENIED;
        else if (rc) why = "the store is unavailable";
        if (!rc && (rc = kr_admin_token_get(st, tid, &t, &d))) why = "the store is unavailable";
        if (!rc && (t.revoked_at || (t.expires_at && t.expires_at <= kr_now_ms())))
            why = "the session's admin token has been revoked or has expired", rc = KR_EDENIED;
    }
    if (rc) {
        set_error(j, rc == KR_ESTORE ? 503 : 401, rc == KR_ESTORE ? "STORE" : "UNAUTHENTICATED", why);
        return;
    }
    /* a console mutation carries the session's CSRF token */
    if (!j->c.bearer_hash[0] && j->c.mutation &&
        (strlen(j->c.csrf) != strlen(csrf) || sodium_memcmp(j->c.csrf, csrf, strlen(csrf)) != 0)) {
        set_error(j, 403, "CSRF", "this change needs the session's X-CSRF-Token header");
        return;
    }
    if (j->c.special == SP_SESSION_GET) {
        cJSON *o = cJSON_CreateObject();
        whoami(o, &t);
        if (!j->c.bearer_hash[0]) cJSON_AddStringToObject(o, "csrf", csrf);
        set_result(j, 200, o);
        cJSON_Delete(o);
        return;
    }
    if (j->c.special == SP_SESSION_DELETE) {
        kr_diag d = {{0}};
        if (j->c.session_hash[0]) kr_session_delete(st, j->c.session_hash, &d);
        kr_snprintf(j->set_cookie, sizeof j->set_cookie,
                    SESSION_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s",
                    j->c.secure_cookie ? "; Secure" : "");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "signed_out", true);
        set_result(j, 200, o);
        cJSON_Delete(o);
        return;
    }
    kr_actor actor;
    actor_of(&t, &actor);
    kr_admin *s = j->srv;
    kr_ops_env env = s->p;
    kr_op_call call;
    memset(&call, 0, sizeof call);
    call.op = j->c.op;
    call.st = st;
    call.env = &env;
    call.actor = &actor;
    call.request_id = j->request_id;
    call.idem_key = j->c.idem[0] ? j->c.idem : NULL;
    call.params = j->c.params;
    cJSON *out = NULL;
    kr_diag d = {{0}};
    rc = kr_ops_run(&call, &out, &d);
    if (rc) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(out, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(out, "message");
        set_error(j, kr_ops_http_status(rc), cJSON_IsString(code) ? code->valuestring : kr_err_name(rc),
                  cJSON_IsString(msg) ? msg->valuestring : kr_diag_msg(&d, rc));
    } else {
        /* a replay is the first answer whole: its status and body */
        set_result(j, call.replayed ? call.replay_status : j->c.op->ok_status, out);
        j->replayed = call.replayed;
    }
    kr_ops_params_free(out);
}

static void admin_done(kr_job *job)
{
    admin_job *j = (admin_job *)job;
    admin_req *ar = j->req;
    ar->job = NULL;
    kr_exchange *r = &ar->x;
    if (j->status >= 400) {
        /* the error code for the log line, from the body we built */
        cJSON *b = cJSON_ParseWithLength(j->body.data ? j->body.data : "{}", j->body.len);
        const cJSON *c = b ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "error"), "code") : NULL;
        if (cJSON_IsString(c)) kr_strlcpy(r->error_type, c->valuestring, sizeof r->error_type);
        cJSON_Delete(b);
    }
    respond_body_more(r, j->status, j->body.data ? j->body.data : "{}", j->body.len, j->set_cookie,
                      j->replayed ? "idempotent-replayed: true\r\n" : NULL);
}

static void admin_cleanup(kr_job *job)
{
    admin_job *j = (admin_job *)job;
    kr_admin_call_free(&j->c);
    if (j->body.data) sodium_memzero(j->body.data, j->body.len);
    kr_buf_free(&j->body);
    sodium_memzero(j->set_cookie, sizeof j->set_cookie);
}

/* ---- the loop thread: route, parse, authenticate the shape ---- */

static bool body_has_nul_escape(const char *b, size_t n)
{
    for (const char *p = b; (p = memmem(p, n - (size_t)(p - b), "\\u", 2)); p += 2)
        if ((size_t)(b + n - p) >= 6 && !strncasecmp(p + 2, "0000", 4)) return true;
    return false;
}

/* The session cookie's value, or NULL. */
static bool cookie_value(const kr_http_req *h, char *out, size_t cap)
{
    for (unsigned i = 0; i < h->nheaders; i++) {
        if (!kr_slice_eq_ci(h->headers[i].name, "cookie")) continue;
        const char *p = h->headers[i].value.p, *e = p + h->headers[i].value.n;
        while (p < e) {
            while (p < e && (*p == ' ' || *p == ';')) p++;
            const char *eq = memchr(p, '=', (size_t)(e - p));
            const char *semi = memchr(p, ';', (size_t)(e - p));
            if (!semi) semi = e;
            if (eq && eq < semi && (size_t)(eq - p) == strlen(SESSION_COOKIE) &&
                !memcmp(p, SESSION_COOKIE, (size_t)(eq - p)))
                return !kr_memlcpy(out, cap, eq + 1, (size_t)(semi - eq - 1)) && semi > eq + 1;
            p = semi;
        }
    }
    return false;
}

void kr_console_start(void *ctx, kr_conn *conn, const kr_http_req *h)
{
    kr_exchange *r = &req_new(ctx, conn, h)->x;
    size_t n;
    const char *ctype;
    const char *a = kr_console_asset(h->path.p, h->path.n, &n, &ctype);
    if (!a) {
        respond_err(r, 404, "NOT_FOUND", "no console page %.*s", (int)(h->path.n < 100 ? h->path.n : 100),
                    h->path.p);
        return;
    }
    if (!kr_slice_eq(h->method, "GET") && !kr_slice_eq(h->method, "HEAD")) {
        respond_err(r, 405, "METHOD", "the console's pages take GET");
        return;
    }
    kr_x_respond(r, 200, ctype, a, n,
                 "cache-control: no-cache\r\nx-content-type-options: nosniff\r\n"
                 "referrer-policy: no-referrer\r\nx-frame-options: DENY\r\n"
                 "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; "
                 "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'\r\n",
                 "request-id");
}

static void serve_openapi(kr_exchange *r)
{
    kr_buf b = KR_BUF_INIT(1 << 22);
    kr_admin_openapi(&b);
    respond_body(r, 200, b.data, b.len, NULL);
    kr_buf_free(&b);
}

void kr_admin_call_free(kr_admin_call *c)
{
    kr_ops_params_free(c->params); /* a secret value may be in there */
    c->params = NULL;
    sodium_memzero(c->csrf, sizeof c->csrf);
}

__attribute__((format(printf, 4, 5))) static void refuse(kr_admin_call *c, int status,
                                                         const char *code, const char *fmt, ...)
{
    if (c->status) return; /* the first refusal stands */
    c->status = status;
    kr_strlcpy(c->code, code, sizeof c->code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
}

void kr_admin_parse(const kr_http_req *h, int secure_cookie, kr_admin_call *c)
{
    memset(c, 0, sizeof *c);
    c->params = cJSON_CreateObject();
    kr_strlcpy(c->cred_class, "none", sizeof c->cred_class);
    if (!kr_slice_starts(h->path, API "/")) {
        refuse(c, 404, "NOT_FOUND", "the admin API is under " API "/");
        return;
    }
    const char *path = h->path.p + strlen(API);
    size_t plen = h->path.n - strlen(API);
    bool get = kr_slice_eq(h->method, "GET") || kr_slice_eq(h->method, "HEAD");
    c->mutation = !get;
    /* the route */
    bool path_known = false;
    if (plen == 13 && !memcmp(path, "/openapi.json", 13)) {
        path_known = true;
        c->special = get ? SP_OPENAPI : SP_NONE;
    } else if (plen == 8 && !memcmp(path, "/session", 8)) {
        path_known = true;
        c->special = kr_slice_eq(h->method, "POST")     ? SP_SESSION_CREATE
                     : get                               ? SP_SESSION_GET
                     : kr_slice_eq(h->method, "DELETE") ? SP_SESSION_DELETE
                                                         : SP_NONE;
    } else {
        size_t n;
        const kr_op *ops = kr_ops_table(&n);
        for (size_t i = 0; i < n && !c->op; i++) {
            if (!ops[i].method || !match(ops[i].path, path, plen, &ops[i], NULL)) continue;
            path_known = true;
            if (kr_slice_eq(h->method, ops[i].method) ||
                (!strcmp(ops[i].method, "GET") && kr_slice_eq(h->method, "HEAD"))) {
                c->op = &ops[i];
                match(ops[i].path, path, plen, &ops[i], c->params);
            }
        }
    }
    int mn = (int)(h->method.n < 10 ? h->method.n : 10), pn = (int)(h->path.n < 200 ? h->path.n : 200);
    if (!path_known)
        refuse(c, 404, "NOT_FOUND", "no admin route %.*s %.*s", mn, h->method.p, pn, h->path.p);
    else if (!c->op && !c->special)
        refuse(c, 405, "METHOD", "%.*s does not take %.*s", pn, h->path.p, mn, h->method.p);
    if (c->status || c->special == SP_OPENAPI) return;
    /* the query: parameters the operation reads from it */
    const char *q = h->query.p, *qe = q + h->query.n;
    while (h->query.n && q < qe && !c->status) {
        const char *amp = memchr(q, '&', (size_t)(qe - q));
        if (!amp) amp = qe;
        const char *eq = memchr(q, '=', (size_t)(amp - q));
        char name[64], val[1100];
        if (!eq || pct_decode(q, (size_t)(eq - q), true, name, sizeof name) ||
            pct_decode(eq + 1, (size_t)(amp - eq - 1), true, val, sizeof val)) {
            refuse(c, 400, "INVAL", "the query string is not name=value pairs");
            break;
        }
        const kr_op_param *p = c->op ? param_of(c->op, name) : NULL;
        if (p && p->in == KR_IN_PATH) refuse(c, 400, "INVAL", "'%s' belongs in the path", name);
        cJSON_DeleteItemFromObjectCaseSensitive(c->params, name);
        cJSON_AddItemToObject(c->params, name, typed(p, val));
        q = amp < qe ? amp + 1 : qe;
    }
    /* the body: one JSON object */
    if (!c->status && h->body_len) {
        const kr_http_header *ct = kr_http_find(h, "content-type");
        cJSON *b = NULL;
        if (!ct || !(ct->value.n >= 16 && !strncasecmp(ct->value.p, "application/json", 16)))
            refuse(c, 415, "MEDIA_TYPE", "send the body as content-type: application/json");
        else if (body_has_nul_escape(h->body, h->body_len))
            refuse(c, 400, "INVAL", "a string holds a NUL (\\u0000): values are text");
        else if (!(b = cJSON_ParseWithLength(h->body, h->body_len)) || !cJSON_IsObject(b))
            refuse(c, 400, "INVAL", "the body must be one JSON object");
        for (cJSON *e = b ? b->child : NULL, *next; e && !c->status; e = next) {
            next = e->next;
            const kr_op_param *p = c->op ? param_of(c->op, e->string) : NULL;
            if (p && p->in == KR_IN_PATH) {
                refuse(c, 400, "INVAL", "'%.40s' belongs in the path", e->string);
                break;
            }
            cJSON_DetachItemViaPointer(b, e);
            cJSON_DeleteItemFromObjectCaseSensitive(c->params, e->string);
            cJSON_AddItemToObject(c->params, e->string, e);
        }
        kr_ops_params_free(b);
    }
    if (c->status) return;
    /* the credential: an admin token, or the console's session */
    const kr_http_header *au = kr_http_find(h, "authorization");
    const kr_http_header *xk = kr_http_find(h, "x-api-key");
    char cookie[128];
    if (c->special != SP_SESSION_CREATE) {
        kr_slice v = au ? au->value : xk ? xk->value : (kr_slice){NULL, 0};
        if (au && v.n > 7 && !strncasecmp(v.p, "bearer ", 7)) v.p += 7, v.n -= 7;
        kr_cred_class cls = v.p ? kr_cred_classify(v.p, v.n) : KR_CRED_NONE;
        if (v.p && (cls != KR_CRED_ADMIN_TOKEN || xk)) {
            char fp[KR_FP_LEN];
            kr_cred_fingerprint(v.p, v.n, fp);
            kr_strlcpy(c->cred_class, kr_cred_class_name(cls), sizeof c->cred_class);
            refuse(c, 401, "UNAUTHENTICATED",
                   "a %s credential was presented (fingerprint %s); the admin API takes an admin "
                   "token (kradm_…) as Authorization: Bearer, or the console's session",
                   kr_cred_class_name(cls), fp);
        } else if (v.p) {
            kr_token_hash(v.p, v.n, c->bearer_hash);
            kr_strlcpy(c->cred_class, "admin-token", sizeof c->cred_class);
        } else if (cookie_value(h, cookie, sizeof cookie)) {
            kr_token_hash(cookie, strlen(cookie), c->session_hash);
            sodium_memzero(cookie, sizeof cookie);
            kr_strlcpy(c->cred_class, "session", sizeof c->cred_class);
            const kr_http_header *cs = kr_http_find(h, "x-csrf-token");
            if (cs) kr_memlcpy(c->csrf, sizeof c->csrf, cs->value.p, cs->value.n < 90 ? cs->value.n : 90);
        } else {
            refuse(c, 401, "UNAUTHENTICATED",
                   "no credential: send an admin token (kradm_…) as Authorization: Bearer, or sign "
                   "in to the console");
        }
    }
    const kr_http_header *idem = kr_http_find(h, "idempotency-key");
    if (!c->status && idem) {
        bool ok = idem->value.n >= 1 && idem->value.n <= 128;
        for (size_t i = 0; ok && i < idem->value.n; i++)
            ok = idem->value.p[i] > 0x20 && idem->value.p[i] < 0x7f;
        if (!ok) refuse(c, 400, "INVAL", "Idempotency-Key: 1-128 printable characters");
        else if (c->op && c->op->creates) kr_memlcpy(c->idem, sizeof c->idem, idem->value.p, idem->value.n);
    }
    const kr_http_header *xfp = kr_http_find(h, "x-forwarded-proto");
    c->secure_cookie = secure_cookie == 1 ||
                       (secure_cookie == 2 && xfp && kr_slice_eq_ci(xfp->value, "https"));
}

void kr_admin_start(void *ctx, kr_conn *conn, const kr_http_req *h)
{
    kr_admin *s = ctx;
    admin_req *ar = req_new(s, conn, h);
    kr_exchange *r = &ar->x;
    admin_job *j = kr_xcalloc(1, sizeof *j);
    kr_admin_parse(h, (int)s->p.cfg->admin_secure_cookie, &j->c);
    kr_strlcpy(r->cred_class, j->c.cred_class, sizeof r->cred_class);
    if (j->c.status || j->c.special == SP_OPENAPI) {
        if (j->c.status) respond_err(r, j->c.status, j->c.code, "%s", j->c.msg);
        else serve_openapi(r);
        kr_admin_call_free(&j->c);
        free(j);
        return;
    }
    j->job.work = admin_work;
    j->job.done = admin_done;
    j->job.cleanup = admin_cleanup;
    j->req = ar;
    j->srv = s;
    kr_strlcpy(j->request_id, r->id, sizeof j->request_id);
    ar->job = &j->job;
    kr_workq_submit(s->workers, &j->job);
}
