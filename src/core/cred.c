#include "core/cred.h"

#include <sodium.h>
#include <string.h>

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
    if (starts(s, n, "sk-ant-oat")) return KR_CRED_ANTHROPIC_OAUTH;
    if (starts(s, n, "sk-ant-ort")) return KR_CRED_ANTHROPIC_OAUTH; /* refresh token */
    if (starts(s, n, "sk-ant-api") || starts(s, n, "sk-ant-admin")) return KR_CRED_ANTHROPIC_API_KEY;
    if (starts(s, n, "sk-ant-")) return KR_CRED_ANTHROPIC_API_KEY;
    if (starts(s, n, "sk-proj-") || starts(s, n, "sk-svcacct-") || starts(s, n, "sk-admin-"))
        return KR_CRED_OPENAI_KEY;
    if (starts(s, n, "sk-") && n >= 20) return KR_CRED_OPENAI_KEY;
    return KR_CRED_UNKNOWN;
}

bool kr_cred_is_vendor(kr_cred_class c)
{
    return c == KR_CRED_ANTHROPIC_OAUTH || c == KR_CRED_ANTHROPIC_API_KEY ||
           c == KR_CRED_OPENAI_KEY || c == KR_CRED_VENDOR_KEY;
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
