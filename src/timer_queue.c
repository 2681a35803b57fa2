/*
 * The active timers of a loop: a 4-ary heap (heap.c) and AEV__NRUNS sorted runs.
 *
 * Programs mostly arm timers with a few fixed timeouts (an idle timeout re-armed on every read,
 * a million timers started in deadline order), so most new deadlines are not earlier than the
 * last deadline of some run: appending there is O(1), and so is taking the earliest timer from
 * a run's head, where a heap pays a sift through log4(n) levels of a large array for each.
 * A deadline that fits no run goes to the heap. Among runs that fit, the one with the latest
 * tail takes it, so that a stream of long timeouts and a stream of short ones keep apart.
 *
 * Where a timer is, is in its base.active_: index + 1 in the heap (positive), or
 * -(slot * AEV__NRUNS + run) - 1 in a run (negative). Ties are broken by the start sequence
 * everywhere, so equal deadlines fire in start order whichever structure holds them.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>

static int32_t aev__run_code(uint32_t run, uint32_t slot)
{
    return -(int32_t)(slot * AEV__NRUNS + run) - 1;
}

static uint32_t aev__code_run(int32_t active)
{
    return (uint32_t)(-(active + 1)) % AEV__NRUNS;
}

static uint32_t aev__code_slot(int32_t active)
{
    return (uint32_t)(-(active + 1)) / AEV__NRUNS;
}

/* Slots whose code fits in active_ (an int32_t below zero). */
#define AEV__RUN_MAX_SLOTS ((uint32_t)(INT32_MAX / AEV__NRUNS))

/* ---- runs ------------------------------------------------------------------------------ */

static void aev__run_put(aev__run *r, uint32_t run, uint32_t slot, aev__hnode n)
{
    r->nodes[slot] = n;
    n.w->base.active_ = aev__run_code(run, slot);
}

/* Drops the holes and the consumed head, keeping the order. O(live); done only when the holes
 * are at least half the array, so that appends stay O(1) amortised. */
static void aev__run_compact(aev__run *r, uint32_t run)
{
    uint32_t n = 0;
    for (uint32_t i = r->head; i < r->count; i++) {
        if (r->nodes[i].w)
            aev__run_put(r, run, n++, r->nodes[i]);
    }
    r->head = 0;
    r->count = n;
}

/* Makes room for one more node at the tail; 0 if there is none (memory): the heap takes it. */
static int aev__run_room(aev__run *r, uint32_t run)
{
    if (r->count < r->cap && r->count < AEV__RUN_MAX_SLOTS)
        return 1;
    /* Grow while the holes are few; compact when they are many (the O(live) pass then frees
     * at least half the array, so appends stay O(1) amortised) or when growing fails. */
    uint32_t holes = r->count - r->live;
    if ((holes == 0 || holes < r->cap / 2) && r->count < AEV__RUN_MAX_SLOTS &&
        aev__grow((void **)&r->nodes, &r->cap, r->count + 1, sizeof *r->nodes) == 0)
        return 1;
    if (holes == 0)
        return 0;
    aev__run_compact(r, run);
    return 1;
}

/* Skips the holes at the head; an empty run starts again at slot 0, and takes any deadline. */
static void aev__run_trim(aev__timers *t, uint32_t run)
{
    aev__run *r = &t->runs[run];
    while (r->head < r->count && !r->nodes[r->head].w)
        r->head++;
    if (r->live == 0) {
        r->head = r->count = 0;
        t->tails[run] = INT64_MIN;
    }
}

/* The run that should take a node with deadline at: among the runs whose last node is not later,
 * the one whose last node is latest (an empty run's tail, INT64_MIN, fits anything, last); or
 * -1. */
static int aev__run_pick(const aev__timers *t, aev_time_t at)
{
    int best = -1;
    for (int i = 0; i < AEV__NRUNS; i++) {
        if (t->tails[i] <= at && (best < 0 || t->tails[i] > t->tails[best]))
            best = i;
    }
    return best;
}

/* ---- the set --------------------------------------------------------------------------- */

int aev__tq_reserve(aev__timers *t)
{
    if (t->count < t->heap.cap)
        return 0;
    if (t->count >= (uint32_t)INT32_MAX)
        return -ENOMEM;
    return aev__heap_reserve(&t->heap, t->count + 1);
}

void aev__tq_insert(aev__timers *t, aev_timer *w, aev_time_t at, uint64_t seq)
{
    aev__hnode n = {at, seq, w};
    t->count++;
    int i = aev__run_pick(t, at);
    if (i >= 0 && aev__run_room(&t->runs[i], (uint32_t)i)) {
        aev__run *r = &t->runs[i];
        r->live++;
        aev__run_put(r, (uint32_t)i, r->count++, n);
        t->tails[i] = at;
        return;
    }
    /* Room reserved by aev__tq_reserve() when the timer started. */
    aev__heap_push(&t->heap, w, at, seq);
}

void aev__tq_remove(aev__timers *t, aev_timer *w)
{
    int32_t active = w->base.active_;
    t->count--;
    if (active > 0) {
        aev__heap_remove(&t->heap, (uint32_t)active - 1);
        return;
    }
    uint32_t run = aev__code_run(active);
    t->runs[run].nodes[aev__code_slot(active)].w = NULL;
    t->runs[run].live--;
    aev__run_trim(t, run);
}

void aev__tq_move(aev__timers *t, aev_timer *w, aev_time_t at, uint64_t seq)
{
    int32_t active = w->base.active_;
    /* A heap node that no run would take is moved in place: one sift instead of two. */
    if (active > 0 && aev__run_pick(t, at) < 0) {
        aev__heap_update(&t->heap, (uint32_t)active - 1, at, seq);
        return;
    }
    aev__tq_remove(t, w);
    aev__tq_insert(t, w, at, seq);
}

const aev__hnode *aev__tq_first(const aev__timers *t)
{
    const aev__hnode *first = t->heap.count ? &t->heap.nodes[0] : NULL;
    for (int i = 0; i < AEV__NRUNS; i++) {
        const aev__run *r = &t->runs[i];
        if (r->live && (!first || aev__hnode_before(&r->nodes[r->head], first)))
            first = &r->nodes[r->head];
    }
    return first;
}

const aev__hnode *aev__tq_node(const aev__timers *t, const aev_timer *w)
{
    int32_t active = w->base.active_;
    if (active > 0)
        return &t->heap.nodes[active - 1];
    return &t->runs[aev__code_run(active)].nodes[aev__code_slot(active)];
}

int aev__tq_holds(const aev__timers *t, const aev_timer *w)
{
    int32_t active = w->base.active_;
    if (active > 0)
        return (uint32_t)active - 1 < t->heap.count && t->heap.nodes[active - 1].w == w;
    if (active == 0)
        return 0;
    const aev__run *r = &t->runs[aev__code_run(active)];
    uint32_t slot = aev__code_slot(active);
    return slot >= r->head && slot < r->count && r->nodes[slot].w == w;
}

/* A uniform shift keeps the heap and every run in order: nothing moves. */
void aev__tq_shift(aev__timers *t, aev_time_t delta)
{
    for (uint32_t i = 0; i < t->heap.count; i++)
        t->heap.nodes[i].at = aev__time_add(t->heap.nodes[i].at, delta);
    for (int i = 0; i < AEV__NRUNS; i++) {
        aev__run *r = &t->runs[i];
        for (uint32_t j = r->head; j < r->count; j++)
            r->nodes[j].at = aev__time_add(r->nodes[j].at, delta);
        if (r->count)
            t->tails[i] = r->nodes[r->count - 1].at;
    }
}

void aev__tq_free(aev__timers *t)
{
    aev__free(t->heap.nodes);
    for (int i = 0; i < AEV__NRUNS; i++)
        aev__free(t->runs[i].nodes);
}
