/* The snapshot child: writes a kernel-compatible ELF core of its own (copy-on-write) memory.
 *
 * Rules: raw syscalls only (gc_sys.h), no malloc, no stdio, no locks, no Python. Memory comes
 * from an arena mmapped here; the child runs on a stack the parent mapped before the freeze.
 * Layout and notes follow Linux's fs/binfmt_elf.c: PT_NOTE first, one PT_LOAD per VMA in
 * address order (p_filesz 0 where nothing is dumped), data page-aligned after the notes.
 * This file: setup, the mappings and what each contributes, the layout, publishing; the
 * notes are gc_notes.c's, the output gc_output.c's.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "gc_cgroup.h"
#include "gc_child.h"
#include "gc_room.h"
#include "gc_sys.h"

#ifndef MADV_DONTDUMP
#define MADV_DONTDUMP 16
#endif

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

#define KEEP_FDS 4

struct keep_set {
    int fds[KEEP_FDS + 1];
};

static int close_unless_kept(long fd, void *arg)
{
    const struct keep_set *ks = arg;
    for (int i = 0; i < KEEP_FDS + 1; i++)
        if (ks->fds[i] == fd) return 0;
    gc_close((int)fd);
    return 0;
}

/* Close every descriptor but the core's, the directory's, the status pipe and the events
 * file: the application's pipes, sockets and locks must not live on in the child. */
static void close_inherited(struct gc_snapshot *s)
{
    int keep[KEEP_FDS] = {s->core_fd, s->dir_fd, s->status_fd, s->events_fd};
    for (int i = 0; i < KEEP_FDS; i++) /* sort; -1 (none) first */
        for (int j = i + 1; j < KEEP_FDS; j++)
            if (keep[j] < keep[i]) {
                int t = keep[i];
                keep[i] = keep[j];
                keep[j] = t;
            }
    unsigned lo = 0;
    int ok = 1;
    for (int i = 0; i < KEEP_FDS; i++) {
        if (keep[i] < 0) continue;
        if ((unsigned)keep[i] > lo && gc_sys3(SYS_close_range, lo, keep[i] - 1, 0) < 0) ok = 0;
        lo = (unsigned)keep[i] + 1;
    }
    if (gc_sys3(SYS_close_range, lo, ~0u, 0) < 0) ok = 0;
    if (ok) return;
    /* close_range missing (Linux < 5.9): close what /proc/self/fd lists. */
    long dfd = gc_open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    struct keep_set ks = {{keep[0], keep[1], keep[2], keep[3], (int)dfd}};
    gc_dir_numbers((int)dfd, close_unless_kept, &ks);
    gc_close((int)dfd);
}

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
    uint32_t f = c->s->o->filter;
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

static const void *copy_in(struct child *c, const void *src, size_t n)
{
    if (!src) return NULL;
    void *d = gc_arena_alloc(&c->arena, n ? n : 1);
    if (!d) gc_w_fail(c, -ENOMEM);
    gc_memcopy(d, src, n);
    return d;
}

/* Everything the child reads of the application's memory after it starts writing moves into
 * its own arena first (the snapshot and its options live in the caller's stack and the
 * Python heap): under memory pressure the child lets go of memory once written
 * (gc_w_release). */
static void detach(struct child *c)
{
    struct gc_snapshot *s = (struct gc_snapshot *)copy_in(c, c->s, sizeof *c->s);
    struct gc_core_options *o = (struct gc_core_options *)copy_in(c, s->o, sizeof *s->o);
    s->o = o;
    s->pylayout = s->pylayout ? &o->pylayout : NULL;
    s->partial_name = copy_in(c, s->partial_name, gc_strlen(s->partial_name) + 1);
    s->final_name = copy_in(c, s->final_name, gc_strlen(s->final_name) + 1);
    s->note = copy_in(c, s->note, s->note_len);
    s->kinds = copy_in(c, s->kinds, s->kinds_len);
    s->cgroup = s->cgroup ? copy_in(c, s->cgroup, gc_strlen(s->cgroup) + 1) : NULL;
    c->s = s;
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
    if (m < 0 && m > -4096) gc_w_fail(c, m);
    gc_sys3(SYS_madvise, m, ARENA_SIZE, MADV_DONTDUMP);
    c->arena.base = (char *)m;
    c->arena.size = ARENA_SIZE;
    c->bounce = gc_arena_alloc(&c->arena, BOUNCE_SIZE);
    c->runs.buf = gc_arena_alloc(&c->arena, BOUNCE_SIZE);
    c->runs.buf_size = BOUNCE_SIZE;
    c->runs.page = c->page;
    detach(c);
    s = c->s;

    long fd = gc_open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0) gc_w_fail(c, fd);
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
    if (n < 0) gc_w_fail(c, n);
    c->nvma = gc_parse_smaps(&c->arena, c->smaps, (size_t)n, &c->vmas);
    if (c->nvma < 0) gc_w_fail(c, c->nvma);
    hide_own_buffers(c);
    c->nseg = 1; /* PT_NOTE */
    for (long i = 0; i < c->nvma; i++) {
        decide(c, &c->vmas[i]);
        if (!c->vmas[i].hidden) c->nseg++;
        c->total += c->vmas[i].dump;
    }
}

#define HEADROOM_FLOOR (64ull << 20)

/* The memory cgroup: the page cache of the file being written and the copies the application
 * makes of the pages it writes meanwhile are charged to it. When the headroom is short, the
 * page cache stays bounded; when it is very short, the core is capped (what analysis needs
 * first, as with max_size) so that it is done sooner. */
static void plan_memory(struct child *c)
{
    const struct gc_snapshot *s = c->s;
    struct gc_cgroup cg;
    c->cap = s->o->max_size;
    if (s->cgroup && gc_cgroup_read(s->cgroup, s->o->cgroup_version, &cg) == 0 && cg.limit) {
        c->cg_limit = cg.limit;
        c->cg_usage = cg.usage;
        uint64_t headroom = cg.limit > cg.usage ? cg.limit - cg.usage : 0;
        c->bounded = c->total > headroom / 4;
        uint64_t want = headroom / 2 > HEADROOM_FLOOR / 2 ? headroom / 2 : HEADROOM_FLOOR / 2;
        if (headroom < 4 * HEADROOM_FLOOR && s->pylayout && (!c->cap || want < c->cap)) {
            c->cap = want;
            c->auto_cap = want;
        }
    }
    if (s->o->page_cache == 1) c->bounded = 1;
    if (s->o->page_cache == 2) c->bounded = 0;
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
    if (!c->pieces) gc_w_fail(c, -ENOMEM);
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
    uint64_t cap = c->cap;
    if (!cap || layout_size(c, nb->len + gc_w_capture_size(c, 0), c->nseg, c->total) <= cap)
        return;
    c->budget_note = gc_budget_note_size(cap);
    uint64_t fixed =
        layout_size(c, nb->len + gc_w_capture_size(c, 1), c->nseg, 0) + sizeof(Elf64_Shdr);
    c->need = fixed + c->page;
    if (fixed >= cap) gc_w_fail(c, -EFBIG);
    c->capped = 1;
    c->budget.vmas = c->vmas;
    c->budget.nvma = c->nvma;
    c->budget.page = c->page;
    c->budget.mem_fd = c->mem_fd;
    /* every kept run may add a program header; the data start moves by whole pages */
    int rc = gc_budget_select(&c->budget, &c->arena, c->s, c->lead, &c->runs, c->smaps,
                              ((cap - fixed) & ~(c->page - 1)) - c->page);
    if (rc) gc_w_fail(c, rc);
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
    if (!nb.p) gc_w_fail(c, -ENOMEM);
    int rc = gc_w_build_notes(c, &nb);
    if (rc) gc_w_fail(c, rc);
    apply_cap(c, &nb);
    make_pieces(c);
    rc = gc_w_add_capture(c, &nb);
    if (rc) gc_w_fail(c, rc);

    uint64_t notes_off = sizeof(Elf64_Ehdr) + c->nseg * sizeof(Elf64_Phdr);
    unsigned char *hdr = gc_arena_alloc(&c->arena, (size_t)notes_off);
    if (!hdr) gc_w_fail(c, -ENOMEM);
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
    if (c->cap && c->file_size > c->cap) {
        c->need = c->file_size;
        gc_w_fail(c, -EFBIG); /* cannot happen: the budget counts every byte */
    }
    gc_w_write_all(c, hdr, (size_t)notes_off, 0);
    gc_w_write_all(c, nb.p, nb.len, notes_off);
}

/* Memory: every piece's data at its offset, then the PN_XNUM section header and the length. */
static void child_segments(struct child *c)
{
    c->stage = GC_STAGE_MEMORY;
    gc_w_send_status(c, GC_ST_PROGRESS, 0);
    c->next_progress = PROGRESS_EVERY;
    for (long k = 0; k < c->npieces; k++) {
        if (!c->pieces[k].filesz) continue;
        long e = gc_w_dump_piece(c, &c->pieces[k]);
        if (e < 0) gc_w_fail(c, e);
    }
    if (c->nseg > 0xffff) {
        Elf64_Shdr sh;
        gc_memzero(&sh, sizeof sh);
        sh.sh_size = 1;
        sh.sh_info = (uint32_t)c->nseg;
        gc_w_write_all(c, &sh, sizeof sh, c->data_end);
    }
    /* Holes at the end still count: set the full length. */
    long e = c->stream ? gc_w_pad_to(c, c->file_size) : gc_sys2(SYS_ftruncate, c->s->core_fd, c->file_size);
    if (e < 0) gc_w_fail(c, e);
    /* the filter must have written everything before the name appears */
    e = gc_w_stream_end(c, 0);
    if (e < 0) gc_w_fail(c, e);
}

/* Publish: room is made in the directory first (the budget), then the final name appears,
 * complete. */
static void child_publish(struct child *c)
{
    struct gc_snapshot *s = c->s;
    c->stage = GC_STAGE_PUBLISH;
    struct stat st;
    struct gc_room room = {s->dir_fd, s->events_fd, s->o->max_total, s->o->keep_free,
                           s->o->uploads, s->kinds, s->kinds_len};
    uint64_t bytes = gc_sys2(SYS_fstat, s->core_fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
    gc_make_room(&room, bytes, &c->arena); /* best effort: a full directory still gets it */
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
    if (e < 0) gc_w_fail(c, e);
    gc_w_send_result(c, GC_ST_DONE, 0, c->file_size, c->nseg);
}

void gc_child_main(struct gc_snapshot *s)
{
    struct child cs;
    gc_memzero(&cs, sizeof cs);
    cs.s = s;
    child_setup(&cs);
    child_maps(&cs);
    plan_memory(&cs);
    int rc = gc_redact_prepare(&cs);
    if (rc) gc_w_fail(&cs, rc);
    if (s->pipe_argv) gc_w_stream_start(&cs);
    child_headers(&cs);
    child_segments(&cs);
    child_publish(&cs);
    gc_sys1(SYS_exit_group, 0);
    __builtin_unreachable();
}
