/*
 * runtime.h -- agent runtime profiles: what each agent CLI reads, and how
 * keyrail points it at one host with one credential.
 *
 * Data, like the provider registry: etc/runtimes.conf is the shipped default
 * and is also compiled into the binary (kr_runtimes_builtin), so the launcher
 * on a workspace knows its agents without a file. The format is documented
 * in that file and in docs/CONFIG.md ("Runtime profiles").
 *
 * Readers: the provisioner (which variables are credentials, base URLs,
 * headers; which ones to set for a route), the launcher (what to drop, what
 * file to write, what arguments to add) and explain.
 */
#ifndef KR_RUNTIME_H
#define KR_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/usage.h"

#define KR_RT_MAX 16        /* profiles */
#define KR_RT_MAX_NAMES 32  /* variables per role, aliases, commands, files */
#define KR_RT_MAX_LINES 48  /* file template lines */
#define KR_RT_LINE 1024     /* one template line */
#define KR_RT_MAX_ARGS 4

/* What a variable means to an agent. */
typedef enum {
    KR_RTVAR_BASE_URL = 0, /* the API's base URL */
    KR_RTVAR_CREDENTIAL,   /* a credential */
    KR_RTVAR_HEADERS,      /* extra request headers (may carry credentials) */
    KR_RTVAR_PROVIDER,     /* switches the agent to another provider or host */
    KR_RTVAR_MODEL,        /* a model choice */
    KR_RTVAR_CONFIG,       /* moves the agent's config directory */
    KR_RTVAR__COUNT
} kr_rtvar_role;

const char *kr_rtvar_role_name(kr_rtvar_role r);

typedef enum { KR_RTFMT_NONE = 0, KR_RTFMT_JSON, KR_RTFMT_TOML } kr_rtfmt;

typedef struct kr_rt_list {
    char v[KR_RT_MAX_NAMES][64];
    size_t n;
} kr_rt_list;

typedef struct kr_runtime {
    char name[32];
    kr_proto proto;
    kr_rt_list aliases;
    kr_rt_list commands;
    kr_rt_list vars[KR_RTVAR__COUNT]; /* what it reads, by role */
    char config_files[KR_RT_MAX_NAMES][128];
    size_t nconfig_files;
    /* delivery */
    char set_base_url[64], set_bearer[64], set_api_key[64], set_oauth[64], set_model[64];
    char file[64]; /* "" = no file */
    kr_rtfmt format;
    char (*lines)[KR_RT_LINE];
    size_t nlines;
    char dir_env[64];
    char args[KR_RT_MAX_ARGS][128];
    size_t nargs;
    kr_rt_list remove_files;
    kr_rt_list set_env; /* "NAME=VALUE": set at every launch */
} kr_runtime;

typedef struct kr_runtimes {
    kr_runtime *rt;
    size_t n;
} kr_runtimes;

/* The shipped etc/runtimes.conf, compiled in. */
extern const char kr_runtimes_builtin[];

int kr_runtimes_parse(const char *text, size_t n, kr_runtimes **out, kr_diag *d);
/* path NULL or "": the built-in profiles. */
int kr_runtimes_load(const char *path, kr_runtimes **out, kr_diag *d);
void kr_runtimes_free(kr_runtimes *r);

/* A profile by name or alias, or NULL. */
const kr_runtime *kr_runtimes_find(const kr_runtimes *r, const char *name);
/* The profile whose `commands` holds the base name of argv0, or NULL. */
const kr_runtime *kr_runtimes_for_command(const kr_runtimes *r, const char *argv0);
/* True when any profile names var in the given role (proto < 0: any protocol). */
bool kr_runtimes_names(const kr_runtimes *r, const char *var, kr_rtvar_role role, int proto);
/* The first role any profile gives var, or -1. */
int kr_runtimes_role(const kr_runtimes *r, const char *var);
/* "a, b, c": every runtime name, for messages. */
void kr_runtimes_list_names(const kr_runtimes *r, char *out, size_t cap);

/*
 * Renders rt's file for an agent that must call base_url with the credential
 * in variable cred_var; model may be "" (its lines are left out). Values are
 * quoted for the file's format. KR_EINVAL when a value cannot be represented
 * (control bytes) or a line names an unknown ${...}.
 */
int kr_runtime_render_file(const kr_runtime *rt, const char *base_url, const char *cred_var,
                           const char *model, kr_buf *out, kr_diag *d);

#endif
