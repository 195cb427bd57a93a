/* Alternate signal stacks for the crash handler, so that a stack overflow still gets a core.
 *
 * sigaltstack is per thread and only a thread can set its own. The thread that installs the
 * triggers sets one directly, and so does every thread started through Python's threading
 * or _thread, before its first Python frame runs (gc_altstack_adopt(), from the Python side's
 * hook). Every other thread, present or started later by C code, is found by
 * gc_altstack_scan() on the gencore helper thread, which maps a stack for it and sends it a private real-time signal whose
 * handler installs that stack (in the interrupted context, which rt_sigreturn applies) (unless the thread already has one at least as large, e.g.
 * faulthandler's bigger one). Stacks of threads that are gone are unmapped by the next scan:
 * no handler can run on them any more. gc_altstack_stop() puts back each thread's previous
 * alternate stack (signalled again) and unmaps only stacks no thread still uses.
 *
 * The handler uses raw system calls only (errno untouched) and lock-free slots.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/auxv.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "gc_altstack.h"
#include "gc_procfs.h"
#include "gc_sys.h"

#define MAX_SLOTS 4096
/* one page below each stack: the page size of the machine (4, 16 or 64 KiB on arm64) */
static unsigned long g_guard = 4096;
#define GUARD g_guard

/* A slot's life: claimed (S_SENT, signal on its way), then one party (the signal handler, or
 * the thread itself adopting it) moves it to S_BUSY and puts the stack: S_INSTALLED, or
 * S_KEPT when the thread has a large enough one of its own. */
enum { S_EMPTY = 0, S_SENT, S_BUSY, S_INSTALLED, S_KEPT, S_RESTORED };

struct kstack { /* the kernel's stack_t */
    void *sp;
    int flags;
    size_t size;
};

struct slot {
    int32_t tid;
    int32_t state;
    uint32_t seen;
    int32_t pad;
    char *map; /* GUARD + GC_ALTSTACK_SIZE bytes, the guard page first */
    struct kstack old;
};

static struct slot *g_slots; /* mmapped: MAX_SLOTS */
static int g_sig;
static int g_restoring;
static uint32_t g_gen;
static struct sigaction g_old_action;

static struct slot *find(int32_t tid)
{
    for (int i = 0; i < MAX_SLOTS; i++)
        if (__atomic_load_n(&g_slots[i].tid, __ATOMIC_ACQUIRE) == tid) return &g_slots[i];
    return NULL;
}

/* Set this thread's alternate stack. In a signal handler (uc) it must go into the saved
 * context: rt_sigreturn restores the alternate stack from there. */
static int set_altstack(const struct kstack *k, void *uc)
{
    if (!uc) return gc_sys2(SYS_sigaltstack, k, 0) == 0;
    ucontext_t *u = uc;
    u->uc_stack.ss_sp = k->sp;
    u->uc_stack.ss_flags = k->flags;
    u->uc_stack.ss_size = k->size;
    return 1;
}

/* Put the slot's stack in place, if this caller is the one that moves it out of S_SENT. */
static void put_stack(struct slot *s, void *uc)
{
    int expected = S_SENT;
    if (!__atomic_compare_exchange_n(&s->state, &expected, S_BUSY, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    struct kstack cur;
    if (gc_sys2(SYS_sigaltstack, 0, &cur) != 0) {
        __atomic_store_n(&s->state, S_KEPT, __ATOMIC_RELEASE);
        return;
    }
    if (!(cur.flags & SS_DISABLE) && cur.size >= GC_ALTSTACK_SIZE) {
        __atomic_store_n(&s->state, S_KEPT, __ATOMIC_RELEASE); /* big enough already */
        return;
    }
    s->old = cur;
    struct kstack ours = {s->map + GUARD, 0, GC_ALTSTACK_SIZE};
    __atomic_store_n(&s->state, set_altstack(&ours, uc) ? S_INSTALLED : S_KEPT,
                     __ATOMIC_RELEASE);
}

static void take_back(struct slot *s, void *uc)
{
    struct kstack cur;
    if (gc_sys2(SYS_sigaltstack, 0, &cur) != 0) return;
    if (cur.sp == s->map + GUARD) {
        struct kstack prev = s->old;
        if (prev.flags & SS_DISABLE) prev = (struct kstack){0, SS_DISABLE, 0};
        if (!set_altstack(&prev, uc)) return; /* running on it: keep it */
    }
    __atomic_store_n(&s->state, S_RESTORED, __ATOMIC_RELEASE);
}

static void handler(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)info;
    struct slot *s = find((int32_t)gc_gettid());
    if (!s) return;
    int st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&g_restoring, __ATOMIC_ACQUIRE)) {
        if (st == S_INSTALLED) take_back(s, uc);
    } else {
        put_stack(s, uc);
    }
}

/* A free slot for tid, its stack mapped (the helper thread and a starting thread may claim
 * at the same time: the tid is taken with a compare-and-swap). */
static struct slot *claim(int32_t tid)
{
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &g_slots[i];
        int32_t expected = 0;
        if (__atomic_load_n(&s->tid, __ATOMIC_ACQUIRE) != 0 ||
            !__atomic_compare_exchange_n(&s->tid, &expected, tid, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        long m = gc_sys6(SYS_mmap, 0, GUARD + GC_ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m < 0 && m > -4096) {
            __atomic_store_n(&s->tid, 0, __ATOMIC_RELEASE);
            return NULL;
        }
        gc_sys3(SYS_mprotect, m, GUARD, PROT_NONE);
        gc_sys3(SYS_madvise, m, GUARD + GC_ALTSTACK_SIZE, MADV_DONTDUMP);
        s->map = (char *)m;
        s->seen = g_gen;
        __atomic_store_n(&s->state, S_SENT, __ATOMIC_RELEASE);
        return s;
    }
    return NULL; /* more threads than slots: the rest run without a stack of ours */
}

static void release(struct slot *s)
{
    if (s->map) gc_sys2(SYS_munmap, s->map, GUARD + GC_ALTSTACK_SIZE);
    s->map = NULL;
    s->state = S_EMPTY;
    __atomic_store_n(&s->tid, 0, __ATOMIC_RELEASE);
}

static int see(long number, void *arg)
{
    (void)arg;
    int32_t tid = (int32_t)number;
    struct slot *s = find(tid);
    if (s) {
        s->seen = g_gen;
        return 0;
    }
    s = claim(tid);
    if (s && tid == (int32_t)gc_gettid())
        put_stack(s, NULL);
    else if (s && gc_sys3(SYS_tgkill, gc_getpid(), tid, g_sig) < 0)
        release(s); /* it exited meanwhile */
    return 0;
}

int gc_altstack_adopt(void)
{
    struct slot *slots = __atomic_load_n(&g_slots, __ATOMIC_ACQUIRE);
    if (!slots) return -ENOENT;
    int32_t tid = (int32_t)gc_gettid();
    struct slot *s = find(tid);
    if (!s) s = claim(tid);
    if (!s) return -ENOMEM;
    /* The helper thread may be claiming this very thread: its stack is mapped in a moment. */
    for (int spin = 0; spin < 100000 && __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == S_EMPTY;
         spin++)
        gc_sys0(SYS_sched_yield);
    put_stack(s, NULL);
    int st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    struct kstack cur;
    if ((st == S_INSTALLED || st == S_KEPT) && gc_sys2(SYS_sigaltstack, 0, &cur) == 0 &&
        ((cur.flags & SS_DISABLE) || cur.size < GC_ALTSTACK_SIZE)) {
        /* the slot of a gone thread whose tid this one reuses: its stack is free */
        __atomic_store_n(&s->state, S_SENT, __ATOMIC_RELEASE);
        put_stack(s, NULL);
        st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    }
    return st == S_INSTALLED || st == S_KEPT ? 0 : -EAGAIN;
}

void gc_altstack_scan(void)
{
    if (!g_slots) return;
    long fd = gc_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    g_gen++;
    gc_dir_numbers((int)fd, see, NULL);
    gc_close((int)fd);
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &g_slots[i];
        if (__atomic_load_n(&s->tid, __ATOMIC_ACQUIRE) && s->seen != g_gen) release(s); /* gone */
    }
}

int gc_altstack_start(int sig)
{
    long page = (long)getauxval(AT_PAGESZ);
    if (page > 0) g_guard = (unsigned long)page;
    if (g_slots) return 0;
    struct sigaction old;
    if (sigaction(sig, NULL, &old) < 0) return -errno;
    if ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL
                                    : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN))
        return -EEXIST; /* the application uses this signal */
    void *m = mmap(NULL, sizeof(struct slot) * MAX_SLOTS, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -errno;
    madvise(m, sizeof(struct slot) * MAX_SLOTS, MADV_DONTDUMP);
    g_slots = m;
    g_sig = sig;
    __atomic_store_n(&g_restoring, 0, __ATOMIC_RELEASE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    if (sigaction(sig, &sa, &g_old_action) < 0) {
        int e = errno;
        munmap(g_slots, sizeof(struct slot) * MAX_SLOTS);
        g_slots = NULL;
        return -e;
    }
    gc_altstack_scan(); /* this thread directly, the others by signal */
    return 0;
}

void gc_altstack_stop(void)
{
    if (!g_slots) return;
    __atomic_store_n(&g_restoring, 1, __ATOMIC_RELEASE);
    int32_t me = (int32_t)gc_gettid();
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &g_slots[i];
        int32_t tid = __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE);
        if (!tid || __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != S_INSTALLED) continue;
        if (tid == me)
            take_back(s, NULL);
        else if (gc_sys3(SYS_tgkill, gc_getpid(), tid, g_sig) < 0)
            __atomic_store_n(&s->state, S_RESTORED, __ATOMIC_RELEASE); /* gone */
    }
    /* Give the others a moment to put their previous stacks back. */
    for (int round = 0; round < 50; round++) {
        int pending = 0;
        for (int i = 0; i < MAX_SLOTS; i++)
            if (g_slots[i].tid && __atomic_load_n(&g_slots[i].state, __ATOMIC_ACQUIRE) == S_INSTALLED)
                pending++;
        if (!pending) break;
        struct {
            long sec, nsec;
        } ts = {0, 2000000};
        gc_sys2(SYS_nanosleep, &ts, 0);
    }
    int leaked = 0;
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &g_slots[i];
        if (!s->tid) continue;
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == S_INSTALLED) {
            leaked = 1; /* a thread that never took the signal still has it: leave it mapped */
            continue;
        }
        release(s);
    }
    sigaction(g_sig, &g_old_action, NULL);
    if (!leaked) munmap(g_slots, sizeof(struct slot) * MAX_SLOTS);
    g_slots = NULL;
}

void gc_altstack_forget(void)
{
    /* A forked child: one thread, which keeps its stack (inherited memory); the handler goes
     * so that installing again starts afresh. */
    if (g_slots) sigaction(g_sig, &g_old_action, NULL);
    g_slots = NULL;
}

uint32_t gc_altstack_count(void)
{
    uint32_t n = 0;
    if (!g_slots) return 0;
    for (int i = 0; i < MAX_SLOTS; i++) {
        int st = __atomic_load_n(&g_slots[i].state, __ATOMIC_ACQUIRE);
        if (g_slots[i].tid && (st == S_INSTALLED || st == S_KEPT)) n++;
    }
    return n;
}
