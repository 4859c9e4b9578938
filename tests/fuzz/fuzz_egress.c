/*
 * fuzz_egress.c -- libFuzzer driver for the pure half of keyrail run's
 * egress gate (src/confine/egress_rules.c): the CONNECT request head, the
 * allow-list and the address classes.
 *
 * The input is split at its first NUL: before it, an allow-list; after it,
 * what an agent sends the gate. Checked:
 *   - kr_egress_parse returns 0 or KR_EINVAL; on success every entry is a
 *     non-empty lower-case host of [a-z0-9.-] without a leading, trailing or
 *     doubled dot, a port 1..65535, and rendering and parsing again gives
 *     the same list;
 *   - kr_connect_parse returns 0, KR_EAGAIN_HEAD, KR_ETOOBIG or KR_EPARSE;
 *     on 0 the head length is within the input and ends with CRLFCRLF, the
 *     host is non-empty and lower case, the port 1..65535; a head that parses
 *     parses the same with any bytes appended; a prefix of a complete head
 *     (that stops before its CRLFCRLF) is never 0;
 *   - kr_egress_allows agrees with a plain reference matcher;
 *   - kr_addr_is_public on the input's bytes as an IPv4 and IPv6 address:
 *     never public for loopback, private, link-local, unspecified,
 *     multicast; an IPv4-mapped address is classed like its IPv4.
 */
#include "fuzz_check.h"
#include "confine/confine.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static bool ref_allows(const kr_egress *a, const char *host, uint16_t port)
{
    size_t hl = strlen(host);
    for (size_t i = 0; i < a->n; i++) {
        if (a->e[i].port != port) continue;
        size_t el = strlen(a->e[i].host);
        if (!a->e[i].wildcard && hl == el && !strcasecmp(host, a->e[i].host)) return true;
        if (a->e[i].wildcard && hl > el + 1 && host[hl - el - 1] == '.' &&
            !strcasecmp(host + hl - el, a->e[i].host))
            return true;
    }
    return false;
}

static void check_list(const kr_egress *a)
{
    for (size_t i = 0; i < a->n; i++) {
        const char *h = a->e[i].host;
        size_t l = strlen(h);
        if (!l || h[0] == '.' || h[l - 1] == '.' || strstr(h, "..") || !a->e[i].port) CHECK(false);
        for (size_t k = 0; k < l; k++)
            if (!((h[k] >= 'a' && h[k] <= 'z') || (h[k] >= '0' && h[k] <= '9') || h[k] == '-' ||
                  h[k] == '.'))
                CHECK(false);
    }
    kr_buf b = KR_BUF_INIT(1 << 20);
    kr_egress_render(a, &b);
    kr_egress again;
    if (kr_egress_parse(b.data ? b.data : "", &again, NULL) || again.n != a->n) CHECK(false);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(again.e[i].host, a->e[i].host) || again.e[i].port != a->e[i].port ||
            again.e[i].wildcard != a->e[i].wildcard)
            CHECK(false);
    kr_buf_free(&b);
}

static void check_addr(const uint8_t *d, size_t n)
{
    if (n < 16) return;
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    memcpy(&v4.sin_addr, d, 4);
    bool pub4 = kr_addr_is_public((struct sockaddr *)&v4);
    uint8_t a = d[0], b = d[1];
    if (pub4 && (a == 0 || a == 10 || a == 127 || (a == 169 && b == 254) || (a == 172 && (b & 0xf0) == 16) ||
                 (a == 192 && b == 168) || a >= 224))
        CHECK(false);
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    memcpy(&v6.sin6_addr, d, 16);
    bool pub6 = kr_addr_is_public((struct sockaddr *)&v6);
    const uint8_t *s6 = v6.sin6_addr.s6_addr;
    if (pub6 && (s6[0] == 0xff || (s6[0] & 0xfe) == 0xfc || (s6[0] == 0xfe && (s6[1] & 0xc0) == 0x80)))
        CHECK(false);
    /* mapped: the same answer as the IPv4 address */
    static const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(v6.sin6_addr.s6_addr, pre, 12);
    memcpy(v6.sin6_addr.s6_addr + 12, d, 4);
    if (kr_addr_is_public((struct sockaddr *)&v6) != pub4) CHECK(false);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    const uint8_t *nul = memchr(d, 0, n);
    size_t ln = nul ? (size_t)(nul - d) : n;
    char *list = malloc(ln + 1);
    memcpy(list, d, ln);
    list[ln] = 0;
    kr_egress a;
    int rc = kr_egress_parse(list, &a, NULL);
    if (rc != 0 && rc != KR_EINVAL) CHECK(false);
    if (rc) a.n = 0;
    else check_list(&a);
    free(list);
    const char *req = nul ? (const char *)nul + 1 : "";
    size_t rn = nul ? n - ln - 1 : 0;
    kr_connect_req c;
    rc = kr_connect_parse(req, rn, &c);
    if (rc != 0 && rc != KR_EAGAIN_HEAD && rc != KR_ETOOBIG && rc != KR_EPARSE) CHECK(false);
    if (rc == 0) {
        if (c.head_len < 4 || c.head_len > rn || memcmp(req + c.head_len - 4, "\r\n\r\n", 4)) CHECK(false);
        if (!c.host[0] || !c.port) CHECK(false);
        for (const char *p = c.host; *p; p++)
            if (*p >= 'A' && *p <= 'Z') CHECK(false);
        if (kr_egress_allows(&a, c.host, c.port) != ref_allows(&a, c.host, c.port)) CHECK(false);
        /* more bytes after a complete head change nothing (bounded) */
        if (rn + 8 <= KR_CONNECT_MAX_HEAD) {
            char *more = malloc(rn + 8);
            memcpy(more, req, rn);
            memcpy(more + rn, "XXXXXXXX", 8);
            kr_connect_req c2;
            if (kr_connect_parse(more, rn + 8, &c2) || strcmp(c2.host, c.host) || c2.port != c.port ||
                c2.head_len != c.head_len)
                CHECK(false);
            free(more);
        }
        /* a prefix stopping before the end of the head is never complete */
        kr_connect_req c3;
        if (kr_connect_parse(req, c.head_len - 1, &c3) == 0) CHECK(false);
    }
    check_addr(d, n);
    return 0;
}
