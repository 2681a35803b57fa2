/*
 * One interface over the async wakeup of every library measured: a loop with one watcher that
 * other threads send to. The benchmarks are written once against it, so each library runs
 * exactly the same benchmark code; the adaptors in loops.c are the only library-specific part.
 *
 * The few nanoseconds of the indirect calls are the same for every library and are small next
 * to the cost being measured (a wakeup through the kernel, or an atomic on a shared line).
 */
#ifndef LOOPS_H
#define LOOPS_H

#include <stddef.h>

#include <asyncev.h>
#ifdef HAVE_LIBEV
#include <ev.h>
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif
#ifdef HAVE_LIBEVENT
#include <event2/event.h>
#endif

typedef struct bl_loop bl_loop;
/* Called on the loop's thread each time the watcher's callback runs. */
typedef void (*bl_cb)(bl_loop *l);

typedef struct bl_ops {
    const char *name;
    const char *note; /* how this library's "async" was done, if not by an async watcher */
    /* Once per process, before any loop exists (libevent's threading hooks). 0 or -1. */
    int (*process_init)(char *err, size_t size);
    /* On the loop's own thread: creates the loop and starts the watcher. 0 or -1. */
    int (*setup)(bl_loop *l, char *err, size_t size);
    /* Runs the loop until stop(); 0, or -1 if it returned for another reason. */
    int (*run)(bl_loop *l, char *err, size_t size);
    /* From any thread: wakes the loop so that the callback runs (sends may coalesce). */
    void (*send)(bl_loop *l);
    /* From the callback: makes run() return. */
    void (*stop)(bl_loop *l);
    /* On the loop's thread, after run() returned or setup() succeeded: frees everything. */
    void (*teardown)(bl_loop *l);
} bl_ops;

struct bl_loop {
    const bl_ops *ops;
    bl_cb cb;
    void *arg; /* for the benchmark */
    union {
        struct {
            aev_loop *loop;
            aev_async w;
        } aev;
#ifdef HAVE_LIBEV
        struct {
            struct ev_loop *loop;
            ev_async w;
        } ev;
#endif
#ifdef HAVE_LIBUV
        struct {
            uv_loop_t loop;
            uv_async_t w;
        } uv;
#endif
#ifdef HAVE_LIBEVENT
        struct {
            struct event_base *base;
            struct event *ev;
        } evt;
#endif
    } u;
};

/* The adaptors built into this program, asyncev first; NULL-terminated. */
extern const bl_ops *const bl_all[];

#endif /* LOOPS_H */
