/*
 * db_pg.c -- the PostgreSQL driver (libpq, synchronous API).
 *
 * One kr_db is one PGconn used by one thread at a time; the server runs store
 * calls on worker threads, so blocking here never blocks the event loop.
 * Parameters go as text (integers rendered in decimal) with their types
 * inferred by the server from the statement; results come back as text and
 * are copied into a kr_dbres, SQL NULL as a NULL cell.
 *
 * Errors, by SQLSTATE:
 *   class 23 (integrity) -> KR_EEXISTS. The SQLite driver reports every
 *       SQLITE_CONSTRAINT (unique, check, foreign key, not null) as
 *       KR_EEXISTS, and the store relies on one behaviour for both engines,
 *       so the whole class maps the same way here: 23505 unique and 23514
 *       check (the cases the store expects), and also 23503 foreign key and
 *       23502 not null. The diag names the constraint, so the two remain
 *       distinguishable for a human.
 *   40001 serialization, 40P01 deadlock, 55P03 lock not available, 57014
 *       statement timeout / cancel -> KR_EBUSY (retryable).
 *   a lost connection (class 08, PQstatus CONNECTION_BAD) -> KR_ESTORE,
 *       "connection to PostgreSQL lost". The next call finding the
 *       connection broken tries one PQreset, unless a transaction was open
 *       on it: that transaction is gone, so the call fails until the caller
 *       rolls back (a reset would silently run the rest of the transaction
 *       outside it).
 *   anything else -> KR_ESTORE.
 * The diag carries the server's primary message only: never DETAIL (which
 * quotes row values: a secret's ciphertext, a token hash) and never the
 * parameters; for data exceptions (class 22), whose primary message may
 * quote the offending input, quoted text is withheld.
 *
 * Session: application_name=keyrail (unless the URL sets one),
 * connect_timeout=10 (unless the URL sets one), client_min_messages=warning;
 * remaining warnings go to the keyrail log. The URL itself is never logged
 * nor put in a diag: it may hold a password.
 */
#include "store/db.h"
#include "core/buf.h"
#include "core/log.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kr_db base;
    PGconn *c;
    bool in_txn; /* between begin and commit/rollback */
} db_pg;

/* Copies the first line of a server or libpq message, without trailing
 * whitespace; with redact, every "quoted" run becomes "…". */
static void clean_msg(char *dst, size_t cap, const char *src, bool redact)
{
    size_t o = 0;
    bool quoted = false;
    if (!src || !*src) src = "unknown error";
    for (const char *p = src; *p && *p != '\n' && o + 4 < cap; p++) {
        if (redact && *p == '"') {
            quoted = !quoted;
            if (quoted) {
                memcpy(dst + o, "\"\xe2\x80\xa6", 4); /* "… */
                o += 4;
            } else {
                dst[o++] = '"';
            }
            continue;
        }
        if (quoted) continue;
        dst[o++] = (*p == '\t' || *p == '\r') ? ' ' : *p;
    }
    if (quoted && o + 1 < cap) dst[o++] = '"';
    while (o && dst[o - 1] == ' ')
        o--;
    dst[o] = 0;
}

static int fail_conn(db_pg *p, const char *what, kr_diag *d)
{
    char msg[384];
    clean_msg(msg, sizeof msg, PQerrorMessage(p->c), false);
    return kr_fail(d, KR_ESTORE, "%s: %s", what, msg);
}

static bool sqlstate_is(const char *st, const char *code)
{
    return st && !strcmp(st, code);
}

/* Maps a failed result (r may be NULL: nothing came back) to a KR_E* code. */
static int map_err(db_pg *p, const PGresult *r, kr_diag *d)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(p->c) == CONNECTION_BAD || (st && !strncmp(st, "08", 2)))
        return fail_conn(p, "connection to PostgreSQL lost", d);
    const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!prim) return fail_conn(p, "postgres", d); /* libpq-side failure, e.g. OOM */
    char msg[384];
    clean_msg(msg, sizeof msg, prim, st && !strncmp(st, "22", 2));
    if (st && !strncmp(st, "23", 2)) return kr_fail(d, KR_EEXISTS, "constraint: %s", msg);
    if (sqlstate_is(st, "40001") || sqlstate_is(st, "40P01") || sqlstate_is(st, "55P03") ||
        sqlstate_is(st, "57014"))
        return kr_fail(d, KR_EBUSY, "database is busy: %s (SQLSTATE %s)", msg, st);
    return kr_fail(d, KR_ESTORE, "postgres: %s (SQLSTATE %s)", msg, st ? st : "?");
}

/* Checks a result; 0 when it is a success. Does not clear it. */
static int check(db_pg *p, const PGresult *r, kr_diag *d)
{
    ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK) return 0;
    if (es == PGRES_EMPTY_QUERY) return 0;
    if (es == PGRES_COPY_IN || es == PGRES_COPY_OUT || es == PGRES_COPY_BOTH)
        return kr_fail(d, KR_ESTORE, "postgres: COPY is not supported by this driver");
    return map_err(p, r, d);
}

static void pg_notice(void *arg, const PGresult *r)
{
    (void)arg;
    char msg[384];
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    clean_msg(msg, sizeof msg, PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY),
              st && !strncmp(st, "22", 2));
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    KR_WARN("postgres %s: %s", sev ? sev : "notice", msg);
}

/* Per-session settings; run after connecting and after every reset. */
static int session_setup(db_pg *p, kr_diag *d)
{
    PGresult *r = PQexec(p->c, "SET client_min_messages = warning");
    int rc = check(p, r, d);
    PQclear(r);
    return rc;
}

/* Makes sure the connection is usable before a statement: one PQreset when
 * it is found broken, and never inside a transaction. */
static int ensure_conn(db_pg *p, kr_diag *d)
{
    if (PQstatus(p->c) == CONNECTION_OK) return 0;
    if (p->in_txn)
        return kr_fail(d, KR_ESTORE,
                       "connection to PostgreSQL lost inside a transaction; roll it back");
    PQreset(p->c);
    if (PQstatus(p->c) != CONNECTION_OK)
        return fail_conn(p, "connection to PostgreSQL lost, reconnect failed", d);
    return session_setup(p, d);
}

static void pg_close(kr_db *db)
{
    db_pg *p = (db_pg *)db;
    PQfinish(p->c);
    free(p);
}

static void copy_rows(const PGresult *r, kr_dbres *res)
{
    size_t nr = (size_t)PQntuples(r), nc = (size_t)PQnfields(r);
    res->ncols = nc;
    if (nr == 0 || nc == 0) return;
    res->cells = kr_xcalloc(nr * nc, sizeof(char *));
    res->nrows = nr;
    for (size_t i = 0; i < nr; i++)
        for (size_t c = 0; c < nc; c++) {
            if (PQgetisnull(r, (int)i, (int)c)) continue;
            res->cells[i * nc + c] =
                kr_strndup(PQgetvalue(r, (int)i, (int)c), (size_t)PQgetlength(r, (int)i, (int)c));
        }
}

enum { NUM_LEN = 24 }; /* "-9223372036854775808" and a NUL */

static int pg_query(kr_db *db, const char *sql, const kr_dbval *params, size_t nparams,
                    kr_dbres *res, kr_diag *d)
{
    db_pg *p = (db_pg *)db;
    if (res) memset(res, 0, sizeof *res);
    if (nparams > 65535) return kr_fail(d, KR_EINVAL, "too many query parameters");
    int rc = ensure_conn(p, d);
    if (rc) return rc;
    const char **vals = kr_xcalloc(nparams ? nparams : 1, sizeof *vals);
    char *nums = kr_xmalloc((nparams ? nparams : 1) * NUM_LEN);
    for (size_t i = 0; i < nparams; i++) {
        const kr_dbval *v = &params[i];
        if (v->type == KR_DBV_TEXT) {
            vals[i] = v->s; /* NULL text binds NULL, as in the SQLite driver */
        } else if (v->type == KR_DBV_INT) {
            char *n = nums + i * NUM_LEN;
            snprintf(n, NUM_LEN, "%" PRId64, v->i);
            vals[i] = n;
        }
    }
    PGresult *r = PQexecParams(p->c, sql, (int)nparams, NULL, vals, NULL, NULL, 0);
    free(vals);
    free(nums);
    rc = check(p, r, d);
    if (!rc && res) copy_rows(r, res);
    PQclear(r);
    return rc;
}

static int pg_exec(db_pg *p, const char *sql, PGresult **keep, kr_diag *d)
{
    int rc = ensure_conn(p, d);
    if (rc) return rc;
    PGresult *r = PQexec(p->c, sql);
    rc = check(p, r, d);
    if (keep && !rc)
        *keep = r;
    else
        PQclear(r);
    return rc;
}

static int pg_script(kr_db *db, const char *sql, kr_diag *d)
{
    return pg_exec((db_pg *)db, sql, NULL, d);
}

static int pg_begin(kr_db *db, kr_diag *d)
{
    db_pg *p = (db_pg *)db;
    if (p->in_txn || (PQstatus(p->c) == CONNECTION_OK && PQtransactionStatus(p->c) != PQTRANS_IDLE))
        return kr_fail(d, KR_ESTORE, "postgres: a transaction is already open");
    int rc = pg_exec(p, "BEGIN", NULL, d);
    if (!rc) p->in_txn = true;
    return rc;
}

static void pg_rollback(kr_db *db)
{
    db_pg *p = (db_pg *)db;
    p->in_txn = false;
    if (PQstatus(p->c) != CONNECTION_OK) return;
    PGTransactionStatusType ts = PQtransactionStatus(p->c);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) PQclear(PQexec(p->c, "ROLLBACK"));
}

static int pg_commit(kr_db *db, kr_diag *d)
{
    db_pg *p = (db_pg *)db;
    if (!p->in_txn) return kr_fail(d, KR_ESTORE, "postgres: commit without a transaction");
    if (PQstatus(p->c) != CONNECTION_OK)
        return fail_conn(p, "connection to PostgreSQL lost before commit", d);
    /* COMMIT of a failed transaction "succeeds" with tag ROLLBACK: refuse. */
    if (PQtransactionStatus(p->c) != PQTRANS_INTRANS)
        return kr_fail(d, KR_ESTORE, "postgres: the transaction was aborted by an earlier error");
    PGresult *r = NULL;
    int rc = pg_exec(p, "COMMIT", &r, d);
    if (!rc) {
        if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
            rc = kr_fail(d, KR_ESTORE, "postgres: the transaction was rolled back");
        PQclear(r);
    }
    if (!rc || PQtransactionStatus(p->c) == PQTRANS_IDLE) p->in_txn = false;
    return rc;
}

static const kr_db_ops pg_ops = {pg_close, pg_query, pg_script, pg_begin, pg_commit, pg_rollback};

int kr_db_open_pg(const char *conninfo, kr_db **out, kr_diag *d)
{
    /* Parse first: libpq's parse errors quote the offending part of the URL,
     * which may be the password, so they are not passed on. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        PQfreemem(perr);
        return kr_fail(d, KR_ECONFIG,
                       "invalid PostgreSQL connection URL (not shown: it may contain a password)");
    }
    PQconninfoFree(opts);
    /* Keywords before dbname are defaults the URL may override. */
    const char *const kw[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *const val[] = {"keyrail", "10", conninfo, NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (!c) return kr_fail(d, KR_ENOMEM, "postgres: out of memory");
    db_pg *p = kr_xcalloc(1, sizeof *p);
    p->base.ops = &pg_ops;
    p->base.engine = KR_DB_POSTGRES;
    p->c = c;
    int rc;
    if (PQstatus(c) != CONNECTION_OK) {
        /* libpq names host, port and user here, never the password. */
        rc = fail_conn(p, "cannot connect to PostgreSQL", d);
        pg_close(&p->base);
        return rc;
    }
    PQsetNoticeReceiver(c, pg_notice, NULL);
    if ((rc = session_setup(p, d))) {
        pg_close(&p->base);
        return rc;
    }
    *out = &p->base;
    return 0;
}
