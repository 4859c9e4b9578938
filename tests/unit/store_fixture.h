/*
 * store_fixture.h -- a fresh store on either engine, for the suites that run
 * every case on both (test_store.c, test_rekey.c). Header-only.
 *
 * SQLite: store.db in a new temporary directory. PostgreSQL (when
 * KR_TEST_PG_URL is set; the suites skip their _pg cases otherwise): a
 * fresh, uniquely named schema on that server, reached through the URL's
 * options (search_path), dropped afterwards -- faster than a database per
 * test, and two test runs can share one server. The temporary directory is
 * made for both engines (suites keep their own files there too).
 */
#ifndef KR_TEST_STORE_FIXTURE_H
#define KR_TEST_STORE_FIXTURE_H

#include <criterion/criterion.h>

#include "core/buf.h"
#include "core/err.h"
#include "store/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { BK_SQLITE, BK_PG } backend;

static kr_diag dg;

#define OK(call)                                                                                   \
    do {                                                                                           \
        memset(&dg, 0, sizeof dg);                                                                 \
        int rc_ = (call);                                                                          \
        cr_assert_eq(rc_, 0, "%s failed: %s (%s)", #call, kr_err_name(rc_),                        \
                     kr_diag_msg(&dg, rc_));                                                       \
    } while (0)

static inline const char *pg_base(void)
{
    const char *u = getenv("KR_TEST_PG_URL");
    return u && *u ? u : NULL;
}

static inline void pg_admin_exec(const char *sql)
{
    kr_db *db;
    OK(kr_db_open(pg_base(), &db, &dg));
    int rc = kr_db_exec(db, sql, NULL, 0, &dg);
    kr_db_close(db);
    cr_assert_eq(rc, 0, "%s: %s", sql, kr_diag_msg(&dg, rc));
}

/* A fresh store location: dir (always made), url and, for PostgreSQL, the
 * schema it lives in. tag names the suite in the directory and schema. */
static inline void fixture_fresh(backend b, const char *tag, char dir[256], char url[1024],
                                 char schema[64])
{
    cr_assert_eq(kr_snprintf(dir, 256, "/tmp/kr-test-%s-XXXXXX", tag), 0);
    cr_assert_not_null(mkdtemp(dir));
    if (b == BK_SQLITE) {
        cr_assert_eq(kr_snprintf(url, 1024, "%s/store.db", dir), 0);
        return;
    }
    static unsigned seq;
    cr_assert_eq(kr_snprintf(schema, 64, "kr_%s_%ld_%lld_%u", tag, (long)getpid(),
                             (long long)kr_now_ms(), seq++),
                 0);
    char sql[128];
    kr_snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    pg_admin_exec(sql);
    const char *base = pg_base();
    cr_assert_eq(kr_snprintf(url, 1024, "%s%coptions=-c%%20search_path%%3D%s", base,
                             strchr(base, '?') ? '&' : '?', schema),
                 0);
}

/* Undoes fixture_fresh (the store must be closed): the SQLite files and
 * the directory, or the schema. Remove the suite's own files first. */
static inline void fixture_drop(backend b, const char *dir, const char *schema)
{
    if (dir[0]) {
        static const char *const files[] = {"store.db", "store.db-wal", "store.db-shm"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char p[300];
            kr_snprintf(p, sizeof p, "%s/%s", dir, files[i]);
            unlink(p);
        }
        rmdir(dir);
    }
    if (b == BK_PG && schema[0]) {
        char sql[128];
        kr_snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
        pg_admin_exec(sql);
    }
}

#endif
