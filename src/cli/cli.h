/*
 * cli.h -- the `keyrail` command line: subcommand dispatch, the shared
 * option parser, and the operator context (config, store, registry, key).
 *
 * Every command prints a one-line error and exits non-zero on failure;
 * secret values and token plaintexts are never printed (except a token
 * once, at mint time).
 */
#ifndef KR_CLI_H
#define KR_CLI_H

#include <stdbool.h>

#include "config/config.h"
#include "ops/ops.h"
#include "provision/forbidden.h"
#include "provision/provision.h"
#include "registry/registry.h"
#include "secrets/secrets.h"
#include "store/store.h"

int kr_cli_main(int argc, char **argv);

/* ---- option parsing shared by the commands ---- */

typedef struct kr_opt {
    const char *name; /* "--model" */
    bool takes_value;
    const char *help;
} kr_opt;

typedef struct kr_args {
    const kr_opt *opts;
    size_t nopts;
    const char *values[32]; /* last value per option (or "1" for flags) */
    const char *multi[32][32]; /* every value per option, for repeatable options */
    size_t nmulti[32];
    const char *pos[16]; /* positional arguments */
    size_t npos;
    char **rest; /* after "--" */
    int nrest;
} kr_args;

/* Parses argv (after the subcommand words). Prints an error and returns -1
 * on an unknown option or a missing value; 1 when --help was given (usage
 * printed). */
int kr_args_parse(kr_args *a, const kr_opt *opts, size_t nopts, int argc, char **argv,
                  const char *usage);
const char *kr_arg(const kr_args *a, const char *name);
bool kr_flag(const kr_args *a, const char *name);

/* ---- operator context ---- */

typedef struct kr_cli {
    kr_config cfg;
    kr_store *st;
    kr_registry *reg;
    kr_runtimes *rts;
    kr_policy pol;
    kr_master_key mk;
    bool have_mk;
} kr_cli;

/* Loads config (--config, --db), then opens what the command needs. Each
 * prints its own error. */
int kr_cli_init(kr_cli *c, const kr_args *a);
int kr_cli_store(kr_cli *c);
/* The provider registry and the runtime profiles. */
int kr_cli_registry(kr_cli *c);
int kr_cli_key(kr_cli *c);
void kr_cli_free(kr_cli *c);
/* The provision context from the loaded config/registry. */
void kr_cli_provision_ctx(kr_cli *c, kr_provision_ctx *ctx, char *proxy_url, size_t cap);
int kr_cli_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Runs an operation (src/ops) as the command line: an operator, audited as
 * "cli:<user>". Opens what it needs; on failure prints one line,
 * "keyrail: <what>: CODE: message", frees *out and returns 1. On success
 * *out is the result (the caller frees it). */
int kr_cli_op(kr_cli *c, const char *name, const char *what, cJSON *params, cJSON **out);
/* A workspace reference ("ORG/NAME" or an id) into params "org" and ws_key;
 * a bad reference is refused as the store would refuse it (printed, 1). */
int kr_cli_ws_ref(kr_cli *c, const char *what, const char *ref, cJSON *params, const char *ws_key);
/* "2026-12-04T05:37:36Z" of an ISO string result, "-" for null. */
const char *kr_cli_jstr(const cJSON *o, const char *name);
/* For an error e: " (the master key from KEYRAIL_MASTER_KEY|key file F)"
 * when e is KR_EWRONG_MASTER_KEY, else "". */
const char *kr_cli_key_hint(const kr_cli *c, int e, char *buf, size_t cap);
/* --org ORG or --ws ORG/NAME -> scope and owner (prints its own error). */
int kr_cli_scope(kr_cli *c, const kr_args *a, kr_scope *scope, int64_t *owner, char *label,
                 size_t cap);

/* Common options every store command accepts. */
#define KR_COMMON_OPTS                                                                             \
    {"--config", true, "config file"}, {"--db", true, "store URL (overrides store.url)"},          \
        {"--registry", true, "provider registry file"}, {"--help", false, "show this help"}

int kr_cmd_org(int argc, char **argv);
int kr_cmd_ws(int argc, char **argv);
int kr_cmd_secret(int argc, char **argv);
int kr_cmd_token(int argc, char **argv);
int kr_cmd_provision(int argc, char **argv);
int kr_cmd_explain(int argc, char **argv);
int kr_cmd_config(int argc, char **argv);
int kr_cmd_keygen(int argc, char **argv);
int kr_cmd_serve(int argc, char **argv);
int kr_cmd_run(int argc, char **argv);
int kr_cmd_credits(int argc, char **argv);
int kr_cmd_alert(int argc, char **argv);
int kr_cmd_usage(int argc, char **argv);
int kr_cmd_limits(int argc, char **argv);
int kr_cmd_rekey(int argc, char **argv);
int kr_cmd_admin_token(int argc, char **argv);
int kr_cmd_audit(int argc, char **argv);

/* Master key rotation (cmd_rekey.c): every stored secret re-encrypted from old_key to
 * new_key in one store transaction, or nothing (dry_run: the same steps, rolled back).
 * *n receives the number of secrets re-encrypted. */
int kr_rekey(kr_store *st, const kr_master_key *old_key, const kr_master_key *new_key,
             bool dry_run, size_t *n, kr_diag *d);

#endif
