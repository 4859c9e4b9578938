/*
 * fuzz_gemini_path.c -- libFuzzer driver for the Gemini API's request line
 * (src/proxy/gemini_path.c).
 *
 * The input is split at its first '?': before it a path, after it a query.
 * Checked:
 *   - kr_gemini_path_parse returns 0 or -1; on 0 the version is v1beta or
 *     v1, the model NUL-terminated, shorter than KR_GEM_MODEL_MAX, of
 *     [A-Za-z0-9._-] only, empty exactly for the list; and rendering the
 *     parts again gives back the input path, byte for byte (nothing is
 *     dropped or normalised on the way to the vendor);
 *   - a path with "/gemini/" prefixed to the input is also parsed, so the
 *     fuzzer does not have to find the prefix;
 *   - kr_gemini_query_parse returns 0 or -1 for a stream and a non-stream
 *     route; on 0 the key (if any) lies inside the query and does not
 *     contain '&'; alt= is accepted only on the stream route; a query
 *     accepted for a non-stream route is accepted for the stream route with
 *     the same key.
 */
#include "fuzz_check.h"
#include "proxy/gemini_path.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_path(const char *p, size_t n)
{
    kr_gem_path g;
    int rc = kr_gemini_path_parse(p, n, &g);
    CHECK(rc == 0 || rc == -1);
    if (rc) return;
    CHECK(!strcmp(g.version, "v1beta") || !strcmp(g.version, "v1"));
    size_t ml = strnlen(g.model, sizeof g.model);
    CHECK(ml < sizeof g.model);
    for (size_t i = 0; i < ml; i++) {
        char c = g.model[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_');
    }
    CHECK((g.action == KR_GEM_LIST) == (ml == 0));
    static const char *const act[] = {":generateContent", ":streamGenerateContent", ":countTokens", "", ""};
    CHECK((unsigned)g.action <= KR_GEM_MODEL);
    char back[512];
    int w = snprintf(back, sizeof back, "/gemini/%s/models%s%s%s", g.version, ml ? "/" : "", g.model,
                     act[g.action]);
    CHECK(w > 0 && (size_t)w == n && !memcmp(back, p, n));
}

static void check_query(const char *q, size_t n)
{
    kr_gem_query s, o;
    int rs = kr_gemini_query_parse(q, n, true, &s);
    int ro = kr_gemini_query_parse(q, n, false, &o);
    CHECK(rs == 0 || rs == -1);
    CHECK(ro == 0 || ro == -1);
    if (ro == 0) {
        CHECK(rs == 0);
        CHECK(!o.alt_sse);
        CHECK(o.key == s.key && o.key_n == s.key_n);
    }
    if (rs == 0 && s.key) {
        CHECK(s.key >= q + 4 && s.key + s.key_n <= q + n);
        CHECK(s.key_n > 0 && !memchr(s.key, '&', s.key_n));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    const char *in = (const char *)d;
    const char *qm = memchr(in, '?', n);
    size_t pn = qm ? (size_t)(qm - in) : n;
    /* exact-size copies, so ASan sees every overread */
    char *path = malloc(pn ? pn : 1);
    memcpy(path, in, pn);
    check_path(path, pn);
    char *pre = malloc(pn + 8);
    memcpy(pre, "/gemini/", 8);
    memcpy(pre + 8, in, pn);
    check_path(pre, pn + 8);
    free(pre);
    free(path);
    if (qm) {
        size_t qn = n - pn - 1;
        char *q = malloc(qn ? qn : 1);
        memcpy(q, qm + 1, qn);
        check_query(q, qn);
        free(q);
    }
    return 0;
}
