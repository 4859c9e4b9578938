/*
 * lock.c -- the contention counters of lock.h.
 */
#include "core/lock.h"

atomic_uint_fast64_t kr_lock_contended[KR_LOCK__COUNT];

const char *kr_lock_name(kr_lock_kind kind)
{
    static const char *const names[KR_LOCK__COUNT] = {"limits", "meter"};
    return (unsigned)kind < KR_LOCK__COUNT ? names[kind] : "other";
}
