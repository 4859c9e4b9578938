/*
 * confine.h -- `keyrail run --confine`: the agent runs where it can reach
 * keyrail and an allow-list, and nothing else (docs/SECURITY.md, "A hostile
 * agent").
 *
 *   sandbox.c       the child: its own network namespace (and user
 *                   namespace when not root) with only loopback up, the
 *                   listening sockets bound inside and handed to the parent
 *                   (SCM_RIGHTS), a mount namespace that hides container
 *                   engine sockets and $XDG_RUNTIME_DIR, no new privileges,
 *                   a seccomp filter, a non-root uid without capabilities
 *                   when started as root; then exec
 *   gate.c          the parent: serves those sockets on a libuv loop -- the
 *                   keyrail relay (every request forwarded to the keyrail
 *                   server, TLS verified) and an HTTP CONNECT proxy that
 *                   opens tunnels only to the egress allow-list, resolving
 *                   names itself and refusing loopback, link-local and
 *                   private answers; no DNS is forwarded anywhere
 *   egress_rules.c  pure: the allow-list, the CONNECT head parser, which
 *                   addresses are public (the fuzz driver's)
 *
 * The parent is not ptrace-able (PR_SET_DUMPABLE 0), holds the only route
 * out, and exits with the agent's status.
 */
#ifndef KR_CONFINE_H
#define KR_CONFINE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/err.h"

/* ---- the allow-list (egress_rules.c) ---- */

#define KR_EGRESS_MAX 64

typedef struct kr_egress_entry {
    char host[254]; /* lower case; for a wildcard, the suffix after "*." */
    bool wildcard;  /* "*.example.com": names under example.com, not itself */
    uint16_t port;
} kr_egress_entry;

typedef struct kr_egress {
    kr_egress_entry e[KR_EGRESS_MAX];
    size_t n;
} kr_egress;

/* "host:port" entries separated by commas or spaces; NULL or "" is empty. */
int kr_egress_parse(const char *list, kr_egress *out, kr_diag *d);
bool kr_egress_allows(const kr_egress *a, const char *host, uint16_t port);
void kr_egress_render(const kr_egress *a, kr_buf *out);

/* ---- the CONNECT head (egress_rules.c) ---- */

#define KR_CONNECT_MAX_HEAD 8192
#define KR_EAGAIN_HEAD 1 /* kr_connect_parse: the head is not complete yet */

typedef struct kr_connect_req {
    char host[256]; /* lower case; an IPv6 literal without brackets */
    uint16_t port;
    size_t head_len;  /* bytes of the head, CRLFCRLF included */
    bool not_connect; /* a request with another method */
} kr_connect_req;

/* 0 (a complete, valid CONNECT head), KR_EAGAIN_HEAD (need more bytes),
 * KR_ETOOBIG (over KR_CONNECT_MAX_HEAD) or KR_EPARSE. */
int kr_connect_parse(const char *p, size_t n, kr_connect_req *out);

/* False for unspecified, loopback, private (RFC 1918, CGNAT, ULA),
 * link-local, multicast and reserved addresses, and for IPv6 forms that
 * embed an IPv4 address (mapped, 6to4, Teredo, NAT64). */
bool kr_addr_is_public(const struct sockaddr *sa);

/* ---- the sandbox and the gate ---- */

#define KR_CONFINE_NFDS 4 /* relay on 127.0.0.1 and ::1, the gate on 127.0.0.1 and ::1 */

typedef struct kr_confine_opts {
    const char *server;    /* the keyrail server's origin the relay forwards to ("": none) */
    const char *ca_file;   /* for an https server: the trust anchors ("" = system) */
    kr_egress egress;      /* the CONNECT proxy's allow-list */
    uint16_t relay_port;   /* inside ports, chosen before the environment is built */
    uint16_t connect_port;
    const char *run_as;    /* as root: the user the agent runs as (NULL: the default) */
    bool quiet;            /* no stderr line per refused tunnel */
    /* in the child, as the agent's user, before the filter and the exec:
     * writes what the agent reads (its runtime files); 0 or failure */
    int (*before_exec)(void *arg);
    void *arg;
} kr_confine_opts;

/* Whether the kernel lets this process confine an agent: 0, or an error with
 * d saying why in one line. Leaves nothing behind. */
int kr_confine_probe(kr_diag *d);

/* What the sandbox hides from the agent (for explain): one path per line. */
void kr_confine_hidden(kr_buf *out);

/* Who the agent runs as: this user, or, when root, --user (run_as), else
 * $SUDO_UID, else nobody -- never uid 0. */
int kr_confine_target(const kr_confine_opts *o, uid_t *uid, gid_t *gid, kr_diag *d);

/* Runs argv confined with envp; returns the exit status for keyrail run to
 * exit with (the agent's, 128 + its signal, or 1 with a line on stderr when
 * the sandbox could not be set up: then the agent never started). */
int kr_confine_run(const kr_confine_opts *o, char *const *argv, char *const *envp);

/* ---- between sandbox.c and gate.c ---- */

/* Forks the sandbox; *sock is the parent's end of the socketpair. */
pid_t kr_confine_spawn(const kr_confine_opts *o, char *const *argv, char *const *envp, int *sock,
                       kr_diag *d);
/* The sandbox's report: 0 with its listening sockets, or -1 with why. */
int kr_confine_recv(int sock, char *text, size_t cap, int *fds, int *nfds);
/* Serves the sockets until the agent exits; says "go" first. Returns the
 * exit status. */
int kr_confine_serve(const kr_confine_opts *o, pid_t child, int sock, const int *fds, int nfds);

#endif
