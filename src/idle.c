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
    rc = aev__wvec_push(&loop->idles[AEV__PRI_INDEX(w->base.priority_)], &w->base);
    if (rc < 0)
        return rc;
    loop->idle_count++;
    return 0;
}

int aev_idle_stop(aev_idle *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_IDLE);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    aev__wvec_remove(&loop->idles[AEV__PRI_INDEX(w->base.priority_)], &w->base);
    loop->idle_count--;
    return 0;
}

/*
 * libev's rule: going down from the highest priority, stop at the first level that has pending
 * events or idle watchers; queue that level's idle watchers only if nothing is pending there.
 * So an idle watcher runs only when nothing of equal or higher priority is pending.
 */
void aev__idle_reify(aev_loop *loop)
{
    if (!loop->idle_count)
        return;
    for (int i = AEV__NPRI - 1; i >= 0; i--) {
        if (loop->pending[i].live)
            return;
        aev__wvec *v = &loop->idles[i];
        if (!v->count)
            continue;
        for (uint32_t k = 0; k < v->count; k++)
            aev__feed(loop, v->items[k], AEV_IDLE);
        return;
    }
}
