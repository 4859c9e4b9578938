/* fuzz_check.h -- CHECK(c): a property every fuzz driver asserts. A failed
 * check names itself and aborts, which libFuzzer reports as a crash and
 * keeps as a reproducer.
 *
 * Also what the drivers that compare one whole arrival with split arrivals
 * share: an FNV-1a mix for their event traces, a xorshift generator that
 * picks the split points, and a bounds test for slices into a buffer. */
#ifndef KR_FUZZ_CHECK_H
#define KR_FUZZ_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/buf.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* FNV-1a over p[0..n), continuing from h. */
static inline uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static inline uint64_t mix_u64(uint64_t h, uint64_t v)
{
    return mix(h, &v, sizeof v);
}

/* xorshift64: split points from a seed the input itself provides. */
typedef struct rng {
    uint64_t s;
} rng;

static inline unsigned next(rng *g)
{
    g->s ^= g->s << 13;
    g->s ^= g->s >> 7;
    g->s ^= g->s << 17;
    return (unsigned)(g->s >> 32);
}

/* Whether p[0..n) lies inside b's bytes. */
static inline bool inside(const kr_buf *b, const char *p, size_t n)
{
    return b->data && p >= b->data && n <= b->len && (size_t)(p - b->data) <= b->len - n;
}

#endif
