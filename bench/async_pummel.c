/*
 * async_pummel: the cost of sending, as sends per second, when T threads send to ONE async
 * watcher as fast as they can while its loop thread runs the callback.
 *
 * This is what a busy producer pays to notify a consumer loop. Sends made before the loop notes
 * the watcher coalesce into one callback, so a good implementation makes a send that finds the
 * watcher already sent nearly free (no system call, no lock, no write to a shared cache line).
 * The rate is total sends / wall time from the first sender's start until the last sender is
 * done; the callbacks column shows how many wakeups the loop thread actually ran.
 */
#include "benchutil.h"
#include "loops.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define PM_MAX_SENDERS 64

typedef struct pm_ctx pm_ctx;

typedef struct pm_sender {
    pm_ctx *ctx;
    uint64_t quota; /* sends to make, unless sending for a duration */
    uint64_t sent;
    int64_t t_start, t_end; /* taken by the sender itself around its sends */
} pm_sender;

struct pm_ctx {
    bl_loop loop;
    int threads;
    int64_t duration_ns;
    uint64_t callbacks; /* loop thread only; read after it is joined */
    atomic_int done;
    atomic_int last_send_returned; /* main's final send has returned: the loop may go */
    atomic_int stop_sending;
    atomic_int setup_failed;
    pthread_barrier_t start; /* the loop thread, the senders and the main thread */
    char err[160];
    pm_sender senders[PM_MAX_SENDERS];
};

static void on_async(bl_loop *l)
{
    pm_ctx *c = l->arg;
    c->callbacks++;
    if (atomic_load_explicit(&c->done, memory_order_acquire)) {
        l->ops->stop(l);
    }
}

static void *loop_main(void *arg)
{
    pm_ctx *c = arg;
    const bl_ops *ops = c->loop.ops;
    int ok = ops->setup(&c->loop, c->err, sizeof c->err) == 0;
    if (!ok) {
        atomic_store(&c->setup_failed, 1);
    }
    pthread_barrier_wait(&c->start);
    if (!ok) {
        return NULL;
    }
    if (!atomic_load(&c->setup_failed)) {
        if (ops->run(&c->loop, c->err, sizeof c->err) == 0 && !atomic_load(&c->done)) {
            snprintf(c->err, sizeof c->err, "the loop returned before the senders were done");
        }
        /* A callback of an earlier send can see done and stop the loop while main's final send
         * is still inside the library: tearing down now would free what that send touches. */
        while (!atomic_load(&c->last_send_returned)) {
            sched_yield();
        }
    }
    ops->teardown(&c->loop);
    return NULL;
}

static void *sender_main(void *arg)
{
    pm_sender *s = arg;
    pm_ctx *c = s->ctx;
    bl_loop *l = &c->loop;
    void (*send)(bl_loop *) = l->ops->send;

    pthread_barrier_wait(&c->start);
    if (atomic_load(&c->setup_failed)) {
        return NULL;
    }
    uint64_t n = 0;
    s->t_start = bu_now();
    if (c->duration_ns > 0) {
        while (!atomic_load_explicit(&c->stop_sending, memory_order_relaxed)) {
            send(l);
            n++;
        }
    } else {
        for (; n < s->quota; n++) {
            send(l);
        }
    }
    s->t_end = bu_now();
    s->sent = n;
    return NULL;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int run_pummel(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    const bl_ops *ops = impl->ctx;
    if (p->threads < 1 || p->threads > PM_MAX_SENDERS) {
        return bu_fail(r, "thread count %d out of range", p->threads);
    }
    if (ops->process_init(r->err, sizeof r->err) != 0) {
        return -1;
    }
    pm_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        return bu_fail(r, "out of memory");
    }
    c->loop.ops = ops;
    c->loop.cb = on_async;
    c->loop.arg = c;
    c->threads = p->threads;
    c->duration_ns = p->duration_ns;
    pthread_barrier_init(&c->start, NULL, (unsigned)p->threads + 2);

    pthread_t loop_th, th[PM_MAX_SENDERS];
    if (pthread_create(&loop_th, NULL, loop_main, c) != 0) {
        return bu_fail(r, "pthread_create failed");
    }
    uint64_t quota = p->count / (uint64_t)p->threads;
    for (int i = 0; i < p->threads; i++) {
        c->senders[i].ctx = c;
        c->senders[i].quota = quota > 0 ? quota : 1;
        if (pthread_create(&th[i], NULL, sender_main, &c->senders[i]) != 0) {
            return bu_fail(r, "pthread_create failed");
        }
    }
    pthread_barrier_wait(&c->start);
    if (atomic_load(&c->setup_failed)) {
        pthread_join(loop_th, NULL);
        return bu_fail(r, "%s", c->err);
    }
    if (c->duration_ns > 0) {
        sleep_ns(c->duration_ns);
        atomic_store(&c->stop_sending, 1);
    }
    /* The senders time themselves: a main thread that is scheduled late after the barrier
     * could otherwise start the clock after fast senders were already done. */
    uint64_t total = 0;
    int64_t t0 = INT64_MAX, t1 = INT64_MIN;
    for (int i = 0; i < p->threads; i++) {
        pthread_join(th[i], NULL);
        total += c->senders[i].sent;
        t0 = c->senders[i].t_start < t0 ? c->senders[i].t_start : t0;
        t1 = c->senders[i].t_end > t1 ? c->senders[i].t_end : t1;
    }
    /* The callback run for this last send sees done and stops the loop. */
    atomic_store_explicit(&c->done, 1, memory_order_release);
    ops->send(&c->loop);
    atomic_store(&c->last_send_returned, 1);
    pthread_join(loop_th, NULL);

    if (c->err[0]) {
        return bu_fail(r, "%s", c->err);
    }
    /* Coalescing may merge any number of sends, but there is at least one callback (the last
     * send's) and never more than one per send. */
    if (c->callbacks < 1 || c->callbacks > total + 1) {
        return bu_fail(r, "%llu callbacks for %llu sends", (unsigned long long)c->callbacks,
                       (unsigned long long)total + 1);
    }
    r->elapsed_ns = t1 - t0;
    r->ops = total;
    r->callbacks = c->callbacks;
    return 0;
}

int main(int argc, char **argv)
{
    bu_options o;
    bu_parse_options(argc, argv, &o, "async_pummel",
                     "Sends per second when T threads send to one async watcher as fast as\n"
                     "they can, for asyncev and every peer library built in.",
                     1);

    bu_impl impls[BU_MAX_IMPLS];
    int n = 0;
    for (int i = 0; bl_all[i]; i++) {
        impls[n++] = (bu_impl){bl_all[i]->name, run_pummel, bl_all[i], bl_all[i]->note};
    }
    n = bu_select_impls(&o, impls, n, "asyncev libev libuv libevent");
    for (int t = 0; t < o.nthreads; t++) {
        if (o.threads[t] > PM_MAX_SENDERS) {
            fprintf(stderr, "--threads: at most %d\n", PM_MAX_SENDERS);
            return 2;
        }
    }
    FILE *csv = bu_csv_open(o.csv_path, BU_CSV_HEADER);

    char title[160];
    if (o.duration_ns > 0) {
        snprintf(title, sizeof title,
                 "async_pummel: T threads send to one watcher for %lld ms per run",
                 (long long)(o.duration_ns / 1000000));
    } else {
        snprintf(title, sizeof title,
                 "async_pummel: T threads send to one watcher, %llu sends per run in all",
                 (unsigned long long)o.count);
    }
    bu_print_header(title, &o);

    int failures = 0;
    int missed = 0, unjudged = 0;
    for (int t = 0; t < o.nthreads; t++) {
        static bu_row rows[BU_MAX_IMPLS];
        int ours = bu_rows_init(rows, impls, n);
        bu_params p = {.count = o.count, .threads = o.threads[t], .duration_ns = o.duration_ns};
        for (int round = 1; round <= o.rounds; round++) {
            for (int i = 0; i < n; i++) {
                bu_result r;
                if (!bu_run_isolated(&impls[i], &p, o.timeout_s, &r)) {
                    failures++;
                    fprintf(stderr, "T=%d round %d, %s: %s\n", p.threads, round, impls[i].name,
                            r.err);
                }
                bu_record(&rows[i], &r, csv, "pummel", p.threads, round, o.count);
            }
        }
        printf("\nT = %d sender thread%s\n", p.threads, p.threads == 1 ? "" : "s");
        bu_print_table("sends/s", rows, n, ours, 1);
        bu_csv_medians(csv, "pummel", p.threads, o.count, rows, n);
        char label[64];
        snprintf(label, sizeof label, "pummel T=%d >= 2x libev sends/s", p.threads);
        int met = bu_check_target(label, rows, n, "libev", 2.0);
        missed += met == 0;
        unjudged += met < 0;
    }
    if (csv) {
        fclose(csv);
    }
    printf("\npummel target (>= 2x libev sends/s at every T): %s\n", missed     ? "MISSED"
                                                                     : unjudged ? "not judged"
                                                                                : "met");
    if (failures) {
        printf("%d run(s) failed\n", failures);
    }
    return failures ? 1 : 0;
}
