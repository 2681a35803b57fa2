/*
 * tcp_pingpong: request/response over TCP loopback, as round trips per second, for asyncev and
 * every peer library built in, with 1 connection and with 100 concurrent ones.
 *
 * C connections over 127.0.0.1. On each, the client sends a 64-byte request; the server reads
 * it whole and answers with a 64-byte response; the client reads that whole and sends the next
 * request, `count / C` times per connection. All C connections run at once, each with exactly
 * one message in flight. Measured: round trips per second over all connections, from just
 * before the first requests are sent until the last response has been read.
 *
 * Both ends of every connection live in ONE loop on ONE thread: the loop of the library under
 * test. So each round trip passes through that library twice (the server's read callback, then
 * the client's), the measurement contains no cross-thread or cross-CPU wakeup (which on a small
 * VM costs more than everything else; see async_pingpong), and every library does exactly the
 * same system calls for the same protocol. A server in another thread or process would make
 * every message wake a sleeping thread, and on these VMs that would mostly measure the hypervisor.
 *
 * Each library is driven through its own API, the way its documentation shows for sockets:
 *   asyncev   aev_io (AEV_READ) per socket; recv() and send() in the callback
 *   libev     ev_io (EV_READ) per socket; recv() and send() in the callback
 *   libuv     uv_tcp_t (uv_tcp_open on the socket), uv_read_start() and uv_write()
 *   libevent  struct event (EV_READ | EV_PERSIST) per socket; recv() and send() in the callback
 * Connection setup (socket, connect, accept, TCP_NODELAY, non-blocking) is not timed and is the
 * same code for every library: plain socket calls before the loop exists.
 *
 * Checks per run: every connection did exactly its round trips; every request and response
 * carries its connection id and sequence number, and the receiver verifies both; no read ever
 * returns more than one message (there is never more than one in flight), and a send never
 * writes less than the whole message (64 bytes into an empty socket buffer cannot be short).
 */
#include "benchutil.h"

#include <asyncev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef HAVE_LIBEV
#include <ev.h>
/* event2/event.h defines EV_READ as a macro with another value; keep libev's own. */
enum { TP_LIBEV_READ = EV_READ };
#endif
#ifdef HAVE_LIBUV
#include <uv.h>
#endif
#ifdef HAVE_LIBEVENT
#include <dlfcn.h>
#include <event2/event.h>
#endif

#define TP_MSG 64 /* bytes per request and per response */
/* Read buffer per socket, larger than a message: then one read takes a whole message in one
 * call even in a library that reads again whenever a read filled its buffer (libuv does). */
#define TP_RECV_BUF 1024
#define TP_MAX_CONNS_LIST 8
#define TP_MAX_CONNS 10000
#define TP_FD_RESERVE 64 /* fds besides the connections: stdio, the loop's own, the harness */
#define TP_DEFAULT_COUNT 100000

/* ---- the protocol, shared by every library ------------------------------------------------ */

typedef struct tp_conn tp_conn;

/* One end of a connection: its socket and its buffers. */
typedef struct tp_end {
    int fd;
    int is_client;
    tp_conn *conn;
    size_t have; /* bytes of the current message received so far */
    unsigned char in[TP_RECV_BUF];
    unsigned char out[TP_MSG];
} tp_end;

struct tp_conn {
    tp_end client, server;
    uint32_t id;
    uint64_t quota;    /* round trips to do */
    uint64_t answered; /* requests the server answered */
    uint64_t done;     /* responses the client received */
};

/* The state of one run (in the forked child). */
typedef struct tp_run {
    int nconns;
    tp_conn *conns;
    int finished;       /* connections that did all their round trips */
    uint64_t callbacks; /* read callbacks that received data, both ends */
    int64_t t0, t1;
    int failed;
    char err[160];
} tp_run;

static tp_run g;

/* Records the first failure; the library's callback then stops its loop. */
static void tp_failf(const char *what, const tp_end *e, int err)
{
    if (g.failed) {
        return;
    }
    g.failed = 1;
    snprintf(g.err, sizeof g.err, "connection %u, %s: %s%s%s", e->conn->id,
             e->is_client ? "client" : "server", what, err ? ": " : "", err ? strerror(err) : "");
}

/* Writes the header of a message: connection id, sequence number; the rest is a fixed fill. */
static void tp_put_header(unsigned char *m, uint32_t id, uint64_t seq)
{
    memcpy(m, &id, sizeof id);
    memcpy(m + sizeof id, &seq, sizeof seq);
}

static int tp_header_is(const unsigned char *m, uint32_t id, uint64_t seq)
{
    uint32_t mid;
    uint64_t mseq;
    memcpy(&mid, m, sizeof mid);
    memcpy(&mseq, m + sizeof mid, sizeof mseq);
    return mid == id && mseq == seq;
}

enum { TP_WAIT = 0, TP_SEND = 1, TP_FINISHED = 2, TP_ERROR = -1 };

/*
 * Called after n bytes were read into e->in + e->have. Returns TP_WAIT (message incomplete),
 * TP_SEND (e->out holds the message to send now), TP_FINISHED (the client's last response: this
 * connection is done) or TP_ERROR (after tp_failf).
 */
static int tp_received(tp_end *e, size_t n)
{
    tp_conn *c = e->conn;
    g.callbacks++;
    e->have += n;
    if (e->have < TP_MSG) {
        return TP_WAIT;
    }
    if (e->have > TP_MSG) {
        tp_failf("more than one message received at once", e, 0);
        return TP_ERROR;
    }
    e->have = 0;
    if (!e->is_client) {
        if (!tp_header_is(e->in, c->id, c->answered)) {
            tp_failf("request out of sequence", e, 0);
            return TP_ERROR;
        }
        /* The response echoes the request's header; its last byte marks it as a response. */
        memcpy(e->out, e->in, TP_MSG);
        e->out[TP_MSG - 1] = 'R';
        c->answered++;
        return TP_SEND;
    }
    if (!tp_header_is(e->in, c->id, c->done) || e->in[TP_MSG - 1] != 'R') {
        tp_failf("response out of sequence", e, 0);
        return TP_ERROR;
    }
    if (++c->done == c->quota) {
        if (++g.finished == g.nconns) {
            g.t1 = bu_now();
        }
        return TP_FINISHED;
    }
    tp_put_header(e->out, c->id, c->done);
    return TP_SEND;
}

/* recv() for the libraries that hand the program a ready socket. Returns bytes read (> 0), 0
 * if there was nothing after all, or -1 after tp_failf (error, or the peer closed). */
static ssize_t tp_recv(tp_end *e)
{
    ssize_t n = recv(e->fd, e->in + e->have, sizeof e->in - e->have, 0);
    if (n > 0) {
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    tp_failf(n == 0 ? "peer closed" : "recv", e, n == 0 ? 0 : errno);
    return -1;
}

/* send() of one whole message; 0, or -1 after tp_failf. */
static int tp_send(tp_end *e)
{
    ssize_t n = send(e->fd, e->out, TP_MSG, MSG_NOSIGNAL);
    if (n == TP_MSG) {
        return 0;
    }
    tp_failf(n < 0 ? "send" : "short send", e, n < 0 ? errno : 0);
    return -1;
}

/* The whole read callback of the fd-based libraries: read, then answer or finish. Returns
 * TP_WAIT, TP_SEND (sent), TP_FINISHED (stop this connection's watchers) or TP_ERROR (stop the
 * loop). */
static int tp_on_readable(tp_end *e)
{
    ssize_t n = tp_recv(e);
    if (n <= 0) {
        return n == 0 ? TP_WAIT : TP_ERROR;
    }
    int rc = tp_received(e, (size_t)n);
    if (rc == TP_SEND && tp_send(e) != 0) {
        return TP_ERROR;
    }
    return rc;
}

/* The first request of a connection. */
static void tp_first_request(tp_conn *c)
{
    tp_put_header(c->client.out, c->id, 0);
}

/* One library: runs the whole exchange over g.conns; 0, or -1 with r failed. */
typedef struct tp_lib {
    const char *name;
    const char *note;
    int (*run)(bu_result *r);
} tp_lib;

/* ---- libasyncev ---------------------------------------------------------------------------- */

typedef struct tpaev_conn {
    aev_io client, server;
} tpaev_conn;

static aev_loop *tpaev_loop;
static tpaev_conn *tpaev_conns;

static void tpaev_readable(aev_watcher *w, unsigned events)
{
    (void)events;
    tp_end *e = w->data;
    int rc = tp_on_readable(e);
    if (rc == TP_FINISHED) {
        tpaev_conn *ac = &tpaev_conns[e->conn->id];
        aev_io_stop(&ac->client);
        aev_io_stop(&ac->server);
    } else if (rc == TP_ERROR) {
        aev_break(tpaev_loop, AEV_BREAK_ALL);
    }
}

static int tpaev_run(bu_result *r)
{
    int rc = aev_loop_new(&tpaev_loop, 0);
    if (rc < 0) {
        return bu_fail(r, "aev_loop_new: %s", aev_strerror(rc));
    }
    tpaev_conns = calloc((size_t)g.nconns, sizeof *tpaev_conns);
    if (!tpaev_conns) {
        return bu_fail(r, "out of memory");
    }
    for (int i = 0; i < g.nconns && rc == 0; i++) {
        tp_conn *c = &g.conns[i];
        tpaev_conn *ac = &tpaev_conns[i];
        rc = aev_io_init(&ac->client, tpaev_loop, tpaev_readable, c->client.fd, AEV_READ);
        rc = rc ? rc : aev_io_init(&ac->server, tpaev_loop, tpaev_readable, c->server.fd, AEV_READ);
        ac->client.base.data = &c->client;
        ac->server.base.data = &c->server;
        rc = rc ? rc : aev_io_start(&ac->client);
        rc = rc ? rc : aev_io_start(&ac->server);
    }
    if (rc < 0) {
        return bu_fail(r, "starting the io watchers: %s", aev_strerror(rc));
    }

    g.t0 = bu_now();
    for (int i = 0; i < g.nconns; i++) {
        tp_first_request(&g.conns[i]);
        if (tp_send(&g.conns[i].client) != 0) {
            break;
        }
    }
    rc = g.failed ? 0 : aev_run(tpaev_loop, AEV_RUN_DEFAULT);
    if (rc < 0) {
        return bu_fail(r, "aev_run: %s", aev_strerror(rc));
    }
    for (int i = 0; i < g.nconns; i++) {
        aev_io_stop(&tpaev_conns[i].client);
        aev_io_stop(&tpaev_conns[i].server);
    }
    aev_loop_destroy(tpaev_loop);
    return 0;
}

static const tp_lib tpaev_lib = {"asyncev", NULL, tpaev_run};

/* ---- libev --------------------------------------------------------------------------------- */

#ifdef HAVE_LIBEV
typedef struct tpev_conn {
    ev_io client, server;
} tpev_conn;

static tpev_conn *tpev_conns;

static void tpev_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    tp_end *e = w->data;
    int rc = tp_on_readable(e);
    if (rc == TP_FINISHED) {
        tpev_conn *lc = &tpev_conns[e->conn->id];
        ev_io_stop(loop, &lc->client);
        ev_io_stop(loop, &lc->server);
    } else if (rc == TP_ERROR) {
        ev_break(loop, EVBREAK_ALL);
    }
}

static int tpev_run(bu_result *r)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    tpev_conns = calloc((size_t)g.nconns, sizeof *tpev_conns);
    if (!loop || !tpev_conns) {
        return bu_fail(r, "ev_loop_new failed");
    }
    for (int i = 0; i < g.nconns; i++) {
        tp_conn *c = &g.conns[i];
        tpev_conn *lc = &tpev_conns[i];
        ev_io_init(&lc->client, tpev_readable, c->client.fd, TP_LIBEV_READ);
        ev_io_init(&lc->server, tpev_readable, c->server.fd, TP_LIBEV_READ);
        lc->client.data = &c->client;
        lc->server.data = &c->server;
        ev_io_start(loop, &lc->client);
        ev_io_start(loop, &lc->server);
    }

    g.t0 = bu_now();
    for (int i = 0; i < g.nconns; i++) {
        tp_first_request(&g.conns[i]);
        if (tp_send(&g.conns[i].client) != 0) {
            break;
        }
    }
    if (!g.failed) {
        ev_run(loop, 0);
    }
    for (int i = 0; i < g.nconns; i++) {
        ev_io_stop(loop, &tpev_conns[i].client);
        ev_io_stop(loop, &tpev_conns[i].server);
    }
    ev_loop_destroy(loop);
    return 0;
}

static const tp_lib tpev_lib = {"libev", NULL, tpev_run};
#endif

/* ---- libuv --------------------------------------------------------------------------------- */

#ifdef HAVE_LIBUV
/* libuv owns the socket once uv_tcp_open() took it: reads through uv_read_start(), writes
 * through uv_write() requests, and uv_close() closes the fd. */
typedef struct tpuv_end {
    uv_tcp_t tcp;
    uv_write_t wreq;
    int wbusy; /* wreq is in flight (its callback has not run yet) */
    tp_end *end;
} tpuv_end;

static uv_loop_t tpuv_loop;
static tpuv_end *tpuv_ends; /* 2 per connection: client, server */

static void tpuv_fail(uv_stream_t *s, const char *what, int status)
{
    tpuv_end *ue = s->data;
    if (!g.failed) {
        tp_failf(what, ue->end, 0);
        size_t len = strlen(g.err);
        snprintf(g.err + len, sizeof g.err - len, ": %s", uv_strerror(status));
    }
    uv_stop(&tpuv_loop);
}

static void tpuv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    tp_end *e = ((tpuv_end *)h->data)->end;
    *buf = uv_buf_init((char *)e->in + e->have, (unsigned)(sizeof e->in - e->have));
}

static void tpuv_written(uv_write_t *req, int status)
{
    tpuv_end *ue = req->data;
    ue->wbusy = 0;
    if (status < 0) {
        tpuv_fail((uv_stream_t *)&ue->tcp, "uv_write", status);
    }
}

static int tpuv_write(tpuv_end *ue)
{
    if (ue->wbusy) {
        /* Cannot happen while one message is in flight per connection; checked anyway, since
         * reusing a request still in flight would corrupt libuv's queue. */
        tp_failf("write request still in flight", ue->end, 0);
        uv_stop(&tpuv_loop);
        return -1;
    }
    uv_buf_t b = uv_buf_init((char *)ue->end->out, TP_MSG);
    ue->wreq.data = ue;
    int rc = uv_write(&ue->wreq, (uv_stream_t *)&ue->tcp, &b, 1, tpuv_written);
    if (rc < 0) {
        tpuv_fail((uv_stream_t *)&ue->tcp, "uv_write", rc);
        return -1;
    }
    ue->wbusy = 1;
    return 0;
}

static void tpuv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    tpuv_end *ue = s->data;
    if (nread == 0) {
        return; /* libuv's EAGAIN */
    }
    if (nread < 0) {
        tpuv_fail(s, nread == UV_EOF ? "peer closed" : "read", (int)nread);
        return;
    }
    int rc = tp_received(ue->end, (size_t)nread);
    if (rc == TP_SEND) {
        tpuv_write(ue);
    } else if (rc == TP_FINISHED) {
        int i = (int)ue->end->conn->id;
        uv_read_stop((uv_stream_t *)&tpuv_ends[2 * i].tcp);
        uv_read_stop((uv_stream_t *)&tpuv_ends[2 * i + 1].tcp);
    } else if (rc == TP_ERROR) {
        uv_stop(&tpuv_loop);
    }
}

static int tpuv_run(bu_result *r)
{
    int rc = uv_loop_init(&tpuv_loop);
    if (rc < 0) {
        return bu_fail(r, "uv_loop_init: %s", uv_strerror(rc));
    }
    tpuv_ends = calloc((size_t)g.nconns * 2, sizeof *tpuv_ends);
    if (!tpuv_ends) {
        return bu_fail(r, "out of memory");
    }
    int opened = 0;
    for (int i = 0; i < 2 * g.nconns && rc == 0; i++) {
        tpuv_end *ue = &tpuv_ends[i];
        ue->end = i % 2 == 0 ? &g.conns[i / 2].client : &g.conns[i / 2].server;
        rc = uv_tcp_init(&tpuv_loop, &ue->tcp);
        if (rc == 0) {
            ue->tcp.data = ue;
            opened++;
            rc = uv_tcp_open(&ue->tcp, ue->end->fd);
        }
        rc = rc ? rc : uv_read_start((uv_stream_t *)&ue->tcp, tpuv_alloc, tpuv_read);
    }
    if (rc < 0) {
        return bu_fail(r, "setting up the tcp handles: %s", uv_strerror(rc));
    }

    g.t0 = bu_now();
    for (int i = 0; i < g.nconns; i++) {
        tp_first_request(&g.conns[i]);
        if (tpuv_write(&tpuv_ends[2 * i]) != 0) {
            break;
        }
    }
    if (!g.failed) {
        uv_run(&tpuv_loop, UV_RUN_DEFAULT);
    }
    /* Every handle must be closed, and the closes processed, before the loop can close. */
    for (int i = 0; i < opened; i++) {
        uv_close((uv_handle_t *)&tpuv_ends[i].tcp, NULL);
    }
    uv_run(&tpuv_loop, UV_RUN_DEFAULT);
    uv_loop_close(&tpuv_loop);
    for (int i = 0; i < opened; i++) {
        tpuv_ends[i].end->fd = -1; /* closed by uv_close() */
    }
    return 0;
}

static const tp_lib tpuv_lib = {"libuv", "uv_tcp_t streams: uv_read_start() + uv_write()",
                                tpuv_run};
#endif

/* ---- libevent ------------------------------------------------------------------------------ */

#ifdef HAVE_LIBEVENT
static struct event_base *tpevt_base;
static struct event **tpevt_ev; /* 2 per connection: client, server */

static void tpevt_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tp_end *e = arg;
    int rc = tp_on_readable(e);
    if (rc == TP_FINISHED) {
        int i = (int)e->conn->id;
        event_del(tpevt_ev[2 * i]);
        event_del(tpevt_ev[2 * i + 1]);
    } else if (rc == TP_ERROR) {
        event_base_loopbreak(tpevt_base);
    }
}

static int tpevt_run(bu_result *r)
{
    /* libev.so exports a libevent emulation under the same names; make sure this is libevent
     * (bench/CMakeLists.txt links libevent first for this). */
    Dl_info info;
    if (!dladdr((void *)event_base_new, &info) || !info.dli_fname ||
        !strstr(info.dli_fname, "libevent")) {
        return bu_fail(r,
                       "event_base_new() resolves to %s, not libevent: link libevent before "
                       "libev",
                       info.dli_fname ? info.dli_fname : "an unknown object");
    }
    tpevt_base = event_base_new();
    tpevt_ev = calloc((size_t)g.nconns * 2, sizeof *tpevt_ev);
    if (!tpevt_base || !tpevt_ev) {
        return bu_fail(r, "event_base_new failed");
    }
    for (int i = 0; i < 2 * g.nconns; i++) {
        tp_end *e = i % 2 == 0 ? &g.conns[i / 2].client : &g.conns[i / 2].server;
        tpevt_ev[i] = event_new(tpevt_base, e->fd, EV_READ | EV_PERSIST, tpevt_readable, e);
        if (!tpevt_ev[i] || event_add(tpevt_ev[i], NULL) != 0) {
            return bu_fail(r, "event_new/event_add failed for socket %d", i);
        }
    }

    g.t0 = bu_now();
    for (int i = 0; i < g.nconns; i++) {
        tp_first_request(&g.conns[i]);
        if (tp_send(&g.conns[i].client) != 0) {
            break;
        }
    }
    if (!g.failed && event_base_dispatch(tpevt_base) < 0) {
        return bu_fail(r, "event_base_dispatch failed");
    }
    for (int i = 0; i < 2 * g.nconns; i++) {
        event_free(tpevt_ev[i]);
    }
    event_base_free(tpevt_base);
    return 0;
}

static const tp_lib tpevt_lib = {"libevent", NULL, tpevt_run};
#endif

static const tp_lib *const libs[] = {
    &tpaev_lib,
#ifdef HAVE_LIBEV
    &tpev_lib,
#endif
#ifdef HAVE_LIBUV
    &tpuv_lib,
#endif
#ifdef HAVE_LIBEVENT
    &tpevt_lib,
#endif
    NULL,
};

/* ---- connections: the same plain socket calls for every library (not timed) ----------------- */

static int tp_set_options(int fd)
{
    int one = 1;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        return -1;
    }
    /* The protocol never has two messages in flight, so Nagle would not delay anything; set it
     * anyway, as every latency-minded TCP program does. */
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Listens on 127.0.0.1 (a port the kernel picks) and makes g.nconns connections through it. */
static int tp_connect_all(bu_result *r)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 16) ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) != 0) {
        return bu_fail(r, "listening on 127.0.0.1: %s", strerror(errno));
    }
    for (int i = 0; i < g.nconns; i++) {
        tp_conn *c = &g.conns[i];
        c->client.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->client.fd < 0 || connect(c->client.fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            return bu_fail(r, "connection %d of %d: connect: %s", i, g.nconns, strerror(errno));
        }
        c->server.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c->server.fd < 0) {
            return bu_fail(r, "connection %d of %d: accept: %s", i, g.nconns, strerror(errno));
        }
        if (tp_set_options(c->client.fd) != 0 || tp_set_options(c->server.fd) != 0) {
            return bu_fail(r, "connection %d: socket options: %s", i, strerror(errno));
        }
    }
    close(lfd);
    return 0;
}

/* ---- one measurement (in the forked child) ------------------------------------------------- */

static int tp_measure(const bu_impl *impl, const bu_params *p, bu_result *r)
{
    const tp_lib *lib = impl->ctx;
    memset(&g, 0, sizeof g);
    g.nconns = p->threads; /* bu_params.threads carries the connection count */
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    if (!g.conns) {
        return bu_fail(r, "out of memory");
    }
    uint64_t quota = p->count / (uint64_t)g.nconns;
    for (int i = 0; i < g.nconns; i++) {
        tp_conn *c = &g.conns[i];
        c->id = (uint32_t)i;
        c->quota = quota ? quota : 1;
        c->client = (tp_end){.fd = -1, .is_client = 1, .conn = c};
        c->server = (tp_end){.fd = -1, .is_client = 0, .conn = c};
        memset(c->client.out, 'q', TP_MSG);
    }
    if (tp_connect_all(r) != 0 || lib->run(r) != 0) {
        return -1;
    }
    if (g.failed) {
        return bu_fail(r, "%s", g.err);
    }
    uint64_t total = 0;
    for (int i = 0; i < g.nconns; i++) {
        tp_conn *c = &g.conns[i];
        if (c->done != c->quota || c->answered != c->quota) {
            return bu_fail(r,
                           "connection %d: %llu requests answered, %llu responses read, "
                           "expected %llu",
                           i, (unsigned long long)c->answered, (unsigned long long)c->done,
                           (unsigned long long)c->quota);
        }
        total += c->done;
        close(c->client.fd); /* -1 where the library closed it already: harmless EBADF */
        close(c->server.fd);
    }
    r->elapsed_ns = g.t1 - g.t0;
    r->ops = total;
    r->callbacks = g.callbacks;
    return 0;
}

/* ---- options ------------------------------------------------------------------------------- */

typedef struct tp_options {
    int rounds;
    uint64_t count;
    int conns[TP_MAX_CONNS_LIST];
    int nconns;
    double timeout_s;
    const char *csv_path;
    const char *only;
} tp_options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tcp_pingpong [options]\n"
            "Request/response of %d bytes over TCP loopback; both ends of every connection in\n"
            "one loop of the library under test. Round trips/s over all connections.\n"
            "options:\n"
            "  --rounds N     rounds per contender, interleaved; the median is reported (5)\n"
            "  --count N      round trips per run over all connections (%d)\n"
            "  --conns LIST   concurrent connections, comma-separated (1,100)\n"
            "  --csv FILE     also write every round and the medians to FILE as CSV\n"
            "  --timeout S    seconds one run may take before it is killed and failed (120)\n"
            "  --only LIST    comma-separated contenders: asyncev,libev,libuv,libevent\n"
            "  --help         this text\n"
            "Exit status: 0 if every run finished and passed its checks, 1 otherwise.\n",
            TP_MSG, TP_DEFAULT_COUNT);
}

static long parse_pos(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0) {
        fprintf(stderr, "bad value for %s: '%s' (want a positive integer)\n", opt, s);
        exit(2);
    }
    return v;
}

static void parse_conns(tp_options *o, const char *list)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    o->nconns = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long v = parse_pos(t, "--conns");
        if (o->nconns == TP_MAX_CONNS_LIST || v > TP_MAX_CONNS) {
            fprintf(stderr, "--conns: at most %d entries of at most %d\n", TP_MAX_CONNS_LIST,
                    TP_MAX_CONNS);
            exit(2);
        }
        o->conns[o->nconns++] = (int)v;
    }
}

static void parse_options(int argc, char **argv, tp_options *o)
{
    static const struct option longopts[] = {
        {"rounds", required_argument, NULL, 'r'},  {"count", required_argument, NULL, 'n'},
        {"conns", required_argument, NULL, 'C'},   {"csv", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'}, {"only", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    *o = (tp_options){.rounds = 5, .count = TP_DEFAULT_COUNT, .timeout_s = 120};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            o->rounds = (int)parse_pos(optarg, "--rounds");
            break;
        case 'n':
            o->count = (uint64_t)parse_pos(optarg, "--count");
            break;
        case 'C':
            parse_conns(o, optarg);
            break;
        case 'c':
            o->csv_path = optarg;
            break;
        case 't':
            o->timeout_s = (double)parse_pos(optarg, "--timeout");
            break;
        case 'o':
            o->only = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    if (o->rounds > BU_MAX_ROUNDS) {
        fprintf(stderr, "--rounds: at most %d\n", BU_MAX_ROUNDS);
        exit(2);
    }
    if (o->nconns == 0) {
        parse_conns(o, "1,100");
    }
}

/* Raises the soft RLIMIT_NOFILE to what the most connections need, at most to the hard limit.
 * Returns the soft limit in force. */
static rlim_t raise_nofile(const tp_options *o)
{
    rlim_t need = 0;
    for (int i = 0; i < o->nconns; i++) {
        rlim_t n = (rlim_t)o->conns[i] * 2 + TP_FD_RESERVE;
        need = n > need ? n : need;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur < need) {
        rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0) {
            return 0;
        }
    }
    return rl.rlim_cur;
}

/* ---- main ---------------------------------------------------------------------------------- */

/* Issue 6's target: asyncev >= 1.0x the fastest peer that was measured. */
static void check_best_peer(const bu_row *rows, int n, int conns)
{
    const bu_row *best = NULL;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].impl->name, "asyncev") != 0 && rows[i].nok &&
            (!best || bu_row_median(&rows[i]) > bu_row_median(best))) {
            best = &rows[i];
        }
    }
    char label[64];
    snprintf(label, sizeof label, "tcp ping-pong C=%d >= 1.0x best peer", conns);
    if (!best) {
        printf("  target %-40s: not judged (no peer measured)\n", label);
        return;
    }
    bu_check_target(label, rows, n, best->impl->name, 1.0);
}

static int run_case(const tp_options *o, const bu_impl *impls, int n, int conns, FILE *csv)
{
    static bu_row rows[BU_MAX_IMPLS];
    int ours = bu_rows_init(rows, impls, n);
    uint64_t per = o->count / (uint64_t)conns ? o->count / (uint64_t)conns : 1;
    printf("\nC = %d connection%s, %llu round trips each (%llu per run)\n", conns,
           conns == 1 ? "" : "s", (unsigned long long)per, (unsigned long long)per * conns);

    bu_params p = {.count = o->count, .threads = conns};
    int failures = 0;
    for (int round = 1; round <= o->rounds; round++) {
        for (int i = 0; i < n; i++) {
            bu_result r;
            if (!bu_run_isolated(&impls[i], &p, o->timeout_s, &r)) {
                failures++;
                fprintf(stderr, "C=%d round %d, %s: %s\n", conns, round, impls[i].name, r.err);
            }
            bu_record(&rows[i], &r, csv, "tcp_pingpong", conns, round, per * conns);
        }
    }
    bu_print_table("round trips/s", rows, n, ours, 1);
    printf("  (callbacks: read callbacks that received data, both ends; 2 per round trip when\n"
           "   every message arrives in one piece)\n");
    bu_csv_medians(csv, "tcp_pingpong", conns, per * conns, rows, n);
    check_best_peer(rows, n, conns);
    return failures;
}

int main(int argc, char **argv)
{
    tp_options o;
    parse_options(argc, argv, &o);
    bu_options bo = {.rounds = o.rounds, .timeout_s = o.timeout_s, .only = o.only};

    bu_impl impls[BU_MAX_IMPLS];
    int n = 0;
    for (int i = 0; libs[i]; i++) {
        impls[n++] = (bu_impl){libs[i]->name, tp_measure, libs[i], libs[i]->note};
    }
    n = bu_select_impls(&bo, impls, n, "asyncev libev libuv libevent");
    FILE *csv = bu_csv_open(o.csv_path, "bench,contender,conns,round,count,elapsed_ns,"
                                        "rate_per_s,callbacks,status");

    char title[160];
    snprintf(title, sizeof title,
             "tcp_pingpong: %d-byte request/response over TCP loopback, "
             "client and server in one loop",
             TP_MSG);
    bu_print_header(title, &bo);
    rlim_t nofile = raise_nofile(&o);

    int failures = 0;
    for (int i = 0; i < o.nconns; i++) {
        int conns = o.conns[i];
        if ((rlim_t)conns * 2 + TP_FD_RESERVE > nofile) {
            printf("\nC = %d skipped: needs %d fds, RLIMIT_NOFILE allows %llu\n", conns,
                   conns * 2 + TP_FD_RESERVE, (unsigned long long)nofile);
            continue;
        }
        failures += run_case(&o, impls, n, conns, csv);
    }
    return bu_finish(csv, failures);
}
