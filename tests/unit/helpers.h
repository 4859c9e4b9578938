/* helpers.h -- shared fixtures for the unit suites (header-only). */
#ifndef KR_TEST_HELPERS_H
#define KR_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

#include "provision/provision.h"
#include "registry/registry.h"
#include "secrets/secrets.h"
#include "store/store.h"

static const char kr_test_registry_text[] =
    "[provider anthropic]\n"
    "protocol = anthropic\nbase_url = https://api.anthropic.com\n"
    "credential_env = ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN\nheader = x-api-key\n"
    "platform = true\nplatform_key_env = KEYRAIL_ANTHROPIC_KEY\nmodel_prefixes = claude-\n"
    "key_prefixes = sk-ant-\n"
    "[provider openai]\n"
    "protocol = openai\nbase_url = https://api.openai.com\ncredential_env = OPENAI_API_KEY\n"
    "header = bearer\nplatform = true\nplatform_key_env = KEYRAIL_OPENAI_KEY\n"
    "model_prefixes = gpt-\nkey_prefixes = sk-proj-, sk-svcacct-\n"
    "[provider minimax]\n"
    "protocol = anthropic\nbase_url = https://api.minimax.io/anthropic\n"
    "credential_env = MINIMAX_API_KEY\nheader = bearer\nplatform = false\nmodel_prefixes = MiniMax-\n"
    "[provider deepseek]\n"
    "protocol = openai\nbase_url = https://api.deepseek.com\ncredential_env = DEEPSEEK_API_KEY\n"
    "header = bearer\nplatform = false\nmodel_prefixes = deepseek-\n"
    "[provider deepseek-anthropic]\n"
    "protocol = anthropic\nbase_url = https://api.deepseek.com/anthropic\n"
    "credential_env = DEEPSEEK_API_KEY\nheader = x-api-key\nplatform = false\n"
    "model_prefixes = deepseek-\n"
    "[provider google]\n"
    "protocol = gemini\nbase_url = https://generativelanguage.googleapis.com\n"
    "credential_env = GEMINI_API_KEY, GOOGLE_API_KEY\nheader = x-goog-api-key\nplatform = true\n"
    "platform_key_env = KEYRAIL_GOOGLE_KEY\nmodel_prefixes = gemini-\nkey_prefixes = AIza\n"
    "[model claude-sonnet-4-5]\nprovider = anthropic\naliases = sonnet\n"
    "price_input = 3.00\nprice_output = 15.00\nprice_cache_read = 0.30\nprice_cache_write = 3.75\n"
    "[model claude-haiku-4-5]\nprovider = anthropic\nprice_input = 1\nprice_output = 5\n"
    "[model gpt-4o]\nprovider = openai\nprice_input = 2.50\nprice_output = 10.00\n"
    "[model gemini-2.5-flash]\nprovider = google\nprice_input = 0.30\nprice_output = 2.50\n";

#define OAUTH_TOKEN "sk-ant-oat01-TESTOAUTHxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define ANTHROPIC_KEY "sk-ant-api03-TESTAPIKEYxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define OPENAI_KEY "sk-proj-TESTOPENAIxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define MINIMAX_KEY "mm-TESTMINIMAXxxxxxxxxxxxxxxxxxxxxxx"
#define GOOGLE_KEY "AIzaSyTESTGOOGLExxxxxxxxxxxxxxxxxxxxxxx"

static inline kr_registry *kr_test_registry(void)
{
    kr_registry *r = NULL;
    kr_diag d = {{0}};
    int rc = kr_registry_parse(kr_test_registry_text, sizeof kr_test_registry_text - 1, &r, &d);
    cr_assert_eq(rc, 0, "test registry: %s", d.msg);
    return r;
}

/* The built-in runtime profiles (etc/runtimes.conf), parsed once per process. */
static inline const kr_runtimes *kr_test_runtimes(void)
{
    static kr_runtimes *rts;
    if (!rts) {
        kr_diag d = {{0}};
        int rc = kr_runtimes_load(NULL, &rts, &d);
        cr_assert_eq(rc, 0, "built-in runtime profiles: %s", d.msg);
    }
    return rts;
}

static inline kr_store *kr_test_store(void)
{
    kr_store *s = NULL;
    kr_diag d = {{0}};
    int rc = kr_store_open(":memory:", &s, &d);
    cr_assert_eq(rc, 0, "store: %s", d.msg);
    return s;
}

static inline void kr_test_key(kr_master_key *mk)
{
    randombytes_buf(mk->k, sizeof mk->k);
}

#endif
