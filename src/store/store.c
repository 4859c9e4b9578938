/*
 * store.c -- the store operations, in SQL both engines accept. See store.h.
 */
#include "store/store.h"
#include "store/migrations.h"
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define P(...) ((const kr_dbval[]){__VA_ARGS__})
#define NP(...) (sizeof((const kr_dbval[]){__VA_ARGS__}) / sizeof(kr_dbval))
#define Q(s, sql, res, d, ...) kr_db_query((s)->db, (sql), P(__VA_ARGS__), NP(__VA_ARGS__), (res), (d))

/* ---- transactions: the outermost is the engine's, inner ones savepoints ---- */

static int tx_begin(kr_store *s, kr_diag *d)
{
    if (s->txdepth == 0) {
        int rc = s->db->ops->begin(s->db, d);
        if (!rc) s->txdepth = 1;
        return rc;
    }
    char sql[48];
    snprintf(sql, sizeof sql, "SAVEPOINT kr_sp%d", s->txdepth);
    int rc = kr_db_exec(s->db, sql, NULL, 0, d);
    if (!rc) s->txdepth++;
    return rc;
}

static int tx_commit(kr_store *s, kr_diag *d)
{
    if (s->txdepth <= 1) {
        s->txdepth = 0;
        return s->db->ops->commit(s->db, d);
    }
    char sql[48];
    snprintf(sql, sizeof sql, "RELEASE SAVEPOINT kr_sp%d", s->txdepth - 1);
    int rc = kr_db_exec(s->db, sql, NULL, 0, d);
    if (!rc) s->txdepth--; /* on failure the caller rolls this level back */
    return rc;
}

static void tx_rollback(kr_store *s)
{
    if (s->txdepth <= 1) {
        s->txdepth = 0;
        s->db->ops->rollback(s->db);
        return;
    }
    char sql[96];
    snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT kr_sp%d", s->txdepth - 1);
    kr_db_exec(s->db, sql, NULL, 0, NULL);
    snprintf(sql, sizeof sql, "RELEASE SAVEPOINT kr_sp%d", s->txdepth - 1);
    kr_db_exec(s->db, sql, NULL, 0, NULL);
    s->txdepth--;
}

int kr_store_begin(kr_store *s, kr_diag *d)
{
    return tx_begin(s, d);
}

void kr_dbres_free(kr_dbres *r)
{
    if (!r || !r->cells) return;
    for (size_t i = 0; i < r->nrows * r->ncols; i++) free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

const char *kr_dbres_get(const kr_dbres *r, size_t row, size_t col)
{
    if (row >= r->nrows || col >= r->ncols) return NULL;
    return r->cells[row * r->ncols + col];
}

int64_t kr_dbres_int(const kr_dbres *r, size_t row, size_t col)
{
    const char *s = kr_dbres_get(r, row, col);
    int64_t v = 0;
    if (s) kr_parse_i64(s, strlen(s), &v);
    return v;
}

static void cpy(char *dst, size_t cap, const char *src)
{
    kr_strlcpy(dst, src ? src : "", cap);
}

void kr_utc_day(int64_t ms, char out[11])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

int kr_db_open(const char *url, kr_db **out, kr_diag *d)
{
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13))
        return kr_db_open_pg(url, out, d);
    if (!strncmp(url, "sqlite:", 7)) url += 7;
    if (!*url) return kr_fail(d, KR_ECONFIG, "empty store path");
    return kr_db_open_sqlite(url, out, d);
}

/* ---- migrations ---- */

static int migrate(kr_store *s, kr_diag *d)
{
    /* One transaction for the whole check-and-apply. On PostgreSQL the
     * advisory lock comes first, so instances starting together on a fresh
     * database take turns; SQLite's BEGIN IMMEDIATE serialises writers. */
    int rc = tx_begin(s, d);
    if (rc) return rc;
    if (s->db->engine == KR_DB_POSTGRES &&
        (rc = kr_db_exec(s->db, "SELECT pg_advisory_xact_lock(7357001)", NULL, 0, d)))
        goto fail;
    rc = kr_db_exec(s->db,
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " applied_at BIGINT NOT NULL)",
                    NULL, 0, d);
    if (rc) goto fail;
    size_t n;
    const kr_migration *m = kr_migrations(&n);
    for (size_t i = 0; i < n; i++) {
        kr_dbres r;
        rc = Q(s, "SELECT version FROM schema_migrations WHERE version = $1", &r, d,
               KR_DB_INT(m[i].version));
        if (rc) goto fail;
        bool applied = r.nrows > 0;
        kr_dbres_free(&r);
        if (applied) continue;
        rc = s->db->ops->script(s->db, s->db->engine == KR_DB_POSTGRES ? m[i].postgres : m[i].sqlite,
                                d);
        if (rc) goto fail;
        rc = Q(s, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", NULL, d,
               KR_DB_INT(m[i].version), KR_DB_INT(kr_now_ms()));
        if (rc) goto fail;
    }
    if ((rc = tx_commit(s, d))) goto fail;
    return 0;
fail:
    tx_rollback(s);
    return rc;
}

int kr_store_open(const char *url, kr_store **out, kr_diag *d)
{
    kr_db *db;
    int rc = kr_db_open(url, &db, d);
    if (rc) return rc;
    kr_store *s = kr_xcalloc(1, sizeof *s);
    s->db = db;
    kr_strlcpy(s->url, url, sizeof s->url);
    if ((rc = migrate(s, d))) {
        kr_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void kr_store_close(kr_store *s)
{
    if (!s) return;
    kr_db_close(s->db);
    free(s);
}

int kr_store_ping(kr_store *s, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT 1", NULL, 0, &r, d);
    if (!rc) kr_dbres_free(&r);
    return rc;
}

int kr_store_schema_version(kr_store *s, int *version, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT MAX(version) FROM schema_migrations", NULL, 0, &r, d);
    if (rc) return rc;
    *version = (int)kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    return 0;
}

static bool is_int(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* ---- names ---- */

static bool slug_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KR_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || (s[i] == '-' && i > 0)))
            return false;
    return true;
}

int kr_org_slug_check(const char *slug, kr_diag *d)
{
    if (slug_ok(slug)) return 0;
    return kr_fail(d, KR_EINVAL, "org slug '%.80s' must be 1-%d of [a-z0-9-], not starting with '-'",
                   slug, KR_NAME_MAX);
}

int kr_ws_name_check(const char *name, kr_diag *d)
{
    if (slug_ok(name)) return 0;
    return kr_fail(d, KR_EINVAL,
                   "workspace name '%.80s' must be 1-%d of [a-z0-9-], not starting with '-'", name,
                   KR_NAME_MAX);
}

static int display_name_check(const char *name, kr_diag *d)
{
    size_t n = strlen(name);
    bool ok = n > 0 && n < sizeof(((kr_org *)0)->name);
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
    if (ok) return 0;
    return kr_fail(d, KR_EINVAL, "org name '%.80s' must be 1-%zu bytes without control characters",
                   name, sizeof(((kr_org *)0)->name) - 1);
}

/* ---- orgs ---- */

#define ORG_COLS "id, slug, name, status, created_at"

static void org_from(const kr_dbres *r, size_t i, kr_org *o)
{
    o->id = kr_dbres_int(r, i, 0);
    cpy(o->slug, sizeof o->slug, kr_dbres_get(r, i, 1));
    cpy(o->name, sizeof o->name, kr_dbres_get(r, i, 2));
    cpy(o->status, sizeof o->status, kr_dbres_get(r, i, 3));
    o->created_at = kr_dbres_int(r, i, 4);
}

static int one_org(kr_store *s, const char *sql, kr_dbval v, kr_org *out, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, sql, &v, 1, &r, d);
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else org_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_org_create(kr_store *s, const char *slug, const char *name, kr_org *out, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_org_slug_check(slug, d);
    if (!rc) rc = display_name_check(name, d);
    if (rc) return rc;
    rc = Q(s, "INSERT INTO orgs (slug, name, status, created_at) VALUES ($1, $2, 'active', $3)"
                  " RETURNING " ORG_COLS,
               &r, d, KR_DB_TEXT(slug), KR_DB_TEXT(name), KR_DB_INT(kr_now_ms()));
    if (rc == KR_EEXISTS) return kr_fail(d, rc, "org '%s' already exists", slug);
    if (rc) return rc;
    if (out) org_from(&r, 0, out);
    kr_dbres_free(&r);
    return 0;
}

int kr_org_get(kr_store *s, int64_t id, kr_org *out, kr_diag *d)
{
    return one_org(s, "SELECT " ORG_COLS " FROM orgs WHERE id = $1", KR_DB_INT(id), out, d);
}

int kr_org_find(kr_store *s, const char *ref, kr_org *out, kr_diag *d)
{
    if (!is_int(ref) && !slug_ok(ref))
        return kr_fail(d, KR_EINVAL, "org '%.80s': not an org slug ([a-z0-9-]) or id", ref);
    int rc = one_org(s, "SELECT " ORG_COLS " FROM orgs WHERE slug = $1", KR_DB_TEXT(ref), out, d);
    if (rc == KR_ENOTFOUND && is_int(ref)) {
        int64_t id;
        if (!kr_parse_i64(ref, strlen(ref), &id)) rc = kr_org_get(s, id, out, d);
    }
    if (rc == KR_ENOTFOUND) return kr_fail(d, rc, "no org '%s'", ref);
    return rc;
}

int kr_org_list(kr_store *s, kr_org **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT " ORG_COLS " FROM orgs ORDER BY id", NULL, 0, &r, d);
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) org_from(&r, i, &(*out)[i]);
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

/* ---- workspaces ---- */

#define WS_COLS "id, org_id, name, kind, runtime, parent_id, status, created_at"

static void ws_from(const kr_dbres *r, size_t i, kr_workspace *w)
{
    w->id = kr_dbres_int(r, i, 0);
    w->org_id = kr_dbres_int(r, i, 1);
    cpy(w->name, sizeof w->name, kr_dbres_get(r, i, 2));
    const char *k = kr_dbres_get(r, i, 3);
    w->kind = (k && !strcmp(k, "concierge")) ? KR_WS_CONCIERGE : KR_WS_WORKSPACE;
    cpy(w->runtime, sizeof w->runtime, kr_dbres_get(r, i, 4));
    w->parent_id = kr_dbres_int(r, i, 5);
    cpy(w->status, sizeof w->status, kr_dbres_get(r, i, 6));
    w->created_at = kr_dbres_int(r, i, 7);
}

int kr_ws_create(kr_store *s, int64_t org_id, const char *name, kr_ws_kind kind,
                 const char *runtime, int64_t parent_id, kr_workspace *out, kr_diag *d)
{
    kr_dbres r;
    int nrc = kr_ws_name_check(name, d);
    if (nrc) return nrc;
    if (kind == KR_WS_CONCIERGE) {
        int rc = Q(s, "SELECT name FROM workspaces WHERE org_id = $1 AND kind = 'concierge'", &r, d,
                   KR_DB_INT(org_id));
        if (rc) return rc;
        if (r.nrows) {
            rc = kr_fail(d, KR_ECONCIERGE_EXISTS, "org already has a concierge ('%s')",
                         kr_dbres_get(&r, 0, 0));
            kr_dbres_free(&r);
            return rc;
        }
        kr_dbres_free(&r);
    }
    int rc = Q(s,
               "INSERT INTO workspaces (org_id, name, kind, runtime, parent_id, status, created_at)"
               " VALUES ($1, $2, $3, $4, $5, 'active', $6) RETURNING " WS_COLS,
               &r, d, KR_DB_INT(org_id), KR_DB_TEXT(name), KR_DB_TEXT(kr_ws_kind_name(kind)),
               KR_DB_TEXT(runtime), parent_id ? KR_DB_INT(parent_id) : KR_DB_NULL,
               KR_DB_INT(kr_now_ms()));
    if (rc == KR_EEXISTS) {
        /* Lost a race for the concierge slot, or the name is taken. */
        kr_dbres c;
        if (kind == KR_WS_CONCIERGE &&
            !Q(s, "SELECT 1 FROM workspaces WHERE org_id = $1 AND kind = 'concierge'", &c, NULL,
               KR_DB_INT(org_id))) {
            bool taken = c.nrows > 0;
            kr_dbres_free(&c);
            if (taken) return kr_fail(d, KR_ECONCIERGE_EXISTS, "org already has a concierge");
        }
        return kr_fail(d, KR_EEXISTS, "workspace '%s' already exists in this org", name);
    }
    if (rc) return rc;
    if (out) ws_from(&r, 0, out);
    kr_dbres_free(&r);
    return 0;
}

int kr_ws_get(kr_store *s, int64_t id, kr_workspace *out, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT " WS_COLS " FROM workspaces WHERE id = $1", &r, d, KR_DB_INT(id));
    if (rc) return rc;
    if (r.nrows == 0) rc = kr_fail(d, KR_ENOTFOUND, "no workspace %lld", (long long)id);
    else ws_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_ws_ref_check(const char *ref, kr_diag *d)
{
    const char *slash = strchr(ref, '/');
    if (!slash) {
        if (is_int(ref)) return 0;
        return kr_fail(d, KR_EINVAL, "workspace reference '%s': use ORG/NAME or an id", ref);
    }
    char org[KR_NAME_MAX + 1];
    if (kr_memlcpy(org, sizeof org, ref, (size_t)(slash - ref)) || !slug_ok(org))
        return kr_fail(d, KR_EINVAL,
                       "workspace reference '%.80s': the org before '/' is not an org slug "
                       "([a-z0-9-], 1-%d)",
                       ref, KR_NAME_MAX);
    if (!slug_ok(slash + 1))
        return kr_fail(d, KR_EINVAL,
                       "workspace reference '%.80s': the name after '/' is not a workspace name "
                       "([a-z0-9-], 1-%d)",
                       ref, KR_NAME_MAX);
    return 0;
}

int kr_ws_find(kr_store *s, const char *ref, kr_workspace *out, kr_diag *d)
{
    int rc = kr_ws_ref_check(ref, d);
    if (rc) return rc;
    const char *slash = strchr(ref, '/');
    if (!slash) {
        int64_t id;
        if (kr_parse_i64(ref, strlen(ref), &id)) return kr_fail(d, KR_EINVAL, "bad id '%s'", ref);
        return kr_ws_get(s, id, out, d);
    }
    char org[KR_NAME_MAX + 1];
    kr_memlcpy(org, sizeof org, ref, (size_t)(slash - ref));
    kr_dbres r;
    rc = Q(s,
               "SELECT w.id, w.org_id, w.name, w.kind, w.runtime, w.parent_id, w.status, w.created_at"
               " FROM workspaces w JOIN orgs o ON o.id = w.org_id WHERE o.slug = $1 AND w.name = $2",
               &r, d, KR_DB_TEXT(org), KR_DB_TEXT(slash + 1));
    if (rc) return rc;
    if (r.nrows == 0) rc = kr_fail(d, KR_ENOTFOUND, "no workspace '%s'", ref);
    else ws_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_ws_delete(kr_store *s, int64_t id, kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    rc = Q(s, "DELETE FROM secrets WHERE scope = 'workspace' AND owner_id = $1", NULL, d,
           KR_DB_INT(id));
    if (!rc) rc = Q(s, "DELETE FROM tokens WHERE workspace_id = $1", NULL, d, KR_DB_INT(id));
    if (!rc) rc = Q(s, "DELETE FROM workspaces WHERE id = $1", NULL, d, KR_DB_INT(id));
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    return rc;
}

int kr_ws_list(kr_store *s, int64_t org_id, kr_workspace **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = org_id ? Q(s, "SELECT " WS_COLS " FROM workspaces WHERE org_id = $1 ORDER BY id", &r,
                        d, KR_DB_INT(org_id))
                    : kr_db_query(s->db, "SELECT " WS_COLS " FROM workspaces ORDER BY id", NULL, 0,
                                  &r, d);
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) ws_from(&r, i, &(*out)[i]);
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

/* ---- secrets ---- */

#define SECRET_COLS "scope, owner_id, key, ciphertext, enc_version, created_at, updated_at"

static void secret_from(const kr_dbres *r, size_t i, kr_secret_row *o)
{
    const char *sc = kr_dbres_get(r, i, 0);
    o->scope = (sc && !strcmp(sc, "workspace")) ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG;
    o->owner_id = kr_dbres_int(r, i, 1);
    cpy(o->key, sizeof o->key, kr_dbres_get(r, i, 2));
    o->ciphertext = kr_strdup(kr_dbres_get(r, i, 3) ? kr_dbres_get(r, i, 3) : "");
    o->enc_version = (int)kr_dbres_int(r, i, 4);
    o->created_at = kr_dbres_int(r, i, 5);
    o->updated_at = kr_dbres_int(r, i, 6);
}

void kr_secret_row_free(kr_secret_row *r)
{
    if (!r) return;
    free(r->ciphertext);
    r->ciphertext = NULL;
}

void kr_secret_rows_free(kr_secret_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) kr_secret_row_free(&rows[i]);
    free(rows);
}

int kr_store_secret_put(kr_store *s, kr_scope scope, int64_t owner, const char *key,
                        const char *ciphertext, int enc_version, kr_diag *d)
{
    int64_t now = kr_now_ms();
    return Q(s,
             "INSERT INTO secrets (scope, owner_id, key, ciphertext, enc_version, created_at,"
             " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)"
             " ON CONFLICT (scope, owner_id, key) DO UPDATE SET ciphertext = excluded.ciphertext,"
             " enc_version = excluded.enc_version, updated_at = excluded.updated_at",
             NULL, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner), KR_DB_TEXT(key),
             KR_DB_TEXT(ciphertext), KR_DB_INT(enc_version), KR_DB_INT(now));
}

int kr_store_secret_get(kr_store *s, kr_scope scope, int64_t owner, const char *key,
                        kr_secret_row *out, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT " SECRET_COLS " FROM secrets WHERE scope = $1 AND owner_id = $2 AND key = $3",
               &r, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner), KR_DB_TEXT(key));
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else secret_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_store_secret_del(kr_store *s, kr_scope scope, int64_t owner, const char *key, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "DELETE FROM secrets WHERE scope = $1 AND owner_id = $2 AND key = $3 RETURNING key",
               &r, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner), KR_DB_TEXT(key));
    if (rc) return rc;
    rc = r.nrows ? 0 : kr_fail(d, KR_ENOTFOUND, "no secret '%s' at %s scope", key,
                               kr_scope_name(scope));
    kr_dbres_free(&r);
    return rc;
}

int kr_store_secret_list(kr_store *s, kr_scope scope, int64_t owner, kr_secret_row **out,
                         size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT " SECRET_COLS " FROM secrets WHERE scope = $1 AND owner_id = $2 ORDER BY key",
               &r, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner));
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) secret_from(&r, i, &(*out)[i]);
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

/* ---- tokens ---- */

#define TOKEN_COLS "id, workspace_id, prefix, hash, created_at, expires_at, revoked_at"

static void token_from(const kr_dbres *r, size_t i, kr_token *t)
{
    t->id = kr_dbres_int(r, i, 0);
    t->workspace_id = kr_dbres_int(r, i, 1);
    cpy(t->prefix, sizeof t->prefix, kr_dbres_get(r, i, 2));
    cpy(t->hash, sizeof t->hash, kr_dbres_get(r, i, 3));
    t->created_at = kr_dbres_int(r, i, 4);
    t->expires_at = kr_dbres_int(r, i, 5);
    t->revoked_at = kr_dbres_int(r, i, 6);
}

int kr_token_insert(kr_store *s, int64_t ws, const char *hash_hex, const char *prefix,
                    int64_t ttl_ms, kr_token *out, kr_diag *d)
{
    kr_dbres r;
    int64_t now = kr_now_ms();
    int rc = Q(s,
               "INSERT INTO tokens (workspace_id, hash, prefix, created_at, expires_at)"
               " VALUES ($1, $2, $3, $4, $5) RETURNING " TOKEN_COLS,
               &r, d, KR_DB_INT(ws), KR_DB_TEXT(hash_hex), KR_DB_TEXT(prefix),
               KR_DB_INT(now), ttl_ms ? KR_DB_INT(now + ttl_ms) : KR_DB_NULL);
    if (rc) return rc;
    if (out) token_from(&r, 0, out);
    kr_dbres_free(&r);
    return 0;
}

int kr_token_by_hash(kr_store *s, const char *hash_hex, kr_token *out, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT " TOKEN_COLS " FROM tokens WHERE hash = $1", &r, d, KR_DB_TEXT(hash_hex));
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else token_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_token_find(kr_store *s, const char *ref, kr_token *out, kr_diag *d)
{
    kr_dbres r;
    int rc;
    int64_t id;
    if (is_int(ref) && !kr_parse_i64(ref, strlen(ref), &id))
        rc = Q(s, "SELECT " TOKEN_COLS " FROM tokens WHERE id = $1", &r, d, KR_DB_INT(id));
    else
        rc = Q(s, "SELECT " TOKEN_COLS " FROM tokens WHERE prefix = $1", &r, d, KR_DB_TEXT(ref));
    if (rc) return rc;
    if (r.nrows == 0) rc = kr_fail(d, KR_ENOTFOUND, "no token '%s'", ref);
    else if (r.nrows > 1) rc = kr_fail(d, KR_EINVAL, "token prefix '%s' is ambiguous; use the id", ref);
    else token_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_token_revoke(kr_store *s, int64_t id, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id",
               &r, d, KR_DB_INT(kr_now_ms()), KR_DB_INT(id));
    if (rc) return rc;
    rc = r.nrows ? 0 : kr_fail(d, KR_ENOTFOUND, "no active token %lld", (long long)id);
    kr_dbres_free(&r);
    return rc;
}

int kr_token_list(kr_store *s, int64_t ws, kr_token **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT " TOKEN_COLS " FROM tokens WHERE workspace_id = $1 ORDER BY id", &r, d,
               KR_DB_INT(ws));
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) token_from(&r, i, &(*out)[i]);
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

/* ---- usage and credits ---- */

/* A row's route: "byok" (metered, priced for information, never debited)
 * or "platform". */
static bool is_byok(const kr_usage_rec *u)
{
    return !strcmp(u->route, "byok");
}

static int insert_usage_row(kr_store *s, const kr_usage_rec *u, bool *inserted, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "INSERT INTO usage (request_id, org_id, workspace_id, provider, model, input_tokens,"
               " output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, status,"
               " started_at, finished_at, route) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
               " ON CONFLICT (request_id) DO NOTHING RETURNING id",
               &r, d, KR_DB_TEXT(u->request_id), KR_DB_INT(u->org_id), KR_DB_INT(u->workspace_id),
               KR_DB_TEXT(u->provider), KR_DB_TEXT(u->model), KR_DB_INT(u->u.input_tokens),
               KR_DB_INT(u->u.output_tokens), KR_DB_INT(u->u.cache_read_tokens),
               KR_DB_INT(u->u.cache_write_tokens), KR_DB_INT(u->cost_micros),
               KR_DB_TEXT(u->status), KR_DB_INT(u->started_at), KR_DB_INT(u->finished_at),
               KR_DB_TEXT(is_byok(u) ? "byok" : "platform"));
    if (rc) return rc;
    *inserted = r.nrows > 0; /* a replay of a recorded request inserts nothing */
    kr_dbres_free(&r);
    return 0;
}

static int by_org(const void *a, const void *b)
{
    const kr_usage_rec *x = *(const kr_usage_rec *const *)a, *y = *(const kr_usage_rec *const *)b;
    if (x->org_id != y->org_id) return x->org_id < y->org_id ? -1 : 1;
    if (x->workspace_id != y->workspace_id) return x->workspace_id < y->workspace_id ? -1 : 1;
    int m = strcmp(x->model, y->model);
    if (m) return m;
    if (is_byok(x) != is_byok(y)) return is_byok(x) ? 1 : -1;
    return x < y ? -1 : x > y;
}

/* One org's rows of a batch (order[0..n), inserted[] says which are new):
 * its credits row first -- the debit doubles as the lock that orders two
 * instances' batches, so they cannot deadlock on the rollup rows after it --
 * then one rollup upsert per (day, workspace, model, route), then a ledger
 * entry per priced platform row. BYOK rows are never debited. */
static int settle_org(kr_store *s, const kr_usage_rec *const *order, const bool *inserted,
                      size_t n, kr_diag *d)
{
    int64_t org = order[0]->org_id, total = 0, now = kr_now_ms();
    for (size_t i = 0; i < n; i++)
        if (inserted[i] && !is_byok(order[i])) total += order[i]->cost_micros;
    int rc = Q(s,
               "INSERT INTO credits (org_id, balance_micros, overage_cap_micros, updated_at)"
               " VALUES ($1, -CAST($2 AS BIGINT), 0, $3) ON CONFLICT (org_id) DO UPDATE"
               " SET balance_micros = credits.balance_micros - $2,"
               " updated_at = CASE WHEN $2 = 0 THEN credits.updated_at ELSE $3 END",
               NULL, d, KR_DB_INT(org), KR_DB_INT(total), KR_DB_INT(now));
    for (size_t i = 0; !rc && i < n;) {
        /* a group: same workspace, model, route and day (rows are sorted by the first three) */
        char day[11];
        kr_utc_day(order[i]->started_at, day);
        kr_usage sum = {0};
        int64_t reqs = 0, cost = 0;
        size_t j = i;
        for (; j < n && order[j]->workspace_id == order[i]->workspace_id &&
               !strcmp(order[j]->model, order[i]->model) && is_byok(order[j]) == is_byok(order[i]);
             j++) {
            char dj[11];
            kr_utc_day(order[j]->started_at, dj);
            if (strcmp(dj, day)) break;
            if (!inserted[j]) continue;
            reqs++;
            sum.input_tokens += order[j]->u.input_tokens;
            sum.output_tokens += order[j]->u.output_tokens;
            sum.cache_read_tokens += order[j]->u.cache_read_tokens;
            sum.cache_write_tokens += order[j]->u.cache_write_tokens;
            cost += order[j]->cost_micros;
        }
        if (reqs)
            rc = Q(s,
                   "INSERT INTO usage_daily (day, org_id, workspace_id, model, requests, input_tokens,"
                   " output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, route)"
                   " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                   " ON CONFLICT (day, workspace_id, model, route)"
                   " DO UPDATE SET requests = usage_daily.requests + excluded.requests,"
                   " input_tokens = usage_daily.input_tokens + excluded.input_tokens,"
                   " output_tokens = usage_daily.output_tokens + excluded.output_tokens,"
                   " cache_read_tokens = usage_daily.cache_read_tokens + excluded.cache_read_tokens,"
                   " cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens,"
                   " cost_micros = usage_daily.cost_micros + excluded.cost_micros",
                   NULL, d, KR_DB_TEXT(day), KR_DB_INT(org), KR_DB_INT(order[i]->workspace_id),
                   KR_DB_TEXT(order[i]->model), KR_DB_INT(reqs), KR_DB_INT(sum.input_tokens),
                   KR_DB_INT(sum.output_tokens), KR_DB_INT(sum.cache_read_tokens),
                   KR_DB_INT(sum.cache_write_tokens), KR_DB_INT(cost),
                   KR_DB_TEXT(is_byok(order[i]) ? "byok" : "platform"));
        i = j;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        if (!inserted[i] || order[i]->cost_micros == 0 || is_byok(order[i])) continue;
        rc = Q(s,
               "INSERT INTO credit_ledger (org_id, delta_micros, reason, request_id, created_at)"
               " VALUES ($1, $2, 'usage', $3, $4)",
               NULL, d, KR_DB_INT(org), KR_DB_INT(-order[i]->cost_micros),
               KR_DB_TEXT(order[i]->request_id), KR_DB_INT(now));
    }
    return rc;
}

int kr_usage_record(kr_store *s, const kr_usage_rec *recs, size_t n, kr_diag *d)
{
    /* In org order (then workspace and model, for the rollup groups): two
     * instances' batches take the orgs' credits rows in the same order. */
    const kr_usage_rec **order = kr_xmalloc((n ? n : 1) * sizeof *order);
    bool *inserted = kr_xcalloc(n ? n : 1, sizeof *inserted);
    for (size_t i = 0; i < n; i++) order[i] = &recs[i];
    qsort(order, n, sizeof *order, by_org);
    int rc = tx_begin(s, d);
    for (size_t i = 0; !rc && i < n;) {
        size_t j = i;
        while (j < n && order[j]->org_id == order[i]->org_id) j++;
        for (size_t k = i; !rc && k < j; k++) rc = insert_usage_row(s, order[k], &inserted[k], d);
        if (!rc) rc = settle_org(s, order + i, inserted + i, j - i, d);
        i = j;
    }
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    free(order);
    free(inserted);
    return rc;
}

int kr_credits_get(kr_store *s, int64_t org, int64_t *balance, int64_t *cap, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT balance_micros, overage_cap_micros FROM credits WHERE org_id = $1", &r, d,
               KR_DB_INT(org));
    if (rc) return rc;
    *balance = r.nrows ? kr_dbres_int(&r, 0, 0) : 0;
    *cap = r.nrows ? kr_dbres_int(&r, 0, 1) : 0;
    kr_dbres_free(&r);
    return 0;
}

int kr_credits_add(kr_store *s, int64_t org, int64_t delta, const char *reason, kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    int64_t now = kr_now_ms();
    rc = Q(s,
           "INSERT INTO credits (org_id, balance_micros, overage_cap_micros, updated_at)"
           " VALUES ($1, $2, 0, $3) ON CONFLICT (org_id) DO UPDATE"
           " SET balance_micros = credits.balance_micros + $2, updated_at = $3",
           NULL, d, KR_DB_INT(org), KR_DB_INT(delta), KR_DB_INT(now));
    if (!rc)
        rc = Q(s,
               "INSERT INTO credit_ledger (org_id, delta_micros, reason, request_id, created_at)"
               " VALUES ($1, $2, $3, NULL, $4)",
               NULL, d, KR_DB_INT(org), KR_DB_INT(delta), KR_DB_TEXT(reason), KR_DB_INT(now));
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    return rc;
}

int kr_credits_set_cap(kr_store *s, int64_t org, int64_t cap, kr_diag *d)
{
    return Q(s,
             "INSERT INTO credits (org_id, balance_micros, overage_cap_micros, updated_at)"
             " VALUES ($1, 0, $2, $3) ON CONFLICT (org_id) DO UPDATE"
             " SET overage_cap_micros = $2, updated_at = $3",
             NULL, d, KR_DB_INT(org), KR_DB_INT(cap), KR_DB_INT(kr_now_ms()));
}

/* ---- credits history, limits, allow-lists, rate windows, reports ---- */

int kr_credits_history(kr_store *s, int64_t org, size_t limit, kr_ledger_row **out, size_t *n,
                       kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "SELECT id, delta_micros, reason, request_id, created_at FROM credit_ledger"
               " WHERE org_id = $1 ORDER BY id DESC LIMIT $2",
               &r, d, KR_DB_INT(org), KR_DB_INT((int64_t)limit));
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) {
        kr_ledger_row *l = &(*out)[i];
        l->id = kr_dbres_int(&r, i, 0);
        l->delta_micros = kr_dbres_int(&r, i, 1);
        cpy(l->reason, sizeof l->reason, kr_dbres_get(&r, i, 2));
        cpy(l->request_id, sizeof l->request_id, kr_dbres_get(&r, i, 3));
        l->created_at = kr_dbres_int(&r, i, 4);
    }
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

int kr_limits_get(kr_store *s, kr_scope scope, int64_t owner, int64_t *rpm, int64_t *tpm, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT rpm, tpm FROM limits WHERE scope = $1 AND owner_id = $2", &r, d,
               KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner));
    if (rc) return rc;
    *rpm = r.nrows ? kr_dbres_int(&r, 0, 0) : 0;
    *tpm = r.nrows ? kr_dbres_int(&r, 0, 1) : 0;
    kr_dbres_free(&r);
    return 0;
}

int kr_limits_set(kr_store *s, kr_scope scope, int64_t owner, int64_t rpm, int64_t tpm, kr_diag *d)
{
    return Q(s,
             "INSERT INTO limits (scope, owner_id, rpm, tpm) VALUES ($1, $2, $3, $4)"
             " ON CONFLICT (scope, owner_id) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm",
             NULL, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner), KR_DB_INT(rpm),
             KR_DB_INT(tpm));
}

void kr_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

int kr_allow_get(kr_store *s, kr_scope scope, int64_t owner, char ***models, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT model FROM model_allow WHERE scope = $1 AND owner_id = $2 ORDER BY model",
               &r, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner));
    if (rc) return rc;
    *models = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **models);
    for (size_t i = 0; i < r.nrows; i++) (*models)[i] = kr_strdup(kr_dbres_get(&r, i, 0));
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

int kr_allow_set(kr_store *s, kr_scope scope, int64_t owner, const char *const *models, size_t n,
                 kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    rc = Q(s, "DELETE FROM model_allow WHERE scope = $1 AND owner_id = $2", NULL, d,
           KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner));
    for (size_t i = 0; !rc && i < n; i++)
        rc = Q(s,
               "INSERT INTO model_allow (scope, owner_id, model) VALUES ($1, $2, $3)"
               " ON CONFLICT (scope, owner_id, model) DO NOTHING",
               NULL, d, KR_DB_TEXT(kr_scope_name(scope)), KR_DB_INT(owner), KR_DB_TEXT(models[i]));
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    return rc;
}

int kr_rate_sync(kr_store *s, kr_rate_key *keys, size_t n, kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    for (size_t i = 0; !rc && i < n; i++) {
        kr_rate_key *k = &keys[i];
        kr_dbres r;
        rc = Q(s,
               "INSERT INTO rate_windows (scope, owner_id, window_start, requests, tokens)"
               " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, owner_id, window_start) DO UPDATE"
               " SET requests = rate_windows.requests + excluded.requests,"
               " tokens = rate_windows.tokens + excluded.tokens RETURNING requests, tokens",
               &r, d, KR_DB_TEXT(kr_scope_name(k->scope)), KR_DB_INT(k->owner),
               KR_DB_INT(k->window_start), KR_DB_INT(k->add_requests), KR_DB_INT(k->add_tokens));
        if (rc) break;
        k->total_requests = kr_dbres_int(&r, 0, 0);
        k->total_tokens = kr_dbres_int(&r, 0, 1);
        kr_dbres_free(&r);
    }
    /* old windows are of no use to anyone */
    if (!rc)
        rc = Q(s, "DELETE FROM rate_windows WHERE window_start < $1", NULL, d,
               KR_DB_INT(kr_now_ms() / 1000 - 600));
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    return rc;
}

int kr_usage_report(kr_store *s, const kr_usage_filter *f, const char *group, kr_dbres *out,
                    kr_diag *d)
{
    /* orgs and workspaces are shown by the names operators type (--org acme,
     * --ws acme/dev), grouped by id; one deleted since shows as #id */
    static const struct {
        const char *name, *col, *key;
    } cols[] = {{"org", "COALESCE(o.slug, '#' || CAST(u.org_id AS TEXT))", "u.org_id"},
                {"workspace",
                 "COALESCE(wo.slug || '/' || w.name, '#' || CAST(u.workspace_id AS TEXT))",
                 "u.workspace_id"},
                {"model", "u.model", "u.model"},
                {"route", "u.route", "u.route"},
                {"day", "u.day", "u.day"}};
    enum { NCOLS = sizeof cols / sizeof cols[0] };
    char sel[512] = "", grp[512] = "", ord[512] = "";
    bool want[NCOLS] = {false};
    const char *g = group ? group : "";
    while (*g) {
        const char *e = strchr(g, ',');
        size_t l = e ? (size_t)(e - g) : strlen(g);
        bool ok = false;
        for (int i = 0; i < NCOLS; i++)
            if (strlen(cols[i].name) == l && !strncmp(g, cols[i].name, l)) want[i] = ok = true;
        if (!ok)
            return kr_fail(d, KR_EINVAL, "unknown grouping '%.*s' (org, workspace, model, route, day)",
                           (int)l, g);
        g += l + (e ? 1 : 0);
    }
    for (int i = 0; i < NCOLS; i++)
        if (want[i]) {
            size_t sl = strlen(sel), gl = strlen(grp), ol = strlen(ord);
            snprintf(sel + sl, sizeof sel - sl, "%s, ", cols[i].col);
            snprintf(grp + gl, sizeof grp - gl, "%s%s", gl ? ", " : "", cols[i].key);
            if (strcmp(cols[i].key, cols[i].col)) {
                gl = strlen(grp);
                snprintf(grp + gl, sizeof grp - gl, ", %s", cols[i].col);
            }
            snprintf(ord + ol, sizeof ord - ol, "%s%s", ol ? ", " : "", cols[i].col);
        }
    kr_buf sql = KR_BUF_INIT(4096);
    kr_buf_printf(&sql,
                  "SELECT %sSUM(u.requests), SUM(u.input_tokens), SUM(u.output_tokens),"
                  " SUM(u.cache_read_tokens), SUM(u.cache_write_tokens), SUM(u.cost_micros)"
                  " FROM usage_daily u LEFT JOIN orgs o ON o.id = u.org_id"
                  " LEFT JOIN workspaces w ON w.id = u.workspace_id"
                  " LEFT JOIN orgs wo ON wo.id = w.org_id"
                  " WHERE ($1 = 0 OR u.org_id = $1) AND ($2 = 0 OR u.workspace_id = $2)"
                  " AND ($3 = '' OR u.model = $3) AND ($4 = '' OR u.day >= $4) AND ($5 = '' OR u.day <= $5)",
                  sel);
    if (grp[0]) kr_buf_printf(&sql, " GROUP BY %s ORDER BY %s", grp, ord);
    int rc = kr_db_query(s->db, sql.data,
                         P(KR_DB_INT(f->org_id), KR_DB_INT(f->workspace_id),
                           KR_DB_TEXT(f->model ? f->model : ""),
                           KR_DB_TEXT(f->from_day ? f->from_day : ""), KR_DB_TEXT(f->to_day ? f->to_day : "")),
                         5, out, d);
    kr_buf_free(&sql);
    return rc;
}

/* ---- master key rotation ---- */

int kr_store_secret_list_all(kr_store *s, kr_secret_row **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT " SECRET_COLS " FROM secrets ORDER BY scope, owner_id, key",
                         NULL, 0, &r, d);
    if (rc) return rc;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) secret_from(&r, i, &(*out)[i]);
    *n = r.nrows;
    kr_dbres_free(&r);
    return 0;
}

/* ---- the master key check ---- */

/* Secret writers (shared) and a rotation (exclusive) on PostgreSQL. */
#define SECRET_WRITE_LOCK "7357002"

int kr_store_keycheck_get(kr_store *s, char out[65], kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT fingerprint FROM key_check WHERE id = 1", NULL, 0, &r, d);
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else cpy(out, 65, kr_dbres_get(&r, 0, 0));
    kr_dbres_free(&r);
    return rc;
}

int kr_store_keycheck_init(kr_store *s, const char *fp, char out[65], kr_diag *d)
{
    int rc = Q(s,
               "INSERT INTO key_check (id, fingerprint, updated_at) VALUES (1, $1, $2)"
               " ON CONFLICT (id) DO NOTHING",
               NULL, d, KR_DB_TEXT(fp), KR_DB_INT(kr_now_ms()));
    if (rc) return rc;
    rc = kr_store_keycheck_get(s, out, d);
    return rc == KR_ENOTFOUND ? kr_fail(d, KR_ESTORE, "the key check was not stored") : rc;
}

int kr_store_secret_write_begin(kr_store *s, kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    if (s->db->engine == KR_DB_POSTGRES &&
        (rc = kr_db_exec(s->db, "SELECT pg_advisory_xact_lock_shared(" SECRET_WRITE_LOCK ")", NULL,
                         0, d)))
        tx_rollback(s);
    return rc;
}

int kr_store_commit(kr_store *s, kr_diag *d)
{
    return tx_commit(s, d);
}

void kr_store_rollback(kr_store *s)
{
    tx_rollback(s);
}

int kr_store_secret_rewrite_all(kr_store *s, kr_secret_rewrite_fn fn, void *arg, bool commit,
                                size_t *n, kr_diag *d)
{
    return kr_store_secret_rewrite_all_keyed(s, fn, arg, commit, NULL, NULL, n, d);
}

int kr_store_secret_rewrite_all_keyed(kr_store *s, kr_secret_rewrite_fn fn, void *arg,
                                      bool commit, const char *check_from,
                                      const char *check_to, size_t *n, kr_diag *d)
{
    if (n) *n = 0;
    int rc = tx_begin(s, d);
    if (rc) return rc;
    /* PostgreSQL: no other writer may add or change a secret (under the old
     * key) between our read and our commit; readers are not blocked. A
     * writer holding the table too long is an error, not a hang. keyrail's
     * own secret writers check the key under the shared side of the advisory
     * lock taken here first, so they wait and then see the new check. */
    if (s->db->engine == KR_DB_POSTGRES &&
        ((rc = kr_db_exec(s->db, "SET LOCAL lock_timeout = '10s'", NULL, 0, d)) ||
         (rc = kr_db_exec(s->db, "SELECT pg_advisory_xact_lock(" SECRET_WRITE_LOCK ")", NULL, 0,
                          d)) ||
         (rc = kr_db_exec(s->db, "LOCK TABLE secrets IN SHARE ROW EXCLUSIVE MODE", NULL, 0, d)))) {
        tx_rollback(s);
        return rc;
    }
    if (check_from) {
        char stored[65];
        rc = kr_store_keycheck_get(s, stored, d);
        if (rc == KR_ENOTFOUND) {
            rc = 0; /* a store from before the check: the rows decide */
        } else if (!rc && strcmp(stored, check_from)) {
            rc = kr_fail(d, KR_EWRONG_MASTER_KEY,
                         "the store's master key check does not match the old key%s; nothing "
                         "was changed",
                         check_to && !strcmp(stored, check_to)
                             ? " but the new one (already rotated?)"
                             : "");
        }
        if (rc) {
            tx_rollback(s);
            return rc;
        }
    }
    kr_secret_row *rows = NULL;
    size_t nrows = 0, i;
    if ((rc = kr_store_secret_list_all(s, &rows, &nrows, d))) {
        tx_rollback(s);
        return rc;
    }
    for (i = 0; i < nrows && !rc; i++) {
        const kr_secret_row *row = &rows[i];
        char *ct = NULL;
        int ver = row->enc_version;
        if ((rc = fn(arg, row, &ct, &ver, d))) {
            free(ct);
            break;
        }
        if (!ct) {
            rc = kr_fail(d, KR_EINVAL, "no new ciphertext for secret %s (%s scope, owner %lld)",
                         row->key, kr_scope_name(row->scope), (long long)row->owner_id);
            break;
        }
        kr_dbres r;
        rc = Q(s,
               "UPDATE secrets SET ciphertext = $1, enc_version = $2 WHERE scope = $3"
               " AND owner_id = $4 AND key = $5 AND ciphertext = $6 RETURNING key",
               &r, d, KR_DB_TEXT(ct), KR_DB_INT(ver), KR_DB_TEXT(kr_scope_name(row->scope)),
               KR_DB_INT(row->owner_id), KR_DB_TEXT(row->key), KR_DB_TEXT(row->ciphertext));
        free(ct);
        if (rc) break;
        if (r.nrows != 1)
            rc = kr_fail(d, KR_ESTORE,
                         "secret %s (%s scope, owner %lld) changed during the rewrite; nothing "
                         "was changed, run it again",
                         row->key, kr_scope_name(row->scope), (long long)row->owner_id);
        kr_dbres_free(&r);
    }
    kr_secret_rows_free(rows, nrows);
    if (!rc && check_to)
        rc = Q(s,
               "INSERT INTO key_check (id, fingerprint, updated_at) VALUES (1, $1, $2)"
               " ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint,"
               " updated_at = excluded.updated_at",
               NULL, d, KR_DB_TEXT(check_to), KR_DB_INT(kr_now_ms()));
    if (!rc && commit) rc = tx_commit(s, d);
    if (rc || !commit) tx_rollback(s);
    if (!rc && n) *n = nrows;
    return rc;
}

/* ---- admin tokens ---- */

#define ADMIN_COLS                                                                                 \
    "a.id, a.prefix, a.scope, a.org_id, COALESCE(o.slug, ''), a.name, a.created_at,"             \
    " a.expires_at, a.revoked_at"
#define ADMIN_FROM " FROM admin_tokens a LEFT JOIN orgs o ON o.id = a.org_id"

static void admin_from(const kr_dbres *r, size_t row, kr_admin_token *t)
{
    memset(t, 0, sizeof *t);
    t->id = kr_dbres_int(r, row, 0);
    cpy(t->prefix, sizeof t->prefix, kr_dbres_get(r, row, 1));
    const char *sc = kr_dbres_get(r, row, 2);
    t->scope = sc && !strcmp(sc, "org") ? KR_ADMIN_ORG : KR_ADMIN_OPERATOR;
    t->org_id = kr_dbres_int(r, row, 3);
    cpy(t->org_slug, sizeof t->org_slug, kr_dbres_get(r, row, 4));
    cpy(t->name, sizeof t->name, kr_dbres_get(r, row, 5));
    t->created_at = kr_dbres_int(r, row, 6);
    t->expires_at = kr_dbres_int(r, row, 7);
    t->revoked_at = kr_dbres_int(r, row, 8);
}

static int admin_one(kr_store *s, const char *where, kr_dbval v, kr_admin_token *out, kr_diag *d)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " ADMIN_COLS ADMIN_FROM " WHERE %s", where);
    kr_dbres r;
    int rc = kr_db_query(s->db, sql, &v, 1, &r, d);
    if (rc) return rc;
    if (r.nrows == 0) rc = kr_fail(d, KR_ENOTFOUND, "no such admin token");
    else admin_from(&r, 0, out);
    kr_dbres_free(&r);
    return rc;
}

int kr_admin_token_insert(kr_store *s, const char *hash_hex, const char *prefix,
                          kr_admin_scope scope, int64_t org_id, const char *name,
                          int64_t ttl_ms, kr_admin_token *out, kr_diag *d)
{
    kr_dbres r;
    int64_t now = kr_now_ms();
    int rc = Q(s,
               "INSERT INTO admin_tokens (hash, prefix, scope, org_id, name, created_at, expires_at)"
               " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
               &r, d, KR_DB_TEXT(hash_hex), KR_DB_TEXT(prefix), KR_DB_TEXT(kr_admin_scope_name(scope)),
               scope == KR_ADMIN_ORG ? KR_DB_INT(org_id) : KR_DB_NULL, KR_DB_TEXT(name),
               KR_DB_INT(now), ttl_ms ? KR_DB_INT(now + ttl_ms) : KR_DB_NULL);
    if (rc) return rc;
    int64_t id = kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    return out ? kr_admin_token_get(s, id, out, d) : 0;
}

int kr_admin_token_by_hash(kr_store *s, const char *hash_hex, kr_admin_token *out, kr_diag *d)
{
    return admin_one(s, "a.hash = $1", KR_DB_TEXT(hash_hex), out, d);
}

int kr_admin_token_get(kr_store *s, int64_t id, kr_admin_token *out, kr_diag *d)
{
    return admin_one(s, "a.id = $1", KR_DB_INT(id), out, d);
}

int kr_admin_token_revoke(kr_store *s, int64_t id, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
               " RETURNING id",
               &r, d, KR_DB_INT(kr_now_ms()), KR_DB_INT(id));
    if (rc) return rc;
    if (r.nrows == 0) rc = kr_fail(d, KR_ENOTFOUND, "no active admin token %lld", (long long)id);
    kr_dbres_free(&r);
    if (!rc) rc = Q(s, "DELETE FROM admin_sessions WHERE token_id = $1", NULL, d, KR_DB_INT(id));
    return rc;
}

int kr_admin_token_list(kr_store *s, kr_admin_token **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = kr_db_query(s->db, "SELECT " ADMIN_COLS ADMIN_FROM " ORDER BY a.id", NULL, 0, &r, d);
    if (rc) return rc;
    *n = r.nrows;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) admin_from(&r, i, &(*out)[i]);
    kr_dbres_free(&r);
    return 0;
}

/* ---- console sessions ---- */

int kr_session_insert(kr_store *s, const char *hash_hex, int64_t token_id, const char *csrf,
                      int64_t expires_at, kr_diag *d)
{
    /* expired sessions go as new ones come */
    int rc = Q(s, "DELETE FROM admin_sessions WHERE expires_at < $1", NULL, d, KR_DB_INT(kr_now_ms()));
    if (rc) return rc;
    return Q(s,
             "INSERT INTO admin_sessions (hash, token_id, csrf, created_at, expires_at)"
             " VALUES ($1, $2, $3, $4, $5)",
             NULL, d, KR_DB_TEXT(hash_hex), KR_DB_INT(token_id), KR_DB_TEXT(csrf),
             KR_DB_INT(kr_now_ms()), KR_DB_INT(expires_at));
}

int kr_session_get(kr_store *s, const char *hash_hex, int64_t *token_id, char csrf[65],
                   int64_t *expires_at, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "SELECT token_id, csrf, expires_at FROM admin_sessions WHERE hash = $1", &r, d,
               KR_DB_TEXT(hash_hex));
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else {
        *token_id = kr_dbres_int(&r, 0, 0);
        cpy(csrf, 65, kr_dbres_get(&r, 0, 1));
        *expires_at = kr_dbres_int(&r, 0, 2);
    }
    kr_dbres_free(&r);
    return rc;
}

int kr_session_delete(kr_store *s, const char *hash_hex, kr_diag *d)
{
    return Q(s, "DELETE FROM admin_sessions WHERE hash = $1", NULL, d, KR_DB_TEXT(hash_hex));
}

/* ---- audit log ---- */

int kr_audit_append(kr_store *s, const kr_audit_row *a, kr_diag *d)
{
    return Q(s,
             "INSERT INTO audit (at, actor, actor_scope, action, target, org_id, request_id,"
             " outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
             NULL, d, KR_DB_INT(a->at ? a->at : kr_now_ms()), KR_DB_TEXT(a->actor),
             KR_DB_TEXT(a->actor_scope), KR_DB_TEXT(a->action), KR_DB_TEXT(a->target),
             a->org_id ? KR_DB_INT(a->org_id) : KR_DB_NULL, KR_DB_TEXT(a->request_id),
             KR_DB_TEXT(a->outcome), KR_DB_TEXT(a->detail));
}

int kr_audit_list(kr_store *s, const kr_audit_filter *f, kr_audit_row **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    size_t limit = f->limit ? f->limit : 100;
    /* one statement whatever the filter: a NULL parameter matches every row */
    int rc = Q(s,
               "SELECT id, at, actor, actor_scope, action, target, COALESCE(org_id, 0), request_id,"
               " outcome, detail FROM audit"
               " WHERE ($1 = 0 OR org_id = $1) AND ($2 = '' OR action = $2)"
               " AND ($3 = '' OR actor = $3) AND ($4 = 0 OR at >= $4) AND ($5 = 0 OR at < $5)"
               " AND ($6 = 0 OR id < $6) ORDER BY id DESC LIMIT $7",
               &r, d, KR_DB_INT(f->org_id), KR_DB_TEXT(f->action ? f->action : ""),
               KR_DB_TEXT(f->actor ? f->actor : ""), KR_DB_INT(f->since), KR_DB_INT(f->until),
               KR_DB_INT(f->before_id), KR_DB_INT((int64_t)limit));
    if (rc) return rc;
    *n = r.nrows;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) {
        kr_audit_row *a = &(*out)[i];
        a->id = kr_dbres_int(&r, i, 0);
        a->at = kr_dbres_int(&r, i, 1);
        cpy(a->actor, sizeof a->actor, kr_dbres_get(&r, i, 2));
        cpy(a->actor_scope, sizeof a->actor_scope, kr_dbres_get(&r, i, 3));
        cpy(a->action, sizeof a->action, kr_dbres_get(&r, i, 4));
        cpy(a->target, sizeof a->target, kr_dbres_get(&r, i, 5));
        a->org_id = kr_dbres_int(&r, i, 6);
        cpy(a->request_id, sizeof a->request_id, kr_dbres_get(&r, i, 7));
        cpy(a->outcome, sizeof a->outcome, kr_dbres_get(&r, i, 8));
        cpy(a->detail, sizeof a->detail, kr_dbres_get(&r, i, 9));
    }
    kr_dbres_free(&r);
    return 0;
}

/* ---- idempotency keys ---- */

int kr_idem_get(kr_store *s, const char *actor, const char *key, char op[48], char hash[65],
                int *status, char **response, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "SELECT op, request_hash, status, response FROM idempotency WHERE actor = $1 AND key = $2",
               &r, d, KR_DB_TEXT(actor), KR_DB_TEXT(key));
    if (rc) return rc;
    if (r.nrows == 0) rc = KR_ENOTFOUND;
    else {
        cpy(op, 48, kr_dbres_get(&r, 0, 0));
        cpy(hash, 65, kr_dbres_get(&r, 0, 1));
        *status = (int)kr_dbres_int(&r, 0, 2);
        *response = kr_strdup(kr_dbres_get(&r, 0, 3) ? kr_dbres_get(&r, 0, 3) : "");
    }
    kr_dbres_free(&r);
    return rc;
}

int kr_idem_put(kr_store *s, const char *actor, const char *key, const char *op, const char *hash,
                int status, const char *response, kr_diag *d)
{
    return Q(s,
             "INSERT INTO idempotency (actor, key, op, request_hash, status, response, created_at)"
             " VALUES ($1, $2, $3, $4, $5, $6, $7)",
             NULL, d, KR_DB_TEXT(actor), KR_DB_TEXT(key), KR_DB_TEXT(op), KR_DB_TEXT(hash),
             KR_DB_INT(status), KR_DB_TEXT(response), KR_DB_INT(kr_now_ms()));
}

/* ---- budget alerts ---- */

void kr_alerts_free(kr_alert *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i].secret);
    free(a);
}

void kr_alert_deliveries_free(kr_alert_delivery *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i].body);
    free(a);
}

static const char *alert_kind_name(kr_alert_kind k)
{
    return k == KR_ALERT_BALANCE ? "balance" : "budget";
}

int kr_alert_create(kr_store *s, kr_alert *a, int (*seal)(void *ctx, int64_t id, kr_buf *out),
                    void *ctx, kr_diag *d)
{
    int rc = tx_begin(s, d);
    if (rc) return rc;
    a->created_at = kr_now_ms();
    kr_dbres r = {0};
    rc = Q(s,
           "INSERT INTO budget_alerts (org_id, workspace_id, kind, period, amount_micros, percents,"
           " url, secret, armed, seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, '', 1, 0, $8)"
           " RETURNING id",
           &r, d, KR_DB_INT(a->org_id), a->ws_id ? KR_DB_INT(a->ws_id) : KR_DB_NULL,
           KR_DB_TEXT(alert_kind_name(a->kind)), KR_DB_TEXT(a->period), KR_DB_INT(a->amount_micros),
           KR_DB_TEXT(a->percents), KR_DB_TEXT(a->url), KR_DB_INT(a->created_at));
    if (!rc) {
        a->id = kr_dbres_int(&r, 0, 0);
        kr_dbres_free(&r);
        kr_buf sealed = KR_BUF_INIT(4096);
        rc = seal(ctx, a->id, &sealed);
        if (!rc)
            rc = Q(s, "UPDATE budget_alerts SET secret = $2 WHERE id = $1", NULL, d,
                   KR_DB_INT(a->id), KR_DB_TEXT(sealed.data ? sealed.data : ""));
        kr_buf_free(&sealed);
    }
    if (!rc) rc = tx_commit(s, d);
    if (rc) tx_rollback(s);
    a->armed = true;
    return rc;
}

#define ALERT_COLS                                                                                 \
    "id, org_id, workspace_id, kind, period, amount_micros, percents, url, secret, armed, seq,"   \
    " created_at"

int kr_alert_list(kr_store *s, int64_t org_id, kr_alert **out, size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = org_id ? Q(s, "SELECT " ALERT_COLS " FROM budget_alerts WHERE org_id = $1 ORDER BY id",
                        &r, d, KR_DB_INT(org_id))
                    : Q(s, "SELECT " ALERT_COLS " FROM budget_alerts WHERE id > $1 ORDER BY id", &r,
                        d, KR_DB_INT(0));
    if (rc) return rc;
    *n = r.nrows;
    *out = kr_xcalloc(r.nrows ? r.nrows : 1, sizeof **out);
    for (size_t i = 0; i < r.nrows; i++) {
        kr_alert *a = &(*out)[i];
        a->id = kr_dbres_int(&r, i, 0);
        a->org_id = kr_dbres_int(&r, i, 1);
        a->ws_id = kr_dbres_int(&r, i, 2);
        const char *k = kr_dbres_get(&r, i, 3);
        a->kind = k && !strcmp(k, "balance") ? KR_ALERT_BALANCE : KR_ALERT_BUDGET;
        cpy(a->period, sizeof a->period, kr_dbres_get(&r, i, 4));
        a->amount_micros = kr_dbres_int(&r, i, 5);
        cpy(a->percents, sizeof a->percents, kr_dbres_get(&r, i, 6));
        cpy(a->url, sizeof a->url, kr_dbres_get(&r, i, 7));
        const char *sec = kr_dbres_get(&r, i, 8);
        a->secret = kr_strdup(sec ? sec : "");
        a->armed = kr_dbres_int(&r, i, 9) != 0;
        a->seq = kr_dbres_int(&r, i, 10);
        a->created_at = kr_dbres_int(&r, i, 11);
    }
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_delete(kr_store *s, int64_t org_id, int64_t id, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s, "DELETE FROM budget_alerts WHERE id = $1 AND org_id = $2 RETURNING id", &r, d,
               KR_DB_INT(id), KR_DB_INT(org_id));
    if (rc) return rc;
    size_t gone = r.nrows;
    kr_dbres_free(&r);
    if (!gone) return kr_fail(d, KR_ENOTFOUND, "no alert %lld in this org", (long long)id);
    /* undelivered notices of a deleted alert go with it; the log of sent ones stays */
    return Q(s, "DELETE FROM alert_deliveries WHERE alert_id = $1 AND status = 'pending'", NULL, d,
             KR_DB_INT(id));
}

int kr_alert_spend(kr_store *s, int64_t org, int64_t ws, const char *from, const char *to,
                   int64_t *spend, kr_diag *d)
{
    kr_dbres r;
    int rc = ws ? Q(s,
                    "SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily WHERE workspace_id = $1"
                    " AND day >= $2 AND day <= $3 AND route = 'platform'",
                    &r, d, KR_DB_INT(ws), KR_DB_TEXT(from), KR_DB_TEXT(to))
                : Q(s,
                    "SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily WHERE org_id = $1"
                    " AND day >= $2 AND day <= $3 AND route = 'platform'",
                    &r, d, KR_DB_INT(org), KR_DB_TEXT(from), KR_DB_TEXT(to));
    if (rc) return rc;
    *spend = kr_dbres_int(&r, 0, 0);
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_crossing_add(kr_store *s, const kr_alert *a, const char *crossing, const char *body,
                          bool *added, kr_diag *d)
{
    kr_dbres r;
    int64_t now = kr_now_ms();
    int rc = Q(s,
               "INSERT INTO alert_deliveries (alert_id, org_id, crossing, body, status, attempts,"
               " next_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)"
               " ON CONFLICT (alert_id, crossing) DO NOTHING RETURNING id",
               &r, d, KR_DB_INT(a->id), KR_DB_INT(a->org_id), KR_DB_TEXT(crossing), KR_DB_TEXT(body),
               KR_DB_INT(now));
    if (rc) return rc;
    *added = r.nrows == 1;
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_disarm(kr_store *s, int64_t id, int64_t *seq, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "UPDATE budget_alerts SET armed = 0, seq = seq + 1 WHERE id = $1 AND armed = 1"
               " RETURNING seq",
               &r, d, KR_DB_INT(id));
    if (rc) return rc;
    *seq = r.nrows ? kr_dbres_int(&r, 0, 0) : 0;
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_rearm(kr_store *s, int64_t id, kr_diag *d)
{
    return Q(s, "UPDATE budget_alerts SET armed = 1 WHERE id = $1 AND armed = 0", NULL, d,
             KR_DB_INT(id));
}

#define DELIVERY_COLS                                                                              \
    "id, alert_id, org_id, crossing, body, status, attempts, next_at, last_status, last_error,"   \
    " created_at, delivered_at"

static void delivery_rows(const kr_dbres *r, kr_alert_delivery **out, size_t *n)
{
    *n = r->nrows;
    *out = kr_xcalloc(r->nrows ? r->nrows : 1, sizeof **out);
    for (size_t i = 0; i < r->nrows; i++) {
        kr_alert_delivery *v = &(*out)[i];
        v->id = kr_dbres_int(r, i, 0);
        v->alert_id = kr_dbres_int(r, i, 1);
        v->org_id = kr_dbres_int(r, i, 2);
        cpy(v->crossing, sizeof v->crossing, kr_dbres_get(r, i, 3));
        const char *b = kr_dbres_get(r, i, 4);
        v->body = kr_strdup(b ? b : "");
        cpy(v->status, sizeof v->status, kr_dbres_get(r, i, 5));
        v->attempts = kr_dbres_int(r, i, 6);
        v->next_at = kr_dbres_int(r, i, 7);
        v->last_status = kr_dbres_int(r, i, 8);
        cpy(v->last_error, sizeof v->last_error, kr_dbres_get(r, i, 9));
        v->created_at = kr_dbres_int(r, i, 10);
        v->delivered_at = kr_dbres_int(r, i, 11);
    }
}

int kr_alert_due(kr_store *s, int64_t now, size_t limit, kr_alert_delivery **out, size_t *n,
                 kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "SELECT " DELIVERY_COLS " FROM alert_deliveries WHERE status = 'pending'"
               " AND next_at <= $1 AND claimed_until < $1 ORDER BY next_at, id LIMIT $2",
               &r, d, KR_DB_INT(now), KR_DB_INT(limit));
    if (rc) return rc;
    delivery_rows(&r, out, n);
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_claim(kr_store *s, int64_t id, int64_t now, int64_t until, bool *won, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "UPDATE alert_deliveries SET claimed_until = $3 WHERE id = $1 AND status = 'pending'"
               " AND claimed_until < $2 RETURNING id",
               &r, d, KR_DB_INT(id), KR_DB_INT(now), KR_DB_INT(until));
    if (rc) return rc;
    *won = r.nrows == 1;
    kr_dbres_free(&r);
    return 0;
}

int kr_alert_attempted(kr_store *s, int64_t id, const char *status, int64_t last_status,
                       const char *err, int64_t next_at, int64_t now, kr_diag *d)
{
    return Q(s,
             "UPDATE alert_deliveries SET status = $2, attempts = attempts + 1, last_status = $3,"
             " last_error = $4, next_at = $5, claimed_until = 0,"
             " delivered_at = CASE WHEN $2 = 'delivered' THEN $6 ELSE delivered_at END"
             " WHERE id = $1",
             NULL, d, KR_DB_INT(id), KR_DB_TEXT(status), KR_DB_INT(last_status), KR_DB_TEXT(err),
             KR_DB_INT(next_at), KR_DB_INT(now));
}

int kr_alert_deliveries(kr_store *s, int64_t org_id, size_t limit, kr_alert_delivery **out,
                        size_t *n, kr_diag *d)
{
    kr_dbres r;
    int rc = Q(s,
               "SELECT " DELIVERY_COLS " FROM alert_deliveries WHERE org_id = $1"
               " ORDER BY id DESC LIMIT $2",
               &r, d, KR_DB_INT(org_id), KR_DB_INT(limit));
    if (rc) return rc;
    delivery_rows(&r, out, n);
    kr_dbres_free(&r);
    return 0;
}
