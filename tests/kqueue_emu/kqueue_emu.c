/*
 * A user-space emulation of kqueue(2) and kevent(2) for Linux, used only to test
 * src/backend_kqueue.c where the kernel has no kqueue. It implements the EVFILT_READ and
 * EVFILT_WRITE filters, level-triggered, following FreeBSD's kqueue(2) manual page and
 * sys/kern/kern_event.c wherever the backend can observe a difference. Comments marked
 * "kqueue(2):" quote the manual page; "FreeBSD:" describes what its kernel source does.
 *
 * A kqueue is a table of knotes keyed by (fd, filter). kevent() applies the changes in order,
 * answers failed changes with EV_ERROR entries, then waits with ppoll(2) on the descriptors of the
 * enabled knotes and reports the ready ones.
 *
 * The kqueue's descriptor is an epoll instance, one descriptor per kqueue as with the kernel's,
 * which close(), exec and fork treat like one. It mirrors the enabled knotes, so that it is
 * pollable as a kqueue is (FreeBSD's kqueue_poll: readable while events are pending; another loop
 * may watch it). Every emulated kqueue also holds one process-wide eventfd that never becomes
 * ready, the tag: a descriptor is an emulated kqueue if and only if it contains the tag.
 *
 * Where a user-space emulation must differ from the kernel:
 *  - close() cannot be observed. kqueue(2): "Calling close() on a file descriptor will remove any
 *    kevents that reference the descriptor." Each knote remembers the file (st_dev, st_ino) its
 *    descriptor named when it was added; a knote whose descriptor is closed, or names another
 *    file by now, counts as removed. A number closed and reopened on the same file (dup2 of a
 *    dup) goes unnoticed.
 *  - Only the two filters; EV_ONESHOT, EV_CLEAR and EV_DISPATCH fail with EOPNOTSUPP. data is
 *    filled for regular files only, fflags is always 0, and socket errors (POLLERR) make a socket
 *    ready without EV_EOF.
 *  - The descriptor's readability ignores knotes of regular files (epoll cannot hold them), and
 *    may linger for a knote whose fd was closed while a dup keeps its file open (epoll keeps such
 *    a registration, and it cannot be removed by number).
 *  - The tag is one more descriptor in the process, opened before main().
 *  - One kqueue must not be used by two threads at once, and a dup of a kqueue descriptor is not
 *    a kqueue for kevent().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_SEC 1000000000L

/* Flags that act on a change and are not kept in the knote (FreeBSD: kqueue_register). */
#define EMU_ACTIONS (EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE)

typedef struct emu_knote {
    struct kevent kev; /* ident, filter, the flags kept from the change, udata */
    dev_t dev;         /* the file the descriptor named when the knote was added */
    ino_t ino;
    mode_t type;  /* its S_IFMT bits */
    int disabled; /* EV_DISABLE: registered, but never returned */
    int pfd;      /* index in emu_kq.pfds during a wait, -1 if not polled */
} emu_knote;

typedef struct emu_kq {
    int fd;           /* the kqueue's descriptor: an epoll set mirroring the enabled knotes */
    emu_knote *notes; /* dense: [0, count) */
    size_t count, cap;
    size_t *slot; /* slot[2 * fd + (filter == EVFILT_WRITE)]: index + 1 in notes, or 0 */
    size_t nslots;
    struct pollfd *pfds; /* cap entries; one per polled descriptor during a wait */
    size_t cursor;       /* where the next scan starts, so that ready knotes take turns */
} emu_kq;

/* The kqueues by descriptor. A kqueue closed with close() stays here until the next kqueue()
 * notices, so its memory remains reachable rather than leaked. */
static pthread_mutex_t emu_lock = PTHREAD_MUTEX_INITIALIZER;
static emu_kq **emu_table;
static size_t emu_table_len;
static pthread_once_t emu_once = PTHREAD_ONCE_INIT;
static int emu_tag = -1;

/*
 * Whether fd still names the file a knote was added for: how the emulation finds out about a
 * close() the kernel would have seen. This look at the number is the kernel's bookkeeping, not
 * the program's use of the fd, so it is made with a raw system call, which ThreadSanitizer does
 * not intercept: another thread may own the number by now, and TSan must report the accesses
 * the library makes (the changes it submits), not the ones the emulation makes in its place.
 */
static int emu_same_file(int fd, dev_t dev, ino_t ino)
{
    struct statx sx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_INO, &sx) != 0) {
        return 0;
    }
    return makedev(sx.stx_dev_major, sx.stx_dev_minor) == dev && sx.stx_ino == ino;
}

/* Whether descriptor fd is an emulated kqueue: an epoll set that contains the tag. Its number
 * says which: kqueue() records a new kqueue under its number, replacing any closed one. */
static int emu_is_kq(int fd)
{
    struct epoll_event ev = {.events = 0, .data.fd = -1};
    return emu_tag >= 0 && epoll_ctl(fd, EPOLL_CTL_MOD, emu_tag, &ev) == 0;
}

static void emu_kq_free(emu_kq *kq)
{
    free(kq->notes);
    free(kq->slot);
    free(kq->pfds);
    free(kq);
}

/* ---- fork ------------------------------------------------------------------------------- */

static void emu_prefork(void)
{
    pthread_mutex_lock(&emu_lock);
}

static void emu_parent(void)
{
    pthread_mutex_unlock(&emu_lock);
}

/* kqueue(2): "The queue is not inherited by a child created with fork(2)." FreeBSD does not copy
 * the descriptor into the child at all, so the child finds the number free: close it here. */
static void emu_child(void)
{
    for (size_t i = 0; i < emu_table_len; i++) {
        emu_kq *kq = emu_table[i];
        if (kq == NULL) {
            continue;
        }
        if (emu_is_kq(kq->fd)) {
            close(kq->fd);
        }
        emu_kq_free(kq);
        emu_table[i] = NULL;
    }
    pthread_mutex_unlock(&emu_lock);
}

static void emu_setup(void)
{
    if (emu_tag < 0) {
        emu_tag = eventfd(0, EFD_CLOEXEC);
    }
    pthread_atfork(emu_prefork, emu_parent, emu_child);
}

/* The tag is opened before main(), so that it is already there when a program first counts its
 * descriptors, and is never closed. */
__attribute__((constructor)) static void emu_open_tag(void)
{
    pthread_once(&emu_once, emu_setup);
}

/* ---- the table of kqueues --------------------------------------------------------------- */

/* Records kq under its descriptor, and frees the kqueues closed since; the lock is held. Returns
 * 0 or ENOMEM. */
static int emu_table_put(emu_kq *kq)
{
    for (size_t i = 0; i < emu_table_len; i++) {
        if (emu_table[i] != NULL && !emu_is_kq((int)i)) {
            emu_kq_free(emu_table[i]);
            emu_table[i] = NULL;
        }
    }
    size_t need = (size_t)kq->fd + 1;
    if (need > emu_table_len) {
        size_t len = emu_table_len ? emu_table_len : 16;
        while (len < need) {
            len *= 2;
        }
        emu_kq **table = realloc(emu_table, len * sizeof(*table));
        if (table == NULL) {
            return ENOMEM;
        }
        memset(table + emu_table_len, 0, (len - emu_table_len) * sizeof(*table));
        emu_table = table;
        emu_table_len = len;
    }
    if (emu_table[kq->fd] != NULL) {
        emu_kq_free(emu_table[kq->fd]); /* closed, and its number given to this new kqueue */
    }
    emu_table[kq->fd] = kq;
    return 0;
}

/* The kqueue behind descriptor fd, or NULL if fd is not (or no longer) an emulated kqueue. */
static emu_kq *emu_lookup(int fd)
{
    emu_kq *kq = NULL;
    pthread_mutex_lock(&emu_lock);
    if (fd >= 0 && (size_t)fd < emu_table_len) {
        kq = emu_table[fd];
    }
    if (kq != NULL && !emu_is_kq(fd)) {
        kq = NULL;
    }
    pthread_mutex_unlock(&emu_lock);
    return kq;
}

int kqueue(void)
{
    pthread_once(&emu_once, emu_setup);
    emu_kq *kq = calloc(1, sizeof(*kq));
    if (kq == NULL) {
        errno = ENOMEM;
        return -1;
    }
    /* The descriptor is not close-on-exec: kqueue() does not set that either. */
    kq->fd = emu_tag < 0 ? -1 : epoll_create1(0);
    struct epoll_event ev = {.events = 0, .data.fd = -1};
    if (kq->fd < 0 || epoll_ctl(kq->fd, EPOLL_CTL_ADD, emu_tag, &ev) < 0) {
        int err = emu_tag < 0 ? EMFILE : errno;
        if (kq->fd >= 0) {
            close(kq->fd);
        }
        free(kq);
        errno = err;
        return -1;
    }
    pthread_mutex_lock(&emu_lock);
    int err = emu_table_put(kq);
    pthread_mutex_unlock(&emu_lock);
    if (err != 0) {
        close(kq->fd);
        free(kq);
        errno = err;
        return -1;
    }
    return kq->fd;
}

/* ---- knotes ----------------------------------------------------------------------------- */

static size_t emu_key(uintptr_t ident, short filter)
{
    return 2 * (size_t)ident + (filter == EVFILT_WRITE);
}

static emu_knote *emu_find(emu_kq *kq, uintptr_t ident, short filter)
{
    size_t key = emu_key(ident, filter);
    if (key >= kq->nslots || kq->slot[key] == 0) {
        return NULL;
    }
    return &kq->notes[kq->slot[key] - 1];
}

/* Removes the knote at index i by moving the last one into its place. */
static void emu_drop(emu_kq *kq, size_t i)
{
    kq->slot[emu_key(kq->notes[i].kev.ident, kq->notes[i].kev.filter)] = 0;
    size_t last = --kq->count;
    if (i != last) {
        kq->notes[i] = kq->notes[last];
        kq->slot[emu_key(kq->notes[i].kev.ident, kq->notes[i].kev.filter)] = i + 1;
    }
}

/* Makes room for one more knote with this key; 0 or ENOMEM. */
static int emu_reserve(emu_kq *kq, size_t key)
{
    if (key >= kq->nslots) {
        size_t n = kq->nslots ? kq->nslots : 64;
        while (n <= key) {
            n *= 2;
        }
        size_t *slot = realloc(kq->slot, n * sizeof(*slot));
        if (slot == NULL) {
            return ENOMEM;
        }
        memset(slot + kq->nslots, 0, (n - kq->nslots) * sizeof(*slot));
        kq->slot = slot;
        kq->nslots = n;
    }
    if (kq->count < kq->cap) {
        return 0;
    }
    size_t cap = kq->cap ? kq->cap * 2 : 16;
    emu_knote *notes = realloc(kq->notes, cap * sizeof(*notes));
    if (notes == NULL) {
        return ENOMEM;
    }
    kq->notes = notes;
    struct pollfd *pfds = realloc(kq->pfds, cap * sizeof(*pfds));
    if (pfds == NULL) {
        return ENOMEM;
    }
    kq->pfds = pfds;
    kq->cap = cap;
    return 0;
}

/* Adds a knote for the change; sb describes its descriptor. Returns it, or NULL (ENOMEM). */
static emu_knote *emu_attach(emu_kq *kq, const struct kevent *ch, const struct stat *sb)
{
    size_t key = emu_key(ch->ident, ch->filter);
    if (emu_reserve(kq, key) != 0) {
        return NULL;
    }
    emu_knote *kn = &kq->notes[kq->count++];
    kq->slot[key] = kq->count;
    /* FreeBSD keeps the change minus its action flags, with fflags and data cleared. */
    kn->kev = *ch;
    kn->kev.flags &= (unsigned short)~EMU_ACTIONS;
    kn->kev.fflags = 0;
    kn->kev.data = 0;
    kn->dev = sb->st_dev;
    kn->ino = sb->st_ino;
    kn->type = sb->st_mode & S_IFMT;
    kn->disabled = 0; /* kqueue(2): "Adding an event automatically enables it" */
    kn->pfd = -1;
    return kn;
}

/* ---- the mirror: what makes the kqueue descriptor readable ------------------------------- */

static int emu_is_vnode(const emu_knote *kn)
{
    return S_ISREG(kn->type) || S_ISDIR(kn->type);
}

/* What kn adds to its descriptor's registration in the mirror. */
static uint32_t emu_mirror_events(const emu_knote *kn)
{
    if (kn->disabled || emu_is_vnode(kn)) {
        return 0;
    }
    return kn->kev.filter == EVFILT_READ ? (uint32_t)(EPOLLIN | EPOLLRDHUP) : (uint32_t)EPOLLOUT;
}

/* The events the mirror should hold for descriptor ident, from its knotes. */
static uint32_t emu_mirror_want(emu_kq *kq, uintptr_t ident)
{
    uint32_t want = 0;
    const emu_knote *kn = emu_find(kq, ident, EVFILT_READ);
    if (kn != NULL) {
        want |= emu_mirror_events(kn);
    }
    kn = emu_find(kq, ident, EVFILT_WRITE);
    if (kn != NULL) {
        want |= emu_mirror_events(kn);
    }
    return want;
}

/* Brings ident's registration in the mirror from `had` to what its knotes want now. */
static void emu_mirror(emu_kq *kq, uintptr_t ident, uint32_t had)
{
    uint32_t want = emu_mirror_want(kq, ident);
    int fd = (int)ident;
    if (want == had) {
        return;
    }
    if (want == 0) {
        (void)epoll_ctl(kq->fd, EPOLL_CTL_DEL, fd, NULL);
        return;
    }
    /* A registration may be left from an earlier file on this number (EEXIST), or gone with its
     * file (ENOENT): the other operation then does it. */
    struct epoll_event ev = {.events = want, .data.fd = fd};
    if (epoll_ctl(kq->fd, had ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) {
        (void)epoll_ctl(kq->fd, had ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
    }
}

/* Drops the knotes of ident that belong to a file other than sb's: the descriptor was closed,
 * which would have removed them. Their registration in the mirror went with the file, unless a
 * dup keeps that open (see the top of the file). */
static void emu_forget_stale(emu_kq *kq, uintptr_t ident, const struct stat *sb)
{
    static const short filters[] = {EVFILT_READ, EVFILT_WRITE};
    for (size_t f = 0; f < 2; f++) {
        emu_knote *kn = emu_find(kq, ident, filters[f]);
        if (kn != NULL && (kn->dev != sb->st_dev || kn->ino != sb->st_ino)) {
            emu_drop(kq, (size_t)(kn - kq->notes));
        }
    }
}

/* ---- changes ---------------------------------------------------------------------------- */

/* emu_register() past the checks: finds, adds, deletes, enables or disables the knote. */
static int emu_apply(emu_kq *kq, const struct kevent *ch, const struct stat *sb)
{
    emu_knote *kn = emu_find(kq, ch->ident, ch->filter);
    if (kn == NULL && !(ch->flags & EV_ADD)) {
        return ENOENT;
    }
    if (ch->flags & EV_ADD) {
        if (kn == NULL) {
            kn = emu_attach(kq, ch, sb);
            if (kn == NULL) {
                return ENOMEM;
            }
        } else {
            kn->kev.udata = ch->udata; /* FreeBSD: re-adding updates fflags, data and udata */
        }
    } else if (ch->flags & EV_DELETE) {
        emu_drop(kq, (size_t)(kn - kq->notes));
        return 0;
    }
    if (ch->flags & EV_DISABLE) {
        kn->disabled = 1;
    }
    if (ch->flags & EV_ENABLE) {
        kn->disabled = 0;
    }
    return 0;
}

/* Applies one change; returns 0 or the errno it fails with (FreeBSD: kqueue_register). */
static int emu_register(emu_kq *kq, const struct kevent *ch)
{
    if (ch->filter != EVFILT_READ && ch->filter != EVFILT_WRITE) {
        return EINVAL; /* FreeBSD: an unknown filter */
    }
    if (ch->flags & (EV_ONESHOT | EV_CLEAR | EV_DISPATCH)) {
        return EOPNOTSUPP; /* not emulated */
    }
    /* FreeBSD looks the descriptor up for every action, delete included: EBADF if not open. */
    struct stat sb;
    if (ch->ident > INT_MAX || fstat((int)ch->ident, &sb) < 0) {
        return EBADF;
    }
    if ((int)ch->ident == kq->fd) {
        return EINVAL; /* FreeBSD: a kqueue cannot watch itself */
    }
    /* A knote of an earlier file on this number: close() would have removed it. */
    emu_forget_stale(kq, ch->ident, &sb);
    uint32_t had = emu_mirror_want(kq, ch->ident);
    int err = emu_apply(kq, ch, &sb);
    emu_mirror(kq, ch->ident, had);
    return err;
}

/* ---- waiting ---------------------------------------------------------------------------- */

/*
 * Regular files and directories are not polled. kqueue(2), EVFILT_READ on vnodes: "Returns when
 * the file pointer is not at the end of file. data contains the offset from current position to
 * end of file, and may be negative. This behavior is different from poll(2)". EVFILT_WRITE is
 * documented as unsupported for vnodes, but FreeBSD's generic vnode filter accepts it and is
 * always ready with data 0; that is what is emulated.
 */
static int emu_vnode_ready(const emu_knote *kn, struct kevent *ev)
{
    if (kn->kev.filter == EVFILT_WRITE) {
        ev->data = 0;
        return 1;
    }
    struct stat sb;
    off_t pos = lseek((int)kn->kev.ident, 0, SEEK_CUR);
    if (pos < 0 || fstat((int)kn->kev.ident, &sb) < 0) {
        return 0;
    }
    ev->data = (int64_t)sb.st_size - (int64_t)pos;
    return ev->data != 0;
}

/*
 * Drops the knotes whose descriptor was closed (see the top of the file), gives every other
 * enabled knote of a pollable file a pollfd, shared by the read and write knotes of one
 * descriptor (poll(2) refuses more entries than RLIMIT_NOFILE), and returns the number of
 * pollfds used. *vnodes_ready tells whether a regular-file knote is ready already.
 */
static nfds_t emu_prepare(emu_kq *kq, int *vnodes_ready)
{
    for (size_t i = 0; i < kq->count;) {
        emu_knote *kn = &kq->notes[i];
        if (!emu_same_file((int)kn->kev.ident, kn->dev, kn->ino)) {
            emu_drop(kq, i); /* the last knote moved to i: look at i again */
            continue;
        }
        i++;
    }
    nfds_t n = 0;
    *vnodes_ready = 0;
    for (size_t i = 0; i < kq->count; i++) {
        emu_knote *kn = &kq->notes[i];
        kn->pfd = -1;
        if (kn->disabled) {
            continue;
        }
        if (emu_is_vnode(kn)) {
            struct kevent ev = kn->kev;
            *vnodes_ready |= emu_vnode_ready(kn, &ev);
            continue;
        }
        short events = kn->kev.filter == EVFILT_READ ? (POLLIN | POLLRDHUP) : POLLOUT;
        /* The other filter's knote of this descriptor, if already given a pollfd. */
        size_t other = kq->slot[emu_key(kn->kev.ident, kn->kev.filter) ^ 1];
        if (other != 0 && other - 1 < i && kq->notes[other - 1].pfd >= 0) {
            kn->pfd = kq->notes[other - 1].pfd;
            kq->pfds[kn->pfd].events |= events;
            continue;
        }
        kn->pfd = (int)n;
        kq->pfds[n++] = (struct pollfd){.fd = (int)kn->kev.ident, .events = events};
    }
    return n;
}

/* Whether kn is ready after the poll; if so, *ev is what kevent() reports for it. */
static int emu_ready(const emu_kq *kq, const emu_knote *kn, struct kevent *ev)
{
    if (kn->disabled) {
        return 0;
    }
    *ev = kn->kev;
    if (emu_is_vnode(kn)) {
        return emu_vnode_ready(kn, ev);
    }
    short re = kq->pfds[kn->pfd].revents;
    if (kn->kev.filter == EVFILT_READ) {
        /* kqueue(2): sockets whose read direction has shut down, and pipes whose last writer
         * left, set EV_EOF. */
        if (!(re & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) {
            return 0;
        }
        if (re & (POLLRDHUP | POLLHUP)) {
            ev->flags |= EV_EOF;
        }
        return 1;
    }
    if (!(re & (POLLOUT | POLLHUP | POLLERR))) {
        return 0;
    }
    /* kqueue(2): "The filter will set EV_EOF when the reader disconnects". Linux reports a pipe
     * without readers as POLLERR, a socket whose peer is gone as POLLHUP. */
    if ((re & POLLHUP) || (S_ISFIFO(kn->type) && (re & POLLERR))) {
        ev->flags |= EV_EOF;
    }
    return 1;
}

/* Copies up to nevents ready knotes into out, starting where the last scan stopped (FreeBSD
 * requeues a reported level-triggered knote at the tail, so none starves). */
static int emu_collect(emu_kq *kq, struct kevent *out, int nevents)
{
    size_t n = kq->count;
    if (n == 0) {
        return 0;
    }
    size_t start = kq->cursor % n;
    int got = 0;
    for (size_t k = 0; k < n && got < nevents; k++) {
        size_t i = (start + k) % n;
        if (emu_ready(kq, &kq->notes[i], &out[got])) {
            got++;
            kq->cursor = i + 1;
        }
    }
    return got;
}

static struct timespec emu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

/* deadline - now, or zero if it has passed. */
static struct timespec emu_left(struct timespec deadline)
{
    struct timespec now = emu_now();
    long long ns =
        (long long)(deadline.tv_sec - now.tv_sec) * NSEC_PER_SEC + (deadline.tv_nsec - now.tv_nsec);
    if (ns < 0) {
        ns = 0;
    }
    return (struct timespec){.tv_sec = (time_t)(ns / NSEC_PER_SEC), .tv_nsec = ns % NSEC_PER_SEC};
}

/* Waits until a knote is ready or the timeout (NULL: none) expires; returns kevent()'s result. */
static int emu_wait(emu_kq *kq, struct kevent *out, int nevents, const struct timespec *timeout)
{
    struct timespec deadline = {0, 0};
    if (timeout != NULL) {
        struct timespec now = emu_now();
        long long ns = (long long)now.tv_nsec + timeout->tv_nsec;
        deadline.tv_sec = now.tv_sec + timeout->tv_sec + (time_t)(ns / NSEC_PER_SEC);
        deadline.tv_nsec = ns % NSEC_PER_SEC;
    }
    for (;;) {
        int vnodes_ready;
        nfds_t npfds = emu_prepare(kq, &vnodes_ready);
        struct timespec left = {0, 0};
        if (!vnodes_ready && timeout != NULL) {
            left = emu_left(deadline);
        }
        int n = ppoll(kq->pfds, npfds, (vnodes_ready || timeout != NULL) ? &left : NULL, NULL);
        if (n < 0) {
            return -1; /* EINTR: kqueue(2) says the changes were applied, and they were */
        }
        int got = emu_collect(kq, out, nevents);
        if (got > 0 || n == 0) {
            return got;
        }
        /* Woken only by descriptors that were closed meanwhile (POLLNVAL); a kernel would not
         * have returned for those. The next round drops their knotes and waits for the rest. */
    }
}

static int emu_kevent(int kqfd, const struct kevent *changelist, int nchanges,
                      struct kevent *eventlist, int nevents, const struct timespec *timeout)
{
    emu_kq *kq = emu_lookup(kqfd);
    if (kq == NULL) {
        errno = EBADF;
        return -1;
    }
    if (nchanges < 0 || nevents < 0) {
        errno = EINVAL;
        return -1;
    }
    int nout = 0;
    for (int i = 0; i < nchanges; i++) {
        /* Copied first: kqueue(2) says "The same array may be used for the changelist and
         * eventlist", so the entry written below may be this very change. */
        struct kevent ch = changelist[i];
        if (ch.filter == 0) {
            continue; /* FreeBSD skips changes without a filter */
        }
        ch.flags &= (unsigned short)~EV_SYSFLAGS;
        int err = emu_register(kq, &ch);
        if (err == 0 && !(ch.flags & EV_RECEIPT)) {
            continue;
        }
        /* kqueue(2): a failed change goes into the eventlist "with EV_ERROR set in flags and the
         * system error in data" if there is room; otherwise kevent() fails with that error.
         * FreeBSD then stops at this change, and returns 0 for a receipt without room. */
        if (nout == nevents) {
            if (err == 0) {
                return 0;
            }
            errno = err;
            return -1;
        }
        ch.flags = EV_ERROR; /* FreeBSD and OpenBSD replace the flags; macOS adds the bit */
        ch.data = err;
        eventlist[nout++] = ch;
    }
    /* FreeBSD, OpenBSD and DragonFly return error entries at once: no wait, no events. */
    if (nout > 0) {
        return nout;
    }
    /* kqueue(2): "When nevents is zero, kevent() will return immediately even if there is a
     * timeout specified". */
    if (nevents == 0) {
        return 0;
    }
    /* FreeBSD checks the timeout only now, after applying the changes. */
    if (timeout != NULL &&
        (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= NSEC_PER_SEC)) {
        errno = EINVAL;
        return -1;
    }
    return emu_wait(kq, eventlist, nevents, timeout);
}

int kevent(int kqfd, const struct kevent *changelist, int nchanges, struct kevent *eventlist,
           int nevents, const struct timespec *timeout)
{
    int rc = emu_kevent(kqfd, changelist, nchanges, eventlist, nevents, timeout);
    /* A closed kqueue is freed later by whichever thread's kqueue() notices it: close() itself
     * is invisible here. Passing through the lock after every use orders this thread's last use
     * before that free (the descriptor's reuse orders them in the kernel, but not for the
     * memory model or ThreadSanitizer). */
    int saved = errno;
    pthread_mutex_lock(&emu_lock);
    pthread_mutex_unlock(&emu_lock);
    errno = saved;
    return rc;
}
