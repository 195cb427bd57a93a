/* The census walk and the references of objects in a mapped core (no Python API).
 * Step for step the walk of gencore/analysis/heapwalk.py: same order, same checks, same
 * counts; the tests compare both on every core. */
#include <stdlib.h>

#include "gc_heapint.h"

#define L(k) ((uint64_t)h->L[k])
#define RD64(a, v)                                                                          \
    do {                                                                                    \
        if (heap_u64(h, (a), &(v))) return -1;                                              \
    } while (0)
#define PUSH(x)                                                                             \
    do {                                                                                    \
        if (vec_push(out, (x))) return GC_HEAP_ENOMEM;                                      \
    } while (0)

/* n words at addr, masked (3.14's stack references keep flags in their low bits) */
static int words(struct gc_heap *h, uint64_t addr, uint64_t n, uint64_t mask, struct vec *out)
{
    if (!n) return 0;
    if (n > MAX_ITEMS) return -1;
    const uint8_t *p = heap_at(h, addr, 8 * n);
    if (!p) return -1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v;
        memcpy(&v, p + 8 * i, 8);
        PUSH(v & mask);
    }
    return 0;
}

static int code_slots(struct gc_heap *h, uint64_t code, uint64_t *n)
{
    *n = 0;
    for (int k = HL_CODE_SLOT0; k <= HL_CODE_SLOT1; k++) {
        if (h->L[k] < 0) continue;
        uint32_t v;
        if (heap_u32(h, code + L(k), &v)) return -1;
        *n += v;
    }
    return *n > MAX_ITEMS ? -1 : 0;
}

/* 3.11+: frame object, locals, function, code, then locals and stack to the top */
static int iframe_refs(struct gc_heap *h, uint64_t f, struct vec *out)
{
    uint64_t frame_obj, locals, func, code, slots;
    int64_t n;
    RD64(f + L(HL_IF_FRAME_OBJ), frame_obj);
    RD64(f + L(HL_IF_LOCALS), locals);
    RD64(f + L(HL_IF_CODE), code);
    RD64(f + L(HL_IF_FUNC), func);
    PUSH(frame_obj);
    PUSH(locals);
    PUSH(func & TAG_MASK);
    PUSH(code & TAG_MASK);
    uint64_t base = f + L(HL_IF_LOCALSPLUS);
    if (h->L[HL_IF_STACKPOINTER] >= 0) {
        uint64_t top;
        RD64(f + L(HL_IF_STACKPOINTER), top);
        n = top >= base ? (int64_t)((top - base) / 8) : -1;
    } else {
        uint32_t v;
        if (heap_u32(h, f + L(HL_IF_STACKTOP), &v)) return -1;
        n = (int32_t)v;
    }
    if (code_slots(h, code & TAG_MASK, &slots)) return -1;
    if (n < 0 || (uint64_t)n > slots) return -1;
    return words(h, base, (uint64_t)n, TAG_MASK, out);
}

static int frame39_refs(struct gc_heap *h, uint64_t obj, struct vec *out)
{
    uint64_t code, cells, frees, ncells, nfrees, stack, depth;
    uint32_t nlocals, stacksize;
    RD64(obj + L(HL_F39_CODE), code);
    if (heap_u32(h, code + L(HL_C39_NLOCALS), &nlocals)) return -1;
    RD64(code + L(HL_C39_CELLVARS), cells);
    RD64(cells + 16, ncells);
    RD64(code + L(HL_C39_FREEVARS), frees);
    RD64(frees + 16, nfrees);
    if (ncells > MAX_ITEMS || nfrees > MAX_ITEMS) return -1;
    if (words(h, obj + L(HL_F39_LOCALSPLUS), nlocals + ncells + nfrees, ~0ULL, out)) return -1;
    RD64(obj + L(HL_F39_VALUESTACK), stack);
    if (h->L[HL_F39_STACKTOP] >= 0) {
        uint64_t top;
        RD64(obj + L(HL_F39_STACKTOP), top);
        if (top && top < stack) return -1;
        depth = top ? (top - stack) / 8 : 0;
    } else {
        uint32_t d; /* -1 while the frame runs: its stack is not in the frame then */
        if (heap_u32(h, obj + L(HL_F39_STACKDEPTH), &d)) return -1;
        depth = (int32_t)d < 0 ? 0 : d;
    }
    if (heap_u32(h, code + L(HL_C39_STACKSIZE), &stacksize)) return -1;
    if (depth > stacksize) return -1;
    return words(h, stack, depth, ~0ULL, out);
}

static int deque_refs(struct gc_heap *h, uint64_t obj, uint64_t n, struct vec *out)
{
    uint64_t block, i, v, len = L(HL_DQ_BLOCKLEN);
    if (n > MAX_ITEMS) return -1;
    RD64(obj + L(HL_DQ_LEFTBLOCK), block);
    RD64(obj + L(HL_DQ_LEFTINDEX), i);
    for (uint64_t k = 0; k < n; k++) {
        if (i == len) {
            RD64(block + 8 + 8 * len, block);
            i = 0;
        }
        RD64(block + 8 + 8 * i, v);
        PUSH(v);
        i++;
    }
    return 0;
}

static int managed_refs(struct gc_heap *h, uint64_t obj, const struct gc_htype *t,
                        struct vec *out)
{
    uint64_t values, dict, entries, esize, n, nbytes;
    int minor = (int)h->L[HL_MINOR];
    if (minor >= 13) {
        RD64(obj - 24, dict);
        PUSH(dict);
        if (t->flags & (1u << 2)) {
            const uint8_t *hdr = heap_at(h, obj + t->basic, 4);
            if (!hdr) return -1;
            if (hdr[3]) return words(h, obj + t->basic + 8, hdr[1], ~0ULL, out);
        }
        return 0;
    }
    if (minor == 12) {
        RD64(obj - 24, values);
        if (!(values & 1)) {
            PUSH(values);
            return 0;
        }
        values += 1; /* stored as the address minus one */
    } else {
        RD64(obj - 32, values);
        RD64(obj - 24, dict);
        if (dict || !values) {
            PUSH(dict);
            return 0;
        }
    }
    if (!values || !t->cached_keys) return 0;
    if (heap_dict_keys(h, t->cached_keys, &entries, &esize, &n, &nbytes)) return -1;
    return words(h, values, n, ~0ULL, out);
}

static int kind_refs(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                     struct vec *out)
{
    uint64_t v, w;
    switch (t->walk) {
    case W_LIST:
        RD64(obj + 24, v);
        return words(h, v, ob_size, ~0ULL, out);
    case W_TUPLE:
        return words(h, obj + L(HL_TUPLE_ITEMS), ob_size, ~0ULL, out);
    case W_DICT:
        return heap_dict_refs(h, obj, out);
    case W_SET: {
        RD64(obj + 32, v);
        RD64(obj + 40, w);
        if (v >= MAX_ITEMS || 2 * (v + 1) > MAX_ITEMS) return -1;
        const uint8_t *p = heap_at(h, w, 16 * (v + 1));
        if (!p) return -1;
        for (uint64_t i = 0; i <= v; i++) {
            uint64_t key, hash;
            memcpy(&key, p + 16 * i, 8);
            memcpy(&hash, p + 16 * i + 8, 8);
            if (key && hash != UINT64_MAX) PUSH(key);
        }
        return 0;
    }
    case W_DEQUE:
        return deque_refs(h, obj, ob_size, out);
    case W_FRAME39:
        return frame39_refs(h, obj, out);
    case W_FRAME:
        RD64(obj + 24, v);
        if (v != obj + L(HL_FRAME_DATA)) return 0; /* a thread's or a generator's frame */
        return iframe_refs(h, v, out);
    case W_GEN: {
        uint8_t state;
        if (heap_u8(h, obj + L(HL_FRAME_STATE), &state)) return -1;
        /* finished: its frame is cleared (FRAME_CLEARED: 4 up to 3.14, 5 in 3.15) */
        if (state >= (uint8_t)h->L[HL_FRAME_CLEARED] && state < 128) return 0;
        return iframe_refs(h, obj + t->frame_off, out);
    }
    }
    return 0;
}

/* The references out of obj in the walkers' one order (heapwalk.Walker.referents); -1 if
 * any of it is not in the core (out then holds a part: callers drop it). */
int heap_referents(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size,
                   int soft, struct vec *out)
{
    uint64_t v;
    out->n = 0;
    for (uint32_t i = 0; i < t->nrefs; i++) {
        RD64(obj + t->offs[i], v);
        if (v) PUSH(v);
    }
    if (t->walk == W_TYPE && t->nheap) {
        RD64(obj + L(HL_TP_FLAGS), v);
        if (v & (1u << 9)) {
            for (uint32_t i = 0; i < t->nheap; i++) {
                RD64(obj + t->offs[t->nrefs + i], v);
                if (v) PUSH(v);
            }
        }
    }
    if (t->dictoffset) {
        uint64_t n = (t->sizer == S_INT && h->L[HL_INT_TAG] > 0) ? 0 : ob_size;
        if ((int64_t)n < 0) n = -n;
        if (n > MAX_ITEMS) return -1;
        uint64_t at = (t->basic + n * t->item + 7) / 8 * 8 + (uint64_t)t->dictoffset;
        RD64(obj + at, v);
        if (v) PUSH(v);
    }
    if (t->flags & (1u << 4) && h->L[HL_MINOR] >= 11) {
        if (managed_refs(h, obj, t, out)) return -1;
    }
    if (kind_refs(h, obj, t, ob_size, out)) return -1;
    if (soft) {
        for (uint32_t i = 0; i < t->nsoft; i++) {
            RD64(obj + t->offs[t->nrefs + t->nheap + i], v);
            PUSH(v);
        }
    }
    size_t k = 0; /* drop the empty ones */
    for (size_t i = 0; i < out->n; i++)
        if (out->v[i]) out->v[k++] = out->v[i];
    out->n = k;
    return 0;
}

/* -- the census ----------------------------------------------------------------------------- */

static void top_keep(struct census *c, uint64_t size, uint64_t addr)
{
    /* a min-heap of (size, address) ordered by (size ascending, address descending) */
#define LESS(i, j)                                                                          \
    (c->top[2 * (i)] < c->top[2 * (j)] ||                                                   \
     (c->top[2 * (i)] == c->top[2 * (j)] && c->top[2 * (i) + 1] > c->top[2 * (j) + 1]))
    size_t i;
    if (c->ntop < c->want) {
        i = c->ntop++;
        c->top[2 * i] = size, c->top[2 * i + 1] = addr;
        while (i > 0 && LESS(i, (i - 1) / 2)) {
            size_t p = (i - 1) / 2;
            uint64_t a = c->top[2 * i], b = c->top[2 * i + 1];
            c->top[2 * i] = c->top[2 * p], c->top[2 * i + 1] = c->top[2 * p + 1];
            c->top[2 * p] = a, c->top[2 * p + 1] = b;
            i = p;
        }
        return;
    }
    if (size < c->top[0] || (size == c->top[0] && addr >= c->top[1])) return;
    c->top[0] = size, c->top[1] = addr;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->ntop && LESS(l, m)) m = l;
        if (r < c->ntop && LESS(r, m)) m = r;
        if (m == i) break;
        uint64_t a = c->top[2 * i], b = c->top[2 * i + 1];
        c->top[2 * i] = c->top[2 * m], c->top[2 * i + 1] = c->top[2 * m + 1];
        c->top[2 * m] = a, c->top[2 * m + 1] = b;
        i = m;
    }
#undef LESS
}

static int visit(struct gc_heap *h, uint64_t obj, const struct gc_htype *t, uint64_t ob_size)
{
    uint64_t slot = (uint64_t)heap_slot(h, obj), size;
    bits_set(&h->seen, slot);
    if (obj & 8) bits_set(&h->odd, slot);
    h->c.nodes++;
    uint64_t *cnt = h->tcount + 3 * t->index;
    cnt[0]++;
    if (heap_size(h, obj, t, ob_size, &size)) {
        cnt[2]++;
    } else {
        cnt[1] += size;
        if (h->c.want) top_keep(&h->c, size, obj);
    }
    if (!t->leaf) {
        bits_set(&h->inner, slot);
        if (vec_push(&h->c.stack, obj)) return GC_HEAP_ENOMEM;
    }
    return 0;
}

static int need_type(struct gc_heap *h, uint64_t tp, uint64_t obj)
{
    for (size_t i = 0; i < h->c.pending.n; i++) /* few: a handful per round */
        if (h->c.pending.v[i] == tp) return vec_push(&h->c.deferred, obj);
    if (vec_push(&h->c.pending, tp)) return GC_HEAP_ENOMEM;
    return vec_push(&h->c.deferred, obj);
}

/* an untracked object met through a reference (tracked ones are left to their list) */
static int reach(struct gc_heap *h, uint64_t c)
{
    uint64_t rc, tp, sz, next;
    if (c & 7) { /* objects are 8-byte aligned: a damaged reference */
        h->c.unreadable++;
        return 0;
    }
    int64_t slot = heap_slot(h, c);
    if (slot < 0) {
        if (heap_omitted(h, c))
            h->c.omitted++;
        else
            h->c.unreadable++;
        return 0;
    }
    if (bits_get(&h->seen, (uint64_t)slot)) return 0;
    heap_header(h, c, &rc, &tp, &sz);
    const struct gc_htype *t = heap_type(h, tp);
    if (!t) return need_type(h, tp, c);
    if (!t->valid) {
        h->c.unreadable++;
        return 0;
    }
    if (t->gc && !h->c.cutmode && !heap_u64(h, c - 16, &next) && next)
        return 0; /* on a GC list */
    return visit(h, c, t, sz);
}

static int drain(struct gc_heap *h)
{
    struct census *c = &h->c;
    while (c->stack.n) {
        uint64_t o = c->stack.v[--c->stack.n], rc, tp, sz;
        if (heap_header(h, o, &rc, &tp, &sz)) {
            c->unreadable++;
            continue;
        }
        const struct gc_htype *t = heap_type(h, tp);
        int r = heap_referents(h, o, t, sz, 1, &h->kids);
        if (r == GC_HEAP_ENOMEM) return r;
        if (r < 0) { /* in memory a cap left out, or not in the core at all */
            if (heap_omitted(h, h->miss))
                c->omitted++;
            else
                c->unreadable++;
            continue;
        }
        c->budget -= (int64_t)h->kids.n;
        if (c->budget < 0)
            return heap_fail(h, GC_HEAP_EFORMAT,
                             "the heap holds more references than its memory has room for "
                             "(damaged core)");
        for (size_t i = 0; i < h->kids.n; i++) {
            r = reach(h, h->kids.v[i]);
            if (r) return r;
        }
    }
    return 0;
}

/* a tracked object from a GC list */
static int listed(struct gc_heap *h, uint64_t obj, uint64_t tp, uint64_t sz)
{
    const struct gc_htype *t = heap_type(h, tp);
    if (!t) return need_type(h, tp, obj | 1);
    int64_t slot = heap_slot(h, obj);
    if (!t->valid || slot < 0 || bits_get(&h->seen, (uint64_t)slot)) {
        h->c.unreadable++;
        return 0;
    }
    h->c.tracked++;
    int r = visit(h, obj, t, sz);
    return r ? r : drain(h);
}

/* The GC lists from their heads. A list that runs into memory a max_size cap left out is
 * walked again backwards from its head (c->link 8: _gc_prev), to the other side of the gap. */
static int walk_lists(struct gc_heap *h)
{
    struct census *c = &h->c;
    uint64_t max_steps = h->dumped / 16 + 1;
    for (; c->head < h->nheads; c->head++) {
        uint64_t head = h->heads[c->head];
        if (!c->started) {
            if (heap_u64(h, head, &c->node))
                return heap_fail(h, GC_HEAP_EFORMAT, "the GC list head %#llx is not in the core",
                                 (unsigned long long)head);
            c->node &= ~7ULL;
            c->steps = 0;
            c->link = 0;
            c->started = 1;
        }
        while (c->node != head) {
            if (++c->steps > max_steps)
                return heap_fail(h, GC_HEAP_EFORMAT, "a GC list does not return to its head");
            const uint8_t *p = heap_at(h, c->node, 40);
            if (!p) {
                int omitted = heap_omitted(h, c->node);
                if (omitted && c->link == 0) {
                    c->cut++;
                    if (heap_u64(h, head + 8, &c->node))
                        return heap_fail(h, GC_HEAP_EFORMAT, "the GC list head %#llx is not in "
                                         "the core", (unsigned long long)head);
                    c->node &= ~7ULL;
                    c->link = 8;
                    continue;
                }
                if (omitted) break;
                return heap_fail(h, GC_HEAP_EFORMAT,
                                 "a GC list runs to %#llx, outside the core (damaged, or taken "
                                 "while a collection was moving objects)",
                                 (unsigned long long)c->node);
            }
            uint64_t nxt, tp, sz, obj = c->node + 16;
            memcpy(&nxt, p + c->link, 8);
            memcpy(&tp, p + 24, 8);
            memcpy(&sz, p + 32, 8);
            c->node = nxt & ~7ULL;
            int r = listed(h, obj, tp, sz);
            if (r) return r;
        }
        c->started = 0;
    }
    return 0;
}

int heap_op_census(struct gc_heap *h, const uint64_t *in, size_t nin, struct vec *out)
{
    struct census *c = &h->c;
    if (!c->begun) {
        c->begun = 1;
        c->budget = (int64_t)(h->dumped / 8 + 1);
        c->want = nin ? (size_t)in[0] : 0;
        if (c->want > 1u << 20) return heap_fail(h, GC_HEAP_EINVAL, "too many largest objects");
        if (c->want && !(c->top = calloc(2 * c->want, sizeof *c->top))) return GC_HEAP_ENOMEM;
    }
    /* the objects of the previous round whose types were missing, types now known */
    struct vec todo = c->deferred;
    memset(&c->deferred, 0, sizeof c->deferred);
    c->pending.n = 0;
    int r = 0;
    for (size_t i = 0; i < todo.n && !r; i++) {
        uint64_t obj = todo.v[i] & ~1ULL, rc, tp, sz;
        heap_header(h, obj, &rc, &tp, &sz);
        r = (todo.v[i] & 1) ? listed(h, obj, tp, sz) : reach(h, obj);
        if (!r) r = drain(h);
    }
    vec_free(&todo);
    if (!r && !c->lists_done) {
        r = walk_lists(h);
        if (!r) c->lists_done = 1;
    }
    if (r) return r;
    if (c->lists_done && c->cut && !c->roots_pushed && !c->pending.n && !c->deferred.n) {
        /* lists cut by a cap: the objects in the gap are found from the roots (in[1..]) */
        c->roots_pushed = c->cutmode = 1;
        for (size_t i = 1; i < nin; i++)
            if (vec_push(&c->deferred, in[i])) return GC_HEAP_ENOMEM;
        return vec_push(out, c->deferred.n ? 1 : 0) ? GC_HEAP_ENOMEM : 0;
    }
    if (vec_push(out, c->pending.n ? 1 : 0)) return GC_HEAP_ENOMEM;
    for (size_t i = 0; i < c->pending.n; i++)
        if (vec_push(out, c->pending.v[i])) return GC_HEAP_ENOMEM;
    return 0;
}

int heap_op_prescan(struct gc_heap *h, struct vec *out)
{
    uint64_t max_steps = h->dumped / 16 + 1;
    for (size_t k = 0; k < h->nheads; k++) {
        uint64_t head = h->heads[k], node, steps = 0;
        if (heap_u64(h, head, &node)) return 0; /* the census says why */
        for (node &= ~7ULL; node != head && ++steps <= max_steps;) {
            const uint8_t *p = heap_at(h, node, 40);
            if (!p) return 0;
            uint64_t tp;
            memcpy(&tp, p + 24, 8);
            memcpy(&node, p, 8);
            node &= ~7ULL;
            if (heap_type(h, tp)) continue;
            size_t i = 0;
            while (i < out->n && out->v[i] != tp) i++;
            if (i == out->n && vec_push(out, tp)) return GC_HEAP_ENOMEM;
            if (out->n > 100000) return 0;
        }
    }
    return 0;
}

int heap_op_result(struct gc_heap *h, struct vec *out)
{
    struct census *c = &h->c;
    uint64_t head[] = {c->tracked, c->unreadable, c->omitted, c->nodes, h->maxindex + 1ULL,
                       c->cut};
    for (size_t i = 0; i < 6; i++)
        if (vec_push(out, head[i])) return GC_HEAP_ENOMEM;
    for (uint64_t i = 0; i <= h->maxindex; i++)
        for (int k = 0; k < 3; k++)
            if (vec_push(out, i < h->tcount_n ? h->tcount[3 * i + (uint64_t)k] : 0))
                return GC_HEAP_ENOMEM;
    if (vec_push(out, c->ntop)) return GC_HEAP_ENOMEM;
    for (size_t i = 0; i < 2 * c->ntop; i++)
        if (vec_push(out, c->top[i])) return GC_HEAP_ENOMEM;
    return 0;
}
