/*
 * loop_count: loop iterations per second with one idle watcher (the shape of libuv's
 * loop_count benchmark).
 *
 * One loop, one idle watcher. The idle callback counts its calls and stops the watcher after N
 * of them; with nothing else active the loop then returns. An active idle watcher makes every
 * iteration poll without blocking, so the rate is the cost of one full loop iteration: the
 * poll call that returns at once, the prepare/check phases, the timer and pending queues, and
 * one callback.
 *
 * libevent has no idle watcher (its nearest, a zero timeout re-added from its own callback, is
 * a timer, not an idle), so it is not a contender here.
 */
#include "benchutil.h"

#include <stdlib.h>

#include <asyncev.h>
#ifdef HAVE_LIBEV
#include <ev.h>
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif

#define LC_DEFAULT_COUNT 2000000

/* The counter of one run; each library's callback finds it through the watcher's data. */
typedef struct lc_state {
    uint64_t target;
    uint64_t ticks;
} lc_state;

/* Fills r from the state after the loop returned: the callback must have run exactly N times. */
static int lc_finish(const lc_state *st, int64_t t0, int64_t t1, bu_result *r)
{
    r->elapsed_ns = t1 - t0;
    r->ops = st->ticks;
    r->callbacks = st->ticks;
    if (st->ticks != st->target) {
        return bu_fail(r, "idle callback ran %llu times, expected %llu",
                       (unsigned long long)st->ticks, (unsigned long long)st->target);
    }
    return 0;
}

/* ---- asyncev ---------------------------------------------------------------------------- */

static void lc_aev_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    lc_state *st = w->data;
    if (++st->ticks == st->target) {
        aev_idle_stop((aev_idle *)w);
    }
}

static int run_aev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    aev_loop *loop;
    int rc = aev_loop_new(&loop, 0);
    if (rc < 0) {
        return bu_fail(r, "aev_loop_new: %s", aev_strerror(rc));
    }
    lc_state st = {.target = p->count};
    aev_idle idle;
    aev_idle_init(&idle, loop, lc_aev_cb);
    idle.base.data = &st;
    aev_idle_start(&idle);
    int64_t t0 = bu_now();
    rc = aev_run(loop, AEV_RUN_DEFAULT);
    int64_t t1 = bu_now();
    aev_loop_destroy(loop);
    if (rc < 0) {
        return bu_fail(r, "aev_run: %s", aev_strerror(rc));
    }
    return lc_finish(&st, t0, t1, r);
}

/* ---- libev ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBEV
static void lc_ev_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    lc_state *st = w->data;
    if (++st->ticks == st->target) {
        ev_idle_stop(loop, w);
    }
}

static int run_ev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        return bu_fail(r, "ev_loop_new failed");
    }
    lc_state st = {.target = p->count};
    ev_idle idle;
    ev_idle_init(&idle, lc_ev_cb);
    idle.data = &st;
    ev_idle_start(loop, &idle);
    int64_t t0 = bu_now();
    ev_run(loop, 0);
    int64_t t1 = bu_now();
    ev_loop_destroy(loop);
    return lc_finish(&st, t0, t1, r);
}
#endif

/* ---- libuv ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBUV
static void lc_uv_cb(uv_idle_t *w)
{
    lc_state *st = w->data;
    if (++st->ticks == st->target) {
        uv_idle_stop(w);
    }
}

static int run_uv(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0) {
        return bu_fail(r, "uv_loop_init: %s", uv_strerror(rc));
    }
    lc_state st = {.target = p->count};
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    idle.data = &st;
    uv_idle_start(&idle, lc_uv_cb);
    int64_t t0 = bu_now();
    uv_run(&loop, UV_RUN_DEFAULT);
    int64_t t1 = bu_now();
    uv_close((uv_handle_t *)&idle, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return lc_finish(&st, t0, t1, r);
}
#endif

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bu_options o;
    bu_parse_options(argc, argv, &o, "loop_count",
                     "Loop iterations per second with one idle watcher that stops itself after\n"
                     "N calls (--count N, default 2000000 here), for asyncev, libev and libuv.",
                     0);
    if (!o.count_given) {
        o.count = LC_DEFAULT_COUNT;
    }

    bu_impl impls[] = {
        {"asyncev", run_aev, NULL, NULL},
#ifdef HAVE_LIBEV
        {"libev", run_ev, NULL, NULL},
#endif
#ifdef HAVE_LIBUV
        {"libuv", run_uv, NULL, NULL},
#endif
    };
    int n =
        bu_select_impls(&o, impls, (int)(sizeof impls / sizeof impls[0]), "asyncev libev libuv");
    FILE *csv = bu_csv_open(o.csv_path, BU_CSV_HEADER);

    char title[128];
    snprintf(title, sizeof title, "loop_count: %llu iterations per run, one idle watcher",
             (unsigned long long)o.count);
    bu_print_header(title, &o);
    printf("libevent: not a contender (no idle watcher)\n");

    static bu_row rows[BU_MAX_IMPLS];
    int ours = bu_rows_init(rows, impls, n);
    bu_params p = {.count = o.count, .threads = 1};
    int failures = 0;
    for (int round = 1; round <= o.rounds; round++) {
        for (int i = 0; i < n; i++) {
            bu_result r;
            if (!bu_run_isolated(&impls[i], &p, o.timeout_s, &r)) {
                failures++;
                fprintf(stderr, "round %d, %s: %s\n", round, impls[i].name, r.err);
            }
            bu_record(&rows[i], &r, csv, "loop_count", 1, round, o.count);
        }
    }

    printf("\n");
    bu_print_table("iterations/s", rows, n, ours, 0);
    bu_csv_medians(csv, "loop_count", 1, o.count, rows, n);
    printf("\n");
    bu_check_target("loop iterations >= 1.2x libev", rows, n, "libev", 1.2);
    return bu_finish(csv, failures);
}
