/*
 * serve.c -- `keyrail serve`: start, each loop's parts and mounts, the
 * stop (serve.h; the loops themselves run in serve_loops.c).
 */
#include "serve/serve.h"
#include "alerts/alerts.h"
#include "core/log.h"

#include <malloc.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* ---- start ---- */

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

/*
 * Every open stream holds two descriptors (the client's connection and the
 * upstream one). The soft limit is raised to the hard one (as nginx's
 * worker_rlimit_nofile would be set by hand); when even that cannot carry
 * server.max_connections streams, the operator is told at start, not by
 * 502s ("too many open files") under load.
 */
static void raise_nofile(const kr_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t need = 2 * (uint64_t)cfg->max_connections + 256;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        KR_WARN("the file descriptor limit (%llu) carries about %llu concurrent streams (two "
                "descriptors each), fewer than server.max_connections (%lld): raise it "
                "(LimitNOFILE= in the unit, ulimit -n) to at least %llu, or lower "
                "server.max_connections (docs/DEPLOYMENT.md)",
                (unsigned long long)rl.rlim_cur,
                (unsigned long long)(rl.rlim_cur > 256 ? (rl.rlim_cur - 256) / 2 : 0),
                (long long)cfg->max_connections, (unsigned long long)need);
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

/* What start read and derived: each loop's proxy (its platform keys,
 * wiped) and the loop itself, the admission state, the registry, the
 * runtime profiles, the master key (wiped); then s itself. */
static void serve_free(kr_serve *s)
{
    for (int i = 0; i < s->nloops; i++) {
        kr_serve_loop *l = s->loops[i];
        if (!l) continue;
        kr_proxy_free(&l->proxy);
        pthread_mutex_destroy(&l->mu);
        free(l);
    }
    kr_limits_free(s->limits);
    kr_pools_free(s->pools);
    kr_registry_free(s->reg);
    kr_runtimes_free(s->rts);
    sodium_memzero(&s->mk, sizeof s->mk);
    free(s);
}

/* A loop's mount tables (serve.h). */
static void mount(kr_serve_loop *l)
{
    kr_serve *s = l->s;
    bool admin_main = !strcmp(s->cfg->admin_listen, "main");
    kr_http_start_fn adm = admin_main ? kr_admin_start : kr_proxy_not_here;
    kr_http_start_fn con = admin_main ? kr_console_start : kr_proxy_not_here;
    void *actx = admin_main ? (void *)&l->admin : (void *)&l->proxy;
    const kr_http_mount m[6] = {
        {"/healthz", false, kr_serve_healthz, l},
        {"/readyz", false, kr_serve_readyz, l},
        {"/metrics", false, kr_serve_metrics, l},
        {"/admin", true, adm, actx},
        {"/console", true, con, actx},
        {"", false, kr_proxy_start, &l->proxy},
    };
    memcpy(l->main_mounts, m, sizeof m);
    memcpy(l->admin_mounts, m, sizeof m);
    l->admin_mounts[3] = (kr_http_mount){"/admin", true, kr_admin_start, &l->admin};
    l->admin_mounts[4] = (kr_http_mount){"/console", true, kr_console_start, &l->admin};
}

/* The number of event loops: server.workers, or one per CPU this process
 * may run on. */
static int loop_count(const kr_config *cfg)
{
    int64_t n = cfg->workers ? cfg->workers : (int64_t)uv_available_parallelism();
    return n < 1 ? 1 : n > KR_SERVE_MAX_LOOPS ? KR_SERVE_MAX_LOOPS : (int)n;
}

/* Sets up loop i and its parts, on the main thread (the loop runs later,
 * on its own). Loop 0 binds first (its port, when server.listen asks for
 * port 0, is the one every other loop binds) and also serves the admin
 * listener. */
static int loop_up(kr_serve *s, int i, kr_diag *d)
{
    const kr_config *cfg = s->cfg;
    kr_serve_loop *l = kr_xcalloc(1, sizeof *l);
    s->loops[i] = l;
    l->s = s;
    l->index = i;
    uv_loop_init(&l->loop);
    l->loop_up = true;
    kr_http_server_init(&l->http, &l->loop, cfg);
    l->http.worker = s->nloops > 1 ? i : -1;
    if (s->nloops > 1) l->http.shared_conns = &s->conns;
    l->http.refusal = kr_proxy_refusal;
    l->http.refusal_ctx = &l->proxy;
    kr_serve_loop_init(l);
    mount(l);
    int rc;
    kr_http_listener *main_l, *admin_l = NULL;
    int port = i ? s->loops[0]->http.listeners[0].port : 0;
    if ((rc = kr_http_listen(&l->http, cfg->listen, port, s->nloops > 1, 1024, l->main_mounts, 6,
                             &main_l, d)))
        return rc;
    if (i == 0 && cfg->admin_listen[0] && strcmp(cfg->admin_listen, "main")) {
        if ((rc = kr_http_listen(&l->http, cfg->admin_listen, 0, false, 128, l->admin_mounts, 6,
                                 &admin_l, d))) {
            kr_diag inner = *d;
            return kr_fail(d, rc, "server.admin_listen: %s", inner.msg);
        }
        KR_INFO("admin API and console on %s port %d: /admin/v1, /console", cfg->admin_listen,
                admin_l->port);
    }
    if ((rc = kr_workq_start(&l->workers, &l->loop, cfg->store_url, 2, d))) {
        kr_diag inner = *d;
        return kr_fail(d, rc, "store: %s", inner.msg);
    }
    l->port = kr_meter_attach(s->meter, i, &l->loop);
    if (i == 0) {
        if (cfg->public_url[0])
            kr_strlcpy(s->proxy_url, cfg->public_url, sizeof s->proxy_url);
        else
            kr_snprintf(s->proxy_url, sizeof s->proxy_url, "http://127.0.0.1:%d", main_l->port);
        size_t ul = strlen(s->proxy_url);
        while (ul && s->proxy_url[ul - 1] == '/') s->proxy_url[--ul] = 0;
    }
    kr_plane plane = {cfg, s->reg, s->rts, &s->pol, &s->mk, s->proxy_url, s->pools};
    kr_proxy_env penv = {plane,  l->workers, s->meter, l->port, s->limits, i == 0,
                         i,      kr_otel_port_of(s->otel, i), s->pools};
    if ((rc = kr_proxy_init(&l->proxy, &l->http, &penv, d))) return rc;
    l->proxy_up = true;
    l->admin = (kr_admin){plane, l->workers};
    return 0;
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
    s->nloops = loop_count(cfg);
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
    if ((rc = kr_meter_start(&s->meter, cfg->store_url, journal_path(cfg, journal, sizeof journal),
                             s->nloops, &d))) {
        refuse_to_start("store: %s", d.msg);
        goto refused;
    }
    s->limits = kr_limits_new();
    s->pools = kr_pools_load(s->reg, cfg);
    raise_nofile(cfg);
    if ((rc = kr_notifier_start(&s->notifier, cfg, &s->mk, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    if ((rc = kr_otel_start(&s->otel, cfg, s->nloops, &d))) {
        refuse_to_start("%s", d.msg);
        goto refused;
    }
    /* bound now, served once the loops run: nothing is accepted before the rest */
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < s->nloops; i++)
        if ((rc = loop_up(s, i, &d))) {
            refuse_to_start("%s", d.msg);
            goto refused;
        }
    if (cfg->log_flush_ms > 0) kr_log_set_buffered(true);
    KR_INFO("keyrail serving on %s port %d with %d event loop%s (store %s)", cfg->listen,
            s->loops[0]->http.listeners[0].port, s->nloops, s->nloops == 1 ? "" : "s",
            strncmp(cfg->store_url, "postgres", 8) ? cfg->store_url : "postgres");
    if (!strcmp(cfg->admin_listen, "main"))
        KR_INFO("admin API and console on the proxy's listener: /admin/v1, /console");
    kr_serve_loops_run(s);
    kr_meter_stop(s->meter); /* writes every usage row */
    kr_otel_stop(s->otel);   /* exports the last spans */
    kr_notifier_stop(s->notifier);
    serve_free(s);
    KR_INFO("keyrail stopped");
    kr_log_set_buffered(false);
    return 0;

refused:
    /* undo what was started, so a refusal exits clean (and leak-free) */
    for (int i = s->nloops - 1; i >= 0; i--)
        if (s->loops[i] && s->loops[i]->loop_up) kr_serve_loop_teardown(s->loops[i]);
    kr_meter_stop(s->meter);
    kr_otel_stop(s->otel);
    kr_notifier_stop(s->notifier);
    serve_free(s);
    return 1;
}
