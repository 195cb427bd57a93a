/* One core in flight, from its partial file to its reaped snapshot child: the same life for
 * cores taken from Python (gencore.capture.job) and by the triggers (gc_reaper.c, the crash
 * handler). No Python API here; everything is async-signal-safe but the summary. */
#ifndef GC_JOB_H
#define GC_JOB_H

#include <signal.h>
#include <stdint.h>

#include "gc_config.h"
#include "gc_snapshot.h"

#define GC_NAME_CAP 96
#define GC_ARGV_MAX 32

/* A NUL-separated command split in place (prepared before any snapshot). */
struct gc_argv {
    char buf[8192];
    char *argv[GC_ARGV_MAX + 2]; /* room for one appended argument and the NULL */
    int argc;
};

/* Copy cmd (len bytes, NUL-separated, NUL-terminated) into a and split it; returns argc (0
 * for an empty command) or -EINVAL. */
int gc_argv_split(struct gc_argv *a, const char *cmd, size_t len);

/* How cores are taken: the options and what their data blob holds, resolved once. */
struct gc_job_spec {
    const struct gc_core_options *o;
    const unsigned char *note;
    size_t note_len;
    char *const *pipe_argv; /* NULL: a plain core */
    const char *suffix;     /* of new names: ".core", ".core.zst", ".core.age"... */
    const uint64_t *redact_list; /* objects to keep, then to scrub (redact); may be NULL */
    const char *kinds;      /* gencore's file suffixes, NUL-separated (the budget's) */
    size_t kinds_len;
    int events_fd;          /* the triggers' events file (budget removals), or -1 */
    const char *cgroup;     /* the memory cgroup's directory (NUL-terminated), or NULL */
    int64_t tz_offset;      /* for new names */
    /* Waits between attempts while another snapshot holds the freeze (default: sleeps). */
    void (*busy_wait)(uint64_t ns);
};

/* Resolve the options' data blob into spec (pipe_argv split into argv). 0 or -EINVAL. */
int gc_job_spec_init(struct gc_job_spec *spec, struct gc_argv *argv,
                     const struct gc_core_options *o, const unsigned char *data, size_t len);

/* Why this core is taken. */
struct gc_cause {
    int signo;             /* 0: on demand (tools say "generated on demand") */
    const siginfo_t *info; /* the signal's, or NULL */
    const void *uc;        /* the interrupted context in a signal handler, else NULL */
    int32_t first_tid;     /* this thread's notes come first; 0: the caller's */
    int in_signal;         /* in a signal handler or the helper thread: no malloc */
};

enum gc_job_stage { GC_JOB_NAME = 1, GC_JOB_OPEN = 2, GC_JOB_FORK = 3 };

struct gc_job {
    int32_t pid;    /* the snapshot child */
    int32_t rfd;    /* the status pipe's read end */
    int32_t dir_fd; /* borrowed from the caller */
    uint32_t failed_stage; /* where gc_job_start failed (enum gc_job_stage) */
    uint64_t start_ns, freeze_ns, fork_ns;
    uint32_t parked, timed_out;
    char final[GC_NAME_CAP];
    char partial[GC_NAME_CAP + 16];
};

/* Name the core (final, or core_<stamp> + .core/.core.zst), check that the name is free,
 * create its partial file (0600, O_EXCL|O_NOFOLLOW), freeze, fork the snapshot child and
 * release the threads. Retries while another snapshot holds the freeze (bounded), except in
 * the thread that holds it (merged: -EBUSY). Returns 0, or -errno with j->failed_stage set and
 * nothing left behind. With summary (not in a signal handler), the per-thread outcome is
 * malloc'ed there (free it). */
int gc_job_start(struct gc_job *j, const struct gc_job_spec *spec, int dir_fd, const char *final,
                 const struct gc_cause *cause, struct gc_snapshot_summary *summary);

/* Read the child's status records until it is done, failed, or timeout_ns passed (0: no
 * limit; then the child is killed). progress(rec, arg) sees each progress record. Returns 0
 * when the core is published, -ETIMEDOUT, or -errno of the failure; *last is the last record. */
int gc_job_follow(struct gc_job *j, uint64_t timeout_ns,
                  void (*progress)(const struct gc_job *, const struct gc_status *, void *),
                  void *arg, struct gc_status *last);

/* Reap the child (its exit signal is 0: no SIGCHLD, invisible to waitpid(-1)), close the
 * pipe, and remove the partial file unless the core was published. With block == 0, returns
 * 1 while the child runs. *status is its wait status (-1: someone else reaped it). */
int gc_job_end(struct gc_job *j, int published, int block, int *status);

/* Kill the snapshot child (a timeout, or the caller gave up). */
void gc_job_kill(const struct gc_job *j);

#endif
