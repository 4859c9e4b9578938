/*
 * serve_loops.c -- the event loops of `keyrail serve` (serve.h): threads,
 * mailboxes, signals, the drain and the stop, /metrics across loops.
 *
 * The stop, loop by loop: SIGTERM reaches loop 0, which drains itself and
 * posts DRAIN to the others. A draining loop closes its listening socket
 * and its idle connections and lets running requests finish (within
 * server.shutdown_grace_ms); then it stops its parts (the transport, the
 * upstream client, the store workers, its usage-writer port) and closes its
 * mailbox once no /metrics answer of its own waits for other loops, and
 * tells loop 0 (LOOP_DONE). Loop 0 closes its mailbox and the signals last,
 * so that a second signal (STOP to every loop: running requests aborted)
 * reaches every loop until the end. The main thread then joins the threads
 * and the usage writer flushes what is queued (serve.c).
 */
#include "serve/serve.h"
#include "core/log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    CMD_DRAIN,        /* loop 0 -> the others: the first signal */
    CMD_STOP,         /* loop 0 -> the others: the second signal */
    CMD_METRICS,      /* a loop answering /metrics -> the others: your counters */
    CMD_METRICS_DONE, /* -> that loop: the counters */
    CMD_LOOP_DONE,    /* a loop -> loop 0: stopped */
} cmd_type;

/* A /metrics answer waiting for the other loops' counters (its home
 * loop's). */
typedef struct gather {
    kr_serve_loop *home;
    int pending;
    kr_metrics sum;
    uint64_t hits, misses;
    kr_serve_gather_fn done;
    void *ctx;
} gather;

struct kr_serve_cmd {
    kr_serve_cmd *next;
    cmd_type type;
    kr_serve_loop *from;
    gather *g;
    kr_metrics m; /* CMD_METRICS_DONE */
    uint64_t hits, misses;
};

static void maybe_finish(kr_serve_loop *l);

/* ---- the mailbox ---- */

/* Appends c to to's mailbox and wakes it; false (c not taken) once to has
 * closed its mailbox. The wake-up is sent under the lock: a loop closes its
 * uv_async only after marking the mailbox closed under the same lock. */
static bool post(kr_serve_loop *to, kr_serve_cmd *c)
{
    c->next = NULL;
    pthread_mutex_lock(&to->mu);
    if (to->closed) {
        pthread_mutex_unlock(&to->mu);
        return false;
    }
    if (to->cmds_tail)
        to->cmds_tail->next = c;
    else
        to->cmds = c;
    to->cmds_tail = c;
    uv_async_send(&to->wake);
    pthread_mutex_unlock(&to->mu);
    return true;
}

static void post_new(kr_serve_loop *to, cmd_type type, kr_serve_loop *from)
{
    kr_serve_cmd *c = kr_xcalloc(1, sizeof *c);
    c->type = type;
    c->from = from;
    if (!post(to, c)) free(c);
}

static kr_serve_cmd *take_all(kr_serve_loop *l, bool close)
{
    pthread_mutex_lock(&l->mu);
    kr_serve_cmd *c = l->cmds;
    l->cmds = l->cmds_tail = NULL;
    if (close) l->closed = true;
    pthread_mutex_unlock(&l->mu);
    return c;
}

static void loop_drain(kr_serve_loop *l);
static void loop_stop(kr_serve_loop *l);

static void finish_gather(kr_serve_loop *l, gather *g)
{
    g->done(g->ctx, &g->sum, g->hits, g->misses);
    free(g);
    KR_ASSERT(l->gathers > 0);
    l->gathers--;
    maybe_finish(l);
}

static void run_cmd(kr_serve_loop *l, kr_serve_cmd *c)
{
    switch (c->type) {
    case CMD_DRAIN:
        loop_drain(l);
        break;
    case CMD_STOP:
        loop_stop(l);
        break;
    case CMD_METRICS:
        /* this loop's counters, copied on its own thread */
        c->m = l->http.metrics;
        c->hits = l->proxy_up ? l->proxy.auth.hits : 0;
        c->misses = l->proxy_up ? l->proxy.auth.misses : 0;
        c->type = CMD_METRICS_DONE;
        /* the home loop keeps its mailbox open while it waits */
        if (post(c->from, c)) return;
        KR_ASSERT(!"a loop waiting for counters closed its mailbox");
        break;
    case CMD_METRICS_DONE: {
        gather *g = c->g;
        kr_metrics_add(&g->sum, &c->m);
        g->hits += c->hits;
        g->misses += c->misses;
        if (--g->pending == 0) finish_gather(l, g);
        break;
    }
    case CMD_LOOP_DONE:
        l->s->loops_done++;
        maybe_finish(l);
        break;
    }
    free(c);
}

static void on_wake(uv_async_t *a)
{
    kr_serve_loop *l = a->data;
    for (kr_serve_cmd *c = take_all(l, false), *next; c; c = next) {
        next = c->next;
        run_cmd(l, c);
    }
}

/* ---- one loop's stop ---- */

static void on_log_flush(uv_timer_t *t)
{
    (void)t;
    kr_log_flush(); /* this thread's lines */
}

/* The last step: the mailbox closes (what is in it still runs), loop 0
 * closes the signals, the others tell loop 0. */
static void maybe_finish(kr_serve_loop *l)
{
    kr_serve *s = l->s;
    if (!l->stopped || l->finished || l->gathers) return;
    if (l->index == 0 && s->loops_done < s->nloops - 1) return; /* loop 0 goes last */
    l->finished = true;
    for (kr_serve_cmd *c = take_all(l, true), *next; c; c = next) {
        next = c->next;
        run_cmd(l, c);
    }
    uv_close((uv_handle_t *)&l->wake, NULL);
    if (l->index == 0) {
        uv_close((uv_handle_t *)&s->sigterm, NULL);
        uv_close((uv_handle_t *)&s->sigint, NULL);
    } else {
        post_new(s->loops[0], CMD_LOOP_DONE, l);
    }
}

static void loop_stop(kr_serve_loop *l)
{
    if (l->stopped) return;
    l->stopped = true;
    kr_http_drain(&l->http);
    kr_http_close_all(&l->http);
    uv_timer_stop(&l->drain_timer);
    uv_close((uv_handle_t *)&l->drain_timer, NULL);
    if (l->s->cfg->log_flush_ms > 0) {
        uv_timer_stop(&l->log_timer);
        uv_close((uv_handle_t *)&l->log_timer, NULL);
    }
    if (l->proxy_up) kr_proxy_stop(&l->proxy);
    kr_workq_stop(l->workers);
    l->workers = NULL;
    kr_meter_detach(l->port);
    l->port = NULL;
    maybe_finish(l);
}

static void on_drain_tick(uv_timer_t *t)
{
    kr_serve_loop *l = t->data;
    kr_serve *s = l->s;
    uint64_t now = uv_now(&l->loop);
    if (!l->drain_deadline) l->drain_deadline = now + (uint64_t)s->cfg->shutdown_grace_ms;
    /* idle keep-alive connections go now; busy ones finish */
    if (kr_http_close_idle(&l->http) == 0) {
        if (s->nloops == 1)
            KR_INFO("drained: every request finished");
        else
            KR_INFO("drained: every request of event loop %d finished", l->index);
        loop_stop(l);
    } else if (now >= l->drain_deadline) {
        KR_WARN("shutdown grace of %lld ms over: closing %lld connection(s)",
                (long long)s->cfg->shutdown_grace_ms, (long long)l->http.metrics.open_connections);
        loop_stop(l);
    }
}

static void loop_drain(kr_serve_loop *l)
{
    if (l->draining || l->stopped) return;
    l->draining = true;
    kr_http_drain(&l->http);
    uv_timer_start(&l->drain_timer, on_drain_tick, 0, 50);
}

/* ---- signals (loop 0) ---- */

static void on_signal(uv_signal_t *sig, int signum)
{
    kr_serve_loop *l0 = sig->data;
    kr_serve *s = l0->s;
    if (l0->draining || l0->stopped) {
        KR_WARN("second signal: stopping now");
        for (int i = 1; i < s->nloops; i++)
            post_new(s->loops[i], CMD_STOP, l0);
        loop_stop(l0);
        return;
    }
    KR_INFO("signal %d: draining (no new connections, running requests may finish within %lld ms)",
            signum, (long long)s->cfg->shutdown_grace_ms);
    for (int i = 1; i < s->nloops; i++)
        post_new(s->loops[i], CMD_DRAIN, l0);
    loop_drain(l0);
}

/* ---- setup and run ---- */

void kr_serve_loop_init(kr_serve_loop *l)
{
    pthread_mutex_init(&l->mu, NULL);
    uv_async_init(&l->loop, &l->wake, on_wake);
    l->wake.data = l;
    uv_timer_init(&l->loop, &l->drain_timer);
    l->drain_timer.data = l;
    if (l->s->cfg->log_flush_ms > 0) {
        uv_timer_init(&l->loop, &l->log_timer);
        uv_timer_start(&l->log_timer, on_log_flush, (uint64_t)l->s->cfg->log_flush_ms,
                       (uint64_t)l->s->cfg->log_flush_ms);
    }
    if (l->index == 0) {
        kr_serve *s = l->s;
        uv_signal_init(&l->loop, &s->sigterm);
        uv_signal_init(&l->loop, &s->sigint);
        s->sigterm.data = s->sigint.data = l;
        uv_signal_start(&s->sigterm, on_signal, SIGTERM);
        uv_signal_start(&s->sigint, on_signal, SIGINT);
    }
}

/* After the loop's run: what is closing closes, the loop with it. */
static void loop_close(kr_serve_loop *l)
{
    uv_run(&l->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&l->loop)) KR_WARN("event loop %d closed with open handles", l->index);
    l->loop_up = false;
}

static void loop_thread(void *arg)
{
    kr_serve_loop *l = arg;
    uv_run(&l->loop, UV_RUN_DEFAULT);
    loop_close(l);
    /* this thread's reused buffers */
    kr_proxy_thread_end();
    kr_http_thread_end();
    kr_log_thread_end();
}

void kr_serve_loops_run(kr_serve *s)
{
    for (int i = 1; i < s->nloops; i++) {
        kr_serve_loop *l = s->loops[i];
        if (uv_thread_create(&l->thread, loop_thread, l) == 0) {
            l->thread_up = true;
        } else {
            /* cannot happen short of resource exhaustion: serve with fewer */
            KR_ERROR("event loop %d: no thread; serving without it", i);
            loop_stop(l);
            maybe_finish(l);
            uv_run(&l->loop, UV_RUN_NOWAIT);
        }
    }
    uv_run(&s->loops[0]->loop, UV_RUN_DEFAULT);
    loop_close(s->loops[0]);
    for (int i = 1; i < s->nloops; i++)
        if (s->loops[i]->thread_up) uv_thread_join(&s->loops[i]->thread);
}

void kr_serve_loop_teardown(kr_serve_loop *l)
{
    /* a start that was refused: nothing ran, nothing was posted, nobody to tell */
    l->finished = true;
    loop_stop(l);
    take_all(l, true);
    uv_close((uv_handle_t *)&l->wake, NULL);
    if (l->index == 0) {
        uv_close((uv_handle_t *)&l->s->sigterm, NULL);
        uv_close((uv_handle_t *)&l->s->sigint, NULL);
    }
    loop_close(l);
}

/* ---- /metrics across loops ---- */

void kr_serve_gather(kr_serve_loop *l, kr_serve_gather_fn done, void *ctx)
{
    kr_serve *s = l->s;
    gather *g = kr_xcalloc(1, sizeof *g);
    g->home = l;
    g->done = done;
    g->ctx = ctx;
    kr_metrics_add(&g->sum, &l->http.metrics);
    g->hits = l->proxy.auth.hits;
    g->misses = l->proxy.auth.misses;
    g->pending = 1; /* this call's own hold */
    l->gathers++;
    for (int i = 0; i < s->nloops; i++) {
        if (i == l->index) continue;
        kr_serve_cmd *c = kr_xcalloc(1, sizeof *c);
        c->type = CMD_METRICS;
        c->from = l;
        c->g = g;
        if (post(s->loops[i], c))
            g->pending++;
        else
            free(c); /* a loop that has stopped: its connections are gone */
    }
    if (--g->pending == 0) finish_gather(l, g);
}
