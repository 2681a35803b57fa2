/*
 * Tests of periodic watchers: argument errors, one-shots at an absolute wall-clock time that never
 * fire early, interval phase and coalescing, reschedule callbacks (also ones returning a time not
 * after now), again, stop, order, and wall-clock jumps forward and backward, also while the loop
 * sleeps.
 *
 * The wall clock is faked without touching the machine's clock: this program defines
 * clock_gettime(), which takes the place of the C library's for the library too (it calls it
 * through the PLT), reads the real clock with the system call and adds g_shift to CLOCK_REALTIME
 * only. Timing checks are strict on "not early" and loose on lateness.
 */
#define _GNU_SOURCE /* syscall() */

#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#define NS_PER_SEC 1000000000LL
#define HOUR AEV_SEC(3600)

/* A callback later than this after its time counts as broken: the machine may be busy. */
#define LATE AEV_SEC(3)
/* Longest any test waits for something that should happen. */
#define GUARD AEV_SEC(5)

/* ---- the fake wall clock ---------------------------------------------------------------- */

/* ns added to CLOCK_REALTIME; atomic because one test changes it from another thread. */
static atomic_llong g_shift;
/* While g_frozen is set both clocks stand still but for clock_advance() (and g_shift on the wall
 * clock): exact boundaries can be tested, and the library's jump detector, which compares the two
 * clocks, sees exactly the steps the test makes. */
static atomic_bool g_frozen;
static atomic_llong g_frozen_wall, g_frozen_mono;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    /* The system call, not the vDSO: it needs no symbol lookup, so it is safe however early
     * (and from whatever the sanitizers' runtimes) this is called. */
    if (syscall(SYS_clock_gettime, id, ts) != 0)
        return -1;
    long long shift = atomic_load(&g_shift);
    long long t;
    if (atomic_load(&g_frozen) && id == CLOCK_MONOTONIC)
        t = atomic_load(&g_frozen_mono);
    else if (atomic_load(&g_frozen) && id == CLOCK_REALTIME)
        t = atomic_load(&g_frozen_wall) + shift;
    else if (id == CLOCK_REALTIME && shift != 0)
        t = (long long)ts->tv_sec * NS_PER_SEC + ts->tv_nsec + shift;
    else
        return 0;
    ts->tv_sec = (time_t)(t / NS_PER_SEC);
    ts->tv_nsec = (long)(t % NS_PER_SEC);
    return 0;
}

static aev_time_t real_wall(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
    return (aev_time_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* Makes the wall clock read `t` now. */
static void wall_set(aev_time_t t)
{
    atomic_store(&g_shift, t - real_wall());
}

/* Stops both clocks, the wall clock at `wall`. */
static void clock_freeze(aev_time_t wall)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    atomic_store(&g_frozen_mono, (long long)ts.tv_sec * NS_PER_SEC + ts.tv_nsec);
    atomic_store(&g_frozen_wall, wall);
    atomic_store(&g_shift, 0);
    atomic_store(&g_frozen, true);
}

/* Lets frozen clocks move by d: the wall clock by d plus `slew`, the monotonic one by d. */
static void clock_advance(aev_time_t d, aev_time_t slew)
{
    atomic_fetch_add(&g_frozen_mono, d);
    atomic_fetch_add(&g_frozen_wall, d + slew);
}

/* Steps the wall clock by d, as settimeofday() would. */
static void wall_jump(aev_time_t d)
{
    atomic_fetch_add(&g_shift, d);
}

/* The last full hour (since the epoch) at or before t, for t > 0. */
static aev_time_t hour_floor(aev_time_t t)
{
    return t - t % HOUR;
}

/* Fresh loop and a true wall clock for each test. */
static int setup(void **state)
{
    atomic_store(&g_shift, 0);
    atomic_store(&g_frozen, false);
    aevt_watchdog(20);
    return aevt_setup(state);
}

static int teardown(void **state)
{
    atomic_store(&g_shift, 0);
    atomic_store(&g_frozen, false);
    return aevt_teardown(state);
}

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAXF 16

/* A recording periodic watcher; the aev_periodic stays the first member for the casts. */
typedef struct pw {
    aev_periodic w;
    int id;
    int fires;
    unsigned events;       /* of the last call */
    bool active;           /* aev_is_active() in the last call */
    aev_time_t wall[MAXF]; /* aev_wall_time() at each call */
    aev_time_t next[MAXF]; /* aev_periodic_at() at each call */
    bool stop_in_cb;       /* stop itself from the callback */
    struct pw *victim;     /* stop this one from the callback */
} pw;

static int g_order[256];
static int g_norder;

static void pw_cb(aev_watcher *w, unsigned events)
{
    pw *p = (pw *)w;
    if (p->fires < MAXF) {
        p->wall[p->fires] = aev_wall_time();
        p->next[p->fires] = aev_periodic_at(&p->w);
    }
    p->fires++;
    p->events = events;
    p->active = aev_is_active(w);
    if (g_norder < (int)(sizeof g_order / sizeof g_order[0]))
        g_order[g_norder++] = p->id;
    if (p->stop_in_cb)
        assert_int_equal(aev_periodic_stop(&p->w), 0);
    if (p->victim)
        assert_int_equal(aev_periodic_stop(&p->victim->w), 0);
}

static void pw_init(pw *p, aev_loop *loop, int id, aev_time_t offset, aev_time_t interval,
                    aev_reschedule_cb rcb)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    assert_int_equal(aev_periodic_init(&p->w, loop, pw_cb, offset, interval, rcb), 0);
}

static bool g_guard_fired;

static void guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    g_guard_fired = true;
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

/* Runs single iterations until *count reaches target or `max` (monotonic) has passed. */
static bool run_until(aev_loop *loop, const int *count, int target, aev_time_t max)
{
    aev_timer guard;
    assert_int_equal(aev_timer_init(&guard, loop, guard_cb, max, 0), 0);
    g_guard_fired = false;
    assert_int_equal(aev_timer_start(&guard), 0);
    while (*count < target && !g_guard_fired)
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    assert_int_equal(aev_timer_stop(&guard), 0);
    return *count >= target;
}

/* A reschedule callback whose answers the tests control. */
static struct {
    aev_time_t delay; /* returns now + delay */
    int calls;
    aev_time_t now[MAXF]; /* the `now` of each call */
    aev_time_t ret[MAXF]; /* what it returned */
    int bad_from;         /* from this call on (1-based; 0 never) it returns now instead */
} g_rs;

static aev_time_t resched(aev_periodic *w, aev_time_t now)
{
    (void)w;
    g_rs.calls++;
    aev_time_t r = (g_rs.bad_from && g_rs.calls >= g_rs.bad_from) ? now : now + g_rs.delay;
    if (g_rs.calls <= MAXF) {
        g_rs.now[g_rs.calls - 1] = now;
        g_rs.ret[g_rs.calls - 1] = r;
    }
    return r;
}

static void rs_reset(aev_time_t delay)
{
    memset(&g_rs, 0, sizeof g_rs);
    g_rs.delay = delay;
}

/* ---- aev_wall_time ---------------------------------------------------------------------- */

static void test_wall_time(void **state)
{
    (void)state;
    time_t before = time(NULL);
    aev_time_t w = aev_wall_time();
    time_t after = time(NULL);
    assert_true(w >= (aev_time_t)before * NS_PER_SEC);
    assert_true(w < ((aev_time_t)after + 1) * NS_PER_SEC);

    /* It reads CLOCK_REALTIME through clock_gettime(): the fake clock moves it (the jump tests
     * below rely on this). */
    wall_jump(HOUR);
    aev_time_t shifted = aev_wall_time();
    assert_true(shifted - w >= HOUR);
    assert_true(shifted - w < HOUR + AEV_SEC(60));
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    aev_loop *loop = *state;
    aev_periodic p;
    aev_timer t;
    assert_int_equal(aev_periodic_init(NULL, loop, pw_cb, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_periodic_init(&p, NULL, pw_cb, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_periodic_init(&p, loop, NULL, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_periodic_init(&p, loop, pw_cb, 0, -1, NULL), -EINVAL);
    assert_int_equal(aev_periodic_init(&p, loop, pw_cb, 0, INT64_MIN, NULL), -EINVAL);

    assert_int_equal(aev_periodic_set(NULL, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_periodic_start(NULL), -EINVAL);
    assert_int_equal(aev_periodic_stop(NULL), -EINVAL);
    assert_int_equal(aev_periodic_again(NULL), -EINVAL);
    assert_int_equal(aev_periodic_at(NULL), 0);

    /* A zeroed (never initialised) watcher, and a watcher of another type. */
    memset(&p, 0, sizeof p);
    assert_int_equal(aev_periodic_start(&p), -EINVAL);
    assert_int_equal(aev_periodic_set(&p, 0, 0, NULL), -EINVAL);
    assert_int_equal(aev_timer_init(&t, loop, pw_cb, AEV_SEC(1), 0), 0);
    assert_int_equal(aev_periodic_start((aev_periodic *)&t), -EINVAL);
    assert_int_equal(aev_periodic_stop((aev_periodic *)&t), -EINVAL);
    assert_int_equal(aev_periodic_again((aev_periodic *)&t), -EINVAL);
    assert_int_equal(aev_periodic_set((aev_periodic *)&t, 0, 0, NULL), -EINVAL);
    assert_false(aev_is_active(&t.base));

    assert_int_equal(aev_periodic_init(&p, loop, pw_cb, aev_wall_time() + HOUR, 0, NULL), 0);
    assert_int_equal(aev_periodic_at(&p), 0); /* inactive */
    assert_int_equal(aev_periodic_set(&p, 0, -5, NULL), -EINVAL);
    assert_int_equal(aev_periodic_start(&p), 0);
    assert_int_equal(aev_periodic_start(&p), 0); /* already active: nothing happens */
    assert_int_equal(aev_periodic_set(&p, 0, AEV_SEC(1), NULL), -EBUSY);
    assert_int_equal(aev_periodic_set(&p, 0, -1, NULL), -EINVAL);
    assert_int_equal(aev_periodic_stop(&p), 0);
    assert_int_equal(aev_periodic_stop(&p), 0); /* already stopped */
    assert_int_equal(aev_periodic_set(&p, 0, AEV_SEC(1), NULL), 0);
}

/* ---- one-shot --------------------------------------------------------------------------- */

static void test_oneshot_not_early(void **state)
{
    aev_loop *loop = *state;
    pw p;
    aev_time_t at = aev_wall_time() + AEV_MSEC(30);
    pw_init(&p, loop, 1, at, 0, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_true(aev_is_active(&p.w.base));
    assert_int_equal(aev_periodic_at(&p.w), at);

    /* The periodic alone keeps aev_run() going; it stops before its callback, so the run ends
     * with nothing active. */
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(p.fires, 1);
    assert_int_equal(p.events, AEV_PERIODIC);
    assert_false(p.active);
    assert_true(p.wall[0] >= at);
    assert_true(p.wall[0] - at < LATE);
    assert_int_equal(aev_periodic_at(&p.w), 0);
}

/* Under the fake clock too: the loop's sleep is computed from the wall clock. */
static void test_oneshot_fake_clock(void **state)
{
    aev_loop *loop = *state;
    pw p;
    wall_set(AEV_SEC(2000000000)); /* 2033 */
    aev_time_t at = AEV_SEC(2000000000) + AEV_MSEC(40);
    pw_init(&p, loop, 1, at, 0, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(p.fires, 1);
    assert_true(p.wall[0] >= at);
    assert_true(p.wall[0] - at < LATE);
}

/* interval 0 with a time already past (even negative) fires at the next iteration. */
static void test_oneshot_past(void **state)
{
    aev_loop *loop = *state;
    pw a, b;
    pw_init(&a, loop, 1, -1, 0, NULL);
    pw_init(&b, loop, 2, aev_wall_time() - AEV_SEC(10), 0, NULL);
    assert_int_equal(aev_periodic_start(&a.w), 0);
    assert_int_equal(aev_periodic_start(&b.w), 0);
    assert_int_equal(aev_periodic_at(&a.w), -1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(a.fires, 1);
    assert_int_equal(b.fires, 1);
}

/* ---- interval --------------------------------------------------------------------------- */

static void test_interval_phase(void **state)
{
    aev_loop *loop = *state;
    const aev_time_t iv = AEV_MSEC(50);
    pw p;
    pw_init(&p, loop, 1, 0, iv, NULL);
    aev_time_t before = aev_wall_time();
    assert_int_equal(aev_periodic_start(&p.w), 0);
    aev_time_t at = aev_periodic_at(&p.w);
    assert_int_equal(at % iv, 0);
    assert_true(at > before);
    assert_true(at - before <= iv + LATE);

    assert_true(run_until(loop, &p.fires, 3, GUARD));
    for (int i = 0; i < 3; i++) {
        assert_true(p.active);
        assert_true(p.wall[i] >= at);        /* never early */
        assert_int_equal(p.next[i] % iv, 0); /* still on the phase */
        assert_true(p.next[i] > at);
        at = p.next[i];
    }
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* The offset is a phase, not a start time: a far-future offset still fires at the next slot. */
static void test_interval_offset_is_phase(void **state)
{
    aev_loop *loop = *state;
    const aev_time_t iv = AEV_MSEC(50);
    pw p;
    pw_init(&p, loop, 1, AEV_MSEC(7) + 1000000 * iv, iv, NULL);
    aev_time_t before = aev_wall_time();
    assert_int_equal(aev_periodic_start(&p.w), 0);
    aev_time_t after = aev_wall_time();
    aev_time_t at = aev_periodic_at(&p.w);
    assert_int_equal(at % iv, AEV_MSEC(7));
    assert_true(at > before);
    assert_true(at <= after + iv);
    assert_true(run_until(loop, &p.fires, 1, GUARD));
    assert_true(p.wall[0] >= at);
    assert_int_equal(p.next[0] % iv, AEV_MSEC(7));

    /* A negative offset is a phase too. */
    assert_int_equal(aev_periodic_stop(&p.w), 0);
    assert_int_equal(aev_periodic_set(&p.w, -AEV_MSEC(3), iv, NULL), 0);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_periodic_at(&p.w) % iv, iv - AEV_MSEC(3));
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* On a slot exactly: start schedules the next one (strictly after now), and a periodic whose time
 * the wall clock has exactly reached fires, not 1 ns earlier. */
static void test_exact_times(void **state)
{
    aev_loop *loop = *state;
    aev_time_t h = hour_floor(aev_wall_time()) + 10 * HOUR;
    clock_freeze(h);
    pw p, q;
    pw_init(&p, loop, 1, 0, HOUR, NULL);
    pw_init(&q, loop, 2, h + AEV_MSEC(1), 0, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_periodic_start(&q.w), 0);
    assert_int_equal(aev_periodic_at(&p.w), h + HOUR);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(p.fires + q.fires, 0);

    clock_advance(AEV_MSEC(1) - 1, 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(q.fires, 0);
    clock_advance(1, 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(q.fires, 1);
    assert_int_equal(q.wall[0], h + AEV_MSEC(1));

    clock_advance(HOUR - AEV_MSEC(1) - 1, 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(p.fires, 0);
    clock_advance(1, 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(p.fires, 1);
    assert_int_equal(p.wall[0], h + HOUR);
    assert_int_equal(p.next[0], h + 2 * HOUR);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* What counts as a jump: a step of the wall clock against the monotonic clock of more than 1 ms
 * plus 1000 ppm of the time since the previous check. Seen through a reschedule callback, which
 * is asked again only on a jump. */
static void test_jump_threshold(void **state)
{
    aev_loop *loop = *state;
    clock_freeze(AEV_SEC(2000000000));
    pw p;
    rs_reset(HOUR);
    pw_init(&p, loop, 1, 0, 0, resched);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 1);

    wall_jump(AEV_USEC(900)); /* a small step: not a jump */
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 1);
    wall_jump(-AEV_USEC(900));
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 1);

    /* 10 s at 500 ppm of slew (5 ms) is within 1 ms + 10 ms. */
    clock_advance(AEV_SEC(10), AEV_MSEC(5));
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 1);

    wall_jump(AEV_USEC(1100)); /* just over 1 ms without time passing: a jump */
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 2);
    assert_int_equal(g_rs.now[1], aev_wall_time());

    wall_jump(-AEV_USEC(1100)); /* backward too */
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 3);
    assert_int_equal(aev_periodic_at(&p.w), g_rs.ret[2]);
    assert_int_equal(p.fires, 0);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* A loop that fell behind by several slots runs the callback once, then waits for the next slot
 * after now. */
static void test_interval_coalesces(void **state)
{
    aev_loop *loop = *state;
    const aev_time_t iv = AEV_MSEC(20);
    pw p;
    pw_init(&p, loop, 1, 0, iv, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    aev_time_t at = aev_periodic_at(&p.w);
    aevt_sleep_ms(130);
    aev_time_t before = aev_wall_time();
    assert_true(before > at + 4 * iv);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(p.fires, 1);
    /* The first slot after the time of firing: not a missed one, and not one further. */
    assert_true(p.next[0] > before);
    assert_true(p.next[0] - iv <= p.wall[0]);
    assert_int_equal(p.next[0] % iv, 0);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* ---- reschedule callback ---------------------------------------------------------------- */

static void test_reschedule_cb(void **state)
{
    aev_loop *loop = *state;
    pw p;
    rs_reset(AEV_MSEC(25));
    /* offset and interval are ignored when there is a reschedule callback. */
    pw_init(&p, loop, 1, 12345, AEV_MSEC(1), resched);
    aev_time_t before = aev_wall_time();
    assert_int_equal(aev_periodic_start(&p.w), 0);
    aev_time_t after = aev_wall_time();
    assert_int_equal(g_rs.calls, 1);
    assert_true(g_rs.now[0] >= before && g_rs.now[0] <= after);
    assert_int_equal(aev_periodic_at(&p.w), g_rs.ret[0]);

    assert_true(run_until(loop, &p.fires, 3, GUARD));
    assert_int_equal(g_rs.calls, p.fires + 1);
    for (int i = 0; i < 3; i++) {
        /* Called at each firing with the wall time, which has reached the previous answer. */
        assert_true(g_rs.now[i + 1] >= g_rs.ret[i]);
        assert_true(p.wall[i] >= g_rs.ret[i]);
        assert_int_equal(p.next[i], g_rs.ret[i + 1]);
        assert_true(p.active);
    }
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* A reschedule callback must return a time after now. At start and again the error is returned;
 * at a firing the watcher stops and its callback gets AEV_PERIODIC | AEV_ERROR. */
static void test_reschedule_not_after_now(void **state)
{
    aev_loop *loop = *state;
    pw p;
    rs_reset(AEV_MSEC(20));
    g_rs.bad_from = 1;
    pw_init(&p, loop, 1, 0, 0, resched);
    assert_int_equal(aev_periodic_start(&p.w), -EINVAL);
    assert_false(aev_is_active(&p.w.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(p.fires, 0);

    /* Good at start, bad at the first firing. */
    rs_reset(AEV_MSEC(20));
    g_rs.bad_from = 2;
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0); /* returns: nothing active after */
    assert_int_equal(p.fires, 1);
    assert_int_equal(p.events, AEV_PERIODIC | AEV_ERROR);
    assert_false(p.active);
    aev_errop op = AEV_ERROP_WATCH;
    assert_int_equal(aev_watcher_error(&p.w.base, &op), -EINVAL);
    assert_int_equal(op, AEV_ERROP_NONE);

    /* Starting again clears the error. */
    rs_reset(AEV_SEC(10));
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_watcher_error(&p.w.base, NULL), 0);

    /* again: the error is returned and the watcher stopped. */
    g_rs.bad_from = g_rs.calls + 1;
    assert_int_equal(aev_periodic_again(&p.w), -EINVAL);
    assert_false(aev_is_active(&p.w.base));
    assert_int_equal(aev_periodic_at(&p.w), 0);
}

/* ---- again, stop ------------------------------------------------------------------------ */

static void test_again(void **state)
{
    aev_loop *loop = *state;
    pw p;
    rs_reset(AEV_SEC(3600));
    pw_init(&p, loop, 1, 0, 0, resched);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    aev_time_t far = aev_periodic_at(&p.w);

    /* The reschedule logic changed: again asks the callback anew. */
    g_rs.delay = AEV_MSEC(20);
    aev_time_t before = aev_wall_time();
    assert_int_equal(aev_periodic_again(&p.w), 0);
    assert_true(aev_is_active(&p.w.base));
    assert_int_equal(g_rs.calls, 2);
    aev_time_t at = aev_periodic_at(&p.w);
    assert_true(at < far);
    assert_true(at >= before + AEV_MSEC(20));
    assert_int_equal(at, g_rs.ret[1]);
    assert_true(run_until(loop, &p.fires, 1, GUARD));
    assert_true(p.wall[0] >= at);
    assert_int_equal(aev_periodic_stop(&p.w), 0);

    /* again on an inactive watcher starts it. */
    pw q;
    pw_init(&q, loop, 2, 0, AEV_MSEC(10), NULL);
    assert_int_equal(aev_periodic_again(&q.w), 0);
    assert_true(aev_is_active(&q.w.base));
    assert_int_equal(aev_periodic_at(&q.w) % AEV_MSEC(10), 0);
    /* again on an active interval watcher keeps it on its phase. */
    assert_int_equal(aev_periodic_again(&q.w), 0);
    assert_int_equal(aev_periodic_at(&q.w) % AEV_MSEC(10), 0);
    assert_int_equal(aev_periodic_stop(&q.w), 0);
    assert_false(aev_is_active(&q.w.base));
}

static void test_stop(void **state)
{
    aev_loop *loop = *state;
    pw p;
    pw_init(&p, loop, 1, aev_wall_time() + AEV_MSEC(20), 0, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
    assert_false(aev_is_active(&p.w.base));
    assert_int_equal(aev_periodic_at(&p.w), 0);
    int never = 0;
    assert_false(run_until(loop, &never, 1, AEV_MSEC(100)));
    assert_int_equal(p.fires, 0);

    /* Stopping a pending periodic drops its event. */
    assert_int_equal(aev_feed_event(&p.w.base, AEV_PERIODIC), 0);
    assert_true(aev_is_pending(&p.w.base));
    assert_int_equal(aev_periodic_stop(&p.w), 0);
    assert_false(aev_is_pending(&p.w.base));

    /* Two due in the same iteration: the first one's callback stops the second. */
    pw a, b;
    aev_time_t now = aev_wall_time();
    pw_init(&a, loop, 1, now - AEV_MSEC(2), 0, NULL);
    pw_init(&b, loop, 2, now - AEV_MSEC(1), 0, NULL);
    a.victim = &b;
    assert_int_equal(aev_periodic_start(&a.w), 0);
    assert_int_equal(aev_periodic_start(&b.w), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(a.fires, 1);
    assert_int_equal(b.fires, 0);

    /* An interval watcher stopping itself from its callback fires no more. */
    pw c;
    pw_init(&c, loop, 3, 0, AEV_MSEC(5), NULL);
    c.stop_in_cb = true;
    assert_int_equal(aev_periodic_start(&c.w), 0);
    assert_true(run_until(loop, &c.fires, 1, GUARD));
    assert_false(aev_is_active(&c.w.base));
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(c.fires, 1);
}

/* Through the generic functions too. */
static void test_generic_start_stop(void **state)
{
    aev_loop *loop = *state;
    pw p;
    pw_init(&p, loop, 1, aev_wall_time() + HOUR, 0, NULL);
    assert_int_equal(aev_start(&p.w.base), 0);
    assert_true(aev_is_active(&p.w.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1); /* it keeps the loop referenced */
    assert_int_equal(aev_stop(&p.w.base), 0);
    assert_false(aev_is_active(&p.w.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* ---- order ------------------------------------------------------------------------------ */

#define NORDER 40

static void test_order(void **state)
{
    aev_loop *loop = *state;
    static pw ps[NORDER];
    aev_time_t base = aev_wall_time() + AEV_MSEC(30);
    g_norder = 0;
    /* Five distinct times, started in a scrambled order: eight watchers share each time. */
    aev_time_t at[NORDER];
    for (int i = 0; i < NORDER; i++) {
        at[i] = base + (aev_time_t)((i * 3) % 5) * AEV_MSEC(5);
        pw_init(&ps[i], loop, i, at[i], 0, NULL);
        assert_int_equal(aev_periodic_start(&ps[i].w), 0);
    }
    /* Some are stopped again, from the middle of the heap. */
    int stopped = 0;
    for (int i = 3; i < NORDER; i += 9) {
        assert_int_equal(aev_periodic_stop(&ps[i].w), 0);
        stopped++;
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_norder, NORDER - stopped);
    for (int k = 0; k < g_norder; k++) {
        int id = g_order[k];
        assert_int_not_equal(id % 9, 3);
        assert_int_equal(ps[id].fires, 1);
        assert_true(ps[id].wall[0] >= at[id]);
        if (k > 0) {
            int prev = g_order[k - 1];
            /* By time; equal times in start order. */
            assert_true(at[prev] < at[id] || (at[prev] == at[id] && prev < id));
        }
    }
}

/* ---- wall-clock jumps ------------------------------------------------------------------- */

/* Forward by an hour: the slot jumped over is not fired; the next slot after the new time is,
 * once. */
static void test_jump_forward_interval(void **state)
{
    aev_loop *loop = *state;
    aev_time_t h0 = hour_floor(aev_wall_time()) + 10 * HOUR;
    wall_set(h0 + HOUR - AEV_MSEC(500));
    pw p;
    pw_init(&p, loop, 1, 0, HOUR, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_periodic_at(&p.w), h0 + HOUR);

    wall_jump(HOUR); /* now h0 + 2h - 500 ms: h0 + 1h was jumped over */
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    if (aev_wall_time() < h0 + 2 * HOUR) { /* unless this thread stalled for 500 ms */
        assert_int_equal(p.fires, 0);
        assert_int_equal(aev_periodic_at(&p.w), h0 + 2 * HOUR);
    }
    assert_true(run_until(loop, &p.fires, 1, GUARD));
    assert_int_equal(p.fires, 1);
    assert_true(p.wall[0] >= h0 + 2 * HOUR);
    assert_int_equal(p.next[0], h0 + 3 * HOUR);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(p.fires, 1);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* A short interval across a forward jump of an hour: one call, not one per missed slot. */
static void test_jump_forward_short_interval(void **state)
{
    aev_loop *loop = *state;
    pw p;
    pw_init(&p, loop, 1, 0, AEV_MSEC(100), NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    int before = p.fires;
    wall_jump(HOUR);
    aev_time_t jumped = aev_wall_time();
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_true(p.fires - before <= 1);
    assert_true(aev_periodic_at(&p.w) > jumped);
    assert_true(aev_periodic_at(&p.w) <= aev_wall_time() + AEV_MSEC(100));
    assert_true(run_until(loop, &p.fires, before + 2, GUARD));
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* Backward by an hour: the watcher does not wait an hour; it moves to the next slot after the
 * new time. */
static void test_jump_backward_interval(void **state)
{
    aev_loop *loop = *state;
    aev_time_t h0 = hour_floor(aev_wall_time()) + 10 * HOUR;
    wall_set(h0 + 2 * HOUR - AEV_MSEC(500));
    pw p;
    pw_init(&p, loop, 1, 0, HOUR, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(aev_periodic_at(&p.w), h0 + 2 * HOUR);

    wall_jump(-HOUR); /* now h0 + 1h - 500 ms */
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    if (aev_wall_time() < h0 + HOUR) {
        assert_int_equal(p.fires, 0);
        assert_int_equal(aev_periodic_at(&p.w), h0 + HOUR);
    }
    assert_true(run_until(loop, &p.fires, 1, GUARD));
    assert_true(p.wall[0] >= h0 + HOUR);
    assert_int_equal(p.next[0], h0 + 2 * HOUR);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

/* Absolute one-shots keep their time: a forward jump past it fires it at once, a backward jump
 * makes it wait for the wall clock to get there again. */
static void test_jump_oneshot(void **state)
{
    aev_loop *loop = *state;
    aev_time_t now = aev_wall_time();
    pw fwd, back;
    pw_init(&fwd, loop, 1, now + HOUR, 0, NULL);
    pw_init(&back, loop, 2, now + 2 * HOUR + AEV_MSEC(300), 0, NULL);
    assert_int_equal(aev_periodic_start(&fwd.w), 0);
    assert_int_equal(aev_periodic_start(&back.w), 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(fwd.fires + back.fires, 0);

    wall_jump(2 * HOUR);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(fwd.fires, 1);
    assert_true(fwd.wall[0] >= now + HOUR);
    assert_int_equal(aev_periodic_at(&back.w), now + 2 * HOUR + AEV_MSEC(300));

    wall_jump(-HOUR);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(back.fires, 0);
    assert_int_equal(aev_periodic_at(&back.w), now + 2 * HOUR + AEV_MSEC(300));
    wall_jump(HOUR);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(back.fires, 1);
    assert_true(back.wall[0] >= now + 2 * HOUR + AEV_MSEC(300));
}

/* Reschedule callbacks are asked again, with the new wall time, when the clock jumps; not when it
 * does not. */
static void test_jump_reschedule_cb(void **state)
{
    aev_loop *loop = *state;
    pw p;
    rs_reset(HOUR);
    pw_init(&p, loop, 1, 0, 0, resched);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    for (int i = 0; i < 5; i++)
        assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 1);

    wall_jump(-3 * HOUR);
    aev_time_t jumped = aev_wall_time();
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
    assert_int_equal(g_rs.calls, 2);
    assert_true(g_rs.now[1] >= jumped);
    assert_true(g_rs.now[1] < jumped + LATE);
    assert_int_equal(aev_periodic_at(&p.w), g_rs.ret[1]);
    assert_int_equal(p.fires, 0);

    /* A callback that fails then stops the watcher with AEV_ERROR. */
    g_rs.bad_from = g_rs.calls + 1;
    wall_jump(HOUR);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(p.fires, 1);
    assert_int_equal(p.events, AEV_ERROR);
    assert_false(aev_is_active(&p.w.base));
    assert_int_equal(aev_watcher_error(&p.w.base, NULL), -EINVAL);
}

/* The loop sleeping for a periodic an hour away still notices a clock step within about a
 * second (nothing else wakes it). */
static void *jumper(void *arg)
{
    (void)arg;
    aevt_sleep_ms(100);
    wall_jump(2 * HOUR);
    return NULL;
}

static void test_jump_while_sleeping(void **state)
{
    aev_loop *loop = *state;
    pw p;
    aev_time_t at = aev_wall_time() + HOUR;
    pw_init(&p, loop, 1, at, 0, NULL);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    pthread_t t;
    /* Before the thread exists: read after, a descheduled main thread could take it when the
     * jumper's 100 ms sleep has already begun. */
    aev_time_t start = aev_time();
    assert_int_equal(pthread_create(&t, NULL, jumper, NULL), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    aev_time_t took = aev_time() - start;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(p.fires, 1);
    assert_true(p.wall[0] >= at);
    assert_true(took >= AEV_MSEC(100));
    assert_true(took < AEV_SEC(1) + LATE);
}

/* aev_resume() reschedules periodics from the wall clock (and is harmless with none). */
static void test_resume(void **state)
{
    aev_loop *loop = *state;
    aev_suspend(loop);
    aev_resume(loop);

    pw p;
    rs_reset(HOUR);
    pw_init(&p, loop, 1, 0, 0, resched);
    assert_int_equal(aev_periodic_start(&p.w), 0);
    assert_int_equal(g_rs.calls, 1);
    aev_suspend(loop);
    aev_resume(loop);
    assert_int_equal(g_rs.calls, 2);
    assert_int_equal(aev_periodic_at(&p.w), g_rs.ret[1]);
    assert_int_equal(aev_periodic_stop(&p.w), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wall_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneshot_not_early, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneshot_fake_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneshot_past, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_phase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_offset_is_phase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_coalesces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reschedule_cb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reschedule_not_after_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generic_start_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_forward_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_forward_short_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_backward_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_oneshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_reschedule_cb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jump_while_sleeping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
