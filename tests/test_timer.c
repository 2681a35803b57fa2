/*
 * Tests of timers: argument errors, never firing early (also with a stale cached time), order by
 * deadline and by start order, stop, repeat, again, remaining, set/set_repeat, catching up after
 * the loop fell behind, and many timers at once.
 *
 * Timing checks are strict on "not early" and loose on lateness: the machine may be busy.
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

/* A callback later than this after its deadline counts as broken. Generous: on a loaded
 * machine a process can be descheduled for a long time. */
#define LATE AEV_SEC(5)

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAX_FIRES 20000

/* One timer callback, as seen from inside it. */
typedef struct fire {
    int id;
    unsigned events;
    aev_time_t clock; /* aev_time() at entry */
    aev_time_t now;   /* aev_now() at entry */
    uint64_t iteration;
    bool active;
} fire;

static fire g_fires[MAX_FIRES];
static int g_nfires;

static void fires_reset(void)
{
    g_nfires = 0;
}

static int id_of(aev_watcher *w)
{
    return (int)(intptr_t)w->data;
}

static void record(aev_watcher *w, unsigned events)
{
    aev_loop *loop = aev_watcher_loop(w);
    if (g_nfires >= MAX_FIRES) {
        g_nfires++;
        return;
    }
    fire *f = &g_fires[g_nfires++];
    f->clock = aev_time();
    f->id = id_of(w);
    f->events = events;
    f->now = aev_now(loop);
    f->iteration = aev_iteration(loop);
    f->active = aev_is_active(w);
}

static void record_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
}

static void init_timer(aev_timer *t, aev_loop *loop, aev_cb cb, int id, aev_time_t after,
                       aev_time_t repeat)
{
    assert_int_equal(aev_timer_init(t, loop, cb, after, repeat), 0);
    t->base.data = (void *)(intptr_t)id;
}

/* Starts t and returns the clock just before the start: a lower bound of its start time. */
static aev_time_t start_timed(aev_timer *t)
{
    aev_time_t before = aev_time();
    assert_int_equal(aev_timer_start(t), 0);
    return before;
}

/* aev_timer_remaining() is exact up to the clock reads around it: with the deadline known to
 * lie in [lo, hi] and the call made between c1 and c2, it is within [lo - c2, hi - c1] (and
 * never negative). */
static void check_remaining(const aev_timer *t, aev_time_t lo, aev_time_t hi)
{
    aev_time_t c1 = aev_time();
    aev_time_t r = aev_timer_remaining(t);
    aev_time_t c2 = aev_time();
    aev_time_t min = lo - c2, max = hi - c1;
    assert_true(r >= 0);
    assert_true(r >= (min > 0 ? min : 0));
    assert_true(r <= (max > 0 ? max : 0));
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_timer_errors(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    assert_int_equal(aev_timer_init(NULL, loop, record_cb, 0, 0), -EINVAL);
    assert_int_equal(aev_timer_init(&t, NULL, record_cb, 0, 0), -EINVAL);
    assert_int_equal(aev_timer_init(&t, loop, NULL, 0, 0), -EINVAL);
    assert_int_equal(aev_timer_init(&t, loop, record_cb, -1, 0), -EINVAL);
    assert_int_equal(aev_timer_init(&t, loop, record_cb, 0, -1), -EINVAL);
    assert_int_equal(aev_timer_init(&t, loop, record_cb, INT64_MIN, 0), -EINVAL);

    assert_int_equal(aev_timer_start(NULL), -EINVAL);
    assert_int_equal(aev_timer_stop(NULL), -EINVAL);
    assert_int_equal(aev_timer_again(NULL), -EINVAL);
    assert_int_equal(aev_timer_set(NULL, 0, 0), -EINVAL);
    assert_int_equal(aev_timer_set_repeat(NULL, 0), -EINVAL);

    init_timer(&t, loop, record_cb, 1, AEV_MSEC(500), AEV_MSEC(7));
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(7));
    assert_int_equal(aev_timer_set(&t, -1, 0), -EINVAL);
    assert_int_equal(aev_timer_set(&t, 0, -5), -EINVAL);
    assert_int_equal(aev_timer_set_repeat(&t, -1), -EINVAL);
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(7));

    /* aev_timer_set is refused while active, and changes nothing then. */
    aev_time_t lo = aev_time() + AEV_MSEC(500);
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t hi = aev_time() + AEV_MSEC(500);
    assert_int_equal(aev_timer_set(&t, AEV_MSEC(1), AEV_MSEC(1)), -EBUSY);
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(7));
    check_remaining(&t, lo, hi);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_timer_set(&t, AEV_MSEC(1), AEV_MSEC(3)), 0);
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(3));
}

/* ---- never early -------------------------------------------------------------------------- */

static void test_not_early(void **state)
{
    aev_loop *loop = *state;
    aev_timer t[4];
    static const aev_time_t after[4] = {AEV_MSEC(50), AEV_MSEC(20), AEV_MSEC(35), AEV_MSEC(1)};
    static const int want[4] = {3, 1, 2, 0};
    aev_time_t t0[4];
    fires_reset();
    for (int i = 0; i < 4; i++) {
        init_timer(&t[i], loop, record_cb, i, after[i], 0);
    }
    for (int i = 0; i < 4; i++) {
        t0[i] = start_timed(&t[i]);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 4);
    for (int k = 0; k < 4; k++) {
        const fire *f = &g_fires[k];
        int i = f->id;
        assert_int_equal(i, want[k]);
        assert_int_equal(f->events, AEV_TIMER);
        /* A non-repeating timer is inactive in its callback. */
        assert_false(f->active);
        assert_true(f->clock >= t0[i] + after[i]);
        /* The loop's time said it was due, too. */
        assert_true(f->now >= t0[i] + after[i]);
        assert_true(f->clock - (t0[i] + after[i]) < LATE);
    }
}

/* The deadline is taken from the clock at start, not from a stale cached loop time. */
static void test_stale_now_not_early(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    aev_time_t cached = aev_now(loop);
    aevt_sleep_ms(100);
    assert_int_equal(aev_now(loop), cached);
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(40), 0);
    aev_time_t t0 = start_timed(&t);
    check_remaining(&t, t0 + AEV_MSEC(40), aev_time() + AEV_MSEC(40));
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 1);
    assert_true(g_fires[0].clock >= t0 + AEV_MSEC(40));
    assert_true(g_fires[0].now >= t0 + AEV_MSEC(40));
    assert_true(g_fires[0].clock - t0 < LATE);
}

/* A stale cache inside a callback: a long callback then starts a timer. */
static aev_timer g_late_timer;
static aev_time_t g_late_t0;

static void sleep_then_start_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    aevt_sleep_ms(100);
    g_late_t0 = aev_time();
    aev_timer_start(&g_late_timer);
}

static void test_start_after_long_callback_not_early(void **state)
{
    aev_loop *loop = *state;
    aev_timer first;
    fires_reset();
    init_timer(&first, loop, sleep_then_start_cb, 1, 0, 0);
    init_timer(&g_late_timer, loop, record_cb, 2, AEV_MSEC(30), 0);
    assert_int_equal(aev_timer_start(&first), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 2);
    assert_int_equal(g_fires[1].id, 2);
    assert_true(g_fires[1].clock >= g_late_t0 + AEV_MSEC(30));
    assert_true(g_fires[1].iteration > g_fires[0].iteration);
}

/* A deadline far beyond the int64 range of the clock must not wrap into the past. */
static void test_huge_after_never_fires(void **state)
{
    aev_loop *loop = *state;
    aev_timer t, r;
    fires_reset();
    init_timer(&t, loop, record_cb, 1, INT64_MAX, 0);
    init_timer(&r, loop, record_cb, 2, INT64_MAX - 1, INT64_MAX);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_timer_start(&r), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nfires, 0);
    assert_true(aev_timer_remaining(&t) > AEV_SEC(86400));
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_timer_stop(&r), 0);
}

/* ---- order ------------------------------------------------------------------------------- */

#define NBIG 10000

static aev_timer g_big[NBIG];
static aev_time_t g_lo[NBIG], g_hi[NBIG], g_after[NBIG];
static int g_count[NBIG];

static void count_cb(aev_watcher *w, unsigned events)
{
    int id = id_of(w);
    if (id >= 0 && id < NBIG) {
        g_count[id]++;
    }
    record(w, events);
}

/* Starts n timers with random delays in [0, max_ms] ms and remembers, for each, bounds of its
 * deadline: the library reads the clock somewhere between lo and hi. */
static void start_random(aev_loop *loop, int n, unsigned seed, int max_ms)
{
    srand(seed);
    for (int i = 0; i < n; i++) {
        g_after[i] = AEV_USEC(rand() % (max_ms * 1000 + 1));
        g_count[i] = 0;
        init_timer(&g_big[i], loop, count_cb, i, g_after[i], 0);
    }
    for (int i = 0; i < n; i++) {
        g_lo[i] = aev_time() + g_after[i];
        assert_int_equal(aev_timer_start(&g_big[i]), 0);
        g_hi[i] = aev_time() + g_after[i];
    }
}

/* Every started timer fired once, never early, and in nondecreasing order of deadline: for
 * consecutive firings a then b, b's deadline cannot be certainly earlier than a's. */
static void check_random_fired(int n, const bool *stopped)
{
    int expected = 0;
    for (int i = 0; i < n; i++) {
        bool stop = stopped != NULL && stopped[i];
        assert_int_equal(g_count[i], stop ? 0 : 1);
        expected += stop ? 0 : 1;
    }
    assert_int_equal(g_nfires, expected);
    for (int k = 0; k < g_nfires; k++) {
        const fire *f = &g_fires[k];
        assert_true(f->clock >= g_lo[f->id]);
        if (f->clock - g_hi[f->id] >= LATE) {
            print_message("timer %d (after %lld ns) fired %lld ns late, call %d of %d, "
                          "iteration %llu\n",
                          f->id, (long long)g_after[f->id], (long long)(f->clock - g_hi[f->id]), k,
                          g_nfires, (unsigned long long)f->iteration);
        }
        assert_true(f->clock - g_hi[f->id] < LATE);
        assert_int_equal(f->events, AEV_TIMER);
        if (k > 0) {
            int a = g_fires[k - 1].id;
            assert_true(g_lo[a] <= g_hi[f->id]);
        }
    }
}

static void test_random_deadlines_order(void **state)
{
    aev_loop *loop = *state;
    enum { N = 300 };
    fires_reset();
    start_random(loop, N, 4242, 60);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    check_random_fired(N, NULL);
    /* With few timers, check every pair, not only neighbours. */
    for (int k = 0; k < g_nfires; k++) {
        for (int j = k + 1; j < g_nfires; j++) {
            assert_true(g_lo[g_fires[k].id] <= g_hi[g_fires[j].id]);
        }
    }
}

static void test_10000_random_deadlines(void **state)
{
    aev_loop *loop = *state;
    fires_reset();
    start_random(loop, NBIG, 777, 100);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    check_random_fired(NBIG, NULL);
}

static void test_10000_started_all_stopped(void **state)
{
    aev_loop *loop = *state;
    static int order[NBIG];
    fires_reset();
    start_random(loop, NBIG, 99, 50);
    for (int i = 0; i < NBIG; i++) {
        order[i] = i;
    }
    for (int i = NBIG - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (int i = 0; i < NBIG; i++) {
        assert_int_equal(aev_timer_stop(&g_big[order[i]]), 0);
        assert_false(aev_is_active(&g_big[order[i]].base));
    }
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(aev_time() - t0 < QUICK);
    aevt_sleep_ms(60);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 0);
}

/* Stop a random half (in random order, so from all over the heap); the others fire in order. */
static void test_10000_half_stopped(void **state)
{
    aev_loop *loop = *state;
    static bool stopped[NBIG];
    fires_reset();
    start_random(loop, NBIG, 31337, 40);
    for (int i = 0; i < NBIG; i++) {
        stopped[i] = false;
    }
    for (int k = 0; k < NBIG / 2; k++) {
        int i = rand() % NBIG;
        stopped[i] = true;
        assert_int_equal(aev_timer_stop(&g_big[i]), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    check_random_fired(NBIG, stopped);
}

/* Timers with the same delay fire in the order they were started. */
static void test_equal_delay_start_order(void **state)
{
    aev_loop *loop = *state;
    enum { N = 1000 };
    fires_reset();
    for (int i = 0; i < N; i++) {
        g_count[i] = 0;
        init_timer(&g_big[i], loop, count_cb, i, AEV_MSEC(10), 0);
    }
    /* Start them in a scrambled id order; the firing order must follow the start order. */
    static int started[N];
    for (int k = 0; k < N; k++) {
        started[k] = (k * 7919) % N;
        assert_int_equal(aev_timer_start(&g_big[started[k]]), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, N);
    for (int k = 0; k < N; k++) {
        assert_int_equal(g_fires[k].id, started[k]);
    }
}

/* Expired timers of one iteration are invoked in deadline order, not start order. */
static void test_same_iteration_deadline_order(void **state)
{
    aev_loop *loop = *state;
    aev_timer t[3];
    fires_reset();
    init_timer(&t[0], loop, record_cb, 0, AEV_MSEC(3), 0);
    init_timer(&t[1], loop, record_cb, 1, AEV_MSEC(2), 0);
    init_timer(&t[2], loop, record_cb, 2, AEV_MSEC(1), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aev_timer_start(&t[i]), 0);
    }
    /* Let all three expire before the loop looks. */
    aevt_sleep_ms(20);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(g_fires[k].id, 2 - k);
        assert_int_equal(g_fires[k].iteration, 1);
    }
}

/* ---- stop ---------------------------------------------------------------------------------- */

static aev_timer g_stop_target;

static void stop_target_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    aev_timer_stop(&g_stop_target);
}

static void test_stop_prevents_firing(void **state)
{
    aev_loop *loop = *state;
    aev_timer a, b;
    fires_reset();

    /* Stopped before the run. */
    init_timer(&a, loop, record_cb, 1, AEV_MSEC(5), 0);
    assert_int_equal(aev_timer_start(&a), 0);
    assert_int_equal(aev_timer_stop(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    aevt_sleep_ms(10);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 0);

    /* Stopped by an earlier timer's callback, before it expired. */
    init_timer(&a, loop, stop_target_cb, 1, AEV_MSEC(5), 0);
    init_timer(&g_stop_target, loop, record_cb, 2, AEV_MSEC(40), 0);
    assert_int_equal(aev_timer_start(&a), 0);
    assert_int_equal(aev_timer_start(&g_stop_target), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 1);
    assert_int_equal(g_fires[0].id, 1);

    /* Stopped after it expired, while its event was pending in the same iteration. */
    fires_reset();
    init_timer(&a, loop, stop_target_cb, 1, 0, 0);
    init_timer(&g_stop_target, loop, record_cb, 2, 0, 0);
    init_timer(&b, loop, record_cb, 3, 0, 0);
    assert_int_equal(aev_timer_start(&a), 0);
    assert_int_equal(aev_timer_start(&g_stop_target), 0);
    assert_int_equal(aev_timer_start(&b), 0);
    aevt_sleep_ms(2);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 2);
    assert_int_equal(g_fires[0].id, 1);
    assert_int_equal(g_fires[1].id, 3);
    assert_false(aev_is_pending(&g_stop_target.base));
}

/* ---- repeat -------------------------------------------------------------------------------- */

static int g_stop_after;

static void repeat_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    if (g_nfires >= g_stop_after) {
        aev_stop(w);
    }
}

static void test_repeat_keeps_firing(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    const aev_time_t after = AEV_MSEC(8), rep = AEV_MSEC(5);
    fires_reset();
    g_stop_after = 6;
    init_timer(&t, loop, repeat_cb, 1, after, rep);
    aev_time_t t0 = start_timed(&t);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 6);
    for (int k = 0; k < 6; k++) {
        const fire *f = &g_fires[k];
        assert_int_equal(f->events, AEV_TIMER);
        /* A repeating timer stays active in its callback. */
        assert_true(f->active);
        assert_true(f->clock >= t0 + after + k * rep);
        if (k > 0) {
            assert_true(f->iteration > g_fires[k - 1].iteration);
        }
    }
    assert_false(aev_is_active(&t.base));
    assert_true(g_fires[5].clock - (t0 + after + 5 * rep) < LATE);
}

/* The loop fell behind by several periods: one callback, then the schedule resumes on its grid
 * (first deadline + k * repeat) with the next deadline after the loop's time, instead of a burst
 * of catch-up calls. */
static aev_time_t g_sleep_end;
static aev_time_t g_rem_at_catchup, g_c1_at_catchup, g_c2_at_catchup;

static void falls_behind_cb(aev_watcher *w, unsigned events)
{
    aev_timer *t = (aev_timer *)w;
    record(w, events);
    if (g_nfires == 1) {
        /* 6.5 periods: the catch-up lands about half a period before the next deadline. */
        aevt_sleep_ms(65);
        g_sleep_end = aev_time();
    } else if (g_nfires == 2) {
        g_c1_at_catchup = aev_time();
        g_rem_at_catchup = aev_timer_remaining(t);
        g_c2_at_catchup = aev_time();
    } else if (g_nfires >= 5) {
        aev_stop(w);
    }
}

/* The first point of the grid first + k * rep (k >= 0) that is after now. */
static aev_time_t grid_after(aev_time_t first, aev_time_t rep, aev_time_t now)
{
    if (first > now) {
        return first;
    }
    return first + ((now - first) / rep + 1) * rep;
}

static void test_missed_repeats_no_burst(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    const aev_time_t rep = AEV_MSEC(10);
    fires_reset();
    init_timer(&t, loop, falls_behind_cb, 1, rep, rep);
    aev_time_t first_lo = aev_time() + rep;
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t first_hi = aev_time() + rep;
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 5);
    assert_true(g_fires[0].clock >= first_lo);
    assert_true(g_fires[1].clock >= g_sleep_end);

    /* At the catch-up call the next deadline is the first grid point after the loop's time:
     * check what remaining() says against it (bounded by the clock reads around the call). */
    aev_time_t now = g_fires[1].now;
    assert_true(now >= g_sleep_end);
    aev_time_t n1 = grid_after(first_lo, rep, now), n2 = grid_after(first_hi, rep, now);
    aev_time_t next_lo = n1 < n2 ? n1 : n2, next_hi = n1 < n2 ? n2 : n1;
    aev_time_t rem_lo = next_lo - g_c2_at_catchup, rem_hi = next_hi - g_c1_at_catchup;
    if (g_rem_at_catchup < (rem_lo > 0 ? rem_lo : 0) || g_rem_at_catchup > rem_hi) {
        print_message("remaining %lld ns at catch-up, expected %lld..%lld ns\n",
                      (long long)g_rem_at_catchup, (long long)rem_lo, (long long)rem_hi);
    }
    assert_true(g_rem_at_catchup >= (rem_lo > 0 ? rem_lo : 0));
    assert_true(g_rem_at_catchup <= (rem_hi > 0 ? rem_hi : 0));
    /* The next call is not early for that deadline. */
    assert_true(g_fires[2].clock >= next_lo);
    for (int k = 3; k < 5; k++) {
        assert_true(g_fires[k].clock >= next_lo + (k - 2) * rep);
        assert_true(g_fires[k].iteration > g_fires[k - 1].iteration);
    }
    /* No burst: at most two calls within one period after the loop caught up. */
    int in_window = 0;
    for (int k = 1; k < g_nfires; k++) {
        if (g_fires[k].clock < g_sleep_end + rep) {
            in_window++;
        }
    }
    assert_true(in_window <= 2);
}

/* Same, but the loop is held up by another watcher's callback (a prepare watcher). */
static int g_prepare_calls;
static aev_time_t g_prepare_sleep_end;
static aev_prepare g_sleepy;

static void sleepy_prepare_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    g_prepare_calls++;
    if (g_prepare_calls == 3) {
        aevt_sleep_ms(60);
        g_prepare_sleep_end = aev_time();
    }
}

static void stop_both_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    if (g_nfires >= 6) {
        aev_stop(w);
        aev_prepare_stop(&g_sleepy);
    }
}

static void test_missed_repeats_other_callback(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    const aev_time_t rep = AEV_MSEC(10);
    fires_reset();
    g_prepare_calls = 0;
    g_prepare_sleep_end = 0;
    init_timer(&t, loop, stop_both_cb, 1, rep, rep);
    assert_int_equal(aev_prepare_init(&g_sleepy, loop, sleepy_prepare_cb), 0);
    assert_int_equal(aev_prepare_start(&g_sleepy), 0);
    aev_time_t t0 = start_timed(&t);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 6);
    assert_true(g_prepare_sleep_end > 0);
    assert_false(aev_is_active(&g_sleepy.base));
    int in_window = 0;
    for (int k = 0; k < g_nfires; k++) {
        /* Never early for its slot on the grid (at most one call per slot). */
        assert_true(g_fires[k].clock >= t0 + rep * (k + 1));
        if (g_fires[k].clock >= g_prepare_sleep_end &&
            g_fires[k].clock < g_prepare_sleep_end + rep) {
            in_window++;
        }
    }
    assert_true(in_window <= 2);
}

/* ---- after = 0 ------------------------------------------------------------------------------ */

static aev_timer g_zero;

static void start_zero_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    aev_timer_start(&g_zero);
}

/* A timer with after = 0 started before aev_run(ONCE) fires in that single iteration without
 * blocking; one started from a timer callback fires in the next iteration, not the current one
 * (the expired timers of an iteration are collected before its callbacks run). */
static void test_after_zero(void **state)
{
    aev_loop *loop = *state;
    aev_timer t, a;
    aev_timer keep;
    fires_reset();
    init_timer(&t, loop, record_cb, 1, 0, 0);
    init_timer(&keep, loop, record_cb, 9, FAR, 0);
    assert_int_equal(aev_timer_start(&keep), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_true(aev_time() - t0 < QUICK);
    assert_int_equal(g_nfires, 1);
    assert_int_equal(g_fires[0].iteration, 1);

    /* Started from a callback run after this iteration's timers were collected. */
    fires_reset();
    init_timer(&a, loop, start_zero_cb, 2, 0, 0);
    init_timer(&g_zero, loop, record_cb, 3, 0, 0);
    assert_int_equal(aev_timer_start(&a), 0);
    aevt_sleep_ms(1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nfires, 1);
    assert_int_equal(g_fires[0].id, 2);
    assert_true(aev_is_active(&g_zero.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nfires, 2);
    assert_int_equal(g_fires[1].id, 3);
    assert_int_equal(g_fires[1].iteration, g_fires[0].iteration + 1);
    assert_int_equal(aev_timer_stop(&keep), 0);
}

static int g_restarts;
static aev_time_t g_restart_at;

static void restart_self_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    if (++g_restarts < 3) {
        g_restart_at = aev_time();
        aev_timer_start((aev_timer *)w);
    }
}

/* A non-repeating timer can be started again from its own callback; each run is not early. */
static void test_restart_from_callback(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    g_restarts = 0;
    init_timer(&t, loop, restart_self_cb, 1, AEV_MSEC(10), 0);
    aev_time_t t0 = start_timed(&t);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 3);
    assert_true(g_fires[0].clock >= t0 + AEV_MSEC(10));
    for (int k = 1; k < 3; k++) {
        assert_false(g_fires[k].active);
        assert_true(g_fires[k].clock >= g_fires[k - 1].clock + AEV_MSEC(10));
    }
}

/* ---- again, remaining, set, set_repeat --------------------------------------------------- */

static void test_again(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();

    /* Inactive, not repeating: nothing. */
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(1), 0);
    assert_int_equal(aev_timer_again(&t), 0);
    assert_false(aev_is_active(&t.base));

    /* Inactive, repeating: starts with the repeat interval (not with after). */
    init_timer(&t, loop, record_cb, 1, AEV_SEC(100), AEV_MSEC(30));
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_again(&t), 0);
    assert_true(aev_is_active(&t.base));
    check_remaining(&t, t0 + AEV_MSEC(30), aev_time() + AEV_MSEC(30));
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    while (g_nfires == 0) {
        assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    }
    assert_true(g_fires[0].clock >= t0 + AEV_MSEC(30));
    assert_true(g_fires[0].clock - t0 < LATE);
    assert_true(aev_is_active(&t.base));

    /* Active, repeating: restarts the interval from now. */
    aevt_sleep_ms(20);
    aev_time_t t1 = aev_time();
    assert_int_equal(aev_timer_again(&t), 0);
    assert_true(aev_is_active(&t.base));
    check_remaining(&t, t1 + AEV_MSEC(30), aev_time() + AEV_MSEC(30));
    int before = g_nfires;
    while (g_nfires == before) {
        assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    }
    assert_true(g_fires[before].clock >= t1 + AEV_MSEC(30));
    assert_int_equal(aev_timer_stop(&t), 0);

    /* Active, not repeating: stops. */
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(5), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_timer_again(&t), 0);
    assert_false(aev_is_active(&t.base));
    before = g_nfires;
    aevt_sleep_ms(10);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, before);
}

/* again() uses the interval set by set_repeat(). */
/* An invoke hook that leaves every event pending. */
static void no_invoke(aev_loop *loop)
{
    (void)loop;
}

/* An expiry already pending when aev_timer_again() is called is stale: it is dropped, so an idle
 * timeout pushed back by activity in the same iteration does not fire (soak test finding). */
static void test_again_drops_pending_expiry(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(1), AEV_MSEC(50));
    assert_int_equal(aev_timer_start(&t), 0);
    aevt_sleep_ms(3);
    /* Expire it without invoking: the expiry stays pending. */
    aev_now_update(loop);
    aev_set_invoke_hook(loop, no_invoke);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    aev_set_invoke_hook(loop, NULL);
    assert_true(aev_is_pending(&t.base));
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_again(&t), 0);
    assert_false(aev_is_pending(&t.base));
    aev_invoke_pending(loop);
    assert_int_equal(g_nfires, 0);
    check_remaining(&t, t0 + AEV_MSEC(50), aev_time() + AEV_MSEC(50));
    assert_int_equal(aev_timer_stop(&t), 0);
}

static void test_again_uses_new_repeat(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(1), 0);
    assert_int_equal(aev_timer_set_repeat(&t, AEV_MSEC(300)), 0);
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(300));
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_again(&t), 0);
    assert_true(aev_is_active(&t.base));
    check_remaining(&t, t0 + AEV_MSEC(300), aev_time() + AEV_MSEC(300));
    assert_int_equal(aev_timer_stop(&t), 0);
}

static void test_remaining(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(200), 0);
    assert_int_equal(aev_timer_remaining(&t), 0);
    aev_time_t lo = aev_time() + AEV_MSEC(200);
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t hi = aev_time() + AEV_MSEC(200);
    check_remaining(&t, lo, hi);
    aevt_sleep_ms(30);
    aev_now_update(loop);
    check_remaining(&t, lo, hi);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_timer_remaining(&t), 0);

    /* Due but not yet run: 0. */
    init_timer(&t, loop, record_cb, 1, AEV_MSEC(5), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    aevt_sleep_ms(20);
    aev_now_update(loop);
    assert_int_equal(aev_timer_remaining(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 1);
    assert_int_equal(aev_timer_remaining(&t), 0);
}

static void test_set_changes_next_start(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    g_stop_after = 2;
    init_timer(&t, loop, repeat_cb, 1, AEV_SEC(100), 0);
    assert_int_equal(aev_timer_set(&t, AEV_MSEC(15), AEV_MSEC(5)), 0);
    assert_int_equal(aev_timer_repeat(&t), AEV_MSEC(5));
    aev_time_t t0 = start_timed(&t);
    assert_true(aev_timer_remaining(&t) <= AEV_MSEC(15));
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 2);
    assert_true(g_fires[0].clock >= t0 + AEV_MSEC(15));
    assert_true(g_fires[1].clock >= t0 + AEV_MSEC(20));
    assert_true(g_fires[1].clock - t0 < LATE);
}

static void set_repeat_zero_cb(aev_watcher *w, unsigned events)
{
    record(w, events);
    if (g_nfires == 1) {
        aev_timer_set_repeat((aev_timer *)w, 0);
    }
}

/* set_repeat() from a callback applies from the next expiry: the already scheduled one still
 * fires, and with repeat 0 the timer then stops by itself. */
static void test_set_repeat_from_next_expiry(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    init_timer(&t, loop, set_repeat_zero_cb, 1, AEV_MSEC(2), AEV_MSEC(5));
    aev_time_t t0 = start_timed(&t);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 2);
    assert_true(g_fires[0].active);
    assert_false(g_fires[1].active);
    assert_int_equal(aev_timer_repeat(&t), 0);
    assert_true(g_fires[1].clock >= t0 + AEV_MSEC(7));
}

/* A one-shot timer made repeating while active keeps firing after its first expiry. */
static void test_set_repeat_on_active_oneshot(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    g_stop_after = 3;
    init_timer(&t, loop, repeat_cb, 1, AEV_MSEC(3), 0);
    aev_time_t t0 = start_timed(&t);
    assert_int_equal(aev_timer_set_repeat(&t, AEV_MSEC(4)), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 3);
    assert_true(g_fires[0].active);
    assert_true(g_fires[2].clock >= t0 + AEV_MSEC(11));
}

static void test_repeating_stops_itself(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    fires_reset();
    g_stop_after = 1;
    init_timer(&t, loop, repeat_cb, 1, 0, AEV_MSEC(1));
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_nfires, 1);
    assert_false(aev_is_active(&t.base));
    aevt_sleep_ms(5);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nfires, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timer_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_not_early, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stale_now_not_early, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_start_after_long_callback_not_early, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_huge_after_never_fires, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_random_deadlines_order, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_10000_random_deadlines, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_10000_started_all_stopped, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_10000_half_stopped, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_equal_delay_start_order, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_same_iteration_deadline_order, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stop_prevents_firing, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_repeat_keeps_firing, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_missed_repeats_no_burst, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_missed_repeats_other_callback, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_after_zero, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_restart_from_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_again, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_again_drops_pending_expiry, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_again_uses_new_repeat, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_remaining, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_set_changes_next_start, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_set_repeat_from_next_expiry, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_set_repeat_on_active_oneshot, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_repeating_stops_itself, aevt_setup, aevt_teardown),
    };
    aevt_watchdog(20);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
