/*
 * Async watchers across threads: wakeups of a blocked loop, ping-pong between two loops, lost
 * wakeups and the happens-before guarantee under stress, many watchers sent to concurrently, and
 * sends that race with the loop stopping and restarting the watcher.
 *
 * Data handed from a sender to a callback is deliberately a plain (non-atomic) variable where the
 * protocol allows it: the only thing ordering the sender's write before the callback's read is
 * aev_async_send() -> the callback, so ThreadSanitizer reports a race if the library lacks that
 * guarantee, and the value checks fail on weakly ordered hardware.
 *
 * A loop that misses a wakeup sleeps forever; every test therefore arms a "stall guard": a timer
 * restarted by every callback, which fires only if no callback ran for STALL and then ends the
 * test with a message instead of a hang. Senders bound their waits by time too.
 *
 * AEVT_SCALE (default 1, or 0.3 in a ThreadSanitizer build) scales the iteration counts.
 */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define AEVT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AEVT_TSAN 1
#endif
#endif

/* A lost wakeup is never recovered (nothing else wakes the loop), so STALL only decides how
 * soon such a failure is reported; it is generous so that a starved thread on a loaded machine
 * is not mistaken for one. */
#ifdef AEVT_TSAN
#define DEFAULT_SCALE 0.3
#define STALL AEV_SEC(10)
#define TEST_DEADLINE AEV_SEC(60)
#else
#define DEFAULT_SCALE 1.0
#define STALL AEV_SEC(8)
#define TEST_DEADLINE AEV_SEC(40)
#endif

#define MAX_THREADS 8

/* ---- helpers ------------------------------------------------------------------------------- */

static double scale_factor(void)
{
    const char *s = getenv("AEVT_SCALE");
    if (s) {
        char *end;
        double v = strtod(s, &end);
        if (end != s && v > 0)
            return v;
    }
    return DEFAULT_SCALE;
}

/* n scaled by AEVT_SCALE, at least min. */
static long scaled(long n, long min)
{
    long v = (long)((double)n * scale_factor());
    return v < min ? min : v;
}

/* Waits until *v >= want (acquire), giving the CPU away meanwhile. False if *aborted was set or
 * the deadline passed first. */
static bool wait_at_least(atomic_long *v, long want, atomic_int *aborted, int64_t deadline)
{
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) >= want)
            return true;
        if (atomic_load_explicit(aborted, memory_order_relaxed))
            return false;
        if ((i & 63) == 63 && aevt_mono_ns() > deadline)
            return false;
        sched_yield();
    }
}

/*
 * The stall guard: a repeating timer that every callback of the test restarts. If it fires, no
 * callback ran for STALL although the test still expected one: a lost wakeup. on_stall() must
 * stop every watcher of the test so that aev_run() returns.
 */
typedef struct stall_guard {
    aev_timer t;
    int fired;
    int64_t last_feed;               /* aevt_mono_ns() of the last callback (or of the start) */
    int64_t quiet;                   /* when fired: how long no callback had run */
    aev_async *watched[MAX_THREADS]; /* watchers whose `sent` flag is recorded when it fires */
    int nwatched;
    bool undelivered[MAX_THREADS]; /* sent, or noted and pending, when the guard fired */
    void (*on_stall)(void *ctx);
    void *ctx;
} stall_guard;

static void stall_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    stall_guard *g = (stall_guard *)w;
    g->fired++;
    g->quiet = aevt_mono_ns() - g->last_feed;
    for (int i = 0; i < g->nwatched; i++) {
        aev_async *a = g->watched[i];
        g->undelivered[i] = aev_async_sent(a) || aev_is_pending(&a->base);
    }
    g->on_stall(g->ctx);
    aev_timer_stop(&g->t);
}

static void stall_start(stall_guard *g, aev_loop *loop, void (*on_stall)(void *), void *ctx)
{
    g->fired = 0;
    g->nwatched = 0;
    g->last_feed = aevt_mono_ns();
    g->on_stall = on_stall;
    g->ctx = ctx;
    assert_int_equal(aev_timer_init(&g->t, loop, stall_cb, STALL, STALL), 0);
    /* Highest priority: when it fires it runs before the async callbacks of the same iteration,
     * so it sees the state the loop woke up in. */
    assert_int_equal(aev_set_priority(&g->t.base, AEV_MAXPRI), 0);
    assert_int_equal(aev_timer_start(&g->t), 0);
}

static void stall_watch(stall_guard *g, aev_async *a)
{
    assert_true(g->nwatched < MAX_THREADS);
    g->watched[g->nwatched++] = a;
}

/* For failure messages: how long the loop had been quiet, and which watchers had a send that
 * the loop slept through (still flagged as sent, or noted only when the guard woke the loop). */
static const char *stall_describe(const stall_guard *g, char *buf, size_t size)
{
    int n = snprintf(buf, size, "no callback for %lld ms; undelivered sends at watchers:",
                     (long long)(g->quiet / 1000000));
    bool any = false;
    for (int i = 0; i < g->nwatched && n > 0 && (size_t)n < size; i++) {
        if (g->undelivered[i]) {
            n += snprintf(buf + n, size - (size_t)n, " %d", i);
            any = true;
        }
    }
    if (!any && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, " none");
    return buf;
}

static void stall_feed(stall_guard *g)
{
    g->last_feed = aevt_mono_ns();
    aev_timer_again(&g->t);
}

/* ---- a thread wakes a loop blocked in aev_run -------------------------------------------- */

typedef struct wake {
    aev_async a;
    stall_guard guard;
    long payload; /* plain: written by the sender before its send */
    long seen;
    int calls;
    atomic_int send_rc;
} wake;

static void wake_cb(aev_watcher *w, unsigned events)
{
    wake *s = w->data;
    assert_int_equal(events, AEV_ASYNC);
    s->calls++;
    s->seen = s->payload;
    assert_int_equal(aev_async_stop(&s->a), 0);
    assert_int_equal(aev_timer_stop(&s->guard.t), 0);
}

static void wake_stall(void *ctx)
{
    wake *s = ctx;
    aev_async_stop(&s->a);
}

static void *wake_thread(void *p)
{
    wake *s = p;
    aevt_sleep_ms(50);
    s->payload = 4242;
    atomic_store(&s->send_rc, aev_async_send(&s->a));
    return NULL;
}

static void test_thread_send_wakes_blocked_loop(void **state)
{
    aev_loop *loop = *state;
    wake *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(aev_async_init(&s->a, loop, wake_cb), 0);
    s->a.base.data = s;
    assert_int_equal(aev_async_start(&s->a), 0);
    stall_start(&s->guard, loop, wake_stall, s);
    stall_watch(&s->guard, &s->a);

    pthread_t th;
    int64_t t0 = aevt_mono_ns();
    assert_int_equal(pthread_create(&th, NULL, wake_thread, s), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    int64_t elapsed = aevt_mono_ns() - t0;
    assert_int_equal(pthread_join(th, NULL), 0);

    char why[160];
    if (s->guard.fired)
        fail_msg("the loop was not woken by a send from another thread: %s",
                 stall_describe(&s->guard, why, sizeof(why)));
    assert_int_equal(rc, 0);
    assert_int_equal(atomic_load(&s->send_rc), 0);
    assert_int_equal(s->calls, 1);
    assert_int_equal(s->seen, 4242);
    assert_true(elapsed >= AEV_MSEC(45));
    free(s);
}

/* ---- ping-pong between two loops in two threads ------------------------------------------- */

typedef struct pingpong pingpong;

typedef struct pp_side {
    aev_loop *loop;
    aev_async a; /* the other side sends to it */
    stall_guard guard;
    pingpong *pp;
    int index;
    long calls;
    long bad_ball; /* first out-of-turn ball value seen, or -1 */
    int rc;
} pp_side;

struct pingpong {
    pp_side side[2];
    long ball; /* plain: owned by whichever side holds the turn */
    long rounds;
    atomic_int aborted;
};

static void pp_stop(pp_side *s)
{
    aev_async_stop(&s->a);
    aev_timer_stop(&s->guard.t);
}

static void pp_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    pp_side *s = w->data;
    pingpong *pp = s->pp;
    pp_side *other = &pp->side[1 - s->index];
    if (atomic_load(&pp->aborted)) {
        pp_stop(s);
        return;
    }
    stall_feed(&s->guard);
    /* Side 0 sees even balls 0, 2, 4, ...; side 1 odd ones. */
    long want = 2 * s->calls + s->index;
    if (pp->ball != want && s->bad_ball < 0)
        s->bad_ball = pp->ball;
    pp->ball++;
    s->calls++;
    if (s->calls == pp->rounds)
        pp_stop(s);
    /* Side 1's last return ends the game; everything else hands the turn over. */
    if (s->index == 0 || s->calls < pp->rounds)
        aev_async_send(&other->a);
}

static void pp_stall(void *ctx)
{
    pp_side *s = ctx;
    atomic_store(&s->pp->aborted, 1);
    pp_stop(s);
    /* Wake the other side so that it sees the abort too. */
    aev_async_send(&s->pp->side[1 - s->index].a);
}

static void *pp_thread(void *p)
{
    pp_side *s = p;
    s->rc = aev_run(s->loop, AEV_RUN_DEFAULT);
    return NULL;
}

static void test_ping_pong_two_loops(void **state)
{
    pingpong *pp = calloc(1, sizeof(*pp));
    assert_non_null(pp);
    pp->rounds = scaled(10000, 200);
    pp->side[0].loop = *state;
    pp->side[1].loop = aevt_loop_new();
    for (int i = 0; i < 2; i++) {
        pp_side *s = &pp->side[i];
        s->pp = pp;
        s->index = i;
        s->bad_ball = -1;
        assert_int_equal(aev_async_init(&s->a, s->loop, pp_cb), 0);
        s->a.base.data = s;
        assert_int_equal(aev_async_start(&s->a), 0);
        stall_start(&s->guard, s->loop, pp_stall, s);
        stall_watch(&s->guard, &s->a);
    }
    /* Serve before the loops run: the send is remembered until side 0's loop notes it. */
    assert_int_equal(aev_async_send(&pp->side[0].a), 0);

    pthread_t th[2];
    int64_t t0 = aevt_mono_ns();
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, pp_thread, &pp->side[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    int64_t elapsed = aevt_mono_ns() - t0;

    for (int i = 0; i < 2; i++) {
        pp_side *s = &pp->side[i];
        char why[160];
        if (s->guard.fired)
            fail_msg("ping-pong stalled: side %d, after %ld of %ld rounds: %s (lost wakeup)", i,
                     s->calls, pp->rounds, stall_describe(&s->guard, why, sizeof(why)));
        if (s->bad_ball >= 0)
            fail_msg("side %d saw ball %ld out of turn (write before send not visible)", i,
                     s->bad_ball);
        assert_int_equal(s->rc, 0);
        assert_int_equal(s->calls, pp->rounds);
    }
    assert_int_equal(pp->ball, 2 * pp->rounds);
    print_message("ping-pong: %ld round trips in %lld ms\n", pp->rounds,
                  (long long)(elapsed / 1000000));
    assert_int_equal(aev_loop_destroy(pp->side[1].loop), 0);
    free(pp);
}

/* ---- lock-step senders: no lost wakeup, and happens-before -------------------------------- */

typedef struct lockstep lockstep;

typedef struct ls_slot {
    aev_async a; /* this sender's own watcher */
    lockstep *ls;
    long value;      /* plain: written by the sender before each send */
    atomic_long ack; /* loop -> sender: the last value seen (release) */
    long seen;       /* loop only */
    long callbacks;  /* loop only */
    long bad_value;  /* loop only: first wrong value, or -1 */
    long bad_want;
    atomic_int timed_out;
} ls_slot;

struct lockstep {
    aev_loop *loop;
    stall_guard guard;
    ls_slot slot[MAX_THREADS];
    int nthreads;
    long rounds;
    int finished; /* loop only: senders done */
    int64_t deadline;
    atomic_int aborted;
};

static void ls_stop_all(lockstep *ls)
{
    for (int t = 0; t < ls->nthreads; t++)
        aev_async_stop(&ls->slot[t].a);
    aev_timer_stop(&ls->guard.t);
}

static void ls_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    ls_slot *s = w->data;
    lockstep *ls = s->ls;
    stall_feed(&ls->guard);
    s->callbacks++;
    long v = s->value;
    /* The sender waits for our ack before writing again, so every callback is for exactly the
     * next round: anything else means the write before the send was not visible. */
    if (v != s->seen + 1) {
        s->bad_value = v;
        s->bad_want = s->seen + 1;
        atomic_store(&ls->aborted, 1);
        ls_stop_all(ls);
        return;
    }
    s->seen = v;
    atomic_store_explicit(&s->ack, v, memory_order_release);
    if (v == ls->rounds) {
        aev_async_stop(&s->a);
        if (++ls->finished == ls->nthreads)
            aev_timer_stop(&ls->guard.t);
    }
}

static void ls_stall(void *ctx)
{
    lockstep *ls = ctx;
    atomic_store(&ls->aborted, 1);
    ls_stop_all(ls);
}

static void *ls_thread(void *p)
{
    ls_slot *s = p;
    lockstep *ls = s->ls;
    for (long r = 1; r <= ls->rounds; r++) {
        s->value = r;
        aev_async_send(&s->a);
        if (!wait_at_least(&s->ack, r, &ls->aborted, ls->deadline)) {
            if (!atomic_load(&ls->aborted))
                atomic_store(&s->timed_out, 1);
            break;
        }
    }
    return NULL;
}

static void run_lockstep(aev_loop *loop, int nthreads, long total_rounds)
{
    lockstep *ls = calloc(1, sizeof(*ls));
    assert_non_null(ls);
    ls->loop = loop;
    ls->nthreads = nthreads;
    ls->rounds = total_rounds / nthreads;
    ls->deadline = aevt_mono_ns() + TEST_DEADLINE;
    for (int t = 0; t < nthreads; t++) {
        ls_slot *s = &ls->slot[t];
        s->ls = ls;
        s->bad_value = -1;
        assert_int_equal(aev_async_init(&s->a, loop, ls_cb), 0);
        s->a.base.data = s;
        assert_int_equal(aev_async_start(&s->a), 0);
    }
    stall_start(&ls->guard, loop, ls_stall, ls);
    for (int t = 0; t < nthreads; t++)
        stall_watch(&ls->guard, &ls->slot[t].a);

    pthread_t th[MAX_THREADS];
    int64_t t0 = aevt_mono_ns();
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_create(&th[t], NULL, ls_thread, &ls->slot[t]), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    int64_t elapsed = aevt_mono_ns() - t0;

    char why[160];
    if (ls->guard.fired)
        fail_msg("lock-step with %d senders stalled: %s (lost wakeup)", nthreads,
                 stall_describe(&ls->guard, why, sizeof(why)));
    for (int t = 0; t < nthreads; t++) {
        ls_slot *s = &ls->slot[t];
        if (s->bad_value >= 0)
            fail_msg("sender %d: callback read value %ld, but %ld was written before the send", t,
                     s->bad_value, s->bad_want);
        if (atomic_load(&s->timed_out))
            fail_msg("sender %d timed out waiting for the loop at round %ld", t, s->seen + 1);
        assert_int_equal(s->seen, ls->rounds);
        assert_int_equal(s->callbacks, ls->rounds);
    }
    assert_int_equal(rc, 0);
    print_message("lock-step: %d senders x %ld rounds in %lld ms\n", nthreads, ls->rounds,
                  (long long)(elapsed / 1000000));
    free(ls);
}

static void test_lockstep_1_sender(void **state)
{
    run_lockstep(*state, 1, scaled(60000, 1000));
}

static void test_lockstep_2_senders(void **state)
{
    run_lockstep(*state, 2, scaled(60000, 1000));
}

static void test_lockstep_8_senders(void **state)
{
    run_lockstep(*state, 8, scaled(60000, 1000));
}

/* ---- free-running bursts on one shared watcher -------------------------------------------- */

typedef struct bursts bursts;

typedef struct burst_sender {
    bursts *b;
    atomic_long final; /* the last burst this sender completed, stored before its last send */
    atomic_int timed_out;
} burst_sender;

struct bursts {
    aev_loop *loop;
    aev_async a;
    stall_guard guard;
    burst_sender sender[MAX_THREADS];
    int nthreads;
    long nbursts, per_burst;
    atomic_long acked; /* loop -> senders: last burst whose final sends were all seen */
    atomic_long sends; /* sends made, all threads */
    long callbacks;    /* loop only */
    long cur;          /* loop only: last burst acknowledged */
    int64_t deadline;
    atomic_int aborted;
};

static void bursts_stop_all(bursts *b)
{
    aev_async_stop(&b->a);
    aev_timer_stop(&b->guard.t);
}

static void bursts_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    bursts *b = w->data;
    stall_feed(&b->guard);
    b->callbacks++;
    if (atomic_load(&b->aborted)) {
        bursts_stop_all(b);
        return;
    }
    /* Relaxed: the send after each store must make it visible to this callback. */
    for (int t = 0; t < b->nthreads; t++) {
        if (atomic_load_explicit(&b->sender[t].final, memory_order_relaxed) <= b->cur)
            return;
    }
    b->cur++;
    atomic_store_explicit(&b->acked, b->cur, memory_order_release);
    if (b->cur == b->nbursts)
        bursts_stop_all(b);
}

static void bursts_stall(void *ctx)
{
    bursts *b = ctx;
    atomic_store(&b->aborted, 1);
    bursts_stop_all(b);
}

static void *bursts_thread(void *p)
{
    burst_sender *s = p;
    bursts *b = s->b;
    for (long k = 1; k <= b->nbursts; k++) {
        for (long i = 0; i < b->per_burst; i++)
            aev_async_send(&b->a);
        atomic_store_explicit(&s->final, k, memory_order_relaxed);
        aev_async_send(&b->a);
        atomic_fetch_add_explicit(&b->sends, b->per_burst + 1, memory_order_relaxed);
        if (!wait_at_least(&b->acked, k, &b->aborted, b->deadline)) {
            if (!atomic_load(&b->aborted))
                atomic_store(&s->timed_out, 1);
            break;
        }
    }
    return NULL;
}

static void run_bursts(aev_loop *loop, int nthreads, long nbursts, long total_per_burst)
{
    bursts *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->loop = loop;
    b->nthreads = nthreads;
    b->nbursts = nbursts;
    b->per_burst = total_per_burst / nthreads;
    b->deadline = aevt_mono_ns() + TEST_DEADLINE;
    for (int t = 0; t < nthreads; t++)
        b->sender[t].b = b;
    assert_int_equal(aev_async_init(&b->a, loop, bursts_cb), 0);
    b->a.base.data = b;
    assert_int_equal(aev_async_start(&b->a), 0);
    stall_start(&b->guard, loop, bursts_stall, b);
    stall_watch(&b->guard, &b->a);

    pthread_t th[MAX_THREADS];
    int64_t t0 = aevt_mono_ns();
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_create(&th[t], NULL, bursts_thread, &b->sender[t]), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    int64_t elapsed = aevt_mono_ns() - t0;

    long sends = atomic_load(&b->sends);
    char why[160];
    if (b->guard.fired)
        fail_msg("bursts with %d senders stalled after burst %ld: %s (lost wakeup, or the last "
                 "send's writes were not visible)",
                 nthreads, b->cur, stall_describe(&b->guard, why, sizeof(why)));
    for (int t = 0; t < nthreads; t++) {
        if (atomic_load(&b->sender[t].timed_out))
            fail_msg("sender %d timed out waiting for burst %ld to be acknowledged", t, b->cur + 1);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(b->cur, nbursts);
    assert_int_equal(sends, nbursts * nthreads * (b->per_burst + 1));
    /* Every burst ends with a callback; sends coalesce, they are never multiplied. */
    assert_true(b->callbacks >= nbursts);
    assert_true(b->callbacks <= sends);
    print_message("bursts: %d senders, %ld sends, %ld callbacks in %lld ms\n", nthreads, sends,
                  b->callbacks, (long long)(elapsed / 1000000));
    free(b);
}

static void test_bursts_1_sender(void **state)
{
    run_bursts(*state, 1, scaled(2000, 100), 500);
}

static void test_bursts_2_senders(void **state)
{
    run_bursts(*state, 2, scaled(2000, 100), 500);
}

static void test_bursts_8_senders(void **state)
{
    run_bursts(*state, 8, scaled(2000, 100), 500);
}

/* ---- many watchers, one per thread, sent to concurrently ---------------------------------- */

typedef struct many many;

typedef struct mw_slot {
    aev_async a;
    many *m;
    atomic_long value; /* the sender's sequence number, stored before each send */
    long last_seen;    /* loop only */
    long calls;        /* loop only */
    bool went_back;    /* loop only: a callback saw an older value than the previous one */
} mw_slot;

struct many {
    aev_loop *loop;
    stall_guard guard;
    mw_slot slot[MAX_THREADS];
    long per_thread;
    int finished;
};

static void many_stop_all(many *m)
{
    for (int t = 0; t < MAX_THREADS; t++)
        aev_async_stop(&m->slot[t].a);
    aev_timer_stop(&m->guard.t);
}

static void many_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    mw_slot *s = w->data;
    many *m = s->m;
    stall_feed(&m->guard);
    s->calls++;
    long v = atomic_load_explicit(&s->value, memory_order_relaxed);
    if (v < s->last_seen)
        s->went_back = true;
    s->last_seen = v;
    if (v == m->per_thread) {
        aev_async_stop(&s->a);
        if (++m->finished == MAX_THREADS)
            aev_timer_stop(&m->guard.t);
    }
}

static void many_stall(void *ctx)
{
    many_stop_all(ctx);
}

static void *many_thread(void *p)
{
    mw_slot *s = p;
    for (long i = 1; i <= s->m->per_thread; i++) {
        atomic_store_explicit(&s->value, i, memory_order_relaxed);
        aev_async_send(&s->a);
        if ((i & 255) == 0)
            sched_yield(); /* interleave with the other senders and the loop */
    }
    return NULL;
}

static void test_many_watchers_many_threads(void **state)
{
    aev_loop *loop = *state;
    many *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    m->loop = loop;
    m->per_thread = scaled(100000, 5000);
    for (int t = 0; t < MAX_THREADS; t++) {
        mw_slot *s = &m->slot[t];
        s->m = m;
        assert_int_equal(aev_async_init(&s->a, loop, many_cb), 0);
        s->a.base.data = s;
        assert_int_equal(aev_async_start(&s->a), 0);
    }
    stall_start(&m->guard, loop, many_stall, m);
    for (int t = 0; t < MAX_THREADS; t++)
        stall_watch(&m->guard, &m->slot[t].a);

    pthread_t th[MAX_THREADS];
    int64_t t0 = aevt_mono_ns();
    for (int t = 0; t < MAX_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, many_thread, &m->slot[t]), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    for (int t = 0; t < MAX_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    int64_t elapsed = aevt_mono_ns() - t0;

    long total = 0;
    for (int t = 0; t < MAX_THREADS; t++) {
        mw_slot *s = &m->slot[t];
        char why[160];
        if (m->guard.fired && s->last_seen != m->per_thread)
            fail_msg("watcher %d: last value seen %ld, last sent %ld; %s (lost wakeup)", t,
                     s->last_seen, m->per_thread, stall_describe(&m->guard, why, sizeof(why)));
        assert_true(s->calls >= 1);
        assert_int_equal(s->last_seen, m->per_thread);
        assert_false(s->went_back);
        total += s->calls;
    }
    assert_int_equal(m->guard.fired, 0);
    assert_int_equal(rc, 0);
    assert_true(total <= MAX_THREADS * m->per_thread);
    print_message("many watchers: %d x %ld sends, %ld callbacks in %lld ms\n", MAX_THREADS,
                  m->per_thread, total, (long long)(elapsed / 1000000));
    free(m);
}

/* ---- sends racing with the loop stopping and restarting the watcher ----------------------- */

typedef struct toggle {
    aev_async a;
    aev_prepare prep;
    aev_check check;
    stall_guard guard;
    atomic_long seq; /* the sender's sequence number, stored before each send */
    atomic_long ack; /* loop -> sender: the last sequence number seen (release) */
    atomic_int aborted;
    atomic_int timed_out;
    int64_t deadline;
    long n;
    long calls;     /* loop only */
    long toggles;   /* loop only */
    long last_seen; /* loop only */
} toggle;

static void toggle_stop_all(toggle *s)
{
    aev_async_stop(&s->a);
    aev_prepare_stop(&s->prep);
    aev_check_stop(&s->check);
    aev_timer_stop(&s->guard.t);
}

static void toggle_async_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    toggle *s = w->data;
    stall_feed(&s->guard);
    s->calls++;
    s->last_seen = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->ack, s->last_seen, memory_order_release);
    if (s->last_seen == s->n)
        toggle_stop_all(s);
}

/* Stops and restarts the async watcher right before and right after every poll, unless it is
 * pending (stopping it then would rightly discard the event). A send that lands while it is
 * stopped must be delivered after the restart. */
static void toggle_hook_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    toggle *s = w->data;
    if (!aev_is_active(&s->a.base) || aev_is_pending(&s->a.base))
        return;
    assert_int_equal(aev_async_stop(&s->a), 0);
    sched_yield(); /* widen the window in which the watcher is stopped */
    assert_int_equal(aev_async_start(&s->a), 0);
    s->toggles++;
}

static void toggle_stall(void *ctx)
{
    toggle *s = ctx;
    atomic_store(&s->aborted, 1);
    toggle_stop_all(s);
}

/* One send at a time, each waited for: a send that lands while the watcher is stopped and is
 * then dropped stalls the test instead of being covered by the next send. */
static void *toggle_thread(void *p)
{
    toggle *s = p;
    for (long i = 1; i <= s->n; i++) {
        atomic_store_explicit(&s->seq, i, memory_order_relaxed);
        aev_async_send(&s->a);
        if (!wait_at_least(&s->ack, i, &s->aborted, s->deadline)) {
            if (!atomic_load(&s->aborted))
                atomic_store(&s->timed_out, 1);
            break;
        }
    }
    return NULL;
}

static void test_sends_race_with_stop_start(void **state)
{
    aev_loop *loop = *state;
    toggle *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->n = scaled(30000, 2000);
    s->deadline = aevt_mono_ns() + TEST_DEADLINE;
    assert_int_equal(aev_async_init(&s->a, loop, toggle_async_cb), 0);
    assert_int_equal(aev_prepare_init(&s->prep, loop, toggle_hook_cb), 0);
    assert_int_equal(aev_check_init(&s->check, loop, toggle_hook_cb), 0);
    s->a.base.data = s;
    s->prep.base.data = s;
    s->check.base.data = s;
    assert_int_equal(aev_async_start(&s->a), 0);
    assert_int_equal(aev_prepare_start(&s->prep), 0);
    assert_int_equal(aev_check_start(&s->check), 0);
    stall_start(&s->guard, loop, toggle_stall, s);
    stall_watch(&s->guard, &s->a);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, toggle_thread, s), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);

    char why[160];
    if (s->guard.fired)
        fail_msg("last value seen %ld of %ld; %s: a send to a stopped and restarted watcher "
                 "was lost",
                 s->last_seen, s->n, stall_describe(&s->guard, why, sizeof(why)));
    if (atomic_load(&s->timed_out))
        fail_msg("the sender timed out waiting for send %ld to be seen", s->last_seen + 1);
    assert_int_equal(rc, 0);
    assert_int_equal(s->last_seen, s->n);
    assert_int_equal(s->calls, s->n);
    assert_true(s->toggles >= 1);
    print_message("stop/start race: %ld sends, %ld callbacks, %ld toggles\n", s->n, s->calls,
                  s->toggles);
    free(s);
}

int main(void)
{
    /* Below CTest's 120 s TIMEOUT, so that a hang ends with SIGALRM here. */
    aevt_watchdog(110);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_thread_send_wakes_blocked_loop, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_ping_pong_two_loops, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_lockstep_1_sender, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_lockstep_2_senders, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_lockstep_8_senders, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_bursts_1_sender, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_bursts_2_senders, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_bursts_8_senders, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_many_watchers_many_threads, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_sends_race_with_stop_start, aevt_setup, aevt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
