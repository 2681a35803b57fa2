/*
 * The wakeup fd through which other threads and signal handlers interrupt a sleeping loop: an
 * eventfd on Linux (one fd, a counter that never fills), otherwise a non-blocking self-pipe.
 * AEV_FLAG_PIPE_WAKEUP forces the pipe so that both paths can be tested on Linux.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#ifdef AEV_HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

static int aev__pipe(int fds[2])
{
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0 ? -errno : 0;
#else
    if (pipe(fds) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
            int err = -errno;
            close(fds[0]);
            close(fds[1]);
            return err;
        }
    }
    return 0;
#endif
}

static int aev__wakeup_open(aev_loop *loop)
{
#ifdef AEV_HAVE_EVENTFD
    if (!(loop->flags & AEV_FLAG_PIPE_WAKEUP)) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd >= 0) {
            loop->wake_rfd = loop->wake_wfd = fd;
            return 0;
        }
        /* eventfd missing (ENOSYS: a kernel without it, or a seccomp filter) or without these
         * flags (EINVAL): the pipe does the same job. Any other error (out of fds, of memory)
         * would hit the pipe too, and is the kernel's answer to return. */
        if (errno != ENOSYS && errno != EINVAL)
            return -errno;
    }
#endif
    int fds[2];
    int rc = aev__pipe(fds);
    if (rc < 0)
        return rc;
    loop->wake_rfd = fds[0];
    loop->wake_wfd = fds[1];
    return 0;
}

/*
 * AEV_ERROR: the kernel refused to watch the wakeup fd (epoll_ctl's ENOMEM or ENOSPC; the poll
 * and kqueue backends reserve their memory at start and cannot refuse it), so the io layer
 * stopped the watcher. Without it a
 * sleeping loop would never see a wakeup again: start it again, which retries the registration
 * at the next flush. While that keeps failing, the AEV_ERROR queued each time keeps the loop
 * from blocking, so no send waits unseen. The start cannot fail: the fd table covers the fd and
 * the pending queue still has the room the watcher held. Returns 1 if events was that error.
 */
static int aev__wakeup_rearm(aev_watcher *w, unsigned events)
{
    if (!(events & AEV_ERROR))
        return 0;
    (void)aev_io_start((aev_io *)w);
    return 1;
}

/* Empties the fd so that it blocks again; runs on the loop thread. */
static void aev__wakeup_drain(aev_watcher *w, unsigned events)
{
    aev_loop *loop = w->loop_;
    char buf[64];
    if (aev__wakeup_rearm(w, events))
        return;
    /* eventfd: one 8-byte read resets the counter; pipe: read until it is empty (EAGAIN). */
    if (loop->wake_rfd == loop->wake_wfd) {
        ssize_t n = read(loop->wake_rfd, buf, sizeof(uint64_t));
        (void)n;
        return;
    }
    while (read(loop->wake_rfd, buf, sizeof buf) > 0)
        continue;
}

static void aev__wakeup_close(aev_loop *loop)
{
    if (loop->wake_rfd != loop->wake_wfd)
        close(loop->wake_wfd);
    close(loop->wake_rfd);
    loop->wake_rfd = loop->wake_wfd = -1;
}

/* Edge-triggered eventfd: every write is a new edge, so the fd never needs draining and a
 * wakeup costs the loop no read(2). The counter cannot overflow in practice: at most one write
 * per iteration, and it holds 2^64 - 2. */
static void aev__wakeup_edge(aev_watcher *w, unsigned events)
{
    (void)aev__wakeup_rearm(w, events);
}

int aev__wakeup_init(aev_loop *loop)
{
    int rc = aev__wakeup_open(loop);
    if (rc < 0)
        return rc;
    aev_io *w = &loop->wake_io;
    int edge = loop->wake_rfd == loop->wake_wfd && loop->backend->edge;
    aev_io_init(w, loop, edge ? aev__wakeup_edge : aev__wakeup_drain, loop->wake_rfd, AEV_READ);
    if (edge)
        w->events_ |= AEV__EDGE;
    w->base.priority_ = AEV_MAXPRI;
    w->base.flags_ |= AEV__WF_INTERNAL;
    rc = aev_io_start(w);
    if (rc < 0) {
        aev__wakeup_close(loop);
        return rc;
    }
    /* The loop's own watcher must not keep aev_run() alive. */
    loop->refs--;
    return 0;
}

void aev__wakeup_free(aev_loop *loop)
{
    if (loop->wake_rfd < 0)
        return;
    loop->refs++;
    aev_io_stop(&loop->wake_io);
    aev__wakeup_close(loop);
}

int aev__wakeup_reinit(aev_loop *loop)
{
    /* In a fork child the fd is shared with the parent: a send in one would wake the other. */
    aev__wakeup_free(loop);
    return aev__wakeup_init(loop);
}

void aev__wakeup_signal(aev_loop *loop)
{
    int saved = errno;
    /* 8 bytes for eventfd (its counter), any byte for a pipe. A full pipe or a saturated counter
     * means a wakeup is already pending, so EAGAIN is success. */
    static const uint64_t one = 1;
    size_t len = loop->wake_rfd == loop->wake_wfd ? sizeof one : 1;
    /* Retried when interrupted: an unwritten wakeup is lost, the loop would sleep on. */
    ssize_t n;
    do
        n = write(loop->wake_wfd, &one, len);
    while (n < 0 && errno == EINTR);
    errno = saved;
}
