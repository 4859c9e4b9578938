/*
 * fuzz_launcher_env.c -- the launcher's payload parser and rules on hostile
 * input. Input: a payload (either format) and, after a 0xff byte, inherited
 * KEY=VALUE lines. Checks the invariants the generated unit test checks:
 * KEYRAIL_* never passes, at most one credential per protocol, and an
 * inherited credential of a known shape only goes to its issuer.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/launcher.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    static char token[KR_WS_TOKEN_LEN + 1];
    if (!init) {
        if (sodium_init() < 0) abort();
        memcpy(token, "krws_", 5);
        memset(token + 5, 'A', KR_WS_TOKEN_LEN - 5);
        init = 1;
    }
    const uint8_t *sep = memchr(data, 0xff, size);
    size_t plen = sep ? (size_t)(sep - data) : size;
    kr_env payload;
    kr_diag d = {{0}};
    if (kr_payload_parse((const char *)data, plen, &payload, &d)) return 0;
    kr_env inh = {0};
    if (sep) {
        const char *p = (const char *)sep + 1, *end = (const char *)data + size;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            const char *eq = memchr(p, '=', (size_t)(le - p));
            if (eq && eq > p && eq - p < 64 && !memchr(p, 0, (size_t)(le - p))) {
                char key[64], val[512];
                kr_memlcpy(key, sizeof key, p, (size_t)(eq - p));
                kr_memlcpy(val, sizeof val, eq + 1, (size_t)(le - eq - 1));
                kr_env_set(&inh, key, val, KR_ORIGIN_INHERITED);
            }
            p = nl ? nl + 1 : end;
        }
    }
    static kr_runtimes *rts;
    if (!rts && kr_runtimes_load(NULL, &rts, &d)) abort();
    char *argv[] = {(size & 4) ? "codex" : "claude", "-p", "x", NULL};
    kr_launch_in in = {&payload, &inh, (size & 1) ? token : NULL,
                       (size & 2) ? "http://127.0.0.1:18080" : NULL, rts, "/state", argv, 3,
                       /* confined every other input: the relay and gate rules too */
                       (size & 8) ? "http://127.0.0.1:29999" : NULL,
                       (size & 8) ? "http://127.0.0.1:49999" : NULL};
    kr_launch l;
    if (kr_launch_compute(&in, &l, &d) == 0) {
        for (size_t i = 0; i < l.env.n; i++) {
            const kr_env_var *v = &l.env.v[i];
            if (!strncmp(v->key, "KEYRAIL_", 8)) abort();
            int role = kr_runtimes_role(rts, v->key);
            /* an inherited header or provider switch never passes */
            if ((role == KR_RTVAR_HEADERS || role == KR_RTVAR_PROVIDER) &&
                v->origin == KR_ORIGIN_INHERITED)
                abort();
            /* an inherited credential never passes */
            if (role == KR_RTVAR_CREDENTIAL && v->origin == KR_ORIGIN_INHERITED) abort();
            /* a credential-shaped value only in a protocol's one credential variable */
            if (kr_cred_find(v->value, strlen(v->value), NULL, NULL) != KR_CRED_NONE &&
                v->origin == KR_ORIGIN_INHERITED)
                abort();
        }
        for (int p = 0; p < 2; p++) {
            int n = 0;
            for (size_t r = 0; r < rts->n; r++) {
                if ((int)rts->rt[r].proto != p) continue;
                for (size_t i = 0; i < rts->rt[r].vars[KR_RTVAR_CREDENTIAL].n; i++) {
                    const char *var = rts->rt[r].vars[KR_RTVAR_CREDENTIAL].v[i];
                    bool dup = false;
                    for (size_t q = 0; q < r && !dup; q++)
                        if ((int)rts->rt[q].proto == p)
                            for (size_t k = 0; k < rts->rt[q].vars[KR_RTVAR_CREDENTIAL].n; k++)
                                if (!strcmp(rts->rt[q].vars[KR_RTVAR_CREDENTIAL].v[k], var)) dup = true;
                    for (size_t k = 0; k < i && !dup; k++)
                        if (!strcmp(rts->rt[r].vars[KR_RTVAR_CREDENTIAL].v[k], var)) dup = true;
                    if (!dup && kr_env_get(&l.env, var)) n++;
                }
            }
            if (n > 1) abort();
        }
        for (size_t i = 0; i < l.nfiles; i++) /* no credential is ever written to a file */
            if (kr_cred_find(l.files[i].content.data ? l.files[i].content.data : "",
                             l.files[i].content.len, NULL, NULL) != KR_CRED_NONE)
                abort();
        kr_buf out = KR_BUF_INIT(1 << 20);
        kr_launch_render_text(&l, &out);
        kr_launch_render_json(&l, &out);
        kr_buf_free(&out);
        kr_launch_free(&l);
    }
    kr_env_free(&payload);
    kr_env_free(&inh);
    return 0;
}
