/* Async-signal-safe readers for /proc/self files, used by the snapshot child. */
#ifndef GC_PROCFS_H
#define GC_PROCFS_H

#include <stddef.h>
#include <stdint.h>

/* VmFlags bits we act on */
#define GC_VM_DD (1u << 0) /* MADV_DONTDUMP */
#define GC_VM_IO (1u << 1) /* VM_IO */
#define GC_VM_PF (1u << 2) /* VM_PFNMAP */
#define GC_VM_HT (1u << 3) /* hugetlb */
#define GC_VM_SH (1u << 4) /* really shared */
#define GC_VM_DC (1u << 5) /* MADV_DONTFORK */

/* perms */
#define GC_P_R 4u
#define GC_P_W 2u
#define GC_P_X 1u

struct gc_vma {
    uint64_t start, end, pgoff;
    uint64_t anon_kb, swap_kb;
    uint32_t perms;   /* GC_P_* */
    uint32_t vmflags; /* GC_VM_* */
    uint32_t path_off; /* offset in the string pool, or UINT32_MAX */
    uint32_t path_len;
    uint64_t inode;
    uint64_t dump;       /* bytes to dump: 0, page, or the whole VMA */
    uint64_t file_off;   /* offset of the data in the core */
    uint32_t how;        /* GC_DUMP_* */
    uint32_t hidden;     /* our own buffers: no program header */
};

enum gc_dump_how {
    GC_DUMP_NONE = 0,
    GC_DUMP_ANON = 1,   /* private anonymous pages: skip absent pages (holes) */
    GC_DUMP_SHARED = 2, /* shared memory: only resident pages */
    GC_DUMP_FILE = 3,   /* file-backed: read everything (the page cache fills gaps) */
    GC_DUMP_HOLE = 4,   /* listed with data size but never read ([vvar], VM_IO) */
};

/* A growable-in-place region: the child's arena. */
struct gc_arena {
    char *base;
    size_t size, used;
};

void *gc_arena_alloc(struct gc_arena *a, size_t n);

/* Read a whole /proc file into the arena; returns its length or a negative errno. */
long gc_read_file(struct gc_arena *a, const char *path, char **out);

/* Parse smaps text into an array of VMAs (in the arena); the string pool is the text itself. */
long gc_parse_smaps(struct gc_arena *a, char *text, size_t len, struct gc_vma **out);

/* Small /proc files and directories, shared by the freeze, the writer and the triggers.
 * Raw system calls only: usable in signal handlers and in the snapshot child. */

/* Read at most cap-1 bytes of path into buf and NUL-terminate; returns the length or -errno. */
long gc_read_small(const char *path, char *buf, size_t cap);

/* buf = "/proc/self/task/<tid>" or "/proc/self/task/<tid>/<leaf>". */
void gc_task_path(char *buf, size_t cap, int32_t tid, const char *leaf);

/* Call fn(number, arg) for every entry of the open directory dir_fd whose name is a decimal
 * number (tids of /proc/self/task, fds of /proc/self/fd), from the start; fn returns non-zero
 * to stop. Returns the number of entries visited or -errno. */
typedef int (*gc_number_fn)(long number, void *arg);
long gc_dir_numbers(int dir_fd, gc_number_fn fn, void *arg);

/* The first unsigned decimal number after the first space-separated field of text (the
 * resident pages of /proc/self/statm). */
uint64_t gc_second_field(const char *text);

#endif
