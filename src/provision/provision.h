/*
 * provision.h -- provider resolution and the environment a workspace gets.
 *
 * One code path for a fresh create and for a rebuild from the store:
 *
 *   kr_provision()  load the workspace's secrets (three-state, ws over org)
 *                   -> overlay the payload (fresh create only)
 *                   -> kr_resolve()   pure: which route, provider, model, why
 *                   -> kr_env_build() pure: the environment, credential rules
 *                   -> persist the payload and the concierge pin, only if all
 *                      of the above succeeded (an error writes nothing)
 *
 * The rules (SYSTEM.md, "Provider resolution"):
 *   R1  a stored LLM_PROVIDER that reads back is the answer; an unreadable one
 *       (or any unreadable secret) aborts with SECRET_UNREADABLE
 *   R2  effective model = payload MODEL, else stored MODEL, else the concierge
 *       default (concierge only)
 *   R3  empty or platform-managed model -> platform; a concierge gets the pin
 *       LLM_PROVIDER=platform persisted
 *   R4  a model of a non-platform provider -> BYOK with that provider, whose
 *       credential must be present (MISSING_BYOK_CREDENTIAL)
 *   R5  UNKNOWN_MODEL, MISSING_MODEL, MISSING_PLATFORM_PROXY
 *   R6  BYOK goes through keyrail's proxy (the default: the workspace holds
 *       a workspace token, the proxy forwards with the org's key), or, with
 *       BYOK_ROUTE=direct (org or workspace scope), straight to the vendor
 *       with the key in the environment
 * Environment rules: every variable a runtime profile names as steering a
 * credential (base URL, credential, headers, provider, config) and every
 * vendor credential is removed from the stored values; the platform route
 * then sets, for every runtime profile, its base URL variable to the proxy
 * and its bearer variable to the workspace token; BYOK through the proxy
 * does the same for every profile of the provider's protocol (the key is
 * never in the environment); direct BYOK sets, for every profile of the
 * provider's protocol, its base URL variable to the provider and the key in
 * the variable its class needs (OAuth, bearer, x-api-key); a forbidden key
 * aborts.
 */
#ifndef KR_PROVISION_H
#define KR_PROVISION_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/cred.h"
#include "core/err.h"
#include "core/usage.h"
#include "provision/forbidden.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "secrets/secrets.h"
#include "store/store.h"

/* Where a value came from. */
typedef enum {
    KR_ORIGIN_ORG = 0,     /* org-scope secret */
    KR_ORIGIN_WORKSPACE,   /* workspace-scope secret */
    KR_ORIGIN_PAYLOAD,     /* the create request */
    KR_ORIGIN_DEFAULT,     /* keyrail's config (concierge default model) */
    KR_ORIGIN_PROVISIONER, /* set by the provisioner (proxy URL, token, provider pin) */
    KR_ORIGIN_INHERITED,   /* launcher: the environment it was started with */
    KR_ORIGIN_LAUNCHER,    /* launcher: set by a runtime profile (a private config dir) */
} kr_origin;

const char *kr_origin_name(kr_origin o);

/* The placeholder the launcher replaces with the workspace token it holds. */
#define KR_TOKEN_PLACEHOLDER "${KEYRAIL_WORKSPACE_TOKEN}"

/* ---- inputs ---- */

typedef struct kr_secret_entry {
    char key[128];
    kr_secret_read read; /* effective value: workspace row if any, else org row */
    kr_origin origin;    /* KR_ORIGIN_ORG / _WORKSPACE / _PAYLOAD */
    bool overrides_org;  /* a workspace value hides an org value of this key */
} kr_secret_entry;

typedef struct kr_secrets {
    kr_secret_entry *e;
    size_t n, cap;
} kr_secrets;

void kr_secrets_free(kr_secrets *s);
/* Adds or replaces (a later scope overrides). value NULL = unreadable. */
void kr_secrets_put(kr_secrets *s, const char *key, kr_secret_state st, const char *value,
                       kr_origin origin);
const kr_secret_entry *kr_secrets_get(const kr_secrets *s, const char *key);
/* Loads org then workspace secrets (three-state). A store error while
 * listing is returned; an undecryptable row becomes an UNREADABLE entry. */
int kr_secrets_load(kr_store *st, const kr_master_key *mk, const kr_workspace *ws,
                       kr_secrets *out, kr_diag *d);

typedef struct kr_payload_var {
    const char *key, *value;
} kr_payload_var;

typedef struct kr_provision_ctx {
    const kr_registry *reg;
    const kr_runtimes *rts; /* agent runtime profiles */
    const kr_policy *policy;
    const char *proxy_url;               /* "" = none configured */
    const char *concierge_default_model; /* "" = none */
    bool dry_run;                        /* resolve and build, persist nothing (explain) */
} kr_provision_ctx;

/* What serving workspaces needs besides the store, loaded once (by serve
 * or the command line) and shared read-only: the proxy, the admin API and
 * the operations all read the same. */
struct kr_config;
typedef struct kr_plane {
    const struct kr_config *cfg;
    const kr_registry *reg;
    const kr_runtimes *rts;
    const kr_policy *pol;
    const kr_master_key *mk;
    const char *proxy_url; /* where workspaces reach the proxy ("" = none) */
    const struct kr_pools *pools; /* a running server's platform key pools; NULL elsewhere */
} kr_plane;

/* The provisioning context of a plane (persisting). */
kr_provision_ctx kr_plane_ctx(const kr_plane *p);

/* ---- resolution ---- */

typedef enum { KR_ROUTE_NONE = 0, KR_ROUTE_PLATFORM, KR_ROUTE_BYOK } kr_route;

static inline const char *kr_route_name(kr_route r)
{
    return r == KR_ROUTE_PLATFORM ? "platform" : r == KR_ROUTE_BYOK ? "byok" : "none";
}

#define KR_TRACE_MAX 16

typedef struct kr_trace_step {
    char rule[8];    /* "R1".."R6", "ENV", "PIN" */
    char text[320];  /* one line an operator can read */
} kr_trace_step;

typedef struct kr_resolution {
    int err; /* 0 or KR_E*; when set, msg says why */
    char msg[320];
    kr_route route;
    char runtime[32];  /* the workspace's runtime profile */
    char provider[32]; /* "platform" or the BYOK provider's name */
    kr_proto proto;    /* protocol the agent will speak */
    char model[128];   /* effective model, "" = the agent's default */
    kr_origin model_origin;
    bool model_present;
    bool pin_platform; /* persist LLM_PROVIDER=platform (concierge) */
    char credential_key[64]; /* BYOK: secret key that holds the provider's credential */
    bool byok_direct;        /* BYOK: the agent holds the key and calls the vendor (R6) */
    kr_origin byok_route_origin; /* where BYOK_ROUTE came from (default: unset) */
    kr_trace_step trace[KR_TRACE_MAX];
    size_t ntrace;
} kr_resolution;

/* Pure: decides from the secret set (with the payload already overlaid). */
void kr_resolve(const kr_provision_ctx *ctx, kr_ws_kind kind, const char *runtime,
                const kr_secrets *secrets, kr_resolution *out);

/* ---- environment ---- */

typedef struct kr_env_var {
    char *key, *value;
    kr_origin origin;
    kr_cred_class cls;
} kr_env_var;

typedef struct kr_env {
    kr_env_var *v;
    size_t n, cap;
} kr_env;

void kr_env_free(kr_env *e);
void kr_env_set(kr_env *e, const char *key, const char *value, kr_origin origin);
void kr_env_unset(kr_env *e, const char *key);
const kr_env_var *kr_env_get(const kr_env *e, const char *key);
void kr_env_sort(kr_env *e);

/* True for a variable that steers where an agent sends its credential or
 * which credential it sends: a base URL, credential, header, provider or
 * config variable of any runtime profile, or a registry provider's
 * credential variable. The provisioner sets these itself; stored values of
 * them are never passed on. */
bool kr_env_is_agent_var(const kr_provision_ctx *ctx, const char *key);
/* The credential class of a variable: its value's shape, or "unknown" for a
 * credential-named variable whose shape is not recognised. */
kr_cred_class kr_env_var_class(const kr_runtimes *rts, const kr_registry *reg, const char *key,
                               const char *value);

/*
 * Pure: builds the environment for a resolution. token is the workspace
 * token, or NULL for KR_TOKEN_PLACEHOLDER. Returns 0 or KR_EFORBIDDEN_KEY
 * (d names the key). Every removal is added to the resolution's trace.
 */
int kr_env_build(const kr_provision_ctx *ctx, const kr_secrets *secrets, kr_resolution *res,
                 const char *token, kr_env *out, kr_diag *d);

/* ---- the whole thing, against the store ---- */

typedef struct kr_provision_result {
    kr_workspace ws;
    kr_resolution res;
    kr_env env;
    kr_secrets secrets; /* the inputs, for explain */
} kr_provision_result;

/*
 * payload == NULL: rebuild from the store. Otherwise a fresh create: the
 * payload variables are overlaid (origin payload) and persisted at
 * workspace scope once everything succeeded. Returns 0 or the resolution's
 * error (res.msg / d say why); on error nothing is written.
 */
int kr_provision(kr_store *st, const kr_master_key *mk, const kr_provision_ctx *ctx,
                 const kr_workspace *ws, const kr_payload_var *payload, size_t npayload,
                 const char *token, kr_provision_result *out, kr_diag *d);
void kr_provision_result_free(kr_provision_result *r);

/* Renders the environment: "env" (KEY=value lines, shell-quoted) or JSON. */
void kr_env_render_env(const kr_env *e, kr_buf *out);
void kr_provision_render_json(const kr_provision_result *r, bool with_values, kr_buf *out);

#endif
