/*
 * soak.c - a bounded-duration soak test: one loop under a mixed load, checked as it runs.
 *
 * The workload, all in this process, all on loopback:
 *  - The server (the main thread, one loop): a TCP echo server. Per connection a reader, a
 *    writer (started only while a send would block) and an idle timer re-armed with
 *    aev_timer_again() on every read and every write. Besides: one-shot "churn" timers
 *    restarted with random delays (and sometimes stopped and restarted from the middle of the
 *    heap), a repeating timer, a wall-clock periodic, a sampler (repeating timer) that reads RSS
 *    and counts open fds, async watchers fed by the sender threads, and a poster they post to.
 *  - Clients (CLIENTS threads, a loop each): CONNS connections each, connected without blocking,
 *    with a pipeline of up to PIPELINE requests of random size (mostly small, now and then big
 *    enough that the server's writes are partial). The bytes of a connection are a function of
 *    its seed and the offset, so every echoed byte is checked against what was sent. After a
 *    random number of requests a connection either closes and reconnects, or falls silent and
 *    waits for the server's idle timeout to close it.
 *  - Senders (SENDERS threads): bursts of aev_async_send() to async watchers of the server loop
 *    and of a "sink" loop (its own thread, nothing but async watchers: a lost wakeup there is a
 *    hang, not a delay), and aev_post() to the server's poster.
 *
 * What it checks (a failure is printed at once; the exit status is 1 if any happened):
 *  - Echo: every request is answered byte for byte; requests sent == responses received; bytes
 *    sent by the clients == read by the server == written by the server == read by the clients;
 *    the sum over connections of an FNV-1a hash of each connection's stream is the same on both
 *    sides; connections accepted == connected; closes by idle timeout agree on both sides.
 *  - Timers never fire early: before each start or again the program reads CLOCK_MONOTONIC
 *    itself (a conservative lower bound of the library's own reading), and each callback checks
 *    that the clock has reached that reading plus the timeout. One-shot timers (churn, idle,
 *    client think time, the end-of-run deadline) are checked exactly and give the lateness that
 *    is reported; repeating timers are checked against base + k * repeat for their k-th firing
 *    (a lower bound: a repeating timer that fell behind skips periods); the periodic likewise
 *    against the wall clock, except across a wall-clock step. A client also checks, on the
 *    server's idle close, that it was silent for at least the idle timeout.
 *  - Async sends are never lost, in the coalescing sense: each sender counts its sends in an
 *    atomic before each aev_async_send(); callbacks publish the counts they saw. After some
 *    bursts, and at the end, the sender waits until a callback has seen its last count (so a
 *    callback ran after that send and saw the sender's earlier writes). Posts run exactly once,
 *    in order per posting thread.
 *  - Resources stay flat after the warm-up: see RSS_SLACK_KIB for RSS and its tolerance. Open
 *    fds are counted exactly: every socket the program opens or closes is counted under a lock
 *    the sampler also holds while it lists /proc/self/fd, so "fds minus our sockets" must not
 *    change at all; and after everything is torn down the fd count must be what it was at start.
 *  - Teardown: every loop runs out of active watchers and aev_loop_destroy() succeeds.
 *
 * Usage: soak [--seconds N]     run for N seconds (default: $AEV_SOAK_SECONDS, else 20)
 * The backend is the library's default, or AEV_BACKEND from the environment; AEVT_WAKEUP=pipe
 * forces the self-pipe wakeup. Under valgrind (or AEVT_SLOW=1) the timeouts that only decide
 * how soon a hang is reported are longer, and RSS is reported but not bounded.
 */
#include "testutil.h" /* aevt_slow(), aevt_flags(), aevt_mono_ns(); no cmocka test runs here */

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define CLIENTS 2    /* client threads */
#define CONNS 8      /* connections per client thread */
#define SENDERS 3    /* async/post sender threads */
#define PIPELINE 3   /* requests in flight per connection */
#define CHURN 32     /* one-shot timers on the server, restarted at random */
#define CHUNK 16384  /* bytes per read or write */
#define SMALL 4096   /* most requests: 1..SMALL bytes */
#define BIG 196608   /* 1 in 32 requests: SMALL..BIG bytes */
#define POST_CAP 256 /* slots of the server's poster */
#define MAX_FAILS 20 /* failures printed; the rest are only counted */

#define SAMPLE_EVERY AEV_MSEC(250)

/* ---- failures, clocks, random numbers ---------------------------------------------------- */

static atomic_int g_failures;

#if defined(__GNUC__)
static void soak_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif

/* Any thread: reports a failure (the first MAX_FAILS are printed) and makes the exit status 1. */
static void soak_fail(const char *fmt, ...)
{
    if (atomic_fetch_add(&g_failures, 1) >= MAX_FAILS)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "soak: FAIL: %s\n", msg);
}

static int64_t mono_ns(void)
{
    return aevt_mono_ns();
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finaliser */
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *state)
{
    *state += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(*state);
}

static uint64_t rnd_below(uint64_t *state, uint64_t n)
{
    return rnd(state) % n;
}

/* Bytes [off, off + n) of the stream with this seed: each 8-byte word is mix64(seed + index). */
static void stream_fill(uint64_t seed, uint64_t off, unsigned char *buf, size_t n)
{
    size_t k = 0;
    while (k < n) {
        uint64_t pos = off + k;
        uint64_t word = mix64(seed + pos / 8);
        for (unsigned b = (unsigned)(pos % 8); b < 8 && k < n; b++, k++)
            buf[k] = (unsigned char)(word >> (8 * b));
    }
}

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
}

/* "op: errno N" in buf, for failure messages (aev_strerror() knows only the library's codes, and
 * strerror() need not be thread-safe). */
static const char *errno_text(char *buf, size_t size, const char *op, int err)
{
    snprintf(buf, size, "%s: errno %d", op, err);
    return buf;
}

/* ---- timer checks ------------------------------------------------------------------------ */

/* Per thread: firings checked, and the largest lateness of a one-shot timer. */
struct tstats {
    uint64_t fired;
    int64_t max_late;
    const char *max_what; /* the timer that was that late */
};

/*
 * A timer armed at `due` (the program's clock reading before the start, plus the timeout) fires
 * now: fails if that is early. `exact`: the due time is the timer's own (one-shot), so the
 * lateness counts; for repeating timers `due` is only a lower bound.
 */
static void tcheck(struct tstats *ts, int64_t due, bool exact, const char *what)
{
    int64_t now = mono_ns();
    ts->fired++;
    if (now < due) {
        soak_fail("%s timer fired %" PRId64 " ns early", what, due - now);
        return;
    }
    if (exact && now - due > ts->max_late) {
        ts->max_late = now - due;
        ts->max_what = what;
    }
}

/*
 * Pushes back a timeout after activity. aev_timer_again() also drops an expiry that is already
 * pending (io callbacks run before timer callbacks, so the activity and the expiry can meet in
 * one iteration): the idle check below relies on it.
 */
static void timeout_push_back(aev_timer *t)
{
    aev_timer_again(t);
}

/* ---- configuration and shared state ------------------------------------------------------ */

struct config {
    int64_t duration, warmup;
    int64_t idle_timeout;     /* server: silence before it closes a connection */
    int64_t response_timeout; /* client: no progress on requests in flight for this long */
    int64_t ack_timeout;      /* sender: no callback saw its send for this long */
    int64_t shutdown_timeout; /* after the deadline, everything must be torn down by then */
    bool slow;                /* valgrind or AEVT_SLOW: generous timeouts */
    bool bound_rss;           /* false where a tool keeps freed memory (valgrind, sanitizers) */
};

static struct config g_cfg;
static atomic_bool g_stopping; /* set at the deadline: wind down */

/* Every socket is opened and closed under this lock, and counted, so that the sampler, which
 * holds it while it counts /proc/self/fd, sees a count of our sockets that matches. */
static pthread_mutex_t g_fd_lock = PTHREAD_MUTEX_INITIALIZER;
static long g_sockets; /* under g_fd_lock */

static int sock_open(void)
{
    pthread_mutex_lock(&g_fd_lock);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0)
        g_sockets++;
    pthread_mutex_unlock(&g_fd_lock);
    return fd;
}

static int sock_accept(int listen_fd)
{
    pthread_mutex_lock(&g_fd_lock);
    int fd = accept(listen_fd, NULL, NULL);
    int err = errno;
    if (fd >= 0)
        g_sockets++;
    pthread_mutex_unlock(&g_fd_lock);
    errno = err;
    return fd;
}

static void sock_close(int fd)
{
    pthread_mutex_lock(&g_fd_lock);
    close(fd);
    g_sockets--;
    pthread_mutex_unlock(&g_fd_lock);
}

/* Open fds of the process (-1 if /proc/self/fd cannot be listed); the directory's own fd is
 * counted, which is the same in every sample. */
static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

/* Resident set size in KiB (-1 if /proc/self/statm cannot be read). */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size, resident;
    if (f == NULL)
        return -1;
    int got = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    return got == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

struct sample {
    int64_t t;    /* since the start of the run */
    long rss;     /* KiB */
    long fds;     /* all open fds */
    long sockets; /* ours among them */
};

static struct sample take_sample(int64_t t)
{
    struct sample s = {.t = t};
    pthread_mutex_lock(&g_fd_lock);
    s.fds = count_fds();
    s.sockets = g_sockets;
    pthread_mutex_unlock(&g_fd_lock);
    s.rss = rss_kib();
    return s;
}

/* ---- async targets: watchers the senders send to ----------------------------------------- */

/*
 * One loop's async watchers for the senders: `shared` is sent to by every sender, own[i] only by
 * sender i. sent_* are the senders' counts (written before each send), seen_* what callbacks
 * observed (published for the senders to wait on).
 */
struct target {
    const char *name;
    aev_loop *loop;
    aev_async shared;
    aev_async own[SENDERS];
    atomic_uint_fast64_t sent_shared[SENDERS], sent_own[SENDERS];
    atomic_uint_fast64_t seen_shared[SENDERS], seen_own[SENDERS];
    uint64_t callbacks; /* loop thread */
};

/* Publishes a count a callback saw; counts seen must never go backwards. */
static void target_observe(struct target *t, atomic_uint_fast64_t *sent, atomic_uint_fast64_t *seen)
{
    uint64_t v = atomic_load_explicit(sent, memory_order_relaxed);
    uint64_t before = atomic_load_explicit(seen, memory_order_relaxed);
    if (v < before)
        soak_fail("%s: an async callback saw count %" PRIu64 " after %" PRIu64, t->name, v, before);
    atomic_store_explicit(seen, v, memory_order_release);
}

static void on_async_shared(aev_watcher *w, unsigned events)
{
    struct target *t = CONTAINER_OF(w, struct target, shared.base);
    if (events != AEV_ASYNC)
        soak_fail("%s: shared async callback with events 0x%x", t->name, events);
    t->callbacks++;
    for (int i = 0; i < SENDERS; i++)
        target_observe(t, &t->sent_shared[i], &t->seen_shared[i]);
}

static void on_async_own(aev_watcher *w, unsigned events)
{
    struct target *t = w->data;
    int i = (int)((aev_async *)w - t->own);
    if (events != AEV_ASYNC)
        soak_fail("%s: async callback with events 0x%x", t->name, events);
    t->callbacks++;
    target_observe(t, &t->sent_own[i], &t->seen_own[i]);
}

static void target_init(struct target *t, const char *name, aev_loop *loop)
{
    t->name = name;
    t->loop = loop;
    aev_async_init(&t->shared, loop, on_async_shared);
    aev_async_start(&t->shared);
    for (int i = 0; i < SENDERS; i++) {
        aev_async_init(&t->own[i], loop, on_async_own);
        t->own[i].base.data = t;
        aev_async_start(&t->own[i]);
    }
}

/* Loop thread, once no sender can send any more: every count sent was seen. */
static void target_finish(struct target *t)
{
    for (int i = 0; i < SENDERS; i++) {
        if (atomic_load(&t->seen_own[i]) != atomic_load(&t->sent_own[i]) ||
            atomic_load(&t->seen_shared[i]) != atomic_load(&t->sent_shared[i]))
            soak_fail("%s: sender %d's last sends were never seen by a callback", t->name, i);
    }
    aev_async_stop(&t->shared);
    for (int i = 0; i < SENDERS; i++)
        aev_async_stop(&t->own[i]);
}

static uint64_t target_sends(struct target *t)
{
    uint64_t n = 0;
    for (int i = 0; i < SENDERS; i++)
        n += atomic_load(&t->sent_own[i]) + atomic_load(&t->sent_shared[i]);
    return n;
}

/* ---- the server --------------------------------------------------------------------------- */

struct sconn {
    struct server *srv;
    struct sconn *prev, *next;
    int fd;
    aev_io reader, writer;
    aev_timer idle;
    int64_t idle_due; /* program's clock at the last aev_timer_again() + idle timeout */
    uint64_t bytes_in, bytes_out, hash;
    size_t off, len; /* buf[off..len): read, not yet echoed */
    unsigned char buf[CHUNK];
};

struct churn {
    struct server *srv;
    aev_timer timer;
    int64_t due;
};

struct server {
    aev_loop *loop;
    int listen_fd;
    struct sockaddr_in addr;
    aev_io acceptor;
    struct sconn *conns;
    int open_conns;
    struct churn churn[CHURN];
    aev_timer beat; /* repeating */
    int64_t beat_due;
    aev_periodic tick;           /* wall clock */
    int64_t tick_due, tick_skew; /* wall-clock lower bound; wall minus monotonic at arming */
    uint64_t tick_steps;         /* wall-clock steps seen (checks skipped across them) */
    aev_timer sampler;           /* repeating */
    int64_t sampler_due;
    aev_timer deadline; /* one-shot: the end of the run */
    int64_t deadline_due;
    aev_timer guard; /* unreferenced: the shutdown must be over before it fires */
    aev_async control;
    aev_poster *poster;
    struct target target;
    int64_t start;
    uint64_t rng;
    struct tstats ts;
    bool finished;

    struct sample first, last;  /* at the start, and at the deadline */
    struct sample base;         /* the first after the warm-up (t < 0: none yet) */
    long rss_max;               /* after the warm-up */
    int rss_failed, fds_failed; /* each reported once */

    atomic_int clients_done, senders_done;
    atomic_uint_fast64_t post_ran[SENDERS]; /* last sequence number run, per sender */
    uint64_t posts_run;

    uint64_t accepted, closed_peer, closed_idle, idle_deferred, would_block;
    uint64_t bytes_in, bytes_out, hash_sum;
};

static struct server g_srv;

static void sconn_close(struct sconn *c, const char *why)
{
    struct server *s = c->srv;
    aev_io_stop(&c->reader);
    aev_io_stop(&c->writer);
    aev_timer_stop(&c->idle);
    sock_close(c->fd);
    if (why != NULL) {
        soak_fail("server: connection closed: %s", why);
    } else if (c->off != c->len) {
        soak_fail("server: connection closed with %zu bytes not echoed", c->len - c->off);
    }
    s->bytes_in += c->bytes_in;
    s->bytes_out += c->bytes_out;
    s->hash_sum += c->hash;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->open_conns--;
    free(c);
}

/* Activity: the idle timeout starts again from now. */
static void sconn_touch(struct sconn *c)
{
    c->idle_due = mono_ns() + g_cfg.idle_timeout;
    timeout_push_back(&c->idle);
}

/* Sends buf[off..len): 1 when all is out, 0 if the socket would block, or -errno. */
static int sconn_flush(struct sconn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        c->off += (size_t)n;
        c->bytes_out += (uint64_t)n;
    }
    c->off = c->len = 0;
    return 1;
}

static void on_sconn_readable(aev_watcher *w, unsigned events)
{
    struct sconn *c = CONTAINER_OF(w, struct sconn, reader.base);
    if (events & AEV_ERROR) {
        sconn_close(c, "the loop could not watch it");
        return;
    }
    ssize_t n = recv(c->fd, c->buf, sizeof c->buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n < 0) {
        char buf[64];
        sconn_close(c, errno_text(buf, sizeof buf, "recv", errno));
        return;
    }
    if (n == 0) {
        c->srv->closed_peer++;
        sconn_close(c, NULL);
        return;
    }
    sconn_touch(c);
    c->bytes_in += (uint64_t)n;
    c->hash = fnv1a(c->hash, c->buf, (size_t)n);
    c->off = 0;
    c->len = (size_t)n;
    int rc = sconn_flush(c);
    char buf[64];
    if (rc < 0) {
        sconn_close(c, errno_text(buf, sizeof buf, "send", -rc));
    } else if (rc == 0) {
        /* Back-pressure: read nothing more until this is out. */
        c->srv->would_block++;
        aev_io_stop(&c->reader);
        aev_io_start(&c->writer);
    }
}

static void on_sconn_writable(aev_watcher *w, unsigned events)
{
    struct sconn *c = CONTAINER_OF(w, struct sconn, writer.base);
    if (events & AEV_ERROR) {
        sconn_close(c, "the loop could not watch it");
        return;
    }
    size_t before = c->off;
    int rc = sconn_flush(c);
    if (rc < 0) {
        char buf[64];
        sconn_close(c, errno_text(buf, sizeof buf, "send", -rc));
        return;
    }
    if (rc == 1 || c->off != before)
        sconn_touch(c);
    if (rc == 1) {
        aev_io_stop(&c->writer);
        aev_io_start(&c->reader);
    }
}

static void on_sconn_idle(aev_watcher *w, unsigned events)
{
    struct sconn *c = CONTAINER_OF(w, struct sconn, idle.base);
    (void)events;
    tcheck(&c->srv->ts, c->idle_due, true, "server idle");
    /* Idle means that nothing came in and nothing waits to go out. Bytes (or the end of file)
     * already queued in the socket, or an echo waiting for the peer to read, mean that this
     * thread was not running (a loaded machine starves it for seconds): not idle, start over. */
    unsigned char b;
    if (aev_is_active(&c->writer.base) || recv(c->fd, &b, 1, MSG_PEEK) >= 0) {
        c->srv->idle_deferred++;
        sconn_touch(c);
        return;
    }
    c->srv->closed_idle++;
    sconn_close(c, NULL);
}

static void sconn_open(struct server *s, int fd)
{
    struct sconn *c = calloc(1, sizeof *c);
    if (c == NULL || set_nonblocking(fd) < 0) {
        soak_fail("server: cannot set up a connection");
        free(c);
        sock_close(fd);
        return;
    }
    /* Half the connections get a small send buffer: partial writes, the writer watcher. */
    int small = 16384;
    if (rnd_below(&s->rng, 2) == 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    c->srv = s;
    c->fd = fd;
    c->hash = FNV_OFFSET;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->open_conns++;
    s->accepted++;
    aev_io_init(&c->reader, s->loop, on_sconn_readable, fd, AEV_READ);
    aev_io_init(&c->writer, s->loop, on_sconn_writable, fd, AEV_WRITE);
    aev_timer_init(&c->idle, s->loop, on_sconn_idle, 0, g_cfg.idle_timeout);
    aev_io_start(&c->reader);
    sconn_touch(c);
}

static void on_acceptable(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, acceptor.base);
    (void)events;
    for (;;) {
        int fd = sock_accept(s->listen_fd);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                soak_fail("server: accept: errno %d", errno);
            return;
        }
        sconn_open(s, fd);
    }
}

/* A churn timer restarted with a random delay of 0..20 ms. */
static void churn_restart(struct churn *ch)
{
    int64_t after = (int64_t)rnd_below(&ch->srv->rng, (uint64_t)AEV_MSEC(20) + 1);
    aev_timer_stop(&ch->timer);
    aev_timer_set(&ch->timer, after, 0);
    ch->due = mono_ns() + after;
    aev_timer_start(&ch->timer);
}

static void on_churn(aev_watcher *w, unsigned events)
{
    struct churn *ch = CONTAINER_OF(w, struct churn, timer.base);
    struct server *s = ch->srv;
    (void)events;
    tcheck(&s->ts, ch->due, true, "churn");
    churn_restart(ch);
    /* Now and then move another one, wherever it sits in the heap. */
    if (rnd_below(&s->rng, 4) == 0)
        churn_restart(&s->churn[rnd_below(&s->rng, CHURN)]);
}

static void on_beat(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, beat.base);
    (void)events;
    tcheck(&s->ts, s->beat_due, false, "repeating");
    s->beat_due += aev_timer_repeat(&s->beat);
}

static void on_tick(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, tick.base);
    (void)events;
    int64_t wall = wall_ns(), skew = wall - mono_ns();
    s->ts.fired++;
    if (llabs(skew - s->tick_skew) > AEV_MSEC(1)) {
        /* The wall clock was stepped: the library reschedules, the bound is void. */
        s->tick_steps++;
        s->tick_skew = skew;
        s->tick_due = aev_periodic_at(&s->tick);
        return;
    }
    if (wall < s->tick_due)
        soak_fail("periodic fired %" PRId64 " ns early by the wall clock", s->tick_due - wall);
    s->tick_due += AEV_MSEC(50);
}

/*
 * RSS is bounded only where the allocator is the C library's (valgrind and the sanitizers keep
 * freed blocks in quarantine on purpose, and their own memory grows): after the warm-up it may
 * exceed the first post-warm-up sample by at most RSS_SLACK_KIB. Steady state allocates nothing
 * per request (one struct of ~16.5 KiB per server connection, freed at its close), and runs on
 * the 2-vCPU VM grew by at most 20 KiB after the warm-up, in 20 s and in 3 min. The slack covers
 * what can move RSS without a leak, with a wide margin: glibc's per-thread arenas keep freed
 * chunks and trim lazily, its mmap threshold moves up after the first large free, and deeper
 * call chains touch a few more stack pages (each a few to a few hundred KiB). A leak of 64 bytes
 * per request (a default run makes some 50,000 requests after the warm-up) or of one connection
 * struct per connection (some 300) exceeds it.
 */
#define RSS_SLACK_KIB 1024

/* fds besides our sockets: constant from the first sample on (all loops exist by then). */
static long other_fds(const struct sample *x)
{
    return x->fds - x->sockets;
}

static void on_sample(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, sampler.base);
    (void)events;
    tcheck(&s->ts, s->sampler_due, false, "sampler");
    s->sampler_due += SAMPLE_EVERY;
    struct sample x = take_sample(mono_ns() - s->start);
    /* A loop may briefly hold an extra fd (e.g. while it rebuilds its epoll set): a change must
     * persist over a few quick re-samples to count. */
    for (int i = 0; i < 5 && x.fds >= 0 && other_fds(&x) != other_fds(&s->first); i++) {
        sleep_ns(AEV_MSEC(2));
        x = take_sample(mono_ns() - s->start);
    }
    if (x.fds >= 0 && other_fds(&x) != other_fds(&s->first) && !s->fds_failed++)
        soak_fail("fds: %ld open besides our %ld sockets at %.1f s, %ld at the start",
                  other_fds(&x), x.sockets, (double)x.t / 1e9, other_fds(&s->first));
    if (x.t < g_cfg.warmup)
        return;
    if (s->base.t < 0)
        s->base = x;
    if (x.rss > s->rss_max)
        s->rss_max = x.rss;
    if (g_cfg.bound_rss && s->base.rss >= 0 && x.rss > s->base.rss + RSS_SLACK_KIB &&
        !s->rss_failed++)
        soak_fail("RSS grew from %ld KiB at %.1f s to %ld KiB at %.1f s (slack %d KiB)",
                  s->base.rss, (double)s->base.t / 1e9, x.rss, (double)x.t / 1e9, RSS_SLACK_KIB);
}

static void on_deadline(aev_watcher *w, unsigned events);
static void on_guard(aev_watcher *w, unsigned events);
static void on_control(aev_watcher *w, unsigned events);

/* Sets up the server on the main thread; 0 or -errno. */
static int server_init(struct server *s)
{
    socklen_t len = sizeof s->addr;
    int rc = aev_loop_new(&s->loop, aevt_flags());
    if (rc < 0)
        return rc;
    s->rng = (uint64_t)mono_ns();
    s->listen_fd = sock_open();
    if (s->listen_fd < 0)
        return -errno;
    s->addr.sin_family = AF_INET;
    s->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->listen_fd, (struct sockaddr *)&s->addr, sizeof s->addr) < 0 ||
        listen(s->listen_fd, 128) < 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&s->addr, &len) < 0 ||
        set_nonblocking(s->listen_fd) < 0)
        return -errno;
    aev_io_init(&s->acceptor, s->loop, on_acceptable, s->listen_fd, AEV_READ);
    rc = aev_poster_new(&s->poster, s->loop, POST_CAP);
    if (rc < 0)
        return rc;
    target_init(&s->target, "server", s->loop);
    aev_async_init(&s->control, s->loop, on_control);
    for (int i = 0; i < CHURN; i++) {
        s->churn[i].srv = s;
        aev_timer_init(&s->churn[i].timer, s->loop, on_churn, 0, 0);
    }
    aev_timer_init(&s->beat, s->loop, on_beat, AEV_MSEC(3), AEV_MSEC(7));
    aev_periodic_init(&s->tick, s->loop, on_tick, 0, AEV_MSEC(50), NULL);
    aev_timer_init(&s->sampler, s->loop, on_sample, SAMPLE_EVERY, SAMPLE_EVERY);
    aev_timer_init(&s->deadline, s->loop, on_deadline, g_cfg.duration, 0);
    aev_timer_init(&s->guard, s->loop, on_guard, g_cfg.shutdown_timeout, 0);
    return 0;
}

/* Starts everything; the run's clock starts here. */
static void server_start(struct server *s)
{
    s->start = mono_ns();
    s->first = take_sample(0);
    s->base.t = -1;
    s->rss_max = -1;
    aev_io_start(&s->acceptor);
    aev_async_start(&s->control);
    for (int i = 0; i < CHURN; i++)
        churn_restart(&s->churn[i]);
    s->beat_due = mono_ns() + AEV_MSEC(3);
    aev_timer_start(&s->beat);
    s->tick_skew = wall_ns() - mono_ns();
    /* The first slot is the first multiple of the interval after the start. */
    s->tick_due = (wall_ns() / AEV_MSEC(50) + 1) * AEV_MSEC(50);
    aev_periodic_start(&s->tick);
    s->sampler_due = mono_ns() + SAMPLE_EVERY;
    aev_timer_start(&s->sampler);
    s->deadline_due = mono_ns() + g_cfg.duration;
    aev_timer_start(&s->deadline);
}

/* ---- clients ------------------------------------------------------------------------------ */

enum cstate { C_CLOSED, C_CONNECTING, C_ACTIVE, C_DRAINING, C_IDLE };

struct cconn {
    struct client *cl;
    int fd;
    enum cstate state;
    aev_io io;
    unsigned watching; /* the io watcher's events while active */
    aev_timer think;   /* a pause before the next request */
    int64_t think_due;
    aev_timer response; /* no progress while requests are in flight: fail */
    uint64_t seed;
    uint64_t target, sent, received; /* stream offsets: requested, written, echoed back */
    uint64_t ends[PIPELINE];         /* end offsets of the requests in flight, oldest first */
    unsigned inflight;
    unsigned left;           /* requests still to start on this connection */
    bool go_idle;            /* after the last one: wait for the server's idle close */
    int64_t last_send_start; /* before the last send(): the server read after this */
    uint64_t hash;           /* FNV-1a of the bytes sent */
};

struct client {
    int index;
    aev_loop *loop;
    pthread_t thread;
    atomic_bool done;
    aev_async stop;
    bool stopping;
    struct cconn conns[CONNS];
    uint64_t rng;
    struct tstats ts;
    uint64_t requests, responses, bytes_sent, bytes_received, hash_sum;
    uint64_t connects, closes, idle_closes, idle_abandoned;
    unsigned char out[CHUNK], in[CHUNK], want[CHUNK];
};

static struct client g_clients[CLIENTS];

static void cconn_connect(struct cconn *cn);

static void cconn_watch(struct cconn *cn, unsigned events)
{
    if (cn->watching == events)
        return;
    aev_io_stop(&cn->io);
    cn->watching = events;
    if (events == 0)
        return;
    aev_io_set(&cn->io, cn->fd, events);
    aev_io_start(&cn->io);
}

/* Closes the connection; opens a new one unless the client is stopping. */
static void cconn_close(struct cconn *cn)
{
    struct client *cl = cn->cl;
    cconn_watch(cn, 0);
    aev_timer_stop(&cn->think);
    aev_timer_stop(&cn->response);
    sock_close(cn->fd);
    cn->fd = -1;
    if (cn->state != C_CONNECTING) {
        cl->closes++;
        cl->hash_sum += cn->hash;
    }
    cn->state = C_CLOSED;
    if (!cl->stopping)
        cconn_connect(cn);
}

static void cconn_failed(struct cconn *cn, const char *what)
{
    soak_fail("client %d: %s (sent %" PRIu64 ", received %" PRIu64 ", state %d)", cn->cl->index,
              what, cn->sent, cn->received, (int)cn->state);
    cconn_close(cn);
}

/* Writes what is requested and not yet written, as far as the socket takes it. */
static bool cconn_write(struct cconn *cn)
{
    struct client *cl = cn->cl;
    while (cn->sent < cn->target) {
        size_t n = cn->target - cn->sent < CHUNK ? (size_t)(cn->target - cn->sent) : CHUNK;
        stream_fill(cn->seed, cn->sent, cl->out, n);
        cn->last_send_start = mono_ns();
        ssize_t r = send(cn->fd, cl->out, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r < 0) {
            char buf[64];
            cconn_failed(cn, errno_text(buf, sizeof buf, "send", errno));
            return false;
        }
        cn->hash = fnv1a(cn->hash, cl->out, (size_t)r);
        cn->sent += (uint64_t)r;
        cl->bytes_sent += (uint64_t)r;
    }
    return true;
}

/* What the io watcher should wait for in the current state. */
static void cconn_rewatch(struct cconn *cn)
{
    unsigned ev = AEV_READ;
    if (cn->state == C_CONNECTING)
        ev = AEV_WRITE;
    else if (cn->sent < cn->target)
        ev |= AEV_WRITE;
    cconn_watch(cn, ev);
}

/* Starts requests while the pipeline has room; ends the connection when it is done. */
static void cconn_advance(struct cconn *cn)
{
    struct client *cl = cn->cl;
    /* An expired think timer is inactive but still pending until its callback has run (io
     * callbacks come first in an iteration): it must not be restarted before that, or the
     * pending expiry would run as the restarted timer's. */
    while (cn->state == C_ACTIVE && cn->inflight < PIPELINE && cn->left > 0 &&
           !aev_is_active(&cn->think.base) && !aev_is_pending(&cn->think.base)) {
        if (rnd_below(&cl->rng, 16) == 0) {
            int64_t after = (int64_t)rnd_below(&cl->rng, (uint64_t)AEV_MSEC(3) + 1);
            aev_timer_set(&cn->think, after, 0);
            cn->think_due = mono_ns() + after;
            aev_timer_start(&cn->think);
            break;
        }
        uint64_t size = rnd_below(&cl->rng, 32) == 0 ? SMALL + rnd_below(&cl->rng, BIG - SMALL)
                                                     : 1 + rnd_below(&cl->rng, SMALL);
        cn->target += size;
        cn->ends[cn->inflight++] = cn->target;
        cn->left--;
        cl->requests++;
        if (cn->inflight == 1)
            aev_timer_again(&cn->response);
    }
    if (cn->state == C_ACTIVE && cn->left == 0)
        cn->state = C_DRAINING;
    if (!cconn_write(cn))
        return;
    if (cn->state == C_DRAINING && cn->inflight == 0) {
        if (cn->go_idle && !cl->stopping) {
            cn->state = C_IDLE; /* nothing more to say: the server's idle timer must end it */
        } else {
            cconn_close(cn);
            return;
        }
    }
    cconn_rewatch(cn);
}

static void cconn_read(struct cconn *cn)
{
    struct client *cl = cn->cl;
    ssize_t n = recv(cn->fd, cl->in, sizeof cl->in, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n < 0) {
        char buf[64];
        cconn_failed(cn, errno_text(buf, sizeof buf, "recv", errno));
        return;
    }
    if (n == 0) {
        if (cn->state != C_IDLE) {
            cconn_failed(cn, "the server closed a busy connection");
            return;
        }
        int64_t silent = mono_ns() - cn->last_send_start;
        if (silent < g_cfg.idle_timeout)
            soak_fail("client %d: closed as idle after %" PRId64 " ms of silence, before the "
                      "%" PRId64 " ms timeout",
                      cl->index, silent / AEV_MSEC(1), g_cfg.idle_timeout / AEV_MSEC(1));
        cl->idle_closes++;
        cconn_close(cn);
        return;
    }
    if (cn->received + (uint64_t)n > cn->sent) {
        cconn_failed(cn, "echo of bytes never sent");
        return;
    }
    stream_fill(cn->seed, cn->received, cl->want, (size_t)n);
    if (memcmp(cl->want, cl->in, (size_t)n) != 0) {
        size_t at = 0;
        while (cl->want[at] == cl->in[at])
            at++;
        soak_fail("client %d: echo differs at stream offset %" PRIu64, cl->index,
                  cn->received + at);
        cconn_close(cn);
        return;
    }
    cn->received += (uint64_t)n;
    cl->bytes_received += (uint64_t)n;
    while (cn->inflight > 0 && cn->received >= cn->ends[0]) {
        memmove(cn->ends, cn->ends + 1, (cn->inflight - 1) * sizeof cn->ends[0]);
        cn->inflight--;
        cl->responses++;
    }
    if (cn->inflight > 0)
        timeout_push_back(&cn->response); /* progress */
    else
        aev_timer_stop(&cn->response);
    cconn_advance(cn);
}

static void on_cconn_io(aev_watcher *w, unsigned events)
{
    struct cconn *cn = CONTAINER_OF(w, struct cconn, io.base);
    if (events & AEV_ERROR) {
        cconn_failed(cn, "the loop could not watch it");
        return;
    }
    if (cn->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            char buf[64];
            cconn_failed(cn, errno_text(buf, sizeof buf, "connect", err));
            return;
        }
        cn->cl->connects++;
        cn->state = C_ACTIVE;
        if (cn->cl->stopping)
            cn->left = 0;
        cconn_advance(cn);
        return;
    }
    if (events & AEV_READ) {
        int fd = cn->fd;
        cconn_read(cn);
        if (cn->fd != fd || cn->state == C_CONNECTING)
            return; /* closed (and maybe reopened) */
    }
    if (events & AEV_WRITE) {
        if (cconn_write(cn))
            cconn_rewatch(cn);
    }
}

static void on_think(aev_watcher *w, unsigned events)
{
    struct cconn *cn = CONTAINER_OF(w, struct cconn, think.base);
    (void)events;
    tcheck(&cn->cl->ts, cn->think_due, true, "client think");
    cconn_advance(cn);
}

static void on_response_timeout(aev_watcher *w, unsigned events)
{
    struct cconn *cn = CONTAINER_OF(w, struct cconn, response.base);
    (void)events;
    cconn_failed(cn, "no progress on a request in flight");
}

/* Opens a connection without blocking; its first callback (writable) completes it. */
static void cconn_connect(struct cconn *cn)
{
    struct client *cl = cn->cl;
    cn->fd = sock_open();
    if (cn->fd < 0 || set_nonblocking(cn->fd) < 0) {
        soak_fail("client %d: socket: errno %d", cl->index, errno);
        if (cn->fd >= 0)
            sock_close(cn->fd);
        cn->fd = -1;
        return;
    }
    cn->state = C_CONNECTING;
    cn->seed = rnd(&cl->rng);
    cn->target = cn->sent = cn->received = 0;
    cn->inflight = 0;
    cn->left = 10 + (unsigned)rnd_below(&cl->rng, 300);
    cn->go_idle = rnd_below(&cl->rng, 4) == 0;
    cn->hash = FNV_OFFSET;
    if (connect(cn->fd, (const struct sockaddr *)&g_srv.addr, sizeof g_srv.addr) < 0 &&
        errno != EINPROGRESS) {
        /* Not through cconn_failed(): its reconnect would come straight back here. */
        soak_fail("client %d: connect: errno %d", cl->index, errno);
        sock_close(cn->fd);
        cn->fd = -1;
        cn->state = C_CLOSED;
        return;
    }
    /* Connected already or in progress: either way the socket becomes writable. The fd may
     * reuse a number just closed: aev_io_set() (in cconn_watch) says it is a new file. */
    cn->watching = 0;
    cconn_watch(cn, AEV_WRITE);
}

static void on_client_stop(aev_watcher *w, unsigned events)
{
    struct client *cl = CONTAINER_OF(w, struct client, stop.base);
    (void)events;
    cl->stopping = true;
    aev_async_stop(&cl->stop);
    /* A connection still connecting is left to finish: the server may have accepted it already,
     * and both ends must count it. It closes as soon as it is connected. */
    for (int i = 0; i < CONNS; i++) {
        struct cconn *cn = &cl->conns[i];
        if (cn->state == C_IDLE) {
            cl->idle_abandoned++;
            cconn_close(cn);
        } else if (cn->state == C_ACTIVE || cn->state == C_DRAINING) {
            /* No new requests; the ones in flight are still checked, then it closes. */
            aev_timer_stop(&cn->think);
            cn->left = 0;
            cn->state = C_DRAINING;
            cconn_advance(cn);
        }
    }
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    for (int i = 0; i < CONNS; i++)
        cconn_connect(&cl->conns[i]);
    int rc = aev_run(cl->loop, AEV_RUN_DEFAULT);
    if (rc != 0)
        soak_fail("client %d: aev_run returned %d", cl->index, rc);
    for (int i = 0; i < CONNS; i++) {
        if (cl->conns[i].state != C_CLOSED)
            soak_fail("client %d: connection %d left open", cl->index, i);
    }
    atomic_fetch_add(&g_srv.clients_done, 1);
    aev_async_send(&g_srv.control);
    atomic_store(&cl->done, true);
    return NULL;
}

static int client_init(struct client *cl, int index)
{
    cl->index = index;
    cl->rng = (uint64_t)mono_ns() ^ ((uint64_t)index << 56);
    int rc = aev_loop_new(&cl->loop, aevt_flags());
    if (rc < 0)
        return rc;
    aev_async_init(&cl->stop, cl->loop, on_client_stop);
    aev_async_start(&cl->stop);
    for (int i = 0; i < CONNS; i++) {
        struct cconn *cn = &cl->conns[i];
        cn->cl = cl;
        cn->fd = -1;
        aev_io_init(&cn->io, cl->loop, on_cconn_io, 0, AEV_READ);
        aev_timer_init(&cn->think, cl->loop, on_think, 0, 0);
        aev_timer_init(&cn->response, cl->loop, on_response_timeout, 0, g_cfg.response_timeout);
    }
    return 0;
}

/* ---- the sink: a quiet loop with nothing but async watchers ------------------------------- */

struct sink {
    aev_loop *loop;
    pthread_t thread;
    atomic_bool done;
    struct target target;
    aev_async stop;
};

static struct sink g_sink;

static void on_sink_stop(aev_watcher *w, unsigned events)
{
    struct sink *k = CONTAINER_OF(w, struct sink, stop.base);
    (void)events;
    target_finish(&k->target);
    aev_async_stop(&k->stop);
}

static void *sink_main(void *arg)
{
    struct sink *k = arg;
    int rc = aev_run(k->loop, AEV_RUN_DEFAULT);
    if (rc != 0)
        soak_fail("sink: aev_run returned %d", rc);
    atomic_store(&k->done, true);
    return NULL;
}

/* ---- senders ------------------------------------------------------------------------------ */

struct sender {
    int index;
    pthread_t thread;
    atomic_bool done;
    uint64_t rng;
    uint64_t acks, posts, posts_full;
};

static struct sender g_senders[SENDERS];

/* Waits until *seen reaches want; false after the ack timeout. */
static bool wait_seen(atomic_uint_fast64_t *seen, uint64_t want)
{
    int64_t until = mono_ns() + g_cfg.ack_timeout;
    while (atomic_load_explicit(seen, memory_order_acquire) < want) {
        if (mono_ns() > until)
            return false;
        sleep_ns(AEV_USEC(50));
    }
    return true;
}

/* Waits until callbacks have seen every send this sender made, on both loops. */
static bool sender_wait_acks(struct sender *sd)
{
    struct target *targets[2] = {&g_srv.target, &g_sink.target};
    int i = sd->index;
    for (int k = 0; k < 2; k++) {
        struct target *t = targets[k];
        if (!wait_seen(&t->seen_own[i], atomic_load(&t->sent_own[i]))) {
            soak_fail("sender %d: no callback saw its last send to its own watcher on %s "
                      "within %" PRId64 " s: a lost async send",
                      i, t->name, g_cfg.ack_timeout / AEV_SEC(1));
            return false;
        }
        if (!wait_seen(&t->seen_shared[i], atomic_load(&t->sent_shared[i]))) {
            soak_fail("sender %d: no callback saw its last send to the shared watcher on %s "
                      "within %" PRId64 " s: a lost async send",
                      i, t->name, g_cfg.ack_timeout / AEV_SEC(1));
            return false;
        }
    }
    sd->acks++;
    return true;
}

/* Runs on the server loop: posts of each sender arrive once each, in order. */
static void on_post(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    int i = (int)(v % SENDERS);
    uint64_t seq = (uint64_t)(v / SENDERS);
    uint64_t last = atomic_load_explicit(&g_srv.post_ran[i], memory_order_relaxed);
    if (seq != last + 1)
        soak_fail("post %" PRIu64 " of sender %d ran after post %" PRIu64, seq, i, last);
    g_srv.posts_run++;
    atomic_store_explicit(&g_srv.post_ran[i], seq, memory_order_release);
}

static void sender_post(struct sender *sd)
{
    uintptr_t arg = (uintptr_t)(sd->posts + 1) * SENDERS + (uintptr_t)sd->index;
    int rc = aev_post(g_srv.poster, on_post, (void *)arg);
    if (rc == 0)
        sd->posts++;
    else if (rc == -EAGAIN)
        sd->posts_full++; /* the queue is full: nothing was queued, fine */
    else
        soak_fail("sender %d: aev_post: %s", sd->index, aev_strerror(rc));
}

static void *sender_main(void *arg)
{
    struct sender *sd = arg;
    struct target *targets[2] = {&g_srv.target, &g_sink.target};
    int i = sd->index;
    bool ok = true;
    while (ok && !atomic_load(&g_stopping)) {
        int burst = 1 + (int)rnd_below(&sd->rng, 64);
        for (int b = 0; b < burst; b++) {
            struct target *t = targets[rnd_below(&sd->rng, 2)];
            /* The count is written before the send; the callback run for it must see it. */
            if (rnd_below(&sd->rng, 2) == 0) {
                atomic_fetch_add_explicit(&t->sent_own[i], 1, memory_order_relaxed);
                aev_async_send(&t->own[i]);
            } else {
                atomic_fetch_add_explicit(&t->sent_shared[i], 1, memory_order_relaxed);
                aev_async_send(&t->shared);
            }
            if (rnd_below(&sd->rng, 8) == 0)
                sender_post(sd);
        }
        if (rnd_below(&sd->rng, 4) == 0)
            ok = sender_wait_acks(sd);
        /* Mostly a pause, so that the loops go to sleep and must be woken. */
        if (rnd_below(&sd->rng, 4) != 0)
            sleep_ns((int64_t)rnd_below(&sd->rng, (uint64_t)AEV_USEC(2000)));
    }
    if (ok && sender_wait_acks(sd)) {
        if (!wait_seen(&g_srv.post_ran[i], sd->posts))
            soak_fail("sender %d: posts not run within %" PRId64 " s", i,
                      g_cfg.ack_timeout / AEV_SEC(1));
    }
    atomic_fetch_add(&g_srv.senders_done, 1);
    aev_async_send(&g_srv.control);
    atomic_store(&sd->done, true);
    return NULL;
}

/* ---- the end of the run ------------------------------------------------------------------- */

static void on_deadline(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, deadline.base);
    (void)events;
    tcheck(&s->ts, s->deadline_due, true, "deadline");
    s->last = take_sample(mono_ns() - s->start);
    atomic_store(&g_stopping, true);
    for (int i = 0; i < CLIENTS; i++)
        aev_async_send(&g_clients[i].stop);
    /* The guard must not keep the loop running by itself. */
    aev_timer_start(&s->guard);
    aev_unref(s->loop);
}

static void on_guard(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, guard.base);
    (void)events;
    fprintf(stderr,
            "soak: FAIL: not torn down %" PRId64 " s after the deadline: %d/%d clients and "
            "%d/%d senders done, %d connections open\n",
            g_cfg.shutdown_timeout / AEV_SEC(1), atomic_load(&s->clients_done), CLIENTS,
            atomic_load(&s->senders_done), SENDERS, s->open_conns);
    abort(); /* threads may hang: no orderly way out */
}

/* Server loop: once every client and sender is done, stop all but the connections, which close
 * as the clients' closes arrive; aev_run() then returns. */
static void on_control(aev_watcher *w, unsigned events)
{
    struct server *s = CONTAINER_OF(w, struct server, control.base);
    (void)events;
    if (s->finished || atomic_load(&s->clients_done) < CLIENTS ||
        atomic_load(&s->senders_done) < SENDERS)
        return;
    s->finished = true;
    aev_async_stop(&s->control);
    aev_io_stop(&s->acceptor);
    for (int i = 0; i < CHURN; i++)
        aev_timer_stop(&s->churn[i].timer);
    aev_timer_stop(&s->beat);
    aev_periodic_stop(&s->tick);
    aev_timer_stop(&s->sampler);
    target_finish(&s->target);
    int left = aev_poster_destroy(s->poster);
    s->poster = NULL;
    if (left != 0)
        soak_fail("server: %d posts never ran", left);
    aev_async_send(&g_sink.stop);
    aev_ref(s->loop); /* give back the reference that stopping the unreferenced guard takes */
    aev_timer_stop(&s->guard);
}

/* Joins a thread that sets *done as it returns; one that does not within the shutdown timeout
 * is hung (e.g. a loop asleep after a lost wakeup): the process cannot end in order. */
static void join_or_die(pthread_t thread, atomic_bool *done, const char *what, int index)
{
    int64_t until = mono_ns() + g_cfg.shutdown_timeout;
    while (!atomic_load(done)) {
        if (mono_ns() > until) {
            soak_fail("%s %d did not finish within %" PRId64 " s of the end", what, index,
                      g_cfg.shutdown_timeout / AEV_SEC(1));
            _exit(1);
        }
        sleep_ns(AEV_MSEC(1));
    }
    pthread_join(thread, NULL);
}

/* ---- main --------------------------------------------------------------------------------- */

static bool under_sanitizer(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

static int parse_seconds(int argc, char **argv, long *seconds)
{
    const char *v = getenv("AEV_SOAK_SECONDS");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--seconds N]   (default: $AEV_SOAK_SECONDS, else 20)\n",
                    argv[0]);
            return -1;
        }
    }
    *seconds = 20;
    if (v != NULL) {
        char *end;
        *seconds = strtol(v, &end, 10);
        if (end == v || *end != '\0' || *seconds < 2 || *seconds > 7 * 24 * 3600) {
            fprintf(stderr, "soak: the duration must be 2..604800 seconds, not '%s'\n", v);
            return -1;
        }
    }
    return 0;
}

static void on_alarm(int sig)
{
    static const char msg[] = "soak: FAIL: watchdog: the process is still running\n";
    (void)sig;
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

int main(int argc, char **argv)
{
    long seconds;
    if (parse_seconds(argc, argv, &seconds) < 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);

    g_cfg.slow = aevt_slow();
    g_cfg.bound_rss = !g_cfg.slow && !under_sanitizer();
    g_cfg.duration = AEV_SEC(seconds);
    /* A quarter of the run, at least 2 s and at most 60 s: arenas and buffers reach their
     * working size within the first seconds. */
    g_cfg.warmup = g_cfg.duration / 4;
    if (g_cfg.warmup < AEV_SEC(2))
        g_cfg.warmup = AEV_SEC(2);
    if (g_cfg.warmup > AEV_SEC(60))
        g_cfg.warmup = AEV_SEC(60);
    /* Longer than a busy client is ever silent, even on a loaded machine. */
    g_cfg.idle_timeout = g_cfg.slow ? AEV_SEC(10) : AEV_SEC(3);
    g_cfg.response_timeout = g_cfg.slow ? AEV_SEC(60) : AEV_SEC(15);
    g_cfg.ack_timeout = g_cfg.slow ? AEV_SEC(60) : AEV_SEC(15);
    g_cfg.shutdown_timeout = g_cfg.slow ? AEV_SEC(180) : AEV_SEC(60);
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)(seconds + g_cfg.shutdown_timeout / AEV_SEC(1) + 60));

    long fds_at_start = count_fds();
    struct server *s = &g_srv;
    int rc = server_init(s);
    for (int i = 0; rc == 0 && i < CLIENTS; i++)
        rc = client_init(&g_clients[i], i);
    if (rc == 0)
        rc = aev_loop_new(&g_sink.loop, aevt_flags());
    if (rc < 0) {
        fprintf(stderr, "soak: setup failed: %s\n", aev_strerror(rc));
        return 1;
    }
    target_init(&g_sink.target, "sink", g_sink.loop);
    aev_async_init(&g_sink.stop, g_sink.loop, on_sink_stop);
    aev_async_start(&g_sink.stop);
    printf("soak: backend %s%s, %ld s (warm-up %.1f s), %d client threads x %d connections, "
           "%d sender threads%s\n",
           aev_backend_name(s->loop), aevt_flags() ? " (pipe wakeup)" : "", seconds,
           (double)g_cfg.warmup / 1e9, CLIENTS, CONNS, SENDERS,
           g_cfg.slow ? ", slow mode (valgrind or AEVT_SLOW)" : "");

    /* Every loop exists before the first sample: the fds besides our sockets are fixed. */
    server_start(s);
    if (pthread_create(&g_sink.thread, NULL, sink_main, &g_sink) != 0)
        return 1;
    for (int i = 0; i < CLIENTS; i++) {
        if (pthread_create(&g_clients[i].thread, NULL, client_main, &g_clients[i]) != 0)
            return 1;
    }
    for (int i = 0; i < SENDERS; i++) {
        g_senders[i].index = i;
        g_senders[i].rng = (uint64_t)mono_ns() * (uint64_t)(i + 3);
        if (pthread_create(&g_senders[i].thread, NULL, sender_main, &g_senders[i]) != 0)
            return 1;
    }

    rc = aev_run(s->loop, AEV_RUN_DEFAULT);
    if (rc != 0)
        soak_fail("server: aev_run returned %d", rc);
    if (s->conns != NULL)
        soak_fail("server: %d connections left open", s->open_conns);
    for (int i = 0; i < SENDERS; i++)
        join_or_die(g_senders[i].thread, &g_senders[i].done, "sender", i);
    for (int i = 0; i < CLIENTS; i++)
        join_or_die(g_clients[i].thread, &g_clients[i].done, "client", i);
    join_or_die(g_sink.thread, &g_sink.done, "sink loop", 0);

    /* Totals, and the cross-checks between the two ends. */
    struct client tot = {0};
    struct tstats ts = s->ts;
    uint64_t sender_posts = 0, acks = 0, full = 0;
    for (int i = 0; i < CLIENTS; i++) {
        struct client *cl = &g_clients[i];
        tot.requests += cl->requests;
        tot.responses += cl->responses;
        tot.bytes_sent += cl->bytes_sent;
        tot.bytes_received += cl->bytes_received;
        tot.hash_sum += cl->hash_sum;
        tot.connects += cl->connects;
        tot.closes += cl->closes;
        tot.idle_closes += cl->idle_closes;
        tot.idle_abandoned += cl->idle_abandoned;
        ts.fired += cl->ts.fired;
        if (cl->ts.max_late > ts.max_late) {
            ts.max_late = cl->ts.max_late;
            ts.max_what = cl->ts.max_what;
        }
        if (aev_loop_destroy(cl->loop) != 0)
            soak_fail("client %d: aev_loop_destroy failed", i);
    }
    for (int i = 0; i < SENDERS; i++) {
        sender_posts += g_senders[i].posts;
        acks += g_senders[i].acks;
        full += g_senders[i].posts_full;
    }
    if (tot.requests == 0 || tot.requests != tot.responses)
        soak_fail("%" PRIu64 " requests sent, %" PRIu64 " answered", tot.requests, tot.responses);
    if (tot.bytes_sent != s->bytes_in || s->bytes_in != s->bytes_out ||
        s->bytes_out != tot.bytes_received)
        soak_fail("bytes: clients sent %" PRIu64 ", server read %" PRIu64 " and wrote %" PRIu64
                  ", clients read %" PRIu64,
                  tot.bytes_sent, s->bytes_in, s->bytes_out, tot.bytes_received);
    if (tot.hash_sum != s->hash_sum)
        soak_fail("stream checksums differ: clients %016" PRIx64 ", server %016" PRIx64,
                  tot.hash_sum, s->hash_sum);
    if (tot.connects != s->accepted || s->accepted != s->closed_peer + s->closed_idle)
        soak_fail("connections: %" PRIu64 " connected, %" PRIu64 " accepted, %" PRIu64
                  " closed by the peer, %" PRIu64 " as idle",
                  tot.connects, s->accepted, s->closed_peer, s->closed_idle);
    /* An idle connection the client abandoned at the deadline may have been closed as idle by
     * the server at the same moment. */
    if (s->closed_idle < tot.idle_closes || s->closed_idle > tot.idle_closes + tot.idle_abandoned)
        soak_fail("idle closes: server %" PRIu64 ", clients saw %" PRIu64 " (+%" PRIu64
                  " abandoned)",
                  s->closed_idle, tot.idle_closes, tot.idle_abandoned);
    if (sender_posts != s->posts_run)
        soak_fail("posts: %" PRIu64 " accepted, %" PRIu64 " ran", sender_posts, s->posts_run);

    if (s->base.t < 0)
        soak_fail("no sample after the %.1f s warm-up", (double)g_cfg.warmup / 1e9);
    uint64_t srv_sends = target_sends(&s->target), sink_sends = target_sends(&g_sink.target);
    uint64_t srv_callbacks = s->target.callbacks, sink_callbacks = g_sink.target.callbacks;
    if (aev_loop_destroy(g_sink.loop) != 0)
        soak_fail("sink: aev_loop_destroy failed");
    if (aev_loop_destroy(s->loop) != 0)
        soak_fail("server: aev_loop_destroy failed");
    sock_close(s->listen_fd);
    long fds_at_end = count_fds();
    if (fds_at_end != fds_at_start)
        soak_fail("fds: %ld open at the start, %ld after teardown", fds_at_start, fds_at_end);

    int failures = atomic_load(&g_failures);
    printf("soak: %" PRIu64 " requests, %" PRIu64 " answered; %" PRIu64 " bytes each way; "
           "%" PRIu64 " connections (%" PRIu64 " closed idle, %" PRIu64 " idle deferred), "
           "%" PRIu64 " partial echoes; async %" PRIu64 " sends / %" PRIu64 " callbacks (server "
           "%" PRIu64 "/%" PRIu64 ", sink %" PRIu64 "/%" PRIu64 "), %" PRIu64
           " acks waited; %" PRIu64 " posts run "
           "(%" PRIu64 " refused as full); timers %" PRIu64 " checked, max lateness %.2f ms (%s); "
           "RSS %ld -> %ld KiB (after warm-up %ld, max %ld%s); fds %ld -> %ld (start %ld, end "
           "%ld); %s\n",
           tot.requests, tot.responses, tot.bytes_sent, s->accepted, s->closed_idle,
           s->idle_deferred, s->would_block, srv_sends + sink_sends, srv_callbacks + sink_callbacks,
           srv_sends, srv_callbacks, sink_sends, sink_callbacks, acks, s->posts_run, full, ts.fired,
           (double)ts.max_late / 1e6, ts.max_what ? ts.max_what : "-", s->first.rss, s->last.rss,
           s->base.rss, s->rss_max, g_cfg.bound_rss ? "" : ", not bounded here", s->first.fds,
           s->last.fds, fds_at_start, fds_at_end, failures ? "FAILED" : "OK");
    if (s->tick_steps)
        printf("soak: %" PRIu64 " wall-clock steps seen by the periodic\n", s->tick_steps);
    return failures ? 1 : 0;
}
