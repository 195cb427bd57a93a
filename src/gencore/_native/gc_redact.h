/* Redaction (redact=) and excluded buffers (gencore.exclude): what the snapshot child scrubs
 * on the way out. The application's memory is never written: the child copies what it
 * writes into a buffer of its own and scrubs the copy.
 *
 * Before the notes, gc_redact_prepare() finds the values in the child's copy of memory:
 * every str, bytes and bytearray object in private anonymous memory (by its type pointer,
 * checked against its header), the strings that stay (interned and static ones, those of
 * code objects, heap types and modules, and the ones Python asked to keep), the environment
 * block and the argument strings, the hash secret, and the excluded buffers' partial pages.
 * While memory is written, gc_redact_clean() says how far the bytes are untouched and
 * gc_redact_apply() scrubs a copy. Runs in the child: raw system calls, arena memory. */
#ifndef GC_REDACT_H
#define GC_REDACT_H

#include <stdint.h>

#include "gc_config.h"

struct child;

/* What was scrubbed, for the capture note. */
struct gc_redact_stats {
    uint64_t strings, bytes, bytearrays; /* objects scrubbed */
    uint64_t kept;                       /* str and bytes objects left as they were */
    uint64_t scrubbed;                   /* bytes overwritten in the core */
    uint64_t environ, excluded;          /* of which: environment and arguments, exclude() */
    uint64_t faulted;                    /* pages the scan skipped: they fault (guard pages) */
};

struct gc_redact;

/* Find what to scrub (nothing when redaction is off and no buffer is excluded: then
 * c->redact stays NULL). 0 or a negative errno. */
int gc_redact_prepare(struct child *c);

/* How many bytes from addr (at most len) are scrubbed whole: written as zeros (a hole). */
uint64_t gc_redact_zeroed(struct gc_redact *r, uint64_t addr, uint64_t len);

/* How many bytes from addr (at most len) need no scrubbing. */
uint64_t gc_redact_clean(struct gc_redact *r, uint64_t addr, uint64_t len);

/* Scrub buf, the copy of [addr, addr+len) about to be written. Calls must come in address
 * order (a later call never starts before an earlier one). */
void gc_redact_apply(struct gc_redact *r, uint64_t addr, uint64_t len, unsigned char *buf);

/* Copy [addr, addr+len) (len at most the scratch size) into the redaction's scratch buffer,
 * scrubbed: returns the buffer. */
const unsigned char *gc_redact_copy(struct gc_redact *r, uint64_t addr, uint64_t len);
uint64_t gc_redact_scratch_size(void);

const struct gc_redact_stats *gc_redact_stats(const struct gc_redact *r);

/* The policy's name for the capture note ("off", "env", "values"). */
const char *gc_redact_policy_name(uint32_t policy);

/* ---- excluded buffers (in the process; the child reads the table it inherited) ---- */
#define GC_EXCLUDE_MAX 256
/* Add (add=1) or remove (add=0) a range; -ENOSPC when the table is full. */
int gc_exclude_range(uint64_t addr, uint64_t len, int add);

#endif
