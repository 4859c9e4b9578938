/* test_runtime.c -- runtime profiles: the shipped ones, the parser's refusals
 * and the file renderer. */
#include "helpers.h"
#include "runtime/runtime.h"

#define ONE                                                                                        \
    "[runtime x]\nprotocol = openai\nbase_url_env = B, B2\ncredential_env = C, C2\n"               \
    "header_env = H\nset_base_url = B\nset_bearer = C\n"

static int parse(const char *text, kr_runtimes **r, kr_diag *d)
{
    return kr_runtimes_parse(text, strlen(text), r, d);
}

Test(runtime, shipped_profiles)
{
    const kr_runtimes *r = kr_test_runtimes();
    const kr_runtime *cc = kr_runtimes_find(r, "claude-code"), *cx = kr_runtimes_find(r, "codex");
    cr_assert(cc && cx);
    cr_assert_eq(cc->proto, KR_PROTO_ANTHROPIC);
    cr_assert_eq(cx->proto, KR_PROTO_OPENAI);
    cr_assert_str_eq(kr_runtimes_find(r, "hermes")->name, "anthropic-sdk");
    cr_assert_str_eq(kr_runtimes_find(r, "openai-agents")->name, "openai-sdk");
    cr_assert_eq(kr_runtimes_for_command(r, "/usr/local/bin/codex"), cx);
    cr_assert_eq(kr_runtimes_for_command(r, "claude"), cc);
    cr_assert_null(kr_runtimes_for_command(r, "bash"));
    cr_assert_eq(kr_runtimes_role(r, "ANTHROPIC_CUSTOM_HEADERS"), KR_RTVAR_HEADERS);
    cr_assert_eq(kr_runtimes_role(r, "CODEX_API_KEY"), KR_RTVAR_CREDENTIAL);
    cr_assert_eq(kr_runtimes_role(r, "CODEX_HOME"), KR_RTVAR_CONFIG);
    cr_assert_eq(kr_runtimes_role(r, "PATH"), -1);
    cr_assert(kr_runtimes_names(r, "OPENAI_API_KEY", KR_RTVAR_CREDENTIAL, KR_PROTO_OPENAI));
    cr_assert_not(kr_runtimes_names(r, "OPENAI_API_KEY", KR_RTVAR_CREDENTIAL, KR_PROTO_ANTHROPIC));
    cr_assert_str_eq(cx->dir_env, "CODEX_HOME");
    cr_assert_str_eq(cc->args[0], "--settings");
    const kr_runtime *g = kr_runtimes_find(r, "gemini-cli");
    cr_assert(g && !strcmp(g->name, "gemini"));
    cr_assert_eq(g->proto, KR_PROTO_GEMINI);
    cr_assert_eq(kr_runtimes_for_command(r, "/usr/bin/gemini"), g);
    cr_assert_str_eq(g->file, ".gemini/settings.json");
    cr_assert_str_eq(g->dir_env, "GEMINI_CLI_HOME");
    cr_assert_eq(kr_runtimes_role(r, "GEMINI_CLI_CUSTOM_HEADERS"), KR_RTVAR_HEADERS);
    cr_assert_eq(kr_runtimes_role(r, "GEMINI_CLI_TRUST_WORKSPACE"), KR_RTVAR_PROVIDER);
    cr_assert_eq(g->set_env.n, 3);
    cr_assert_eq(kr_runtimes_role(r, "GOOGLE_API_KEY"), KR_RTVAR_CREDENTIAL);
}

Test(runtime, refuses_what_it_cannot_honour)
{
    const char *bad[] = {
        "[runtime x]\nprotocol = openai\n",                             /* no set_* */
        ONE "nonsense = 1\n",                                           /* unknown key */
        ONE "set_api_key = NOT_A_CREDENTIAL_VAR\n",                     /* not in credential_env */
        "[runtime x]\nprotocol = openai\nbase_url_env = B\ncredential_env = C\n"
        "set_base_url = OTHER\nset_bearer = C\n",                       /* not in base_url_env */
        ONE "file = ../x\nformat = toml\nline = a\n",                   /* out of its directory */
        ONE "file = /etc/x\nformat = toml\nline = a\n",                 /* absolute */
        ONE "file = a/../../x\nformat = toml\nline = a\n",              /* out of its directory */
        ONE "file = a//x\nformat = toml\nline = a\n",                   /* empty component */
        ONE "file = a/\nformat = toml\nline = a\n",                     /* a directory */
        ONE "file = f\nformat = toml\nline = a\nremove_files = ../auth.json\n",
        ONE "file = f\nformat = toml\nline = a = ${secret}\n",          /* unknown placeholder */
        ONE "file = f\nformat = toml\nline = a = 1${blank_env}\n",      /* json only */
        ONE "file = f\nformat = toml\nline = k = \"sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAA\"\n",
        ONE "file = f\nformat = toml\n",                                /* no lines */
        ONE "line = a\n",                                               /* line without a file */
        ONE "args = ${home}\nfile = f\nformat = json\nline = {}\n",     /* args know ${file} only */
        ONE "[runtime x]\nprotocol = openai\n",                         /* twice */
        ONE "aliases = y\n[runtime y]\nprotocol = openai\nbase_url_env = B\ncredential_env = C\n"
            "set_base_url = B\nset_bearer = C\n",                       /* alias taken */
        ONE "credential_env = 1BAD\n",                                  /* not a name */
        ONE "set_env = NOVALUE\n",                                      /* no = */
        ONE "set_env = KEYRAIL_X=1\n",                                  /* keyrail's own */
        ONE "set_env = X=sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAA\n",     /* a credential */
        "[provider x]\n",                                               /* wrong section */
        "",                                                             /* nothing */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kr_runtimes *r = NULL;
        kr_diag d = {{0}};
        cr_assert_neq(parse(bad[i], &r, &d), 0, "accepted #%zu: %s", i, bad[i]);
        cr_assert(d.msg[0], "#%zu: no message", i);
    }
}

Test(runtime, renders_quoted_values_and_never_a_credential)
{
    kr_runtimes *r;
    kr_diag d = {{0}};
    cr_assert_eq(parse(ONE "file = f.json\nformat = json\n"
                           "line = {\"url\": ${base_url}, \"key_var\": ${credential_env}${blank_env}}\n"
                           "line = \"\\\"model\\\": ${model}\"\n", /* quoted: starts with \" */
                       &r, &d),
                 0, "%s", d.msg);
    kr_buf b = KR_BUF_INIT(4096);
    cr_assert_eq(kr_runtime_render_file(&r->rt[0], "http://h/a\"b\\c", "C2", "", &b, &d), 0, "%s", d.msg);
    cr_assert_str_eq(b.data, "{\"url\": \"http://h/a\\\"b\\\\c\", \"key_var\": \"C2\", \"C\": \"\", \"H\": \"\"}\n");
    kr_buf_reset(&b);
    cr_assert_eq(kr_runtime_render_file(&r->rt[0], "http://h", "C", "m-1", &b, &d), 0);
    cr_assert(strstr(b.data, "\"C2\": \"\"") && !strstr(b.data, "\"C\": \"\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"model\": \"m-1\"") != NULL);
    kr_buf_reset(&b);
    cr_assert_eq(kr_runtime_render_file(&r->rt[0], "http://h/\n", "C", "", &b, &d), KR_EINVAL);
    kr_buf_reset(&b);
    cr_assert_eq(kr_runtime_render_file(&r->rt[0], "https://x/" OPENAI_KEY, "C", "", &b, &d), KR_EINVAL);
    cr_assert(strstr(d.msg, "credential") != NULL);
    kr_buf_free(&b);
    kr_runtimes_free(r);
}

Test(runtime, load_reads_a_file_or_the_builtin)
{
    kr_runtimes *r;
    kr_diag d = {{0}};
    cr_assert_eq(kr_runtimes_load("", &r, &d), 0);
    cr_assert_geq(r->n, 2);
    kr_runtimes_free(r);
    cr_assert_neq(kr_runtimes_load("/nonexistent/runtimes.conf", &r, &d), 0);
    cr_assert(strstr(d.msg, "/nonexistent/runtimes.conf") != NULL, "%s", d.msg);
}
