/*
 * cmd_explain.c -- `keyrail explain ORG/NAME`: for operators, why a
 * workspace gets what it gets. Runs the ws.explain operation (the
 * provisioner in dry-run mode: it writes nothing; the admin API and the
 * console show the same document) and prints it: the resolution trace,
 * every variable with its origin and credential class, per runtime profile
 * the host its agent calls and the credential it sends, and on the platform
 * route where the proxy forwards with which key. Everything that comes from
 * the store or a tenant is printed escaped.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *S(const cJSON *o, const char *name, char *buf, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return kr_esc(cJSON_IsString(v) ? v->valuestring : "", buf, cap);
}

static bool B(const cJSON *o, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static void text(const cJSON *j, const char *ref, kr_buf *out)
{
    char a[600], b[600], c[600], d[600];
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    kr_buf_printf(out, "workspace %s (id %.0f, %s, runtime %s)\n", kr_esc(ref, a, sizeof a),
                  cJSON_GetObjectItemCaseSensitive(j, "workspace_id")->valuedouble,
                  S(j, "kind", b, sizeof b), S(j, "runtime", c, sizeof c));
    if (err)
        kr_buf_printf(out, "error: %s: %s\n", S(j, "error", a, sizeof a), S(j, "message", b, sizeof b));
    else
        kr_buf_printf(out, "route: %s   provider: %s   protocol: %s   model: %s\n",
                      S(j, "route", a, sizeof a), S(j, "provider", b, sizeof b),
                      S(j, "protocol", c, sizeof c),
                      *S(j, "model", d, sizeof d) ? d : "(the agent's default)");
    kr_buf_puts(out, "\nresolution:\n");
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(j, "trace"))
    kr_buf_printf(out, "  %-6s %s\n", S(t, "rule", a, sizeof a), S(t, "text", b, sizeof b));
    if (err) return;
    kr_buf_printf(out, "\nenvironment:\n  %-28s %-12s %-18s %s\n", "VARIABLE", "ORIGIN", "CLASS",
                  "FINGERPRINT");
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(j, "env"))
    {
        /* the token placeholder's class is workspace-token: the launcher fills it */
        const char *fp = *S(v, "fingerprint", d, sizeof d) ? d : "-";
        bool ph = B(v, "placeholder");
        S(v, "class", c, sizeof c);
        kr_buf_printf(out, "  %-28s %-12s %-18s %s\n", S(v, "key", a, sizeof a),
                      S(v, "origin", b, sizeof b), c, ph ? "(the token the launcher holds)" : fp);
    }
    kr_buf_puts(out, "\nruntimes (what each agent calls, with which credential):\n");
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "runtimes"))
    {
        const char *var = S(r, "credential_var", d, sizeof d);
        kr_buf_printf(out, "  %-14s %-9s calls %s%s, sends %s%s%s%s", S(r, "runtime", a, sizeof a),
                      S(r, "protocol", b, sizeof b), S(r, "host", c, sizeof c),
                      B(r, "proxy") ? " (keyrail proxy)" : "",
                      *var ? kr_cli_jstr(r, "class") : "no credential", *var ? " in " : "", var,
                      B(r, "configured") ? "" : " (not configured: the SDK default)");
        if (*S(r, "file", a, sizeof a))
            kr_buf_printf(out, "; keyrail run writes its %s%s%s%s", a,
                          *S(r, "dir_env", b, sizeof b) ? " into " : "", b,
                          B(r, "args") ? " (passed as an argument)" : "");
        kr_buf_putc(out, '\n');
    }
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(j, "upstream"), *u;
    bool org = cJSON_GetArraySize(up) && !strcmp(kr_cli_jstr(up->child, "key_owner"), "org");
    if (cJSON_GetArraySize(up))
        kr_buf_puts(out, org ? "\nupstream (BYOK: the proxy forwards with the org's key, read from the "
                               "store per request; the workspace never holds it):\n"
                             : "\nupstream (the proxy forwards with the platform's key):\n");
    cJSON_ArrayForEach(u, up)
    {
        bool here = strcmp(kr_cli_jstr(u, "class"), "not-set-here") != 0;
        kr_buf_printf(out, "  %-9s %s (provider %s) with %s: %s%s%s\n", u->string,
                      S(u, "host", a, sizeof a), S(u, "provider", b, sizeof b),
                      S(u, "key_env", c, sizeof c),
                      here ? kr_cli_jstr(u, "class") : "not set in this environment (the server's)",
                      here ? " " : "", here ? kr_cli_jstr(u, "fingerprint") : "");
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(u, "key_pool"))
            kr_buf_printf(out, "            key pool: %s (weight %.0f)\n", S(e, "key_env", a, sizeof a),
                          cJSON_GetObjectItemCaseSensitive(e, "weight")->valuedouble);
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(u, "fallbacks"))
            if (cJSON_IsString(e)) kr_buf_printf(out, "            fallback: %s\n", e->valuestring);
    }
}

int kr_cmd_explain(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS, {"--format", true, "text (default) or json"}};
    const char *usage = "usage: keyrail explain ORG/NAME [--format text|json]\n\n"
                        "Shows the provider resolution trace, each environment variable with its\n"
                        "origin and credential class, and per runtime profile the host its agent\n"
                        "calls and the credential class it sends. Writes nothing.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, sizeof opts / sizeof opts[0], argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos != 1) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "text";
    if (strcmp(fmt, "text") && strcmp(fmt, "json")) return kr_cli_errf("--format is text or json"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    int rc = kr_cli_ws_ref(&c, "explain", a.pos[0], p, "ws");
    if (!rc) rc = kr_cli_op(&c, "ws.explain", "explain", p, &out);
    else cJSON_Delete(p);
    if (!rc) {
        kr_buf b = KR_BUF_INIT(1 << 22);
        if (!strcmp(fmt, "json")) {
            char *s = cJSON_PrintUnformatted(out);
            kr_buf_puts(&b, s ? s : "{}");
            kr_buf_putc(&b, '\n');
            free(s);
        } else {
            text(out, a.pos[0], &b);
        }
        fwrite(b.data, 1, b.len, stdout);
        kr_buf_free(&b);
        rc = cJSON_GetObjectItemCaseSensitive(out, "error") ? 1 : 0;
    }
    cJSON_Delete(out);
    kr_cli_free(&c);
    return rc;
}
