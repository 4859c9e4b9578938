/*
 * config.h -- keyrail's settings, from one table.
 *
 * The table in config.c (section, key, type, default, range, help) is the
 * single source for parsing the config file, the KEYRAIL_<SECTION>_<KEY>
 * environment overrides, `keyrail config` (prints every setting with its
 * value and origin) and docs/CONFIG.md. Precedence: built-in default <
 * config file < environment < command-line flags (--db, --listen, …).
 */
#ifndef KR_CONFIG_H
#define KR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define KR_CONFIG_MAX_PROVIDER_URLS 16

typedef struct kr_config {
    /* [store] */
    char store_url[512];
    /* [secrets] */
    char master_key_file[512];
    /* [registry] */
    char registry_file[512];
    char runtimes_file[512];
    /* [server] */
    char listen[128];
    char public_url[256];
    char admin_listen[128];
    int64_t admin_session_ms;
    int64_t admin_secure_cookie;
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int64_t max_headers;
    int64_t header_timeout_ms;
    int64_t request_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t send_timeout_ms;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_timeout_ms;
    int64_t shutdown_grace_ms;
    int64_t workers; /* event loops; 0: one per CPU */
    int64_t max_connections;
    int64_t token_cache_ms;
    int64_t usage_sync;
    int64_t max_usage_event_bytes;
    char usage_journal[512];
    char log_file[512];
    char log_level[16];
    int64_t log_flush_ms;
    /* [upstream] */
    int64_t alerts_interval_ms;
    int64_t alerts_max_attempts;
    int64_t alerts_allow_private_urls;
    char otel_traces_endpoint[512];
    char otel_service_name[128];
    int64_t otel_batch_ms;
    int64_t otel_queue_spans;
    int64_t upstream_breaker_failures;
    int64_t upstream_breaker_cooldown_ms;
    char upstream_ca_file[512];
    char upstream_client[16];
    int64_t upstream_pool_size;
    int64_t upstream_idle_timeout_ms;
    /* [provision] */
    char concierge_default_model[128];
    char default_runtime[32];
    char operator_prefixes[512];
    /* where each setting came from, parallel to the table */
    unsigned char origin[64];
    /* per-provider overrides of the registry: [provider NAME] base_url = URL
     * in the file, KEYRAIL_PROVIDER_<NAME>_BASE_URL in the environment (NAME
     * upper-cased, other characters than letters and digits as '_') */
    struct {
        char provider[64]; /* the file's NAME, or the environment's <NAME> */
        char base_url[256];
        unsigned char origin; /* KR_CFG_FILE or KR_CFG_ENV */
    } provider_url[KR_CONFIG_MAX_PROVIDER_URLS];
    size_t nprovider_urls;
} kr_config;

enum { KR_CFG_DEFAULT = 0, KR_CFG_FILE = 1, KR_CFG_ENV = 2, KR_CFG_FLAG = 3 };

/* Defaults, then the file (if path is non-NULL), then the environment. */
int kr_config_load(kr_config *c, const char *path, kr_diag *d);
/* Sets one setting by "section.key" (used for flags). */
int kr_config_set(kr_config *c, const char *name, const char *value, int origin, kr_diag *d);
/* Prints every setting (value and origin) as a config file. */
void kr_config_dump(const kr_config *c, kr_buf *out);
/* Markdown reference table (docs/CONFIG.md is generated from it). */
void kr_config_reference(kr_buf *out);

struct kr_registry;
/* The provider registry of registry.file, with the per-provider overrides
 * applied: every user of the registry (the proxy, the provisioner, explain)
 * sees them. An override naming no provider of the registry is an error. */
int kr_config_load_registry(const kr_config *c, struct kr_registry **out, kr_diag *d);

#endif
