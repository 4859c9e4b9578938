/*
 * meter.c -- the usage writer and its ports (meter.h).
 */
#include "proxy/meter.h"
#include "core/buf.h"
#include "core/lock.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
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

/* Rows wait in blocks: one allocation per BLK rows (kept for reuse), not a
 * malloc on the loop thread and a free on the writer per row. A block
 * belongs to one port. */
#define BLK       128
#define SPARE_MAX 4
typedef struct blk {
    struct blk *next;
    kr_meter_port *port;
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

struct kr_meter_port {
    kr_meter *m;
    int index;
    uv_async_t async;
    bool attached, detached; /* detached: under mu (the writer wakes it no more) */
    pthread_mutex_t mu;      /* this port's lists: its loop and the writer take it */
    blk *head, *tail;        /* waiting to be written; only the tail takes new rows */
    blk *spare;              /* drained blocks kept for reuse */
    unsigned nspare;
    done *dhead, *dtail; /* committed, callbacks pending */
    atomic_size_t depth; /* submitted and neither committed nor given up */
    atomic_uint_fast64_t committed;
    /* the journal belongs to the port's loop: it alone writes and truncates it */
    int jfd;            /* -1 when none */
    uint64_t submitted; /* rows submitted (loop thread) */
    uint64_t jbytes;    /* bytes in the journal (loop thread) */
};

struct kr_meter {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu; /* the writer's wait; never held by a loop but to wake it */
    pthread_cond_t cv;
    bool stopping;
    atomic_bool idle;     /* the writer waits for a first row (submit wakes it only then) */
    atomic_size_t queued; /* rows in the ports' lists */
    atomic_bool failing;
    atomic_uint_fast64_t committed;
    kr_store *st;
    int nports;
    unsigned rr; /* the port the next batch starts with (writer) */
    kr_meter_port ports[];
};

/* Blocks taken for a batch, in port order (a port's blocks back to back). */
static void hand_back_port(kr_meter_port *p, blk *first, blk *end, bool committed)
{
    done *groups = NULL, *gtail = NULL;
    done *slot[GROUPS_MAX];
    size_t ng = 0, rows = 0;
    for (blk *b = first; b != end; b = b->next) {
        rows += b->n;
        for (unsigned k = 0; committed && k < b->n; k++) {
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
    }
    if (committed) {
        /* committed before depth drops: the loop's truncation test reads them in that order */
        atomic_fetch_add(&p->committed, rows);
        atomic_fetch_add(&p->m->committed, rows);
    }
    KR_ASSERT(atomic_load(&p->depth) >= rows);
    atomic_fetch_sub(&p->depth, rows);
    kr_lock(&p->mu, KR_LOCK_METER);
    for (blk *b = first, *next; b != end; b = next) {
        next = b->next;
        if (p->nspare < SPARE_MAX) {
            b->next = p->spare;
            p->spare = b;
            p->nspare++;
        } else {
            free(b);
        }
    }
    if (groups) {
        if (p->dtail)
            p->dtail->next = groups;
        else
            p->dhead = groups;
        p->dtail = gtail;
        if (!p->detached) uv_async_send(&p->async);
    }
    kr_unlock(&p->mu);
}

/* Sums the batch's callbacks per port and (callback, argument, org) and
 * recycles the blocks; hands the sums to each port's loop. committed: the
 * rows are in the store (a batch given up at stop runs no callback: nothing
 * was debited). */
static void hand_back(blk *first, bool committed)
{
    while (first) {
        blk *end = first->next;
        while (end && end->port == first->port)
            end = end->next;
        hand_back_port(first->port, first, end, committed);
        first = end;
    }
}

/* Takes whole blocks from the ports, up to BATCH_MAX rows, starting with a
 * different port each batch so that none waits behind a busy one. */
static blk *take_batch(kr_meter *m, size_t *nrows)
{
    blk *first = NULL, *last = NULL;
    size_t n = 0;
    for (int k = 0; k < m->nports && n < BATCH_MAX; k++) {
        kr_meter_port *p = &m->ports[(m->rr + (unsigned)k) % (unsigned)m->nports];
        kr_lock(&p->mu, KR_LOCK_METER);
        /* a taken block gets no more rows: the loop only appends to p->tail */
        while (p->head && n + p->head->n <= BATCH_MAX) {
            blk *b = p->head;
            p->head = b->next;
            if (!p->head) p->tail = NULL;
            b->next = NULL;
            n += b->n;
            if (last)
                last->next = b;
            else
                first = b;
            last = b;
        }
        kr_unlock(&p->mu);
    }
    m->rr++;
    KR_ASSERT(n <= BATCH_MAX);
    atomic_fetch_sub(&m->queued, n);
    *nrows = n;
    return first;
}

/* Everything still in the ports' lists, for a writer that gives up. */
static blk *take_all(kr_meter *m)
{
    blk *first = NULL, *last = NULL;
    for (int k = 0; k < m->nports; k++) {
        kr_meter_port *p = &m->ports[k];
        kr_lock(&p->mu, KR_LOCK_METER);
        if (p->head) {
            if (last)
                last->next = p->head;
            else
                first = p->head;
            last = p->tail;
            p->head = p->tail = NULL;
        }
        kr_unlock(&p->mu);
    }
    atomic_store(&m->queued, 0);
    return first;
}

static void *writer(void *arg)
{
    kr_meter *m = arg;
    /* a batch commit is ~10 us of CPU per row: give the CPU back every 50 us
     * of it, so a woken loop thread never waits for the whole batch
     * (docs/PERFORMANCE.md: the 1-connection p99) */
    kr_store_yield_every_us(50);
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    unsigned backoff_ms = 50;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        /* idle before the test, the test under mu: a submit that misses
         * the flag added its row before the test (no lost wake-up) */
        atomic_store(&m->idle, true);
        while (!atomic_load(&m->queued) && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        atomic_store(&m->idle, false);
        if (!atomic_load(&m->queued)) break;
        if (!m->stopping && atomic_load(&m->queued) < BATCH_MAX) {
            /* group commit: let rows gather for a moment; the journal, not
             * this commit, is what makes them durable */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += BATCH_WINDOW_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!m->stopping && atomic_load(&m->queued) < BATCH_MAX &&
                   pthread_cond_timedwait(&m->cv, &m->mu, &until) == 0) {
            }
        }
        pthread_mutex_unlock(&m->mu);
        size_t n;
        blk *first = take_batch(m, &n);
        size_t i = 0;
        for (blk *b = first; b; b = b->next) {
            memcpy(batch + i, b->rec, b->n * sizeof *batch);
            i += b->n;
        }
        uint64_t stop_deadline = 0;
        bool given_up = false;
        for (; n;) {
            kr_diag d = {{0}};
            int rc = kr_usage_record(m->st, batch, n, &d);
            if (!rc) break;
            pthread_mutex_lock(&m->mu);
            bool stopping = m->stopping;
            pthread_mutex_unlock(&m->mu);
            if (stopping && m->ports[0].jfd >= 0) {
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
            hand_back(first, false);
            hand_back(take_all(m), false);
            pthread_mutex_lock(&m->mu);
            break;
        }
        if (n && atomic_exchange(&m->failing, false)) KR_WARN("usage writer: store writes recovered");
        backoff_ms = 50;
        hand_back(first, true);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    free(batch);
    return NULL;
}

/* Loop thread: once every row written to the port's journal is in the
 * store, the journal can start over; done when it has grown past
 * JOURNAL_TRUNC (or at a clean stop), not after every batch: a truncate
 * frees page-cache pages, and the replay of committed rows is idempotent
 * anyway. */
static void journal_maybe_truncate(kr_meter_port *p, uint64_t at_least)
{
    if (p->jfd < 0 || p->jbytes < at_least) return;
    if (atomic_load(&p->committed) != p->submitted) return;
    if (ftruncate(p->jfd, 0) != 0) {
        KR_WARN("usage journal: truncate failed: %s", strerror(errno));
        return;
    }
    p->jbytes = 0;
}

static void run_callbacks(kr_meter_port *p)
{
    kr_lock(&p->mu, KR_LOCK_METER);
    done *g = p->dhead;
    p->dhead = p->dtail = NULL;
    kr_unlock(&p->mu);
    while (g) {
        done *next = g->next;
        g->cb(g->arg, g->org, g->cost);
        free(g);
        g = next;
    }
}

static void on_async(uv_async_t *a)
{
    kr_meter_port *p = a->data;
    run_callbacks(p);
    journal_maybe_truncate(p, JOURNAL_TRUNC);
}

/* Writes every intact frame of the journal into the store. */
static int replay(kr_meter *m, int jfd, kr_diag *d)
{
    if (lseek(jfd, 0, SEEK_SET) < 0)
        return kr_fail(d, KR_EIO, "usage journal: %s", strerror(errno));
    kr_usage_rec *batch = kr_xmalloc(BATCH_MAX * sizeof *batch);
    size_t n = 0, total = 0, bad = 0;
    frame f;
    int rc = 0;
    for (;;) {
        /* a frame: magic and size, the record (a KRJ1 record is a prefix of
         * today's), its checksum */
        ssize_t r = read(jfd, &f, 8);
        if (r == 0) break;
        size_t size = f.magic == JOURNAL_MAGIC1 ? JOURNAL_SIZE1 : sizeof f.rec;
        memset(&f.rec, 0, sizeof f.rec);
        uint64_t sum;
        if (r != 8 || read(jfd, &f.rec, size) != (ssize_t)size ||
            read(jfd, &sum, sizeof sum) != (ssize_t)sizeof sum) {
            bad++; /* a torn tail */
            break;
        }
        if ((f.magic != JOURNAL_MAGIC && f.magic != JOURNAL_MAGIC1) || f.size != size) {
            bad++;
            break; /* a damaged head: where the next frame starts is unknown */
        }
        if (sum != kr_fnv64(&f.rec, size)) {
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
    if (ftruncate(jfd, 0) != 0) return kr_fail(d, KR_EIO, "usage journal: %s", strerror(errno));
    return 0;
}

/* The journal file of port i: the path itself for port 0, "path.i" after. */
static void journal_name(const char *journal, int i, char *out, size_t cap)
{
    if (i == 0)
        kr_strlcpy(out, journal, cap);
    else
        kr_snprintf(out, cap, "%s.%d", journal, i);
}

/* Opens (creates) one journal file, locked, and replays what it holds. */
static int journal_open(kr_meter *m, const char *name, int *fd, kr_diag *d)
{
    int rc = 0;
    *fd = open(name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (*fd >= 0 && flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        /* one journal per instance: a second instance replaying and
         * truncating a live journal would lose or double rows */
        rc = errno == EWOULDBLOCK
                 ? kr_fail(d, KR_EBUSY,
                           "usage journal %s is in use by another keyrail process; give each "
                           "instance its own [server] usage_journal",
                           name)
                 : kr_fail(d, KR_EIO, "usage journal %s: lock: %s", name, strerror(errno));
    }
    if (*fd < 0 || rc || (rc = replay(m, *fd, d))) {
        if (!rc) rc = kr_fail(d, KR_EIO, "usage journal %s: %s", name, strerror(errno));
        if (*fd >= 0) close(*fd);
        *fd = -1;
    }
    return rc;
}

int kr_meter_start(kr_meter **out, const char *store_url, const char *journal, int nports,
                   kr_diag *d)
{
    KR_ASSERT(nports >= 1 && nports <= KR_METER_MAX_PORTS);
    kr_meter *m = kr_xcalloc(1, sizeof *m + (size_t)nports * sizeof m->ports[0]);
    m->nports = nports;
    for (int i = 0; i < nports; i++) {
        m->ports[i].jfd = -1;
        m->ports[i].m = m;
        m->ports[i].index = i;
    }
    int rc = kr_store_open(store_url, &m->st, d);
    if (rc) {
        free(m);
        return rc;
    }
    if (journal && *journal) {
        /* port 0's file first: its lock is the instance's; then every other
         * file of the path, those of an earlier start with more loops too */
        char name[1100];
        for (int i = 0; !rc && i < KR_METER_MAX_PORTS; i++) {
            journal_name(journal, i, name, sizeof name);
            if (i < nports) {
                rc = journal_open(m, name, &m->ports[i].jfd, d);
            } else if (access(name, F_OK) == 0) {
                int fd;
                if (!(rc = journal_open(m, name, &fd, d))) {
                    unlink(name);
                    close(fd);
                }
            }
        }
        if (rc) {
            for (int i = 0; i < nports; i++)
                if (m->ports[i].jfd >= 0) close(m->ports[i].jfd);
            kr_store_close(m->st);
            free(m);
            return rc;
        }
    }
    atomic_init(&m->queued, 0);
    atomic_init(&m->committed, 0);
    atomic_init(&m->idle, false);
    atomic_init(&m->failing, false);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    for (int i = 0; i < nports; i++) {
        pthread_mutex_init(&m->ports[i].mu, NULL);
        atomic_init(&m->ports[i].depth, 0);
        atomic_init(&m->ports[i].committed, 0);
    }
    pthread_create(&m->thread, NULL, writer, m);
    m->running = true;
    *out = m;
    return 0;
}

kr_meter_port *kr_meter_attach(kr_meter *m, int i, uv_loop_t *loop)
{
    KR_ASSERT(i >= 0 && i < m->nports && !m->ports[i].attached);
    kr_meter_port *p = &m->ports[i];
    uv_async_init(loop, &p->async, on_async);
    p->async.data = p;
    p->attached = true;
    return p;
}

void kr_meter_detach(kr_meter_port *p)
{
    if (!p || !p->attached) return;
    kr_lock(&p->mu, KR_LOCK_METER);
    p->detached = true;
    kr_unlock(&p->mu);
    run_callbacks(p);
    uv_close((uv_handle_t *)&p->async, NULL);
}

void kr_meter_submit(kr_meter_port *p, const kr_usage_rec *rec, kr_meter_cb cb, void *arg)
{
    kr_meter *m = p->m;
    if (p->jfd >= 0) {
        /* the port's loop alone writes its journal: no lock around the write */
        frame f;
        memset(&f, 0, sizeof f);
        f.magic = JOURNAL_MAGIC;
        f.size = sizeof f.rec;
        f.rec = *rec;
        f.sum = kr_fnv64(&f.rec, sizeof f.rec);
        /* O_APPEND: one write is one frame; the page cache survives kill -9 */
        if (write(p->jfd, &f, sizeof f) != (ssize_t)sizeof f)
            KR_ERROR("usage journal: write failed: %s; this row is only in memory until committed",
                     strerror(errno));
        else
            p->jbytes += sizeof f;
    }
    p->submitted++;
    atomic_fetch_add(&p->depth, 1);
    /* counted before it is in the list: the writer's count never falls
     * below zero (at worst it finds the row a moment after the count) */
    size_t q = atomic_fetch_add(&m->queued, 1) + 1;
    kr_lock(&p->mu, KR_LOCK_METER);
    blk *b = p->tail;
    if (!b || b->n == BLK) {
        if (p->spare) {
            b = p->spare;
            p->spare = b->next;
            p->nspare--;
        } else {
            kr_unlock(&p->mu); /* no allocation under the lock */
            b = kr_xmalloc(sizeof *b);
            kr_lock(&p->mu, KR_LOCK_METER);
        }
        b->n = 0;
        b->next = NULL;
        b->port = p;
        if (p->tail)
            p->tail->next = b;
        else
            p->head = b;
        p->tail = b;
    }
    KR_ASSERT(b->n < BLK && b == p->tail && b->port == p);
    b->rec[b->n] = *rec;
    b->cb[b->n] = cb;
    b->arg[b->n] = arg;
    b->n++;
    kr_unlock(&p->mu);
    /* wake the writer for its first row or a full batch, not for each row
     * of the window it is gathering (a futex round trip per request) */
    if (atomic_load(&m->idle) || q >= BATCH_MAX) {
        pthread_mutex_lock(&m->mu);
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
}

size_t kr_meter_depth(kr_meter *m)
{
    size_t n = 0;
    for (int i = 0; i < m->nports; i++)
        n += atomic_load_explicit(&m->ports[i].depth, memory_order_relaxed);
    return n;
}

bool kr_meter_healthy(kr_meter *m)
{
    return !atomic_load(&m->failing) && kr_meter_depth(m) < HIGH_WATER;
}

uint64_t kr_meter_committed(kr_meter *m)
{
    return atomic_load(&m->committed);
}

void kr_meter_stop(kr_meter *m)
{
    if (!m) return;
    if (m->running) {
        pthread_mutex_lock(&m->mu);
        m->stopping = true;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    for (int i = 0; i < m->nports; i++) {
        kr_meter_port *p = &m->ports[i];
        run_callbacks(p); /* every loop has ended: the callbacks' owners are still there */
        while (p->spare) {
            blk *b = p->spare;
            p->spare = b->next;
            free(b);
        }
        journal_maybe_truncate(p, 1); /* a clean stop leaves no committed row behind */
        if (p->jfd >= 0) close(p->jfd);
        pthread_mutex_destroy(&p->mu);
    }
    kr_store_close(m->st);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
