/*
 * launcher.c -- the rules of launcher.h: payload parsing and the agent's
 * environment, files and arguments. Pure: no I/O, no globals.
 */
#include "launcher/launcher.h"

#include <cjson/cJSON.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kr_launch_default_url(kr_proto p)
{
    return p == KR_PROTO_OPENAI   ? "https://api.openai.com/v1"
           : p == KR_PROTO_GEMINI ? "https://generativelanguage.googleapis.com"
                                  : "https://api.anthropic.com";
}

const char *kr_launch_issuer(kr_cred_class cls)
{
    switch (cls) {
    case KR_CRED_ANTHROPIC_OAUTH:
    case KR_CRED_ANTHROPIC_API_KEY: return "https://api.anthropic.com:443";
    case KR_CRED_OPENAI_KEY: return "https://api.openai.com:443";
    case KR_CRED_GOOGLE_KEY: return "https://generativelanguage.googleapis.com:443";
    default: return NULL;
    }
}

const char *kr_launch_base_var(const kr_runtimes *rts, kr_proto p)
{
    for (size_t i = 0; i < rts->n; i++)
        if (rts->rt[i].proto == p) return rts->rt[i].set_base_url;
    return p == KR_PROTO_OPENAI   ? "OPENAI_BASE_URL"
           : p == KR_PROTO_GEMINI ? "GOOGLE_GEMINI_BASE_URL"
                                  : "ANTHROPIC_BASE_URL";
}

/* ---- payload parsing ---- */

static bool valid_name(const char *k, size_t n)
{
    if (n == 0 || n > 127) return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static int parse_json_payload(const char *text, size_t n, kr_env *out, kr_diag *d)
{
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!root) return kr_fail(d, KR_EPARSE, "payload is not valid JSON");
    int rc = 0;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(root, "env");
    if (cJSON_IsString(err)) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        rc = kr_fail(d, KR_EINVAL, "the payload carries a provisioning error: %s%s%.200s",
                     err->valuestring, cJSON_IsString(msg) ? ": " : "",
                     cJSON_IsString(msg) ? msg->valuestring : "");
        goto out;
    }
    if (!cJSON_IsArray(env)) {
        rc = kr_fail(d, KR_EPARSE, "payload JSON has no \"env\" array");
        goto out;
    }
    const cJSON *v;
    size_t count = 0;
    cJSON_ArrayForEach(v, env)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(v, "key");
        const cJSON *val = cJSON_GetObjectItemCaseSensitive(v, "value");
        if (!cJSON_IsString(k) || !cJSON_IsString(val) ||
            !valid_name(k->valuestring, strlen(k->valuestring))) {
            rc = kr_fail(d, KR_EPARSE, "payload env entry %zu is not {key, value}", count);
            goto out;
        }
        if (++count > KR_LAUNCH_MAX_VARS) {
            rc = kr_fail(d, KR_ETOOBIG, "payload has more than %d variables", KR_LAUNCH_MAX_VARS);
            goto out;
        }
        kr_env_set(out, k->valuestring, val->valuestring, KR_ORIGIN_PAYLOAD);
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* KEY='value' lines as `keyrail provision --format env` writes them
 * ('\'' inside quotes is a quote); also KEY=value without quotes; blank
 * lines and # comments ignored. */
static int parse_env_payload(const char *text, size_t n, kr_env *out, kr_diag *d)
{
    const char *p = text, *end = text + n;
    int line = 0;
    size_t count = 0;
    kr_buf val = KR_BUF_INIT(KR_LAUNCH_MAX_PAYLOAD);
    int rc = 0;
    while (p < end) {
        line++;
        const char *s = p;
        while (s < end && (*s == ' ' || *s == '\t')) s++;
        if (s < end && (*s == '\n' || *s == '#')) {
            const char *nl = memchr(s, '\n', (size_t)(end - s));
            p = nl ? nl + 1 : end;
            continue;
        }
        if (s == end) break;
        const char *eq = s;
        while (eq < end && *eq != '=' && *eq != '\n') eq++;
        if (eq == end || *eq != '=' || !valid_name(s, (size_t)(eq - s))) {
            rc = kr_fail(d, KR_EPARSE, "payload line %d: expected KEY=value", line);
            break;
        }
        char key[128];
        kr_memlcpy(key, sizeof key, s, (size_t)(eq - s));
        const char *q = eq + 1;
        kr_buf_reset(&val);
        bool ok = true;
        while (q < end && *q != '\n') {
            if (*q == '\'') {
                q++;
                const char *close = memchr(q, '\'', (size_t)(end - q));
                if (!close) {
                    ok = false;
                    break;
                }
                if (kr_buf_append(&val, q, (size_t)(close - q))) {
                    ok = false;
                    break;
                }
                q = close + 1;
                if (q + 2 < end && q[0] == '\\' && q[1] == '\'' ) {
                    kr_buf_putc(&val, '\'');
                    q += 2;
                }
            } else if (*q == ' ' || *q == '\t' || *q == '"' || *q == '\\' || *q == '$' ||
                       *q == '`' || (unsigned char)*q < 0x20) {
                ok = false; /* anything a shell would interpret: refuse, do not guess */
                break;
            } else {
                kr_buf_putc(&val, *q++);
            }
        }
        if (!ok) {
            rc = kr_fail(d, KR_EPARSE, "payload line %d: bad value for %s", line, key);
            break;
        }
        if (++count > KR_LAUNCH_MAX_VARS) {
            rc = kr_fail(d, KR_ETOOBIG, "payload has more than %d variables", KR_LAUNCH_MAX_VARS);
            break;
        }
        if (memchr(val.data ? val.data : "", 0, val.len)) {
            rc = kr_fail(d, KR_EPARSE, "payload line %d: NUL in value", line);
            break;
        }
        kr_env_set(out, key, val.data ? val.data : "", KR_ORIGIN_PAYLOAD);
        p = q < end ? q + 1 : end;
    }
    if (val.data) sodium_memzero(val.data, val.len);
    kr_buf_free(&val);
    return rc;
}

int kr_payload_parse(const char *text, size_t n, kr_env *out, kr_diag *d)
{
    memset(out, 0, sizeof *out);
    if (n > KR_LAUNCH_MAX_PAYLOAD)
        return kr_fail(d, KR_ETOOBIG, "payload larger than %u bytes", KR_LAUNCH_MAX_PAYLOAD);
    if (memchr(text, 0, n)) return kr_fail(d, KR_EPARSE, "payload contains a NUL byte");
    size_t i = 0;
    while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    int rc = (i < n && text[i] == '{') ? parse_json_payload(text, n, out, d)
                                       : parse_env_payload(text, n, out, d);
    if (rc) kr_env_free(out);
    return rc;
}


/* ---- the rules ---- */

__attribute__((format(printf, 7, 8))) static void decide(kr_launch *l, const kr_runtimes *rts,
                                                         const char *var, kr_action act,
                                                         const kr_env_var *v, const char *rule,
                                                         const char *fmt, ...)
{
    if (l->nd >= KR_LAUNCH_MAX_DECISIONS) return;
    kr_decision *x = &l->d[l->nd++];
    memset(x, 0, sizeof *x);
    kr_strlcpy(x->var, var, sizeof x->var);
    x->action = act;
    if (v) {
        size_t vl = strlen(v->value), off = 0, len = vl;
        x->cls = kr_env_var_class(rts, NULL, var, v->value);
        if (x->cls == KR_CRED_NONE || x->cls == KR_CRED_UNKNOWN) { /* "x-api-key: sk-…" */
            kr_cred_class found = kr_cred_find(v->value, vl, &off, &len);
            if (found != KR_CRED_NONE) x->cls = found;
        }
        x->origin = v->origin;
        if (x->cls != KR_CRED_NONE) kr_cred_fingerprint(v->value + off, len, x->fp);
    } else {
        x->origin = KR_ORIGIN_LAUNCHER;
    }
    kr_strlcpy(x->rule, rule, sizeof x->rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->why, sizeof x->why, fmt, ap);
    va_end(ap);
}

static bool same_token(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && sodium_memcmp(a, b, la) == 0;
}

static void drop(kr_launch *l, const kr_runtimes *rts, const char *var, const char *rule,
                 const char *why)
{
    const kr_env_var *v = kr_env_get(&l->env, var);
    if (!v) return;
    decide(l, rts, var, KR_ACT_DROP, v, rule, "%s", why);
    kr_env_unset(&l->env, var);
}

/* Every variable of a role for one protocol, over all profiles, in order,
 * without repeats. Returns how many were stored in out. */
static size_t role_vars(const kr_runtimes *rts, kr_rtvar_role role, int proto,
                        const char *out[], size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < rts->n; i++) {
        if (proto >= 0 && (int)rts->rt[i].proto != proto) continue;
        const kr_rt_list *lst = &rts->rt[i].vars[role];
        for (size_t j = 0; j < lst->n; j++) {
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++) seen = !strcmp(out[k], lst->v[j]);
            if (!seen && n < cap) out[n++] = lst->v[j];
        }
    }
    return n;
}

static bool sets_dir(const kr_runtimes *rts, const char *var)
{
    for (size_t i = 0; i < rts->n; i++)
        if (rts->rt[i].file[0] && !strcmp(rts->rt[i].dir_env, var)) return true;
    return false;
}

/* L1, L6, L7: what of the inherited environment may stay. */
static void take_inherited(kr_launch *l, const kr_launch_in *in)
{
    const kr_runtimes *rts = in->rts;
    for (size_t i = 0; i < in->inherited->n; i++) {
        const kr_env_var *v = &in->inherited->v[i];
        if (!strncmp(v->key, "KEYRAIL_", 8)) {
            decide(l, rts, v->key, KR_ACT_DROP, v, "L1",
                   "keyrail's own variables never reach the agent");
            continue;
        }
        int role = kr_runtimes_role(rts, v->key);
        if (role == KR_RTVAR_HEADERS) {
            decide(l, rts, v->key, KR_ACT_DROP, v, "L6",
                   "extra request headers could carry a second credential to the host");
            continue;
        }
        if (role == KR_RTVAR_PROVIDER) {
            decide(l, rts, v->key, KR_ACT_DROP, v, "L6",
                   "switches the agent to another provider, host or configuration than the workspace's");
            continue;
        }
        if (role == KR_RTVAR_CONFIG && sets_dir(rts, v->key)) {
            decide(l, rts, v->key, KR_ACT_DROP, v, "L6",
                   "keyrail gives the agent its own config directory");
            continue;
        }
        if (role != KR_RTVAR_CREDENTIAL) {
            size_t off, len;
            kr_cred_class c = kr_cred_find(v->value, strlen(v->value), &off, &len);
            if (c != KR_CRED_NONE) {
                decide(l, rts, v->key, KR_ACT_DROP, v, "L7",
                       role < 0 ? "holds a %s credential; no runtime profile names this variable"
                                : "holds a %s credential in a variable that is not a credential's",
                       kr_cred_class_name(c));
                continue;
            }
        }
        kr_env_set(&l->env, v->key, v->value, KR_ORIGIN_INHERITED);
    }
}

/* L2: the payload wins; its placeholder becomes our token. */
static int take_payload(kr_launch *l, const kr_launch_in *in, kr_diag *d)
{
    const kr_runtimes *rts = in->rts;
    const kr_env_var *prov = kr_env_get(in->payload, "LLM_PROVIDER");
    kr_strlcpy(l->route, prov ? prov->value : "", sizeof l->route);
    for (size_t i = 0; i < in->payload->n; i++) {
        const kr_env_var *v = &in->payload->v[i];
        if (!strncmp(v->key, "KEYRAIL_", 8)) {
            decide(l, rts, v->key, KR_ACT_DROP, v, "L1",
                   "keyrail's own variables never reach the agent");
            continue;
        }
        const char *value = v->value;
        if (!strcmp(value, KR_TOKEN_PLACEHOLDER)) {
            if (!in->token || !*in->token)
                return kr_fail(d, KR_EINVAL,
                               "the payload needs the workspace token for %s: set "
                               "KEYRAIL_WORKSPACE_TOKEN (or pass --token)",
                               v->key);
            value = in->token;
        }
        const kr_env_var *old = kr_env_get(&l->env, v->key);
        int role = kr_runtimes_role(rts, v->key);
        if (old && strcmp(old->value, value) && (role == KR_RTVAR_CREDENTIAL || role == KR_RTVAR_BASE_URL))
            decide(l, rts, v->key, KR_ACT_DROP, old, "L2", "replaced by the payload's value");
        kr_env_set(&l->env, v->key, value, KR_ORIGIN_PAYLOAD);
    }
    return 0;
}

/* L3, L4, L5 and the other base URLs (L6) of one protocol. */
static void one_protocol(kr_launch *l, const kr_launch_in *in, kr_proto p)
{
    const kr_runtimes *rts = in->rts;
    const char *token = in->token;
    bool platform = !strcmp(l->route, "platform");
    kr_proto_view *pv = &l->proto[p];
    const char *base_var = kr_launch_base_var(rts, p);
    const char *creds[4 * KR_RT_MAX_NAMES], *bases[4 * KR_RT_MAX_NAMES];
    size_t ncred = role_vars(rts, KR_RTVAR_CREDENTIAL, (int)p, creds, 4 * KR_RT_MAX_NAMES);
    size_t nbase = role_vars(rts, KR_RTVAR_BASE_URL, (int)p, bases, 4 * KR_RT_MAX_NAMES);
    /* copies, not pointers: every drop() below moves the environment's entries */
    const kr_env_var *bvp = kr_env_get(&l->env, base_var);
    bool has_base = bvp != NULL;
    kr_strlcpy(pv->base_url, bvp ? bvp->value : "", sizeof pv->base_url);
    const kr_env_var *pbv = kr_env_get(in->payload, base_var); /* the payload does not change */
    pv->configured = pbv != NULL;
    /* the payload pairs this protocol's base URL with a workspace token:
     * keyrail issues those for its proxy alone (the platform route, and
     * BYOK through the proxy) */
    bool ws_paired = false;
    for (size_t i = 0; i < ncred; i++) {
        const kr_env_var *pc = kr_env_get(in->payload, creds[i]);
        if (!pc) continue;
        pv->configured = true;
        if (!strcmp(pc->value, KR_TOKEN_PLACEHOLDER) ||
            kr_cred_classify(pc->value, strlen(pc->value)) == KR_CRED_WORKSPACE_TOKEN)
            ws_paired = true;
    }
    /* L6: a second base URL variable could be read instead of this one */
    for (size_t i = 0; i < nbase; i++) {
        const kr_env_var *o = kr_env_get(&l->env, bases[i]);
        if (strcmp(bases[i], base_var) && o && (!has_base || strcmp(o->value, pv->base_url))) {
            char why[200];
            kr_snprintf(why, sizeof why,
                        "another base URL variable of the %s protocol: the agent could read it "
                        "instead of %s",
                        kr_proto_name(p), base_var);
            drop(l, rts, bases[i], "L6", why);
        }
    }
    if (kr_url_origin(pv->base_url[0] ? pv->base_url : kr_launch_default_url(p), pv->host,
                      sizeof pv->host)) {
        /* a base URL we cannot read: no credential may go there */
        kr_strlcpy(pv->host, "(invalid base URL)", sizeof pv->host);
        for (size_t i = 0; i < ncred; i++)
            drop(l, rts, creds[i], "L4",
                 "the base URL is not a valid http(s) URL: no credential is sent to it");
        return;
    }
    bool base_from_payload = pbv && has_base && !strcmp(pv->base_url, pbv->value);
    pv->to_proxy = (in->proxy_origin && !strcmp(pv->host, in->proxy_origin)) ||
                   ((platform || ws_paired) && base_from_payload);
    const char *keep = NULL;
    if (pv->to_proxy) {
        /* L3: only the workspace token goes to the proxy */
        for (size_t i = 0; i < ncred; i++) {
            const kr_env_var *v = kr_env_get(&l->env, creds[i]);
            if (!v) continue;
            bool ours = token && *token && same_token(v->value, token);
            bool ws_cls = kr_cred_classify(v->value, strlen(v->value)) == KR_CRED_WORKSPACE_TOKEN;
            if (!keep && v->origin == KR_ORIGIN_PAYLOAD && (ours || (!token && ws_cls))) {
                keep = creds[i];
                continue;
            }
            drop(l, rts, creds[i], "L3",
                 "the keyrail proxy takes only this workspace's token; other credentials are "
                 "dropped, never moved");
        }
    } else {
        /* L4/L5: a vendor host keeps only the payload's credential, and only
         * when its shape does not name another issuer */
        for (size_t i = 0; i < ncred; i++) {
            const kr_env_var *v = kr_env_get(&l->env, creds[i]);
            if (!v) continue;
            kr_cred_class cls = kr_cred_classify(v->value, strlen(v->value));
            const char *iss = kr_launch_issuer(cls);
            if (v->origin != KR_ORIGIN_PAYLOAD) {
                drop(l, rts, creds[i], "L4",
                     "an inherited credential: only the credential the control plane chose "
                     "with this host is passed on");
            } else if (cls == KR_CRED_WORKSPACE_TOKEN) {
                drop(l, rts, creds[i], "L4",
                     "a workspace token is only for the keyrail proxy, not a vendor");
            } else if (!base_from_payload || (iss && strcmp(iss, pv->host))) {
                drop(l, rts, creds[i], "L4",
                     "the payload's credential does not match the host the agent will call");
            } else if (keep) {
                drop(l, rts, creds[i], "L5", "one credential per protocol: another one was chosen");
            } else {
                keep = creds[i];
            }
        }
    }
    if (keep) kr_strlcpy(pv->cred_var, keep, sizeof pv->cred_var);
}

/* L8: the private config files, their directory variable and arguments. */
static int runtime_files(kr_launch *l, const kr_launch_in *in, kr_diag *d)
{
    const kr_runtimes *rts = in->rts;
    for (size_t i = 0; i < rts->n; i++) {
        const kr_runtime *rt = &rts->rt[i];
        if (!rt->file[0]) continue;
        const kr_proto_view *pv = &l->proto[rt->proto];
        const char *base = pv->base_url[0] ? pv->base_url : kr_launch_default_url(rt->proto);
        const char *cred = pv->cred_var[0] ? pv->cred_var : rt->set_bearer;
        const kr_env_var *mv = rt->set_model[0] ? kr_env_get(&l->env, rt->set_model) : NULL;
        kr_launch_file *f = &l->files[l->nfiles++];
        f->rt = rt;
        kr_buf_init(&f->content, 1u << 20);
        int rc = kr_runtime_render_file(rt, base, cred, mv ? mv->value : "", &f->content, d);
        if (rc) return rc;
        unsigned char h[4];
        crypto_generichash(h, sizeof h, (const unsigned char *)(f->content.data ? f->content.data : ""),
                           f->content.len, (const unsigned char *)rt->name, strlen(rt->name));
        char hex[9];
        kr_hex(h, sizeof h, hex);
        if (in->state_dir) {
            if (kr_snprintf(f->dir, sizeof f->dir, "%s/%s-%s", in->state_dir, rt->name, hex) ||
                kr_snprintf(f->path, sizeof f->path, "%s/%s", f->dir, rt->file))
                return kr_fail(d, KR_EINVAL, "the state directory path is too long");
        } else {
            kr_snprintf(f->path, sizeof f->path, "%s-%s/%s", rt->name, hex, rt->file);
        }
        if (rt->dir_env[0] && f->dir[0]) {
            kr_env_set(&l->env, rt->dir_env, f->dir, KR_ORIGIN_LAUNCHER);
            decide(l, rts, rt->dir_env, KR_ACT_SET, NULL, "L8",
                   "%s's private config: %s points it at %s with %s", rt->name, rt->file, pv->host,
                   cred);
        }
    }
    /* the profiles' fixed settings, over whatever was inherited */
    for (size_t i = 0; i < rts->n; i++) {
        const kr_runtime *rt = &rts->rt[i];
        for (size_t j = 0; j < rt->set_env.n; j++) {
            char name[64];
            const char *eq = strchr(rt->set_env.v[j], '=');
            kr_memlcpy(name, sizeof name, rt->set_env.v[j], (size_t)(eq - rt->set_env.v[j]));
            const kr_env_var *old = kr_env_get(&l->env, name);
            if (old && strcmp(old->value, eq + 1))
                decide(l, rts, name, KR_ACT_DROP, old, "L8", "replaced by %s's fixed setting", rt->name);
            kr_env_set(&l->env, name, eq + 1, KR_ORIGIN_LAUNCHER);
            decide(l, rts, name, KR_ACT_SET, NULL, "L8", "%s's fixed setting", rt->name);
        }
    }
    if (!in->argv || in->argc < 1) return 0;
    l->agent = kr_runtimes_for_command(rts, in->argv[0]);
    const kr_launch_file *af = NULL;
    for (size_t i = 0; l->agent && i < l->nfiles; i++)
        if (l->files[i].rt == l->agent) af = &l->files[i];
    size_t extra = af ? l->agent->nargs : 0;
    l->argv = kr_xcalloc((size_t)in->argc + extra + 1, sizeof *l->argv);
    int n = 0;
    l->argv[n++] = kr_strdup(in->argv[0]);
    for (size_t i = 0; i < extra; i++)
        l->argv[n++] = kr_strdup(!strcmp(l->agent->args[i], "${file}") ? af->path : l->agent->args[i]);
    for (int i = 1; i < in->argc; i++) l->argv[n++] = kr_strdup(in->argv[i]);
    l->argc = n;
    l->nadded = extra;
    return 0;
}

/* L9: confined, the proxy is reached through the relay and everything else
 * through the CONNECT gate. */
static void confine_rules(kr_launch *l, const kr_launch_in *in)
{
    const kr_runtimes *rts = in->rts;
    for (int p = 0; in->relay_origin && p < KR_PROTO__COUNT; p++) {
        kr_proto_view *pv = &l->proto[p];
        if (!pv->to_proxy) continue;
        const char *bases[4 * KR_RT_MAX_NAMES];
        size_t nb = role_vars(rts, KR_RTVAR_BASE_URL, p, bases, 4 * KR_RT_MAX_NAMES);
        size_t hl = strlen(pv->host);
        for (size_t i = 0; i < nb; i++) {
            const kr_env_var *v = kr_env_get(&l->env, bases[i]);
            if (!v || strncmp(v->value, pv->host, hl) || (v->value[hl] && v->value[hl] != '/'))
                continue;
            char url[600];
            if (kr_snprintf(url, sizeof url, "%s%s", in->relay_origin, v->value + hl)) continue;
            kr_env_set(&l->env, bases[i], url, KR_ORIGIN_LAUNCHER);
            decide(l, rts, bases[i], KR_ACT_SET, NULL, "L9",
                   "confined: the keyrail proxy through keyrail run's relay (%s)", pv->host);
            if (!strcmp(bases[i], kr_launch_base_var(rts, (kr_proto)p)))
                kr_strlcpy(pv->base_url, url, sizeof pv->base_url);
        }
        kr_strlcpy(pv->relay, in->relay_origin, sizeof pv->relay);
    }
    if (!in->gate_url) return;
    static const char *const proxy_vars[] = {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                             "ALL_PROXY",   "all_proxy"};
    for (size_t i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++) {
        const kr_env_var *old = kr_env_get(&l->env, proxy_vars[i]);
        if (old && strcmp(old->value, in->gate_url))
            decide(l, rts, proxy_vars[i], KR_ACT_DROP, old, "L9",
                   "confined: replaced by keyrail run's CONNECT gate");
        kr_env_set(&l->env, proxy_vars[i], in->gate_url, KR_ORIGIN_LAUNCHER);
    }
    static const char *const no_proxy[] = {"NO_PROXY", "no_proxy"};
    for (size_t i = 0; i < 2; i++)
        kr_env_set(&l->env, no_proxy[i], "127.0.0.1,localhost,::1", KR_ORIGIN_LAUNCHER);
    kr_env_set(&l->env, "NODE_USE_ENV_PROXY", "1", KR_ORIGIN_LAUNCHER);
    decide(l, rts, "HTTPS_PROXY", KR_ACT_SET, NULL, "L9",
           "confined: HTTP(S)_PROXY and ALL_PROXY name keyrail run's CONNECT gate (%s), NO_PROXY "
           "loopback, NODE_USE_ENV_PROXY=1",
           in->gate_url);
}

int kr_launch_compute(const kr_launch_in *in, kr_launch *l, kr_diag *d)
{
    memset(l, 0, sizeof *l);
    take_inherited(l, in);
    int rc = take_payload(l, in, d);
    for (int p = 0; !rc && p < KR_PROTO__COUNT; p++) one_protocol(l, in, (kr_proto)p);
    /* record what remains */
    for (int p = 0; !rc && p < KR_PROTO__COUNT; p++) {
        kr_proto_view *pv = &l->proto[p];
        if (!pv->cred_var[0]) continue;
        const kr_env_var *v = kr_env_get(&l->env, pv->cred_var);
        pv->cls = kr_cred_classify(v->value, strlen(v->value));
        kr_cred_fingerprint(v->value, strlen(v->value), pv->fp);
        decide(l, in->rts, pv->cred_var, v->origin == KR_ORIGIN_PAYLOAD ? KR_ACT_SET : KR_ACT_KEEP,
               v, pv->to_proxy ? "L3" : "L4", "the %s credential, for %s",
               kr_proto_name((kr_proto)p), pv->host);
    }
    if (!rc) confine_rules(l, in);
    if (!rc) rc = runtime_files(l, in, d);
    if (rc) {
        kr_launch_free(l);
        return rc;
    }
    kr_env_sort(&l->env);
    return 0;
}

void kr_launch_free(kr_launch *l)
{
    kr_env_free(&l->env);
    for (size_t i = 0; i < l->nfiles; i++) kr_buf_free(&l->files[i].content);
    for (int i = 0; l->argv && i < l->argc; i++) free(l->argv[i]);
    free(l->argv);
    memset(l, 0, sizeof *l);
}

/* ---- rendering ---- */

static const char *act_name(kr_action a)
{
    return a == KR_ACT_DROP ? "drop" : a == KR_ACT_SET ? "set" : "keep";
}

void kr_launch_render_text(const kr_launch *l, kr_buf *out)
{
    kr_buf_printf(out, "route: %s\n", l->route[0] ? l->route : "(payload names none)");
    for (size_t i = 0; i < l->nd; i++) {
        const kr_decision *x = &l->d[i];
        kr_buf_printf(out, "  %-5s %-26s %-18s %-9s %-10s %s %s\n", act_name(x->action), x->var,
                      kr_cred_class_name(x->cls), x->fp[0] ? x->fp : "-",
                      kr_origin_name(x->origin), x->rule, x->why);
    }
    for (int p = 0; p < KR_PROTO__COUNT; p++) {
        const kr_proto_view *pv = &l->proto[p];
        kr_buf_printf(out, "%s: calls %s%s%s%s with %s", kr_proto_name((kr_proto)p), pv->host,
                      pv->to_proxy ? " (keyrail proxy)" : "", pv->relay[0] ? " through the relay " : "",
                      pv->relay, pv->cred_var[0] ? pv->cred_var : "no credential");
        if (pv->cred_var[0]) kr_buf_printf(out, " (%s %s)", kr_cred_class_name(pv->cls), pv->fp);
        kr_buf_putc(out, '\n');
    }
    for (size_t i = 0; i < l->nfiles; i++) {
        const kr_launch_file *f = &l->files[i];
        kr_buf_printf(out, "%s: %s file %s%s%s%s\n", f->rt->name, kr_proto_name(f->rt->proto),
                      f->path, f->rt->dir_env[0] ? " (" : "", f->rt->dir_env,
                      f->rt->dir_env[0] ? ")" : "");
        const char *c = f->content.data ? f->content.data : "";
        while (*c) {
            const char *nl = strchr(c, '\n');
            size_t n = nl ? (size_t)(nl - c) : strlen(c);
            kr_buf_printf(out, "    %.*s\n", (int)n, c);
            c += n + (nl ? 1 : 0);
        }
    }
    if (l->agent) {
        kr_buf_printf(out, "agent: %s (runtime %s)", l->argv ? l->argv[0] : "", l->agent->name);
        for (size_t i = 0; i < l->nadded; i++)
            kr_buf_printf(out, "%s%s", i ? " " : "; arguments added: ", l->argv[i + 1]);
        kr_buf_putc(out, '\n');
    }
}

static void json_str(kr_buf *out, const char *s)
{
    kr_buf_putc(out, '"');
    kr_buf_json_str(out, s, strlen(s));
    kr_buf_putc(out, '"');
}

void kr_launch_render_json(const kr_launch *l, kr_buf *out)
{
    kr_buf_puts(out, "{\"route\":");
    json_str(out, l->route);
    kr_buf_puts(out, ",\"decisions\":[");
    for (size_t i = 0; i < l->nd; i++) {
        const kr_decision *x = &l->d[i];
        kr_buf_puts(out, i ? ",{\"var\":" : "{\"var\":");
        json_str(out, x->var);
        kr_buf_printf(out, ",\"action\":\"%s\",\"class\":\"%s\",\"fingerprint\":\"%s\","
                           "\"origin\":\"%s\",\"rule\":\"%s\",\"why\":",
                      act_name(x->action), kr_cred_class_name(x->cls), x->fp,
                      kr_origin_name(x->origin), x->rule);
        json_str(out, x->why);
        kr_buf_putc(out, '}');
    }
    kr_buf_puts(out, "],\"protocols\":{");
    for (int p = 0; p < KR_PROTO__COUNT; p++) {
        const kr_proto_view *pv = &l->proto[p];
        kr_buf_printf(out, "%s\"%s\":{\"host\":", p ? "," : "", kr_proto_name((kr_proto)p));
        json_str(out, pv->host);
        kr_buf_printf(out, ",\"proxy\":%s,\"configured\":%s,\"credential_var\":",
                      pv->to_proxy ? "true" : "false", pv->configured ? "true" : "false");
        json_str(out, pv->cred_var);
        kr_buf_puts(out, ",\"relay\":");
        json_str(out, pv->relay);
        kr_buf_printf(out, ",\"class\":\"%s\",\"fingerprint\":\"%s\"}",
                      pv->cred_var[0] ? kr_cred_class_name(pv->cls) : "none", pv->fp);
    }
    kr_buf_puts(out, "},\"files\":[");
    for (size_t i = 0; i < l->nfiles; i++) {
        const kr_launch_file *f = &l->files[i];
        kr_buf_puts(out, i ? ",{\"runtime\":" : "{\"runtime\":");
        json_str(out, f->rt->name);
        kr_buf_puts(out, ",\"path\":");
        json_str(out, f->path);
        kr_buf_puts(out, ",\"dir_env\":");
        json_str(out, f->rt->dir_env);
        kr_buf_puts(out, ",\"content\":");
        json_str(out, f->content.data ? f->content.data : "");
        kr_buf_putc(out, '}');
    }
    kr_buf_puts(out, "],\"agent\":");
    if (l->agent) {
        kr_buf_puts(out, "{\"runtime\":");
        json_str(out, l->agent->name);
        kr_buf_puts(out, ",\"added_args\":[");
        for (size_t i = 0; i < l->nadded; i++) {
            if (i) kr_buf_putc(out, ',');
            json_str(out, l->argv[i + 1]);
        }
        kr_buf_puts(out, "]}");
    } else {
        kr_buf_puts(out, "null");
    }
    kr_buf_putc(out, '}');
}
