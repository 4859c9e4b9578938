/*
 * fuzz_jscan.c -- libFuzzer driver for the JSON scanner.
 *
 * Runs every entry point on the input and checks them against each other and
 * against cJSON. cJSON is laxer than jscan: any byte <= 0x20 is whitespace,
 * a leading BOM is skipped, numbers go through strtod ("01", "+1", "1."
 * pass), controls and invalid UTF-8 inside strings pass, it nests to 1000.
 * It is stricter in one place: a number of 64+ characters is cut by its
 * fixed buffer and then fails. And a member name holding \u0000 is cut at
 * the NUL, so cJSON may see a name that jscan does not. So the checks are:
 *   jscan accepts                       => cJSON accepts (unless a 63+ char number)
 *   cJSON accepts, its re-print is ASCII and nests <= 128 deep
 *                                       => jscan accepts the re-print
 *   jscan rejects                       => every lookup rejects too
 *   a lookup finds a value              => the value is valid JSON on its own,
 *                                          strings unescape exactly as cJSON does
 *   object_get reports a duplicate      => cJSON has two members of that name
 */
#include "fuzz_check.h"
#include "core/err.h"
#include "proxy/jscan.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static const char *const keys[] = {"model", "stream", "max_tokens", "stream_options", "", "usage"};
#define NKEYS (sizeof keys / sizeof *keys)
static const char *const paths[] = {
    "", "model", "message.usage.input_tokens", "usage.prompt_tokens", "a.b", "usage"};

/* A run of characters cJSON copies into its 64-byte number buffer. */
static bool has_long_number(const uint8_t *d, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = d[i];
        bool num =
            (c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'e' || c == 'E' || c == '.';
        run = num ? run + 1 : 0;
        if (run >= 63) return true;
    }
    return false;
}

static int cjson_depth(const cJSON *j)
{
    int best = 0;
    for (const cJSON *c = j->child; c; c = c->next) {
        int k = cjson_depth(c);
        if (k > best) best = k;
    }
    return (cJSON_IsArray(j) || cJSON_IsObject(j)) ? best + 1 : best;
}

static int cjson_count(const cJSON *obj, const char *name)
{
    int k = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && !strcmp(c->string, name)) k++;
    return k;
}

static bool first_is_object(const char *js, size_t n)
{
    size_t i = 0;
    while (i < n && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r'))
        i++;
    return i < n && js[i] == '{';
}

/* Checks a value handed out by a lookup; c is cJSON's view of it or NULL. */
static void check_value(const kr_jval *v, const char *js, size_t n, const cJSON *c)
{
    CHECK(v->type != KR_JSON_ABSENT);
    CHECK(v->p >= js && v->n > 0 && v->n <= n && (size_t)(v->p - js) <= n - v->n);
    CHECK(kr_json_validate(v->p, v->n) == 0);

    uint64_t x;
    int ru = kr_jval_u64(v, &x);
    if (v->type != KR_JSON_NUMBER) CHECK(ru == KR_EINVAL);
    if (ru == 0) {
        CHECK(v->p[0] != '-' && (v->p[0] != '0' || v->n == 1));
        for (size_t i = 0; i < v->n; i++)
            CHECK(v->p[i] >= '0' && v->p[i] <= '9');
        if (c) CHECK(cJSON_IsNumber(c) && (double)x == c->valuedouble);
    }

    if (v->type != KR_JSON_STRING) {
        char tiny[4];
        CHECK(kr_jval_str(v, tiny, sizeof tiny, NULL) == KR_EINVAL);
        CHECK(!kr_jval_str_eq(v, ""));
        return;
    }
    /* unescaping never grows: n bytes always suffice */
    char *out = malloc(v->n + 1);
    size_t len = 0;
    CHECK(kr_jval_str(v, out, v->n + 1, &len) == 0);
    CHECK(len <= v->n && out[len] == 0);
    bool has_nul = memchr(out, 0, len) != NULL;
    if (!has_nul) CHECK(kr_jval_str_eq(v, out));
    if (c && !has_nul) {
        CHECK(cJSON_IsString(c));
        CHECK(strlen(c->valuestring) == len && memcmp(c->valuestring, out, len) == 0);
    }
    /* every smaller buffer gets a terminated prefix */
    for (size_t cap = 0; cap <= len && cap < 16; cap++) {
        char small[16];
        size_t sl = 99;
        int rc = kr_jval_str(v, small, cap, &sl);
        CHECK(rc == KR_ETOOBIG || (rc == 0 && cap == len + 1));
        if (cap) {
            CHECK(sl < cap && small[sl] == 0);
            CHECK(memcmp(small, out, sl) == 0);
        }
    }
    free(out);
}

static void check_types(const kr_jval *v, const cJSON *c)
{
    switch (v->type) {
    case KR_JSON_STRING:
        CHECK(cJSON_IsString(c));
        break;
    case KR_JSON_NUMBER:
        CHECK(cJSON_IsNumber(c));
        break;
    case KR_JSON_TRUE:
        CHECK(cJSON_IsTrue(c));
        break;
    case KR_JSON_FALSE:
        CHECK(cJSON_IsFalse(c));
        break;
    case KR_JSON_NULL:
        CHECK(cJSON_IsNull(c));
        break;
    case KR_JSON_OBJECT:
        CHECK(cJSON_IsObject(c));
        break;
    case KR_JSON_ARRAY:
        CHECK(cJSON_IsArray(c));
        break;
    default:
        CHECK(0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    /* an exact-size copy: any read past the end is an ASan report */
    char *js = malloc(n ? n : 1);
    memcpy(js, d, n);

    int valid = kr_json_validate(js, n);
    CHECK(valid == 0 || valid == KR_EPARSE);

    cJSON *cj = NULL;
    bool cj_comparable = !has_long_number(d, n);
    {
        char *z = malloc(n + 1);
        memcpy(z, d, n);
        z[n] = 0;
        cj = cJSON_ParseWithLengthOpts(z, n + 1, NULL, 1);
        free(z);
    }
    if (valid == 0 && cj_comparable) CHECK(cj != NULL);
    if (cj && cj_comparable && cjson_depth(cj) <= KR_JSON_MAX_DEPTH) {
        char *re = cJSON_PrintUnformatted(cj);
        if (re) {
            bool ascii = true;
            for (const char *p = re; *p; p++)
                if ((unsigned char)*p >= 0x80) ascii = false;
            /* cJSON prints escapes for controls, %g numbers (inf as null),
             * but raw bytes >= 0x80 even when they are not UTF-8 */
            if (ascii) CHECK(kr_json_validate(re, strlen(re)) == 0);
            cJSON_free(re);
        }
    }
    if (valid != 0 || !cj_comparable) {
        cJSON_Delete(cj);
        cj = NULL;
    }

    /* top-level members */
    kr_jval v[NKEYS];
    int rg = kr_json_object_get(js, n, keys, v, NKEYS);
    CHECK(rg == 0 || rg == KR_EPARSE);
    if (valid != 0 || !first_is_object(js, n)) CHECK(rg == KR_EPARSE);
    if (rg != 0) {
        for (size_t i = 0; i < NKEYS; i++)
            CHECK(v[i].type == KR_JSON_ABSENT && v[i].p == NULL);
        if (valid == 0 && first_is_object(js, n) && cj) {
            bool dup = false;
            for (size_t i = 0; i < NKEYS; i++)
                if (cjson_count(cj, keys[i]) >= 2) dup = true;
            CHECK(dup);
        }
    } else {
        CHECK(valid == 0);
        for (size_t i = 0; i < NKEYS; i++) {
            if (v[i].type == KR_JSON_ABSENT) continue;
            const cJSON *c = NULL;
            if (cj) {
                CHECK(cjson_count(cj, keys[i]) >= 1);
                if (cjson_count(cj, keys[i]) == 1) {
                    c = cJSON_GetObjectItemCaseSensitive(cj, keys[i]);
                    check_types(&v[i], c);
                }
            }
            check_value(&v[i], js, n, c);
        }
    }

    /* dotted paths */
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        kr_jval pv;
        int rp = kr_json_get(js, n, paths[i], &pv);
        CHECK(rp == 0 || rp == KR_ENOTFOUND || rp == KR_EPARSE);
        if (valid != 0) CHECK(rp == KR_EPARSE);
        if (rp != 0) {
            CHECK(pv.type == KR_JSON_ABSENT);
            continue;
        }
        check_value(&pv, js, n, NULL);
        if (cj && paths[i][0] && !memmem(d, n, "\\u0000", 6)) {
            /* walk cJSON the same way: it must find something there too */
            const cJSON *c = cj;
            char seg[64];
            const char *p = paths[i];
            while (c && *p) {
                size_t k = strcspn(p, ".");
                memcpy(seg, p, k);
                seg[k] = 0;
                c = cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, seg) : NULL;
                p += k + (p[k] == '.');
            }
            CHECK(c != NULL);
        }
    }

    /* hand-made spans: the extractors must cope with anything */
    kr_jval raw = {KR_JSON_STRING, js, n};
    char buf[32];
    size_t bl;
    int rs = kr_jval_str(&raw, buf, sizeof buf, &bl);
    CHECK(rs == 0 || rs == KR_ETOOBIG || rs == KR_EINVAL);
    CHECK(bl < sizeof buf && buf[bl] == 0);
    (void)kr_jval_str_eq(&raw, "model");
    raw.type = KR_JSON_NUMBER;
    uint64_t x;
    int ru = kr_jval_u64(&raw, &x);
    CHECK(ru == 0 || ru == KR_EPARSE);

    cJSON_Delete(cj);
    free(js);
    return 0;
}
