/*
 * launcher.h -- `keyrail run`'s rules: the environment an agent gets.
 *
 * The launcher does not trust that the control plane got it right. From the
 * inherited environment and the provisioned payload it computes the exact
 * environment the agent will be exec'd with, so that for each protocol
 * (anthropic, openai) at most one credential remains -- exactly one for
 * every protocol the payload configures -- and the host the agent will call
 * is one that credential was issued for. Credentials that do not belong are
 * dropped, never moved to another variable or host.
 *
 * Rules (each decision names one):
 *   L1  KEYRAIL_* variables (the launcher's own, the operator's) never reach
 *       the agent.
 *   L2  the payload's values win over inherited ones; its token placeholder
 *       becomes the workspace token the launcher holds.
 *   L3  a protocol whose base URL is the keyrail proxy keeps only the
 *       workspace token; CLAUDE_CODE_OAUTH_TOKEN and every other
 *       Anthropic/OpenAI credential is dropped.
 *   L4  a protocol whose base URL is a vendor keeps a credential only if it
 *       was issued for that host: the payload's own (the control plane chose
 *       host and key together), or an inherited one whose shape names that
 *       host as issuer (sk-ant-… -> api.anthropic.com, sk-proj-… ->
 *       api.openai.com). Unknown shapes from the inherited environment are
 *       dropped: their issuer cannot be shown.
 *   L5  at most one credential per protocol: the payload's, else the first of
 *       ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, CLAUDE_CODE_OAUTH_TOKEN.
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

#define KR_LAUNCH_MAX_DECISIONS 64
#define KR_LAUNCH_MAX_PAYLOAD (1u << 20)
#define KR_LAUNCH_MAX_VARS 4096

typedef enum { KR_ACT_KEEP = 0, KR_ACT_SET, KR_ACT_DROP } kr_action;

typedef struct kr_decision {
    char var[64];
    kr_action action;
    kr_cred_class cls;
    char fp[KR_FP_LEN];
    kr_origin origin; /* payload or inherited */
    char rule[4];
    char why[200];
} kr_decision;

typedef struct kr_proto_view {
    bool configured;       /* the payload set this protocol up */
    char base_url[512];    /* what the agent will call ("" = the SDK default) */
    char host[300];        /* origin of base_url (or of the vendor default) */
    bool to_proxy;         /* host is the keyrail proxy */
    char cred_var[64];     /* "" when no credential remains */
    kr_cred_class cls;
    char fp[KR_FP_LEN];
} kr_proto_view;

typedef struct kr_launch {
    kr_env env; /* the agent's environment */
    kr_decision d[KR_LAUNCH_MAX_DECISIONS];
    size_t nd;
    kr_proto_view proto[2]; /* indexed by kr_proto */
    char route[16];         /* payload LLM_PROVIDER, "" if none */
} kr_launch;

/* Parses a payload: the JSON of `keyrail provision --format json` / the
 * server's /v1/workspace/env, or the KEY='value' lines of --format env.
 * Bounded (KR_LAUNCH_MAX_PAYLOAD bytes, KR_LAUNCH_MAX_VARS variables). */
int kr_payload_parse(const char *text, size_t n, kr_env *out, kr_diag *d);

/* Applies the rules. proxy_origin: the keyrail server's origin when known
 * (--server), else NULL (then a platform payload's base URL is the proxy).
 * token: the workspace token the launcher holds (may be NULL). Returns 0, or
 * KR_EINVAL when the payload needs a token the launcher does not have. */
int kr_launch_compute(const kr_env *payload, const kr_env *inherited, const char *token,
                      const char *proxy_origin, kr_launch *out, kr_diag *d);
void kr_launch_free(kr_launch *l);

/* The credential variables of a protocol, in L5 precedence order. */
extern const char *const kr_launch_cred_vars[2][3];
extern const size_t kr_launch_ncred_vars[2];
/* The SDK default base URL of a protocol. */
const char *kr_launch_default_url(kr_proto p);
/* The host a credential of this shape was issued for, or NULL. */
const char *kr_launch_issuer(kr_cred_class cls);

void kr_launch_render_text(const kr_launch *l, kr_buf *out);
void kr_launch_render_json(const kr_launch *l, kr_buf *out);

#endif
