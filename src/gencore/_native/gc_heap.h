/* The heap walker over a mapped core (reader side; no Python API).
 *
 * gencore.analysis.heapnative drives it through gc_heap_op(): every request and answer is an
 * array of little-endian 64-bit words. What a type's instances hold and weigh is decided in
 * Python (gencore.analysis.heaptypes.TypeModel) and passed in as type records; this code walks
 * the objects, sizes them and answers the graph questions (gencore.analysis.heapgraph defines
 * them; both implementations give identical results). */
#ifndef GC_HEAP_H
#define GC_HEAP_H

#include <stddef.h>
#include <stdint.h>

/* Results of gc_heap_op (negative: failed; gc_heap_error says why). */
enum {
    GC_HEAP_OK = 0,
    GC_HEAP_EFORMAT = -1, /* the core is damaged: CoreFormatError */
    GC_HEAP_ENOMEM = -2,
    GC_HEAP_EINVAL = -3, /* a bad request */
    GC_HEAP_EIO = -4,    /* mapping the file failed */
    GC_HEAP_ELIMIT = -5, /* beyond what this engine handles (cores over 64 GiB) */
};

/* Requests (gencore.analysis.heapnative mirrors the numbers). */
enum {
    GC_HOP_TYPES = 1,     /* add type records */
    GC_HOP_PRESCAN = 2,   /* types of the objects on the GC lists */
    GC_HOP_CENSUS = 3,    /* walk; answers [0] done or [1, type addresses it needs] */
    GC_HOP_RESULT = 4,    /* the census's figures */
    GC_HOP_GRAPH = 5,     /* roots, dominators and retained sizes */
    GC_HOP_TYPERET = 6,   /* retained bytes per type */
    GC_HOP_TOP = 7,       /* the objects retaining most */
    GC_HOP_PATHS = 8,     /* shortest paths from the roots */
    GC_HOP_SUSPECTS = 9,  /* leak suspects */
    GC_HOP_RETAINED = 10, /* retained bytes of given objects */
    GC_HOP_DUPS = 11,     /* str and bytes values held more than once */
    GC_HOP_ROOTS = 12,    /* the roots in order */
    GC_HOP_REFERRERS = 13, /* references to objects of given types, per referring type */
};

/* Layout fields (the order of heapnative.LAYOUT). -1: not known. */
enum {
    HL_MINOR, HL_TUPLE_ITEMS, HL_TP_FLAGS, HL_HT_CACHED_KEYS,
    HL_STR_STATE, HL_STR_ASCII, HL_STR_COMPACT, HL_STR_UTF8_LEN, HL_STR_UTF8, HL_STR_WSTR,
    HL_STR_WSTR_LEN,
    HL_INT_MIN_DIGIT, HL_INT_TAG, HL_STATIC_TYPE, HL_HEAP_TYPE, HL_OPCACHE_ITEM,
    HL_C39_NLOCALS, HL_C39_STACKSIZE, HL_C39_CODE, HL_C39_FREEVARS, HL_C39_CELLVARS,
    HL_C39_CELL2ARG, HL_C39_EXTRA, HL_C39_OPCACHE, HL_C39_OPCACHE_SIZE,
    HL_F39_CODE, HL_F39_VALUESTACK, HL_F39_STACKTOP, HL_F39_STACKDEPTH, HL_F39_LOCALSPLUS,
    HL_IF_CODE, HL_IF_FUNC, HL_IF_LOCALS, HL_IF_FRAME_OBJ, HL_IF_STACKTOP, HL_IF_STACKPOINTER,
    HL_IF_LOCALSPLUS, HL_CODE_SLOT0, HL_CODE_SLOT1, HL_CODE_EXTRA, HL_FRAME_DATA,
    HL_FRAME_STATE,
    HL_ARR_ALLOCATED, HL_ARR_DESCR, HL_ARR_ITEMSIZE,
    HL_DQ_LEFTBLOCK, HL_DQ_LEFTINDEX, HL_DQ_BLOCK, HL_DQ_BLOCKLEN,
    HL_OD_FAST_NODES_SIZE, HL_OD_FIRST, HL_OD_NODE,
    HL_STR_TYPE, HL_BYTES_TYPE, HL_BYTES_BASIC, HL_FRAME_CLEARED,
    HL_COUNT
};

/* Walk kinds and size formulas (gencore.analysis.heaptypes W_* and S_*). */
enum { W_NONE, W_LIST, W_TUPLE, W_DICT, W_SET, W_DEQUE, W_FRAME39, W_FRAME, W_GEN, W_TYPE };
enum {
    S_UNKNOWN, S_DEFAULT, S_INT, S_STR, S_BYTEARRAY, S_LIST, S_DICT, S_ODICT, S_SET, S_CODE,
    S_TYPE, S_FRAME, S_GEN, S_ARRAY, S_DEQUE
};

struct gc_htype {
    uint64_t addr, basic, item, flags, param, cached_keys;
    int64_t dictoffset;
    uint32_t pre, walk, sizer, frame_off, index;
    uint8_t gc, leaf, valid;
    uint32_t nrefs, nheap, nsoft; /* offsets: refs, then heap-type refs, then soft */
    uint32_t *offs;
    uint64_t fixed; /* size of every instance when it does not depend on the object */
};

struct gc_heap;

/* Map the core (fd is only used here) and take the configuration words:
 * [nseg, (start, end, file offset) * nseg, nomit, (start, end) * nomit, nheads, heads...,
 *  HL_COUNT layout words]. Returns NULL and sets *err on failure. */
struct gc_heap *gc_heap_open(int fd, const uint64_t *cfg, size_t nwords, int *err);
void gc_heap_close(struct gc_heap *h);
/* Run one request; on success *out is a malloc'ed array of *nout words (free it). */
int gc_heap_op(struct gc_heap *h, int op, const uint64_t *in, size_t nin, uint64_t **out,
               size_t *nout);
const char *gc_heap_error(const struct gc_heap *h);

#endif
