/*
 * The checks of debug builds (CMake option AEV_DEBUG): misuse that a release build cannot detect
 * cheaply, or safely, is reported on stderr and the call fails instead of crashing.
 *
 * The core is a registry of live loops, so that a loop pointer can be checked without reading
 * the memory it points to: a never-initialised watcher holds garbage there, a watcher of a
 * destroyed loop a dangling pointer, and a loop destroyed twice is a dangling pointer too.
 * Destroyed loops are remembered (a bounded ring) to say so in the diagnostic.
 *
 * The registry is the library's bookkeeping, not the program's memory: it is kept with the C
 * library's malloc, outside aev_set_allocator(), so that debug builds make the same allocations
 * through the program's allocator as release builds. If it cannot grow, a loop stays
 * unregistered and from then on every pointer counts as live: the checks never report a loop
 * that may be live.
 */
#include "internal.h"

#ifdef AEV_DEBUG

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__)
#include <dlfcn.h>
#include <link.h>
#define AEV__HAVE_DLADDR1 1
#endif

/* Open addressing with linear probing; NULL marks a free slot. Capacity a power of two, at most
 * half full. */
static pthread_mutex_t aev__dbg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t aev__dbg_once = PTHREAD_ONCE_INIT;
static const aev_loop **aev__live;
static size_t aev__live_cap, aev__live_count;
static int aev__live_incomplete;

/* Recently destroyed loops, for a better diagnostic; an address is forgotten when a new loop
 * gets it. */
#define AEV__DEAD_RING 256
static const aev_loop *aev__dead[AEV__DEAD_RING];
static unsigned aev__dead_next;

/* A fork while another thread holds the lock would leave it locked in the child. */
static void aev__dbg_prepare(void)
{
    pthread_mutex_lock(&aev__dbg_lock);
}

static void aev__dbg_parent(void)
{
    pthread_mutex_unlock(&aev__dbg_lock);
}

static void aev__dbg_register_atfork(void)
{
    (void)pthread_atfork(aev__dbg_prepare, aev__dbg_parent, aev__dbg_parent);
}

static size_t aev__slot_of(const aev_loop *loop, size_t cap)
{
    uintptr_t h = (uintptr_t)loop;
    h ^= h >> 17;
    h *= (uintptr_t)0x9e3779b97f4a7c15u;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

/* The slot holding loop, or the free slot where it would go. Lock held, capacity > 0. */
static size_t aev__find(const aev_loop *loop)
{
    size_t i = aev__slot_of(loop, aev__live_cap);
    while (aev__live[i] && aev__live[i] != loop)
        i = (i + 1) & (aev__live_cap - 1);
    return i;
}

static int aev__grow_registry(void)
{
    size_t ncap = aev__live_cap ? aev__live_cap * 2 : 64;
    const aev_loop **n = calloc(ncap, sizeof *n);
    if (!n)
        return -1;
    for (size_t i = 0; i < aev__live_cap; i++) {
        const aev_loop *l = aev__live[i];
        if (!l)
            continue;
        size_t j = aev__slot_of(l, ncap);
        while (n[j])
            j = (j + 1) & (ncap - 1);
        n[j] = l;
    }
    free(aev__live);
    aev__live = n;
    aev__live_cap = ncap;
    return 0;
}

/* Removes slot i, moving later members of its probe run back so that lookups still find them. */
static void aev__remove_slot(size_t i)
{
    size_t mask = aev__live_cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        const aev_loop *l = aev__live[j];
        if (!l)
            break;
        size_t home = aev__slot_of(l, aev__live_cap);
        /* l may move to i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            aev__live[i] = l;
            i = j;
        }
    }
    aev__live[i] = NULL;
}

static void aev__forget_dead(const aev_loop *loop)
{
    for (unsigned i = 0; i < AEV__DEAD_RING; i++) {
        if (aev__dead[i] == loop)
            aev__dead[i] = NULL;
    }
}

void aev__debug_loop_created(const aev_loop *loop)
{
    pthread_once(&aev__dbg_once, aev__dbg_register_atfork);
    pthread_mutex_lock(&aev__dbg_lock);
    aev__forget_dead(loop);
    if (2 * (aev__live_count + 1) > aev__live_cap && aev__grow_registry() < 0) {
        aev__live_incomplete = 1;
    } else {
        aev__live[aev__find(loop)] = loop;
        aev__live_count++;
    }
    pthread_mutex_unlock(&aev__dbg_lock);
}

void aev__debug_loop_destroyed(const aev_loop *loop)
{
    pthread_mutex_lock(&aev__dbg_lock);
    if (aev__live_cap) {
        size_t i = aev__find(loop);
        if (aev__live[i]) {
            aev__remove_slot(i);
            aev__live_count--;
        }
    }
    aev__dead[aev__dead_next++ % AEV__DEAD_RING] = loop;
    pthread_mutex_unlock(&aev__dbg_lock);
}

int aev__debug_loop_live(const aev_loop *loop)
{
    if (!loop)
        return 0;
    pthread_mutex_lock(&aev__dbg_lock);
    int live = aev__live_cap && aev__live[aev__find(loop)] == loop ? 2 : aev__live_incomplete;
    pthread_mutex_unlock(&aev__dbg_lock);
    return live;
}

int aev__debug_loop_was_destroyed(const aev_loop *loop)
{
    int dead = 0;
    pthread_mutex_lock(&aev__dbg_lock);
    for (unsigned i = 0; i < AEV__DEAD_RING && !dead; i++)
        dead = aev__dead[i] == loop;
    pthread_mutex_unlock(&aev__dbg_lock);
    return dead;
}

void aev__debug_report(const char *fn, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", fn, msg);
}

/* Only an exact hit counts: the address must lie inside a public function's own code (the
 * symbol's size says where it ends), else a static helper would be named after its neighbour. */
const char *aev__debug_caller_name(const void *addr, char *buf, size_t n)
{
#ifdef AEV__HAVE_DLADDR1
    Dl_info info;
    void *extra = NULL;
    if (addr && dladdr1(addr, &info, &extra, RTLD_DL_SYMENT) && info.dli_sname && extra &&
        strncmp(info.dli_sname, "aev_", 4) == 0) {
        const ElfW(Sym) *sym = extra;
        uintptr_t start = (uintptr_t)info.dli_saddr;
        uintptr_t a = (uintptr_t)addr;
        if (a >= start && a < start + sym->st_size) {
            snprintf(buf, n, "%s", info.dli_sname);
            return buf;
        }
    }
#else
    (void)addr;
#endif
    snprintf(buf, n, "aev (unknown function)");
    return buf;
}

#else

/* ISO C wants at least one declaration in a translation unit. */
typedef int aev__debug_unused;

#endif /* AEV_DEBUG */
