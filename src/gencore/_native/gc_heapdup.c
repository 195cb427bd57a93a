/* str and bytes values held more than once (no Python API): the duplicates answer of
 * gencore/analysis/heapgraph.py. Every str and bytes object's characters are hashed; equal
 * hashes are confirmed byte for byte. */
#include <stdlib.h>

#include "gc_heapint.h"

struct dent {
    uint64_t hash, slot, len, size; /* len: bytes of content; hash mixes the kind in */
    uint32_t kind;                  /* 0 bytes, else a str's bytes per character */
};

static uint64_t mix(const uint8_t *p, uint64_t n, uint64_t seed)
{
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ (w * 0xBF58476D1CE4E5B9ULL)) * 0x94D049BB133111EBULL;
        h ^= h >> 31;
        p += 8, n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ (w * 0xBF58476D1CE4E5B9ULL)) * 0x94D049BB133111EBULL;
    return h ^ (h >> 29);
}

/* where a str or bytes object's content is (NULL: not one, or not in the core) */
static const uint8_t *content(struct gc_heap *h, uint64_t obj, uint64_t tp, uint64_t ob_size,
                              uint64_t *len, uint32_t *kind)
{
    if (tp == (uint64_t)h->L[HL_BYTES_TYPE]) {
        if (ob_size > h->dumped) return NULL;
        *len = ob_size, *kind = 0;
        return heap_at(h, obj + (uint64_t)h->L[HL_BYTES_BASIC] - 1, ob_size);
    }
    if (tp != (uint64_t)h->L[HL_STR_TYPE]) return NULL;
    uint32_t state;
    if (heap_u32(h, obj + (uint64_t)h->L[HL_STR_STATE], &state)) return NULL;
    uint32_t k = (state >> 2) & 7;
    if ((k != 1 && k != 2 && k != 4) || !(state & 32) || ob_size > MAX_ITEMS) return NULL;
    uint64_t at = obj + (uint64_t)h->L[(state & 64) ? HL_STR_ASCII : HL_STR_COMPACT];
    *len = ob_size * k, *kind = k;
    return heap_at(h, at, *len);
}

static int dent_cmp(const void *a, const void *b)
{
    const struct dent *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static int rec_cmp(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b; /* (kind, example, count, bytes, wasted, each) */
    if (x[4] != y[4]) return x[4] > y[4] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static const uint8_t *dent_data(struct gc_heap *h, const struct dent *d)
{
    uint64_t obj = heap_node_addr(h, d->slot), rc, tp, sz, len;
    uint32_t kind;
    if (heap_header(h, obj, &rc, &tp, &sz)) return NULL;
    return content(h, obj, tp, sz, &len, &kind);
}

/* one run of equal hashes: groups of equal contents (a collision splits the run) */
static int run_groups(struct gc_heap *h, struct dent *d, size_t n, uint64_t min, struct vec *res)
{
    while (n) {
        const uint8_t *first = dent_data(h, &d[0]);
        size_t k = 1;
        for (size_t i = 1; i < n; i++) { /* move the equal ones next to the first */
            const uint8_t *p = dent_data(h, &d[i]);
            if (first && p && d[i].kind == d[0].kind && d[i].len == d[0].len &&
                !memcmp(first, p, d[0].len)) {
                struct dent t = d[k];
                d[k++] = d[i], d[i] = t;
            }
        }
        if (k >= min) {
            uint64_t total = 0, least = UINT64_MAX, ex = UINT64_MAX;
            for (size_t i = 0; i < k; i++) {
                total += d[i].size;
                if (d[i].size < least) least = d[i].size;
                uint64_t a = heap_node_addr(h, d[i].slot);
                if (a < ex) ex = a;
            }
            uint64_t rec[] = {d[0].kind, ex, k, total, total - least, least};
            for (int i = 0; i < 6; i++)
                if (vec_push(res, rec[i])) return GC_HEAP_ENOMEM;
        }
        d += k, n -= k;
    }
    return 0;
}

int heap_op_dups(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    uint64_t min = nin ? in[0] : 2, top = nin > 1 ? in[1] : 20;
    struct dent *e = NULL;
    size_t n = 0, cap = 0;
    for (int64_t s = bits_next(&h->seen, 0); s >= 0; s = bits_next(&h->seen, (uint64_t)s + 1)) {
        if (bits_get(&h->inner, (uint64_t)s)) continue; /* str and bytes have no references */
        uint64_t obj = heap_node_addr(h, (uint64_t)s), rc, tp, sz, len, size;
        uint32_t kind;
        if (heap_header(h, obj, &rc, &tp, &sz)) continue;
        const uint8_t *p = content(h, obj, tp, sz, &len, &kind);
        const struct gc_htype *t = heap_type(h, tp);
        if (!p || !t || heap_size(h, obj, t, sz, &size)) continue;
        if (n == cap) {
            struct dent *ne = heap_grow(e, cap, cap ? cap * 2 : 4096, sizeof *e);
            if (!ne) {
                heap_free(e);
                return GC_HEAP_ENOMEM;
            }
            e = ne, cap = cap ? cap * 2 : 4096;
        }
        e[n].hash = mix(p, len, kind), e[n].slot = (uint64_t)s, e[n].len = len;
        e[n].size = size, e[n].kind = kind;
        n++;
    }
    qsort(e, n, sizeof *e, dent_cmp);
    struct vec res = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        size_t j = i + 1;
        while (j < n && e[j].hash == e[i].hash && e[j].kind == e[i].kind && e[j].len == e[i].len)
            j++;
        if (j - i >= min) rc = run_groups(h, e + i, j - i, min, &res);
        i = j;
    }
    heap_free(e);
    if (!rc) qsort(res.v, res.n / 6, 6 * sizeof *res.v, rec_cmp);
    for (size_t i = 0; !rc && i < res.n && i < 6 * top; i++) rc = vec_push(out, res.v[i]);
    vec_free(&res);
    return rc;
}
