/*
 * forward.c -- a checked request's way to the vendor and the response's way
 * back: the body scan and rewrite, admission, the upstream request
 * (headers, the platform key, the URL from the registry), the relay with
 * back-pressure, and the usage recorded at the end. See proxy.h.
 */
#include "proxy/proxy.h"
#include "core/cred.h"
#include "core/log.h"
#include "proxy/jscan.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITE_HIGH_WATER (256 * 1024)
#define OUT_CAP          (64 * 1024) /* staged bytes of a non-SSE body before a write */

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
                                       "http2-settings",
                                       /* the Gemini API's credentials and identity */
                                       "x-goog-api-key",
                                       "x-goog-user-project",
                                       "x-gemini-api-privileged-user-id"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (kr_slice_eq_ci(name, drop[i])) return false;
    /* some servers read '_' as '-': Content_Length could smuggle a length */
    if (memchr(name.p, '_', name.n)) return false;
    /* every x-forwarded-* (for, host, proto, port, prefix, server, …): the
     * client's say about its path is nobody's business upstream */
    if (name.n >= 12 && !strncasecmp(name.p, "x-forwarded-", 12)) return false;
    /* Vertex AI's per-request overrides (X-Vertex-AI-LLM-Request-Type, …) */
    if (name.n >= 16 && !strncasecmp(name.p, "x-vertex-ai-llm-", 16)) return false;
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

static const char *use_route(kr_proto p)
{
    return p == KR_PROTO_OPENAI   ? "/openai/v1/chat/completions or /openai/v1/responses"
           : p == KR_PROTO_GEMINI ? "/gemini/v1beta/models/{model}:generateContent"
                                  : "/anthropic/v1/messages";
}

/* A session the client names (its requests keep one platform key, so the
 * vendor's prompt cache stays warm): the hash of the first of these headers,
 * 0 for none. */
static uint64_t session_hash(const kr_http_req *h)
{
    static const char *const names[] = {"x-claude-code-session-id", "session_id", "x-session-id",
                                        "conversation_id", "x-conversation-id"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const kr_http_header *f = kr_http_find(h, names[i]);
        if (!f || !f->value.n) continue;
        uint64_t x = kr_fnv64(f->value.p, f->value.n);
        return x ? x : 1;
    }
    return 0;
}

/* The platform route: the model must be a priced platform model of the
 * route's protocol; the platform's key for its provider. Sets r->model,
 * r->prov and r->model_id; NULL once answered. */
static const char *platform_target(kr_req *r, const char *model)
{
    kr_proxy *s = r->px;
    const kr_registry *reg = s->p.reg;
    const kr_model *m = kr_registry_model(reg, model);
    const kr_provider *claim =
        m ? &reg->providers[m->provider] : kr_registry_claim_proto(reg, model, (int)r->proto);
    kr_strlcpy(r->model_id, m ? m->id : model, sizeof r->model_id);
    if (!claim || !claim->platform) {
        kr_respond_error(r, 403, "permission_error", "model '%s' is not available on the platform",
                         r->model_id);
        return NULL;
    }
    if (claim->proto != r->proto) {
        kr_respond_error(r, 403, "permission_error",
                         "model '%s' is served over the %s protocol; use %s", r->model_id,
                         kr_proto_name(claim->proto), use_route(claim->proto));
        return NULL;
    }
    if (!m || !m->priced) {
        kr_respond_error(r, 422, "invalid_request_error",
                         "model '%s' is platform-managed but has no price in the registry; it "
                         "cannot be served",
                         r->model_id);
        return NULL;
    }
    r->model = m;
    r->prov = claim;
    r->pool_provider = m->provider;
    r->pool_session = session_hash(r->x.http);
    r->pool_key = kr_pool_pick(s->pools, m->provider, r->pool_session, 0);
    if (r->pool_key < 0) {
        kr_respond_error(r, 503, "api_error",
                         "no platform key of provider '%s' is usable (not configured, or every key "
                         "of its pool was refused by the vendor)",
                         claim->name);
        return NULL;
    }
    return kr_pool_auth(s->pools, m->provider, r->pool_key);
}

/* BYOK through the proxy: the workspace's own provider, whatever model name
 * the agent asks for (the org pays its vendor; allow-lists and rate limits
 * apply), with the org's key the lookup unsealed. A model of the registry
 * keeps its canonical id and price only when it is that provider's own. */
static const char *byok_target(kr_req *r, const char *model)
{
    const kr_registry *reg = r->px->p.reg;
    const kr_provider *p = kr_registry_provider(reg, r->auth.provider);
    const kr_model *m = kr_registry_model(reg, model);
    if (m && (!p || &reg->providers[m->provider] != p)) m = NULL;
    kr_strlcpy(r->model_id, m ? m->id : model, sizeof r->model_id);
    if (!p || !r->auth.upstream_auth) {
        kr_respond_error(r, 503, "api_error", "this workspace's BYOK provider '%s' is not usable",
                         r->auth.provider);
        return NULL;
    }
    if (p->proto != r->proto) {
        kr_respond_error(r, 403, "permission_error",
                         "this workspace's provider '%s' speaks the %s protocol; use %s", p->name,
                         kr_proto_name(p->proto), use_route(p->proto));
        return NULL;
    }
    r->model = m && m->priced ? m : NULL;
    r->prov = p;
    return r->auth.upstream_auth;
}

static void upstream_done(kr_upx *x, CURLcode rc);

/* What the body says, for the Anthropic and OpenAI routes: the model (in
 * model[]; its JSON value in *mv, for the rewrite), stream, and the output
 * cap. False once answered (400). */
static bool body_facts(kr_req *r, const char *body, size_t n, char model[128], kr_jval *mv,
                       uint64_t *cap)
{
    static const char *const keys[] = {"model",          "stream",
                                       "stream_options", "max_tokens",
                                       "max_completion_tokens", "max_output_tokens"};
    kr_jval v[6];
    if (kr_json_object_get(body, n, keys, v, 6)) {
        kr_respond_error(r, 400, "invalid_request_error",
                         "the request body must be one JSON object (valid JSON, no duplicate "
                         "model/stream/stream_options/max_tokens/max_completion_tokens/"
                         "max_output_tokens members)");
        return false;
    }
    if (v[0].type != KR_JSON_STRING || kr_jval_str(&v[0], model, 128, NULL) || !model[0]) {
        kr_respond_error(r, 400, "invalid_request_error",
                         "model: a model name (string) is required");
        return false;
    }
    if (v[1].type != KR_JSON_ABSENT && v[1].type != KR_JSON_TRUE && v[1].type != KR_JSON_FALSE) {
        kr_respond_error(r, 400, "invalid_request_error", "stream must be true or false");
        return false;
    }
    r->stream = v[1].type == KR_JSON_TRUE;
    *mv = v[0];
    return output_cap(r, v + 3, keys + 3, 3, cap) == 0;
}

/* The Gemini API: the model is the path's, stream is the route, the output
 * cap is generationConfig.maxOutputTokens. */
static bool gemini_facts(kr_req *r, const char *body, size_t n, char model[128], uint64_t *cap)
{
    static const char *const keys[] = {"generationConfig"}, *const gkeys[] = {"maxOutputTokens"};
    kr_jval g, m;
    if (kr_json_object_get(body, n, keys, &g, 1) ||
        (g.type == KR_JSON_OBJECT && kr_json_object_get(g.p, g.n, gkeys, &m, 1))) {
        kr_respond_error(r, 400, "invalid_request_error",
                         "the request body must be one JSON object (valid JSON, no duplicate "
                         "generationConfig/maxOutputTokens members)");
        return false;
    }
    if (g.type != KR_JSON_OBJECT && g.type != KR_JSON_ABSENT && g.type != KR_JSON_NULL) {
        kr_respond_error(r, 400, "invalid_request_error", "generationConfig must be an object");
        return false;
    }
    kr_strlcpy(model, r->path_model, 128);
    r->stream = r->rd->id == KR_ROUTE_GEMINI_STREAM;
    static const char *const names[] = {"generationConfig.maxOutputTokens"};
    if (g.type != KR_JSON_OBJECT) m.type = KR_JSON_ABSENT;
    return output_cap(r, &m, names, 1, cap) == 0;
}

/* The upstream URL: the registry's base URL and the route's path; nothing
 * the tenant sends can change the host. False once answered. */
static bool upstream_url(kr_req *r, char *url, size_t cap)
{
    const kr_http_req *h = r->x.http;
    const kr_provider *claim = r->prov;
    int rc;
    /* the platform's deployment this attempt uses, or the provider's own */
    const char *base = r->pool_key >= 0 ? kr_pool_base(r->px->pools, r->pool_provider, r->pool_key)
                                        : claim->base_url;
    if (r->proto == KR_PROTO_GEMINI) /* /v1beta/models/{model}:{action}[?alt=sse] */
        rc = kr_snprintf(url, cap, "%s/%s/models/%s%s%s", base, r->api_version,
                         r->model_id, r->rd->upstream, r->alt_sse ? "?alt=sse" : "");
    else
        rc = kr_snprintf(url, cap, "%s%s%s", base, r->rd->upstream,
                         h->query.n == 9 && !memcmp(h->query.p, "beta=true", 9) ? "?beta=true" : "");
    if (rc) {
        kr_respond_error(r, 502, "api_error", "the upstream URL of provider '%s' is too long",
                         claim->name);
        return false;
    }
    return true;
}

/* the upstream request's headers, in a buffer each loop thread reuses: no
 * allocation per request */
static _Thread_local kr_buf hb = KR_BUF_INIT(2u << 20);

void kr_req_forward_thread_end(void)
{
    kr_buf_free(&hb);
}

/* ---- traces ---- */

/* The span starts: the client's trace continues (a valid traceparent) or a
 * new one begins; keyrail's span id is the vendor's parent. */
static void trace_begin(kr_req *r, const kr_http_req *h)
{
    const kr_http_header *tp = kr_http_find(h, "traceparent");
    r->traced = true;
    r->trace_parent = tp && !kr_traceparent_parse(tp->value.p, tp->value.n, r->trace_id,
                                                  r->parent_id, &r->trace_flags);
    if (!r->trace_parent) {
        do
            randombytes_buf(r->trace_id, sizeof r->trace_id);
        while (!r->trace_id[0] && !r->trace_id[15]); /* never all zero */
        r->trace_flags = 1; /* sampled: keyrail exports every span */
    }
    do
        randombytes_buf(r->span_id, sizeof r->span_id);
    while (!r->span_id[0] && !r->span_id[7]);
}

static const char *gen_ai_system(const char *provider)
{
    if (!strcmp(provider, "google")) return "gcp.gemini";
    return provider; /* anthropic, openai, deepseek, ...: the convention's names */
}

void kr_req_span(kr_req *r)
{
    kr_span sp;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, r->trace_id, 16);
    memcpy(sp.span_id, r->span_id, 8);
    memcpy(sp.parent_id, r->parent_id, 8);
    sp.has_parent = r->trace_parent;
    sp.flags = r->trace_flags;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sp.end_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t took = kr_mono_ns() - r->x.t0_ns;
    sp.start_ns = sp.end_ns > took ? sp.end_ns - took : 0;
    kr_route_id id = r->x.route;
    kr_strlcpy(sp.operation,
               id == KR_ROUTE_ANTHROPIC_COUNT_TOKENS || id == KR_ROUTE_GEMINI_COUNT_TOKENS
                   ? "count_tokens"
               : id == KR_ROUTE_GEMINI_GENERATE || id == KR_ROUTE_GEMINI_STREAM ? "generate_content"
                                                                               : "chat",
               sizeof sp.operation);
    const char *prov = r->prov ? r->prov->name : "";
    kr_strlcpy(sp.system, gen_ai_system(prov), sizeof sp.system);
    kr_strlcpy(sp.provider, prov, sizeof sp.provider);
    kr_strlcpy(sp.model, r->model_id, sizeof sp.model);
    kr_strlcpy(sp.request_id, r->x.id, sizeof sp.request_id);
    kr_strlcpy(sp.route, r->auth.route == KR_ROUTE_BYOK ? "byok" : "platform", sizeof sp.route);
    kr_strlcpy(sp.http_route, kr_route_label(id), sizeof sp.http_route);
    kr_strlcpy(sp.error_type, r->x.error_type, sizeof sp.error_type);
    sp.org_id = r->auth.org_id;
    sp.ws_id = r->auth.ws_id;
    sp.usage = r->usage_read;
    sp.input_tokens = r->usage.input_tokens;
    sp.output_tokens = r->usage.output_tokens;
    sp.cache_read_tokens = r->usage.cache_read_tokens;
    sp.cache_write_tokens = r->usage.cache_write_tokens;
    sp.cost_micros = r->cost;
    sp.status = r->x.status;
    sp.stream = r->stream;
    kr_otel_submit(r->px->otel, &sp);
}

static void send_upstream(kr_req *r, const char *auth);

void kr_req_forward(kr_req *r)
{
    kr_proxy *s = r->px;
    const kr_http_req *h = r->x.http;
    const kr_route_def *rd = r->rd;
    const char *body = h->body;
    size_t n = h->body_len;
    char model[128];
    kr_jval mv = {KR_JSON_ABSENT, NULL, 0};
    uint64_t cap;
    if (!(r->proto == KR_PROTO_GEMINI ? gemini_facts(r, body, n, model, &cap)
                                      : body_facts(r, body, n, model, &mv, &cap)))
        return;
    kr_cred_class mc = kr_cred_find(model, strlen(model), NULL, NULL);
    if (mc != KR_CRED_NONE) { /* never echoed, never logged */
        kr_respond_error(r, 400, "invalid_request_error",
                         "model: the value holds a credential (class %s); it is not a model name",
                         kr_cred_class_name(mc));
        return;
    }
    const char *auth = r->auth.route == KR_ROUTE_BYOK ? byok_target(r, model)
                                                      : platform_target(r, model);
    if (!auth) return;
    /* admission: allow-list, credits, rate limits (limits.h). The token
     * estimate is the prompt's size / 4 plus the output cap the request names
     * (any of its spellings; 4096 without one). */
    uint64_t est = n / 4 + (cap ? cap : 4096);
    if (kr_limits_admit(s, r, est, rd->metered)) return;
    if (mv.type != KR_JSON_ABSENT && rewrite_body(r, &body, &n, &mv)) {
        kr_respond_error(r, 413, "request_too_large", "the request body is too large");
        return;
    }
    if (s->otel) trace_begin(r, h);
    r->fwd_body = body; /* the request's (or r->upbody's): alive until the request ends */
    r->fwd_len = n;
    send_upstream(r, auth);
}

/* The upstream request (again, for a retry on another platform key): the
 * URL, the headers that pass, keyrail's own, the key line. */
static void send_upstream(kr_req *r, const char *auth)
{
    kr_proxy *s = r->px;
    const kr_http_req *h = r->x.http;
    const kr_route_def *rd = r->rd;
    const kr_provider *claim = r->prov;
    const char *body = r->fwd_body;
    size_t n = r->fwd_len;
    char url[512];
    if (!upstream_url(r, url, sizeof url)) return;
    const kr_http_header *conn = kr_http_find(h, "connection"); /* once, not per header */
    /* the headers: what passes of the client's, then keyrail's own and the
     * platform key, in one block either client takes */
    kr_buf_reset(&hb);
    for (unsigned i = 0; i < h->nheaders; i++) {
        const kr_http_header *f = &h->headers[i];
        if (!header_forwarded(f->name, conn)) continue;
        /* traced: the vendor gets keyrail's traceparent, and the client's
         * tracestate only along with a valid traceparent of the client's */
        if (r->traced && (kr_slice_eq_ci(f->name, "traceparent") ||
                          (!r->trace_parent && kr_slice_eq_ci(f->name, "tracestate"))))
            continue;
        kr_buf_append(&hb, f->name.p, f->name.n);
        kr_buf_append(&hb, ": ", 2);
        kr_buf_append(&hb, f->value.p, f->value.n);
        kr_buf_append(&hb, "\r\n", 2);
    }
    kr_buf_puts(&hb, "Content-Type: application/json\r\nAccept-Encoding: identity\r\n");
    if (r->traced) {
        char tp[56];
        kr_traceparent_format(r->trace_id, r->span_id, r->trace_flags, tp);
        kr_buf_puts(&hb, "traceparent: ");
        kr_buf_puts(&hb, tp);
        kr_buf_puts(&hb, "\r\n");
    }
    /* the key line (the platform's from the environment, or the org's for
     * BYOK): one line, or nothing is sent */
    if (strpbrk(auth, "\r\n") || kr_buf_puts(&hb, auth) || kr_buf_append(&hb, "\r\n", 2)) {
        sodium_memzero(hb.data, hb.len);
        kr_respond_error(r, 503, "api_error", "the %s key for provider '%s' is not usable",
                         r->auth.route == KR_ROUTE_BYOK ? "org's" : "platform", r->prov->name);
        return;
    }
    if (r->auth.route == KR_ROUTE_BYOK)
        r->auth.upstream_auth = NULL; /* the cache slot's: not the request's to keep */
    kr_upx_req q = {url, hb.data, hb.len, body, n,
                    /* counting tokens is free and changes nothing: safe to repeat */
                    rd->id == KR_ROUTE_ANTHROPIC_COUNT_TOKENS || rd->id == KR_ROUTE_GEMINI_COUNT_TOKENS,
                    "POST"};
    r->up.ud = r;
    r->up.on_header = on_up_header;
    r->up.on_body = on_up_body;
    r->up.done = upstream_done;
    r->up.who = claim->name;
    r->up.id = r->x.id;
    r->meter = rd->metered;
    r->t_up_ns = kr_mono_ns();
    int rc = kr_upstream_send(&s->up, &r->up, &q);
    sodium_memzero(hb.data, hb.len); /* the key line: the client made its own copy */
    if (rc) {
        kr_respond_error(r, 502, "api_error",
                         rc == KR_EINVAL ? "the upstream URL of provider '%s' is not valid"
                                         : "the upstream request of provider '%s' could not be "
                                           "started",
                         claim->name);
        return;
    }
    r->refs++; /* the transfer holds the request until upstream_done */
    r->x.conn->xtimer.data = r->x.conn;
    uv_timer_start(&r->x.conn->xtimer, on_up_timeout, (uint64_t)s->cfg->upstream_timeout_ms, 0);
}

/* ---- the upstream response ---- */

static void up_activity(kr_req *r)
{
    if (r->x.conn && !r->paused)
        uv_timer_start(&r->x.conn->xtimer, on_up_timeout, (uint64_t)r->px->cfg->upstream_timeout_ms,
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
    if (r->head_sent || !r->x.conn) return;
    r->head_sent = true;
    kr_proxy *s = r->px;
    double lat = (double)(kr_mono_ns() - r->t_up_ns) / 1e9;
    kr_metrics_upstream_latency(s->metrics, lat);
    r->x.status = r->up_status;
    r->chunked = r->x.http->minor >= 1;
    if (!r->chunked) r->x.keep_alive = false;
    /* staged, not written: it leaves with the first body bytes (same loop
     * turn, one syscall) or with the end of the response */
    kr_buf_puts(&r->out, "HTTP/1.1 ");
    kr_buf_put_i64(&r->out, r->up_status);
    kr_buf_putc(&r->out, ' ');
    kr_buf_puts(&r->out, kr_status_text(r->up_status));
    kr_buf_append(&r->out, "\r\n", 2);
    kr_buf_append(&r->out, r->resp_head.data ? r->resp_head.data : "", r->resp_head.len);
    kr_buf_puts(&r->out, "x-keyrail-request-id: ");
    kr_buf_puts(&r->out, r->x.id);
    kr_buf_append(&r->out, "\r\n", 2);
    if (r->chunked) kr_buf_puts(&r->out, "transfer-encoding: chunked\r\n");
    if (!r->x.keep_alive) kr_buf_puts(&r->out, "connection: close\r\n");
    kr_buf_append(&r->out, "\r\n", 2);
    if (r->is_sse) s->metrics->open_streams++;
}

void kr_req_undirty(kr_req *r)
{
    if (!r->dirty) return;
    r->dirty = false;
    for (kr_req **p = &r->px->dirty; *p; p = &(*p)->dirty_next)
        if (*p == r) {
            *p = r->dirty_next;
            break;
        }
}

/* Writes what is staged for the client. */
static void out_flush(kr_req *r)
{
    kr_req_undirty(r);
    if (r->x.conn && r->out.len) {
        uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
        kr_conn_write(r->x.conn, &b, 1);
    }
    kr_buf_reset(&r->out);
}

void kr_proxy_flush_dirty(void *ctx)
{
    kr_proxy *s = ctx;
    while (s->dirty)
        out_flush(s->dirty);
}

/* Another (deployment, key) is usable beyond `tried`: picked now (a
 * half-open circuit's probe included) and kept in pool_next for on_retry. */
static bool pool_has_other(kr_req *r, uint32_t tried)
{
    int id = kr_pool_pick(r->px->pools, r->pool_provider, 0, tried);
    if (id < 0) return false;
    r->pool_next = id; /* on_retry uses it, so the probe it took is not lost */
    return true;
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
        r->up_retry_after = 0;
        return n;
    }
    if (n <= 2) { /* end of a header block */
        if (r->up_status < 200) return n;
        if (r->pool_key >= 0) {
            /* the platform key's answer: the pool learns it; a refusal the
             * client has not seen a byte of goes to another key instead */
            int st = r->up_status;
            kr_pool_report(r->px->pools, r->pool_provider, r->pool_key, st, r->up_retry_after);
            if ((st == 401 || st == 403 || st == 429 || st == 503 || st == 529) && r->x.conn &&
                !r->head_sent && r->pool_tries < KR_POOL_MAX_TRIES &&
                pool_has_other(r, r->pool_tried | (1u << r->pool_key))) {
                r->pool_tried |= 1u << r->pool_key;
                r->pool_retry = true;
                return 0; /* ends this transfer: upstream_end sends it again */
            }
        }
        send_head(r);
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon || r->up_status < 200) return n;
    size_t nl = (size_t)(colon - buf);
    if (nl == 11 && !strncasecmp(buf, "retry-after", 11)) {
        int64_t v = 0;
        const char *p = colon + 1, *e = buf + n;
        while (p < e && *p == ' ') p++;
        while (p < e && *p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
        r->up_retry_after = (int)v;
    }
    if (!passthrough_header(buf, nl)) return n;
    if (nl == 12 && !strncasecmp(buf, "content-type", 12)) {
        const char *v = colon + 1;
        while (v < buf + n && *v == ' ')
            v++;
        if ((size_t)(buf + n - v) >= 17 && !strncasecmp(v, "text/event-stream", 17)) {
            r->is_sse = true;
            kr_sse_usage_init_wire(&r->sse, r->rd->wire, (size_t)r->px->cfg->max_usage_event_bytes);
        }
    }
    if (kr_buf_append(&r->resp_head, buf, n)) return 0; /* absurd upstream head: abort */
    return n;
}

static size_t on_up_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    kr_req *r = ud;
    size_t n = size * nmemb;
    if (!r->x.conn) return 0;
    if (!r->head_sent) send_head(r);
    if (kr_x_backlog(&r->x) + r->out.len > WRITE_HIGH_WATER) {
        out_flush(r);
        r->paused = true;
        uv_timer_stop(&r->x.conn->xtimer);
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
        r->dirty_next = r->px->dirty;
        r->px->dirty = r;
    }
    return n;
}

void kr_req_resume_upstream(kr_req *r)
{
    if (!r->paused || !r->up.active) return;
    r->paused = false;
    up_activity(r);
    kr_upstream_resume(&r->px->up, &r->up);
}

static void upstream_end(kr_req *r, CURLcode rc);

static void on_up_timeout(uv_timer_t *t)
{
    kr_conn *c = t->data;
    /* only a proxy request arms its connection's exchange timer, and the
     * connection stops it when the request ends */
    kr_req *r = (kr_req *)c->x;
    if (!r || !r->up.active) return;
    r->timed_out = true;
    kr_upstream_cancel(&r->px->up, &r->up);
    upstream_end(r, CURLE_OPERATION_TIMEDOUT);
}

/* ---- metering and the end of a proxied response ---- */

static void end_response(kr_req *r)
{
    if (r->x.conn && r->chunked && r->head_sent) kr_buf_append(&r->out, "0\r\n\r\n", 5);
    out_flush(r);
    if (r->is_sse && r->head_sent) r->px->metrics->open_streams--;
    kr_x_finish(&r->x);
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
        r->px->metrics->usage_unreadable++;
        if (!strcmp(status, "complete")) status = "unreadable";
        KR_WARN("request %s: the usage of this response could not be read (%s); its row is "
                "recorded with status unreadable",
                r->x.id,
                r->is_sse ? (r->sse.usage_lost ? "its final event was over server.max_usage_event_bytes"
                                               : "no usage event")
                : r->json.len >= r->json.max ? "its body was over server.max_usage_event_bytes"
                                             : "no usage object in its body");
    }
    int64_t cost = r->model ? kr_model_cost(r->model, &u) : 0;
    r->usage = u;
    r->usage_read = u.seen;
    r->cost = cost;
    kr_metrics_tokens(r->px->metrics, &u);
    kr_req_log(r, &u, cost);
    if (!r->meter) {
        kr_limits_settle(r->px, r, &u, 0);
        return;
    }
    /* BYOK: metered, and priced at list price for the org's information,
     * never debited (the org pays its vendor) */
    bool byok = r->auth.route == KR_ROUTE_BYOK;
    kr_limits_settle(r->px, r, &u, byok ? 0 : cost);
    kr_usage_rec rec;
    memset(&rec, 0, sizeof rec);
    kr_strlcpy(rec.request_id, r->x.id, sizeof rec.request_id);
    rec.org_id = r->auth.org_id;
    rec.workspace_id = r->auth.ws_id;
    kr_strlcpy(rec.provider, r->prov ? r->prov->name : "", sizeof rec.provider);
    kr_strlcpy(rec.model, r->model_id, sizeof rec.model);
    rec.u = u;
    rec.cost_micros = cost;
    kr_strlcpy(rec.status, status, sizeof rec.status);
    kr_strlcpy(rec.route, byok ? "byok" : "platform", sizeof rec.route);
    int64_t now = kr_now_ms();
    rec.finished_at = now;
    rec.started_at = now - (int64_t)((kr_mono_ns() - r->x.t0_ns) / 1000000);
    kr_meter_submit(r->px->port, &rec, byok ? NULL : on_metered, r->px);
}

/* The transfer ended (the client reports it once, with its handle back). */
static void upstream_done(kr_upx *x, CURLcode rc)
{
    upstream_end(x->ud, rc);
}

/* A platform key refused the request before the client saw a byte: the same
 * request goes out again with another key of the pool, from a fresh loop
 * turn (not from inside the ended transfer's callbacks). */
static void on_retry(uv_timer_t *t)
{
    kr_conn *c = t->data;
    kr_req *r = (kr_req *)c->x;
    if (!r || !r->pool_retry_due) return;
    r->pool_retry_due = false;
    r->pool_key = r->pool_next; /* picked when the retry was decided */
    r->refs--; /* the ended transfer's; send_upstream takes the new one's */
    r->pool_tries++;
    r->px->metrics->upstream_retries++;
    send_upstream(r, kr_pool_auth(r->px->pools, r->pool_provider, r->pool_key));
}

static void upstream_end(kr_req *r, CURLcode rc)
{
    kr_proxy *s = r->px;
    KR_ASSERT(!r->up.active && r->refs >= 2);
    if (rc != CURLE_OK && !r->pool_retry && r->pool_key >= 0 && !r->head_sent) {
        /* the deployment could not be reached (its keys are not to blame); a
         * request that never connected was not written: another deployment
         * may take it */
        kr_pool_report(s->pools, r->pool_provider, r->pool_key, 0, 0);
        bool unsent = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
        uint32_t tried = r->pool_tried | kr_pool_dep_mask(s->pools, r->pool_provider, r->pool_key);
        if (unsent && r->x.conn && !r->timed_out && r->pool_tries < KR_POOL_MAX_TRIES &&
            pool_has_other(r, tried)) {
            r->pool_tried = tried;
            r->pool_retry = true;
        }
    }
    if (r->pool_retry) {
        r->pool_retry = false;
        if (r->x.conn && !r->head_sent) {
            /* nothing of this answer is kept: a fresh head, body and usage */
            kr_buf_reset(&r->resp_head);
            kr_buf_reset(&r->json);
            if (r->is_sse) kr_sse_usage_free(&r->sse);
            r->is_sse = false;
            r->up_status = 0;
            r->usage_unreadable = false;
            r->pool_retry_due = true;
            r->x.conn->xtimer.data = r->x.conn;
            uv_timer_start(&r->x.conn->xtimer, on_retry, 0, 0);
            return;
        }
    }
    if (r->x.conn) uv_timer_stop(&r->x.conn->xtimer);
    if (rc == CURLE_OK && !r->head_sent && r->x.conn) send_head(r); /* empty body */
    if (rc == CURLE_OK) {
        bool ok = r->up_status >= 200 && r->up_status < 300;
        bool complete = ok && (r->is_sse ? r->sse.done : true);
        const char *st = !ok ? "error" : complete ? "complete" : "partial";
        if (r->up_status >= 400) kr_strlcpy(r->x.error_type, "upstream_status", sizeof r->x.error_type);
        record_usage(r, st);
        end_response(r);
        kr_req_unref(r);
        return;
    }
    s->metrics->upstream_errors++;
    bool timeout = r->timed_out || rc == CURLE_OPERATION_TIMEDOUT;
    kr_strlcpy(r->x.error_type, timeout ? "upstream_timeout" : "upstream_unreachable",
               sizeof r->x.error_type);
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
            kr_upstream_describe(rc, r->up.err, why, sizeof why); /* TLS: the cause, named */
            kr_strlcpy(r->up_error, why, sizeof r->up_error); /* the log line says it too */
            kr_respond_error(r, 502, "api_error", "%s", why);
        }
        kr_req_unref(r);
        return;
    }
    /* mid-response: tell an SSE client in its own protocol, then end cleanly;
     * a cut JSON body cannot be repaired, so the connection is closed */
    if (r->is_sse && r->x.conn) {
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
    } else if (r->x.conn) {
        r->x.keep_alive = false;
        r->chunked = false; /* no terminator: the client sees a truncated body */
    }
    record_usage(r, "partial");
    end_response(r);
    kr_req_unref(r);
}


/* The client went away with the transfer running: stop it, record what
 * passed, and drop the transfer's reference. */
void kr_req_abort_upstream(kr_req *r)
{
    kr_upstream_cancel(&r->px->up, &r->up);
    if (r->is_sse && r->head_sent) r->px->metrics->open_streams--;
    r->x.status = 499;
    kr_strlcpy(r->x.error_type, "client_closed", sizeof r->x.error_type);
    record_usage(r, "client_closed");
    kr_x_abandon(&r->x);
    kr_req_unref(r); /* the transfer's reference */
}
