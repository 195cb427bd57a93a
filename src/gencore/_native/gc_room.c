/* Making room in the core directory before a new file appears there: the budget
 * (max_total, keep_free) holds at every instant, not some time after a helper ran.
 *
 * Runs in the snapshot child just before it publishes its core (raw system calls, arena
 * memory). gencore's files are core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq> followed by one of the
 * kinds Python lists once (gencore._common.FILE_KINDS, sent in the core's data blob); files
 * being written have hidden .partial names and never count. The oldest go first; a file not
 * uploaded yet (no .NAME.uploaded marker) when uploads are on goes with a removed-unuploaded
 * event.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "gc_room.h"
#include "gc_sys.h"

#define MAX_FILES 4096
#define NAME_MAX_LEN 111

struct entry {
    uint64_t mtime_ns, bytes;
    char name[NAME_MAX_LEN + 1];
};

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static const char *digits(const char *p, int min, int max)
{
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < max) p++, n++;
    return n >= min ? p : NULL;
}

/* core_<8 digits>.<6 digits>.<pid>.<seq><kind> */
static int is_gencore_file(const char *name, const char *kinds, size_t kinds_len)
{
    if (!gc_startswith(name, "core_")) return 0;
    const char *p = digits(name + 5, 8, 8);
    if (!p || *p++ != '.' || !(p = digits(p, 6, 6)) || *p++ != '.' || !(p = digits(p, 1, 10)) ||
        *p++ != '.' || !(p = digits(p, 1, 10)))
        return 0;
    for (size_t at = 0; at < kinds_len; at += gc_strlen(kinds + at) + 1) {
        const char *k = kinds + at, *q = p;
        while (*k && *q == *k) q++, k++;
        if (!*k && !*q) return 1;
    }
    return 0;
}

static long list_files(const struct gc_room *r, struct entry *out, void *buf, size_t buf_size)
{
    long fd = gc_sys4(SYS_openat, r->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return fd;
    long n = 0, got;
    while ((got = gc_sys3(SYS_getdents64, fd, buf, buf_size)) > 0) {
        for (long off = 0; off < got;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)((char *)buf + off);
            off += d->d_reclen;
            if (n >= MAX_FILES || gc_strlen(d->d_name) > NAME_MAX_LEN ||
                !is_gencore_file(d->d_name, r->kinds, r->kinds_len))
                continue;
            struct stat st;
            if (gc_sys4(SYS_newfstatat, r->dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            out[n].mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + st.st_mtim.tv_nsec;
            out[n].bytes = (uint64_t)st.st_blocks * 512;
            size_t pos = 0;
            gc_fmt_str(out[n].name, sizeof out[n].name, &pos, d->d_name);
            out[n].name[pos] = 0;
            n++;
        }
    }
    gc_close((int)fd);
    return got < 0 ? got : n;
}

static uint64_t free_bytes(int dir_fd)
{
    struct statfs st;
    if (gc_sys2(SYS_fstatfs, dir_fd, &st) != 0) return UINT64_MAX;
    return (uint64_t)st.f_bavail * (uint64_t)st.f_bsize;
}

static void event(int fd, const char *what, const char *name, uint64_t bytes)
{
    if (fd < 0) return;
    char line[256];
    size_t pos = 0;
    gc_fmt_str(line, sizeof line, &pos, what);
    gc_fmt_str(line, sizeof line, &pos, " ");
    gc_fmt_str(line, sizeof line, &pos, name);
    gc_fmt_str(line, sizeof line, &pos, " ");
    gc_fmt_u64(line, sizeof line, &pos, bytes);
    line[pos++] = '\n';
    gc_write(fd, line, pos);
}

/* Remove e (and its upload marker); says which in the events file. */
static void remove_file(const struct gc_room *r, const struct entry *e)
{
    char marker[NAME_MAX_LEN + 16];
    size_t pos = 0;
    gc_fmt_str(marker, sizeof marker, &pos, ".");
    gc_fmt_str(marker, sizeof marker, &pos, e->name);
    gc_fmt_str(marker, sizeof marker, &pos, ".uploaded");
    marker[pos] = 0;
    int uploaded = gc_sys3(SYS_unlinkat, r->dir_fd, marker, 0) == 0;
    if (gc_sys3(SYS_unlinkat, r->dir_fd, e->name, 0) != 0) return;
    event(r->events_fd, r->uploads && !uploaded ? "removed-unuploaded" : "removed", e->name,
          e->bytes);
}

long gc_make_room(const struct gc_room *r, uint64_t new_bytes, struct gc_arena *a)
{
    if (!r->max_total && !r->keep_free) return 0;
    struct entry *files = gc_arena_alloc(a, sizeof *files * MAX_FILES);
    void *buf = gc_arena_alloc(a, 64 << 10);
    if (!files || !buf) return -ENOMEM;
    long n = list_files(r, files, buf, 64 << 10);
    if (n < 0) return n;
    uint64_t total = new_bytes;
    for (long i = 0; i < n; i++) total += files[i].bytes;
    long removed = 0;
    for (;;) {
        int over = (r->max_total && total > r->max_total) ||
                   (r->keep_free && free_bytes(r->dir_fd) < r->keep_free);
        long oldest = -1;
        for (long i = 0; over && i < n; i++) {
            if (!files[i].name[0]) continue;
            if (oldest < 0 || files[i].mtime_ns < files[oldest].mtime_ns ||
                (files[i].mtime_ns == files[oldest].mtime_ns &&
                 gc_strcmp(files[i].name, files[oldest].name) < 0))
                oldest = i;
        }
        if (oldest < 0) return removed; /* within budget, or only the new file is left */
        remove_file(r, &files[oldest]);
        total -= files[oldest].bytes;
        files[oldest].name[0] = 0;
        removed++;
    }
}
