#include "core/log.h"
#include "core/cred.h"
#include "core/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

int kr_log_level = KR_LOG_INFO;
static FILE *log_fp;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static bool log_buffered; /* request lines wait for kr_log_flush() */
static kr_buf log_pending = KR_BUF_INIT(1u << 20);

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
    pthread_mutex_lock(&log_mu);
    log_buffered = on;
    if (!on) flush_locked();
    pthread_mutex_unlock(&log_mu);
}

void kr_log_flush(void)
{
    pthread_mutex_lock(&log_mu);
    flush_locked();
    pthread_mutex_unlock(&log_mu);
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

void kr_log_close(void)
{
    kr_log_flush();
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

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Prefixes after which a token run is a credential. */
static const char *const shapes[] = {"sk-",         "krws_",  "ghp_",  "gho_",  "ghs_", "ghu_",
                                     "github_pat_", "glpat-", "xoxb-", "xoxp-", "AKIA", "ASIA"};

static size_t match_shape(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t l = strlen(shapes[i]);
        if (n >= l && memcmp(p, shapes[i], l) == 0) {
            size_t run = kr_cred_span(p, n);
            if (run >= l + 4) return run;
        }
    }
    if (n > 7 && (memcmp(p, "Bearer ", 7) == 0 || memcmp(p, "bearer ", 7) == 0)) {
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

size_t kr_redact(const char *in, size_t n, kr_buf *out)
{
    size_t count = 0, i = 0, last = 0;
    while (i < n) {
        char c = in[i];
        if ((c == 's' || c == 'k' || c == 'g' || c == 'x' || c == 'A' || c == 'B' || c == 'b') &&
            boundary(in, i)) {
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
    kr_buf red = KR_BUF_INIT(line->len * 2 + 256);
    kr_redact(line->data ? line->data : "", line->len, &red);
    kr_buf_putc(&red, '\n');
    pthread_mutex_lock(&log_mu);
    if (may_wait && log_buffered && !kr_buf_append(&log_pending, red.data, red.len)) {
        if (log_pending.len > (64u << 10)) flush_locked();
    } else {
        flush_locked(); /* keep the order */
        FILE *f = log_fp ? log_fp : stderr;
        fwrite(red.data, 1, red.len, f);
        fflush(f);
    }
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    kr_buf line = KR_BUF_INIT(8192);
    kr_buf_printf(&line,
                  "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":\"",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  ts.tv_nsec / 1000000,
                  level_names[level < 0   ? 0
                              : level > 3 ? 3
                                          : level]);
    kr_buf_json_str(&line, msg, strlen(msg));
    kr_buf_puts(&line, "\"}");
    emit(&line, level <= KR_LOG_INFO);
    kr_buf_free(&line);
}
