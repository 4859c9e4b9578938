/*
 * cmd_admin.c -- operator commands on the store: org, ws, secret, token,
 * provision, explain, config, keygen.
 */
#include "cli/cli.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void fmt_time(int64_t ms, char *out, size_t cap)
{
    if (!ms) {
        kr_strlcpy(out, "-", cap);
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- org ---- */

int kr_cmd_org(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS, {"--name", true, "display name (create)"}};
    const char *usage = "usage: keyrail org create SLUG [--name NAME]\n       keyrail org list";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 1) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    if (!strcmp(a.pos[0], "create") && a.npos == 2) {
        const char *slug = a.pos[1];
        kr_org o;
        /* the store checks the slug and the display name */
        int e = kr_org_create(c.st, slug, kr_arg(&a, "--name") ? kr_arg(&a, "--name") : slug, &o, &d);
        if (e) kr_cli_errf("org create: %s", kr_diag_msg(&d, e));
        else {
            printf("org %s created (id %lld)\n", o.slug, (long long)o.id);
            rc = 0;
        }
    } else if (!strcmp(a.pos[0], "list") && a.npos == 1) {
        kr_org *orgs;
        size_t n;
        int e = kr_org_list(c.st, &orgs, &n, &d);
        if (e) kr_cli_errf("org list: %s", kr_diag_msg(&d, e));
        else {
            printf("%-6s %-24s %-24s %-8s %s\n", "ID", "SLUG", "NAME", "STATUS", "CREATED");
            for (size_t i = 0; i < n; i++) {
                /* what the store holds is shown escaped: one row per org */
                char t[32], e1[300], e2[600], e3[100];
                fmt_time(orgs[i].created_at, t, sizeof t);
                printf("%-6lld %-24s %-24s %-8s %s\n", (long long)orgs[i].id,
                       kr_esc(orgs[i].slug, e1, sizeof e1), kr_esc(orgs[i].name, e2, sizeof e2),
                       kr_esc(orgs[i].status, e3, sizeof e3), t);
            }
            free(orgs);
            rc = 0;
        }
    } else {
        kr_cli_errf("%s", usage);
        rc = 2;
    }
    kr_cli_free(&c);
    return rc;
}

/* ---- ws ---- */

/* Splits repeated --set KEY=VALUE options into payload vars. */
static int collect_payload(const kr_args *a, const char *model, kr_payload_var *out, size_t cap,
                           size_t *n, char (*keys)[128])
{
    *n = 0;
    int k = -1;
    for (size_t i = 0; i < a->nopts; i++)
        if (!strcmp(a->opts[i].name, "--set")) k = (int)i;
    if (model) {
        out[(*n)++] = (kr_payload_var){"MODEL", model};
    }
    for (size_t i = 0; k >= 0 && i < a->nmulti[k]; i++) {
        const char *kv = a->multi[k][i];
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv) return kr_cli_errf("--set expects KEY=VALUE, got '%.40s'", kv);
        if (*n >= cap) return kr_cli_errf("too many --set options");
        if (kr_memlcpy(keys[*n], 128, kv, (size_t)(eq - kv))) return kr_cli_errf("key too long");
        out[*n] = (kr_payload_var){keys[*n], eq + 1};
        (*n)++;
    }
    return 0;
}

static void print_result_env(const kr_provision_result *r, const char *format)
{
    kr_buf out = KR_BUF_INIT(1 << 24);
    if (format && !strcmp(format, "json")) {
        kr_provision_render_json(r, true, &out);
        kr_buf_putc(&out, '\n');
    } else {
        kr_env_render_env(&r->env, &out);
    }
    fwrite(out.data, 1, out.len, stdout);
    sodium_memzero(out.data, out.len);
    kr_buf_free(&out);
}

int kr_cmd_ws(int argc, char **argv)
{
    static const kr_opt opts[] = {
        KR_COMMON_OPTS,
        {"--concierge", false, "create the org's concierge (at most one per org)"},
        {"--runtime", true, "agent runtime profile: claude-code (default), codex, … (etc/runtimes.conf)"},
        {"--model", true, "MODEL for the create payload"},
        {"--set", true, "KEY=VALUE for the create payload (repeatable)"},
        {"--parent", true, "parent workspace id"},
        {"--format", true, "env or json: print the provisioned environment"},
    };
    const char *usage =
        "usage: keyrail ws create ORG NAME [--concierge] [--runtime R] [--model M] [--set K=V]…\n"
        "       keyrail ws list [ORG]\n\n"
        "create provisions the workspace at once (a fresh create): the payload (--model, --set)\n"
        "is resolved, and persisted only if resolution succeeds; on failure nothing is kept.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 1) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    if (!strcmp(a.pos[0], "create") && a.npos == 3) {
        kr_org o;
        kr_workspace ws;
        const char *runtime = kr_arg(&a, "--runtime") ? kr_arg(&a, "--runtime") : c.cfg.default_runtime;
        kr_payload_var pv[32];
        char keys[32][128];
        size_t npv;
        int64_t parent = 0;
        if (kr_cli_registry(&c)) goto out;
        if (!kr_runtimes_find(c.rts, runtime)) {
            char names[256];
            kr_runtimes_list_names(c.rts, names, sizeof names);
            kr_cli_errf("unknown runtime '%s' (runtime profiles: %s)", runtime, names);
            goto out;
        }
        if (kr_arg(&a, "--parent") &&
            kr_parse_i64(kr_arg(&a, "--parent"), strlen(kr_arg(&a, "--parent")), &parent)) {
            kr_cli_errf("--parent takes a workspace id");
            goto out;
        }
        if (collect_payload(&a, kr_arg(&a, "--model"), pv, 32, &npv, keys)) goto out;
        if (kr_cli_registry(&c) || kr_cli_key(&c)) goto out;
        int e = kr_org_find(c.st, a.pos[1], &o, &d);
        if (e) {
            kr_cli_errf("ws create: %s", kr_diag_msg(&d, e));
            goto out;
        }
        e = kr_ws_create(c.st, o.id, a.pos[2],
                         kr_flag(&a, "--concierge") ? KR_WS_CONCIERGE : KR_WS_WORKSPACE, runtime,
                         parent, &ws, &d);
        if (e) {
            kr_cli_errf("ws create: %s: %s", kr_err_name(e), kr_diag_msg(&d, e));
            goto out;
        }
        kr_provision_ctx ctx;
        char proxy[300];
        kr_cli_provision_ctx(&c, &ctx, proxy, sizeof proxy);
        kr_provision_result r;
        e = kr_provision(c.st, &c.mk, &ctx, &ws, pv, npv, NULL, &r, &d);
        if (e) {
            char hint[700];
            kr_ws_delete(c.st, ws.id, NULL);
            kr_cli_errf("ws create: provisioning failed, workspace not created: %s: %s%s",
                        kr_err_name(e), kr_diag_msg(&d, e), kr_cli_key_hint(&c, e, hint, sizeof hint));
            kr_provision_result_free(&r);
            goto out;
        }
        if (kr_arg(&a, "--format")) print_result_env(&r, kr_arg(&a, "--format"));
        else {
            char ep[200], em[600];
            printf("%s %s/%s created (id %lld): route %s, provider %s%s%s\n",
                   kr_ws_kind_name(ws.kind), o.slug, ws.name, (long long)ws.id,
                   kr_route_name(r.res.route), kr_esc(r.res.provider, ep, sizeof ep),
                   r.res.model[0] ? ", model " : "", kr_esc(r.res.model, em, sizeof em));
        }
        kr_provision_result_free(&r);
        rc = 0;
    } else if (!strcmp(a.pos[0], "list") && a.npos <= 2) {
        int64_t org = 0;
        if (a.npos == 2) {
            kr_org o;
            int e = kr_org_find(c.st, a.pos[1], &o, &d);
            if (e) {
                kr_cli_errf("ws list: %s", kr_diag_msg(&d, e));
                goto out;
            }
            org = o.id;
        }
        kr_workspace *ws;
        size_t n;
        int e = kr_ws_list(c.st, org, &ws, &n, &d);
        if (e) {
            kr_cli_errf("ws list: %s", kr_diag_msg(&d, e));
            goto out;
        }
        printf("%-6s %-6s %-24s %-10s %-12s %s\n", "ID", "ORG", "NAME", "KIND", "RUNTIME", "CREATED");
        for (size_t i = 0; i < n; i++) {
            char t[32], e1[300], e2[200];
            fmt_time(ws[i].created_at, t, sizeof t);
            printf("%-6lld %-6lld %-24s %-10s %-12s %s\n", (long long)ws[i].id,
                   (long long)ws[i].org_id, kr_esc(ws[i].name, e1, sizeof e1),
                   kr_ws_kind_name(ws[i].kind), kr_esc(ws[i].runtime, e2, sizeof e2), t);
        }
        free(ws);
        rc = 0;
    } else {
        kr_cli_errf("%s", usage);
        rc = 2;
    }
out:
    kr_cli_free(&c);
    return rc;
}

/* ---- secret ---- */

/* The value from stdin, without trailing newlines: 0, -1 (unreadable or too
 * large), or -2 (it holds a NUL byte: a secret value is text, and stored as
 * a C string it would be cut at the NUL, silently). */
static int read_stdin_value(char *buf, size_t cap)
{
    size_t n = fread(buf, 1, cap - 1, stdin);
    if (ferror(stdin)) return -1;
    if (n == cap - 1 && !feof(stdin)) return -1;
    buf[n] = 0;
    if (memchr(buf, 0, n)) return -2;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    return 0;
}

int kr_cmd_secret(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--org", true, "org scope: ORG slug"},
                                  {"--ws", true, "workspace scope: ORG/NAME"},
                                  {"--value", true, "the value (default: read from stdin)"}};
    const char *usage = "usage: keyrail secret set (--org ORG | --ws ORG/NAME) KEY [--value V]   "
                        "(value from stdin by default)\n"
                        "       keyrail secret unset (--org ORG | --ws ORG/NAME) KEY\n"
                        "       keyrail secret list (--org ORG | --ws ORG/NAME)\n\n"
                        "Values are encrypted at rest and never printed; list shows each key's\n"
                        "state (ok / UNREADABLE), credential class and fingerprint.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 1) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    kr_scope scope;
    int64_t owner;
    if (!strcmp(a.pos[0], "set") && a.npos == 2) {
        if (kr_cli_key(&c) || kr_cli_scope(&c, &a, &scope, &owner, NULL, 0)) goto out;
        static char value[KR_SECRET_MAX_VALUE + 2];
        int e;
        if (kr_arg(&a, "--value")) {
            if (kr_strlcpy(value, kr_arg(&a, "--value"), sizeof value)) {
                kr_cli_errf("value too large");
                goto out;
            }
        } else if ((e = read_stdin_value(value, sizeof value))) {
            sodium_memzero(value, sizeof value);
            if (e == -2) kr_cli_errf("secret set: the value holds a NUL byte; secret values are text");
            else kr_cli_errf("could not read the value from stdin (at most %d bytes)", KR_SECRET_MAX_VALUE);
            goto out;
        }
        e = kr_secret_set(c.st, &c.mk, &c.pol, scope, owner, a.pos[1], value, &d);
        sodium_memzero(value, sizeof value);
        if (e) {
            char hint[700];
            kr_cli_errf("secret set: %s: %s%s", kr_err_name(e), kr_diag_msg(&d, e),
                        kr_cli_key_hint(&c, e, hint, sizeof hint));
            goto out;
        }
        printf("secret %s set at %s scope\n", a.pos[1], kr_scope_name(scope)); /* a valid name */
        rc = 0;
    } else if (!strcmp(a.pos[0], "unset") && a.npos == 2) {
        if (kr_cli_scope(&c, &a, &scope, &owner, NULL, 0)) goto out;
        int e = kr_store_secret_del(c.st, scope, owner, a.pos[1], &d);
        if (e) {
            kr_cli_errf("secret unset: %s", kr_diag_msg(&d, e));
            goto out;
        }
        char ek[600];
        printf("secret %s removed from %s scope\n", kr_esc(a.pos[1], ek, sizeof ek),
               kr_scope_name(scope));
        rc = 0;
    } else if (!strcmp(a.pos[0], "list") && a.npos == 1) {
        if (kr_cli_key(&c) || kr_cli_scope(&c, &a, &scope, &owner, NULL, 0)) goto out;
        kr_secret_row *rows;
        size_t n;
        int e = kr_store_secret_list(c.st, scope, owner, &rows, &n, &d);
        if (e) {
            kr_cli_errf("secret list: %s", kr_diag_msg(&d, e));
            goto out;
        }
        printf("%-32s %-10s %-18s %-9s %s\n", "KEY", "STATE", "CLASS", "FPRINT", "UPDATED");
        for (size_t i = 0; i < n; i++) {
            kr_buf b = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
            int orc = kr_secret_open(&c.mk, scope, owner, rows[i].key, rows[i].ciphertext,
                                     strlen(rows[i].ciphertext), &b);
            char t[32], fp[KR_FP_LEN] = "-";
            const char *cls = "-";
            if (!orc) {
                kr_cred_class k = kr_cred_classify(b.data ? b.data : "", b.len);
                if (k != KR_CRED_UNKNOWN && k != KR_CRED_NONE) {
                    cls = kr_cred_class_name(k);
                    kr_cred_fingerprint(b.data, b.len, fp);
                }
                if (b.data) sodium_memzero(b.data, b.len);
            }
            kr_buf_free(&b);
            char ek[600];
            fmt_time(rows[i].updated_at, t, sizeof t);
            printf("%-32s %-10s %-18s %-9s %s\n", kr_esc(rows[i].key, ek, sizeof ek),
                   orc ? "UNREADABLE" : "ok", cls, fp, t);
        }
        kr_secret_rows_free(rows, n);
        rc = 0;
    } else {
        kr_cli_errf("%s", usage);
        rc = 2;
    }
out:
    kr_cli_free(&c);
    return rc;
}

/* ---- token ---- */

int kr_cmd_token(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--ttl", true, "lifetime, e.g. 30d, 12h, 90m; at most 3650d (default: none)"}};
    const char *usage = "usage: keyrail token mint ORG/NAME [--ttl 30d]\n"
                        "       keyrail token revoke ID|PREFIX\n"
                        "       keyrail token list ORG/NAME\n\n"
                        "mint prints the new token on stdout, alone on one line, and nothing else\n"
                        "anywhere (so `TOKEN=$(keyrail token mint acme/dev)` captures exactly it); it\n"
                        "is shown only this once, the store keeps its hash. list and revoke show its\n"
                        "id and prefix.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 2) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    if (!strcmp(a.pos[0], "mint") && a.npos == 2) {
        kr_workspace w;
        int64_t ttl = 0;
        int e;
        if (kr_arg(&a, "--ttl") && (e = kr_token_ttl_parse(kr_arg(&a, "--ttl"), &ttl, &d))) {
            kr_cli_errf("token mint: %s", kr_diag_msg(&d, e));
            goto out;
        }
        e = kr_ws_find(c.st, a.pos[1], &w, &d);
        if (e) {
            kr_cli_errf("token mint: %s", kr_diag_msg(&d, e));
            goto out;
        }
        char tok[KR_WS_TOKEN_LEN + 1], hash[65], prefix[16];
        kr_token_generate(tok);
        kr_token_hash(tok, strlen(tok), hash);
        kr_memlcpy(prefix, sizeof prefix, tok, 12);
        kr_token t;
        e = kr_token_insert(c.st, w.id, hash, prefix, ttl ? kr_now_ms() + ttl : 0, &t, &d);
        if (e) {
            sodium_memzero(tok, sizeof tok);
            kr_cli_errf("token mint: %s", kr_diag_msg(&d, e));
            goto out;
        }
        /* the token alone on stdout: nothing of it anywhere else */
        printf("%s\n", tok);
        fflush(stdout);
        sodium_memzero(tok, sizeof tok);
        rc = 0;
    } else if (!strcmp(a.pos[0], "revoke") && a.npos == 2) {
        kr_token t;
        int e = kr_token_find(c.st, a.pos[1], &t, &d);
        if (!e) e = kr_token_revoke(c.st, t.id, &d);
        if (e) {
            kr_cli_errf("token revoke: %s", kr_diag_msg(&d, e));
            goto out;
        }
        char ep[100];
        printf("token %lld (%s…) revoked\n", (long long)t.id, kr_esc(t.prefix, ep, sizeof ep));
        rc = 0;
    } else if (!strcmp(a.pos[0], "list") && a.npos == 2) {
        kr_workspace w;
        int e = kr_ws_find(c.st, a.pos[1], &w, &d);
        kr_token *t = NULL;
        size_t n = 0;
        if (!e) e = kr_token_list(c.st, w.id, &t, &n, &d);
        if (e) {
            kr_cli_errf("token list: %s", kr_diag_msg(&d, e));
            goto out;
        }
        printf("%-6s %-14s %-8s %-20s %-20s %s\n", "ID", "PREFIX", "STATE", "CREATED", "EXPIRES",
               "REVOKED");
        int64_t now = kr_now_ms();
        for (size_t i = 0; i < n; i++) {
            char c1[32], c2[32], c3[32];
            fmt_time(t[i].created_at, c1, sizeof c1);
            fmt_time(t[i].expires_at, c2, sizeof c2);
            fmt_time(t[i].revoked_at, c3, sizeof c3);
            const char *state = t[i].revoked_at ? "revoked"
                                : (t[i].expires_at && t[i].expires_at <= now) ? "expired"
                                                                              : "active";
            char ep[100];
            printf("%-6lld %-14s %-8s %-20s %-20s %s\n", (long long)t[i].id,
                   kr_esc(t[i].prefix, ep, sizeof ep), state, c1, c2, c3);
        }
        free(t);
        rc = 0;
    } else {
        kr_cli_errf("%s", usage);
        rc = 2;
    }
out:
    kr_cli_free(&c);
    return rc;
}

/* ---- provision / explain ---- */

int kr_cmd_provision(int argc, char **argv)
{
    static const kr_opt opts[] = {
        KR_COMMON_OPTS,
        {"--rebuild", false, "rebuild from the store only (no payload)"},
        {"--model", true, "MODEL for the payload (fresh provision)"},
        {"--set", true, "KEY=VALUE for the payload (repeatable)"},
        {"--token", true, "workspace token to put in place of the placeholder"},
        {"--format", true, "env (default) or json"},
    };
    const char *usage =
        "usage: keyrail provision ORG/NAME [--rebuild] [--model M] [--set K=V]… [--format env|json]\n\n"
        "Prints the workspace's environment. Without --rebuild the payload (--model, --set) is\n"
        "resolved and, on success, persisted; with --rebuild the store alone decides. The\n"
        "workspace token appears as " KR_TOKEN_PLACEHOLDER " unless --token is given;\n"
        "`keyrail run --payload FILE` fills it in.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos != 1) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "env";
    if (strcmp(fmt, "env") && strcmp(fmt, "json")) return kr_cli_errf("--format is env or json"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c) || kr_cli_registry(&c) || kr_cli_key(&c)) {
        kr_cli_free(&c);
        return 1;
    }
    int rc = 1;
    kr_diag d = {{0}};
    kr_payload_var pv[32];
    char keys[32][128];
    size_t npv = 0;
    kr_workspace w;
    if (kr_flag(&a, "--rebuild") && (kr_arg(&a, "--model") || kr_arg(&a, "--set"))) {
        kr_cli_errf("--rebuild takes no payload (--model/--set)");
        goto out;
    }
    if (collect_payload(&a, kr_arg(&a, "--model"), pv, 32, &npv, keys)) goto out;
    int e = kr_ws_find(c.st, a.pos[0], &w, &d);
    if (e) {
        kr_cli_errf("provision: %s", kr_diag_msg(&d, e));
        goto out;
    }
    const char *token = kr_arg(&a, "--token");
    if (token && kr_cred_classify(token, strlen(token)) != KR_CRED_WORKSPACE_TOKEN) {
        kr_cli_errf("--token is not a keyrail workspace token");
        goto out;
    }
    kr_provision_ctx ctx;
    char proxy[300];
    kr_cli_provision_ctx(&c, &ctx, proxy, sizeof proxy);
    kr_provision_result r;
    e = kr_provision(c.st, &c.mk, &ctx, &w, pv, kr_flag(&a, "--rebuild") ? 0 : npv, token, &r, &d);
    if (e) {
        char hint[700];
        kr_cli_errf("provision %s: %s: %s%s", a.pos[0], kr_err_name(e), kr_diag_msg(&d, e),
                    kr_cli_key_hint(&c, e, hint, sizeof hint));
    } else {
        print_result_env(&r, fmt);
        rc = 0;
    }
    kr_provision_result_free(&r);
out:
    kr_cli_free(&c);
    return rc;
}

int kr_cmd_config(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--reference", false, "print the settings reference (Markdown)"}};
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv,
                            "usage: keyrail config [--config FILE] [--reference]");
    if (prc) return prc < 0 ? 2 : 0;
    kr_buf out = KR_BUF_INIT(1 << 20);
    if (kr_flag(&a, "--reference")) {
        kr_config_reference(&out);
    } else {
        kr_cli c;
        if (kr_cli_init(&c, &a)) return 1;
        kr_config_dump(&c.cfg, &out);
        kr_cli_free(&c);
    }
    fwrite(out.data, 1, out.len, stdout);
    kr_buf_free(&out);
    return 0;
}

int kr_cmd_keygen(int argc, char **argv)
{
    static const kr_opt opts[] = {{"--help", false, "show this help"}};
    const char *usage = "usage: keyrail keygen FILE   (writes a new master key, mode 0600)";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos != 1) return kr_cli_errf("%s", usage), 2;
    kr_diag d = {{0}};
    int e = kr_master_key_generate(a.pos[0], &d);
    if (e) return kr_cli_errf("keygen: %s", kr_diag_msg(&d, e));
    printf("master key written to %s (mode 0600)\n", a.pos[0]);
    return 0;
}
