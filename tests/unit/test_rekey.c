/*
 * test_rekey.c -- master key rotation: kr_store_secret_list_all,
 * kr_store_secret_rewrite_all (store.h), kr_rekey and `keyrail rekey`
 * (cli/cmd_rekey.c), every case on both engines.
 *
 * REKEY_TEST(name) registers rekey::name_sqlite and rekey::name_pg, as
 * test_store.c does: a fresh SQLite file, or (when KR_TEST_PG_URL is set,
 * skipped otherwise) a fresh schema on that server, dropped afterwards.
 */
#include <criterion/criterion.h>

#include "cli/cli.h"
#include "core/buf.h"
#include "core/err.h"
#include "secrets/secrets.h"
#include "store/db.h"
#include "store/store.h"
#include "store_fixture.h"

#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixture ----------------------------------------------------------- */

static struct {
    backend b;
    char url[1024];
    char dir[256];
    char schema[64];
    kr_store *s;
    kr_master_key old_key, new_key, other_key;
    char old_file[300], new_file[300];
} T;

static void write_key(const char *path, const kr_master_key *k, mode_t mode)
{
    char hex[2 * KR_MASTER_KEY_BYTES + 2];
    kr_hex(k->k, sizeof k->k, hex);
    size_t n = strlen(hex);
    hex[n++] = '\n';
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "create %s", path);
    cr_assert_eq(write(fd, hex, n), (ssize_t)n);
    close(fd);
    cr_assert_eq(chmod(path, mode), 0);
}

static void setup(backend b)
{
    memset(&T, 0, sizeof T);
    T.b = b;
    cr_assert_geq(sodium_init(), 0);
    unsetenv(KR_MASTER_KEY_ENV);
    unsetenv("KEYRAIL_CONFIG");
    if (b == BK_PG && !pg_base()) cr_skip_test("KR_TEST_PG_URL is not set");
    fixture_fresh(b, "rk", T.dir, T.url, T.schema);
    OK(kr_store_open(T.url, &T.s, &dg));
    randombytes_buf(T.old_key.k, sizeof T.old_key.k);
    randombytes_buf(T.new_key.k, sizeof T.new_key.k);
    randombytes_buf(T.other_key.k, sizeof T.other_key.k);
    kr_snprintf(T.old_file, sizeof T.old_file, "%s/old.key", T.dir);
    kr_snprintf(T.new_file, sizeof T.new_file, "%s/new.key", T.dir);
    write_key(T.old_file, &T.old_key, 0600);
    write_key(T.new_file, &T.new_key, 0600);
}

static void teardown(void)
{
    kr_store_close(T.s);
    T.s = NULL;
    unsetenv(KR_MASTER_KEY_ENV);
    if (T.dir[0]) {
        static const char *const files[] = {"old.key", "new.key", "loose.key"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char p[300];
            kr_snprintf(p, sizeof p, "%s/%s", T.dir, files[i]);
            unlink(p);
        }
    }
    fixture_drop(T.b, T.dir, T.schema);
    memset(&T, 0, sizeof T);
}

#define REKEY_TEST(name)                                                                           \
    static void name(kr_store *s);                                                                 \
    Test(rekey, name##_sqlite, .fini = teardown)                                                   \
    {                                                                                              \
        setup(BK_SQLITE);                                                                          \
        name(T.s);                                                                                 \
    }                                                                                              \
    Test(rekey, name##_pg, .fini = teardown)                                                       \
    {                                                                                              \
        setup(BK_PG);                                                                              \
        name(T.s);                                                                                 \
    }                                                                                              \
    static void name(kr_store *s)

/* ---- helpers ----------------------------------------------------------- */

/* Seals value under mk and stores it raw (no forbidden-key policy here). */
static void put(kr_store *s, const kr_master_key *mk, kr_scope scope, int64_t owner,
                const char *key, const char *value)
{
    kr_buf ct = KR_BUF_INIT(1 << 20);
    cr_assert_eq(kr_secret_seal(mk, scope, owner, key, value, strlen(value), &ct), 0);
    OK(kr_store_secret_put(s, scope, owner, key, ct.data, KR_SECRET_VERSION, &dg));
    kr_buf_free(&ct);
}

/* The plaintext of a stored secret under mk, or NULL when it does not open. */
static char *open_with(kr_store *s, const kr_master_key *mk, kr_scope scope, int64_t owner,
                       const char *key)
{
    kr_secret_read r;
    kr_secret_get(s, mk, scope, owner, key, &r);
    cr_assert_neq(r.state, KR_SECRET_ABSENT, "secret %s is gone", key);
    char *v = r.state == KR_SECRET_VALUE ? kr_strdup(r.value) : NULL;
    kr_secret_read_free(&r);
    return v;
}

/* Every secret row, ciphertext included, as one string. */
static char *snapshot(kr_store *s)
{
    kr_secret_row *rows;
    size_t n;
    OK(kr_store_secret_list_all(s, &rows, &n, &dg));
    kr_buf b = KR_BUF_INIT(1 << 24);
    kr_buf_puts(&b, "");
    for (size_t i = 0; i < n; i++)
        kr_buf_printf(&b, "%s|%lld|%s|%s|%d|%lld|%lld\n", kr_scope_name(rows[i].scope),
                      (long long)rows[i].owner_id, rows[i].key, rows[i].ciphertext,
                      rows[i].enc_version, (long long)rows[i].created_at,
                      (long long)rows[i].updated_at);
    kr_secret_rows_free(rows, n);
    return kr_buf_steal(&b);
}

typedef struct {
    kr_scope scope;
    int64_t owner;
    const char *key;
    char value[128];
} fixture_secret;

static fixture_secret F[8];
static size_t NF;
static char big_value[KR_SECRET_MAX_VALUE + 1];

/* Two orgs, three workspaces, secrets at both scopes (an empty value and
 * one of the largest size among them), all under the old key. */
static void populate(kr_store *s)
{
    kr_org a, b;
    kr_workspace w1, w2, w3;
    OK(kr_org_create(s, "acme", "Acme", &a, &dg));
    OK(kr_org_create(s, "beta", "Beta", &b, &dg));
    OK(kr_ws_create(s, a.id, "boss", KR_WS_CONCIERGE, "claude-code", 0, &w1, &dg));
    OK(kr_ws_create(s, a.id, "dev", KR_WS_WORKSPACE, "codex", 0, &w2, &dg));
    OK(kr_ws_create(s, b.id, "ops", KR_WS_WORKSPACE, "claude-code", 0, &w3, &dg));
    NF = 0;
    F[NF++] = (fixture_secret){KR_SCOPE_ORG, a.id, "ORG_SETTING", "acme-org-value"};
    F[NF++] = (fixture_secret){KR_SCOPE_ORG, a.id, "EMPTY", ""};
    F[NF++] = (fixture_secret){KR_SCOPE_ORG, b.id, "ORG_SETTING", "beta-org-value"};
    F[NF++] = (fixture_secret){KR_SCOPE_WORKSPACE, w1.id, "LLM_PROVIDER", "platform"};
    F[NF++] = (fixture_secret){KR_SCOPE_WORKSPACE, w2.id, "MODEL", "gpt-4o"};
    F[NF++] = (fixture_secret){KR_SCOPE_WORKSPACE, w2.id, "Z_LAST", "zzz"};
    F[NF++] = (fixture_secret){KR_SCOPE_WORKSPACE, w3.id, "OPENAI_API_KEY",
                               "sk-proj-REKEYTESTxxxxxxxxxxxxxxxxxxxxxxxxxxx"};
    for (size_t i = 0; i < NF; i++) put(s, &T.old_key, F[i].scope, F[i].owner, F[i].key, F[i].value);
    memset(big_value, 'v', KR_SECRET_MAX_VALUE);
    big_value[KR_SECRET_MAX_VALUE] = 0;
    put(s, &T.old_key, KR_SCOPE_WORKSPACE, w3.id, "BIG", big_value);
}

static void assert_all_open_under(kr_store *s, const kr_master_key *good, const kr_master_key *bad)
{
    for (size_t i = 0; i < NF; i++) {
        char *v = open_with(s, good, F[i].scope, F[i].owner, F[i].key);
        cr_assert_not_null(v, "%s (%s %lld) does not open", F[i].key, kr_scope_name(F[i].scope),
                           (long long)F[i].owner);
        cr_assert_str_eq(v, F[i].value);
        free(v);
        if (bad) cr_assert_null(open_with(s, bad, F[i].scope, F[i].owner, F[i].key),
                                "%s still opens under the other key", F[i].key);
    }
}

/* ---- the store functions ----------------------------------------------- */

REKEY_TEST(list_all_returns_every_scope_in_order)
{
    populate(s);
    kr_secret_row *rows;
    size_t n;
    OK(kr_store_secret_list_all(s, &rows, &n, &dg));
    cr_assert_eq(n, NF + 1);
    for (size_t i = 1; i < n; i++) {
        const kr_secret_row *p = &rows[i - 1], *q = &rows[i];
        int c = strcmp(kr_scope_name(p->scope), kr_scope_name(q->scope));
        if (!c) c = p->owner_id < q->owner_id ? -1 : p->owner_id > q->owner_id;
        if (!c) c = strcmp(p->key, q->key);
        cr_assert_lt(c, 0, "row %zu out of order", i);
    }
    cr_assert_eq(rows[0].scope, KR_SCOPE_ORG);
    cr_assert_eq(rows[n - 1].scope, KR_SCOPE_WORKSPACE);
    kr_secret_rows_free(rows, n);
}

typedef struct {
    size_t calls, fail_at;
    kr_store *s;
    bool change_underneath;
} cb_state;

static int copy_or_fail(void *arg, const kr_secret_row *row, char **ct, int *ver, kr_diag *d)
{
    cb_state *st = arg;
    st->calls++;
    if (st->fail_at && st->calls == st->fail_at) return kr_fail(d, KR_ECRYPTO, "injected");
    if (st->change_underneath && st->calls == 2)
        /* another write to this very row inside the transaction */
        OK(kr_store_secret_put(st->s, row->scope, row->owner_id, row->key, "changed", 1, &dg));
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_buf_printf(&b, "rewritten:%s", row->key);
    *ct = kr_buf_steal(&b);
    *ver = 7;
    return 0;
}

REKEY_TEST(rewrite_all_commits_every_row)
{
    populate(s);
    cb_state st = {0};
    size_t n = 0;
    OK(kr_store_secret_rewrite_all(s, copy_or_fail, &st, true, &n, &dg));
    cr_assert_eq(n, NF + 1);
    cr_assert_eq(st.calls, NF + 1);
    kr_secret_row *rows;
    OK(kr_store_secret_list_all(s, &rows, &n, &dg));
    for (size_t i = 0; i < n; i++) {
        char want[200];
        kr_snprintf(want, sizeof want, "rewritten:%s", rows[i].key);
        cr_assert_str_eq(rows[i].ciphertext, want);
        cr_assert_eq(rows[i].enc_version, 7);
    }
    kr_secret_rows_free(rows, n);
}

REKEY_TEST(rewrite_all_failure_midway_rolls_back_everything)
{
    populate(s);
    char *before = snapshot(s);
    cb_state st = {.fail_at = 4};
    size_t n = 99;
    int rc = kr_store_secret_rewrite_all(s, copy_or_fail, &st, true, &n, &dg);
    cr_assert_eq(rc, KR_ECRYPTO);
    cr_assert_eq(n, 0);
    cr_assert_eq(st.calls, 4, "stops at the first failure");
    char *after = snapshot(s);
    cr_assert_str_eq(after, before, "the three rows rewritten before the failure were rolled back");
    free(before);
    free(after);
    /* the connection is usable afterwards (no transaction left open) */
    OK(kr_store_ping(s, &dg));
    put(s, &T.old_key, KR_SCOPE_ORG, F[0].owner, "AFTER", "x");
}

REKEY_TEST(rewrite_all_dry_run_rolls_back)
{
    populate(s);
    char *before = snapshot(s);
    cb_state st = {0};
    size_t n = 0;
    OK(kr_store_secret_rewrite_all(s, copy_or_fail, &st, false, &n, &dg));
    cr_assert_eq(n, NF + 1);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

REKEY_TEST(rewrite_all_refuses_a_row_changed_underneath)
{
    populate(s);
    char *before = snapshot(s);
    cb_state st = {.change_underneath = true, .s = s};
    int rc = kr_store_secret_rewrite_all(s, copy_or_fail, &st, true, NULL, &dg);
    cr_assert_eq(rc, KR_ESTORE);
    cr_assert(strstr(dg.msg, "changed during the rewrite"), "%s", dg.msg);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before, "the write underneath was rolled back too");
    free(before);
    free(after);
}

REKEY_TEST(rewrite_all_on_an_empty_store)
{
    cb_state st = {0};
    size_t n = 99;
    OK(kr_store_secret_rewrite_all(s, copy_or_fail, &st, true, &n, &dg));
    cr_assert_eq(n, 0);
    cr_assert_eq(st.calls, 0);
}

/* ---- kr_rekey ---------------------------------------------------------- */

REKEY_TEST(rekey_moves_every_secret_to_the_new_key)
{
    populate(s);
    char *before = snapshot(s);
    size_t n = 0;
    OK(kr_rekey(s, &T.old_key, &T.new_key, false, &n, &dg));
    cr_assert_eq(n, NF + 1);
    assert_all_open_under(s, &T.new_key, &T.old_key);
    char *big = open_with(s, &T.new_key, KR_SCOPE_WORKSPACE, F[6].owner, "BIG");
    cr_assert_not_null(big);
    cr_assert_str_eq(big, big_value);
    free(big);
    /* every ciphertext changed; keys, owners and timestamps did not */
    kr_secret_row *rows;
    OK(kr_store_secret_list_all(s, &rows, &n, &dg));
    char *after = snapshot(s);
    cr_assert_str_neq(after, before);
    for (size_t i = 0; i < n; i++) {
        cr_assert_null(strstr(before, rows[i].ciphertext), "%s kept its ciphertext", rows[i].key);
        char prefix[300];
        kr_snprintf(prefix, sizeof prefix, "%s|%lld|%s|", kr_scope_name(rows[i].scope),
                    (long long)rows[i].owner_id, rows[i].key);
        cr_assert_not_null(strstr(before, prefix));
    }
    kr_secret_rows_free(rows, n);
    free(before);
    free(after);
    /* and back again: a rotation is repeatable */
    OK(kr_rekey(s, &T.new_key, &T.other_key, false, &n, &dg));
    assert_all_open_under(s, &T.other_key, &T.new_key);
}

REKEY_TEST(rekey_dry_run_changes_nothing)
{
    populate(s);
    char *before = snapshot(s);
    size_t n = 0;
    OK(kr_rekey(s, &T.old_key, &T.new_key, true, &n, &dg));
    cr_assert_eq(n, NF + 1, "reports what would change");
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    assert_all_open_under(s, &T.old_key, &T.new_key);
    free(before);
    free(after);
}

REKEY_TEST(rekey_one_foreign_secret_aborts_the_whole_rotation)
{
    populate(s);
    /* sorts in the middle of the workspace rows: some rows come before it */
    put(s, &T.other_key, KR_SCOPE_WORKSPACE, F[4].owner, "NOT_MINE", "sealed elsewhere");
    char *before = snapshot(s);
    size_t n = 99;
    int rc = kr_rekey(s, &T.old_key, &T.new_key, false, &n, &dg);
    cr_assert_eq(rc, KR_ECRYPTO);
    cr_assert_eq(n, 0);
    cr_assert(strstr(dg.msg, "NOT_MINE"), "names the key: %s", dg.msg);
    cr_assert(strstr(dg.msg, "workspace scope"), "names the scope: %s", dg.msg);
    cr_assert(strstr(dg.msg, "acme/dev"), "names the owner: %s", dg.msg);
    cr_assert(strstr(dg.msg, "nothing was changed"), "%s", dg.msg);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before, "not half rotated");
    assert_all_open_under(s, &T.old_key, &T.new_key);
    free(before);
    free(after);
    /* a dry run finds the same blocker */
    rc = kr_rekey(s, &T.old_key, &T.new_key, true, &n, &dg);
    cr_assert_eq(rc, KR_ECRYPTO);
    cr_assert(strstr(dg.msg, "NOT_MINE"), "%s", dg.msg);
}

REKEY_TEST(rekey_a_corrupt_secret_aborts)
{
    populate(s);
    OK(kr_store_secret_put(s, KR_SCOPE_ORG, F[0].owner, "BROKEN", "AQIDBA==", 1, &dg));
    char *before = snapshot(s);
    int rc = kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg);
    cr_assert_eq(rc, KR_ECRYPTO);
    cr_assert(strstr(dg.msg, "BROKEN") && strstr(dg.msg, "org scope") && strstr(dg.msg, "org acme"),
              "%s", dg.msg);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

REKEY_TEST(rekey_names_an_already_rotated_secret)
{
    populate(s);
    put(s, &T.new_key, KR_SCOPE_ORG, F[0].owner, "ALREADY_NEW", "x");
    int rc = kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg);
    cr_assert_eq(rc, KR_ECRYPTO);
    cr_assert(strstr(dg.msg, "ALREADY_NEW") && strstr(dg.msg, "already rotated"), "%s", dg.msg);
    /* rotating twice is refused too: the store's key check is the new key's now */
    OK(kr_store_secret_del(s, KR_SCOPE_ORG, F[0].owner, "ALREADY_NEW", &dg));
    OK(kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg));
    rc = kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg);
    cr_assert_eq(rc, KR_EWRONG_MASTER_KEY);
    cr_assert(strstr(dg.msg, "already rotated"), "%s", dg.msg);
    assert_all_open_under(s, &T.new_key, &T.old_key);
}

REKEY_TEST(rekey_refuses_the_same_key)
{
    populate(s);
    char *before = snapshot(s);
    kr_master_key copy = T.old_key;
    int rc = kr_rekey(s, &T.old_key, &copy, false, NULL, &dg);
    cr_assert_eq(rc, KR_EINVAL);
    cr_assert(strstr(dg.msg, "same"), "%s", dg.msg);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

REKEY_TEST(rekey_an_empty_store)
{
    size_t n = 99;
    OK(kr_rekey(s, &T.old_key, &T.new_key, false, &n, &dg));
    cr_assert_eq(n, 0);
}

/* ---- PostgreSQL: other writers wait for the rotation -------------------- */

typedef struct {
    const char *url;
    int put_rc;
    size_t calls;
} lock_state;

static int try_write_elsewhere(void *arg, const kr_secret_row *row, char **ct, int *ver, kr_diag *d)
{
    (void)d;
    lock_state *st = arg;
    if (st->calls++ == 0) {
        /* a second connection (another keyrail) tries to write a secret
         * while the rotation holds the table: it must wait, here until its
         * lock_timeout, rather than slip a row under the old key in */
        char url[1200];
        kr_snprintf(url, sizeof url, "%s%%20-c%%20lock_timeout%%3D300", st->url);
        kr_store *other;
        OK(kr_store_open(url, &other, &dg));
        kr_buf b = KR_BUF_INIT(1 << 20);
        kr_secret_seal(&T.old_key, KR_SCOPE_ORG, row->owner_id, "SNEAKED_IN", "v", 1, &b);
        kr_diag od = {{0}};
        st->put_rc = kr_store_secret_put(other, KR_SCOPE_ORG, row->owner_id, "SNEAKED_IN", b.data,
                                         1, &od);
        kr_buf_free(&b);
        kr_store_close(other);
    }
    *ct = kr_strdup(row->ciphertext);
    *ver = row->enc_version;
    return 0;
}

Test(rekey, pg_writers_wait_for_the_rotation, .fini = teardown)
{
    setup(BK_PG);
    populate(T.s);
    lock_state st = {.url = T.url};
    OK(kr_store_secret_rewrite_all(T.s, try_write_elsewhere, &st, true, NULL, &dg));
    cr_assert_eq(st.put_rc, KR_EBUSY, "the concurrent write got %s", kr_err_name(st.put_rc));
    kr_secret_row row;
    cr_assert_eq(kr_store_secret_get(T.s, KR_SCOPE_ORG, F[0].owner, "SNEAKED_IN", &row, &dg),
                 KR_ENOTFOUND);
}

/* ---- the key check moves with the secrets ------------------------------- */

REKEY_TEST(rekey_moves_the_key_check_in_the_same_transaction)
{
    populate(s); /* raw rows under the old key: a store from before the check */
    char none[65];
    cr_assert_eq(kr_store_keycheck_get(s, none, &dg), KR_ENOTFOUND);
    /* a dry run and a refused rotation leave the check alone */
    OK(kr_rekey(s, &T.old_key, &T.new_key, true, NULL, &dg));
    cr_assert_eq(kr_store_keycheck_get(s, none, &dg), KR_ENOTFOUND);
    OK(kr_master_key_verify(s, &T.old_key, &dg)); /* first use by the right key writes it */
    put(s, &T.other_key, KR_SCOPE_ORG, F[0].owner, "FOREIGN", "x");
    cr_assert_eq(kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg), KR_ECRYPTO);
    OK(kr_master_key_verify(s, &T.old_key, &dg));
    cr_assert_eq(kr_master_key_verify(s, &T.new_key, &dg), KR_EWRONG_MASTER_KEY);
    OK(kr_store_secret_del(s, KR_SCOPE_ORG, F[0].owner, "FOREIGN", &dg));
    /* the rotation: from now on only the new key is the store's */
    OK(kr_rekey(s, &T.old_key, &T.new_key, false, NULL, &dg));
    OK(kr_master_key_verify(s, &T.new_key, &dg));
    cr_assert_eq(kr_master_key_verify(s, &T.old_key, &dg), KR_EWRONG_MASTER_KEY);
    kr_policy pol;
    kr_policy_init(&pol);
    cr_assert_eq(kr_secret_set(s, &T.old_key, &pol, KR_SCOPE_ORG, F[0].owner, "LATE", "v", &dg),
                 KR_EWRONG_MASTER_KEY, "a writer still holding the old key is refused");
    OK(kr_secret_set(s, &T.new_key, &pol, KR_SCOPE_ORG, F[0].owner, "LATE", "v", &dg));
    /* a rotation whose old key is not the store's is refused before any row */
    char *before = snapshot(s);
    cr_assert_eq(kr_rekey(s, &T.other_key, &T.old_key, false, NULL, &dg), KR_EWRONG_MASTER_KEY);
    cr_assert(strstr(dg.msg, "does not match the old key") && !strstr(dg.msg, "already"), "%s",
              dg.msg);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

/* PostgreSQL: keyrail's own secret writer (kr_secret_set, another
 * connection) that checked nothing yet waits for a running rotation, then
 * sees the new check and refuses -- no value sealed under the old key lands
 * after the rotation committed. */
typedef struct {
    const char *url;
    pthread_t th;
    int rc;
    size_t calls;
} late_writer;

static void *late_write(void *arg)
{
    late_writer *w = arg;
    kr_store *other;
    kr_diag d = {{0}};
    char url[1200];
    kr_snprintf(url, sizeof url, "%s&application_name=kr_late_writer", w->url);
    w->rc = kr_store_open(url, &other, &d);
    if (w->rc) return NULL;
    kr_policy pol;
    kr_policy_init(&pol);
    w->rc = kr_secret_set(other, &T.old_key, &pol, KR_SCOPE_ORG, F[0].owner, "SNEAKED_IN", "v", &d);
    kr_store_close(other);
    return NULL;
}

static int start_late_writer(void *arg, const kr_secret_row *row, char **ct, int *ver, kr_diag *d)
{
    (void)d;
    late_writer *w = arg;
    if (w->calls++ == 0) {
        cr_assert_eq(pthread_create(&w->th, NULL, late_write, w), 0);
        /* wait (polling) until it waits for the rotation's lock */
        kr_store *watch;
        OK(kr_store_open(w->url, &watch, &dg));
        for (int i = 0;; i++) {
            kr_dbres r;
            OK(kr_db_query(watch->db,
                           "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                           "'kr_late_writer' AND wait_event_type = 'Lock'",
                           NULL, 0, &r, &dg));
            int64_t n = kr_dbres_int(&r, 0, 0);
            kr_dbres_free(&r);
            if (n == 1) break;
            cr_assert_lt(i, 2000, "the writer never waited for the rotation");
            usleep(5000);
        }
        kr_store_close(watch);
    }
    /* what kr_rekey does, in short: reseal under the new key */
    kr_buf pt = KR_BUF_INIT(KR_SECRET_MAX_VALUE), out = KR_BUF_INIT(1 << 20);
    cr_assert_eq(kr_secret_open(&T.old_key, row->scope, row->owner_id, row->key, row->ciphertext,
                                strlen(row->ciphertext), &pt), 0);
    cr_assert_eq(kr_secret_seal(&T.new_key, row->scope, row->owner_id, row->key,
                                pt.data ? pt.data : "", pt.len, &out), 0);
    kr_buf_free(&pt);
    *ct = kr_buf_steal(&out);
    *ver = KR_SECRET_VERSION;
    return 0;
}

Test(rekey, pg_secret_writer_waits_for_the_rotation_then_refuses, .fini = teardown)
{
    setup(BK_PG);
    populate(T.s);
    OK(kr_master_key_verify(T.s, &T.old_key, &dg));
    late_writer w = {.url = T.url};
    char from[65], to[65];
    kr_master_key_check(&T.old_key, from);
    kr_master_key_check(&T.new_key, to);
    OK(kr_store_secret_rewrite_all_keyed(T.s, start_late_writer, &w, true, from, to, NULL, &dg));
    cr_assert_eq(pthread_join(w.th, NULL), 0);
    cr_assert_eq(w.rc, KR_EWRONG_MASTER_KEY, "the late writer got %s", kr_err_name(w.rc));
    kr_secret_row row;
    cr_assert_eq(kr_store_secret_get(T.s, KR_SCOPE_ORG, F[0].owner, "SNEAKED_IN", &row, &dg),
                 KR_ENOTFOUND);
    assert_all_open_under(T.s, &T.new_key, &T.old_key);
}

/* ---- keyrail rekey (the command) ---------------------------------------- */

static int cli(const char *const *args)
{
    char *argv[24];
    int argc = 0;
    for (; args[argc]; argc++) argv[argc] = (char *)args[argc];
    argv[argc] = NULL;
    fflush(stdout);
    return kr_cmd_rekey(argc, argv);
}

REKEY_TEST(cli_rotates_with_a_new_key_file)
{
    populate(s);
    const char *const dry[] = {"--db", T.url, "--old-key-file", T.old_file, "--new-key-file",
                               T.new_file, "--dry-run", NULL};
    char *before = snapshot(s);
    cr_assert_eq(cli(dry), 0);
    char *mid = snapshot(s);
    cr_assert_str_eq(mid, before, "--dry-run changes nothing");
    const char *const args[] = {"--db", T.url, "--old-key-file", T.old_file, "--new-key-file",
                                T.new_file, NULL};
    cr_assert_eq(cli(args), 0);
    assert_all_open_under(s, &T.new_key, &T.old_key);
    /* again with the same old key: nothing opens under it, refused */
    cr_assert_eq(cli(args), 1);
    cr_assert_eq(cli(dry), 1);
    assert_all_open_under(s, &T.new_key, &T.old_key);
    free(before);
    free(mid);
}

REKEY_TEST(cli_new_key_from_the_environment_old_key_only_from_its_file)
{
    populate(s);
    char hex[2 * KR_MASTER_KEY_BYTES + 1];
    kr_hex(T.new_key.k, sizeof T.new_key.k, hex);
    setenv(KR_MASTER_KEY_ENV, hex, 1);
    /* the environment names the new key; --old-key-file is still read from
     * its file (not replaced by the environment's key) */
    const char *const args[] = {"--db", T.url, "--old-key-file", T.old_file, NULL};
    cr_assert_eq(cli(args), 0);
    assert_all_open_under(s, &T.new_key, &T.old_key);
    /* the configured key equals the old one: refused, nothing touched */
    const char *const same[] = {"--db", T.url, "--old-key-file", T.new_file, NULL};
    char *before = snapshot(s);
    cr_assert_eq(cli(same), 1);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    unsetenv(KR_MASTER_KEY_ENV);
    free(before);
    free(after);
}

REKEY_TEST(cli_refuses_bad_arguments_and_loose_key_files)
{
    populate(s);
    char *before = snapshot(s);
    const char *const none[] = {"--db", T.url, "--new-key-file", T.new_file, NULL};
    cr_assert_eq(cli(none), 2, "--old-key-file is required");
    const char *const extra[] = {"--db", T.url, "--old-key-file", T.old_file, "now", NULL};
    cr_assert_eq(cli(extra), 2);
    const char *const unknown[] = {"--db", T.url, "--old-key-file", T.old_file, "--force", NULL};
    cr_assert_eq(cli(unknown), 2);
    char loose[300];
    kr_snprintf(loose, sizeof loose, "%s/loose.key", T.dir);
    write_key(loose, &T.new_key, 0644);
    const char *const loose_new[] = {"--db", T.url, "--old-key-file", T.old_file,
                                     "--new-key-file", loose, NULL};
    cr_assert_eq(cli(loose_new), 1, "a key file readable by others is refused");
    const char *const loose_old[] = {"--db", T.url, "--old-key-file", loose, "--new-key-file",
                                     T.new_file, NULL};
    cr_assert_eq(cli(loose_old), 1);
    const char *const missing[] = {"--db", T.url, "--old-key-file", "/nonexistent/old.key",
                                   "--new-key-file", T.new_file, NULL};
    cr_assert_eq(cli(missing), 1);
    const char *const nokey[] = {"--db", T.url, "--old-key-file", T.old_file, NULL};
    cr_assert_eq(cli(nokey), 1, "no new key configured anywhere");
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

REKEY_TEST(cli_a_foreign_secret_fails_with_nothing_changed)
{
    populate(s);
    put(s, &T.other_key, KR_SCOPE_ORG, F[2].owner, "FOREIGN", "x");
    char *before = snapshot(s);
    const char *const args[] = {"--db", T.url, "--old-key-file", T.old_file, "--new-key-file",
                                T.new_file, NULL};
    cr_assert_eq(cli(args), 1);
    const char *const dry[] = {"--db", T.url, "--old-key-file", T.old_file, "--new-key-file",
                               T.new_file, "--dry-run", NULL};
    cr_assert_eq(cli(dry), 1);
    char *after = snapshot(s);
    cr_assert_str_eq(after, before);
    assert_all_open_under(s, &T.old_key, &T.new_key);
    free(before);
    free(after);
}
