/*
 * Fault injection for test programs (test-only, never installed; built when the CMake option
 * AEV_FAULT_INJECTION is ON).
 *
 * Two tools:
 *  - Interposers of the system calls the library makes. A test program linked with this library
 *    defines epoll_ctl, read, write, ... itself; the library calls them through the PLT (or, for
 *    the static test build, binds to them at link time), so these definitions run instead of
 *    libc's and forward to the next definition (libc's, or a sanitizer's interceptor) found with
 *    dlsym(RTLD_NEXT). A test arms a rule: "among the calls of S made from now on (on fd X), the
 *    Nth and the following ones, `times` in all, fail with errno E". Calls made while no rule is
 *    armed for S, or that do not match its fd, are forwarded untouched, so cmocka and the test's
 *    own I/O keep working: scope rules to the library's fds, or arm them just around the call
 *    that should fail.
 *  - A counting allocator for aev_set_allocator(): it counts live blocks and bytes, so that a
 *    test can check that nothing leaked (live blocks back to 0 after aev_loop_destroy), and fails
 *    the Nth allocation (and optionally every one after it) on request.
 *
 * Thread-safety: the interposers may run on any thread and in signal handlers (they use only
 * atomics); arming and disarming are meant for the test's main thread.
 */
#ifndef AEV_FAULT_H
#define AEV_FAULT_H

#include <stdbool.h>
#include <stddef.h>

/* The interposed calls, in classes: one rule per class. */
typedef enum aevf_call {
    AEVF_EPOLL_CREATE,      /* epoll_create1 */
    AEVF_EPOLL_CTL,         /* epoll_ctl; fd: the fd being (un)registered */
    AEVF_EPOLL_WAIT,        /* epoll_wait, epoll_pwait2; fd: the epoll fd */
    AEVF_EPOLL_PWAIT2,      /* epoll_pwait2 alone; fd: the epoll fd */
    AEVF_POLL,              /* poll, ppoll (also the kqueue emulation's wait) */
    AEVF_EVENTFD,           /* eventfd */
    AEVF_PIPE,              /* pipe, pipe2 */
    AEVF_READ,              /* read; fd */
    AEVF_WRITE,             /* write; fd */
    AEVF_INOTIFY_INIT,      /* inotify_init1 */
    AEVF_INOTIFY_ADD_WATCH, /* inotify_add_watch; fd: the inotify fd */
    AEVF_PIDFD_OPEN,        /* syscall(SYS_pidfd_open, ...) */
    AEVF_SIGACTION,         /* sigaction, only calls that install a disposition (act != NULL) */
    AEVF_WAITID,            /* waitid, waitpid */
    AEVF_NCALLS
} aevf_call;

/* For `times`: every matching call from the nth on fails. */
#define AEVF_ALWAYS 0xffffffffu

/* For `err` of an AEVF_WRITE rule: instead of failing the call, first fill the fd (a pipe until
 * it takes no more, an eventfd until its counter is saturated), then make the real call, which
 * then fails with a genuine EAGAIN. Models "the kernel had no room", the only way a
 * non-blocking wakeup write can fail. */
#define AEVF_FILL (-1)

/*
 * Arms the rule of `call`, replacing any previous one: counting the matching calls made from now
 * on (calls on `fd`, or all calls if fd is -1; calls of a class without an fd match only fd -1)
 * from 1, calls nth .. nth + times - 1 fail with errno `err` (returning -1) instead of being made.
 * nth 0 is taken as 1.
 */
void aevf_arm(aevf_call call, int fd, unsigned nth, unsigned times, int err);
/* Disarms the rule of `call`; calls are forwarded untouched again. */
void aevf_disarm(aevf_call call);
/* Disarms every rule. */
void aevf_disarm_all(void);
/* Matching calls seen since the rule of `call` was armed (failed ones included), and how many
 * of them were failed (or, with AEVF_FILL, filled). */
unsigned aevf_seen(aevf_call call);
unsigned aevf_injected(aevf_call call);

/* ---- the counting allocator -------------------------------------------------------------- */

/* Realloc-shaped, for aev_set_allocator(): fn(NULL, n) allocates, fn(p, n) resizes, fn(p, 0)
 * frees. Blocks carry a header with their size and a tag, so that a block from another
 * allocator or a double free aborts the program. */
void *aevf_realloc(void *ptr, size_t size);
/* Clears the counters and the failure rule (blocks still live keep being counted when freed, so
 * call it only when none are: between loops). */
void aevf_alloc_reset(void);
/* Counting the allocation calls (fn(p, n) with n > 0) from now on, from 1: calls nth ..
 * nth + times - 1 return NULL. nth 0 disarms. */
void aevf_alloc_fail(unsigned long nth, unsigned long times);
/* Allocation calls since the last reset (failed ones included) and how many failed. */
unsigned long aevf_alloc_calls(void);
unsigned long aevf_alloc_failed(void);
/* Blocks and bytes allocated and not yet freed. */
long aevf_alloc_live_blocks(void);
long aevf_alloc_live_bytes(void);

/* ---- file descriptors -------------------------------------------------------------------- */

/* The number of open fds of the process (from /proc/self/fd), or -1 if it cannot be read. */
int aevf_fd_count(void);

/* A snapshot of the open fds below AEVF_FDSET_MAX, to find the fds opened since. */
#define AEVF_FDSET_MAX 4096
typedef struct aevf_fdset {
    unsigned char open[AEVF_FDSET_MAX / 8];
} aevf_fdset;

void aevf_fdset_take(aevf_fdset *set);
/* The lowest fd open now and not in `before` whose /proc/self/fd link contains `kind` (e.g.
 * "eventfd", "inotify", "pidfd", "pipe"; NULL: any), starting at fd `from`; -1 if none. */
int aevf_fdset_new(const aevf_fdset *before, const char *kind, int from);

#endif /* AEV_FAULT_H */
