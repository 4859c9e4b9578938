#include "core/cred.h"
#include "core/err.h"

#include <sodium.h>
#include <string.h>
#include <strings.h>

static const char *const names[] = {
#define X(n, s) s,
    KR_CRED_MAP(X)
#undef X
};

const char *kr_cred_class_name(kr_cred_class c)
{
    if ((unsigned)c >= sizeof names / sizeof names[0]) return "unknown";
    return names[c];
}

static bool starts(const char *s, size_t n, const char *p)
{
    size_t l = strlen(p);
    return n >= l && memcmp(s, p, l) == 0;
}

kr_cred_class kr_cred_classify(const char *s, size_t n)
{
    if (!s || n == 0) return KR_CRED_NONE;
    if (starts(s, n, KR_WS_TOKEN_PREFIX)) return KR_CRED_WORKSPACE_TOKEN;
    if (starts(s, n, KR_ADMIN_TOKEN_PREFIX)) return KR_CRED_ADMIN_TOKEN;
    if (starts(s, n, "sk-ant-oat")) return KR_CRED_ANTHROPIC_OAUTH;
    if (starts(s, n, "sk-ant-ort")) return KR_CRED_ANTHROPIC_OAUTH; /* refresh token */
    if (starts(s, n, "sk-ant-api") || starts(s, n, "sk-ant-admin")) return KR_CRED_ANTHROPIC_API_KEY;
    if (starts(s, n, "sk-ant-")) return KR_CRED_ANTHROPIC_API_KEY;
    if (starts(s, n, "sk-proj-") || starts(s, n, "sk-svcacct-") || starts(s, n, "sk-admin-"))
        return KR_CRED_OPENAI_KEY;
    /* a bare "sk-" key may be OpenAI's (legacy) or another vendor's (DeepSeek,
     * …): a vendor key, but not one whose issuer can be told by its shape */
    if (starts(s, n, "sk-") && n >= 20) return KR_CRED_VENDOR_KEY;
    /* Google: API keys are "AIza" + 35 characters; OAuth access tokens "ya29." */
    if (starts(s, n, "AIza") && n >= 30) return KR_CRED_GOOGLE_KEY;
    if (starts(s, n, "ya29.") && n >= 20) return KR_CRED_GOOGLE_OAUTH;
    return KR_CRED_UNKNOWN;
}

bool kr_cred_is_vendor(kr_cred_class c)
{
    return c == KR_CRED_ANTHROPIC_OAUTH || c == KR_CRED_ANTHROPIC_API_KEY ||
           c == KR_CRED_OPENAI_KEY || c == KR_CRED_GOOGLE_KEY || c == KR_CRED_GOOGLE_OAUTH ||
           c == KR_CRED_VENDOR_KEY;
}

void kr_cred_fingerprint(const char *s, size_t n, char out[KR_FP_LEN])
{
    static const unsigned char key[crypto_generichash_KEYBYTES] = "keyrail credential fingerprint";
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)s, n, key, sizeof key);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 4; i++) {
        out[2 * i] = hx[h[i] >> 4];
        out[2 * i + 1] = hx[h[i] & 15];
    }
    out[8] = 0;
}

size_t kr_cred_span(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=')
            i++;
        else
            break;
    }
    return i;
}

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* The credential starting at s[i] (a prefix match at a word start), or NONE. */
static kr_cred_class cred_at(const char *s, size_t n, size_t i, size_t pl, size_t *len)
{
    if (i > 0 && key_char((unsigned char)s[i - 1])) return KR_CRED_NONE; /* inside a word */
    size_t span = pl, digits = 0;
    while (i + span < n && key_char((unsigned char)s[i + span])) {
        if (s[i + span] >= '0' && s[i + span] <= '9') digits++;
        span++;
    }
    if (span < pl + 16) return KR_CRED_NONE;
    kr_cred_class c = kr_cred_classify(s + i, span);
    /* a bare "sk-…" word is a key only if it looks random (has digits):
     * "sk-learn-tutorial-files" in a path is not */
    if (c == KR_CRED_NONE || c == KR_CRED_UNKNOWN || (c == KR_CRED_VENDOR_KEY && !digits))
        return KR_CRED_NONE;
    *len = span;
    return c;
}

kr_cred_class kr_cred_find(const char *s, size_t n, size_t *off, size_t *len)
{
    static const char *const pre[] = {KR_WS_TOKEN_PREFIX, KR_ADMIN_TOKEN_PREFIX, "sk-", "AIza", "ya29."};
    size_t best = n, blen = 0;
    kr_cred_class bc = KR_CRED_NONE;
    for (size_t k = 0; k < sizeof pre / sizeof pre[0]; k++) {
        size_t pl = strlen(pre[k]);
        for (const char *p = s; p && (size_t)(p - s) < best;) {
            p = memmem(p, n - (size_t)(p - s), pre[k], pl);
            if (!p || (size_t)(p - s) >= best) break;
            size_t l;
            kr_cred_class c = cred_at(s, n, (size_t)(p - s), pl, &l);
            if (c != KR_CRED_NONE) {
                best = (size_t)(p - s), blen = l, bc = c;
                break;
            }
            p++;
        }
    }
    if (bc != KR_CRED_NONE) {
        if (off) *off = best;
        if (len) *len = blen;
    }
    return bc;
}

int kr_url_origin(const char *url, char *out, size_t cap)
{
    const char *p;
    const char *defport;
    const char *scheme;
    if (!strncasecmp(url, "https://", 8)) p = url + 8, defport = "443", scheme = "https";
    else if (!strncasecmp(url, "http://", 7)) p = url + 7, defport = "80", scheme = "http";
    else return KR_EINVAL;
    const char *e = p;
    while (*e && *e != '/' && *e != '?' && *e != '#') e++;
    if (e == p || memchr(p, '@', (size_t)(e - p))) return KR_EINVAL; /* no host, or userinfo */
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(e - p));
        if (!rb) return KR_EINVAL;
        if (rb + 1 < e) {
            if (rb[1] != ':') return KR_EINVAL;
            colon = rb + 1;
        }
    } else {
        colon = memchr(p, ':', (size_t)(e - p));
    }
    const char *he = colon ? colon : e;
    if (he == p) return KR_EINVAL;
    const char *port = colon ? colon + 1 : defport;
    size_t portlen = colon ? (size_t)(e - colon - 1) : strlen(defport);
    if (portlen == 0 || portlen > 5) return KR_EINVAL;
    unsigned pv = 0;
    for (size_t i = 0; i < portlen; i++) {
        if (port[i] < '0' || port[i] > '9') return KR_EINVAL;
        pv = pv * 10 + (unsigned)(port[i] - '0');
    }
    if (pv == 0 || pv > 65535) return KR_EINVAL;
    size_t need = strlen(scheme) + 3 + (size_t)(he - p) + 1 + portlen + 1;
    if (need > cap) return KR_EINVAL;
    size_t o = 0;
    for (const char *s = scheme; *s; s++) out[o++] = *s;
    out[o++] = ':', out[o++] = '/', out[o++] = '/';
    for (const char *s = p; s < he; s++) {
        char c = *s;
        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[o++] = ':';
    memcpy(out + o, port, portlen);
    o += portlen;
    out[o] = 0;
    return 0;
}
