/*
 * ops_billing.c -- credits, limits and usage (ops_handlers.h). Amounts are
 * currency units with up to six decimals as strings ("12.50"); micro-units
 * inside.
 */
#include "ops/ops_handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void money(cJSON *o, const char *name, int64_t micros)
{
    char m[40];
    kr_money_str(micros, m, sizeof m);
    cJSON_AddStringToObject(o, name, m);
}

static int credits_out(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t bal, cap;
    int rc = kr_credits_get(c->st, c->org.id, &bal, &cap, d);
    if (rc) return rc;
    cJSON_AddStringToObject(out, "org", c->org.slug);
    money(out, "balance", bal);
    money(out, "overage_cap", cap);
    money(out, "available", bal + cap);
    cJSON_AddBoolToObject(out, "refusing", bal + cap <= 0);
    return 0;
}

int kr_op_credits_show(kr_op_call *c, cJSON *out, kr_diag *d)
{
    return credits_out(c, out, d);
}

int kr_op_credits_add(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t amt;
    const char *a = kr_op_str(c, "amount");
    if (kr_money_parse(a, &amt))
        return kr_fail(d, KR_EINVAL, "amount '%.40s' is not a decimal like 10 or -2.50", a);
    const char *reason = kr_op_str(c, "reason") ? kr_op_str(c, "reason") : "topup";
    if (!reason[0] || strlen(reason) > 60 || strpbrk(reason, "\r\n\t"))
        return kr_fail(d, KR_EINVAL, "reason must be one line of at most 60 bytes");
    int rc = kr_credits_add(c->st, c->org.id, amt, reason, d);
    if (rc) return rc;
    char m[40];
    kr_money_str(amt, m, sizeof m);
    kr_snprintf(c->detail, sizeof c->detail, "%s (%s)", m, reason);
    return credits_out(c, out, d);
}

int kr_op_credits_cap(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t amt;
    const char *a = kr_op_str(c, "amount");
    if (kr_money_parse(a, &amt) || amt < 0)
        return kr_fail(d, KR_EINVAL, "amount '%.40s' is not a decimal >= 0 like 5 or 12.50", a);
    int rc = kr_credits_set_cap(c->st, c->org.id, amt, d);
    if (rc) return rc;
    char m[40];
    kr_money_str(amt, m, sizeof m);
    kr_snprintf(c->detail, sizeof c->detail, "cap %s", m);
    return credits_out(c, out, d);
}

int kr_op_credits_history(kr_op_call *c, cJSON *out, kr_diag *d)
{
    /* the newest entries: enough for the pages asked for */
    int64_t limit = kr_op_int(c, "limit", 100);
    uint64_t off = 0;
    if (kr_op_str(c, "cursor")) kr_parse_u64(kr_op_str(c, "cursor"), strlen(kr_op_str(c, "cursor")), &off);
    size_t want = (size_t)(off + (uint64_t)(limit > 0 && limit <= 1000 ? limit : 100) + 1);
    kr_ledger_row *rows;
    size_t n;
    int rc = kr_credits_history(c->st, c->org.id, want, &rows, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "id", (double)rows[i].id);
        kr_ops_add_time(j, "at", rows[i].created_at);
        money(j, "amount", rows[i].delta_micros);
        cJSON_AddStringToObject(j, "reason", rows[i].reason);
        cJSON_AddStringToObject(j, "request_id", rows[i].request_id);
        cJSON_AddItemToArray(items, j);
    }
    free(rows);
    return 0;
}

/* ---- limits ---- */

static int limits_scope(const kr_op_call *c, kr_scope *scope, int64_t *owner)
{
    *scope = c->has_ws ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG;
    *owner = c->has_ws ? c->ws.id : c->org.id;
    return 0;
}

static int limits_out(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_scope scope;
    int64_t owner, rpm, tpm;
    limits_scope(c, &scope, &owner);
    int rc = kr_limits_get(c->st, scope, owner, &rpm, &tpm, d);
    char **models;
    size_t nm;
    if (!rc) rc = kr_allow_get(c->st, scope, owner, &models, &nm, d);
    if (rc) return rc;
    cJSON_AddStringToObject(out, "scope", kr_scope_name(scope));
    cJSON_AddStringToObject(out, "org", c->org.slug);
    if (c->has_ws) cJSON_AddStringToObject(out, "workspace", c->ws.name);
    cJSON_AddNumberToObject(out, "rpm", (double)rpm);
    cJSON_AddNumberToObject(out, "tpm", (double)tpm);
    cJSON *m = cJSON_AddArrayToObject(out, "models");
    for (size_t i = 0; i < nm; i++) cJSON_AddItemToArray(m, cJSON_CreateString(models[i]));
    kr_strv_free(models, nm);
    return 0;
}

int kr_op_limits_show(kr_op_call *c, cJSON *out, kr_diag *d)
{
    return limits_out(c, out, d);
}

int kr_op_limits_set(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_scope scope;
    int64_t owner, rpm, tpm;
    limits_scope(c, &scope, &owner);
    int rc = kr_limits_get(c->st, scope, owner, &rpm, &tpm, d);
    if (rc) return rc;
    bool has_rpm = kr_op_has(c, "rpm"), has_tpm = kr_op_has(c, "tpm");
    if (has_rpm) rpm = kr_op_int(c, "rpm", 0);
    if (has_tpm) tpm = kr_op_int(c, "tpm", 0);
    if (rpm < 0 || tpm < 0) return kr_fail(d, KR_EINVAL, "rpm and tpm are >= 0 (0 = unlimited)");
    if ((has_rpm || has_tpm) && (rc = kr_limits_set(c->st, scope, owner, rpm, tpm, d))) return rc;
    const cJSON *ml = kr_op_get(c, "models");
    if (ml) {
        const char *list[64];
        size_t n = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ml)
        {
            const kr_model *m = kr_registry_model(c->env->reg, e->valuestring);
            if (!m)
                return kr_fail(d, KR_EINVAL, "model '%.64s' is not in the registry", e->valuestring);
            list[n++] = m->id; /* aliases resolve to the canonical id */
        }
        if ((rc = kr_allow_set(c->st, scope, owner, list, n, d))) return rc;
    }
    kr_snprintf(c->detail, sizeof c->detail, "rpm %lld, tpm %lld%s", (long long)rpm, (long long)tpm,
                ml ? ", allow-list changed" : "");
    return limits_out(c, out, d);
}

/* ---- usage ---- */

int kr_op_usage(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_usage_filter f = {0};
    f.model = kr_op_str(c, "model");
    f.from_day = kr_op_str(c, "from");
    f.to_day = kr_op_str(c, "to");
    int rc = kr_ops_org_filter(c, &f.org_id, d); /* an org admin: its own org, always */
    if (rc) return rc;
    if (kr_op_str(c, "workspace")) {
        kr_workspace w;
        if ((rc = kr_ws_find(c->st, kr_op_str(c, "workspace"), &w, d))) return rc;
        if (c->actor->scope == KR_ADMIN_ORG && w.org_id != c->actor->org_id)
            return kr_fail(d, KR_EDENIED, "usage: this admin token administers another org");
        f.workspace_id = w.id;
    }
    const char *by = kr_op_str(c, "by") ? kr_op_str(c, "by") : "org,workspace,model,route,day";
    kr_dbres r;
    if ((rc = kr_usage_report(c->st, &f, by, &r, d))) return rc;
    /* the grouping columns in report order, then the sums */
    const char *cols[12];
    size_t nc = 0;
    static const char *const order[] = {"org", "workspace", "model", "route", "day"};
    for (size_t i = 0; i < 5; i++) {
        const char *p = strstr(by, order[i]);
        size_t l = strlen(order[i]);
        if (p && (p == by || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) cols[nc++] = order[i];
    }
    static const char *const sums[] = {"requests",          "input_tokens",       "output_tokens",
                                       "cache_read_tokens", "cache_write_tokens", "cost"};
    size_t ngroup = nc;
    for (size_t i = 0; i < 6; i++) cols[nc++] = sums[i];
    cJSON *cj = cJSON_AddArrayToObject(out, "columns");
    for (size_t i = 0; i < nc; i++) cJSON_AddItemToArray(cj, cJSON_CreateString(cols[i]));
    cJSON *rows = cJSON_AddArrayToObject(out, "rows");
    for (size_t row = 0; row < r.nrows && r.ncols == nc; row++) {
        if (!kr_dbres_get(&r, row, r.ncols - 6)) continue; /* no rows at all */
        cJSON *o = cJSON_CreateObject();
        for (size_t col = 0; col < nc; col++) {
            if (col < ngroup) {
                const char *v = kr_dbres_get(&r, row, col);
                cJSON_AddStringToObject(o, cols[col], v ? v : "");
            } else if (col == nc - 1) {
                money(o, "cost", kr_dbres_int(&r, row, col));
            } else {
                cJSON_AddNumberToObject(o, cols[col], (double)kr_dbres_int(&r, row, col));
            }
        }
        cJSON_AddItemToArray(rows, o);
    }
    kr_dbres_free(&r);
    return 0;
}
