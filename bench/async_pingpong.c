/*
 * async_pingpong: the latency of a cross-thread wakeup, as round trips per second.
 *
 * Two threads, each running its own loop with one async watcher. Thread A sends to B's watcher;
 * B's callback sends back to A's; A's callback sends to B again, N times. Exactly one message
 * is in flight, so every round trip is two full wakeups of a loop that had nothing else to do:
 * what a program pays when it hands work to another loop thread and waits for the answer.
 *
 * The floor is the same exchange with no loop at all: two threads doing blocking read() and
 * write() on two eventfds. A loop can only add to that; how much it adds is its overhead.
 */
#include "benchutil.h"
#include "loops.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* State shared by the two sides of one run. */
typedef struct pp_shared {
    uint64_t count;
    /* Odd while a message travels to B, even while one travels to A: a callback that finds
     * the wrong value ran without a send, or saw the send before the data written before it. */
    atomic_uint_fast64_t ball;
    atomic_int done;
    atomic_int setup_failed;
    atomic_uint_fast64_t bad; /* callbacks that found the wrong ball */
    pthread_barrier_t ready;
    int64_t t0, t1;
} pp_shared;

typedef struct pp_side {
    bl_loop loop;
    struct pp_side *peer;
    pp_shared *sh;
    int is_a;
    uint64_t received;
    int setup_ok;
    char err[160];
} pp_side;

/* B: answer every message until A says it is done. */
static void on_message_b(pp_side *s)
{
    pp_shared *sh = s->sh;
    if (atomic_load_explicit(&sh->done, memory_order_acquire)) {
        s->loop.ops->stop(&s->loop);
        return;
    }
    uint_fast64_t ball = atomic_load_explicit(&sh->ball, memory_order_relaxed);
    if (ball != 2 * s->received + 1) {
        atomic_fetch_add(&sh->bad, 1);
    }
    s->received++;
    atomic_store_explicit(&sh->ball, ball + 1, memory_order_relaxed);
    s->peer->loop.ops->send(&s->peer->loop);
}

/* A: count the answer and serve again, or finish and tell B to stop. */
static void on_message_a(pp_side *s)
{
    pp_shared *sh = s->sh;
    uint_fast64_t ball = atomic_load_explicit(&sh->ball, memory_order_relaxed);
    if (ball != 2 * s->received + 2) {
        atomic_fetch_add(&sh->bad, 1);
    }
    if (++s->received == sh->count) {
        sh->t1 = bu_now();
        atomic_store_explicit(&sh->done, 1, memory_order_release);
        s->peer->loop.ops->send(&s->peer->loop);
        s->loop.ops->stop(&s->loop);
        return;
    }
    atomic_store_explicit(&sh->ball, ball + 1, memory_order_relaxed);
    s->peer->loop.ops->send(&s->peer->loop);
}

static void on_message(bl_loop *l)
{
    pp_side *s = l->arg;
    if (s->is_a) {
        on_message_a(s);
    } else {
        on_message_b(s);
    }
}

static void *side_main(void *arg)
{
    pp_side *s = arg;
    pp_shared *sh = s->sh;
    const bl_ops *ops = s->loop.ops;

    s->setup_ok = ops->setup(&s->loop, s->err, sizeof s->err) == 0;
    if (!s->setup_ok) {
        atomic_store(&sh->setup_failed, 1);
    }
    /* Both watchers must exist before A's first send to B. */
    pthread_barrier_wait(&sh->ready);
    if (atomic_load(&sh->setup_failed)) {
        if (s->setup_ok) {
            ops->teardown(&s->loop);
        }
        return NULL;
    }
    if (s->is_a) {
        sh->t0 = bu_now();
        atomic_store_explicit(&sh->ball, 1, memory_order_relaxed);
        s->peer->loop.ops->send(&s->peer->loop);
    }
    if (ops->run(&s->loop, s->err, sizeof s->err) == 0 && !atomic_load(&sh->done)) {
        snprintf(s->err, sizeof s->err, "the loop returned before the last round trip");
    }
    if (s->err[0]) {
        /* Release the other side, which would otherwise wait for a message forever. */
        atomic_store(&sh->done, 1);
        s->peer->loop.ops->send(&s->peer->loop);
    }
    ops->teardown(&s->loop);
    return NULL;
}

static int run_loops(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    const bl_ops *ops = impl->ctx;
    if (ops->process_init(r->err, sizeof r->err) != 0) {
        return -1;
    }
    pp_shared *sh = calloc(1, sizeof *sh);
    pp_side *side = calloc(2, sizeof *side);
    if (!sh || !side) {
        return bu_fail(r, "out of memory");
    }
    sh->count = p->count;
    pthread_barrier_init(&sh->ready, NULL, 2);
    for (int i = 0; i < 2; i++) {
        side[i].loop.ops = ops;
        side[i].loop.cb = on_message;
        side[i].loop.arg = &side[i];
        side[i].peer = &side[1 - i];
        side[i].sh = sh;
        side[i].is_a = i == 0;
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        if (pthread_create(&th[i], NULL, side_main, &side[i]) != 0) {
            return bu_fail(r, "pthread_create failed");
        }
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (side[i].err[0]) {
            return bu_fail(r, "side %c: %s", 'A' + i, side[i].err);
        }
    }
    if (side[0].received != p->count || side[1].received != p->count) {
        return bu_fail(r, "A got %llu and B got %llu messages, expected %llu each",
                       (unsigned long long)side[0].received, (unsigned long long)side[1].received,
                       (unsigned long long)p->count);
    }
    if (sh->bad) {
        return bu_fail(r, "%llu callbacks ran without a matching send",
                       (unsigned long long)sh->bad);
    }
    r->elapsed_ns = sh->t1 - sh->t0;
    r->ops = p->count;
    r->callbacks = side[0].received + side[1].received;
    return 0;
}

/* ---- the floor: two eventfds, blocking read and write, no loop ----------------------------- */

typedef struct floor_ctx {
    int to_a, to_b; /* eventfds */
    uint64_t received_b;
    pthread_barrier_t ready;
    int err;
} floor_ctx;

static int write_u64(int fd, uint64_t v)
{
    return write(fd, &v, sizeof v) == (ssize_t)sizeof v ? 0 : -1;
}

static int read_u64(int fd, uint64_t *v)
{
    return read(fd, v, sizeof *v) == (ssize_t)sizeof *v ? 0 : -1;
}

/* B: echo every 1 until A writes 2 (stop). */
static void *floor_b(void *arg)
{
    floor_ctx *c = arg;
    pthread_barrier_wait(&c->ready);
    for (;;) {
        uint64_t v;
        if (read_u64(c->to_b, &v) != 0) {
            c->err = 1;
            return NULL;
        }
        if (v != 1) {
            return NULL;
        }
        c->received_b++;
        if (write_u64(c->to_a, 1) != 0) {
            c->err = 1;
            return NULL;
        }
    }
}

static int run_floor(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    (void)impl;
    floor_ctx c = {.to_a = eventfd(0, EFD_CLOEXEC), .to_b = eventfd(0, EFD_CLOEXEC)};
    if (c.to_a < 0 || c.to_b < 0) {
        return bu_fail(r, "eventfd failed");
    }
    pthread_barrier_init(&c.ready, NULL, 2);
    pthread_t th;
    if (pthread_create(&th, NULL, floor_b, &c) != 0) {
        return bu_fail(r, "pthread_create failed");
    }
    pthread_barrier_wait(&c.ready);
    int64_t t0 = bu_now();
    uint64_t done = 0;
    for (; done < p->count; done++) {
        uint64_t v;
        if (write_u64(c.to_b, 1) != 0 || read_u64(c.to_a, &v) != 0 || v != 1) {
            break;
        }
    }
    int64_t t1 = bu_now();
    write_u64(c.to_b, 2);
    pthread_join(th, NULL);
    close(c.to_a);
    close(c.to_b);
    if (done != p->count || c.err || c.received_b != p->count) {
        return bu_fail(r, "eventfd exchange broke after %llu round trips",
                       (unsigned long long)done);
    }
    r->elapsed_ns = t1 - t0;
    r->ops = p->count;
    r->callbacks = 0;
    return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bu_options o;
    bu_parse_options(argc, argv, &o, "async_pingpong",
                     "Round trips per second between two loop threads, each with one async\n"
                     "watcher, for asyncev and every peer library built in, and a no-loop floor.",
                     0);

    bu_impl impls[BU_MAX_IMPLS];
    int n = 0;
    for (int i = 0; bl_all[i]; i++) {
        impls[n++] = (bu_impl){bl_all[i]->name, run_loops, bl_all[i], bl_all[i]->note};
    }
    impls[n++] = (bu_impl){"eventfd-floor", run_floor, NULL,
                           "no loop: two threads, blocking read()/write() on two eventfds"};
    n = bu_select_impls(&o, impls, n, "asyncev libev libuv libevent eventfd-floor");
    FILE *csv = bu_csv_open(o.csv_path, BU_CSV_HEADER);

    char title[128];
    snprintf(title, sizeof title, "async_pingpong: %llu round trips per run between 2 threads",
             (unsigned long long)o.count);
    bu_print_header(title, &o);

    static bu_row rows[BU_MAX_IMPLS];
    int ours = bu_rows_init(rows, impls, n);
    bu_params p = {.count = o.count, .threads = 2};
    int failures = 0;
    for (int round = 1; round <= o.rounds; round++) {
        for (int i = 0; i < n; i++) {
            bu_result r;
            if (!bu_run_isolated(&impls[i], &p, o.timeout_s, &r)) {
                failures++;
                fprintf(stderr, "round %d, %s: %s\n", round, impls[i].name, r.err);
            }
            bu_record(&rows[i], &r, csv, "pingpong", 2, round, o.count);
        }
    }

    printf("\n");
    bu_print_table("round trips/s", rows, n, ours, 0);
    bu_csv_medians(csv, "pingpong", 2, o.count, rows, n);
    printf("\n");
    bu_check_target("ping-pong >= 1.2x libev", rows, n, "libev", 1.2);
    bu_check_target("ping-pong within 1.3x of the eventfd floor", rows, n, "eventfd-floor",
                    1.0 / 1.3);
    return bu_finish(csv, failures);
}
