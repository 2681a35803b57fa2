/*
 * Operations common to every watcher type: initialisation, activation bookkeeping, priority,
 * feeding, invoking, and start/stop dispatched on the watcher's type.
 */
#include "internal.h"

#include <errno.h>

int aev__watcher_init(aev_watcher *w, aev_loop *loop, aev_cb cb, int type)
{
    if (!w || !loop || !cb)
        return -EINVAL;
    w->data = NULL;
    w->loop_ = loop;
    w->cb_ = cb;
    w->active_ = 0;
    w->pending_ = 0;
    w->priority_ = 0;
    w->type_ = (uint8_t)type;
    w->flags_ = 0;
    w->errop_ = AEV_ERROP_NONE;
    w->err_ = 0;
    return 0;
}

/* Cheap sanity check against NULL and never-initialised (zeroed) watchers. */
int aev__watcher_valid(const aev_watcher *w)
{
    return w && w->loop_ && w->cb_ && w->type_ > AEV__T_NONE && w->type_ < AEV__T_COUNT;
}

/* True if w is a valid watcher of the given type: typed functions reject the others. */
int aev__is(const aev_watcher *w, int type)
{
    return aev__watcher_valid(w) && w->type_ == type;
}

/* The common head of every typed start: -EINVAL for a watcher that is not of this type, 0 if it
 * is active already (start is then a no-op), 1 if the type's own start must follow. */
int aev__start_begin(aev_watcher *w, int type)
{
    if (!aev__is(w, type))
        return -EINVAL;
    if (w->active_)
        return 0;
    int rc = aev__pending_reserve(w);
    return rc < 0 ? rc : 1;
}

/* The common head of every typed stop: -EINVAL for a watcher that is not of this type;
 * otherwise its pending event is dropped, and 1 says the type's own stop must follow (the
 * watcher is active), 0 that nothing more is to be done. */
int aev__stop_begin(aev_watcher *w, int type)
{
    if (!aev__is(w, type))
        return -EINVAL;
    if (w->pending_)
        aev__unpend(w);
    return w->active_ ? 1 : 0;
}

/* Marks w active; every active watcher holds one reference on its loop. The caller reserved
 * its pending slot first (aev__start_begin does). */
void aev__activate(aev_watcher *w, int32_t active)
{
    if (!w->pending_)
        w->loop_->pending[AEV__PRI_INDEX(w->priority_)].held++;
    w->active_ = active;
    w->err_ = 0;
    w->errop_ = AEV_ERROP_NONE;
    w->loop_->refs++;
}

void aev__deactivate(aev_watcher *w)
{
    if (!w->pending_)
        w->loop_->pending[AEV__PRI_INDEX(w->priority_)].held--;
    w->active_ = 0;
    w->loop_->refs--;
}

/* Records why w failed; the caller stops it and feeds AEV_ERROR. */
void aev__fail(aev_watcher *w, int err, aev_errop op)
{
    w->err_ = err;
    w->errop_ = (uint8_t)op;
}

int aev_start(aev_watcher *w)
{
    if (!aev__watcher_valid(w))
        return -EINVAL;
    switch (w->type_) {
    case AEV__T_IO:
        return aev_io_start((aev_io *)w);
    case AEV__T_TIMER:
        return aev_timer_start((aev_timer *)w);
    case AEV__T_IDLE:
        return aev_idle_start((aev_idle *)w);
    case AEV__T_PREPARE:
        return aev_prepare_start((aev_prepare *)w);
    case AEV__T_CHECK:
        return aev_check_start((aev_check *)w);
    case AEV__T_FORK:
        return aev_fork_start((aev_fork *)w);
    case AEV__T_CLEANUP:
        return aev_cleanup_start((aev_cleanup *)w);
    case AEV__T_ASYNC:
        return aev_async_start((aev_async *)w);
    case AEV__T_SIGNAL:
        return aev_signal_start((aev_signal *)w);
    case AEV__T_PERIODIC:
        return aev_periodic_start((aev_periodic *)w);
    case AEV__T_CHILD:
        return aev_child_start((aev_child *)w);
    case AEV__T_STAT:
        return aev_stat_start((aev_stat *)w);
    case AEV__T_EMBED:
        return aev_embed_start((aev_embed *)w);
    default:
        return -EINVAL;
    }
}

int aev_stop(aev_watcher *w)
{
    if (!aev__watcher_valid(w))
        return -EINVAL;
    switch (w->type_) {
    case AEV__T_IO:
        return aev_io_stop((aev_io *)w);
    case AEV__T_TIMER:
        return aev_timer_stop((aev_timer *)w);
    case AEV__T_IDLE:
        return aev_idle_stop((aev_idle *)w);
    case AEV__T_PREPARE:
        return aev_prepare_stop((aev_prepare *)w);
    case AEV__T_CHECK:
        return aev_check_stop((aev_check *)w);
    case AEV__T_FORK:
        return aev_fork_stop((aev_fork *)w);
    case AEV__T_CLEANUP:
        return aev_cleanup_stop((aev_cleanup *)w);
    case AEV__T_ASYNC:
        return aev_async_stop((aev_async *)w);
    case AEV__T_SIGNAL:
        return aev_signal_stop((aev_signal *)w);
    case AEV__T_PERIODIC:
        return aev_periodic_stop((aev_periodic *)w);
    case AEV__T_CHILD:
        return aev_child_stop((aev_child *)w);
    case AEV__T_STAT:
        return aev_stat_stop((aev_stat *)w);
    case AEV__T_EMBED:
        return aev_embed_stop((aev_embed *)w);
    default:
        return -EINVAL;
    }
}

bool aev_is_active(const aev_watcher *w)
{
    return w && w->active_ != 0;
}

bool aev_is_pending(const aev_watcher *w)
{
    return w && w->pending_ != 0;
}

aev_loop *aev_watcher_loop(const aev_watcher *w)
{
    return w ? w->loop_ : NULL;
}

int aev_set_priority(aev_watcher *w, int priority)
{
    if (!aev__watcher_valid(w) || priority < AEV_MINPRI || priority > AEV_MAXPRI)
        return -EINVAL;
    /* The priority selects the queue a pending watcher sits in and, for idle watchers, the
     * array it is active in: changing it underneath either would corrupt them. */
    if (w->active_ || w->pending_)
        return -EBUSY;
    w->priority_ = (int8_t)priority;
    return 0;
}

int aev_priority(const aev_watcher *w)
{
    return w ? w->priority_ : 0;
}

int aev_invoke(aev_watcher *w, unsigned events)
{
    if (!aev__watcher_valid(w))
        return -EINVAL;
    w->cb_(w, events);
    return 0;
}

int aev_feed_event(aev_watcher *w, unsigned events)
{
    if (!aev__watcher_valid(w) || events == 0)
        return -EINVAL;
    return aev__feed(w->loop_, w, events);
}

unsigned aev_clear_pending(aev_watcher *w)
{
    if (!w || !w->pending_)
        return 0;
    return aev__unpend(w);
}

int aev_watcher_error(const aev_watcher *w, aev_errop *op)
{
    if (op)
        *op = w ? (aev_errop)w->errop_ : AEV_ERROP_NONE;
    return w ? w->err_ : -EINVAL;
}
