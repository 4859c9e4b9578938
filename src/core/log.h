/*
 * log.h -- leveled JSON-lines logging with credential redaction.
 *
 * One line per event, to stderr or a file: {"ts":..,"level":..,"msg":..,...}.
 * The KR_LOG_* macros test the level before any formatting happens. Every
 * line passes through kr_redact() before it is written, so a credential that
 * reaches a message (a model name a tenant chose, an upstream error body) is
 * replaced by its class and fingerprint: "[redacted oauth 1a2b3c4d]".
 */
#ifndef KR_LOG_H
#define KR_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

enum { KR_LOG_DEBUG = 0, KR_LOG_INFO = 1, KR_LOG_WARN = 2, KR_LOG_ERROR = 3, KR_LOG_OFF = 4 };

extern int kr_log_level;

/* Opens path for appending (NULL or "-" = stderr). */
int kr_log_open(const char *path);
void kr_log_close(void);
/* True while the log goes to stderr. */
bool kr_log_is_stderr(void);
int kr_log_level_parse(const char *s);

void kr_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Buffered mode: info and request lines collect in memory, per thread,
 * until that thread calls kr_log_flush() (each event loop does every
 * server.log_flush_ms) or 64 KiB; warnings and errors are written at once,
 * after what the same thread has pending. Lines of different loops are in
 * the order their batches were written. */
void kr_log_set_buffered(bool on);
void kr_log_flush(void);
/* Flushes and frees the calling thread's pending lines (a thread that
 * logged buffered lines calls it before it ends). */
void kr_log_thread_end(void);
/* Writes an already-built JSON object line (without newline); it is redacted. */
void kr_log_json_line(kr_buf *line);
/* The log's UTC timestamp, "2026-11-28T17:51:04.123Z"; returns its length. */
#define KR_LOG_TS_LEN 80
size_t kr_log_ts(char out[KR_LOG_TS_LEN]);

#define KR_LOG(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) >= kr_log_level) kr_log_write((lvl), __VA_ARGS__);                               \
    } while (0)
#define KR_DEBUG(...) KR_LOG(KR_LOG_DEBUG, __VA_ARGS__)
#define KR_INFO(...)  KR_LOG(KR_LOG_INFO, __VA_ARGS__)
#define KR_WARN(...)  KR_LOG(KR_LOG_WARN, __VA_ARGS__)
#define KR_ERROR(...) KR_LOG(KR_LOG_ERROR, __VA_ARGS__)

/*
 * Appends in[0..n) to out with every credential-shaped run replaced by
 * "[redacted CLASS FP]". Returns the number of redactions. Shapes: sk-…,
 * krws_…, Bearer …, common operator tokens (ghp_, github_pat_, glpat-,
 * AKIA…), and keyrail's alert webhook secrets (whsec_…).
 */
size_t kr_redact(const char *in, size_t n, kr_buf *out);

#endif
