/* Core file names: the one definition, shared by Python (through the binding), the job and
 * the triggers. Async-signal-safe. */
#ifndef GC_NAMES_H
#define GC_NAMES_H

#include <stddef.h>
#include <stdint.h>

/* core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq> in local time: tz is seconds east of UTC. */
void gc_core_stem(char *buf, size_t cap, uint64_t t, int64_t tz, int pid, uint32_t seq);
/* The next per-process core sequence number (1, 2, ...). */
uint32_t gc_next_seq(void);
/* Seconds since the epoch (CLOCK_REALTIME). */
uint64_t gc_realtime_s(void);

#endif
