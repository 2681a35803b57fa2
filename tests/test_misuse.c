/*
 * Misuse of the API, and its documented outcome (docs/api.md, "Misuse"): every public function
 * given NULL; watchers never initialised (all zero, of every type, and of the wrong type); a
 * watcher started twice or stopped twice; its priority changed while active or pending; one
 * re-initialised while active or pending (-EBUSY, untouched) and, the other side of that check,
 * stale or garbage watcher memory that must never be mistaken for an active watcher; a loop
 * destroyed from one of its callbacks or with active watchers of every type, and its watchers
 * used again afterwards with a new loop (also one at the same address).
 *
 * Debug builds (AEV_DEBUG) report what release builds cannot check safely: the last group of
 * tests captures stderr and checks those diagnostics; in a release build it is skipped. CTest
 * runs this program against a debug build of the library as misuse.debug.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "testutil.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- shared state: a loop, an embeddable loop, a pipe -------------------------------------- */

static aev_loop *g_loop;  /* the loop of the test (fresh per test) */
static aev_loop *g_other; /* an epoll or kqueue loop, embeddable into g_loop */
static int g_pipe[2];     /* io watchers watch the read end: never readable */
static int g_calls;       /* callbacks of noop_cb */

static void noop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    g_calls++;
}

static void noop_post(void *arg)
{
    (void)arg;
}

static unsigned embeddable_backend(void)
{
    unsigned s = aev_supported_backends();
    return (s & AEV_BACKEND_EPOLL) ? AEV_BACKEND_EPOLL : AEV_BACKEND_KQUEUE;
}

static int setup(void **state)
{
    (void)state;
    g_loop = aevt_loop_new();
    assert_int_equal(aev_loop_new(&g_other, embeddable_backend() | AEV_FLAG_NOENV), 0);
    assert_int_equal(pipe(g_pipe), 0);
    g_calls = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(aev_pending_count(g_loop), 0);
    assert_int_equal(aev_loop_destroy(g_loop), 0);
    assert_int_equal(aev_loop_destroy(g_other), 0);
    close(g_pipe[0]);
    close(g_pipe[1]);
    return 0;
}

/* ---- every watcher type, table-driven ------------------------------------------------------ */

typedef union anyw {
    aev_watcher base;
    aev_io io;
    aev_timer timer;
    aev_idle idle;
    aev_prepare prepare;
    aev_check check;
    aev_async async;
    aev_signal signal;
    aev_child child;
    aev_periodic periodic;
    aev_fork fork;
    aev_cleanup cleanup;
    aev_stat stat;
    aev_embed embed;
} anyw;

/* The typed start and stop of each type, behind one signature so that a table can hold them
 * (test_wrong_type needs the typed ones, not aev_start()/aev_stop()). */
#define TYPED_START_STOP(n)                                                                        \
    static int n##_start(anyw *w)                                                                  \
    {                                                                                              \
        return aev_##n##_start(&w->n);                                                             \
    }                                                                                              \
    static int n##_stop(anyw *w)                                                                   \
    {                                                                                              \
        return aev_##n##_stop(&w->n);                                                              \
    }
TYPED_START_STOP(io)
TYPED_START_STOP(timer)
TYPED_START_STOP(idle)
TYPED_START_STOP(prepare)
TYPED_START_STOP(check)
TYPED_START_STOP(async)
TYPED_START_STOP(signal)
TYPED_START_STOP(child)
TYPED_START_STOP(periodic)
TYPED_START_STOP(fork)
TYPED_START_STOP(cleanup)
TYPED_START_STOP(stat)
TYPED_START_STOP(embed)

static int io_init(anyw *w, aev_loop *l)
{
    return aev_io_init(&w->io, l, noop_cb, g_pipe[0], AEV_READ);
}
static int timer_init(anyw *w, aev_loop *l)
{
    return aev_timer_init(&w->timer, l, noop_cb, AEV_SEC(3600), 0);
}
static int idle_init(anyw *w, aev_loop *l)
{
    return aev_idle_init(&w->idle, l, noop_cb);
}
static int prepare_init(anyw *w, aev_loop *l)
{
    return aev_prepare_init(&w->prepare, l, noop_cb);
}
static int check_init(anyw *w, aev_loop *l)
{
    return aev_check_init(&w->check, l, noop_cb);
}
static int async_init(anyw *w, aev_loop *l)
{
    return aev_async_init(&w->async, l, noop_cb);
}
static int signal_init(anyw *w, aev_loop *l)
{
    return aev_signal_init(&w->signal, l, noop_cb, SIGUSR2);
}
static int child_init(anyw *w, aev_loop *l)
{
    return aev_child_init(&w->child, l, noop_cb, 0, 0); /* any child: needs none to exist */
}
static int periodic_init(anyw *w, aev_loop *l)
{
    return aev_periodic_init(&w->periodic, l, noop_cb, 0, AEV_SEC(3600), NULL);
}
static int fork_init(anyw *w, aev_loop *l)
{
    return aev_fork_init(&w->fork, l, noop_cb);
}
static int cleanup_init(anyw *w, aev_loop *l)
{
    return aev_cleanup_init(&w->cleanup, l, noop_cb);
}
static int stat_init(anyw *w, aev_loop *l)
{
    return aev_stat_init(&w->stat, l, noop_cb, "/", AEV_SEC(3600));
}
static int embed_init(anyw *w, aev_loop *l)
{
    return aev_embed_init(&w->embed, l, noop_cb, g_other);
}

typedef struct wtype {
    const char *name;
    int (*init)(anyw *w, aev_loop *loop);
    int (*start)(anyw *w);
    int (*stop)(anyw *w);
    size_t size;
    bool referenced; /* an active one keeps aev_run() going */
} wtype;

#define WT(n, ref)                                                                                 \
    {                                                                                              \
#n, n##_init, n##_start, n##_stop, sizeof(aev_##n), ref                                    \
    }
static const wtype g_types[] = {
    WT(io, true),       WT(timer, true),  WT(idle, true),  WT(prepare, true),  WT(check, true),
    WT(async, true),    WT(signal, true), WT(child, true), WT(periodic, true), WT(fork, false),
    WT(cleanup, false), WT(stat, true),   WT(embed, true),
};
#define NTYPES (sizeof g_types / sizeof g_types[0])

static void init_and_start(const wtype *ty, anyw *w, aev_loop *l)
{
    assert_int_equal(ty->init(w, l), 0);
    assert_int_equal(ty->start(w), 0);
}

/* Active and pending at once: the watcher sits in both of the loop's containers. */
static void init_start_and_feed(const wtype *ty, anyw *w, aev_loop *l)
{
    init_and_start(ty, w, l);
    assert_int_equal(aev_feed_event(&w->base, AEV_CUSTOM), 0);
}

/* Every typed start and stop must refuse a watcher that is not of its own type. */
static int (*const g_typed_ops[])(anyw *) = {
    io_start,      io_stop,      timer_start,   timer_stop,   idle_start,     idle_stop,
    prepare_start, prepare_stop, check_start,   check_stop,   async_start,    async_stop,
    signal_start,  signal_stop,  child_start,   child_stop,   periodic_start, periodic_stop,
    fork_start,    fork_stop,    cleanup_start, cleanup_stop, stat_start,     stat_stop,
    embed_start,   embed_stop,
};

/* ---- NULL: every public function ---------------------------------------------------------- */

/*
 * One row per call with one NULL pointer (the others valid) and the documented result: -EINVAL
 * for functions that can fail, 0 / false / NULL for queries, a no-op for void functions (they
 * must simply return). Calls are wrapped so that one table holds every signature.
 */
typedef struct null_case {
    const char *fn;
    intmax_t (*call)(void);
    intmax_t expect;
} null_case;

#define NC(id, expr)                                                                               \
    static intmax_t nc_##id(void)                                                                  \
    {                                                                                              \
        return (intmax_t)(expr);                                                                   \
    }
#define NP(id, expr)                                                                               \
    static intmax_t nc_##id(void)                                                                  \
    {                                                                                              \
        return (intmax_t)(intptr_t)(expr);                                                         \
    }
#define NV(id, stmt)                                                                               \
    static intmax_t nc_##id(void)                                                                  \
    {                                                                                              \
        stmt;                                                                                      \
        return 0;                                                                                  \
    }

static anyw g_w; /* a watcher for the rows whose NULL is another argument */

NC(loop_new, aev_loop_new(NULL, 0))
NC(loop_destroy, aev_loop_destroy(NULL))
NC(run, aev_run(NULL, AEV_RUN_NOWAIT))
NC(break_, aev_break(NULL, AEV_BREAK_ONE))
NV(ref, aev_ref(NULL))
NV(unref, aev_unref(NULL))
NC(iteration, aev_iteration(NULL))
NC(depth, aev_depth(NULL))
NC(pending_count, aev_pending_count(NULL))
NC(now, aev_now(NULL))
NV(now_update, aev_now_update(NULL))
NC(backend, aev_backend(NULL))
NP(backend_name, aev_backend_name(NULL))
NC(loop_fork, aev_loop_fork(NULL))
NV(loop_set_data, aev_loop_set_data(NULL, &g_w))
NP(loop_data, aev_loop_data(NULL))
NV(set_allocator, aev_set_allocator(NULL))
NV(suspend, aev_suspend(NULL))
NV(resume, aev_resume(NULL))
NV(set_invoke_hook, aev_set_invoke_hook(NULL, NULL))
NV(invoke_pending, aev_invoke_pending(NULL))

NC(start, aev_start(NULL))
NC(stop, aev_stop(NULL))
NC(is_active, aev_is_active(NULL))
NC(is_pending, aev_is_pending(NULL))
NP(watcher_loop, aev_watcher_loop(NULL))
NC(set_priority, aev_set_priority(NULL, 1))
NC(priority, aev_priority(NULL))
NC(invoke, aev_invoke(NULL, AEV_CUSTOM))
NC(feed_event, aev_feed_event(NULL, AEV_CUSTOM))
NC(clear_pending, aev_clear_pending(NULL))
NC(watcher_error, aev_watcher_error(NULL, NULL))
static intmax_t nc_watcher_error_op(void)
{
    aev_errop op = AEV_ERROP_POLL;
    int rc = aev_watcher_error(NULL, &op);
    return op == AEV_ERROP_NONE ? rc : 12345;
}

NC(io_init_w, aev_io_init(NULL, g_loop, noop_cb, 0, AEV_READ))
NC(io_init_loop, aev_io_init(&g_w.io, NULL, noop_cb, 0, AEV_READ))
NC(io_init_cb, aev_io_init(&g_w.io, g_loop, NULL, 0, AEV_READ))
NC(io_set, aev_io_set(NULL, 0, AEV_READ))
NC(io_start, aev_io_start(NULL))
NC(io_stop, aev_io_stop(NULL))
NC(io_fd, aev_io_fd(NULL))
NC(io_events, aev_io_events(NULL))

NC(timer_init_w, aev_timer_init(NULL, g_loop, noop_cb, 0, 0))
NC(timer_init_loop, aev_timer_init(&g_w.timer, NULL, noop_cb, 0, 0))
NC(timer_init_cb, aev_timer_init(&g_w.timer, g_loop, NULL, 0, 0))
NC(timer_set, aev_timer_set(NULL, 0, 0))
NC(timer_start, aev_timer_start(NULL))
NC(timer_stop, aev_timer_stop(NULL))
NC(timer_again, aev_timer_again(NULL))
NC(timer_set_repeat, aev_timer_set_repeat(NULL, 0))
NC(timer_repeat, aev_timer_repeat(NULL))
NC(timer_remaining, aev_timer_remaining(NULL))

NC(idle_init_w, aev_idle_init(NULL, g_loop, noop_cb))
NC(idle_init_loop, aev_idle_init(&g_w.idle, NULL, noop_cb))
NC(idle_init_cb, aev_idle_init(&g_w.idle, g_loop, NULL))
NC(idle_start, aev_idle_start(NULL))
NC(idle_stop, aev_idle_stop(NULL))
NC(prepare_init_w, aev_prepare_init(NULL, g_loop, noop_cb))
NC(prepare_init_loop, aev_prepare_init(&g_w.prepare, NULL, noop_cb))
NC(prepare_init_cb, aev_prepare_init(&g_w.prepare, g_loop, NULL))
NC(prepare_start, aev_prepare_start(NULL))
NC(prepare_stop, aev_prepare_stop(NULL))
NC(check_init_w, aev_check_init(NULL, g_loop, noop_cb))
NC(check_init_loop, aev_check_init(&g_w.check, NULL, noop_cb))
NC(check_init_cb, aev_check_init(&g_w.check, g_loop, NULL))
NC(check_start, aev_check_start(NULL))
NC(check_stop, aev_check_stop(NULL))

NC(async_init_w, aev_async_init(NULL, g_loop, noop_cb))
NC(async_init_loop, aev_async_init(&g_w.async, NULL, noop_cb))
NC(async_init_cb, aev_async_init(&g_w.async, g_loop, NULL))
NC(async_start, aev_async_start(NULL))
NC(async_stop, aev_async_stop(NULL))
NC(async_send, aev_async_send(NULL))
NC(async_sent, aev_async_sent(NULL))

NC(signal_init_w, aev_signal_init(NULL, g_loop, noop_cb, SIGUSR2))
NC(signal_init_loop, aev_signal_init(&g_w.signal, NULL, noop_cb, SIGUSR2))
NC(signal_init_cb, aev_signal_init(&g_w.signal, g_loop, NULL, SIGUSR2))
NC(signal_set, aev_signal_set(NULL, SIGUSR2))
NC(signal_start, aev_signal_start(NULL))
NC(signal_stop, aev_signal_stop(NULL))
NC(signal_signum, aev_signal_signum(NULL))

NC(child_init_w, aev_child_init(NULL, g_loop, noop_cb, 0, 0))
NC(child_init_loop, aev_child_init(&g_w.child, NULL, noop_cb, 0, 0))
NC(child_init_cb, aev_child_init(&g_w.child, g_loop, NULL, 0, 0))
NC(child_set, aev_child_set(NULL, 0, 0))
NC(child_start, aev_child_start(NULL))
NC(child_stop, aev_child_stop(NULL))
NC(child_rpid, aev_child_rpid(NULL))
NC(child_rstatus, aev_child_rstatus(NULL))

NC(periodic_init_w, aev_periodic_init(NULL, g_loop, noop_cb, 0, 0, NULL))
NC(periodic_init_loop, aev_periodic_init(&g_w.periodic, NULL, noop_cb, 0, 0, NULL))
NC(periodic_init_cb, aev_periodic_init(&g_w.periodic, g_loop, NULL, 0, 0, NULL))
NC(periodic_set, aev_periodic_set(NULL, 0, 0, NULL))
NC(periodic_start, aev_periodic_start(NULL))
NC(periodic_stop, aev_periodic_stop(NULL))
NC(periodic_again, aev_periodic_again(NULL))
NC(periodic_at, aev_periodic_at(NULL))

NC(stat_init_w, aev_stat_init(NULL, g_loop, noop_cb, "/", 0))
NC(stat_init_loop, aev_stat_init(&g_w.stat, NULL, noop_cb, "/", 0))
NC(stat_init_cb, aev_stat_init(&g_w.stat, g_loop, NULL, "/", 0))
NC(stat_init_path, aev_stat_init(&g_w.stat, g_loop, noop_cb, NULL, 0))
NC(stat_set, aev_stat_set(NULL, "/", 0))
static intmax_t nc_stat_set_path(void)
{
    aev_stat s;
    assert_int_equal(aev_stat_init(&s, g_loop, noop_cb, "/", 0), 0);
    return aev_stat_set(&s, NULL, 0);
}
NC(stat_start, aev_stat_start(NULL))
NC(stat_stop, aev_stat_stop(NULL))
NC(stat_stat, aev_stat_stat(NULL))
NP(stat_attr, aev_stat_attr(NULL))
NP(stat_prev, aev_stat_prev(NULL))

NC(embed_init_w, aev_embed_init(NULL, g_loop, noop_cb, g_other))
NC(embed_init_loop, aev_embed_init(&g_w.embed, NULL, noop_cb, g_other))
NC(embed_init_other, aev_embed_init(&g_w.embed, g_loop, noop_cb, NULL))
NC(embed_set, aev_embed_set(NULL, g_other))
static intmax_t nc_embed_set_other(void)
{
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, g_loop, noop_cb, g_other), 0);
    return aev_embed_set(&e, NULL);
}
NC(embed_start, aev_embed_start(NULL))
NC(embed_stop, aev_embed_stop(NULL))
NC(embed_sweep, aev_embed_sweep(NULL))

NC(fork_init_w, aev_fork_init(NULL, g_loop, noop_cb))
NC(fork_init_loop, aev_fork_init(&g_w.fork, NULL, noop_cb))
NC(fork_init_cb, aev_fork_init(&g_w.fork, g_loop, NULL))
NC(fork_start, aev_fork_start(NULL))
NC(fork_stop, aev_fork_stop(NULL))
NC(cleanup_init_w, aev_cleanup_init(NULL, g_loop, noop_cb))
NC(cleanup_init_loop, aev_cleanup_init(&g_w.cleanup, NULL, noop_cb))
NC(cleanup_init_cb, aev_cleanup_init(&g_w.cleanup, g_loop, NULL))
NC(cleanup_start, aev_cleanup_start(NULL))
NC(cleanup_stop, aev_cleanup_stop(NULL))

NC(poster_new_out, aev_poster_new(NULL, g_loop, 1))
static intmax_t nc_poster_new_loop(void)
{
    aev_poster *p = NULL;
    return aev_poster_new(&p, NULL, 1);
}
NC(post_p, aev_post(NULL, noop_post, NULL))
static intmax_t nc_post_fn(void)
{
    aev_poster *p;
    assert_int_equal(aev_poster_new(&p, g_loop, 1), 0);
    int rc = aev_post(p, NULL, NULL);
    assert_int_equal(aev_poster_destroy(p), 0); /* nothing was queued */
    return rc;
}
NC(poster_destroy, aev_poster_destroy(NULL))

#define ROW(name, id, expect)                                                                      \
    {                                                                                              \
        name, nc_##id, (intmax_t)(expect)                                                          \
    }
static const null_case g_null_cases[] = {
    ROW("aev_loop_new", loop_new, -EINVAL),
    ROW("aev_loop_destroy", loop_destroy, -EINVAL),
    ROW("aev_run", run, -EINVAL),
    ROW("aev_break", break_, -EINVAL),
    ROW("aev_ref", ref, 0),
    ROW("aev_unref", unref, 0),
    ROW("aev_iteration", iteration, 0),
    ROW("aev_depth", depth, 0),
    ROW("aev_pending_count", pending_count, 0),
    ROW("aev_now", now, 0),
    ROW("aev_now_update", now_update, 0),
    ROW("aev_backend", backend, 0),
    ROW("aev_backend_name", backend_name, 0),
    ROW("aev_loop_fork", loop_fork, -EINVAL),
    ROW("aev_loop_set_data", loop_set_data, 0),
    ROW("aev_loop_data", loop_data, 0),
    ROW("aev_set_allocator", set_allocator, 0),
    ROW("aev_suspend", suspend, 0),
    ROW("aev_resume", resume, 0),
    ROW("aev_set_invoke_hook", set_invoke_hook, 0),
    ROW("aev_invoke_pending", invoke_pending, 0),
    ROW("aev_start", start, -EINVAL),
    ROW("aev_stop", stop, -EINVAL),
    ROW("aev_is_active", is_active, false),
    ROW("aev_is_pending", is_pending, false),
    ROW("aev_watcher_loop", watcher_loop, 0),
    ROW("aev_set_priority", set_priority, -EINVAL),
    ROW("aev_priority", priority, 0),
    ROW("aev_invoke", invoke, -EINVAL),
    ROW("aev_feed_event", feed_event, -EINVAL),
    ROW("aev_clear_pending", clear_pending, 0),
    ROW("aev_watcher_error", watcher_error, -EINVAL),
    ROW("aev_watcher_error", watcher_error_op, -EINVAL),
    ROW("aev_io_init", io_init_w, -EINVAL),
    ROW("aev_io_init", io_init_loop, -EINVAL),
    ROW("aev_io_init", io_init_cb, -EINVAL),
    ROW("aev_io_set", io_set, -EINVAL),
    ROW("aev_io_start", io_start, -EINVAL),
    ROW("aev_io_stop", io_stop, -EINVAL),
    ROW("aev_io_fd", io_fd, -EINVAL),
    ROW("aev_io_events", io_events, 0),
    ROW("aev_timer_init", timer_init_w, -EINVAL),
    ROW("aev_timer_init", timer_init_loop, -EINVAL),
    ROW("aev_timer_init", timer_init_cb, -EINVAL),
    ROW("aev_timer_set", timer_set, -EINVAL),
    ROW("aev_timer_start", timer_start, -EINVAL),
    ROW("aev_timer_stop", timer_stop, -EINVAL),
    ROW("aev_timer_again", timer_again, -EINVAL),
    ROW("aev_timer_set_repeat", timer_set_repeat, -EINVAL),
    ROW("aev_timer_repeat", timer_repeat, 0),
    ROW("aev_timer_remaining", timer_remaining, 0),
    ROW("aev_idle_init", idle_init_w, -EINVAL),
    ROW("aev_idle_init", idle_init_loop, -EINVAL),
    ROW("aev_idle_init", idle_init_cb, -EINVAL),
    ROW("aev_idle_start", idle_start, -EINVAL),
    ROW("aev_idle_stop", idle_stop, -EINVAL),
    ROW("aev_prepare_init", prepare_init_w, -EINVAL),
    ROW("aev_prepare_init", prepare_init_loop, -EINVAL),
    ROW("aev_prepare_init", prepare_init_cb, -EINVAL),
    ROW("aev_prepare_start", prepare_start, -EINVAL),
    ROW("aev_prepare_stop", prepare_stop, -EINVAL),
    ROW("aev_check_init", check_init_w, -EINVAL),
    ROW("aev_check_init", check_init_loop, -EINVAL),
    ROW("aev_check_init", check_init_cb, -EINVAL),
    ROW("aev_check_start", check_start, -EINVAL),
    ROW("aev_check_stop", check_stop, -EINVAL),
    ROW("aev_async_init", async_init_w, -EINVAL),
    ROW("aev_async_init", async_init_loop, -EINVAL),
    ROW("aev_async_init", async_init_cb, -EINVAL),
    ROW("aev_async_start", async_start, -EINVAL),
    ROW("aev_async_stop", async_stop, -EINVAL),
    ROW("aev_async_send", async_send, -EINVAL),
    ROW("aev_async_sent", async_sent, false),
    ROW("aev_signal_init", signal_init_w, -EINVAL),
    ROW("aev_signal_init", signal_init_loop, -EINVAL),
    ROW("aev_signal_init", signal_init_cb, -EINVAL),
    ROW("aev_signal_set", signal_set, -EINVAL),
    ROW("aev_signal_start", signal_start, -EINVAL),
    ROW("aev_signal_stop", signal_stop, -EINVAL),
    ROW("aev_signal_signum", signal_signum, -EINVAL),
    ROW("aev_child_init", child_init_w, -EINVAL),
    ROW("aev_child_init", child_init_loop, -EINVAL),
    ROW("aev_child_init", child_init_cb, -EINVAL),
    ROW("aev_child_set", child_set, -EINVAL),
    ROW("aev_child_start", child_start, -EINVAL),
    ROW("aev_child_stop", child_stop, -EINVAL),
    ROW("aev_child_rpid", child_rpid, -EINVAL),
    ROW("aev_child_rstatus", child_rstatus, 0),
    ROW("aev_periodic_init", periodic_init_w, -EINVAL),
    ROW("aev_periodic_init", periodic_init_loop, -EINVAL),
    ROW("aev_periodic_init", periodic_init_cb, -EINVAL),
    ROW("aev_periodic_set", periodic_set, -EINVAL),
    ROW("aev_periodic_start", periodic_start, -EINVAL),
    ROW("aev_periodic_stop", periodic_stop, -EINVAL),
    ROW("aev_periodic_again", periodic_again, -EINVAL),
    ROW("aev_periodic_at", periodic_at, 0),
    ROW("aev_stat_init", stat_init_w, -EINVAL),
    ROW("aev_stat_init", stat_init_loop, -EINVAL),
    ROW("aev_stat_init", stat_init_cb, -EINVAL),
    ROW("aev_stat_init", stat_init_path, -EINVAL),
    ROW("aev_stat_set", stat_set, -EINVAL),
    ROW("aev_stat_set", stat_set_path, -EINVAL),
    ROW("aev_stat_start", stat_start, -EINVAL),
    ROW("aev_stat_stop", stat_stop, -EINVAL),
    ROW("aev_stat_stat", stat_stat, -EINVAL),
    ROW("aev_stat_attr", stat_attr, 0),
    ROW("aev_stat_prev", stat_prev, 0),
    ROW("aev_embed_init", embed_init_w, -EINVAL),
    ROW("aev_embed_init", embed_init_loop, -EINVAL),
    ROW("aev_embed_init", embed_init_other, -EINVAL),
    ROW("aev_embed_set", embed_set, -EINVAL),
    ROW("aev_embed_set", embed_set_other, -EINVAL),
    ROW("aev_embed_start", embed_start, -EINVAL),
    ROW("aev_embed_stop", embed_stop, -EINVAL),
    ROW("aev_embed_sweep", embed_sweep, -EINVAL),
    ROW("aev_fork_init", fork_init_w, -EINVAL),
    ROW("aev_fork_init", fork_init_loop, -EINVAL),
    ROW("aev_fork_init", fork_init_cb, -EINVAL),
    ROW("aev_fork_start", fork_start, -EINVAL),
    ROW("aev_fork_stop", fork_stop, -EINVAL),
    ROW("aev_cleanup_init", cleanup_init_w, -EINVAL),
    ROW("aev_cleanup_init", cleanup_init_loop, -EINVAL),
    ROW("aev_cleanup_init", cleanup_init_cb, -EINVAL),
    ROW("aev_cleanup_start", cleanup_start, -EINVAL),
    ROW("aev_cleanup_stop", cleanup_stop, -EINVAL),
    ROW("aev_poster_new", poster_new_out, -EINVAL),
    ROW("aev_poster_new", poster_new_loop, -EINVAL),
    ROW("aev_post", post_p, -EINVAL),
    ROW("aev_post", post_fn, -EINVAL),
    ROW("aev_poster_destroy", poster_destroy, -EINVAL),
};
#define NNULL (sizeof g_null_cases / sizeof g_null_cases[0])

/* Public functions without a pointer parameter: nothing to pass NULL to. */
static const char *const g_no_pointer[] = {
    "aev_strerror",
    "aev_version",
    "aev_time",
    "aev_supported_backends",
    "aev_recommended_backends",
    "aev_wall_time",
};

static void test_null_every_function(void **state)
{
    (void)state;
    for (size_t i = 0; i < NNULL; i++) {
        const null_case *c = &g_null_cases[i];
        intmax_t got = c->call();
        if (got != c->expect)
            fail_msg("%s with a NULL argument (row %zu) gave %jd, documented %jd", c->fn, i, got,
                     c->expect);
    }
    /* The loop is intact: nothing above reached it. */
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_calls, 0);
    assert_null(aev_loop_data(g_loop));
}

/* The table above must have a row for every function the header exports (or list it among
 * those without a pointer parameter): a new function cannot be left out silently. The header is
 * found next to this source file; an installed test without the sources skips. */
static void test_null_table_covers_header(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) + 32 > sizeof path)
        skip();
    strcpy(slash, "/../include/asyncev.h");
    FILE *f = fopen(path, "r");
    if (!f) {
        print_message("skipped: %s not found\n", path);
        skip();
    }
    char line[512];
    int checked = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "AEV_EXPORT", 10) != 0)
            continue;
        char *paren = strchr(line, '(');
        assert_non_null(paren);
        char *end = paren;
        while (end > line && end[-1] == ' ')
            end--;
        char *start = end;
        while (start > line && (start[-1] == '_' || (start[-1] >= 'a' && start[-1] <= 'z') ||
                                (start[-1] >= '0' && start[-1] <= '9')))
            start--;
        *end = '\0';
        bool found = false;
        for (size_t i = 0; i < NNULL && !found; i++)
            found = strcmp(g_null_cases[i].fn, start) == 0;
        for (size_t i = 0; i < sizeof g_no_pointer / sizeof g_no_pointer[0] && !found; i++)
            found = strcmp(g_no_pointer[i], start) == 0;
        if (!found)
            fail_msg("%s has no NULL row in test_misuse.c", start);
        checked++;
    }
    fclose(f);
    print_message("%d public functions covered\n", checked);
    assert_true(checked >= 100);
}

/* ---- never initialised ------------------------------------------------------------------------
 */

/* An all-zero watcher of every type: -EINVAL from everything that can fail, the neutral value
 * from queries, and no crash (nothing may follow its NULL loop pointer). */
static void test_zeroed_watchers(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        anyw w;
        memset(&w, 0, sizeof w);
        assert_int_equal(g_types[t].start(&w), -EINVAL);
        assert_int_equal(g_types[t].stop(&w), -EINVAL);
        assert_int_equal(aev_start(&w.base), -EINVAL);
        assert_int_equal(aev_stop(&w.base), -EINVAL);
        assert_int_equal(aev_set_priority(&w.base, 1), -EINVAL);
        assert_int_equal(aev_invoke(&w.base, AEV_CUSTOM), -EINVAL);
        assert_int_equal(aev_feed_event(&w.base, AEV_CUSTOM), -EINVAL);
        assert_int_equal(aev_clear_pending(&w.base), 0);
        assert_false(aev_is_active(&w.base));
        assert_false(aev_is_pending(&w.base));
        assert_null(aev_watcher_loop(&w.base));
        assert_int_equal(aev_priority(&w.base), 0);
        assert_int_equal(aev_watcher_error(&w.base, NULL), 0);
    }
    /* The typed functions beyond start and stop. */
    anyw z;
    memset(&z, 0, sizeof z);
    assert_int_equal(aev_io_set(&z.io, g_pipe[0], AEV_READ), -EINVAL);
    assert_int_equal(aev_timer_set(&z.timer, 0, 0), -EINVAL);
    assert_int_equal(aev_timer_again(&z.timer), -EINVAL);
    assert_int_equal(aev_timer_set_repeat(&z.timer, 1), -EINVAL);
    assert_int_equal(aev_timer_remaining(&z.timer), 0);
    assert_int_equal(aev_async_send(&z.async), -EINVAL);
    assert_false(aev_async_sent(&z.async));
    assert_int_equal(aev_signal_set(&z.signal, SIGUSR2), -EINVAL);
    assert_int_equal(aev_child_set(&z.child, 0, 0), -EINVAL);
    assert_int_equal(aev_periodic_set(&z.periodic, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_periodic_again(&z.periodic), -EINVAL);
    assert_int_equal(aev_periodic_at(&z.periodic), 0);
    assert_int_equal(aev_stat_set(&z.stat, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_stat(&z.stat), -EINVAL);
    assert_int_equal(aev_embed_set(&z.embed, g_other), -EINVAL);
    assert_int_equal(aev_embed_sweep(&z.embed), -EINVAL);
    /* Queries that read only the watcher's own memory return what it holds: all zero. */
    assert_int_equal(aev_io_events(&z.io), 0);
    assert_int_equal(aev_timer_repeat(&z.timer), 0);
    assert_int_equal(aev_child_rstatus(&z.child), 0);
    (void)aev_io_fd(&z.io);
    (void)aev_signal_signum(&z.signal);
    (void)aev_child_rpid(&z.child);
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
}

/* A valid watcher of one type is refused by every other type's start and stop. */
static void test_wrong_type(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        anyw w;
        assert_int_equal(g_types[t].init(&w, g_loop), 0);
        for (size_t k = 0; k < sizeof g_typed_ops / sizeof g_typed_ops[0]; k++) {
            if (g_typed_ops[k] == g_types[t].start || g_typed_ops[k] == g_types[t].stop)
                continue;
            if (g_typed_ops[k](&w) != -EINVAL)
                fail_msg("a %s watcher was accepted by typed operation %zu", g_types[t].name, k);
        }
        assert_false(aev_is_active(&w.base));
    }
    anyw t;
    assert_int_equal(timer_init(&t, g_loop), 0);
    assert_int_equal(aev_io_set((aev_io *)&t, g_pipe[0], AEV_READ), -EINVAL);
    assert_int_equal(aev_async_send((aev_async *)&t), -EINVAL);
    assert_int_equal(aev_embed_sweep((aev_embed *)&t), -EINVAL);
    assert_int_equal(aev_stat_stat((aev_stat *)&t), -EINVAL);
    assert_int_equal(aev_periodic_again((aev_periodic *)&t), -EINVAL);
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
}

/* ---- start twice, stop twice, priority ------------------------------------------------------- */

/* Start twice: 0, and one start's worth of state (one reference); stop twice: 0. */
static void test_double_start_double_stop(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        const wtype *ty = &g_types[t];
        anyw w;
        memset(&w, 0, sizeof w); /* every byte defined, for the comparison below */
        init_and_start(ty, &w, g_loop);
        anyw copy = w;
        assert_int_equal(ty->start(&w), 0);
        assert_int_equal(aev_start(&w.base), 0);
        assert_memory_equal(&copy, &w, ty->size); /* a no-op: not even a timer's deadline moved */
        assert_true(aev_is_active(&w.base));
        assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), ty->referenced ? 1 : 0);
        assert_int_equal(ty->stop(&w), 0);
        assert_false(aev_is_active(&w.base));
        /* A single stop released everything: no reference left over from the second start. */
        assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
        assert_int_equal(ty->stop(&w), 0);
        assert_int_equal(aev_stop(&w.base), 0);
        assert_false(aev_is_active(&w.base));
        assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
        /* And it can be started again. */
        assert_int_equal(ty->start(&w), 0);
        assert_int_equal(ty->stop(&w), 0);
    }
}

static void test_priority_busy_while_active_or_pending(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        const wtype *ty = &g_types[t];
        anyw w;
        assert_int_equal(ty->init(&w, g_loop), 0);
        assert_int_equal(aev_set_priority(&w.base, AEV_MAXPRI + 1), -EINVAL);
        assert_int_equal(aev_set_priority(&w.base, AEV_MINPRI - 1), -EINVAL);
        assert_int_equal(aev_set_priority(&w.base, 1), 0);
        assert_int_equal(ty->start(&w), 0);
        assert_int_equal(aev_set_priority(&w.base, 2), -EBUSY);
        assert_int_equal(aev_priority(&w.base), 1);
        assert_int_equal(ty->stop(&w), 0);
        /* Pending while inactive. */
        assert_int_equal(aev_feed_event(&w.base, AEV_CUSTOM), 0);
        assert_int_equal(aev_set_priority(&w.base, 2), -EBUSY);
        assert_int_equal(aev_priority(&w.base), 1);
        assert_int_equal(aev_clear_pending(&w.base), AEV_CUSTOM);
        assert_int_equal(aev_set_priority(&w.base, 2), 0);
        assert_int_equal(aev_priority(&w.base), 2);
    }
}

/* ---- re-initialising ------------------------------------------------------------------------ */

/* An active watcher: -EBUSY, and not one byte of it changed; the loop is unharmed. */
static void test_reinit_active_is_busy(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        const wtype *ty = &g_types[t];
        anyw w;
        memset(&w, 0, sizeof w); /* every byte defined, for the comparison below */
        assert_int_equal(ty->init(&w, g_loop), 0);
        w.base.data = &w;
        assert_int_equal(ty->start(&w), 0);
        anyw before = w;
        if (ty->init(&w, g_loop) != -EBUSY)
            fail_msg("re-initialising an active %s watcher was not refused", ty->name);
        assert_memory_equal(&before, &w, ty->size);
        assert_int_equal(ty->stop(&w), 0);
        assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
        assert_int_equal(ty->init(&w, g_loop), 0);
        assert_null(w.base.data);
    }
}

/* A pending watcher, active or not, of every type: -EBUSY, untouched; its event survives. */
/* The same for a child watcher of one pid (the table above watches any child, pid 0): the
 * loop's per-pid records are searched by pointer. */
static void test_reinit_active_child_pid_is_busy(void **state)
{
    (void)state;
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c;
        close(gate[1]);
        (void)!read(gate[0], &c, 1); /* until the parent closes its end */
        _exit(0);
    }
    close(gate[0]);
    aev_child w;
    memset(&w, 0, sizeof w);
    assert_int_equal(aev_child_init(&w, g_loop, noop_cb, pid, 0), 0);
    assert_int_equal(aev_child_start(&w), 0);
    aev_child before = w;
    assert_int_equal(aev_child_init(&w, g_loop, noop_cb, pid, 0), -EBUSY);
    assert_memory_equal(&before, &w, sizeof w);
    assert_int_equal(aev_child_stop(&w), 0);
    assert_int_equal(aev_child_init(&w, g_loop, noop_cb, pid, 0), 0);
    close(gate[1]);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_reinit_pending_is_busy(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        const wtype *ty = &g_types[t];
        anyw w;
        memset(&w, 0, sizeof w); /* every byte defined, for the comparison below */
        for (int active = 0; active < 2; active++) {
            assert_int_equal(ty->init(&w, g_loop), 0);
            if (active)
                assert_int_equal(ty->start(&w), 0);
            assert_int_equal(aev_feed_event(&w.base, AEV_CUSTOM), 0);
            anyw before = w;
            if (ty->init(&w, g_loop) != -EBUSY)
                fail_msg("re-initialising a pending %s watcher was not refused", ty->name);
            assert_memory_equal(&before, &w, ty->size);
            assert_true(aev_is_pending(&w.base));
            assert_int_equal(aev_clear_pending(&w.base), AEV_CUSTOM);
            assert_int_equal(ty->stop(&w), 0);
        }
    }
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_calls, 0);
}

/* Only the loop's own containers count, never what the watcher's memory says: a byte copy of an
 * active watcher claims the same place, but the loop holds the original there. */
static void test_reinit_copy_of_active_is_not_busy(void **state)
{
    (void)state;
    for (size_t t = 0; t < NTYPES; t++) {
        const wtype *ty = &g_types[t];
        anyw w, copy;
        init_start_and_feed(ty, &w, g_loop);
        memcpy(&copy, &w, sizeof copy);
        if (ty->init(&copy, g_loop) != 0)
            fail_msg("a copy of an active %s watcher was taken for the watcher itself", ty->name);
        assert_false(aev_is_active(&copy.base));
        assert_int_equal(ty->stop(&w), 0);
    }
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/*
 * Uninitialised memory that happens to name this loop (a stack slot that held a watcher of it
 * before): random bytes, with the loop pointer planted, and half the time plausible indices that
 * land on occupied slots of the loop's queues and arrays, which hold other watchers. Never
 * -EBUSY, and (under ASan) never a read outside the loop's arrays.
 */
static void test_reinit_garbage_is_not_busy(void **state)
{
    (void)state;
    anyw live[NTYPES];
    for (size_t t = 0; t < NTYPES; t++)
        init_start_and_feed(&g_types[t], &live[t], g_loop);
    uint32_t seed = 0x9e3779b9u;
    for (int round = 0; round < 2000; round++) {
        const wtype *ty = &g_types[round % NTYPES];
        anyw g;
        unsigned char *b = (unsigned char *)&g;
        for (size_t i = 0; i < sizeof g; i++)
            b[i] = (unsigned char)xorshift(&seed);
        g.base.loop_ = g_loop;
        if (round % 2) {
            g.base.active_ = (int32_t)(xorshift(&seed) % 4);
            g.base.pending_ = (int32_t)(xorshift(&seed) % 4);
            g.base.priority_ = (int8_t)((int)(xorshift(&seed) % 5) + AEV_MINPRI);
            g.base.type_ = live[xorshift(&seed) % NTYPES].base.type_;
            g.io.fd_ = g_pipe[0];
        }
        if (ty->init(&g, g_loop) != 0)
            fail_msg("round %d: garbage taken for an active or pending watcher (%s init)", round,
                     ty->name);
    }
    for (size_t t = 0; t < NTYPES; t++) {
        assert_int_equal(aev_clear_pending(&live[t].base), AEV_CUSTOM);
        assert_int_equal(g_types[t].stop(&live[t]), 0);
    }
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
}

/* ---- destroy --------------------------------------------------------------------------------- */

static int g_destroy_rc;
static int g_depth_seen;

static void destroy_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    g_depth_seen = (int)aev_depth(aev_watcher_loop(w));
    g_destroy_rc = aev_loop_destroy(aev_watcher_loop(w));
}

static void nested_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    aev_check *inner = w->data;
    assert_int_equal(aev_feed_event(&inner->base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(aev_watcher_loop(w), AEV_RUN_NOWAIT), 0);
}

/* From any callback of the loop, at any depth, and from a prepare callback before the poll:
 * -EBUSY and nothing happened; the loop goes on working. */
static void test_destroy_from_callback_is_busy(void **state)
{
    (void)state;
    aev_prepare p;
    aev_check outer, inner;
    assert_int_equal(aev_prepare_init(&p, g_loop, destroy_cb), 0);
    assert_int_equal(aev_prepare_start(&p), 0);
    g_destroy_rc = 0;
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_destroy_rc, -EBUSY);
    assert_int_equal(g_depth_seen, 1);
    assert_int_equal(aev_prepare_stop(&p), 0);

    assert_int_equal(aev_check_init(&outer, g_loop, nested_cb), 0);
    assert_int_equal(aev_check_init(&inner, g_loop, destroy_cb), 0);
    outer.base.data = &inner;
    assert_int_equal(aev_feed_event(&outer.base, AEV_CUSTOM), 0);
    g_destroy_rc = 0;
    assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_destroy_rc, -EBUSY);
    assert_int_equal(g_depth_seen, 2);

    /* Still a working loop. */
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, g_loop, noop_cb, AEV_MSEC(1), 0), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    g_calls = 0;
    assert_int_equal(aev_run(g_loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_calls, 1);
}

/*
 * An allocator that hands the block freed last back to the next allocation it fits: the loop
 * struct is the last block aev_loop_destroy() frees and the first aev_loop_new() allocates, so
 * the next loop gets the address of the one destroyed. malloc often does the same; this makes it
 * certain (and works under ASan, whose quarantine would prevent it).
 */
static void *g_cached;

static void *sticky_realloc(void *p, size_t n)
{
    if (n == 0) {
        free(g_cached);
        g_cached = p;
        return NULL;
    }
    if (!p && g_cached && malloc_usable_size(g_cached) >= n) {
        p = g_cached;
        g_cached = NULL;
        return p;
    }
    return realloc(p, n);
}

static void sticky_off(void)
{
    aev_set_allocator(NULL);
    free(g_cached);
    g_cached = NULL;
}

/* Which signal disposition is installed now (the handler's address). */
static void *current_handler(int sig)
{
    struct sigaction sa;
    assert_int_equal(sigaction(sig, NULL, &sa), 0);
    return (void *)(uintptr_t)sa.sa_handler;
}

/*
 * Destroy with active (and pending) watchers of every type but embed (docs: stop an embed
 * watcher before destroying either loop): 0; no callback but the cleanup watcher's runs; every
 * watcher's memory is left exactly as it was; their fds stay open; the signal's disposition is
 * restored. Then the program may re-initialise the watchers for a new loop, here one at the same
 * address, which must see that it does not hold them, and use them there.
 */
static void test_destroy_with_active_watchers_then_reuse(void **state)
{
    (void)state;
    aev_set_allocator(sticky_realloc);
    aev_loop *a = aevt_loop_new();
    const size_t n = NTYPES - 1; /* all but embed */
    anyw w[NTYPES];
    anyw before[NTYPES];
    memset(w, 0, sizeof w); /* every byte defined, for the comparison below */
    void *old_handler = current_handler(SIGUSR2);
    for (size_t t = 0; t < n; t++) {
        assert_string_not_equal(g_types[t].name, "embed");
        init_and_start(&g_types[t], &w[t], a);
        if (t % 2)
            assert_int_equal(aev_feed_event(&w[t].base, AEV_CUSTOM), 0);
    }
    assert_ptr_not_equal(current_handler(SIGUSR2), old_handler);
    memcpy(before, w, sizeof w);
    g_calls = 0;
    assert_int_equal(aev_loop_destroy(a), 0);
    assert_int_equal(g_calls, 1); /* the cleanup watcher, and nothing else */
    for (size_t t = 0; t < n; t++) {
        /* The cleanup watcher is stopped before its call; the others are not touched. */
        if (strcmp(g_types[t].name, "cleanup") == 0)
            continue;
        if (memcmp(&before[t], &w[t], g_types[t].size) != 0)
            fail_msg("aev_loop_destroy wrote to an active %s watcher", g_types[t].name);
    }
    assert_true(fcntl(g_pipe[0], F_GETFD) >= 0);
    assert_ptr_equal(current_handler(SIGUSR2), old_handler);

    /* A new loop, at the same address: the stale watchers are not its own. */
    aev_loop *b = aevt_loop_new();
    print_message("new loop %s the destroyed one's address\n", a == b ? "got" : "did not get");
    sticky_off();
    /* Give b watchers of its own in the slots the stale ones claim. */
    anyw mine[NTYPES];
    for (size_t t = 0; t < n; t++)
        init_start_and_feed(&g_types[t], &mine[t], b);
    for (size_t t = 0; t < n; t++) {
        if (g_types[t].init(&w[t], b) != 0)
            fail_msg("a stale %s watcher of a destroyed loop was taken for one of the new loop's",
                     g_types[t].name);
        assert_int_equal(g_types[t].start(&w[t]), 0);
    }
    assert_int_equal(aev_run(b, AEV_RUN_NOWAIT), 1);
    for (size_t t = 0; t < n; t++) {
        assert_int_equal(g_types[t].stop(&w[t]), 0);
        assert_int_equal(g_types[t].stop(&mine[t]), 0);
    }
    assert_int_equal(aev_run(b, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_loop_destroy(b), 0);
}

/* ---- debug builds: diagnostics on stderr ------------------------------------------------------
 */

/* stderr redirected into a pipe while misuse is tried, then read back. */
typedef struct capture {
    int saved, rd;
} capture;

static void capture_begin(capture *c)
{
    int p[2];
    fflush(stderr);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(p[1], STDERR_FILENO) >= 0);
    close(p[1]);
    c->rd = p[0];
}

static const char *capture_end(capture *c)
{
    static char buf[8192];
    fflush(stderr);
    assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
    close(c->saved);
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(c->rd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(c->rd);
    return buf;
}

/* Some bytes that are certainly not a loop, readable, large enough for any loop struct. */
static _Alignas(64) unsigned char g_not_a_loop[1 << 16];

/*
 * Whether the library checks loop pointers against its registry of live loops (AEV_DEBUG). An
 * inactive watcher whose loop pointer names something else: a release build's stop reads
 * nothing of the loop and returns 0, a debug build refuses it.
 */
static bool debug_build(void)
{
    aev_timer t;
    capture c;
    assert_int_equal(aev_timer_init(&t, g_loop, noop_cb, 0, 0), 0);
    t.base.loop_ = (aev_loop *)g_not_a_loop;
    capture_begin(&c);
    int rc = aev_timer_stop(&t);
    (void)capture_end(&c);
    return rc == -EINVAL;
}

#define DEBUG_ONLY()                                                                               \
    do {                                                                                           \
        if (!debug_build()) {                                                                      \
            print_message("skipped: the library is not an AEV_DEBUG build\n");                     \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* Fails unless the captured stderr `out` contains the message formatted from fmt. */
__attribute__((format(printf, 2, 3))) static void expect_text(const char *out, const char *fmt, ...)
{
    char want[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (!strstr(out, want))
        fail_msg("expected \"%s\" on stderr, got \"%s\"", want, out);
}

/* The name debug diagnostics give a typed function other than a start or a stop: it is looked
 * up from the caller's address with dladdr(), which finds only exported symbols (a shared
 * library, or an executable linked with -rdynamic). */
static const char *looked_up_name(const char *name, const void *fn)
{
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_sname && strcmp(info.dli_sname, name) == 0)
        return name;
    return "aev (unknown function)";
}

/* A watcher whose memory is garbage: -EINVAL and "was never initialised", naming the function,
 * where a release build would follow the garbage loop pointer. */
static void test_debug_never_initialised(void **state)
{
    (void)state;
    DEBUG_ONLY();
    anyw g;
    capture c;
    memset(&g, 0x5a, sizeof g);
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, g_loop, noop_cb, 0, 0), 0);
    g.base.type_ = t.base.type_; /* a plausible type: the cheap checks pass */
    g.base.loop_ = (aev_loop *)g_not_a_loop;

    capture_begin(&c);
    int rc = aev_timer_start(&g.timer);
    const char *out = capture_end(&c);
    assert_int_equal(rc, -EINVAL);
    expect_text(out,
                "aev_timer_start: watcher %p was never initialised (loop %p is not "
                "a live loop)",
                (void *)&g, (void *)g_not_a_loop);

    /* Through the generic functions, and through a typed one that is not a start or a stop (its
     * name is looked up from the call's address). */
    capture_begin(&c);
    assert_int_equal(aev_stop(&g.base), -EINVAL);
    assert_int_equal(aev_feed_event(&g.base, AEV_CUSTOM), -EINVAL);
    assert_int_equal(aev_timer_again(&g.timer), -EINVAL);
    assert_int_equal(aev_clear_pending(&g.base), 0);
    out = capture_end(&c);
    expect_text(out, "aev_stop: watcher %p was never initialised", (void *)&g);
    expect_text(out, "aev_feed_event: watcher %p was never initialised", (void *)&g);
    expect_text(out, "%s: watcher %p was never initialised",
                looked_up_name("aev_timer_again", (const void *)(uintptr_t)aev_timer_again),
                (void *)&g);
    expect_text(out, "aev_clear_pending: watcher %p was never initialised", (void *)&g);
}

/* The watchers and the pointer of a destroyed loop: refused with "was destroyed". */
static void test_debug_destroyed_loop(void **state)
{
    (void)state;
    DEBUG_ONLY();
    aev_loop *l = aevt_loop_new();
    aev_timer t;
    aev_idle i;
    capture c;
    assert_int_equal(aev_timer_init(&t, l, noop_cb, AEV_SEC(10), 0), 0);
    assert_int_equal(aev_idle_init(&i, l, noop_cb), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_loop_destroy(l), 0);

    capture_begin(&c);
    assert_int_equal(aev_timer_stop(&t), -EINVAL);
    assert_int_equal(aev_idle_start(&i), -EINVAL);
    assert_int_equal(aev_run(l, AEV_RUN_NOWAIT), -EINVAL);
    assert_int_equal(aev_loop_destroy(l), -EINVAL);
    assert_int_equal(aev_depth(l), 0);
    assert_int_equal(aev_timer_init(&t, l, noop_cb, 0, 0), -EINVAL);
    const char *out = capture_end(&c);
    expect_text(out, "aev_timer_stop: watcher %p belongs to loop %p, which was destroyed",
                (void *)&t, (void *)l);
    expect_text(out, "aev_idle_start: watcher %p belongs to loop %p, which was destroyed",
                (void *)&i, (void *)l);
    expect_text(out, "aev_run: loop %p was destroyed", (void *)l);
    expect_text(out, "aev_loop_destroy: loop %p was destroyed", (void *)l);
    expect_text(out, "aev_depth: loop %p was destroyed", (void *)l);
    expect_text(out, "aev_timer_init: loop %p is not a live loop", (void *)l);
}

/* A copy of an active watcher used in its place: a release build would stop the original's
 * heap node through it. */
static void test_debug_copied_watcher(void **state)
{
    (void)state;
    DEBUG_ONLY();
    aev_timer t, copy;
    capture c;
    assert_int_equal(aev_timer_init(&t, g_loop, noop_cb, AEV_SEC(10), 0), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    memcpy(&copy, &t, sizeof copy);
    capture_begin(&c);
    int rc = aev_timer_stop(&copy);
    const char *out = capture_end(&c);
    assert_int_equal(rc, -EINVAL);
    expect_text(out,
                "aev_timer_stop: watcher %p claims to be active in loop %p, which "
                "does not hold it",
                (void *)&copy, (void *)g_loop);
    assert_true(aev_is_active(&t.base)); /* the original is intact */
    assert_int_equal(aev_timer_stop(&t), 0);
}

/* Re-initialising a watcher for another loop while the first still holds it: release builds
 * cannot look (the old loop pointer may be garbage); debug builds know the loop is live. */
static void test_debug_reinit_active_in_other_loop(void **state)
{
    (void)state;
    DEBUG_ONLY();
    aev_idle i;
    capture c;
    assert_int_equal(aev_idle_init(&i, g_other, noop_cb), 0);
    assert_int_equal(aev_idle_start(&i), 0);
    capture_begin(&c);
    int rc = aev_idle_init(&i, g_loop, noop_cb);
    const char *out = capture_end(&c);
    assert_int_equal(rc, -EBUSY);
    expect_text(out,
                "aev_idle_init: watcher %p is still active in loop %p: stop it "
                "first",
                (void *)&i, (void *)g_other);
    assert_ptr_equal(aev_watcher_loop(&i.base), g_other);
    assert_int_equal(aev_idle_stop(&i), 0);
    assert_int_equal(aev_idle_init(&i, g_loop, noop_cb), 0);
}

/* Correct use makes no noise in a debug build. */
static void test_debug_quiet_when_used_correctly(void **state)
{
    (void)state;
    DEBUG_ONLY();
    capture c;
    capture_begin(&c);
    for (size_t t = 0; t < NTYPES; t++) {
        anyw w;
        init_start_and_feed(&g_types[t], &w, g_loop);
        assert_int_equal(aev_run(g_loop, AEV_RUN_NOWAIT) >= 0, 1);
        assert_int_equal(g_types[t].stop(&w), 0);
        assert_int_equal(g_types[t].init(&w, g_loop), 0);
    }
    const char *out = capture_end(&c);
    assert_string_equal(out, "");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    aevt_watchdog(60);
    const struct CMUnitTest tests[] = {
        T(test_null_every_function),
        T(test_null_table_covers_header),
        T(test_zeroed_watchers),
        T(test_wrong_type),
        T(test_double_start_double_stop),
        T(test_priority_busy_while_active_or_pending),
        T(test_reinit_active_is_busy),
        T(test_reinit_active_child_pid_is_busy),
        T(test_reinit_pending_is_busy),
        T(test_reinit_copy_of_active_is_not_busy),
        T(test_reinit_garbage_is_not_busy),
        T(test_destroy_from_callback_is_busy),
        T(test_destroy_with_active_watchers_then_reuse),
        T(test_debug_never_initialised),
        T(test_debug_destroyed_loop),
        T(test_debug_copied_watcher),
        T(test_debug_reinit_active_in_other_loop),
        T(test_debug_quiet_when_used_correctly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
