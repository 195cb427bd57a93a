/* Triggers: cores on a signal, a crash, a hang or a memory limit, taken in C so that they work
 * while no Python code can run. The public side, for the binding (gc_module.c); the parts
 * share gc_trigger_int.h. No Python API here. */
#ifndef GC_TRIGGER_H
#define GC_TRIGGER_H

#include <stddef.h>
#include <stdint.h>

#include "gc_config.h"

#define GC_WATCH_REASON_CAP 24
#define GC_WATCH_DETAIL_CAP 320
#define GC_WATCH_LOOPS 16
#define GC_WATCH_DEADLINES 32
#define GC_DEADLINE_NAME_CAP 200 /* the name as JSON string text, escaped by the caller */

struct gc_trigger_stats {
    uint32_t cores, merged, skipped_limit, skipped_interval, skipped_space, failed;
    uint64_t last_start_ns;
    uint32_t altstacks;     /* threads whose crash handler runs on an alternate stack */
    uint32_t hangs, memory; /* watchdog cores started (or skipped by a guard) */
    uint32_t probes;        /* GIL probes that completed */
};

/* Install the handlers and start the helper thread. c and data are copied. start_probe
 * starts a short-lived thread that takes the GIL, calls gc_trigger_probe_done() and lets
 * Python run what it asks for; returns 0 or -errno. Returns 0, -EALREADY, -EINVAL (a record
 * of another version, or a blob that does not hold what c says), -EEXIST (the alternate-stack
 * signal has a handler already) or -errno. */
int gc_trigger_install(const struct gc_trigger_config *c, const unsigned char *data, size_t len,
                       int (*start_probe)(void));
void gc_trigger_uninstall(void); /* waits for a core in flight */
/* After uninstall: the helper processes still running (at most cap pids), for the caller to
 * reap (they upload, bounded in time). */
int gc_trigger_leftover_helpers(int32_t *pids, int cap);
int gc_trigger_active(void);
/* Chained signals (chain_signals) whose handler was replaced since install: ours on top
 * again, the replacement runs after the core. Returns how many were taken back. */
int gc_trigger_rechain(void);
void gc_trigger_set_tz(int64_t offset); /* seconds east of UTC, for file names */
void gc_trigger_after_fork_child(void);
/* A core decided in Python (an unhandled exception) obeys the same guards: 0 go, 1
 * max_cores, 2 min_interval, 3 free space. */
int gc_trigger_claim_python(void);
void gc_trigger_get_stats(struct gc_trigger_stats *out);
/* The probe thread, holding the GIL: 1 when Python should deliver results (the notify pipe
 * has records, or the time zone is due for a refresh). */
int gc_trigger_probe_done(void);
void gc_trigger_quiesce(void); /* interpreter exit: no more probes */
void gc_watch_heartbeat(int32_t tid);
int gc_watch_loop_beat(int slot, int32_t tid); /* -EINVAL: bad slot */
void gc_watch_loop_stop(int slot);
/* Deadlines: one core ("hang: deadline", tid first) when one passes before it is ended.
 * arm returns a handle (>= 0) or -ENOSPC (every slot in use), -EINVAL (a name too long).
 * state/end: 0 armed (or gone: installed again, a forked child), 1 passed: core holds the
 * name of the core started for it, empty when a guard skipped it or it is not started yet.
 * end frees the slot. */
int gc_watch_deadline_arm(uint64_t after_ns, int32_t tid, const char *name, size_t len);
int gc_watch_deadline_state(int handle, char *core, size_t cap);
int gc_watch_deadline_end(int handle, char *core, size_t cap);

#endif
