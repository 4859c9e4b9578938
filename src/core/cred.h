/*
 * cred.h -- credential classes and fingerprints.
 *
 * Every credential keyrail sees (a request header, an env variable, a secret)
 * is classified by its shape, for routing decisions and for logs. Logs and
 * errors carry the class name and a fingerprint -- 8 hex digits of a keyed
 * BLAKE2b hash -- and never any byte of the credential itself. The same
 * token has the same fingerprint on the server and in the launcher, so an
 * operator can correlate them.
 */
#ifndef KR_CRED_H
#define KR_CRED_H

#include <stdbool.h>
#include <stddef.h>

#define KR_CRED_MAP(X)                                                                             \
    X(NONE, "none")                                                                                \
    X(WORKSPACE_TOKEN, "workspace-token")                                                          \
    X(ADMIN_TOKEN, "admin-token")                                                                  \
    X(ANTHROPIC_OAUTH, "oauth")                                                                    \
    X(ANTHROPIC_API_KEY, "anthropic-api-key")                                                      \
    X(OPENAI_KEY, "openai-api-key")                                                                \
    X(GOOGLE_KEY, "google-api-key")                                                                \
    X(GOOGLE_OAUTH, "google-oauth")                                                                \
    X(VENDOR_KEY, "vendor-key")                                                                    \
    X(UNKNOWN, "unknown")

typedef enum {
#define X(n, s) KR_CRED_##n,
    KR_CRED_MAP(X)
#undef X
} kr_cred_class;

/* Workspace tokens: "krws_" + 43 base64url characters (32 random bytes). */
#define KR_WS_TOKEN_PREFIX "krws_"
#define KR_WS_TOKEN_LEN (5 + 43)
/* Admin tokens (the admin API, the console): "kradm_" + 43 base64url. */
#define KR_ADMIN_TOKEN_PREFIX "kradm_"
#define KR_ADMIN_TOKEN_LEN (6 + 43)

const char *kr_cred_class_name(kr_cred_class c);
/* Classifies by shape only. Empty -> NONE. */
kr_cred_class kr_cred_classify(const char *s, size_t n);
/* sk-ant-oat… oauth; sk-ant-… anthropic-api-key; sk-proj-/sk-svcacct-/
 * sk-admin-… openai-api-key; AIza… google-api-key; ya29.… google-oauth (an
 * access token); any other sk-… vendor-key (its issuer cannot be told by
 * shape); krws_… workspace-token. */

/* True for classes that are direct-vendor credentials (OAuth, vendor keys). */
bool kr_cred_is_vendor(kr_cred_class c);
/* 8 lowercase hex digits + NUL. */
#define KR_FP_LEN 9
void kr_cred_fingerprint(const char *s, size_t n, char out[KR_FP_LEN]);
/* Length of the token-character run at s (base64url, '.', '~', '+', '/', '='). */
size_t kr_cred_span(const char *s, size_t n);
/* Finds a credential of a known shape anywhere in s (a header value, a
 * variable like "x-api-key: sk-ant-…", JSON): a recognised prefix at the
 * start of a token (s's start or after a byte that cannot be part of one)
 * followed by at least 16 token characters. Returns its class (the first
 * found) or KR_CRED_NONE; *off and *len locate it when not NULL. */
kr_cred_class kr_cred_find(const char *s, size_t n, size_t *off, size_t *len);



/* "scheme://host:port" of an http(s) URL, lower-cased, default port filled
 * in; KR_EINVAL for anything else. Two URLs reach the same host iff their
 * origins are equal. */
int kr_url_origin(const char *url, char *out, size_t cap);
#endif
