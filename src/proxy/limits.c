/*
 * limits.c -- admission control; see limits.h for the rules and bounds.
 */
#include "proxy/proxy.h"
#include "core/lock.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kr_limits *kr_limits_new(void)
{
    kr_limits *l = aligned_alloc(64, sizeof *l);
    if (!l) {
        fputs("keyrail: out of memory\n", stderr);
        abort();
    }
    memset(l, 0, sizeof *l);
    for (int i = 0; i < KR_LIMITS_SHARDS; i++)
        pthread_mutex_init(&l->shard[i].mu, NULL);
    return l;
}

void kr_limits_free(kr_limits *l)
{
    if (!l) return;
    for (int i = 0; i < KR_LIMITS_SHARDS; i++)
        pthread_mutex_destroy(&l->shard[i].mu);
    free(l);
}

/* The shard of an owner id (an org's or a workspace's): the hash's top
 * bits, the slot within the shard its low bits. */
static kr_limits_shard *shard_of(kr_limits *l, int64_t id)
{
    return &l->shard[((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 60];
}

/* The shards of a workspace and its org, taken in shard order (the same
 * shard once): no two loops can each hold one and wait for the other. */
static void lock2(kr_limits_shard *a, kr_limits_shard *b)
{
    if (a > b) {
        kr_limits_shard *t = a;
        a = b;
        b = t;
    }
    kr_lock(&a->mu, KR_LOCK_LIMITS);
    if (b != a) kr_lock(&b->mu, KR_LOCK_LIMITS);
}

static void unlock2(kr_limits_shard *a, kr_limits_shard *b)
{
    kr_unlock(&a->mu);
    if (b != a) kr_unlock(&b->mu);
}

static int64_t minute_now(void)
{
    int64_t s = kr_now_ms() / 1000;
    return s - s % 60;
}

/* Open addressing with linear probing in the owner's shard (held); a full
 * shard is wiped (the counts live in the store, so this only costs one sync
 * of accuracy). */
static kr_window *window_for(kr_limits_shard *l, int scope, int64_t owner)
{
    uint64_t h = ((uint64_t)owner * 0x9e3779b97f4a7c15ull) ^ (uint64_t)scope;
    for (size_t i = 0; i < KR_LIMITS_SLOTS; i++) {
        kr_window *w = &l->win[(h + i) % KR_LIMITS_SLOTS];
        if (w->used && w->scope == scope && w->owner == owner) return w;
        if (!w->used) {
            memset(w, 0, sizeof *w);
            w->used = true;
            w->scope = scope;
            w->owner = owner;
            return w;
        }
    }
    memset(l->win, 0, sizeof l->win);
    return window_for(l, scope, owner);
}

static kr_credit *credit_for(kr_limits_shard *l, int64_t org, bool create)
{
    uint64_t h = (uint64_t)org * 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < KR_LIMITS_SLOTS; i++) {
        kr_credit *c = &l->cred[(h + i) % KR_LIMITS_SLOTS];
        if (c->used && c->org == org) return c;
        if (!c->used) {
            if (!create) return NULL;
            memset(c, 0, sizeof *c);
            c->used = true;
            c->org = org;
            return c;
        }
    }
    if (!create) return NULL;
    memset(l->cred, 0, sizeof l->cred);
    return credit_for(l, org, true);
}

static void roll(kr_window *w, int64_t now)
{
    if (w->window == now) return;
    w->window = now;
    w->store_req = w->store_tok = w->local_req = w->local_tok = 0;
    w->flight_req = w->flight_tok = 0;
}

/* A request whose estimate alone is over the tpm limit counts as the whole
 * limit: it is admitted into an empty window (and settled to its real usage
 * at the end), so its 429's retry-after is a promise that can come true. */
static bool over(const kr_window *w, int64_t rpm, int64_t tpm, uint64_t est)
{
    int64_t req = w->store_req + w->local_req + w->flight_req;
    int64_t tok = w->store_tok + w->local_tok + w->flight_tok;
    int64_t e = tpm > 0 && (int64_t)est > tpm ? tpm : (int64_t)est;
    return (rpm > 0 && req + 1 > rpm) || (tpm > 0 && tok + e > tpm);
}

static bool allowed(const char *allow, const char *model)
{
    if (!allow) return true;
    size_t n = strlen(model);
    for (const char *p = allow; (p = strstr(p, model)); p++)
        if (p > allow && p[-1] == '\n' && p[n] == '\n') return true;
    return false;
}

/* The org's balance plus overage cap is above what is pending (its shard
 * held). */
static bool credits_ok(kr_limits_shard *l, const kr_auth_info *a)
{
    kr_credit *c = credit_for(l, a->org_id, false);
    if (!c) {
        c = credit_for(l, a->org_id, true);
        c->balance = a->balance;
        c->cap = a->cap;
    }
    c->seen_ns = kr_mono_ns();
    return c->balance - c->pending + c->cap > 0;
}

int kr_limits_admit(kr_proxy *s, kr_req *r, uint64_t est, bool metered)
{
    kr_limits *l = s->lim;
    const kr_auth_info *a = &r->auth;
    if (!allowed(a->allow, r->model_id)) {
        kr_respond_error(r, 403, "permission_error",
                         "model '%s' is not in the allow-list of this workspace or its org",
                         r->model_id);
        return 403;
    }
    if (!metered) return 0;
    kr_limits_shard *os = shard_of(l, a->org_id), *wsh = shard_of(l, a->ws_id);
    int refused = 0;
    bool ws_over = false;
    /* decided under the shards' locks, answered after them */
    lock2(os, wsh);
    /* credits bound the platform route; BYOK is the org's own bill */
    if (a->route != KR_ROUTE_BYOK && !credits_ok(os, a)) {
        refused = 402;
    } else {
        int64_t now = minute_now();
        kr_window *ww = (a->ws_rpm || a->ws_tpm) ? window_for(wsh, 1, a->ws_id) : NULL;
        kr_window *ow = (a->org_rpm || a->org_tpm) ? window_for(os, 0, a->org_id) : NULL;
        if (ww) roll(ww, now);
        if (ow) roll(ow, now);
        ws_over = ww && over(ww, a->ws_rpm, a->ws_tpm, est);
        if (ws_over || (ow && over(ow, a->org_rpm, a->org_tpm, est))) {
            refused = 429;
        } else {
            if (ww) ww->local_req++, ww->local_tok += (int64_t)est;
            if (ow) ow->local_req++, ow->local_tok += (int64_t)est;
        }
    }
    unlock2(os, wsh);
    if (refused == 402) {
        kr_respond_error(r, 402, "billing_error",
                         "the org's credits are exhausted (balance and overage cap used up); ask "
                         "the operator to top up");
        return 402;
    }
    if (refused == 429) {
        int64_t secs = 60 - (kr_now_ms() / 1000) % 60;
        r->retry_after = (int)(secs < 1 ? 1 : secs);
        kr_respond_error(r, 429, "rate_limit_error",
                         "rate limit of the %s reached for this minute; retry after %d s",
                         ws_over ? "workspace" : "org", r->retry_after);
        return 429;
    }
    r->est_tokens = est;
    r->admitted = true;
    return 0;
}

void kr_limits_settle(kr_proxy *s, kr_req *r, const kr_usage *u, int64_t cost)
{
    kr_limits *l = s->lim;
    if (!r->admitted && cost <= 0) return;
    kr_limits_shard *os = shard_of(l, r->auth.org_id), *wsh = shard_of(l, r->auth.ws_id);
    lock2(os, wsh);
    if (r->admitted) {
        int64_t real = (int64_t)(u->input_tokens + u->output_tokens + u->cache_read_tokens +
                                 u->cache_write_tokens);
        int64_t delta = real - (int64_t)r->est_tokens;
        int64_t now = minute_now();
        if (r->auth.ws_rpm || r->auth.ws_tpm) {
            kr_window *w = window_for(wsh, 1, r->auth.ws_id);
            if (w->window == now) w->local_tok += delta;
        }
        if (r->auth.org_rpm || r->auth.org_tpm) {
            kr_window *w = window_for(os, 0, r->auth.org_id);
            if (w->window == now) w->local_tok += delta;
        }
        r->admitted = false;
    }
    if (cost > 0) {
        kr_credit *c = credit_for(os, r->auth.org_id, true);
        c->pending += cost;
    }
    unlock2(os, wsh);
}

void kr_limits_committed(kr_proxy *s, int64_t org, int64_t cost)
{
    if (cost <= 0) return;
    kr_limits_shard *os = shard_of(s->lim, org);
    kr_lock(&os->mu, KR_LOCK_LIMITS);
    kr_credit *c = credit_for(os, org, false);
    if (c) {
        c->pending -= cost;
        /* the committed debit is in the store now; until the next sync reads
         * it back, apply it here so the view never goes stale upward */
        c->balance -= cost;
    }
    kr_unlock(&os->mu);
}

/* ---- the sync: push local counts, pull totals and balances ---- */

typedef struct {
    kr_job job;
    kr_proxy *srv;
    kr_rate_key *keys;
    size_t nkeys;
    int64_t *orgs, *bal, *cap;
    size_t norgs;
    int rc;
} sync_job;

static void sync_work(kr_store *st, kr_job *j)
{
    sync_job *sj = (sync_job *)j;
    kr_diag d = {{0}};
    sj->rc = sj->nkeys ? kr_rate_sync(st, sj->keys, sj->nkeys, &d) : 0;
    for (size_t i = 0; !sj->rc && i < sj->norgs; i++)
        sj->rc = kr_credits_get(st, sj->orgs[i], &sj->bal[i], &sj->cap[i], &d);
}

static void sync_done(kr_job *j)
{
    sync_job *sj = (sync_job *)j;
    kr_proxy *s = sj->srv;
    kr_limits *l = s->lim;
    l->syncing = false;
    int64_t now = minute_now();
    for (size_t i = 0; i < sj->nkeys; i++) {
        kr_rate_key *k = &sj->keys[i];
        kr_limits_shard *sh = shard_of(l, k->owner);
        kr_lock(&sh->mu, KR_LOCK_LIMITS);
        kr_window *w = window_for(sh, k->scope == KR_SCOPE_WORKSPACE ? 1 : 0, k->owner);
        if (w->window != k->window_start || w->window != now) {
            kr_unlock(&sh->mu);
            continue;
        }
        if (sj->rc) {
            /* not flushed: give the counts back to the next sync */
            w->local_req += w->flight_req;
            w->local_tok += w->flight_tok;
        } else {
            w->store_req = k->total_requests;
            w->store_tok = k->total_tokens;
        }
        w->flight_req = w->flight_tok = 0;
        kr_unlock(&sh->mu);
    }
    if (sj->rc) {
        l->sync_failures++;
        return;
    }
    l->syncs++;
    for (size_t i = 0; i < sj->norgs; i++) {
        kr_limits_shard *sh = shard_of(l, sj->orgs[i]);
        kr_lock(&sh->mu, KR_LOCK_LIMITS);
        kr_credit *c = credit_for(sh, sj->orgs[i], false);
        if (c) {
            c->balance = sj->bal[i];
            c->cap = sj->cap[i];
        }
        kr_unlock(&sh->mu);
    }
}

static void sync_cleanup(kr_job *j)
{
    sync_job *sj = (sync_job *)j;
    free(sj->keys);
    free(sj->orgs);
    free(sj->bal);
    free(sj->cap);
}

static void on_sync_timer(uv_timer_t *t)
{
    kr_proxy *s = t->data;
    kr_limits *l = s->lim;
    if (l->syncing || !s->workers) return;
    int64_t now = minute_now();
    uint64_t recent = kr_mono_ns() - 120ull * 1000000000ull;
    sync_job *sj = kr_xcalloc(1, sizeof *sj);
    const size_t all = (size_t)KR_LIMITS_SHARDS * KR_LIMITS_SLOTS;
    sj->keys = kr_xcalloc(all, sizeof *sj->keys);
    sj->orgs = kr_xcalloc(all, sizeof *sj->orgs);
    sj->bal = kr_xcalloc(all, sizeof *sj->bal);
    sj->cap = kr_xcalloc(all, sizeof *sj->cap);
    for (int si = 0; si < KR_LIMITS_SHARDS; si++) {
        kr_limits_shard *sh = &l->shard[si];
        kr_lock(&sh->mu, KR_LOCK_LIMITS);
        for (size_t i = 0; i < KR_LIMITS_SLOTS; i++) {
            kr_credit *c = &sh->cred[i];
            if (c->used && c->seen_ns >= recent) sj->orgs[sj->norgs++] = c->org;
            kr_window *w = &sh->win[i];
            if (!w->used || w->window != now) continue;
            kr_rate_key *k = &sj->keys[sj->nkeys++];
            k->scope = w->scope ? KR_SCOPE_WORKSPACE : KR_SCOPE_ORG;
            k->owner = w->owner;
            k->window_start = w->window;
            k->add_requests = w->local_req;
            k->add_tokens = w->local_tok;
            w->flight_req = w->local_req;
            w->flight_tok = w->local_tok;
            w->local_req = w->local_tok = 0;
        }
        kr_unlock(&sh->mu);
    }
    if (!sj->nkeys && !sj->norgs) {
        sync_cleanup(&sj->job);
        free(sj);
        return;
    }
    sj->job.work = sync_work;
    sj->job.done = sync_done;
    sj->job.cleanup = sync_cleanup;
    sj->srv = s;
    l->syncing = true;
    kr_workq_submit(s->workers, &sj->job);
}

void kr_limits_start(kr_proxy *s)
{
    uv_timer_init(s->loop, &s->limits_timer);
    s->limits_timer.data = s;
    uv_timer_start(&s->limits_timer, on_sync_timer, KR_LIMITS_SYNC_MS, KR_LIMITS_SYNC_MS);
}

void kr_limits_stop(kr_proxy *s)
{
    uv_timer_stop(&s->limits_timer);
    uv_close((uv_handle_t *)&s->limits_timer, NULL);
}
