/*
 * fv_util.c -- the fake vendor's protocol-independent helpers: JSON string
 * escaping, SHA-256 and the credential classes (credential fingerprints in
 * the record), query parameters, the override parser ("[[fake k=v]]",
 * x-fake, x-fake-KEY) and the scan of the request body's top-level keys.
 * See fv.h.
 */

#include "fv.h"

/* ------------------------------------------------------------------------ */
/* Buffers and JSON strings                                                  */

void fv_die(const char *msg)
{
    fprintf(stderr, "keyrail-fakevendor: %s\n", msg);
    exit(1);
}

void fv_buf_grow(buf_t *b, size_t need)
{
    size_t nc = b->cap ? b->cap : 256;
    while (nc < need)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np)
        fv_die("out of memory");
    b->p = np;
    b->cap = nc;
}

/* Length of a valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0;
        if (c == 0xED && s[1] > 0x9F)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0;
        if (c == 0xF4 && s[1] > 0x8F)
            return 0;
        return 4;
    }
    return 0;
}

/* Append s as JSON string contents (no quotes); invalid UTF-8 -> U+FFFD. */
void fv_buf_jesc(buf_t *b, const char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    buf_reserve(b, n + 2);
    while (i < n) {
        size_t j = i;
        while (j < n && u[j] >= 0x20 && u[j] < 0x80 && u[j] != '"' && u[j] != '\\')
            j++;
        buf_put(b, s + i, j - i);
        if (j >= n)
            break;
        i = j;
        unsigned c = u[i];
        if (c < 0x80) {
            char e[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
            switch (c) {
            case '"': BUF_LIT(b, "\\\""); break;
            case '\\': BUF_LIT(b, "\\\\"); break;
            case '\n': BUF_LIT(b, "\\n"); break;
            case '\r': BUF_LIT(b, "\\r"); break;
            case '\t': BUF_LIT(b, "\\t"); break;
            default: buf_put(b, e, 6); break;
            }
            i++;
            continue;
        }
        size_t l = utf8_len(u + i, n - i);
        if (l) {
            buf_put(b, s + i, l);
            i += l;
        } else {
            BUF_LIT(b, "\\ufffd");
            i++;
        }
    }
}

static bool is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Is s (raw contents of a JSON string) valid to emit verbatim between quotes? */
bool fv_json_raw_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x20 || c == '"')
            return false;
        if (c == '\\') {
            if (i + 1 >= n)
                return false;
            unsigned d = u[i + 1];
            if (d == '"' || d == '\\' || d == '/' || d == 'b' || d == 'f' || d == 'n' || d == 'r' ||
                d == 't') {
                i += 2;
            } else if (d == 'u' && i + 5 < n && is_hex(u[i + 2]) && is_hex(u[i + 3]) &&
                       is_hex(u[i + 4]) && is_hex(u[i + 5])) {
                i += 6;
            } else {
                return false;
            }
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_len(u + i, n - i);
            if (!l)
                return false;
            i += l;
            continue;
        }
        i++;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4)                                                      */

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char blk[64];
    size_t n;
} sha256_t;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_t *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K256[i] + w[i];
        uint32_t S0 = ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha256_init(sha256_t *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->n = 0;
}

static void sha256_update(sha256_t *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->bytes += len;
    if (s->n) {
        size_t take = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->blk + s->n, p, take);
        s->n += take;
        p += take;
        len -= take;
        if (s->n < 64)
            return;
        sha256_block(s, s->blk);
        s->n = 0;
    }
    while (len >= 64) {
        sha256_block(s, p);
        p += 64;
        len -= 64;
    }
    memcpy(s->blk, p, len);
    s->n = len;
}

static void sha256_final(sha256_t *s, unsigned char out[32])
{
    uint64_t bits = s->bytes * 8;
    s->blk[s->n++] = 0x80;
    if (s->n > 56) {
        memset(s->blk + s->n, 0, 64 - s->n);
        sha256_block(s, s->blk);
        s->n = 0;
    }
    memset(s->blk + s->n, 0, 56 - s->n);
    for (int i = 0; i < 8; i++)
        s->blk[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(s, s->blk);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

void fv_sha256(const void *data, size_t len, unsigned char out[32])
{
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, out);
}

void fv_hex32(char out[64], const unsigned char d[32])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
}

static int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A credential (its value, "Bearer " already stripped): its class by prefix
 * and its SHA-256. */
void fv_cred_set(cred_t *cr, const char *v, size_t n)
{
    cr->present = true;
    if (n == 0)
        cr->cls = AC_UNKNOWN;
    else if (n >= 10 && memcmp(v, "sk-ant-oat", 10) == 0)
        cr->cls = AC_OAUTH;
    else if (n >= 7 && memcmp(v, "sk-ant-", 7) == 0)
        cr->cls = AC_APIKEY;
    else if (n >= 3 && memcmp(v, "sk-", 3) == 0)
        cr->cls = AC_OPENAI;
    else if (n >= 5 && memcmp(v, "krws_", 5) == 0)
        cr->cls = AC_WS;
    else if (n >= 4 && memcmp(v, "AIza", 4) == 0)
        cr->cls = AC_GOOGLE_KEY;
    else if (n >= 5 && memcmp(v, "ya29.", 5) == 0)
        cr->cls = AC_GOOGLE_OAUTH;
    else
        cr->cls = AC_UNKNOWN;
    fv_sha256(v, n, cr->sha);
}

/* The first query parameter NAME= in q (qn bytes, no '?'): its raw value
 * (not percent-decoded) in *v, *vn. */
bool fv_query_param(const char *q, size_t qn, const char *name, const char **v, size_t *vn)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < qn) {
        const char *amp = memchr(q + i, '&', qn - i);
        size_t e = amp ? (size_t)(amp - q) : qn;
        if (e - i > nl && memcmp(q + i, name, nl) == 0 && q[i + nl] == '=') {
            *v = q + i + nl + 1;
            *vn = e - i - nl - 1;
            return true;
        }
        i = e + 1;
    }
    return false;
}

/* Percent-decode s (n bytes) into dst (at most cap bytes; '+' stays): the
 * decoded length. */
size_t fv_pct_decode(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < cap; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_val((unsigned char)s[i + 1])) >= 0 &&
            (lo = hex_val((unsigned char)s[i + 2])) >= 0) {
            dst[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[k++] = s[i];
        }
    }
    return k;
}

/* --sha256-stdin */
int fv_sha256_stdin(void)
{
    sha256_t s;
    unsigned char buf[65536], d[32];
    char hx[65];
    sha256_init(&s);
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        sha256_update(&s, buf, (size_t)n);
    }
    sha256_final(&s, d);
    fv_hex32(hx, d);
    hx[64] = 0;
    printf("%s\n", hx);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Overrides ("[[fake k=v]]", x-fake, x-fake-KEY)                            */

static const struct {
    const char *name;
    int key;
} OV_KEYS[] = {
    {"in", K_IN}, {"out", K_OUT}, {"cache_read", K_CACHE_READ}, {"cache_write", K_CACHE_WRITE},
    {"cache_creation", K_CACHE_WRITE}, {"events", K_EVENTS}, {"delay_ms", K_DELAY_MS},
    {"delay", K_DELAY_MS}, {"after", K_AFTER}, {"status", K_STATUS},
    {"interval_ms", K_INTERVAL_MS}, {"interval", K_INTERVAL_MS}, {"reasoning", K_REASONING},
    {"pad", K_PAD}, {"tool_use_prompt", K_TOOL_USE_PROMPT}, {"reply", K_REPLY},
    {"mode", K_MODE}, {"tool", K_TOOL}, {"tool_name", K_TOOL_NAME}, {"stamp", K_STAMP},
    {"fail_auth", K_FAIL_AUTH},
};

/* tool=HEX: the command, hex-encoded UTF-8 (either case).  An unusable value
 * is kept as a reason (o->tool_bad), answered with a 400 like an unknown
 * mode. */
static void ov_tool(ov_t *o, const char *v, size_t vl)
{
    o->tool_len = 0;
    o->tool_bad = NULL;
    if (vl == 0 || (vl & 1)) {
        o->tool_bad = "an even number of hex digits, at least 2";
        return;
    }
    if (vl / 2 > TOOL_MAX) {
        o->tool_bad = "at most 4096 bytes (8192 hex digits)";
        return;
    }
    for (size_t i = 0; i < vl; i += 2) {
        int hi = hex_val((unsigned char)v[i]), lo = hex_val((unsigned char)v[i + 1]);
        if (hi < 0 || lo < 0) {
            o->tool_bad = "hex digits only";
            o->tool_len = 0;
            return;
        }
        o->tool[o->tool_len++] = (char)(hi << 4 | lo);
    }
    const unsigned char *u = (const unsigned char *)o->tool;
    for (size_t i = 0; i < o->tool_len;) {
        size_t l = utf8_len(u + i, o->tool_len - i);
        if (!l) {
            o->tool_bad = "the hex of UTF-8 text";
            o->tool_len = 0;
            return;
        }
        i += l;
    }
}

/* tool_name=NAME: 1..128 of A-Z a-z 0-9 _ - . : */
static void ov_tool_name(ov_t *o, const char *v, size_t vl)
{
    o->tool_name_len = 0;
    o->tool_name_bad = NULL;
    if (vl == 0 || vl > TOOL_NAME_MAX) {
        o->tool_name_bad = "1 to 128 characters";
        return;
    }
    for (size_t i = 0; i < vl; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':')) {
            o->tool_name_bad = "only A-Z a-z 0-9 _ - . :";
            return;
        }
    }
    memcpy(o->tool_name, v, vl);
    o->tool_name_len = vl;
}

void fv_ov_apply(ov_t *o, const char *k, size_t kl, const char *v, size_t vl)
{
    int key = -1;
    for (size_t i = 0; i < sizeof OV_KEYS / sizeof OV_KEYS[0]; i++) {
        if (strlen(OV_KEYS[i].name) == kl && strncasecmp(OV_KEYS[i].name, k, kl) == 0) {
            key = OV_KEYS[i].key;
            break;
        }
    }
    if (key < 0)
        return;
    if (key < K_NNUM) {
        if (vl == 0 || vl > 15)
            return;
        int64_t x = 0;
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9')
                return;
            x = x * 10 + (v[i] - '0');
        }
        o->num[key] = x;
    } else if (key == K_REPLY) {
        size_t n = vl < REPLY_MAX ? vl : REPLY_MAX;
        for (size_t i = 0; i < n; i++)
            o->reply[i] = v[i] == '_' ? ' ' : v[i];
        o->reply_len = n;
    } else if (key == K_TOOL) {
        ov_tool(o, v, vl);
    } else if (key == K_TOOL_NAME) {
        ov_tool_name(o, v, vl);
    } else {
        size_t n = vl < sizeof o->mode ? vl : sizeof o->mode;
        for (size_t i = 0; i < n; i++)
            o->mode[i] = (char)(v[i] == '-' ? '_' : (v[i] >= 'A' && v[i] <= 'Z' ? v[i] + 32 : v[i]));
        o->mode_len = n;
    }
    o->set |= 1u << key;
}

static bool dir_sep(unsigned char c)
{
    return c <= ' ' || c == ',' || c == '"' || c == '\\' || c == ']' || c == 0x7f;
}

/* Parse "k=v k=v word" (contents of a directive or an x-fake header). */
void fv_ov_parse(ov_t *o, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && dir_sep((unsigned char)s[i]))
            i += (s[i] == '\\') ? 2 : 1; /* skip JSON escapes like \n as separators */
        if (i >= n)
            break;
        size_t st = i;
        while (i < n && !dir_sep((unsigned char)s[i]))
            i++;
        const char *t = s + st;
        size_t tl = i - st;
        const char *eq = memchr(t, '=', tl);
        if (eq)
            fv_ov_apply(o, t, (size_t)(eq - t), eq + 1, tl - (size_t)(eq - t) - 1);
        else
            fv_ov_apply(o, "mode", 4, t, tl);
    }
}

void fv_ov_merge(ov_t *dst, const ov_t *src)
{
    for (int k = 0; k < K_NNUM; k++)
        if (OV_HAS(src, k))
            dst->num[k] = src->num[k];
    if (OV_HAS(src, K_REPLY)) {
        memcpy(dst->reply, src->reply, src->reply_len);
        dst->reply_len = src->reply_len;
    }
    if (OV_HAS(src, K_MODE)) {
        memcpy(dst->mode, src->mode, src->mode_len);
        dst->mode_len = src->mode_len;
    }
    if (OV_HAS(src, K_TOOL)) {
        memcpy(dst->tool, src->tool, src->tool_len);
        dst->tool_len = src->tool_len;
        dst->tool_bad = src->tool_bad;
    }
    if (OV_HAS(src, K_TOOL_NAME)) {
        memcpy(dst->tool_name, src->tool_name, src->tool_name_len);
        dst->tool_name_len = src->tool_name_len;
        dst->tool_name_bad = src->tool_name_bad;
    }
    dst->set |= src->set;
}

void fv_ov_scan_body(ov_t *o, const char *b, size_t n)
{
    const char *p = b, *e = b + n;
    int count = 0;
    while (p < e && count++ < 64) {
        const char *q = memmem(p, (size_t)(e - p), "[[fake", 6);
        if (!q)
            break;
        const char *s = q + 6;
        size_t lim = (size_t)(e - s) < DIRECTIVE_MAX ? (size_t)(e - s) : DIRECTIVE_MAX;
        const char *end = memmem(s, lim, "]]", 2);
        if (!end)
            break;
        if (s == end || dir_sep((unsigned char)*s))
            fv_ov_parse(o, s, (size_t)(end - s));
        p = end + 2;
    }
}

/* ------------------------------------------------------------------------ */
/* Minimal JSON scanning of the request body (top-level keys only)           */

static const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p just after an opening quote; returns the closing quote or NULL. */
static const char *js_str_end(const char *p, const char *e)
{
    while (p < e) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q)
            return NULL;
        size_t bs = 0;
        for (const char *r = q; r > p && r[-1] == '\\'; r--)
            bs++;
        if (!(bs & 1))
            return q;
        p = q + 1;
    }
    return NULL;
}

static const char *js_skip(const char *p, const char *e)
{
    p = js_ws(p, e);
    if (p >= e)
        return e;
    if (*p == '"') {
        const char *q = js_str_end(p + 1, e);
        return q ? q + 1 : e;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char ch = *p;
            if (ch == '"') {
                const char *q = js_str_end(p + 1, e);
                if (!q)
                    return e;
                p = q + 1;
                continue;
            }
            if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return e;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p;
}

static bool js_true(const char *p, const char *e) { return e - p >= 4 && memcmp(p, "true", 4) == 0; }

/* A non-negative integer of at most 15 digits at p, else -1. */
static int64_t js_uint(const char *p, const char *e)
{
    int64_t v = 0;
    int nd = 0;
    while (p + nd < e && nd < 15 && p[nd] >= '0' && p[nd] <= '9') {
        v = v * 10 + (p[nd] - '0');
        nd++;
    }
    return nd ? v : -1;
}

#define KEY_IS(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, kl) == 0)

/* Is the value at p the JSON string lit, written without escapes? */
static bool js_str_is(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return e - p >= (ptrdiff_t)n + 2 && p[0] == '"' && memcmp(p + 1, lit, n) == 0 &&
           p[n + 1] == '"';
}

/* The array element kinds js_scan_array looks into. */
enum {
    JA_TURNS,    /* "messages" / "input": the conversation */
    JA_CONTENT,  /* a message's "content" */
    JA_CONTENTS, /* Gemini's "contents": the conversation */
    JA_PARTS,    /* a Gemini content's "parts" */
    JA_TOOLS,    /* "tools" (for Gemini's functionDeclarations) */
};

/* p at the '[' of an array of kind `kind`: looks at the members of its
 * object elements -- for a tool result (see SCRIPTED TOOL CALLS in fv.h):
 * JA_TURNS: "role":"tool" (chat completions), "type":"function_call_output"
 * or "custom_tool_call_output" (Responses), and "content" arrays (JA_CONTENT:
 * "type":"tool_result", Anthropic); JA_CONTENTS: "parts" arrays (JA_PARTS: a
 * "functionResponse" member, Gemini); and JA_TOOLS: a non-empty
 * "functionDeclarations" array (Gemini).  Gemini's keys are also taken in
 * their snake_case spelling, which its JSON parser accepts too.  Everything
 * else, strings included, is skipped whole, so prompt text cannot look like
 * a tool result.  Returns the end of the array. */
static const char *js_scan_array(const char *p, const char *e, int kind, bodyinfo_t *bi)
{
    p++; /* '[' */
    while (p < e) {
        p = js_ws(p, e);
        if (p >= e)
            return e;
        if (*p == ']')
            return p + 1;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '{') {
            const char *q = js_skip(p, e);
            if (q == p)
                return e; /* not JSON: stop */
            p = q;
            continue;
        }
        p++; /* an object element: its members */
        for (;;) {
            p = js_ws(p, e);
            if (p >= e)
                return e;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p != '"')
                return e;
            const char *k = p + 1, *ke = js_str_end(k, e);
            if (!ke)
                return e;
            size_t kl = (size_t)(ke - k);
            p = js_ws(ke + 1, e);
            if (p >= e || *p != ':')
                return e;
            p = js_ws(p + 1, e);
            if (p >= e)
                return e;
            switch (kind) {
            case JA_TURNS:
                if ((KEY_IS("role") && js_str_is(p, e, "tool")) ||
                    (KEY_IS("type") && (js_str_is(p, e, "function_call_output") ||
                                        js_str_is(p, e, "custom_tool_call_output"))))
                    bi->has_tool_result = true;
                if (KEY_IS("content") && *p == '[') {
                    p = js_scan_array(p, e, JA_CONTENT, bi);
                    continue;
                }
                break;
            case JA_CONTENT:
                if (KEY_IS("type") && js_str_is(p, e, "tool_result"))
                    bi->has_tool_result = true;
                break;
            case JA_CONTENTS:
                if (KEY_IS("parts") && *p == '[') {
                    p = js_scan_array(p, e, JA_PARTS, bi);
                    continue;
                }
                break;
            case JA_PARTS:
                if (KEY_IS("functionResponse") || KEY_IS("function_response"))
                    bi->has_tool_result = true;
                break;
            case JA_TOOLS:
                if ((KEY_IS("functionDeclarations") || KEY_IS("function_declarations")) &&
                    *p == '[') {
                    const char *q = js_ws(p + 1, e);
                    if (q < e && *q != ']')
                        bi->has_fn_decls = true;
                }
                break;
            default:
                break;
            }
            p = js_skip(p, e);
        }
    }
    return e;
}

/* level: 0 the body, 1 its "stream_options", 2 its "generationConfig" */
void fv_js_scan_obj(const char *p, const char *e, int level, bodyinfo_t *bi)
{
    p = js_ws(p, e);
    if (p >= e || *p != '{')
        return;
    p++;
    while (p < e) {
        p = js_ws(p, e);
        if (p >= e || *p == '}')
            return;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '"')
            return;
        const char *k = p + 1, *ke = js_str_end(k, e);
        if (!ke)
            return;
        size_t kl = (size_t)(ke - k);
        p = js_ws(ke + 1, e);
        if (p >= e || *p != ':')
            return;
        p = js_ws(p + 1, e);
        if (p >= e)
            return;
        if (level == 0) {
            if (KEY_IS("model") && *p == '"') {
                const char *ve = js_str_end(p + 1, e);
                if (!ve)
                    return;
                bi->model = p + 1;
                bi->model_len = (size_t)(ve - p - 1);
                bi->has_model = true;
                p = ve + 1;
                continue;
            }
            if (KEY_IS("stream")) {
                bi->stream = js_true(p, e);
            } else if (KEY_IS("max_tokens") || KEY_IS("max_completion_tokens")) {
                int64_t v = js_uint(p, e);
                if (v >= 0)
                    bi->max_tokens = v;
            } else if (KEY_IS("max_output_tokens")) {
                int64_t v = js_uint(p, e);
                if (v >= 0)
                    bi->max_output_tokens = v;
            } else if (KEY_IS("stream_options") && *p == '{') {
                fv_js_scan_obj(p, e, 1, bi);
            } else if ((KEY_IS("generationConfig") || KEY_IS("generation_config")) &&
                       *p == '{') {
                fv_js_scan_obj(p, e, 2, bi);
            } else if (KEY_IS("tools") && *p == '[') {
                const char *q = js_ws(p + 1, e);
                bi->has_tools = q < e && *q != ']';
                p = js_scan_array(p, e, JA_TOOLS, bi);
                continue;
            } else if ((KEY_IS("messages") || KEY_IS("input")) && *p == '[') {
                p = js_scan_array(p, e, JA_TURNS, bi);
                continue;
            } else if (KEY_IS("contents") && *p == '[') {
                p = js_scan_array(p, e, JA_CONTENTS, bi);
                continue;
            }
        } else if (level == 1) {
            if (KEY_IS("include_usage"))
                bi->include_usage = js_true(p, e);
        } else if (KEY_IS("maxOutputTokens") || KEY_IS("max_output_tokens")) {
            int64_t v = js_uint(p, e);
            if (v >= 0)
                bi->gen_max_output = v;
        }
        p = js_skip(p, e);
    }
}
