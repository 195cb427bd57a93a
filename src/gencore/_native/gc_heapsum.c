/* What the graph request leaves ready for the questions (no Python API): per type, the
 * instances a root reaches, their own and retained bytes and the one retaining most; and the
 * objects retaining most. Counting them while the graph is built saves a pass over every
 * object per question. */
#include <stdlib.h>

#include "gc_heapgraph.h"

int heap_better(uint64_t ra, uint64_t aa, uint64_t rb, uint64_t ab)
{
    return ra > rb || (ra == rb && aa < ab);
}

/* whether entry i is worse than entry j (the heap's root is the worst kept) */
static int worse(const uint64_t *v, size_t i, size_t j)
{
    return heap_better(v[2 * j], v[2 * j + 1], v[2 * i], v[2 * i + 1]);
}

static void swap2(uint64_t *v, size_t i, size_t j)
{
    uint64_t a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = v[2 * j], v[2 * i + 1] = v[2 * j + 1];
    v[2 * j] = a, v[2 * j + 1] = b;
}

void topk_add(struct topk *t, uint64_t ret, uint64_t addr)
{
    if (!t->k) return;
    if (t->n < t->k) {
        size_t i = t->n++;
        t->v[2 * i] = ret, t->v[2 * i + 1] = addr;
        while (i > 0 && worse(t->v, i, (i - 1) / 2)) {
            swap2(t->v, i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
        return;
    }
    if (!heap_better(ret, addr, t->v[0], t->v[1])) return;
    t->v[0] = ret, t->v[1] = addr;
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->n && worse(t->v, l, m)) m = l;
        if (r < t->n && worse(t->v, r, m)) m = r;
        if (m == i) break;
        swap2(t->v, i, m);
        i = m;
    }
}

static struct tstat *tstat_of(struct gc_heap *h, uint32_t ti)
{
    struct graph *g = h->g;
    if (ti >= g->ntstats) return NULL;
    return &g->tstats[ti];
}

static void note_best(struct tstat *s, uint64_t ret, uint64_t slot)
{
    if (heap_better(ret, slot, s->best, s->best_slot)) s->best = ret, s->best_slot = slot;
}

/* a leaf a root reaches (its retained bytes are its own) */
int graph_note_leaf(struct gc_heap *h, uint64_t slot, uint64_t size, uint32_t ti)
{
    struct graph *g = h->g;
    struct tstat *s = tstat_of(h, ti);
    if (s) {
        note_best(s, size, slot);
        s->count++;
        s->own += size;
        s->retained += size; /* no instance of a leaf's type dominates it */
    }
    struct topk t = {g->top, g->ntop, GRAPH_TOP, NONE32};
    topk_add(&t, size, slot);
    g->ntop = t.n;
    return 0;
}

/* retained bytes per type of the instances no other instance of the type dominates: depth
 * first over the dominator tree, counting the instances of each type on the way down */
static int set_retained(struct gc_heap *h)
{
    struct graph *g = h->g;
    uint32_t *cstart = heap_calloc(g->n + 2, sizeof *cstart);
    uint32_t *clist = heap_calloc(g->n + 1, sizeof *clist);
    uint32_t *active = heap_calloc(g->ntstats + 1, sizeof *active);
    struct vec stack = {0};
    int rc = (!cstart || !clist || !active) ? GC_HEAP_ENOMEM : 0;
    for (uint64_t r = 1; !rc && r <= g->n; r++) cstart[g->idom[r] + 1]++;
    for (uint64_t r = 1; !rc && r <= g->n + 1; r++) cstart[r] += cstart[r - 1];
    for (uint64_t r = 1; !rc && r <= g->n; r++) clist[cstart[g->idom[r]]++] = (uint32_t)r;
    for (uint64_t r = g->n + 1; !rc && r >= 1; r--) cstart[r] = cstart[r - 1];
    if (!rc) cstart[0] = 0;
    for (uint32_t k = cstart[0]; !rc && k < cstart[1]; k++) rc = vec_push(&stack, clist[k]);
    while (!rc && stack.n) {
        uint64_t e = stack.v[--stack.n];
        uint32_t r = (uint32_t)e, ti = g->tidx[r];
        struct tstat *s = tstat_of(h, ti);
        if (!s) continue;
        if (e >> 63) {
            active[ti]--;
            continue;
        }
        if (!active[ti]) s->retained += g->ret[r];
        active[ti]++;
        rc = vec_push(&stack, e | (1ULL << 63));
        for (uint32_t k = cstart[r]; !rc && k < cstart[r + 1]; k++) rc = vec_push(&stack, clist[k]);
    }
    heap_free(cstart);
    heap_free(clist);
    heap_free(active);
    vec_free(&stack);
    return rc;
}

/* after the retained bytes: the inner objects' part of the summaries, in file order */
int graph_summaries(struct gc_heap *h)
{
    struct graph *g = h->g;
    struct topk t = {g->top, g->ntop, GRAPH_TOP, NONE32};
    for (int64_t s = bits_next(&h->inner, 0); s >= 0; s = bits_next(&h->inner, (uint64_t)s + 1)) {
        uint32_t r = g->ridx[bits_index(&h->inner, (uint64_t)s)];
        if (!r) continue;
        struct tstat *st = tstat_of(h, g->tidx[r]);
        if (st) note_best(st, g->ret[r], (uint64_t)s);
        topk_add(&t, g->ret[r], (uint64_t)s);
    }
    g->ntop = t.n;
    int rc = set_retained(h);
    heap_free(g->tidx);
    g->tidx = NULL;
    /* most first */
    for (size_t i = 1; i < g->ntop; i++)
        for (size_t j = i; j > 0 && heap_better(g->top[2 * j], g->top[2 * j + 1],
                                                g->top[2 * (j - 1)], g->top[2 * (j - 1) + 1]);
             j--) {
            uint64_t a = g->top[2 * j], b = g->top[2 * j + 1];
            g->top[2 * j] = g->top[2 * (j - 1)], g->top[2 * j + 1] = g->top[2 * (j - 1) + 1];
            g->top[2 * (j - 1)] = a, g->top[2 * (j - 1) + 1] = b;
        }
    return rc;
}
