/*
 * serve.c -- `keyrail serve`: start, mounts, signals, drain, stop (serve.h).
 */
#include "serve/serve.h"
#include "core/log.h"

#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* ---- shutdown ---- */

static void stop_everything(kr_serve *s)
{
    if (s->stopped) return;
    s->stopped = true;
    kr_http_close_all(&s->http);
    uv_timer_stop(&s->drain_timer);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    if (s->cfg->log_flush_ms > 0) {
        uv_timer_stop(&s->log_timer);
        uv_close((uv_handle_t *)&s->log_timer, NULL);
    }
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    kr_proxy_stop(&s->proxy);
    kr_workq_stop(s->workers);
    s->workers = NULL;
    kr_meter_stop(s->meter); /* flushes every usage row */
    s->meter = NULL;
}

static void on_drain_tick(uv_timer_t *t)
{
    kr_serve *s = t->data;
    uint64_t now = uv_now(s->loop);
    if (!s->drain_deadline) s->drain_deadline = now + (uint64_t)s->cfg->shutdown_grace_ms;
    /* idle keep-alive connections go now; busy ones finish */
    if (kr_http_close_idle(&s->http) == 0) {
        KR_INFO("drained: every request finished");
        stop_everything(s);
    } else if (now >= s->drain_deadline) {
        KR_WARN("shutdown grace of %lld ms over: closing %lld connection(s)",
                (long long)s->cfg->shutdown_grace_ms, (long long)s->http.metrics.open_connections);
        stop_everything(s);
    }
}

static void on_signal(uv_signal_t *sig, int signum)
{
    kr_serve *s = sig->data;
    if (s->http.draining) {
        KR_WARN("second signal: stopping now");
        stop_everything(s);
        return;
    }
    KR_INFO("signal %d: draining (no new connections, running requests may finish within %lld ms)",
            signum, (long long)s->cfg->shutdown_grace_ms);
    kr_http_drain(&s->http);
    uv_timer_start(&s->drain_timer, on_drain_tick, 0, 50);
}

/* ---- start ---- */

static void on_log_flush(uv_timer_t *t)
{
    (void)t;
    kr_log_flush();
}

static const char *journal_path(const kr_config *cfg, char *buf, size_t cap)
{
    if (!cfg->usage_sync) return NULL;
    if (cfg->usage_journal[0]) return cfg->usage_journal;
    const char *u = cfg->store_url;
    if (!strncmp(u, "postgres", 8)) return "keyrail-usage.journal";
    if (!strncmp(u, "sqlite:", 7)) u += 7;
    kr_snprintf(buf, cap, "%s-usage-journal", u);
    return buf;
}

/*
 * Request bodies (a Claude Code request is 50-200 KB) and libcurl's upload
 * buffer sized to them are allocated and freed per request. With glibc's
 * defaults (mmap above 128 KiB, the heap top trimmed above 128 KiB, both
 * thresholds moving with history) that churn can turn into brk/mmap and a
 * page fault per touched page on every request: measured here, 0.1 to 2.3
 * faults per request from run to run and up to 2.5x the CPU per stream.
 * Fixed thresholds keep such buffers in the heap. An operator's own
 * GLIBC_TUNABLES wins.
 */
static void tune_malloc(void)
{
    if (getenv("GLIBC_TUNABLES")) return;
    mallopt(M_MMAP_THRESHOLD, 4 << 20); /* above any body (server.max_body_bytes 1 MiB) */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

/* Every refusal to start is logged and, when the log is not stderr (or
 * would not show it), also written to stderr: an operator starting keyrail
 * by hand or under systemd sees why it did not start. Returns 1. */
static int refuse_to_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse_to_start(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    KR_ERROR("refusing to start: %s", msg);
    kr_log_flush();
    if (!kr_log_is_stderr() || kr_log_level > KR_LOG_ERROR) {
        kr_buf b = KR_BUF_INIT(4096);
        kr_redact(msg, strlen(msg), &b); /* like every log line */
        fprintf(stderr, "keyrail: refusing to start: %s\n", b.data ? b.data : "");
        kr_buf_free(&b);
    }
    return 1;
}

/* What start read and derived: the proxy's platform keys (wiped), the
 * registry, the runtime profiles, the master key (wiped); then s itself. */
static void serve_free(kr_serve *s)
{
    kr_proxy_free(&s->proxy);
    kr_registry_free(s->reg);
    kr_runtimes_free(s->rts);
    sodium_memzero(&s->mk, sizeof s->mk);
    free(s);
}

/* The mount tables (serve.h). */
static void mount(kr_serve *s)
{
    bool admin_main = !strcmp(s->cfg->admin_listen, "main");
    kr_http_start_fn adm = admin_main ? kr_admin_start : kr_proxy_not_here;
    kr_http_start_fn con = admin_main ? kr_console_start : kr_proxy_not_here;
    void *actx = admin_main ? (void *)&s->admin : (void *)&s->proxy;
    const kr_http_mount m[6] = {
        {"/healthz", false, kr_serve_healthz, s},
        {"/readyz", false, kr_serve_readyz, s},
        {"/metrics", false, kr_serve_metrics, s},
        {"/admin", true, adm, actx},
        {"/console", true, con, actx},
        {"", false, kr_proxy_start, &s->proxy},
    };
    memcpy(s->main_mounts, m, sizeof m);
    memcpy(s->admin_mounts, m, sizeof m);
    s->admin_mounts[3] = (kr_http_mount){"/admin", true, kr_admin_start, &s->admin};
    s->admin_mounts[4] = (kr_http_mount){"/console", true, kr_console_start, &s->admin};
}

int kr_serve_run(const kr_config *cfg, bool dev)
{
    char journal[600];
    tune_malloc();
    kr_diag d = {{0}};
    int rc;
    if ((rc = kr_upstream_check_config(cfg, &d))) {
        refuse_to_start("%s", d.msg);
        return 1;
    }
    kr_serve *s = kr_xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->loop = uv_default_loop();
    kr_http_server_init(&s->http, s->loop, cfg);
    s->http.refusal = kr_proxy_refusal;
    s->http.refusal_ctx = &s->proxy;
    bool created = false;
    if ((rc = kr_master_key_load(cfg->master_key_file, dev, &s->mk, &created, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    if (created)
        KR_WARN("DEVELOPMENT MODE: created a new master key at %s (mode 0600). Secrets encrypted "
                "with it are lost if it is lost. Never use --dev in production.",
                cfg->master_key_file);
    if ((rc = kr_config_load_registry(cfg, &s->reg, &d))) {
        refuse_to_start("registry: %s", d.msg);
        goto refused;
    }
    if ((rc = kr_runtimes_load(cfg->runtimes_file, &s->rts, &d))) {
        refuse_to_start("runtime profiles: %s", d.msg);
        goto refused;
    }
    for (size_t i = 0; i < cfg->nprovider_urls; i++)
        KR_INFO("provider '%s': base_url overridden by the %s (%s)", cfg->provider_url[i].provider,
                cfg->provider_url[i].origin == KR_CFG_ENV ? "environment" : "config file",
                cfg->provider_url[i].base_url);
    kr_policy_init(&s->pol);
    if ((rc = kr_policy_add_prefixes(&s->pol, cfg->operator_prefixes, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    /* the store must open (and migrate) before we listen */
    kr_store *probe;
    if ((rc = kr_store_open(cfg->store_url, &probe, &d))) {
        refuse_to_start("store: %s", d.msg);
        goto refused;
    }
    /* the console's first start: say how to sign in */
    kr_admin_token *admins = NULL;
    size_t nadmins = 1;
    if (cfg->admin_listen[0] && !kr_admin_token_list(probe, &admins, &nadmins, &d) && !nadmins)
        KR_INFO("no admin token yet: mint one with `keyrail admin-token mint --scope operator` "
                "(same config) and sign in to the console at http://%s/console",
                strcmp(cfg->admin_listen, "main") ? cfg->admin_listen : cfg->listen);
    free(admins);
    /* the master key must be the one the stored secrets are sealed under */
    rc = kr_master_key_verify(probe, &s->mk, &d);
    kr_store_close(probe);
    if (rc) {
        char buf[600];
        const char *origin = kr_master_key_origin(cfg->master_key_file, buf, sizeof buf);
        refuse_to_start("%s (the master key from %s): %s",
                        rc == KR_EWRONG_MASTER_KEY ? "wrong master key" : "key check", origin,
                        kr_diag_msg(&d, rc));
        goto refused;
    }
    /* bound now, served from uv_run on: nothing is accepted before the rest */
    mount(s);
    kr_http_listener *main_l, *admin_l = NULL;
    if ((rc = kr_http_listen(&s->http, cfg->listen, 1024, s->main_mounts, 6, &main_l, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    if (cfg->admin_listen[0] && strcmp(cfg->admin_listen, "main") &&
        (rc = kr_http_listen(&s->http, cfg->admin_listen, 128, s->admin_mounts, 6, &admin_l, &d))) {
        refuse_to_start("server.admin_listen: %s", d.msg);
        goto refused;
    }
    if ((rc = kr_workq_start(&s->workers, s->loop, cfg->store_url, 2, &d)) ||
        (rc = kr_meter_start(&s->meter, s->loop, cfg->store_url, journal_path(cfg, journal, sizeof journal), &d))) {
        refuse_to_start("store: %s", d.msg);
        goto refused;
    }
    if (cfg->public_url[0]) kr_strlcpy(s->proxy_url, cfg->public_url, sizeof s->proxy_url);
    else kr_snprintf(s->proxy_url, sizeof s->proxy_url, "http://127.0.0.1:%d", main_l->port);
    size_t ul = strlen(s->proxy_url);
    while (ul && s->proxy_url[ul - 1] == '/') s->proxy_url[--ul] = 0;
    kr_plane plane = {cfg, s->reg, s->rts, &s->pol, &s->mk, s->proxy_url};
    kr_proxy_env penv = {plane, s->workers, s->meter};
    if ((rc = kr_proxy_init(&s->proxy, &s->http, &penv, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    s->proxy_up = true;
    s->admin = (kr_admin){plane, s->workers};
    if (cfg->log_flush_ms > 0) {
        kr_log_set_buffered(true);
        uv_timer_init(s->loop, &s->log_timer);
        uv_timer_start(&s->log_timer, on_log_flush, (uint64_t)cfg->log_flush_ms,
                       (uint64_t)cfg->log_flush_ms);
    }
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    signal(SIGPIPE, SIG_IGN);
    KR_INFO("keyrail serving on %s port %d (store %s)", cfg->listen, main_l->port,
            strncmp(cfg->store_url, "postgres", 8) ? cfg->store_url : "postgres");
    if (admin_l)
        KR_INFO("admin API and console on %s port %d: /admin/v1, /console", cfg->admin_listen,
                admin_l->port);
    else if (!strcmp(cfg->admin_listen, "main"))
        KR_INFO("admin API and console on the proxy's listener: /admin/v1, /console");
    uv_run(s->loop, UV_RUN_DEFAULT);
    uv_run(s->loop, UV_RUN_NOWAIT);
    int loop_rc = uv_loop_close(s->loop);
    if (loop_rc) KR_WARN("event loop closed with open handles");
    serve_free(s);
    KR_INFO("keyrail stopped");
    kr_log_set_buffered(false);
    return 0;

refused:
    /* undo what was started, so a refusal exits clean (and leak-free) */
    if (s->proxy_up) kr_proxy_stop(&s->proxy);
    kr_meter_stop(s->meter);
    kr_workq_stop(s->workers);
    kr_http_drain(&s->http);
    uv_run(s->loop, UV_RUN_NOWAIT);
    uv_loop_close(s->loop);
    serve_free(s);
    return 1;
}
