/*
 * Operations common to every watcher type: initialisation, activation bookkeeping, priority,
 * feeding, invoking, and start/stop dispatched on the watcher's type.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>

/*
 * The init functions read the watcher before writing it, to refuse one that is still active or
 * pending; in a program that initialises a fresh watcher (stack or malloc memory) that read is of
 * uninitialised memory, which is harmless here (every byte read is overwritten if the init
 * succeeds; a watcher the loop holds was initialised) but which memory checkers would report at
 * every init. Where their client interface is available at build time, the bytes read are
 * declared defined first: valgrind's memcheck, and MemorySanitizer.
 */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define AEV__VG_DEFINED(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#endif
#endif
#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#include <sanitizer/msan_interface.h>
#define AEV__MSAN_DEFINED(p, n) __msan_unpoison((p), (n))
#endif
#endif
#ifndef AEV__VG_DEFINED
#define AEV__VG_DEFINED(p, n) ((void)0)
#endif
#ifndef AEV__MSAN_DEFINED
#define AEV__MSAN_DEFINED(p, n) ((void)0)
#endif
#define AEV__ASSUME_DEFINED(p, n)                                                                  \
    do {                                                                                           \
        AEV__VG_DEFINED((p), (n));                                                                 \
        AEV__MSAN_DEFINED((p), (n));                                                               \
    } while (0)

/* ---- does the loop hold this watcher? ------------------------------------------------------ */

/*
 * These answer whether `loop` really holds w at the place w's own members claim: the pending
 * queue slot in pending_, the container index in active_, the fd chain of fd_, and so on. Every
 * index is bounds-checked against the loop's own arrays and only pointers are compared, so
 * they are safe on any memory w may hold (stale state of an earlier use, stack garbage): they
 * never read outside the loop's arrays, and they never dereference a pointer found in w.
 */

/* 1 if the pending queue of w's priority has w in the slot w->pending_ names. */
static int aev__pending_holds(const aev_loop *loop, const aev_watcher *w)
{
    if (w->pending_ <= 0 || w->priority_ < AEV_MINPRI || w->priority_ > AEV_MAXPRI)
        return 0;
    const aev__pendq *q = &loop->pending[AEV__PRI_INDEX(w->priority_)];
    uint32_t i = (uint32_t)w->pending_ - 1;
    return i >= q->head && i < q->count && q->items[i].w == w;
}

/* 1 if slot active_ - 1 of the array holds w (idle, prepare, check, fork, cleanup). */
static int aev__wvec_holds(const aev__wvec *v, const aev_watcher *w)
{
    uint32_t i = (uint32_t)w->active_ - 1;
    return w->active_ > 0 && i < v->count && v->items[i] == w;
}

static int aev__io_holds(const aev_loop *loop, const aev_io *w)
{
    AEV__ASSUME_DEFINED(&w->fd_, sizeof w->fd_);
    if (w->fd_ < 0 || (uint32_t)w->fd_ >= loop->nfds)
        return 0;
    for (const aev_io *p = loop->fds[w->fd_].head; p; p = p->next_) {
        if (p == w)
            return 1;
    }
    return 0;
}

static int aev__timer_holds(const aev_loop *loop, const aev_timer *w)
{
    return aev__tq_holds(&loop->timers, w);
}

static int aev__stat_holds(const aev_loop *loop, const aev_stat *w)
{
    for (const aev_stat *p = loop->stat_list; p; p = p->next_) {
        if (p == w)
            return 1;
    }
    return 0;
}

static int aev__child_any_holds(const aev_loop *loop, const aev_child *w)
{
    for (const aev_child *p = loop->child_any; p; p = p->next_) {
        if (p == w)
            return 1;
    }
    return 0;
}

/* An active embed watcher keeps its internal prepare watcher in the loop's prepare array. */
static int aev__embed_holds(const aev_loop *loop, const aev_embed *w)
{
    AEV__ASSUME_DEFINED(&w->prepare_.base, sizeof w->prepare_.base);
    return aev__wvec_holds(&loop->prepares, &w->prepare_.base);
}

/* Whether loop holds w as an active watcher of the type w->type_ claims: 1 or 0. */
static int aev__active_holds(const aev_loop *loop, const aev_watcher *w)
{
    /* Only timers use negative values (their place in a sorted run). */
    if (w->active_ == 0 || (w->active_ < 0 && w->type_ != AEV__T_TIMER))
        return 0;
    switch (w->type_) {
    case AEV__T_IO:
        return aev__io_holds(loop, (const aev_io *)w);
    case AEV__T_TIMER:
        return aev__timer_holds(loop, (const aev_timer *)w);
    case AEV__T_PERIODIC:
        return aev__periodic_holds(loop, (const aev_periodic *)w);
    case AEV__T_IDLE:
        if (w->priority_ < AEV_MINPRI || w->priority_ > AEV_MAXPRI)
            return 0;
        return aev__wvec_holds(&loop->idles[AEV__PRI_INDEX(w->priority_)], w);
    case AEV__T_PREPARE:
        return aev__wvec_holds(&loop->prepares, w);
    case AEV__T_CHECK:
        return aev__wvec_holds(&loop->checks, w);
    case AEV__T_FORK:
        return aev__wvec_holds(&loop->forks, w);
    case AEV__T_CLEANUP:
        return aev__wvec_holds(&loop->cleanups, w);
    case AEV__T_STAT:
        return aev__stat_holds(loop, (const aev_stat *)w);
    case AEV__T_EMBED:
        return aev__embed_holds(loop, (const aev_embed *)w);
    case AEV__T_CHILD:
        AEV__ASSUME_DEFINED(&((const aev_child *)w)->pid_, sizeof(int));
        if (((const aev_child *)w)->pid_ == 0)
            return aev__child_any_holds(loop, (const aev_child *)w);
        return aev__child_pid_holds(loop, (const aev_child *)w);
    case AEV__T_SIGNAL:
        return aev__signal_holds(loop, (const aev_signal *)w);
    case AEV__T_ASYNC:
        return aev__wvec_holds(&loop->asyncs, w);
    default:
        return 0; /* not a watcher type: nothing of the loop can hold it */
    }
}

/* True if loop holds w (pending, or active where that can be told): re-initialising w would
 * leave the loop pointing at a watcher whose state was wiped. */
static int aev__loop_holds(const aev_loop *loop, const aev_watcher *w)
{
    return aev__pending_holds(loop, w) || aev__active_holds(loop, w);
}

/* ---- checks at the entry of every watcher function ----------------------------------------- */

/* Which public function a check is made for, for the diagnostics of debug builds: its name, or
 * the watcher type and operation that make it up (aev_<type>_<op>), or else the address it
 * called from, to be looked up. Only used when there is something to report. */
typedef struct aev__site {
    const char *fn;
    int type;
    const char *op;
    const void *caller;
} aev__site;

#ifdef AEV_DEBUG
/* A watcher that is a member of the loop struct itself (the wakeup watcher, which aev_loop_new
 * starts before the loop is registered as live): reading it was reading the loop already, so
 * the registry has nothing to add. Compares addresses only. */
static int aev__inside_loop(const aev_loop *loop, const void *w)
{
    uintptr_t a = (uintptr_t)w;
    return a >= (uintptr_t)loop && a < (uintptr_t)loop + sizeof *loop;
}

/* The <type> in aev_<type>_start, by watcher type. */
static const char *const aev__type_names[AEV__T_COUNT] = {
    "watcher", "io",    "timer",    "idle", "prepare", "check", "async",
    "signal",  "child", "periodic", "fork", "cleanup", "embed", "stat"};

static const char *aev__site_name(const aev__site *s, char *buf, size_t n)
{
    if (s->fn)
        return s->fn;
    if (s->op) {
        int t = s->type > AEV__T_NONE && s->type < AEV__T_COUNT ? s->type : AEV__T_NONE;
        snprintf(buf, n, "aev_%s_%s", aev__type_names[t], s->op);
        return buf;
    }
    return aev__debug_caller_name(s->caller, buf, n);
}

/*
 * The checks of a debug build that a release build cannot afford or cannot make safely, for a
 * watcher that passed the cheap ones: its loop must be a live loop (a never-initialised watcher
 * holds garbage there, a watcher of a destroyed loop a dangling pointer), and if the watcher
 * claims to be active or pending, the loop must hold it there. 1 if the watcher may be used.
 */
static int aev__debug_watcher(const aev_watcher *w, const aev__site *s)
{
    char buf[64];
    if (!aev__debug_loop_live(w->loop_) && !aev__inside_loop(w->loop_, w)) {
        if (aev__debug_loop_was_destroyed(w->loop_))
            aev__debug_report(aev__site_name(s, buf, sizeof buf),
                              "watcher %p belongs to loop %p, which was destroyed", (const void *)w,
                              (const void *)w->loop_);
        else
            aev__debug_report(aev__site_name(s, buf, sizeof buf),
                              "watcher %p was never initialised (loop %p is not a live loop)",
                              (const void *)w, (const void *)w->loop_);
        return 0;
    }
    if ((w->pending_ && !aev__pending_holds(w->loop_, w)) ||
        (w->active_ && !aev__active_holds(w->loop_, w))) {
        aev__debug_report(aev__site_name(s, buf, sizeof buf),
                          "watcher %p claims to be %s in loop %p, which does not hold it (a copied "
                          "watcher, or its memory was overwritten)",
                          (const void *)w, w->active_ ? "active" : "pending",
                          (const void *)w->loop_);
        return 0;
    }
    return 1;
}
#define AEV__CALLER() __builtin_return_address(0)
#else
#define AEV__CALLER() NULL
#endif

/* The cheap checks against NULL and never-initialised (zeroed) watchers, then, in debug builds,
 * the expensive ones. 1 if w may be used. */
static int aev__check(const aev_watcher *w, aev__site site)
{
    if (!w || !w->loop_ || !w->cb_ || w->type_ <= AEV__T_NONE || w->type_ >= AEV__T_COUNT)
        return 0;
#ifdef AEV_DEBUG
    return aev__debug_watcher(w, &site);
#else
    (void)site;
    return 1;
#endif
}

#define AEV__SITE_FN(name) ((aev__site){(name), 0, NULL, NULL})
#define AEV__SITE_OP(type, op) ((aev__site){NULL, (type), (op), NULL})
#define AEV__SITE_CALLER() ((aev__site){NULL, 0, NULL, AEV__CALLER()})

int aev__watcher_init(aev_watcher *w, aev_loop *loop, aev_cb cb, int type)
{
    if (!w || !loop || !cb)
        return -EINVAL;
    AEV__ASSUME_DEFINED(w, sizeof *w);
#ifdef AEV_DEBUG
    char fn[64];
    aev__site site = AEV__SITE_OP(type, "init");
    if (!aev__debug_loop_live(loop) && !aev__inside_loop(loop, w)) {
        aev__debug_report(aev__site_name(&site, fn, sizeof fn), "loop %p is not a live loop",
                          (const void *)loop);
        return -EINVAL;
    }
    /* Still held by another loop: safe to look only because that loop is live. */
    if (w->loop_ && w->loop_ != loop && aev__debug_loop_live(w->loop_) == 2 &&
        aev__loop_holds(w->loop_, w)) {
        aev__debug_report(aev__site_name(&site, fn, sizeof fn),
                          "watcher %p is still %s in loop %p: stop it first", (void *)w,
                          w->active_ ? "active" : "pending", (const void *)w->loop_);
        return -EBUSY;
    }
#endif
    /* The loop the program hands us is the only one that may be read: a watcher whose memory
     * names it, and that it really holds, is active or pending there and must be stopped
     * first. Stale state of an earlier use, or garbage, is recognised as such and overwritten. */
    if (w->loop_ == loop && (w->active_ || w->pending_) && aev__loop_holds(loop, w))
        return -EBUSY;
    if (type == AEV__T_ASYNC && w->loop_ == loop && w->type_ == AEV__T_ASYNC) {
        AEV__ASSUME_DEFINED(w, sizeof(aev_async));
        aev__async_before_init(loop, (aev_async *)w);
    }
    w->data = NULL;
    w->loop_ = loop;
    w->cb_ = cb;
    w->active_ = 0;
    w->pending_ = 0;
    w->priority_ = 0;
    w->type_ = (uint8_t)type;
    w->flags_ = 0;
    w->errop_ = AEV_ERROP_NONE;
    w->err_ = 0;
    return 0;
}

/* Sanity check against NULL and never-initialised (zeroed) watchers. */
int aev__watcher_valid(const aev_watcher *w)
{
    return aev__check(w, AEV__SITE_CALLER());
}

/* True if w is a valid watcher of the given type: typed functions reject the others. */
int aev__is(const aev_watcher *w, int type)
{
    return aev__check(w, AEV__SITE_CALLER()) && w->type_ == type;
}

/* The common head of every typed start: -EINVAL for a watcher that is not of this type, 0 if it
 * is active already (start is then a no-op), 1 if the type's own start must follow. */
int aev__start_begin(aev_watcher *w, int type)
{
    if (!aev__check(w, AEV__SITE_OP(type, "start")) || w->type_ != type)
        return -EINVAL;
    if (w->active_)
        return 0;
    int rc = aev__pending_reserve(w);
    return rc < 0 ? rc : 1;
}

/* The common head of every typed stop: -EINVAL for a watcher that is not of this type;
 * otherwise its pending event is dropped, and 1 says the type's own stop must follow (the
 * watcher is active), 0 that nothing more is to be done. */
int aev__stop_begin(aev_watcher *w, int type)
{
    if (!aev__check(w, AEV__SITE_OP(type, "stop")) || w->type_ != type)
        return -EINVAL;
    if (w->pending_)
        aev__unpend(w);
    return w->active_ ? 1 : 0;
}

/* Marks w active; every active watcher holds one reference on its loop. The caller reserved
 * its pending slot first (aev__start_begin does). */
void aev__activate(aev_watcher *w, int32_t active)
{
    if (!w->pending_)
        w->loop_->pending[AEV__PRI_INDEX(w->priority_)].held++;
    w->active_ = active;
    w->err_ = 0;
    w->errop_ = AEV_ERROP_NONE;
    w->loop_->refs++;
}

void aev__deactivate(aev_watcher *w)
{
    if (!w->pending_)
        w->loop_->pending[AEV__PRI_INDEX(w->priority_)].held--;
    w->active_ = 0;
    w->loop_->refs--;
}

/* Records why w failed; the caller stops it and feeds AEV_ERROR. */
void aev__fail(aev_watcher *w, int err, aev_errop op)
{
    w->err_ = err;
    w->errop_ = (uint8_t)op;
}

int aev_start(aev_watcher *w)
{
    if (!aev__check(w, AEV__SITE_FN("aev_start")))
        return -EINVAL;
    switch (w->type_) {
    case AEV__T_IO:
        return aev_io_start((aev_io *)w);
    case AEV__T_TIMER:
        return aev_timer_start((aev_timer *)w);
    case AEV__T_IDLE:
        return aev_idle_start((aev_idle *)w);
    case AEV__T_PREPARE:
        return aev_prepare_start((aev_prepare *)w);
    case AEV__T_CHECK:
        return aev_check_start((aev_check *)w);
    case AEV__T_FORK:
        return aev_fork_start((aev_fork *)w);
    case AEV__T_CLEANUP:
        return aev_cleanup_start((aev_cleanup *)w);
    case AEV__T_ASYNC:
        return aev_async_start((aev_async *)w);
    case AEV__T_SIGNAL:
        return aev_signal_start((aev_signal *)w);
    case AEV__T_PERIODIC:
        return aev_periodic_start((aev_periodic *)w);
    case AEV__T_CHILD:
        return aev_child_start((aev_child *)w);
    case AEV__T_STAT:
        return aev_stat_start((aev_stat *)w);
    case AEV__T_EMBED:
        return aev_embed_start((aev_embed *)w);
    default:
        return -EINVAL;
    }
}

int aev_stop(aev_watcher *w)
{
    if (!aev__check(w, AEV__SITE_FN("aev_stop")))
        return -EINVAL;
    switch (w->type_) {
    case AEV__T_IO:
        return aev_io_stop((aev_io *)w);
    case AEV__T_TIMER:
        return aev_timer_stop((aev_timer *)w);
    case AEV__T_IDLE:
        return aev_idle_stop((aev_idle *)w);
    case AEV__T_PREPARE:
        return aev_prepare_stop((aev_prepare *)w);
    case AEV__T_CHECK:
        return aev_check_stop((aev_check *)w);
    case AEV__T_FORK:
        return aev_fork_stop((aev_fork *)w);
    case AEV__T_CLEANUP:
        return aev_cleanup_stop((aev_cleanup *)w);
    case AEV__T_ASYNC:
        return aev_async_stop((aev_async *)w);
    case AEV__T_SIGNAL:
        return aev_signal_stop((aev_signal *)w);
    case AEV__T_PERIODIC:
        return aev_periodic_stop((aev_periodic *)w);
    case AEV__T_CHILD:
        return aev_child_stop((aev_child *)w);
    case AEV__T_STAT:
        return aev_stat_stop((aev_stat *)w);
    case AEV__T_EMBED:
        return aev_embed_stop((aev_embed *)w);
    default:
        return -EINVAL;
    }
}

bool aev_is_active(const aev_watcher *w)
{
    return w && w->active_ != 0;
}

bool aev_is_pending(const aev_watcher *w)
{
    return w && w->pending_ != 0;
}

aev_loop *aev_watcher_loop(const aev_watcher *w)
{
    return w ? w->loop_ : NULL;
}

int aev_set_priority(aev_watcher *w, int priority)
{
    if (!aev__check(w, AEV__SITE_FN("aev_set_priority")) || priority < AEV_MINPRI ||
        priority > AEV_MAXPRI)
        return -EINVAL;
    /* The priority selects the queue a pending watcher sits in and, for idle watchers, the
     * array it is active in: changing it underneath either would corrupt them. */
    if (w->active_ || w->pending_)
        return -EBUSY;
    w->priority_ = (int8_t)priority;
    return 0;
}

int aev_priority(const aev_watcher *w)
{
    return w ? w->priority_ : 0;
}

int aev_invoke(aev_watcher *w, unsigned events)
{
    if (!aev__check(w, AEV__SITE_FN("aev_invoke")))
        return -EINVAL;
    w->cb_(w, events);
    return 0;
}

int aev_feed_event(aev_watcher *w, unsigned events)
{
    if (!aev__check(w, AEV__SITE_FN("aev_feed_event")) || events == 0)
        return -EINVAL;
    return aev__feed(w->loop_, w, events);
}

unsigned aev_clear_pending(aev_watcher *w)
{
    if (!aev__check(w, AEV__SITE_FN("aev_clear_pending")) || !w->pending_)
        return 0;
    return aev__unpend(w);
}

int aev_watcher_error(const aev_watcher *w, aev_errop *op)
{
    if (op)
        *op = w ? (aev_errop)w->errop_ : AEV_ERROP_NONE;
    return w ? w->err_ : -EINVAL;
}
