/*
 * libasyncev - a small reactor event loop in C11.
 *
 * This is the only public header. Everything named aev_ / AEV_ here is API; members of structs
 * marked "private" are visible only so that callers can allocate watchers themselves, and must
 * not be touched.
 *
 * Conventions:
 *  - Functions that can fail return 0 on success or a negative errno value (-EINVAL, -ENOMEM,
 *    ...). errno is never used as a channel; aev_strerror() turns a code into text.
 *  - Time is a signed 64-bit count of nanoseconds (aev_time_t). Intervals are exact integers, so
 *    repeating timers do not drift by rounding, and the range (+-292 years) is ample.
 *  - A loop belongs to one thread at a time. The only functions that may be called from another
 *    thread, or from a signal handler, are aev_async_send(), aev_async_sent() and aev_post().
 */
#ifndef ASYNCEV_H
#define ASYNCEV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AEV_VERSION_MAJOR 0
#define AEV_VERSION_MINOR 3
#define AEV_VERSION_PATCH 1
/* One integer for compile-time comparisons: 0xMMmmpp. */
#define AEV_VERSION_HEX ((AEV_VERSION_MAJOR << 16) | (AEV_VERSION_MINOR << 8) | AEV_VERSION_PATCH)

#if defined(AEV_BUILDING) && defined(__GNUC__)
#define AEV_EXPORT __attribute__((visibility("default")))
#else
#define AEV_EXPORT
#endif

/* ---- time ------------------------------------------------------------------------------- */

typedef int64_t aev_time_t; /* nanoseconds */

#define AEV_NSEC(n) ((aev_time_t)(n))
#define AEV_USEC(n) ((aev_time_t)(n)*1000)
#define AEV_MSEC(n) ((aev_time_t)(n)*1000000)
#define AEV_SEC(n) ((aev_time_t)(n)*1000000000)

/* ---- events ----------------------------------------------------------------------------- */

enum {
    AEV_READ = 0x01,      /* io: fd readable (or hung up / at EOF) */
    AEV_WRITE = 0x02,     /* io: fd writable */
    AEV_TIMER = 0x04,     /* timer expired */
    AEV_ASYNC = 0x08,     /* async watcher was sent to */
    AEV_IDLE = 0x10,      /* nothing of equal or higher priority was pending */
    AEV_PREPARE = 0x20,   /* the loop is about to poll */
    AEV_CHECK = 0x40,     /* the loop has just polled */
    AEV_SIGNAL = 0x80,    /* a watched signal was delivered to the process */
    AEV_CHILD = 0x100,    /* a watched child process changed state */
    AEV_PERIODIC = 0x200, /* a periodic watcher's wall-clock time was reached */
    AEV_FORK = 0x400,     /* the process forked; runs in the child */
    AEV_CLEANUP = 0x800,  /* the loop is being destroyed */
    AEV_STAT = 0x1000,    /* a watched path's stat data changed */
    AEV_EMBED = 0x2000,   /* an embedded loop has something to do; see aev_embed_sweep() */
    AEV_CUSTOM = 0x4000,  /* free for aev_feed_event() by the program */
    AEV_ERROR = 0x8000    /* the watcher failed and was stopped; see aev_watcher_error() */
};

/* ---- priorities ------------------------------------------------------------------------- */

#define AEV_MINPRI (-2)
#define AEV_MAXPRI 2

/* ---- loop creation flags ---------------------------------------------------------------- */

enum {
    AEV_BACKEND_AUTO = 0x00,   /* best compiled-in backend; AEV_BACKEND env may override */
    AEV_BACKEND_EPOLL = 0x01,  /* Linux epoll(7) */
    AEV_BACKEND_POLL = 0x02,   /* poll(2), everywhere */
    AEV_BACKEND_KQUEUE = 0x04, /* BSD/macOS kqueue(2) */
    AEV_BACKEND_MASK = 0xff,

    AEV_FLAG_NOENV = 0x100,      /* ignore the AEV_BACKEND environment variable */
    AEV_FLAG_PIPE_WAKEUP = 0x200 /* wake the loop through a self-pipe even where eventfd exists */
};

/* aev_run() modes. */
enum {
    AEV_RUN_DEFAULT = 0, /* until no active referenced watchers remain or aev_break() */
    AEV_RUN_ONCE = 1,    /* one iteration; may block until something happens */
    AEV_RUN_NOWAIT = 2   /* one iteration that never blocks */
};

/* aev_break() kinds. */
enum {
    AEV_BREAK_CANCEL = 0, /* undo a previous break request */
    AEV_BREAK_ONE = 1,    /* leave the innermost aev_run() */
    AEV_BREAK_ALL = 2     /* leave every nested aev_run() */
};

/* What failed, for a watcher that received AEV_ERROR. */
typedef enum aev_errop {
    AEV_ERROP_NONE = 0,  /* no error recorded */
    AEV_ERROP_WATCH = 1, /* the kernel refused to watch the fd (epoll_ctl, kevent) */
    AEV_ERROP_POLL = 2   /* the poll call reported the fd invalid (POLLNVAL) */
} aev_errop;

/* ---- watchers --------------------------------------------------------------------------- */

typedef struct aev_loop aev_loop;
typedef struct aev_watcher aev_watcher;

/*
 * Every callback receives the watcher (cast it to its own type, or use container-of from the
 * program's struct) and the bitmask of events that made it pending.
 */
typedef void (*aev_cb)(aev_watcher *w, unsigned events);

/* The common header embedded as the first member of every watcher type. */
struct aev_watcher {
    void *data; /* public: free for the program */
    /* private: */
    aev_loop *loop_;
    aev_cb cb_;
    int32_t active_;  /* nonzero while started: 1-based index in the owning container */
    int32_t pending_; /* nonzero while pending: 1-based slot in the priority queue */
    int8_t priority_;
    uint8_t type_;
    uint8_t flags_;
    uint8_t errop_;
    int32_t err_;
};

typedef struct aev_io {
    aev_watcher base;
    /* private: */
    struct aev_io *next_; /* other watchers of the same fd */
    int fd_;
    unsigned events_;
} aev_io;

typedef struct aev_timer {
    aev_watcher base;
    /* private: */
    aev_time_t at_;
    aev_time_t repeat_;
} aev_timer;

typedef struct aev_idle {
    aev_watcher base;
} aev_idle;

typedef struct aev_prepare {
    aev_watcher base;
} aev_prepare;

typedef struct aev_check {
    aev_watcher base;
} aev_check;

typedef struct aev_async {
    aev_watcher base;
    /* private: */
    /* 0 while not sent; otherwise the link in the loop's list of sent watchers with bit 0 set
     * (the next watcher's address | 1), so that "sent" and the link are one atomic word. */
    atomic_uintptr_t link_;
} aev_async;

/* ---- errors and versions ---------------------------------------------------------------- */

/* Text for a code returned by this library (negative errno); never NULL, thread-safe. */
AEV_EXPORT const char *aev_strerror(int err);
/* The library's version at run time, as AEV_VERSION_HEX. */
AEV_EXPORT unsigned aev_version(void);
/* The current monotonic time, read from the clock now. */
AEV_EXPORT aev_time_t aev_time(void);

/*
 * The allocator: realloc-shaped. fn(NULL, n) allocates n > 0 bytes, fn(p, n) resizes, fn(p, 0)
 * frees p and returns NULL; returning NULL for n > 0 means out of memory, which the library
 * reports as -ENOMEM. Every allocation of the library goes through it. Set it before creating
 * any loop or poster (memory is freed with the allocator that is current at the time); NULL
 * restores the default (the C library's realloc and free). Process-wide.
 */
typedef void *(*aev_realloc_fn)(void *ptr, size_t size);
AEV_EXPORT void aev_set_allocator(aev_realloc_fn fn);

/* ---- loop ------------------------------------------------------------------------------- */

/*
 * Creates a loop. flags: one AEV_BACKEND_* (or AUTO) plus AEV_FLAG_*. When the backend is AUTO
 * and AEV_FLAG_NOENV is not given, the environment variable AEV_BACKEND=epoll|poll|kqueue picks
 * it; an explicit backend in flags is never overridden.
 * Errors: -EINVAL (out NULL, unknown flags, several backends, unknown AEV_BACKEND value),
 * -ENOSYS (backend not compiled into this build), -ENOMEM, and whatever the kernel returns when
 * creating the poll set or the wakeup fd (-EMFILE, -ENFILE, ...).
 */
AEV_EXPORT int aev_loop_new(aev_loop **out, unsigned flags);
/*
 * Runs the cleanup watchers, then frees the loop and its kernel objects. Watchers still active
 * or pending are the program's memory: they are left untouched (never called, not even written)
 * and may afterwards only be freed or re-initialised (for any loop); any other function on them
 * reaches the freed loop. Errors: -EINVAL (NULL; debug builds: a loop destroyed already), -EBUSY
 * (called from inside aev_run() of this loop, at any depth, or from a cleanup callback; nothing
 * is freed). docs/api.md, "Misuse", lists every misuse and its outcome.
 */
AEV_EXPORT int aev_loop_destroy(aev_loop *loop);
/* Runs the loop; see AEV_RUN_*. Returns 1 if active referenced watchers remain, 0 if none,
 * -EINVAL for a NULL loop or bad mode, -EBUSY while suspended (aev_suspend), or a negative
 * errno if the backend failed for good. */
AEV_EXPORT int aev_run(aev_loop *loop, int mode);
/* Requests aev_run() to return; see AEV_BREAK_*. Takes effect when the current iteration's
 * callbacks have run. Errors: -EINVAL (NULL loop, unknown how). */
AEV_EXPORT int aev_break(aev_loop *loop, int how);
/* Reference counting: an active watcher keeps aev_run() going unless offset by aev_unref(). */
AEV_EXPORT void aev_ref(aev_loop *loop);
AEV_EXPORT void aev_unref(aev_loop *loop);
/* Iterations started so far (wraps at 2^64), nesting depth of aev_run(), and events pending.
 * Each returns 0 for a NULL loop. */
AEV_EXPORT uint64_t aev_iteration(const aev_loop *loop);
AEV_EXPORT unsigned aev_depth(const aev_loop *loop);
AEV_EXPORT unsigned aev_pending_count(const aev_loop *loop);
/* The loop's cached monotonic time (updated at the start of each iteration and right after
 * polling), and a refresh of it. */
AEV_EXPORT aev_time_t aev_now(const aev_loop *loop);
AEV_EXPORT void aev_now_update(aev_loop *loop);
/* The backend in use: one AEV_BACKEND_* value, and its name ("epoll", "poll", "kqueue");
 * 0 and NULL for a NULL loop. */
AEV_EXPORT unsigned aev_backend(const aev_loop *loop);
AEV_EXPORT const char *aev_backend_name(const aev_loop *loop);
/* Backends compiled into this build, and those recommended for this platform (bitmasks). */
AEV_EXPORT unsigned aev_supported_backends(void);
AEV_EXPORT unsigned aev_recommended_backends(void);
/* Rebuilds kernel state (poll set, wakeup fd) in a child after fork(). The loop also does this
 * by itself at its next iteration; calling it is only needed to do it earlier.
 * Errors: -EINVAL (NULL), and the kernel's errors creating the new objects (-EMFILE, -ENFILE,
 * -ENOMEM); the loop is then unusable and aev_run() returns that error. */
AEV_EXPORT int aev_loop_fork(aev_loop *loop);
/* A pointer for the program, not used by the library. */
AEV_EXPORT void aev_loop_set_data(aev_loop *loop, void *data);
AEV_EXPORT void *aev_loop_data(const aev_loop *loop);

/* ---- any watcher ------------------------------------------------------------------------ */

/*
 * Starting an active watcher, or stopping an inactive one, does nothing and returns 0.
 * Stopping a pending watcher also removes its pending event. Errors: -EINVAL (NULL or a watcher
 * never initialised by an aev_*_init function; debug builds: also a watcher of a destroyed loop
 * or a copy of a watcher); start also -ENOMEM (an internal array could not grow) and the type's
 * own start errors. Every aev_*_init function returns -EBUSY, leaving the watcher untouched,
 * if the loop still holds it (active or pending; an active async or signal watcher, or child
 * watcher of a pid > 0, is detected only while pending): stop it first.
 */
AEV_EXPORT int aev_start(aev_watcher *w);
AEV_EXPORT int aev_stop(aev_watcher *w);
AEV_EXPORT bool aev_is_active(const aev_watcher *w);
AEV_EXPORT bool aev_is_pending(const aev_watcher *w);
AEV_EXPORT aev_loop *aev_watcher_loop(const aev_watcher *w);
/* Priority in AEV_MINPRI..AEV_MAXPRI; higher runs first. Errors: -EINVAL (NULL, out of range),
 * -EBUSY (watcher active or pending). */
AEV_EXPORT int aev_set_priority(aev_watcher *w, int priority);
AEV_EXPORT int aev_priority(const aev_watcher *w);
/* Calls the callback now with these events. Errors: -EINVAL (NULL or never initialised). */
AEV_EXPORT int aev_invoke(aev_watcher *w, unsigned events);
/* Makes the watcher pending with these events (ORed into any already pending), as if they had
 * happened; active or not. Errors: -EINVAL (NULL, events 0), -ENOMEM. */
AEV_EXPORT int aev_feed_event(aev_watcher *w, unsigned events);
/* Removes the pending event and returns its events, or 0 if it was not pending. */
AEV_EXPORT unsigned aev_clear_pending(aev_watcher *w);
/* After AEV_ERROR: the negative errno that made the watcher fail (0 if none) and, if op is not
 * NULL, what failed. Cleared when the watcher is started again. -EINVAL for a NULL watcher. */
AEV_EXPORT int aev_watcher_error(const aev_watcher *w, aev_errop *op);

/* ---- io --------------------------------------------------------------------------------- */

/*
 * Watches fd for AEV_READ and/or AEV_WRITE. Any number of watchers may watch one fd. A fd the
 * kernel refuses when the loop registers it (not open, or not pollable by this backend) reaches
 * the watcher as AEV_ERROR and stops it. Close a fd only after stopping its watchers: epoll
 * forgets a closed fd silently. After a fd number was closed and reused, call aev_io_set() (or
 * init) before starting: that is what tells the loop it may be another file.
 * Regular files are always ready, as poll(2) reports them.
 * Errors: -EINVAL (NULL w, loop or cb, fd < 0, events empty or not within READ|WRITE);
 * aev_io_init: -EBUSY while the loop holds it; aev_io_set: -EBUSY while active; aev_io_start:
 * -ENOMEM. aev_io_fd(NULL) is -EINVAL.
 */
AEV_EXPORT int aev_io_init(aev_io *w, aev_loop *loop, aev_cb cb, int fd, unsigned events);
AEV_EXPORT int aev_io_set(aev_io *w, int fd, unsigned events);
AEV_EXPORT int aev_io_start(aev_io *w);
AEV_EXPORT int aev_io_stop(aev_io *w);
AEV_EXPORT int aev_io_fd(const aev_io *w);
AEV_EXPORT unsigned aev_io_events(const aev_io *w);

/* ---- timer ------------------------------------------------------------------------------ */

/*
 * Fires `after` ns after aev_timer_start() (measured from the clock at start, not from the
 * loop's cached time, so a stale cache never makes it early), then every `repeat` ns if repeat
 * is nonzero. Never fires early. If the loop falls behind by several repeats, the callback runs
 * once and the next expiry is the first one still in the future (no burst of catch-up calls).
 * Errors: -EINVAL (NULL w, loop or cb; after or repeat negative); aev_timer_init: -EBUSY while
 * the loop holds it; aev_timer_set: -EBUSY while active; aev_timer_start and aev_timer_again:
 * -ENOMEM.
 */
AEV_EXPORT int aev_timer_init(aev_timer *w, aev_loop *loop, aev_cb cb, aev_time_t after,
                              aev_time_t repeat);
AEV_EXPORT int aev_timer_set(aev_timer *w, aev_time_t after, aev_time_t repeat);
AEV_EXPORT int aev_timer_start(aev_timer *w);
AEV_EXPORT int aev_timer_stop(aev_timer *w);
/* libev's "again": active and repeating: restart with `repeat` from now; active and not
 * repeating: stop; inactive and repeating: start with `repeat`; else nothing. A pending event
 * of the timer is dropped first in every case (the expiry it reports is stale). */
AEV_EXPORT int aev_timer_again(aev_timer *w);
/* Sets the repeat interval used from the next expiry or aev_timer_again() on. -EINVAL if < 0. */
AEV_EXPORT int aev_timer_set_repeat(aev_timer *w, aev_time_t repeat);
AEV_EXPORT aev_time_t aev_timer_repeat(const aev_timer *w);
/* Time left until expiry (0 if due or inactive). */
AEV_EXPORT aev_time_t aev_timer_remaining(const aev_timer *w);

/* ---- idle, prepare, check --------------------------------------------------------------- */

/* Idle: runs once per iteration while no watcher of equal or higher priority is pending; while
 * any idle watcher is active the loop polls without blocking. Prepare: runs just before the loop
 * polls. Check: runs just after. Errors: -EINVAL (NULL w, loop or cb, or a watcher of another
 * type); init also -EBUSY (the loop still holds it); start also -ENOMEM. */
AEV_EXPORT int aev_idle_init(aev_idle *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_idle_start(aev_idle *w);
AEV_EXPORT int aev_idle_stop(aev_idle *w);
AEV_EXPORT int aev_prepare_init(aev_prepare *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_prepare_start(aev_prepare *w);
AEV_EXPORT int aev_prepare_stop(aev_prepare *w);
AEV_EXPORT int aev_check_init(aev_check *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_check_start(aev_check *w);
AEV_EXPORT int aev_check_stop(aev_check *w);

/* ---- async ------------------------------------------------------------------------------ */

/*
 * Wakes a loop from any thread or signal handler. Sends made before the loop notes the watcher
 * are coalesced into one AEV_ASYNC callback. A send to a stopped watcher is remembered and
 * delivered when it is started again. Errors of init: -EINVAL (NULL w, loop or cb), -EBUSY
 * (pending; an active watcher that is not pending is not detected: stop it first).
 */
AEV_EXPORT int aev_async_init(aev_async *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_async_start(aev_async *w);
AEV_EXPORT int aev_async_stop(aev_async *w);
/*
 * Thread-safe and async-signal-safe; never blocks; preserves errno. Costs a system call at most
 * once per loop iteration, and only when the loop may be sleeping. Every write the calling thread
 * made before the call is visible to the callback run for it. Errors: -EINVAL (NULL, or not an
 * initialised async watcher). See docs/async.md for what is safe around stop and destroy.
 */
AEV_EXPORT int aev_async_send(aev_async *w);
/* True from aev_async_send() until the loop has noted the send (before the callback runs). */
AEV_EXPORT bool aev_async_sent(const aev_async *w);

/* ---- signal ------------------------------------------------------------------------------ */

/*
 * Watches a signal for the process. Any number of watchers per signal, in any number of loops
 * and threads: each loop's watchers are invoked in that loop's thread, never in the handler.
 * Signals arriving in a burst before the loop notices are coalesced into one AEV_SIGNAL
 * callback; none is lost. While at least one watcher (in any loop) is active for a signal, the
 * library's handler is installed for it (sigaction); when the last one stops, the previous
 * disposition is restored. Signal masks are never changed: a signal blocked in every thread is
 * not delivered. The handler preserves errno. Up to 32 loops may watch one signal at a time.
 * Destroying a loop gives up its signals; its still-active signal watchers are never called.
 */
typedef struct aev_signal {
    aev_watcher base;
    /* private: */
    struct aev_signal *next_; /* other watchers of the same signal in this loop */
    int signum_;
} aev_signal;

/* Errors: -EINVAL (NULL w, loop or cb; signum not a valid catchable signal, e.g. 0, SIGKILL,
 * SIGSTOP, >= NSIG); init: -EBUSY while the loop holds it; aev_signal_set: -EBUSY while
 * active; start: -ENOMEM, -ENOSPC (too many loops watch this signal), and errors of
 * sigaction(). aev_signal_signum(NULL) is -EINVAL. */
AEV_EXPORT int aev_signal_init(aev_signal *w, aev_loop *loop, aev_cb cb, int signum);
AEV_EXPORT int aev_signal_set(aev_signal *w, int signum);
AEV_EXPORT int aev_signal_start(aev_signal *w);
AEV_EXPORT int aev_signal_stop(aev_signal *w);
AEV_EXPORT int aev_signal_signum(const aev_signal *w);

/* ---- child ------------------------------------------------------------------------------- */

/*
 * Watches a child process (pid > 0) or any child (pid 0) for termination, and with trace also
 * for stop/continue. The exit status is read from the watcher in the callback. Only watched
 * pids are reaped (through a pidfd on Linux); a pid-0 watcher reaps any child. A child that
 * exited before the watcher started is still reported. On termination the pid's watchers are
 * stopped before their callback (a dead pid cannot report again); pid-0 watchers stay active.
 * If someone else reaps a watched child, its watchers get AEV_ERROR with -ECHILD. Watch a pid
 * from one loop only.
 */
typedef struct aev_child {
    aev_watcher base;
    /* private: */
    struct aev_child *next_;
    int pid_;
    int rpid_;
    int rstatus_;
    int fd_; /* pidfd, or -1 */
} aev_child;

/* Errors: -EINVAL (NULL w, loop or cb; pid < 0); init: -EBUSY while the loop holds it;
 * aev_child_set: -EBUSY while active; start: -ENOMEM, and kernel errors (-ESRCH: no such
 * process; -ECHILD: not a child of this process). */
AEV_EXPORT int aev_child_init(aev_child *w, aev_loop *loop, aev_cb cb, int pid, int trace);
AEV_EXPORT int aev_child_set(aev_child *w, int pid, int trace);
AEV_EXPORT int aev_child_start(aev_child *w);
AEV_EXPORT int aev_child_stop(aev_child *w);
/* The pid that changed state and its status as waitpid(2) reports it (WIFEXITED, ...); both 0
 * until the first event after a start. aev_child_rpid(NULL) is -EINVAL, rstatus(NULL) 0. */
AEV_EXPORT int aev_child_rpid(const aev_child *w);
AEV_EXPORT int aev_child_rstatus(const aev_child *w);

/* ---- periodic ---------------------------------------------------------------------------- */

typedef struct aev_periodic aev_periodic;
/* Returns the next wall-clock time (ns since the epoch) strictly after `now`. Called at start,
 * again, each firing and each wall-clock jump; it must not start or stop periodic watchers. */
typedef aev_time_t (*aev_reschedule_cb)(aev_periodic *w, aev_time_t now);

/*
 * Fires at wall-clock times (CLOCK_REALTIME, ns since the epoch): with interval 0, once at
 * `offset`; with interval > 0, at offset + k * interval (the next one after now); with a
 * reschedule callback, at the times it returns. Never fires early by the wall clock. After a
 * firing, an interval watcher moves to the first slot after now (missed ones are coalesced); a
 * one-shot is stopped before its callback runs. When the wall clock jumps (a step of more than
 * 1 ms against the monotonic clock), interval watchers move to their first slot after the new
 * time, reschedule callbacks are asked again, and one-shots keep their absolute time (so they
 * fire at once if the clock jumped past it). While periodics are active the loop sleeps at most
 * 1 s at a time, so a jump is noticed within a second. See docs/api.md.
 */
struct aev_periodic {
    aev_watcher base;
    /* private: */
    aev_time_t at_;
    aev_time_t offset_;
    aev_time_t interval_;
    aev_reschedule_cb reschedule_;
};

/* Errors: -EINVAL (NULL w, loop or cb; interval < 0; offset < 0 with interval 0 is allowed
 * (fires at once)); init: -EBUSY while the loop holds it; aev_periodic_set: -EBUSY while active;
 * start: -ENOMEM. start and again:
 * -EINVAL if the reschedule callback returns a time not after now (the watcher is then left
 * stopped); at a firing or a jump such a callback stops the watcher and its callback gets
 * AEV_ERROR (with AEV_PERIODIC at a firing), aev_watcher_error() -EINVAL. */
AEV_EXPORT int aev_periodic_init(aev_periodic *w, aev_loop *loop, aev_cb cb, aev_time_t offset,
                                 aev_time_t interval, aev_reschedule_cb reschedule);
AEV_EXPORT int aev_periodic_set(aev_periodic *w, aev_time_t offset, aev_time_t interval,
                                aev_reschedule_cb reschedule);
AEV_EXPORT int aev_periodic_start(aev_periodic *w);
AEV_EXPORT int aev_periodic_stop(aev_periodic *w);
/* Recomputes the next time from now (after changing the reschedule logic); keeps a pending
 * event. Starts the watcher if inactive. */
AEV_EXPORT int aev_periodic_again(aev_periodic *w);
/* The next wall-clock time it fires at (0 if inactive). */
AEV_EXPORT aev_time_t aev_periodic_at(const aev_periodic *w);
/* The wall clock now, ns since the epoch (CLOCK_REALTIME). */
AEV_EXPORT aev_time_t aev_wall_time(void);

/* ---- stat -------------------------------------------------------------------------------- */

/*
 * Watches a path for changes of its stat(2) data (stat follows symlinks). The callback receives
 * AEV_STAT when any of dev, ino, mode, nlink, uid, gid, rdev, size, mtime or ctime (with ns)
 * differs from what the watcher saw last; aev_stat_prev() and aev_stat_attr() give the data
 * before and after. A path that does not exist is legal: its data reads as all zero (st_nlink
 * 0), so its appearance and disappearance are changes. On Linux the loop learns of changes
 * through inotify (the path and its parent directory are watched), with a slow timer as a safety
 * net (the larger of the interval and 30 s); elsewhere, or with AEV_STAT_INOTIFY=0 in the
 * environment, or where inotify cannot watch the path, the path is polled every `interval` ns
 * (0: 1 s). The path string is the program's and must stay valid while the watcher is active.
 */
typedef struct aev_stat {
    aev_watcher base;
    /* private: */
    const char *path_;
    struct stat prev_, attr_;
    aev_timer timer_;       /* internal, unreferenced: polling, or the safety net; its `at_`
                               holds the configured interval */
    struct aev_stat *next_; /* link in the loop's list of active stat watchers */
    int wd_, pwd_;          /* inotify watches of the path and of its parent, or -1 */
} aev_stat;

/* Errors: -EINVAL (NULL w, loop or cb; path NULL or empty; interval < 0); init: -EBUSY while the
 * loop holds it; aev_stat_set: -EBUSY while active; start: -ENOMEM. aev_stat_stat (loop thread):
 * refreshes the data now (no callback for what it absorbs) and returns 0 or the -errno of stat(2),
 * -EINVAL for NULL. aev_stat_attr/prev return NULL for NULL; prev is the data as of the previous
 * callback. */
AEV_EXPORT int aev_stat_init(aev_stat *w, aev_loop *loop, aev_cb cb, const char *path,
                             aev_time_t interval);
AEV_EXPORT int aev_stat_set(aev_stat *w, const char *path, aev_time_t interval);
AEV_EXPORT int aev_stat_start(aev_stat *w);
AEV_EXPORT int aev_stat_stop(aev_stat *w);
AEV_EXPORT int aev_stat_stat(aev_stat *w);
AEV_EXPORT const struct stat *aev_stat_attr(const aev_stat *w);
AEV_EXPORT const struct stat *aev_stat_prev(const aev_stat *w);

/* ---- embed ------------------------------------------------------------------------------ */

/*
 * Runs another loop (`other`, e.g. an epoll or kqueue loop) from this one. While the watcher is
 * active, the outer loop watches the embedded loop's backend fd and its next timer deadline;
 * when the embedded loop has something to do (io events, an async send, a due timer or
 * periodic, pending events or idle watchers, a fork to recover from) the watcher becomes pending
 * with AEV_EMBED. With a NULL callback the library then sweeps the embedded loop itself;
 * otherwise the callback decides and normally calls aev_embed_sweep(). Do not run `other` by
 * itself while it is embedded (only through aev_embed_sweep()), and stop the watcher before
 * destroying either loop. Only loops whose backend has a pollable fd can be embedded: epoll and
 * kqueue, not poll. The watcher holds one reference on the outer loop; its internal watchers
 * hold none.
 */
typedef struct aev_embed {
    aev_watcher base;
    /* private: */
    aev_loop *other_;
    aev_io io_;            /* the embedded loop's backend fd, in the outer loop */
    aev_timer timer_;      /* the embedded loop's next deadline, in the outer loop */
    aev_prepare prepare_;  /* re-arms io_ and timer_ before each poll of the outer loop */
    aev_time_t armed_at_;  /* deadline timer_ was armed for, INT64_MAX if none */
    unsigned backend_gen_; /* other's backend generation io_ was armed for */
    unsigned held_;        /* internal watchers started without a reference (bit mask) */
} aev_embed;

/* Errors: -EINVAL (NULL w or loop, other NULL or equal to loop); -ENOTSUP (other's backend has
 * no pollable fd, e.g. poll); init: -EBUSY while the loop holds it; aev_embed_set: -EBUSY while
 * active; start: -ENOMEM. A NULL cb means
 * "sweep automatically". */
AEV_EXPORT int aev_embed_init(aev_embed *w, aev_loop *loop, aev_cb cb, aev_loop *other);
AEV_EXPORT int aev_embed_set(aev_embed *w, aev_loop *other);
AEV_EXPORT int aev_embed_start(aev_embed *w);
AEV_EXPORT int aev_embed_stop(aev_embed *w);
/* Runs one iteration of the embedded loop that never blocks (aev_run(other, AEV_RUN_NOWAIT)) and
 * returns its result; -EINVAL for a NULL or never-initialised watcher. */
AEV_EXPORT int aev_embed_sweep(aev_embed *w);

/* ---- fork, cleanup ----------------------------------------------------------------------- */

/*
 * Fork watchers run (AEV_FORK) in the child at the start of the loop's first iteration after
 * fork(), after the loop rebuilt its kernel state. Cleanup watchers run (AEV_CLEANUP) when the
 * loop is destroyed, before anything is freed; they do not keep aev_run() going. Both hold no
 * reference on the loop. Errors: -EINVAL (NULL w, loop or cb, or a watcher of another type);
 * init also -EBUSY (the loop still holds it); start also -ENOMEM.
 */
typedef struct aev_fork {
    aev_watcher base;
} aev_fork;

typedef struct aev_cleanup {
    aev_watcher base;
} aev_cleanup;

AEV_EXPORT int aev_fork_init(aev_fork *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_fork_start(aev_fork *w);
AEV_EXPORT int aev_fork_stop(aev_fork *w);
AEV_EXPORT int aev_cleanup_init(aev_cleanup *w, aev_loop *loop, aev_cb cb);
AEV_EXPORT int aev_cleanup_start(aev_cleanup *w);
AEV_EXPORT int aev_cleanup_stop(aev_cleanup *w);

/* ---- loop suspend/resume and the invoke hook --------------------------------------------- */

/*
 * aev_suspend() / aev_resume(): for a process that stops running its loop for a while (e.g.
 * across a system suspend or while a host runtime takes over): time spent suspended does not
 * count for timers — each timer's remaining time at suspend is what it has left at resume.
 * Periodic watchers are rescheduled from the wall clock at resume. Calls nest (the last resume
 * counts); while suspended, aev_run() returns -EBUSY. NULL is ignored.
 */
AEV_EXPORT void aev_suspend(aev_loop *loop);
AEV_EXPORT void aev_resume(aev_loop *loop);

/*
 * Replaces the step that invokes pending callbacks (for integration with another runtime that
 * wants to run them itself, e.g. on its own scheduler): the loop calls hook(loop) instead, and
 * the hook calls aev_invoke_pending(loop) when it wants them run. NULL restores the default.
 */
typedef void (*aev_invoke_hook)(aev_loop *loop);
AEV_EXPORT void aev_set_invoke_hook(aev_loop *loop, aev_invoke_hook hook);
/* Invokes all pending callbacks, by priority (what the loop does after each poll). */
AEV_EXPORT void aev_invoke_pending(aev_loop *loop);

/* ---- post: run a function on the loop's thread ------------------------------------------- */

/*
 * A poster is a bounded multi-producer queue of (function, argument) pairs drained on the loop's
 * thread, built on an async watcher: unlike a bare aev_async_send(), nothing coalesces. Every
 * successful aev_post() runs its function exactly once, on the loop thread, in the order the
 * posts claimed their slots (so in program order for one posting thread). Memory is fixed at
 * creation: 24 bytes per slot, capacity rounded up to a power of two.
 * The poster is an active, referenced watcher: it keeps aev_run() going until destroyed (or
 * offset with aev_unref()).
 */
typedef struct aev_poster aev_poster;
typedef void (*aev_post_fn)(void *arg);

/* Loop thread. capacity 1..2^24. Errors: -EINVAL (NULL out or loop, capacity out of range),
 * -ENOMEM. */
AEV_EXPORT int aev_poster_new(aev_poster **out, aev_loop *loop, uint32_t capacity);
/* Any thread, and signal handlers: never blocks, never allocates, preserves errno.
 * Errors: -EINVAL (NULL poster or fn), -EAGAIN (the queue is full: nothing was queued). */
AEV_EXPORT int aev_post(aev_poster *p, aev_post_fn fn, void *arg);
/* Loop thread, once no other thread can still post. Posts not yet run are dropped and their
 * count returned (>= 0). Errors: -EINVAL (NULL), -EBUSY (called from one of its own functions). */
AEV_EXPORT int aev_poster_destroy(aev_poster *p);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCEV_H */
