/* method="kernel": the original technique. A raw fork()ed copy of the caller crashes with
 * SIGSEGV inside a private directory so that the kernel writes its core there.
 *
 * The fork is a raw clone syscall (no atfork handlers, no glibc bookkeeping); the child uses
 * only raw syscalls until it dies. It is never a second running copy of the application:
 * SIGSEGV is reset to its default action before it is raised, so no handler (faulthandler,
 * the application's) runs, and exit_group() follows as a guard. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "gc_kernel.h"
#include "gc_sys.h"

struct gc_ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

struct gc_rlimit64 {
    uint64_t cur, max;
};

static void raise_limit(int resource)
{
    struct gc_rlimit64 r;
    if (gc_sys4(SYS_prlimit64, 0, resource, 0, &r) == 0) {
        r.cur = r.max;
        gc_sys4(SYS_prlimit64, 0, resource, &r, 0);
    }
}

/* Where the C library keeps this thread's kernel tid in its thread descriptor: found by
 * value, the way debuggers find it. -1 if not found exactly once. */
static long tid_offset(const char *self, int32_t tid)
{
    long found = -1;
    for (long off = 0; off < 2048; off += 4) {
        if (*(const int32_t *)(self + off) == tid) {
            if (found >= 0) return -1;
            found = off;
        }
    }
    return found;
}

static __attribute__((noreturn)) void child(int dir_fd, int make_dumpable, char *self, long off)
{
    /* What glibc's fork() does for the new process: the thread descriptor names the new tid.
     * Tools that match threads by pthread descriptor (pystack on Python <= 3.10, gdb's
     * libthread_db) then find the core's only thread. */
    if (off >= 0) *(volatile int32_t *)(self + off) = (int32_t)gc_gettid();
    uint64_t all = ~0ull, segv = 1ull << (SIGSEGV - 1);
    gc_sys4(SYS_rt_sigprocmask, SIG_BLOCK, &all, 0, 8);
    struct gc_ksigaction dfl = {SIG_DFL, 0, 0, 0};
    gc_sys4(SYS_rt_sigaction, SIGSEGV, &dfl, 0, 8);
    if (gc_sys1(SYS_fchdir, dir_fd) != 0) gc_sys1(SYS_exit_group, 126);
    /* Nothing of the application stays open in the dying copy (pipes, sockets, locks). */
    gc_sys3(SYS_close_range, 0, ~0u, 0);
    raise_limit(RLIMIT_CORE);
    raise_limit(RLIMIT_FSIZE);
    long fd = gc_open("/proc/self/coredump_filter", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        gc_write((int)fd, "0xff", 4);
        gc_close((int)fd);
    }
    if (make_dumpable) gc_sys5(SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0);
    gc_sys4(SYS_rt_sigprocmask, SIG_UNBLOCK, &segv, 0, 8);
    gc_sys3(SYS_tgkill, gc_getpid(), gc_gettid(), SIGSEGV);
    for (;;) gc_sys1(SYS_exit_group, 127);
}

long gc_kernel_fork(int dir_fd, int make_dumpable)
{
    /* clone(flags = 0): a fork with exit signal 0, so SIGCHLD handlers and waitpid(-1)
     * reapers of the application never see it; the caller reaps it with __WALL. */
    char *self = (char *)pthread_self();
    long off = tid_offset(self, (int32_t)gc_gettid());
    long pid = gc_sys5(SYS_clone, 0, 0, 0, 0, 0);
    if (pid == 0) child(dir_fd, make_dumpable, self, off);
    return pid;
}
