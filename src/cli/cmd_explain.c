/*
 * cmd_explain.c -- `keyrail explain ORG/NAME`: for operators, why a
 * workspace gets what it gets. Runs the provisioner in dry-run mode (it
 * writes nothing) and shows the resolution trace, every variable with its
 * origin and credential class, and for each protocol the host the agent
 * will call and the credential class it will send.
 */
#include "cli/cli.h"
#include "launcher/launcher.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    char host[300];
    char base_url[512];
    const char *var;
    kr_cred_class cls;
    bool proxy;
} proto_view;

static void view(const kr_provision_result *r, const char *proxy_url, kr_proto p, proto_view *v)
{
    memset(v, 0, sizeof *v);
    const kr_env_var *b = kr_env_get(&r->env, p == KR_PROTO_OPENAI ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL");
    kr_strlcpy(v->base_url, b ? b->value : kr_launch_default_url(p), sizeof v->base_url);
    if (kr_url_origin(v->base_url, v->host, sizeof v->host)) kr_strlcpy(v->host, "(invalid)", sizeof v->host);
    char po[300];
    v->proxy = !kr_url_origin(proxy_url, po, sizeof po) && !strcmp(po, v->host);
    for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++) {
        const kr_env_var *c = kr_env_get(&r->env, kr_launch_cred_vars[p][i]);
        if (!c) continue;
        v->var = c->key;
        v->cls = !strcmp(c->value, KR_TOKEN_PLACEHOLDER) ? KR_CRED_WORKSPACE_TOKEN : c->cls;
        break;
    }
}

int kr_cmd_explain(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS, {"--format", true, "text (default) or json"}};
    const char *usage = "usage: keyrail explain ORG/NAME [--format text|json]\n\n"
                        "Shows the provider resolution trace, each environment variable with its\n"
                        "origin and credential class, and per protocol the host that will be called\n"
                        "and the credential class sent. Writes nothing.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, sizeof opts / sizeof opts[0], argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos != 1) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "text";
    if (strcmp(fmt, "text") && strcmp(fmt, "json")) return kr_cli_errf("--format is text or json"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c) || kr_cli_registry(&c) || kr_cli_key(&c)) {
        kr_cli_free(&c);
        return 1;
    }
    kr_diag d = {{0}};
    kr_workspace w;
    int rc = kr_ws_find(c.st, a.pos[0], &w, &d);
    if (rc) {
        kr_cli_errf("explain: %s", kr_diag_msg(&d, rc));
        kr_cli_free(&c);
        return 1;
    }
    kr_provision_ctx ctx;
    char proxy[300];
    kr_cli_provision_ctx(&c, &ctx, proxy, sizeof proxy);
    ctx.dry_run = true;
    kr_provision_result r;
    int prov = kr_provision(c.st, &c.mk, &ctx, &w, NULL, 0, NULL, &r, &d);
    proto_view pv[2];
    for (int p = 0; p < 2; p++) view(&r, proxy, (kr_proto)p, &pv[p]);
    kr_buf out = KR_BUF_INIT(1 << 22);
    if (!strcmp(fmt, "json")) {
        kr_provision_render_json(&r, false, &out);
        out.len--; /* reopen the object */
        kr_buf_puts(&out, ",\"protocols\":{");
        for (int p = 0; p < 2 && !prov; p++) {
            kr_buf_printf(&out, "%s\"%s\":{\"base_url\":\"", p ? "," : "", kr_proto_name((kr_proto)p));
            kr_buf_json_str(&out, pv[p].base_url, strlen(pv[p].base_url));
            kr_buf_printf(&out, "\",\"host\":\"%s\",\"proxy\":%s,\"credential_var\":\"%s\",\"class\":\"%s\"}",
                          pv[p].host, pv[p].proxy ? "true" : "false", pv[p].var ? pv[p].var : "",
                          pv[p].var ? kr_cred_class_name(pv[p].cls) : "none");
        }
        kr_buf_puts(&out, "}}\n");
    } else {
        kr_buf_printf(&out, "workspace %s (id %lld, %s, runtime %s)\n", a.pos[0], (long long)w.id,
                      kr_ws_kind_name(w.kind), w.runtime);
        if (prov)
            kr_buf_printf(&out, "error: %s: %s\n", kr_err_name(prov), r.res.msg[0] ? r.res.msg : d.msg);
        else
            kr_buf_printf(&out, "route: %s   provider: %s   protocol: %s   model: %s\n",
                          kr_route_name(r.res.route), r.res.provider, kr_proto_name(r.res.proto),
                          r.res.model[0] ? r.res.model : "(the agent's default)");
        kr_buf_puts(&out, "\nresolution:\n");
        for (size_t i = 0; i < r.res.ntrace; i++)
            kr_buf_printf(&out, "  %-6s %s\n", r.res.trace[i].rule, r.res.trace[i].text);
        if (!prov) {
            kr_buf_printf(&out, "\nenvironment:\n  %-28s %-12s %-18s %s\n", "VARIABLE", "ORIGIN", "CLASS",
                          "FINGERPRINT");
            for (size_t i = 0; i < r.env.n; i++) {
                const kr_env_var *v = &r.env.v[i];
                bool ph = !strcmp(v->value, KR_TOKEN_PLACEHOLDER);
                char fp[KR_FP_LEN] = "-";
                if (v->cls != KR_CRED_NONE && !ph) kr_cred_fingerprint(v->value, strlen(v->value), fp);
                kr_buf_printf(&out, "  %-28s %-12s %-18s %s\n", v->key, kr_origin_name(v->origin),
                              ph ? "workspace-token" : kr_cred_class_name(v->cls),
                              ph ? "(the token the launcher holds)" : fp);
            }
            kr_buf_puts(&out, "\nprotocols:\n");
            for (int p = 0; p < 2; p++)
                kr_buf_printf(&out, "  %-9s calls %s%s, sends %s%s%s%s\n", kr_proto_name((kr_proto)p),
                              pv[p].host, pv[p].proxy ? " (keyrail proxy)" : "",
                              pv[p].var ? kr_cred_class_name(pv[p].cls) : "no credential",
                              pv[p].var ? " in " : "", pv[p].var ? pv[p].var : "",
                              !kr_env_get(&r.env, p ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL")
                                  ? " (not configured: the SDK default)"
                                  : "");
        }
    }
    fwrite(out.data, 1, out.len, stdout);
    kr_buf_free(&out);
    kr_provision_result_free(&r);
    kr_cli_free(&c);
    return prov ? 1 : 0;
}
