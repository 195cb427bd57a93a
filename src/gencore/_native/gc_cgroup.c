/* The memory cgroup, read with raw system calls: the snapshot child decides from it whether
 * to keep its page cache bounded (gc_writer.c), the watchdog counts memory.high events. */
#include <errno.h>

#include "gc_cgroup.h"
#include "gc_procfs.h"
#include "gc_sys.h"

#define PATH_CAP 512

static void join(char *buf, const char *dir, const char *file)
{
    size_t pos = 0;
    gc_fmt_str(buf, PATH_CAP, &pos, dir);
    gc_fmt_str(buf, PATH_CAP, &pos, "/");
    gc_fmt_str(buf, PATH_CAP, &pos, file);
    buf[pos] = 0;
}

/* A file holding one number; 0 for "max", a v1 "no limit" (about 2**63) or no file. */
static uint64_t number(const char *dir, const char *file)
{
    char path[PATH_CAP], text[64];
    join(path, dir, file);
    if (gc_read_small(path, text, sizeof text) <= 0 || text[0] < '0' || text[0] > '9') return 0;
    uint64_t v = 0;
    for (const char *p = text; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
    return v >= (1ull << 62) ? 0 : v;
}

int gc_cgroup_read(const char *dir, int version, struct gc_cgroup *out)
{
    out->limit = out->usage = 0;
    if (!dir || !dir[0]) return -ENOENT;
    if (version == 2) {
        uint64_t max = number(dir, "memory.max"), high = number(dir, "memory.high");
        out->limit = max && (!high || max < high) ? max : high;
        out->usage = number(dir, "memory.current");
    } else {
        out->limit = number(dir, "memory.limit_in_bytes");
        out->usage = number(dir, "memory.usage_in_bytes");
    }
    return 0;
}

uint64_t gc_cgroup_counter(const char *dir, const char *file, const char *key)
{
    char path[PATH_CAP], text[1024];
    join(path, dir, file);
    long n = gc_read_small(path, text, sizeof text);
    for (long i = 0; i < n;) {
        const char *line = text + i;
        if (gc_startswith(line, key) && line[gc_strlen(key)] == ' ') {
            uint64_t v = 0;
            for (const char *p = line + gc_strlen(key) + 1; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint64_t)(*p - '0');
            return v;
        }
        while (i < n && text[i] != '\n') i++;
        i++;
    }
    return 0;
}
