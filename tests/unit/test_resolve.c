/* test_resolve.c -- kr_resolve is pure: its decisions and trace from a secret set. */
#include "helpers.h"

static kr_provision_ctx ctx(kr_registry *r, kr_policy *p)
{
    kr_policy_init(p);
    return (kr_provision_ctx){r, kr_test_runtimes(), p, "http://proxy:1", "", false};
}

Test(resolve, unknown_runtime)
{
    kr_registry *r = kr_test_registry();
    kr_policy p;
    kr_provision_ctx c = ctx(r, &p);
    kr_secrets s = {0};
    kr_resolution res;
    kr_resolve(&c, KR_WS_CONCIERGE, "emacs", &s, &res);
    cr_assert_eq(res.err, KR_EINVAL);
    kr_registry_free(r);
}

Test(resolve, empty_pin_is_ignored_and_traced)
{
    kr_registry *r = kr_test_registry();
    kr_policy p;
    kr_provision_ctx c = ctx(r, &p);
    kr_secrets s = {0};
    kr_secrets_put(&s, "LLM_PROVIDER", KR_SECRET_VALUE, "", KR_ORIGIN_WORKSPACE);
    kr_resolution res;
    kr_resolve(&c, KR_WS_CONCIERGE, "claude-code", &s, &res);
    cr_assert_eq(res.err, 0);
    cr_assert_eq(res.route, KR_ROUTE_PLATFORM);
    bool seen = false;
    for (size_t i = 0; i < res.ntrace; i++)
        if (strstr(res.trace[i].text, "stored but empty")) seen = true;
    cr_assert(seen);
    kr_secrets_free(&s);
    kr_registry_free(r);
}

Test(resolve, any_unreadable_secret_blocks_every_decision)
{
    kr_registry *r = kr_test_registry();
    kr_policy p;
    kr_provision_ctx c = ctx(r, &p);
    kr_secrets s = {0};
    kr_secrets_put(&s, "LLM_PROVIDER", KR_SECRET_VALUE, "platform", KR_ORIGIN_WORKSPACE);
    kr_secrets_put(&s, "SOME_TOOL_KEY", KR_SECRET_UNREADABLE, NULL, KR_ORIGIN_ORG);
    kr_resolution res;
    kr_resolve(&c, KR_WS_CONCIERGE, "claude-code", &s, &res);
    cr_assert_eq(res.err, KR_ESECRET_UNREADABLE);
    cr_assert_eq(res.route, KR_ROUTE_NONE);
    cr_assert(strstr(res.msg, "SOME_TOOL_KEY") != NULL);
    kr_secrets_free(&s);
    kr_registry_free(r);
}

Test(resolve, ws_override_keeps_origin)
{
    kr_secrets s = {0};
    kr_secrets_put(&s, "K", KR_SECRET_VALUE, "org", KR_ORIGIN_ORG);
    kr_secrets_put(&s, "K", KR_SECRET_VALUE, "ws", KR_ORIGIN_WORKSPACE);
    const kr_secret_entry *e = kr_secrets_get(&s, "K");
    cr_assert_str_eq(e->read.value, "ws");
    cr_assert_eq(e->origin, KR_ORIGIN_WORKSPACE);
    cr_assert(e->overrides_org);
    kr_secrets_put(&s, "K", KR_SECRET_UNREADABLE, NULL, KR_ORIGIN_WORKSPACE);
    cr_assert_eq(kr_secrets_get(&s, "K")->read.state, KR_SECRET_UNREADABLE,
                 "an unreadable override is unreadable, never the org value");
    kr_secrets_free(&s);
}
