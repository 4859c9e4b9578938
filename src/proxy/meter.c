#include "proxy/meter.h"
#include "core/buf.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX       1024
#define HIGH_WATER      100000
#define BATCH_WINDOW_MS 10          /* gather rows this long before a commit */
#define STOP_GRACE_MS   5000        /* at stop, retry a failing store this long */
#define JOURNAL_MAGIC   0x324a524bu /* "KRJ2": a record with its route */
#define JOURNAL_MAGIC1  0x314a524bu /* "KRJ1": before the route (replayed as platform) */
#define JOURNAL_SIZE1   offsetof(kr_usage_rec, route)
#define JOURNAL_TRUNC   (4u << 20)  /* truncate the journal past this size once all of it committed */
#define GROUPS_MAX      64          /* callback groups summed per batch before spilling */

/* One journal frame: a fixed-size record and its checksum (a frame torn by
 * a power loss fails the check and is skipped). */
typedef struct {
    uint32_t magic;
    uint32_t size;
    kr_usage_rec rec;
    uint64_t sum;
} frame;
/* on disk a frame is its fields back to back: the replay reads them so */
_Static_assert(offsetof(frame, rec) == 8 && offsetof(frame, sum) == 8 + sizeof(kr_usage_rec) &&
                   JOURNAL_SIZE1 % 8 == 0,
               "journal frames have no padding");

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Rows wait in blocks: one allocation per BLK rows (kept for reuse), not a
 * malloc on the loop thread and a free on the writer per row. */
#define BLK       128
#define SPARE_MAX 4
typedef struct blk {
    struct blk *next;
    unsigned n; /* rows filled */
    kr_meter_cb cb[BLK];
    void *arg[BLK];
    kr_usage_rec rec[BLK];
} blk;

/* A committed batch's callbacks, one per (callback, argument, org) with the
 * costs summed: the loop runs a handful per batch, not one per row. */
typedef struct done {
    kr_meter_cb cb;
    void *arg;
    int64_t org, cost;
    struct done *next;
} done;

struct kr_meter {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu; /* held for list operations only, never across a system call */
    pthread_cond_t cv;
    blk *head, *tail;    /* waiting to be written; only the tail takes new rows */
    size_t queued;       /* rows in head..tail */
    blk *spare;          /* drained blocks kept for reuse */
    unsigned nspare;
    done *dhead, *dtail; /* committed, callbacks pending */
    bool stopping;
    bool idle; /* the writer waits for a first row (submit wakes it only then) */
    atomic_size_t depth; /* submitted and neither committed nor given up */
    atomic_bool failing;
    atomic_uint_fast64_t committed;
    kr_store *st;
    /* the journal belongs to the loop thread: it alone writes and truncates it */
    int jfd; /* -1 when none */
    uint64_t submitted; /* rows submitted (loop thread) */
    uint64_t jbytes;    /* bytes in the journal (loop thread) */
};

/* Sums the batch's callbacks per (callback, argument, org) and recycles
 * the blocks; hands the sums to the loop. committed: the rows are in the
 * store (a batch given up at stop runs no callback: nothing was debited). */
static void hand_back(kr_meter *m, blk *first, bool committed)
{
    done *groups = NULL, *gtail = NULL;
    done *slot[GROUPS_MAX];
    size_t ng = 0;
    for (blk *b = first; committed && b; b = b->next)
        for (unsigned k = 0; k < b->n; k++) {
            if (!b->cb[k]) continue;
            done *g = NULL;
            for (size_t i = 0; i < ng && !g; i++)
                if (slot[i]->cb == b->cb[k] && slot[i]->arg == b->arg[k] &&
                    slot[i]->org == b->rec[k].org_id)
                    g = slot[i];
            if (!g) {
                g = kr_xcalloc(1, sizeof *g);
                g->cb = b->cb[k];
                g->arg = b->arg[k];
                g->org = b->rec[k].org_id;
                if (ng < GROUPS_MAX) slot[ng++] = g;
                if (gtail)
                    gtail->next = g;
                else
                    groups = g;
                gtail = g;
            }
            g->cost += b->rec[k].cost_micros;
        }
    pthread_mutex_lock(&m->mu);
    for (blk *b = first, *next; b; b = next) {
        next = b->next;
        if (m->nspare < SPARE_MAX) {
            b->next = m->spare;
            m->spare = b;
            m->nspare++;
        } else {
            free(b);
        }
    }
    if (groups) {
        if (m->dtail)
            m->dtail->next = groups;
        else
            m->dhead = groups;
        m->dtail = gtail;
    }
    pthread_mutex_unlock(&m->mu);
    if (groups) uv_async_send(&m->async);
}

static void *writer(void *p)
{
    kr_meter *m = p;
    /* a batch commit is ~10 us of CPU per row: give the CPU back every 50 us
     * of it, so a woken loop thread never waits for the whole batch
     * (docs/PERFORMANCE.md: the 1-connection p99) */
    kr_store_yield_every_us(50);
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    unsigned backoff_ms = 50;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        m->idle = true;
        while (!m->head && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        m->idle = false;
        if (!m->head) break;
        if (!m->stopping && m->queued < BATCH_MAX) {
            /* group commit: let rows gather for a moment; the journal, not
             * this commit, is what makes them durable */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += BATCH_WINDOW_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!m->stopping && m->queued < BATCH_MAX &&
                   pthread_cond_timedwait(&m->cv, &m->mu, &until) == 0) {
            }
        }
        /* take whole blocks, up to BATCH_MAX rows (a taken block gets no
         * more rows: the loop only appends to m->tail) */
        blk *first = m->head, *last = first;
        size_t n = first->n;
        while (last->next && n + last->next->n <= BATCH_MAX)
            last = last->next, n += last->n;
        m->head = last->next;
        if (!m->head) m->tail = NULL;
        last->next = NULL;
        KR_ASSERT(n <= BATCH_MAX && m->queued >= n);
        m->queued -= n;
        pthread_mutex_unlock(&m->mu);
        size_t i = 0;
        for (blk *b = first; b; b = b->next) {
            memcpy(batch + i, b->rec, b->n * sizeof *batch);
            i += b->n;
        }
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
            /* everything left stays in the journal for the next start */
            pthread_mutex_lock(&m->mu);
            if (m->head) last->next = m->head;
            m->head = m->tail = NULL;
            m->queued = 0;
            pthread_mutex_unlock(&m->mu);
            atomic_store(&m->depth, 0);
            hand_back(m, first, false);
            pthread_mutex_lock(&m->mu);
            break;
        }
        if (atomic_exchange(&m->failing, false)) KR_WARN("usage writer: store writes recovered");
        backoff_ms = 50;
        /* committed before depth drops: the loop's truncation test reads them in that order */
        atomic_fetch_add(&m->committed, n);
        atomic_fetch_sub(&m->depth, n);
        hand_back(m, first, true);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    free(batch);
    return NULL;
}

/* Loop thread: once every row written to the journal is in the store, the
 * journal can start over; done when it has grown past JOURNAL_TRUNC (or at
 * a clean stop), not after every batch: a truncate frees page-cache pages,
 * and the replay of committed rows is idempotent anyway. */
static void journal_maybe_truncate(kr_meter *m, uint64_t at_least)
{
    if (m->jfd < 0 || m->jbytes < at_least) return;
    if (atomic_load(&m->committed) != m->submitted) return;
    if (ftruncate(m->jfd, 0) != 0) {
        KR_WARN("usage journal: truncate failed: %s", strerror(errno));
        return;
    }
    m->jbytes = 0;
}

static void on_async(uv_async_t *a)
{
    kr_meter *m = a->data;
    pthread_mutex_lock(&m->mu);
    done *g = m->dhead;
    m->dhead = m->dtail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (g) {
        done *next = g->next;
        g->cb(g->arg, g->org, g->cost);
        free(g);
        g = next;
    }
    journal_maybe_truncate(m, JOURNAL_TRUNC);
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
        /* a frame: magic and size, the record (a KRJ1 record is a prefix of
         * today's), its checksum */
        ssize_t r = read(m->jfd, &f, 8);
        if (r == 0) break;
        size_t size = f.magic == JOURNAL_MAGIC1 ? JOURNAL_SIZE1 : sizeof f.rec;
        memset(&f.rec, 0, sizeof f.rec);
        uint64_t sum;
        if (r != 8 || read(m->jfd, &f.rec, size) != (ssize_t)size ||
            read(m->jfd, &sum, sizeof sum) != (ssize_t)sizeof sum) {
            bad++; /* a torn tail */
            break;
        }
        if ((f.magic != JOURNAL_MAGIC && f.magic != JOURNAL_MAGIC1) || f.size != size) {
            bad++;
            break; /* a damaged head: where the next frame starts is unknown */
        }
        if (sum != fnv(&f.rec, size)) {
            bad++;
            continue; /* a damaged record: skipped, the next frame follows */
        }
        if (f.magic == JOURNAL_MAGIC1) kr_strlcpy(f.rec.route, "platform", sizeof f.rec.route);
        f.rec.request_id[sizeof f.rec.request_id - 1] = 0;
        f.rec.model[sizeof f.rec.model - 1] = 0;
        f.rec.provider[sizeof f.rec.provider - 1] = 0;
        f.rec.status[sizeof f.rec.status - 1] = 0;
        f.rec.route[sizeof f.rec.route - 1] = 0;
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
    atomic_init(&m->depth, 0);
    atomic_init(&m->committed, 0);
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
    if (m->jfd >= 0) {
        /* the loop thread alone writes the journal: no lock around the write */
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
        else
            m->jbytes += sizeof f;
    }
    m->submitted++;
    atomic_fetch_add(&m->depth, 1);
    pthread_mutex_lock(&m->mu);
    blk *b = m->tail;
    if (!b || b->n == BLK) {
        if (m->spare) {
            b = m->spare;
            m->spare = b->next;
            m->nspare--;
        } else {
            pthread_mutex_unlock(&m->mu); /* no allocation under the lock */
            b = kr_xmalloc(sizeof *b);
            pthread_mutex_lock(&m->mu);
        }
        b->n = 0;
        b->next = NULL;
        if (m->tail)
            m->tail->next = b;
        else
            m->head = b;
        m->tail = b;
    }
    KR_ASSERT(b->n < BLK && b == m->tail);
    b->rec[b->n] = *rec;
    b->cb[b->n] = cb;
    b->arg[b->n] = arg;
    b->n++;
    m->queued++;
    /* wake the writer for its first row or a full batch, not for each row
     * of the window it is gathering (a futex round trip per request) */
    if (m->idle || m->queued >= BATCH_MAX) pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

bool kr_meter_healthy(kr_meter *m)
{
    return !atomic_load(&m->failing) && kr_meter_depth(m) < HIGH_WATER;
}

size_t kr_meter_depth(kr_meter *m)
{
    return atomic_load(&m->depth);
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
    while (m->spare) {
        blk *b = m->spare;
        m->spare = b->next;
        free(b);
    }
    journal_maybe_truncate(m, 1); /* a clean stop leaves no committed row behind */
    if (m->jfd >= 0) close(m->jfd);
    kr_store_close(m->st);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    uv_close((uv_handle_t *)&m->async, on_closed);
}
