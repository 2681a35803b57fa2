/*
 * Timers. A timer's `at_` member holds its configured delay; the absolute deadline lives only in
 * its heap node. Deadlines are taken from the clock at start, not from the loop's cached time:
 * a timer started after a long callback, or outside the loop, can never fire early.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/* base + delta without signed overflow: deadlines beyond the int64 range mean "never". */
static aev_time_t aev__deadline(aev_time_t base, aev_time_t delta)
{
    return delta > INT64_MAX - base ? INT64_MAX : base + delta;
}

int aev_timer_init(aev_timer *w, aev_loop *loop, aev_cb cb, aev_time_t after, aev_time_t repeat)
{
    if (after < 0 || repeat < 0)
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_TIMER);
    if (rc < 0)
        return rc;
    w->at_ = after;
    w->repeat_ = repeat;
    return 0;
}

int aev_timer_set(aev_timer *w, aev_time_t after, aev_time_t repeat)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_TIMER) || after < 0 || repeat < 0)
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->at_ = after;
    w->repeat_ = repeat;
    return 0;
}

static int aev__timer_arm(aev_timer *w, aev_time_t delay)
{
    aev_loop *loop = w->base.loop_;
    aev_time_t at = aev__deadline(aev__clock(), delay);
    int rc = aev__heap_push(&loop->timers, w, at, loop->timer_seq++);
    if (rc < 0)
        return rc;
    aev__activate(&w->base, w->base.active_);
    return 0;
}

int aev_timer_start(aev_timer *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_TIMER);
    if (rc <= 0)
        return rc;
    return aev__timer_arm(w, w->at_);
}

int aev_timer_stop(aev_timer *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_TIMER);
    if (rc <= 0)
        return rc;
    aev__heap_remove(&w->base.loop_->timers, (uint32_t)w->base.active_ - 1);
    aev__deactivate(&w->base);
    return 0;
}

int aev_timer_again(aev_timer *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_TIMER))
        return -EINVAL;
    aev_loop *loop = w->base.loop_;
    /* A restart makes an expiry still waiting to be invoked stale: an idle timeout pushed back
     * by data that arrived in the same iteration must not close the connection now. */
    if (w->base.pending_)
        aev__unpend(&w->base);
    if (!w->base.active_) {
        if (!w->repeat_)
            return 0;
        int rc = aev__pending_reserve(&w->base);
        return rc < 0 ? rc : aev__timer_arm(w, w->repeat_);
    }
    if (!w->repeat_)
        return aev_timer_stop(w);
    aev_time_t at = aev__deadline(aev__clock(), w->repeat_);
    aev__heap_update(&loop->timers, (uint32_t)w->base.active_ - 1, at, loop->timer_seq++);
    return 0;
}

int aev_timer_set_repeat(aev_timer *w, aev_time_t repeat)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_TIMER) || repeat < 0)
        return -EINVAL;
    w->repeat_ = repeat;
    return 0;
}

aev_time_t aev_timer_repeat(const aev_timer *w)
{
    return w ? w->repeat_ : 0;
}

aev_time_t aev_timer_remaining(const aev_timer *w)
{
    /* Checked like every other call: in debug builds a watcher of a destroyed loop is
     * reported here instead of reading the freed heap. */
    if (!aev__is((const aev_watcher *)w, AEV__T_TIMER) || !w->base.active_)
        return 0;
    aev_time_t left = w->base.loop_->timers.nodes[w->base.active_ - 1].at - aev__clock();
    return left > 0 ? left : 0;
}

/* The next deadline of a repeating timer that expired at `at`: the first one after `now`, so a
 * loop that fell behind runs the callback once instead of once per missed period. */
static aev_time_t aev__next_period(aev_time_t at, aev_time_t repeat, aev_time_t now)
{
    aev_time_t next = aev__deadline(at, repeat);
    if (next > now)
        return next;
    aev_time_t periods = (now - at) / repeat + 1;
    if (periods > (INT64_MAX - at) / repeat)
        return INT64_MAX;
    return at + periods * repeat;
}

void aev__timers_reify(aev_loop *loop)
{
    aev__heap *h = &loop->timers;
    while (h->count && h->nodes[0].at <= loop->now) {
        aev_timer *w = h->nodes[0].w;
        if (w->repeat_) {
            aev_time_t next = aev__next_period(h->nodes[0].at, w->repeat_, loop->now);
            aev__heap_update(h, 0, next, loop->timer_seq++);
        } else {
            aev__heap_remove(h, 0);
            aev__deactivate(&w->base);
        }
        aev__feed(loop, &w->base, AEV_TIMER);
    }
}

/* Moves every deadline later by delta (time spent suspended). A uniform shift keeps the heap
 * ordered, so no sifting is needed. */
void aev__timers_shift(aev_loop *loop, aev_time_t delta)
{
    aev__heap *h = &loop->timers;
    for (uint32_t i = 0; i < h->count; i++)
        h->nodes[i].at = aev__deadline(h->nodes[i].at, delta);
}

aev_time_t aev__timers_next(const aev_loop *loop)
{
    return loop->timers.count ? loop->timers.nodes[0].at : INT64_MAX;
}

void aev__timers_free(aev_loop *loop)
{
    aev__free(loop->timers.nodes);
}
