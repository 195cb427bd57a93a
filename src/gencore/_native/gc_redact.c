/* Redaction and excluded buffers in the snapshot child (see gc_redact.h).
 *
 * Finding values: every 8-byte word of private anonymous memory that equals one of the
 * types the record names (str, bytes, bytearray and their subclasses; code, metaclasses,
 * module) is an object's ob_type if the header around it checks out: a string's state bits,
 * its length within the mapping and its terminating NUL; a bytearray's buffer inside a
 * mapping; a live reference count where a pointer is followed. Freed blocks keep their type
 * pointer (the allocator overwrites the first word only), so a freed string's text is found
 * too. Objects are recorded in address order; strings referenced by code objects, heap types
 * and modules (names, file names, line tables) are kept, as are interned and static strings.
 * Buffers elsewhere (a bytearray's, a string's UTF-8 copy, the environment) are ranges,
 * sorted and merged. Runs in the child: raw system calls, memory mapped here, no malloc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#include "gc_child.h"
#include "gc_redact_int.h"
#include "gc_sys.h"

/* ---- small helpers ---- */

static inline uint32_t bloom_bit(uint64_t w) { return (uint32_t)((w >> 3) ^ (w >> 15)) % BLOOM_BITS; }
static inline uint32_t tab_slot(uint64_t w) { return (uint32_t)((w >> 4) * 0x9E3779B1u) % TAB_SLOTS; }

static void *reserve(uint64_t bytes)
{
    long m = gc_sys6(SYS_mmap, 0, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return m < 0 && m > -4096 ? NULL : (void *)m;
}

static int readable_range(const struct child *c, uint64_t a, uint64_t n)
{
    const struct gc_vma *v = gc_rd_vma_of(c, a);
    return v && (v->perms & GC_P_R) && !(v->vmflags & (GC_VM_IO | GC_VM_PF)) &&
           v->how != GC_DUMP_HOLE && v->how != GC_DUMP_NONE && a + n <= v->end && a + n >= a;
}

/* ---- what an object's header says ---- */

struct str_info {
    uint64_t data, size; /* the characters (inline or not), without the terminator */
    int inline_data, keep;
};

/* A str at obj whose inline data must end by limit: 1 and *out, or 0 (not a string). */
static int str_info(const struct gc_redact *r, uint64_t obj, uint64_t limit, struct str_info *out)
{
    const struct gc_redact_layout *L = r->L;
    uint64_t len = rd64(obj + 16);
    uint32_t st = rd32(obj + L->str_state) & 0xff; /* the bit field's padding is garbage */
    uint32_t kind = (st >> 2) & 7;
    int compact = (st >> L->str_compact_bit) & 1, ascii = (st >> L->str_ascii_bit) & 1;
    if (len >= MAX_LEN || (kind != 1 && kind != 2 && kind != 4)) return 0;
    if (ascii && (kind != 1 || !compact)) return 0;
    out->size = len * kind;
    out->keep = (st & L->str_keep_mask) != 0;
    if (compact) {
        out->data = obj + (ascii ? L->str_ascii_data : L->str_compact_data);
        out->inline_data = 1;
        if (out->data + out->size + kind > limit) return 0;
        if (r->checking && !gc_rd_fits_block(r, obj, out->data + out->size + kind - obj)) return 0;
    } else {
        if (r->checking && !gc_rd_fits_block(r, obj, L->str_compact_data + 8)) return 0;
        if (L->str_data < 0) return 0;
        out->data = rd64(obj + (uint32_t)L->str_data);
        out->inline_data = 0;
        if (!out->data || !gc_rd_anon_range(r->c, out->data, out->size + kind)) return 0;
    }
    for (uint32_t k = 0; k < kind; k++) /* the terminating NUL */
        if (*(const volatile unsigned char *)(uintptr_t)(out->data + out->size + k)) return 0;
    return 1;
}

static int bytes_info(const struct gc_redact *r, uint64_t obj, uint64_t limit, uint64_t *size)
{
    uint64_t n = rd64(obj + 16), data = obj + r->L->bytes_data;
    if (n >= MAX_LEN || data + n + 1 > limit) return 0;
    if (r->checking && !gc_rd_fits_block(r, obj, r->L->bytes_data + n + 1)) return 0;
    *size = n;
    return *(const volatile unsigned char *)(uintptr_t)(data + n) == 0;
}

/* The characters scrubbing obj overwrites: [*lo, *hi) when they follow its header (else an
 * empty range). Headers stay as they are, hashes included: the hash secret is zeroed, so a
 * stored hash says nothing about the text. */
static void compute_span(const struct gc_redact *r, uint64_t e, uint64_t *lo, uint64_t *hi)
{
    uint64_t obj = e & ~7ull;
    *lo = *hi = obj + 16;
    if ((e & 3) == GC_RK_STR) {
        struct str_info si;
        if (str_info(r, obj, UINT64_MAX, &si) && si.inline_data) {
            *lo = si.data;
            *hi = si.data + si.size;
        }
    } else {
        uint64_t n = 0;
        bytes_info(r, obj, UINT64_MAX, &n);
        *lo = obj + r->L->bytes_data;
        *hi = *lo + n;
    }
}

/* The span of objs[i], as found: (offset of the characters << 40) | their length. */
#define SPAN(off, len) (((uint64_t)(off) << 40) | (len))
static void obj_span(const struct gc_redact *r, uint64_t i, uint64_t *lo, uint64_t *hi)
{
    uint64_t obj = r->objs[i] & ~7ull, sp = r->spans[i];
    *lo = obj + (sp >> 40);
    *hi = (r->objs[i] & OBJ_KEEP) ? *lo : *lo + (sp & ((1ull << 40) - 1));
}

/* ---- finding objects ---- */

static void keep_fields(struct gc_redact *r, uint64_t obj, uint32_t size, uint64_t limit)
{
    if (!live(obj)) return; /* a freed object's fields point anywhere */
    uint64_t end = obj + size < limit ? obj + size : limit;
    for (uint64_t a = obj + 16; a + 8 <= end; a += 8) {
        uint64_t w = rd64(a);
        if (!w || (w & 7)) continue;
        if (r->nkeep == r->capkeep) return; /* more is scrubbed: the safe side */
        r->keep[r->nkeep++] = w;
    }
}

static int lookup(const struct gc_redact *r, uint64_t w)
{
    for (uint32_t i = tab_slot(w), n = 0; n < TAB_SLOTS; n++, i = (i + 1) % TAB_SLOTS) {
        if (r->tab[i] == w) return (int)i;
        if (!r->tab[i]) return -1;
    }
    return -1;
}

/* A short ASCII string's text: its hash (FNV-1a), or 0 when it is not one. */
static uint64_t text_hash(const struct gc_redact *r, uint64_t obj, uint64_t *data, uint64_t *n)
{
    struct str_info si;
    uint32_t st = rd32(obj + r->L->str_state);
    if (!((st >> r->L->str_ascii_bit) & 1) || !str_info(r, obj, UINT64_MAX, &si) ||
        si.size > NAME_MAX_LEN || !si.size)
        return 0;
    uint64_t h = 1469598103934665603ull ^ si.size;
    for (uint64_t i = 0; i < si.size; i++)
        h = (h ^ *(const volatile unsigned char *)(uintptr_t)(si.data + i)) * 1099511628211ull;
    *data = si.data;
    *n = si.size;
    return h | 1;
}

/* A filter key of a short ASCII text: its length and first 8 bytes. */
static uint32_t name_key(uint64_t len, uint64_t data)
{
    uint64_t w = rd64(data);
    if (len < 8) w &= (1ull << (len * 8)) - 1;
    return (uint32_t)(((w ^ len) * 0x9E3779B97F4A7C15ull) >> 48); /* 16 bits */
}

/* Remember the text of the string at w, if it is a short ASCII one. */
static void name_text(struct gc_redact *r, uint64_t w)
{
    uint64_t data, n;
    if (!w || (w & 7) || r->nnames >= NAME_SLOTS / 2 || !readable_range(r->c, w, 64)) return;
    int slot = lookup(r, rd64(w + 8));
    if (slot < 0 || r->tab_kind[slot] != GC_RK_STR) return;
    int checking = r->checking;
    r->checking = 0; /* a name may be static, outside the allocator's pools */
    uint64_t h = text_hash(r, w, &data, &n);
    r->checking = checking;
    if (!h) return;
    uint32_t s = (uint32_t)(h % NAME_SLOTS);
    while (r->names[s] && r->names[s] != w) s = (s + 1) % NAME_SLOTS;
    if (!r->names[s]) r->nnames++;
    r->names[s] = w;
    r->name_hash[s] = h;
    uint32_t b = name_key(n, data);
    r->name_bloom[b >> 6] |= 1ull << (b & 63);
}

/* A live module's name strings, by text: other strings with the same text stay (the
 * __module__ of types made by C extensions is a copy of the module's name). */
static void module_names(struct gc_redact *r, uint64_t obj, uint32_t size, uint64_t limit)
{
    if (!live(obj)) return;
    uint64_t end = obj + size < limit ? obj + size : limit;
    for (uint64_t a = obj + 16; a + 8 <= end; a += 8) name_text(r, rd64(a));
}

/* Whether obj's text is that of a module's name. */
static int is_module_name(const struct gc_redact *r, uint64_t obj)
{
    const struct gc_redact_layout *L = r->L;
    if (!r->nnames) return 0;
    uint32_t st = rd32(obj + L->str_state);
    uint64_t len = rd64(obj + 16);
    if (!((st >> L->str_ascii_bit) & 1) || !len || len > NAME_MAX_LEN) return 0;
    uint32_t b = name_key(len, obj + L->str_ascii_data); /* most strings stop here */
    if (!((r->name_bloom[b >> 6] >> (b & 63)) & 1)) return 0;
    uint64_t data, n, d2, n2;
    uint64_t h = text_hash(r, obj, &data, &n);
    if (!h) return 0;
    for (uint32_t s = (uint32_t)(h % NAME_SLOTS); r->names[s]; s = (s + 1) % NAME_SLOTS) {
        if (r->name_hash[s] != h || !text_hash(r, r->names[s], &d2, &n2) || n2 != n) continue;
        uint64_t i = 0;
        while (i < n && *(const volatile unsigned char *)(uintptr_t)(data + i) ==
                            *(const volatile unsigned char *)(uintptr_t)(d2 + i))
            i++;
        if (i == n) return 1;
    }
    return 0;
}

/* A heap type's __module__ (its name's first part: readers show "module.Class"): the value
 * after the "__module__" key in its dict's entries, whichever the dict layout. */
#define KEYS_SCAN 4096u
static void type_module(struct gc_redact *r, uint64_t type)
{
    const struct gc_redact_layout *L = r->L;
    if (!L->module_key || !L->type_dict || !live(type)) return;
    uint64_t d = rd64(type + L->type_dict);
    if (!d || (d & 7) || !gc_rd_anon_range(r->c, d, 48)) return;
    uint64_t keys = rd64(d + 32);
    if (!keys || (keys & 7)) return;
    const struct gc_vma *v = gc_rd_vma_of(r->c, keys);
    if (!v || v->how != GC_DUMP_ANON) return;
    uint64_t end = keys + KEYS_SCAN < v->end ? keys + KEYS_SCAN : v->end;
    for (uint64_t a = keys; a + 16 <= end; a += 8) {
        if (rd64(a) != L->module_key) continue;
        uint64_t value = rd64(a + 8);
        if (r->nkeep < r->capkeep) r->keep[r->nkeep++] = value;
        name_text(r, value); /* and copies of its text */
        return;
    }
}

/* The type pointer of the object at p, or 0 when p is not readable memory. */
static uint64_t type_of(const struct gc_redact *r, uint64_t p)
{
    if (!p || (p & 7)) return 0;
    const struct gc_vma *v = gc_rd_vma_of(r->c, p);
    if (!v || !(v->perms & GC_P_R) || p + 16 > v->end) return 0;
    return rd64(p + 8);
}

/* Whether obj, found by its type pointer, is a real code object, type or module: its name is
 * a str (code), its dict a dict or a dict subclass's instance (type, module). Memory that only looks like one (a data
 * stack's stale locals next to a class, a tuple holding a type) keeps nothing: the words after
 * it may point to anything, and a false keep would leave a secret in the core. */
static int real_container(const struct gc_redact *r, uint64_t obj, uint32_t kind, uint64_t limit)
{
    const struct gc_redact_layout *L = r->L;
    uint32_t off = kind == GC_RK_CODE     ? L->code_name
                   : kind == GC_RK_MODULE ? L->module_dict
                                          : L->type_dict;
    if (!off || obj + off + 8 > limit) return 0;
    uint64_t t = type_of(r, rd64(obj + off));
    if (kind == GC_RK_CODE) {
        int slot = t ? lookup(r, t) : -1;
        return slot >= 0 && r->tab_kind[slot] == GC_RK_STR;
    }
    /* a dict, or an instance of a subclass (ctypes' types keep theirs in one): tp_base, just
     * before tp_dict, leads to dict */
    for (int depth = 0; t && depth < 8; depth++) {
        if (t == L->dict_type) return 1;
        uint64_t base = t + L->type_dict - 8;
        const struct gc_vma *v = gc_rd_vma_of(r->c, base);
        if (!v || !(v->perms & GC_P_R) || base + 8 > v->end) return 0;
        t = rd64(base);
    }
    return 0;
}

static void push_obj(struct gc_redact *r, uint64_t e, uint64_t lo, uint64_t len)
{
    if (r->nobj == r->capobj) {
        r->overflow = 1;
        return;
    }
    r->spans[r->nobj] = SPAN(lo - (e & ~7ull), len);
    r->objs[r->nobj++] = e;
}

/* A candidate object: recorded if it checks out. Returns where scanning goes on (past a
 * value's characters: no object header is inside them). */
static uint64_t found(struct gc_redact *r, uint64_t obj, int slot, uint64_t limit)
{
    uint32_t kind = r->tab_kind[slot];
    if ((kind == GC_RK_STR || kind == GC_RK_BYTES) && !gc_rd_plausible(obj)) return obj + 16;
    if (kind == GC_RK_STR) {
        struct str_info si;
        if (!str_info(r, obj, limit, &si)) return obj + 16;
        if (si.keep)
            r->st.kept++;
        else
            push_obj(r, obj | GC_RK_STR, si.inline_data ? si.data : obj + 16,
                     si.inline_data ? si.size : 0);
        return si.inline_data ? si.data + si.size : obj + 16;
    } else if (kind == GC_RK_BYTES) {
        uint64_t n;
        if (!bytes_info(r, obj, limit, &n)) return obj + 16;
        push_obj(r, obj | GC_RK_BYTES, obj + r->L->bytes_data, n);
        return obj + r->L->bytes_data + n;
    } else if (kind == GC_RK_BYTEARRAY) {
        const struct gc_redact_layout *L = r->L;
        uint64_t size = rd64(obj + 16), alloc = rd64(obj + L->ba_alloc);
        uint64_t buf = rd64(obj + L->ba_bytes), start = rd64(obj + L->ba_start);
        if (!alloc || !live(obj) || !gc_rd_fits_block(r, obj, 56) || alloc >= MAX_LEN ||
            size > alloc || start < buf || start + size > buf + alloc ||
            !gc_rd_anon_range(r->c, buf, alloc))
            return obj + 16;
        gc_rd_add_range(r, buf, buf + alloc);
        r->st.bytearrays++;
    } else if (real_container(r, obj, kind, limit)) {
        keep_fields(r, obj, r->tab_size[slot], limit);
        if (kind == GC_RK_MODULE) module_names(r, obj, r->tab_size[slot], limit);
        if (kind == GC_RK_TYPE) type_module(r, obj);
    }
    return obj + 16;
}

struct scan_ctx {
    struct gc_redact *r;
    uint64_t vma_start, vma_end;
};


static long scan_run(uint64_t start, uint64_t end, void *arg)
{
    struct scan_ctx *x = arg;
    struct gc_redact *r = x->r;
    /* objects are 16-byte aligned (the allocators' alignment; GC headers are 16 bytes): a
     * type pointer is at 8 modulo 16 */
    const uint64_t *w = (const uint64_t *)(uintptr_t)(((start + 7) & ~15ull) + 8);
    const uint64_t *e = (const uint64_t *)(uintptr_t)(end & ~7ull);
    for (; w < e; w += 2) {
        uint64_t v = *w;
        uint32_t b = bloom_bit(v);
        if (!((r->bloom[b >> 6] >> (b & 63)) & 1) || !v) continue;
        int slot = lookup(r, v);
        uint64_t obj = (uint64_t)(uintptr_t)w - 8;
        if (slot < 0 || obj < x->vma_start) continue;
        r->scan_pos = obj;
        uint64_t next = found(r, obj, slot, x->vma_end);
        const uint64_t *skip = (const uint64_t *)(uintptr_t)(((next + 15) & ~15ull) + 8);
        if (skip > w) w = skip - 2;
    }
    return 0;
}

/* ---- reading memory that may fault ----
 *
 * A readable private mapping can still hold pages that fault: guard pages installed with
 * MADV_GUARD_INSTALL (glibc puts thread stacks' guards inside the stack's mapping). While the
 * child reads memory itself (the scan, a copy), a SIGSEGV or SIGBUS jumps back to the reader,
 * which skips the page; otherwise the signals keep their default action. */

static sigjmp_buf g_jump;
static volatile uint64_t g_fault_addr;

static void on_fault(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)uc;
    g_fault_addr = (uint64_t)(uintptr_t)info->si_addr;
    siglongjmp(g_jump, 1); /* async-signal-safe; SA_NODEFER: no mask to restore */
}

#if defined(__x86_64__)
#define RESTORER 0x04000000 /* SA_RESTORER: x86_64 delivers no signal without one */
#else
#define RESTORER 0
#endif

static void catch_faults(int on)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } sa = {on ? (void *)on_fault : (void *)SIG_DFL, on ? (SA_SIGINFO | SA_NODEFER | RESTORER) : 0,
            on ? (void *)on_fault : 0, 0};
    /* the handler never returns (it jumps back): the restorer x86_64 requires is never run */
    gc_sys4(SYS_rt_sigaction, SIGSEGV, &sa, 0, 8);
    gc_sys4(SYS_rt_sigaction, SIGBUS, &sa, 0, 8);
}

/* Scan [start, end), going on past any page that faults: after the faulting page when it is
 * where the scan was, else past the candidate being checked. */
static long guarded_scan(uint64_t start, uint64_t end, void *arg)
{
    /* everything used after the jump back lives in memory, not in registers */
    struct scan_ctx *volatile x = arg;
    volatile uint64_t from = start, until = end;
    x->r->scan_pos = start;
    if (sigsetjmp(g_jump, 0)) {
        struct gc_redact *r = x->r;
        uint64_t page = r->c->page, bad = g_fault_addr & ~(page - 1), pos = r->scan_pos;
        from = bad >= (pos & ~(page - 1)) ? bad + page : pos + 16;
        r->st.faulted++;
    }
    if (from < until) scan_run(from, until, x);
    return 0;
}

/* ---- preparing ---- */

static int setup(struct gc_redact **out, struct child *c, uint64_t anon)
{
    const struct gc_redact_layout *L = &c->s->o->redact;
    struct gc_redact *r = gc_arena_alloc(&c->arena, sizeof *r);
    unsigned char *scratch = gc_arena_alloc(&c->arena, SCRATCH_SIZE);
    if (!r || !scratch) return -ENOMEM;
    gc_memzero(r, sizeof *r);
    r->c = c;
    r->L = L;
    r->scratch = scratch;
    int values = L->policy == GC_REDACT_VALUES;
    r->capobj = (values ? anon / 16 : L->nscrub) + 1024;
    r->capkeep = (values ? anon / 32 : 0) + L->nkeep + 4096;
    r->capind = (values ? anon / 48 : 0) + 65536 + GC_EXCLUDE_MAX;
    r->objs = reserve(r->capobj * 8);
    r->spans = reserve(r->capobj * 8);
    r->keep = reserve(r->capkeep * 8);
    r->tmp = reserve((r->capkeep > r->capobj ? r->capkeep : r->capobj) * 8);
    r->count = reserve((1u << 16) * 8);
    r->names = reserve(NAME_SLOTS * 8);
    r->name_hash = reserve(NAME_SLOTS * 8);
    r->ind = reserve(r->capind * sizeof(struct range));
    if (!r->objs || !r->spans || !r->keep || !r->tmp || !r->count || !r->names || !r->name_hash || !r->ind) return -ENOMEM;
    for (uint32_t i = 0; i < L->ntypes && i < GC_REDACT_MAX_TYPES; i++) {
        uint64_t t = L->types[i];
        if (!t) continue;
        uint32_t s = tab_slot(t);
        while (r->tab[s]) s = (s + 1) % TAB_SLOTS;
        r->tab[s] = t;
        r->tab_kind[s] = L->kinds[i];
        r->tab_size[s] = L->sizes[i];
        r->bloom[bloom_bit(t) >> 6] |= 1ull << (bloom_bit(t) & 63);
    }
    *out = r;
    return 0;
}

static void scan_memory(struct gc_redact *r)
{
    struct child *c = r->c;
    r->checking = 1;
    catch_faults(1);
    for (long i = 0; i < c->nvma; i++) {
        const struct gc_vma *v = &c->vmas[i];
        if (v->hidden || v->how != GC_DUMP_ANON || !v->dump || !(v->perms & GC_P_R)) continue;
        struct scan_ctx x = {r, v->start, v->end};
        r->scan_lo = v->start;
        r->scan_hi = v->end;
        gc_present_runs(&c->runs, v->start, v->start + v->dump, guarded_scan, &x);
    }
    catch_faults(0);
    r->checking = 0;
    r->scan_lo = r->scan_hi = 0;
}

/* The lists Python sent: objects to keep whatever they are, and (redact="env") objects to
 * scrub, each checked like a found one. */
static void blob_lists(struct gc_redact *r)
{
    const struct gc_redact_layout *L = r->L;
    const uint64_t *list = r->c->s->redact_list;
    if (!list) return;
    for (uint32_t i = 0; i < L->nkeep && r->nkeep < r->capkeep; i++) {
        r->keep[r->nkeep++] = list[i];
        name_text(r, list[i]); /* module names: the same text elsewhere stays too */
    }
    if (L->policy != GC_REDACT_ENV) return;
    for (uint32_t i = 0; i < L->nscrub; i++) {
        uint64_t obj = list[L->nkeep + i];
        const struct gc_vma *v = gc_rd_vma_of(r->c, obj);
        if (!v || v->how != GC_DUMP_ANON || !gc_rd_anon_range(r->c, obj, 48)) continue;
        uint64_t t = rd64(obj + 8);
        int slot = lookup(r, t);
        if (slot < 0 || (r->tab_kind[slot] != GC_RK_STR && r->tab_kind[slot] != GC_RK_BYTES))
            continue;
        found(r, obj, slot, v->end);
    }
    gc_rd_radix_sort(r->objs, r->nobj, r->tmp, r->count);
    for (uint64_t i = 0; i < r->nobj; i++) { /* the spans, in the sorted order */
        uint64_t lo, hi;
        compute_span(r, r->objs[i], &lo, &hi);
        r->spans[i] = SPAN(lo - (r->objs[i] & ~7ull), hi - lo);
    }
}

/* Mark kept objects (both lists sorted) and add the out-of-line buffers of scrubbed strings. */
static void resolve(struct gc_redact *r)
{
    const struct gc_redact_layout *L = r->L;
    gc_rd_radix_sort(r->keep, r->nkeep, r->tmp, r->count);
    uint64_t k = 0;
    for (uint64_t i = 0; i < r->nobj; i++) {
        uint64_t obj = r->objs[i] & ~7ull;
        while (k < r->nkeep && r->keep[k] < obj) k++;
        if ((k < r->nkeep && r->keep[k] == obj) ||
            ((r->objs[i] & 3) == GC_RK_STR && is_module_name(r, obj))) {
            r->objs[i] |= OBJ_KEEP;
            r->st.kept++;
            continue;
        }
        uint64_t lo, hi;
        obj_span(r, i, &lo, &hi);
        r->st.scrubbed += hi - lo;
        if ((r->objs[i] & 3) == GC_RK_BYTES) {
            r->st.bytes++;
            continue;
        }
        r->st.strings++;
        struct str_info si;
        if (!str_info(r, obj, UINT64_MAX, &si) || !live(obj)) continue;
        if (!si.inline_data) gc_rd_add_range(r, si.data, si.data + si.size);
        uint32_t st = rd32(obj + L->str_state);
        int ascii = (st >> L->str_ascii_bit) & 1;
        if (!ascii && L->str_utf8 >= 0) { /* a cached UTF-8 copy */
            uint64_t u = rd64(obj + (uint32_t)L->str_utf8), n = rd64(obj + (uint32_t)L->str_utf8_length);
            if (u && u != si.data && n < MAX_LEN && gc_rd_anon_range(r->c, u, n)) gc_rd_add_range(r, u, u + n);
        }
        if (L->str_wstr >= 0) { /* 3.9-3.11: a wchar_t copy, as long as the string */
            uint64_t w = rd64(obj + (uint32_t)L->str_wstr), n = rd64(obj + 16) * 4;
            if (w && w != si.data && gc_rd_anon_range(r->c, w, n)) gc_rd_add_range(r, w, w + n);
        }
    }
}

int gc_redact_prepare(struct child *c)
{
    const struct gc_redact_layout *L = &c->s->o->redact;
    int excluded = 0;
    excluded = gc_rd_excluded(NULL);
    if (L->policy == GC_REDACT_OFF && !excluded) return 0;
    uint64_t anon = 0;
    for (long i = 0; i < c->nvma; i++)
        if (c->vmas[i].how == GC_DUMP_ANON) anon += c->vmas[i].dump;
    struct gc_redact *r;
    int rc = setup(&r, c, anon);
    if (rc) return rc;
    if (L->policy != GC_REDACT_OFF) {
        gc_rd_environment(r);
        if (L->policy == GC_REDACT_VALUES) {
            gc_rd_stacks(r);
            scan_memory(r);
            if (L->hash_secret && L->hash_secret_len)
                gc_rd_add_range(r, L->hash_secret, L->hash_secret + L->hash_secret_len);
        }
        blob_lists(r);
        resolve(r);
    }
    gc_rd_excluded(r);
    if (r->overflow) return -ENOMEM; /* never a core that says redacted and is not */
    gc_rd_sort_ranges(r);
    for (uint64_t i = 0; i < r->nind; i++) r->st.scrubbed += r->ind[i].end - r->ind[i].start;
    c->redact = r;
    return 0;
}

/* ---- while writing ---- */

/* The next object at or after the cursor that changes anything, and its span. */
static int next_obj(struct gc_redact *r, uint64_t addr, uint64_t *lo, uint64_t *hi)
{
    while (r->ocur < r->nobj) {
        obj_span(r, r->ocur, lo, hi);
        if (*hi > addr && !(r->objs[r->ocur] & OBJ_KEEP)) return 1;
        r->ocur++;
    }
    return 0;
}

uint64_t gc_redact_clean(struct gc_redact *r, uint64_t addr, uint64_t len)
{
    uint64_t first = addr + len, lo, hi;
    if (next_obj(r, addr, &lo, &hi) && lo < first) first = lo;
    while (r->icur < r->nind && r->ind[r->icur].end <= addr) r->icur++;
    if (r->icur < r->nind && r->ind[r->icur].start < first) first = r->ind[r->icur].start;
    return first > addr ? first - addr : 0;
}

uint64_t gc_redact_zeroed(struct gc_redact *r, uint64_t addr, uint64_t len)
{
    uint64_t lo, hi, run = 0;
    if (next_obj(r, addr, &lo, &hi) && lo <= addr) run = hi - addr;
    while (r->icur < r->nind && r->ind[r->icur].end <= addr) r->icur++;
    if (r->icur < r->nind && r->ind[r->icur].start <= addr && r->ind[r->icur].end - addr > run)
        run = r->ind[r->icur].end - addr;
    return run < len ? run : len;
}

static void zero(unsigned char *buf, uint64_t addr, uint64_t len, uint64_t a, uint64_t b)
{
    if (a < addr) a = addr;
    if (b > addr + len) b = addr + len;
    /* memset: no lock, no allocation (gc_memzero's byte loop is for tiny buffers) */
    if (a < b) __builtin_memset(buf + (a - addr), 0, (size_t)(b - a));
}

void gc_redact_apply(struct gc_redact *r, uint64_t addr, uint64_t len, unsigned char *buf)
{
    uint64_t end = addr + len, lo, hi;
    if (next_obj(r, addr, &lo, &hi)) {
        for (uint64_t i = r->ocur; i < r->nobj; i++) {
            uint64_t e = r->objs[i], obj = e & ~7ull;
            if (obj + 16 >= end) break;
            if (e & OBJ_KEEP) continue;
            obj_span(r, i, &lo, &hi);
            zero(buf, addr, len, lo, hi);
        }
    }
    while (r->icur < r->nind && r->ind[r->icur].end <= addr) r->icur++;
    for (uint64_t i = r->icur; i < r->nind && r->ind[i].start < end; i++)
        zero(buf, addr, len, r->ind[i].start, r->ind[i].end);
}

uint64_t gc_redact_scratch_size(void) { return SCRATCH_SIZE; }

const unsigned char *gc_redact_copy(struct gc_redact *r, uint64_t addr, uint64_t len)
{
    struct child *c = r->c;
    const struct gc_vma *v = gc_rd_vma_of(c, addr);
    volatile int copied = 0;
    if (v && v->how == GC_DUMP_ANON && addr + len <= v->end) {
        catch_faults(1);
        if (!sigsetjmp(g_jump, 0)) {
            gc_memcopy(r->scratch, (const void *)(uintptr_t)addr, (size_t)len);
            copied = 1;
        }
        catch_faults(0);
    }
    if (!copied) {
        /* never a fault: a file mapping may end before its last page */
        long got = gc_pread(c->mem_fd, r->scratch, len, addr);
        if (got < 0) got = 0;
        if ((uint64_t)got < len) gc_memzero(r->scratch + got, (size_t)(len - (uint64_t)got));
    }
    gc_redact_apply(r, addr, len, r->scratch);
    return r->scratch;
}

const struct gc_redact_stats *gc_redact_stats(const struct gc_redact *r) { return &r->st; }
