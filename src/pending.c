/*
 * Priority-ordered pending queues. Each priority has a FIFO array; a watcher remembers its slot
 * so that stopping it removes the event in O(1) (the slot is blanked, not moved). Invocation
 * always takes the head of the highest non-empty priority, so an event made pending at a higher
 * priority while callbacks run overtakes the lower ones still queued.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static aev__pendq *aev__queue_of(aev_watcher *w)
{
    return &w->loop_->pending[AEV__PRI_INDEX(w->priority_)];
}

/* Makes sure the queue of w's priority can hold one more active-or-pending watcher. Called
 * before a watcher becomes active (or, inactive, pending): the only place where queueing an
 * event can fail for lack of memory. */
int aev__pending_reserve(aev_watcher *w)
{
    aev__pendq *q = aev__queue_of(w);
    if (q->held < q->cap)
        return 0;
    return aev__grow((void **)&q->items, &q->cap, q->held + 1, sizeof *q->items);
}

/* Moves the live events of a full queue to its front, in order, dropping the blanked slots.
 * Because cap >= held > live whenever a watcher is about to be queued, this always frees a
 * slot; it runs only when growing the array failed. */
static void aev__compact(aev__pendq *q)
{
    uint32_t n = 0;
    for (uint32_t i = q->head; i < q->count; i++) {
        aev__pend p = q->items[i];
        if (!p.w)
            continue;
        q->items[n++] = p;
        p.w->pending_ = (int32_t)n;
    }
    q->head = 0;
    q->count = n;
}

/* Appends w's event to q, the queue of its priority i, which has room. */
static inline void aev__append(aev_loop *loop, aev__pendq *q, unsigned i, aev_watcher *w,
                               unsigned events)
{
    q->items[q->count] = (aev__pend){w, events};
    w->pending_ = (int32_t)++q->count;
    if (q->live++ == 0)
        loop->pending_mask |= 1u << i;
    loop->pending_count++;
}

/* The rare way of queueing: an inactive watcher (fed by the program, or just stopped by the
 * loop to report an error) needs its own reservation, since only active ones are counted in
 * `held`; and a full array must grow. Out of line and reached by a tail call, so that the
 * common case in aev__feed saves no registers for it. */
static __attribute__((noinline)) int aev__feed_slow(aev_loop *loop, aev_watcher *w, unsigned events)
{
    unsigned i = (unsigned)AEV__PRI_INDEX(w->priority_);
    aev__pendq *q = &loop->pending[i];
    if (!w->active_) {
        int rc = aev__pending_reserve(w);
        if (rc < 0)
            return rc;
        q->held++;
    }
    if (q->count == q->cap &&
        aev__grow((void **)&q->items, &q->cap, q->count + 1, sizeof *q->items) < 0)
        aev__compact(q);
    aev__append(loop, q, i, w, events);
    return 0;
}

/* Queues events for w, a watcher of loop; merges them into its slot if it is pending already.
 * The common case, an active watcher whose queue has room, makes no call: every event of every
 * iteration comes through here. */
int aev__feed(aev_loop *loop, aev_watcher *w, unsigned events)
{
    unsigned i = (unsigned)AEV__PRI_INDEX(w->priority_);
    aev__pendq *q = &loop->pending[i];
    if (w->pending_) {
        q->items[w->pending_ - 1].events |= events;
        return 0;
    }
    if (!w->active_ || q->count == q->cap)
        return aev__feed_slow(loop, w, events);
    aev__append(loop, q, i, w, events);
    return 0;
}

/* Takes one live event out of queue i's accounting; an emptied queue rewinds so that it reuses
 * the front of its array (no slot index refers into it any more). */
static void aev__drop_live(aev_loop *loop, aev__pendq *q, unsigned i)
{
    loop->pending_count--;
    if (--q->live == 0) {
        q->head = q->count = 0;
        loop->pending_mask &= ~(1u << i);
    }
}

unsigned aev__unpend(aev_watcher *w)
{
    aev_loop *loop = w->loop_;
    unsigned i = (unsigned)AEV__PRI_INDEX(w->priority_);
    aev__pendq *q = &loop->pending[i];
    aev__pend *p = &q->items[w->pending_ - 1];
    unsigned events = p->events;
    p->w = NULL;
    w->pending_ = 0;
    if (!w->active_)
        q->held--;
    aev__drop_live(loop, q, i);
    return events;
}

void aev__invoke_pending(aev_loop *loop)
{
    /* Counted so that aev_loop_destroy() refuses to free the loop under a callback even when
     * the program invokes outside aev_run() (aev_invoke_pending). */
    loop->invoking++;
    /* The highest priority with live events is looked up again before every callback: one bit
     * scan, and a callback may have queued something above. */
    while (loop->pending_mask) {
        unsigned i = aev__top_bit(loop->pending_mask);
        aev__pendq *q = &loop->pending[i];
        aev__pend p = q->items[q->head++];
        if (!p.w)
            continue; /* blanked by stop or clear; live > 0 guarantees a live slot follows */
        p.w->pending_ = 0;
        if (!p.w->active_)
            q->held--;
        aev__drop_live(loop, q, i);
        p.w->cb_(p.w, p.events);
    }
    loop->invoking--;
}

void aev__pending_free(aev_loop *loop)
{
    for (int i = 0; i < AEV__NPRI; i++)
        aev__free(loop->pending[i].items);
}
