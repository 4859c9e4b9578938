/*
 * cli.c -- dispatch, option parsing and the operator context.
 */
#include "cli/cli.h"
#include "core/log.h"

#include <sodium.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Errors are one line, and what they quote (a key, a name, a path, a
 * store's text) may be anything: the whole message is escaped for the
 * terminal (kr_buf_put_escaped). Usage texts -- keyrail's own, starting
 * with "usage: keyrail " -- keep their lines. */
int kr_cli_errf(const char *fmt, ...)
{
    char msg[8192]; /* longer messages are cut */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kr_buf out = KR_BUF_INIT(64 * 1024);
    kr_buf_puts(&out, "keyrail: ");
    if (!strncmp(msg, "usage: keyrail ", 15)) kr_buf_puts(&out, msg);
    else kr_buf_put_escaped(&out, msg, strlen(msg));
    kr_buf_putc(&out, '\n');
    fwrite(out.data, 1, out.len, stderr);
    kr_buf_free(&out);
    return 1;
}

static void print_usage(const char *usage, const kr_opt *opts, size_t n)
{
    printf("%s\n", usage);
    if (n) printf("\noptions:\n");
    for (size_t i = 0; i < n; i++)
        printf("  %-22s %s\n", opts[i].takes_value ? opts[i].name : opts[i].name, opts[i].help);
}

int kr_args_parse(kr_args *a, const kr_opt *opts, size_t nopts, int argc, char **argv,
                  const char *usage)
{
    memset(a, 0, sizeof *a);
    a->opts = opts;
    a->nopts = nopts < 32 ? nopts : 32;
    for (int i = 0; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            a->rest = argv + i + 1;
            a->nrest = argc - i - 1;
            break;
        }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_usage(usage, opts, nopts);
            return 1;
        }
        if (!strncmp(arg, "--", 2)) {
            const char *eq = strchr(arg, '=');
            size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
            size_t k;
            for (k = 0; k < a->nopts; k++)
                if (strlen(opts[k].name) == nl && !strncmp(opts[k].name, arg, nl)) break;
            if (k == a->nopts) {
                kr_cli_errf("unknown option '%.*s' (see --help)", (int)nl, arg);
                return -1;
            }
            const char *v = "1";
            if (opts[k].takes_value) {
                if (eq) v = eq + 1;
                else if (i + 1 < argc) v = argv[++i];
                else {
                    kr_cli_errf("option %s needs a value", opts[k].name);
                    return -1;
                }
            } else if (eq) {
                kr_cli_errf("option %s takes no value", opts[k].name);
                return -1;
            }
            a->values[k] = v;
            if (a->nmulti[k] < 32) a->multi[k][a->nmulti[k]++] = v;
            continue;
        }
        if (a->npos >= 16) {
            kr_cli_errf("too many arguments");
            return -1;
        }
        a->pos[a->npos++] = arg;
    }
    return 0;
}

static int opt_index(const kr_args *a, const char *name)
{
    for (size_t k = 0; k < a->nopts; k++)
        if (!strcmp(a->opts[k].name, name)) return (int)k;
    return -1;
}

const char *kr_arg(const kr_args *a, const char *name)
{
    int k = opt_index(a, name);
    return k < 0 ? NULL : a->values[k];
}

bool kr_flag(const kr_args *a, const char *name)
{
    return kr_arg(a, name) != NULL;
}

int kr_cli_init(kr_cli *c, const kr_args *a)
{
    memset(c, 0, sizeof *c);
    kr_diag d = {{0}};
    const char *cfgpath = kr_arg(a, "--config");
    if (!cfgpath) cfgpath = getenv("KEYRAIL_CONFIG");
    int rc = kr_config_load(&c->cfg, cfgpath, &d);
    if (!rc && kr_arg(a, "--db")) rc = kr_config_set(&c->cfg, "store.url", kr_arg(a, "--db"), KR_CFG_FLAG, &d);
    if (!rc && kr_arg(a, "--registry"))
        rc = kr_config_set(&c->cfg, "registry.file", kr_arg(a, "--registry"), KR_CFG_FLAG, &d);
    if (rc) return kr_cli_errf("config: %s", kr_diag_msg(&d, rc));
    kr_policy_init(&c->pol);
    if ((rc = kr_policy_add_prefixes(&c->pol, c->cfg.operator_prefixes, &d)))
        return kr_cli_errf("config: %s", kr_diag_msg(&d, rc));
    int lvl = kr_log_level_parse(c->cfg.log_level);
    if (lvl < 0) return kr_cli_errf("config: log_level '%s' is not debug|info|warn|error|off",
                                    c->cfg.log_level);
    kr_log_level = lvl;
    return 0;
}

int kr_cli_store(kr_cli *c)
{
    if (c->st) return 0;
    kr_diag d = {{0}};
    int rc = kr_store_open(c->cfg.store_url, &c->st, &d);
    if (rc) return kr_cli_errf("store: %s", kr_diag_msg(&d, rc));
    return 0;
}

int kr_cli_registry(kr_cli *c)
{
    if (c->reg) return 0;
    kr_diag d = {{0}};
    int rc = kr_config_load_registry(&c->cfg, &c->reg, &d); /* with keyrail.conf's overrides */
    if (rc) return kr_cli_errf("registry: %s", kr_diag_msg(&d, rc));
    if ((rc = kr_runtimes_load(c->cfg.runtimes_file, &c->rts, &d)))
        return kr_cli_errf("runtime profiles: %s", kr_diag_msg(&d, rc));
    return 0;
}

int kr_cli_key(kr_cli *c)
{
    if (c->have_mk) return 0;
    kr_diag d = {{0}};
    int rc = kr_master_key_load(c->cfg.master_key_file, false, &c->mk, NULL, &d);
    if (rc) return kr_cli_errf("%s", kr_diag_msg(&d, rc));
    c->have_mk = true;
    return 0;
}

const char *kr_cli_key_hint(const kr_cli *c, int e, char *buf, size_t cap)
{
    if (e != KR_EWRONG_MASTER_KEY) return "";
    char origin[600];
    kr_snprintf(buf, cap, " (the master key from %s)",
                kr_master_key_origin(c->cfg.master_key_file, origin, sizeof origin));
    return buf;
}

int kr_cli_op(kr_cli *c, const char *name, const char *what, cJSON *params, cJSON **out)
{
    *out = NULL;
    const kr_op *op = kr_ops_find(name);
    if (!op) {
        kr_ops_params_free(params);
        return kr_cli_errf("%s: no operation %s", what, name);
    }
    if (kr_cli_store(c) || kr_cli_registry(c) || (op->needs_key && kr_cli_key(c))) {
        kr_ops_params_free(params);
        return 1;
    }
    char proxy[300];
    kr_provision_ctx pctx;
    kr_cli_provision_ctx(c, &pctx, proxy, sizeof proxy);
    kr_ops_env env = {&c->cfg, c->reg, c->rts, &c->pol, c->have_mk ? &c->mk : NULL, proxy, NULL};
    kr_actor actor;
    kr_actor_cli(&actor);
    kr_op_call call;
    memset(&call, 0, sizeof call);
    call.op = op;
    call.st = c->st;
    call.env = &env;
    call.actor = &actor;
    call.request_id = "cli";
    call.params = params;
    kr_diag d = {{0}};
    int rc = kr_ops_run(&call, out, &d);
    kr_ops_params_free(params); /* a secret value may be in there */
    if (rc) {
        char hint[700];
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(*out, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(*out, "message");
        kr_cli_errf("%s: %s: %s%s", what, cJSON_IsString(code) ? code->valuestring : kr_err_name(rc),
                    cJSON_IsString(msg) ? msg->valuestring : kr_diag_msg(&d, rc),
                    kr_cli_key_hint(c, rc, hint, sizeof hint));
        cJSON_Delete(*out);
        *out = NULL;
        return 1;
    }
    return 0;
}

int kr_cli_ws_ref(kr_cli *c, const char *what, const char *ref, cJSON *params, const char *ws_key)
{
    kr_diag d = {{0}};
    int rc = kr_ws_ref_check(ref, &d);
    if (rc) return kr_cli_errf("%s: %s", what, kr_diag_msg(&d, rc));
    const char *slash = strchr(ref, '/');
    if (!slash) { /* an id: the names it has */
        kr_workspace w;
        kr_org o;
        if (kr_cli_store(c)) return 1;
        if ((rc = kr_ws_find(c->st, ref, &w, &d)) || (rc = kr_org_get(c->st, w.org_id, &o, &d)))
            return kr_cli_errf("%s: %s", what, kr_diag_msg(&d, rc));
        cJSON_AddStringToObject(params, "org", o.slug);
        cJSON_AddStringToObject(params, ws_key, w.name);
        return 0;
    }
    char org[160];
    kr_memlcpy(org, sizeof org, ref, (size_t)(slash - ref));
    cJSON_AddStringToObject(params, "org", org);
    cJSON_AddStringToObject(params, ws_key, slash + 1);
    return 0;
}

const char *kr_cli_jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : "-";
}

void kr_cli_free(kr_cli *c)
{
    kr_store_close(c->st);
    kr_registry_free(c->reg);
    kr_runtimes_free(c->rts);
    sodium_memzero(&c->mk, sizeof c->mk);
    memset(c, 0, sizeof *c);
}

void kr_cli_provision_ctx(kr_cli *c, kr_provision_ctx *ctx, char *proxy_url, size_t cap)
{
    if (c->cfg.public_url[0]) kr_strlcpy(proxy_url, c->cfg.public_url, cap);
    else kr_snprintf(proxy_url, cap, "http://%s", c->cfg.listen);
    size_t l = strlen(proxy_url);
    while (l && proxy_url[l - 1] == '/') proxy_url[--l] = 0;
    memset(ctx, 0, sizeof *ctx);
    ctx->reg = c->reg;
    ctx->rts = c->rts;
    ctx->policy = &c->pol;
    ctx->proxy_url = proxy_url;
    ctx->concierge_default_model = c->cfg.concierge_default_model;
}

int kr_cli_scope(kr_cli *c, const kr_args *a, kr_scope *scope, int64_t *owner, char *label,
                 size_t cap)
{
    kr_diag d = {{0}};
    const char *org = kr_arg(a, "--org"), *ws = kr_arg(a, "--ws");
    if (!!org == !!ws) return kr_cli_errf("give exactly one of --org ORG or --ws ORG/NAME");
    int e;
    if (org) {
        kr_org o;
        if ((e = kr_org_find(c->st, org, &o, &d))) return kr_cli_errf("%s", kr_diag_msg(&d, e));
        *scope = KR_SCOPE_ORG;
        *owner = o.id;
    } else {
        kr_workspace w;
        if ((e = kr_ws_find(c->st, ws, &w, &d))) return kr_cli_errf("%s", kr_diag_msg(&d, e));
        *scope = KR_SCOPE_WORKSPACE;
        *owner = w.id;
    }
    if (label) kr_snprintf(label, cap, "%s %s", org ? "org" : "workspace", org ? org : ws);
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"serve", kr_cmd_serve, "run the LLM proxy and workspace API"},
    {"org", kr_cmd_org, "create and list orgs"},
    {"ws", kr_cmd_ws, "create and list workspaces"},
    {"secret", kr_cmd_secret, "set, unset and list org or workspace secrets"},
    {"token", kr_cmd_token, "mint, revoke and list workspace tokens"},
    {"provision", kr_cmd_provision, "build a workspace's environment (fresh or rebuilt)"},
    {"explain", kr_cmd_explain, "show how a workspace's provider, credentials and hosts are chosen"},
    {"run", kr_cmd_run, "launch an agent with exactly the right credentials"},
    {"credits", kr_cmd_credits, "top up and inspect org credits"},
    {"limits", kr_cmd_limits, "rate limits and model allow-lists per org or workspace"},
    {"usage", kr_cmd_usage, "report token usage and cost"},
    {"alert", kr_cmd_alert, "budget and balance alerts, sent to webhooks"},
    {"config", kr_cmd_config, "print the effective configuration or its reference"},
    {"keygen", kr_cmd_keygen, "create a master key file"},
    {"rekey", kr_cmd_rekey, "re-encrypt every stored secret under a new master key"},
    {"admin-token", kr_cmd_admin_token, "mint, revoke and list admin API / console tokens"},
    {"audit", kr_cmd_audit, "read the audit log of every change"},
};

/* The common options, accepted before the command word as well as after
 * it (as git does): `keyrail --db X org list` is `keyrail org list --db X`. */
static const char *const global_opts[] = {"--config", "--db", "--registry"};

int kr_cli_main(int argc, char **argv)
{
    /* leading global options: moved behind the command word */
    int first = 1;
    while (first < argc && !strncmp(argv[first], "--", 2) && argv[first][2]) {
        const char *arg = argv[first];
        const char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
        bool known = false;
        for (size_t k = 0; k < sizeof global_opts / sizeof global_opts[0]; k++)
            known |= strlen(global_opts[k]) == nl && !strncmp(global_opts[k], arg, nl);
        if (!known) break;
        if (!eq && first + 1 >= argc) return kr_cli_errf("option %.*s needs a value", (int)nl, arg), 2;
        first += eq ? 1 : 2;
    }
    if (first >= argc || !strcmp(argv[first], "--help") || !strcmp(argv[first], "-h") ||
        !strcmp(argv[first], "help")) {
        printf("usage: keyrail [--config FILE] [--db URL] [--registry FILE] COMMAND [ARGS…]\n"
               "       (keyrail COMMAND --help for details; the options in brackets also go after\n"
               "       COMMAND)\n\ncommands:\n");
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            printf("  %-10s %s\n", commands[i].name, commands[i].help);
        return first >= argc ? 2 : 0;
    }
    if (!strcmp(argv[first], "--version")) {
        printf("keyrail 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[first], commands[i].name)) continue;
        /* the command's arguments: the leading options first, then the rest
         * (before any "--", which belongs to the command) */
        int n = argc - 2;
        char **args = kr_xcalloc((size_t)n + 1, sizeof *args);
        int k = 0;
        for (int j = 1; j < first; j++) args[k++] = argv[j];
        for (int j = first + 1; j < argc; j++) args[k++] = argv[j];
        int rc = commands[i].fn(n, args);
        free(args);
        return rc;
    }
    if (!strncmp(argv[first], "--", 2))
        return kr_cli_errf("unknown option '%s' before the command (global options: --config, "
                           "--db, --registry; see keyrail --help)",
                           argv[first]), 2;
    return kr_cli_errf("unknown command '%s' (see keyrail --help)", argv[first]);
}
