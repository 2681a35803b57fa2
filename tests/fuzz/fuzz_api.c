/*
 * API fuzzer for libasyncev, with a reference model.
 *
 * The fuzz input is decoded into a sequence of operations on one loop (and on a fixed pool of
 * watchers that this file owns). After every operation, and inside every callback, the library's
 * observable state is compared with a small model of the documented semantics (docs/api.md,
 * docs/concepts.md, docs/async.md): aev_is_active(), aev_is_pending(), aev_pending_count(),
 * aev_iteration(), aev_depth(), aev_priority(), aev_io_fd/events(), aev_timer_repeat/remaining(),
 * aev_async_sent(), aev_watcher_error(), every return code, and which callback runs next with
 * which events. Any difference prints the operation trace and aborts (a crash for libFuzzer, a
 * failure for the replay test).
 *
 * Two builds of this one file:
 *  - libFuzzer (clang, -DAEV_FUZZ=ON, target fuzz_api): LLVMFuzzerTestOneInput below.
 *  - replay (every test build, target fuzz_replay, CTest fuzz.replay): with AEV_FUZZ_REPLAY_MAIN
 *    defined, a main() runs every file of the directories (or files) given on the command line.
 *
 * Environment: AEV_FUZZ_TRACE=1 prints each operation as it runs (to read a reproducer);
 * AEV_FUZZ_STRICT=1 stops tolerating the known, reported library bugs listed at KB_* below (the
 * inputs in tests/fuzz/known/ fail in that mode until those bugs are fixed).
 *
 * ---- Input encoding ---------------------------------------------------------------------------
 *
 * Byte 0 configures the loop: bits 0-3 pick the backend among those compiled in (epoll, poll,
 * kqueue, in that order, modulo their number), bit 4 asks for AEV_FLAG_PIPE_WAKEUP. Then
 * operations follow until the input ends: one opcode byte (modulo OP_COUNT) and a fixed number of
 * argument bytes per opcode (listed at the OP_* enum; bytes past the end read as 0). A slot
 * argument is taken modulo NSLOTS. Operations that would break a documented precondition (init
 * of an active watcher, destroy with a send in flight, ...) are skipped, not executed.
 *
 * The pool has NSLOTS watcher slots, each a union of every watcher type; a slot is zeroed (never
 * initialised) until an INIT operation gives it a type: io, timer, idle, prepare, check, async,
 * fork or cleanup. io watchers watch one of four fds the harness owns: a socketpair end (always
 * writable, readable while the harness has written bytes it did not drain), a pipe read end
 * (readable likewise, never writable), a regular file (always ready) and a closed fd number
 * (AEV_ERROR). Timers take delays and repeats from small tables: 0, a few microseconds, up to a
 * millisecond, or an hour. Runs are AEV_RUN_NOWAIT or AEV_RUN_ONCE; ONCE is only used when the
 * model knows the poll ends soon (something ready, or a timer due within milliseconds), or when a
 * helper thread is about to send to an active async watcher (RUN_BG), so the fuzzer never blocks.
 *
 * Each slot has two callback actions (set by an ACTION operation): an operation the callback
 * performs, on a target slot or itself, for a limited number of calls (its budget). Actions go
 * through the same checked operations as the top level: stop, start, feed, clear, set priority,
 * invoke, send (loop thread or helper thread), break, destroy (must be -EBUSY), a nested
 * AEV_RUN_NOWAIT, aev_invoke_pending(), fd reads/writes, timer again/set/set_repeat, re-init, io
 * set, the invoke hook, ref/unref.
 *
 * ---- Model rules --------------------------------------------------------------------------------
 *
 * Exact, as documented:
 *  - Pending queues: a watcher is pending at most once, feeds OR into its events and keep its
 *    place; the next callback is the oldest pending watcher of the highest priority; stop and
 *    clear remove a pending event; aev_invoke() calls the callback at once and changes nothing.
 *  - An iteration: iteration count; fork watchers (after aev_loop_fork()) and prepare watchers
 *    are queued and everything pending is invoked; a break requested by then ends the iteration;
 *    then io, async, always-ready io (epoll, kqueue), timers, idle (the idle rule), check are
 *    queued in that order and invoked by priority. Within one phase: watchers of one fd in start
 *    order; timers in deadline order, equal deadlines in start order.
 *  - aev_run() results (1 while referenced watchers remain, -EBUSY while suspended, -EINVAL),
 *    nested runs (shared queues, break semantics, depth), the invoke hook (called at each invoke
 *    point; a deferring hook leaves events pending), cleanup watchers at destroy (most recently
 *    started first, each stopped before its call), fork watchers after aev_loop_fork(),
 *    aev_loop_destroy() -EBUSY from callbacks, every -EINVAL/-EBUSY of the functions used.
 *  - Timers: deadline = clock at start (or again) + delay; one-shot timers are inactive once
 *    expired; a repeating timer's next deadline is the first D + k * repeat after now; every
 *    deadline moves by the suspended time at resume. after == 0 is due at the next timer phase.
 *  - Async: a send sets the flag, sends coalesce, a send to a stopped watcher is parked and
 *    delivered at start; a helper thread's send during AEV_RUN_ONCE wakes a loop that has
 *    nothing else to wake it (no lost wakeup); a ONCE poll that only a timer can end does not
 *    return before a timer is due (never early).
 * Exact as the implementation states it (src/ comments), though the docs do not spell it out:
 *  - Async watchers noted in one async phase are queued in send order (async.c reverses its
 *    list "so that async callbacks of one priority run FIFO"); aev_async_stop() of a sent
 *    watcher takes the whole list, noting (queueing) the active watchers on it.
 *
 * Deliberately lenient, where the semantics are not deterministic or not documented:
 *  - The clock. The harness brackets every timer start with aev_time() readings, so it knows each
 *    deadline within an interval; at the timer phase it reads aev_now(). A timer whose interval
 *    straddles now may or may not have fired: the model then reads the library's state (a one-shot
 *    is inactive iff it fired, an unqueued one is pending iff it fired) and checks consistency
 *    from there; two timers whose deadline intervals overlap may fire in either order.
 *  - The order of watchers queued together by one phase where no order is documented: io
 *    watchers of different fds, idle, prepare, check and fork watchers among themselves.
 *  - A send from the helper thread during a run (RUN_BG) may land before or after the loop's
 *    async phase; the model learns which from the library and checks the rest against that.
 *  - The loop's internal wakeup watcher (pending after a wakeup from another thread) counts in
 *    aev_pending_count() and, being pending at AEV_MAXPRI, keeps idle watchers from running in
 *    that iteration; after a cross-thread send both are allowed until a pass has drained it.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "asyncev.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* ---- limits ------------------------------------------------------------------------------ */

#define NSLOTS 12
#define MAX_OPS 600        /* operations decoded per input */
#define MAX_CALLBACKS 5000 /* after this many callbacks in one input, actions stop firing */
#define MAX_CB_DEPTH 6     /* nesting of callbacks (invoke, nested run, invoke_pending) */
#define MAX_CTX 32
#define TRACE_LINES 48

/* ---- known library bugs ------------------------------------------------------------------ */

/*
 * Bugs found by this fuzzer and reported, not yet fixed, are tolerated by default (the harness
 * avoids the operation or accepts the observed result, guarded by a KB_* bit set here) so that
 * fuzzing can go on past them; AEV_FUZZ_STRICT=1 checks the documented behaviour. All five found
 * so far are fixed (their inputs are in regressions/), so nothing is tolerated now.
 */
static unsigned g_tolerate = 0;

/* ---- watcher pool and model types -------------------------------------------------------- */

enum { T_NONE, T_IO, T_TIMER, T_IDLE, T_PREPARE, T_CHECK, T_ASYNC, T_FORK, T_CLEANUP, T_COUNT };
static const char *const type_name[T_COUNT] = {"none",  "io",    "timer", "idle",   "prepare",
                                               "check", "async", "fork",  "cleanup"};

enum { FD_SOCK, FD_PIPE, FD_FILE, FD_BAD, FD_COUNT };
static const char *const fd_name[FD_COUNT] = {"sock", "pipe", "file", "bad"};

typedef union slot_mem {
    aev_watcher base;
    aev_io io;
    aev_timer timer;
    aev_idle idle;
    aev_prepare prepare;
    aev_check check;
    aev_async async;
    aev_fork fork;
    aev_cleanup cleanup;
} slot_mem;

static slot_mem W[NSLOTS];

/* How the entries of one batch are ordered among themselves (entries of different batches are
 * ordered by batch number: a batch is what one phase, or one feed, queued). */
enum {
    BK_SINGLE, /* one feed: a batch of its own */
    BK_IO,     /* same fd: start order; different fds: any order */
    BK_ASYNC,  /* send order */
    BK_TIMER,  /* deadline order, ties in start order */
    BK_SET     /* no documented order (idle, prepare, check, fork watchers of one phase) */
};

/* A pending event in the model; each watcher has at most one. */
typedef struct mentry {
    bool on;
    unsigned ev;    /* events certainly present */
    unsigned maybe; /* events that may or may not be present (see the lenient rules) */
    uint64_t batch;
    int kind;     /* BK_* */
    int fd;       /* BK_IO: fd kind */
    uint64_t key; /* BK_IO: start order; BK_ASYNC: send order */
    int64_t dlo;  /* BK_TIMER: the deadline that fired lies in [dlo, dhi] */
    int64_t dhi;
    uint64_t seq;   /* BK_TIMER: start sequence of that deadline */
    uint64_t epoch; /* BK_TIMER: 0 if seq is known exactly (start/again), else unordered */
} mentry;

/* A callback action: what the slot's callback does, `budget` times. */
typedef struct action {
    uint8_t kind, target, arg, budget;
} action;

typedef struct mslot {
    int type;
    int pri;
    bool active;
    mentry pend;
    uint64_t start_seq; /* order of the last start: fd lists, cleanup order */
    int err;            /* aev_watcher_error() */
    int errop;
    /* io */
    int fdk;
    unsigned ioev;
    bool fdset; /* io: fd set by init or aev_io_set since the last start */
    /* timer */
    int64_t after, repeat;
    int64_t dlo, dhi; /* the deadline while active */
    uint64_t tseq, tepoch;
    /* async */
    bool sent;     /* aev_async_sent() */
    bool on_stack; /* on the loop's list of sent watchers, not yet taken */
    bool parked;   /* taken while inactive: delivered at the next start */
    uint64_t send_seq;
    action act[2];
} mslot;

enum { CTX_RUN, CTX_MANUAL };
enum { ST_START, ST_FORK_PASS, ST_PREP, ST_PREP_PASS, ST_POLL, ST_POST_PASS, ST_DONE };

/* One aev_run() (or aev_invoke_pending()) in progress; they nest. */
typedef struct ctx {
    int kind;
    int mode;
    int stage;
    bool bg; /* a helper-thread send is in flight during this run */
} ctx;

enum { HOOK_NONE, HOOK_DEFER, HOOK_INVOKE };

static struct model {
    aev_loop *loop;
    unsigned backend;
    unsigned flags;
    mslot s[NSLOTS];
    uint64_t seq;   /* generic sequence: starts, sends */
    uint64_t batch; /* batch numbers */
    int ref_balance;
    uint64_t iteration;
    int depth; /* aev_run() nesting */
    int break_how;
    bool forked; /* aev_loop_fork() called: fork watchers are due at the next iteration */
    int hook;
    uint64_t hook_calls;
    int suspended;
    int64_t susp_lo, susp_hi; /* the outermost aev_suspend() read the clock in [lo, hi] */
    int sock_bytes, pipe_bytes;
    bool internal_maybe; /* the loop's wakeup watcher may be pending */
    bool late_wake;      /* a helper send may have written the wakeup fd after the last poll */
    ctx stack[MAX_CTX];
    int nctx;
    bool destroying;
    bool direct_armed; /* an aev_invoke() call expects its callback */
    int direct_slot;
    unsigned direct_ev;
    long ncb;
    int cb_depth;
    /* RUN_BG */
    bool bg_inflight;
    int bg_slot;
    int bg_collected;        /* -1 unknown, 0 no, 1 yes: taken by the loop's async phase */
    int bg_observed;         /* -1, or whether a consumed maybe-ASYNC event had the bit */
    bool bg_must;            /* the send was the only thing that could end the poll */
    bool bg_pending_at_poll; /* the watcher was pending at the async phase */
    int nops;
} M;

static uint64_t g_hook_calls_lib;
static bool g_trace_on;
static const char *g_input_name = "(libFuzzer input)";

/* ---- fixtures: fds and the helper thread ------------------------------------------------- */

static int g_fd[FD_COUNT];
static int g_sock_w, g_pipe_w;
static bool g_have_bad_fd;
static bool g_fixtures_ready;

static void drain_fd(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static pthread_mutex_t h_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t h_cv = PTHREAD_COND_INITIALIZER;
static struct {
    uint64_t req, done;
    aev_async *w;
    unsigned delay; /* in units of 2 us, spun before the send */
    int rc;
} H;
static pthread_t g_helper;

static void spin_units(unsigned units)
{
    if (units == 0)
        return;
    aev_time_t end = aev_time() + (aev_time_t)units * 2000;
    while (aev_time() < end) {
    }
}

static void *helper_main(void *arg)
{
    uint64_t seen = 0;
    (void)arg;
    pthread_mutex_lock(&h_mu);
    for (;;) {
        while (H.req == seen)
            pthread_cond_wait(&h_cv, &h_mu);
        seen = H.req;
        aev_async *w = H.w;
        unsigned delay = H.delay;
        pthread_mutex_unlock(&h_mu);
        spin_units(delay);
        int rc = aev_async_send(w);
        pthread_mutex_lock(&h_mu);
        H.rc = rc;
        H.done = seen;
        pthread_cond_broadcast(&h_cv);
    }
    return NULL;
}

static void helper_post(aev_async *w, unsigned delay)
{
    pthread_mutex_lock(&h_mu);
    H.w = w;
    H.delay = delay;
    H.req++;
    pthread_cond_broadcast(&h_cv);
    pthread_mutex_unlock(&h_mu);
}

static int helper_wait(void)
{
    pthread_mutex_lock(&h_mu);
    while (H.done != H.req)
        pthread_cond_wait(&h_cv, &h_mu);
    int rc = H.rc;
    pthread_mutex_unlock(&h_mu);
    return rc;
}

static void fixtures_init(void)
{
    if (g_fixtures_ready)
        return;
    int sv[2], pv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || pipe(pv) != 0) {
        perror("fuzz_api: socketpair/pipe");
        abort();
    }
    g_fd[FD_SOCK] = sv[0];
    g_sock_w = sv[1];
    g_fd[FD_PIPE] = pv[0];
    g_pipe_w = pv[1];
    for (int i = 0; i < 2; i++) {
        set_nonblock(sv[i]);
        set_nonblock(pv[i]);
    }
    char path[] = "/tmp/aev-fuzz-XXXXXX";
    g_fd[FD_FILE] = mkstemp(path);
    if (g_fd[FD_FILE] < 0) {
        perror("fuzz_api: mkstemp");
        abort();
    }
    unlink(path);
    /* A number that is certainly not open: the lowest free numbers are handed out first, so one
     * this high stays free unless the process has about a thousand files open. */
    g_fd[FD_BAD] = 1000;
    g_have_bad_fd = fcntl(g_fd[FD_BAD], F_GETFD) < 0 && errno == EBADF;

    /* The helper thread is created with every signal unblocked; then this thread blocks SIGALRM,
     * so that a timer signal (libFuzzer's -timeout, the replay watchdog) is handled on the helper
     * and never interrupts the loop's poll, which would make AEV_RUN_ONCE return early. */
    if (pthread_create(&g_helper, NULL, helper_main, NULL) != 0) {
        fprintf(stderr, "fuzz_api: pthread_create failed\n");
        abort();
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    g_fixtures_ready = true;
}

/* ---- trace and failure ------------------------------------------------------------------- */

static char g_trace[TRACE_LINES][128];
static unsigned g_ntrace;

__attribute__((format(printf, 1, 2))) static void trace(const char *fmt, ...)
{
    char *line = g_trace[g_ntrace++ % TRACE_LINES];
    int indent = M.cb_depth * 2;
    if (indent > 20)
        indent = 20;
    memset(line, ' ', (size_t)indent);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + indent, sizeof g_trace[0] - (size_t)indent, fmt, ap);
    va_end(ap);
    if (g_trace_on)
        fprintf(stderr, "[%3d] %s\n", M.nops, line);
}

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nfuzz_api: MODEL MISMATCH: %s\n", msg);
    fprintf(stderr, "  input: %s\n  backend: %s%s, operation %d, callback depth %d, strict %s\n",
            g_input_name, M.loop ? aev_backend_name(M.loop) : "?",
            (M.flags & AEV_FLAG_PIPE_WAKEUP) ? " (pipe wakeup)" : "", M.nops, M.cb_depth,
            g_tolerate ? "no" : "yes");
    fprintf(stderr, "  last operations (oldest first):\n");
    unsigned n = g_ntrace < TRACE_LINES ? g_ntrace : TRACE_LINES;
    for (unsigned k = g_ntrace - n; k < g_ntrace; k++)
        fprintf(stderr, "    %s\n", g_trace[k % TRACE_LINES]);
    fflush(stderr);
    abort();
}

static void expect_rc(const char *what, int slot, int got, int want)
{
    if (got != want)
        fail("%s(slot %d) returned %d, model expects %d", what, slot, got, want);
}

/* ---- small helpers ----------------------------------------------------------------------- */

static aev_watcher *wp(int i)
{
    return &W[i].base;
}

static int slot_of(const aev_watcher *w)
{
    const slot_mem *m = (const slot_mem *)(const void *)w;
    if (m < &W[0] || m >= &W[NSLOTS])
        fail("callback for a watcher outside the pool (%p)", (const void *)w);
    return (int)(m - &W[0]);
}

static int64_t sat_add(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static bool holds_ref(int type)
{
    return type != T_FORK && type != T_CLEANUP;
}

static int m_refs(void)
{
    int r = M.ref_balance;
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].active && holds_ref(M.s[i].type))
            r++;
    }
    return r;
}

static unsigned m_npending(void)
{
    unsigned n = 0;
    for (int i = 0; i < NSLOTS; i++)
        n += M.s[i].pend.on;
    return n;
}

static int m_count_active(int type)
{
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        n += M.s[i].type == type && M.s[i].active;
    return n;
}

static uint64_t new_batch(void)
{
    return ++M.batch;
}

static ctx *top_ctx(void)
{
    return M.nctx ? &M.stack[M.nctx - 1] : NULL;
}

/* ---- model: pending queue ---------------------------------------------------------------- */

static void m_feed(int i, unsigned ev, uint64_t batch, int kind, uint64_t key)
{
    mslot *s = &M.s[i];
    if (s->pend.on) {
        s->pend.ev |= ev;
        return;
    }
    s->pend = (mentry){.on = true,
                       .ev = ev,
                       .batch = batch,
                       .kind = kind,
                       .fd = s->fdk,
                       .key = key,
                       .dlo = s->dlo,
                       .dhi = s->dhi,
                       .seq = s->tseq,
                       .epoch = s->tepoch};
}

static void m_feed_single(int i, unsigned ev)
{
    m_feed(i, ev, new_batch(), BK_SINGLE, 0);
}

/* A pending event is consumed (called, cleared or stopped) with events `ev` as the library
 * reports them (or ~0u if it does not say): check them and resolve any uncertain bits. */
static void m_consume(int i, unsigned ev, const char *how)
{
    mslot *s = &M.s[i];
    if (ev != ~0u) {
        unsigned must = s->pend.ev, may = s->pend.ev | s->pend.maybe;
        if ((ev & must) != must || (ev & ~may) != 0)
            fail("%s slot %d (%s): events 0x%x, model expects 0x%x (plus maybe 0x%x)", how, i,
                 type_name[s->type], ev, must, s->pend.maybe);
        if ((s->pend.maybe & AEV_ASYNC) && M.bg_inflight && i == M.bg_slot)
            M.bg_observed = (ev & AEV_ASYNC) != 0;
    }
    s->pend.on = false;
}

/* Must entry f run before entry e (same priority)? */
static bool m_before(const mentry *f, const mentry *e)
{
    if (f->batch != e->batch)
        return f->batch < e->batch;
    switch (f->kind) {
    case BK_IO:
        return f->fd == e->fd && f->key < e->key;
    case BK_ASYNC:
        return f->key < e->key;
    case BK_TIMER:
        if (f->dhi < e->dlo)
            return true;
        return f->dhi <= e->dlo && f->epoch == 0 && e->epoch == 0 && f->seq < e->seq;
    default:
        return false;
    }
}

/* The loop calls slot i's callback from its pending queues: i must be a legal next pick. */
static void m_pick(int i, unsigned ev)
{
    mslot *s = &M.s[i];
    if (!s->pend.on)
        fail("callback of slot %d (%s, events 0x%x), which is not pending in the model", i,
             type_name[s->type], ev);
    int top = AEV_MINPRI - 1;
    for (int j = 0; j < NSLOTS; j++) {
        if (M.s[j].pend.on && M.s[j].pri > top)
            top = M.s[j].pri;
    }
    if (s->pri != top)
        fail("callback of slot %d at priority %d while priority %d has pending watchers", i, s->pri,
             top);
    for (int j = 0; j < NSLOTS; j++) {
        if (j != i && M.s[j].pend.on && M.s[j].pri == top && m_before(&M.s[j].pend, &s->pend))
            fail("callback of slot %d (%s) before slot %d (%s), which was queued first", i,
                 type_name[s->type], j, type_name[M.s[j].type]);
    }
    m_consume(i, ev, "callback of");
}

/* ---- model: async ------------------------------------------------------------------------ */

/* The loop takes its list of sent watchers: in send order, active ones are noted (flag cleared,
 * AEV_ASYNC queued), inactive ones parked. */
static void m_collect(uint64_t batch)
{
    for (;;) {
        int best = -1;
        for (int i = 0; i < NSLOTS; i++) {
            if (M.s[i].type == T_ASYNC && M.s[i].on_stack &&
                (best < 0 || M.s[i].send_seq < M.s[best].send_seq))
                best = i;
        }
        if (best < 0)
            return;
        mslot *s = &M.s[best];
        s->on_stack = false;
        if (s->active) {
            s->sent = false;
            m_feed(best, AEV_ASYNC, batch, BK_ASYNC, s->send_seq);
        } else {
            s->parked = true;
        }
    }
}

/* ---- model: start and stop --------------------------------------------------------------- */

static void m_start(int i, int64_t t0, int64_t t1)
{
    mslot *s = &M.s[i];
    if (s->active)
        return;
    s->active = true;
    s->err = 0;
    s->errop = AEV_ERROP_NONE;
    s->start_seq = ++M.seq;
    switch (s->type) {
    case T_IO:
        s->fdset = false;
        break;
    case T_TIMER:
        s->dlo = sat_add(t0, s->after);
        s->dhi = sat_add(t1, s->after);
        s->tseq = ++M.seq;
        s->tepoch = 0;
        break;
    case T_ASYNC:
        if (s->parked) {
            s->parked = false;
            s->sent = false;
            m_feed(i, AEV_ASYNC, new_batch(), BK_ASYNC, s->send_seq);
        }
        break;
    default:
        break;
    }
}

static void m_stop(int i)
{
    mslot *s = &M.s[i];
    if (s->pend.on)
        m_consume(i, ~0u, "stop of");
    if (s->active) {
        s->active = false;
    }
    if (s->type == T_ASYNC && s->sent && !s->parked)
        m_collect(new_batch());
}

/* ---- checks: library state against the model --------------------------------------------- */

static void check_slot(int i)
{
    mslot *s = &M.s[i];
    aev_watcher *w = wp(i);
    bool a = aev_is_active(w), p = aev_is_pending(w);
    if (a != s->active)
        fail("slot %d (%s): aev_is_active() %d, model %d", i, type_name[s->type], a, s->active);
    if (p != s->pend.on)
        fail("slot %d (%s): aev_is_pending() %d, model %d", i, type_name[s->type], p, s->pend.on);
    if (s->type == T_NONE) {
        if (aev_watcher_loop(w) != NULL || aev_priority(w) != 0)
            fail("slot %d: a never-initialised watcher has a loop or a priority", i);
        return;
    }
    if (aev_watcher_loop(w) != M.loop)
        fail("slot %d: aev_watcher_loop() is not the loop", i);
    if (aev_priority(w) != s->pri)
        fail("slot %d: aev_priority() %d, model %d", i, aev_priority(w), s->pri);
    aev_errop op = AEV_ERROP_NONE;
    int err = aev_watcher_error(w, &op);
    if (err != s->err || (int)op != s->errop)
        fail("slot %d (%s): aev_watcher_error() %d/%d, model %d/%d", i, type_name[s->type], err,
             (int)op, s->err, s->errop);
    switch (s->type) {
    case T_IO:
        if (aev_io_fd(&W[i].io) != g_fd[s->fdk] || aev_io_events(&W[i].io) != s->ioev)
            fail("slot %d: aev_io_fd/events %d/0x%x, model %d/0x%x", i, aev_io_fd(&W[i].io),
                 aev_io_events(&W[i].io), g_fd[s->fdk], s->ioev);
        break;
    case T_TIMER: {
        if (aev_timer_repeat(&W[i].timer) != s->repeat)
            fail("slot %d: aev_timer_repeat() %lld, model %lld", i,
                 (long long)aev_timer_repeat(&W[i].timer), (long long)s->repeat);
        int64_t t0 = aev_time();
        int64_t left = aev_timer_remaining(&W[i].timer);
        int64_t t1 = aev_time();
        int64_t lo = 0, hi = 0;
        if (s->active) {
            lo = max64(0, s->dlo == INT64_MAX ? INT64_MAX - t1 : s->dlo - t1);
            hi = max64(0, s->dhi == INT64_MAX ? INT64_MAX - t0 : s->dhi - t0);
        }
        if (left < lo || left > hi)
            fail("slot %d: aev_timer_remaining() %lld, model [%lld, %lld]", i, (long long)left,
                 (long long)lo, (long long)hi);
        break;
    }
    case T_ASYNC:
        if (!(M.bg_inflight && i == M.bg_slot) && aev_async_sent(&W[i].async) != s->sent)
            fail("slot %d: aev_async_sent() %d, model %d", i, aev_async_sent(&W[i].async), s->sent);
        break;
    default:
        break;
    }
}

static void check_all(const char *where)
{
    for (int i = 0; i < NSLOTS; i++)
        check_slot(i);
    unsigned lib = aev_pending_count(M.loop), model = m_npending();
    if (lib != model && !(M.internal_maybe && lib == model + 1))
        fail("%s: aev_pending_count() %u, model %u%s", where, lib, model,
             M.internal_maybe ? " (or +1 for the wakeup watcher)" : "");
    if (aev_depth(M.loop) != (unsigned)M.depth)
        fail("%s: aev_depth() %u, model %d", where, aev_depth(M.loop), M.depth);
    if (aev_iteration(M.loop) != M.iteration)
        fail("%s: aev_iteration() %llu, model %llu", where,
             (unsigned long long)aev_iteration(M.loop), (unsigned long long)M.iteration);
    if (g_hook_calls_lib != M.hook_calls)
        fail("%s: invoke hook called %llu times, model %llu", where,
             (unsigned long long)g_hook_calls_lib, (unsigned long long)M.hook_calls);
}

/* ---- model: one iteration ---------------------------------------------------------------- */

/* Something makes the next poll return at once (its timeout is zero, or a fd is ready). */
static bool m_certain_wake(void)
{
    if (m_refs() <= 0 || m_count_active(T_IDLE) > 0 || m_npending() > 0)
        return true;
    for (int i = 0; i < NSLOTS; i++) {
        const mslot *s = &M.s[i];
        if (s->type == T_ASYNC && s->on_stack)
            return true; /* the list of sent watchers is not empty, active or not */
        if (!s->active)
            continue;
        if (s->type != T_IO)
            continue;
        switch (s->fdk) {
        case FD_SOCK:
            if ((s->ioev & AEV_WRITE) || M.sock_bytes > 0)
                return true;
            break;
        case FD_PIPE:
            if ((s->ioev & AEV_READ) && M.pipe_bytes > 0)
                return true;
            break;
        default:
            return true; /* regular file: always ready; closed fd: an error */
        }
    }
    return false;
}

static void pass_completed(void)
{
    /* An invoke pass runs everything pending, the loop's wakeup watcher included. */
    M.internal_maybe = false;
}

/* The poll phase and what follows it up to the invoke pass, resolved against the library's
 * state. cb is the slot whose callback is about to run (the first of the pass), or -1 when
 * aev_run() returned without one. */
static void m_poll(ctx *c, int cb)
{
    int64_t now = aev_now(M.loop);
    bool certain = m_certain_wake();
    bool possible = certain || M.internal_maybe || M.late_wake || M.bg_inflight;
    bool any_timer = false;
    int64_t min_dlo = INT64_MAX;
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].type == T_TIMER && M.s[i].active) {
            any_timer = true;
            if (M.s[i].dlo < min_dlo)
                min_dlo = M.s[i].dlo;
        }
    }
    bool check_early = c->mode == AEV_RUN_ONCE && !possible && any_timer;
    bool must_collect = c->bg && c->mode == AEV_RUN_ONCE &&
                        !(certain || M.internal_maybe || M.late_wake) &&
                        (!any_timer || min_dlo > now + AEV_MSEC(50));
    M.internal_maybe = M.internal_maybe || M.late_wake || M.bg_inflight;
    M.late_wake = false;

    uint64_t b_io = new_batch(), b_async = new_batch(), b_always = new_batch();
    uint64_t b_timer = new_batch(), b_idle = new_batch(), b_check = new_batch();
    bool file_always = M.backend != AEV_BACKEND_POLL;

    /* io: readiness of the harness's fds is known exactly. */
    for (int i = 0; i < NSLOTS; i++) {
        mslot *s = &M.s[i];
        if (s->type != T_IO || !s->active)
            continue;
        unsigned ready = 0;
        switch (s->fdk) {
        case FD_SOCK:
            ready = AEV_WRITE | (M.sock_bytes > 0 ? AEV_READ : 0);
            break;
        case FD_PIPE:
            ready = M.pipe_bytes > 0 ? AEV_READ : 0;
            break;
        case FD_FILE:
            ready = file_always ? 0 : AEV_READ | AEV_WRITE;
            break;
        case FD_BAD: {
            uint64_t key = s->start_seq;
            m_stop(i);
            s->err = -EBADF;
            s->errop = M.backend == AEV_BACKEND_POLL ? AEV_ERROP_POLL : AEV_ERROP_WATCH;
            m_feed(i, AEV_ERROR, b_io, BK_IO, key);
            continue;
        }
        default:
            break;
        }
        if (ready & s->ioev)
            m_feed(i, ready & s->ioev, b_io, BK_IO, s->start_seq);
    }

    /* async: the list of sent watchers, then the helper's send if it is in flight. */
    m_collect(b_async);
    if (M.bg_inflight && M.bg_collected < 0) {
        int x = M.bg_slot;
        if (M.s[x].pend.on) {
            /* Resolved when the helper is joined; the callback's bits tell too, unless the
             * event has AEV_ASYNC already. */
            if (!(M.s[x].pend.ev & AEV_ASYNC))
                M.s[x].pend.maybe |= AEV_ASYNC;
            M.bg_pending_at_poll = true;
            M.bg_must = must_collect;
        } else {
            bool got = aev_is_pending(wp(x)) || cb == x;
            M.bg_collected = got;
            if (got)
                m_feed(x, AEV_ASYNC, b_async, BK_ASYNC, UINT64_MAX);
            else if (must_collect)
                fail("lost wakeup: AEV_RUN_ONCE returned without noting the helper thread's "
                     "send to slot %d, and nothing else could end its poll",
                     x);
        }
    }

    /* Always-ready io (epoll, kqueue: the regular file). */
    if (file_always) {
        for (int i = 0; i < NSLOTS; i++) {
            mslot *s = &M.s[i];
            if (s->type == T_IO && s->active && s->fdk == FD_FILE)
                m_feed(i, s->ioev, b_always, BK_IO, s->start_seq);
        }
    }

    /* Timers. */
    bool any_due = false;
    for (int i = 0; i < NSLOTS; i++) {
        mslot *s = &M.s[i];
        if (s->type != T_TIMER || !s->active)
            continue;
        int due;
        if (s->dhi <= now)
            due = 1;
        else if (s->dlo > now)
            due = 0;
        else if (s->repeat == 0)
            due = !aev_is_active(wp(i)); /* an expired one-shot timer is inactive */
        else if (!s->pend.on)
            due = aev_is_pending(wp(i)) || cb == i;
        else
            due = 2; /* the event ORs into a pending one: the callback's events will tell */
        if (due == 0)
            continue;
        if (due == 2) {
            s->pend.maybe |= AEV_TIMER;
            s->dlo = max64(s->dlo, now + 1);
            s->dhi = max64(s->dhi, sat_add(now, s->repeat));
            s->tepoch = b_timer;
            s->tseq = ++M.seq;
            continue;
        }
        any_due = true;
        m_feed(i, AEV_TIMER, b_timer, BK_TIMER, 0);
        if (s->repeat == 0) {
            s->active = false;
        } else {
            s->dlo = max64(now + 1, sat_add(s->dlo, s->repeat));
            s->dhi = sat_add(now, s->repeat);
            s->tepoch = b_timer;
            s->tseq = ++M.seq;
        }
    }
    if (check_early && !any_due)
        fail("AEV_RUN_ONCE: the poll returned before any timer was due (aev_now %lld, earliest "
             "deadline >= %lld)",
             (long long)now, (long long)min_dlo);

    /* Idle: the first priority from the top with pending events or idle watchers decides. */
    if (m_count_active(T_IDLE) > 0) {
        for (int p = AEV_MAXPRI; p >= AEV_MINPRI; p--) {
            bool pend = false, idle = false, seen = false;
            for (int i = 0; i < NSLOTS; i++) {
                const mslot *s = &M.s[i];
                pend = pend || (s->pend.on && s->pri == p);
                if (s->type == T_IDLE && s->active && s->pri == p) {
                    idle = true;
                    seen = seen || aev_is_pending(wp(i)) || cb == i;
                }
            }
            if (pend)
                break;
            if (!idle)
                continue;
            if (M.internal_maybe && !seen)
                break; /* the wakeup watcher was pending at AEV_MAXPRI */
            for (int i = 0; i < NSLOTS; i++) {
                const mslot *s = &M.s[i];
                if (s->type == T_IDLE && s->active && s->pri == p)
                    m_feed(i, AEV_IDLE, b_idle, BK_SET, 0);
            }
            break;
        }
    }

    /* Check. */
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].type == T_CHECK && M.s[i].active)
            m_feed(i, AEV_CHECK, b_check, BK_SET, 0);
    }

    /* What the library queued must be exactly this. */
    for (int i = 0; i < NSLOTS; i++) {
        bool lib = aev_is_pending(wp(i));
        bool want = M.s[i].pend.on && i != cb;
        if (lib != want)
            fail("after the poll phase: slot %d (%s) %s pending in the library but %s in the "
                 "model",
                 i, type_name[M.s[i].type], lib ? "is" : "is not",
                 M.s[i].pend.on ? "is" : "is not");
        if (aev_is_active(wp(i)) != M.s[i].active)
            fail("after the poll phase: slot %d (%s) aev_is_active() %d, model %d", i,
                 type_name[M.s[i].type], aev_is_active(wp(i)), M.s[i].active);
    }
}

static void queue_set(int type, unsigned ev)
{
    uint64_t b = new_batch();
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].type == type && M.s[i].active)
            m_feed(i, ev, b, BK_SET, 0);
    }
}

/* Moves a run's model forward until it expects a callback (a pass with something pending) or
 * the iteration is over. cb: the slot whose callback arrived, or -1 at the end of the run. */
static void m_advance(ctx *c, int cb)
{
    for (;;) {
        switch (c->stage) {
        case ST_START:
            M.iteration++;
            c->stage = ST_PREP;
            if (M.forked) {
                M.forked = false;
                if (m_count_active(T_FORK) > 0) {
                    queue_set(T_FORK, AEV_FORK);
                    M.hook_calls += M.hook != HOOK_NONE;
                    if (M.hook != HOOK_DEFER)
                        c->stage = ST_FORK_PASS;
                }
            }
            break;
        case ST_FORK_PASS:
            if (m_npending())
                return;
            pass_completed();
            c->stage = ST_PREP;
            break;
        case ST_PREP:
            c->stage = ST_POLL;
            if (m_count_active(T_PREPARE) > 0) {
                queue_set(T_PREPARE, AEV_PREPARE);
                M.hook_calls += M.hook != HOOK_NONE;
                if (M.hook != HOOK_DEFER)
                    c->stage = ST_PREP_PASS;
            }
            break;
        case ST_PREP_PASS:
            if (m_npending())
                return;
            pass_completed();
            c->stage = ST_POLL;
            break;
        case ST_POLL:
            if (M.break_how != AEV_BREAK_CANCEL) {
                c->stage = ST_DONE;
                break;
            }
            m_poll(c, cb);
            M.hook_calls += M.hook != HOOK_NONE;
            c->stage = M.hook != HOOK_DEFER ? ST_POST_PASS : ST_DONE;
            break;
        case ST_POST_PASS:
            if (m_npending())
                return;
            pass_completed();
            c->stage = ST_DONE;
            break;
        default:
            return;
        }
    }
}

static void m_finish_run(ctx *c)
{
    m_advance(c, -1);
    if (c->stage != ST_DONE) {
        char list[160] = "";
        size_t n = 0;
        for (int i = 0; i < NSLOTS && n < sizeof list - 16; i++) {
            if (M.s[i].pend.on)
                n += (size_t)snprintf(list + n, sizeof list - n, " %d(0x%x)", i, M.s[i].pend.ev);
        }
        fail("aev_run() returned, but the model still expects callbacks in this iteration:%s",
             list);
    }
}

/* ---- operations -------------------------------------------------------------------------- */

static void fz_cb(aev_watcher *w, unsigned events);
static void exec_actions(int self);

static const int64_t AFTER[8] = {
    0, 0, AEV_USEC(1), AEV_USEC(20), AEV_USEC(300), AEV_MSEC(1), AEV_SEC(3600), -1};
static const int64_t REPEAT[8] = {0, 0, 0, AEV_USEC(1), AEV_USEC(50), AEV_USEC(700), AEV_SEC(3600),
                                  -5};
static const unsigned EVTAB[8] = {0,
                                  AEV_CUSTOM,
                                  AEV_READ,
                                  AEV_TIMER | AEV_CUSTOM,
                                  AEV_IDLE,
                                  AEV_ERROR,
                                  AEV_CUSTOM | AEV_WRITE,
                                  0x10000u};
static const unsigned IOEV[4] = {AEV_READ, AEV_WRITE, AEV_READ | AEV_WRITE, 0};

/* Whether the harness may touch async watchers now (not while a helper send is in flight:
 * stopping any async watcher takes the list the helper pushes onto, re-init is forbidden). */
static bool async_locked(void)
{
    return M.bg_inflight;
}

static int call_typed_start(int type, aev_watcher *w)
{
    switch (type) {
    case T_IO:
        return aev_io_start((aev_io *)w);
    case T_TIMER:
        return aev_timer_start((aev_timer *)w);
    case T_IDLE:
        return aev_idle_start((aev_idle *)w);
    case T_PREPARE:
        return aev_prepare_start((aev_prepare *)w);
    case T_CHECK:
        return aev_check_start((aev_check *)w);
    case T_ASYNC:
        return aev_async_start((aev_async *)w);
    case T_FORK:
        return aev_fork_start((aev_fork *)w);
    case T_CLEANUP:
        return aev_cleanup_start((aev_cleanup *)w);
    default:
        return aev_start(w);
    }
}

static int call_typed_stop(int type, aev_watcher *w)
{
    switch (type) {
    case T_IO:
        return aev_io_stop((aev_io *)w);
    case T_TIMER:
        return aev_timer_stop((aev_timer *)w);
    case T_IDLE:
        return aev_idle_stop((aev_idle *)w);
    case T_PREPARE:
        return aev_prepare_stop((aev_prepare *)w);
    case T_CHECK:
        return aev_check_stop((aev_check *)w);
    case T_ASYNC:
        return aev_async_stop((aev_async *)w);
    case T_FORK:
        return aev_fork_stop((aev_fork *)w);
    case T_CLEANUP:
        return aev_cleanup_stop((aev_cleanup *)w);
    default:
        return aev_stop(w);
    }
}

/* via: 0 and 3 aev_start/aev_stop, 1 the function of the slot's type, 2 the function of type
 * vtype (possibly another type: -EINVAL). */
static int via_type(int i, unsigned via, int *vtype)
{
    switch (via % 4) {
    case 1:
        *vtype = M.s[i].type;
        return 1;
    case 2:
        *vtype = (int)((via >> 2) % (T_COUNT - 1)) + 1;
        return 1;
    default:
        *vtype = T_NONE;
        return 0;
    }
}

static void m_timer_arm(int i, int64_t delay, int64_t t0, int64_t t1)
{
    mslot *s = &M.s[i];
    s->dlo = sat_add(t0, delay);
    s->dhi = sat_add(t1, delay);
    s->tseq = ++M.seq;
    s->tepoch = 0;
}

static void op_init(int i, unsigned type_b, unsigned a, unsigned b)
{
    mslot *s = &M.s[i];
    int type = (int)(type_b % (T_COUNT - 1)) + 1;
    /* An active or pending watcher: -EBUSY, untouched (every type). Not modelled: an async
     * watcher sent and not yet noted, whose init makes the loop take its list of sent watchers
     * (tests/test_async.c checks that). */
    bool busy = s->active || s->pend.on;
    if ((s->type == T_ASYNC && s->sent && !busy) || M.destroying)
        return;
    if ((s->type == T_ASYNC || type == T_ASYNC) && async_locked())
        return;
    aev_loop *loop = M.loop;
    int rc, want = 0;
    int fdk = FD_SOCK;
    unsigned ioev = 0;
    int64_t after = 0, repeat = 0;
    switch (type) {
    case T_IO:
        fdk = (int)(a % FD_COUNT);
        if (fdk == FD_BAD && !g_have_bad_fd)
            fdk = FD_SOCK;
        ioev = IOEV[b % 4];
        if (ioev == 0) {
            ioev = (b & 4) ? 0x4u : 0u; /* not within READ|WRITE, or empty */
            want = -EINVAL;
        }
        trace("io_init(slot %d, %s, 0x%x)", i, fd_name[fdk], ioev);
        rc = aev_io_init(&W[i].io, loop, fz_cb, g_fd[fdk], ioev);
        break;
    case T_TIMER:
        after = AFTER[a % 8];
        repeat = REPEAT[b % 8];
        if (after < 0 || repeat < 0)
            want = -EINVAL;
        trace("timer_init(slot %d, after %lld, repeat %lld)", i, (long long)after,
              (long long)repeat);
        rc = aev_timer_init(&W[i].timer, loop, fz_cb, after, repeat);
        break;
    default:
        trace("%s_init(slot %d)", type_name[type], i);
        switch (type) {
        case T_IDLE:
            rc = aev_idle_init(&W[i].idle, loop, fz_cb);
            break;
        case T_PREPARE:
            rc = aev_prepare_init(&W[i].prepare, loop, fz_cb);
            break;
        case T_CHECK:
            rc = aev_check_init(&W[i].check, loop, fz_cb);
            break;
        case T_ASYNC:
            rc = aev_async_init(&W[i].async, loop, fz_cb);
            break;
        case T_FORK:
            rc = aev_fork_init(&W[i].fork, loop, fz_cb);
            break;
        default:
            rc = aev_cleanup_init(&W[i].cleanup, loop, fz_cb);
            break;
        }
        break;
    }
    /* The arguments are checked before the watcher is looked at. */
    if (want == 0 && busy)
        want = -EBUSY;
    expect_rc("init", i, rc, want);
    if (rc < 0)
        return; /* the watcher is left untouched */
    action act[2] = {s->act[0], s->act[1]};
    memset(s, 0, sizeof *s);
    s->act[0] = act[0];
    s->act[1] = act[1];
    s->type = type;
    s->fdk = fdk;
    s->ioev = ioev;
    s->fdset = true;
    s->after = after;
    s->repeat = repeat;
}

static void op_start(int i, unsigned via)
{
    mslot *s = &M.s[i];
    int vtype;
    bool typed = via_type(i, via, &vtype);
    if ((s->type == T_ASYNC && async_locked()) || M.destroying)
        return;
    int want = (s->type == T_NONE || (typed && vtype != s->type)) ? -EINVAL : 0;
    trace("%s_start(slot %d) [%s]", typed ? type_name[vtype] : "aev", i, type_name[s->type]);
    int64_t t0 = aev_time();
    int rc = typed ? call_typed_start(vtype, wp(i)) : aev_start(wp(i));
    int64_t t1 = aev_time();
    expect_rc("start", i, rc, want);
    if (rc == 0)
        m_start(i, t0, t1);
}

static void op_stop(int i, unsigned via)
{
    mslot *s = &M.s[i];
    int vtype;
    bool typed = via_type(i, via, &vtype);
    if (s->type == T_ASYNC && async_locked())
        return;
    int want = (s->type == T_NONE || (typed && vtype != s->type)) ? -EINVAL : 0;
    trace("%s_stop(slot %d) [%s]", typed ? type_name[vtype] : "aev", i, type_name[s->type]);
    int rc = typed ? call_typed_stop(vtype, wp(i)) : aev_stop(wp(i));
    expect_rc("stop", i, rc, want);
    if (rc == 0)
        m_stop(i);
}

static void op_feed(int i, unsigned evsel)
{
    unsigned ev = EVTAB[evsel % 8];
    if (M.destroying)
        return;
    int want = (M.s[i].type == T_NONE || ev == 0) ? -EINVAL : 0;
    trace("aev_feed_event(slot %d, 0x%x)", i, ev);
    int rc = aev_feed_event(wp(i), ev);
    expect_rc("aev_feed_event", i, rc, want);
    if (rc == 0)
        m_feed_single(i, ev);
}

static void op_clear(int i)
{
    trace("aev_clear_pending(slot %d)", i);
    unsigned r = aev_clear_pending(wp(i));
    if (!M.s[i].pend.on) {
        if (r != 0)
            fail("aev_clear_pending(slot %d) returned 0x%x for a watcher the model has not "
                 "pending",
                 i, r);
        return;
    }
    m_consume(i, r, "aev_clear_pending of");
}

static void op_setpri(int i, unsigned p)
{
    mslot *s = &M.s[i];
    int pri = (int)(p % 7) - 3;
    int want = 0;
    if (s->type == T_NONE || pri < AEV_MINPRI || pri > AEV_MAXPRI)
        want = -EINVAL;
    else if (s->active || s->pend.on)
        want = -EBUSY;
    trace("aev_set_priority(slot %d, %d)", i, pri);
    int rc = aev_set_priority(wp(i), pri);
    expect_rc("aev_set_priority", i, rc, want);
    if (rc == 0)
        s->pri = pri;
}

static void op_invoke(int i, unsigned evsel)
{
    if (M.cb_depth >= MAX_CB_DEPTH || M.destroying)
        return;
    unsigned ev = EVTAB[evsel % 8]; /* 0 is passed as is */
    int want = M.s[i].type == T_NONE ? -EINVAL : 0;
    trace("aev_invoke(slot %d, 0x%x)", i, ev);
    M.direct_armed = want == 0;
    M.direct_slot = i;
    M.direct_ev = ev;
    int rc = aev_invoke(wp(i), ev);
    expect_rc("aev_invoke", i, rc, want);
    if (M.direct_armed) {
        M.direct_armed = false;
        if (want == 0)
            fail("aev_invoke(slot %d) returned 0 without calling the callback", i);
    }
}

static void op_send(int i, bool thread)
{
    mslot *s = &M.s[i];
    if (async_locked() || M.destroying)
        return;
    int want = s->type == T_ASYNC ? 0 : -EINVAL;
    trace("aev_async_send(slot %d)%s", i, thread ? " from the helper thread" : "");
    int rc;
    if (thread) {
        helper_post(&W[i].async, 0);
        rc = helper_wait();
    } else {
        rc = aev_async_send(&W[i].async);
    }
    expect_rc("aev_async_send", i, rc, want);
    if (rc == 0 && !s->sent) {
        s->sent = true;
        s->on_stack = true;
        s->send_seq = ++M.seq;
    }
}

static void op_break(unsigned how_b)
{
    int how = (int)(how_b % 5) - 1; /* -1 and 3 are invalid */
    if (how == -1 && (how_b & 8))
        how = 3;
    int want = (how >= AEV_BREAK_CANCEL && how <= AEV_BREAK_ALL) ? 0 : -EINVAL;
    trace("aev_break(%d)", how);
    int rc = aev_break(M.loop, how);
    expect_rc("aev_break", -1, rc, want);
    if (rc == 0)
        M.break_how = how;
}

static void op_fdio(unsigned k)
{
    switch (k % 4) {
    case 0:
        if (M.sock_bytes < 32 && write(g_sock_w, "s", 1) == 1)
            M.sock_bytes++;
        trace("write to the socket (%d bytes queued)", M.sock_bytes);
        break;
    case 1:
        drain_fd(g_fd[FD_SOCK]);
        M.sock_bytes = 0;
        trace("drain the socket");
        break;
    case 2:
        if (M.pipe_bytes < 32 && write(g_pipe_w, "p", 1) == 1)
            M.pipe_bytes++;
        trace("write to the pipe (%d bytes queued)", M.pipe_bytes);
        break;
    default:
        drain_fd(g_fd[FD_PIPE]);
        M.pipe_bytes = 0;
        trace("drain the pipe");
        break;
    }
}

static void op_timer(int i, unsigned sub, unsigned a)
{
    mslot *s = &M.s[i];
    bool is_timer = s->type == T_TIMER;
    aev_timer *t = &W[i].timer;
    if (M.destroying)
        return;
    switch (sub % 4) {
    case 0: {
        trace("aev_timer_again(slot %d) [%s, repeat %lld]", i, type_name[s->type],
              (long long)s->repeat);
        int64_t t0 = aev_time();
        int rc = aev_timer_again(t);
        int64_t t1 = aev_time();
        expect_rc("aev_timer_again", i, rc, is_timer ? 0 : -EINVAL);
        if (!is_timer)
            return;
        /* docs: a pending event of the timer is dropped first, in every case. */
        if (s->pend.on)
            m_consume(i, ~0u, "aev_timer_again of");
        if (!s->active) {
            if (s->repeat) {
                m_start(i, t0, t1);
                m_timer_arm(i, s->repeat, t0, t1);
            }
        } else if (s->repeat == 0) {
            m_stop(i);
        } else {
            m_timer_arm(i, s->repeat, t0, t1);
        }
        return;
    }
    case 1: {
        int64_t after = AFTER[a % 8], repeat = REPEAT[(a >> 3) % 8];
        int want = 0;
        if (!is_timer || after < 0 || repeat < 0)
            want = -EINVAL;
        else if (s->active)
            want = -EBUSY;
        trace("aev_timer_set(slot %d, %lld, %lld)", i, (long long)after, (long long)repeat);
        int rc = aev_timer_set(t, after, repeat);
        expect_rc("aev_timer_set", i, rc, want);
        if (rc == 0) {
            s->after = after;
            s->repeat = repeat;
        }
        return;
    }
    case 2: {
        int64_t repeat = REPEAT[a % 8];
        int want = (!is_timer || repeat < 0) ? -EINVAL : 0;
        trace("aev_timer_set_repeat(slot %d, %lld)", i, (long long)repeat);
        int rc = aev_timer_set_repeat(t, repeat);
        expect_rc("aev_timer_set_repeat", i, rc, want);
        if (rc == 0)
            s->repeat = repeat;
        return;
    }
    default:
        /* aev_timer_remaining() is checked for every timer by check_slot(). */
        return;
    }
}

static void op_ioset(int i, unsigned fdk_b, unsigned ev_b)
{
    mslot *s = &M.s[i];
    int fdk = (int)(fdk_b % FD_COUNT);
    if (fdk == FD_BAD && !g_have_bad_fd)
        fdk = FD_SOCK;
    unsigned ev = IOEV[ev_b % 4];
    if (M.destroying)
        return;
    int want = 0;
    if (s->type != T_IO || ev == 0)
        want = -EINVAL;
    else if (s->active)
        want = -EBUSY;
    trace("aev_io_set(slot %d, %s, 0x%x)", i, fd_name[fdk], ev);
    int rc = aev_io_set(&W[i].io, g_fd[fdk], ev);
    expect_rc("aev_io_set", i, rc, want);
    if (rc == 0) {
        s->fdk = fdk;
        s->ioev = ev;
        s->fdset = true;
    }
}

static void op_ref(unsigned k)
{
    if (k % 2 == 0 && M.ref_balance < 2) {
        trace("aev_ref()");
        aev_ref(M.loop);
        M.ref_balance++;
    } else if (k % 2 == 1 && M.ref_balance > -2) {
        trace("aev_unref()");
        aev_unref(M.loop);
        M.ref_balance--;
    }
}

static void op_suspend(unsigned k)
{
    int64_t t0 = aev_time();
    if (k % 2 == 0) {
        if (M.suspended >= 2)
            return;
        trace("aev_suspend()");
        aev_suspend(M.loop);
        int64_t t1 = aev_time();
        if (M.suspended++ == 0) {
            M.susp_lo = t0;
            M.susp_hi = t1;
        }
        return;
    }
    trace("aev_resume()");
    aev_resume(M.loop);
    int64_t t1 = aev_time();
    if (M.suspended == 0 || --M.suspended > 0)
        return;
    /* Every timer's deadline moves by the suspended time, which lies in [t0 - hi, t1 - lo]. */
    for (int i = 0; i < NSLOTS; i++) {
        mslot *s = &M.s[i];
        if (s->type == T_TIMER && s->active) {
            s->dlo = sat_add(s->dlo, t0 - M.susp_hi);
            s->dhi = sat_add(s->dhi, t1 - M.susp_lo);
        }
    }
}

static void op_fork(void)
{
    trace("aev_loop_fork()");
    int rc = aev_loop_fork(M.loop);
    expect_rc("aev_loop_fork", -1, rc, 0);
    M.forked = true;
    M.internal_maybe = false; /* a new wakeup fd and watcher */
    M.late_wake = false;
}

static void hook_defer(aev_loop *loop)
{
    (void)loop;
    g_hook_calls_lib++;
}

static void hook_invoke(aev_loop *loop)
{
    g_hook_calls_lib++;
    aev_invoke_pending(loop);
}

static void op_hook(unsigned k)
{
    int mode = (int)(k % 3);
    trace("aev_set_invoke_hook(%s)", mode == HOOK_NONE    ? "NULL"
                                     : mode == HOOK_DEFER ? "deferring"
                                                          : "invoking");
    aev_set_invoke_hook(M.loop, mode == HOOK_NONE    ? NULL
                                : mode == HOOK_DEFER ? hook_defer
                                                     : hook_invoke);
    M.hook = mode;
}

static void op_invoke_pending(void)
{
    if (M.cb_depth >= MAX_CB_DEPTH || M.destroying || M.nctx >= MAX_CTX)
        return;
    trace("aev_invoke_pending()");
    M.stack[M.nctx++] = (ctx){.kind = CTX_MANUAL};
    aev_invoke_pending(M.loop);
    M.nctx--;
    if (m_npending())
        fail("aev_invoke_pending() returned with %u events pending in the model", m_npending());
    pass_completed();
}

/* AEV_RUN_ONCE is used only where the poll is known to end soon. */
static bool once_ok(bool bg)
{
    /* Callbacks before the poll could change what it waits for: not predictable here. */
    if (m_count_active(T_PREPARE) > 0 || (M.forked && m_count_active(T_FORK) > 0))
        return false;
    if (bg || m_certain_wake())
        return true;
    int64_t soon = aev_time() + AEV_MSEC(20);
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].type == T_TIMER && M.s[i].active && M.s[i].dhi <= soon)
            return true;
    }
    return false;
}

static const int RUNMODE[8] = {AEV_RUN_NOWAIT,
                               AEV_RUN_NOWAIT,
                               AEV_RUN_ONCE,
                               AEV_RUN_ONCE,
                               AEV_RUN_NOWAIT,
                               AEV_RUN_ONCE,
                               3,
                               -1};

static void op_run(unsigned mode_b, bool bg, int x, unsigned delay)
{
    int mode = RUNMODE[mode_b % 8];
    bool nested = M.cb_depth > 0;
    if (nested && mode == AEV_RUN_ONCE)
        mode = AEV_RUN_NOWAIT;
    if (M.destroying)
        return;
    if (mode != AEV_RUN_NOWAIT && mode != AEV_RUN_ONCE) {
        trace("aev_run(mode %d)", mode);
        expect_rc("aev_run", -1, aev_run(M.loop, mode), -EINVAL);
        return;
    }
    if (M.suspended) {
        trace("aev_run() while suspended");
        expect_rc("aev_run", -1, aev_run(M.loop, mode), -EBUSY);
        return;
    }
    if (M.nctx >= MAX_CTX || M.cb_depth >= MAX_CB_DEPTH || (nested && async_locked()))
        return;
    mslot *sx = &M.s[x];
    if (bg && (nested || M.nctx || sx->type != T_ASYNC || !sx->active || sx->sent))
        bg = false;
    if (mode == AEV_RUN_ONCE && !once_ok(bg))
        mode = AEV_RUN_NOWAIT;
    trace("aev_run(%s)%s", mode == AEV_RUN_ONCE ? "ONCE" : "NOWAIT",
          bg ? " with a helper-thread send" : "");
    ctx *c = &M.stack[M.nctx++];
    *c = (ctx){.kind = CTX_RUN, .mode = mode, .stage = ST_START, .bg = bg};
    M.depth++;
    M.break_how = AEV_BREAK_CANCEL;
    if (bg) {
        M.bg_inflight = true;
        M.bg_slot = x;
        M.bg_collected = -1;
        M.bg_observed = -1;
        M.bg_must = false;
        M.bg_pending_at_poll = false;
        helper_post(&W[x].async, delay);
    }
    int rc = aev_run(M.loop, mode);
    m_finish_run(c);
    M.nctx--;
    M.depth--;
    if (M.break_how == AEV_BREAK_ONE)
        M.break_how = AEV_BREAK_CANCEL;
    if (bg) {
        expect_rc("aev_async_send (helper thread)", x, helper_wait(), 0);
        bool sent = aev_async_sent(&W[x].async);
        int coll = M.bg_collected;
        if (coll < 0 && M.bg_pending_at_poll) {
            /* The send ORed into a pending event, or not: the flag tells. */
            coll = !sent;
            if (sx->pend.on && (sx->pend.maybe & AEV_ASYNC)) {
                sx->pend.maybe &= ~(unsigned)AEV_ASYNC;
                if (coll)
                    sx->pend.ev |= AEV_ASYNC;
            }
        } else if (coll < 0) {
            coll = 0; /* no async phase ran while the send was in flight (no poll) */
        }
        if (M.bg_must && !coll)
            fail("lost wakeup: AEV_RUN_ONCE returned without noting the helper thread's send "
                 "to slot %d, and nothing else could end its poll",
                 x);
        if (M.bg_observed >= 0 && M.bg_observed != coll)
            fail("slot %d: the callback's AEV_ASYNC bit says %d, the send flag says %d", x,
                 M.bg_observed, coll);
        if (sent == (coll != 0))
            fail("slot %d: aev_async_sent() %d after the helper's send, but the loop %s it", x,
                 sent, coll ? "noted" : "did not note");
        if (!coll) {
            sx->sent = true;
            sx->on_stack = true;
            sx->send_seq = ++M.seq;
        }
        M.bg_inflight = false;
        M.late_wake = true;
    }
    expect_rc("aev_run", -1, rc, m_refs() > 0);
}

static void act_destroy(void)
{
    /* Only from a callback: of aev_run(), of aev_invoke_pending() outside aev_run() (a
     * regression: that once freed the loop under the invoke loop), or a cleanup callback. */
    if (!(M.depth > 0 || M.destroying || M.nctx > 0))
        return;
    trace("aev_loop_destroy() from a callback");
    expect_rc("aev_loop_destroy", -1, aev_loop_destroy(M.loop), -EBUSY);
}

static void loop_create(unsigned cfg)
{
    unsigned list[3];
    unsigned n = 0, sup = aev_supported_backends();
    if (sup & AEV_BACKEND_EPOLL)
        list[n++] = AEV_BACKEND_EPOLL;
    if (sup & AEV_BACKEND_POLL)
        list[n++] = AEV_BACKEND_POLL;
    if (sup & AEV_BACKEND_KQUEUE)
        list[n++] = AEV_BACKEND_KQUEUE;
    unsigned be = list[(cfg & 15) % n];
    unsigned flags = be | AEV_FLAG_NOENV | ((cfg & 16) ? AEV_FLAG_PIPE_WAKEUP : 0);
    int nops = M.nops;
    memset(&M, 0, sizeof M);
    memset(W, 0, sizeof W);
    M.nops = nops;
    g_hook_calls_lib = 0;
    int rc = aev_loop_new(&M.loop, flags);
    if (rc != 0 || !M.loop)
        fail("aev_loop_new(0x%x) failed: %d", flags, rc);
    M.flags = flags;
    M.backend = aev_backend(M.loop);
    if (M.backend != be)
        fail("aev_backend() 0x%x, asked for 0x%x", M.backend, be);
    M.break_how = AEV_BREAK_CANCEL;
    drain_fd(g_fd[FD_SOCK]);
    drain_fd(g_fd[FD_PIPE]);
    trace("aev_loop_new(%s%s)", aev_backend_name(M.loop),
          (flags & AEV_FLAG_PIPE_WAKEUP) ? ", pipe wakeup" : "");
}

/* Destroys the loop: the active cleanup watchers must run, most recently started first. */
static void op_destroy(unsigned cfg, bool final)
{
    trace("aev_loop_destroy()");
    M.destroying = true;
    int rc = aev_loop_destroy(M.loop);
    M.destroying = false;
    expect_rc("aev_loop_destroy", -1, rc, 0);
    for (int i = 0; i < NSLOTS; i++) {
        if (M.s[i].type == T_CLEANUP && M.s[i].active)
            fail("cleanup watcher slot %d was not called by aev_loop_destroy()", i);
    }
    M.loop = NULL;
    if (!final)
        loop_create(cfg);
}

/* ---- the callback and its actions -------------------------------------------------------- */

enum {
    A_NONE,
    A_STOP,
    A_START,
    A_FEED,
    A_CLEAR,
    A_SETPRI,
    A_INVOKE,
    A_SEND,
    A_SEND_THREAD,
    A_BREAK,
    A_DESTROY,
    A_RUN,
    A_INVOKE_PENDING,
    A_FDIO,
    A_TIMER,
    A_INIT,
    A_IOSET,
    A_HOOK,
    A_REF,
    A_COUNT
};

static void do_action(int kind, int t, unsigned arg)
{
    if (M.destroying && kind != A_STOP && kind != A_CLEAR && kind != A_DESTROY)
        return;
    switch (kind) {
    case A_STOP:
        op_stop(t, arg);
        break;
    case A_START:
        op_start(t, arg);
        break;
    case A_FEED:
        op_feed(t, arg);
        break;
    case A_CLEAR:
        op_clear(t);
        break;
    case A_SETPRI:
        op_setpri(t, arg);
        break;
    case A_INVOKE:
        op_invoke(t, arg);
        break;
    case A_SEND:
        op_send(t, false);
        break;
    case A_SEND_THREAD:
        op_send(t, true);
        break;
    case A_BREAK:
        op_break(arg);
        break;
    case A_DESTROY:
        act_destroy();
        break;
    case A_RUN:
        op_run(arg, false, 0, 0);
        break;
    case A_INVOKE_PENDING:
        op_invoke_pending();
        break;
    case A_FDIO:
        op_fdio(arg);
        break;
    case A_TIMER:
        op_timer(t, arg % 4, arg >> 2);
        break;
    case A_INIT:
        op_init(t, arg, arg >> 3, arg >> 5);
        break;
    case A_IOSET:
        op_ioset(t, arg, arg >> 2);
        break;
    case A_HOOK:
        op_hook(arg);
        break;
    case A_REF:
        op_ref(arg);
        break;
    default:
        break;
    }
}

static void exec_actions(int self)
{
    for (int k = 0; k < 2; k++) {
        action *a = &M.s[self].act[k];
        if (a->kind == A_NONE || a->budget == 0 || M.ncb > MAX_CALLBACKS || !M.loop)
            continue;
        a->budget--;
        int t = a->target >= NSLOTS ? self : a->target;
        do_action(a->kind, t, a->arg);
        check_all("after a callback's action");
    }
}

static bool is_pass(int stage)
{
    return stage == ST_FORK_PASS || stage == ST_PREP_PASS || stage == ST_POST_PASS;
}

static void fz_cb(aev_watcher *w, unsigned events)
{
    int i = slot_of(w);
    mslot *s = &M.s[i];
    M.ncb++;
    if (M.direct_armed) {
        M.direct_armed = false;
        trace("-> callback slot %d (%s) 0x%x, from aev_invoke()", i, type_name[s->type], events);
        if (i != M.direct_slot || events != M.direct_ev)
            fail("aev_invoke(slot %d, 0x%x) called slot %d with 0x%x", M.direct_slot, M.direct_ev,
                 i, events);
    } else if (M.destroying) {
        trace("-> callback slot %d (%s) 0x%x, at destroy", i, type_name[s->type], events);
        if (s->type != T_CLEANUP || !s->active || events != AEV_CLEANUP)
            fail("aev_loop_destroy() called slot %d (%s, active %d) with 0x%x", i,
                 type_name[s->type], s->active, events);
        for (int j = 0; j < NSLOTS; j++) {
            if (M.s[j].type == T_CLEANUP && M.s[j].active && M.s[j].start_seq > s->start_seq)
                fail("cleanup slot %d called before cleanup slot %d, which was started later", i,
                     j);
        }
        s->active = false;
        if (s->pend.on)
            m_consume(i, ~0u, "destroy of");
    } else {
        ctx *c = top_ctx();
        trace("-> callback slot %d (%s, pri %d) 0x%x", i, type_name[s->type], s->pri, events);
        if (!c)
            fail("callback of slot %d (events 0x%x) outside any aev_run() or "
                 "aev_invoke_pending()",
                 i, events);
        if (c->kind == CTX_RUN) {
            m_advance(c, i);
            if (!is_pass(c->stage))
                fail("callback of slot %d (events 0x%x) where the model runs no invoke pass", i,
                     events);
        }
        m_pick(i, events);
        /* Never early: a timer queued by the timer phase runs at aev_now() >= its deadline. */
        if (s->pend.kind == BK_TIMER && aev_now(M.loop) < s->pend.dlo)
            fail("timer slot %d called at aev_now() %lld before its earliest deadline %lld", i,
                 (long long)aev_now(M.loop), (long long)s->pend.dlo);
    }
    M.cb_depth++;
    check_all("at a callback's entry");
    exec_actions(i);
    M.cb_depth--;
}

/* ---- input decoding ---------------------------------------------------------------------- */

/* Opcodes, with their argument bytes. */
enum {
    OP_INIT,        /* slot, type, a, b */
    OP_START,       /* slot, via */
    OP_STOP,        /* slot, via */
    OP_FEED,        /* slot, events (EVTAB) */
    OP_CLEAR,       /* slot */
    OP_SETPRI,      /* slot, priority - 3 (mod 7) */
    OP_INVOKE,      /* slot, events */
    OP_SEND,        /* slot */
    OP_SEND_THREAD, /* slot */
    OP_RUN,         /* mode (RUNMODE) */
    OP_RUN_BG,      /* slot, delay (2 us units), mode */
    OP_BREAK,       /* how */
    OP_ACTION,      /* slot, which (0/1), kind, target (NSLOTS: itself), arg, budget - 1 */
    OP_FDIO,        /* what: write/drain socket, write/drain pipe */
    OP_TIMER,       /* slot, sub (again, set, set_repeat, -), arg */
    OP_IOSET,       /* slot, fd, events */
    OP_REF,         /* ref or unref */
    OP_SUSPEND,     /* suspend or resume */
    OP_FORK,        /* aev_loop_fork() */
    OP_HOOK,        /* none, deferring, invoking */
    OP_INVOKE_PENDING,
    OP_DESTROY, /* config of the new loop */
    OP_RUN2,    /* mode: runs and starts are common */
    OP_START2,  /* slot, via */
    OP_COUNT
};

static const uint8_t *g_in;
static size_t g_len, g_pos;

static unsigned rd(void)
{
    return g_pos < g_len ? g_in[g_pos++] : 0;
}

static int rd_slot(void)
{
    return (int)(rd() % NSLOTS);
}

static void null_checks(void)
{
    if (aev_start(NULL) != -EINVAL || aev_stop(NULL) != -EINVAL ||
        aev_feed_event(NULL, AEV_CUSTOM) != -EINVAL || aev_invoke(NULL, 0) != -EINVAL ||
        aev_set_priority(NULL, 0) != -EINVAL || aev_clear_pending(NULL) != 0 ||
        aev_is_active(NULL) || aev_is_pending(NULL) || aev_async_send(NULL) != -EINVAL ||
        aev_run(NULL, AEV_RUN_NOWAIT) != -EINVAL || aev_break(NULL, 0) != -EINVAL ||
        aev_pending_count(NULL) != 0 || aev_loop_destroy(NULL) != -EINVAL)
        fail("a function did not reject a NULL argument as documented");
}

static void run_op(unsigned op)
{
    int i, x;
    unsigned a, b, c;
    switch (op) {
    case OP_INIT:
        i = rd_slot();
        a = rd();
        b = rd();
        c = rd();
        op_init(i, a, b, c);
        break;
    case OP_START:
    case OP_START2:
        i = rd_slot();
        op_start(i, rd());
        break;
    case OP_STOP:
        i = rd_slot();
        op_stop(i, rd());
        break;
    case OP_FEED:
        i = rd_slot();
        op_feed(i, rd());
        break;
    case OP_CLEAR:
        op_clear(rd_slot());
        break;
    case OP_SETPRI:
        i = rd_slot();
        op_setpri(i, rd());
        break;
    case OP_INVOKE:
        i = rd_slot();
        op_invoke(i, rd());
        break;
    case OP_SEND:
        op_send(rd_slot(), false);
        break;
    case OP_SEND_THREAD:
        op_send(rd_slot(), true);
        break;
    case OP_RUN:
    case OP_RUN2:
        op_run(rd(), false, 0, 0);
        break;
    case OP_RUN_BG:
        x = rd_slot();
        a = rd();
        op_run(rd(), true, x, a);
        break;
    case OP_BREAK:
        op_break(rd());
        break;
    case OP_ACTION: {
        i = rd_slot();
        unsigned which = rd() % 2;
        action act;
        act.kind = (uint8_t)(rd() % A_COUNT);
        act.target = (uint8_t)(rd() % (NSLOTS + 1));
        act.arg = (uint8_t)rd();
        act.budget = (uint8_t)(rd() % 4 + 1);
        M.s[i].act[which] = act;
        trace("action %u of slot %d: kind %d, target %d, arg %d, budget %d", which, i, act.kind,
              act.target, act.arg, act.budget);
        break;
    }
    case OP_FDIO:
        op_fdio(rd());
        break;
    case OP_TIMER:
        i = rd_slot();
        a = rd();
        op_timer(i, a, rd());
        break;
    case OP_IOSET:
        i = rd_slot();
        a = rd();
        op_ioset(i, a, rd());
        break;
    case OP_REF:
        op_ref(rd());
        break;
    case OP_SUSPEND:
        op_suspend(rd());
        break;
    case OP_FORK:
        op_fork();
        break;
    case OP_HOOK:
        op_hook(rd());
        break;
    case OP_INVOKE_PENDING:
        op_invoke_pending();
        break;
    case OP_DESTROY:
        op_destroy(rd(), false);
        break;
    default:
        break;
    }
}

/* A watchdog on the helper thread would be simpler, but the helper must stay free for sends:
 * this one is a thread of its own, started once, that aborts an input running too long (a lost
 * wakeup leaves AEV_RUN_ONCE blocked for good). */
static _Atomic int64_t g_watch_deadline;

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t d = atomic_load(&g_watch_deadline);
        if (d != 0 && aev_time() > d) {
            fprintf(stderr,
                    "\nfuzz_api: TIMEOUT: one input ran for more than 20 s (a lost "
                    "wakeup, or a loop that never ends)\n  input: %s\n",
                    g_input_name);
            abort();
        }
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *t = getenv("AEV_FUZZ_TRACE");
    g_trace_on = t && *t && *t != '0';
    const char *s = getenv("AEV_FUZZ_STRICT");
    if (s && *s && *s != '0')
        g_tolerate = 0;
    fixtures_init();
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog_main, NULL) == 0)
        pthread_detach(wd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fixtures_init();
    atomic_store(&g_watch_deadline, aev_time() + AEV_SEC(20));
    g_in = data;
    g_len = size;
    g_pos = 0;
    g_ntrace = 0;
    M.nops = 0;
    loop_create(rd());
    null_checks();
    while (g_pos < g_len && M.nops < MAX_OPS) {
        M.nops++;
        run_op(rd() % OP_COUNT);
        check_all("after an operation");
    }
    op_destroy(0, true);
    drain_fd(g_fd[FD_SOCK]);
    drain_fd(g_fd[FD_PIPE]);
    atomic_store(&g_watch_deadline, 0);
    return 0;
}

/* ---- replay ------------------------------------------------------------------------------ */

#ifdef AEV_FUZZ_REPLAY_MAIN

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                return -1;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    g_input_name = path;
    if (g_trace_on)
        fprintf(stderr, "== %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays a directory's files in name order; returns how many, or -1. */
static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0; /* an optional directory (regressions/) may be absent */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn)
                break;
            names = nn;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (!names[n])
            break;
        snprintf(names[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    int count = 0;
    for (size_t k = 0; k < n; k++) {
        struct stat st;
        if (stat(names[k], &st) == 0 && S_ISREG(st.st_mode) && replay_file(names[k]) == 0)
            count++;
        free(names[k]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int count = 0;
    for (int k = 1; k < argc; k++) {
        struct stat st;
        if (stat(argv[k], &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            count += replay_dir(argv[k]);
        else if (replay_file(argv[k]) == 0)
            count++;
    }
    if (count == 0) {
        fprintf(stderr, "fuzz_replay: no input files found in the arguments\n");
        return 1;
    }
    printf("fuzz_replay: %d inputs replayed, library and model agree\n", count);
    return 0;
}

#endif /* AEV_FUZZ_REPLAY_MAIN */
