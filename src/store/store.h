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

#include "core/err.h"
#include "core/usage.h"
#include "store/db.h"

typedef struct kr_store {
    kr_db *db;
    char url[512];
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
} kr_usage_rec;

int kr_store_open(const char *url, kr_store **out, kr_diag *d);
void kr_store_close(kr_store *s);
/* The calling thread yields its CPU every us microseconds of SQLite work
 * (0: never); for a background writer sharing few cores with the request
 * path. No effect on PostgreSQL. */
void kr_store_yield_every_us(unsigned us);
int kr_store_ping(kr_store *s, kr_diag *d);
int kr_store_schema_version(kr_store *s, int *version, kr_diag *d);

int kr_org_create(kr_store *s, const char *slug, const char *name, kr_org *out, kr_diag *d);
/* ref: a slug or a numeric id. */
int kr_org_find(kr_store *s, const char *ref, kr_org *out, kr_diag *d);
int kr_org_get(kr_store *s, int64_t id, kr_org *out, kr_diag *d);
int kr_org_list(kr_store *s, kr_org **out, size_t *n, kr_diag *d);

/* KR_ECONCIERGE_EXISTS when the org has one; KR_EEXISTS for a taken name. */
int kr_ws_create(kr_store *s, int64_t org_id, const char *name, kr_ws_kind kind,
                 const char *runtime, int64_t parent_id, kr_workspace *out, kr_diag *d);
int kr_ws_get(kr_store *s, int64_t id, kr_workspace *out, kr_diag *d);
/* ref: "org-slug/name" or a numeric id. */
int kr_ws_find(kr_store *s, const char *ref, kr_workspace *out, kr_diag *d);
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

int kr_token_insert(kr_store *s, int64_t ws, const char *hash_hex, const char *prefix,
                    int64_t expires_at, kr_token *out, kr_diag *d);
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
 * "model", "day" (comma-separated, in that order of columns). Filters are
 * 0 / NULL when unused; days are "YYYY-MM-DD", inclusive. */
typedef struct kr_usage_filter {
    int64_t org_id, workspace_id;
    const char *model, *from_day, *to_day;
} kr_usage_filter;
int kr_usage_report(kr_store *s, const kr_usage_filter *f, const char *group, kr_dbres *out,
                    kr_diag *d);

/* "YYYY-MM-DD" (UTC) of a ms timestamp. */
void kr_utc_day(int64_t ms, char out[11]);

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

#endif
