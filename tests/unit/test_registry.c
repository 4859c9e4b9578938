/* test_registry.c -- the provider registry: parsing, lookup, claims, prices, errors. */
#include "helpers.h"
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

Test(registry, shipped_default_parses)
{
    kr_registry *r;
    kr_diag d = {{0}};
    cr_assert_eq(kr_registry_load(KR_DEFAULT_REGISTRY, &r, &d), 0, "%s", d.msg);
    cr_assert_not_null(kr_registry_provider(r, "anthropic"));
    cr_assert_not_null(kr_registry_model(r, "claude-sonnet-4-5"));
    /* the pinned agents' own defaults are priced platform models: a concierge
     * without concierge_default_model works out of the box */
    const char *defaults[][2] = {{"claude-opus-5-5", "anthropic"}, {"gpt-6.2-sol", "openai"}};
    for (size_t i = 0; i < 2; i++) {
        const kr_model *m = kr_registry_model(r, defaults[i][0]);
        cr_assert(m && m->priced && m->price_input && m->price_output, "%s unpriced", defaults[i][0]);
        cr_assert_str_eq(r->providers[m->provider].name, defaults[i][1]);
        cr_assert(r->providers[m->provider].platform);
    }
    /* the Anthropic-compatible BYOK endpoints, chosen by the runtime's protocol */
    cr_assert_str_eq(kr_registry_claim_proto(r, "deepseek-chat", KR_PROTO_ANTHROPIC)->name,
                     "deepseek-anthropic");
    cr_assert_str_eq(kr_registry_claim_proto(r, "deepseek-chat", KR_PROTO_OPENAI)->name, "deepseek");
    const char *anth[] = {"kimi-k2", "anthropic/claude-sonnet-4.5", "MiniMax-M2"};
    for (size_t i = 0; i < 3; i++) {
        const kr_provider *p = kr_registry_claim_proto(r, anth[i], KR_PROTO_ANTHROPIC);
        cr_assert(p && p->proto == KR_PROTO_ANTHROPIC && !p->platform, "%s", anth[i]);
    }
    cr_assert_str_eq(kr_registry_key_issuer(r, "sk-or-v1-abcdef")->name, "openrouter");
    kr_registry_free(r);
}

Test(registry, lookup_aliases_claims_and_issuers)
{
    kr_registry *r = kr_test_registry();
    const kr_model *m = kr_registry_model(r, "sonnet");
    cr_assert_not_null(m);
    cr_assert_str_eq(m->id, "claude-sonnet-4-5");
    cr_assert_str_eq(kr_registry_claim(r, "claude-opus-9")->name, "anthropic", "claimed by prefix");
    cr_assert_str_eq(kr_registry_claim(r, "MiniMax-M2")->name, "minimax");
    cr_assert_null(kr_registry_claim(r, "llama"));
    const kr_provider *p = kr_registry_provider(r, "minimax");
    cr_assert_not(p->platform);
    cr_assert_eq(p->header, KR_AUTH_BEARER);
    cr_assert_str_eq(kr_registry_key_issuer(r, "sk-ant-oat01-x")->name, "anthropic");
    cr_assert_str_eq(kr_registry_key_issuer(r, "sk-proj-x")->name, "openai");
    cr_assert_null(kr_registry_key_issuer(r, "sk-deepseek"));
    kr_registry_free(r);
}

Test(registry, cost_in_micros_rounds_up)
{
    kr_registry *r = kr_test_registry();
    const kr_model *m = kr_registry_model(r, "claude-sonnet-4-5");
    kr_usage u = {.input_tokens = 1000000, .output_tokens = 1000000, .cache_read_tokens = 1000000,
                  .cache_write_tokens = 1000000};
    cr_assert_eq(kr_model_cost(m, &u), 3000000 + 15000000 + 300000 + 3750000);
    kr_usage one = {.input_tokens = 1};
    cr_assert_eq(kr_model_cost(m, &one), 3, "3 micros per token");
    kr_usage tiny = {.cache_read_tokens = 1};
    cr_assert_eq(kr_model_cost(m, &tiny), 1, "0.3 micro rounds up");
    kr_usage none = {0};
    cr_assert_eq(kr_model_cost(m, &none), 0);
    kr_registry_free(r);
}

Test(registry, rejects_bad_files)
{
    const char *bad[] = {
        "[provider a]\nprotocol = grpc\n",
        "[provider a]\nprotocol = anthropic\n",                     /* no base_url */
        "[provider a]\nbase_url = ftp://x\n",
        "[provider a]\nbase_url = http://x\ncredential_env = A\nplatform = true\n", /* no key env */
        "[model m]\nprovider = nosuch\nprice_input = 1\n",
        "[provider a]\nbase_url = http://x\ncredential_env = A\n[model m]\nprovider = a\nprice_input = x\n",
        "[provider a]\nbase_url = http://x\ncredential_env = A\n[provider a]\n",
        "stray = 1\n",
        "[provider a]\nbase_url = http://x\ncredential_env = A\nbogus = 1\n",
        ("[provider a]\nbase_url = http://x\ncredential_env = A\n[model m]\nprovider = a\n"
         "[model n]\nprovider = a\naliases = m\n"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kr_registry *r = NULL;
        kr_diag d = {{0}};
        cr_assert_neq(kr_registry_parse(bad[i], strlen(bad[i]), &r, &d), 0, "accepted #%zu", i);
        cr_assert_neq(d.msg[0], 0);
        cr_assert_null(r);
    }
}

Test(registry, base_url_override)
{
    kr_registry *r = kr_test_registry();
    kr_diag d = {{0}};
    cr_assert_eq(kr_registry_set_base_url(r, "minimax", "https://egress.example/mm//", &d), 0, "%s",
                 d.msg);
    cr_assert_str_eq(kr_registry_provider(r, "minimax")->base_url, "https://egress.example/mm");
    cr_assert_eq(kr_registry_set_base_url(r, "nosuch", "https://x.example", &d),
                 KR_EUNKNOWN_PROVIDER);
    static const char *const bad[] = {"ftp://x", "x.example", "https://a b", "https://a\nb",
                                      "javascript:alert(1)", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(kr_registry_set_base_url(r, "anthropic", bad[i], &d), KR_EPARSE, "%s", bad[i]);
        cr_assert_str_eq(kr_registry_provider(r, "anthropic")->base_url, "https://api.anthropic.com",
                         "a refused override changes nothing");
    }
    kr_registry_free(r);
}

Test(registry, config_overrides_from_file_and_environment)
{
    char dir[] = "/tmp/kr-test-regov-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char reg[300], conf[300];
    kr_snprintf(reg, sizeof reg, "%s/providers.conf", dir);
    kr_snprintf(conf, sizeof conf, "%s/keyrail.conf", dir);
    FILE *f = fopen(reg, "w");
    fputs(kr_test_registry_text, f);
    fclose(f);
    f = fopen(conf, "w");
    fprintf(f, "[registry]\nfile = %s\n[provider anthropic]\nbase_url = https://file.example\n"
               "[provider minimax]\nbase_url = https://file-mm.example\n", reg);
    fclose(f);
    setenv("KEYRAIL_PROVIDER_MINIMAX_BASE_URL", "https://env-mm.example", 1);
    kr_config c;
    kr_diag d = {{0}};
    cr_assert_eq(kr_config_load(&c, conf, &d), 0, "%s", d.msg);
    kr_registry *r;
    cr_assert_eq(kr_config_load_registry(&c, &r, &d), 0, "%s", d.msg);
    cr_assert_str_eq(kr_registry_provider(r, "anthropic")->base_url, "https://file.example");
    cr_assert_str_eq(kr_registry_provider(r, "minimax")->base_url, "https://env-mm.example",
                     "the environment wins");
    cr_assert_str_eq(kr_registry_provider(r, "openai")->base_url, "https://api.openai.com");
    kr_registry_free(r);
    setenv("KEYRAIL_PROVIDER_NOSUCH_BASE_URL", "https://x.example", 1);
    cr_assert_eq(kr_config_load(&c, conf, &d), 0, "%s", d.msg);
    cr_assert_neq(kr_config_load_registry(&c, &r, &d), 0);
    cr_assert(strstr(d.msg, "KEYRAIL_PROVIDER_NOSUCH_BASE_URL") && strstr(d.msg, "no provider"), "%s",
              d.msg);
    unsetenv("KEYRAIL_PROVIDER_NOSUCH_BASE_URL");
    unsetenv("KEYRAIL_PROVIDER_MINIMAX_BASE_URL");
    unlink(reg);
    unlink(conf);
    rmdir(dir);
}
