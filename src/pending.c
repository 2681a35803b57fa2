/*
 * Priority-ordered pending queues. Each priority has a FIFO array; a watcher remembers its slot
 * so that stopping it removes the event in O(1) (the slot is blanked, not moved). Invocation
 * always takes the head of the highest non-empty priority, so an event made pending at a higher
 * priority while callbacks run overtakes the lower ones still queued.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

int aev__feed(aev_loop *loop, aev_watcher *w, unsigned events)
{
    aev__pendq *q = &loop->pending[AEV__PRI_INDEX(w->priority_)];
    if (w->pending_) {
        q->items[w->pending_ - 1].events |= events;
        return 0;
    }
    /* The check inline: this is the hot path of every event, and the array is usually big
     * enough already. */
    if (q->count == q->cap) {
        int rc = aev__grow((void **)&q->items, &q->cap, q->count + 1, sizeof *q->items);
        if (rc < 0)
            return rc;
    }
    q->items[q->count] = (aev__pend){w, events};
    w->pending_ = (int32_t)++q->count;
    q->live++;
    loop->pending_count++;
    return 0;
}

/* Takes one live event out of its queue's accounting; an emptied queue rewinds so that it
 * reuses the front of its array (no slot index refers into it any more). */
static void aev__drop_live(aev_loop *loop, aev__pendq *q)
{
    loop->pending_count--;
    if (--q->live == 0)
        q->head = q->count = 0;
}

unsigned aev__unpend(aev_watcher *w)
{
    aev_loop *loop = w->loop_;
    aev__pendq *q = &loop->pending[AEV__PRI_INDEX(w->priority_)];
    aev__pend *p = &q->items[w->pending_ - 1];
    unsigned events = p->events;
    p->w = NULL;
    w->pending_ = 0;
    aev__drop_live(loop, q);
    return events;
}

/* Index of the highest priority queue with live events, or -1. */
static int aev__top_queue(const aev_loop *loop)
{
    for (int i = AEV__NPRI - 1; i >= 0; i--) {
        if (loop->pending[i].live)
            return i;
    }
    return -1;
}

int aev__pending_at_or_above(const aev_loop *loop, int pri)
{
    return aev__top_queue(loop) >= AEV__PRI_INDEX(pri);
}

void aev__invoke_pending(aev_loop *loop)
{
    int i;
    while ((i = aev__top_queue(loop)) >= 0) {
        aev__pendq *q = &loop->pending[i];
        aev__pend p = q->items[q->head++];
        if (!p.w)
            continue; /* blanked by stop or clear; live > 0 guarantees a live slot follows */
        p.w->pending_ = 0;
        aev__drop_live(loop, q);
        p.w->cb_(p.w, p.events);
    }
}

void aev__pending_free(aev_loop *loop)
{
    for (int i = 0; i < AEV__NPRI; i++)
        free(loop->pending[i].items);
}
