/*
 * The epoll(7) backend (Linux), level-triggered.
 *
 * Each registration carries the io layer's generation of the fd next to the fd number, so that
 * events still arriving for an older registration can be recognised and dropped by io.c.
 *
 * Known limits:
 *  - epoll refuses regular files and directories (EPERM). modify() then answers
 *    AEV__ALWAYS_READY and the io layer reports such a fd ready on every iteration, as poll(2)
 *    would.
 *  - epoll watches open file descriptions, not fd numbers: after close(fd), a registration
 *    survives while a dup of the fd keeps the file open, and its events keep arriving under the
 *    old fd number. They carry the old generation, which is how the io layer detects them (and
 *    rebuilds the epoll set via reinit() if they persist).
 *  - Without epoll_pwait2 (kernels before 5.11) timeouts have millisecond resolution; they are
 *    rounded up so that nothing wakes early.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "internal.h"

#ifdef AEV_HAVE_EPOLL

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/*
 * ThreadSanitizer defers a signal that arrives outside a blocking call it knows about and
 * delivers it at its next interceptor. It has no interceptor for epoll_pwait2 (clang 14), so a
 * signal deferred just before that call would wait for the call to return, and a loop whose
 * wakeup depends on that handler would sleep on. Under TSan the intercepted epoll_wait is used.
 */
#if defined(__SANITIZE_THREAD__)
#define AEV__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AEV__TSAN 1
#endif
#endif

/* The events array starts small and doubles after a wait that filled it, up to this size. */
#define EPOLL_EVENTS_MIN 16
#define EPOLL_EVENTS_MAX 4096

#define NSEC_PER_SEC INT64_C(1000000000)
#define NSEC_PER_MSEC INT64_C(1000000)

typedef struct epoll_state {
    int epfd;
    int no_pwait2; /* epoll_pwait2 failed with ENOSYS once: use epoll_wait from now on */
    int cap;
    struct epoll_event *events;
} epoll_state;

static int epoll_init(aev_loop *loop)
{
    epoll_state *st = aev__calloc(1, sizeof(*st));
    if (st == NULL) {
        return -ENOMEM;
    }
    st->events = aev__calloc(EPOLL_EVENTS_MIN, sizeof(*st->events));
    if (st->events == NULL) {
        aev__free(st);
        return -ENOMEM;
    }
    st->cap = EPOLL_EVENTS_MIN;
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (st->epfd < 0) {
        int err = -errno;
        aev__free(st->events);
        aev__free(st);
        return err;
    }
    loop->backend_state = st;
    return 0;
}

static void epoll_destroy(aev_loop *loop)
{
    epoll_state *st = loop->backend_state;
    if (st == NULL) {
        return;
    }
    if (st->epfd >= 0) {
        close(st->epfd);
    }
    aev__free(st->events);
    aev__free(st);
    loop->backend_state = NULL;
}

/* Issues one epoll_ctl; returns 0 or the errno it failed with (positive, for the caller's
 * retry decisions). */
static int epoll_ctl_once(int epfd, int op, int fd, unsigned ev, uint32_t gen)
{
    struct epoll_event e = {0};
    e.events = ((ev & AEV_READ) ? EPOLLIN : 0u) | ((ev & AEV_WRITE) ? EPOLLOUT : 0u) |
               ((ev & AEV__EDGE) ? (uint32_t)EPOLLET : 0u);
    e.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
    return epoll_ctl(epfd, op, fd, &e) == 0 ? 0 : errno;
}

static int epoll_modify(aev_loop *loop, int fd, unsigned old_ev, unsigned new_ev, uint32_t gen)
{
    epoll_state *st = loop->backend_state;

    /* Called for removals only once the fd has shown to be open (defer_remove): still, it may
     * have been closed since (which removed it from the set) or never have been accepted; either
     * way it is not watched any more, which is all that was asked. With old_ev == 0 nothing was
     * handed to the kernel, so there is nothing to remove either. */
    if (new_ev == 0) {
        if (old_ev != 0) {
            epoll_ctl_once(st->epfd, EPOLL_CTL_DEL, fd, 0, gen);
        }
        return 0;
    }
    /* old_ev is what io.c last handed us, but the kernel may disagree: a closed fd silently
     * left the set (MOD gives ENOENT), or a dup'ed fd number is still registered (ADD gives
     * EEXIST). Retrying with the other operation also refreshes the generation. */
    int err;
    if (old_ev == 0) {
        err = epoll_ctl_once(st->epfd, EPOLL_CTL_ADD, fd, new_ev, gen);
        if (err == EEXIST) {
            err = epoll_ctl_once(st->epfd, EPOLL_CTL_MOD, fd, new_ev, gen);
        }
    } else {
        err = epoll_ctl_once(st->epfd, EPOLL_CTL_MOD, fd, new_ev, gen);
        if (err == ENOENT) {
            err = epoll_ctl_once(st->epfd, EPOLL_CTL_ADD, fd, new_ev, gen);
        }
    }
    /* EPERM: the file does not support polling (regular file, directory); the kernel checks
     * this before looking at the operation, so ADD and MOD both report it. */
    if (err == EPERM) {
        return AEV__ALWAYS_READY;
    }
    return -err;
}

/* Rounds a timeout in ns up to whole milliseconds for epoll_wait: a timer must never be woken
 * for early. -1 stays -1 (no limit). */
static int epoll_timeout_ms(int64_t timeout)
{
    if (timeout < 0) {
        return -1;
    }
    int64_t ms = timeout / NSEC_PER_MSEC + (timeout % NSEC_PER_MSEC != 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Waits for events; returns their count or -1 with errno set. */
static int epoll_wait_events(epoll_state *st, int64_t timeout)
{
#if defined(AEV_HAVE_EPOLL_PWAIT2) && !defined(AEV__TSAN)
    /* epoll_pwait2 only for what epoll_wait cannot express exactly, a fraction of a millisecond:
     * it costs some 80 ns more per call here (bench/loop_count), which a loop that polls with
     * timeout 0 every iteration would pay for nothing. */
    if (!st->no_pwait2 && timeout > 0 && timeout % NSEC_PER_MSEC != 0) {
        struct timespec ts = {0};
        if (timeout >= 0) {
            ts.tv_sec = (time_t)(timeout / NSEC_PER_SEC);
            ts.tv_nsec = (long)(timeout % NSEC_PER_SEC);
        }
        int n = epoll_pwait2(st->epfd, st->events, st->cap, timeout >= 0 ? &ts : NULL, NULL);
        /* ENOSYS: the kernel predates 5.11. EPERM is not a documented result of epoll_pwait2;
         * it is what some seccomp profiles answer for system calls they do not know. */
        if (n >= 0 || (errno != ENOSYS && errno != EPERM)) {
            return n;
        }
        st->no_pwait2 = 1;
    }
#endif
    return epoll_wait(st->epfd, st->events, st->cap, epoll_timeout_ms(timeout));
}

/* Translates epoll's bits into AEV_READ/AEV_WRITE. An error or hangup wakes readers and writers
 * both: the io layer keeps only what each watcher asked for, and they learn the cause from their
 * own read() or write(). */
static unsigned epoll_revents(uint32_t ev)
{
    unsigned revents = 0;
    if (ev & EPOLLIN) {
        revents |= AEV_READ;
    }
    if (ev & EPOLLOUT) {
        revents |= AEV_WRITE;
    }
    if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        revents |= AEV_READ | AEV_WRITE;
    }
    return revents;
}

/* A wait that filled the array suggests more fds were ready than it holds; a bigger array lets
 * the next wait collect them in one call. Failing to grow is harmless: the rest come next time. */
static void epoll_grow_events(epoll_state *st)
{
    if (st->cap >= EPOLL_EVENTS_MAX) {
        return;
    }
    int cap = st->cap * 2;
    struct epoll_event *events = aev__realloc(st->events, (size_t)cap * sizeof(*events));
    if (events == NULL) {
        return;
    }
    st->events = events;
    st->cap = cap;
}

/* Out of line: a wait that returns nothing (the common case of a busy loop polling with a zero
 * timeout) then saves no registers for this loop. */
static __attribute__((noinline)) void epoll_dispatch(aev_loop *loop, epoll_state *st, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t data = st->events[i].data.u64;
        int fd = (int)(uint32_t)data;
        uint32_t gen = (uint32_t)(data >> 32);
        aev__io_ready(loop, fd, epoll_revents(st->events[i].events), gen);
    }
    if (n == st->cap) {
        epoll_grow_events(st);
    }
}

static int epoll_poll(aev_loop *loop, int64_t timeout)
{
    epoll_state *st = loop->backend_state;
    int n = epoll_wait_events(st, timeout);
    if (n > 0) {
        epoll_dispatch(loop, st, n);
    } else if (n < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    return 0;
}

/* After fork() the child shares the parent's epoll set: changes made by either would show up
 * in the other. The child gets a set of its own; io.c then registers every fd again. */
static int epoll_reinit(aev_loop *loop)
{
    epoll_state *st = loop->backend_state;
    if (st->epfd >= 0) {
        close(st->epfd);
    }
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    return st->epfd < 0 ? -errno : 0;
}

/* The epoll fd is itself pollable: readable while its ready list is not empty. */
static int epoll_fd(const aev_loop *loop)
{
    const epoll_state *st = loop->backend_state;
    return st ? st->epfd : -1;
}

/* No reserve(): the kernel holds the registrations, modify() needs no memory of its own. */
const aev__backend aev__backend_epoll = {
    .id = AEV_BACKEND_EPOLL,
    .name = "epoll",
    .init = epoll_init,
    .destroy = epoll_destroy,
    .reserve = NULL,
    .modify = epoll_modify,
    .poll = epoll_poll,
    .reinit = epoll_reinit,
    .edge = 1,
    .defer_remove = 1,
    .fd = epoll_fd,
};

#endif /* AEV_HAVE_EPOLL */
