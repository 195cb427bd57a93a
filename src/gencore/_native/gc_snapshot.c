/* Snapshot orchestration in the parent: buffers, freeze, caller context, clone, release.
 *
 * The pause the application sees is gc_freeze_all() + the caller's context + clone().
 * Everything that allocates happens before the freeze; everything slow happens in the child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/auxv.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "gc_procfs.h"
#include "gc_snapshot.h"
#include "gc_sys.h"

#define CHILD_STACK_SIZE (1u << 20)

static size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Map the thread slots, their FP buffers and the child's stack; all MADV_DONTDUMP so
 * they never show up as data in a core. */
static int map_buffers(struct gc_snapshot *s, uint32_t cap)
{
    size_t slots = round_up(sizeof(struct gc_thread) * cap, 64);
    size_t total = round_up(slots + (size_t)GC_FP_CAP * cap, 4096);
    void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -errno;
    madvise(m, total, MADV_DONTDUMP);
    s->slots_map = m;
    s->slots_map_size = total;
    s->threads = m;
    s->cap = cap;
    for (uint32_t i = 0; i < cap; i++)
        s->threads[i].fp = (unsigned char *)m + slots + (size_t)GC_FP_CAP * i;

    void *st = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED) {
        int e = errno;
        munmap(m, total);
        s->slots_map = NULL;
        return -e;
    }
    madvise(st, CHILD_STACK_SIZE, MADV_DONTDUMP);
    s->child_stack = st;
    s->child_stack_size = CHILD_STACK_SIZE;
    return 0;
}

void gc_snapshot_cleanup(struct gc_snapshot *s)
{
    if (s->slots_map) munmap(s->slots_map, s->slots_map_size);
    if (s->child_stack) munmap(s->child_stack, s->child_stack_size);
    s->slots_map = s->child_stack = NULL;
}

static int count_one(long number, void *arg)
{
    (void)number;
    (*(int *)arg)++;
    return 0;
}

static int count_tasks(void)
{
    int n = 0;
    long fd = gc_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 64;
    gc_dir_numbers((int)fd, count_one, &n);
    gc_close((int)fd);
    return n;
}

static int child_entry(void *arg)
{
    gc_child_main(arg);
}

/* Take the caller's context and fork, in one frame: the registers saved here describe a stack
 * that the child never writes to (it runs on its own stack). */
static __attribute__((noinline)) pid_t capture_and_fork(struct gc_snapshot *s)
{
    struct gc_thread *me = &s->threads[0];
    ucontext_t uc;
    if (s->caller_uc) {
        /* In a signal handler: the thread as it was when the signal arrived. */
        const ucontext_t *iuc = s->caller_uc;
        gc_regs_from_ucontext(iuc, me);
        memcpy(&me->sigmask, &iuc->uc_sigmask, sizeof me->sigmask);
        me->fp_len = gc_fp_from_ucontext(iuc, me->fp, GC_FP_CAP);
        me->uc_at = (uint64_t)(uintptr_t)iuc;
        me->fp_at = gc_fp_address(iuc);
    } else {
        memset(&uc, 0, sizeof uc);
        getcontext(&uc);
        gc_regs_from_ucontext(&uc, me);
        memcpy(&me->sigmask, &uc.uc_sigmask, sizeof me->sigmask);
        me->fp_len = gc_fp_self(&uc, me->fp, GC_FP_CAP);
        me->uc_at = (uint64_t)(uintptr_t)&uc; /* its FP copy is inside it */
    }
    /* Exit signal 0: the child is invisible to waitpid(-1) reapers and to SIGCHLD=SIG_IGN
     * auto-reaping; we reap it with __WALL. */
    void *top = (char *)s->child_stack + s->child_stack_size - 64;
    return clone(child_entry, top, 0, s);
}

void gc_procinfo_fill(struct gc_procinfo *p)
{
    p->pid = (int32_t)gc_getpid();
    p->ppid = (int32_t)gc_sys0(SYS_getppid);
    p->pgrp = (int32_t)gc_sys1(SYS_getpgid, 0);
    p->sid = (int32_t)gc_sys1(SYS_getsid, 0);
    p->uid = (uint32_t)gc_sys0(SYS_getuid);
    p->gid = (uint32_t)gc_sys0(SYS_getgid);
    long page = (long)getauxval(AT_PAGESZ); /* reads a static: async-signal-safe */
    p->page_size = page > 0 ? (uint64_t)page : 4096;
    gc_memzero(p->comm, sizeof p->comm);
    long n = gc_read_small("/proc/self/comm", p->comm, sizeof p->comm);
    if (n > 0 && p->comm[n - 1] == '\n') p->comm[n - 1] = 0;
}

int gc_snapshot_run(struct gc_snapshot *s, pid_t *child_pid)
{
    int rc;
    *child_pid = -1;
    uint32_t cap = (uint32_t)count_tasks() * 2 + 64;
    rc = map_buffers(s, cap);
    if (rc < 0) return rc;
    s->threads[0].tid = (int32_t)gc_gettid();
    s->threads[0].state = GC_T_CALLER;
    s->nthreads = 1;

    rc = gc_freeze_prepare(s);
    if (rc < 0) {
        gc_snapshot_cleanup(s);
        return rc;
    }
    rc = gc_freeze_all(s);
    if (rc == 0) {
        uint64_t t0 = gc_now_ns();
        pid_t pid = capture_and_fork(s);
        if (pid < 0) rc = -errno;
        s->fork_ns = gc_now_ns() - t0;
        *child_pid = pid;
    }
    gc_freeze_release(s);
    gc_freeze_finish(s);
    /* Threads run again: allocating is safe from here on, except in a signal handler. */
    struct gc_snapshot_summary *sum = &s->summary;
    sum->threads = s->in_signal ? NULL : malloc(sizeof *sum->threads * s->nthreads);
    for (uint32_t i = 0; sum->threads && i < s->nthreads; i++) {
        sum->threads[sum->n].tid = s->threads[i].tid;
        sum->threads[sum->n].state = s->threads[i].state;
        sum->n++;
    }
    gc_snapshot_cleanup(s);
    return rc;
}

const char *gc_thread_state_name(int state)
{
    switch (state) {
    case GC_T_CALLER:
        return "caller";
    case GC_T_PARKED:
        return "parked";
    case GC_T_TIMEOUT:
        return "incomplete";
    default:
        return "gone";
    }
}
