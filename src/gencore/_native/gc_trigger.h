/* Signal and crash triggers (gc_trigger.c). No Python API here. */
#ifndef GC_TRIGGER_H
#define GC_TRIGGER_H

#include <stdint.h>
#include <stddef.h>

#define GC_TRIGGER_MAX_SIGNALS 8

struct gc_trigger_config {
    int pid;
    int dir_fd;    /* where cores go */
    int events_fd; /* O_APPEND events file for `gencore trigger`, or -1 */
    int notify_fd; /* pipe to the Python listener, or -1 */
    int signals[GC_TRIGGER_MAX_SIGNALS];
    int nsignals;
    int crash_signals[GC_TRIGGER_MAX_SIGNALS];
    int ncrash;
    int altstack_signal; /* private signal that gives threads an alternate stack (0: none) */
    unsigned char *note; /* GENCORE JSON for signal dumps */
    size_t note_len;
    long note_time_offset; /* where the 17-character capture time goes, or -1 */
    unsigned char *crash_note;
    size_t crash_note_len;
    long crash_note_time_offset;
    uint32_t filter;
    int freeze_signal;
    uint64_t freeze_timeout_ns;
    uint64_t timeout_ns;       /* signal dumps: kill the child after this (0: never) */
    uint64_t crash_timeout_ns; /* crash dumps: wait at most this long */
    uint32_t max_cores;        /* 0: unlimited */
    uint64_t min_interval_ns;
    uint64_t min_free_bytes; /* beyond the resident size */
    int64_t tz_offset;       /* seconds east of UTC, for file names */
    /* bundles, built by the reaper with a helper process (works while the GIL is stuck):
     * the command, NUL-separated, to which the core's file name is appended; NULL for none */
    const char *helper_argv;
    size_t helper_argv_len;
    /* compress="zstd": the compressor's command (NUL-separated) for gc_snapshot.pipe_argv */
    const char *pipe_argv;
    size_t pipe_argv_len;
    uint64_t max_size;                  /* max_size of every core (0: none) */
    const struct gc_pylayout *pylayout; /* copied at install; NULL: none */
    /* The watchdog, in the same native thread as the reaper (0 disables each check). */
    uint64_t hang_timeout_ns;      /* nobody can take the GIL, or a watched loop stalls */
    uint64_t heartbeat_timeout_ns; /* gc_watch_heartbeat() not called for this long */
    uint64_t rss_limit_bytes;      /* resident size above this: one core, again below 90% */
    uint64_t rss_interval_ns;      /* how often the resident size is read */
    /* The watchdog's GENCORE note: placeholders for the time (17 characters), the reason
     * (GC_WATCH_REASON_CAP characters, a JSON string and padding) and what was seen
     * (GC_WATCH_DETAIL_CAP characters, a JSON object and padding). */
    unsigned char *watch_note;
    size_t watch_note_len;
    long watch_note_time_offset, watch_note_reason_offset, watch_note_detail_offset;
    /* Starts a short-lived thread that takes the GIL, calls gc_trigger_probe_done() and
     * lets Python run what gc_trigger_probe_done() asks for. Returns 0 or -errno. */
    int (*start_probe)(void);
};

#define GC_WATCH_REASON_CAP 24
#define GC_WATCH_DETAIL_CAP 64
#define GC_WATCH_LOOPS 16

struct gc_trigger_stats {
    uint32_t cores, merged, skipped_limit, skipped_interval, skipped_space, failed;
    uint64_t last_start_ns;
    uint32_t altstacks; /* threads whose crash handler runs on an alternate stack */
    uint32_t hangs, memory; /* watchdog cores started (or skipped by a guard) */
    uint32_t probes;        /* GIL probes that completed */
};

/* What the reaper tells the Python listener about each signal dump. */
struct gc_trigger_result {
    int32_t kind; /* 1 done, 2 error */
    int32_t err;
    uint32_t stage;
    uint32_t pad;
    uint64_t written, total, file_size, elapsed_ns;
    char name[96];
};

int gc_trigger_install(const struct gc_trigger_config *c);
void gc_trigger_uninstall(void);
int gc_trigger_active(void);
void gc_trigger_set_tz(int64_t offset); /* seconds east of UTC, for file names */
void gc_trigger_after_fork_child(void);
int gc_trigger_claim_python(void);
void gc_trigger_get_stats(struct gc_trigger_stats *out);
uint32_t gc_next_seq(void);
/* The probe thread, holding the GIL: returns 1 when Python should deliver results (the
 * notify pipe has records, or the time zone is due for a refresh). */
int gc_trigger_probe_done(void);
void gc_trigger_quiesce(void); /* interpreter exit: no more probes */
void gc_watch_heartbeat(int32_t tid);
int gc_watch_loop_beat(int slot, int32_t tid); /* -EINVAL: bad slot */
void gc_watch_loop_stop(int slot);
void gc_core_stem(char *buf, size_t cap, uint64_t t, int64_t tz, int pid, uint32_t seq);

#endif
