/*
 * registry.h -- the provider registry: which LLM providers exist, how to
 * reach them, which models they serve, what those cost.
 *
 * Loaded from a config file (etc/providers.conf is the shipped default; the
 * format is documented in docs/CONFIG.md):
 *
 *   [provider anthropic]                 [model claude-sonnet-4-5]
 *   protocol = anthropic                 provider = anthropic
 *   base_url = https://api.anthropic.com aliases = sonnet
 *   credential_env = ANTHROPIC_API_KEY   price_input = 3.00     (per 1M tokens)
 *   header = x-api-key                   price_output = 15.00
 *   platform = true                      price_cache_read = 0.30
 *   platform_key_env = KEYRAIL_…         price_cache_write = 3.75
 *   model_prefixes = claude-
 *
 * A provider with `platform = true` is platform-managed: keyrail's proxy
 * serves its models with the platform's key. Others are BYOK-only.
 */
#ifndef KR_REGISTRY_H
#define KR_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/usage.h"

#define KR_REG_MAX_LIST 8

typedef enum { KR_AUTH_X_API_KEY = 0, KR_AUTH_BEARER = 1, KR_AUTH_X_GOOG_API_KEY = 2 } kr_auth_style;

/* The header line prefix a key is sent with in this style ("x-api-key: ",
 * "Authorization: Bearer ", "x-goog-api-key: "). */
static inline const char *kr_auth_style_prefix(kr_auth_style s)
{
    return s == KR_AUTH_BEARER ? "Authorization: Bearer " : s == KR_AUTH_X_GOOG_API_KEY ? "x-goog-api-key: "
                                                                                        : "x-api-key: ";
}

/* A fallback deployment of a platform provider: another base URL (a region,
 * a cloud's endpoint, an egress gateway) with its own key pool. */
#define KR_REG_MAX_FALLBACKS 3
typedef struct kr_deployment {
    char base_url[256];
    char keys[KR_REG_MAX_LIST][64];
    int weight[KR_REG_MAX_LIST];
    size_t nkeys;
} kr_deployment;

typedef struct kr_provider {
    char name[32];
    kr_proto proto;
    char base_url[256];        /* upstream root; the protocol path is appended */
    char credential_env[KR_REG_MAX_LIST][64]; /* tenant-side env names of its key, in order */
    size_t ncredential_env;
    kr_auth_style header;      /* how its API takes the key */
    bool platform;             /* platform-managed */
    char platform_key_env[64]; /* server env var with the platform key (the pool's first) */
    /* the platform key pool: env var names and weights ("NAME*3"; 1 when
     * not given); requests spread over them (src/proxy/pool.c) */
    char platform_keys[KR_REG_MAX_LIST][64];
    int key_weight[KR_REG_MAX_LIST];
    size_t nplatform_keys;
    /* `fallback`, `fallback_2`, `fallback_3`: "URL [KEY[*W], ...]", tried in
     * order when the deployments before are failing (no keys: the primary's) */
    kr_deployment fallback[KR_REG_MAX_FALLBACKS];
    size_t nfallback;
    char model_prefixes[KR_REG_MAX_LIST][64];
    size_t nmodel_prefixes;
    char key_prefixes[KR_REG_MAX_LIST][32]; /* shapes of its keys, for credential classes */
    size_t nkey_prefixes;
} kr_provider;

typedef struct kr_model {
    char id[128];
    size_t provider; /* index into providers */
    char aliases[KR_REG_MAX_LIST][128];
    size_t naliases;
    bool priced;
    /* micro-units of currency per million tokens */
    int64_t price_input, price_output, price_cache_read, price_cache_write;
} kr_model;

typedef struct kr_registry {
    kr_provider *providers;
    size_t nproviders;
    kr_model *models;
    size_t nmodels;
} kr_registry;

#define KR_REGISTRY_MAX_PROVIDERS 64
#define KR_REGISTRY_MAX_MODELS 1024

int kr_registry_parse(const char *text, size_t n, kr_registry **out, kr_diag *d);
int kr_registry_load(const char *path, kr_registry **out, kr_diag *d);
void kr_registry_free(kr_registry *r);
/* Points a provider at another base URL (keyrail.conf's per-provider
 * override, applied by kr_config_load_registry): KR_EUNKNOWN_PROVIDER when
 * the registry has no such provider, KR_EPARSE for a URL the registry file
 * would refuse. */
int kr_registry_set_base_url(kr_registry *r, const char *provider, const char *url, kr_diag *d);

const kr_provider *kr_registry_provider(const kr_registry *r, const char *name);
/* The model entry for an id or alias, or NULL. */
const kr_model *kr_registry_model(const kr_registry *r, const char *name);
/* The provider that claims a model: its model entry's provider, else the
 * first provider with a matching model prefix; NULL when none does. */
const kr_provider *kr_registry_claim(const kr_registry *r, const char *model);
/* Like kr_registry_claim, preferring a provider that speaks proto (a model
 * several providers serve, e.g. DeepSeek over both protocols). proto < 0:
 * no preference. */
const kr_provider *kr_registry_claim_proto(const kr_registry *r, const char *model, int proto);
/* The provider that issued a credential of this shape (longest matching
 * key_prefixes entry), or NULL when no provider claims the shape. */
const kr_provider *kr_registry_key_issuer(const kr_registry *r, const char *value);
/* Cost in micro-units, rounded up to the next micro-unit. */
int64_t kr_model_cost(const kr_model *m, const kr_usage *u);

/* A platform provider's deployments: 0 is base_url with platform_key_env's
 * pool, 1.. its fallbacks, each with its own keys or, naming none, the
 * primary's. kr_provider_deployment fills the view of deployment d. */
typedef struct kr_deployment_view {
    const char *base_url;
    const char (*keys)[64];
    const int *weight;
    size_t nkeys;
} kr_deployment_view;
static inline size_t kr_provider_ndeployments(const kr_provider *p)
{
    return 1 + p->nfallback;
}
void kr_provider_deployment(const kr_provider *p, size_t d, kr_deployment_view *out);

#endif
