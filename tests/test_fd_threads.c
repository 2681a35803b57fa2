/*
 * fd numbers shared between threads. A loop's thread stops the last watcher of a fd and closes
 * the fd; another thread then opens a file, which gets the same number (the kernel hands out the
 * lowest free one). Nothing orders the other thread's open before the loop's next iteration for
 * ThreadSanitizer: the main thread waits for it on a relaxed atomic flag, which establishes no
 * happens-before. So if the loop names the number to the kernel afterwards (an epoll_ctl, a
 * kqueue change), TSan reports a race with the other thread's open, as it once did in the soak
 * test where client threads reconnect. The loop must leave a closed fd alone.
 *
 * In every build the tests also check that the other thread's file is untouched (readable with
 * its own data, nothing of ours delivered) and that the loop goes on working; the race itself is
 * what ThreadSanitizer, which runs the tests labelled "thread" in CI, detects.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, in iotest.h */
#endif

#include "iotest.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* The other thread: opens a pipe and says so, without synchronising with the loop's thread. */
typedef struct opener {
    pthread_t thread;
    int fds[2];
    atomic_int done;
} opener;

static void *opener_main(void *arg)
{
    opener *o = arg;
    if (pipe(o->fds) != 0) {
        o->fds[0] = o->fds[1] = -1;
    }
    /* relaxed on purpose: this flag must not order the open before anything in the loop's
     * thread, or ThreadSanitizer could no longer see a call naming the number as a race. */
    atomic_store_explicit(&o->done, 1, memory_order_relaxed);
    return NULL;
}

/* Starts the other thread and waits (relaxed) until its pipe is open. */
static void opener_run(opener *o)
{
    atomic_init(&o->done, 0);
    assert_int_equal(pthread_create(&o->thread, NULL, opener_main, o), 0);
    int64_t deadline = aevt_mono_ns() + INT64_C(10000000000);
    while (!atomic_load_explicit(&o->done, memory_order_relaxed)) {
        assert_true(aevt_mono_ns() < deadline);
        sched_yield();
    }
}

/* Joins the other thread (which orders its open before what follows) and checks its pipe is
 * intact: a byte written goes through, and nothing else is in it. */
static void opener_finish(opener *o)
{
    assert_int_equal(pthread_join(o->thread, NULL), 0);
    assert_true(o->fds[0] >= 0);
    char c = 'y';
    assert_int_equal(write(o->fds[1], &c, 1), 1);
    char buf[4];
    assert_int_equal(read(o->fds[0], buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'y');
    close(o->fds[0]);
    close(o->fds[1]);
}

/* An io watcher that reads one byte, then stops itself and closes its pipe (both ends), as a
 * server does with a connection it is done with. */
typedef struct closer {
    aev_io io;
    int peer; /* the write end */
    int calls;
} closer;

static void closer_cb(aev_watcher *w, unsigned events)
{
    closer *c = (closer *)w;
    c->calls++;
    assert_true(events & AEV_READ);
    char b;
    assert_int_equal(read(aev_io_fd(&c->io), &b, 1), 1);
    assert_int_equal(aev_io_stop(&c->io), 0);
    close(aev_io_fd(&c->io));
    close(c->peer);
}

/* The watcher's callback stops it and closes the fd; the other thread gets the number. */
static void test_closed_in_callback_number_reused_by_other_thread(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    make_pipe(p);
    closer c = {.peer = p[1]};
    assert_int_equal(aev_io_init(&c.io, loop, closer_cb, p[0], AEV_READ), 0);
    assert_int_equal(aev_io_start(&c.io), 0);
    iterations_until_timer(loop, 1); /* registered */

    int num = p[0];
    char b = 'x';
    assert_int_equal(write(p[1], &b, 1), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 0);
    assert_int_equal(c.calls, 1);

    opener o;
    opener_run(&o);
    assert_int_equal(o.fds[0], num);
    iterations_until_timer(loop, 20);
    assert_int_equal(c.calls, 1);
    opener_finish(&o);
}

/* The same with the stop and close outside any callback, after a second watcher of the fd (for
 * AEV_WRITE, which a pipe's read end never is) stopped an iteration earlier, so the loop had
 * changed the fd's registration before. */
static void test_stopped_and_closed_number_reused_by_other_thread(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    make_pipe(p);
    closer r, w;
    memset(&r, 0, sizeof(r));
    memset(&w, 0, sizeof(w));
    assert_int_equal(aev_io_init(&r.io, loop, closer_cb, p[0], AEV_READ), 0);
    assert_int_equal(aev_io_init(&w.io, loop, closer_cb, p[0], AEV_WRITE), 0);
    assert_int_equal(aev_io_start(&r.io), 0);
    assert_int_equal(aev_io_start(&w.io), 0);
    iterations_until_timer(loop, 1);
    assert_int_equal(aev_io_stop(&w.io), 0);
    iterations_until_timer(loop, 1);

    int num = p[0];
    assert_int_equal(aev_io_stop(&r.io), 0);
    close(p[0]);
    close(p[1]);

    opener o;
    opener_run(&o);
    assert_int_equal(o.fds[0], num);
    iterations_until_timer(loop, 20);
    assert_int_equal(r.calls + w.calls, 0);
    opener_finish(&o);
}

int main(void)
{
    aevt_watchdog(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_closed_in_callback_number_reused_by_other_thread,
                                        aevt_setup, aevt_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_and_closed_number_reused_by_other_thread,
                                        aevt_setup, aevt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
