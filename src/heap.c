/*
 * A 4-ary min-heap of timers ordered by (deadline, start sequence). Four children per node halve
 * the height of a binary heap and keep siblings in one or two cache lines; the sequence number
 * makes equal deadlines fire in start order. Each timer's base.active_ holds its index + 1.
 */
#include "internal.h"

#define AEV__HEAP_D 4

static int aev__before(const aev__hnode *a, const aev__hnode *b)
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

static void aev__sift_down(aev__heap *h, uint32_t i)
{
    aev__hnode n = h->nodes[i];
    for (;;) {
        uint64_t first = (uint64_t)i * AEV__HEAP_D + 1;
        if (first >= h->count)
            break;
        uint32_t best = (uint32_t)first;
        uint32_t end = first + AEV__HEAP_D < h->count ? (uint32_t)first + AEV__HEAP_D : h->count;
        for (uint32_t c = best + 1; c < end; c++) {
            if (aev__before(&h->nodes[c], &h->nodes[best]))
                best = c;
        }
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
    int rc = aev__grow((void **)&h->nodes, &h->cap, h->count + 1, sizeof *h->nodes);
    if (rc < 0)
        return rc;
    h->nodes[h->count] = (aev__hnode){at, seq, w};
    aev__sift_up(h, h->count++);
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
