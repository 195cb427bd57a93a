/* Async-signal-safe /proc parsing for the snapshot child: raw reads into the arena, no libc. */
#include <errno.h>
#include <fcntl.h>

#include "gc_procfs.h"
#include "gc_sys.h"

void *gc_arena_alloc(struct gc_arena *a, size_t n)
{
    size_t at = (a->used + 15) & ~(size_t)15;
    if (at + n > a->size) return NULL;
    a->used = at + n;
    return a->base + at;
}

long gc_read_small(const char *path, char *buf, size_t cap)
{
    long fd = gc_open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    long n;
    do {
        n = gc_read((int)fd, buf, cap - 1);
    } while (n == -EINTR);
    gc_close((int)fd);
    buf[n > 0 ? n : 0] = 0;
    return n;
}

void gc_task_path(char *buf, size_t cap, int32_t tid, const char *leaf)
{
    size_t pos = 0;
    gc_fmt_str(buf, cap, &pos, "/proc/self/task/");
    gc_fmt_u64(buf, cap, &pos, (uint64_t)tid);
    if (leaf) {
        gc_fmt_str(buf, cap, &pos, "/");
        gc_fmt_str(buf, cap, &pos, leaf);
    }
    buf[pos] = 0;
}

long gc_dir_numbers(int dir_fd, gc_number_fn fn, void *arg)
{
    char buf[8192];
    long visited = 0;
    gc_sys3(SYS_lseek, dir_fd, 0, 0 /* SEEK_SET */);
    for (;;) {
        long n = gc_sys3(SYS_getdents64, dir_fd, buf, sizeof buf);
        if (n == -EINTR) continue;
        if (n < 0) return n;
        if (n == 0) return visited;
        for (long off = 0; off < n;) {
            unsigned short reclen = *(unsigned short *)(buf + off + 16);
            const char *name = buf + off + 19; /* linux_dirent64: ino, off, reclen, type, name */
            off += reclen;
            if (name[0] < '0' || name[0] > '9') continue;
            long v = 0;
            for (; *name >= '0' && *name <= '9'; name++) v = v * 10 + (*name - '0');
            visited++;
            if (fn(v, arg)) return visited;
        }
    }
}

uint64_t gc_second_field(const char *p)
{
    while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

long gc_read_file(struct gc_arena *a, const char *path, char **out)
{
    long fd = gc_open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    size_t at = (a->used + 15) & ~(size_t)15;
    size_t len = 0;
    for (;;) {
        if (at + len + 65536 + 1 > a->size) {
            gc_close((int)fd);
            return -ENOMEM;
        }
        long n = gc_read((int)fd, a->base + at + len, 65536);
        if (n == -EINTR) continue;
        if (n < 0) {
            gc_close((int)fd);
            return n;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    gc_close((int)fd);
    a->base[at + len] = 0;
    a->used = at + len + 1;
    *out = a->base + at;
    return (long)len;
}

static uint64_t parse_hex(const char **p)
{
    uint64_t v = 0;
    for (;;) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return v;
        v = v * 16 + (uint64_t)d;
        (*p)++;
    }
}

static uint64_t parse_dec(const char **p)
{
    uint64_t v = 0;
    while (**p >= '0' && **p <= '9') v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

static void skip_spaces(const char **p)
{
    while (**p == ' ' || **p == '\t') (*p)++;
}

static int key_is(const char *line, const char *key)
{
    return gc_startswith(line, key);
}

static uint32_t parse_vmflags(const char *p)
{
    uint32_t f = 0;
    while (*p && *p != '\n') {
        skip_spaces(&p);
        if (p[0] && p[1] && (p[2] == ' ' || p[2] == '\n' || p[2] == 0)) {
            if (p[0] == 'd' && p[1] == 'd') f |= GC_VM_DD;
            else if (p[0] == 'i' && p[1] == 'o') f |= GC_VM_IO;
            else if (p[0] == 'p' && p[1] == 'f') f |= GC_VM_PF;
            else if (p[0] == 'h' && p[1] == 't') f |= GC_VM_HT;
            else if (p[0] == 's' && p[1] == 'h') f |= GC_VM_SH;
            else if (p[0] == 'd' && p[1] == 'c') f |= GC_VM_DC;
        }
        while (*p && *p != ' ' && *p != '\n') p++;
    }
    return f;
}

long gc_parse_smaps(struct gc_arena *a, char *text, size_t len, struct gc_vma **out)
{
    /* First pass: count header lines, so the array is contiguous. */
    size_t count = 0;
    for (size_t i = 0; i < len; i++) {
        if ((i == 0 || text[i - 1] == '\n') &&
            ((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            count++;
    }
    struct gc_vma *v = gc_arena_alloc(a, sizeof(struct gc_vma) * (count ? count : 1));
    if (!v) return -ENOMEM;
    long n = -1;
    char *line = text;
    char *end = text + len;
    while (line < end) {
        char *nl = line;
        while (nl < end && *nl != '\n') nl++;
        char c = line[0];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
            if ((size_t)(n + 1) >= count) break;
            struct gc_vma *m = &v[++n];
            gc_memzero(m, sizeof *m);
            const char *p = line;
            m->start = parse_hex(&p);
            if (*p == '-') p++;
            m->end = parse_hex(&p);
            skip_spaces(&p);
            m->perms = (p[0] == 'r' ? GC_P_R : 0) | (p[1] == 'w' ? GC_P_W : 0) |
                       (p[2] == 'x' ? GC_P_X : 0);
            if (p[3] == 's') m->vmflags |= GC_VM_SH; /* refined by VmFlags below */
            p += 4;
            skip_spaces(&p);
            m->pgoff = parse_hex(&p); /* byte offset; converted by the writer */
            skip_spaces(&p);
            while (*p && *p != ' ') p++; /* dev */
            skip_spaces(&p);
            m->inode = parse_dec(&p);
            skip_spaces(&p);
            m->path_off = UINT32_MAX;
            if (p < nl) {
                m->path_off = (uint32_t)(p - text);
                m->path_len = (uint32_t)(nl - p);
                *nl = 0; /* terminate the path in place */
            }
        } else if (n >= 0) {
            if (key_is(line, "Anonymous:")) {
                const char *p = line + 10;
                skip_spaces(&p);
                v[n].anon_kb = parse_dec(&p);
            } else if (key_is(line, "Swap:")) {
                const char *p = line + 5;
                skip_spaces(&p);
                v[n].swap_kb = parse_dec(&p);
            } else if (key_is(line, "VmFlags:")) {
                v[n].vmflags = parse_vmflags(line + 8);
            }
        }
        line = nl + 1;
    }
    *out = v;
    return n + 1;
}
