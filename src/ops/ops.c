/*
 * ops.c -- the operations table and kr_ops_run(): parameter checks, {org} /
 * {ws} resolution, scope, the transaction with the audit row, idempotency
 * and pagination. The handlers are in ops_org.c, ops_billing.c and
 * ops_admin.c. See ops.h.
 */
#include "ops/ops.h"
#include "ops/ops_handlers.h"

#include <pwd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define PARAMS(a) a, N(a)

/* ---- parameters, by operation ---- */

#define P_ORG {"org", KR_P_STR, KR_IN_PATH, true, "org slug"}
#define P_WS {"ws", KR_P_STR, KR_IN_PATH, true, "workspace name"}
#define P_PAGE                                                                                     \
    {"limit", KR_P_INT, KR_IN_QUERY, false, "page size (default 100, at most 1000)"},             \
        {"cursor", KR_P_STR, KR_IN_QUERY, false, "next_cursor of the previous page"}

static const kr_op_param p_org_create[] = {
    {"org", KR_P_STR, KR_IN_BODY, true, "slug: 1-63 of [a-z0-9-], not starting with '-'"},
    {"name", KR_P_STR, KR_IN_BODY, false, "display name (default: the slug)"},
};
static const kr_op_param p_page[] = {P_PAGE};
static const kr_op_param p_org[] = {P_ORG};
static const kr_op_param p_org_page[] = {P_ORG, P_PAGE};
static const kr_op_param p_ws_create[] = {
    P_ORG,
    {"ws", KR_P_STR, KR_IN_BODY, true, "workspace name: 1-63 of [a-z0-9-]"},
    {"concierge", KR_P_BOOL, KR_IN_BODY, false, "the org's concierge (at most one)"},
    {"runtime", KR_P_STR, KR_IN_BODY, false, "runtime profile (default provision.default_runtime)"},
    {"model", KR_P_STR, KR_IN_BODY, false, "MODEL of the create payload"},
    {"set", KR_P_OBJECT, KR_IN_BODY, false, "more payload variables, {\"KEY\": \"value\"}"},
    {"parent", KR_P_INT, KR_IN_BODY, false, "parent workspace id"},
};
static const kr_op_param p_ws[] = {P_ORG, P_WS};
static const kr_op_param p_ws_provision[] = {
    P_ORG, P_WS,
    {"model", KR_P_STR, KR_IN_BODY, false, "MODEL of the payload (fresh provision)"},
    {"set", KR_P_OBJECT, KR_IN_BODY, false, "more payload variables"},
    {"rebuild", KR_P_BOOL, KR_IN_BODY, false, "from the store alone (no payload)"},
    {"token", KR_P_STR, KR_IN_BODY, false,
     "workspace token in place of the placeholder (command line only)"},
};
static const kr_op_param p_secret_set[] = {
    P_ORG,
    {"key", KR_P_STR, KR_IN_PATH, true, "variable name"},
    {"value", KR_P_STR, KR_IN_BODY, true, "the value (write-only: never returned)"},
    {"workspace", KR_P_STR, KR_IN_BODY, false, "workspace scope instead of the org's"},
};
static const kr_op_param p_secret_unset[] = {
    P_ORG,
    {"key", KR_P_STR, KR_IN_PATH, true, "variable name"},
    {"workspace", KR_P_STR, KR_IN_QUERY, false, "workspace scope instead of the org's"},
};
static const kr_op_param p_secret_list[] = {
    P_ORG,
    {"workspace", KR_P_STR, KR_IN_QUERY, false, "workspace scope instead of the org's"},
    P_PAGE,
};
static const kr_op_param p_token_mint[] = {
    P_ORG, P_WS, {"ttl", KR_P_STR, KR_IN_BODY, false, "lifetime: 90m, 12h, 30d (at most 3650d)"},
};
static const kr_op_param p_ws_page[] = {P_ORG, P_WS, P_PAGE};
static const kr_op_param p_token_revoke[] = {
    P_ORG, P_WS, {"id", KR_P_INT, KR_IN_PATH, true, "token id"},
};
static const kr_op_param p_credits_add[] = {
    P_ORG,
    {"amount", KR_P_STR, KR_IN_BODY, true, "currency units, may be negative: \"12.50\""},
    {"reason", KR_P_STR, KR_IN_BODY, false, "ledger reason (default topup)"},
};
static const kr_op_param p_credits_cap[] = {
    P_ORG, {"amount", KR_P_STR, KR_IN_BODY, true, "overage allowed below zero: \"5\""},
};
static const kr_op_param p_limits_set_org[] = {
    P_ORG,
    {"rpm", KR_P_INT, KR_IN_BODY, false, "requests per minute, 0 = unlimited"},
    {"tpm", KR_P_INT, KR_IN_BODY, false, "tokens per minute, 0 = unlimited"},
    {"models", KR_P_LIST, KR_IN_BODY, false, "allow-list of models or aliases; [] clears"},
};
static const kr_op_param p_limits_set_ws[] = {
    P_ORG, P_WS,
    {"rpm", KR_P_INT, KR_IN_BODY, false, "requests per minute, 0 = unlimited"},
    {"tpm", KR_P_INT, KR_IN_BODY, false, "tokens per minute, 0 = unlimited"},
    {"models", KR_P_LIST, KR_IN_BODY, false, "allow-list of models or aliases; [] clears"},
};
static const kr_op_param p_usage[] = {
    {"org", KR_P_STR, KR_IN_QUERY, false, "only this org (an org admin: always its own)"},
    {"workspace", KR_P_STR, KR_IN_QUERY, false, "only this workspace, ORG/NAME"},
    {"model", KR_P_STR, KR_IN_QUERY, false, "only this model"},
    {"from", KR_P_STR, KR_IN_QUERY, false, "first day, YYYY-MM-DD (UTC)"},
    {"to", KR_P_STR, KR_IN_QUERY, false, "last day, YYYY-MM-DD (UTC)"},
    {"by", KR_P_STR, KR_IN_QUERY, false, "grouping: org,workspace,model,route,day (the default)"},
};
static const kr_op_param p_audit[] = {
    {"org", KR_P_STR, KR_IN_QUERY, false, "only this org (an org admin: always its own)"},
    {"action", KR_P_STR, KR_IN_QUERY, false, "only this operation, e.g. secret.set"},
    {"actor", KR_P_STR, KR_IN_QUERY, false, "only this actor"},
    {"since", KR_P_INT, KR_IN_QUERY, false, "ms since the epoch, inclusive"},
    {"until", KR_P_INT, KR_IN_QUERY, false, "ms since the epoch, exclusive"},
    P_PAGE,
};
static const kr_op_param p_admin_mint[] = {
    {"scope", KR_P_STR, KR_IN_BODY, true, "operator or org"},
    {"org", KR_P_STR, KR_IN_BODY, false, "the org an org-scope token administers"},
    {"name", KR_P_STR, KR_IN_BODY, false, "what it is for"},
    {"ttl", KR_P_STR, KR_IN_BODY, false, "lifetime: 90m, 12h, 30d (at most 3650d)"},
};
static const kr_op_param p_admin_revoke[] = {{"id", KR_P_INT, KR_IN_PATH, true, "admin token id"}};
static const kr_op_param p_alert_create[] = {
    P_ORG,
    {"kind", KR_P_STR, KR_IN_BODY, true,
     "budget (spend per period against a budget) or balance (the org's balance below a threshold)"},
    {"url", KR_P_STR, KR_IN_BODY, true, "webhook: http:// or https://, POSTed once per crossing"},
    {"budget", KR_P_STR, KR_IN_BODY, false, "budget: the amount per period, \"100\""},
    {"period", KR_P_STR, KR_IN_BODY, false, "budget: day or month (UTC; default month)"},
    {"percents", KR_P_STR, KR_IN_BODY, false, "budget: the percents that alert, \"50,80,100\" (default 100)"},
    {"workspace", KR_P_STR, KR_IN_BODY, false, "budget: one workspace's spend instead of the org's"},
    {"threshold", KR_P_STR, KR_IN_BODY, false, "balance: alert when the balance falls below this"},
};
static const kr_op_param p_alert_delete[] = {P_ORG, {"id", KR_P_INT, KR_IN_PATH, true, "alert id"}};
static const kr_op_param p_alert_deliveries[] = {
    P_ORG, {"limit", KR_P_INT, KR_IN_QUERY, false, "newest deliveries to show (1..1000, default 100)"},
};

/* ---- the table ---- */

static const kr_op ops[] = {
    {"org.create", "Create an org", "POST", "/orgs", KR_OPS_OPERATOR, true, true, false,
     PARAMS(p_org_create), kr_op_org_create, 201, false},
    {"org.list", "List orgs (an org admin: its own)", "GET", "/orgs", KR_OPS_ANY_ADMIN, false,
     false, true, PARAMS(p_page), kr_op_org_list, 200, false},
    {"org.get", "One org", "GET", "/orgs/{org}", KR_OPS_ORG, false, false, false, PARAMS(p_org),
     kr_op_org_get, 200, false},
    {"ws.create", "Create and provision a workspace", "POST", "/orgs/{org}/workspaces",
     KR_OPS_ORG, true, true, false, PARAMS(p_ws_create), kr_op_ws_create, 201, true},
    {"ws.list", "List an org's workspaces", "GET", "/orgs/{org}/workspaces", KR_OPS_ORG, false,
     false, true, PARAMS(p_org_page), kr_op_ws_list, 200, false},
    {"ws.explain", "Why a workspace gets what it gets: resolution, variables, hosts",
     "GET", "/orgs/{org}/workspaces/{ws}/explain", KR_OPS_ORG, false, false, false, PARAMS(p_ws),
     kr_op_ws_explain, 200, true},
    {"ws.provision",
     "The workspace environment, fresh or rebuilt (over HTTP: the workspace token as the "
     "launcher's placeholder, and a credential's value withheld: its name and class only)",
     "POST", "/orgs/{org}/workspaces/{ws}/provision", KR_OPS_ORG, true, false, false,
     PARAMS(p_ws_provision), kr_op_ws_provision, 200, true},
    {"secret.set", "Set a secret (write-only)", "PUT", "/orgs/{org}/secrets/{key}", KR_OPS_ORG,
     true, false, false, PARAMS(p_secret_set), kr_op_secret_set, 200, true},
    {"secret.unset", "Remove a secret", "DELETE", "/orgs/{org}/secrets/{key}", KR_OPS_ORG, true,
     false, false, PARAMS(p_secret_unset), kr_op_secret_unset, 200, false},
    {"secret.list", "Secrets: state, class and fingerprint, never a value", "GET",
     "/orgs/{org}/secrets", KR_OPS_ORG, false, false, true, PARAMS(p_secret_list),
     kr_op_secret_list, 200, true},
    {"token.mint", "Mint a workspace token (shown once)", "POST",
     "/orgs/{org}/workspaces/{ws}/tokens", KR_OPS_ORG, true, true, false, PARAMS(p_token_mint),
     kr_op_token_mint, 201, false},
    {"token.list", "A workspace's tokens", "GET", "/orgs/{org}/workspaces/{ws}/tokens", KR_OPS_ORG,
     false, false, true, PARAMS(p_ws_page), kr_op_token_list, 200, false},
    {"token.revoke", "Revoke a workspace token", "DELETE",
     "/orgs/{org}/workspaces/{ws}/tokens/{id}", KR_OPS_ORG, true, false, false,
     PARAMS(p_token_revoke), kr_op_token_revoke, 200, false},
    {"credits.show", "Balance, overage cap, available", "GET", "/orgs/{org}/credits", KR_OPS_ORG,
     false, false, false, PARAMS(p_org), kr_op_credits_show, 200, false},
    {"credits.add", "Add (or take) credits", "POST", "/orgs/{org}/credits", KR_OPS_OPERATOR, true,
     false, false, PARAMS(p_credits_add), kr_op_credits_add, 200, false},
    {"credits.cap", "Set the overage cap", "PUT", "/orgs/{org}/credits/cap", KR_OPS_OPERATOR,
     true, false, false, PARAMS(p_credits_cap), kr_op_credits_cap, 200, false},
    {"credits.history", "The credits ledger, newest first", "GET", "/orgs/{org}/credits/ledger",
     KR_OPS_ORG, false, false, true, PARAMS(p_org_page), kr_op_credits_history, 200, false},
    {"limits.show", "An org's rpm, tpm and model allow-list", "GET", "/orgs/{org}/limits",
     KR_OPS_ORG, false, false, false, PARAMS(p_org), kr_op_limits_show, 200, false},
    {"limits.set", "Set an org's rpm, tpm or model allow-list", "PUT", "/orgs/{org}/limits",
     KR_OPS_OPERATOR, true, false, false, PARAMS(p_limits_set_org), kr_op_limits_set, 200, false},
    {"ws.limits.show", "A workspace's rpm, tpm and model allow-list", "GET",
     "/orgs/{org}/workspaces/{ws}/limits", KR_OPS_ORG, false, false, false, PARAMS(p_ws),
     kr_op_limits_show, 200, false},
    {"ws.limits.set", "Set a workspace's rpm, tpm or model allow-list", "PUT",
     "/orgs/{org}/workspaces/{ws}/limits", KR_OPS_ORG, true, false, false,
     PARAMS(p_limits_set_ws), kr_op_limits_set, 200, false},
    {"alert.create", "Create a budget or balance alert (its webhook secret is shown once)", "POST",
     "/orgs/{org}/alerts", KR_OPS_ORG, true, true, false, PARAMS(p_alert_create),
     kr_op_alert_create, 201, true},
    {"alert.list", "An org's budget and balance alerts", "GET", "/orgs/{org}/alerts", KR_OPS_ORG,
     false, false, false, PARAMS(p_org), kr_op_alert_list, 200, false},
    {"alert.delete", "Delete an alert (its undelivered notices go with it)", "DELETE",
     "/orgs/{org}/alerts/{id}", KR_OPS_ORG, true, false, false, PARAMS(p_alert_delete),
     kr_op_alert_delete, 200, false},
    {"alert.deliveries", "The delivery log of an org's alert webhooks, newest first", "GET",
     "/orgs/{org}/alert-deliveries", KR_OPS_ORG, false, false, false, PARAMS(p_alert_deliveries),
     kr_op_alert_deliveries, 200, false},
    {"upstream.keys", "The platform key pools: each key's state (in rotation, cooling, refused), "
     "class, fingerprint and requests", "GET", "/upstream/keys", KR_OPS_OPERATOR, false, false,
     false, NULL, 0, kr_op_upstream_keys, 200, false},
    {"usage", "Tokens and cost per org, workspace, model and day", "GET", "/usage",
     KR_OPS_ANY_ADMIN, false, false, false, PARAMS(p_usage), kr_op_usage, 200, false},
    {"audit.list", "The audit log, newest first", "GET", "/audit", KR_OPS_ANY_ADMIN, false, false,
     true, PARAMS(p_audit), kr_op_audit_list, 200, false},
    {"admin_token.mint", "Mint an admin token (shown once)", "POST", "/admin-tokens",
     KR_OPS_OPERATOR, true, true, false, PARAMS(p_admin_mint), kr_op_admin_token_mint, 201, false},
    {"admin_token.list", "Admin tokens", "GET", "/admin-tokens", KR_OPS_OPERATOR, false, false,
     true, PARAMS(p_page), kr_op_admin_token_list, 200, false},
    {"admin_token.revoke", "Revoke an admin token (and its console sessions)", "DELETE",
     "/admin-tokens/{id}", KR_OPS_OPERATOR, true, false, false, PARAMS(p_admin_revoke),
     kr_op_admin_token_revoke, 200, false},
};

const kr_op *kr_ops_table(size_t *n)
{
    *n = N(ops);
    return ops;
}

const kr_op *kr_ops_find(const char *name)
{
    for (size_t i = 0; i < N(ops); i++)
        if (!strcmp(ops[i].name, name)) return &ops[i];
    return NULL;
}

/* ---- parameters ---- */

const cJSON *kr_op_get(const kr_op_call *c, const char *name)
{
    const cJSON *v = c->params ? cJSON_GetObjectItemCaseSensitive(c->params, name) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

bool kr_op_has(const kr_op_call *c, const char *name)
{
    return kr_op_get(c, name) != NULL;
}

const char *kr_op_str(const kr_op_call *c, const char *name)
{
    const cJSON *v = kr_op_get(c, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int64_t kr_op_int(const kr_op_call *c, const char *name, int64_t dflt)
{
    const cJSON *v = kr_op_get(c, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : dflt;
}

bool kr_op_bool(const kr_op_call *c, const char *name)
{
    return cJSON_IsTrue(kr_op_get(c, name));
}

/* A JSON number that is an integer a double holds exactly. */
static bool whole(const cJSON *v)
{
    double x = v->valuedouble;
    return x >= -9007199254740991.0 && x <= 9007199254740991.0 && x == (double)(int64_t)x;
}

static int check_params(const kr_op_call *c, kr_diag *d)
{
    const kr_op *op = c->op;
    const cJSON *it;
    /* nothing unknown */
    cJSON_ArrayForEach(it, c->params)
    {
        bool known = false;
        for (size_t i = 0; i < op->nparams && !known; i++)
            known = !strcmp(op->params[i].name, it->string);
        if (!known)
            return kr_fail(d, KR_EINVAL, "%s takes no parameter '%.64s'", op->name, it->string);
    }
    for (size_t i = 0; i < op->nparams; i++) {
        const kr_op_param *p = &op->params[i];
        const cJSON *v = kr_op_get(c, p->name);
        if (!v) {
            if (p->required) return kr_fail(d, KR_EINVAL, "%s needs '%s' (%s)", op->name, p->name, p->help);
            continue;
        }
        bool ok = false;
        switch (p->type) {
        case KR_P_STR: ok = cJSON_IsString(v) && strlen(v->valuestring) < 65536; break;
        case KR_P_INT: ok = cJSON_IsNumber(v) && whole(v); break;
        case KR_P_BOOL: ok = cJSON_IsBool(v); break;
        case KR_P_OBJECT: {
            ok = cJSON_IsObject(v) && cJSON_GetArraySize(v) <= 64;
            const cJSON *e;
            cJSON_ArrayForEach(e, v) ok = ok && cJSON_IsString(e);
            break;
        }
        case KR_P_LIST: {
            ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) <= 64;
            const cJSON *e;
            cJSON_ArrayForEach(e, v) ok = ok && cJSON_IsString(e);
            break;
        }
        }
        if (!ok) {
            static const char *const tn[] = {"a string", "an integer", "true or false",
                                             "a list of strings", "an object of strings"};
            return kr_fail(d, KR_EINVAL, "'%s' must be %s", p->name, tn[p->type]);
        }
    }
    return 0;
}

/* ---- scope ---- */

static int check_org_scope(const kr_op_call *c, int64_t org_id, kr_diag *d)
{
    if (c->actor->scope == KR_ADMIN_OPERATOR) return 0;
    if (c->op->scope == KR_OPS_OPERATOR || org_id != c->actor->org_id)
        return kr_fail(d, KR_EDENIED, "%s: this admin token administers another org",
                       c->op->name);
    return 0;
}

static int resolve(kr_op_call *c, kr_diag *d)
{
    const kr_op *op = c->op;
    if (op->scope == KR_OPS_OPERATOR && c->actor->scope != KR_ADMIN_OPERATOR)
        return kr_fail(d, KR_EDENIED, "%s is for operators; this admin token administers one org",
                       op->name);
    bool path_org = false, path_ws = false;
    for (size_t i = 0; i < op->nparams; i++) {
        if (op->params[i].in != KR_IN_PATH) continue;
        if (!strcmp(op->params[i].name, "org")) path_org = true;
        if (!strcmp(op->params[i].name, "ws")) path_ws = true;
    }
    int rc;
    if (path_org) {
        /* an org admin asking about another org learns nothing, not even
         * whether it exists: 403 before the lookup */
        if (c->actor->scope == KR_ADMIN_ORG) {
            kr_org own;
            if ((rc = kr_org_get(c->st, c->actor->org_id, &own, d))) return rc;
            if (strcmp(own.slug, kr_op_str(c, "org")))
                return kr_fail(d, KR_EDENIED, "%s: this admin token administers another org",
                               op->name);
        }
        if ((rc = kr_org_find(c->st, kr_op_str(c, "org"), &c->org, d))) return rc;
        c->has_org = true;
        if ((rc = check_org_scope(c, c->org.id, d))) return rc;
    }
    if (path_ws) {
        /* a name too long for ref is too long to be valid: cut, the store refuses it */
        char ref[200];
        snprintf(ref, sizeof ref, "%s/%s", c->org.slug, kr_op_str(c, "ws"));
        if ((rc = kr_ws_find(c->st, ref, &c->ws, d))) return rc;
        c->has_ws = true;
    }
    return 0;
}

/* ---- running ---- */

int kr_ops_http_status(int err)
{
    switch (err) {
    case 0: return 200;
    case KR_EINVAL:
    case KR_EPARSE: return 400;
    case KR_EDENIED: return 403;
    case KR_ENOTFOUND: return 404;
    case KR_EEXISTS:
    case KR_ECONCIERGE_EXISTS:
    case KR_ESECRET_UNREADABLE: return 409;
    case KR_ETOOBIG: return 413;
    case KR_EFORBIDDEN_KEY:
    case KR_EMISSING_BYOK_CREDENTIAL:
    case KR_EUNKNOWN_MODEL:
    case KR_EMISSING_MODEL:
    case KR_EMISSING_PLATFORM_PROXY:
    case KR_EUNKNOWN_PROVIDER: return 422;
    case KR_ESTORE:
    case KR_EBUSY:
    case KR_EWRONG_MASTER_KEY: return 503;
    default: return 500;
    }
}

static cJSON *error_object(int err, const kr_diag *d)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "code", kr_err_name(err));
    cJSON_AddStringToObject(e, "message", kr_diag_msg(d, err));
    return e;
}

static int audit(kr_op_call *c, const char *outcome, kr_diag *d)
{
    kr_audit_row a;
    memset(&a, 0, sizeof a);
    a.at = kr_now_ms();
    kr_strlcpy(a.actor, c->actor->name, sizeof a.actor);
    kr_strlcpy(a.actor_scope, kr_admin_scope_name(c->actor->scope), sizeof a.actor_scope);
    if (c->actor->scope == KR_ADMIN_ORG) {
        /* "org:acme" by slug, as every other place names orgs; the id if the
         * org cannot be read (the row is written either way) */
        kr_diag ignore = {{0}};
        kr_org own;
        char s[sizeof a.actor_scope];
        if (!kr_org_get(c->st, c->actor->org_id, &own, &ignore))
            kr_snprintf(s, sizeof s, "org:%s", own.slug);
        else
            kr_snprintf(s, sizeof s, "org:%lld", (long long)c->actor->org_id);
        kr_strlcpy(a.actor_scope, s, sizeof a.actor_scope);
    }
    kr_strlcpy(a.action, c->op->name, sizeof a.action);
    if (c->target[0]) kr_strlcpy(a.target, c->target, sizeof a.target);
    else if (c->has_ws) kr_snprintf(a.target, sizeof a.target, "%s/%s", c->org.slug, c->ws.name);
    else if (c->has_org) kr_strlcpy(a.target, c->org.slug, sizeof a.target);
    else if (kr_op_str(c, "org")) kr_strlcpy(a.target, kr_op_str(c, "org"), sizeof a.target);
    a.org_id = c->has_org ? c->org.id : 0;
    if (!c->has_org && kr_op_str(c, "org")) {
        /* refused before the lookup (an org admin reaching for another org):
         * the row still belongs to the org it reached for, so that org's
         * audit view shows the attempt; the caller learns nothing from it */
        kr_diag ignore = {{0}};
        kr_org target;
        if (!kr_org_find(c->st, kr_op_str(c, "org"), &target, &ignore)) a.org_id = target.id;
    }
    kr_strlcpy(a.request_id, c->request_id ? c->request_id : "-", sizeof a.request_id);
    kr_strlcpy(a.outcome, outcome, sizeof a.outcome);
    kr_strlcpy(a.detail, c->detail, sizeof a.detail);
    return kr_audit_append(c->st, &a, d);
}

/* The request's fingerprint for an idempotency key: the operation and its
 * parameters (cJSON prints object members in insertion order; callers
 * build params the same way for the same request). */
static void request_hash(const kr_op_call *c, char out[65])
{
    char *txt = cJSON_PrintUnformatted(c->params);
    crypto_generichash_state st;
    unsigned char h[32];
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)c->op->name, strlen(c->op->name) + 1);
    if (txt) crypto_generichash_update(&st, (const unsigned char *)txt, strlen(txt));
    crypto_generichash_final(&st, h, sizeof h);
    if (txt) {
        sodium_memzero(txt, strlen(txt)); /* a secret value may be in there */
        free(txt);
    }
    kr_hex(h, sizeof h, out);
}

/* What is remembered for a replay: the response without anything shown
 * once (a minted token is never stored). */
static char *replay_body(const cJSON *out)
{
    cJSON *copy = cJSON_Duplicate(out, true);
    if (cJSON_GetObjectItemCaseSensitive(copy, "token")) {
        cJSON_ReplaceItemInObjectCaseSensitive(copy, "token", cJSON_CreateNull());
        cJSON_AddStringToObject(copy, "token_note",
                                "shown once, in the first response to this Idempotency-Key");
    }
    char *s = cJSON_PrintUnformatted(copy);
    cJSON_Delete(copy);
    return s;
}

/* Pagination of a list result: {"items": [all]} -> one page. */
static int paginate(kr_op_call *c, cJSON *out, kr_diag *d)
{
    cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    if (!cJSON_IsArray(items) || cJSON_GetObjectItemCaseSensitive(out, "next_cursor")) return 0;
    int64_t limit = kr_op_int(c, "limit", 100);
    if (limit < 1 || limit > 1000) return kr_fail(d, KR_EINVAL, "limit must be 1..1000");
    uint64_t off = 0;
    const char *cur = kr_op_str(c, "cursor");
    if (cur && (kr_parse_u64(cur, strlen(cur), &off) || off > 100000000))
        return kr_fail(d, KR_EINVAL, "cursor is not one this API gave out");
    int n = cJSON_GetArraySize(items);
    cJSON *page = cJSON_CreateArray();
    for (int i = (int)off; i < n && i < (int)off + (int)limit; i++)
        cJSON_AddItemToArray(page, cJSON_Duplicate(cJSON_GetArrayItem(items, i), true));
    cJSON_ReplaceItemInObjectCaseSensitive(out, "items", page);
    if ((int64_t)off + limit < n) {
        char next[24];
        snprintf(next, sizeof next, "%lld", (long long)((int64_t)off + limit));
        cJSON_AddStringToObject(out, "next_cursor", next);
    } else {
        cJSON_AddNullToObject(out, "next_cursor");
    }
    return 0;
}

int kr_ops_run(kr_op_call *c, cJSON **outp, kr_diag *d)
{
    *outp = NULL;
    if (!c->params) c->params = cJSON_CreateObject();
    int rc = check_params(c, d);
    cJSON *out = cJSON_CreateObject();
    bool tx = false;
    if (!rc && c->op->mutates && !(rc = kr_store_begin(c->st, d))) tx = true;
    if (!rc) rc = resolve(c, d);
    char key_hash[65] = "";
    if (!rc && c->op->creates && c->idem_key) {
        char op[48], hash[65];
        int status;
        char *resp = NULL;
        request_hash(c, key_hash);
        int g = kr_idem_get(c->st, c->actor->name, c->idem_key, op, hash, &status, &resp, d);
        if (g == 0) {
            if (strcmp(op, c->op->name) || strcmp(hash, key_hash)) {
                rc = kr_fail(d, KR_EEXISTS,
                             "this Idempotency-Key was used for a different request");
            } else {
                cJSON *prev = cJSON_Parse(resp ? resp : "{}");
                if (prev) {
                    cJSON_Delete(out);
                    out = prev;
                }
                c->replayed = true;
                c->replay_status = status;
            }
            free(resp);
            if (tx) kr_store_rollback(c->st);
            tx = false;
            if (!rc) {
                *outp = out;
                return 0;
            }
        } else if (g != KR_ENOTFOUND) {
            rc = g;
        }
    }
    if (!rc) rc = c->op->fn(c, out, d);
    if (!rc && c->op->list) rc = paginate(c, out, d);
    if (!rc && c->op->mutates) {
        /* same transaction: the change and its audit row land together, or neither */
        kr_diag ad = {{0}};
        int arc = audit(c, "ok", &ad);
        if (!arc && c->op->creates && c->idem_key) {
            char *body = replay_body(out);
            arc = kr_idem_put(c->st, c->actor->name, c->idem_key, c->op->name, key_hash,
                              c->op->ok_status, body ? body : "{}", &ad);
            free(body);
        }
        if (!arc) arc = kr_store_commit(c->st, &ad);
        tx = false;
        if (arc) {
            kr_store_rollback(c->st);
            rc = kr_fail(d, arc, "%s", kr_diag_msg(&ad, arc));
        }
    }
    if (tx) kr_store_rollback(c->st);
    if (rc) {
        if (c->op->mutates) { /* a refused or failed change is audited too */
            kr_diag ad = {{0}};
            audit(c, kr_err_name(rc), &ad);
        }
        cJSON_Delete(out);
        *outp = error_object(rc, d);
        return rc;
    }
    *outp = out;
    return 0;
}

/* ---- helpers shared with the command line ---- */

static void wipe(cJSON *j)
{
    for (cJSON *e = j; e; e = e->next) {
        if (cJSON_IsString(e) && e->valuestring) sodium_memzero(e->valuestring, strlen(e->valuestring));
        if (e->child) wipe(e->child);
    }
}

void kr_ops_params_free(cJSON *j)
{
    if (!j) return;
    if (j->child) wipe(j->child);
    cJSON_Delete(j);
}

void kr_actor_cli(kr_actor *a)
{
    memset(a, 0, sizeof *a);
    const char *u = getenv("SUDO_USER");
    struct passwd *pw = (!u || !*u) ? getpwuid(geteuid()) : NULL;
    if (pw) u = pw->pw_name;
    kr_snprintf(a->name, sizeof a->name, "cli:%.64s", u && *u ? u : "unknown");
    a->scope = KR_ADMIN_OPERATOR;
    a->cli = true;
}

void kr_money_str(int64_t micros, char *out, size_t cap)
{
    const char *sign = micros < 0 ? "-" : "";
    uint64_t m = micros < 0 ? (uint64_t)(-(micros + 1)) + 1 : (uint64_t)micros;
    snprintf(out, cap, "%s%llu.%06llu", sign, (unsigned long long)(m / 1000000),
             (unsigned long long)(m % 1000000));
}

int kr_money_parse(const char *s, int64_t *out)
{
    bool neg = s[0] == '-';
    int64_t v;
    if (kr_parse_micros(s + neg, strlen(s + neg), &v)) return -1;
    *out = neg ? -v : v;
    return 0;
}
