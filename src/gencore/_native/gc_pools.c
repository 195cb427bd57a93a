/* Where CPython's object allocator (pymalloc) puts objects, for the redaction's scan in the
 * snapshot child: whether a candidate header starts a block of its pool, live or freed.
 * Reads memory only (the child's own copy); no allocation, no lock. */
#include "gc_redact_int.h"

/* An object of size bytes at obj is where an allocator would put one: objects up to 512
 * bytes come from pymalloc's pools, so obj starts a block of its pool (whose header gives the
 * block size: POOL_SIZE - size is its maxnextoffset) and fits in it; a freed block (its text
 * is still there) counts too. A stray type pointer (a word left over at the end of a block)
 * is no object: its "header" spans the next one. */
#define SMALL_REQUEST 512u
#define POOL_OVERHEAD 48u

/* Whether the block at obj of a pool of bs-byte blocks is free: past the pool's nextoffset
 * (never handed out since the pool took its size) or on its free list. A block in use whose
 * first words are left from an object freed there before (3.12's dict values keep a stale
 * prefix) only looks freed: scrubbing its "text" would wipe live data. */
static int block_free(uint64_t pool, uint64_t psize, uint64_t obj, uint64_t bs)
{
    if (obj - pool >= rd32(pool + 40)) return 1;
    uint64_t b = rd64(pool + 8);
    for (uint64_t n = 0; b && n <= psize / bs; n++) {
        if (b == obj) return 1;
        if (b < pool + POOL_OVERHEAD || b >= pool + psize || (b - pool - POOL_OVERHEAD) % bs)
            return 0;
        b = rd64(b);
    }
    return 0;
}

int gc_rd_fits_block(const struct gc_redact *r, uint64_t obj, uint64_t size)
{
    uint64_t psize = r->L->pool_size;
    /* larger objects come from malloc, which overwrites a freed one's header (and may leave
     * a stale one inside memory reused since): only a live one counts */
    if (size > SMALL_REQUEST || !psize) return live(obj);
    uint64_t pool = obj & ~(psize - 1);
    if (obj - pool < POOL_OVERHEAD) return 0;
    int in_scan = pool >= r->scan_lo && pool + POOL_OVERHEAD <= r->scan_hi; /* no search */
    if (!in_scan && !gc_rd_anon_range(r->c, pool, POOL_OVERHEAD)) return 0;
    uint32_t szidx = rd32(pool + 36), maxnext = rd32(pool + 44);
    uint64_t bs = ((uint64_t)szidx + 1) * 16;
    if (szidx >= SMALL_REQUEST / 16 || maxnext != psize - bs ||
        (obj - pool - POOL_OVERHEAD) % bs != 0 || size > bs)
        return 0;
    if (live(obj)) return 1;
    return (in_scan && pool + psize <= r->scan_hi) || gc_rd_anon_range(r->c, pool, psize)
               ? block_free(pool, psize, obj, bs)
               : 0;
}

/* A live object, or a block the object allocator freed: its first word then points to the
 * next free block of the same pool (or is 0 at the end of the list). */
int gc_rd_plausible(uint64_t obj)
{
    uint64_t first = rd64(obj);
    uint64_t dist = first > obj ? first - obj : obj - first;
    return live(obj) || first == 0 || (!(first & 15) && dist < (1u << 20));
}
