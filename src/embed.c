/*
 * Embed watchers: one loop (the outer one, which owns the watcher) runs another (the embedded
 * loop, `other_`), for example to use an epoll or kqueue loop for some fds from a poll loop.
 *
 * Design:
 *  - The embedded loop is never run by itself: it is swept, i.e. run for one iteration that
 *    does not block (aev_run NOWAIT), whenever it has something to do. Finding that out is the
 *    outer loop's job, through three internal watchers of the outer loop:
 *      io_      reads the embedded loop's backend fd (epoll and kqueue fds become readable when
 *               one of their fds has events, the embedded wakeup fd included);
 *      timer_   expires at the embedded loop's next timer or periodic deadline, or at once when
 *               the embedded loop has work without any fd event (pending events, idle watchers,
 *               an async send, a fork or backend rebuild to carry out);
 *      prepare_ recomputes both before every poll of the outer loop, since the embedded loop's
 *               watchers may have changed since the last sweep.
 *    io_ and timer_ make the embed watcher pending with AEV_EMBED; its callback sweeps (the
 *    library's own when the program gave none).
 *  - References: the embed watcher holds the one reference on the outer loop; the internal
 *    watchers are started and then give theirs back, so they never keep aev_run() going.
 *  - Async sends to the embedded loop write its wakeup fd only while it announces that it may
 *    sleep (may_sleep, see async.c). Embedded, it is in effect asleep whenever the outer loop
 *    is, so the announcement is made in the prepare step, before the check for sends already
 *    made, and kept until the watcher stops (the sweeps never block, so they never clear it).
 *  - Fork and rebuilds: the embedded loop recreates its kernel object in its own next
 *    iteration (a sweep), and bumps backend_gen when it does. The prepare step compares the fd
 *    and that generation with what io_ watches and re-sets io_ when they differ: a recreated
 *    epoll fd may well get the old number back.
 */
#include "internal.h"

#include <errno.h>

static void aev__embed_autosweep(aev_watcher *w, unsigned events);
static void aev__embed_io_cb(aev_watcher *w, unsigned events);
static void aev__embed_timer_cb(aev_watcher *w, unsigned events);
static void aev__embed_prepare_cb(aev_watcher *w, unsigned events);

/* -EINVAL for a missing or identical loop, -ENOTSUP for a backend without a pollable fd. */
static int aev__embed_other_ok(const aev_loop *loop, const aev_loop *other)
{
    if (!loop || !other || other == loop)
        return -EINVAL;
    return other->backend->fd(other) < 0 ? -ENOTSUP : 0;
}

/* Bits of aev_embed.held_: which internal watchers gave back the reference their start took. */
enum { AEV__EMBED_IO = 1, AEV__EMBED_TIMER = 2, AEV__EMBED_PREPARE = 4 };

/* Returns the reference given back by an internal watcher that the loop itself has stopped
 * since (an expired timer, a failed io watcher): its stop took the reference once more. */
static void aev__embed_settle(aev_embed *w, aev_watcher *iw, unsigned bit)
{
    if ((w->held_ & bit) && !iw->active_) {
        iw->loop_->refs++;
        w->held_ &= ~bit;
    }
}

/* Starts an internal watcher and gives its reference back: only the embed watcher counts. */
static int aev__embed_hold(aev_embed *w, aev_watcher *iw, unsigned bit)
{
    aev__embed_settle(w, iw, bit);
    if (iw->active_)
        return 0;
    int rc = aev_start(iw);
    if (rc == 0) {
        iw->loop_->refs--;
        w->held_ |= bit;
    }
    return rc;
}

/* Stops an internal watcher (dropping a pending event too) and takes back the reference. */
static void aev__embed_release(aev_embed *w, aev_watcher *iw, unsigned bit)
{
    aev_stop(iw);
    aev__embed_settle(w, iw, bit);
}

static void aev__embed_internal_init(aev_watcher *iw, int priority)
{
    iw->priority_ = (int8_t)priority;
    iw->flags_ |= AEV__WF_INTERNAL;
}

int aev_embed_init(aev_embed *w, aev_loop *loop, aev_cb cb, aev_loop *other)
{
    if (!w)
        return -EINVAL;
    int rc = aev__embed_other_ok(loop, other);
    if (rc < 0)
        return rc;
    rc = aev__watcher_init(&w->base, loop, cb ? cb : aev__embed_autosweep, AEV__T_EMBED);
    if (rc < 0)
        return rc; /* -EBUSY: still active or pending; nothing was changed */
    w->other_ = other;
    w->armed_at_ = INT64_MAX;
    w->backend_gen_ = 0;
    w->held_ = 0;
    aev_io_init(&w->io_, loop, aev__embed_io_cb, other->backend->fd(other), AEV_READ);
    aev_timer_init(&w->timer_, loop, aev__embed_timer_cb, 0, 0);
    aev_prepare_init(&w->prepare_, loop, aev__embed_prepare_cb);
    /* io_ and timer_ only feed the embed watcher, which runs at its own priority: they go
     * first so that it is queued in the same pass. prepare_ goes last, after the program's
     * prepare callbacks of higher priority, which may still change the embedded loop. */
    aev__embed_internal_init(&w->io_.base, AEV_MAXPRI);
    aev__embed_internal_init(&w->timer_.base, AEV_MAXPRI);
    aev__embed_internal_init(&w->prepare_.base, AEV_MINPRI);
    return 0;
}

int aev_embed_set(aev_embed *w, aev_loop *other)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_EMBED))
        return -EINVAL;
    int rc = aev__embed_other_ok(w->base.loop_, other);
    if (rc < 0)
        return rc;
    if (w->base.active_)
        return -EBUSY;
    w->other_ = other;
    return 0;
}

/* ---- arming ------------------------------------------------------------------------------ */

/* epoll applies a change at once; kqueue queues it for its next kevent() call, i.e. for the
 * embedded loop's next poll, so its fd cannot report the new fds before a sweep. */
static int aev__embed_changes_applied(const aev_loop *other)
{
    return other->backend->id == AEV_BACKEND_EPOLL;
}

/* Points io_ at the embedded loop's current kernel object, unless it watches it already. */
static int aev__embed_arm_io(aev_embed *w)
{
    aev_loop *other = w->other_;
    int fd = other->backend->fd(other);
    if (w->io_.base.active_ && w->io_.fd_ == fd && w->backend_gen_ == other->backend_gen)
        return 0;
    aev__embed_release(w, &w->io_.base, AEV__EMBED_IO);
    if (fd < 0)
        return 0;
    /* aev_io_set() marks the fd as possibly another file, so its registration is renewed even
     * when a recreated kernel object got the old number back. */
    aev_io_set(&w->io_, fd, AEV_READ);
    w->backend_gen_ = other->backend_gen;
    return aev__embed_hold(w, &w->io_.base, AEV__EMBED_IO);
}

/* Arms timer_ for the absolute monotonic time `at` (INT64_MAX: none; in the past: at once). */
static int aev__embed_arm_timer(aev_embed *w, aev_time_t at)
{
    if (at == w->armed_at_ && (at == INT64_MAX || w->timer_.base.active_))
        return 0;
    aev__embed_release(w, &w->timer_.base, AEV__EMBED_TIMER);
    w->armed_at_ = at;
    if (at == INT64_MAX)
        return 0;
    aev_time_t delay = at - aev__clock();
    aev_timer_set(&w->timer_, delay > 0 ? delay : 0, 0);
    return aev__embed_hold(w, &w->timer_.base, AEV__EMBED_TIMER);
}

/* When the embedded loop next needs a sweep without any event on its fd: 0 for now, INT64_MAX
 * for never. */
static aev_time_t aev__embed_deadline(aev_loop *other, int had_changes)
{
    if (other->pending_count || other->idle_mask || other->nalways || other->rebuild)
        return 0;
    if (had_changes && !aev__embed_changes_applied(other))
        return 0;
    /* seq_cst store, then the seq_cst load in aev__async_waiting(): the loop's half of the
     * handshake with aev_async_send() (async.c). A send that misses the flag is seen here; one
     * that sees it writes the wakeup fd, which makes the backend fd readable. */
    atomic_store_explicit(&other->may_sleep, 1, memory_order_seq_cst);
    if (aev__async_waiting(other))
        return 0;
    aev_time_t at = aev__timers_next(other);
    aev_time_t left = aev__periodics_timeout(other);
    if (left != INT64_MAX) {
        aev_time_t periodic_at = aev__clock() + left;
        at = periodic_at < at ? periodic_at : at;
    }
    return at;
}

/* Makes io_ and timer_ reflect the embedded loop's state; the prepare step calls this before
 * every poll of the outer loop. 0 or -ENOMEM. */
static int aev__embed_arm(aev_embed *w)
{
    aev_loop *other = w->other_;
    if (other->fatal || other->suspended) {
        /* Nothing can run there until it is resumed (a sweep would return -EBUSY), or ever
         * (the error): watching it would only make the outer loop spin. */
        aev__embed_release(w, &w->io_.base, AEV__EMBED_IO);
        return aev__embed_arm_timer(w, INT64_MAX);
    }
    if (other->fork_gen != aev__fork_generation()) {
        /* In a fork child, before the embedded loop has rebuilt itself: its fd is still the
         * parent's kernel object, whose events are the parent's. A sweep rebuilds it. */
        aev__embed_release(w, &w->io_.base, AEV__EMBED_IO);
        return aev__embed_arm_timer(w, 0);
    }
    int had_changes = other->nchanges != 0;
    /* Hand the embedded loop's watcher changes to its kernel object now, so that its fd can
     * report events of fds started since the last sweep. Failures are fed as AEV_ERROR there
     * and so make it due. */
    aev__io_flush(other);
    int rc = aev__embed_arm_io(w);
    if (rc < 0)
        return rc;
    return aev__embed_arm_timer(w, aev__embed_deadline(other, had_changes));
}

/* ---- callbacks of the internal watchers -------------------------------------------------- */

/* Stops w and hands it AEV_ERROR with err, like any watcher that cannot go on. */
static void aev__embed_fail(aev_embed *w, int err, aev_errop op)
{
    aev_embed_stop(w);
    aev__fail(&w->base, err, op);
    aev__feed(w->base.loop_, &w->base, AEV_ERROR);
}

static void aev__embed_due(aev_embed *w)
{
    aev__feed(w->base.loop_, &w->base, AEV_EMBED);
}

static void aev__embed_io_cb(aev_watcher *iw, unsigned events)
{
    aev_embed *w = aev__container_of((aev_io *)iw, aev_embed, io_);
    if (events & AEV_ERROR) {
        aev__embed_settle(w, iw, AEV__EMBED_IO);
        aev__embed_fail(w, iw->err_, (aev_errop)iw->errop_);
        return;
    }
    aev__embed_due(w);
}

static void aev__embed_timer_cb(aev_watcher *tw, unsigned events)
{
    (void)events;
    aev_embed *w = aev__container_of((aev_timer *)tw, aev_embed, timer_);
    /* Expired, the one-shot timer is inactive: the loop must not run on one reference short. */
    aev__embed_settle(w, tw, AEV__EMBED_TIMER);
    aev__embed_due(w);
}

static void aev__embed_prepare_cb(aev_watcher *pw, unsigned events)
{
    (void)events;
    aev_embed *w = aev__container_of((aev_prepare *)pw, aev_embed, prepare_);
    int rc = aev__embed_arm(w);
    if (rc < 0)
        aev__embed_fail(w, rc, AEV_ERROP_WATCH);
}

/* The callback of a watcher initialised without one: sweep, and give up on a loop that failed
 * for good (the program finds the cause with aev_watcher_error()). */
static void aev__embed_autosweep(aev_watcher *ew, unsigned events)
{
    if (!(events & AEV_EMBED))
        return;
    aev_embed *w = (aev_embed *)ew;
    int rc = aev_run(w->other_, AEV_RUN_NOWAIT);
    if (rc < 0 && rc != -EBUSY)
        aev__embed_fail(w, rc, AEV_ERROP_POLL);
}

/* ---- start, stop, sweep ------------------------------------------------------------------ */

int aev_embed_start(aev_embed *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_EMBED);
    if (rc <= 0)
        return rc;
    rc = aev__embed_hold(w, &w->prepare_.base, AEV__EMBED_PREPARE);
    if (rc < 0)
        return rc;
    aev__activate(&w->base, 1);
    /* Armed now as well as in every prepare step: the watcher may be started by a prepare
     * callback after prepare_ would have run in this iteration. */
    w->armed_at_ = INT64_MAX;
    rc = aev__embed_arm(w);
    if (rc < 0) {
        aev_embed_stop(w);
        return rc;
    }
    return 0;
}

int aev_embed_stop(aev_embed *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_EMBED);
    if (rc <= 0)
        return rc;
    aev__embed_release(w, &w->prepare_.base, AEV__EMBED_PREPARE);
    aev__embed_release(w, &w->io_.base, AEV__EMBED_IO);
    aev__embed_release(w, &w->timer_.base, AEV__EMBED_TIMER);
    w->armed_at_ = INT64_MAX;
    /* seq_cst like the other writers of may_sleep: from now on senders stop writing the wakeup
     * fd until the embedded loop is run (or embedded) again, which announces itself anew. */
    atomic_store_explicit(&w->other_->may_sleep, 0, memory_order_seq_cst);
    aev__deactivate(&w->base);
    return 0;
}

int aev_embed_sweep(aev_embed *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_EMBED))
        return -EINVAL;
    return aev_run(w->other_, AEV_RUN_NOWAIT);
}
