/* Benchmark helpers, loaded with ctypes.
 * probe_start(): a native thread (no GIL) spinning on the monotonic clock; probe_max_gap_ns()
 * is the longest time it was kept from running since the last probe_reset().
 * bare_fork_ns(): duration of a raw fork() of this process (the child exits at once). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int running;
static volatile uint64_t max_gap, reset_req;
static pthread_t th;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *spin(void *arg)
{
    (void)arg;
    uint64_t last = now_ns();
    while (running) {
        uint64_t t = now_ns();
        if (reset_req) {
            reset_req = 0;
            max_gap = 0;
        } else if (t - last > max_gap) {
            max_gap = t - last;
        }
        last = t;
    }
    return NULL;
}

int probe_start(void)
{
    running = 1;
    return pthread_create(&th, NULL, spin, NULL);
}

void probe_stop(void)
{
    running = 0;
    pthread_join(th, NULL);
}

void probe_reset(void)
{
    reset_req = 1;
    while (reset_req) usleep(50);
}

uint64_t probe_max_gap_ns(void) { return max_gap; }

uint64_t bare_fork_ns(void)
{
    uint64_t t0 = now_ns();
    long pid = syscall(SYS_fork);
    if (pid == 0) syscall(SYS_exit_group, 0);
    uint64_t t1 = now_ns();
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid > 0 ? t1 - t0 : 0;
}
