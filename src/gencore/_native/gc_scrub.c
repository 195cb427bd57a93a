/* Redaction's other sources of values (see gc_redact.h): the environment block and the
 * argument strings, the variables set since, the registers' traces on every thread's stack
 * and in the contexts they were read from, and the buffers gencore.exclude() names (a table
 * filled in the process that the child inherits); the ranges they add, sorted and merged.
 * Runs in the child but for gc_exclude_range: raw system calls, no malloc. */
#define _GNU_SOURCE
#include <errno.h>
#include <ucontext.h>

#include "gc_redact_int.h"
#include "gc_sys.h"

/* ---- the excluded buffers' table (filled in the process, read by the child) ---- */

static struct {
    uint64_t start, len;
} g_excluded[GC_EXCLUDE_MAX];

int gc_exclude_range(uint64_t addr, uint64_t len, int add)
{
    for (unsigned i = 0; i < GC_EXCLUDE_MAX; i++) {
        uint64_t l = __atomic_load_n(&g_excluded[i].len, __ATOMIC_ACQUIRE);
        if (add && l == 0) {
            g_excluded[i].start = addr;
            __atomic_store_n(&g_excluded[i].len, len, __ATOMIC_RELEASE);
            return 0;
        }
        if (!add && l == len && g_excluded[i].start == addr) {
            __atomic_store_n(&g_excluded[i].len, 0, __ATOMIC_RELEASE);
            return 0;
        }
    }
    return add ? -ENOSPC : -ENOENT;
}

const char *gc_redact_policy_name(uint32_t policy)
{
    return policy == GC_REDACT_VALUES ? "values" : policy == GC_REDACT_ENV ? "env" : "off";
}

/* Whether any buffer is excluded; with r, add their ranges and count them. */
int gc_rd_excluded(struct gc_redact *r)
{
    int any = 0;
    uint64_t before = r ? r->nind : 0;
    for (unsigned i = 0; i < GC_EXCLUDE_MAX; i++) {
        uint64_t len = __atomic_load_n(&g_excluded[i].len, __ATOMIC_ACQUIRE);
        any |= len != 0;
        if (len && r) gc_rd_add_range(r, g_excluded[i].start, g_excluded[i].start + len);
    }
    for (uint64_t i = before; r && i < r->nind; i++) r->st.excluded += r->ind[i].end - r->ind[i].start;
    return any;
}

/* ---- ranges ---- */

const struct gc_vma *gc_rd_vma_of(const struct child *c, uint64_t addr)
{
    long lo = 0, hi = c->nvma - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        if (addr < c->vmas[mid].start)
            hi = mid - 1;
        else if (addr >= c->vmas[mid].end)
            lo = mid + 1;
        else
            return &c->vmas[mid];
    }
    return 0;
}

/* [a, a+n) lies in one private anonymous readable mapping (safe to read directly). */
int gc_rd_anon_range(const struct child *c, uint64_t a, uint64_t n)
{
    const struct gc_vma *v = gc_rd_vma_of(c, a);
    return v && v->how == GC_DUMP_ANON && (v->perms & GC_P_R) && a + n <= v->end && a + n >= a;
}

/* [a, a+n) lies in one readable mapping that is not device memory. */
void gc_rd_add_range(struct gc_redact *r, uint64_t start, uint64_t end)
{
    if (end <= start) return;
    if (r->nind == r->capind) {
        r->overflow = 1;
        return;
    }
    r->ind[r->nind++] = (struct range){start, end};
}

/* ---- sorting (no libc: qsort may allocate) ---- */

void gc_rd_radix_sort(uint64_t *a, uint64_t n, uint64_t *tmp, uint64_t *count)
{
    for (int shift = 0; shift < 64; shift += 16) {
        gc_memzero(count, (1u << 16) * 8);
        for (uint64_t i = 0; i < n; i++) count[(a[i] >> shift) & 0xffff]++;
        uint64_t sum = 0;
        for (uint32_t k = 0; k < (1u << 16); k++) {
            uint64_t t = count[k];
            count[k] = sum;
            sum += t;
        }
        for (uint64_t i = 0; i < n; i++) tmp[count[(a[i] >> shift) & 0xffff]++] = a[i];
        gc_memcopy(a, tmp, (size_t)(n * 8));
    }
}

static void sift(struct range *a, uint64_t root, uint64_t n)
{
    for (;;) {
        uint64_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && a[child + 1].start > a[child].start) child++;
        if (a[root].start >= a[child].start) return;
        struct range t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

/* Sort the ranges by start and merge the ones that overlap or touch. */
void gc_rd_sort_ranges(struct gc_redact *r)
{
    struct range *a = r->ind;
    uint64_t n = r->nind;
    for (uint64_t i = n / 2; i-- > 0;) sift(a, i, n);
    for (uint64_t end = n; end > 1; end--) {
        struct range t = a[0];
        a[0] = a[end - 1];
        a[end - 1] = t;
        sift(a, 0, end - 1);
    }
    uint64_t out = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (out && a[i].start <= a[out - 1].end) {
            if (a[i].end > a[out - 1].end) a[out - 1].end = a[i].end;
        } else {
            a[out++] = a[i];
        }
    }
    r->nind = out;
}

/* ---- the environment and the arguments ---- */

/* arg_start, arg_end, env_start, env_end: fields 48-51 of /proc/self/stat. */
static int stat_bounds(uint64_t b[4])
{
    char buf[1536];
    long n = gc_read_small("/proc/self/stat", buf, sizeof buf);
    long i = n - 1;
    while (i > 0 && buf[i] != ')') i--;
    if (i <= 0) return -1;
    int field = 2;
    for (i++; i < n && field < 52; i++) {
        if (buf[i] == ' ') {
            field++;
            if (field >= 48 && field <= 51) {
                uint64_t v = 0;
                for (long k = i + 1; k < n && buf[k] >= '0' && buf[k] <= '9'; k++)
                    v = v * 10 + (uint64_t)(buf[k] - '0');
                b[field - 48] = v;
            }
        }
    }
    return field >= 51 && b[3] > b[2] ? 0 : -1;
}

/* The values of "NAME=value" strings in [p, end): each value becomes a range. */
static void env_values(struct gc_redact *r, uint64_t p, uint64_t end)
{
    while (p < end) {
        const char *s = (const char *)(uintptr_t)p;
        uint64_t n = 0;
        while (p + n < end && s[n]) n++;
        uint64_t eq = 0;
        while (eq < n && s[eq] != '=') eq++;
        if (eq < n) gc_rd_add_range(r, p + eq + 1, p + n);
        p += n + 1;
    }
}

extern char **environ;

void gc_rd_environment(struct gc_redact *r)
{
    uint64_t b[4] = {0, 0, 0, 0};
    int have = stat_bounds(b) == 0 && gc_rd_anon_range(r->c, b[2], b[3] - b[2]);
    if (have) env_values(r, b[2], b[3]);
    if (have && r->L->policy == GC_REDACT_VALUES && b[1] > b[0] &&
        gc_rd_anon_range(r->c, b[0], b[1] - b[0])) {
        const char *argv0 = (const char *)(uintptr_t)b[0];
        uint64_t n = 0;
        while (b[0] + n < b[1] && argv0[n]) n++;
        gc_rd_add_range(r, b[0] + n + 1, b[1]); /* every argument after the program's name */
    }
    /* variables set since the start live in the heap, not in the block */
    for (char **e = environ; e && gc_rd_anon_range(r->c, (uint64_t)(uintptr_t)e, 8) && *e; e++) {
        uint64_t p = (uint64_t)(uintptr_t)*e;
        if (have && p >= b[2] && p < b[3]) continue;
        const struct gc_vma *v = gc_rd_vma_of(r->c, p);
        if (!v || v->how != GC_DUMP_ANON || !(v->perms & GC_P_R)) continue;
        uint64_t limit = v->end - p < ENV_SCAN_MAX ? v->end : p + ENV_SCAN_MAX;
        const char *s = *e;
        uint64_t n = 0;
        while (p + n < limit && s[n]) n++;
        if (p + n < limit) env_values(r, p, p + n);
    }
    for (uint64_t i = 0; i < r->nind; i++) r->st.environ += r->ind[i].end - r->ind[i].start;
}

/* Registers' traces: below each thread's stack pointer (past the red zone) is memory no
 * frame uses any more, where copies of values linger (and the freeze's signal frame, with
 * the vector registers); the contexts the registers were read from hold those registers. */
/* The start of the run of present pages that reaches up to the stack pointer. */
struct below_sp {
    uint64_t sp_page, lo;
};

static long run_to_sp(uint64_t start, uint64_t end, void *arg)
{
    struct below_sp *b = arg;
    if (end >= b->sp_page && start <= b->sp_page) b->lo = start;
    return 0;
}

/* Where a thread's dead stack begins: its mapping's start would be wrong where thread stacks
 * have guard pages inside the mapping (MADV_GUARD_INSTALL) and the mapping merged with the
 * one below (another thread's TLS, anything). Pages used since the stack's guard are present
 * and contiguous up to the stack pointer; the run stops at a guard or an untouched page. */
static uint64_t dead_stack_start(struct gc_redact *r, const struct gc_vma *v, uint64_t sp)
{
    uint64_t page = r->c->page;
    struct below_sp b = {sp & ~(page - 1), sp};
    uint64_t from = sp - v->start > (64u << 20) ? (sp & ~(page - 1)) - (64u << 20) : v->start;
    gc_present_runs(&r->c->runs, from, (sp & ~(page - 1)) + page, run_to_sp, &b);
    return b.lo;
}

void gc_rd_stacks(struct gc_redact *r)
{
    const struct gc_snapshot *s = r->c->s;
    for (uint32_t i = 0; i < s->nthreads; i++) {
        const struct gc_thread *t = &s->threads[i];
        if (t->state != GC_T_PARKED && t->state != GC_T_CALLER && t->state != GC_T_TIMEOUT)
            continue;
        uint64_t sp = t->regs[GC_REG_SP];
        const struct gc_vma *v = gc_rd_vma_of(r->c, sp);
        uint64_t lo = v && v->how == GC_DUMP_ANON ? dead_stack_start(r, v, sp) : sp;
        if (sp - 128 > lo) gc_rd_add_range(r, lo, sp - 128);
        if (t->uc_at && gc_rd_anon_range(r->c, t->uc_at, sizeof(ucontext_t)))
            gc_rd_add_range(r, t->uc_at, t->uc_at + sizeof(ucontext_t));
        if (t->fp_at && t->fp_len && gc_rd_anon_range(r->c, t->fp_at, t->fp_len))
            gc_rd_add_range(r, t->fp_at, t->fp_at + t->fp_len);
    }
}

