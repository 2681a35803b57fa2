/*
 * Child watchers: report when a child process terminates (and, with trace, stops or
 * continues), and reap exactly the pids that are watched.
 *
 * Design:
 *  - Each loop keeps one record per watched pid, shared by all its watchers of that pid. On
 *    Linux the record holds a pidfd (pidfd_open), watched by an internal io watcher: it becomes
 *    readable when the child terminates, and waitid(P_PIDFD) then reaps that child and no other.
 *    A pidfd also exists for a child that had already exited (a zombie), so nothing is missed.
 *  - SIGCHLD, through an internal signal watcher, serves what a pidfd cannot: stop/continue
 *    reports (trace), pid-0 watchers (any child), and pids without a pidfd (the fallback:
 *    kernels or sandboxes without pidfd_open, other systems, or AEV_CHILD_PIDFD=0). On each
 *    SIGCHLD the loop polls those pids with waitpid(pid, WNOHANG), and pid-0 watchers reap
 *    with waitpid(-1, WNOHANG). The first poll is made right after the start, for a child that
 *    changed state before its watcher existed.
 *  - A terminated pid cannot report again (and its number may be reused), so termination
 *    stops the pid's watchers before their callbacks run; pid-0 watchers stay active.
 *  - Records are allocated the first time the loop needs one more and reused afterwards:
 *    starting and stopping watchers in steady state allocates nothing.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/syscall.h>
#if defined(SYS_pidfd_open)
#define AEV__HAVE_PIDFD 1
/* waitid()'s idtype for a pidfd (Linux 5.4). glibc declares it as an enumerator, not a macro,
 * and only from 2.36 on, so the kernel's value is spelled out here. */
#define AEV__P_PIDFD ((idtype_t)3)
#endif
#endif

/* State changes read from one pid, or children reaped by pid-0 watchers, per poll: bounded so
 * that a child that keeps stopping and continuing (or a flood of exiting children) cannot keep
 * one callback looping. The rest is read by another poll, queued behind the events already
 * pending at the same priority. */
#define AEV__CHILD_BURST 8
#define AEV__CHILD_ANY_BURST 64

/* One watched pid in one loop. */
struct aev__childrec {
    aev_io io;       /* the pidfd's watcher; first member, so the callback can cast back */
    aev_child *head; /* this loop's active watchers of pid, in start order */
    int pid;
    int fd;          /* pidfd, or -1: the pid is polled on SIGCHLD */
    unsigned ntrace; /* watchers with trace, which need stop/continue reports */
};

typedef struct aev__childrec aev__childrec;

/* 1 if w is among the loop's active watchers of a pid > 0. Compares pointers only, without
 * reading w (it may hold anything: re-initialisation check, watcher.c). */
int aev__child_pid_holds(const aev_loop *loop, const aev_child *w)
{
    for (uint32_t i = 0; i < loop->child_used; i++) {
        for (const aev_child *p = loop->child_recs[i]->head; p; p = p->next_) {
            if (p == w)
                return 1;
        }
    }
    return 0;
}

/* Whether w reports stops and continues too: a flag bit, which keeps aev_child at libev's size
 * plus the loop pointer. */
static int aev__child_traced(const aev_child *w)
{
    return (w->base.flags_ & AEV__WF_TRACE) != 0;
}

static void aev__child_set_trace(aev_child *w, int trace)
{
    if (trace)
        w->base.flags_ |= AEV__WF_TRACE;
    else
        w->base.flags_ &= (uint8_t)~AEV__WF_TRACE;
}

static int aev__child_args_ok(int pid)
{
    return pid >= 0;
}

static int aev__child_ended(int status)
{
    return WIFEXITED(status) || WIFSIGNALED(status);
}

/* ---- SIGCHLD ------------------------------------------------------------------------------ */

static void aev__child_sigchld(aev_watcher *w, unsigned events);

/* The internal SIGCHLD watcher runs while at least one child watcher needs it. Starting it
 * installs the library's handler, so any state change after that is noticed. */
static int aev__child_sig_acquire(aev_loop *loop)
{
    aev_signal *s = &loop->child_sig;
    if (loop->child_sig_users > 0) {
        loop->child_sig_users++;
        return 0;
    }
    if (s->base.type_ == AEV__T_NONE) {
        aev_signal_init(s, loop, aev__child_sigchld, SIGCHLD);
        /* Highest priority: the child watchers it feeds run in the same invoke pass. */
        s->base.priority_ = AEV_MAXPRI;
        s->base.flags_ |= AEV__WF_INTERNAL;
    }
    int rc = aev_signal_start(s);
    if (rc < 0)
        return rc;
    /* The internal watcher must not keep aev_run() alive; the child watchers do. */
    loop->refs--;
    loop->child_sig_users = 1;
    return 0;
}

static void aev__child_sig_release(aev_loop *loop)
{
    if (--loop->child_sig_users > 0)
        return;
    loop->refs++;
    aev_signal_stop(&loop->child_sig);
}

/* Requests a SIGCHLD poll in this or the next iteration, as if the signal had arrived. */
static int aev__child_kick(aev_loop *loop)
{
    if (loop->child_sig_users == 0)
        return 0;
    return aev__feed(loop, &loop->child_sig.base, AEV_SIGNAL);
}

/* ---- pidfds ------------------------------------------------------------------------------- */

#ifdef AEV__HAVE_PIDFD
/* AEV_CHILD_PIDFD=0 in the environment forces the SIGCHLD fallback (to test it, or to work
 * around a kernel that misbehaves); read once per loop. */
static int aev__child_pidfd_allowed(aev_loop *loop)
{
    if (loop->child_pidfd == 0) {
        const char *env = getenv("AEV_CHILD_PIDFD");
        loop->child_pidfd = (env && strcmp(env, "0") == 0) ? -1 : 1;
    }
    return loop->child_pidfd > 0;
}

/* A pidfd for pid, or -errno. pidfds are always close-on-exec. */
static int aev__pidfd_open(int pid)
{
    long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0u);
    return fd < 0 ? -errno : (int)fd;
}

/* waitpid(2)'s encoding of what waitid() reported, in the Linux layout (the only system with
 * pidfds): exit code in bits 8-15; terminating signal in bits 0-6 plus 0x80 for a core dump;
 * a stop as 0x7f with the signal in bits 8-15; a continue as 0xffff. */
static int aev__status_of(const siginfo_t *si)
{
    switch (si->si_code) {
    case CLD_EXITED:
        return (si->si_status & 0xff) << 8;
    case CLD_KILLED:
        return si->si_status & 0x7f;
    case CLD_DUMPED:
        return (si->si_status & 0x7f) | 0x80;
    case CLD_CONTINUED:
        return 0xffff;
    default: /* CLD_STOPPED, CLD_TRAPPED */
        return (si->si_status & 0xff) << 8 | 0x7f;
    }
}
#endif

/* 0 if id names a child of this process (running or terminated), else -errno; reaps nothing. */
static int aev__child_check(idtype_t type, id_t id)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(type, id, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ? -errno : 0;
}

/*
 * Checks that pid is a child of this process and opens its pidfd where possible: *fd is the
 * pidfd, or -1 for the SIGCHLD fallback. Errors: -ESRCH (no such process), -ECHILD (not our
 * child), and the kernel's errors opening a pidfd (-EMFILE, -ENFILE, -ENOMEM).
 */
static int aev__child_probe(aev_loop *loop, int pid, int *fd)
{
    *fd = -1;
#ifdef AEV__HAVE_PIDFD
    if (aev__child_pidfd_allowed(loop)) {
        int pfd = aev__pidfd_open(pid);
        if (pfd >= 0) {
            int rc = aev__child_check(AEV__P_PIDFD, (id_t)pfd);
            if (rc == 0) {
                *fd = pfd;
                return 0;
            }
            close(pfd);
            /* -EINVAL: pidfd_open without waitid(P_PIDFD) (Linux 5.3): use the fallback. */
            if (rc != -EINVAL)
                return rc;
        } else if (pfd != -ENOSYS && pfd != -EPERM && pfd != -EINVAL) {
            /* ENOSYS: old kernel; EPERM: a seccomp filter refusing the call; EINVAL: pid is
             * a thread, not a process, which the check below reports as not our child. */
            return pfd;
        }
    }
#else
    (void)loop;
#endif
    int rc = aev__child_check(P_PID, (id_t)pid);
    if (rc == -ECHILD && kill(pid, 0) < 0 && errno == ESRCH)
        return -ESRCH;
    return rc;
}

/* ---- records ------------------------------------------------------------------------------ */

static aev__childrec *aev__child_find(aev_loop *loop, int pid)
{
    for (uint32_t i = 0; i < loop->child_used; i++) {
        if (loop->child_recs[i]->pid == pid)
            return loop->child_recs[i];
    }
    return NULL;
}

/* An unused record, allocated only when every record kept so far is in use. */
static int aev__child_spare(aev_loop *loop, aev__childrec **out)
{
    if (loop->child_used < loop->child_nrecs) {
        *out = loop->child_recs[loop->child_used];
        return 0;
    }
    int rc = aev__grow((void **)&loop->child_recs, &loop->child_cap, loop->child_nrecs + 1,
                       sizeof *loop->child_recs);
    if (rc < 0)
        return rc;
    aev__childrec *rec = aev__calloc(1, sizeof *rec);
    if (!rec)
        return -ENOMEM;
    loop->child_recs[loop->child_nrecs++] = rec;
    *out = rec;
    return 0;
}

static void aev__child_pidfd_ready(aev_watcher *w, unsigned events);

/* Watches the record's pidfd with an internal, unreferenced io watcher. */
static int aev__child_watch_fd(aev_loop *loop, aev__childrec *rec)
{
    aev_io_init(&rec->io, loop, aev__child_pidfd_ready, rec->fd, AEV_READ);
    /* Highest priority: the child watchers it feeds run in the same invoke pass. */
    rec->io.base.priority_ = AEV_MAXPRI;
    rec->io.base.flags_ |= AEV__WF_INTERNAL;
    int rc = aev_io_start(&rec->io);
    if (rc < 0)
        return rc;
    loop->refs--;
    return 0;
}

/* Takes a record for pid (checked to be our child) and, with a pidfd, starts watching it. */
static int aev__child_open(aev_loop *loop, int pid, aev__childrec **out)
{
    aev__childrec *rec;
    int rc = aev__child_spare(loop, &rec);
    if (rc < 0)
        return rc;
    int fd;
    rc = aev__child_probe(loop, pid, &fd);
    if (rc < 0)
        return rc;
    rec->pid = pid;
    rec->fd = fd;
    rec->head = NULL;
    rec->ntrace = 0;
    if (fd >= 0) {
        rc = aev__child_watch_fd(loop, rec);
        if (rc < 0) {
            close(fd);
            rec->pid = 0;
            return rc;
        }
    }
    loop->child_used++;
    *out = rec;
    return 0;
}

/* Gives up a record without watchers: closes its pidfd and keeps the memory for reuse. */
static void aev__child_close(aev_loop *loop, aev__childrec *rec)
{
    if (rec->fd >= 0) {
        /* Takes back the reference given up at the start. If the io layer failed the watcher
         * (AEV_ERROR), it is inactive already, and that stop dropped the same reference. */
        loop->refs++;
        aev_io_stop(&rec->io);
        close(rec->fd);
        rec->fd = -1;
    }
    rec->pid = 0;
    /* Swap it to the end of the used part; the caller may be walking the records downwards,
     * and the record moved into this slot comes from above, where the walk has been. */
    uint32_t last = --loop->child_used;
    for (uint32_t i = 0; i <= last; i++) {
        if (loop->child_recs[i] == rec) {
            loop->child_recs[i] = loop->child_recs[last];
            loop->child_recs[last] = rec;
            return;
        }
    }
}

/* ---- reporting ---------------------------------------------------------------------------- */

static void aev__child_report(aev_child *w, int pid, int status)
{
    w->rpid_ = pid;
    w->rstatus_ = status;
    /* Only an exhausted pending queue fails here; nothing better can be done than to drop the
     * report, as the loop does for any event it cannot queue. */
    (void)aev__feed(w->base.loop_, &w->base, AEV_CHILD);
}

/*
 * Hands one state change of pid to this loop's watchers of that pid (rec may be NULL), then to
 * its pid-0 watchers. Without trace, only termination is reported. Termination stops the pid's
 * watchers first, which releases the record. Returns 1 if pid terminated.
 */
static int aev__child_dispatch(aev_loop *loop, aev__childrec *rec, int pid, int status)
{
    int ended = aev__child_ended(status);
    aev_child *next;
    for (aev_child *w = rec ? rec->head : NULL; w; w = next) {
        next = w->next_;
        if (!ended && !aev__child_traced(w))
            continue;
        if (ended)
            aev_child_stop(w);
        aev__child_report(w, pid, status);
    }
    for (aev_child *w = loop->child_any; w; w = w->next_) {
        if (ended || aev__child_traced(w))
            aev__child_report(w, pid, status);
    }
    return ended;
}

/* The record's pid vanished (reaped by other code, e.g. a waitpid() of the program or a pid-0
 * watcher of another loop): its watchers are stopped and receive AEV_ERROR with err. */
static void aev__child_fail(aev__childrec *rec, int err)
{
    while (rec->head) {
        aev_child *w = rec->head;
        aev_child_stop(w);
        aev__fail(&w->base, err, AEV_ERROP_WATCH);
        (void)aev__feed(w->base.loop_, &w->base, AEV_ERROR);
    }
}

/* Reads one state change of the record's pid: 1 and *status, 0 if there is none, or -errno. */
static int aev__child_wait(const aev__childrec *rec, int *status)
{
    int r;
#ifdef AEV__HAVE_PIDFD
    if (rec->fd >= 0) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int flags = WEXITED | WNOHANG | (rec->ntrace ? WSTOPPED | WCONTINUED : 0);
        do
            r = waitid(AEV__P_PIDFD, (id_t)rec->fd, &si, flags);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return -errno;
        if (si.si_pid == 0)
            return 0;
        *status = aev__status_of(&si);
        return 1;
    }
#endif
    int flags = WNOHANG | (rec->ntrace ? WUNTRACED | WCONTINUED : 0);
    do
        r = (int)waitpid(rec->pid, status, flags);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    return r > 0;
}

/* Delivers what the record's pid has to report, a burst at a time. */
static void aev__child_poll(aev_loop *loop, aev__childrec *rec)
{
    for (int i = 0; i < AEV__CHILD_BURST; i++) {
        int status = 0;
        int rc = aev__child_wait(rec, &status);
        if (rc == 0)
            return;
        if (rc < 0) {
            aev__child_fail(rec, rc);
            return;
        }
        if (aev__child_dispatch(loop, rec, rec->pid, status))
            return;
    }
    (void)aev__child_kick(loop);
}

/* For pid-0 watchers: reaps (and with trace, reads stop/continue reports of) any child. */
static void aev__child_reap_any(aev_loop *loop)
{
    int flags = WNOHANG;
    for (aev_child *w = loop->child_any; w; w = w->next_) {
        if (aev__child_traced(w))
            flags |= WUNTRACED | WCONTINUED;
    }
    for (int i = 0; i < AEV__CHILD_ANY_BURST && loop->child_any; i++) {
        int status = 0;
        pid_t pid;
        do
            pid = waitpid(-1, &status, flags);
        while (pid < 0 && errno == EINTR);
        if (pid <= 0)
            return;
        aev__child_dispatch(loop, aev__child_find(loop, (int)pid), (int)pid, status);
    }
    (void)aev__child_kick(loop);
}

static void aev__child_pidfd_ready(aev_watcher *w, unsigned events)
{
    aev__childrec *rec = (aev__childrec *)w;
    if (events & AEV_ERROR) {
        /* The io layer refused the pidfd and stopped its watcher; the pid cannot be watched. */
        aev__child_fail(rec, w->err_);
        return;
    }
    aev__child_poll(w->loop_, rec);
}

/* SIGCHLD arrived (or a poll was requested): poll the pids a pidfd does not fully cover. */
static void aev__child_sigchld(aev_watcher *w, unsigned events)
{
    aev_loop *loop = w->loop_;
    (void)events;
    /* Downwards: a poll closes at most its own record, whose slot then receives the last
     * record in use, one that this walk has already polled. */
    for (uint32_t i = loop->child_used; i-- > 0;) {
        aev__childrec *rec = loop->child_recs[i];
        if (rec->fd < 0 || rec->ntrace)
            aev__child_poll(loop, rec);
    }
    if (loop->child_any)
        aev__child_reap_any(loop);
}

/* ---- API ---------------------------------------------------------------------------------- */

int aev_child_init(aev_child *w, aev_loop *loop, aev_cb cb, int pid, int trace)
{
    if (!aev__child_args_ok(pid))
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_CHILD);
    if (rc < 0)
        return rc;
    w->next_ = NULL;
    w->pid_ = pid;
    aev__child_set_trace(w, trace);
    w->rpid_ = 0;
    w->rstatus_ = 0;
    w->fd_ = -1;
    return 0;
}

int aev_child_set(aev_child *w, int pid, int trace)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_CHILD) || !aev__child_args_ok(pid))
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->pid_ = pid;
    aev__child_set_trace(w, trace);
    return 0;
}

/* Appends w to a watcher list, so that watchers are called in start order. */
static void aev__child_link(aev_child **head, aev_child *w)
{
    while (*head)
        head = &(*head)->next_;
    w->next_ = NULL;
    *head = w;
}

static void aev__child_unlink(aev_child **head, aev_child *w)
{
    while (*head != w)
        head = &(*head)->next_;
    *head = w->next_;
    w->next_ = NULL;
}

/* Whether w needs SIGCHLD: what a pidfd reports (termination) is not enough for it. */
static int aev__child_needs_sig(const aev_child *w, const aev__childrec *rec)
{
    return !rec || aev__child_traced(w) || rec->fd < 0;
}

/* Subscribes w to SIGCHLD if it needs it, and requests the first poll (a state change before
 * the start produced no signal that this loop saw). */
static int aev__child_sig_join(aev_child *w, const aev__childrec *rec)
{
    aev_loop *loop = w->base.loop_;
    if (!aev__child_needs_sig(w, rec))
        return 0;
    int rc = aev__child_sig_acquire(loop);
    if (rc < 0)
        return rc;
    rc = aev__child_kick(loop);
    if (rc < 0)
        aev__child_sig_release(loop);
    return rc;
}

static int aev__child_start_any(aev_child *w)
{
    int rc = aev__child_sig_join(w, NULL);
    if (rc < 0)
        return rc;
    aev__child_link(&w->base.loop_->child_any, w);
    aev__activate(&w->base, 1);
    return 0;
}

int aev_child_start(aev_child *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_CHILD);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    w->rpid_ = 0;
    w->rstatus_ = 0;
    if (w->pid_ == 0)
        return aev__child_start_any(w);
    aev__childrec *rec = aev__child_find(loop, w->pid_);
    if (!rec) {
        rc = aev__child_open(loop, w->pid_, &rec);
        if (rc < 0)
            return rc;
    }
    rc = aev__child_sig_join(w, rec);
    if (rc < 0) {
        if (!rec->head)
            aev__child_close(loop, rec);
        return rc;
    }
    aev__child_link(&rec->head, w);
    rec->ntrace += (unsigned)aev__child_traced(w);
    w->fd_ = rec->fd;
    aev__activate(&w->base, 1);
    return 0;
}

int aev_child_stop(aev_child *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_CHILD);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    aev__childrec *rec = w->pid_ ? aev__child_find(loop, w->pid_) : NULL;
    int needs_sig = aev__child_needs_sig(w, rec);
    if (rec) {
        aev__child_unlink(&rec->head, w);
        rec->ntrace -= (unsigned)aev__child_traced(w);
        if (!rec->head)
            aev__child_close(loop, rec);
    } else {
        aev__child_unlink(&loop->child_any, w);
    }
    if (needs_sig)
        aev__child_sig_release(loop);
    w->fd_ = -1;
    aev__deactivate(&w->base);
    return 0;
}

int aev_child_rpid(const aev_child *w)
{
    return w ? w->rpid_ : -EINVAL;
}

int aev_child_rstatus(const aev_child *w)
{
    return w ? w->rstatus_ : 0;
}

/* At loop destruction: watchers still active are abandoned (their pids are not reaped), the
 * pidfds are closed and the records freed. Runs before the io and signal state is freed. */
void aev__child_free(aev_loop *loop)
{
    while (loop->child_used) {
        aev__childrec *rec = loop->child_recs[loop->child_used - 1];
        rec->head = NULL;
        aev__child_close(loop, rec);
    }
    for (uint32_t i = 0; i < loop->child_nrecs; i++)
        aev__free(loop->child_recs[i]);
    aev__free(loop->child_recs);
    loop->child_recs = NULL;
    loop->child_used = loop->child_nrecs = loop->child_cap = 0;
    loop->child_any = NULL;
    if (loop->child_sig_users) {
        loop->child_sig_users = 1;
        aev__child_sig_release(loop);
    }
}
