/*
 * test_provision.c -- provider resolution and provisioning against a real
 * (in-memory SQLite) store: every rule of SYSTEM.md, the incident and its
 * two neighbouring faults, and a generated check that a rebuild from the
 * store resolves exactly like the fresh create.
 */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    kr_store *st;
    kr_registry *reg;
    kr_master_key mk;
    kr_policy pol;
    kr_provision_ctx ctx;
    kr_org org;
} fx;

static void fx_init(fx *f)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(sodium_init() >= 0, 1);
    f->st = kr_test_store();
    f->reg = kr_test_registry();
    kr_test_key(&f->mk);
    kr_policy_init(&f->pol);
    f->ctx = (kr_provision_ctx){f->reg, kr_test_runtimes(), &f->pol, "http://proxy.test:8080", "", false};
    cr_assert_eq(kr_org_create(f->st, "acme", "Acme", &f->org, NULL), 0);
    /* the store's key check is f->mk's, as after keyrail's first use of it; a
     * value sealed under another key (put_unreadable) arrives behind its back */
    cr_assert_eq(kr_master_key_verify(f->st, &f->mk, NULL), 0);
}

static void fx_free(fx *f)
{
    kr_store_close(f->st);
    kr_registry_free(f->reg);
}

static kr_workspace mkws_rt(fx *f, const char *name, kr_ws_kind kind, const char *runtime)
{
    kr_workspace w;
    kr_diag d = {{0}};
    int rc = kr_ws_create(f->st, f->org.id, name, kind, runtime, 0, &w, &d);
    cr_assert_eq(rc, 0, "ws create: %s", d.msg);
    return w;
}

static kr_workspace mkws(fx *f, const char *name, kr_ws_kind kind)
{
    return mkws_rt(f, name, kind, "claude-code");
}

static void put(fx *f, kr_scope scope, int64_t owner, const char *key, const char *value)
{
    kr_diag d = {{0}};
    int rc = kr_secret_set(f->st, &f->mk, &f->pol, scope, owner, key, value, &d);
    cr_assert_eq(rc, 0, "secret set %s: %s", key, d.msg);
}

/* A ciphertext that will not open under f->mk: sealed under another key. */
static void put_unreadable(fx *f, kr_scope scope, int64_t owner, const char *key)
{
    kr_master_key other;
    kr_test_key(&other);
    kr_buf ct = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&other, scope, owner, key, "platform", 8, &ct), 0);
    cr_assert_eq(kr_store_secret_put(f->st, scope, owner, key, ct.data, 1, NULL), 0);
    kr_buf_free(&ct);
}

static int provision(fx *f, const kr_workspace *w, const kr_payload_var *pv, size_t n,
                     kr_provision_result *r)
{
    kr_diag d = {{0}};
    return kr_provision(f->st, &f->mk, &f->ctx, w, pv, n, NULL, r, &d);
}

static const char *env(const kr_provision_result *r, const char *key)
{
    const kr_env_var *v = kr_env_get(&r->env, key);
    return v ? v->value : NULL;
}

/* Snapshot of every secret row of the org and a workspace, to prove that
 * nothing was written. */
static char *snapshot(fx *f, int64_t ws)
{
    kr_buf b = KR_BUF_INIT(1 << 20);
    for (int s = 0; s < 2; s++) {
        kr_secret_row *rows;
        size_t n;
        cr_assert_eq(kr_store_secret_list(f->st, s ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG,
                                          s ? ws : f->org.id, &rows, &n, NULL),
                     0);
        for (size_t i = 0; i < n; i++)
            kr_buf_printf(&b, "%d|%s|%s|%lld\n", s, rows[i].key, rows[i].ciphertext,
                          (long long)rows[i].updated_at);
        kr_secret_rows_free(rows, n);
    }
    return kr_buf_steal(&b);
}

/* ---- the incident and its neighbours ---- */

Test(incident, concierge_rebuilt_with_empty_model_stays_platform_without_oauth)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "concierge", KR_WS_CONCIERGE);
    put(&f, KR_SCOPE_ORG, f.org.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN);
    put(&f, KR_SCOPE_ORG, f.org.id, "ANTHROPIC_AUTH_TOKEN", OAUTH_TOKEN);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL", ""); /* what the rebuild found */
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    cr_assert_str_eq(r.res.provider, "platform");
    cr_assert_null(env(&r, "CLAUDE_CODE_OAUTH_TOKEN"));
    cr_assert_null(env(&r, "ANTHROPIC_API_KEY"));
    cr_assert_str_eq(env(&r, "ANTHROPIC_AUTH_TOKEN"), KR_TOKEN_PLACEHOLDER);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "http://proxy.test:8080/anthropic");
    cr_assert_str_eq(env(&r, "LLM_PROVIDER"), "platform");
    for (size_t i = 0; i < r.env.n; i++)
        cr_assert_not(kr_cred_is_vendor(r.env.v[i].cls), "%s carries a vendor credential",
                      r.env.v[i].key);
    kr_provision_result_free(&r);
    /* the pin was persisted, so the next rebuild is decided by R1 */
    kr_secret_read pin;
    kr_secret_get(f.st, &f.mk, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", &pin);
    cr_assert_eq(pin.state, KR_SECRET_VALUE);
    cr_assert_str_eq(pin.value, "platform");
    kr_secret_read_free(&pin);
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0);
    cr_assert_str_eq(r.res.trace[1].rule, "R1");
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(incident, unreadable_provider_secret_aborts_and_writes_nothing)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "concierge", KR_WS_CONCIERGE);
    put_unreadable(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER");
    char *before = snapshot(&f, w.id);
    kr_provision_result r;
    kr_payload_var pv[] = {{"MODEL", ""}};
    int rc = provision(&f, &w, pv, 1, &r);
    cr_assert_eq(rc, KR_ESECRET_UNREADABLE, "got %s", kr_err_name(rc));
    cr_assert_eq(r.res.err, KR_ESECRET_UNREADABLE);
    cr_assert(strstr(r.res.msg, "LLM_PROVIDER") != NULL);
    cr_assert_eq(r.env.n, 0);
    char *after = snapshot(&f, w.id);
    cr_assert_str_eq(after, before, "a failed provision changed the store");
    free(before);
    free(after);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(incident, flipped_byte_in_provider_secret_is_unreadable_not_absent)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "minimax");
    kr_secret_row row;
    cr_assert_eq(kr_store_secret_get(f.st, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", &row, NULL), 0);
    /* flip one bit inside the base64 payload (keep it valid base64) */
    size_t mid = strlen(row.ciphertext) / 2;
    row.ciphertext[mid] = row.ciphertext[mid] == 'A' ? 'B' : 'A';
    cr_assert_eq(kr_store_secret_put(f.st, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", row.ciphertext,
                                     1, NULL),
                 0);
    char *before = snapshot(&f, w.id);
    kr_secret_read rd;
    kr_secret_get(f.st, &f.mk, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", &rd);
    cr_assert_eq(rd.state, KR_SECRET_UNREADABLE);
    cr_assert_eq(rd.err, KR_ECRYPTO);
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_ESECRET_UNREADABLE);
    char *after = snapshot(&f, w.id);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
    kr_secret_row_free(&row);
    kr_provision_result_free(&r);
    fx_free(&f);
}

/* BYOK through the proxy (the default): the agent gets the proxy and a
 * workspace token; no vendor key of any provider is in its environment. */
Test(incident, byok_through_the_proxy_holds_no_vendor_key)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN);
    put(&f, KR_SCOPE_ORG, f.org.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    kr_workspace w = mkws(&f, "mm", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_BYOK);
    cr_assert(!r.res.byok_direct);
    cr_assert_str_eq(r.res.provider, "minimax");
    cr_assert_str_eq(env(&r, "ANTHROPIC_AUTH_TOKEN"), KR_TOKEN_PLACEHOLDER);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "http://proxy.test:8080/anthropic");
    cr_assert_null(env(&r, "OPENAI_BASE_URL"), "only the provider's protocol is set up");
    for (size_t i = 0; i < r.env.n; i++) {
        cr_assert_null(strstr(r.env.v[i].value, "TESTMINIMAX"), "%s holds the key", r.env.v[i].key);
        cr_assert_null(strstr(r.env.v[i].value, "sk-ant-"), "%s holds a key", r.env.v[i].key);
    }
    bool traced = false;
    for (size_t i = 0; i < r.res.ntrace; i++)
        if (!strcmp(r.res.trace[i].rule, "R6") && strstr(r.res.trace[i].text, "the default")) traced = true;
    cr_assert(traced, "explain does not say the route was the default");
    kr_provision_result_free(&r);
    /* a rebuild resolves exactly as the fresh create did */
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "http://proxy.test:8080/anthropic");
    cr_assert(!r.res.byok_direct);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r6_byok_route_is_explicit_or_refused)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    put(&f, KR_SCOPE_ORG, f.org.id, "BYOK_ROUTE", "direct");
    kr_workspace w = mkws(&f, "mm", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert(r.res.byok_direct);
    cr_assert_eq(r.res.byok_route_origin, KR_ORIGIN_ORG);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "https://api.minimax.io/anthropic");
    kr_provision_result_free(&r);
    /* the workspace overrides its org */
    put(&f, KR_SCOPE_WORKSPACE, w.id, "BYOK_ROUTE", "proxy");
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert(!r.res.byok_direct);
    cr_assert_eq(r.res.byok_route_origin, KR_ORIGIN_WORKSPACE);
    kr_provision_result_free(&r);
    /* a value that is neither is refused, nothing guessed */
    put(&f, KR_SCOPE_WORKSPACE, w.id, "BYOK_ROUTE", "sometimes");
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EINVAL);
    cr_assert(strstr(r.res.msg, "neither proxy nor direct") != NULL, "%s", r.res.msg);
    kr_provision_result_free(&r);
    /* through the proxy needs a proxy */
    put(&f, KR_SCOPE_WORKSPACE, w.id, "BYOK_ROUTE", "proxy");
    f.ctx.proxy_url = "";
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EMISSING_PLATFORM_PROXY);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(incident, byok_minimax_does_not_receive_org_oauth_token)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN);
    put(&f, KR_SCOPE_ORG, f.org.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    put(&f, KR_SCOPE_ORG, f.org.id, "BYOK_ROUTE", "direct");
    kr_workspace w = mkws(&f, "mm", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_BYOK);
    cr_assert_str_eq(r.res.provider, "minimax");
    cr_assert_null(env(&r, "CLAUDE_CODE_OAUTH_TOKEN"));
    cr_assert_null(env(&r, "ANTHROPIC_API_KEY"));
    cr_assert_null(env(&r, "MINIMAX_API_KEY"), "the key moves to the agent's variable only once");
    cr_assert_str_eq(env(&r, "ANTHROPIC_AUTH_TOKEN"), MINIMAX_KEY);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "https://api.minimax.io/anthropic");
    for (size_t i = 0; i < r.env.n; i++)
        if (r.env.v[i].value) cr_assert_null(strstr(r.env.v[i].value, "sk-ant-"));
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(incident, oauth_token_is_never_rerouted_to_another_provider)
{
    /* An Anthropic OAuth token stored as a MiniMax key is not sent to MiniMax. */
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", OAUTH_TOKEN);
    kr_workspace w = mkws(&f, "mm", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), KR_EMISSING_BYOK_CREDENTIAL);
    cr_assert(strstr(r.res.msg, "not issued for provider 'minimax'") != NULL, "%s", r.res.msg);
    cr_assert_null(strstr(r.res.msg, "TESTOAUTH"), "the error echoes token bytes");
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(forbidden, key_written_behind_keyrails_back_aborts_provisioning)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    kr_buf ct = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&f.mk, KR_SCOPE_ORG, f.org.id, "GITHUB_TOKEN", "ghp_x", 5, &ct), 0);
    cr_assert_eq(kr_store_secret_put(f.st, KR_SCOPE_ORG, f.org.id, "GITHUB_TOKEN", ct.data, 1, NULL), 0);
    kr_buf_free(&ct);
    kr_provision_result r;
    kr_diag d = {{0}};
    int rc = kr_provision(f.st, &f.mk, &f.ctx, &w, NULL, 0, NULL, &r, &d);
    cr_assert_eq(rc, KR_EFORBIDDEN_KEY);
    cr_assert(strstr(d.msg, "GITHUB_TOKEN") != NULL, "%s", d.msg);
    cr_assert(strstr(d.msg, "source-control") != NULL, "%s", d.msg);
    cr_assert_eq(r.env.n, 0);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(forbidden, every_writer_refuses_with_key_and_reason)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    const char *keys[] = {"GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN", "AWS_ACCESS_KEY_ID",
                          "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KEYRAIL_ADMIN_TOKEN",
                          "KEYRAIL_MASTER_KEY", "VAULT_TOKEN", "OPERATOR_DEPLOY_KEY"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        kr_diag d = {{0}};
        cr_assert_eq(kr_secret_set(f.st, &f.mk, &f.pol, KR_SCOPE_ORG, f.org.id, keys[i], "v", &d),
                     KR_EFORBIDDEN_KEY, "%s accepted", keys[i]);
        cr_assert(strstr(d.msg, keys[i]) != NULL);
        /* payload writer */
        kr_payload_var pv[] = {{keys[i], "v"}};
        kr_provision_result r;
        cr_assert_eq(kr_provision(f.st, &f.mk, &f.ctx, &w, pv, 1, NULL, &r, &d), KR_EFORBIDDEN_KEY);
        kr_provision_result_free(&r);
    }
    kr_secret_row *rows;
    size_t n;
    cr_assert_eq(kr_store_secret_list(f.st, KR_SCOPE_ORG, f.org.id, &rows, &n, NULL), 0);
    cr_assert_eq(n, 0);
    kr_secret_rows_free(rows, n);
    fx_free(&f);
}

/* ---- one test per rule ---- */

Test(rules, r1_pinned_byok_provider_wins_over_platform_model)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic");
    put(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL", "claude-sonnet-4-5");
    put(&f, KR_SCOPE_ORG, f.org.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    put(&f, KR_SCOPE_ORG, f.org.id, "BYOK_ROUTE", "direct");
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_BYOK);
    cr_assert_str_eq(env(&r, "ANTHROPIC_API_KEY"), ANTHROPIC_KEY);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "https://api.anthropic.com");
    cr_assert_null(env(&r, "ANTHROPIC_AUTH_TOKEN"));
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r1_pinned_byok_with_oauth_goes_to_the_oauth_variable)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "anthropic");
    put(&f, KR_SCOPE_ORG, f.org.id, "CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN);
    kr_provision_result r;
    /* an OAuth token is bound to its own client: never through the proxy */
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EMISSING_BYOK_CREDENTIAL);
    cr_assert(strstr(r.res.msg, "BYOK_ROUTE=direct") != NULL, "%s", r.res.msg);
    cr_assert_null(strstr(r.res.msg, "TESTOAUTH"));
    kr_provision_result_free(&r);
    put(&f, KR_SCOPE_ORG, f.org.id, "BYOK_ROUTE", "direct");
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_str_eq(env(&r, "CLAUDE_CODE_OAUTH_TOKEN"), OAUTH_TOKEN);
    cr_assert_null(env(&r, "ANTHROPIC_API_KEY"));
    cr_assert_null(env(&r, "ANTHROPIC_AUTH_TOKEN"));
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r1_unknown_pinned_provider)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", "nosuch");
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EUNKNOWN_PROVIDER);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r2_payload_model_beats_stored_model)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL", "MiniMax-M2");
    kr_payload_var pv[] = {{"MODEL", "claude-haiku-4-5"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    cr_assert_str_eq(r.res.model, "claude-haiku-4-5");
    cr_assert_eq(r.res.model_origin, KR_ORIGIN_PAYLOAD);
    cr_assert_str_eq(env(&r, "ANTHROPIC_MODEL"), "claude-haiku-4-5");
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r2_concierge_default_model)
{
    fx f;
    fx_init(&f);
    f.ctx.concierge_default_model = "claude-sonnet-4-5";
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_str_eq(r.res.model, "claude-sonnet-4-5");
    cr_assert_eq(r.res.model_origin, KR_ORIGIN_DEFAULT);
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r2_unreadable_model_aborts)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put_unreadable(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL");
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_ESECRET_UNREADABLE);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r3_empty_model_is_platform_never_byok)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", ""}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    cr_assert_null(env(&r, "ANTHROPIC_API_KEY"));
    cr_assert_not(r.res.pin_platform, "only a concierge is pinned");
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r3_platform_model_for_codex_runtime_uses_openai_protocol)
{
    fx f;
    fx_init(&f);
    kr_workspace w;
    cr_assert_eq(kr_ws_create(f.st, f.org.id, "cx", KR_WS_WORKSPACE, "codex", 0, &w, NULL), 0);
    put(&f, KR_SCOPE_ORG, f.org.id, "OPENAI_API_KEY", OPENAI_KEY);
    kr_payload_var pv[] = {{"MODEL", "gpt-4o"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.route, KR_ROUTE_PLATFORM);
    cr_assert_str_eq(env(&r, "OPENAI_BASE_URL"), "http://proxy.test:8080/openai/v1");
    cr_assert_str_eq(env(&r, "OPENAI_API_KEY"), KR_TOKEN_PLACEHOLDER);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "http://proxy.test:8080/anthropic");
    cr_assert_null(env(&r, "ANTHROPIC_MODEL"), "the model of an openai runtime is not Claude's");
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_byok_without_credential)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "deepseek-chat"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), KR_EMISSING_BYOK_CREDENTIAL);
    cr_assert(strstr(r.res.msg, "DEEPSEEK_API_KEY") != NULL);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_byok_vendor_serving_the_runtimes_protocol)
{
    /* DeepSeek serves both protocols: Claude Code gets its Anthropic endpoint */
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "DEEPSEEK_API_KEY", "sk-deepseekTESTxxxxxxxxxxxxxxxx");
    put(&f, KR_SCOPE_ORG, f.org.id, "BYOK_ROUTE", "direct");
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "deepseek-chat"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_str_eq(r.res.provider, "deepseek-anthropic");
    cr_assert_eq(r.res.proto, KR_PROTO_ANTHROPIC);
    cr_assert_str_eq(env(&r, "ANTHROPIC_BASE_URL"), "https://api.deepseek.com/anthropic");
    cr_assert_str_eq(env(&r, "ANTHROPIC_API_KEY"), "sk-deepseekTESTxxxxxxxxxxxxxxxx");
    cr_assert_null(env(&r, "OPENAI_API_KEY"));
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_byok_provider_the_runtime_cannot_speak)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    kr_workspace w = mkws_rt(&f, "w", KR_WS_WORKSPACE, "codex");
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), KR_EUNKNOWN_MODEL);
    cr_assert(strstr(r.res.msg, "runtime 'codex' speaks openai") != NULL, "%s", r.res.msg);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_byok_openai_compatible_vendor)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "DEEPSEEK_API_KEY", "sk-deepseekTESTxxxxxxxxxxxxxxxx");
    put(&f, KR_SCOPE_ORG, f.org.id, "OPENAI_API_KEY", OPENAI_KEY);
    kr_workspace w = mkws_rt(&f, "w", KR_WS_WORKSPACE, "codex");
    kr_payload_var pv[] = {{"MODEL", "deepseek-chat"}};
    kr_provision_result r;
    /* through the proxy (the default): keyrail's OpenAI route and the token */
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    cr_assert_str_eq(r.res.provider, "deepseek");
    cr_assert_str_eq(env(&r, "OPENAI_BASE_URL"), "http://proxy.test:8080/openai/v1");
    cr_assert_str_eq(env(&r, "OPENAI_API_KEY"), KR_TOKEN_PLACEHOLDER);
    kr_provision_result_free(&r);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "BYOK_ROUTE", "direct");
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), 0, "%s", r.res.msg);
    cr_assert_eq(r.res.proto, KR_PROTO_OPENAI);
    cr_assert_str_eq(env(&r, "OPENAI_BASE_URL"), "https://api.deepseek.com/v1");
    cr_assert_str_eq(env(&r, "OPENAI_API_KEY"), "sk-deepseekTESTxxxxxxxxxxxxxxxx");
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_workspace_value_overrides_org_value)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", "mm-org-key-xxxxxxxxxxxx");
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put(&f, KR_SCOPE_WORKSPACE, w.id, "MINIMAX_API_KEY", "mm-ws-key-xxxxxxxxxxxxx");
    put(&f, KR_SCOPE_WORKSPACE, w.id, "BYOK_ROUTE", "direct"); /* the key in the env shows which */
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), 0, "%s", r.res.msg);
    const kr_env_var *v = kr_env_get(&r.env, "ANTHROPIC_AUTH_TOKEN");
    cr_assert_str_eq(v->value, "mm-ws-key-xxxxxxxxxxxxx");
    cr_assert_eq(v->origin, KR_ORIGIN_WORKSPACE);
    const kr_secret_entry *e = kr_secrets_get(&r.secrets, "MINIMAX_API_KEY");
    cr_assert(e->overrides_org);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r4_unreadable_workspace_value_does_not_fall_back_to_org)
{
    fx f;
    fx_init(&f);
    put(&f, KR_SCOPE_ORG, f.org.id, "MINIMAX_API_KEY", MINIMAX_KEY);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    put_unreadable(&f, KR_SCOPE_WORKSPACE, w.id, "MINIMAX_API_KEY");
    kr_payload_var pv[] = {{"MODEL", "MiniMax-M2"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), KR_ESECRET_UNREADABLE);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r5_unknown_model)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    kr_payload_var pv[] = {{"MODEL", "llama-9000"}};
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, pv, 1, &r), KR_EUNKNOWN_MODEL);
    kr_provision_result_free(&r);
    /* and nothing of the payload was persisted */
    kr_secret_read rd;
    kr_secret_get(f.st, &f.mk, KR_SCOPE_WORKSPACE, w.id, "MODEL", &rd);
    cr_assert_eq(rd.state, KR_SECRET_ABSENT);
    fx_free(&f);
}

Test(rules, r5_missing_model_for_non_concierge)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "w", KR_WS_WORKSPACE);
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EMISSING_MODEL);
    kr_provision_result_free(&r);
    fx_free(&f);
}

Test(rules, r5_missing_platform_proxy)
{
    fx f;
    fx_init(&f);
    f.ctx.proxy_url = "";
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    kr_provision_result r;
    cr_assert_eq(provision(&f, &w, NULL, 0, &r), KR_EMISSING_PLATFORM_PROXY);
    kr_provision_result_free(&r);
    kr_secret_read rd;
    kr_secret_get(f.st, &f.mk, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", &rd);
    cr_assert_eq(rd.state, KR_SECRET_ABSENT, "pin persisted although provisioning failed");
    fx_free(&f);
}

Test(rules, token_fills_the_placeholder)
{
    fx f;
    fx_init(&f);
    kr_workspace w = mkws(&f, "c", KR_WS_CONCIERGE);
    char tok[KR_WS_TOKEN_LEN + 1];
    kr_token_generate(tok);
    kr_provision_result r;
    kr_diag d = {{0}};
    cr_assert_eq(kr_provision(f.st, &f.mk, &f.ctx, &w, NULL, 0, tok, &r, &d), 0);
    cr_assert_str_eq(env(&r, "ANTHROPIC_AUTH_TOKEN"), tok);
    cr_assert_eq(kr_env_get(&r.env, "ANTHROPIC_AUTH_TOKEN")->cls, KR_CRED_WORKSPACE_TOKEN);
    kr_provision_result_free(&r);
    fx_free(&f);
}

/* ---- generated: a rebuild resolves exactly like the fresh create ---- */

enum { V_ABSENT = -1, V_UNREADABLE = -2 };

static const char *const payload_models[] = {NULL, "", "claude-sonnet-4-5", "MiniMax-M2",
                                             "gpt-4o", "deepseek-chat", "gemini-2.5-flash", "nope-1"};
static const char *const stored_models[] = {NULL, "", "claude-haiku-4-5", "MiniMax-M2",
                                            (const char *)1 /* unreadable */};
static const char *const stored_providers[] = {NULL, "platform", "minimax", "anthropic", "bogus",
                                               (const char *)1};
static const char *const org_sets[][5] = {
    {NULL},
    {"CLAUDE_CODE_OAUTH_TOKEN", NULL},
    {"CLAUDE_CODE_OAUTH_TOKEN", "MINIMAX_API_KEY", NULL},
    {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY"},
};

static const char *value_for(const char *key)
{
    if (!strcmp(key, "CLAUDE_CODE_OAUTH_TOKEN")) return OAUTH_TOKEN;
    if (!strcmp(key, "ANTHROPIC_API_KEY")) return ANTHROPIC_KEY;
    if (!strcmp(key, "OPENAI_API_KEY")) return OPENAI_KEY;
    if (!strcmp(key, "MINIMAX_API_KEY")) return MINIMAX_KEY;
    if (!strcmp(key, "GEMINI_API_KEY")) return GOOGLE_KEY;
    return "sk-deepseekTESTxxxxxxxxxxxxxxxx";
}

static void render(const kr_provision_result *r, kr_buf *b)
{
    kr_buf_printf(b, "route=%d provider=%s proto=%d model=%s\n", r->res.route, r->res.provider,
                  r->res.proto, r->res.model);
    for (size_t i = 0; i < r->env.n; i++)
        kr_buf_printf(b, "%s=%s\n", r->env.v[i].key, r->env.v[i].value);
}

/* The environment invariants every successful provision must hold: one
 * credential per configured protocol (every protocol on the platform route, the
 * provider's on BYOK), and no vendor credential on the platform route. */
static void check_env_invariants(const kr_provision_result *r, const char *label)
{
    size_t creds = 0;
    for (size_t i = 0; i < r->env.n; i++) {
        const kr_env_var *v = &r->env.v[i];
        if (kr_runtimes_role(kr_test_runtimes(), v->key) == KR_RTVAR_CREDENTIAL || kr_cred_is_vendor(v->cls) ||
            v->cls == KR_CRED_WORKSPACE_TOKEN || !strcmp(v->value, KR_TOKEN_PLACEHOLDER))
            creds++;
        if (r->res.route == KR_ROUTE_PLATFORM)
            cr_assert_not(kr_cred_is_vendor(v->cls), "%s: platform env has vendor credential %s",
                          label, v->key);
    }
    size_t want = r->res.route == KR_ROUTE_PLATFORM ? KR_PROTO__COUNT : 1;
    cr_assert_eq(creds, want, "%s: %zu credentials in the environment", label, creds);
}

Test(generated, rebuild_resolves_exactly_like_fresh_create, .timeout = 240)
{
    cr_assert_eq(sodium_init() >= 0, 1);
    kr_registry *reg = kr_test_registry();
    size_t combos = 0, ok = 0;
    for (int kind = 0; kind < 2; kind++)
        for (size_t pm = 0; pm < sizeof payload_models / sizeof *payload_models; pm++)
            for (size_t sm = 0; sm < sizeof stored_models / sizeof *stored_models; sm++)
                for (size_t sp = 0; sp < sizeof stored_providers / sizeof *stored_providers; sp++)
                    for (size_t os = 0; os < sizeof org_sets / sizeof *org_sets; os++)
                        for (int wsov = 0; wsov < 2; wsov++) {
                            fx f;
                            memset(&f, 0, sizeof f);
                            f.st = kr_test_store();
                            f.reg = reg;
                            kr_test_key(&f.mk);
                            kr_policy_init(&f.pol);
                            f.ctx = (kr_provision_ctx){reg, kr_test_runtimes(), &f.pol, "http://proxy.test:8080",
                                                       kind ? "claude-sonnet-4-5" : "", false};
                            cr_assert_eq(kr_org_create(f.st, "o", "o", &f.org, NULL), 0);
                            cr_assert_eq(kr_master_key_verify(f.st, &f.mk, NULL), 0);
                            kr_workspace w = mkws(&f, "w", kind ? KR_WS_CONCIERGE : KR_WS_WORKSPACE);
                            for (size_t k = 0; org_sets[os][k]; k++)
                                put(&f, KR_SCOPE_ORG, f.org.id, org_sets[os][k],
                                    value_for(org_sets[os][k]));
                            if (wsov) put(&f, KR_SCOPE_WORKSPACE, w.id, "MINIMAX_API_KEY", MINIMAX_KEY);
                            if (stored_models[sm] == (const char *)1)
                                put_unreadable(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL");
                            else if (stored_models[sm])
                                put(&f, KR_SCOPE_WORKSPACE, w.id, "MODEL", stored_models[sm]);
                            if (stored_providers[sp] == (const char *)1)
                                put_unreadable(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER");
                            else if (stored_providers[sp])
                                put(&f, KR_SCOPE_WORKSPACE, w.id, "LLM_PROVIDER", stored_providers[sp]);
                            char label[256];
                            snprintf(label, sizeof label, "kind=%d pm=%zu sm=%zu sp=%zu os=%zu ws=%d",
                                     kind, pm, sm, sp, os, wsov);
                            kr_payload_var pv[] = {{"MODEL", payload_models[pm]}};
                            size_t npv = payload_models[pm] ? 1 : 0;
                            char *before = snapshot(&f, w.id);
                            kr_provision_result fresh, again;
                            int rc1 = provision(&f, &w, pv, npv, &fresh);
                            combos++;
                            if (rc1) {
                                char *after = snapshot(&f, w.id);
                                cr_assert_str_eq(after, before, "%s: failed (%s) but wrote", label,
                                                 kr_err_name(rc1));
                                free(after);
                                /* a rebuild fails the same way unless the payload caused it */
                                if (!npv) {
                                    int rc2 = provision(&f, &w, NULL, 0, &again);
                                    cr_assert_eq(rc2, rc1, "%s", label);
                                    kr_provision_result_free(&again);
                                }
                            } else {
                                ok++;
                                check_env_invariants(&fresh, label);
                                int rc2 = provision(&f, &w, NULL, 0, &again);
                                cr_assert_eq(rc2, 0, "%s: fresh ok, rebuild %s: %s", label,
                                             kr_err_name(rc2), again.res.msg);
                                kr_buf a = KR_BUF_INIT(1 << 20), b = KR_BUF_INIT(1 << 20);
                                render(&fresh, &a);
                                render(&again, &b);
                                cr_assert_str_eq(b.data, a.data, "%s: rebuild differs", label);
                                kr_buf_free(&a);
                                kr_buf_free(&b);
                                kr_provision_result_free(&again);
                            }
                            kr_provision_result_free(&fresh);
                            free(before);
                            kr_store_close(f.st);
                        }
    cr_assert_eq(combos, 2 * 8 * 5 * 6 * 4 * 2);
    cr_assert_gt(ok, combos / 10, "too few successful combinations (%zu): the generator is broken", ok);
    kr_registry_free(reg);
}
