/* What gc_redact.c (objects), gc_pools.c (the allocator's blocks) and gc_scrub.c (the
 * environment, stacks, excluded buffers, sorting) share: the redaction's state in the
 * snapshot child. */
#ifndef GC_REDACT_INT_H
#define GC_REDACT_INT_H

#include <stdint.h>

#include "gc_child.h"
#include "gc_redact.h"

#define SCRATCH_SIZE (1u << 20)
#define MAX_LEN (1ull << 40)
#define TAB_SLOTS 128u
#define BLOOM_BITS 4096u
#define OBJ_KEEP 4ull /* low bits of an objs entry: kind (1 str, 2 bytes), bit 2 kept */
#define ENV_SCAN_MAX (1u << 20)
#define NAME_SLOTS (1u << 16)
#define NAME_MAX_LEN 128u

struct range {
    uint64_t start, end;
};

struct gc_redact {
    struct child *c;
    const struct gc_redact_layout *L;
    uint64_t *objs, nobj, capobj;
    uint64_t *spans; /* per object: where its characters are (SPAN in gc_redact.c) */
    uint64_t scan_lo, scan_hi; /* the mapping being scanned */
    uint64_t scan_pos;         /* the candidate being checked */
    uint64_t *keep, nkeep, capkeep;
    uint64_t *tmp, *count; /* the radix sort's */
    uint64_t *names;       /* NAME_SLOTS: modules' names (a C type's __module__ is a copy) */
    uint64_t *name_hash;   /* their texts' hashes */
    uint64_t name_bloom[1024]; /* 65536 bits: lengths and first bytes of the names */
    uint64_t nnames;
    struct range *ind;
    uint64_t nind, capind;
    uint64_t ocur, icur;
    unsigned char *scratch;
    uint64_t bloom[BLOOM_BITS / 64];
    uint64_t tab[TAB_SLOTS];
    uint32_t tab_kind[TAB_SLOTS], tab_size[TAB_SLOTS];
    int overflow; /* an object list was full: the core must not be written */
    int checking; /* while scanning: a candidate must be where the allocator puts objects */
    struct gc_redact_stats st;
};

static inline uint64_t rd64(uint64_t a) { return *(const volatile uint64_t *)(uintptr_t)a; }
static inline uint32_t rd32(uint64_t a) { return *(const volatile uint32_t *)(uintptr_t)a; }

/* A reference count a live object can have. */
static inline int live(uint64_t obj)
{
    uint64_t refcnt = rd64(obj);
    return refcnt >= 1 && refcnt < (1ull << 33);
}

/* gc_pools.c */
/* An object of size bytes at obj is where the allocator would put one (see there). */
int gc_rd_fits_block(const struct gc_redact *r, uint64_t obj, uint64_t size);
/* obj is live, or a block the object allocator freed. */
int gc_rd_plausible(uint64_t obj);

/* gc_scrub.c */
const struct gc_vma *gc_rd_vma_of(const struct child *c, uint64_t addr);
/* [a, a+n) lies in one private anonymous readable mapping (safe to read directly). */
int gc_rd_anon_range(const struct child *c, uint64_t a, uint64_t n);
void gc_rd_add_range(struct gc_redact *r, uint64_t start, uint64_t end);
void gc_rd_radix_sort(uint64_t *a, uint64_t n, uint64_t *tmp, uint64_t *count);
void gc_rd_sort_ranges(struct gc_redact *r);
void gc_rd_environment(struct gc_redact *r);
void gc_rd_stacks(struct gc_redact *r);
int gc_rd_excluded(struct gc_redact *r);

#endif
