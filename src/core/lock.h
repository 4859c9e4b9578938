/*
 * lock.h -- the mutexes that several event loops share (server.workers > 1),
 * with a count of how often each kind was found held: what /metrics shows as
 * keyrail_lock_contended_total{lock=...}, the measure of what would stop
 * keyrail from scaling to more cores (docs/PERFORMANCE.md).
 *
 * A lock is taken with a trylock first; only when that fails is the wait
 * counted and taken. Uncontended, that is one atomic instruction, like
 * pthread_mutex_lock itself.
 */
#ifndef KR_LOCK_H
#define KR_LOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef enum {
    KR_LOCK_LIMITS = 0, /* a shard of the rate windows and credit views */
    KR_LOCK_METER,      /* a loop's queue of usage rows, shared with the writer */
    KR_LOCK__COUNT
} kr_lock_kind;

extern atomic_uint_fast64_t kr_lock_contended[KR_LOCK__COUNT];

static inline void kr_lock(pthread_mutex_t *mu, kr_lock_kind kind)
{
    if (pthread_mutex_trylock(mu) == 0) return;
    atomic_fetch_add_explicit(&kr_lock_contended[kind], 1, memory_order_relaxed);
    pthread_mutex_lock(mu);
}

static inline void kr_unlock(pthread_mutex_t *mu)
{
    pthread_mutex_unlock(mu);
}

/* The label of a kind in /metrics ("limits", "meter"). */
const char *kr_lock_name(kr_lock_kind kind);

#endif
