/*
 * Exhaustion and scale: one loop with 100,000 timers, 100,000 io watchers (many per fd) and
 * 10,000 async watchers, every event delivered exactly once; 100,000 loops created and destroyed
 * without growth in memory or fds; the process at its fd limit, where accept() fails with EMFILE
 * while clients keep connecting (the loop and its timers must carry on, and accepting resumes
 * once fds are freed); and aev_loop_new() at the fd limit, which must fail with -EMFILE and leak
 * nothing. Each test prints its run time.
 *
 * Not here: one watcher on each of up to 100,000 fds (tests/test_conformance.c,
 * test_100k_watchers and test_many_watchers_within_fd_limit). The io test below keeps to a fifth
 * of the fd limit and puts many watchers on each fd, which is what a loop's fd chains must
 * scale to.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "iotest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define AEVT_SCALE_VALGRIND_H 1
#endif
#endif

static int64_t g_t0;

static void clock_start(void)
{
    g_t0 = aevt_mono_ns();
}

static void clock_report(int n, const char *what)
{
    print_message("%d %s: %.1f ms\n", n, what, (double)(aevt_mono_ns() - g_t0) / 1e6);
}

/* Under valgrind (aevt_slow()) every count is a twentieth: the same checks, at a size that
 * runs in reasonable time there. */
static int scaled(int n)
{
    return aevt_slow() ? n / 20 : n;
}

#define NTIMERS scaled(NTIMERS_MAX)
#define NIO scaled(NIO_MAX)
#define NASYNC scaled(NASYNC_MAX)
#define NLOOPS scaled(NLOOPS_MAX)

/* ---- fds ------------------------------------------------------------------------------------ */

/* Open fds of this process: how many, and the highest number. */
static int count_fds(int *max_fd)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int self = dirfd(d);
    int n = 0, max = -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        int fd = atoi(de->d_name);
        if (fd == self)
            continue;
        n++;
        if (fd > max)
            max = fd;
    }
    closedir(d);
    if (max_fd)
        *max_fd = max;
    return n;
}

/* Which fd numbers below `limit` are open, as a bitmap (fcntl: no fd is opened to look). */
static void open_fd_map(unsigned char *map, int limit)
{
    for (int fd = 0; fd < limit; fd++)
        map[fd] = fcntl(fd, F_GETFD) >= 0;
}

/* The soft fd limit below which exactly n fd numbers are free: fds are numbered from the
 * lowest free one, and a limit only stops new numbers at or above it (fds that are open above
 * it, e.g. inherited from the shell, stay usable), so holes below the highest open fd count. */
static rlim_t limit_with_free(int n)
{
    int fd = 0;
    for (int found = 0;; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && found++ == n)
            return (rlim_t)fd;
    }
}

static rlim_t soft_fd_limit(void)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    return rl.rlim_cur;
}

/* Sets the soft RLIMIT_NOFILE (the hard one is left alone, so it can be raised back). */
static void set_soft_fd_limit(rlim_t n)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = n;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* Raises the soft limit to the hard one; returns the soft limit in force. */
static rlim_t raise_soft_fd_limit(void)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    return rl.rlim_cur;
}

/* ---- an allocator that counts the library's blocks ----------------------------------------- */

static long g_live_blocks; /* allocated and not freed */
static long g_allocs;      /* allocations made (realloc of NULL) */

static void *counting_realloc(void *p, size_t n)
{
    if (n == 0) {
        if (p)
            g_live_blocks--;
        free(p);
        return NULL;
    }
    void *q = realloc(p, n);
    if (q && !p) {
        g_live_blocks++;
        g_allocs++;
    }
    return q;
}

static void counting_on(void)
{
    g_live_blocks = 0;
    g_allocs = 0;
    aev_set_allocator(counting_realloc);
}

/* ---- 100,000 timers -------------------------------------------------------------------------- */

#define NTIMERS_MAX 100000

typedef struct trec {
    aev_timer t;
    aev_time_t earliest; /* clock before the start + delay: the callback may not run before */
    unsigned calls;
    bool early;
} trec;

static trec g_timers[NTIMERS_MAX];
static unsigned g_timer_calls;

static void timer_cb(aev_watcher *w, unsigned events)
{
    trec *r = (trec *)w;
    assert_int_equal(events, AEV_TIMER);
    r->calls++;
    g_timer_calls++;
    if (aev_now(aev_watcher_loop(w)) < r->earliest)
        r->early = true;
}

/* 100,000 timers with delays spread over 0..20 ms and a long repeat, so that each stays active
 * after its first expiry: each must fire once, never early, and no more within the test; all are
 * then stopped and the loop has nothing left. */
static void test_100k_timers(void **state)
{
    aev_loop *loop = *state;
    uint32_t seed = 12345;
    clock_start();
    for (int i = 0; i < NTIMERS; i++) {
        trec *r = &g_timers[i];
        seed = seed * 1103515245u + 12345u;
        aev_time_t after = (aev_time_t)(seed % 20000) * 1000; /* 0 .. 20 ms, us steps */
        assert_int_equal(aev_timer_init(&r->t, loop, timer_cb, after, AEV_SEC(60)), 0);
        r->calls = 0;
        r->early = false;
        r->earliest = aev_time() + after;
        assert_int_equal(aev_timer_start(&r->t), 0);
    }
    g_timer_calls = 0;
    aev_time_t give_up = aev_time() + AEV_SEC(5);
    while (g_timer_calls < (unsigned)NTIMERS && aev_time() < give_up)
        assert_int_equal(aev_run(loop, AEV_RUN_ONCE), 1);
    assert_int_equal(g_timer_calls, NTIMERS);
    run_nowait(loop);
    assert_int_equal(g_timer_calls, NTIMERS);
    for (int i = 0; i < NTIMERS; i++) {
        trec *r = &g_timers[i];
        if (r->calls != 1 || r->early)
            fail_msg("timer %d: %u calls%s", i, r->calls, r->early ? ", early" : "");
        assert_true(aev_is_active(&r->t.base));
    }
    for (int i = 0; i < NTIMERS; i++)
        assert_int_equal(aev_timer_stop(&g_timers[i].t), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_timer_calls, NTIMERS);
    clock_report(NTIMERS, "timers");
}

/* ---- 100,000 io watchers ----------------------------------------------------------------------
 */

#define NIO_MAX 100000
/* The fds used: at most this many, and at most a fifth of the fd limit. */
#define IO_MAX_FDS 4000
#define IO_FD_SHARE 5

typedef struct iorec {
    aev_io io;
    unsigned calls;
    unsigned events;
} iorec;

static iorec g_ios[NIO_MAX];
static int g_io_fds[IO_MAX_FDS];
static unsigned g_io_fd_n[IO_MAX_FDS];     /* watchers on fd index k */
static unsigned g_io_fd_calls[IO_MAX_FDS]; /* callbacks on fd index k in the current round */
static unsigned g_io_total;

static void io_cb(aev_watcher *w, unsigned events)
{
    iorec *r = (iorec *)w;
    int k = (int)(intptr_t)w->data;
    r->calls++;
    r->events = events;
    g_io_total++;
    /* The fd's watchers are queued together and run in one pass: the last of them drains the
     * byte, so that level-triggered readiness does not report the fd again. */
    if (++g_io_fd_calls[k] == g_io_fd_n[k]) {
        char c;
        assert_int_equal(read(g_io_fds[k], &c, 1), 1);
    }
}

/* Writes a byte for every k with (k % every) == 0 (to its peer: fds come in socketpairs, k ^ 1)
 * and runs until exactly those fds' watchers have fired once each; then nothing more fires. */
static void io_round(aev_loop *loop, int nfds, int every)
{
    unsigned want = 0;
    for (int i = 0; i < NIO; i++)
        g_ios[i].calls = 0;
    memset(g_io_fd_calls, 0, sizeof g_io_fd_calls);
    g_io_total = 0;
    for (int k = 0; k < nfds; k++) {
        if (k % every == 0 && g_io_fd_n[k] > 0) {
            write_byte(g_io_fds[k ^ 1]);
            want += g_io_fd_n[k];
        }
    }
    for (int iter = 0; iter < 100 && g_io_total < want; iter++)
        run_nowait(loop);
    run_nowait(loop); /* a late or repeated event would show now */
    run_nowait(loop);
    assert_int_equal(g_io_total, want);
    for (int i = 0; i < NIO; i++) {
        int k = (int)(intptr_t)g_ios[i].io.base.data;
        unsigned expect = k % every == 0 ? 1 : 0;
        if (g_ios[i].calls != expect)
            fail_msg("io watcher %d (fd index %d): %u calls, expected %u", i, k, g_ios[i].calls,
                     expect);
        if (expect)
            assert_int_equal(g_ios[i].events, AEV_READ);
    }
}

/*
 * 100,000 io watchers in one loop. The hard fd limit here is 20,000, so the watchers share fds:
 * 2,000 socketpairs (4,000 fds, a fifth of the limit; fewer where the limit is lower), 25
 * watchers on each end (more where there are fewer fds). Every end gets a byte: every watcher
 * fires exactly once; then every seventh end: exactly its watchers fire. Then all are stopped,
 * alternately from the front and the back of the start order (removal from the head, middle and
 * tail of the fd chains).
 */
static void test_100k_io_watchers(void **state)
{
    aev_loop *loop = *state;
    rlim_t limit = raise_soft_fd_limit();
    int nfds = scaled(IO_MAX_FDS);
    if (limit != RLIM_INFINITY && (rlim_t)nfds > limit / IO_FD_SHARE)
        nfds = (int)(limit / IO_FD_SHARE) & ~1;
    if (nfds < 100) {
        print_message("skipped: RLIMIT_NOFILE %llu is too low\n", (unsigned long long)limit);
        skip();
    }
    int per_fd = (NIO + nfds - 1) / nfds;
    print_message("%d io watchers on %d fds (%d socketpairs), up to %d per fd; fd limit %llu\n",
                  NIO, nfds, nfds / 2, per_fd, (unsigned long long)limit);
    clock_start();
    for (int k = 0; k < nfds; k += 2)
        make_socketpair(&g_io_fds[k]);
    /* Watcher i watches fd index i / per_fd: each fd's watchers are started together, the way a
     * program adds them, which makes each start walk the fd's chain. */
    memset(g_io_fd_n, 0, sizeof g_io_fd_n);
    for (int i = 0; i < NIO; i++) {
        int k = i / per_fd;
        assert_int_equal(aev_io_init(&g_ios[i].io, loop, io_cb, g_io_fds[k], AEV_READ), 0);
        g_ios[i].io.base.data = (void *)(intptr_t)k;
        assert_int_equal(aev_io_start(&g_ios[i].io), 0);
        g_io_fd_n[k]++;
    }
    run_nowait(loop);
    assert_int_equal(g_io_total, 0);
    io_round(loop, nfds, 1);
    io_round(loop, nfds, 7);
    for (int i = 0; i < NIO; i++) {
        iorec *r = &g_ios[i % 2 ? NIO - 1 - i / 2 : i / 2];
        assert_int_equal(aev_stop(&r->io.base), 0);
    }
    for (int i = 0; i < NIO; i++)
        assert_false(aev_is_active(&g_ios[i].io.base));
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    for (int k = 0; k < nfds; k++)
        close(g_io_fds[k]);
    clock_report(NIO, "io watchers");
}

/* ---- 10,000 async watchers ------------------------------------------------------------------- */

#define NASYNC_MAX 10000

typedef struct arec {
    aev_async a;
    unsigned calls;
} arec;

static arec g_asyncs[NASYNC_MAX];
static unsigned g_async_total;

static void async_cb(aev_watcher *w, unsigned events)
{
    assert_int_equal(events, AEV_ASYNC);
    ((arec *)w)->calls++;
    g_async_total++;
}

static void async_round(aev_loop *loop, int every, int sends)
{
    unsigned want = 0;
    g_async_total = 0;
    for (int i = 0; i < NASYNC; i++) {
        g_asyncs[i].calls = 0;
        if (i % every == 0) {
            for (int s = 0; s < sends; s++)
                assert_int_equal(aev_async_send(&g_asyncs[i].a), 0);
            want++;
        }
    }
    for (int iter = 0; iter < 10 && g_async_total < want; iter++)
        run_nowait(loop);
    run_nowait(loop);
    assert_int_equal(g_async_total, want);
    for (int i = 0; i < NASYNC; i++) {
        if (g_asyncs[i].calls != (i % every == 0 ? 1u : 0u))
            fail_msg("async watcher %d: %u calls", i, g_asyncs[i].calls);
        assert_false(aev_async_sent(&g_asyncs[i].a));
    }
}

/* 10,000 async watchers: all sent, each called exactly once; then every third sent three times
 * (coalesced: one call each); then all sent and stopped before the loop noted them: no call, and
 * the loop holds none of them any more. */
static void test_10k_async(void **state)
{
    aev_loop *loop = *state;
    clock_start();
    for (int i = 0; i < NASYNC; i++) {
        assert_int_equal(aev_async_init(&g_asyncs[i].a, loop, async_cb), 0);
        assert_int_equal(aev_async_start(&g_asyncs[i].a), 0);
    }
    async_round(loop, 1, 1);
    async_round(loop, 3, 3);
    g_async_total = 0;
    for (int i = 0; i < NASYNC; i++)
        assert_int_equal(aev_async_send(&g_asyncs[i].a), 0);
    for (int i = 0; i < NASYNC; i++)
        assert_int_equal(aev_async_stop(&g_asyncs[i].a), 0);
    assert_int_equal(aev_run(loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(g_async_total, 0);
    clock_report(NASYNC, "async watchers");
}

/* ---- 100,000 loops ----------------------------------------------------------------------------
 */

#define NLOOPS_MAX 100000
/* Growth of the C library's heap in use allowed across the whole run: any per-loop leak of even
 * one block would be far above it (100,000 blocks of at least 32 bytes). */
#define HEAP_SLACK (64 * 1024)

/* 100,000 times aev_loop_new + aev_loop_destroy: the same fds open and as many library blocks
 * live after as before (counted through aev_set_allocator, exact), and the heap in use within
 * HEAP_SLACK (mallinfo2; under ASan its allocator bypasses glibc's, so only the exact counts
 * mean something there). */
static void test_100k_loops_no_growth(void **state)
{
    (void)state;
    int max_before;
    int fds_before = count_fds(&max_before);
    counting_on();
    /* One round first, so that one-time allocations (fork detection) are not counted. */
    aev_loop *l;
    assert_int_equal(aev_loop_new(&l, aevt_flags()), 0);
    assert_int_equal(aev_loop_destroy(l), 0);
    struct mallinfo2 mi_before = mallinfo2();
    long blocks_before = g_live_blocks;
    long allocs_before = g_allocs;
    clock_start();
    for (int i = 0; i < NLOOPS; i++) {
        int rc = aev_loop_new(&l, aevt_flags());
        if (rc != 0)
            fail_msg("loop %d: aev_loop_new: %s", i, aev_strerror(rc));
        assert_int_equal(aev_loop_destroy(l), 0);
    }
    clock_report(NLOOPS, "loops created and destroyed");
    struct mallinfo2 mi_after = mallinfo2();
    long blocks_after = g_live_blocks;
    aev_set_allocator(NULL);
    int max_after;
    int fds_after = count_fds(&max_after);
    print_message("%.1f allocations per loop; heap in use %zu -> %zu bytes; fds %d -> %d\n",
                  (double)(g_allocs - allocs_before) / NLOOPS, mi_before.uordblks,
                  mi_after.uordblks, fds_before, fds_after);
    assert_int_equal(blocks_after, blocks_before);
    assert_int_equal(blocks_after, 0);
    assert_int_equal(fds_after, fds_before);
    assert_int_equal(max_after, max_before);
    assert_true(mi_after.uordblks <= mi_before.uordblks + HEAP_SLACK);
}

/* ---- accept() at the fd limit ------------------------------------------------------------------
 */

#define NCLIENTS 24
#define ROOM 4 /* fds left for accepted connections under the lowered limit */

typedef struct server {
    aev_loop *loop;
    int lfd;
    aev_io listener;
    aev_timer retry;     /* restarts the listener after EMFILE */
    aev_timer heartbeat; /* must keep firing whatever accept() does */
    aev_timer connector; /* a client connects every millisecond */
    int clients[NCLIENTS];
    int nconnected;
    int accepted[NCLIENTS];
    int naccepted;    /* connections currently held */
    int total;        /* connections accepted so far */
    int emfile;       /* accept() calls that failed with EMFILE */
    bool serve;       /* handle (here: close) each connection as soon as it is accepted */
    int accept_calls; /* listener callbacks */
    unsigned ticks;
    struct sockaddr_in addr;
} server;

/*
 * The idiom (docs/concepts.md, "Running out of file descriptors"): a listening socket stays
 * readable while a connection waits that accept() cannot take, so a level-triggered watcher would
 * call back in every iteration and the loop would spin. On EMFILE the server stops the
 * listener and retries from a timer (or when it closes a connection of its own).
 */
static void on_listener(aev_watcher *w, unsigned events)
{
    server *s = w->data;
    (void)events;
    s->accept_calls++;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            s->total++;
            if (s->serve)
                close(fd);
            else
                s->accepted[s->naccepted++] = fd;
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            s->emfile++;
            assert_int_equal(aev_io_stop(&s->listener), 0);
            assert_int_equal(aev_timer_start(&s->retry), 0);
        }
        return; /* EAGAIN: nothing left; EMFILE: retry later; others: the next readiness */
    }
}

static void on_retry(aev_watcher *w, unsigned events)
{
    server *s = w->data;
    (void)events;
    assert_int_equal(aev_io_start(&s->listener), 0);
}

static void on_heartbeat(aev_watcher *w, unsigned events)
{
    (void)events;
    ((server *)w->data)->ticks++;
}

static void on_connector(aev_watcher *w, unsigned events)
{
    server *s = w->data;
    (void)events;
    if (s->nconnected == NCLIENTS) {
        assert_int_equal(aev_timer_stop(&s->connector), 0);
        return;
    }
    int rc = connect(s->clients[s->nconnected], (struct sockaddr *)&s->addr, sizeof s->addr);
    assert_true(rc == 0 || errno == EINPROGRESS);
    s->nconnected++;
}

/* Runs the loop until cond(s) or `ms` pass; aev_run must never fail meanwhile. */
static bool run_until(server *s, bool (*cond)(const server *), int ms)
{
    aev_time_t give_up = aev_time() + AEV_MSEC(ms);
    while (!cond(s) && aev_time() < give_up)
        assert_true(aev_run(s->loop, AEV_RUN_ONCE) >= 0);
    return cond(s);
}

static bool all_connected_and_emfile(const server *s)
{
    return s->nconnected == NCLIENTS && s->emfile > 0;
}

static bool all_accepted(const server *s)
{
    return s->total == NCLIENTS;
}

static void test_accept_at_fd_limit(void **state)
{
#ifdef AEVT_SCALE_VALGRIND_H
    /* valgrind enforces a lowered limit itself: it closes the fd the kernel's accept() returned
     * if the number is at or above the limit and reports EMFILE, so a connection taken off the
     * backlog is lost, which no program can avoid there. */
    if (RUNNING_ON_VALGRIND) {
        print_message("skipped: under valgrind, accept() at the fd limit loses connections\n");
        skip();
    }
#endif
    server s;
    memset(&s, 0, sizeof s);
    s.loop = *state;
    rlim_t saved = soft_fd_limit();

    s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(s.lfd >= 0);
    s.addr.sin_family = AF_INET;
    s.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s.lfd, (struct sockaddr *)&s.addr, sizeof s.addr), 0);
    socklen_t len = sizeof s.addr;
    assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&s.addr, &len), 0);
    assert_int_equal(listen(s.lfd, NCLIENTS), 0);
    /* The clients are this process's too: their sockets exist before the limit is lowered, so
     * that only the server's accept() runs out; connect() needs no new fd. */
    for (int i = 0; i < NCLIENTS; i++) {
        s.clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(s.clients[i] >= 0);
    }
    assert_int_equal(aev_io_init(&s.listener, s.loop, on_listener, s.lfd, AEV_READ), 0);
    assert_int_equal(aev_timer_init(&s.retry, s.loop, on_retry, AEV_MSEC(5), 0), 0);
    assert_int_equal(aev_timer_init(&s.heartbeat, s.loop, on_heartbeat, AEV_MSEC(2), AEV_MSEC(2)),
                     0);
    assert_int_equal(aev_timer_init(&s.connector, s.loop, on_connector, AEV_MSEC(1), AEV_MSEC(1)),
                     0);
    s.listener.base.data = s.retry.base.data = s.heartbeat.base.data = s.connector.base.data = &s;
    assert_int_equal(aev_io_start(&s.listener), 0);
    assert_int_equal(aev_timer_start(&s.heartbeat), 0);
    assert_int_equal(aev_timer_start(&s.connector), 0);
    run_nowait(s.loop); /* the listener's registration, before the limit is lowered */

    /* Room for exactly ROOM more fds. */
    const int room = ROOM;
    rlim_t limit = limit_with_free(room);
    set_soft_fd_limit(limit);
    print_message("fd limit lowered to %llu: room for %d connections of %d\n",
                  (unsigned long long)limit, room, NCLIENTS);

    clock_start();
    bool ok = run_until(&s, all_connected_and_emfile, 3000);
    /* The loop lives on at the limit: no spinning (the listener is stopped while it cannot
     * accept), timers keep firing. */
    unsigned ticks = s.ticks;
    int calls = s.accept_calls;
    uint64_t iters = aev_iteration(s.loop);
    aev_time_t until = aev_time() + AEV_MSEC(60);
    while (ok && aev_time() < until)
        assert_true(aev_run(s.loop, AEV_RUN_ONCE) >= 0);
    unsigned ticks_at_limit = s.ticks - ticks;
    int calls_at_limit = s.accept_calls - calls;
    uint64_t iters_at_limit = aev_iteration(s.loop) - iters;
    int held = s.naccepted;

    /* The program frees fds (closes the connections it holds, and from now on each one when it
     * is done with it): accepting resumes, and every client is served. */
    for (int i = 0; i < s.naccepted; i++)
        close(s.accepted[i]);
    s.naccepted = 0;
    s.serve = true;
    bool resumed = ok && run_until(&s, all_accepted, 3000);
    clock_report(NCLIENTS, "connections accepted at the fd limit");
    set_soft_fd_limit(saved);
    print_message("held %d at the limit, %d EMFILE, in 60 ms at the limit: %u heartbeats, %d "
                  "listener calls, %llu iterations\n",
                  held, s.emfile, ticks_at_limit, calls_at_limit,
                  (unsigned long long)iters_at_limit);

    assert_true(ok);
    assert_int_equal(held, room);
    assert_true(ticks_at_limit >= 10);         /* 2 ms heartbeat for 60 ms: about 30 */
    assert_true(calls_at_limit <= 60 / 5 + 2); /* one per 5 ms retry, not one per spin */
    assert_true(iters_at_limit <= 3 * ticks_at_limit + 10);
    assert_true(resumed);
    assert_int_equal(s.total, NCLIENTS);

    aev_io_stop(&s.listener);
    aev_timer_stop(&s.retry);
    aev_timer_stop(&s.heartbeat);
    aev_timer_stop(&s.connector);
    for (int i = 0; i < s.naccepted; i++)
        close(s.accepted[i]);
    for (int i = 0; i < NCLIENTS; i++)
        close(s.clients[i]);
    close(s.lfd);
}

/* ---- aev_loop_new() at the fd limit ------------------------------------------------------------
 */

/* With no fd number free below the limit, then with one, two, three and four free:
 * aev_loop_new() fails with -EMFILE (setting *out to NULL) until it has the fds it needs (epoll
 * or kqueue: the poll set, plus the wakeup eventfd or self-pipe), and whether it fails or not
 * the process's fds and the library's blocks are exactly as before: a failure leaks nothing. */
static void test_loop_new_at_fd_limit(void **state)
{
    (void)state;
    rlim_t saved = soft_fd_limit();
    counting_on();
    int first_success = -1;
    for (int nfree = 0; nfree <= 4; nfree++) {
        int limit = (int)limit_with_free(nfree);
        unsigned char *before = malloc((size_t)limit), *after = malloc((size_t)limit);
        assert_true(before && after);
        set_soft_fd_limit((rlim_t)limit);
        open_fd_map(before, limit);
        long blocks = g_live_blocks;
        aev_loop *l = (aev_loop *)&l;
        int rc = aev_loop_new(&l, aevt_flags());
        if (rc == 0) {
            if (first_success < 0)
                first_success = nfree;
            assert_int_equal(aev_loop_destroy(l), 0);
        }
        open_fd_map(after, limit);
        set_soft_fd_limit(saved);
        print_message("%d fds free: aev_loop_new: %s\n", nfree, rc ? aev_strerror(rc) : "ok");
        if (rc != 0) {
            assert_int_equal(rc, -EMFILE);
            assert_null(l);
        }
        if (memcmp(before, after, (size_t)limit) != 0)
            fail_msg("%d fds free: aev_loop_new (%d) left the fd table changed", nfree, rc);
        free(before);
        free(after);
        assert_int_equal(g_live_blocks, blocks);
    }
    aev_set_allocator(NULL);
    assert_int_equal(g_live_blocks, 0);
    assert_true(first_success >= 1); /* never without a single fd */
    assert_true(first_success <= 3); /* and with what the backend and wakeup need */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, aevt_setup, aevt_teardown)

int main(void)
{
    aevt_watchdog(120);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_100k_timers),        T(test_100k_io_watchers),
        T(test_10k_async),          cmocka_unit_test(test_100k_loops_no_growth),
        T(test_accept_at_fd_limit), cmocka_unit_test(test_loop_new_at_fd_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
