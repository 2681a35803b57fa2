/*
 * Tests of the loop itself: versions and error texts, creation flags and backend selection,
 * aev_run() modes and return values, aev_break() (also across nested runs), reference counting,
 * the iteration, depth and pending counters, the cached time, and aev_loop_destroy().
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

/* A timer this far away must not delay a run that should not wait for it; a run "returns
 * quickly" if it takes less than QUICK (generous for a loaded machine, yet well below FAR). */
#define FAR AEV_SEC(10)
#define QUICK AEV_SEC(5)

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAX_LOG 64

/* One callback invocation, as seen from inside the callback. */
typedef struct entry {
    int id;
    unsigned events;
    uint64_t iteration;
    unsigned depth;
} entry;

static entry g_log[MAX_LOG];
static int g_nlog;

static void log_reset(void)
{
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
}

/* Records the call; the id is the watcher's data pointer. Failures are checked after aev_run()
 * returns, so an overflow only drops entries instead of jumping out of the library. */
static void log_call(aev_watcher *w, unsigned events)
{
    aev_loop *loop = aev_watcher_loop(w);
    if (g_nlog >= MAX_LOG) {
        g_nlog++;
        return;
    }
    g_log[g_nlog].id = (int)(intptr_t)w->data;
    g_log[g_nlog].events = events;
    g_log[g_nlog].iteration = aev_iteration(loop);
    g_log[g_nlog].depth = aev_depth(loop);
    g_nlog++;
}

static void log_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
}

static void expect_ids(const int *ids, int n)
{
    assert_int_equal(g_nlog, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(g_log[i].id, ids[i]);
    }
}

/* An inactive check watcher is a convenient target for aev_feed_event(). */
static void init_fed(aev_check *c, aev_loop *loop, aev_cb cb, int id)
{
    assert_int_equal(aev_check_init(c, loop, cb), 0);
    c->base.data = (void *)(intptr_t)id;
}

static void init_timer(aev_timer *t, aev_loop *loop, aev_cb cb, int id, aev_time_t after,
                       aev_time_t repeat)
{
    assert_int_equal(aev_timer_init(t, loop, cb, after, repeat), 0);
    t->base.data = (void *)(intptr_t)id;
}

/* ---- versions, errors, backends --------------------------------------------------------- */

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(aev_version(), AEV_VERSION_HEX);
}

static void test_strerror_never_null(void **state)
{
    static const int samples[] = {0,         1,       -1,      -EINVAL, -ENOMEM,    -EBUSY,
                                  -ENOSYS,   -EBADF,  -EMFILE, -ENFILE, 4096,       -4096,
                                  123456789, -123456, INT_MAX, INT_MIN, INT_MIN + 1};
    (void)state;
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        const char *s = aev_strerror(samples[i]);
        assert_non_null(s);
        (void)strlen(s);
    }
    for (int e = -300; e <= 300; e++) {
        assert_non_null(aev_strerror(e));
    }
    /* Codes the library returns must have a real text each, not one catch-all string. */
    assert_true(strlen(aev_strerror(-EINVAL)) > 0);
    assert_true(strlen(aev_strerror(-ENOMEM)) > 0);
    assert_true(strlen(aev_strerror(-EBUSY)) > 0);
    assert_string_not_equal(aev_strerror(-EINVAL), aev_strerror(-ENOMEM));
    assert_string_not_equal(aev_strerror(-EINVAL), aev_strerror(-EBUSY));
    assert_string_not_equal(aev_strerror(-EBUSY), aev_strerror(-ENOSYS));
}

static void test_supported_backends(void **state)
{
    unsigned s = aev_supported_backends();
    unsigned r = aev_recommended_backends();
    (void)state;
    assert_true(s & AEV_BACKEND_POLL);
#ifdef __linux__
    assert_true(s & AEV_BACKEND_EPOLL);
    /* kqueue exists on Linux only in the test build against the kqueue emulation, and is never
     * recommended there. */
    assert_false(r & AEV_BACKEND_KQUEUE);
#endif
    assert_int_equal(s & ~(unsigned)AEV_BACKEND_MASK, 0);
    assert_true(r != 0);
    assert_int_equal(r & ~s, 0);
}

static void test_loop_new_invalid_flags(void **state)
{
    aev_loop *l = NULL;
    (void)state;
    assert_int_equal(aev_loop_new(NULL, 0), -EINVAL);
    assert_int_equal(aev_loop_new(NULL, AEV_BACKEND_POLL), -EINVAL);
    assert_int_equal(aev_loop_new(&l, AEV_BACKEND_POLL | AEV_BACKEND_EPOLL), -EINVAL);
    assert_int_equal(aev_loop_new(&l, AEV_BACKEND_POLL | AEV_BACKEND_KQUEUE), -EINVAL);
    assert_int_equal(aev_loop_new(&l, AEV_BACKEND_POLL | AEV_BACKEND_EPOLL | AEV_FLAG_NOENV),
                     -EINVAL);
    assert_int_equal(aev_loop_new(&l, 0x400), -EINVAL);
    assert_int_equal(aev_loop_new(&l, 0x10000), -EINVAL);
    assert_int_equal(aev_loop_new(&l, 0x80000000u), -EINVAL);
    assert_int_equal(aev_loop_new(&l, AEV_BACKEND_POLL | 0x800), -EINVAL);
    /* -ENOSYS exactly when the backend is not compiled in. */
    if (!(aev_supported_backends() & AEV_BACKEND_KQUEUE)) {
        assert_int_equal(aev_loop_new(&l, AEV_BACKEND_KQUEUE), -ENOSYS);
        assert_int_equal(aev_loop_new(&l, AEV_BACKEND_KQUEUE | AEV_FLAG_NOENV), -ENOSYS);
    } else {
        assert_int_equal(aev_loop_new(&l, AEV_BACKEND_KQUEUE | AEV_FLAG_NOENV), 0);
        assert_int_equal(aev_backend(l), AEV_BACKEND_KQUEUE);
        assert_int_equal(aev_loop_destroy(l), 0);
    }
}

static void new_check_destroy(unsigned flags, unsigned want_backend)
{
    aev_loop *l = NULL;
    assert_int_equal(aev_loop_new(&l, flags), 0);
    assert_non_null(l);
    if (want_backend != 0) {
        assert_int_equal(aev_backend(l), want_backend);
    }
    assert_int_equal(aev_run(l, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_loop_destroy(l), 0);
}

static void test_loop_new_valid_flags(void **state)
{
    (void)state;
    new_check_destroy(0, 0);
    new_check_destroy(AEV_FLAG_NOENV, 0);
    new_check_destroy(AEV_FLAG_PIPE_WAKEUP, 0);
    new_check_destroy(AEV_FLAG_NOENV | AEV_FLAG_PIPE_WAKEUP, 0);
    new_check_destroy(AEV_BACKEND_POLL | AEV_FLAG_NOENV, AEV_BACKEND_POLL);
    new_check_destroy(AEV_BACKEND_POLL | AEV_FLAG_NOENV | AEV_FLAG_PIPE_WAKEUP, AEV_BACKEND_POLL);
#ifdef __linux__
    new_check_destroy(AEV_BACKEND_EPOLL | AEV_FLAG_NOENV, AEV_BACKEND_EPOLL);
    new_check_destroy(AEV_BACKEND_EPOLL | AEV_FLAG_NOENV | AEV_FLAG_PIPE_WAKEUP, AEV_BACKEND_EPOLL);
    /* AUTO picks the best compiled-in backend when the environment is ignored. */
    new_check_destroy(AEV_BACKEND_AUTO | AEV_FLAG_NOENV, AEV_BACKEND_EPOLL);
#endif
}

static void check_name(aev_loop *l)
{
    unsigned b = aev_backend(l);
    const char *name = aev_backend_name(l);
    assert_non_null(name);
    if (b == AEV_BACKEND_EPOLL) {
        assert_string_equal(name, "epoll");
    } else if (b == AEV_BACKEND_POLL) {
        assert_string_equal(name, "poll");
    } else {
        assert_int_equal(b, AEV_BACKEND_KQUEUE);
        assert_string_equal(name, "kqueue");
    }
    assert_true(b & aev_supported_backends());
}

/* The fixture's loop uses the backend CTest selected through AEV_BACKEND. */
static void test_backend_matches_env(void **state)
{
    aev_loop *loop = *state;
    const char *env = getenv("AEV_BACKEND");
    check_name(loop);
    if (env == NULL || env[0] == '\0') {
        return;
    }
    if (strcmp(env, "epoll") == 0) {
        assert_int_equal(aev_backend(loop), AEV_BACKEND_EPOLL);
    } else if (strcmp(env, "poll") == 0) {
        assert_int_equal(aev_backend(loop), AEV_BACKEND_POLL);
    } else if (strcmp(env, "kqueue") == 0) {
        assert_int_equal(aev_backend(loop), AEV_BACKEND_KQUEUE);
    }
}

/* Tests that change AEV_BACKEND restore it in teardown, even when an assertion failed. */
static char *g_saved_env;
static int g_had_env;

static int env_setup(void **state)
{
    const char *old = getenv("AEV_BACKEND");
    (void)state;
    g_had_env = old != NULL;
    g_saved_env = old ? strdup(old) : NULL;
    return 0;
}

static int env_teardown(void **state)
{
    (void)state;
    if (g_had_env) {
        setenv("AEV_BACKEND", g_saved_env, 1);
    } else {
        unsetenv("AEV_BACKEND");
    }
    free(g_saved_env);
    g_saved_env = NULL;
    return 0;
}

static void test_env_selects_backend(void **state)
{
    aev_loop *l = NULL;
    (void)state;

    assert_int_equal(setenv("AEV_BACKEND", "poll", 1), 0);
    assert_int_equal(aev_loop_new(&l, 0), 0);
    assert_int_equal(aev_backend(l), AEV_BACKEND_POLL);
    assert_string_equal(aev_backend_name(l), "poll");
    assert_int_equal(aev_loop_destroy(l), 0);

#ifdef __linux__
    assert_int_equal(setenv("AEV_BACKEND", "epoll", 1), 0);
    assert_int_equal(aev_loop_new(&l, 0), 0);
    assert_int_equal(aev_backend(l), AEV_BACKEND_EPOLL);
    assert_string_equal(aev_backend_name(l), "epoll");
    assert_int_equal(aev_loop_destroy(l), 0);

    /* NOENV ignores the request for poll: AUTO then means the best backend, epoll. */
    assert_int_equal(setenv("AEV_BACKEND", "poll", 1), 0);
    assert_int_equal(aev_loop_new(&l, AEV_FLAG_NOENV), 0);
    assert_int_equal(aev_backend(l), AEV_BACKEND_EPOLL);
    assert_string_equal(aev_backend_name(l), "epoll");
    assert_int_equal(aev_loop_destroy(l), 0);

#endif

    /* A known backend: -ENOSYS exactly when it is not compiled in. */
    assert_int_equal(setenv("AEV_BACKEND", "kqueue", 1), 0);
    l = NULL;
    if (!(aev_supported_backends() & AEV_BACKEND_KQUEUE)) {
        assert_int_equal(aev_loop_new(&l, 0), -ENOSYS);
    } else {
        assert_int_equal(aev_loop_new(&l, 0), 0);
        assert_int_equal(aev_backend(l), AEV_BACKEND_KQUEUE);
        assert_int_equal(aev_loop_destroy(l), 0);
    }

    assert_int_equal(setenv("AEV_BACKEND", "bogus", 1), 0);
    l = NULL;
    assert_int_equal(aev_loop_new(&l, 0), -EINVAL);
    assert_int_equal(aev_loop_new(&l, AEV_FLAG_NOENV), 0);
    check_name(l);
    assert_int_equal(aev_loop_destroy(l), 0);
}

static void test_loop_data(void **state)
{
    aev_loop *loop = *state;
    int a = 1, b = 2;
    assert_null(aev_loop_data(loop));
    aev_loop_set_data(loop, &a);
    assert_ptr_equal(aev_loop_data(loop), &a);
    aev_loop_set_data(loop, &b);
    assert_ptr_equal(aev_loop_data(loop), &b);
    /* The library must not use it: a run leaves it alone. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_ptr_equal(aev_loop_data(loop), &b);
    aev_loop_set_data(loop, NULL);
    assert_null(aev_loop_data(loop));
}

static void test_watcher_loop(void **state)
{
    aev_loop *loop = *state;
    aev_loop *other = aevt_loop_new();
    aev_timer t1, t2;
    init_timer(&t1, loop, log_cb, 1, AEV_SEC(1), 0);
    init_timer(&t2, other, log_cb, 2, AEV_SEC(1), 0);
    assert_ptr_equal(aev_watcher_loop(&t1.base), loop);
    assert_ptr_equal(aev_watcher_loop(&t2.base), other);
    assert_int_equal(aev_loop_destroy(other), 0);
}

/* ---- argument errors -------------------------------------------------------------------- */

static void test_run_break_destroy_errors(void **state)
{
    aev_loop *loop = *state;
    assert_int_equal(aev_run(NULL, AEV_RUN_DEFAULT), -EINVAL);
    assert_int_equal(aev_run(NULL, AEV_RUN_NOWAIT), -EINVAL);
    assert_int_equal(aev_run(loop, 3), -EINVAL);
    assert_int_equal(aev_run(loop, -1), -EINVAL);
    assert_int_equal(aev_run(loop, 1000), -EINVAL);
    assert_int_equal(aev_break(NULL, AEV_BREAK_ONE), -EINVAL);
    assert_int_equal(aev_break(loop, 3), -EINVAL);
    assert_int_equal(aev_break(loop, -1), -EINVAL);
    assert_int_equal(aev_break(loop, AEV_BREAK_CANCEL), 0);
    assert_int_equal(aev_break(loop, AEV_BREAK_ONE), 0);
    assert_int_equal(aev_break(loop, AEV_BREAK_ALL), 0);
    assert_int_equal(aev_loop_destroy(NULL), -EINVAL);
    /* A bad mode must not count as an iteration. */
    assert_int_equal(aev_iteration(loop), 0);
}

static void test_generic_start_stop(void **state)
{
    aev_loop *loop = *state;
    aev_timer t, zero;
    memset(&zero, 0, sizeof zero);

    assert_int_equal(aev_start(NULL), -EINVAL);
    assert_int_equal(aev_stop(NULL), -EINVAL);
    assert_int_equal(aev_start(&zero.base), -EINVAL);
    assert_int_equal(aev_stop(&zero.base), -EINVAL);
    assert_false(aev_is_active(&zero.base));
    assert_false(aev_is_pending(&zero.base));
    assert_int_equal(aev_timer_start(&zero), -EINVAL);
    assert_int_equal(aev_timer_stop(&zero), -EINVAL);

    init_timer(&t, loop, log_cb, 1, FAR, 0);
    assert_false(aev_is_active(&t.base));
    assert_false(aev_is_pending(&t.base));
    /* No error recorded on a fresh watcher; op may be NULL. */
    aev_errop op = AEV_ERROP_POLL;
    assert_int_equal(aev_watcher_error(&t.base, &op), 0);
    assert_int_equal(op, AEV_ERROP_NONE);
    assert_int_equal(aev_watcher_error(&t.base, NULL), 0);
    assert_int_equal(aev_stop(&t.base), 0); /* inactive: no-op */
    assert_false(aev_is_active(&t.base));
    assert_int_equal(aev_start(&t.base), 0);
    assert_true(aev_is_active(&t.base));
    assert_int_equal(aev_start(&t.base), 0); /* active: no-op */
    assert_true(aev_is_active(&t.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_stop(&t.base), 0);
    assert_false(aev_is_active(&t.base));
    assert_int_equal(aev_stop(&t.base), 0);
    /* Starting twice must not have added two references or two heap entries. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
}

/* ---- aev_run modes ---------------------------------------------------------------------- */

static void test_run_without_watchers(void **state)
{
    aev_loop *loop = *state;
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_iteration(loop), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_iteration(loop), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(aev_depth(loop), 0);
}

static void test_nowait_does_not_block(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    init_timer(&t, loop, log_cb, 1, FAR, 0);
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 0);
    assert_int_equal(aev_iteration(loop), 2);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* ONCE sleeps until the nearest timer is due, so the one iteration runs its callback. */
static void test_once_waits_for_timer(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    init_timer(&t, loop, log_cb, 1, AEV_MSEC(30), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 0);
    aev_time_t took = aev_time() - t0;
    assert_int_equal(g_nlog, 1);
    assert_int_equal(g_log[0].events, AEV_TIMER);
    assert_true(took >= AEV_MSEC(30));
    assert_true(took < QUICK);
    assert_false(aev_is_active(&t.base));
}

static void test_once_returns_1_while_active(void **state)
{
    aev_loop *loop = *state;
    aev_timer rep, keep;
    log_reset();
    init_timer(&rep, loop, log_cb, 1, AEV_MSEC(1), AEV_MSEC(1));
    init_timer(&keep, loop, log_cb, 2, FAR, 0);
    assert_int_equal(aev_timer_start(&rep), 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_int_equal(aev_iteration(loop), 2);
    assert_true(g_nlog >= 1);
    for (int i = 0; i < g_nlog; i++) {
        assert_int_equal(g_log[i].id, 1);
    }
    assert_int_equal(aev_timer_stop(&rep), 0);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

static void test_default_runs_until_no_watchers(void **state)
{
    aev_loop *loop = *state;
    aev_timer a, b, c;
    static const int want[] = {1, 2, 3};
    log_reset();
    init_timer(&a, loop, log_cb, 1, AEV_MSEC(5), 0);
    init_timer(&b, loop, log_cb, 2, AEV_MSEC(15), 0);
    init_timer(&c, loop, log_cb, 3, AEV_MSEC(25), 0);
    assert_int_equal(aev_timer_start(&c), 0);
    assert_int_equal(aev_timer_start(&a), 0);
    assert_int_equal(aev_timer_start(&b), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    expect_ids(want, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g_log[i].depth, 1);
    }
    assert_int_equal(aev_depth(loop), 0);
}

/* ---- break ------------------------------------------------------------------------------ */

static int g_break_at;
static int g_break_how;
static int g_count;

static void counting_break_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    g_count++;
    if (g_count == g_break_at) {
        aev_break(aev_watcher_loop(w), g_break_how);
    }
}

static void test_break_one(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    g_count = 0;
    g_break_at = 3;
    g_break_how = AEV_BREAK_ONE;
    init_timer(&t, loop, counting_break_cb, 1, AEV_MSEC(1), AEV_MSEC(1));
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_int_equal(g_count, 3);
    assert_true(aev_is_active(&t.base));
    /* The break was consumed: a new run goes on until broken again. */
    g_break_at = 5;
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_int_equal(g_count, 5);
    assert_int_equal(aev_timer_stop(&t), 0);
}

static void stop_and_break_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aev_stop(w);
    aev_break(aev_watcher_loop(w), AEV_BREAK_ONE);
}

/* A break that leaves no active watchers behind makes aev_run() return 0. */
static void test_break_returns_0_when_none_active(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    init_timer(&t, loop, stop_and_break_cb, 1, AEV_MSEC(1), AEV_MSEC(1));
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 1);
}

/* After a break the rest of the iteration's pending callbacks still run, then aev_run() returns
 * without waiting for the next (far) timer. Case 1: events fed before the run. */
static void test_break_finishes_iteration_fed(void **state)
{
    aev_loop *loop = *state;
    aev_check a, b, c;
    aev_timer keep;
    static const int want[] = {1, 2, 3};
    log_reset();
    g_count = 0;
    g_break_at = 1;
    g_break_how = AEV_BREAK_ONE;
    init_fed(&a, loop, counting_break_cb, 1);
    init_fed(&b, loop, counting_break_cb, 2);
    init_fed(&c, loop, counting_break_cb, 3);
    init_timer(&keep, loop, log_cb, 9, FAR, 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    assert_int_equal(aev_feed_event(&a.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_feed_event(&b.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_true(aev_time() - t0 < QUICK);
    expect_ids(want, 3);
    assert_int_equal(g_log[2].iteration, g_log[0].iteration);
    assert_int_equal(aev_pending_count(loop), 0);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

/* Case 2: timers expiring together after the poll. */
static void test_break_finishes_iteration_timers(void **state)
{
    aev_loop *loop = *state;
    aev_timer t[3], keep;
    static const int want[] = {1, 2, 3};
    log_reset();
    g_count = 0;
    g_break_at = 1;
    g_break_how = AEV_BREAK_ONE;
    for (int i = 0; i < 3; i++) {
        init_timer(&t[i], loop, counting_break_cb, i + 1, 0, 0);
    }
    init_timer(&keep, loop, log_cb, 9, FAR, 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aev_timer_start(&t[i]), 0);
    }
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_true(aev_time() - t0 < QUICK);
    expect_ids(want, 3);
    assert_int_equal(g_log[2].iteration, g_log[0].iteration);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

/* A break requested outside aev_run() is dropped when the next run starts. */
static void test_break_outside_run_is_cancelled(void **state)
{
    aev_loop *loop = *state;
    aev_timer t[2];
    log_reset();
    init_timer(&t[0], loop, log_cb, 1, AEV_MSEC(2), 0);
    init_timer(&t[1], loop, log_cb, 2, AEV_MSEC(10), 0);
    assert_int_equal(aev_timer_start(&t[0]), 0);
    assert_int_equal(aev_timer_start(&t[1]), 0);
    assert_int_equal(aev_break(loop, AEV_BREAK_ALL), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 2);

    init_timer(&t[0], loop, log_cb, 1, AEV_MSEC(2), 0);
    assert_int_equal(aev_timer_start(&t[0]), 0);
    assert_int_equal(aev_break(loop, AEV_BREAK_ONE), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 3);
}

static void break_then_cancel_cb(aev_watcher *w, unsigned events)
{
    aev_loop *loop = aev_watcher_loop(w);
    log_call(w, events);
    g_count++;
    if (g_count == 1) {
        aev_break(loop, AEV_BREAK_ONE);
        aev_break(loop, AEV_BREAK_CANCEL);
    }
    if (g_count == 4) {
        aev_stop(w);
    }
}

static void test_break_cancel(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    g_count = 0;
    init_timer(&t, loop, break_then_cancel_cb, 1, AEV_MSEC(1), AEV_MSEC(1));
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_count, 4);
}

/* ---- nested runs ------------------------------------------------------------------------ */

typedef struct nest {
    aev_timer outer, inner, after;
    int inner_calls;
    int inner_break_how;
    int nested_rc;
    unsigned depth_after_nested;
    uint64_t iter_before_nested, iter_after_nested;
} nest;

static nest g_nest;

static void nest_inner_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    g_nest.inner_calls++;
    if (g_nest.inner_calls == 2) {
        aev_break(aev_watcher_loop(w), g_nest.inner_break_how);
    }
}

static void nest_outer_cb(aev_watcher *w, unsigned events)
{
    aev_loop *loop = aev_watcher_loop(w);
    log_call(w, events);
    aev_timer_start(&g_nest.inner);
    g_nest.iter_before_nested = aev_iteration(loop);
    g_nest.nested_rc = aev_run(loop, AEV_RUN_DEFAULT);
    g_nest.iter_after_nested = aev_iteration(loop);
    g_nest.depth_after_nested = aev_depth(loop);
    aev_timer_stop(&g_nest.inner);
    log_call(w, events);
    if (g_nest.inner_break_how == AEV_BREAK_ONE) {
        /* Only the nested run was left: the outer one must still run this timer. */
        aev_timer_start(&g_nest.after);
    }
}

static void setup_nest(aev_loop *loop, int how)
{
    memset(&g_nest, 0, sizeof g_nest);
    g_nest.inner_break_how = how;
    init_timer(&g_nest.outer, loop, nest_outer_cb, 1, 0, 0);
    init_timer(&g_nest.inner, loop, nest_inner_cb, 2, AEV_MSEC(1), AEV_MSEC(1));
    init_timer(&g_nest.after, loop, log_cb, 3, 0, 0);
}

static void test_nested_run_break_one(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 2, 2, 1, 3};
    static const unsigned depths[] = {1, 2, 2, 1, 1};
    log_reset();
    setup_nest(loop, AEV_BREAK_ONE);
    assert_int_equal(aev_depth(loop), 0);
    assert_int_equal(aev_timer_start(&g_nest.outer), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(aev_depth(loop), 0);
    expect_ids(want, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g_log[i].depth, depths[i]);
    }
    /* The inner timer was still active when the nested run was broken. */
    assert_int_equal(g_nest.nested_rc, 1);
    assert_int_equal(g_nest.depth_after_nested, 1);
    assert_true(g_nest.iter_after_nested > g_nest.iter_before_nested);
    /* The iteration counter is shared, and the outer loop went on to a later iteration. */
    assert_true(g_log[1].iteration > g_log[0].iteration);
    assert_true(g_log[4].iteration > g_log[2].iteration);
}

static void test_nested_run_break_all(void **state)
{
    aev_loop *loop = *state;
    aev_timer keep;
    static const int want[] = {1, 2, 2, 1};
    log_reset();
    setup_nest(loop, AEV_BREAK_ALL);
    init_timer(&keep, loop, log_cb, 9, FAR, 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    assert_int_equal(aev_timer_start(&g_nest.outer), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(aev_depth(loop), 0);
    expect_ids(want, 4);
    assert_int_equal(g_nest.nested_rc, 1);
    assert_int_equal(g_nest.depth_after_nested, 1);
    assert_true(aev_is_active(&keep.base));
    assert_int_equal(aev_timer_stop(&keep), 0);
    /* The break is not left over for the next run. */
    init_timer(&g_nest.after, loop, log_cb, 3, AEV_MSEC(1), 0);
    assert_int_equal(aev_timer_start(&g_nest.after), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 5);
}

/* ---- references ------------------------------------------------------------------------- */

static void test_unref_lets_run_return(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    init_timer(&t, loop, log_cb, 1, FAR, 0);
    assert_int_equal(aev_timer_start(&t), 0);
    aev_unref(loop);
    uint64_t it0 = aev_iteration(loop);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(aev_time() - t0 < QUICK);
    assert_true(aev_iteration(loop) - it0 <= 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 0);
    assert_true(aev_is_active(&t.base));
    aev_ref(loop);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    /* Stopping gives back the watcher's reference; the program's unref/ref pair is balanced. */
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* An unreferenced watcher still fires while something else keeps the loop running, and does
 * not keep it running by itself once that is gone. */
static void test_unref_watcher_still_fires(void **state)
{
    aev_loop *loop = *state;
    aev_timer bg, fg;
    log_reset();
    init_timer(&bg, loop, log_cb, 1, AEV_MSEC(2), AEV_MSEC(2));
    init_timer(&fg, loop, log_cb, 2, AEV_MSEC(40), 0);
    assert_int_equal(aev_timer_start(&bg), 0);
    aev_unref(loop);
    assert_int_equal(aev_timer_start(&fg), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(g_nlog >= 2);
    assert_true(g_nlog <= MAX_LOG);
    /* The run ended right after the referenced timer fired. */
    assert_int_equal(g_log[g_nlog - 1].id, 2);
    for (int i = 0; i < g_nlog - 1; i++) {
        assert_int_equal(g_log[i].id, 1);
    }
    assert_true(aev_is_active(&bg.base));
    /* Give the reference back before the watcher that it was taken for stops. */
    aev_ref(loop);
    assert_int_equal(aev_timer_stop(&bg), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* ---- counters and time ------------------------------------------------------------------ */

static void test_iteration_counter(void **state)
{
    aev_loop *loop = *state;
    aev_check c;
    aev_timer t;
    log_reset();
    assert_int_equal(aev_iteration(loop), 0);
    init_fed(&c, loop, log_cb, 1);
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 1);
    assert_int_equal(g_log[0].iteration, 1);
    assert_int_equal(g_log[0].depth, 1);
    assert_int_equal(aev_iteration(loop), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_iteration(loop), 3);

    /* A repeating timer fires at most once per iteration, so its calls see rising counts. */
    g_count = 0;
    g_break_at = 4;
    g_break_how = AEV_BREAK_ONE;
    log_reset();
    init_timer(&t, loop, counting_break_cb, 2, AEV_MSEC(1), AEV_MSEC(1));
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_int_equal(g_nlog, 4);
    assert_true(g_log[0].iteration >= 4);
    for (int i = 1; i < 4; i++) {
        assert_true(g_log[i].iteration > g_log[i - 1].iteration);
    }
    assert_true(aev_iteration(loop) >= g_log[3].iteration);
    assert_int_equal(aev_timer_stop(&t), 0);
}

static unsigned g_pending_seen[4];

static void pending_seen_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    if (g_nlog <= 4) {
        g_pending_seen[g_nlog - 1] = aev_pending_count(aev_watcher_loop(w));
    }
}

static void test_pending_count(void **state)
{
    aev_loop *loop = *state;
    aev_check c[4];
    static const int want[] = {1, 3, 4};
    log_reset();
    for (int i = 0; i < 4; i++) {
        init_fed(&c[i], loop, pending_seen_cb, i + 1);
    }
    assert_int_equal(aev_pending_count(loop), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(aev_feed_event(&c[i].base, AEV_CUSTOM), 0);
        assert_int_equal(aev_pending_count(loop), (unsigned)i + 1);
    }
    /* Feeding a pending watcher again does not add an event. */
    assert_int_equal(aev_feed_event(&c[0].base, AEV_TIMER), 0);
    assert_int_equal(aev_pending_count(loop), 4);
    assert_int_equal(aev_clear_pending(&c[1].base), AEV_CUSTOM);
    assert_int_equal(aev_pending_count(loop), 3);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 3);
    assert_int_equal(g_pending_seen[0], 2);
    assert_int_equal(g_pending_seen[1], 1);
    assert_int_equal(g_pending_seen[2], 0);
    assert_int_equal(aev_pending_count(loop), 0);
}

static void test_depth_outside_and_inside(void **state)
{
    aev_loop *loop = *state;
    aev_check c;
    log_reset();
    assert_int_equal(aev_depth(loop), 0);
    init_fed(&c, loop, log_cb, 1);
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 1);
    assert_int_equal(g_log[0].depth, 1);
    assert_int_equal(aev_depth(loop), 0);
}

static void test_now_is_cached(void **state)
{
    aev_loop *loop = *state;
    aev_time_t before = aev_time();
    aev_now_update(loop);
    aev_time_t n1 = aev_now(loop);
    assert_true(n1 >= before);
    assert_true(n1 <= aev_time());
    aevt_sleep_ms(20);
    /* Nothing refreshed it. */
    assert_int_equal(aev_now(loop), n1);
    aev_time_t t_mid = aev_time();
    assert_true(t_mid - n1 >= AEV_MSEC(20));
    aev_now_update(loop);
    aev_time_t n2 = aev_now(loop);
    assert_true(n2 >= t_mid);
    assert_true(n2 <= aev_time());

    /* An iteration refreshes it too. */
    aevt_sleep_ms(20);
    aev_time_t t_run = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_true(aev_now(loop) >= t_run);
    assert_true(aev_now(loop) <= aev_time());
}

static void test_time_monotonic(void **state)
{
    (void)state;
    aev_time_t prev = aev_time();
    assert_true(prev > 0);
    for (int i = 0; i < 10000; i++) {
        aev_time_t t = aev_time();
        assert_true(t >= prev);
        prev = t;
    }
    aev_time_t a = aev_time();
    aevt_sleep_ms(10);
    assert_true(aev_time() - a >= AEV_MSEC(10));
}

static aev_time_t g_now_in_cb;

static void now_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    g_now_in_cb = aev_now(aev_watcher_loop(w));
}

/* The cached time is refreshed after polling: a callback run after a 30 ms sleep sees it. */
static void test_now_updated_after_poll(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    log_reset();
    init_timer(&t, loop, now_cb, 1, AEV_MSEC(30), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 1);
    assert_true(g_now_in_cb >= t0 + AEV_MSEC(30));
    assert_true(g_now_in_cb <= aev_time());
}

/* ---- destroy ---------------------------------------------------------------------------- */

static int g_destroy_rc[2];

static void destroy_inside_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    g_destroy_rc[g_nlog > 1] = aev_loop_destroy(aev_watcher_loop(w));
}

static void test_destroy_inside_run_is_busy(void **state)
{
    aev_loop *loop = *state;
    aev_check c;
    aev_timer t;
    log_reset();
    g_destroy_rc[0] = g_destroy_rc[1] = 12345;
    init_fed(&c, loop, destroy_inside_cb, 1);
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_destroy_rc[0], -EBUSY);

    /* Nothing was freed: the loop still works, also from a timer after polling. */
    init_timer(&t, loop, destroy_inside_cb, 2, AEV_MSEC(1), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_destroy_rc[1], -EBUSY);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

static void test_destroy_with_active_watchers(void **state)
{
    aev_loop *l = aevt_loop_new();
    aev_timer t;
    aev_idle i;
    aev_check c;
    (void)state;
    init_timer(&t, l, log_cb, 1, AEV_SEC(1), 0);
    assert_int_equal(aev_idle_init(&i, l, log_cb), 0);
    init_fed(&c, l, log_cb, 3);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_idle_start(&i), 0);
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    t.base.data = &t;
    assert_int_equal(aev_loop_destroy(l), 0);
    /* Watchers are the program's memory and are left untouched. */
    assert_ptr_equal(t.base.data, &t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_strerror_never_null),
        cmocka_unit_test(test_supported_backends),
        cmocka_unit_test(test_loop_new_invalid_flags),
        cmocka_unit_test(test_loop_new_valid_flags),
        cmocka_unit_test_setup_teardown(test_backend_matches_env, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_env_selects_backend, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_loop_data, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_watcher_loop, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_run_break_destroy_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_generic_start_stop, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_run_without_watchers, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_nowait_does_not_block, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_once_waits_for_timer, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_once_returns_1_while_active, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_default_runs_until_no_watchers, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_one, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_returns_0_when_none_active, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_finishes_iteration_fed, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_finishes_iteration_timers, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_outside_run_is_cancelled, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_cancel, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_nested_run_break_one, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_nested_run_break_all, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_unref_lets_run_return, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_unref_watcher_still_fires, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_iteration_counter, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_pending_count, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_depth_outside_and_inside, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_now_is_cached, aevt_setup, aevt_teardown),
        cmocka_unit_test(test_time_monotonic),
        cmocka_unit_test_setup_teardown(test_now_updated_after_poll, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_inside_run_is_busy, aevt_setup, aevt_teardown),
        cmocka_unit_test(test_destroy_with_active_watchers),
    };
    aevt_watchdog(20);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
