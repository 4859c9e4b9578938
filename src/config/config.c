#include "config/config.h"
#include "core/ini.h"
#include "registry/registry.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { T_STR, T_INT } opt_type;

typedef struct {
    const char *section, *key;
    opt_type type;
    size_t off, size;
    const char *def;
    int64_t min, max;
    const char *help;
} opt;

#define S(sec, k, field, dflt, h)                                                                  \
    {sec, k, T_STR, offsetof(kr_config, field), sizeof(((kr_config *)0)->field), dflt, 0, 0, h}
#define I(sec, k, field, dflt, lo, hi, h)                                                          \
    {sec, k, T_INT, offsetof(kr_config, field), sizeof(int64_t), dflt, lo, hi, h}

/* The shipped registry: in the source tree (KR_DEFAULT_REGISTRY) and where
 * `meson install` puts it (KR_INSTALLED_REGISTRY, under the prefix's datadir). */
#ifndef KR_DEFAULT_REGISTRY
#define KR_DEFAULT_REGISTRY "etc/providers.conf"
#endif
#ifndef KR_INSTALLED_REGISTRY
#define KR_INSTALLED_REGISTRY "/usr/local/share/keyrail/providers.conf"
#endif
#ifndef KR_BUILD_ROOT
#define KR_BUILD_ROOT ""
#endif
#define REGISTRY_DEFAULT_DOC                                                                       \
    "<datadir>/keyrail/providers.conf (the installed one; in the build tree: <source>/etc/providers.conf)"

/* registry.file's default: the source tree's registry for a keyrail binary
 * that runs from the build tree it was built in, the installed one for any
 * other (an installed keyrail). */
static const char *default_registry(void)
{
    static const char *chosen; /* once per process */
    if (chosen) return chosen;
    static const char build_root[] = KR_BUILD_ROOT;
    char exe[PATH_MAX], root[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    chosen = KR_INSTALLED_REGISTRY;
    if (n > 0 && sizeof build_root > 1 && realpath(build_root, root)) {
        exe[n] = 0;
        size_t rl = strlen(root);
        if (!strncmp(exe, root, rl) && exe[rl] == '/') chosen = KR_DEFAULT_REGISTRY;
    }
    return chosen;
}

static const opt opts[] = {
    S("store", "url", store_url, "keyrail.db",
      "Store: a SQLite file path (or sqlite:PATH), or a postgres:// URL."),
    S("secrets", "master_key_file", master_key_file, "",
      "File holding the 32-byte master key as 64 hex digits, mode 0600. KEYRAIL_MASTER_KEY "
      "takes precedence."),
    S("registry", "file", registry_file, NULL,
      "Provider registry file. `meson install` installs the shipped one under the prefix's "
      "datadir (replaced on upgrade): copy it elsewhere to edit it, or override a provider's "
      "base URL below."),
    S("registry", "runtimes_file", runtimes_file, "",
      "Agent runtime profiles (docs/CONFIG.md, \"Runtime profiles\"). Empty: the profiles built "
      "into keyrail (etc/runtimes.conf)."),
    S("server", "listen", listen, "127.0.0.1:8080", "Address the proxy listens on (HOST:PORT)."),
    S("server", "admin_listen", admin_listen, "",
      "Where the admin API (/admin/v1) and the web console (/console) are served: HOST:PORT for "
      "a listener of their own (keep it off the workspace network: 127.0.0.1:8081 or a "
      "management address), 'main' for the proxy's listener, empty (the default) for nowhere."),
    I("server", "admin_session_ms", admin_session_ms, "28800000", 60000, 604800000,
      "A console sign-in lasts this long (never longer than its admin token)."),
    I("server", "admin_secure_cookie", admin_secure_cookie, "2", 0, 2,
      "The console's session cookie is Secure: 1 always, 0 never, 2 when the request came over "
      "TLS through a proxy that says so (X-Forwarded-Proto: https)."),
    S("server", "public_url", public_url, "",
      "URL workspaces use to reach this proxy; put into platform-route environments. Empty: "
      "http://<listen>."),
    I("server", "max_body_bytes", max_body_bytes, "33554432", 1024, 1LL << 32,
      "Largest request body accepted (413 beyond)."),
    I("server", "max_header_bytes", max_header_bytes, "65536", 1024, 1 << 20,
      "Largest request head (request line + headers) accepted (431 beyond)."),
    I("server", "max_headers", max_headers, "64", 8, 64, "Most header fields per request (431 beyond)."),
    I("server", "header_timeout_ms", header_timeout_ms, "10000", 100, 3600000,
      "A client must send a complete request head within this time, and a request body may not "
      "pause longer than this (408 and the connection closed)."),
    I("server", "request_timeout_ms", request_timeout_ms, "60000", 1000, 3600000,
      "A whole request, head and body, must arrive within this time of its first byte, however "
      "steadily it trickles (408 and the connection closed). 60 s admits a 200 KB agent request "
      "at 4 KB/s, but a body of the default server.max_body_bytes (32 MiB) only at 0.56 MB/s or "
      "faster: raise it with max_body_bytes for slow links."),
    I("server", "idle_timeout_ms", idle_timeout_ms, "60000", 100, 3600000,
      "Keep-alive connections idle this long are closed."),
    I("server", "send_timeout_ms", send_timeout_ms, "60000", 100, 3600000,
      "A client that accepts no response bytes for this long is dropped."),
    I("server", "upstream_connect_timeout_ms", upstream_connect_timeout_ms, "10000", 100, 600000,
      "Connecting to an upstream vendor (502 beyond)."),
    I("server", "upstream_timeout_ms", upstream_timeout_ms, "600000", 100, 86400000,
      "Upstream silent this long (no header or body byte) is abandoned (504, or the stream ends)."),
    I("server", "shutdown_grace_ms", shutdown_grace_ms, "30000", 0, 3600000,
      "On SIGTERM, running requests get this long to finish."),
    I("server", "workers", workers, "0", 0, 64,
      "Event loops serving the proxy, each on its own thread with its own listening socket on "
      "the same port (SO_REUSEPORT), upstream connections, token cache and store workers. 0: "
      "one per CPU this process may run on. Admission state and the usage writer are shared "
      "(docs/PERFORMANCE.md)."),
    I("server", "max_connections", max_connections, "10000", 1, 1000000,
      "Client connections beyond this are refused (counted over every event loop of the "
      "instance)."),
    I("server", "token_cache_ms", token_cache_ms, "1000", 0, 600000,
      "How long a token lookup is cached; bounds how late a revocation on another instance is "
      "seen. 0 disables the cache."),
    I("server", "usage_sync", usage_sync, "1", 0, 1,
      "1: every usage record is appended to the usage journal (one write) before its response "
      "ends, so every response a client saw complete has its usage row, even after kill -9 "
      "(the journal is replayed at start). 0: no journal; a crash can lose the rows of the "
      "last batch window."),
    I("server", "max_usage_event_bytes", max_usage_event_bytes, "8388608", 65536, 268435456,
      "Largest response part read for usage: one server-sent event (the Responses API's final "
      "event repeats the whole response) or a whole non-streamed body. Beyond it the response "
      "still reaches the client; its usage row is recorded with status unreadable, logged and "
      "counted in keyrail_usage_unreadable_total."),
    S("server", "usage_journal", usage_journal, "",
      "Usage journal file (one per instance). Empty: the SQLite store path + \"-usage-journal\", "
      "or keyrail-usage.journal in the working directory for PostgreSQL. The file is locked while "
      "keyrail runs: a second instance given the same journal refuses to start."),
    S("server", "log_file", log_file, "-", "JSON log destination; '-' is stderr."),
    S("server", "log_level", log_level, "info", "debug, info, warn, error or off."),
    I("server", "log_flush_ms", log_flush_ms, "100", 0, 10000,
      "Request log lines are written in batches at least this often (a crash can lose the "
      "last ones); warnings and errors are written at once. 0: every line at once."),
    S("upstream", "ca_file", upstream_ca_file, "",
      "CA certificates (a PEM bundle) that vendors' TLS certificates are verified against, "
      "instead of the system CA store: only these are trusted. Empty: the system CA store. "
      "keyrail refuses to start when the file cannot be read or holds no certificate. "
      "Certificate and host name verification cannot be turned off; a failure is a 502 naming "
      "the cause."),
    S("upstream", "client", upstream_client, "native",
      "native: keyrail's own HTTP/1.1 client (a keep-alive pool per vendor, OpenSSL with the "
      "same verification); curl: libcurl (HTTP/2 where the vendor offers it). When a proxy "
      "variable (https_proxy, HTTPS_PROXY, http_proxy, all_proxy, ALL_PROXY) is set at start, "
      "serve uses libcurl whatever this says, and logs so: only libcurl speaks to egress "
      "proxies."),
    I("upstream", "breaker_failures", upstream_breaker_failures, "5", 1, 1000,
      "A platform deployment (a provider's base_url or one of its fallbacks) that fails this many "
      "requests in a row (no connection, or an answer >= 500) is skipped for "
      "breaker_cooldown_ms, then gets one probe request (docs/PROXY.md, \"Platform deployments "
      "and key pools\")."),
    I("upstream", "breaker_cooldown_ms", upstream_breaker_cooldown_ms, "30000", 100, 3600000,
      "How long an open circuit skips its deployment before one probe request."),
    I("upstream", "pool_size", upstream_pool_size, "256", 0, 100000,
      "native client: idle keep-alive connections kept per vendor origin (more are closed "
      "when their request ends). 0: no reuse."),
    I("upstream", "idle_timeout_ms", upstream_idle_timeout_ms, "20000", 1000, 3600000,
      "native client: an idle upstream connection is closed after this long (sooner when the "
      "vendor's Keep-Alive header says so)."),
    I("alerts", "interval_ms", alerts_interval_ms, "5000", 50, 3600000,
      "How often each instance checks budget and balance alerts and sends due webhooks."),
    I("alerts", "max_attempts", alerts_max_attempts, "12", 1, 100,
      "A webhook delivery is retried (backoff from 1 s doubling to 1 h) until this many "
      "attempts, then marked failed in the delivery log."),
    I("alerts", "allow_private_urls", alerts_allow_private_urls, "0", 0, 1,
      "1: webhooks may reach loopback, private and link-local addresses (an org admin names the "
      "URL: by default it cannot make keyrail call into the operator's network)."),
    S("otel", "traces_endpoint", otel_traces_endpoint, "",
      "OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces): one span per proxied "
      "request with the GenAI semantic conventions, exported as JSON in batches off the "
      "request path (docs/PROXY.md, \"Traces\"). Empty: no traces."),
    S("otel", "service_name", otel_service_name, "keyrail",
      "The spans' service.name."),
    I("otel", "batch_ms", otel_batch_ms, "1000", 10, 60000,
      "Spans are exported at least this often."),
    I("otel", "queue_spans", otel_queue_spans, "8192", 256, 1000000,
      "Spans waiting for export, over all event loops; beyond it spans are dropped and counted "
      "(keyrail_otel_spans_total{result=\"dropped\"})."),
    S("provision", "concierge_default_model", concierge_default_model, "",
      "Model a concierge gets when neither its payload nor the store names one. Empty: the "
      "platform route with the agent's own default model."),
    S("provision", "default_runtime", default_runtime, "claude-code",
      "Agent runtime for new workspaces (claude-code uses the anthropic protocol, codex openai)."),
    S("provision", "operator_prefixes", operator_prefixes, "OPERATOR_",
      "Comma-separated key prefixes reserved to the operator; such keys never reach a tenant."),
};

#define NOPTS (sizeof opts / sizeof opts[0])

static int set_opt(kr_config *c, size_t i, const char *value, int origin, kr_diag *d)
{
    const opt *o = &opts[i];
    char *field = (char *)c + o->off;
    if (o->type == T_STR) {
        if (kr_strlcpy(field, value, o->size))
            return kr_fail(d, KR_ECONFIG, "%s.%s: value longer than %zu bytes", o->section, o->key,
                           o->size - 1);
    } else {
        int64_t v;
        if (kr_parse_i64(value, strlen(value), &v) || v < o->min || v > o->max)
            return kr_fail(d, KR_ECONFIG, "%s.%s: '%s' is not an integer in [%lld, %lld]",
                           o->section, o->key, value, (long long)o->min, (long long)o->max);
        memcpy(field, &v, sizeof v);
    }
    c->origin[i] = (unsigned char)origin;
    return 0;
}

int kr_config_set(kr_config *c, const char *name, const char *value, int origin, kr_diag *d)
{
    const char *dot = strchr(name, '.');
    for (size_t i = 0; dot && i < NOPTS; i++)
        if (strlen(opts[i].section) == (size_t)(dot - name) &&
            !strncmp(opts[i].section, name, (size_t)(dot - name)) && !strcmp(opts[i].key, dot + 1))
            return set_opt(c, i, value, origin, d);
    return kr_fail(d, KR_ECONFIG, "unknown setting '%s'", name);
}

/* The environment's form of a provider name: upper case, '_' for the rest. */
static void provider_env_form(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++) {
        char ch = name[i];
        out[i] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32)
                 : ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) ? ch
                                                                         : '_';
    }
    out[i] = 0;
}

/* Records a per-provider base URL override (a later one for the same
 * provider and origin replaces it). */
static int set_provider_url(kr_config *c, const char *provider, const char *url, int origin,
                            kr_diag *d)
{
    if (strncmp(url, "https://", 8) && strncmp(url, "http://", 7))
        return kr_fail(d, KR_ECONFIG, "provider '%.64s': base_url must be http(s)://", provider);
    size_t i;
    for (i = 0; i < c->nprovider_urls; i++)
        if (c->provider_url[i].origin == origin && !strcmp(c->provider_url[i].provider, provider))
            break;
    if (i == KR_CONFIG_MAX_PROVIDER_URLS)
        return kr_fail(d, KR_ECONFIG, "at most %d provider base_url overrides",
                       KR_CONFIG_MAX_PROVIDER_URLS);
    if (kr_strlcpy(c->provider_url[i].provider, provider, sizeof c->provider_url[i].provider))
        return kr_fail(d, KR_ECONFIG, "provider name '%.64s' too long", provider);
    if (kr_strlcpy(c->provider_url[i].base_url, url, sizeof c->provider_url[i].base_url))
        return kr_fail(d, KR_ECONFIG, "provider '%s': base_url too long", provider);
    c->provider_url[i].origin = (unsigned char)origin;
    if (i == c->nprovider_urls) c->nprovider_urls++;
    return 0;
}

static int on_kv(void *ud, const char *section, const char *name, const char *key,
                 const char *value, int line, kr_diag *d)
{
    kr_config *c = ud;
    if (!strcmp(section, "provider")) {
        /* [provider NAME] base_url = URL: the registry's provider, elsewhere */
        if (!name[0]) return kr_fail(d, KR_ECONFIG, "line %d: [provider NAME] needs a name", line);
        if (!key) return 0;
        if (strcmp(key, "base_url"))
            return kr_fail(d, KR_ECONFIG,
                           "line %d: [provider %s]: only base_url can be set here (the rest is "
                           "the registry's)",
                           line, name);
        kr_diag inner = {{0}};
        int rc = set_provider_url(c, name, value, KR_CFG_FILE, &inner);
        if (rc) return kr_fail(d, rc, "line %d: %s", line, inner.msg);
        return 0;
    }
    if (!key) return 0;
    if (name[0]) return kr_fail(d, KR_ECONFIG, "line %d: [%s %s]: sections take no label", line,
                                section, name);
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(opts[i].section, section) && !strcmp(opts[i].key, key)) {
            kr_diag inner = {{0}};
            int rc = set_opt(c, i, value, KR_CFG_FILE, &inner);
            if (rc) return kr_fail(d, rc, "line %d: %s", line, inner.msg);
            return 0;
        }
    return kr_fail(d, KR_ECONFIG, "line %d: unknown setting %s.%s", line, section[0] ? section : "-",
                   key);
}

static void env_name(const opt *o, char *out, size_t cap)
{
    kr_snprintf(out, cap, "KEYRAIL_%s_%s", o->section, o->key);
    for (char *p = out; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
}

int kr_config_load(kr_config *c, const char *path, kr_diag *d)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTS; i++) {
        int rc = set_opt(c, i, opts[i].def ? opts[i].def : default_registry(), KR_CFG_DEFAULT, d);
        if (rc) return rc;
    }
    if (path) {
        char *text;
        size_t n;
        int rc = kr_read_file(path, KR_INI_MAX_BYTES, &text, &n, d);
        if (rc) return rc;
        kr_diag inner = {{0}};
        rc = kr_ini_parse(text, n, on_kv, c, &inner);
        free(text);
        if (rc) return kr_fail(d, rc, "%s: %s", path, kr_diag_msg(&inner, rc));
    }
    for (size_t i = 0; i < NOPTS; i++) {
        char name[96];
        env_name(&opts[i], name, sizeof name);
        const char *v = getenv(name);
        if (v) {
            kr_diag inner = {{0}};
            int rc = set_opt(c, i, v, KR_CFG_ENV, &inner);
            if (rc) return kr_fail(d, rc, "%s: %s", name, inner.msg);
        }
    }
    /* KEYRAIL_PROVIDER_<NAME>_BASE_URL (set and not empty) */
    static const char pre[] = "KEYRAIL_PROVIDER_", suf[] = "_BASE_URL";
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || strncmp(*e, pre, sizeof pre - 1) || !eq[1]) continue;
        size_t nl = (size_t)(eq - *e);
        if (nl <= sizeof pre - 1 + sizeof suf - 1 || strncmp(eq - (sizeof suf - 1), suf, sizeof suf - 1))
            continue;
        char prov[64];
        if (kr_memlcpy(prov, sizeof prov, *e + sizeof pre - 1, nl - (sizeof pre - 1) - (sizeof suf - 1)))
            return kr_fail(d, KR_ECONFIG, "%.*s: provider name too long", (int)nl, *e);
        kr_diag inner = {{0}};
        int rc = set_provider_url(c, prov, eq + 1, KR_CFG_ENV, &inner);
        if (rc) return kr_fail(d, rc, "%.*s: %s", (int)nl, *e, inner.msg);
    }
    return 0;
}

int kr_config_load_registry(const kr_config *c, kr_registry **out, kr_diag *d)
{
    kr_registry *r;
    int rc = kr_registry_load(c->registry_file, &r, d);
    if (rc) return rc;
    /* the file's overrides first, then the environment's (which win) */
    for (int origin = KR_CFG_FILE; origin <= KR_CFG_ENV; origin++)
        for (size_t i = 0; i < c->nprovider_urls; i++) {
            if (c->provider_url[i].origin != origin) continue;
            const char *want = c->provider_url[i].provider;
            char wenv[64];
            provider_env_form(want, wenv, sizeof wenv);
            const kr_provider *p = NULL;
            /* the registry's name, else the same name in the variable's form */
            for (size_t k = 0; k < r->nproviders && !p; k++)
                if (!strcmp(r->providers[k].name, want)) p = &r->providers[k];
            for (size_t k = 0; k < r->nproviders && !p; k++) {
                char env[64];
                provider_env_form(r->providers[k].name, env, sizeof env);
                if (!strcmp(env, wenv)) p = &r->providers[k];
            }
            kr_diag inner = {{0}};
            rc = p ? kr_registry_set_base_url(r, p->name, c->provider_url[i].base_url, &inner)
                   : kr_fail(&inner, KR_ECONFIG, "the registry %s has no provider '%s'",
                             c->registry_file, want);
            if (rc) {
                kr_registry_free(r);
                if (origin == KR_CFG_FILE)
                    return kr_fail(d, rc, "config [provider %s] base_url: %s", want, inner.msg);
                return kr_fail(d, rc, "KEYRAIL_PROVIDER_%s_BASE_URL: %s", want, inner.msg);
            }
        }
    *out = r;
    return 0;
}

static const char *origin_name(int o)
{
    static const char *const n[] = {"default", "file", "env", "flag"};
    return n[o & 3];
}

/* Overrides, as sections that load back: the environment's wins over the
 * file's for the same provider; an environment name is shown lower-cased
 * (it matches the registry's name the way the variable does). */
static void dump_provider_urls(const kr_config *c, kr_buf *out)
{
    for (size_t i = 0; i < c->nprovider_urls; i++) {
        char a[64], b[64];
        provider_env_form(c->provider_url[i].provider, a, sizeof a);
        bool shadowed = false;
        for (size_t k = 0; k < c->nprovider_urls && c->provider_url[i].origin == KR_CFG_FILE; k++) {
            provider_env_form(c->provider_url[k].provider, b, sizeof b);
            shadowed |= c->provider_url[k].origin == KR_CFG_ENV && !strcmp(a, b);
        }
        if (shadowed) continue;
        char name[64];
        kr_strlcpy(name, c->provider_url[i].provider, sizeof name);
        if (c->provider_url[i].origin == KR_CFG_ENV)
            for (char *p = name; *p; p++)
                if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
        kr_buf_printf(out, "\n[provider %s]\n# %s\nbase_url = %s\n", name,
                      origin_name(c->provider_url[i].origin), c->provider_url[i].base_url);
    }
}

void kr_config_dump(const kr_config *c, kr_buf *out)
{
    const char *sec = "";
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        if (strcmp(sec, o->section)) {
            kr_buf_printf(out, "%s[%s]\n", i ? "\n" : "", o->section);
            sec = o->section;
        }
        const char *field = (const char *)c + o->off;
        kr_buf_printf(out, "# %s\n", origin_name(c->origin[i])); /* own line: loadable back */
        if (o->type == T_STR) kr_buf_printf(out, "%s = %s\n", o->key, field);
        else {
            int64_t v;
            memcpy(&v, field, sizeof v);
            kr_buf_printf(out, "%s = %lld\n", o->key, (long long)v);
        }
    }
    dump_provider_urls(c, out);
}

void kr_config_reference(kr_buf *out)
{
    kr_buf_puts(out, "| setting | type | default | environment | meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        char env[96];
        env_name(o, env, sizeof env);
        /* the registry's default depends on where keyrail runs from: name it */
        const char *def = o->def ? o->def : REGISTRY_DEFAULT_DOC;
        kr_buf_printf(out, "| `%s.%s` | %s | `%s` | `%s` | %s", o->section, o->key,
                      o->type == T_STR ? "string" : "integer", def, env, o->help);
        if (o->type == T_INT)
            kr_buf_printf(out, " Range %lld..%lld.", (long long)o->min, (long long)o->max);
        kr_buf_puts(out, " |\n");
    }
    kr_buf_puts(out,
                "| `provider.NAME.base_url` (section `[provider NAME]`) | string | the registry's "
                "`base_url` | `KEYRAIL_PROVIDER_<NAME>_BASE_URL` | Points registry provider NAME at "
                "another API root (a staging vendor, an egress gateway) without copying the "
                "registry; applied when the registry is loaded, so the proxy, provisioning and "
                "`explain` all use it. In the variable NAME is upper-cased, other characters than "
                "letters and digits become `_`; an empty variable is ignored. Naming a provider the "
                "registry lacks is an error. Repeatable, one per provider. |\n");
}
