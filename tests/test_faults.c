/*
 * Fault injection (tests/fault): system calls that fail and memory that runs out. For each fault
 * the library must return the documented error (docs/api.md), report it to the affected watcher
 * only, keep every other watcher working, and leak nothing: the counting allocator's live blocks
 * and the process's fd count are the same before and after every test (the teardown checks), on
 * top of what ASan and valgrind see.
 *
 * Faults: every allocation failing in turn (a scenario with a watcher of every kind, and the
 * starts of the kinds with internal watchers), and all of them at once (the pending-queue slots
 * reserved at start must carry every event through); epoll_ctl refusing a fd (ENOSPC, ENOMEM):
 * an io watcher's, the wakeup fd, the inotify fd, a pidfd, an embedded loop's; io watchers
 * started while each allocation fails in turn, and registered while memory is gone (the
 * backend's room for a fd is reserved when its watcher starts); waits interrupted (EINTR) and
 * epoll_pwait2 missing; eventfd, pipe and epoll_create1 failing (EMFILE) at creation and at a
 * fork rebuild; the wakeup write interrupted or finding the fd full, the drain interrupted;
 * inotify unavailable, refused or interrupted; pidfd_open failing or missing; waitid
 * interrupted, or missing P_PIDFD; sigaction refusing. Tests of a fault that a backend never
 * meets (epoll_ctl under poll) skip.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "iotest.h"

#include <stdio.h>

#ifdef AEVT_FAULT_INJECTION

#include "fault.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

/* The backend of this run (AEV_BACKEND), found once in main(). */
static unsigned g_backend;

#define SKIP_UNLESS(cond, why)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("skipped: %s\n", why);                                                          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- fixture: the counting allocator, fd and allocator balance ---------------------------- */

static long g_blocks0;
static int g_fds0;

static int setup(void **state)
{
    (void)state;
    aevt_watchdog(120);
    aevf_disarm_all();
    aevf_alloc_reset();
    g_blocks0 = aevf_alloc_live_blocks();
    aev_set_allocator(aevf_realloc);
    g_fds0 = aevf_fd_count();
    return 0;
}

/* Nothing leaked: every block the library took is back, and every fd it opened is closed. */
static int teardown(void **state)
{
    (void)state;
    aevf_disarm_all();
    aevf_alloc_fail(0, 0);
    assert_int_equal(aevf_alloc_live_blocks(), g_blocks0);
    aev_set_allocator(NULL);
    assert_int_equal(aevf_fd_count(), g_fds0);
    alarm(0);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static aev_loop *loop_new(unsigned flags)
{
    aev_loop *loop = NULL;
    assert_int_equal(aev_loop_new(&loop, flags), 0);
    return loop;
}

static void assert_ok_or_nomem(int rc)
{
    if (rc != 0 && rc != -ENOMEM)
        fail_msg("expected 0 or -ENOMEM, got %d (%s)", rc, aev_strerror(rc));
}

static bool disposition_is_default(int sig)
{
    struct sigaction sa;
    assert_int_equal(sigaction(sig, NULL, &sa), 0);
    return sa.sa_handler == SIG_DFL;
}

/* A child process that exits (status 7) when the write end of its pipe is closed. */
typedef struct kid {
    pid_t pid;
    int fd; /* write end, kept by the parent */
} kid;

static void kid_start(kid *k)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    k->pid = fork();
    assert_true(k->pid >= 0);
    if (k->pid == 0) {
        char c;
        close(p[1]);
        while (read(p[0], &c, 1) < 0 && errno == EINTR)
            continue;
        _exit(7);
    }
    close(p[0]);
    k->fd = p[1];
}

/* Lets the child exit; with reap, also waits for it (when no watcher reaped it). */
static void kid_end(kid *k, bool reap)
{
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    if (reap) {
        int status = 0;
        assert_int_equal(waitpid(k->pid, &status, 0), k->pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 7);
    }
}

/* A temporary directory with one file in it, for stat watchers. */
typedef struct tmpfile_ {
    char dir[64];
    char path[96];
} tmpfile_;

static void tmp_make(tmpfile_ *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/aevt_fault.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/file", t->dir);
    int fd = open(t->path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
}

/* Appends to the file: its size changes, a change any stat watcher sees. */
static void append_byte(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
}

static void tmp_touch(tmpfile_ *t)
{
    append_byte(t->path);
}

static void tmp_remove(tmpfile_ *t)
{
    unlink(t->path);
    rmdir(t->dir);
}

/* A guard timer: if it fires, what the test waited for did not happen in time. */
static int g_guard_fired;

static void guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    g_guard_fired++;
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

static void guard_start(aev_timer *t, aev_loop *loop, int ms)
{
    g_guard_fired = 0;
    assert_int_equal(aev_timer_init(t, loop, guard_cb, AEV_MSEC(ms), 0), 0);
    assert_int_equal(aev_timer_start(t), 0);
}

/* Counts calls in the int that w->data points to, stops the watcher and ends the run. */
static void done_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    (*(int *)w->data)++;
    aev_stop(w);
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

static void nop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

/* Counts calls in the int that w->data points to. */
static void count_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    (*(int *)w->data)++;
}

/* Sends to an async watcher from another thread after a delay, while the loop sleeps. */
typedef struct sender {
    pthread_t thread;
    aev_async *async;
    long delay_ms;
} sender;

static void *sender_main(void *arg)
{
    sender *s = arg;
    aevt_sleep_ms(s->delay_ms);
    aev_async_send(s->async);
    return NULL;
}

static void sender_start(sender *s, aev_async *a, long delay_ms)
{
    s->async = a;
    s->delay_ms = delay_ms;
    assert_int_equal(pthread_create(&s->thread, NULL, sender_main, s), 0);
}

static void sender_join(sender *s)
{
    assert_int_equal(pthread_join(s->thread, NULL), 0);
}

/* Starts a, an async watcher of loop whose callback cb counts in *calls. */
static void async_start_counting(aev_async *a, aev_loop *loop, aev_cb cb, int *calls)
{
    assert_int_equal(aev_async_init(a, loop, cb), 0);
    a->base.data = calls;
    assert_int_equal(aev_async_start(a), 0);
}

/* Another thread sends to a (whose callback is done_cb, counting in *calls) delay_ms after the
 * loop went to sleep in aev_run(): the send must wake it, so that the run ends with *calls ==
 * want, before a 3 s guard timer would have ended it instead. */
static void send_wakes_loop(aev_loop *loop, aev_async *a, const int *calls, int want, long delay_ms)
{
    aev_timer guard;
    guard_start(&guard, loop, 3000);
    sender s;
    sender_start(&s, a, delay_ms);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    sender_join(&s);
    assert_int_equal(*calls, want);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
}

/* The loop's wakeup fds, found among the fds aev_loop_new() opened: an eventfd (rfd == wfd)
 * or the two ends of a pipe. */
static aev_loop *loop_new_wakeup(unsigned flags, int *rfd, int *wfd)
{
    aevf_fdset before;
    aevf_fdset_take(&before);
    aev_loop *loop = loop_new(flags);
    if (!(flags & AEV_FLAG_PIPE_WAKEUP)) {
        *rfd = *wfd = aevf_fdset_new(&before, "eventfd", 0);
        assert_true(*rfd >= 0);
        return loop;
    }
    int a = aevf_fdset_new(&before, "pipe", 0);
    assert_true(a >= 0);
    int b = aevf_fdset_new(&before, "pipe", a + 1);
    assert_true(b >= 0);
    bool a_writes = (fcntl(a, F_GETFL) & O_ACCMODE) == O_WRONLY;
    *rfd = a_writes ? b : a;
    *wfd = a_writes ? a : b;
    return loop;
}

/* Whether the loop's eventfd wakeup is edge-triggered (epoll): it is then never read, and its
 * counter (2^64 - 2, one write per iteration at most) never fills. */
static bool wakeup_is_edge(unsigned flags)
{
    return g_backend == AEV_BACKEND_EPOLL && !(flags & AEV_FLAG_PIPE_WAKEUP);
}

/* ---- 1. every allocation failing in turn ---------------------------------------------------- */

/* A loop with a watcher of every kind (and a poster); the callbacks count and check errors. */
typedef struct scen {
    aev_loop *loop, *inner;
    aev_io rd, wr;
    aev_timer timer, inner_timer;
    aev_idle idle;
    aev_prepare prepare;
    aev_check check;
    aev_async async;
    aev_signal sig;
    aev_child child, child_trace;
    aev_periodic periodic;
    aev_stat stat;
    aev_embed embed;
    aev_fork fork;
    aev_cleanup cleanup;
    aev_poster *poster;
    aev_watcher *ws[20];
    int nws;
    int pipe[2];
    int bad;      /* callbacks that saw what they should not have */
    int errors;   /* AEV_ERROR events (all with -ENOMEM) */
    int rd_reads; /* AEV_READ events of rd */
    int timer_calls, cleanup_calls, posted, stat_calls;
} scen;

static void scen_cb(aev_watcher *w, unsigned events)
{
    scen *sc = w->data;
    if (events & AEV_ERROR) {
        /* Only memory can run out here: the watcher failed with -ENOMEM and was stopped. */
        aev_errop op;
        if (aev_watcher_error(w, &op) != -ENOMEM || aev_is_active(w))
            sc->bad++;
        sc->errors++;
        return;
    }
    if (w == &sc->rd.base && (events & AEV_READ))
        sc->rd_reads++;
    if (w == &sc->timer.base)
        sc->timer_calls++;
    if (w == &sc->cleanup.base)
        sc->cleanup_calls++;
    if (w == &sc->stat.base)
        sc->stat_calls++;
}

static void scen_embed_cb(aev_watcher *w, unsigned events)
{
    scen *sc = w->data;
    if (events & AEV_EMBED) {
        if (aev_embed_sweep(&sc->embed) < 0)
            sc->bad++;
        return;
    }
    scen_cb(w, events);
}

static void scen_post_fn(void *arg)
{
    ((scen *)arg)->posted++;
}

static void scen_add(scen *sc, aev_watcher *w)
{
    w->data = sc;
    sc->ws[sc->nws++] = w;
}

static void scen_init(scen *sc, pid_t pid, const char *path)
{
    aev_loop *l = sc->loop;
    make_pipe(sc->pipe);
    assert_int_equal(aev_io_init(&sc->rd, l, scen_cb, sc->pipe[0], AEV_READ), 0);
    scen_add(sc, &sc->rd.base);
    assert_int_equal(aev_io_init(&sc->wr, l, scen_cb, sc->pipe[1], AEV_WRITE), 0);
    scen_add(sc, &sc->wr.base);
    assert_int_equal(aev_timer_init(&sc->timer, l, scen_cb, AEV_MSEC(1), 0), 0);
    scen_add(sc, &sc->timer.base);
    assert_int_equal(aev_idle_init(&sc->idle, l, scen_cb), 0);
    scen_add(sc, &sc->idle.base);
    assert_int_equal(aev_prepare_init(&sc->prepare, l, scen_cb), 0);
    scen_add(sc, &sc->prepare.base);
    assert_int_equal(aev_check_init(&sc->check, l, scen_cb), 0);
    scen_add(sc, &sc->check.base);
    assert_int_equal(aev_async_init(&sc->async, l, scen_cb), 0);
    scen_add(sc, &sc->async.base);
    assert_int_equal(aev_signal_init(&sc->sig, l, scen_cb, SIGUSR1), 0);
    scen_add(sc, &sc->sig.base);
    assert_int_equal(aev_child_init(&sc->child, l, scen_cb, pid, 0), 0);
    scen_add(sc, &sc->child.base);
    assert_int_equal(aev_child_init(&sc->child_trace, l, scen_cb, pid, 1), 0);
    scen_add(sc, &sc->child_trace.base);
    assert_int_equal(aev_periodic_init(&sc->periodic, l, scen_cb, 0, AEV_MSEC(5), NULL), 0);
    scen_add(sc, &sc->periodic.base);
    assert_int_equal(aev_stat_init(&sc->stat, l, scen_cb, path, AEV_MSEC(50)), 0);
    scen_add(sc, &sc->stat.base);
    assert_int_equal(aev_fork_init(&sc->fork, l, scen_cb), 0);
    scen_add(sc, &sc->fork.base);
    assert_int_equal(aev_cleanup_init(&sc->cleanup, l, scen_cb), 0);
    scen_add(sc, &sc->cleanup.base);
    if (sc->inner) {
        assert_int_equal(
            aev_timer_init(&sc->inner_timer, sc->inner, scen_cb, AEV_MSEC(1), AEV_MSEC(1)), 0);
        scen_add(sc, &sc->inner_timer.base);
        assert_int_equal(aev_embed_init(&sc->embed, l, scen_embed_cb, sc->inner), 0);
        scen_add(sc, &sc->embed.base);
    }
}

static int scen_new_poster(scen *sc)
{
    int rc = aev_poster_new(&sc->poster, sc->loop, 4);
    assert_ok_or_nomem(rc);
    if (rc == 0)
        assert_int_equal(aev_post(sc->poster, scen_post_fn, sc), 0);
    return rc;
}

/* How the scenario starts its watchers: in order; in reverse order with the poster first (so
 * that each kind is also the first to need an array no other kind has grown yet); or in order
 * at the highest priority, which the library's internal watchers use too (so that their
 * pending-queue reservations are the ones that need the queue to grow). */
enum { SCEN_FORWARD, SCEN_REVERSE, SCEN_MAXPRI, SCEN_VARIANTS };

/*
 * The scenario, with the allocation calls nth .. nth + times - 1 failing: create the loops,
 * start every watcher and a poster, run a few iterations; every call must return 0 or -ENOMEM,
 * and a watcher whose start failed must be inactive. Then with memory back, everything that
 * failed must start, the io and stat watchers must work, and after destroy nothing may be left:
 * blocks, fds, signal dispositions. Returns true when no allocation failed (nth was past the
 * last one).
 */
static bool scenario(pid_t pid, const char *path, unsigned long nth, unsigned long times,
                     int variant)
{
    bool reverse = variant == SCEN_REVERSE;
    long blocks0 = aevf_alloc_live_blocks();
    int fds0 = aevf_fd_count();
    unsigned long failed0 = aevf_alloc_failed();
    scen *sc = calloc(1, sizeof *sc);
    assert_non_null(sc);
    bool embeddable = g_backend != AEV_BACKEND_POLL;

    aevf_alloc_fail(nth, times);
    int rc = aev_loop_new(&sc->loop, 0);
    assert_ok_or_nomem(rc);
    if (rc < 0) {
        assert_null(sc->loop);
        goto done;
    }
    if (embeddable) {
        rc = aev_loop_new(&sc->inner, g_backend | AEV_FLAG_NOENV);
        assert_ok_or_nomem(rc);
    }
    scen_init(sc, pid, path);
    for (int k = 0; variant == SCEN_MAXPRI && k < sc->nws; k++)
        assert_int_equal(aev_set_priority(sc->ws[k], AEV_MAXPRI), 0);
    if (reverse)
        scen_new_poster(sc);
    for (int k = 0; k < sc->nws; k++) {
        aev_watcher *w = sc->ws[reverse ? sc->nws - 1 - k : k];
        rc = aev_start(w);
        assert_ok_or_nomem(rc);
        assert_int_equal(aev_is_active(w), rc == 0);
    }
    if (!reverse)
        scen_new_poster(sc);
    write_byte(sc->pipe[1]);
    assert_int_equal(aev_async_send(&sc->async), 0);
    if (aev_is_active(&sc->sig.base))
        raise(SIGUSR1);
    for (int i = 0; i < 3; i++) {
        aevt_sleep_ms(2);
        rc = aev_run(sc->loop, AEV_RUN_NOWAIT);
        if (rc < 0)
            fail_msg("aev_run: %d (%s)", rc, aev_strerror(rc));
    }
    assert_int_equal(sc->bad, 0);

    /* Memory is back: whatever failed starts now, and works. */
    aevf_alloc_fail(0, 0);
    for (int i = 0; i < sc->nws; i++) {
        aev_watcher *w = sc->ws[i];
        if (aev_is_active(w) || (w == &sc->timer.base && sc->timer_calls))
            continue;
        assert_int_equal(aev_start(w), 0);
    }
    if (!sc->poster)
        assert_int_equal(aev_poster_new(&sc->poster, sc->loop, 4), 0);
    int reads = sc->rd_reads;
    for (int i = 0; i < 2; i++) {
        rc = aev_run(sc->loop, AEV_RUN_NOWAIT);
        if (rc < 0)
            fail_msg("aev_run: %d (%s)", rc, aev_strerror(rc));
    }
    assert_true(sc->rd_reads > reads);
    /* The stat watcher sees a change (inotify, or polling every 50 ms). */
    int stats = sc->stat_calls;
    append_byte(path);
    for (int i = 0; i < 2000 && sc->stat_calls == stats; i++) {
        aevt_sleep_ms(1);
        assert_true(aev_run(sc->loop, AEV_RUN_NOWAIT) >= 0);
    }
    assert_true(sc->stat_calls > stats);
    assert_int_equal(sc->bad, 0);

    bool cleanup_active = aev_is_active(&sc->cleanup.base);
    assert_true(aev_poster_destroy(sc->poster) >= 0);
    for (int i = 0; i < sc->nws; i++) {
        if (sc->ws[i] != &sc->cleanup.base)
            assert_int_equal(aev_stop(sc->ws[i]), 0);
    }
    assert_int_equal(aev_loop_destroy(sc->loop), 0);
    assert_int_equal(sc->cleanup_calls, cleanup_active ? 1 : 0);
    if (sc->inner)
        assert_int_equal(aev_loop_destroy(sc->inner), 0);
    close_pair(sc->pipe);

done:
    aevf_alloc_fail(0, 0);
    free(sc);
    assert_int_equal(aevf_alloc_live_blocks(), blocks0);
    assert_int_equal(aevf_fd_count(), fds0);
    assert_true(disposition_is_default(SIGUSR1));
    assert_true(disposition_is_default(SIGCHLD));
    return aevf_alloc_failed() == failed0;
}

static void run_scenarios(unsigned long times)
{
    tmpfile_ t;
    tmp_make(&t);
    kid k;
    kid_start(&k);
    for (int variant = 0; variant < SCEN_VARIANTS; variant++) {
        unsigned long n = 1;
        while (!scenario(k.pid, t.path, n, times, variant)) {
            n++;
            if (n > 5000)
                fail_msg("the scenario never completed without an allocation failure");
        }
        /* The scenario allocates: n - 1 runs each had a failure injected. */
        assert_true(n > 10);
    }
    kid_end(&k, true);
    tmp_remove(&t);
}

static void test_alloc_each_fails_once(void **state)
{
    (void)state;
    run_scenarios(1);
}

static void test_alloc_fails_from_nth_on(void **state)
{
    (void)state;
    run_scenarios(AEVF_ALWAYS);
}

/*
 * The kinds that start internal watchers of the highest priority (the signal machinery's async
 * watcher, the SIGCHLD watcher and the pidfd's io watcher of a trace child watcher, the inotify
 * io watcher and the timer of a stat watcher, the io and timer watchers of an embed watcher),
 * started while that priority's pending queue is exactly full, so that their reservations are
 * the allocations that fail. Each allocation of the start fails in turn: the start returns 0 or
 * -ENOMEM, fails whole (inactive, nothing kept: blocks and fds come back at destroy), and
 * succeeds once memory is back.
 */
enum { INT_SIGNAL, INT_CHILD, INT_STAT, INT_EMBED, INT_KINDS };

static bool internal_start(int kind, unsigned long nth, pid_t pid, const char *path)
{
    long blocks0 = aevf_alloc_live_blocks();
    int fds0 = aevf_fd_count();
    unsigned long failed0 = aevf_alloc_failed();
    aev_loop *loop = loop_new(0);
    aev_loop *inner = kind == INT_EMBED ? loop_new(g_backend | AEV_FLAG_NOENV) : NULL;
    /* The wakeup watcher and 15 idle watchers: 16, the queue's first size. */
    aev_idle idles[15];
    for (int i = 0; i < 15; i++) {
        assert_int_equal(aev_idle_init(&idles[i], loop, nop_cb), 0);
        assert_int_equal(aev_set_priority(&idles[i].base, AEV_MAXPRI), 0);
        assert_int_equal(aev_idle_start(&idles[i]), 0);
    }
    /* The queue of priority 0 exists already: the watcher's own reservation needs nothing. */
    aev_idle zero;
    assert_int_equal(aev_idle_init(&zero, loop, nop_cb), 0);
    assert_int_equal(aev_idle_start(&zero), 0);
    assert_int_equal(aev_idle_stop(&zero), 0);
    union {
        aev_watcher base;
        aev_signal sig;
        aev_child child;
        aev_stat stat;
        aev_embed embed;
    } w;
    memset(&w, 0, sizeof w);
    if (kind == INT_SIGNAL)
        assert_int_equal(aev_signal_init(&w.sig, loop, count_cb, SIGUSR1), 0);
    else if (kind == INT_CHILD)
        assert_int_equal(aev_child_init(&w.child, loop, count_cb, pid, 1), 0);
    else if (kind == INT_STAT)
        assert_int_equal(aev_stat_init(&w.stat, loop, count_cb, path, 0), 0);
    else
        assert_int_equal(aev_embed_init(&w.embed, loop, NULL, inner), 0);
    int calls = 0;
    w.base.data = &calls;

    aevf_alloc_fail(nth, 1);
    int rc = aev_start(&w.base);
    aevf_alloc_fail(0, 0);
    assert_ok_or_nomem(rc);
    assert_int_equal(aev_is_active(&w.base), rc == 0);
    if (rc < 0)
        assert_int_equal(aev_start(&w.base), 0);
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);

    assert_int_equal(aev_stop(&w.base), 0);
    for (int i = 0; i < 15; i++)
        assert_int_equal(aev_idle_stop(&idles[i]), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    if (inner)
        assert_int_equal(aev_loop_destroy(inner), 0);
    assert_int_equal(aevf_alloc_live_blocks(), blocks0);
    assert_int_equal(aevf_fd_count(), fds0);
    assert_true(disposition_is_default(SIGUSR1));
    assert_true(disposition_is_default(SIGCHLD));
    return aevf_alloc_failed() == failed0;
}

static void test_alloc_internal_watchers(void **state)
{
    (void)state;
    tmpfile_ t;
    tmp_make(&t);
    kid k;
    kid_start(&k);
    for (int kind = 0; kind < INT_KINDS; kind++) {
        if (kind == INT_EMBED && g_backend == AEV_BACKEND_POLL)
            continue; /* a poll loop cannot be embedded */
        unsigned long n = 1;
        while (!internal_start(kind, n, k.pid, t.path)) {
            n++;
            assert_true(n < 100);
        }
        assert_true(n > 1);
    }
    kid_end(&k, true);
    tmp_remove(&t);
}

/* ---- 2. nothing lost when memory runs out --------------------------------------------------- */

#define LOSE_TIMERS 1000
#define LOSE_PIPES 70
#define LOSE_PER_PIPE 8
#define LOSE_IOS (LOSE_PIPES * LOSE_PER_PIPE)
#define LOSE_ASYNCS 200
#define LOSE_SIGS 4
#define LOSE_IDLES 3

typedef struct lose {
    aev_timer timers[LOSE_TIMERS];
    int tcalls[LOSE_TIMERS];
    aev_io ios[LOSE_IOS];
    int iocalls[LOSE_IOS];
    int pipes[LOSE_PIPES][2];
    aev_async asyncs[LOSE_ASYNCS];
    int acalls[LOSE_ASYNCS];
    aev_signal sigs[LOSE_SIGS];
    int scalls[LOSE_SIGS];
    aev_idle idles[LOSE_IDLES];
    int icalls[LOSE_IDLES];
    aev_child child;
    int ccalls;
    aev_timer guard;
} lose;

static int g_remaining, g_bad;
static lose *g_lose;

/* Every watcher of the test runs once: counted in its int, stopped, and the last one ends it. */
static void once_cb(aev_watcher *w, unsigned events)
{
    int *calls = w->data;
    if (events & AEV_ERROR)
        g_bad++;
    if ((*calls)++ == 0 && --g_remaining == 0) {
        aev_timer_stop(&g_lose->guard);
        aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
    }
    aev_stop(w);
}

static void *lose_sender(void *arg)
{
    lose *L = arg;
    aevt_sleep_ms(10);
    for (int i = LOSE_ASYNCS / 2; i < LOSE_ASYNCS; i++)
        aev_async_send(&L->asyncs[i]);
    return NULL;
}

static void prio(aev_watcher *w, int i)
{
    assert_int_equal(aev_set_priority(w, i % 5 - 2), 0);
}

static void test_nothing_lost_without_memory(void **state)
{
    (void)state;
    lose *L = calloc(1, sizeof *L);
    assert_non_null(L);
    g_lose = L;
    g_bad = 0;
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);

    for (int i = 0; i < LOSE_TIMERS; i++) {
        assert_int_equal(aev_timer_init(&L->timers[i], loop, once_cb, AEV_MSEC(30), 0), 0);
        L->timers[i].base.data = &L->tcalls[i];
        prio(&L->timers[i].base, i);
        assert_int_equal(aev_timer_start(&L->timers[i]), 0);
    }
    for (int p = 0; p < LOSE_PIPES; p++) {
        make_pipe(L->pipes[p]);
        for (int j = 0; j < LOSE_PER_PIPE; j++) {
            int i = p * LOSE_PER_PIPE + j;
            assert_int_equal(aev_io_init(&L->ios[i], loop, once_cb, L->pipes[p][0], AEV_READ), 0);
            L->ios[i].base.data = &L->iocalls[i];
            prio(&L->ios[i].base, i);
            assert_int_equal(aev_io_start(&L->ios[i]), 0);
        }
    }
    for (int i = 0; i < LOSE_ASYNCS; i++) {
        assert_int_equal(aev_async_init(&L->asyncs[i], loop, once_cb), 0);
        L->asyncs[i].base.data = &L->acalls[i];
        prio(&L->asyncs[i].base, i);
        assert_int_equal(aev_async_start(&L->asyncs[i]), 0);
    }
    for (int i = 0; i < LOSE_SIGS; i++) {
        assert_int_equal(aev_signal_init(&L->sigs[i], loop, once_cb, SIGUSR2), 0);
        L->sigs[i].base.data = &L->scalls[i];
        prio(&L->sigs[i].base, i);
        assert_int_equal(aev_signal_start(&L->sigs[i]), 0);
    }
    for (int i = 0; i < LOSE_IDLES; i++) {
        assert_int_equal(aev_idle_init(&L->idles[i], loop, once_cb), 0);
        L->idles[i].base.data = &L->icalls[i];
        assert_int_equal(aev_set_priority(&L->idles[i].base, AEV_MINPRI), 0);
        assert_int_equal(aev_idle_start(&L->idles[i]), 0);
    }
    assert_int_equal(aev_child_init(&L->child, loop, once_cb, k.pid, 0), 0);
    L->child.base.data = &L->ccalls;
    assert_int_equal(aev_child_start(&L->child), 0);
    guard_start(&L->guard, loop, 10000);
    g_remaining = LOSE_TIMERS + LOSE_IOS + LOSE_ASYNCS + LOSE_SIGS + LOSE_IDLES + 1;

    /* Nothing is registered yet: the first wait registers every fd with no memory left, which
     * the room reserved by the starts (poll's pollfd array, kqueue's changelist) allows. */
    aevf_alloc_fail(1, AEVF_ALWAYS);
    for (int p = 0; p < LOSE_PIPES; p++)
        write_byte(L->pipes[p][1]);
    for (int i = 0; i < LOSE_ASYNCS / 2; i++)
        assert_int_equal(aev_async_send(&L->asyncs[i]), 0);
    raise(SIGUSR2);
    kid_end(&k, false);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, lose_sender, L), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(thread, NULL), 0);
    unsigned long failed = aevf_alloc_failed();
    aevf_alloc_fail(0, 0);

    assert_true(rc >= 0);
    assert_int_equal(g_guard_fired, 0);
    assert_int_equal(g_bad, 0);
    assert_int_equal(g_remaining, 0);
    for (int i = 0; i < LOSE_TIMERS; i++)
        assert_int_equal(L->tcalls[i], 1);
    for (int i = 0; i < LOSE_IOS; i++)
        assert_int_equal(L->iocalls[i], 1);
    for (int i = 0; i < LOSE_ASYNCS; i++)
        assert_int_equal(L->acalls[i], 1);
    for (int i = 0; i < LOSE_SIGS; i++)
        assert_int_equal(L->scalls[i], 1);
    for (int i = 0; i < LOSE_IDLES; i++)
        assert_int_equal(L->icalls[i], 1);
    assert_int_equal(L->ccalls, 1);
    assert_true(WIFEXITED(aev_child_rstatus(&L->child)));
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&L->child)), 7);
    /* epoll tried to grow its event array after a wait that filled it (more than 64 fds were
     * ready): the memory really was gone, and that loses nothing either. */
    if (g_backend == AEV_BACKEND_EPOLL)
        assert_true(failed > 0);

    assert_int_equal(aev_loop_destroy(loop), 0);
    for (int p = 0; p < LOSE_PIPES; p++)
        close_pair(L->pipes[p]);
    assert_true(disposition_is_default(SIGUSR2));
    free(L);
}

/* ---- 3. the kernel or the backend refusing a fd --------------------------------------------- */

typedef struct iorec {
    aev_io io;
    int calls;
    unsigned events;
    int err;
    aev_errop op;
    bool active_in_cb;
} iorec;

static void iorec_cb(aev_watcher *w, unsigned events)
{
    iorec *r = (iorec *)w;
    r->calls++;
    r->events = events;
    r->err = aev_watcher_error(w, &r->op);
    r->active_in_cb = aev_is_active(w);
}

static void iorec_start(iorec *r, aev_loop *loop, int fd, unsigned events)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(aev_io_init(&r->io, loop, iorec_cb, fd, events), 0);
    assert_int_equal(aev_io_start(&r->io), 0);
}

static void assert_failed_with(const iorec *r, int err)
{
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->events, AEV_ERROR);
    assert_int_equal(r->err, err);
    assert_int_equal(r->op, AEV_ERROP_WATCH);
    assert_false(r->active_in_cb);
    assert_false(aev_is_active(&r->io.base));
}

/* epoll_ctl refuses to add a fd (the per-user watch limit): that watcher alone fails. */
static void test_epoll_ctl_add_enospc(void **state)
{
    (void)state;
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_ctl is epoll's");
    aev_loop *loop = loop_new(0);
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    iorec ra, rb;
    iorec_start(&ra, loop, a[0], AEV_READ);
    iorec_start(&rb, loop, b[0], AEV_READ);
    int fired = 0;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, count_cb, AEV_MSEC(20), 0), 0);
    t.base.data = &fired;
    assert_int_equal(aev_timer_start(&t), 0);
    write_byte(a[1]);
    write_byte(b[1]);

    aevf_arm(AEVF_EPOLL_CTL, a[0], 1, AEVF_ALWAYS, ENOSPC);
    run_nowait(loop);
    assert_true(aevf_injected(AEVF_EPOLL_CTL) >= 1);
    assert_failed_with(&ra, -ENOSPC);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(rb.events, AEV_READ);
    while (!fired)
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    assert_int_equal(ra.calls, 1);
    assert_true(rb.calls > 1); /* level-triggered: still readable */

    /* The limit lifted, the watcher starts again and works. */
    aevf_disarm(AEVF_EPOLL_CTL);
    assert_int_equal(aev_io_start(&ra.io), 0);
    run_nowait(loop);
    assert_int_equal(ra.calls, 2);
    assert_int_equal(ra.events, AEV_READ);
    assert_int_equal(ra.err, 0);

    aev_io_stop(&ra.io);
    aev_io_stop(&rb.io);
    assert_int_equal(aev_loop_destroy(loop), 0);
    close_pair(a);
    close_pair(b);
}

/* epoll_ctl refuses to change a registration (ENOMEM): every watcher of the fd fails, the
 * registration it still holds is removed, and other fds are unaffected. */
static void test_epoll_ctl_mod_enomem(void **state)
{
    (void)state;
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_ctl is epoll's");
    aev_loop *loop = loop_new(0);
    int s[2], b[2];
    make_socketpair(s);
    make_pipe(b);
    iorec r1, r2, rb;
    iorec_start(&r1, loop, s[0], AEV_READ);
    iorec_start(&rb, loop, b[0], AEV_READ);
    run_nowait(loop); /* both registered */
    assert_int_equal(r1.calls, 0);

    iorec_start(&r2, loop, s[0], AEV_WRITE); /* READ -> READ|WRITE: a MOD */
    aevf_arm(AEVF_EPOLL_CTL, s[0], 1, 1, ENOMEM);
    write_byte(b[1]);
    run_nowait(loop);
    assert_int_equal(aevf_injected(AEVF_EPOLL_CTL), 1);
    /* The MOD failed, then the io layer removed the registration (a DEL that succeeded). */
    assert_int_equal(aevf_seen(AEVF_EPOLL_CTL), 2);
    assert_failed_with(&r1, -ENOMEM);
    assert_failed_with(&r2, -ENOMEM);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(aev_io_stop(&rb.io), 0);

    /* Nothing is left registered for s[0]: data on it wakes nothing, and the loop blocks. */
    write_byte(s[1]);
    assert_true(iterations_until_timer(loop, 20) <= 2);
    assert_int_equal(r1.calls, 1);

    assert_int_equal(aev_io_start(&r1.io), 0);
    run_nowait(loop);
    assert_int_equal(r1.calls, 2);
    assert_int_equal(r1.events, AEV_READ);

    aev_io_stop(&r1.io);
    assert_int_equal(aev_loop_destroy(loop), 0);
    close_pair(s);
    close_pair(b);
}

/*
 * The loop's own wakeup fd cannot be registered at first (epoll_ctl ENOMEM; poll and kqueue
 * reserve their room when the watcher starts, so they never refuse it): the loop must retry,
 * not give the wakeup up, and must not block meanwhile. A
 * send from another thread while the loop sleeps then still wakes it, and aev_run() does not
 * return early (the wakeup watcher's reference is not dropped twice).
 */
static void wakeup_registration_fails(unsigned flags)
{
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "only epoll_ctl can refuse the wakeup fd");
    aev_loop *loop = loop_new(flags);
    int calls = 0;
    aev_async a;
    async_start_counting(&a, loop, done_cb, &calls);

    aevf_arm(AEVF_EPOLL_CTL, -1, 1, 3, ENOMEM);
    aev_time_t t0 = aev_time();
    send_wakes_loop(loop, &a, &calls, 1, 100);
    aev_time_t took = aev_time() - t0;
    assert_int_equal(aevf_injected(AEVF_EPOLL_CTL), 3);
    assert_true(took < AEV_MSEC(2500));

    /* And it keeps working: the next send wakes the sleeping loop too. */
    aevf_disarm_all();
    assert_int_equal(aev_async_start(&a), 0);
    send_wakes_loop(loop, &a, &calls, 2, 50);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

static void test_wakeup_registration_fails(void **state)
{
    (void)state;
    wakeup_registration_fails(0);
}

static void test_wakeup_registration_fails_pipe(void **state)
{
    (void)state;
    wakeup_registration_fails(AEV_FLAG_PIPE_WAKEUP);
}

/*
 * Many fds registered at once while memory is gone: more than the first size of poll's pollfd
 * array and of kqueue's changelist, which their starts reserved. No watcher fails, on any
 * backend; all of them work.
 */
#define REG_FDS 100

static void test_registration_without_memory(void **state)
{
    (void)state;
    aev_loop *loop = loop_new(0);
    run_nowait(loop); /* the wakeup fd registered, the backend's arrays at their first size */
    int p[2];
    make_pipe(p);
    static int fds[REG_FDS];
    static iorec recs[REG_FDS];
    for (int i = 0; i < REG_FDS; i++) {
        fds[i] = fcntl(p[0], F_DUPFD_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        iorec_start(&recs[i], loop, fds[i], AEV_READ);
    }
    int fired = 0;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, count_cb, AEV_MSEC(10), 0), 0);
    t.base.data = &fired;
    assert_int_equal(aev_timer_start(&t), 0);

    aevf_alloc_fail(1, AEVF_ALWAYS);
    write_byte(p[1]);
    while (!fired)
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    aevf_alloc_fail(0, 0);
    for (int i = 0; i < REG_FDS; i++) {
        assert_true(recs[i].calls >= 1);
        assert_int_equal(recs[i].events, AEV_READ);
        assert_true(aev_is_active(&recs[i].io.base));
        aev_io_stop(&recs[i].io);
    }
    assert_int_equal(aev_loop_destroy(loop), 0);
    for (int i = 0; i < REG_FDS; i++)
        close(fds[i]);
    close_pair(p);
}

/*
 * An io watcher's memory is reserved when it starts: every allocation that starting io watchers
 * and the following iterations make fails in turn (alone, or with every later one). Each
 * aev_io_start() returns -ENOMEM, leaving its watcher inactive, or 0, and then the watcher is
 * registered and gets its events without ever failing for lack of memory. The fds are more than
 * the first size of poll's pollfd array (16 fds) and of kqueue's changelist (16 fds), whatever
 * their numbers, and one has a high number (the fd table and the backends' per-fd arrays must
 * grow for it).
 */
#define RSV_FDS 70
#define RSV_HIGH_FD 300

typedef struct rsvrec {
    aev_io io;
    unsigned seen; /* every event received */
} rsvrec;

static void rsv_cb(aev_watcher *w, unsigned events)
{
    ((rsvrec *)w)->seen |= events;
}

/* Runs the loop until every active watcher has seen an event, or 50 iterations: one wait may
 * return fewer events than there are ready fds (epoll's event array starts at 16 entries and
 * cannot grow while allocations fail), so the last of 71 fds can take a few iterations. */
static void rsv_run_until_seen(aev_loop *loop, const rsvrec *recs)
{
    for (int k = 0; k < 50; k++) {
        run_nowait(loop);
        bool all = true;
        for (int i = 0; i <= RSV_FDS; i++)
            all = all && (recs[i].seen || !aev_is_active(&recs[i].io.base));
        if (all)
            return;
    }
}

static bool io_start_without_memory(const int *fds, unsigned long nth, unsigned long times)
{
    const unsigned want = AEV_READ | AEV_WRITE; /* a socket with data: both, at once */
    long blocks0 = aevf_alloc_live_blocks();
    unsigned long failed0 = aevf_alloc_failed();
    static rsvrec recs[RSV_FDS + 1];
    aev_loop *loop = loop_new(0);
    for (int i = 0; i <= RSV_FDS; i++) {
        memset(&recs[i], 0, sizeof recs[i]);
        assert_int_equal(aev_io_init(&recs[i].io, loop, rsv_cb, fds[i], want), 0);
    }

    aevf_alloc_fail(nth, times);
    for (int i = 0; i <= RSV_FDS; i++) {
        int rc = aev_io_start(&recs[i].io);
        assert_ok_or_nomem(rc);
        assert_int_equal(aev_is_active(&recs[i].io.base), rc == 0);
    }
    rsv_run_until_seen(loop, recs);
    for (int i = 0; i <= RSV_FDS; i++) {
        bool started = aev_is_active(&recs[i].io.base) || recs[i].seen;
        assert_int_equal(recs[i].seen, started ? want : 0); /* never AEV_ERROR */
    }

    /* Memory is back: the watchers that could not start start now, and work. */
    aevf_alloc_fail(0, 0);
    for (int i = 0; i <= RSV_FDS; i++) {
        if (!aev_is_active(&recs[i].io.base))
            assert_int_equal(aev_io_start(&recs[i].io), 0);
        recs[i].seen = 0;
    }
    rsv_run_until_seen(loop, recs);
    for (int i = 0; i <= RSV_FDS; i++) {
        assert_int_equal(recs[i].seen, want);
        assert_int_equal(aev_io_stop(&recs[i].io), 0);
    }
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_int_equal(aevf_alloc_live_blocks(), blocks0);
    return aevf_alloc_failed() == failed0;
}

static void test_io_alloc_fails_in_turn(void **state)
{
    (void)state;
    int s[2];
    make_socketpair(s);
    int fds[RSV_FDS + 1];
    for (int i = 0; i < RSV_FDS; i++) {
        fds[i] = fcntl(s[0], F_DUPFD_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
    }
    fds[RSV_FDS] = fcntl(s[0], F_DUPFD_CLOEXEC, RSV_HIGH_FD);
    assert_true(fds[RSV_FDS] >= RSV_HIGH_FD);
    write_byte(s[1]);
    /* The nth allocation fails alone, or with every later one. */
    const unsigned long times[] = {1, AEVF_ALWAYS};
    for (int t = 0; t < 2; t++) {
        unsigned long n = 1;
        while (!io_start_without_memory(fds, n, times[t])) {
            n++;
            assert_true(n < 200);
        }
        assert_true(n > 1);
    }
    for (int i = 0; i <= RSV_FDS; i++)
        close(fds[i]);
    close_pair(s);
}

/*
 * kqueue takes changes only with its next wait. An embedded kqueue loop whose embed callback
 * does not sweep it has its changes handed over before every poll of the outer loop, without a
 * wait in between: a watcher changed in every iteration must not make the changelist grow, and
 * so must not fail when memory is gone. Once swept, it works.
 */
static void test_kqueue_changes_between_sweeps(void **state)
{
    (void)state;
    SKIP_UNLESS(g_backend == AEV_BACKEND_KQUEUE, "only kqueue queues changes until its wait");
    aev_loop *outer = loop_new(0);
    aev_loop *inner = loop_new(AEV_BACKEND_KQUEUE | AEV_FLAG_NOENV);
    int s[2];
    make_socketpair(s);
    rsvrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(aev_io_init(&r.io, inner, rsv_cb, s[0], AEV_WRITE), 0);
    assert_int_equal(aev_io_start(&r.io), 0);
    int due = 0;
    aev_embed e;
    assert_int_equal(aev_embed_init(&e, outer, count_cb, inner), 0);
    e.base.data = &due;
    assert_int_equal(aev_embed_start(&e), 0);

    /* Each iteration changes the watcher's events: a change to hand over (two kqueue changes,
     * a deletion and an addition). The first ones run with memory, so that the outer loop's
     * own arrays have grown. */
    for (int i = 0; i < 300; i++) {
        if (i == 10)
            aevf_alloc_fail(1, AEVF_ALWAYS);
        assert_int_equal(aev_io_stop(&r.io), 0);
        assert_int_equal(aev_io_set(&r.io, s[0], i % 2 ? AEV_WRITE : AEV_READ), 0);
        assert_int_equal(aev_io_start(&r.io), 0);
        run_nowait(outer);
    }
    assert_true(due > 0);
    assert_int_equal(r.seen, 0);
    assert_true(aev_embed_sweep(&e) >= 0);
    assert_true(aev_embed_sweep(&e) >= 0);
    aevf_alloc_fail(0, 0);
    assert_int_equal(r.seen, AEV_WRITE); /* the last events set; never AEV_ERROR */
    assert_true(aev_is_active(&r.io.base));

    assert_int_equal(aev_embed_stop(&e), 0);
    assert_int_equal(aev_io_stop(&r.io), 0);
    assert_int_equal(aev_loop_destroy(outer), 0);
    assert_int_equal(aev_loop_destroy(inner), 0);
    close_pair(s);
}

/* ---- 4. interrupted waits ----------------------------------------------------------------- */

/* The backend's wait fails with EINTR several times in a row: the loop goes on, the timer fires
 * once, not early, and aev_run() returns normally. */
static void test_wait_eintr(void **state)
{
    (void)state;
    aev_loop *loop = loop_new(0);
    int fired = 0;
    aev_time_t fired_at = 0;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, count_cb, AEV_MSEC(40), 0), 0);
    t.base.data = &fired;
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);

    /* kqueue: the emulation waits in ppoll(), and its kevent() fails with EINTR as the real
     * one does. */
    aevf_call wait = g_backend == AEV_BACKEND_EPOLL ? AEVF_EPOLL_WAIT : AEVF_POLL;
    aevf_arm(wait, -1, 1, 5, EINTR);
    /* One iteration that only got EINTR: nothing ran, the timer is still there. */
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_int_equal(fired, 0);
    assert_true(aev_is_active(&t.base));
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    fired_at = aev_now(loop);
    assert_int_equal(aevf_injected(wait), 5);
    assert_int_equal(fired, 1);
    assert_true(fired_at - t0 >= AEV_MSEC(40));
    assert_true(aev_time() - t0 >= AEV_MSEC(40));
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* epoll_pwait2 is missing (ENOSYS: kernels before 5.11) or refused (EPERM: a seccomp filter):
 * the backend falls back to epoll_wait for good, and timeouts with a fraction of a millisecond
 * are rounded up: the timers are not early. */
static void pwait2_unavailable(int err)
{
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_pwait2 is epoll's");
    aev_loop *loop = loop_new(0);
    aevf_arm(AEVF_EPOLL_PWAIT2, -1, 1, AEVF_ALWAYS, err);
    for (int i = 0; i < 3; i++) {
        int fired = 0;
        aev_timer t;
        assert_int_equal(aev_timer_init(&t, loop, count_cb, AEV_USEC(1500), 0), 0);
        t.base.data = &fired;
        aev_time_t t0 = aev_time();
        assert_int_equal(aev_timer_start(&t), 0);
        while (!fired)
            assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
        assert_true(aev_time() - t0 >= AEV_USEC(1500));
    }
    unsigned seen = aevf_seen(AEVF_EPOLL_PWAIT2);
    assert_int_equal(aev_loop_destroy(loop), 0);
    SKIP_UNLESS(seen > 0, "this build does not use epoll_pwait2");
    assert_int_equal(seen, 1);
}

static void test_pwait2_enosys(void **state)
{
    (void)state;
    pwait2_unavailable(ENOSYS);
}

static void test_pwait2_eperm(void **state)
{
    (void)state;
    pwait2_unavailable(EPERM);
}

/* ---- 5. no fds left: creation and fork rebuilds --------------------------------------------- */

static void expect_new_fails(unsigned flags, aevf_call call, int err)
{
    aev_loop *loop = (aev_loop *)&loop; /* not NULL: must be cleared */
    aevf_arm(call, -1, 1, AEVF_ALWAYS, err);
    assert_int_equal(aev_loop_new(&loop, flags), -err);
    assert_int_equal(aevf_injected(call), 1);
    aevf_disarm(call);
    assert_null(loop);
}

static void test_new_eventfd_emfile(void **state)
{
    (void)state;
    expect_new_fails(0, AEVF_EVENTFD, EMFILE);
    /* No silent fallback to a pipe (docs/api.md: the kernel's error is returned). */
    aevf_arm(AEVF_PIPE, -1, 1000, 1, EMFILE); /* counts calls, fails none */
    expect_new_fails(0, AEVF_EVENTFD, ENFILE);
    assert_int_equal(aevf_seen(AEVF_PIPE), 0);
}

/* eventfd missing (ENOSYS) or refusing its flags (EINVAL): the loop wakes through a self-pipe
 * instead, and a send from another thread still wakes it. */
static void eventfd_missing_uses_pipe(int err)
{
    aevf_arm(AEVF_EVENTFD, -1, 1, AEVF_ALWAYS, err);
    aevf_arm(AEVF_PIPE, -1, 1000, 1, EMFILE); /* counts calls, fails none */
    aev_loop *loop = loop_new(0);
    assert_int_equal(aevf_injected(AEVF_EVENTFD), 1);
    assert_int_equal(aevf_seen(AEVF_PIPE), 1);
    aevf_disarm(AEVF_EVENTFD);
    aevf_disarm(AEVF_PIPE);
    int calls = 0;
    aev_async a;
    async_start_counting(&a, loop, count_cb, &calls);
    sender s;
    sender_start(&s, &a, 20);
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1); /* blocks until the send */
    assert_int_equal(calls, 1);
    sender_join(&s);
    assert_int_equal(aev_async_stop(&a), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

static void test_new_eventfd_enosys_uses_pipe(void **state)
{
    (void)state;
    eventfd_missing_uses_pipe(ENOSYS);
    eventfd_missing_uses_pipe(EINVAL);
}

static void test_new_pipe_emfile(void **state)
{
    (void)state;
    expect_new_fails(AEV_FLAG_PIPE_WAKEUP, AEVF_PIPE, EMFILE);
}

static void test_new_epoll_create_emfile(void **state)
{
    (void)state;
    /* kqueue: the emulation's kqueue() creates an epoll set. */
    SKIP_UNLESS(g_backend != AEV_BACKEND_POLL, "poll keeps no kernel object");
    expect_new_fails(0, AEVF_EPOLL_CREATE, EMFILE);
}

/* aev_loop_fork() cannot create the new wakeup fd or epoll set: it returns the error, and the
 * loop can still be destroyed without leaking. */
static void fork_rebuild_fails(aevf_call call)
{
    aev_loop *loop = loop_new(0);
    int calls = 0;
    aev_io io;
    int p[2];
    make_pipe(p);
    assert_int_equal(aev_io_init(&io, loop, count_cb, p[0], AEV_READ), 0);
    io.base.data = &calls;
    assert_int_equal(aev_io_start(&io), 0);
    run_nowait(loop);
    aevf_arm(call, -1, 1, AEVF_ALWAYS, EMFILE);
    assert_int_equal(aev_loop_fork(loop), -EMFILE);
    assert_int_equal(aevf_injected(call), 1);
    aevf_disarm(call);
    aev_io_stop(&io);
    assert_int_equal(aev_loop_destroy(loop), 0);
    close_pair(p);
}

static void test_fork_eventfd_emfile(void **state)
{
    (void)state;
    fork_rebuild_fails(AEVF_EVENTFD);
}

static void test_fork_epoll_create_emfile(void **state)
{
    (void)state;
    SKIP_UNLESS(g_backend != AEV_BACKEND_POLL, "poll keeps no kernel object");
    fork_rebuild_fails(AEVF_EPOLL_CREATE);
}

/* In a real fork child, the automatic rebuild at the first iteration fails: aev_run() returns
 * the error, and again at every later call; destroy still frees everything. The checks run in
 * the child, which reports through its exit status. */
static void test_fork_child_rebuild_fails(void **state)
{
    (void)state;
    aevf_fdset before;
    aevf_fdset_take(&before);
    aev_loop *loop = loop_new(0);
    aev_timer t;
    int fired = 0;
    assert_int_equal(aev_timer_init(&t, loop, count_cb, AEV_MSEC(1), 0), 0);
    t.base.data = &fired;
    assert_int_equal(aev_timer_start(&t), 0);
    run_nowait(loop);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        aevf_arm(AEVF_EVENTFD, -1, 1, AEVF_ALWAYS, EMFILE);
        int code = 0;
        if (aev_run(loop, AEV_RUN_ONCE) != -EMFILE)
            code = 1;
        else if (aev_run(loop, AEV_RUN_DEFAULT) != -EMFILE)
            code = 2;
        else if (fired != 0)
            code = 3;
        else if (aev_loop_destroy(loop) != 0)
            code = 4;
        else if (aevf_alloc_live_blocks() != g_blocks0)
            code = 5;
        else if (aevf_fdset_new(&before, NULL, 0) != -1) /* the loop's fds, old and new */
            code = 6;
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    aev_timer_stop(&t);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* ---- 6. the wakeup write and drain failing -------------------------------------------------- */

/* The sender's wakeup write is interrupted (EINTR) several times: it must be retried, or the
 * sleeping loop never learns of the send. */
static void wakeup_write_eintr(unsigned flags)
{
    int rfd, wfd;
    aev_loop *loop = loop_new_wakeup(flags, &rfd, &wfd);
    int calls = 0;
    aev_async a;
    async_start_counting(&a, loop, done_cb, &calls);
    aevf_arm(AEVF_WRITE, wfd, 1, 3, EINTR);
    send_wakes_loop(loop, &a, &calls, 1, 100);
    assert_int_equal(aevf_injected(AEVF_WRITE), 3);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

static void test_wakeup_write_eintr(void **state)
{
    (void)state;
    wakeup_write_eintr(0);
}

static void test_wakeup_write_eintr_pipe(void **state)
{
    (void)state;
    wakeup_write_eintr(AEV_FLAG_PIPE_WAKEUP);
}

/* The sender's wakeup write fails with EAGAIN because the fd is full (the pipe, or the eventfd
 * counter, was filled just before): a wakeup is then pending anyway, so the send is not lost,
 * and the loop drains the fd completely, so that it blocks again afterwards. */
static void wakeup_write_eagain(unsigned flags)
{
    SKIP_UNLESS(!wakeup_is_edge(flags), "an edge-triggered eventfd never fills");
    int rfd, wfd;
    aev_loop *loop = loop_new_wakeup(flags, &rfd, &wfd);
    int calls = 0;
    aev_async a;
    async_start_counting(&a, loop, done_cb, &calls);
    aevf_arm(AEVF_WRITE, wfd, 1, 1, AEVF_FILL);
    send_wakes_loop(loop, &a, &calls, 1, 100);
    assert_int_equal(aevf_injected(AEVF_WRITE), 1);
    assert_true(iterations_until_timer(loop, 20) <= 2);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

static void test_wakeup_write_eagain(void **state)
{
    (void)state;
    wakeup_write_eagain(0);
}

static void test_wakeup_write_eagain_pipe(void **state)
{
    (void)state;
    wakeup_write_eagain(AEV_FLAG_PIPE_WAKEUP);
}

/* The loop's drain of the wakeup fd is interrupted (EINTR, EAGAIN) a few times: the send is
 * delivered, and the loop drains on later iterations and then blocks again. */
static void wakeup_read_fails(unsigned flags, int err)
{
    SKIP_UNLESS(!wakeup_is_edge(flags), "an edge-triggered eventfd is never read");
    int rfd, wfd;
    aev_loop *loop = loop_new_wakeup(flags, &rfd, &wfd);
    int calls = 0;
    aev_async a;
    async_start_counting(&a, loop, done_cb, &calls);
    aevf_arm(AEVF_READ, rfd, 1, 3, err);
    send_wakes_loop(loop, &a, &calls, 1, 100);
    /* The remaining failures cost an iteration each, then the fd is empty and the loop blocks. */
    assert_true(iterations_until_timer(loop, 30) <= 5);
    assert_int_equal(aevf_injected(AEVF_READ), 3);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

static void test_wakeup_read_eintr(void **state)
{
    (void)state;
    wakeup_read_fails(0, EINTR);
}

static void test_wakeup_read_eagain_pipe(void **state)
{
    (void)state;
    wakeup_read_fails(AEV_FLAG_PIPE_WAKEUP, EAGAIN);
}

/* ---- 7. the Linux fast paths falling back ------------------------------------------------- */

static bool inotify_disabled(void)
{
    const char *env = getenv("AEV_STAT_INOTIFY");
    return env && strcmp(env, "0") == 0;
}

/* Starts a stat watcher (interval 20 ms) on t, changes the file, and waits for the callback. */
static void stat_sees_change(aev_loop *loop, tmpfile_ *t, aev_stat *st, int *calls)
{
    assert_int_equal(aev_stat_init(st, loop, done_cb, t->path, AEV_MSEC(20)), 0);
    st->base.data = calls;
    assert_int_equal(aev_stat_start(st), 0);
    aev_timer guard;
    guard_start(&guard, loop, 3000);
    aevt_sleep_ms(5);
    tmp_touch(t);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(*calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
}

/* inotify cannot be initialised (EMFILE): the stat watcher polls, and sees the change. */
static void test_inotify_init_fails(void **state)
{
    (void)state;
    SKIP_UNLESS(!inotify_disabled(), "inotify is disabled (AEV_STAT_INOTIFY=0)");
    tmpfile_ t;
    tmp_make(&t);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    aevf_arm(AEVF_INOTIFY_INIT, -1, 1, AEVF_ALWAYS, EMFILE);
    aev_stat st;
    int calls = 0;
    stat_sees_change(loop, &t, &st, &calls);
    assert_int_equal(aevf_injected(AEVF_INOTIFY_INIT), 1);
    assert_int_equal(aevf_fdset_new(&before, "inotify", 0), -1);
    assert_int_equal(aev_loop_destroy(loop), 0);
    tmp_remove(&t);
}

/* inotify cannot watch the path or its directory (the watch limit, ENOSPC): that watcher polls
 * at its interval. */
static void test_inotify_add_watch_fails(void **state)
{
    (void)state;
    SKIP_UNLESS(!inotify_disabled(), "inotify is disabled (AEV_STAT_INOTIFY=0)");
    tmpfile_ t;
    tmp_make(&t);
    aev_loop *loop = loop_new(0);
    aevf_arm(AEVF_INOTIFY_ADD_WATCH, -1, 1, AEVF_ALWAYS, ENOSPC);
    aev_stat st;
    int calls = 0;
    stat_sees_change(loop, &t, &st, &calls);
    assert_true(aevf_injected(AEVF_INOTIFY_ADD_WATCH) >= 2);
    assert_int_equal(aev_loop_destroy(loop), 0);
    tmp_remove(&t);
}

/* The backend refuses the inotify fd (epoll_ctl ENOSPC): the loop closes it and polls. */
static void test_inotify_fd_refused(void **state)
{
    (void)state;
    SKIP_UNLESS(!inotify_disabled(), "inotify is disabled (AEV_STAT_INOTIFY=0)");
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_ctl is epoll's");
    tmpfile_ t;
    tmp_make(&t);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    aev_stat st;
    int calls = 0;
    assert_int_equal(aev_stat_init(&st, loop, done_cb, t.path, AEV_MSEC(20)), 0);
    st.base.data = &calls;
    assert_int_equal(aev_stat_start(&st), 0);
    int ifd = aevf_fdset_new(&before, "inotify", 0);
    assert_true(ifd >= 0);
    aevf_arm(AEVF_EPOLL_CTL, ifd, 1, AEVF_ALWAYS, ENOSPC);
    run_nowait(loop);
    assert_true(aevf_injected(AEVF_EPOLL_CTL) >= 1);
    assert_int_equal(aevf_fdset_new(&before, "inotify", 0), -1); /* closed */
    aevf_disarm(AEVF_EPOLL_CTL);
    aev_timer guard;
    guard_start(&guard, loop, 3000);
    aevt_sleep_ms(5);
    tmp_touch(&t);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(aev_loop_destroy(loop), 0);
    tmp_remove(&t);
}

/* Reading the inotify fd is interrupted (EINTR): the events are read at the next iteration. The
 * interval is long (the safety net then runs every 30 s), so only inotify can report in time. */
static void test_inotify_read_eintr(void **state)
{
    (void)state;
    SKIP_UNLESS(!inotify_disabled(), "inotify is disabled (AEV_STAT_INOTIFY=0)");
    tmpfile_ t;
    tmp_make(&t);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    aev_stat st;
    int calls = 0;
    assert_int_equal(aev_stat_init(&st, loop, done_cb, t.path, AEV_SEC(10)), 0);
    st.base.data = &calls;
    assert_int_equal(aev_stat_start(&st), 0);
    int ifd = aevf_fdset_new(&before, "inotify", 0);
    assert_true(ifd >= 0);
    aevf_arm(AEVF_READ, ifd, 1, 2, EINTR);
    aev_timer guard;
    guard_start(&guard, loop, 3000);
    tmp_touch(&t);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(aevf_injected(AEVF_READ), 2);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(aev_loop_destroy(loop), 0);
    tmp_remove(&t);
}

/* ---- embed ---------------------------------------------------------------------------------- */

typedef struct embrec {
    aev_embed embed;
    int calls;
    unsigned events;
    int err;
    aev_errop op;
    bool active_in_cb;
} embrec;

static void embrec_cb(aev_watcher *w, unsigned events)
{
    embrec *r = (embrec *)w;
    if (events & AEV_EMBED) {
        assert_true(aev_embed_sweep(&r->embed) >= 0);
        return;
    }
    r->calls++;
    r->events = events;
    r->err = aev_watcher_error(w, &r->op);
    r->active_in_cb = aev_is_active(w);
}

/* epoll refuses to watch the embedded loop's epoll fd (ENOMEM): the embed watcher alone fails
 * with that error, the outer loop goes on, and a restart works. */
static void test_embed_fd_refused(void **state)
{
    (void)state;
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_ctl is epoll's");
    aev_loop *outer = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    aev_loop *inner = loop_new(AEV_BACKEND_EPOLL | AEV_FLAG_NOENV);
    int ifd = aevf_fdset_new(&before, "eventpoll", 0);
    assert_true(ifd >= 0);
    int inner_fired = 0, outer_fired = 0;
    aev_timer it, ot;
    assert_int_equal(aev_timer_init(&it, inner, count_cb, AEV_MSEC(10), 0), 0);
    it.base.data = &inner_fired;
    assert_int_equal(aev_timer_start(&it), 0);
    assert_int_equal(aev_timer_init(&ot, outer, count_cb, AEV_MSEC(30), 0), 0);
    ot.base.data = &outer_fired;
    assert_int_equal(aev_timer_start(&ot), 0);
    embrec e;
    memset(&e, 0, sizeof e);
    assert_int_equal(aev_embed_init(&e.embed, outer, embrec_cb, inner), 0);

    aevf_arm(AEVF_EPOLL_CTL, ifd, 1, AEVF_ALWAYS, ENOMEM);
    assert_int_equal(aev_embed_start(&e.embed), 0);
    run_nowait(outer);
    assert_true(aevf_injected(AEVF_EPOLL_CTL) >= 1);
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.events, AEV_ERROR);
    assert_int_equal(e.err, -ENOMEM);
    assert_int_equal(e.op, AEV_ERROP_WATCH);
    assert_false(e.active_in_cb);
    while (!outer_fired)
        assert_true(aev_run(outer, AEV_RUN_ONCE) >= 0);
    assert_int_equal(inner_fired, 0);
    assert_int_equal(e.calls, 1);

    aevf_disarm(AEVF_EPOLL_CTL);
    assert_int_equal(aev_embed_start(&e.embed), 0);
    while (!inner_fired)
        assert_true(aev_run(outer, AEV_RUN_ONCE) >= 0);
    assert_int_equal(e.calls, 1);
    assert_int_equal(aev_embed_stop(&e.embed), 0);
    assert_int_equal(aev_loop_destroy(outer), 0);
    assert_int_equal(aev_loop_destroy(inner), 0);
}

/* Whether the library watches children through pidfds here: not disabled by the environment,
 * and pidfd_open works (valgrind 3.19, for one, answers ENOSYS). */
static bool pidfd_disabled(void)
{
    const char *env = getenv("AEV_CHILD_PIDFD");
    if (env && strcmp(env, "0") == 0)
        return true;
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, (long)getpid(), 0L);
    if (fd < 0)
        return true;
    close((int)fd);
    return false;
#else
    return true;
#endif
}

/* pidfd_open fails for lack of fds: the start returns the error, the watcher is inactive, and
 * starts once fds are available again. */
static void test_pidfd_open_emfile(void **state)
{
    (void)state;
    SKIP_UNLESS(!pidfd_disabled(), "no pidfds here (AEV_CHILD_PIDFD=0, or no pidfd_open)");
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    int calls = 0;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 0), 0);
    c.base.data = &calls;
    aevf_arm(AEVF_PIDFD_OPEN, -1, 1, AEVF_ALWAYS, EMFILE);
    int rc = aev_child_start(&c);
    if (aevf_seen(AEVF_PIDFD_OPEN) == 0) {
        aev_child_stop(&c);
        assert_int_equal(aev_loop_destroy(loop), 0);
        kid_end(&k, true);
        SKIP_UNLESS(false, "this build has no pidfd_open");
    }
    assert_int_equal(rc, -EMFILE);
    assert_false(aev_is_active(&c.base));
    aevf_disarm(AEVF_PIDFD_OPEN);
    assert_int_equal(aev_child_start(&c), 0);
    aev_timer guard;
    guard_start(&guard, loop, 5000);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&c)), 7);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* pidfd_open is not available (ENOSYS: an old kernel; EPERM: a seccomp filter): the watcher
 * falls back to SIGCHLD and still reports the child. */
static void pidfd_open_unavailable(int err)
{
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    int calls = 0;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 0), 0);
    c.base.data = &calls;
    aevf_arm(AEVF_PIDFD_OPEN, -1, 1, AEVF_ALWAYS, err);
    assert_int_equal(aev_child_start(&c), 0);
    assert_int_equal(aevf_fdset_new(&before, "pidfd", 0), -1);
    aev_timer guard;
    guard_start(&guard, loop, 5000);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&c)), 7);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_true(disposition_is_default(SIGCHLD));
}

static void test_pidfd_open_enosys(void **state)
{
    (void)state;
    pidfd_open_unavailable(ENOSYS);
}

static void test_pidfd_open_eperm(void **state)
{
    (void)state;
    pidfd_open_unavailable(EPERM);
}

/* The backend refuses the child's pidfd (epoll_ctl ENOSPC, the watch limit): the pid's watcher
 * gets AEV_ERROR with that error and is stopped, the pidfd is closed, nothing is reaped; started
 * again, it works. */
static void test_child_pidfd_refused(void **state)
{
    (void)state;
    SKIP_UNLESS(!pidfd_disabled(), "no pidfds here (AEV_CHILD_PIDFD=0, or no pidfd_open)");
    SKIP_UNLESS(g_backend == AEV_BACKEND_EPOLL, "epoll_ctl is epoll's");
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    int errors = 0;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, count_cb, k.pid, 0), 0);
    c.base.data = &errors;
    assert_int_equal(aev_child_start(&c), 0);
    int pfd = aevf_fdset_new(&before, "pidfd", 0);
    if (pfd < 0) {
        aev_child_stop(&c);
        assert_int_equal(aev_loop_destroy(loop), 0);
        kid_end(&k, true);
        SKIP_UNLESS(false, "this build has no pidfd_open");
    }
    aevf_arm(AEVF_EPOLL_CTL, pfd, 1, AEVF_ALWAYS, ENOSPC);
    run_nowait(loop);
    assert_true(aevf_injected(AEVF_EPOLL_CTL) >= 1);
    aevf_disarm(AEVF_EPOLL_CTL);
    assert_int_equal(errors, 1);
    assert_false(aev_is_active(&c.base));
    aev_errop op;
    assert_int_equal(aev_watcher_error(&c.base, &op), -ENOSPC);
    assert_int_equal(op, AEV_ERROP_WATCH);
    assert_int_equal(aevf_fdset_new(&before, "pidfd", 0), -1);

    int calls = 0;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 0), 0);
    c.base.data = &calls;
    assert_int_equal(aev_child_start(&c), 0);
    aev_timer guard;
    guard_start(&guard, loop, 5000);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&c)), 7);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* The reaping waitid() is interrupted twice: it is retried and the child is reported. */
static void test_waitid_eintr(void **state)
{
    (void)state;
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    int calls = 0;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 0), 0);
    c.base.data = &calls;
    assert_int_equal(aev_child_start(&c), 0);
    aev_timer guard;
    guard_start(&guard, loop, 5000);
    aevf_arm(AEVF_WAITID, -1, 1, 2, EINTR);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(aevf_injected(AEVF_WAITID), 2);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&c)), 7);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

/* waitid(P_PIDFD) is missing (Linux 5.3 has pidfd_open, not this): the check at the start fails
 * with EINVAL, the pidfd is closed, and the watcher falls back to SIGCHLD. */
static void test_waitid_pidfd_einval(void **state)
{
    (void)state;
    SKIP_UNLESS(!pidfd_disabled(), "no pidfds here (AEV_CHILD_PIDFD=0, or no pidfd_open)");
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    int calls = 0;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 0), 0);
    c.base.data = &calls;
    aevf_arm(AEVF_PIDFD_OPEN, -1, 1000, 1, EMFILE); /* counts calls, fails none */
    aevf_arm(AEVF_WAITID, -1, 1, 1, EINVAL);
    int rc = aev_child_start(&c);
    if (aevf_seen(AEVF_PIDFD_OPEN) == 0) {
        aev_child_stop(&c);
        assert_int_equal(aev_loop_destroy(loop), 0);
        kid_end(&k, true);
        SKIP_UNLESS(false, "this build has no pidfd_open");
    }
    assert_int_equal(rc, 0);
    assert_int_equal(aevf_injected(AEVF_WAITID), 1);
    assert_int_equal(aevf_fdset_new(&before, "pidfd", 0), -1);
    aevf_disarm_all();
    aev_timer guard;
    guard_start(&guard, loop, 5000);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(WEXITSTATUS(aev_child_rstatus(&c)), 7);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_true(disposition_is_default(SIGCHLD));
}

/* sigaction() refuses: the signal start returns -EINVAL and changes nothing; a child watcher
 * that needs SIGCHLD (trace) fails the same way and leaves no pidfd behind. */
static void test_sigaction_fails(void **state)
{
    (void)state;
    kid k;
    kid_start(&k);
    aev_loop *loop = loop_new(0);
    aevf_fdset before;
    aevf_fdset_take(&before);
    int calls = 0;
    aev_signal s;
    assert_int_equal(aev_signal_init(&s, loop, done_cb, SIGUSR1), 0);
    s.base.data = &calls;
    aev_child c;
    assert_int_equal(aev_child_init(&c, loop, done_cb, k.pid, 1), 0);
    c.base.data = &calls;

    aevf_arm(AEVF_SIGACTION, -1, 1, AEVF_ALWAYS, EINVAL);
    assert_int_equal(aev_signal_start(&s), -EINVAL);
    assert_false(aev_is_active(&s.base));
    assert_true(disposition_is_default(SIGUSR1));
    assert_int_equal(aev_child_start(&c), -EINVAL);
    assert_false(aev_is_active(&c.base));
    assert_true(disposition_is_default(SIGCHLD));
    assert_int_equal(aevf_fdset_new(&before, NULL, 0), -1);
    aevf_disarm(AEVF_SIGACTION);

    /* Both start once sigaction works, and work. */
    assert_int_equal(aev_signal_start(&s), 0);
    aev_timer guard;
    guard_start(&guard, loop, 3000);
    raise(SIGUSR1);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 1);
    assert_int_equal(aev_child_start(&c), 0);
    kid_end(&k, false);
    assert_true(aev_run(loop, AEV_RUN_DEFAULT) >= 0);
    assert_int_equal(calls, 2);
    assert_int_equal(g_guard_fired, 0);
    aev_timer_stop(&guard);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_true(disposition_is_default(SIGUSR1));
    assert_true(disposition_is_default(SIGCHLD));
}

/* ---- main ----------------------------------------------------------------------------------- */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    aev_loop *loop = NULL;
    if (aev_loop_new(&loop, 0) != 0)
        return 1;
    g_backend = aev_backend(loop);
    aev_loop_destroy(loop);

    const struct CMUnitTest tests[] = {
        T(test_alloc_each_fails_once),
        T(test_alloc_fails_from_nth_on),
        T(test_alloc_internal_watchers),
        T(test_nothing_lost_without_memory),
        T(test_epoll_ctl_add_enospc),
        T(test_epoll_ctl_mod_enomem),
        T(test_wakeup_registration_fails),
        T(test_wakeup_registration_fails_pipe),
        T(test_registration_without_memory),
        T(test_io_alloc_fails_in_turn),
        T(test_kqueue_changes_between_sweeps),
        T(test_wait_eintr),
        T(test_pwait2_enosys),
        T(test_pwait2_eperm),
        T(test_new_eventfd_emfile),
        T(test_new_eventfd_enosys_uses_pipe),
        T(test_new_pipe_emfile),
        T(test_new_epoll_create_emfile),
        T(test_fork_eventfd_emfile),
        T(test_fork_epoll_create_emfile),
        T(test_fork_child_rebuild_fails),
        T(test_wakeup_write_eintr),
        T(test_wakeup_write_eintr_pipe),
        T(test_wakeup_write_eagain),
        T(test_wakeup_write_eagain_pipe),
        T(test_wakeup_read_eintr),
        T(test_wakeup_read_eagain_pipe),
        T(test_inotify_init_fails),
        T(test_inotify_add_watch_fails),
        T(test_inotify_fd_refused),
        T(test_inotify_read_eintr),
        T(test_embed_fd_refused),
        T(test_pidfd_open_emfile),
        T(test_pidfd_open_enosys),
        T(test_pidfd_open_eperm),
        T(test_child_pidfd_refused),
        T(test_waitid_eintr),
        T(test_waitid_pidfd_einval),
        T(test_sigaction_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !AEVT_FAULT_INJECTION */

/* Built without tests/fault (AEV_FAULT_INJECTION=OFF): nothing to run. */
int main(void)
{
    printf("fault injection is not built (AEV_FAULT_INJECTION=OFF)\n");
    return 0;
}

#endif
