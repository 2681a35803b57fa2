/*
 * supervisor.c - a small child-process supervisor built on child watchers.
 *
 * The supervisor forks two workers and watches each with an aev_child watcher:
 *  - "steady" works for a moment and exits with status 0;
 *  - "flaky" crashes (abort()) on its first run and succeeds when run again.
 * A worker that crashes (is killed by a signal) is restarted, at most once; a worker that exits
 * with a non-zero code is not (it reported an error, it did not crash). Every exit status is
 * printed. aev_run() returns by itself when no worker is left to watch: a terminated child's
 * watcher is stopped by the library, and restarting a worker starts it again.
 *
 * The program exits 0 if every worker finally succeeded, 1 otherwise; a guard timer makes sure
 * it never hangs. Only the watched pids are reaped: the supervisor could share the process with
 * other code that waits for its own children.
 *
 * Build against an installed library:  cc supervisor.c $(pkg-config --cflags --libs asyncev)
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncev.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NWORKERS 2
#define MAX_RESTARTS 1

struct worker {
    const char *name;
    int work_ms;       /* how long one run works */
    int crashes;       /* how many of its first runs crash */
    int runs;          /* runs started so far */
    pid_t pid;         /* current process, 0 when none */
    bool succeeded;    /* its last run exited with status 0 */
    aev_child watcher; /* watches `pid`; watcher.base.data points back here */
    struct supervisor *sup;
};

struct supervisor {
    aev_loop *loop;
    aev_timer guard; /* ends a run that takes far too long */
    struct worker workers[NWORKERS];
    bool timed_out;
};

/* ---- the workers (child processes) --------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        continue;
}

/* Runs in the child: never returns into the parent's code (or its loop). */
static void worker_main(const struct worker *w)
{
    sleep_ms(w->work_ms);
    if (w->runs <= w->crashes) {
        /* A crash without a core file left behind in the current directory. */
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        abort();
    }
    _exit(0);
}

/* ---- the supervisor (parent) ----------------------------------------------------------------- */

/* Forks the worker's next run and watches it. Returns 0 or a negative errno. */
static int start_worker(struct worker *w)
{
    fflush(stdout); /* the child must not print the parent's buffered output again */
    w->runs++;
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        fprintf(stderr, "supervisor: fork: %s\n", aev_strerror(err));
        return err;
    }
    if (pid == 0)
        worker_main(w);
    w->pid = pid;
    printf("supervisor: started %s (run %d, pid %d)\n", w->name, w->runs, (int)pid);
    /* aev_child_set() re-targets the inactive watcher; start fails only if the pid is not our
     * child (-ECHILD), no longer exists (-ESRCH), or memory or fds run out. */
    int rc = aev_child_set(&w->watcher, (int)pid, 0);
    if (rc == 0)
        rc = aev_child_start(&w->watcher);
    if (rc < 0) {
        fprintf(stderr, "supervisor: cannot watch %s: %s\n", w->name, aev_strerror(rc));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        w->pid = 0;
    }
    return rc;
}

static void describe(const struct worker *w, int status)
{
    if (WIFEXITED(status))
        printf("supervisor: %s (pid %d) exited with status %d\n", w->name, (int)w->pid,
               WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("supervisor: %s (pid %d) crashed: killed by signal %d (%s)\n", w->name, (int)w->pid,
               WTERMSIG(status), strsignal(WTERMSIG(status)));
}

/* Called once per terminated worker process. The library has reaped it (no zombie) and
 * stopped the watcher: a terminated pid cannot report again. */
static void on_exit_status(aev_watcher *aw, unsigned events)
{
    struct worker *w = aw->data;
    if (events & AEV_ERROR) {
        /* Someone else reaped the pid: its status is lost. */
        fprintf(stderr, "supervisor: lost track of %s: %s\n", w->name,
                aev_strerror(aev_watcher_error(aw, NULL)));
        w->pid = 0;
        return;
    }
    int status = aev_child_rstatus(&w->watcher);
    describe(w, status);
    w->succeeded = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool crashed = WIFSIGNALED(status);
    w->pid = 0;
    if (crashed && w->sup->timed_out) {
        printf("supervisor: %s killed by the guard, not restarted\n", w->name);
    } else if (crashed && w->runs <= MAX_RESTARTS) {
        printf("supervisor: restarting %s\n", w->name);
        start_worker(w);
    } else if (crashed) {
        printf("supervisor: %s crashed again, giving up\n", w->name);
    }
}

/* The guard: a worker that hangs is killed; its watcher then reports the kill. */
static void on_guard(aev_watcher *aw, unsigned events)
{
    struct supervisor *sup = aw->data;
    (void)events;
    sup->timed_out = true;
    for (int i = 0; i < NWORKERS; i++) {
        if (sup->workers[i].pid > 0)
            kill(sup->workers[i].pid, SIGKILL);
    }
}

int main(void)
{
    struct supervisor sup;
    memset(&sup, 0, sizeof sup);
    int rc = aev_loop_new(&sup.loop, AEV_BACKEND_AUTO);
    if (rc < 0) {
        fprintf(stderr, "supervisor: aev_loop_new: %s\n", aev_strerror(rc));
        return 1;
    }
    /* The guard must not keep aev_run() going by itself: unreferenced. */
    aev_timer_init(&sup.guard, sup.loop, on_guard, AEV_SEC(20), 0);
    sup.guard.base.data = &sup;
    aev_timer_start(&sup.guard);
    aev_unref(sup.loop);

    sup.workers[0] = (struct worker){.name = "steady", .work_ms = 50, .crashes = 0};
    sup.workers[1] = (struct worker){.name = "flaky", .work_ms = 20, .crashes = 1};
    for (int i = 0; i < NWORKERS; i++) {
        struct worker *w = &sup.workers[i];
        w->sup = &sup;
        aev_child_init(&w->watcher, sup.loop, on_exit_status, 0, 0);
        w->watcher.base.data = w;
        if (start_worker(w) < 0)
            return 1;
    }

    /* Returns when no child watcher is active: every worker is done for good. */
    rc = aev_run(sup.loop, AEV_RUN_DEFAULT);

    aev_ref(sup.loop);
    aev_timer_stop(&sup.guard);
    int ok = rc == 0 && !sup.timed_out;
    for (int i = 0; i < NWORKERS; i++) {
        const struct worker *w = &sup.workers[i];
        printf("supervisor: %s: %d run(s), %s\n", w->name, w->runs,
               w->succeeded ? "succeeded" : "failed");
        ok = ok && w->succeeded;
    }
    aev_loop_destroy(sup.loop);
    printf("supervisor: %s\n", ok ? "all workers done" : "FAILED");
    return ok ? 0 : 1;
}
