/*
 * Tests of stat watchers: argument errors, the data at start, and the changes a path can go
 * through (write, creation, removal, rename over it, chmod, a directory that appears later, a
 * symlink's target), no callback without a change or after a stop, aev_stat_stat(), several
 * watchers of one path, coalescing, references, and fork.
 *
 * The whole group runs twice: with inotify (where the kernel has it) and with polling forced
 * through AEV_STAT_INOTIFY=0. Under inotify the watchers get a 10 s polling interval, so a
 * callback within the guard time proves that inotify (not the timer) noticed the change; under
 * polling they get 20 ms. Changes are made to size, mode, link count or inode, never only to a
 * timestamp, so the tests do not depend on the filesystem's timestamp resolution.
 */
#define _GNU_SOURCE /* nftw() */

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#if defined(__linux__)
#include <sys/inotify.h>
#endif

/* Longest any test waits for something that should happen. */
#define GUARD AEV_SEC(3)
#define FAST AEV_MSEC(20)

static int g_polling;   /* 1 during the run with AEV_STAT_INOTIFY=0 */
static int g_have_infy; /* the kernel lets this process use inotify */

/* The interval for watchers of a test: long under inotify, so that only inotify can be quick. */
static aev_time_t interval(void)
{
    return (g_polling || !g_have_infy) ? FAST : AEV_SEC(10);
}

/* ---- fixture ---------------------------------------------------------------------------- */

typedef struct fixture {
    aev_loop *loop;
    char dir[64];
    char path[128]; /* dir/f: not created by the fixture */
} fixture;

static int setup(void **state)
{
    aevt_watchdog(30);
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->loop = aevt_loop_new();
    strcpy(fx->dir, "/tmp/aevt_stat.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/f", fx->dir);
    *state = fx;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    void *loop = fx->loop;
    aevt_teardown(&loop);
    assert_int_equal(nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    free(fx);
    return 0;
}

/* Builds "dir/name" in buf. */
static const char *in_dir(const fixture *fx, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", fx->dir, name);
    return buf;
}

/* Creates (or truncates) path with len bytes and the given mode. */
static void write_file(const char *path, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    static const char bytes[64] = {0};
    assert_true(len <= sizeof bytes);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void append(const char *path, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    static const char bytes[64] = {0};
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* ---- a recording watcher ---------------------------------------------------------------- */

#define MAXC 16

typedef struct sw {
    aev_stat w; /* first member, for the casts */
    int calls;
    unsigned events;
    struct stat prev[MAXC], attr[MAXC];
    bool stop_in_cb;
} sw;

static void sw_cb(aev_watcher *w, unsigned events)
{
    sw *s = (sw *)w;
    if (s->calls < MAXC) {
        s->prev[s->calls] = *aev_stat_prev(&s->w);
        s->attr[s->calls] = *aev_stat_attr(&s->w);
    }
    s->calls++;
    s->events |= events;
    if (s->stop_in_cb)
        assert_int_equal(aev_stat_stop(&s->w), 0);
}

static void sw_start(sw *s, aev_loop *loop, const char *path, aev_time_t iv)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(aev_stat_init(&s->w, loop, sw_cb, path, iv), 0);
    assert_int_equal(aev_stat_start(&s->w), 0);
    assert_true(aev_is_active(&s->w.base));
}

static void tick_cb(aev_watcher *w, unsigned events)
{
    (void)w;
    (void)events;
}

/* Runs the loop until *count reaches want or `limit` passed; true if it was reached. A ticking
 * timer bounds every wait. */
static bool run_until(aev_loop *loop, const int *count, int want, aev_time_t limit)
{
    aev_timer tick;
    assert_int_equal(aev_timer_init(&tick, loop, tick_cb, AEV_MSEC(5), AEV_MSEC(5)), 0);
    assert_int_equal(aev_timer_start(&tick), 0);
    aev_time_t end = aev_time() + limit;
    while (*count < want && aev_time() < end)
        assert_true(aev_run(loop, AEV_RUN_ONCE) >= 0);
    assert_int_equal(aev_timer_stop(&tick), 0);
    return *count >= want;
}

/* Runs the loop for d whatever happens. */
static void run_for(aev_loop *loop, aev_time_t d)
{
    int never = 0;
    (void)run_until(loop, &never, 1, d);
}

/* A quiet period long enough for several polls, and for inotify events to arrive. */
#define QUIET AEV_MSEC(200)

/* ---- errors ----------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    fixture *fx = *state;
    aev_stat w;
    assert_int_equal(aev_stat_init(NULL, fx->loop, sw_cb, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_init(&w, NULL, sw_cb, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_init(&w, fx->loop, NULL, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_init(&w, fx->loop, sw_cb, NULL, 0), -EINVAL);
    assert_int_equal(aev_stat_init(&w, fx->loop, sw_cb, "", 0), -EINVAL);
    assert_int_equal(aev_stat_init(&w, fx->loop, sw_cb, "/", -1), -EINVAL);

    /* Functions of a stat watcher refuse NULL and watchers of other types. */
    aev_timer t;
    assert_int_equal(aev_timer_init(&t, fx->loop, sw_cb, 0, 0), 0);
    aev_stat *bad = (aev_stat *)(void *)&t;
    assert_int_equal(aev_stat_set(NULL, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_set(bad, "/", 0), -EINVAL);
    assert_int_equal(aev_stat_start(NULL), -EINVAL);
    assert_int_equal(aev_stat_start(bad), -EINVAL);
    assert_int_equal(aev_stat_stop(NULL), -EINVAL);
    assert_int_equal(aev_stat_stop(bad), -EINVAL);
    assert_int_equal(aev_stat_stat(NULL), -EINVAL);
    assert_int_equal(aev_stat_stat(bad), -EINVAL);
    assert_null(aev_stat_attr(NULL));
    assert_null(aev_stat_prev(NULL));
    assert_false(aev_is_active(&t.base));

    assert_int_equal(aev_stat_init(&w, fx->loop, sw_cb, fx->path, 0), 0);
    assert_int_equal(aev_stat_set(&w, NULL, 0), -EINVAL);
    assert_int_equal(aev_stat_set(&w, "", 0), -EINVAL);
    assert_int_equal(aev_stat_set(&w, fx->path, -5), -EINVAL);
    assert_int_equal(aev_stat_start(&w), 0);
    assert_int_equal(aev_stat_set(&w, fx->dir, 0), -EBUSY);
    assert_int_equal(aev_stat_stop(&w), 0);
    assert_int_equal(aev_stat_set(&w, fx->dir, 0), 0);
    /* Stopping an inactive watcher and starting an active one do nothing. */
    assert_int_equal(aev_stat_stop(&w), 0);
    assert_int_equal(aev_stat_start(&w), 0);
    assert_int_equal(aev_stat_start(&w), 0);
    assert_int_equal(aev_stat_stop(&w), 0);
    assert_false(aev_is_active(&w.base));
}

/* ---- data at init and start ------------------------------------------------------------- */

static void test_start_reads_data(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 7, 0640);
    struct stat real;
    assert_int_equal(stat(fx->path, &real), 0);

    sw s;
    memset(&s, 0, sizeof s);
    assert_int_equal(aev_stat_init(&s.w, fx->loop, sw_cb, fx->path, interval()), 0);
    /* Nothing is read before the start. */
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    assert_int_equal(aev_stat_prev(&s.w)->st_nlink, 0);
    assert_int_equal(aev_stat_start(&s.w), 0);
    const struct stat *a = aev_stat_attr(&s.w);
    assert_int_equal(a->st_ino, real.st_ino);
    assert_int_equal(a->st_size, 7);
    assert_int_equal(a->st_mode & 07777, 0640);
    assert_int_equal(a->st_nlink, 1);
    assert_memory_equal(aev_stat_prev(&s.w), a, sizeof *a);
    /* The start is the baseline, not a change. */
    run_for(fx->loop, QUIET);
    assert_int_equal(s.calls, 0);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_generic_start_stop(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 1, 0600);
    sw s;
    memset(&s, 0, sizeof s);
    assert_int_equal(aev_stat_init(&s.w, fx->loop, sw_cb, fx->path, interval()), 0);
    assert_int_equal(aev_start(&s.w.base), 0);
    assert_true(aev_is_active(&s.w.base));
    append(fx->path, 2);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(aev_stop(&s.w.base), 0);
    assert_false(aev_is_active(&s.w.base));
}

/* ---- changes ---------------------------------------------------------------------------- */

static void test_write_changes_size(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    append(fx->path, 10);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.events, AEV_STAT);
    assert_int_equal(s.prev[0].st_size, 0);
    assert_int_equal(s.attr[0].st_size, 10);
    assert_int_equal(s.prev[0].st_ino, s.attr[0].st_ino);
    /* The watcher stays active and sees the next change; prev is what the last call saw. */
    assert_true(aev_is_active(&s.w.base));
    append(fx->path, 5);
    assert_true(run_until(fx->loop, &s.calls, 2, GUARD));
    assert_int_equal(s.prev[1].st_size, 10);
    assert_int_equal(s.attr[1].st_size, 15);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_created(void **state)
{
    fixture *fx = *state;
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    run_for(fx->loop, AEV_MSEC(50));
    assert_int_equal(s.calls, 0);
    write_file(fx->path, 3, 0600);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_nlink, 0);
    assert_int_equal(s.attr[0].st_nlink, 1);
    /* The file may be seen before or after its bytes were written, never as data of a wrong
     * file: wait until the last report shows them. */
    for (int want = 2; aev_stat_attr(&s.w)->st_size != 3 && want < MAXC; want++)
        assert_true(run_until(fx->loop, &s.calls, want, GUARD));
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 3);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_removed(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 4, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    assert_int_equal(unlink(fx->path), 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_nlink, 1);
    assert_int_equal(s.prev[0].st_size, 4);
    assert_int_equal(s.attr[0].st_nlink, 0);
    assert_int_equal(s.attr[0].st_ino, 0);
    /* And it comes back. */
    write_file(fx->path, 6, 0600);
    assert_true(run_until(fx->loop, &s.calls, 2, GUARD));
    assert_int_equal(s.prev[1].st_nlink, 0);
    assert_int_equal(s.attr[1].st_nlink, 1);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_renamed_over(void **state)
{
    fixture *fx = *state;
    char tmp[160];
    in_dir(fx, tmp, sizeof tmp, "tmp");
    write_file(fx->path, 1, 0600);
    write_file(tmp, 2, 0600);
    struct stat old_st, new_st;
    assert_int_equal(stat(fx->path, &old_st), 0);
    assert_int_equal(stat(tmp, &new_st), 0);

    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    assert_int_equal(rename(tmp, fx->path), 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_ino, old_st.st_ino);
    assert_int_equal(s.attr[0].st_ino, new_st.st_ino);
    assert_int_equal(s.attr[0].st_size, 2);
    /* The new file is watched now: a write to it is reported too. */
    append(fx->path, 3);
    assert_true(run_until(fx->loop, &s.calls, 2, GUARD));
    assert_int_equal(s.attr[1].st_size, 5);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_chmod(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 1, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    assert_int_equal(chmod(fx->path, 0644), 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_mode & 07777, 0600);
    assert_int_equal(s.attr[0].st_mode & 07777, 0644);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_link_count(void **state)
{
    fixture *fx = *state;
    char other[160];
    in_dir(fx, other, sizeof other, "sub");
    assert_int_equal(mkdir(other, 0700), 0);
    in_dir(fx, other, sizeof other, "sub/hard");
    write_file(fx->path, 1, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    /* A hard link made in another directory changes only the inode. */
    assert_int_equal(link(fx->path, other), 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_nlink, 1);
    assert_int_equal(s.attr[0].st_nlink, 2);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_no_change_no_callback(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 1, 0600);
    sw s, missing;
    sw_start(&s, fx->loop, fx->path, FAST);
    char path[160];
    sw_start(&missing, fx->loop, in_dir(fx, path, sizeof path, "absent"), FAST);
    /* Reading the file changes only its atime, which is not compared. */
    char c;
    int fd = open(fx->path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, &c, 1), 1);
    assert_int_equal(close(fd), 0);
    run_for(fx->loop, QUIET);
    assert_int_equal(s.calls, 0);
    assert_int_equal(missing.calls, 0);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_stat_stop(&missing.w), 0);
}

static void test_stop(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 1, 0600);
    sw s, witness;
    sw_start(&s, fx->loop, fx->path, FAST);
    sw_start(&witness, fx->loop, fx->path, FAST);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_false(aev_is_active(&s.w.base));
    append(fx->path, 1);
    /* The witness proves that the change was noticed. */
    assert_true(run_until(fx->loop, &witness.calls, 1, GUARD));
    run_for(fx->loop, AEV_MSEC(60));
    assert_int_equal(s.calls, 0);

    /* Stop removes a pending event. */
    assert_int_equal(aev_stat_start(&s.w), 0);
    assert_int_equal(aev_feed_event(&s.w.base, AEV_STAT), 0);
    assert_true(aev_is_pending(&s.w.base));
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_false(aev_is_pending(&s.w.base));
    run_for(fx->loop, AEV_MSEC(30));
    assert_int_equal(s.calls, 0);
    assert_int_equal(aev_stat_stop(&witness.w), 0);
}

static void test_stop_in_callback(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 1, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, FAST);
    s.stop_in_cb = true;
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_false(aev_is_active(&s.w.base));
    append(fx->path, 1);
    run_for(fx->loop, QUIET);
    assert_int_equal(s.calls, 1);
    /* Nothing is left to keep the loop running. */
    assert_int_equal(aev_run(fx->loop, AEV_RUN_NOWAIT), 0);
}

static void test_stat_refreshes(void **state)
{
    fixture *fx = *state;
    sw s;
    memset(&s, 0, sizeof s);
    assert_int_equal(aev_stat_init(&s.w, fx->loop, sw_cb, fx->path, FAST), 0);
    /* Inactive watchers may be refreshed too; a missing path is reported with its errno. */
    assert_int_equal(aev_stat_stat(&s.w), -ENOENT);
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    write_file(fx->path, 9, 0600);
    assert_int_equal(aev_stat_stat(&s.w), 0);
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 9);
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 1);

    /* A change the program reads itself is absorbed: no callback for it. */
    assert_int_equal(aev_stat_start(&s.w), 0);
    append(fx->path, 1);
    assert_int_equal(aev_stat_stat(&s.w), 0);
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 10);
    assert_int_equal(aev_stat_prev(&s.w)->st_size, 9);
    run_for(fx->loop, QUIET);
    assert_int_equal(s.calls, 0);
    /* A later change is compared with the refreshed data. */
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_size, 10);
    assert_int_equal(s.attr[0].st_size, 11);

    /* A path below a regular file fails with that file's errno. */
    char below[160];
    snprintf(below, sizeof below, "%s/x", fx->path);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_stat_set(&s.w, below, FAST), 0);
    assert_int_equal(aev_stat_stat(&s.w), -ENOTDIR);
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
}

static void test_set_clears_data(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 5, 0600);
    char other[160];
    in_dir(fx, other, sizeof other, "g");
    write_file(other, 8, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, FAST);
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 5);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_stat_set(&s.w, other, interval()), 0);
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    assert_int_equal(aev_stat_start(&s.w), 0);
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 8);
    /* It watches the new path, not the old one. */
    append(fx->path, 1);
    run_for(fx->loop, QUIET);
    assert_int_equal(s.calls, 0);
    append(other, 1);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.attr[0].st_size, 9);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_missing_directory(void **state)
{
    fixture *fx = *state;
    char d1[160], d2[160], file[160];
    in_dir(fx, d1, sizeof d1, "a");
    in_dir(fx, d2, sizeof d2, "a/b");
    in_dir(fx, file, sizeof file, "a/b/f");
    sw s;
    /* No parent to watch: polled at its interval in both modes. */
    sw_start(&s, fx->loop, file, FAST);
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    assert_int_equal(mkdir(d1, 0700), 0);
    assert_int_equal(mkdir(d2, 0700), 0);
    run_for(fx->loop, AEV_MSEC(60));
    assert_int_equal(s.calls, 0);
    write_file(file, 2, 0600);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.prev[0].st_nlink, 0);
    assert_int_equal(s.attr[0].st_nlink, 1);
    /* Once it exists, removing it is seen as well. */
    int calls = s.calls;
    assert_int_equal(unlink(file), 0);
    assert_true(run_until(fx->loop, &s.calls, calls + 1, GUARD));
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_symlink_followed(void **state)
{
    fixture *fx = *state;
    char link_path[160];
    in_dir(fx, link_path, sizeof link_path, "link");
    write_file(fx->path, 1, 0600);
    assert_int_equal(symlink("f", link_path), 0);
    struct stat target;
    assert_int_equal(stat(fx->path, &target), 0);
    sw s;
    sw_start(&s, fx->loop, link_path, interval());
    /* The data is the target's, not the link's. */
    assert_int_equal(aev_stat_attr(&s.w)->st_ino, target.st_ino);
    assert_true(S_ISREG(aev_stat_attr(&s.w)->st_mode));
    append(fx->path, 4);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.attr[0].st_size, 5);
    /* A dangling link reads as missing. */
    assert_int_equal(unlink(fx->path), 0);
    int calls = s.calls;
    assert_true(run_until(fx->loop, &s.calls, calls + 1, GUARD));
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, 0);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_two_watchers_one_path(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw a, b;
    sw_start(&a, fx->loop, fx->path, interval());
    sw_start(&b, fx->loop, fx->path, interval());
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &a.calls, 1, GUARD));
    assert_true(run_until(fx->loop, &b.calls, 1, GUARD));
    assert_int_equal(a.attr[0].st_size, 1);
    assert_int_equal(b.attr[0].st_size, 1);
    /* Stopping one leaves the other watching: the kernel watch they share must stay. */
    assert_int_equal(aev_stat_stop(&a.w), 0);
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &b.calls, 2, GUARD));
    assert_int_equal(b.attr[1].st_size, 2);
    assert_int_equal(a.calls, 1);
    /* Also when one watches the directory the other's file is in: its stop must leave the
     * watch on that directory, the only one that sees the file appear again. */
    sw d;
    sw_start(&d, fx->loop, fx->dir, interval());
    assert_int_equal(aev_stat_stop(&d.w), 0);
    assert_int_equal(unlink(fx->path), 0);
    assert_true(run_until(fx->loop, &b.calls, 3, GUARD));
    assert_int_equal(b.attr[2].st_nlink, 0);
    write_file(fx->path, 1, 0600);
    assert_true(run_until(fx->loop, &b.calls, 4, GUARD));
    assert_int_equal(aev_stat_attr(&b.w)->st_nlink, 1);
    assert_int_equal(aev_stat_stop(&b.w), 0);
}

static void test_directory_watched(void **state)
{
    fixture *fx = *state;
    sw s;
    sw_start(&s, fx->loop, fx->dir, interval());
    assert_true(S_ISDIR(aev_stat_attr(&s.w)->st_mode));
    nlink_t links = aev_stat_attr(&s.w)->st_nlink;
    char sub[160];
    assert_int_equal(mkdir(in_dir(fx, sub, sizeof sub, "d"), 0700), 0);
    /* A new subdirectory adds a link to its parent. */
    for (int want = 1; aev_stat_attr(&s.w)->st_nlink == links && want < MAXC; want++)
        assert_true(run_until(fx->loop, &s.calls, want, GUARD));
    assert_int_equal(aev_stat_attr(&s.w)->st_nlink, links + 1);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_coalesced_prev(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    /* Both changes happen before the loop looks: one check sees them both. */
    append(fx->path, 10);
    assert_int_equal(chmod(fx->path, 0644), 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    run_for(fx->loop, AEV_MSEC(60));
    assert_int_equal(s.prev[0].st_size, 0);
    assert_int_equal(s.prev[0].st_mode & 07777, 0600);
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 10);
    assert_int_equal(aev_stat_attr(&s.w)->st_mode & 07777, 0644);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

/* Another event pending for the watcher (here one fed by the program) does not hold prev back:
 * prev is the data the previous callback saw. */
static void test_prev_with_other_event_pending(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(s.attr[0].st_size, 1);
    assert_int_equal(aev_feed_event(&s.w.base, AEV_CUSTOM), 0);
    append(fx->path, 2);
    /* The fed event may run first, alone: wait for the call that reports the change. */
    for (int want = 2; s.attr[s.calls - 1].st_size != 3 && want < MAXC; want++)
        assert_true(run_until(fx->loop, &s.calls, want, GUARD));
    assert_true(s.events & AEV_CUSTOM);
    assert_int_equal(s.prev[s.calls - 1].st_size, 1);
    assert_int_equal(s.attr[s.calls - 1].st_size, 3);
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_references(void **state)
{
    fixture *fx = *state;
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    /* The watcher keeps the loop running; its internal helpers do not. */
    assert_int_equal(aev_run(fx->loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_run(fx->loop, AEV_RUN_NOWAIT), 0);
    assert_int_equal(aev_stat_start(&s.w), 0);
    assert_int_equal(aev_run(fx->loop, AEV_RUN_NOWAIT), 1);
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_run(fx->loop, AEV_RUN_DEFAULT), 0);
}

/* The change is seen quickly: under inotify well within the 10 s interval, under polling within
 * a few intervals. */
static void test_latency(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, interval());
    run_for(fx->loop, AEV_MSEC(30));
    aev_time_t t0 = aev_time();
    append(fx->path, 1);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_true(aev_time() - t0 < AEV_SEC(2));
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

/* With polling forced, nothing is noticed before the interval: inotify is really off. */
static void test_polling_waits_for_interval(void **state)
{
    fixture *fx = *state;
    if (!g_polling)
        skip();
    write_file(fx->path, 0, 0600);
    sw s;
    sw_start(&s, fx->loop, fx->path, AEV_SEC(1));
    append(fx->path, 1);
    run_for(fx->loop, AEV_MSEC(300));
    assert_int_equal(s.calls, 0);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(aev_stat_stop(&s.w), 0);
}

static void test_destroy_with_active_watchers(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    sw s, t;
    sw_start(&s, fx->loop, fx->path, interval());
    sw_start(&t, fx->loop, fx->dir, interval());
    run_for(fx->loop, AEV_MSEC(20));
    /* Teardown destroys the loop: the watchers are abandoned, nothing leaks or is called. */
    append(fx->path, 1);
}

/* After fork the child has its own inotify instance: both processes see their changes, and the
 * child does not take the parent's events. */
static void test_fork(void **state)
{
    fixture *fx = *state;
    write_file(fx->path, 0, 0600);
    char child_path[160];
    in_dir(fx, child_path, sizeof child_path, "child");
    write_file(child_path, 0, 0600);
    sw s, c;
    sw_start(&s, fx->loop, fx->path, interval());
    sw_start(&c, fx->loop, child_path, interval());
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* In the child: watch for the parent's change to its own file. cmocka's asserts would
         * longjmp into the parent's copy of the runner: report by exit code instead. */
        alarm(10);
        append(child_path, 1);
        int ok = run_until(fx->loop, &c.calls, 1, GUARD) && c.attr[0].st_size == 1;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent still sees its own changes (and, with its interval, also the child's). */
    append(fx->path, 2);
    assert_true(run_until(fx->loop, &s.calls, 1, GUARD));
    assert_int_equal(aev_stat_attr(&s.w)->st_size, 2);
    assert_true(run_until(fx->loop, &c.calls, 1, GUARD));
    assert_int_equal(aev_stat_stop(&s.w), 0);
    assert_int_equal(aev_stat_stop(&c.w), 0);
}

/* ---- main ------------------------------------------------------------------------------- */

static int run_all(const char *name)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_errors),
        T(test_start_reads_data),
        T(test_generic_start_stop),
        T(test_write_changes_size),
        T(test_created),
        T(test_removed),
        T(test_renamed_over),
        T(test_chmod),
        T(test_link_count),
        T(test_no_change_no_callback),
        T(test_stop),
        T(test_stop_in_callback),
        T(test_stat_refreshes),
        T(test_set_clears_data),
        T(test_missing_directory),
        T(test_symlink_followed),
        T(test_two_watchers_one_path),
        T(test_directory_watched),
        T(test_coalesced_prev),
        T(test_prev_with_other_event_pending),
        T(test_references),
        T(test_latency),
        T(test_polling_waits_for_interval),
        T(test_destroy_with_active_watchers),
        T(test_fork),
    };
#undef T
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}

/* Whether this process may use inotify at all (a sandbox may refuse it). */
static int probe_inotify(void)
{
#if defined(__linux__)
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
#else
    return 0;
#endif
}

int main(void)
{
    g_have_infy = probe_inotify();
    g_polling = 0;
    int failed = run_all(g_have_infy ? "stat (inotify)" : "stat (no inotify: polling)");
    g_polling = 1;
    if (setenv("AEV_STAT_INOTIFY", "0", 1) != 0)
        return 1;
    failed += run_all("stat (polling forced)");
    return failed ? 1 : 0;
}
