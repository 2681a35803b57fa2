/*
 * The clock. All times are CLOCK_MONOTONIC nanoseconds: wall-clock jumps never move timers.
 */
#include "internal.h"

#include <time.h>

aev_time_t aev__clock(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail with a valid pointer on any system we build for. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (aev_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

aev_time_t aev_time(void)
{
    return aev__clock();
}
