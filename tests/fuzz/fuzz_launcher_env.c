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
    kr_launch l;
    if (kr_launch_compute(&payload, &inh, (size & 1) ? token : NULL,
                          (size & 2) ? "http://127.0.0.1:18080" : NULL, &l, &d) == 0) {
        for (size_t i = 0; i < l.env.n; i++)
            if (!strncmp(l.env.v[i].key, "KEYRAIL_", 8)) abort();
        for (int p = 0; p < 2; p++) {
            int n = 0;
            for (size_t i = 0; i < kr_launch_ncred_vars[p]; i++) {
                const kr_env_var *v = kr_env_get(&l.env, kr_launch_cred_vars[p][i]);
                if (!v) continue;
                n++;
                const char *iss = kr_launch_issuer(kr_cred_classify(v->value, strlen(v->value)));
                if (v->origin == KR_ORIGIN_INHERITED && iss && !l.proto[p].to_proxy &&
                    strcmp(iss, l.proto[p].host))
                    abort(); /* an inherited credential went to a host that did not issue it */
            }
            if (n > 1) abort();
        }
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
