/* The snapshot child's shared state, for its parts: gc_writer.c (setup, mappings, layout,
 * publishing), gc_notes.c (the notes), gc_output.c (status records, file or compressor
 * output, copying memory). Everything runs in the child: raw system calls, arena memory, no
 * malloc, no locks, no Python. */
#ifndef GC_CHILD_H
#define GC_CHILD_H

#include <stdint.h>

#include "gc_budget.h"
#include "gc_procfs.h"
#include "gc_redact.h"
#include "gc_snapshot.h"

#define ARENA_SIZE (1ull << 30) /* virtual; only what is used gets touched */
#define BOUNCE_SIZE (1u << 20)

/* One PT_LOAD: a whole VMA, or under max_size a piece of one (kept data, then the rest of
 * the piece not in the file). A piece of anonymous memory under max_size covers its kept
 * data only (ph_memsz = filesz; no program header when it keeps nothing): readers that
 * do not check p_filesz (py-spy) then fail to read an omitted address instead of reading
 * the bytes that follow in the file, or past its end. */
struct piece {
    uint64_t start, filesz, memsz, file_off;
    long vma;
    uint64_t ph_memsz; /* the PT_LOAD's p_memsz; 0: no PT_LOAD */
};

/* Under max_size: what the capture note can say about omitted ranges at most. */
#define BUDGET_NOTE_MAX (256u << 10)

/* Bytes the capture note gives the budget (omitted ranges) under this max_size. */
static inline uint64_t gc_budget_note_size(uint64_t max_size)
{
    return max_size / 16 < BUDGET_NOTE_MAX ? max_size / 16 : BUDGET_NOTE_MAX;
}

struct child {
    struct gc_snapshot *s;
    struct gc_arena arena;
    char *smaps;
    struct gc_vma *vmas;
    long nvma;
    unsigned char *bounce;
    struct gc_runs runs; /* present pages, with its own scratch buffer */
    int mem_fd;
    uint64_t page;
    uint64_t written, total, next_progress;
    uint64_t nseg;      /* program headers, PT_NOTE included */
    uint64_t data_end;  /* end of the last segment's data */
    uint64_t file_size; /* data_end plus the PN_XNUM section header, if any */
    uint32_t stage;
    /* Stream mode (s->pipe_argv): everything goes in file order into out_fd, a pipe to the
     * filter program (pid helper); pos is how much has been written, holes included. */
    int stream, out_fd, pipe_r;
    int no_vmsplice; /* the pipe takes copies only */
    long helper;
    uint64_t pos;
    const unsigned char *zeros; /* ZEROS_SIZE untouched bytes: they read as zeros */
    struct piece *pieces;
    long npieces;
    uint32_t lead; /* the thread whose notes come first */
#if defined(__aarch64__)
    /* process-wide in practice, read by the child (it inherits the forking thread's) */
    uint64_t pac_mask;
    long pac_keys, tagged_addr; /* -1: not supported */
#endif
    uint64_t cap;  /* the largest core to write: max_size, or less when memory is short */
    int capped;    /* max_size left something out */
    /* The memory cgroup: its headroom when the child started, and what the child does
     * about it (bounded: each chunk written is flushed and dropped from the page cache, and
     * the child's copy of the memory it came from is let go). */
    uint64_t cg_limit, cg_usage;
    int bounded;
    int drop_source;   /* the range being written is private anonymous memory */
    uint64_t auto_cap; /* a cap the headroom asked for (0: none) */
    struct gc_budget budget;
    uint64_t need; /* under max_size: the least a core of this process takes */
    uint64_t budget_note; /* under max_size: bytes for the budget in the capture note */
    struct gc_redact *redact; /* redact= or excluded buffers: what is scrubbed; else NULL */
};

struct notebuf {
    unsigned char *p;
    size_t len, cap;
};

/* gc_output.c */
void gc_w_send_status(struct child *c, uint32_t kind, int err);
void gc_w_send_result(struct child *c, uint32_t kind, int err, uint64_t file_size, uint64_t nseg);
__attribute__((noreturn)) void gc_w_fail(struct child *c, long err);
long gc_w_pad_to(struct child *c, uint64_t off);
void gc_w_write_all(struct child *c, const void *buf, size_t len, uint64_t off);
void gc_w_stream_start(struct child *c);
long gc_w_stream_end(struct child *c, int abandon);
long gc_w_dump_piece(struct child *c, const struct piece *p);
/* Under memory pressure (c->bounded): [off, off+len) of the file is on disk and out of the
 * page cache, [addr, addr+len) of memory out of the child. */
void gc_w_release(struct child *c, uint64_t addr, uint64_t len, uint64_t off);
#define PROGRESS_EVERY (64ull << 20)

/* gc_notes.c */
/* Every note but the capture note, the lead thread's first; sets c->lead. */
int gc_w_build_notes(struct child *c, struct notebuf *nb);
/* The capture note (JSON: threads, freeze time, filter, a capped core's budget), last. */
int gc_w_add_capture(struct child *c, struct notebuf *nb);
/* The capture note's size at most (with_budget: under max_size, with c->budget_note). */
uint64_t gc_w_capture_size(const struct child *c, int with_budget);

#endif
