/*
 * pipes: the shape of libevent's test/bench.c, as libev's author published it for libev, run for
 * asyncev and every peer library built in.
 *
 * N socketpairs, a read watcher on one end of each. The run starts by writing one byte into A of
 * them, spread evenly (every N/A-th pair). Each read callback reads its byte and, while writes
 * are left, writes one byte into the next pair (index + 1 mod N), so A bytes are always in
 * flight and walk around the ring. The loop is driven like the original, by non-blocking
 * iterations until every byte written has been read. Measured: events (read callbacks) per
 * second, and the setup time: creating and starting all N watchers, plus the first loop
 * iteration, since some libraries (libev, asyncev) only tell the kernel about a fd there.
 *
 * The "timeout" variant gives every fd a timeout of 10 s plus a per-fd jitter below 1 s and
 * re-arms it on every event, the way a server re-arms an idle timeout; it never fires. This is
 * the variant where the timer structure's cost per re-arm shows.
 */
#include "benchutil.h"

#include <asyncev.h>

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef HAVE_LIBEV
#include <ev.h>
/* event2/event.h defines EV_READ as a macro with another value; keep libev's own. */
enum { PB_LIBEV_READ = EV_READ };
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif
#ifdef HAVE_LIBEVENT
#include <dlfcn.h>
#include <event2/event.h>
#endif

#define PB_MAX_SIZES 8
#define PB_FD_RESERVE 64 /* fds besides the pairs: stdio, the loop's own, the harness's pipe */

/* ---- state of one run, shared by all adaptors ---------------------------------------------- */

typedef struct pb_run {
    int n;             /* socketpairs */
    int active;        /* bytes in flight */
    int timeouts;      /* 1: per-fd timeout re-armed on every event */
    int *fds;          /* fds[2i]: watched end of pair i; fds[2i + 1]: the end written to */
    int64_t *after_ns; /* per-fd timeout */
    uint64_t writes;   /* writes left */
    uint64_t fired;    /* bytes written */
    uint64_t count;    /* bytes read */
    uint64_t failures; /* reads or writes that did not move one byte */
    uint64_t timer_fired;
} pb_run;

static pb_run g;

/* The body of every read callback: read the byte, pass one on to the next pair. */
static void on_readable(int idx)
{
    unsigned char ch;
    ssize_t n = read(g.fds[2 * idx], &ch, 1);
    if (n == 1) {
        g.count++;
    } else {
        g.failures++;
    }
    if (g.writes) {
        int widx = idx + 1;
        if (widx >= g.n) {
            widx -= g.n;
        }
        if (write(g.fds[2 * widx + 1], "e", 1) != 1) {
            g.failures++;
        }
        g.writes--;
        g.fired++;
    }
}

/* One library: create the loop; start all watchers (timed); run one non-blocking iteration. */
typedef struct pb_lib {
    const char *name;
    const char *note;
    int (*init)(char *err, size_t size);
    int (*start_all)(char *err, size_t size);
    int (*iterate)(char *err, size_t size);
} pb_lib;

/* ---- libasyncev ---------------------------------------------------------------------------- */

typedef struct pbaev_pair {
    aev_io io;
    aev_timer timer;
} pbaev_pair;

static aev_loop *pbaev_loop;
static pbaev_pair *pbaev_pairs;

static void pbaev_read_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    int idx = (int)(intptr_t)w->data;
    on_readable(idx);
    if (g.timeouts) {
        aev_timer_again(&pbaev_pairs[idx].timer);
    }
}

static void pbaev_timeout_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    g.timer_fired++;
}

static int aev_pb_init(char *err, size_t size)
{
    int rc = aev_loop_new(&pbaev_loop, 0);
    pbaev_pairs = calloc((size_t)g.n, sizeof *pbaev_pairs);
    if (rc != 0 || !pbaev_pairs) {
        snprintf(err, size, "aev_loop_new: %s", rc ? aev_strerror(rc) : "out of memory");
        return -1;
    }
    return 0;
}

static int aev_pb_start_all(char *err, size_t size)
{
    for (int i = 0; i < g.n; i++) {
        pbaev_pair *p = &pbaev_pairs[i];
        int rc = aev_io_init(&p->io, pbaev_loop, pbaev_read_cb, g.fds[2 * i], AEV_READ);
        p->io.base.data = (void *)(intptr_t)i;
        if (rc == 0) {
            rc = aev_io_start(&p->io);
        }
        if (rc == 0 && g.timeouts) {
            rc = aev_timer_init(&p->timer, pbaev_loop, pbaev_timeout_cb, 0, g.after_ns[i]);
            rc = rc ? rc : aev_timer_again(&p->timer);
        }
        if (rc != 0) {
            snprintf(err, size, "starting watchers of pair %d: %s", i, aev_strerror(rc));
            return -1;
        }
    }
    return 0;
}

static int aev_pb_iterate(char *err, size_t size)
{
    int rc = aev_run(pbaev_loop, AEV_RUN_NOWAIT);
    if (rc < 0) {
        snprintf(err, size, "aev_run: %s", aev_strerror(rc));
        return -1;
    }
    return 0;
}

static const pb_lib pbaev_lib = {"asyncev", NULL, aev_pb_init, aev_pb_start_all, aev_pb_iterate};

/* ---- libev --------------------------------------------------------------------------------- */

#ifdef HAVE_LIBEV
typedef struct pbev_pair {
    ev_io io;
    ev_timer timer;
} pbev_pair;

static struct ev_loop *pbev_loop;
static pbev_pair *pbev_pairs;

static void pbev_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    int idx = (int)(intptr_t)w->data;
    on_readable(idx);
    if (g.timeouts) {
        ev_timer_again(loop, &pbev_pairs[idx].timer);
    }
}

static void pbev_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    g.timer_fired++;
}

static int ev_pb_init(char *err, size_t size)
{
    pbev_loop = ev_loop_new(EVFLAG_AUTO);
    pbev_pairs = calloc((size_t)g.n, sizeof *pbev_pairs);
    if (!pbev_loop || !pbev_pairs) {
        snprintf(err, size, "ev_loop_new failed");
        return -1;
    }
    return 0;
}

static int ev_pb_start_all(char *err, size_t size)
{
    (void)err;
    (void)size;
    for (int i = 0; i < g.n; i++) {
        pbev_pair *p = &pbev_pairs[i];
        ev_io_init(&p->io, pbev_read_cb, g.fds[2 * i], PB_LIBEV_READ);
        p->io.data = (void *)(intptr_t)i;
        ev_io_start(pbev_loop, &p->io);
        if (g.timeouts) {
            ev_timer_init(&p->timer, pbev_timeout_cb, 0., (double)g.after_ns[i] / 1e9);
            ev_timer_again(pbev_loop, &p->timer);
        }
    }
    return 0;
}

static int ev_pb_iterate(char *err, size_t size)
{
    (void)err;
    (void)size;
    ev_run(pbev_loop, EVRUN_NOWAIT);
    return 0;
}

static const pb_lib pbev_lib = {"libev", NULL, ev_pb_init, ev_pb_start_all, ev_pb_iterate};
#endif

/* ---- libuv --------------------------------------------------------------------------------- */

#ifdef HAVE_LIBUV
typedef struct pbuv_pair {
    uv_poll_t poll;
    uv_timer_t timer;
} pbuv_pair;

static uv_loop_t pbuv_loop;
static pbuv_pair *pbuv_pairs;

static void pbuv_read_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    int idx = (int)(intptr_t)h->data;
    if (status < 0) {
        g.failures++;
        return;
    }
    on_readable(idx);
    if (g.timeouts) {
        uv_timer_again(&pbuv_pairs[idx].timer);
    }
}

static void pbuv_timeout_cb(uv_timer_t *t)
{
    (void)t;
    g.timer_fired++;
}

static int uv_pb_init(char *err, size_t size)
{
    int rc = uv_loop_init(&pbuv_loop);
    pbuv_pairs = calloc((size_t)g.n, sizeof *pbuv_pairs);
    if (rc != 0 || !pbuv_pairs) {
        snprintf(err, size, "uv_loop_init: %s", rc ? uv_strerror(rc) : "out of memory");
        return -1;
    }
    return 0;
}

static int uv_pb_start_all(char *err, size_t size)
{
    for (int i = 0; i < g.n; i++) {
        pbuv_pair *p = &pbuv_pairs[i];
        int rc = uv_poll_init(&pbuv_loop, &p->poll, g.fds[2 * i]);
        p->poll.data = (void *)(intptr_t)i;
        rc = rc ? rc : uv_poll_start(&p->poll, UV_READABLE, pbuv_read_cb);
        if (rc == 0 && g.timeouts) {
            /* uv_timer_again() needs a repeat value; the timeout is it. */
            uint64_t ms = (uint64_t)(g.after_ns[i] / 1000000);
            rc = uv_timer_init(&pbuv_loop, &p->timer);
            rc = rc ? rc : uv_timer_start(&p->timer, pbuv_timeout_cb, ms, ms);
        }
        if (rc != 0) {
            snprintf(err, size, "starting watchers of pair %d: %s", i, uv_strerror(rc));
            return -1;
        }
    }
    return 0;
}

static int uv_pb_iterate(char *err, size_t size)
{
    (void)err;
    (void)size;
    uv_run(&pbuv_loop, UV_RUN_NOWAIT);
    return 0;
}

static const pb_lib pbuv_lib = {"libuv", NULL, uv_pb_init, uv_pb_start_all, uv_pb_iterate};
#endif

/* ---- libevent ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBEVENT
static struct event_base *evt_base;
static struct event **evt_ev;

/* With EV_PERSIST, libevent re-arms an event's timeout itself each time the event runs, which
 * is its idiomatic way to keep a per-fd idle timeout. */
static void pbevt_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    if (what & EV_TIMEOUT) {
        g.timer_fired++;
        return;
    }
    on_readable((int)(intptr_t)arg);
}

static int evt_pb_init(char *err, size_t size)
{
    /* libev.so exports a libevent emulation under the same names; make sure this is libevent
     * (bench/CMakeLists.txt links libevent first for this). */
    Dl_info info;
    if (!dladdr((void *)event_base_new, &info) || !info.dli_fname ||
        !strstr(info.dli_fname, "libevent")) {
        snprintf(err, size,
                 "event_base_new() resolves to %s, not libevent: link libevent "
                 "before libev",
                 info.dli_fname ? info.dli_fname : "an unknown object");
        return -1;
    }
    evt_base = event_base_new();
    evt_ev = calloc((size_t)g.n, sizeof *evt_ev);
    if (!evt_base || !evt_ev) {
        snprintf(err, size, "event_base_new failed");
        return -1;
    }
    return 0;
}

static int evt_pb_start_all(char *err, size_t size)
{
    for (int i = 0; i < g.n; i++) {
        evt_ev[i] =
            event_new(evt_base, g.fds[2 * i], EV_READ | EV_PERSIST, pbevt_cb, (void *)(intptr_t)i);
        struct timeval tv = {.tv_sec = (time_t)(g.after_ns[i] / 1000000000),
                             .tv_usec = (suseconds_t)(g.after_ns[i] % 1000000000 / 1000)};
        if (!evt_ev[i] || event_add(evt_ev[i], g.timeouts ? &tv : NULL) != 0) {
            snprintf(err, size, "event_new/event_add failed for pair %d", i);
            return -1;
        }
    }
    return 0;
}

static int evt_pb_iterate(char *err, size_t size)
{
    if (event_base_loop(evt_base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0) {
        snprintf(err, size, "event_base_loop failed");
        return -1;
    }
    return 0;
}

static const pb_lib evt_lib = {"libevent", "timeout re-armed by EV_PERSIST (event_add once)",
                               evt_pb_init, evt_pb_start_all, evt_pb_iterate};
#endif

static const pb_lib *const libs[] = {
    &pbaev_lib,
#ifdef HAVE_LIBEV
    &pbev_lib,
#endif
#ifdef HAVE_LIBUV
    &pbuv_lib,
#endif
#ifdef HAVE_LIBEVENT
    &evt_lib,
#endif
    NULL,
};

/* ---- one measurement (in the forked child) ------------------------------------------------- */

/* What the parent sets before forking; the child inherits it. */
static int cur_n, cur_active, cur_timeouts;

static int make_pairs(bu_result *r)
{
    g.fds = malloc((size_t)g.n * 2 * sizeof *g.fds);
    g.after_ns = malloc((size_t)g.n * sizeof *g.after_ns);
    if (!g.fds || !g.after_ns) {
        return bu_fail(r, "out of memory");
    }
    uint32_t seed = 12345;
    for (int i = 0; i < g.n; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, &g.fds[2 * i])) {
            return bu_fail(r, "socketpair %d of %d: %s", i, g.n, strerror(errno));
        }
        /* 10 s plus a jitter below 1 s, like the original's random timeouts, but the same
         * for every library. */
        seed = seed * 1103515245u + 12345u;
        g.after_ns[i] = 10000000000 + (int64_t)(seed >> 8) % 1000000000;
    }
    return 0;
}

static int run_pipes(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    const pb_lib *lib = impl->ctx;
    memset(&g, 0, sizeof g);
    g.n = cur_n;
    g.active = cur_active;
    g.timeouts = cur_timeouts;
    if (make_pairs(r) != 0 || lib->init(r->err, sizeof r->err) != 0) {
        return -1;
    }

    int64_t t0 = bu_now();
    if (lib->start_all(r->err, sizeof r->err) != 0 || lib->iterate(r->err, sizeof r->err)) {
        return -1;
    }
    int64_t t1 = bu_now();

    int space = g.n / g.active;
    for (int i = 0; i < g.active; i++) {
        if (write(g.fds[2 * (i * space) + 1], "e", 1) != 1) {
            return bu_fail(r, "first write to pair %d: %s", i * space, strerror(errno));
        }
        g.fired++;
    }
    g.writes = p->count;
    int64_t t2 = bu_now();
    while (g.count != g.fired) {
        if (lib->iterate(r->err, sizeof r->err) != 0) {
            return -1;
        }
        if (g.failures) {
            break;
        }
    }
    int64_t t3 = bu_now();

    if (g.failures || g.timer_fired || g.fired != (uint64_t)g.active + p->count) {
        return bu_fail(r, "%llu failed reads/writes, %llu timeouts fired, %llu of %llu written",
                       (unsigned long long)g.failures, (unsigned long long)g.timer_fired,
                       (unsigned long long)g.fired,
                       (unsigned long long)((uint64_t)g.active + p->count));
    }
    r->elapsed_ns = t3 - t2;
    r->ops = g.count;
    r->callbacks = (uint64_t)(t1 - t0); /* the setup time, carried to the parent */
    return 0;
}

/* ---- options ------------------------------------------------------------------------------- */

typedef struct pb_options {
    int rounds;
    uint64_t count;
    int active;
    int sizes[PB_MAX_SIZES];
    int nsizes;
    double timeout_s;
    const char *csv_path;
    const char *only;
    int variants; /* bit 0: plain, bit 1: timeout */
} pb_options;

static void usage(FILE *out)
{
    fprintf(out, "usage: pipes [options]\n"
                 "libevent's bench.c shape: N socketpairs, A bytes in flight, each read callback\n"
                 "writes to the next pair; events/s and setup time, without and with a per-fd\n"
                 "timeout re-armed on every event, for asyncev and every peer library built in.\n"
                 "options:\n"
                 "  --rounds N      rounds per contender, interleaved; the median is reported (5)\n"
                 "  --count N       writes per run after the first A (200000)\n"
                 "  --sizes LIST    socketpair counts, comma-separated (100,1000,10000)\n"
                 "  --active A      bytes in flight (100)\n"
                 "  --variants LIST plain,timeout (both)\n"
                 "  --csv FILE      also write every round and the medians to FILE as CSV\n"
                 "  --timeout S     seconds one run may take before it is killed and failed (120)\n"
                 "  --only LIST     comma-separated contenders: asyncev,libev,libuv,libevent\n"
                 "  --help          this text\n"
                 "Exit status: 0 if every run finished and passed its checks, 1 otherwise.\n");
}

static long parse_pos(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0) {
        fprintf(stderr, "bad value for %s: '%s' (want a positive integer)\n", opt, s);
        exit(2);
    }
    return v;
}

static void parse_list(pb_options *o, const char *list, int sizes)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!sizes) {
            o->variants |= strcmp(t, "plain") == 0 ? 1 : strcmp(t, "timeout") == 0 ? 2 : 0;
            continue;
        }
        if (o->nsizes == PB_MAX_SIZES) {
            fprintf(stderr, "--sizes: at most %d entries\n", PB_MAX_SIZES);
            exit(2);
        }
        o->sizes[o->nsizes++] = (int)parse_pos(t, "--sizes");
    }
}

static void parse_options(int argc, char **argv, pb_options *o)
{
    static const struct option longopts[] = {
        {"rounds", required_argument, NULL, 'r'},   {"count", required_argument, NULL, 'c'},
        {"sizes", required_argument, NULL, 's'},    {"active", required_argument, NULL, 'a'},
        {"variants", required_argument, NULL, 'v'}, {"csv", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},  {"only", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    *o = (pb_options){.rounds = 5, .count = 200000, .active = 100, .timeout_s = 120};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            o->rounds = (int)parse_pos(optarg, "--rounds");
            break;
        case 'c':
            o->count = (uint64_t)parse_pos(optarg, "--count");
            break;
        case 's':
            parse_list(o, optarg, 1);
            break;
        case 'a':
            o->active = (int)parse_pos(optarg, "--active");
            break;
        case 'v':
            parse_list(o, optarg, 0);
            break;
        case 'f':
            o->csv_path = optarg;
            break;
        case 't':
            o->timeout_s = (double)parse_pos(optarg, "--timeout");
            break;
        case 'o':
            o->only = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (o->rounds > BU_MAX_ROUNDS) {
        fprintf(stderr, "--rounds: at most %d\n", BU_MAX_ROUNDS);
        exit(2);
    }
    if (o->nsizes == 0) {
        parse_list(o, "100,1000,10000", 1);
    }
    if (o->variants == 0) {
        o->variants = 3;
    }
}

/* ---- fds ----------------------------------------------------------------------------------- */

/* Raises the soft RLIMIT_NOFILE to what the largest size needs, at most to the hard limit.
 * Returns the soft limit in force. */
static rlim_t raise_nofile(const pb_options *o)
{
    rlim_t need = 0;
    for (int i = 0; i < o->nsizes; i++) {
        rlim_t n = (rlim_t)o->sizes[i] * 2 + PB_FD_RESERVE;
        need = n > need ? n : need;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur < need) {
        rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0) {
            return 0;
        }
    }
    return rl.rlim_cur;
}

/* ---- setup-time table ---------------------------------------------------------------------- */

static void print_setup_table(const bu_row *rows, int n, int ours)
{
    double ours_med = 0;
    if (ours >= 0 && rows[ours].nok) {
        ours_med = (double)bu_median_u64(rows[ours].callbacks, rows[ours].nok);
    }
    printf("%-16s %15s %15s %15s %13s\n", "contender", "setup us", "min", "max", "this/asyncev");
    for (int i = 0; i < n; i++) {
        const bu_row *row = &rows[i];
        if (row->nok == 0) {
            printf("%-16s %15s\n", row->impl->name, "FAILED");
            continue;
        }
        uint64_t mn = row->callbacks[0], mx = row->callbacks[0];
        for (int k = 1; k < row->nok; k++) {
            mn = row->callbacks[k] < mn ? row->callbacks[k] : mn;
            mx = row->callbacks[k] > mx ? row->callbacks[k] : mx;
        }
        double med = (double)bu_median_u64(row->callbacks, row->nok);
        char ratio[32] = "-";
        if (ours_med > 0) {
            snprintf(ratio, sizeof ratio, "%.2fx", med / ours_med);
        }
        printf("%-16s %15.0f %15.0f %15.0f %13s\n", row->impl->name, med / 1e3, (double)mn / 1e3,
               (double)mx / 1e3, ratio);
    }
}

/* ---- main ---------------------------------------------------------------------------------- */

static int run_case(const pb_options *o, const bu_impl *impls, int n, int size, int timeouts,
                    FILE *csv)
{
    static bu_row rows[BU_MAX_IMPLS];
    int ours = bu_rows_init(rows, impls, n);
    cur_n = size;
    cur_active = o->active < size ? o->active : size;
    cur_timeouts = timeouts;
    const char *variant = timeouts ? "timeout" : "plain";
    printf("\nN = %d socketpairs (%d fds), A = %d active, %s%s\n", size, 2 * size, cur_active,
           variant, timeouts ? " (per-fd timeout re-armed on every event)" : "");

    bu_params p = {.count = o->count, .threads = 1};
    int failures = 0;
    for (int round = 1; round <= o->rounds; round++) {
        for (int i = 0; i < n; i++) {
            bu_result r;
            if (!bu_run_isolated(&impls[i], &p, o->timeout_s, &r)) {
                failures++;
                fprintf(stderr, "N=%d %s round %d, %s: %s\n", size, variant, round, impls[i].name,
                        r.err);
            }
            bu_record(&rows[i], &r, NULL, variant, size, round, o->count);
            if (csv) {
                double rate = r.ok && r.elapsed_ns > 0 ? (double)r.ops * 1e9 / r.elapsed_ns : 0;
                fprintf(csv, "%s,%s,%d,%d,%llu,%lld,%.1f,%llu,%s\n", variant, impls[i].name, size,
                        round, (unsigned long long)o->count, (long long)r.elapsed_ns, rate,
                        (unsigned long long)(r.ok ? r.callbacks : 0), r.ok ? "ok" : "fail");
            }
        }
    }
    bu_print_table("events/s", rows, n, ours, 0);
    print_setup_table(rows, n, ours);
    if (csv) {
        for (int i = 0; i < n; i++) {
            fprintf(csv, "%s,%s,%d,median,%llu,,%.1f,%llu,%s\n", variant, impls[i].name, size,
                    (unsigned long long)o->count, bu_row_median(&rows[i]),
                    (unsigned long long)bu_median_u64(rows[i].callbacks, rows[i].nok),
                    rows[i].nok ? "ok" : "fail");
        }
        fflush(csv);
    }
    if (timeouts && size >= 1000) {
        char label[64];
        snprintf(label, sizeof label, "pipes+timeouts N=%d >= 1.1x libev", size);
        bu_check_target(label, rows, n, "libev", 1.1);
    }
    return failures;
}

int main(int argc, char **argv)
{
    pb_options o;
    parse_options(argc, argv, &o);
    bu_options bo = {.rounds = o.rounds, .timeout_s = o.timeout_s, .only = o.only};

    bu_impl impls[BU_MAX_IMPLS];
    int n = 0;
    for (int i = 0; libs[i]; i++) {
        impls[n++] = (bu_impl){libs[i]->name, run_pipes, libs[i], libs[i]->note};
    }
    n = bu_select_impls(&bo, impls, n, "asyncev libev libuv libevent");
    FILE *csv = bu_csv_open(o.csv_path, "variant,contender,pairs,round,count,elapsed_ns,"
                                        "events_per_s,setup_ns,status");

    char title[160];
    snprintf(title, sizeof title,
             "pipes: %llu writes per run, %d active; setup = start all "
             "watchers + 1st iteration",
             (unsigned long long)o.count, o.active);
    bu_print_header(title, &bo);
    rlim_t nofile = raise_nofile(&o);
    printf("RLIMIT_NOFILE soft limit: %llu\n", (unsigned long long)nofile);

    int failures = 0;
    for (int s = 0; s < o.nsizes; s++) {
        int size = o.sizes[s];
        if ((rlim_t)size * 2 + PB_FD_RESERVE > nofile) {
            printf("\nN = %d socketpairs skipped: needs %d fds, RLIMIT_NOFILE allows %llu "
                   "(largest N that fits: %llu)\n",
                   size, size * 2 + PB_FD_RESERVE, (unsigned long long)nofile,
                   (unsigned long long)(nofile > PB_FD_RESERVE ? (nofile - PB_FD_RESERVE) / 2 : 0));
            continue;
        }
        for (int v = 0; v < 2; v++) {
            if (o.variants & (1 << v)) {
                failures += run_case(&o, impls, n, size, v, csv);
            }
        }
    }
    return bu_finish(csv, failures);
}
