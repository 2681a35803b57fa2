/*
 * reuseport.c - one loop per core, each accepting on its own SO_REUSEPORT socket, with
 * connections handed from loop to loop through async watchers.
 *
 * Two server threads (fixed at 2 whatever the number of cores, so that runs are alike) each run
 * a loop with its own listening socket, all bound to the same 127.0.0.1 port with SO_REUSEPORT:
 * the kernel spreads incoming connections over the sockets, so there is no shared accept queue
 * and no lock between the loops. The kernel spreads by a hash of the addresses, not by load, so
 * each loop also passes every second connection it accepts (its 2nd, 4th, ...) to the other loop,
 * a stand-in for real load balancing. The protocol is trivial: reply "loop N\n" and close.
 *
 * The handoff needs two things, because a loop's watchers belong to its own thread:
 *  - a small queue behind a mutex, which carries the fds: the receiving loop takes them all;
 *  - an async watcher, which wakes the receiving loop. Sends coalesce: three sends before the
 *    loop looks give one callback, so the async cannot carry the fds itself, it only says "look
 *    at the queue", and the callback drains the whole queue.
 *
 * Self-test (always): the main thread acts as the client. It opens 10 connections, checks that
 * each got a reply and that both loops served some, then stops both loops (an async "quit"
 * watcher each) and joins them. Exits 0 on success, 1 otherwise; never waits more than ~10 s.
 *
 * Build against an installed library:
 *   cc reuseport.c $(pkg-config --cflags --libs asyncev) -pthread
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* SO_REUSEPORT is not POSIX; glibc declares it with this */

#include <asyncev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define NLOOPS 2
#define NCONNS 10
#define INBOX_SIZE 16

struct server {
    int index;
    aev_loop *loop;
    pthread_t thread;
    int listen_fd, run_rc;
    aev_io acceptor;
    struct server *peer; /* the loop that gets this loop's every second connection */

    /* The inbox: connections other loops handed to this one. */
    pthread_mutex_t lock;
    int inbox[INBOX_SIZE];
    int queued;
    aev_async wake;

    aev_async quit;  /* sent by main() to stop this loop */
    aev_timer guard; /* ends the loop if main() never does */
    int accepted, handed_off, taken_over, served;
};

/* The protocol. The accepted socket is blocking, but a few bytes into a fresh connection's
 * empty send buffer never wait, so this cannot stall the loop. */
static void serve(struct server *s, int fd)
{
    char reply[16];
    int len = snprintf(reply, sizeof reply, "loop %d\n", s->index);

    if (send(fd, reply, (size_t)len, MSG_NOSIGNAL) == len)
        s->served++;
    close(fd);
}

/* Any thread. Returns false if the inbox is full (the caller then serves the fd itself). */
static bool hand_off(struct server *to, int fd)
{
    pthread_mutex_lock(&to->lock);
    bool room = to->queued < INBOX_SIZE;
    if (room)
        to->inbox[to->queued++] = fd;
    pthread_mutex_unlock(&to->lock);
    /* After the unlock: the woken loop must find the fd in the queue. */
    if (room)
        aev_async_send(&to->wake);
    return room;
}

/* Loop thread: takes everything from the inbox, however many sends it took to get here. */
static void drain_inbox(struct server *s)
{
    int fds[INBOX_SIZE], n;

    pthread_mutex_lock(&s->lock);
    n = s->queued;
    memcpy(fds, s->inbox, (size_t)n * sizeof fds[0]);
    s->queued = 0;
    pthread_mutex_unlock(&s->lock);
    /* Serve outside the lock: a handing loop never waits for our work. */
    for (int i = 0; i < n; i++) {
        s->taken_over++;
        serve(s, fds[i]);
    }
}

static void on_wake(aev_watcher *w, unsigned events)
{
    (void)events;
    drain_inbox(CONTAINER_OF(w, struct server, wake.base));
}

static void on_acceptable(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, acceptor.base);
    (void)events;

    for (;;) { /* the listening socket is non-blocking: take all that is queued */
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0)
            return; /* EAGAIN: queue empty; any other error: retried at the next event */
        if (s->accepted++ % 2 == 1 && hand_off(s->peer, fd))
            s->handed_off++;
        else
            serve(s, fd);
    }
}

/* Stops every watcher of this loop: aev_run() then returns in the loop's thread. */
static void stop_all(struct server *s)
{
    drain_inbox(s); /* nothing should be left, but never leak a handed-off fd */
    aev_io_stop(&s->acceptor);
    aev_async_stop(&s->wake);
    aev_async_stop(&s->quit);
    aev_timer_stop(&s->guard);
}

static void on_quit(aev_watcher *w, unsigned events)
{
    (void)events;
    stop_all(CONTAINER_OF(w, struct server, quit.base));
}

static void on_guard(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, guard.base);
    (void)events;

    fprintf(stderr, "reuseport: loop %d: no quit after 10 s\n", s->index);
    s->run_rc = -ETIMEDOUT;
    stop_all(s);
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    int rc = aev_run(s->loop, AEV_RUN_DEFAULT);

    if (s->run_rc == 0)
        s->run_rc = rc;
    return NULL;
}

/* A non-blocking listening socket on 127.0.0.1:*port with SO_REUSEPORT; port 0 picks one and
 * stores it in *port. SO_REUSEPORT must be set on every socket before bind(). */
static int listen_shared(int *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*port)};
    socklen_t len = sizeof addr;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        perror("reuseport: listening socket");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

/* Creates the loop and its watchers here; the loop then belongs to the server's thread. */
static int setup_server(struct server *s, int index, int *port)
{
    s->index = index;
    s->listen_fd = listen_shared(port);
    if (s->listen_fd < 0 || aev_loop_new(&s->loop, AEV_BACKEND_AUTO) < 0)
        return -1;
    pthread_mutex_init(&s->lock, NULL);
    aev_io_init(&s->acceptor, s->loop, on_acceptable, s->listen_fd, AEV_READ);
    aev_async_init(&s->wake, s->loop, on_wake);
    aev_async_init(&s->quit, s->loop, on_quit);
    aev_timer_init(&s->guard, s->loop, on_guard, AEV_SEC(10), 0);
    if (aev_io_start(&s->acceptor) < 0 || aev_async_start(&s->wake) < 0 ||
        aev_async_start(&s->quit) < 0 || aev_timer_start(&s->guard) < 0)
        return -1;
    return 0;
}

/* The client: NCONNS connections at once, then one reply read from each. Counts replies per
 * loop in per_loop[]; returns the number of connections that got a well-formed reply. */
static int run_client(int port, int per_loop[NLOOPS])
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval limit = {5, 0}; /* a reply that never comes must not hang the test */
    int fds[NCONNS], ok = 0;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < NCONNS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] >= 0 && (setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) < 0 ||
                            connect(fds[i], (struct sockaddr *)&addr, sizeof addr) < 0))
            perror("reuseport: client connect");
    }
    for (int i = 0; i < NCONNS; i++) {
        char buf[32] = {0};
        size_t got = 0;
        ssize_t n;
        /* Read until the server closes: a TCP reply may arrive in pieces. */
        while (fds[i] >= 0 && got < sizeof buf - 1 &&
               (n = recv(fds[i], buf + got, sizeof buf - 1 - got, 0)) > 0)
            got += (size_t)n;
        int loop = -1;
        if (sscanf(buf, "loop %d\n", &loop) == 1 && loop >= 0 && loop < NLOOPS &&
            buf[got - 1] == '\n') {
            per_loop[loop]++;
            ok++;
        }
        printf("client: connection %d: %s", i + 1, loop >= 0 ? buf : "no valid reply\n");
        if (fds[i] >= 0)
            close(fds[i]);
    }
    return ok;
}

int main(void)
{
    static struct server servers[NLOOPS];
    int port = 0, per_loop[NLOOPS] = {0}, handed = 0, taken = 0;
    bool ok = true;

    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the order of lines when piped (CTest) */
    for (int i = 0; i < NLOOPS; i++) {
        servers[i].peer = &servers[(i + 1) % NLOOPS];
        if (setup_server(&servers[i], i, &port) < 0) /* the first one picks the port */
            return 1;
    }
    printf("%d loops listening on 127.0.0.1:%d\n", NLOOPS, port);
    for (int i = 0; i < NLOOPS; i++) {
        if (pthread_create(&servers[i].thread, NULL, server_main, &servers[i]) != 0)
            return 1;
    }

    int replies = run_client(port, per_loop);

    /* aev_async_send() is the one call allowed from this thread into the loops' threads. */
    for (int i = 0; i < NLOOPS; i++)
        aev_async_send(&servers[i].quit);
    for (int i = 0; i < NLOOPS; i++) {
        struct server *s = &servers[i];
        pthread_join(s->thread, NULL);
        printf("loop %d: accepted %d, handed off %d, took over %d, served %d\n", i, s->accepted,
               s->handed_off, s->taken_over, s->served);
        /* Both loops must have served, and exactly the connections the client saw them serve. */
        ok = ok && s->run_rc == 0 && s->served > 0 && s->served == per_loop[i];
        handed += s->handed_off;
        taken += s->taken_over;
        aev_loop_destroy(s->loop);
        close(s->listen_fd);
        pthread_mutex_destroy(&s->lock);
    }
    /* One loop accepted at least half the connections, so it handed at least two over; every
     * fd handed over must have been taken over. */
    ok = ok && replies == NCONNS && handed >= 2 && handed == taken;
    printf("reuseport: %d of %d connections answered: %s\n", replies, NCONNS, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
