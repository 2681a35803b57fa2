/*
 * Posters: argument checks, capacity rounding and the full-ring error, exactly-once FIFO
 * execution on the loop thread, posts made from posted functions (also into a full ring), the
 * count of dropped posts returned by destroy, destroy from a posted function, the reference the
 * poster holds on aev_run(), producers in several threads, and posts from signal handlers.
 *
 * Data handed from a producer to a posted function is deliberately a plain (non-atomic)
 * variable: only aev_post() -> the function orders the producer's write before the function's
 * read, so ThreadSanitizer reports a race if the library lacks that guarantee, and the value
 * checks fail on weakly ordered hardware.
 *
 * Posted functions never use cmocka assertions: a failed assertion would jump out of aev_run()
 * while producer threads may still post. They count what is wrong and the test checks the
 * counts once every thread has been joined.
 *
 * AEVT_SCALE (default 1, or 0.1 in a ThreadSanitizer build) scales the multi-thread counts.
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

#ifdef AEVT_TSAN
#define DEFAULT_SCALE 0.1
#define STALL AEV_SEC(8)
#define TEST_DEADLINE AEV_SEC(20)
#else
#define DEFAULT_SCALE 1.0
#define STALL AEV_SEC(4)
#define TEST_DEADLINE AEV_SEC(12)
#endif

#define MAX_THREADS 8
#define POST_MAX (UINT32_C(1) << 24)

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

/* Counts its calls; posted where a function must never run. */
static void never_fn(void *arg)
{
    int *calls = arg;
    (*calls)++;
}

/* A timer that ends a single-thread test which would otherwise block forever; it is unreferenced
 * so that it does not itself keep aev_run() going. */
typedef struct guard {
    aev_timer t;
    int fired;
} guard;

static void guard_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    guard *g = (guard *)w;
    g->fired = 1;
    aev_break(aev_watcher_loop(w), AEV_BREAK_ALL);
}

static void guard_start(guard *g, aev_loop *loop, aev_time_t after)
{
    g->fired = 0;
    assert_int_equal(aev_timer_init(&g->t, loop, guard_cb, after, 0), 0);
    assert_int_equal(aev_timer_start(&g->t), 0);
    aev_unref(loop);
}

static void guard_stop(guard *g, aev_loop *loop)
{
    /* Give back the reference taken away, so that stopping balances the loop's count. */
    aev_ref(loop);
    assert_int_equal(aev_timer_stop(&g->t), 0);
}

/* ---- single-thread fixture ----------------------------------------------------------------- */

#define ST_MAX 512

typedef struct st_ctx st_ctx;

typedef struct st_item {
    st_ctx *ctx;
    int id;
    int runs;
} st_item;

/*
 * Items are identified by their index. In the repost tests item i posts item i + width from
 * inside its function, up to `gens` generations, so that the claim order, and therefore the
 * expected run order, is simply 0, 1, 2, ...
 */
struct st_ctx {
    aev_poster *p;
    pthread_t loop_thread;
    int width;
    int gens;
    int order[ST_MAX]; /* ids in the order they ran */
    int nran;
    int wrong_thread;
    int repost_failed;
    int repost_rc; /* the last failing aev_post() result from inside a function */
    st_item items[ST_MAX];
};

static st_ctx *st_new(aev_loop *loop, uint32_t capacity, int width, int gens)
{
    st_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    assert_true(width * gens <= ST_MAX);
    c->loop_thread = pthread_self();
    c->width = width;
    c->gens = gens;
    for (int i = 0; i < ST_MAX; i++) {
        c->items[i].ctx = c;
        c->items[i].id = i;
    }
    assert_int_equal(aev_poster_new(&c->p, loop, capacity), 0);
    assert_non_null(c->p);
    return c;
}

static void st_record(void *arg)
{
    st_item *it = arg;
    st_ctx *c = it->ctx;
    it->runs++;
    if (!pthread_equal(pthread_self(), c->loop_thread))
        c->wrong_thread++;
    if (c->nran < ST_MAX)
        c->order[c->nran] = it->id;
    c->nran++;
}

static void st_repost(void *arg)
{
    st_record(arg);
    st_item *it = arg;
    st_ctx *c = it->ctx;
    int child = it->id + c->width;
    if (child >= c->width * c->gens)
        return;
    int rc = aev_post(c->p, st_repost, &c->items[child]);
    if (rc != 0) {
        c->repost_failed++;
        c->repost_rc = rc;
    }
}

/* Items 0..n-1 ran exactly once each, in id order, on the loop thread, and no other item ran. */
static void st_check_ran_in_order(const st_ctx *c, int n)
{
    assert_int_equal(c->wrong_thread, 0);
    assert_int_equal(c->repost_failed, 0);
    assert_int_equal(c->nran, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(c->order[i], i);
    for (int i = 0; i < ST_MAX; i++)
        assert_int_equal(c->items[i].runs, i < n ? 1 : 0);
}

/* Runs non-blocking iterations until n functions ran, at most max_iter of them; then one more
 * iteration, in which nothing may run. */
static void st_run_until(aev_loop *loop, st_ctx *c, int n, int max_iter)
{
    for (int i = 0; i < max_iter && c->nran < n; i++)
        assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    int before = c->nran;
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(c->nran, before);
}

/* ---- argument checks ----------------------------------------------------------------------- */

static void test_new_rejects_bad_arguments(void **state)
{
    aev_loop *loop = *state;
    aev_poster *p = NULL;
    assert_int_equal(aev_poster_new(NULL, loop, 4), -EINVAL);
    assert_int_equal(aev_poster_new(&p, NULL, 4), -EINVAL);
    assert_int_equal(aev_poster_new(&p, loop, 0), -EINVAL);
    assert_int_equal(aev_poster_new(&p, loop, POST_MAX + 1), -EINVAL);
    assert_int_equal(aev_poster_new(&p, loop, UINT32_MAX), -EINVAL);
    /* No failed call left a watcher behind that would keep the loop alive. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

static void test_new_accepts_capacity_bounds(void **state)
{
    aev_loop *loop = *state;
    aev_poster *p = NULL;
    assert_int_equal(aev_poster_new(&p, loop, 1), 0);
    assert_non_null(p);
    assert_int_equal(aev_poster_destroy(p), 0);
    /* The largest capacity: 2^24 slots of 24 bytes, 384 MiB, freed right away. */
    p = NULL;
    assert_int_equal(aev_poster_new(&p, loop, POST_MAX), 0);
    assert_non_null(p);
    assert_int_equal(aev_post(p, never_fn, &(int){0}), 0);
    assert_int_equal(aev_poster_destroy(p), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

static void test_post_rejects_bad_arguments(void **state)
{
    aev_loop *loop = *state;
    int calls = 0;
    aev_poster *p = NULL;
    assert_int_equal(aev_poster_new(&p, loop, 4), 0);
    assert_int_equal(aev_post(NULL, never_fn, &calls), -EINVAL);
    assert_int_equal(aev_post(p, NULL, &calls), -EINVAL);
    assert_int_equal(aev_post(NULL, NULL, NULL), -EINVAL);
    /* Nothing was queued: nothing runs and nothing is dropped. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(calls, 0);
    assert_int_equal(aev_poster_destroy(p), 0);
}

static void test_destroy_null_is_einval(void **state)
{
    (void)state;
    assert_int_equal(aev_poster_destroy(NULL), -EINVAL);
}

/* ---- capacity ------------------------------------------------------------------------------ */

/* A poster of this capacity takes exactly `slots` posts before -EAGAIN, the refused post is not
 * queued, and after a drain it takes `slots` more (the ring wraps around). */
static void check_capacity(aev_loop *loop, uint32_t capacity, int slots)
{
    st_ctx *c = st_new(loop, capacity, ST_MAX, 1);
    int never = 0;
    int i;
    for (i = 0; i < slots; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    assert_int_equal(aev_post(c->p, never_fn, &never), -EAGAIN);
    assert_int_equal(aev_post(c->p, never_fn, &never), -EAGAIN);
    assert_int_equal(c->nran, 0);

    st_run_until(loop, c, slots, 4);
    st_check_ran_in_order(c, slots);
    assert_int_equal(never, 0);

    for (; i < 2 * slots; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    assert_int_equal(aev_post(c->p, never_fn, &never), -EAGAIN);
    /* The refused posts are not among the dropped ones. */
    assert_int_equal(aev_poster_destroy(c->p), slots);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    st_check_ran_in_order(c, slots);
    assert_int_equal(never, 0);
    free(c);
}

static void test_capacity_rounds_up_to_power_of_two(void **state)
{
    static const struct {
        uint32_t capacity;
        int slots;
    } cases[] = {{2, 2}, {3, 4}, {4, 4}, {5, 8}, {100, 128}, {128, 128}, {129, 256}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_capacity(*state, cases[i].capacity, cases[i].slots);
}

static void test_capacity_one_holds_one_post(void **state)
{
    check_capacity(*state, 1, 1);
}

/* ---- single thread ------------------------------------------------------------------------- */

static void test_posts_run_once_in_order_next_iteration(void **state)
{
    aev_loop *loop = *state;
    st_ctx *c = st_new(loop, 16, 10, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    /* Posting never runs anything by itself. */
    assert_int_equal(c->nran, 0);

    uint64_t it0 = aev_iteration(loop);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_iteration(loop), it0 + 1);
    st_check_ran_in_order(c, 10);

    /* Nothing runs twice. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    st_check_ran_in_order(c, 10);
    assert_int_equal(aev_poster_destroy(c->p), 0);
    free(c);
}

/* A post made from inside a posted function runs too, once, after the posts claimed before it. */
static void test_post_from_posted_function_runs_once(void **state)
{
    aev_loop *loop = *state;
    st_ctx *c = st_new(loop, 16, 5, 3);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aev_post(c->p, st_repost, &c->items[i]), 0);
    st_run_until(loop, c, 15, 10);
    st_check_ran_in_order(c, 15);
    assert_int_equal(aev_poster_destroy(c->p), 0);
    free(c);
}

/* The ring is full when the drain starts, each function posts one more, for several rounds: the
 * per-drain limit must postpone, never lose, and the order must hold across the wrap. */
static void check_full_ring_reposting(aev_loop *loop, uint32_t capacity, int gens)
{
    int width = (int)capacity;
    st_ctx *c = st_new(loop, capacity, width, gens);
    int never = 0;
    for (int i = 0; i < width; i++)
        assert_int_equal(aev_post(c->p, st_repost, &c->items[i]), 0);
    assert_int_equal(aev_post(c->p, never_fn, &never), -EAGAIN);
    st_run_until(loop, c, width * gens, 10 * gens);
    if (c->repost_failed)
        fail_msg("%d posts from posted functions failed (last: %d)", c->repost_failed,
                 c->repost_rc);
    st_check_ran_in_order(c, width * gens);
    assert_int_equal(never, 0);
    assert_int_equal(aev_poster_destroy(c->p), 0);
    free(c);
}

static void test_full_ring_reposting_loses_nothing(void **state)
{
    check_full_ring_reposting(*state, 2, 8);
    check_full_ring_reposting(*state, 8, 6);
    check_full_ring_reposting(*state, 64, 4);
}

/*
 * A function that keeps posting itself must not starve the rest of the loop (post.c: at most one
 * ring's worth per drain): a timer that expires while the chain goes on gets to run before the
 * chain ends.
 */
typedef struct chain {
    aev_poster *p;
    aev_timer t;
    long runs;
    long limit;
    long runs_at_timer;
    int timer_fired;
    int post_failed;
} chain;

static void chain_timer_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    chain *ch = w->data;
    ch->timer_fired++;
    ch->runs_at_timer = ch->runs;
}

static void chain_fn(void *arg)
{
    chain *ch = arg;
    ch->runs++;
    if (ch->runs == 1)
        aev_timer_start(&ch->t);
    if (ch->runs == ch->limit) {
        aev_break(aev_watcher_loop(&ch->t.base), AEV_BREAK_ONE);
        return;
    }
    if (aev_post(ch->p, chain_fn, ch) != 0)
        ch->post_failed++;
}

static void test_self_reposting_function_does_not_starve_loop(void **state)
{
    aev_loop *loop = *state;
    chain ch = {.limit = 200000};
    assert_int_equal(aev_poster_new(&ch.p, loop, 16), 0);
    assert_int_equal(aev_timer_init(&ch.t, loop, chain_timer_cb, 0, 0), 0);
    ch.t.base.data = &ch;
    guard g;
    guard_start(&g, loop, AEV_SEC(10));
    assert_int_equal(aev_post(ch.p, chain_fn, &ch), 0);

    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 1);
    aev_timer_stop(&ch.t);
    guard_stop(&g, loop);
    assert_false(g.fired);
    assert_int_equal(ch.post_failed, 0);
    assert_int_equal(ch.runs, ch.limit);
    assert_int_equal(aev_poster_destroy(ch.p), 0);
    if (!ch.timer_fired)
        fail_msg("a timer due since the chain's first function did not run in %ld calls", ch.runs);
    assert_int_equal(ch.timer_fired, 1);
    assert_true(ch.runs_at_timer < ch.limit);
}

/* ---- destroy ------------------------------------------------------------------------------- */

static void test_destroy_returns_unrun_count(void **state)
{
    aev_loop *loop = *state;
    st_ctx *c = st_new(loop, 8, 8, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    assert_int_equal(aev_poster_destroy(c->p), 5);
    /* Dropped posts never run, and the poster left nothing pending behind (see teardown). */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    st_check_ran_in_order(c, 0);
    free(c);

    /* Only the posts not yet run are counted. */
    c = st_new(loop, 8, 8, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    st_check_ran_in_order(c, 3);
    for (int i = 3; i < 5; i++)
        assert_int_equal(aev_post(c->p, st_record, &c->items[i]), 0);
    assert_int_equal(aev_poster_destroy(c->p), 2);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    st_check_ran_in_order(c, 3);
    free(c);
}

typedef struct self_destroy {
    aev_poster *p;
    aev_poster *other;
    int calls;
    int rc_self;
    int rc_other;
} self_destroy;

static void self_destroy_fn(void *arg)
{
    self_destroy *s = arg;
    s->calls++;
    s->rc_self = aev_poster_destroy(s->p);
    s->rc_other = aev_poster_destroy(s->other);
}

static void test_destroy_from_own_function_is_ebusy(void **state)
{
    aev_loop *loop = *state;
    self_destroy s = {.rc_self = 1, .rc_other = -1};
    int never = 0;
    assert_int_equal(aev_poster_new(&s.p, loop, 4), 0);
    assert_int_equal(aev_poster_new(&s.other, loop, 4), 0);
    assert_int_equal(aev_post(s.p, self_destroy_fn, &s), 0);
    /* Another poster is not protected: destroying it from there drops its posts not yet run. */
    assert_int_equal(aev_post(s.other, never_fn, &never), 0);
    assert_int_equal(aev_post(s.other, never_fn, &never), 0);
    /* One iteration runs self_destroy_fn. The other poster's functions may have run before it
     * in that iteration: those are not dropped, and none may run after the destroy. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.rc_self, -EBUSY);
    assert_int_equal(s.rc_other, 2 - never);

    /* The refused destroy left the poster intact. */
    st_ctx *c = st_new(loop, 4, 4, 1);
    assert_int_equal(aev_post(s.p, st_record, &c->items[0]), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    st_check_ran_in_order(c, 1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(aev_poster_destroy(s.p), 0);
    assert_int_equal(aev_poster_destroy(c->p), 0);
    free(c);
}

/* A posted function that runs the loop again lets the inner run drain the same poster; when the
 * inner function returns, the outer one is still running, so destroy must still be refused. */
typedef struct nested_destroy {
    aev_loop *loop;
    aev_poster *p;
    int inner_calls;
    int rc_after_nested;
} nested_destroy;

static void nested_inner_fn(void *arg)
{
    nested_destroy *n = arg;
    n->inner_calls++;
}

static void nested_outer_fn(void *arg)
{
    nested_destroy *n = arg;
    assert_int_equal(aev_post(n->p, nested_inner_fn, n), 0);
    aev_run(n->loop, AEV_RUN_NOWAIT);
    n->rc_after_nested = aev_poster_destroy(n->p);
}

static void test_destroy_after_nested_drain_is_ebusy(void **state)
{
    aev_loop *loop = *state;
    nested_destroy n = {.loop = loop, .rc_after_nested = 1};
    assert_int_equal(aev_poster_new(&n.p, loop, 4), 0);
    assert_int_equal(aev_post(n.p, nested_outer_fn, &n), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(n.inner_calls, 1);
    assert_int_equal(n.rc_after_nested, -EBUSY);
    assert_int_equal(aev_poster_destroy(n.p), 0);
}

/* ---- the poster's reference on the loop ---------------------------------------------------- */

typedef struct alive {
    aev_poster *p;
    aev_timer destroy_timer; /* unreferenced: destroys the poster after its posts ran */
    int noted;
    int noted_at_destroy;
    int destroy_rc;
    int destroy_calls;
} alive;

static void alive_note_fn(void *arg)
{
    alive *a = arg;
    if (a->noted++ > 0)
        return;
    /* From now on only the poster holds a reference on the loop. */
    aev_timer_start(&a->destroy_timer);
    aev_unref(aev_watcher_loop(&a->destroy_timer.base));
}

static void alive_destroy_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    alive *a = w->data;
    a->destroy_calls++;
    a->noted_at_destroy = a->noted;
    a->destroy_rc = aev_poster_destroy(a->p);
}

/*
 * Once its posts have run, the poster alone keeps aev_run() going: the unreferenced timer that
 * the posted function starts must still fire, and destroying the poster ends aev_run().
 */
static void test_poster_keeps_run_alive(void **state)
{
    aev_loop *loop = *state;
    alive a = {.destroy_rc = 1};
    assert_int_equal(aev_poster_new(&a.p, loop, 4), 0);
    assert_int_equal(aev_timer_init(&a.destroy_timer, loop, alive_destroy_cb, AEV_MSEC(30), 0), 0);
    a.destroy_timer.base.data = &a;
    guard g;
    guard_start(&g, loop, AEV_SEC(10));
    assert_int_equal(aev_post(a.p, alive_note_fn, &a), 0);
    assert_int_equal(aev_post(a.p, alive_note_fn, &a), 0);

    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    if (a.noted) {
        /* Give back the reference taken away for the destroy timer, then make sure it is
         * stopped (it is, if it fired). */
        aev_ref(loop);
        aev_timer_stop(&a.destroy_timer);
    }
    guard_stop(&g, loop);
    assert_false(g.fired);
    assert_int_equal(a.noted, 2);
    if (a.destroy_calls == 0)
        fail_msg("aev_run() returned (%d) while the poster was still active", rc);
    assert_int_equal(rc, 0);
    assert_int_equal(a.destroy_calls, 1);
    assert_int_equal(a.noted_at_destroy, 2);
    assert_int_equal(a.destroy_rc, 0);
}

static void test_unref_offsets_poster(void **state)
{
    aev_loop *loop = *state;
    aev_poster *p = NULL;
    assert_int_equal(aev_poster_new(&p, loop, 4), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    aev_unref(loop);
    /* Nothing else is referenced: a blocking run returns at once instead of waiting. */
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    aev_ref(loop);
    assert_int_equal(aev_poster_destroy(p), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* ---- producers in other threads ------------------------------------------------------------ */

typedef struct mt_ctx mt_ctx;

typedef struct mt_item {
    mt_ctx *ctx;
    int thread;
    long seq;
    long payload;
} mt_item;

typedef struct mt_producer {
    mt_ctx *ctx;
    int index;
    pthread_t th;
} mt_producer;

struct mt_ctx {
    aev_loop *loop;
    aev_poster *p;
    pthread_t loop_thread;
    int nthreads;
    long per_thread;
    long want;
    mt_item *items; /* nthreads * per_thread; item i of thread t is written only by t */
    mt_producer producers[MAX_THREADS];
    atomic_int go;
    atomic_int abort;
    atomic_int producer_rc;   /* the first error other than -EAGAIN a producer saw */
    atomic_int producer_late; /* producers that gave up at the deadline */
    atomic_long eagain;
    int64_t deadline;

    /* Loop thread only. */
    unsigned char *runs;
    long last_seq[MAX_THREADS];
    long total;
    long bad_item, bad_payload, bad_order, dup, wrong_thread, extra;
    aev_timer watch;
    long watch_total;
    int64_t last_progress;
    int stalled, timed_out;
};

static long mt_payload(int thread, long seq)
{
    return seq * 7919 + thread * 104729 + 13;
}

static void mt_fn(void *arg)
{
    mt_item *it = arg;
    mt_ctx *c = it->ctx;
    if (!pthread_equal(pthread_self(), c->loop_thread))
        c->wrong_thread++;
    ptrdiff_t idx = it - c->items;
    if (idx < 0 || idx >= (ptrdiff_t)c->nthreads * c->per_thread) {
        c->bad_item++;
        return;
    }
    int thread = (int)(idx / c->per_thread);
    long seq = idx % c->per_thread;
    if (it->thread != thread || it->seq != seq || it->payload != mt_payload(thread, seq))
        c->bad_payload++;
    if (c->runs[idx]++)
        c->dup++;
    /* FIFO per producer with nothing lost: exactly the next sequence number. */
    if (seq != c->last_seq[thread] + 1)
        c->bad_order++;
    c->last_seq[thread] = seq;
    c->total++;
    if (c->total > c->want)
        c->extra++;
    if (c->total == c->want)
        aev_break(c->loop, AEV_BREAK_ONE);
}

static void *mt_producer_main(void *arg)
{
    mt_producer *pr = arg;
    mt_ctx *c = pr->ctx;
    while (!atomic_load_explicit(&c->go, memory_order_acquire))
        sched_yield();
    for (long seq = 0; seq < c->per_thread; seq++) {
        mt_item *it = &c->items[(long)pr->index * c->per_thread + seq];
        it->ctx = c;
        it->thread = pr->index;
        it->seq = seq;
        it->payload = mt_payload(pr->index, seq);
        for (unsigned tries = 1;; tries++) {
            int rc = aev_post(c->p, mt_fn, it);
            if (rc == 0)
                break;
            if (rc != -EAGAIN) {
                int zero = 0;
                atomic_compare_exchange_strong(&c->producer_rc, &zero, rc);
                return NULL;
            }
            atomic_fetch_add_explicit(&c->eagain, 1, memory_order_relaxed);
            if (atomic_load_explicit(&c->abort, memory_order_relaxed))
                return NULL;
            if ((tries & 255) == 0 && aevt_mono_ns() > c->deadline) {
                atomic_fetch_add(&c->producer_late, 1);
                return NULL;
            }
            sched_yield();
        }
    }
    return NULL;
}

/* Every 50 ms: ends the run if nothing ran for STALL or the test took too long. */
static void mt_watch_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    mt_ctx *c = w->data;
    int64_t now = aevt_mono_ns();
    if (c->total != c->watch_total) {
        c->watch_total = c->total;
        c->last_progress = now;
    } else if (now - c->last_progress > STALL) {
        c->stalled = 1;
    }
    if (now > c->deadline)
        c->timed_out = 1;
    if (c->stalled || c->timed_out) {
        atomic_store(&c->abort, 1);
        aev_break(c->loop, AEV_BREAK_ONE);
    }
}

static void mt_run(aev_loop *loop, int nthreads, long per_thread, uint32_t capacity)
{
    mt_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->loop = loop;
    c->loop_thread = pthread_self();
    c->nthreads = nthreads;
    c->per_thread = per_thread;
    c->want = nthreads * per_thread;
    c->items = calloc((size_t)c->want, sizeof *c->items);
    c->runs = calloc((size_t)c->want, 1);
    assert_non_null(c->items);
    assert_non_null(c->runs);
    for (int t = 0; t < MAX_THREADS; t++)
        c->last_seq[t] = -1;
    c->deadline = aevt_mono_ns() + TEST_DEADLINE;
    c->last_progress = aevt_mono_ns();
    assert_int_equal(aev_poster_new(&c->p, loop, capacity), 0);
    assert_int_equal(aev_timer_init(&c->watch, loop, mt_watch_cb, AEV_MSEC(50), AEV_MSEC(50)), 0);
    c->watch.base.data = c;
    assert_int_equal(aev_timer_start(&c->watch), 0);

    for (int t = 0; t < nthreads; t++) {
        c->producers[t].ctx = c;
        c->producers[t].index = t;
        assert_int_equal(
            pthread_create(&c->producers[t].th, NULL, mt_producer_main, &c->producers[t]), 0);
    }
    atomic_store_explicit(&c->go, 1, memory_order_release);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    atomic_store(&c->abort, 1);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_join(c->producers[t].th, NULL), 0);
    /* No producer is left: anything still queued (a duplicate, say) runs now and is counted. */
    for (int i = 0; i < 3; i++)
        aev_run(loop, AEV_RUN_NOWAIT);
    assert_int_equal(aev_timer_stop(&c->watch), 0);
    int left = aev_poster_destroy(c->p);

    print_message("%d producers x %ld posts, capacity %u: %ld run, %ld EAGAIN\n", nthreads,
                  per_thread, capacity, c->total, atomic_load(&c->eagain));
    if (c->stalled || c->timed_out)
        fail_msg("%s: %ld of %ld posts ran (%d left at destroy, %ld duplicates, %ld out of "
                 "order)",
                 c->stalled ? "no post ran for the stall limit" : "deadline passed", c->total,
                 c->want, left, c->dup, c->bad_order);
    assert_int_equal(atomic_load(&c->producer_rc), 0);
    assert_int_equal(atomic_load(&c->producer_late), 0);
    assert_int_equal(rc, 1);
    assert_int_equal(c->wrong_thread, 0);
    assert_int_equal(c->bad_item, 0);
    assert_int_equal(c->bad_payload, 0);
    assert_int_equal(c->dup, 0);
    assert_int_equal(c->extra, 0);
    assert_int_equal(c->bad_order, 0);
    assert_int_equal(c->total, c->want);
    for (long i = 0; i < c->want; i++)
        assert_int_equal(c->runs[i], 1);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(c->last_seq[t], per_thread - 1);
    assert_int_equal(left, 0);
    free(c->runs);
    free(c->items);
    free(c);
}

static void test_threads_1_producer(void **state)
{
    mt_run(*state, 1, scaled(100000, 1000), 64);
}

static void test_threads_2_producers(void **state)
{
    mt_run(*state, 2, scaled(50000, 500), 64);
}

static void test_threads_4_producers(void **state)
{
    mt_run(*state, 4, scaled(25000, 250), 64);
}

static void test_threads_8_producers(void **state)
{
    mt_run(*state, 8, scaled(12500, 125), 64);
}

static void test_capacity_one_four_producers(void **state)
{
    mt_run(*state, 4, scaled(10000, 250), 1);
}

/* ---- posts from signal handlers ------------------------------------------------------------ */

#define SIG_POSTS 64

/* Shared with the handler: lock-free atomics only, besides the items each handler run fills
 * before posting them. */
static struct {
    _Atomic(aev_poster *) p;
    atomic_int next; /* index of the item the next handler run posts */
    atomic_int handled;
    atomic_int post_failed;
    atomic_int post_rc;    /* the last failing result */
    atomic_int errno_lost; /* handler runs in which aev_post() changed errno */
} sig;

typedef struct sig_item {
    int index;
    long payload; /* plain: written by the handler before it posts */
} sig_item;

static sig_item sig_items[SIG_POSTS];

/* Loop thread only. */
static struct {
    aev_loop *loop;
    pthread_t loop_thread;
    int want;
    int ran;
    int bad_order;
    int bad_payload;
    int wrong_thread;
} sig_seen;

static void sig_fn(void *arg)
{
    sig_item *it = arg;
    if (!pthread_equal(pthread_self(), sig_seen.loop_thread))
        sig_seen.wrong_thread++;
    if (it->index != sig_seen.ran)
        sig_seen.bad_order++;
    if (it->payload != 1000L + it->index)
        sig_seen.bad_payload++;
    if (++sig_seen.ran == sig_seen.want)
        aev_break(sig_seen.loop, AEV_BREAK_ONE);
}

static void sig_handler(int signo)
{
    (void)signo;
    int saved = errno;
    int i = atomic_fetch_add(&sig.next, 1);
    if (i < SIG_POSTS) {
        sig_items[i].index = i;
        sig_items[i].payload = 1000L + i;
        /* A value no system call on the path sets, so that any change is visible. */
        errno = ENOTRECOVERABLE;
        int rc = aev_post(atomic_load(&sig.p), sig_fn, &sig_items[i]);
        if (errno != ENOTRECOVERABLE)
            atomic_fetch_add(&sig.errno_lost, 1);
        if (rc != 0) {
            atomic_fetch_add(&sig.post_failed, 1);
            atomic_store(&sig.post_rc, rc);
        }
    }
    atomic_fetch_add(&sig.handled, 1);
    errno = saved;
}

static void sig_setup(aev_loop *loop, int want, struct sigaction *old)
{
    sig_seen.loop = loop;
    sig_seen.loop_thread = pthread_self();
    sig_seen.want = want;
    sig_seen.ran = sig_seen.bad_order = sig_seen.bad_payload = sig_seen.wrong_thread = 0;
    atomic_store(&sig.next, 0);
    atomic_store(&sig.handled, 0);
    atomic_store(&sig.post_failed, 0);
    atomic_store(&sig.post_rc, 0);
    atomic_store(&sig.errno_lost, 0);
    aev_poster *p = NULL;
    assert_int_equal(aev_poster_new(&p, loop, SIG_POSTS), 0);
    atomic_store(&sig.p, p);

    /* No SA_RESTART: the loop's poll is interrupted, which it must take in its stride. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_handler;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, old), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
}

static void sig_finish(int run_rc, const guard *g, int want, const struct sigaction *old)
{
    assert_int_equal(sigaction(SIGUSR1, old, NULL), 0);
    int left = aev_poster_destroy(atomic_load(&sig.p));
    assert_false(g->fired);
    assert_int_equal(run_rc, 1);
    assert_int_equal(atomic_load(&sig.handled), want);
    assert_int_equal(atomic_load(&sig.post_rc), 0);
    assert_int_equal(atomic_load(&sig.post_failed), 0);
    assert_int_equal(atomic_load(&sig.errno_lost), 0);
    assert_int_equal(sig_seen.wrong_thread, 0);
    assert_int_equal(sig_seen.bad_order, 0);
    assert_int_equal(sig_seen.bad_payload, 0);
    assert_int_equal(sig_seen.ran, want);
    assert_int_equal(left, 0);
}

typedef struct sig_sender {
    pthread_t target;
    int count;
    int kill_rc;
} sig_sender;

/* Interrupts the loop thread, most likely blocked in the backend by then. */
static void *sig_to_loop_thread(void *arg)
{
    sig_sender *s = arg;
    aevt_sleep_ms(30);
    s->kill_rc = pthread_kill(s->target, SIGUSR1);
    return NULL;
}

static void test_post_from_signal_handler_on_loop_thread(void **state)
{
    aev_loop *loop = *state;
    struct sigaction old;
    sig_setup(loop, 1, &old);
    guard g;
    guard_start(&g, loop, AEV_SEC(10));
    sig_sender s = {.target = pthread_self(), .count = 1, .kill_rc = -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sig_to_loop_thread, &s), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);
    guard_stop(&g, loop);
    assert_int_equal(s.kill_rc, 0);
    sig_finish(rc, &g, 1, &old);
}

/* Signals itself: every handler run happens on this thread, posting while the loop drains. */
static void *sig_to_self(void *arg)
{
    sig_sender *s = arg;
    for (int i = 0; i < s->count; i++) {
        /* A signal sent to the calling thread is delivered before pthread_kill() returns. */
        int rc = pthread_kill(pthread_self(), SIGUSR1);
        if (rc != 0) {
            s->kill_rc = rc;
            return NULL;
        }
        if (i % 8 == 7)
            aevt_sleep_ms(1);
    }
    s->kill_rc = 0;
    return NULL;
}

static void test_posts_from_signal_handler_on_helper_thread(void **state)
{
    aev_loop *loop = *state;
    struct sigaction old;
    sig_setup(loop, SIG_POSTS, &old);
    guard g;
    guard_start(&g, loop, AEV_SEC(10));
    sig_sender s = {.count = SIG_POSTS, .kill_rc = -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sig_to_self, &s), 0);
    int rc = aev_run(loop, AEV_RUN_DEFAULT);
    assert_int_equal(pthread_join(th, NULL), 0);
    guard_stop(&g, loop);
    assert_int_equal(s.kill_rc, 0);
    sig_finish(rc, &g, SIG_POSTS, &old);
}

int main(void)
{
    aevt_watchdog(30);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_rejects_bad_arguments, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_new_accepts_capacity_bounds, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_post_rejects_bad_arguments, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_null_is_einval, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_capacity_rounds_up_to_power_of_two, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_capacity_one_holds_one_post, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_posts_run_once_in_order_next_iteration, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_post_from_posted_function_runs_once, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_full_ring_reposting_loses_nothing, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_self_reposting_function_does_not_starve_loop,
                                        aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_returns_unrun_count, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_after_nested_drain_is_ebusy, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_from_own_function_is_ebusy, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_poster_keeps_run_alive, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_unref_offsets_poster, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_threads_1_producer, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_threads_2_producers, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_threads_4_producers, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_threads_8_producers, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_capacity_one_four_producers, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_post_from_signal_handler_on_loop_thread, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_posts_from_signal_handler_on_helper_thread, aevt_setup,
                                        aevt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
