/* The watchdog: stalls and memory, checked on every tick of the helper thread (gc_reaper.c).
 *
 * - GIL: a short-lived probe thread tries to take the GIL every min(1 s, hang/4); when none
 *   could for hang_timeout, a thread holds it and never lets go ("hang: gil").
 * - Event loops: Python schedules a beat on each watched loop; a loop that ran no callback for
 *   hang_timeout is blocked by a handler ("hang: loop").
 * - Heartbeat: gencore.heartbeat() not called for heartbeat_timeout ("hang: heartbeat").
 * - Memory: the resident size above rss_limit ("memory: rss"), again once below 90 %.
 * - Deadlines: armed around a unit of work (a test, a task) by gencore.deadline(); one that
 *   passes before it is ended gives a core ("hang: deadline") with its thread first and its
 *   name in the note, even while that thread holds the GIL in C.
 * Each stall or crossing gives one core, through the triggers' guards, taken from this thread
 * with the stalled thread's notes first. The probes also let Python deliver finished cores.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "gc_cgroup.h"
#include "gc_sys.h"
#include "gc_trigger_int.h"

enum { W_GIL, W_LOOP, W_HEARTBEAT, W_RSS, W_HIGH, W_DEADLINE };
static const char *const W_REASONS[] = {"hang: gil",   "hang: loop",   "hang: heartbeat",
                                        "memory: rss", "memory: high", "hang: deadline"};

/* A deadline's life: FREE -> CLAIMED (being filled) -> ARMED -> FREE when ended in time, or
 * ARMED -> FIRING (its core is being taken) -> FIRED -> FREE when ended; ended while FIRING,
 * it becomes ORPHAN and the helper thread frees it when the core is done. */
enum { D_FREE, D_ARMED, D_FIRED, D_CLAIMED, D_FIRING, D_ORPHAN };
#define D_SLOT_BITS 6 /* a handle is (generation << D_SLOT_BITS) | slot */

struct deadline {
    int state;
    uint32_t gen;
    int32_t tid;
    uint64_t armed_ns, due_ns;
    uint32_t name_len;
    int core_set;
    char name[GC_DEADLINE_NAME_CAP];
    char core[GC_NAME_CAP];
};

/* Outlives gc_watch_reset: a handle from before an install never names a newer deadline. */
static uint32_t g_deadline_gen;
static struct deadline g_dl[GC_WATCH_DEADLINES];
static int g_dl_used; /* a deadline was armed: the helper thread ticks often */

#define TZ_REFRESH_NS 300000000000ull

static struct {
    uint64_t hang_ns, heartbeat_ns, rss_limit, rss_interval_ns;
    int32_t main_tid;
    int (*start_probe)(void);
    uint64_t probe_sent_ns; /* a probe thread waits for the GIL since then (0: none) */
    uint64_t probe_done_ns;
    int quiesced; /* interpreter exit: no more probe threads */
    int wake;     /* Python has results to deliver, or a time zone to refresh */
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
    int memory_high;        /* watch the cgroup's memory.high breaches (v2) */
    uint64_t high_events;   /* memory.events "high" when last read */
    int high_episode;
} g_w;

static void deadlines_clear(void)
{
    for (int i = 0; i < GC_WATCH_DEADLINES; i++)
        __atomic_store_n(&g_dl[i].state, D_FREE, __ATOMIC_RELEASE);
    __atomic_store_n(&g_dl_used, 0, __ATOMIC_RELEASE);
}

void gc_watch_reset(const struct gc_trigger_config *c)
{
    memset(&g_w, 0, sizeof g_w);
    g_w.hang_ns = c->hang_timeout_ns;
    g_w.heartbeat_ns = c->heartbeat_timeout_ns;
    g_w.rss_limit = c->rss_limit_bytes;
    g_w.rss_interval_ns = c->rss_interval_ns ? c->rss_interval_ns : 500000000ull;
    g_w.main_tid = (int32_t)gc_getpid();
    g_w.memory_high = c->memory_high && c->core.cgroup_version == 2;
    if (g_w.memory_high && gc_trig_spec()->cgroup) /* breaches before install do not count */
        g_w.high_events = gc_cgroup_counter(gc_trig_spec()->cgroup, "memory.events", "high");
    g_w.next_tz_ns = gc_now_ns() + TZ_REFRESH_NS;
    deadlines_clear();
}

void gc_watch_set_probe(int (*start_probe)(void)) { g_w.start_probe = start_probe; }

int gc_watch_enabled(void)
{
    return g_w.hang_ns || g_w.heartbeat_ns || g_w.rss_limit || g_w.memory_high ||
           __atomic_load_n(&g_dl_used, __ATOMIC_ACQUIRE);
}

void gc_watch_wake(void) { __atomic_store_n(&g_w.wake, 1, __ATOMIC_RELEASE); }

void gc_watch_forget(void)
{
    memset(&g_w, 0, sizeof g_w); /* no probe thread exists here */
    deadlines_clear();
}

static void fmt_seconds(char *text, size_t cap, size_t *pos, uint64_t ns)
{
    gc_fmt_u64(text, cap, pos, ns / 1000000000ull);
    gc_fmt_str(text, cap, pos, ".");
    gc_fmt_u64_pad(text, cap, pos, ns / 1000000ull % 1000, 3);
}

/* A deadline that passed: what its note says beyond the stall. */
struct deadline_fire {
    uint64_t deadline_ns;
    const char *name; /* JSON string text */
    size_t name_len;
    char *core; /* receives the name of the core started for it */
    int *core_set;
};

/* What the watchdog saw, as the note's "watch" object: {"stalled_seconds":..,"tid":..}, with
 * a deadline's "deadline" and "name", or {"rss_bytes":..,"rss_limit":..}. */
static size_t format_detail(char *text, size_t cap, int kind, int32_t tid, uint64_t value,
                            const struct deadline_fire *df)
{
    size_t pos = 0;
    if (kind == W_RSS) {
        gc_fmt_str(text, cap, &pos, "{\"rss_bytes\":");
        gc_fmt_u64(text, cap, &pos, value);
        gc_fmt_str(text, cap, &pos, ",\"rss_limit\":");
        gc_fmt_u64(text, cap, &pos, g_w.rss_limit);
    } else if (kind == W_HIGH) {
        gc_fmt_str(text, cap, &pos, "{\"cgroup_usage\":");
        gc_fmt_u64(text, cap, &pos, value);
        gc_fmt_str(text, cap, &pos, ",\"high_events\":");
        gc_fmt_u64(text, cap, &pos, g_w.high_events);
    } else {
        gc_fmt_str(text, cap, &pos, "{\"stalled_seconds\":");
        fmt_seconds(text, cap, &pos, value);
        gc_fmt_str(text, cap, &pos, ",\"tid\":");
        gc_fmt_u64(text, cap, &pos, (uint64_t)tid);
        if (df) {
            gc_fmt_str(text, cap, &pos, ",\"deadline\":");
            fmt_seconds(text, cap, &pos, df->deadline_ns);
            gc_fmt_str(text, cap, &pos, ",\"name\":\"");
            for (size_t i = 0; i < df->name_len && pos < cap; i++) text[pos++] = df->name[i];
            gc_fmt_str(text, cap, &pos, "\"");
        }
    }
    gc_fmt_str(text, cap, &pos, "}");
    return pos;
}

/* A stall or the memory limit: one core, followed by this thread (no other check runs
 * meanwhile). value: stalled ns, or resident bytes. */
static void watch_core(int kind, int32_t first_tid, uint64_t value,
                       const struct deadline_fire *df)
{
    const struct gc_trigger_config *c = gc_trig_config();
    struct gc_trigger_stats *st = gc_trig_stats();
    uint32_t *counter = kind == W_RSS || kind == W_HIGH ? &st->memory : &st->hangs;
    __atomic_add_fetch(counter, 1, __ATOMIC_ACQ_REL);
    gc_event("watch", W_REASONS[kind], (int64_t)value, 0, 1);
    if (!gc_trig_claim()) return;
    char text[GC_WATCH_DETAIL_CAP + 1];
    size_t pos = 0;
    gc_fmt_str(text, sizeof text, &pos, "\"");
    gc_fmt_str(text, sizeof text, &pos, W_REASONS[kind]);
    gc_fmt_str(text, sizeof text, &pos, "\"");
    gc_trig_fill_watch_note(c->watch_note_reason_offset, GC_WATCH_REASON_CAP, text, pos);
    pos = format_detail(text, sizeof text, kind, first_tid, value, df);
    gc_trig_fill_watch_note(c->watch_note_detail_offset, GC_WATCH_DETAIL_CAP, text, pos);
    struct gc_cause cause = {0, NULL, NULL, first_tid, 1};
    struct gc_job j;
    if (gc_trig_start(&j, &cause, GC_NOTE_WATCH) < 0) {
        gc_trig_release();
        return;
    }
    if (df) {
        gc_memcopy(df->core, j.final, GC_NAME_CAP);
        df->core[GC_NAME_CAP - 1] = 0;
        __atomic_store_n(df->core_set, 1, __ATOMIC_RELEASE);
    }
    gc_reaper_finish(&j);
}

static void start_probe(uint64_t now)
{
    if (!g_w.start_probe || __atomic_load_n(&g_w.quiesced, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&g_w.probe_sent_ns, now, __ATOMIC_RELEASE);
    if (g_w.start_probe() < 0) __atomic_store_n(&g_w.probe_sent_ns, 0, __ATOMIC_RELEASE);
}

/* The GIL probes (and Python's deliveries, which ride on them). */
static void check_gil(uint64_t now, uint64_t period)
{
    uint64_t sent = __atomic_load_n(&g_w.probe_sent_ns, __ATOMIC_ACQUIRE);
    if (sent) {
        /* Nobody could take the GIL since `sent`: a thread holds it and never lets go. */
        if (g_w.hang_ns && now - sent > g_w.hang_ns && !g_w.gil_episode) {
            g_w.gil_episode = 1;
            watch_core(W_GIL, g_w.main_tid, now - sent, NULL);
        }
        return;
    }
    g_w.gil_episode = 0;
    uint64_t done = __atomic_load_n(&g_w.probe_done_ns, __ATOMIC_ACQUIRE);
    if ((g_w.hang_ns && now - done >= period) || __atomic_load_n(&g_w.wake, __ATOMIC_ACQUIRE))
        start_probe(now);
}

static void check_loops(uint64_t now, uint64_t period)
{
    for (int i = 0; g_w.hang_ns && i < GC_WATCH_LOOPS; i++) {
        if (!__atomic_load_n(&g_w.loops[i].armed, __ATOMIC_ACQUIRE)) continue;
        /* The next beat was due `period` after the last one: the loop has run no callback
         * since then at the latest, so a stall is reported only once it lasted `hang`. */
        uint64_t due = __atomic_load_n(&g_w.loops[i].beat_ns, __ATOMIC_ACQUIRE) + period;
        if (now > due && now - due > g_w.hang_ns &&
            !__atomic_load_n(&g_w.loops[i].episode, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&g_w.loops[i].episode, 1, __ATOMIC_RELEASE);
            watch_core(W_LOOP, __atomic_load_n(&g_w.loops[i].tid, __ATOMIC_ACQUIRE), now - due,
                       NULL);
        }
    }
}

static void check_memory(uint64_t now)
{
    if (!g_w.rss_limit || now < g_w.next_rss_ns) return;
    g_w.next_rss_ns = now + g_w.rss_interval_ns;
    uint64_t rss = gc_resident_bytes();
    if (rss > g_w.rss_limit && !g_w.rss_episode) {
        g_w.rss_episode = 1;
        watch_core(W_RSS, g_w.main_tid, rss, NULL);
    } else if (rss < g_w.rss_limit / 10 * 9) {
        g_w.rss_episode = 0;
    }
}

/* Deadlines that passed: one core each (one at a time; the others wait for the next tick). */
static void check_deadlines(uint64_t now)
{
    if (!__atomic_load_n(&g_dl_used, __ATOMIC_ACQUIRE)) return;
    for (int i = 0; i < GC_WATCH_DEADLINES; i++) {
        struct deadline *d = &g_dl[i];
        int expected = D_ARMED;
        if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != D_ARMED || now < d->due_ns ||
            !__atomic_compare_exchange_n(&d->state, &expected, D_FIRING, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        struct deadline_fire df = {d->due_ns - d->armed_ns, d->name, d->name_len, d->core,
                                   &d->core_set};
        watch_core(W_DEADLINE, d->tid, now - d->armed_ns, &df);
        expected = D_FIRING;
        if (!__atomic_compare_exchange_n(&d->state, &expected, D_FIRED, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            __atomic_store_n(&d->state, D_FREE, __ATOMIC_RELEASE); /* ended meanwhile */
    }
}

/* memory.high (cgroup v2): a breach is counted in memory.events; one core per episode, which
 * ends once usage is back under 90 % of the limit. Read every rss_interval. */
static void check_memory_high(uint64_t now)
{
    const char *dir = gc_trig_spec()->cgroup;
    struct gc_cgroup cg;
    if (!g_w.memory_high || !dir || now < g_w.next_rss_ns || gc_cgroup_read(dir, 2, &cg) < 0)
        return;
    if (!g_w.rss_limit) g_w.next_rss_ns = now + g_w.rss_interval_ns;
    uint64_t events = gc_cgroup_counter(dir, "memory.events", "high");
    if (events > g_w.high_events && !g_w.high_episode) {
        g_w.high_events = events;
        g_w.high_episode = 1;
        watch_core(W_HIGH, g_w.main_tid, cg.usage, NULL);
    } else if (cg.limit && cg.usage < cg.limit / 10 * 9) {
        g_w.high_episode = 0;
    }
    g_w.high_events = events;
}

void gc_watch_tick(void)
{
    uint64_t now = gc_now_ns();
    if (now >= g_w.next_tz_ns) {
        g_w.next_tz_ns = now + TZ_REFRESH_NS;
        gc_watch_wake();
    }
    /* Probes and loop beats come every `period` (Python uses the same rule for beats). */
    uint64_t period = g_w.hang_ns / 4 < 1000000000ull ? g_w.hang_ns / 4 : 1000000000ull;
    check_gil(now, period);
    check_loops(now, period);
    uint64_t hb = __atomic_load_n(&g_w.hb_ns, __ATOMIC_ACQUIRE);
    if (g_w.heartbeat_ns && hb && now > hb && now - hb > g_w.heartbeat_ns &&
        !__atomic_load_n(&g_w.hb_episode, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&g_w.hb_episode, 1, __ATOMIC_RELEASE);
        watch_core(W_HEARTBEAT, __atomic_load_n(&g_w.hb_tid, __ATOMIC_ACQUIRE), now - hb, NULL);
    }
    check_memory_high(now);
    check_memory(now);
    check_deadlines(now);
}

int gc_trigger_probe_done(void)
{
    __atomic_add_fetch(&gc_trig_stats()->probes, 1, __ATOMIC_ACQ_REL);
    int wake = __atomic_exchange_n(&g_w.wake, 0, __ATOMIC_ACQ_REL);
    __atomic_store_n(&g_w.probe_done_ns, gc_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&g_w.probe_sent_ns, 0, __ATOMIC_RELEASE);
    return wake && gc_trigger_active() && !__atomic_load_n(&g_w.quiesced, __ATOMIC_ACQUIRE);
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

int gc_watch_deadline_arm(uint64_t after_ns, int32_t tid, const char *name, size_t len)
{
    if (len > GC_DEADLINE_NAME_CAP) return -EINVAL;
    for (int i = 0; i < GC_WATCH_DEADLINES; i++) {
        struct deadline *d = &g_dl[i];
        int expected = D_FREE;
        if (!__atomic_compare_exchange_n(&d->state, &expected, D_CLAIMED, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        uint32_t gen = __atomic_add_fetch(&g_deadline_gen, 1, __ATOMIC_ACQ_REL) & 0xffffff;
        __atomic_store_n(&d->gen, gen, __ATOMIC_RELEASE);
        d->tid = tid;
        d->armed_ns = gc_now_ns();
        d->due_ns = d->armed_ns + after_ns;
        memcpy(d->name, name, len);
        d->name_len = (uint32_t)len;
        d->core[0] = 0;
        __atomic_store_n(&d->core_set, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&g_dl_used, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&d->state, D_ARMED, __ATOMIC_RELEASE);
        return (int)(gen << D_SLOT_BITS) | i;
    }
    return -ENOSPC;
}

static struct deadline *deadline_of(int handle)
{
    int slot = handle & ((1 << D_SLOT_BITS) - 1);
    if (handle < 0 || slot >= GC_WATCH_DEADLINES) return NULL;
    struct deadline *d = &g_dl[slot];
    return __atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) == (uint32_t)handle >> D_SLOT_BITS ? d : NULL;
}

/* The deadline's state for Python: 1 passed (core: its core's name, or empty), else 0. */
static int deadline_report(struct deadline *d, int state, char *core, size_t cap)
{
    if (cap) core[0] = 0;
    if (state != D_FIRING && state != D_FIRED) return 0;
    if (cap && __atomic_load_n(&d->core_set, __ATOMIC_ACQUIRE)) {
        size_t n = strnlen(d->core, sizeof d->core);
        n = n < cap - 1 ? n : cap - 1;
        memcpy(core, d->core, n);
        core[n] = 0;
    }
    return 1;
}

int gc_watch_deadline_state(int handle, char *core, size_t cap)
{
    struct deadline *d = deadline_of(handle);
    if (!d) return deadline_report(NULL, D_FREE, core, cap);
    return deadline_report(d, __atomic_load_n(&d->state, __ATOMIC_ACQUIRE), core, cap);
}

int gc_watch_deadline_end(int handle, char *core, size_t cap)
{
    struct deadline *d = deadline_of(handle);
    if (!d) return deadline_report(NULL, D_FREE, core, cap);
    for (;;) {
        int s = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
        int next = s == D_ARMED ? D_FREE : s == D_FIRED ? D_FREE : s == D_FIRING ? D_ORPHAN : -1;
        if (next < 0) return deadline_report(d, D_FREE, core, cap); /* already ended */
        int rc = deadline_report(d, s, core, cap);
        if (__atomic_compare_exchange_n(&d->state, &s, next, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return rc;
    }
}
