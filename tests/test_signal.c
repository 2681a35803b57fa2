/*
 * Tests of signal watchers: argument errors, delivery (same thread, from another thread, while
 * the loop sleeps), several watchers and priorities, coalescing of bursts without loss, two
 * loops in two threads, restoring the previous disposition (custom handler, SIG_DFL, SIG_IGN),
 * errno preservation, stop removing events, the per-signal loop limit, loops taking and giving up
 * their registrations while signals keep arriving, fork, and destroying a loop with active signal
 * watchers.
 *
 * Only SIGUSR1, SIGUSR2, SIGWINCH and SIGURG are used: SIGALRM belongs to the watchdog. SIGUSR1
 * and SIGUSR2 terminate the process by default, so a signal that the library fails to catch
 * fails the test loudly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* NSIG, syscall() */
#endif

#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* How long a run may wait for a signal before the test counts it as lost. Generous: the
 * machine may be busy; a working library delivers in microseconds. */
#define LIMIT AEV_SEC(5)

/* ---- write(2) interposition ---------------------------------------------------------------- */

/*
 * The library wakes a sleeping loop with write(2). This definition takes precedence over libc's
 * for the library's calls; it counts the calls per thread and, while `clobber_errno` is set,
 * sets errno to EIO even on success (which POSIX allows), so that a handler that does not
 * preserve errno is caught. It goes to the system call directly: it may run in a handler.
 */
/* volatile sig_atomic_t: it is incremented by the handler interrupting this same thread. */
static _Thread_local volatile sig_atomic_t tl_writes;
static atomic_int clobber_errno;

ssize_t write(int fd, const void *buf, size_t n)
{
    tl_writes++;
    ssize_t rc = syscall(SYS_write, fd, buf, n);
    if (atomic_load_explicit(&clobber_errno, memory_order_relaxed))
        errno = EIO;
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* What one watcher saw. count is atomic because some tests read it from another thread. */
typedef struct rec {
    int id;
    atomic_int count;
    unsigned events;
    pthread_t thread;
    int depth;              /* aev_depth() in the callback: > 0 means inside aev_run() */
    int log;                /* append id to g_log (main-thread tests only) */
    int raise_at;           /* raise(signum) from the callback when count reaches this */
    int signum;             /* for raise_at */
    aev_signal *stop_other; /* stopped from the callback */
} rec;

/* Order of callbacks across watchers, for the single-thread tests. */
static int g_log[64];
static int g_nlog;

static void rec_init(rec *r, int id)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    r->log = 1;
    atomic_init(&r->count, 0);
}

static void rec_cb(aev_watcher *w, unsigned events)
{
    rec *r = w->data;
    int n = atomic_fetch_add(&r->count, 1) + 1;
    r->events |= events;
    r->thread = pthread_self();
    r->depth = (int)aev_depth(aev_watcher_loop(w));
    if (r->log && g_nlog < (int)(sizeof g_log / sizeof g_log[0]))
        g_log[g_nlog++] = r->id;
    if (r->stop_other)
        assert_int_equal(aev_signal_stop(r->stop_other), 0);
    if (r->raise_at && n == r->raise_at)
        raise(r->signum);
}

static void sig_init(aev_signal *w, aev_loop *loop, rec *r, int signum)
{
    assert_int_equal(aev_signal_init(w, loop, rec_cb, signum), 0);
    w->base.data = r;
}

/* The common case: one watcher of signum, started, recording into a fresh r (id 1). */
static void sig_watch(aev_signal *w, aev_loop *loop, rec *r, int signum)
{
    rec_init(r, 1);
    sig_init(w, loop, r, signum);
    assert_int_equal(aev_signal_start(w), 0);
}

typedef struct guard {
    aev_timer t;
    int fired;
} guard;

static void guard_cb(aev_watcher *w, unsigned events)
{
    guard *g = w->data;
    (void)events;
    g->fired = 1;
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

/* Runs the loop until *count reaches want or `limit` passes; true if it was reached. No cmocka
 * assertions: it also runs in fork children and in threads. */
static bool run_until(aev_loop *loop, atomic_int *count, int want, aev_time_t limit)
{
    guard g = {.fired = 0};
    if (aev_timer_init(&g.t, loop, guard_cb, limit, 0) < 0)
        return false;
    g.t.base.data = &g;
    if (aev_timer_start(&g.t) < 0)
        return false;
    while (atomic_load(count) < want && !g.fired) {
        if (aev_run(loop, AEV_RUN_ONCE) < 0)
            break;
    }
    aev_timer_stop(&g.t);
    return atomic_load(count) >= want;
}

/* For the main thread: raises signum and fails unless r's callback count reaches want. */
static void raise_and_wait(aev_loop *loop, int signum, rec *r, int want)
{
    raise(signum);
    assert_true(run_until(loop, &r->count, want, LIMIT));
}

/* A few iterations that do not block: lets anything already due run. */
static void run_nowait(aev_loop *loop, int times)
{
    for (int i = 0; i < times; i++)
        assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
}

static void (*current_handler(int signum))(int)
{
    struct sigaction sa;
    assert_int_equal(sigaction(signum, NULL, &sa), 0);
    return sa.sa_handler;
}

/* A program's own handler, to check that it is restored and that it is called again. */
static volatile sig_atomic_t g_custom_hits;
static void custom_handler(int signum)
{
    (void)signum;
    g_custom_hits++;
}

static void set_handler(int signum, void (*fn)(int), int flags, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = flags;
    assert_int_equal(sigaction(signum, &sa, old), 0);
}

/* ---- errors and accessors ------------------------------------------------------------------ */

static void noop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

static void test_signal_errors(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    aev_timer t;
    assert_int_equal(aev_signal_init(NULL, loop, noop_cb, SIGUSR1), -EINVAL);
    assert_int_equal(aev_signal_init(&s, NULL, noop_cb, SIGUSR1), -EINVAL);
    assert_int_equal(aev_signal_init(&s, loop, NULL, SIGUSR1), -EINVAL);
    const int bad[] = {0, -1, -SIGUSR1, NSIG, NSIG + 1, SIGKILL, SIGSTOP, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(aev_signal_init(&s, loop, noop_cb, bad[i]), -EINVAL);
    }
    assert_int_equal(aev_signal_init(&s, loop, noop_cb, SIGUSR1), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(aev_signal_set(&s, bad[i]), -EINVAL);
        assert_int_equal(aev_signal_signum(&s), SIGUSR1);
    }
    assert_int_equal(aev_signal_set(NULL, SIGUSR1), -EINVAL);
    assert_int_equal(aev_signal_start(NULL), -EINVAL);
    assert_int_equal(aev_signal_stop(NULL), -EINVAL);
    assert_int_equal(aev_signal_signum(NULL), -EINVAL);

    /* A watcher of another type is refused by the signal functions. */
    assert_int_equal(aev_timer_init(&t, loop, noop_cb, AEV_SEC(1), 0), 0);
    assert_int_equal(aev_signal_start((aev_signal *)&t), -EINVAL);
    assert_int_equal(aev_signal_stop((aev_signal *)&t), -EINVAL);
    assert_int_equal(aev_signal_set((aev_signal *)&t, SIGUSR1), -EINVAL);

#if defined(__GLIBC__) && defined(SIGRTMIN)
    /* A signal the C library keeps for itself: sigaction() refuses it, so does start. */
    if (SIGRTMIN > 32) {
        assert_int_equal(aev_signal_init(&s, loop, noop_cb, 32), 0);
        assert_int_equal(aev_signal_start(&s), -EINVAL);
        assert_false(aev_is_active(&s.base));
        assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    }
#endif

    /* A never-initialised (zeroed) watcher too. */
    memset(&s, 0, sizeof s);
    assert_int_equal(aev_signal_start(&s), -EINVAL);
    assert_int_equal(aev_signal_stop(&s), -EINVAL);
}

static void test_signal_init_state(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    memset(&s, 0xa5, sizeof s);
    assert_int_equal(aev_signal_init(&s, loop, noop_cb, SIGWINCH), 0);
    assert_false(aev_is_active(&s.base));
    assert_false(aev_is_pending(&s.base));
    assert_int_equal(aev_priority(&s.base), 0);
    assert_null(s.base.data);
    assert_ptr_equal(aev_watcher_loop(&s.base), loop);
    assert_int_equal(aev_signal_signum(&s), SIGWINCH);
    /* Start and stop are idempotent. */
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_int_equal(aev_signal_start(&s), 0);
    assert_int_equal(aev_signal_start(&s), 0);
    assert_true(aev_is_active(&s.base));
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_false(aev_is_active(&s.base));
}

static void test_signal_set_busy(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    assert_int_equal(aev_signal_set(&s, SIGUSR2), -EBUSY);
    assert_int_equal(aev_signal_signum(&s), SIGUSR1);
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_int_equal(aev_signal_set(&s, SIGUSR2), 0);
    assert_int_equal(aev_signal_signum(&s), SIGUSR2);

    /* After the set, the watcher watches the new signal. */
    assert_int_equal(aev_signal_start(&s), 0);
    assert_true(current_handler(SIGUSR2) != SIG_DFL);
    assert_true(current_handler(SIGUSR1) == SIG_DFL);
    raise_and_wait(loop, SIGUSR2, &r, 1);
    assert_int_equal(aev_signal_stop(&s), 0);
}

/* aev_start()/aev_stop() dispatch to the signal functions. */
static void test_signal_generic_start_stop(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    rec_init(&r, 1);
    sig_init(&s, loop, &r, SIGUSR1);
    assert_int_equal(aev_start(&s.base), 0);
    assert_true(aev_is_active(&s.base));
    assert_true(current_handler(SIGUSR1) != SIG_DFL);
    raise_and_wait(loop, SIGUSR1, &r, 1);
    assert_int_equal(aev_stop(&s.base), 0);
    assert_false(aev_is_active(&s.base));
    assert_true(current_handler(SIGUSR1) == SIG_DFL);
}

/* ---- delivery -------------------------------------------------------------------------- */

static void test_signal_raise_same_thread(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    raise(SIGUSR1);
    /* The handler never runs the callback itself. */
    assert_int_equal(atomic_load(&r.count), 0);
    assert_true(run_until(loop, &r.count, 1, LIMIT));
    assert_int_equal(r.events, AEV_SIGNAL);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_true(r.depth > 0);
    assert_true(aev_is_active(&s.base));
    /* One signal, one callback. */
    run_nowait(loop, 3);
    assert_int_equal(atomic_load(&r.count), 1);
    assert_int_equal(aev_signal_stop(&s), 0);
}

typedef struct sender {
    pthread_t target; /* thread to pthread_kill, when by_pthread_kill */
    int by_pthread_kill;
    int signum;
    long delay_ms;
} sender;

static void *sender_main(void *arg)
{
    sender *s = arg;
    aevt_sleep_ms(s->delay_ms);
    if (s->by_pthread_kill)
        pthread_kill(s->target, s->signum);
    else
        raise(s->signum); /* the handler runs in this thread, the loop sleeps in another */
    return NULL;
}

static void delivered_while_blocked(aev_loop *loop, int by_pthread_kill)
{
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    sender snd = {pthread_self(), by_pthread_kill, SIGUSR1, 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sender_main, &snd), 0);
    /* The loop blocks in its poll with no timer but the guard: only the signal can end it. */
    bool ok = run_until(loop, &r.count, 1, LIMIT);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(ok);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_int_equal(aev_signal_stop(&s), 0);
}

/* The handler runs in another thread: the loop must be woken through its wakeup fd. */
static void test_signal_from_other_thread(void **state)
{
    delivered_while_blocked(*state, 0);
}

/* The handler interrupts the loop's own poll. */
static void test_signal_pthread_kill_loop_thread(void **state)
{
    delivered_while_blocked(*state, 1);
}

static void test_signal_several_watchers(void **state)
{
    aev_loop *loop = *state;
    aev_signal s[3], other;
    rec r[3], ro;
    for (int i = 0; i < 3; i++) {
        rec_init(&r[i], i + 1);
        sig_init(&s[i], loop, &r[i], SIGUSR1);
        assert_int_equal(aev_signal_start(&s[i]), 0);
    }
    rec_init(&ro, 9);
    sig_init(&other, loop, &ro, SIGUSR2);
    assert_int_equal(aev_signal_start(&other), 0);

    g_nlog = 0;
    raise_and_wait(loop, SIGUSR1, &r[2], 1);
    run_nowait(loop, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&r[i].count), 1);
    assert_int_equal(atomic_load(&ro.count), 0);
    /* Same priority: start order. */
    assert_int_equal(g_nlog, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g_log[i], i + 1);

    /* The middle one stopped: the others still get the signal, it does not. */
    assert_int_equal(aev_signal_stop(&s[1]), 0);
    raise(SIGUSR1);
    raise(SIGUSR2);
    assert_true(run_until(loop, &r[2].count, 2, LIMIT));
    assert_true(run_until(loop, &ro.count, 1, LIMIT));
    assert_int_equal(atomic_load(&r[0].count), 2);
    assert_int_equal(atomic_load(&r[1].count), 1);

    /* Each signal reaches only its own watchers. */
    raise_and_wait(loop, SIGUSR2, &ro, 2);
    run_nowait(loop, 2);
    assert_int_equal(atomic_load(&r[0].count), 2);
    assert_int_equal(atomic_load(&r[2].count), 2);

    for (int i = 0; i < 3; i++)
        assert_int_equal(aev_signal_stop(&s[i]), 0);
    assert_int_equal(aev_signal_stop(&other), 0);
}

static void test_signal_priorities(void **state)
{
    aev_loop *loop = *state;
    const int pri[4] = {-1, 0, AEV_MAXPRI, 0};
    aev_signal s[4];
    rec r[4];
    for (int i = 0; i < 4; i++) {
        rec_init(&r[i], i + 1);
        sig_init(&s[i], loop, &r[i], SIGUSR1);
        assert_int_equal(aev_set_priority(&s[i].base, pri[i]), 0);
        assert_int_equal(aev_signal_start(&s[i]), 0);
        assert_int_equal(aev_set_priority(&s[i].base, 0), -EBUSY);
    }
    g_nlog = 0;
    raise_and_wait(loop, SIGUSR1, &r[0], 1);
    run_nowait(loop, 2);
    /* Highest priority first; equal priorities in start order. */
    const int want[4] = {3, 2, 4, 1};
    assert_int_equal(g_nlog, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g_log[i], want[i]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(aev_signal_stop(&s[i]), 0);
}

/* A burst before the loop looks is one callback; a signal during the callback is another. */
static void test_signal_burst_coalesced_not_lost(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    for (int i = 0; i < 100; i++)
        raise(SIGUSR1);
    assert_true(run_until(loop, &r.count, 1, LIMIT));
    run_nowait(loop, 3);
    assert_int_equal(atomic_load(&r.count), 1);

    /* The callback (count 2) raises the signal again: that one must lead to count 3. */
    r.signum = SIGUSR1;
    r.raise_at = 2;
    raise_and_wait(loop, SIGUSR1, &r, 3);
    run_nowait(loop, 3);
    assert_int_equal(atomic_load(&r.count), 3);
    assert_int_equal(aev_signal_stop(&s), 0);
}

typedef struct pingpong {
    atomic_int *count;
    pthread_t loop_thread;
    int rounds;
    atomic_int failed_round; /* first round whose callback did not come, 0 if none */
} pingpong;

/* Sends one signal per round and waits for its callback before the next: every one of them
 * must be delivered, whether the handler runs here or interrupts the loop thread. */
static void *pingpong_main(void *arg)
{
    pingpong *p = arg;
    for (int i = 1; i <= p->rounds; i++) {
        if (i % 2)
            raise(SIGUSR1);
        else
            pthread_kill(p->loop_thread, SIGUSR1);
        aev_time_t until = aev_time() + LIMIT;
        while (atomic_load(p->count) < i && aev_time() < until)
            sched_yield();
        if (atomic_load(p->count) < i) {
            atomic_store(&p->failed_round, i);
            break;
        }
    }
    return NULL;
}

static void test_signal_pingpong_none_lost(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    pingpong p = {.count = &r.count, .loop_thread = pthread_self(), .rounds = 200};
    atomic_init(&p.failed_round, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pingpong_main, &p), 0);
    guard g = {.fired = 0};
    assert_int_equal(aev_timer_init(&g.t, loop, guard_cb, AEV_SEC(20), 0), 0);
    g.t.base.data = &g;
    assert_int_equal(aev_timer_start(&g.t), 0);
    while (atomic_load(&r.count) < p.rounds && !g.fired && !atomic_load(&p.failed_round))
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    assert_int_equal(aev_timer_stop(&g.t), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&p.failed_round), 0);
    assert_int_equal(atomic_load(&r.count), p.rounds);
    assert_int_equal(aev_signal_stop(&s), 0);
}

/* ---- several loops ---------------------------------------------------------------------- */

typedef struct loop_thread {
    pthread_t self;
    rec r;
    atomic_int *ready;
    int ok;
    int stop_ok;
} loop_thread;

static void *loop_thread_main(void *arg)
{
    loop_thread *t = arg;
    aev_loop *loop = NULL;
    aev_signal s;
    if (aev_loop_new(&loop, aevt_flags()) < 0)
        return NULL;
    if (aev_signal_init(&s, loop, rec_cb, SIGUSR1) == 0) {
        s.base.data = &t->r;
        if (aev_signal_start(&s) == 0) {
            atomic_fetch_add(t->ready, 1);
            t->ok = run_until(loop, &t->r.count, 1, LIMIT);
            t->stop_ok = aev_signal_stop(&s) == 0;
        }
    }
    aev_loop_destroy(loop);
    return NULL;
}

/* The same signal in two loops in two threads, in which it is blocked: the handler runs in the
 * main thread, and each loop's callback runs in that loop's thread. */
static void test_signal_two_loops_two_threads(void **state)
{
    (void)state;
    atomic_int ready;
    atomic_init(&ready, 0);
    loop_thread t[2];
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    /* The threads inherit a mask with SIGUSR1 blocked; the main thread unblocks it again. */
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
    for (int i = 0; i < 2; i++) {
        memset(&t[i], 0, sizeof t[i]);
        rec_init(&t[i].r, i + 1);
        t[i].r.log = 0;
        t[i].ready = &ready;
        assert_int_equal(pthread_create(&t[i].self, NULL, loop_thread_main, &t[i]), 0);
    }
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    aev_time_t until = aev_time() + LIMIT;
    while (atomic_load(&ready) < 2 && aev_time() < until)
        aevt_sleep_ms(1);
    assert_int_equal(atomic_load(&ready), 2);
    raise(SIGUSR1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i].self, NULL), 0);
    for (int i = 0; i < 2; i++) {
        assert_true(t[i].ok);
        assert_true(t[i].stop_ok);
        assert_int_equal(atomic_load(&t[i].r.count), 1);
        assert_true(pthread_equal(t[i].r.thread, t[i].self));
        assert_true(t[i].r.depth > 0);
    }
    assert_true(current_handler(SIGUSR1) == SIG_DFL);
}

typedef struct churner {
    pthread_t self;
    atomic_int *done;
    int cycles;
    int errors;
    int calls;
} churner;

static void churn_cb(aev_watcher *w, unsigned events)
{
    churner *c = w->data;
    if (events & AEV_SIGNAL)
        c->calls++;
}

/* Starts and stops a SIGWINCH watcher over and over in its own loop. */
static void *churner_main(void *arg)
{
    churner *c = arg;
    aev_loop *loop = NULL;
    aev_signal s;
    if (aev_loop_new(&loop, aevt_flags()) < 0 ||
        aev_signal_init(&s, loop, churn_cb, SIGWINCH) < 0) {
        c->errors++;
        atomic_fetch_add(c->done, 1);
        return NULL;
    }
    s.base.data = c;
    aev_timer t;
    c->errors += aev_timer_init(&t, loop, noop_cb, AEV_MSEC(1), 0) != 0;
    for (int i = 0; i < c->cycles; i++) {
        c->errors += aev_signal_start(&s) != 0;
        /* Up to 1 ms for a signal to arrive; the timer ends the run otherwise. */
        c->errors += aev_timer_start(&t) != 0;
        c->errors += aev_run(loop, AEV_RUN_ONCE) < 0;
        c->errors += aev_timer_stop(&t) != 0;
        c->errors += aev_signal_stop(&s) != 0;
    }
    c->errors += aev_loop_destroy(loop) != 0;
    atomic_fetch_add(c->done, 1);
    return NULL;
}

/* Loops in two threads take and give up their places for one signal while the handler runs
 * again and again in the main thread: the handshake between the handler and a place being
 * freed is what this exercises (under TSan and ASan in particular). SIGWINCH is ignored by
 * default, so signals between the registrations are harmless. */
static void test_signal_churn_while_signalled(void **state)
{
    (void)state;
    atomic_int done;
    atomic_init(&done, 0);
    churner c[2];
    for (int i = 0; i < 2; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].done = &done;
        c[i].cycles = 300;
        assert_int_equal(pthread_create(&c[i].self, NULL, churner_main, &c[i]), 0);
    }
    aev_time_t until = aev_time() + AEV_SEC(30);
    while (atomic_load(&done) < 2 && aev_time() < until)
        raise(SIGWINCH);
    int calls = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(c[i].self, NULL), 0);
        assert_int_equal(c[i].errors, 0);
        calls += c[i].calls;
    }
    /* The signals did reach watchers in the middle of all this. */
    assert_true(calls > 0);
    assert_true(current_handler(SIGWINCH) == SIG_DFL);
}

/* Two loops in one thread: stopping one loop's watcher leaves the other one working, and the
 * disposition is restored only after the last. */
static void test_signal_two_loops_one_stops(void **state)
{
    aev_loop *a = *state;
    aev_loop *b = aevt_loop_new();
    aev_signal sa, sb;
    rec ra, rb;
    rec_init(&ra, 1);
    rec_init(&rb, 2);
    sig_init(&sa, a, &ra, SIGUSR1);
    sig_init(&sb, b, &rb, SIGUSR1);
    assert_int_equal(aev_signal_start(&sa), 0);
    assert_int_equal(aev_signal_start(&sb), 0);
    raise_and_wait(a, SIGUSR1, &ra, 1);
    assert_true(run_until(b, &rb.count, 1, LIMIT));

    assert_int_equal(aev_signal_stop(&sa), 0);
    assert_true(current_handler(SIGUSR1) != SIG_DFL);
    raise_and_wait(b, SIGUSR1, &rb, 2);
    run_nowait(a, 2);
    assert_int_equal(atomic_load(&ra.count), 1);

    assert_int_equal(aev_signal_stop(&sb), 0);
    assert_true(current_handler(SIGUSR1) == SIG_DFL);
    assert_int_equal(aev_loop_destroy(b), 0);
}

/* Many loops may watch one signal; past the limit start fails with -ENOSPC and changes
 * nothing, and a freed place can be taken again. */
static void test_signal_too_many_loops(void **state)
{
    (void)state;
    enum { MAXLOOPS = 256 };
    static aev_loop *loops[MAXLOOPS];
    static aev_signal sigs[MAXLOOPS];
    static rec recs[MAXLOOPS];
    int n = 0, rc = 0;
    while (n < MAXLOOPS) {
        loops[n] = aevt_loop_new();
        rec_init(&recs[n], n);
        sig_init(&sigs[n], loops[n], &recs[n], SIGUSR2);
        rc = aev_signal_start(&sigs[n]);
        n++;
        if (rc < 0)
            break;
    }
    assert_int_equal(rc, -ENOSPC);
    int last = n - 1;
    assert_int_equal(last, 32); /* the documented number of loops per signal */
    assert_false(aev_is_active(&sigs[last].base));
    /* A second watcher in a loop that already has the signal needs no new place. */
    aev_signal extra;
    rec rextra;
    rec_init(&rextra, -1);
    sig_init(&extra, loops[0], &rextra, SIGUSR2);
    assert_int_equal(aev_signal_start(&extra), 0);

    raise(SIGUSR2);
    for (int i = 0; i < last; i++)
        assert_true(run_until(loops[i], &recs[i].count, 1, LIMIT));
    assert_int_equal(atomic_load(&rextra.count), 1);

    assert_int_equal(aev_signal_stop(&sigs[3]), 0);
    assert_int_equal(aev_signal_start(&sigs[last]), 0);
    raise(SIGUSR2);
    assert_true(run_until(loops[last], &recs[last].count, 1, LIMIT));

    assert_int_equal(aev_signal_stop(&extra), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(aev_signal_stop(&sigs[i]), 0);
        assert_int_equal(aev_loop_destroy(loops[i]), 0);
    }
    assert_true(current_handler(SIGUSR2) == SIG_DFL);
}

/* ---- dispositions, masks, errno ---------------------------------------------------------- */

static void test_signal_restores_custom_handler(void **state)
{
    aev_loop *loop = *state;
    struct sigaction orig, now;
    struct sigaction custom;
    memset(&custom, 0, sizeof custom);
    custom.sa_handler = custom_handler;
    sigemptyset(&custom.sa_mask);
    sigaddset(&custom.sa_mask, SIGWINCH);
    custom.sa_flags = SA_RESTART;
    assert_int_equal(sigaction(SIGUSR2, &custom, &orig), 0);
    g_custom_hits = 0;

    sigset_t mask_before, mask_after;
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &mask_before), 0);

    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR2);
    assert_true(current_handler(SIGUSR2) != custom_handler);
    raise_and_wait(loop, SIGUSR2, &r, 1);
    assert_int_equal(g_custom_hits, 0);
    assert_int_equal(aev_signal_stop(&s), 0);

    assert_int_equal(sigaction(SIGUSR2, NULL, &now), 0);
    assert_true(now.sa_handler == custom_handler);
    assert_true(sigismember(&now.sa_mask, SIGWINCH));
    assert_false(sigismember(&now.sa_mask, SIGURG));
    assert_true(now.sa_flags & SA_RESTART);
    raise(SIGUSR2);
    assert_int_equal(g_custom_hits, 1);
    run_nowait(loop, 2);
    assert_int_equal(atomic_load(&r.count), 1);

    /* The signal mask was never touched. */
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &mask_after), 0);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == 32 || sig == 33)
            continue; /* reserved by the C library */
        assert_int_equal(sigismember(&mask_before, sig), sigismember(&mask_after, sig));
    }
    assert_int_equal(sigaction(SIGUSR2, &orig, NULL), 0);
}

static void restores_to(aev_loop *loop, int signum, void (*disp)(int))
{
    struct sigaction orig;
    set_handler(signum, disp, 0, &orig);
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, signum);
    assert_true(current_handler(signum) != disp);
    raise_and_wait(loop, signum, &r, 1);
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_true(current_handler(signum) == disp);
    assert_int_equal(sigaction(signum, &orig, NULL), 0);
}

/* SIGWINCH and SIGURG are ignored by default, so a wrong restore cannot kill the test. */
static void test_signal_restores_default(void **state)
{
    restores_to(*state, SIGWINCH, SIG_DFL);
}

static void test_signal_restores_ignore(void **state)
{
    restores_to(*state, SIGURG, SIG_IGN);
}

/* A start and stop, then a start again: the disposition saved is still the program's. */
static void test_signal_restart_keeps_original(void **state)
{
    aev_loop *loop = *state;
    struct sigaction orig;
    set_handler(SIGUSR2, custom_handler, 0, &orig);
    aev_signal s;
    rec r;
    rec_init(&r, 1);
    sig_init(&s, loop, &r, SIGUSR2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aev_signal_start(&s), 0);
        assert_int_equal(aev_signal_stop(&s), 0);
        assert_true(current_handler(SIGUSR2) == custom_handler);
    }
    assert_int_equal(sigaction(SIGUSR2, &orig, NULL), 0);
}

static void test_signal_errno_same_thread(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    errno = EDOM;
    raise(SIGUSR1);
    assert_int_equal(errno, EDOM);
    assert_true(run_until(loop, &r.count, 1, LIMIT));
    assert_int_equal(aev_signal_stop(&s), 0);
}

typedef struct sleeper {
    aev_loop *loop;
    aev_signal s;
    aev_async quit;
    rec r;
    atomic_int ready;
} sleeper;

static void sleeper_quit_cb(aev_watcher *w, unsigned events)
{
    sleeper *sl = w->data;
    (void)events;
    aev_signal_stop(&sl->s);
    aev_async_stop(&sl->quit);
}

static void *sleeper_main(void *arg)
{
    sleeper *sl = arg;
    atomic_store(&sl->ready, 1);
    aev_run(sl->loop, AEV_RUN_DEFAULT);
    return NULL;
}

/* The handler runs in this thread while the loop sleeps in another, so it writes the wakeup fd;
 * the interposed write() clobbers errno, which the handler must put back. */
static void test_signal_errno_preserved_with_write(void **state)
{
    (void)state;
    sleeper sl;
    memset(&sl, 0, sizeof sl);
    sl.loop = aevt_loop_new();
    atomic_init(&sl.ready, 0);
    rec_init(&sl.r, 1);
    sl.r.log = 0;
    sig_init(&sl.s, sl.loop, &sl.r, SIGUSR1);
    assert_int_equal(aev_async_init(&sl.quit, sl.loop, sleeper_quit_cb), 0);
    sl.quit.base.data = &sl;
    assert_int_equal(aev_signal_start(&sl.s), 0);
    assert_int_equal(aev_async_start(&sl.quit), 0);

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sleeper_main, &sl), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    while (!atomic_load(&sl.ready))
        aevt_sleep_ms(1);

    int wrote = 0, bad = 0, raised = 0;
    atomic_store(&clobber_errno, 1);
    for (int i = 1; i <= 40 && wrote < 3; i++) {
        raised = i;
        aevt_sleep_ms(10); /* let the loop go back to sleep */
        sig_atomic_t before = tl_writes;
        errno = EDOM;
        raise(SIGUSR1);
        if (errno != EDOM)
            bad++;
        if (tl_writes > before)
            wrote++;
        aev_time_t until = aev_time() + LIMIT;
        while (atomic_load(&sl.r.count) < i && aev_time() < until)
            aevt_sleep_ms(1);
    }
    atomic_store(&clobber_errno, 0);
    assert_int_equal(aev_async_send(&sl.quit), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(bad, 0);
    assert_int_equal(atomic_load(&sl.r.count), raised);
    /* The test is meaningful only if the handler did write at least once. */
    assert_true(wrote > 0);
    assert_int_equal(aev_loop_destroy(sl.loop), 0);
}

/* ---- stop and pending events ------------------------------------------------------------- */

static void test_signal_stop_removes_pending(void **state)
{
    aev_loop *loop = *state;
    aev_signal hi, lo;
    rec rhi, rlo;
    rec_init(&rhi, 1);
    rec_init(&rlo, 2);
    sig_init(&hi, loop, &rhi, SIGUSR1);
    sig_init(&lo, loop, &rlo, SIGUSR1);
    assert_int_equal(aev_set_priority(&hi.base, 1), 0);
    assert_int_equal(aev_signal_start(&hi), 0);
    assert_int_equal(aev_signal_start(&lo), 0);
    /* hi runs first and stops lo, which is pending by then: lo's callback must not run. */
    rhi.stop_other = &lo;
    raise_and_wait(loop, SIGUSR1, &rhi, 1);
    run_nowait(loop, 2);
    assert_int_equal(atomic_load(&rlo.count), 0);
    assert_false(aev_is_pending(&lo.base));
    assert_int_equal(aev_pending_count(loop), 0);

    /* A fed event is removed by stop too. */
    rhi.stop_other = NULL;
    assert_int_equal(aev_feed_event(&hi.base, AEV_SIGNAL), 0);
    assert_true(aev_is_pending(&hi.base));
    assert_int_equal(aev_signal_stop(&hi), 0);
    assert_false(aev_is_pending(&hi.base));
    assert_int_equal(aev_pending_count(loop), 0);
    run_nowait(loop, 2);
    assert_int_equal(atomic_load(&rhi.count), 1);
}

/* A signal that arrived while the watcher was active, but was not yet delivered when the
 * watcher stopped, is dropped with it. */
static void test_signal_stop_before_delivery_drops(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    raise(SIGUSR1);
    assert_int_equal(aev_signal_stop(&s), 0);
    assert_int_equal(aev_signal_start(&s), 0);
    run_nowait(loop, 3);
    assert_int_equal(atomic_load(&r.count), 0);
    /* Still working afterwards. */
    raise_and_wait(loop, SIGUSR1, &r, 1);
    assert_int_equal(aev_signal_stop(&s), 0);
}

/* ---- references ------------------------------------------------------------------------ */

static void test_signal_references(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    rec_init(&r, 1);
    sig_init(&s, loop, &r, SIGUSR1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_signal_start(&s), 0);
    /* An active signal watcher keeps the loop alive... */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_signal_stop(&s), 0);
    /* ...the loop's internal signal machinery does not: this returns at once. */
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(aev_time() - t0 < AEV_SEC(2));
}

/* ---- fork ---------------------------------------------------------------------------------- */

/* In the child: the inherited loop rebuilds its wakeup fd and still receives the signal,
 * including while it sleeps. The child reports through its exit status. */
static void test_signal_fork_child_receives(void **state)
{
    aev_loop *loop = *state;
    aev_signal s;
    rec r;
    sig_watch(&s, loop, &r, SIGUSR1);
    /* Make the parent's loop use its signal machinery once before the fork. */
    raise_and_wait(loop, SIGUSR1, &r, 1);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        int code = 0;
        if (!run_until(loop, &r.count, 2, LIMIT))
            code = 2;
        else if (!pthread_equal(r.thread, pthread_self()))
            code = 3;
        /* And once more, sent by the child to itself. */
        raise(SIGUSR1);
        if (code == 0 && !run_until(loop, &r.count, 3, LIMIT))
            code = 4;
        if (code == 0 && aev_signal_stop(&s) != 0)
            code = 5;
        _exit(code);
    }
    /* The parent's watcher stays active while the child runs: the child's signal must not
     * reach the parent's loop. */
    aevt_sleep_ms(100);
    assert_int_equal(kill(pid, SIGUSR1), 0);
    int status = 0;
    aev_time_t until = aev_time() + AEV_SEC(15);
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && aev_time() < until)
        aevt_sleep_ms(10);
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("fork child did not finish");
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    run_nowait(loop, 2);
    assert_int_equal(atomic_load(&r.count), 1);
    assert_int_equal(aev_signal_stop(&s), 0);
}

/* ---- destroy ------------------------------------------------------------------------------- */

/* A loop destroyed with an active signal watcher gives the signal back: the previous handler
 * gets it, and the abandoned watcher's callback never runs. */
static void test_signal_destroy_with_active_watcher(void **state)
{
    aev_loop *other = *state;
    struct sigaction orig;
    set_handler(SIGUSR2, custom_handler, 0, &orig);
    g_custom_hits = 0;

    aev_loop *loop = aevt_loop_new();
    aev_signal s, so;
    rec r, ro;
    rec_init(&r, 1);
    rec_init(&ro, 2);
    sig_init(&s, loop, &r, SIGUSR2);
    assert_int_equal(aev_signal_start(&s), 0);
    raise(SIGUSR2); /* left undelivered in the loop */
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_true(current_handler(SIGUSR2) == custom_handler);
    raise(SIGUSR2);
    assert_int_equal(g_custom_hits, 1);
    assert_int_equal(atomic_load(&r.count), 0);

    /* With another loop still watching, the signal goes there instead. */
    loop = aevt_loop_new();
    sig_init(&s, loop, &r, SIGUSR2);
    sig_init(&so, other, &ro, SIGUSR2);
    assert_int_equal(aev_signal_start(&s), 0);
    assert_int_equal(aev_signal_start(&so), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_true(current_handler(SIGUSR2) != custom_handler);
    raise_and_wait(other, SIGUSR2, &ro, 1);
    assert_int_equal(g_custom_hits, 1);
    assert_int_equal(atomic_load(&r.count), 0);
    assert_int_equal(aev_signal_stop(&so), 0);
    assert_true(current_handler(SIGUSR2) == custom_handler);
    assert_int_equal(sigaction(SIGUSR2, &orig, NULL), 0);
}

/* ---- main ---------------------------------------------------------------------------------- */

#define T(fn) cmocka_unit_test_setup_teardown(fn, aevt_setup, aevt_teardown)

int main(void)
{
    aevt_watchdog(110);
    const struct CMUnitTest tests[] = {
        T(test_signal_errors),
        T(test_signal_init_state),
        T(test_signal_set_busy),
        T(test_signal_generic_start_stop),
        T(test_signal_raise_same_thread),
        T(test_signal_from_other_thread),
        T(test_signal_pthread_kill_loop_thread),
        T(test_signal_several_watchers),
        T(test_signal_priorities),
        T(test_signal_burst_coalesced_not_lost),
        T(test_signal_pingpong_none_lost),
        T(test_signal_two_loops_two_threads),
        T(test_signal_churn_while_signalled),
        T(test_signal_two_loops_one_stops),
        T(test_signal_too_many_loops),
        T(test_signal_restores_custom_handler),
        T(test_signal_restores_default),
        T(test_signal_restores_ignore),
        T(test_signal_restart_keeps_original),
        T(test_signal_errno_same_thread),
        T(test_signal_errno_preserved_with_write),
        T(test_signal_stop_removes_pending),
        T(test_signal_stop_before_delivery_drops),
        T(test_signal_references),
        T(test_signal_fork_child_receives),
        T(test_signal_destroy_with_active_watcher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
