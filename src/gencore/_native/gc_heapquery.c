/* Questions over the dominator tree (gc_heapgraph.c built it): retained bytes per type, the
 * objects retaining most, shortest paths from the roots, leak suspects. No Python API; the
 * answers of gencore/analysis/heapgraph.py. */
#include <stdlib.h>

#include "gc_heapgraph.h"

#define PUSH(x)                                                                             \
    do {                                                                                    \
        if (vec_push(out, (x))) return GC_HEAP_ENOMEM;                                      \
    } while (0)

/* Every reached object: calls fn(slot, rank, retained, type index, rpo number or 0). */
typedef int (*node_fn)(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t ret, uint32_t ti,
                       uint32_t r);

static int each_reached(struct gc_heap *h, node_fn fn, void *ctx)
{
    struct graph *g = h->g;
    uint64_t rank = 0;
    for (int64_t s = bits_next(&h->seen, 0); s >= 0;
         s = bits_next(&h->seen, (uint64_t)s + 1), rank++) {
        uint64_t size;
        uint32_t ti, r = 0;
        if (bits_get(&h->inner, (uint64_t)s)) {
            r = g->ridx[bits_index(&h->inner, (uint64_t)s)];
            if (!r) continue;
        } else if (!((g->reached[rank >> 3] >> (rank & 7)) & 1)) {
            continue;
        }
        if (graph_size(h, (uint64_t)s, &size, &ti)) continue;
        int rc = fn(h, ctx, (uint64_t)s, r ? g->ret[r] : size, ti, r);
        if (rc) return rc;
    }
    return 0;
}

/* -- the k largest: a min-heap of (retained, address) ---------------------------------------- */

static int top_fn(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t ret, uint32_t ti,
                  uint32_t r)
{
    (void)r;
    struct topk *t = ctx;
    if (t->want_type == NONE32 || t->want_type == ti) topk_add(t, ret, heap_node_addr(h, slot));
    return 0;
}

static int op_top(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    struct graph *g = h->g;
    struct topk t = {0};
    t.k = nin ? (size_t)in[0] : 10;
    t.want_type = nin > 1 ? (uint32_t)in[1] : NONE32;
    /* what the graph request kept: the objects retaining most, each type's first */
    if (t.want_type == NONE32 && (t.k <= g->ntop || g->ntop < GRAPH_TOP)) {
        for (size_t i = 0; i < t.k && i < g->ntop; i++) {
            PUSH(g->top[2 * i]);
            PUSH(heap_node_addr(h, g->top[2 * i + 1]));
        }
        return 0;
    }
    if (t.want_type != NONE32 && t.k == 1) {
        if (t.want_type < g->ntstats && g->tstats[t.want_type].best_slot != UINT64_MAX) {
            PUSH(g->tstats[t.want_type].best);
            PUSH(heap_node_addr(h, g->tstats[t.want_type].best_slot));
        }
        return 0;
    }
    if (t.k > 1u << 20) return heap_fail(h, GC_HEAP_EINVAL, "too many objects asked");
    t.v = heap_calloc(2 * t.k + 2, sizeof *t.v);
    if (!t.v) return GC_HEAP_ENOMEM;
    int rc = each_reached(h, top_fn, &t);
    for (size_t i = 0; !rc && i < 2 * t.n; i++)
        if (vec_push(out, t.v[i])) rc = GC_HEAP_ENOMEM;
    heap_free(t.v);
    return rc;
}

/* -- retained bytes per type ---------------------------------------------------------------- */

static int op_typeret(struct gc_heap *h, struct vec *out)
{
    struct graph *g = h->g;
    for (size_t i = 0; i < g->ntstats; i++) {
        const struct tstat *s = &g->tstats[i];
        if (!s->count) continue;
        PUSH(i);
        PUSH(s->count);
        PUSH(s->own);
        PUSH(s->retained);
    }
    return 0;
}

/* -- shortest paths ------------------------------------------------------------------------- */

static int op_paths(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    struct graph *g = h->g;
    uint64_t nn = h->seen.count, slot;
    uint32_t *parent = heap_calloc(nn + 1, sizeof *parent); /* by rank: the parent's slot */
    uint32_t *queue = heap_calloc(nn + 1, sizeof *queue);   /* slots */
    if (!parent || !queue) {
        heap_free(parent);
        heap_free(queue);
        return GC_HEAP_ENOMEM;
    }
    memset(parent, 0xFF, (nn + 1) * sizeof *parent);
    size_t head = 0, tail = 0, left = 0;
    for (size_t i = 0; i < nin; i++)
        if (heap_is_node(h, in[i], &slot)) left++;
    const uint32_t ROOT = NONE32 - 1;
    int rc = 0;
    /* breadth first from the explicit roots; then from the type objects, then from the
     * objects held elsewhere, for what the ones before did not reach */
    size_t bounds[] = {g->phase[0], g->phase[1], g->nroots}, k = 0;
    for (int ph = 0; ph < 3 && !rc; ph++) {
        for (; k < bounds[ph]; k++) {
            uint64_t rank = bits_index(&h->seen, g->roots[k]);
            if (parent[rank] != NONE32) continue;
            parent[rank] = ROOT;
            queue[tail++] = g->roots[k];
        }
        /* stop once every target is reached (a target's parent is set when it is queued) */
        while (!rc && head < tail) {
            size_t done = 0;
            for (size_t i = 0; i < nin; i++)
                if (heap_is_node(h, in[i], &slot) && parent[bits_index(&h->seen, slot)] != NONE32)
                    done++;
            if (done == left) break;
            for (size_t batch = 0; batch < 4096 && head < tail && !rc; batch++) {
                uint64_t u = queue[head++];
                if (!bits_get(&h->inner, u)) continue;
                int e = graph_succ(h, u, NULL);
                if (e == GC_HEAP_ENOMEM) rc = e;
                if (e) continue;
                for (size_t i = 0; i < h->kids.n; i++) {
                    uint64_t rank = bits_index(&h->seen, h->kids.v[i]);
                    if (parent[rank] != NONE32) continue;
                    parent[rank] = (uint32_t)u;
                    queue[tail++] = (uint32_t)h->kids.v[i];
                }
            }
        }
    }
    for (size_t i = 0; !rc && i < nin; i++) {
        size_t at = out->n;
        rc = vec_push(out, 0);
        if (rc || !heap_is_node(h, in[i], &slot) || parent[bits_index(&h->seen, slot)] == NONE32)
            continue;
        for (uint64_t s = slot;; ) { /* target first; reversed below */
            rc = vec_push(out, heap_node_addr(h, s));
            uint32_t p = parent[bits_index(&h->seen, s)];
            if (rc || p == ROOT) break;
            s = p;
        }
        size_t n = out->n - at - 1;
        out->v[at] = n;
        for (size_t a = at + 1, b = out->n - 1; a < b; a++, b--) {
            uint64_t x = out->v[a];
            out->v[a] = out->v[b];
            out->v[b] = x;
        }
    }
    heap_free(parent);
    heap_free(queue);
    return rc;
}

/* -- leak suspects -------------------------------------------------------------------------- */

struct group {
    uint64_t owner, type, count, total, best, example; /* owner: its number, 0 the super-root */
};

struct suspects {
    uint64_t threshold;
    uint8_t *big_child; /* by reverse postorder number: has a child retaining the threshold */
    struct group *tab;
    size_t cap, n;
};

static size_t group_hash(uint64_t owner, uint64_t type, size_t cap)
{
    uint64_t x = (owner * 31 + type) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x ^ (x >> 32)) & (cap - 1);
}

static int group_add(struct suspects *S, uint64_t owner, uint32_t ti, uint64_t ret, uint64_t addr)
{
    if ((S->n + 1) * 2 > S->cap) {
        size_t cap = S->cap ? S->cap * 2 : 1024;
        struct group *t = heap_calloc(cap, sizeof *t);
        if (!t) return GC_HEAP_ENOMEM;
        for (size_t i = 0; i < S->cap; i++) {
            if (!S->tab[i].count) continue;
            size_t j = group_hash(S->tab[i].owner, S->tab[i].type, cap);
            while (t[j].count) j = (j + 1) & (cap - 1);
            t[j] = S->tab[i];
        }
        heap_free(S->tab);
        S->tab = t;
        S->cap = cap;
    }
    size_t j = group_hash(owner, ti, S->cap);
    while (S->tab[j].count && (S->tab[j].owner != owner || S->tab[j].type != ti))
        j = (j + 1) & (S->cap - 1);
    struct group *G = &S->tab[j];
    if (!G->count) {
        G->owner = owner, G->type = ti, S->n++;
        G->best = ret, G->example = addr;
    } else if (heap_better(ret, addr, G->best, G->example)) {
        G->best = ret, G->example = addr;
    }
    G->count++;
    G->total += ret;
    return 0;
}

static int suspect_leaf(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t rank, uint32_t d)
{
    (void)rank;
    struct suspects *S = ctx;
    uint64_t size;
    uint32_t ti;
    graph_size(h, slot, &size, &ti);
    if (size >= S->threshold && d) S->big_child[d] = 1;
    if (!d || h->g->ret[d] >= S->threshold)
        return group_add(S, d, ti, size, heap_node_addr(h, slot));
    return 0;
}

struct single {
    uint64_t threshold;
    uint8_t *big_child;
    struct vec *res;
};

/* objects retaining the threshold none of whose dominated objects does */
static int single_fn(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t ret, uint32_t ti,
                     uint32_t r)
{
    struct single *one = ctx;
    if (ret < one->threshold || (r && one->big_child[r])) return 0;
    uint64_t a = heap_node_addr(h, slot), rec[] = {a, ti, 0, ret, a};
    for (int k = 0; k < 5; k++)
        if (vec_push(one->res, rec[k])) return GC_HEAP_ENOMEM;
    return 0;
}

static int group_cmp(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b; /* (owner, type, count, retained, example) */
    if (x[3] != y[3]) return x[3] > y[3] ? -1 : 1;
    return x[4] < y[4] ? -1 : x[4] > y[4];
}

static int groups_out(struct gc_heap *h, struct suspects *S, struct vec *res)
{
    size_t k = 0;
    uint32_t *owners = heap_calloc(S->n + 1, sizeof *owners), *slots;
    slots = heap_calloc(S->n + 1, sizeof *slots);
    if (!owners || !slots) {
        heap_free(owners);
        heap_free(slots);
        return GC_HEAP_ENOMEM;
    }
    for (size_t i = 0; i < S->cap; i++) {
        struct group *G = &S->tab[i];
        if (G->count >= 2 && G->total >= S->threshold && G->best < S->threshold)
            owners[k++] = (uint32_t)G->owner;
    }
    graph_slots_of(h, owners, k, slots);
    int rc = 0;
    for (size_t i = 0, j = 0; i < S->cap && !rc; i++) {
        struct group *G = &S->tab[i];
        if (!(G->count >= 2 && G->total >= S->threshold && G->best < S->threshold)) continue;
        uint64_t owner = G->owner && slots[j] != NONE32 ? heap_node_addr(h, slots[j]) : 0;
        j++;
        uint64_t rec[] = {owner, G->type, G->count, G->total, G->example};
        for (int q = 0; q < 5 && !rc; q++) rc = vec_push(res, rec[q]);
    }
    heap_free(owners);
    heap_free(slots);
    return rc;
}

static int op_suspects(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    struct graph *g = h->g;
    struct suspects S = {0};
    S.threshold = nin && in[0] ? in[0] : 1;
    S.big_child = heap_calloc(g->n + 1, 1);
    if (!S.big_child) return GC_HEAP_ENOMEM;
    int rc = 0;
    for (int64_t s = bits_next(&h->inner, 0); !rc && s >= 0; s = bits_next(&h->inner, (uint64_t)s + 1)) {
        uint32_t r = g->ridx[bits_index(&h->inner, (uint64_t)s)], ti;
        if (!r) continue;
        uint32_t d = g->idom[r];
        if (g->ret[r] >= S.threshold && d) S.big_child[d] = 1;
        if (!d || g->ret[d] >= S.threshold) {
            uint64_t size;
            graph_size(h, (uint64_t)s, &size, &ti);
            rc = group_add(&S, d, ti, g->ret[r], heap_node_addr(h, (uint64_t)s));
        }
    }
    if (!rc) rc = graph_leaves(h, suspect_leaf, &S);
    struct vec res = {0};
    struct single one = {S.threshold, S.big_child, &res};
    if (!rc) rc = each_reached(h, single_fn, &one);
    if (!rc) rc = groups_out(h, &S, &res);
    heap_free(S.tab);
    heap_free(S.big_child);
    if (!rc) {
        qsort(res.v, res.n / 5, 5 * sizeof *res.v, group_cmp);
        for (size_t i = 0; i < res.n && !rc; i++) rc = vec_push(out, res.v[i]);
    }
    vec_free(&res);
    return rc;
}

/* -- small questions ------------------------------------------------------------------------ */

static int op_retained(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    struct graph *g = h->g;
    for (size_t i = 0; i < nin; i++) {
        uint64_t slot, v = UINT64_MAX, size;
        uint32_t ti;
        if (heap_is_node(h, in[i], &slot)) {
            uint64_t rank = bits_index(&h->seen, slot);
            if (bits_get(&h->inner, slot)) {
                uint32_t r = g->ridx[bits_index(&h->inner, slot)];
                if (r) v = g->ret[r];
            } else if ((g->reached[rank >> 3] >> (rank & 7)) & 1) {
                graph_size(h, slot, &size, &ti);
                v = size;
            }
        }
        PUSH(v);
    }
    return 0;
}

static int op_roots(struct gc_heap *h, struct vec *out)
{
    for (size_t k = 0; k < h->g->nroots; k++) PUSH(heap_node_addr(h, h->g->roots[k]));
    return 0;
}

/* every reference the census follows to an object of one of the types in[], counted per
 * type index of the referring object */
static int op_referrers(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    uint64_t *count = heap_calloc(h->maxindex + 1ULL, sizeof *count);
    if (!count) return GC_HEAP_ENOMEM;
    int rc = 0;
    for (int64_t s = bits_next(&h->inner, 0); !rc && s >= 0; s = bits_next(&h->inner, (uint64_t)s + 1)) {
        uint64_t obj = heap_node_addr(h, (uint64_t)s), r0, tp, sz, slot;
        if (heap_header(h, obj, &r0, &tp, &sz)) continue;
        const struct gc_htype *t = heap_type(h, tp);
        if (!t) continue;
        int e = heap_referents(h, obj, t, sz, 1, &h->kids);
        if (e == GC_HEAP_ENOMEM) rc = e;
        if (e) continue;
        for (size_t i = 0; i < h->kids.n; i++) {
            if (!heap_is_node(h, h->kids.v[i], &slot)) continue;
            if (heap_header(h, h->kids.v[i], &r0, &tp, &sz)) continue;
            for (size_t k = 0; k < nin; k++)
                if (in[k] == tp) count[t->index]++;
        }
    }
    for (uint64_t i = 0; !rc && i <= h->maxindex; i++)
        if (count[i] && (vec_push(out, i) || vec_push(out, count[i]))) rc = GC_HEAP_ENOMEM;
    heap_free(count);
    return rc;
}

int heap_op_query(struct gc_heap *h, int op, const uint64_t *in, size_t nin, struct vec *out)
{
    if (op == GC_HOP_REFERRERS) return op_referrers(h, in, nin, out);
    if (!h->g) return heap_fail(h, GC_HEAP_EINVAL, "no graph: run the graph request first");
    switch (op) {
    case GC_HOP_TYPERET:
        return op_typeret(h, out);
    case GC_HOP_TOP:
        return op_top(h, in, nin, out);
    case GC_HOP_PATHS:
        return op_paths(h, in, nin, out);
    case GC_HOP_SUSPECTS:
        return op_suspects(h, in, nin, out);
    case GC_HOP_RETAINED:
        return op_retained(h, in, nin, out);
    case GC_HOP_ROOTS:
        return op_roots(h, out);
    }
    return heap_fail(h, GC_HEAP_EINVAL, "unknown request %d", op);
}
