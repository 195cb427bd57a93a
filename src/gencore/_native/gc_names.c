/* Core file names (see gc_names.h). */
#include "gc_names.h"
#include "gc_sys.h"

static uint32_t g_seq;

uint32_t gc_next_seq(void) { return __atomic_add_fetch(&g_seq, 1, __ATOMIC_ACQ_REL); }

uint64_t gc_realtime_s(void)
{
    struct {
        long sec, nsec;
    } ts;
    gc_sys2(SYS_clock_gettime, 0 /* CLOCK_REALTIME */, &ts);
    return (uint64_t)ts.sec;
}

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
