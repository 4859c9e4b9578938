/*
 * sandbox.c -- the confined child of `keyrail run` (confine.h).
 *
 * The child, before it becomes the agent:
 *   1. asks to be killed with its parent (PR_SET_PDEATHSIG);
 *   2. unshares a network and a mount namespace (and a user namespace when
 *      not root, mapping its own uid and gid, nothing else);
 *   3. brings loopback up -- the only interface there is;
 *   4. binds the relay and CONNECT ports on 127.0.0.1 and ::1 and hands the
 *      listening sockets to the parent over the socketpair (SCM_RIGHTS):
 *      the parent serves them from outside, no relay process and no socket
 *      path inside;
 *   5. hides container engine sockets and $XDG_RUNTIME_DIR (a network
 *      namespace does not stop connect() on a path): /dev/null bound over
 *      a socket, an empty read-only tmpfs over a directory;
 *   6. waits for the parent's "go" (its gate is serving);
 *   7. as root, drops every capability from its bounding set and becomes
 *      the run-as user (no uid 0 left, so no capability either); sets
 *      PR_SET_NO_NEW_PRIVS and installs the seccomp filter;
 *   8. execs the agent.
 * Any failure before the exec goes back to the parent as one line, and the
 * agent is not started.
 */
#include "confine/confine.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- messages between the child and the parent ---- */

/* The child's report: "ok" with the listening sockets, or "E<why>". */
static void send_msg(int sock, const char *text, const int *fds, int nfds)
{
    struct iovec iov = {(void *)text, strlen(text) + 1};
    char cbuf[CMSG_SPACE(sizeof(int) * KR_CONFINE_NFDS)];
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(cbuf, 0, sizeof cbuf);
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    while (sendmsg(sock, &m, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

int kr_confine_recv(int sock, char *text, size_t cap, int *fds, int *nfds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * KR_CONFINE_NFDS)];
    struct iovec iov = {text, cap - 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    ssize_t n;
    while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
    *nfds = 0;
    if (n <= 0) {
        kr_strlcpy(text, "the sandbox ended before it was ready", cap);
        return -1;
    }
    text[n] = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*nfds < KR_CONFINE_NFDS) fds[(*nfds)++] = fd;
            else close(fd);
        }
    }
    return strcmp(text, "ok") ? -1 : 0;
}

/* ---- the child's steps ---- */

typedef struct {
    int sock;
    bool gone_ahead; /* the parent said go: it reads no more reports */
    char why[300];
} child_ctx;

__attribute__((format(printf, 2, 3))) static int cfail(child_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    return -1;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int map_ids(child_ctx *c, uid_t uid, gid_t gid)
{
    char buf[64];
    if (write_file("/proc/self/setgroups", "deny"))
        return cfail(c, "cannot write /proc/self/setgroups: %s", strerror(errno));
    snprintf(buf, sizeof buf, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    if (write_file("/proc/self/uid_map", buf))
        return cfail(c, "cannot write /proc/self/uid_map: %s", strerror(errno));
    snprintf(buf, sizeof buf, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    if (write_file("/proc/self/gid_map", buf))
        return cfail(c, "cannot write /proc/self/gid_map: %s", strerror(errno));
    return 0;
}

static int loopback_up(child_ctx *c)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return cfail(c, "socket: %s", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    kr_strlcpy(ifr.ifr_name, "lo", sizeof ifr.ifr_name);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (!rc) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(s);
    return rc ? cfail(c, "cannot bring loopback up: %s", strerror(e)) : 0;
}

/* A listening socket on loopback (v6: ::1), or -1 with errno. */
static int listen_on(bool v6, uint16_t port)
{
    int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        a.sin6_addr = in6addr_loopback;
        rc = bind(s, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = bind(s, (struct sockaddr *)&a, sizeof a);
    }
    if (rc || listen(s, 128)) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* The paths hidden from the agent (kr_confine_hidden lists the same). */
static size_t hidden_paths(char out[][512], size_t max)
{
    size_t n = 0;
    static const char *const fixed[] = {
        "/var/run/docker.sock",          "/run/docker.sock",
        "/run/podman/podman.sock",       "/var/run/podman/podman.sock",
        "/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock",
        "/run/crio/crio.sock",           "/var/run/crio/crio.sock",
        "/run/buildkit/buildkitd.sock",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && n < max; i++)
        kr_strlcpy(out[n++], fixed[i], 512);
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && x[0] == '/' && n < max) kr_strlcpy(out[n++], x, 512);
    static const char *const hosts[] = {"DOCKER_HOST", "CONTAINER_HOST"};
    for (size_t i = 0; i < 2 && n < max; i++) {
        const char *h = getenv(hosts[i]);
        if (h && !strncmp(h, "unix://", 7) && h[7] == '/') kr_strlcpy(out[n++], h + 7, 512);
    }
    const char *home = getenv("HOME");
    if (home && home[0] == '/' && n < max)
        kr_snprintf(out[n++], 512, "%s/.docker/run/docker.sock", home);
    return n;
}

void kr_confine_hidden(kr_buf *out)
{
    char p[16][512];
    size_t n = hidden_paths(p, 16);
    for (size_t i = 0; i < n; i++) {
        kr_buf_puts(out, p[i]);
        kr_buf_putc(out, '\n');
    }
}

static int hide(child_ctx *c)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        return cfail(c, "cannot make the mount namespace private: %s", strerror(errno));
    char p[16][512];
    size_t n = hidden_paths(p, 16);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (lstat(p[i], &st)) continue; /* nothing there to hide */
        int rc;
        if (S_ISDIR(st.st_mode))
            rc = mount("tmpfs", p[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                       "size=4k,mode=000");
        else
            rc = mount("/dev/null", p[i], NULL, MS_BIND, NULL);
        if (rc) return cfail(c, "cannot hide %s: %s", p[i], strerror(errno));
    }
    return 0;
}

/* ---- privileges ---- */

static int drop_root(child_ctx *c, uid_t uid, gid_t gid)
{
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL)
            return cfail(c, "cannot drop capability %d: %s", cap, strerror(errno));
    if (setgroups(0, NULL)) return cfail(c, "setgroups: %s", strerror(errno));
    if (setresgid(gid, gid, gid)) return cfail(c, "setresgid(%u): %s", (unsigned)gid, strerror(errno));
    if (setresuid(uid, uid, uid)) return cfail(c, "setresuid(%u): %s", (unsigned)uid, strerror(errno));
    if (getuid() == 0 || geteuid() == 0 || setuid(0) == 0)
        return cfail(c, "still root after dropping to uid %u", (unsigned)uid);
    return 0;
}

#if defined(__x86_64__)
#define KR_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KR_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Denied: io_uring (it bypasses the filter for what it does), ptrace and
 * process_vm_* (reading the parent or a sibling), setns, and sockets of
 * the VSOCK family (a path to the host that no network namespace covers). */
static int seccomp_install(child_ctx *c)
{
#ifdef KR_AUDIT_ARCH
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KR_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* the x32 ABI: another syscall table, refused whole */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#endif
        DENY(__NR_io_uring_setup),
        DENY(__NR_io_uring_enter),
        DENY(__NR_io_uring_register),
        DENY(__NR_ptrace),
        DENY(__NR_process_vm_readv),
        DENY(__NR_process_vm_writev),
        DENY(__NR_setns),
        /* socket(AF_VSOCK, …) */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef DENY
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0))
        return cfail(c, "cannot install the seccomp filter: %s", strerror(errno));
    return 0;
#else
    return cfail(c, "no seccomp filter for this architecture");
#endif
}

/* ---- the child ---- */

typedef struct {
    const kr_confine_opts *o;
    char *const *argv, *const *envp;
    pid_t parent;
    bool root;
    uid_t uid, run_uid;
    gid_t gid, run_gid;
} child_args;

static int child_setup(child_ctx *c, const child_args *a)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != a->parent)
        return cfail(c, "the parent is gone");
    int flags = CLONE_NEWNET | CLONE_NEWNS | (a->root ? 0 : CLONE_NEWUSER);
    if (unshare(flags))
        return cfail(c, "unshare(%s): %s", a->root ? "network, mount" : "user, network, mount",
                     strerror(errno));
    if (!a->root && map_ids(c, a->uid, a->gid)) return -1;
    if (loopback_up(c)) return -1;
    int fds[KR_CONFINE_NFDS];
    const uint16_t ports[2] = {a->o->relay_port, a->o->connect_port};
    for (int i = 0; i < KR_CONFINE_NFDS; i++) {
        fds[i] = listen_on(i & 1, ports[i / 2]);
        if (fds[i] < 0) {
            int e = errno;
            for (int k = 0; k < i; k++) close(fds[k]);
            return cfail(c, "cannot listen on %s port %u inside: %s", i & 1 ? "::1" : "127.0.0.1",
                         (unsigned)ports[i / 2], strerror(e));
        }
    }
    int rc = hide(c);
    if (!rc) send_msg(c->sock, "ok", fds, KR_CONFINE_NFDS);
    for (int i = 0; i < KR_CONFINE_NFDS; i++) close(fds[i]);
    if (rc) return rc;
    /* the parent's gate is serving once it says go */
    char go;
    ssize_t n;
    while ((n = read(c->sock, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) _exit(1); /* the parent said no, or is gone: nothing to report to */
    c->gone_ahead = true;
    if (a->root && drop_root(c, a->run_uid, a->run_gid)) return -1;
    /* a change of credentials clears the parent-death signal: again */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != a->parent)
        return cfail(c, "the parent is gone");
    if (a->o->before_exec && a->o->before_exec(a->o->arg))
        return cfail(c, "the agent's runtime files could not be written");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return cfail(c, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    if (seccomp_install(c)) return -1;
    return 0;
}

static _Noreturn void child_main(int sock, const child_args *a)
{
    child_ctx c = {sock, false, ""};
    if (child_setup(&c, a)) {
        if (c.gone_ahead) /* the parent no longer reads: say it on stderr */
            fprintf(stderr, "keyrail run: confinement: %s; the agent was not started\n", c.why);
        else {
            char msg[320];
            snprintf(msg, sizeof msg, "E%s", c.why);
            send_msg(sock, msg, NULL, 0);
        }
        _exit(126);
    }
    close(sock);
    execvpe(a->argv[0], a->argv, (char **)a->envp);
    fprintf(stderr, "keyrail run: cannot start %s: %s\n", a->argv[0], strerror(errno));
    _exit(127);
}

/* The user an agent started by root runs as: --user, else $SUDO_UID, else
 * nobody. */
static int run_as(const char *name, uid_t *uid, gid_t *gid, kr_diag *d)
{
    if (!name || !*name) {
        const char *su = getenv("SUDO_UID"), *sg = getenv("SUDO_GID");
        uint64_t u, g;
        if (su && sg && !kr_parse_u64(su, strlen(su), &u) && !kr_parse_u64(sg, strlen(sg), &g) &&
            u != 0 && u < UINT32_MAX && g < UINT32_MAX) {
            *uid = (uid_t)u, *gid = (gid_t)g;
            return 0;
        }
        name = "nobody";
    }
    uint64_t n;
    if (!kr_parse_u64(name, strlen(name), &n)) {
        if (n == 0 || n >= UINT32_MAX) return kr_fail(d, KR_EINVAL, "--user: not a non-root uid");
        struct passwd *pw = getpwuid((uid_t)n);
        *uid = (uid_t)n;
        *gid = pw ? pw->pw_gid : (gid_t)n;
        return 0;
    }
    struct passwd *pw = getpwnam(name);
    if (!pw) return kr_fail(d, KR_EINVAL, "--user: no user '%s'", name);
    if (pw->pw_uid == 0) return kr_fail(d, KR_EINVAL, "--user: '%s' is root", name);
    *uid = pw->pw_uid, *gid = pw->pw_gid;
    return 0;
}

int kr_confine_target(const kr_confine_opts *o, uid_t *uid, gid_t *gid, kr_diag *d)
{
    if (geteuid() != 0) {
        *uid = getuid(), *gid = getgid();
        return 0;
    }
    return run_as(o->run_as, uid, gid, d);
}

pid_t kr_confine_spawn(const kr_confine_opts *o, char *const *argv, char *const *envp, int *sock,
                       kr_diag *d)
{
    child_args a = {o, argv, envp, getpid(), geteuid() == 0, getuid(), 0, getgid(), 0};
    if (a.root && run_as(o->run_as, &a.run_uid, &a.run_gid, d)) return -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
        return kr_fail(d, KR_EIO, "socketpair: %s", strerror(errno)), -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]), close(sv[1]);
        return kr_fail(d, KR_EIO, "fork: %s", strerror(errno)), -1;
    }
    if (pid == 0) {
        close(sv[0]);
        child_main(sv[1], &a);
    }
    close(sv[1]);
    *sock = sv[0];
    return pid;
}

/* ---- the probe ---- */

int kr_confine_probe(kr_diag *d)
{
#ifndef KR_AUDIT_ARCH
    return kr_fail(d, KR_EINVAL, "no seccomp filter for this architecture");
#else
    bool root = geteuid() == 0;
    pid_t pid = fork();
    if (pid < 0) return kr_fail(d, KR_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        int flags = CLONE_NEWNET | CLONE_NEWNS | (root ? 0 : CLONE_NEWUSER);
        _exit(unshare(flags) ? (errno & 0x7f) : 0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return kr_fail(d, KR_EINVAL, "the kernel refuses %s namespaces here (unshare: %s)",
                       root ? "network and mount" : "user, network and mount",
                       WIFEXITED(st) ? strerror(WEXITSTATUS(st)) : "the probe crashed");
    return 0;
#endif
}

int kr_confine_run(const kr_confine_opts *o, char *const *argv, char *const *envp)
{
    kr_diag d = {{0}};
    int sock;
    pid_t pid = kr_confine_spawn(o, argv, envp, &sock, &d);
    if (pid < 0) {
        fprintf(stderr, "keyrail run: confinement: %s; the agent was not started\n", d.msg);
        return 1;
    }
    /* the parent holds the only route out: not ptrace-able, not dumpable */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    char text[400];
    int fds[KR_CONFINE_NFDS], nfds = 0;
    if (kr_confine_recv(sock, text, sizeof text, fds, &nfds) || nfds != KR_CONFINE_NFDS) {
        for (int i = 0; i < nfds; i++) close(fds[i]);
        close(sock);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        fprintf(stderr, "keyrail run: confinement could not be set up: %s; the agent was not "
                        "started (--no-confine runs it unconfined)\n",
                text[0] == 'E' ? text + 1 : text);
        return 1;
    }
    return kr_confine_serve(o, pid, sock, fds, nfds);
}
