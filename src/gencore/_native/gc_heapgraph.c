/* Roots, the dominator tree and retained sizes over the objects the census found (no Python
 * API). gencore/analysis/heapgraph.py defines the answers; this computes the same ones in
 * three passes over the objects' references and little memory:
 *
 * - objects are numbered by their place in the file (rank in the census's bitmap);
 * - pass 1 counts the references found to each object: an object whose reference count is
 *   higher is held from elsewhere, a root;
 * - pass 2 is a depth-first search from the roots over the objects whose type can hold
 *   references ("inner" objects), numbering them in reverse postorder (1..n; 0 is the virtual
 *   super-root, so a dominator always has a smaller number) and noting each one's first
 *   predecessor (the others only for objects with several); Cooper, Harvey and Kennedy's
 *   iterative algorithm then needs no further pass;
 * - an object without references (a "leaf": str, int, float...) is dominated by its one
 *   referrer, or by the nearest common dominator of its referrers: pass 3 (graph_leaves) finds
 *   them, and runs again whenever a question needs them: they are not stored. */
#define _GNU_SOURCE 1
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gc_heapgraph.h"

static void free_build(struct graph *g)
{
    heap_free(g->indeg);
    vec_free(&g->over);
    heap_free(g->rslot);
    heap_free(g->pc);
    heap_free(g->pf);
    vec_free(&g->extra);
    g->indeg = NULL, g->rslot = NULL, g->pc = NULL, g->pf = NULL;
}

void heap_graph_free(struct gc_heap *h)
{
    struct graph *g = h->g;
    if (!g) return;
    free_build(g);
    heap_free(g->single);
    heap_free(g->rootmark);
    free(g->roots);
    heap_free(g->ridx);
    heap_free(g->idom);
    heap_free(g->ret);
    heap_free(g->reached);
    heap_free(g->tidx);
    heap_free(g->tstats);
    heap_free(g->top);
    heap_free(g->eoff);
    if (g->edge) munmap((void *)g->edge, g->edge_bytes);
    heap_free(g);
    h->g = NULL;
}

/* The sure references of the object in slot, filtered to objects, as slots (h->kids). */
int graph_succ(struct gc_heap *h, uint64_t slot, uint64_t *addr)
{
    struct graph *g = h->g;
    if (addr) *addr = heap_node_addr(h, slot);
    if (g && g->edge) { /* the table pass 1 wrote */
        uint64_t ir = bits_index(&h->inner, slot);
        uint64_t a = g->eoff[ir], b = g->eoff[ir + 1];
        h->kids.n = 0;
        for (uint64_t i = a; i < b; i++)
            if (vec_push(&h->kids, g->edge[i])) return GC_HEAP_ENOMEM;
        return 0;
    }
    uint64_t obj = heap_node_addr(h, slot), rc, tp, sz, s;
    if (heap_header(h, obj, &rc, &tp, &sz)) return -1;
    const struct gc_htype *t = heap_type(h, tp);
    if (!t) return -1;
    int r = heap_referents(h, obj, t, sz, 0, &h->kids);
    if (r) return r;
    size_t k = 0;
    for (size_t i = 0; i < h->kids.n; i++)
        if (heap_is_node(h, h->kids.v[i], &s)) h->kids.v[k++] = s;
    h->kids.n = k;
    return 0;
}

#define EACH_INNER(s) \
    for (int64_t s = bits_next(&h->inner, 0); s >= 0; s = bits_next(&h->inner, (uint64_t)s + 1))

/* -- pass 1: references found, roots -------------------------------------------------------- */

static uint64_t indeg(const struct graph *g, uint64_t rank)
{
    if (g->indeg[rank] < UINT16_MAX) return g->indeg[rank];
    for (size_t i = 0; i < g->over.n; i += 2)
        if (g->over.v[i] == rank) return g->over.v[i + 1];
    return UINT16_MAX;
}

static int indeg_add(struct graph *g, uint64_t rank)
{
    if (g->indeg[rank] < UINT16_MAX - 1) {
        g->indeg[rank]++;
        return 0;
    }
    if (g->indeg[rank] == UINT16_MAX - 1) {
        g->indeg[rank] = UINT16_MAX;
        if (vec_push(&g->over, rank) || vec_push(&g->over, UINT16_MAX)) return GC_HEAP_ENOMEM;
        return 0;
    }
    for (size_t i = 0; i < g->over.n; i += 2) {
        if (g->over.v[i] == rank) {
            g->over.v[i + 1]++;
            return 0;
        }
    }
    return 0;
}

/* Pass 1 also writes every inner object's references (as slots) to a table in a temporary
 * file, mapped afterwards: the later passes read it instead of the core's objects. Without
 * such a file they read the core again. */
static int count_indeg(struct gc_heap *h, struct graph *g)
{
    const char *dir = getenv("TMPDIR");
    int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    uint64_t ne = 0, ni = h->inner.count;
    uint32_t buf[16384];
    size_t nbuf = 0;
    int rc = 0;
    if (fd >= 0) {
        g->eoff = heap_calloc(ni + 1, sizeof *g->eoff);
        if (!g->eoff) rc = GC_HEAP_ENOMEM;
    }
    uint64_t ir = 0;
    EACH_INNER(s) {
        if (rc) break;
        if (g->eoff) g->eoff[ir] = ne;
        ir++;
        int r = graph_succ(h, (uint64_t)s, NULL);
        if (r == GC_HEAP_ENOMEM) rc = r;
        if (r) continue;
        for (size_t i = 0; i < h->kids.n && !rc; i++) {
            if (indeg_add(g, bits_index(&h->seen, h->kids.v[i]))) rc = GC_HEAP_ENOMEM;
            if (!g->eoff) continue;
            buf[nbuf++] = (uint32_t)h->kids.v[i];
            ne++;
            if (nbuf == sizeof buf / sizeof *buf) {
                if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) rc = -1;
                nbuf = 0;
            }
        }
    }
    if (fd < 0) return rc;
    if (!rc && nbuf && write(fd, buf, nbuf * sizeof *buf) != (ssize_t)(nbuf * sizeof *buf)) rc = -1;
    if (!rc && g->eoff) {
        g->eoff[ni] = ne;
        g->edge_bytes = ne * sizeof *g->edge + 1;
        void *m = mmap(NULL, g->edge_bytes, PROT_READ, MAP_SHARED, fd, 0);
        g->edge = m == MAP_FAILED ? NULL : m;
    }
    close(fd);
    if (rc == -1 || !g->edge) { /* no room for the table: the passes read the core */
        heap_free(g->eoff);
        g->eoff = NULL;
        g->edge = NULL;
        rc = 0;
    }
    return rc;
}

static int add_root(struct gc_heap *h, struct graph *g, uint64_t slot)
{
    uint64_t rank = bits_index(&h->seen, slot);
    if (graph_isroot(g, rank)) return 0;
    graph_setbit(g->rootmark, rank);
    if (g->nroots == g->roots_cap) {
        size_t cap = g->roots_cap ? g->roots_cap * 2 : 1024;
        uint32_t *r = realloc(g->roots, cap * sizeof *r);
        if (!r) return GC_HEAP_ENOMEM;
        g->roots = r;
        g->roots_cap = cap;
    }
    g->roots[g->nroots++] = (uint32_t)slot;
    return 0;
}

/* explicit roots in order; type objects; objects held from elsewhere (and immortal ones) */
static int find_roots(struct gc_heap *h, struct graph *g, const uint64_t *in, size_t nin)
{
    uint64_t slot, rc, tp, sz;
    for (size_t i = 0; i < nin; i++)
        if (heap_is_node(h, in[i], &slot) && add_root(h, g, slot)) return GC_HEAP_ENOMEM;
    g->phase[0] = g->nroots;
    EACH_INNER(s) {
        if (heap_header(h, heap_node_addr(h, (uint64_t)s), &rc, &tp, &sz)) continue;
        const struct gc_htype *t = heap_type(h, tp);
        if (t && t->walk == W_TYPE && add_root(h, g, (uint64_t)s)) return GC_HEAP_ENOMEM;
    }
    g->phase[1] = g->nroots;
    int modern = h->L[HL_MINOR] >= 12;
    uint64_t rank = 0;
    for (int64_t s = bits_next(&h->seen, 0); s >= 0;
         s = bits_next(&h->seen, (uint64_t)s + 1), rank++) {
        uint64_t found = indeg(g, rank);
        if (found == 1) graph_setbit(g->single, rank);
        if (heap_header(h, heap_node_addr(h, (uint64_t)s), &rc, &tp, &sz)) continue;
        int root;
        if (modern) {
            uint64_t low = rc & 0xFFFFFFFFULL;
            root = low >= (1ULL << 31) || low > found;
        } else {
            root = (int64_t)rc > (int64_t)found;
        }
        if (root && add_root(h, g, (uint64_t)s)) return GC_HEAP_ENOMEM;
    }
    return 0;
}

/* -- pass 2: depth first, predecessors ------------------------------------------------------ */

/* enter an inner object: its inner successors onto the edge stack, its frame */
static int dfs_enter(struct gc_heap *h, struct graph *g, struct vec *frames, struct vec *edges,
                     uint64_t slot)
{
    uint64_t begin = edges->n, ir = bits_index(&h->inner, slot);
    int r = graph_succ(h, slot, NULL);
    if (r == GC_HEAP_ENOMEM) return r;
    for (size_t i = 0; !r && i < h->kids.n; i++) {
        uint64_t s = h->kids.v[i];
        if (!bits_get(&h->inner, s)) continue;
        uint64_t v = bits_index(&h->inner, s);
        if (vec_push(edges, s)) return GC_HEAP_ENOMEM;
        if (g->pc[v] == 0) {
            g->pc[v] = 1, g->pf[v] = (uint32_t)ir;
        } else {
            if (g->pc[v] < UINT8_MAX) g->pc[v]++;
            if (vec_push(&g->extra, ir) || vec_push(&g->extra, v)) return GC_HEAP_ENOMEM;
        }
    }
    /* frame: (slot, next edge, first edge); a frame's edges are the last on the stack */
    if (vec_push(frames, slot) || vec_push(frames, begin) || vec_push(frames, begin))
        return GC_HEAP_ENOMEM;
    return 0;
}

static int dfs_from(struct gc_heap *h, struct graph *g, uint64_t root, struct vec *frames,
                    struct vec *edges, uint32_t *post)
{
    frames->n = edges->n = 0;
    int rc = dfs_enter(h, g, frames, edges, root);
    while (!rc && frames->n) {
        uint64_t *f = &frames->v[frames->n - 3];
        uint64_t next = UINT64_MAX;
        while (f[1] < edges->n) {
            uint64_t cand = edges->v[f[1]++];
            uint64_t cr = bits_index(&h->inner, cand);
            if (!g->ridx[cr]) {
                g->ridx[cr] = NONE32; /* seen, not finished */
                next = cand;
                break;
            }
        }
        if (next != UINT64_MAX) {
            rc = dfs_enter(h, g, frames, edges, next);
            continue;
        }
        g->ridx[bits_index(&h->inner, f[0])] = ++*post;
        g->rslot[*post] = (uint32_t)f[0];
        edges->n = f[2];
        frames->n -= 3;
    }
    return rc;
}

static int dfs(struct gc_heap *h, struct graph *g)
{
    struct vec frames = {0}, edges = {0};
    uint32_t post = 0;
    int rc = 0;
    for (size_t k = 0; k < g->nroots && !rc; k++) {
        uint64_t s = g->roots[k];
        if (!bits_get(&h->inner, s)) continue;
        uint64_t ir = bits_index(&h->inner, s);
        if (g->ridx[ir]) continue;
        g->ridx[ir] = NONE32;
        rc = dfs_from(h, g, s, &frames, &edges, &post);
    }
    vec_free(&frames);
    vec_free(&edges);
    if (rc) return rc;
    g->n = post;
    for (uint64_t i = 1, j = g->n; i < j; i++, j--) { /* postorder q -> n + 1 - q */
        uint32_t t = g->rslot[i];
        g->rslot[i] = g->rslot[j];
        g->rslot[j] = t;
    }
    for (uint64_t i = 0; i < h->inner.count; i++)
        if (g->ridx[i]) g->ridx[i] = (uint32_t)(g->n + 1 - g->ridx[i]);
    return 0;
}

/* -- dominators ----------------------------------------------------------------------------- */

uint32_t graph_nca(const struct graph *g, uint32_t a, uint32_t b)
{
    while (a != b) {
        while (a > b) a = g->idom[a];
        while (b > a) b = g->idom[b];
    }
    return a;
}

static int extra_cmp(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b; /* (predecessor, object): by object */
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* the first of the sorted (predecessor, object) pairs for object ir */
static uint64_t extra_first(const struct graph *g, uint64_t ir)
{
    uint64_t lo = 0, hi = g->extra.n / 2;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (g->extra.v[2 * mid + 1] < ir)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int dominators(struct gc_heap *h, struct graph *g)
{
    uint64_t n = g->n, ne = g->extra.n / 2;
    g->idom = heap_calloc(n + 1, sizeof *g->idom);
    if (!g->idom) return GC_HEAP_ENOMEM;
    qsort(g->extra.v, ne, 2 * sizeof *g->extra.v, extra_cmp);
    for (uint64_t r = 1; r <= n; r++)
        g->idom[r] = graph_isroot(g, bits_index(&h->seen, g->rslot[r])) ? 0 : NONE32;
    /* in reverse postorder, an object's predecessors that are defined have their whole chain
     * of dominators defined: CHK's intersection only climbs defined numbers */
    for (int changed = 1, pass = 0; changed; pass++) {
        changed = 0;
        for (uint64_t r = 1; r <= n; r++) {
            if (!g->idom[r]) continue; /* a root */
            uint64_t ir = bits_index(&h->inner, g->rslot[r]);
            uint32_t first = g->ridx[g->pf[ir]];
            if (g->pc[ir] == 1) {
                if (!pass) g->idom[r] = first; /* the one predecessor, defined before r */
                continue;
            }
            uint32_t nw = g->idom[first] != NONE32 ? first : NONE32;
            for (uint64_t i = extra_first(g, ir); i < ne && g->extra.v[2 * i + 1] == ir; i++) {
                uint32_t p = g->ridx[g->extra.v[2 * i]];
                if (g->idom[p] == NONE32) continue;
                nw = nw == NONE32 ? p : graph_nca(g, p, nw);
            }
            if (nw != NONE32 && g->idom[r] != nw) {
                g->idom[r] = nw;
                changed = 1;
            }
        }
    }
    return 0;
}

/* -- pass 3: leaves ------------------------------------------------------------------------- */

/* Every leaf a root reaches, once, with its immediate dominator; with sized, each inner
 * object's own size is added to its retained bytes on the way. A leaf with one reference is
 * dominated by its referrer; the dominator of one with several (the nearest common one of
 * theirs) is kept per leaf, by leaf rank, until every referrer was seen. */
int graph_leaves_sized(struct gc_heap *h, leaf_fn fn, void *ctx, int sized)
{
    struct graph *g = h->g;
    uint64_t nleaves = h->seen.count - h->inner.count;
    uint32_t *dom = heap_calloc(nleaves + 1, sizeof *dom);
    if (!dom) return GC_HEAP_ENOMEM;
    memset(dom, 0xFF, (nleaves + 1) * sizeof *dom);
    int rc = 0;
    EACH_INNER(su) {
        uint32_t r = g->ridx[bits_index(&h->inner, (uint64_t)su)];
        if (!r) continue;
        if (sized) {
            uint64_t own;
            uint32_t ti;
            graph_size(h, (uint64_t)su, &own, &ti);
            g->ret[r] += own;
            g->reached_bytes += own;
            g->tidx[r] = ti;
            if (ti < g->ntstats) g->tstats[ti].count++, g->tstats[ti].own += own;
        }
        int e = graph_succ(h, (uint64_t)su, NULL);
        if (e == GC_HEAP_ENOMEM) rc = e;
        if (e) continue;
        for (size_t i = 0; i < h->kids.n && !rc; i++) {
            uint64_t s = h->kids.v[i];
            if (bits_get(&h->inner, s)) continue;
            uint64_t rank = bits_index(&h->seen, s);
            if (graph_isroot(g, rank)) continue;
            if (graph_bit(g->single, rank)) {
                rc = fn(h, ctx, s, rank, r);
                continue;
            }
            uint32_t *d = &dom[rank - bits_index(&h->inner, s)];
            *d = *d == NONE32 ? r : graph_nca(g, *d, r);
        }
        if (rc) break;
    }
    uint64_t rank = 0, lr = 0;
    for (int64_t s = bits_next(&h->seen, 0); s >= 0 && !rc;
         s = bits_next(&h->seen, (uint64_t)s + 1), rank++) {
        if (bits_get(&h->inner, (uint64_t)s)) continue;
        if (dom[lr] != NONE32) rc = fn(h, ctx, (uint64_t)s, rank, dom[lr]);
        lr++;
    }
    heap_free(dom);
    for (size_t k = 0; k < g->nroots && !rc; k++) {
        uint64_t s = g->roots[k];
        if (!bits_get(&h->inner, s)) rc = fn(h, ctx, s, bits_index(&h->seen, s), 0);
    }
    return rc;
}

int graph_leaves(struct gc_heap *h, leaf_fn fn, void *ctx)
{
    return graph_leaves_sized(h, fn, ctx, 0);
}

int graph_size(struct gc_heap *h, uint64_t slot, uint64_t *size, uint32_t *type_index)
{
    uint64_t rc, tp, sz, obj = heap_node_addr(h, slot);
    *size = 0;
    *type_index = 0;
    if (heap_header(h, obj, &rc, &tp, &sz)) return -1;
    const struct gc_htype *t = heap_type(h, tp);
    if (!t) return -1;
    *type_index = t->index;
    if (heap_size(h, obj, t, sz, size)) *size = 0;
    return 0;
}

int graph_slots_of(struct gc_heap *h, const uint32_t *rs, size_t n, uint32_t *slots)
{
    for (size_t i = 0; i < n; i++) slots[i] = NONE32;
    EACH_INNER(s) {
        uint32_t r = h->g->ridx[bits_index(&h->inner, (uint64_t)s)];
        if (!r) continue;
        for (size_t i = 0; i < n; i++)
            if (rs[i] == r) slots[i] = (uint32_t)s;
    }
    return 0;
}

static int leaf_accumulate(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t rank,
                           uint32_t idom)
{
    (void)ctx;
    struct graph *g = h->g;
    uint64_t size;
    uint32_t ti;
    graph_size(h, slot, &size, &ti);
    graph_setbit(g->reached, rank);
    g->reached_nodes++;
    g->reached_bytes += size;
    if (idom) g->ret[idom] += size;
    return graph_note_leaf(h, slot, size, ti);
}

/* -- the request ---------------------------------------------------------------------------- */

static int graph_build(struct gc_heap *h, struct graph *g, const uint64_t *in, size_t nin)
{
    if (h->size / 16 > UINT32_MAX)
        return heap_fail(h, GC_HEAP_ELIMIT, "retained sizes need a core under 64 GiB");
    int rc = bits_rank(&h->seen);
    if (!rc) rc = bits_rank(&h->inner);
    if (rc) return rc;
    uint64_t nn = h->seen.count, ni = h->inner.count;
    g->indeg = heap_calloc(nn + 1, sizeof *g->indeg);
    g->single = heap_calloc(nn / 8 + 1, 1);
    g->rootmark = heap_calloc(nn / 8 + 1, 1);
    g->reached = heap_calloc(nn / 8 + 1, 1);
    if (!g->indeg || !g->single || !g->rootmark || !g->reached) return GC_HEAP_ENOMEM;
    if ((rc = count_indeg(h, g))) return rc;
    if ((rc = find_roots(h, g, in, nin))) return rc;
    heap_free(g->indeg);
    g->indeg = NULL;
    vec_free(&g->over);
    g->ridx = heap_calloc(ni + 1, sizeof *g->ridx);
    g->rslot = heap_calloc(ni + 1, sizeof *g->rslot);
    g->pc = heap_calloc(ni + 1, sizeof *g->pc);
    g->pf = heap_calloc(ni + 1, sizeof *g->pf);
    if (!g->ridx || !g->rslot || !g->pc || !g->pf) return GC_HEAP_ENOMEM;
    if ((rc = dfs(h, g))) return rc;
    if ((rc = dominators(h, g))) return rc;
    free_build(g);
    g->ret = heap_calloc(g->n + 1, sizeof *g->ret);
    g->tidx = heap_calloc(g->n + 1, sizeof *g->tidx);
    g->ntstats = h->maxindex + 1ULL;
    g->tstats = heap_calloc(g->ntstats, sizeof *g->tstats);
    g->top = heap_calloc(2 * GRAPH_TOP, sizeof *g->top);
    if (!g->ret || !g->tidx || !g->tstats || !g->top) return GC_HEAP_ENOMEM;
    for (size_t i = 0; i < g->ntstats; i++) g->tstats[i].best_slot = UINT64_MAX;
    g->reached_nodes = g->n;
    if ((rc = graph_leaves_sized(h, leaf_accumulate, NULL, 1))) return rc;
    for (uint64_t r = g->n; r >= 1; r--)
        if (g->idom[r]) g->ret[g->idom[r]] += g->ret[r];
    return graph_summaries(h);
}

int heap_op_graph(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    heap_graph_free(h);
    struct graph *g = h->g = heap_calloc(1, sizeof *g);
    if (!g) return GC_HEAP_ENOMEM;
    int rc = graph_build(h, g, in, nin);
    if (rc) {
        heap_graph_free(h);
        return rc;
    }
    uint64_t known = 0;
    for (uint64_t i = 0; i < h->tcount_n; i++) known += h->tcount[3 * i + 1];
    uint64_t res[] = {g->reached_nodes, h->c.nodes - g->reached_nodes, known - g->reached_bytes,
                      g->nroots, g->reached_bytes};
    for (size_t i = 0; i < 5; i++)
        if (vec_push(out, res[i])) return GC_HEAP_ENOMEM;
    return 0;
}
