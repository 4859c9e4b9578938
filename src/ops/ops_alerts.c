/*
 * ops_alerts.c -- budget alerts (src/alerts): create, list, delete, and the
 * delivery log of their webhooks.
 */
#include "alerts/alerts.h"
#include "ops/ops_handlers.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static cJSON *alert_json(kr_store *st, const kr_alert *a)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)a->id);
    cJSON_AddStringToObject(j, "kind", a->kind == KR_ALERT_BALANCE ? "balance" : "budget");
    if (a->ws_id) {
        kr_workspace w;
        kr_diag d = {{0}};
        if (!kr_ws_get(st, a->ws_id, &w, &d)) cJSON_AddStringToObject(j, "workspace", w.name);
    } else {
        cJSON_AddNullToObject(j, "workspace");
    }
    char m[40];
    kr_money_str(a->amount_micros, m, sizeof m);
    if (a->kind == KR_ALERT_BUDGET) {
        cJSON_AddStringToObject(j, "period", a->period);
        cJSON_AddStringToObject(j, "budget", m);
        cJSON *p = cJSON_AddArrayToObject(j, "percents");
        char pc[64];
        kr_strlcpy(pc, a->percents, sizeof pc);
        for (char *save, *t = strtok_r(pc, ",", &save); t; t = strtok_r(NULL, ",", &save))
            cJSON_AddItemToArray(p, cJSON_CreateNumber((double)atoll(t)));
    } else {
        cJSON_AddStringToObject(j, "threshold", m);
        cJSON_AddBoolToObject(j, "armed", a->armed);
        cJSON_AddNumberToObject(j, "crossings", (double)a->seq);
    }
    cJSON_AddStringToObject(j, "url", a->url);
    kr_ops_add_time(j, "created_at", a->created_at);
    return j;
}

typedef struct {
    const kr_master_key *mk;
    int64_t org_id;
    const char *secret;
} seal_ctx;

static int seal(void *ctx, int64_t id, kr_buf *out)
{
    seal_ctx *s = ctx;
    char key[64];
    kr_snprintf(key, sizeof key, "%s:%lld", KR_ALERT_SECRET_KEY, (long long)id);
    return kr_secret_seal(s->mk, KR_SCOPE_ORG, s->org_id, key, s->secret, strlen(s->secret), out);
}

int kr_op_alert_create(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_alert a;
    memset(&a, 0, sizeof a);
    a.org_id = c->org.id;
    const char *kind = kr_op_str(c, "kind");
    const char *url = kr_op_str(c, "url");
    if (!strcmp(kind, "budget"))
        a.kind = KR_ALERT_BUDGET;
    else if (!strcmp(kind, "balance"))
        a.kind = KR_ALERT_BALANCE;
    else
        return kr_fail(d, KR_EINVAL, "kind is budget or balance");
    if (strncmp(url, "https://", 8) && strncmp(url, "http://", 7))
        return kr_fail(d, KR_EINVAL, "url must be an http:// or https:// URL");
    if (strlen(url) >= sizeof a.url || strpbrk(url, " \t\r\n"))
        return kr_fail(d, KR_EINVAL, "url must be one line of at most %zu bytes", sizeof a.url - 1);
    kr_strlcpy(a.url, url, sizeof a.url);
    const char *amount = kr_op_str(c, a.kind == KR_ALERT_BUDGET ? "budget" : "threshold");
    if (!amount)
        return kr_fail(d, KR_EINVAL, "a %s alert needs %s", kind,
                       a.kind == KR_ALERT_BUDGET ? "a budget" : "a threshold");
    if (kr_money_parse(amount, &a.amount_micros) || a.amount_micros < 0 ||
        (a.kind == KR_ALERT_BUDGET && a.amount_micros == 0))
        return kr_fail(d, KR_EINVAL, "'%.40s' is not an amount like 100 or 12.50", amount);
    int rc;
    if (a.kind == KR_ALERT_BUDGET) {
        const char *period = kr_op_str(c, "period") ? kr_op_str(c, "period") : "month";
        if (strcmp(period, "month") && strcmp(period, "day"))
            return kr_fail(d, KR_EINVAL, "period is day or month");
        kr_strlcpy(a.period, period, sizeof a.period);
        const char *pc = kr_op_str(c, "percents") ? kr_op_str(c, "percents") : "100";
        if ((rc = kr_alert_percents_parse(pc, a.percents, sizeof a.percents, d))) return rc;
        const char *ws = kr_op_str(c, "workspace");
        if (ws) {
            char ref[160];
            kr_snprintf(ref, sizeof ref, "%s/%s", c->org.slug, ws);
            kr_workspace w;
            if ((rc = kr_ws_find(c->st, ref, &w, d))) return rc;
            a.ws_id = w.id;
        }
    } else if (kr_op_str(c, "workspace") || kr_op_str(c, "percents") || kr_op_str(c, "period")) {
        return kr_fail(d, KR_EINVAL, "a balance alert is the org's: no workspace, percents or period");
    }
    /* the webhook secret: shown once, stored sealed */
    unsigned char raw[32];
    char secret[8 + 2 * sizeof raw + 1];
    randombytes_buf(raw, sizeof raw);
    memcpy(secret, "whsec_", 6);
    kr_hex(raw, sizeof raw, secret + 6);
    seal_ctx sc = {c->env->mk, c->org.id, secret};
    rc = kr_alert_create(c->st, &a, seal, &sc, d);
    if (!rc) {
        cJSON *j = alert_json(c->st, &a);
        cJSON_AddStringToObject(j, "secret", secret); /* shown once */
        kr_ops_merge(out, j);
        kr_snprintf(c->target, sizeof c->target, "alert %lld", (long long)a.id);
        kr_snprintf(c->detail, sizeof c->detail, "%s alert", kind);
    }
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(raw, sizeof raw);
    free(a.secret);
    return rc;
}

int kr_op_alert_list(kr_op_call *c, cJSON *out, kr_diag *d)
{
    kr_alert *a = NULL;
    size_t n = 0;
    int rc = kr_alert_list(c->st, c->org.id, &a, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(items, alert_json(c->st, &a[i]));
    kr_alerts_free(a, n);
    return 0;
}

int kr_op_alert_delete(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t id = kr_op_int(c, "id", 0);
    int rc = kr_alert_delete(c->st, c->org.id, id, d);
    if (rc) return rc;
    kr_snprintf(c->target, sizeof c->target, "alert %lld", (long long)id);
    cJSON_AddNumberToObject(out, "deleted", (double)id);
    return 0;
}

int kr_op_alert_deliveries(kr_op_call *c, cJSON *out, kr_diag *d)
{
    int64_t limit = kr_op_int(c, "limit", 100);
    if (limit < 1 || limit > 1000) return kr_fail(d, KR_EINVAL, "limit takes 1..1000");
    kr_alert_delivery *v = NULL;
    size_t n = 0;
    int rc = kr_alert_deliveries(c->st, c->org.id, (size_t)limit, &v, &n, d);
    if (rc) return rc;
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (size_t i = 0; i < n; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "id", (double)v[i].id);
        cJSON_AddNumberToObject(j, "alert_id", (double)v[i].alert_id);
        cJSON_AddStringToObject(j, "crossing", v[i].crossing);
        cJSON_AddStringToObject(j, "status", v[i].status);
        cJSON_AddNumberToObject(j, "attempts", (double)v[i].attempts);
        cJSON_AddNumberToObject(j, "last_status", (double)v[i].last_status);
        cJSON_AddStringToObject(j, "last_error", v[i].last_error);
        kr_ops_add_time(j, "created_at", v[i].created_at);
        kr_ops_add_time(j, "delivered_at", v[i].delivered_at);
        if (!strcmp(v[i].status, "pending")) kr_ops_add_time(j, "next_attempt_at", v[i].next_at);
        cJSON *body = cJSON_Parse(v[i].body);
        if (body) cJSON_AddItemToObject(j, "body", body);
        cJSON_AddItemToArray(items, j);
    }
    kr_alert_deliveries_free(v, n);
    return 0;
}
