/*
 * ops_org.c -- orgs, workspaces, their environments, secrets and workspace
 * tokens (ops_handlers.h).
 */
#include "launcher/launcher.h"
#include "ops/ops_handlers.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- shared ---- */

void kr_ops_time(int64_t ms, char *out, size_t cap)
{
    if (!ms) {
        out[0] = 0;
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void kr_ops_add_time(cJSON *o, const char *name, int64_t ms)
{
    char t[32];
    kr_ops_time(ms, t, sizeof t);
    if (ms) cJSON_AddStringToObject(o, name, t);
    else cJSON_AddNullToObject(o, name);
}

void kr_ops_add_lifetime(cJSON *o, int64_t created, int64_t expires, int64_t revoked)
{
    int64_t now = kr_now_ms();
    cJSON_AddStringToObject(o, "state", revoked                            ? "revoked"
                                        : (expires && expires <= now) ? "expired"
                                                                      : "active");
    kr_ops_add_time(o, "created_at", created);
    kr_ops_add_time(o, "expires_at", expires);
    kr_ops_add_time(o, "revoked_at", revoked);
}

void kr_ops_merge(cJSON *out, cJSON *src)
{
    while (src && src->child) {
        cJSON *e = cJSON_DetachItemViaPointer(src, src->child);
        cJSON_AddItemToObject(out, e->string, e);
    }
    cJSON_Delete(src);
}

int kr_ops_org_filter(const kr_op_call *c, int64_t *org_id, kr_diag *d)
{
    const char *org = kr_op_str(c, "org");
    kr_org o;
    int rc;
    *org_id = 0;
    if (c->actor->scope == KR_ADMIN_ORG) { /* an org admin: its own org, always */
        if ((rc = kr_org_get(c->st, c->actor->org_id, &o, d))) return rc;
        if (org && strcmp(org, o.slug))
            return kr_fail(d, KR_EDENIED, "%s: this admin token administers another org",
                           c->op->name);
    } else if (!org) {
        return 0;
    } else if ((rc = kr_org_find(c->st, org, &o, d))) {
        return rc;
    }
    *org_id = o.id;
    return 0;
}

void kr_ops_provision_ctx(const kr_op_call *c, kr_provision_ctx *ctx)
{
    *ctx = kr_plane_ctx(c->env);
}

static cJSON *org_json(const kr_org *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)o->id);
    cJSON_AddStringToObject(j, "slug", o->slug);
    cJSON_AddStringToObject(j, "name", o->name);
    cJSON_AddStringToObject(j, "status", o->status);
    kr_ops_add_time(j, "created_at", o->created_at);
    return j;
}

static cJSON *ws_json(const kr_workspace *w, const char *org_slug)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)w->id);
    cJSON_AddStringToObject(j, "org", org_slug);
    cJSON_AddStringToObject(j, "name", w->name);
    cJSON_AddStringToObject(j, "kind", kr_ws_kind_name(w->kind));
    cJSON_AddStringToObject(j, "runtime", w->runtime);
    if (w->parent_id) cJSON_AddNumberToObject(j, "parent_id", (double)w->parent_id);
    else cJSON_AddNullToObject(j, "parent_id");
    kr_ops_add_time(j, "created_at", w->created_at);
    return j;
}

/* ---- orgs ---- */

int kr_op_org_create(kr_op_call *c, cJSON *out, kr_diag *d)
{
    const char *slug = kr_op_str(c, "org");
    const char *name = kr_op_str(c, "name") ? kr_op_str(c, "name") : slug;
    kr_org o;
    int rc = kr_org_create(c->st, slug, name, &o, d);
    if (rc) return rc;
    c->org = o;
    c->has_org = true;
    cJSON_AddItemToObject(out, "org", org_json(&o));
    return 0;
}

int kr_op_org_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_org *orgs;
    size_t n;
    int rc = kr_org_list(c->st, &orgs, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++)
        if (c->actor->scope == KR_ADMIN_OPERATOR || orgs[i].id == c->actor->org_id)
            cJSON_AddItemToArray(items, org_json(&orgs[i]));
    free(orgs);
    return 0;
}

int kr_op_org_get(kr_op_call *c, cJSON *out, kr_diag *d)
{
    (void)d;
    cJSON_AddItemToObject(out, "org", org_json(&c->org));
    return 0;
}

/* ---- workspaces ---- */

/* The create payload: MODEL, then the "set" object's variables. */
static int payload(const kr_op_call *c, kr_payload_var *pv, size_t cap, size_t *n, kr_diag *d)
{
    *n = 0;
    if (kr_op_str(c, "model")) pv[(*n)++] = (kr_payload_var){"MODEL", kr_op_str(c, "model")};
    const cJSON *set = kr_op_get(c, "set"), *e;
    cJSON_ArrayForEach(e, set)
    {
        if (*n >= cap) return kr_fail(d, KR_EINVAL, "too many payload variables");
        pv[(*n)++] = (kr_payload_var){e->string, e->valuestring};
    }
    return 0;
}

/* The environment as JSON, never with values (the shape explain and the
 * console read): what kr_provision_render_json gives without values. */
static cJSON *result_json(const kr_provision_result *r, bool with_values)
{
    kr_buf b = KR_BUF_INIT(1 << 24);
    kr_provision_render_json(r, with_values, &b);
    cJSON *j = cJSON_ParseWithLength(b.data ? b.data : "{}", b.len);
    if (b.data) sodium_memzero(b.data, b.len);
    kr_buf_free(&b);
    return j ? j : cJSON_CreateObject();
}

int kr_op_ws_create(kr_op_call *c, cJSON *out, kr_diag *d)
{
    const char *runtime = kr_op_str(c, "runtime") ? kr_op_str(c, "runtime")
                                                  : c->env->cfg->default_runtime;
    if (!kr_runtimes_find(c->env->rts, runtime)) {
        char names[256];
        kr_runtimes_list_names(c->env->rts, names, sizeof names);
        return kr_fail(d, KR_EINVAL, "unknown runtime '%.64s' (runtime profiles: %s)", runtime,
                       names);
    }
    kr_payload_var pv[72];
    size_t npv;
    int rc = payload(c, pv, 72, &npv, d);
    if (rc) return rc;
    kr_workspace ws;
    rc = kr_ws_create(c->st, c->org.id, kr_op_str(c, "ws"),
                      kr_op_bool(c, "concierge") ? KR_WS_CONCIERGE : KR_WS_WORKSPACE, runtime,
                      kr_op_int(c, "parent", 0), &ws, d);
    if (rc) return rc;
    c->ws = ws;
    c->has_ws = true;
    kr_provision_ctx ctx;
    kr_ops_provision_ctx(c, &ctx);
    kr_provision_result r;
    /* on failure the whole operation rolls back: no workspace, nothing persisted */
    rc = kr_provision(c->st, c->env->mk, &ctx, &ws, pv, npv, NULL, &r, d);
    if (!rc) {
        cJSON_AddItemToObject(out, "workspace", ws_json(&ws, c->org.slug));
        cJSON_AddStringToObject(out, "route", kr_route_name(r.res.route));
        cJSON_AddStringToObject(out, "provider", r.res.provider);
        cJSON_AddStringToObject(out, "protocol", kr_proto_name(r.res.proto));
        cJSON_AddStringToObject(out, "model", r.res.model);
        kr_snprintf(c->detail, sizeof c->detail, "route %s, provider %s, runtime %s",
                    kr_route_name(r.res.route), r.res.provider, runtime);
    }
    kr_provision_result_free(&r);
    return rc;
}

int kr_op_ws_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_workspace *ws;
    size_t n;
    int rc = kr_ws_list(c->st, c->org.id, &ws, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(items, ws_json(&ws[i], c->org.slug));
    free(ws);
    return 0;
}

/* What one runtime profile's agent calls with this environment. */
static cJSON *runtime_view(const kr_provision_result *r, const kr_runtime *rt, const char *proxy_url)
{
    const kr_env_var *b = kr_env_get(&r->env, rt->set_base_url);
    const char *base = b ? b->value : kr_launch_default_url(rt->proto);
    char host[300], po[300];
    if (kr_url_origin(base, host, sizeof host)) kr_strlcpy(host, "(invalid)", sizeof host);
    bool proxy = !kr_url_origin(proxy_url, po, sizeof po) && !strcmp(po, host);
    const kr_env_var *cred = NULL;
    for (size_t i = 0; i < rt->vars[KR_RTVAR_CREDENTIAL].n && !cred; i++)
        cred = kr_env_get(&r->env, rt->vars[KR_RTVAR_CREDENTIAL].v[i]);
    kr_cred_class cls = !cred ? KR_CRED_NONE
                        : !strcmp(cred->value, KR_TOKEN_PLACEHOLDER) ? KR_CRED_WORKSPACE_TOKEN
                                                                     : cred->cls;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "runtime", rt->name);
    cJSON_AddStringToObject(j, "protocol", kr_proto_name(rt->proto));
    cJSON_AddStringToObject(j, "base_url", base);
    cJSON_AddBoolToObject(j, "configured", b != NULL);
    cJSON_AddStringToObject(j, "host", host);
    cJSON_AddBoolToObject(j, "proxy", proxy);
    cJSON_AddStringToObject(j, "credential_var", cred ? cred->key : "");
    cJSON_AddStringToObject(j, "class", cred ? kr_cred_class_name(cls) : "none");
    cJSON_AddStringToObject(j, "file", rt->file);
    cJSON_AddStringToObject(j, "dir_env", rt->dir_env);
    cJSON_AddBoolToObject(j, "args", rt->nargs > 0);
    return j;
}

/* Platform route: where the proxy forwards each protocol, with which key
 * (the key's class as this process sees it: the server's environment). */
static cJSON *upstream_view(const kr_registry *reg)
{
    cJSON *j = cJSON_CreateObject();
    for (int p = 0; p < KR_PROTO__COUNT; p++)
        for (size_t i = 0; i < reg->nproviders; i++) {
            const kr_provider *pr = &reg->providers[i];
            if (!pr->platform || (int)pr->proto != p) continue;
            char host[300], fp[KR_FP_LEN] = "";
            if (kr_url_origin(pr->base_url, host, sizeof host))
                kr_strlcpy(host, "(invalid)", sizeof host);
            const char *k = getenv(pr->platform_key_env);
            kr_cred_class cls = KR_CRED_NONE;
            if (k && *k) {
                cls = kr_cred_classify(k, strlen(k));
                kr_cred_fingerprint(k, strlen(k), fp);
            }
            cJSON *u = cJSON_AddObjectToObject(j, kr_proto_name((kr_proto)p));
            cJSON_AddStringToObject(u, "provider", pr->name);
            cJSON_AddStringToObject(u, "host", host);
            cJSON_AddStringToObject(u, "key_env", pr->platform_key_env);
            cJSON_AddStringToObject(u, "key_owner", "platform");
            cJSON_AddStringToObject(u, "class", k && *k ? kr_cred_class_name(cls) : "not-set-here");
            cJSON_AddStringToObject(u, "fingerprint", fp);
            if (pr->nfallback) {
                /* where requests go when this deployment fails (docs/PROXY.md) */
                cJSON *fb = cJSON_AddArrayToObject(u, "fallbacks");
                for (size_t q = 0; q < pr->nfallback; q++) {
                    char o[300];
                    if (kr_url_origin(pr->fallback[q].base_url, o, sizeof o))
                        kr_strlcpy(o, "(invalid)", sizeof o);
                    cJSON_AddItemToArray(fb, cJSON_CreateString(o));
                }
            }
            if (pr->nplatform_keys > 1) {
                /* a key pool: requests spread over these (docs/PROXY.md) */
                cJSON *pool = cJSON_AddArrayToObject(u, "key_pool");
                for (size_t q = 0; q < pr->nplatform_keys; q++) {
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "key_env", pr->platform_keys[q]);
                    cJSON_AddNumberToObject(e, "weight", pr->key_weight[q]);
                    cJSON_AddItemToArray(pool, e);
                }
            }
            break;
        }
    return j;
}

/* BYOK through the proxy: where the proxy forwards, with which of the org's
 * secrets (its class and fingerprint, never a byte of it). */
static cJSON *byok_upstream_view(const kr_registry *reg, const kr_provision_result *r)
{
    cJSON *j = cJSON_CreateObject();
    const kr_provider *p = kr_registry_provider(reg, r->res.provider);
    const kr_secret_entry *e = kr_secrets_get(&r->secrets, r->res.credential_key);
    if (!p) return j;
    char host[300], fp[KR_FP_LEN] = "";
    if (kr_url_origin(p->base_url, host, sizeof host)) kr_strlcpy(host, "(invalid)", sizeof host);
    kr_cred_class cls = KR_CRED_NONE;
    if (e && e->read.state == KR_SECRET_VALUE) {
        cls = kr_cred_classify(e->read.value, e->read.len);
        if (cls == KR_CRED_NONE) cls = KR_CRED_VENDOR_KEY;
        kr_cred_fingerprint(e->read.value, e->read.len, fp);
    }
    cJSON *u = cJSON_AddObjectToObject(j, kr_proto_name(p->proto));
    cJSON_AddStringToObject(u, "provider", p->name);
    cJSON_AddStringToObject(u, "host", host);
    cJSON_AddStringToObject(u, "key_env", r->res.credential_key);
    cJSON_AddStringToObject(u, "key_owner", "org");
    cJSON_AddStringToObject(u, "header", p->header == KR_AUTH_BEARER           ? "authorization"
                                         : p->header == KR_AUTH_X_GOOG_API_KEY ? "x-goog-api-key"
                                                                               : "x-api-key");
    cJSON_AddStringToObject(u, "class", kr_cred_class_name(cls));
    cJSON_AddStringToObject(u, "fingerprint", fp);
    return j;
}

int kr_op_ws_explain(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_provision_ctx ctx;
    kr_ops_provision_ctx(c, &ctx);
    ctx.dry_run = true;
    kr_provision_result r;
    kr_diag pd = {{0}};
    int prov = kr_provision(c->st, c->env->mk, &ctx, &c->ws, NULL, 0, NULL, &r, &pd);
    if (prov == KR_ESTORE) { /* a store failure is not an explanation */
        kr_provision_result_free(&r);
        return kr_fail(d, prov, "%s", kr_diag_msg(&pd, prov));
    }
    kr_ops_merge(out, result_json(&r, false));
    cJSON_AddStringToObject(out, "org", c->org.slug);
    if (prov && !cJSON_GetObjectItemCaseSensitive(out, "error")) {
        cJSON_AddStringToObject(out, "error", kr_err_name(prov));
        cJSON_AddStringToObject(out, "message", kr_diag_msg(&pd, prov));
    }
    cJSON *rts = cJSON_AddArrayToObject(out, "runtimes");
    for (size_t i = 0; !prov && i < c->env->rts->n; i++)
        cJSON_AddItemToArray(rts, runtime_view(&r, &c->env->rts->rt[i], c->env->proxy_url));
    if (!prov && r.res.route == KR_ROUTE_PLATFORM)
        cJSON_AddItemToObject(out, "upstream", upstream_view(c->env->reg));
    else if (!prov && r.res.route == KR_ROUTE_BYOK && !r.res.byok_direct)
        cJSON_AddItemToObject(out, "upstream", byok_upstream_view(c->env->reg, &r));
    else
        cJSON_AddItemToObject(out, "upstream", cJSON_CreateObject());
    kr_provision_result_free(&r);
    return 0;
}

/* Over HTTP a provisioned environment carries no credential value: a
 * variable of any credential class (a direct-BYOK key, a secret of an
 * unknown shape) keeps its name, origin, class and fingerprint, and loses
 * its value ("withheld": true); the workspace token stays the launcher's
 * placeholder. The env file form leaves them out and names them in a
 * comment. Returns how many were withheld. */
static int withhold_credentials(cJSON *out, const kr_provision_result *r)
{
    int n = 0;
    cJSON *env = cJSON_GetObjectItemCaseSensitive(out, "env"), *v;
    cJSON *held = cJSON_AddArrayToObject(out, "withheld");
    cJSON_ArrayForEach(v, env)
    {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(v, "class");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "placeholder")) || !cJSON_IsString(cls) ||
            !strcmp(cls->valuestring, "none"))
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(v, "value");
        cJSON_AddBoolToObject(v, "withheld", true);
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "key", cJSON_GetObjectItemCaseSensitive(v, "key")->valuestring);
        cJSON_AddStringToObject(h, "class", cls->valuestring);
        cJSON_AddItemToArray(held, h);
        n++;
    }
    kr_env shown = {0};
    for (size_t i = 0; i < r->env.n; i++) {
        const kr_env_var *e = &r->env.v[i];
        bool ph = !strcmp(e->value, KR_TOKEN_PLACEHOLDER);
        if (ph || e->cls == KR_CRED_NONE) kr_env_set(&shown, e->key, e->value, e->origin);
    }
    kr_buf b = KR_BUF_INIT(1 << 24);
    kr_env_render_env(&shown, &b);
    cJSON *h;
    cJSON_ArrayForEach(h, held)
        kr_buf_printf(&b, "# %s withheld (%s): a credential is never returned over HTTP\n",
                      cJSON_GetObjectItemCaseSensitive(h, "key")->valuestring,
                      cJSON_GetObjectItemCaseSensitive(h, "class")->valuestring);
    cJSON_AddStringToObject(out, "env_file", b.data ? b.data : "");
    kr_buf_free(&b);
    kr_env_free(&shown);
    return n;
}

int kr_op_ws_provision(kr_op_call *c, cJSON *out, kr_diag *d)
{
    bool rebuild = kr_op_bool(c, "rebuild");
    if (rebuild && (kr_op_has(c, "model") || kr_op_has(c, "set")))
        return kr_fail(d, KR_EINVAL, "rebuild takes no payload (model/set)");
    const char *token = kr_op_str(c, "token");
    if (token && !c->actor->cli)
        return kr_fail(d, KR_EINVAL,
                       "token: command line only (over HTTP the environment carries the "
                       "placeholder keyrail run fills)");
    if (token && kr_cred_classify(token, strlen(token)) != KR_CRED_WORKSPACE_TOKEN)
        return kr_fail(d, KR_EINVAL, "token is not a keyrail workspace token");
    kr_payload_var pv[72];
    size_t npv = 0;
    int rc = rebuild ? 0 : payload(c, pv, 72, &npv, d);
    if (rc) return rc;
    kr_provision_ctx ctx;
    kr_ops_provision_ctx(c, &ctx);
    kr_provision_result r;
    rc = kr_provision(c->st, c->env->mk, &ctx, &c->ws, pv, npv, token, &r, d);
    if (!rc && !c->actor->cli) {
        kr_ops_merge(out, result_json(&r, true));
        int held = withhold_credentials(out, &r);
        kr_snprintf(c->detail, sizeof c->detail, "%s%s", rebuild ? "rebuild" : "fresh",
                    held ? ", credentials withheld" : "");
    } else if (!rc) {
        kr_ops_merge(out, result_json(&r, true));
        /* the env file form, for `keyrail provision --format env` */
        kr_buf b = KR_BUF_INIT(1 << 24);
        kr_env_render_env(&r.env, &b);
        cJSON_AddStringToObject(out, "env_file", b.data ? b.data : "");
        if (b.data) sodium_memzero(b.data, b.len);
        kr_buf_free(&b);
        kr_strlcpy(c->detail, rebuild ? "rebuild" : "fresh", sizeof c->detail);
    }
    kr_provision_result_free(&r);
    return rc;
}

/* ---- secrets ---- */

/* The scope a secret call names: the org's, or the "workspace" one's. */
static int secret_scope(kr_op_call *c, kr_scope *scope, int64_t *owner, kr_diag *d)
{
    const char *w = kr_op_str(c, "workspace");
    if (!w) {
        *scope = KR_SCOPE_ORG;
        *owner = c->org.id;
        return 0;
    }
    /* a name too long for ref is too long to be valid: cut, the store refuses it */
    char ref[200];
    snprintf(ref, sizeof ref, "%s/%s", c->org.slug, w);
    int rc = kr_ws_find(c->st, ref, &c->ws, d);
    if (rc) return rc;
    c->has_ws = true;
    *scope = KR_SCOPE_WORKSPACE;
    *owner = c->ws.id;
    return 0;
}

static void secret_target(kr_op_call *c, const char *key)
{
    char esc[200];
    if (c->has_ws)
        kr_snprintf(c->target, sizeof c->target, "%s/%s %s", c->org.slug, c->ws.name,
                    kr_esc(key, esc, sizeof esc));
    else
        kr_snprintf(c->target, sizeof c->target, "%s %s", c->org.slug, kr_esc(key, esc, sizeof esc));
}

int kr_op_secret_set(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_scope scope;
    int64_t owner;
    int rc = secret_scope(c, &scope, &owner, d);
    const char *key = kr_op_str(c, "key");
    if (!rc) secret_target(c, key);
    if (rc) return rc;
    const char *value = kr_op_str(c, "value");
    rc = kr_secret_set(c->st, c->env->mk, c->env->pol, scope, owner, key, value, d);
    if (rc) return rc;
    kr_cred_class cls = kr_cred_classify(value, strlen(value));
    char fp[KR_FP_LEN] = "";
    if (cls != KR_CRED_NONE && cls != KR_CRED_UNKNOWN) kr_cred_fingerprint(value, strlen(value), fp);
    cJSON_AddStringToObject(out, "key", key);
    cJSON_AddStringToObject(out, "scope", kr_scope_name(scope));
    cJSON_AddStringToObject(out, "class", cls == KR_CRED_UNKNOWN ? "none" : kr_cred_class_name(cls));
    cJSON_AddStringToObject(out, "fingerprint", fp);
    kr_snprintf(c->detail, sizeof c->detail, "%s scope, class %s%s%s", kr_scope_name(scope),
                cls == KR_CRED_UNKNOWN ? "none" : kr_cred_class_name(cls), fp[0] ? ", fingerprint " : "",
                fp);
    return 0;
}

int kr_op_secret_unset(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_scope scope;
    int64_t owner;
    int rc = secret_scope(c, &scope, &owner, d);
    const char *key = kr_op_str(c, "key");
    if (!rc) secret_target(c, key);
    if (!rc) rc = kr_store_secret_del(c->st, scope, owner, key, d);
    if (rc) return rc;
    cJSON_AddStringToObject(out, "key", key);
    cJSON_AddStringToObject(out, "scope", kr_scope_name(scope));
    return 0;
}

int kr_op_secret_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_scope scope;
    int64_t owner;
    int rc = secret_scope(c, &scope, &owner, d);
    kr_secret_row *rows;
    size_t n;
    if (!rc) rc = kr_store_secret_list(c->st, scope, owner, &rows, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) {
        kr_buf b = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
        int orc = kr_secret_open(c->env->mk, scope, owner, rows[i].key, rows[i].ciphertext,
                                 strlen(rows[i].ciphertext), &b);
        char fp[KR_FP_LEN] = "";
        const char *cls = "none";
        if (!orc) {
            kr_cred_class k = kr_cred_classify(b.data ? b.data : "", b.len);
            if (k != KR_CRED_UNKNOWN && k != KR_CRED_NONE) {
                cls = kr_cred_class_name(k);
                kr_cred_fingerprint(b.data, b.len, fp);
            }
            if (b.data) sodium_memzero(b.data, b.len);
        }
        kr_buf_free(&b);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "key", rows[i].key);
        cJSON_AddStringToObject(j, "scope", kr_scope_name(scope));
        cJSON_AddStringToObject(j, "state", orc ? "unreadable" : "ok");
        cJSON_AddStringToObject(j, "class", cls);
        cJSON_AddStringToObject(j, "fingerprint", fp);
        kr_ops_add_time(j, "updated_at", rows[i].updated_at);
        cJSON_AddItemToArray(items, j);
    }
    kr_secret_rows_free(rows, n);
    return 0;
}

/* ---- workspace tokens ---- */

static cJSON *token_json(const kr_token *t)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)t->id);
    cJSON_AddStringToObject(j, "prefix", t->prefix);
    kr_ops_add_lifetime(j, t->created_at, t->expires_at, t->revoked_at);
    return j;
}

int kr_op_token_mint(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t ttl = 0;
    int rc;
    if (kr_op_str(c, "ttl") && (rc = kr_token_ttl_parse(kr_op_str(c, "ttl"), &ttl, d))) return rc;
    char tok[KR_WS_TOKEN_LEN + 1], hash[65], prefix[16], fp[KR_FP_LEN];
    kr_token_generate(tok);
    kr_token_hash(tok, strlen(tok), hash);
    kr_memlcpy(prefix, sizeof prefix, tok, 12);
    kr_cred_fingerprint(tok, strlen(tok), fp);
    kr_token t;
    rc = kr_token_insert(c->st, c->ws.id, hash, prefix, ttl, &t, d);
    if (!rc) {
        cJSON *j = token_json(&t);
        cJSON_AddStringToObject(j, "token", tok); /* shown once */
        cJSON_AddStringToObject(j, "fingerprint", fp);
        cJSON_AddStringToObject(j, "workspace", c->ws.name);
        kr_ops_merge(out, j);
        kr_snprintf(c->detail, sizeof c->detail, "token %lld, fingerprint %s%s", (long long)t.id,
                    fp, ttl ? ", expires" : "");
    }
    sodium_memzero(tok, sizeof tok);
    return rc;
}

int kr_op_token_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_token *t = NULL;
    size_t n = 0;
    int rc = kr_token_list(c->st, c->ws.id, &t, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(items, token_json(&t[i]));
    free(t);
    return 0;
}

int kr_op_token_revoke(kr_op_call *c, cJSON *out, kr_diag *d)
{
    char ref[32];
    snprintf(ref, sizeof ref, "%lld", (long long)kr_op_int(c, "id", 0));
    kr_token t;
    int rc = kr_token_find(c->st, ref, &t, d);
    if (!rc && t.workspace_id != c->ws.id) /* another workspace's: not here */
        rc = kr_fail(d, KR_ENOTFOUND, "no token %s in %s/%s", ref, c->org.slug, c->ws.name);
    if (!rc) rc = kr_token_revoke(c->st, t.id, d);
    if (rc) return rc;
    kr_snprintf(c->detail, sizeof c->detail, "token %lld", (long long)t.id);
    t.revoked_at = kr_now_ms();
    kr_ops_merge(out, token_json(&t));
    return 0;
}
