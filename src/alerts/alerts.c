/*
 * alerts.c -- the notifier: budget and balance crossings, webhook deliveries
 * (alerts.h).
 */
#include "alerts/alerts.h"
#include "confine/confine.h"
#include "core/log.h"
#include "ops/ops.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DUE_BATCH     16
#define CLAIM_MS      60000 /* a claimed delivery is another instance's for this long */
#define SEND_TIMEOUT  10000
#define BACKOFF_MAX   3600000
#define KNOWN_MAX     4096 /* crossings known to be recorded (skip their insert) */

struct kr_notifier {
    const kr_config *cfg;
    kr_master_key mk;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    /* the thread's own */
    kr_store *st;
    CURL *curl;
    char *known[KNOWN_MAX];
    size_t nknown;
};

/* ---- pure parts ---- */

int kr_alert_percents_parse(const char *in, char *out, size_t cap, kr_diag *d)
{
    int64_t prev = 0;
    size_t n = 0, len = 0;
    const char *p = in;
    if (!in || !*in) return kr_fail(d, KR_EINVAL, "percents: give one or more, e.g. 50,80,100");
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        int64_t v;
        if (kr_parse_i64(p, l, &v) || v < 1 || v > 1000)
            return kr_fail(d, KR_EINVAL, "percents: '%.*s' is not a whole number 1..1000",
                           (int)(l < 20 ? l : 20), p);
        if (v <= prev) return kr_fail(d, KR_EINVAL, "percents must increase: %lld after %lld",
                                      (long long)v, (long long)prev);
        if (++n > 10) return kr_fail(d, KR_EINVAL, "percents: at most 10");
        int w = snprintf(out + len, cap - len, "%s%lld", len ? "," : "", (long long)v);
        if (w < 0 || (size_t)w >= cap - len) return kr_fail(d, KR_EINVAL, "percents: too long");
        len += (size_t)w;
        prev = v;
        p = e ? e + 1 : p + l;
        if (e && !*p) return kr_fail(d, KR_EINVAL, "percents: a trailing comma");
    }
    return 0;
}

void kr_alert_sign(const char *secret, size_t slen, int64_t t, const char *body, size_t n,
                   char out[96])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char ts[24];
    int tl = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, slen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, (unsigned long long)tl);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, n);
    crypto_auth_hmacsha256_final(&st, mac);
    char hex[2 * sizeof mac + 1];
    kr_hex(mac, sizeof mac, hex);
    snprintf(out, 96, "t=%lld,v1=%s", (long long)t, hex);
    sodium_memzero(&st, sizeof st);
}

/* ---- crossings ---- */

static bool known(kr_notifier *n, const char *key)
{
    for (size_t i = 0; i < n->nknown; i++)
        if (!strcmp(n->known[i], key)) return true;
    return false;
}

static void remember(kr_notifier *n, const char *key)
{
    if (n->nknown == KNOWN_MAX) {
        for (size_t i = 0; i < n->nknown; i++)
            free(n->known[i]);
        n->nknown = 0; /* forgetting costs one harmless insert attempt each */
    }
    n->known[n->nknown++] = kr_strdup(key);
}

static void money(cJSON *o, const char *k, int64_t micros)
{
    char m[40];
    kr_money_str(micros, m, sizeof m);
    cJSON_AddStringToObject(o, k, m);
}

static cJSON *body_base(kr_store *st, const kr_alert *a, const char *type)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", type);
    cJSON_AddNumberToObject(b, "alert_id", (double)a->id);
    kr_org o;
    kr_diag d = {{0}};
    if (!kr_org_get(st, a->org_id, &o, &d)) cJSON_AddStringToObject(b, "org", o.slug);
    cJSON_AddNumberToObject(b, "org_id", (double)a->org_id);
    if (a->ws_id) {
        kr_workspace w;
        if (!kr_ws_get(st, a->ws_id, &w, &d)) cJSON_AddStringToObject(b, "workspace", w.name);
        cJSON_AddNumberToObject(b, "workspace_id", (double)a->ws_id);
    } else {
        cJSON_AddNullToObject(b, "workspace");
    }
    char ts[KR_LOG_TS_LEN];
    kr_log_ts(ts);
    cJSON_AddStringToObject(b, "crossed_at", ts);
    return b;
}

/* Records one crossing (unless known); the body is fixed now. */
static void crossing(kr_notifier *n, const kr_alert *a, const char *key, cJSON *body)
{
    char k[96];
    kr_snprintf(k, sizeof k, "%lld:%s", (long long)a->id, key);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    bool added = false;
    kr_diag d = {{0}};
    int rc = kr_alert_crossing_add(n->st, a, key, text, &added, &d);
    if (rc)
        KR_WARN("alerts: recording crossing %s of alert %lld failed: %s", key, (long long)a->id,
                d.msg);
    else {
        remember(n, k);
        if (added) KR_INFO("alerts: alert %lld crossed (%s); a webhook delivery is queued",
                           (long long)a->id, key);
    }
    free(text);
}

static void check_budget(kr_notifier *n, const kr_alert *a, const struct tm *now)
{
    char from[11], to[11], label[11];
    bool month = !strcmp(a->period, "month");
    strftime(label, sizeof label, month ? "%Y-%m" : "%Y-%m-%d", now);
    strftime(from, sizeof from, month ? "%Y-%m-01" : "%Y-%m-%d", now);
    strftime(to, sizeof to, month ? "%Y-%m-31" : "%Y-%m-%d", now);
    /* skip the store when every percent of this period is known recorded */
    char pcts[64];
    kr_strlcpy(pcts, a->percents, sizeof pcts);
    bool all_known = true;
    for (char *save, *p = strtok_r(pcts, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char k[96];
        kr_snprintf(k, sizeof k, "%lld:%s:%s", (long long)a->id, label, p);
        all_known &= known(n, k);
    }
    if (all_known) return;
    int64_t spend;
    kr_diag d = {{0}};
    if (kr_alert_spend(n->st, a->org_id, a->ws_id, from, to, &spend, &d)) {
        KR_WARN("alerts: reading the spend of alert %lld failed: %s", (long long)a->id, d.msg);
        return;
    }
    kr_strlcpy(pcts, a->percents, sizeof pcts);
    for (char *save, *p = strtok_r(pcts, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        int64_t pct = atoll(p);
        char key[48], k[96];
        kr_snprintf(key, sizeof key, "%s:%lld", label, (long long)pct);
        kr_snprintf(k, sizeof k, "%lld:%s", (long long)a->id, key);
        /* spend >= budget x pct / 100, without overflow for any budget < 2^63 / 1000 */
        if (known(n, k) || (__int128)spend * 100 < (__int128)a->amount_micros * pct) continue;
        cJSON *b = body_base(n->st, a, "budget.crossed");
        cJSON_AddStringToObject(b, "period", a->period);
        cJSON_AddStringToObject(b, "period_start", from);
        cJSON_AddNumberToObject(b, "percent", (double)pct);
        money(b, "budget", a->amount_micros);
        money(b, "spend", spend);
        crossing(n, a, key, b);
    }
}

static void check_balance(kr_notifier *n, const kr_alert *a)
{
    int64_t bal, cap;
    kr_diag d = {{0}};
    if (kr_credits_get(n->st, a->org_id, &bal, &cap, &d)) return;
    if (bal >= a->amount_micros) {
        if (!a->armed) kr_alert_rearm(n->st, a->id, &d);
        return;
    }
    if (!a->armed) return;
    /* one instance wins the disarm; its crossing row commits with it */
    if (kr_store_begin(n->st, &d)) return;
    int64_t seq = 0;
    bool added = false;
    int rc = kr_alert_disarm(n->st, a->id, &seq, &d);
    if (!rc && seq) {
        char key[32];
        kr_snprintf(key, sizeof key, "below:%lld", (long long)seq);
        cJSON *b = body_base(n->st, a, "balance.below");
        money(b, "threshold", a->amount_micros);
        money(b, "balance", bal);
        cJSON_AddNumberToObject(b, "crossing", (double)seq);
        char *text = cJSON_PrintUnformatted(b);
        cJSON_Delete(b);
        rc = kr_alert_crossing_add(n->st, a, key, text, &added, &d);
        free(text);
    }
    if (!rc) rc = kr_store_commit(n->st, &d);
    if (rc) {
        kr_store_rollback(n->st);
        KR_WARN("alerts: recording the balance crossing of alert %lld failed: %s", (long long)a->id,
                d.msg);
    } else if (added) {
        KR_INFO("alerts: alert %lld: the balance is below its threshold; a webhook delivery is "
                "queued", (long long)a->id);
    }
}

static void evaluate(kr_notifier *n)
{
    kr_alert *a = NULL;
    size_t na = 0;
    kr_diag d = {{0}};
    if (kr_alert_list(n->st, 0, &a, &na, &d)) {
        KR_WARN("alerts: listing alerts failed: %s", d.msg);
        return;
    }
    time_t t = time(NULL);
    struct tm now;
    gmtime_r(&t, &now);
    for (size_t i = 0; i < na; i++) {
        if (a[i].kind == KR_ALERT_BUDGET)
            check_budget(n, &a[i], &now);
        else
            check_balance(n, &a[i]);
    }
    kr_alerts_free(a, na);
}

/* ---- deliveries ---- */

/* libcurl opens each socket through here: a webhook never reaches a
 * loopback, private or link-local address unless the operator allows it. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    kr_notifier *n = ud;
    (void)purpose;
    if (!n->cfg->alerts_allow_private_urls && !kr_addr_is_public(&a->addr))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t discard(char *p, size_t size, size_t nm, void *ud)
{
    (void)p;
    (void)ud;
    return size * nm;
}

/* One attempt; *status: the HTTP status (0: none), err: why not 2xx. */
static bool send_one(kr_notifier *n, const kr_alert *a, const kr_alert_delivery *v,
                     const kr_buf *secret, long *status, char *err, size_t cap)
{
    CURL *h = n->curl;
    curl_easy_reset(h);
    char sig[96], hdr[3][160];
    kr_alert_sign(secret->data, secret->len, (int64_t)time(NULL), v->body, strlen(v->body), sig);
    const char *type = strncmp(v->crossing, "below:", 6) ? "budget.crossed" : "balance.below";
    kr_snprintf(hdr[0], sizeof hdr[0], "X-Keyrail-Event: %s", type);
    kr_snprintf(hdr[1], sizeof hdr[1], "X-Keyrail-Delivery: %lld", (long long)v->id);
    kr_snprintf(hdr[2], sizeof hdr[2], "X-Keyrail-Signature: %s", sig);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < 3; i++)
        hl = curl_slist_append(hl, hdr[i]);
    hl = curl_slist_append(hl, "User-Agent: keyrail-alerts");
    curl_easy_setopt(h, CURLOPT_URL, a->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, v->body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SEND_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, n);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hl);
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (rc == CURLE_COULDNT_CONNECT && !n->cfg->alerts_allow_private_urls)
        kr_snprintf(err, cap, "could not connect (private and loopback addresses are refused "
                              "unless [alerts] allow_private_urls)");
    else if (rc != CURLE_OK)
        kr_snprintf(err, cap, "%s", curl_easy_strerror(rc));
    else if (*status < 200 || *status > 299)
        kr_snprintf(err, cap, "the endpoint answered %ld", *status);
    else
        err[0] = 0;
    return rc == CURLE_OK && *status >= 200 && *status <= 299;
}

static void deliver(kr_notifier *n)
{
    int64_t now = kr_now_ms();
    kr_alert_delivery *v = NULL;
    size_t nv = 0;
    kr_diag d = {{0}};
    if (kr_alert_due(n->st, now, DUE_BATCH, &v, &nv, &d)) return;
    kr_alert *alerts = NULL;
    size_t na = 0;
    if (nv && kr_alert_list(n->st, 0, &alerts, &na, &d)) nv = 0;
    for (size_t i = 0; i < nv; i++) {
        bool won = false;
        if (kr_alert_claim(n->st, v[i].id, now, now + CLAIM_MS, &won, &d) || !won) continue;
        const kr_alert *a = NULL;
        for (size_t k = 0; k < na && !a; k++)
            if (alerts[k].id == v[i].alert_id) a = &alerts[k];
        char err[200] = "";
        long status = 0;
        bool ok = false;
        kr_buf secret = KR_BUF_INIT(1024);
        char key[64];
        kr_snprintf(key, sizeof key, "%s:%lld", KR_ALERT_SECRET_KEY, (long long)v[i].alert_id);
        if (!a)
            kr_snprintf(err, sizeof err, "the alert was deleted");
        else if (kr_secret_open(&n->mk, KR_SCOPE_ORG, a->org_id, key, a->secret, strlen(a->secret),
                                &secret))
            kr_snprintf(err, sizeof err, "the alert's secret cannot be opened (master key?)");
        else
            ok = send_one(n, a, &v[i], &secret, &status, err, sizeof err);
        if (secret.data) sodium_memzero(secret.data, secret.len);
        kr_buf_free(&secret);
        int64_t attempts = v[i].attempts + 1;
        bool give_up = !ok && (!a || attempts >= n->cfg->alerts_max_attempts);
        int64_t backoff = 1000ll << (attempts - 1 < 22 ? attempts - 1 : 22);
        if (backoff > BACKOFF_MAX) backoff = BACKOFF_MAX;
        const char *st = ok ? "delivered" : give_up ? "failed" : "pending";
        int64_t t = kr_now_ms();
        if (kr_alert_attempted(n->st, v[i].id, st, status, err, ok || give_up ? t : t + backoff, t,
                               &d))
            KR_WARN("alerts: recording delivery %lld failed: %s", (long long)v[i].id, d.msg);
        if (!ok)
            KR_WARN("alerts: delivery %lld of alert %lld, attempt %lld: %s%s", (long long)v[i].id,
                    (long long)v[i].alert_id, (long long)attempts, err,
                    give_up ? "; given up" : "; retried later");
    }
    kr_alerts_free(alerts, na);
    kr_alert_deliveries_free(v, nv);
}

/* ---- the thread ---- */

static void *run(void *arg)
{
    kr_notifier *n = arg;
    pthread_mutex_lock(&n->mu);
    while (!n->stopping) {
        pthread_mutex_unlock(&n->mu);
        kr_diag d = {{0}};
        if (!n->st && kr_store_open(n->cfg->store_url, &n->st, &d))
            KR_WARN("alerts: the store cannot be opened (%s); retrying", d.msg);
        if (n->st) {
            evaluate(n);
            deliver(n);
        }
        pthread_mutex_lock(&n->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        int64_t ms = n->cfg->alerts_interval_ms;
        until.tv_sec += (time_t)(ms / 1000);
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        while (!n->stopping && pthread_cond_timedwait(&n->cv, &n->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int kr_notifier_start(kr_notifier **out, const kr_config *cfg, const kr_master_key *mk, kr_diag *d)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return kr_fail(d, KR_ECONFIG, "libcurl: init failed");
    kr_notifier *n = kr_xcalloc(1, sizeof *n);
    n->cfg = cfg;
    n->mk = *mk;
    n->curl = curl_easy_init();
    if (!n->curl) {
        free(n);
        return kr_fail(d, KR_ECONFIG, "libcurl: no handle");
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    pthread_create(&n->thread, NULL, run, n);
    *out = n;
    return 0;
}

void kr_notifier_stop(kr_notifier *n)
{
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->stopping = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->thread, NULL);
    curl_easy_cleanup(n->curl);
    kr_store_close(n->st);
    for (size_t i = 0; i < n->nknown; i++)
        free(n->known[i]);
    sodium_memzero(&n->mk, sizeof n->mk);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}
