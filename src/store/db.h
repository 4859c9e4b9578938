/*
 * db.h -- the SQL driver interface under the store.
 *
 * keyrail's store logic (store.c) is written once, in SQL that both engines
 * accept, with $1..$N placeholders. A driver turns it into calls on one
 * engine: db_sqlite.c (embedded, default) and db_pg.c (PostgreSQL, for
 * several keyrail instances). Parameters and results are text or 64-bit
 * integers; results are materialised, so a kr_dbres outlives the statement.
 * A kr_db is one connection and is used by one thread at a time.
 */
#ifndef KR_DB_H
#define KR_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum { KR_DBV_NULL = 0, KR_DBV_TEXT, KR_DBV_INT } kr_dbv_type;

typedef struct kr_dbval {
    kr_dbv_type type;
    const char *s; /* KR_DBV_TEXT */
    int64_t i;     /* KR_DBV_INT */
} kr_dbval;

#define KR_DB_NULL ((kr_dbval){KR_DBV_NULL, NULL, 0})
#define KR_DB_TEXT(x) ((kr_dbval){KR_DBV_TEXT, (x), 0})
#define KR_DB_INT(x) ((kr_dbval){KR_DBV_INT, NULL, (int64_t)(x)})

typedef struct kr_dbres {
    size_t nrows, ncols;
    char **cells; /* nrows * ncols, NULL for SQL NULL */
} kr_dbres;

typedef enum { KR_DB_SQLITE = 0, KR_DB_POSTGRES = 1 } kr_db_engine;

typedef struct kr_db kr_db;

typedef struct kr_db_ops {
    void (*close)(kr_db *db);
    /* Runs sql; when res is non-NULL the rows are returned. Unique and
     * check-constraint violations map to KR_EEXISTS, lock timeouts to
     * KR_EBUSY, everything else to KR_ESTORE with d filled. */
    int (*query)(kr_db *db, const char *sql, const kr_dbval *params, size_t nparams,
                 kr_dbres *res, kr_diag *d);
    /* Runs a script of several statements without parameters (migrations). */
    int (*script)(kr_db *db, const char *sql, kr_diag *d);
    int (*begin)(kr_db *db, kr_diag *d); /* a write transaction */
    int (*commit)(kr_db *db, kr_diag *d);
    void (*rollback)(kr_db *db);
} kr_db_ops;

struct kr_db {
    const kr_db_ops *ops;
    kr_db_engine engine;
};

/* Opens a connection for a store URL: a path or sqlite:PATH, or
 * postgres://… / postgresql://… */
int kr_db_open(const char *url, kr_db **out, kr_diag *d);
int kr_db_open_sqlite(const char *path, kr_db **out, kr_diag *d);
int kr_db_open_pg(const char *conninfo, kr_db **out, kr_diag *d);

static inline int kr_db_query(kr_db *db, const char *sql, const kr_dbval *p, size_t n,
                              kr_dbres *res, kr_diag *d)
{
    return db->ops->query(db, sql, p, n, res, d);
}
static inline int kr_db_exec(kr_db *db, const char *sql, const kr_dbval *p, size_t n, kr_diag *d)
{
    return db->ops->query(db, sql, p, n, NULL, d);
}
static inline void kr_db_close(kr_db *db)
{
    if (db) db->ops->close(db);
}

void kr_dbres_free(kr_dbres *r);
const char *kr_dbres_get(const kr_dbres *r, size_t row, size_t col); /* NULL for SQL NULL */
int64_t kr_dbres_int(const kr_dbres *r, size_t row, size_t col);  /* 0 for NULL */

#endif
