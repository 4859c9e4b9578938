/*
 * kbench -- the measurements of keyrail's benchmark (bench/run.sh) that wrk
 * cannot make. One file, no dependencies; built by bench/run.sh with
 * `cc -O2 -std=c17 -Wall -Wextra -Werror`.
 *
 *   kbench ttfb HOST PORT REQFILE [--samples N] [--warmup N] [--seconds S]
 *       One keep-alive connection; sends the raw HTTP/1.1 request in REQFILE
 *       (head + body, exactly as it goes on the wire), timestamps the first
 *       byte of the response body and the end of the response, repeats.
 *       First N warm-up requests (default 100; at most 1 s of them), then
 *       samples until N samples or S seconds, whichever comes first. Prints one
 *       JSON object: samples, errors, reconnects and p50/p90/p99 (µs) of
 *         ttfb   request written -> first body byte (for SSE: the first
 *                event; the response head alone does not count)
 *         ttlb   request written -> last byte of the response
 *         tail   ttlb - ttfb
 *       The clock starts just before the first byte of the request is
 *       written.
 *
 *   kbench streams HOST PORT REQFILE --conns N [--pid PID]... [--timeout S]
 *       Opens N connections at once, sends REQFILE on each (a slow stream,
 *       e.g. x-fake: mode=drip), reads every response to its end. While
 *       streams are open, samples VmRSS of each PID every 50 ms. Prints one
 *       JSON object: streams completed, failed, the most open at once, the
 *       seconds until all were open, peak summed VmRSS while >= 90% of N
 *       were open, and the summed VmHWM of the PIDs at the end (kB).
 *       With --interval-ms I (the vendor's gap between events, x-fake
 *       stamp=1 in the request): every event's delay, its arrival minus the
 *       "sent_ns" the vendor put in it (both CLOCK_MONOTONIC on this host),
 *       as p50/p99/p999/max (µs), the longest gap between two events of one
 *       stream (ms) and the streams with a gap over 1 s ("stalled").
 *       --ramp-ms R opens the connections evenly over R ms instead of all
 *       at once (a burst of 10,000 connects overflows accept queues).
 *
 * Responses are parsed just enough to find their end: status line,
 * content-length or chunked transfer-encoding, or close-delimited.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "kbench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    struct stat st;
    if (fstat(fileno(f), &st)) die(path);
    char *p = malloc((size_t)st.st_size + 1);
    if (!p) die("malloc");
    *n = fread(p, 1, (size_t)st.st_size, f);
    fclose(f);
    return p;
}

/* ---- the response parser ---- */

enum { RS_HEAD, RS_LENGTH, RS_CHUNK_SIZE, RS_CHUNK_DATA, RS_CHUNK_CRLF, RS_TRAILER, RS_CLOSE, RS_DONE,
       RS_ERROR };

typedef struct {
    int state;
    int status;
    bool close;    /* connection: close, or close-delimited */
    bool body_seen; /* a body byte arrived */
    char head[16384];
    size_t head_len;
    uint64_t left; /* content-length left, or bytes left in the chunk */
    char line[64];  /* a chunk-size or trailer line being assembled */
    size_t line_len;
} resp;

static void resp_init(resp *r)
{
    r->state = RS_HEAD;
    r->status = 0;
    r->close = false;
    r->body_seen = false;
    r->head_len = 0;
    r->left = 0;
    r->line_len = 0;
}

static bool header_is(const char *line, size_t n, const char *name, const char **val, size_t *vn)
{
    size_t l = strlen(name);
    if (n <= l || strncasecmp(line, name, l) || line[l] != ':') return false;
    const char *v = line + l + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    *val = v;
    *vn = (size_t)(e - v);
    return true;
}

/* The head is complete in r->head: decide how the body ends. */
static void resp_head_done(resp *r)
{
    const char *p = r->head, *e = r->head + r->head_len;
    if (r->head_len < 12 || memcmp(p, "HTTP/1.", 7)) {
        r->state = RS_ERROR;
        return;
    }
    r->status = atoi(p + 9);
    bool chunked = false, have_len = false;
    uint64_t len = 0;
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    while (nl && nl + 1 < e) {
        const char *ls = nl + 1;
        nl = memchr(ls, '\n', (size_t)(e - ls));
        if (!nl) break;
        const char *v;
        size_t vn;
        size_t n = (size_t)(nl - ls);
        if (header_is(ls, n, "transfer-encoding", &v, &vn)) {
            if (vn >= 7 && !strncasecmp(v + vn - 7, "chunked", 7)) chunked = true;
        } else if (header_is(ls, n, "content-length", &v, &vn)) {
            have_len = true;
            len = strtoull(v, NULL, 10);
        } else if (header_is(ls, n, "connection", &v, &vn)) {
            if (vn >= 5 && !strncasecmp(v, "close", 5)) r->close = true;
        }
    }
    if (r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200)) {
        r->state = RS_DONE;
    } else if (chunked) {
        r->state = RS_CHUNK_SIZE;
        r->line_len = 0;
    } else if (have_len) {
        r->left = len;
        r->state = len ? RS_LENGTH : RS_DONE;
    } else {
        r->close = true;
        r->state = RS_CLOSE;
    }
}

/* Feeds bytes; returns how many were used (the rest belong to the next
 * response). Sets r->body_seen when a body byte went by. */
static size_t resp_feed(resp *r, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && r->state != RS_DONE && r->state != RS_ERROR) {
        switch (r->state) {
        case RS_HEAD: {
            char c = p[i++];
            if (r->head_len >= sizeof r->head) {
                r->state = RS_ERROR;
                break;
            }
            r->head[r->head_len++] = c;
            if (c == '\n' && r->head_len >= 4 && !memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4)) {
                resp_head_done(r);
                if (r->state == RS_DONE && r->status >= 100 && r->status < 200) resp_init(r);
            }
            break;
        }
        case RS_LENGTH: {
            size_t k = n - i < r->left ? n - i : (size_t)r->left;
            r->body_seen = true;
            i += k;
            r->left -= k;
            if (!r->left) r->state = RS_DONE;
            break;
        }
        case RS_CLOSE:
            r->body_seen = true;
            i = n;
            break;
        case RS_CHUNK_SIZE:
        case RS_TRAILER: {
            char c = p[i++];
            r->body_seen = true;
            if (r->line_len < sizeof r->line) r->line[r->line_len++] = c;
            if (c != '\n') break;
            if (r->state == RS_TRAILER) {
                bool empty = r->line_len <= 2;
                r->line_len = 0;
                if (empty) r->state = RS_DONE;
                break;
            }
            r->line[r->line_len < sizeof r->line ? r->line_len : sizeof r->line - 1] = 0;
            r->left = strtoull(r->line, NULL, 16);
            r->line_len = 0;
            r->state = r->left ? RS_CHUNK_DATA : RS_TRAILER;
            break;
        }
        case RS_CHUNK_DATA: {
            size_t k = n - i < r->left ? n - i : (size_t)r->left;
            i += k;
            r->left -= k;
            if (!r->left) {
                r->state = RS_CHUNK_CRLF;
                r->line_len = 0;
            }
            break;
        }
        case RS_CHUNK_CRLF:
            if (p[i++] == '\n') r->state = RS_CHUNK_SIZE;
            break;
        default: break;
        }
    }
    return i;
}

static int connect_to(const char *host, int port, bool nonblock)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "kbench: %s is not an IPv4 address\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, size_t n, double p)
{
    if (!n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)sorted[i < n ? i : n - 1] / 1000.0;
}

static void print_dist(const char *name, uint64_t *v, size_t n, bool last)
{
    qsort(v, n, sizeof *v, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)v[i];
    printf("\"%s\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"min\":%.1f,\"max\":%.1f,\"mean\":%.1f}%s",
           name, pct(v, n, 50), pct(v, n, 90), pct(v, n, 99), n ? (double)v[0] / 1000.0 : 0,
           n ? (double)v[n - 1] / 1000.0 : 0, n ? sum / (double)n / 1000.0 : 0, last ? "" : ",");
}

/* ---- ttfb ---- */

static int cmd_ttfb(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kbench ttfb HOST PORT REQFILE [--samples N] [--warmup N] [--seconds S]\n");
        return 2;
    }
    const char *host = argv[0];
    int port = atoi(argv[1]);
    size_t reqn;
    char *req = read_file(argv[2], &reqn);
    long samples = 2000, warmup = 100;
    double seconds = 5;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--samples")) samples = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
    }
    uint64_t *ttfb = calloc((size_t)samples, sizeof *ttfb), *ttlb = calloc((size_t)samples, sizeof *ttlb),
             *tail = calloc((size_t)samples, sizeof *tail);
    if (!ttfb || !ttlb || !tail) die("calloc");
    struct timeval tv = {10, 0};
    int fd = -1, reconnects = -1;
    long n = 0, errors = 0, bad_status = 0, iter = 0;
    int last_status = 0;
    static char buf[1 << 16];
    uint64_t warm_until = now_ns() + 1000000000u, deadline = 0;
    while (n < samples && errors < 20) {
        if (!deadline && (iter >= warmup || now_ns() > warm_until)) {
            warmup = iter; /* warm-up over: sampling starts */
            deadline = now_ns() + (uint64_t)(seconds * 1e9);
        }
        if (deadline && now_ns() > deadline) break;
        if (fd < 0) {
            fd = connect_to(host, port, false);
            if (fd < 0) {
                errors++;
                continue;
            }
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            reconnects++;
        }
        resp r;
        resp_init(&r);
        uint64_t t0 = now_ns(), t_first = 0, t_last = 0;
        size_t off = 0;
        bool failed = false;
        while (off < reqn) {
            ssize_t w = write(fd, req + off, reqn - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                failed = true;
                break;
            }
            off += (size_t)w;
        }
        while (!failed && r.state != RS_DONE) {
            ssize_t k = read(fd, buf, sizeof buf);
            if (k < 0 && errno == EINTR) continue;
            uint64_t t = now_ns();
            if (k <= 0) {
                if (k == 0 && r.state == RS_CLOSE) {
                    r.state = RS_DONE;
                    t_last = t;
                    break;
                }
                failed = true;
                break;
            }
            size_t used = resp_feed(&r, buf, (size_t)k);
            if (r.body_seen && !t_first) t_first = t;
            if (r.state == RS_ERROR || used < (size_t)k) failed = true; /* no pipelining here */
            if (r.state == RS_DONE) t_last = t;
        }
        iter++;
        if (failed) {
            errors++;
            close(fd);
            fd = -1;
            continue;
        }
        if (!t_first) t_first = t_last;
        last_status = r.status;
        if (r.status != 200) bad_status++;
        if (r.close) {
            close(fd);
            fd = -1;
        }
        if (iter <= warmup) continue;
        ttfb[n] = t_first - t0;
        ttlb[n] = t_last - t0;
        tail[n] = t_last - t_first;
        n++;
    }
    if (fd >= 0) close(fd);
    printf("{\"samples\":%ld,\"errors\":%ld,\"bad_status\":%ld,\"last_status\":%d,\"reconnects\":%d,",
           n, errors, bad_status, last_status, reconnects < 0 ? 0 : reconnects);
    print_dist("ttfb", ttfb, (size_t)n, false);
    print_dist("ttlb", ttlb, (size_t)n, false);
    print_dist("tail", tail, (size_t)n, true);
    printf("}\n");
    return n > 0 && bad_status == 0 ? 0 : 1;
}

/* ---- streams ---- */

typedef struct {
    int fd;
    size_t sent;
    uint64_t t_first, t_last; /* the first and the latest event's arrival */
    unsigned events;
    char prev;                /* the last byte read: "\n\n" may straddle reads */
    bool stalled;
    bool open;      /* response head arrived, not finished */
    bool done;
    bool failed;
    resp r;
} sconn;

static long proc_kb(int pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = atol(line + kl + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Lateness histogram: 10 µs buckets up to 1 s, then one overflow bucket. */
#define LATE_BUCKETS 100001
static uint64_t *late_hist;
static uint64_t late_n, late_max_us, max_gap_ns;

/* An event arrived at t; sent: the vendor's stamp (0: none). */
static void note_event(sconn *c, uint64_t t, uint64_t sent)
{
    if (sent) {
        uint64_t late = t > sent ? (t - sent) / 1000 : 0;
        size_t b = late / 10 < LATE_BUCKETS - 1 ? late / 10 : LATE_BUCKETS - 1;
        late_hist[b]++;
        late_n++;
        if (late > late_max_us) late_max_us = late;
    }
    if (c->events) {
        if (t - c->t_last > max_gap_ns) max_gap_ns = t - c->t_last;
        if (t - c->t_last > 1000000000u) c->stalled = true;
    } else {
        c->t_first = t;
    }
    c->t_last = t;
    c->events++;
}

static double late_pct(double q)
{
    uint64_t want = (uint64_t)(q * (double)late_n), acc = 0;
    for (size_t b = 0; b < LATE_BUCKETS; b++) {
        acc += late_hist[b];
        if (acc > want) return (double)b * 10;
    }
    return (double)late_max_us;
}

static int cmd_streams(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kbench streams HOST PORT REQFILE --conns N [--pid PID]... [--timeout S]\n");
        return 2;
    }
    const char *host = argv[0];
    int port = atoi(argv[1]);
    size_t reqn;
    char *req = read_file(argv[2], &reqn);
    int nconn = 1000, npid = 0, pids[16];
    double timeout = 120, interval_ms = 0, ramp_ms = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conns")) nconn = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--interval-ms")) interval_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--ramp-ms")) ramp_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) timeout = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--pid") && npid < 16) pids[npid++] = atoi(argv[i + 1]);
    }
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)nconn + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)nconn + 64 ? rl.rlim_max : (rlim_t)nconn + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sconn *cs = calloc((size_t)nconn, sizeof *cs);
    late_hist = calloc(LATE_BUCKETS, sizeof *late_hist);
    if (!cs || !late_hist) die("calloc");
    uint64_t interval_ns = (uint64_t)(interval_ms * 1e6);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    uint64_t t0 = now_ns();
    /* connections open evenly over ramp_ms (0: all at once) */
    int opened = 0;
    int open_now = 0, max_open = 0, finished = 0, failed = 0, completed = 0;
#define OPEN_DUE()                                                                                 \
    do {                                                                                           \
        uint64_t tn = now_ns();                                                                    \
        while (opened < nconn &&                                                                   \
               (ramp_ms <= 0 || t0 + (uint64_t)(ramp_ms * 1e6 * opened / nconn) <= tn)) {        \
            int i = opened++;                                                                      \
            resp_init(&cs[i].r);                                                                   \
            cs[i].fd = connect_to(host, port, true);                                               \
            if (cs[i].fd < 0) {                                                                    \
                cs[i].failed = true;                                                               \
                failed++, finished++;                                                              \
                continue;                                                                          \
            }                                                                                      \
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};       \
            if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev)) die("epoll_ctl");                     \
        }                                                                                          \
    } while (0)
    OPEN_DUE();
    double all_open_s = -1;
    long peak_rss = 0, last_rss = 0;
    uint64_t next_sample = 0, deadline = t0 + (uint64_t)(timeout * 1e9);
    static char buf[1 << 16];
    struct epoll_event evs[256];
    while (finished < nconn && now_ns() < deadline) {
        OPEN_DUE();
        int k = epoll_wait(ep, evs, 256, opened < nconn ? 1 : 20);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < k; e++) {
            sconn *c = &cs[evs[e].data.u32];
            if (c->done || c->failed) continue;
            bool fail = false;
            if ((evs[e].events & EPOLLOUT) && c->sent < reqn) {
                ssize_t w = write(c->fd, req + c->sent, reqn - c->sent);
                if (w > 0) c->sent += (size_t)w;
                else if (w < 0 && errno != EAGAIN) fail = true;
                if (c->sent == reqn) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!fail && (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                for (;;) {
                    ssize_t r = read(c->fd, buf, sizeof buf);
                    if (r < 0 && errno == EAGAIN) break;
                    if (r < 0 && errno == EINTR) continue;
                    if (r <= 0) {
                        if (r == 0 && c->r.state == RS_CLOSE) c->r.state = RS_DONE;
                        else fail = true;
                        break;
                    }
                    if (interval_ns) {
                        /* an event ends with a blank line; the read's time is its
                         * arrival; its stamp is the last "sent_ns" before the end */
                        uint64_t t = now_ns(), sent = 0;
                        static const char key[] = "\"sent_ns\":";
                        for (ssize_t i = 0; i < r; i++) {
                            if (buf[i] == '"' && (size_t)(r - i) > sizeof key &&
                                !memcmp(buf + i, key, sizeof key - 1)) {
                                sent = 0;
                                for (ssize_t k = i + (ssize_t)sizeof key - 1; k < r && buf[k] >= '0' && buf[k] <= '9'; k++)
                                    sent = sent * 10 + (uint64_t)(buf[k] - '0');
                            }
                            if (buf[i] == '\n' && c->prev == '\n') {
                                note_event(c, t, sent);
                                sent = 0;
                            }
                            if (buf[i] != '\r') c->prev = buf[i];
                        }
                    }
                    resp_feed(&c->r, buf, (size_t)r);
                    if (c->r.state == RS_ERROR) {
                        fail = true;
                        break;
                    }
                    if (!c->open && c->r.state != RS_HEAD) {
                        c->open = true;
                        open_now++;
                        if (open_now > max_open) max_open = open_now;
                        if (open_now == nconn && all_open_s < 0)
                            all_open_s = (double)(now_ns() - t0) / 1e9;
                    }
                    if (c->r.state == RS_DONE) break;
                }
            }
            if (fail || c->r.state == RS_DONE) {
                if (c->open) open_now--;
                c->open = false;
                finished++;
                if (fail) {
                    c->failed = true;
                    failed++;
                } else {
                    c->done = true;
                    if (c->r.status == 200) completed++;
                    else failed++;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
            }
        }
        uint64_t t = now_ns();
        if (npid && t >= next_sample) {
            next_sample = t + 50000000u;
            long rss = 0;
            for (int i = 0; i < npid; i++) rss += proc_kb(pids[i], "VmRSS");
            last_rss = rss;
            if (open_now * 10 >= nconn * 9 && rss > peak_rss) peak_rss = rss;
        }
    }
    long hwm = 0;
    for (int i = 0; i < npid; i++) hwm += proc_kb(pids[i], "VmHWM");
    for (int i = 0; i < nconn; i++)
        if (i >= opened) {
            failed++; /* never opened before the deadline */
        } else if (!cs[i].done && !cs[i].failed) {
            failed++;
            close(cs[i].fd);
        }
    int stalled = 0;
    for (int i = 0; i < nconn; i++)
        if (cs[i].stalled) stalled++;
    printf("{\"conns\":%d,\"completed\":%d,\"failed\":%d,\"max_open\":%d,\"all_open_s\":%.3f,"
           "\"seconds\":%.3f,\"peak_rss_kb\":%ld,\"last_rss_kb\":%ld,\"hwm_kb\":%ld,"
           "\"events\":%llu,\"late_us\":{\"p50\":%.0f,\"p99\":%.0f,\"p999\":%.0f,\"max\":%llu},"
           "\"max_gap_ms\":%.1f,\"stalled\":%d}\n",
           nconn, completed, failed, max_open, all_open_s, (double)(now_ns() - t0) / 1e9, peak_rss,
           last_rss, hwm, (unsigned long long)late_n, late_pct(0.5), late_pct(0.99), late_pct(0.999),
           (unsigned long long)late_max_us, (double)max_gap_ns / 1e6, stalled);
    return completed == nconn ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "ttfb")) return cmd_ttfb(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "streams")) return cmd_streams(argc - 2, argv + 2);
    fprintf(stderr, "usage: kbench ttfb|streams ... (see the top of bench/kbench.c)\n");
    return 2;
}
