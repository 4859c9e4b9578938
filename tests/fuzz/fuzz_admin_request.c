/*
 * fuzz_admin_request.c -- the admin API's request reading on hostile input:
 * a raw HTTP request goes through the real parser (http1.c) and, when it is
 * complete, through kr_admin_parse (the route from the operations table, path
 * and query decoding, the JSON body, the credential, the idempotency key).
 * Checks: a refusal has a 4xx status, a code and a message; an accepted call
 * names an operation or a special route, its parameters are one object, and
 * its hashes are 64 hex digits or empty.
 */
#include "fuzz_check.h"
#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

#include "admin/admin.h"
#include "http/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool hex_or_empty(const char *s)
{
    size_t n = strlen(s);
    if (n == 0) return true;
    if (n != 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const kr_http_limits lim = {16384, 64, 1 << 20};
    kr_http_parser p;
    kr_http_parser_init(&p, &lim);
    size_t used = 0, off = 0;
    int rc = kr_http_feed(&p, (const char *)data, size, &used);
    if (rc == KR_HTTP_HEAD) {
        off = used;
        rc = kr_http_feed(&p, (const char *)data + off, size - off, &used);
    }
    if (rc == KR_HTTP_DONE) {
        kr_admin_call c;
        kr_admin_parse(&p.req, (int)(size % 3), &c);
        if (c.status) {
            CHECK(c.status >= 400 && c.status < 500);
            CHECK(c.code[0] && c.msg[0]);
        } else {
            CHECK(c.op || c.special);
            CHECK(cJSON_IsObject(c.params));
            CHECK(hex_or_empty(c.bearer_hash) && hex_or_empty(c.session_hash));
            CHECK(c.special == SP_SESSION_CREATE || c.special == SP_OPENAPI || c.bearer_hash[0] ||
                  c.session_hash[0]);
        }
        kr_admin_call_free(&c);
    }
    kr_http_parser_free(&p);
    return 0;
}
