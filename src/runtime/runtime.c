/*
 * runtime.c -- parsing and rendering of agent runtime profiles (runtime.h).
 */
#include "runtime/runtime.h"
#include "core/cred.h"
#include "core/ini.h"

#include <stdlib.h>
#include <string.h>

const char *kr_rtvar_role_name(kr_rtvar_role r)
{
    static const char *const n[] = {"base-url", "credential", "headers",
                                    "provider", "model",      "config"};
    return (unsigned)r < KR_RTVAR__COUNT ? n[r] : "?";
}

static const char *const role_keys[KR_RTVAR__COUNT] = {
    "base_url_env", "credential_env", "header_env", "provider_env", "model_env", "config_env",
};

/* ---- parsing ---- */

static bool env_name_ok(const char *s)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_' ||
              (p > s && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* Comma-separated list; entries trimmed. env: each must be a variable name. */
static int split(const char *v, char *out, size_t each, size_t max, size_t *n, bool env,
                 kr_diag *d, int line)
{
    const char *item;
    size_t len;
    for (*n = 0; kr_list_next(&v, &item, &len); (*n)++) {
        if (*n >= max) return kr_fail(d, KR_EPARSE, "line %d: more than %zu entries", line, max);
        char *dst = out + *n * each;
        if (kr_memlcpy(dst, each, item, len))
            return kr_fail(d, KR_EPARSE, "line %d: list entry too long", line);
        if (env && !env_name_ok(dst))
            return kr_fail(d, KR_EPARSE, "line %d: '%s' is not a variable name", line, dst);
    }
    return 0;
}

static int set_var(char *dst, size_t cap, const char *v, kr_diag *d, int line, const char *key)
{
    if (kr_strlcpy(dst, v, cap) || !env_name_ok(dst))
        return kr_fail(d, KR_EPARSE, "line %d: %s must be one variable name", line, key);
    return 0;
}

/* "settings.json", ".gemini/settings.json": no empty, "." or ".."
 * component, so the file stays inside the private directory. */
static bool rel_path_ok(const char *s)
{
    if (!*s || *s == '/') return false;
    for (const char *c = s; *c;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        if (!e) break;
        c = e + 1;
        if (!*c) return false; /* trailing slash */
    }
    return true;
}

typedef struct {
    kr_runtimes *r;
    kr_runtime *cur;
} parse_ctx;

static int on_kv(void *ud, const char *section, const char *name, const char *key,
                 const char *value, int line, kr_diag *d)
{
    parse_ctx *c = ud;
    if (strcmp(section, "runtime"))
        return kr_fail(d, KR_EPARSE, "line %d: only [runtime NAME] sections belong here", line);
    if (!name[0]) return kr_fail(d, KR_EPARSE, "line %d: [runtime NAME] needs a name", line);
    if (!key) {
        if (kr_runtimes_find(c->r, name))
            return kr_fail(d, KR_EPARSE, "line %d: runtime '%s' defined twice", line, name);
        if (c->r->n >= KR_RT_MAX) return kr_fail(d, KR_EPARSE, "line %d: too many runtimes", line);
        c->cur = &c->r->rt[c->r->n++];
        memset(c->cur, 0, sizeof *c->cur);
        c->cur->proto = (kr_proto)-1;
        if (kr_strlcpy(c->cur->name, name, sizeof c->cur->name))
            return kr_fail(d, KR_EPARSE, "line %d: runtime name too long", line);
        return 0;
    }
    kr_runtime *rt = c->cur;
    for (int i = 0; i < KR_RTVAR__COUNT; i++)
        if (!strcmp(key, role_keys[i]))
            return split(value, rt->vars[i].v[0], 64, KR_RT_MAX_NAMES, &rt->vars[i].n, true, d,
                         line);
    if (!strcmp(key, "protocol")) {
        int pr = kr_proto_parse(value);
        if (pr < 0)
            return kr_fail(d, KR_EPARSE, "line %d: protocol must be anthropic, openai or gemini", line);
        rt->proto = (kr_proto)pr;
    } else if (!strcmp(key, "aliases")) {
        return split(value, rt->aliases.v[0], 64, KR_RT_MAX_NAMES, &rt->aliases.n, false, d, line);
    } else if (!strcmp(key, "commands")) {
        return split(value, rt->commands.v[0], 64, KR_RT_MAX_NAMES, &rt->commands.n, false, d,
                     line);
    } else if (!strcmp(key, "config_files")) {
        return split(value, rt->config_files[0], 128, KR_RT_MAX_NAMES, &rt->nconfig_files, false,
                     d, line);
    } else if (!strcmp(key, "set_base_url")) {
        return set_var(rt->set_base_url, sizeof rt->set_base_url, value, d, line, key);
    } else if (!strcmp(key, "set_bearer")) {
        return set_var(rt->set_bearer, sizeof rt->set_bearer, value, d, line, key);
    } else if (!strcmp(key, "set_api_key")) {
        return set_var(rt->set_api_key, sizeof rt->set_api_key, value, d, line, key);
    } else if (!strcmp(key, "set_oauth")) {
        return set_var(rt->set_oauth, sizeof rt->set_oauth, value, d, line, key);
    } else if (!strcmp(key, "set_model")) {
        return set_var(rt->set_model, sizeof rt->set_model, value, d, line, key);
    } else if (!strcmp(key, "dir_env")) {
        return set_var(rt->dir_env, sizeof rt->dir_env, value, d, line, key);
    } else if (!strcmp(key, "file")) {
        /* a relative path inside keyrail's private directory */
        if (kr_strlcpy(rt->file, value, sizeof rt->file) || !rel_path_ok(value))
            return kr_fail(d, KR_EPARSE,
                           "line %d: file must be a relative path without . or .. components",
                           line);
    } else if (!strcmp(key, "format")) {
        if (!strcmp(value, "json")) rt->format = KR_RTFMT_JSON;
        else if (!strcmp(value, "toml")) rt->format = KR_RTFMT_TOML;
        else return kr_fail(d, KR_EPARSE, "line %d: format must be json or toml", line);
    } else if (!strcmp(key, "line")) {
        if (rt->nlines >= KR_RT_MAX_LINES)
            return kr_fail(d, KR_EPARSE, "line %d: more than %d lines", line, KR_RT_MAX_LINES);
        if (!rt->lines) rt->lines = kr_xcalloc(KR_RT_MAX_LINES, KR_RT_LINE);
        if (kr_strlcpy(rt->lines[rt->nlines++], value, KR_RT_LINE))
            return kr_fail(d, KR_EPARSE, "line %d: template line too long", line);
    } else if (!strcmp(key, "args")) {
        return split(value, rt->args[0], 128, KR_RT_MAX_ARGS, &rt->nargs, false, d, line);
    } else if (!strcmp(key, "set_env")) {
        int rc = split(value, rt->set_env.v[0], 64, KR_RT_MAX_NAMES, &rt->set_env.n, false, d, line);
        for (size_t i = 0; !rc && i < rt->set_env.n; i++) {
            char *e = rt->set_env.v[i], *eq = strchr(e, '=');
            if (eq) *eq = 0;
            bool ok = eq && env_name_ok(e) && strncmp(e, "KEYRAIL_", 8) &&
                      kr_cred_find(eq + 1, strlen(eq + 1), NULL, NULL) == KR_CRED_NONE;
            if (eq) *eq = '=';
            if (!ok)
                rc = kr_fail(d, KR_EPARSE,
                             "line %d: set_env takes NAME=VALUE, never keyrail's own variables "
                             "or a credential",
                             line);
        }
        return rc;
    } else if (!strcmp(key, "remove_files")) {
        int rc = split(value, rt->remove_files.v[0], 64, KR_RT_MAX_NAMES, &rt->remove_files.n,
                       false, d, line);
        for (size_t i = 0; !rc && i < rt->remove_files.n; i++)
            if (!rel_path_ok(rt->remove_files.v[i]))
                rc = kr_fail(d, KR_EPARSE,
                             "line %d: remove_files takes relative paths without . or .. "
                             "components",
                             line);
        return rc;
    } else {
        return kr_fail(d, KR_EPARSE, "line %d: unknown runtime setting '%s'", line, key);
    }
    return 0;
}

/* Every ${...} of a template line must be one we know. */
static int check_line(const kr_runtime *rt, const char *l, kr_diag *d)
{
    if (kr_cred_find(l, strlen(l), NULL, NULL) != KR_CRED_NONE)
        return kr_fail(d, KR_EPARSE, "runtime '%s': a line holds a credential", rt->name);
    for (const char *p = strstr(l, "${"); p; p = strstr(p + 2, "${")) {
        if (!strncmp(p, "${blank_env}", 12) && rt->format != KR_RTFMT_JSON)
            return kr_fail(d, KR_EPARSE, "runtime '%s': ${blank_env} is for json files", rt->name);
        if (strncmp(p, "${base_url}", 11) && strncmp(p, "${credential_env}", 17) &&
            strncmp(p, "${model}", 8) && strncmp(p, "${blank_env}", 12))
            return kr_fail(d, KR_EPARSE, "runtime '%s': unknown placeholder in line: %.40s",
                           rt->name, p);
    }
    return 0;
}

static int validate(const kr_runtime *rt, kr_diag *d)
{
    if ((int)rt->proto < 0) return kr_fail(d, KR_EPARSE, "runtime '%s' has no protocol", rt->name);
    if (!rt->set_base_url[0] || !rt->set_bearer[0])
        return kr_fail(d, KR_EPARSE, "runtime '%s' needs set_base_url and set_bearer", rt->name);
    if (!kr_runtimes_names(&(kr_runtimes){(kr_runtime *)rt, 1}, rt->set_base_url,
                           KR_RTVAR_BASE_URL, -1))
        return kr_fail(d, KR_EPARSE, "runtime '%s': set_base_url must be one of its base_url_env",
                       rt->name);
    const char *creds[] = {rt->set_bearer, rt->set_api_key, rt->set_oauth};
    for (size_t i = 0; i < 3; i++)
        if (creds[i][0] && !kr_runtimes_names(&(kr_runtimes){(kr_runtime *)rt, 1}, creds[i],
                                              KR_RTVAR_CREDENTIAL, -1))
            return kr_fail(d, KR_EPARSE, "runtime '%s': %s must be one of its credential_env",
                           rt->name, creds[i]);
    if (rt->file[0] && (!rt->format || !rt->nlines))
        return kr_fail(d, KR_EPARSE, "runtime '%s': a file needs a format and lines", rt->name);
    if (!rt->file[0] && (rt->nlines || rt->dir_env[0] || rt->nargs))
        return kr_fail(d, KR_EPARSE, "runtime '%s': line, dir_env and args need a file", rt->name);
    for (size_t i = 0; i < rt->nlines; i++) {
        int rc = check_line(rt, rt->lines[i], d);
        if (rc) return rc;
    }
    for (size_t i = 0; i < rt->nargs; i++)
        if (strstr(rt->args[i], "${") && strcmp(rt->args[i], "${file}"))
            return kr_fail(d, KR_EPARSE, "runtime '%s': args know only ${file}", rt->name);
    return 0;
}

int kr_runtimes_parse(const char *text, size_t n, kr_runtimes **out, kr_diag *d)
{
    kr_runtimes *r = kr_xcalloc(1, sizeof *r);
    r->rt = kr_xcalloc(KR_RT_MAX, sizeof *r->rt);
    parse_ctx c = {.r = r};
    int rc = kr_ini_parse(text, n, on_kv, &c, d);
    for (size_t i = 0; !rc && i < r->n; i++) rc = validate(&r->rt[i], d);
    for (size_t i = 0; !rc && i < r->n; i++)
        for (size_t a = 0; !rc && a < r->rt[i].aliases.n; a++) {
            const kr_runtime *o = kr_runtimes_find(r, r->rt[i].aliases.v[a]);
            if (o && o != &r->rt[i])
                rc = kr_fail(d, KR_EPARSE, "runtime alias '%s' is taken", r->rt[i].aliases.v[a]);
        }
    if (!rc && r->n == 0) rc = kr_fail(d, KR_EPARSE, "no [runtime NAME] section");
    if (rc) {
        kr_runtimes_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int parse_any(const char *text, size_t n, void *out, kr_diag *d)
{
    return kr_runtimes_parse(text, n, out, d);
}

int kr_runtimes_load(const char *path, kr_runtimes **out, kr_diag *d)
{
    if (!path || !*path) return kr_runtimes_parse(kr_runtimes_builtin, strlen(kr_runtimes_builtin), out, d);
    return kr_ini_load(path, parse_any, out, d);
}

void kr_runtimes_free(kr_runtimes *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) free(r->rt[i].lines);
    free(r->rt);
    free(r);
}

/* ---- lookups ---- */

static bool in_list(const kr_rt_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return true;
    return false;
}

const kr_runtime *kr_runtimes_find(const kr_runtimes *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->rt[i].name, name) || in_list(&r->rt[i].aliases, name)) return &r->rt[i];
    return NULL;
}

const kr_runtime *kr_runtimes_for_command(const kr_runtimes *r, const char *argv0)
{
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    for (size_t i = 0; i < r->n; i++)
        if (in_list(&r->rt[i].commands, base)) return &r->rt[i];
    return NULL;
}

bool kr_runtimes_names(const kr_runtimes *r, const char *var, kr_rtvar_role role, int proto)
{
    for (size_t i = 0; i < r->n; i++)
        if ((proto < 0 || (int)r->rt[i].proto == proto) && in_list(&r->rt[i].vars[role], var))
            return true;
    return false;
}

int kr_runtimes_role(const kr_runtimes *r, const char *var)
{
    for (int role = 0; role < KR_RTVAR__COUNT; role++)
        if (kr_runtimes_names(r, var, (kr_rtvar_role)role, -1)) return role;
    return -1;
}

void kr_runtimes_list_names(const kr_runtimes *r, char *out, size_t cap)
{
    out[0] = 0;
    kr_buf b = KR_BUF_INIT(cap ? cap - 1 : 0);
    for (size_t i = 0; i < r->n; i++) {
        kr_buf_printf(&b, "%s%s", i ? ", " : "", r->rt[i].name);
        for (size_t a = 0; a < r->rt[i].aliases.n; a++)
            kr_buf_printf(&b, ", %s", r->rt[i].aliases.v[a]);
    }
    kr_strlcpy(out, b.data ? b.data : "", cap);
    kr_buf_free(&b);
}

/* ---- rendering ---- */

/* A quoted string value; JSON and TOML basic strings escape alike. */
static int quote(kr_buf *b, const char *s)
{
    kr_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) return KR_EINVAL; /* nothing we write needs them */
        if (*p == '"' || *p == '\\') kr_buf_putc(b, '\\');
        kr_buf_putc(b, (char)*p);
    }
    return kr_buf_putc(b, '"');
}

int kr_runtime_render_file(const kr_runtime *rt, const char *base_url, const char *cred_var,
                           const char *model, kr_buf *out, kr_diag *d)
{
    if (!rt->file[0]) return kr_fail(d, KR_EINVAL, "runtime '%s' has no file", rt->name);
    for (size_t i = 0; i < rt->nlines; i++) {
        const char *l = rt->lines[i];
        if (strstr(l, "${model}") && (!model || !*model)) continue;
        while (*l) {
            const char *p = strstr(l, "${");
            if (!p) {
                kr_buf_puts(out, l);
                break;
            }
            kr_buf_append(out, l, (size_t)(p - l));
            const char *v;
            size_t skip;
            if (!strncmp(p, "${blank_env}", 12)) {
                /* , "VAR": "" for every credential, header and provider
                 * variable but the one credential keyrail chose */
                static const kr_rtvar_role roles[] = {KR_RTVAR_CREDENTIAL, KR_RTVAR_HEADERS,
                                                      KR_RTVAR_PROVIDER};
                for (size_t r = 0; r < 3; r++)
                    for (size_t j = 0; j < rt->vars[roles[r]].n; j++)
                        if (!cred_var || strcmp(rt->vars[roles[r]].v[j], cred_var))
                            kr_buf_printf(out, ", \"%s\": \"\"", rt->vars[roles[r]].v[j]);
                l = p + 12;
                continue;
            }
            if (!strncmp(p, "${base_url}", 11)) v = base_url, skip = 11;
            else if (!strncmp(p, "${credential_env}", 17)) v = cred_var, skip = 17;
            else if (!strncmp(p, "${model}", 8)) v = model, skip = 8;
            else return kr_fail(d, KR_EINVAL, "runtime '%s': unknown placeholder", rt->name);
            if (v && kr_cred_find(v, strlen(v), NULL, NULL) != KR_CRED_NONE)
                return kr_fail(d, KR_EINVAL,
                               "runtime '%s': a value for its %s holds a credential; no "
                               "credential is ever written to a file",
                               rt->name, rt->file);
            if (quote(out, v ? v : ""))
                return kr_fail(d, KR_EINVAL,
                               "runtime '%s': a value for its %s has control bytes", rt->name,
                               rt->file);
            l = p + skip;
        }
        if (kr_buf_putc(out, '\n')) return kr_fail(d, KR_ETOOBIG, "%s too large", rt->file);
    }
    return 0;
}
