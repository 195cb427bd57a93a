/* The memory cgroup, read with raw system calls (the snapshot child, the watchdog). */
#ifndef GC_CGROUP_H
#define GC_CGROUP_H

#include <stdint.h>

struct gc_cgroup {
    uint64_t limit; /* the lower of the hard limit and (v2) memory.high; 0: none */
    uint64_t usage;
};

/* The limits and usage of the cgroup directory dir (version 1 or 2). 0, or -errno. */
int gc_cgroup_read(const char *dir, int version, struct gc_cgroup *out);
/* The value of key in a "key value" file of dir (memory.events); 0 when absent. */
uint64_t gc_cgroup_counter(const char *dir, const char *file, const char *key);

#endif
