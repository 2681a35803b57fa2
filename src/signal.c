/*
 * Signal watchers: any number per signal and per loop, and one signal watched from several
 * loops in several threads at once.
 *
 * Design:
 *  - A process-wide table holds, per signal, AEV__SIG_SLOTS slots. A loop watching the signal
 *    owns one slot, which points to the loop's internal async watcher. The handler is the only
 *    code that runs in signal context: for each slot of its signal it sets the slot's pending
 *    flag and sends the slot's async watcher (lock-free and async-signal-safe, see async.c).
 *    It never runs a watcher callback and never takes a lock.
 *  - The async callback runs on the loop's thread: it takes the pending flags of the loop's
 *    slots and feeds AEV_SIGNAL to every active watcher of those signals in this loop. Many
 *    signals before the loop looks set the same flag and send the same watcher: they coalesce
 *    into one callback; a signal after the flag was taken sets it again and sends again: it is
 *    not lost.
 *  - A slot is freed by clearing its pointer and then waiting until no handler is using it (the
 *    `users` counter, a Dekker handshake with the handler). Handlers never block, so the wait is
 *    short; after it, no handler can touch the loop's memory through the slot.
 *  - The library's handler is installed (sigaction) when the first slot of a signal is taken and
 *    the saved disposition is put back when the last one is released. Table changes are
 *    serialised by a mutex that the handler never takes.
 *  - Per loop, lazily allocated on the first start: the async watcher (unreferenced: only the
 *    signal watchers keep aev_run() going), the list of watchers per signal and the loop's slot
 *    index per signal. Starting and stopping watchers afterwards allocates nothing.
 *  - Loop destroy (aev__signal_free) gives up the loop's slots as the stop of its last watchers
 *    would; watchers still active are abandoned, never called again.
 *  - Fork: the table is process memory and is inherited with the dispositions. The child's loop
 *    rebuilds its wakeup fd (aev_loop_fork); its slots still point to its own async watcher, so
 *    signals keep reaching it. Loops of the parent's other threads keep their slots in the
 *    child: a signal there sends their copies, which at worst wakes the parent's loop once
 *    through the wakeup fd they still share (a spurious wakeup, which loops tolerate).
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#ifndef NSIG
#error "NSIG is needed to size the signal table"
#endif

/* Loops that may watch one signal at the same time; beyond, start returns -ENOSPC. */
#define AEV__SIG_SLOTS 32

/* One loop's registration for one signal. Read by handlers in any thread. */
typedef struct aev__sigslot {
    _Atomic(aev_async *) async; /* the owning loop's internal watcher; NULL when free */
    atomic_int users;           /* handlers between their increment and decrement */
    atomic_int pending;         /* the signal arrived and the loop has not taken it yet */
} aev__sigslot;

/* Everything the process knows about one signal. The handler reads only `slots`; the rest is
 * used under aev__sig_lock. */
typedef struct aev__sigstate {
    aev__sigslot slots[AEV__SIG_SLOTS];
    int used;               /* slots taken */
    struct sigaction saved; /* the disposition before the library's handler */
} aev__sigstate;

/* Zero-initialised static atomics are valid (C11 7.17.2): every slot starts free. */
static aev__sigstate aev__sigs[NSIG];
static pthread_mutex_t aev__sig_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t aev__sig_once = PTHREAD_ONCE_INIT;

/* Per-loop signal state (loop->sig); touched only on the loop's thread. */
struct aev__sigloop {
    aev_async async;         /* sent by the handler */
    aev_signal *heads[NSIG]; /* active watchers per signal, in start order */
    uint8_t slot[NSIG];      /* 1-based slot index owned in aev__sigs[sig], 0 if none */
};

/* ---- fork safety ------------------------------------------------------------------------ */

/*
 * A fork while another thread holds the lock would leave it locked forever in the child, and a
 * fork while another thread is inside the handler would leave that slot's `users` above zero
 * in the child (the thread does not exist there), so that freeing the slot would wait forever.
 * Taking the lock around fork() keeps the table consistent; in the child no handler can be
 * running (the forking thread is in fork(), not in the handler), so every count is reset.
 */
static void aev__sig_prepare(void)
{
    pthread_mutex_lock(&aev__sig_lock);
}

static void aev__sig_parent(void)
{
    pthread_mutex_unlock(&aev__sig_lock);
}

static void aev__sig_child(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        for (int i = 0; i < AEV__SIG_SLOTS; i++) {
            /* Relaxed: the child has one thread, and the handler's own accesses are atomic. */
            atomic_store_explicit(&aev__sigs[sig].slots[i].users, 0, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&aev__sig_lock);
}

static void aev__sig_register_atfork(void)
{
    /* On failure (ENOMEM) only the fork-during-start/stop races above remain unprotected. */
    (void)pthread_atfork(aev__sig_prepare, aev__sig_parent, aev__sig_child);
}

/* ---- the handler (signal context) -------------------------------------------------------- */

static void aev__signal_notify(aev__sigslot *s)
{
    /* Relaxed peek to skip free slots without a shared write; a slot being taken right now may
     * be missed, like a signal that arrived just before the start. */
    if (!atomic_load_explicit(&s->async, memory_order_relaxed))
        return;
    /* seq_cst increment, then seq_cst load: our half of the handshake with aev__slot_clear(),
     * which stores NULL then loads users. Either we see NULL or it sees our increment and
     * waits, so the watcher cannot be freed while we use it. */
    atomic_fetch_add_explicit(&s->users, 1, memory_order_seq_cst);
    aev_async *a = atomic_load_explicit(&s->async, memory_order_seq_cst);
    if (a) {
        /* Relaxed: the send's acq_rel exchange publishes this store to the loop, which reads
         * the flag only after noting the send (or earlier, which is harmless). */
        atomic_store_explicit(&s->pending, 1, memory_order_relaxed);
        aev_async_send(a);
    }
    /* Release: our reads of the watcher happen before the clearing thread's acquire of 0. */
    atomic_fetch_sub_explicit(&s->users, 1, memory_order_release);
}

static void aev__signal_handler(int sig)
{
    int saved_errno = errno;
    if (sig > 0 && sig < NSIG) {
        for (int i = 0; i < AEV__SIG_SLOTS; i++)
            aev__signal_notify(&aev__sigs[sig].slots[i]);
    }
    errno = saved_errno;
}

/* ---- the process table (under aev__sig_lock) --------------------------------------------- */

static int aev__sig_install(int sig, struct sigaction *saved)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = aev__signal_handler;
    /* A full mask: no other handler nests inside ours, so the time a slot is in use stays
     * short. SA_RESTART: the program's blocking calls are not interrupted by our signals. */
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(sig, &sa, saved) < 0 ? -errno : 0;
}

/* Frees a slot: after this no handler holds or can obtain its pointer. */
static void aev__slot_clear(aev__sigslot *s)
{
    /* seq_cst store then seq_cst load: see aev__signal_notify(). */
    atomic_store_explicit(&s->async, NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&s->users, memory_order_seq_cst) != 0)
        sched_yield();
    /* Relaxed: no handler can set it any more (it saw NULL); the next owner starts clean. */
    atomic_store_explicit(&s->pending, 0, memory_order_relaxed);
}

static int aev__slot_take(struct aev__sigloop *sl, int sig)
{
    aev__sigstate *st = &aev__sigs[sig];
    int i = 0;
    /* Relaxed: slots change only under the lock, which we hold. */
    while (i < AEV__SIG_SLOTS && atomic_load_explicit(&st->slots[i].async, memory_order_relaxed))
        i++;
    if (i == AEV__SIG_SLOTS)
        return -ENOSPC;
    aev__sigslot *s = &st->slots[i];
    /* Release: a handler that loads the pointer (seq_cst, so at least acquire) sees the
     * initialised watcher behind it. Published before the handler is installed, so that a
     * signal arriving right after the installation is seen. */
    atomic_store_explicit(&s->async, &sl->async, memory_order_release);
    if (st->used == 0) {
        int rc = aev__sig_install(sig, &st->saved);
        if (rc < 0) {
            aev__slot_clear(s);
            return rc;
        }
    }
    st->used++;
    sl->slot[sig] = (uint8_t)(i + 1);
    return 0;
}

static void aev__slot_give(struct aev__sigloop *sl, int sig)
{
    aev__sigstate *st = &aev__sigs[sig];
    /* Restore first, then clear: a signal arriving in between still finds this loop's slot
     * instead of being swallowed by a handler with nothing left to notify. */
    if (--st->used == 0)
        (void)sigaction(sig, &st->saved, NULL);
    aev__slot_clear(&st->slots[sl->slot[sig] - 1]);
    sl->slot[sig] = 0;
}

static int aev__slot_acquire(struct aev__sigloop *sl, int sig)
{
    pthread_once(&aev__sig_once, aev__sig_register_atfork);
    pthread_mutex_lock(&aev__sig_lock);
    int rc = aev__slot_take(sl, sig);
    pthread_mutex_unlock(&aev__sig_lock);
    return rc;
}

static void aev__slot_release(struct aev__sigloop *sl, int sig)
{
    pthread_mutex_lock(&aev__sig_lock);
    aev__slot_give(sl, sig);
    pthread_mutex_unlock(&aev__sig_lock);
}

/* ---- the loop side ------------------------------------------------------------------------ */

/* Feeds AEV_SIGNAL to the loop's watchers of sig if the signal arrived since the last time. */
static void aev__signal_dispatch(aev_loop *loop, struct aev__sigloop *sl, int sig)
{
    aev__sigslot *s = &aev__sigs[sig].slots[sl->slot[sig] - 1];
    /* Relaxed: the flag carries no data; the async note already synchronised with the sender,
     * and a flag seen before its send only makes that send's callback find nothing. */
    if (!atomic_exchange_explicit(&s->pending, 0, memory_order_relaxed))
        return;
    for (aev_signal *w = sl->heads[sig]; w; w = w->next_) {
        if (aev__feed(loop, &w->base, AEV_SIGNAL) < 0) {
            /* Out of memory for the pending queue: keep the signal and retry next iteration
             * rather than lose it (watchers already fed may then run twice). */
            atomic_store_explicit(&s->pending, 1, memory_order_relaxed);
            aev_async_send(&sl->async);
            return;
        }
    }
}

static void aev__signal_async_cb(aev_watcher *w, unsigned events)
{
    struct aev__sigloop *sl = aev__container_of(w, struct aev__sigloop, async.base);
    (void)events;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sl->slot[sig])
            aev__signal_dispatch(w->loop_, sl, sig);
    }
}

static int aev__sigloop_get(aev_loop *loop, struct aev__sigloop **out)
{
    if (!loop->sig) {
        struct aev__sigloop *sl = aev__calloc(1, sizeof *sl);
        if (!sl)
            return -ENOMEM;
        aev_async_init(&sl->async, loop, aev__signal_async_cb);
        /* Highest priority: the watchers it feeds run in the same invoke pass. */
        sl->async.base.priority_ = AEV_MAXPRI;
        sl->async.base.flags_ |= AEV__WF_INTERNAL;
        int rc = aev_async_start(&sl->async);
        if (rc < 0) {
            aev__free(sl);
            return rc;
        }
        /* The internal watcher must not keep aev_run() alive; the signal watchers do. */
        loop->refs--;
        loop->sig = sl;
    }
    *out = loop->sig;
    return 0;
}

/* 1 if w is on one of the loop's lists of active signal watchers. Compares pointers only, and
 * walks every signal's list rather than trusting w's own signum: w may hold anything
 * (re-initialisation check, watcher.c). */
int aev__signal_holds(const aev_loop *loop, const aev_signal *w)
{
    const struct aev__sigloop *sl = loop->sig;
    if (!sl)
        return 0;
    for (int sig = 1; sig < NSIG; sig++) {
        for (const aev_signal *p = sl->heads[sig]; p; p = p->next_) {
            if (p == w)
                return 1;
        }
    }
    return 0;
}

void aev__signal_free(aev_loop *loop)
{
    struct aev__sigloop *sl = loop->sig;
    if (!sl)
        return;
    /* Watchers still active are abandoned; giving up the slots restores the dispositions of
     * signals no other loop watches, and guarantees no handler still uses this memory. */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sl->slot[sig])
            aev__slot_release(sl, sig);
    }
    loop->refs++;
    aev_async_stop(&sl->async);
    aev__free(sl);
    loop->sig = NULL;
}

/* ---- API ---------------------------------------------------------------------------------- */

static int aev__signal_valid(int sig)
{
    return sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP;
}

int aev_signal_init(aev_signal *w, aev_loop *loop, aev_cb cb, int signum)
{
    if (!aev__signal_valid(signum))
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_SIGNAL);
    if (rc < 0)
        return rc;
    w->next_ = NULL;
    w->signum_ = signum;
    return 0;
}

int aev_signal_set(aev_signal *w, int signum)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_SIGNAL) || !aev__signal_valid(signum))
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->signum_ = signum;
    return 0;
}

int aev_signal_start(aev_signal *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_SIGNAL);
    if (rc <= 0)
        return rc;
    struct aev__sigloop *sl;
    rc = aev__sigloop_get(w->base.loop_, &sl);
    if (rc < 0)
        return rc;
    int sig = w->signum_;
    if (!sl->slot[sig]) {
        rc = aev__slot_acquire(sl, sig);
        if (rc < 0)
            return rc;
    }
    /* Appended, so that watchers of one signal and priority run in start order. */
    aev_signal **link = &sl->heads[sig];
    while (*link)
        link = &(*link)->next_;
    w->next_ = NULL;
    *link = w;
    aev__activate(&w->base, 1);
    return 0;
}

int aev_signal_stop(aev_signal *w)
{
    int rc = aev__stop_begin((aev_watcher *)w, AEV__T_SIGNAL);
    if (rc <= 0)
        return rc;
    struct aev__sigloop *sl = w->base.loop_->sig;
    int sig = w->signum_;
    aev_signal **link = &sl->heads[sig];
    while (*link != w)
        link = &(*link)->next_;
    *link = w->next_;
    w->next_ = NULL;
    aev__deactivate(&w->base);
    if (!sl->heads[sig])
        aev__slot_release(sl, sig);
    return 0;
}

int aev_signal_signum(const aev_signal *w)
{
    return w ? w->signum_ : -EINVAL;
}
