/* fuzz_check.h -- CHECK(c): a property every fuzz driver asserts. A failed
 * check names itself and aborts, which libFuzzer reports as a crash and
 * keeps as a reproducer. */
#ifndef KR_FUZZ_CHECK_H
#define KR_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
