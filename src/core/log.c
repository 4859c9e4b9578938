#include "core/log.h"
#include "core/cred.h"
#include "core/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>

int kr_log_level = KR_LOG_INFO;
static FILE *log_fp;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool log_buffered; /* request lines wait for kr_log_flush() */
/* Each thread collects its buffered lines apart (several event loops log
 * without a lock between them); log_mu is taken only to write a batch. */
static _Thread_local kr_buf log_pending = KR_BUF_INIT(1u << 20);

static void flush_locked(void)
{
    if (!log_pending.len) return;
    FILE *f = log_fp ? log_fp : stderr;
    fwrite(log_pending.data, 1, log_pending.len, f);
    fflush(f);
    kr_buf_reset(&log_pending);
}

void kr_log_set_buffered(bool on)
{
    atomic_store(&log_buffered, on);
    if (!on) kr_log_flush();
}

void kr_log_flush(void)
{
    if (!log_pending.len) return;
    pthread_mutex_lock(&log_mu);
    flush_locked();
    pthread_mutex_unlock(&log_mu);
}

void kr_log_thread_end(void)
{
    kr_log_flush();
    kr_buf_free(&log_pending);
}

int kr_log_open(const char *path)
{
    if (!path || !strcmp(path, "-")) {
        log_fp = NULL;
        return 0;
    }
    FILE *f = fopen(path, "a");
    if (!f) return KR_EIO;
    setvbuf(f, NULL, _IOLBF, 0);
    log_fp = f;
    return 0;
}

bool kr_log_is_stderr(void)
{
    return log_fp == NULL;
}

void kr_log_close(void)
{
    kr_log_thread_end();
    if (log_fp) fclose(log_fp);
    log_fp = NULL;
}

int kr_log_level_parse(const char *s)
{
    if (!strcmp(s, "debug")) return KR_LOG_DEBUG;
    if (!strcmp(s, "info")) return KR_LOG_INFO;
    if (!strcmp(s, "warn")) return KR_LOG_WARN;
    if (!strcmp(s, "error")) return KR_LOG_ERROR;
    if (!strcmp(s, "off")) return KR_LOG_OFF;
    return -1;
}

size_t kr_log_ts(char out[KR_LOG_TS_LEN])
{
    /* "YYYY-MM-DDTHH:MM:SS" is formatted once per second per thread */
    static _Thread_local time_t sec = -1;
    static _Thread_local char prefix[KR_LOG_TS_LEN - 5];
    static _Thread_local size_t plen;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        int n = snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        plen = n < 0 ? 0 : (size_t)n < sizeof prefix ? (size_t)n : sizeof prefix - 1;
        sec = ts.tv_sec;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    memcpy(out, prefix, plen);
    char *o = out + plen;
    *o++ = '.';
    *o++ = (char)('0' + ms / 100);
    *o++ = (char)('0' + ms / 10 % 10);
    *o++ = (char)('0' + ms % 10);
    *o++ = 'Z';
    *o = 0;
    return (size_t)(o - out);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Prefixes after which a token run is a credential. */
static const char *const shapes[] = {"sk-",   "krws_", "kradm_", "ghp_", "gho_",  "ghs_",
                                     "ghu_",  "github_pat_", "glpat-", "xoxb-", "xoxp-", "AKIA",
                                     "ASIA",  "AIza",  "ya29.", "whsec_"};

static size_t match_shape(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (p[0] != shapes[i][0]) continue; /* most candidates end here */
        size_t l = strlen(shapes[i]);
        if (n >= l && memcmp(p, shapes[i], l) == 0) {
            size_t run = kr_cred_span(p, n);
            if (run >= l + 4) return run;
        }
    }
    if (n > 7 && (p[0] == 'B' || p[0] == 'b') && memcmp(p + 1, "earer ", 6) == 0) {
        size_t run = kr_cred_span(p + 7, n - 7);
        if (run >= 8) return 7 + run;
    }
    return 0;
}

static int boundary(const char *in, size_t i)
{
    if (i == 0) return 1;
    unsigned char c = (unsigned char)in[i - 1];
    return !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-');
}

/* First bytes of the shapes above and of "Bearer "/"bearer ". */
static const bool shape_start[256] = {
    ['s'] = 1, ['k'] = 1, ['g'] = 1, ['x'] = 1, ['A'] = 1, ['B'] = 1, ['b'] = 1, ['y'] = 1, ['w'] = 1};

size_t kr_redact(const char *in, size_t n, kr_buf *out)
{
    size_t count = 0, i = 0, last = 0;
    const unsigned char *u = (const unsigned char *)in;
    while (i < n) {
        if (!shape_start[u[i]]) {
            i++;
            continue;
        }
        if (boundary(in, i)) {
            size_t m = match_shape(in + i, n - i);
            if (m) {
                const char *tok = in + i;
                size_t tn = m;
                if (tn > 7 && (memcmp(tok, "Bearer ", 7) == 0 || memcmp(tok, "bearer ", 7) == 0)) {
                    tok += 7;
                    tn -= 7;
                }
                char fp[KR_FP_LEN];
                kr_cred_fingerprint(tok, tn, fp);
                kr_buf_append(out, in + last, i - last);
                kr_buf_printf(out, "[redacted %s %s]",
                              kr_cred_class_name(kr_cred_classify(tok, tn)), fp);
                i += m;
                last = i;
                count++;
                continue;
            }
        }
        i++;
    }
    kr_buf_append(out, in + last, n - last);
    return count;
}

static void emit(kr_buf *line, bool may_wait)
{
    const char *in = line->data ? line->data : "";
    if (may_wait && atomic_load_explicit(&log_buffered, memory_order_relaxed) &&
        log_pending.len + line->len * 5 + 256 < log_pending.max) {
        /* redact straight into this thread's pending batch: no copy per line */
        kr_redact(in, line->len, &log_pending);
        kr_buf_putc(&log_pending, '\n');
        if (log_pending.len > (64u << 10)) kr_log_flush();
        return;
    }
    kr_buf red = KR_BUF_INIT(line->len * 5 + 256); /* a replacement is at most ~4.5x its token */
    kr_redact(in, line->len, &red);
    kr_buf_putc(&red, '\n');
    pthread_mutex_lock(&log_mu);
    flush_locked(); /* keep the order */
    FILE *f = log_fp ? log_fp : stderr;
    fwrite(red.data, 1, red.len, f);
    fflush(f);
    pthread_mutex_unlock(&log_mu);
    kr_buf_free(&red);
}

void kr_log_json_line(kr_buf *line)
{
    emit(line, true);
}

void kr_log_write(int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char ts[KR_LOG_TS_LEN];
    kr_log_ts(ts);
    kr_buf line = KR_BUF_INIT(8192);
    kr_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                  level_names[level < 0   ? 0
                              : level > 3 ? 3
                                          : level]);
    kr_buf_json_str(&line, msg, strlen(msg));
    kr_buf_puts(&line, "\"}");
    emit(&line, level <= KR_LOG_INFO);
    kr_buf_free(&line);
}
