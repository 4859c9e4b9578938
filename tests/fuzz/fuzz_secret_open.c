/*
 * fuzz_secret_open.c -- libFuzzer driver for secrets at rest
 * (secrets/secrets.c: kr_secret_seal / kr_secret_open).
 *
 * 1. The input as a stored (sealed) value: kr_secret_open must return 0 or
 *    KR_ECRYPTO and never crash or read outside the input; on KR_ECRYPTO the
 *    output buffer is untouched (nothing partial leaks out). When it does
 *    open (the seeds are real seals under the key and row below, so the
 *    mutations stay near valid ones), the value is NUL-terminated and within
 *    KR_SECRET_MAX_VALUE, and the same bytes under another row (owner, key,
 *    scope) or another master key do not open: a ciphertext is bound to its
 *    row.
 * 2. The input as a plaintext: sealed under a row derived from the input, it
 *    opens to exactly the same bytes; a one-bit flip anywhere in the binary
 *    blob (version, nonce, ciphertext, tag), a one-bit flip in the base64
 *    text, a truncation or an appended character are all refused
 *    (KR_ECRYPTO); another row or another key is refused. (One known
 *    exception, from libsodium 1.0.18's base64 decoder: see below.)
 * 3. Size limits: a value of KR_SECRET_MAX_VALUE bytes round-trips, one byte
 *    more is KR_ETOOBIG (exercised when the first input byte is 0xff).
 */
#include "fuzz_check.h"
#include "core/buf.h"
#include "core/err.h"
#include "secrets/secrets.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The row and master key (bytes 0..31) the seeds in corpus/fuzz_secret_open/sealed_* were
 * sealed for with kr_secret_seal. */
#define SEED_SCOPE KR_SCOPE_WORKSPACE
#define SEED_OWNER 7
#define SEED_KEY "LLM_PROVIDER"

static kr_master_key mk, mk_other;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (sodium_init() < 0) abort();
    for (int i = 0; i < KR_MASTER_KEY_BYTES; i++) mk.k[i] = (uint8_t)i;
    mk_other = mk;
    mk_other.k[31] ^= 0x01; /* one bit away */
    return 0;
}

static int open_as(const kr_master_key *k, kr_scope scope, int64_t owner, const char *key,
                   const char *sealed, size_t n, kr_buf *out)
{
    int rc = kr_secret_open(k, scope, owner, key, sealed, n, out);
    CHECK(rc == 0 || rc == KR_ECRYPTO);
    return rc;
}

/* A refused open leaves the output as it was (here: empty). */
static void refused(const kr_master_key *k, kr_scope scope, int64_t owner, const char *key,
                    const char *sealed, size_t n)
{
    kr_buf o = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    CHECK(open_as(k, scope, owner, key, sealed, n, &o) == KR_ECRYPTO);
    CHECK(o.len == 0);
    kr_buf_free(&o);
}

static void part_open(const uint8_t *d, size_t n)
{
    char *s = malloc(n ? n : 1); /* exact size: overreads are ASan reports */
    memcpy(s, d, n);
    kr_buf out = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    int rc = open_as(&mk, SEED_SCOPE, SEED_OWNER, SEED_KEY, s, n, &out);
    if (rc) {
        CHECK(out.len == 0);
    } else {
        CHECK(out.len <= KR_SECRET_MAX_VALUE);
        CHECK(out.data && out.data[out.len] == 0);
        refused(&mk_other, SEED_SCOPE, SEED_OWNER, SEED_KEY, s, n);
        refused(&mk, SEED_SCOPE, SEED_OWNER + 1, SEED_KEY, s, n);
        refused(&mk, KR_SCOPE_ORG, SEED_OWNER, SEED_KEY, s, n);
        refused(&mk, SEED_SCOPE, SEED_OWNER, "LLM_PROVIDEr", s, n);
        refused(&mk, SEED_SCOPE, SEED_OWNER, "MODEL", s, n);
    }
    kr_buf_free(&out);
    free(s);
}

static uint64_t hash64(const uint8_t *d, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 0x100000001b3ull;
    return h;
}

static void roundtrip(kr_scope scope, int64_t owner, const char *key, const uint8_t *v, size_t n,
                      uint64_t h)
{
    kr_buf sealed = KR_BUF_INIT(1 << 20);
    CHECK(kr_secret_seal(&mk, scope, owner, key, (const char *)v, n, &sealed) == 0);
    CHECK(sealed.len > 0);
    /* the stored text is plain base64: printable, no NUL */
    for (size_t i = 0; i < sealed.len; i++) {
        char c = sealed.data[i];
        CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '=');
    }
    /* the plaintext never shows in the stored text (when long enough to tell) */
    if (n >= 8) CHECK(memmem(sealed.data, sealed.len, v, n) == NULL);

    kr_buf out = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    CHECK(open_as(&mk, scope, owner, key, sealed.data, sealed.len, &out) == 0);
    CHECK(out.len == n && (n == 0 || memcmp(out.data, v, n) == 0) && out.data[n] == 0);
    kr_buf_free(&out);

    refused(&mk_other, scope, owner, key, sealed.data, sealed.len);
    refused(&mk, scope, owner ^ 1, key, sealed.data, sealed.len);
    refused(&mk, scope == KR_SCOPE_ORG ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG, owner, key, sealed.data,
            sealed.len);
    char other_key[160];
    snprintf(other_key, sizeof other_key, "%s_", key);
    refused(&mk, scope, owner, other_key, sealed.data, sealed.len);

    /* one bit flipped in the binary blob */
    size_t cap = sealed.len;
    uint8_t *blob = malloc(cap);
    size_t blen = 0;
    CHECK(sodium_base642bin(blob, cap, sealed.data, sealed.len, NULL, &blen, NULL,
                            sodium_base64_VARIANT_ORIGINAL) == 0);
    size_t bit = (size_t)(h % (blen * 8));
    blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    size_t b64cap = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_ORIGINAL);
    char *flipped = malloc(b64cap);
    sodium_bin2base64(flipped, b64cap, blob, blen, sodium_base64_VARIANT_ORIGINAL);
    refused(&mk, scope, owner, key, flipped, strlen(flipped));
    free(flipped);
    free(blob);

    /* one bit flipped in the stored text: never opens (kr_secret_open
     * refuses bytes outside the base64 alphabet, so libsodium 1.0.18's
     * decoding of bytes >= 0x80 as '/' cannot make the text malleable) */
    char *t = malloc(sealed.len);
    memcpy(t, sealed.data, sealed.len);
    size_t tb = (size_t)((h >> 20) % (sealed.len * 8));
    t[tb / 8] ^= (char)(1u << (tb % 8));
    kr_buf o = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    int rt = open_as(&mk, scope, owner, key, t, sealed.len, &o);
    CHECK(rt == KR_ECRYPTO && o.len == 0);
    kr_buf_free(&o);
    free(t);

    /* cut short, or one character more */
    size_t cut = (size_t)((h >> 40) % sealed.len);
    refused(&mk, scope, owner, key, sealed.data, cut);
    char *longer = malloc(sealed.len + 1);
    memcpy(longer, sealed.data, sealed.len);
    longer[sealed.len] = "A=/+"[(h >> 60) & 3];
    refused(&mk, scope, owner, key, longer, sealed.len + 1);
    free(longer);

    kr_buf_free(&sealed);
}

static void part_seal(const uint8_t *d, size_t n)
{
    uint64_t h = hash64(d, n);
    /* row from the input: scope, owner, and a valid key name of 1..127 characters */
    kr_scope scope = (h & 1) ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG;
    int64_t owner = (int64_t)(h >> 1) * ((h & 2) ? -1 : 1);
    char key[128];
    size_t kl = 1 + (size_t)((h >> 8) % 127);
    static const char kc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
    for (size_t i = 0; i < kl; i++) {
        uint8_t b = n ? d[i % n] : (uint8_t)i;
        key[i] = kc[(b + i) % (i == 0 ? 27 : sizeof kc - 1)];
    }
    key[kl] = 0;
    CHECK(kr_secret_key_valid(key));
    roundtrip(scope, owner, key, d, n > KR_SECRET_MAX_VALUE ? KR_SECRET_MAX_VALUE : n, h);
}

static void part_limits(void)
{
    size_t big = KR_SECRET_MAX_VALUE + 1;
    char *v = malloc(big);
    memset(v, 'x', big);
    kr_buf sealed = KR_BUF_INIT(1 << 20);
    CHECK(kr_secret_seal(&mk, KR_SCOPE_ORG, 1, "K", v, big, &sealed) == KR_ETOOBIG);
    CHECK(sealed.len == 0);
    kr_buf_free(&sealed);
    roundtrip(KR_SCOPE_ORG, 1, "K", (const uint8_t *)v, KR_SECRET_MAX_VALUE, 12345);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 4 * KR_SECRET_MAX_VALUE) return 0;
    part_open(d, n);
    part_seal(d, n);
    if (n == 1 && d[0] == 0xff) part_limits();
    return 0;
}
