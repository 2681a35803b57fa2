/*
 * sizes: the memory a program pays per watcher and per loop, for asyncev beside libev and
 * libuv. A deterministic report, not a timing.
 *
 * Watchers: sizeof of each watcher type next to the peers' equivalent, judged against the
 * project's target "no larger than libev's equivalent plus 8 bytes" (libev's watchers do not
 * store their loop; ours do, so the target allows that one pointer).
 *
 * Loops: asyncev's loop is opaque, so its size is measured, not read off a type: the bytes that
 * malloc hands out (mallinfo2().uordblks, plus mmap'ed blocks) are counted before and after
 * creating the loop, in a fresh child process per library. libev's ev_loop_new() is measured the
 * same way; for libuv, whose uv_loop_t the program provides, it is sizeof(uv_loop_t) plus what
 * uv_loop_init() allocates. A second column counts again after one non-blocking iteration,
 * since a library may allocate lazily on the first run. Kernel objects (epoll, eventfd, timerfd)
 * are not counted by either column.
 */
#include "benchutil.h"

#include <malloc.h>
#include <string.h>

#include <asyncev.h>
#ifdef HAVE_LIBEV
#include <ev.h>
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif

#define NA ((size_t)0)

/* One row: a watcher type and its equivalents; 0 means the peer has none. */
typedef struct size_row {
    const char *what;
    size_t ours;
    size_t ev;
    size_t uv;
    const char *uv_type;
} size_row;

#ifdef HAVE_LIBEV
#define EVS(t) sizeof(t)
#else
#define EVS(t) NA
#endif
#ifdef HAVE_LIBUV
#define UVS(t) sizeof(t)
#else
#define UVS(t) NA
#endif

static const size_row watcher_rows[] = {
    {"io", sizeof(aev_io), EVS(ev_io), UVS(uv_poll_t), "uv_poll_t"},
    {"timer", sizeof(aev_timer), EVS(ev_timer), UVS(uv_timer_t), "uv_timer_t"},
    {"idle", sizeof(aev_idle), EVS(ev_idle), UVS(uv_idle_t), "uv_idle_t"},
    {"prepare", sizeof(aev_prepare), EVS(ev_prepare), UVS(uv_prepare_t), "uv_prepare_t"},
    {"check", sizeof(aev_check), EVS(ev_check), UVS(uv_check_t), "uv_check_t"},
    {"async", sizeof(aev_async), EVS(ev_async), UVS(uv_async_t), "uv_async_t"},
    {"signal", sizeof(aev_signal), EVS(ev_signal), UVS(uv_signal_t), "uv_signal_t"},
    {"child", sizeof(aev_child), EVS(ev_child), UVS(uv_process_t), "uv_process_t (1)"},
    {"periodic", sizeof(aev_periodic), EVS(ev_periodic), NA, "-"},
    {"stat", sizeof(aev_stat), EVS(ev_stat), UVS(uv_fs_poll_t), "uv_fs_poll_t (2)"},
    {"embed", sizeof(aev_embed), EVS(ev_embed), NA, "-"},
    {"fork", sizeof(aev_fork), EVS(ev_fork), NA, "-"},
    {"cleanup", sizeof(aev_cleanup), EVS(ev_cleanup), NA, "-"},
};

static void print_size(size_t v)
{
    if (v == NA) {
        printf(" %8s", "-");
    } else {
        printf(" %8zu", v);
    }
}

/* Prints the watcher table; returns the number of rows that missed the target. */
static int print_watchers(void)
{
    printf("%-9s %8s %8s %8s %-17s %-8s %s\n", "watcher", "asyncev", "libev", "libuv", "libuv type",
           "target", "(asyncev <= libev + 8)");
    int missed = 0;
    for (size_t i = 0; i < sizeof watcher_rows / sizeof watcher_rows[0]; i++) {
        const size_row *r = &watcher_rows[i];
        printf("%-9s", r->what);
        print_size(r->ours);
        print_size(r->ev);
        print_size(r->uv);
        printf(" %-17s", r->uv_type);
        if (r->ev == NA) {
            printf(" %s\n", "not judged (no libev)");
        } else if (r->ours <= r->ev + 8) {
            printf(" met (%+d vs libev)\n", (int)r->ours - (int)r->ev);
        } else {
            printf(" MISSED (%+d vs libev)\n", (int)r->ours - (int)r->ev);
            missed++;
        }
    }
    printf("(1) libuv has no child watcher: uv_process_t spawns the process and reports its exit.\n"
           "(2) libuv's stat equivalent is uv_fs_poll_t (polling); its inotify-based one is\n"
           "    uv_fs_event_t, %zu bytes.\n",
           (size_t)UVS(uv_fs_event_t));
    printf("asyncev watchers store their loop (8 bytes); libev's do not, they take it per call.\n");
    return missed;
}

/* ---- bytes per loop: measured in a child per library -------------------------------------- */

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* The result fields carry byte counts: ops = after creating, callbacks = after one iteration. */
static int sz_loop_aev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    (void)p;
    size_t before = heap_in_use();
    aev_loop *loop;
    int rc = aev_loop_new(&loop, 0);
    if (rc < 0) {
        return bu_fail(r, "aev_loop_new: %s", aev_strerror(rc));
    }
    r->ops = heap_in_use() - before;
    aev_run(loop, AEV_RUN_NOWAIT);
    r->callbacks = heap_in_use() - before;
    aev_loop_destroy(loop);
    return 0;
}

#ifdef HAVE_LIBEV
static int sz_loop_ev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    (void)p;
    size_t before = heap_in_use();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        return bu_fail(r, "ev_loop_new failed");
    }
    r->ops = heap_in_use() - before;
    ev_run(loop, EVRUN_NOWAIT);
    r->callbacks = heap_in_use() - before;
    ev_loop_destroy(loop);
    return 0;
}
#endif

#ifdef HAVE_LIBUV
static int sz_loop_uv(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    (void)p;
    static uv_loop_t loop; /* the program's memory: counted as sizeof below */
    size_t before = heap_in_use();
    int rc = uv_loop_init(&loop);
    if (rc != 0) {
        return bu_fail(r, "uv_loop_init: %s", uv_strerror(rc));
    }
    r->ops = sizeof loop + heap_in_use() - before;
    uv_run(&loop, UV_RUN_NOWAIT);
    r->callbacks = sizeof loop + heap_in_use() - before;
    uv_loop_close(&loop);
    return 0;
}
#endif

static int print_loops(double timeout_s)
{
    static const bu_impl impls[] = {
        {"asyncev", sz_loop_aev, NULL, "aev_loop_new(): heap"},
#ifdef HAVE_LIBEV
        {"libev", sz_loop_ev, NULL, "ev_loop_new(EVFLAG_AUTO): heap"},
#endif
#ifdef HAVE_LIBUV
        {"libuv", sz_loop_uv, NULL, "sizeof(uv_loop_t) + uv_loop_init(): heap"},
#endif
    };
    int failures = 0;
    printf("%-9s %14s %16s  %s\n", "loop", "bytes created", "after 1 iteration", "counted");
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++) {
        bu_params p = {.count = 1, .threads = 1};
        bu_result r;
        if (!bu_run_isolated(&impls[i], &p, timeout_s, &r)) {
            printf("%-9s %14s %16s  %s\n", impls[i].name, "FAILED", "-", r.err);
            failures++;
            continue;
        }
        printf("%-9s %14llu %16llu  %s\n", impls[i].name, (unsigned long long)r.ops,
               (unsigned long long)r.callbacks, impls[i].note);
    }
    printf("(malloc accounting: mallinfo2() uordblks + hblkhd, in a fresh child per library;\n"
           " malloc's own per-block headers included, kernel objects not)\n");
    return failures;
}

int main(int argc, char **argv)
{
    bu_options o;
    bu_parse_options(argc, argv, &o, "sizes",
                     "Bytes per watcher type (sizeof) and per loop (malloc accounting) for\n"
                     "asyncev beside libev and libuv. --rounds, --count and --only are ignored.",
                     0);
    printf("sizes: bytes per watcher and per loop (%zu-bit build)\n", sizeof(void *) * 8);
#ifndef HAVE_LIBEV
    printf("libev not built in: the target cannot be judged (apt-get install libev-dev)\n");
#endif
#ifndef HAVE_LIBUV
    printf("libuv not built in (apt-get install libuv1-dev)\n");
#endif
    printf("\n");
    int missed = print_watchers();
    printf("\n");
    int failures = print_loops(o.timeout_s);
    printf("\ntarget every watcher <= libev's equivalent + 8 bytes: %s", missed ? "MISSED" : "met");
    if (missed) {
        printf(" (%d row(s))", missed);
    }
    printf("\n");
    return failures ? 1 : 0;
}
