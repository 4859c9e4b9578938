/*
 * egress_rules.c -- the pure half of the egress gate (confine.h): the
 * allow-list, the CONNECT request head, which addresses are public. No I/O;
 * the fuzz driver calls these directly.
 */
#include "confine/confine.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* ---- the allow-list ---- */

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* One entry "host:port" or "*.suffix:port" (lower-cased into e). */
static int parse_entry(const char *p, size_t n, kr_egress_entry *e, kr_diag *d)
{
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
        if (p[i - 1] == ':') {
            colon = p + i - 1;
            break;
        }
    if (!colon || colon == p)
        return kr_fail(d, KR_EINVAL, "egress entry '%.*s' is not host:port", (int)(n < 80 ? n : 80), p);
    uint64_t port;
    if (kr_parse_u64(colon + 1, (size_t)(p + n - colon - 1), &port) || port == 0 || port > 65535)
        return kr_fail(d, KR_EINVAL, "egress entry '%.*s': the port is not 1..65535",
                       (int)(n < 80 ? n : 80), p);
    size_t hl = (size_t)(colon - p);
    const char *h = p;
    e->wildcard = false;
    if (hl > 2 && h[0] == '*' && h[1] == '.') {
        e->wildcard = true;
        h += 2;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof e->host)
        return kr_fail(d, KR_EINVAL, "egress entry '%.*s': bad host", (int)(n < 80 ? n : 80), p);
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (!host_char(c))
            return kr_fail(d, KR_EINVAL,
                           "egress entry '%.*s': a host is letters, digits, '-' and '.' (IPv4 "
                           "literals included; a wildcard only as a leading '*.')",
                           (int)(n < 80 ? n : 80), p);
        e->host[i] = c;
    }
    e->host[hl] = 0;
    if (e->host[0] == '.' || e->host[hl - 1] == '.' || strstr(e->host, ".."))
        return kr_fail(d, KR_EINVAL, "egress entry '%.*s': bad host", (int)(n < 80 ? n : 80), p);
    e->port = (uint16_t)port;
    return 0;
}

int kr_egress_parse(const char *list, kr_egress *out, kr_diag *d)
{
    memset(out, 0, sizeof *out);
    if (!list) return 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ' ' && *p != ',' && *p != '\t' && *p != '\n') p++;
        if (out->n == KR_EGRESS_MAX)
            return kr_fail(d, KR_EINVAL, "at most %d egress entries", KR_EGRESS_MAX);
        int rc = parse_entry(s, (size_t)(p - s), &out->e[out->n], d);
        if (rc) return rc;
        out->n++;
    }
    return 0;
}

bool kr_egress_allows(const kr_egress *a, const char *host, uint16_t port)
{
    size_t hl = strlen(host);
    for (size_t i = 0; i < a->n; i++) {
        const kr_egress_entry *e = &a->e[i];
        if (e->port != port) continue;
        size_t el = strlen(e->host);
        if (!e->wildcard) {
            if (hl == el && !strcasecmp(host, e->host)) return true;
            continue;
        }
        /* "*.example.com" is every name under example.com, not example.com itself */
        if (hl > el + 1 && host[hl - el - 1] == '.' && !strcasecmp(host + hl - el, e->host))
            return true;
    }
    return false;
}

void kr_egress_render(const kr_egress *a, kr_buf *out)
{
    for (size_t i = 0; i < a->n; i++)
        kr_buf_printf(out, "%s%s%s:%u", i ? "," : "", a->e[i].wildcard ? "*." : "", a->e[i].host,
                      (unsigned)a->e[i].port);
}

/* ---- the CONNECT head ---- */

int kr_connect_parse(const char *p, size_t n, kr_connect_req *out)
{
    memset(out, 0, sizeof *out);
    if (n > KR_CONNECT_MAX_HEAD) return KR_ETOOBIG;
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return n == KR_CONNECT_MAX_HEAD ? KR_ETOOBIG : KR_EAGAIN_HEAD;
    out->head_len = (size_t)(end - p) + 4;
    /* no NUL, no bare CR or LF anywhere in the head */
    for (const char *q = p; q < end; q++) {
        if (*q == 0) return KR_EPARSE;
        if (*q == '\r' && q[1] != '\n') return KR_EPARSE;
        if (*q == '\n' && (q == p || q[-1] != '\r')) return KR_EPARSE;
    }
    const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    const char *line = p;
    size_t ll = (size_t)(eol - p);
    if (ll < 8 || memcmp(line, "CONNECT ", 8)) {
        out->not_connect = true;
        return KR_EPARSE;
    }
    const char *t = line + 8, *te = memchr(t, ' ', ll - 8);
    if (!te) return KR_EPARSE;
    const char *ver = te + 1;
    size_t vl = (size_t)(line + ll - ver);
    if (!(vl == 8 && (!memcmp(ver, "HTTP/1.1", 8) || !memcmp(ver, "HTTP/1.0", 8)))) return KR_EPARSE;
    size_t tl = (size_t)(te - t);
    /* authority-form: host:port, or [v6]:port */
    const char *colon = NULL;
    for (size_t i = tl; i > 0; i--)
        if (t[i - 1] == ':') {
            colon = t + i - 1;
            break;
        }
    if (!colon || colon == t) return KR_EPARSE;
    uint64_t port;
    if (kr_parse_u64(colon + 1, (size_t)(t + tl - colon - 1), &port) || port == 0 || port > 65535)
        return KR_EPARSE;
    const char *h = t;
    size_t hl = (size_t)(colon - t);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']') return KR_EPARSE;
        h++;
        hl -= 2;
        for (size_t i = 0; i < hl; i++) {
            char c = h[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                  c == ':' || c == '.'))
                return KR_EPARSE;
        }
    } else {
        for (size_t i = 0; i < hl; i++) {
            char c = h[i];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (!host_char(c)) return KR_EPARSE;
        }
    }
    if (hl == 0 || hl >= sizeof out->host) return KR_EPARSE;
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        out->host[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out->host[hl] = 0;
    out->port = (uint16_t)port;
    return 0;
}

/* ---- addresses ---- */

bool kr_addr_is_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (a[0] == 0 || a[0] == 10 || a[0] == 127) return false;          /* this, private, loopback */
        if (a[0] == 100 && (a[1] & 0xc0) == 64) return false;              /* CGNAT 100.64/10 */
        if (a[0] == 169 && a[1] == 254) return false;                      /* link-local */
        if (a[0] == 172 && (a[1] & 0xf0) == 16) return false;              /* private */
        if (a[0] == 192 && a[1] == 168) return false;                      /* private */
        if (a[0] == 192 && a[1] == 0 && a[2] == 0) return false;           /* IETF protocol */
        if (a[0] >= 224) return false; /* multicast, reserved, broadcast */
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(a, v4mapped, 12)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            memcpy(&v4.sin_addr, a + 12, 4);
            return kr_addr_is_public((const struct sockaddr *)&v4);
        }
        bool zero = true;
        for (int i = 0; i < 15; i++) zero = zero && a[i] == 0;
        if (zero) return false;                          /* :: and ::1 */
        if ((a[0] & 0xfe) == 0xfc) return false;         /* unique local fc00::/7 */
        if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return false; /* link-local fe80::/10 */
        if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) return false; /* site-local (deprecated) */
        if (a[0] == 0xff) return false;                  /* multicast */
        if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b) return false; /* NAT64 */
        if (a[0] == 0x20 && a[1] == 0x02) return false;  /* 6to4: embeds any IPv4 */
        if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) return false; /* Teredo */
        return true;
    }
    return false;
}
