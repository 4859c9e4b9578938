/*
 * resolve.c -- provider resolution, rules R1..R5 of provision.h. Pure: it
 * reads the secret set and the registry and writes only *out.
 */
#include "provision/provision.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kr_origin_name(kr_origin o)
{
    static const char *const n[] = {"org", "workspace", "payload", "default", "provisioner",
                                    "inherited", "launcher"};
    return (unsigned)o < sizeof n / sizeof n[0] ? n[o] : "?";
}

__attribute__((format(printf, 3, 4))) static void step(kr_resolution *r, const char *rule,
                                                       const char *fmt, ...)
{
    if (r->ntrace >= KR_TRACE_MAX) return;
    kr_trace_step *s = &r->trace[r->ntrace++];
    kr_strlcpy(s->rule, rule, sizeof s->rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text, sizeof s->text, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void fail(kr_resolution *r, int err, const char *rule,
                                                       const char *fmt, ...)
{
    r->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    step(r, rule, "%s: %s", kr_err_name(err), r->msg);
    r->route = KR_ROUTE_NONE;
}

/* R4: the provider's credential, from the first of its credential_env names
 * that holds a non-empty value. */
static void byok(const kr_provider *p, const kr_runtime *rt, const kr_secrets *secrets,
                 kr_resolution *r, const char *rule)
{
    if (p->proto != rt->proto) {
        fail(r, KR_EUNKNOWN_MODEL, rule,
             "BYOK provider '%s' serves the %s protocol; runtime '%s' speaks %s and cannot use it",
             p->name, kr_proto_name(p->proto), rt->name, kr_proto_name(rt->proto));
        return;
    }
    r->route = KR_ROUTE_BYOK;
    kr_strlcpy(r->provider, p->name, sizeof r->provider);
    r->proto = p->proto;
    for (size_t i = 0; i < p->ncredential_env; i++) {
        const kr_secret_entry *e = kr_secrets_get(secrets, p->credential_env[i]);
        if (e && e->read.state == KR_SECRET_VALUE && e->read.len > 0) {
            kr_strlcpy(r->credential_key, p->credential_env[i], sizeof r->credential_key);
            step(r, rule, "BYOK provider '%s' (%s protocol), credential from %s (%s scope)",
                 p->name, kr_proto_name(p->proto), e->key, kr_origin_name(e->origin));
            return;
        }
    }
    char names[256] = "";
    for (size_t i = 0; i < p->ncredential_env; i++) {
        if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
        strncat(names, p->credential_env[i], sizeof names - strlen(names) - 1);
    }
    fail(r, KR_EMISSING_BYOK_CREDENTIAL, rule,
         "BYOK provider '%s' needs one of %s in the org or workspace secrets", p->name, names);
}

/* R6: how a BYOK workspace reaches its vendor. Through keyrail's proxy by
 * default -- the workspace holds a workspace token, the org's key stays on
 * the server -- or, with BYOK_ROUTE=direct (org or workspace), the agent
 * holds the key and calls the vendor itself. */
static void byok_route(const kr_provision_ctx *ctx, const kr_secrets *secrets, kr_resolution *r)
{
    const kr_secret_entry *e = kr_secrets_get(secrets, "BYOK_ROUTE");
    const char *v = e && e->read.state == KR_SECRET_VALUE ? e->read.value : "";
    r->byok_route_origin = *v ? e->origin : KR_ORIGIN_DEFAULT;
    if (!strcmp(v, "direct")) {
        r->byok_direct = true;
        step(r, "R6", "BYOK direct: BYOK_ROUTE=direct (%s scope): the agent holds the org's key "
                      "and calls the vendor itself",
             kr_origin_name(e->origin));
        return;
    }
    if (*v && strcmp(v, "proxy")) {
        fail(r, KR_EINVAL, "R6", "BYOK_ROUTE='%.40s' (%s scope) is neither proxy nor direct", v,
             kr_origin_name(e->origin));
        return;
    }
    if (!ctx->proxy_url || !ctx->proxy_url[0]) {
        fail(r, KR_EMISSING_PLATFORM_PROXY, "R6",
             "BYOK through keyrail's proxy but no proxy URL is configured (server.public_url); "
             "or set BYOK_ROUTE=direct");
        return;
    }
    if (*v)
        step(r, "R6", "BYOK through keyrail's proxy: BYOK_ROUTE=proxy (%s scope); the org's key "
                      "stays on the server",
             kr_origin_name(e->origin));
    else
        step(r, "R6", "BYOK through keyrail's proxy (the default: BYOK_ROUTE unset); the org's "
                      "key stays on the server");
}

void kr_resolve(const kr_provision_ctx *ctx, kr_ws_kind kind, const char *runtime,
                const kr_secrets *secrets, kr_resolution *r)
{
    memset(r, 0, sizeof *r);
    const kr_runtime *rt = kr_runtimes_find(ctx->rts, runtime);
    if (!rt) {
        char names[256];
        kr_runtimes_list_names(ctx->rts, names, sizeof names);
        fail(r, KR_EINVAL, "R0", "unknown runtime '%s' (runtime profiles: %s)", runtime, names);
        return;
    }
    kr_proto runtime_proto = rt->proto;
    r->proto = runtime_proto;
    kr_strlcpy(r->runtime, rt->name, sizeof r->runtime);

    /* Fail closed: no decision is taken while any secret is unreadable. */
    for (size_t i = 0; i < secrets->n; i++)
        if (secrets->e[i].read.state == KR_SECRET_UNREADABLE) {
            fail(r, KR_ESECRET_UNREADABLE, "R1",
                 "secret %s (%s scope) could not be read (%s); refusing to guess or overwrite it",
                 secrets->e[i].key, kr_origin_name(secrets->e[i].origin),
                 kr_err_name(secrets->e[i].read.err));
            return;
        }

    /* R2: the effective model. */
    const kr_secret_entry *me = kr_secrets_get(secrets, "MODEL");
    if (me && me->read.state == KR_SECRET_VALUE) {
        kr_strlcpy(r->model, me->read.value, sizeof r->model);
        r->model_origin = me->origin;
        r->model_present = true;
        step(r, "R2", "MODEL='%s' from %s", r->model, kr_origin_name(me->origin));
    } else if (kind == KR_WS_CONCIERGE) {
        const char *dm = ctx->concierge_default_model ? ctx->concierge_default_model : "";
        kr_strlcpy(r->model, dm, sizeof r->model);
        r->model_origin = KR_ORIGIN_DEFAULT;
        r->model_present = true;
        step(r, "R2", "no MODEL stored or in payload: concierge default model '%s'", dm);
    } else {
        step(r, "R2", "no MODEL stored or in payload");
    }

    /* R1: a stored provider pin wins. */
    const kr_secret_entry *pe = kr_secrets_get(secrets, "LLM_PROVIDER");
    if (pe && pe->read.state == KR_SECRET_VALUE && pe->read.len > 0) {
        const char *v = pe->read.value;
        if (!strcmp(v, "platform")) {
            r->route = KR_ROUTE_PLATFORM;
            kr_strlcpy(r->provider, "platform", sizeof r->provider);
            step(r, "R1", "LLM_PROVIDER=platform pinned (%s scope)", kr_origin_name(pe->origin));
        } else {
            const kr_provider *p = kr_registry_provider(ctx->reg, v);
            if (!p) {
                fail(r, KR_EUNKNOWN_PROVIDER, "R1",
                     "LLM_PROVIDER='%s' (%s scope) is not a provider in the registry", v,
                     kr_origin_name(pe->origin));
                return;
            }
            step(r, "R1", "LLM_PROVIDER=%s pinned (%s scope)", v, kr_origin_name(pe->origin));
            byok(p, rt, secrets, r, "R1");
            if (r->err) return;
        }
    } else {
        if (pe) step(r, "R1", "LLM_PROVIDER is stored but empty: ignored");
        if (!r->model_present) {
            fail(r, KR_EMISSING_MODEL, "R5",
                 "workspace has no MODEL and no LLM_PROVIDER; only a concierge has a default");
            return;
        }
        if (r->model[0] == 0) {
            r->route = KR_ROUTE_PLATFORM;
            kr_strlcpy(r->provider, "platform", sizeof r->provider);
            step(r, "R3", "empty model -> platform (empty is never a BYOK signal)");
        } else {
            const kr_provider *p = kr_registry_claim_proto(ctx->reg, r->model, (int)runtime_proto);
            if (!p) {
                fail(r, KR_EUNKNOWN_MODEL, "R5", "no provider in the registry claims model '%s'",
                     r->model);
                return;
            }
            if (p->platform) {
                r->route = KR_ROUTE_PLATFORM;
                kr_strlcpy(r->provider, "platform", sizeof r->provider);
                step(r, "R3", "model '%s' is platform-managed (provider '%s') -> platform", r->model,
                     p->name);
            } else {
                step(r, "R4", "model '%s' belongs to non-platform provider '%s'", r->model, p->name);
                byok(p, rt, secrets, r, "R4");
                if (r->err) return;
            }
        }
        if (r->route == KR_ROUTE_PLATFORM && kind == KR_WS_CONCIERGE) {
            r->pin_platform = true;
            step(r, "R3", "concierge: LLM_PROVIDER=platform will be persisted");
        }
    }

    if (r->route == KR_ROUTE_BYOK) byok_route(ctx, secrets, r);
    if (r->route == KR_ROUTE_PLATFORM) {
        r->proto = runtime_proto;
        if (!ctx->proxy_url || !ctx->proxy_url[0]) {
            fail(r, KR_EMISSING_PLATFORM_PROXY, "R5",
                 "platform route but no proxy URL is configured (server.public_url)");
            return;
        }
    }
}
