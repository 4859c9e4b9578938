/*
 * db_sqlite.c -- the embedded SQLite driver. WAL mode, NORMAL sync (a commit
 * survives a process crash; the last transactions may be lost on power loss,
 * see docs/SECURITY.md), foreign keys on, a busy timeout so several keyrail
 * processes (serve + CLI) can share one file, and a 1 MiB page cache per
 * connection (keyrail opens a few: store workers, the usage writer).
 */
#include "store/db.h"
#include "store/store.h"
#include "core/buf.h"

#include <sched.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STMT_CACHE 48

typedef struct {
    kr_db base;
    sqlite3 *h;
    /* prepared statements by SQL text: store.c's statements are fixed
     * strings, so preparing each once per connection saves most of the
     * per-query cost on the usage writer's hot path */
    struct {
        const char *key; /* the caller's pointer, confirmed by text below */
        sqlite3_stmt *st;
        uint64_t used;
    } cache[STMT_CACHE];
    uint64_t tick;
} db_sqlite;

static sqlite3_stmt *cache_get(db_sqlite *s, const char *sql)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (s->cache[i].st && s->cache[i].key == sql && !strcmp(sqlite3_sql(s->cache[i].st), sql)) {
            s->cache[i].used = ++s->tick;
            sqlite3_stmt *st = s->cache[i].st;
            s->cache[i].st = NULL; /* checked out: a nested use prepares its own */
            return st;
        }
    return NULL;
}

static void cache_put(db_sqlite *s, const char *sql, sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    int victim = 0;
    for (int i = 0; i < STMT_CACHE; i++) {
        if (!s->cache[i].st) {
            victim = i;
            break;
        }
        if (s->cache[i].used < s->cache[victim].used) victim = i;
    }
    if (s->cache[victim].st) sqlite3_finalize(s->cache[victim].st);
    s->cache[victim].key = sql;
    s->cache[victim].st = st;
    s->cache[victim].used = ++s->tick;
}

static int map_err(sqlite3 *h, int rc, kr_diag *d)
{
    int ext = sqlite3_extended_errcode(h);
    const char *msg = sqlite3_errmsg(h);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        (void)ext;
        return kr_fail(d, KR_EEXISTS, "constraint: %s", msg);
    }
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        return kr_fail(d, KR_EBUSY, "database is locked: %s", msg);
    return kr_fail(d, KR_ESTORE, "sqlite: %s", msg);
}

static void sq_close(kr_db *db)
{
    db_sqlite *s = (db_sqlite *)db;
    for (int i = 0; i < STMT_CACHE; i++)
        if (s->cache[i].st) sqlite3_finalize(s->cache[i].st);
    sqlite3_close_v2(s->h);
    free(s);
}

static int sq_query(kr_db *db, const char *sql, const kr_dbval *params, size_t nparams,
                    kr_dbres *res, kr_diag *d)
{
    db_sqlite *s = (db_sqlite *)db;
    sqlite3_stmt *st = cache_get(s, sql);
    int rc;
    if (!st) {
        rc = sqlite3_prepare_v3(s->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK) return map_err(s->h, rc, d);
    }
    /* walk the statement's parameters ($N, numbered by first appearance)
     * rather than looking each $N up by name: no formatting per value */
    int np = sqlite3_bind_parameter_count(st);
    for (int idx = 1; idx <= np; idx++) {
        const char *name = sqlite3_bind_parameter_name(st, idx);
        size_t i = 0;
        if (name && name[0] == '$')
            for (const char *c = name + 1; *c >= '0' && *c <= '9' && i < 1000; c++)
                i = i * 10 + (size_t)(*c - '0');
        if (i == 0 || i > nparams) continue; /* not a $N of ours: left NULL */
        const kr_dbval *v = &params[i - 1];
        if (v->type == KR_DBV_TEXT && v->s)
            rc = sqlite3_bind_text(st, idx, v->s, -1, SQLITE_STATIC);
        else if (v->type == KR_DBV_INT)
            rc = sqlite3_bind_int64(st, idx, v->i);
        else
            rc = sqlite3_bind_null(st, idx);
        if (rc != SQLITE_OK) {
            rc = map_err(s->h, rc, d);
            cache_put(s, sql, st);
            return rc;
        }
    }
    if (res) memset(res, 0, sizeof *res);
    size_t cap = 0;
    for (;;) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            rc = map_err(s->h, rc, d);
            cache_put(s, sql, st);
            if (res) kr_dbres_free(res);
            return rc;
        }
        if (!res) continue;
        size_t nc = (size_t)sqlite3_column_count(st);
        res->ncols = nc;
        if ((res->nrows + 1) * nc > cap) {
            cap = cap ? cap * 2 : nc * 8;
            while (cap < (res->nrows + 1) * nc)
                cap *= 2;
            res->cells = kr_xrealloc(res->cells, cap * sizeof(char *));
        }
        for (size_t c = 0; c < nc; c++) {
            const unsigned char *t = sqlite3_column_text(st, (int)c);
            res->cells[res->nrows * nc + c] =
                t ? kr_strndup((const char *)t, (size_t)sqlite3_column_bytes(st, (int)c)) : NULL;
        }
        res->nrows++;
    }
    cache_put(s, sql, st);
    return 0;
}

static int sq_script(kr_db *db, const char *sql, kr_diag *d)
{
    db_sqlite *s = (db_sqlite *)db;
    char *err = NULL;
    int rc = sqlite3_exec(s->h, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        rc = kr_fail(d, KR_ESTORE, "sqlite: %s", err ? err : "error");
        sqlite3_free(err);
        return rc;
    }
    return 0;
}

static int sq_begin(kr_db *db, kr_diag *d)
{
    return sq_script(db, "BEGIN IMMEDIATE", d);
}

static int sq_commit(kr_db *db, kr_diag *d)
{
    return sq_script(db, "COMMIT", d);
}

static void sq_rollback(kr_db *db)
{
    db_sqlite *s = (db_sqlite *)db;
    if (!sqlite3_get_autocommit(s->h)) sqlite3_exec(s->h, "ROLLBACK", NULL, NULL, NULL);
}

static const kr_db_ops sqlite_ops = {sq_close, sq_query,  sq_script,
                                     sq_begin, sq_commit, sq_rollback};

/* A thread that asks for it gives its CPU back (sched_yield) every yield_ns
 * of SQLite work: the usage writer (src/proxy/meter.c), so that a batch
 * commit never keeps a woken thread of the request path off its CPU for the
 * length of the batch (docs/PERFORMANCE.md). Checked every 500 VM steps
 * with a vDSO clock read; other threads pay one call and a test. */
static _Thread_local uint64_t yield_ns, yield_last;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int on_progress(void *arg)
{
    (void)arg;
    if (!yield_ns) return 0;
    uint64_t now = mono_ns();
    if (now - yield_last >= yield_ns) {
        sched_yield();
        yield_last = mono_ns();
    }
    return 0; /* never interrupts the statement */
}

void kr_store_yield_every_us(unsigned us)
{
    yield_ns = (uint64_t)us * 1000;
    yield_last = mono_ns();
}

int kr_db_open_sqlite(const char *path, kr_db **out, kr_diag *d)
{
    sqlite3 *h = NULL;
    int rc = sqlite3_open_v2(
        path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = kr_fail(d, KR_ESTORE, "cannot open store %s: %s", path,
                     h ? sqlite3_errmsg(h) : "out of memory");
        sqlite3_close_v2(h);
        return rc;
    }
    sqlite3_busy_timeout(h, 5000);
    sqlite3_progress_handler(h, 500, on_progress, NULL);
    db_sqlite *s = kr_xcalloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    s->base.engine = KR_DB_SQLITE;
    s->h = h;
    rc = sq_script(&s->base,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                   " PRAGMA cache_size=-1024;",
                   d);
    if (rc) {
        sq_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
