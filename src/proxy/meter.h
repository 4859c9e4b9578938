/*
 * meter.h -- the usage writer: one thread with its own store connection
 * that records usage rows, the daily rollup and the credit debit in batched
 * transactions (group commit), off the event loop.
 *
 * Each event loop (server.workers) submits through its own port: its own
 * queue of rows under a mutex only it and the writer take (for list
 * operations, never across a system call), its own journal file and its own
 * wake-up for the callbacks. No lock is shared by all loops per row.
 *
 * Durability without a commit on the hot path: with a journal, every record
 * is first appended to the port's journal file (one write(), on the loop
 * thread, before the response ends) and then written to the store in
 * batches. Port 0 journals to server.usage_journal, port N to that path
 * with ".N" appended. After a crash (kill -9) every journal file of the
 * path is replayed into the store before the next start serves anything
 * (whatever the number of loops then); request ids make the replay
 * idempotent. A loop alone writes its journal, and truncates it once
 * everything in it has been committed and it has grown past 4 MiB (and at a
 * clean stop). Without a journal (server.usage_sync = 0) a crash can lose
 * what was queued.
 *
 * Nothing is dropped: a failed batch is retried with backoff until it
 * commits. While the store is failing, kr_meter_healthy() is false and the
 * proxy refuses new metered work (503) instead of serving it unmetered. At
 * stop, the queue is flushed; if the store still fails after the grace, the
 * journal keeps the rest for the next start.
 *
 * After a batch commits, each port's loop runs one callback per (callback,
 * argument, org) of the batch with the costs summed -- not one per row --
 * and no request is kept alive until its row commits.
 */
#ifndef KR_METER_H
#define KR_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "store/store.h"

typedef struct kr_meter kr_meter;
typedef struct kr_meter_port kr_meter_port;

#define KR_METER_MAX_PORTS 64
/* After a batch committed, once per (callback, argument, org) of its rows,
 * with their costs summed. */
typedef void (*kr_meter_cb)(void *arg, int64_t org_id, int64_t cost_micros);

/* journal: a file path, or NULL for none. Replays every existing journal
 * file of the path into the store before returning, and opens one per port
 * (nports: 1..KR_METER_MAX_PORTS). */
int kr_meter_start(kr_meter **out, const char *store_url, const char *journal, int nports,
                   kr_diag *d);
/* Port i, attached to loop (called on that loop's thread, before it runs). */
kr_meter_port *kr_meter_attach(kr_meter *m, int i, uv_loop_t *loop);
/* On the port's loop thread, before that loop closes: pending callbacks run
 * now, later ones are not delivered to it (kr_meter_stop runs them). */
void kr_meter_detach(kr_meter_port *p);
/* On the port's loop thread: appends to its journal (when there is one) and
 * queues the record. */
void kr_meter_submit(kr_meter_port *p, const kr_usage_rec *rec, kr_meter_cb cb, void *arg);
bool kr_meter_healthy(kr_meter *m);
size_t kr_meter_depth(kr_meter *m);
uint64_t kr_meter_committed(kr_meter *m);
/* After every port was detached and its loop closed: writes what is queued,
 * runs the last callbacks, truncates the journals. */
void kr_meter_stop(kr_meter *m);

#endif
