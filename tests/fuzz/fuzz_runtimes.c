/*
 * fuzz_runtimes.c -- the runtime profile parser and file renderer on hostile
 * input. Input: a profiles file. Checks: a parsed profile's file renders for
 * any base URL / variable / model without a crash, and a rendered file never
 * holds a credential (the renderer refuses values that carry one).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/cred.h"
#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kr_runtimes *r;
    kr_diag d = {{0}};
    if (kr_runtimes_parse((const char *)data, size, &r, &d)) return 0;
    static const char *const urls[] = {"http://127.0.0.1:8080/openai/v1", "https://a\"b\\c",
                                       "https://x/sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", ""};
    for (size_t i = 0; i < r->n; i++) {
        const kr_runtime *rt = &r->rt[i];
        (void)kr_runtimes_find(r, rt->name);
        (void)kr_runtimes_role(r, rt->set_base_url);
        if (!rt->file[0]) continue;
        for (size_t u = 0; u < sizeof urls / sizeof urls[0]; u++) {
            kr_buf out = KR_BUF_INIT(1 << 20);
            if (kr_runtime_render_file(rt, urls[u], rt->set_bearer, u & 1 ? "gpt-x" : "", &out, &d) == 0 &&
                kr_cred_find(out.data ? out.data : "", out.len, NULL, NULL) != KR_CRED_NONE)
                abort();
            kr_buf_free(&out);
        }
    }
    kr_runtimes_free(r);
    return 0;
}
