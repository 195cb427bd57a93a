/* One snapshot: the state shared by the freeze (parent), the fork and the writer (child).
 * No Python API here; gc_module.c is the only file that speaks to the interpreter. */
#ifndef GC_SNAPSHOT_H
#define GC_SNAPSHOT_H

#include <stdint.h>
#include <sys/types.h>

#include "gc_config.h"

#if defined(__x86_64__)
#define GC_NREGS 27 /* user_regs_struct */
#define GC_REG_SP 19  /* rsp */
#define GC_PRSTATUS_SIZE 336
/* The thread pointer (fs_base) is the struct pthread; static TLS lies below it. */
#define GC_TLS_BELOW (16u << 10)
#define GC_TLS_ABOVE (4u << 10)
/* FP state per thread: the largest user XSAVE area on x86_64 today is 11008 bytes (AMX). */
#define GC_FP_CAP 16384
#elif defined(__aarch64__)
#define GC_NREGS 34 /* user_pt_regs: x0-x30, sp, pc, pstate */
#define GC_REG_SP 31
#define GC_PRSTATUS_SIZE 392
/* The thread pointer (tpidr_el0) is the TCB: struct pthread below it, static TLS above. */
#define GC_TLS_BELOW (16u << 10)
#define GC_TLS_ABOVE (16u << 10)
/* FP state per thread: struct user_fpsimd_state (v0-v31, fpsr, fpcr). */
#define GC_FP_CAP 1024
#else
#error "the native snapshot engine supports x86_64 and aarch64 Linux"
#endif

enum gc_thread_state {
    GC_T_EMPTY = 0,
    GC_T_SIGNALED = 1, /* freeze signal sent, handler not run yet */
    GC_T_PARKED = 2,   /* registers saved, thread waits for release */
    GC_T_TIMEOUT = 3,  /* did not park in time: partial registers from /proc */
    GC_T_CALLER = 4,   /* the thread that forks */
    GC_T_GONE = 5,     /* exited during the freeze: not in the core */
};

struct gc_thread {
    int32_t tid;
    int32_t state; /* enum gc_thread_state, accessed atomically */
    uint64_t regs[GC_NREGS];
    uint64_t tls;  /* the thread pointer: fs_base (x86_64), tpidr_el0 (aarch64) */
    uint64_t tls2; /* aarch64: tpidr2_el0 (SME's), 0 without SME; unused on x86_64 */
    uint64_t sigmask;
    uint32_t fp_len; /* bytes valid in fp (0: no FP state captured) */
    uint32_t pad;
    uint64_t uc_at, fp_at; /* where the context and FP state were read (redact scrubs them) */
    unsigned char *fp; /* GC_FP_CAP bytes, 64-byte aligned: XSAVE (x86_64) or
                          user_fpsimd_state (aarch64) */
};

/* Process facts captured by the parent before the freeze (the child cannot see them). */
struct gc_procinfo {
    int32_t pid, ppid, pgrp, sid;
    uint32_t uid, gid;
    char comm[16];
    uint64_t page_size;
};

struct gc_siginfo {
    int32_t signo, code, err;
    int32_t sender_pid;
    uint64_t addr;
};

/* How each thread was captured (enum gc_thread_state), for the caller's report. */
struct gc_thread_summary {
    int32_t tid, state;
};
struct gc_snapshot_summary {
    struct gc_thread_summary *threads;
    uint32_t n;
};

/* One snapshot: filled by gc_job_start (gc_job.c) only, from the core's options and its
 * cause, then read by the freeze, the fork and the snapshot child. */
struct gc_snapshot {
    /* configuration */
    int core_fd, dir_fd, status_fd;
    const char *partial_name, *final_name;
    const struct gc_core_options *o; /* the core's options (filter, freeze signal and
                                        timeout, max_size...), as Python sent them */
    const unsigned char *note; /* GENCORE JSON, may be NULL */
    size_t note_len;
    struct gc_siginfo siginfo; /* signo 0: generated on demand */
    struct gc_procinfo proc;
    const void *caller_uc; /* set in a signal handler: the caller's registers are the
                              interrupted context, not the handler's own */
    int in_signal;         /* no malloc afterwards (no per-thread summary) */
    int32_t first_tid;     /* this thread's notes come first (gdb selects it), not the
                              caller's; 0: the caller (the watchdog points at the stalled one) */
    const struct gc_pylayout *pylayout; /* NULL: no Python walk for a capped core */
    const char *kinds; /* gencore's file suffixes, NUL-separated: the budget's (o->max_total) */
    size_t kinds_len;
    int events_fd;     /* the triggers' events file, or -1: the budget's removals go there */
    const char *cgroup; /* the memory cgroup's directory (o->cgroup_version), or NULL */
    char *const *pipe_argv; /* NULL, or a filter program (the compressor): the child starts
                               it with stdin a pipe and stdout core_fd, and writes the core
                               into the pipe in file order, holes as zeros */
    const uint64_t *redact_list; /* redact: o->redact.nkeep objects kept, then nscrub scrubbed */

    /* threads: slot 0 is the caller */
    struct gc_thread *threads;
    uint32_t cap;
    uint32_t nthreads;

    /* results of the freeze */
    uint64_t freeze_ns;
    uint64_t fork_ns;
    uint32_t parked, timed_out;

    /* per-thread outcome, malloc'ed after the release (the slots are unmapped); NULL in a
     * signal handler */
    struct gc_snapshot_summary summary;

    /* child resources prepared by the parent */
    void *child_stack;
    size_t child_stack_size;
    void *slots_map;
    size_t slots_map_size;
};

/* gc_freeze.c */
int gc_freeze_prepare(struct gc_snapshot *s);
int gc_freeze_all(struct gc_snapshot *s);
void gc_freeze_release(struct gc_snapshot *s);
void gc_freeze_finish(struct gc_snapshot *s);
int gc_freeze_busy(void);
int32_t gc_freeze_owner(void); /* tid holding the freeze, 0 if none */

/* gc_regs_x86_64.c, gc_regs_aarch64.c: everything async-signal-safe */
void gc_regs_init(void);
/* The interrupted context of a signal (or getcontext's): t's registers and thread pointer. */
void gc_regs_from_ucontext(const void *ucontext, struct gc_thread *t);
/* Registers of a thread that did not park: only what /proc/self/task/TID/syscall tells. */
void gc_regs_from_sp_pc(uint64_t regs[GC_NREGS], uint64_t orig_syscall, uint64_t sp, uint64_t pc);
/* FP/SIMD state of a signal's context. Returns bytes copied (0: none). */
uint32_t gc_fp_from_ucontext(const void *ucontext, unsigned char *dst, uint32_t cap);
/* FP/SIMD state of the calling thread; uc is its getcontext() (used where the CPU cannot
 * save its own state directly). */
uint32_t gc_fp_self(const void *uc, unsigned char *dst, uint32_t cap);
/* Where a context keeps its FP state when that is outside the ucontext_t (x86_64), else 0. */
uint64_t gc_fp_address(const void *ucontext);
/* Zero the register contents of an FP state copy (control and status words stay). */
void gc_fp_scrub(unsigned char *fp, uint32_t len);
#if defined(__x86_64__)
uint32_t gc_xstate_size(void);
uint64_t gc_xcr0(void);
#elif defined(__aarch64__)
uint64_t gc_pac_mask(void);       /* NT_ARM_PAC_MASK's data and instruction masks; 0: no PAC */
uint32_t gc_tls_note_size(void);  /* NT_ARM_TLS: 16 bytes (tpidr, tpidr2) since Linux 5.19 */
#endif

/* gc_snapshot.c */
int gc_snapshot_run(struct gc_snapshot *s, pid_t *child_pid);
void gc_procinfo_fill(struct gc_procinfo *p); /* async-signal-safe */
void gc_snapshot_cleanup(struct gc_snapshot *s);
/* "caller", "parked", "incomplete" or "gone", for the caller's report. */
const char *gc_thread_state_name(int state);

/* gc_notes.c: the smallest max_size a core of this process can have now (its headers and
 * notes, with note_len bytes of GENCORE JSON), counted as the snapshot child counts them,
 * with room for a few more threads and mappings by the time it runs. */
uint64_t gc_min_core_size(uint64_t note_len, uint64_t max_size);

/* gc_writer.c: runs in the child, never returns */
void gc_child_main(struct gc_snapshot *s) __attribute__((noreturn));

#endif
