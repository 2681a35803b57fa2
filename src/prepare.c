/*
 * Prepare and check watchers: mirror images around the poll call. Prepare callbacks run just
 * before the loop may block (the last chance to add work), check callbacks just after.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static aev__wvec *aev__hooks_of(aev_watcher *w)
{
    return w->type_ == AEV__T_PREPARE ? &w->loop_->prepares : &w->loop_->checks;
}

static int aev__hook_start(aev_watcher *w, int type)
{
    int rc = aev__start_begin(w, type);
    if (rc <= 0)
        return rc;
    return aev__wvec_push(aev__hooks_of(w), w);
}

static int aev__hook_stop(aev_watcher *w, int type)
{
    if (!aev__is(w, type))
        return -EINVAL;
    if (w->pending_)
        aev__unpend(w);
    if (w->active_)
        aev__wvec_remove(aev__hooks_of(w), w);
    return 0;
}

int aev_prepare_init(aev_prepare *w, aev_loop *loop, aev_cb cb)
{
    return aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_PREPARE);
}

int aev_prepare_start(aev_prepare *w)
{
    return aev__hook_start((aev_watcher *)w, AEV__T_PREPARE);
}

int aev_prepare_stop(aev_prepare *w)
{
    return aev__hook_stop((aev_watcher *)w, AEV__T_PREPARE);
}

int aev_check_init(aev_check *w, aev_loop *loop, aev_cb cb)
{
    return aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_CHECK);
}

int aev_check_start(aev_check *w)
{
    return aev__hook_start((aev_watcher *)w, AEV__T_CHECK);
}

int aev_check_stop(aev_check *w)
{
    return aev__hook_stop((aev_watcher *)w, AEV__T_CHECK);
}

static void aev__queue_all(aev_loop *loop, const aev__wvec *v, unsigned events)
{
    for (uint32_t k = 0; k < v->count; k++)
        aev__feed(loop, v->items[k], events);
}

void aev__queue_prepares(aev_loop *loop)
{
    aev__queue_all(loop, &loop->prepares, AEV_PREPARE);
}

void aev__queue_checks(aev_loop *loop)
{
    aev__queue_all(loop, &loop->checks, AEV_CHECK);
}

void aev__hooks_free(aev_loop *loop)
{
    aev__free(loop->prepares.items);
    aev__free(loop->checks.items);
    for (int i = 0; i < AEV__NPRI; i++)
        aev__free(loop->idles[i].items);
}
