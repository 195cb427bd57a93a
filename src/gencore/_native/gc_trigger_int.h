/* What the parts of the triggers share: gc_trigger.c (the configuration in force, guards,
 * events), gc_handlers.c (signal and crash handlers), gc_reaper.c (the helper thread that
 * follows cores), gc_watchdog.c (hangs, memory). Each part keeps one state struct of its own.
 * Everything reachable from a signal handler is async-signal-safe. */
#ifndef GC_TRIGGER_INT_H
#define GC_TRIGGER_INT_H

#include "gc_job.h"
#include "gc_trigger.h"

/* A GENCORE note prepared at install time, with a fixed-width place for the capture time. */
struct gc_trig_note {
    unsigned char *p;
    size_t len;
    long time_off; /* where the 17 characters of the time go, or -1 */
};
enum gc_note_kind { GC_NOTE_SIGNAL, GC_NOTE_CRASH, GC_NOTE_WATCH, GC_NOTE_N };

/* gc_trigger.c */
const struct gc_trigger_config *gc_trig_config(void);
const struct gc_job_spec *gc_trig_spec(void); /* how every triggered core is taken */
struct gc_trigger_stats *gc_trig_stats(void); /* counters, updated atomically */
const struct gc_trig_note *gc_trig_note(enum gc_note_kind kind);
int gc_trig_is_active(void); /* installed, in the process that installed */
/* Take the claim (one core at a time) and apply the guards: 1 when the caller may start a
 * core and owns the claim. A trigger that finds a core in flight is merged into it. */
int gc_trig_claim(void);
void gc_trig_release(void);
int gc_trig_claimed(void); /* a core is in flight */
/* The guards alone (max_cores; min_interval when check_interval; free space): 0 go, else
 * 1, 2, 3 as gc_trigger_claim_python(); counted and written to the events file. */
int gc_trig_guard(int check_interval);
/* Start a core with note (stamped with the time now): 0 when the snapshot child runs
 * (counted, "start" event), else -errno (counted). The claim is the caller's business. */
int gc_trig_start(struct gc_job *j, const struct gc_cause *cause, enum gc_note_kind note);
/* The helper command run after each core (bundle, upload, budget), NULL-terminated with
 * room for the core's name, or NULL. */
char **gc_trig_helper_argv(void);
/* One line to the events file (O_APPEND: the handler's, the helper thread's and Python's
 * lines never interleave). With with_ab, the numbers a and b follow the name. */
void gc_event(const char *what, const char *name, int64_t a, int64_t b, int with_ab);
/* Fill a fixed-width place of the watchdog's note: text, then spaces (JSON whitespace). */
void gc_trig_fill_watch_note(long off, size_t cap, const char *text, size_t len);
uint64_t gc_resident_bytes(void);
uint64_t gc_page_size(void);

/* gc_handlers.c: the signal and crash handlers */
int gc_handlers_install(const struct gc_trigger_config *c);
void gc_handlers_uninstall(const struct gc_trigger_config *c);
void gc_handlers_forget(const struct gc_trigger_config *c); /* a forked child */
void gc_handlers_reset(void);
/* Chained signals whose handler the application replaced since: ours again on top, theirs
 * run after the core. Returns how many were taken back. */
int gc_handlers_rechain(const struct gc_trigger_config *c);

/* gc_reaper.c: the one helper thread, named "gencore" */
int gc_reaper_start(const struct gc_trigger_config *c);
void gc_reaper_stop(void);   /* joins the thread */
void gc_reaper_forget(void); /* a forked child: the thread does not exist there */
/* Hand a started core to the helper thread (from a signal handler): 0, or -errno when the
 * thread cannot take it (the caller then follows it itself). */
int gc_reaper_submit(const struct gc_job *j);
/* A record for the Python listener (a core done, failed, or a trigger not honoured). */
void gc_reaper_tell(const struct gc_trigger_result *res);
/* After the thread stopped: the helpers still running (their pids, at most cap), handed
 * over to be reaped by the caller. */
int gc_reaper_helpers(int32_t *pids, int cap);
/* Follow a started core to its end: reaped, published, the helper command run, Python told,
 * the claim released. */
void gc_reaper_finish(struct gc_job *j);

/* gc_watchdog.c: stalls and memory, checked on every tick of the helper thread */
void gc_watch_reset(const struct gc_trigger_config *c);
void gc_watch_set_probe(int (*start_probe)(void));
int gc_watch_enabled(void);
void gc_watch_tick(void);
void gc_watch_wake(void); /* Python has records to deliver: the next tick starts a probe */
void gc_watch_forget(void);

#endif
