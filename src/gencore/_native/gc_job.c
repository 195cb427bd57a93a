/* One core in flight: names, the partial file, the snapshot, the status records, the reap.
 *
 * Used by the Python binding (cores from create_core and friends) and by the triggers (the
 * signal and crash handlers, the watchdog): the one place a struct gc_snapshot is filled.
 * Raw system calls only, so that a signal handler can start a core.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "gc_job.h"
#include "gc_names.h"
#include "gc_sys.h"

#define BUSY_WAIT_NS 5000000ull  /* between attempts while another snapshot freezes */
#define BUSY_GRACE_NS 5000000000ull /* beyond the freeze timeout */

int gc_argv_split(struct gc_argv *a, const char *cmd, size_t len)
{
    a->argc = 0;
    a->argv[0] = NULL;
    if (!cmd || !len) return 0;
    if (len >= sizeof a->buf || cmd[len - 1] != 0) return -EINVAL;
    gc_memcopy(a->buf, cmd, len);
    for (size_t at = 0; at < len; at += gc_strlen(a->buf + at) + 1) {
        if (a->argc >= GC_ARGV_MAX) return -EINVAL;
        a->argv[a->argc++] = a->buf + at;
    }
    a->argv[a->argc] = NULL;
    return a->argc;
}

static int in_blob(uint32_t off, uint32_t len, size_t size)
{
    return (uint64_t)off + len <= size;
}

int gc_job_spec_init(struct gc_job_spec *spec, struct gc_argv *argv,
                     const struct gc_core_options *o, const unsigned char *data, size_t len)
{
    gc_memzero(spec, sizeof *spec);
    if (o->abi != GC_ABI_VERSION || !in_blob(o->note_off, o->note_len, len) ||
        !in_blob(o->pipe_off, o->pipe_len, len) || !in_blob(o->suffix_off, o->suffix_len, len) ||
        o->suffix_len > 32 || (o->suffix_len && data[o->suffix_off + o->suffix_len - 1] != 0) ||
        !in_blob(o->kinds_off, o->kinds_len, len) ||
        (o->kinds_len && data[o->kinds_off + o->kinds_len - 1] != 0) ||
        !in_blob(o->cgroup_off, o->cgroup_len, len) ||
        (o->cgroup_len && data[o->cgroup_off + o->cgroup_len - 1] != 0))
        return -EINVAL;
    spec->suffix = o->suffix_len ? (const char *)data + o->suffix_off : ".core";
    uint64_t nlist = (uint64_t)o->redact.nkeep + o->redact.nscrub;
    if (nlist && (o->redact.list_off % 8 || !in_blob(o->redact.list_off, (uint32_t)(nlist * 8), len)))
        return -EINVAL;
    spec->redact_list = nlist ? (const uint64_t *)(data + o->redact.list_off) : NULL;
    spec->o = o;
    spec->events_fd = -1;
    spec->kinds = (const char *)data + o->kinds_off;
    spec->kinds_len = o->kinds_len;
    spec->cgroup = o->cgroup_len ? (const char *)data + o->cgroup_off : NULL;
    spec->note = o->note_len ? data + o->note_off : NULL;
    spec->note_len = o->note_len;
    int n = gc_argv_split(argv, (const char *)data + o->pipe_off, o->pipe_len);
    if (n < 0) return n;
    spec->pipe_argv = n ? argv->argv : NULL;
    return 0;
}

static void sleep_ns(uint64_t ns)
{
    struct {
        long sec, nsec;
    } ts = {(long)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    gc_sys2(SYS_nanosleep, &ts, 0);
}

/* The final and partial names: final as given, or a new core_<stamp> name. */
static int set_names(struct gc_job *j, const struct gc_job_spec *spec, const char *final)
{
    size_t pos = 0;
    if (final) {
        if (gc_strlen(final) + 1 > sizeof j->final) return -ENAMETOOLONG;
        gc_fmt_str(j->final, sizeof j->final, &pos, final);
    } else {
        char stem[GC_NAME_CAP - 16];
        gc_core_stem(stem, sizeof stem, gc_realtime_s(), spec->tz_offset, (int)gc_getpid(),
                     gc_next_seq());
        gc_fmt_str(j->final, sizeof j->final, &pos, stem);
        gc_fmt_str(j->final, sizeof j->final, &pos, spec->suffix);
    }
    j->final[pos] = 0;
    pos = 0;
    gc_fmt_str(j->partial, sizeof j->partial, &pos, ".");
    gc_fmt_str(j->partial, sizeof j->partial, &pos, j->final);
    gc_fmt_str(j->partial, sizeof j->partial, &pos, ".partial");
    j->partial[pos] = 0;
    return 0;
}

static void fill_snapshot(struct gc_snapshot *s, const struct gc_job_spec *spec, int core_fd,
                          int dir_fd, int status_fd, const struct gc_job *j,
                          const struct gc_cause *cause)
{
    const struct gc_core_options *o = spec->o;
    gc_memzero(s, sizeof *s);
    s->core_fd = core_fd;
    s->dir_fd = dir_fd;
    s->status_fd = status_fd;
    s->partial_name = j->partial;
    s->final_name = j->final;
    s->note = spec->note;
    s->note_len = spec->note_len;
    s->o = o;
    s->pylayout = o->have_pylayout ? &o->pylayout : NULL;
    s->pipe_argv = spec->pipe_argv;
    s->redact_list = spec->redact_list;
    s->kinds = spec->kinds;
    s->kinds_len = spec->kinds_len;
    s->events_fd = spec->events_fd;
    s->cgroup = spec->cgroup;
    const siginfo_t *info = cause->info;
    int sig = cause->signo;
    s->siginfo.signo = sig;
    s->siginfo.code = info ? info->si_code : 0;
    s->siginfo.err = info ? info->si_errno : 0;
    if (info && info->si_code > 0 &&
        (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE))
        s->siginfo.addr = (uint64_t)(uintptr_t)info->si_addr;
    else if (info)
        s->siginfo.sender_pid = info->si_pid;
    s->caller_uc = cause->uc;
    s->in_signal = cause->in_signal;
    s->first_tid = cause->first_tid;
    gc_procinfo_fill(&s->proc);
}

/* Freeze and fork, waiting while another snapshot holds the freeze (a few ms): a Python
 * snapshot interrupted by a trigger, or a trigger racing with Python. */
static int run_snapshot(struct gc_snapshot *s, const struct gc_job_spec *spec, pid_t *pid)
{
    uint64_t deadline = gc_now_ns() + spec->o->freeze_timeout_ns + BUSY_GRACE_NS;
    for (;;) {
        int r = gc_snapshot_run(s, pid);
        if (r != -EBUSY || gc_now_ns() > deadline) return r;
        /* this very thread holds the freeze (we interrupted it): waiting would never end */
        if (gc_freeze_owner() == (int32_t)gc_gettid()) return r;
        (spec->busy_wait ? spec->busy_wait : sleep_ns)(BUSY_WAIT_NS);
    }
}

int gc_job_start(struct gc_job *j, const struct gc_job_spec *spec, int dir_fd, const char *final,
                 const struct gc_cause *cause, struct gc_snapshot_summary *summary)
{
    gc_memzero(j, sizeof *j);
    j->pid = j->rfd = -1;
    j->dir_fd = dir_fd;
    j->failed_stage = GC_JOB_NAME;
    int rc = set_names(j, spec, final);
    if (rc < 0) return rc;
    char st[256]; /* struct stat: the name must be free (no overwriting, no symlink) */
    if (gc_sys4(SYS_newfstatat, dir_fd, j->final, st, AT_SYMLINK_NOFOLLOW) == 0) return -EEXIST;
    j->failed_stage = GC_JOB_OPEN;
    long core_fd = gc_sys4(SYS_openat, dir_fd, j->partial,
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (core_fd < 0) return (int)core_fd;
    j->failed_stage = GC_JOB_FORK;
    int pfd[2];
    long r = gc_sys2(SYS_pipe2, pfd, O_CLOEXEC);
    if (r < 0) {
        gc_close((int)core_fd);
        gc_sys3(SYS_unlinkat, dir_fd, j->partial, 0);
        return (int)r;
    }
    struct gc_snapshot s;
    fill_snapshot(&s, spec, (int)core_fd, dir_fd, pfd[1], j, cause);
    pid_t pid = -1;
    rc = run_snapshot(&s, spec, &pid);
    gc_close(pfd[1]);
    gc_close((int)core_fd);
    if (summary) *summary = s.summary;
    else if (s.summary.threads) free(s.summary.threads);
    if (rc < 0) {
        gc_close(pfd[0]);
        gc_sys3(SYS_unlinkat, dir_fd, j->partial, 0);
        return rc;
    }
    j->failed_stage = 0;
    j->pid = pid;
    j->rfd = pfd[0];
    j->start_ns = gc_now_ns();
    j->freeze_ns = s.freeze_ns;
    j->fork_ns = s.fork_ns;
    j->parked = s.parked;
    j->timed_out = s.timed_out;
    return 0;
}

int gc_job_follow(struct gc_job *j, uint64_t timeout_ns,
                  void (*progress)(const struct gc_job *, const struct gc_status *, void *),
                  void *arg, struct gc_status *last)
{
    struct gc_status rec;
    size_t have = 0;
    uint64_t deadline = timeout_ns ? gc_now_ns() + timeout_ns : 0;
    gc_memzero(last, sizeof *last);
    for (;;) {
        struct pollfd p = {j->rfd, POLLIN, 0};
        long pr = gc_poll(&p, 1, 500);
        if (pr < 0 && pr != -EINTR) return -ECHILD;
        if (deadline && gc_now_ns() > deadline) {
            gc_job_kill(j);
            return -ETIMEDOUT;
        }
        if (pr <= 0) continue;
        long n = gc_read(j->rfd, (char *)&rec + have, sizeof rec - have);
        if (n == -EINTR) continue;
        if (n <= 0) return -ECHILD; /* EOF: the child is gone without a result */
        have += (size_t)n;
        if (have < sizeof rec) continue;
        have = 0;
        if (rec.magic != GC_STATUS_MAGIC) continue;
        *last = rec;
        if (rec.kind == GC_ST_DONE) return 0;
        if (rec.kind == GC_ST_ERROR) return -(rec.err ? rec.err : EIO);
        if (progress) progress(j, &rec, arg);
    }
}

int gc_job_end(struct gc_job *j, int published, int block, int *status)
{
    *status = -1;
    if (j->pid > 0) {
        long r;
        do
            r = gc_sys4(SYS_wait4, j->pid, status, __WALL | (block ? 0 : WNOHANG), 0);
        while (r == -EINTR);
        if (r == 0) return 1; /* still running */
        if (r < 0) *status = -1; /* ECHILD: an application reaper took it */
        j->pid = -1;
    }
    if (j->rfd >= 0) gc_close(j->rfd);
    j->rfd = -1;
    if (!published) gc_sys3(SYS_unlinkat, j->dir_fd, j->partial, 0);
    return 0;
}

void gc_job_kill(const struct gc_job *j)
{
    if (j->pid > 0) gc_sys2(SYS_kill, j->pid, SIGKILL);
}
