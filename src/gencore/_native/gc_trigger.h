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
};

struct gc_trigger_stats {
    uint32_t cores, merged, skipped_limit, skipped_interval, skipped_space, failed;
    uint64_t last_start_ns;
    uint32_t altstacks; /* threads whose crash handler runs on an alternate stack */
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
void gc_core_stem(char *buf, size_t cap, uint64_t t, int64_t tz, int pid, uint32_t seq);

#endif
