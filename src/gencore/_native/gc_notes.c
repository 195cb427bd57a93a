/* The snapshot child's notes, in the order Linux's fs/binfmt_elf.c writes them: the lead
 * thread's PRSTATUS, PRPSINFO, SIGINFO, AUXV, FILE, its FP state; each other thread's PRSTATUS
 * and FP state; then gencore's own (the GENCORE JSON note and the capture note). Runs in the
 * child (see gc_child.h); gc_min_core_size() uses the same accounting in the process. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/auxv.h>

#include "gc_child.h"
#include "gc_sys.h"

#define NT_X86_XSTATE 0x202
#define NT_X86_XSAVE_LAYOUT 0x205
#define NT_ARM_TLS 0x401
#define NT_ARM_SYSTEM_CALL 0x404
#define NT_ARM_PAC_MASK 0x406
#define NT_ARM_TAGGED_ADDR_CTRL 0x409
#define NT_ARM_PAC_ENABLED_KEYS 0x40a
#define NT_GENCORE_JSON 0x47430001u
#define NT_GENCORE_CAPTURE 0x47430002u

/* A note's bytes: the 12-byte header, the name and the description, each padded to 4. */
static uint64_t note_size(const char *name, uint64_t descsz)
{
    uint64_t namesz = gc_strlen(name) + 1;
    return 12 + ((namesz + 3) & ~3ull) + ((descsz + 3) & ~3ull);
}

static void *note_add(struct notebuf *nb, const char *name, uint32_t type, uint32_t descsz)
{
    uint32_t namesz = (uint32_t)gc_strlen(name) + 1;
    size_t need = (size_t)note_size(name, descsz);
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

/* redact="values": vector and FP registers hold whatever was copied last (a memcpy of a
 * secret); the notes keep their control and status words only. */
static int scrub_fp(const struct child *c)
{
    return c->s->o->redact.policy == GC_REDACT_VALUES;
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
    if (scrub_fp(c)) gc_fp_scrub(d, 464);
    /* bytes 464..511 stay zero, as the kernel writes them */
    uint32_t size = gc_xstate_size();
    if (size <= 512) return 0;
    d = note_add(nb, "LINUX", NT_X86_XSTATE, size);
    if (!d) return -ENOMEM;
    gc_memcopy(d, t->fp, t->fp_len < size ? t->fp_len : size);
    gc_memzero(d + 464, 48);
    *(uint64_t *)(d + 464) = gc_xcr0();
    if (scrub_fp(c)) gc_fp_scrub(d, size);
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
        if (scrub_fp(c)) gc_fp_scrub(d, 528);
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
    if (c->s->o->redact.policy == GC_REDACT_VALUES) /* the program's name only */
        for (long i = 0; i < n; i++)
            if (!args[i]) n = i;
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
    gc_fmt_u64(j, cap, pos, c->cap);
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

/* What redaction scrubbed (at most 250 bytes). */
static void format_redact(struct child *c, char *j, size_t cap, size_t *pos)
{
    const struct gc_redact_stats *st = gc_redact_stats(c->redact);
    const struct {
        const char *name;
        uint64_t v;
    } f[] = {{"strings", st->strings},   {"bytes", st->bytes},       {"bytearrays", st->bytearrays},
             {"kept", st->kept},         {"scrubbed_bytes", st->scrubbed},
             {"environ_bytes", st->environ}, {"excluded_bytes", st->excluded},
             {"faulted_pages", st->faulted}};
    gc_fmt_str(j, cap, pos, ", \"redact\": {\"policy\": \"");
    gc_fmt_str(j, cap, pos, gc_redact_policy_name(c->s->o->redact.policy));
    gc_fmt_str(j, cap, pos, "\"");
    for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++) {
        gc_fmt_str(j, cap, pos, ", \"");
        gc_fmt_str(j, cap, pos, f[i].name);
        gc_fmt_str(j, cap, pos, "\": ");
        gc_fmt_u64(j, cap, pos, f[i].v);
    }
    gc_fmt_str(j, cap, pos, "}");
}

/* Bytes the capture note's JSON may take: 48 per thread, and the budget's part. */
static size_t capture_cap(uint32_t nthreads, uint64_t budget_note, int capped)
{
    return 768 + (size_t)nthreads * 48 + (capped ? (size_t)budget_note + 1024 : 0);
}

uint64_t gc_w_capture_size(const struct child *c, int with_budget)
{
    return note_size("GENCORE", capture_cap(c->s->nthreads, c->budget_note, with_budget));
}

/* The capture note (JSON): only the child knows the final thread list. */
int gc_w_add_capture(struct child *c, struct notebuf *nb)
{
    const struct gc_snapshot *s = c->s;
    size_t cap = capture_cap(s->nthreads, c->capped ? c->budget_note : 0, c->capped);
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
    gc_fmt_u64(j, cap, &pos, s->o->filter);
    gc_fmt_str(j, cap, &pos, ", \"freeze_signal\": ");
    gc_fmt_u64(j, cap, &pos, (uint64_t)s->o->freeze_signal);
    gc_fmt_str(j, cap, &pos, ", \"freeze_timeout_ns\": ");
    gc_fmt_u64(j, cap, &pos, s->o->freeze_timeout_ns);
    if (c->redact) format_redact(c, j, cap, &pos);
    if (c->cg_limit) {
        gc_fmt_str(j, cap, &pos, ", \"memory\": {\"cgroup_limit\": ");
        gc_fmt_u64(j, cap, &pos, c->cg_limit);
        gc_fmt_str(j, cap, &pos, ", \"cgroup_usage\": ");
        gc_fmt_u64(j, cap, &pos, c->cg_usage);
        gc_fmt_str(j, cap, &pos, c->bounded ? ", \"bounded_page_cache\": true"
                                            : ", \"bounded_page_cache\": false");
        gc_fmt_str(j, cap, &pos, ", \"auto_max_size\": ");
        gc_fmt_u64(j, cap, &pos, c->auto_cap);
        gc_fmt_str(j, cap, &pos, "}");
    }
    if (c->capped) format_budget(c, j, cap - 2, &pos);
    gc_fmt_str(j, cap, &pos, "}");
    unsigned char *d = note_add(nb, "GENCORE", NT_GENCORE_CAPTURE, (uint32_t)pos);
    if (!d) return -ENOMEM;
    gc_memcopy(d, j, pos);
    return 0;
}

/* Every note but the capture note (added by add_capture, last). */
int gc_w_build_notes(struct child *c, struct notebuf *nb)
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


static uint64_t gc_page_of_process(void)
{
    long page = (long)getauxval(AT_PAGESZ);
    return page > 0 ? (uint64_t)page : 4096;
}

/* ---- the smallest core, counted in the process ------------------------------------------ */

/* Notes written for each thread after its NT_PRSTATUS, at most. */
static uint64_t thread_fp_notes(void)
{
#if defined(__x86_64__)
    uint32_t xs = gc_xstate_size();
    return note_size("CORE", 512) + (xs > 512 ? note_size("LINUX", xs) : 0);
#else
    return note_size("CORE", 528) + note_size("LINUX", gc_tls_note_size()) +
           note_size("LINUX", 4) + note_size("LINUX", 16) + 2 * note_size("LINUX", 8);
#endif
}

struct maps_count {
    uint64_t lines, files, paths;
};

/* Mappings, file mappings and their paths' bytes in /proc/self/maps, read in chunks. */
static void count_maps(struct maps_count *m)
{
    char buf[4096];
    long fd = gc_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    int field = 0, in_path = 0;
    long n;
    while ((n = gc_read((int)fd, buf, sizeof buf)) > 0) {
        for (long i = 0; i < n; i++) {
            char ch = buf[i];
            if (ch == '\n') {
                m->lines++;
                if (in_path) m->paths++; /* its NUL */
                field = in_path = 0;
            } else if (in_path) {
                m->paths++;
            } else if (ch == ' ') {
                field++;
            } else if (field >= 5 && ch == '/') {
                in_path = 1;
                m->files++;
                m->paths++;
            }
        }
    }
    gc_close((int)fd);
}

static int count_one(long number, void *arg)
{
    (void)number;
    (*(uint64_t *)arg)++;
    return 0;
}

uint64_t gc_min_core_size(uint64_t note_len, uint64_t max_size)
{
    const uint64_t slack_threads = 2, slack_maps = 8;
    uint64_t page = gc_page_of_process(), threads = 0;
    long dfd = gc_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        gc_dir_numbers((int)dfd, count_one, &threads);
        gc_close((int)dfd);
    }
    threads += slack_threads;
    struct maps_count m = {0, 0, 0};
    count_maps(&m);
    uint64_t nseg = 1 + m.lines + slack_maps;
    uint64_t notes = threads * (note_size("CORE", GC_PRSTATUS_SIZE) + thread_fp_notes()) +
                     note_size("CORE", 136) + note_size("CORE", 128) + note_size("CORE", 1024) +
                     note_size("CORE", 16 + 24 * (m.files + slack_maps) + m.paths + 4096) +
                     note_size("LINUX", 64 * 16) + note_size("GENCORE", note_len) +
                     note_size("GENCORE", capture_cap((uint32_t)threads,
                                                      gc_budget_note_size(max_size), 1));
    uint64_t head = sizeof(Elf64_Ehdr) + nseg * sizeof(Elf64_Phdr) + notes;
    uint64_t fixed = ((head + page - 1) & ~(page - 1)) + sizeof(Elf64_Shdr);
    return fixed + 2 * page; /* and a page of data: the child's own rule */
}
