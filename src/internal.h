/*
 * Internal declarations shared by the library's files: the loop struct and the aev__ functions
 * each file offers to the others. Nothing here is exported.
 */
#ifndef AEV_INTERNAL_H
#define AEV_INTERNAL_H

#include "asyncev.h"
#include "backend.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define AEV__NPRI (AEV_MAXPRI - AEV_MINPRI + 1)
#define AEV__PRI_INDEX(pri) ((pri)-AEV_MINPRI)

#define aev__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Index of the highest set bit of m, which must not be 0 (the priority masks of pending events
 * and idle watchers). XOR instead of subtraction, equal for counts 0..31: compilers then emit the
 * bare bit scan. */
static inline unsigned aev__top_bit(unsigned m)
{
    return (unsigned)(sizeof m * CHAR_BIT - 1) ^ (unsigned)__builtin_clz(m);
}

/* Watcher types, stored in aev_watcher.type_; 0 means "never initialised". */
enum {
    AEV__T_NONE = 0,
    AEV__T_IO,
    AEV__T_TIMER,
    AEV__T_IDLE,
    AEV__T_PREPARE,
    AEV__T_CHECK,
    AEV__T_ASYNC,
    AEV__T_SIGNAL,
    AEV__T_CHILD,
    AEV__T_PERIODIC,
    AEV__T_FORK,
    AEV__T_CLEANUP,
    AEV__T_EMBED,
    AEV__T_STAT,
    AEV__T_COUNT
};

/* Bits of aev_watcher.flags_. */
enum {
    AEV__WF_FDSET = 0x01,  /* io: fd (re)set since last start; the kernel registration is renewed */
    AEV__WF_PARKED = 0x02, /* async: sent while stopped; delivered on the next start */
    AEV__WF_INTERNAL = 0x04, /* the loop's own watcher (wakeup fd) */
    AEV__WF_TRACE = 0x08,    /* child: also report stops and continues */
    AEV__WF_DIRTY = 0x10     /* stat: named by the inotify events being processed */
};

/* One pending event. w == NULL marks a slot whose watcher was stopped or cleared meanwhile. */
typedef struct aev__pend {
    aev_watcher *w;
    unsigned events;
} aev__pend;

/* FIFO of pending events of one priority: slots [head, count), of which `live` are not blanked.
 * `held` counts the watchers of this priority that are active or pending; cap >= held always
 * (reserved when a watcher starts), so that an event for a started watcher can always be
 * queued: the loop never has to drop one because memory ran out. */
typedef struct aev__pendq {
    aev__pend *items;
    uint32_t head, count, cap, live, held;
} aev__pendq;

/* Growable array of watcher pointers (idle, prepare, check); watcher.active_ = index + 1. */
typedef struct aev__wvec {
    aev_watcher **items;
    uint32_t count, cap;
} aev__wvec;

/* Bits of aev__fd.flags. */
enum {
    AEV__FD_CHANGED = 0x01,      /* listed in loop->changes */
    AEV__FD_FRESH = 0x02,        /* registration must be renewed (fd re-set or reused) */
    AEV__FD_ALWAYS_READY = 0x04, /* backend cannot watch it; reported ready every iteration */
    AEV__FD_LINGER = 0x08,       /* removal deferred: the kernel may still hold a registration */
    AEV__FD_DROP = 0x10          /* a lingering registration brought an event: remove it now */
};

/* Per-fd bookkeeping of the io layer, indexed by fd. */
typedef struct aev__fd {
    aev_io *head;     /* watchers of this fd */
    uint32_t gen;     /* bumped on each fresh registration; stale kernel events carry an old one */
    uint8_t kernel;   /* events handed to the backend */
    uint8_t flags;    /* AEV__FD_* */
    uint8_t stale;    /* consecutive unwanted events seen; too many forces a backend rebuild */
    uint8_t gathered; /* events collected by aev__io_gather, not delivered yet */
} aev__fd;

/* Timer heap node; the deadline is cached here to keep the sift loops in one cache line. */
typedef struct aev__hnode {
    aev_time_t at;
    uint64_t seq; /* start order: equal deadlines fire in the order they were started */
    aev_timer *w;
} aev__hnode;

/* The order of timers, in the heap and in the sorted runs alike: deadline, then start order. */
static inline int aev__hnode_before(const aev__hnode *a, const aev__hnode *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

/* base + delta (delta >= 0) without signed overflow: deadlines beyond the range mean "never". */
static inline aev_time_t aev__time_add(aev_time_t base, aev_time_t delta)
{
    return delta > INT64_MAX - base ? INT64_MAX : base + delta;
}

typedef struct aev__heap {
    aev__hnode *nodes;
    uint32_t count, cap;
} aev__heap;

/* A sorted run of timers: nodes [head, count) in (deadline, sequence) order, appended at the
 * tail; a stopped timer leaves a hole (w == NULL) that is dropped when it reaches the head or
 * when the run is compacted. `live` counts the nodes that are not holes. */
typedef struct aev__run {
    aev__hnode *nodes;
    uint32_t head, count, cap, live;
} aev__run;

#define AEV__NRUNS 4

/* The active timers of a loop (timer_queue.c): a heap, and a few sorted runs that take, in O(1),
 * each timer whose deadline is not earlier than a run's last one, as when many timers share a
 * timeout. The heap's capacity covers every active timer, so that a timer can always move from
 * a run to the heap: restarting or repeating an active timer never needs memory. */
typedef struct aev__timers {
    aev__heap heap;
    aev__run runs[AEV__NRUNS];
    /* The deadline of each run's last node (holes too: later nodes must not be earlier); for an
     * empty run INT64_MIN, or 0 in a run never used (the loop is zeroed), which deadlines, never
     * negative, cannot be earlier than either. Side by side, so that choosing a run reads one
     * cache line. */
    aev_time_t tails[AEV__NRUNS];
    uint32_t count; /* active timers */
} aev__timers;

struct aev_loop {
    const aev__backend *backend;
    void *backend_state;
    unsigned flags;

    aev_time_t now;
    uint64_t iteration;
    unsigned depth;
    int break_how;
    int refs;  /* active watchers plus aev_ref() minus aev_unref() */
    int fatal; /* negative errno once the backend failed for good */

    aev__pendq pending[AEV__NPRI];
    unsigned pending_count;
    unsigned pending_mask; /* bit i set while pending[i] has live events */
    unsigned invoking;     /* aev__invoke_pending calls on the stack, inside aev_run or not */

    /* fds, changes and always_ready all have nfds slots, so recording a change never fails. */
    aev__fd *fds;
    uint32_t nfds;
    int *changes; /* fds whose watchers changed since the last flush */
    uint32_t nchanges;
    int *always_ready; /* fds flagged AEV__FD_ALWAYS_READY */
    uint32_t nalways;
    int rebuild; /* the backend must be recreated before the next poll */

    aev__timers timers;
    uint64_t timer_seq;

    aev__wvec idles[AEV__NPRI];
    unsigned idle_mask; /* bit i set while idles[i] is not empty */
    aev__wvec prepares;
    aev__wvec checks;

    /* Async: senders push onto `sent_list` (lock-free stack); the loop takes the whole stack
     * and feeds AEV_ASYNC to each watcher on it. `asyncs` holds the active ones (loop thread
     * only), so that an init can tell an active watcher from stale memory. */
    _Atomic(aev_async *) sent_list;
    aev__wvec asyncs;
    /* Nonzero while the loop may block in the backend; senders write the wakeup fd only then. */
    atomic_int may_sleep;

    /* Wakeup fd: an eventfd (rfd == wfd) or a self-pipe. */
    int wake_rfd, wake_wfd;
    aev_io wake_io;

    unsigned fork_gen;
    void *data;

    /* fork.c, cleanup.c, loop.c: fork and cleanup watchers (unreferenced), suspension and the
     * invoke hook. */
    aev__wvec forks;
    aev__wvec cleanups;
    int destroying;
    int forked;         /* aev_loop_fork() ran: fork watchers are due at the next fork check */
    unsigned suspended; /* aev_suspend() nesting */
    aev_time_t suspended_at;
    aev_invoke_hook invoke_hook;

    /* signal.c: per-loop signal state (internal async, watchers per signal), allocated by the
     * first aev_signal_start(); NULL until then. */
    struct aev__sigloop *sig;

    /* child.c: one record per watched pid (its pidfd and the pidfd's internal io watcher);
     * [0, child_used) are in use, [child_used, child_nrecs) are kept for reuse. The pid-0
     * watchers, and the internal SIGCHLD watcher needed by trace, pid 0 and the fallback. */
    struct aev__childrec **child_recs;
    uint32_t child_used, child_nrecs, child_cap;
    aev_child *child_any;
    aev_signal child_sig;
    unsigned child_sig_users; /* active child watchers that need SIGCHLD */
    int child_pidfd;          /* 0: not decided yet, 1: pidfds allowed, -1: disabled */
    /* periodic.c: a min-heap of periodic watchers by wall-clock time (node type private to
     * periodic.c), the wall clock read once per iteration, and (wall - monotonic) with the
     * monotonic time it was measured at, to notice when the wall clock is set. */
    struct aev__pnode *periodics;
    uint32_t nperiodics, periodics_cap;
    uint64_t periodic_seq;
    aev_time_t wall_now;
    aev_time_t wall_offset;
    aev_time_t wall_checked;
    /* embed.c (bumped in loop.c): counts recreations of the backend's kernel object (fork,
     * rebuild), so that a loop embedding this one re-arms on the new fd even if its number is
     * the same. */
    unsigned backend_gen;
    /* stat.c: the loop's inotify fd and its internal io watcher (unreferenced), valid while
     * stat_inotify is 1 (0: not decided yet, -1: polling only), and the active stat watchers. */
    int stat_inotify;
    int stat_fd;
    aev_io stat_io;
    aev_stat *stat_list;
};

/* ---- util.c ---- */
/* The allocator (alloc.c): every allocation of the library goes through these. */
void *aev__realloc(void *ptr, size_t size);
void *aev__calloc(size_t n, size_t size);
void aev__free(void *ptr);

int aev__grow(void **items, uint32_t *cap, uint32_t need, size_t elem);
int aev__wvec_push(aev__wvec *v, aev_watcher *w);
void aev__wvec_remove(aev__wvec *v, aev_watcher *w);
void aev__wvec_remove_ordered(aev__wvec *v, aev_watcher *w);

/* ---- time.c ---- */
aev_time_t aev__clock(void);

/* ---- watcher.c ---- */
int aev__watcher_init(aev_watcher *w, aev_loop *loop, aev_cb cb, int type);
int aev__watcher_valid(const aev_watcher *w);
int aev__is(const aev_watcher *w, int type);
int aev__start_begin(aev_watcher *w, int type);
int aev__stop_begin(aev_watcher *w, int type);
void aev__activate(aev_watcher *w, int32_t active);
void aev__deactivate(aev_watcher *w);
void aev__fail(aev_watcher *w, int err, aev_errop op);

/* ---- pending.c ---- */
int aev__feed(aev_loop *loop, aev_watcher *w, unsigned events);
int aev__pending_reserve(aev_watcher *w);
unsigned aev__unpend(aev_watcher *w);
void aev__invoke_pending(aev_loop *loop);
void aev__pending_free(aev_loop *loop);

/* ---- io.c ---- */
void aev__io_ready(aev_loop *loop, int fd, unsigned revents, uint32_t gen);
void aev__io_error(aev_loop *loop, int fd, int err);
/* For backends that report one fd's events in several results (kqueue: one per filter): gather
 * them all, then deliver each fd once, so that its watchers run in start order as elsewhere. */
void aev__io_gather(aev_loop *loop, int fd, unsigned revents, uint32_t gen);
void aev__io_deliver(aev_loop *loop, int fd);
void aev__io_flush(aev_loop *loop);
void aev__io_feed_always_ready(aev_loop *loop);
void aev__io_resubmit_all(aev_loop *loop);
void aev__io_free(aev_loop *loop);

/* ---- timer.c ---- */
void aev__timers_reify(aev_loop *loop);
aev_time_t aev__timers_next(const aev_loop *loop);
void aev__timers_free(aev_loop *loop);

/* ---- heap.c ---- */
/* Room for n nodes; push needs count < cap. */
int aev__heap_reserve(aev__heap *h, uint32_t n);
void aev__heap_push(aev__heap *h, aev_timer *w, aev_time_t at, uint64_t seq);
void aev__heap_remove(aev__heap *h, uint32_t index);
void aev__heap_update(aev__heap *h, uint32_t index, aev_time_t at, uint64_t seq);

/* ---- timer_queue.c: the set of active timers (a timer's active_ says where it is) ---- */
/* Room for one more timer: the only step of adding a timer that can fail (-ENOMEM). */
int aev__tq_reserve(aev__timers *t);
void aev__tq_insert(aev__timers *t, aev_timer *w, aev_time_t at, uint64_t seq);
void aev__tq_remove(aev__timers *t, aev_timer *w);
/* Gives an active timer a new deadline and sequence. Never fails. */
void aev__tq_move(aev__timers *t, aev_timer *w, aev_time_t at, uint64_t seq);
/* The earliest timer's node (deadline, then sequence), or NULL if there is none. */
const aev__hnode *aev__tq_first(const aev__timers *t);
/* The node of an active timer. */
const aev__hnode *aev__tq_node(const aev__timers *t, const aev_timer *w);
/* 1 if t holds w where w->base.active_ says; safe on any memory w may hold (see watcher.c). */
int aev__tq_holds(const aev__timers *t, const aev_timer *w);
void aev__tq_shift(aev__timers *t, aev_time_t delta);
void aev__tq_free(aev__timers *t);

/* ---- idle.c, prepare.c ---- */
void aev__idle_reify(aev_loop *loop);
void aev__queue_prepares(aev_loop *loop);
void aev__queue_checks(aev_loop *loop);
void aev__hooks_free(aev_loop *loop);

/* ---- async.c ---- */
void aev__async_collect(aev_loop *loop);
int aev__async_waiting(aev_loop *loop);
void aev__async_before_init(aev_loop *loop, aev_async *w);
void aev__async_free(aev_loop *loop);

/* ---- wakeup.c ---- */
int aev__wakeup_init(aev_loop *loop);
void aev__wakeup_free(aev_loop *loop);
int aev__wakeup_reinit(aev_loop *loop);
void aev__wakeup_signal(aev_loop *loop);

/* ---- fork.c ---- */
unsigned aev__fork_generation(void);
/* aev__fork_generation(), after registering the fork handler (once per process). */
unsigned aev__fork_register(void);
void aev__queue_forks(aev_loop *loop);

/* ---- cleanup.c ---- */
void aev__run_cleanups(aev_loop *loop);

/* ---- timer.c (suspension) ---- */
void aev__timers_shift(aev_loop *loop, aev_time_t delta);

/* ---- loop.c ---- */
void aev__invoke(aev_loop *loop);
int aev__unref_push(aev__wvec *v, aev_watcher *w);
void aev__unref_remove(aev__wvec *v, aev_watcher *w);

/* ---- signal.c ---- */
void aev__signal_free(aev_loop *loop);

/* ---- child.c ---- */
void aev__child_free(aev_loop *loop);

/* ---- periodic.c ---- */
void aev__periodics_reify(aev_loop *loop);
/* Monotonic ns the loop may sleep for the first periodic (capped), INT64_MAX if none. */
aev_time_t aev__periodics_timeout(aev_loop *loop);
/* Moves every periodic to its next time from the wall clock now; safe with none. */
void aev__periodics_reschedule_all(aev_loop *loop);
void aev__periodics_free(aev_loop *loop);
/* 1 if the loop's periodic heap holds w at the index w->base.active_ claims, else 0; safe on any
 * memory w may hold (see watcher.c). */
int aev__periodic_holds(const aev_loop *loop, const aev_periodic *w);

/* ---- signal.c, child.c: whether the loop holds w as active (watcher.c's re-init check) ---- */
int aev__signal_holds(const aev_loop *loop, const aev_signal *w);
int aev__child_pid_holds(const aev_loop *loop, const aev_child *w);

/* ---- stat.c ---- */
/* Gives the child its own inotify instance after fork(); the parent's is shared. */
void aev__stat_fork(aev_loop *loop);
void aev__stat_free(aev_loop *loop);

/* ---- debug.c: the checks of AEV_DEBUG builds ---- */
#ifdef AEV_DEBUG
/* The registry of live loops: aev_loop_new() adds, aev_loop_destroy() removes (and remembers the
 * address as destroyed until a new loop gets it). Thread-safe. */
void aev__debug_loop_created(const aev_loop *loop);
void aev__debug_loop_destroyed(const aev_loop *loop);
/* 2 if loop is a live loop, 1 if the registry cannot tell (it once failed to grow), 0 if it is
 * not live; never reads *loop. */
int aev__debug_loop_live(const aev_loop *loop);
/* 1 if loop is not live and was destroyed recently. */
int aev__debug_loop_was_destroyed(const aev_loop *loop);
/* "fn: <message>" on stderr, as one write. */
void aev__debug_report(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The name of the public function containing code address addr, or "aev (unknown function)". */
const char *aev__debug_caller_name(const void *addr, char *buf, size_t n);
#endif

/* ---- backend selection (loop.c) ---- */
const aev__backend *aev__backend_find(unsigned id);

#endif /* AEV_INTERNAL_H */
