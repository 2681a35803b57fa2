/*
 * Tests of the kqueue emulation itself, against the facts of FreeBSD's kqueue(2) that the kqueue
 * backend relies on: a backend that passes the test suite on the emulation is only as right for
 * a BSD kernel as the emulation is. Each test names the fact it checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/event.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct timespec zero = {0, 0};

static int kq_new(void)
{
    int kq = kqueue();
    assert_true(kq >= 0);
    return kq;
}

static void pipe_nb(int p[2])
{
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void change(int kq, int fd, short filter, unsigned short flags, void *udata)
{
    struct kevent ch;
    EV_SET(&ch, (uintptr_t)fd, filter, flags, 0, 0, udata);
    assert_int_equal(kevent(kq, &ch, 1, NULL, 0, NULL), 0);
}

/* Collects without waiting; returns the count. */
static int collect(int kq, struct kevent *out, int n)
{
    return kevent(kq, NULL, 0, out, n, &zero);
}

/* "If an error occurs while processing an element of the changelist and there is enough room in
 * the eventlist, then the event will be placed in the eventlist with EV_ERROR set in flags and the
 * system error in data." FreeBSD then returns at once, without waiting or collecting events. */
static void test_error_entries(void **state)
{
    (void)state;
    int kq = kq_new(), p[2], bad[2];
    pipe_nb(p);
    pipe_nb(bad);
    close(bad[0]);
    close(bad[1]);
    assert_int_equal(write(p[1], "x", 1), 1);
    change(kq, p[0], EVFILT_READ, EV_ADD, NULL);

    struct kevent ev[4];
    EV_SET(&ev[0], (uintptr_t)bad[0], EVFILT_READ, EV_ADD, 0, 0, (void *)(uintptr_t)7);
    EV_SET(&ev[1], (uintptr_t)p[1], EVFILT_READ, EV_DELETE, 0, 0, (void *)(uintptr_t)8);
    /* Same array for changes and events, NULL timeout: must return, not wait. */
    int n = kevent(kq, ev, 2, ev, 4, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].flags, EV_ERROR);
    assert_int_equal(ev[0].data, EBADF);
    assert_int_equal(ev[0].ident, (uintptr_t)bad[0]);
    assert_ptr_equal(ev[0].udata, (void *)(uintptr_t)7);
    assert_int_equal(ev[1].flags, EV_ERROR);
    assert_int_equal(ev[1].data, ENOENT);
    assert_ptr_equal(ev[1].udata, (void *)(uintptr_t)8);
    /* The readable pipe comes with the next call. */
    assert_int_equal(collect(kq, ev, 4), 1);
    assert_int_equal(ev[0].ident, (uintptr_t)p[0]);

    /* "Otherwise, -1 will be returned, and errno will be set". */
    EV_SET(&ev[0], (uintptr_t)bad[0], EVFILT_READ, EV_ADD, 0, 0, NULL);
    errno = 0;
    assert_int_equal(kevent(kq, ev, 1, NULL, 0, NULL), -1);
    assert_int_equal(errno, EBADF);

    /* EV_RECEIPT: an entry for every change, data 0 on success. */
    EV_SET(&ev[0], (uintptr_t)p[1], EVFILT_WRITE, EV_ADD | EV_RECEIPT, 0, 0, NULL);
    assert_int_equal(kevent(kq, ev, 1, ev, 4, NULL), 1);
    assert_true(ev[0].flags & EV_ERROR);
    assert_int_equal(ev[0].data, 0);

    /* A kqueue cannot watch itself; unknown filters and unemulated flags are refused. */
    EV_SET(&ev[0], (uintptr_t)kq, EVFILT_READ, EV_ADD, 0, 0, NULL);
    EV_SET(&ev[1], (uintptr_t)p[0], -42, EV_ADD, 0, 0, NULL);
    EV_SET(&ev[2], (uintptr_t)p[0], EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, NULL);
    assert_int_equal(kevent(kq, ev, 3, ev, 4, &zero), 3);
    assert_int_equal(ev[0].data, EINVAL);
    assert_int_equal(ev[1].data, EINVAL);
    assert_int_equal(ev[2].data, EOPNOTSUPP);

    close(kq);
    close(p[0]);
    close(p[1]);
}

/* Level-triggered, "Re-adding an existing event will modify the parameters of the original
 * event" (udata), EV_DISABLE / EV_ENABLE, EV_DELETE. */
static void test_level_and_actions(void **state)
{
    (void)state;
    int kq = kq_new(), p[2];
    struct kevent ev[4];
    pipe_nb(p);
    change(kq, p[0], EVFILT_READ, EV_ADD, (void *)(uintptr_t)1);
    assert_int_equal(collect(kq, ev, 4), 0);

    assert_int_equal(write(p[1], "x", 1), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(collect(kq, ev, 4), 1);
        assert_int_equal(ev[0].filter, EVFILT_READ);
        assert_int_equal(ev[0].flags & (EV_ERROR | EV_EOF), 0);
        assert_ptr_equal(ev[0].udata, (void *)(uintptr_t)1);
    }
    change(kq, p[0], EVFILT_READ, EV_ADD, (void *)(uintptr_t)2);
    assert_int_equal(collect(kq, ev, 4), 1);
    assert_ptr_equal(ev[0].udata, (void *)(uintptr_t)2);

    change(kq, p[0], EVFILT_READ, EV_DISABLE, NULL);
    assert_int_equal(collect(kq, ev, 4), 0);
    change(kq, p[0], EVFILT_READ, EV_ENABLE, NULL);
    assert_int_equal(collect(kq, ev, 4), 1);
    change(kq, p[0], EVFILT_READ, EV_DELETE, NULL);
    assert_int_equal(collect(kq, ev, 4), 0);

    close(kq);
    close(p[0]);
    close(p[1]);
}

/* EVFILT_READ: "When the last writer disconnects, the filter will set EV_EOF". EVFILT_WRITE:
 * "The filter will set EV_EOF when the reader disconnects". Sockets: "If the read direction of
 * the socket has shutdown, then the filter also sets EV_EOF". */
static void test_eof(void **state)
{
    (void)state;
    int kq = kq_new(), p[2], q[2], s[2];
    struct kevent ev[4];
    pipe_nb(p);
    pipe_nb(q);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s), 0);
    change(kq, p[0], EVFILT_READ, EV_ADD, NULL);
    change(kq, q[1], EVFILT_WRITE, EV_ADD, NULL);
    change(kq, s[0], EVFILT_READ, EV_ADD, NULL);
    assert_int_equal(collect(kq, ev, 4), 1); /* the empty pipe q is writable */
    assert_int_equal(ev[0].flags & EV_EOF, 0);

    close(p[1]);
    close(q[0]);
    assert_int_equal(shutdown(s[1], SHUT_WR), 0);
    assert_int_equal(collect(kq, ev, 4), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(ev[i].flags & EV_EOF);
    }

    close(kq);
    close(p[0]);
    close(q[1]);
    close(s[0]);
    close(s[1]);
}

/* "Calling close() on a file descriptor will remove any kevents that reference the descriptor":
 * a reused number is a new file without knotes. */
static void test_close_removes(void **state)
{
    (void)state;
    int kq = kq_new(), p[2], q[2];
    struct kevent ev[4];
    pipe_nb(p);
    change(kq, p[0], EVFILT_READ, EV_ADD, NULL);
    int num = p[0];
    close(p[0]);
    close(p[1]);
    pipe_nb(q);
    assert_int_equal(q[0], num);
    assert_int_equal(write(q[1], "x", 1), 1);
    assert_int_equal(collect(kq, ev, 4), 0);
    EV_SET(&ev[0], (uintptr_t)q[0], EVFILT_READ, EV_DELETE, 0, 0, NULL);
    assert_int_equal(kevent(kq, ev, 1, ev, 4, &zero), 1);
    assert_int_equal(ev[0].data, ENOENT);

    close(kq);
    close(q[0]);
    close(q[1]);
}

/* Vnodes: EVFILT_READ "Returns when the file pointer is not at the end of file ... This behavior
 * is different from poll(2)". EVFILT_WRITE is accepted and always ready (FreeBSD's vnode
 * filter). */
static void test_regular_file(void **state)
{
    (void)state;
    char path[] = "/tmp/aevt_kqemu_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, "abc", 3), 3);
    int kq = kq_new();
    struct kevent ev[4];
    change(kq, fd, EVFILT_READ, EV_ADD, NULL);
    change(kq, fd, EVFILT_WRITE, EV_ADD, NULL);
    assert_int_equal(collect(kq, ev, 4), 1); /* at the end: writable only */
    assert_int_equal(ev[0].filter, EVFILT_WRITE);
    assert_int_equal(lseek(fd, 1, SEEK_SET), 1);
    assert_int_equal(collect(kq, ev, 4), 2);
    int r = ev[0].filter == EVFILT_READ ? 0 : 1;
    assert_int_equal(ev[r].filter, EVFILT_READ);
    assert_int_equal(ev[r].data, 2);
    close(kq);
    close(fd);
}

/* The timeout is honoured: zero returns at once, a short one is waited out, not cut short. */
static void test_timeout(void **state)
{
    (void)state;
    int kq = kq_new(), p[2];
    struct kevent ev[1];
    pipe_nb(p);
    change(kq, p[0], EVFILT_READ, EV_ADD, NULL);
    struct timespec t0, t1, wait = {0, 50 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kevent(kq, NULL, 0, ev, 1, &wait), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    assert_true(ns >= 50 * 1000 * 1000);
    struct timespec bad = {0, 1000000000L};
    errno = 0;
    assert_int_equal(kevent(kq, NULL, 0, ev, 1, &bad), -1);
    assert_int_equal(errno, EINVAL);
    close(kq);
    close(p[0]);
    close(p[1]);
}

/* "The queue is not inherited by a child created with fork(2)." */
static void test_not_inherited(void **state)
{
    (void)state;
    int kq = kq_new();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kevent ev[1];
        errno = 0;
        int bad = kevent(kq, NULL, 0, ev, 1, &zero) == -1 && errno == EBADF;
        int closed = fcntl(kq, F_GETFD) == -1;
        _exit(bad && closed ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    struct kevent ev[1];
    assert_int_equal(kevent(kq, NULL, 0, ev, 1, &zero), 0); /* the parent's is intact */
    close(kq);
    errno = 0;
    assert_int_equal(kevent(kq, NULL, 0, ev, 1, &zero), -1);
    assert_int_equal(errno, EBADF);
}

static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    int n = 0;
    while (readdir(dir) != NULL) {
        n++;
    }
    closedir(dir);
    return n;
}

static bool readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

/* A kqueue is one descriptor, and a pollable one (FreeBSD's kqueue_poll): readable while an
 * enabled knote is ready, so that another loop can wait for it. */
static void test_descriptor(void **state)
{
    (void)state;
    int before = count_fds();
    int kq = kq_new(), p[2];
    assert_int_equal(count_fds(), before + 1);
    pipe_nb(p);
    change(kq, p[0], EVFILT_READ, EV_ADD, NULL);
    assert_false(readable(kq));
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_true(readable(kq));
    change(kq, p[0], EVFILT_READ, EV_DISABLE, NULL);
    assert_false(readable(kq));
    change(kq, p[0], EVFILT_READ, EV_ENABLE, NULL);
    assert_true(readable(kq));
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_false(readable(kq));
    close(kq);
    close(p[0]);
    close(p[1]);
    assert_int_equal(count_fds(), before);
}

int main(void)
{
    signal(SIGALRM, SIG_DFL);
    alarm(20);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_entries), cmocka_unit_test(test_level_and_actions),
        cmocka_unit_test(test_eof),           cmocka_unit_test(test_close_removes),
        cmocka_unit_test(test_regular_file),  cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_not_inherited), cmocka_unit_test(test_descriptor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
