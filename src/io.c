/*
 * io watchers and the per-fd bookkeeping behind them. Starting and stopping only records the fd
 * in a change list; aev__io_flush() hands the backend the difference between what the watchers
 * want and what the kernel has, once per iteration, just before polling. So a watcher started
 * and stopped within one iteration costs no system call.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define AEV__IO_EVENTS (AEV_READ | AEV_WRITE)

/* Grows the fd table (and the two fd lists sized like it) to cover fd. */
static int aev__fd_reserve(aev_loop *loop, int fd)
{
    uint32_t need = (uint32_t)fd + 1;
    if (need <= loop->nfds)
        return 0;
    uint32_t n = loop->nfds ? loop->nfds : 16;
    while (n < need)
        n *= 2;
    aev__fd *fds = aev__realloc(loop->fds, n * sizeof *fds);
    if (!fds)
        return -ENOMEM;
    loop->fds = fds;
    memset(fds + loop->nfds, 0, (n - loop->nfds) * sizeof *fds);
    int *changes = aev__realloc(loop->changes, n * sizeof *changes);
    if (!changes)
        return -ENOMEM;
    loop->changes = changes;
    int *always = aev__realloc(loop->always_ready, n * sizeof *always);
    if (!always)
        return -ENOMEM;
    loop->always_ready = always;
    loop->nfds = n;
    return 0;
}

static void aev__fd_change(aev_loop *loop, int fd)
{
    aev__fd *e = &loop->fds[fd];
    if (e->flags & AEV__FD_CHANGED)
        return;
    e->flags |= AEV__FD_CHANGED;
    loop->changes[loop->nchanges++] = fd;
}

static int aev__io_args_ok(int fd, unsigned events)
{
    return fd >= 0 && events != 0 && (events & ~AEV__IO_EVENTS) == 0;
}

int aev_io_init(aev_io *w, aev_loop *loop, aev_cb cb, int fd, unsigned events)
{
    if (!aev__io_args_ok(fd, events))
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_IO);
    if (rc < 0)
        return rc;
    w->next_ = NULL;
    w->fd_ = fd;
    w->events_ = events;
    w->base.flags_ |= AEV__WF_FDSET;
    return 0;
}

int aev_io_set(aev_io *w, int fd, unsigned events)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_IO) || !aev__io_args_ok(fd, events))
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->fd_ = fd;
    w->events_ = events;
    /* The number may now name another file than before: renew its registration on start. */
    w->base.flags_ |= AEV__WF_FDSET;
    return 0;
}

int aev_io_start(aev_io *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_IO);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    rc = aev__fd_reserve(loop, w->fd_);
    if (rc < 0)
        return rc;
    /* The backend's memory for the fd too: the flush that registers it must not be able to fail
     * for lack of memory, which would reach a watcher that started fine as AEV_ERROR. */
    if (loop->backend->reserve) {
        rc = loop->backend->reserve(loop, w->fd_);
        if (rc < 0)
            return rc;
    }
    aev__fd *e = &loop->fds[w->fd_];
    /* Append, so that watchers of one fd are called in start order. */
    aev_io **link = &e->head;
    while (*link)
        link = &(*link)->next_;
    *link = w;
    w->next_ = NULL;
    if (w->base.flags_ & AEV__WF_FDSET) {
        e->flags |= AEV__FD_FRESH;
        w->base.flags_ &= (uint8_t)~AEV__WF_FDSET;
    }
    aev__fd_change(loop, w->fd_);
    aev__activate(&w->base, 1);
    return 0;
}

int aev_io_stop(aev_io *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_IO);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    aev_io **link = &loop->fds[w->fd_].head;
    while (*link != w)
        link = &(*link)->next_;
    *link = w->next_;
    w->next_ = NULL;
    aev__fd_change(loop, w->fd_);
    aev__deactivate(&w->base);
    return 0;
}

int aev_io_fd(const aev_io *w)
{
    return w ? w->fd_ : -EINVAL;
}

unsigned aev_io_events(const aev_io *w)
{
    return w ? w->events_ : 0;
}

/* Stops every watcher of fd and hands each an AEV_ERROR event carrying err. The stops record
 * a change, so the next sync removes whatever the backend still holds for the fd (e.g. poll(2)
 * would otherwise keep reporting POLLNVAL for it). */
static void aev__fd_fail(aev_loop *loop, int fd, int err, aev_errop op)
{
    aev__fd *e = &loop->fds[fd];
    while (e->head) {
        aev_io *w = e->head;
        aev_io_stop(w);
        aev__fail(&w->base, err, op);
        aev__feed(loop, &w->base, AEV_ERROR);
    }
}

static unsigned aev__fd_wanted(const aev__fd *e)
{
    unsigned wanted = 0;
    for (const aev_io *w = e->head; w; w = w->next_)
        wanted |= w->events_;
    return wanted;
}

/* AEV__GEN_ANY is reserved for backends that cannot carry a generation: skip it. */
static void aev__fd_next_gen(aev__fd *e)
{
    if (++e->gen == AEV__GEN_ANY)
        e->gen = 0;
}

static void aev__always_add(aev_loop *loop, int fd)
{
    loop->fds[fd].flags |= AEV__FD_ALWAYS_READY;
    loop->always_ready[loop->nalways++] = fd;
}

static void aev__always_remove(aev_loop *loop, int fd)
{
    loop->fds[fd].flags &= (uint8_t)~AEV__FD_ALWAYS_READY;
    for (uint32_t i = 0; i < loop->nalways; i++) {
        if (loop->always_ready[i] == fd) {
            loop->always_ready[i] = loop->always_ready[--loop->nalways];
            return;
        }
    }
}

/* A fd nobody watches any more, on a backend that defers removals (see defer_remove in
 * backend.h): leave the registration to close(). Returns 1 if nothing more is to be done. */
static int aev__fd_defer_removal(aev_loop *loop, aev__fd *e)
{
    if (!loop->backend->defer_remove || e->kernel == 0)
        return 0;
    e->kernel = 0;
    e->flags |= AEV__FD_LINGER;
    return 1;
}

/* Removes whatever the kernel may hold for fd: a lingering registration once it proved the fd
 * open (an event) or before a watcher registers the fd again (a kqueue knote of the other filter
 * would otherwise stay), or what a refused change left. */
static void aev__fd_drop(aev_loop *loop, int fd)
{
    aev__fd *e = &loop->fds[fd];
    /* Removing never fails (backend.h); the old events may be unknown, so name them all. */
    loop->backend->modify(loop, fd, AEV_READ | AEV_WRITE, 0, e->gen);
    e->kernel = 0;
    e->flags &= (uint8_t)~AEV__FD_LINGER;
}

/* Brings the backend's view of one fd up to date with its watchers. */
static void aev__fd_sync(aev_loop *loop, int fd)
{
    aev__fd *e = &loop->fds[fd];
    unsigned wanted = aev__fd_wanted(e);
    int fresh = e->flags & AEV__FD_FRESH;
    int drop = e->flags & AEV__FD_DROP;
    e->flags &= (uint8_t) ~(AEV__FD_CHANGED | AEV__FD_FRESH | AEV__FD_DROP);
    if (e->flags & AEV__FD_ALWAYS_READY) {
        /* Keep emulating readiness unless the fd is gone or may now be another file. */
        if (wanted && !fresh)
            return;
        aev__always_remove(loop, fd);
    }
    if (drop || (wanted && (e->flags & AEV__FD_LINGER)))
        aev__fd_drop(loop, fd);
    else if (!wanted && aev__fd_defer_removal(loop, e))
        return;
    /* Nothing to renew for a fd nobody wants and the backend does not hold. */
    if (wanted == e->kernel && (!fresh || !wanted))
        return;
    if (fresh)
        aev__fd_next_gen(e);
    int rc = loop->backend->modify(loop, fd, e->kernel, wanted, e->gen);
    if (rc == AEV__ALWAYS_READY) {
        e->kernel = 0;
        aev__always_add(loop, fd);
        return;
    }
    if (rc < 0) {
        /* The change list has one slot per fd and this fd's was used up in this flush: keep the
         * stops from listing it again, then drop whatever the backend still holds for it, now:
         * the kernel has just answered for the fd, no callback can have closed it since, and an
         * old registration left in place would report under an outdated generation. */
        e->flags |= AEV__FD_CHANGED;
        aev__fd_fail(loop, fd, rc, AEV_ERROP_WATCH);
        e->flags &= (uint8_t)~AEV__FD_CHANGED;
        if (e->kernel)
            e->flags |= AEV__FD_DROP;
        aev__fd_sync(loop, fd);
        return;
    }
    e->kernel = (uint8_t)wanted;
}

void aev__io_flush(aev_loop *loop)
{
    for (uint32_t i = 0; i < loop->nchanges; i++)
        aev__fd_sync(loop, loop->changes[i]);
    loop->nchanges = 0;
}

/* Events nobody asked for. From a registration left to close() (aev__fd_defer_removal): the fd
 * is still open, and removing the registration is all it takes. Otherwise the kernel holds one we
 * could not remove (a closed fd whose file lives on through a dup) or one of an earlier file:
 * renew it once; if that does not help, rebuild the backend from scratch, the only way to drop
 * such a registration. */
static void aev__fd_unwanted(aev_loop *loop, aev__fd *e, int fd)
{
    if ((e->flags & AEV__FD_LINGER) && !e->head) {
        e->flags |= AEV__FD_DROP;
        aev__fd_change(loop, fd);
        return;
    }
    if (e->stale++ == 0) {
        e->flags |= AEV__FD_FRESH;
        aev__fd_change(loop, fd);
        return;
    }
    loop->rebuild = 1;
}

void aev__io_ready(aev_loop *loop, int fd, unsigned revents, uint32_t gen)
{
    if (fd < 0 || (uint32_t)fd >= loop->nfds)
        return;
    aev__fd *e = &loop->fds[fd];
    if (revents & AEV_ERROR) {
        aev__fd_fail(loop, fd, -EBADF, AEV_ERROP_POLL);
        return;
    }
    if (gen != AEV__GEN_ANY && gen != e->gen) {
        loop->rebuild = 1;
        return;
    }
    int delivered = 0;
    for (aev_io *w = e->head; w; w = w->next_) {
        if (w->events_ & revents) {
            aev__feed(loop, &w->base, w->events_ & revents);
            delivered = 1;
        }
    }
    if (!delivered) {
        aev__fd_unwanted(loop, e, fd);
        return;
    }
    e->stale = 0;
}

void aev__io_gather(aev_loop *loop, int fd, unsigned revents, uint32_t gen)
{
    if (fd < 0 || (uint32_t)fd >= loop->nfds)
        return;
    aev__fd *e = &loop->fds[fd];
    if (gen != AEV__GEN_ANY && gen != e->gen) {
        aev__io_ready(loop, fd, revents, gen); /* a stale registration: handled as ever */
        return;
    }
    e->gathered |= (uint8_t)revents;
}

void aev__io_deliver(aev_loop *loop, int fd)
{
    if (fd < 0 || (uint32_t)fd >= loop->nfds || !loop->fds[fd].gathered)
        return;
    aev__fd *e = &loop->fds[fd];
    unsigned revents = e->gathered;
    e->gathered = 0;
    aev__io_ready(loop, fd, revents, e->gen);
}

/* A registration the backend accepted earlier was refused after all: kqueue reports a failed
 * change with the wait that submitted it, not when modify() queued it. The fd's watchers fail as
 * if modify() had refused it. The kernel holds nothing for the refused events, so nothing is
 * recorded: a watcher started again on the fd is submitted again, and refused again (a closed
 * fd reports AEV_ERROR each time). Should part of it have been accepted after all, the unwanted
 * events it brings are renewed away like any stale registration. */
void aev__io_error(aev_loop *loop, int fd, int err)
{
    if (fd < 0 || (uint32_t)fd >= loop->nfds)
        return;
    loop->fds[fd].kernel = 0;
    aev__fd_fail(loop, fd, err, AEV_ERROP_WATCH);
}

void aev__io_feed_always_ready(aev_loop *loop)
{
    for (uint32_t i = 0; i < loop->nalways; i++) {
        for (aev_io *w = loop->fds[loop->always_ready[i]].head; w; w = w->next_)
            aev__feed(loop, &w->base, w->events_);
    }
}

/* After the backend was recreated: every watched fd must be registered anew. */
void aev__io_resubmit_all(aev_loop *loop)
{
    loop->nchanges = 0;
    loop->nalways = 0;
    for (uint32_t fd = 0; fd < loop->nfds; fd++) {
        aev__fd *e = &loop->fds[fd];
        e->kernel = 0;
        e->stale = 0;
        e->flags = 0;
        if (e->head) {
            e->flags |= AEV__FD_FRESH;
            aev__fd_change(loop, (int)fd);
        }
    }
}

void aev__io_free(aev_loop *loop)
{
    aev__free(loop->fds);
    aev__free(loop->changes);
    aev__free(loop->always_ready);
}
