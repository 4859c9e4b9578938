/*
 * ops.h -- the operations layer: every control-plane operation, once.
 *
 * One table row per operation (ops.c) carries its name, its HTTP method and
 * path, who may run it, its typed parameters and its handler. The command
 * line (src/cli) and the admin HTTP API (src/admin) both call kr_ops_run();
 * the OpenAPI document, the access-matrix test and the API's routing are
 * generated from the same table, so an operation cannot exist in one place
 * and be missing in another, and no rule is written twice.
 *
 * kr_ops_run() checks the parameters against the row (types, required),
 * resolves the {org} / {ws} the call names (404), checks the actor's scope
 * (403), and runs the handler; a mutation runs in one store transaction
 * together with its audit row (and, for a create with an idempotency key,
 * the remembered response). A refused or failed mutation is audited too,
 * in its own statement. Results and errors are JSON (cJSON) with stable
 * error codes (kr_err_name: FORBIDDEN_KEY, MISSING_MODEL, …).
 */
#ifndef KR_OPS_H
#define KR_OPS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/err.h"
#include "provision/provision.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "secrets/secrets.h"
#include "store/store.h"

/* Who may run an operation. */
typedef enum {
    KR_OPS_OPERATOR = 0, /* operators only */
    KR_OPS_ORG,          /* operators, and the admin of the {org} the call names */
    KR_OPS_ANY_ADMIN,    /* operators; an org admin gets its own org's part */
} kr_ops_scope;

typedef enum { KR_P_STR = 0, KR_P_INT, KR_P_BOOL, KR_P_LIST, KR_P_OBJECT } kr_param_type;
typedef enum { KR_IN_PATH = 0, KR_IN_QUERY, KR_IN_BODY } kr_param_in;

typedef struct kr_op_param {
    const char *name;
    kr_param_type type;
    kr_param_in in;
    bool required;
    const char *help;
} kr_op_param;

/* Who runs it. */
typedef struct kr_actor {
    char name[96]; /* audit: "admin:kradm_AbCd…", "cli:root" */
    kr_admin_scope scope;
    int64_t org_id;   /* org admin: its org */
    int64_t token_id; /* the admin token, 0 for the command line */
    bool cli;         /* the command line on a machine holding the master key */
} kr_actor;

/* What operations need besides the store. */
typedef kr_plane kr_ops_env;

typedef struct kr_op kr_op;

typedef struct kr_op_call {
    const kr_op *op;
    kr_store *st;
    const kr_ops_env *env;
    const kr_actor *actor;
    const char *request_id;
    const char *idem_key; /* Idempotency-Key of a create, or NULL */
    cJSON *params;        /* object: parameter name -> value */
    /* resolved by kr_ops_run from the {org} / {ws} parameters */
    kr_org org;
    bool has_org;
    kr_workspace ws;
    bool has_ws;
    /* the audit row's target and detail, set by the handler (never a value) */
    char target[256];
    char detail[320];
    bool replayed;     /* the response is an idempotent replay ... */
    int replay_status; /* ... with the status the first answer had */
} kr_op_call;

typedef int (*kr_op_fn)(kr_op_call *c, cJSON *out, kr_diag *d);

struct kr_op {
    const char *name;    /* "org.create" */
    const char *summary; /* one line: --help, OpenAPI */
    const char *method;  /* HTTP method, NULL: command line only */
    const char *path;    /* HTTP path under /admin/v1, with {org} {ws} {key} {id} */
    kr_ops_scope scope;
    bool mutates; /* audited; one transaction with its audit row */
    bool creates; /* honours an Idempotency-Key */
    bool list;    /* answers {"items": […], "next_cursor": …} */
    const kr_op_param *params;
    size_t nparams;
    kr_op_fn fn;
    int ok_status;  /* HTTP status on success */
    bool needs_key; /* opens or seals secrets: needs the master key */
};

const kr_op *kr_ops_table(size_t *n);
const kr_op *kr_ops_find(const char *name);

/* Runs c->op. *out receives the result object (caller frees) on success and
 * the error object {"code", "message"} on failure; returns 0 or the error. */
int kr_ops_run(kr_op_call *c, cJSON **out, kr_diag *d);

/* The HTTP status of an error. */
int kr_ops_http_status(int err);

/* Parameter accessors for handlers (the dispatcher has checked the types). */
const char *kr_op_str(const kr_op_call *c, const char *name); /* NULL when absent */
bool kr_op_has(const kr_op_call *c, const char *name);
int64_t kr_op_int(const kr_op_call *c, const char *name, int64_t dflt);
bool kr_op_bool(const kr_op_call *c, const char *name);
const cJSON *kr_op_get(const kr_op_call *c, const char *name);

/* Frees a parameter or result object, wiping every string in it first
 * (a secret value, a minted token, an environment's values). */
void kr_ops_params_free(cJSON *j);

/* Builds the command line's actor ("cli:<user>", operator scope). */
void kr_actor_cli(kr_actor *a);

/* Times in results: ISO 8601 UTC ("" / null for 0). */
void kr_ops_time(int64_t ms, char *out, size_t cap);
void kr_ops_add_time(cJSON *o, const char *name, int64_t ms);

/* Money: micro-units <-> "12.500000". */
void kr_money_str(int64_t micros, char *out, size_t cap);
int kr_money_parse(const char *s, int64_t *out);

#endif
