/*
 * secrets.h -- secrets at rest: the master key, AEAD sealing of values, and
 * the three-state read.
 *
 * A stored value is base64( version || nonce || XChaCha20-Poly1305(value) ),
 * version 1. The associated data binds the ciphertext to its row
 * ("scope|owner|key"), so a value copied to another row does not decrypt.
 * The master key (32 bytes, 64 hex digits) comes from the environment
 * (KEYRAIL_MASTER_KEY) or a key file (mode 0600 or stricter). Without one,
 * keyrail refuses to start, except `serve --dev`, which creates a key file
 * and says so loudly.
 *
 * Reads are three-state -- absent, value, unreadable -- and nothing in
 * keyrail may treat "unreadable" (wrong key, corrupt ciphertext, store
 * error) as "absent".
 */
#ifndef KR_SECRETS_H
#define KR_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/cred.h"
#include "core/err.h"
#include "store/store.h"

#define KR_MASTER_KEY_BYTES 32
#define KR_SECRET_VERSION 1
#define KR_SECRET_MAX_VALUE (64 * 1024)
#define KR_MASTER_KEY_ENV "KEYRAIL_MASTER_KEY"

typedef struct kr_master_key {
    uint8_t k[KR_MASTER_KEY_BYTES];
} kr_master_key;

/* Parses 64 hex digits (surrounding whitespace ignored). */
int kr_master_key_parse(const char *s, size_t n, kr_master_key *out);
/*
 * Loads the key: $KEYRAIL_MASTER_KEY when set and non-empty, else key_file
 * when given. With dev_create and a missing key file, a new key is written
 * there with mode 0600 (*created set). Otherwise KR_ENOKEY. A key file
 * readable by group or others is refused.
 */
int kr_master_key_load(const char *key_file, bool dev_create, kr_master_key *out, bool *created,
                       kr_diag *d);
/* A key from a file only (mode 0600 or stricter), whatever the environment
 * says: `rekey --old-key-file` reads the old key this way. */
int kr_master_key_load_file(const char *path, kr_master_key *out, kr_diag *d);
/* Writes a fresh random key to path (0600, must not exist). */
int kr_master_key_generate(const char *path, kr_diag *d);
/* Where kr_master_key_load takes the key from, for messages: "KEYRAIL_MASTER_KEY"
 * or "key file PATH" (or "no key" when neither is set). */
const char *kr_master_key_origin(const char *key_file, char *buf, size_t cap);

/*
 * The key check. A wrong master key opens no secret, and without a check
 * keyrail would find that out only secret by secret, at request time. The
 * store keeps one keyed fingerprint of the right key (BLAKE2b-256 keyed by
 * the master key over a fixed label: it reveals nothing about the key and
 * matches only the same key). kr_master_key_verify compares; a store from
 * before the check gets mk's written here when mk opens one of its stored
 * secrets (AEAD: a wrong key opens none), or when it holds none; a key that
 * opens none of them is refused. `serve` refuses to start without a match,
 * kr_secret_set refuses to write, `rekey` moves the check with the secrets.
 * KR_EWRONG_MASTER_KEY with d saying why.
 */
void kr_master_key_check(const kr_master_key *mk, char hex[65]);
int kr_master_key_verify(kr_store *s, const kr_master_key *mk, kr_diag *d);

/* Seals value under the row's associated data; out receives base64 text. */
int kr_secret_seal(const kr_master_key *mk, kr_scope scope, int64_t owner, const char *key,
                   const char *value, size_t n, kr_buf *out);
/* Opens a sealed value. KR_ECRYPTO for anything that does not authenticate
 * (wrong key, wrong row, flipped byte, bad base64, unknown version). */
int kr_secret_open(const kr_master_key *mk, kr_scope scope, int64_t owner, const char *key,
                   const char *sealed, size_t n, kr_buf *out);

typedef enum { KR_SECRET_ABSENT = 0, KR_SECRET_VALUE, KR_SECRET_UNREADABLE } kr_secret_state;

typedef struct kr_secret_read {
    kr_secret_state state;
    char *value; /* KR_SECRET_VALUE: heap, NUL-terminated, wiped by kr_secret_read_free */
    size_t len;
    int err;     /* KR_SECRET_UNREADABLE: KR_ECRYPTO or the store error */
} kr_secret_read;

/* Never fails: the outcome is the state. */
void kr_secret_get(kr_store *s, const kr_master_key *mk, kr_scope scope, int64_t owner,
                   const char *key, kr_secret_read *out);
void kr_secret_read_free(kr_secret_read *r);

/* Writes a secret after the forbidden-key check (see provision/forbidden.h)
 * and the key check (kr_master_key_verify), in one transaction.
 * KR_EFORBIDDEN_KEY names the key and the reason in d; KR_EWRONG_MASTER_KEY
 * when mk is not the store's key (nothing is written). */
struct kr_policy;
int kr_secret_set(kr_store *s, const kr_master_key *mk, const struct kr_policy *pol,
                  kr_scope scope, int64_t owner, const char *key, const char *value, kr_diag *d);
/* A new workspace token: "krws_" + 43 base64url characters (32 random
 * bytes); out holds KR_WS_TOKEN_LEN + 1 bytes. */
void kr_token_generate(char *out);
/* A new admin token: "kradm_" + 43 base64url characters (32 random bytes);
 * out holds KR_ADMIN_TOKEN_LEN + 1. Hashed like workspace tokens. */
void kr_admin_token_generate(char *out);
/* Hex BLAKE2b-256 of a token: what the store keeps. */
void kr_token_hash(const char *tok, size_t n, char hex[65]);
/* A token lifetime: a positive whole number and m, h or d ("90m", "12h",
 * "30d"), at most KR_TOKEN_MAX_TTL_DAYS days. 0, or KR_EINVAL with d saying
 * why (zero, negative, absurd, overflowing, malformed). */
#define KR_TOKEN_MAX_TTL_DAYS 3650
int kr_token_ttl_parse(const char *s, int64_t *ms, kr_diag *d);

/* Valid secret key names: [A-Z_][A-Z0-9_]*, at most 127 bytes. */
bool kr_secret_key_valid(const char *key);

#endif
