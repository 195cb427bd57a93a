#if defined(__x86_64__)
/* x86_64 register capture: ucontext -> user_regs_struct, FXSAVE/XSAVE areas, fs/gs base.
 * Everything here is async-signal-safe: it runs in the freeze handler. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <ucontext.h>

#include "gc_snapshot.h"
#include "gc_sys.h"

#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#ifndef FP_XSTATE_MAGIC1
#define FP_XSTATE_MAGIC1 0x46505853u
#endif

/* FSGSBASE instructions are usable when the kernel enabled them (AT_HWCAP2 bit 1); they cost
 * a few cycles where arch_prctl costs a system call per thread in the freeze handler. */
static int g_fsgsbase = -1;

void gc_regs_init(void)
{
    g_fsgsbase = (getauxval(AT_HWCAP2) & 2) ? 1 : 0;
}

static uint64_t gc_fs_base(void)
{
    uint64_t v = 0;
    if (g_fsgsbase == 1) {
        __asm__ volatile("rdfsbase %0" : "=r"(v));
        return v;
    }
    if (gc_sys2(SYS_arch_prctl, ARCH_GET_FS, &v) < 0) return 0;
    return v;
}

static uint64_t gc_gs_base(void)
{
    uint64_t v = 0;
    if (g_fsgsbase == 1) {
        __asm__ volatile("rdgsbase %0" : "=r"(v));
        return v;
    }
    if (gc_sys2(SYS_arch_prctl, ARCH_GET_GS, &v) < 0) return 0;
    return v;
}

void gc_regs_from_ucontext(const void *ucontext, struct gc_thread *t)
{
    uint64_t *r = t->regs;
    const ucontext_t *uc = ucontext;
    const greg_t *g = uc->uc_mcontext.gregs;
    uint64_t csgsfs = (uint64_t)g[REG_CSGSFS];

    r[0] = (uint64_t)g[REG_R15];
    r[1] = (uint64_t)g[REG_R14];
    r[2] = (uint64_t)g[REG_R13];
    r[3] = (uint64_t)g[REG_R12];
    r[4] = (uint64_t)g[REG_RBP];
    r[5] = (uint64_t)g[REG_RBX];
    r[6] = (uint64_t)g[REG_R11];
    r[7] = (uint64_t)g[REG_R10];
    r[8] = (uint64_t)g[REG_R9];
    r[9] = (uint64_t)g[REG_R8];
    r[10] = (uint64_t)g[REG_RAX];
    r[11] = (uint64_t)g[REG_RCX];
    r[12] = (uint64_t)g[REG_RDX];
    r[13] = (uint64_t)g[REG_RSI];
    r[14] = (uint64_t)g[REG_RDI];
    r[15] = (uint64_t)-1; /* orig_rax: not in a syscall as far as the core is concerned */
    r[16] = (uint64_t)g[REG_RIP];
    r[17] = (csgsfs & 0xffff) ? (csgsfs & 0xffff) : 0x33;
    r[18] = (uint64_t)g[REG_EFL];
    r[19] = (uint64_t)g[REG_RSP];
    r[20] = (uc->uc_flags & 0x2 /* UC_SIGCONTEXT_SS */) && (csgsfs >> 48) ? (csgsfs >> 48) : 0x2b;
    r[21] = gc_fs_base();
    r[22] = gc_gs_base();
    r[23] = 0;                     /* ds */
    r[24] = 0;                     /* es */
    r[25] = (csgsfs >> 32) & 0xffff; /* fs selector */
    r[26] = (csgsfs >> 16) & 0xffff; /* gs selector */
    t->tls = r[21];
    t->tls2 = 0;
}

void gc_regs_from_sp_pc(uint64_t r[GC_NREGS], uint64_t orig_syscall, uint64_t sp, uint64_t pc)
{
    gc_memzero(r, sizeof(uint64_t) * GC_NREGS);
    r[15] = orig_syscall; /* orig_rax */
    r[16] = pc;           /* rip */
    r[17] = 0x33;         /* cs */
    r[19] = sp;           /* rsp */
    r[20] = 0x2b;         /* ss */
}

/* Copy the XSAVE image of the signal frame (standard format) into dst. Returns bytes copied. */
uint32_t gc_fp_from_ucontext(const void *ucontext, unsigned char *dst, uint32_t cap)
{
    const ucontext_t *uc = ucontext;
    const unsigned char *fp = (const unsigned char *)uc->uc_mcontext.fpregs;
    uint32_t len = 512;
    if (!fp) return 0;
    const uint32_t *sw = (const uint32_t *)(fp + 464);
    if (sw[0] == FP_XSTATE_MAGIC1 && sw[4] >= 576) len = sw[4]; /* xstate_size */
    if (len > cap) len = cap;
    gc_memcopy(dst, fp, len);
    return len;
}

uint64_t gc_fp_address(const void *ucontext)
{
    return (uint64_t)(uintptr_t)((const ucontext_t *)ucontext)->uc_mcontext.fpregs;
}

/* FXSAVE: st0-7 and xmm0-15 at 32..415; XSAVE: everything after the 64-byte header at 512. */
void gc_fp_scrub(unsigned char *fp, uint32_t len)
{
    if (len > 32) gc_memzero(fp + 32, (len < 416 ? len : 416) - 32);
    if (len > 576) gc_memzero(fp + 576, len - 576);
}

static int have_osxsave(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c >> 27) & 1;
}

uint64_t gc_xcr0(void)
{
    uint32_t lo, hi;
    if (!have_osxsave()) return 3; /* x87 | SSE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

uint32_t gc_xstate_size(void)
{
    unsigned a, b, c, d;
    if (!have_osxsave() || !__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) return 512;
    return b;
}

/* XSAVE (or FXSAVE) of the calling thread's own state into a 64-byte aligned buffer. */
uint32_t gc_fp_self(const void *uc, unsigned char *dst, uint32_t cap)
{
    (void)uc;
    uint32_t size = gc_xstate_size();
    if (size > cap || cap < 576) size = 512;
    gc_memzero(dst, size);
    if (size > 512) {
        uint64_t mask = gc_xcr0();
        __asm__ volatile("xsave64 (%0)" ::"r"(dst), "a"((uint32_t)mask), "d"((uint32_t)(mask >> 32))
                         : "memory");
    } else {
        __asm__ volatile("fxsave64 (%0)" ::"r"(dst) : "memory");
    }
    return size;
}
#endif
