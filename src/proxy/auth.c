/*
 * auth.c -- workspace-token authentication.
 *
 * The token is hashed (BLAKE2b-256, what the store keeps) and looked up in a
 * direct-mapped cache of KR_AUTH_SLOTS entries that live token_cache_ms;
 * a miss becomes a store job: token row by hash (compared again in constant
 * time), the workspace, and its provider resolution (so a BYOK workspace is
 * refused here: it must not spend platform credit). Unknown tokens are
 * cached too, so a stream of bad tokens does not hammer the store. A token
 * revoked anywhere is refused by every instance within token_cache_ms.
 */
#include "proxy/proxy.h"
#include "core/log.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

void kr_auth_init(kr_auth_cache *c, int64_t ttl_ms)
{
    c->slots = kr_xcalloc(KR_AUTH_SLOTS, sizeof *c->slots);
    c->ttl_ns = (uint64_t)ttl_ms * 1000000ull;
    c->hits = c->misses = 0;
}

/* What an auth info owns: the allow-list and the BYOK key (wiped). */
static void info_release(kr_auth_info *in)
{
    free(in->allow);
    in->allow = NULL;
    if (in->upstream_auth) {
        sodium_memzero(in->upstream_auth, strlen(in->upstream_auth));
        free(in->upstream_auth);
        in->upstream_auth = NULL;
    }
}

void kr_auth_free(kr_auth_cache *c)
{
    for (size_t i = 0; c->slots && i < KR_AUTH_SLOTS; i++)
        if (c->slots[i].used) info_release(&c->slots[i].info);
    free(c->slots);
    c->slots = NULL;
}

typedef struct {
    kr_job job; /* first: the queue frees the whole struct */
    uint64_t read_ns; /* when the token row was read: the cache lifetime starts here */
    kr_proxy *srv;
    kr_req *req;      /* NULL for a refresh ahead of expiry */
    kr_auth_cb cb;
    uint8_t hash[32];
    char hex[65];
    const kr_plane *p;
    kr_auth_info info;
} auth_job;

/* BYOK through the proxy: the org's key, as the header line its provider
 * takes. Refused (never forwarded) when it is missing, names another
 * issuer, or cannot be one header line. */
static void byok_key(const kr_registry *reg, const kr_resolution *res, const kr_secrets *secrets,
                     kr_auth_info *in)
{
    const kr_provider *p = kr_registry_provider(reg, res->provider);
    const kr_secret_entry *e = kr_secrets_get(secrets, res->credential_key);
    const char *why = NULL;
    if (!p || !e || e->read.state != KR_SECRET_VALUE || !e->read.len)
        why = "its key is missing";
    else if (memchr(e->read.value, '\r', e->read.len) || memchr(e->read.value, '\n', e->read.len))
        why = "its key is not one line";
    else {
        const kr_provider *issuer = kr_registry_key_issuer(reg, e->read.value);
        char o1[300], o2[300];
        if (issuer && issuer != p &&
            (kr_url_origin(issuer->base_url, o1, sizeof o1) || kr_url_origin(p->base_url, o2, sizeof o2) ||
             strcmp(o1, o2)))
            why = "its key was issued by another provider";
    }
    if (why) {
        in->rc = KR_EMISSING_BYOK_CREDENTIAL;
        kr_snprintf(in->reason, sizeof in->reason,
                    "this workspace's BYOK provider '%s' cannot be used: %s; ask the operator to run "
                    "`keyrail explain`",
                    res->provider, why);
        return;
    }
    kr_buf b = KR_BUF_INIT(8192 + 32);
    if (kr_buf_puts(&b, kr_auth_style_prefix(p->header)) ||
        kr_buf_append(&b, e->read.value, e->read.len)) {
        if (b.data) sodium_memzero(b.data, b.len);
        kr_buf_free(&b);
        in->rc = KR_EMISSING_BYOK_CREDENTIAL;
        kr_snprintf(in->reason, sizeof in->reason, "this workspace's BYOK key is too long");
        return;
    }
    in->upstream_auth = kr_buf_steal(&b);
}

static void lookup_work(kr_store *st, kr_job *j)
{
    auth_job *a = (auth_job *)j;
    kr_auth_info *in = &a->info;
    memset(in, 0, sizeof *in);
    a->read_ns = kr_mono_ns();
    kr_token t;
    kr_diag d = {{0}};
    int rc = kr_token_by_hash(st, a->hex, &t, &d);
    if (rc == KR_ENOTFOUND || (!rc && sodium_memcmp(t.hash, a->hex, 64) != 0)) {
        in->rc = KR_ENOTFOUND;
        kr_strlcpy(in->reason, "unknown workspace token", sizeof in->reason);
        return;
    }
    if (rc) {
        in->rc = KR_ESTORE;
        kr_strlcpy(in->reason, "the store is unavailable", sizeof in->reason);
        j->rc = rc;
        return;
    }
    in->token_id = t.id;
    in->expires_at = t.expires_at;
    if (t.revoked_at) {
        in->rc = KR_EDENIED;
        kr_strlcpy(in->reason, "this workspace token has been revoked", sizeof in->reason);
        return;
    }
    kr_workspace ws;
    if ((rc = kr_ws_get(st, t.workspace_id, &ws, &d))) {
        in->rc = rc == KR_ENOTFOUND ? KR_ENOTFOUND : KR_ESTORE;
        kr_strlcpy(in->reason, rc == KR_ENOTFOUND ? "unknown workspace token" : "the store is unavailable",
                   sizeof in->reason);
        return;
    }
    in->ws_id = ws.id;
    in->org_id = ws.org_id;
    kr_secrets secrets;
    if ((rc = kr_secrets_load(st, a->p->mk, &ws, &secrets, &d))) {
        in->rc = KR_ESTORE;
        kr_strlcpy(in->reason, "the store is unavailable", sizeof in->reason);
        return;
    }
    kr_provision_ctx ctx = kr_plane_ctx(a->p);
    kr_resolution res;
    kr_resolve(&ctx, ws.kind, ws.runtime, &secrets, &res);
    if (!res.err && res.route == KR_ROUTE_BYOK && !res.byok_direct)
        byok_key(a->p->reg, &res, &secrets, in);
    kr_secrets_free(&secrets);
    if (in->rc) return;
    if (res.err) {
        in->rc = res.err;
        kr_snprintf(in->reason, sizeof in->reason,
                    "the workspace's provider cannot be resolved (%s); ask the operator to run "
                    "`keyrail explain`",
                    kr_err_name(res.err));
        return;
    }
    in->route = res.route;
    in->byok_direct = res.byok_direct;
    in->proto = res.proto;
    kr_strlcpy(in->provider, res.provider, sizeof in->provider);
    /* the admission policy travels with the token (and is as fresh) */
    char **wl = NULL, **ol = NULL;
    size_t wn = 0, on = 0;
    if ((rc = kr_limits_get(st, KR_SCOPE_WORKSPACE, ws.id, &in->ws_rpm, &in->ws_tpm, &d)) ||
        (rc = kr_limits_get(st, KR_SCOPE_ORG, ws.org_id, &in->org_rpm, &in->org_tpm, &d)) ||
        (rc = kr_credits_get(st, ws.org_id, &in->balance, &in->cap, &d)) ||
        (rc = kr_allow_get(st, KR_SCOPE_WORKSPACE, ws.id, &wl, &wn, &d)) ||
        (rc = kr_allow_get(st, KR_SCOPE_ORG, ws.org_id, &ol, &on, &d))) {
        kr_strv_free(wl, wn);
        in->rc = KR_ESTORE;
        kr_strlcpy(in->reason, "the store is unavailable", sizeof in->reason);
        return;
    }
    if (wn || on) {
        /* both lists apply: a workspace never gets more than its org */
        kr_buf b = KR_BUF_INIT(1 << 20);
        kr_buf_putc(&b, '\n');
        char **base = wn ? wl : ol, **other = wn ? ol : NULL;
        size_t bn = wn ? wn : on, othern = wn ? on : 0;
        for (size_t i = 0; i < bn; i++) {
            bool ok = othern == 0;
            for (size_t k = 0; k < othern && !ok; k++) ok = !strcmp(base[i], other[k]);
            if (ok) kr_buf_printf(&b, "%s\n", base[i]);
        }
        in->allow = kr_buf_steal(&b);
    }
    kr_strv_free(wl, wn);
    kr_strv_free(ol, on);
}

static kr_auth_slot *slot_for(kr_auth_cache *c, const uint8_t *hash)
{
    uint32_t i;
    memcpy(&i, hash, sizeof i);
    return &c->slots[i % KR_AUTH_SLOTS];
}

static void lookup_done(kr_job *j)
{
    auth_job *a = (auth_job *)j;
    kr_proxy *s = a->srv;
    /* store failures are not cached: the next request retries */
    bool cached = a->info.rc != KR_ESTORE && s->auth.ttl_ns;
    kr_auth_slot *sl = slot_for(&s->auth, a->hash);
    bool same = sl->used && !memcmp(sl->hash, a->hash, 32);
    if (same) sl->refreshing = false;
    /* two lookups of one token can finish out of order (a background
     * renewal begun before a revocation, a miss after it): the row read
     * later wins, or a revoked token would be accepted again */
    if (same && sl->read_ns > a->read_ns) {
        if (a->req) {
            a->req->job = NULL;
            a->cb(a->req, &sl->info);
        }
        return;
    }
    if (cached) {
        if (sl->used) info_release(&sl->info);
        memcpy(sl->hash, a->hash, 32);
        /* from when the row was read, so a slow lookup cannot stretch the
         * revocation bound */
        sl->until_ns = a->read_ns + s->auth.ttl_ns;
        sl->read_ns = a->read_ns;
        sl->used = true;
        sl->refreshing = false;
        sl->info = a->info; /* the slot owns info.allow and info.upstream_auth now */
    }
    if (a->req) {
        a->req->job = NULL;
        a->cb(a->req, &a->info); /* allow is valid during the callback */
    }
    if (cached) a->info.allow = NULL, a->info.upstream_auth = NULL;
}

static void lookup_cleanup(kr_job *j)
{
    info_release(&((auth_job *)j)->info);
}

static auth_job *new_job(kr_proxy *s, const uint8_t *hash)
{
    auth_job *a = kr_xcalloc(1, sizeof *a);
    a->job.work = lookup_work;
    a->job.done = lookup_done;
    a->job.cleanup = lookup_cleanup;
    a->srv = s;
    memcpy(a->hash, hash, 32);
    kr_hex(hash, 32, a->hex);
    a->p = &s->p;
    return a;
}

bool kr_auth_lookup(kr_proxy *s, kr_req *r, const char *tok, size_t n, kr_auth_cb cb)
{
    uint8_t hash[32];
    crypto_generichash(hash, sizeof hash, (const uint8_t *)tok, n, NULL, 0);
    kr_auth_slot *sl = slot_for(&s->auth, hash);
    uint64_t now = kr_mono_ns();
    if (sl->used && sodium_memcmp(sl->hash, hash, 32) == 0 && now < sl->until_ns) {
        s->auth.hits++;
        /* in the last quarter of its life, a busy entry is renewed in the
         * background, so a hot token never expires into a burst of lookups;
         * the entry is never served past until_ns */
        if (!sl->refreshing && now > sl->until_ns - s->auth.ttl_ns / 4) {
            sl->refreshing = true;
            kr_workq_submit(s->workers, &new_job(s, hash)->job);
        }
        cb(r, &sl->info);
        return true;
    }
    s->auth.misses++;
    auth_job *a = new_job(s, hash);
    a->req = r;
    a->cb = cb;
    r->job = &a->job;
    kr_workq_submit(s->workers, &a->job);
    return false;
}
