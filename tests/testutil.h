/*
 * Shared helpers for the cmocka test programs.
 *
 * Every test program is registered in CTest once per backend: CTest sets AEV_BACKEND (read by
 * the library itself) and, for the async tests, AEVT_WAKEUP=pipe to force the self-pipe path.
 * Tests create loops with aevt_loop_new() so that both choices apply.
 */
#ifndef AEV_TESTUTIL_H
#define AEV_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "asyncev.h"

/* valgrind's client-request header, where installed: RUNNING_ON_VALGRIND (see aevt_slow()). */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define AEVT_HAVE_VALGRIND_H 1
#endif
#endif

/* Flags for aev_loop_new() selected by the environment of this test run. */
static inline unsigned aevt_flags(void)
{
    const char *w = getenv("AEVT_WAKEUP");
    return (w && strcmp(w, "pipe") == 0) ? AEV_FLAG_PIPE_WAKEUP : 0;
}

static inline aev_loop *aevt_loop_new(void)
{
    aev_loop *loop = NULL;
    int rc = aev_loop_new(&loop, aevt_flags());
    assert_int_equal(rc, 0);
    assert_non_null(loop);
    return loop;
}

/* cmocka setup/teardown: a fresh loop per test in *state; teardown checks nothing is pending
 * and that destroy succeeds. */
static inline int aevt_setup(void **state)
{
    *state = aevt_loop_new();
    return 0;
}

static inline int aevt_teardown(void **state)
{
    aev_loop *loop = *state;
    assert_int_equal(aev_pending_count(loop), 0);
    assert_int_equal(aev_loop_destroy(loop), 0);
    return 0;
}

/* Monotonic clock in ns, read directly (not through the library under test). */
static inline int64_t aevt_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleeps at least ms milliseconds, across signal interruptions. */
static inline void aevt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A hang fails fast instead of waiting for CTest's timeout. */
static inline void aevt_watchdog(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

/*
 * The slow mode: true under valgrind (detected through RUNNING_ON_VALGRIND where
 * <valgrind/valgrind.h> exists) or when AEVT_SLOW is set to anything but "" or "0"
 * (scripts/valgrind.sh sets AEVT_SLOW=1). CPU-bound code runs 10 to 50 times slower there. A
 * test may use it to shorten a loop that would take minutes, or to lengthen a timeout that only
 * decides how soon a hang is reported (the soak test does); what is checked must stay the same.
 */
static inline int aevt_slow(void)
{
    const char *s = getenv("AEVT_SLOW");
    if (s != NULL && s[0] != '\0' && strcmp(s, "0") != 0)
        return 1;
#ifdef AEVT_HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return 1;
#endif
    return 0;
}

#endif /* AEV_TESTUTIL_H */
