/*
 * Fork detection and fork watchers. Detection needs no system call per iteration: a
 * pthread_atfork() child handler bumps a process-wide generation, and each loop compares it with
 * the generation it was built in. Fork watchers run in the child once the loop has rebuilt its
 * kernel state.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>

static atomic_uint aev__fork_gen;
static pthread_once_t aev__fork_once = PTHREAD_ONCE_INIT;

static void aev__on_fork_child(void)
{
    /* Relaxed: the child has a single thread at this point, and the loop reads the counter on
     * that same thread (or on threads it creates later, after this store). */
    atomic_fetch_add_explicit(&aev__fork_gen, 1, memory_order_relaxed);
}

static void aev__register_atfork(void)
{
    /* If registration fails (ENOMEM) fork is not detected automatically; aev_loop_fork() still
     * works, which is what the documentation promises in that case. */
    (void)pthread_atfork(NULL, NULL, aev__on_fork_child);
}

unsigned aev__fork_generation(void)
{
    /* Relaxed: see aev__on_fork_child; only the thread that forked can observe a change. */
    return atomic_load_explicit(&aev__fork_gen, memory_order_relaxed);
}

/* Every loop is created through here, so the handler is registered before any loop can look
 * for a fork; the iterations then pay a load, not a pthread_once call. */
unsigned aev__fork_register(void)
{
    pthread_once(&aev__fork_once, aev__register_atfork);
    return aev__fork_generation();
}

int aev_fork_init(aev_fork *w, aev_loop *loop, aev_cb cb)
{
    return aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_FORK);
}

int aev_fork_start(aev_fork *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_FORK);
    if (rc <= 0)
        return rc;
    return aev__unref_push(&w->base.loop_->forks, &w->base);
}

int aev_fork_stop(aev_fork *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_FORK);
    if (rc <= 0)
        return rc;
    aev__unref_remove(&w->base.loop_->forks, &w->base);
    return 0;
}

void aev__queue_forks(aev_loop *loop)
{
    for (uint32_t k = 0; k < loop->forks.count; k++)
        aev__feed(loop, loop->forks.items[k], AEV_FORK);
}
