/*
 * The poll(2) backend: portable, always compiled.
 *
 * The set is a dense array of struct pollfd plus a map from fd to its slot; a removed fd's slot
 * is filled with the last one, so the array never has holes and poll() sees only watched fds.
 * Both have one entry per fd number below the largest fd reserved, grown when a watcher starts
 * (poll_reserve): the set of distinct fds below that can never be larger, so modify() never
 * needs memory.
 *
 * Known limits:
 *  - Each wait costs O(number of watched fds), in the kernel and in the scan of the results.
 *  - poll() works on fd numbers, not registrations: it cannot carry the io layer's generation
 *    (AEV__GEN_ANY is reported), and a closed fd shows up as POLLNVAL, reported as AEV_ERROR.
 *  - Regular files are reported ready by poll() itself, so AEV__ALWAYS_READY is never needed.
 *  - Where ppoll() is missing (macOS), timeouts have millisecond resolution, rounded up.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

/* ppoll() takes a timespec, so timeouts keep their ns precision. */
#if defined(AEV_HAVE_PPOLL) || defined(__linux__) || defined(__FreeBSD__) ||                       \
    defined(__NetBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)
#define POLL_USE_PPOLL 1
#endif

#define POLL_MIN_CAP 16u

#define NSEC_PER_SEC INT64_C(1000000000)
#ifndef POLL_USE_PPOLL
#define NSEC_PER_MSEC INT64_C(1000000)
#endif

typedef struct poll_state {
    struct pollfd *fds; /* watched fds, dense: [0, count) */
    uint32_t count;
    int *slot;    /* slot[fd]: index into fds, or -1 */
    uint32_t cap; /* entries of fds and of slot: the fd numbers [0, cap) are reserved */
} poll_state;

static int poll_init(aev_loop *loop)
{
    poll_state *st = aev__calloc(1, sizeof(*st));
    if (st == NULL) {
        return -ENOMEM;
    }
    loop->backend_state = st;
    return 0;
}

static void poll_destroy(aev_loop *loop)
{
    poll_state *st = loop->backend_state;
    if (st == NULL) {
        return;
    }
    aev__free(st->fds);
    aev__free(st->slot);
    aev__free(st);
    loop->backend_state = NULL;
}

/* The slot of fd, or -1 if fd is not in the set. */
static int poll_slot_of(const poll_state *st, int fd)
{
    return (uint32_t)fd < st->cap ? st->slot[fd] : -1;
}

/* Sizes the set and the map for the fd numbers up to fd; new map entries are -1. The set grows
 * first: should the map fail to, cap still describes both. Returns 0 or -ENOMEM. */
static int poll_reserve(aev_loop *loop, int fd)
{
    poll_state *st = loop->backend_state;
    uint32_t need = (uint32_t)fd + 1;
    if (need <= st->cap) {
        return 0;
    }
    uint32_t cap = st->cap < POLL_MIN_CAP ? POLL_MIN_CAP : st->cap;
    while (cap < need) {
        cap = cap > UINT32_MAX / 2 ? need : cap * 2;
    }
    struct pollfd *fds = aev__realloc(st->fds, (size_t)cap * sizeof(*fds));
    if (fds == NULL) {
        return -ENOMEM;
    }
    st->fds = fds;
    int *slot = aev__realloc(st->slot, (size_t)cap * sizeof(*slot));
    if (slot == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = st->cap; i < cap; i++) {
        slot[i] = -1;
    }
    st->slot = slot;
    st->cap = cap;
    return 0;
}

/* Appends fd with no events yet and returns its slot. fd was reserved, and the set holds only
 * other fds below cap, so there is room. */
static int poll_append(poll_state *st, int fd)
{
    int i = (int)st->count++;
    st->fds[i] = (struct pollfd){.fd = fd, .events = 0, .revents = 0};
    st->slot[fd] = i;
    return i;
}

/* Removes fd by moving the last entry into its slot. */
static void poll_remove(poll_state *st, int fd)
{
    int i = poll_slot_of(st, fd);
    if (i < 0) {
        return;
    }
    uint32_t last = --st->count;
    if ((uint32_t)i != last) {
        st->fds[i] = st->fds[last];
        st->slot[st->fds[i].fd] = i;
    }
    st->slot[fd] = -1;
}

/* poll() looks the fd number up afresh on every call, so a fd re-set to another file needs
 * nothing more than its events: old_ev and gen are of no use here. */
static int poll_modify(aev_loop *loop, int fd, unsigned old_ev, unsigned new_ev, uint32_t gen)
{
    poll_state *st = loop->backend_state;
    (void)old_ev;
    (void)gen;

    if (new_ev == 0) {
        poll_remove(st, fd);
        return 0;
    }
    int i = poll_slot_of(st, fd);
    if (i < 0) {
        i = poll_append(st, fd);
    }
    st->fds[i].events =
        (short)(((new_ev & AEV_READ) ? POLLIN : 0) | ((new_ev & AEV_WRITE) ? POLLOUT : 0));
    return 0;
}

/* Waits on the first n entries; returns what poll() returns. */
static int poll_wait(poll_state *st, uint32_t n, int64_t timeout)
{
#ifdef POLL_USE_PPOLL
    struct timespec ts = {0};
    if (timeout >= 0) {
        ts.tv_sec = (time_t)(timeout / NSEC_PER_SEC);
        ts.tv_nsec = (long)(timeout % NSEC_PER_SEC);
    }
    return ppoll(st->fds, (nfds_t)n, timeout >= 0 ? &ts : NULL, NULL);
#else
    /* Rounded up: waking before a timer is due would make it look early. */
    int ms = -1;
    if (timeout >= 0) {
        int64_t t = timeout / NSEC_PER_MSEC + (timeout % NSEC_PER_MSEC != 0);
        ms = t > INT_MAX ? INT_MAX : (int)t;
    }
    return poll(st->fds, (nfds_t)n, ms);
#endif
}

/* Translates poll's bits into AEV_READ/AEV_WRITE. An error or hangup wakes readers and writers
 * both: the io layer keeps only what each watcher asked for, and they learn the cause from their
 * own read() or write(). */
static unsigned poll_revents(short re)
{
    unsigned revents = 0;
    if (re & (POLLIN | POLLPRI)) {
        revents |= AEV_READ;
    }
    if (re & POLLOUT) {
        revents |= AEV_WRITE;
    }
    if (re & (POLLERR | POLLHUP)) {
        revents |= AEV_READ | AEV_WRITE;
    }
    return revents;
}

static int poll_poll(aev_loop *loop, int64_t timeout)
{
    poll_state *st = loop->backend_state;
    /* aev__io_ready() only records changes, so the array stays as it is during the scan; the
     * count is still taken once so that the scan covers exactly what poll() filled in. */
    uint32_t n = st->count;
    int ready = poll_wait(st, n, timeout);
    if (ready < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    for (uint32_t i = 0; i < n && ready > 0; i++) {
        short re = st->fds[i].revents;
        if (re == 0) {
            continue;
        }
        ready--;
        /* POLLNVAL: the fd is not open. The io layer fails its watchers and removes it. */
        unsigned revents = (re & POLLNVAL) ? AEV_ERROR : poll_revents(re);
        if (revents != 0) {
            aev__io_ready(loop, st->fds[i].fd, revents, AEV__GEN_ANY);
        }
    }
    return 0;
}

/* poll() keeps no kernel state, so there is nothing to recreate after fork(). */
/* After fork (or a rebuild) the io layer forgets what it registered and registers every watched
 * fd again: the set must start empty too, or a fd whose watchers stopped in between would stay
 * in it for good, ready forever, and the loop would never block again. */
static int poll_reinit(aev_loop *loop)
{
    poll_state *st = loop->backend_state;
    for (uint32_t i = 0; i < st->count; i++)
        st->slot[st->fds[i].fd] = -1;
    st->count = 0;
    return 0;
}

/* poll(2) keeps its set in user space: there is no fd that another loop could watch. */
static int poll_fd(const aev_loop *loop)
{
    (void)loop;
    return -1;
}

/* Removals are not deferred: they are an array edit, and poll(2) would report a closed fd. */
const aev__backend aev__backend_poll = {
    .id = AEV_BACKEND_POLL,
    .name = "poll",
    .init = poll_init,
    .destroy = poll_destroy,
    .reserve = poll_reserve,
    .modify = poll_modify,
    .poll = poll_poll,
    .reinit = poll_reinit,
    .edge = 0,
    .defer_remove = 0,
    .fd = poll_fd,
};
