/*
 * A 4-ary min-heap of timers ordered by (deadline, start sequence). Four children per node halve
 * the height of a binary heap and keep siblings in one or two cache lines; the sequence number
 * makes equal deadlines fire in start order. Each timer's base.active_ holds its index + 1.
 */
#include "internal.h"

#define AEV__HEAP_D 4

static inline int aev__before(const aev__hnode *a, const aev__hnode *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void aev__place(aev__heap *h, uint32_t i, aev__hnode n)
{
    h->nodes[i] = n;
    n.w->base.active_ = (int32_t)(i + 1);
}

static void aev__sift_up(aev__heap *h, uint32_t i)
{
    aev__hnode n = h->nodes[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / AEV__HEAP_D;
        if (!aev__before(&n, &h->nodes[parent]))
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
        if (aev__before(&nodes[c], &nodes[best]))
            best = c;
    }
    return best;
}

/* Index of the earliest of four children: a fixed tournament (two pairs, then the winners)
 * instead of a scan, so the comparisons do not depend on each other. */
static uint32_t aev__min_of4(const aev__hnode *nodes, uint32_t first)
{
    uint32_t a = aev__before(&nodes[first + 1], &nodes[first]) ? first + 1 : first;
    uint32_t b = aev__before(&nodes[first + 3], &nodes[first + 2]) ? first + 3 : first + 2;
    return aev__before(&nodes[b], &nodes[a]) ? b : a;
}

static void aev__sift_down(aev__heap *h, uint32_t i)
{
    aev__hnode n = h->nodes[i];
    uint32_t count = h->count;
    for (;;) {
        uint64_t first = (uint64_t)i * AEV__HEAP_D + 1;
        uint32_t best;
        if (first + AEV__HEAP_D <= count)
            best = aev__min_of4(h->nodes, (uint32_t)first);
        else if (first < count)
            best = aev__min_child(h->nodes, (uint32_t)first, count);
        else
            break;
        if (!aev__before(&h->nodes[best], &n))
            break;
        aev__place(h, i, h->nodes[best]);
        i = best;
    }
    aev__place(h, i, n);
}

/* Restores order around i after its node changed or was replaced. */
static void aev__fix(aev__heap *h, uint32_t i)
{
    if (i > 0 && aev__before(&h->nodes[i], &h->nodes[(i - 1) / AEV__HEAP_D]))
        aev__sift_up(h, i);
    else
        aev__sift_down(h, i);
}

int aev__heap_push(aev__heap *h, aev_timer *w, aev_time_t at, uint64_t seq)
{
    if (h->count == h->cap) {
        int rc = aev__grow((void **)&h->nodes, &h->cap, h->count + 1, sizeof *h->nodes);
        if (rc < 0)
            return rc;
    }
    uint32_t i = h->count++;
    aev__hnode n = {at, seq, w};
    /* Deadlines usually arrive in increasing order (same timeout, later start): then the new
     * node stays where it is appended, without entering the sift loop. */
    if (i == 0 || !aev__before(&n, &h->nodes[(i - 1) / AEV__HEAP_D]))
        aev__place(h, i, n);
    else {
        h->nodes[i] = n;
        aev__sift_up(h, i);
    }
    return 0;
}

void aev__heap_remove(aev__heap *h, uint32_t index)
{
    h->count--;
    if (index == h->count)
        return;
    h->nodes[index] = h->nodes[h->count];
    aev__fix(h, index);
}

void aev__heap_update(aev__heap *h, uint32_t index, aev_time_t at, uint64_t seq)
{
    h->nodes[index].at = at;
    h->nodes[index].seq = seq;
    aev__fix(h, index);
}
