/*
 * Conformance: the cases where event-loop backends have historically differed, written once and
 * run on every backend (AEV_BACKEND=epoll|poll|kqueue; on Linux, kqueue is the user-space
 * emulation in tests/kqueue_emu). Each test states what every backend must do:
 *  - a fd closed while watched whose number is reused by another file (the new file is told to
 *    the loop with aev_io_set() or aev_io_init(), the documented rule);
 *  - a dup'ed fd watched while the original is closed;
 *  - regular files: always ready for READ and WRITE, as poll(2) reports them (epoll refuses them,
 *    kqueue reports a file at its end as not readable);
 *  - EOF and hang-ups on pipes and sockets;
 *  - a fd that is not open: AEV_ERROR with -EBADF (epoll refuses it at once, poll reports
 *    POLLNVAL, kqueue returns an EV_ERROR entry with the next wait);
 *  - fd numbers above 1024, and 100,000 watchers on 50,000 socketpairs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "iotest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* ---- helpers ---------------------------------------------------------------------------- */

/* A recording io watcher; the aev_io must stay the first member for the casts. */
typedef struct rec {
    aev_io io;
    int calls;
    unsigned events; /* of the last call */
    unsigned all;    /* all events seen, ORed */
    int drain;       /* read one byte in the callback */
    ssize_t last_read;
    bool active_in_cb;
    int err; /* aev_watcher_error() in the callback */
    aev_errop op;
} rec;

static void rec_cb(aev_watcher *w, unsigned events)
{
    rec *r = (rec *)w;
    r->calls++;
    r->events = events;
    r->all |= events;
    r->active_in_cb = aev_is_active(w);
    r->err = aev_watcher_error(w, &r->op);
    if (r->drain) {
        char c;
        r->last_read = read(aev_io_fd(&r->io), &c, 1);
    }
}

static void rec_start(rec *r, aev_loop *loop, int fd, unsigned events)
{
    memset(r, 0, sizeof(*r));
    r->last_read = -2;
    assert_int_equal(aev_io_init(&r->io, loop, rec_cb, fd, events), 0);
    assert_int_equal(aev_io_start(&r->io), 0);
}

/* Points a stopped watcher at another fd (the rule after a number was reused) and restarts it. */
static void rec_restart(rec *r, int fd, unsigned events)
{
    assert_int_equal(aev_io_stop(&r->io), 0);
    assert_int_equal(aev_io_set(&r->io, fd, events), 0);
    assert_int_equal(aev_io_start(&r->io), 0);
    r->calls = 0;
    r->events = r->all = 0;
}

static int temp_file(const char *content)
{
    char path[] = "/tmp/aevt_conf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void flag_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    *(int *)w->data = 1;
}

/* Raises the soft RLIMIT_NOFILE towards n fds: to the hard limit, and beyond it where this
 * process is allowed to (CAP_SYS_RESOURCE). Returns the soft limit now in force. */
static rlim_t fd_limit_raise(rlim_t n)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < n) {
        struct rlimit want = rl;
        want.rlim_cur = n;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n) {
            want.rlim_max = n;
        }
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            want.rlim_cur = rl.rlim_max;
            want.rlim_max = rl.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &want);
        }
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    return rl.rlim_cur;
}

/* fd_limit_raise(n), and whether that covers n; if not, says why the test is skipped. */
static bool fd_limit_at_least(rlim_t n)
{
    rlim_t got = fd_limit_raise(n);
    if (got == RLIM_INFINITY || got >= n) {
        return true;
    }
    print_message("skipped: RLIMIT_NOFILE is %llu and cannot be raised to %llu here (raising the "
                  "hard limit needs CAP_SYS_RESOURCE)\n",
                  (unsigned long long)got, (unsigned long long)n);
    return false;
}

/* ---- a fd closed while watched, its number reused ----------------------------------------- */

enum { REUSE_PIPE, REUSE_SOCKET, REUSE_FILE };

/* Opens something of `kind` that must land on fd number `num` (the lowest free one). Returns the
 * fd; *peer is the other end, or -1 for a file. */
static int open_on(int kind, int num, int *peer)
{
    int p[2];
    *peer = -1;
    if (kind == REUSE_FILE) {
        p[0] = temp_file("data");
    } else {
        if (kind == REUSE_PIPE) {
            make_pipe(p);
        } else {
            make_socketpair(p);
        }
        *peer = p[1];
    }
    assert_int_equal(p[0], num);
    return p[0];
}

/*
 * Watcher a watches the read end of a pipe and the loop has registered it. Both ends are closed
 * while a is active, and the number is taken by a new file of `kind` before the loop looks again.
 * a is stopped, re-set to the new file (with `events`) and restarted, the documented rule. It
 * must then see the new file's state and nothing of the old one.
 */
static void reuse_case(aev_loop *loop, int kind, unsigned events)
{
    int p[2], peer;
    rec a;
    make_pipe(p);
    rec_start(&a, loop, p[0], AEV_READ);
    write_byte(p[1]); /* the old file is readable: none of that may reach the new one */
    run_nowait(loop);
    assert_int_equal(a.calls, 1);

    int num = p[0];
    close_pair(p);
    int fd = open_on(kind, num, &peer);
    rec_restart(&a, fd, events);
    a.drain = 1;

    run_nowait(loop);
    if (kind == REUSE_FILE) {
        /* A file is ready for everything asked, every iteration. */
        assert_int_equal(a.calls, 1);
        assert_int_equal(a.events, events);
        run_nowait(loop);
        assert_int_equal(a.calls, 2);
        assert_int_equal(a.events, events);
    } else {
        /* Empty: writable at most. */
        assert_int_equal(a.calls, (events & AEV_WRITE) && kind == REUSE_SOCKET ? 1 : 0);
        assert_int_equal(a.all & AEV_READ, 0);
        int before = a.calls;
        write_byte(peer);
        run_nowait(loop);
        assert_int_equal(a.calls, before + 1);
        assert_true(a.events & AEV_READ);
        assert_int_equal(a.last_read, 1);
        assert_int_equal(a.all & AEV_ERROR, 0);
    }

    aev_io_stop(&a.io);
    close(fd);
    if (peer >= 0) {
        close(peer);
    }
}

static void test_closed_while_watched_reused_by_pipe(void **state)
{
    reuse_case(*state, REUSE_PIPE, AEV_READ);
}

static void test_closed_while_watched_reused_by_socket(void **state)
{
    reuse_case(*state, REUSE_SOCKET, AEV_READ | AEV_WRITE);
}

static void test_closed_while_watched_reused_by_file(void **state)
{
    reuse_case(*state, REUSE_FILE, AEV_READ | AEV_WRITE);
}

/* A new watcher (aev_io_init) on the reused number, the old one stopped only afterwards. */
static void test_closed_while_watched_new_watcher(void **state)
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
    rec_start(&b, loop, q[0], AEV_READ);
    aev_io_stop(&a.io);
    b.drain = 1;

    run_nowait(loop);
    assert_int_equal(b.calls, 0);
    write_byte(q[1]);
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.events, AEV_READ);
    assert_int_equal(b.last_read, 1);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&b.io);
    close_pair(q);
}

/* Stopping a watcher and closing its fd before the loop runs again fails nothing: the
 * registration the backend still holds is removed quietly, and other watchers keep working. */
static void test_stop_close_iterate(void **state)
{
    aev_loop *loop = *state;
    int p[2], q[2];
    rec a, g;
    make_pipe(p);
    make_pipe(q);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&g, loop, q[0], AEV_READ);
    g.drain = 1;
    run_nowait(loop);

    aev_io_stop(&a.io);
    close_pair(p);
    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.events, AEV_READ);
    assert_int_equal(g.err, 0);
    assert_int_equal(a.calls, 0);
    assert_in_range(iterations_until_timer(loop, 100), 1, SPIN_LIMIT);
    assert_int_equal(g.calls, 1);

    aev_io_stop(&g.io);
    close_pair(q);
}

/* ---- dup'ed fds ------------------------------------------------------------------------- */

/* The dup is watched only after the original was closed. */
static void test_dup_watched_after_original_closed(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec d;
    make_pipe(p);
    int dupfd = dup(p[0]);
    assert_true(dupfd >= 0);
    close(p[0]);
    rec_start(&d, loop, dupfd, AEV_READ);
    d.drain = 1;

    run_nowait(loop);
    assert_int_equal(d.calls, 0);
    for (int i = 1; i <= 3; i++) {
        write_byte(p[1]);
        run_nowait(loop);
        assert_int_equal(d.calls, i);
        assert_int_equal(d.events, AEV_READ);
        assert_int_equal(d.last_read, 1);
    }
    assert_in_range(iterations_until_timer(loop, 100), 1, SPIN_LIMIT);
    assert_int_equal(d.calls, 3);

    aev_io_stop(&d.io);
    close(dupfd);
    close(p[1]);
}

/*
 * Original and dup both watched; the original's watcher is stopped and the original closed. The
 * dup's watcher goes on receiving exactly the file's events, the loop does not spin on the old
 * registration, and a new pipe on the original's number sees none of the old file's data.
 */
static void test_dup_watched_while_original_closed(void **state)
{
    aev_loop *loop = *state;
    int p[2], q[2];
    rec a, d, n;
    make_pipe(p);
    int dupfd = dup(p[0]);
    assert_true(dupfd >= 0);
    rec_start(&a, loop, p[0], AEV_READ);
    rec_start(&d, loop, dupfd, AEV_READ);
    d.drain = 1;
    run_nowait(loop);

    aev_io_stop(&a.io);
    int num = p[0];
    close(p[0]);
    for (int i = 1; i <= 3; i++) {
        write_byte(p[1]);
        run_nowait(loop);
        assert_int_equal(d.calls, i);
        assert_int_equal(d.events, AEV_READ);
        assert_int_equal(d.last_read, 1);
    }
    assert_in_range(iterations_until_timer(loop, 100), 1, SPIN_LIMIT);

    make_pipe(q);
    assert_int_equal(q[0], num);
    rec_start(&n, loop, q[0], AEV_READ);
    n.drain = 1;
    write_byte(p[1]); /* for the dup only */
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(d.calls, 4);
    assert_int_equal(n.calls, 0);
    write_byte(q[1]);
    run_nowait(loop);
    assert_int_equal(n.calls, 1);
    assert_int_equal(n.last_read, 1);
    assert_int_equal(d.calls, 4);
    assert_int_equal(a.calls, 0);

    aev_io_stop(&d.io);
    aev_io_stop(&n.io);
    close(dupfd);
    close(p[1]);
    close_pair(q);
}

/* ---- regular files ---------------------------------------------------------------------- */

/* READ and WRITE every iteration, at the start of the file, at its end (where kqueue's read
 * filter would say "not readable") and when empty; the loop never blocks on them. */
static void test_regular_file_always_ready(void **state)
{
    aev_loop *loop = *state;
    int fd = temp_file("0123456789");
    int empty = temp_file("");
    rec r, w, rw, e;
    rec_start(&r, loop, fd, AEV_READ);
    rec_start(&w, loop, fd, AEV_WRITE);
    rec_start(&rw, loop, fd, AEV_READ | AEV_WRITE);
    rec_start(&e, loop, empty, AEV_READ);

    for (int i = 1; i <= 3; i++) {
        run_nowait(loop);
        assert_int_equal(r.calls, i);
        assert_int_equal(w.calls, i);
        assert_int_equal(rw.calls, i);
        assert_int_equal(e.calls, i);
        assert_int_equal(r.events, AEV_READ);
        assert_int_equal(w.events, AEV_WRITE);
        assert_int_equal(rw.events, AEV_READ | AEV_WRITE);
        assert_int_equal(e.events, AEV_READ);
    }
    /* At the end of the file. */
    assert_int_equal(lseek(fd, 0, SEEK_END), 10);
    run_nowait(loop);
    assert_int_equal(r.calls, 4);
    assert_int_equal(rw.events, AEV_READ | AEV_WRITE);

    /* A pending timer far away does not make the loop sleep. */
    aev_timer t;
    int fired = 0;
    assert_int_equal(aev_timer_init(&t, loop, flag_cb, AEV_SEC(5), 0), 0);
    t.base.data = &fired;
    assert_int_equal(aev_timer_start(&t), 0);
    aev_time_t t0 = aev_time();
    assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_true(aev_time() - t0 < AEV_SEC(2));
    assert_int_equal(r.calls, 5);
    aev_timer_stop(&t);

    /* Stopped, they are quiet. */
    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    aev_io_stop(&rw.io);
    aev_io_stop(&e.io);
    run_nowait(loop);
    assert_int_equal(r.calls, 5);
    assert_int_equal(e.calls, 5);
    close(fd);
    close(empty);
}

/* Directories are treated like regular files on every backend. */
static void test_directory_always_ready(void **state)
{
    aev_loop *loop = *state;
    int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    rec r;
    rec_start(&r, loop, fd, AEV_READ);
    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.events, AEV_READ);
    aev_io_stop(&r.io);
    close(fd);
}

/* ---- EOF and hang-ups ------------------------------------------------------------------- */

/* The reader of a pipe whose writer closes gets READ (and read() returns the data, then 0). */
static void test_pipe_writer_closes(void **state)
{
    aev_loop *loop = *state;
    int p[2];
    rec r;
    make_pipe(p);
    rec_start(&r, loop, p[0], AEV_READ);
    r.drain = 1;
    write_byte(p[1]);
    close(p[1]);

    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);
    assert_int_equal(r.last_read, 1);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.events, AEV_READ);
    assert_int_equal(r.last_read, 0);

    aev_io_stop(&r.io);
    close(p[0]);
}

/* A writer blocked on a full socket whose peer closes (unread data and all, which resets the
 * connection) gets WRITE, and its write() then fails. */
static void test_socket_peer_closes_writer(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec w;
    make_socketpair(s);
    fill(s[0]);
    rec_start(&w, loop, s[0], AEV_WRITE);
    run_nowait(loop);
    assert_int_equal(w.calls, 0);

    close(s[1]);
    run_nowait(loop);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.events, AEV_WRITE);
    errno = 0;
    assert_int_equal(write(s[0], "x", 1), -1);
    assert_true(errno == EPIPE || errno == ECONNRESET);

    aev_io_stop(&w.io);
    close(s[0]);
}

/* The peer shuts down only its writing side: READ with read() == 0, and the socket stays
 * writable (WRITE keeps coming, nothing else). */
static void test_socket_half_close(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec r, w;
    make_socketpair(s);
    rec_start(&r, loop, s[0], AEV_READ);
    rec_start(&w, loop, s[0], AEV_WRITE);
    r.drain = 1;
    run_nowait(loop);
    assert_int_equal(r.calls, 0);
    assert_int_equal(w.calls, 1);

    assert_int_equal(shutdown(s[1], SHUT_WR), 0);
    run_nowait(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, AEV_READ);
    assert_int_equal(r.last_read, 0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.all, AEV_WRITE);
    write_byte(s[0]);
    char c;
    assert_int_equal(read(s[1], &c, 1), 1);

    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    close_pair(s);
}

/* The same half-close with the reader's own send buffer full: the EOF on the reading side must
 * not wake its writer, which still cannot write (a backend that reported every EOF as
 * READ|WRITE would wake it on every iteration). */
static void test_socket_half_close_blocked_writer(void **state)
{
    aev_loop *loop = *state;
    int s[2];
    rec r, w;
    make_socketpair(s);
    fill(s[0]);
    rec_start(&r, loop, s[0], AEV_READ);
    rec_start(&w, loop, s[0], AEV_WRITE);
    r.drain = 1;
    assert_int_equal(shutdown(s[1], SHUT_WR), 0);

    run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.all, AEV_READ);
    assert_int_equal(r.last_read, 0);
    assert_int_equal(w.calls, 0);

    /* Once the peer reads, the writer can go on. */
    static char buf[65536];
    while (read(s[1], buf, sizeof(buf)) > 0) {
    }
    run_nowait(loop);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.events, AEV_WRITE);

    aev_io_stop(&r.io);
    aev_io_stop(&w.io);
    close_pair(s);
}

/* ---- fds that are not open -------------------------------------------------------------- */

/*
 * Watchers started on a closed fd number all fail within the next iteration: AEV_ERROR, -EBADF,
 * an operation recorded, stopped, and never called again. A watcher of another fd is served in
 * that same iteration and afterwards.
 */
static void test_closed_fd_fails(void **state)
{
    aev_loop *loop = *state;
    int bad[2], good[2];
    rec e1, e2, g;
    make_pipe(good);
    make_pipe(bad);
    int badfd = bad[0];
    close_pair(bad); /* nothing opens fds from here until the errors arrived */
    rec_start(&e1, loop, badfd, AEV_READ);
    rec_start(&e2, loop, badfd, AEV_READ | AEV_WRITE);
    rec_start(&g, loop, good[0], AEV_READ);
    g.drain = 1;
    write_byte(good[1]);

    run_nowait(loop);
    rec *errs[] = {&e1, &e2};
    for (int i = 0; i < 2; i++) {
        rec *e = errs[i];
        assert_int_equal(e->calls, 1);
        assert_int_equal(e->events, AEV_ERROR);
        assert_int_equal(e->err, -EBADF);
        assert_int_not_equal(e->op, AEV_ERROP_NONE);
        assert_false(e->active_in_cb);
        assert_false(aev_is_active(&e->io.base));
        assert_int_equal(aev_watcher_error(&e->io.base, NULL), -EBADF);
    }
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.events, AEV_READ);
    assert_int_equal(g.last_read, 1);

    write_byte(good[1]);
    run_nowait(loop);
    assert_int_equal(g.calls, 2);
    assert_in_range(iterations_until_timer(loop, 100), 1, SPIN_LIMIT);
    assert_int_equal(e1.calls, 1);
    assert_int_equal(e2.calls, 1);
    assert_int_equal(g.calls, 2);

    aev_io_stop(&g.io);
    close_pair(good);
}

/* ---- many fds --------------------------------------------------------------------------- */

/* Moves fd to the lowest free number at or above min (closing the original). */
static int move_fd(int fd, int min)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, min);
    assert_true(high >= min);
    close(fd);
    return high;
}

/* fd numbers past FD_SETSIZE (1024), and far past it, watched and firing. */
static void test_fd_numbers_above_1024(void **state)
{
    aev_loop *loop = *state;
    static const int where[] = {1024, 1025, 2047, 2048, 4095, 4100};
    enum { N = sizeof(where) / sizeof(where[0]) };
    if (!fd_limit_at_least(4200)) {
        skip();
    }
    int rd[N], wr[N];
    rec r[N], w;
    for (int i = 0; i < N; i++) {
        int p[2];
        make_pipe(p);
        rd[i] = move_fd(p[0], where[i]);
        wr[i] = move_fd(p[1], 4096 + 8 * i);
        assert_true(rd[i] >= where[i]);
        rec_start(&r[i], loop, rd[i], AEV_READ);
        r[i].drain = 1;
    }
    rec_start(&w, loop, wr[N - 1], AEV_WRITE);
    run_nowait(loop);
    assert_int_equal(w.calls, 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 0);
    }
    /* Every other pipe gets a byte: exactly those fire. */
    for (int i = 0; i < N; i += 2) {
        write_byte(wr[i]);
    }
    run_nowait(loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, i % 2 == 0 ? 1 : 0);
        if (i % 2 == 0) {
            assert_int_equal(r[i].events, AEV_READ);
            assert_int_equal(r[i].last_read, 1);
        }
    }
    for (int i = 0; i < N; i++) {
        aev_io_stop(&r[i].io);
        close(rd[i]);
        close(wr[i]);
    }
    aev_io_stop(&w.io);
}

#define BIG_PAIRS 50000
#define BIG_WATCHERS (2 * BIG_PAIRS)
#define BIG_WRITES 1000
#define BIG_ROUNDS 2
/* Pairs of the smaller run, and the fewest that still make it worth running. */
#define MID_PAIRS 10000
#define MID_MIN_PAIRS 1000
/* fds the process holds besides the pairs (stdio, the loop's, cmocka's), with a margin. */
#define FD_SLACK 256

/* One watcher per socket end: watcher i watches end i (pair i / 2, side i % 2). */
typedef struct big_rec {
    aev_io io;
    unsigned calls;
    unsigned events;
    ssize_t last_read;
} big_rec;

static int big_fds[BIG_WATCHERS];
static big_rec big_recs[BIG_WATCHERS];
static bool big_written[BIG_WATCHERS]; /* a byte was written into end i (for its peer) */

static void big_cb(aev_watcher *w, unsigned events)
{
    big_rec *r = (big_rec *)w;
    char c;
    r->calls++;
    r->events = events;
    r->last_read = read(aev_io_fd(&r->io), &c, 1);
}

static uint32_t xorshift32(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static unsigned big_fired(int nwatchers)
{
    unsigned n = 0;
    for (int i = 0; i < nwatchers; i++) {
        n += big_recs[i].calls;
    }
    return n;
}

/* Writes one byte into BIG_WRITES distinct random ends; their peers, and only they, must fire. */
static void big_round(aev_loop *loop, int nwatchers, uint32_t *seed)
{
    memset(big_written, 0, sizeof(big_written));
    for (int i = 0; i < nwatchers; i++) {
        big_recs[i].calls = 0;
    }
    for (int n = 0; n < BIG_WRITES;) {
        int end = (int)(xorshift32(seed) % (uint32_t)nwatchers);
        if (!big_written[end]) {
            big_written[end] = true;
            write_byte(big_fds[end]);
            n++;
        }
    }
    for (int iter = 0; iter < 20 && big_fired(nwatchers) < BIG_WRITES; iter++) {
        run_nowait(loop);
    }
    run_nowait(loop); /* anything late or repeated would show up now */
    for (int i = 0; i < nwatchers; i++) {
        big_rec *r = &big_recs[i];
        if (big_written[i ^ 1]) {
            assert_int_equal(r->calls, 1);
            assert_int_equal(r->events, AEV_READ);
            assert_int_equal(r->last_read, 1);
        } else if (r->calls != 0) {
            fail_msg("watcher %d (fd %d) fired but its peer was not written", i, big_fds[i]);
        }
    }
    assert_int_equal(big_fired(nwatchers), BIG_WRITES);
}

/* `pairs` socketpairs with one READ watcher per end; BIG_ROUNDS rounds of big_round(). */
static void big_case(aev_loop *loop, int pairs)
{
    int nwatchers = 2 * pairs;
    aevt_watchdog(90); /* creating and registering 100,000 fds is slow under sanitizers */
    uint32_t seed = (uint32_t)time(NULL) | 1u;
    print_message("%d watchers on %d socketpairs: seed %u\n", nwatchers, pairs, seed);

    for (int i = 0; i < pairs; i++) {
        make_socketpair(&big_fds[2 * i]);
    }
    for (int i = 0; i < nwatchers; i++) {
        assert_int_equal(aev_io_init(&big_recs[i].io, loop, big_cb, big_fds[i], AEV_READ), 0);
        assert_int_equal(aev_io_start(&big_recs[i].io), 0);
    }
    run_nowait(loop);
    assert_int_equal(big_fired(nwatchers), 0);
    for (int round = 0; round < BIG_ROUNDS; round++) {
        big_round(loop, nwatchers, &seed);
    }

    for (int i = 0; i < nwatchers; i++) {
        aev_io_stop(&big_recs[i].io);
        close(big_fds[i]);
    }
    run_nowait(loop);
    aevt_watchdog(30);
}

/* 100,000 watchers on 50,000 socketpairs, one per end, each waiting for READ. */
static void test_100k_watchers(void **state)
{
    if (!fd_limit_at_least(BIG_WATCHERS + FD_SLACK)) {
        skip();
    }
    big_case(*state, BIG_PAIRS);
}

/* The same with up to 10,000 pairs, fewer if RLIMIT_NOFILE cannot be raised that far: this one
 * runs where the full-size test has to be skipped. */
static void test_many_watchers_within_fd_limit(void **state)
{
    int pairs = MID_PAIRS;
    rlim_t limit = fd_limit_raise(2 * MID_PAIRS + FD_SLACK);
    if (limit != RLIM_INFINITY && limit < 2 * MID_PAIRS + FD_SLACK) {
        pairs = limit > FD_SLACK ? (int)((limit - FD_SLACK) / 2) : 0;
        if (pairs < MID_MIN_PAIRS) {
            print_message("skipped: RLIMIT_NOFILE is %llu, too low for %d pairs\n",
                          (unsigned long long)limit, MID_MIN_PAIRS);
            skip();
        }
        print_message("RLIMIT_NOFILE is %llu: %d pairs instead of %d\n", (unsigned long long)limit,
                      pairs, MID_PAIRS);
    }
    big_case(*state, pairs);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, aevt_setup, aevt_teardown)

int main(void)
{
    aevt_watchdog(30);
    /* A write to a pipe or socket without reader must fail with EPIPE rather than kill us. */
    signal(SIGPIPE, SIG_IGN);

    const struct CMUnitTest tests[] = {
        T(test_closed_while_watched_reused_by_pipe),
        T(test_closed_while_watched_reused_by_socket),
        T(test_closed_while_watched_reused_by_file),
        T(test_closed_while_watched_new_watcher),
        T(test_stop_close_iterate),
        T(test_dup_watched_after_original_closed),
        T(test_dup_watched_while_original_closed),
        T(test_regular_file_always_ready),
        T(test_directory_always_ready),
        T(test_pipe_writer_closes),
        T(test_socket_peer_closes_writer),
        T(test_socket_half_close),
        T(test_socket_half_close_blocked_writer),
        T(test_closed_fd_fails),
        T(test_fd_numbers_above_1024),
        T(test_many_watchers_within_fd_limit),
        T(test_100k_watchers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
