/*
 * workq.h -- store access off the event loop.
 *
 * A work queue owns N threads, each with its own store connection (for
 * PostgreSQL this is the connection pool; for SQLite, WAL lets the readers
 * run beside the writer). The loop submits a job; `work` runs on a worker
 * thread with that thread's store; `done` runs back on the loop thread. A
 * job whose requester has gone away is cancelled with kr_job_cancel():
 * `work` may still run, `done` is not called, `cleanup` is, and the job is
 * freed.
 */
#ifndef KR_WORKQ_H
#define KR_WORKQ_H

#include <stdbool.h>
#include <uv.h>

#include "core/err.h"
#include "store/store.h"

typedef struct kr_workq kr_workq;
typedef struct kr_job kr_job;

typedef void (*kr_work_fn)(kr_store *st, kr_job *job); /* worker thread */
typedef void (*kr_done_fn)(kr_job *job);               /* loop thread */

struct kr_job {
    kr_work_fn work;
    kr_done_fn done;
    kr_done_fn cleanup; /* optional; runs after done, and for cancelled jobs too */
    void *arg;      /* the requester's */
    int rc;         /* set by work, for done */
    bool cancelled; /* loop thread only */
    kr_job *next;
};

int kr_workq_start(kr_workq **out, uv_loop_t *loop, const char *store_url, int nthreads,
                   kr_diag *d);
/* job must be heap-allocated by the caller (it may embed a larger struct
 * whose first member is the kr_job); the queue frees it with free() after
 * done (or after work, when cancelled). */
void kr_workq_submit(kr_workq *q, kr_job *job);
void kr_job_cancel(kr_job *job);
/* Pending + running jobs. */
size_t kr_workq_depth(kr_workq *q);
/* Runs remaining jobs, joins the threads, closes the stores. The loop must
 * run once more afterwards to close the async handle. */
void kr_workq_stop(kr_workq *q);

#endif
