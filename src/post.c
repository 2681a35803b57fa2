/*
 * Posters: a bounded multi-producer, single-consumer ring of (function, argument) pairs, drained
 * on the loop thread by an async watcher. Each cell carries a sequence number that says whose
 * turn it is (after Dmitry Vyukov's bounded queue): the cell for position t is free to fill when
 * its sequence is 2t and filled when it is 2t + 1; the consumer frees it for the next lap by
 * storing 2(t + size). Doubling keeps "filled for t" and "free for t + 1" apart even in a ring
 * of one cell. Producers claim positions with a CAS, so posting is lock-free and
 * async-signal-safe.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

#define AEV__POST_MAX (UINT32_C(1) << 24)

typedef struct aev__cell {
    atomic_size_t seq;
    aev_post_fn fn;
    void *arg;
} aev__cell;

struct aev_poster {
    aev_async async; /* first: the callback gets &async.base */
    aev__cell *cells;
    size_t mask;
    size_t head; /* next position to run; loop thread only */
    int running; /* posted functions on the stack (nested aev_run can drain again) */
    /* Producers' claim position, on its own cache line so that posting threads do not keep
     * stealing the line the loop thread reads. */
    _Alignas(64) atomic_size_t tail;
    void *block; /* what the allocator returned; the poster is aligned inside it */
};

/* Runs at most one ring's worth of posts, so that a function that keeps posting cannot starve
 * the rest of the loop; if more may be ready, the watcher is sent again, which defers them to
 * the next iteration (a send from the loop thread makes no system call). */
static void aev__poster_drain(aev_watcher *w, unsigned events)
{
    aev_poster *p = (aev_poster *)w;
    (void)events;
    for (size_t n = 0; n <= p->mask; n++) {
        aev__cell *c = &p->cells[p->head & p->mask];
        /* Acquire: pairs with the producer's release store, making fn and arg visible. */
        if (atomic_load_explicit(&c->seq, memory_order_acquire) != 2 * p->head + 1)
            return; /* empty, or the next producer has claimed but not yet filled its cell */
        aev_post_fn fn = c->fn;
        void *arg = c->arg;
        /* Release: our reads of fn and arg happen before a producer reuses the cell. */
        atomic_store_explicit(&c->seq, 2 * (p->head + p->mask + 1), memory_order_release);
        p->head++;
        p->running++;
        fn(arg);
        p->running--;
    }
    aev_async_send(&p->async);
}

int aev_poster_new(aev_poster **out, aev_loop *loop, uint32_t capacity)
{
    if (!out || !loop || capacity == 0 || capacity > AEV__POST_MAX)
        return -EINVAL;
    size_t size = 1;
    while (size < capacity)
        size *= 2;
    /* The program's allocator promises no more than malloc's alignment: over-allocate and
     * align by hand. */
    void *block = aev__realloc(NULL, sizeof(aev_poster) + 63);
    if (!block)
        return -ENOMEM;
    aev_poster *p = (aev_poster *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
    p->block = block;
    p->cells = aev__calloc(size, sizeof *p->cells);
    if (!p->cells) {
        aev__free(block);
        return -ENOMEM;
    }
    for (size_t i = 0; i < size; i++)
        atomic_init(&p->cells[i].seq, 2 * i);
    p->mask = size - 1;
    p->head = 0;
    p->running = 0;
    atomic_init(&p->tail, 0);
    aev_async_init(&p->async, loop, aev__poster_drain);
    int rc = aev_async_start(&p->async);
    if (rc < 0) {
        aev__free(p->cells);
        aev__free(block);
        return rc;
    }
    *out = p;
    return 0;
}

/* Claims the next free position, or returns -EAGAIN if the ring is full. */
static int aev__poster_claim(aev_poster *p, size_t *pos)
{
    /* Relaxed: the cell's sequence, read with acquire below, is what orders the claim. */
    size_t t = atomic_load_explicit(&p->tail, memory_order_relaxed);
    for (;;) {
        aev__cell *c = &p->cells[t & p->mask];
        /* Acquire: pairs with the consumer's release, so the cell is really free to fill. */
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)(seq - 2 * t);
        if (diff == 0) {
            /* Relaxed: the CAS only arbitrates between producers; publication is by seq. */
            if (atomic_compare_exchange_weak_explicit(&p->tail, &t, t + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *pos = t;
                return 0;
            }
        } else if (diff < 0) {
            return -EAGAIN; /* the consumer has not freed this cell yet: full */
        } else {
            t = atomic_load_explicit(&p->tail, memory_order_relaxed);
        }
    }
}

int aev_post(aev_poster *p, aev_post_fn fn, void *arg)
{
    if (!p || !fn)
        return -EINVAL;
    size_t pos;
    int rc = aev__poster_claim(p, &pos);
    if (rc < 0)
        return rc;
    aev__cell *c = &p->cells[pos & p->mask];
    c->fn = fn;
    c->arg = arg;
    /* Release: publishes fn and arg to the consumer's acquire load of seq. */
    atomic_store_explicit(&c->seq, 2 * pos + 1, memory_order_release);
    return aev_async_send(&p->async);
}

int aev_poster_destroy(aev_poster *p)
{
    if (!p)
        return -EINVAL;
    if (p->running)
        return -EBUSY;
    aev_async_stop(&p->async);
    /* Count what was posted and never run (claimed cells, filled or not). */
    size_t left = atomic_load_explicit(&p->tail, memory_order_acquire) - p->head;
    aev__free(p->cells);
    aev__free(p->block);
    return left > INT32_MAX ? INT32_MAX : (int)left;
}
