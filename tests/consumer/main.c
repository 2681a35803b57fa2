/*
 * Minimal downstream program: links against an installed libasyncev and checks that a timer
 * fires. Exits non-zero if anything goes wrong.
 */
#include <asyncev.h>

#include <stdio.h>

static void on_timer(aev_watcher *w, unsigned events)
{
    int *fired = w->data;
    if (events & AEV_TIMER)
        (*fired)++;
}

int main(void)
{
    aev_loop *loop = NULL;
    aev_timer timer;
    int fired = 0;
    int rc;

    if (aev_version() != AEV_VERSION_HEX) {
        fprintf(stderr, "consumer: header is 0x%06x, library is 0x%06x\n", AEV_VERSION_HEX,
                aev_version());
        return 1;
    }
    rc = aev_loop_new(&loop, 0);
    if (rc < 0) {
        fprintf(stderr, "consumer: aev_loop_new: %s\n", aev_strerror(rc));
        return 1;
    }
    rc = aev_timer_init(&timer, loop, on_timer, AEV_MSEC(1), 0);
    if (rc == 0) {
        timer.base.data = &fired;
        rc = aev_timer_start(&timer);
    }
    if (rc == 0)
        rc = aev_run(loop, AEV_RUN_DEFAULT);
    if (rc < 0) {
        fprintf(stderr, "consumer: %s\n", aev_strerror(rc));
        aev_loop_destroy(loop);
        return 1;
    }
    rc = aev_loop_destroy(loop);
    if (rc < 0 || fired != 1) {
        fprintf(stderr, "consumer: destroy %d, timer fired %d times (expected 1)\n", rc, fired);
        return 1;
    }
    printf("consumer: OK (libasyncev 0x%06x via find_package)\n", aev_version());
    return 0;
}
