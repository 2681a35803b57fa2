/*
 * The backend interface: the only thing that differs between epoll, kqueue and poll.
 *
 * A backend knows nothing about watchers. The io layer (io.c) keeps, per fd, the set of events
 * the watchers want and what was last handed to the backend; it calls modify() only when these
 * differ, just before the loop polls. The backend reports readiness through aev__io_ready().
 */
#ifndef AEV_BACKEND_H
#define AEV_BACKEND_H

#include <stdint.h>

struct aev_loop;

/* Returned by modify() for a fd this backend cannot watch but that is always ready (a regular
 * file under epoll). The io layer then reports it ready on every iteration, as poll(2) would. */
#define AEV__ALWAYS_READY 1

/* In the events handed to modify(): the caller wants edge-triggered notification (one event
 * per change of state) and will not reset the fd's readiness itself. Used only where the
 * backend's `edge` member says it is honoured; others must ignore the bit. */
#define AEV__EDGE 0x80

/* For aev__io_ready() from backends that cannot attach a generation to a registration. */
#define AEV__GEN_ANY UINT32_MAX

typedef struct aev__backend {
    /* AEV_BACKEND_* bit and name, for aev_backend() and AEV_BACKEND=name. */
    unsigned id;
    const char *name;
    /* Creates the kernel object(s) and stores private state in loop->backend_state.
     * Returns 0 or a negative errno; on failure nothing is left allocated. */
    int (*init)(struct aev_loop *loop);
    /* Frees everything init() made. Never fails. */
    void (*destroy)(struct aev_loop *loop);
    /* Makes room for fd in whatever memory modify() uses, so that modify() never fails for lack
     * of it. Called by aev_io_start() for the watcher's fd, before modify() ever sees that fd: a
     * start reports -ENOMEM, rather than the flush failing a watcher that started. Returns 0 or
     * -ENOMEM (nothing changed). NULL when modify() needs no memory of the backend's (epoll). */
    int (*reserve)(struct aev_loop *loop, int fd);
    /* Changes what is watched on fd from old_ev to new_ev (AEV_READ|AEV_WRITE bits; either may be
     * 0). Called with old_ev == new_ev when the fd may now refer to another file than before (it
     * was re-set by aev_io_set): the registration must then be renewed. `gen` is the io layer's
     * generation of this fd; a backend that can attach data to a registration hands it back in
     * aev__io_ready() so that events of a stale registration are recognised.
     * Returns 0, AEV__ALWAYS_READY, or a negative errno: the kernel refuses the fd, and its
     * watchers receive AEV_ERROR (never for lack of the backend's own memory: reserve() made
     * room for fd). Removing (new_ev == 0) never fails: a fd already closed is simply
     * forgotten. */
    int (*modify)(struct aev_loop *loop, int fd, unsigned old_ev, unsigned new_ev, uint32_t gen);
    /* Waits at most timeout ns (0: do not block, -1: no limit) and calls aev__io_ready() for
     * each ready fd (gen as given to modify, or AEV__GEN_ANY if the backend cannot carry it)
     * with AEV_READ/AEV_WRITE, or with AEV_ERROR (and AEV__GEN_ANY) when the kernel says the fd
     * is not open (POLLNVAL): its watchers then fail with -EBADF. Error and hang-up conditions
     * are reported as AEV_READ|AEV_WRITE, so that readers and writers both find out.
     * A backend that learns only now that a registration made by an earlier modify() was
     * refused (kqueue's EV_ERROR entries) calls aev__io_error(loop, fd, -errno): the watchers of
     * that fd then fail as if modify() had returned the error.
     * Returns 0 (also on EINTR) or a negative errno when polling failed for good. */
    int (*poll)(struct aev_loop *loop, int64_t timeout);
    /* After fork(): recreates the kernel object in the child. The io layer then re-adds every
     * watched fd through modify() with old_ev = 0. Returns 0 or a negative errno. */
    int (*reinit)(struct aev_loop *loop);
    /* Nonzero if modify() honours AEV__EDGE. */
    int edge;
    /* Nonzero if close() removes the kernel's registrations (epoll: those of the file; kqueue:
     * the number's knotes). The io layer then does not remove a fd whose last watcher stopped:
     * the fd may be closed by then and its number reused, by another thread even, and a call
     * naming the number would reach that file. The registration lingers while the fd stays
     * open; the first event it brings proves the fd open and is when the io layer removes it,
     * with modify(fd, AEV_READ | AEV_WRITE, 0), which must then ignore the kernel's complaint
     * about whatever of the two was not registered. */
    int defer_remove;
    /* The fd that becomes readable while poll() would report events (epoll and kqueue fds), or
     * -1 if the backend has none (poll): such a loop cannot be embedded (embed.c). */
    int (*fd)(const struct aev_loop *loop);
} aev__backend;

extern const aev__backend aev__backend_epoll;
extern const aev__backend aev__backend_poll;
extern const aev__backend aev__backend_kqueue;

#endif /* AEV_BACKEND_H */
