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

/* Builds a payload with the real provisioner: 0 platform, 1 BYOK API key,
 * 2 BYOK OAuth, 3 BYOK OpenAI-compatible vendor. */
static void payload_for(int route, kr_env *out)
{
    kr_store *st = kr_test_store();
    kr_registry *reg = kr_test_registry();
    kr_master_key mk;
    kr_test_key(&mk);
    kr_policy pol;
    kr_policy_init(&pol);
    kr_provision_ctx ctx = {reg, &pol, PROXY, "", false};
    kr_org o;
    kr_workspace w;
    cr_assert_eq(kr_org_create(st, "o", "o", &o, NULL), 0);
    cr_assert_eq(kr_ws_create(st, o.id, "w", KR_WS_CONCIERGE, "claude-code", 0, &w, NULL), 0);
    if (route == 1) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, NULL);
    } else if (route == 2) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN, NULL);
    } else if (route == 3) {
        kr_secret_set(st, &mk, &pol, KR_SCOPE_WORKSPACE, w.id, "MODEL", "deepseek-chat", NULL);
        kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, o.id, "DEEPSEEK_API_KEY", DEEPSEEK_KEY, NULL);
    }
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
    cr_assert_eq(kr_launch_compute(&p, &inh, NULL, NULL, &l, &d), KR_EINVAL);
    cr_assert(strstr(d.msg, "--token") != NULL);
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
    cr_assert_eq(kr_launch_compute(&p, &inh, ws_token, NULL, &l, &d), 0, "%s", d.msg);
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

/* ---- generated ---- */

static const char *const inh_vars[4] = {"CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN",
                                        "ANTHROPIC_API_KEY", "OPENAI_API_KEY"};

static const char *shape(int var, int k)
{
    switch (k) {
    case 1: return OAUTH_TOKEN;
    case 2: return var == 3 ? OPENAI_KEY : ANTHROPIC_KEY;
    case 3: return ws_token;
    case 4: return "garbage-credential-value";
    default: return NULL;
    }
}

static const char *base_for(int k, kr_proto p)
{
    switch (k) {
    case 1: return p ? PROXY "/openai/v1" : PROXY "/anthropic";
    case 2: return p ? "https://api.openai.com/v1" : "https://api.anthropic.com";
    case 3: return "https://evil.example.net";
    default: return NULL;
    }
}

/* The host a value was issued for, given the payload that configured it. */
static bool issued_for(const char *value, const char *var, const kr_env *payload, kr_proto p,
                       const char *host)
{
    if (!strcmp(value, ws_token)) return !strcmp(host, PROXY_ORIGIN);
    const kr_env_var *pv = kr_env_get(payload, var);
    const kr_env_var *pb = kr_env_get(payload, p ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL");
    if (pv && !strcmp(pv->value, value) && pb) {
        char o[300];
        if (!kr_url_origin(pb->value, o, sizeof o) && !strcmp(o, host)) return true;
    }
    const char *iss = kr_launch_issuer(kr_cred_classify(value, strlen(value)));
    return iss && !strcmp(iss, host);
}

static void check(const kr_launch *l, const kr_env *payload, const kr_env *inh, const char *label)
{
    for (size_t i = 0; i < l->env.n; i++)
        cr_assert_neq(strncmp(l->env.v[i].key, "KEYRAIL_", 8), 0, "%s: %s passed", label, l->env.v[i].key);
    for (int p = 0; p < 2; p++) {
        size_t n = 0;
        const char *var = NULL;
        for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++) {
            const kr_env_var *v = kr_env_get(&l->env, kr_launch_cred_vars[p][i]);
            if (v && v->value[0]) n++, var = v->key;
        }
        cr_assert_leq(n, 1, "%s: %zu %s credentials", label, n, kr_proto_name((kr_proto)p));
        if (l->proto[p].configured)
            cr_assert_eq(n, 1, "%s: configured %s has no credential", label, kr_proto_name((kr_proto)p));
        if (!n) continue;
        const kr_env_var *b = kr_env_get(&l->env, p ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL");
        char host[300];
        cr_assert_eq(kr_url_origin(b && b->value[0] ? b->value : kr_launch_default_url((kr_proto)p),
                                   host, sizeof host),
                     0);
        const char *value = kr_env_get(&l->env, var)->value;
        cr_assert(issued_for(value, var, payload, (kr_proto)p, host),
                  "%s: %s (%s) goes to %s, which did not issue it", label, var,
                  kr_cred_class_name(kr_cred_classify(value, strlen(value))), host);
        /* never moved: the value sat in this very variable before */
        const kr_env_var *pv = kr_env_get(payload, var), *iv = kr_env_get(inh, var);
        bool from_payload = pv && (!strcmp(pv->value, value) ||
                                   (!strcmp(pv->value, KR_TOKEN_PLACEHOLDER) && !strcmp(value, ws_token)));
        cr_assert(from_payload || (iv && !strcmp(iv->value, value)), "%s: %s was moved", label, var);
    }
}

Test(launcher, generated_every_inherited_combination, .timeout = 120)
{
    kr_env payloads[4];
    for (int r = 0; r < 4; r++) payload_for(r, &payloads[r]);
    size_t combos = 0;
    for (int r = 0; r < 4; r++)
        for (int base = 0; base < 4; base++)
            for (int c0 = 0; c0 < 5; c0++)
                for (int c1 = 0; c1 < 5; c1++)
                    for (int c2 = 0; c2 < 5; c2++)
                        for (int c3 = 0; c3 < 5; c3++)
                            for (int srv = 0; srv < 2; srv++) {
                                int ks[4] = {c0, c1, c2, c3};
                                kr_env inh = {0};
                                kr_env_set(&inh, "HOME", "/home/agent", KR_ORIGIN_INHERITED);
                                kr_env_set(&inh, "KEYRAIL_WORKSPACE_TOKEN", ws_token, KR_ORIGIN_INHERITED);
                                for (int i = 0; i < 4; i++)
                                    if (shape(i, ks[i])) kr_env_set(&inh, inh_vars[i], shape(i, ks[i]), KR_ORIGIN_INHERITED);
                                for (int p = 0; p < 2; p++)
                                    if (base_for(base, (kr_proto)p))
                                        kr_env_set(&inh, p ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL",
                                                   base_for(base, (kr_proto)p), KR_ORIGIN_INHERITED);
                                char label[128];
                                snprintf(label, sizeof label, "route=%d base=%d creds=%d%d%d%d server=%d", r,
                                         base, c0, c1, c2, c3, srv);
                                kr_launch l;
                                kr_diag d = {{0}};
                                int rc = kr_launch_compute(&payloads[r], &inh, ws_token,
                                                           srv ? PROXY_ORIGIN : NULL, &l, &d);
                                cr_assert_eq(rc, 0, "%s: %s", label, d.msg);
                                check(&l, &payloads[r], &inh, label);
                                kr_launch_free(&l);
                                kr_env_free(&inh);
                                combos++;
                            }
    cr_assert_eq(combos, 4 * 4 * 625 * 2);
    for (int r = 0; r < 4; r++) kr_env_free(&payloads[r]);
}
