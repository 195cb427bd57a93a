/* Internals shared by the heap walker's files (gc_heap*.c). */
#ifndef GC_HEAPINT_H
#define GC_HEAPINT_H

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "gc_heap.h"

#define MAX_ITEMS (1ULL << 28) /* more items than any container holds: a misread count */
#define TAG_MASK (~(uint64_t)7)
#define NONE32 UINT32_MAX

struct gc_seg {
    uint64_t start, end, off; /* end: start + the bytes the file holds */
};

/* A growable array of 64-bit words. */
struct vec {
    uint64_t *v;
    size_t n, cap;
};

/* A rank directory over a bitmap of one bit per 16 bytes of the file. */
struct bits {
    uint64_t *w;
    uint32_t *rank; /* set bits before each word (built by bits_rank) */
    size_t nwords;
    uint64_t count;
};

struct census {
    size_t head;     /* the list being walked */
    uint64_t node;   /* the next node of that list */
    uint64_t steps;  /* nodes taken from that list */
    uint64_t link;   /* 0: forwards (_gc_next); 8: backwards (_gc_prev), past a cap's gap */
    uint64_t cut;    /* lists that ran into memory a max_size cap left out */
    int started, lists_done, begun;
    int cutmode, roots_pushed; /* lists cut by a cap: the roots' objects, tracked ones too */
    struct vec stack, deferred, pending;
    uint64_t tracked, unreadable, omitted, nodes;
    int64_t budget;
    uint64_t *top; /* largest objects: a min-heap of (size, address) pairs */
    size_t ntop, want;
};

struct graph;

#define SEG_CACHE 1024
struct seg_cache {
    uint64_t tag; /* address >> 20, plus 1 (0: empty) */
    size_t seg;
};

struct gc_heap {
    const uint8_t *map;
    size_t size;
    struct gc_seg *segs;
    size_t nseg, last;
    size_t *byoff; /* segments in file order */
    struct seg_cache cache[SEG_CACHE];
    uint64_t miss; /* the last address the core did not hold */
    size_t last_off;
    uint64_t dumped;
    uint64_t *omit; /* (start, end) pairs, sorted */
    size_t nomit;
    uint64_t *heads;
    size_t nheads;
    int64_t L[HL_COUNT];
    /* types: open addressing, address -> record */
    struct gc_htype **tab;
    size_t tabcap, ntypes;
    uint32_t maxindex;
    uint64_t *tcount; /* per type index: count, bytes, unsized */
    size_t tcount_n;
    struct bits seen, inner, odd; /* objects, those with references, at 8 mod 16 */
    struct census c;
    struct graph *g;
    struct vec kids; /* scratch: one object's references */
    char err[256];
};

/* gc_heapcore.c */
void *heap_calloc(size_t n, size_t size); /* free with heap_free */
void heap_free(void *p);
void *heap_grow(void *p, size_t old_n, size_t new_n, size_t size); /* a heap_calloc'ed array */
int heap_fail(struct gc_heap *h, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const uint8_t *heap_at(struct gc_heap *h, uint64_t addr, uint64_t n);
int64_t heap_fileoff(struct gc_heap *h, uint64_t addr, uint64_t n);
int heap_u64(struct gc_heap *h, uint64_t addr, uint64_t *out);
int heap_u32(struct gc_heap *h, uint64_t addr, uint32_t *out);
int heap_u8(struct gc_heap *h, uint64_t addr, uint8_t *out);
int heap_omitted(const struct gc_heap *h, uint64_t addr);
struct gc_htype *heap_type(const struct gc_heap *h, uint64_t addr);
int vec_push(struct vec *v, uint64_t x);
void vec_free(struct vec *v);
int bits_init(struct bits *b, size_t filesize);
void bits_free(struct bits *b);
int bits_rank(struct bits *b);
/* set bits in a word (portable: no popcnt instruction is assumed) */
static inline uint64_t pop64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (x * 0x0101010101010101ULL) >> 56;
}
/* rank of a set bit */
static inline uint64_t bits_index(const struct bits *b, uint64_t slot)
{
    uint64_t word = b->w[slot >> 6] & ((1ULL << (slot & 63)) - 1);
    return b->rank[slot >> 6] + pop64(word);
}
int64_t bits_next(const struct bits *b, uint64_t from);  /* next set slot at or after */
static inline int bits_get(const struct bits *b, uint64_t slot)
{
    return (int)((b->w[slot >> 6] >> (slot & 63)) & 1);
}
static inline void bits_set(struct bits *b, uint64_t slot)
{
    b->w[slot >> 6] |= 1ULL << (slot & 63);
}
/* a node's slot: its file offset / 16 (-1 if the core does not hold its header) */
static inline int64_t heap_slot(struct gc_heap *h, uint64_t addr)
{
    int64_t fo = heap_fileoff(h, addr, 24);
    return fo < 0 ? -1 : fo >> 4;
}
uint64_t heap_slot_addr(struct gc_heap *h, uint64_t slot);
/* the object in a slot (its address) */
static inline uint64_t heap_node_addr(struct gc_heap *h, uint64_t slot)
{
    return heap_slot_addr(h, slot) + (bits_get(&h->odd, slot) ? 8 : 0);
}
/* whether addr is an object the census found; its slot */
static inline int heap_is_node(struct gc_heap *h, uint64_t addr, uint64_t *slot)
{
    if (addr & 7) return 0;
    int64_t s = heap_slot(h, addr);
    if (s < 0 || !bits_get(&h->seen, (uint64_t)s)) return 0;
    if (bits_get(&h->odd, (uint64_t)s) != (int)((addr >> 3) & 1)) return 0;
    *slot = (uint64_t)s;
    return 1;
}

/* gc_heapsize.c, gc_heapwalk.c */
int heap_referents(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                   int soft, struct vec *out);
int heap_size(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
              uint64_t *size);
int heap_header(struct gc_heap *h, uint64_t obj, uint64_t *rc, uint64_t *tp, uint64_t *ob_size);
int heap_op_prescan(struct gc_heap *h, struct vec *out);
int heap_op_census(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out);
int heap_op_result(struct gc_heap *h, struct vec *out);
int heap_dict_refs(struct gc_heap *h, uint64_t d, struct vec *out);
int heap_dict_keys(struct gc_heap *h, uint64_t keys, uint64_t *entries, uint64_t *esize,
                   uint64_t *nentries, uint64_t *nbytes);

/* gc_heapgraph.c / gc_heapquery.c */
int heap_op_graph(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out);
int heap_op_query(struct gc_heap *h, int op, const uint64_t *in, size_t nin, struct vec *out);
void heap_graph_free(struct gc_heap *h);

/* gc_heapdup.c */
int heap_op_dups(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out);

#endif
