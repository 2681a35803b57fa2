/*
 * The loop's life cycle around the watchers: cleanup watchers at destroy, fork watchers in a
 * fork child, aev_suspend()/aev_resume() and the invoke hook.
 */
#include "testutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* The order in which callbacks ran, as watcher ids, and the events each got. */
static int g_order[16];
static unsigned g_events[16];
static int g_n;

static void log_cb(aev_watcher *w, unsigned events)
{
    if (g_n < 16) {
        g_order[g_n] = (int)(intptr_t)w->data;
        g_events[g_n] = events;
    }
    g_n++;
}

/* ---- cleanup ------------------------------------------------------------------------------- */

static void test_cleanup_runs_at_destroy_newest_first(void **state)
{
    (void)state;
    aev_loop *loop = aevt_loop_new();
    aev_cleanup a, b, c;
    g_n = 0;
    assert_int_equal(aev_cleanup_init(&a, loop, log_cb), 0);
    assert_int_equal(aev_cleanup_init(&b, loop, log_cb), 0);
    assert_int_equal(aev_cleanup_init(&c, loop, log_cb), 0);
    a.base.data = (void *)1;
    b.base.data = (void *)2;
    c.base.data = (void *)3;
    assert_int_equal(aev_cleanup_start(&a), 0);
    assert_int_equal(aev_start(&b.base), 0);
    assert_int_equal(aev_cleanup_start(&c), 0);
    assert_int_equal(aev_cleanup_stop(&c), 0); /* a stopped one does not run */
    assert_true(aev_is_active(&a.base));
    /* Cleanup watchers hold no reference: the loop has nothing to run. */
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_int_equal(g_n, 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_int_equal(g_n, 2);
    assert_int_equal(g_order[0], 2);
    assert_int_equal(g_order[1], 1);
    assert_int_equal(g_events[0], AEV_CLEANUP);
    assert_int_equal(g_events[1], AEV_CLEANUP);
}

/* Stopping a cleanup watcher from the middle leaves the others in reverse start order (the
 * fuzzer found that removal used to swap the last one into the hole: a c b instead of c b). */
static void test_cleanup_stop_middle_keeps_order(void **state)
{
    (void)state;
    aev_loop *loop = aevt_loop_new();
    aev_cleanup w[4];
    g_n = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(aev_cleanup_init(&w[i], loop, log_cb), 0);
        w[i].base.data = (void *)(intptr_t)(i + 1);
        assert_int_equal(aev_cleanup_start(&w[i]), 0);
    }
    assert_int_equal(aev_cleanup_stop(&w[0]), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_int_equal(g_n, 3);
    assert_int_equal(g_order[0], 4);
    assert_int_equal(g_order[1], 3);
    assert_int_equal(g_order[2], 2);
}

static int g_destroy_rc = 1;

static void destroy_own_loop_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    g_destroy_rc = aev_loop_destroy(aev_watcher_loop(w));
}

/* A callback run by aev_invoke_pending() outside aev_run() is still a callback of the loop:
 * destroying the loop there is refused (it used to free the loop under the invoke loop). */
static void test_destroy_from_invoke_pending_busy(void **state)
{
    (void)state;
    aev_loop *loop = aevt_loop_new();
    aev_idle w;
    assert_int_equal(aev_idle_init(&w, loop, destroy_own_loop_cb), 0);
    assert_int_equal(aev_feed_event(&w.base, AEV_CUSTOM), 0);
    g_destroy_rc = 1;
    aev_invoke_pending(loop);
    assert_int_equal(g_destroy_rc, -EBUSY);
    assert_int_equal(aev_pending_count(loop), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
}

typedef struct owned {
    aev_cleanup w;
    aev_loop *loop;
    int destroy_rc;
    int *ran;
} owned;

/* A cleanup callback may free its own watcher, and may not destroy the loop again. */
static void free_self_cb(aev_watcher *w, unsigned events)
{
    owned *o = (owned *)w;
    assert_int_equal(events, AEV_CLEANUP);
    assert_false(aev_is_active(w));
    o->destroy_rc = aev_loop_destroy(o->loop);
    *o->ran = o->destroy_rc;
    free(o);
}

static void test_cleanup_may_free_itself(void **state)
{
    (void)state;
    aev_loop *loop = aevt_loop_new();
    int ran = 1;
    owned *o = calloc(1, sizeof *o);
    assert_non_null(o);
    o->loop = loop;
    o->ran = &ran;
    assert_int_equal(aev_cleanup_init(&o->w, loop, free_self_cb), 0);
    assert_int_equal(aev_cleanup_start(&o->w), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    assert_int_equal(ran, -EBUSY);
}

static void test_cleanup_fork_errors(void **state)
{
    aev_loop *loop = *state;
    aev_cleanup c;
    aev_fork f;
    aev_timer t;
    assert_int_equal(aev_cleanup_init(NULL, loop, log_cb), -EINVAL);
    assert_int_equal(aev_cleanup_init(&c, NULL, log_cb), -EINVAL);
    assert_int_equal(aev_cleanup_init(&c, loop, NULL), -EINVAL);
    assert_int_equal(aev_fork_init(NULL, loop, log_cb), -EINVAL);
    assert_int_equal(aev_fork_init(&f, NULL, log_cb), -EINVAL);
    assert_int_equal(aev_fork_init(&f, loop, NULL), -EINVAL);
    assert_int_equal(aev_cleanup_start(NULL), -EINVAL);
    assert_int_equal(aev_cleanup_stop(NULL), -EINVAL);
    assert_int_equal(aev_fork_start(NULL), -EINVAL);
    assert_int_equal(aev_fork_stop(NULL), -EINVAL);
    /* A watcher of another type is refused by the typed functions. */
    assert_int_equal(aev_timer_init(&t, loop, log_cb, 0, 0), 0);
    assert_int_equal(aev_cleanup_start((aev_cleanup *)&t), -EINVAL);
    assert_int_equal(aev_fork_start((aev_fork *)&t), -EINVAL);
    /* Start twice / stop twice are no-ops; stop removes a pending event. */
    assert_int_equal(aev_fork_init(&f, loop, log_cb), 0);
    assert_int_equal(aev_fork_start(&f), 0);
    assert_int_equal(aev_fork_start(&f), 0);
    g_n = 0;
    assert_int_equal(aev_feed_event(&f.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_stop(&f.base), 0);
    assert_int_equal(aev_fork_stop(&f), 0);
    assert_false(aev_is_pending(&f.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_n, 0);
}

/* ---- fork ---------------------------------------------------------------------------------- */

/* In the child: the fork watcher runs in the first iteration, in the fork-check phase, so
 * before the prepare watchers of that iteration; also when the child called aev_loop_fork()
 * itself first. */
static int child_checks(aev_loop *loop, aev_fork *f, aev_prepare *prep, bool explicit_fork)
{
    g_n = 0;
    if (explicit_fork && aev_loop_fork(loop) != 0)
        return 9;
    if (aev_prepare_start(prep) != 0)
        return 10;
    if (aev_run(loop, AEV_RUN_NOWAIT) < 0)
        return 11;
    if (g_n != 2 || g_order[0] != 1 || g_events[0] != AEV_FORK || g_order[1] != 2)
        return 12;
    /* Only once per fork: the next iteration runs the prepare watcher alone. */
    if (aev_run(loop, AEV_RUN_NOWAIT) < 0 || g_n != 3 || g_order[2] != 2)
        return 13;
    (void)f;
    return 0;
}

static void run_fork_watcher_test(aev_loop *loop, bool explicit_fork)
{
    aev_fork f;
    aev_prepare prep;
    assert_int_equal(aev_fork_init(&f, loop, log_cb), 0);
    assert_int_equal(aev_prepare_init(&prep, loop, log_cb), 0);
    f.base.data = (void *)1;
    prep.base.data = (void *)2;
    assert_int_equal(aev_fork_start(&f), 0);
    /* A fork watcher holds no reference. */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_checks(loop, &f, &prep, explicit_fork));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent never runs its fork watchers. */
    g_n = 0;
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_n, 0);
    assert_int_equal(aev_fork_stop(&f), 0);
}

static void test_fork_watcher_runs_in_child_only(void **state)
{
    run_fork_watcher_test(*state, false);
}

static void test_fork_watcher_runs_after_explicit_loop_fork(void **state)
{
    run_fork_watcher_test(*state, true);
}

/* ---- suspend / resume ---------------------------------------------------------------------- */

static aev_time_t g_fired_at;

static void stamp_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    g_fired_at = aev_time();
}

static void test_suspended_time_does_not_count(void **state)
{
    aev_loop *loop = *state;
    aev_timer t;
    const aev_time_t after = AEV_MSEC(60);
    assert_int_equal(aev_timer_init(&t, loop, stamp_cb, after, 0), 0);
    aev_time_t before_start = aev_time();
    assert_int_equal(aev_timer_start(&t), 0);
    aevt_sleep_ms(20);
    aev_suspend(loop);
    aev_time_t after_suspend = aev_time();
    aevt_sleep_ms(150); /* longer than the timer's whole delay */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), -EBUSY);
    aev_time_t before_resume = aev_time();
    aev_resume(loop);
    g_fired_at = 0;
    assert_int_equal(aev_run(loop, AEV_RUN_DEFAULT), 0);
    assert_true(g_fired_at > 0);
    /* The deadline moved by the time spent suspended: it fires no earlier than the remaining
     * time at suspend after the resume. */
    aev_time_t earliest = before_start + after + (before_resume - after_suspend);
    assert_true(g_fired_at >= earliest);
}

static void test_suspend_nests_and_null(void **state)
{
    aev_loop *loop = *state;
    aev_suspend(NULL);
    aev_resume(NULL);
    aev_resume(loop); /* not suspended: nothing happens */
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    aev_suspend(loop);
    aev_suspend(loop);
    aev_resume(loop);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), -EBUSY);
    aev_resume(loop);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
}

/* ---- invoke hook --------------------------------------------------------------------------- */

static int g_hook_calls;
static int g_hook_runs;

static void hook(aev_loop *loop)
{
    g_hook_calls++;
    if (g_hook_runs)
        aev_invoke_pending(loop);
}

static void test_invoke_hook_replaces_invoke_step(void **state)
{
    aev_loop *loop = *state;
    aev_check c;
    assert_int_equal(aev_check_init(&c, loop, log_cb), 0);
    c.base.data = (void *)7;
    aev_set_invoke_hook(loop, hook);
    g_hook_calls = g_hook_runs = g_n = 0;

    /* A hook that defers: the event stays pending after the iteration. */
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_true(g_hook_calls >= 1);
    assert_int_equal(g_n, 0);
    assert_true(aev_is_pending(&c.base));
    assert_int_equal(aev_pending_count(loop), 1);
    /* The program runs them when it wants to. */
    aev_invoke_pending(loop);
    assert_int_equal(g_n, 1);
    assert_int_equal(g_order[0], 7);

    /* A hook that invokes. */
    g_hook_runs = 1;
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_n, 2);

    /* NULL restores the default. */
    aev_set_invoke_hook(loop, NULL);
    int calls = g_hook_calls;
    assert_int_equal(aev_feed_event(&c.base, AEV_CUSTOM), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_hook_calls, calls);
    assert_int_equal(g_n, 3);
    aev_set_invoke_hook(NULL, hook);
    aev_invoke_pending(NULL);
}

int main(void)
{
    aevt_watchdog(30);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cleanup_runs_at_destroy_newest_first),
        cmocka_unit_test(test_cleanup_may_free_itself),
        cmocka_unit_test(test_cleanup_stop_middle_keeps_order),
        cmocka_unit_test(test_destroy_from_invoke_pending_busy),
        cmocka_unit_test_setup_teardown(test_cleanup_fork_errors, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fork_watcher_runs_in_child_only, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_fork_watcher_runs_after_explicit_loop_fork, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_suspended_time_does_not_count, aevt_setup,
                                        aevt_teardown),
        cmocka_unit_test_setup_teardown(test_suspend_nests_and_null, aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_invoke_hook_replaces_invoke_step, aevt_setup,
                                        aevt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
