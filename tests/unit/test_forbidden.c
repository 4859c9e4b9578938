/* test_forbidden.c -- operator-scope keys never reach a tenant. */
#include <criterion/criterion.h>
#include <string.h>

#include "provision/forbidden.h"

Test(forbidden, builtin_rules_and_reasons)
{
    kr_policy p;
    kr_policy_init(&p);
    struct {
        const char *key, *why;
    } t[] = {
        {"GITHUB_TOKEN", "source-control token"},  {"GH_TOKEN", "source-control token"},
        {"GITLAB_TOKEN", "source-control token"},  {"AWS_ACCESS_KEY_ID", "cloud credential"},
        {"AWS_SECRET_ACCESS_KEY", "cloud credential"}, {"AWS_SESSION_TOKEN", "cloud credential"},
        {"VAULT_TOKEN", "infrastructure token"},   {"TF_TOKEN_app_terraform_io", "infrastructure token"},
        {"KEYRAIL_ADMIN_TOKEN", "keyrail operator secret"},
        {"KEYRAIL_MASTER_KEY", "keyrail operator secret"},
        {"KEYRAIL_SECRETS_MASTER_KEY_FILE", "keyrail operator secret"},
        {"SECRETS_ENCRYPTION_KEY", "operator secret"},
        {"ADMIN_TOKEN", "operator secret"},
        {"ADMIN_API_KEY", "operator secret"},
        {"ADMIN_PASSWORD", "operator secret"},
        {"MASTER_KEY", "operator secret"},
        {"SECRETS_MASTER_KEY", "operator secret"},
        {"ENCRYPTION_KEY", "operator secret"},
        {"OPERATOR_X", "key under an operator prefix"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *why = kr_policy_reason(&p, t[i].key);
        cr_assert_not_null(why, "%s allowed", t[i].key);
        cr_assert_str_eq(why, t[i].why);
    }
    const char *ok[] = {"ANTHROPIC_API_KEY", "MODEL", "LLM_PROVIDER", "AWS_REGION", "GITHUB",
                        "MY_GITHUB_TOKEN_NAME", "OPERATO", "ADMIN_EMAIL", "MASTER_BRANCH"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert_null(kr_policy_reason(&p, ok[i]), "%s refused", ok[i]);
}

Test(forbidden, configurable_prefixes_and_message)
{
    kr_policy p;
    kr_policy_init(&p);
    kr_diag d = {{0}};
    cr_assert_eq(kr_policy_add_prefixes(&p, "INFRA_, ACME_OPS_ ,", &d), 0);
    cr_assert_not_null(kr_policy_reason(&p, "INFRA_DB"));
    cr_assert_not_null(kr_policy_reason(&p, "ACME_OPS_KEY"));
    cr_assert_null(kr_policy_reason(&p, "ACME_KEY"));
    cr_assert_eq(kr_policy_check_key(&p, "INFRA_DB", &d), KR_EFORBIDDEN_KEY);
    cr_assert(strstr(d.msg, "INFRA_DB") && strstr(d.msg, "operator prefix"), "%s", d.msg);
    cr_assert_eq(kr_policy_check_key(&p, "MODEL", &d), 0);
}
