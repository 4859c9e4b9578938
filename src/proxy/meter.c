#include "proxy/meter.h"
#include "core/buf.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX       1024
#define HIGH_WATER      100000
#define BATCH_WINDOW_MS 10          /* gather rows this long before a commit */
#define STOP_GRACE_MS   5000        /* at stop, retry a failing store this long */
#define JOURNAL_MAGIC   0x314a524bu /* "KRJ1" */

/* One journal frame: a fixed-size record and its checksum (a frame torn by
 * a power loss fails the check and is skipped). */
typedef struct {
    uint32_t magic;
    uint32_t size;
    kr_usage_rec rec;
    uint64_t sum;
} frame;

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

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
    int jfd;   /* journal, -1 when none */
    bool idle; /* the writer waits for a first row (submit wakes it only then) */
};

static void journal_truncate_locked(kr_meter *m)
{
    if (m->jfd >= 0 && m->depth == 0 && ftruncate(m->jfd, 0) != 0)
        KR_WARN("usage journal: truncate failed: %s", strerror(errno));
}

/* Items first..last are done with: the loop runs their callbacks. */
static void hand_back_locked(kr_meter *m, item *first, item *last)
{
    if (m->dtail)
        m->dtail->next = first;
    else
        m->dhead = first;
    m->dtail = last;
    uv_async_send(&m->async);
}

static void *writer(void *p)
{
    kr_meter *m = p;
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    unsigned backoff_ms = 50;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        m->idle = true;
        while (!m->head && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        m->idle = false;
        if (!m->head) break;
        if (!m->stopping && m->depth < BATCH_MAX) {
            /* group commit: let rows gather for a moment; the journal, not
             * this commit, is what makes them durable */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += BATCH_WINDOW_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!m->stopping && m->depth < BATCH_MAX &&
                   pthread_cond_timedwait(&m->cv, &m->mu, &until) == 0) {
            }
        }
        /* take up to BATCH_MAX items */
        item *first = m->head, *last = first;
        size_t n = 1;
        while (last->next && n < BATCH_MAX)
            last = last->next, n++;
        m->head = last->next;
        if (!m->head) m->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&m->mu);
        size_t i = 0;
        for (item *it = first; it; it = it->next)
            batch[i++] = it->rec;
        uint64_t stop_deadline = 0;
        bool given_up = false;
        for (;;) {
            kr_diag d = {{0}};
            int rc = kr_usage_record(m->st, batch, n, &d);
            if (!rc) break;
            pthread_mutex_lock(&m->mu);
            bool stopping = m->stopping;
            pthread_mutex_unlock(&m->mu);
            if (stopping && m->jfd >= 0) {
                if (!stop_deadline)
                    stop_deadline = kr_mono_ns() + STOP_GRACE_MS * 1000000ull;
                else if (kr_mono_ns() > stop_deadline) {
                    KR_ERROR("usage writer: the store still fails at shutdown; %zu row(s) stay in "
                             "the usage journal and are written at the next start",
                             kr_meter_depth(m));
                    given_up = true;
                    break;
                }
            }
            if (!atomic_exchange(&m->failing, true))
                KR_ERROR("usage writer: store write failed (%s: %s); retrying, the proxy refuses "
                         "new metered requests until it recovers",
                         kr_err_name(rc), d.msg);
            struct timespec ts = {backoff_ms / 1000, (long)(backoff_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            if (backoff_ms < 2000) backoff_ms *= 2;
        }
        if (given_up) {
            /* everything left stays in the journal for the next start; the
             * callbacks still run (they release their requests) */
            pthread_mutex_lock(&m->mu);
            if (m->head) last->next = m->head, last = m->tail;
            m->head = m->tail = NULL;
            m->depth = 0;
            hand_back_locked(m, first, last);
            break;
        }
        if (atomic_exchange(&m->failing, false)) KR_WARN("usage writer: store writes recovered");
        backoff_ms = 50;
        atomic_fetch_add(&m->committed, n);
        pthread_mutex_lock(&m->mu);
        m->depth -= n;
        journal_truncate_locked(m);
        hand_back_locked(m, first, last);
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

/* Writes every intact frame of the journal into the store. */
static int replay(kr_meter *m, kr_diag *d)
{
    if (lseek(m->jfd, 0, SEEK_SET) < 0)
        return kr_fail(d, KR_EIO, "usage journal: %s", strerror(errno));
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    size_t n = 0, total = 0, bad = 0;
    frame f;
    int rc = 0;
    for (;;) {
        ssize_t r = read(m->jfd, &f, sizeof f);
        if (r == 0) break;
        if (r != (ssize_t)sizeof f) {
            bad++; /* a torn tail */
            break;
        }
        if (f.magic != JOURNAL_MAGIC || f.size != sizeof f.rec ||
            f.sum != fnv(&f.rec, sizeof f.rec)) {
            bad++;
            continue;
        }
        f.rec.request_id[sizeof f.rec.request_id - 1] = 0;
        f.rec.model[sizeof f.rec.model - 1] = 0;
        f.rec.provider[sizeof f.rec.provider - 1] = 0;
        f.rec.status[sizeof f.rec.status - 1] = 0;
        batch[n++] = f.rec;
        total++;
        if (n == BATCH_MAX && (rc = kr_usage_record(m->st, batch, n, d))) break;
        if (n == BATCH_MAX) n = 0;
    }
    if (!rc && n) rc = kr_usage_record(m->st, batch, n, d);
    free(batch);
    if (rc) return rc;
    if (total || bad)
        KR_WARN("usage journal: replayed %zu record(s) into the store after an unclean stop%s",
                total, bad ? " (skipped a damaged frame)" : "");
    if (ftruncate(m->jfd, 0) != 0) return kr_fail(d, KR_EIO, "usage journal: %s", strerror(errno));
    return 0;
}

int kr_meter_start(kr_meter **out, uv_loop_t *loop, const char *store_url, const char *journal,
                   kr_diag *d)
{
    kr_meter *m = kr_xcalloc(1, sizeof *m);
    m->jfd = -1;
    int rc = kr_store_open(store_url, &m->st, d);
    if (rc) {
        free(m);
        return rc;
    }
    if (journal && *journal) {
        m->jfd = open(journal, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (m->jfd >= 0 && flock(m->jfd, LOCK_EX | LOCK_NB) != 0) {
            /* one journal per instance: a second instance replaying and
             * truncating a live journal would lose or double rows */
            rc = errno == EWOULDBLOCK
                     ? kr_fail(d, KR_EBUSY,
                               "usage journal %s is in use by another keyrail process; give each "
                               "instance its own [server] usage_journal",
                               journal)
                     : kr_fail(d, KR_EIO, "usage journal %s: lock: %s", journal, strerror(errno));
        }
        if (m->jfd < 0 || rc || (rc = replay(m, d))) {
            if (!rc) rc = kr_fail(d, KR_EIO, "usage journal %s: %s", journal, strerror(errno));
            if (m->jfd >= 0) close(m->jfd);
            kr_store_close(m->st);
            free(m);
            return rc;
        }
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
    if (m->jfd >= 0) {
        frame f;
        memset(&f, 0, sizeof f);
        f.magic = JOURNAL_MAGIC;
        f.size = sizeof f.rec;
        f.rec = *rec;
        f.sum = fnv(&f.rec, sizeof f.rec);
        /* O_APPEND: one write is one frame; the page cache survives kill -9 */
        if (write(m->jfd, &f, sizeof f) != (ssize_t)sizeof f)
            KR_ERROR("usage journal: write failed: %s; this row is only in memory until committed",
                     strerror(errno));
    }
    if (m->tail)
        m->tail->next = it;
    else
        m->head = it;
    m->tail = it;
    m->depth++;
    /* wake the writer for its first row or a full batch, not for each row
     * of the window it is gathering (a futex round trip per request) */
    if (m->idle || m->depth >= BATCH_MAX) pthread_cond_signal(&m->cv);
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
    if (m->jfd >= 0) close(m->jfd);
    kr_store_close(m->st);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    uv_close((uv_handle_t *)&m->async, on_closed);
}
