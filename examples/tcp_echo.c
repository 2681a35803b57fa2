/*
 * tcp_echo.c - a TCP echo server with an idle timeout per connection.
 *
 * The server listens on 127.0.0.1 (port 0: the kernel picks a free port, which is printed) and
 * sends back every byte it receives. Each connection owns three watchers, embedded in its struct:
 *  - `reader` (AEV_READ): reads a chunk and tries to echo it at once;
 *  - `writer` (AEV_WRITE): started only when the socket would block, to send the rest later;
 *  - `idle`, a timer re-armed with aev_timer_again() on every read: a connection that sends
 *    nothing for the idle timeout is closed.
 * Everything is non-blocking: one slow peer never stalls the others.
 *
 * Usage: tcp_echo               serve until killed; try `nc 127.0.0.1 PORT`
 *        tcp_echo --self-test   also run three clients in the same loop: two send 256 KiB each
 *                               and check the echo byte for byte (small socket buffers make the
 *                               server's writes partial), the third stays silent and must be
 *                               closed by the idle timeout. Exits 0 if all went as expected,
 *                               1 otherwise; a guard timer ends it after 10 s at most.
 *
 * Build against an installed library:  cc tcp_echo.c $(pkg-config --cflags --libs asyncev)
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* From a watcher embedded in a struct back to the struct (see docs/concepts.md). */
#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct conn {
    struct server *srv;
    struct conn *next; /* list of open connections, so nothing leaks on an early exit */
    int fd, id;
    aev_io reader, writer;
    aev_timer idle;
    char buf[16384]; /* bytes read and not yet echoed: buf[off..len) */
    size_t off, len;
};

struct server {
    aev_loop *loop;
    int listen_fd;
    aev_io acceptor;
    aev_time_t idle_timeout;
    int sndbuf; /* if > 0, the send buffer size of each connection (self-test) */
    struct conn *conns;
    int accepted, idle_closed, would_block;
};

static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
}

static void conn_close(struct conn *c, const char *why)
{
    struct server *s = c->srv;

    /* Stop the watchers before close(): epoll forgets a closed fd silently, and a stopped
     * watcher is never called again, even if its event is already pending. */
    aev_io_stop(&c->reader);
    aev_io_stop(&c->writer);
    aev_timer_stop(&c->idle);
    close(c->fd);
    printf("server: connection %d closed: %s\n", c->id, why);
    for (struct conn **p = &s->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    free(c);
}

/* Sends buf[off..len). Returns 1 when all is sent, 0 if the socket would block, or -errno.
 * MSG_NOSIGNAL: a peer that went away gives EPIPE here instead of killing us with SIGPIPE. */
static int conn_flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 1;
}

static void on_conn_readable(aev_watcher *w, unsigned events)
{
    struct conn *c = CONTAINER_OF(w, struct conn, reader.base);
    (void)events;

    ssize_t n = recv(c->fd, c->buf, sizeof c->buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* nothing after all: wait for the next event */
    if (n <= 0) {
        conn_close(c, n == 0 ? "peer closed" : aev_strerror(-errno));
        return;
    }
    /* The peer is alive: push the idle deadline back to a full timeout from now. */
    aev_timer_again(&c->idle);
    c->off = 0;
    c->len = (size_t)n;
    int rc = conn_flush(c);
    if (rc < 0) {
        conn_close(c, aev_strerror(rc));
    } else if (rc == 0) {
        /* The peer reads slower than it writes. Stop reading until the rest is out, so the
         * buffer never grows (back-pressure), and wait until the socket is writable. */
        c->srv->would_block++;
        aev_io_stop(&c->reader);
        aev_io_start(&c->writer);
    }
}

static void on_conn_writable(aev_watcher *w, unsigned events)
{
    struct conn *c = CONTAINER_OF(w, struct conn, writer.base);
    (void)events;

    int rc = conn_flush(c);
    if (rc < 0) {
        conn_close(c, aev_strerror(rc));
    } else if (rc == 1) {
        /* All sent: a writer left active would fire in every iteration; read again instead. */
        aev_io_stop(&c->writer);
        aev_io_start(&c->reader);
    }
}

static void on_conn_idle(aev_watcher *w, unsigned events)
{
    struct conn *c = CONTAINER_OF(w, struct conn, idle.base);
    (void)events;

    c->srv->idle_closed++;
    conn_close(c, "idle timeout");
}

static void conn_open(struct server *s, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL || set_nonblocking(fd) < 0) {
        fprintf(stderr, "server: cannot set up a connection\n");
        free(c);
        close(fd);
        return;
    }
    /* A small send buffer makes the socket "would block" early, exercising the writer. */
    if (s->sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf, sizeof s->sndbuf);
    c->srv = s;
    c->fd = fd;
    c->id = ++s->accepted;
    c->next = s->conns;
    s->conns = c;
    aev_io_init(&c->reader, s->loop, on_conn_readable, fd, AEV_READ);
    aev_io_init(&c->writer, s->loop, on_conn_writable, fd, AEV_WRITE);
    /* after 0 and repeat = timeout: aev_timer_again() then (re)starts it with the full timeout,
     * which is exactly "timeout from the last activity". */
    aev_timer_init(&c->idle, s->loop, on_conn_idle, 0, s->idle_timeout);
    aev_io_start(&c->reader);
    aev_timer_again(&c->idle);
    printf("server: connection %d accepted\n", c->id);
}

static void on_acceptable(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, acceptor.base);
    (void)events;

    /* The listening socket is non-blocking: accept until the kernel's queue is empty. */
    for (;;) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "server: accept: %s\n", aev_strerror(-errno));
            return;
        }
        conn_open(s, fd);
    }
}

/* Opens a non-blocking listening socket on 127.0.0.1:port; returns the fd or -errno. */
static int listen_loopback(int port, struct sockaddr_in *addr)
{
    socklen_t len = sizeof *addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)port);
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0 || set_nonblocking(fd) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* ---- the self-test: clients in the same loop --------------------------------------------- */

#define NCLIENTS 3 /* the last one stays silent */
#define BIG (256 * 1024)

struct client {
    struct selftest *t;
    int fd, id;
    aev_io io;
    char *data;            /* what this client sends; NULL for the silent client */
    size_t sent, received; /* progress through data[0..BIG) and through its echo */
    aev_time_t connected_at;
};

struct selftest {
    struct server *srv;
    struct client clients[NCLIENTS];
    int finished; /* clients that reached their expected end */
    bool failed;
    aev_timer guard;
};

static void test_fail(struct selftest *t, const char *what)
{
    fprintf(stderr, "tcp_echo: FAILED: %s\n", what);
    t->failed = true;
    aev_break(t->srv->loop, AEV_BREAK_ALL);
}

static void client_finish(struct client *cl)
{
    aev_io_stop(&cl->io);
    close(cl->fd); /* the server sees end of file and closes its side */
    cl->fd = -1;
    /* Once every client is done, stop accepting: aev_run() then returns as soon as the server
     * has closed its last connection, because no referenced watcher is left active. */
    if (++cl->t->finished == NCLIENTS)
        aev_io_stop(&cl->t->srv->acceptor);
}

/* Returns NULL, or what went wrong. */
static const char *client_step(struct client *cl, unsigned events)
{
    char buf[16384];

    if ((events & AEV_WRITE) && cl->sent < BIG) {
        ssize_t n = send(cl->fd, cl->data + cl->sent, BIG - cl->sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return "send failed";
        if (n > 0 && (cl->sent += (size_t)n) == BIG) {
            /* All sent: a writable socket would wake us in every iteration from now on. */
            aev_io_stop(&cl->io);
            aev_io_set(&cl->io, cl->fd, AEV_READ);
            aev_io_start(&cl->io);
        }
    }
    if (!(events & AEV_READ))
        return NULL;
    ssize_t n = recv(cl->fd, buf, sizeof buf, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? NULL : "recv failed";
    if (n == 0 && cl->data != NULL)
        return "the server closed a busy connection";
    if (n == 0) {
        aev_time_t waited = aev_time() - cl->connected_at;
        printf("client %d: closed by the server after %lld ms of silence\n", cl->id,
               (long long)(waited / AEV_MSEC(1)));
        client_finish(cl);
        /* "Not early" is checked strictly; lateness is not: the machine may be busy. */
        return waited < cl->t->srv->idle_timeout ? "closed before the idle timeout" : NULL;
    }
    if (cl->data == NULL || cl->received + (size_t)n > BIG ||
        memcmp(buf, cl->data + cl->received, (size_t)n) != 0)
        return "the echo differs from what was sent";
    if ((cl->received += (size_t)n) == BIG) {
        printf("client %d: %d bytes echoed intact\n", cl->id, BIG);
        client_finish(cl);
    }
    return NULL;
}

static void on_client_io(aev_watcher *w, unsigned events)
{
    struct client *cl = CONTAINER_OF(w, struct client, io.base);
    const char *err = events & AEV_ERROR ? "cannot watch a client" : client_step(cl, events);

    if (err != NULL)
        test_fail(cl->t, err);
}

static void on_guard(aev_watcher *w, unsigned events)
{
    (void)events;
    test_fail(w->data, "still running after 10 s");
}

static int start_client(struct selftest *t, struct client *cl, const struct sockaddr_in *addr)
{
    int small = 4096;

    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (cl->fd < 0)
        return -errno;
    /* A small receive window, set before connecting, keeps the server's writes partial. */
    setsockopt(cl->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    /* A blocking connect() is fine here: on loopback the kernel completes the handshake into
     * the listen backlog without waiting for our accept(). */
    if (connect(cl->fd, (const struct sockaddr *)addr, sizeof *addr) < 0 ||
        set_nonblocking(cl->fd) < 0)
        return -errno;
    cl->connected_at = aev_time();
    aev_io_init(&cl->io, t->srv->loop, on_client_io, cl->fd,
                cl->data ? AEV_READ | AEV_WRITE : AEV_READ);
    return aev_io_start(&cl->io);
}

static int start_selftest(struct selftest *t, struct server *s, const struct sockaddr_in *addr)
{
    t->srv = s;
    s->sndbuf = 4096;
    /* The guard is unreferenced: it must not keep aev_run() going by itself. */
    aev_timer_init(&t->guard, s->loop, on_guard, AEV_SEC(10), 0);
    t->guard.base.data = t;
    aev_timer_start(&t->guard);
    aev_unref(s->loop);
    for (int i = 0; i < NCLIENTS; i++) {
        struct client *cl = &t->clients[i];
        *cl = (struct client){.t = t, .fd = -1, .id = i + 1};
        if (i < NCLIENTS - 1 && (cl->data = malloc(BIG)) == NULL)
            return -ENOMEM;
        /* A different pattern per client, so that crossed connections would show. */
        for (size_t j = 0; cl->data && j < BIG; j++)
            cl->data[j] = (char)('a' + (j * 7 + j / 1000 + (size_t)i * 5) % 26);
    }
    for (int i = 0; i < NCLIENTS; i++) {
        int rc = start_client(t, &t->clients[i], addr);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void end_selftest(struct selftest *t)
{
    for (int i = 0; i < NCLIENTS; i++) {
        if (t->clients[i].fd >= 0) {
            aev_io_stop(&t->clients[i].io);
            close(t->clients[i].fd);
        }
        free(t->clients[i].data);
    }
    aev_ref(t->srv->loop); /* give back the reference that stopping the unreferenced guard takes */
    aev_timer_stop(&t->guard);
}

int main(int argc, char **argv)
{
    bool self_test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    struct server s = {.idle_timeout = self_test ? AEV_MSEC(300) : AEV_SEC(10)};
    struct selftest t = {0};
    struct sockaddr_in addr;

    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the order of lines when piped (CTest) */
    int rc = aev_loop_new(&s.loop, AEV_BACKEND_AUTO);
    if (rc < 0 || (s.listen_fd = listen_loopback(0, &addr)) < 0) {
        fprintf(stderr, "tcp_echo: setup failed: %s\n", aev_strerror(rc < 0 ? rc : s.listen_fd));
        return 1;
    }
    printf("server: listening on 127.0.0.1:%d, idle timeout %lld ms\n", ntohs(addr.sin_port),
           (long long)(s.idle_timeout / AEV_MSEC(1)));
    aev_io_init(&s.acceptor, s.loop, on_acceptable, s.listen_fd, AEV_READ);
    aev_io_start(&s.acceptor);
    if (self_test && (rc = start_selftest(&t, &s, &addr)) < 0)
        test_fail(&t, aev_strerror(rc));
    if (!t.failed && (rc = aev_run(s.loop, AEV_RUN_DEFAULT)) < 0)
        test_fail(&t, aev_strerror(rc));

    /* Clean up whatever a failed run left open; after success nothing is left. */
    aev_io_stop(&s.acceptor);
    while (s.conns)
        conn_close(s.conns, "shutting down");
    if (self_test)
        end_selftest(&t);
    aev_loop_destroy(s.loop);
    close(s.listen_fd);

    /* The self-test also demands that the partial-write path ran (the small buffers see to it). */
    bool ok = !t.failed && (!self_test || (t.finished == NCLIENTS && s.accepted == NCLIENTS &&
                                           s.idle_closed == 1 && s.would_block > 0));
    printf("tcp_echo: %d connections, %d closed as idle, %d writes would block: %s\n", s.accepted,
           s.idle_closed, s.would_block, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
