/*
 * test_store.c -- the store (store.h) and its two drivers (db_sqlite.c,
 * db_pg.c), every case on both engines.
 *
 * STORE_TEST(name) registers store::name_sqlite and store::name_pg. The
 * SQLite case runs on a fresh file in a temporary directory; the PostgreSQL
 * case runs when KR_TEST_PG_URL is set (scripts/pg.sh start DIR; then
 * KR_TEST_PG_URL=$(scripts/pg.sh url DIR)) and is skipped otherwise. Each PG
 * case gets a fresh, uniquely named schema (the store connects with
 * search_path set to it through the URL's options) that is dropped
 * afterwards: faster than a database per test, and two test runs can share
 * one server. PG_TEST(name) cases exercise what only PostgreSQL has
 * (reconnect, lock timeouts, aborted transactions).
 */
#include <criterion/criterion.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "store/db.h"
#include "store/migrations.h"
#include "store/store.h"
#include "store_fixture.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fixture ----------------------------------------------------------- */

static struct {
    backend b;
    char url[1024];
    char dir[256];
    char schema[64];
    kr_store *s;
} T;

#define ERR(code, call)                                                                            \
    do {                                                                                           \
        memset(&dg, 0, sizeof dg);                                                                 \
        int rc_ = (call);                                                                          \
        cr_assert_eq(rc_, (code), "%s: expected %s, got %s (%s)", #call, kr_err_name(code),        \
                     kr_err_name(rc_), kr_diag_msg(&dg, rc_));                                     \
    } while (0)

static void teardown(void)
{
    kr_store_close(T.s);
    T.s = NULL;
    fixture_drop(T.b, T.dir, T.schema);
    memset(&T, 0, sizeof T);
}

static void run(backend b, void (*body)(kr_store *))
{
    memset(&T, 0, sizeof T);
    T.b = b;
    if (b == BK_PG && !pg_base()) cr_skip_test("KR_TEST_PG_URL is not set");
    fixture_fresh(b, "store", T.dir, T.url, T.schema);
    OK(kr_store_open(T.url, &T.s, &dg));
    body(T.s);
}

#define STORE_TEST(name)                                                                           \
    static void name(kr_store *s);                                                                 \
    Test(store, name##_sqlite, .fini = teardown)                                                   \
    {                                                                                              \
        run(BK_SQLITE, name);                                                                      \
    }                                                                                              \
    Test(store, name##_pg, .fini = teardown)                                                       \
    {                                                                                              \
        run(BK_PG, name);                                                                          \
    }                                                                                              \
    static void name(kr_store *s)

#define PG_TEST(name)                                                                              \
    static void name(kr_store *s);                                                                 \
    Test(store, name##_pg, .fini = teardown)                                                       \
    {                                                                                              \
        run(BK_PG, name);                                                                          \
    }                                                                                              \
    static void name(kr_store *s)

/* ---- helpers ----------------------------------------------------------- */

/* First cell of a parameterless query, as an integer. */
static int64_t q_int(kr_store *s, const char *sql)
{
    kr_dbres r;
    OK(kr_db_query(s->db, sql, NULL, 0, &r, &dg));
    cr_assert_eq(r.nrows, 1, "%s: %zu rows", sql, r.nrows);
    int64_t v = kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    return v;
}

/* Every row of a query as text: cells joined by '|', rows by '\n'. */
static char *dump(kr_store *s, const char *sql)
{
    kr_dbres r;
    OK(kr_db_query(s->db, sql, NULL, 0, &r, &dg));
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_buf_puts(&b, "");
    for (size_t i = 0; i < r.nrows; i++) {
        for (size_t c = 0; c < r.ncols; c++) {
            const char *v = kr_dbres_get(&r, i, c);
            kr_buf_puts(&b, c ? "|" : "");
            kr_buf_puts(&b, v ? v : "<null>");
        }
        kr_buf_putc(&b, '\n');
    }
    kr_dbres_free(&r);
    return kr_buf_steal(&b);
}

static int64_t mk_org(kr_store *s, const char *slug)
{
    kr_org o;
    OK(kr_org_create(s, slug, slug, &o, &dg));
    return o.id;
}

static int64_t mk_ws(kr_store *s, int64_t org, const char *name)
{
    kr_workspace w;
    OK(kr_ws_create(s, org, name, KR_WS_WORKSPACE, "claude-code", 0, &w, &dg));
    return w.id;
}

static int latest_version(void)
{
    size_t n;
    const kr_migration *m = kr_migrations(&n);
    cr_assert_gt(n, 0);
    return m[n - 1].version;
}

/* ---- open, migrations ---------------------------------------------------- */

STORE_TEST(migrations_applied_and_idempotent)
{
    size_t n;
    kr_migrations(&n);
    int v = -1;
    OK(kr_store_schema_version(s, &v, &dg));
    cr_assert_eq(v, latest_version());
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM schema_migrations"), (int64_t)n);
    OK(kr_store_ping(s, &dg));
    int64_t org = mk_org(s, "keep");

    /* Reopening applies nothing twice and keeps the data. */
    kr_store_close(T.s);
    T.s = NULL;
    OK(kr_store_open(T.url, &T.s, &dg));
    s = T.s;
    v = -1;
    OK(kr_store_schema_version(s, &v, &dg));
    cr_assert_eq(v, latest_version());
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM schema_migrations"), (int64_t)n);
    kr_org o;
    OK(kr_org_get(s, org, &o, &dg));
    cr_assert_str_eq(o.slug, "keep");

    /* A second connection open at the same time also finds nothing to do. */
    kr_store *s2;
    OK(kr_store_open(T.url, &s2, &dg));
    OK(kr_store_schema_version(s2, &v, &dg));
    cr_assert_eq(v, latest_version());
    kr_store_close(s2);
}

Test(store, open_url_forms)
{
    char dir[] = "/tmp/kr-test-store-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char url[300], path[300];
    kr_snprintf(path, sizeof path, "%s/s.db", dir);
    kr_snprintf(url, sizeof url, "sqlite:%s", path);
    kr_store *s;
    OK(kr_store_open(url, &s, &dg));
    cr_assert_eq(s->db->engine, KR_DB_SQLITE);
    kr_store_close(s);
    OK(kr_store_open(path, &s, &dg)); /* a bare path is the same file */
    int v;
    OK(kr_store_schema_version(s, &v, &dg));
    cr_assert_eq(v, latest_version());
    kr_store_close(s);
    ERR(KR_ECONFIG, kr_store_open("sqlite:", &s, &dg));
    const char *files[] = {"s.db", "s.db-wal", "s.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        kr_snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* No server is needed: the URL is rejected before any connection, and a
 * refused connection must not echo the password either. */
Test(store, pg_url_password_never_in_diag)
{
    kr_db *db = NULL;
    ERR(KR_ECONFIG, kr_db_open("postgresql://keyrail:hunter2%zz@127.0.0.1:1/x", &db, &dg));
    cr_assert_null(strstr(dg.msg, "hunter2"), "%s", dg.msg);
    ERR(KR_ECONFIG,
        kr_db_open("postgres://keyrail:hunter2@127.0.0.1:1/x?bogus_option=hunter2", &db, &dg));
    cr_assert_null(strstr(dg.msg, "hunter2"), "%s", dg.msg);
    ERR(KR_ESTORE,
        kr_db_open("postgres://keyrail:hunter2@127.0.0.1:1/x?connect_timeout=2", &db, &dg));
    cr_assert_null(strstr(dg.msg, "hunter2"), "%s", dg.msg);
    cr_assert_not_null(strstr(dg.msg, "cannot connect"), "%s", dg.msg);
}

/* ---- the driver interface ------------------------------------------------ */

STORE_TEST(driver_params_and_results)
{
    kr_dbres r;
    const char *odd =
        "it's \"quoted\" \\ back\\slash\nnew line, tab\t, utf-8: h\xc3\xa9 \xe2\x82\xac";
    OK(kr_db_query(s->db,
                   "SELECT $1, CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($4 AS BIGINT),"
                   " CAST($5 AS TEXT), $1 || ''",
                   ((const kr_dbval[]){KR_DB_TEXT(odd), KR_DB_INT(INT64_MIN), KR_DB_INT(INT64_MAX),
                                       KR_DB_INT(-1), KR_DB_NULL}),
                   5, &r, &dg));
    cr_assert_eq(r.nrows, 1);
    cr_assert_eq(r.ncols, 6);
    cr_assert_str_eq(kr_dbres_get(&r, 0, 0), odd);
    /* as text: kr_parse_i64 (core/buf.c) does not accept INT64_MIN */
    cr_assert_str_eq(kr_dbres_get(&r, 0, 1), "-9223372036854775808");
    cr_assert_eq(kr_dbres_int(&r, 0, 2), INT64_MAX);
    cr_assert_str_eq(kr_dbres_get(&r, 0, 3), "-1");
    cr_assert_null(kr_dbres_get(&r, 0, 4), "SQL NULL must be a NULL cell");
    cr_assert_str_eq(kr_dbres_get(&r, 0, 5), odd);
    cr_assert_null(kr_dbres_get(&r, 1, 0), "out of range row");
    kr_dbres_free(&r);

    /* No rows: an empty result, not an error. */
    OK(kr_db_query(s->db, "SELECT id FROM orgs WHERE slug = $1",
                   ((const kr_dbval[]){KR_DB_TEXT("nobody")}), 1, &r, &dg));
    cr_assert_eq(r.nrows, 0);
    kr_dbres_free(&r);

    /* A script of several statements. */
    OK(s->db->ops->script(s->db,
                          "CREATE TABLE t_script (a INTEGER, b TEXT);"
                          "INSERT INTO t_script (a, b) VALUES (1, 'x');"
                          "INSERT INTO t_script (a, b) VALUES (2, NULL);",
                          &dg));
    char *all = dump(s, "SELECT a, b FROM t_script ORDER BY a");
    cr_assert_str_eq(all, "1|x\n2|<null>\n");
    free(all);

    /* A syntax error is a store error with the engine's message. */
    ERR(KR_ESTORE, kr_db_exec(s->db, "SELEC 1", NULL, 0, &dg));
    cr_assert_neq(dg.msg[0], 0);
    ERR(KR_ESTORE, s->db->ops->script(s->db, "CREATE TABLE t_script (a INTEGER)", &dg));
}

STORE_TEST(driver_error_mapping)
{
    int64_t org = mk_org(s, "acme");
    (void)org;
    /* Unique: KR_EEXISTS, and the diag never quotes the value. */
    ERR(KR_EEXISTS,
        kr_db_exec(s->db, "INSERT INTO orgs (slug, name, created_at) VALUES ($1, $2, 1)",
                   ((const kr_dbval[]){KR_DB_TEXT("acme"), KR_DB_TEXT("x")}), 2, &dg));
    cr_assert_null(strstr(dg.msg, "acme"), "diag quotes the value: %s", dg.msg);
    const char *hash = "5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffe";
    int64_t ws = mk_ws(s, org, "w");
    OK(kr_token_insert(s, ws, hash, "krws_a", 0, NULL, &dg));
    ERR(KR_EEXISTS, kr_token_insert(s, ws, hash, "krws_b", 0, NULL, &dg));
    cr_assert_null(strstr(dg.msg, "5ec12e7c"), "diag quotes the hash: %s", dg.msg);
    /* Check constraint: KR_EEXISTS. */
    ERR(KR_EEXISTS,
        kr_db_exec(s->db,
                   "INSERT INTO workspaces (org_id, name, kind, runtime, created_at)"
                   " VALUES ($1, 'k', $2, 'r', 1)",
                   ((const kr_dbval[]){KR_DB_INT(org), KR_DB_TEXT("hypervisor")}), 2, &dg));
    /* Foreign key: KR_EEXISTS on both engines (see db_pg.c). */
    ERR(KR_EEXISTS, kr_db_exec(s->db,
                               "INSERT INTO workspaces (org_id, name, kind, runtime, created_at)"
                               " VALUES ($1, 'k', 'workspace', 'r', 1)",
                               ((const kr_dbval[]){KR_DB_INT(987654)}), 1, &dg));
    /* Not null: KR_EEXISTS too. */
    ERR(KR_EEXISTS,
        kr_db_exec(s->db, "INSERT INTO orgs (slug, name, created_at) VALUES ($1, $2, 1)",
                   ((const kr_dbval[]){KR_DB_TEXT("nn"), KR_DB_NULL}), 2, &dg));
    /* A value the engine rejects is not quoted back (PG: 22P02). SQLite
     * casts it to 0 instead. */
    memset(&dg, 0, sizeof dg);
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT CAST($1 AS BIGINT)",
                         ((const kr_dbval[]){KR_DB_TEXT("hunter2-secret")}), 1, &r, &dg);
    if (T.b == BK_PG) cr_assert_eq(rc, KR_ESTORE, "%s", kr_err_name(rc));
    if (rc == 0)
        kr_dbres_free(&r);
    else
        cr_assert_null(strstr(dg.msg, "hunter2"), "diag quotes the value: %s", dg.msg);
}

STORE_TEST(driver_transactions)
{
    kr_db *db = s->db;
    OK(db->ops->begin(db, &dg));
    OK(kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('gone', 'g', 1)", NULL, 0,
                  &dg));
    db->ops->rollback(db);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 0);
    OK(db->ops->begin(db, &dg));
    OK(kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('kept', 'k', 1)", NULL, 0,
                  &dg));
    OK(db->ops->commit(db, &dg));
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 1);
    db->ops->rollback(db); /* outside a transaction: harmless */
    db->ops->rollback(db);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 1);
    /* A second begin inside a transaction is refused. */
    OK(db->ops->begin(db, &dg));
    cr_assert_neq(db->ops->begin(db, &dg), 0);
    db->ops->rollback(db);
    OK(kr_store_ping(s, &dg));
}

/* ---- orgs ------------------------------------------------------------ */

STORE_TEST(org_create_find_list)
{
    int64_t t0 = kr_now_ms();
    kr_org a, b, c, o;
    OK(kr_org_create(s, "zeta", "Zeta Corp", &a, &dg));
    cr_assert_gt(a.id, 0);
    cr_assert_str_eq(a.slug, "zeta");
    cr_assert_str_eq(a.name, "Zeta Corp");
    cr_assert_str_eq(a.status, "active");
    cr_assert(a.created_at >= t0 && a.created_at <= kr_now_ms());
    OK(kr_org_create(s, "alpha", "Alpha", &b, &dg));
    OK(kr_org_create(s, "mid", "Mid", &c, &dg));
    cr_assert(b.id > a.id && c.id > b.id);

    ERR(KR_EEXISTS, kr_org_create(s, "alpha", "Another", &o, &dg));
    cr_assert_not_null(strstr(dg.msg, "alpha"), "%s", dg.msg);
    ERR(KR_EINVAL, kr_org_create(s, "Alpha", "case differs", NULL, &dg)); /* slugs are lower case */

    memset(&o, 0, sizeof o);
    OK(kr_org_find(s, "alpha", &o, &dg));
    cr_assert_eq(o.id, b.id);
    cr_assert_str_eq(o.name, "Alpha");
    cr_assert_eq(o.created_at, b.created_at);
    char ref[24];
    kr_snprintf(ref, sizeof ref, "%lld", (long long)c.id);
    OK(kr_org_find(s, ref, &o, &dg));
    cr_assert_str_eq(o.slug, "mid");
    OK(kr_org_get(s, a.id, &o, &dg));
    cr_assert_str_eq(o.slug, "zeta");
    ERR(KR_ENOTFOUND, kr_org_find(s, "nope", &o, &dg));
    cr_assert_not_null(strstr(dg.msg, "nope"), "%s", dg.msg);
    ERR(KR_ENOTFOUND, kr_org_find(s, "999999", &o, &dg));
    ERR(KR_ENOTFOUND, kr_org_find(s, "99999999999999999999999", &o, &dg)); /* overflows i64 */
    ERR(KR_ENOTFOUND, kr_org_get(s, 999999, &o, &dg));

    /* A slug that looks like an id wins over the id. */
    kr_org num;
    kr_snprintf(ref, sizeof ref, "%lld", (long long)a.id);
    OK(kr_org_create(s, ref, "numeric slug", &num, &dg));
    OK(kr_org_find(s, ref, &o, &dg));
    cr_assert_eq(o.id, num.id);

    kr_org *list;
    size_t n;
    OK(kr_org_list(s, &list, &n, &dg));
    cr_assert_eq(n, 4);
    const char *order[] = {"zeta", "alpha", "mid", ref};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(list[i].slug, order[i], "row %zu", i);
        if (i) cr_assert_gt(list[i].id, list[i - 1].id);
    }
    free(list);
}

/* Names enter from outside: an org slug and a workspace name are 1-63 of
 * [a-z0-9-], not starting with '-', wherever they enter (create, and every
 * reference: ORG, ORG/NAME). */
STORE_TEST(names_are_checked_wherever_they_enter)
{
    static const char *const bad[] = {"", ".", "..", "../x", "a/b", "A", "a b", "a_b", "-a", "a\n",
                                      "x\x1b[31m", "caf\xc3\xa9", "a.b"};
    char big[10001];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char just[KR_NAME_MAX + 1], over[KR_NAME_MAX + 2];
    memset(just, 'a', KR_NAME_MAX);
    just[KR_NAME_MAX] = 0;
    memset(over, 'a', KR_NAME_MAX + 1);
    over[KR_NAME_MAX + 1] = 0;
    kr_org o;
    kr_workspace w;
    int64_t acme = mk_org(s, "acme");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ERR(KR_EINVAL, kr_org_slug_check(bad[i], &dg));
        ERR(KR_EINVAL, kr_ws_name_check(bad[i], &dg));
        ERR(KR_EINVAL, kr_org_create(s, bad[i], "n", &o, &dg));
        ERR(KR_EINVAL, kr_ws_create(s, acme, bad[i], KR_WS_WORKSPACE, "codex", 0, &w, &dg));
        char ref[64];
        kr_snprintf(ref, sizeof ref, "acme/%s", bad[i]);
        ERR(KR_EINVAL, kr_ws_find(s, ref, &w, &dg));
        kr_snprintf(ref, sizeof ref, "%s/dev", bad[i]);
        ERR(KR_EINVAL, kr_ws_find(s, ref, &w, &dg));
        if (bad[i][0]) ERR(KR_EINVAL, kr_org_find(s, bad[i], &o, &dg));
    }
    ERR(KR_EINVAL, kr_ws_create(s, acme, big, KR_WS_WORKSPACE, "codex", 0, &w, &dg));
    ERR(KR_EINVAL, kr_ws_create(s, acme, over, KR_WS_WORKSPACE, "codex", 0, &w, &dg));
    ERR(KR_EINVAL, kr_org_create(s, over, "n", &o, &dg));
    ERR(KR_EINVAL, kr_ws_find(s, "acme/dev/x", &w, &dg));
    OK(kr_ws_create(s, acme, just, KR_WS_WORKSPACE, "codex", 0, &w, &dg));
    OK(kr_ws_create(s, acme, "d-3v", KR_WS_WORKSPACE, "codex", 0, &w, &dg));
    OK(kr_ws_find(s, "acme/d-3v", &w, &dg));
    OK(kr_org_create(s, just, "n", &o, &dg));
    /* display names are free text, but one line without controls */
    ERR(KR_EINVAL, kr_org_create(s, "evil", "Evil\n2     forged  row", &o, &dg));
    ERR(KR_EINVAL, kr_org_create(s, "evil", "\x1b[2J", &o, &dg));
    ERR(KR_EINVAL, kr_org_create(s, "evil", "", &o, &dg));
    OK(kr_org_create(s, "evil", "Évil Corp", &o, &dg));
    cr_assert_str_eq(o.name, "Évil Corp");
}

STORE_TEST(org_list_empty)
{
    kr_org *list = NULL;
    size_t n = 99;
    OK(kr_org_list(s, &list, &n, &dg));
    cr_assert_eq(n, 0);
    cr_assert_not_null(list);
    free(list);
}

/* ---- workspaces -------------------------------------------------------- */

STORE_TEST(ws_create_find_list)
{
    int64_t acme = mk_org(s, "acme"), other = mk_org(s, "other");
    int64_t t0 = kr_now_ms();
    kr_workspace w, p, o;
    OK(kr_ws_create(s, acme, "build", KR_WS_WORKSPACE, "claude-code", 0, &w, &dg));
    cr_assert_gt(w.id, 0);
    cr_assert_eq(w.org_id, acme);
    cr_assert_str_eq(w.name, "build");
    cr_assert_eq(w.kind, KR_WS_WORKSPACE);
    cr_assert_str_eq(w.runtime, "claude-code");
    cr_assert_eq(w.parent_id, 0);
    cr_assert_str_eq(w.status, "active");
    cr_assert(w.created_at >= t0 && w.created_at <= kr_now_ms());
    OK(kr_ws_create(s, acme, "child", KR_WS_WORKSPACE, "codex", w.id, &p, &dg));
    cr_assert_eq(p.parent_id, w.id);
    cr_assert_str_eq(p.runtime, "codex");

    ERR(KR_EEXISTS, kr_ws_create(s, acme, "build", KR_WS_WORKSPACE, "codex", 0, &o, &dg));
    cr_assert_not_null(strstr(dg.msg, "build"), "%s", dg.msg);
    OK(kr_ws_create(s, other, "build", KR_WS_WORKSPACE, "codex", 0, &o, &dg)); /* other org */

    memset(&o, 0, sizeof o);
    OK(kr_ws_find(s, "acme/child", &o, &dg));
    cr_assert_eq(o.id, p.id);
    cr_assert_eq(o.org_id, acme);
    cr_assert_eq(o.parent_id, w.id);
    cr_assert_str_eq(o.runtime, "codex");
    cr_assert_eq(o.created_at, p.created_at);
    OK(kr_ws_find(s, "other/build", &o, &dg));
    cr_assert_eq(o.org_id, other);
    char ref[24];
    kr_snprintf(ref, sizeof ref, "%lld", (long long)w.id);
    OK(kr_ws_find(s, ref, &o, &dg));
    cr_assert_str_eq(o.name, "build");
    cr_assert_eq(o.org_id, acme);
    OK(kr_ws_get(s, p.id, &o, &dg));
    cr_assert_str_eq(o.name, "child");
    ERR(KR_ENOTFOUND, kr_ws_find(s, "acme/nope", &o, &dg));
    ERR(KR_ENOTFOUND, kr_ws_find(s, "nope/build", &o, &dg));
    ERR(KR_ENOTFOUND, kr_ws_find(s, "999999", &o, &dg));
    ERR(KR_EINVAL, kr_ws_find(s, "build", &o, &dg));
    ERR(KR_ENOTFOUND, kr_ws_get(s, 999999, &o, &dg));

    kr_workspace *list;
    size_t n;
    OK(kr_ws_list(s, acme, &list, &n, &dg));
    cr_assert_eq(n, 2);
    cr_assert_str_eq(list[0].name, "build");
    cr_assert_str_eq(list[1].name, "child");
    cr_assert_eq(list[1].parent_id, w.id);
    free(list);
    OK(kr_ws_list(s, 0, &list, &n, &dg)); /* every org */
    cr_assert_eq(n, 3);
    cr_assert_eq(list[2].org_id, other);
    free(list);
    OK(kr_ws_list(s, 999999, &list, &n, &dg));
    cr_assert_eq(n, 0);
    free(list);
}

STORE_TEST(ws_one_concierge_per_org)
{
    int64_t acme = mk_org(s, "acme"), other = mk_org(s, "other");
    kr_workspace c, o;
    OK(kr_ws_create(s, acme, "concierge", KR_WS_CONCIERGE, "claude-code", 0, &c, &dg));
    cr_assert_eq(c.kind, KR_WS_CONCIERGE);
    ERR(KR_ECONCIERGE_EXISTS,
        kr_ws_create(s, acme, "second", KR_WS_CONCIERGE, "claude-code", 0, &o, &dg));
    cr_assert_not_null(strstr(dg.msg, "concierge"), "%s", dg.msg);
    /* Ordinary workspaces and another org's concierge are fine. */
    OK(kr_ws_create(s, acme, "second", KR_WS_WORKSPACE, "claude-code", 0, &o, &dg));
    OK(kr_ws_create(s, other, "concierge", KR_WS_CONCIERGE, "codex", 0, &o, &dg));
    OK(kr_ws_find(s, "acme/concierge", &o, &dg));
    cr_assert_eq(o.kind, KR_WS_CONCIERGE);
    OK(kr_ws_find(s, "acme/second", &o, &dg));
    cr_assert_eq(o.kind, KR_WS_WORKSPACE);
    /* Once it is deleted, the org may have a new one. */
    OK(kr_ws_delete(s, c.id, &dg));
    OK(kr_ws_create(s, acme, "concierge2", KR_WS_CONCIERGE, "claude-code", 0, &o, &dg));
}

typedef struct {
    kr_store *s;
    int64_t org;
    const char *name;
    pthread_barrier_t *go;
    int rc;
} racer;

static void *race_concierge(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->go);
    r->rc = kr_ws_create(r->s, r->org, r->name, KR_WS_CONCIERGE, "claude-code", 0, NULL, NULL);
    return NULL;
}

/* Two connections create an org's concierge at the same moment: exactly one
 * wins and the other gets KR_ECONCIERGE_EXISTS (not KR_EEXISTS: the names
 * differ, so only the one-concierge index can refuse it). */
STORE_TEST(ws_concierge_race)
{
    kr_store *s2;
    OK(kr_store_open(T.url, &s2, &dg));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int round = 0; round < 16; round++) {
        char slug[32];
        kr_snprintf(slug, sizeof slug, "race%d", round);
        int64_t org = mk_org(s, slug);
        racer a = {s, org, "conc-a", &go, 99}, b = {s2, org, "conc-b", &go, 99};
        pthread_t ta, tb;
        cr_assert_eq(pthread_create(&ta, NULL, race_concierge, &a), 0);
        cr_assert_eq(pthread_create(&tb, NULL, race_concierge, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        cr_assert((a.rc == 0 && b.rc == KR_ECONCIERGE_EXISTS) ||
                      (b.rc == 0 && a.rc == KR_ECONCIERGE_EXISTS),
                  "round %d: %s / %s", round, kr_err_name(a.rc), kr_err_name(b.rc));
        kr_workspace *list;
        size_t n;
        OK(kr_ws_list(s, org, &list, &n, &dg));
        cr_assert_eq(n, 1);
        cr_assert_eq(list[0].kind, KR_WS_CONCIERGE);
        cr_assert_str_eq(list[0].name, a.rc == 0 ? "conc-a" : "conc-b");
        free(list);
    }
    pthread_barrier_destroy(&go);
    kr_store_close(s2);
}

STORE_TEST(ws_delete_removes_secrets_and_tokens)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "doomed"), keep = mk_ws(s, org, "keep");
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, ws, "A", "ct-a", 1, &dg));
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, ws, "B", "ct-b", 1, &dg));
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, keep, "A", "ct-keep", 1, &dg));
    /* An org secret whose owner id equals the workspace id must survive. */
    OK(kr_store_secret_put(s, KR_SCOPE_ORG, ws, "A", "ct-org", 1, &dg));
    kr_token t1, t2, tk;
    OK(kr_token_insert(s, ws, "h1", "krws_1", 0, &t1, &dg));
    OK(kr_token_insert(s, ws, "h2", "krws_2", 0, &t2, &dg));
    OK(kr_token_insert(s, keep, "hk", "krws_k", 0, &tk, &dg));

    OK(kr_ws_delete(s, ws, &dg));
    kr_workspace w;
    ERR(KR_ENOTFOUND, kr_ws_get(s, ws, &w, &dg));
    ERR(KR_ENOTFOUND, kr_ws_find(s, "acme/doomed", &w, &dg));
    kr_secret_row row;
    ERR(KR_ENOTFOUND, kr_store_secret_get(s, KR_SCOPE_WORKSPACE, ws, "A", &row, &dg));
    kr_secret_row *rows;
    size_t n;
    OK(kr_store_secret_list(s, KR_SCOPE_WORKSPACE, ws, &rows, &n, &dg));
    cr_assert_eq(n, 0);
    kr_secret_rows_free(rows, n);
    kr_token t;
    ERR(KR_ENOTFOUND, kr_token_by_hash(s, "h1", &t, &dg));
    ERR(KR_ENOTFOUND, kr_token_by_hash(s, "h2", &t, &dg));
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM tokens"), 1);
    /* The rest is untouched. */
    OK(kr_ws_get(s, keep, &w, &dg));
    OK(kr_store_secret_get(s, KR_SCOPE_WORKSPACE, keep, "A", &row, &dg));
    cr_assert_str_eq(row.ciphertext, "ct-keep");
    kr_secret_row_free(&row);
    OK(kr_store_secret_get(s, KR_SCOPE_ORG, ws, "A", &row, &dg));
    cr_assert_str_eq(row.ciphertext, "ct-org");
    kr_secret_row_free(&row);
    OK(kr_token_by_hash(s, "hk", &t, &dg));
    cr_assert_eq(t.id, tk.id);
    /* Deleting what is not there is not an error (undo of a failed create). */
    OK(kr_ws_delete(s, ws, &dg));
}

/* A delete that fails part-way (the workspace is a parent) rolls back: the
 * secrets and tokens it had already deleted are back. */
STORE_TEST(ws_delete_is_atomic)
{
    int64_t org = mk_org(s, "acme");
    int64_t parent = mk_ws(s, org, "parent");
    kr_workspace child;
    OK(kr_ws_create(s, org, "child", KR_WS_WORKSPACE, "codex", parent, &child, &dg));
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, parent, "K", "ct", 1, &dg));
    OK(kr_token_insert(s, parent, "hp", "krws_p", 0, NULL, &dg));
    memset(&dg, 0, sizeof dg);
    int rc = kr_ws_delete(s, parent, &dg);
    cr_assert_neq(rc, 0, "deleting a parent workspace must fail");
    kr_workspace w;
    OK(kr_ws_get(s, parent, &w, &dg));
    kr_secret_row row;
    OK(kr_store_secret_get(s, KR_SCOPE_WORKSPACE, parent, "K", &row, &dg));
    kr_secret_row_free(&row);
    kr_token t;
    OK(kr_token_by_hash(s, "hp", &t, &dg));
    /* And the connection is usable afterwards. */
    OK(kr_ws_delete(s, child.id, &dg));
    OK(kr_ws_delete(s, parent, &dg));
}

/* ---- secrets ------------------------------------------------------------ */

static char *random_b64(size_t nbytes)
{
    cr_assert_geq(sodium_init(), 0);
    unsigned char *bin = malloc(nbytes);
    randombytes_buf(bin, nbytes);
    size_t cap = sodium_base64_ENCODED_LEN(nbytes, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(cap);
    sodium_bin2base64(b64, cap, bin, nbytes, sodium_base64_VARIANT_ORIGINAL);
    free(bin);
    return b64;
}

STORE_TEST(secret_put_get_overwrite)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "w");
    int64_t t0 = kr_now_ms();
    char *ct = random_b64(48 * 1024 + 7);
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, ws, "ANTHROPIC_API_KEY", ct, 1, &dg));
    kr_secret_row r;
    OK(kr_store_secret_get(s, KR_SCOPE_WORKSPACE, ws, "ANTHROPIC_API_KEY", &r, &dg));
    cr_assert_eq(r.scope, KR_SCOPE_WORKSPACE);
    cr_assert_eq(r.owner_id, ws);
    cr_assert_str_eq(r.key, "ANTHROPIC_API_KEY");
    cr_assert_eq(strlen(r.ciphertext), strlen(ct));
    cr_assert_eq(memcmp(r.ciphertext, ct, strlen(ct) + 1), 0, "ciphertext differs");
    cr_assert_eq(r.enc_version, 1);
    cr_assert(r.created_at >= t0 && r.created_at <= kr_now_ms());
    cr_assert_eq(r.updated_at, r.created_at);
    int64_t created = r.created_at;
    kr_secret_row_free(&r);
    cr_assert_null(r.ciphertext);

    /* Same key at org scope with the same owner id is a different secret. */
    ERR(KR_ENOTFOUND, kr_store_secret_get(s, KR_SCOPE_ORG, ws, "ANTHROPIC_API_KEY", &r, &dg));
    OK(kr_store_secret_put(s, KR_SCOPE_ORG, ws, "ANTHROPIC_API_KEY", "org-ct", 1, &dg));

    /* Overwrite: new ciphertext and version, created_at kept. */
    char *ct2 = random_b64(300);
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, ws, "ANTHROPIC_API_KEY", ct2, 2, &dg));
    OK(kr_store_secret_get(s, KR_SCOPE_WORKSPACE, ws, "ANTHROPIC_API_KEY", &r, &dg));
    cr_assert_str_eq(r.ciphertext, ct2);
    cr_assert_eq(r.enc_version, 2);
    cr_assert_eq(r.created_at, created);
    cr_assert_geq(r.updated_at, created);
    kr_secret_row_free(&r);
    OK(kr_store_secret_get(s, KR_SCOPE_ORG, ws, "ANTHROPIC_API_KEY", &r, &dg));
    cr_assert_str_eq(r.ciphertext, "org-ct");
    cr_assert_eq(r.scope, KR_SCOPE_ORG);
    kr_secret_row_free(&r);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM secrets"), 2);
    ERR(KR_ENOTFOUND, kr_store_secret_get(s, KR_SCOPE_WORKSPACE, ws, "anthropic_api_key", &r, &dg));
    free(ct);
    free(ct2);
}

STORE_TEST(secret_list_del)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "w");
    kr_secret_row *rows;
    size_t n = 99;
    OK(kr_store_secret_list(s, KR_SCOPE_ORG, org, &rows, &n, &dg));
    cr_assert_eq(n, 0);
    kr_secret_rows_free(rows, n);
    const char *keys[] = {"b_key", "A_KEY", "c", "a_key"};
    for (size_t i = 0; i < 4; i++) {
        char ct[16];
        kr_snprintf(ct, sizeof ct, "ct-%zu", i);
        OK(kr_store_secret_put(s, KR_SCOPE_ORG, org, keys[i], ct, 1, &dg));
    }
    OK(kr_store_secret_put(s, KR_SCOPE_WORKSPACE, ws, "zz", "ws-ct", 1, &dg));
    OK(kr_store_secret_list(s, KR_SCOPE_ORG, org, &rows, &n, &dg));
    cr_assert_eq(n, 4);
    /* Byte order on both engines, whatever the PG database's collation
     * (the test database has an en-US one, which would give a_key, A_KEY). */
    const char *sorted[] = {"A_KEY", "a_key", "b_key", "c"};
    const char *cts[] = {"ct-1", "ct-3", "ct-0", "ct-2"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(rows[i].key, sorted[i], "row %zu", i);
        cr_assert_str_eq(rows[i].ciphertext, cts[i], "row %zu", i);
        cr_assert_eq(rows[i].scope, KR_SCOPE_ORG);
        cr_assert_eq(rows[i].owner_id, org);
    }
    kr_secret_rows_free(rows, n);

    OK(kr_store_secret_del(s, KR_SCOPE_ORG, org, "b_key", &dg));
    ERR(KR_ENOTFOUND, kr_store_secret_del(s, KR_SCOPE_ORG, org, "b_key", &dg));
    cr_assert_not_null(strstr(dg.msg, "b_key"), "%s", dg.msg);
    ERR(KR_ENOTFOUND, kr_store_secret_del(s, KR_SCOPE_WORKSPACE, org, "A_KEY", &dg));
    kr_secret_row r;
    ERR(KR_ENOTFOUND, kr_store_secret_get(s, KR_SCOPE_ORG, org, "b_key", &r, &dg));
    OK(kr_store_secret_list(s, KR_SCOPE_ORG, org, &rows, &n, &dg));
    cr_assert_eq(n, 3);
    cr_assert_str_eq(rows[2].key, "c");
    kr_secret_rows_free(rows, n);
    OK(kr_store_secret_list(s, KR_SCOPE_WORKSPACE, ws, &rows, &n, &dg));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rows[0].ciphertext, "ws-ct");
    cr_assert_eq(rows[0].scope, KR_SCOPE_WORKSPACE);
    kr_secret_rows_free(rows, n);
}

/* ---- tokens ------------------------------------------------------------- */

STORE_TEST(tokens)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "w"), ws2 = mk_ws(s, org, "w2");
    int64_t t0 = kr_now_ms(), ttl = 3600 * 1000;
    kr_token a, b, c, t;
    OK(kr_token_insert(s, ws, "aaaa", "krws_abc", 0, &a, &dg));
    cr_assert_gt(a.id, 0);
    cr_assert_eq(a.workspace_id, ws);
    cr_assert_str_eq(a.prefix, "krws_abc");
    cr_assert_str_eq(a.hash, "aaaa");
    cr_assert(a.created_at >= t0 && a.created_at <= kr_now_ms());
    cr_assert_eq(a.expires_at, 0);
    cr_assert_eq(a.revoked_at, 0);
    OK(kr_token_insert(s, ws, "bbbb", "krws_abc", ttl, &b, &dg)); /* same prefix */
    cr_assert_eq(b.expires_at, b.created_at + ttl); /* one clock reading */
    OK(kr_token_insert(s, ws2, "cccc", "krws_xyz", 0, &c, &dg));
    ERR(KR_EEXISTS, kr_token_insert(s, ws, "aaaa", "krws_dup", 0, &t, &dg));

    OK(kr_token_by_hash(s, "bbbb", &t, &dg));
    cr_assert_eq(t.id, b.id);
    cr_assert_eq(t.expires_at, b.expires_at);
    cr_assert_eq(t.created_at, b.created_at);
    ERR(KR_ENOTFOUND, kr_token_by_hash(s, "dddd", &t, &dg));

    char ref[24];
    kr_snprintf(ref, sizeof ref, "%lld", (long long)b.id);
    OK(kr_token_find(s, ref, &t, &dg));
    cr_assert_str_eq(t.hash, "bbbb");
    OK(kr_token_find(s, "krws_xyz", &t, &dg));
    cr_assert_eq(t.id, c.id);
    cr_assert_eq(t.workspace_id, ws2);
    ERR(KR_EINVAL, kr_token_find(s, "krws_abc", &t, &dg));
    cr_assert_not_null(strstr(dg.msg, "ambiguous"), "%s", dg.msg);
    ERR(KR_ENOTFOUND, kr_token_find(s, "krws_none", &t, &dg));
    ERR(KR_ENOTFOUND, kr_token_find(s, "999999", &t, &dg));

    int64_t t1 = kr_now_ms();
    OK(kr_token_revoke(s, a.id, &dg));
    ERR(KR_ENOTFOUND, kr_token_revoke(s, a.id, &dg));
    ERR(KR_ENOTFOUND, kr_token_revoke(s, 999999, &dg));
    OK(kr_token_by_hash(s, "aaaa", &t, &dg));
    cr_assert(t.revoked_at >= t1 && t.revoked_at <= kr_now_ms());
    OK(kr_token_by_hash(s, "bbbb", &t, &dg));
    cr_assert_eq(t.revoked_at, 0);

    kr_token *list;
    size_t n;
    OK(kr_token_list(s, ws, &list, &n, &dg));
    cr_assert_eq(n, 2);
    cr_assert_eq(list[0].id, a.id);
    cr_assert_neq(list[0].revoked_at, 0);
    cr_assert_eq(list[1].id, b.id);
    cr_assert_eq(list[1].expires_at, b.expires_at);
    free(list);
    OK(kr_token_list(s, ws2, &list, &n, &dg));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(list[0].hash, "cccc");
    free(list);
    OK(kr_token_list(s, 999999, &list, &n, &dg));
    cr_assert_eq(n, 0);
    free(list);
}

/* ---- usage and credits ---------------------------------------------------- */

#define DAY1  INT64_C(1709164800000) /* 2024-02-29T00:00:00Z */
#define HOUR  INT64_C(3600000)
#define DAYMS (24 * HOUR)

static kr_usage_rec rec(const char *rid, int64_t org, int64_t ws, const char *model, uint64_t in,
                        uint64_t out, uint64_t cr, uint64_t cw, int64_t cost, int64_t started)
{
    kr_usage_rec r;
    memset(&r, 0, sizeof r);
    kr_strlcpy(r.request_id, rid, sizeof r.request_id);
    r.org_id = org;
    r.workspace_id = ws;
    kr_strlcpy(r.provider, "anthropic", sizeof r.provider);
    kr_strlcpy(r.model, model, sizeof r.model);
    r.u.input_tokens = in;
    r.u.output_tokens = out;
    r.u.cache_read_tokens = cr;
    r.u.cache_write_tokens = cw;
    r.u.seen = true;
    r.cost_micros = cost;
    kr_strlcpy(r.status, "complete", sizeof r.status);
    r.started_at = started;
    r.finished_at = started + 1500;
    return r;
}

/* Everything the usage path writes, as text. */
static char *usage_state(kr_store *s)
{
    const char *q[] = {
        ("SELECT id, request_id, org_id, workspace_id, provider, model, input_tokens,"
         " output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, status,"
         " started_at, finished_at FROM usage ORDER BY request_id"),
        ("SELECT day, org_id, workspace_id, model, requests, input_tokens, output_tokens,"
         " cache_read_tokens, cache_write_tokens, cost_micros FROM usage_daily"
         " ORDER BY day, workspace_id, model"),
        ("SELECT org_id, balance_micros, overage_cap_micros, updated_at FROM credits"
         " ORDER BY org_id"),
        ("SELECT id, org_id, delta_micros, reason, request_id, created_at FROM credit_ledger"
         " ORDER BY id"),
    };
    kr_buf b = KR_BUF_INIT(1 << 22);
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        char *part = dump(s, q[i]);
        kr_buf_puts(&b, part);
        kr_buf_puts(&b, "--\n");
        free(part);
    }
    return kr_buf_steal(&b);
}

static void expect_daily(kr_store *s, const char *day, int64_t ws, const char *model, int64_t reqs,
                         int64_t in, int64_t out, int64_t cr, int64_t cw, int64_t cost)
{
    kr_dbres r;
    OK(kr_db_query(s->db,
                   "SELECT requests, input_tokens, output_tokens, cache_read_tokens,"
                   " cache_write_tokens, cost_micros FROM usage_daily"
                   " WHERE day = $1 AND workspace_id = $2 AND model = $3",
                   ((const kr_dbval[]){KR_DB_TEXT(day), KR_DB_INT(ws), KR_DB_TEXT(model)}), 3, &r,
                   &dg));
    cr_assert_eq(r.nrows, 1, "no rollup row %s/%lld/%s", day, (long long)ws, model);
    int64_t want[] = {reqs, in, out, cr, cw, cost};
    for (size_t c = 0; c < 6; c++)
        cr_assert_eq(kr_dbres_int(&r, 0, c), want[c], "%s/%s column %zu: %lld != %lld", day, model,
                     c, (long long)kr_dbres_int(&r, 0, c), (long long)want[c]);
    kr_dbres_free(&r);
}

static int64_t ledger_sum(kr_store *s, int64_t org)
{
    kr_dbres r;
    OK(kr_db_query(s->db,
                   "SELECT COALESCE(SUM(delta_micros), 0) FROM credit_ledger WHERE org_id = $1",
                   ((const kr_dbval[]){KR_DB_INT(org)}), 1, &r, &dg));
    int64_t v = kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    return v;
}

STORE_TEST(usage_record_batch)
{
    int64_t org = mk_org(s, "acme"), org2 = mk_org(s, "beta");
    int64_t ws = mk_ws(s, org, "w"), ws2 = mk_ws(s, org2, "w");
    OK(kr_credits_add(s, org, 10000000, "topup", &dg));
    kr_usage_rec recs[] = {
        rec("req-1", org, ws, "claude-sonnet", 100, 20, 5, 1, 1500, DAY1 + HOUR),
        rec("req-2", org, ws, "claude-sonnet", 200, 40, 0, 7, 2500, DAY1 + 23 * HOUR),
        rec("req-3", org, ws, "claude-haiku", 10, 2, 0, 0, 0, DAY1 + 2 * HOUR), /* unpriced */
        rec("req-4", org, ws, "claude-sonnet", 1, 1, 1, 1, 300, DAY1 + DAYMS),  /* next day */
        rec("req-5", org2, ws2, "gpt-x", 1000, 500, 0, 0, 77, DAY1 + 3 * HOUR), /* no credits row */
    };
    recs[3].u.output_tokens = (uint64_t)1 << 40; /* large counts survive */
    kr_strlcpy(recs[2].status, "partial", sizeof recs[2].status);
    OK(kr_usage_record(s, recs, 5, &dg));

    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM usage"), 5);
    kr_dbres r;
    OK(kr_db_query(s->db,
                   "SELECT org_id, workspace_id, provider, model, input_tokens, output_tokens,"
                   " cache_read_tokens, cache_write_tokens, cost_micros, status, started_at,"
                   " finished_at FROM usage WHERE request_id = $1",
                   ((const kr_dbval[]){KR_DB_TEXT("req-3")}), 1, &r, &dg));
    cr_assert_eq(r.nrows, 1);
    cr_assert_eq(kr_dbres_int(&r, 0, 0), org);
    cr_assert_eq(kr_dbres_int(&r, 0, 1), ws);
    cr_assert_str_eq(kr_dbres_get(&r, 0, 2), "anthropic");
    cr_assert_str_eq(kr_dbres_get(&r, 0, 3), "claude-haiku");
    cr_assert_eq(kr_dbres_int(&r, 0, 4), 10);
    cr_assert_eq(kr_dbres_int(&r, 0, 5), 2);
    cr_assert_eq(kr_dbres_int(&r, 0, 8), 0);
    cr_assert_str_eq(kr_dbres_get(&r, 0, 9), "partial");
    cr_assert_eq(kr_dbres_int(&r, 0, 10), DAY1 + 2 * HOUR);
    cr_assert_eq(kr_dbres_int(&r, 0, 11), DAY1 + 2 * HOUR + 1500);
    kr_dbres_free(&r);

    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM usage_daily"), 4);
    expect_daily(s, "2024-02-29", ws, "claude-sonnet", 2, 300, 60, 5, 8, 4000);
    expect_daily(s, "2024-02-29", ws, "claude-haiku", 1, 10, 2, 0, 0, 0);
    expect_daily(s, "2024-03-01", ws, "claude-sonnet", 1, 1, (int64_t)1 << 40, 1, 1, 300);
    expect_daily(s, "2024-02-29", ws2, "gpt-x", 1, 1000, 500, 0, 0, 77);

    int64_t bal, cap;
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 10000000 - 1500 - 2500 - 300);
    cr_assert_eq(cap, 0);
    OK(kr_credits_get(s, org2, &bal, &cap, &dg));
    cr_assert_eq(bal, -77);
    cr_assert_eq(ledger_sum(s, org), 10000000 - 4300);
    cr_assert_eq(ledger_sum(s, org2), -77);
    /* One ledger row per priced request, none for the free one. */
    char *ledger = dump(s, "SELECT org_id, delta_micros, reason, request_id FROM credit_ledger"
                           " WHERE reason = 'usage' ORDER BY request_id");
    char want[256];
    kr_snprintf(want, sizeof want,
                "%lld|-1500|usage|req-1\n%lld|-2500|usage|req-2\n%lld|-300|usage|req-4\n"
                "%lld|-77|usage|req-5\n",
                (long long)org, (long long)org, (long long)org, (long long)org2);
    cr_assert_str_eq(ledger, want);
    free(ledger);

    /* An empty batch is fine. */
    OK(kr_usage_record(s, recs, 0, &dg));
}

STORE_TEST(usage_replay_changes_nothing)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "w");
    kr_usage_rec recs[] = {
        rec("r-a", org, ws, "m1", 100, 20, 5, 1, 1500, DAY1),
        rec("r-b", org, ws, "m1", 200, 40, 0, 7, 2500, DAY1 + HOUR),
        rec("r-c", org, ws, "m2", 3, 4, 5, 6, 0, DAY1 + 2 * HOUR),
    };
    OK(kr_usage_record(s, recs, 3, &dg));
    char *before = usage_state(s);
    int64_t bal0, cap0;
    OK(kr_credits_get(s, org, &bal0, &cap0, &dg));
    cr_assert_eq(bal0, -4000);

    OK(kr_usage_record(s, recs, 3, &dg));     /* the whole batch again */
    OK(kr_usage_record(s, &recs[1], 1, &dg)); /* one of them again */
    /* A replay with different numbers is still a replay: the first wins. */
    kr_usage_rec changed = recs[0];
    changed.cost_micros = 999999;
    changed.u.input_tokens = 1;
    OK(kr_usage_record(s, &changed, 1, &dg));
    char *after = usage_state(s);
    cr_assert_str_eq(after, before);
    free(after);
    int64_t bal, cap;
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, bal0);
    cr_assert_eq(ledger_sum(s, org), bal0);

    /* A batch mixing a replay and a new request adds only the new one. */
    kr_usage_rec mixed[] = {recs[0], rec("r-d", org, ws, "m1", 1, 1, 1, 1, 10, DAY1 + 3 * HOUR)};
    OK(kr_usage_record(s, mixed, 2, &dg));
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM usage"), 4);
    expect_daily(s, "2024-02-29", ws, "m1", 3, 301, 61, 6, 9, 4010);
    expect_daily(s, "2024-02-29", ws, "m2", 1, 3, 4, 5, 6, 0);
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, -4010);
    cr_assert_eq(ledger_sum(s, org), -4010);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM credit_ledger"), 3);
    free(before);
}

/* One bad row (a priced request for an org that does not exist: the credits
 * foreign key refuses it) and nothing of the batch is kept. */
STORE_TEST(usage_bad_row_rolls_back_batch)
{
    int64_t org = mk_org(s, "acme");
    int64_t ws = mk_ws(s, org, "w");
    OK(kr_credits_add(s, org, 5000, "topup", &dg));
    char *before = usage_state(s);
    kr_usage_rec recs[] = {
        rec("ok-1", org, ws, "m", 1, 2, 3, 4, 100, DAY1),
        rec("ok-2", org, ws, "m", 1, 2, 3, 4, 200, DAY1),
        rec("bad", 987654, ws, "m", 1, 2, 3, 4, 300, DAY1),
        rec("ok-3", org, ws, "m", 1, 2, 3, 4, 400, DAY1),
    };
    memset(&dg, 0, sizeof dg);
    int rc = kr_usage_record(s, recs, 4, &dg);
    cr_assert_neq(rc, 0, "a batch with a bad row must fail");
    char *after = usage_state(s);
    cr_assert_str_eq(after, before);
    free(after);
    int64_t bal, cap;
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 5000);
    /* The good rows were not consumed: recording them now works. */
    kr_usage_rec good[] = {recs[0], recs[1], recs[3]};
    OK(kr_usage_record(s, good, 3, &dg));
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM usage"), 3);
    expect_daily(s, "2024-02-29", ws, "m", 3, 3, 6, 9, 12, 700);
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 5000 - 700);
    cr_assert_eq(ledger_sum(s, org), bal);
    free(before);
}

STORE_TEST(credits)
{
    int64_t org = mk_org(s, "acme"), org2 = mk_org(s, "beta");
    int64_t bal = 1, cap = 1;
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 0);
    cr_assert_eq(cap, 0);
    OK(kr_credits_get(s, 999999, &bal, &cap, &dg)); /* no such org: also 0/0 */
    cr_assert_eq(bal, 0);
    cr_assert_eq(cap, 0);

    OK(kr_credits_add(s, org, 5000000, "topup", &dg));
    OK(kr_credits_add(s, org, -1250000, "refund", &dg));
    OK(kr_credits_add(s, org, 3, "adjust", &dg));
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 3750003);
    cr_assert_eq(cap, 0);
    OK(kr_credits_set_cap(s, org, 2000000, &dg));
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 3750003, "setting the cap keeps the balance");
    cr_assert_eq(cap, 2000000);
    OK(kr_credits_add(s, org, 1, "adjust", &dg));
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(cap, 2000000, "adding keeps the cap");
    cr_assert_eq(bal, 3750004);

    /* Cap first, on an org without a row. */
    OK(kr_credits_set_cap(s, org2, 42, &dg));
    OK(kr_credits_get(s, org2, &bal, &cap, &dg));
    cr_assert_eq(bal, 0);
    cr_assert_eq(cap, 42);
    cr_assert_eq(ledger_sum(s, org2), 0);

    /* Usage debits go through the same balance and ledger. */
    int64_t ws = mk_ws(s, org, "w");
    kr_usage_rec u = rec("r1", org, ws, "m", 1, 1, 0, 0, 4, DAY1);
    OK(kr_usage_record(s, &u, 1, &dg));
    OK(kr_credits_get(s, org, &bal, &cap, &dg));
    cr_assert_eq(bal, 3750000);
    cr_assert_eq(ledger_sum(s, org), bal);
    char *ledger = dump(s, "SELECT delta_micros, reason, request_id FROM credit_ledger"
                           " WHERE org_id = (SELECT id FROM orgs WHERE slug = 'acme') ORDER BY id");
    cr_assert_str_eq(ledger, "5000000|topup|<null>\n-1250000|refund|<null>\n3|adjust|<null>\n"
                             "1|adjust|<null>\n-4|usage|r1\n");
    free(ledger);

    /* Adding to an org that does not exist fails and leaves no ledger row. */
    memset(&dg, 0, sizeof dg);
    cr_assert_neq(kr_credits_add(s, 987654, 10, "topup", &dg), 0);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM credit_ledger"), 5);
    OK(kr_store_ping(s, &dg));
}

Test(store, utc_day)
{
    char day[11];
    kr_utc_day(0, day);
    cr_assert_str_eq(day, "1970-01-01");
    kr_utc_day(DAYMS - 1, day);
    cr_assert_str_eq(day, "1970-01-01");
    kr_utc_day(DAYMS, day);
    cr_assert_str_eq(day, "1970-01-02");
    kr_utc_day(DAY1, day);
    cr_assert_str_eq(day, "2024-02-29");
    kr_utc_day(DAY1 - 1, day);
    cr_assert_str_eq(day, "2024-02-28");
    kr_utc_day(DAY1 + DAYMS - 1, day);
    cr_assert_str_eq(day, "2024-02-29");
    kr_utc_day(INT64_C(1767225599999), day);
    cr_assert_str_eq(day, "2025-12-31");
    kr_utc_day(INT64_C(1767225600000), day);
    cr_assert_str_eq(day, "2026-01-01");
    kr_utc_day(INT64_C(253402300799000), day);
    cr_assert_str_eq(day, "9999-12-31");
}

/* ---- PostgreSQL only -------------------------------------------------------- */

static char *show(kr_db *db, const char *sql)
{
    kr_dbres r;
    OK(kr_db_query(db, sql, NULL, 0, &r, &dg));
    cr_assert_eq(r.nrows, 1);
    char *v = kr_strdup(kr_dbres_get(&r, 0, 0));
    kr_dbres_free(&r);
    return v;
}

/* Terminates the backend of db from another connection and waits for it. */
static void kill_backend(kr_db *db)
{
    int64_t pid = 0;
    kr_dbres r;
    OK(kr_db_query(db, "SELECT pg_backend_pid()", NULL, 0, &r, &dg));
    pid = kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    cr_assert_gt(pid, 0);
    kr_db *admin;
    OK(kr_db_open(pg_base(), &admin, &dg));
    OK(kr_db_query(admin, "SELECT pg_terminate_backend(CAST($1 AS INTEGER), 10000)",
                   ((const kr_dbval[]){KR_DB_INT(pid)}), 1, &r, &dg));
    cr_assert_str_eq(kr_dbres_get(&r, 0, 0), "t");
    kr_dbres_free(&r);
    kr_db_close(admin);
}

PG_TEST(pg_session_settings)
{
    char *v = show(s->db, "SHOW client_min_messages");
    cr_assert_str_eq(v, "warning");
    free(v);
    v = show(s->db, "SHOW application_name");
    cr_assert_str_eq(v, "keyrail");
    free(v);
    /* Server warnings go to the keyrail log (not raw to stderr); notices
     * are not even sent. */
    char path[] = "/tmp/kr-test-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(kr_log_open(path), 0);
    OK(s->db->ops->script(s->db,
                          "DO $$ BEGIN RAISE NOTICE 'quiet notice'; RAISE WARNING 'loud warning';"
                          " END $$",
                          &dg));
    kr_log_close();
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    unlink(path);
    cr_assert_not_null(strstr(text, "loud warning"), "log: %s", text);
    cr_assert_null(strstr(text, "quiet notice"), "log: %s", text);
}

PG_TEST(pg_reconnects_once_after_connection_loss)
{
    int64_t org = mk_org(s, "acme");
    kill_backend(s->db);
    /* The statement that meets the dead connection fails clearly... */
    kr_org o;
    ERR(KR_ESTORE, kr_org_get(s, org, &o, &dg));
    cr_assert_not_null(strstr(dg.msg, "connection"), "%s", dg.msg);
    /* ...and the next one reconnects, with the session settings back. */
    OK(kr_org_get(s, org, &o, &dg));
    cr_assert_str_eq(o.slug, "acme");
    char *v = show(s->db, "SHOW client_min_messages");
    cr_assert_str_eq(v, "warning");
    free(v);
    v = show(s->db, "SHOW search_path"); /* the URL's options survive a reset */
    cr_assert_str_eq(v, T.schema);
    free(v);
}

PG_TEST(pg_connection_loss_inside_a_transaction)
{
    kr_db *db = s->db;
    OK(db->ops->begin(db, &dg));
    OK(kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('lost', 'l', 1)", NULL, 0,
                  &dg));
    kill_backend(db);
    ERR(KR_ESTORE, kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('x', 'x', 1)",
                              NULL, 0, &dg));
    /* No silent reconnect: the rest of the transaction must not run outside it. */
    ERR(KR_ESTORE, kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('y', 'y', 1)",
                              NULL, 0, &dg));
    cr_assert_not_null(strstr(dg.msg, "transaction"), "%s", dg.msg);
    ERR(KR_ESTORE, db->ops->commit(db, &dg));
    db->ops->rollback(db);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 0);
}

PG_TEST(pg_commit_after_error_is_refused)
{
    kr_db *db = s->db;
    OK(db->ops->begin(db, &dg));
    OK(kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('a', 'a', 1)", NULL, 0,
                  &dg));
    ERR(KR_EEXISTS, kr_db_exec(db, "INSERT INTO orgs (slug, name, created_at) VALUES ('a', 'a', 1)",
                               NULL, 0, &dg));
    ERR(KR_ESTORE, db->ops->commit(db, &dg));
    db->ops->rollback(db);
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 0);
    OK(db->ops->begin(db, &dg));
    OK(db->ops->commit(db, &dg));
}

PG_TEST(pg_lock_and_serialization_failures_are_busy)
{
    int64_t org = mk_org(s, "acme");
    kr_db *a = s->db, *b;
    OK(kr_db_open(T.url, &b, &dg));
    const kr_dbval id[] = {KR_DB_INT(org)};

    /* 55P03: a lock wait past lock_timeout. */
    OK(a->ops->begin(a, &dg));
    OK(kr_db_exec(a, "UPDATE orgs SET name = 'a' WHERE id = $1", id, 1, &dg));
    OK(b->ops->script(b, "SET lock_timeout = '50ms'", &dg));
    ERR(KR_EBUSY, kr_db_exec(b, "UPDATE orgs SET name = 'b' WHERE id = $1", id, 1, &dg));
    a->ops->rollback(a);
    OK(b->ops->script(b, "SET lock_timeout = 0", &dg));

    /* 40001: a write conflicting with a newer commit under REPEATABLE READ. */
    OK(b->ops->script(
        b, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", &dg));
    OK(b->ops->begin(b, &dg));
    cr_assert_eq(q_int(s, "SELECT COUNT(*) FROM orgs"), 1);
    kr_dbres r;
    OK(kr_db_query(b, "SELECT name FROM orgs WHERE id = $1", id, 1, &r, &dg));
    kr_dbres_free(&r);
    OK(kr_db_exec(a, "UPDATE orgs SET name = 'a2' WHERE id = $1", id, 1, &dg));
    ERR(KR_EBUSY, kr_db_exec(b, "UPDATE orgs SET name = 'b2' WHERE id = $1", id, 1, &dg));
    b->ops->rollback(b);

    /* 57014: statement timeout. */
    OK(b->ops->script(b, "SET statement_timeout = '50ms'", &dg));
    ERR(KR_EBUSY, kr_db_exec(b, "SELECT pg_sleep(5)", NULL, 0, &dg));
    OK(b->ops->script(b, "SET statement_timeout = 0", &dg));
    OK(kr_db_exec(b, "SELECT 1", NULL, 0, &dg));
    kr_db_close(b);
}

/* ---- admin tokens, sessions, audit, idempotency, nested transactions ---- */

STORE_TEST(admin_tokens_sessions_and_idempotency)
{
    kr_org o;
    OK(kr_org_create(s, "acme", "Acme", &o, &dg));
    kr_admin_token op, org, t;
    OK(kr_admin_token_insert(s, "h1", "kradm_AAAAAA", KR_ADMIN_OPERATOR, 0, "ops", 0, &op, &dg));
    OK(kr_admin_token_insert(s, "h2", "kradm_BBBBBB", KR_ADMIN_ORG, o.id, "acme admins", 0, &org, &dg));
    cr_assert_eq(org.scope, KR_ADMIN_ORG);
    cr_assert_str_eq(org.org_slug, "acme");
    /* an org token names its org; an operator token none */
    ERR(KR_EEXISTS, kr_admin_token_insert(s, "h3", "p", KR_ADMIN_ORG, 0, "", 0, NULL, &dg));
    ERR(KR_EEXISTS, kr_admin_token_insert(s, "h1", "p", KR_ADMIN_OPERATOR, 0, "", 0, NULL, &dg));
    OK(kr_admin_token_by_hash(s, "h2", &t, &dg));
    cr_assert_eq(t.id, org.id);
    ERR(KR_ENOTFOUND, kr_admin_token_by_hash(s, "nope", &t, &dg));
    /* a session ends with its token's revocation */
    char csrf[65];
    int64_t tid, until;
    OK(kr_session_insert(s, "sess", org.id, "c0ffee", kr_now_ms() + 60000, &dg));
    OK(kr_session_get(s, "sess", &tid, csrf, &until, &dg));
    cr_assert_eq(tid, org.id);
    cr_assert_str_eq(csrf, "c0ffee");
    OK(kr_admin_token_revoke(s, org.id, &dg));
    ERR(KR_ENOTFOUND, kr_session_get(s, "sess", &tid, csrf, &until, &dg));
    ERR(KR_ENOTFOUND, kr_admin_token_revoke(s, org.id, &dg)); /* once */
    OK(kr_admin_token_get(s, org.id, &t, &dg));
    cr_assert_neq(t.revoked_at, 0);
    kr_admin_token *all;
    size_t n;
    OK(kr_admin_token_list(s, &all, &n, &dg));
    cr_assert_eq(n, 2);
    free(all);
    /* idempotency: the first response, once per (actor, key) */
    char opn[48], hash[65];
    int status;
    char *resp;
    OK(kr_idem_put(s, "admin:x", "k1", "org.create", "abc", 201, "{\"org\":1}", &dg));
    ERR(KR_EEXISTS, kr_idem_put(s, "admin:x", "k1", "org.create", "abc", 201, "{}", &dg));
    OK(kr_idem_get(s, "admin:x", "k1", opn, hash, &status, &resp, &dg));
    cr_assert_str_eq(resp, "{\"org\":1}");
    cr_assert_eq(status, 201);
    free(resp);
    ERR(KR_ENOTFOUND, kr_idem_get(s, "admin:y", "k1", opn, hash, &status, &resp, &dg));
}

STORE_TEST(audit_is_append_only_and_filtered)
{
    kr_org a, b;
    OK(kr_org_create(s, "a", "A", &a, &dg));
    OK(kr_org_create(s, "b", "B", &b, &dg));
    for (int i = 0; i < 5; i++) {
        kr_audit_row r;
        memset(&r, 0, sizeof r);
        r.at = 1000 + i;
        snprintf(r.actor, sizeof r.actor, "cli:u%d", i % 2);
        kr_strlcpy(r.actor_scope, "operator", sizeof r.actor_scope);
        kr_strlcpy(r.action, i == 4 ? "secret.set" : "org.create", sizeof r.action);
        kr_strlcpy(r.target, "t", sizeof r.target);
        r.org_id = i < 3 ? a.id : b.id;
        kr_strlcpy(r.request_id, "req", sizeof r.request_id);
        kr_strlcpy(r.outcome, "ok", sizeof r.outcome);
        OK(kr_audit_append(s, &r, &dg));
    }
    kr_audit_row *rows;
    size_t n;
    kr_audit_filter f = {.org_id = a.id, .limit = 10};
    OK(kr_audit_list(s, &f, &rows, &n, &dg));
    cr_assert_eq(n, 3);
    cr_assert_gt(rows[0].id, rows[1].id, "newest first");
    int64_t second = rows[1].id;
    free(rows);
    f = (kr_audit_filter){.action = "secret.set", .limit = 10};
    OK(kr_audit_list(s, &f, &rows, &n, &dg));
    cr_assert_eq(n, 1);
    free(rows);
    f = (kr_audit_filter){.actor = "cli:u1", .since = 1002, .limit = 10};
    OK(kr_audit_list(s, &f, &rows, &n, &dg));
    cr_assert_eq(n, 1); /* u1 at 1003 */
    free(rows);
    f = (kr_audit_filter){.org_id = a.id, .before_id = second, .limit = 10};
    OK(kr_audit_list(s, &f, &rows, &n, &dg));
    cr_assert_eq(n, 1);
    free(rows);
    /* the store refuses to change or remove a row */
    cr_assert_neq(kr_db_exec(s->db, "UPDATE audit SET outcome = 'forged'", NULL, 0, &dg), 0);
    cr_assert_neq(kr_db_exec(s->db, "DELETE FROM audit", NULL, 0, &dg), 0);
    cr_assert_eq(q_int(s, "SELECT count(*) FROM audit WHERE outcome = 'ok'"), 5);
}

STORE_TEST(transactions_nest_as_savepoints)
{
    kr_org o;
    /* an inner store transaction rolled back with the outer one */
    OK(kr_store_begin(s, &dg));
    OK(kr_org_create(s, "outer", "O", &o, &dg));
    OK(kr_credits_add(s, o.id, 5000000, "topup", &dg)); /* has its own transaction: a savepoint */
    cr_assert_eq(s->txdepth, 1);
    kr_store_rollback(s);
    cr_assert_eq(s->txdepth, 0);
    cr_assert_eq(q_int(s, "SELECT count(*) FROM orgs"), 0);
    cr_assert_eq(q_int(s, "SELECT count(*) FROM credit_ledger"), 0);
    /* committed together */
    OK(kr_store_begin(s, &dg));
    OK(kr_org_create(s, "kept", "K", &o, &dg));
    OK(kr_credits_add(s, o.id, 5000000, "topup", &dg));
    OK(kr_store_commit(s, &dg));
    cr_assert_eq(q_int(s, "SELECT count(*) FROM credit_ledger"), 1);
    cr_assert_eq(q_int(s, "SELECT count(*) FROM orgs"), 1);
}
