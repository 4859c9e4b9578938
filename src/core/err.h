/*
 * err.h -- keyrail's one error convention.
 *
 * Every fallible function returns 0 (KR_OK) or a negative KR_E* code from the
 * table below. kr_err_name() gives the stable symbolic name (what tests, logs
 * and `explain` print), kr_strerror() a short English message. Where a caller
 * needs more than a code (which key was forbidden, which secret was
 * unreadable), the function also fills an optional kr_diag.
 */
#ifndef KR_ERR_H
#define KR_ERR_H

#include <stddef.h>

#define KR_ERR_MAP(X)                                                                              \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(IO, "i/o error")                                                                             \
    X(STORE, "store error")                                                                        \
    X(BUSY, "store busy")                                                                          \
    X(CRYPTO, "secret could not be decrypted")                                                     \
    X(NOKEY, "no master key")                                                                      \
    X(PARSE, "parse error")                                                                        \
    X(TOOBIG, "too large")                                                                         \
    X(CONFIG, "configuration error")                                                               \
    X(FORBIDDEN_KEY, "key is operator-scope and may not reach a tenant")                           \
    X(SECRET_UNREADABLE, "a stored secret could not be read")                                      \
    X(MISSING_BYOK_CREDENTIAL, "BYOK provider credential is missing")                              \
    X(UNKNOWN_MODEL, "no provider claims this model")                                              \
    X(MISSING_MODEL, "workspace has no model")                                                     \
    X(MISSING_PLATFORM_PROXY, "platform route but no proxy URL configured")                        \
    X(UNKNOWN_PROVIDER, "provider is not in the registry")                                         \
    X(CONCIERGE_EXISTS, "org already has a concierge")                                             \
    X(DENIED, "denied")                                                                            \
    X(WRONG_MASTER_KEY, "the master key is not the one the store's secrets are sealed under")

enum {
    KR_OK = 0,
#define KR__ERR_ENUM(name, msg) KR__E_##name,
    KR__ERR_BASE = 0,
    KR_ERR_MAP(KR__ERR_ENUM) KR__ERR_COUNT
#undef KR__ERR_ENUM
};

#define KR__ERR_CODE(name) (-(int)KR__E_##name)
#define KR_ENOMEM KR__ERR_CODE(NOMEM)
#define KR_EINVAL KR__ERR_CODE(INVAL)
#define KR_ENOTFOUND KR__ERR_CODE(NOTFOUND)
#define KR_EEXISTS KR__ERR_CODE(EXISTS)
#define KR_EIO KR__ERR_CODE(IO)
#define KR_ESTORE KR__ERR_CODE(STORE)
#define KR_EBUSY KR__ERR_CODE(BUSY)
#define KR_ECRYPTO KR__ERR_CODE(CRYPTO)
#define KR_ENOKEY KR__ERR_CODE(NOKEY)
#define KR_EPARSE KR__ERR_CODE(PARSE)
#define KR_ETOOBIG KR__ERR_CODE(TOOBIG)
#define KR_ECONFIG KR__ERR_CODE(CONFIG)
#define KR_EFORBIDDEN_KEY KR__ERR_CODE(FORBIDDEN_KEY)
#define KR_ESECRET_UNREADABLE KR__ERR_CODE(SECRET_UNREADABLE)
#define KR_EMISSING_BYOK_CREDENTIAL KR__ERR_CODE(MISSING_BYOK_CREDENTIAL)
#define KR_EUNKNOWN_MODEL KR__ERR_CODE(UNKNOWN_MODEL)
#define KR_EMISSING_MODEL KR__ERR_CODE(MISSING_MODEL)
#define KR_EMISSING_PLATFORM_PROXY KR__ERR_CODE(MISSING_PLATFORM_PROXY)
#define KR_EUNKNOWN_PROVIDER KR__ERR_CODE(UNKNOWN_PROVIDER)
#define KR_ECONCIERGE_EXISTS KR__ERR_CODE(CONCIERGE_EXISTS)
#define KR_EDENIED KR__ERR_CODE(DENIED)
#define KR_EWRONG_MASTER_KEY KR__ERR_CODE(WRONG_MASTER_KEY)

/* Symbolic name without prefix, e.g. "SECRET_UNREADABLE"; "OK" for 0. */
const char *kr_err_name(int err);
/* Short English message. */
const char *kr_strerror(int err);

/* Optional detail that travels with an error code. */
typedef struct kr_diag {
    char msg[512];
} kr_diag;

/* Formats d->msg (if d is non-NULL) and returns err, so callers can write
 * `return kr_fail(d, KR_EINVAL, "bad key %s", k);` */
int kr_fail(kr_diag *d, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The diag message, or kr_strerror(err) when no detail was recorded. */
const char *kr_diag_msg(const kr_diag *d, int err);

/*
 * Invariants whose breach would corrupt state (a buffer bound, a state
 * transition, a reference count, a queue index). KR_ASSERT stays in release
 * builds -- use it where the check is a compare or two; it names the file,
 * line and condition on stderr and aborts (a crash report, never a silent
 * corruption; no request data is printed). KR_DEBUG_ASSERT is for checks
 * too costly for the hot path: it compiles away under NDEBUG.
 */
#define KR_ASSERT(cond)                                                                            \
    ((cond) ? (void)0 : kr_assert_fail(#cond, __FILE__, __LINE__))
#ifdef NDEBUG
#define KR_DEBUG_ASSERT(cond) ((void)0)
#else
#define KR_DEBUG_ASSERT(cond) KR_ASSERT(cond)
#endif
_Noreturn void kr_assert_fail(const char *cond, const char *file, int line);

#endif
