/*
 * A stand-in for the BSD <sys/event.h>, used only by the test build on systems without kqueue
 * (Linux): src/backend_kqueue.c is compiled against this header and linked with the user-space
 * emulation in tests/kqueue_emu/kqueue_emu.c.
 *
 * It declares what the backend uses, with FreeBSD's names, layout and values (FreeBSD 12 and
 * later: 64-bit data and the ext[] array), so that code written against it compiles unchanged
 * against the real header. Filters other than EVFILT_READ and EVFILT_WRITE are left out on
 * purpose: the emulation does not implement them, and a backend that needed one should fail to
 * compile here rather than be tested against something that does not exist.
 */
#ifndef AEV_KQUEUE_EMU_SYS_EVENT_H
#define AEV_KQUEUE_EMU_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

struct kevent {
    uintptr_t ident;      /* identifier; a file descriptor for the read and write filters */
    short filter;         /* EVFILT_* */
    unsigned short flags; /* EV_*: actions on input, state on output */
    unsigned int fflags;  /* filter-specific flags */
    int64_t data;         /* filter-specific data; the errno of an EV_ERROR entry */
    void *udata;          /* opaque, handed back unchanged */
    uint64_t ext[4];      /* extensions; zero */
};

/* Filters. */
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)

/* Actions. */
#define EV_ADD 0x0001     /* add the event, or update an existing one */
#define EV_DELETE 0x0002  /* remove it */
#define EV_ENABLE 0x0004  /* let kevent() return it */
#define EV_DISABLE 0x0008 /* keep it registered, but do not return it */

/* Behaviour. The emulation refuses EV_ONESHOT, EV_CLEAR and EV_DISPATCH (EOPNOTSUPP). */
#define EV_ONESHOT 0x0010  /* delete after the first retrieval */
#define EV_CLEAR 0x0020    /* reset the state after retrieval (edge-triggered) */
#define EV_RECEIPT 0x0040  /* always answer the change with an EV_ERROR entry (data 0: success) */
#define EV_DISPATCH 0x0080 /* disable after each retrieval */

/* Returned. */
#define EV_SYSFLAGS 0xF000 /* reserved for the system; cleared from changes */
#define EV_ERROR 0x4000    /* a change failed: data holds the errno */
#define EV_EOF 0x8000      /* end of file, or the other side went away */

#define EV_SET(kevp, a, b, c, d, e, f)                                                             \
    do {                                                                                           \
        struct kevent *ev_set_kevp_ = (kevp);                                                      \
        ev_set_kevp_->ident = (a);                                                                 \
        ev_set_kevp_->filter = (b);                                                                \
        ev_set_kevp_->flags = (c);                                                                 \
        ev_set_kevp_->fflags = (d);                                                                \
        ev_set_kevp_->data = (e);                                                                  \
        ev_set_kevp_->udata = (f);                                                                 \
        ev_set_kevp_->ext[0] = ev_set_kevp_->ext[1] = 0;                                           \
        ev_set_kevp_->ext[2] = ev_set_kevp_->ext[3] = 0;                                           \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist,
           int nevents, const struct timespec *timeout);

#ifdef __cplusplus
}
#endif

#endif /* AEV_KQUEUE_EMU_SYS_EVENT_H */
