/*
 * Tests of io watchers: readiness, several watchers per fd, changing events, argument errors,
 * closed and reused fds (the "disappearing fd" and dup'ed fd problems of epoll), the cost in
 * system calls, fds the kernel refuses, regular files, EOF and hang-ups, priorities, many fds and
 * fed events. Runs once per backend (AEV_BACKEND=epoll|poll).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "iotest.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* ---- epoll_ctl interposition ------------------------------------------------------------ */

/*
 * The library calls epoll_ctl through the PLT, so this definition in the executable takes its
 * place and lets the tests count the system calls the io layer makes. It forwards to the real
 * function, so the library behaves exactly as without it.
 */
typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

static epoll_ctl_fn real_epoll_ctl;
static unsigned ctl_add, ctl_mod, ctl_del;
static int ctl_watched_fd = -1; /* calls naming this fd are counted in ctl_on_watched */
static unsigned ctl_on_watched;

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (real_epoll_ctl == NULL) {
        /* memcpy: converting void * to a function pointer directly is not ISO C. */
        void *sym = dlsym(RTLD_NEXT, "epoll_ctl");
        if (sym == NULL) {
            errno = ENOSYS;
            return -1;
        }
        memcpy(&real_epoll_ctl, &sym, sizeof(sym));
    }
    if (op == EPOLL_CTL_ADD) {
        ctl_add++;
    } else if (op == EPOLL_CTL_MOD) {
        ctl_mod++;
    } else if (op == EPOLL_CTL_DEL) {
        ctl_del++;
    }
    if (fd == ctl_watched_fd) {
        ctl_on_watched++;
    }
    return real_epoll_ctl(epfd, op, fd, ev);
}

static void ctl_reset(void)
{
    ctl_add = ctl_mod = ctl_del = 0;
    ctl_watched_fd = -1;
    ctl_on_watched = 0;
}

static unsigned ctl_total(void)
{
    return ctl_add + ctl_mod + ctl_del;
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* A recording io watcher; the aev_io must stay the first member for the casts. */
typedef struct rec {
    aev_io io;
    int id;
    int calls;
    unsigned events;   /* events of the last call */
    unsigned all;      /* all events seen, ORed */
    int drain;         /* read one byte in the callback */
    int stop_self;     /* stop the watcher in the callback */
    ssize_t last_read; /* result of the read done for drain */
    bool active_in_cb;
    int err; /* aev_watcher_error() in the callback */
    aev_errop op;
} rec;

/* Order in which callbacks ran, by rec id. */
static int order_log[16];
static int order_n;

static void rec_cb(aev_watcher *w, unsigned events)
{
    rec *r = (rec *)w;
    r->calls++;
    r->events = events;
    r->all |= events;
    r->active_in_cb = aev_is_active(w);
    r->err = aev_watcher_error(w, &r->op);
    if (order_n < (int)(sizeof(order_log) / sizeof(order_log[0]))) {
        order_log[order_n++] = r->id;
    }
    if (r->drain) {
        char c;
        r->last_read = read(aev_io_fd(&r->io), &c, 1);
    }
    if (r->stop_self) {
        aev_io_stop(&r->io);
    }
}

static void rec_init(rec *r, aev_loop *loop, int fd, unsigned events)
{
    memset(r, 0, sizeof(*r));
    r->last_read = -2;
    assert_int_equal(aev_io_init(&r->io, loop, rec_cb, fd, events), 0);
}

static void rec_start(rec *r, aev_loop *loop, int fd, unsigned events)
{
    rec_init(r, loop, fd, events);
    assert_int_equal(aev_io_start(&r->io), 0);
    assert_true(aev_is_active(&r->io.base));
}

static void read_byte(int fd)
{
    char c;
    assert_int_equal(read(fd, &c, 1), 1);
}

static bool is_epoll(aev_loop *loop)
{
    return aev_backend(loop) == AEV_BACKEND_EPOLL;
}

static void skip_unless_epoll(aev_loop *loop)
{
    if (!is_epoll(loop)) {
        print_message("skipped: needs the epoll backend (this run uses %s)\n",
                      aev_backend_name(loop));
        skip();
    }
}

/* The loop's epoll fd: the only fd of this process whose link reads anon_inode:[eventpoll]. */
static int find_epoll_fd(void)
{
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    int found = -1, count = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        char path[300], target[128];
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0) {
            continue;
        }
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventpoll]") == 0) {
            found = atoi(de->d_name);
            count++;
        }
    }
    closedir(dir);
    assert_int_equal(count, 1);
    return found;
}

/* Whether the epoll fd has a registration for fd ("tfd: N" in its fdinfo). */
static bool epoll_has_fd(int epfd, int fd)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", epfd);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    bool found = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        int tfd;
        if (sscanf(line, "tfd: %d", &tfd) == 1 && tfd == fd) {
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* ---- readiness -------------------------------------------------------------------------- */

static void test_read_ready(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    make_pipe(p);
    write_byte(p[1]);
    rec_start(&r, loop, p[0], AEV_READ);

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);
    assert_true(r.active_in_cb);

    aev_io_stop(&r.io);
    close_pair(p);
}

static void test_write_ready(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec w;
    make_pipe(p);
    rec_start(&w, loop, p[1], AEV_WRITE);

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.events, AEV_WRITE);

    aev_io_stop(&w.io);
    close_pair(p);
}

static void test_read_write_both(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec rw;
    make_socketpair(s);
    write_byte(s[1]);
    rec_start(&rw, loop, s[0], AEV_READ | AEV_WRITE);

    run_nowait(loop);
    assert_int_equal(rw.calls, 1);
    assert_int_equal(rw.events, AEV_READ | AEV_WRITE);

    /* Without data only the WRITE half remains. */
    read_byte(s[0]);
    run_nowait(loop);
    assert_int_equal(rw.calls, 2);
    assert_int_equal(rw.events, AEV_WRITE);

    aev_io_stop(&rw.io);
    close_pair(s);
}

static void test_not_ready(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r, w;
    make_pipe(p);
    fill(p[1]);
    int q[2];
    make_pipe(q);
    rec_start(&r, loop, q[0], AEV_READ);  /* empty pipe: not readable */
    rec_start(&w, loop, p[1], AEV_WRITE); /* full pipe: not writable */

    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(r.calls, 0);
    assert_int_equal(w.calls, 0);

    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    close_pair(p);
    close_pair(q);
}

/* ---- several watchers on one fd --------------------------------------------------------- */

static void test_two_read_watchers(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec a, b;
    make_pipe(p);
    write_byte(p[1]);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, p[0], AEV_READ);

    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(a.events, AEV_READ);
    assert_int_equal(b.events, AEV_READ);

    aev_io_stop(&a.io);
    aev_io_stop(&b.io);
    close_pair(p);
}

static void test_read_and_write_watchers(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec r, w;
    make_socketpair(s);
    write_byte(s[1]);
    rec_start(&r, loop, s[0], AEV_READ);
    rec_start(&w, loop, s[0], AEV_WRITE);

    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(w.calls, 1);
    assert_int_equal(r.all, AEV_READ);
    assert_int_equal(w.all, AEV_WRITE);

    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    close_pair(s);
}

static void test_stop_one_keeps_other(void **state)
{
    aev_loop *loop = *state;
    int p[2], s[2];
    rec a, b, r, w;
    make_pipe(p);
    write_byte(p[1]);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, p[0], AEV_READ);
    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);

    /* Stopping one of two READ watchers: the other still sees the unread byte. */
    aev_io_stop(&a.io);
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 3);

    /* A READ and a WRITE watcher: stopping the WRITE one leaves READ alone, and vice versa. */
    make_socketpair(s);
    write_byte(s[1]);
    rec_start(&r, loop, s[0], AEV_READ);
    rec_start(&w, loop, s[0], AEV_WRITE);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(w.calls, 1);
    aev_io_stop(&w.io);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.all, AEV_READ);
    assert_int_equal(w.calls, 1);
    aev_io_stop(&r.io);
    assert_int_equal(aev_io_start(&w.io), 0);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.all, AEV_WRITE);

    aev_io_stop(&b.io);
    aev_io_stop(&w.io);
    close_pair(p);
    close_pair(s);
}

/* ---- changing what is watched ------------------------------------------------------------ */

static void test_change_events(void **state)
{
    aev_loop *loop = *state;
    int s[2], p[2];
    rec r;
    make_socketpair(s);
    rec_start(&r, loop, s[0], AEV_READ);
    run_nowait(loop);
    assert_int_equal(r.calls, 0);

    /* READ -> WRITE: a socket without data is writable only. */
    assert_int_equal(aev_io_stop(&r.io), 0);
    assert_int_equal(aev_io_set(&r.io, s[0], AEV_WRITE), 0);
    assert_int_equal(aev_io_events(&r.io), AEV_WRITE);
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_WRITE);

    /* WRITE -> READ: quiet again until data arrives. */
    aev_io_stop(&r.io);
    assert_int_equal(aev_io_set(&r.io, s[0], AEV_READ), 0);
    aev_io_start(&r.io);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    write_byte(s[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.events, AEV_READ);

    /* Another fd altogether. */
    make_pipe(p);
    write_byte(p[1]);
    aev_io_stop(&r.io);
    read_byte(s[0]);
    assert_int_equal(aev_io_set(&r.io, p[0], AEV_READ), 0);
    assert_int_equal(aev_io_fd(&r.io), p[0]);
    aev_io_start(&r.io);
    r.drain = 1;
    run_nowait(loop);
    assert_int_equal(r.calls, 3);
    assert_int_equal(r.last_read, 1);
    run_nowait(loop);
    assert_int_equal(r.calls, 3);

    aev_io_stop(&r.io);
    close_pair(s);
    close_pair(p);
}

static void test_set_while_active(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    make_pipe(p);
    rec_start(&r, loop, p[0], AEV_READ);

    assert_int_equal(aev_io_set(&r.io, p[1], AEV_WRITE), -EBUSY);
    assert_int_equal(aev_io_fd(&r.io), p[0]);
    assert_int_equal(aev_io_events(&r.io), AEV_READ);

    /* The refused set changed nothing: the watcher still watches the read end. */
    run_nowait(loop);
    assert_int_equal(r.calls, 0);
    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);

    aev_io_stop(&r.io);
    close_pair(p);
}

static void test_init_errors(void **state)
{
    aev_loop *loop = *state;
    aev_io w;
    memset(&w, 0, sizeof(w));

    assert_int_equal(aev_io_init(NULL, loop, rec_cb, 0, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_init(&w, NULL, rec_cb, 0, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, NULL, 0, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, rec_cb, -1, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, rec_cb, 0, 0), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, rec_cb, 0, AEV_READ | AEV_TIMER), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, rec_cb, 0, AEV_WRITE | AEV_ERROR), -EINVAL);
    assert_int_equal(aev_io_init(&w, loop, rec_cb, 0, 0x100), -EINVAL);

    assert_int_equal(aev_io_init(&w, loop, rec_cb, 7, AEV_WRITE), 0);
    assert_int_equal(aev_io_fd(&w), 7);
    assert_int_equal(aev_io_events(&w), AEV_WRITE);
    assert_false(aev_is_active(&w.base));
    assert_false(aev_is_pending(&w.base));

    assert_int_equal(aev_io_set(&w, 3, AEV_READ | AEV_WRITE), 0);
    assert_int_equal(aev_io_fd(&w), 3);
    assert_int_equal(aev_io_events(&w), AEV_READ | AEV_WRITE);

    /* A refused set leaves the watcher as it was. */
    assert_int_equal(aev_io_set(NULL, 3, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_set(&w, -1, AEV_READ), -EINVAL);
    assert_int_equal(aev_io_set(&w, 4, 0), -EINVAL);
    assert_int_equal(aev_io_set(&w, 4, AEV_READ | AEV_CUSTOM), -EINVAL);
    assert_int_equal(aev_io_fd(&w), 3);
    assert_int_equal(aev_io_events(&w), AEV_READ | AEV_WRITE);
}

/* ---- closed and reused fds -------------------------------------------------------------- */

/*
 * The watcher of fd A is stopped and A closed; a new pipe gets the same number. A watcher on the
 * new file must work although the kernel state of the old file may be lingering. With
 * `iterate_between`, an iteration runs between the stop and the close (so the loop may have
 * removed the old registration already); without it, stop, close, reuse and start all happen
 * before the loop looks.
 */
static void reuse_after_stop(aev_loop *loop, bool iterate_between)
{
    int p[2], q[2];
    rec a, b;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    run_nowait(loop);

    aev_io_stop(&a.io);
    if (iterate_between) {
        run_nowait(loop);
    }
    int num = p[0];
    close_pair(p);
    make_pipe(q);
    assert_int_equal(q[0], num);

    rec_start(&b, loop, q[0], AEV_READ);
    b.drain = 1;
    run_nowait(loop);
    assert_int_equal(b.calls, 0);
    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.events, AEV_READ);
    assert_int_equal(b.last_read, 1);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&b.io);
    close_pair(q);
}

static void test_reuse_fd_after_stop(void **state)
{
    reuse_after_stop(*state, false);
}

static void test_reuse_fd_after_stop_and_iteration(void **state)
{
    reuse_after_stop(*state, true);
}

/* The old watcher is still active when its fd is closed; it is stopped only after the close,
 * and a new watcher on the new file with the same number starts in the same iteration. */
static void test_reuse_fd_stop_after_close(void **state)
{
    aev_loop *loop = *state;
    int p[2], q[2];
    rec a, b;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    run_nowait(loop);

    int num = p[0];
    close_pair(p);
    make_pipe(q);
    assert_int_equal(q[0], num);
    aev_io_stop(&a.io);
    rec_start(&b, loop, q[0], AEV_READ);
    b.drain = 1;

    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.events, AEV_READ);
    assert_int_equal(b.last_read, 1);
    assert_int_equal(a.calls, 0);
    /* Drained: no more calls, and nothing for anybody else. */
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&b.io);
    close_pair(q);
}

/* Same, but the old watcher itself is re-set to the reused number and started again. */
static void test_reuse_fd_same_watcher(void **state)
{
    aev_loop *loop = *state;
    int p[2], q[2];
    rec a;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    run_nowait(loop);

    int num = p[0];
    close_pair(p);
    make_pipe(q);
    assert_int_equal(q[0], num);
    aev_io_stop(&a.io);
    assert_int_equal(aev_io_set(&a.io, q[0], AEV_READ), 0);
    assert_int_equal(aev_io_start(&a.io), 0);
    a.drain = 1;

    run_nowait(loop);
    assert_int_equal(a.calls, 0);
    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.events, AEV_READ);
    assert_int_equal(a.last_read, 1);

    aev_io_stop(&a.io);
    close_pair(q);
}

/*
 * A dup keeps the file of a closed fd open, so epoll keeps the old registration and reports its
 * readiness under the old number. The number is then reused by a new, empty pipe: its watcher
 * must not receive the old file's events, and the loop must not spin on them.
 */
static void test_dup_stale_registration(void **state)
{
    aev_loop *loop = *state;
    int p[2], q[2];
    rec a, b, c;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    run_nowait(loop);

    int num = p[0];
    int d = dup(p[0]);
    assert_true(d >= 0);
    aev_io_stop(&a.io);
    close(p[0]);
    write_byte(p[1]); /* the old file is readable from now on, through d */
    make_pipe(q);
    assert_int_equal(q[0], num);
    rec_start(&c, loop, q[0], AEV_READ);
    c.drain = 1;

    uint64_t iters = iterations_until_timer(loop, 300);
    assert_in_range(iters, 1, SPIN_LIMIT);
    assert_int_equal(c.calls, 0);
    assert_int_equal(a.calls, 0);

    /* The new file on the reused number still works... */
    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.events, AEV_READ);
    assert_int_equal(c.last_read, 1);

    /* ...and so does the dup, which still holds the byte. */
    rec_start(&b, loop, d, AEV_READ);
    b.drain = 1;
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.last_read, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&b.io);
    aev_io_stop(&c.io);
    close(d);
    close(p[1]);
    close_pair(q);
}

/* The original is stopped and closed while a watcher on the dup'ed number remains. */
static void test_dup_close_original_stopped(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec a, b;
    make_pipe(p);
    int d = dup(p[0]);
    assert_true(d >= 0);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, d, AEV_READ);
    b.drain = 1;
    run_nowait(loop);

    aev_io_stop(&a.io);
    close(p[0]);
    for (int i = 1; i <= 3; i++) {
        write_byte(p[1]);
        run_nowait(loop);
        assert_int_equal(b.calls, i);
        assert_int_equal(b.events, AEV_READ);
        assert_int_equal(b.last_read, 1);
    }
    assert_int_equal(a.calls, 0);

    uint64_t iters = iterations_until_timer(loop, 200);
    assert_in_range(iters, 1, SPIN_LIMIT);
    assert_int_equal(b.calls, 3);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&b.io);
    close(d);
    close(p[1]);
}

/*
 * The original is closed while its watcher is still active and stopped afterwards; the watcher
 * of the dup stops itself without reading, so the file stays readable and epoll keeps reporting
 * the old registration, which nobody wants any more. The loop must not spin on it.
 */
static void test_dup_close_original_active(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec a, b;
    make_pipe(p);
    int d = dup(p[0]);
    assert_true(d >= 0);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, d, AEV_READ);
    b.stop_self = 1;
    run_nowait(loop);

    close(p[0]);
    aev_io_stop(&a.io);
    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.events, AEV_READ);
    assert_false(aev_is_active(&b.io.base));
    assert_int_equal(a.calls, 0);

    uint64_t iters = iterations_until_timer(loop, 300);
    assert_in_range(iters, 1, SPIN_LIMIT);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 1);

    /* Watching the dup again reports the byte that is still there. */
    b.stop_self = 0;
    b.drain = 1;
    aev_io_start(&b.io);
    run_nowait(loop);
    assert_int_equal(b.calls, 2);
    assert_int_equal(b.last_read, 1);

    aev_io_stop(&b.io);
    close(d);
    close(p[1]);
}

/*
 * A fd watched for reading and writing loses both watchers, then gets a reader only, and only
 * then becomes writable. What the kernel may still hold from before (a stopped watcher's
 * registration is left to close()) must not bring the writer's events: the loop stays quiet, on
 * every backend (kqueue keeps one knote per direction, so the writable one must go).
 */
static void test_restart_with_fewer_events_is_quiet(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    make_socketpair(s);
    fill(s[0]);
    rec r, w;
    rec_start(&r, loop, s[0], AEV_READ);
    rec_start(&w, loop, s[0], AEV_WRITE);
    run_nowait(loop);
    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    run_nowait(loop);
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);

    static char buf[65536];
    while (read(s[1], buf, sizeof(buf)) > 0) {
    }
    uint64_t iters = iterations_until_timer(loop, 30);
    assert_int_equal(iters, 1);
    assert_int_equal(r.calls + w.calls, 0);

    r.drain = 1;
    write_byte(s[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);
    assert_int_equal(r.last_read, 1);

    aev_io_stop(&r.io);
    close_pair(s);
}

/* ---- system calls (epoll) --------------------------------------------------------------- */

/* Lets the loop register its own fds (the wakeup fd) so that the counts start from a calm
 * state. */
static void settle(aev_loop *loop)
{
    run_nowait(loop);
    run_nowait(loop);
    ctl_reset();
}

static void test_epoll_start_stop_no_syscall(void **state)
{
    aev_loop *loop = *state;
    skip_unless_epoll(loop);
    int p[2];
    rec r;
    make_pipe(p);
    write_byte(p[1]);
    settle(loop);

    rec_start(&r, loop, p[0], AEV_READ);
    aev_io_stop(&r.io);
    run_nowait(loop);
    assert_int_equal(ctl_total(), 0);
    assert_int_equal(r.calls, 0);
    assert_false(epoll_has_fd(find_epoll_fd(), p[0]));

    /* The counter does see the library's calls: a start that lasts is one ADD. */
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);
    assert_int_equal(ctl_add, 1);
    assert_int_equal(ctl_total(), 1);
    assert_true(epoll_has_fd(find_epoll_fd(), p[0]));
    assert_int_equal(r.calls, 1);

    aev_io_stop(&r.io);
    close_pair(p);
}

/*
 * The last watcher of a fd stops: the loop leaves the registration to close(), which removes it
 * anyway. It must not name the fd to the kernel again: by the next iteration the program may have
 * closed it, and another thread may have got the number for a file of its own.
 */
static void test_epoll_last_stop_leaves_removal_to_close(void **state)
{
    aev_loop *loop = *state;
    skip_unless_epoll(loop);
    int p[2];
    rec a, b;
    make_pipe(p);
    settle(loop);
    int epfd = find_epoll_fd();

    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, p[0], AEV_READ);
    run_nowait(loop);
    assert_true(epoll_has_fd(epfd, p[0]));

    /* One watcher left: the registration stays. */
    ctl_reset();
    aev_io_stop(&a.io);
    run_nowait(loop);
    assert_int_equal(ctl_total(), 0);
    assert_true(epoll_has_fd(epfd, p[0]));

    /* The last one stops and the fd is closed; its number goes to a new file the loop was not
     * told about (as if another thread had opened it). */
    int num = p[0];
    aev_io_stop(&b.io);
    close_pair(p);
    assert_false(epoll_has_fd(epfd, num)); /* close() removed it */
    int q[2];
    make_pipe(q);
    assert_int_equal(q[0], num);
    ctl_watched_fd = num;
    write_byte(q[1]);
    for (int i = 0; i < 3; i++) {
        run_nowait(loop);
    }
    assert_int_equal(ctl_on_watched, 0);
    assert_int_equal(ctl_total(), 0);
    assert_false(epoll_has_fd(epfd, num));
    assert_int_equal(a.calls + b.calls, 0);

    close_pair(q);
}

/* Epoll only: a new pipe's read end watched, registered by the loop, and the watcher stopped,
 * with the system call counters reset after the registration. Returns the loop's epoll fd. */
static int watch_then_stop(aev_loop *loop, int p[2], rec *r)
{
    skip_unless_epoll(loop);
    make_pipe(p);
    settle(loop);
    int epfd = find_epoll_fd();
    rec_start(r, loop, p[0], AEV_READ);
    run_nowait(loop);
    ctl_reset();
    aev_io_stop(&r->io);
    return epfd;
}

/*
 * The last watcher stops but the fd stays open, and readable: the registration left in place
 * reports it once, which shows the fd open; the loop then removes it (one DEL) and waits on, all
 * within one iteration: the program does not see that wakeup (AEV_RUN_ONCE returns only when
 * the timer fires).
 */
static void test_epoll_lingering_registration_removed(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    int epfd = watch_then_stop(loop, p, &r);
    ctl_watched_fd = p[0];
    write_byte(p[1]);

    uint64_t iters = iterations_until_timer(loop, 50);
    assert_int_equal(iters, 1);
    assert_int_equal(ctl_del, 1);
    assert_int_equal(ctl_on_watched, 1);
    assert_int_equal(ctl_total(), 1);
    assert_false(epoll_has_fd(epfd, p[0]));
    assert_int_equal(r.calls, 0);

    /* Watched again: registered anew, and the byte still there is reported. */
    ctl_reset();
    r.drain = 1;
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);
    assert_int_equal(ctl_add, 1);
    assert_int_equal(ctl_total(), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last_read, 1);

    aev_io_stop(&r.io);
    close_pair(p);
}

/* The watcher starts again before the registration left in place brought any event: what may
 * linger is removed, then the fd registered anew (under kqueue a knote of the other filter would
 * otherwise stay); the watcher then works as before. */
static void test_epoll_restart_over_lingering_registration(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    int epfd = watch_then_stop(loop, p, &r);
    run_nowait(loop);
    assert_true(epoll_has_fd(epfd, p[0]));

    ctl_reset();
    r.drain = 1;
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);
    assert_int_equal(ctl_del, 1);
    assert_int_equal(ctl_add, 1);
    assert_int_equal(ctl_mod, 0);
    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last_read, 1);
    uint64_t iters = iterations_until_timer(loop, 20);
    assert_in_range(iters, 1, 2);
    assert_int_equal(r.calls, 1);

    aev_io_stop(&r.io);
    close_pair(p);
}

static void test_epoll_one_add_for_two_watchers(void **state)
{
    aev_loop *loop = *state;
    skip_unless_epoll(loop);
    int p[2];
    rec a, b;
    make_pipe(p);
    settle(loop);

    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&b, loop, p[0], AEV_READ);
    run_nowait(loop);
    assert_int_equal(ctl_add, 1);
    assert_int_equal(ctl_total(), 1);

    /* Registered once, reported to both. */
    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(ctl_total(), 1);

    aev_io_stop(&a.io);
    aev_io_stop(&b.io);
    close_pair(p);
}

static void test_epoll_restart_no_syscall(void **state)
{
    aev_loop *loop = *state;
    skip_unless_epoll(loop);
    int p[2];
    rec r;
    make_pipe(p);
    settle(loop);

    rec_start(&r, loop, p[0], AEV_READ);
    run_nowait(loop);
    assert_int_equal(ctl_add, 1);

    /* Stop and start again before the loop looks: the kernel already has the right thing. */
    ctl_reset();
    aev_io_stop(&r.io);
    assert_int_equal(aev_io_start(&r.io), 0);
    run_nowait(loop);
    assert_int_equal(ctl_total(), 0);

    /* And it still works. */
    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(ctl_total(), 0);

    /* Once the registration is gone (left in place at the stop, removed when the byte still
     * in the pipe reported it), a restart must add it again. */
    aev_io_stop(&r.io);
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(ctl_del, 1);
    ctl_reset();
    aev_io_start(&r.io);
    run_nowait(loop);
    assert_int_equal(ctl_add, 1);
    assert_int_equal(r.calls, 2);

    aev_io_stop(&r.io);
    close_pair(p);
}

/* ---- fds the kernel refuses ------------------------------------------------------------- */

static void test_error_closed_fd(void **state)
{
    aev_loop *loop = *state;
    int good[2], bad[2];
    rec g, e;
    make_pipe(good);
    make_pipe(bad);
    int badfd = bad[0];
    close_pair(bad); /* nothing opens fds from here until the error arrived */

    rec_start(&e, loop, badfd, AEV_READ);
    rec_start(&g, loop, good[0], AEV_READ);
    g.drain = 1;
    write_byte(good[1]);
    run_nowait(loop);

    assert_int_equal(e.calls, 1);
    assert_true(e.events & AEV_ERROR);
    assert_false(e.active_in_cb);
    assert_int_equal(e.err, -EBADF);
    assert_int_not_equal(e.op, AEV_ERROP_NONE);
    assert_false(aev_is_active(&e.io.base));
    aev_errop op = AEV_ERROP_NONE;
    assert_int_equal(aev_watcher_error(&e.io.base, &op), -EBADF);
    assert_int_not_equal(op, AEV_ERROP_NONE);
    assert_int_equal(aev_watcher_error(&e.io.base, NULL), -EBADF);

    /* The other watcher of the loop is unaffected, now and later. */
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.events, AEV_READ);
    write_byte(good[1]);
    run_nowait(loop);
    assert_int_equal(g.calls, 2);
    assert_int_equal(g.last_read, 1);
    assert_int_equal(e.calls, 1);

    aev_io_stop(&g.io);
    close_pair(good);
}

static void test_error_cleared_by_restart(void **state)
{
    aev_loop *loop = *state;
    int bad[2], p[2];
    rec e;
    make_pipe(bad);
    int badfd = bad[0];
    close_pair(bad);
    rec_start(&e, loop, badfd, AEV_READ);
    run_nowait(loop);
    assert_int_equal(e.calls, 1);
    assert_true(e.events & AEV_ERROR);
    assert_int_equal(aev_watcher_error(&e.io.base, NULL), -EBADF);

    make_pipe(p);
    assert_int_equal(aev_io_set(&e.io, p[0], AEV_READ), 0);
    assert_int_equal(aev_io_start(&e.io), 0);
    aev_errop op = AEV_ERROP_POLL;
    assert_int_equal(aev_watcher_error(&e.io.base, &op), 0);
    assert_int_equal(op, AEV_ERROP_NONE);

    write_byte(p[1]);
    run_nowait(loop);
    assert_int_equal(e.calls, 2);
    assert_int_equal(e.events, AEV_READ);
    assert_int_equal(e.err, 0);
    assert_true(e.active_in_cb);

    aev_io_stop(&e.io);
    close_pair(p);
}

/* epoll refuses to watch an epoll fd in itself (EINVAL). */
static void test_error_epoll_self(void **state)
{
    aev_loop *loop = *state;
    skip_unless_epoll(loop);
    settle(loop);
    int epfd = find_epoll_fd();
    rec e;
    rec_start(&e, loop, epfd, AEV_READ);
    run_nowait(loop);
    assert_int_equal(e.calls, 1);
    assert_true(e.events & AEV_ERROR);
    assert_false(aev_is_active(&e.io.base));
    assert_int_equal(e.err, -EINVAL);
    assert_int_not_equal(e.op, AEV_ERROP_NONE);
    run_nowait(loop);
    assert_int_equal(e.calls, 1);
}

/* ---- regular files ---------------------------------------------------------------------- */

static int temp_file(void)
{
    char path[] = "/tmp/aevt_io_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static void test_regular_file_always_ready(void **state)
{
    aev_loop *loop = *state;
    int fd = temp_file();
    rec r, w, rw;
    rec_start(&r, loop, fd, AEV_READ);
    rec_start(&w, loop, fd, AEV_WRITE);
    rec_start(&rw, loop, fd, AEV_READ | AEV_WRITE);

    for (int i = 1; i <= 5; i++) {
        run_nowait(loop);
        assert_int_equal(r.calls, i);
        assert_int_equal(w.calls, i);
        assert_int_equal(rw.calls, i);
    }
    assert_int_equal(r.all, AEV_READ);
    assert_int_equal(w.all, AEV_WRITE);
    assert_int_equal(rw.all, AEV_READ | AEV_WRITE);
    assert_int_equal(rw.events, AEV_READ | AEV_WRITE);

    /* Stopped watchers are not reported any more; a restarted one is again. */
    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    aev_io_stop(&rw.io);
    run_nowait(loop);
    assert_int_equal(r.calls, 5);
    assert_int_equal(w.calls, 5);
    assert_int_equal(rw.calls, 5);
    aev_io_start(&r.io);
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(r.calls, 7);
    assert_int_equal(w.calls, 5);

    aev_io_stop(&r.io);
    close(fd);
}

static void nop_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

/*
 * Every fd number below 64 changed in one iteration, many of them refused by the kernel (not
 * open): the change list has exactly one slot per fd of the table, so a refused fd must not be
 * listed a second time while its watchers are failed (found by reading; ASan sees the overflow).
 */
static void test_flush_every_fd_some_refused(void **state)
{
    aev_loop *loop = *state;
    enum { N = 64 };
    aev_io *w = calloc(N, sizeof *w);
    assert_non_null(w);
    int refused = 0, skipped = 0;
    for (int fd = 0; fd < N; fd++) {
        char path[32], target[64] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        /* The loop's own epoll fd and eventfds (and the kqueue emulation's) are left alone. */
        if (n > 0 && strncmp(target, "anon_inode:", 11) == 0) {
            skipped++;
            continue;
        }
        if (n < 0)
            refused++;
        assert_int_equal(aev_io_init(&w[fd], loop, nop_cb, fd, AEV_READ), 0);
        assert_int_equal(aev_io_start(&w[fd]), 0);
    }
    /* More re-listings than free slots: the overflow this guards against would happen. */
    assert_true(refused > skipped);
    int rc = aev_run(loop, AEV_RUN_NOWAIT);
    if (rc < 0)
        fail_msg("aev_run: %s", aev_strerror(rc));
    int failed = 0;
    for (int fd = 0; fd < N; fd++) {
        if (!aev_watcher_loop(&w[fd].base))
            continue; /* skipped above */
        if (aev_watcher_error(&w[fd].base, NULL) == -EBADF)
            failed++;
        assert_int_equal(aev_io_stop(&w[fd]), 0);
    }
    /* On poll(2) the closed ones fail at the poll itself; either way each was reported. */
    assert_int_equal(failed, refused);
    rc = aev_run(loop, AEV_RUN_NOWAIT);
    if (rc < 0)
        fail_msg("aev_run after the stops: %s", aev_strerror(rc));
    free(w);
}

static void test_regular_file_no_block(void **state)
{
    aev_loop *loop = *state;
    int fd = temp_file();
    rec r;
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, loop, nop_cb, AEV_SEC(5), 0), 0);
    assert_int_equal(aev_timer_start(&t), 0);
    rec_start(&r, loop, fd, AEV_READ);

    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    aev_time_t elapsed = aev_time() - t0;
    assert_int_equal(r.calls, 1);
    assert_true(elapsed < AEV_SEC(2));

    aev_io_stop(&r.io);
    aev_timer_stop(&t);
    close(fd);
}

/* ---- EOF and hang-ups ------------------------------------------------------------------- */

static void test_pipe_eof(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    make_pipe(p);
    rec_start(&r, loop, p[0], AEV_READ);
    r.drain = 1;
    run_nowait(loop);
    assert_int_equal(r.calls, 0);

    close(p[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_true(r.events & AEV_READ);
    assert_int_equal(r.events & ~(unsigned)AEV_READ, 0);
    assert_int_equal(r.last_read, 0);

    aev_io_stop(&r.io);
    close(p[0]);
}

static void test_socket_peer_closed(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec r;
    make_socketpair(s);
    rec_start(&r, loop, s[0], AEV_READ);
    r.drain = 1;
    run_nowait(loop);
    assert_int_equal(r.calls, 0);

    close(s[1]);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);
    assert_int_equal(r.last_read, 0);

    aev_io_stop(&r.io);
    close(s[0]);
}

static void test_pipe_write_broken(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec w;
    make_pipe(p);
    fill(p[1]);
    rec_start(&w, loop, p[1], AEV_WRITE);
    run_nowait(loop);
    assert_int_equal(w.calls, 0);

    close(p[0]);
    run_nowait(loop);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.events, AEV_WRITE);
    errno = 0;
    assert_int_equal(write(p[1], "x", 1), -1);
    assert_int_equal(errno, EPIPE);

    aev_io_stop(&w.io);
    close(p[1]);
}

/* ---- priorities ------------------------------------------------------------------------- */

/* Two ready pipes; the high-priority watcher must run first whichever was started first. */
static void priority_case(aev_loop *loop, bool high_first)
{
    int p[2], q[2];
    rec lo, hi;
    make_pipe(p);
    make_pipe(q);
    write_byte(p[1]);
    write_byte(q[1]);
    /* The high-priority watcher gets the higher fd when started last, so that neither fd order
     * nor start order can produce the expected result by accident. */
    rec_init(&lo, loop, high_first ? q[0] : p[0], AEV_READ);
    rec_init(&hi, loop, high_first ? p[0] : q[0], AEV_READ);
    lo.id = 1;
    hi.id = 2;
    lo.drain = hi.drain = 1;
    assert_int_equal(aev_set_priority(&lo.io.base, -1), 0);
    assert_int_equal(aev_set_priority(&hi.io.base, 1), 0);
    if (high_first) {
        aev_io_start(&hi.io);
        aev_io_start(&lo.io);
    } else {
        aev_io_start(&lo.io);
        aev_io_start(&hi.io);
    }

    order_n = 0;
    run_nowait(loop);
    assert_int_equal(order_n, 2);
    assert_int_equal(order_log[0], 2);
    assert_int_equal(order_log[1], 1);

    aev_io_stop(&lo.io);
    aev_io_stop(&hi.io);
    close_pair(p);
    close_pair(q);
}

static void test_priorities(void **state)
{
    priority_case(*state, false);
    priority_case(*state, true);
}

/* ---- many fds --------------------------------------------------------------------------- */

#define MANY_PAIRS 2000
#define MANY_READY 100

static int many_fds[MANY_PAIRS][2];
static rec many_recs[MANY_PAIRS];
static bool many_chosen[MANY_PAIRS];

/* Raises the soft fd limit to the hard one; false if that is still too low for n fds. */
static bool raise_fd_limit(rlim_t n)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < n && rl.rlim_max != rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= n;
}

static void choose_ready(unsigned seed)
{
    static int idx[MANY_PAIRS];
    for (int i = 0; i < MANY_PAIRS; i++) {
        idx[i] = i;
        many_chosen[i] = false;
    }
    srand(seed);
    for (int i = 0; i < MANY_READY; i++) {
        int j = i + rand() % (MANY_PAIRS - i);
        int tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
        many_chosen[idx[i]] = true;
    }
}

static int many_fired(void)
{
    int n = 0;
    for (int i = 0; i < MANY_PAIRS; i++) {
        n += many_recs[i].calls;
    }
    return n;
}

static void test_many_fds(void **state)
{
    aev_loop *loop = *state;
    if (!raise_fd_limit(2 * MANY_PAIRS + 64)) {
        print_message("skipped: RLIMIT_NOFILE too low for %d fds\n", 2 * MANY_PAIRS + 64);
        skip();
    }
    unsigned seed = (unsigned)time(NULL);
    print_message("many fds: seed %u\n", seed);
    choose_ready(seed);

    for (int i = 0; i < MANY_PAIRS; i++) {
        make_socketpair(many_fds[i]);
        rec_start(&many_recs[i], loop, many_fds[i][0], AEV_READ);
        many_recs[i].id = i;
        many_recs[i].drain = 1;
    }
    run_nowait(loop);
    assert_int_equal(many_fired(), 0);

    for (int i = 0; i < MANY_PAIRS; i++) {
        if (many_chosen[i]) {
            write_byte(many_fds[i][1]);
        }
    }
    for (int iter = 0; iter < 50 && many_fired() < MANY_READY; iter++) {
        run_nowait(loop);
    }
    /* A few more iterations: nothing may come late or twice. */
    run_nowait(loop);
    run_nowait(loop);

    for (int i = 0; i < MANY_PAIRS; i++) {
        if (many_chosen[i]) {
            assert_int_equal(many_recs[i].calls, 1);
            assert_int_equal(many_recs[i].events, AEV_READ);
            assert_int_equal(many_recs[i].last_read, 1);
        } else {
            assert_int_equal(many_recs[i].calls, 0);
        }
    }
    assert_int_equal(many_fired(), MANY_READY);

    for (int i = 0; i < MANY_PAIRS; i++) {
        aev_io_stop(&many_recs[i].io);
        close_pair(many_fds[i]);
    }
}

/* ---- fed events ------------------------------------------------------------------------- */

static void test_feed_event(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec a, b;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    run_nowait(loop);
    assert_int_equal(a.calls, 0);

    /* Events the fd does not have (a read end is never writable) arrive as fed. */
    assert_int_equal(aev_feed_event(&a.io.base, AEV_WRITE | AEV_CUSTOM), 0);
    assert_true(aev_is_pending(&a.io.base));
    run_nowait(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.events, AEV_WRITE | AEV_CUSTOM);
    assert_true(a.active_in_cb);
    run_nowait(loop);
    assert_int_equal(a.calls, 1);

    /* An inactive watcher receives fed events too, and stays inactive. */
    rec_init(&b, loop, p[0], AEV_READ);
    assert_int_equal(aev_feed_event(&b.io.base, AEV_READ), 0);
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.events, AEV_READ);
    assert_false(b.active_in_cb);
    assert_int_equal(a.calls, 1);

    assert_int_equal(aev_feed_event(&b.io.base, 0), -EINVAL);

    aev_io_stop(&a.io);
    close_pair(p);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, aevt_setup, aevt_teardown)

int main(void)
{
    aevt_watchdog(20);
    /* A write to a pipe without reader must fail with EPIPE rather than kill the test. */
    signal(SIGPIPE, SIG_IGN);

    const struct CMUnitTest tests[] = {
        T(test_read_ready),
        T(test_write_ready),
        T(test_read_write_both),
        T(test_not_ready),
        T(test_two_read_watchers),
        T(test_read_and_write_watchers),
        T(test_stop_one_keeps_other),
        T(test_change_events),
        T(test_set_while_active),
        T(test_init_errors),
        T(test_reuse_fd_after_stop),
        T(test_reuse_fd_after_stop_and_iteration),
        T(test_reuse_fd_stop_after_close),
        T(test_reuse_fd_same_watcher),
        T(test_dup_stale_registration),
        T(test_dup_close_original_stopped),
        T(test_dup_close_original_active),
        T(test_restart_with_fewer_events_is_quiet),
        T(test_epoll_start_stop_no_syscall),
        T(test_epoll_last_stop_leaves_removal_to_close),
        T(test_epoll_lingering_registration_removed),
        T(test_epoll_restart_over_lingering_registration),
        T(test_epoll_one_add_for_two_watchers),
        T(test_epoll_restart_no_syscall),
        T(test_flush_every_fd_some_refused),
        T(test_error_closed_fd),
        T(test_error_cleared_by_restart),
        T(test_error_epoll_self),
        T(test_regular_file_always_ready),
        T(test_regular_file_no_block),
        T(test_pipe_eof),
        T(test_socket_peer_closed),
        T(test_pipe_write_broken),
        T(test_priorities),
        T(test_many_fds),
        T(test_feed_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
