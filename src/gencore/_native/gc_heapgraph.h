/* The object graph of the heap walker (gc_heapgraph.c, gc_heapquery.c). */
#ifndef GC_HEAPGRAPH_H
#define GC_HEAPGRAPH_H

#include "gc_heapint.h"

struct graph {
    uint16_t *indeg;     /* references found to each object (by rank), saturated... */
    struct vec over;     /* ...then (rank, count) pairs past 65534 (both freed once the
                          * roots are known) */
    uint8_t *single;     /* objects with exactly one reference found, a bit per rank */
    uint8_t *rootmark;   /* roots, a bit per rank */
    uint64_t *eoff;      /* by inner rank: where its references begin in edge */
    const uint32_t *edge; /* every inner object's references, as slots (a mapped file) */
    size_t edge_bytes;
    uint32_t *roots;     /* the roots' slots, in order */
    size_t nroots, roots_cap;
    size_t phase[2];     /* where the type objects, then the objects held elsewhere, begin */
    uint32_t *ridx;      /* inner rank -> reverse postorder number (0: not reached) */
    uint32_t *rslot;     /* reverse postorder number -> slot (freed after the dominators) */
    uint8_t *pc;         /* by inner rank: predecessors reached (saturated: 1 or more matters) */
    uint32_t *pf;        /* by inner rank: the first predecessor's inner rank */
    struct vec extra;    /* (predecessor, object) inner ranks past the first */
    uint32_t *idom;      /* reverse postorder number -> its immediate dominator's (0: none) */
    uint64_t *ret;       /* reverse postorder number -> retained bytes */
    uint8_t *reached;    /* leaves a root reaches, a bit per rank */
    uint32_t *tidx;      /* reverse postorder number -> type index (while building) */
    struct tstat *tstats; /* per type index */
    size_t ntstats;
    uint64_t *top;       /* the objects retaining most: (retained, slot), most first */
    size_t ntop;
    uint64_t n;          /* inner objects reached */
    uint64_t reached_nodes, reached_bytes;
};

/* the k largest (retained, address or slot) pairs: a min-heap whose root is the worst kept;
 * ties go to the lower address */
struct topk {
    uint64_t *v;
    size_t n, k;
    uint32_t want_type; /* NONE32: any */
};
int heap_better(uint64_t ra, uint64_t aa, uint64_t rb, uint64_t ab);
void topk_add(struct topk *t, uint64_t ret, uint64_t addr);

/* per type index, over the objects a root reaches */
struct tstat {
    uint64_t count, own, retained; /* retained: of the instances no other one dominates */
    uint64_t best, best_slot;      /* the instance retaining most (ties: the lower address) */
};

/* called per leaf a root reaches: its slot, rank and immediate dominator (0: a root) */
typedef int (*leaf_fn)(struct gc_heap *h, void *ctx, uint64_t slot, uint64_t rank, uint32_t idom);

int graph_succ(struct gc_heap *h, uint64_t slot, uint64_t *addr);
int graph_leaves(struct gc_heap *h, leaf_fn fn, void *ctx);
uint32_t graph_nca(const struct graph *g, uint32_t a, uint32_t b);
int graph_size(struct gc_heap *h, uint64_t slot, uint64_t *size, uint32_t *type_index);
static inline int graph_bit(const uint8_t *b, uint64_t rank) { return (b[rank >> 3] >> (rank & 7)) & 1; }
static inline void graph_setbit(uint8_t *b, uint64_t rank) { b[rank >> 3] |= (uint8_t)(1u << (rank & 7)); }
static inline int graph_isroot(const struct graph *g, uint64_t rank) { return graph_bit(g->rootmark, rank); }
/* the reverse postorder numbers of the given ones' slots (NONE32 if none) */
int graph_slots_of(struct gc_heap *h, const uint32_t *rs, size_t n, uint32_t *slots);
int graph_leaves_sized(struct gc_heap *h, leaf_fn fn, void *ctx, int sized);
/* gc_heapsum.c: what the graph request leaves ready for the questions */
#define GRAPH_TOP 1024
int graph_note_leaf(struct gc_heap *h, uint64_t slot, uint64_t size, uint32_t ti);
int graph_summaries(struct gc_heap *h);

#endif
