/*
 * routes.c -- what the proxy does with a request, from routing to the log
 * line. See proxy.h for the tour.
 */
#include "proxy/proxy.h"
#include "admin/admin.h"
#include "core/cred.h"
#include "core/log.h"
#include "proxy/jscan.h"
#include "proxy/upclient.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITE_HIGH_WATER (256 * 1024)
#define OUT_CAP          (64 * 1024) /* staged bytes of a non-SSE body before a write */

static void finish(kr_req *r);
static void undirty(kr_req *r);

/* Lower-case hex of v, zero-padded to width digits (0: as few as needed),
 * into out (>= 17 bytes); returns the length. No printf on the hot path. */
static size_t put_hex(char *out, uint64_t v, unsigned width)
{
    static const char hx[] = "0123456789abcdef";
    char t[16];
    unsigned n = 0;
    do {
        t[n++] = hx[v & 15];
        v >>= 4;
    } while (v && n < 16);
    while (n < width && n < 16)
        t[n++] = '0';
    for (unsigned i = 0; i < n; i++)
        out[i] = t[n - 1 - i];
    return n;
}

/* ---- request objects ---- */

static kr_req *req_new(kr_conn *c, const kr_http_req *h)
{
    kr_server *s = c->srv;
    kr_req *r = kr_xcalloc(1, sizeof *r);
    r->srv = s;
    r->conn = c;
    r->http = h;
    r->refs = 1;
    r->keep_alive = h->keep_alive;
    r->t0_ns = kr_mono_ns();
    r->route = KR_ROUTE_OTHER;
    kr_server_request_id(s, r->id, sizeof r->id);
    kr_buf_init(&r->upbody, (size_t)s->cfg->max_body_bytes + 4096);
    kr_buf_init(&r->resp_head, 16 * 1024);
    kr_buf_init(&r->out, OUT_CAP + 64 * 1024 + 64);
    kr_buf_init(&r->json, (size_t)s->cfg->max_usage_event_bytes);
    s->metrics.inflight++;
    return r;
}

void kr_req_unref(kr_req *r)
{
    if (--r->refs > 0) return;
    undirty(r);
    if (r->admitted) {
        kr_usage none = {0};
        kr_limits_settle(r->srv, r, &none, 0); /* admitted, never served */
    }
    if (r->hdrs) curl_slist_free_all(r->hdrs);
    if (r->uc) kr_upstream_stop(r);
    if (r->easy) kr_upstream_release(r->srv, r->easy);
    kr_buf_free(&r->upbody);
    kr_buf_free(&r->resp_head);
    kr_buf_free(&r->out);
    kr_buf_free(&r->json);
    if (r->is_sse) kr_sse_usage_free(&r->sse);
    free(r);
}

static bool is_head(const kr_req *r)
{
    return r->http && kr_slice_eq(r->http->method, "HEAD");
}

void kr_respond(kr_req *r, int status, const char *ctype, const char *body, size_t n,
                const char *extra_headers)
{
    r->status = status;
    kr_conn *c = r->conn;
    if (!c) return;
    char head[2048];
    const char *idh = r->proto == KR_PROTO_OPENAI ? "x-request-id" : "request-id";
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                      "x-keyrail-request-id: %s\r\n%s: %s\r\n%s%s\r\n",
                      status, kr_status_text(status), ctype, n, r->id, idh, r->id,
                      extra_headers ? extra_headers : "", r->keep_alive ? "" : "connection: close\r\n");
    if (hl < 0 || (size_t)hl >= sizeof head) hl = 0; /* extra headers are keyrail's own: never */
    uv_buf_t b[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init((char *)body, (unsigned)n)};
    kr_conn_write(c, b, is_head(r) ? 1 : 2);
    finish(r);
}

void kr_respond_json(kr_req *r, int status, const char *body, size_t n, const char *extra_headers)
{
    kr_respond(r, status, "application/json", body, n, extra_headers);
}

/* ---- the log line and the end of a request ---- */

static void log_request(kr_req *r, const kr_usage *u, int64_t cost)
{
    if (kr_log_level > KR_LOG_INFO) return;
    /* one line per request on the hot path: appends, no printf */
    char ts[KR_LOG_TS_LEN];
    kr_log_ts(ts);
    uint64_t now = kr_mono_ns();
    static _Thread_local kr_buf b = KR_BUF_INIT(4096); /* reused: no allocation per line */
    kr_buf_reset(&b);
    kr_buf_puts(&b, "{\"ts\":\"");
    kr_buf_puts(&b, ts);
    kr_buf_puts(&b, "\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":\"");
    kr_buf_puts(&b, r->id);
    kr_buf_puts(&b, "\",\"method\":\"");
    if (r->http) {
        kr_buf_json_str(&b, r->http->method.p, r->http->method.n < 16 ? r->http->method.n : 16);
        kr_buf_puts(&b, "\",\"path\":\"");
        kr_buf_json_str(&b, r->http->path.p, r->http->path.n < 256 ? r->http->path.n : 256);
    }
    kr_buf_puts(&b, "\",\"route\":\"");
    kr_buf_puts(&b, kr_route_label(r->route));
    kr_buf_puts(&b, "\",\"status\":");
    kr_buf_put_i64(&b, r->status);
    if (r->cred_class[0]) {
        kr_buf_puts(&b, ",\"credential\":\"");
        kr_buf_puts(&b, r->cred_class);
        kr_buf_putc(&b, '"');
    }
    if (r->auth.ws_id) {
        kr_buf_puts(&b, ",\"workspace_id\":");
        kr_buf_put_i64(&b, r->auth.ws_id);
        kr_buf_puts(&b, ",\"org_id\":");
        kr_buf_put_i64(&b, r->auth.org_id);
    }
    if (r->model_id[0]) {
        kr_buf_puts(&b, ",\"model\":\"");
        kr_buf_json_str(&b, r->model_id, strlen(r->model_id));
        kr_buf_puts(&b, r->stream ? "\",\"stream\":true" : "\",\"stream\":false");
    }
    if (u) {
        kr_buf_puts(&b, ",\"input_tokens\":");
        kr_buf_put_u64(&b, u->input_tokens);
        kr_buf_puts(&b, ",\"output_tokens\":");
        kr_buf_put_u64(&b, u->output_tokens);
        kr_buf_puts(&b, ",\"cache_read_tokens\":");
        kr_buf_put_u64(&b, u->cache_read_tokens);
        kr_buf_puts(&b, ",\"cache_write_tokens\":");
        kr_buf_put_u64(&b, u->cache_write_tokens);
        kr_buf_puts(&b, ",\"cost_micros\":");
        kr_buf_put_i64(&b, cost);
    }
    kr_buf_puts(&b, ",\"latency_ms\":");
    kr_buf_put_ms3(&b, now - r->t0_ns);
    if (r->t_up_ns) {
        kr_buf_puts(&b, ",\"upstream_ms\":");
        kr_buf_put_ms3(&b, now - r->t_up_ns);
    }
    if (r->error_type[0]) {
        kr_buf_puts(&b, ",\"error\":\"");
        kr_buf_puts(&b, r->error_type);
        kr_buf_putc(&b, '"');
    }
    kr_buf_putc(&b, '}');
    kr_log_json_line(&b);
}

static void finish(kr_req *r)
{
    if (r->finished) return;
    r->finished = true;
    kr_server *s = r->srv;
    kr_metrics_request(&s->metrics, r->route, r->status);
    s->metrics.inflight--;
    if (!r->meter) log_request(r, NULL, 0);
    if (r->conn) kr_conn_request_done(r->conn);
}

/* ---- credentials ---- */

static const char *class_words(kr_cred_class cls)
{
    return cls == KR_CRED_ANTHROPIC_OAUTH     ? "an Anthropic OAuth token"
           : cls == KR_CRED_ANTHROPIC_API_KEY ? "an Anthropic API key"
           : cls == KR_CRED_OPENAI_KEY        ? "an OpenAI API key"
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
static bool take_credential(kr_req *r, const char **tok, size_t *n)
{
    const kr_http_req *h = r->http;
    kr_slice ws = {NULL, 0};
    /* the refusal names one extra credential: x-api-key's first, then
     * Authorization's, then any other header's */
    int bad_rank = 3;
    const kr_http_header *bad = NULL;
    kr_slice bad_v = {NULL, 0};
    kr_cred_class bad_cls = KR_CRED_NONE;
    for (unsigned i = 0; i < h->nheaders; i++) {
        const kr_http_header *hd = &h->headers[i];
        int rank = kr_slice_eq_ci(hd->name, "x-api-key")       ? 0
                   : kr_slice_eq_ci(hd->name, "authorization") ? 1
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
    if (bad) { /* something other than the one workspace token: refused */
        char fp[KR_FP_LEN], name[64];
        kr_cred_fingerprint(bad_v.p, bad_v.n, fp);
        /* Claude Code hides a 401 whose message says "x-api-key" behind "Not
         * logged in": name that header in words */
        if (bad_rank == 0)
            kr_strlcpy(name, "API key", sizeof name);
        else
            kr_memlcpy(name, sizeof name, bad->name.p, bad->name.n < 63 ? bad->name.n : 63);
        kr_strlcpy(r->cred_class, kr_cred_class_name(bad_cls), sizeof r->cred_class);
        kr_respond_error(r, 401, "authentication_error",
                         "%s was presented in the %s header (class %s, fingerprint %s); this "
                         "endpoint takes exactly one credential, a keyrail workspace token "
                         "(krws_…), and nothing was forwarded. Start the agent with `keyrail "
                         "run`, or check its environment (ANTHROPIC_AUTH_TOKEN, ANTHROPIC_API_KEY, "
                         "CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_CUSTOM_HEADERS, OPENAI_API_KEY).",
                         class_words(bad_cls), name, kr_cred_class_name(bad_cls), fp);
        return false;
    }
    if (!ws.p) {
        kr_strlcpy(r->cred_class, "none", sizeof r->cred_class);
        kr_respond_error(r, 401, "authentication_error",
                         "no credential: this endpoint takes a keyrail workspace token (krws_…) as "
                         "x-api-key or Authorization: Bearer");
        return false;
    }
    kr_strlcpy(r->cred_class, "workspace-token", sizeof r->cred_class);
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
    if (need_platform && a->route != KR_ROUTE_PLATFORM) {
        kr_respond_error(r, 403, "permission_error",
                         "this workspace uses its own key with provider '%s' (BYOK) and calls the "
                         "vendor directly; the platform proxy does not serve it",
                         a->provider);
        return false;
    }
    return true;
}

/* ---- local endpoints ---- */

static void respond_models(kr_req *r)
{
    kr_buf b = KR_BUF_INIT(1 << 20);
    const kr_registry *reg = r->srv->reg;
    bool first = true;
    if (r->proto == KR_PROTO_ANTHROPIC)
        kr_buf_puts(&b, "{\"data\":[");
    else
        kr_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    const char *first_id = NULL, *last_id = NULL;
    for (size_t i = 0; i < reg->nmodels; i++) {
        const kr_model *m = &reg->models[i];
        const kr_provider *p = &reg->providers[m->provider];
        if (!p->platform || p->proto != r->proto || !m->priced) continue;
        if (!first) kr_buf_putc(&b, ',');
        first = false;
        if (!first_id) first_id = m->id;
        last_id = m->id;
        if (r->proto == KR_PROTO_ANTHROPIC)
            kr_buf_printf(&b,
                          "{\"type\":\"model\",\"id\":\"%s\",\"display_name\":\"%s\","
                          "\"created_at\":\"2025-01-01T00:00:00Z\"}",
                          m->id, m->id);
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
    const kr_registry *reg;
    const kr_runtimes *rts;
    const kr_policy *pol;
    const kr_master_key *mk;
    const char *proxy_url, *default_model;
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
    kr_provision_ctx ctx = {e->reg, e->rts, e->pol, e->proxy_url, e->default_model, false};
    kr_provision_result res;
    rc = kr_provision(st, e->mk, &ctx, &ws, NULL, 0, e->token, &res, &d);
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

typedef struct {
    kr_job job;
    kr_req *req;
    int rc;
} ping_job;

static void ping_work(kr_store *st, kr_job *j)
{
    ((ping_job *)j)->rc = kr_store_ping(st, NULL);
}

static void ping_done(kr_job *j)
{
    ping_job *p = (ping_job *)j;
    kr_req *r = p->req;
    r->job = NULL;
    bool meter_ok = kr_meter_healthy(r->srv->meter);
    if (p->rc == 0 && meter_ok && !r->srv->draining) {
        static const char ok[] = "{\"status\":\"ready\"}";
        kr_respond_json(r, 200, ok, sizeof ok - 1, NULL);
    } else {
        kr_respond_error(r, 503, "api_error", "not ready: %s",
                         r->srv->draining ? "shutting down"
                         : p->rc          ? "the store is unreachable"
                                          : "usage writes are failing");
    }
}

static void respond_metrics(kr_req *r)
{
    kr_server *s = r->srv;
    char extra[512];
    snprintf(extra, sizeof extra,
             "# HELP keyrail_usage_queue Usage rows waiting to be written.\n"
             "# TYPE keyrail_usage_queue gauge\nkeyrail_usage_queue %zu\n"
             "# HELP keyrail_usage_rows_total Usage rows committed.\n"
             "# TYPE keyrail_usage_rows_total counter\nkeyrail_usage_rows_total %llu\n"
             "# HELP keyrail_auth_cache_total Token cache lookups.\n"
             "# TYPE keyrail_auth_cache_total counter\n"
             "keyrail_auth_cache_total{result=\"hit\"} "
             "%llu\nkeyrail_auth_cache_total{result=\"miss\"} %llu\n",
             kr_meter_depth(s->meter), (unsigned long long)kr_meter_committed(s->meter),
             (unsigned long long)s->auth.hits, (unsigned long long)s->auth.misses);
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_metrics_render(&s->metrics, extra, &b);
    r->status = 200;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
                      "content-length: %zu\r\n%s\r\n",
                      b.len, r->keep_alive ? "" : "connection: close\r\n");
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init(b.data, (unsigned)b.len)};
    kr_conn_write(r->conn, bufs, is_head(r) ? 1 : 2);
    kr_buf_free(&b);
    finish(r);
}

/* ---- forwarding ---- */

static void forward(kr_req *r);

static void on_auth(kr_req *r, const kr_auth_info *a)
{
    bool platform = r->rd->kind != KR_RK_ENV;
    if (!auth_ok(r, a, platform)) return;
    if (r->rd->metered && !kr_meter_healthy(r->srv->meter)) {
        kr_respond_error(r, 503, "api_error",
                         "usage cannot be recorded right now; keyrail refuses to serve unmetered");
        return;
    }
    switch (r->rd->kind) {
    case KR_RK_MODELS:
        respond_models(r);
        return;
    case KR_RK_ENV: {
        kr_server *s = r->srv;
        env_job *e = kr_xcalloc(1, sizeof *e);
        e->job.work = env_work;
        e->job.done = env_done;
        e->job.cleanup = env_cleanup;
        e->req = r;
        e->ws_id = a->ws_id;
        const char *tok;
        size_t n;
        if (!take_credential(r, &tok, &n)) {
            free(e);
            return;
        }
        kr_memlcpy(e->token, sizeof e->token, tok, n);
        e->reg = s->reg;
        e->rts = s->rts;
        e->pol = &s->pol;
        e->mk = &s->mk;
        e->proxy_url = s->proxy_url;
        e->default_model = s->cfg->concierge_default_model;
        r->job = &e->job;
        kr_workq_submit(s->workers, &e->job);
        return;
    }
    default:
        forward(r);
        return;
    }
}

/* Copies src with one replacement [off, off+len) -> rep into dst. */
static int splice_body(kr_buf *dst, const char *src, size_t n, size_t off, size_t len,
                       const char *rep, size_t replen)
{
    kr_buf_reset(dst);
    if (kr_buf_append(dst, src, off) || kr_buf_append(dst, rep, replen) ||
        kr_buf_append(dst, src + off + len, n - off - len))
        return KR_ETOOBIG;
    return 0;
}

/* Applies one splice to the current body (held in r->upbody afterwards). */
static int apply(kr_req *r, const char **b, size_t *bn, size_t off, size_t len, const char *rep,
                 size_t replen)
{
    kr_buf tmp = KR_BUF_INIT(r->upbody.max);
    int rc = splice_body(&tmp, *b, *bn, off, len, rep, replen);
    if (!rc) {
        kr_buf_free(&r->upbody);
        r->upbody = tmp;
        *b = r->upbody.data;
        *bn = r->upbody.len;
    } else {
        kr_buf_free(&tmp);
    }
    return rc;
}

/* Rewrites the body where it must change: the canonical model id in place
 * of an alias, and for a chat completions stream
 * stream_options.include_usage = true, so the vendor sends the usage chunk
 * (the Responses API always reports usage in its final event). Otherwise the body passes as
 * it came. */
static int rewrite_body(kr_req *r, const char **body, size_t *n, const kr_jval *model)
{
    const char *b = *body;
    size_t bn = *n;
    int rc;
    if (!kr_jval_str_eq(model, r->model_id)) {
        char rep[160];
        int rl = snprintf(rep, sizeof rep, "\"%s\"", r->model_id);
        if ((rc = apply(r, &b, &bn, (size_t)(model->p - b), model->n, rep, (size_t)rl))) return rc;
    }
    if (r->rd->wire == KR_WIRE_OPENAI_CHAT && r->stream) {
        const char *const k[] = {"stream_options"};
        kr_jval so;
        if (kr_json_object_get(b, bn, k, &so, 1)) return KR_EPARSE;
        if (so.type == KR_JSON_ABSENT) {
            const char *end = b + bn;
            while (end > b && end[-1] != '}')
                end--;
            if (end == b) return KR_EPARSE;
            static const char add[] = ",\"stream_options\":{\"include_usage\":true}";
            rc = apply(r, &b, &bn, (size_t)(end - 1 - b), 0, add, sizeof add - 1);
        } else if (so.type == KR_JSON_OBJECT) {
            const char *const k2[] = {"include_usage"};
            kr_jval iu;
            if (kr_json_object_get(so.p, so.n, k2, &iu, 1)) return KR_EPARSE;
            if (iu.type == KR_JSON_TRUE) {
                rc = 0;
            } else if (iu.type == KR_JSON_ABSENT) {
                const char *q = so.p + 1;
                while (q < so.p + so.n && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
                    q++;
                char rep[40];
                int rl =
                    snprintf(rep, sizeof rep, "\"include_usage\":true%s", *q == '}' ? "" : ",");
                rc = apply(r, &b, &bn, (size_t)(so.p + 1 - b), 0, rep, (size_t)rl);
            } else {
                rc = apply(r, &b, &bn, (size_t)(iu.p - b), iu.n, "true", 4);
            }
        } else {
            static const char obj[] = "{\"include_usage\":true}";
            rc = apply(r, &b, &bn, (size_t)(so.p - b), so.n, obj, sizeof obj - 1);
        }
        if (rc) return rc;
    }
    *body = b;
    *n = bn;
    return 0;
}

/* conn: the request's Connection header (or NULL); the headers it names are
 * hop-by-hop too. */
static bool header_forwarded(kr_slice name, const kr_http_header *conn)
{
    static const char *const drop[] = {"host",
                                       "content-length",
                                       "transfer-encoding",
                                       "connection",
                                       "keep-alive",
                                       "te",
                                       "trailer",
                                       "upgrade",
                                       "proxy-authorization",
                                       "proxy-authenticate",
                                       "proxy-connection",
                                       "authorization",
                                       "x-api-key",
                                       "expect",
                                       "accept-encoding",
                                       "cookie",
                                       "forwarded",
                                       "x-real-ip",
                                       "via",
                                       "content-type",
                                       "x-keyrail-request-id",
                                       "http2-settings"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (kr_slice_eq_ci(name, drop[i])) return false;
    /* some servers read '_' as '-': Content_Length could smuggle a length */
    if (memchr(name.p, '_', name.n)) return false;
    /* every x-forwarded-* (for, host, proto, port, prefix, server, …): the
     * client's say about its path is nobody's business upstream */
    if (name.n >= 12 && !strncasecmp(name.p, "x-forwarded-", 12)) return false;
    if (conn) {
        const char *p = conn->value.p, *e = p + conn->value.n;
        while (p < e) {
            while (p < e && (*p == ' ' || *p == ','))
                p++;
            const char *t = p;
            while (t < e && *t != ',' && *t != ' ')
                t++;
            if (t > p && (size_t)(t - p) == name.n && !strncasecmp(p, name.p, name.n))
                return false;
            p = t;
        }
    }
    return true;
}

static size_t on_up_header(char *buf, size_t size, size_t nitems, void *ud);
static size_t on_up_body(char *ptr, size_t size, size_t nmemb, void *ud);
static void on_up_timeout(uv_timer_t *t);

/* The output cap a request names (max_tokens, max_completion_tokens or
 * max_output_tokens, the largest when several), 0 when none: 0 on success,
 * else the 400 was sent. */
static int output_cap(kr_req *r, const kr_jval *v, const char *const *names, size_t n,
                      uint64_t *cap)
{
    *cap = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t x;
        if (v[i].type == KR_JSON_ABSENT || v[i].type == KR_JSON_NULL) continue;
        if (kr_jval_u64(&v[i], &x) || x == 0) {
            kr_respond_error(r, 400, "invalid_request_error", "%s must be a positive integer",
                             names[i]);
            return -1;
        }
        if (x > *cap) *cap = x;
    }
    return 0;
}

static void forward_native(kr_req *r, const char *url, const char *body, size_t n,
                           const kr_http_header *conn, const char *auth);

static void forward(kr_req *r)
{
    kr_server *s = r->srv;
    const kr_http_req *h = r->http;
    const kr_route_def *rd = r->rd;
    const char *body = h->body;
    size_t n = h->body_len;
    static const char *const keys[] = {"model",          "stream",
                                       "stream_options", "max_tokens",
                                       "max_completion_tokens", "max_output_tokens"};
    kr_jval v[6];
    if (kr_json_object_get(body, n, keys, v, 6)) {
        kr_respond_error(r, 400, "invalid_request_error",
                         "the request body must be one JSON object (valid JSON, no duplicate "
                         "model/stream/stream_options/max_tokens/max_completion_tokens/"
                         "max_output_tokens members)");
        return;
    }
    char model[128];
    if (v[0].type != KR_JSON_STRING || kr_jval_str(&v[0], model, sizeof model, NULL) || !model[0]) {
        kr_respond_error(r, 400, "invalid_request_error",
                         "model: a model name (string) is required");
        return;
    }
    kr_cred_class mc = kr_cred_find(model, strlen(model), NULL, NULL);
    if (mc != KR_CRED_NONE) { /* never echoed, never logged */
        kr_respond_error(r, 400, "invalid_request_error",
                         "model: the value holds a credential (class %s); it is not a model name",
                         kr_cred_class_name(mc));
        return;
    }
    if (v[1].type != KR_JSON_ABSENT && v[1].type != KR_JSON_TRUE && v[1].type != KR_JSON_FALSE) {
        kr_respond_error(r, 400, "invalid_request_error", "stream must be true or false");
        return;
    }
    r->stream = v[1].type == KR_JSON_TRUE;
    const kr_model *m = kr_registry_model(s->reg, model);
    const kr_provider *claim =
        m ? &s->reg->providers[m->provider] : kr_registry_claim_proto(s->reg, model, (int)r->proto);
    kr_strlcpy(r->model_id, m ? m->id : model, sizeof r->model_id);
    if (!claim || !claim->platform) {
        kr_respond_error(r, 403, "permission_error", "model '%s' is not available on the platform",
                         r->model_id);
        return;
    }
    if (claim->proto != r->proto) {
        kr_respond_error(r, 403, "permission_error",
                         "model '%s' is served over the %s protocol; use %s", r->model_id,
                         kr_proto_name(claim->proto),
                         claim->proto == KR_PROTO_OPENAI
                             ? "/openai/v1/chat/completions or /openai/v1/responses"
                             : "/anthropic/v1/messages");
        return;
    }
    if (!m || !m->priced) {
        kr_respond_error(r, 422, "invalid_request_error",
                         "model '%s' is platform-managed but has no price in the registry; it "
                         "cannot be served",
                         r->model_id);
        return;
    }
    size_t pi = m->provider;
    if (!s->platform_auth[pi]) {
        kr_respond_error(r, 503, "api_error",
                         "the platform key for provider '%s' is not configured", claim->name);
        return;
    }
    r->model = m;
    r->prov = claim;
    /* admission: allow-list, credits, rate limits (limits.h). The token
     * estimate is the prompt's size / 4 plus the output cap the request names
     * (any of the three spellings; 4096 without one). */
    uint64_t cap;
    if (output_cap(r, v + 3, keys + 3, 3, &cap)) return;
    uint64_t est = n / 4 + (cap ? cap : 4096);
    if (kr_limits_admit(s, r, est, rd->metered)) return;
    if (rewrite_body(r, &body, &n, &v[0])) {
        kr_respond_error(r, 413, "request_too_large", "the request body is too large");
        return;
    }
    /* URL: the registry's base URL and the route's upstream path; nothing the
     * tenant sends can change the host */
    char url[512];
    bool beta = h->query.n == 9 && !memcmp(h->query.p, "beta=true", 9);
    if (kr_strlcpy(url, claim->base_url, sizeof url) ||
        kr_strlcpy(url + strlen(url), rd->upstream, sizeof url - strlen(url)) ||
        (beta && kr_strlcpy(url + strlen(url), "?beta=true", sizeof url - strlen(url)))) {
        kr_respond_error(r, 502, "api_error", "the upstream URL of provider '%s' is too long",
                         claim->name);
        return;
    }
    const kr_http_header *conn = kr_http_find(h, "connection"); /* once, not per header */
    if (s->upc) {
        forward_native(r, url, body, n, conn, s->platform_auth[pi]);
        return;
    }
    /* headers */
    struct curl_slist *hl = NULL;
    char line[8300];
    for (unsigned i = 0; i < h->nheaders; i++) {
        if (!header_forwarded(h->headers[i].name, conn)) continue;
        if (h->headers[i].name.n + h->headers[i].value.n + 3 > sizeof line) continue;
        snprintf(line, sizeof line, "%.*s: %.*s", (int)h->headers[i].name.n, h->headers[i].name.p,
                 (int)h->headers[i].value.n, h->headers[i].value.p);
        hl = curl_slist_append(hl, line);
    }
    hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    hl = curl_slist_append(hl, "Accept-Encoding: identity");
    hl = curl_slist_append(hl, s->platform_auth[pi]);
    r->hdrs = hl;
    CURL *e = kr_upstream_easy(s);
    r->easy = e;
    if (kr_upstream_url(s, e, url)) {
        kr_respond_error(r, 502, "api_error", "the upstream URL of provider '%s' is not valid",
                         claim->name);
        return;
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_up_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_up_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->cfg->upstream_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 16384L); /* one per open transfer */
    /* the body leaves in one send when it fits libcurl's upload buffer (at
     * most 2 MiB); the buffer is freed when the option is set for the next
     * transfer of this handle */
    long ulbuf = n > 16384 ? (long)(n < (2u << 20) ? n : (2u << 20)) : 16384L;
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, ulbuf);
    if (!s->env_proxy) curl_easy_setopt(e, CURLOPT_PROXY, "");
    r->meter = rd->metered;
    r->t_up_ns = kr_mono_ns();
    if (kr_upstream_start(s, e)) {
        kr_respond_error(r, 502, "api_error", "the upstream request could not be started");
        return;
    }
    r->upstream_active = true;
    r->refs++; /* the transfer holds the request until kr_req_upstream_done */
    r->conn->uptimer.data = r->conn;
    uv_timer_start(&r->conn->uptimer, on_up_timeout, (uint64_t)s->cfg->upstream_timeout_ms, 0);
}

/* The same request through keyrail's own client (upclient.h): the same
 * headers in the same order, the body as it is (not copied). */
static void forward_native(kr_req *r, const char *url, const char *body, size_t n,
                           const kr_http_header *conn, const char *auth)
{
    kr_server *s = r->srv;
    const kr_http_req *h = r->http;
    static _Thread_local kr_buf hb = KR_BUF_INIT(2u << 20); /* reused: no allocation per request */
    kr_buf_reset(&hb);
    for (unsigned i = 0; i < h->nheaders; i++) {
        const kr_http_header *f = &h->headers[i];
        if (!header_forwarded(f->name, conn)) continue;
        kr_buf_append(&hb, f->name.p, f->name.n);
        kr_buf_append(&hb, ": ", 2);
        kr_buf_append(&hb, f->value.p, f->value.n);
        kr_buf_append(&hb, "\r\n", 2);
    }
    kr_buf_puts(&hb, "Content-Type: application/json\r\nAccept-Encoding: identity\r\n");
    /* the platform key line comes from the environment: one line, or nothing is sent */
    if (strpbrk(auth, "\r\n") || kr_buf_puts(&hb, auth) || kr_buf_append(&hb, "\r\n", 2)) {
        kr_respond_error(r, 503, "api_error",
                         "the platform key for provider '%s' is not usable", r->prov->name);
        return;
    }
    kr_upc_call call = {url, hb.data, hb.len, body, n,
                        /* count_tokens is free and changes nothing: safe to repeat */
                        r->rd->id == KR_ROUTE_ANTHROPIC_COUNT_TOKENS, on_up_header, on_up_body};
    r->meter = r->rd->metered;
    r->t_up_ns = kr_mono_ns();
    int rc = kr_upc_start(s->upc, r, &call);
    if (rc) {
        kr_respond_error(r, 502, "api_error",
                         rc == KR_EINVAL ? "the upstream URL of provider '%s' is not valid"
                                         : "the upstream request of provider '%s' could not be "
                                           "started",
                         r->prov->name);
        return;
    }
    r->upstream_active = true;
    r->refs++; /* the transfer holds the request until kr_req_upstream_done */
    r->conn->uptimer.data = r->conn;
    uv_timer_start(&r->conn->uptimer, on_up_timeout, (uint64_t)s->cfg->upstream_timeout_ms, 0);
}

/* ---- the upstream response ---- */

static void up_activity(kr_req *r)
{
    if (r->conn && !r->paused)
        uv_timer_start(&r->conn->uptimer, on_up_timeout, (uint64_t)r->srv->cfg->upstream_timeout_ms,
                       0);
}

static bool passthrough_header(const char *name, size_t n)
{
    static const char *const exact[] = {"content-type", "request-id", "x-request-id",
                                        "retry-after"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strlen(exact[i]) == n && !strncasecmp(name, exact[i], n)) return true;
    static const char *const prefixes[] = {"anthropic-", "x-ratelimit-", "openai-"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t l = strlen(prefixes[i]);
        if (n > l && !strncasecmp(name, prefixes[i], l)) return true;
    }
    return false;
}

static void send_head(kr_req *r)
{
    if (r->head_sent || !r->conn) return;
    r->head_sent = true;
    kr_server *s = r->srv;
    double lat = (double)(kr_mono_ns() - r->t_up_ns) / 1e9;
    kr_metrics_upstream_latency(&s->metrics, lat);
    r->status = r->up_status;
    r->chunked = r->http->minor >= 1;
    if (!r->chunked) r->keep_alive = false;
    /* staged, not written: it leaves with the first body bytes (same loop
     * turn, one syscall) or with the end of the response */
    kr_buf_puts(&r->out, "HTTP/1.1 ");
    kr_buf_put_i64(&r->out, r->up_status);
    kr_buf_putc(&r->out, ' ');
    kr_buf_puts(&r->out, kr_status_text(r->up_status));
    kr_buf_append(&r->out, "\r\n", 2);
    kr_buf_append(&r->out, r->resp_head.data ? r->resp_head.data : "", r->resp_head.len);
    kr_buf_puts(&r->out, "x-keyrail-request-id: ");
    kr_buf_puts(&r->out, r->id);
    kr_buf_append(&r->out, "\r\n", 2);
    if (r->chunked) kr_buf_puts(&r->out, "transfer-encoding: chunked\r\n");
    if (!r->keep_alive) kr_buf_puts(&r->out, "connection: close\r\n");
    kr_buf_append(&r->out, "\r\n", 2);
    if (r->is_sse) s->metrics.open_streams++;
}

static void undirty(kr_req *r)
{
    if (!r->dirty) return;
    r->dirty = false;
    for (kr_req **p = &r->srv->dirty; *p; p = &(*p)->dirty_next)
        if (*p == r) {
            *p = r->dirty_next;
            break;
        }
}

/* Writes what is staged for the client. */
static void out_flush(kr_req *r)
{
    undirty(r);
    if (r->conn && r->out.len) {
        uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
        kr_conn_write(r->conn, &b, 1);
    }
    kr_buf_reset(&r->out);
}

void kr_req_flush_dirty(kr_server *s)
{
    while (s->dirty)
        out_flush(s->dirty);
}

static size_t on_up_header(char *buf, size_t size, size_t nitems, void *ud)
{
    kr_req *r = ud;
    size_t n = size * nitems;
    up_activity(r);
    if (n >= 5 && !memcmp(buf, "HTTP/", 5)) {
        const char *sp = memchr(buf, ' ', n);
        r->up_status = 0;
        if (sp && sp + 4 <= buf + n)
            r->up_status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        kr_buf_reset(&r->resp_head);
        r->is_sse = false;
        return n;
    }
    if (n <= 2) { /* end of a header block */
        if (r->up_status >= 200) send_head(r);
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon || r->up_status < 200) return n;
    size_t nl = (size_t)(colon - buf);
    if (!passthrough_header(buf, nl)) return n;
    if (nl == 12 && !strncasecmp(buf, "content-type", 12)) {
        const char *v = colon + 1;
        while (v < buf + n && *v == ' ')
            v++;
        if ((size_t)(buf + n - v) >= 17 && !strncasecmp(v, "text/event-stream", 17)) {
            r->is_sse = true;
            kr_sse_usage_init_wire(&r->sse, r->rd->wire, (size_t)r->srv->cfg->max_usage_event_bytes);
        }
    }
    if (kr_buf_append(&r->resp_head, buf, n)) return 0; /* absurd upstream head: abort */
    return n;
}

static size_t on_up_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    kr_req *r = ud;
    size_t n = size * nmemb;
    if (!r->conn) return 0;
    if (!r->head_sent) send_head(r);
    if (r->conn->write_pending + r->out.len > WRITE_HIGH_WATER) {
        out_flush(r);
        r->paused = true;
        uv_timer_stop(&r->conn->uptimer);
        return CURL_WRITEFUNC_PAUSE;
    }
    up_activity(r);
    if (r->is_sse)
        kr_sse_usage_feed(&r->sse, ptr, n);
    else if (r->up_status < 300 && kr_buf_append(&r->json, ptr, n))
        r->usage_unreadable = true; /* over the cap: the client gets it, usage cannot be read */
    if (n == 0) return 0;
    if (r->chunked) {
        char pre[24];
        size_t pl = put_hex(pre, n, 0);
        pre[pl++] = '\r';
        pre[pl++] = '\n';
        kr_buf_append(&r->out, pre, pl);
        kr_buf_append(&r->out, ptr, n);
        kr_buf_append(&r->out, "\r\n", 2);
    } else {
        kr_buf_append(&r->out, ptr, n);
    }
    /* a stream goes out after each curl event (every chunk that arrived in
     * it, one write); a JSON body once it is whole (or OUT_CAP is staged) */
    if (r->out.len >= OUT_CAP)
        out_flush(r);
    else if (r->is_sse && !r->dirty) {
        r->dirty = true;
        r->dirty_next = r->srv->dirty;
        r->srv->dirty = r;
    }
    return n;
}

void kr_req_resume_upstream(kr_req *r)
{
    if (!r->paused || (!r->easy && !r->uc)) return;
    r->paused = false;
    up_activity(r);
    if (r->uc)
        kr_upc_resume(r);
    else
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
}

static void on_up_timeout(uv_timer_t *t)
{
    kr_conn *c = t->data;
    kr_req *r = c->req;
    if (!r || !r->upstream_active) return;
    r->timed_out = true;
    kr_upstream_stop(r);
    kr_req_upstream_done(r, CURLE_OPERATION_TIMEDOUT);
}

/* ---- metering and the end of a proxied response ---- */

static void end_response(kr_req *r)
{
    if (r->conn && r->chunked && r->head_sent) kr_buf_append(&r->out, "0\r\n\r\n", 5);
    out_flush(r);
    if (r->is_sse && r->head_sent) r->srv->metrics.open_streams--;
    finish(r);
}

/* The usage writer committed rows of this org worth cost (a batch's sum). */
static void on_metered(void *arg, int64_t org_id, int64_t cost)
{
    kr_limits_committed(arg, org_id, cost);
}

/* Usage of what passed, recorded once per request: journaled (when
 * server.usage_sync) before the response ends, committed in the background. */
static void record_usage(kr_req *r, const char *status)
{
    kr_usage u = {0};
    if (r->is_sse) {
        kr_sse_usage_finish(&r->sse);
        u = r->sse.usage;
        if (r->sse.usage_lost) r->usage_unreadable = true;
    } else if (r->json.len && !r->usage_unreadable) {
        if (kr_usage_from_json_wire(r->rd->wire, r->json.data, r->json.len, &u, NULL, 0))
            r->usage_unreadable = true;
    }
    /* a complete metered response must say what it used: when it cannot be
     * read the row still exists, says so, and the operator is told */
    if (r->meter && !strcmp(status, "complete") && !u.seen) r->usage_unreadable = true;
    if (r->meter && r->usage_unreadable) {
        r->srv->metrics.usage_unreadable++;
        if (!strcmp(status, "complete")) status = "unreadable";
        KR_WARN("request %s: the usage of this response could not be read (%s); its row is "
                "recorded with status unreadable",
                r->id,
                r->is_sse ? (r->sse.usage_lost ? "its final event was over server.max_usage_event_bytes"
                                               : "no usage event")
                : r->json.len >= r->json.max ? "its body was over server.max_usage_event_bytes"
                                             : "no usage object in its body");
    }
    int64_t cost = r->model ? kr_model_cost(r->model, &u) : 0;
    kr_metrics_tokens(&r->srv->metrics, &u);
    log_request(r, &u, cost);
    if (!r->meter) {
        kr_limits_settle(r->srv, r, &u, 0);
        return;
    }
    r->cost = cost;
    kr_limits_settle(r->srv, r, &u, cost);
    kr_usage_rec rec;
    memset(&rec, 0, sizeof rec);
    kr_strlcpy(rec.request_id, r->id, sizeof rec.request_id);
    rec.org_id = r->auth.org_id;
    rec.workspace_id = r->auth.ws_id;
    kr_strlcpy(rec.provider, r->prov ? r->prov->name : "", sizeof rec.provider);
    kr_strlcpy(rec.model, r->model_id, sizeof rec.model);
    rec.u = u;
    rec.cost_micros = cost;
    kr_strlcpy(rec.status, status, sizeof rec.status);
    int64_t now = kr_now_ms();
    rec.finished_at = now;
    rec.started_at = now - (int64_t)((kr_mono_ns() - r->t0_ns) / 1000000);
    kr_meter_submit(r->srv->meter, &rec, on_metered, r->srv);
}

void kr_req_upstream_done(kr_req *r, CURLcode rc)
{
    kr_server *s = r->srv;
    if (!r->upstream_active) return;
    r->upstream_active = false;
    if (r->conn) uv_timer_stop(&r->conn->uptimer);
    if (r->hdrs) {
        curl_slist_free_all(r->hdrs);
        r->hdrs = NULL;
    }
    if (r->easy) {
        kr_upstream_release(s, r->easy);
        r->easy = NULL;
    }
    if (rc == CURLE_OK && !r->head_sent && r->conn) send_head(r); /* empty body */
    if (rc == CURLE_OK) {
        bool ok = r->up_status >= 200 && r->up_status < 300;
        bool complete = ok && (r->is_sse ? r->sse.done : true);
        const char *st = !ok ? "error" : complete ? "complete" : "partial";
        if (r->up_status >= 400) kr_strlcpy(r->error_type, "upstream_status", sizeof r->error_type);
        record_usage(r, st);
        end_response(r);
        kr_req_unref(r);
        return;
    }
    s->metrics.upstream_errors++;
    bool timeout = r->timed_out || rc == CURLE_OPERATION_TIMEDOUT;
    kr_strlcpy(r->error_type, timeout ? "upstream_timeout" : "upstream_unreachable",
               sizeof r->error_type);
    if (!r->head_sent) {
        /* nothing reached the client yet: a clean error */
        if (r->meter) {
            r->meter = false; /* nothing was served */
        }
        if (timeout)
            kr_respond_error(r, 504, "api_error",
                             "the upstream vendor did not answer within %lld ms",
                             (long long)s->cfg->upstream_timeout_ms);
        else {
            char why[400];
            kr_upstream_describe(rc, r->up_err, why, sizeof why); /* TLS: the cause, named */
            kr_respond_error(r, 502, "api_error", "%s", why);
        }
        kr_req_unref(r);
        return;
    }
    /* mid-response: tell an SSE client in its own protocol, then end cleanly;
     * a cut JSON body cannot be repaired, so the connection is closed */
    if (r->is_sse && r->conn) {
        char ev[512];
        int el = r->proto == KR_PROTO_OPENAI
                     ? snprintf(ev, sizeof ev,
                                "data: {\"error\":{\"message\":\"the upstream stream %s\","
                                "\"type\":\"api_error\",\"code\":null}}\n\n",
                                timeout ? "stalled" : "broke off")
                     : snprintf(ev, sizeof ev,
                                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                                "\"api_error\",\"message\":\"the upstream stream %s\"}}\n\n",
                                timeout ? "stalled" : "broke off");
        char pre[16];
        int pl = snprintf(pre, sizeof pre, "%x\r\n", el);
        if (r->chunked) kr_buf_append(&r->out, pre, (size_t)pl);
        kr_buf_append(&r->out, ev, (size_t)el);
        if (r->chunked) kr_buf_append(&r->out, "\r\n", 2);
    } else if (r->conn) {
        r->keep_alive = false;
        r->chunked = false; /* no terminator: the client sees a truncated body */
    }
    record_usage(r, "partial");
    end_response(r);
    kr_req_unref(r);
}

void kr_req_abort(kr_req *r)
{
    r->client_gone = true;
    if (r->job) {
        kr_job_cancel(r->job);
        r->job = NULL;
    }
    if (r->upstream_active) {
        r->upstream_active = false;
        kr_upstream_stop(r);
        kr_upstream_release(r->srv, r->easy);
        r->easy = NULL;
        if (r->is_sse && r->head_sent) r->srv->metrics.open_streams--;
        r->status = 499;
        kr_strlcpy(r->error_type, "client_closed", sizeof r->error_type);
        record_usage(r, "client_closed");
        r->finished = true;
        kr_metrics_request(&r->srv->metrics, r->route, 499);
        r->srv->metrics.inflight--;
        kr_req_unref(r); /* the transfer's reference */
        return;
    }
    if (!r->finished) {
        r->finished = true;
        if (!r->status) r->status = 499;
        kr_metrics_request(&r->srv->metrics, r->route, r->status);
        r->srv->metrics.inflight--;
    }
}

/* ---- routing ---- */

static const kr_route_def routes[] = {
    /* path, method, metrics id, label, protocol, kind, wire, upstream path, metered */
    {"/anthropic/v1/messages", "POST", KR_ROUTE_ANTHROPIC_MESSAGES, "anthropic_messages",
     KR_PROTO_ANTHROPIC, KR_RK_UPSTREAM, KR_WIRE_ANTHROPIC, "/v1/messages", true},
    {"/anthropic/v1/messages/count_tokens", "POST", KR_ROUTE_ANTHROPIC_COUNT_TOKENS,
     "anthropic_count_tokens", KR_PROTO_ANTHROPIC, KR_RK_UPSTREAM, KR_WIRE_ANTHROPIC,
     "/v1/messages/count_tokens", false},
    {"/openai/v1/chat/completions", "POST", KR_ROUTE_OPENAI_CHAT, "openai_chat_completions",
     KR_PROTO_OPENAI, KR_RK_UPSTREAM, KR_WIRE_OPENAI_CHAT, "/v1/chat/completions", true},
    {"/openai/v1/responses", "POST", KR_ROUTE_OPENAI_RESPONSES, "openai_responses",
     KR_PROTO_OPENAI, KR_RK_UPSTREAM, KR_WIRE_OPENAI_RESPONSES, "/v1/responses", true},
    {"/anthropic/v1/models", "GET", KR_ROUTE_ANTHROPIC_MODELS, "anthropic_models",
     KR_PROTO_ANTHROPIC, KR_RK_MODELS, 0, NULL, false},
    {"/openai/v1/models", "GET", KR_ROUTE_OPENAI_MODELS, "openai_models", KR_PROTO_OPENAI,
     KR_RK_MODELS, 0, NULL, false},
    {"/v1/workspace/env", "GET", KR_ROUTE_WORKSPACE_ENV, "workspace_env", KR_PROTO_ANTHROPIC,
     KR_RK_ENV, 0, NULL, false},
    {"/healthz", "GET", KR_ROUTE_HEALTHZ, "healthz", KR_PROTO_ANTHROPIC, KR_RK_HEALTHZ, 0, NULL,
     false},
    {"/readyz", "GET", KR_ROUTE_READYZ, "readyz", KR_PROTO_ANTHROPIC, KR_RK_READYZ, 0, NULL, false},
    {"/metrics", "GET", KR_ROUTE_METRICS, "metrics", KR_PROTO_ANTHROPIC, KR_RK_METRICS, 0, NULL,
     false},
};

const char *kr_route_label(kr_route_id id)
{
    if (id == KR_ROUTE_ADMIN) return "admin";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (routes[i].id == id) return routes[i].label;
    return "other";
}

static bool is_websocket_upgrade(const kr_http_req *h)
{
    const kr_http_header *u = kr_http_find(h, "upgrade");
    return u && u->value.n >= 9 && !strncasecmp(u->value.p, "websocket", 9);
}

void kr_req_start(kr_conn *c, const kr_http_req *h)
{
    kr_req *r = req_new(c, h);
    c->req = r;
    if (kr_admin_path(h)) {
        /* the admin API and the console only where server.admin_listen says */
        if (c->admin) kr_admin_start(r);
        else
            kr_respond_error(r, 404, "not_found_error",
                             "the admin API and the console are not served on this listener "
                             "(server.admin_listen)");
        return;
    }
    const kr_route_def *rd = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (kr_slice_eq(h->path, routes[i].path)) {
            rd = &routes[i];
            break;
        }
    if (!rd) {
        r->proto = kr_slice_starts(h->path, "/openai/") ? KR_PROTO_OPENAI : KR_PROTO_ANTHROPIC;
        if (kr_slice_eq(h->path, "/") &&
            (kr_slice_eq(h->method, "GET") || kr_slice_eq(h->method, "HEAD"))) {
            static const char hello[] = "{\"service\":\"keyrail\"}";
            kr_respond_json(r, 200, hello, sizeof hello - 1, NULL);
            return;
        }
        kr_respond_error(r, 404, r->proto == KR_PROTO_OPENAI ? "invalid_request_error" : "not_found_error",
                         "no route for %.*s %.*s", (int)(h->method.n < 16 ? h->method.n : 16),
                         h->method.p, (int)(h->path.n < 128 ? h->path.n : 128), h->path.p);
        return;
    }
    r->rd = rd;
    r->route = rd->id;
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
    switch (rd->kind) {
    case KR_RK_HEALTHZ: {
        static const char ok[] = "{\"status\":\"ok\"}";
        kr_respond_json(r, 200, ok, sizeof ok - 1, NULL);
        return;
    }
    case KR_RK_READYZ: {
        ping_job *p = kr_xcalloc(1, sizeof *p);
        p->job.work = ping_work;
        p->job.done = ping_done;
        p->req = r;
        r->job = &p->job;
        kr_workq_submit(c->srv->workers, &p->job);
        return;
    }
    case KR_RK_METRICS:
        respond_metrics(r);
        return;
    default:
        break;
    }
    if (h->query.n && !(h->query.n == 9 && !memcmp(h->query.p, "beta=true", 9)) &&
        rd->kind != KR_RK_MODELS) {
        /* only ?beta=true is meaningful; refuse rather than silently drop */
        kr_respond_error(r, 400, "invalid_request_error", "unsupported query string");
        return;
    }
    const char *tok;
    size_t n;
    if (!take_credential(r, &tok, &n)) return;
    kr_auth_lookup(c->srv, r, tok, n, on_auth);
}
