/*
 * cmd_rekey.c -- `keyrail rekey`: master key rotation.
 *
 * Every stored secret (org and workspace scope) is opened under the old
 * master key and sealed again under the new one, in ONE store transaction
 * (kr_store_secret_rewrite_all_keyed, which also moves the store's key check
 * from the old key to the new one): the rows are read inside it with other
 * writers locked out, and any secret that does not open under the old key
 * rolls the whole rotation back -- a store is never half rotated, so it is
 * always readable with exactly one key. --dry-run runs the same steps and
 * rolls back, listing what would change and every secret that would block
 * the rotation.
 *
 * The old key comes from --old-key-file only (never from the environment);
 * the new one from --new-key-file, else the configured key like every
 * command (KEYRAIL_MASTER_KEY, else secrets.master_key_file). Key files must
 * not be readable by group or others. Plaintexts live only in wiped buffers.
 */
#include "cli/cli.h"
#include "core/ini.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* "org acme" / "workspace acme/boss", or the bare id when it is gone. */
static void owner_name(kr_store *st, kr_scope scope, int64_t owner, char *out, size_t cap)
{
    if (scope == KR_SCOPE_ORG) {
        kr_org o;
        if (st && !kr_org_get(st, owner, &o, NULL)) kr_snprintf(out, cap, "org %s", o.slug);
        else kr_snprintf(out, cap, "org #%lld", (long long)owner);
        return;
    }
    kr_workspace w;
    kr_org o;
    if (st && !kr_ws_get(st, owner, &w, NULL) && !kr_org_get(st, w.org_id, &o, NULL))
        kr_snprintf(out, cap, "workspace %s/%s", o.slug, w.name);
    else
        kr_snprintf(out, cap, "workspace #%lld", (long long)owner);
}

typedef struct {
    kr_scope scope;
    int64_t owner;
    char key[128];
    bool opens_new; /* unreadable under the old key, readable under the new */
} rekey_item;

typedef struct {
    kr_store *st;
    const kr_master_key *old_key, *new_key;
    bool dry_run;
    rekey_item *done; /* rows resealed (or that would be) */
    size_t ndone;
    rekey_item *bad; /* rows that do not open under the old key */
    size_t nbad;
    size_t cap_done, cap_bad;
} rekey_ctx;

static void push(rekey_item **v, size_t *n, size_t *cap, const kr_secret_row *row, bool opens_new)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = kr_xrealloc(*v, *cap * sizeof **v);
    }
    rekey_item *it = &(*v)[(*n)++];
    it->scope = row->scope;
    it->owner = row->owner_id;
    kr_strlcpy(it->key, row->key, sizeof it->key);
    it->opens_new = opens_new;
}

static bool opens_under(const kr_master_key *mk, const kr_secret_row *row)
{
    kr_buf pt = KR_BUF_INIT(KR_SECRET_MAX_VALUE);
    int rc = kr_secret_open(mk, row->scope, row->owner_id, row->key, row->ciphertext,
                            strlen(row->ciphertext), &pt);
    if (pt.data) sodium_memzero(pt.data, pt.len);
    kr_buf_free(&pt);
    return rc == 0;
}

static int reseal(void *arg, const kr_secret_row *row, char **new_ct, int *new_version, kr_diag *d)
{
    rekey_ctx *c = arg;
    kr_buf pt = KR_BUF_INIT(KR_SECRET_MAX_VALUE), ct = KR_BUF_INIT(1 << 20);
    int rc = kr_secret_open(c->old_key, row->scope, row->owner_id, row->key, row->ciphertext,
                            strlen(row->ciphertext), &pt);
    if (rc) {
        bool opens_new = opens_under(c->new_key, row);
        push(&c->bad, &c->nbad, &c->cap_bad, row, opens_new);
        kr_buf_free(&pt);
        if (c->dry_run) {
            /* keep going to list every blocker; the transaction is rolled back */
            *new_ct = kr_strdup(row->ciphertext);
            return 0;
        }
        char who[200];
        owner_name(c->st, row->scope, row->owner_id, who, sizeof who);
        return kr_fail(d, KR_ECRYPTO,
                       "secret %s (%s scope, %s) does not open under the old key%s; "
                       "nothing was changed",
                       row->key, kr_scope_name(row->scope), who,
                       opens_new ? " (it opens under the new key: already rotated?)"
                                 : " (nor under the new key)");
    }
    rc = kr_secret_seal(c->new_key, row->scope, row->owner_id, row->key, pt.data ? pt.data : "",
                        pt.len, &ct);
    if (pt.data) sodium_memzero(pt.data, pt.len);
    kr_buf_free(&pt);
    if (rc) {
        kr_buf_free(&ct);
        return kr_fail(d, rc, "secret %s (%s scope, owner %lld): sealing under the new key failed",
                       row->key, kr_scope_name(row->scope), (long long)row->owner_id);
    }
    char *sealed = kr_buf_steal(&ct);
    kr_secret_row check = *row;
    check.ciphertext = sealed;
    if (!opens_under(c->new_key, &check)) {
        free(sealed);
        return kr_fail(d, KR_ECRYPTO, "secret %s (%s scope, owner %lld): the resealed value does "
                       "not open under the new key", row->key, kr_scope_name(row->scope),
                       (long long)row->owner_id);
    }
    *new_ct = sealed;
    *new_version = KR_SECRET_VERSION;
    push(&c->done, &c->ndone, &c->cap_done, row, false);
    return 0;
}

/* One rotation (or dry run) into x; the caller frees x->done and x->bad. */
static int run_rekey(rekey_ctx *x, size_t *rows, kr_diag *d)
{
    if (sodium_memcmp(x->old_key->k, x->new_key->k, sizeof x->old_key->k) == 0)
        return kr_fail(d, KR_EINVAL,
                       "the old and the new master key are the same (give --new-key-file, or "
                       "point secrets.master_key_file / KEYRAIL_MASTER_KEY at the new key)");
    /* the key check moves with the secrets, in the same transaction */
    char from[65], to[65];
    kr_master_key_check(x->old_key, from);
    kr_master_key_check(x->new_key, to);
    return kr_store_secret_rewrite_all_keyed(x->st, reseal, x, !x->dry_run, from, to, rows, d);
}

int kr_rekey(kr_store *st, const kr_master_key *old_key, const kr_master_key *new_key,
             bool dry_run, size_t *n, kr_diag *d)
{
    if (n) *n = 0;
    rekey_ctx x = {.st = st, .old_key = old_key, .new_key = new_key, .dry_run = dry_run};
    size_t rows = 0;
    int rc = run_rekey(&x, &rows, d);
    if (!rc && x.nbad) {
        const rekey_item *b = &x.bad[0];
        char who[200];
        owner_name(st, b->scope, b->owner, who, sizeof who);
        rc = kr_fail(d, KR_ECRYPTO,
                     "%zu of %zu secret(s) do not open under the old key, first %s (%s scope, %s)%s",
                     x.nbad, rows, b->key, kr_scope_name(b->scope), who,
                     b->opens_new ? " (it opens under the new key: already rotated?)" : "");
    }
    if (!rc && n) *n = x.ndone;
    free(x.done);
    free(x.bad);
    return rc;
}

int kr_cmd_rekey(int argc, char **argv)
{
    static const kr_opt opts[] = {
        KR_COMMON_OPTS,
        {"--old-key-file", true, "the current master key file (required)"},
        {"--new-key-file", true, "the new master key file (default: the configured key)"},
        {"--dry-run", false, "report what would change; change nothing"},
    };
    const char *usage =
        "usage: keyrail rekey --old-key-file OLD [--new-key-file NEW] [--dry-run]\n\n"
        "Re-encrypts every stored secret (org and workspace scope) from the old master key to\n"
        "the new one in one store transaction, and moves the store's key check to the new key\n"
        "in the same transaction (from then on only the new key starts keyrail or writes\n"
        "secrets). The new key is --new-key-file, else the\n"
        "configured one (KEYRAIL_MASTER_KEY, else secrets.master_key_file). A secret that does\n"
        "not open under the old key aborts the rotation: nothing changes. Stop (or drain) every\n"
        "keyrail instance first, and start them again with the new key afterwards; an instance\n"
        "still holding the old key can no longer read any secret. Create a new key with\n"
        "`keyrail keygen FILE`; keep the old key until the rotation has committed.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos || !kr_arg(&a, "--old-key-file")) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    kr_master_key old_key, new_key;
    bool dry = kr_flag(&a, "--dry-run");
    rekey_ctx x = {.old_key = &old_key, .new_key = &new_key, .dry_run = dry};
    size_t rows = 0;
    int e = kr_master_key_load_file(kr_arg(&a, "--old-key-file"), &old_key, &d);
    if (e) {
        kr_cli_errf("rekey: old key: %s", kr_diag_msg(&d, e));
        goto out;
    }
    if (kr_arg(&a, "--new-key-file")) {
        e = kr_master_key_load_file(kr_arg(&a, "--new-key-file"), &new_key, &d);
        if (e) {
            kr_cli_errf("rekey: new key: %s", kr_diag_msg(&d, e));
            goto out;
        }
    } else {
        if (kr_cli_key(&c)) goto out;
        new_key = c.mk;
    }
    if (kr_cli_store(&c)) goto out;
    x.st = c.st;
    e = run_rekey(&x, &rows, &d);
    if (e) {
        kr_cli_errf("rekey: %s: %s", kr_err_name(e), kr_diag_msg(&d, e));
        goto out;
    }
    char who[200];
    for (size_t i = 0; i < x.ndone; i++) {
        owner_name(c.st, x.done[i].scope, x.done[i].owner, who, sizeof who);
        char e1[600], e2[600];
        printf("%s %s %s\n", dry ? "would re-encrypt" : "re-encrypted", kr_esc(who, e1, sizeof e1),
               kr_esc(x.done[i].key, e2, sizeof e2));
    }
    if (x.nbad) {
        /* a dry run lists every blocker; a real run stopped at the first */
        for (size_t i = 0; i < x.nbad; i++) {
            owner_name(c.st, x.bad[i].scope, x.bad[i].owner, who, sizeof who);
            char e1[600], e2[600];
            printf("UNREADABLE %s %s (%s)\n", kr_esc(who, e1, sizeof e1),
                   kr_esc(x.bad[i].key, e2, sizeof e2),
                   x.bad[i].opens_new ? "opens under the new key: already rotated?"
                                      : "opens under neither key");
        }
        kr_cli_errf("rekey: dry run: %zu of %zu secret(s) do not open under the old key; the "
                    "rotation would abort and change nothing",
                    x.nbad, rows);
        goto out;
    }
    if (dry)
        printf("dry run: %zu secret(s) would be re-encrypted; nothing was changed\n", x.ndone);
    else if (x.ndone == 0)
        printf("no secrets stored; nothing to re-encrypt\n");
    else
        printf("%zu secret(s) re-encrypted under the new key in one transaction; restart every "
               "keyrail instance with the new key\n",
               x.ndone);
    rc = 0;
out:
    free(x.done);
    free(x.bad);
    sodium_memzero(&old_key, sizeof old_key);
    sodium_memzero(&new_key, sizeof new_key);
    kr_cli_free(&c);
    return rc;
}
