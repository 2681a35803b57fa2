/*
 * Cleanup watchers: the program's last chance to release what it attached to a loop (close fds,
 * free watcher memory) when the loop is destroyed. They hold no reference on the loop, so they
 * never keep aev_run() going.
 */
#include "internal.h"

#include <errno.h>

int aev_cleanup_init(aev_cleanup *w, aev_loop *loop, aev_cb cb)
{
    return aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_CLEANUP);
}

int aev_cleanup_start(aev_cleanup *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_CLEANUP);
    if (rc <= 0)
        return rc;
    return aev__unref_push(&w->base.loop_->cleanups, &w->base);
}

int aev_cleanup_stop(aev_cleanup *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_CLEANUP);
    if (rc <= 0)
        return rc;
    /* The others keep their order: they run most recently started first. */
    w->base.loop_->refs++;
    aev__wvec_remove_ordered(&w->base.loop_->cleanups, &w->base);
    return 0;
}

/*
 * Calls every active cleanup watcher once, the most recently started first (like atexit), and
 * stops each before its call, so a callback may free its own watcher. Only cleanup callbacks
 * run here: other pending events are dropped with the loop.
 */
void aev__run_cleanups(aev_loop *loop)
{
    while (loop->cleanups.count) {
        aev_watcher *w = loop->cleanups.items[loop->cleanups.count - 1];
        aev__unref_remove(&loop->cleanups, w);
        if (w->pending_)
            aev__unpend(w);
        w->cb_(w, AEV_CLEANUP);
    }
}
