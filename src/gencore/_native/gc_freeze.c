/* Thread freeze: park every other thread in a signal handler that saves its registers.
 *
 * The controller (the thread that will fork) lists /proc/self/task with raw getdents64,
 * gives each thread a slot, and sends it the private freeze signal with tgkill. The handler
 * finds its slot by tid, saves the interrupted context (general registers, FP/SIMD state,
 * signal mask, fs/gs base) and parks on a futex until the controller releases everyone.
 * New threads that appear meanwhile are found by rescanning until the list is stable.
 * A thread that does not park within the timeout (signal blocked, uninterruptible sleep)
 * keeps a slot marked GC_T_TIMEOUT with sp/pc from /proc/self/task/TID/syscall.
 *
 * No malloc and no libc locks once the first thread is parked: a parked thread may hold any
 * of them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gc_procfs.h"
#include "gc_snapshot.h"
#include "gc_sys.h"

static struct gc_snapshot *volatile g_snap; /* non-NULL while a freeze is in flight */
static int g_release;                       /* futex word: bumped to release parked threads */
static int g_parked;                        /* futex word: number of threads parked */
static int g_expected;                      /* threads signaled so far: the last parker wakes us */
static int g_busy;                          /* one snapshot at a time, process-wide */
static int32_t g_busy_tid;                  /* the thread that holds g_busy */
static int g_handler_kept;                  /* our handler stays installed (stale signals) */
static struct sigaction g_old_action;
static int g_old_signal;

int gc_freeze_busy(void) { return __atomic_load_n(&g_busy, __ATOMIC_ACQUIRE); }
int32_t gc_freeze_owner(void) { return __atomic_load_n(&g_busy_tid, __ATOMIC_ACQUIRE); }

static void futex_wake_all(int *word)
{
    gc_sys6(SYS_futex, (long)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, 0, 0, 0);
}

static void freeze_handler(int sig, siginfo_t *info, void *ucontext)
{
    (void)sig;
    (void)info;
    struct gc_snapshot *s = __atomic_load_n(&g_snap, __ATOMIC_ACQUIRE);
    if (!s) return; /* stale signal from a past snapshot */
    int32_t tid = (int32_t)gc_gettid();
    uint32_t n = __atomic_load_n(&s->nthreads, __ATOMIC_ACQUIRE);
    struct gc_thread *t = NULL;
    for (uint32_t i = 1; i < n; i++) {
        if (s->threads[i].tid == tid) {
            t = &s->threads[i];
            break;
        }
    }
    if (!t || __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) != GC_T_SIGNALED) return;

    int release = __atomic_load_n(&g_release, __ATOMIC_ACQUIRE);
    const ucontext_t *uc = ucontext;
    gc_regs_from_ucontext(uc, t);
    gc_memcopy(&t->sigmask, &uc->uc_sigmask, sizeof t->sigmask);
    t->fp_len = gc_fp_from_ucontext(uc, t->fp, GC_FP_CAP);
    t->uc_at = (uint64_t)(uintptr_t)uc;
    t->fp_at = gc_fp_address(uc);

    int expected = GC_T_SIGNALED;
    if (!__atomic_compare_exchange_n(&t->state, &expected, GC_T_PARKED, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return; /* the controller gave up on us already */
    /* Only the last thread to park wakes the controller: one context switch, not one per thread. */
    if (__atomic_add_fetch(&g_parked, 1, __ATOMIC_ACQ_REL) >= __atomic_load_n(&g_expected, __ATOMIC_ACQUIRE))
        futex_wake_all(&g_parked);
    while (__atomic_load_n(&g_release, __ATOMIC_ACQUIRE) == release)
        gc_sys6(SYS_futex, (long)&g_release, FUTEX_WAIT_PRIVATE, release, 0, 0, 0);
    /* errno is untouched: every call above is a raw syscall. */
}

/* Parse "nr a1 a2 a3 a4 a5 a6 sp pc" or "-1 sp pc" from /proc/self/task/TID/syscall. */
static void regs_from_proc_syscall(struct gc_thread *t)
{
    char path[64], buf[256];
    gc_task_path(path, sizeof path, t->tid, "syscall");
    if (gc_read_small(path, buf, sizeof buf) <= 0) return;
    uint64_t vals[10];
    int nv = 0;
    char *p = buf;
    while (*p && nv < 10) {
        while (*p == ' ' || *p == '\n') p++;
        if (!*p) break;
        int neg = 0;
        uint64_t v = 0;
        if (*p == '-') {
            neg = 1;
            p++;
        }
        if (p[0] == '0' && p[1] == 'x') {
            p += 2;
            for (; *p && *p != ' ' && *p != '\n'; p++) {
                int c = *p;
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (d < 0) return;
                v = v * 16 + (uint64_t)d;
            }
        } else if (*p >= '0' && *p <= '9') {
            for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
        } else {
            return; /* "running": nothing usable */
        }
        vals[nv++] = neg ? (uint64_t)(-(int64_t)v) : v;
    }
    if (nv != 9 && nv != 3) return;
    gc_regs_from_sp_pc(t->regs, nv == 9 ? vals[0] : (uint64_t)-1, vals[nv - 2], vals[nv - 1]);
}

static int task_exists(int32_t tid)
{
    char path[48];
    gc_task_path(path, sizeof path, tid, NULL);
    long fd = gc_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    gc_close((int)fd);
    return 1;
}

/* True if /proc/self/task/TID/status says the thread blocks sig: it cannot park, so there is
 * no point in waiting for it. */
static uint64_t status_mask(const char *buf, const char *key)
{
    size_t k = gc_strlen(key);
    for (const char *p = buf; *p; p++) {
        if ((p == buf || p[-1] == '\n') && gc_startswith(p, key)) {
            p += k;
            while (*p == ' ' || *p == '\t') p++;
            uint64_t mask = 0;
            for (; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++)
                mask = mask * 16 + (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
            return mask;
        }
    }
    return 0;
}

/* The thread blocks our signal and it is still pending for it: it will not run the handler.
 * (Blocked but no longer pending means it was delivered: the thread is inside our handler,
 * which blocks the signal while it runs, and parks in a moment. A slow or emulated CPU can
 * take milliseconds to get there.) */
static int blocks_signal(int32_t tid, int sig)
{
    char path[64], buf[2048];
    gc_task_path(path, sizeof path, tid, "status");
    if (gc_read_small(path, buf, sizeof buf) <= 0 || sig < 1 || sig > 64) return 0;
    uint64_t bit = 1ull << (sig - 1);
    return (status_mask(buf, "SigBlk:") & bit) && (status_mask(buf, "SigPnd:") & bit);
}

/* Give up on a thread that did not park: partial registers from /proc. */
static void mark_incomplete(struct gc_snapshot *s, struct gc_thread *t)
{
    regs_from_proc_syscall(t);
    s->timed_out++;
    g_handler_kept = 1; /* its signal is still pending: keep an inert handler */
}

int gc_freeze_prepare(struct gc_snapshot *s)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&g_busy, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return -EBUSY;
    __atomic_store_n(&g_busy_tid, (int32_t)gc_gettid(), __ATOMIC_RELEASE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = freeze_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigdelset(&sa.sa_mask, SIGSEGV);
    sigdelset(&sa.sa_mask, SIGBUS);
    sigdelset(&sa.sa_mask, SIGILL);
    sigdelset(&sa.sa_mask, SIGFPE);
    if (!(g_handler_kept && g_old_signal == s->o->freeze_signal)) {
        struct sigaction old;
        if (sigaction(s->o->freeze_signal, NULL, &old) < 0) goto fail_errno;
        if ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL
                                        : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) {
            __atomic_store_n(&g_busy, 0, __ATOMIC_RELEASE);
            return -EEXIST; /* the application uses this signal */
        }
        if (sigaction(s->o->freeze_signal, &sa, &g_old_action) < 0) goto fail_errno;
        g_old_signal = s->o->freeze_signal;
        g_handler_kept = 0;
    }
    return 0;
fail_errno : {
    int e = errno;
    __atomic_store_n(&g_busy, 0, __ATOMIC_RELEASE);
    return -e;
}
}

struct scan {
    struct gc_snapshot *s;
    uint32_t *signaled; /* NULL: list without signalling */
    int added;
};

static int scan_one(long number, void *arg)
{
    struct scan *sc = arg;
    struct gc_snapshot *s = sc->s;
    int32_t tid = (int32_t)number;
    for (uint32_t i = 0; i < s->nthreads; i++)
        if (s->threads[i].tid == tid) return 0; /* known */
    if (s->nthreads >= s->cap) return 0; /* no slot: it stays out of the core */
    struct gc_thread *t = &s->threads[s->nthreads];
    t->tid = tid;
    t->fp_len = 0;
    t->tls = t->tls2 = 0;
    __atomic_store_n(&t->state, sc->signaled ? GC_T_SIGNALED : GC_T_TIMEOUT, __ATOMIC_RELEASE);
    __atomic_store_n(&s->nthreads, s->nthreads + 1, __ATOMIC_RELEASE);
    if (!sc->signaled) {
        regs_from_proc_syscall(t);
        sc->added++;
        return 0;
    }
    __atomic_add_fetch(&g_expected, 1, __ATOMIC_ACQ_REL);
    if (gc_sys3(SYS_tgkill, s->proc.pid, tid, s->o->freeze_signal) < 0) {
        __atomic_sub_fetch(&g_expected, 1, __ATOMIC_ACQ_REL);
        int expected = GC_T_SIGNALED;
        __atomic_compare_exchange_n(&t->state, &expected, GC_T_GONE, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    } else {
        (*sc->signaled)++;
        sc->added++;
    }
    return 0;
}

/* Add every task of /proc/self/task that has no slot yet; signal it unless signaled is NULL.
 * Returns how many were new. */
static int scan_and_signal(struct gc_snapshot *s, int task_fd, uint32_t *signaled)
{
    struct scan sc = {s, signaled, 0};
    gc_dir_numbers(task_fd, scan_one, &sc);
    return sc.added;
}

static void list_unfrozen(struct gc_snapshot *s, int task_fd)
{
    scan_and_signal(s, task_fd, NULL);
    for (uint32_t i = 1; i < s->nthreads; i++) s->timed_out++;
}

int gc_freeze_all(struct gc_snapshot *s)
{
    uint64_t t0 = gc_now_ns();
    __atomic_store_n(&g_parked, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_expected, 0, __ATOMIC_RELEASE);
    s->parked = s->timed_out = 0;
    long task_fd = gc_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (task_fd < 0) return (int)task_fd;
    if (!s->o->want_threads) {
        /* Only the caller is captured. The others are still listed, with the sp/pc the kernel
         * reports, because readers check thread ids against the PRSTATUS set. */
        list_unfrozen(s, (int)task_fd);
        gc_close((int)task_fd);
        s->freeze_ns = gc_now_ns() - t0;
        return 0;
    }
    __atomic_store_n(&g_snap, s, __ATOMIC_RELEASE);

    uint32_t signaled = 0;
    uint64_t deadline = t0 + s->o->freeze_timeout_ns;
    int checked_masks = 0;
    for (int round = 0; round < 64; round++) {
        int added = scan_and_signal(s, (int)task_fd, &signaled);
        if (round > 0 && added == 0) break;
        /* Wait until every signaled thread parked, or the deadline. */
        for (;;) {
            int parked = __atomic_load_n(&g_parked, __ATOMIC_ACQUIRE);
            if ((uint32_t)parked >= signaled) break;
            uint64_t now = gc_now_ns();
            if (now >= deadline) break;
            uint64_t left = deadline - now;
            uint64_t cap = checked_masks ? 10000000ull : 1000000ull; /* re-check laggards */
            if (left > cap) left = cap;
            struct {
                long sec, nsec;
            } ts = {(long)(left / 1000000000ull), (long)(left % 1000000000ull)};
            gc_sys6(SYS_futex, (long)&g_parked, FUTEX_WAIT_PRIVATE, parked, (long)&ts, 0, 0);
            /* A signaled thread that exited, or that blocks the signal, will never park: stop
             * waiting for it. Checked once the quick path (everyone parks in well under a
             * millisecond) is over, so the common case reads no /proc files. */
            if (gc_now_ns() - t0 < 2000000ull) continue;
            for (uint32_t i = 1; i < s->nthreads; i++) {
                struct gc_thread *t = &s->threads[i];
                if (__atomic_load_n(&t->state, __ATOMIC_ACQUIRE) != GC_T_SIGNALED) continue;
                int gone = !task_exists(t->tid);
                int blocked = !gone && !checked_masks && blocks_signal(t->tid, s->o->freeze_signal);
                if (!gone && !blocked) continue;
                int expected = GC_T_SIGNALED;
                if (__atomic_compare_exchange_n(&t->state, &expected,
                                                gone ? GC_T_GONE : GC_T_TIMEOUT, 0,
                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                    signaled--;
                    __atomic_sub_fetch(&g_expected, 1, __ATOMIC_ACQ_REL);
                    if (blocked) mark_incomplete(s, t);
                }
            }
            checked_masks = 1;
        }
        if (gc_now_ns() >= deadline) break;
    }
    /* Whoever did not park is incomplete: sp/pc from /proc where the kernel tells them. */
    for (uint32_t i = 1; i < s->nthreads; i++) {
        struct gc_thread *t = &s->threads[i];
        int expected = GC_T_SIGNALED;
        if (__atomic_compare_exchange_n(&t->state, &expected, GC_T_TIMEOUT, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            if (!task_exists(t->tid)) {
                __atomic_store_n(&t->state, GC_T_GONE, __ATOMIC_RELEASE);
                continue;
            }
            mark_incomplete(s, t);
        } else if (expected == GC_T_PARKED) {
            s->parked++;
        }
    }
    gc_close((int)task_fd);
    s->freeze_ns = gc_now_ns() - t0;
    return 0;
}

void gc_freeze_release(struct gc_snapshot *s)
{
    (void)s;
    __atomic_store_n(&g_snap, NULL, __ATOMIC_RELEASE);
    __atomic_add_fetch(&g_release, 1, __ATOMIC_ACQ_REL);
    futex_wake_all(&g_release);
}

void gc_freeze_finish(struct gc_snapshot *s)
{
    if (!g_handler_kept) sigaction(s->o->freeze_signal, &g_old_action, NULL);
    __atomic_store_n(&g_busy_tid, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_busy, 0, __ATOMIC_RELEASE);
}
