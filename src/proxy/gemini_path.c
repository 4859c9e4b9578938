/*
 * gemini_path.c -- the Gemini API's request line (gemini_path.h).
 */
#include "proxy/gemini_path.h"

#include <string.h>

static bool model_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static bool eq(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && !memcmp(p, lit, l);
}

int kr_gemini_path_parse(const char *path, size_t n, kr_gem_path *out)
{
    static const char *const actions[] = {":generateContent", ":streamGenerateContent",
                                          ":countTokens"};
    if (n < 8 || memcmp(path, "/gemini/", 8)) return -1;
    const char *p = path + 8, *e = path + n;
    const char *ver = p;
    while (p < e && *p != '/') p++;
    size_t vn = (size_t)(p - ver);
    if (!eq(ver, vn, "v1beta") && !eq(ver, vn, "v1")) return -1;
    memcpy(out->version, ver, vn);
    out->version[vn] = 0;
    out->model[0] = 0;
    if ((size_t)(e - p) < 7 || memcmp(p, "/models", 7)) return -1;
    p += 7;
    if (p == e) {
        out->action = KR_GEM_LIST;
        return 0;
    }
    if (*p++ != '/') return -1;
    const char *m = p;
    while (p < e && model_char(*p)) p++;
    size_t mn = (size_t)(p - m);
    if (!mn || mn >= sizeof out->model) return -1;
    memcpy(out->model, m, mn);
    out->model[mn] = 0;
    if (p == e) {
        out->action = KR_GEM_MODEL;
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if (eq(p, (size_t)(e - p), actions[i])) {
            out->action = (kr_gem_action)i;
            return 0;
        }
    return -1;
}

int kr_gemini_query_parse(const char *q, size_t n, bool stream, kr_gem_query *out)
{
    memset(out, 0, sizeof *out);
    const char *p = q, *e = q + n;
    while (p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        if (!amp) amp = e;
        size_t kn = (size_t)(amp - p);
        if (stream && eq(p, kn, "alt=sse")) {
            out->alt_sse = true;
        } else if (stream && eq(p, kn, "alt=json")) {
            out->alt_sse = false;
        } else if (kn > 4 && !memcmp(p, "key=", 4) && !out->key) {
            out->key = p + 4;
            out->key_n = kn - 4;
        } else {
            return -1;
        }
        p = amp < e ? amp + 1 : e;
    }
    return 0;
}
