/*
 * Timers. A timer's `at_` member holds its configured delay; the absolute deadline lives only in
 * its heap node. Deadlines are taken from the clock at start, not from the loop's cached time:
 * a timer started after a long callback, or outside the loop, can never fire early.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

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
    int rc = aev__tq_reserve(&loop->timers);
    if (rc < 0)
        return rc;
    aev__tq_insert(&loop->timers, w, aev__time_add(aev__clock(), delay), loop->timer_seq++);
    aev__activate(&w->base, w->base.active_);
    return 0;
}

/* Gives an active timer a new deadline, as the latest start. Never fails: the timer's room in
 * the heap was reserved when it started. */
static void aev__timer_move(aev_loop *loop, aev_timer *w, aev_time_t at)
{
    aev__tq_move(&loop->timers, w, at, loop->timer_seq++);
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
    aev__tq_remove(&w->base.loop_->timers, w);
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
    aev_time_t at = aev__time_add(aev__clock(), w->repeat_);
    aev__timer_move(loop, w, at);
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
    aev_time_t left = aev__tq_node(&w->base.loop_->timers, w)->at - aev__clock();
    return left > 0 ? left : 0;
}

/* The next deadline of a repeating timer that expired at `at`: the first one after `now`, so a
 * loop that fell behind runs the callback once instead of once per missed period. */
static aev_time_t aev__next_period(aev_time_t at, aev_time_t repeat, aev_time_t now)
{
    aev_time_t next = aev__time_add(at, repeat);
    if (next > now)
        return next;
    aev_time_t periods = (now - at) / repeat + 1;
    if (periods > (INT64_MAX - at) / repeat)
        return INT64_MAX;
    return at + periods * repeat;
}

void aev__timers_reify(aev_loop *loop)
{
    const aev__hnode *first;
    while ((first = aev__tq_first(&loop->timers)) && first->at <= loop->now) {
        aev_timer *w = first->w;
        if (w->repeat_) {
            aev__timer_move(loop, w, aev__next_period(first->at, w->repeat_, loop->now));
            aev__feed(loop, &w->base, AEV_TIMER);
        } else {
            aev__tq_remove(&loop->timers, w);
            /* Fed while still active: its pending slot was reserved at start and stays counted
             * (held) while it is pending, so the feed needs no reservation of its own. */
            aev__feed(loop, &w->base, AEV_TIMER);
            aev__deactivate(&w->base);
        }
    }
}

/* Moves every deadline later by delta (time spent suspended). */
void aev__timers_shift(aev_loop *loop, aev_time_t delta)
{
    aev__tq_shift(&loop->timers, delta);
}

aev_time_t aev__timers_next(const aev_loop *loop)
{
    const aev__hnode *first = aev__tq_first(&loop->timers);
    return first ? first->at : INT64_MAX;
}

void aev__timers_free(aev_loop *loop)
{
    aev__tq_free(&loop->timers);
}
