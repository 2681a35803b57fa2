/*
 * The kqueue(2) backend (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS), level-triggered.
 *
 * modify() only queues changes in a changelist; the next poll() hands the whole list to the
 * kernel in the kevent() call that waits, so starting and stopping watchers costs no system call
 * of its own. The array holding the changes is also that call's eventlist, which kqueue(2) allows
 * ("The same array may be used for the changelist and eventlist"): there is always room for one
 * error entry per change, so a refused change is reported as an EV_ERROR entry, never as a
 * failure of the whole call.
 *
 * The changelist holds at most one change per knote: a later change of a knote replaces the one
 * queued, which is what the kernel would have ended with. So it never holds more than two
 * changes per fd number, however often the io layer hands changes over before a wait (it does
 * so before every poll of an outer loop that does not sweep this one), and reserve() keeps the
 * array that large for every fd number up to the largest fd started: modify() needs no memory.
 *
 * Each interest is a knote identified by (fd, filter): EVFILT_READ for AEV_READ, EVFILT_WRITE for
 * AEV_WRITE. An added knote's udata carries the io layer's generation of the fd, so that events of
 * an older registration are recognised; a deletion carries KQ_UDATA_DELETE instead, because an
 * error entry keeps only ident, filter and udata of its change (FreeBSD and OpenBSD overwrite its
 * flags with EV_ERROR).
 *
 * Known limits and choices:
 *  - close() removes the fd's knotes (kqueue(2)), so a fd closed before its watchers stopped is
 *    forgotten silently, as under epoll; the deletions sent afterwards fail with EBADF or ENOENT,
 *    which is ignored. Knotes belong to fd numbers, not files: a dup'ed fd has its own.
 *  - Regular files and directories: EVFILT_READ fires only while the file offset is before the
 *    end of the file, unlike poll(2), and EVFILT_WRITE is documented as unsupported for them.
 *    Whenever an interest is added or renewed, modify() fstat()s the fd and answers
 *    AEV__ALWAYS_READY for these, so the io layer reports them ready like poll(2) does. That is
 *    one fstat() per added interest; removals and unchanged interests cost nothing.
 *  - Changes are refused asynchronously: their EV_ERROR entries come back from the next wait and
 *    fail the fd's watchers through aev__io_error(). A kevent() call that returns error entries
 *    has neither waited nor collected events (FreeBSD, OpenBSD, DragonFly), so poll() then calls
 *    it once more without changes.
 *  - A kqueue is not inherited by a fork() child: reinit() opens a new one and drops the
 *    changelist (the io layer re-adds every fd). The old descriptor is closed only by the process
 *    that opened it: in a child the number is free (FreeBSD does not copy it) or may by now belong
 *    to another file.
 *  - EV_EOF needs no translation: a filter at EOF is ready and reported as its own event, READ for
 *    a reader at end of file, WRITE for a writer whose reader left. (Reporting READ|WRITE for
 *    either, as the other backends do for hang-ups, would wake the writer of a half-closed socket
 *    with a full buffer on every iteration.)
 *  - Timeouts are timespecs (ns), capped at one day per wait (FreeBSD caps them silently too).
 *  - macOS's kqueue fails for some descriptor types (ttys, /dev/null and other devices on many
 *    releases). AEV_BACKEND_AUTO picks poll on macOS for that reason; see docs/backends.md.
 */
#include "internal.h"

#ifdef AEV_HAVE_KQUEUE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The array starts small and doubles after a wait that filled it, up to this size; it is also
 * kept at two entries per reserved fd number, the room of the changelist. */
#define KQ_EVENTS_MIN 32
#define KQ_EVENTS_MAX 4096

#define KQ_MAX_WAIT_SEC (24 * 60 * 60)
#define NSEC_PER_SEC INT64_C(1000000000)

/* udata of a deletion: the io layer never hands out this generation. */
#define KQ_UDATA_DELETE AEV__GEN_ANY

typedef struct kq_state {
    int kq;
    pid_t pid;          /* the process that opened kq: the only one that may close it */
    int nchanges;       /* kev[0, nchanges): changes not yet submitted */
    int cap;            /* size of kev, at least 2 * nfds */
    struct kevent *kev; /* the changelist, and the eventlist of the call that submits it */
    int *queued;        /* queued[2 * fd + k]: the index in kev of the change of the knote of fd
                           and filter k (0 read, 1 write), or -1 */
    int nfds;           /* the fd numbers [0, nfds) are reserved: queued covers them */
} kq_state;

/* What one batch of kevent() results contained. */
typedef struct kq_outcome {
    int errors; /* EV_ERROR entries, ignored ones included */
    int failed; /* fds whose watchers were failed */
    int events; /* readiness events */
} kq_outcome;

static int kq_open(kq_state *st)
{
    int kq = kqueue();
    if (kq < 0) {
        return -errno;
    }
    /* kqueue() takes no close-on-exec flag on every system (kqueuex and kqueue1 are recent). */
    if (fcntl(kq, F_SETFD, FD_CLOEXEC) < 0) {
        int err = -errno;
        close(kq);
        return err;
    }
    st->kq = kq;
    st->pid = getpid();
    return 0;
}

static void kq_close(kq_state *st)
{
    if (st->kq >= 0 && st->pid == getpid()) {
        close(st->kq);
    }
    st->kq = -1;
}

static int kq_init(aev_loop *loop)
{
    kq_state *st = aev__calloc(1, sizeof(*st));
    if (st == NULL) {
        return -ENOMEM;
    }
    st->kev = aev__calloc(KQ_EVENTS_MIN, sizeof(*st->kev));
    if (st->kev == NULL) {
        aev__free(st);
        return -ENOMEM;
    }
    st->cap = KQ_EVENTS_MIN;
    int rc = kq_open(st);
    if (rc < 0) {
        aev__free(st->kev);
        aev__free(st);
        return rc;
    }
    loop->backend_state = st;
    return 0;
}

static void kq_destroy(aev_loop *loop)
{
    kq_state *st = loop->backend_state;
    if (st == NULL) {
        return;
    }
    kq_close(st);
    aev__free(st->kev);
    aev__free(st->queued);
    aev__free(st);
    loop->backend_state = NULL;
}

/* Resizes the array to hold cap entries; 0 or -ENOMEM (the array is then unchanged). */
static int kq_resize(kq_state *st, int cap)
{
    struct kevent *kev = aev__realloc(st->kev, (size_t)cap * sizeof(*kev));
    if (kev == NULL) {
        return -ENOMEM;
    }
    st->kev = kev;
    st->cap = cap;
    return 0;
}

/* Room in the changelist for the fd numbers up to fd: two changes each (see the top of the file).
 * The array grows first: should the map fail to, nfds still describes both. 0 or -ENOMEM. */
static int kq_reserve(aev_loop *loop, int fd)
{
    kq_state *st = loop->backend_state;
    if (fd < st->nfds) {
        return 0;
    }
    int n = st->nfds ? st->nfds : KQ_EVENTS_MIN / 2;
    while (n <= fd) {
        if (n > INT_MAX / 4) {
            return -ENOMEM;
        }
        n *= 2;
    }
    if (st->cap < 2 * n && kq_resize(st, 2 * n) < 0) {
        return -ENOMEM;
    }
    int *queued = aev__realloc(st->queued, (size_t)n * 2 * sizeof(*queued));
    if (queued == NULL) {
        return -ENOMEM;
    }
    for (int i = 2 * st->nfds; i < 2 * n; i++) {
        queued[i] = -1;
    }
    st->queued = queued;
    st->nfds = n;
    return 0;
}

static const struct {
    unsigned ev;
    short filter;
} kq_filters[] = {{AEV_READ, EVFILT_READ}, {AEV_WRITE, EVFILT_WRITE}};

/* Queues action for each filter in ev, in place of a change of that knote already queued. fd
 * was reserved, so there is room. */
static void kq_queue(kq_state *st, int fd, unsigned ev, unsigned short action, uint32_t udata)
{
    for (int k = 0; k < 2; k++) {
        if (!(ev & kq_filters[k].ev)) {
            continue;
        }
        int *q = &st->queued[2 * fd + k];
        if (*q < 0) {
            *q = st->nchanges++;
        }
        EV_SET(&st->kev[*q], (uintptr_t)fd, kq_filters[k].filter, action, 0, 0,
               (void *)(uintptr_t)udata);
    }
}

/* Empties the changelist: before it is submitted (kevent() overwrites the array with results),
 * and when the kqueue it was meant for is gone. */
static void kq_unqueue_all(kq_state *st)
{
    for (int i = 0; i < st->nchanges; i++) {
        const struct kevent *ch = &st->kev[i];
        st->queued[2 * (int)ch->ident + (ch->filter == EVFILT_WRITE)] = -1;
    }
    st->nchanges = 0;
}

/* Removes the knotes of ev. A knote that close() removed already gives an error entry, which
 * KQ_UDATA_DELETE makes kq_dispatch() ignore. */
static void kq_delete(kq_state *st, int fd, unsigned ev)
{
    kq_queue(st, fd, ev, EV_DELETE, KQ_UDATA_DELETE);
}

/* A regular file or directory, which kqueue does not report ready the way poll(2) does. A failed
 * fstat() (a closed fd) decides nothing: the kernel refuses the change with the same error. */
static int kq_is_file(int fd)
{
    struct stat sb;
    return fstat(fd, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode));
}

static int kq_modify(aev_loop *loop, int fd, unsigned old_ev, unsigned new_ev, uint32_t gen)
{
    kq_state *st = loop->backend_state;
    /* Level-triggered only: other bits (AEV__EDGE) are ignored, as the interface asks. */
    old_ev &= AEV_READ | AEV_WRITE;
    new_ev &= AEV_READ | AEV_WRITE;

    if (new_ev == 0) {
        kq_delete(st, fd, old_ev);
        return 0;
    }
    /* An added interest, or a renewal (the fd may now be another file), is the moment to ask
     * what the fd is. The io layer holds nothing for it in the kernel after AEV__ALWAYS_READY. */
    if ((old_ev == new_ev || (new_ev & ~old_ev) != 0) && kq_is_file(fd)) {
        kq_delete(st, fd, old_ev);
        return AEV__ALWAYS_READY;
    }
    kq_delete(st, fd, old_ev & ~new_ev);
    /* Interests kept are added again: re-adding updates udata, which is how a renewal gets the
     * new generation, and costs nothing but an entry in the batch. */
    kq_queue(st, fd, new_ev, EV_ADD, gen);
    return 0;
}

/* Hands the results to the io layer and counts what was seen. READ and WRITE of one fd come
 * as two results, in no particular order: they are gathered first and delivered once per fd,
 * so that the fd's watchers are called in start order, as with epoll and poll. */
static void kq_dispatch(aev_loop *loop, const kq_state *st, int n, kq_outcome *out)
{
    for (int i = 0; i < n; i++) {
        const struct kevent *ev = &st->kev[i];
        int fd = (int)ev->ident;
        uint32_t tag = (uint32_t)(uintptr_t)ev->udata;
        if (ev->flags & EV_ERROR) {
            out->errors++;
            /* data 0 is a receipt, not an error. A deletion fails when close() has removed the
             * knote already (EBADF, or ENOENT once the number is reused): nothing was lost. */
            if (ev->data == 0 || tag == KQ_UDATA_DELETE) {
                continue;
            }
            aev__io_error(loop, fd, -(int)ev->data);
            out->failed++;
            continue;
        }
        out->events++;
        aev__io_gather(loop, fd, ev->filter == EVFILT_WRITE ? AEV_WRITE : AEV_READ, tag);
    }
    for (int i = 0; i < n; i++) {
        if (!(st->kev[i].flags & EV_ERROR))
            aev__io_deliver(loop, (int)st->kev[i].ident);
    }
}

/* The timespec for a timeout in ns, or NULL for none (-1). */
static const struct timespec *kq_timespec(int64_t timeout, struct timespec *ts)
{
    if (timeout < 0) {
        return NULL;
    }
    int64_t sec = timeout / NSEC_PER_SEC;
    if (sec >= KQ_MAX_WAIT_SEC) {
        ts->tv_sec = KQ_MAX_WAIT_SEC;
        ts->tv_nsec = 0;
        return ts;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)(timeout % NSEC_PER_SEC);
    return ts;
}

/* A wait that filled the array suggests more was ready than it holds: grow it for next time.
 * Failing to grow is harmless, the rest comes with the next wait. */
static void kq_grow_events(kq_state *st)
{
    if (st->cap < KQ_EVENTS_MAX) {
        (void)kq_resize(st, st->cap * 2);
    }
}

static int kq_poll(aev_loop *loop, int64_t timeout)
{
    kq_state *st = loop->backend_state;
    struct timespec ts;
    const struct timespec *tsp = kq_timespec(timeout, &ts);

    int nchanges = st->nchanges;
    /* Emptied first: the call overwrites the changes with its results. kqueue(2): "When kevent
     * call fails with EINTR error, all changes in the changelist have been applied"; any other
     * failure leaves the loop unusable anyway. */
    kq_unqueue_all(st);
    int n = kevent(st->kq, st->kev, nchanges, st->kev, st->cap, tsp);
    if (n < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    kq_outcome out = {0, 0, 0};
    kq_dispatch(loop, st, n, &out);
    if (out.errors > 0) {
        /* The kernel returned the error entries without waiting or collecting events. Collect
         * them now: without waiting if watchers failed (they are pending) or events came along
         * (macOS may return both), else for as long as the loop asked. */
        static const struct timespec zero = {0, 0};
        n = kevent(st->kq, NULL, 0, st->kev, st->cap, (out.failed || out.events) ? &zero : tsp);
        if (n < 0) {
            return errno == EINTR ? 0 : -errno;
        }
        kq_dispatch(loop, st, n, &out);
    }
    if (n == st->cap) {
        kq_grow_events(st);
    }
    return 0;
}

/* After fork() (or to drop every registration at once): a new, empty kqueue. */
static int kq_reinit(aev_loop *loop)
{
    kq_state *st = loop->backend_state;
    kq_close(st);
    kq_unqueue_all(st);
    return kq_open(st);
}

/* A kqueue fd is readable while events are pending on it: another loop can embed this one. */
static int kq_fd(const aev_loop *loop)
{
    const kq_state *st = loop->backend_state;
    return st ? st->kq : -1;
}

/* Removals are deferred although they would ride along with the next kevent() at no extra
 * cost: close() removes a number's knotes, and an EV_DELETE submitted after the close would name
 * a number that may be another thread's file by then. */
const aev__backend aev__backend_kqueue = {
    .id = AEV_BACKEND_KQUEUE,
    .name = "kqueue",
    .init = kq_init,
    .destroy = kq_destroy,
    .reserve = kq_reserve,
    .modify = kq_modify,
    .poll = kq_poll,
    .reinit = kq_reinit,
    .edge = 0,
    .defer_remove = 1,
    .fd = kq_fd,
};

#endif /* AEV_HAVE_KQUEUE */
