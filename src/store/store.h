/*
 * store.h -- keyrail's persistent state: orgs, workspaces, secrets (as
 * ciphertext), workspace tokens (as hashes), the usage ledger with its daily
 * rollup, and credits.
 *
 * One interface for both engines: the functions below are written once in
 * portable SQL (store.c) over a kr_db driver (db_sqlite.c, db_pg.c).
 * Versioned migrations (migrations.c) are applied by kr_store_open. Every
 * function returns 0 or a KR_E* code; "not there" is KR_ENOTFOUND, never a
 * zeroed row. A kr_store is one connection: one thread at a time.
 */
#ifndef KR_STORE_H
#define KR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/usage.h"
#include "store/db.h"

typedef struct kr_store {
    kr_db *db;
    char url[512];
    int txdepth; /* open transactions: 1 = the engine's, more = savepoints inside it */
} kr_store;

typedef enum { KR_WS_WORKSPACE = 0, KR_WS_CONCIERGE = 1 } kr_ws_kind;
typedef enum { KR_SCOPE_ORG = 0, KR_SCOPE_WORKSPACE = 1 } kr_scope;

static inline const char *kr_ws_kind_name(kr_ws_kind k)
{
    return k == KR_WS_CONCIERGE ? "concierge" : "workspace";
}
static inline const char *kr_scope_name(kr_scope s)
{
    return s == KR_SCOPE_WORKSPACE ? "workspace" : "org";
}

typedef struct kr_org {
    int64_t id;
    char slug[64];
    char name[128];
    char status[16];
    int64_t created_at; /* ms since epoch */
} kr_org;

typedef struct kr_workspace {
    int64_t id;
    int64_t org_id;
    char name[64];
    kr_ws_kind kind;
    char runtime[32]; /* agent runtime: claude-code, codex, … */
    int64_t parent_id; /* 0 = none */
    char status[16];
    int64_t created_at;
} kr_workspace;

typedef struct kr_secret_row {
    kr_scope scope;
    int64_t owner_id;
    char key[128];
    char *ciphertext; /* base64 of version byte || nonce || AEAD output */
    int enc_version;
    int64_t created_at, updated_at;
} kr_secret_row;

typedef struct kr_token {
    int64_t id;
    int64_t workspace_id;
    char prefix[24]; /* first characters of the plaintext, for operators */
    char hash[65];   /* hex BLAKE2b-256 of the plaintext */
    int64_t created_at;
    int64_t expires_at; /* 0 = never */
    int64_t revoked_at; /* 0 = active */
} kr_token;

typedef struct kr_usage_rec {
    char request_id[40];
    int64_t org_id, workspace_id;
    char provider[32];
    char model[128];
    kr_usage u;
    int64_t cost_micros;
    char status[16]; /* complete | partial | error */
    int64_t started_at, finished_at;
    /* last: the usage journal's version-1 frames end before it */
    char route[12]; /* platform | byok (metered, priced, never debited) */
} kr_usage_rec;

int kr_store_open(const char *url, kr_store **out, kr_diag *d);
void kr_store_close(kr_store *s);
/* The calling thread yields its CPU every us microseconds of SQLite work
 * (0: never); for a background writer sharing few cores with the request
 * path. No effect on PostgreSQL. */
void kr_store_yield_every_us(unsigned us);
int kr_store_ping(kr_store *s, kr_diag *d);
int kr_store_schema_version(kr_store *s, int *version, kr_diag *d);

/* Names that enter from outside (the CLI; an HTTP API later): an org slug
 * and a workspace name are each 1-63 of [a-z0-9-], not starting with '-'
 * (so "org/ws" is unambiguous, and neither can be "", ".", "..", or hold a
 * '/', a control byte or a space). 0, or KR_EINVAL with d saying why. The
 * store functions below that take a name or a reference check it. */
#define KR_NAME_MAX 63
int kr_org_slug_check(const char *slug, kr_diag *d);
int kr_ws_name_check(const char *name, kr_diag *d);

/* Checks the slug, and the display name: 1-127 bytes, no control bytes. */
int kr_org_create(kr_store *s, const char *slug, const char *name, kr_org *out, kr_diag *d);
/* ref: a slug or a numeric id. */
int kr_org_find(kr_store *s, const char *ref, kr_org *out, kr_diag *d);
int kr_org_get(kr_store *s, int64_t id, kr_org *out, kr_diag *d);
int kr_org_list(kr_store *s, kr_org **out, size_t *n, kr_diag *d);

/* KR_ECONCIERGE_EXISTS when the org has one; KR_EEXISTS for a taken name;
 * KR_EINVAL for a name kr_ws_name_check refuses. */
int kr_ws_create(kr_store *s, int64_t org_id, const char *name, kr_ws_kind kind,
                 const char *runtime, int64_t parent_id, kr_workspace *out, kr_diag *d);
int kr_ws_get(kr_store *s, int64_t id, kr_workspace *out, kr_diag *d);
/* ref: "org-slug/name" or a numeric id. */
int kr_ws_find(kr_store *s, const char *ref, kr_workspace *out, kr_diag *d);
/* The reference alone ("ORG/NAME" or an id), without the store: what
 * kr_ws_find would refuse before looking. */
int kr_ws_ref_check(const char *ref, kr_diag *d);
/* Deletes a workspace with its secrets and tokens (used to undo a create
 * whose provisioning failed). */
int kr_ws_delete(kr_store *s, int64_t id, kr_diag *d);
int kr_ws_list(kr_store *s, int64_t org_id, kr_workspace **out, size_t *n, kr_diag *d);

/* Raw secret rows. Use secrets.h to read and write values. */
int kr_store_secret_put(kr_store *s, kr_scope scope, int64_t owner, const char *key,
                        const char *ciphertext, int enc_version, kr_diag *d);
int kr_store_secret_get(kr_store *s, kr_scope scope, int64_t owner, const char *key,
                        kr_secret_row *out, kr_diag *d);
int kr_store_secret_del(kr_store *s, kr_scope scope, int64_t owner, const char *key, kr_diag *d);
int kr_store_secret_list(kr_store *s, kr_scope scope, int64_t owner, kr_secret_row **out,
                         size_t *n, kr_diag *d);
void kr_secret_row_free(kr_secret_row *r);
void kr_secret_rows_free(kr_secret_row *rows, size_t n);

/* ttl_ms: the lifetime (0: never expires); expires_at = created_at + ttl_ms,
 * both from one clock reading. */
int kr_token_insert(kr_store *s, int64_t ws, const char *hash_hex, const char *prefix,
                    int64_t ttl_ms, kr_token *out, kr_diag *d);
int kr_token_by_hash(kr_store *s, const char *hash_hex, kr_token *out, kr_diag *d);
/* ref: numeric id or prefix. */
int kr_token_find(kr_store *s, const char *ref, kr_token *out, kr_diag *d);
int kr_token_revoke(kr_store *s, int64_t id, kr_diag *d);
int kr_token_list(kr_store *s, int64_t ws, kr_token **out, size_t *n, kr_diag *d);

/* Records a batch in one transaction: usage rows (a request id already
 * recorded is skipped, so a replay is harmless), the daily rollup and the
 * debit of each org's credits with a ledger entry. */
int kr_usage_record(kr_store *s, const kr_usage_rec *recs, size_t n, kr_diag *d);

/* Credits: balance and overage cap in micro-units of currency. An org
 * without a credits row has balance 0 and cap 0. */
int kr_credits_get(kr_store *s, int64_t org, int64_t *balance, int64_t *cap, kr_diag *d);
int kr_credits_add(kr_store *s, int64_t org, int64_t delta, const char *reason, kr_diag *d);
int kr_credits_set_cap(kr_store *s, int64_t org, int64_t cap, kr_diag *d);

typedef struct kr_ledger_row {
    int64_t id;
    int64_t delta_micros;
    char reason[64];
    char request_id[40];
    int64_t created_at;
} kr_ledger_row;

/* The newest `limit` ledger entries of an org, newest first. */
int kr_credits_history(kr_store *s, int64_t org, size_t limit, kr_ledger_row **out, size_t *n,
                       kr_diag *d);

/* Rate limits per scope (0 = unlimited). Absent row: 0/0. */
int kr_limits_get(kr_store *s, kr_scope scope, int64_t owner, int64_t *rpm, int64_t *tpm, kr_diag *d);
int kr_limits_set(kr_store *s, kr_scope scope, int64_t owner, int64_t rpm, int64_t tpm, kr_diag *d);

/* Model allow-list of a scope: the canonical model ids it may use, sorted.
 * An empty list means "no list": every priced platform model. */
int kr_allow_get(kr_store *s, kr_scope scope, int64_t owner, char ***models, size_t *n, kr_diag *d);
int kr_allow_set(kr_store *s, kr_scope scope, int64_t owner, const char *const *models, size_t n,
                 kr_diag *d);
void kr_strv_free(char **v, size_t n);

/* Shared fixed-window rate counters (one window per UTC minute). Adds the
 * deltas and returns the totals after the add, in one transaction. */
typedef struct kr_rate_key {
    kr_scope scope;
    int64_t owner;
    int64_t window_start; /* unix seconds, a multiple of 60 */
    int64_t add_requests, add_tokens;
    int64_t total_requests, total_tokens; /* out */
} kr_rate_key;
int kr_rate_sync(kr_store *s, kr_rate_key *keys, size_t n, kr_diag *d);

/* Usage report from the daily rollup. group: any of "org", "workspace",
 * "model", "route" (platform, byok), "day" (comma-separated, in that order
 * of columns). An org is
 * shown by its slug and a workspace as "org-slug/name" (one deleted since:
 * "#id"), rows ordered by those. Filters are 0 / NULL when unused; days are
 * "YYYY-MM-DD", inclusive. */
typedef struct kr_usage_filter {
    int64_t org_id, workspace_id;
    const char *model, *from_day, *to_day;
} kr_usage_filter;
int kr_usage_report(kr_store *s, const kr_usage_filter *f, const char *group, kr_dbres *out,
                    kr_diag *d);

/* "YYYY-MM-DD" (UTC) of a ms timestamp. */
void kr_utc_day(int64_t ms, char out[11]);

/* ---- the master key check (secrets.h kr_master_key_verify) ---- */

/* The stored key check (a 64-hex-digit keyed fingerprint of the master key
 * the secrets are sealed under) into out; KR_ENOTFOUND while none is stored
 * (a store made before the check existed). */
int kr_store_keycheck_get(kr_store *s, char out[65], kr_diag *d);
/* Stores fp as the key check when none is stored yet -- the first writer
 * wins -- and gives what is stored afterwards in out. */
int kr_store_keycheck_init(kr_store *s, const char *fp, char out[65], kr_diag *d);

/* A transaction for a secret writer that checks the key first
 * (kr_secret_set): on PostgreSQL it also waits for, and holds off, a
 * rotation (kr_store_secret_rewrite_all), so no value sealed under the old
 * key can land after a rotation committed. SQLite: a write transaction. */
int kr_store_secret_write_begin(kr_store *s, kr_diag *d);
int kr_store_commit(kr_store *s, kr_diag *d);
void kr_store_rollback(kr_store *s);
/* ---- admin tokens, console sessions, audit log, idempotency keys ---- */

typedef enum { KR_ADMIN_OPERATOR = 0, KR_ADMIN_ORG = 1 } kr_admin_scope;

static inline const char *kr_admin_scope_name(kr_admin_scope s)
{
    return s == KR_ADMIN_ORG ? "org" : "operator";
}

typedef struct kr_admin_token {
    int64_t id;
    char prefix[16];
    kr_admin_scope scope;
    int64_t org_id; /* org scope: the one org it administers; else 0 */
    char org_slug[64];
    char name[128];
    int64_t created_at, expires_at, revoked_at; /* 0 = none */
} kr_admin_token;

/* ttl_ms as kr_token_insert's. */
int kr_admin_token_insert(kr_store *s, const char *hash_hex, const char *prefix,
                          kr_admin_scope scope, int64_t org_id, const char *name,
                          int64_t ttl_ms, kr_admin_token *out, kr_diag *d);
int kr_admin_token_by_hash(kr_store *s, const char *hash_hex, kr_admin_token *out, kr_diag *d);
int kr_admin_token_get(kr_store *s, int64_t id, kr_admin_token *out, kr_diag *d);
/* KR_ENOTFOUND when there is none, or it is revoked already. */
int kr_admin_token_revoke(kr_store *s, int64_t id, kr_diag *d);
int kr_admin_token_list(kr_store *s, kr_admin_token **out, size_t *n, kr_diag *d);

/* Console sessions, keyed by the hash of the cookie's value. */
int kr_session_insert(kr_store *s, const char *hash_hex, int64_t token_id, const char *csrf,
                      int64_t expires_at, kr_diag *d);
int kr_session_get(kr_store *s, const char *hash_hex, int64_t *token_id, char csrf[65],
                   int64_t *expires_at, kr_diag *d);
int kr_session_delete(kr_store *s, const char *hash_hex, kr_diag *d);

/* One row of the append-only audit log (the store refuses UPDATE and
 * DELETE on it). Never a secret value. */
typedef struct kr_audit_row {
    int64_t id, at;
    char actor[96];      /* "admin:<prefix>…", "cli:<user>" */
    char actor_scope[24];
    char action[48];     /* the operation, e.g. "secret.set" */
    char target[256];    /* e.g. "acme/dev KEY" */
    int64_t org_id;      /* the org concerned, 0 = none */
    char request_id[48];
    char outcome[24];    /* "ok" or an error name */
    char detail[320];
} kr_audit_row;

int kr_audit_append(kr_store *s, const kr_audit_row *r, kr_diag *d);

typedef struct kr_audit_filter {
    int64_t org_id;     /* 0: every org */
    const char *action; /* NULL: any */
    const char *actor;  /* NULL: any */
    int64_t since, until; /* ms; 0: open */
    int64_t before_id;  /* keyset pagination: rows with id < before_id; 0: from the newest */
    size_t limit;
} kr_audit_filter;

/* Newest first. */
int kr_audit_list(kr_store *s, const kr_audit_filter *f, kr_audit_row **out, size_t *n, kr_diag *d);

/* Idempotency keys of create operations: the first response, replayed. */
int kr_idem_get(kr_store *s, const char *actor, const char *key, char op[48], char hash[65],
                int *status, char **response, kr_diag *d);
int kr_idem_put(kr_store *s, const char *actor, const char *key, const char *op, const char *hash,
                int status, const char *response, kr_diag *d);

/* A transaction around several store calls (an operation and its audit row,
 * src/ops). Transactions nest: inside one, a store function's own
 * transaction becomes a savepoint, committed or rolled back with it. */
int kr_store_begin(kr_store *s, kr_diag *d);

/* ---- master key rotation (keyrail rekey, src/cli/cmd_rekey.c) ---- */

/* Every stored secret row, all scopes, ordered by scope, owner and key. */
int kr_store_secret_list_all(kr_store *s, kr_secret_row **out, size_t *n, kr_diag *d);

/* Gives a row's new ciphertext (heap, the store frees it) and version. A
 * non-zero return aborts the rewrite with that code (fill d). */
typedef int (*kr_secret_rewrite_fn)(void *arg, const kr_secret_row *row, char **new_ciphertext,
                                    int *new_version, kr_diag *d);
/* Rewrites every stored secret in ONE write transaction: the rows are read
 * inside it (on PostgreSQL the secrets table is locked against other writers
 * first, readers go on; SQLite's write transaction does the same), fn is
 * called for each row in kr_store_secret_list_all order, and each row is
 * updated only while it still holds the ciphertext fn saw. Any failure --
 * fn's, the store's, a row changed underneath -- rolls everything back:
 * never half rewritten. With commit false the transaction is rolled back
 * after the last row (a dry run of exactly the same steps). *n (optional)
 * receives the number of rows rewritten (or that would be). */
int kr_store_secret_rewrite_all(kr_store *s, kr_secret_rewrite_fn fn, void *arg, bool commit,
                                size_t *n, kr_diag *d);
/* The same, and the key check moves with the secrets in that transaction:
 * a stored check must equal check_from (else KR_EWRONG_MASTER_KEY, nothing
 * changed; the message says when it equals check_to: already rotated), and
 * check_to is stored when the rows are done. */
int kr_store_secret_rewrite_all_keyed(kr_store *s, kr_secret_rewrite_fn fn, void *arg,
                                      bool commit, const char *check_from,
                                      const char *check_to, size_t *n, kr_diag *d);

/* ---- budget alerts (src/alerts) ---- */

typedef enum { KR_ALERT_BUDGET = 0, KR_ALERT_BALANCE = 1 } kr_alert_kind;

typedef struct kr_alert {
    int64_t id, org_id, ws_id; /* ws_id 0: the org's */
    kr_alert_kind kind;
    char period[8];            /* budget: "day" or "month" */
    int64_t amount_micros;     /* budget: the budget; balance: the threshold */
    char percents[64];         /* budget: "50,80,100" */
    char url[512];
    char *secret;              /* sealed (base64); heap, freed by kr_alert_free */
    bool armed;                /* balance: not below since the last crossing */
    int64_t seq;               /* balance: crossings so far */
    int64_t created_at;
} kr_alert;

typedef struct kr_alert_delivery {
    int64_t id, alert_id, org_id;
    char crossing[64];
    char *body; /* heap */
    char status[12]; /* pending, delivered, failed */
    int64_t attempts, next_at, last_status, created_at, delivered_at;
    char last_error[200];
} kr_alert_delivery;

void kr_alerts_free(kr_alert *a, size_t n);
void kr_alert_deliveries_free(kr_alert_delivery *a, size_t n);
/* The secret is sealed by the caller (its AAD names the alert: the id comes
 * from the store, so the row is written, sealed and updated in one
 * transaction by seal(ctx, id, out)). */
int kr_alert_create(kr_store *s, kr_alert *a, int (*seal)(void *ctx, int64_t id, kr_buf *out),
                    void *ctx, kr_diag *d);
/* org_id 0: every org's. */
int kr_alert_list(kr_store *s, int64_t org_id, kr_alert **out, size_t *n, kr_diag *d);
int kr_alert_delete(kr_store *s, int64_t org_id, int64_t id, kr_diag *d);
/* Platform spend (debited cost) of an org, or of one workspace (ws > 0),
 * over days [from, to] ("YYYY-MM-DD"). */
int kr_alert_spend(kr_store *s, int64_t org, int64_t ws, const char *from, const char *to,
                   int64_t *spend, kr_diag *d);
/* A crossing's delivery, at most once per (alert, crossing) across every
 * instance: *added says whether this call made it. */
int kr_alert_crossing_add(kr_store *s, const kr_alert *a, const char *crossing, const char *body,
                          bool *added, kr_diag *d);
/* balance: disarm (one caller wins: *seq is the crossing's number, 0 when
 * another instance won) or re-arm. */
int kr_alert_disarm(kr_store *s, int64_t id, int64_t *seq, kr_diag *d);
int kr_alert_rearm(kr_store *s, int64_t id, kr_diag *d);
/* Deliveries due now (pending, next_at reached, not claimed). */
int kr_alert_due(kr_store *s, int64_t now, size_t limit, kr_alert_delivery **out, size_t *n,
                 kr_diag *d);
/* Claims a due delivery until `until`; *won says whether this caller got it. */
int kr_alert_claim(kr_store *s, int64_t id, int64_t now, int64_t until, bool *won, kr_diag *d);
/* After an attempt: delivered, or retried at next_at, or failed for good. */
int kr_alert_attempted(kr_store *s, int64_t id, const char *status, int64_t last_status,
                       const char *err, int64_t next_at, int64_t now, kr_diag *d);
/* An org's deliveries, newest first. */
int kr_alert_deliveries(kr_store *s, int64_t org_id, size_t limit, kr_alert_delivery **out,
                        size_t *n, kr_diag *d);

#endif
