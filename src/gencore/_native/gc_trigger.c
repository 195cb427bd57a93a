/* Triggers: the configuration in force, the guards every trigger obeys, the events file.
 *
 * A core on a signal (kill -USR2) or a crash is taken by the signal handler itself
 * (gc_handlers.c), a hang or memory core by the helper thread (gc_watchdog.c), so that they
 * work while no Python code can run (a thread stuck in C holding the GIL). The helper thread
 * (gc_reaper.c) follows each core to its end. One core at a time: a trigger that arrives while
 * one is in flight is merged into it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <time.h>

#include "gc_altstack.h"
#include "gc_procfs.h"
#include "gc_sys.h"
#include "gc_trigger_int.h"

static struct {
    struct gc_trigger_config cfg; /* cfg.core: how every triggered core is taken */
    struct gc_job_spec spec;
    struct gc_argv pipe, helper;
    struct gc_trig_note notes[GC_NOTE_N];
    unsigned char *map; /* the data blob's copy (notes, commands), left out of cores */
    size_t map_size;
    int32_t pid;
    int active; /* handlers act only while 1 */
    int claim;  /* 1 while a core is in flight (merging) */
    uint64_t page_size;
    struct gc_trigger_stats stats;
} g_trig = {.page_size = 4096};

const struct gc_trigger_config *gc_trig_config(void) { return &g_trig.cfg; }
const struct gc_job_spec *gc_trig_spec(void) { return &g_trig.spec; }
struct gc_trigger_stats *gc_trig_stats(void) { return &g_trig.stats; }
const struct gc_trig_note *gc_trig_note(enum gc_note_kind kind) { return &g_trig.notes[kind]; }
uint64_t gc_page_size(void) { return g_trig.page_size; }
char **gc_trig_helper_argv(void) { return g_trig.helper.argc ? g_trig.helper.argv : NULL; }

int gc_trig_is_active(void)
{
    return __atomic_load_n(&g_trig.active, __ATOMIC_ACQUIRE) && gc_getpid() == g_trig.pid;
}

void gc_trigger_get_stats(struct gc_trigger_stats *out)
{
    const struct gc_trigger_stats *s = &g_trig.stats;
    out->cores = __atomic_load_n(&s->cores, __ATOMIC_ACQUIRE);
    out->merged = __atomic_load_n(&s->merged, __ATOMIC_ACQUIRE);
    out->skipped_limit = __atomic_load_n(&s->skipped_limit, __ATOMIC_ACQUIRE);
    out->skipped_interval = __atomic_load_n(&s->skipped_interval, __ATOMIC_ACQUIRE);
    out->skipped_space = __atomic_load_n(&s->skipped_space, __ATOMIC_ACQUIRE);
    out->failed = __atomic_load_n(&s->failed, __ATOMIC_ACQUIRE);
    out->last_start_ns = __atomic_load_n(&s->last_start_ns, __ATOMIC_ACQUIRE);
    out->altstacks = gc_altstack_count();
    out->hangs = __atomic_load_n(&s->hangs, __ATOMIC_ACQUIRE);
    out->memory = __atomic_load_n(&s->memory, __ATOMIC_ACQUIRE);
    out->probes = __atomic_load_n(&s->probes, __ATOMIC_ACQUIRE);
}

/* ---- events and notes (async-signal-safe) ------------------------------------------------ */

void gc_event(const char *what, const char *name, int64_t a, int64_t b, int with_ab)
{
    int fd = g_trig.cfg.events_fd;
    if (fd < 0) return;
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
    gc_write(fd, line, pos);
}

/* The capture time into a note's fixed-width "time" place: 10 digits, '.', 6 digits. */
static void stamp_note(const struct gc_trig_note *n)
{
    if (n->time_off < 0 || (size_t)n->time_off + 17 > n->len) return;
    struct {
        long sec, nsec;
    } ts;
    gc_sys2(SYS_clock_gettime, 0, &ts);
    char buf[24];
    size_t pos = 0;
    gc_fmt_u64_pad(buf, sizeof buf, &pos, (uint64_t)ts.sec % 10000000000ull, 10);
    buf[pos++] = '.';
    gc_fmt_u64_pad(buf, sizeof buf, &pos, (uint64_t)ts.nsec / 1000, 6);
    gc_memcopy(n->p + n->time_off, buf, 17);
}

void gc_trig_fill_watch_note(long off, size_t cap, const char *text, size_t len)
{
    const struct gc_trig_note *n = &g_trig.notes[GC_NOTE_WATCH];
    if (off < 0 || (size_t)off + cap > n->len) return;
    unsigned char *d = n->p + off;
    for (size_t i = 0; i < cap; i++) d[i] = i < len ? (unsigned char)text[i] : ' ';
}

uint64_t gc_resident_bytes(void)
{
    char buf[128];
    if (gc_read_small("/proc/self/statm", buf, sizeof buf) <= 0) return 0;
    return gc_second_field(buf) * g_trig.page_size;
}

/* ---- guards and the claim ---------------------------------------------------------------- */

static int enough_space(void)
{
    struct statfs st;
    if (gc_sys2(SYS_fstatfs, g_trig.cfg.dir_fd, &st) != 0) return 1;
    uint64_t free_b = (uint64_t)st.f_bavail * (uint64_t)st.f_bsize;
    return free_b >= gc_resident_bytes() + g_trig.cfg.min_free_bytes;
}

static const char *const SKIPPED[] = {NULL, "skipped max_cores", "skipped min_interval",
                                      "skipped free_space"};

int gc_trig_guard(int check_interval)
{
    struct gc_trigger_stats *st = &g_trig.stats;
    const struct gc_trigger_config *c = &g_trig.cfg;
    uint64_t now = gc_now_ns();
    uint64_t last = __atomic_load_n(&st->last_start_ns, __ATOMIC_ACQUIRE);
    int skip = 0;
    if (c->max_cores && __atomic_load_n(&st->cores, __ATOMIC_ACQUIRE) >= c->max_cores) {
        __atomic_add_fetch(&st->skipped_limit, 1, __ATOMIC_ACQ_REL);
        skip = 1;
    } else if (check_interval && last && c->min_interval_ns && now - last < c->min_interval_ns) {
        __atomic_add_fetch(&st->skipped_interval, 1, __ATOMIC_ACQ_REL);
        skip = 2;
    } else if (!enough_space()) {
        __atomic_add_fetch(&st->skipped_space, 1, __ATOMIC_ACQ_REL);
        skip = 3;
    }
    if (skip) gc_event(SKIPPED[skip], NULL, 0, 0, 0);
    return skip;
}

/* A trigger not honoured on its own: the events file has said why; Python logs it too. */
static void tell_skipped(const char *why)
{
    struct gc_trigger_result res;
    gc_memzero(&res, sizeof res);
    res.kind = 3;
    size_t pos = 0;
    gc_fmt_str(res.name, sizeof res.name, &pos, why);
    gc_reaper_tell(&res);
}

void gc_trig_release(void) { __atomic_store_n(&g_trig.claim, 0, __ATOMIC_RELEASE); }

int gc_trig_claimed(void) { return __atomic_load_n(&g_trig.claim, __ATOMIC_ACQUIRE); }

int gc_trig_claim(void)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&g_trig.claim, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&g_trig.stats.merged, 1, __ATOMIC_ACQ_REL);
        gc_event("merged", NULL, 0, 0, 0);
        tell_skipped("merged");
        return 0;
    }
    if (!gc_trig_is_active()) {
        gc_trig_release(); /* uninstalled, or a forked child that did not re-install */
        return 0;
    }
    int skip = gc_trig_guard(1);
    if (skip) {
        tell_skipped(SKIPPED[skip] + sizeof "skipped");
        gc_trig_release();
        return 0;
    }
    return 1;
}

int gc_trig_start(struct gc_job *j, const struct gc_cause *cause, enum gc_note_kind kind)
{
    struct gc_trigger_stats *st = &g_trig.stats;
    const struct gc_trig_note *note = &g_trig.notes[kind];
    stamp_note(note);
    struct gc_job_spec spec = g_trig.spec;
    spec.note = note->p;
    spec.note_len = note->len;
    spec.tz_offset = __atomic_load_n(&g_trig.cfg.tz_offset, __ATOMIC_ACQUIRE);
    uint64_t now = gc_now_ns();
    int rc = gc_job_start(j, &spec, g_trig.cfg.dir_fd, NULL, cause, NULL);
    if (rc == -EBUSY) {
        __atomic_add_fetch(&st->merged, 1, __ATOMIC_ACQ_REL); /* a snapshot is under way */
    } else if (rc < 0) {
        __atomic_add_fetch(&st->failed, 1, __ATOMIC_ACQ_REL);
        gc_event("error", j->final, -rc, GC_STAGE_SETUP, 1);
    } else {
        __atomic_add_fetch(&st->cores, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&st->last_start_ns, now, __ATOMIC_RELEASE);
        gc_event("start", j->final, 0, 0, 0);
    }
    return rc;
}

int gc_trigger_claim_python(void)
{
    int skip = gc_trig_guard(1);
    if (skip) return skip;
    __atomic_add_fetch(&g_trig.stats.cores, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&g_trig.stats.last_start_ns, gc_now_ns(), __ATOMIC_RELEASE);
    return 0;
}

/* ---- install / uninstall ----------------------------------------------------------------- */

static int in_blob(uint32_t off, uint32_t len, size_t size) { return (uint64_t)off + len <= size; }

static void set_note(enum gc_note_kind kind, uint32_t off, uint32_t len, int64_t time_off)
{
    g_trig.notes[kind].p = g_trig.map + off;
    g_trig.notes[kind].len = len;
    g_trig.notes[kind].time_off = (long)time_off;
}

/* Copy the record and its blob (into a private mapping left out of cores: the notes are in
 * the GENCORE note anyway) and resolve what the blob holds. */
static int take_config(const struct gc_trigger_config *c, const unsigned char *data, size_t len)
{
    if (c->abi != GC_ABI_VERSION || c->nsignals < 0 || c->nsignals > GC_TRIGGER_MAX_SIGNALS ||
        c->ncrash < 0 || c->ncrash > GC_TRIGGER_MAX_SIGNALS || c->nchain < 0 ||
        c->nchain > GC_TRIGGER_MAX_SIGNALS ||
        !in_blob(c->crash_note_off, c->crash_note_len, len) ||
        !in_blob(c->watch_note_off, c->watch_note_len, len) ||
        !in_blob(c->helper_off, c->helper_len, len))
        return -EINVAL;
    g_trig.cfg = *c;
    size_t size = (len + 4095) & ~(size_t)4095;
    void *m = mmap(NULL, size ? size : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED) return -errno;
    madvise(m, size ? size : 4096, MADV_DONTDUMP);
    g_trig.map = m;
    g_trig.map_size = size ? size : 4096;
    if (len) memcpy(m, data, len);
    int rc = gc_job_spec_init(&g_trig.spec, &g_trig.pipe, &g_trig.cfg.core, g_trig.map, len);
    g_trig.spec.events_fd = c->events_fd;
    if (rc == 0)
        rc = gc_argv_split(&g_trig.helper, (const char *)g_trig.map + c->helper_off,
                           c->helper_len);
    if (rc < 0) return rc;
    set_note(GC_NOTE_SIGNAL, c->core.note_off, c->core.note_len, c->note_time_offset);
    set_note(GC_NOTE_CRASH, c->crash_note_off, c->crash_note_len, c->crash_note_time_offset);
    set_note(GC_NOTE_WATCH, c->watch_note_off, c->watch_note_len, c->watch_note_time_offset);
    return 0;
}

static void drop_config(void)
{
    if (g_trig.map) munmap(g_trig.map, g_trig.map_size);
    g_trig.map = NULL;
    memset(g_trig.notes, 0, sizeof g_trig.notes);
    g_trig.cfg.nsignals = g_trig.cfg.ncrash = g_trig.cfg.nchain = 0;
}

int gc_trigger_install(const struct gc_trigger_config *c, const unsigned char *data, size_t len,
                       int (*start_probe)(void))
{
    if (__atomic_load_n(&g_trig.active, __ATOMIC_ACQUIRE)) return -EALREADY;
    /* Hold the claim until everything is ready: a signal arriving meanwhile is merged. */
    __atomic_store_n(&g_trig.claim, 1, __ATOMIC_RELEASE);
    long page = (long)getauxval(AT_PAGESZ);
    g_trig.page_size = page > 0 ? (uint64_t)page : 4096;
    g_trig.pid = (int32_t)gc_getpid();
    int rc = take_config(c, data, len);
    if (rc == 0) {
        gc_watch_reset(&g_trig.cfg);
        gc_watch_set_probe(start_probe);
        rc = gc_reaper_start(&g_trig.cfg);
    }
    if (rc < 0) {
        drop_config();
        gc_trig_release();
        return rc;
    }
    rc = gc_handlers_install(&g_trig.cfg);
    if (rc < 0) {
        gc_trigger_uninstall();
        return rc;
    }
    gc_handlers_reset();
    __atomic_store_n(&g_trig.active, 1, __ATOMIC_RELEASE);
    gc_trig_release();
    return 0;
}

void gc_trigger_uninstall(void)
{
    __atomic_store_n(&g_trig.active, 0, __ATOMIC_RELEASE);
    gc_handlers_uninstall(&g_trig.cfg);
    /* Wait for a core in flight to finish: take the claim ourselves. */
    int expected = 0;
    while (!__atomic_compare_exchange_n(&g_trig.claim, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
        expected = 0;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    gc_reaper_stop(); /* the crash handlers are gone: the alternate stacks can go back */
    drop_config();
    gc_trig_release();
}

int gc_trigger_active(void) { return __atomic_load_n(&g_trig.active, __ATOMIC_ACQUIRE); }

int gc_trigger_rechain(void) { return gc_trig_is_active() ? gc_handlers_rechain(&g_trig.cfg) : 0; }

int gc_trigger_leftover_helpers(int32_t *pids, int cap) { return gc_reaper_helpers(pids, cap); }

void gc_trigger_set_tz(int64_t offset)
{
    __atomic_store_n(&g_trig.cfg.tz_offset, offset, __ATOMIC_RELEASE);
}

void gc_trigger_after_fork_child(void)
{
    /* The helper thread does not exist in a forked child; its pipe and the handlers' state
     * belong to the parent. Forget them (install again restores or replaces the actions). */
    __atomic_store_n(&g_trig.active, 0, __ATOMIC_RELEASE);
    gc_handlers_forget(&g_trig.cfg);
    gc_reaper_forget();
    gc_watch_forget();
    drop_config();
    memset(&g_trig.stats, 0, sizeof g_trig.stats);
    __atomic_store_n(&g_trig.claim, 0, __ATOMIC_RELEASE);
}
