/*
 * Tests of idle, prepare and check watchers: argument errors, when each runs within an
 * iteration, the idle priority rule (libev's), and that an active idle watcher keeps the loop
 * from blocking.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* A timer this far away must not delay a run that should not wait for it; a run "returns
 * quickly" if it takes less than QUICK (generous for a loaded machine, yet well below FAR). */
#define FAR AEV_SEC(10)
#define QUICK AEV_SEC(5)

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAX_LOG 512

typedef struct entry {
    int id;
    unsigned events;
    uint64_t iteration;
    aev_time_t now;
} entry;

static entry g_log[MAX_LOG];
static int g_nlog;

static void log_reset(void)
{
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
}

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
    g_log[g_nlog].now = aev_now(loop);
    g_nlog++;
}

static void log_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
}

/* Calls of watcher `id` in iteration `it`. */
static int calls_in(int id, uint64_t it)
{
    int n = 0;
    for (int i = 0; i < g_nlog && i < MAX_LOG; i++) {
        n += g_log[i].id == id && g_log[i].iteration == it;
    }
    return n;
}

static int calls_of(int id)
{
    int n = 0;
    for (int i = 0; i < g_nlog && i < MAX_LOG; i++) {
        n += g_log[i].id == id;
    }
    return n;
}

static void set_id(aev_watcher *w, int id)
{
    w->data = (void *)(intptr_t)id;
}

static void start_idle(aev_idle *w, aev_loop *loop, aev_cb cb, int id, int pri)
{
    assert_int_equal(aev_idle_init(w, loop, cb), 0);
    set_id(&w->base, id);
    assert_int_equal(aev_set_priority(&w->base, pri), 0);
    assert_int_equal(aev_idle_start(w), 0);
}

/* An io watcher that is ready on every iteration: the read end of a pipe holding a byte that
 * nobody reads. */
typedef struct ready_io {
    aev_io io;
    int fds[2];
} ready_io;

static void ready_start(ready_io *r, aev_loop *loop, int id, int pri)
{
    assert_int_equal(pipe(r->fds), 0);
    assert_int_equal(write(r->fds[1], "x", 1), 1);
    assert_int_equal(aev_io_init(&r->io, loop, log_cb, r->fds[0], AEV_READ), 0);
    set_id(&r->io.base, id);
    assert_int_equal(aev_set_priority(&r->io.base, pri), 0);
    assert_int_equal(aev_io_start(&r->io), 0);
}

static void ready_stop(ready_io *r)
{
    assert_int_equal(aev_io_stop(&r->io), 0);
    close(r->fds[0]);
    close(r->fds[1]);
}

static void run_nowait(aev_loop *loop, int times, int want_rc)
{
    for (int i = 0; i < times; i++) {
        assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), want_rc);
    }
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_hook_errors(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    aev_prepare p;
    aev_check c;
    assert_int_equal(aev_idle_init(NULL, loop, log_cb), -EINVAL);
    assert_int_equal(aev_idle_init(&i, NULL, log_cb), -EINVAL);
    assert_int_equal(aev_idle_init(&i, loop, NULL), -EINVAL);
    assert_int_equal(aev_prepare_init(NULL, loop, log_cb), -EINVAL);
    assert_int_equal(aev_prepare_init(&p, NULL, log_cb), -EINVAL);
    assert_int_equal(aev_prepare_init(&p, loop, NULL), -EINVAL);
    assert_int_equal(aev_check_init(NULL, loop, log_cb), -EINVAL);
    assert_int_equal(aev_check_init(&c, NULL, log_cb), -EINVAL);
    assert_int_equal(aev_check_init(&c, loop, NULL), -EINVAL);
    assert_int_equal(aev_idle_start(NULL), -EINVAL);
    assert_int_equal(aev_idle_stop(NULL), -EINVAL);
    assert_int_equal(aev_prepare_start(NULL), -EINVAL);
    assert_int_equal(aev_prepare_stop(NULL), -EINVAL);
    assert_int_equal(aev_check_start(NULL), -EINVAL);
    assert_int_equal(aev_check_stop(NULL), -EINVAL);

    /* Start twice and stop twice are no-ops: one call per iteration, none after the stop. */
    log_reset();
    assert_int_equal(aev_idle_init(&i, loop, log_cb), 0);
    assert_int_equal(aev_prepare_init(&p, loop, log_cb), 0);
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&i.base, 1);
    set_id(&p.base, 2);
    set_id(&c.base, 3);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(aev_idle_start(&i), 0);
        assert_int_equal(aev_prepare_start(&p), 0);
        assert_int_equal(aev_check_start(&c), 0);
    }
    assert_true(aev_is_active(&i.base) && aev_is_active(&p.base) && aev_is_active(&c.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(calls_of(1), 1);
    assert_int_equal(calls_of(2), 1);
    assert_int_equal(calls_of(3), 1);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(aev_idle_stop(&i), 0);
        assert_int_equal(aev_prepare_stop(&p), 0);
        assert_int_equal(aev_check_stop(&c), 0);
    }
    assert_false(aev_is_active(&i.base) || aev_is_active(&p.base) || aev_is_active(&c.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 3);
}

/* ---- idle ---------------------------------------------------------------------------------- */

static void test_idle_runs_each_iteration(void **state)
{
    aev_loop *loop = *state;
    aev_idle a, b;
    log_reset();
    start_idle(&a, loop, log_cb, 1, 0);
    start_idle(&b, loop, log_cb, 2, 0);
    run_nowait(loop, 3, 1);
    assert_int_equal(g_nlog, 6);
    for (uint64_t it = 1; it <= 3; it++) {
        assert_int_equal(calls_in(1, it), 1);
        assert_int_equal(calls_in(2, it), 1);
    }
    for (int k = 0; k < g_nlog; k++) {
        assert_int_equal(g_log[k].events, AEV_IDLE);
    }
    assert_int_equal(aev_idle_stop(&a), 0);
    assert_int_equal(aev_idle_stop(&b), 0);
}

/* While an idle watcher is active, the poll does not block even though a timer is 5 s away. */
static void test_idle_makes_poll_nonblocking(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    aev_timer far;
    log_reset();
    start_idle(&i, loop, log_cb, 1, 0);
    assert_int_equal(aev_timer_init(&far, loop, log_cb, FAR, 0), 0);
    set_id(&far.base, 2);
    assert_int_equal(aev_timer_start(&far), 0);
    aev_time_t t0 = aev_time();
    for (int k = 0; k < 5; k++) {
        assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    }
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 5);
    assert_int_equal(calls_of(1), 5);
    assert_int_equal(aev_idle_stop(&i), 0);
    assert_int_equal(aev_timer_stop(&far), 0);
}

static aev_timer g_far;
static int g_idle_limit;

static void idle_until_limit_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    if (g_nlog >= g_idle_limit) {
        aev_stop(w);
        aev_timer_stop(&g_far);
    }
}

/* In a default run, an idle watcher is called once per iteration, without waiting. */
static void test_idle_default_run(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    log_reset();
    g_idle_limit = 100;
    start_idle(&i, loop, idle_until_limit_cb, 1, 0);
    assert_int_equal(aev_timer_init(&g_far, loop, log_cb, FAR, 0), 0);
    set_id(&g_far.base, 2);
    assert_int_equal(aev_timer_start(&g_far), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 100);
    assert_int_equal(aev_iteration(loop), 100);
    for (int k = 0; k < 100; k++) {
        assert_int_equal(g_log[k].iteration, (uint64_t)k + 1);
    }
}

/* Pending events of a higher priority starve the idle watcher. */
static void test_idle_starved_by_higher(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    ready_io r;
    log_reset();
    start_idle(&i, loop, log_cb, 1, 0);
    ready_start(&r, loop, 2, 1);
    run_nowait(loop, 5, 1);
    assert_int_equal(calls_of(2), 5);
    assert_int_equal(calls_of(1), 0);
    ready_stop(&r);
    /* Once nothing is pending, it runs again. */
    run_nowait(loop, 1, 1);
    assert_int_equal(calls_of(1), 1);
    assert_int_equal(aev_idle_stop(&i), 0);
}

static void test_idle_starved_by_equal(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    ready_io r;
    log_reset();
    start_idle(&i, loop, log_cb, 1, -1);
    ready_start(&r, loop, 2, -1);
    run_nowait(loop, 5, 1);
    assert_int_equal(calls_of(2), 5);
    assert_int_equal(calls_of(1), 0);
    ready_stop(&r);
    assert_int_equal(aev_idle_stop(&i), 0);
}

/* Pending events of a lower priority do not: both run in every iteration, idle first. */
static void test_idle_runs_with_lower_pending(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    ready_io r;
    log_reset();
    start_idle(&i, loop, log_cb, 1, 0);
    ready_start(&r, loop, 2, -1);
    run_nowait(loop, 5, 1);
    assert_int_equal(g_nlog, 10);
    for (int k = 0; k < 10; k += 2) {
        assert_int_equal(g_log[k].id, 1);
        assert_int_equal(g_log[k + 1].id, 2);
        assert_int_equal(g_log[k].iteration, g_log[k + 1].iteration);
    }
    ready_stop(&r);
    assert_int_equal(aev_idle_stop(&i), 0);
}

/* Only the highest priority level with idle watchers runs in an iteration. */
static void test_idle_one_level_per_iteration(void **state)
{
    aev_loop *loop = *state;
    aev_idle hi1, lo, hi2, lowest;
    log_reset();
    start_idle(&lo, loop, log_cb, 2, 0);
    start_idle(&hi1, loop, log_cb, 1, 1);
    start_idle(&lowest, loop, log_cb, 4, -2);
    start_idle(&hi2, loop, log_cb, 3, 1);
    run_nowait(loop, 3, 1);
    assert_int_equal(calls_of(1), 3);
    assert_int_equal(calls_of(3), 3);
    assert_int_equal(calls_of(2), 0);
    assert_int_equal(calls_of(4), 0);

    assert_int_equal(aev_idle_stop(&hi1), 0);
    assert_int_equal(aev_idle_stop(&hi2), 0);
    log_reset();
    run_nowait(loop, 2, 1);
    assert_int_equal(calls_of(2), 2);
    assert_int_equal(calls_of(4), 0);
    assert_int_equal(g_nlog, 2);

    assert_int_equal(aev_idle_stop(&lo), 0);
    log_reset();
    run_nowait(loop, 1, 1);
    assert_int_equal(calls_of(4), 1);
    assert_int_equal(g_nlog, 1);
    assert_int_equal(aev_idle_stop(&lowest), 0);
}

/* The scan stops at the first level with pending events or idle watchers: a pending event at
 * the level of the highest idle watcher suppresses every idle watcher, also lower ones. */
static void test_idle_pending_at_top_blocks_all(void **state)
{
    aev_loop *loop = *state;
    aev_idle hi, lo;
    ready_io r;
    log_reset();
    start_idle(&hi, loop, log_cb, 1, 1);
    start_idle(&lo, loop, log_cb, 2, 0);
    ready_start(&r, loop, 3, 1);
    run_nowait(loop, 3, 1);
    assert_int_equal(calls_of(3), 3);
    assert_int_equal(calls_of(1), 0);
    assert_int_equal(calls_of(2), 0);
    ready_stop(&r);
    assert_int_equal(aev_idle_stop(&hi), 0);
    assert_int_equal(aev_idle_stop(&lo), 0);
}

/* An idle watcher above the pending events runs, and only its level does. */
static void test_idle_above_pending(void **state)
{
    aev_loop *loop = *state;
    aev_idle hi, lo;
    ready_io r;
    log_reset();
    start_idle(&hi, loop, log_cb, 1, 2);
    start_idle(&lo, loop, log_cb, 2, -2);
    ready_start(&r, loop, 3, 0);
    run_nowait(loop, 3, 1);
    assert_int_equal(g_nlog, 6);
    for (int k = 0; k < 6; k += 2) {
        assert_int_equal(g_log[k].id, 1);
        assert_int_equal(g_log[k + 1].id, 3);
    }
    ready_stop(&r);
    assert_int_equal(aev_idle_stop(&hi), 0);
    assert_int_equal(aev_idle_stop(&lo), 0);
}

/* A timer expiring at a higher priority takes that iteration from a lower idle watcher. The
 * idle watcher runs in a tight loop meanwhile, so it keeps only its last iterations. */
#define IDLE_RING 16

static uint64_t g_timer_iteration;
static uint64_t g_idle_ring[IDLE_RING];
static unsigned g_idle_calls;

static void note_timer_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    g_timer_iteration = aev_iteration(aev_watcher_loop(w));
}

static void idle_after_timer_cb(aev_watcher *w, unsigned events)
{
    uint64_t it = aev_iteration(aev_watcher_loop(w));
    (void)events;
    g_idle_ring[g_idle_calls++ % IDLE_RING] = it;
    if (g_timer_iteration != 0 && it >= g_timer_iteration + 3) {
        aev_stop(w);
    }
}

static bool idle_ran_in(uint64_t it)
{
    for (unsigned k = 0; k < IDLE_RING && k < g_idle_calls; k++) {
        if (g_idle_ring[k] == it) {
            return true;
        }
    }
    return false;
}

static void test_idle_starved_by_timer(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    aev_timer t;
    log_reset();
    g_timer_iteration = 0;
    g_idle_calls = 0;
    memset(g_idle_ring, 0, sizeof g_idle_ring);
    start_idle(&i, loop, idle_after_timer_cb, 1, -1);
    assert_int_equal(aev_timer_init(&t, loop, note_timer_cb, AEV_MSEC(5), 0), 0);
    set_id(&t.base, 2);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(g_timer_iteration > 1);
    assert_int_equal(calls_of(2), 1);
    assert_int_equal(g_nlog, 1);
    assert_false(idle_ran_in(g_timer_iteration));
    assert_true(idle_ran_in(g_timer_iteration - 1));
    assert_true(idle_ran_in(g_timer_iteration + 1));
    assert_true(idle_ran_in(g_timer_iteration + 3));
    /* One call per iteration but the timer's. */
    assert_int_equal(g_idle_calls, g_timer_iteration + 2);
}

/* ---- prepare and check --------------------------------------------------------------------- */

/* Each iteration: prepare, then (after the poll) idle, then check; each once. */
static void test_prepare_idle_check_order(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_check c;
    aev_idle i;
    log_reset();
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&c.base, 3);
    assert_int_equal(aev_check_start(&c), 0);
    start_idle(&i, loop, log_cb, 2, 0);
    assert_int_equal(aev_prepare_init(&p, loop, log_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_prepare_start(&p), 0);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(aev_run(loop, k % 2 ? AEV_RUN_ONCE : AEV_RUN_NOWAIT), 1);
    }
    assert_int_equal(g_nlog, 12);
    for (int k = 0; k < 12; k++) {
        static const unsigned ev[3] = {AEV_PREPARE, AEV_IDLE, AEV_CHECK};
        assert_int_equal(g_log[k].id, k % 3 + 1);
        assert_int_equal(g_log[k].events, ev[k % 3]);
        assert_int_equal(g_log[k].iteration, (uint64_t)(k / 3) + 1);
    }
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_check_stop(&c), 0);
    assert_int_equal(aev_idle_stop(&i), 0);
}

/* Within one priority, events are invoked in the order the phases queue them: io from the
 * poll, then expired timers, then check. (Idle before check is covered above.) */
static void test_phase_order(void **state)
{
    aev_loop *loop = *state;
    ready_io r;
    aev_timer t;
    aev_check c;
    static const int want[] = {1, 2, 3};
    static const unsigned events[] = {AEV_READ, AEV_TIMER, AEV_CHECK};
    log_reset();
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&c.base, 3);
    assert_int_equal(aev_check_start(&c), 0);
    assert_int_equal(aev_timer_init(&t, loop, log_cb, 0, 0), 0);
    set_id(&t.base, 2);
    assert_int_equal(aev_timer_start(&t), 0);
    ready_start(&r, loop, 1, 0);
    aevt_sleep_ms(1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nlog, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(g_log[k].id, want[k]);
        assert_int_equal(g_log[k].events, events[k]);
        assert_int_equal(g_log[k].iteration, 1);
    }
    ready_stop(&r);
    assert_int_equal(aev_check_stop(&c), 0);
}

/* Prepare runs before the poll: what it writes to a pipe is seen by that same poll, and the io
 * callback runs before the check callback of the iteration. */
static int g_wfd;
static ssize_t g_wrote, g_read;

static void prepare_writes_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    if (calls_of(1) == 1) {
        g_wrote = write(g_wfd, "y", 1);
    }
}

static void read_once_cb(aev_watcher *w, unsigned events)
{
    char buf[8];
    log_call(w, events);
    g_read = read(aev_io_fd((aev_io *)w), buf, sizeof buf);
}

static void test_prepare_before_poll(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_check c;
    aev_io io;
    aev_timer keep;
    int fds[2];
    static const int want[] = {1, 2, 3};
    log_reset();
    assert_int_equal(pipe(fds), 0);
    g_wfd = fds[1];
    g_wrote = g_read = -1;
    assert_int_equal(aev_prepare_init(&p, loop, prepare_writes_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_io_init(&io, loop, read_once_cb, fds[0], AEV_READ), 0);
    set_id(&io.base, 2);
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&c.base, 3);
    assert_int_equal(aev_timer_init(&keep, loop, log_cb, FAR, 0), 0);
    set_id(&keep.base, 9);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_io_start(&io), 0);
    assert_int_equal(aev_check_start(&c), 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(g_log[k].id, want[k]);
        assert_int_equal(g_log[k].iteration, 1);
    }
    assert_int_equal(g_log[1].events, AEV_READ);
    assert_int_equal(g_wrote, 1);
    assert_int_equal(g_read, 1);
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_io_stop(&io), 0);
    assert_int_equal(aev_check_stop(&c), 0);
    assert_int_equal(aev_timer_stop(&keep), 0);
    close(fds[0]);
    close(fds[1]);
}

/* A prepare callback sees the time its iteration started, not a time cached before the program
 * slept: the loop skips the start-of-iteration clock read only when no callback before the poll
 * could see it. */
static void test_prepare_sees_iteration_start_time(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, log_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    aevt_sleep_ms(20); /* the cached time is now 20 ms old */
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nlog, 2);
    assert_true(g_log[1].now >= t0);
    assert_int_equal(aev_prepare_stop(&p), 0);
}

/* A break asked for by a fork callback ends the iteration after the prepare phase, as any break
 * before the poll does: the prepare watchers of that iteration still run. */
static void fork_breaks_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aev_break(aev_watcher_loop(w), AEV_BREAK_ONE);
}

static void test_break_in_fork_cb_still_runs_prepare(void **state)
{
    aev_loop *loop = *state;
    aev_fork f;
    aev_prepare p;
    aev_timer keep;
    log_reset();
    assert_int_equal(aev_fork_init(&f, loop, fork_breaks_cb), 0);
    set_id(&f.base, 1);
    assert_int_equal(aev_prepare_init(&p, loop, log_cb), 0);
    set_id(&p.base, 2);
    assert_int_equal(aev_timer_init(&keep, loop, log_cb, FAR, 0), 0);
    set_id(&keep.base, 9);
    assert_int_equal(aev_fork_start(&f), 0);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    assert_int_equal(aev_loop_fork(loop), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[0].id, 1);
    assert_int_equal(g_log[1].id, 2);
    assert_int_equal(g_log[1].iteration, 1);
    assert_int_equal(aev_fork_stop(&f), 0);
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

/* A timer started by a prepare callback counts for this iteration's poll timeout: with
 * after = 0, aev_run(ONCE) neither blocks on the far timer nor misses the new one. */
static aev_timer g_now_timer;

static void prepare_starts_timer_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    if (calls_of(1) == 1) {
        aev_timer_start(&g_now_timer);
    }
}

static void test_prepare_starts_timer(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_timer keep;
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, prepare_starts_timer_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_timer_init(&g_now_timer, loop, log_cb, 0, 0), 0);
    set_id(&g_now_timer.base, 2);
    assert_int_equal(aev_timer_init(&keep, loop, log_cb, FAR, 0), 0);
    set_id(&keep.base, 9);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[1].id, 2);
    assert_int_equal(g_log[1].iteration, 1);
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

/* The cached time is refreshed after the poll: a check callback sees a time no earlier than
 * the end of a slow prepare callback of the same iteration. */
static aev_time_t g_prepare_end;

static void slow_prepare_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aevt_sleep_ms(20);
    g_prepare_end = aev_time();
}

static void test_check_sees_fresh_now(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_check c;
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, slow_prepare_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&c.base, 2);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_check_start(&c), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[1].id, 2);
    assert_true(g_log[1].now >= g_prepare_end);
    assert_true(g_log[1].now >= g_log[0].now + AEV_MSEC(20));
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_check_stop(&c), 0);
}

/* Something fed from a prepare callback runs before the poll, in the prepare's pass. */
static aev_check g_fed;

static void prepare_feeds_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aev_feed_event(&g_fed.base, AEV_CUSTOM);
}

static void test_fed_from_prepare_runs_before_check(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_check c;
    static const int want[] = {1, 2, 3, 1, 2, 3};
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, prepare_feeds_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_check_init(&g_fed, loop, log_cb), 0);
    set_id(&g_fed.base, 2);
    assert_int_equal(aev_set_priority(&g_fed.base, -2), 0);
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    set_id(&c.base, 3);
    assert_int_equal(aev_set_priority(&c.base, 2), 0);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_check_start(&c), 0);
    run_nowait(loop, 2, 1);
    assert_int_equal(g_nlog, 6);
    for (int k = 0; k < 6; k++) {
        assert_int_equal(g_log[k].id, want[k]);
        assert_int_equal(g_log[k].iteration, (uint64_t)(k / 3) + 1);
    }
    assert_int_equal(g_log[1].events, AEV_CUSTOM);
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_check_stop(&c), 0);
}

static void stop_self_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aev_stop(w);
}

static void test_hooks_stop_themselves(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    aev_check c;
    aev_idle i;
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, stop_self_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_check_init(&c, loop, stop_self_cb), 0);
    set_id(&c.base, 2);
    start_idle(&i, loop, log_cb, 3, 0);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_check_start(&c), 0);
    run_nowait(loop, 3, 1);
    assert_int_equal(calls_of(1), 1);
    assert_int_equal(calls_of(2), 1);
    assert_int_equal(calls_of(3), 3);
    assert_false(aev_is_active(&p.base));
    assert_false(aev_is_active(&c.base));
    assert_int_equal(aev_idle_stop(&i), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* A prepare callback stopping a check watcher keeps it from running in that iteration. */
static aev_check g_check_victim;

static void prepare_stops_check_cb(aev_watcher *w, unsigned events)
{
    log_call(w, events);
    aev_check_stop(&g_check_victim);
}

static void test_prepare_stops_check(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p;
    log_reset();
    assert_int_equal(aev_prepare_init(&p, loop, prepare_stops_check_cb), 0);
    set_id(&p.base, 1);
    assert_int_equal(aev_check_init(&g_check_victim, loop, log_cb), 0);
    set_id(&g_check_victim.base, 2);
    assert_int_equal(aev_prepare_start(&p), 0);
    assert_int_equal(aev_check_start(&g_check_victim), 0);
    run_nowait(loop, 2, 1);
    assert_int_equal(calls_of(1), 2);
    assert_int_equal(calls_of(2), 0);
    assert_int_equal(aev_prepare_stop(&p), 0);
}

/* Several prepare and check watchers: all run once per iteration, in priority order. */
static void test_many_hooks_priorities(void **state)
{
    aev_loop *loop = *state;
    aev_prepare p[3];
    aev_check c[3];
    static const int pri[3] = {-1, 2, 0};
    static const int want[] = {11, 12, 10, 21, 22, 20};
    log_reset();
    for (int k = 0; k < 3; k++) {
        assert_int_equal(aev_prepare_init(&p[k], loop, log_cb), 0);
        set_id(&p[k].base, 10 + k);
        assert_int_equal(aev_set_priority(&p[k].base, pri[k]), 0);
        assert_int_equal(aev_prepare_start(&p[k]), 0);
        assert_int_equal(aev_check_init(&c[k], loop, log_cb), 0);
        set_id(&c[k].base, 20 + k);
        assert_int_equal(aev_set_priority(&c[k].base, pri[k]), 0);
        assert_int_equal(aev_check_start(&c[k]), 0);
    }
    run_nowait(loop, 2, 1);
    assert_int_equal(g_nlog, 12);
    for (int k = 0; k < 12; k++) {
        assert_int_equal(g_log[k].id, want[k % 6]);
        assert_int_equal(g_log[k].iteration, (uint64_t)(k / 6) + 1);
    }
    for (int k = 0; k < 3; k++) {
        assert_int_equal(aev_prepare_stop(&p[k]), 0);
        assert_int_equal(aev_check_stop(&c[k]), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hook_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_runs_each_iteration, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_makes_poll_nonblocking, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_default_run, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_starved_by_higher, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_starved_by_equal, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_runs_with_lower_pending, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_one_level_per_iteration, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_pending_at_top_blocks_all, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_above_pending, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_idle_starved_by_timer, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_prepare_idle_check_order, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_phase_order, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_prepare_before_poll, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_prepare_sees_iteration_start_time, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_break_in_fork_cb_still_runs_prepare, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_prepare_starts_timer, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_check_sees_fresh_now, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fed_from_prepare_runs_before_check, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_hooks_stop_themselves, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_prepare_stops_check, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_many_hooks_priorities, aevt_setup, aevt_teardown),
    };
    aevt_watchdog(20);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
