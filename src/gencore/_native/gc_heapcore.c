/* The heap walker's base: the mapped core, addresses to file offsets, type records, bitmaps
 * with rank directories, and the request dispatcher. No Python API. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gc_heapint.h"

int heap_fail(struct gc_heap *h, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->err, sizeof h->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *gc_heap_error(const struct gc_heap *h) { return h->err; }

int vec_push(struct vec *v, uint64_t x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        uint64_t *nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) return GC_HEAP_ENOMEM;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

void vec_free(struct vec *v)
{
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* -- memory --------------------------------------------------------------------------------- */

static const struct gc_seg *find_seg(struct gc_heap *h, uint64_t addr)
{
    if (h->nseg == 0) return NULL;
    /* a cache of the segment per MiB of addresses, then the last one, then a search */
    struct seg_cache *c = &h->cache[(addr >> 20) & (SEG_CACHE - 1)];
    const struct gc_seg *s;
    if (c->tag == (addr >> 20) + 1) {
        s = &h->segs[c->seg];
        if (addr >= s->start && addr < s->end) return s;
    }
    s = &h->segs[h->last];
    if (!(addr >= s->start && addr < s->end)) {
        size_t lo = 0, hi = h->nseg;
        while (lo < hi) { /* the last segment starting at or before addr */
            size_t mid = (lo + hi) / 2;
            if (h->segs[mid].start <= addr)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == 0) return NULL;
        s = &h->segs[lo - 1];
        if (addr >= s->end) return NULL;
        h->last = lo - 1;
    }
    c->tag = (addr >> 20) + 1;
    c->seg = (size_t)(s - h->segs);
    return s;
}

int64_t heap_fileoff(struct gc_heap *h, uint64_t addr, uint64_t n)
{
    const struct gc_seg *s = find_seg(h, addr);
    uint64_t fo = s ? s->off + (addr - s->start) : 0;
    if (!s || n > s->end - addr || fo + n > h->size || fo + n < fo) {
        h->miss = addr;
        return -1;
    }
    return (int64_t)fo;
}

const uint8_t *heap_at(struct gc_heap *h, uint64_t addr, uint64_t n)
{
    int64_t fo = heap_fileoff(h, addr, n);
    return fo < 0 ? NULL : h->map + fo;
}

int heap_u64(struct gc_heap *h, uint64_t addr, uint64_t *out)
{
    const uint8_t *p = heap_at(h, addr, 8);
    if (!p) return -1;
    memcpy(out, p, 8);
    return 0;
}

int heap_u32(struct gc_heap *h, uint64_t addr, uint32_t *out)
{
    const uint8_t *p = heap_at(h, addr, 4);
    if (!p) return -1;
    memcpy(out, p, 4);
    return 0;
}

int heap_u8(struct gc_heap *h, uint64_t addr, uint8_t *out)
{
    const uint8_t *p = heap_at(h, addr, 1);
    if (!p) return -1;
    *out = *p;
    return 0;
}

int heap_omitted(const struct gc_heap *h, uint64_t addr)
{
    size_t lo = 0, hi = h->nomit;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->omit[2 * mid] <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && addr < h->omit[2 * (lo - 1) + 1];
}

uint64_t heap_slot_addr(struct gc_heap *h, uint64_t slot)
{
    uint64_t fo = slot << 4;
    const struct gc_seg *s = &h->segs[h->byoff[h->last_off]];
    if (fo >= s->off && fo < s->off + (s->end - s->start)) return s->start + (fo - s->off);
    size_t lo = 0, hi = h->nseg; /* the last segment whose data starts at or before fo */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->segs[h->byoff[mid]].off <= fo)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return 0;
    s = &h->segs[h->byoff[lo - 1]];
    if (fo >= s->off + (s->end - s->start)) return 0;
    h->last_off = lo - 1;
    return s->start + (fo - s->off);
}

/* -- big arrays ----------------------------------------------------------------------------
 * Arrays the size of the heap (bitmaps, the dominator tree's numbers) are mapped from a
 * temporary file of their own in $TMPDIR, unlinked from the start, as heap analyzers keep
 * their index files: under memory pressure the kernel writes them out instead of the reader
 * running out of memory, and freeing one gives its memory back at once. Where no such file
 * can be made (or GENCORE_HEAP_SCRATCH=memory), anonymous memory. Zeroed. */

static void *scratch_map(size_t bytes)
{
    const char *how = getenv("GENCORE_HEAP_SCRATCH");
    if (!how || strcmp(how, "memory") != 0) {
        const char *dir = getenv("TMPDIR");
        int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            void *m = MAP_FAILED;
            if (posix_fallocate(fd, 0, (off_t)bytes) == 0)
                m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (m != MAP_FAILED) return m;
        }
    }
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

void *heap_calloc(size_t n, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes) || bytes > SIZE_MAX - 16) return NULL;
    char *p;
    if (bytes < (1u << 20)) {
        p = calloc(1, bytes + 16);
        if (!p) return NULL;
        *(size_t *)(void *)p = 0;
    } else {
        p = scratch_map(bytes + 16);
        if (!p) return NULL;
        *(size_t *)(void *)p = bytes + 16;
    }
    return p + 16;
}

void *heap_grow(void *q, size_t old_n, size_t new_n, size_t size)
{
    void *p = heap_calloc(new_n, size);
    if (!p) return NULL;
    if (q) memcpy(p, q, old_n * size);
    heap_free(q);
    return p;
}

void heap_free(void *q)
{
    if (!q) return;
    char *p = (char *)q - 16;
    size_t n = *(size_t *)(void *)p;
    if (n)
        munmap(p, n);
    else
        free(p);
}

/* -- bitmaps -------------------------------------------------------------------------------- */

int bits_init(struct bits *b, size_t filesize)
{
    memset(b, 0, sizeof *b);
    b->nwords = filesize / 16 / 64 + 1;
    b->w = heap_calloc(b->nwords, sizeof *b->w);
    return b->w ? 0 : GC_HEAP_ENOMEM;
}

void bits_free(struct bits *b)
{
    heap_free(b->w);
    heap_free(b->rank);
    memset(b, 0, sizeof *b);
}

int bits_rank(struct bits *b)
{
    heap_free(b->rank);
    b->rank = heap_calloc(b->nwords, sizeof *b->rank);
    if (!b->rank) return GC_HEAP_ENOMEM;
    uint64_t n = 0;
    for (size_t i = 0; i < b->nwords; i++) {
        if (n > UINT32_MAX) return GC_HEAP_ELIMIT;
        b->rank[i] = (uint32_t)n;
        n += pop64(b->w[i]);
    }
    b->count = n;
    return 0;
}

int64_t bits_next(const struct bits *b, uint64_t from)
{
    size_t i = from >> 6;
    if (i >= b->nwords) return -1;
    uint64_t w = b->w[i] & (~0ULL << (from & 63));
    while (!w) {
        if (++i >= b->nwords) return -1;
        w = b->w[i];
    }
    return (int64_t)((i << 6) + (uint64_t)__builtin_ctzll(w));
}

/* -- types ---------------------------------------------------------------------------------- */

static size_t type_hash(uint64_t a, size_t cap)
{
    uint64_t x = (a >> 4) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x ^ (x >> 32)) & (cap - 1);
}

struct gc_htype *heap_type(const struct gc_heap *h, uint64_t addr)
{
    if (!h->tabcap) return NULL;
    for (size_t i = type_hash(addr, h->tabcap);; i = (i + 1) & (h->tabcap - 1)) {
        struct gc_htype *t = h->tab[i];
        if (!t || t->addr == addr) return t;
    }
}

static int type_insert(struct gc_heap *h, struct gc_htype *t)
{
    if ((h->ntypes + 1) * 2 > h->tabcap) {
        size_t cap = h->tabcap ? h->tabcap * 2 : 1024;
        struct gc_htype **tab = calloc(cap, sizeof *tab);
        if (!tab) return GC_HEAP_ENOMEM;
        for (size_t i = 0; i < h->tabcap; i++) {
            struct gc_htype *o = h->tab[i];
            if (!o) continue;
            size_t j = type_hash(o->addr, cap);
            while (tab[j]) j = (j + 1) & (cap - 1);
            tab[j] = o;
        }
        free(h->tab);
        h->tab = tab;
        h->tabcap = cap;
    }
    size_t j = type_hash(t->addr, h->tabcap);
    while (h->tab[j]) {
        if (h->tab[j]->addr == t->addr) { /* replaced: keep the first record */
            free(t->offs);
            free(t);
            return 0;
        }
        j = (j + 1) & (h->tabcap - 1);
    }
    h->tab[j] = t;
    h->ntypes++;
    if (t->index >= h->tcount_n) {
        size_t n = h->tcount_n ? h->tcount_n : 64;
        while (n <= t->index) n *= 2;
        uint64_t *c = realloc(h->tcount, n * 3 * sizeof *c);
        if (!c) return GC_HEAP_ENOMEM;
        memset(c + 3 * h->tcount_n, 0, (n - h->tcount_n) * 3 * sizeof *c);
        h->tcount = c;
        h->tcount_n = n;
    }
    return 0;
}

#define TYPE_WORDS 18

static int op_types(struct gc_heap *h, const uint64_t *in, size_t nin)
{
    size_t i = 0;
    while (i + TYPE_WORDS <= nin) {
        const uint64_t *r = in + i;
        uint64_t noffs = r[15] + r[16] + r[17];
        if (noffs > 4096 || i + TYPE_WORDS + noffs > nin)
            return heap_fail(h, GC_HEAP_EINVAL, "bad type record");
        struct gc_htype *t = calloc(1, sizeof *t);
        if (!t) return GC_HEAP_ENOMEM;
        t->addr = r[0], t->basic = r[1], t->item = r[2], t->flags = r[3], t->param = r[4];
        t->cached_keys = r[5], t->dictoffset = (int64_t)r[6], t->pre = (uint32_t)r[7];
        t->walk = (uint32_t)r[8], t->sizer = (uint32_t)r[9], t->frame_off = (uint32_t)r[10];
        t->index = (uint32_t)r[11], t->gc = (uint8_t)r[12], t->leaf = (uint8_t)r[13];
        t->valid = (uint8_t)r[14];
        t->nrefs = (uint32_t)r[15], t->nheap = (uint32_t)r[16], t->nsoft = (uint32_t)r[17];
        if (t->index > 1u << 24) {
            free(t);
            return heap_fail(h, GC_HEAP_EINVAL, "bad type index");
        }
        if (noffs) {
            t->offs = malloc(noffs * sizeof *t->offs);
            if (!t->offs) {
                free(t);
                return GC_HEAP_ENOMEM;
            }
            for (uint64_t k = 0; k < noffs; k++) t->offs[k] = (uint32_t)r[TYPE_WORDS + k];
        }
        t->fixed = (t->sizer == S_DEFAULT && !t->item) ? t->basic + t->pre : 0;
        if (t->index > h->maxindex) h->maxindex = t->index;
        int rc = type_insert(h, t);
        if (rc) return rc;
        i += TYPE_WORDS + noffs;
    }
    return 0;
}

/* -- open, close, dispatch ------------------------------------------------------------------ */

static const struct gc_seg *seg_order; /* for off_cmp, during gc_heap_open */

static int off_cmp(const void *a, const void *b)
{
    uint64_t x = seg_order[*(const size_t *)a].off, y = seg_order[*(const size_t *)b].off;
    return x < y ? -1 : x > y;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct gc_seg *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

struct gc_heap *gc_heap_open(int fd, const uint64_t *cfg, size_t n, int *err)
{
    *err = GC_HEAP_EINVAL;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0) {
        *err = GC_HEAP_EIO;
        return NULL;
    }
    struct gc_heap *h = calloc(1, sizeof *h);
    if (!h) {
        *err = GC_HEAP_ENOMEM;
        return NULL;
    }
    h->size = (size_t)st.st_size;
    size_t i = 0;
    if (n < 1 || cfg[0] > (n - 1) / 3) goto bad;
    h->nseg = cfg[i++];
    h->segs = calloc(h->nseg + 1, sizeof *h->segs);
    if (!h->segs) goto bad;
    for (size_t k = 0; k < h->nseg; k++, i += 3) {
        h->segs[k].start = cfg[i], h->segs[k].end = cfg[i + 1], h->segs[k].off = cfg[i + 2];
        if (h->segs[k].end < h->segs[k].start) goto bad;
        h->dumped += h->segs[k].end - h->segs[k].start;
    }
    qsort(h->segs, h->nseg, sizeof *h->segs, seg_cmp);
    h->byoff = malloc((h->nseg + 1) * sizeof *h->byoff);
    if (!h->byoff) goto bad;
    for (size_t k = 0; k < h->nseg; k++) h->byoff[k] = k;
    seg_order = h->segs;
    qsort(h->byoff, h->nseg, sizeof *h->byoff, off_cmp);
    if (i >= n || cfg[i] > (n - i - 1) / 2) goto bad;
    h->nomit = cfg[i++];
    h->omit = malloc((h->nomit + 1) * 2 * sizeof *h->omit);
    if (!h->omit) goto bad;
    memcpy(h->omit, cfg + i, h->nomit * 2 * sizeof *h->omit);
    i += 2 * h->nomit;
    if (i >= n || cfg[i] > n - i - 1) goto bad;
    h->nheads = cfg[i++];
    h->heads = malloc((h->nheads + 1) * sizeof *h->heads);
    if (!h->heads) goto bad;
    memcpy(h->heads, cfg + i, h->nheads * sizeof *h->heads);
    i += h->nheads;
    if (n - i != HL_COUNT) goto bad;
    for (int k = 0; k < HL_COUNT; k++) h->L[k] = (int64_t)cfg[i + (size_t)k];
    void *m = mmap(NULL, h->size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED) {
        *err = GC_HEAP_EIO;
        gc_heap_close(h);
        return NULL;
    }
    h->map = m;
    if (bits_init(&h->seen, h->size) || bits_init(&h->inner, h->size) ||
        bits_init(&h->odd, h->size)) {
        *err = GC_HEAP_ENOMEM;
        gc_heap_close(h);
        return NULL;
    }
    *err = 0;
    return h;
bad:
    gc_heap_close(h);
    return NULL;
}

void gc_heap_close(struct gc_heap *h)
{
    if (!h) return;
    heap_graph_free(h);
    if (h->map) munmap((void *)h->map, h->size);
    for (size_t i = 0; i < h->tabcap; i++) {
        if (h->tab && h->tab[i]) {
            free(h->tab[i]->offs);
            free(h->tab[i]);
        }
    }
    free(h->tab);
    free(h->tcount);
    free(h->segs);
    free(h->byoff);
    free(h->omit);
    free(h->heads);
    bits_free(&h->seen);
    bits_free(&h->inner);
    bits_free(&h->odd);
    vec_free(&h->c.stack);
    vec_free(&h->c.deferred);
    vec_free(&h->c.pending);
    vec_free(&h->kids);
    free(h->c.top);
    free(h);
}

int gc_heap_op(struct gc_heap *h, int op, const uint64_t *in, size_t nin, uint64_t **out,
               size_t *nout)
{
    struct vec v = {0};
    int rc;
    h->err[0] = 0;
    switch (op) {
    case GC_HOP_TYPES:
        rc = op_types(h, in, nin);
        break;
    case GC_HOP_PRESCAN:
        rc = heap_op_prescan(h, &v);
        break;
    case GC_HOP_CENSUS:
        rc = heap_op_census(h, in, nin, &v);
        break;
    case GC_HOP_RESULT:
        rc = heap_op_result(h, &v);
        break;
    case GC_HOP_GRAPH:
        rc = heap_op_graph(h, in, nin, &v);
        break;
    case GC_HOP_DUPS:
        rc = heap_op_dups(h, in, nin, &v);
        break;
    default:
        rc = heap_op_query(h, op, in, nin, &v);
    }
    if (rc < 0) {
        vec_free(&v);
        if (!h->err[0] && rc == GC_HEAP_ENOMEM) snprintf(h->err, sizeof h->err, "out of memory");
        return rc;
    }
    *out = v.v;
    *nout = v.n;
    return 0;
}
