#include "secrets/secrets.h"
#include "provision/forbidden.h"
#include "core/ini.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES

int kr_master_key_parse(const char *s, size_t n, kr_master_key *out)
{
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    return kr_unhex(s, n, out->k, sizeof out->k) ? KR_EPARSE : 0;
}

int kr_master_key_generate(const char *path, kr_diag *d)
{
    uint8_t k[KR_MASTER_KEY_BYTES];
    char hex[2 * KR_MASTER_KEY_BYTES + 2];
    randombytes_buf(k, sizeof k);
    kr_hex(k, sizeof k, hex);
    sodium_memzero(k, sizeof k);
    size_t hl = strlen(hex);
    hex[hl++] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return kr_fail(d, KR_EIO, "cannot create key file %s: %s", path, strerror(errno));
    ssize_t w = write(fd, hex, hl);
    sodium_memzero(hex, sizeof hex);
    if (w != (ssize_t)hl || fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return kr_fail(d, KR_EIO, "cannot write key file %s", path);
    }
    close(fd);
    return 0;
}

int kr_master_key_load(const char *key_file, bool dev_create, kr_master_key *out, bool *created,
                       kr_diag *d)
{
    if (created) *created = false;
    const char *env = getenv(KR_MASTER_KEY_ENV);
    if (env && *env) {
        if (kr_master_key_parse(env, strlen(env), out))
            return kr_fail(d, KR_ENOKEY, "%s is set but is not 64 hex digits", KR_MASTER_KEY_ENV);
        return 0;
    }
    if (!key_file || !*key_file)
        return kr_fail(d, KR_ENOKEY,
                       "no master key: set %s or master_key_file (keyrail will not run without "
                       "one; `serve --dev` can create one for development)",
                       KR_MASTER_KEY_ENV);
    struct stat st;
    if (stat(key_file, &st) != 0) {
        if (errno == ENOENT && dev_create) {
            int rc = kr_master_key_generate(key_file, d);
            if (rc) return rc;
            if (created) *created = true;
        } else {
            return kr_fail(d, KR_ENOKEY, "master key file %s: %s", key_file, strerror(errno));
        }
    }
    return kr_master_key_load_file(key_file, out, d);
}

int kr_master_key_load_file(const char *path, kr_master_key *out, kr_diag *d)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return kr_fail(d, KR_ENOKEY, "master key file %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return kr_fail(d, KR_ENOKEY, "master key file %s is not a regular file", path);
    if (st.st_mode & 077)
        return kr_fail(d, KR_ENOKEY, "master key file %s is readable by others (mode %03o); chmod 600 it",
                       path, (unsigned)(st.st_mode & 0777));
    char *text;
    size_t len;
    int rc = kr_read_file(path, 1024, &text, &len, NULL);
    if (rc) return kr_fail(d, KR_ENOKEY, "cannot read master key file %s", path);
    rc = kr_master_key_parse(text, len, out);
    sodium_memzero(text, len);
    free(text);
    if (rc) return kr_fail(d, KR_ENOKEY, "master key file %s does not hold 64 hex digits", path);
    return 0;
}

const char *kr_master_key_origin(const char *key_file, char *buf, size_t cap)
{
    const char *env = getenv(KR_MASTER_KEY_ENV);
    if (env && *env) return KR_MASTER_KEY_ENV;
    if (!key_file || !*key_file) return "no key";
    kr_snprintf(buf, cap, "key file %s", key_file);
    return buf;
}

void kr_master_key_check(const kr_master_key *mk, char hex[65])
{
    static const char label[] = "keyrail master key check v1";
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)label, sizeof label - 1, mk->k, sizeof mk->k);
    kr_hex(h, sizeof h, hex);
}

static bool opens_any(const kr_master_key *mk, const kr_secret_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kr_buf pt = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
        int rc = kr_secret_open(mk, rows[i].scope, rows[i].owner_id, rows[i].key,
                                rows[i].ciphertext, strlen(rows[i].ciphertext), &pt);
        if (pt.data) sodium_memzero(pt.data, pt.len);
        kr_buf_free(&pt);
        if (!rc) return true;
    }
    return false;
}

int kr_master_key_verify(kr_store *s, const kr_master_key *mk, kr_diag *d)
{
    char mine[65], stored[65];
    kr_master_key_check(mk, mine);
    int rc = kr_store_keycheck_get(s, stored, d);
    if (rc == KR_ENOTFOUND) {
        /* a store from before the check: the key proves itself on what is stored */
        kr_secret_row *rows;
        size_t n;
        if ((rc = kr_store_secret_list_all(s, &rows, &n, d))) return rc;
        bool ok = n == 0 || opens_any(mk, rows, n);
        kr_secret_rows_free(rows, n);
        if (!ok)
            return kr_fail(d, KR_EWRONG_MASTER_KEY,
                           "this master key opens none of the %zu secret(s) in the store: they "
                           "were sealed under another key",
                           n);
        rc = kr_store_keycheck_init(s, mine, stored, d);
    }
    if (rc) return rc;
    if (sodium_memcmp(stored, mine, 64) != 0)
        return kr_fail(d, KR_EWRONG_MASTER_KEY,
                       "this master key is not the store's: its secrets are sealed under "
                       "another key (after `keyrail rekey`, use the new key)");
    return 0;
}

static void make_ad(char *ad, size_t cap, kr_scope scope, int64_t owner, const char *key)
{
    snprintf(ad, cap, "keyrail-secret|%s|%lld|%s", kr_scope_name(scope), (long long)owner, key);
}

int kr_secret_seal(const kr_master_key *mk, kr_scope scope, int64_t owner, const char *key,
                   const char *value, size_t n, kr_buf *out)
{
    if (n > KR_SECRET_MAX_VALUE) return KR_ETOOBIG;
    char ad[256];
    make_ad(ad, sizeof ad, scope, owner, key);
    size_t blen = 1 + NONCE_LEN + n + TAG_LEN;
    uint8_t *blob = kr_xmalloc(blen);
    blob[0] = KR_SECRET_VERSION;
    randombytes_buf(blob + 1, NONCE_LEN);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(blob + 1 + NONCE_LEN, &clen, (const uint8_t *)value,
                                               n, (const uint8_t *)ad, strlen(ad), NULL, blob + 1,
                                               mk->k);
    size_t b64len = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_ORIGINAL);
    int rc = kr_buf_reserve(out, b64len);
    if (!rc) {
        sodium_bin2base64(out->data + out->len, b64len, blob, blen, sodium_base64_VARIANT_ORIGINAL);
        out->len += strlen(out->data + out->len);
    }
    free(blob);
    return rc;
}

int kr_secret_open(const kr_master_key *mk, kr_scope scope, int64_t owner, const char *key,
                   const char *sealed, size_t n, kr_buf *out)
{
    if (n > 4 * (KR_SECRET_MAX_VALUE + 1 + NONCE_LEN + TAG_LEN) / 3 + 8) return KR_ECRYPTO;
    /* strict alphabet: libsodium 1.0.18 decodes bytes >= 0x80 as '/', which
     * would make the stored text malleable */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)sealed[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '='))
            return KR_ECRYPTO;
    }
    size_t cap = n / 4 * 3 + 3;
    uint8_t *blob = kr_xmalloc(cap);
    size_t blen;
    int rc = KR_ECRYPTO;
    if (sodium_base642bin(blob, cap, sealed, n, NULL, &blen, NULL, sodium_base64_VARIANT_ORIGINAL))
        goto done;
    if (blen < 1 + NONCE_LEN + TAG_LEN || blob[0] != KR_SECRET_VERSION) goto done;
    char ad[256];
    make_ad(ad, sizeof ad, scope, owner, key);
    size_t plen = blen - 1 - NONCE_LEN - TAG_LEN;
    if (kr_buf_reserve(out, plen)) goto done;
    unsigned long long got;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((uint8_t *)out->data + out->len, &got, NULL,
                                                   blob + 1 + NONCE_LEN, blen - 1 - NONCE_LEN,
                                                   (const uint8_t *)ad, strlen(ad), blob + 1,
                                                   mk->k) != 0)
        goto done;
    out->len += (size_t)got;
    out->data[out->len] = 0;
    rc = 0;
done:
    sodium_memzero(blob, cap);
    free(blob);
    return rc;
}

void kr_secret_get(kr_store *s, const kr_master_key *mk, kr_scope scope, int64_t owner,
                   const char *key, kr_secret_read *out)
{
    memset(out, 0, sizeof *out);
    kr_secret_row row;
    int rc = kr_store_secret_get(s, scope, owner, key, &row, NULL);
    if (rc == KR_ENOTFOUND) {
        out->state = KR_SECRET_ABSENT;
        return;
    }
    if (rc) {
        out->state = KR_SECRET_UNREADABLE;
        out->err = rc;
        return;
    }
    kr_buf b = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    rc = kr_secret_open(mk, scope, owner, key, row.ciphertext, strlen(row.ciphertext), &b);
    kr_secret_row_free(&row);
    if (rc) {
        out->state = KR_SECRET_UNREADABLE;
        out->err = rc;
        kr_buf_free(&b);
        return;
    }
    out->state = KR_SECRET_VALUE;
    out->len = b.len;
    out->value = kr_buf_steal(&b);
}

void kr_secret_read_free(kr_secret_read *r)
{
    if (r->value) {
        sodium_memzero(r->value, r->len);
        free(r->value);
    }
    memset(r, 0, sizeof *r);
}

bool kr_secret_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 127) return false;
    if (!((key[0] >= 'A' && key[0] <= 'Z') || key[0] == '_')) return false;
    for (size_t i = 1; i < n; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

int kr_secret_set(kr_store *s, const kr_master_key *mk, const kr_policy *pol, kr_scope scope,
                  int64_t owner, const char *key, const char *value, kr_diag *d)
{
    if (!kr_secret_key_valid(key))
        return kr_fail(d, KR_EINVAL, "secret key '%.64s' is not a valid name ([A-Z_][A-Z0-9_]*)", key);
    int rc = kr_policy_check_key(pol, key, d);
    if (rc) return rc;
    size_t n = strlen(value);
    if (n > KR_SECRET_MAX_VALUE)
        return kr_fail(d, KR_ETOOBIG, "secret '%s' is larger than %d bytes", key, KR_SECRET_MAX_VALUE);
    kr_buf ct = KR_BUF_INIT(1 << 20);
    rc = kr_secret_seal(mk, scope, owner, key, value, n, &ct);
    /* never seal under a key the store's other secrets are not sealed under */
    if (!rc && !(rc = kr_store_secret_write_begin(s, d))) {
        if (!(rc = kr_master_key_verify(s, mk, d)) &&
            !(rc = kr_store_secret_put(s, scope, owner, key, ct.data, KR_SECRET_VERSION, d)))
            rc = kr_store_commit(s, d);
        if (rc) kr_store_rollback(s);
    }
    kr_buf_free(&ct);
    return rc;
}

void kr_token_generate(char *out)
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, KR_WS_TOKEN_PREFIX, 5);
    sodium_bin2base64(out + 5, KR_WS_TOKEN_LEN - 5 + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void kr_admin_token_generate(char *out)
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, KR_ADMIN_TOKEN_PREFIX, 6);
    sodium_bin2base64(out + 6, KR_ADMIN_TOKEN_LEN - 6 + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void kr_token_hash(const char *tok, size_t n, char hex[65])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)tok, n, NULL, 0);
    kr_hex(h, sizeof h, hex);
}

int kr_token_ttl_parse(const char *s, int64_t *ms, kr_diag *d)
{
    size_t n = strlen(s);
    char unit = n ? s[n - 1] : 0;
    int64_t per = unit == 'm' ? 60000 : unit == 'h' ? 3600000 : unit == 'd' ? 86400000 : 0;
    uint64_t v;
    if (s[0] == '-') return kr_fail(d, KR_EINVAL, "--ttl must be positive (omit it for no expiry)");
    bool digits = n >= 2 && strspn(s, "0123456789") == n - 1;
    if (digits && per && kr_parse_u64(s, n - 1, &v)) /* overflows 64 bits */
        return kr_fail(d, KR_EINVAL, "--ttl '%.40s' is longer than %d days (10 years)", s,
                       KR_TOKEN_MAX_TTL_DAYS);
    if (!digits || !per || kr_parse_u64(s, n - 1, &v))
        return kr_fail(d, KR_EINVAL,
                       "--ttl '%.40s' is not a lifetime: a whole number and m, h or d (e.g. 30d)", s);
    const uint64_t max_ms = (uint64_t)KR_TOKEN_MAX_TTL_DAYS * 86400000;
    if (v == 0) return kr_fail(d, KR_EINVAL, "--ttl must be positive (omit it for no expiry)");
    if (v > max_ms / (uint64_t)per)
        return kr_fail(d, KR_EINVAL, "--ttl '%.40s' is longer than %d days (10 years)", s,
                       KR_TOKEN_MAX_TTL_DAYS);
    *ms = (int64_t)v * per;
    return 0;
}
