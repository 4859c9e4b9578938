/* test_ini.c -- the config syntax: sections, values, quoting, limits, errors. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "config/config.h"
#include "core/ini.h"

typedef struct {
    char out[4096];
} acc;

static int collect(void *ud, const char *section, const char *name, const char *key,
                   const char *value, int line, kr_diag *d)
{
    acc *a = ud;
    size_t l = strlen(a->out);
    if (!key) {
        snprintf(a->out + l, sizeof a->out - l, "[%s %s]", section, name);
        return 0;
    }
    snprintf(a->out + l, sizeof a->out - l, "%s|%s|%s=%s;", section, name, key, value);
    return 0;
}

static int parse(const char *text, acc *a, kr_diag *d)
{
    memset(a, 0, sizeof *a);
    return kr_ini_parse(text, strlen(text), collect, a, d);
}

Test(ini, sections_keys_values_and_comments)
{
    acc a;
    kr_diag d = {{0}};
    cr_assert_eq(parse("# c\n; c\nk0 = top\n[s]\na = 1\n[provider x]\n b =  two words  \r\n"
                       "q = \"quo\\\"ted # not a comment\"\n",
                       &a, &d),
                 0, "%s", d.msg);
    cr_assert_str_eq(a.out, "||k0=top;[s ]s||a=1;[provider x]provider|x|b=two words;"
                            "provider|x|q=quo\"ted # not a comment;");
}

Test(ini, errors_name_the_line)
{
    acc a;
    const char *bad[] = {"[s\n", "novalue\n", "k = \"open\n", "k = \"x\" junk\n", "[s t u]\n",
                         "bad key = 1\n", "k = a\x01b\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kr_diag d = {{0}};
        cr_assert_eq(parse(bad[i], &a, &d), KR_EPARSE, "accepted: %s", bad[i]);
        cr_assert(strstr(d.msg, "line 1") != NULL, "%s", d.msg);
    }
    kr_diag d = {{0}};
    char nul[] = "k = a\0b\n";
    cr_assert_eq(kr_ini_parse(nul, sizeof nul - 1, collect, &a, &d), KR_EPARSE);
}

Test(ini, limits)
{
    static char big[KR_INI_MAX_LINE + 10];
    memset(big, 'a', sizeof big - 1);
    big[0] = 'k', big[1] = '=';
    acc a;
    kr_diag d = {{0}};
    cr_assert_eq(parse(big, &a, &d), KR_EPARSE);
}

Test(config, defaults_file_env_and_validation)
{
    kr_config c;
    kr_diag d = {{0}};
    cr_assert_eq(kr_config_load(&c, NULL, &d), 0, "%s", d.msg);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_eq(c.max_body_bytes, 33554432);
    char path[] = "/tmp/kr-cfg-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[server]\nlisten = 0.0.0.0:9\nmax_headers = 50\n[store]\nurl = /x.db\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("KEYRAIL_SERVER_MAX_HEADERS", "60", 1);
    cr_assert_eq(kr_config_load(&c, path, &d), 0, "%s", d.msg);
    unsetenv("KEYRAIL_SERVER_MAX_HEADERS");
    cr_assert_str_eq(c.listen, "0.0.0.0:9");
    cr_assert_eq(c.max_headers, 60, "environment overrides the file");
    cr_assert_str_eq(c.store_url, "/x.db");
    cr_assert_eq(kr_config_set(&c, "server.max_headers", "100000", KR_CFG_FLAG, &d), KR_ECONFIG);
    cr_assert_eq(kr_config_set(&c, "server.nope", "1", KR_CFG_FLAG, &d), KR_ECONFIG);
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_eq(write(fd, "[server]\nlisten_typo = 1\n", 25), 25);
    close(fd);
    cr_assert_eq(kr_config_load(&c, path, &d), KR_ECONFIG);
    cr_assert(strstr(d.msg, "listen_typo") != NULL, "%s", d.msg);
    unlink(path);
}
