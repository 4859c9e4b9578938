/*
 * cmd_admin.c -- operator commands: org, ws, secret, token, provision,
 * admin-token, audit, config, keygen. Each parses its arguments, runs the
 * operation (src/ops, the same code the admin HTTP API runs) and prints its
 * result; nothing here decides anything.
 */
#include "cli/cli.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* A string field of a JSON result, escaped for the terminal. */
static const char *E(const cJSON *o, const char *name, char *buf, size_t cap)
{
    return kr_esc(kr_cli_jstr(o, name), buf, cap);
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static cJSON *items(const cJSON *o)
{
    return cJSON_GetObjectItemCaseSensitive(o, "items");
}

/* Lists: every page (the command line shows them all). */
static int run_all(kr_cli *c, const char *op, const char *what, cJSON *params, cJSON **out)
{
    cJSON *all = NULL;
    for (;;) {
        cJSON *page;
        cJSON_AddNumberToObject(params, "limit", 1000);
        if (kr_cli_op(c, op, what, cJSON_Duplicate(params, true), &page)) {
            cJSON_Delete(all);
            cJSON_Delete(params);
            return 1;
        }
        if (!all) all = cJSON_Duplicate(page, true);
        else {
            cJSON *e;
            cJSON_ArrayForEach(e, items(page)) cJSON_AddItemToArray(items(all), cJSON_Duplicate(e, true));
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
        if (!cJSON_IsString(next)) {
            cJSON_Delete(page);
            break;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(params, "cursor");
        cJSON_DeleteItemFromObjectCaseSensitive(params, "limit");
        cJSON_AddStringToObject(params, "cursor", next->valuestring);
        cJSON_Delete(page);
    }
    cJSON_Delete(params);
    *out = all;
    return 0;
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
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out;
    char b1[300], b2[600], b3[100];
    if (!strcmp(a.pos[0], "create") && a.npos == 2) {
        cJSON_AddStringToObject(p, "org", a.pos[1]);
        if (kr_arg(&a, "--name")) cJSON_AddStringToObject(p, "name", kr_arg(&a, "--name"));
        if (!(rc = kr_cli_op(&c, "org.create", "org create", p, &out))) {
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(out, "org");
            printf("org %s created (id %.0f)\n", E(o, "slug", b1, sizeof b1), num(o, "id"));
            kr_ops_params_free(out);
        }
    } else if (!strcmp(a.pos[0], "list") && a.npos == 1) {
        if (!(rc = run_all(&c, "org.list", "org list", p, &out))) {
            printf("%-6s %-24s %-24s %-8s %s\n", "ID", "SLUG", "NAME", "STATUS", "CREATED");
            const cJSON *o;
            cJSON_ArrayForEach(o, items(out))
            {
                /* what the store holds is shown escaped: one row per org */
                printf("%-6.0f %-24s %-24s %-8s %s\n", num(o, "id"), E(o, "slug", b1, sizeof b1),
                       E(o, "name", b2, sizeof b2), E(o, "status", b3, sizeof b3),
                       kr_cli_jstr(o, "created_at"));
            }
            kr_ops_params_free(out);
        }
    } else {
        cJSON_Delete(p);
        kr_cli_errf("%s", usage);
        rc = 2;
    }
    kr_cli_free(&c);
    return rc;
}

/* ---- ws ---- */

/* --model and repeated --set KEY=VALUE into params. */
static int collect_payload(const kr_args *a, cJSON *params)
{
    if (kr_arg(a, "--model")) cJSON_AddStringToObject(params, "model", kr_arg(a, "--model"));
    int k = -1;
    for (size_t i = 0; i < a->nopts; i++)
        if (!strcmp(a->opts[i].name, "--set")) k = (int)i;
    cJSON *set = NULL;
    for (size_t i = 0; k >= 0 && i < a->nmulti[k]; i++) {
        const char *kv = a->multi[k][i];
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv) return kr_cli_errf("--set expects KEY=VALUE, got '%.40s'", kv);
        char key[128];
        if (kr_memlcpy(key, sizeof key, kv, (size_t)(eq - kv))) return kr_cli_errf("key too long");
        if (!set) set = cJSON_AddObjectToObject(params, "set");
        cJSON_DeleteItemFromObjectCaseSensitive(set, key); /* a repeated key: the last wins */
        cJSON_AddStringToObject(set, key, eq + 1);
    }
    return 0;
}

/* The environment with its values (`provision`, `ws create --format`). */
static int print_environment(kr_cli *c, cJSON *p, const char *what, const char *format)
{
    cJSON *out;
    if (kr_cli_op(c, "ws.provision", what, p, &out)) return 1;
    if (!strcmp(format, "json")) {
        cJSON_DeleteItemFromObjectCaseSensitive(out, "env_file");
        char *s = cJSON_PrintUnformatted(out);
        if (s) {
            printf("%s\n", s);
            sodium_memzero(s, strlen(s));
            free(s);
        }
    } else {
        const cJSON *ef = cJSON_GetObjectItemCaseSensitive(out, "env_file");
        if (cJSON_IsString(ef)) fputs(ef->valuestring, stdout);
    }
    kr_ops_params_free(out); /* values: wiped */
    return 0;
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
    const char *fmt = kr_arg(&a, "--format");
    if (fmt && strcmp(fmt, "env") && strcmp(fmt, "json")) return kr_cli_errf("--format is env or json"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out;
    char b1[300], b2[300], b3[300], b4[300];
    if (!strcmp(a.pos[0], "create") && a.npos == 3) {
        cJSON_AddStringToObject(p, "org", a.pos[1]);
        cJSON_AddStringToObject(p, "ws", a.pos[2]);
        if (kr_flag(&a, "--concierge")) cJSON_AddTrueToObject(p, "concierge");
        if (kr_arg(&a, "--runtime")) cJSON_AddStringToObject(p, "runtime", kr_arg(&a, "--runtime"));
        int64_t parent = 0;
        if (kr_arg(&a, "--parent") &&
            kr_parse_i64(kr_arg(&a, "--parent"), strlen(kr_arg(&a, "--parent")), &parent)) {
            cJSON_Delete(p);
            kr_cli_errf("--parent takes a workspace id");
            goto out;
        }
        if (parent) cJSON_AddNumberToObject(p, "parent", (double)parent);
        if (collect_payload(&a, p)) {
            cJSON_Delete(p);
            goto out;
        }
        if ((rc = kr_cli_op(&c, "ws.create", "ws create", p, &out))) goto out;
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(out, "workspace");
        if (fmt) {
            cJSON *q = cJSON_CreateObject();
            cJSON_AddStringToObject(q, "org", a.pos[1]);
            cJSON_AddStringToObject(q, "ws", a.pos[2]);
            cJSON_AddTrueToObject(q, "rebuild"); /* a rebuild resolves exactly as the create did */
            rc = print_environment(&c, q, "ws create", fmt);
        } else {
            const char *model = kr_cli_jstr(out, "model");
            printf("%s %s/%s created (id %.0f): route %s, provider %s%s%s\n",
                   kr_cli_jstr(w, "kind"), E(w, "org", b1, sizeof b1), E(w, "name", b2, sizeof b2),
                   num(w, "id"), kr_cli_jstr(out, "route"), E(out, "provider", b3, sizeof b3),
                   strcmp(model, "-") ? ", model " : "", strcmp(model, "-") ? E(out, "model", b4, sizeof b4) : "");
        }
        kr_ops_params_free(out);
    } else if (!strcmp(a.pos[0], "list") && a.npos <= 2) {
        /* one org, or every org's workspaces */
        cJSON *orgs = NULL;
        if (a.npos == 2) {
            orgs = cJSON_CreateObject();
            cJSON *one = cJSON_AddArrayToObject(orgs, "items");
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "slug", a.pos[1]);
            cJSON_AddItemToArray(one, o);
            cJSON_Delete(p);
        } else if ((rc = run_all(&c, "org.list", "ws list", p, &orgs))) {
            goto out;
        }
        const cJSON *o;
        rc = 0;
        bool header = false;
        cJSON_ArrayForEach(o, items(orgs))
        {
            cJSON *q = cJSON_CreateObject();
            cJSON_AddStringToObject(q, "org", kr_cli_jstr(o, "slug"));
            if ((rc = run_all(&c, "ws.list", "ws list", q, &out))) break;
            if (!header && (header = true))
                printf("%-6s %-24s %-24s %-10s %-12s %s\n", "ID", "ORG", "NAME", "KIND", "RUNTIME",
                       "CREATED");
            const cJSON *w;
            cJSON_ArrayForEach(w, items(out))
            printf("%-6.0f %-24s %-24s %-10s %-12s %s\n", num(w, "id"), E(w, "org", b1, sizeof b1),
                   E(w, "name", b2, sizeof b2), kr_cli_jstr(w, "kind"),
                   E(w, "runtime", b3, sizeof b3), kr_cli_jstr(w, "created_at"));
            kr_ops_params_free(out);
        }
        if (!rc && !header)
            printf("%-6s %-24s %-24s %-10s %-12s %s\n", "ID", "ORG", "NAME", "KIND", "RUNTIME",
                   "CREATED");
        cJSON_Delete(orgs);
    } else {
        cJSON_Delete(p);
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

/* --org ORG | --ws ORG/NAME into params org (+ workspace). */
static int secret_scope(kr_cli *c, const char *what, const kr_args *a, cJSON *p)
{
    const char *org = kr_arg(a, "--org"), *ws = kr_arg(a, "--ws");
    if (!!org == !!ws) return kr_cli_errf("give exactly one of --org ORG or --ws ORG/NAME");
    if (org) {
        cJSON_AddStringToObject(p, "org", org);
        return 0;
    }
    return kr_cli_ws_ref(c, what, ws, p, "workspace");
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
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    char b1[600];
    char what[40];
    kr_snprintf(what, sizeof what, "secret %s", a.pos[0]);
    if (secret_scope(&c, what, &a, p)) {
        cJSON_Delete(p);
        goto done;
    }
    if (!strcmp(a.pos[0], "set") && a.npos == 2) {
        static char value[KR_SECRET_MAX_VALUE + 2];
        int e = 0;
        if (kr_arg(&a, "--value")) {
            if (kr_strlcpy(value, kr_arg(&a, "--value"), sizeof value)) e = -1;
        } else {
            e = read_stdin_value(value, sizeof value);
        }
        if (e) {
            sodium_memzero(value, sizeof value);
            cJSON_Delete(p);
            if (e == -2) kr_cli_errf("secret set: the value holds a NUL byte; secret values are text");
            else kr_cli_errf("could not read the value (at most %d bytes)", KR_SECRET_MAX_VALUE);
            goto done;
        }
        cJSON_AddStringToObject(p, "key", a.pos[1]);
        cJSON_AddStringToObject(p, "value", value); /* wiped when kr_cli_op frees p */
        sodium_memzero(value, sizeof value);
        rc = kr_cli_op(&c, "secret.set", "secret set", p, &out);
        if (!rc) printf("secret %s set at %s scope\n", E(out, "key", b1, sizeof b1), kr_cli_jstr(out, "scope"));
    } else if (!strcmp(a.pos[0], "unset") && a.npos == 2) {
        cJSON_AddStringToObject(p, "key", a.pos[1]);
        if (!(rc = kr_cli_op(&c, "secret.unset", "secret unset", p, &out)))
            printf("secret %s removed from %s scope\n", E(out, "key", b1, sizeof b1),
                   kr_cli_jstr(out, "scope"));
    } else if (!strcmp(a.pos[0], "list") && a.npos == 1) {
        if (!(rc = run_all(&c, "secret.list", "secret list", p, &out))) {
            printf("%-32s %-10s %-18s %-9s %s\n", "KEY", "STATE", "CLASS", "FPRINT", "UPDATED");
            const cJSON *s;
            cJSON_ArrayForEach(s, items(out))
            printf("%-32s %-10s %-18s %-9s %s\n", E(s, "key", b1, sizeof b1),
                   !strcmp(kr_cli_jstr(s, "state"), "ok") ? "ok" : "UNREADABLE",
                   strcmp(kr_cli_jstr(s, "class"), "none") ? kr_cli_jstr(s, "class") : "-",
                   kr_cli_jstr(s, "fingerprint"), kr_cli_jstr(s, "updated_at"));
        }
    } else {
        cJSON_Delete(p);
        kr_cli_errf("%s", usage);
        rc = 2;
    }
    kr_ops_params_free(out);
done:
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
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    char b1[100];
    if (!strcmp(a.pos[0], "mint") && a.npos == 2) {
        if (kr_cli_ws_ref(&c, "token mint", a.pos[1], p, "ws")) {
            cJSON_Delete(p);
            goto done;
        }
        if (kr_arg(&a, "--ttl")) cJSON_AddStringToObject(p, "ttl", kr_arg(&a, "--ttl"));
        if (!(rc = kr_cli_op(&c, "token.mint", "token mint", p, &out))) {
            /* the token alone on stdout: nothing of it anywhere else */
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(out, "token");
            printf("%s\n", t->valuestring);
            fflush(stdout);
            sodium_memzero(t->valuestring, strlen(t->valuestring));
        }
    } else if (!strcmp(a.pos[0], "revoke") && a.npos == 2) {
        /* by id or prefix: find it, then revoke it where it lives */
        cJSON_Delete(p);
        p = NULL;
        kr_token t;
        kr_workspace w;
        kr_org o;
        kr_diag d = {{0}};
        int e = kr_cli_store(&c) ? KR_ESTORE : kr_token_find(c.st, a.pos[1], &t, &d);
        if (!e) e = kr_ws_get(c.st, t.workspace_id, &w, &d);
        if (!e) e = kr_org_get(c.st, w.org_id, &o, &d);
        if (e) {
            kr_cli_errf("token revoke: %s", kr_diag_msg(&d, e));
            goto done;
        }
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "org", o.slug);
        cJSON_AddStringToObject(p, "ws", w.name);
        cJSON_AddNumberToObject(p, "id", (double)t.id);
        if (!(rc = kr_cli_op(&c, "token.revoke", "token revoke", p, &out)))
            printf("token %.0f (%s…) revoked\n", num(out, "id"), E(out, "prefix", b1, sizeof b1));
    } else if (!strcmp(a.pos[0], "list") && a.npos == 2) {
        if (kr_cli_ws_ref(&c, "token list", a.pos[1], p, "ws")) {
            cJSON_Delete(p);
            goto done;
        }
        if (!(rc = run_all(&c, "token.list", "token list", p, &out))) {
            printf("%-6s %-14s %-8s %-20s %-20s %s\n", "ID", "PREFIX", "STATE", "CREATED", "EXPIRES",
                   "REVOKED");
            const cJSON *t;
            cJSON_ArrayForEach(t, items(out))
            printf("%-6.0f %-14s %-8s %-20s %-20s %s\n", num(t, "id"), E(t, "prefix", b1, sizeof b1),
                   kr_cli_jstr(t, "state"), kr_cli_jstr(t, "created_at"),
                   kr_cli_jstr(t, "expires_at"), kr_cli_jstr(t, "revoked_at"));
        }
    } else {
        cJSON_Delete(p);
        kr_cli_errf("%s", usage);
        rc = 2;
    }
done:
    kr_ops_params_free(out);
    kr_cli_free(&c);
    return rc;
}

/* ---- provision ---- */

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
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject();
    char what[200];
    kr_snprintf(what, sizeof what, "provision %s", a.pos[0]);
    if (kr_cli_ws_ref(&c, what, a.pos[0], p, "ws") || collect_payload(&a, p)) {
        cJSON_Delete(p);
        goto out;
    }
    if (kr_flag(&a, "--rebuild")) cJSON_AddTrueToObject(p, "rebuild");
    if (kr_arg(&a, "--token")) cJSON_AddStringToObject(p, "token", kr_arg(&a, "--token"));
    rc = print_environment(&c, p, what, fmt);
out:
    kr_cli_free(&c);
    return rc;
}

/* ---- admin tokens ---- */

int kr_cmd_admin_token(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--scope", true, "operator or org (mint)"},
                                  {"--org", true, "the org an org-scope token administers (mint)"},
                                  {"--name", true, "what the token is for (mint)"},
                                  {"--ttl", true, "lifetime, e.g. 30d, 12h; at most 3650d (mint)"}};
    const char *usage =
        "usage: keyrail admin-token mint --scope operator|org [--org ORG] [--name N] [--ttl 30d]\n"
        "       keyrail admin-token revoke ID\n"
        "       keyrail admin-token list\n\n"
        "Admin tokens (kradm_…) open the admin HTTP API and the console: an operator token\n"
        "every org, an org-scope token one org. mint prints the token alone on stdout, once;\n"
        "the store keeps its hash. Revoking ends its console sessions too.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 1) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    char b1[300], b2[300];
    if (!strcmp(a.pos[0], "mint") && a.npos == 1) {
        if (kr_arg(&a, "--scope")) cJSON_AddStringToObject(p, "scope", kr_arg(&a, "--scope"));
        if (kr_arg(&a, "--org")) cJSON_AddStringToObject(p, "org", kr_arg(&a, "--org"));
        if (kr_arg(&a, "--name")) cJSON_AddStringToObject(p, "name", kr_arg(&a, "--name"));
        if (kr_arg(&a, "--ttl")) cJSON_AddStringToObject(p, "ttl", kr_arg(&a, "--ttl"));
        if (!(rc = kr_cli_op(&c, "admin_token.mint", "admin-token mint", p, &out))) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(out, "token");
            printf("%s\n", t->valuestring);
            fflush(stdout);
            sodium_memzero(t->valuestring, strlen(t->valuestring));
        }
    } else if (!strcmp(a.pos[0], "revoke") && a.npos == 2) {
        int64_t id;
        if (kr_parse_i64(a.pos[1], strlen(a.pos[1]), &id)) {
            cJSON_Delete(p);
            kr_cli_errf("admin-token revoke takes the token's id (see admin-token list)");
            goto done;
        }
        cJSON_AddNumberToObject(p, "id", (double)id);
        if (!(rc = kr_cli_op(&c, "admin_token.revoke", "admin-token revoke", p, &out)))
            printf("admin token %.0f (%s…) revoked\n", num(out, "id"), E(out, "prefix", b1, sizeof b1));
    } else if (!strcmp(a.pos[0], "list") && a.npos == 1) {
        if (!(rc = run_all(&c, "admin_token.list", "admin-token list", p, &out))) {
            printf("%-6s %-14s %-9s %-16s %-8s %-20s %-20s %s\n", "ID", "PREFIX", "SCOPE", "ORG",
                   "STATE", "CREATED", "EXPIRES", "NAME");
            const cJSON *t;
            cJSON_ArrayForEach(t, items(out))
            printf("%-6.0f %-14s %-9s %-16s %-8s %-20s %-20s %s\n", num(t, "id"),
                   E(t, "prefix", b1, sizeof b1), kr_cli_jstr(t, "scope"),
                   E(t, "org", b2, sizeof b2), kr_cli_jstr(t, "state"), kr_cli_jstr(t, "created_at"),
                   kr_cli_jstr(t, "expires_at"), E(t, "name", b1, sizeof b1));
        }
    } else {
        cJSON_Delete(p);
        kr_cli_errf("%s", usage);
        rc = 2;
    }
done:
    kr_ops_params_free(out);
    kr_cli_free(&c);
    return rc;
}

/* ---- audit ---- */

int kr_cmd_audit(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--org", true, "only this org"},
                                  {"--action", true, "only this operation, e.g. secret.set"},
                                  {"--actor", true, "only this actor, e.g. cli:root"},
                                  {"--limit", true, "entries (default 50, at most 1000)"},
                                  {"--format", true, "table (default) or json"}};
    const char *usage = "usage: keyrail audit [--org ORG] [--action OP] [--actor A] [--limit N] "
                        "[--format table|json]\n\n"
                        "The audit log, newest first: every change made through the command line\n"
                        "or the admin API, who made it, on what, and the outcome. Never a value.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "table";
    if (strcmp(fmt, "table") && strcmp(fmt, "json")) return kr_cli_errf("--format is table or json"), 2;
    uint64_t lim = 50;
    if (kr_arg(&a, "--limit") &&
        (kr_parse_u64(kr_arg(&a, "--limit"), strlen(kr_arg(&a, "--limit")), &lim) || !lim || lim > 1000))
        return kr_cli_errf("--limit takes 1..1000"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    if (kr_arg(&a, "--org")) cJSON_AddStringToObject(p, "org", kr_arg(&a, "--org"));
    if (kr_arg(&a, "--action")) cJSON_AddStringToObject(p, "action", kr_arg(&a, "--action"));
    if (kr_arg(&a, "--actor")) cJSON_AddStringToObject(p, "actor", kr_arg(&a, "--actor"));
    cJSON_AddNumberToObject(p, "limit", (double)lim);
    int rc = kr_cli_op(&c, "audit.list", "audit", p, &out);
    if (!rc && !strcmp(fmt, "json")) {
        char *s = cJSON_PrintUnformatted(items(out));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else if (!rc) {
        char b1[300], b2[300], b3[400], b4[100];
        printf("%-6s %-20s %-22s %-18s %-28s %-20s %s\n", "ID", "AT", "ACTOR", "ACTION", "TARGET",
               "OUTCOME", "DETAIL");
        const cJSON *r;
        cJSON_ArrayForEach(r, items(out))
        printf("%-6.0f %-20s %-22s %-18s %-28s %-20s %s\n", num(r, "id"), kr_cli_jstr(r, "at"),
               E(r, "actor", b1, sizeof b1), E(r, "action", b4, sizeof b4),
               E(r, "target", b2, sizeof b2), kr_cli_jstr(r, "outcome"), E(r, "detail", b3, sizeof b3));
    }
    kr_ops_params_free(out);
    kr_cli_free(&c);
    return rc;
}

/* ---- config, keygen ---- */

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
