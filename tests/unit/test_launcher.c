/*
 * test_launcher.c -- the launcher rules, including the generated check over
 * every combination of inherited credentials, inherited base URL and
 * payload route: at most one credential per protocol (exactly one for each
 * protocol the payload configures), and the host the agent will call is one
 * that credential was issued for. Payloads come from the real provisioner.
 */
#include "helpers.h"
#include "launcher/launcher.h"

#include <stdio.h>

#define PROXY "http://127.0.0.1:18080"
#define PROXY_ORIGIN "http://127.0.0.1:18080"
#define DEEPSEEK_KEY "sk-deepseekTESTxxxxxxxxxxxxxxxxxx"

static char ws_token[KR_WS_TOKEN_LEN + 1];

/* Builds a payload with the real provisioner: 0 platform (claude-code), 1
 * direct BYOK API key, 2 direct BYOK OAuth, 3 direct BYOK OpenAI-compatible
 * vendor (codex), 4 platform (codex), 5 BYOK through the proxy
 * (claude-code, MiniMax), 6 BYOK through the proxy (codex, DeepSeek), 7
 * platform (gemini), 8 direct BYOK Google key (gemini), 9 BYOK through the
 * proxy (gemini, Google). */
#define NROUTES 10
static void payload_for(int route, kr_env *out)
{
    kr_store *st = kr_test_store();
    kr_registry *reg = kr_test_registry();
    kr_master_key mk;
    kr_test_key(&mk);
    kr_policy pol;
    kr_policy_init(&pol);
    kr_provision_ctx ctx = {reg, kr_test_runtimes(), &pol, PROXY, "", false};
    kr_org o;
    kr_workspace w;
    cr_assert_eq(kr_org_create(st, "o", "o", &o, NULL), 0);
    const char *runtime = route == 3 || route == 4 || route == 6 ? "codex"
                          : route >= 7                             ? "gemini"
                                                                   : "claude-code";
    cr_assert_eq(kr_ws_create(st, o.id, "w", KR_WS_CONCIERGE, runtime, 0, &w, NULL), 0);
    if (route == 1) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, NULL);
    } else if (route == 2) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN, NULL);
    } else if (route == 3 || route == 6) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "MODEL", "deepseek-chat", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "DEEPSEEK_API_KEY", DEEPSEEK_KEY, NULL);
    } else if (route == 5) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "MODEL", "MiniMax-M2", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "MINIMAX_API_KEY", MINIMAX_KEY, NULL);
    } else if (route == 8 || route == 9) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "google", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "GEMINI_API_KEY", GOOGLE_KEY, NULL);
    }
    if ((route >= 1 && route <= 3) || route == 8) /* direct BYOK is chosen explicitly */
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "BYOK_ROUTE", "direct", NULL);
    kr_provision_result r;
    kr_diag d = {{0}};
    cr_assert_eq(kr_provision(st, &mk, &ctx, &w, NULL, 0, NULL, &r, &d), 0, "route %d: %s", route, d.msg);
    /* round-trip through the wire format the launcher really reads */
    kr_buf json = KR_BUF_INIT(1 << 20);
    kr_provision_render_json(&r, true, &json);
    cr_assert_eq(kr_payload_parse(json.data, json.len, out, &d), 0, "%s", d.msg);
    kr_buf_free(&json);
    kr_provision_result_free(&r);
    kr_registry_free(reg);
    kr_store_close(st);
}

static int compute(const kr_env *payload, const kr_env *inh, const char *token, const char *origin,
                   char *const *argv, int argc, kr_launch *l, kr_diag *d)
{
    kr_launch_in in = {payload, inh, token, origin, kr_test_runtimes(), "/state", argv, argc, NULL, NULL};
    return kr_launch_compute(&in, l, d);
}

static void init(void)
{
    cr_assert_eq(sodium_init() >= 0, 1);
    kr_token_generate(ws_token);
}

TestSuite(launcher, .init = init);

Test(launcher, payload_env_format_round_trip)
{
    kr_env e = {0};
    kr_env_set(&e, "A", "plain", KR_ORIGIN_PAYLOAD);
    kr_env_set(&e, "B", "it's \"quoted\" $HOME `x` \\ spaces", KR_ORIGIN_PAYLOAD);
    kr_env_set(&e, "C", "", KR_ORIGIN_PAYLOAD);
    kr_buf b = KR_BUF_INIT(4096);
    kr_env_render_env(&e, &b);
    kr_env out;
    kr_diag d = {{0}};
    cr_assert_eq(kr_payload_parse(b.data, b.len, &out, &d), 0, "%s", d.msg);
    cr_assert_eq(out.n, 3);
    for (size_t i = 0; i < e.n; i++)
        cr_assert_str_eq(kr_env_get(&out, e.v[i].key)->value, e.v[i].value);
    kr_env_free(&out);
    kr_env_free(&e);
    kr_buf_free(&b);
}

Test(launcher, payload_parse_refuses_what_it_cannot_read)
{
    const char *bad[] = {"A=$(evil)\n", "A='open\n", "1A=x\n", "A B=x\n", "A=x y\n",
                         "{\"env\":[{\"key\":\"A\"}]}", "{\"error\":\"SECRET_UNREADABLE\"}", "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kr_env out;
        kr_diag d = {{0}};
        cr_assert_neq(kr_payload_parse(bad[i], strlen(bad[i]), &out, &d), 0, "accepted: %s", bad[i]);
    }
}

Test(launcher, placeholder_needs_a_token)
{
    kr_env p;
    payload_for(0, &p);
    kr_env inh = {0};
    kr_launch l;
    kr_diag d = {{0}};
    cr_assert_eq(compute(&p, &inh, NULL, NULL, NULL, 0, &l, &d), KR_EINVAL);
    cr_assert(strstr(d.msg, "KEYRAIL_WORKSPACE_TOKEN") != NULL);
    kr_env_free(&p);
}

Test(launcher, incident_environment_gets_only_the_workspace_token)
{
    kr_env p, inh = {0};
    payload_for(0, &p);
    kr_env_set(&inh, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "ANTHROPIC_AUTH_TOKEN", OAUTH_TOKEN, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "KEYRAIL_MASTER_KEY", "00ff", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "PATH", "/usr/bin", KR_ORIGIN_INHERITED);
    kr_launch l;
    kr_diag d = {{0}};
    cr_assert_eq(compute(&p, &inh, ws_token, NULL, NULL, 0, &l, &d), 0, "%s", d.msg);
    cr_assert_null(kr_env_get(&l.env, "CLAUDE_CODE_OAUTH_TOKEN"));
    cr_assert_null(kr_env_get(&l.env, "ANTHROPIC_API_KEY"));
    cr_assert_null(kr_env_get(&l.env, "KEYRAIL_MASTER_KEY"));
    cr_assert_str_eq(kr_env_get(&l.env, "ANTHROPIC_AUTH_TOKEN")->value, ws_token);
    cr_assert_str_eq(kr_env_get(&l.env, "PATH")->value, "/usr/bin");
    cr_assert(l.proto[KR_PROTO_ANTHROPIC].to_proxy);
    kr_buf text = KR_BUF_INIT(1 << 16);
    kr_launch_render_text(&l, &text);
    cr_assert_null(strstr(text.data, "TESTOAUTH"), "explain printed token bytes");
    cr_assert_null(strstr(text.data, ws_token + 5));
    kr_buf_free(&text);
    kr_launch_free(&l);
    kr_env_free(&p);
    kr_env_free(&inh);
}

Test(launcher, codex_gets_a_private_provider_and_claude_its_settings)
{
    kr_env p, inh = {0};
    payload_for(4, &p);
    kr_env_set(&inh, "CODEX_API_KEY", OPENAI_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "OPENAI_API_KEY", OPENAI_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "OPENAI_BASE_URL", "https://api.openai.com/v1", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "CODEX_HOME", "/home/agent/.codex", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "ANTHROPIC_CUSTOM_HEADERS", "x-api-key: " ANTHROPIC_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "MY_HELPER_VAR", "Bearer " OPENAI_KEY, KR_ORIGIN_INHERITED);
    char *argv[] = {"/usr/bin/codex", "exec", "hi", NULL};
    kr_launch l;
    kr_diag d = {{0}};
    cr_assert_eq(compute(&p, &inh, ws_token, PROXY_ORIGIN, argv, 3, &l, &d), 0, "%s", d.msg);
    cr_assert_null(kr_env_get(&l.env, "CODEX_API_KEY"));
    cr_assert_null(kr_env_get(&l.env, "ANTHROPIC_CUSTOM_HEADERS"));
    cr_assert_null(kr_env_get(&l.env, "MY_HELPER_VAR"), "an unknown variable holding a key passed");
    cr_assert_str_eq(kr_env_get(&l.env, "OPENAI_API_KEY")->value, ws_token);
    const kr_env_var *home = kr_env_get(&l.env, "CODEX_HOME");
    cr_assert_not_null(home);
    cr_assert_eq(strncmp(home->value, "/state/codex-", 13), 0, "%s", home->value);
    const kr_launch_file *f = NULL;
    for (size_t i = 0; i < l.nfiles; i++)
        if (!strcmp(l.files[i].rt->name, "codex")) f = &l.files[i];
    cr_assert_not_null(f);
    cr_assert_str_eq(f->dir, home->value);
    cr_assert(strstr(f->content.data, "base_url = \"" PROXY "/openai/v1\"") != NULL, "%s", f->content.data);
    cr_assert(strstr(f->content.data, "env_key = \"OPENAI_API_KEY\"") != NULL);
    cr_assert(strstr(f->content.data, "wire_api = \"responses\"") != NULL);
    cr_assert(strstr(f->content.data, "model_provider = \"keyrail\"") != NULL);
    cr_assert_null(strstr(f->content.data, ws_token + 5), "a credential was written to a file");
    /* codex gets no arguments; the launcher's command is unchanged */
    cr_assert_eq(l.argc, 3);
    cr_assert_str_eq(l.argv[1], "exec");
    kr_launch_free(&l);
    /* claude gets --settings with its base URL and the headers blanked */
    char *cargv[] = {"claude", "-p", "hi", NULL};
    cr_assert_eq(compute(&p, &inh, ws_token, PROXY_ORIGIN, cargv, 3, &l, &d), 0, "%s", d.msg);
    cr_assert_eq(l.argc, 5);
    cr_assert_str_eq(l.argv[1], "--settings");
    cr_assert(strstr(l.argv[2], "/state/claude-code-") == l.argv[2], "%s", l.argv[2]);
    cr_assert_str_eq(l.argv[3], "-p");
    for (size_t i = 0; i < l.nfiles; i++)
        if (!strcmp(l.files[i].rt->name, "claude-code")) {
            cr_assert(strstr(l.files[i].content.data, "\"ANTHROPIC_BASE_URL\": \"" PROXY "/anthropic\"") != NULL,
                      "%s", l.files[i].content.data);
            cr_assert(strstr(l.files[i].content.data, "\"ANTHROPIC_CUSTOM_HEADERS\": \"\"") != NULL);
            cr_assert(strstr(l.files[i].content.data, "\"apiKeyHelper\": \"\"") != NULL);
        }
    kr_launch_free(&l);
    kr_env_free(&p);
    kr_env_free(&inh);
}

Test(launcher, gemini_gets_a_private_home_and_only_the_workspace_token)
{
    kr_env p, inh = {0};
    payload_for(7, &p);
    kr_env_set(&inh, "GEMINI_API_KEY", GOOGLE_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GOOGLE_API_KEY", GOOGLE_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GOOGLE_GEMINI_BASE_URL", "https://evil.example.net", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GEMINI_CLI_CUSTOM_HEADERS", "x-goog-api-key: " GOOGLE_KEY, KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GEMINI_CLI_HOME", "/home/agent", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GEMINI_CLI_SYSTEM_SETTINGS_PATH", "/repo/evil.json", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GEMINI_CLI_TRUST_WORKSPACE", "true", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GEMINI_RESTRICTED_MODE", "false", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "GOOGLE_GENAI_USE_VERTEXAI", "true", KR_ORIGIN_INHERITED);
    char *argv[] = {"/usr/local/bin/gemini", "-p", "hi", NULL};
    kr_launch l;
    kr_diag d = {{0}};
    cr_assert_eq(compute(&p, &inh, ws_token, PROXY_ORIGIN, argv, 3, &l, &d), 0, "%s", d.msg);
    cr_assert_str_eq(kr_env_get(&l.env, "GEMINI_API_KEY")->value, ws_token);
    cr_assert_str_eq(kr_env_get(&l.env, "GOOGLE_GEMINI_BASE_URL")->value, PROXY "/gemini");
    cr_assert_str_eq(l.proto[KR_PROTO_GEMINI].cred_var, "GEMINI_API_KEY");
    cr_assert(l.proto[KR_PROTO_GEMINI].to_proxy);
    const char *gone[] = {"GOOGLE_API_KEY", "GEMINI_CLI_CUSTOM_HEADERS", "GEMINI_CLI_TRUST_WORKSPACE",
                          "GOOGLE_GENAI_USE_VERTEXAI"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        cr_assert_null(kr_env_get(&l.env, gone[i]), "%s passed", gone[i]);
    /* no system settings layer above keyrail's, whatever the environment named */
    cr_assert_str_eq(kr_env_get(&l.env, "GEMINI_CLI_SYSTEM_SETTINGS_PATH")->value, "/dev/null/keyrail-none");
    const kr_env_var *home = kr_env_get(&l.env, "GEMINI_CLI_HOME");
    cr_assert(home && !strncmp(home->value, "/state/gemini-", 14), "%s", home ? home->value : "-");
    const kr_launch_file *f = NULL;
    for (size_t i = 0; i < l.nfiles; i++)
        if (!strcmp(l.files[i].rt->name, "gemini")) f = &l.files[i];
    cr_assert_not_null(f);
    char want[700];
    snprintf(want, sizeof want, "%s/.gemini/settings.json", home->value);
    cr_assert_str_eq(f->path, want);
    cr_assert(strstr(f->content.data, "\"enforcedType\": \"gemini-api-key\"") != NULL, "%s", f->content.data);
    cr_assert(strstr(f->content.data, "\"ignoreLocalEnv\": true") != NULL);
    cr_assert_null(strstr(f->content.data, ws_token + 5), "a credential was written to a file");
    /* the workspace is never trusted: its settings and .env are never read */
    cr_assert_str_eq(kr_env_get(&l.env, "GEMINI_RESTRICTED_MODE")->value, "true");
    cr_assert(strstr(f->content.data, "\"folderTrust\": {\"enabled\": false}") != NULL);
    cr_assert_eq(l.argc, 3);
    cr_assert_str_eq(l.argv[1], "-p");
    kr_launch_free(&l);
    kr_env_free(&p);
    kr_env_free(&inh);
}

Test(launcher, confined_the_proxy_goes_through_the_relay_and_the_rest_through_the_gate)
{
    kr_env p, inh = {0};
    payload_for(5, &p); /* BYOK through the proxy: the proxy is the only host */
    kr_env_set(&inh, "HTTPS_PROXY", "http://evil.example:3128", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "no_proxy", "*", KR_ORIGIN_INHERITED);
    char *argv[] = {"claude", "-p", "hi", NULL};
    kr_launch_in in = {&p, &inh, ws_token, PROXY_ORIGIN, kr_test_runtimes(), "/state", argv, 3,
                       "http://127.0.0.1:29999", "http://127.0.0.1:49999"};
    kr_launch l;
    kr_diag d = {{0}};
    cr_assert_eq(kr_launch_compute(&in, &l, &d), 0, "%s", d.msg);
    cr_assert_str_eq(kr_env_get(&l.env, "ANTHROPIC_BASE_URL")->value, "http://127.0.0.1:29999/anthropic");
    cr_assert_str_eq(kr_env_get(&l.env, "ANTHROPIC_AUTH_TOKEN")->value, ws_token);
    cr_assert(l.proto[KR_PROTO_ANTHROPIC].to_proxy);
    cr_assert_str_eq(l.proto[KR_PROTO_ANTHROPIC].relay, "http://127.0.0.1:29999");
    const char *proxies[] = {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"};
    for (size_t i = 0; i < 6; i++)
        cr_assert_str_eq(kr_env_get(&l.env, proxies[i])->value, "http://127.0.0.1:49999", "%s", proxies[i]);
    cr_assert_str_eq(kr_env_get(&l.env, "no_proxy")->value, "127.0.0.1,localhost,::1");
    cr_assert_str_eq(kr_env_get(&l.env, "NODE_USE_ENV_PROXY")->value, "1");
    /* Claude's settings file names the relay, never the outside origin */
    for (size_t i = 0; i < l.nfiles; i++)
        if (!strcmp(l.files[i].rt->name, "claude-code")) {
            cr_assert(strstr(l.files[i].content.data, "http://127.0.0.1:29999/anthropic") != NULL);
            cr_assert_null(strstr(l.files[i].content.data, PROXY_ORIGIN));
        }
    bool said = false;
    for (size_t i = 0; i < l.nd; i++)
        if (!strcmp(l.d[i].var, "HTTPS_PROXY") && l.d[i].action == KR_ACT_DROP && !strcmp(l.d[i].rule, "L9"))
            said = true;
    cr_assert(said, "the inherited proxy was replaced silently");
    kr_launch_free(&l);
    kr_env_free(&p);
    kr_env_free(&inh);
}

/* ---- generated: every variable of every runtime profile ---- */

static const char *const shapes[] = {
    OAUTH_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, NULL /* ws token */, "garbage-credential-value",
    "x-api-key: " ANTHROPIC_KEY, "https://evil.example.net", DEEPSEEK_KEY, GOOGLE_KEY,
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static const char *shape(size_t k)
{
    return shapes[k] ? shapes[k] : ws_token;
}

/* Every variable any profile names, and one no profile names. */
static size_t all_vars(const char *out[], size_t cap)
{
    const kr_runtimes *rts = kr_test_runtimes();
    size_t n = 0;
    for (size_t i = 0; i < rts->n; i++)
        for (int role = 0; role < KR_RTVAR__COUNT; role++)
            for (size_t j = 0; j < rts->rt[i].vars[role].n; j++) {
                bool seen = false;
                for (size_t k = 0; k < n && !seen; k++) seen = !strcmp(out[k], rts->rt[i].vars[role].v[j]);
                if (!seen && n < cap) out[n++] = rts->rt[i].vars[role].v[j];
            }
    if (n < cap) out[n++] = "SOME_UNRELATED_VARIABLE";
    return n;
}

static bool from_payload(const kr_env *payload, const char *var, const char *value)
{
    const kr_env_var *pv = kr_env_get(payload, var);
    return pv && (!strcmp(pv->value, value) ||
                  (!strcmp(pv->value, KR_TOKEN_PLACEHOLDER) && !strcmp(value, ws_token)));
}

static void quoted(char *out, size_t cap, const char *s)
{
    snprintf(out, cap, "\"%s\"", s);
}

static void check(const kr_launch *l, const kr_env *payload, const char *label)
{
    const kr_runtimes *rts = kr_test_runtimes();
    for (size_t i = 0; i < l->env.n; i++) {
        const kr_env_var *v = &l->env.v[i];
        cr_assert_neq(strncmp(v->key, "KEYRAIL_", 8), 0, "%s: %s passed", label, v->key);
        int role = kr_runtimes_role(rts, v->key);
        if (role == KR_RTVAR_HEADERS || role == KR_RTVAR_PROVIDER)
            cr_assert(from_payload(payload, v->key, v->value), "%s: inherited %s passed", label, v->key);
        /* a credential of a known shape sits only in a protocol's one credential variable */
        if (kr_cred_find(v->value, strlen(v->value), NULL, NULL) != KR_CRED_NONE) {
            bool one = false;
            for (int p = 0; p < KR_PROTO__COUNT; p++) one |= !strcmp(v->key, l->proto[p].cred_var);
            cr_assert(one, "%s: %s holds a credential", label, v->key);
        }
    }
    for (int p = 0; p < KR_PROTO__COUNT; p++) {
        size_t n = 0;
        const char *var = NULL;
        for (size_t r = 0; r < rts->n; r++) {
            if ((int)rts->rt[r].proto != p) continue;
            const kr_rt_list *cl = &rts->rt[r].vars[KR_RTVAR_CREDENTIAL];
            for (size_t i = 0; i < cl->n; i++) {
                const kr_env_var *v = kr_env_get(&l->env, cl->v[i]);
                if (v && v->value[0] && (!var || strcmp(var, v->key))) n++, var = v->key;
            }
        }
        cr_assert_leq(n, 1, "%s: %zu %s credentials", label, n, kr_proto_name((kr_proto)p));
        if (l->proto[p].configured)
            cr_assert_eq(n, 1, "%s: configured %s has no credential", label, kr_proto_name((kr_proto)p));
        /* no second base URL that disagrees */
        const char *base_var = kr_launch_base_var(rts, (kr_proto)p);
        const kr_env_var *b = kr_env_get(&l->env, base_var);
        for (size_t r = 0; r < rts->n; r++) {
            if ((int)rts->rt[r].proto != p) continue;
            const kr_rt_list *bl = &rts->rt[r].vars[KR_RTVAR_BASE_URL];
            for (size_t i = 0; i < bl->n; i++) {
                const kr_env_var *o = kr_env_get(&l->env, bl->v[i]);
                if (o && o != b)
                    cr_assert(b && !strcmp(o->value, b->value), "%s: %s disagrees with %s", label,
                              bl->v[i], base_var);
            }
        }
        const char *base = b && b->value[0] ? b->value : kr_launch_default_url((kr_proto)p);
        char host[300];
        if (kr_url_origin(base, host, sizeof host)) { /* no credential goes to what is no URL */
            cr_assert_eq(n, 0, "%s: a credential for the invalid base URL %s", label, base);
            continue;
        }
        /* every file of this protocol points at the same host and credential */
        for (size_t i = 0; i < l->nfiles; i++) {
            const kr_launch_file *f = &l->files[i];
            if ((int)f->rt->proto != p) continue;
            char q[600];
            quoted(q, sizeof q, base);
            bool names_base = false;
            for (size_t k = 0; k < f->rt->nlines; k++)
                if (strstr(f->rt->lines[k], "${base_url}")) names_base = true;
            if (names_base)
                cr_assert(strstr(f->content.data, q) != NULL, "%s: %s's file does not call %s", label,
                          f->rt->name, base);
            cr_assert_eq(kr_cred_find(f->content.data, f->content.len, NULL, NULL), KR_CRED_NONE,
                         "%s: a credential in %s's file", label, f->rt->name);
            quoted(q, sizeof q, var ? var : f->rt->set_bearer);
            bool names_cred = false;
            for (size_t k = 0; k < f->rt->nlines; k++)
                if (strstr(f->rt->lines[k], "${credential_env}")) names_cred = true;
            if (names_cred)
                cr_assert(strstr(f->content.data, q) != NULL, "%s: %s's file names another credential",
                          label, f->rt->name);
            if (var) { /* a settings file must not blank the one credential chosen */
                char blank[128];
                snprintf(blank, sizeof blank, "\"%s\": \"\"", var);
                cr_assert_null(strstr(f->content.data, blank), "%s: %s's file blanks %s", label,
                               f->rt->name, var);
            }
            if (f->rt->dir_env[0])
                cr_assert_str_eq(kr_env_get(&l->env, f->rt->dir_env)->value, f->dir, "%s", label);
        }
        if (!n) continue;
        const char *value = kr_env_get(&l->env, var)->value;
        /* issued for this host: the workspace token for the proxy, the
         * payload's credential with the payload's base URL */
        if (!strcmp(value, ws_token)) {
            cr_assert_str_eq(host, PROXY_ORIGIN, "%s: the workspace token goes to %s", label, host);
        } else {
            const kr_env_var *pb = kr_env_get(payload, base_var);
            char o[300];
            cr_assert(pb && !kr_url_origin(pb->value, o, sizeof o) && !strcmp(o, host),
                      "%s: %s goes to %s, which the payload did not choose for it", label, var, host);
            const char *iss = kr_launch_issuer(kr_cred_classify(value, strlen(value)));
            cr_assert(!iss || !strcmp(iss, host), "%s: %s goes to %s, not its issuer", label, var, host);
        }
        /* never moved: the payload put this value in this very variable */
        cr_assert(from_payload(payload, var, value), "%s: %s was moved or inherited", label, var);
    }
}

static void run_one(const kr_env *payload, const kr_env *inh, int srv, int cmd, const char *label)
{
    static char *cmds[][3] = {
        {"claude", "-p", "hi"}, {"codex", "exec", "hi"}, {"gemini", "-p", "hi"}, {"bash", "-c", "x"}};
    kr_launch l;
    kr_diag d = {{0}};
    int rc = compute(payload, inh, ws_token, srv ? PROXY_ORIGIN : NULL, cmds[cmd], 3, &l, &d);
    cr_assert_eq(rc, 0, "%s: %s", label, d.msg);
    check(&l, payload, label);
    kr_launch_free(&l);
}

static kr_env base_inherited(void)
{
    kr_env inh = {0};
    kr_env_set(&inh, "HOME", "/home/agent", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "PATH", "/usr/bin:/opt/sk-learn-tutorial-files/bin", KR_ORIGIN_INHERITED);
    kr_env_set(&inh, "KEYRAIL_WORKSPACE_TOKEN", ws_token, KR_ORIGIN_INHERITED);
    return inh;
}

Test(launcher, generated_every_profile_variable, .timeout = 300)
{
    kr_env payloads[NROUTES];
    for (int r = 0; r < NROUTES; r++) payload_for(r, &payloads[r]);
    const char *vars[256];
    size_t nv = all_vars(vars, 256);
    cr_assert_gt(nv, 30, "the profiles name %zu variables", nv);
    size_t combos = 0;
    char label[256];
    for (int r = 0; r < NROUTES; r++)
        for (int srv = 0; srv < 2; srv++) {
            /* each variable alone, with each shape */
            for (size_t v = 0; v < nv; v++)
                for (size_t k = 0; k < NSHAPES; k++) {
                    kr_env inh = base_inherited();
                    kr_env_set(&inh, vars[v], shape(k), KR_ORIGIN_INHERITED);
                    snprintf(label, sizeof label, "route=%d server=%d %s=shape%zu", r, srv, vars[v], k);
                    run_one(&payloads[r], &inh, srv, (int)(v % 4), label);
                    kr_env_free(&inh);
                    combos++;
                }
            /* every variable at once, with each shape */
            for (size_t k = 0; k < NSHAPES; k++) {
                kr_env inh = base_inherited();
                for (size_t v = 0; v < nv; v++) kr_env_set(&inh, vars[v], shape(k), KR_ORIGIN_INHERITED);
                snprintf(label, sizeof label, "route=%d server=%d all=shape%zu", r, srv, k);
                for (int cmd = 0; cmd < 4; cmd++) run_one(&payloads[r], &inh, srv, cmd, label);
                kr_env_free(&inh);
                combos++;
            }
            /* random mixes (fixed seed: the same cases every run) */
            uint32_t x = 2463534242u + (uint32_t)(r * 2 + srv);
            for (int t = 0; t < 400; t++) {
                kr_env inh = base_inherited();
                size_t nset = 0;
                for (size_t v = 0; v < nv; v++) {
                    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                    if (x % 4 == 0) {
                        kr_env_set(&inh, vars[v], shape((x >> 8) % NSHAPES), KR_ORIGIN_INHERITED);
                        nset++;
                    }
                }
                snprintf(label, sizeof label, "route=%d server=%d mix=%d (%zu vars)", r, srv, t, nset);
                run_one(&payloads[r], &inh, srv, t % 4, label);
                kr_env_free(&inh);
                combos++;
            }
        }
    cr_assert_eq(combos, (size_t)NROUTES * 2 * (nv * NSHAPES + NSHAPES + 400));
    for (int r = 0; r < NROUTES; r++) kr_env_free(&payloads[r]);
}
