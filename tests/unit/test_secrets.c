/* test_secrets.c -- sealing, row binding, tamper detection, master key loading, tokens. */
#include "helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void init(void)
{
    cr_assert_eq(sodium_init() >= 0, 1);
    unsetenv(KR_MASTER_KEY_ENV);
}

TestSuite(secrets, .init = init);

Test(secrets, seal_open_round_trip_with_version_byte)
{
    kr_master_key mk;
    kr_test_key(&mk);
    kr_buf ct = KR_BUF_INIT(1 << 16), pt = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&mk, KR_SCOPE_ORG, 7, "K", "hello", 5, &ct), 0);
    uint8_t raw[256];
    size_t rl;
    cr_assert_eq(sodium_base642bin(raw, sizeof raw, ct.data, ct.len, NULL, &rl, NULL,
                                   sodium_base64_VARIANT_ORIGINAL), 0);
    cr_assert_eq(raw[0], KR_SECRET_VERSION);
    cr_assert_null(memmem(raw, rl, "hello", 5), "plaintext visible in ciphertext");
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 7, "K", ct.data, ct.len, &pt), 0);
    cr_assert_str_eq(pt.data, "hello");
    /* two seals of the same value differ (random nonce) */
    kr_buf ct2 = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&mk, KR_SCOPE_ORG, 7, "K", "hello", 5, &ct2), 0);
    cr_assert_str_neq(ct.data, ct2.data);
    kr_buf_free(&ct);
    kr_buf_free(&ct2);
    kr_buf_free(&pt);
}

Test(secrets, ciphertext_is_bound_to_its_row_and_key)
{
    kr_master_key mk, other;
    kr_test_key(&mk);
    kr_test_key(&other);
    kr_buf ct = KR_BUF_INIT(1 << 16), pt = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&mk, KR_SCOPE_ORG, 7, "K", "v", 1, &ct), 0);
    cr_assert_eq(kr_secret_open(&other, KR_SCOPE_ORG, 7, "K", ct.data, ct.len, &pt), KR_ECRYPTO);
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 8, "K", ct.data, ct.len, &pt), KR_ECRYPTO);
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_WORKSPACE, 7, "K", ct.data, ct.len, &pt), KR_ECRYPTO);
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 7, "K2", ct.data, ct.len, &pt), KR_ECRYPTO);
    /* every single-byte flip of the decoded blob is detected */
    uint8_t raw[256];
    size_t rl;
    sodium_base642bin(raw, sizeof raw, ct.data, ct.len, NULL, &rl, NULL, sodium_base64_VARIANT_ORIGINAL);
    for (size_t i = 0; i < rl; i++) {
        raw[i] ^= 0x01;
        char b64[512];
        sodium_bin2base64(b64, sizeof b64, raw, rl, sodium_base64_VARIANT_ORIGINAL);
        cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 7, "K", b64, strlen(b64), &pt), KR_ECRYPTO,
                     "flip at %zu accepted", i);
        raw[i] ^= 0x01;
    }
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 7, "K", "%%%not base64", 13, &pt), KR_ECRYPTO);
    cr_assert_eq(kr_secret_open(&mk, KR_SCOPE_ORG, 7, "K", "", 0, &pt), KR_ECRYPTO);
    kr_buf_free(&ct);
    kr_buf_free(&pt);
}

Test(secrets, three_state_reads)
{
    kr_store *st = kr_test_store();
    kr_master_key mk, other;
    kr_test_key(&mk);
    kr_test_key(&other);
    kr_policy pol;
    kr_policy_init(&pol);
    kr_secret_read r;
    kr_secret_get(st, &mk, KR_SCOPE_ORG, 1, "A", &r);
    cr_assert_eq(r.state, KR_SECRET_ABSENT);
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "A", "value", NULL), 0);
    kr_secret_get(st, &mk, KR_SCOPE_ORG, 1, "A", &r);
    cr_assert_eq(r.state, KR_SECRET_VALUE);
    cr_assert_str_eq(r.value, "value");
    kr_secret_read_free(&r);
    kr_secret_get(st, &other, KR_SCOPE_ORG, 1, "A", &r);
    cr_assert_eq(r.state, KR_SECRET_UNREADABLE);
    cr_assert_eq(r.err, KR_ECRYPTO);
    cr_assert_null(r.value);
    /* a store error is unreadable too, never absent */
    kr_store_close(st);
    kr_store *broken = kr_test_store();
    cr_assert_eq(kr_db_exec(broken->db, "DROP TABLE secrets", NULL, 0, NULL), 0);
    kr_secret_get(broken, &mk, KR_SCOPE_ORG, 1, "A", &r);
    cr_assert_eq(r.state, KR_SECRET_UNREADABLE);
    cr_assert_eq(r.err, KR_ESTORE);
    kr_store_close(broken);
}

Test(secrets, writer_validates_names_and_size)
{
    kr_store *st = kr_test_store();
    kr_master_key mk;
    kr_test_key(&mk);
    kr_policy pol;
    kr_policy_init(&pol);
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "lower", "v", NULL), KR_EINVAL);
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "A-B", "v", NULL), KR_EINVAL);
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "", "v", NULL), KR_EINVAL);
    char *big = malloc(KR_SECRET_MAX_VALUE + 2);
    memset(big, 'x', KR_SECRET_MAX_VALUE + 1);
    big[KR_SECRET_MAX_VALUE + 1] = 0;
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "BIG", big, NULL), KR_ETOOBIG);
    free(big);
    kr_store_close(st);
}

Test(secrets, key_check_refuses_a_second_key)
{
    kr_master_key mk, other;
    kr_test_key(&mk);
    kr_test_key(&other);
    kr_policy pol;
    kr_policy_init(&pol);
    kr_store *st = kr_test_store();
    kr_diag d = {{0}};
    char a[65], b[65], stored[65];
    kr_master_key_check(&mk, a);
    kr_master_key_check(&other, b);
    cr_assert_eq(strlen(a), 64);
    cr_assert_str_neq(a, b);
    cr_assert_null(strstr(a, "00000000"), "not a zero hash");
    /* the first writer's key becomes the store's */
    cr_assert_eq(kr_secret_set(st, &mk, &pol, KR_SCOPE_ORG, 1, "A", "one", &d), 0, "%s", d.msg);
    cr_assert_eq(kr_store_keycheck_get(st, stored, &d), 0);
    cr_assert_str_eq(stored, a);
    /* a second key is refused, and nothing is written under it */
    cr_assert_eq(kr_secret_set(st, &other, &pol, KR_SCOPE_ORG, 1, "B", "two", &d),
                 KR_EWRONG_MASTER_KEY);
    cr_assert(strstr(d.msg, "not the store's"), "%s", d.msg);
    cr_assert_eq(kr_secret_set(st, &other, &pol, KR_SCOPE_ORG, 1, "A", "over", &d),
                 KR_EWRONG_MASTER_KEY);
    kr_secret_read r;
    kr_secret_get(st, &mk, KR_SCOPE_ORG, 1, "B", &r);
    cr_assert_eq(r.state, KR_SECRET_ABSENT);
    kr_secret_get(st, &mk, KR_SCOPE_ORG, 1, "A", &r);
    cr_assert_eq(r.state, KR_SECRET_VALUE);
    cr_assert_str_eq(r.value, "one");
    kr_secret_read_free(&r);
    cr_assert_eq(kr_master_key_verify(st, &other, &d), KR_EWRONG_MASTER_KEY);
    cr_assert_eq(kr_master_key_verify(st, &mk, &d), 0);
    kr_store_close(st);
}

Test(secrets, key_check_on_a_store_from_before_it)
{
    kr_master_key mk, other;
    kr_test_key(&mk);
    kr_test_key(&other);
    kr_diag d = {{0}};
    char stored[65], want[65];
    /* an empty store: any key is the first, and is written */
    kr_store *st = kr_test_store();
    cr_assert_eq(kr_master_key_verify(st, &other, &d), 0);
    kr_master_key_check(&other, want);
    cr_assert_eq(kr_store_keycheck_get(st, stored, &d), 0);
    cr_assert_str_eq(stored, want);
    kr_store_close(st);
    /* secrets but no check (sealed before the check existed) */
    st = kr_test_store();
    kr_buf ct = KR_BUF_INIT(1 << 16);
    cr_assert_eq(kr_secret_seal(&mk, KR_SCOPE_ORG, 1, "A", "v", 1, &ct), 0);
    cr_assert_eq(kr_store_secret_put(st, KR_SCOPE_ORG, 1, "A", ct.data, 1, &d), 0);
    kr_buf_free(&ct);
    /* a key that opens none of them is refused, and writes no check */
    cr_assert_eq(kr_master_key_verify(st, &other, &d), KR_EWRONG_MASTER_KEY);
    cr_assert(strstr(d.msg, "opens none of the 1 secret"), "%s", d.msg);
    cr_assert_eq(kr_store_keycheck_get(st, stored, &d), KR_ENOTFOUND);
    /* the right key proves itself on them and writes its check */
    cr_assert_eq(kr_master_key_verify(st, &mk, &d), 0);
    kr_master_key_check(&mk, want);
    cr_assert_eq(kr_store_keycheck_get(st, stored, &d), 0);
    cr_assert_str_eq(stored, want);
    cr_assert_eq(kr_master_key_verify(st, &other, &d), KR_EWRONG_MASTER_KEY);
    kr_store_close(st);
}

Test(secrets, master_key_from_env_file_and_refusals)
{
    kr_master_key mk;
    kr_diag d = {{0}};
    cr_assert_eq(kr_master_key_load(NULL, false, &mk, NULL, &d), KR_ENOKEY);
    cr_assert(strstr(d.msg, "KEYRAIL_MASTER_KEY") != NULL);
    setenv(KR_MASTER_KEY_ENV, "zz", 1);
    cr_assert_eq(kr_master_key_load(NULL, false, &mk, NULL, &d), KR_ENOKEY);
    setenv(KR_MASTER_KEY_ENV, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 1);
    cr_assert_eq(kr_master_key_load("/nonexistent", false, &mk, NULL, &d), 0, "env wins");
    cr_assert_eq(mk.k[1], 0x11);
    unsetenv(KR_MASTER_KEY_ENV);

    char dir[] = "/tmp/kr-key-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/master.key", dir);
    cr_assert_eq(kr_master_key_load(path, false, &mk, NULL, &d), KR_ENOKEY, "no --dev: no key file created");
    cr_assert_neq(access(path, F_OK), 0);
    bool created = false;
    cr_assert_eq(kr_master_key_load(path, true, &mk, &created, &d), 0, "%s", d.msg);
    cr_assert(created);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    kr_master_key again;
    cr_assert_eq(kr_master_key_load(path, true, &again, &created, &d), 0);
    cr_assert_not(created);
    cr_assert_eq(memcmp(mk.k, again.k, sizeof mk.k), 0);
    chmod(path, 0644);
    cr_assert_eq(kr_master_key_load(path, false, &again, NULL, &d), KR_ENOKEY);
    cr_assert(strstr(d.msg, "readable by others") != NULL, "%s", d.msg);
    unlink(path);
    rmdir(dir);
}

Test(secrets, workspace_tokens)
{
    char a[KR_WS_TOKEN_LEN + 1], b[KR_WS_TOKEN_LEN + 1], h1[65], h2[65];
    kr_token_generate(a);
    kr_token_generate(b);
    cr_assert_eq(strlen(a), KR_WS_TOKEN_LEN);
    cr_assert_eq(strncmp(a, "krws_", 5), 0);
    cr_assert_str_neq(a, b);
    cr_assert_eq(kr_cred_classify(a, strlen(a)), KR_CRED_WORKSPACE_TOKEN);
    kr_token_hash(a, strlen(a), h1);
    kr_token_hash(a, strlen(a), h2);
    cr_assert_str_eq(h1, h2);
    cr_assert_eq(strlen(h1), 64);
    cr_assert_null(strstr(h1, a + 5));
}

Test(secrets, token_lifetimes)
{
    int64_t ms = -1;
    kr_diag d = {{0}};
    cr_assert_eq(kr_token_ttl_parse("90m", &ms, &d), 0);
    cr_assert_eq(ms, 90 * 60000LL);
    cr_assert_eq(kr_token_ttl_parse("12h", &ms, &d), 0);
    cr_assert_eq(ms, 12 * 3600000LL);
    cr_assert_eq(kr_token_ttl_parse("3650d", &ms, &d), 0);
    cr_assert_eq(ms, 3650 * 86400000LL);
    cr_assert_eq(kr_token_ttl_parse("5256000m", &ms, &d), 0); /* 3650 days */
    static const char *const bad[] = {"0d", "0h", "0m", "000d", "-1d", "-0d", "3651d", "87601h",
                                      "5256001m", "99999999999999999999999d",
                                      "18446744073709551615d", "d", "", "10", "10s", "1.5d",
                                      " 1d", "1d ", "+1d", "1dd", "0x10d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms = -1;
        memset(&d, 0, sizeof d);
        cr_assert_eq(kr_token_ttl_parse(bad[i], &ms, &d), KR_EINVAL, "'%s' accepted", bad[i]);
        cr_assert_eq(ms, -1);
        cr_assert(d.msg[0], "'%s': no reason", bad[i]);
    }
    kr_token_ttl_parse("0d", &ms, &d);
    cr_assert(strstr(d.msg, "positive"), "%s", d.msg);
    kr_token_ttl_parse("99999999999999999999999d", &ms, &d);
    cr_assert(strstr(d.msg, "3650 days"), "%s", d.msg);
}
