/* Capped cores (max_size): which pages the snapshot child keeps, in priority order.
 * Runs in the child: raw system calls, arena memory, no Python. */
#ifndef GC_BUDGET_H
#define GC_BUDGET_H

#include <stdint.h>

#include "gc_procfs.h"
#include "gc_snapshot.h"

/* What the kept bytes are, in the order they are chosen. */
enum gc_category {
    GC_CAT_STACKS = 0, /* every thread's stack from its stack pointer up */
    GC_CAT_PYTHON,     /* TLS, interpreter, thread states, frames, code objects, names */
    GC_CAT_ELF,        /* first page of every mapped ELF file, [vdso] */
    GC_CAT_DATA,       /* writable data (.data, .bss): the interpreter's, then the libraries' */
    GC_CAT_OTHER,      /* the rest: small anonymous mappings first, then larger, files, shared */
    GC_CAT_N,
};

/* Runs of present (or swapped) pages, from PAGEMAP_SCAN or /proc/self/pagemap. */
struct gc_runs {
    int pagemap_fd, have_scan;
    uint64_t page;
    void *buf; /* scratch of buf_size bytes */
    uint64_t buf_size;
};
typedef long (*gc_run_fn)(uint64_t start, uint64_t end, void *arg);

/* fn(start, end, arg) for every run of present or swapped pages in [start, end), the zero
 * page excluded; without page maps, one run for everything. Stops at fn's first non-zero. */
long gc_present_runs(struct gc_runs *r, uint64_t start, uint64_t end, gc_run_fn fn, void *arg);

struct gc_budget {
    const struct gc_vma *vmas;
    long nvma;
    uint64_t page;
    int mem_fd;
    uint64_t *bits;     /* one bit per page of every VMA's dump range */
    uint64_t *bit_base; /* per VMA: its first bit; UINT64_MAX without a dump range */
    uint64_t left;      /* bytes that may still be kept (program headers included) */
    uint64_t kept[GC_CAT_N];
    uint64_t dumpable; /* what an uncapped core holds */
    uint64_t frames, threads; /* what the Python walk found */
};

/* Choose what to keep within budget bytes (data and the program headers it adds); pool is
 * the smaps text the VMAs' paths point into, lead the thread whose notes come first.
 * Returns 0 or a negative errno (the arena is full). */
int gc_budget_select(struct gc_budget *b, struct gc_arena *a, const struct gc_snapshot *s,
                     uint32_t lead, struct gc_runs *runs, const char *pool, uint64_t budget);

static inline int gc_budget_kept(const struct gc_budget *b, long vma, uint64_t page_index)
{
    uint64_t bit = b->bit_base[vma] + page_index;
    return (int)((b->bits[bit >> 6] >> (bit & 63)) & 1);
}

#endif
