/*
 * ops_handlers.h -- the handlers of the operations table (ops.c), one per
 * row. Each fills `out` (a JSON object) and sets c->target / c->detail for
 * the audit row; kr_ops_run() has checked the parameters, resolved {org} /
 * {ws} and the actor's scope, and holds the transaction.
 */
#ifndef KR_OPS_HANDLERS_H
#define KR_OPS_HANDLERS_H

#include "ops/ops.h"

/* ops_org.c: orgs, workspaces, environments, secrets, workspace tokens */
int kr_op_org_create(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_org_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_org_get(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_ws_create(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_ws_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_ws_explain(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_ws_provision(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_secret_set(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_secret_unset(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_secret_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_token_mint(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_token_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_token_revoke(kr_op_call *c, cJSON *out, kr_diag *d);

/* ops_billing.c: credits, limits, usage */
int kr_op_credits_show(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_credits_add(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_credits_cap(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_credits_history(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_limits_show(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_limits_set(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_usage(kr_op_call *c, cJSON *out, kr_diag *d);

/* ops_admin.c: admin tokens and the audit log */
int kr_op_admin_token_mint(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_admin_token_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_admin_token_revoke(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_audit_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_upstream_keys(kr_op_call *c, cJSON *out, kr_diag *d);

/* ops_alerts.c: budget alerts and their webhook deliveries */
int kr_op_alert_create(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_alert_list(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_alert_delete(kr_op_call *c, cJSON *out, kr_diag *d);
int kr_op_alert_deliveries(kr_op_call *c, cJSON *out, kr_diag *d);

/* shared by the handlers */
/* The org an any-admin operation reports on: an org admin's own (403 when it
 * names another), else the "org" parameter's, else 0 (every org). */
int kr_ops_org_filter(const kr_op_call *c, int64_t *org_id, kr_diag *d);
/* "state" (active / expired / revoked) and the three times of a token. */
void kr_ops_add_lifetime(cJSON *o, int64_t created, int64_t expires, int64_t revoked);
/* Moves every member of src into out; frees src. */
void kr_ops_merge(cJSON *out, cJSON *src);
void kr_ops_provision_ctx(const kr_op_call *c, kr_provision_ctx *ctx);

#endif
