/*
 * Helpers shared by the io test programs (test_io.c, test_conformance.c): pipes and
 * socketpairs, filling a pipe, one-byte writes, and one non-blocking loop iteration.
 */
#ifndef AEV_IOTEST_H
#define AEV_IOTEST_H

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
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

#endif /* AEV_IOTEST_H */
