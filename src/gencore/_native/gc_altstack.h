/* Per-thread alternate signal stacks for the crash handler (gc_altstack.c). No Python API. */
#ifndef GC_ALTSTACK_H
#define GC_ALTSTACK_H

#include <stdint.h>

#define GC_ALTSTACK_SIZE (64u * 1024u) /* the crash handler needs about 20 KiB */

int gc_altstack_start(int sig); /* 0, or -EEXIST if sig has a handler already, or -errno */
/* The calling thread's stack, now (a thread started from Python, before its target runs).
 * 0, or -ENOENT when the crash handler is not installed, -ENOMEM, -EAGAIN. */
int gc_altstack_adopt(void);
void gc_altstack_scan(void);    /* the helper thread: cover new threads, free gone ones' */
void gc_altstack_stop(void);    /* previous stacks back; unmap what no thread uses */
void gc_altstack_forget(void);  /* in a forked child */
uint32_t gc_altstack_count(void); /* threads with a large enough alternate stack */

#endif
