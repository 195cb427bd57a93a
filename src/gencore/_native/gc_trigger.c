/* Triggers: a core on a signal (kill -USR2) or on a crash (SIGSEGV, SIGBUS, ...), taken by the
 * signal handler itself, so it works when no Python code can run (a thread stuck in C holding
 * the GIL).
 *
 * Signal trigger: the handler claims the trigger, checks the guards (max cores, min interval,
 * free space), opens the partial file, freezes every other thread, forks the snapshot child
 * and hands the child to the reaper thread through a pipe. Everything in the handler is a raw
 * system call on memory prepared at install time: no malloc, no locks, no stdio. The reaper
 * (a native thread, it never needs the GIL) follows the child's status records, reaps it,
 * writes the outcome to the events file (read by `gencore trigger`) and to a pipe the
 * Python side listens on. A signal that arrives while a dump is running is merged into it.
 *
 * Crash trigger: the faulting thread's handler takes the core with the real signal in
 * NT_SIGINFO and pr_cursig and itself first, waits for it (bounded), restores the previous
 * action and lets the signal kill the process as it would have.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gc_altstack.h"
#include "gc_procfs.h"
#include "gc_snapshot.h"
#include "gc_sys.h"
#include "gc_trigger.h"

#define NAME_CAP 96

struct job {
    int32_t pid;
    int32_t rfd;
    uint64_t start_ns;
    char final[NAME_CAP];
    char partial[NAME_CAP + 16];
};

static struct gc_trigger_config g_cfg;
static int g_active;        /* handlers act only while 1 */
static int g_claim;         /* 1 while a signal dump is in flight (merging) */
static int g_crashing;      /* the first crash wins */
static int g_crash_done;    /* ... and the others wait for its core before dying */
static int g_reaper_rfd = -1, g_reaper_wfd = -1;
static pthread_t g_reaper;
static int g_reaper_started;
static int g_altstacks; /* crash handler on alternate stacks: the reaper covers new threads */
static unsigned char *g_notes_map;
static size_t g_notes_map_size;
static struct sigaction g_old[GC_TRIGGER_MAX_SIGNALS];
static int g_old_valid[GC_TRIGGER_MAX_SIGNALS];
static struct sigaction g_crash_old[GC_TRIGGER_MAX_SIGNALS];
static int g_crash_old_valid[GC_TRIGGER_MAX_SIGNALS];
static struct gc_trigger_stats g_stats;
static uint32_t g_seq;
static uint64_t g_page_size = 4096;
/* The helper command run after each signal dump (bundles), NUL-separated, built in Python;
 * the core's file name is appended as its last argument. */
#define HELPER_ARGS 32
static char g_helper[8192];
static char *g_helper_argv[HELPER_ARGS + 2];
static int g_helper_argc;
/* The compressor the snapshot child writes through (compress="zstd"), NUL-separated too. */
static char g_pipe[8192];
static char *g_pipe_argv[HELPER_ARGS + 1];
static int g_pipe_argc;
static struct gc_pylayout g_pylayout;
static int g_have_pylayout;
extern char **environ;

uint32_t gc_next_seq(void) { return __atomic_add_fetch(&g_seq, 1, __ATOMIC_ACQ_REL); }

void gc_trigger_get_stats(struct gc_trigger_stats *out)
{
    out->cores = __atomic_load_n(&g_stats.cores, __ATOMIC_ACQUIRE);
    out->merged = __atomic_load_n(&g_stats.merged, __ATOMIC_ACQUIRE);
    out->skipped_limit = __atomic_load_n(&g_stats.skipped_limit, __ATOMIC_ACQUIRE);
    out->skipped_interval = __atomic_load_n(&g_stats.skipped_interval, __ATOMIC_ACQUIRE);
    out->skipped_space = __atomic_load_n(&g_stats.skipped_space, __ATOMIC_ACQUIRE);
    out->failed = __atomic_load_n(&g_stats.failed, __ATOMIC_ACQUIRE);
    out->last_start_ns = __atomic_load_n(&g_stats.last_start_ns, __ATOMIC_ACQUIRE);
    out->altstacks = gc_altstack_count();
    out->hangs = __atomic_load_n(&g_stats.hangs, __ATOMIC_ACQUIRE);
    out->memory = __atomic_load_n(&g_stats.memory, __ATOMIC_ACQUIRE);
    out->probes = __atomic_load_n(&g_stats.probes, __ATOMIC_ACQUIRE);
}

/* ---- async-signal-safe helpers --------------------------------------------------------- */

static uint64_t realtime_s(void)
{
    struct {
        long sec, nsec;
    } ts;
    gc_sys2(SYS_clock_gettime, 0 /* CLOCK_REALTIME */, &ts);
    return (uint64_t)ts.sec;
}

/* core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq> in local time: tz is seconds east of UTC. The one
 * definition of core names (Python calls it too). Async-signal-safe. */
void gc_core_stem(char *buf, size_t cap, uint64_t t, int64_t tz, int pid, uint32_t seq)
{
    int64_t lt = (int64_t)t + tz;
    int64_t days = lt / 86400, secs = lt % 86400;
    /* civil_from_days (H. Hinnant) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    size_t pos = 0;
    gc_fmt_str(buf, cap, &pos, "core_");
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)y, 4);
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)m, 2);
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)d, 2);
    gc_fmt_str(buf, cap, &pos, ".");
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)(secs / 3600), 2);
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)(secs / 60 % 60), 2);
    gc_fmt_u64_pad(buf, cap, &pos, (uint64_t)(secs % 60), 2);
    gc_fmt_str(buf, cap, &pos, ".");
    gc_fmt_u64(buf, cap, &pos, (uint64_t)pid);
    gc_fmt_str(buf, cap, &pos, ".");
    gc_fmt_u64_pad(buf, cap, &pos, seq, 3);
    buf[pos] = 0;
}

static void set_names(struct job *j, uint64_t now_s)
{
    char stem[NAME_CAP - 8];
    gc_core_stem(stem, sizeof stem, now_s, __atomic_load_n(&g_cfg.tz_offset, __ATOMIC_ACQUIRE),
              (int)gc_getpid(), gc_next_seq());
    size_t pos = 0;
    gc_fmt_str(j->final, sizeof j->final, &pos, stem);
    gc_fmt_str(j->final, sizeof j->final, &pos, g_pipe_argc ? ".core.zst" : ".core");
    j->final[pos] = 0;
    pos = 0;
    gc_fmt_str(j->partial, sizeof j->partial, &pos, ".");
    gc_fmt_str(j->partial, sizeof j->partial, &pos, j->final);
    gc_fmt_str(j->partial, sizeof j->partial, &pos, ".partial");
    j->partial[pos] = 0;
}

/* One line to the events file (O_APPEND: lines from the handler, the reaper and Python do
 * not interleave). */
static void event(const char *what, const char *name, int64_t a, int64_t b, int with_ab)
{
    if (g_cfg.events_fd < 0) return;
    char line[256];
    size_t pos = 0;
    gc_fmt_str(line, sizeof line, &pos, what);
    if (name) {
        gc_fmt_str(line, sizeof line, &pos, " ");
        gc_fmt_str(line, sizeof line, &pos, name);
    }
    if (with_ab) {
        gc_fmt_str(line, sizeof line, &pos, " ");
        gc_fmt_u64(line, sizeof line, &pos, (uint64_t)a);
        gc_fmt_str(line, sizeof line, &pos, " ");
        gc_fmt_u64(line, sizeof line, &pos, (uint64_t)b);
    }
    line[pos++] = '\n';
    gc_write(g_cfg.events_fd, line, pos);
}

/* Stamp the capture time into the note's fixed-width "time" placeholder. */
static void stamp_note(unsigned char *note, size_t len, long off)
{
    if (off < 0 || (size_t)off + 17 > len) return;
    struct {
        long sec, nsec;
    } ts;
    gc_sys2(SYS_clock_gettime, 0, &ts);
    char buf[24];
    size_t pos = 0;
    gc_fmt_u64_pad(buf, sizeof buf, &pos, (uint64_t)ts.sec % 10000000000ull, 10);
    buf[pos++] = '.';
    gc_fmt_u64_pad(buf, sizeof buf, &pos, (uint64_t)ts.nsec / 1000, 6);
    gc_memcopy(note + off, buf, 17);
}

/* Resident bytes of this process, from /proc/self/statm (async-signal-safe). */
static uint64_t resident_bytes(void)
{
    char buf[128];
    if (gc_read_small("/proc/self/statm", buf, sizeof buf) <= 0) return 0;
    return gc_second_field(buf) * g_page_size;
}

static int enough_space(void)
{
    struct statfs st;
    if (gc_sys2(SYS_fstatfs, g_cfg.dir_fd, &st) != 0) return 1;
    uint64_t free_b = (uint64_t)st.f_bavail * (uint64_t)st.f_bsize;
    return free_b >= resident_bytes() + g_cfg.min_free_bytes;
}

/* Open the partial file and fork the snapshot child. Returns 0 and fills *j, or -errno. */
static int start_dump(struct job *j, int sig, const siginfo_t *info, const void *uc,
                      unsigned char *note, size_t note_len, int32_t first_tid)
{
    set_names(j, realtime_s());
    long core_fd = gc_sys4(SYS_openat, g_cfg.dir_fd, j->partial,
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (core_fd < 0) return (int)core_fd;
    int pfd[2];
    long rc = gc_sys2(SYS_pipe2, pfd, O_CLOEXEC);
    if (rc < 0) {
        gc_close((int)core_fd);
        gc_sys3(SYS_unlinkat, g_cfg.dir_fd, j->partial, 0);
        return (int)rc;
    }
    struct gc_snapshot s;
    gc_memzero(&s, sizeof s);
    s.core_fd = (int)core_fd;
    s.dir_fd = g_cfg.dir_fd;
    s.status_fd = pfd[1];
    s.partial_name = j->partial;
    s.final_name = j->final;
    s.note = note;
    s.note_len = note_len;
    s.filter = g_cfg.filter;
    s.want_threads = 1;
    s.freeze_signal = g_cfg.freeze_signal;
    s.freeze_timeout_ns = g_cfg.freeze_timeout_ns;
    s.siginfo.signo = sig;
    s.siginfo.code = info ? info->si_code : 0;
    s.siginfo.err = info ? info->si_errno : 0;
    if (info && info->si_code > 0 && (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL ||
                                      sig == SIGFPE))
        s.siginfo.addr = (uint64_t)(uintptr_t)info->si_addr;
    else if (info)
        s.siginfo.sender_pid = info->si_pid;
    s.caller_uc = uc;
    s.in_signal = 1;
    s.first_tid = first_tid;
    s.pipe_argv = g_pipe_argc ? g_pipe_argv : NULL;
    s.max_size = g_cfg.max_size;
    s.pylayout = g_have_pylayout ? &g_pylayout : NULL;
    gc_procinfo_fill(&s.proc);
    pid_t pid = -1;
    int r = gc_snapshot_run(&s, &pid);
    for (int tries = 0; r == -EBUSY && tries < 200; tries++) {
        /* A snapshot from Python is in its freeze: a few ms at most. If this very thread is
         * the one taking it (we interrupted it), waiting would never end: it is merged. */
        if (gc_freeze_owner() == (int32_t)gc_gettid()) break;
        struct {
            long sec, nsec;
        } ts = {0, 5000000};
        gc_sys2(SYS_nanosleep, &ts, 0);
        r = gc_snapshot_run(&s, &pid);
    }
    gc_close(pfd[1]);
    gc_close((int)core_fd);
    if (r < 0) {
        gc_close(pfd[0]);
        gc_sys3(SYS_unlinkat, g_cfg.dir_fd, j->partial, 0);
        return r;
    }
    j->pid = pid;
    j->rfd = pfd[0];
    j->start_ns = gc_now_ns();
    return 0;
}

/* Follow the child's status records until it is done, then reap it. Raw syscalls only:
 * also used by the crash handler. Returns 0 when the core is published, else -errno. */
static int follow_child(struct job *j, uint64_t timeout_ns, int progress_events,
                        struct gc_status *last)
{
    struct gc_status rec;
    size_t have = 0;
    int result = -ECHILD;
    uint64_t deadline = timeout_ns ? gc_now_ns() + timeout_ns : 0;
    uint64_t next_progress = 0;
    gc_memzero(last, sizeof *last);
    for (;;) {
        struct pollfd p = {j->rfd, POLLIN, 0};
        long pr = gc_poll(&p, 1, 500);
        if (pr < 0 && pr != -EINTR) break;
        if (deadline && gc_now_ns() > deadline) {
            result = -ETIMEDOUT;
            gc_sys2(SYS_kill, j->pid, SIGKILL);
            break;
        }
        if (pr <= 0) continue;
        long n = gc_read(j->rfd, (char *)&rec + have, sizeof rec - have);
        if (n == -EINTR) continue;
        if (n <= 0) break; /* EOF: the child is gone */
        have += (size_t)n;
        if (have < sizeof rec) continue;
        have = 0;
        if (rec.magic != GC_STATUS_MAGIC) continue;
        *last = rec;
        if (rec.kind == GC_ST_PROGRESS) {
            uint64_t now = gc_now_ns();
            if (progress_events && now >= next_progress) {
                event("progress", j->final, (int64_t)rec.written, (int64_t)rec.total, 1);
                next_progress = now + 250000000ull;
            }
        } else if (rec.kind == GC_ST_DONE) {
            result = 0;
            break;
        } else if (rec.kind == GC_ST_ERROR) {
            result = -(rec.err ? rec.err : EIO);
            break;
        }
    }
    int status;
    while (gc_sys4(SYS_wait4, j->pid, &status, __WALL, 0) == -EINTR) {
    }
    gc_close(j->rfd);
    j->rfd = -1;
    if (result != 0) gc_sys3(SYS_unlinkat, g_cfg.dir_fd, j->partial, 0);
    return result;
}

/* ---- the signal trigger ----------------------------------------------------------------- */

static void release_claim(void) { __atomic_store_n(&g_claim, 0, __ATOMIC_RELEASE); }

/* The guards every trigger obeys (max_cores; min_interval unless a crash; free space).
 * Returns 0 to go on, else which one said no (counted; SKIPPED names it for the events). */
static const char *const SKIPPED[] = {NULL, "skipped max_cores", "skipped min_interval",
                                      "skipped free_space"};

static int guard(int check_interval)
{
    uint64_t now = gc_now_ns();
    uint64_t last = __atomic_load_n(&g_stats.last_start_ns, __ATOMIC_ACQUIRE);
    if (g_cfg.max_cores && __atomic_load_n(&g_stats.cores, __ATOMIC_ACQUIRE) >= g_cfg.max_cores) {
        __atomic_add_fetch(&g_stats.skipped_limit, 1, __ATOMIC_ACQ_REL);
        return 1;
    }
    if (check_interval && last && g_cfg.min_interval_ns && now - last < g_cfg.min_interval_ns) {
        __atomic_add_fetch(&g_stats.skipped_interval, 1, __ATOMIC_ACQ_REL);
        return 2;
    }
    if (!enough_space()) {
        __atomic_add_fetch(&g_stats.skipped_space, 1, __ATOMIC_ACQ_REL);
        return 3;
    }
    return 0;
}

/* Take the claim (one dump at a time) and apply the guards: 1 when the caller may dump and
 * owns the claim. A trigger that finds a dump running is merged into it. */
static int claim_dump(void)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&g_claim, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&g_stats.merged, 1, __ATOMIC_ACQ_REL);
        return 0;
    }
    if (!__atomic_load_n(&g_active, __ATOMIC_ACQUIRE) || gc_getpid() != g_cfg.pid) {
        release_claim(); /* uninstalled, or a forked child that did not re-install */
        return 0;
    }
    int skip = guard(1);
    if (skip) {
        event(SKIPPED[skip], NULL, 0, 0, 0);
        release_claim();
        return 0;
    }
    return 1;
}

/* Start a claimed dump; 0 when the snapshot child runs (counted), else the claim is released. */
static int claimed_dump(struct job *j, int sig, siginfo_t *info, const void *uc,
                        unsigned char *note, size_t note_len, int32_t first_tid)
{
    uint64_t now = gc_now_ns();
    gc_memzero(j, sizeof *j);
    int rc = start_dump(j, sig, info, uc, note, note_len, first_tid);
    if (rc == -EBUSY) {
        __atomic_add_fetch(&g_stats.merged, 1, __ATOMIC_ACQ_REL); /* a snapshot is under way */
        release_claim();
        return rc;
    }
    if (rc < 0) {
        __atomic_add_fetch(&g_stats.failed, 1, __ATOMIC_ACQ_REL);
        event("error", j->final, -rc, GC_STAGE_SETUP, 1);
        release_claim();
        return rc;
    }
    __atomic_add_fetch(&g_stats.cores, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&g_stats.last_start_ns, now, __ATOMIC_RELEASE);
    event("start", j->final, 0, 0, 0);
    return 0;
}

static void trigger_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno;
    struct job j;
    if (claim_dump()) {
        stamp_note(g_cfg.note, g_cfg.note_len, g_cfg.note_time_offset);
        /* The reaper owns the job (and the claim) from here. */
        if (claimed_dump(&j, sig, info, uc, g_cfg.note, g_cfg.note_len, 0) == 0 &&
            gc_write(g_reaper_wfd, &j, sizeof j) != (long)sizeof j) {
            struct gc_status st;
            follow_child(&j, 0, 0, &st); /* cannot happen with a live reaper: no zombie */
            release_claim();
        }
    }
    errno = saved_errno;
}

/* Run the helper (`python -m gencore._helper bundle ... CORE`) for a finished core, from this
 * native thread: no GIL needed, so it works while the application is stuck. The helper writes
 * its own "bundle" or "bundle-error" event. */
static void run_helper(const struct job *j)
{
    g_helper_argv[g_helper_argc] = (char *)j->final;
    g_helper_argv[g_helper_argc + 1] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, g_helper_argv[0], &fa, NULL, g_helper_argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        event("bundle-error", "cannot start the bundle helper", 0, 0, 0);
        return;
    }
    /* An application reaper or SIGCHLD=SIG_IGN may take the helper's status: its event line
     * says how it went either way. */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

/* Split a NUL-separated command (copied into buf, 8192 bytes) into out[], NULL-terminated;
 * returns the argument count or -EINVAL. */
static int split_command(const char *argv, size_t len, char *buf, char **out)
{
    int n = 0;
    out[0] = NULL;
    if (!argv || !len) return 0;
    if (len >= 8192 || argv[len - 1] != 0) return -EINVAL;
    memcpy(buf, argv, len);
    for (size_t at = 0; at < len; at += strlen(buf + at) + 1) {
        if (n >= HELPER_ARGS) return -EINVAL;
        out[n++] = buf + at;
    }
    out[n] = NULL;
    return n;
}

static int set_helper(const char *argv, size_t len)
{
    g_helper_argc = g_pipe_argc = 0;
    int n = split_command(argv, len, g_helper, g_helper_argv);
    if (n < 0) return n;
    g_helper_argc = n;
    n = split_command(g_cfg.pipe_argv, g_cfg.pipe_argv_len, g_pipe, g_pipe_argv);
    if (n < 0) return n;
    g_pipe_argc = n;
    return 0;
}

/* A running dump to its end: reaped, published, the bundle helper run, Python told (through
 * the notify pipe and a probe thread), the claim released. */
static void finish_job(struct job *j);

/* ---- the watchdog ----------------------------------------------------------------------- */

enum { W_GIL, W_LOOP, W_HEARTBEAT, W_RSS };
static const char *const W_REASONS[] = {"hang: gil", "hang: loop", "hang: heartbeat",
                                        "memory: rss"};

static struct {
    uint64_t probe_sent_ns; /* a probe thread waits for the GIL since then (0: none) */
    uint64_t probe_done_ns;
    int quiesced;           /* interpreter exit: no more probe threads */
    int wake;               /* Python has results to deliver, or a time zone to refresh */
    uint64_t next_tz_ns;
    int gil_episode;
    uint64_t hb_ns;
    int32_t hb_tid;
    int hb_episode;
    struct {
        uint64_t beat_ns;
        int32_t tid;
        int armed, episode;
    } loops[GC_WATCH_LOOPS];
    uint64_t next_rss_ns;
    int rss_episode;
} g_w;

#define TZ_REFRESH_NS 300000000000ull

static int watching(void)
{
    return g_cfg.hang_timeout_ns || g_cfg.heartbeat_timeout_ns || g_cfg.rss_limit_bytes;
}

/* Fill a fixed-width placeholder of the note: text, then spaces (JSON whitespace). */
static void fill_field(long off, size_t cap, const char *text, size_t len)
{
    if (off < 0 || (size_t)off + cap > g_cfg.watch_note_len) return;
    unsigned char *d = g_cfg.watch_note + off;
    for (size_t i = 0; i < cap; i++) d[i] = i < len ? (unsigned char)text[i] : ' ';
}

/* A stall or the memory limit: one core through the signal trigger's path, from this thread,
 * with the stalled thread's notes first. value: stalled ns, or resident bytes. */
static void watch_dump(int kind, int32_t first_tid, uint64_t value)
{
    if (kind == W_RSS)
        __atomic_add_fetch(&g_stats.memory, 1, __ATOMIC_ACQ_REL);
    else
        __atomic_add_fetch(&g_stats.hangs, 1, __ATOMIC_ACQ_REL);
    char text[GC_WATCH_DETAIL_CAP + 1];
    size_t pos = 0;
    gc_fmt_str(text, sizeof text, &pos, "\"");
    gc_fmt_str(text, sizeof text, &pos, W_REASONS[kind]);
    gc_fmt_str(text, sizeof text, &pos, "\"");
    event("watch", W_REASONS[kind], (int64_t)value, 0, 1);
    if (!claim_dump()) return;
    fill_field(g_cfg.watch_note_reason_offset, GC_WATCH_REASON_CAP, text, pos);
    pos = 0;
    if (kind == W_RSS) {
        gc_fmt_str(text, sizeof text, &pos, "{\"rss_bytes\":");
        gc_fmt_u64(text, sizeof text, &pos, value);
        gc_fmt_str(text, sizeof text, &pos, ",\"rss_limit\":");
        gc_fmt_u64(text, sizeof text, &pos, g_cfg.rss_limit_bytes);
    } else {
        gc_fmt_str(text, sizeof text, &pos, "{\"stalled_seconds\":");
        gc_fmt_u64(text, sizeof text, &pos, value / 1000000000ull);
        gc_fmt_str(text, sizeof text, &pos, ".");
        gc_fmt_u64_pad(text, sizeof text, &pos, value / 1000000ull % 1000, 3);
        gc_fmt_str(text, sizeof text, &pos, ",\"tid\":");
        gc_fmt_u64(text, sizeof text, &pos, (uint64_t)first_tid);
    }
    gc_fmt_str(text, sizeof text, &pos, "}");
    fill_field(g_cfg.watch_note_detail_offset, GC_WATCH_DETAIL_CAP, text, pos);
    stamp_note(g_cfg.watch_note, g_cfg.watch_note_len, g_cfg.watch_note_time_offset);
    struct job j;
    if (claimed_dump(&j, 0, NULL, NULL, g_cfg.watch_note, g_cfg.watch_note_len, first_tid) == 0)
        finish_job(&j); /* this thread follows it: no other check runs meanwhile */
}

static void start_probe(uint64_t now)
{
    if (!g_cfg.start_probe || __atomic_load_n(&g_w.quiesced, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&g_w.probe_sent_ns, now, __ATOMIC_RELEASE);
    if (g_cfg.start_probe() < 0) __atomic_store_n(&g_w.probe_sent_ns, 0, __ATOMIC_RELEASE);
}

/* Called every tick of the helper thread: stalls, memory, and Python's deliveries. */
static void watch_tick(void)
{
    uint64_t now = gc_now_ns();
    uint64_t sent = __atomic_load_n(&g_w.probe_sent_ns, __ATOMIC_ACQUIRE);
    int32_t main_tid = g_cfg.pid;
    if (now >= g_w.next_tz_ns) {
        g_w.next_tz_ns = now + TZ_REFRESH_NS;
        __atomic_store_n(&g_w.wake, 1, __ATOMIC_RELEASE);
    }
    uint64_t hang = g_cfg.hang_timeout_ns;
    /* Probes and loop beats come every `period` (Python uses the same rule for beats). */
    uint64_t period = hang / 4 < 1000000000ull ? hang / 4 : 1000000000ull;
    if (sent) {
        /* Nobody could take the GIL since `sent`: a thread holds it and never lets go. */
        if (hang && now - sent > hang && !g_w.gil_episode) {
            g_w.gil_episode = 1;
            watch_dump(W_GIL, main_tid, now - sent);
        }
    } else {
        g_w.gil_episode = 0;
        uint64_t done = __atomic_load_n(&g_w.probe_done_ns, __ATOMIC_ACQUIRE);
        if ((hang && now - done >= period) || __atomic_load_n(&g_w.wake, __ATOMIC_ACQUIRE))
            start_probe(now);
    }
    for (int i = 0; hang && i < GC_WATCH_LOOPS; i++) {
        if (!__atomic_load_n(&g_w.loops[i].armed, __ATOMIC_ACQUIRE)) continue;
        /* The next beat was due `period` after the last one: the loop has run no callback
         * since then at the latest, so a stall is reported only once it lasted `hang`. */
        uint64_t due = __atomic_load_n(&g_w.loops[i].beat_ns, __ATOMIC_ACQUIRE) + period;
        if (now > due && now - due > hang &&
            !__atomic_load_n(&g_w.loops[i].episode, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&g_w.loops[i].episode, 1, __ATOMIC_RELEASE);
            watch_dump(W_LOOP, __atomic_load_n(&g_w.loops[i].tid, __ATOMIC_ACQUIRE), now - due);
        }
    }
    uint64_t hb = __atomic_load_n(&g_w.hb_ns, __ATOMIC_ACQUIRE);
    if (g_cfg.heartbeat_timeout_ns && hb && now > hb && now - hb > g_cfg.heartbeat_timeout_ns &&
        !__atomic_load_n(&g_w.hb_episode, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&g_w.hb_episode, 1, __ATOMIC_RELEASE);
        watch_dump(W_HEARTBEAT, __atomic_load_n(&g_w.hb_tid, __ATOMIC_ACQUIRE), now - hb);
    }
    if (g_cfg.rss_limit_bytes && now >= g_w.next_rss_ns) {
        g_w.next_rss_ns = now + g_cfg.rss_interval_ns;
        uint64_t rss = resident_bytes();
        if (rss > g_cfg.rss_limit_bytes && !g_w.rss_episode) {
            g_w.rss_episode = 1;
            watch_dump(W_RSS, main_tid, rss);
        } else if (rss < g_cfg.rss_limit_bytes / 10 * 9) {
            g_w.rss_episode = 0;
        }
    }
}

int gc_trigger_probe_done(void)
{
    __atomic_add_fetch(&g_stats.probes, 1, __ATOMIC_ACQ_REL);
    int wake = __atomic_exchange_n(&g_w.wake, 0, __ATOMIC_ACQ_REL);
    __atomic_store_n(&g_w.probe_done_ns, gc_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.probe_sent_ns, 0, __ATOMIC_RELEASE);
    return wake && __atomic_load_n(&g_active, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&g_w.quiesced, __ATOMIC_ACQUIRE);
}

void gc_trigger_quiesce(void) { __atomic_store_n(&g_w.quiesced, 1, __ATOMIC_RELEASE); }

void gc_watch_heartbeat(int32_t tid)
{
    __atomic_store_n(&g_w.hb_tid, tid, __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.hb_ns, gc_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.hb_episode, 0, __ATOMIC_RELEASE);
}

int gc_watch_loop_beat(int slot, int32_t tid)
{
    if (slot < 0 || slot >= GC_WATCH_LOOPS) return -EINVAL;
    __atomic_store_n(&g_w.loops[slot].tid, tid, __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.loops[slot].beat_ns, gc_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.loops[slot].episode, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.loops[slot].armed, 1, __ATOMIC_RELEASE);
    return 0;
}

void gc_watch_loop_stop(int slot)
{
    if (slot >= 0 && slot < GC_WATCH_LOOPS)
        __atomic_store_n(&g_w.loops[slot].armed, 0, __ATOMIC_RELEASE);
}

static void finish_job(struct job *j)
{
    struct gc_status last;
    int rc = follow_child(j, g_cfg.timeout_ns, 1, &last);
    struct gc_trigger_result res;
    gc_memzero(&res, sizeof res);
    res.kind = rc == 0 ? 1 : 2;
    res.err = -rc;
    res.stage = last.stage;
    res.written = last.written;
    res.total = last.total;
    res.file_size = last.file_size;
    res.elapsed_ns = gc_now_ns() - j->start_ns;
    gc_memcopy(res.name, j->final,
               sizeof res.name < sizeof j->final ? sizeof res.name : sizeof j->final);
    if (rc != 0) {
        __atomic_add_fetch(&g_stats.failed, 1, __ATOMIC_ACQ_REL);
        event("error", j->final, -rc, last.stage, 1);
    } else {
        event("done", j->final, 0, 0, 0);
    }
    /* The core is out: the next trigger may dump while the helper bundles or uploads this
     * one (its job waits in the pipe until this thread is back). */
    release_claim();
    if (rc == 0 && g_helper_argc) run_helper(j);
    if (g_cfg.notify_fd >= 0 && gc_write(g_cfg.notify_fd, &res, sizeof res) == sizeof res)
        __atomic_store_n(&g_w.wake, 1, __ATOMIC_RELEASE); /* the next tick starts a probe */
}

/* The one native helper thread, named "gencore": follows signal dumps, runs the watchdog,
 * gives new threads an alternate stack for the crash handler. It never needs the GIL. */
static void *reaper_main(void *arg)
{
    (void)arg;
    /* Trigger signals go to application threads, so the core shows one of them interrupted.
     * The freeze signal stays open: this thread is frozen like any other. */
    sigset_t mask;
    sigemptyset(&mask);
    for (int i = 0; i < g_cfg.nsignals; i++) sigaddset(&mask, g_cfg.signals[i]);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    prctl(PR_SET_NAME, "gencore", 0, 0, 0); /* what debuggers show for this thread */
    int tick_ms = g_altstacks ? 50 : watching() ? 100 : 1000;
    g_w.next_tz_ns = gc_now_ns() + TZ_REFRESH_NS;
    struct job j;
    for (;;) {
        struct pollfd p = {g_reaper_rfd, POLLIN, 0};
        long pr = gc_poll(&p, 1, tick_ms);
        if (pr == 0 || pr == -EINTR) {
            if (g_altstacks) gc_altstack_scan(); /* threads started since */
            watch_tick();
            continue;
        }
        long n = gc_read(g_reaper_rfd, &j, sizeof j);
        if (n == -EINTR) continue;
        if (n != (long)sizeof j) break; /* uninstall closed the pipe */
        finish_job(&j);
    }
    return NULL;
}

/* ---- the crash trigger ------------------------------------------------------------------ */

static int crash_index(int sig)
{
    for (int i = 0; i < g_cfg.ncrash; i++)
        if (g_cfg.crash_signals[i] == sig) return i;
    return -1;
}

static void say(const char *a, const char *b)
{
    char line[256];
    size_t pos = 0;
    gc_fmt_str(line, sizeof line, &pos, "gencore: ");
    gc_fmt_str(line, sizeof line, &pos, a);
    if (b) gc_fmt_str(line, sizeof line, &pos, b);
    line[pos++] = '\n';
    gc_write(2, line, pos);
}

static void crash_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno; /* restored on the one way out, as faulthandler does */
    int idx = crash_index(sig);
    int expected = 0;
    int first = __atomic_compare_exchange_n(&g_crashing, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE);
    if (first && __atomic_load_n(&g_active, __ATOMIC_ACQUIRE) && gc_getpid() == g_cfg.pid &&
        !guard(0)) {
        struct job j;
        gc_memzero(&j, sizeof j);
        stamp_note(g_cfg.crash_note, g_cfg.crash_note_len, g_cfg.crash_note_time_offset);
        int rc = start_dump(&j, sig, info, uc, g_cfg.crash_note, g_cfg.crash_note_len, 0);
        if (rc == 0) {
            __atomic_add_fetch(&g_stats.cores, 1, __ATOMIC_ACQ_REL);
            event("start", j.final, 0, 0, 0);
            struct gc_status last;
            rc = follow_child(&j, g_cfg.crash_timeout_ns, 0, &last);
        }
        if (rc == 0) {
            event("done", j.final, 0, 0, 0);
            say("crash core written: ", j.final);
        } else {
            event("error", j.final, -rc, 0, 1);
            say("crash core failed", NULL);
        }
    }
    if (first) {
        __atomic_store_n(&g_crash_done, 1, __ATOMIC_RELEASE);
    } else {
        /* Another thread crashed first and is writing the core: let it finish (bounded). */
        uint64_t until = gc_now_ns() + (g_cfg.crash_timeout_ns ? g_cfg.crash_timeout_ns
                                                                : 60000000000ull);
        while (!__atomic_load_n(&g_crash_done, __ATOMIC_ACQUIRE) && gc_now_ns() < until) {
            struct {
                long sec, nsec;
            } ts = {0, 10000000};
            gc_sys2(SYS_nanosleep, &ts, 0);
        }
    }
    /* Die as we would have: the previous action comes back and the signal is raised again.
     * A fault re-executes the faulting instruction on return; a sent signal is re-sent. */
    if (idx >= 0 && g_crash_old_valid[idx])
        sigaction(sig, &g_crash_old[idx], NULL);
    else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    }
    if (!info || info->si_code <= 0) gc_sys3(SYS_tgkill, gc_getpid(), gc_gettid(), sig);
    errno = saved_errno;
}

/* ---- install / uninstall ---------------------------------------------------------------- */

/* The notes live in one private mapping left out of cores (they are in the GENCORE note). */
static int map_notes(const struct gc_trigger_config *c)
{
    size_t total = c->note_len + c->crash_note_len + c->watch_note_len;
    size_t size = (total + 4095) & ~(size_t)4095;
    if (!size) size = 4096;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -errno;
    madvise(m, size, MADV_DONTDUMP);
    g_notes_map = m;
    g_notes_map_size = size;
    g_cfg.note = m;
    g_cfg.crash_note = g_cfg.note + c->note_len;
    g_cfg.watch_note = g_cfg.crash_note + c->crash_note_len;
    if (c->note_len) memcpy(g_cfg.note, c->note, c->note_len);
    if (c->crash_note_len) memcpy(g_cfg.crash_note, c->crash_note, c->crash_note_len);
    if (c->watch_note_len) memcpy(g_cfg.watch_note, c->watch_note, c->watch_note_len);
    return 0;
}

/* Install handler for every signal of sigs, keeping the previous actions. */
static int set_handlers(const int *sigs, int n, void (*handler)(int, siginfo_t *, void *),
                        int flags, struct sigaction *old, int *valid)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < n; i++) {
        if (sigaction(sigs[i], &sa, &old[i]) < 0) return -errno;
        valid[i] = 1;
    }
    return 0;
}

int gc_trigger_install(const struct gc_trigger_config *c)
{
    if (__atomic_load_n(&g_active, __ATOMIC_ACQUIRE)) return -EALREADY;
    /* Hold the claim until everything is ready: a signal arriving meanwhile is merged. */
    __atomic_store_n(&g_claim, 1, __ATOMIC_RELEASE);
    g_cfg = *c;
    int rc = set_helper(c->helper_argv, c->helper_argv_len);
    if (rc < 0) {
        release_claim();
        return rc;
    }
    g_have_pylayout = c->pylayout != NULL;
    if (c->pylayout) g_pylayout = *c->pylayout;
    g_cfg.helper_argv = g_cfg.pipe_argv = NULL;
    g_cfg.pylayout = NULL;
    memset(&g_w, 0, sizeof g_w);
    if (g_cfg.rss_limit_bytes && !g_cfg.rss_interval_ns) g_cfg.rss_interval_ns = 500000000ull;
    long page = (long)getauxval(AT_PAGESZ);
    g_page_size = page > 0 ? (uint64_t)page : 4096;
    rc = map_notes(c);
    if (rc < 0) {
        release_claim();
        return rc;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        rc = -errno;
        goto fail_notes;
    }
    g_reaper_rfd = pfd[0];
    g_reaper_wfd = pfd[1];
    if (c->ncrash && c->altstack_signal > 0) {
        rc = gc_altstack_start(c->altstack_signal);
        if (rc < 0) goto fail_pipe;
        g_altstacks = 1;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the reaper sets its own mask */
    rc = -pthread_create(&g_reaper, NULL, reaper_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) goto fail_altstacks;
    g_reaper_started = 1;

    if ((rc = set_handlers(c->signals, c->nsignals, trigger_handler, SA_RESTART, g_old,
                           g_old_valid)) < 0 ||
        (rc = set_handlers(c->crash_signals, c->ncrash, crash_handler, SA_NODEFER | SA_ONSTACK,
                           g_crash_old, g_crash_old_valid)) < 0)
        goto fail_signals;
    __atomic_store_n(&g_crashing, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_crash_done, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_active, 1, __ATOMIC_RELEASE);
    release_claim();
    return 0;

fail_signals:
    gc_trigger_uninstall();
    return rc;
fail_altstacks:
    if (g_altstacks) gc_altstack_stop();
    g_altstacks = 0;
fail_pipe:
    close(pfd[0]);
    close(pfd[1]);
    g_reaper_rfd = g_reaper_wfd = -1;
fail_notes:
    munmap(g_notes_map, g_notes_map_size);
    g_notes_map = NULL;
    release_claim();
    return rc;
}

static void restore(int sig, struct sigaction *old, int *valid, void *ours)
{
    if (!*valid) return;
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        (void *)cur.sa_sigaction == ours)
        sigaction(sig, old, NULL); /* only if nobody replaced us since */
    *valid = 0;
}

void gc_trigger_uninstall(void)
{
    __atomic_store_n(&g_active, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < g_cfg.nsignals; i++)
        restore(g_cfg.signals[i], &g_old[i], &g_old_valid[i], (void *)trigger_handler);
    for (int i = 0; i < g_cfg.ncrash; i++)
        restore(g_cfg.crash_signals[i], &g_crash_old[i], &g_crash_old_valid[i],
                (void *)crash_handler);
    /* Wait for a dump in flight to finish: take the claim ourselves. */
    int expected = 0;
    while (!__atomic_compare_exchange_n(&g_claim, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
        expected = 0;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (g_reaper_wfd >= 0) close(g_reaper_wfd);
    if (g_reaper_started) pthread_join(g_reaper, NULL);
    g_reaper_started = 0;
    if (g_reaper_rfd >= 0) close(g_reaper_rfd);
    g_reaper_rfd = g_reaper_wfd = -1;
    /* The crash handlers are gone and the reaper has stopped: the stacks can go back. */
    if (g_altstacks) gc_altstack_stop();
    g_altstacks = 0;
    if (g_notes_map) munmap(g_notes_map, g_notes_map_size);
    g_notes_map = NULL;
    g_cfg.nsignals = g_cfg.ncrash = 0;
    release_claim();
}

int gc_trigger_active(void) { return __atomic_load_n(&g_active, __ATOMIC_ACQUIRE); }

void gc_trigger_set_tz(int64_t offset) { __atomic_store_n(&g_cfg.tz_offset, offset, __ATOMIC_RELEASE); }

void gc_trigger_after_fork_child(void)
{
    /* The reaper thread does not exist in a forked child; its pipe and the handlers' state
     * belong to the parent. Forget them without touching the signal actions (install again
     * restores/replaces them). */
    __atomic_store_n(&g_active, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < g_cfg.nsignals; i++)
        if (g_old_valid[i]) sigaction(g_cfg.signals[i], &g_old[i], NULL);
    for (int i = 0; i < g_cfg.ncrash; i++)
        if (g_crash_old_valid[i]) sigaction(g_cfg.crash_signals[i], &g_crash_old[i], NULL);
    memset(g_old_valid, 0, sizeof g_old_valid);
    memset(g_crash_old_valid, 0, sizeof g_crash_old_valid);
    g_cfg.nsignals = g_cfg.ncrash = 0;
    g_reaper_started = 0;
    gc_altstack_forget();
    g_altstacks = 0;
    if (g_reaper_rfd >= 0) close(g_reaper_rfd);
    if (g_reaper_wfd >= 0) close(g_reaper_wfd);
    g_reaper_rfd = g_reaper_wfd = -1;
    if (g_notes_map) munmap(g_notes_map, g_notes_map_size);
    g_notes_map = NULL;
    memset(&g_stats, 0, sizeof g_stats);
    memset(&g_w, 0, sizeof g_w); /* no probe thread exists here */
    __atomic_store_n(&g_claim, 0, __ATOMIC_RELEASE);
}

int gc_trigger_claim_python(void)
{
    /* A dump decided in Python (an unhandled exception) obeys the same guards. */
    int skip = guard(1);
    if (skip) {
        event(SKIPPED[skip], NULL, 0, 0, 0);
        return skip;
    }
    __atomic_add_fetch(&g_stats.cores, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&g_stats.last_start_ns, gc_now_ns(), __ATOMIC_RELEASE);
    return 0;
}
