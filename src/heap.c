/*
 * A 4-ary min-heap of timers ordered by (deadline, start sequence). Four children per node halve
 * the height of a binary heap and keep siblings in one or two cache lines; the sequence number
 * makes equal deadlines fire in start order. Each timer's base.active_ holds its index + 1.
 *
 * A node that moves later (a removal's replacement, a timeout pushed back) goes down by Floyd's
 * method: the hole descends to a leaf along the earliest children, then the node is placed there
 * and climbs back. Most nodes of a heap live in its bottom level, so the climb is short, and the
 * descent needs three comparisons per level (the children among themselves) instead of four.
 */
#include "internal.h"

#define AEV__HEAP_D 4

static inline void aev__place(aev__heap *h, uint32_t i, aev__hnode n)
{
    h->nodes[i] = n;
    n.w->base.active_ = (int32_t)(i + 1);
}

/* Moves n up from the hole at i to its place, and puts it there. */
static void aev__climb(aev__heap *h, uint32_t i, aev__hnode n)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / AEV__HEAP_D;
        if (!aev__hnode_before(&n, &h->nodes[parent]))
            break;
        aev__place(h, i, h->nodes[parent]);
        i = parent;
    }
    aev__place(h, i, n);
}

/* Index of the earliest of the children [first, end). */
static uint32_t aev__min_child(const aev__hnode *nodes, uint32_t first, uint32_t end)
{
    uint32_t best = first;
    for (uint32_t c = first + 1; c < end; c++) {
        if (aev__hnode_before(&nodes[c], &nodes[best]))
            best = c;
    }
    return best;
}

/* Index of the earliest of four children: a fixed tournament (two pairs, then the winners)
 * instead of a scan, so the comparisons do not depend on each other. */
static inline uint32_t aev__min_of4(const aev__hnode *nodes, uint32_t first)
{
    uint32_t a = first + (uint32_t)aev__hnode_before(&nodes[first + 1], &nodes[first]);
    uint32_t b = first + 2 + (uint32_t)aev__hnode_before(&nodes[first + 3], &nodes[first + 2]);
    return aev__hnode_before(&nodes[b], &nodes[a]) ? b : a;
}

/* Moves the hole at i down to a leaf, pulling up the earliest child at each level; returns the
 * leaf's index. */
static uint32_t aev__descend(aev__heap *h, uint32_t i)
{
    uint32_t count = h->count;
    for (;;) {
        uint64_t first = (uint64_t)i * AEV__HEAP_D + 1;
        uint32_t best;
        if (first + AEV__HEAP_D <= count)
            best = aev__min_of4(h->nodes, (uint32_t)first);
        else if (first < count)
            best = aev__min_child(h->nodes, (uint32_t)first, count);
        else
            return i;
        aev__place(h, i, h->nodes[best]);
        i = best;
    }
}

/* Puts n, which is not earlier than the node it replaces at i, in its place below i. */
static void aev__sink(aev__heap *h, uint32_t i, aev__hnode n)
{
    aev__climb(h, aev__descend(h, i), n);
}

int aev__heap_reserve(aev__heap *h, uint32_t n)
{
    return aev__grow((void **)&h->nodes, &h->cap, n, sizeof *h->nodes);
}

void aev__heap_push(aev__heap *h, aev_timer *w, aev_time_t at, uint64_t seq)
{
    /* Deadlines often arrive in increasing order (same timeout, later start): then the new
     * node stays where it is appended, after one comparison. */
    aev__climb(h, h->count++, (aev__hnode){at, seq, w});
}

void aev__heap_remove(aev__heap *h, uint32_t index)
{
    aev__hnode last = h->nodes[--h->count];
    if (index == h->count)
        return;
    /* The last node replaces the removed one. It belongs below it in the common case (it is a
     * leaf); the climb also covers the other case, where it belongs above. */
    if (index > 0 && aev__hnode_before(&last, &h->nodes[(index - 1) / AEV__HEAP_D]))
        aev__climb(h, index, last);
    else
        aev__sink(h, index, last);
}

void aev__heap_update(aev__heap *h, uint32_t index, aev_time_t at, uint64_t seq)
{
    aev__hnode n = {at, seq, h->nodes[index].w};
    if (aev__hnode_before(&h->nodes[index], &n))
        aev__sink(h, index, n);
    else
        aev__climb(h, index, n);
}
