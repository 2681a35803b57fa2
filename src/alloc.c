/*
 * Every byte the library allocates goes through one realloc-shaped function, which the program
 * may replace (aev_set_allocator): to account for memory, to use its own allocator, or to make
 * allocations fail on purpose in tests.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void *aev__default_realloc(void *ptr, size_t size)
{
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

static _Atomic(aev_realloc_fn) aev__allocator = aev__default_realloc;

void aev_set_allocator(aev_realloc_fn fn)
{
    /* Relaxed: the contract is that the allocator is set before the library allocates, so
     * there is nothing to order; the atomic only keeps a concurrent read well defined. */
    atomic_store_explicit(&aev__allocator, fn ? fn : aev__default_realloc, memory_order_relaxed);
}

void *aev__realloc(void *ptr, size_t size)
{
    if (size == 0)
        size = 1; /* 0 means free to the allocator; callers asking for 0 bytes want a block */
    /* Relaxed: see aev_set_allocator. */
    return atomic_load_explicit(&aev__allocator, memory_order_relaxed)(ptr, size);
}

void *aev__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = aev__realloc(NULL, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void aev__free(void *ptr)
{
    if (ptr)
        atomic_load_explicit(&aev__allocator, memory_order_relaxed)(ptr, 0);
}
