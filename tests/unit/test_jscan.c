/*
 * test_jscan.c -- the non-DOM JSON scanner: validation rules one by one,
 * member lookup (escaped names, duplicates), dotted paths, the depth cap,
 * u64 and string extraction.
 */
#include <criterion/criterion.h>

#include "core/err.h"
#include "proxy/jscan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n;
} lit;

/* sizeof keeps embedded NULs */
#define L(x)                                                                                       \
    {                                                                                              \
        (x), sizeof(x) - 1                                                                         \
    }

static int validate_lit(lit l)
{
    /* an exact-size heap copy, so reading past the end is caught by ASan */
    char *p = malloc(l.n ? l.n : 1);
    memcpy(p, l.s, l.n);
    int rc = kr_json_validate(p, l.n);
    free(p);
    return rc;
}

static kr_jval jv(kr_json_type t, const char *s)
{
    kr_jval v = {t, s, strlen(s)};
    return v;
}

/* ---- validation -------------------------------------------------------- */

static const lit valid_docs[] = {
    L("0"),
    L("-0"),
    L("1"),
    L("-1"),
    L("1.5"),
    L("-1.5e10"),
    L("1E+2"),
    L("1e-2"),
    L("0.0"),
    L("0e0"),
    L("123456789012345678901234567890123456789012345678901234567890123456789"),
    L("true"),
    L("false"),
    L("null"),
    L("\"\""),
    L("\"a\""),
    L("[]"),
    L("{}"),
    L(" [ 1 , 2 ] "),
    L("\t\r\n{}\n"),
    L("{ \"a\" : [ 1 , { \"b\" : null } ] }"),
    L("{\"a\":[1,{\"b\":null}],\"c\":\"d\"}"),
    L("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""),
    L("\"\\u0000\""),
    L("\"\\u00e9\\u20AC\""),
    L("\"\\uD83D\\uDE00\""),
    L("\"\\udbff\\udfff\""),
    L("\"\xc3\xa9\""),         /* é */
    L("\"\xe2\x82\xac\""),     /* € */
    L("\"\xf0\x9f\x98\x80\""), /* U+1F600 */
    L("\"\xef\xbf\xbf\""),     /* U+FFFF */
    L("\"\xf4\x8f\xbf\xbf\""), /* U+10FFFF, the last code point */
    L("\"\xed\x9f\xbf\""),     /* U+D7FF, just below the surrogates */
    L("\"\x7f\""),             /* DEL needs no escape */
    L("\"'\""),
    L("{\"\":1}"),
    L("[[[]]]"),
    L("{\"a\":1,\"a\":2}"), /* duplicates are valid JSON; only lookups refuse them */
    L("[true,false,null,0,\"x\",{},[]]"),
    L("\"a long string that is well over eight bytes, so the word-at-a-time path runs\""),
};

static const lit invalid_docs[] = {
    /* empty */
    L(""),
    L("   "),
    /* trailing commas and stray commas */
    L("[1,]"),
    L("{\"a\":1,}"),
    L("[,1]"),
    L("{,}"),
    L("[1,,2]"),
    L("{\"a\":1,,\"b\":2}"),
    /* comments */
    L("[1]//c"),
    L("/*c*/[1]"),
    L("[1/*x*/]"),
    L("# c\n1"),
    /* NaN / Infinity */
    L("NaN"),
    L("[Infinity]"),
    L("[-Infinity]"),
    L("nan"),
    /* numbers */
    L("01"),
    L("[00]"),
    L("-01"),
    L("+1"),
    L("1."),
    L(".5"),
    L("1e"),
    L("1e+"),
    L("-"),
    L("--1"),
    L("1.e5"),
    L("0x10"),
    L("1 2"),
    L("[1 2]"),
    /* control characters inside strings */
    L("\"a\x01z\""),
    L("\"\t\""),
    L("\"\n\""),
    L("\"\x1f\""),
    L("\"a\0b\""),
    /* escapes */
    L("\"\\x\""),
    L("\"\\'\""),
    L("\"\\a\""),
    L("\"\\u12\""),
    L("\"\\u12g4\""),
    L("\"\\U0041\""),
    L("\"\\\""),
    L("\"\\"),
    /* surrogates */
    L("\"\\ud800\""),
    L("\"\\udc00\""),
    L("\"\\udfff\\ud800\""),
    L("\"\\ud800\\u0041\""),
    L("\"\\ud800x\""),
    L("\"\\ud800\\n\""),
    L("\"\\udbff\\udbff\""),
    L("\"\\ud800\\ue000\""),
    L("\"\\ud800\\"),
    /* invalid UTF-8 */
    L("\"\x80\""), /* lone continuation */
    L("\"\xbf\""),
    L("\"\xc0\xaf\""),         /* overlong '/' */
    L("\"\xc1\xbf\""),         /* overlong */
    L("\"\xc3\""),             /* truncated */
    L("\"\xc3(\""),            /* bad continuation */
    L("\"\xe0\x80\xaf\""),     /* overlong 3-byte */
    L("\"\xe0\x9f\xbf\""),     /* overlong 3-byte */
    L("\"\xe2\x82\""),         /* truncated 3-byte */
    L("\"\xed\xa0\x80\""),     /* UTF-16 surrogate in UTF-8 */
    L("\"\xed\xbf\xbf\""),     /* UTF-16 surrogate in UTF-8 */
    L("\"\xf0\x80\x80\x80\""), /* overlong 4-byte */
    L("\"\xf0\x8f\xbf\xbf\""), /* overlong 4-byte */
    L("\"\xf4\x90\x80\x80\""), /* > U+10FFFF */
    L("\"\xf5\x80\x80\x80\""),
    L("\"\xf8\x88\x80\x80\x80\""),
    L("\"\xff\""),
    L("\"\xfe\""),
    L("\"\xf0\x9f\x98\""), /* truncated 4-byte */
    L("\"\xe2\x82\xac"),   /* unterminated after a good char */
    /* whitespace other than SP HT CR LF */
    L("\v1"),
    L("\f[1]"),
    L("[1]\0"),
    L("\xc2\xa0 1"),
    L("\xef\xbb\xbf{}"), /* a BOM is not JSON whitespace */
    L("[1,\0 2]"),
    /* structure */
    L("{\"a\" 1}"),
    L("{\"a\":}"),
    L("{\"a\"}"),
    L("{a:1}"),
    L("{'a':1}"),
    L("{1:2}"),
    L("{null:2}"),
    L("["),
    L("]"),
    L("{"),
    L("}"),
    L("{\"a\":1"),
    L("[1]]"),
    L("[1][2]"),
    L("{\"a\":1}}"),
    L("[}"),
    L("{]"),
    L("{\"a\":1]"),
    L("[1}"),
    L("\"unterminated"),
    /* literals */
    L("tru"),
    L("truex"),
    L("nul"),
    L("True"),
    L("NULL"),
    L("fals"),
    L("[true false]"),
    L("undefined"),
};

Test(jscan, valid_documents)
{
    for (size_t i = 0; i < sizeof valid_docs / sizeof *valid_docs; i++)
        cr_expect_eq(validate_lit(valid_docs[i]), 0, "valid #%zu rejected: %.*s", i,
                     (int)valid_docs[i].n, valid_docs[i].s);
}

Test(jscan, invalid_documents)
{
    for (size_t i = 0; i < sizeof invalid_docs / sizeof *invalid_docs; i++)
        cr_expect_eq(validate_lit(invalid_docs[i]), KR_EPARSE, "invalid #%zu accepted: %.*s", i,
                     (int)invalid_docs[i].n, invalid_docs[i].s);
}

Test(jscan, null_and_prefixes)
{
    cr_expect_eq(kr_json_validate(NULL, 0), KR_EPARSE);
    /* every proper prefix of a valid document that is not itself valid must
     * be rejected without reading past the end */
    const char *doc =
        "{\"a\":[1,2.5e-3,\"x\\u00e9\\ud83d\\ude00\xc3\xa9\",true,false,null],\"b\":{}}";
    size_t n = strlen(doc);
    cr_assert_eq(kr_json_validate(doc, n), 0);
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(validate_lit((lit){doc, k}), KR_EPARSE, "k=%zu", k);
}

/* The fast path looks at eight bytes at a time: put every kind of special
 * byte at every offset of a long string. */
Test(jscan, special_bytes_at_every_offset)
{
    static const struct {
        const char *ins;
        int want;
    } cases[] = {
        {"\x01", KR_EPARSE},
        {"\x1f", KR_EPARSE},
        {"\\n", 0},
        {"\\\"", 0},
        {"\\u0041", 0},
        {"\\q", KR_EPARSE},
        {"\xc3\xa9", 0},
        {"\xc3", KR_EPARSE},
        {"\x80", KR_EPARSE},
        {"\xf0\x9f\x98\x80", 0},
        {"\xed\xa0\x80", KR_EPARSE},
        {"\x7f", 0},
        {" ", 0},
    };
    char buf[128];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (size_t k = 0; k <= 40; k++) {
            size_t n = 0;
            buf[n++] = '"';
            memset(buf + n, 'a', k);
            n += k;
            size_t il = strlen(cases[c].ins);
            memcpy(buf + n, cases[c].ins, il);
            n += il;
            memset(buf + n, 'b', 40 - k);
            n += 40 - k;
            buf[n++] = '"';
            cr_expect_eq(validate_lit((lit){buf, n}), cases[c].want, "case %zu at %zu", c, k);
        }
        /* the string cut right after the special part */
        for (size_t k = 0; k <= 20; k++) {
            size_t n = 0;
            buf[n++] = '"';
            memset(buf + n, 'a', k);
            n += k;
            size_t il = strlen(cases[c].ins);
            memcpy(buf + n, cases[c].ins, il);
            n += il;
            cr_expect_eq(validate_lit((lit){buf, n}), KR_EPARSE, "unterminated %zu at %zu", c, k);
        }
    }
}

/* ---- depth ------------------------------------------------------------- */

static char *nested(size_t depth, char open, char close, size_t *n)
{
    char *p = malloc(2 * depth + 1);
    memset(p, open, depth);
    memset(p + depth, close, depth);
    p[2 * depth] = 0;
    *n = 2 * depth;
    return p;
}

Test(jscan, depth_cap_arrays)
{
    size_t n;
    char *p = nested(KR_JSON_MAX_DEPTH, '[', ']', &n);
    cr_expect_eq(kr_json_validate(p, n), 0);
    free(p);
    p = nested(KR_JSON_MAX_DEPTH + 1, '[', ']', &n);
    cr_expect_eq(kr_json_validate(p, n), KR_EPARSE);
    free(p);
}

Test(jscan, depth_cap_objects)
{
    /* {"a":{"a":...{}...}} */
    for (size_t depth = KR_JSON_MAX_DEPTH - 1; depth <= KR_JSON_MAX_DEPTH + 1; depth++) {
        char *p = malloc(depth * 6 + 2);
        size_t n = 0;
        for (size_t i = 0; i + 1 < depth; i++) {
            memcpy(p + n, "{\"a\":", 5);
            n += 5;
        }
        p[n++] = '{';
        memset(p + n, '}', depth);
        n += depth;
        int want = depth <= KR_JSON_MAX_DEPTH ? 0 : KR_EPARSE;
        cr_expect_eq(kr_json_validate(p, n), want, "depth %zu", depth);
        /* the lookups apply the same cap */
        static const char *const keys[] = {"a"};
        kr_jval v;
        cr_expect_eq(kr_json_object_get(p, n, keys, &v, 1), want, "depth %zu", depth);
        cr_expect_eq(kr_json_get(p, n, "a.a.a", &v), want, "depth %zu", depth);
        free(p);
    }
}

Test(jscan, hostile_depth_does_not_crash)
{
    size_t n = 100000;
    char *p = malloc(2 * n);
    memset(p, '[', n);
    cr_expect_eq(kr_json_validate(p, n), KR_EPARSE);
    memset(p + n, ']', n);
    cr_expect_eq(kr_json_validate(p, 2 * n), KR_EPARSE);
    kr_jval v;
    static const char *const keys[] = {"a"};
    memcpy(p, "{\"a\":", 5);
    cr_expect_eq(kr_json_object_get(p, 2 * n, keys, &v, 1), KR_EPARSE);
    cr_expect_eq(kr_json_get(p, 2 * n, "a", &v), KR_EPARSE);
    for (size_t i = 0; i < n; i++)
        p[i] = (i % 2) ? '{' : '[';
    cr_expect_eq(kr_json_validate(p, n), KR_EPARSE);
    free(p);
}

/* ---- object_get -------------------------------------------------------- */

static const char *const req_keys[] = {"model", "stream", "max_tokens", "stream_options"};

Test(jscan, object_get_request)
{
    const char *js =
        "{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hi, model\"}],\"max_tokens\":1024,\"stream\":true,\"stream_options\":"
        "{\"include_usage\":true},\"metadata\":{\"model\":\"nested is not top\"}}";
    kr_jval v[4];
    cr_assert_eq(kr_json_object_get(js, strlen(js), req_keys, v, 4), 0);
    cr_expect_eq(v[0].type, KR_JSON_STRING);
    cr_expect_eq(v[0].n, strlen("\"claude-sonnet-4-5\""));
    cr_expect_eq(memcmp(v[0].p, "\"claude-sonnet-4-5\"", v[0].n), 0);
    cr_expect(kr_jval_str_eq(&v[0], "claude-sonnet-4-5"));
    cr_expect_eq(v[1].type, KR_JSON_TRUE);
    cr_expect_eq(v[1].n, 4);
    cr_expect_eq(v[2].type, KR_JSON_NUMBER);
    uint64_t mt = 0;
    cr_expect_eq(kr_jval_u64(&v[2], &mt), 0);
    cr_expect_eq(mt, 1024);
    cr_expect_eq(v[3].type, KR_JSON_OBJECT);
    cr_expect_eq(v[3].n, strlen("{\"include_usage\":true}"));
    kr_jval iu;
    cr_expect_eq(kr_json_get(v[3].p, v[3].n, "include_usage", &iu), 0);
    cr_expect_eq(iu.type, KR_JSON_TRUE);
}

Test(jscan, object_get_types_and_absent)
{
    const char *js = " {\"a\" : [1, 2] , \"b\":null,\"c\":false,\"d\":-2.5e3,\"e\":{}} ";
    static const char *const keys[] = {"a", "b", "c", "d", "e", "f", ""};
    kr_jval v[7];
    cr_assert_eq(kr_json_object_get(js, strlen(js), keys, v, 7), 0);
    cr_expect_eq(v[0].type, KR_JSON_ARRAY);
    cr_expect_eq(v[0].n, 6); /* "[1, 2]" */
    cr_expect_eq(v[1].type, KR_JSON_NULL);
    cr_expect_eq(v[2].type, KR_JSON_FALSE);
    cr_expect_eq(v[3].type, KR_JSON_NUMBER);
    cr_expect_eq(v[3].n, 6);
    cr_expect_eq(v[4].type, KR_JSON_OBJECT);
    cr_expect_eq(v[5].type, KR_JSON_ABSENT);
    cr_expect_null(v[5].p);
    cr_expect_eq(v[6].type, KR_JSON_ABSENT);

    /* no keys at all still validates */
    cr_expect_eq(kr_json_object_get(js, strlen(js), NULL, NULL, 0), 0);
    cr_expect_eq(kr_json_object_get("{", 1, NULL, NULL, 0), KR_EPARSE);
}

Test(jscan, object_get_escaped_names)
{
    static const char *const keys[] = {"model", "caf\xc3\xa9", "a\"b", "x/y"};
    const char *js = "{\"mo\\u0064el\":\"m\",\"caf\\u00e9\":1,\"a\\\"b\":2,\"x\\/y\":3}";
    kr_jval v[4];
    cr_assert_eq(kr_json_object_get(js, strlen(js), keys, v, 4), 0);
    cr_expect(kr_jval_str_eq(&v[0], "m"));
    cr_expect_eq(v[1].type, KR_JSON_NUMBER);
    cr_expect_eq(v[2].type, KR_JSON_NUMBER);
    cr_expect_eq(v[3].type, KR_JSON_NUMBER);

    const char *all = "{\"\\u006d\\u006F\\u0064\\u0065\\u006c\":1}";
    cr_assert_eq(kr_json_object_get(all, strlen(all), keys, v, 1), 0);
    cr_expect_eq(v[0].type, KR_JSON_NUMBER);

    /* near misses are different names */
    static const char *const near[] = {"model\\u0000", "mode", "models", "Model", "model "};
    for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
        char buf[64];
        int len = snprintf(buf, sizeof buf, "{\"%s\":1}", near[i]);
        cr_assert_eq(kr_json_object_get(buf, (size_t)len, keys, v, 1), 0);
        cr_expect_eq(v[0].type, KR_JSON_ABSENT, "%s", near[i]);
    }
}

Test(jscan, object_get_duplicates)
{
    kr_jval v[4];
    static const char *const dups[] = {
        "{\"model\":\"a\",\"model\":\"b\"}",
        "{\"model\":\"a\",\"x\":1,\"mo\\u0064el\":\"b\"}",
        "{\"mo\\u0064el\":\"a\",\"model\":\"b\"}",
        "{\"stream\":false,\"stream\":true}",
        "{\"model\":\"a\",\"model\":\"a\"}",
    };
    for (size_t i = 0; i < sizeof dups / sizeof *dups; i++) {
        cr_expect_eq(kr_json_object_get(dups[i], strlen(dups[i]), req_keys, v, 4), KR_EPARSE, "%s",
                     dups[i]);
        for (size_t k = 0; k < 4; k++)
            cr_expect_eq(v[k].type, KR_JSON_ABSENT);
        cr_expect_eq(kr_json_validate(dups[i], strlen(dups[i])), 0);
    }
    /* a duplicate that nobody asked for is fine, and so is one below the top */
    const char *ok = "{\"x\":1,\"x\":2,\"model\":\"m\",\"meta\":{\"model\":1,\"model\":2}}";
    cr_expect_eq(kr_json_object_get(ok, strlen(ok), req_keys, v, 4), 0);
    cr_expect(kr_jval_str_eq(&v[0], "m"));
}

Test(jscan, object_get_rejects)
{
    kr_jval v[4];
    static const char *const bad[] = {
        "[1]",
        "\"model\"",
        "null",
        "",
        "{\"model\":\"a\"} x",
        "{\"model\":\"a\",}",
        "{\"model\":\"a\"",
        "{\"model\":\"a\"}}",
        "{\"model\":\"a\",\"b\":[1,]}",
        "{\"model\":01}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(kr_json_object_get(bad[i], strlen(bad[i]), req_keys, v, 4), KR_EPARSE, "%s",
                     bad[i]);
        /* no half results on failure */
        cr_expect_eq(v[0].type, KR_JSON_ABSENT, "%s", bad[i]);
    }
    cr_expect_eq(kr_json_object_get(NULL, 0, req_keys, v, 4), KR_EPARSE);
}

/* ---- kr_json_get ------------------------------------------------------- */

Test(jscan, get_paths)
{
    const char *js = "{\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":"
                     "{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":0}},"
                     "\"arr\":[{\"x\":1}],\"s\":\"str\"}";
    size_t n = strlen(js);
    kr_jval v;
    uint64_t x;
    cr_assert_eq(kr_json_get(js, n, "message.usage.input_tokens", &v), 0);
    cr_expect_eq(kr_jval_u64(&v, &x), 0);
    cr_expect_eq(x, 25);
    cr_assert_eq(kr_json_get(js, n, "message.model", &v), 0);
    cr_expect(kr_jval_str_eq(&v, "claude"));
    cr_assert_eq(kr_json_get(js, n, "message.usage", &v), 0);
    cr_expect_eq(v.type, KR_JSON_OBJECT);
    cr_expect_eq(kr_json_get(js, n, "type", &v), 0);
    cr_expect(kr_jval_str_eq(&v, "message_start"));

    cr_expect_eq(kr_json_get(js, n, "message.usage.nope", &v), KR_ENOTFOUND);
    cr_expect_eq(v.type, KR_JSON_ABSENT);
    cr_expect_eq(kr_json_get(js, n, "nope", &v), KR_ENOTFOUND);
    cr_expect_eq(kr_json_get(js, n, "arr.x", &v), KR_ENOTFOUND); /* arrays not addressed */
    cr_expect_eq(kr_json_get(js, n, "arr.0", &v), KR_ENOTFOUND);
    cr_expect_eq(kr_json_get(js, n, "s.x", &v), KR_ENOTFOUND);
    cr_expect_eq(kr_json_get(js, n, "message.", &v), KR_ENOTFOUND);
    cr_expect_eq(kr_json_get(js, n, ".message", &v), KR_ENOTFOUND);

    /* the empty path is the document itself */
    cr_expect_eq(kr_json_get(" [1] ", 5, "", &v), 0);
    cr_expect_eq(v.type, KR_JSON_ARRAY);
    cr_expect_eq(v.n, 3);
    /* valid non-object: nothing to find */
    cr_expect_eq(kr_json_get("[1]", 3, "a", &v), KR_ENOTFOUND);
    cr_expect_eq(kr_json_get("[1", 2, "a", &v), KR_EPARSE);
    cr_expect_eq(kr_json_get(js, n, NULL, &v), KR_EPARSE);
}

Test(jscan, get_validates_whole_document)
{
    kr_jval v;
    /* the member is found before the error, and after it */
    static const char *const bad[] = {
        "{\"a\":{\"b\":1},\"c\":[1,]}",
        "{\"c\":tru,\"a\":{\"b\":1}}",
        "{\"a\":{\"b\":1,\"z\":01}}",
        "{\"a\":{\"b\":1}} {}",
        "{\"a\":{\"b\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(kr_json_get(bad[i], strlen(bad[i]), "a.b", &v), KR_EPARSE, "%s", bad[i]);
        cr_expect_eq(kr_json_get(bad[i], strlen(bad[i]), "zz", &v), KR_EPARSE, "%s", bad[i]);
    }
}

Test(jscan, get_duplicates_on_the_path)
{
    kr_jval v;
    const char *top = "{\"usage\":{\"a\":1},\"usage\":{\"a\":2}}";
    cr_expect_eq(kr_json_get(top, strlen(top), "usage.a", &v), KR_EPARSE);
    const char *inner = "{\"usage\":{\"a\":1,\"a\":2}}";
    cr_expect_eq(kr_json_get(inner, strlen(inner), "usage.a", &v), KR_EPARSE);
    const char *esc = "{\"usage\":{\"a\":1,\"\\u0061\":2}}";
    cr_expect_eq(kr_json_get(esc, strlen(esc), "usage.a", &v), KR_EPARSE);
    /* duplicates off the path do not matter */
    const char *off = "{\"usage\":{\"a\":1,\"b\":2,\"b\":3},\"x\":1,\"x\":2}";
    cr_expect_eq(kr_json_get(off, strlen(off), "usage.a", &v), 0);
    cr_expect_eq(kr_json_get(off, strlen(off), "usage.b", &v), KR_EPARSE);
}

/* ---- kr_jval_u64 ------------------------------------------------------- */

Test(jscan, u64)
{
    static const struct {
        const char *s;
        int rc;
        uint64_t want;
    } cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"42", 0, 42},
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", KR_EPARSE, 0},
        {"18446744073709551620", KR_EPARSE, 0},
        {"99999999999999999999", KR_EPARSE, 0},
        {"123456789012345678901234567890", KR_EPARSE, 0},
        {"-1", KR_EPARSE, 0},
        {"-0", KR_EPARSE, 0},
        {"1.0", KR_EPARSE, 0},
        {"1e3", KR_EPARSE, 0},
        {"1E3", KR_EPARSE, 0},
        {"01", KR_EPARSE, 0},
        {"", KR_EPARSE, 0},
        {"+1", KR_EPARSE, 0},
        {"1 ", KR_EPARSE, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kr_jval v = jv(KR_JSON_NUMBER, cases[i].s);
        uint64_t x = 7;
        cr_expect_eq(kr_jval_u64(&v, &x), cases[i].rc, "%s", cases[i].s);
        if (cases[i].rc == 0) cr_expect_eq(x, cases[i].want, "%s", cases[i].s);
    }
    /* through the scanner */
    const char *js = "{\"a\":18446744073709551615,\"b\":-5,\"c\":\"5\",\"d\":5.0,\"e\":null}";
    static const char *const keys[] = {"a", "b", "c", "d", "e", "f"};
    kr_jval v[6];
    uint64_t x;
    cr_assert_eq(kr_json_object_get(js, strlen(js), keys, v, 6), 0);
    cr_expect_eq(kr_jval_u64(&v[0], &x), 0);
    cr_expect_eq(x, UINT64_MAX);
    cr_expect_eq(kr_jval_u64(&v[1], &x), KR_EPARSE);
    cr_expect_eq(kr_jval_u64(&v[2], &x), KR_EINVAL); /* a string is not a number */
    cr_expect_eq(kr_jval_u64(&v[3], &x), KR_EPARSE);
    cr_expect_eq(kr_jval_u64(&v[4], &x), KR_EINVAL);
    cr_expect_eq(kr_jval_u64(&v[5], &x), KR_EINVAL);
    cr_expect_eq(kr_jval_u64(NULL, &x), KR_EINVAL);
}

/* ---- kr_jval_str ------------------------------------------------------- */

static int str_of(const char *json, char *out, size_t cap, size_t *len)
{
    kr_jval v;
    int rc = kr_json_get(json, strlen(json), "", &v);
    cr_assert_eq(rc, 0, "%s", json);
    cr_assert_eq(v.type, KR_JSON_STRING);
    return kr_jval_str(&v, out, cap, len);
}

Test(jscan, str_unescape)
{
    static const struct {
        const char *json;
        const char *want;
        size_t wantlen;
    } cases[] = {
        {"\"\"", "", 0},
        {"\"plain\"", "plain", 5},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8},
        {"\"\\u0041\\u00e9\\u00E9\"", "A\xc3\xa9\xc3\xa9", 5},
        {"\"\\u20ac\"", "\xe2\x82\xac", 3},
        {"\"\\uffff\"", "\xef\xbf\xbf", 3},
        {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4},
        {"\"\\uD800\\uDC00\"", "\xf0\x90\x80\x80", 4},
        {"\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4},
        {"\"raw \xc3\xa9 \xf0\x9f\x98\x80\"", "raw \xc3\xa9 \xf0\x9f\x98\x80", 11},
        {"\"a\\u0000b\"", "a\0b", 3},
        {"\"mixed \\\"q\\\" and \\u00e9\\n\"", "mixed \"q\" and \xc3\xa9\n", 17},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[64];
        size_t len = 99;
        cr_expect_eq(str_of(cases[i].json, out, sizeof out, &len), 0, "%s", cases[i].json);
        cr_expect_eq(len, cases[i].wantlen, "%s", cases[i].json);
        cr_expect_eq(memcmp(out, cases[i].want, cases[i].wantlen), 0, "%s", cases[i].json);
        cr_expect_eq(out[len], 0);
    }
}

Test(jscan, str_capacity)
{
    char out[8];
    size_t len;
    /* exact fit: 7 bytes + NUL */
    cr_expect_eq(str_of("\"abcdefg\"", out, sizeof out, &len), 0);
    cr_expect_str_eq(out, "abcdefg");
    cr_expect_eq(len, 7);
    /* one too many: truncated and terminated */
    cr_expect_eq(str_of("\"abcdefgh\"", out, sizeof out, &len), KR_ETOOBIG);
    cr_expect_str_eq(out, "abcdefg");
    cr_expect_eq(len, 7);
    /* never splits a UTF-8 character, raw or escaped */
    cr_expect_eq(str_of("\"abcdef\xc3\xa9\"", out, sizeof out, &len), KR_ETOOBIG);
    cr_expect_str_eq(out, "abcdef");
    cr_expect_eq(str_of("\"abcde\\ud83d\\ude00\"", out, sizeof out, &len), KR_ETOOBIG);
    cr_expect_str_eq(out, "abcde");
    cr_expect_eq(str_of("\"abc\xf0\x9f\x98\x80\"", out, sizeof out, &len), 0);
    cr_expect_eq(len, 7);
    cr_expect_eq(str_of("\"abcd\xf0\x9f\x98\x80\"", out, sizeof out, &len), KR_ETOOBIG);
    cr_expect_str_eq(out, "abcd");
    /* cap 1 holds only the NUL; cap 0 holds nothing */
    cr_expect_eq(str_of("\"a\"", out, 1, &len), KR_ETOOBIG);
    cr_expect_eq(out[0], 0);
    cr_expect_eq(str_of("\"\"", out, 1, &len), 0);
    cr_expect_eq(str_of("\"a\"", out, 0, NULL), KR_ETOOBIG);
}

Test(jscan, str_rejects)
{
    char out[16];
    kr_jval num = jv(KR_JSON_NUMBER, "1");
    cr_expect_eq(kr_jval_str(&num, out, sizeof out, NULL), KR_EINVAL);
    cr_expect_eq(kr_jval_str(NULL, out, sizeof out, NULL), KR_EINVAL);
    /* hand-made spans that are not strings */
    static const char *const bad[] = {"\"", "abc", "\"abc", "\"a\\\"", "\"\\ud800\"", "\"\\x\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kr_jval v = jv(KR_JSON_STRING, bad[i]);
        cr_expect_eq(kr_jval_str(&v, out, sizeof out, NULL), KR_EINVAL, "%s", bad[i]);
        cr_expect_not(kr_jval_str_eq(&v, ""), "%s", bad[i]);
    }
}

Test(jscan, str_eq)
{
    kr_jval v = jv(KR_JSON_STRING, "\"message\\u005fdelta\"");
    cr_expect(kr_jval_str_eq(&v, "message_delta"));
    cr_expect_not(kr_jval_str_eq(&v, "message_delt"));
    cr_expect_not(kr_jval_str_eq(&v, "message_deltas"));
    cr_expect_not(kr_jval_str_eq(&v, NULL));
    kr_jval e = jv(KR_JSON_STRING, "\"\"");
    cr_expect(kr_jval_str_eq(&e, ""));
    kr_jval u = jv(KR_JSON_STRING, "\"caf\\u00e9\"");
    cr_expect(kr_jval_str_eq(&u, "caf\xc3\xa9"));
    kr_jval n = jv(KR_JSON_NUMBER, "1");
    cr_expect_not(kr_jval_str_eq(&n, "1"));
    kr_jval z = jv(KR_JSON_STRING, "\"a\\u0000\"");
    cr_expect_not(kr_jval_str_eq(&z, "a"));
}

/* ---- a Claude-Code-sized body ------------------------------------------ */

Test(jscan, large_request_body)
{
    /* ~200 KB: long system text with escapes and UTF-8, tools, messages */
    size_t cap = 256 * 1024, n = 0;
    char *p = malloc(cap);
#define PUT(s)                                                                                     \
    do {                                                                                           \
        size_t l_ = strlen(s);                                                                     \
        cr_assert_lt(n + l_, cap);                                                                 \
        memcpy(p + n, (s), l_);                                                                    \
        n += l_;                                                                                   \
    } while (0)
    PUT("{\"system\":[{\"type\":\"text\",\"text\":\"");
    for (int i = 0; i < 2000; i++)
        PUT("You are Claude Code \xe2\x80\x94 \\\"model\\\": x\\n");
    PUT("\"}],\"tools\":[");
    for (int i = 0; i < 100; i++) {
        PUT(i ? "," : "");
        PUT("{\"name\":\"Read\",\"description\":\"Reads a file\\tfrom disk\",\"input_schema\":"
            "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"}},"
            "\"required\":[\"path\"]}}");
    }
    PUT("],\"messages\":[");
    for (int i = 0; i < 400; i++) {
        PUT(i ? "," : "");
        PUT("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"line\\nline "
            "\\u00e9\\ud83d\\ude00 \\\"model\\\":\\\"gpt\\\"\"}]}");
    }
    PUT("],\"model\":\"claude-opus-4-1\",\"max_tokens\":32000,\"stream\":true}");
#undef PUT
    kr_jval v[4];
    cr_assert_eq(kr_json_validate(p, n), 0);
    cr_assert_eq(kr_json_object_get(p, n, req_keys, v, 4), 0);
    cr_expect(kr_jval_str_eq(&v[0], "claude-opus-4-1"));
    cr_expect_eq(v[1].type, KR_JSON_TRUE);
    uint64_t mt;
    cr_expect_eq(kr_jval_u64(&v[2], &mt), 0);
    cr_expect_eq(mt, 32000);
    cr_expect_eq(v[3].type, KR_JSON_ABSENT);
    /* one broken byte deep inside is found */
    char *mid = memmem(p, n, "line\\nline", 10);
    cr_assert_not_null(mid);
    mid[4] = '\x01';
    cr_expect_eq(kr_json_object_get(p, n, req_keys, v, 4), KR_EPARSE);
    free(p);
}

Test(jscan, array_elements_in_turn_and_by_index)
{
    const char *doc = "{\"a\": [ {\"x\":1} , \"s,]\" ,[1,[2]], null ]}";
    kr_jval a, e;
    cr_assert_eq(kr_json_get(doc, strlen(doc), "a", &a), 0);
    cr_assert_eq(a.type, KR_JSON_ARRAY);
    const char *pos = NULL;
    kr_json_type want[] = {KR_JSON_OBJECT, KR_JSON_STRING, KR_JSON_ARRAY, KR_JSON_NULL};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(kr_json_array_next(&a, &pos, &e), 0, "element %zu", i);
        cr_assert_eq(e.type, want[i]);
    }
    cr_assert_eq(kr_json_array_next(&a, &pos, &e), KR_ENOTFOUND);
    cr_assert_eq(kr_json_array_at(&a, 2, &e), 0);
    cr_assert_eq(e.n, 7); /* [1,[2]] */
    cr_assert_eq(kr_json_array_at(&a, 4, &e), KR_ENOTFOUND);
    kr_jval empty = {KR_JSON_ARRAY, "[ ]", 3}, bad = {KR_JSON_ARRAY, "[1 2]", 5},
            notarr = {KR_JSON_OBJECT, "{}", 2};
    pos = NULL;
    cr_assert_eq(kr_json_array_next(&empty, &pos, &e), KR_ENOTFOUND);
    cr_assert_eq(kr_json_array_at(&bad, 1, &e), KR_EPARSE);
    cr_assert_eq(kr_json_array_at(&notarr, 0, &e), KR_EPARSE);
}
