#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const err_names[] = {
    "OK",
#define X(name, msg) #name,
    KR_ERR_MAP(X)
#undef X
};

static const char *const err_msgs[] = {
    "ok",
#define X(name, msg) msg,
    KR_ERR_MAP(X)
#undef X
};

const char *kr_err_name(int err)
{
    int i = -err;
    if (i < 0 || i >= (int)KR__ERR_COUNT) return "UNKNOWN_ERROR";
    return err_names[i];
}

const char *kr_strerror(int err)
{
    int i = -err;
    if (i < 0 || i >= (int)KR__ERR_COUNT) return "unknown error";
    return err_msgs[i];
}

int kr_fail(kr_diag *d, int err, const char *fmt, ...)
{
    if (d) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof d->msg, fmt, ap);
        va_end(ap);
    }
    return err;
}

const char *kr_diag_msg(const kr_diag *d, int err)
{
    if (d && d->msg[0]) return d->msg;
    return kr_strerror(err);
}

_Noreturn void kr_assert_fail(const char *cond, const char *file, int line)
{
    /* stderr directly: the log may be buffered, and this must get out */
    fprintf(stderr, "keyrail: invariant broken at %s:%d: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}
