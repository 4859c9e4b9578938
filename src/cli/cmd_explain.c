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
#include <stdlib.h>
#include <string.h>

typedef struct {
    char host[300];
    char base_url[512];
    const char *var;
    kr_cred_class cls;
    bool proxy;
} proto_view;

/* What one runtime profile's agent calls with this environment. */
static void view(const kr_provision_result *r, const kr_runtime *rt, const char *proxy_url,
                 proto_view *v)
{
    memset(v, 0, sizeof *v);
    const kr_env_var *b = kr_env_get(&r->env, rt->set_base_url);
    kr_strlcpy(v->base_url, b ? b->value : kr_launch_default_url(rt->proto), sizeof v->base_url);
    if (kr_url_origin(v->base_url, v->host, sizeof v->host))
        kr_strlcpy(v->host, "(invalid)", sizeof v->host);
    char po[300];
    v->proxy = !kr_url_origin(proxy_url, po, sizeof po) && !strcmp(po, v->host);
    for (size_t i = 0; i < rt->vars[KR_RTVAR_CREDENTIAL].n; i++) {
        const kr_env_var *c = kr_env_get(&r->env, rt->vars[KR_RTVAR_CREDENTIAL].v[i]);
        if (!c) continue;
        v->var = c->key;
        v->cls = !strcmp(c->value, KR_TOKEN_PLACEHOLDER) ? KR_CRED_WORKSPACE_TOKEN : c->cls;
        break;
    }
}

/* Platform route: where the proxy forwards each protocol, with which key. */
typedef struct {
    const kr_provider *p;
    char host[300];
    kr_cred_class cls; /* NONE: the key is not in this environment */
    char fp[KR_FP_LEN];
} upstream_view;

static void upstreams(const kr_registry *reg, upstream_view out[2])
{
    memset(out, 0, 2 * sizeof *out);
    for (size_t i = 0; i < reg->nproviders; i++) {
        const kr_provider *p = &reg->providers[i];
        if (!p->platform || out[p->proto].p) continue;
        upstream_view *u = &out[p->proto];
        u->p = p;
        if (kr_url_origin(p->base_url, u->host, sizeof u->host))
            kr_strlcpy(u->host, "(invalid)", sizeof u->host);
        const char *k = getenv(p->platform_key_env);
        if (k && *k) {
            u->cls = kr_cred_classify(k, strlen(k));
            kr_cred_fingerprint(k, strlen(k), u->fp);
        }
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
    size_t nrt = c.rts->n;
    proto_view pv[KR_RT_MAX];
    for (size_t i = 0; i < nrt; i++) view(&r, &c.rts->rt[i], proxy, &pv[i]);
    upstream_view up[2];
    upstreams(c.reg, up);
    bool platform = !prov && r.res.route == KR_ROUTE_PLATFORM;
    kr_buf out = KR_BUF_INIT(1 << 22);
    if (!strcmp(fmt, "json")) {
        kr_provision_render_json(&r, false, &out);
        out.len--; /* reopen the object */
        kr_buf_puts(&out, ",\"runtimes\":[");
        for (size_t i = 0; i < nrt && !prov; i++) {
            const kr_runtime *rt = &c.rts->rt[i];
            kr_buf_printf(&out, "%s{\"runtime\":\"%s\",\"protocol\":\"%s\",\"base_url\":\"",
                          i ? "," : "", rt->name, kr_proto_name(rt->proto));
            kr_buf_json_str(&out, pv[i].base_url, strlen(pv[i].base_url));
            kr_buf_puts(&out, "\",\"host\":\"");
            kr_buf_json_str(&out, pv[i].host, strlen(pv[i].host));
            kr_buf_printf(&out,
                          "\",\"proxy\":%s,\"credential_var\":\"%s\",\"class\":\"%s\","
                          "\"file\":\"%s\",\"dir_env\":\"%s\",\"args\":%s}",
                          pv[i].proxy ? "true" : "false", pv[i].var ? pv[i].var : "",
                          pv[i].var ? kr_cred_class_name(pv[i].cls) : "none", rt->file,
                          rt->dir_env, rt->nargs ? "true" : "false");
        }
        kr_buf_puts(&out, "],\"upstream\":{");
        for (int p = 0, first = 1; p < 2 && platform; p++) {
            if (!up[p].p) continue;
            kr_buf_printf(&out, "%s\"%s\":{\"provider\":\"%s\",\"host\":\"", first ? "" : ",",
                          kr_proto_name((kr_proto)p), up[p].p->name);
            kr_buf_json_str(&out, up[p].host, strlen(up[p].host));
            kr_buf_printf(&out, "\",\"key_env\":\"%s\",\"class\":\"%s\",\"fingerprint\":\"%s\"}",
                          up[p].p->platform_key_env,
                          up[p].cls ? kr_cred_class_name(up[p].cls) : "not-set-here", up[p].fp);
            first = 0;
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
            kr_buf_puts(&out, "\nruntimes (what each agent calls, with which credential):\n");
            for (size_t i = 0; i < nrt; i++) {
                const kr_runtime *rt = &c.rts->rt[i];
                kr_buf_printf(&out, "  %-14s %-9s calls %s%s, sends %s%s%s%s", rt->name,
                              kr_proto_name(rt->proto), pv[i].host,
                              pv[i].proxy ? " (keyrail proxy)" : "",
                              pv[i].var ? kr_cred_class_name(pv[i].cls) : "no credential",
                              pv[i].var ? " in " : "", pv[i].var ? pv[i].var : "",
                              !kr_env_get(&r.env, rt->set_base_url) ? " (not configured: the SDK default)" : "");
                if (rt->file[0])
                    kr_buf_printf(&out, "; keyrail run writes its %s%s%s%s", rt->file,
                                  rt->dir_env[0] ? " into " : "", rt->dir_env,
                                  rt->nargs ? " (passed as an argument)" : "");
                kr_buf_putc(&out, '\n');
            }
            if (platform) {
                kr_buf_puts(&out, "\nupstream (the proxy forwards with the platform's key):\n");
                for (int p = 0; p < 2; p++)
                    if (up[p].p)
                        kr_buf_printf(&out, "  %-9s %s (provider %s) with %s: %s%s%s\n",
                                      kr_proto_name((kr_proto)p), up[p].host, up[p].p->name,
                                      up[p].p->platform_key_env,
                                      up[p].cls ? kr_cred_class_name(up[p].cls)
                                                : "not set in this environment (the server's)",
                                      up[p].cls ? " " : "", up[p].fp);
            }
        }
    }
    fwrite(out.data, 1, out.len, stdout);
    kr_buf_free(&out);
    kr_provision_result_free(&r);
    kr_cli_free(&c);
    return prov ? 1 : 0;
}
