/*
 * White-box test of the loop's timer set (src/timer_queue.c: a heap plus sorted runs), linked
 * with the library's object files. Random operations are checked against a reference model
 * after every step: the earliest timer is the model's minimum of (deadline, sequence), every
 * active timer is found where its active_ says with its own deadline and sequence, and the
 * timers really go where the design says (streams of equal timeouts into runs). The runs and
 * the heap are also driven with allocations failing, where a timer must fall back to the heap.
 */
#include "internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { N = 4000 };

typedef struct model {
    int active;
    aev_time_t at;
    uint64_t seq;
} model;

static aev_timer g_w[N];
static model g_m[N];
static aev__timers g_t;
static uint64_t g_seq;
static aev_time_t g_now;
static uint64_t g_rng;

static uint32_t rnd(uint32_t n)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

/* A failing allocator: every allocation fails while g_fail is set. */
static int g_fail;
static void *fail_realloc(void *ptr, size_t size)
{
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return g_fail ? NULL : realloc(ptr, size);
}

static int setup(void **state)
{
    (void)state;
    memset(&g_t, 0, sizeof g_t);
    memset(g_w, 0, sizeof g_w);
    memset(g_m, 0, sizeof g_m);
    g_seq = 1;
    g_now = 1000000;
    g_fail = 0;
    aev_set_allocator(fail_realloc);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    aev__tq_free(&g_t);
    aev_set_allocator(NULL);
    return 0;
}

static int before(const model *a, const model *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static int node_before(const aev__hnode *a, const aev__hnode *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

/* The structures' own invariants: the heap property, each run in order from its head (holes
 * excepted) with a live head, and the live counts. */
static void check_structure(void)
{
    const aev__heap *h = &g_t.heap;
    assert_true(h->count <= h->cap && h->cap >= g_t.count);
    for (uint32_t i = 1; i < h->count; i++)
        assert_false(node_before(&h->nodes[i], &h->nodes[(i - 1) / 4]));
    uint32_t live = h->count;
    for (int r = 0; r < AEV__NRUNS; r++) {
        const aev__run *run = &g_t.runs[r];
        const aev__hnode *last = NULL;
        uint32_t n = 0;
        for (uint32_t i = run->head; i < run->count; i++) {
            if (!run->nodes[i].w)
                continue;
            if (last)
                assert_false(node_before(&run->nodes[i], last));
            last = &run->nodes[i];
            n++;
        }
        assert_int_equal(n, run->live);
        assert_true(run->live == 0 || run->nodes[run->head].w);
        live += n;
    }
    assert_int_equal(live, g_t.count);
}

/* The whole state against the model. */
static void check(void)
{
    check_structure();
    uint32_t count = 0;
    int first = -1;
    for (int i = 0; i < N; i++) {
        if (!g_m[i].active) {
            assert_int_equal(g_w[i].base.active_, 0);
            continue;
        }
        count++;
        assert_true(aev__tq_holds(&g_t, &g_w[i]));
        const aev__hnode *n = aev__tq_node(&g_t, &g_w[i]);
        assert_ptr_equal(n->w, &g_w[i]);
        assert_true(n->at == g_m[i].at && n->seq == g_m[i].seq);
        if (first < 0 || before(&g_m[i], &g_m[first]))
            first = i;
    }
    assert_int_equal(g_t.count, count);
    const aev__hnode *f = aev__tq_first(&g_t);
    if (first < 0) {
        assert_null(f);
    } else {
        assert_non_null(f);
        assert_ptr_equal(f->w, &g_w[first]);
    }
}

static void insert(int i, aev_time_t at)
{
    if (aev__tq_reserve(&g_t) < 0) {
        assert_true(g_fail); /* only for lack of memory; the timer stays stopped */
        return;
    }
    g_m[i] = (model){1, at, g_seq};
    aev__tq_insert(&g_t, &g_w[i], at, g_seq++);
}

static void remove_one(int i)
{
    aev__tq_remove(&g_t, &g_w[i]);
    g_w[i].base.active_ = 0; /* aev__deactivate's part */
    g_m[i].active = 0;
}

static void move(int i, aev_time_t at)
{
    g_m[i].at = at;
    g_m[i].seq = g_seq;
    aev__tq_move(&g_t, &g_w[i], at, g_seq++);
}

/* Takes the first timer away, as the loop does when it expires. */
static void pop_first(void)
{
    const aev__hnode *f = aev__tq_first(&g_t);
    if (!f)
        return;
    int i = (int)(f->w - g_w);
    if (f->at > g_now)
        g_now = f->at;
    remove_one(i);
}

/* A deadline from one of a few timeouts (as programs arm them), or a random one. */
static aev_time_t deadline(void)
{
    static const aev_time_t timeouts[] = {5000, 20000, 20000, 300000, 0};
    uint32_t k = rnd(8);
    if (k < 5)
        return g_now + timeouts[k];
    return g_now + rnd(400000);
}

static void random_ops(int steps, int fail_every)
{
    for (int s = 0; s < steps; s++) {
        g_fail = fail_every && rnd((uint32_t)fail_every) == 0;
        int i = (int)rnd(N);
        uint32_t op = rnd(10);
        g_now += rnd(50);
        if (op < 4 && !g_m[i].active)
            insert(i, deadline());
        else if (op < 6 && g_m[i].active)
            remove_one(i);
        else if (op < 8 && g_m[i].active)
            move(i, deadline());
        else if (op == 8)
            pop_first();
        else if (rnd(500) == 0) {
            aev_time_t delta = rnd(1000);
            aev__tq_shift(&g_t, delta);
            for (int j = 0; j < N; j++)
                g_m[j].at += g_m[j].active ? delta : 0;
        }
        if (s % 16 == 0 || steps < 5000)
            check();
    }
    g_fail = 0;
    check();
}

static void drain_in_order(void)
{
    model last = {0, INT64_MIN, 0};
    while (g_t.count) {
        const aev__hnode *f = aev__tq_first(&g_t);
        int i = (int)(f->w - g_w);
        assert_false(before(&g_m[i], &last));
        last = g_m[i];
        remove_one(i);
    }
    assert_null(aev__tq_first(&g_t));
    check();
}

static void test_random_against_model(void **state)
{
    (void)state;
    g_rng = 1;
    random_ops(200000, 0);
    drain_in_order();
}

static void test_random_with_allocations_failing(void **state)
{
    (void)state;
    g_rng = 2;
    random_ops(100000, 7);
    drain_in_order();
}

/* Deadlines in increasing order (a million timers started in deadline order) all go to one run:
 * no heap node at all, and they come out in order. */
static void test_increasing_deadlines_use_a_run(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        insert(i, g_now + i / 10);
    assert_int_equal(g_t.heap.count, 0);
    for (int i = 0; i < N; i++)
        assert_true(g_w[i].base.active_ < 0);
    check();
    drain_in_order();
}

/* Two interleaved streams of timeouts (short and long, each re-armed in time order) end up in
 * runs: timers first started in decreasing order (so mostly into the heap) move to the runs as
 * they are re-armed, the heap empties, and the holes left by re-arming are compacted away. */
static void test_two_timeouts_two_runs(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++)
        insert(i, g_now + 2000000 - i);
    assert_true(g_t.heap.count > 150);
    for (int s = 0; s < 100000; s++) {
        g_now += 3;
        int i = (int)rnd(200);
        move(i, g_now + (i % 2 ? 1000000 : 10000));
        if (s % 1000 == 0)
            check();
    }
    assert_int_equal(g_t.heap.count, 0);
    for (int r = 0; r < AEV__NRUNS; r++)
        assert_true(g_t.runs[r].cap <= 1024); /* holes were compacted, not piled up */
    check();
    drain_in_order();
}

/* A run that cannot grow (no memory) sends the timer to the heap, whose room was reserved. */
static void test_run_full_without_memory_uses_heap(void **state)
{
    (void)state;
    for (int i = 0; i < 16; i++)
        insert(i, g_now + i);
    /* The run's array is full (16 slots); the heap has room reserved for every timer. */
    assert_int_equal(aev__tq_reserve(&g_t), 0);
    g_fail = 1;
    aev__tq_insert(&g_t, &g_w[16], g_now + 100, g_seq);
    g_m[16] = (model){1, g_now + 100, g_seq++};
    g_fail = 0;
    assert_true(g_w[16].base.active_ > 0);
    check();
    /* Moving a run member later never needs memory either. */
    g_fail = 1;
    for (int i = 0; i < 16; i++)
        move(i, g_now + 200 + i);
    g_fail = 0;
    check();
    drain_in_order();
}

/* Equal deadlines in a run and in the heap come out in sequence order. */
static void test_ties_across_run_and_heap(void **state)
{
    (void)state;
    aev_time_t t = g_now;
    insert(0, t + 100); /* an empty run each, as none fits: 0, 1, 2, 3 */
    insert(1, t + 50);
    insert(2, t + 40);
    insert(3, t + 30);
    insert(4, t + 20);  /* no run fits: the heap */
    insert(5, t + 100); /* the run of 0, after it: a tie within a run */
    assert_true(g_w[4].base.active_ > 0);
    assert_int_equal(g_w[5].base.active_, g_w[0].base.active_ - AEV__NRUNS);
    remove_one(3);     /* its run is empty again */
    insert(6, t + 20); /* that run: a tie with 4, which is in the heap and older */
    assert_true(g_w[6].base.active_ < 0);
    check();
    static const int order[] = {4, 6, 2, 1, 0, 5};
    for (int k = 0; k < 6; k++) {
        const aev__hnode *f = aev__tq_first(&g_t);
        assert_ptr_equal(f->w, &g_w[order[k]]);
        remove_one(order[k]);
        check();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_random_against_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_with_allocations_failing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_increasing_deadlines_use_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_timeouts_two_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_full_without_memory_uses_heap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_across_run_and_heap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
