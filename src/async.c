/*
 * Async watchers: the one part of a loop that other threads and signal handlers may touch.
 *
 * Protocol (docs/async.md has the full argument):
 *  - The watcher's one atomic word `link_` is 0 while it is not sent; a sent watcher holds the
 *    address of the next watcher on the stack with bit 0 set (AEV__SENT alone at the bottom).
 *    A sender exchanges AEV__SENT into it; only the sender that finds 0 pushes the watcher onto
 *    the loop's lock-free `sent_list` stack, so a watcher is on the stack at most once and many
 *    sends coalesce into one callback.
 *  - The pusher that finds the stack empty writes the wakeup fd, and only if the loop announced
 *    (`may_sleep`) that it may block. The loop re-checks the stack after announcing, so either
 *    the loop sees the push or the pusher sees the announcement: no wakeup is lost, and there is
 *    at most one write per time the loop takes the stack, i.e. per iteration.
 *  - The loop takes the whole stack with one exchange and clears each `link_` to 0 with an
 *    exchange before feeding the event: a send after that point makes the watcher pending again.
 * One word instead of a flag and a pointer keeps the watcher at libev's size plus the loop
 * pointer; aev_async is pointer-aligned, so bit 0 of a watcher's address is always free.
 * Only the loop thread touches anything else in the watcher.
 */
#include "internal.h"

#include <errno.h>

#if ATOMIC_INT_LOCK_FREE != 2 || ATOMIC_POINTER_LOCK_FREE != 2
#error "aev_async_send must be async-signal-safe: lock-free atomics are required"
#endif

/* Bit 0 of link_: the watcher is sent. The other bits are the next watcher on the stack. */
#define AEV__SENT ((uintptr_t)1)

static aev_async *aev__link_next(uintptr_t link)
{
    return (aev_async *)(link & ~AEV__SENT);
}

int aev_async_init(aev_async *w, aev_loop *loop, aev_cb cb)
{
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_ASYNC);
    if (rc < 0)
        return rc;
    atomic_init(&w->link_, 0);
    return 0;
}

/* The loop notes a send: clear the flag, then make the watcher pending. */
static void aev__async_note(aev_loop *loop, aev_async *w)
{
    /* acq_rel: the acquire half pairs with the release half of every send since the word was
     * last cleared (each is a read-modify-write of link_, and so is every other change of it
     * until this one: one unbroken release sequence), so the callback sees what those senders
     * wrote before sending; the release half orders our earlier read of the link before a new
     * push of w. */
    atomic_exchange_explicit(&w->link_, 0, memory_order_acq_rel);
    aev__feed(loop, &w->base, AEV_ASYNC);
}

int aev_async_start(aev_async *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_ASYNC);
    if (rc <= 0)
        return rc;
    rc = aev__wvec_push(&w->base.loop_->asyncs, &w->base);
    if (rc < 0)
        return rc;
    /* A send that reached the loop while the watcher was stopped is delivered now. */
    if (w->base.flags_ & AEV__WF_PARKED) {
        w->base.flags_ &= (uint8_t)~AEV__WF_PARKED;
        aev__async_note(w->base.loop_, w);
    }
    return 0;
}

int aev_async_stop(aev_async *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_ASYNC))
        return -EINVAL;
    if (w->base.pending_)
        aev__unpend(&w->base);
    if (w->base.active_)
        aev__wvec_remove(&w->base.loop_->asyncs, &w->base);
    /* A sent watcher may still be on the stack, even one that was never started; the program
     * may free it once stopped, so take the stack now. w, being inactive, is parked and is
     * delivered if started again. Acquire: pairs with the sender's exchange, so that the stack
     * read below sees its push (the program guarantees that no send is still running). */
    if (!(w->base.flags_ & AEV__WF_PARKED) && atomic_load_explicit(&w->link_, memory_order_acquire))
        aev__async_collect(w->base.loop_);
    return 0;
}

int aev_async_send(aev_async *w)
{
    /* type_ is written once by aev_async_init(), before the watcher is handed to any sender. */
    if (!w || w->base.type_ != AEV__T_ASYNC)
        return -EINVAL;
    /* acq_rel: release publishes this thread's earlier writes to the loop, which clears the word
     * with an acquiring exchange before the callback; acquire orders this after the loop's
     * clearing exchange, so our push below cannot overwrite the link before the loop read it.
     * fetch_or keeps the link of a watcher already on the stack. Only bit 0 is tested (it is
     * set in every nonzero value), so compilers emit one `lock bts`: a redundant send is this
     * one instruction, with no system call and no other shared write. */
    if (atomic_fetch_or_explicit(&w->link_, AEV__SENT, memory_order_acq_rel) & AEV__SENT)
        return 0;
    aev_loop *loop = w->base.loop_;
    aev_async *head = atomic_load_explicit(&loop->sent_list, memory_order_relaxed);
    do {
        /* Relaxed, but an exchange and not a store: a plain store would end the release
         * sequence of a concurrent redundant send (see aev__async_note). The CAS below
         * publishes the link. */
        atomic_exchange_explicit(&w->link_, (uintptr_t)head | AEV__SENT, memory_order_relaxed);
        /* seq_cst: besides publishing the link (release) this store and the load of may_sleep
         * below form one half of a Dekker handshake with aev__async_waiting(): the loop stores
         * may_sleep then loads sent_list, we store sent_list then load may_sleep. */
    } while (!atomic_compare_exchange_weak_explicit(&loop->sent_list, &head, w,
                                                    memory_order_seq_cst, memory_order_relaxed));
    if (head == NULL && atomic_load_explicit(&loop->may_sleep, memory_order_seq_cst))
        aev__wakeup_signal(loop);
    return 0;
}

bool aev_async_sent(const aev_async *w)
{
    /* Relaxed: a snapshot for the caller; it orders nothing. */
    return w && atomic_load_explicit(&w->link_, memory_order_relaxed) != 0;
}

/* Reverses the stack into send order, so that async callbacks of one priority run FIFO. */
static aev_async *aev__reverse(aev_async *list)
{
    aev_async *out = NULL;
    while (list) {
        /* Relaxed: the stack exchange already made the pushers' links visible, and a sender
         * can only set bit 0, which is set already. The rewrite keeps bit 0 (the watcher stays
         * sent) and is an exchange, not a store, for the same reason as the pusher's. The
         * exchange returns the link too: a redundant send changes no bit of it. */
        aev_async *next = aev__link_next(atomic_exchange_explicit(
            &list->link_, (uintptr_t)out | AEV__SENT, memory_order_relaxed));
        out = list;
        list = next;
    }
    return out;
}

void aev__async_collect(aev_loop *loop)
{
    /* Relaxed peek: if a push is missed here, aev__async_waiting() sees it before the loop can
     * sleep (seq_cst), so at worst it is collected one iteration later, without blocking. */
    if (!atomic_load_explicit(&loop->sent_list, memory_order_relaxed))
        return;
    /* Acquire: pairs with the pushers' CAS so that their link stores are visible. */
    aev_async *w =
        aev__reverse(atomic_exchange_explicit(&loop->sent_list, NULL, memory_order_acquire));
    while (w) {
        /* Read the link before clearing it: from then on a sender may push w again. */
        aev_async *next = aev__link_next(atomic_load_explicit(&w->link_, memory_order_relaxed));
        if (w->base.active_)
            aev__async_note(loop, w);
        else
            w->base.flags_ |= AEV__WF_PARKED;
        w = next;
    }
}

/* An init of w for loop, which w's memory names: w may be sent and on the stack without having
 * been started (a watcher stopped since was taken off by aev_async_stop). Clearing its link
 * would cut the stack there and lose the sends of every watcher below it, so the stack is taken
 * first; w's own send is forgotten with its old state. Any bit pattern is safe here: w's link
 * is only tested, and the stack holds real watchers. */
void aev__async_before_init(aev_loop *loop, aev_async *w)
{
    /* Relaxed: only the loop thread takes the stack off a watcher, and a send that lands after
     * this test on a watcher being re-initialised is a misuse the docs exclude. */
    if (atomic_load_explicit(&w->link_, memory_order_relaxed) & AEV__SENT)
        aev__async_collect(loop);
}

void aev__async_free(aev_loop *loop)
{
    aev__free(loop->asyncs.items);
}

int aev__async_waiting(aev_loop *loop)
{
    /* seq_cst: the loop's half of the handshake described in aev_async_send(). */
    return atomic_load_explicit(&loop->sent_list, memory_order_seq_cst) != NULL;
}
