/*
 * routes.c -- the gateway's routes: the route table, the request object,
 * credentials, the models and workspace-environment endpoints, the log
 * line, and the gateway's start and stop. See proxy.h for the tour;
 * forwarding and the relay are forward.c.
 */
#include "proxy/proxy.h"
#include "proxy/gemini_path.h"
#include "core/cred.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_CAP (64 * 1024) /* staged bytes of a non-SSE body before a write */

/* ---- request objects ---- */

static void req_abort(kr_exchange *x);
static void req_release(kr_exchange *x);
static void req_writable(kr_exchange *x);
static void req_log(kr_exchange *x);

static const kr_exchange_ops req_ops = {req_abort, req_release, req_writable, req_log};

kr_req *kr_req_new(kr_proxy *s, kr_conn *c, const kr_http_req *h, kr_route_id route)
{
    kr_req *r = kr_xcalloc(1, sizeof *r);
    r->px = s;
    r->refs = 1;
    r->pool_key = -1;
    kr_x_init(&r->x, &req_ops, c, h, route);
    kr_buf_init(&r->upbody, (size_t)s->cfg->max_body_bytes + 4096);
    kr_buf_init(&r->resp_head, 16 * 1024);
    kr_buf_init(&r->out, OUT_CAP + 64 * 1024 + 64);
    kr_buf_init(&r->json, (size_t)s->cfg->max_usage_event_bytes);
    return r;
}

void kr_req_unref(kr_req *r)
{
    KR_ASSERT(r->refs > 0);
    if (--r->refs > 0) return;
    KR_ASSERT(!r->up.active);
    kr_req_undirty(r);
    if (r->traced) kr_req_span(r);
    if (r->admitted) {
        kr_usage none = {0};
        kr_limits_settle(r->px, r, &none, 0); /* admitted, never served */
    }
    kr_buf_free(&r->upbody);
    kr_buf_free(&r->resp_head);
    kr_buf_free(&r->out);
    kr_buf_free(&r->json);
    if (r->is_sse) kr_sse_usage_free(&r->sse);
    free(r);
}

static void req_release(kr_exchange *x)
{
    kr_req_unref((kr_req *)x);
}

static void req_writable(kr_exchange *x)
{
    kr_req *r = (kr_req *)x;
    if (r->paused) kr_req_resume_upstream(r);
}

/* The client went away: stop the store job or the upstream transfer. */
static void req_abort(kr_exchange *x)
{
    kr_req *r = (kr_req *)x;
    if (r->job) {
        kr_job_cancel(r->job);
        r->job = NULL;
    }
    if (r->up.active) {
        kr_req_abort_upstream(r);
        return;
    }
    if (r->pool_retry_due) {
        /* gone between a refused key and the retry: nothing was served */
        r->pool_retry_due = false;
        r->meter = false;
        kr_x_abandon(&r->x);
        kr_req_unref(r); /* the ended transfer's */
        return;
    }
    kr_x_abandon(&r->x);
}

/* ---- the log line and the end of a request ---- */

/* one line per request on the hot path: appends into a buffer each loop
 * thread reuses, no printf */
static _Thread_local kr_buf log_line = KR_BUF_INIT(4096);

void kr_req_log(kr_req *r, const kr_usage *u, int64_t cost)
{
    if (kr_log_level > KR_LOG_INFO) return;
    kr_buf *b = &log_line;
    kr_buf_reset(b);
    kr_x_log_begin(&r->x, b);
    if (r->auth.ws_id) {
        kr_buf_puts(b, ",\"workspace_id\":");
        kr_buf_put_i64(b, r->auth.ws_id);
        kr_buf_puts(b, ",\"org_id\":");
        kr_buf_put_i64(b, r->auth.org_id);
    }
    if (r->up_error[0]) {
        kr_buf_puts(b, ",\"upstream_error\":\"");
        kr_buf_json_str(b, r->up_error, strlen(r->up_error));
        kr_buf_putc(b, '"');
    }
    if (r->model_id[0]) {
        kr_buf_puts(b, ",\"model\":\"");
        kr_buf_json_str(b, r->model_id, strlen(r->model_id));
        kr_buf_puts(b, r->stream ? "\",\"stream\":true" : "\",\"stream\":false");
    }
    if (u) {
        kr_buf_puts(b, ",\"input_tokens\":");
        kr_buf_put_u64(b, u->input_tokens);
        kr_buf_puts(b, ",\"output_tokens\":");
        kr_buf_put_u64(b, u->output_tokens);
        kr_buf_puts(b, ",\"cache_read_tokens\":");
        kr_buf_put_u64(b, u->cache_read_tokens);
        kr_buf_puts(b, ",\"cache_write_tokens\":");
        kr_buf_put_u64(b, u->cache_write_tokens);
        kr_buf_puts(b, ",\"cost_micros\":");
        kr_buf_put_i64(b, cost);
    }
    kr_x_log_end(&r->x, b, r->t_up_ns);
}

/* At the end of every request; a metered one logs with its usage instead
 * (forward.c, when the usage is known). */
static void req_log(kr_exchange *x)
{
    kr_req *r = (kr_req *)x;
    if (!r->meter) kr_req_log(r, NULL, 0);
}

/* ---- credentials ---- */

static const char *class_words(kr_cred_class cls)
{
    return cls == KR_CRED_ANTHROPIC_OAUTH     ? "an Anthropic OAuth token"
           : cls == KR_CRED_ANTHROPIC_API_KEY ? "an Anthropic API key"
           : cls == KR_CRED_OPENAI_KEY        ? "an OpenAI API key"
           : cls == KR_CRED_GOOGLE_KEY        ? "a Google API key"
           : cls == KR_CRED_GOOGLE_OAUTH      ? "a Google OAuth token"
           : cls == KR_CRED_VENDOR_KEY        ? "a vendor API key"
           : cls == KR_CRED_WORKSPACE_TOKEN   ? "a second workspace token"
           : cls == KR_CRED_ADMIN_TOKEN       ? "a keyrail admin token (it opens the admin API only)"
                                              : "a credential that is not a keyrail workspace token";
}

/* The credential a credential header carries ("Bearer " stripped). */
static kr_slice header_credential(const kr_http_header *hd)
{
    kr_slice v = hd->value;
    if (kr_slice_eq_ci(hd->name, "authorization") && v.n > 7 && !strncasecmp(v.p, "bearer ", 7)) {
        v.p += 7;
        v.n -= 7;
        while (v.n && *v.p == ' ')
            v.p++, v.n--;
    }
    return v;
}

/* The workspace token a request presents, or a refusal (401) naming the
 * class of what arrived instead or besides. Exactly one credential may
 * arrive: a workspace token, as x-api-key or Authorization: Bearer (both
 * headers carrying the same token count as one). Any other credential -- a
 * second Authorization or x-api-key, or a credential of a known shape in any
 * other header (custom headers, cookies) -- is refused, nothing forwarded.
 * Never echoes credential bytes. */
bool kr_req_take_credential(kr_req *r, const char **tok, size_t *n)
{
    const kr_http_req *h = r->x.http;
    kr_slice ws = {NULL, 0};
    /* the refusal names one extra credential: x-api-key's first, then
     * Authorization's, then any other header's */
    int bad_rank = 3;
    const kr_http_header *bad = NULL;
    kr_slice bad_v = {NULL, 0};
    kr_cred_class bad_cls = KR_CRED_NONE;
    for (unsigned i = 0; i < h->nheaders; i++) {
        const kr_http_header *hd = &h->headers[i];
        bool goog = r->proto == KR_PROTO_GEMINI && kr_slice_eq_ci(hd->name, "x-goog-api-key");
        int rank = kr_slice_eq_ci(hd->name, "x-api-key") || goog ? 0
                   : kr_slice_eq_ci(hd->name, "authorization")   ? 1
                                                                 : 2;
        kr_slice v = rank < 2 ? header_credential(hd) : hd->value;
        kr_cred_class cls;
        size_t off = 0, len = v.n;
        if (rank < 2) {
            if (!v.n) continue;
            cls = kr_cred_classify(v.p, v.n);
            if (cls == KR_CRED_WORKSPACE_TOKEN &&
                (!ws.p || (ws.n == v.n && sodium_memcmp(ws.p, v.p, v.n) == 0))) {
                ws = v; /* the token, or the same token again */
                continue;
            }
            if (cls == KR_CRED_NONE) cls = KR_CRED_UNKNOWN;
        } else {
            cls = kr_cred_find(v.p, v.n, &off, &len);
            if (cls == KR_CRED_NONE) continue;
        }
        if (rank < bad_rank) {
            bad_rank = rank, bad = hd, bad_cls = cls;
            bad_v = (kr_slice){v.p + off, len};
        }
    }
    /* the Gemini API also takes its key in the query (?key=): one more place */
    bool bad_query = false;
    if (r->query_key.p) {
        kr_slice v = r->query_key;
        kr_cred_class cls = kr_cred_classify(v.p, v.n);
        if (cls == KR_CRED_WORKSPACE_TOKEN &&
            (!ws.p || (ws.n == v.n && sodium_memcmp(ws.p, v.p, v.n) == 0)))
            ws = v;
        else if (!bad || bad_rank > 0)
            bad_query = true, bad_rank = 0, bad_cls = cls == KR_CRED_NONE ? KR_CRED_UNKNOWN : cls,
            bad_v = v;
    }
    if (bad || bad_query) { /* something other than the one workspace token: refused */
        char fp[KR_FP_LEN], name[64];
        kr_cred_fingerprint(bad_v.p, bad_v.n, fp);
        /* Claude Code hides a 401 whose message says "x-api-key" behind "Not
         * logged in": name that header in words */
        if (bad_query)
            kr_strlcpy(name, "key query parameter's", sizeof name);
        else if (bad_rank == 0)
            kr_strlcpy(name, "API key", sizeof name);
        else
            kr_memlcpy(name, sizeof name, bad->name.p, bad->name.n < 63 ? bad->name.n : 63);
        kr_strlcpy(r->x.cred_class, kr_cred_class_name(bad_cls), sizeof r->x.cred_class);
        kr_respond_error(r, 401, "authentication_error",
                         "%s was presented in the %s header (class %s, fingerprint %s); this "
                         "endpoint takes exactly one credential, a keyrail workspace token "
                         "(krws_…), and nothing was forwarded. Start the agent with `keyrail "
                         "run`, or check its environment (%s).",
                         class_words(bad_cls), name, kr_cred_class_name(bad_cls), fp,
                         r->proto == KR_PROTO_GEMINI
                             ? "GEMINI_API_KEY, GOOGLE_API_KEY, GEMINI_CLI_CUSTOM_HEADERS, "
                               "GOOGLE_APPLICATION_CREDENTIALS"
                             : "ANTHROPIC_AUTH_TOKEN, ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN, "
                               "ANTHROPIC_CUSTOM_HEADERS, OPENAI_API_KEY");
        return false;
    }
    if (!ws.p) {
        kr_strlcpy(r->x.cred_class, "none", sizeof r->x.cred_class);
        kr_respond_error(r, 401, "authentication_error",
                         "no credential: this endpoint takes a keyrail workspace token (krws_…) as "
                         "%s",
                         r->proto == KR_PROTO_GEMINI ? "x-goog-api-key, Authorization: Bearer or ?key="
                                                     : "x-api-key or Authorization: Bearer");
        return false;
    }
    kr_strlcpy(r->x.cred_class, "workspace-token", sizeof r->x.cred_class);
    *tok = ws.p;
    *n = ws.n;
    return true;
}

/* Checks common to every authenticated route; false when answered. */
static bool auth_ok(kr_req *r, const kr_auth_info *a, bool need_platform)
{
    r->auth = *a;
    if (a->rc == KR_ENOTFOUND || a->rc == KR_EDENIED) {
        kr_respond_error(r, 401, "authentication_error", "%s", a->reason);
        return false;
    }
    if (a->rc == KR_ESTORE) {
        kr_respond_error(r, 503, "api_error",
                         "the store is unavailable; keyrail refuses to serve unauthenticated");
        return false;
    }
    if (a->rc) {
        kr_respond_error(r, 503, "api_error", "%s", a->reason);
        return false;
    }
    if (a->expires_at && kr_now_ms() >= a->expires_at) {
        kr_respond_error(r, 401, "authentication_error", "this workspace token has expired");
        return false;
    }
    bool served = a->route == KR_ROUTE_PLATFORM || (a->route == KR_ROUTE_BYOK && !a->byok_direct);
    if (need_platform && !served) {
        kr_respond_error(r, 403, "permission_error",
                         "this workspace uses its own key with provider '%s' and calls the vendor "
                         "directly (BYOK_ROUTE=direct); the proxy does not serve it",
                         a->provider);
        return false;
    }
    return true;
}

/* ---- local endpoints ---- */

/* A model this workspace may call: on BYOK its provider's, else a priced
 * platform model; of the route's protocol. */
static bool model_listed(const kr_req *r, const kr_model *m)
{
    const kr_provider *p = &r->px->p.reg->providers[m->provider];
    bool byok = r->auth.route == KR_ROUTE_BYOK;
    if (byok ? strcmp(p->name, r->auth.provider) : (!p->platform || !m->priced)) return false;
    return p->proto == r->proto;
}

static void gemini_model_json(kr_buf *b, const kr_model *m)
{
    kr_buf_printf(b,
                  "{\"name\":\"models/%s\",\"displayName\":\"%s\","
                  "\"supportedGenerationMethods\":[\"generateContent\","
                  "\"streamGenerateContent\",\"countTokens\"]}",
                  m->id, m->id);
}

static void respond_models(kr_req *r)
{
    kr_buf b = KR_BUF_INIT(1 << 20);
    const kr_registry *reg = r->px->p.reg;
    bool first = true;
    if (r->proto == KR_PROTO_GEMINI && r->path_model[0]) { /* GET .../models/{model} */
        for (size_t i = 0; i < reg->nmodels; i++)
            if (!strcmp(reg->models[i].id, r->path_model) && model_listed(r, &reg->models[i])) {
                gemini_model_json(&b, &reg->models[i]);
                kr_respond_json(r, 200, b.data, b.len, NULL);
                kr_buf_free(&b);
                return;
            }
        kr_buf_free(&b);
        kr_respond_error(r, 404, "not_found_error", "model '%s' is not served to this workspace",
                         r->path_model);
        return;
    }
    if (r->proto == KR_PROTO_ANTHROPIC)
        kr_buf_puts(&b, "{\"data\":[");
    else if (r->proto == KR_PROTO_GEMINI)
        kr_buf_puts(&b, "{\"models\":[");
    else
        kr_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    const char *first_id = NULL, *last_id = NULL;
    for (size_t i = 0; i < reg->nmodels; i++) {
        const kr_model *m = &reg->models[i];
        const kr_provider *p = &reg->providers[m->provider];
        if (!model_listed(r, m)) continue;
        if (!first) kr_buf_putc(&b, ',');
        first = false;
        if (!first_id) first_id = m->id;
        last_id = m->id;
        if (r->proto == KR_PROTO_ANTHROPIC)
            kr_buf_printf(&b,
                          "{\"type\":\"model\",\"id\":\"%s\",\"display_name\":\"%s\","
                          "\"created_at\":\"2025-01-01T00:00:00Z\"}",
                          m->id, m->id);
        else if (r->proto == KR_PROTO_GEMINI)
            gemini_model_json(&b, m);
        else
            kr_buf_printf(&b,
                          "{\"id\":\"%s\",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}",
                          m->id, p->name);
    }
    if (r->proto == KR_PROTO_ANTHROPIC) {
        kr_buf_puts(&b, "],\"has_more\":false,\"first_id\":");
        kr_buf_printf(&b, first_id ? "\"%s\"" : "%s", first_id ? first_id : "null");
        kr_buf_puts(&b, ",\"last_id\":");
        kr_buf_printf(&b, last_id ? "\"%s\"" : "%s", last_id ? last_id : "null");
        kr_buf_putc(&b, '}');
    } else {
        kr_buf_puts(&b, "]}");
    }
    kr_respond_json(r, 200, b.data, b.len, NULL);
    kr_buf_free(&b);
}

typedef struct {
    kr_job job;
    kr_req *req;
    int64_t ws_id;
    char token[KR_WS_TOKEN_LEN + 8];
    const kr_plane *p;
    kr_buf out;
    int err;
    char msg[400];
} env_job;

static void env_work(kr_store *st, kr_job *j)
{
    env_job *e = (env_job *)j;
    kr_workspace ws;
    kr_diag d = {{0}};
    int rc = kr_ws_get(st, e->ws_id, &ws, &d);
    if (rc) {
        e->err = rc;
        kr_strlcpy(e->msg, "workspace not found", sizeof e->msg);
        return;
    }
    kr_provision_ctx ctx = kr_plane_ctx(e->p);
    kr_provision_result res;
    rc = kr_provision(st, e->p->mk, &ctx, &ws, NULL, 0, e->token, &res, &d);
    sodium_memzero(e->token, sizeof e->token);
    if (rc) {
        e->err = rc;
        kr_snprintf(e->msg, sizeof e->msg, "%s: %s", kr_err_name(rc), kr_diag_msg(&d, rc));
    } else {
        kr_buf_init(&e->out, 1 << 24);
        kr_provision_render_json(&res, true, &e->out);
    }
    kr_provision_result_free(&res);
}

static void env_done(kr_job *j)
{
    env_job *e = (env_job *)j;
    kr_req *r = e->req;
    r->job = NULL;
    if (e->err) {
        kr_respond_error(r, e->err == KR_ESTORE ? 503 : 409, "provisioning_error", "%s", e->msg);
    } else {
        kr_respond_json(r, 200, e->out.data, e->out.len, "cache-control: no-store\r\n");
    }
}

static void env_cleanup(kr_job *j)
{
    env_job *e = (env_job *)j;
    if (e->out.data) sodium_memzero(e->out.data, e->out.len);
    kr_buf_free(&e->out);
    sodium_memzero(e->token, sizeof e->token);
}

static void on_auth(kr_req *r, const kr_auth_info *a)
{
    bool platform = r->rd->kind != KR_RK_ENV;
    if (!auth_ok(r, a, platform)) return;
    if (r->rd->metered && !kr_meter_healthy(r->px->meter)) {
        kr_respond_error(r, 503, "api_error",
                         "usage cannot be recorded right now; keyrail refuses to serve unmetered");
        return;
    }
    switch (r->rd->kind) {
    case KR_RK_MODELS:
        respond_models(r);
        return;
    case KR_RK_ENV: {
        kr_proxy *s = r->px;
        env_job *e = kr_xcalloc(1, sizeof *e);
        e->job.work = env_work;
        e->job.done = env_done;
        e->job.cleanup = env_cleanup;
        e->req = r;
        e->ws_id = a->ws_id;
        const char *tok;
        size_t n;
        if (!kr_req_take_credential(r, &tok, &n)) {
            free(e);
            return;
        }
        kr_memlcpy(e->token, sizeof e->token, tok, n);
        e->p = &s->p;
        r->job = &e->job;
        kr_workq_submit(s->workers, &e->job);
        return;
    }
    default:
        kr_req_forward(r);
        return;
    }
}

/* Copies src with one replacement [off, off+len) -> rep into dst. */
/* ---- routing ---- */

static const kr_route_def routes[] = {
    /* path, method, metrics id, protocol, kind, wire, upstream path, metered */
    {"/anthropic/v1/messages", "POST", KR_ROUTE_ANTHROPIC_MESSAGES, KR_PROTO_ANTHROPIC,
     KR_RK_UPSTREAM, KR_WIRE_ANTHROPIC, "/v1/messages", true},
    {"/anthropic/v1/messages/count_tokens", "POST", KR_ROUTE_ANTHROPIC_COUNT_TOKENS,
     KR_PROTO_ANTHROPIC, KR_RK_UPSTREAM, KR_WIRE_ANTHROPIC, "/v1/messages/count_tokens", false},
    {"/openai/v1/chat/completions", "POST", KR_ROUTE_OPENAI_CHAT, KR_PROTO_OPENAI, KR_RK_UPSTREAM,
     KR_WIRE_OPENAI_CHAT, "/v1/chat/completions", true},
    {"/openai/v1/responses", "POST", KR_ROUTE_OPENAI_RESPONSES, KR_PROTO_OPENAI, KR_RK_UPSTREAM,
     KR_WIRE_OPENAI_RESPONSES, "/v1/responses", true},
    {"/anthropic/v1/models", "GET", KR_ROUTE_ANTHROPIC_MODELS, KR_PROTO_ANTHROPIC, KR_RK_MODELS, 0,
     NULL, false},
    {"/openai/v1/models", "GET", KR_ROUTE_OPENAI_MODELS, KR_PROTO_OPENAI, KR_RK_MODELS, 0, NULL,
     false},
    {"/v1/workspace/env", "GET", KR_ROUTE_WORKSPACE_ENV, KR_PROTO_ANTHROPIC, KR_RK_ENV, 0, NULL,
     false},
};

/* The Gemini API: /gemini/{v1beta|v1}/models/{model}:{action}, and the model
 * list. The model and the version come from the path; the upstream path is
 * made from them in forward.c (upstream: the action). */
/* indexed by kr_gem_action (gemini_path.h) */
static const kr_route_def gemini_routes[] = {
    {"/gemini/{version}/models/{model}:generateContent", "POST", KR_ROUTE_GEMINI_GENERATE,
     KR_PROTO_GEMINI, KR_RK_UPSTREAM, KR_WIRE_GEMINI, ":generateContent", true},
    {"/gemini/{version}/models/{model}:streamGenerateContent", "POST", KR_ROUTE_GEMINI_STREAM,
     KR_PROTO_GEMINI, KR_RK_UPSTREAM, KR_WIRE_GEMINI, ":streamGenerateContent", true},
    {"/gemini/{version}/models/{model}:countTokens", "POST", KR_ROUTE_GEMINI_COUNT_TOKENS,
     KR_PROTO_GEMINI, KR_RK_UPSTREAM, KR_WIRE_GEMINI, ":countTokens", false},
    {"/gemini/{version}/models", "GET", KR_ROUTE_GEMINI_MODELS, KR_PROTO_GEMINI, KR_RK_MODELS, 0,
     NULL, false},
    {"/gemini/{version}/models/{model}", "GET", KR_ROUTE_GEMINI_MODELS, KR_PROTO_GEMINI,
     KR_RK_MODELS, 0, NULL, false},
};

/* Matches a Gemini path into r (the version, the model); NULL when none. */
static const kr_route_def *gemini_route(kr_req *r, kr_slice path)
{
    kr_gem_path g;
    if (kr_gemini_path_parse(path.p, path.n, &g)) return NULL;
    memcpy(r->api_version, g.version, sizeof r->api_version);
    kr_strlcpy(r->path_model, g.model, sizeof r->path_model);
    return &gemini_routes[g.action];
}

/* Gemini queries: alt (sse, or json: the chunks as one JSON array) on the
 * stream route, and key= (a credential, taken like a header). */
static bool gemini_query(kr_req *r)
{
    const kr_http_req *h = r->x.http;
    kr_gem_query q;
    if (kr_gemini_query_parse(h->query.p, h->query.n, r->rd->id == KR_ROUTE_GEMINI_STREAM, &q)) {
        /* never echoed: a query may hold a credential */
        kr_respond_error(r, 400, "invalid_request_error",
                         "unsupported query parameter (Gemini routes take alt=sse and key=)");
        return false;
    }
    r->alt_sse = q.alt_sse;
    if (q.key) r->query_key = (kr_slice){q.key, q.key_n};
    return true;
}

static bool is_websocket_upgrade(const kr_http_req *h)
{
    const kr_http_header *u = kr_http_find(h, "upgrade");
    return u && u->value.n >= 9 && !strncasecmp(u->value.p, "websocket", 9);
}

static kr_proto proto_of_path(const kr_http_req *h)
{
    return kr_slice_starts(h->path, "/openai/")   ? KR_PROTO_OPENAI
           : kr_slice_starts(h->path, "/gemini/") ? KR_PROTO_GEMINI
                                                  : KR_PROTO_ANTHROPIC;
}

void kr_proxy_not_here(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_req *r = kr_req_new(ctx, c, h, KR_ROUTE_OTHER);
    r->x.route = KR_ROUTE_ADMIN;
    kr_respond_error(r, 404, "not_found_error",
                     "the admin API and the console are not served on this listener "
                     "(server.admin_listen)");
}

void kr_proxy_start(void *ctx, kr_conn *c, const kr_http_req *h)
{
    kr_proxy *px = ctx;
    kr_req *r = kr_req_new(px, c, h, KR_ROUTE_OTHER);
    const kr_route_def *rd = NULL;
    if (kr_slice_starts(h->path, "/gemini/"))
        rd = gemini_route(r, h->path);
    else
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
            if (kr_slice_eq(h->path, routes[i].path)) {
                rd = &routes[i];
                break;
            }
    if (!rd) {
        r->proto = proto_of_path(h);
        if (kr_slice_eq(h->path, "/") &&
            (kr_slice_eq(h->method, "GET") || kr_slice_eq(h->method, "HEAD"))) {
            static const char hello[] = "{\"service\":\"keyrail\"}";
            kr_respond_json(r, 200, hello, sizeof hello - 1, NULL);
            return;
        }
        kr_respond_error(r, 404, r->proto == KR_PROTO_ANTHROPIC ? "not_found_error" : "invalid_request_error",
                         "no route for %.*s %.*s", (int)(h->method.n < 16 ? h->method.n : 16),
                         h->method.p, (int)(h->path.n < 128 ? h->path.n : 128), h->path.p);
        return;
    }
    r->rd = rd;
    r->x.route = rd->id;
    r->proto = rd->proto;
    bool get = !strcmp(rd->method, "GET");
    if (!(kr_slice_eq(h->method, rd->method) || (get && kr_slice_eq(h->method, "HEAD")))) {
        if (is_websocket_upgrade(h))
            /* Codex tries a WebSocket first; a plain refusal makes it fall back at once */
            kr_respond_error(r, 405, "invalid_request_error",
                             "WebSocket is not supported on %s: send POST with \"stream\": true "
                             "(server-sent events)",
                             rd->path);
        else
            kr_respond_error(r, 405, "invalid_request_error", "%s takes %s", rd->path,
                             get ? "GET" : "POST");
        return;
    }
    if (rd->proto == KR_PROTO_GEMINI) {
        if (!gemini_query(r)) return;
    } else if (h->query.n && !(h->query.n == 9 && !memcmp(h->query.p, "beta=true", 9)) &&
               rd->kind != KR_RK_MODELS) {
        /* only ?beta=true is meaningful; refuse rather than silently drop */
        kr_respond_error(r, 400, "invalid_request_error", "unsupported query string");
        return;
    }
    const char *tok;
    size_t n;
    if (!kr_req_take_credential(r, &tok, &n)) return;
    kr_auth_lookup(px, r, tok, n, on_auth);
}

/* ---- the gateway's start and stop ---- */

int kr_proxy_init(kr_proxy *px, kr_http_server *http, const kr_proxy_env *env, kr_diag *d)
{
    memset(px, 0, sizeof *px);
    px->loop = http->loop;
    px->http = http;
    px->metrics = &http->metrics;
    px->p = env->p;
    px->cfg = env->p.cfg;
    px->workers = env->workers;
    px->meter = env->meter;
    px->port = env->port;
    px->lim = env->limits;
    px->limits_sync = env->limits_sync;
    px->otel = env->otel;
    px->pools = env->pools;
    if (kr_upstream_init(&px->up, px->loop, px->cfg, kr_proxy_flush_dirty, px))
        return kr_fail(d, KR_ECONFIG, "the upstream client could not be created");
    kr_auth_init(&px->auth, px->cfg->token_cache_ms);
    if (px->limits_sync) kr_limits_start(px);
    return 0;
}

void kr_proxy_stop(kr_proxy *px)
{
    if (px->limits_sync) kr_limits_stop(px);
    kr_upstream_free(&px->up);
}

void kr_proxy_thread_end(void)
{
    kr_req_forward_thread_end();
    kr_buf_free(&log_line);
}

void kr_proxy_free(kr_proxy *px)
{
    kr_auth_free(&px->auth);
}
