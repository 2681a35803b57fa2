/*
 * Periodic watchers: they fire at wall-clock (CLOCK_REALTIME) times, where timers use the
 * monotonic clock. They live in their own binary min-heap, ordered by (wall-clock time, start
 * sequence): the two clocks drift apart whenever the wall clock is set, so one heap cannot order
 * both kinds, and keeping heap.c typed for timers keeps its sift loops free of indirection.
 * Periodics are few, so a plain binary heap is enough. Each periodic's base.active_ holds its
 * heap index + 1.
 *
 * Wall-clock jumps: once per iteration the loop compares (wall - monotonic) with the value it saw
 * at its previous check. A change beyond AEV__JUMP_MIN (plus a slew allowance) means the wall
 * clock was set, and every periodic is rescheduled from the new wall time.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct aev__pnode {
    aev_time_t at;
    uint64_t seq; /* start order: equal times fire in the order the watchers were started */
    aev_periodic *w;
};

/* A step of (wall - monotonic) larger than 1 ms plus 1000 ppm of the time since the previous
 * check is a jump of the wall clock. The two clocks are read within a few microseconds of each
 * other (aev__sample), so 1 ms is far above reading noise yet far below any step worth noticing;
 * the ppm term covers systems whose monotonic clock is not slewed along with the wall clock by
 * NTP (at most 500 ppm), so slewing is never mistaken for a jump. */
#define AEV__JUMP_MIN AEV_MSEC(1)
#define AEV__JUMP_PPM_DIV 1000

/* Nothing wakes a sleeping loop when the wall clock is set, so while periodics are active the
 * loop sleeps at most this long before it looks at the wall clock again: a periodic that a clock
 * step has made due fires at most this late. */
#define AEV__WALL_RECHECK AEV_SEC(1)

/* Attempts at reading both clocks within AEV__SAMPLE_WINDOW of each other. */
#define AEV__SAMPLE_TRIES 4
#define AEV__SAMPLE_WINDOW AEV_USEC(50)

/* ---- clocks ----------------------------------------------------------------------------- */

static aev_time_t aev__wall(void)
{
    struct timespec ts;
    /* CLOCK_REALTIME cannot fail with a valid pointer on any system we build for. */
    clock_gettime(CLOCK_REALTIME, &ts);
    return (aev_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

aev_time_t aev_wall_time(void)
{
    return aev__wall();
}

/* Both clocks at (nearly) the same instant. */
typedef struct aev__clocks {
    aev_time_t mono, wall;
} aev__clocks;

/* Reads the wall clock between two monotonic reads and keeps the attempt with the narrowest
 * window: a preemption between the reads would otherwise look like a clock jump. */
static aev__clocks aev__sample(void)
{
    aev__clocks best = {0, 0};
    aev_time_t best_window = INT64_MAX;
    for (int i = 0; i < AEV__SAMPLE_TRIES && best_window > AEV__SAMPLE_WINDOW; i++) {
        aev_time_t before = aev__clock();
        aev_time_t wall = aev__wall();
        aev_time_t window = aev__clock() - before;
        if (window < best_window) {
            best_window = window;
            best = (aev__clocks){before + window / 2, wall};
        }
    }
    return best;
}

/* Remembers (wall - monotonic) as the reference for the next jump check. */
static void aev__baseline(aev_loop *loop, aev__clocks c)
{
    loop->wall_offset = c.wall - c.mono;
    loop->wall_checked = c.mono;
}

static int aev__jumped(const aev_loop *loop, aev__clocks c)
{
    aev_time_t change = (c.wall - c.mono) - loop->wall_offset;
    aev_time_t allowed = AEV__JUMP_MIN + (c.mono - loop->wall_checked) / AEV__JUMP_PPM_DIV;
    return change > allowed || change < -allowed;
}

/* ---- schedule --------------------------------------------------------------------------- */

/* The first offset + k * interval (k any integer) strictly after now; INT64_MAX if beyond the
 * range. Remainders are taken separately so that no subtraction can overflow. */
static aev_time_t aev__next_slot(aev_time_t offset, aev_time_t interval, aev_time_t now)
{
    aev_time_t phase = offset % interval;
    if (phase < 0)
        phase += interval;
    aev_time_t into = now % interval;
    if (into < 0)
        into += interval;
    aev_time_t since = into - phase; /* both in [0, interval): no overflow */
    if (since < 0)
        since += interval;
    aev_time_t slot = now - since; /* the last slot at or before now */
    return slot > INT64_MAX - interval ? INT64_MAX : slot + interval;
}

/* The watcher's next time seen from `now`: its absolute time for a one-shot, the next slot for an
 * interval, or what its reschedule callback returns, which must be after now (-EINVAL if not). */
static int aev__schedule(aev_periodic *w, aev_time_t now, aev_time_t *at)
{
    if (w->reschedule_) {
        *at = w->reschedule_(w, now);
        return *at > now ? 0 : -EINVAL;
    }
    *at = w->interval_ ? aev__next_slot(w->offset_, w->interval_, now) : w->offset_;
    return 0;
}

/* ---- heap ------------------------------------------------------------------------------- */

static int aev__pbefore(const struct aev__pnode *a, const struct aev__pnode *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void aev__pplace(aev_loop *loop, uint32_t i, struct aev__pnode n)
{
    loop->periodics[i] = n;
    n.w->base.active_ = (int32_t)(i + 1);
}

static void aev__psift_up(aev_loop *loop, uint32_t i)
{
    struct aev__pnode n = loop->periodics[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!aev__pbefore(&n, &loop->periodics[parent]))
            break;
        aev__pplace(loop, i, loop->periodics[parent]);
        i = parent;
    }
    aev__pplace(loop, i, n);
}

static void aev__psift_down(aev_loop *loop, uint32_t i)
{
    struct aev__pnode *h = loop->periodics;
    struct aev__pnode n = h[i];
    for (;;) {
        uint64_t child = (uint64_t)i * 2 + 1;
        if (child >= loop->nperiodics)
            break;
        if (child + 1 < loop->nperiodics && aev__pbefore(&h[child + 1], &h[child]))
            child++;
        if (!aev__pbefore(&h[child], &n))
            break;
        aev__pplace(loop, i, h[child]);
        i = (uint32_t)child;
    }
    aev__pplace(loop, i, n);
}

/* Restores order around i after its node changed or was replaced. */
static void aev__pfix(aev_loop *loop, uint32_t i)
{
    if (i > 0 && aev__pbefore(&loop->periodics[i], &loop->periodics[(i - 1) / 2]))
        aev__psift_up(loop, i);
    else
        aev__psift_down(loop, i);
}

static int aev__ppush(aev_loop *loop, aev_periodic *w, aev_time_t at)
{
    int rc = aev__grow((void **)&loop->periodics, &loop->periodics_cap, loop->nperiodics + 1,
                       sizeof *loop->periodics);
    if (rc < 0)
        return rc;
    loop->periodics[loop->nperiodics] = (struct aev__pnode){at, loop->periodic_seq++, w};
    aev__psift_up(loop, loop->nperiodics++);
    return 0;
}

/* Removes node i by moving the last node into its place, without restoring the order. */
static void aev__ptake(aev_loop *loop, uint32_t i)
{
    loop->nperiodics--;
    if (i != loop->nperiodics)
        aev__pplace(loop, i, loop->periodics[loop->nperiodics]);
}

static void aev__premove(aev_loop *loop, uint32_t i)
{
    aev__ptake(loop, i);
    if (i < loop->nperiodics)
        aev__pfix(loop, i);
}

static void aev__pupdate(aev_loop *loop, uint32_t i, aev_time_t at)
{
    loop->periodics[i].at = at;
    loop->periodics[i].w->at_ = at;
    aev__pfix(loop, i);
}

static void aev__pheapify(aev_loop *loop)
{
    for (uint32_t i = loop->nperiodics / 2; i-- > 0;)
        aev__psift_down(loop, i);
}

/* ---- API -------------------------------------------------------------------------------- */

int aev_periodic_init(aev_periodic *w, aev_loop *loop, aev_cb cb, aev_time_t offset,
                      aev_time_t interval, aev_reschedule_cb reschedule)
{
    if (interval < 0)
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_PERIODIC);
    if (rc < 0)
        return rc;
    w->at_ = 0;
    w->offset_ = offset;
    w->interval_ = interval;
    w->reschedule_ = reschedule;
    return 0;
}

int aev_periodic_set(aev_periodic *w, aev_time_t offset, aev_time_t interval,
                     aev_reschedule_cb reschedule)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_PERIODIC) || interval < 0)
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->offset_ = offset;
    w->interval_ = interval;
    w->reschedule_ = reschedule;
    return 0;
}

int aev_periodic_start(aev_periodic *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_PERIODIC);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    aev__clocks c = aev__sample();
    aev_time_t at;
    rc = aev__schedule(w, c.wall, &at);
    if (rc < 0 || w->base.active_)
        return rc; /* a bad reschedule callback, or one that started the watcher itself */
    /* With no periodic active, nobody watched for jumps: this start is the new reference. */
    if (!loop->nperiodics)
        aev__baseline(loop, c);
    rc = aev__ppush(loop, w, at);
    if (rc < 0)
        return rc;
    w->at_ = at;
    aev__activate(&w->base, w->base.active_);
    return 0;
}

int aev_periodic_stop(aev_periodic *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_PERIODIC);
    if (rc <= 0)
        return rc;
    aev__premove(w->base.loop_, (uint32_t)w->base.active_ - 1);
    aev__deactivate(&w->base);
    return 0;
}

int aev_periodic_again(aev_periodic *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_PERIODIC))
        return -EINVAL;
    if (!w->base.active_)
        return aev_periodic_start(w);
    aev_time_t at;
    int rc = aev__schedule(w, aev__wall(), &at);
    if (rc < 0) {
        aev_periodic_stop(w);
        return rc;
    }
    if (w->base.active_) /* else its reschedule callback stopped it */
        aev__pupdate(w->base.loop_, (uint32_t)w->base.active_ - 1, at);
    return 0;
}

aev_time_t aev_periodic_at(const aev_periodic *w)
{
    return w && w->base.active_ ? w->at_ : 0;
}

/* ---- loop side -------------------------------------------------------------------------- */

/* Stops w, whose reschedule callback returned a time not after now, and records why. */
static void aev__periodic_fail(aev_periodic *w, int err)
{
    aev__deactivate(&w->base);
    aev__fail(&w->base, err, AEV_ERROP_NONE);
}

/* Moves every periodic to its next time seen from `now`. Reschedule callbacks may (against the
 * documentation) change the heap meanwhile; indices are re-read from the watchers and the heap is
 * rebuilt at the end, so that can cost order for one pass, never memory safety. */
static void aev__reschedule_from(aev_loop *loop, aev_time_t now)
{
    uint32_t i = 0;
    while (i < loop->nperiodics) {
        aev_periodic *w = loop->periodics[i].w;
        aev_time_t at;
        int rc = aev__schedule(w, now, &at);
        if (!w->base.active_)
            continue; /* stopped by its own callback: slot i now holds another watcher */
        uint32_t idx = (uint32_t)w->base.active_ - 1;
        if (rc < 0) {
            aev__ptake(loop, idx);
            aev__periodic_fail(w, rc);
            aev__feed(loop, &w->base, AEV_ERROR);
            continue;
        }
        loop->periodics[idx].at = at;
        w->at_ = at;
        i++;
    }
    aev__pheapify(loop);
}

void aev__periodics_reschedule_all(aev_loop *loop)
{
    if (!loop || !loop->nperiodics)
        return;
    aev__clocks c = aev__sample();
    aev__reschedule_from(loop, c.wall);
    aev__baseline(loop, c);
}

/* Handles the first periodic, whose time `now` has reached: one-shots stop before their callback
 * runs, the others move to their next time after now (missed ones are coalesced). */
static void aev__periodic_fire(aev_loop *loop, aev_periodic *w, aev_time_t now)
{
    if (!w->interval_ && !w->reschedule_) {
        aev__premove(loop, 0);
        aev__deactivate(&w->base);
        aev__feed(loop, &w->base, AEV_PERIODIC);
        return;
    }
    aev_time_t at;
    int rc = aev__schedule(w, now, &at);
    if (!w->base.active_)
        return; /* its reschedule callback stopped it: a stopped watcher gets no event */
    uint32_t idx = (uint32_t)w->base.active_ - 1;
    if (rc < 0) {
        aev__premove(loop, idx);
        aev__periodic_fail(w, rc);
        aev__feed(loop, &w->base, AEV_PERIODIC | AEV_ERROR);
        return;
    }
    aev__pupdate(loop, idx, at);
    aev__feed(loop, &w->base, AEV_PERIODIC);
}

void aev__periodics_reify(aev_loop *loop)
{
    if (!loop->nperiodics)
        return;
    aev__clocks c = aev__sample();
    if (aev__jumped(loop, c))
        aev__reschedule_from(loop, c.wall);
    aev__baseline(loop, c);
    loop->wall_now = c.wall;
    while (loop->nperiodics && loop->periodics[0].at <= loop->wall_now)
        aev__periodic_fire(loop, loop->periodics[0].w, loop->wall_now);
}

aev_time_t aev__periodics_timeout(aev_loop *loop)
{
    if (!loop->nperiodics)
        return INT64_MAX;
    aev_time_t at = loop->periodics[0].at;
    aev_time_t wall = aev__wall();
    if (at <= wall)
        return 0;
    /* at > wall, so the difference is positive; it overflows only past the recheck cap. */
    if (wall < 0 && at > INT64_MAX + wall)
        return AEV__WALL_RECHECK;
    aev_time_t left = at - wall;
    return left < AEV__WALL_RECHECK ? left : AEV__WALL_RECHECK;
}

void aev__periodics_free(aev_loop *loop)
{
    aev__free(loop->periodics);
    loop->periodics = NULL;
    loop->nperiodics = loop->periodics_cap = 0;
}

int aev__periodic_holds(const aev_loop *loop, const aev_periodic *w)
{
    uint32_t i = (uint32_t)w->base.active_ - 1;
    return w->base.active_ > 0 && i < loop->nperiodics && loop->periodics[i].w == w;
}
