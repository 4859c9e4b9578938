#include "proxy/meter.h"
#include "core/buf.h"
#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_MAX 1024
#define HIGH_WATER 100000

typedef struct item {
    kr_usage_rec rec;
    kr_meter_cb cb;
    void *arg;
    struct item *next;
} item;

struct kr_meter {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head, *tail;   /* waiting to be written */
    item *dhead, *dtail; /* committed, callbacks pending */
    size_t depth;
    bool stopping;
    atomic_bool failing;
    atomic_uint_fast64_t committed;
    kr_store *st;
};

static void *writer(void *p)
{
    kr_meter *m = p;
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    unsigned backoff_ms = 50;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->head && !m->stopping) pthread_cond_wait(&m->cv, &m->mu);
        if (!m->head) break;
        /* take up to BATCH_MAX items */
        item *first = m->head, *last = first;
        size_t n = 1;
        while (last->next && n < BATCH_MAX) last = last->next, n++;
        m->head = last->next;
        if (!m->head) m->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&m->mu);
        size_t i = 0;
        for (item *it = first; it; it = it->next) batch[i++] = it->rec;
        for (;;) {
            kr_diag d = {{0}};
            int rc = kr_usage_record(m->st, batch, n, &d);
            if (!rc) break;
            if (!atomic_exchange(&m->failing, true))
                KR_ERROR("usage writer: store write failed (%s: %s); retrying, the proxy refuses "
                         "new metered requests until it recovers",
                         kr_err_name(rc), d.msg);
            struct timespec ts = {backoff_ms / 1000, (long)(backoff_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            if (backoff_ms < 2000) backoff_ms *= 2;
        }
        if (atomic_exchange(&m->failing, false)) KR_WARN("usage writer: store writes recovered");
        backoff_ms = 50;
        atomic_fetch_add(&m->committed, n);
        pthread_mutex_lock(&m->mu);
        m->depth -= n;
        if (m->dtail) m->dtail->next = first;
        else m->dhead = first;
        m->dtail = last;
        uv_async_send(&m->async);
    }
    pthread_mutex_unlock(&m->mu);
    free(batch);
    return NULL;
}

static void on_async(uv_async_t *a)
{
    kr_meter *m = a->data;
    pthread_mutex_lock(&m->mu);
    item *it = m->dhead;
    m->dhead = m->dtail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (it) {
        item *next = it->next;
        if (it->cb) it->cb(it->arg);
        free(it);
        it = next;
    }
}

int kr_meter_start(kr_meter **out, uv_loop_t *loop, const char *store_url, kr_diag *d)
{
    kr_meter *m = kr_xcalloc(1, sizeof *m);
    int rc = kr_store_open(store_url, &m->st, d);
    if (rc) {
        free(m);
        return rc;
    }
    m->loop = loop;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    uv_async_init(loop, &m->async, on_async);
    m->async.data = m;
    pthread_create(&m->thread, NULL, writer, m);
    *out = m;
    return 0;
}

void kr_meter_submit(kr_meter *m, const kr_usage_rec *rec, kr_meter_cb cb, void *arg)
{
    item *it = kr_xmalloc(sizeof *it);
    it->rec = *rec;
    it->cb = cb;
    it->arg = arg;
    it->next = NULL;
    pthread_mutex_lock(&m->mu);
    if (m->tail) m->tail->next = it;
    else m->head = it;
    m->tail = it;
    m->depth++;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

bool kr_meter_healthy(kr_meter *m)
{
    return !atomic_load(&m->failing) && kr_meter_depth(m) < HIGH_WATER;
}

size_t kr_meter_depth(kr_meter *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->depth;
    pthread_mutex_unlock(&m->mu);
    return n;
}

uint64_t kr_meter_committed(kr_meter *m)
{
    return atomic_load(&m->committed);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void kr_meter_stop(kr_meter *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    on_async(&m->async);
    kr_store_close(m->st);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    uv_close((uv_handle_t *)&m->async, on_closed);
}
