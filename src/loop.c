/*
 * The loop: creation, destruction, and aev_run(), which reads as the list of phases of one
 * iteration (libev's order): fork check, prepare, poll, timers, idle, check, invoke.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Every public function's check of its loop argument: NULL, and in debug builds (AEV_DEBUG) also
 * a pointer that is not a live loop (destroyed already, or garbage), which a release build would
 * read. The diagnostic names the function. */
#ifdef AEV_DEBUG
static int aev__loop_ok(const aev_loop *loop, const char *fn)
{
    if (!loop)
        return 0;
    if (aev__debug_loop_live(loop))
        return 1;
    if (aev__debug_loop_was_destroyed(loop))
        aev__debug_report(fn, "loop %p was destroyed", (const void *)loop);
    else
        aev__debug_report(fn, "loop %p is not a live loop", (const void *)loop);
    return 0;
}
#define AEV__LOOP_OK(loop) aev__loop_ok((loop), __func__)
#else
#define AEV__LOOP_OK(loop) ((loop) != NULL)
#endif

/* In order of preference; AEV_BACKEND_AUTO takes the first one that is also recommended. */
static const aev__backend *const aev__backends[] = {
#ifdef AEV_HAVE_EPOLL
    &aev__backend_epoll,
#endif
#ifdef AEV_HAVE_KQUEUE
    &aev__backend_kqueue,
#endif
    &aev__backend_poll,
};

/* The backends worth using on this platform, whatever is compiled in. macOS's kqueue is left out:
 * on many releases it fails for ttys, /dev/null and other devices, so poll is the safe default
 * there (docs/backends.md); kqueue stays available on request. */
#if defined(__linux__)
#define AEV__PLATFORM_BACKENDS (AEV_BACKEND_EPOLL | AEV_BACKEND_POLL)
#elif defined(__APPLE__)
#define AEV__PLATFORM_BACKENDS AEV_BACKEND_POLL
#elif defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)
#define AEV__PLATFORM_BACKENDS (AEV_BACKEND_KQUEUE | AEV_BACKEND_POLL)
#else
#define AEV__PLATFORM_BACKENDS AEV_BACKEND_POLL
#endif

#define AEV__NBACKENDS (sizeof aev__backends / sizeof aev__backends[0])

const aev__backend *aev__backend_find(unsigned id)
{
    for (size_t i = 0; i < AEV__NBACKENDS; i++) {
        if (aev__backends[i]->id == id)
            return aev__backends[i];
    }
    return NULL;
}

unsigned aev_supported_backends(void)
{
    unsigned mask = 0;
    for (size_t i = 0; i < AEV__NBACKENDS; i++)
        mask |= aev__backends[i]->id;
    return mask;
}

unsigned aev_recommended_backends(void)
{
    /* poll is always compiled in and always usable. */
    return (aev_supported_backends() & AEV__PLATFORM_BACKENDS) | AEV_BACKEND_POLL;
}

/* The first backend of the table that is recommended: epoll on Linux, kqueue on the BSDs, poll on
 * macOS and elsewhere. */
static const aev__backend *aev__backend_auto(void)
{
    unsigned recommended = aev_recommended_backends();
    for (size_t i = 0; i < AEV__NBACKENDS; i++) {
        if (aev__backends[i]->id & recommended)
            return aev__backends[i];
    }
    return &aev__backend_poll;
}

/* The AEV_BACKEND environment variable: 0 if unset or empty, -EINVAL if not a backend name. */
static int aev__backend_from_env(void)
{
    static const struct {
        const char *name;
        unsigned id;
    } names[] = {
        {"epoll", AEV_BACKEND_EPOLL}, {"poll", AEV_BACKEND_POLL}, {"kqueue", AEV_BACKEND_KQUEUE}};
    const char *env = getenv("AEV_BACKEND");
    if (!env || !*env)
        return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(env, names[i].name) == 0)
            return (int)names[i].id;
    }
    return -EINVAL;
}

/* Resolves flags to a backend: -EINVAL for bad flags, -ENOSYS if not compiled in. */
static int aev__pick_backend(unsigned flags, const aev__backend **out)
{
    unsigned id = flags & AEV_BACKEND_MASK;
    if (flags & ~(unsigned)(AEV_BACKEND_MASK | AEV_FLAG_NOENV | AEV_FLAG_PIPE_WAKEUP))
        return -EINVAL;
    if (id & (id - 1))
        return -EINVAL; /* more than one backend bit */
    if (id == AEV_BACKEND_AUTO && !(flags & AEV_FLAG_NOENV)) {
        int env = aev__backend_from_env();
        if (env < 0)
            return env;
        id = (unsigned)env;
    }
    *out = id == AEV_BACKEND_AUTO ? aev__backend_auto() : aev__backend_find(id);
    if (*out)
        return 0;
    return (id & ~(unsigned)(AEV_BACKEND_EPOLL | AEV_BACKEND_POLL | AEV_BACKEND_KQUEUE)) ? -EINVAL
                                                                                         : -ENOSYS;
}

int aev_loop_new(aev_loop **out, unsigned flags)
{
    const aev__backend *backend;
    if (!out)
        return -EINVAL;
    *out = NULL;
    int rc = aev__pick_backend(flags, &backend);
    if (rc < 0)
        return rc;
    aev_loop *loop = aev__calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    loop->backend = backend;
    loop->flags = flags;
    loop->wake_rfd = loop->wake_wfd = -1;
    atomic_init(&loop->sent_list, NULL);
    atomic_init(&loop->may_sleep, 0);
    loop->fork_gen = aev__fork_register();
    loop->now = aev__clock();
    rc = backend->init(loop);
    if (rc < 0) {
        aev__free(loop);
        return rc;
    }
    rc = aev__wakeup_init(loop);
    if (rc < 0) {
        loop->backend->destroy(loop);
        aev__io_free(loop);
        /* The wakeup watcher's start reserves its pending slot before the fd table can fail
         * to grow: that queue is allocated by then. */
        aev__pending_free(loop);
        aev__free(loop);
        return rc;
    }
#ifdef AEV_DEBUG
    aev__debug_loop_created(loop);
#endif
    *out = loop;
    return 0;
}

int aev_loop_destroy(aev_loop *loop)
{
    if (!AEV__LOOP_OK(loop))
        return -EINVAL;
    if (loop->depth || loop->invoking || loop->destroying)
        return -EBUSY;
    loop->destroying = 1;
    aev__run_cleanups(loop);
    aev__child_free(loop);
    aev__stat_free(loop);
    aev__signal_free(loop);
    aev__wakeup_free(loop);
    loop->backend->destroy(loop);
    aev__io_free(loop);
    aev__timers_free(loop);
    aev__periodics_free(loop);
    aev__hooks_free(loop);
    aev__async_free(loop);
    aev__pending_free(loop);
    aev__free(loop->forks.items);
    aev__free(loop->cleanups.items);
#ifdef AEV_DEBUG
    /* Last: until here the internal watchers are stopped, which checks the loop is live. */
    aev__debug_loop_destroyed(loop);
#endif
    aev__free(loop);
    return 0;
}

/* Recreates the backend's kernel object and registers every watched fd again: after fork, or
 * when it holds registrations that cannot be removed one by one. */
static int aev__rebuild(aev_loop *loop)
{
    int rc = loop->backend->reinit(loop);
    if (rc < 0)
        return rc;
    loop->backend_gen++;
    aev__io_resubmit_all(loop);
    loop->rebuild = 0;
    return 0;
}

int aev_loop_fork(aev_loop *loop)
{
    if (!AEV__LOOP_OK(loop))
        return -EINVAL;
    loop->fork_gen = aev__fork_generation();
    loop->forked = 1;
    int rc = aev__rebuild(loop);
    if (rc < 0)
        return rc;
    aev__stat_fork(loop);
    return aev__wakeup_reinit(loop);
}

/* Whether the iteration must end before polling: a callback of the phase just run asked for a
 * break, or the loop failed. */
static int aev__stop_before_poll(const aev_loop *loop)
{
    return loop->break_how || loop->fatal;
}

/* In a fork child (gen is the process's fork generation): rebuild kernel state (unless the
 * program did it with aev_loop_fork()), then run the fork watchers before anything else of this
 * iteration. Returns whether the iteration must end before polling. */
static int aev__fork_check(aev_loop *loop, unsigned gen)
{
    if (gen != loop->fork_gen) {
        int rc = aev_loop_fork(loop);
        if (rc < 0) {
            loop->fatal = rc;
            return 1;
        }
    }
    if (!loop->forked)
        return 0;
    loop->forked = 0;
    if (!loop->forks.count)
        return 0;
    aev__queue_forks(loop);
    aev__invoke(loop);
    return aev__stop_before_poll(loop);
}

static int aev__prepare_phase(aev_loop *loop)
{
    if (!loop->prepares.count)
        return 0;
    aev__queue_prepares(loop);
    aev__invoke(loop);
    return aev__stop_before_poll(loop);
}

/* The invoke step, or the program's replacement for it (aev_set_invoke_hook). */
void aev__invoke(aev_loop *loop)
{
    if (loop->invoke_hook)
        loop->invoke_hook(loop);
    else
        aev__invoke_pending(loop);
}

void aev_invoke_pending(aev_loop *loop)
{
    if (AEV__LOOP_OK(loop))
        aev__invoke_pending(loop);
}

void aev_set_invoke_hook(aev_loop *loop, aev_invoke_hook hook)
{
    if (AEV__LOOP_OK(loop))
        loop->invoke_hook = hook;
}

/* Fork and cleanup watchers are active without keeping the loop alive. */
int aev__unref_push(aev__wvec *v, aev_watcher *w)
{
    int rc = aev__wvec_push(v, w);
    if (rc == 0)
        w->loop_->refs--;
    return rc;
}

void aev__unref_remove(aev__wvec *v, aev_watcher *w)
{
    w->loop_->refs++;
    aev__wvec_remove(v, w);
}

void aev_suspend(aev_loop *loop)
{
    if (AEV__LOOP_OK(loop) && loop->suspended++ == 0)
        loop->suspended_at = aev__clock();
}

/* Timers get back the time they lost while suspended; the cached time is refreshed. */
void aev_resume(aev_loop *loop)
{
    if (!AEV__LOOP_OK(loop) || loop->suspended == 0 || --loop->suspended > 0)
        return;
    aev_time_t now = aev__clock();
    aev__timers_shift(loop, now - loop->suspended_at);
    loop->now = now;
    aev__periodics_reschedule_all(loop);
}

/* How long the poll may block: 0 if there is work already, -1 for no limit. */
static aev_time_t aev__poll_timeout(aev_loop *loop, int mode)
{
    if (mode == AEV_RUN_NOWAIT || loop->refs <= 0 || loop->idle_mask || loop->pending_count ||
        loop->nalways || loop->break_how)
        return 0;
    aev_time_t left = aev__periodics_timeout(loop); /* INT64_MAX if none */
    aev_time_t next = aev__timers_next(loop);
    if (next != INT64_MAX) {
        aev_time_t timer_left = next - aev__clock();
        left = timer_left < left ? timer_left : left;
    }
    if (left == INT64_MAX)
        return -1;
    return left > 0 ? left : 0;
}

/* Polls the backend for at most timeout ns. A wait that brought only events nobody wants (the
 * registration of a fd whose watchers all stopped, left for close() to remove: io.c) made the io
 * layer list the fd for removal and fed nothing: the removal is made and the wait resumed for
 * what is left of the timeout, so that the program never sees such a wakeup. A few rounds at
 * most: a registration that removing does not silence flags a rebuild, which ends them. */
static int aev__poll_wanted(aev_loop *loop, int mode, aev_time_t timeout)
{
    for (int round = 0;; round++) {
        int rc = loop->backend->poll(loop, timeout);
        if (rc < 0 || timeout == 0 || !loop->nchanges || loop->pending_count || loop->rebuild ||
            round == 3)
            return rc;
        aev__io_flush(loop);
        /* Recomputed from the timers rather than kept as a deadline: a wait that ends on time
         * then needs no clock reading of its own. */
        timeout = aev__poll_timeout(loop, mode);
        if (timeout == 0)
            return 0;
    }
}

static void aev__poll_phase(aev_loop *loop, int mode)
{
    if (loop->rebuild) {
        int rc = aev__rebuild(loop);
        if (rc < 0) {
            loop->fatal = rc;
            return;
        }
    }
    if (loop->nchanges)
        aev__io_flush(loop);
    aev_time_t timeout = aev__poll_timeout(loop, mode);
    int may_sleep = timeout != 0;
    if (may_sleep) {
        /* seq_cst: the loop's half of the wakeup handshake (see async.c); senders write the
         * wakeup fd only while this is set. */
        atomic_store_explicit(&loop->may_sleep, 1, memory_order_seq_cst);
        if (aev__async_waiting(loop))
            timeout = 0;
    }
    int rc = aev__poll_wanted(loop, mode, timeout);
    if (may_sleep) {
        /* seq_cst: a sender whose push follows our stack exchange in the total order must see
         * 0 here and skip the write, keeping writes to one per iteration. */
        atomic_store_explicit(&loop->may_sleep, 0, memory_order_seq_cst);
    }
    if (rc < 0)
        loop->fatal = rc;
    loop->now = aev__clock();
}

/* Queues what became due during the poll, in phase order. Each phase is skipped by an inline
 * test of the count it would loop over: most iterations have nothing for most phases, and the
 * calls alone would cost more than the tests (bench/loop_count runs just this path). */
static void aev__queue_due(aev_loop *loop)
{
    /* Relaxed peek, as in aev__async_collect(): a push missed here is seen before the loop
     * can sleep. */
    if (atomic_load_explicit(&loop->sent_list, memory_order_relaxed))
        aev__async_collect(loop);
    if (loop->nalways)
        aev__io_feed_always_ready(loop);
    if (loop->timers.count)
        aev__timers_reify(loop);
    if (loop->nperiodics)
        aev__periodics_reify(loop);
    if (loop->idle_mask)
        aev__idle_reify(loop);
    if (loop->checks.count)
        aev__queue_checks(loop);
}

/* The phases before the poll, fork check and prepare; returns whether the iteration must end
 * there. The iteration's clock reading is taken only when one of them has work: otherwise
 * nothing can see it before the reading after the poll replaces it, and on a loop that turns
 * without blocking a clock read costs as much as all of the loop's own code (about 30 ns on the
 * machine of bench/loop_count, where it decided the ratio to libev). */
static int aev__before_poll(aev_loop *loop)
{
    unsigned gen = aev__fork_generation();
    if (gen == loop->fork_gen && !loop->forked && !loop->prepares.count)
        return 0;
    loop->now = aev__clock();
    /* Not ||: prepare watchers run even when a fork callback asked for a break. Each phase
     * tests for a break only after running callbacks: an iteration starts with none (aev_run
     * tests before each). */
    int stop = aev__fork_check(loop, gen);
    stop |= aev__prepare_phase(loop);
    return stop;
}

static void aev__iterate(aev_loop *loop, int mode)
{
    loop->iteration++;
    if (aev__before_poll(loop))
        return;
    aev__poll_phase(loop, mode);
    aev__queue_due(loop);
    aev__invoke(loop);
}

int aev_run(aev_loop *loop, int mode)
{
    if (!AEV__LOOP_OK(loop) || mode < AEV_RUN_DEFAULT || mode > AEV_RUN_NOWAIT)
        return -EINVAL;
    if (loop->fatal)
        return loop->fatal;
    if (loop->suspended)
        return -EBUSY;
    loop->depth++;
    loop->break_how = AEV_BREAK_CANCEL;
    do {
        aev__iterate(loop, mode);
    } while (mode == AEV_RUN_DEFAULT && !loop->break_how && !loop->fatal && loop->refs > 0);
    if (loop->break_how == AEV_BREAK_ONE)
        loop->break_how = AEV_BREAK_CANCEL;
    loop->depth--;
    if (loop->fatal)
        return loop->fatal;
    return loop->refs > 0;
}

int aev_break(aev_loop *loop, int how)
{
    if (!AEV__LOOP_OK(loop) || how < AEV_BREAK_CANCEL || how > AEV_BREAK_ALL)
        return -EINVAL;
    loop->break_how = how;
    return 0;
}

void aev_ref(aev_loop *loop)
{
    if (AEV__LOOP_OK(loop))
        loop->refs++;
}

void aev_unref(aev_loop *loop)
{
    if (AEV__LOOP_OK(loop))
        loop->refs--;
}

uint64_t aev_iteration(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->iteration : 0;
}

unsigned aev_depth(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->depth : 0;
}

unsigned aev_pending_count(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->pending_count : 0;
}

aev_time_t aev_now(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->now : 0;
}

void aev_now_update(aev_loop *loop)
{
    if (AEV__LOOP_OK(loop))
        loop->now = aev__clock();
}

unsigned aev_backend(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->backend->id : 0;
}

const char *aev_backend_name(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->backend->name : NULL;
}

void aev_loop_set_data(aev_loop *loop, void *data)
{
    if (AEV__LOOP_OK(loop))
        loop->data = data;
}

void *aev_loop_data(const aev_loop *loop)
{
    return AEV__LOOP_OK(loop) ? loop->data : NULL;
}
