/* Capped cores: the pages a max_size core keeps, chosen in the order analysis needs them.
 *
 * 1. every thread's stack from its stack pointer up (the caller's first; the first 256 KiB
 *    of each, then the rest of each);
 * 2. each thread's TLS and struct pthread, then what pystack and py-spy follow from the
 *    interpreter: thread states, frames, code objects, their names, file names and line
 *    tables, walked in this child's own copy of memory from the recorded layout;
 * 3. the first page of every mapped ELF file (build-ids: how readers find the executable and
 *    libraries) and [vdso];
 * 4. writable data (.data, .bss) of the executable and libpython (_PyRuntime), then of the
 *    other libraries;
 * 5. the rest: private anonymous memory in mappings of up to 1 MiB, then up to 64 MiB, then
 *    larger (present pages only, in address order within each class), file-backed private
 *    memory, shared memory.
 * Each page is counted once; every range that starts a run may cost one program header.
 * Runs in the snapshot child: raw system calls, arena memory, reads through /proc/self/mem
 * (a wrong pointer reads nothing instead of faulting).
 */
#define _GNU_SOURCE
#include <errno.h>

#include "gc_budget.h"
#include "gc_sys.h"

#define PHDR_COST 56u
#define STACK_FIRST (256u << 10)
#define MAX_THREADS 100000u
#define MAX_INTERPRETERS 256u /* MAX_INTERPRETERS in capture/caplayout.py */
#define MAX_FRAMES 1000000u
#define MAX_OBJECT (16u << 20)

/* PAGEMAP_SCAN (Linux 6.7+); defined here so older headers build. */
struct gc_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct gc_page_region {
    uint64_t start, end, categories;
};
#define GC_PAGEMAP_SCAN \
    ((3u << 30) | ((unsigned)sizeof(struct gc_pm_scan_arg) << 16) | ('f' << 8) | 16u)
#define PAGE_IS_PRESENT (1u << 3)
#define PAGE_IS_SWAPPED (1u << 4)
#define PAGE_IS_PFNZERO (1u << 5)

long gc_present_runs(struct gc_runs *r, uint64_t start, uint64_t end, gc_run_fn fn, void *arg)
{
    uint64_t at = start;
    if (r->pagemap_fd < 0) return fn(start, end, arg);
    if (r->have_scan) {
        struct gc_page_region *regions = r->buf;
        while (at < end) {
            struct gc_pm_scan_arg q;
            gc_memzero(&q, sizeof q);
            q.size = sizeof q;
            q.start = at;
            q.end = end;
            q.vec = (uint64_t)(uintptr_t)regions;
            q.vec_len = r->buf_size / sizeof(struct gc_page_region);
            q.category_inverted = PAGE_IS_PFNZERO;
            q.category_mask = PAGE_IS_PFNZERO;
            q.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
            q.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
            long n = gc_sys3(SYS_ioctl, r->pagemap_fd, GC_PAGEMAP_SCAN, &q);
            if (n == -EINTR) continue;
            if (n < 0) {
                r->have_scan = 0; /* older kernel: the pagemap file below */
                break;
            }
            for (long i = 0; i < n; i++) {
                long e = fn(regions[i].start, regions[i].end, arg);
                if (e) return e;
            }
            if (q.walk_end <= at) break;
            at = q.walk_end;
        }
        if (r->have_scan) return 0;
    }
    /* one u64 per page: bit 63 present, bit 62 swapped */
    uint64_t *ents = r->buf;
    uint64_t per = r->buf_size / 8;
    while (at < end) {
        uint64_t npages = (end - at) / r->page;
        if (npages > per) npages = per;
        long got = gc_pread(r->pagemap_fd, ents, npages * 8, (at / r->page) * 8);
        if (got <= 0) return fn(at, end, arg);
        npages = (uint64_t)got / 8;
        uint64_t run = 0;
        for (uint64_t i = 0; i <= npages; i++) {
            if (i < npages && (ents[i] >> 62) != 0) {
                run++;
                continue;
            }
            if (run) {
                uint64_t s0 = at + (i - run) * r->page;
                long e = fn(s0, s0 + run * r->page, arg);
                if (e) return e;
                run = 0;
            }
        }
        at += npages * r->page;
    }
    return 0;
}

/* ------------------------------------------------------------------ keeping pages */

static long find_vma(const struct gc_budget *b, uint64_t addr)
{
    long lo = 0, hi = b->nvma - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        if (addr < b->vmas[mid].start)
            hi = mid - 1;
        else if (addr >= b->vmas[mid].end)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

/* Keep [addr, addr + len) where it lies in dump ranges. Returns 1 once the budget is spent. */
static int keep(struct gc_budget *b, uint64_t addr, uint64_t len, int cat)
{
    if (!len || addr + len < addr) return 0;
    uint64_t end = addr + len;
    addr &= ~(b->page - 1);
    long i = find_vma(b, addr);
    if (i < 0) {
        /* the range may start in a gap: the first VMA above it */
        for (i = 0; i < b->nvma && b->vmas[i].end <= addr; i++) {
        }
    }
    int started = 0;
    for (; i >= 0 && i < b->nvma && b->vmas[i].start < end; i++) {
        const struct gc_vma *v = &b->vmas[i];
        if (b->bit_base[i] == UINT64_MAX) continue;
        uint64_t lo = addr > v->start ? addr : v->start;
        uint64_t hi = v->start + v->dump;
        if (end < hi) hi = end;
        for (uint64_t p = lo; p < hi; p += b->page) {
            uint64_t bit = b->bit_base[i] + (p - v->start) / b->page;
            uint64_t mask = 1ull << (bit & 63);
            if (b->bits[bit >> 6] & mask) {
                started = 0; /* a kept page: what follows joins its run */
                continue;
            }
            uint64_t cost = b->page + (started ? 0 : PHDR_COST);
            if (b->left < cost) return 1;
            b->left -= cost;
            b->bits[bit >> 6] |= mask;
            b->kept[cat] += b->page;
            started = 1;
        }
        started = 0;
    }
    return 0;
}

static int keep_vma(struct gc_budget *b, long i, int cat)
{
    return keep(b, b->vmas[i].start, b->vmas[i].dump, cat);
}

/* ------------------------------------------------------------------ tiers */

static int is_live(const struct gc_thread *t)
{
    return t->state == GC_T_CALLER || t->state == GC_T_PARKED || t->state == GC_T_TIMEOUT;
}

/* The lead thread (the one gdb selects) first, then the others in capture order. */
static const struct gc_thread *nth_thread(const struct gc_snapshot *s, uint32_t lead, uint32_t k)
{
    if (k == 0) return &s->threads[lead];
    uint32_t i = k <= lead ? k - 1 : k;
    return &s->threads[i];
}

static int tier_stacks(struct gc_budget *b, const struct gc_snapshot *s, uint32_t lead)
{
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t k = 0; k < s->nthreads; k++) {
            const struct gc_thread *t = nth_thread(s, lead, k);
            if (!is_live(t)) continue;
            uint64_t sp = t->regs[GC_REG_SP];
            long i = find_vma(b, sp);
            if (i < 0) continue;
            uint64_t from = sp - 512 > b->vmas[i].start ? sp - 512 : b->vmas[i].start;
            uint64_t to = b->vmas[i].end;
            /* a thread's stack ends at its struct pthread (the TLS pointer), which may be
             * far below the end of a mapping that holds several threads' stacks */
            uint64_t tls = t->tls;
            if (tls > sp && tls < to && tls - sp < (64u << 20)) to = tls + GC_TLS_ABOVE;
            if (to > b->vmas[i].end) to = b->vmas[i].end;
            if (pass == 0 && to - from > STACK_FIRST) to = from + STACK_FIRST;
            if (keep(b, from, to - from, GC_CAT_STACKS)) return 1;
        }
    }
    return 0;
}

static uint64_t rd(const struct gc_budget *b, uint64_t addr)
{
    uint64_t v = 0;
    if (!addr || gc_pread(b->mem_fd, &v, 8, addr) != 8) return 0;
    return v;
}

/* A str's or bytes' extent from its length field: generous (4 bytes per character). */
static uint64_t object_extent(const struct gc_budget *b, uint64_t obj)
{
    uint64_t n = rd(b, obj + 16);
    if (n > MAX_OBJECT / 4) n = MAX_OBJECT / 4;
    return 64 + n * 4;
}

static int walk_code(struct gc_budget *b, const struct gc_pylayout *L, uint64_t code)
{
    if (!code || rd(b, code + 8) != L->code_type) return 0;
    uint64_t size = L->code_basicsize;
    if (L->code_itemsize) {
        uint64_t n = rd(b, code + 16);
        if (n > MAX_OBJECT / L->code_itemsize) n = MAX_OBJECT / L->code_itemsize;
        size += n * L->code_itemsize;
    }
    if (keep(b, code - 16, size + 16, GC_CAT_PYTHON)) return 1;
    for (unsigned k = 0; k < 5; k++) {
        if (L->code_fields[k] < 0) continue;
        uint64_t obj = rd(b, code + (uint64_t)L->code_fields[k]);
        if (obj && keep(b, obj - 16, object_extent(b, obj) + 16, GC_CAT_PYTHON)) return 1;
    }
    /* the variable names: a tuple of str */
    uint64_t names = L->code_fields[5] < 0 ? 0 : rd(b, code + (uint64_t)L->code_fields[5]);
    uint64_t n = names ? rd(b, names + 16) : 0;
    if (n > 4096) n = 4096;
    if (names && keep(b, names - 16, L->tuple_items + 8 * n + 16, GC_CAT_PYTHON)) return 1;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t obj = rd(b, names + L->tuple_items + 8 * k);
        if (obj && keep(b, obj - 16, object_extent(b, obj) + 16, GC_CAT_PYTHON)) return 1;
    }
    return 0;
}

static int walk_frames(struct gc_budget *b, const struct gc_pylayout *L, uint64_t f)
{
    for (uint32_t k = 0; f && k < MAX_FRAMES && b->frames < MAX_FRAMES; k++, b->frames++) {
        uint64_t size = L->frame_keep;
        if (L->frame_var) {
            uint64_t n = rd(b, f + 16);
            if (n < (1u << 20)) size += n * 8;
        }
        if (keep(b, f, size, GC_CAT_PYTHON)) return 1;
        if (walk_code(b, L, rd(b, f + (uint64_t)L->frame_code) & L->code_mask)) return 1;
        f = rd(b, f + (uint64_t)L->frame_back);
    }
    return 0;
}

/* One interpreter: its state, its thread states, their frames. */
static int walk_interpreter(struct gc_budget *b, const struct gc_pylayout *L, uint64_t interp)
{
    if (keep(b, interp, L->interp_keep, GC_CAT_PYTHON)) return 1;
    for (int k = 0; k < 3; k++) { /* the dicts readers check an interpreter by */
        uint64_t d = L->interp_dicts[k] >= 0 ? rd(b, interp + (uint64_t)L->interp_dicts[k]) : 0;
        if (d && keep(b, d - 16, 256, GC_CAT_PYTHON)) return 1;
    }
    uint64_t ts = rd(b, interp + (uint64_t)L->interp_threads);
    for (uint32_t n = 0; ts && n < MAX_THREADS; n++, b->threads++) {
        if (rd(b, ts + (uint64_t)L->ts_interp) != interp) break; /* not a thread state */
        if (keep(b, ts, L->ts_keep, GC_CAT_PYTHON)) return 1;
        uint64_t f = rd(b, ts + (uint64_t)L->ts_frame);
        if (L->cframe_current >= 0 && f) f = rd(b, f + (uint64_t)L->cframe_current);
        if (walk_frames(b, L, f)) return 1;
        ts = rd(b, ts + (uint64_t)L->ts_next);
    }
    return 0;
}

static int tier_python(struct gc_budget *b, const struct gc_snapshot *s, uint32_t lead)
{
    for (uint32_t k = 0; k < s->nthreads; k++) {
        const struct gc_thread *t = nth_thread(s, lead, k);
        uint64_t tls = t->tls;
        if (is_live(t) && tls > GC_TLS_BELOW &&
            keep(b, tls - GC_TLS_BELOW, GC_TLS_BELOW + GC_TLS_ABOVE, GC_CAT_PYTHON))
            return 1;
    }
    const struct gc_pylayout *L = s->pylayout;
    if (!L || !L->interp) return 0;
    /* struct r_debug {int r_version; struct link_map *r_map; ...} and the link_map list
     * {l_addr, l_name, l_ld, l_next, l_prev, ...}: how debuggers find the libraries */
    if (L->r_debug && keep(b, L->r_debug, 64, GC_CAT_PYTHON)) return 1;
    uint64_t lm = L->r_debug ? rd(b, L->r_debug + 8) : 0;
    for (uint32_t n = 0; lm && n < 65536; n++) {
        uint64_t name = rd(b, lm + 8);
        if (keep(b, lm, 1280, GC_CAT_PYTHON) || (name && keep(b, name, 512, GC_CAT_PYTHON)))
            return 1;
        lm = rd(b, lm + 24);
    }
    if (keep(b, L->runtime, L->runtime_size, GC_CAT_PYTHON)) return 1;
    for (int k = 0; k < 4; k++)
        if (L->objects[k] && keep(b, L->objects[k] - 16, 256, GC_CAT_PYTHON)) return 1;
    /* every interpreter, newest first (readers start from the head), else the caller's */
    int chain = L->interp_head >= 0 && L->interp_next >= 0;
    uint64_t interp = chain ? rd(b, L->runtime + (uint64_t)L->interp_head) : L->interp;
    for (uint32_t n = 0; interp && n < MAX_INTERPRETERS; n++) {
        if (walk_interpreter(b, L, interp)) return 1;
        interp = chain ? rd(b, interp + (uint64_t)L->interp_next) : 0;
    }
    return 0;
}

static int is_file(const struct gc_vma *v, const char *pool)
{
    return v->path_off != UINT32_MAX && pool[v->path_off] == '/';
}

/* The file a data mapping belongs to, or -1: its writable or written (relocated, RELRO:
 * .dynamic, .got) private mappings, and .bss, the anonymous mapping right after a file's
 * writable mapping. */
static long data_owner(const struct gc_budget *b, long i, const char *pool)
{
    const struct gc_vma *v = &b->vmas[i];
    if (v->vmflags & GC_VM_SH) return -1;
    if (is_file(v, pool) && ((v->perms & GC_P_W) || v->anon_kb)) return i;
    if (!(v->perms & GC_P_W)) return -1;
    if (i > 0 && v->path_off == UINT32_MAX && b->vmas[i - 1].end == v->start &&
        v->end - v->start <= (64u << 20)) {
        const struct gc_vma *prev = &b->vmas[i - 1];
        if (is_file(prev, pool) && (prev->perms & GC_P_W)) return i - 1;
    }
    return -1;
}

/* The interpreter's own files: the executable (what /proc/self/exe links to), libpython. */
static int is_interpreter(const struct gc_vma *v, const char *pool, const char *exe, long exe_len)
{
    const char *path = pool + v->path_off;
    if (exe_len > 0 && (long)v->path_len == exe_len) {
        long k = 0;
        while (k < exe_len && path[k] == exe[k]) k++;
        if (k == exe_len) return 1;
    }
    const char *base = path;
    for (uint32_t k = 0; k < v->path_len; k++)
        if (path[k] == '/') base = path + k + 1;
    /* and the system libraries debuggers read first: the loader, libc (threads) */
    return gc_startswith(base, "libpython") || gc_startswith(base, "ld-linux") ||
           gc_startswith(base, "libc.so") || gc_startswith(base, "libpthread");
}

static int tier_data(struct gc_budget *b, const char *pool)
{
    char exe[4096];
    long exe_len = gc_readlink("/proc/self/exe", exe, sizeof exe);
    for (int pass = 0; pass < 2; pass++) {
        for (long i = 0; i < b->nvma; i++) {
            long owner = data_owner(b, i, pool);
            if (owner < 0) continue;
            int interp = is_interpreter(&b->vmas[owner], pool, exe, exe_len);
            if ((pass == 0) == (interp != 0) && keep_vma(b, i, GC_CAT_DATA)) return 1;
        }
    }
    return 0;
}

static int tier_elf(struct gc_budget *b, const char *pool)
{
    for (long i = 0; i < b->nvma; i++) {
        const struct gc_vma *v = &b->vmas[i];
        if (v->path_off != UINT32_MAX && gc_startswith(pool + v->path_off, "[vdso]")) {
            if (keep_vma(b, i, GC_CAT_ELF)) return 1;
        } else if (is_file(v, pool) && v->pgoff == 0 && v->dump) {
            unsigned char m[4] = {0, 0, 0, 0};
            if (gc_pread(b->mem_fd, m, 4, v->start) == 4 && m[0] == 0x7f && m[1] == 'E' &&
                m[2] == 'L' && m[3] == 'F' && keep(b, v->start, b->page, GC_CAT_ELF))
                return 1;
        }
    }
    return 0;
}

static long keep_run(uint64_t start, uint64_t end, void *arg)
{
    return keep(arg, start, end - start, GC_CAT_OTHER);
}

static int tier_rest(struct gc_budget *b, struct gc_runs *runs)
{
    static const uint64_t classes[] = {1u << 20, 64u << 20, UINT64_MAX};
    uint64_t below = 0;
    for (unsigned c = 0; c < 3; c++) {
        for (long i = 0; i < b->nvma; i++) {
            const struct gc_vma *v = &b->vmas[i];
            uint64_t size = v->end - v->start;
            if (v->how != GC_DUMP_ANON || size <= below || size > classes[c]) continue;
            if (gc_present_runs(runs, v->start, v->start + v->dump, keep_run, b)) return 1;
        }
        below = classes[c];
    }
    for (uint32_t how = GC_DUMP_FILE;; how = GC_DUMP_SHARED) {
        for (long i = 0; i < b->nvma; i++)
            if (b->vmas[i].how == how && keep_vma(b, i, GC_CAT_OTHER)) return 1;
        if (how == GC_DUMP_SHARED) break;
    }
    return 0;
}

int gc_budget_select(struct gc_budget *b, struct gc_arena *a, const struct gc_snapshot *s,
                     uint32_t lead, struct gc_runs *runs, const char *pool, uint64_t budget)
{
    uint64_t nbits = 0;
    b->bit_base = gc_arena_alloc(a, sizeof(uint64_t) * (size_t)(b->nvma + 1));
    if (!b->bit_base) return -ENOMEM;
    for (long i = 0; i < b->nvma; i++) {
        const struct gc_vma *v = &b->vmas[i];
        b->bit_base[i] = UINT64_MAX;
        if (v->hidden || !v->dump || v->how == GC_DUMP_NONE) continue;
        b->bit_base[i] = nbits;
        nbits += (v->dump + b->page - 1) / b->page;
        b->dumpable += v->dump;
    }
    b->bits = gc_arena_alloc(a, (size_t)((nbits + 63) / 64) * 8);
    if (!b->bits) return -ENOMEM;
    gc_memzero(b->bits, (size_t)((nbits + 63) / 64) * 8);
    b->left = budget;
    if (tier_stacks(b, s, lead) || tier_python(b, s, lead) || tier_elf(b, pool) ||
        tier_data(b, pool) || tier_rest(b, runs))
        return 0; /* the budget is spent */
    return 0;
}
