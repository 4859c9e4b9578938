/* test_core.c -- buffers, errors, credential classes, fingerprints, redaction. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/cred.h"
#include "core/err.h"
#include "core/log.h"

Test(err, names_and_messages)
{
    cr_assert_str_eq(kr_err_name(0), "OK");
    cr_assert_str_eq(kr_err_name(KR_ESECRET_UNREADABLE), "SECRET_UNREADABLE");
    cr_assert_str_eq(kr_err_name(KR_EMISSING_BYOK_CREDENTIAL), "MISSING_BYOK_CREDENTIAL");
    cr_assert_str_eq(kr_err_name(12345), "UNKNOWN_ERROR");
    cr_assert_str_eq(kr_err_name(-9999), "UNKNOWN_ERROR");
    kr_diag d = {{0}};
    cr_assert_eq(kr_fail(&d, KR_EINVAL, "bad %s", "thing"), KR_EINVAL);
    cr_assert_str_eq(kr_diag_msg(&d, KR_EINVAL), "bad thing");
    cr_assert_str_eq(kr_diag_msg(NULL, KR_ENOTFOUND), "not found");
}

Test(buf, cap_is_hard_and_failure_leaves_buffer_unchanged)
{
    kr_buf b = KR_BUF_INIT(8);
    cr_assert_eq(kr_buf_puts(&b, "12345"), 0);
    cr_assert_eq(kr_buf_puts(&b, "6789"), KR_ETOOBIG);
    cr_assert_eq(b.len, 5);
    cr_assert_str_eq(b.data, "12345");
    cr_assert_eq(kr_buf_puts(&b, "678"), 0);
    cr_assert_eq(b.len, 8);
    cr_assert_eq(kr_buf_putc(&b, 'x'), KR_ETOOBIG);
    kr_buf_consume(&b, 3);
    cr_assert_str_eq(b.data, "45678");
    cr_assert_eq(kr_buf_printf(&b, "%d", 123), 0);
    cr_assert_str_eq(b.data, "45678123");
    kr_buf_free(&b);
}

Test(buf, json_string_escaping)
{
    kr_buf b = KR_BUF_INIT(1024);
    const char in[] = "a\"b\\c\n\x01\xff\xc3\xa9";
    cr_assert_eq(kr_buf_json_str(&b, in, sizeof in - 1), 0);
    cr_assert_str_eq(b.data, "a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9");
    kr_buf_free(&b);
}

Test(buf, strict_number_parsing)
{
    uint64_t u;
    int64_t i;
    cr_assert_eq(kr_parse_u64("18446744073709551615", 20, &u), 0);
    cr_assert_eq(u, UINT64_MAX);
    cr_assert_eq(kr_parse_u64("18446744073709551616", 20, &u), KR_EPARSE);
    cr_assert_eq(kr_parse_u64("12a", 3, &u), KR_EPARSE);
    cr_assert_eq(kr_parse_u64("", 0, &u), KR_EPARSE);
    cr_assert_eq(kr_parse_i64("-42", 3, &i), 0);
    cr_assert_eq(i, -42);
    cr_assert_eq(kr_parse_micros("3.75", 4, &i), 0);
    cr_assert_eq(i, 3750000);
    cr_assert_eq(kr_parse_micros("0.075", 5, &i), 0);
    cr_assert_eq(i, 75000);
    cr_assert_eq(kr_parse_micros("15", 2, &i), 0);
    cr_assert_eq(i, 15000000);
    cr_assert_eq(kr_parse_micros("1.1234567", 9, &i), KR_EPARSE);
    cr_assert_eq(kr_parse_micros(".5", 2, &i), KR_EPARSE);
    cr_assert_eq(kr_parse_micros("1.", 2, &i), KR_EPARSE);
}

Test(buf, bounded_copies_report_truncation)
{
    char small[4];
    cr_assert_eq(kr_strlcpy(small, "abc", sizeof small), 0);
    cr_assert_eq(kr_strlcpy(small, "abcd", sizeof small), KR_ETOOBIG);
    cr_assert_str_eq(small, "abc");
    cr_assert_eq(kr_snprintf(small, sizeof small, "%d", 12345), KR_ETOOBIG);
}

Test(cred, classes_by_shape)
{
    struct {
        const char *s;
        kr_cred_class c;
    } t[] = {
        {"", KR_CRED_NONE},
        {"krws_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", KR_CRED_WORKSPACE_TOKEN},
        {"sk-ant-oat01-abcdef", KR_CRED_ANTHROPIC_OAUTH},
        {"sk-ant-api03-abcdef", KR_CRED_ANTHROPIC_API_KEY},
        {"sk-proj-abcdef", KR_CRED_OPENAI_KEY},
        {"sk-svcacct-abcdef", KR_CRED_OPENAI_KEY},
        {"sk-abcdefghijklmnopqrstuvwxyz", KR_CRED_VENDOR_KEY},
        {"AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", KR_CRED_GOOGLE_KEY},
        {"ya29.a0AfH6SMBx-abcdefghijklmnop", KR_CRED_GOOGLE_OAUTH},
        {"AIza-short", KR_CRED_UNKNOWN},
        {"hello", KR_CRED_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        cr_assert_eq(kr_cred_classify(t[i].s, strlen(t[i].s)), t[i].c, "%s", t[i].s);
    cr_assert_str_eq(kr_cred_class_name(KR_CRED_ANTHROPIC_OAUTH), "oauth");
    cr_assert(kr_cred_is_vendor(KR_CRED_ANTHROPIC_OAUTH));
    cr_assert(kr_cred_is_vendor(KR_CRED_GOOGLE_KEY) && kr_cred_is_vendor(KR_CRED_GOOGLE_OAUTH));
    size_t off, len;
    const char *hdr = "x-goog-api-key: AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
    cr_assert_eq(kr_cred_find(hdr, strlen(hdr), &off, &len), KR_CRED_GOOGLE_KEY);
    cr_assert_eq(off, 16);
    cr_assert_not(kr_cred_is_vendor(KR_CRED_WORKSPACE_TOKEN));
}

Test(cred, fingerprint_is_stable_short_and_not_the_token)
{
    cr_assert_eq(sodium_init() >= 0, 1);
    char a[KR_FP_LEN], b[KR_FP_LEN], c[KR_FP_LEN];
    kr_cred_fingerprint("sk-ant-oat01-secret", 19, a);
    kr_cred_fingerprint("sk-ant-oat01-secret", 19, b);
    kr_cred_fingerprint("sk-ant-oat01-secreT", 19, c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
    cr_assert_eq(strlen(a), 8);
    for (int i = 0; i < 8; i++)
        cr_assert(strchr("0123456789abcdef", a[i]));
}

Test(cred, url_origin)
{
    char o[256];
    cr_assert_eq(kr_url_origin("https://API.Anthropic.com/v1", o, sizeof o), 0);
    cr_assert_str_eq(o, "https://api.anthropic.com:443");
    cr_assert_eq(kr_url_origin("http://127.0.0.1:8080", o, sizeof o), 0);
    cr_assert_str_eq(o, "http://127.0.0.1:8080");
    cr_assert_eq(kr_url_origin("http://[::1]:9/x", o, sizeof o), 0);
    cr_assert_str_eq(o, "http://[::1]:9");
    cr_assert_eq(kr_url_origin("https://user@evil.com@api.anthropic.com/", o, sizeof o), KR_EINVAL);
    cr_assert_eq(kr_url_origin("ftp://x", o, sizeof o), KR_EINVAL);
    cr_assert_eq(kr_url_origin("https://", o, sizeof o), KR_EINVAL);
    cr_assert_eq(kr_url_origin("https://h:99999", o, sizeof o), KR_EINVAL);
    cr_assert_eq(kr_url_origin("https://h:", o, sizeof o), KR_EINVAL);
}

Test(log, redaction_replaces_every_credential_shape)
{
    cr_assert_eq(sodium_init() >= 0, 1);
    const char *in = "auth x-api-key=sk-ant-oat01-AAAABBBBCCCC and Bearer krws_abcdefghijkl, "
                     "model=sk-proj-zzzzzzzz; gh ghp_1234567890; keep sk- and risky-model";
    kr_buf out = KR_BUF_INIT(4096);
    size_t n = kr_redact(in, strlen(in), &out);
    cr_assert_eq(n, 4, "%s", out.data);
    cr_assert_null(strstr(out.data, "AAAABBBB"));
    cr_assert_null(strstr(out.data, "abcdefghijkl"));
    cr_assert_null(strstr(out.data, "zzzzzzzz"));
    cr_assert_null(strstr(out.data, "1234567890"));
    cr_assert(strstr(out.data, "[redacted oauth ") != NULL, "%s", out.data);
    cr_assert(strstr(out.data, "keep sk- and risky-model") != NULL, "%s", out.data);
    kr_buf_free(&out);
}

Test(log, redaction_covers_every_shape_prefix)
{
    /* each shape the redactor knows, at a word boundary, and the same bytes
     * glued to a word (not a boundary: kept) */
    static const char *const toks[] = {
        "sk-abcdefgh1234",     "krws_abcdefgh1234",  "ghp_abcdefgh1234",    "gho_abcdefgh1234",
        "ghs_abcdefgh1234",    "ghu_abcdefgh1234",   "github_pat_abcd1234", "glpat-abcdefgh1234",
        "xoxb-abcdefgh1234",   "xoxp-abcdefgh1234",  "AKIAABCDEFGH1234",    "ASIAABCDEFGH1234",
        "Bearer abcdefgh1234", "bearer abcdefgh1234", "AIzaSyABCDEFGH1234",  "ya29.abcdefgh1234",
        "whsec_0123456789abcdef"};
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        char in[128];
        snprintf(in, sizeof in, "{\"v\":\"%s\",\"w\":\"x%s\"}", toks[i], toks[i]);
        kr_buf out = KR_BUF_INIT(4096);
        size_t n = kr_redact(in, strlen(in), &out);
        cr_assert_eq(n, 1, "%s -> %s", in, out.data);
        cr_assert(strstr(out.data, "\"v\":\"[redacted ") != NULL, "%s", out.data);
        kr_buf_free(&out);
    }
}

Test(buf, integer_and_millisecond_appends)
{
    kr_buf b = KR_BUF_INIT(256);
    kr_buf_put_u64(&b, 0);
    kr_buf_putc(&b, ' ');
    kr_buf_put_u64(&b, UINT64_MAX);
    kr_buf_putc(&b, ' ');
    kr_buf_put_i64(&b, INT64_MIN);
    kr_buf_putc(&b, ' ');
    kr_buf_put_i64(&b, -42);
    kr_buf_putc(&b, ' ');
    kr_buf_put_ms3(&b, 0);
    kr_buf_putc(&b, ' ');
    kr_buf_put_ms3(&b, 1234567); /* 1.2346 ms -> 1.235 */
    kr_buf_putc(&b, ' ');
    kr_buf_put_ms3(&b, 98765432100ull); /* 98765.4321 ms */
    cr_assert_str_eq(b.data,
                     "0 18446744073709551615 -9223372036854775808 -42 0.000 1.235 98765.432");
    kr_buf_free(&b);
    kr_buf small = KR_BUF_INIT(3);
    cr_assert_neq(kr_buf_put_u64(&small, 12345), 0, "the cap holds");
    cr_assert_eq(small.len, 0);
    kr_buf_free(&small);
}

Test(log, timestamp_is_utc_iso8601_with_milliseconds)
{
    char ts[KR_LOG_TS_LEN];
    size_t n = kr_log_ts(ts);
    cr_assert_eq(n, 24, "%s", ts);
    cr_assert_eq(strlen(ts), n);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char year[16];
    snprintf(year, sizeof year, "%04d-", tm.tm_year + 1900);
    cr_assert(strncmp(ts, year, 5) == 0, "%s", ts);
    cr_assert(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z', "%s", ts);
    for (int i = 20; i < 23; i++)
        cr_assert(ts[i] >= '0' && ts[i] <= '9', "%s", ts);
}

/* ---- escaping what is shown to a person ---- */

static char *esc_of(const char *s, size_t n)
{
    kr_buf b = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_buf_put_escaped(&b, s, n), 0);
    kr_buf_puts(&b, "");
    return kr_buf_steal(&b);
}

Test(esc, controls_terminal_steering_and_bad_utf8_are_escaped)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } t[] = {
        {"plain text 123", 14, "plain text 123"},
        {"two\nlines\r\n", 11, "two\\nlines\\r\\n"},
        {"tab\there", 8, "tab\\there"},
        {"\x1b[31mred\x1b[0m", 12, "\\x1b[31mred\\x1b[0m"},
        {"back\\slash", 10, "back\\\\slash"},
        {"nul\0byte", 8, "nul\\x00byte"},
        {"del\x7f", 4, "del\\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac"}, /* valid UTF-8 passes */
        {"csi\xc2\x9b" "2J", 7, "csi\\u{009b}2J"},                     /* C1 control U+009B */
        {"rlo\xe2\x80\xaetxt", 9, "rlo\\u{202e}txt"},                  /* bidi override */
        {"bad\xff\xc3", 5, "bad\\xff\\xc3"},                         /* not UTF-8 */
        {"\xed\xa0\x80", 3, "\\xed\\xa0\\x80"},                       /* a surrogate */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *got = esc_of(t[i].in, t[i].n);
        cr_assert_str_eq(got, t[i].out, "case %zu", i);
        for (const char *p = got; *p; p++)
            cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "case %zu: control in output", i);
        free(got);
    }
}

Test(esc, esc_cuts_with_dots_at_a_character_boundary)
{
    char out[8];
    cr_assert_str_eq(kr_esc("short", out, sizeof out), "short");
    cr_assert_str_eq(kr_esc("exactly", out, sizeof out), "exactly");
    cr_assert_str_eq(kr_esc("much too long", out, sizeof out), "much...");
    cr_assert_str_eq(kr_esc("\n\n\n\n", out, sizeof out), "\\n\\n...");
    cr_assert_str_eq(kr_esc("ab\xc3\xa9\xc3\xa9\xc3\xa9", out, sizeof out), "ab\xc3\xa9...");
    cr_assert_str_eq(kr_esc(NULL, out, sizeof out), "");
    char big[5000];
    memset(big, '\x1b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char wide[64];
    kr_esc(big, wide, sizeof wide);
    cr_assert_eq(strlen(wide), 63);
    cr_assert(strstr(wide, "...") == wide + 60, "%s", wide);
}
