/*
 * thread_pool.c - hand work to a pool of threads, get the results back on the loop's thread.
 *
 * The loop thread owns the program's state. It puts 20 jobs ("count the primes in [lo, hi)")
 * into a queue protected by a mutex and a condition variable, from which 4 worker threads take
 * them. A worker must not touch the loop or its watchers: of the whole API only aev_async_send()
 * and aev_post() may be called from another thread. So a worker hands each result back with
 * aev_post(), which runs on_result(job) on the loop thread, once per post (unlike async sends,
 * posts never coalesce, so no result can get lost). There the result is printed and checked
 * against an independent computation (a sieve); after the 20th result the loop stops.
 *
 * Exits 0 if every job came back exactly once, on the loop thread, with the right answer, and 1
 * otherwise; a guard timer ends the run after 10 s at most.
 *
 * Build against an installed library:
 *   cc thread_pool.c $(pkg-config --cflags --libs asyncev) -pthread
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncev.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NWORKERS 4
#define NJOBS 20
#define RANGE 20000 /* job i counts the primes in [i * RANGE, (i + 1) * RANGE) */
/* Room for fewer posts than there are jobs, on purpose: shows what to do when the ring is full. */
#define POSTER_CAPACITY 8

struct job {
    struct pool *pool;
    int id, worker;
    long lo, hi;
    long primes; /* the answer, written by the worker before it posts the job back */
};

struct worker {
    struct pool *pool;
    int id;
    pthread_t thread;
    int retries;    /* posts that found the ring full and were tried again */
    int post_error; /* a post that failed for good */
};

struct pool {
    /* The way out: the loop thread pushes jobs, the workers pop them. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct job *queue[NJOBS];
    int head, tail;
    bool closing; /* no more jobs will come: workers leave once the queue is empty */

    /* The way back, and the state only the loop thread touches. */
    aev_loop *loop;
    pthread_t loop_thread;
    aev_poster *poster;
    aev_timer guard;
    struct job jobs[NJOBS];
    bool seen[NJOBS];
    unsigned char *composite; /* the sieve: composite[n] is 0 exactly when n is prime */
    int done;
    bool failed;
};

static bool is_prime(long n)
{
    if (n < 2)
        return false;
    for (long d = 2; d * d <= n; d++) {
        if (n % d == 0)
            return false;
    }
    return true;
}

/* Runs on the loop thread, called by the poster: here any aev_* function may be used. */
static void on_result(void *arg)
{
    struct job *job = arg;
    struct pool *p = job->pool;
    long expected = 0;

    for (long n = job->lo; n < job->hi; n++)
        expected += !p->composite[n];
    printf("job %2d: %4ld primes in [%6ld, %6ld), from worker %d\n", job->id, job->primes, job->lo,
           job->hi, job->worker);
    if (job->primes != expected || p->seen[job->id] ||
        !pthread_equal(pthread_self(), p->loop_thread)) {
        fprintf(stderr,
                "thread_pool: job %d: wrong answer (expected %ld), duplicate, or wrong thread\n",
                job->id, expected);
        p->failed = true;
    }
    p->seen[job->id] = true;
    /* The poster is an active, referenced watcher, so aev_run() would go on forever: once all
     * results are in, leave the loop; main() then ends the workers and destroys the poster. */
    if (++p->done == NJOBS)
        aev_break(p->loop, AEV_BREAK_ONE);
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct pool *p = wk->pool;
    const struct timespec backoff = {0, 1000000}; /* 1 ms */

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->head == p->tail && !p->closing)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->head == p->tail) { /* closing, and nothing left */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        struct job *job = p->queue[p->head++];
        pthread_mutex_unlock(&p->lock);

        job->worker = wk->id;
        job->primes = 0;
        for (long n = job->lo; n < job->hi; n++)
            job->primes += is_prime(n);

        /* aev_post() never blocks: when the ring is full it queues nothing and returns -EAGAIN.
         * The loop is draining the ring, so wait a little and try again; but not forever, in
         * case the loop has stopped (then the post fails for good and main() notices). */
        int rc;
        for (int tries = 0; (rc = aev_post(p->poster, on_result, job)) == -EAGAIN; tries++) {
            if (tries == 5000)
                break;
            wk->retries++;
            nanosleep(&backoff, NULL);
        }
        if (rc < 0)
            wk->post_error = rc;
    }
}

static void on_guard(aev_watcher *w, unsigned events)
{
    struct pool *p = w->data;
    (void)events;

    fprintf(stderr, "thread_pool: FAILED: only %d of %d results after 10 s\n", p->done, NJOBS);
    p->failed = true;
    aev_break(p->loop, AEV_BREAK_ALL);
}

/* The reference answer, computed differently from the workers: a sieve of Eratosthenes. */
static unsigned char *sieve(long limit)
{
    unsigned char *composite = calloc((size_t)limit, 1);

    if (composite == NULL)
        return NULL;
    composite[0] = composite[1] = 1;
    for (long i = 2; i * i < limit; i++) {
        for (long j = i * i; !composite[i] && j < limit; j += i)
            composite[j] = 1;
    }
    return composite;
}

int main(void)
{
    static struct pool p; /* zeroed; static because it outlives every thread */
    struct worker workers[NWORKERS];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the order of lines when piped (CTest) */
    p.composite = sieve((long)NJOBS * RANGE);
    if (p.composite == NULL || (rc = aev_loop_new(&p.loop, AEV_BACKEND_AUTO)) < 0 ||
        (rc = aev_poster_new(&p.poster, p.loop, POSTER_CAPACITY)) < 0) {
        fprintf(stderr, "thread_pool: setup failed\n");
        return 1;
    }
    p.loop_thread = pthread_self();
    aev_timer_init(&p.guard, p.loop, on_guard, AEV_SEC(10), 0);
    p.guard.base.data = &p;
    aev_timer_start(&p.guard);

    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.wake, NULL);
    for (int i = 0; i < NWORKERS; i++) {
        workers[i] = (struct worker){.pool = &p, .id = i + 1};
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "thread_pool: pthread_create failed\n");
            return 1;
        }
    }

    /* Hand out all jobs; the workers start at once, results arrive while the loop runs. */
    pthread_mutex_lock(&p.lock);
    for (int i = 0; i < NJOBS; i++) {
        p.jobs[i] = (struct job){.pool = &p, .id = i, .lo = (long)i * RANGE};
        p.jobs[i].hi = p.jobs[i].lo + RANGE;
        p.queue[p.tail++] = &p.jobs[i];
    }
    pthread_cond_broadcast(&p.wake);
    pthread_mutex_unlock(&p.lock);

    rc = aev_run(p.loop, AEV_RUN_DEFAULT);

    /* Tell the workers to leave and wait for them: after that no thread can post any more,
     * which is when the poster may be destroyed. */
    pthread_mutex_lock(&p.lock);
    p.closing = true;
    pthread_cond_broadcast(&p.wake);
    pthread_mutex_unlock(&p.lock);
    int retries = 0, post_error = 0;
    for (int i = 0; i < NWORKERS; i++) {
        pthread_join(workers[i].thread, NULL);
        retries += workers[i].retries;
        post_error = post_error ? post_error : workers[i].post_error;
    }
    int dropped = aev_poster_destroy(p.poster); /* posts that never ran: must be none */
    aev_timer_stop(&p.guard);
    aev_loop_destroy(p.loop);
    pthread_cond_destroy(&p.wake);
    pthread_mutex_destroy(&p.lock);
    free(p.composite);

    bool ok = rc >= 0 && !p.failed && p.done == NJOBS && dropped == 0 && post_error == 0;
    if (post_error != 0)
        fprintf(stderr, "thread_pool: aev_post: %s\n", aev_strerror(post_error));
    printf("thread_pool: %d of %d results, %d post(s) retried on a full ring: %s\n", p.done, NJOBS,
           retries, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
