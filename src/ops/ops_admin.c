/*
 * ops_admin.c -- admin tokens and the audit log (ops_handlers.h).
 */
#include "ops/ops_handlers.h"
#include "proxy/pool.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *admin_json(const kr_admin_token *t)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)t->id);
    cJSON_AddStringToObject(j, "prefix", t->prefix);
    cJSON_AddStringToObject(j, "scope", kr_admin_scope_name(t->scope));
    if (t->scope == KR_ADMIN_ORG) cJSON_AddStringToObject(j, "org", t->org_slug);
    else cJSON_AddNullToObject(j, "org");
    cJSON_AddStringToObject(j, "name", t->name);
    kr_ops_add_lifetime(j, t->created_at, t->expires_at, t->revoked_at);
    return j;
}

int kr_op_admin_token_mint(kr_op_call *c, cJSON *out, kr_diag *d)
{
    const char *scope = kr_op_str(c, "scope"), *org = kr_op_str(c, "org");
    const char *name = kr_op_str(c, "name") ? kr_op_str(c, "name") : "";
    kr_admin_scope sc;
    if (!strcmp(scope, "operator")) sc = KR_ADMIN_OPERATOR;
    else if (!strcmp(scope, "org")) sc = KR_ADMIN_ORG;
    else return kr_fail(d, KR_EINVAL, "scope is operator or org");
    if ((sc == KR_ADMIN_ORG) != (org != NULL))
        return kr_fail(d, KR_EINVAL, "an org-scope token names its org; an operator token none");
    if (strlen(name) > 100 || strpbrk(name, "\r\n\t\x1b"))
        return kr_fail(d, KR_EINVAL, "name must be one line of at most 100 bytes");
    int rc;
    int64_t org_id = 0;
    if (org) {
        if ((rc = kr_org_find(c->st, org, &c->org, d))) return rc;
        c->has_org = true;
        org_id = c->org.id;
    }
    int64_t ttl = 0;
    if (kr_op_str(c, "ttl") && (rc = kr_token_ttl_parse(kr_op_str(c, "ttl"), &ttl, d))) return rc;
    char tok[KR_ADMIN_TOKEN_LEN + 1], hash[65], prefix[16], fp[KR_FP_LEN];
    kr_admin_token_generate(tok);
    kr_token_hash(tok, strlen(tok), hash);
    kr_memlcpy(prefix, sizeof prefix, tok, 12);
    kr_cred_fingerprint(tok, strlen(tok), fp);
    kr_admin_token t;
    rc = kr_admin_token_insert(c->st, hash, prefix, sc, org_id, name, ttl,
                               &t, d);
    if (!rc) {
        cJSON *j = admin_json(&t);
        cJSON_AddStringToObject(j, "token", tok); /* shown once */
        cJSON_AddStringToObject(j, "fingerprint", fp);
        kr_ops_merge(out, j);
        kr_snprintf(c->target, sizeof c->target, "admin token %lld", (long long)t.id);
        kr_snprintf(c->detail, sizeof c->detail, "%s scope%s%s, fingerprint %s", scope,
                    org ? " for " : "", org ? c->org.slug : "", fp);
    }
    sodium_memzero(tok, sizeof tok);
    return rc;
}

int kr_op_admin_token_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_admin_token *t;
    size_t n;
    int rc = kr_admin_token_list(c->st, &t, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(items, admin_json(&t[i]));
    free(t);
    return 0;
}

int kr_op_admin_token_revoke(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t id = kr_op_int(c, "id", 0);
    kr_snprintf(c->target, sizeof c->target, "admin token %lld", (long long)id);
    int rc = kr_admin_token_revoke(c->st, id, d);
    kr_admin_token t;
    if (!rc) rc = kr_admin_token_get(c->st, id, &t, d);
    if (rc) return rc;
    if (t.org_id) {
        c->org.id = t.org_id;
        kr_strlcpy(c->org.slug, t.org_slug, sizeof c->org.slug);
        c->has_org = true;
    }
    kr_ops_merge(out, admin_json(&t));
    return 0;
}

int kr_op_audit_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_audit_filter f = {0};
    int rc = kr_ops_org_filter(c, &f.org_id, d); /* an org admin: its own org's entries only */
    if (rc) return rc;
    f.action = kr_op_str(c, "action");
    f.actor = kr_op_str(c, "actor");
    f.since = kr_op_int(c, "since", 0);
    f.until = kr_op_int(c, "until", 0);
    int64_t limit = kr_op_int(c, "limit", 100);
    if (limit < 1 || limit > 1000) return kr_fail(d, KR_EINVAL, "limit must be 1..1000");
    const char *cur = kr_op_str(c, "cursor");
    uint64_t before = 0;
    if (cur && (kr_parse_u64(cur, strlen(cur), &before) || before > INT64_MAX))
        return kr_fail(d, KR_EINVAL, "cursor is not one this API gave out");
    f.before_id = (int64_t)before;
    f.limit = (size_t)limit + 1; /* one more: is there a next page? */
    kr_audit_row *rows;
    size_t n;
    if ((rc = kr_audit_list(c->st, &f, &rows, &n, d))) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    size_t shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "id", (double)rows[i].id);
        kr_ops_add_time(j, "at", rows[i].at);
        cJSON_AddNumberToObject(j, "at_ms", (double)rows[i].at);
        cJSON_AddStringToObject(j, "actor", rows[i].actor);
        cJSON_AddStringToObject(j, "actor_scope", rows[i].actor_scope);
        cJSON_AddStringToObject(j, "action", rows[i].action);
        cJSON_AddStringToObject(j, "target", rows[i].target);
        cJSON_AddStringToObject(j, "request_id", rows[i].request_id);
        cJSON_AddStringToObject(j, "outcome", rows[i].outcome);
        cJSON_AddStringToObject(j, "detail", rows[i].detail);
        cJSON_AddItemToArray(items, j);
    }
    if (n > (size_t)limit) {
        char next[24];
        snprintf(next, sizeof next, "%lld", (long long)rows[shown - 1].id);
        cJSON_AddStringToObject(out, "next_cursor", next);
    } else {
        cJSON_AddNullToObject(out, "next_cursor");
    }
    free(rows);
    return 0;
}

/* ---- the platform key pools ---- */

int kr_op_upstream_keys(kr_op_call *c, cJSON *out, kr_diag *d)
{
    (void)d;
    const kr_registry *reg = c->env->reg;
    const kr_pools *ps = c->env->pools;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    int64_t now = kr_now_ms();
    for (size_t i = 0; i < reg->nproviders && i < KR_REGISTRY_MAX_PROVIDERS; i++) {
        const kr_provider *pr = &reg->providers[i];
        if (!pr->platform) continue;
        for (size_t dp = 0; dp < kr_provider_ndeployments(pr); dp++) {
            kr_deployment_view v;
            kr_provider_deployment(pr, dp, &v);
            const kr_pool_dep *dep = ps && dp < ps->pools[i].ndeps ? &ps->pools[i].deps[dp] : NULL;
            char origin[300];
            if (kr_url_origin(v.base_url, origin, sizeof origin)) kr_strlcpy(origin, "(invalid)", sizeof origin);
            for (size_t k = 0; k < v.nkeys; k++) {
                cJSON *j = cJSON_CreateObject();
                cJSON_AddStringToObject(j, "provider", pr->name);
                cJSON_AddStringToObject(j, "deployment", origin);
                cJSON_AddBoolToObject(j, "fallback", dp > 0);
                cJSON_AddStringToObject(j, "key_env", v.keys[k]);
                cJSON_AddNumberToObject(j, "weight", v.weight[k]);
                if (dep && k < dep->nkeys) {
                    kr_pool_key *key = (kr_pool_key *)&dep->keys[k];
                    int out_st = atomic_load(&key->out_status);
                    int64_t open = atomic_load(&((kr_pool_dep *)dep)->open_until);
                    const char *state = !key->auth                      ? "not-set"
                                        : out_st                        ? "refused"
                                        : atomic_load(&key->cool_until) > now ? "cooling"
                                                                              : "in-rotation";
                    cJSON_AddStringToObject(j, "state", state);
                    cJSON_AddStringToObject(j, "circuit", !open ? "closed" : now < open ? "open" : "half-open");
                    if (out_st) cJSON_AddNumberToObject(j, "refused_with", out_st);
                    if (key->auth) {
                        cJSON_AddStringToObject(j, "class", key->cls);
                        cJSON_AddStringToObject(j, "fingerprint", key->fp);
                    }
                    cJSON_AddNumberToObject(j, "requests", (double)atomic_load(&key->picked));
                } else {
                    /* the command line: the configuration; the state is the server's */
                    cJSON_AddStringToObject(j, "state", "unknown here (GET /admin/v1/upstream/keys "
                                                        "on the server)");
                }
                cJSON_AddItemToArray(items, j);
            }
        }
    }
    return 0;
}
