/*
 * Small containers shared by the loop's files. Arrays only ever grow: once a loop has reached
 * its working size, starting and stopping watchers allocates nothing.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/* Makes room for at least `need` elements of `elem` bytes, doubling. 0 or -ENOMEM. */
int aev__grow(void **items, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > UINT32_MAX / 2)
            return -ENOMEM;
        ncap *= 2;
    }
    void *p = aev__realloc(*items, (size_t)ncap * elem);
    if (!p)
        return -ENOMEM;
    *items = p;
    *cap = ncap;
    return 0;
}

/* Appends w and records its 1-based index in w->active_. */
int aev__wvec_push(aev__wvec *v, aev_watcher *w)
{
    int rc = aev__grow((void **)&v->items, &v->cap, v->count + 1, sizeof *v->items);
    if (rc < 0)
        return rc;
    v->items[v->count++] = w;
    aev__activate(w, (int32_t)v->count);
    return 0;
}

/* Removes w in O(1) by moving the last element into its slot. */
void aev__wvec_remove(aev__wvec *v, aev_watcher *w)
{
    uint32_t i = (uint32_t)w->active_ - 1;
    aev_watcher *last = v->items[--v->count];
    v->items[i] = last;
    last->active_ = (int32_t)(i + 1);
    aev__deactivate(w);
}

/* Removes w keeping the order of the others (cleanup watchers run in reverse start order):
 * O(n), for the vectors that are small and ordered. */
void aev__wvec_remove_ordered(aev__wvec *v, aev_watcher *w)
{
    for (uint32_t i = (uint32_t)w->active_; i < v->count; i++) {
        v->items[i - 1] = v->items[i];
        v->items[i - 1]->active_ = (int32_t)i;
    }
    v->count--;
    aev__deactivate(w);
}
