/*
 * Tests of child watchers: argument and kernel errors, exit and signal statuses, a child that
 * exited before the start, several watchers of one pid, several children, pid 0, stop/continue
 * with trace, reaping only watched pids (no zombie left, unwatched children untouched), a pid
 * reaped by other code, restarting from the callback, loop references and fds, and a second loop
 * in another thread.
 *
 * The whole group runs twice: with pidfds (where the kernel has them) and with the SIGCHLD
 * fallback forced through AEV_CHILD_PIDFD=0.
 *
 * Children block on a pipe (the "gate") until the test releases them, so that the order of
 * start and exit is under the test's control; each child also arms alarm() so that a failing
 * test never leaves a process behind.
 */
#define _GNU_SOURCE

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* Longest wait for an event that should come at once; generous for a loaded machine. */
#define GUARD AEV_SEC(10)

/* A child left alone dies by SIGALRM after this many seconds. */
#define CHILD_LIFETIME 30

static int g_fallback; /* 1 during the run with AEV_CHILD_PIDFD=0 */

/* ---- children ----------------------------------------------------------------------------- */

/* Forks a child that exits with `code` once a byte arrives on *gate (or the gate closes). */
static pid_t spawn_gated(int code, int *gate)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_LIFETIME);
        close(fds[1]);
        char c;
        ssize_t n;
        do
            n = read(fds[0], &c, 1);
        while (n < 0 && errno == EINTR);
        _exit(code);
    }
    close(fds[0]);
    *gate = fds[1];
    return pid;
}

/* Lets a gated child exit. A byte rather than a close: siblings forked later hold copies of
 * the write end, so a close alone would not reach EOF. */
static void release(int gate)
{
    assert_int_equal(write(gate, "x", 1), 1);
    close(gate);
}

/* Forks a child that exits with `code` at once. */
static pid_t spawn_exit(int code)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(code);
    return pid;
}

/* Blocks until pid has terminated, without reaping it: it stays a zombie. */
static void wait_zombie(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int rc;
    do
        rc = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
    while (rc < 0 && errno == EINTR);
    assert_int_equal(rc, 0);
    assert_int_equal(si.si_pid, pid);
}

/* pid was reaped: it is no longer our child (no zombie left). */
static void assert_reaped(pid_t pid)
{
    int status;
    errno = 0;
    assert_int_equal(waitpid(pid, &status, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* Reaps pid in the test, blocking, and returns its status. */
static int reap(pid_t pid)
{
    int status = 0;
    pid_t r;
    do
        r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    assert_int_equal(r, pid);
    return status;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Whether this kernel lets us open pidfds (the library then uses them unless disabled). */
static int pidfd_works(void)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, getpid(), 0u);
    if (fd < 0)
        return 0;
    close((int)fd);
    return 1;
#else
    return 0;
#endif
}

/* ---- callbacks ---------------------------------------------------------------------------- */

#define MAX_CALLS 16

/* What one watcher saw, in order. */
typedef struct seen {
    int calls;
    unsigned events[MAX_CALLS];
    int rpid[MAX_CALLS];
    int rstatus[MAX_CALLS];
    bool active[MAX_CALLS];
    int order[MAX_CALLS]; /* global sequence number of each call */
} seen;

static int g_seq;

static void record_cb(aev_watcher *w, unsigned events)
{
    seen *s = w->data;
    aev_child *c = (aev_child *)w;
    g_seq++;
    if (s->calls >= MAX_CALLS) {
        s->calls++;
        return;
    }
    s->events[s->calls] = events;
    s->rpid[s->calls] = aev_child_rpid(c);
    s->rstatus[s->calls] = aev_child_rstatus(c);
    s->active[s->calls] = aev_is_active(w);
    s->order[s->calls] = g_seq;
    s->calls++;
}

static void init_child(aev_child *c, aev_loop *loop, seen *s, int pid, int trace)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(aev_child_init(c, loop, record_cb, pid, trace), 0);
    c->base.data = s;
}

static void start_child(aev_child *c, aev_loop *loop, seen *s, int pid, int trace)
{
    init_child(c, loop, s, pid, trace);
    assert_int_equal(aev_child_start(c), 0);
}

/* ---- running ------------------------------------------------------------------------------ */

static void tick_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

/* Runs single iterations until *count reaches target; fails after GUARD. A repeating tick,
 * unreferenced, bounds each iteration. */
static void run_until(aev_loop *loop, const int *count, int target)
{
    aev_timer tick;
    assert_int_equal(aev_timer_init(&tick, loop, tick_cb, AEV_MSEC(20), AEV_MSEC(20)), 0);
    assert_int_equal(aev_timer_start(&tick), 0);
    aev_unref(loop);
    aev_time_t deadline = aev_time() + GUARD;
    while (*count < target && aev_time() < deadline)
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    aev_ref(loop);
    assert_int_equal(aev_timer_stop(&tick), 0);
    assert_int_equal(*count, target);
}

/* Runs a few non-blocking iterations over some time: long enough for a state change that
 * should not be reported to show up if it were. */
static void run_idle(aev_loop *loop, int ms)
{
    aev_time_t end = aev_time() + AEV_MSEC(ms);
    while (aev_time() < end) {
        aev_run(loop, AEV_RUN_NOWAIT);
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The loop holds no reference of its own once every child watcher is inactive. */
static void assert_no_refs(aev_loop *loop)
{
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

static void assert_exited(int status, int code)
{
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), code);
}

static int setup(void **state)
{
    aevt_watchdog(30);
    return aevt_setup(state);
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_child_errors(void **state)
{
    aev_loop *loop = *state;
    aev_child c;
    seen s;
    assert_int_equal(aev_child_init(NULL, loop, record_cb, 0, 0), -EINVAL);
    assert_int_equal(aev_child_init(&c, NULL, record_cb, 0, 0), -EINVAL);
    assert_int_equal(aev_child_init(&c, loop, NULL, 0, 0), -EINVAL);
    assert_int_equal(aev_child_init(&c, loop, record_cb, -1, 0), -EINVAL);
    assert_int_equal(aev_child_init(&c, loop, record_cb, INT_MIN, 1), -EINVAL);
    assert_int_equal(aev_child_start(NULL), -EINVAL);
    assert_int_equal(aev_child_stop(NULL), -EINVAL);
    assert_int_equal(aev_child_set(NULL, 1, 0), -EINVAL);
    assert_int_equal(aev_child_rpid(NULL), -EINVAL);
    assert_int_equal(aev_child_rstatus(NULL), 0);

    /* Watchers of another type are refused. */
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, record_cb, 0, 0), 0);
    assert_int_equal(aev_child_start((aev_child *)&t), -EINVAL);
    assert_int_equal(aev_child_stop((aev_child *)&t), -EINVAL);
    assert_int_equal(aev_child_set((aev_child *)&t, 1, 0), -EINVAL);

    init_child(&c, loop, &s, 0, 0);
    assert_int_equal(aev_child_rpid(&c), 0);
    assert_int_equal(aev_child_rstatus(&c), 0);
    assert_int_equal(aev_child_set(&c, -5, 0), -EINVAL);

    int gate;
    pid_t pid = spawn_gated(0, &gate);
    assert_int_equal(aev_child_set(&c, pid, 0), 0);
    /* Through the generic start and stop, too. */
    assert_int_equal(aev_start(&c.base), 0);
    assert_true(aev_is_active(&c.base));
    assert_int_equal(aev_child_start(&c), 0); /* already active: nothing */
    assert_int_equal(aev_child_set(&c, pid, 1), -EBUSY);
    assert_int_equal(aev_stop(&c.base), 0);
    assert_false(aev_is_active(&c.base));
    assert_int_equal(aev_child_stop(&c), 0); /* already inactive: nothing */
    assert_int_equal(aev_child_set(&c, pid, 1), 0);
    release(gate);
    assert_exited(reap(pid), 0);
    assert_no_refs(loop);
}

static void test_child_not_a_child(void **state)
{
    aev_loop *loop = *state;
    aev_child c;
    seen s;
    /* Our parent and ourselves exist but are not our children. */
    init_child(&c, loop, &s, (int)getppid(), 0);
    assert_int_equal(aev_child_start(&c), -ECHILD);
    assert_false(aev_is_active(&c.base));
    assert_int_equal(aev_child_set(&c, (int)getpid(), 1), 0);
    assert_int_equal(aev_child_start(&c), -ECHILD);
    assert_false(aev_is_active(&c.base));
    assert_no_refs(loop);
}

static void test_child_nonexistent(void **state)
{
    aev_loop *loop = *state;
    aev_child c;
    seen s;
    /* A child the test reaped no longer exists (pids are allocated upwards, so its number is
     * not reused within this test). */
    pid_t pid = spawn_exit(0);
    assert_exited(reap(pid), 0);
    init_child(&c, loop, &s, pid, 0);
    assert_int_equal(aev_child_start(&c), -ESRCH);
    assert_false(aev_is_active(&c.base));
    /* Above any pid_max. */
    assert_int_equal(aev_child_set(&c, INT_MAX, 0), 0);
    assert_int_equal(aev_child_start(&c), -ESRCH);
    assert_false(aev_is_active(&c.base));
    assert_no_refs(loop);
}

/* ---- statuses ----------------------------------------------------------------------------- */

static void test_child_exit_status(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(42, &gate);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, pid, 0);
    assert_true(aev_is_active(&c.base));
    /* Nothing is reported while the child runs. */
    run_idle(loop, 50);
    assert_int_equal(s.calls, 0);
    release(gate);
    run_until(loop, &s.calls, 1);
    assert_int_equal(s.events[0], AEV_CHILD);
    assert_int_equal(s.rpid[0], pid);
    assert_exited(s.rstatus[0], 42);
    /* Termination stops the watcher before its callback. */
    assert_false(s.active[0]);
    assert_false(aev_is_active(&c.base));
    assert_int_equal(aev_child_rpid(&c), pid);
    assert_reaped(pid);
    assert_no_refs(loop);
}

static void test_child_killed_by_signal(void **state)
{
    aev_loop *loop = *state;
    int gate1, gate2;
    pid_t p1 = spawn_gated(0, &gate1);
    pid_t p2 = spawn_gated(0, &gate2);
    aev_child c1, c2;
    seen s1, s2;
    start_child(&c1, loop, &s1, p1, 0);
    start_child(&c2, loop, &s2, p2, 0);
    assert_int_equal(kill(p1, SIGTERM), 0);
    assert_int_equal(kill(p2, SIGKILL), 0);
    run_until(loop, &s1.calls, 1);
    run_until(loop, &s2.calls, 1);
    assert_int_equal(s1.rpid[0], p1);
    assert_true(WIFSIGNALED(s1.rstatus[0]));
    assert_int_equal(WTERMSIG(s1.rstatus[0]), SIGTERM);
    assert_int_equal(s2.rpid[0], p2);
    assert_true(WIFSIGNALED(s2.rstatus[0]));
    assert_int_equal(WTERMSIG(s2.rstatus[0]), SIGKILL);
    assert_reaped(p1);
    assert_reaped(p2);
    close(gate1);
    close(gate2);
    assert_no_refs(loop);
}

static void test_child_exited_before_start(void **state)
{
    aev_loop *loop = *state;
    pid_t pid = spawn_exit(7);
    wait_zombie(pid);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, pid, 0);
    run_until(loop, &s.calls, 1);
    assert_int_equal(s.rpid[0], pid);
    assert_exited(s.rstatus[0], 7);
    assert_reaped(pid);
    assert_no_refs(loop);
}

/* ---- several watchers and children -------------------------------------------------------- */

static void test_child_several_watchers(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(3, &gate);
    aev_child c[4];
    seen s[4];
    g_seq = 0;
    for (int i = 0; i < 4; i++) {
        start_child(&c[i], loop, &s[i], pid, 0);
    }
    /* One of them leaves again: it must not be called. */
    assert_int_equal(aev_child_stop(&c[1]), 0);
    release(gate);
    run_until(loop, &s[3].calls, 1);
    assert_int_equal(s[1].calls, 0);
    int prev = 0;
    for (int i = 0; i < 4; i++) {
        if (i == 1)
            continue;
        assert_int_equal(s[i].calls, 1);
        assert_int_equal(s[i].rpid[0], pid);
        assert_exited(s[i].rstatus[0], 3);
        assert_false(aev_is_active(&c[i].base));
        /* Called in start order. */
        assert_true(s[i].order[0] > prev);
        prev = s[i].order[0];
    }
    assert_reaped(pid);
    assert_no_refs(loop);
}

static void test_child_two_children(void **state)
{
    aev_loop *loop = *state;
    int gate1, gate2;
    pid_t p1 = spawn_gated(11, &gate1);
    pid_t p2 = spawn_gated(22, &gate2);
    aev_child c1, c2;
    seen s1, s2;
    start_child(&c1, loop, &s1, p1, 0);
    start_child(&c2, loop, &s2, p2, 0);
    /* The second exits first; the first watcher must not hear of it. */
    release(gate2);
    run_until(loop, &s2.calls, 1);
    assert_int_equal(s1.calls, 0);
    assert_true(aev_is_active(&c1.base));
    release(gate1);
    run_until(loop, &s1.calls, 1);
    assert_int_equal(s1.rpid[0], p1);
    assert_exited(s1.rstatus[0], 11);
    assert_int_equal(s2.rpid[0], p2);
    assert_exited(s2.rstatus[0], 22);
    assert_int_equal(s1.calls, 1);
    assert_int_equal(s2.calls, 1);
    assert_reaped(p1);
    assert_reaped(p2);
    assert_no_refs(loop);
}

static void test_child_any_pid(void **state)
{
    aev_loop *loop = *state;
    aev_child any, one;
    seen sa, so;
    start_child(&any, loop, &sa, 0, 0);
    int gate1, gate2;
    pid_t p1 = spawn_gated(5, &gate1);
    pid_t p2 = spawn_gated(6, &gate2);
    /* p2 also has its own watcher: both hear of its exit. */
    start_child(&one, loop, &so, p2, 0);
    release(gate1);
    run_until(loop, &sa.calls, 1);
    assert_int_equal(sa.rpid[0], p1);
    assert_exited(sa.rstatus[0], 5);
    /* A pid-0 watcher stays active. */
    assert_true(sa.active[0]);
    assert_reaped(p1);
    assert_int_equal(so.calls, 0);
    release(gate2);
    run_until(loop, &sa.calls, 2);
    run_until(loop, &so.calls, 1);
    assert_int_equal(sa.rpid[1], p2);
    assert_exited(sa.rstatus[1], 6);
    assert_int_equal(so.rpid[0], p2);
    assert_exited(so.rstatus[0], 6);
    assert_false(aev_is_active(&one.base));
    assert_true(aev_is_active(&any.base));
    assert_reaped(p2);
    assert_int_equal(aev_child_stop(&any), 0);
    assert_no_refs(loop);
}

static void test_child_unwatched_not_reaped(void **state)
{
    aev_loop *loop = *state;
    /* An unwatched child exits first and stays a zombie for its owner. */
    pid_t other = spawn_exit(9);
    wait_zombie(other);
    int gate;
    pid_t pid = spawn_gated(4, &gate);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, pid, 0);
    release(gate);
    run_until(loop, &s.calls, 1);
    assert_exited(s.rstatus[0], 4);
    run_idle(loop, 30);
    int status = 0;
    assert_int_equal(waitpid(other, &status, WNOHANG), other);
    assert_exited(status, 9);
    assert_no_refs(loop);
}

static void test_child_stopped_watcher_does_not_reap(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(13, &gate);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, pid, 0);
    assert_int_equal(aev_child_stop(&c), 0);
    release(gate);
    wait_zombie(pid);
    run_idle(loop, 50);
    assert_int_equal(s.calls, 0);
    /* Still ours to reap. */
    assert_exited(reap(pid), 13);
    assert_no_refs(loop);
}

/* ---- trace -------------------------------------------------------------------------------- */

static void test_child_trace(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(8, &gate);
    aev_child tr, plain;
    seen st, sp;
    start_child(&tr, loop, &st, pid, 1);
    start_child(&plain, loop, &sp, pid, 0);

    assert_int_equal(kill(pid, SIGSTOP), 0);
    run_until(loop, &st.calls, 1);
    assert_int_equal(st.rpid[0], pid);
    assert_true(WIFSTOPPED(st.rstatus[0]));
    assert_int_equal(WSTOPSIG(st.rstatus[0]), SIGSTOP);
    assert_true(st.active[0]);

    assert_int_equal(kill(pid, SIGCONT), 0);
    run_until(loop, &st.calls, 2);
    assert_true(WIFCONTINUED(st.rstatus[1]));
    assert_true(st.active[1]);
    /* Without trace, stop and continue are not reported. */
    assert_int_equal(sp.calls, 0);

    release(gate);
    run_until(loop, &st.calls, 3);
    run_until(loop, &sp.calls, 1);
    assert_exited(st.rstatus[2], 8);
    assert_false(st.active[2]);
    assert_exited(sp.rstatus[0], 8);
    assert_reaped(pid);
    assert_no_refs(loop);
}

static void test_child_trace_any_pid(void **state)
{
    aev_loop *loop = *state;
    aev_child any;
    seen s;
    start_child(&any, loop, &s, 0, 1);
    int gate;
    pid_t pid = spawn_gated(2, &gate);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    run_until(loop, &s.calls, 1);
    assert_int_equal(s.rpid[0], pid);
    assert_true(WIFSTOPPED(s.rstatus[0]));
    assert_int_equal(kill(pid, SIGCONT), 0);
    run_until(loop, &s.calls, 2);
    assert_true(WIFCONTINUED(s.rstatus[1]));
    release(gate);
    run_until(loop, &s.calls, 3);
    assert_exited(s.rstatus[2], 2);
    assert_reaped(pid);
    assert_int_equal(aev_child_stop(&any), 0);
    assert_no_refs(loop);
}

/* ---- interplay with other code ------------------------------------------------------------ */

static void test_child_reaped_elsewhere(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(1, &gate);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, pid, 0);
    release(gate);
    /* The program reaps it behind the watcher's back. */
    assert_exited(reap(pid), 1);
    run_until(loop, &s.calls, 1);
    assert_int_equal(s.events[0], AEV_ERROR);
    assert_false(aev_is_active(&c.base));
    aev_errop op;
    assert_int_equal(aev_watcher_error(&c.base, &op), -ECHILD);
    assert_int_equal(op, AEV_ERROP_WATCH);
    assert_no_refs(loop);
}

typedef struct restart_ctx {
    aev_child w;
    pid_t pids[2];
    int gates[2];
    int statuses[2];
    int calls;
} restart_ctx;

/* A supervisor's pattern: the callback watches the next child with the same watcher. */
static void restart_cb(aev_watcher *w, unsigned events)
{
    restart_ctx *ctx = w->data;
    assert_int_equal(events, AEV_CHILD);
    assert_false(aev_is_active(w));
    ctx->statuses[ctx->calls] = aev_child_rstatus(&ctx->w);
    assert_int_equal(aev_child_rpid(&ctx->w), ctx->pids[ctx->calls]);
    ctx->calls++;
    if (ctx->calls == 1) {
        assert_int_equal(aev_child_set(&ctx->w, ctx->pids[1], 0), 0);
        assert_int_equal(aev_child_start(&ctx->w), 0);
        /* The start forgets the previous report. */
        assert_int_equal(aev_child_rpid(&ctx->w), 0);
        assert_int_equal(aev_child_rstatus(&ctx->w), 0);
        release(ctx->gates[1]);
    }
}

static void test_child_restart_in_callback(void **state)
{
    aev_loop *loop = *state;
    restart_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.pids[0] = spawn_gated(31, &ctx.gates[0]);
    ctx.pids[1] = spawn_gated(32, &ctx.gates[1]);
    assert_int_equal(aev_child_init(&ctx.w, loop, restart_cb, ctx.pids[0], 0), 0);
    ctx.w.base.data = &ctx;
    assert_int_equal(aev_child_start(&ctx.w), 0);
    release(ctx.gates[0]);
    run_until(loop, &ctx.calls, 2);
    assert_exited(ctx.statuses[0], 31);
    assert_exited(ctx.statuses[1], 32);
    assert_reaped(ctx.pids[0]);
    assert_reaped(ctx.pids[1]);
    assert_no_refs(loop);
}

/* aev_run() returns by itself once the last child watcher is done: the library's internal
 * watchers (pidfd, SIGCHLD) hold no reference. */
static void test_child_run_returns(void **state)
{
    aev_loop *loop = *state;
    pid_t p1 = spawn_exit(0);
    pid_t p2 = spawn_exit(0);
    aev_child c1, c2, any;
    seen s1, s2, sa;
    start_child(&c1, loop, &s1, p1, 0);
    start_child(&c2, loop, &s2, p2, 1);
    init_child(&any, loop, &sa, 0, 0);
    /* Start and stop churn leaves the count balanced. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(aev_child_start(&any), 0);
        assert_int_equal(aev_child_stop(&any), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(s1.calls, 1);
    assert_int_equal(s2.calls, 1);
    assert_int_equal(sa.calls, 0);
    assert_reaped(p1);
    assert_reaped(p2);
}

/* Several watchers of one pid share one pidfd; destroying the loop closes it, and leaves the
 * child to the program. */
static void test_child_fds_and_destroy(void **state)
{
    (void)state;
    int gate;
    pid_t pid = spawn_gated(17, &gate);
    int before = count_fds();
    assert_true(before > 0);
    aev_loop *loop = aevt_loop_new();
    int with_loop = count_fds();
    aev_child c[3];
    seen s[3];
    for (int i = 0; i < 3; i++) {
        start_child(&c[i], loop, &s[i], pid, 0);
    }
    int expected = (!g_fallback && pidfd_works()) ? 1 : 0;
    assert_int_equal(count_fds(), with_loop + expected);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_int_equal(count_fds(), before);
    release(gate);
    assert_exited(reap(pid), 17);
}

static bool sigchld_is_default(void)
{
    struct sigaction sa;
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa), 0);
    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/* With pidfds, plain watchers leave SIGCHLD alone; trace and pid-0 watchers (and every watcher
 * in the fallback) install the handler, and the disposition is back when they stop. */
static void test_child_sigchld_disposition(void **state)
{
    aev_loop *loop = *state;
    int gate;
    pid_t pid = spawn_gated(0, &gate);
    bool pidfd = !g_fallback && pidfd_works();
    aev_child plain, tr, any;
    seen s1, s2, s3;
    init_child(&plain, loop, &s1, pid, 0);
    init_child(&tr, loop, &s2, pid, 1);
    init_child(&any, loop, &s3, 0, 0);
    assert_true(sigchld_is_default());
    assert_int_equal(aev_child_start(&plain), 0);
    assert_int_equal(sigchld_is_default(), pidfd);
    assert_int_equal(aev_child_start(&tr), 0);
    assert_false(sigchld_is_default());
    assert_int_equal(aev_child_stop(&tr), 0);
    assert_int_equal(sigchld_is_default(), pidfd);
    assert_int_equal(aev_child_start(&any), 0);
    assert_false(sigchld_is_default());
    assert_int_equal(aev_child_stop(&any), 0);
    assert_int_equal(aev_child_stop(&plain), 0);
    assert_true(sigchld_is_default());
    release(gate);
    assert_exited(reap(pid), 0);
    assert_no_refs(loop);
}

/* ---- threads ------------------------------------------------------------------------------ */

typedef struct thread_ctx {
    pid_t pid;
    seen s;
    int rc;
} thread_ctx;

static void *thread_main(void *arg)
{
    thread_ctx *t = arg;
    aev_loop *loop = NULL;
    t->rc = aev_loop_new(&loop, aevt_flags());
    if (t->rc < 0)
        return NULL;
    aev_child c;
    memset(&t->s, 0, sizeof t->s);
    t->rc = aev_child_init(&c, loop, record_cb, t->pid, 0);
    if (t->rc == 0) {
        c.base.data = &t->s;
        t->rc = aev_child_start(&c);
    }
    if (t->rc == 0)
        t->rc = aev_run(loop, AEV_RUN_DEFAULT);
    int drc = aev_loop_destroy(loop);
    if (t->rc == 0)
        t->rc = drc;
    return NULL;
}

static void test_child_second_loop_in_thread(void **state)
{
    aev_loop *loop = *state;
    int gate1, gate2;
    pid_t p1 = spawn_gated(51, &gate1);
    pid_t p2 = spawn_gated(52, &gate2);
    thread_ctx t = {.pid = p2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_main, &t), 0);
    aev_child c;
    seen s;
    start_child(&c, loop, &s, p1, 0);
    /* The thread's child exits first; this loop must not reap it. */
    release(gate2);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.rc, 0);
    assert_int_equal(t.s.calls, 1);
    assert_int_equal(t.s.rpid[0], p2);
    assert_exited(t.s.rstatus[0], 52);
    run_idle(loop, 30);
    assert_int_equal(s.calls, 0);
    release(gate1);
    run_until(loop, &s.calls, 1);
    assert_exited(s.rstatus[0], 51);
    assert_reaped(p1);
    assert_reaped(p2);
    assert_no_refs(loop);
}

/* ---- main --------------------------------------------------------------------------------- */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, aevt_teardown)

static int run_all(const char *name)
{
    const struct CMUnitTest tests[] = {
        T(test_child_errors),
        T(test_child_not_a_child),
        T(test_child_nonexistent),
        T(test_child_exit_status),
        T(test_child_killed_by_signal),
        T(test_child_exited_before_start),
        T(test_child_several_watchers),
        T(test_child_two_children),
        T(test_child_any_pid),
        T(test_child_unwatched_not_reaped),
        T(test_child_stopped_watcher_does_not_reap),
        T(test_child_trace),
        T(test_child_trace_any_pid),
        T(test_child_reaped_elsewhere),
        T(test_child_restart_in_callback),
        T(test_child_run_returns),
        T(test_child_fds_and_destroy),
        T(test_child_sigchld_disposition),
        T(test_child_second_loop_in_thread),
    };
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}

int main(void)
{
    /* Children must not be reaped behind the tests' back, and their stops must produce
     * SIGCHLD: start from the default disposition. */
    signal(SIGCHLD, SIG_DFL);
    g_fallback = 0;
    int failed = run_all("child (pidfd where available)");
    g_fallback = 1;
    if (setenv("AEV_CHILD_PIDFD", "0", 1) != 0)
        return 1;
    failed += run_all("child (SIGCHLD fallback)");
    return failed ? 1 : 0;
}
