/* Sizes of objects in a mapped core, as sys.getsizeof gives them, and dict tables (no Python
 * API): the formulas of gencore/analysis/heapwalk.py, with the same checks. */
#include <stdlib.h>

#include "gc_heapint.h"

#define L(k) (h->L[k])
#define RD64(a, v)                                                                          \
    do {                                                                                    \
        if (heap_u64(h, (a), &(v))) return -1;                                              \
    } while (0)
#define RD32(a, v)                                                                          \
    do {                                                                                    \
        if (heap_u32(h, (a), &(v))) return -1;                                              \
    } while (0)
#define ADD(x, y)                                                                           \
    do {                                                                                    \
        if (__builtin_add_overflow((x), (y), &(x))) return -1;                              \
    } while (0)

int heap_header(struct gc_heap *h, uint64_t obj, uint64_t *rc, uint64_t *tp, uint64_t *ob_size)
{
    const uint8_t *p = heap_at(h, obj, 24);
    if (!p) return -1;
    memcpy(rc, p, 8);
    memcpy(tp, p + 8, 8);
    memcpy(ob_size, p + 16, 8);
    return 0;
}

/* -- dicts ---------------------------------------------------------------------------------- */

int heap_dict_keys(struct gc_heap *h, uint64_t keys, uint64_t *entries, uint64_t *esize,
                   uint64_t *nentries, uint64_t *nbytes)
{
    int64_t n;
    if (L(HL_MINOR) >= 11) {
        const uint8_t *p = heap_at(h, keys, 32);
        if (!p) return -1;
        unsigned log2_size = p[8], log2_index = p[9], kind = p[10];
        if (log2_size > 40 || log2_index > 43) return -1;
        uint64_t usable = ((1ULL << log2_size) << 1) / 3;
        memcpy(&n, p + 24, 8);
        *esize = kind == 0 ? 24 : 16;
        *entries = keys + 32 + (1ULL << log2_index);
        *nbytes = 32 + (1ULL << log2_index) + usable * *esize;
    } else {
        const uint8_t *p = heap_at(h, keys + 8, 32);
        if (!p) return -1;
        int64_t size;
        memcpy(&size, p, 8);
        memcpy(&n, p + 24, 8);
        if (size <= 0 || (uint64_t)size > MAX_ITEMS) return -1;
        uint64_t s = (uint64_t)size;
        uint64_t ib = s <= 0xFF ? 1 : s <= 0xFFFF ? 2 : s <= 0xFFFFFFFFULL ? 4 : 8;
        *esize = 24;
        *entries = keys + 40 + s * ib;
        *nbytes = 40 + s * ib + 24 * ((s << 1) / 3);
    }
    if (n < 0 || (uint64_t)n > MAX_ITEMS) return -1;
    *nentries = (uint64_t)n;
    return 0;
}

/* The references of a dict: key and value per entry, or only the values of a split table
 * (its keys belong to the shared keys object). */
int heap_dict_refs(struct gc_heap *h, uint64_t d, struct vec *out)
{
    uint64_t keys, values, entries, esize, n, nbytes;
    RD64(d + 32, keys);
    RD64(d + 40, values);
    if (heap_dict_keys(h, keys, &entries, &esize, &n, &nbytes)) return -1;
    const uint8_t *w = heap_at(h, entries, n * esize);
    if (!w && n) return -1;
    if (values) {
        uint64_t base = values;
        if (L(HL_MINOR) >= 13) {
            uint8_t size;
            if (heap_u8(h, values + 1, &size)) return -1;
            if (size < n) n = size;
            base = values + 8;
        }
        const uint8_t *vs = heap_at(h, base, n * 8);
        if (!vs && n) return -1;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, vs + 8 * i, 8);
            if (v && vec_push(out, v)) return GC_HEAP_ENOMEM;
        }
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t k, v;
        memcpy(&k, w + esize * i + esize - 16, 8);
        memcpy(&v, w + esize * i + esize - 8, 8);
        if (k && v && (vec_push(out, k) || vec_push(out, v))) return GC_HEAP_ENOMEM;
    }
    return 0;
}

static int dict_bytes(struct gc_heap *h, uint64_t d, uint64_t basic, uint64_t *size)
{
    uint64_t keys, values, entries, esize, n, nbytes, refcnt;
    RD64(d + 32, keys);
    RD64(d + 40, values);
    if (heap_dict_keys(h, keys, &entries, &esize, &n, &nbytes)) return -1;
    *size = basic;
    RD64(keys, refcnt);
    if (refcnt == 1) ADD(*size, nbytes);
    if (values) {
        if (L(HL_MINOR) >= 11) { /* the shared keys' usable size, values embedded or not */
            uint64_t usable, extra;
            RD64(keys + 16, usable);
            if (__builtin_add_overflow(n, usable, &extra) || extra > (UINT64_MAX >> 3)) return -1;
            ADD(*size, 8 * extra);
        } else {
            uint64_t dk_size;
            RD64(keys + 8, dk_size);
            if (dk_size > (UINT64_MAX >> 4)) return -1;
            ADD(*size, 8 * ((dk_size << 1) / 3));
        }
    }
    return 0;
}

/* -- sizes ---------------------------------------------------------------------------------- */

static int code_slots(struct gc_heap *h, uint64_t code, uint64_t *n)
{
    *n = 0;
    for (int k = HL_CODE_SLOT0; k <= HL_CODE_SLOT1; k++) {
        if (L(k) < 0) continue;
        uint32_t v;
        RD32(code + (uint64_t)L(k), v);
        *n += v;
    }
    return *n > MAX_ITEMS ? -1 : 0;
}

static int size_str(struct gc_heap *h, uint64_t obj, uint64_t *out)
{
    uint32_t state;
    uint64_t length, data, size;
    RD32(obj + (uint64_t)L(HL_STR_STATE), state);
    RD64(obj + 16, length);
    unsigned kind = (state >> 2) & 7, compact = state & 32, ascii = state & 64;
    if ((kind != 1 && kind != 2 && kind != 4) || length > MAX_ITEMS) return -1;
    if (compact && ascii) {
        size = (uint64_t)L(HL_STR_ASCII) + length + 1, data = obj + (uint64_t)L(HL_STR_ASCII);
    } else if (compact) {
        size = (uint64_t)L(HL_STR_COMPACT) + (length + 1) * kind;
        data = obj + (uint64_t)L(HL_STR_COMPACT);
    } else {
        size = (uint64_t)L(HL_STR_COMPACT) + 8;
        RD64(obj + (uint64_t)L(HL_STR_COMPACT), data);
        if (data) size += (length + 1) * kind;
    }
    if (L(HL_STR_WSTR) >= 0) {
        uint64_t wstr, wlen;
        RD64(obj + (uint64_t)L(HL_STR_WSTR), wstr);
        if (wstr && (!(state & 128) || wstr != data)) {
            if (compact && ascii)
                wlen = length;
            else
                RD64(obj + (uint64_t)L(HL_STR_WSTR_LEN), wlen);
            if (wlen > (UINT64_MAX >> 3)) return -1;
            ADD(size, (wlen + 1) * 4);
        }
    }
    if (!(compact && ascii) && L(HL_STR_UTF8) >= 0) {
        uint64_t utf8, ulen;
        RD64(obj + (uint64_t)L(HL_STR_UTF8), utf8);
        if (utf8 && utf8 != data) {
            RD64(obj + (uint64_t)L(HL_STR_UTF8_LEN), ulen);
            ADD(size, ulen);
            ADD(size, 1);
        }
    }
    *out = size;
    return 0;
}

static int size_code(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                     uint64_t *out)
{
    uint64_t size, extra, v;
    if (L(HL_MINOR) >= 11) {
        if (ob_size > MAX_ITEMS) return -1;
        size = (t->basic + t->item * ob_size + 7) / 8 * 8;
        RD64(obj + (uint64_t)L(HL_CODE_EXTRA), extra);
    } else {
        uint64_t cell2arg, cellvars, opcache;
        size = t->basic;
        RD64(obj + (uint64_t)L(HL_C39_CELL2ARG), cell2arg);
        RD64(obj + (uint64_t)L(HL_C39_CELLVARS), cellvars);
        if (cell2arg && cellvars) {
            RD64(cellvars + 16, v);
            if (v > MAX_ITEMS) return -1;
            size += 8 * v;
        }
        RD64(obj + (uint64_t)L(HL_C39_OPCACHE), opcache);
        if (opcache) {
            uint64_t co_code;
            uint8_t n;
            RD64(obj + (uint64_t)L(HL_C39_CODE), co_code);
            RD64(co_code + 16, v);
            ADD(size, v / 2);
            if (heap_u8(h, obj + (uint64_t)L(HL_C39_OPCACHE_SIZE), &n)) return -1;
            size += (uint64_t)L(HL_OPCACHE_ITEM) * n;
        }
        RD64(obj + (uint64_t)L(HL_C39_EXTRA), extra);
    }
    if (extra) {
        RD64(extra, v);
        if (v > (UINT64_MAX >> 4)) return -1;
        ADD(size, 8 + 8 * v);
    }
    *out = size + t->pre;
    return 0;
}

static int size_frame(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t *out)
{
    uint64_t code, slots;
    if (L(HL_MINOR) >= 11) {
        uint64_t iframe;
        RD64(obj + 24, iframe);
        RD64(iframe + (uint64_t)L(HL_IF_CODE), code);
        if (code_slots(h, code & TAG_MASK, &slots)) return -1;
        *out = t->param + 8 * slots;
        return 0;
    }
    uint32_t nlocals, stacksize;
    uint64_t cells, frees, ncells, nfrees;
    RD64(obj + (uint64_t)L(HL_F39_CODE), code);
    RD32(code + (uint64_t)L(HL_C39_NLOCALS), nlocals);
    RD32(code + (uint64_t)L(HL_C39_STACKSIZE), stacksize);
    RD64(code + (uint64_t)L(HL_C39_CELLVARS), cells);
    RD64(code + (uint64_t)L(HL_C39_FREEVARS), frees);
    RD64(cells + 16, ncells);
    RD64(frees + 16, nfrees);
    if (ncells > MAX_ITEMS || nfrees > MAX_ITEMS) return -1;
    uint64_t extras = (uint64_t)nlocals + stacksize + ncells + nfrees;
    *out = t->basic + 8 * (extras - 1) + t->pre;
    return 0;
}

static int size_more(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                     uint64_t *out)
{
    uint64_t v, w;
    switch (t->sizer) {
    case S_CODE:
        return size_code(h, obj, t, ob_size, out);
    case S_TYPE:
        RD64(obj + (uint64_t)L(HL_TP_FLAGS), v);
        if (v & (1u << 9)) {
            uint64_t keys, entries, esize, n, nbytes = 0;
            RD64(obj + (uint64_t)L(HL_HT_CACHED_KEYS), keys);
            if (keys && heap_dict_keys(h, keys, &entries, &esize, &n, &nbytes)) return -1;
            *out = (uint64_t)L(HL_HEAP_TYPE) + nbytes + t->pre;
        } else {
            *out = (uint64_t)L(HL_STATIC_TYPE);
        }
        return 0;
    case S_FRAME:
        return size_frame(h, obj, t, out);
    case S_GEN:
        RD64(obj + t->frame_off + (uint64_t)L(HL_IF_CODE), v);
        if (code_slots(h, v & TAG_MASK, &w)) return -1;
        *out = t->param + 8 * w;
        return 0;
    case S_ARRAY: {
        uint64_t descr;
        uint32_t itemsize;
        RD64(obj + (uint64_t)L(HL_ARR_DESCR), descr);
        RD32(descr + (uint64_t)L(HL_ARR_ITEMSIZE), itemsize);
        RD64(obj + (uint64_t)L(HL_ARR_ALLOCATED), v);
        if (__builtin_mul_overflow(v, (uint64_t)itemsize, &w)) return -1;
        *out = t->basic;
        ADD(*out, w);
        *out += t->pre;
        return 0;
    }
    case S_DEQUE:
        RD64(obj + (uint64_t)L(HL_DQ_LEFTINDEX), v);
        if (v > MAX_ITEMS || ob_size > MAX_ITEMS) return -1;
        w = (v + ob_size + (uint64_t)L(HL_DQ_BLOCKLEN)) / (uint64_t)L(HL_DQ_BLOCKLEN);
        *out = t->basic + w * (uint64_t)L(HL_DQ_BLOCK) + t->pre;
        return 0;
    }
    return -1;
}

static int size_any(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                    uint64_t *out)
{
    uint64_t v, w;
    switch (t->sizer) {
    case S_DEFAULT: {
        int64_t signed_size = (int64_t)ob_size;
        if (t->item && (signed_size < 0 || (uint64_t)signed_size > MAX_ITEMS)) return -1;
        *out = t->basic + (t->item ? t->item * ob_size : 0) + t->pre;
        return 0;
    }
    case S_INT:
        v = L(HL_INT_TAG) > 0 ? ob_size >> 3 : ((int64_t)ob_size < 0 ? -ob_size : ob_size);
        if (L(HL_INT_MIN_DIGIT) > 0 && v < 1) v = 1;
        if (v > MAX_ITEMS) return -1;
        *out = t->param + t->item * v + t->pre;
        return 0;
    case S_STR:
        if (size_str(h, obj, &v)) return -1;
        *out = v + t->pre;
        return 0;
    case S_BYTEARRAY:
    case S_LIST:
        RD64(obj + (t->sizer == S_LIST ? 32 : 24), v);
        if (t->sizer == S_LIST && __builtin_mul_overflow(v, 8, &v)) return -1;
        *out = t->basic;
        ADD(*out, v);
        if (t->sizer == S_BYTEARRAY && v) ADD(*out, t->param); /* 3.15: a bytes header */
        ADD(*out, t->pre);
        return 0;
    case S_DICT:
    case S_ODICT:
        if (dict_bytes(h, obj, t->basic, out)) return -1;
        if (t->sizer == S_ODICT) {
            uint64_t first, used;
            RD64(obj + (uint64_t)L(HL_OD_FAST_NODES_SIZE), v);
            if (__builtin_mul_overflow(v, 8, &v)) return -1;
            ADD(*out, v);
            RD64(obj + (uint64_t)L(HL_OD_FIRST), first);
            if (first) {
                RD64(obj + 16, used);
                if (__builtin_mul_overflow(used, (uint64_t)L(HL_OD_NODE), &w)) return -1;
                ADD(*out, w);
            }
        }
        ADD(*out, t->pre);
        return 0;
    case S_SET:
        RD64(obj + 32, v);
        RD64(obj + 40, w);
        if (v > (UINT64_MAX >> 5)) return -1;
        *out = t->basic + (w != obj + 64 ? 16 * (v + 1) : 0) + t->pre;
        return 0;
    }
    return size_more(h, obj, t, ob_size, out);
}

/* sys.getsizeof(obj); -1 when it cannot be known */
int heap_size(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
              uint64_t *size)
{
    if (t->fixed) {
        *size = t->fixed;
        return 0;
    }
    if (t->sizer == S_UNKNOWN || size_any(h, obj, t, ob_size, size)) return -1;
    return (*size < 16 || *size > h->dumped) ? -1 : 0;
}
