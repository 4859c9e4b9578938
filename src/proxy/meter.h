/*
 * meter.h -- the usage writer: one thread with its own store connection
 * that records usage rows, the daily rollup and the credit debit in batched
 * transactions (group commit), off the event loop.
 *
 * Durability without a commit on the hot path: with a journal, every record
 * is first appended to a local file (one write(), on the loop thread, before
 * the response ends) and then written to the store in batches. After a
 * crash (kill -9) the journal is replayed into the store before the next
 * start serves anything; request ids make the replay idempotent. The loop
 * thread alone writes the journal, and truncates it once everything in it
 * has been committed and it has grown past 4 MiB (and at a clean stop).
 * Without a journal (server.usage_sync = 0) a crash can lose what was
 * queued.
 *
 * Nothing is dropped: a failed batch is retried with backoff until it
 * commits. While the store is failing, kr_meter_healthy() is false and the
 * proxy refuses new metered work (503) instead of serving it unmetered. At
 * stop, the queue is flushed; if the store still fails after the grace, the
 * journal keeps the rest for the next start.
 *
 * What the loop thread pays per row: the journal write and a queue append
 * under a mutex the writer only ever holds for list operations (no system
 * call under it). After a batch commits, the loop runs one callback per
 * (callback, argument, org) of the batch with the costs summed -- not one
 * per row -- and no request is kept alive until its row commits.
 */
#ifndef KR_METER_H
#define KR_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "store/store.h"

typedef struct kr_meter kr_meter;
/* After a batch committed, once per (callback, argument, org) of its rows,
 * with their costs summed. */
typedef void (*kr_meter_cb)(void *arg, int64_t org_id, int64_t cost_micros);

/* journal: a file path, or NULL for none. Replays an existing journal into
 * the store before returning. */
int kr_meter_start(kr_meter **out, uv_loop_t *loop, const char *store_url, const char *journal,
                   kr_diag *d);
/* Appends to the journal (when there is one) and queues the record. */
void kr_meter_submit(kr_meter *m, const kr_usage_rec *rec, kr_meter_cb cb, void *arg);
bool kr_meter_healthy(kr_meter *m);
size_t kr_meter_depth(kr_meter *m);
uint64_t kr_meter_committed(kr_meter *m);
void kr_meter_stop(kr_meter *m);

#endif
