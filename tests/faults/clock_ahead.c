/* LD_PRELOAD shim for tests/it/faults.rs: the wall clock (clock_gettime CLOCK_REALTIME, which
 * Rust's SystemTime reads) runs LEADFLOW_TEST_CLOCK_AHEAD_SECONDS ahead. gettimeofday and the
 * monotonic clocks are left alone: librdkafka computes its condition-variable deadlines from
 * gettimeofday, and shifting those (as libfaketime does) makes every timed wait hang. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static long ahead = -1;

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) {
        real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    }
    int r = real_clock_gettime(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        if (ahead < 0) {
            const char *s = getenv("LEADFLOW_TEST_CLOCK_AHEAD_SECONDS");
            ahead = s ? atol(s) : 0;
        }
        ts->tv_sec += ahead;
    }
    return r;
}
