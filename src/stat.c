/*
 * Stat watchers: report changes of a path's stat(2) data.
 *
 * Design:
 *  - Every watcher keeps the data it saw last (attr_) and compares each fresh stat() with it;
 *    a difference updates attr_ and feeds AEV_STAT. prev_ is taken from attr_ only when no
 *    AEV_STAT event is pending yet, so that changes coalesced into one callback report the data
 *    from before the first of them.
 *  - Each watcher owns an internal timer (unreferenced: the stat watcher itself keeps aev_run()
 *    going) that re-stats the path. Without inotify it is the only source of news and repeats
 *    every `interval`. With inotify it is a safety net for what inotify cannot see (network
 *    filesystems, a symlink's target replaced in another directory) and repeats much slower.
 *  - Linux: one inotify instance per loop, created by the first start and read by an internal,
 *    unreferenced io watcher. A watcher watches its path (the inode it names now: writes,
 *    attribute and link-count changes) and the path's parent directory (the name: creation,
 *    removal, renames). Several watchers may share a watch descriptor (the kernel returns the
 *    same one for the same inode), so a descriptor is removed only when no active watcher uses
 *    it. After each change the watches are renewed, since the name may now denote another
 *    inode. A watcher whose parent directory cannot be watched (e.g. it does not exist yet) is
 *    polled at its interval, and tries again at each poll.
 *  - AEV_STAT_INOTIFY=0 in the environment (read once per loop) forces polling, for tests.
 *  - Fork: the child shares the parent's inotify instance and would steal its events, so
 *    aev_loop_fork() gives the child a fresh instance and renews every watch in it.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/inotify.h>
#define AEV__HAVE_INOTIFY 1
#endif

/* The polling interval for interval 0, and the shortest period of the safety net under inotify. */
#define AEV__STAT_DEFAULT_INTERVAL AEV_SEC(1)
#define AEV__STAT_SAFETY_INTERVAL AEV_SEC(30)

/* Reads of the inotify fd per callback: bounded, so that a flood of events cannot keep the loop
 * in one callback; what is left is read in the next iteration (the fd stays readable). */
#define AEV__STAT_READS 8

#if defined(__APPLE__)
#define AEV__MTIME_NS(st) ((st)->st_mtimespec.tv_nsec)
#define AEV__CTIME_NS(st) ((st)->st_ctimespec.tv_nsec)
#else
#define AEV__MTIME_NS(st) ((st)->st_mtim.tv_nsec)
#define AEV__CTIME_NS(st) ((st)->st_ctim.tv_nsec)
#endif

/* ---- stat data ---------------------------------------------------------------------------- */

/* The configured interval (0: the default) lives in the internal timer's `after` member, which
 * the timer itself never uses: it is only ever armed by aev_timer_again(), from its repeat. One
 * member fewer keeps aev_stat at libev's size plus the loop pointer. */
static aev_time_t aev__stat_interval(const aev_stat *w)
{
    return w->timer_.at_;
}

static aev_time_t aev__stat_poll_interval(const aev_stat *w)
{
    return aev__stat_interval(w) ? aev__stat_interval(w) : AEV__STAT_DEFAULT_INTERVAL;
}

/* stat() into *st; a path that cannot be stat'ed reads as all zero (st_nlink 0). */
static int aev__stat_read(const char *path, struct stat *st)
{
    if (stat(path, st) == 0)
        return 0;
    int err = -errno;
    memset(st, 0, sizeof *st);
    return err;
}

/* The fields that tell a change; atime is left out, or every read would count. */
static int aev__stat_differ(const struct stat *a, const struct stat *b)
{
    return a->st_dev != b->st_dev || a->st_ino != b->st_ino || a->st_mode != b->st_mode ||
           a->st_nlink != b->st_nlink || a->st_uid != b->st_uid || a->st_gid != b->st_gid ||
           a->st_rdev != b->st_rdev || a->st_size != b->st_size || a->st_mtime != b->st_mtime ||
           AEV__MTIME_NS(a) != AEV__MTIME_NS(b) || a->st_ctime != b->st_ctime ||
           AEV__CTIME_NS(a) != AEV__CTIME_NS(b);
}

/* ---- inotify ------------------------------------------------------------------------------ */

#ifdef AEV__HAVE_INOTIFY

/* What a watch reports. The same mask for every watch: the kernel keeps one mask per inode
 * and instance, and a path watched by one watcher can be the parent watched by another. */
#define AEV__STAT_MASK                                                                             \
    (IN_ATTRIB | IN_MODIFY | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |               \
     IN_MOVED_FROM | IN_MOVED_TO)

/* The last component of path (trailing slashes ignored): its start and length. */
static const char *aev__stat_base(const char *path, size_t *len)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    *len = end - start;
    return path + start;
}

/* The directory holding path's last component, into buf; 0 if there is none to watch (the path
 * is "/", its component is "." or "..", or it is too long). */
static int aev__stat_parent(const char *path, char *buf, size_t size)
{
    size_t len;
    const char *base = aev__stat_base(path, &len);
    if (len == 0 || (len == 1 && base[0] == '.') || (len == 2 && base[0] == '.' && base[1] == '.'))
        return 0;
    size_t dirlen = (size_t)(base - path);
    if (dirlen == 0) {
        buf[0] = '.';
        buf[1] = '\0';
        return 1;
    }
    if (dirlen >= size)
        return 0;
    memcpy(buf, path, dirlen); /* keeps the trailing slash: "a/" names the directory a */
    buf[dirlen] = '\0';
    return 1;
}

/* Whether any active watcher of the loop still uses watch descriptor wd. */
static int aev__stat_wd_used(const aev_loop *loop, int wd)
{
    for (const aev_stat *w = loop->stat_list; w; w = w->next_) {
        if (w->wd_ == wd || w->pwd_ == wd)
            return 1;
    }
    return 0;
}

static void aev__stat_wd_release(aev_loop *loop, int wd)
{
    if (wd >= 0 && !aev__stat_wd_used(loop, wd))
        (void)inotify_rm_watch(loop->stat_fd, wd);
}

static int aev__stat_add_watch(aev_loop *loop, const char *path)
{
    int wd = inotify_add_watch(loop->stat_fd, path, AEV__STAT_MASK);
    return wd < 0 ? -1 : wd;
}

/* (Re)creates w's watches for what its path names now and drops the ones no longer used. A
 * watch that cannot be made (no such file yet, no permission, out of watches) is left out:
 * the timer polls instead. Must run with w linked in the loop's list, or its own descriptors
 * would count as unused. */
static void aev__stat_watch(aev_stat *w)
{
    aev_loop *loop = w->base.loop_;
    if (loop->stat_inotify != 1)
        return;
    char parent[PATH_MAX];
    int old_wd = w->wd_, old_pwd = w->pwd_;
    w->wd_ = aev__stat_add_watch(loop, w->path_);
    w->pwd_ =
        aev__stat_parent(w->path_, parent, sizeof parent) ? aev__stat_add_watch(loop, parent) : -1;
    aev__stat_wd_release(loop, old_wd);
    if (old_pwd != old_wd)
        aev__stat_wd_release(loop, old_pwd);
}

/* Whether an event on the parent's watch named w's entry (events without a name concern the
 * directory itself, which says nothing about the entry but is cheap to check). */
static int aev__stat_names(const aev_stat *w, const struct inotify_event *ev)
{
    if (ev->len == 0)
        return 1;
    size_t len;
    const char *base = aev__stat_base(w->path_, &len);
    return strncmp(ev->name, base, len) == 0 && ev->name[len] == '\0';
}

/* Marks the watchers an event concerns. A watch the kernel dropped (IN_IGNORED: the inode is
 * gone, or its filesystem was unmounted) is forgotten, so that it is never removed later by
 * number (the number may be reused). */
static void aev__stat_mark(aev_loop *loop, const struct inotify_event *ev)
{
    for (aev_stat *w = loop->stat_list; w; w = w->next_) {
        if (ev->mask & IN_Q_OVERFLOW) {
            w->base.flags_ |= AEV__WF_DIRTY;
            continue;
        }
        if (w->wd_ == ev->wd) {
            w->base.flags_ |= AEV__WF_DIRTY;
            if (ev->mask & IN_IGNORED)
                w->wd_ = -1;
        }
        if (w->pwd_ == ev->wd) {
            if (aev__stat_names(w, ev) || (ev->mask & IN_IGNORED))
                w->base.flags_ |= AEV__WF_DIRTY;
            if (ev->mask & IN_IGNORED)
                w->pwd_ = -1;
        }
    }
}

static void aev__stat_check(aev_stat *w);
static void aev__stat_pace(aev_stat *w);
static void aev__stat_inotify_close(aev_loop *loop);

/* Reads a batch of events, marks the watchers they concern, then checks each of them once. */
static void aev__stat_inotify_cb(aev_watcher *io, unsigned events)
{
    aev_loop *loop = io->loop_;
    if (events & AEV_ERROR) {
        /* The backend refused the fd (not expected for inotify): poll from now on. */
        aev__stat_inotify_close(loop);
        return;
    }
    _Alignas(struct inotify_event) char buf[4096];
    for (int i = 0; i < AEV__STAT_READS; i++) {
        ssize_t n = read(loop->stat_fd, buf, sizeof buf);
        if (n <= 0)
            break; /* EAGAIN: drained; EINTR: the next iteration reads again */
        for (ssize_t off = 0; off < n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
            aev__stat_mark(loop, ev);
            off += (ssize_t)(sizeof *ev + ev->len);
        }
    }
    for (aev_stat *w = loop->stat_list; w; w = w->next_) {
        if (w->base.flags_ & AEV__WF_DIRTY)
            aev__stat_check(w);
    }
}

/* Watches fd with the internal io watcher; the io layer never refuses an inotify fd, but a
 * failure to grow its table is possible. */
static int aev__stat_io_start(aev_loop *loop, int fd)
{
    aev_io_init(&loop->stat_io, loop, aev__stat_inotify_cb, fd, AEV_READ);
    /* Highest priority: the stat watchers it feeds run in the same invoke pass. */
    loop->stat_io.base.priority_ = AEV_MAXPRI;
    loop->stat_io.base.flags_ |= AEV__WF_INTERNAL;
    int rc = aev_io_start(&loop->stat_io);
    if (rc < 0)
        return rc;
    /* The internal watcher must not keep aev_run() alive; the stat watchers do. */
    loop->refs--;
    return 0;
}

static void aev__stat_io_close(aev_loop *loop)
{
    /* Takes back the reference given up at the start. If the io layer failed the watcher, it
     * is inactive already, and that stop dropped the same reference. */
    loop->refs++;
    aev_io_stop(&loop->stat_io);
    close(loop->stat_fd);
    loop->stat_fd = -1;
}

/* Closes the inotify instance; its watch descriptors are forgotten, never removed one by one
 * (after a fork they are the parent's too). The watchers' timers are set to poll. */
static void aev__stat_inotify_close(aev_loop *loop)
{
    aev__stat_io_close(loop);
    loop->stat_inotify = -1;
    for (aev_stat *w = loop->stat_list; w; w = w->next_) {
        w->wd_ = w->pwd_ = -1;
        aev__stat_pace(w);
    }
}

/* A new inotify instance watched by the loop: 1, or 0 if inotify cannot be used; -ENOMEM. */
static int aev__stat_inotify_open(aev_loop *loop)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return 0;
    int rc = aev__stat_io_start(loop, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    loop->stat_fd = fd;
    return 1;
}

/* Decides once per loop whether inotify is used, and opens it. Errors: -ENOMEM (nothing is
 * decided, the next start tries again). */
static int aev__stat_inotify_init(aev_loop *loop)
{
    if (loop->stat_inotify != 0)
        return 0;
    const char *env = getenv("AEV_STAT_INOTIFY");
    if (env && strcmp(env, "0") == 0) {
        loop->stat_inotify = -1;
        return 0;
    }
    int rc = aev__stat_inotify_open(loop);
    if (rc < 0)
        return rc;
    loop->stat_inotify = rc ? 1 : -1;
    return 0;
}

#else /* !AEV__HAVE_INOTIFY */

static void aev__stat_watch(aev_stat *w)
{
    (void)w;
}

static int aev__stat_inotify_init(aev_loop *loop)
{
    loop->stat_inotify = -1;
    return 0;
}

#endif

/* Gives back w's watches; w must already be unlinked. */
static void aev__stat_unwatch(aev_stat *w)
{
#ifdef AEV__HAVE_INOTIFY
    aev_loop *loop = w->base.loop_;
    if (loop->stat_inotify == 1) {
        aev__stat_wd_release(loop, w->wd_);
        if (w->pwd_ != w->wd_)
            aev__stat_wd_release(loop, w->pwd_);
    }
#endif
    w->wd_ = w->pwd_ = -1;
}

/* ---- timer and checks --------------------------------------------------------------------- */

/* The timer's period: the polling interval unless inotify watches the name (its parent). */
static aev_time_t aev__stat_period(const aev_stat *w)
{
    aev_time_t poll = aev__stat_poll_interval(w);
    if (w->pwd_ < 0)
        return poll;
    return poll > AEV__STAT_SAFETY_INTERVAL ? poll : AEV__STAT_SAFETY_INTERVAL;
}

/* Adjusts the running timer when the watches changed what it has to cover. */
static void aev__stat_pace(aev_stat *w)
{
    aev_time_t period = aev__stat_period(w);
    if (w->timer_.repeat_ == period)
        return;
    aev_timer_set_repeat(&w->timer_, period);
    /* Active and repeating: only moves its heap node, which cannot fail. */
    aev_timer_again(&w->timer_);
}

/* Whether an AEV_STAT event still waits for w's callback: a change found now joins it. */
static int aev__stat_report_pending(const aev_stat *w)
{
    if (!w->base.pending_)
        return 0;
    const aev__pendq *q = &w->base.loop_->pending[AEV__PRI_INDEX(w->base.priority_)];
    return (q->items[w->base.pending_ - 1].events & AEV_STAT) != 0;
}

/* Re-stats w's path; on a change, records it and feeds AEV_STAT. */
static void aev__stat_check(aev_stat *w)
{
    w->base.flags_ &= (uint8_t)~AEV__WF_DIRTY;
    struct stat now;
    (void)aev__stat_read(w->path_, &now);
    int changed = aev__stat_differ(&now, &w->attr_);
    if (changed) {
        /* prev stays the data from before the first change the callback has not seen. */
        if (!aev__stat_report_pending(w))
            w->prev_ = w->attr_;
        w->attr_ = now;
        /* Only an exhausted pending queue fails here: the data stays recorded as changed
         * and the program sees it at the next callback. */
        (void)aev__feed(w->base.loop_, &w->base, AEV_STAT);
    }
    /* A change may mean the name denotes another inode now; a missing watch (no file yet, or
     * one the kernel dropped) is retried at every check. */
    if (changed || w->wd_ < 0 || w->pwd_ < 0) {
        aev__stat_watch(w);
        aev__stat_pace(w);
    }
}

static void aev__stat_tick(aev_watcher *t, unsigned events)
{
    (void)events;
    aev__stat_check(aev__container_of(t, aev_stat, timer_.base));
}

/* ---- API ---------------------------------------------------------------------------------- */

static int aev__stat_args_ok(const char *path, aev_time_t interval)
{
    return path && path[0] && interval >= 0;
}

int aev_stat_init(aev_stat *w, aev_loop *loop, aev_cb cb, const char *path, aev_time_t interval)
{
    if (!aev__stat_args_ok(path, interval))
        return -EINVAL;
    int rc = aev__watcher_init((aev_watcher *)w, loop, cb, AEV__T_STAT);
    if (rc < 0)
        return rc;
    w->path_ = path;
    memset(&w->prev_, 0, sizeof w->prev_);
    memset(&w->attr_, 0, sizeof w->attr_);
    memset(&w->timer_, 0, sizeof w->timer_);
    w->timer_.at_ = interval;
    w->next_ = NULL;
    w->wd_ = w->pwd_ = -1;
    return 0;
}

int aev_stat_set(aev_stat *w, const char *path, aev_time_t interval)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_STAT) || !aev__stat_args_ok(path, interval))
        return -EINVAL;
    if (w->base.active_)
        return -EBUSY;
    w->path_ = path;
    w->timer_.at_ = interval;
    /* The data of the old path says nothing about the new one. */
    memset(&w->prev_, 0, sizeof w->prev_);
    memset(&w->attr_, 0, sizeof w->attr_);
    return 0;
}

static void aev__stat_link(aev_stat *w)
{
    aev_loop *loop = w->base.loop_;
    w->next_ = loop->stat_list;
    loop->stat_list = w;
}

static void aev__stat_unlink(aev_stat *w)
{
    aev_stat **link = &w->base.loop_->stat_list;
    while (*link != w)
        link = &(*link)->next_;
    *link = w->next_;
    w->next_ = NULL;
}

/* Starts the internal timer, unreferenced. It is armed by aev_timer_again(), which uses the
 * repeat (the period), so that its `after` keeps the configured interval. */
static int aev__stat_timer_start(aev_stat *w)
{
    aev_timer_init(&w->timer_, w->base.loop_, aev__stat_tick, aev__stat_interval(w),
                   aev__stat_period(w));
    /* Highest priority: the stat watcher it feeds runs in the same invoke pass. */
    w->timer_.base.priority_ = AEV_MAXPRI;
    w->timer_.base.flags_ |= AEV__WF_INTERNAL;
    int rc = aev_timer_again(&w->timer_);
    if (rc < 0)
        return rc;
    w->base.loop_->refs--;
    return 0;
}

int aev_stat_start(aev_stat *w)
{
    int rc = aev__start_begin((aev_watcher *)w, AEV__T_STAT);
    if (rc <= 0)
        return rc;
    aev_loop *loop = w->base.loop_;
    rc = aev__stat_inotify_init(loop);
    if (rc < 0)
        return rc;
    w->base.flags_ &= (uint8_t)~AEV__WF_DIRTY;
    w->wd_ = w->pwd_ = -1;
    aev__stat_link(w);
    /* Watch first, then read the baseline: a change in between is reported, not lost. */
    aev__stat_watch(w);
    rc = aev__stat_timer_start(w);
    if (rc < 0) {
        aev__stat_unlink(w);
        aev__stat_unwatch(w);
        return rc;
    }
    (void)aev__stat_read(w->path_, &w->attr_);
    w->prev_ = w->attr_;
    aev__activate(&w->base, 1);
    return 0;
}

int aev_stat_stop(aev_stat *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_STAT))
        return -EINVAL;
    if (w->base.pending_)
        aev__unpend(&w->base);
    if (!w->base.active_)
        return 0;
    w->base.loop_->refs++;
    aev_timer_stop(&w->timer_);
    aev__stat_unlink(w);
    aev__stat_unwatch(w);
    aev__deactivate(&w->base);
    return 0;
}

int aev_stat_stat(aev_stat *w)
{
    if (!aev__is((const aev_watcher *)w, AEV__T_STAT))
        return -EINVAL;
    int rc = aev__stat_read(w->path_, &w->attr_);
    if (w->base.active_) {
        /* The name may denote another inode than the one watched. */
        aev__stat_watch(w);
        aev__stat_pace(w);
    }
    return rc;
}

const struct stat *aev_stat_attr(const aev_stat *w)
{
    return w ? &w->attr_ : NULL;
}

const struct stat *aev_stat_prev(const aev_stat *w)
{
    return w ? &w->prev_ : NULL;
}

/* ---- loop fork and destroy ---------------------------------------------------------------- */

void aev__stat_fork(aev_loop *loop)
{
#ifdef AEV__HAVE_INOTIFY
    if (loop->stat_inotify != 1)
        return;
    /* The descriptors belong to the instance shared with the parent: forget them, never
     * remove them (that would remove the parent's watches). */
    aev__stat_inotify_close(loop);
    if (aev__stat_inotify_open(loop) <= 0)
        return; /* the child polls */
    loop->stat_inotify = 1;
    /* Changes made while no watch existed produced no event: check each watcher once. */
    for (aev_stat *w = loop->stat_list; w; w = w->next_) {
        aev__stat_watch(w);
        aev__stat_pace(w);
        aev__stat_check(w);
    }
#else
    (void)loop;
#endif
}

/* At loop destruction: watchers still active are abandoned, never called again (their timers
 * go with the timer heap). Runs before the io state is freed. */
void aev__stat_free(aev_loop *loop)
{
#ifdef AEV__HAVE_INOTIFY
    if (loop->stat_inotify == 1)
        aev__stat_io_close(loop);
#endif
    loop->stat_inotify = 0;
    loop->stat_list = NULL;
}
