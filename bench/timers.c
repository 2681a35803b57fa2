/*
 * timers: the cost of timers, two workloads.
 *
 * million: the shape of libuv's million_timers benchmark. N timers (1,000,000 by default) are
 * initialised and started with timeouts spread 1000 per millisecond (so over 1 s for a million),
 * then the loop runs until every one has fired. Reported: the CPU seconds (user + system, from
 * getrusage of the child that runs it) spent starting them, and spent running the loop until
 * the last one fired. CPU, not wall time: the run phase waits about 1 s for the clock whatever
 * the library does.
 *
 * churn: N/10 timers (100,000 by default) are started with random timeouts far in the future,
 * then N operations (1,000,000 by default) each pick a random timer and do one of: start it if
 * stopped or stop it if started, stop and restart it with a new timeout, or "again" (restart
 * with its repeat interval). The random sequence is generated from one fixed seed before the
 * clock starts, so every library does exactly the same operations. The loop runs one
 * non-blocking iteration every 1024 operations, as a program's loop would between bursts.
 * Reported: operations per second. Check: afterwards the library's own "is active" agrees with
 * the expected state of every timer.
 *
 * libevent is not a contender: its timers are events with timeouts, another API shape, and the
 * issue compares timers with libev and libuv.
 */
#include "benchutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <asyncev.h>
#ifdef HAVE_LIBEV
#include <ev.h>
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif

#define TM_DEFAULT_COUNT 1000000
#define TM_PER_MS 1000 /* million: timers per millisecond of timeout */
#define TM_SEED 0x9e3779b97f4a7c15ull
#define TM_MIN_MS 10000 /* churn: timeouts 10 s .. 100 s, so none fires during the run */
#define TM_SPAN_MS 90000
#define TM_SWEEP 1024 /* churn: one non-blocking loop iteration per this many operations */

/* The two workloads; bu_params.threads carries which one a run is (no threads are used). */
enum { TM_MILLION = 1, TM_CHURN = 2 };

/* million: the result fields carry CPU times instead of what their names say. */
#define start_cpu_ns elapsed_ns /* CPU ns spent initialising and starting the timers */
#define run_cpu_ns callbacks    /* CPU ns spent in the loop until the last timer fired */

static int64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* Timeout of timer i in the million workload: 1 ms for the first 1000, 2 ms for the next... */
static uint64_t million_ms(uint64_t i)
{
    return 1 + i / TM_PER_MS;
}

/* ---- churn: the operation sequence, the same for every library ---------------------------- */

enum { OP_TOGGLE = 0, OP_RESTART = 1, OP_AGAIN = 2 };

typedef struct churn_plan {
    uint32_t ntimers;
    uint64_t nops;
    uint32_t *init_ms; /* initial timeout (= repeat) of each timer */
    uint32_t *idx;     /* operation k: which timer */
    uint32_t *ms;      /* operation k: new timeout for OP_RESTART and OP_TOGGLE's start */
    uint8_t *op;       /* operation k: OP_* */
    uint8_t *active;   /* expected state, updated as the operations are applied */
} churn_plan;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int plan_make(churn_plan *pl, uint64_t count, bu_result *r)
{
    pl->ntimers = (uint32_t)(count / 10 ? count / 10 : 1);
    pl->nops = count;
    pl->init_ms = malloc(pl->ntimers * sizeof *pl->init_ms);
    pl->active = malloc(pl->ntimers);
    pl->idx = malloc(count * sizeof *pl->idx);
    pl->ms = malloc(count * sizeof *pl->ms);
    pl->op = malloc(count);
    if (!pl->init_ms || !pl->active || !pl->idx || !pl->ms || !pl->op) {
        return bu_fail(r, "out of memory for the churn plan");
    }
    uint64_t s = TM_SEED;
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        pl->init_ms[i] = TM_MIN_MS + (uint32_t)(xorshift(&s) % TM_SPAN_MS);
        pl->active[i] = 1;
    }
    for (uint64_t k = 0; k < count; k++) {
        pl->idx[k] = (uint32_t)(xorshift(&s) % pl->ntimers);
        pl->ms[k] = TM_MIN_MS + (uint32_t)(xorshift(&s) % TM_SPAN_MS);
        pl->op[k] = (uint8_t)(xorshift(&s) % 3);
    }
    return 0;
}

/* The expected state after operation k (the library's own state is compared at the end). */
static void plan_apply(churn_plan *pl, uint64_t k)
{
    uint32_t i = pl->idx[k];
    pl->active[i] = pl->op[k] == OP_TOGGLE ? !pl->active[i] : 1;
}

/* Compares the library's view (is_active[i]) with the plan; 0 or -1 after bu_fail(). */
static int plan_check(const churn_plan *pl, const uint8_t *is_active, bu_result *r)
{
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        if (!is_active[i] != !pl->active[i]) {
            return bu_fail(r, "timer %u: active=%d, expected %d", i, is_active[i], pl->active[i]);
        }
    }
    return 0;
}

static void plan_free(churn_plan *pl)
{
    free(pl->init_ms);
    free(pl->active);
    free(pl->idx);
    free(pl->ms);
    free(pl->op);
}

/* Allocates n watchers of `size` bytes, touched so that page faults land outside the clock. */
static void *alloc_touched(size_t n, size_t size)
{
    void *p = malloc(n * size);
    if (p) {
        memset(p, 0, n * size);
    }
    return p;
}

/* ---- asyncev ---------------------------------------------------------------------------- */

static uint64_t tm_aev_fired;

static void tm_aev_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    tm_aev_fired++;
}

static void tm_aev_never_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    tm_aev_fired++; /* a churn timer firing is an error: the check below catches it */
}

static int tm_aev_million(aev_loop *loop, uint64_t n, bu_result *r)
{
    aev_timer *t = alloc_touched(n, sizeof *t);
    if (!t) {
        return bu_fail(r, "out of memory");
    }
    int64_t c0 = cpu_ns();
    for (uint64_t i = 0; i < n; i++) {
        aev_timer_init(&t[i], loop, tm_aev_cb, AEV_MSEC(million_ms(i)), 0);
        aev_timer_start(&t[i]);
    }
    int64_t c1 = cpu_ns();
    aev_run(loop, AEV_RUN_DEFAULT);
    int64_t c2 = cpu_ns();
    free(t);
    r->start_cpu_ns = c1 - c0;
    r->run_cpu_ns = (uint64_t)(c2 - c1);
    r->ops = tm_aev_fired;
    return tm_aev_fired == n ? 0
                             : bu_fail(r, "%llu of %llu timers fired",
                                       (unsigned long long)tm_aev_fired, (unsigned long long)n);
}

static int tm_aev_churn(aev_loop *loop, churn_plan *pl, bu_result *r)
{
    aev_timer *t = alloc_touched(pl->ntimers, sizeof *t);
    uint8_t *act = malloc(pl->ntimers);
    if (!t || !act) {
        return bu_fail(r, "out of memory");
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        aev_time_t ms = AEV_MSEC(pl->init_ms[i]);
        aev_timer_init(&t[i], loop, tm_aev_never_cb, ms, ms);
        aev_timer_start(&t[i]);
    }
    int64_t t0 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        aev_timer *w = &t[pl->idx[k]];
        switch (pl->op[k]) {
        case OP_TOGGLE:
            if (aev_is_active(&w->base)) {
                aev_timer_stop(w);
            } else {
                aev_timer_set(w, AEV_MSEC(pl->ms[k]), aev_timer_repeat(w));
                aev_timer_start(w);
            }
            break;
        case OP_RESTART:
            aev_timer_stop(w);
            aev_timer_set(w, AEV_MSEC(pl->ms[k]), aev_timer_repeat(w));
            aev_timer_start(w);
            break;
        default:
            aev_timer_again(w);
            break;
        }
        if (k % TM_SWEEP == TM_SWEEP - 1) {
            aev_run(loop, AEV_RUN_NOWAIT);
        }
    }
    int64_t t1 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        plan_apply(pl, k);
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        act[i] = aev_is_active(&t[i].base);
        aev_timer_stop(&t[i]);
    }
    r->elapsed_ns = t1 - t0;
    r->ops = pl->nops;
    int rc = tm_aev_fired ? bu_fail(r, "%llu churn timers fired", (unsigned long long)tm_aev_fired)
                          : plan_check(pl, act, r);
    free(t);
    free(act);
    return rc;
}

static int run_aev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    aev_loop *loop;
    int rc = aev_loop_new(&loop, 0);
    if (rc < 0) {
        return bu_fail(r, "aev_loop_new: %s", aev_strerror(rc));
    }
    churn_plan pl = {0};
    if (p->threads == TM_MILLION) {
        rc = tm_aev_million(loop, p->count, r);
    } else {
        rc = plan_make(&pl, p->count, r);
        rc = rc ? rc : tm_aev_churn(loop, &pl, r);
        plan_free(&pl);
    }
    aev_loop_destroy(loop);
    return rc;
}

/* ---- libev ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBEV
static uint64_t tm_ev_fired;

static void tm_ev_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    tm_ev_fired++;
}

static int tm_ev_million(struct ev_loop *loop, uint64_t n, bu_result *r)
{
    ev_timer *t = alloc_touched(n, sizeof *t);
    if (!t) {
        return bu_fail(r, "out of memory");
    }
    int64_t c0 = cpu_ns();
    for (uint64_t i = 0; i < n; i++) {
        ev_timer_init(&t[i], tm_ev_cb, (double)million_ms(i) / 1e3, 0.);
        ev_timer_start(loop, &t[i]);
    }
    int64_t c1 = cpu_ns();
    ev_run(loop, 0);
    int64_t c2 = cpu_ns();
    free(t);
    r->start_cpu_ns = c1 - c0;
    r->run_cpu_ns = (uint64_t)(c2 - c1);
    r->ops = tm_ev_fired;
    return tm_ev_fired == n ? 0
                            : bu_fail(r, "%llu of %llu timers fired",
                                      (unsigned long long)tm_ev_fired, (unsigned long long)n);
}

static int tm_ev_churn(struct ev_loop *loop, churn_plan *pl, bu_result *r)
{
    ev_timer *t = alloc_touched(pl->ntimers, sizeof *t);
    uint8_t *act = malloc(pl->ntimers);
    if (!t || !act) {
        return bu_fail(r, "out of memory");
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        double s = pl->init_ms[i] / 1e3;
        ev_timer_init(&t[i], tm_ev_cb, s, s);
        ev_timer_start(loop, &t[i]);
    }
    int64_t t0 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        ev_timer *w = &t[pl->idx[k]];
        switch (pl->op[k]) {
        case OP_TOGGLE:
            if (ev_is_active(w)) {
                ev_timer_stop(loop, w);
            } else {
                ev_timer_set(w, pl->ms[k] / 1e3, w->repeat);
                ev_timer_start(loop, w);
            }
            break;
        case OP_RESTART:
            ev_timer_stop(loop, w);
            ev_timer_set(w, pl->ms[k] / 1e3, w->repeat);
            ev_timer_start(loop, w);
            break;
        default:
            ev_timer_again(loop, w);
            break;
        }
        if (k % TM_SWEEP == TM_SWEEP - 1) {
            ev_run(loop, EVRUN_NOWAIT);
        }
    }
    int64_t t1 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        plan_apply(pl, k);
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        act[i] = ev_is_active(&t[i]) != 0;
        ev_timer_stop(loop, &t[i]);
    }
    r->elapsed_ns = t1 - t0;
    r->ops = pl->nops;
    int rc = tm_ev_fired ? bu_fail(r, "%llu churn timers fired", (unsigned long long)tm_ev_fired)
                         : plan_check(pl, act, r);
    free(t);
    free(act);
    return rc;
}

static int run_ev(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        return bu_fail(r, "ev_loop_new failed");
    }
    churn_plan pl = {0};
    int rc;
    if (p->threads == TM_MILLION) {
        rc = tm_ev_million(loop, p->count, r);
    } else {
        rc = plan_make(&pl, p->count, r);
        rc = rc ? rc : tm_ev_churn(loop, &pl, r);
        plan_free(&pl);
    }
    ev_loop_destroy(loop);
    return rc;
}
#endif

/* ---- libuv ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBUV
static uint64_t tm_uv_fired;

static void tm_uv_cb(uv_timer_t *w)
{
    (void)w;
    tm_uv_fired++;
}

/* Closes every handle of the loop and frees the loop's resources. */
static void tm_uv_close_all(uv_loop_t *loop, uv_timer_t *t, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        uv_close((uv_handle_t *)&t[i], NULL);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

static int tm_uv_million(uv_loop_t *loop, uint64_t n, bu_result *r)
{
    uv_timer_t *t = alloc_touched(n, sizeof *t);
    if (!t) {
        return bu_fail(r, "out of memory");
    }
    int64_t c0 = cpu_ns();
    for (uint64_t i = 0; i < n; i++) {
        uv_timer_init(loop, &t[i]);
        uv_timer_start(&t[i], tm_uv_cb, million_ms(i), 0);
    }
    int64_t c1 = cpu_ns();
    uv_run(loop, UV_RUN_DEFAULT);
    int64_t c2 = cpu_ns();
    tm_uv_close_all(loop, t, n);
    free(t);
    r->start_cpu_ns = c1 - c0;
    r->run_cpu_ns = (uint64_t)(c2 - c1);
    r->ops = tm_uv_fired;
    return tm_uv_fired == n ? 0
                            : bu_fail(r, "%llu of %llu timers fired",
                                      (unsigned long long)tm_uv_fired, (unsigned long long)n);
}

static int tm_uv_churn(uv_loop_t *loop, churn_plan *pl, bu_result *r)
{
    uv_timer_t *t = alloc_touched(pl->ntimers, sizeof *t);
    uint8_t *act = malloc(pl->ntimers);
    if (!t || !act) {
        return bu_fail(r, "out of memory");
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        uv_timer_init(loop, &t[i]);
        uv_timer_start(&t[i], tm_uv_cb, pl->init_ms[i], pl->init_ms[i]);
    }
    int64_t t0 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        uv_timer_t *w = &t[pl->idx[k]];
        switch (pl->op[k]) {
        case OP_TOGGLE:
            if (uv_is_active((uv_handle_t *)w)) {
                uv_timer_stop(w);
            } else {
                uv_timer_start(w, tm_uv_cb, pl->ms[k], uv_timer_get_repeat(w));
            }
            break;
        case OP_RESTART:
            /* uv_timer_start() on an active timer stops it first, so this is one call. */
            uv_timer_start(w, tm_uv_cb, pl->ms[k], uv_timer_get_repeat(w));
            break;
        default:
            uv_timer_again(w);
            break;
        }
        if (k % TM_SWEEP == TM_SWEEP - 1) {
            uv_run(loop, UV_RUN_NOWAIT);
        }
    }
    int64_t t1 = bu_now();
    for (uint64_t k = 0; k < pl->nops; k++) {
        plan_apply(pl, k);
    }
    for (uint32_t i = 0; i < pl->ntimers; i++) {
        act[i] = uv_is_active((uv_handle_t *)&t[i]) != 0;
    }
    tm_uv_close_all(loop, t, pl->ntimers);
    r->elapsed_ns = t1 - t0;
    r->ops = pl->nops;
    int rc = tm_uv_fired ? bu_fail(r, "%llu churn timers fired", (unsigned long long)tm_uv_fired)
                         : plan_check(pl, act, r);
    free(t);
    free(act);
    return rc;
}

static int run_uv(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0) {
        return bu_fail(r, "uv_loop_init: %s", uv_strerror(rc));
    }
    churn_plan pl = {0};
    if (p->threads == TM_MILLION) {
        rc = tm_uv_million(&loop, p->count, r);
    } else {
        rc = plan_make(&pl, p->count, r);
        rc = rc ? rc : tm_uv_churn(&loop, &pl, r);
        plan_free(&pl);
    }
    return rc;
}
#endif

/* ---- the million table: CPU seconds, lower is better -------------------------------------- */

typedef struct cpu_row {
    const bu_impl *impl;
    double start_s[BU_MAX_ROUNDS];
    double run_s[BU_MAX_ROUNDS];
    double total_s[BU_MAX_ROUNDS]; /* start + run of the same round */
    int nok;
    int nfail;
    char lasterr[160];
} cpu_row;

enum { CPU_START, CPU_RUN, CPU_TOTAL };

static const double *cpu_values(const cpu_row *row, int which)
{
    return which == CPU_START ? row->start_s : which == CPU_RUN ? row->run_s : row->total_s;
}

static void cpu_print(const cpu_row *rows, int n, int which, const char *label)
{
    double ours = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].impl->name, "asyncev") == 0 && rows[i].nok) {
            ours = bu_median(cpu_values(&rows[i], which), rows[i].nok);
        }
    }
    printf("%-16s %12s %10s %10s %13s %5s\n", label, "CPU s", "min", "max", "asyncev/this", "runs");
    for (int i = 0; i < n; i++) {
        const cpu_row *row = &rows[i];
        if (row->nok == 0) {
            printf("%-16s %12s %10s %10s %13s %2d/%-2d  %s\n", row->impl->name, "FAILED", "-", "-",
                   "-", 0, row->nfail, row->lasterr);
            continue;
        }
        const double *v = cpu_values(row, which);
        double m = bu_median(v, row->nok), mn = v[0], mx = v[0];
        for (int k = 1; k < row->nok; k++) {
            mn = v[k] < mn ? v[k] : mn;
            mx = v[k] > mx ? v[k] : mx;
        }
        char ratio[32] = "-";
        if (ours > 0 && m > 0) {
            snprintf(ratio, sizeof ratio, "%.2fx", ours / m);
        }
        printf("%-16s %12.3f %10.3f %10.3f %13s %2d/%-2d\n", row->impl->name, m, mn, mx, ratio,
               row->nok, row->nok + row->nfail);
    }
}

/* Prints the target line for one phase: asyncev CPU <= 0.8x libev's. */
static void cpu_target(const cpu_row *rows, int n, int which, const char *label)
{
    const cpu_row *ours = NULL, *ev = NULL;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].impl->name, "asyncev") == 0) {
            ours = &rows[i];
        } else if (strcmp(rows[i].impl->name, "libev") == 0) {
            ev = &rows[i];
        }
    }
    if (!ours || !ev || !ours->nok || !ev->nok) {
        printf("  target %-40s: not judged (a row is missing or failed)\n", label);
        return;
    }
    double a = bu_median(cpu_values(ours, which), ours->nok);
    double b = bu_median(cpu_values(ev, which), ev->nok);
    double ratio = b > 0 ? a / b : 0;
    printf("  target %-40s: asyncev CPU / libev CPU = %.3fx, need <= 0.800x: %s\n", label, ratio,
           ratio <= 0.8 ? "met" : "MISSED");
}

static void cpu_record(cpu_row *row, const bu_result *r, FILE *csv, int round, uint64_t count)
{
    if (r->ok) {
        row->start_s[row->nok] = (double)r->start_cpu_ns / 1e9;
        row->run_s[row->nok] = (double)r->run_cpu_ns / 1e9;
        row->total_s[row->nok] = row->start_s[row->nok] + row->run_s[row->nok];
        row->nok++;
    } else {
        row->nfail++;
        snprintf(row->lasterr, sizeof row->lasterr, "%s", r->err);
    }
    if (csv) {
        fprintf(csv, "million,%s,1,%d,%llu,%lld,%llu,,%s\n", row->impl->name, round,
                (unsigned long long)count, (long long)r->start_cpu_ns,
                (unsigned long long)r->run_cpu_ns, r->ok ? "ok" : "fail");
        fflush(csv);
    }
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bu_options o;
    bu_parse_options(argc, argv, &o, "timers",
                     "million: CPU seconds to start N timers (1000 per ms of timeout) and to run\n"
                     "them to expiry; churn: start/stop/again ops/s on N/10 active timers, N ops.\n"
                     "--count N sets N (default 1000000 here).",
                     0);
    if (!o.count_given) {
        o.count = TM_DEFAULT_COUNT;
    }
    if (o.count > UINT32_MAX) {
        fprintf(stderr, "--count: at most %u\n", UINT32_MAX);
        return 2;
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
    FILE *csv = bu_csv_open(o.csv_path, BU_CSV_HEADER "\n# million rows: elapsed_ns = start "
                                                      "CPU ns, rate_per_s = run CPU ns");

    char title[160];
    snprintf(title, sizeof title,
             "timers: million = %llu timers, %d per ms; churn = %llu ops on %llu timers",
             (unsigned long long)o.count, TM_PER_MS, (unsigned long long)o.count,
             (unsigned long long)(o.count / 10 ? o.count / 10 : 1));
    bu_print_header(title, &o);
    printf("libevent: not a contender (timers compared with libev and libuv)\n");

    static cpu_row mrows[BU_MAX_IMPLS];
    static bu_row crows[BU_MAX_IMPLS];
    int ours = bu_rows_init(crows, impls, n);
    for (int i = 0; i < n; i++) {
        mrows[i].impl = &impls[i];
    }
    bu_params pm = {.count = o.count, .threads = TM_MILLION};
    bu_params pc = {.count = o.count, .threads = TM_CHURN};
    int failures = 0;
    for (int round = 1; round <= o.rounds; round++) {
        for (int i = 0; i < n; i++) {
            bu_result r;
            if (!bu_run_isolated(&impls[i], &pm, o.timeout_s, &r)) {
                failures++;
                fprintf(stderr, "round %d, %s, million: %s\n", round, impls[i].name, r.err);
            }
            cpu_record(&mrows[i], &r, csv, round, o.count);
            if (!bu_run_isolated(&impls[i], &pc, o.timeout_s, &r)) {
                failures++;
                fprintf(stderr, "round %d, %s, churn: %s\n", round, impls[i].name, r.err);
            }
            bu_record(&crows[i], &r, csv, "churn", 1, round, o.count);
        }
    }

    printf("\nmillion timers: start (init + start of every timer)\n");
    cpu_print(mrows, n, CPU_START, "contender");
    printf("\nmillion timers: run (the loop until the last one fired)\n");
    cpu_print(mrows, n, CPU_RUN, "contender");
    printf("\nmillion timers: total (start + run, per round)\n");
    cpu_print(mrows, n, CPU_TOTAL, "contender");
    printf("  (asyncev/this: asyncev's CPU / this row's CPU; below 1.00x asyncev used less)\n\n");
    /* The target is the workload's CPU, start and run together; each phase is judged
     * too, so that a phase that is worse than libev's shows. */
    cpu_target(mrows, n, CPU_TOTAL, "million timers CPU <= 0.8x libev");
    cpu_target(mrows, n, CPU_START, "million timers start CPU <= 0.8x libev");
    cpu_target(mrows, n, CPU_RUN, "million timers run CPU <= 0.8x libev");

    printf("\ntimer churn: start/stop/again on random timers\n");
    bu_print_table("ops/s", crows, n, ours, 0);
    bu_csv_medians(csv, "churn", 1, o.count, crows, n);
    return bu_finish(csv, failures);
}
