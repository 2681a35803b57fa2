/*
 * Tests of pending events and priorities: invocation order across and within priorities,
 * events made pending while callbacks run, aev_feed_event(), aev_clear_pending(), aev_invoke(),
 * stopping a pending watcher, and aev_set_priority() with its errors.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>

/* ---- helpers ---------------------------------------------------------------------------- */

#define NNODES 32
#define MAX_LOG 128

typedef struct entry {
    int id;
    unsigned events;
    uint64_t iteration;
    bool pending_in_cb;
} entry;

static entry g_log[MAX_LOG];
static int g_nlog;

/* Inactive check watchers are fed by the tests; node i has id i. A node may have an action
 * that runs (once) after its call was logged. */
static aev_check g_node[NNODES];
static void (*g_action[NNODES])(aev_watcher *w);

static void log_call(aev_watcher *w, unsigned events)
{
    if (g_nlog >= MAX_LOG) {
        g_nlog++;
        return;
    }
    g_log[g_nlog].id = (int)(intptr_t)w->data;
    g_log[g_nlog].events = events;
    g_log[g_nlog].iteration = aev_iteration(aev_watcher_loop(w));
    g_log[g_nlog].pending_in_cb = aev_is_pending(w);
    g_nlog++;
}

static void node_cb(aev_watcher *w, unsigned events)
{
    int id = (int)(intptr_t)w->data;
    log_call(w, events);
    if (id >= 0 && id < NNODES && g_action[id] != NULL) {
        void (*act)(aev_watcher *) = g_action[id];
        g_action[id] = NULL;
        act(w);
    }
}

static void nodes_init(aev_loop *loop)
{
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(aev_check_init(&g_node[i], loop, node_cb), 0);
        g_node[i].base.data = (void *)(intptr_t)i;
        g_action[i] = NULL;
    }
}

static aev_watcher *node(int i)
{
    return &g_node[i].base;
}

static void set_pri(int i, int pri)
{
    assert_int_equal(aev_set_priority(node(i), pri), 0);
}

static void feed(int i, unsigned events)
{
    assert_int_equal(aev_feed_event(node(i), events), 0);
}

static void expect_ids(const int *ids, int n)
{
    assert_int_equal(g_nlog, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(g_log[i].id, ids[i]);
    }
}

static void expect_one_iteration(void)
{
    for (int i = 1; i < g_nlog; i++) {
        assert_int_equal(g_log[i].iteration, g_log[0].iteration);
    }
}

/* ---- aev_set_priority ------------------------------------------------------------------- */

static void test_priority_default_and_range(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    aev_idle i;
    aev_prepare p;
    aev_check c;
    aev_async a;
    aev_watcher *all[5];
    assert_int_equal(aev_timer_init(&t, loop, node_cb, AEV_SEC(1), 0), 0);
    assert_int_equal(aev_idle_init(&i, loop, node_cb), 0);
    assert_int_equal(aev_prepare_init(&p, loop, node_cb), 0);
    assert_int_equal(aev_check_init(&c, loop, node_cb), 0);
    assert_int_equal(aev_async_init(&a, loop, node_cb), 0);
    all[0] = &t.base;
    all[1] = &i.base;
    all[2] = &p.base;
    all[3] = &c.base;
    all[4] = &a.base;
    for (int k = 0; k < 5; k++) {
        assert_int_equal(aev_priority(all[k]), 0);
        for (int pri = AEV_MINPRI; pri <= AEV_MAXPRI; pri++) {
            assert_int_equal(aev_set_priority(all[k], pri), 0);
            assert_int_equal(aev_priority(all[k]), pri);
        }
    }
}

static void test_set_priority_errors(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    nodes_init(loop);
    assert_int_equal(aev_set_priority(NULL, 0), -EINVAL);

    set_pri(1, 1);
    assert_int_equal(aev_set_priority(node(1), AEV_MINPRI - 1), -EINVAL);
    assert_int_equal(aev_set_priority(node(1), AEV_MAXPRI + 1), -EINVAL);
    assert_int_equal(aev_set_priority(node(1), 100), -EINVAL);
    assert_int_equal(aev_set_priority(node(1), INT_MIN), -EINVAL);
    assert_int_equal(aev_set_priority(node(1), INT_MAX), -EINVAL);
    assert_int_equal(aev_priority(node(1)), 1);

    /* Active. */
    assert_int_equal(aev_timer_init(&t, loop, node_cb, AEV_SEC(5), 0), 0);
    assert_int_equal(aev_set_priority(&t.base, -1), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_set_priority(&t.base, 2), -EBUSY);
    assert_int_equal(aev_set_priority(&t.base, -1), -EBUSY);
    assert_int_equal(aev_priority(&t.base), -1);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_int_equal(aev_set_priority(&t.base, 2), 0);
    assert_int_equal(aev_priority(&t.base), 2);

    /* Pending but not active. */
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_set_priority(node(2), 1), -EBUSY);
    assert_int_equal(aev_priority(node(2)), 0);
    assert_int_equal(aev_clear_pending(node(2)), AEV_CUSTOM);
    assert_int_equal(aev_set_priority(node(2), 1), 0);
    assert_int_equal(aev_priority(node(2)), 1);
}

/* ---- order -------------------------------------------------------------------------------- */

static void test_order_by_priority(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {5, 4, 3, 2, 1};
    nodes_init(loop);
    /* Node k has priority k - 3: fed from lowest to highest. */
    for (int k = 1; k <= 5; k++) {
        set_pri(k, k - 3);
    }
    for (int k = 1; k <= 5; k++) {
        feed(k, AEV_CUSTOM | (unsigned)k);
    }
    assert_int_equal(aev_pending_count(loop), 5);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 5);
    expect_one_iteration();
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g_log[i].events, AEV_CUSTOM | (unsigned)want[i]);
    }
}

static void test_fifo_within_priority(void **state)
{
    aev_loop *loop = *state;
    static const int feed_order[] = {7, 3, 9, 1, 12, 5, 2, 11, 4, 8, 10, 6};
    /* Priorities by id: 1..4 at 1, 5..8 at 0, 9..12 at -2. */
    static const int want[] = {3, 1, 2, 4, 7, 5, 8, 6, 9, 12, 11, 10};
    nodes_init(loop);
    for (int id = 1; id <= 12; id++) {
        set_pri(id, id <= 4 ? 1 : id <= 8 ? 0 : -2);
    }
    for (int i = 0; i < 12; i++) {
        feed(feed_order[i], AEV_CUSTOM);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 12);
    expect_one_iteration();
}

/* A watcher made pending at a higher priority while callbacks run goes before the remaining
 * lower ones; one at the same or a lower priority goes after those queued before it. */
static void feed_three(aev_watcher *w)
{
    (void)w;
    feed(20, AEV_CUSTOM); /* priority 1 */
    feed(21, AEV_CUSTOM); /* priority 0 */
    feed(22, AEV_CUSTOM); /* priority -1 */
}

static void test_feed_from_callback(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 20, 2, 3, 21, 4, 22};
    nodes_init(loop);
    set_pri(20, 1);
    set_pri(22, -1);
    set_pri(4, -1);
    g_action[1] = feed_three;
    feed(1, AEV_CUSTOM);
    feed(2, AEV_CUSTOM);
    feed(3, AEV_CUSTOM);
    feed(4, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 7);
    expect_one_iteration();
}

static void feed_max(aev_watcher *w)
{
    (void)w;
    feed(10, AEV_CUSTOM); /* priority 2 */
}

/* From a low priority: the fed watcher preempts everything that is still queued below it. */
static void test_feed_higher_from_lowest(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 10, 2, 3};
    nodes_init(loop);
    set_pri(1, -1);
    set_pri(2, -1);
    set_pri(3, -2);
    set_pri(10, 2);
    g_action[1] = feed_max;
    feed(3, AEV_CUSTOM);
    feed(1, AEV_CUSTOM);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 4);
    expect_one_iteration();
}

static void feed_self(aev_watcher *w)
{
    assert_int_equal(aev_feed_event(w, AEV_TIMER), 0);
}

/* A callback feeding its own watcher is called again in the same pass, after the others. */
static void test_feed_self_from_callback(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 2, 1};
    nodes_init(loop);
    g_action[1] = feed_self;
    feed(1, AEV_CUSTOM);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 3);
    expect_one_iteration();
    assert_int_equal(g_log[0].events, AEV_CUSTOM);
    assert_int_equal(g_log[2].events, AEV_TIMER);
}

static void test_many_pending_sorted(void **state)
{
    enum { N = 10000 };
    static aev_check w[N];
    static int order[N];
    static int pos_of[N]; /* feed position of each watcher */
    aev_loop *loop = *state;
    unsigned seed = 12345;
    srand(seed);
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(aev_check_init(&w[i], loop, node_cb), 0);
        /* Ids beyond NNODES: node_cb only logs the first MAX_LOG calls. */
        w[i].base.data = (void *)(intptr_t)(NNODES + i);
        assert_int_equal(aev_set_priority(&w[i].base, rand() % 5 + AEV_MINPRI), 0);
        order[i] = i;
    }
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (int i = 0; i < N; i++) {
        pos_of[order[i]] = i;
        assert_int_equal(aev_feed_event(&w[order[i]].base, AEV_CUSTOM), 0);
    }
    assert_int_equal(aev_pending_count(loop), N);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, N);
    assert_int_equal(aev_pending_count(loop), 0);
    /* The first MAX_LOG calls were recorded: they must be sorted by priority, then feed order. */
    for (int i = 1; i < MAX_LOG; i++) {
        int a = g_log[i - 1].id - NNODES;
        int b = g_log[i].id - NNODES;
        int pa = aev_priority(&w[a].base);
        int pb = aev_priority(&w[b].base);
        assert_true(pa >= pb);
        if (pa == pb) {
            assert_true(pos_of[a] < pos_of[b]);
        }
    }
    int first = g_log[0].id - NNODES;
    assert_int_equal(aev_priority(&w[first].base), AEV_MAXPRI);
}

/* Events from the kernel obey priorities too, whatever the fd order. */
static void test_io_events_by_priority(void **state)
{
    aev_loop *loop = *state;
    int fds[3][2];
    aev_io io[3];
    static const int prio[3] = {-1, 2, 0};
    static const int want[] = {101, 102, 100};
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        assert_int_equal(write(fds[i][1], "x", 1), 1);
        assert_int_equal(aev_io_init(&io[i], loop, node_cb, fds[i][0], AEV_READ), 0);
        io[i].base.data = (void *)(intptr_t)(100 + i);
        assert_int_equal(aev_set_priority(&io[i].base, prio[i]), 0);
        assert_int_equal(aev_io_start(&io[i]), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    expect_ids(want, 3);
    expect_one_iteration();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g_log[i].events, AEV_READ);
        assert_int_equal(aev_io_stop(&io[i]), 0);
        close(fds[i][0]);
        close(fds[i][1]);
    }
}

static void test_timers_by_priority(void **state)
{
    aev_loop *loop = *state;
    aev_timer t[4];
    static const int prio[4] = {-2, 0, 2, 0};
    static const int want[] = {202, 201, 203, 200};
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(aev_timer_init(&t[i], loop, node_cb, 0, 0), 0);
        t[i].base.data = (void *)(intptr_t)(200 + i);
        assert_int_equal(aev_set_priority(&t[i].base, prio[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(aev_timer_start(&t[i]), 0);
    }
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    expect_ids(want, 4);
    expect_one_iteration();
}

/* ---- feed --------------------------------------------------------------------------------- */

static void test_feed_ors_events(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 2};
    nodes_init(loop);
    feed(1, AEV_CUSTOM);
    feed(2, AEV_READ);
    feed(1, AEV_TIMER);
    feed(1, AEV_WRITE);
    assert_true(aev_is_pending(node(1)));
    assert_int_equal(aev_pending_count(loop), 2);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    /* One call for 1, still in its first place. */
    expect_ids(want, 2);
    assert_int_equal(g_log[0].events, AEV_CUSTOM | AEV_TIMER | AEV_WRITE);
    assert_int_equal(g_log[1].events, AEV_READ);
    assert_false(aev_is_pending(node(1)));
}

static void test_feed_errors(void **state)
{
    aev_loop *loop = *state;
    nodes_init(loop);
    assert_int_equal(aev_feed_event(NULL, AEV_CUSTOM), -EINVAL);
    assert_int_equal(aev_feed_event(node(1), 0), -EINVAL);
    assert_false(aev_is_pending(node(1)));
    assert_int_equal(aev_pending_count(loop), 0);
    /* A zero feed to a pending watcher changes nothing either. */
    feed(1, AEV_CUSTOM);
    assert_int_equal(aev_feed_event(node(1), 0), -EINVAL);
    assert_int_equal(aev_clear_pending(node(1)), AEV_CUSTOM);
    assert_int_equal(aev_pending_count(loop), 0);
}

/* Feeding works on inactive and active watchers and leaves the active state alone. */
static void test_feed_active_and_inactive(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    static const int want[] = {300, 1};
    nodes_init(loop);
    assert_int_equal(aev_timer_init(&t, loop, node_cb, AEV_SEC(5), 0), 0);
    t.base.data = (void *)(intptr_t)300;
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_feed_event(&t.base, AEV_CUSTOM), 0);
    feed(1, AEV_CUSTOM);
    assert_true(aev_is_active(&t.base));
    assert_true(aev_is_pending(&t.base));
    assert_false(aev_is_active(node(1)));
    assert_true(aev_is_pending(node(1)));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    expect_ids(want, 2);
    assert_int_equal(g_log[0].events, AEV_CUSTOM);
    assert_true(aev_is_active(&t.base));
    assert_false(aev_is_active(node(1)));
    assert_int_equal(aev_timer_stop(&t), 0);
}

/* The pending mark is cleared before the callback runs. */
static void test_not_pending_in_callback(void **state)
{
    aev_loop *loop = *state;
    nodes_init(loop);
    feed(1, AEV_CUSTOM);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 2);
    assert_false(g_log[0].pending_in_cb);
    assert_false(g_log[1].pending_in_cb);
}

/* A cleared slot is not invoked, and a watcher fed again after clearing runs once, at its new
 * place in the queue. */
static void test_feed_clear_feed(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {2, 1};
    nodes_init(loop);
    feed(1, AEV_CUSTOM);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_clear_pending(node(1)), AEV_CUSTOM);
    feed(1, AEV_READ);
    assert_int_equal(aev_pending_count(loop), 2);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 2);
    assert_int_equal(g_log[1].events, AEV_READ);
}

/* ---- stop, clear_pending, invoke ----------------------------------------------------------- */

static void test_stop_pending_removes_event(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    static const int want[] = {1};
    nodes_init(loop);
    assert_int_equal(aev_timer_init(&t, loop, node_cb, AEV_SEC(5), 0), 0);
    t.base.data = (void *)(intptr_t)300;
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_feed_event(&t.base, AEV_CUSTOM), 0);
    feed(1, AEV_CUSTOM);
    assert_int_equal(aev_pending_count(loop), 2);
    assert_int_equal(aev_timer_stop(&t), 0);
    assert_false(aev_is_pending(&t.base));
    assert_false(aev_is_active(&t.base));
    assert_int_equal(aev_pending_count(loop), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 1);

    /* Restarting does not bring the removed event back. */
    assert_int_equal(aev_timer_start(&t), 0);
    assert_false(aev_is_pending(&t.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nlog, 1);
    assert_int_equal(aev_stop(&t.base), 0);
}

static aev_timer g_victim;

static void stop_victim(aev_watcher *w)
{
    (void)w;
    aev_timer_stop(&g_victim);
}

/* Stopping a watcher whose event is queued later in the same pass prevents its callback. */
static void test_stop_pending_from_callback(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 2};
    nodes_init(loop);
    assert_int_equal(aev_timer_init(&g_victim, loop, node_cb, AEV_SEC(5), 0), 0);
    g_victim.base.data = (void *)(intptr_t)300;
    assert_int_equal(aev_timer_start(&g_victim), 0);
    g_action[1] = stop_victim;
    feed(1, AEV_CUSTOM);
    assert_int_equal(aev_feed_event(&g_victim.base, AEV_CUSTOM), 0);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 2);
    assert_false(aev_is_pending(&g_victim.base));
    assert_false(aev_is_active(&g_victim.base));
}

static unsigned g_cleared;

static void clear_node3(aev_watcher *w)
{
    (void)w;
    g_cleared = aev_clear_pending(node(3));
}

static void test_clear_pending(void **state)
{
    aev_loop *loop = *state;
    static const int want[] = {1, 2};
    nodes_init(loop);
    assert_int_equal(aev_clear_pending(node(1)), 0);

    feed(1, AEV_CUSTOM);
    feed(1, AEV_READ);
    assert_int_equal(aev_clear_pending(node(1)), AEV_CUSTOM | AEV_READ);
    assert_false(aev_is_pending(node(1)));
    assert_int_equal(aev_pending_count(loop), 0);
    assert_int_equal(aev_clear_pending(node(1)), 0);

    /* From a callback, on an event queued later in the same pass. */
    g_cleared = 0;
    g_action[1] = clear_node3;
    feed(1, AEV_CUSTOM);
    feed(3, AEV_TIMER | AEV_WRITE);
    feed(2, AEV_CUSTOM);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    expect_ids(want, 2);
    assert_int_equal(g_cleared, AEV_TIMER | AEV_WRITE);
}

static void test_clear_pending_keeps_active(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    nodes_init(loop);
    assert_int_equal(aev_timer_init(&t, loop, node_cb, AEV_SEC(5), 0), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    assert_int_equal(aev_feed_event(&t.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_clear_pending(&t.base), AEV_CUSTOM);
    assert_true(aev_is_active(&t.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(g_nlog, 0);
    assert_int_equal(aev_timer_stop(&t), 0);
}

static void test_invoke(void **state)
{
    aev_loop *loop = *state;
    nodes_init(loop);
    assert_int_equal(aev_invoke(NULL, AEV_CUSTOM), -EINVAL);

    /* Called right away, outside any run, and not made pending. */
    assert_int_equal(aev_invoke(node(1), AEV_READ | AEV_CUSTOM), 0);
    assert_int_equal(g_nlog, 1);
    assert_int_equal(g_log[0].id, 1);
    assert_int_equal(g_log[0].events, AEV_READ | AEV_CUSTOM);
    assert_false(aev_is_pending(node(1)));
    assert_int_equal(aev_pending_count(loop), 0);

    /* The pending event of a fed watcher is left in place. */
    feed(2, AEV_TIMER);
    assert_int_equal(aev_invoke(node(2), AEV_WRITE), 0);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[1].events, AEV_WRITE);
    assert_true(aev_is_pending(node(2)));
    assert_int_equal(aev_pending_count(loop), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_nlog, 3);
    assert_int_equal(g_log[2].id, 2);
    assert_int_equal(g_log[2].events, AEV_TIMER);
}

static void test_is_active_is_pending(void **state)
{
    aev_loop *loop = *state;
    aev_idle i;
    nodes_init(loop);
    assert_int_equal(aev_idle_init(&i, loop, node_cb), 0);
    i.base.data = (void *)(intptr_t)5;
    assert_false(aev_is_active(&i.base));
    assert_false(aev_is_pending(&i.base));
    assert_int_equal(aev_idle_start(&i), 0);
    assert_true(aev_is_active(&i.base));
    assert_false(aev_is_pending(&i.base));
    assert_int_equal(aev_feed_event(&i.base, AEV_CUSTOM), 0);
    assert_true(aev_is_active(&i.base));
    assert_true(aev_is_pending(&i.base));
    assert_int_equal(aev_clear_pending(&i.base), AEV_CUSTOM);
    assert_true(aev_is_active(&i.base));
    assert_false(aev_is_pending(&i.base));
    assert_int_equal(aev_idle_stop(&i), 0);
    assert_false(aev_is_active(&i.base));
    assert_false(aev_is_pending(&i.base));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_priority_default_and_range, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_set_priority_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_order_by_priority, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fifo_within_priority, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_from_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_higher_from_lowest, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_self_from_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_many_pending_sorted, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_io_events_by_priority, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_timers_by_priority, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_ors_events, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_active_and_inactive, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_not_pending_in_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_feed_clear_feed, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stop_pending_removes_event, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stop_pending_from_callback, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_clear_pending, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_clear_pending_keeps_active, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_invoke, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_is_active_is_pending, aevt_setup, aevt_teardown),
    };
    aevt_watchdog(20);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
