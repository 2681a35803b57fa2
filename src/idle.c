/*
 * Idle watchers: one array per priority, so that the loop can find the highest priority with
 * idle watchers without scanning them all.
 */
#include "internal.h"

#include <errno.h>

int aev_idle_init(aev_idle *w, aev_loop *loop, aev_cb cb)
{
    return aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_IDLE);
}

int aev_idle_start(aev_idle *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_IDLE);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    int i = AEV__PRI_INDEX(w->base.priority_);
    rc = aev__wvec_push(&loop->idles[i], &w->base);
    if (rc < 0)
        return rc;
    loop->idle_mask |= 1u << i;
    return 0;
}

int aev_idle_stop(aev_idle *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_IDLE);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    int i = AEV__PRI_INDEX(w->base.priority_);
    aev__wvec_remove(&loop->idles[i], &w->base);
    if (!loop->idles[i].count)
        loop->idle_mask &= ~(1u << i);
    return 0;
}

/*
 * libev's rule: going down from the highest priority, stop at the first level that has pending
 * events or idle watchers; queue that level's idle watchers only if nothing is pending there.
 * So an idle watcher runs only when nothing of equal or higher priority is pending: in bits, the
 * highest idle level t is queued if no pending bit is at t or above. Two masks instead of a scan
 * of the levels, because a loop with an idle watcher runs this every iteration.
 */
void aev__idle_reify(aev_loop *loop)
{
    unsigned m = loop->idle_mask;
    if (!m)
        return;
    unsigned top = aev__top_bit(m);
    if (loop->pending_mask >> top)
        return;
    const aev__wvec *v = &loop->idles[top];
    for (uint32_t k = 0; k < v->count; k++)
        aev__feed(loop, v->items[k], AEV_IDLE);
}
