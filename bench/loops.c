/*
 * The library adaptors behind loops.h. Each uses its library the way its documentation
 * suggests for waking a loop from another thread.
 */
#include "loops.h"

#include <stdio.h>
#include <string.h>

#ifdef HAVE_LIBEVENT
#include <dlfcn.h>
#include <event2/thread.h>
#endif

static int no_process_init(char *err, size_t size)
{
    (void)err;
    (void)size;
    return 0;
}

/* ---- libasyncev --------------------------------------------------------------------------- */

static void aev_adapt_cb(aev_watcher *w, unsigned events)
{
    (void)events;
    bl_loop *l = w->data;
    l->cb(l);
}

static int aev_adapt_setup(bl_loop *l, char *err, size_t size)
{
    int rc = aev_loop_new(&l->u.aev.loop, 0);
    if (rc < 0) {
        snprintf(err, size, "aev_loop_new: %s", aev_strerror(rc));
        return -1;
    }
    rc = aev_async_init(&l->u.aev.w, l->u.aev.loop, aev_adapt_cb);
    if (rc == 0) {
        l->u.aev.w.base.data = l;
        rc = aev_async_start(&l->u.aev.w);
    }
    if (rc < 0) {
        snprintf(err, size, "aev_async_init/start: %s", aev_strerror(rc));
        aev_loop_destroy(l->u.aev.loop);
        return -1;
    }
    return 0;
}

static int aev_adapt_run(bl_loop *l, char *err, size_t size)
{
    int rc = aev_run(l->u.aev.loop, AEV_RUN_DEFAULT);
    if (rc < 0) {
        snprintf(err, size, "aev_run: %s", aev_strerror(rc));
        return -1;
    }
    return 0;
}

static void aev_adapt_send(bl_loop *l)
{
    aev_async_send(&l->u.aev.w);
}

static void aev_adapt_stop(bl_loop *l)
{
    aev_break(l->u.aev.loop, AEV_BREAK_ALL);
}

static void aev_adapt_teardown(bl_loop *l)
{
    aev_async_stop(&l->u.aev.w);
    aev_loop_destroy(l->u.aev.loop);
}

static const bl_ops aev_ops = {
    .name = "asyncev",
    .note = NULL,
    .process_init = no_process_init,
    .setup = aev_adapt_setup,
    .run = aev_adapt_run,
    .send = aev_adapt_send,
    .stop = aev_adapt_stop,
    .teardown = aev_adapt_teardown,
};

/* ---- libev -------------------------------------------------------------------------------- */

#ifdef HAVE_LIBEV
static void ev_adapt_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    bl_loop *l = w->data;
    l->cb(l);
}

static int ev_adapt_setup(bl_loop *l, char *err, size_t size)
{
    l->u.ev.loop = ev_loop_new(EVFLAG_AUTO);
    if (!l->u.ev.loop) {
        snprintf(err, size, "ev_loop_new failed");
        return -1;
    }
    ev_async_init(&l->u.ev.w, ev_adapt_cb);
    l->u.ev.w.data = l;
    ev_async_start(l->u.ev.loop, &l->u.ev.w);
    return 0;
}

static int ev_adapt_run(bl_loop *l, char *err, size_t size)
{
    (void)err;
    (void)size;
    ev_run(l->u.ev.loop, 0);
    return 0;
}

static void ev_adapt_send(bl_loop *l)
{
    ev_async_send(l->u.ev.loop, &l->u.ev.w);
}

static void ev_adapt_stop(bl_loop *l)
{
    ev_break(l->u.ev.loop, EVBREAK_ALL);
}

static void ev_adapt_teardown(bl_loop *l)
{
    ev_async_stop(l->u.ev.loop, &l->u.ev.w);
    ev_loop_destroy(l->u.ev.loop);
}

static const bl_ops ev_ops = {
    .name = "libev",
    .note = NULL,
    .process_init = no_process_init,
    .setup = ev_adapt_setup,
    .run = ev_adapt_run,
    .send = ev_adapt_send,
    .stop = ev_adapt_stop,
    .teardown = ev_adapt_teardown,
};
#endif

/* ---- libuv -------------------------------------------------------------------------------- */

#ifdef HAVE_LIBUV
static void uv_adapt_cb(uv_async_t *w)
{
    bl_loop *l = w->data;
    l->cb(l);
}

static int uv_adapt_setup(bl_loop *l, char *err, size_t size)
{
    int rc = uv_loop_init(&l->u.uv.loop);
    if (rc < 0) {
        snprintf(err, size, "uv_loop_init: %s", uv_strerror(rc));
        return -1;
    }
    rc = uv_async_init(&l->u.uv.loop, &l->u.uv.w, uv_adapt_cb);
    if (rc < 0) {
        snprintf(err, size, "uv_async_init: %s", uv_strerror(rc));
        uv_loop_close(&l->u.uv.loop);
        return -1;
    }
    l->u.uv.w.data = l;
    return 0;
}

static int uv_adapt_run(bl_loop *l, char *err, size_t size)
{
    (void)err;
    (void)size;
    uv_run(&l->u.uv.loop, UV_RUN_DEFAULT);
    return 0;
}

static void uv_adapt_send(bl_loop *l)
{
    uv_async_send(&l->u.uv.w);
}

static void uv_adapt_stop(bl_loop *l)
{
    uv_stop(&l->u.uv.loop);
}

static void uv_adapt_teardown(bl_loop *l)
{
    /* A handle must be closed, and the close processed by the loop, before the loop closes. */
    uv_close((uv_handle_t *)&l->u.uv.w, NULL);
    uv_run(&l->u.uv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&l->u.uv.loop);
}

static const bl_ops uv_ops = {
    .name = "libuv",
    .note = NULL,
    .process_init = no_process_init,
    .setup = uv_adapt_setup,
    .run = uv_adapt_run,
    .send = uv_adapt_send,
    .stop = uv_adapt_stop,
    .teardown = uv_adapt_teardown,
};
#endif

/* ---- libevent ----------------------------------------------------------------------------- */

#ifdef HAVE_LIBEVENT
/* libevent has no async watcher. Its documented way to wake a loop from another thread is
 * event_active() on an event of that base, with locking enabled by evthread_use_pthreads()
 * before the base is created (the base then also gets its own notification fd). The event is
 * never added: it only ever becomes active, like an async watcher that was sent to. */
static int evt_adapt_process_init(char *err, size_t size)
{
    /* libev.so exports a libevent emulation with the same names (event_active, event_base_new,
     * event_base_loop, ...). Whichever library comes first in the link wins, so make sure these
     * calls reach libevent itself; bench/CMakeLists.txt links libevent before libev for this. */
    Dl_info info;
    if (!dladdr((void *)event_active, &info) || !info.dli_fname ||
        !strstr(info.dli_fname, "libevent")) {
        snprintf(err, size,
                 "event_active() resolves to %s, not libevent: link libevent before "
                 "libev",
                 info.dli_fname ? info.dli_fname : "an unknown object");
        return -1;
    }
    if (evthread_use_pthreads() != 0) {
        snprintf(err, size, "evthread_use_pthreads failed");
        return -1;
    }
    return 0;
}

static void evt_adapt_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bl_loop *l = arg;
    l->cb(l);
}

static int evt_adapt_setup(bl_loop *l, char *err, size_t size)
{
    l->u.evt.base = event_base_new();
    if (!l->u.evt.base) {
        snprintf(err, size, "event_base_new failed");
        return -1;
    }
    l->u.evt.ev = event_new(l->u.evt.base, -1, 0, evt_adapt_cb, l);
    if (!l->u.evt.ev) {
        snprintf(err, size, "event_new failed");
        event_base_free(l->u.evt.base);
        return -1;
    }
    return 0;
}

static int evt_adapt_run(bl_loop *l, char *err, size_t size)
{
    /* Nothing is ever added to the base, so it must not return for being empty. */
    if (event_base_loop(l->u.evt.base, EVLOOP_NO_EXIT_ON_EMPTY) < 0) {
        snprintf(err, size, "event_base_loop failed");
        return -1;
    }
    return 0;
}

static void evt_adapt_send(bl_loop *l)
{
    event_active(l->u.evt.ev, EV_READ, 0);
}

static void evt_adapt_stop(bl_loop *l)
{
    event_base_loopbreak(l->u.evt.base);
}

static void evt_adapt_teardown(bl_loop *l)
{
    event_free(l->u.evt.ev);
    event_base_free(l->u.evt.base);
}

static const bl_ops evt_ops = {
    .name = "libevent",
    .note = "no async watcher in libevent: event_active() on a never-added event, called from "
            "other threads with evthread_use_pthreads() locking (its documented cross-thread "
            "wakeup)",
    .process_init = evt_adapt_process_init,
    .setup = evt_adapt_setup,
    .run = evt_adapt_run,
    .send = evt_adapt_send,
    .stop = evt_adapt_stop,
    .teardown = evt_adapt_teardown,
};
#endif

const bl_ops *const bl_all[] = {
    &aev_ops,
#ifdef HAVE_LIBEV
    &ev_ops,
#endif
#ifdef HAVE_LIBUV
    &uv_ops,
#endif
#ifdef HAVE_LIBEVENT
    &evt_ops,
#endif
    NULL,
};
