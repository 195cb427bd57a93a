/* aarch64 register capture: ucontext -> user_pt_regs, the signal frame's fpsimd_context ->
 * user_fpsimd_state, tpidr_el0, pointer-authentication masks.
 * Everything here is async-signal-safe: it runs in the freeze handler. */
#if defined(__aarch64__)
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/utsname.h>
#include <ucontext.h>

#include "gc_snapshot.h"
#include "gc_sys.h"

/* Records in the signal frame's __reserved area (asm/sigcontext.h). */
#ifndef FPSIMD_MAGIC
#define FPSIMD_MAGIC 0x46508001
#endif
#define HWCAP_PACA_BIT (1ul << 30)
#define HWCAP_PACG_BIT (1ul << 31)
#define HWCAP2_SME_BIT (1ul << 23)

struct ctx_head {
    uint32_t magic, size;
};

static uint64_t g_pac_mask;
static int g_sme;                  /* tpidr2_el0 exists */
static uint32_t g_tls_note = 16;   /* bytes of NT_ARM_TLS the running kernel writes */

static uint64_t thread_pointer(void)
{
    uint64_t v;
    __asm__ volatile("mrs %0, tpidr_el0" : "=r"(v));
    return v;
}

/* The bits pointer authentication uses in a user address: what XPACD strips from one with
 * every address bit set. This is the kernel's GENMASK(54, vabits_actual). */
static uint64_t pac_mask_probe(void)
{
    register uint64_t x0 __asm__("x0") = 0x007fffffffffffffull;
    __asm__ volatile(".inst 0xdac147e0" /* xpacd x0 */ : "+r"(x0));
    return 0x007fffffffffffffull & ~x0;
}

void gc_regs_init(void)
{
    unsigned long hw = getauxval(AT_HWCAP);
    g_pac_mask = (hw & (HWCAP_PACA_BIT | HWCAP_PACG_BIT)) ? pac_mask_probe() : 0;
    g_sme = (getauxval(AT_HWCAP2) & HWCAP2_SME_BIT) != 0;
    /* Linux 5.19 added tpidr2 to the TLS regset (zero without SME); before, 8 bytes. */
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) == 0) {
        const char *p = u.release;
        while (*p >= '0' && *p <= '9') major = major * 10 + (*p++ - '0');
        if (*p == '.') p++;
        while (*p >= '0' && *p <= '9') minor = minor * 10 + (*p++ - '0');
        g_tls_note = (major > 5 || (major == 5 && minor >= 19)) ? 16 : 8;
    }
}

uint64_t gc_pac_mask(void) { return g_pac_mask; }
uint32_t gc_tls_note_size(void) { return g_tls_note; }

void gc_regs_from_ucontext(const void *ucontext, struct gc_thread *t)
{
    const ucontext_t *uc = ucontext;
    uint64_t *r = t->regs;
    for (int i = 0; i < 31; i++) r[i] = uc->uc_mcontext.regs[i];
    r[31] = uc->uc_mcontext.sp;
    r[32] = uc->uc_mcontext.pc;
    r[33] = uc->uc_mcontext.pstate;
    t->tls = thread_pointer();
    t->tls2 = 0;
    if (g_sme) __asm__ volatile("mrs %0, S3_3_C13_C0_5" /* tpidr2_el0 */ : "=r"(t->tls2));
}

void gc_regs_from_sp_pc(uint64_t r[GC_NREGS], uint64_t orig_syscall, uint64_t sp, uint64_t pc)
{
    (void)orig_syscall; /* NT_ARM_SYSTEM_CALL's, not user_pt_regs' */
    gc_memzero(r, sizeof(uint64_t) * GC_NREGS);
    r[31] = sp;
    r[32] = pc;
}

/* The fpsimd_context record of a signal frame (or getcontext's, which writes one too) as
 * struct user_fpsimd_state: vregs[32] (512 bytes), fpsr, fpcr, 8 reserved bytes. */
uint32_t gc_fp_from_ucontext(const void *ucontext, unsigned char *dst, uint32_t cap)
{
    const ucontext_t *uc = ucontext;
    const unsigned char *p = (const unsigned char *)uc->uc_mcontext.__reserved;
    size_t room = sizeof uc->uc_mcontext.__reserved, off = 0;
    if (cap < 528) return 0;
    while (off + sizeof(struct ctx_head) <= room) {
        const struct ctx_head *h = (const struct ctx_head *)(p + off);
        if (h->magic == 0 || h->size < sizeof *h || off + h->size > room) return 0;
        if (h->magic == (uint32_t)FPSIMD_MAGIC && h->size >= 16 + 512) {
            gc_memcopy(dst, p + off + 16, 512);          /* vregs */
            gc_memcopy(dst + 512, p + off + 8, 8);       /* fpsr, fpcr */
            gc_memzero(dst + 520, 8);
            return 528;
        }
        off += h->size;
    }
    return 0;
}

uint32_t gc_fp_self(const void *uc, unsigned char *dst, uint32_t cap)
{
    return gc_fp_from_ucontext(uc, dst, cap);
}

uint64_t gc_fp_address(const void *ucontext)
{
    (void)ucontext;
    return 0; /* the fpsimd_context record is inside the ucontext_t */
}

/* user_fpsimd_state: v0-v31 (512 bytes), then fpsr and fpcr, which stay. */
void gc_fp_scrub(unsigned char *fp, uint32_t len)
{
    gc_memzero(fp, len < 512 ? len : 512);
}
#endif
