/*
 * Tests of embed watchers: argument errors, an io event / async send / timer of the embedded
 * loop waking a blocked outer loop, automatic sweeps (NULL callback) and sweeps by the program,
 * events pending in the embedded loop before it was embedded, stop, references, and fork.
 *
 * The outer loop uses the backend of this test run (AEV_BACKEND); the embedded loop is always
 * an epoll loop (or a kernel kqueue where epoll is missing), since a poll loop cannot be
 * embedded. Timing checks are strict on "not early" and loose on lateness.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, in iotest.h */
#endif

#include "iotest.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* A callback later than this after its due time counts as broken; generous for a busy machine. */
#define LATE AEV_SEC(3)
/* Guard timers: a test that waits longer than this has hung. */
#define GUARD AEV_SEC(5)

/* ---- fixture ------------------------------------------------------------------------------ */

typedef struct fixture {
    aev_loop *outer; /* backend of this run */
    aev_loop *inner; /* embeddable backend */
    int pipe[2];     /* an fd for io watchers of the embedded loop */
} fixture;

/* An embeddable backend that really is one: the kqueue emulation's fd is a plain file. */
static unsigned embeddable_backend(void)
{
    unsigned supported = aev_supported_backends();
    if (supported & AEV_BACKEND_EPOLL)
        return AEV_BACKEND_EPOLL;
#if defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || defined(__APPLE__)
    if (supported & AEV_BACKEND_KQUEUE)
        return AEV_BACKEND_KQUEUE;
#endif
    return 0;
}

static aev_loop *inner_loop_new(void)
{
    aev_loop *loop = NULL;
    assert_int_equal(aev_loop_new(&loop, embeddable_backend() | AEV_FLAG_NOENV | aevt_flags()), 0);
    return loop;
}

static int g_guard_fired;

static int setup(void **state)
{
    g_guard_fired = 0;
    if (!embeddable_backend())
        return -1;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->outer = aevt_loop_new();
    f->inner = inner_loop_new();
    assert_int_equal(pipe(f->pipe), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(aev_pending_count(f->outer), 0);
    assert_int_equal(aev_pending_count(f->inner), 0);
    assert_int_equal(aev_loop_destroy(f->outer), 0);
    assert_int_equal(aev_loop_destroy(f->inner), 0);
    close(f->pipe[0]);
    close(f->pipe[1]);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct counter {
    int calls;
    unsigned events;
    aev_time_t at;   /* aev_time() at the last call */
    unsigned depth;  /* aev_depth() of `watch` at the last call */
    aev_loop *watch; /* loop whose depth is recorded, may be NULL */
    aev_loop *brk;   /* loop to break on each call, may be NULL */
} counter;

static void count(counter *c, unsigned events)
{
    c->calls++;
    c->events = events;
    c->at = aev_time();
    c->depth = c->watch ? aev_depth(c->watch) : 0;
    if (c->brk)
        aev_break(c->brk, AEV_BREAK_ALL);
}

static void count_cb(aev_watcher *w, unsigned events)
{
    count(w->data, events);
}

/* Reads what the pipe holds, so that it stops being readable. */
static void pipe_read_cb(aev_watcher *w, unsigned events)
{
    char buf[64];
    ssize_t n = read(aev_io_fd((aev_io *)w), buf, sizeof buf);
    (void)n;
    count_cb(w, events);
}

static void pipe_write(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

/* A guard timer on the outer loop: if it fires, the loop is left (failing from inside a
 * callback would leave the loop running) and guard_stop() fails the test. */
static void guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    g_guard_fired = 1;
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

static void guard_start(aev_timer *g, aev_loop *loop)
{
    g_guard_fired = 0;
    assert_int_equal(aev_timer_init(g, loop, guard_cb, GUARD, 0), 0);
    assert_int_equal(aev_timer_start(g), 0);
    /* The guard must not keep aev_run() going by itself. */
    aev_unref(loop);
}

static void guard_check(void)
{
    if (g_guard_fired)
        fail_msg("guard timer fired: the outer loop was not woken");
}

static void guard_stop(aev_timer *g, aev_loop *loop)
{
    aev_ref(loop);
    assert_int_equal(aev_timer_stop(g), 0);
    guard_check();
}

/* Another thread that acts after a delay, while the outer loop is blocked. */
typedef struct delayed {
    long ms;
    int fd;          /* written if >= 0 */
    aev_async *send; /* sent if not NULL */
} delayed;

static void *delayed_main(void *arg)
{
    delayed *d = arg;
    aevt_sleep_ms(d->ms);
    if (d->fd >= 0) {
        ssize_t n = write(d->fd, "x", 1);
        (void)n;
    }
    if (d->send)
        aev_async_send(d->send);
    return NULL;
}

/* ---- errors ------------------------------------------------------------------------------- */

static void noop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

static void test_errors(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(NULL, f->outer, noop_cb, f->inner), -EINVAL);
    assert_int_equal(aev_embed_init(&e, NULL, noop_cb, f->inner), -EINVAL);
    assert_int_equal(aev_embed_init(&e, f->outer, noop_cb, NULL), -EINVAL);
    assert_int_equal(aev_embed_init(&e, f->outer, noop_cb, f->outer), -EINVAL);
    assert_int_equal(aev_embed_init(&e, f->inner, NULL, f->inner), -EINVAL);

    /* A poll loop has no fd to watch: it cannot be embedded. */
    aev_loop *polled = NULL;
    assert_int_equal(aev_loop_new(&polled, AEV_BACKEND_POLL | AEV_FLAG_NOENV), 0);
    assert_int_equal(aev_embed_init(&e, f->outer, noop_cb, polled), -ENOTSUP);

    /* Never initialised: every function refuses it. */
    aev_embed zero;
    memset(&zero, 0, sizeof zero);
    assert_int_equal(aev_embed_start(&zero), -EINVAL);
    assert_int_equal(aev_embed_stop(&zero), -EINVAL);
    assert_int_equal(aev_embed_sweep(&zero), -EINVAL);
    assert_int_equal(aev_embed_set(&zero, f->inner), -EINVAL);
    assert_int_equal(aev_embed_start(NULL), -EINVAL);
    assert_int_equal(aev_embed_stop(NULL), -EINVAL);
    assert_int_equal(aev_embed_sweep(NULL), -EINVAL);
    assert_int_equal(aev_embed_set(NULL, f->inner), -EINVAL);
    /* A watcher of another type is not an embed watcher. */
    aev_idle idle;
    assert_int_equal(aev_idle_init(&idle, f->outer, noop_cb), 0);
    assert_int_equal(aev_embed_start((aev_embed *)(void *)&idle), -EINVAL);

    /* NULL cb is allowed (automatic sweeps). */
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_embed_set(&e, NULL), -EINVAL);
    assert_int_equal(aev_embed_set(&e, f->outer), -EINVAL);
    assert_int_equal(aev_embed_set(&e, polled), -ENOTSUP);
    assert_int_equal(aev_embed_set(&e, f->inner), 0);

    /* The generic start/stop dispatch to the embed functions. */
    assert_int_equal(aev_start(&e.base), 0);
    assert_true(aev_is_active(&e.base));
    assert_int_equal(aev_embed_start(&e), 0); /* already active: nothing */
    assert_int_equal(aev_embed_set(&e, f->inner), -EBUSY);
    assert_int_equal(aev_stop(&e.base), 0);
    assert_false(aev_is_active(&e.base));
    assert_int_equal(aev_embed_stop(&e), 0); /* already stopped: nothing */
    assert_int_equal(aev_embed_set(&e, f->inner), 0);
    assert_int_equal(aev_loop_destroy(polled), 0);
}

/* ---- io ------------------------------------------------------------------------------------ */

/* With a NULL callback, an io event of the embedded loop wakes the blocked outer loop and the
 * inner callback runs inside the outer loop's aev_run(). The inner watcher is started after the
 * embed watcher: the outer loop must notice the embedded loop's new registration. */
static void test_io_autosweep_wakes_outer(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    counter c = {.watch = f->outer};
    aev_io io;
    assert_int_equal(aev_io_init(&io, f->inner, pipe_read_cb, f->pipe[0], AEV_READ), 0);
    io.base.data = &c;
    assert_int_equal(aev_io_start(&io), 0);
    aev_timer g;
    guard_start(&g, f->outer);

    delayed d = {.ms = 100, .fd = f->pipe[1]};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_main, &d), 0);
    /* One iteration: it blocks (nothing else to do), the write wakes it, and its callbacks
     * include the sweep. */
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.events, AEV_READ);
    assert_int_equal(c.depth, 1); /* called from within the outer loop's aev_run() */

    /* Once consumed, the event is not reported again: the outer loop blocks again. */
    aev_timer stopper;
    counter sc = {0};
    assert_int_equal(aev_timer_init(&stopper, f->outer, count_cb, AEV_MSEC(100), 0), 0);
    stopper.base.data = &sc;
    assert_int_equal(aev_timer_start(&stopper), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(sc.calls, 1);
    assert_int_equal(c.calls, 1);

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_io_stop(&io), 0);
}

typedef struct sweeper {
    counter c;
    aev_embed *e;
    int sweep;    /* the callback sweeps */
    int swept_rc; /* what the sweep returned */
} sweeper;

static void embed_cb(aev_watcher *w, unsigned events)
{
    sweeper *s = w->data;
    count(&s->c, events);
    if (s->sweep)
        s->swept_rc = aev_embed_sweep(s->e);
}

/* An embed watcher calling embed_cb with s, and an io watcher of the embedded loop reading the
 * fixture's pipe and counting in c; both started. */
static void embed_pipe_start(fixture *f, aev_embed *e, sweeper *s, aev_io *io, counter *c)
{
    assert_int_equal(aev_embed_init(e, f->outer, embed_cb, f->inner), 0);
    e->base.data = s;
    assert_int_equal(aev_io_init(io, f->inner, pipe_read_cb, f->pipe[0], AEV_READ), 0);
    io->base.data = c;
    assert_int_equal(aev_io_start(io), 0);
    assert_int_equal(aev_embed_start(e), 0);
}

/* With a callback: it runs with AEV_EMBED, and the inner callback runs only when it (or
 * anyone) sweeps. */
static void test_callback_decides(void **state)
{
    fixture *f = *state;
    aev_embed e;
    sweeper s = {.e = &e, .swept_rc = -1};
    counter c = {0};
    aev_io io;
    embed_pipe_start(f, &e, &s, &io, &c);
    aev_timer g;
    guard_start(&g, f->outer);

    pipe_write(f->pipe[1]);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(s.c.calls, 1);
    assert_int_equal(s.c.events, AEV_EMBED);
    assert_int_equal(c.calls, 0);

    /* The program sweeps: now the inner callback runs; the loop has an active watcher. */
    assert_int_equal(aev_embed_sweep(&e), 1);
    assert_int_equal(c.calls, 1);

    /* Sweeping from the callback. */
    s.sweep = 1;
    pipe_write(f->pipe[1]);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(s.c.calls, 2);
    assert_int_equal(s.swept_rc, 1);
    assert_int_equal(c.calls, 2);

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_io_stop(&io), 0);
}

/* A fd of the embedded loop whose watcher stopped stays open and becomes ready: its registration,
 * left for close() to remove, makes the embedded loop's fd readable once. The embed callback may
 * run for it, the sweep only removes the registration (the stopped watcher is not called), and
 * after that the outer loop blocks again: a quiet timer is reached in a bounded number of
 * iterations, with no more embed callbacks. */
static void test_stopped_inner_fd_ready(void **state)
{
    fixture *f = *state;
    aev_embed e;
    sweeper s = {.e = &e, .sweep = 1, .swept_rc = -1};
    counter c = {0};
    aev_io io;
    embed_pipe_start(f, &e, &s, &io, &c);
    aev_timer g;
    guard_start(&g, f->outer);
    pipe_write(f->pipe[1]);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    assert_int_equal(c.calls, 1);

    assert_int_equal(aev_io_stop(&io), 0);
    pipe_write(f->pipe[1]); /* the pipe stays readable: nobody reads it any more */
    int before = s.c.calls;
    assert_in_range(iterations_until_timer(f->outer, 30), 1, 3);
    assert_in_range(s.c.calls - before, 0, 1);
    assert_int_equal(c.calls, 1);

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
}

/* ---- timers --------------------------------------------------------------------------------- */

/* A timer of the embedded loop fires on time although the outer loop has nothing else to wake
 * it; and the internal timer used for it does not drop the outer loop's reference. */
static void test_inner_timer_on_time(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    aev_timer g;
    guard_start(&g, f->outer);

    counter c = {.brk = f->outer};
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, f->inner, count_cb, AEV_MSEC(200), 0), 0);
    t.base.data = &c;
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 1);
    guard_check();
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.events, AEV_TIMER);
    aev_time_t took = c.at - t0;
    if (took < AEV_MSEC(200))
        fail_msg("inner timer fired early: after %lld us", (long long)(took / 1000));
    if (took > AEV_MSEC(200) + LATE)
        fail_msg("inner timer fired late: after %lld ms", (long long)(took / 1000000));

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
}

/* A repeating inner timer keeps firing, each time not early, and the outer loop keeps running
 * (the embed watcher's reference) until a timer of its own stops the embed watcher. */
static void stop_embed_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    aev_embed_stop(w->data);
}

static void test_inner_repeat_and_refs(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    aev_timer g;
    guard_start(&g, f->outer);

    counter c = {0};
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, f->inner, count_cb, AEV_MSEC(40), AEV_MSEC(40)), 0);
    t.base.data = &c;
    aev_timer stopper;
    assert_int_equal(aev_timer_init(&stopper, f->outer, stop_embed_cb, AEV_MSEC(300), 0), 0);
    stopper.base.data = &e;
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_timer_start(&stopper), 0);
    /* The embed watcher alone keeps the outer loop running between stopper's expiry and its
     * callback, and the inner timer's expiries must not lose that reference: aev_run() returns
     * (0, nothing left) only once stopper has stopped the embed watcher. */
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 0);
    guard_check();
    aev_time_t took = aev_time() - t0;
    assert_false(aev_is_active(&e.base));
    assert_true(took >= AEV_MSEC(300));
    /* 300 ms of 40 ms periods: at most 7 expiries, and a busy machine may coalesce some. */
    assert_true(c.calls >= 1);
    assert_true(c.calls <= 7);

    guard_stop(&g, f->outer);
    assert_int_equal(aev_timer_stop(&t), 0);
}

/* The embed watcher is one reference: aev_unref() offsets it, and its internal watchers add
 * none, so the outer loop with nothing but an unreferenced embed watcher returns at once. */
static void test_refs(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);
    aev_unref(f->outer);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 0);
    assert_true(aev_time() - t0 < AEV_SEC(2));
    aev_ref(f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 0);
}

/* ---- async ---------------------------------------------------------------------------------- */

/* A send to the embedded loop from another thread wakes the blocked outer loop. */
static void test_async_from_thread(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    counter c = {.watch = f->outer};
    aev_async a;
    assert_int_equal(aev_async_init(&a, f->inner, count_cb), 0);
    a.base.data = &c;
    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    aev_timer g;
    guard_start(&g, f->outer);

    for (int round = 1; round <= 3; round++) {
        delayed d = {.ms = 50, .fd = -1, .send = &a};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, delayed_main, &d), 0);
        /* Until the callback ran: usually one iteration, but the first send of a round may
         * also find the loop between two iterations. */
        for (int i = 0; i < 5 && c.calls < round && !g_guard_fired; i++)
            assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
        guard_check();
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(c.calls, round);
        assert_int_equal(c.events, AEV_ASYNC);
        assert_int_equal(c.depth, 1);
    }

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* Work the embedded loop has without any fd event: an event fed by the program before it was
 * embedded, a send that wrote no wakeup (the loop was not sleeping), active idle watchers. Each
 * is dispatched without the outer loop blocking. */
static void idle_three_cb(aev_watcher *w, unsigned events)
{
    counter *c = w->data;
    count(c, events);
    if (c->calls == 3)
        aev_idle_stop((aev_idle *)w);
}

static void test_work_without_fd_events(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    aev_timer g;
    guard_start(&g, f->outer);

    counter cf = {0};
    aev_idle fed;
    assert_int_equal(aev_idle_init(&fed, f->inner, count_cb), 0);
    fed.base.data = &cf;
    assert_int_equal(aev_feed_event(&fed.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(cf.calls, 1);
    assert_int_equal(cf.events, AEV_CUSTOM);
    assert_int_equal(aev_embed_stop(&e), 0);

    counter ca = {0};
    aev_async a;
    assert_int_equal(aev_async_init(&a, f->inner, count_cb), 0);
    a.base.data = &ca;
    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(ca.calls, 1);
    assert_int_equal(cf.calls, 1);

    counter ci = {0};
    aev_idle idle;
    assert_int_equal(aev_idle_init(&idle, f->inner, idle_three_cb), 0);
    idle.base.data = &ci;
    assert_int_equal(aev_idle_start(&idle), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
        guard_check();
    }
    assert_int_equal(ci.calls, 3);
    assert_int_equal(ci.events, AEV_IDLE);
    assert_false(aev_is_active(&idle.base));

    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* ---- stop ------------------------------------------------------------------------------------ */

/* Stopped, the watcher no longer dispatches the embedded loop's events; started again, it does. */
static void test_stop(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    counter c = {0};
    aev_io io;
    assert_int_equal(aev_io_init(&io, f->inner, pipe_read_cb, f->pipe[0], AEV_READ), 0);
    io.base.data = &c;
    assert_int_equal(aev_io_start(&io), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_embed_stop(&e), 0);

    pipe_write(f->pipe[1]);
    counter tc = {0};
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, f->outer, count_cb, AEV_MSEC(100), 0), 0);
    t.base.data = &tc;
    assert_int_equal(aev_timer_start(&t), 0);
    /* The outer loop waits for its timer only: the ready fd of the embedded loop is nobody's
     * business now; and nothing keeps it running afterwards. */
    assert_int_equal(aev_run(f->outer, AEV_RUN_DEFAULT), 0);
    guard_check();
    assert_int_equal(tc.calls, 1);
    assert_int_equal(c.calls, 0);

    /* A stopped watcher that was pending loses its event. */
    assert_int_equal(aev_embed_start(&e), 0);
    assert_int_equal(aev_feed_event(&e.base, AEV_EMBED), 0);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_false(aev_is_pending(&e.base));
    assert_int_equal(c.calls, 0);

    assert_int_equal(aev_embed_start(&e), 0);
    aev_timer g;
    guard_start(&g, f->outer);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(c.calls, 1);
    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_io_stop(&io), 0);
}

/* A sweep works on an inactive watcher too, and reports the embedded loop's aev_run() result. */
static void test_sweep_result(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, noop_cb, f->inner), 0);
    assert_int_equal(aev_embed_sweep(&e), 0); /* nothing active there */
    counter c = {0};
    aev_io io;
    assert_int_equal(aev_io_init(&io, f->inner, pipe_read_cb, f->pipe[0], AEV_READ), 0);
    io.base.data = &c;
    assert_int_equal(aev_io_start(&io), 0);
    pipe_write(f->pipe[1]);
    assert_int_equal(aev_embed_sweep(&e), 1);
    assert_int_equal(c.calls, 1);
    aev_suspend(f->inner);
    assert_int_equal(aev_embed_sweep(&e), -EBUSY);
    aev_resume(f->inner);
    assert_int_equal(aev_io_stop(&io), 0);
}

/* ---- rebuild ----------------------------------------------------------------------------------
 */

/*
 * The embedded loop recreates its kernel object when it cannot get rid of a registration (here:
 * a fd closed before its watcher was stopped, whose file lives on through the pipe's other fd).
 * The new epoll fd usually gets the old number back, while the outer loop's registration went
 * away with the old file: the embed watcher must notice and register the new one.
 */
static void test_inner_rebuild_rearm(void **state)
{
    fixture *f = *state;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    int dup_fd = dup(f->pipe[0]);
    assert_true(dup_fd >= 0);
    counter cd = {0};
    aev_io stale;
    assert_int_equal(aev_io_init(&stale, f->inner, count_cb, dup_fd, AEV_READ), 0);
    stale.base.data = &cd;
    assert_int_equal(aev_io_start(&stale), 0);
    assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);
    /* The program's mistake the library must survive: close first, stop afterwards. */
    close(dup_fd);
    assert_int_equal(aev_io_stop(&stale), 0);
    pipe_write(f->pipe[1]);
    /* The unwanted events make the embedded loop renew, then rebuild, within a few sweeps. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);
    assert_int_equal(cd.calls, 0);
    char buf[8];
    assert_int_equal(read(f->pipe[0], buf, sizeof buf), 1);

    int p2[2];
    assert_int_equal(pipe(p2), 0);
    counter c = {0};
    aev_io io;
    assert_int_equal(aev_io_init(&io, f->inner, pipe_read_cb, p2[0], AEV_READ), 0);
    io.base.data = &c;
    assert_int_equal(aev_io_start(&io), 0);
    aev_timer g;
    guard_start(&g, f->outer);
    /* Let the outer loop settle (register the new fd) and block before the event comes. */
    assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);
    delayed d = {.ms = 100, .fd = p2[1]};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_main, &d), 0);
    for (int i = 0; i < 3 && c.calls == 0 && !g_guard_fired; i++)
        assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    guard_stop(&g, f->outer);
    assert_int_equal(c.calls, 1);
    assert_int_equal(aev_io_stop(&io), 0);
    assert_int_equal(aev_embed_stop(&e), 0);
    close(p2[0]);
    close(p2[1]);
}

/* ---- fork ------------------------------------------------------------------------------------ */

typedef struct fork_state {
    fixture *f;
    int forked;     /* the embedded loop's fork watcher ran */
    int read_calls; /* the embedded io watcher ran */
} fork_state;

static fork_state g_fork;

static void inner_fork_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    if (events & AEV_FORK)
        g_fork.forked = 1;
}

static void inner_read_cb(aev_watcher *w, unsigned events)
{
    char buf[64];
    ssize_t n = read(aev_io_fd((aev_io *)w), buf, sizeof buf);
    (void)n;
    (void)events;
    g_fork.read_calls++;
    aev_break(g_fork.f->outer, AEV_BREAK_ALL);
}

static void child_write_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    ssize_t n = write(*(int *)w->data, "x", 1);
    (void)n;
}

static void child_guard_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    _exit(2);
}

/* In the child: the embedded loop must be re-armed on its new kernel object. The write is made
 * by an outer timer callback, after the embedded loop rebuilt itself and the outer loop has
 * blocked; only the re-armed io watcher can wake the outer loop for it before the guard. */
static int fork_child(fixture *f)
{
    aev_timer guard, writer;
    aev_timer_init(&guard, f->outer, child_guard_cb, AEV_SEC(3), 0);
    aev_timer_start(&guard);
    aev_unref(f->outer);
    aev_timer_init(&writer, f->outer, child_write_cb, AEV_MSEC(150), 0);
    writer.base.data = &f->pipe[1];
    aev_timer_start(&writer);
    if (aev_run(f->outer, AEV_RUN_DEFAULT) < 0)
        return 5;
    if (!g_fork.forked)
        return 4;
    if (g_fork.read_calls != 1)
        return 3;
    return 0;
}

static void test_fork_rearm(void **state)
{
    fixture *f = *state;
    g_fork = (fork_state){.f = f};
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, f->outer, NULL, f->inner), 0);
    aev_fork fw;
    assert_int_equal(aev_fork_init(&fw, f->inner, inner_fork_cb), 0);
    assert_int_equal(aev_fork_start(&fw), 0);
    aev_io io;
    assert_int_equal(aev_io_init(&io, f->inner, inner_read_cb, f->pipe[0], AEV_READ), 0);
    assert_int_equal(aev_io_start(&io), 0);
    assert_int_equal(aev_embed_start(&e), 0);
    /* Everything registered in both loops before the fork. */
    assert_int_equal(aev_run(f->outer, AEV_RUN_NOWAIT), 1);

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fork_child(f));

    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        assert_int_equal(errno, EINTR);
    assert_true(WIFEXITED(status));
    int code = WEXITSTATUS(status);
    if (code != 0)
        fail_msg("child failed with %d (2: outer loop not woken, 3: io callback count, 4: no "
                 "fork callback, 5: run error)",
                 code);

    /* The parent's loops are untouched: no fork callback here, and io still works. */
    assert_int_equal(g_fork.forked, 0);
    aev_timer g;
    guard_start(&g, f->outer);
    pipe_write(f->pipe[1]);
    assert_int_equal(aev_run(f->outer, AEV_RUN_ONCE), 1);
    guard_check();
    assert_int_equal(g_fork.read_calls, 1);
    guard_stop(&g, f->outer);
    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_io_stop(&io), 0);
    assert_int_equal(aev_fork_stop(&fw), 0);
}

int main(void)
{
    aevt_watchdog(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_autosweep_wakes_outer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_decides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_inner_fd_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inner_timer_on_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inner_repeat_and_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_from_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_work_without_fd_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inner_rebuild_rearm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_rearm, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
