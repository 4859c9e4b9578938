/*
 * launcher.c -- the rules of launcher.h: payload parsing and the agent's
 * environment. Pure: no I/O, no globals.
 */
#include "launcher/launcher.h"

#include <cjson/cJSON.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const kr_launch_cred_vars[2][3] = {
    {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"},
    {"OPENAI_API_KEY", NULL, NULL},
};
const size_t kr_launch_ncred_vars[2] = {3, 1};
static const char *const base_vars[2] = {"ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"};

const char *kr_launch_default_url(kr_proto p)
{
    return p == KR_PROTO_OPENAI ? "https://api.openai.com/v1" : "https://api.anthropic.com";
}

const char *kr_launch_issuer(kr_cred_class cls)
{
    switch (cls) {
    case KR_CRED_ANTHROPIC_OAUTH:
    case KR_CRED_ANTHROPIC_API_KEY: return "https://api.anthropic.com:443";
    case KR_CRED_OPENAI_KEY: return "https://api.openai.com:443";
    default: return NULL;
    }
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

static bool is_cred_var(kr_proto p, const char *k)
{
    for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++)
        if (!strcmp(k, kr_launch_cred_vars[p][i])) return true;
    return false;
}


__attribute__((format(printf, 6, 7))) static void decide(kr_launch *l, const char *var,
                                                         kr_action act, const kr_env_var *v,
                                                         const char *rule, const char *fmt, ...)
{
    if (l->nd >= KR_LAUNCH_MAX_DECISIONS) return;
    kr_decision *x = &l->d[l->nd++];
    memset(x, 0, sizeof *x);
    kr_strlcpy(x->var, var, sizeof x->var);
    x->action = act;
    if (v) {
        x->cls = kr_cred_classify(v->value, strlen(v->value));
        if (x->cls == KR_CRED_UNKNOWN && !is_cred_var(KR_PROTO_ANTHROPIC, var) &&
            !is_cred_var(KR_PROTO_OPENAI, var))
            x->cls = KR_CRED_NONE; /* not a credential: no class, no fingerprint */
        x->origin = v->origin;
        if (x->cls != KR_CRED_NONE) kr_cred_fingerprint(v->value, strlen(v->value), x->fp);
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

static void drop(kr_launch *l, const char *var, const char *rule, const char *why)
{
    const kr_env_var *v = kr_env_get(&l->env, var);
    if (!v) return;
    decide(l, var, KR_ACT_DROP, v, rule, "%s", why);
    kr_env_unset(&l->env, var);
}

int kr_launch_compute(const kr_env *payload, const kr_env *inherited, const char *token,
                      const char *proxy_origin, kr_launch *l, kr_diag *d)
{
    memset(l, 0, sizeof *l);
    /* L1: the inherited environment, minus KEYRAIL_* */
    for (size_t i = 0; i < inherited->n; i++) {
        const kr_env_var *v = &inherited->v[i];
        if (!strncmp(v->key, "KEYRAIL_", 8)) {
            decide(l, v->key, KR_ACT_DROP, v, "L1",
                   "keyrail's own variables never reach the agent");
            continue;
        }
        kr_env_set(&l->env, v->key, v->value, KR_ORIGIN_INHERITED);
    }
    /* L2: the payload wins; its placeholder becomes our token */
    const kr_env_var *prov = kr_env_get(payload, "LLM_PROVIDER");
    kr_strlcpy(l->route, prov ? prov->value : "", sizeof l->route);
    bool platform = prov && !strcmp(prov->value, "platform");
    for (size_t i = 0; i < payload->n; i++) {
        const kr_env_var *v = &payload->v[i];
        if (!strncmp(v->key, "KEYRAIL_", 8)) {
            decide(l, v->key, KR_ACT_DROP, v, "L1", "keyrail's own variables never reach the agent");
            continue;
        }
        const char *value = v->value;
        if (!strcmp(value, KR_TOKEN_PLACEHOLDER)) {
            if (!token || !*token) {
                kr_launch_free(l);
                return kr_fail(d, KR_EINVAL,
                               "the payload needs the workspace token for %s: pass --token or set "
                               "KEYRAIL_WORKSPACE_TOKEN",
                               v->key);
            }
            value = token;
        }
        const kr_env_var *old = kr_env_get(&l->env, v->key);
        bool cred = is_cred_var(KR_PROTO_ANTHROPIC, v->key) || is_cred_var(KR_PROTO_OPENAI, v->key);
        if (old && strcmp(old->value, value) && (cred || !strcmp(v->key, base_vars[0]) ||
                                                 !strcmp(v->key, base_vars[1])))
            decide(l, v->key, KR_ACT_DROP, old, "L2", "replaced by the payload's value");
        kr_env_set(&l->env, v->key, value, KR_ORIGIN_PAYLOAD);
    }
    /* per protocol: L3 / L4 / L5 */
    for (int p = 0; p < 2; p++) {
        kr_proto_view *pv = &l->proto[p];
        const kr_env_var *bv = kr_env_get(&l->env, base_vars[p]);
        const kr_env_var *pbv = kr_env_get(payload, base_vars[p]);
        pv->configured = pbv != NULL;
        for (size_t i = 0; !pv->configured && i < kr_launch_ncred_vars[p]; i++)
            if (kr_env_get(payload, kr_launch_cred_vars[p][i])) pv->configured = true;
        kr_strlcpy(pv->base_url, bv ? bv->value : "", sizeof pv->base_url);
        if (kr_url_origin(bv && bv->value[0] ? bv->value : kr_launch_default_url((kr_proto)p),
                          pv->host, sizeof pv->host)) {
            /* a base URL we cannot read: no credential may go there */
            kr_strlcpy(pv->host, "(invalid base URL)", sizeof pv->host);
            for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++)
                drop(l, kr_launch_cred_vars[p][i], "L4",
                     "the base URL is not a valid http(s) URL: no credential is sent to it");
            continue;
        }
        pv->to_proxy = (proxy_origin && !strcmp(pv->host, proxy_origin)) ||
                       (platform && pbv && bv && !strcmp(bv->value, pbv->value));
        if (pv->to_proxy) {
            /* L3: only the workspace token goes to the proxy */
            if (p == KR_PROTO_ANTHROPIC)
                drop(l, "CLAUDE_CODE_OAUTH_TOKEN", "L3",
                 "the keyrail proxy takes only the workspace token; an OAuth token is never sent "
                 "to it (nor moved anywhere else)");
            const char *keep = NULL;
            for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++) {
                const char *var = kr_launch_cred_vars[p][i];
                const kr_env_var *v = kr_env_get(&l->env, var);
                if (!v) continue;
                bool ours = token && *token && same_token(v->value, token);
                bool ws_cls = kr_cred_classify(v->value, strlen(v->value)) == KR_CRED_WORKSPACE_TOKEN;
                if (!keep && (ours || (!token && ws_cls && v->origin == KR_ORIGIN_PAYLOAD))) {
                    keep = var;
                    continue;
                }
                drop(l, var, "L3",
                     "the keyrail proxy takes only this workspace's token; other credentials are "
                     "dropped, never moved");
            }
            if (keep) kr_strlcpy(pv->cred_var, keep, sizeof pv->cred_var);
            continue;
        }
        /* L4: a vendor host keeps only credentials issued for it */
        const char *keep = NULL;
        /* the payload's credential first (L5) */
        for (size_t i = 0; i < kr_launch_ncred_vars[p] && !keep; i++) {
            const kr_env_var *v = kr_env_get(&l->env, kr_launch_cred_vars[p][i]);
            if (v && v->origin == KR_ORIGIN_PAYLOAD && pbv && bv && !strcmp(bv->value, pbv->value)) {
                kr_cred_class cls = kr_cred_classify(v->value, strlen(v->value));
                const char *iss = kr_launch_issuer(cls);
                if (cls == KR_CRED_WORKSPACE_TOKEN || (iss && strcmp(iss, pv->host))) continue;
                keep = kr_launch_cred_vars[p][i];
            }
        }
        for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++) {
            const char *var = kr_launch_cred_vars[p][i];
            const kr_env_var *v = kr_env_get(&l->env, var);
            if (!v || (keep && !strcmp(var, keep))) continue;
            kr_cred_class cls = kr_cred_classify(v->value, strlen(v->value));
            const char *iss = kr_launch_issuer(cls);
            if (keep) {
                drop(l, var, "L5", "one credential per protocol: another one was chosen");
            } else if (cls == KR_CRED_WORKSPACE_TOKEN) {
                drop(l, var, "L4", "a workspace token is only for the keyrail proxy, not a vendor");
            } else if (!iss) {
                drop(l, var, "L4",
                     v->origin == KR_ORIGIN_PAYLOAD
                         ? "the payload's credential does not match the payload's base URL"
                         : "its issuer cannot be shown (unknown shape): not sent to a vendor");
            } else if (strcmp(iss, pv->host)) {
                drop(l, var, "L4",
                     "issued for another host than the base URL: dropped, never re-routed");
            } else {
                keep = var;
            }
        }
        if (keep) kr_strlcpy(pv->cred_var, keep, sizeof pv->cred_var);
    }
    /* record what remains */
    for (int p = 0; p < 2; p++) {
        kr_proto_view *pv = &l->proto[p];
        if (!pv->cred_var[0]) continue;
        const kr_env_var *v = kr_env_get(&l->env, pv->cred_var);
        pv->cls = kr_cred_classify(v->value, strlen(v->value));
        kr_cred_fingerprint(v->value, strlen(v->value), pv->fp);
        decide(l, pv->cred_var, v->origin == KR_ORIGIN_PAYLOAD ? KR_ACT_SET : KR_ACT_KEEP, v,
               pv->to_proxy ? "L3" : "L4", "the %s credential, for %s", kr_proto_name((kr_proto)p),
               pv->host);
    }
    kr_env_sort(&l->env);
    return 0;
}

void kr_launch_free(kr_launch *l)
{
    kr_env_free(&l->env);
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
    for (int p = 0; p < 2; p++) {
        const kr_proto_view *pv = &l->proto[p];
        kr_buf_printf(out, "%s: calls %s%s with %s", kr_proto_name((kr_proto)p), pv->host,
                      pv->to_proxy ? " (keyrail proxy)" : "",
                      pv->cred_var[0] ? pv->cred_var : "no credential");
        if (pv->cred_var[0]) kr_buf_printf(out, " (%s %s)", kr_cred_class_name(pv->cls), pv->fp);
        kr_buf_putc(out, '\n');
    }
}

void kr_launch_render_json(const kr_launch *l, kr_buf *out)
{
    kr_buf_puts(out, "{\"route\":\"");
    kr_buf_json_str(out, l->route, strlen(l->route));
    kr_buf_puts(out, "\",\"decisions\":[");
    for (size_t i = 0; i < l->nd; i++) {
        const kr_decision *x = &l->d[i];
        kr_buf_printf(out, "%s{\"var\":\"", i ? "," : "");
        kr_buf_json_str(out, x->var, strlen(x->var));
        kr_buf_printf(out, "\",\"action\":\"%s\",\"class\":\"%s\",\"fingerprint\":\"%s\","
                           "\"origin\":\"%s\",\"rule\":\"%s\",\"why\":\"",
                      act_name(x->action), kr_cred_class_name(x->cls), x->fp,
                      kr_origin_name(x->origin), x->rule);
        kr_buf_json_str(out, x->why, strlen(x->why));
        kr_buf_puts(out, "\"}");
    }
    kr_buf_puts(out, "],\"protocols\":{");
    for (int p = 0; p < 2; p++) {
        const kr_proto_view *pv = &l->proto[p];
        kr_buf_printf(out, "%s\"%s\":{\"host\":\"", p ? "," : "", kr_proto_name((kr_proto)p));
        kr_buf_json_str(out, pv->host, strlen(pv->host));
        kr_buf_printf(out, "\",\"proxy\":%s,\"configured\":%s,\"credential_var\":\"%s\","
                           "\"class\":\"%s\",\"fingerprint\":\"%s\"}",
                      pv->to_proxy ? "true" : "false", pv->configured ? "true" : "false",
                      pv->cred_var, pv->cred_var[0] ? kr_cred_class_name(pv->cls) : "none", pv->fp);
    }
    kr_buf_puts(out, "}}");
}
