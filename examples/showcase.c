/*
 * showcase.c - a short tour of libasyncev's public API.
 *
 * One loop drives three watchers:
 *  - a repeating timer that ticks every 50 ms, writes one byte into a pipe on each tick and stops
 *    itself after the third;
 *  - an io watcher on the read end of that pipe, which prints each byte it reads and stops once
 *    it has read all three;
 *  - an async watcher, woken by a worker thread after 100 ms.
 * aev_run() returns by itself when no watcher is active any more: nothing calls aev_break().
 *
 * Build against an installed library:  cc showcase.c $(pkg-config --cflags --libs asyncev) -pthread
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncev.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TICKS 3

/* Everything the callbacks share; each watcher's data pointer leads back here. */
struct showcase {
    aev_loop *loop;
    aev_time_t start;
    int pipefd[2]; /* [0] watched by `reader`, [1] written by `tick` */
    aev_timer tick;
    aev_io reader;
    aev_async wakeup;
    int ticks;
    int bytes_read;
    int woken;
    int failed;   /* set by a callback on any error, so that main() can report it */
    int send_err; /* the worker's aev_async_send() result, read after pthread_join() */
};

/* Reports a failed call; returns true if rc is an error, so calls read `if (failed(...))`. */
static bool failed(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "showcase: %s failed: %s\n", what, aev_strerror(rc));
    return rc < 0;
}

/* Callbacks cannot return errors: they record the failure and ask the loop to stop. */
static void fail_in_callback(struct showcase *app, int rc, const char *what)
{
    fprintf(stderr, "showcase: %s failed: %s\n", what, aev_strerror(rc));
    app->failed = 1;
    aev_break(app->loop, AEV_BREAK_ALL);
}

static long elapsed_ms(const struct showcase *app)
{
    return (long)((aev_now(app->loop) - app->start) / AEV_MSEC(1));
}

static void on_tick(aev_watcher *w, unsigned events)
{
    struct showcase *app = w->data;
    char byte = (char)('a' + app->ticks);

    (void)events;
    app->ticks++;
    printf("[%4ld ms] timer: tick %d, writing '%c' into the pipe\n", elapsed_ms(app), app->ticks,
           byte);
    if (write(app->pipefd[1], &byte, 1) != 1) {
        fail_in_callback(app, -errno, "write");
        return;
    }
    /* A repeating timer stays active until stopped; stopping it is what lets the loop end. */
    if (app->ticks == TICKS) {
        int rc = aev_timer_stop(&app->tick);
        if (rc < 0)
            fail_in_callback(app, rc, "aev_timer_stop");
    }
}

static void on_readable(aev_watcher *w, unsigned events)
{
    struct showcase *app = w->data;
    char byte;
    ssize_t n = read(aev_io_fd(&app->reader), &byte, 1);

    if (n != 1) {
        fail_in_callback(app, n < 0 ? -errno : -EIO, "read");
        return;
    }
    app->bytes_read++;
    printf("[%4ld ms] io:    read '%c' (events 0x%x)\n", elapsed_ms(app), byte, events);
    if (app->bytes_read == TICKS) {
        int rc = aev_io_stop(&app->reader);
        if (rc < 0)
            fail_in_callback(app, rc, "aev_io_stop");
    }
}

static void on_async(aev_watcher *w, unsigned events)
{
    struct showcase *app = w->data;

    (void)events;
    app->woken++;
    printf("[%4ld ms] async: woken by worker thread\n", elapsed_ms(app));
    /* An active async watcher would keep the loop running forever: stop it once served. */
    int rc = aev_async_stop(&app->wakeup);
    if (rc < 0)
        fail_in_callback(app, rc, "aev_async_stop");
}

/* Runs on its own thread: aev_async_send() is the one call that may come from anywhere. */
static void *worker(void *arg)
{
    struct showcase *app = arg;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};

    nanosleep(&pause, NULL);
    app->send_err = aev_async_send(&app->wakeup);
    return NULL;
}

/* Initialises the three watchers, points their data at `app` and starts them.
 * Returns 0 or the first negative errno. */
static int start_watchers(struct showcase *app)
{
    int rc;

    rc = aev_timer_init(&app->tick, app->loop, on_tick, AEV_MSEC(50), AEV_MSEC(50));
    if (failed(rc, "aev_timer_init"))
        return rc;
    app->tick.base.data = app;
    rc = aev_timer_start(&app->tick);
    if (failed(rc, "aev_timer_start"))
        return rc;

    rc = aev_io_init(&app->reader, app->loop, on_readable, app->pipefd[0], AEV_READ);
    if (failed(rc, "aev_io_init"))
        return rc;
    app->reader.base.data = app;
    rc = aev_io_start(&app->reader);
    if (failed(rc, "aev_io_start"))
        return rc;

    rc = aev_async_init(&app->wakeup, app->loop, on_async);
    if (failed(rc, "aev_async_init"))
        return rc;
    app->wakeup.base.data = app;
    rc = aev_async_start(&app->wakeup);
    failed(rc, "aev_async_start");
    return rc;
}

int main(void)
{
    struct showcase app = {.pipefd = {-1, -1}};
    pthread_t thread;
    int rc;

    if (pipe(app.pipefd) != 0) {
        perror("showcase: pipe");
        return 1;
    }
    /* 0: the best backend for this system, unless the AEV_BACKEND environment variable says. */
    if (failed(aev_loop_new(&app.loop, 0), "aev_loop_new"))
        return 1;
    app.start = aev_now(app.loop);
    printf("libasyncev %u.%u.%u, backend: %s\n", aev_version() >> 16, (aev_version() >> 8) & 0xff,
           aev_version() & 0xff, aev_backend_name(app.loop));

    if (start_watchers(&app) != 0)
        return 1;
    rc = pthread_create(&thread, NULL, worker, &app);
    if (rc != 0) {
        fprintf(stderr, "showcase: pthread_create failed: %s\n", strerror(rc));
        return 1;
    }

    /* Returns 0 once no active watcher is left, or a negative errno if the backend failed. */
    rc = aev_run(app.loop, AEV_RUN_DEFAULT);
    pthread_join(thread, NULL);
    if (failed(rc, "aev_run") || failed(app.send_err, "aev_async_send"))
        app.failed = 1;
    printf("loop finished after %llu iterations\n", (unsigned long long)aev_iteration(app.loop));

    if (failed(aev_loop_destroy(app.loop), "aev_loop_destroy"))
        app.failed = 1;
    close(app.pipefd[0]);
    close(app.pipefd[1]);

    if (app.failed || app.ticks != TICKS || app.bytes_read != TICKS || app.woken != 1) {
        fprintf(stderr, "showcase: FAILED: %d ticks, %d bytes read, %d async wakeups\n", app.ticks,
                app.bytes_read, app.woken);
        return 1;
    }
    printf("showcase: OK: %d timer ticks, %d bytes through the pipe, %d async wakeup\n", app.ticks,
           app.bytes_read, app.woken);
    return 0;
}
