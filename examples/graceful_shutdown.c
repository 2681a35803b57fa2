/*
 * graceful_shutdown.c - a server-like program that shuts down cleanly on SIGTERM or SIGINT.
 *
 * The "server" accepts a job every 100 ms (an accept timer standing in for a listening socket)
 * and works on its jobs in steps of 50 ms (a work timer); a job takes three steps. When SIGTERM
 * or SIGINT arrives, a signal watcher starts the graceful shutdown:
 *   1. stop accepting work (the accept timer is stopped),
 *   2. let the work already accepted finish, step by step, on the normal schedule,
 *   3. then stop the last watchers, so that aev_run() returns by itself.
 * A second signal during the shutdown means "hurry": the remaining work is abandoned.
 *
 * The signal callback runs on the loop's thread like any other callback, not inside the signal
 * handler, so it may call anything (printf, aev_* functions, malloc...).
 *
 * For testing, the program sends itself SIGTERM after 200 ms, or after the number of
 * milliseconds given as argument; with the argument "wait" it waits for a real signal
 * (try Ctrl-C). It exits with 0 if every accepted job was finished.
 *
 * Build against an installed library:
 *   cc graceful_shutdown.c $(pkg-config --cflags --libs asyncev)
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncev.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STEPS_PER_JOB 3

struct server {
    aev_loop *loop;
    aev_timer accept;   /* a new job every 100 ms, until the shutdown starts */
    aev_timer work;     /* one step of the current job every 50 ms */
    aev_signal sigterm; /* graceful shutdown requests */
    aev_signal sigint;
    aev_timer self_signal; /* testing aid: sends SIGTERM to this process */
    aev_timer deadline;    /* testing aid: gives up if the shutdown never completes */
    int queued;            /* jobs accepted and not finished */
    int step;              /* steps done on the current job */
    int accepted, finished;
    bool draining;
    bool abandoned; /* a second signal cut the shutdown short */
    bool failed;    /* something went wrong */
};

static struct server *server_of(aev_watcher *w)
{
    return w->data;
}

/* Stops everything that keeps the loop running: aev_run() then returns. */
static void stop_all(struct server *s)
{
    aev_timer_stop(&s->accept);
    aev_timer_stop(&s->work);
    aev_signal_stop(&s->sigterm);
    aev_signal_stop(&s->sigint);
    aev_timer_stop(&s->self_signal);
    aev_timer_stop(&s->deadline);
}

static void on_accept(aev_watcher *w, unsigned events)
{
    struct server *s = server_of(w);
    (void)events;
    s->queued++;
    s->accepted++;
    printf("accepted job %d (%d queued)\n", s->accepted, s->queued);
}

static void on_work(aev_watcher *w, unsigned events)
{
    struct server *s = server_of(w);
    (void)events;
    if (s->queued == 0) {
        /* Idle. During a shutdown, an empty queue means the work is done. */
        if (s->draining) {
            printf("all accepted work finished: stopping\n");
            stop_all(s);
        }
        return;
    }
    if (++s->step < STEPS_PER_JOB)
        return;
    s->step = 0;
    s->queued--;
    s->finished++;
    printf("finished job %d\n", s->finished);
}

static void on_signal(aev_watcher *w, unsigned events)
{
    struct server *s = server_of(w);
    int signum = aev_signal_signum((aev_signal *)w);
    (void)events;
    if (s->draining) {
        printf("%s again: abandoning %d job(s)\n", signum == SIGINT ? "SIGINT" : "SIGTERM",
               s->queued);
        s->abandoned = true;
        stop_all(s);
        return;
    }
    printf("%s received: no new work, finishing %d job(s)\n",
           signum == SIGINT ? "SIGINT" : "SIGTERM", s->queued);
    s->draining = true;
    aev_timer_stop(&s->accept);
    /* The work timer keeps its schedule; on_work stops everything when the queue is empty.
     * The signal watchers stay active so that a second signal can cut the shutdown short. */
}

static void on_self_signal(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
    printf("sending SIGTERM to myself\n");
    kill(getpid(), SIGTERM);
}

static void on_deadline(aev_watcher *w, unsigned events)
{
    struct server *s = server_of(w);
    (void)events;
    fprintf(stderr, "graceful_shutdown: no shutdown after 10 s\n");
    s->failed = true;
    stop_all(s);
}

static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "graceful_shutdown: %s: %s\n", what, aev_strerror(rc));
    return rc;
}

/* Initialises a watcher's data pointer; every watcher here leads back to the server. */
static void own(aev_watcher *w, struct server *s)
{
    w->data = s;
}

static int setup(struct server *s, long self_signal_ms)
{
    if (check(aev_timer_init(&s->accept, s->loop, on_accept, AEV_MSEC(10), AEV_MSEC(100)),
              "accept timer") < 0 ||
        check(aev_timer_init(&s->work, s->loop, on_work, AEV_MSEC(50), AEV_MSEC(50)),
              "work timer") < 0 ||
        check(aev_signal_init(&s->sigterm, s->loop, on_signal, SIGTERM), "SIGTERM") < 0 ||
        check(aev_signal_init(&s->sigint, s->loop, on_signal, SIGINT), "SIGINT") < 0 ||
        check(aev_timer_init(&s->self_signal, s->loop, on_self_signal,
                             AEV_MSEC(self_signal_ms > 0 ? self_signal_ms : 0), 0),
              "self-signal timer") < 0 ||
        check(aev_timer_init(&s->deadline, s->loop, on_deadline, AEV_SEC(10), 0),
              "deadline timer") < 0)
        return -1;
    own(&s->accept.base, s);
    own(&s->work.base, s);
    own(&s->sigterm.base, s);
    own(&s->sigint.base, s);
    own(&s->self_signal.base, s);
    own(&s->deadline.base, s);
    if (check(aev_timer_start(&s->accept), "accept start") < 0 ||
        check(aev_timer_start(&s->work), "work start") < 0 ||
        check(aev_signal_start(&s->sigterm), "SIGTERM start") < 0 ||
        check(aev_signal_start(&s->sigint), "SIGINT start") < 0)
        return -1;
    if (self_signal_ms >= 0 && (check(aev_timer_start(&s->self_signal), "timer start") < 0 ||
                                check(aev_timer_start(&s->deadline), "timer start") < 0))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    long self_signal_ms = 200;
    if (argc > 1)
        self_signal_ms = strcmp(argv[1], "wait") == 0 ? -1 : atol(argv[1]);
    /* Output goes to a pipe under CTest: flush each line so that the order is kept. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct server s;
    memset(&s, 0, sizeof s);
    if (check(aev_loop_new(&s.loop, AEV_BACKEND_AUTO), "loop") < 0)
        return 1;
    if (setup(&s, self_signal_ms) < 0) {
        aev_loop_destroy(s.loop);
        return 1;
    }
    if (self_signal_ms < 0)
        printf("running; send SIGTERM or press Ctrl-C to stop (pid %ld)\n", (long)getpid());

    int rc = aev_run(s.loop, AEV_RUN_DEFAULT);
    if (check(rc, "run") < 0)
        s.failed = true;
    /* Every watcher is stopped by now, so SIGTERM and SIGINT have their default actions back. */
    aev_loop_destroy(s.loop);

    printf("accepted %d, finished %d job(s)\n", s.accepted, s.finished);
    bool ok = !s.failed && !s.abandoned && s.draining && s.finished == s.accepted;
    if (s.abandoned)
        printf("shutdown cut short: %d job(s) abandoned\n", s.accepted - s.finished);
    else
        printf("%s\n", ok ? "clean shutdown" : "shutdown FAILED");
    return ok ? 0 : 1;
}
