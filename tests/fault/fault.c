/*
 * Fault injection for test programs: interposers of the system calls the library makes, a
 * counting allocator, and fd accounting. See fault.h for the contract.
 *
 * The interposers are defined in the test executable, so they take the place of libc's for the
 * library's calls (and the program's). Each asks its class's rule whether to fail this call; if
 * not, it forwards to the next definition (libc's, or a sanitizer's interceptor, which itself
 * calls libc's), resolved with dlsym(RTLD_NEXT) once. A forwarded call leaves errno exactly as
 * the real call does.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT, pipe2, ppoll, epoll_pwait2, syscall */
#endif

#include "fault.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- rules -------------------------------------------------------------------------------- */

/* One rule per class. Every member is atomic: the interposers read them on any thread (and in
 * signal handlers) while the main thread may re-arm. */
typedef struct aevf__rule {
    atomic_int armed;
    atomic_int fd;
    atomic_uint nth, times;
    atomic_int err;
    atomic_uint seen, injected;
} aevf__rule;

static aevf__rule aevf__rules[AEVF_NCALLS];

void aevf_arm(aevf_call call, int fd, unsigned nth, unsigned times, int err)
{
    aevf__rule *r = &aevf__rules[call];
    atomic_store_explicit(&r->armed, 0, memory_order_seq_cst);
    atomic_store_explicit(&r->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&r->nth, nth ? nth : 1, memory_order_relaxed);
    atomic_store_explicit(&r->times, times, memory_order_relaxed);
    atomic_store_explicit(&r->err, err, memory_order_relaxed);
    atomic_store_explicit(&r->seen, 0, memory_order_relaxed);
    atomic_store_explicit(&r->injected, 0, memory_order_relaxed);
    /* Release: an interposer that sees the rule armed (acquire) sees its fields. */
    atomic_store_explicit(&r->armed, 1, memory_order_release);
}

void aevf_disarm(aevf_call call)
{
    atomic_store_explicit(&aevf__rules[call].armed, 0, memory_order_seq_cst);
}

void aevf_disarm_all(void)
{
    for (int c = 0; c < AEVF_NCALLS; c++)
        aevf_disarm((aevf_call)c);
}

unsigned aevf_seen(aevf_call call)
{
    return atomic_load_explicit(&aevf__rules[call].seen, memory_order_relaxed);
}

unsigned aevf_injected(aevf_call call)
{
    return atomic_load_explicit(&aevf__rules[call].injected, memory_order_relaxed);
}

/* What to do with this call: 0 to forward it, else the errno to fail it with (or AEVF_FILL).
 * fd is the call's fd, -1 for calls without one. */
static int aevf__hit(aevf_call call, int fd)
{
    aevf__rule *r = &aevf__rules[call];
    if (!atomic_load_explicit(&r->armed, memory_order_acquire))
        return 0;
    int rfd = atomic_load_explicit(&r->fd, memory_order_relaxed);
    if (rfd >= 0 && fd != rfd)
        return 0;
    unsigned n = atomic_fetch_add_explicit(&r->seen, 1, memory_order_relaxed) + 1;
    unsigned nth = atomic_load_explicit(&r->nth, memory_order_relaxed);
    unsigned times = atomic_load_explicit(&r->times, memory_order_relaxed);
    if (n < nth || (times != AEVF_ALWAYS && n - nth >= times))
        return 0;
    atomic_fetch_add_explicit(&r->injected, 1, memory_order_relaxed);
    return atomic_load_explicit(&r->err, memory_order_relaxed);
}

static int aevf__fail(int err)
{
    errno = err;
    return -1;
}

/* ---- the real functions ------------------------------------------------------------------- */

static _Thread_local int aevf__resolving;

/*
 * What an interposer forwards to, looked up once: a sanitizer's interceptor of the function if
 * there is one, else the next definition after this executable's (libc's). The interceptor must
 * come first: ThreadSanitizer's runtime is linked into the executable, where these definitions
 * replace its interceptors (weak aliases of __interceptor_<name>), so RTLD_NEXT would skip it;
 * without its sigaction interceptor, for one, signal handlers run unwrapped and deadlock on its
 * locks. (AddressSanitizer's shared runtime exports the same names; either way works there.)
 * NULL while this thread is inside dlsym() (should dlsym call an interposed function) or if
 * there is no definition.
 */
static void *aevf__next(_Atomic(void *) *slot, const char *name, const char *interceptor)
{
    void *fn = atomic_load_explicit(slot, memory_order_acquire);
    if (fn || aevf__resolving)
        return fn;
    aevf__resolving = 1;
    fn = dlsym(RTLD_DEFAULT, interceptor);
    if (!fn)
        fn = dlsym(RTLD_NEXT, name);
    aevf__resolving = 0;
    if (fn)
        atomic_store_explicit(slot, fn, memory_order_release);
    return fn;
}

/* The interposed functions, one slot each for the next definition. */
#ifdef AEVF_HAVE_EPOLL_PWAIT2
#define AEVF_PWAIT2(X) X(epoll_pwait2)
#else
#define AEVF_PWAIT2(X)
#endif
#define AEVF_FUNCS(X)                                                                              \
    X(epoll_create1)                                                                               \
    X(epoll_ctl)                                                                                   \
    X(epoll_wait)                                                                                  \
    AEVF_PWAIT2(X)                                                                                 \
    X(poll)                                                                                        \
    X(ppoll)                                                                                       \
    X(eventfd)                                                                                     \
    X(pipe)                                                                                        \
    X(pipe2)                                                                                       \
    X(read)                                                                                        \
    X(write)                                                                                       \
    X(inotify_init1)                                                                               \
    X(inotify_add_watch)                                                                           \
    X(syscall)                                                                                     \
    X(sigaction)                                                                                   \
    X(waitid)                                                                                      \
    X(waitpid)

#define AEVF_SLOT(name) static _Atomic(void *) aevf__next_##name;
AEVF_FUNCS(AEVF_SLOT)

/*
 * Every next definition is looked up before main(), not at the first call: a lookup at the
 * first call could be interrupted by a signal whose handler (the library's) ends up needing a
 * lock dlsym() holds (ThreadSanitizer's allocator, for one) and deadlock. The lazy lookup stays
 * for calls made before this constructor runs.
 */
__attribute__((constructor)) static void aevf__resolve_all(void)
{
#define AEVF_RESOLVE(name) (void)aevf__next(&aevf__next_##name, #name, "__interceptor_" #name);
    AEVF_FUNCS(AEVF_RESOLVE)
#undef AEVF_RESOLVE
}

/* Resolves `type fn` for the interposer it is used in, or fails the call with ENOSYS. */
#define AEVF_NEXT(type, name)                                                                      \
    type fn = (type)aevf__next(&aevf__next_##name, #name, "__interceptor_" #name);                 \
    if (!fn)                                                                                       \
        return aevf__fail(ENOSYS);

/* Checks the rule of `call` for fd and fails the call if it says so. */
#define AEVF_CHECK(call, fd)                                                                       \
    do {                                                                                           \
        int aevf_err_ = aevf__hit(call, fd);                                                       \
        if (aevf_err_ > 0)                                                                         \
            return aevf__fail(aevf_err_);                                                          \
    } while (0)

/* ---- the interposers ---------------------------------------------------------------------- */

typedef int (*aevf_epoll_create1_fn)(int);
typedef int (*aevf_epoll_ctl_fn)(int, int, int, struct epoll_event *);
typedef int (*aevf_epoll_wait_fn)(int, struct epoll_event *, int, int);
typedef int (*aevf_poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*aevf_ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
typedef int (*aevf_eventfd_fn)(unsigned, int);
typedef int (*aevf_pipe_fn)(int[2]);
typedef int (*aevf_pipe2_fn)(int[2], int);
typedef ssize_t (*aevf_read_fn)(int, void *, size_t);
typedef ssize_t (*aevf_write_fn)(int, const void *, size_t);
typedef int (*aevf_inotify_init1_fn)(int);
typedef int (*aevf_inotify_add_watch_fn)(int, const char *, uint32_t);
typedef long (*aevf_syscall_fn)(long, ...);
typedef int (*aevf_sigaction_fn)(int, const struct sigaction *, struct sigaction *);
typedef int (*aevf_waitid_fn)(idtype_t, id_t, siginfo_t *, int);
typedef pid_t (*aevf_waitpid_fn)(pid_t, int *, int);

int epoll_create1(int flags)
{
    AEVF_CHECK(AEVF_EPOLL_CREATE, -1);
    AEVF_NEXT(aevf_epoll_create1_fn, epoll_create1);
    return fn(flags);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    AEVF_CHECK(AEVF_EPOLL_CTL, fd);
    AEVF_NEXT(aevf_epoll_ctl_fn, epoll_ctl);
    return fn(epfd, op, fd, ev);
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
    AEVF_CHECK(AEVF_EPOLL_WAIT, epfd);
    AEVF_NEXT(aevf_epoll_wait_fn, epoll_wait);
    return fn(epfd, events, max, timeout);
}

#ifdef AEVF_HAVE_EPOLL_PWAIT2
typedef int (*aevf_epoll_pwait2_fn)(int, struct epoll_event *, int, const struct timespec *,
                                    const sigset_t *);

int epoll_pwait2(int epfd, struct epoll_event *events, int max, const struct timespec *timeout,
                 const sigset_t *mask)
{
    AEVF_CHECK(AEVF_EPOLL_WAIT, epfd);
    AEVF_CHECK(AEVF_EPOLL_PWAIT2, epfd);
    AEVF_NEXT(aevf_epoll_pwait2_fn, epoll_pwait2);
    return fn(epfd, events, max, timeout, mask);
}
#endif

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    AEVF_CHECK(AEVF_POLL, -1);
    AEVF_NEXT(aevf_poll_fn, poll);
    return fn(fds, n, timeout);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
    AEVF_CHECK(AEVF_POLL, -1);
    AEVF_NEXT(aevf_ppoll_fn, ppoll);
    return fn(fds, n, timeout, mask);
}

int eventfd(unsigned count, int flags)
{
    AEVF_CHECK(AEVF_EVENTFD, -1);
    AEVF_NEXT(aevf_eventfd_fn, eventfd);
    return fn(count, flags);
}

int pipe(int fds[2])
{
    AEVF_CHECK(AEVF_PIPE, -1);
    AEVF_NEXT(aevf_pipe_fn, pipe);
    return fn(fds);
}

int pipe2(int fds[2], int flags)
{
    AEVF_CHECK(AEVF_PIPE, -1);
    AEVF_NEXT(aevf_pipe2_fn, pipe2);
    return fn(fds, flags);
}

ssize_t read(int fd, void *buf, size_t n)
{
    AEVF_CHECK(AEVF_READ, fd);
    AEVF_NEXT(aevf_read_fn, read);
    return fn(fd, buf, n);
}

/* Fills fd so that the next write fails with a genuine EAGAIN: a pipe until it takes no more
 * bytes, an eventfd until its counter takes not even 1 more. */
static void aevf__fill(int fd, aevf_write_fn fn)
{
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode)) {
        static const char buf[4096];
        while (fn(fd, buf, sizeof buf) > 0)
            continue;
        /* Writes up to PIPE_BUF are all or nothing: the last bytes of room go one by one. */
        while (fn(fd, buf, 1) > 0)
            continue;
        return;
    }
    /* Each round adds the largest power of two that still fits, at least half the room left,
     * until not even 1 fits. Starting each round from the top matters: the loop may drain the
     * counter meanwhile, and refilling an empty counter by small steps would take forever. */
    for (;;) {
        uint64_t v = UINT64_C(0xfffffffffffffffe);
        while (v > 0 && fn(fd, &v, sizeof v) != (ssize_t)sizeof v)
            v >>= 1;
        if (v == 0)
            return;
    }
}

ssize_t write(int fd, const void *buf, size_t n)
{
    int err = aevf__hit(AEVF_WRITE, fd);
    if (err > 0)
        return aevf__fail(err);
    AEVF_NEXT(aevf_write_fn, write);
    if (err == AEVF_FILL) {
        int saved = errno;
        aevf__fill(fd, fn);
        errno = saved;
    }
    return fn(fd, buf, n);
}

int inotify_init1(int flags)
{
    AEVF_CHECK(AEVF_INOTIFY_INIT, -1);
    AEVF_NEXT(aevf_inotify_init1_fn, inotify_init1);
    return fn(flags);
}

int inotify_add_watch(int fd, const char *path, uint32_t mask)
{
    AEVF_CHECK(AEVF_INOTIFY_ADD_WATCH, fd);
    AEVF_NEXT(aevf_inotify_add_watch_fn, inotify_add_watch);
    return fn(fd, path, mask);
}

/*
 * syscall() is variadic and its real definition takes the arguments from registers whatever
 * their number. Five are read here: all that any caller in a test program passes, and all that
 * arrive in registers on the usual ABIs (a sixth would be read from the caller's stack frame,
 * which the address sanitizer may have poisoned). A sixth argument is passed on as 0.
 */
long syscall(long number, ...)
{
    va_list ap;
    long a[5];
    va_start(ap, number);
    for (int i = 0; i < 5; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
#ifdef SYS_pidfd_open
    if (number == SYS_pidfd_open)
        AEVF_CHECK(AEVF_PIDFD_OPEN, -1);
#endif
    AEVF_NEXT(aevf_syscall_fn, syscall);
    return fn(number, a[0], a[1], a[2], a[3], a[4], 0L);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (act)
        AEVF_CHECK(AEVF_SIGACTION, -1);
    AEVF_NEXT(aevf_sigaction_fn, sigaction);
    return fn(sig, act, old);
}

int waitid(idtype_t type, id_t id, siginfo_t *info, int options)
{
    AEVF_CHECK(AEVF_WAITID, -1);
    AEVF_NEXT(aevf_waitid_fn, waitid);
    return fn(type, id, info, options);
}

pid_t waitpid(pid_t pid, int *status, int options)
{
    AEVF_CHECK(AEVF_WAITID, -1);
    AEVF_NEXT(aevf_waitpid_fn, waitpid);
    return fn(pid, status, options);
}

/* ---- the counting allocator --------------------------------------------------------------- */

/* Header in front of every block: its size and a tag; the union keeps malloc's alignment. */
typedef union aevf__hdr {
    struct {
        size_t size;
        size_t tag;
    } h;
    max_align_t align;
} aevf__hdr;

#define AEVF_TAG ((size_t)0x61657666u) /* "aevf" */

static atomic_ulong aevf__calls, aevf__failed, aevf__fail_nth, aevf__fail_times;
static atomic_long aevf__live_blocks, aevf__live_bytes;

void aevf_alloc_reset(void)
{
    atomic_store(&aevf__calls, 0);
    atomic_store(&aevf__failed, 0);
    atomic_store(&aevf__fail_nth, 0);
    atomic_store(&aevf__fail_times, 0);
}

void aevf_alloc_fail(unsigned long nth, unsigned long times)
{
    /* Counted from the next call on. */
    unsigned long base = atomic_load(&aevf__calls);
    atomic_store(&aevf__fail_times, times);
    atomic_store(&aevf__fail_nth, nth ? base + nth : 0);
}

unsigned long aevf_alloc_calls(void)
{
    return atomic_load(&aevf__calls);
}

unsigned long aevf_alloc_failed(void)
{
    return atomic_load(&aevf__failed);
}

long aevf_alloc_live_blocks(void)
{
    return atomic_load(&aevf__live_blocks);
}

long aevf_alloc_live_bytes(void)
{
    return atomic_load(&aevf__live_bytes);
}

/* Whether allocation call number n (from 1) is to fail. */
static int aevf__alloc_fails(unsigned long n)
{
    unsigned long nth = atomic_load(&aevf__fail_nth);
    unsigned long times = atomic_load(&aevf__fail_times);
    if (nth == 0 || n < nth)
        return 0;
    return times == AEVF_ALWAYS || n - nth < times;
}

void *aevf_realloc(void *ptr, size_t size)
{
    aevf__hdr *h = ptr ? (aevf__hdr *)ptr - 1 : NULL;
    if (h && h->h.tag != AEVF_TAG) {
        fprintf(stderr, "aevf_realloc: %p is not a live block of this allocator\n", ptr);
        abort();
    }
    if (size == 0) {
        if (h) {
            atomic_fetch_sub(&aevf__live_blocks, 1);
            atomic_fetch_sub(&aevf__live_bytes, (long)h->h.size);
            h->h.tag = 0;
            free(h);
        }
        return NULL;
    }
    unsigned long n = atomic_fetch_add(&aevf__calls, 1) + 1;
    if (aevf__alloc_fails(n) || size > SIZE_MAX / 2) {
        atomic_fetch_add(&aevf__failed, 1);
        return NULL;
    }
    size_t old = h ? h->h.size : 0;
    aevf__hdr *nh = realloc(h, sizeof *nh + size);
    if (!nh)
        return NULL;
    if (!h)
        atomic_fetch_add(&aevf__live_blocks, 1);
    atomic_fetch_add(&aevf__live_bytes, (long)size - (long)old);
    nh->h.size = size;
    nh->h.tag = AEVF_TAG;
    return nh + 1;
}

/* ---- file descriptors --------------------------------------------------------------------- */

int aevf_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

void aevf_fdset_take(aevf_fdset *set)
{
    memset(set, 0, sizeof *set);
    for (int fd = 0; fd < AEVF_FDSET_MAX; fd++) {
        struct stat sb;
        if (fstat(fd, &sb) == 0)
            set->open[fd / 8] |= (unsigned char)(1u << (fd % 8));
    }
}

int aevf_fdset_new(const aevf_fdset *before, const char *kind, int from)
{
    for (int fd = from < 0 ? 0 : from; fd < AEVF_FDSET_MAX; fd++) {
        struct stat sb;
        if ((before->open[fd / 8] & (1u << (fd % 8))) || fstat(fd, &sb) != 0)
            continue;
        if (!kind)
            return fd;
        char path[64], link[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0)
            continue;
        link[n] = '\0';
        if (strstr(link, kind))
            return fd;
    }
    return -1;
}
