/*
 * Async watchers, mostly seen from one thread: argument checks, coalescing, the `sent` flag,
 * sends to stopped watchers, priorities, many watchers, nested runs, sends from a signal
 * handler, the system-call budget of aev_async_send() and fork().
 *
 * The program interposes write(2) (see below) to count the wakeup writes made by each thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dlsym(RTLD_NEXT), syscall() */
#endif

#include "testutil.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* ---- write(2) interposition ---------------------------------------------------------------- */

/*
 * The library wakes a sleeping loop with write(2) on its eventfd or pipe. Defining write() here
 * makes the library's calls land in this function (the executable comes first in the symbol
 * search order), which counts them per thread and forwards to the next definition (libc's, or a
 * sanitizer's interceptor). Calls that arrive before the forward is resolved, or from inside
 * dlsym() itself, go straight to the system call.
 */
typedef ssize_t (*aevt_write_fn)(int fd, const void *buf, size_t n);

static _Atomic(aevt_write_fn) real_write;
static _Thread_local unsigned long tl_writes;
/* While set, write() sets errno to EIO even when it succeeds (which POSIX allows), so that a
 * send that does not save and restore errno around its write is caught. */
static atomic_int clobber_errno;
static _Thread_local int tl_resolving;

static aevt_write_fn resolve_write(void)
{
    aevt_write_fn fn = atomic_load_explicit(&real_write, memory_order_acquire);
    if (fn || tl_resolving)
        return fn;
    tl_resolving = 1;
    void *sym = dlsym(RTLD_NEXT, "write");
    tl_resolving = 0;
    fn = (aevt_write_fn)sym;
    if (fn)
        atomic_store_explicit(&real_write, fn, memory_order_release);
    return fn;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    tl_writes++;
    aevt_write_fn fn = resolve_write();
    ssize_t rc = fn ? fn(fd, buf, n) : syscall(SYS_write, fd, buf, n);
    if (atomic_load_explicit(&clobber_errno, memory_order_relaxed))
        errno = EIO;
    return rc;
}

/* read(2) is interposed the same way, to count the loop thread's drains of its wakeup fd. */
typedef ssize_t (*aevt_read_fn)(int fd, void *buf, size_t n);
static _Atomic(aevt_read_fn) real_read;
static _Thread_local unsigned long tl_reads;

ssize_t read(int fd, void *buf, size_t n)
{
    tl_reads++;
    aevt_read_fn fn = atomic_load_explicit(&real_read, memory_order_acquire);
    if (!fn && !tl_resolving) {
        tl_resolving = 1;
        fn = (aevt_read_fn)dlsym(RTLD_NEXT, "read");
        tl_resolving = 0;
        if (fn)
            atomic_store_explicit(&real_read, fn, memory_order_release);
    }
    return fn ? fn(fd, buf, n) : syscall(SYS_read, fd, buf, n);
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* What a callback saw; attached to the watcher through its data pointer. */
typedef struct rec {
    int calls;
    unsigned events;        /* events of the last call */
    uint64_t iteration;     /* aev_iteration() during the last call */
    unsigned depth;         /* aev_depth() during the last call */
    bool sent_in_cb;        /* aev_async_sent() on entry of the last call */
    int resend;             /* sends to make from inside the callback (then decremented) */
    int stop_self;          /* stop the watcher in the callback */
    aev_watcher *also_stop; /* another watcher to stop in the callback (a guard timer) */
} rec;

static void rec_cb(aev_watcher *w, unsigned events)
{
    rec *r = w->data;
    aev_async *a = (aev_async *)w;
    r->calls++;
    r->events = events;
    r->iteration = aev_iteration(aev_watcher_loop(w));
    r->depth = aev_depth(aev_watcher_loop(w));
    r->sent_in_cb = aev_async_sent(a);
    if (r->resend > 0) {
        r->resend--;
        assert_int_equal(aev_async_send(a), 0);
    }
    if (r->stop_self)
        assert_int_equal(aev_async_stop(a), 0);
    if (r->also_stop)
        assert_int_equal(aev_stop(r->also_stop), 0);
}

static void start_async(aev_async *a, aev_loop *loop, rec *r)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(aev_async_init(a, loop, rec_cb), 0);
    a->base.data = r;
    assert_int_equal(aev_async_start(a), 0);
}

/* A guard timer: if it fires, the loop did not wake up in time. It stops the watcher given as
 * its data (so that aev_run returns) and records the timeout. */
static int guard_fired;

static void guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    guard_fired++;
    if (w->data)
        aev_stop(w->data);
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

static void start_guard(aev_timer *t, aev_loop *loop, aev_time_t after, aev_watcher *victim)
{
    guard_fired = 0;
    assert_int_equal(aev_timer_init(t, loop, guard_cb, after, 0), 0);
    t->base.data = victim;
    assert_int_equal(aev_timer_start(t), 0);
}

/* Sends once from another thread after a delay. */
typedef struct delayed_send {
    aev_async *a;
    long delay_ms;
    atomic_int rc;
} delayed_send;

static void *delayed_send_thread(void *p)
{
    delayed_send *d = p;
    aevt_sleep_ms(d->delay_ms);
    atomic_store(&d->rc, aev_async_send(d->a));
    return NULL;
}

static void timer_count_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    int *n = w->data;
    (*n)++;
}

/* ---- argument checks ----------------------------------------------------------------------- */

static void noop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

static void test_init_errors(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    assert_int_equal(aev_async_init(NULL, loop, noop_cb), -EINVAL);
    assert_int_equal(aev_async_init(&a, NULL, noop_cb), -EINVAL);
    assert_int_equal(aev_async_init(&a, loop, NULL), -EINVAL);
    assert_int_equal(aev_async_init(&a, loop, noop_cb), 0);
    assert_false(aev_is_active(&a.base));
    assert_false(aev_is_pending(&a.base));
}

static void test_send_null(void **state)
{
    (void)state;
    assert_int_equal(aev_async_send(NULL), -EINVAL);
}

static void test_start_stop_errors(void **state)
{
    (void)state;
    aev_async zeroed;
    memset(&zeroed, 0, sizeof(zeroed));
    assert_int_equal(aev_async_start(NULL), -EINVAL);
    assert_int_equal(aev_async_stop(NULL), -EINVAL);
    assert_int_equal(aev_async_start(&zeroed), -EINVAL);
    assert_int_equal(aev_async_stop(&zeroed), -EINVAL);
}

/* ---- one send, one callback ---------------------------------------------------------------- */

static void test_send_then_nowait_one_callback(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);
    assert_true(aev_is_active(&a.base));

    assert_int_equal(aev_async_send(&a), 0);
    /* The watcher stays active after its callback, so the loop still has work: 1. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    assert_int_equal(r.depth, 1);
    assert_true(aev_is_active(&a.base));

    /* Nothing more was sent: no second callback. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);

    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(r.calls, 1);
}

/* ---- coalescing ---------------------------------------------------------------------------- */

static void test_coalesce_1000_sends(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);

    for (int i = 0; i < 1000; i++)
        assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_async_stop(&a), 0);
}

typedef struct sender_arg {
    aev_async *a;
    int n;
    atomic_int failures;
    atomic_ulong writes; /* write(2) calls this thread made */
} sender_arg;

static void *send_n_thread(void *p)
{
    sender_arg *s = p;
    unsigned long w0 = tl_writes;
    for (int i = 0; i < s->n; i++) {
        if (aev_async_send(s->a) != 0)
            atomic_fetch_add(&s->failures, 1);
    }
    atomic_store(&s->writes, tl_writes - w0);
    return NULL;
}

static void test_coalesce_1000_sends_from_thread(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);

    sender_arg s = {.a = &a, .n = 1000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_n_thread, &s), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&s.failures), 0);
    /* The loop was not running, so it cannot have been sleeping: no wakeup write was due. */
    assert_int_equal(atomic_load(&s.writes), 0);
    assert_true(aev_async_sent(&a));

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* Bitmap of the pipe fds open in this process (fds below 1024). */
static void pipe_fds(unsigned char map[1024])
{
    memset(map, 0, 1024);
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        char path[64], target[64];
        if (de->d_name[0] == '.' || fd >= 1024)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0 && strncmp(target, "pipe:", 5) == 0)
            map[fd] = 1;
    }
    closedir(d);
}

/* A full self-pipe never blocks a send: both ends are non-blocking, and a loop whose wakeup
 * pipe was filled to the brim still wakes for a send from another thread and drains it all. */
static void test_full_wakeup_pipe_never_blocks(void **state)
{
    (void)state;
    unsigned char before[1024], after[1024];
    pipe_fds(before);
    aev_loop *loop = NULL;
    assert_int_equal(aev_loop_new(&loop, AEV_FLAG_PIPE_WAKEUP), 0);
    pipe_fds(after);
    int rfd = -1, wfd = -1;
    for (int fd = 0; fd < 1024; fd++) {
        if (!after[fd] || before[fd])
            continue;
        int fl = fcntl(fd, F_GETFL);
        assert_true(fl >= 0);
        assert_true(fl & O_NONBLOCK); /* a blocking end could stall a sender or the loop */
        if ((fl & O_ACCMODE) == O_WRONLY)
            wfd = fd;
        else
            rfd = fd;
    }
    assert_true(rfd >= 0 && wfd >= 0);

    /* Fill the pipe the way a storm of wakeups that the loop never drained would. */
    char junk[4096] = {0};
    size_t filled = 0;
    for (;;) {
        ssize_t n = write(wfd, junk, sizeof junk);
        if (n < 0) {
            assert_int_equal(errno, EAGAIN);
            break;
        }
        filled += (size_t)n;
    }
    assert_true(filled > 0);

    aev_async a;
    rec r;
    aev_timer guard;
    start_async(&a, loop, &r);
    r.stop_self = 1;
    r.also_stop = &guard.base;
    start_guard(&guard, loop, AEV_SEC(5), &a.base);
    delayed_send d = {.a = &a, .delay_ms = 50};
    pthread_t th;
    int64_t t0 = aevt_mono_ns();
    assert_int_equal(pthread_create(&th, NULL, delayed_send_thread, &d), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&d.rc), 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(r.calls, 1);
    assert_true(aevt_mono_ns() - t0 < AEV_SEC(4));
    /* The loop drained every byte, its own and ours. */
    char c;
    assert_int_equal(read(rfd, &c, 1), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* "returns immediately": sends never block, even when nobody drains the wakeup fd for a long
 * time (the loop is not running at all). */
static void test_send_never_blocks_without_loop(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);

    sender_arg s = {.a = &a, .n = 200000};
    int64_t t0 = aevt_mono_ns();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_n_thread, &s), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    int64_t elapsed = aevt_mono_ns() - t0;
    assert_int_equal(atomic_load(&s.failures), 0);
    /* 200000 sends that mostly do one atomic exchange; seconds would mean something blocked. */
    assert_true(elapsed < AEV_SEC(10));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* ---- the sent flag ------------------------------------------------------------------------- */

static void test_sent_flag_lifecycle(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(aev_async_init(&a, loop, rec_cb), 0);
    a.base.data = &r;
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_async_start(&a), 0);
    assert_false(aev_async_sent(&a));

    assert_int_equal(aev_async_send(&a), 0);
    assert_true(aev_async_sent(&a));
    assert_true(aev_async_sent(&a)); /* reading it does not clear it */

    r.resend = 1; /* the first callback sends again */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_false(r.sent_in_cb);      /* noted before the callback */
    assert_true(aev_async_sent(&a)); /* the send from inside the callback */
    uint64_t first = r.iteration;

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 2);
    assert_false(r.sent_in_cb);
    assert_true(r.iteration > first);
    assert_false(aev_async_sent(&a));

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 2);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* `sent` tells whether a send is outstanding, not whether the watcher is pending. */
static void test_sent_is_not_pending(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);

    /* Pending without a send. */
    assert_int_equal(aev_feed_event(&a.base, AEV_ASYNC), 0);
    assert_true(aev_is_pending(&a.base));
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    assert_false(aev_is_pending(&a.base));

    /* Sent, but not pending until the loop notes it. */
    assert_int_equal(aev_async_send(&a), 0);
    assert_true(aev_async_sent(&a));
    assert_false(aev_is_pending(&a.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 2);
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_async_stop(&a), 0);
}

/* ---- sends to stopped watchers ------------------------------------------------------------- */

static void test_send_before_start_is_remembered(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(aev_async_init(&a, loop, rec_cb), 0);
    a.base.data = &r;

    assert_int_equal(aev_async_send(&a), 0);
    assert_true(aev_async_sent(&a));
    /* An iteration with the watcher stopped: nothing to call, the send is kept. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(r.calls, 0);
    assert_true(aev_async_sent(&a));

    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    assert_false(aev_async_sent(&a));

    /* Delivered once: a stop and start later it does not come back. */
    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_async_stop(&a), 0);
}

/*
 * A watcher sent but never started is re-initialised. It sat on the loop's stack of sent
 * watchers, with watchers sent before and after it: their sends must survive (clearing its link
 * in place would cut the stack, and the watchers below it would stay "sent" forever, every later
 * send to them a no-op). The re-initialised watcher starts fresh, without the old send.
 */
static void test_reinit_sent_unstarted_keeps_other_sends(void **state)
{
    aev_loop *loop = *state;
    aev_async a, w, c;
    rec ra, rw, rc;
    memset(&ra, 0, sizeof(ra));
    memset(&rw, 0, sizeof(rw));
    memset(&rc, 0, sizeof(rc));
    assert_int_equal(aev_async_init(&a, loop, rec_cb), 0);
    assert_int_equal(aev_async_init(&w, loop, rec_cb), 0);
    assert_int_equal(aev_async_init(&c, loop, rec_cb), 0);
    a.base.data = &ra;
    c.base.data = &rc;
    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_async_send(&w), 0);
    assert_int_equal(aev_async_send(&c), 0);

    assert_int_equal(aev_async_init(&w, loop, rec_cb), 0);
    w.base.data = &rw;
    assert_false(aev_async_sent(&w));
    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_async_start(&w), 0);
    assert_int_equal(aev_async_start(&c), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(ra.calls, 1);
    assert_int_equal(rc.calls, 1);
    assert_int_equal(rw.calls, 0);

    /* All three work as ever. */
    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_async_send(&w), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(ra.calls, 2);
    assert_int_equal(rw.calls, 1);
    assert_int_equal(rc.calls, 1);

    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_async_stop(&w), 0);
    assert_int_equal(aev_async_stop(&c), 0);
}

static void test_send_before_start_from_thread(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(aev_async_init(&a, loop, rec_cb), 0);
    a.base.data = &r;

    sender_arg s = {.a = &a, .n = 3};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_n_thread, &s), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(aev_async_sent(&a));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(r.calls, 0);

    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(aev_async_stop(&a), 0);
}

static void test_stop_while_sent_then_start_delivers(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    start_async(&a, loop, &r);

    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_async_stop(&a), 0);
    assert_true(aev_async_sent(&a));
    assert_false(aev_is_pending(&a.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(r.calls, 0);
    assert_true(aev_async_sent(&a));

    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);

    /* Stopped first, sent afterwards: the same. */
    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_async_send(&a), 0);
    assert_true(aev_async_sent(&a));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(r.calls, 1);
    assert_true(aev_async_sent(&a));
    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 2);
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_async_stop(&a), 0);
}

/* A thread sends to a stopped watcher while the loop sleeps on a timer: the loop may wake and
 * look, but must keep the send until the watcher is started. */
static void test_thread_send_to_stopped_watcher_of_sleeping_loop(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    int timer_calls = 0;
    aev_timer t;
    memset(&r, 0, sizeof(r));
    assert_int_equal(aev_async_init(&a, loop, rec_cb), 0);
    a.base.data = &r;
    assert_int_equal(aev_timer_init(&t, loop, timer_count_cb, AEV_MSEC(300), 0), 0);
    t.base.data = &timer_calls;
    assert_int_equal(aev_timer_start(&t), 0);

    delayed_send d = {.a = &a, .delay_ms = 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_send_thread, &d), 0);
    /* Only the timer is active: the run ends when it has fired. */
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&d.rc), 0);
    assert_int_equal(timer_calls, 1);
    assert_int_equal(r.calls, 0);
    assert_true(aev_async_sent(&a));

    assert_int_equal(aev_async_start(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    assert_false(aev_async_sent(&a));
    assert_int_equal(aev_async_stop(&a), 0);
}

/* High-priority callback that checks and stops the other (pending) watcher. */
typedef struct stop_other {
    aev_async *victim;
    int calls;
    bool victim_was_pending;
    bool victim_sent;
    bool victim_pending_after;
} stop_other;

static void stop_other_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    stop_other *s = w->data;
    s->calls++;
    s->victim_was_pending = aev_is_pending(&s->victim->base);
    s->victim_sent = aev_async_sent(s->victim);
    assert_int_equal(aev_async_stop(s->victim), 0);
    s->victim_pending_after = aev_is_pending(&s->victim->base);
}

static void test_stop_of_pending_removes_event(void **state)
{
    aev_loop *loop = *state;
    aev_async hi, lo;
    rec r_lo;
    stop_other s = {.victim = &lo};

    assert_int_equal(aev_async_init(&hi, loop, stop_other_cb), 0);
    hi.base.data = &s;
    assert_int_equal(aev_set_priority(&hi.base, AEV_MAXPRI), 0);
    assert_int_equal(aev_async_start(&hi), 0);
    start_async(&lo, loop, &r_lo);

    assert_int_equal(aev_async_send(&lo), 0);
    assert_int_equal(aev_async_send(&hi), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(s.calls, 1);
    /* Both sends were noted in the same iteration: the low one was pending, not invoked. */
    assert_true(s.victim_was_pending);
    /* Noted means no longer "sent" (the header: true until the loop has noted the send). */
    assert_false(s.victim_sent);
    assert_false(s.victim_pending_after);
    assert_int_equal(r_lo.calls, 0);
    assert_int_equal(aev_pending_count(loop), 0);

    /* The removed event is gone for good, not parked for the next start. */
    assert_int_equal(aev_async_start(&lo), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r_lo.calls, 0);
    assert_false(aev_async_sent(&lo));

    assert_int_equal(aev_async_stop(&lo), 0);
    assert_int_equal(aev_async_stop(&hi), 0);
}

/* ---- priorities ---------------------------------------------------------------------------- */

static int order_log[16];
static int order_len;

static void order_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_ASYNC);
    assert_true(order_len < 16);
    order_log[order_len++] = (int)(intptr_t)w->data;
}

static void test_priorities(void **state)
{
    aev_loop *loop = *state;
    /* Started in a scrambled order, sent from lowest to highest priority. */
    static const int prios[] = {0, -2, 2, -1, 1};
    aev_async a[5];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(aev_async_init(&a[i], loop, order_cb), 0);
        a[i].base.data = (void *)(intptr_t)prios[i];
        assert_int_equal(aev_set_priority(&a[i].base, prios[i]), 0);
        assert_int_equal(aev_async_start(&a[i]), 0);
        assert_int_equal(aev_priority(&a[i].base), prios[i]);
    }
    order_len = 0;
    for (int p = AEV_MINPRI; p <= AEV_MAXPRI; p++) {
        for (int i = 0; i < 5; i++) {
            if (prios[i] == p)
                assert_int_equal(aev_async_send(&a[i]), 0);
        }
    }
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(order_len, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(order_log[i], AEV_MAXPRI - i);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aev_async_stop(&a[i]), 0);
}

/* Within one priority events run in the order they became pending; the loop notes the sends of
 * one thread in the order they were made. */
static void test_same_priority_in_send_order(void **state)
{
    aev_loop *loop = *state;
    aev_async a[5];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(aev_async_init(&a[i], loop, order_cb), 0);
        a[i].base.data = (void *)(intptr_t)i;
        assert_int_equal(aev_async_start(&a[i]), 0);
    }
    static const int send_order[] = {3, 0, 4, 1, 2};
    order_len = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(aev_async_send(&a[send_order[i]]), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(order_len, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(order_log[i], send_order[i]);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aev_async_stop(&a[i]), 0);
}

/* ---- many watchers ------------------------------------------------------------------------- */

static void count_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_ASYNC);
    int *calls = w->data;
    (*calls)++;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void test_1000_watchers_random_subset(void **state)
{
    aev_loop *loop = *state;
    enum { N = 1000, K = 37 };
    aev_async *a = calloc(N, sizeof(*a));
    int *calls = calloc(N, sizeof(*calls));
    bool *chosen = calloc(N, sizeof(*chosen));
    assert_non_null(a);
    assert_non_null(calls);
    assert_non_null(chosen);
    for (int i = 0; i < N; i++) {
        assert_int_equal(aev_async_init(&a[i], loop, count_cb), 0);
        a[i].base.data = &calls[i];
        assert_int_equal(aev_async_start(&a[i]), 0);
    }

    uint64_t seed = (uint64_t)aevt_mono_ns() | 1;
    uint64_t rng = seed;
    for (int k = 0; k < K;) {
        int i = (int)(xorshift(&rng) % N);
        if (chosen[i])
            continue;
        chosen[i] = true;
        k++;
        /* Some of them sent twice: still one callback. */
        assert_int_equal(aev_async_send(&a[i]), 0);
        if (k % 3 == 0)
            assert_int_equal(aev_async_send(&a[i]), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    for (int i = 0; i < N; i++) {
        if (calls[i] != (chosen[i] ? 1 : 0))
            fail_msg("watcher %d: %d calls, expected %d (seed %llu)", i, calls[i],
                     chosen[i] ? 1 : 0, (unsigned long long)seed);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(calls[i], chosen[i] ? 1 : 0);

    for (int i = 0; i < N; i++)
        assert_int_equal(aev_async_stop(&a[i]), 0);
    free(chosen);
    free(calls);
    free(a);
}

static void test_10000_watchers_one_sent(void **state)
{
    aev_loop *loop = *state;
    enum { N = 10000, SENT = 7777 };
    aev_async *a = calloc(N, sizeof(*a));
    int *calls = calloc(N, sizeof(*calls));
    assert_non_null(a);
    assert_non_null(calls);
    for (int i = 0; i < N; i++) {
        assert_int_equal(aev_async_init(&a[i], loop, count_cb), 0);
        a[i].base.data = &calls[i];
        assert_int_equal(aev_async_start(&a[i]), 0);
    }
    assert_int_equal(aev_async_send(&a[SENT]), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    int total = 0;
    for (int i = 0; i < N; i++)
        total += calls[i];
    assert_int_equal(total, 1);
    assert_int_equal(calls[SENT], 1);

    /* The same loop keeps working: the other end of the array this time. */
    assert_int_equal(aev_async_send(&a[0]), 0);
    assert_int_equal(aev_async_send(&a[N - 1]), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(calls[0], 1);
    assert_int_equal(calls[N - 1], 1);

    for (int i = 0; i < N; i++)
        assert_int_equal(aev_async_stop(&a[i]), 0);
    free(calls);
    free(a);
}

/* ---- nested aev_run ------------------------------------------------------------------------ */

typedef struct nest {
    aev_async outer, inner;
    aev_timer guard;
    int outer_calls, inner_calls;
    unsigned inner_depth;
    int nested_rc;
    int inner_calls_after_nested;
} nest;

static void nest_inner_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_ASYNC);
    nest *n = w->data;
    n->inner_calls++;
    n->inner_depth = aev_depth(aev_watcher_loop(w));
    assert_int_equal(aev_async_stop(&n->inner), 0);
    assert_int_equal(aev_break(aev_watcher_loop(w), AEV_BREAK_ONE), 0);
}

static void nest_outer_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_ASYNC);
    nest *n = w->data;
    aev_loop *loop = aev_watcher_loop(w);
    n->outer_calls++;
    assert_int_equal(aev_depth(loop), 1);
    assert_int_equal(aev_async_send(&n->inner), 0);
    n->nested_rc = aev_run(loop, AEV_RUN_DEFAULT);
    n->inner_calls_after_nested = n->inner_calls;
    assert_int_equal(aev_async_stop(&n->outer), 0);
    assert_int_equal(aev_timer_stop(&n->guard), 0);
}

static void test_nested_run_in_callback(void **state)
{
    aev_loop *loop = *state;
    nest n;
    memset(&n, 0, sizeof(n));
    assert_int_equal(aev_async_init(&n.outer, loop, nest_outer_cb), 0);
    assert_int_equal(aev_async_init(&n.inner, loop, nest_inner_cb), 0);
    n.outer.base.data = &n;
    n.inner.base.data = &n;
    assert_int_equal(aev_async_start(&n.outer), 0);
    assert_int_equal(aev_async_start(&n.inner), 0);
    start_guard(&n.guard, loop, AEV_SEC(5), &n.outer.base);

    assert_int_equal(aev_async_send(&n.outer), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);

    assert_int_equal(guard_fired, 0);
    assert_int_equal(n.outer_calls, 1);
    assert_int_equal(n.inner_calls_after_nested, 1);
    assert_int_equal(n.inner_calls, 1);
    assert_int_equal(n.inner_depth, 2);
    /* The outer watcher and the guard were still active when the nested run broke out. */
    assert_int_equal(n.nested_rc, 1);
    assert_int_equal(aev_depth(loop), 0);
}

/* ---- sends from a prepare callback --------------------------------------------------------- */

typedef struct prep_send {
    aev_async *a;
    int sends_left;
} prep_send;

static void prep_send_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_PREPARE);
    prep_send *p = w->data;
    if (p->sends_left > 0) {
        p->sends_left--;
        assert_int_equal(aev_async_send(p->a), 0);
    }
}

/* A send made just before the loop polls (from a prepare callback) must keep the loop from
 * sleeping, without any wakeup write. */
static void test_send_from_prepare_does_not_sleep(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    aev_prepare p;
    aev_timer guard;
    prep_send ps;
    start_async(&a, loop, &r);
    ps.a = &a;
    ps.sends_left = 1;
    assert_int_equal(aev_prepare_init(&p, loop, prep_send_cb), 0);
    p.base.data = &ps;
    assert_int_equal(aev_prepare_start(&p), 0);
    start_guard(&guard, loop, AEV_SEC(3), NULL);

    unsigned long w0 = tl_writes;
    int64_t t0 = aevt_mono_ns();
    for (int i = 0; i < 3 && r.calls == 0 && guard_fired == 0; i++)
        aev_run(loop, AEV_RUN_ONCE);
    int64_t elapsed = aevt_mono_ns() - t0;
    assert_int_equal(tl_writes - w0, 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(r.calls, 1);
    assert_true(elapsed < AEV_SEC(2));

    assert_int_equal(aev_timer_stop(&guard), 0);
    assert_int_equal(aev_prepare_stop(&p), 0);
    assert_int_equal(aev_async_stop(&a), 0);
}

/* ---- signal handlers ----------------------------------------------------------------------- */

static aev_async *volatile sig_async;
static volatile sig_atomic_t sig_calls;
static volatile sig_atomic_t sig_send_ok;  /* every send in the handler returned 0 */
static volatile sig_atomic_t sig_errno_ok; /* every send left the handler's errno alone */
static volatile sig_atomic_t sig_writes;   /* wakeup writes made by the sends in the handler */

static void sigusr1_handler(int signo)
{
    (void)signo;
    int saved = errno;
    errno = 777;
    unsigned long w0 = tl_writes;
    int rc = aev_async_send(sig_async);
    sig_writes += (sig_atomic_t)(tl_writes - w0);
    if (rc != 0)
        sig_send_ok = 0;
    if (errno != 777)
        sig_errno_ok = 0;
    sig_calls++;
    errno = saved;
}

static void install_sigusr1(aev_async *a, struct sigaction *old)
{
    sig_async = a;
    sig_calls = 0;
    sig_writes = 0;
    sig_send_ok = 1;
    sig_errno_ok = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sigusr1_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the loop's poll gets EINTR */
    assert_int_equal(sigaction(SIGUSR1, &sa, old), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
}

static void test_send_from_signal_handler_preserves_errno(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    struct sigaction old;
    start_async(&a, loop, &r);
    install_sigusr1(&a, &old);

    errno = 12345;
    assert_int_equal(raise(SIGUSR1), 0);
    int after = errno;
    assert_int_equal(after, 12345);
    assert_int_equal(sig_calls, 1);
    assert_int_equal(sig_send_ok, 1);
    assert_int_equal(sig_errno_ok, 1);
    assert_true(aev_async_sent(&a));

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    assert_int_equal(aev_async_stop(&a), 0);
}

typedef struct killer_arg {
    pthread_t target;
    long delay_ms;
    atomic_int rc;
} killer_arg;

static void *killer_thread(void *p)
{
    killer_arg *k = p;
    aevt_sleep_ms(k->delay_ms);
    atomic_store(&k->rc, pthread_kill(k->target, SIGUSR1));
    return NULL;
}

static void test_signal_handler_send_wakes_blocked_loop(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    aev_timer guard;
    struct sigaction old;
    start_async(&a, loop, &r);
    r.stop_self = 1;
    start_guard(&guard, loop, AEV_SEC(5), &a.base);
    r.also_stop = &guard.base;
    install_sigusr1(&a, &old);

    killer_arg k = {.target = pthread_self(), .delay_ms = 100};
    pthread_t th;
    atomic_store(&clobber_errno, 1);
    int64_t t0 = aevt_mono_ns();
    assert_int_equal(pthread_create(&th, NULL, killer_thread, &k), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    int64_t elapsed = aevt_mono_ns() - t0;
    atomic_store(&clobber_errno, 0);
    assert_int_equal(pthread_join(th, NULL), 0);

    assert_int_equal(atomic_load(&k.rc), 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(sig_calls, 1);
    assert_int_equal(sig_send_ok, 1);
    assert_int_equal(sig_errno_ok, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_ASYNC);
    /* The loop was blocked in its backend, so the send had to write (and errno survived it). */
    assert_int_equal(sig_writes, 1);
    assert_true(elapsed >= AEV_MSEC(95));
    assert_true(elapsed < AEV_SEC(4));
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
}

/* With epoll and an eventfd, the wakeup fd is edge-triggered and never drained: a cross-thread
 * wakeup costs the loop no read(2). Level-triggered paths (self-pipe, poll) must drain it. */
static void test_wakeup_read_cost(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    aev_timer guard;
    start_async(&a, loop, &r);
    r.stop_self = 1;
    start_guard(&guard, loop, AEV_SEC(5), &a.base);
    r.also_stop = &guard.base;
    delayed_send d = {.a = &a, .delay_ms = 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_send_thread, &d), 0);
    unsigned long r0 = tl_reads;
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    unsigned long reads = tl_reads - r0;
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&d.rc), 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(r.calls, 1);
    int edge = aev_backend(loop) == AEV_BACKEND_EPOLL && !(aevt_flags() & AEV_FLAG_PIPE_WAKEUP);
    if (edge && reads != 0)
        fail_msg("%lu read(2) calls on the loop thread for an edge-triggered eventfd wakeup",
                 reads);
    if (!edge && reads == 0)
        fail_msg("a level-triggered wakeup fd was never drained");
}

/* ---- system-call budget -------------------------------------------------------------------- */

typedef struct inner_sends {
    aev_async *target;
    int n;
    unsigned long writes; /* write(2) calls made by the callback's sends */
} inner_sends;

static void send_many_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    inner_sends *s = w->data;
    unsigned long w0 = tl_writes;
    for (int i = 0; i < s->n; i++)
        assert_int_equal(aev_async_send(s->target), 0);
    s->writes += tl_writes - w0;
}

static void test_loop_thread_sends_never_write(void **state)
{
    aev_loop *loop = *state;
    aev_async a, b;
    rec rb;
    inner_sends s = {.target = &b, .n = 1000};
    assert_int_equal(aev_async_init(&a, loop, send_many_cb), 0);
    a.base.data = &s;
    assert_int_equal(aev_async_start(&a), 0);
    start_async(&b, loop, &rb);

    /* Let the loop run once first, so that any lazily set-up state exists. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);

    unsigned long w0 = tl_writes;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(tl_writes - w0, 0);

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(s.writes, 0);
    assert_true(aev_async_sent(&b));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(rb.calls, 1);
    /* Nothing the loop thread did wrote anything (the loop only reads its wakeup fd). */
    assert_int_equal(tl_writes - w0, 0);

    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_async_stop(&b), 0);
}

/* The same from callbacks of a run that could block (a timer is pending, so the loop announces
 * that it may sleep before it finds the send and polls without blocking). */
static void test_loop_thread_sends_in_blocking_run_never_write(void **state)
{
    aev_loop *loop = *state;
    aev_async a, b;
    rec rb;
    aev_timer guard;
    inner_sends s = {.target = &b, .n = 1000};
    assert_int_equal(aev_async_init(&a, loop, send_many_cb), 0);
    a.base.data = &s;
    assert_int_equal(aev_async_start(&a), 0);
    start_async(&b, loop, &rb);
    start_guard(&guard, loop, AEV_SEC(5), NULL);

    unsigned long w0 = tl_writes;
    assert_int_equal(aev_async_send(&a), 0);
    int64_t t0 = aevt_mono_ns();
    for (int i = 0; i < 4 && rb.calls == 0 && guard_fired == 0; i++)
        assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_true(aevt_mono_ns() - t0 < AEV_SEC(4));
    assert_int_equal(guard_fired, 0);
    assert_int_equal(rb.calls, 1);
    if (s.writes != 0)
        fail_msg("%lu wakeup writes by sends from a callback on the loop thread", s.writes);
    assert_int_equal(tl_writes - w0, 0);

    assert_int_equal(aev_timer_stop(&guard), 0);
    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_async_stop(&b), 0);
}

typedef struct budget {
    aev_async a;
    aev_timer guard;
    atomic_int done;     /* helper: all sends made (release) */
    atomic_ulong writes; /* helper's write(2) count */
    atomic_int failures;
    int calls; /* loop thread only */
    long delay_ms;
    int n;
} budget;

static void budget_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    budget *b = w->data;
    b->calls++;
    if (atomic_load_explicit(&b->done, memory_order_acquire)) {
        assert_int_equal(aev_async_stop(&b->a), 0);
        assert_int_equal(aev_timer_stop(&b->guard), 0);
    }
}

static void *budget_thread(void *p)
{
    budget *b = p;
    aevt_sleep_ms(b->delay_ms); /* long enough for the loop to be blocked in its backend */
    unsigned long w0 = tl_writes;
    for (int i = 0; i < b->n; i++) {
        if (aev_async_send(&b->a) != 0)
            atomic_fetch_add(&b->failures, 1);
    }
    atomic_store_explicit(&b->done, 1, memory_order_release);
    if (aev_async_send(&b->a) != 0)
        atomic_fetch_add(&b->failures, 1);
    atomic_store(&b->writes, tl_writes - w0);
    return NULL;
}

static void test_thread_sends_write_at_most_once_per_iteration(void **state)
{
    aev_loop *loop = *state;
    budget *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->n = 1000;
    b->delay_ms = 100;
    assert_int_equal(aev_async_init(&b->a, loop, budget_cb), 0);
    b->a.base.data = b;
    assert_int_equal(aev_async_start(&b->a), 0);
    start_guard(&b->guard, loop, AEV_SEC(5), &b->a.base);

    uint64_t it0 = aev_iteration(loop);
    unsigned long w0 = tl_writes;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, budget_thread, b), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);
    uint64_t iterations = aev_iteration(loop) - it0;
    unsigned long writes = atomic_load(&b->writes);

    assert_int_equal(guard_fired, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(atomic_load(&b->failures), 0);
    assert_true(b->calls >= 1);
    assert_int_equal(tl_writes - w0, 0); /* the loop thread itself never writes */
    /* The loop slept until the first send, which therefore had to wake it with one write. */
    if (writes < 1)
        fail_msg("no wakeup write at all for a loop blocked in its backend");
    if (writes > iterations)
        fail_msg("%lu wakeup writes for %llu loop iterations (1001 sends)", writes,
                 (unsigned long long)iterations);
    free(b);
}

/* Sends made while the loop is running callbacks (so it cannot be sleeping) never write. */
typedef struct busy {
    aev_async a, b;
    aev_timer guard;
    atomic_int go;       /* loop -> helper: start sending */
    atomic_int sent_all; /* helper -> loop: done */
    atomic_ulong writes;
    int b_calls;
    bool helper_finished_in_cb;
} busy;

static void busy_a_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    busy *s = w->data;
    atomic_store(&s->go, 1);
    int64_t deadline = aevt_mono_ns() + AEV_SEC(5);
    while (!atomic_load(&s->sent_all) && aevt_mono_ns() < deadline)
        sched_yield();
    s->helper_finished_in_cb = atomic_load(&s->sent_all) != 0;
    assert_int_equal(aev_async_stop(&s->a), 0);
}

static void busy_b_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    busy *s = w->data;
    s->b_calls++;
    assert_int_equal(aev_async_stop(&s->b), 0);
    assert_int_equal(aev_timer_stop(&s->guard), 0);
}

static void *busy_thread(void *p)
{
    busy *s = p;
    int64_t deadline = aevt_mono_ns() + AEV_SEC(5);
    while (!atomic_load(&s->go) && aevt_mono_ns() < deadline)
        sched_yield();
    unsigned long w0 = tl_writes;
    for (int i = 0; i < 1000; i++)
        aev_async_send(&s->b);
    atomic_store(&s->writes, tl_writes - w0);
    atomic_store(&s->sent_all, 1);
    return NULL;
}

static void test_no_write_while_loop_runs_callbacks(void **state)
{
    aev_loop *loop = *state;
    busy *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(aev_async_init(&s->a, loop, busy_a_cb), 0);
    assert_int_equal(aev_async_init(&s->b, loop, busy_b_cb), 0);
    s->a.base.data = s;
    s->b.base.data = s;
    assert_int_equal(aev_async_start(&s->a), 0);
    assert_int_equal(aev_async_start(&s->b), 0);
    start_guard(&s->guard, loop, AEV_SEC(5), &s->b.base);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, busy_thread, s), 0);
    assert_int_equal(aev_async_send(&s->a), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);

    assert_int_equal(rc, 0);
    assert_true(s->helper_finished_in_cb);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(s->b_calls, 1);
    unsigned long writes = atomic_load(&s->writes);
    free(s);
    if (writes != 0)
        fail_msg("%lu wakeup writes by 1000 sends made while the loop ran a callback", writes);
}

/* errno survives a send that makes the wakeup write (write() here clobbers errno). */
typedef struct errno_send {
    aev_async *a;
    atomic_int errno_after;
    atomic_int rc;
    atomic_ulong writes;
} errno_send;

static void *errno_send_thread(void *p)
{
    errno_send *e = p;
    aevt_sleep_ms(100); /* the loop is blocked in its backend by now */
    unsigned long w0 = tl_writes;
    errno = 4321;
    int rc = aev_async_send(e->a);
    atomic_store(&e->errno_after, errno);
    atomic_store(&e->writes, tl_writes - w0);
    atomic_store(&e->rc, rc);
    return NULL;
}

static void test_send_that_writes_preserves_errno(void **state)
{
    aev_loop *loop = *state;
    aev_async a;
    rec r;
    aev_timer guard;
    start_async(&a, loop, &r);
    r.stop_self = 1;
    start_guard(&guard, loop, AEV_SEC(5), &a.base);
    r.also_stop = &guard.base;

    errno_send e = {.a = &a};
    pthread_t th;
    atomic_store(&clobber_errno, 1);
    assert_int_equal(pthread_create(&th, NULL, errno_send_thread, &e), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);
    atomic_store(&clobber_errno, 0);

    assert_int_equal(rc, 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(atomic_load(&e.rc), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(atomic_load(&e.writes), 1);
    assert_int_equal(atomic_load(&e.errno_after), 4321);
}

/* ---- fork ---------------------------------------------------------------------------------- */

/* State of the child's loop; its callbacks use no cmocka assertion, since a failing one would
 * jump back into the test runner's copy in the child. */
typedef struct child_state {
    aev_async *a;
    aev_timer guard;
    int calls;
    unsigned events;
    int guard_fired;
} child_state;

static void child_async_cb(aev_watcher *w, unsigned events)
{
    child_state *c = w->data;
    c->calls++;
    c->events = events;
    aev_async_stop(c->a);
    aev_timer_stop(&c->guard);
}

static void child_guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    child_state *c = w->data;
    c->guard_fired++;
    aev_async_stop(c->a);
}

/* Runs in the child: a thread sends while the child's loop sleeps. Exit status 0 on success. */
static int fork_child(aev_loop *loop, aev_async *a, bool explicit_fork)
{
    child_state c;
    memset(&c, 0, sizeof(c));
    c.a = a;
    if (explicit_fork && aev_loop_fork(loop) != 0)
        return 10;
    /* Re-initialising a stopped watcher is allowed; the child wants its own callback. */
    if (aev_async_stop(a) != 0 || aev_async_init(a, loop, child_async_cb) != 0)
        return 16;
    a->base.data = &c;
    if (aev_async_start(a) != 0)
        return 16;
    if (aev_timer_init(&c.guard, loop, child_guard_cb, AEV_SEC(5), 0) != 0)
        return 16;
    c.guard.base.data = &c;
    if (aev_timer_start(&c.guard) != 0)
        return 16;

    delayed_send d = {.a = a, .delay_ms = 100};
    pthread_t th;
    if (pthread_create(&th, NULL, delayed_send_thread, &d) != 0)
        return 11;
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    pthread_join(th, NULL);
    if (atomic_load(&d.rc) != 0)
        return 12;
    if (c.guard_fired)
        return 13; /* the send did not wake the child's loop */
    if (rc != 0)
        return 14;
    if (c.calls != 1 || c.events != AEV_ASYNC)
        return 15;
    return 0;
}

static int wait_child(pid_t pid)
{
    int status = 0;
    int64_t deadline = aevt_mono_ns() + AEV_SEC(20);
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            break;
        if (got < 0)
            fail_msg("waitpid: %s", strerror(errno));
        if (aevt_mono_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("child did not exit within 20 s");
        }
        aevt_sleep_ms(10);
    }
    if (!WIFEXITED(status))
        fail_msg("child died abnormally (status 0x%x)", status);
    return WEXITSTATUS(status);
}

static void run_fork_test(aev_loop *loop, bool explicit_fork)
{
    aev_async a;
    rec r;
    start_async(&a, loop, &r);
    /* The parent has used its loop (wakeup fd and poll set exist) before it forks. */
    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fork_child(loop, &a, explicit_fork));

    /* Parent: the child's send at ~100 ms must not wake this loop, which waits for a 400 ms
     * timer. An early return from the backend would end this iteration before the timer. */
    int timer_calls = 0;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, timer_count_cb, AEV_MSEC(400), 0), 0);
    t.base.data = &timer_calls;
    int64_t t0 = aevt_mono_ns();
    assert_int_equal(aev_timer_start(&t), 0);
    int64_t first_return = 0;
    for (int i = 0; i < 10 && timer_calls == 0; i++) {
        aev_run(loop, AEV_RUN_ONCE);
        if (first_return == 0)
            first_return = aevt_mono_ns() - t0;
    }
    assert_int_equal(timer_calls, 1);
    assert_int_equal(r.calls, 1);
    if (first_return < AEV_MSEC(350))
        fail_msg("the parent's loop woke after %lld ms, before its 400 ms timer",
                 (long long)(first_return / 1000000));

    int status = wait_child(pid);
    if (status != 0)
        fail_msg("child failed with status %d (13: its loop was not woken by the send)", status);

    /* The parent's loop still works: a send from this thread ... */
    assert_int_equal(aev_async_send(&a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 2);

    /* ... and a send from another thread wakes it from a blocking run. */
    aev_timer guard;
    r.stop_self = 1;
    start_guard(&guard, loop, AEV_SEC(5), &a.base);
    r.also_stop = &guard.base;
    delayed_send d = {.a = &a, .delay_ms = 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_send_thread, &d), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&d.rc), 0);
    assert_int_equal(guard_fired, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(r.calls, 3);
}

static void test_fork_child_loop_wakes(void **state)
{
    run_fork_test(*state, false);
}

static void test_fork_child_explicit_loop_fork(void **state)
{
    run_fork_test(*state, true);
}

int main(void)
{
    resolve_write();
    /* Every blocking test has a guard timer; this catches a loop that ignores even that, below
     * CTest's 120 s TIMEOUT. */
    aevt_watchdog(100);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_null, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_start_stop_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_then_nowait_one_callback, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_coalesce_1000_sends, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_coalesce_1000_sends_from_thread, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test(test_full_wakeup_pipe_never_blocks),
        cmocka_unit_test_setup_teardown(test_wakeup_read_cost, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_never_blocks_without_loop, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_sent_flag_lifecycle, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_sent_is_not_pending, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_before_start_is_remembered, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_reinit_sent_unstarted_keeps_other_sends, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_before_start_from_thread, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_sent_then_start_delivers, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_thread_send_to_stopped_watcher_of_sleeping_loop,
                                        aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stop_of_pending_removes_event, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_priorities, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_same_priority_in_send_order, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_1000_watchers_random_subset, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_10000_watchers_one_sent, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_nested_run_in_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_from_prepare_does_not_sleep, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_from_signal_handler_preserves_errno, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_signal_handler_send_wakes_blocked_loop, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_loop_thread_sends_never_write, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_loop_thread_sends_in_blocking_run_never_write,
                                        aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_thread_sends_write_at_most_once_per_iteration,
                                        aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_no_write_while_loop_runs_callbacks, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_send_that_writes_preserves_errno, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fork_child_loop_wakes, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fork_child_explicit_loop_fork, aevt_setup,
                                        aevt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
