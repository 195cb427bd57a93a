/* The one native helper thread, named "gencore": follows the cores the triggers start, runs
 * the watchdog's checks, gives new threads an alternate stack for the crash handler. It never
 * needs the GIL, so cores are published while a thread stuck in C holds it.
 *
 * A signal handler hands it a started core through a pipe; the thread reads the snapshot
 * child's status records, reaps it, writes the outcome to the events file (read by `gencore
 * trigger`) and to a pipe the Python side listens on, and runs the helper command (bundle,
 * upload, budget) for the finished core.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gc_altstack.h"
#include "gc_sys.h"
#include "gc_trigger_int.h"

extern char **environ;

#define PROGRESS_EVENT_NS 250000000ull

static struct {
    int rfd, wfd; /* started cores, from the handlers */
    pthread_t thread;
    int started;
    int altstacks; /* the crash handler runs on alternate stacks: cover new threads */
    int notify_fd; /* records for the Python listener */
    int nsignals;
    int signals[GC_TRIGGER_MAX_SIGNALS];
} g_r = {.rfd = -1, .wfd = -1, .notify_fd = -1};

int gc_reaper_submit(const struct gc_job *j)
{
    return gc_write(g_r.wfd, j, sizeof *j) == (long)sizeof *j ? 0 : -EPIPE;
}

/* Helpers still running: reaped on the thread's ticks, never waited for (an upload retrying
 * against an unreachable store must not hold up the next core). */
#define MAX_HELPERS 16

struct helper {
    pid_t pid;
    struct gc_trigger_result res; /* told to Python when the helper is done */
};

static struct {
    struct helper list[MAX_HELPERS];
    int n;
} g_helpers;

/* Python is told a core is done once its helper has bundled or uploaded it (on_core gets the
 * bundle), or at once without a helper. */
void gc_reaper_tell(const struct gc_trigger_result *res)
{
    if (g_r.notify_fd >= 0 && gc_write(g_r.notify_fd, res, sizeof *res) == sizeof *res)
        gc_watch_wake(); /* the next tick starts a probe that delivers it */
}

/* Reap the helpers that are done (block: wait for them all). */
static void reap_helpers(int block)
{
    for (int i = 0; i < g_helpers.n;) {
        int status = 0;
        pid_t r = waitpid(g_helpers.list[i].pid, &status, block ? 0 : WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) {
            i++;
            continue;
        }
        /* done, or reaped by an application reaper (ECHILD): its events say how it went */
        gc_reaper_tell(&g_helpers.list[i].res);
        g_helpers.list[i] = g_helpers.list[--g_helpers.n];
    }
}

/* Start the helper command for a finished core (python -m gencore.ship.helper finish ...
 * CORE) from this native thread, so it works while the application is stuck. The helper
 * writes its own events; it runs beside the next cores. Returns 0, or -1 when none ran. */
static int run_helper(const struct gc_job *j, const struct gc_trigger_result *res)
{
    char **argv = gc_trig_helper_argv();
    if (!argv) return -1;
    if (g_helpers.n == MAX_HELPERS) reap_helpers(1); /* a storm: let them finish first */
    int n = 0;
    while (argv[n]) n++;
    argv[n] = (char *)j->final;
    argv[n + 1] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    argv[n] = NULL;
    if (rc != 0) {
        gc_event("bundle-error", "cannot start the bundle helper", 0, 0, 0);
        return -1;
    }
    g_helpers.list[g_helpers.n].pid = pid;
    g_helpers.list[g_helpers.n].res = *res;
    g_helpers.n++;
    return 0;
}

int gc_reaper_helpers(int32_t *pids, int cap)
{
    int n = 0;
    for (int i = 0; i < g_helpers.n && n < cap; i++) pids[n++] = g_helpers.list[i].pid;
    g_helpers.n = 0;
    return n;
}

static void progress_event(const struct gc_job *j, const struct gc_status *rec, void *arg)
{
    uint64_t *next = arg, now = gc_now_ns();
    if (now < *next) return;
    gc_event("progress", j->final, (int64_t)rec->written, (int64_t)rec->total, 1);
    *next = now + PROGRESS_EVENT_NS;
}

void gc_reaper_finish(struct gc_job *j)
{
    struct gc_status last;
    uint64_t next = 0;
    int rc = gc_job_follow(j, gc_trig_config()->core.timeout_ns, progress_event, &next, &last);
    int status;
    gc_job_end(j, rc == 0, 1, &status);
    struct gc_trigger_result res;
    gc_memzero(&res, sizeof res);
    res.kind = rc == 0 ? 1 : 2;
    res.err = -rc;
    res.stage = last.stage;
    res.written = last.written;
    res.total = last.total;
    res.file_size = last.file_size;
    res.elapsed_ns = gc_now_ns() - j->start_ns;
    gc_memcopy(res.name, j->final,
               sizeof res.name < sizeof j->final ? sizeof res.name : sizeof j->final);
    if (rc != 0) {
        __atomic_add_fetch(&gc_trig_stats()->failed, 1, __ATOMIC_ACQ_REL);
        gc_event("error", j->final, -rc, last.stage, 1);
    } else {
        gc_event("done", j->final, 0, 0, 0);
    }
    /* The core is out: the next trigger may start one while the helper bundles or uploads
     * this one. */
    gc_trig_release();
    if (rc != 0 || run_helper(j, &res) < 0) gc_reaper_tell(&res);
}

static void *reaper_main(void *arg)
{
    (void)arg;
    /* Trigger signals go to application threads, so the core shows one of them interrupted.
     * The freeze signal stays open: this thread is frozen like any other. */
    sigset_t mask;
    sigemptyset(&mask);
    for (int i = 0; i < g_r.nsignals; i++) sigaddset(&mask, g_r.signals[i]);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    prctl(PR_SET_NAME, "gencore", 0, 0, 0); /* what debuggers show for this thread */
    struct gc_job j;
    for (;;) {
        int tick_ms = g_r.altstacks ? 50 : gc_watch_enabled() ? 100 : 1000; /* deadlines */
        struct pollfd p = {g_r.rfd, POLLIN, 0};
        long pr = gc_poll(&p, 1, tick_ms);
        if (pr == 0 || pr == -EINTR) {
            if (g_r.altstacks) gc_altstack_scan(); /* threads started since */
            reap_helpers(0);
            gc_watch_tick();
            continue;
        }
        long n = gc_read(g_r.rfd, &j, sizeof j);
        if (n == -EINTR) continue;
        if (n != (long)sizeof j) break; /* uninstall closed the pipe */
        gc_reaper_finish(&j);
    }
    return NULL;
}

static void close_pipe(void)
{
    if (g_r.rfd >= 0) close(g_r.rfd);
    if (g_r.wfd >= 0) close(g_r.wfd);
    g_r.rfd = g_r.wfd = -1;
}

int gc_reaper_start(const struct gc_trigger_config *c)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -errno;
    g_r.rfd = pfd[0];
    g_r.wfd = pfd[1];
    g_r.notify_fd = c->notify_fd;
    g_r.nsignals = c->nsignals;
    for (int i = 0; i < c->nsignals; i++) g_r.signals[i] = c->signals[i];
    int rc = 0;
    if (c->ncrash && c->altstack_signal > 0) {
        rc = gc_altstack_start(c->altstack_signal);
        if (rc < 0) {
            close_pipe();
            return rc;
        }
        g_r.altstacks = 1;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the thread sets its own mask */
    rc = -pthread_create(&g_r.thread, NULL, reaper_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        if (g_r.altstacks) gc_altstack_stop();
        g_r.altstacks = 0;
        close_pipe();
        return rc;
    }
    g_r.started = 1;
    return 0;
}

void gc_reaper_stop(void)
{
    if (g_r.wfd >= 0) close(g_r.wfd);
    g_r.wfd = -1;
    if (g_r.started) pthread_join(g_r.thread, NULL);
    g_r.started = 0;
    close_pipe();
    /* The crash handlers are gone and the thread has stopped: the stacks can go back. */
    if (g_r.altstacks) gc_altstack_stop();
    g_r.altstacks = 0;
}

void gc_reaper_forget(void)
{
    g_helpers.n = 0; /* the parent's */
    g_r.started = 0;
    gc_altstack_forget();
    g_r.altstacks = 0;
    close_pipe();
}
