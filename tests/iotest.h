/*
 * Helpers shared by the io test programs (test_io.c, test_conformance.c): pipes and
 * socketpairs, filling a pipe, one-byte writes, and one non-blocking loop iteration.
 */
#ifndef AEV_IOTEST_H
#define AEV_IOTEST_H

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void make_pipe(int p[2])
{
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static inline void make_socketpair(int s[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s), 0);
}

static inline void close_pair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* Fills a nonblocking pipe or socket until the kernel refuses more. */
static inline void fill(int fd)
{
    static char buf[65536];
    while (write(fd, buf, sizeof(buf)) > 0) {
    }
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static inline void write_byte(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

static inline void run_nowait(aev_loop *loop)
{
    assert_true(aev_run(loop, AEV_RUN_NOWAIT) >= 0);
}

/* Sets the int that w->data points to. */
static inline void aevt_flag_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    *(int *)w->data = 1;
}

/*
 * Blocks in aev_run(ONCE) until a timer of `ms` fires and returns how many iterations that took.
 * A loop that keeps being woken by events nobody wants takes many; a quiet one takes one or two.
 */
static inline uint64_t iterations_until_timer(aev_loop *loop, int ms)
{
    int fired = 0;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, aevt_flag_cb, AEV_MSEC(ms), 0), 0);
    t.base.data = &fired;
    assert_int_equal(aev_timer_start(&t), 0);
    uint64_t start = aev_iteration(loop);
    for (int i = 0; i < 100000 && !fired; i++) {
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    }
    aev_timer_stop(&t);
    assert_true(fired);
    return aev_iteration(loop) - start;
}

/* The stale-event limit: a loop that is woken by events for an fd nobody watches may take a few
 * extra iterations to notice and rebuild its kernel state, but never more than this. */
#define SPIN_LIMIT 10

#endif /* AEV_IOTEST_H */
