/*
 * fuzz_ini.c -- libFuzzer driver for the INI reader (core/ini.c) and the
 * server config built on it (config/config.c).
 *
 * The input is the file text. Checked:
 *   - kr_ini_parse returns 0, KR_EPARSE or KR_ETOOBIG, with a message
 *     naming the line for KR_EPARSE; every callback gets what ini.h
 *     promises: section/label/key of name characters within their sizes,
 *     key and value both NULL (a section header) or both set, values with
 *     no control byte but TAB and an escaped LF, line numbers strictly
 *     increasing and within the text;
 *   - a callback that returns an error stops the parse at once with that
 *     error (the k-th call, k chosen from the first run);
 *   - line locality: parsing only the first lines gives exactly the
 *     callbacks (and the error, if it lies within them) of the full parse
 *     for those lines;
 *   - kr_config_load on the same text (through a memfd, since the config
 *     reader takes a path): 0 or a config/parse error with a message; on
 *     success every integer setting is within its documented range and
 *     every string NUL-terminated, and kr_config_dump works.
 */
#include "fuzz_check.h"
#include "config/config.h"
#include "core/err.h"
#include "core/ini.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define STOP_ERR KR_EDENIED /* what the stopping callback returns: no parser error uses it */

typedef struct run {
    int max_line;       /* lines in the text */
    int last_line;      /* line of the previous callback */
    unsigned calls;
    unsigned stop_at;   /* 0: never stop; else fail on this call */
    unsigned upto_line; /* record only callbacks with line <= this (0: all) */
    uint64_t h;         /* hash of the recorded callbacks */
    unsigned recorded;
} run;

static bool is_name(const char *s, size_t cap, bool may_be_empty)
{
    size_t n = strnlen(s, cap);
    if (n == cap) return false;
    if (n == 0) return may_be_empty;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static int on_item(void *ud, const char *section, const char *name, const char *key,
                   const char *value, int line, kr_diag *d)
{
    run *r = ud;
    CHECK(section && name);
    CHECK(is_name(section, 64, true));
    CHECK(is_name(name, 128, true));
    CHECK((key == NULL) == (value == NULL));
    if (!key) CHECK(section[0] != 0); /* a section header always has a name */
    if (key) {
        CHECK(is_name(key, 128, false));
        size_t vl = strnlen(value, KR_INI_MAX_LINE);
        CHECK(vl < KR_INI_MAX_LINE);
        for (size_t i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)value[i];
            CHECK(c >= 0x20 || c == '\t' || c == '\n');
        }
    }
    CHECK(line >= 1 && line <= r->max_line);
    CHECK(line > r->last_line); /* one item per line at most, in order */
    r->last_line = line;
    r->calls++;
    if (!r->upto_line || (unsigned)line <= r->upto_line) {
        uint64_t h = mix(r->h, &line, sizeof line);
        h = mix(h, section, strlen(section) + 1);
        h = mix(h, name, strlen(name) + 1);
        if (key) {
            h = mix(h, key, strlen(key) + 1);
            h = mix(h, value, strlen(value) + 1);
        }
        r->h = h;
        r->recorded++;
    }
    if (r->stop_at && r->calls == r->stop_at) return kr_fail(d, STOP_ERR, "stopped by the callback");
    return 0;
}

static int count_lines(const uint8_t *d, size_t n)
{
    int k = 1;
    for (size_t i = 0; i < n; i++)
        if (d[i] == '\n') k++;
    return k;
}

/* Line number of an EPARSE message "line N: …", or 0. */
static int msg_line(const char *m)
{
    int ln = 0;
    if (sscanf(m, "line %d:", &ln) != 1) return 0;
    return ln;
}

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    memfd = memfd_create("fuzz_ini", MFD_CLOEXEC);
    /* the config loader reads KEYRAIL_<SECTION>_<KEY> overrides: none here */
    for (char **e = __environ; e && *e;)
        if (!strncmp(*e, "KEYRAIL_", 8)) {
            char name[128];
            size_t l = strcspn(*e, "=");
            if (l >= sizeof name) l = sizeof name - 1;
            memcpy(name, *e, l);
            name[l] = 0;
            unsetenv(name);
        } else {
            e++;
        }
    return 0;
}

static void check_config(const uint8_t *d, size_t n)
{
    if (memfd < 0) return;
    CHECK(ftruncate(memfd, 0) == 0);
    CHECK(n == 0 || pwrite(memfd, d, n, 0) == (ssize_t)n);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    kr_config c;
    kr_diag dg = {{0}};
    int rc = kr_config_load(&c, path, &dg);
    CHECK(rc == 0 || rc == KR_ECONFIG || rc == KR_EPARSE || rc == KR_ETOOBIG);
    if (rc) {
        CHECK(dg.msg[0] != 0);
        return;
    }
    CHECK(memchr(c.store_url, 0, sizeof c.store_url));
    CHECK(memchr(c.master_key_file, 0, sizeof c.master_key_file));
    CHECK(memchr(c.registry_file, 0, sizeof c.registry_file));
    CHECK(memchr(c.listen, 0, sizeof c.listen));
    CHECK(memchr(c.public_url, 0, sizeof c.public_url));
    CHECK(memchr(c.log_file, 0, sizeof c.log_file));
    CHECK(memchr(c.log_level, 0, sizeof c.log_level));
    CHECK(memchr(c.concierge_default_model, 0, sizeof c.concierge_default_model));
    CHECK(memchr(c.default_runtime, 0, sizeof c.default_runtime));
    CHECK(memchr(c.operator_prefixes, 0, sizeof c.operator_prefixes));
    /* the ranges config.c documents */
    CHECK(c.max_body_bytes >= 1024 && c.max_body_bytes <= (1LL << 32));
    CHECK(c.max_header_bytes >= 1024 && c.max_header_bytes <= (1 << 20));
    CHECK(c.max_headers >= 8 && c.max_headers <= 128);
    CHECK(c.header_timeout_ms >= 100 && c.header_timeout_ms <= 3600000);
    CHECK(c.idle_timeout_ms >= 100 && c.idle_timeout_ms <= 3600000);
    CHECK(c.send_timeout_ms >= 100 && c.send_timeout_ms <= 3600000);
    CHECK(c.upstream_connect_timeout_ms >= 100 && c.upstream_connect_timeout_ms <= 600000);
    CHECK(c.upstream_timeout_ms >= 100 && c.upstream_timeout_ms <= 86400000);
    CHECK(c.shutdown_grace_ms >= 0 && c.shutdown_grace_ms <= 3600000);
    CHECK(c.max_connections >= 1 && c.max_connections <= 1000000);
    CHECK(c.token_cache_ms >= 0 && c.token_cache_ms <= 600000);
    kr_buf out = KR_BUF_INIT(1 << 20);
    kr_config_dump(&c, &out);
    CHECK(out.len > 0);
    kr_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 2 * KR_INI_MAX_LINE + 64) return 0; /* the limits are reachable well below this */
    /* an exact-size copy: a read past the end is an ASan report */
    char *text = malloc(n ? n : 1);
    memcpy(text, d, n);
    int lines = count_lines(d, n);

    /* 1. the whole text */
    run a = {.max_line = lines};
    kr_diag da = {{0}};
    int rc = kr_ini_parse(text, n, on_item, &a, &da);
    CHECK(rc == 0 || rc == KR_EPARSE || rc == KR_ETOOBIG);
    int err_line = 0;
    if (rc) {
        CHECK(da.msg[0] != 0);
        if (rc == KR_EPARSE) {
            err_line = msg_line(da.msg);
            CHECK(err_line >= 1 && err_line <= lines);
            CHECK(err_line > a.last_line); /* the failing line produced no item */
        }
    }

    /* 2. a callback error stops the parse with that error */
    if (a.calls > 0) {
        run b = {.max_line = lines, .stop_at = 1 + (unsigned)(n % a.calls)};
        kr_diag db = {{0}};
        int rb = kr_ini_parse(text, n, on_item, &b, &db);
        CHECK(rb == STOP_ERR);
        CHECK(b.calls == b.stop_at);
        CHECK(strcmp(db.msg, "stopped by the callback") == 0);
    }

    /* 3. line locality: the first k lines parse as the full text did there */
    if (lines > 1) {
        int k = 1 + (int)(n % (size_t)(lines - 1)); /* 1 .. lines-1 */
        size_t cut = 0;
        for (int seen = 0; cut < n; cut++)
            if (text[cut] == '\n' && ++seen == k) {
                cut++;
                break;
            }
        run full = {.max_line = lines, .upto_line = (unsigned)k};
        kr_diag df = {{0}};
        int rf = kr_ini_parse(text, n, on_item, &full, &df);
        CHECK(rf == rc);
        run part = {.max_line = k + 1};
        kr_diag dp = {{0}};
        char *prefix = malloc(cut ? cut : 1);
        memcpy(prefix, text, cut);
        int rp = kr_ini_parse(prefix, cut, on_item, &part, &dp);
        free(prefix);
        if (rc == KR_EPARSE && err_line <= k) {
            CHECK(rp == KR_EPARSE && strcmp(dp.msg, da.msg) == 0);
        } else if (rc != KR_ETOOBIG) {
            CHECK(rp == 0);
        }
        if (rp == 0 || rp == KR_EPARSE) {
            CHECK(part.recorded == full.recorded);
            CHECK(part.h == full.h);
        }
    }

    free(text);
    check_config(d, n);
    return 0;
}
