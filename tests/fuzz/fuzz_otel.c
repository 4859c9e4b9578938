/*
 * fuzz_otel.c -- libFuzzer driver for the trace context parser and the
 * OTLP/JSON renderer (src/otel/otel.c).
 *
 * Checked:
 *   - kr_traceparent_parse returns 0 or -1; on 0 the ids are not all zero,
 *     and for a version-00 value (55 characters after trimming) formatting
 *     the parsed fields gives the value back, byte for byte;
 *   - a formatted traceparent always parses back to the same fields;
 *   - a span whose string fields are arbitrary bytes from the input renders
 *     to one JSON document that cJSON parses, with the span's ids in it.
 */
#include "fuzz_check.h"
#include "otel/otel.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void fill(char *dst, size_t cap, const uint8_t **p, size_t *left)
{
    size_t k = *left ? (size_t)(**p) % cap : 0;
    if (*left) (*p)++, (*left)--;
    if (k > *left) k = *left;
    memcpy(dst, *p, k);
    dst[k] = 0; /* a NUL inside ends the string early: fine */
    *p += k;
    *left -= k;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    uint8_t t[16], s[8], f;
    const char *v = (const char *)d;
    int rc = kr_traceparent_parse(v, n, t, s, &f);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        bool tz = true, sz = true;
        for (int i = 0; i < 16; i++) tz &= t[i] == 0;
        for (int i = 0; i < 8; i++) sz &= s[i] == 0;
        CHECK(!tz && !sz);
        size_t a = 0, b = n;
        while (a < b && (v[a] == ' ' || v[a] == '\t')) a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t')) b--;
        if (b - a == 55 && v[a] == '0' && v[a + 1] == '0') {
            char out[56];
            kr_traceparent_format(t, s, f, out);
            CHECK(memcmp(out, v + a, 55) == 0);
        }
    }
    /* format -> parse round trip on ids taken from the input */
    if (n >= 25) {
        uint8_t t2[16], s2[8], f2;
        char out[56];
        memcpy(t, d, 16);
        memcpy(s, d + 16, 8);
        f = d[24];
        kr_traceparent_format(t, s, f, out);
        CHECK(strlen(out) == 55);
        bool zero = true;
        for (int i = 0; i < 16; i++) zero &= t[i] == 0;
        bool szero = true;
        for (int i = 0; i < 8; i++) szero &= s[i] == 0;
        rc = kr_traceparent_parse(out, 55, t2, s2, &f2);
        CHECK(rc == ((zero || szero) ? -1 : 0));
        if (!rc) CHECK(!memcmp(t, t2, 16) && !memcmp(s, s2, 8) && f == f2);
    }
    /* a span of arbitrary strings renders to valid JSON */
    kr_span sp;
    memset(&sp, 0, sizeof sp);
    const uint8_t *p = d;
    size_t left = n;
    fill(sp.operation, sizeof sp.operation, &p, &left);
    fill(sp.system, sizeof sp.system, &p, &left);
    fill(sp.model, sizeof sp.model, &p, &left);
    fill(sp.request_id, sizeof sp.request_id, &p, &left);
    fill(sp.error_type, sizeof sp.error_type, &p, &left);
    fill(sp.route, sizeof sp.route, &p, &left);
    memcpy(sp.trace_id, "\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef", 16);
    memcpy(sp.span_id, "\xfe\xdc\xba\x98\x76\x54\x32\x10", 8);
    sp.has_parent = n & 1;
    sp.usage = n & 2;
    sp.status = (int)(n % 600);
    sp.input_tokens = n * 1000003u;
    sp.org_id = -(int64_t)n;
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_span two[2] = {sp, sp};
    kr_otel_render(two, 1 + (n & 1), "svc\"\\\n", &b);
    CHECK(b.len > 0 && b.len < b.max);
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    CHECK(j != NULL);
    cJSON_Delete(j);
    CHECK(memmem(b.data, b.len, "\"0123456789abcdef0123456789abcdef\"", 34) != NULL);
    kr_buf_free(&b);
    return 0;
}
