#include "core/ini.h"
#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static void trim(const char **p, const char **e)
{
    while (*p < *e && (**p == ' ' || **p == '\t')) (*p)++;
    while (*e > *p && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r')) (*e)--;
}

static int copy_name(const char *p, const char *e, char *out, size_t cap)
{
    if (p == e || (size_t)(e - p) >= cap) return -1;
    for (const char *q = p; q < e; q++)
        if (!is_name_char((unsigned char)*q)) return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
    return 0;
}

static int parse_value(const char *p, const char *e, char *out, size_t cap)
{
    size_t o = 0;
    if (p < e && *p == '"') {
        p++;
        for (;;) {
            if (p >= e) return -1; /* unterminated */
            char c = *p++;
            if (c == '"') break;
            if (c == '\\') {
                if (p >= e) return -1;
                c = *p++;
                if (c == 'n') c = '\n';
                else if (c != '"' && c != '\\') return -1;
            }
            if ((unsigned char)c < 0x20 && c != '\n' && c != '\t') return -1;
            if (o + 1 >= cap) return -1;
            out[o++] = c;
        }
        while (p < e && (*p == ' ' || *p == '\t')) p++;
        if (p != e) return -1; /* junk after closing quote */
    } else {
        for (; p < e; p++) {
            if ((unsigned char)*p < 0x20 && *p != '\t') return -1;
            if (o + 1 >= cap) return -1;
            out[o++] = *p;
        }
    }
    out[o] = 0;
    return 0;
}

int kr_ini_parse(const char *text, size_t n, kr_ini_cb cb, void *ud, kr_diag *d)
{
    if (n > KR_INI_MAX_BYTES) return kr_fail(d, KR_ETOOBIG, "config is larger than %u bytes",
                                             KR_INI_MAX_BYTES);
    char section[64] = "", name[128] = "", key[128], value[KR_INI_MAX_LINE];
    const char *p = text, *end = text + n;
    int line = 0;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le - p > KR_INI_MAX_LINE)
            return kr_fail(d, KR_EPARSE, "line %d: longer than %d bytes", line, KR_INI_MAX_LINE);
        if (memchr(p, 0, (size_t)(le - p)))
            return kr_fail(d, KR_EPARSE, "line %d: NUL byte", line);
        const char *s = p, *e = le;
        p = nl ? nl + 1 : end;
        trim(&s, &e);
        if (s == e || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            if (e[-1] != ']') return kr_fail(d, KR_EPARSE, "line %d: section without ']'", line);
            const char *a = s + 1, *b = e - 1;
            trim(&a, &b);
            const char *sp = a;
            while (sp < b && *sp != ' ' && *sp != '\t') sp++;
            if (copy_name(a, sp, section, sizeof section))
                return kr_fail(d, KR_EPARSE, "line %d: bad section name", line);
            const char *na = sp, *nb = b;
            trim(&na, &nb);
            name[0] = 0;
            if (na < nb && copy_name(na, nb, name, sizeof name))
                return kr_fail(d, KR_EPARSE, "line %d: bad section label", line);
            int rc = cb(ud, section, name, NULL, NULL, line, d);
            if (rc) return rc;
            continue;
        }
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) return kr_fail(d, KR_EPARSE, "line %d: expected 'key = value'", line);
        const char *ka = s, *kb = eq;
        trim(&ka, &kb);
        if (copy_name(ka, kb, key, sizeof key))
            return kr_fail(d, KR_EPARSE, "line %d: bad key name", line);
        const char *va = eq + 1, *vb = e;
        trim(&va, &vb);
        if (parse_value(va, vb, value, sizeof value))
            return kr_fail(d, KR_EPARSE, "line %d: bad value for '%s'", line, key);
        int rc = cb(ud, section, name, key, value, line, d);
        if (rc) return rc;
    }
    return 0;
}

int kr_read_file(const char *path, size_t max, char **out, size_t *len, kr_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) return kr_fail(d, KR_EIO, "cannot open %s: %s", path, strerror(errno));
    kr_buf b = KR_BUF_INIT(max);
    char chunk[8192];
    size_t r;
    int rc = 0;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (kr_buf_append(&b, chunk, r)) {
            rc = kr_fail(d, KR_ETOOBIG, "%s is larger than %zu bytes", path, max);
            break;
        }
    }
    if (!rc && ferror(f)) rc = kr_fail(d, KR_EIO, "cannot read %s", path);
    fclose(f);
    if (rc) {
        kr_buf_free(&b);
        return rc;
    }
    *len = b.len;
    *out = kr_buf_steal(&b);
    return 0;
}

int kr_ini_load(const char *path, kr_ini_parse_fn parse, void *out, kr_diag *d)
{
    char *text;
    size_t n;
    int rc = kr_read_file(path, KR_INI_MAX_BYTES, &text, &n, d);
    if (rc) return rc;
    kr_diag inner = {{0}};
    rc = parse(text, n, out, &inner);
    free(text);
    if (rc) return kr_fail(d, rc, "%s: %s", path, kr_diag_msg(&inner, rc));
    return 0;
}

bool kr_list_next(const char **s, const char **item, size_t *len)
{
    const char *p = *s;
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) {
            *s = p;
            return false;
        }
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && t[-1] == ' ') t--;
        *s = e;
        if (t > p) {
            *item = p;
            *len = (size_t)(t - p);
            return true;
        }
        p = e;
    }
}
