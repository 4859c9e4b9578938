/*
 * launcher.h -- `keyrail run`'s rules: the environment, files and arguments
 * an agent gets.
 *
 * The launcher does not trust that the control plane got it right. From the
 * inherited environment, the provisioned payload and the runtime profiles
 * (runtime/runtime.h) it computes the exact environment the agent will be
 * exec'd with, the private config files some agents need, and the agent's
 * arguments, so that for each protocol (anthropic, openai) at most one
 * credential remains -- exactly one for every protocol the payload
 * configures -- and the host the agent will call is one that credential was
 * issued for. Credentials that do not belong are dropped, never moved to
 * another variable or host.
 *
 * Rules (each decision names one):
 *   L1  KEYRAIL_* variables (the launcher's own, the operator's) never reach
 *       the agent.
 *   L2  the payload's values win over inherited ones; its token placeholder
 *       becomes the workspace token the launcher holds.
 *   L3  a protocol whose base URL is the keyrail proxy keeps only the
 *       workspace token; every other credential of the protocol is dropped.
 *   L4  a protocol whose base URL is a vendor keeps only the payload's
 *       credential (the control plane chose host and key together), and only
 *       when its shape does not name another issuer; every inherited
 *       credential variable a profile names is dropped: an inherited value
 *       was not issued by the control plane for this workspace.
 *   L5  at most one credential per protocol, in the profiles' order.
 *   L6  inherited variables a profile names as extra headers, as a switch to
 *       another provider or host, as another base URL of a configured
 *       protocol, or as the config directory keyrail sets, are dropped: each
 *       could take a credential elsewhere or add a second one.
 *   L7  an inherited variable that is not a credential variable of a profile
 *       (unknown to the profiles, or a model or base URL variable) and whose
 *       value holds a credential of a known shape (kr_cred_find) is dropped.
 *   L8  runtime profiles with a file: the file is rendered for the host and
 *       the credential variable chosen above (never a credential value) into
 *       a private directory; dir_env points at it, and when the command is the
 *       profile's agent, its args are inserted after argv[0].
 *   L9  confined (`keyrail run --confine`): a protocol that calls the keyrail
 *       proxy calls it through keyrail run's relay inside the sandbox (the
 *       base URL's origin becomes the relay's, its path stays); every proxy
 *       variable points at keyrail run's CONNECT gate, NO_PROXY at loopback,
 *       and Node is told to use them (NODE_USE_ENV_PROXY=1).
 * Pure functions; the fuzz driver and the generated test call them directly.
 */
#ifndef KR_LAUNCHER_H
#define KR_LAUNCHER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/cred.h"
#include "core/err.h"
#include "core/usage.h"
#include "provision/provision.h"
#include "runtime/runtime.h"

#define KR_LAUNCH_MAX_DECISIONS 128
#define KR_LAUNCH_MAX_PAYLOAD (1u << 20)
#define KR_LAUNCH_MAX_VARS 4096

typedef enum { KR_ACT_KEEP = 0, KR_ACT_SET, KR_ACT_DROP } kr_action;

typedef struct kr_decision {
    char var[64];
    kr_action action;
    kr_cred_class cls;
    char fp[KR_FP_LEN];
    kr_origin origin; /* payload, inherited or launcher */
    char rule[4];
    char why[200];
} kr_decision;

typedef struct kr_proto_view {
    bool configured;       /* the payload set this protocol up */
    char base_url[512];    /* what the agent will call ("" = the SDK default) */
    char host[300];        /* origin of base_url (or of the vendor default) */
    bool to_proxy;         /* host is the keyrail proxy */
    char cred_var[64];     /* "" when no credential remains */
    char relay[300];       /* confined: the relay origin the agent calls instead of host */
    kr_cred_class cls;
    char fp[KR_FP_LEN];
} kr_proto_view;

/* A private config file for one runtime profile (rule L8). */
typedef struct kr_launch_file {
    const kr_runtime *rt;
    char dir[512];  /* <state_dir>/<runtime>-<8 hex of the content>; "" without a state dir */
    char path[600]; /* dir/file */
    kr_buf content; /* no credential value is ever in it */
} kr_launch_file;

typedef struct kr_launch_in {
    const kr_env *payload;
    const kr_env *inherited;
    const char *token;        /* the workspace token the launcher holds (may be NULL) */
    const char *proxy_origin; /* the keyrail server's origin when known (--server), else NULL */
    const kr_runtimes *rts;
    const char *state_dir; /* where private runtime dirs go; NULL: files are rendered only */
    char *const *argv;     /* the agent command (may be NULL) */
    int argc;
    const char *relay_origin; /* confined: the origin the agent reaches the proxy at (L9), else NULL */
    const char *gate_url;     /* confined: the CONNECT gate every proxy variable names (L9) */
} kr_launch_in;

typedef struct kr_launch {
    kr_env env; /* the agent's environment */
    kr_decision d[KR_LAUNCH_MAX_DECISIONS];
    size_t nd;
    kr_proto_view proto[KR_PROTO__COUNT]; /* indexed by kr_proto */
    char route[16];         /* payload LLM_PROVIDER, "" if none */
    kr_launch_file files[KR_RT_MAX];
    size_t nfiles;
    const kr_runtime *agent; /* the profile whose command argv[0] is, or NULL */
    char **argv;             /* the command with the agent's args inserted; NULL-terminated */
    int argc;
    size_t nadded;           /* arguments inserted after argv[0] */
} kr_launch;

/* Parses a payload: the JSON of `keyrail provision --format json` / the
 * server's /v1/workspace/env, or the KEY='value' lines of --format env.
 * Bounded (KR_LAUNCH_MAX_PAYLOAD bytes, KR_LAUNCH_MAX_VARS variables). */
int kr_payload_parse(const char *text, size_t n, kr_env *out, kr_diag *d);

/* Applies the rules. Returns 0, or KR_EINVAL when the payload needs a token
 * the launcher does not have or a file cannot be rendered. */
int kr_launch_compute(const kr_launch_in *in, kr_launch *out, kr_diag *d);
void kr_launch_free(kr_launch *l);

/* The SDK default base URL of a protocol. */
const char *kr_launch_default_url(kr_proto p);
/* The host a credential of this shape was issued for, or NULL. */
const char *kr_launch_issuer(kr_cred_class cls);
/* The variable that carries a protocol's base URL (the first profile's). */
const char *kr_launch_base_var(const kr_runtimes *rts, kr_proto p);

void kr_launch_render_text(const kr_launch *l, kr_buf *out);
void kr_launch_render_json(const kr_launch *l, kr_buf *out);

#endif
