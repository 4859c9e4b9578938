/*
 * meter.h -- the usage writer: one thread with its own store connection
 * that records usage rows, the daily rollup and the credit debit in batched
 * transactions (group commit), off the event loop.
 *
 * Nothing is dropped: a failed batch is retried with backoff until it
 * commits (request ids make a retry idempotent), and kr_meter_stop()
 * flushes everything before it returns. While the store is failing,
 * kr_meter_healthy() is false and the proxy refuses new metered work (503)
 * instead of serving it unmetered. An optional callback per record runs on
 * the loop thread after its batch committed.
 */
#ifndef KR_METER_H
#define KR_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "store/store.h"

typedef struct kr_meter kr_meter;
typedef void (*kr_meter_cb)(void *arg);

int kr_meter_start(kr_meter **out, uv_loop_t *loop, const char *store_url, kr_diag *d);
void kr_meter_submit(kr_meter *m, const kr_usage_rec *rec, kr_meter_cb cb, void *arg);
bool kr_meter_healthy(kr_meter *m);
size_t kr_meter_depth(kr_meter *m);
uint64_t kr_meter_committed(kr_meter *m);
void kr_meter_stop(kr_meter *m);

#endif
