/*
 * ini.h -- the one small config syntax keyrail reads (server config and the
 * provider registry), bounded and fuzzed.
 *
 *   # comment            ; comment
 *   [section]            [section name]
 *   key = value          key = "quoted \" value"
 *
 * Names are [A-Za-z0-9_.-]+. Values run to the end of the line (trimmed); a
 * value starting with '"' is a quoted string with \" \\ \n escapes. Limits:
 * KR_INI_MAX_BYTES per file, KR_INI_MAX_LINE per line. Errors name the line.
 */
#ifndef KR_INI_H
#define KR_INI_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

#define KR_INI_MAX_BYTES (1u << 20)
#define KR_INI_MAX_LINE 4096

/* Called for every section header (key and value NULL) and every key.
 * section/name are "" when absent. Return 0 to go on,
 * or an error (with d filled) to stop. */
typedef int (*kr_ini_cb)(void *ud, const char *section, const char *name, const char *key,
                         const char *value, int line, kr_diag *d);

int kr_ini_parse(const char *text, size_t n, kr_ini_cb cb, void *ud, kr_diag *d);
/* Reads a whole file with a size cap into *out (NUL-terminated, caller frees). */
int kr_read_file(const char *path, size_t max, char **out, size_t *len, kr_diag *d);
/* Reads a file (KR_INI_MAX_BYTES at most) and hands it to parse; a parse
 * error is reported with the file's path in front. */
typedef int (*kr_ini_parse_fn)(const char *text, size_t n, void *out, kr_diag *d);
int kr_ini_load(const char *path, kr_ini_parse_fn parse, void *out, kr_diag *d);
/* Walks a comma-separated list value: true with the next entry, trimmed of
 * spaces, in [*item, *item + *len) (never empty); *s advances past it. */
bool kr_list_next(const char **s, const char **item, size_t *len);

#endif
