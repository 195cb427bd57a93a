/* The snapshot child: writes a kernel-compatible ELF core of its own (copy-on-write) memory.
 *
 * Rules: raw syscalls only (gc_sys.h), no malloc, no stdio, no locks, no Python. Memory comes
 * from an arena mmapped here; the child runs on a stack the parent mapped before the freeze.
 * Layout and notes follow Linux's fs/binfmt_elf.c: PT_NOTE first, one PT_LOAD per VMA in
 * address order (p_filesz 0 where nothing is dumped), data page-aligned after the notes.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>

#include "gc_budget.h"
#include "gc_procfs.h"
#include "gc_snapshot.h"
#include "gc_sys.h"

#define ARENA_SIZE (1ull << 30) /* virtual; only what is used gets touched */
#define BOUNCE_SIZE (1u << 20)
#define WRITE_CHUNK (8u << 20)
#define PROGRESS_EVERY (64ull << 20)
#define ZEROS_SIZE (1u << 20)
#define HELPER_STACK (64u << 10)
#define PIPE_SIZE (1u << 20)

extern char **environ;

#define NT_X86_XSTATE 0x202
#define NT_X86_XSAVE_LAYOUT 0x205
#define NT_ARM_TLS 0x401
#define NT_ARM_SYSTEM_CALL 0x404
#define NT_ARM_PAC_MASK 0x406
#define NT_ARM_TAGGED_ADDR_CTRL 0x409
#define NT_ARM_PAC_ENABLED_KEYS 0x40a
#define NT_GENCORE_JSON 0x47430001u
#define NT_GENCORE_CAPTURE 0x47430002u

#ifndef MADV_DONTDUMP
#define MADV_DONTDUMP 16
#endif

/* One PT_LOAD: a whole VMA, or under max_size a piece of one (kept data, then the rest of
 * the piece not in the file). A piece of anonymous memory under max_size covers its kept
 * data only (ph_memsz = filesz; no program header when it keeps nothing): readers that
 * do not check p_filesz (py-spy) then fail to read an omitted address instead of reading
 * the bytes that follow in the file, or past its end. */
struct piece {
    uint64_t start, filesz, memsz, file_off;
    long vma;
    uint64_t ph_memsz; /* the PT_LOAD's p_memsz; 0: no PT_LOAD */
};

/* Under max_size: what the capture note can say about omitted ranges at most. */
#define BUDGET_NOTE_MAX (256u << 10)

struct child {
    struct gc_snapshot *s;
    struct gc_arena arena;
    char *smaps;
    struct gc_vma *vmas;
    long nvma;
    unsigned char *bounce;
    struct gc_runs runs; /* present pages, with its own scratch buffer */
    int mem_fd;
    uint64_t page;
    uint64_t written, total, next_progress;
    uint64_t nseg;      /* program headers, PT_NOTE included */
    uint64_t data_end;  /* end of the last segment's data */
    uint64_t file_size; /* data_end plus the PN_XNUM section header, if any */
    uint32_t stage;
    /* Stream mode (s->pipe_argv): everything goes in file order into out_fd, a pipe to the
     * filter program (pid helper); pos is how much has been written, holes included. */
    int stream, out_fd, pipe_r;
    long helper;
    uint64_t pos;
    const unsigned char *zeros; /* ZEROS_SIZE untouched bytes: they read as zeros */
    struct piece *pieces;
    long npieces;
    uint32_t lead; /* the thread whose notes come first */
#if defined(__aarch64__)
    /* process-wide in practice, read by the child (it inherits the forking thread's) */
    uint64_t pac_mask;
    long pac_keys, tagged_addr; /* -1: not supported */
#endif
    int capped;    /* max_size left something out */
    struct gc_budget budget;
    uint64_t need; /* under max_size: the least a core of this process takes */
    uint64_t budget_note; /* under max_size: bytes for the budget in the capture note */
};

/* ------------------------------------------------------------------ status */

static void send_result(struct child *c, uint32_t kind, int err, uint64_t file_size, uint64_t nseg)
{
    struct gc_status st;
    gc_memzero(&st, sizeof st);
    st.magic = GC_STATUS_MAGIC;
    st.kind = kind;
    st.err = err;
    st.stage = c->stage;
    st.written = c->written;
    st.total = c->total;
    st.file_size = file_size;
    st.nsegments = nseg;
    gc_write(c->s->status_fd, &st, sizeof st);
}

static void send_status(struct child *c, uint32_t kind, int err) { send_result(c, kind, err, 0, 0); }

static long stream_end(struct child *c, int abandon);

static __attribute__((noreturn)) void fail(struct child *c, long err)
{
    if (c->stream) {
        /* a broken pipe means the filter failed first: its exit status says why */
        long e = stream_end(c, err != -EPIPE);
        if (err == -EPIPE && e < 0) err = e;
    }
    send_result(c, GC_ST_ERROR, (int)-err, c->need, 0); /* need: max_size was too small */
    gc_sys3(SYS_unlinkat, c->s->dir_fd, c->s->partial_name, 0);
    gc_sys1(SYS_exit_group, 1);
    __builtin_unreachable();
}

/* ------------------------------------------------------------------ setup */

static void reset_signals(void)
{
    /* Block everything asynchronous (a terminal's ^C reaches the child too); synchronous
     * faults stay deliverable with their default action. */
    uint64_t mask = ~0ull;
    mask &= ~((1ull << (SIGSEGV - 1)) | (1ull << (SIGBUS - 1)) | (1ull << (SIGILL - 1)) |
              (1ull << (SIGFPE - 1)) | (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1)));
    gc_sys4(SYS_rt_sigprocmask, SIG_SETMASK, &mask, 0, 8);
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {SIG_DFL, 0, 0, 0};
    int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        gc_sys4(SYS_rt_sigaction, sigs[i], &dfl, 0, 8);
}

struct keep_set {
    int fds[4];
};

static int close_unless_kept(long fd, void *arg)
{
    const struct keep_set *ks = arg;
    for (int i = 0; i < 4; i++)
        if (ks->fds[i] == fd) return 0;
    gc_close((int)fd);
    return 0;
}

static void close_inherited(struct gc_snapshot *s)
{
    int keep[3] = {s->core_fd, s->dir_fd, s->status_fd};
    /* sort the three */
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (keep[j] < keep[i]) {
                int t = keep[i];
                keep[i] = keep[j];
                keep[j] = t;
            }
    unsigned lo = 0;
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        if ((unsigned)keep[i] > lo && gc_sys3(SYS_close_range, lo, keep[i] - 1, 0) < 0) ok = 0;
        lo = (unsigned)keep[i] + 1;
    }
    if (gc_sys3(SYS_close_range, lo, ~0u, 0) < 0) ok = 0;
    if (ok) return;
    /* close_range missing (Linux < 5.9): close what /proc/self/fd lists. */
    long dfd = gc_open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    struct keep_set ks = {{keep[0], keep[1], keep[2], (int)dfd}};
    gc_dir_numbers((int)dfd, close_unless_kept, &ks);
    gc_close((int)dfd);
}

/* ------------------------------------------------------------------ notes */

struct notebuf {
    unsigned char *p;
    size_t len, cap;
};

static void *note_add(struct notebuf *nb, const char *name, uint32_t type, uint32_t descsz)
{
    uint32_t namesz = (uint32_t)gc_strlen(name) + 1;
    size_t need = 12 + ((namesz + 3) & ~3u) + ((descsz + 3) & ~3u);
    if (nb->len + need > nb->cap) return NULL;
    unsigned char *h = nb->p + nb->len;
    gc_memzero(h, need);
    ((uint32_t *)h)[0] = namesz;
    ((uint32_t *)h)[1] = descsz;
    ((uint32_t *)h)[2] = type;
    gc_memcopy(h + 12, name, namesz);
    nb->len += need;
    return h + 12 + ((namesz + 3) & ~3u);
}

static int add_prstatus(struct child *c, struct notebuf *nb, const struct gc_thread *t,
                        int first)
{
    unsigned char *d = note_add(nb, "CORE", NT_PRSTATUS, GC_PRSTATUS_SIZE);
    if (!d) return -ENOMEM;
    const struct gc_snapshot *s = c->s;
    if (first) {
        *(int32_t *)(d + 0) = s->siginfo.signo;
        *(int32_t *)(d + 4) = s->siginfo.code;
        *(int32_t *)(d + 8) = s->siginfo.err;
        *(int16_t *)(d + 12) = (int16_t)s->siginfo.signo;
    }
    *(uint64_t *)(d + 24) = t->sigmask;
    *(int32_t *)(d + 32) = t->tid;
    *(int32_t *)(d + 36) = s->proc.ppid;
    *(int32_t *)(d + 40) = s->proc.pgrp;
    *(int32_t *)(d + 44) = s->proc.sid;
    gc_memcopy(d + 112, t->regs, sizeof t->regs);
    *(int32_t *)(d + GC_PRSTATUS_SIZE - 8) = t->fp_len ? 1 : 0; /* pr_fpvalid */
    return 0;
}

#if defined(__x86_64__)
static int add_fp(struct child *c, struct notebuf *nb, const struct gc_thread *t)
{
    if (!t->fp_len) return 0;
    unsigned char *d = note_add(nb, "CORE", NT_PRFPREG, 512);
    if (!d) return -ENOMEM;
    gc_memcopy(d, t->fp, t->fp_len < 464 ? t->fp_len : 464);
    /* bytes 464..511 stay zero, as the kernel writes them */
    uint32_t size = gc_xstate_size();
    if (size <= 512) return 0;
    d = note_add(nb, "LINUX", NT_X86_XSTATE, size);
    if (!d) return -ENOMEM;
    gc_memcopy(d, t->fp, t->fp_len < size ? t->fp_len : size);
    gc_memzero(d + 464, 48);
    *(uint64_t *)(d + 464) = gc_xcr0();
    (void)c;
    return 0;
}
#else
/* What the arm64 kernel writes after a thread's NT_PRSTATUS, in its order (regsets of
 * arch/arm64/kernel/ptrace.c): FP/SIMD, TLS, the system call, pointer authentication, the
 * tagged-address mode. Not written: the hardware breakpoint and watchpoint slots (debugger
 * state, not the program's), SVE/SME state beyond the 128-bit V registers, and the PAC keys. */
static int add_fp(struct child *c, struct notebuf *nb, const struct gc_thread *t)
{
    unsigned char *d;
    if (t->fp_len) {
        if (!(d = note_add(nb, "CORE", NT_PRFPREG, 528))) return -ENOMEM;
        gc_memcopy(d, t->fp, 528);
    }
    uint32_t tls_size = gc_tls_note_size();
    if (!(d = note_add(nb, "LINUX", NT_ARM_TLS, tls_size))) return -ENOMEM;
    ((uint64_t *)d)[0] = t->tls;
    if (tls_size >= 16) ((uint64_t *)d)[1] = t->tls2;
    if (!(d = note_add(nb, "LINUX", NT_ARM_SYSTEM_CALL, 4))) return -ENOMEM;
    *(int32_t *)d = -1; /* stopped in user space, not in a system call */
    if (c->pac_mask) {
        if (!(d = note_add(nb, "LINUX", NT_ARM_PAC_MASK, 16))) return -ENOMEM;
        ((uint64_t *)d)[0] = c->pac_mask; /* data */
        ((uint64_t *)d)[1] = c->pac_mask; /* instructions */
        if (c->pac_keys >= 0) {
            if (!(d = note_add(nb, "LINUX", NT_ARM_PAC_ENABLED_KEYS, 8))) return -ENOMEM;
            *(uint64_t *)d = (uint64_t)c->pac_keys;
        }
    }
    if (c->tagged_addr >= 0) {
        if (!(d = note_add(nb, "LINUX", NT_ARM_TAGGED_ADDR_CTRL, 8))) return -ENOMEM;
        *(uint64_t *)d = (uint64_t)c->tagged_addr;
    }
    return 0;
}
#endif

static int add_prpsinfo(struct child *c, struct notebuf *nb)
{
    unsigned char *d = note_add(nb, "CORE", NT_PRPSINFO, 136);
    if (!d) return -ENOMEM;
    const struct gc_procinfo *p = &c->s->proc;
    d[0] = 0;   /* state: running */
    d[1] = 'R'; /* sname */
    *(uint32_t *)(d + 16) = p->uid;
    *(uint32_t *)(d + 20) = p->gid;
    *(int32_t *)(d + 24) = p->pid;
    *(int32_t *)(d + 28) = p->ppid;
    *(int32_t *)(d + 32) = p->pgrp;
    *(int32_t *)(d + 36) = p->sid;
    gc_memcopy(d + 40, p->comm, 15);
    char *args = (char *)d + 56;
    long n = gc_read_small("/proc/self/cmdline", args, 80); /* psargs: 79 bytes and a NUL */
    for (long i = 0; i < n; i++)
        if (args[i] == 0) args[i] = ' ';
    while (n > 0 && args[n - 1] == ' ') args[--n] = 0;
    return 0;
}

static int add_siginfo(struct child *c, struct notebuf *nb)
{
    unsigned char *d = note_add(nb, "CORE", NT_SIGINFO, 128);
    if (!d) return -ENOMEM;
    const struct gc_siginfo *si = &c->s->siginfo;
    *(int32_t *)(d + 0) = si->signo;
    *(int32_t *)(d + 4) = si->err;
    *(int32_t *)(d + 8) = si->code;
    if (si->signo == SIGSEGV || si->signo == SIGBUS || si->signo == SIGILL || si->signo == SIGFPE)
        *(uint64_t *)(d + 16) = si->addr;
    else if (si->sender_pid)
        *(int32_t *)(d + 16) = si->sender_pid;
    return 0;
}

static int add_auxv(struct child *c, struct notebuf *nb)
{
    char *auxv;
    long n = gc_read_file(&c->arena, "/proc/self/auxv", &auxv);
    if (n < 0) return (int)n;
    unsigned char *d = note_add(nb, "CORE", NT_AUXV, (uint32_t)n);
    if (!d) return -ENOMEM;
    gc_memcopy(d, auxv, (size_t)n);
    return 0;
}

static int is_file_vma(const struct child *c, const struct gc_vma *v)
{
    return v->path_off != UINT32_MAX && c->smaps[v->path_off] == '/' && !v->hidden;
}

static int add_file(struct child *c, struct notebuf *nb)
{
    uint64_t count = 0, strings = 0;
    for (long i = 0; i < c->nvma; i++) {
        if (!is_file_vma(c, &c->vmas[i])) continue;
        count++;
        strings += c->vmas[i].path_len + 1;
    }
    uint64_t size = 16 + count * 24 + strings;
    if (size > (16u << 20)) return 0; /* the kernel drops oversized NT_FILE notes too */
    unsigned char *d = note_add(nb, "CORE", NT_FILE, (uint32_t)size);
    if (!d) return -ENOMEM;
    uint64_t *w = (uint64_t *)d;
    w[0] = count;
    w[1] = c->page;
    uint64_t k = 0;
    char *str = (char *)d + 16 + count * 24;
    for (long i = 0; i < c->nvma; i++) {
        const struct gc_vma *v = &c->vmas[i];
        if (!is_file_vma(c, v)) continue;
        w[2 + k * 3] = v->start;
        w[3 + k * 3] = v->end;
        w[4 + k * 3] = v->pgoff / c->page;
        k++;
        gc_memcopy(str, c->smaps + v->path_off, v->path_len);
        str[v->path_len] = 0;
        str += v->path_len + 1;
    }
    return 0;
}

#if defined(__x86_64__)
static int add_xsave_layout(struct notebuf *nb)
{
    uint64_t xcr0 = gc_xcr0();
    uint32_t n = 0;
    for (int i = 2; i < 64; i++)
        if (xcr0 & (1ull << i)) n++;
    if (!n || gc_xstate_size() <= 512) return 0;
    uint32_t *d = note_add(nb, "LINUX", NT_X86_XSAVE_LAYOUT, n * 16);
    if (!d) return -ENOMEM;
    for (int i = 2, k = 0; i < 64; i++) {
        if (!(xcr0 & (1ull << i))) continue;
        unsigned a, b, cc, dd;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(cc), "=d"(dd) : "a"(0xd), "c"(i));
        d[k * 4 + 0] = (uint32_t)i;
        d[k * 4 + 1] = a;
        d[k * 4 + 2] = b;
        d[k * 4 + 3] = 0;
        k++;
    }
    return 0;
}
#else
static int add_xsave_layout(struct notebuf *nb)
{
    (void)nb;
    return 0;
}
#endif

static int add_gencore_json(struct child *c, struct notebuf *nb)
{
    const struct gc_snapshot *s = c->s;
    if (s->note && s->note_len) {
        unsigned char *d = note_add(nb, "GENCORE", NT_GENCORE_JSON, (uint32_t)s->note_len);
        if (!d) return -ENOMEM;
        gc_memcopy(d, s->note, s->note_len);
    }
    return 0;
}

static const char *const category_names[GC_CAT_N] = {"stacks", "python", "elf_headers", "data",
                                                     "other"};

/* Under max_size, the capture note's "budget": what was kept by category, what was left out
 * and where (ranges of omitted data, as many as fit in cap bytes). */
static void format_budget(struct child *c, char *j, size_t cap, size_t *pos)
{
    const struct gc_budget *b = &c->budget;
    uint64_t kept = 0;
    gc_fmt_str(j, cap, pos, ", \"budget\": {\"max_size\": ");
    gc_fmt_u64(j, cap, pos, c->s->max_size);
    gc_fmt_str(j, cap, pos, ", \"kept\": {");
    for (int k = 0; k < GC_CAT_N; k++) {
        gc_fmt_str(j, cap, pos, k ? ", \"" : "\"");
        gc_fmt_str(j, cap, pos, category_names[k]);
        gc_fmt_str(j, cap, pos, "\": ");
        gc_fmt_u64(j, cap, pos, b->kept[k]);
        kept += b->kept[k];
    }
    gc_fmt_str(j, cap, pos, "}, \"dumpable\": ");
    gc_fmt_u64(j, cap, pos, b->dumpable);
    gc_fmt_str(j, cap, pos, ", \"omitted\": ");
    gc_fmt_u64(j, cap, pos, b->dumpable > kept ? b->dumpable - kept : 0);
    gc_fmt_str(j, cap, pos, ", \"python_threads\": ");
    gc_fmt_u64(j, cap, pos, b->threads);
    gc_fmt_str(j, cap, pos, ", \"python_frames\": ");
    gc_fmt_u64(j, cap, pos, b->frames);
    gc_fmt_str(j, cap, pos, ", \"omitted_ranges\": [");
    uint64_t listed = 0, more = 0;
    for (long i = 0; i < c->npieces; i++) {
        const struct piece *p = &c->pieces[i];
        const struct gc_vma *v = &c->vmas[p->vma];
        uint64_t from = p->start + p->filesz, to = p->start + p->memsz;
        if (to > v->start + v->dump) to = v->start + v->dump; /* not dumped anyway */
        if (from >= to) continue;
        if (*pos + 64 > cap - 64) {
            more++;
            continue;
        }
        gc_fmt_str(j, cap, pos, listed++ ? ", [" : "[");
        gc_fmt_u64(j, cap, pos, from);
        gc_fmt_str(j, cap, pos, ", ");
        gc_fmt_u64(j, cap, pos, to);
        gc_fmt_str(j, cap, pos, "]");
    }
    gc_fmt_str(j, cap, pos, "], \"omitted_ranges_unlisted\": ");
    gc_fmt_u64(j, cap, pos, more);
    gc_fmt_str(j, cap, pos, "}");
}

/* The capture note (JSON): only the child knows the final thread list. */
static int add_capture(struct child *c, struct notebuf *nb)
{
    const struct gc_snapshot *s = c->s;
    size_t cap = 256 + (size_t)s->nthreads * 48 + (c->capped ? c->budget_note + 1024 : 0);
    char *j = gc_arena_alloc(&c->arena, cap);
    if (!j) return -ENOMEM;
    size_t pos = 0;
    gc_fmt_str(j, cap, &pos, "{\"threads\": [");
    int first = 1;
    for (uint32_t i = 0; i < s->nthreads; i++) {
        const struct gc_thread *t = &s->threads[i];
        if (t->state == GC_T_GONE || t->state == GC_T_EMPTY || t->state == GC_T_SIGNALED) continue;
        if (!first) gc_fmt_str(j, cap, &pos, ", ");
        first = 0;
        gc_fmt_str(j, cap, &pos, "{\"tid\": ");
        gc_fmt_u64(j, cap, &pos, (uint64_t)t->tid);
        gc_fmt_str(j, cap, &pos,
                   t->state == GC_T_CALLER   ? ", \"state\": \"caller\"}"
                   : t->state == GC_T_PARKED ? ", \"state\": \"parked\"}"
                                             : ", \"state\": \"incomplete\"}");
    }
    gc_fmt_str(j, cap, &pos, "], \"freeze_ns\": ");
    gc_fmt_u64(j, cap, &pos, s->freeze_ns);
    gc_fmt_str(j, cap, &pos, ", \"filter\": ");
    gc_fmt_u64(j, cap, &pos, s->filter);
    if (c->capped) format_budget(c, j, cap - 2, &pos);
    gc_fmt_str(j, cap, &pos, "}");
    unsigned char *d = note_add(nb, "GENCORE", NT_GENCORE_CAPTURE, (uint32_t)pos);
    if (!d) return -ENOMEM;
    gc_memcopy(d, j, pos);
    return 0;
}

/* Every note but the capture note (added by add_capture, last). */
static int build_notes(struct child *c, struct notebuf *nb)
{
    const struct gc_snapshot *s = c->s;
    int rc;
    /* The caller first (or the thread the watchdog names): gdb selects it, pystack/py-spy
     * read process-wide notes after it. */
    uint32_t lead = 0;
    for (uint32_t i = 1; s->first_tid && i < s->nthreads; i++)
        if (s->threads[i].tid == s->first_tid &&
            (s->threads[i].state == GC_T_PARKED || s->threads[i].state == GC_T_TIMEOUT))
            lead = i;
    c->lead = lead;
    if ((rc = add_prstatus(c, nb, &s->threads[lead], 1))) return rc;
    if ((rc = add_prpsinfo(c, nb))) return rc;
    if ((rc = add_siginfo(c, nb))) return rc;
    if ((rc = add_auxv(c, nb))) return rc;
    if ((rc = add_file(c, nb))) return rc;
    if ((rc = add_fp(c, nb, &s->threads[lead]))) return rc;
    for (uint32_t i = 0; i < s->nthreads; i++) {
        const struct gc_thread *t = &s->threads[i];
        if (i == lead || (i > 0 && t->state != GC_T_PARKED && t->state != GC_T_TIMEOUT))
            continue;
        if ((rc = add_prstatus(c, nb, t, 0))) return rc;
        if ((rc = add_fp(c, nb, t))) return rc;
    }
    if ((rc = add_xsave_layout(nb))) return rc;
    return add_gencore_json(c, nb);
}

/* ------------------------------------------------------------------ dump rules */

static int is_special(const char *path)
{
    return gc_startswith(path, "[vdso]") || gc_startswith(path, "[vvar]") ||
           gc_startswith(path, "[vvar_vclock]") || gc_startswith(path, "[vsyscall]") ||
           gc_startswith(path, "[uprobes]");
}

static int first_bytes_are_elf(struct child *c, uint64_t addr)
{
    unsigned char m[4] = {0, 0, 0, 0};
    if (gc_pread(c->mem_fd, m, 4, addr) != 4) return 0;
    return m[0] == 0x7f && m[1] == 'E' && m[2] == 'L' && m[3] == 'F';
}

/* coredump_filter semantics of fs/coredump.c vma_dump_size(), first match wins. */
static void decide(struct child *c, struct gc_vma *v)
{
    uint32_t f = c->s->filter;
    uint64_t whole = v->end - v->start;
    const char *path = v->path_off != UINT32_MAX ? c->smaps + v->path_off : "";
    v->dump = 0;
    v->how = GC_DUMP_NONE;
    if (v->hidden) return;
    if (is_special(path)) {
        v->dump = whole;
        /* [vvar] and [vsyscall] cannot be read from user space: leave a hole. */
        v->how = (v->vmflags & (GC_VM_IO | GC_VM_PF)) || !(v->perms & GC_P_R) ? GC_DUMP_HOLE
                                                                               : GC_DUMP_FILE;
        return;
    }
    if (v->vmflags & GC_VM_DD) return;
    if (v->vmflags & GC_VM_HT) {
        if (f & ((v->vmflags & GC_VM_SH) ? (1u << 6) : (1u << 5))) {
            v->dump = whole;
            v->how = GC_DUMP_FILE;
        }
        return;
    }
    if (v->vmflags & GC_VM_IO) return;
    int has_file = path[0] == '/';
    if (v->vmflags & GC_VM_SH) {
        int anon_shared = !has_file || v->inode == 0 || gc_endswith(path, v->path_len, " (deleted)") ||
                          gc_startswith(path, "/dev/zero") || gc_startswith(path, "/SYSV") ||
                          gc_startswith(path, "/memfd:");
        if (f & (anon_shared ? 2u : 8u)) {
            v->dump = whole;
            v->how = GC_DUMP_SHARED;
        }
        return;
    }
    if ((v->anon_kb || v->swap_kb) && (f & 1u)) {
        v->dump = whole;
        v->how = has_file ? GC_DUMP_FILE : GC_DUMP_ANON;
        return;
    }
    if (!has_file) return;
    if (f & 4u) {
        v->dump = whole;
        v->how = GC_DUMP_FILE;
        return;
    }
    if ((f & 16u) && v->pgoff == 0 && (v->perms & GC_P_R) && first_bytes_are_elf(c, v->start)) {
        v->dump = c->page;
        v->how = GC_DUMP_FILE;
    }
}

/* ------------------------------------------------------------------ output */

/* Stream mode: zeros up to file offset off (a hole, or the padding before the data). */
static long pad_to(struct child *c, uint64_t off)
{
    if (off < c->pos) return -EINVAL; /* out of file order: a bug, never a corrupt core */
    while (c->pos < off) {
        uint64_t n = off - c->pos < ZEROS_SIZE ? off - c->pos : ZEROS_SIZE;
        long w = gc_write(c->out_fd, c->zeros, n);
        if (w == -EINTR) continue;
        if (w <= 0) return w < 0 ? w : -EIO;
        c->pos += (uint64_t)w;
    }
    return 0;
}

/* Write len bytes of buf at file offset off: pwrite, or in stream mode the zeros up to off
 * and then the bytes. Returns what write() returns (a short count is possible). */
static long out_at(struct child *c, const void *buf, uint64_t len, uint64_t off)
{
    if (!c->stream) return gc_pwrite(c->s->core_fd, buf, len, off);
    long e = pad_to(c, off);
    if (e < 0) return e;
    long w = gc_write(c->out_fd, buf, len);
    if (w > 0) c->pos += (uint64_t)w;
    return w;
}

/* Start the filter program: stdin the pipe, stdout the partial file, stderr /dev/null, no
 * other descriptor, signals unblocked. It runs at the child's own (lower) priority and dies
 * with the child (PR_SET_PDEATHSIG). */
static int helper_entry(void *arg)
{
    struct child *c = arg;
    gc_sys2(SYS_prctl, 1 /* PR_SET_PDEATHSIG */, SIGKILL);
    long in = gc_sys3(SYS_fcntl, c->pipe_r, F_DUPFD, 100);
    long out = gc_sys3(SYS_fcntl, c->s->core_fd, F_DUPFD, 100);
    long null = gc_open("/dev/null", O_RDWR);
    if (in < 0 || out < 0 || null < 0) gc_sys1(SYS_exit, 127);
    if (null != 2) gc_sys3(SYS_dup3, null, 2, 0);
    gc_sys3(SYS_dup3, in, 0, 0);
    gc_sys3(SYS_dup3, out, 1, 0);
    gc_sys3(SYS_close_range, 3, ~0u, 0);
    uint64_t none = 0;
    gc_sys4(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, 8);
    gc_sys3(SYS_execve, c->s->pipe_argv[0], c->s->pipe_argv, environ);
    gc_sys1(SYS_exit, 127);
    return 127;
}

static void stream_start(struct child *c)
{
    int p[2];
    long e = gc_sys2(SYS_pipe2, p, O_CLOEXEC);
    if (e < 0) fail(c, e);
    gc_sys3(SYS_fcntl, p[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort */
    c->pipe_r = p[0];
    c->out_fd = p[1];
    c->zeros = gc_arena_alloc(&c->arena, ZEROS_SIZE);
    char *stack = gc_arena_alloc(&c->arena, HELPER_STACK);
    if (!c->zeros || !stack) fail(c, -ENOMEM);
    /* vfork semantics: this process waits until the helper has exec'd (or exited) */
    long pid = clone(helper_entry, stack + HELPER_STACK - 64, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
    gc_close(c->pipe_r);
    if (pid < 0) fail(c, -errno);
    c->helper = pid;
    c->stream = 1;
}

/* Close the pipe and wait for the filter: 0 when it exited 0, else a negative errno (its
 * exit status is the errno it failed with, 127 if it could not start). With abandon, the
 * filter is killed first: the core is not going to be complete. */
static long stream_end(struct child *c, int abandon)
{
    if (!c->stream) return 0;
    c->stream = 0;
    gc_close(c->out_fd);
    if (abandon) gc_sys2(SYS_kill, c->helper, SIGKILL);
    int status = 0;
    long r;
    do
        r = gc_sys4(SYS_wait4, c->helper, &status, 0, 0);
    while (r == -EINTR);
    if (r < 0) return r;
    if ((status & 0x7f) != 0) return -EPIPE;  /* killed */
    int code = (status >> 8) & 0xff;
    if (code == 0) return 0;
    if (code == 127) return -ENOEXEC;
    /* 1 is what Python exits with on an uncaught error, never an errno of ours */
    return code > 1 && code < 125 ? -code : -EIO;
}

/* ------------------------------------------------------------------ memory */

static void maybe_progress(struct child *c)
{
    if (c->written >= c->next_progress) {
        send_status(c, GC_ST_PROGRESS, 0);
        c->next_progress = c->written + PROGRESS_EVERY;
    }
}

static int fatal_write_error(long r)
{
    return r == -ENOSPC || r == -EDQUOT || r == -EFBIG || r == -EIO || r == -EBADF ||
           r == -EROFS || r == -EINVAL || r == -EPIPE;
}

/* The step bytes at addr (within one page) that write() could not take from their address:
 * read the page through /proc/self/mem (FOLL_FORCE, like the kernel), else leave a hole. */
static long copy_page_slow(struct child *c, uint64_t addr, uint64_t step, uint64_t off)
{
    uint64_t in_page = addr & (c->page - 1);
    long r = gc_pread(c->mem_fd, c->bounce, c->page, addr - in_page);
    if (r != (long)c->page) return c->stream ? pad_to(c, off + step) : 0; /* hole */
    while (step) {
        long w = out_at(c, c->bounce + in_page, step, off);
        if (w == -EINTR) continue;
        if (w <= 0) return w < 0 ? w : -EIO;
        in_page += (uint64_t)w;
        off += (uint64_t)w;
        step -= (uint64_t)w;
    }
    return 0;
}

/* Write [addr, addr+len) at file offset off, straight from memory where possible. */
static long copy_range(struct child *c, uint64_t addr, uint64_t len, uint64_t off, int readable)
{
    while (len) {
        uint64_t chunk = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        long w;
        if (readable) {
            w = out_at(c, (const void *)addr, chunk, off);
        } else {
            if (chunk > BOUNCE_SIZE) chunk = BOUNCE_SIZE;
            long r = gc_pread(c->mem_fd, c->bounce, chunk, addr);
            if (r <= 0) {
                w = -EFAULT;
            } else {
                chunk = (uint64_t)r;
                w = out_at(c, c->bounce, chunk, off);
            }
        }
        if (w == -EINTR) continue;
        if (w > 0) {
            addr += (uint64_t)w;
            off += (uint64_t)w;
            len -= (uint64_t)w;
            c->written += (uint64_t)w;
            maybe_progress(c);
            continue;
        }
        if (w < 0 && fatal_write_error(w)) return w;
        /* EFAULT (or a zero-length write): this page is not readable through its address. */
        uint64_t step = c->page - (addr & (c->page - 1));
        if (step > len) step = len;
        long r = copy_page_slow(c, addr, step, off);
        if (r < 0) return r;
        addr += step;
        off += step;
        len -= step;
        c->written += step;
    }
    return 0;
}

struct anon_copy {
    struct child *c;
    uint64_t start, file_off; /* the piece: file offset of its first byte */
    int readable;
};

static long copy_run(uint64_t start, uint64_t end, void *arg)
{
    struct anon_copy *a = arg;
    return copy_range(a->c, start, end - start, a->file_off + (start - a->start), a->readable);
}

/* Shared memory is not copied by fork: only pages resident in the shared object (mincore),
 * so that reading never allocates shmem pages in the application's memory. */
static long dump_shared(struct child *c, uint64_t start, uint64_t end, uint64_t file_off)
{
    unsigned char *vec = c->bounce;
    uint64_t at = start;
    while (at < end) {
        uint64_t npages = (end - at) / c->page;
        if (npages > BOUNCE_SIZE / 2) npages = BOUNCE_SIZE / 2;
        if (gc_sys3(SYS_mincore, at, npages * c->page, vec) < 0)
            return copy_range(c, at, end - at, file_off + (at - start), 1);
        uint64_t run = 0;
        for (uint64_t i = 0; i <= npages; i++) {
            if (i < npages && (vec[i] & 1)) {
                run++;
                continue;
            }
            if (run) {
                uint64_t s0 = at + (i - run) * c->page;
                long e = copy_range(c, s0, run * c->page, file_off + (s0 - start), 1);
                if (e < 0) return e;
                run = 0;
            }
        }
        at += npages * c->page;
    }
    return 0;
}

/* The data of one piece: [p->start, p->start + p->filesz) of its VMA. */
static long dump_piece(struct child *c, const struct piece *p)
{
    const struct gc_vma *v = &c->vmas[p->vma];
    int readable = (v->perms & GC_P_R) != 0;
    uint64_t end = p->start + p->filesz;
    switch (v->how) {
    case GC_DUMP_ANON: {
        /* private anonymous memory: only pages that exist (present or swapped, not the
         * zero page); the others are holes */
        struct anon_copy a = {c, p->start, p->file_off, readable};
        return gc_present_runs(&c->runs, p->start, end, copy_run, &a);
    }
    case GC_DUMP_SHARED:
        return readable ? dump_shared(c, p->start, end, p->file_off)
                        : copy_range(c, p->start, p->filesz, p->file_off, 0);
    case GC_DUMP_FILE:
        return copy_range(c, p->start, p->filesz, p->file_off, readable);
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------ main */

static void hide_own_buffers(struct child *c)
{
    struct {
        uint64_t a, b;
    } own[3] = {
        {(uint64_t)(uintptr_t)c->arena.base, (uint64_t)(uintptr_t)c->arena.base + ARENA_SIZE},
        {(uint64_t)(uintptr_t)c->s->child_stack,
         (uint64_t)(uintptr_t)c->s->child_stack + c->s->child_stack_size},
        {(uint64_t)(uintptr_t)c->s->slots_map,
         (uint64_t)(uintptr_t)c->s->slots_map + c->s->slots_map_size},
    };
    for (long i = 0; i < c->nvma; i++) {
        struct gc_vma *v = &c->vmas[i];
        if (!(v->vmflags & GC_VM_DD)) continue;
        /* Covered entirely by our buffers (they may have merged with each other). */
        uint64_t at = v->start;
        for (int round = 0; round < 3 && at < v->end; round++)
            for (int k = 0; k < 3; k++)
                if (own[k].a <= at && at < own[k].b) at = own[k].b;
        if (at >= v->end) v->hidden = 1;
    }
}

/* Setup: signals, descriptors, priority, the arena and the /proc files the writer reads. */
static void child_setup(struct child *c)
{
    struct gc_snapshot *s = c->s;
    c->page = s->proc.page_size;
    c->stage = GC_STAGE_SETUP;
    reset_signals();
    close_inherited(s);
    gc_sys5(SYS_prctl, 15 /* PR_SET_NAME */, "gencore-snap", 0, 0, 0);
    /* Yield the CPU to the application: its threads preempt the writer when they wake. */
    gc_sys3(SYS_setpriority, 0 /* PRIO_PROCESS */, 0, 10);
#if defined(__aarch64__)
    c->pac_mask = gc_pac_mask();
    c->pac_keys = gc_sys5(SYS_prctl, 61 /* PR_PAC_GET_ENABLED_KEYS */, 0, 0, 0, 0);
    c->tagged_addr = gc_sys5(SYS_prctl, 56 /* PR_GET_TAGGED_ADDR_CTRL */, 0, 0, 0, 0);
    if (c->pac_keys < 0) c->pac_keys = -1;
    if (c->tagged_addr < 0) c->tagged_addr = -1;
#endif

    long m = gc_sys6(SYS_mmap, 0, ARENA_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m < 0 && m > -4096) fail(c, m);
    gc_sys3(SYS_madvise, m, ARENA_SIZE, MADV_DONTDUMP);
    c->arena.base = (char *)m;
    c->arena.size = ARENA_SIZE;
    c->bounce = gc_arena_alloc(&c->arena, BOUNCE_SIZE);
    c->runs.buf = gc_arena_alloc(&c->arena, BOUNCE_SIZE);
    c->runs.buf_size = BOUNCE_SIZE;
    c->runs.page = c->page;

    long fd = gc_open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(c, fd);
    c->mem_fd = (int)fd;
    fd = gc_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    c->runs.pagemap_fd = (int)fd;
    c->runs.have_scan = fd >= 0;
}

/* Mappings: parse smaps, hide our own buffers, decide what each VMA contributes. */
static void child_maps(struct child *c)
{
    c->stage = GC_STAGE_MAPS;
    long n = gc_read_file(&c->arena, "/proc/self/smaps", &c->smaps);
    if (n < 0) fail(c, n);
    c->nvma = gc_parse_smaps(&c->arena, c->smaps, (size_t)n, &c->vmas);
    if (c->nvma < 0) fail(c, c->nvma);
    hide_own_buffers(c);
    c->nseg = 1; /* PT_NOTE */
    for (long i = 0; i < c->nvma; i++) {
        decide(c, &c->vmas[i]);
        if (!c->vmas[i].hidden) c->nseg++;
        c->total += c->vmas[i].dump;
    }
}

static void fill_elf_header(struct child *c, Elf64_Ehdr *eh)
{
    eh->e_ident[EI_MAG0] = ELFMAG0;
    eh->e_ident[EI_MAG1] = ELFMAG1;
    eh->e_ident[EI_MAG2] = ELFMAG2;
    eh->e_ident[EI_MAG3] = ELFMAG3;
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_CORE;
#if defined(__x86_64__)
    eh->e_machine = EM_X86_64;
#else
    eh->e_machine = EM_AARCH64;
#endif
    eh->e_version = EV_CURRENT;
    eh->e_phoff = sizeof(Elf64_Ehdr);
    eh->e_ehsize = sizeof(Elf64_Ehdr);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    /* More than 65535 segments: PN_XNUM, the count goes in section header 0's sh_info. */
    eh->e_phnum = c->nseg > 0xffff ? 0xffff : (uint16_t)c->nseg;
}

/* Pieces: one per VMA (its dump range in the file); under max_size, one per run of kept
 * pages, with the omitted pages after it (and a first piece with nothing in the file when
 * the VMA starts with omitted pages), so that every address of a file's mapping stays in a
 * PT_LOAD; anonymous memory's omitted pages are left out of the PT_LOADs. */
static uint64_t count_runs(const struct child *c)
{
    uint64_t runs = 0;
    for (long i = 0; c->capped && i < c->nvma; i++) {
        if (c->vmas[i].hidden || c->budget.bit_base[i] == UINT64_MAX) continue;
        uint64_t npages = (c->vmas[i].dump + c->page - 1) / c->page;
        for (uint64_t k = 0, prev = 0; k < npages; k++) {
            uint64_t cur = (uint64_t)gc_budget_kept(&c->budget, i, k);
            runs += cur && !prev;
            prev = cur;
        }
    }
    return runs;
}

static void make_pieces(struct child *c)
{
    /* at most one piece per VMA, plus one per run of kept pages */
    uint64_t cap = c->nseg + 1 + count_runs(c);
    c->pieces = gc_arena_alloc(&c->arena, sizeof(struct piece) * (size_t)cap);
    if (!c->pieces) fail(c, -ENOMEM);
    c->npieces = 0;
    uint64_t emitted = 0;
    for (long i = 0; i < c->nvma; i++) {
        struct gc_vma *v = &c->vmas[i];
        if (v->hidden) continue;
        long first = c->npieces;
        if (c->capped && c->budget.bit_base[i] != UINT64_MAX) {
            uint64_t npages = (v->dump + c->page - 1) / c->page, k = 0;
            while (k < npages) {
                if (!gc_budget_kept(&c->budget, i, k)) {
                    k++;
                    continue;
                }
                uint64_t r = k;
                while (r < npages && gc_budget_kept(&c->budget, i, r)) r++;
                uint64_t a = v->start + k * c->page;
                uint64_t b = v->start + r * c->page;
                if (b > v->start + v->dump) b = v->start + v->dump;
                if (c->npieces == first && a > v->start)
                    c->pieces[c->npieces++] = (struct piece){v->start, 0, 0, 0, i, 0};
                c->pieces[c->npieces++] = (struct piece){a, b - a, 0, 0, i, 0};
                k = r;
            }
        }
        if (c->npieces == first)
            c->pieces[c->npieces++] =
                (struct piece){v->start, c->capped ? 0 : v->dump, 0, 0, i, 0};
        int holes = c->capped && c->budget.bit_base[i] != UINT64_MAX &&
                    !(v->path_off != UINT32_MAX && c->smaps[v->path_off] == '/');
        for (long k = first; k < c->npieces; k++) { /* each piece reaches the next one */
            struct piece *p = &c->pieces[k];
            p->memsz = (k + 1 < c->npieces ? c->pieces[k + 1].start : v->end) - p->start;
            p->ph_memsz = holes ? p->filesz : p->memsz;
            emitted += p->ph_memsz != 0;
        }
    }
    c->nseg = 1 + emitted;
}

/* Program headers: PT_NOTE, then one PT_LOAD per piece; assigns each piece its file offset.
 * Returns the file size (before the PN_XNUM section header). */
static uint64_t fill_phdrs(struct child *c, Elf64_Phdr *ph, uint64_t notes_off, uint64_t notes_len)
{
    ph[0].p_type = PT_NOTE;
    ph[0].p_offset = notes_off;
    ph[0].p_filesz = notes_len;
    ph[0].p_align = 4;
    uint64_t off = (notes_off + notes_len + c->page - 1) & ~(c->page - 1);
    Elf64_Phdr *p = ph;
    for (long k = 0; k < c->npieces; k++) {
        struct piece *pc = &c->pieces[k];
        const struct gc_vma *v = &c->vmas[pc->vma];
        pc->file_off = off;
        if (!pc->ph_memsz) continue; /* omitted anonymous memory: no PT_LOAD */
        p++;
        p->p_type = PT_LOAD;
        p->p_offset = off;
        p->p_vaddr = pc->start;
        p->p_memsz = pc->ph_memsz;
        p->p_filesz = pc->filesz;
        p->p_flags = ((v->perms & GC_P_R) ? PF_R : 0) | ((v->perms & GC_P_W) ? PF_W : 0) |
                     ((v->perms & GC_P_X) ? PF_X : 0);
        p->p_align = c->page;
        off += pc->filesz;
    }
    return off;
}

static void write_all(struct child *c, const void *buf, size_t len, uint64_t off)
{
    const unsigned char *p = buf;
    while (len) {
        long w = out_at(c, p, len, off);
        if (w == -EINTR) continue;
        if (w <= 0) fail(c, w < 0 ? w : -EIO);
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
}

static uint64_t page_up(const struct child *c, uint64_t n) { return (n + c->page - 1) & ~(c->page - 1); }

/* The file size of the layout with these notes and nseg headers, all data included. */
static uint64_t layout_size(const struct child *c, uint64_t notes_len, uint64_t nseg, uint64_t data)
{
    uint64_t size = page_up(c, sizeof(Elf64_Ehdr) + nseg * sizeof(Elf64_Phdr) + notes_len) + data;
    return size + (nseg > 0xffff ? sizeof(Elf64_Shdr) : 0);
}

/* max_size: keep what analysis needs first, within the cap (or fail when even the headers
 * and notes do not fit). A core that fits is written exactly as without a cap. */
static void apply_cap(struct child *c, struct notebuf *nb)
{
    uint64_t cap = c->s->max_size;
    /* the capture note without budget: 256 + 48 per thread, as add_capture sizes it */
    uint64_t capture = 12 + 8 + 256 + (uint64_t)c->s->nthreads * 48;
    if (!cap || layout_size(c, nb->len + capture, c->nseg, c->total) <= cap) return;
    c->budget_note = cap / 16 < BUDGET_NOTE_MAX ? cap / 16 : BUDGET_NOTE_MAX;
    capture += c->budget_note + 1024;
    uint64_t fixed = layout_size(c, nb->len + capture, c->nseg, 0) + sizeof(Elf64_Shdr);
    c->need = fixed + c->page;
    if (fixed >= cap) fail(c, -EFBIG);
    c->capped = 1;
    c->budget.vmas = c->vmas;
    c->budget.nvma = c->nvma;
    c->budget.page = c->page;
    c->budget.mem_fd = c->mem_fd;
    /* every kept run may add a program header; the data start moves by whole pages */
    int rc = gc_budget_select(&c->budget, &c->arena, c->s, c->lead, &c->runs, c->smaps,
                              ((cap - fixed) & ~(c->page - 1)) - c->page);
    if (rc) fail(c, rc);
    c->total = 0;
    for (int k = 0; k < GC_CAT_N; k++) c->total += c->budget.kept[k];
}

/* Notes and headers: everything before the memory. */
static void child_headers(struct child *c)
{
    c->stage = GC_STAGE_NOTES;
    struct notebuf nb;
    nb.cap = 64u << 20;
    nb.p = gc_arena_alloc(&c->arena, nb.cap);
    nb.len = 0;
    if (!nb.p) fail(c, -ENOMEM);
    int rc = build_notes(c, &nb);
    if (rc) fail(c, rc);
    apply_cap(c, &nb);
    make_pieces(c);
    rc = add_capture(c, &nb);
    if (rc) fail(c, rc);

    uint64_t notes_off = sizeof(Elf64_Ehdr) + c->nseg * sizeof(Elf64_Phdr);
    unsigned char *hdr = gc_arena_alloc(&c->arena, (size_t)notes_off);
    if (!hdr) fail(c, -ENOMEM);
    gc_memzero(hdr, (size_t)notes_off);
    fill_elf_header(c, (Elf64_Ehdr *)hdr);
    c->data_end = fill_phdrs(c, (Elf64_Phdr *)(hdr + sizeof(Elf64_Ehdr)), notes_off, nb.len);
    c->file_size = c->data_end;
    if (c->nseg > 0xffff) {
        Elf64_Ehdr *eh = (Elf64_Ehdr *)hdr;
        eh->e_shoff = c->data_end;
        eh->e_shentsize = sizeof(Elf64_Shdr);
        eh->e_shnum = 1;
        c->file_size += sizeof(Elf64_Shdr);
    }
    if (c->s->max_size && c->file_size > c->s->max_size) {
        c->need = c->file_size;
        fail(c, -EFBIG); /* cannot happen: the budget counts every byte */
    }
    write_all(c, hdr, (size_t)notes_off, 0);
    write_all(c, nb.p, nb.len, notes_off);
}

/* Memory: every piece's data at its offset, then the PN_XNUM section header and the length. */
static void child_segments(struct child *c)
{
    c->stage = GC_STAGE_MEMORY;
    send_status(c, GC_ST_PROGRESS, 0);
    c->next_progress = PROGRESS_EVERY;
    for (long k = 0; k < c->npieces; k++) {
        if (!c->pieces[k].filesz) continue;
        long e = dump_piece(c, &c->pieces[k]);
        if (e < 0) fail(c, e);
    }
    if (c->nseg > 0xffff) {
        Elf64_Shdr sh;
        gc_memzero(&sh, sizeof sh);
        sh.sh_size = 1;
        sh.sh_info = (uint32_t)c->nseg;
        write_all(c, &sh, sizeof sh, c->data_end);
    }
    /* Holes at the end still count: set the full length. */
    long e = c->stream ? pad_to(c, c->file_size) : gc_sys2(SYS_ftruncate, c->s->core_fd, c->file_size);
    if (e < 0) fail(c, e);
    /* the filter must have written everything before the name appears */
    e = stream_end(c, 0);
    if (e < 0) fail(c, e);
}

/* Publish: the final name appears only now, complete. */
static void child_publish(struct child *c)
{
    struct gc_snapshot *s = c->s;
    c->stage = GC_STAGE_PUBLISH;
    long e = gc_sys5(SYS_renameat2, s->dir_fd, s->partial_name, s->dir_fd, s->final_name,
                     1 /* RENAME_NOREPLACE */);
    if (e == -EINVAL) {
        /* filesystem without RENAME_NOREPLACE: the name is unique by construction */
        e = gc_sys5(SYS_renameat2, s->dir_fd, s->partial_name, s->dir_fd, s->final_name, 0);
    }
#ifdef SYS_renameat
    if (e == -ENOSYS) /* Linux < 3.15 */
        e = gc_sys4(SYS_renameat, s->dir_fd, s->partial_name, s->dir_fd, s->final_name);
#endif
    if (e < 0) fail(c, e);
    send_result(c, GC_ST_DONE, 0, c->file_size, c->nseg);
}

void gc_child_main(struct gc_snapshot *s)
{
    struct child cs;
    gc_memzero(&cs, sizeof cs);
    cs.s = s;
    child_setup(&cs);
    child_maps(&cs);
    if (s->pipe_argv) stream_start(&cs);
    child_headers(&cs);
    child_segments(&cs);
    child_publish(&cs);
    gc_sys1(SYS_exit_group, 0);
    __builtin_unreachable();
}
