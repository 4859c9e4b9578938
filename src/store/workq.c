#include "store/workq.h"
#include "core/buf.h"
#include "core/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct kr_workq {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kr_job *head, *tail;         /* pending */
    kr_job *dhead, *dtail;       /* finished, for the loop */
    size_t depth;
    bool stopping;
    int nthreads;
    pthread_t *threads;
    kr_store **stores;
};

typedef struct {
    kr_workq *q;
    kr_store *st;
} thread_arg;

static void *worker(void *p)
{
    thread_arg *ta = p;
    kr_workq *q = ta->q;
    kr_store *st = ta->st;
    free(ta);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping) pthread_cond_wait(&q->cv, &q->mu);
        kr_job *j = q->head;
        if (!j) break; /* stopping and drained */
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        j->work(st, j);
        pthread_mutex_lock(&q->mu);
        j->next = NULL;
        if (q->dtail) q->dtail->next = j;
        else q->dhead = j;
        q->dtail = j;
        uv_async_send(&q->async);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void on_async(uv_async_t *a)
{
    kr_workq *q = a->data;
    pthread_mutex_lock(&q->mu);
    kr_job *j = q->dhead;
    q->dhead = q->dtail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (j) {
        kr_job *next = j->next;
        pthread_mutex_lock(&q->mu);
        q->depth--;
        pthread_mutex_unlock(&q->mu);
        if (!j->cancelled && j->done) j->done(j);
        if (j->cleanup) j->cleanup(j);
        free(j);
        j = next;
    }
}

int kr_workq_start(kr_workq **out, uv_loop_t *loop, const char *store_url, int nthreads,
                   kr_diag *d)
{
    kr_workq *q = kr_xcalloc(1, sizeof *q);
    q->loop = loop;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->threads = kr_xcalloc((size_t)nthreads, sizeof *q->threads);
    q->stores = kr_xcalloc((size_t)nthreads, sizeof *q->stores);
    for (int i = 0; i < nthreads; i++) {
        int rc = kr_store_open(store_url, &q->stores[i], d);
        if (rc) {
            for (int k = 0; k < i; k++) kr_store_close(q->stores[k]);
            free(q->threads);
            free(q->stores);
            free(q);
            return rc;
        }
    }
    uv_async_init(loop, &q->async, on_async);
    q->async.data = q;
    for (int i = 0; i < nthreads; i++) {
        thread_arg *ta = kr_xmalloc(sizeof *ta);
        ta->q = q;
        ta->st = q->stores[i];
        pthread_create(&q->threads[i], NULL, worker, ta);
    }
    q->nthreads = nthreads;
    *out = q;
    return 0;
}

void kr_workq_submit(kr_workq *q, kr_job *job)
{
    job->next = NULL;
    job->cancelled = false;
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = job;
    else q->head = job;
    q->tail = job;
    q->depth++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void kr_job_cancel(kr_job *job)
{
    job->cancelled = true;
}

size_t kr_workq_depth(kr_workq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->depth;
    pthread_mutex_unlock(&q->mu);
    return n;
}

static void on_async_closed(uv_handle_t *h)
{
    kr_workq *q = h->data;
    free(q);
}

void kr_workq_stop(kr_workq *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++) pthread_join(q->threads[i], NULL);
    on_async(&q->async); /* deliver what finished */
    for (int i = 0; i < q->nthreads; i++) kr_store_close(q->stores[i]);
    free(q->threads);
    free(q->stores);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    uv_close((uv_handle_t *)&q->async, on_async_closed);
}
