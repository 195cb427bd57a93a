/* The snapshot child's output: status records to the parent, the core's bytes to the file
 * (pwrite, holes left as holes) or in file order to a compressor's pipe, and memory copied
 * straight from its address where possible. Runs in the child (see gc_child.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>

#include "gc_child.h"
#include "gc_sys.h"

#define WRITE_CHUNK (8u << 20)
#define ZEROS_SIZE (1u << 20)
#define HELPER_STACK (64u << 10)
#define PIPE_SIZE (1u << 20)

extern char **environ;

void gc_w_send_result(struct child *c, uint32_t kind, int err, uint64_t file_size, uint64_t nseg)
{
    struct gc_status st;
    gc_memzero(&st, sizeof st);
    st.magic = GC_STATUS_MAGIC;
    st.kind = kind;
    st.err = err;
    st.stage = c->stage;
    st.written = c->written;
    st.total = c->total;
    st.file_size = file_size;
    st.nsegments = nseg;
    gc_write(c->s->status_fd, &st, sizeof st);
}

void gc_w_send_status(struct child *c, uint32_t kind, int err) { gc_w_send_result(c, kind, err, 0, 0); }

long gc_w_stream_end(struct child *c, int abandon);

__attribute__((noreturn)) void gc_w_fail(struct child *c, long err)
{
    if (c->stream) {
        /* a broken pipe means the filter failed first: its exit status says why */
        long e = gc_w_stream_end(c, err != -EPIPE);
        if (err == -EPIPE && e < 0) err = e;
    }
    gc_w_send_result(c, GC_ST_ERROR, (int)-err, c->need, 0); /* need: max_size was too small */
    gc_sys3(SYS_unlinkat, c->s->dir_fd, c->s->partial_name, 0);
    gc_sys1(SYS_exit_group, 1);
    __builtin_unreachable();
}

/* Stream mode: zeros up to file offset off (a hole, or the padding before the data). */
long gc_w_pad_to(struct child *c, uint64_t off)
{
    if (off < c->pos) return -EINVAL; /* out of file order: a bug, never a corrupt core */
    while (c->pos < off) {
        uint64_t n = off - c->pos < ZEROS_SIZE ? off - c->pos : ZEROS_SIZE;
        long w = gc_write(c->out_fd, c->zeros, n);
        if (w == -EINTR) continue;
        if (w <= 0) return w < 0 ? w : -EIO;
        c->pos += (uint64_t)w;
    }
    return 0;
}

/* Stream mode, bytes straight from the snapshot's memory: vmsplice hands the pages to the
 * pipe without a copy (they never change: the child does not write them, and the
 * application's writes go to its own copies). Falls back to write() where unsupported. */
static long out_pages(struct child *c, const void *buf, uint64_t len, uint64_t off)
{
    long e = gc_w_pad_to(c, off);
    if (e < 0) return e;
    if (c->no_vmsplice) return gc_write(c->out_fd, buf, len);
    struct {
        const void *base;
        size_t len;
    } iov = {buf, len};
    long w = gc_sys4(SYS_vmsplice, c->out_fd, &iov, 1, 0);
    if (w == -EINVAL || w == -ENOSYS || w == -EPERM) {
        c->no_vmsplice = 1;
        w = gc_write(c->out_fd, buf, len);
    }
    if (w > 0) c->pos += (uint64_t)w;
    return w;
}

/* Write len bytes of buf at file offset off: pwrite, or in stream mode the zeros up to off
 * and then the bytes. Returns what write() returns (a short count is possible). */
static long out_at(struct child *c, const void *buf, uint64_t len, uint64_t off)
{
    if (!c->stream) return gc_pwrite(c->s->core_fd, buf, len, off);
    long e = gc_w_pad_to(c, off);
    if (e < 0) return e;
    long w = gc_write(c->out_fd, buf, len);
    if (w > 0) c->pos += (uint64_t)w;
    return w;
}

/* Start the filter program: stdin the pipe, stdout the partial file, stderr /dev/null, no
 * other descriptor, signals unblocked. It runs at the child's own (lower) priority and dies
 * with the child (PR_SET_PDEATHSIG). */
static int helper_entry(void *arg)
{
    struct child *c = arg;
    gc_sys2(SYS_prctl, 1 /* PR_SET_PDEATHSIG */, SIGKILL);
    long in = gc_sys3(SYS_fcntl, c->pipe_r, F_DUPFD, 100);
    long out = gc_sys3(SYS_fcntl, c->s->core_fd, F_DUPFD, 100);
    long null = gc_open("/dev/null", O_RDWR);
    if (in < 0 || out < 0 || null < 0) gc_sys1(SYS_exit, 127);
    if (null != 2) gc_sys3(SYS_dup3, null, 2, 0);
    gc_sys3(SYS_dup3, in, 0, 0);
    gc_sys3(SYS_dup3, out, 1, 0);
    gc_sys3(SYS_close_range, 3, ~0u, 0);
    uint64_t none = 0;
    gc_sys4(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, 8);
    gc_sys3(SYS_execve, c->s->pipe_argv[0], c->s->pipe_argv, environ);
    gc_sys1(SYS_exit, 127);
    return 127;
}

void gc_w_stream_start(struct child *c)
{
    int p[2];
    long e = gc_sys2(SYS_pipe2, p, O_CLOEXEC);
    if (e < 0) gc_w_fail(c, e);
    gc_sys3(SYS_fcntl, p[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort */
    c->pipe_r = p[0];
    c->out_fd = p[1];
    c->zeros = gc_arena_alloc(&c->arena, ZEROS_SIZE);
    char *stack = gc_arena_alloc(&c->arena, HELPER_STACK);
    if (!c->zeros || !stack) gc_w_fail(c, -ENOMEM);
    /* vfork semantics: this process waits until the helper has exec'd (or exited) */
    long pid = clone(helper_entry, stack + HELPER_STACK - 64, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
    gc_close(c->pipe_r);
    if (pid < 0) gc_w_fail(c, -errno);
    c->helper = pid;
    c->stream = 1;
}

/* Close the pipe and wait for the filter: 0 when it exited 0, else a negative errno (its
 * exit status is the errno it failed with, 127 if it could not start). With abandon, the
 * filter is killed first: the core is not going to be complete. */
long gc_w_stream_end(struct child *c, int abandon)
{
    if (!c->stream) return 0;
    c->stream = 0;
    gc_close(c->out_fd);
    if (abandon) gc_sys2(SYS_kill, c->helper, SIGKILL);
    int status = 0;
    long r;
    do
        r = gc_sys4(SYS_wait4, c->helper, &status, 0, 0);
    while (r == -EINTR);
    if (r < 0) return r;
    if ((status & 0x7f) != 0) return -EPIPE;  /* killed */
    int code = (status >> 8) & 0xff;
    if (code == 0) return 0;
    if (code == 127) return -ENOEXEC;
    /* 1 is what Python exits with on an uncaught error, never an errno of ours */
    return code > 1 && code < 125 ? -code : -EIO;
}

void gc_w_write_all(struct child *c, const void *buf, size_t len, uint64_t off)
{
    const unsigned char *p = buf;
    while (len) {
        long w = out_at(c, p, len, off);
        if (w == -EINTR) continue;
        if (w <= 0) gc_w_fail(c, w < 0 ? w : -EIO);
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
}

static void maybe_progress(struct child *c)
{
    if (c->written >= c->next_progress) {
        gc_w_send_status(c, GC_ST_PROGRESS, 0);
        c->next_progress = c->written + PROGRESS_EVERY;
    }
}

static int fatal_write_error(long r)
{
    return r == -ENOSPC || r == -EDQUOT || r == -EFBIG || r == -EIO || r == -EBADF ||
           r == -EROFS || r == -EINVAL || r == -EPIPE;
}

/* The step bytes at addr (within one page) that write() could not take from their address:
 * read the page through /proc/self/mem (FOLL_FORCE, like the kernel), else leave a hole. */
static long copy_page_slow(struct child *c, uint64_t addr, uint64_t step, uint64_t off)
{
    uint64_t in_page = addr & (c->page - 1);
    long r = gc_pread(c->mem_fd, c->bounce, c->page, addr - in_page);
    if (r != (long)c->page) return c->stream ? gc_w_pad_to(c, off + step) : 0; /* hole */
    if (c->redact) gc_redact_apply(c->redact, addr, step, c->bounce + in_page);
    while (step) {
        long w = out_at(c, c->bounce + in_page, step, off);
        if (w == -EINTR) continue;
        if (w <= 0) return w < 0 ? w : -EIO;
        in_page += (uint64_t)w;
        off += (uint64_t)w;
        step -= (uint64_t)w;
    }
    return 0;
}

/* With redaction: the bytes up to the first one scrubbed straight from memory (when that is
 * worth a write of their own), else a copy of them, scrubbed. *chunk may shrink. */
static long out_scrubbed(struct child *c, uint64_t addr, uint64_t *chunk, uint64_t off)
{
    uint64_t zeroed = gc_redact_zeroed(c->redact, addr, *chunk);
    if (zeroed >= c->page) { /* a large value scrubbed whole: a hole, zeros in a stream */
        *chunk = zeroed;
        long e = c->stream ? gc_w_pad_to(c, off + zeroed) : 0;
        return e < 0 ? e : (long)zeroed;
    }
    uint64_t clean = gc_redact_clean(c->redact, addr, *chunk);
    if (clean >= *chunk || clean >= (64u << 10)) {
        *chunk = clean < *chunk ? clean : *chunk;
        return c->stream ? out_pages(c, (const void *)addr, *chunk, off)
                         : out_at(c, (const void *)addr, *chunk, off);
    }
    if (*chunk > gc_redact_scratch_size()) *chunk = gc_redact_scratch_size();
    return out_at(c, gc_redact_copy(c->redact, addr, *chunk), *chunk, off);
}

/* Write [addr, addr+len) at file offset off, straight from memory where possible. */
#ifndef SYNC_FILE_RANGE_WAIT_BEFORE
#define SYNC_FILE_RANGE_WAIT_BEFORE 1
#define SYNC_FILE_RANGE_WRITE 2
#define SYNC_FILE_RANGE_WAIT_AFTER 4
#endif
#define FADV_DONTNEED 4

void gc_w_release(struct child *c, uint64_t addr, uint64_t len, uint64_t off)
{
    if (!c->bounded) return;
    if (!c->stream) { /* the compressor's own output is its business */
        gc_sys4(SYS_sync_file_range, c->s->core_fd, off, len,
                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
        gc_sys4(SYS_fadvise64, c->s->core_fd, off, len, FADV_DONTNEED);
    }
    /* private anonymous memory, once written, is never read again (the child's own data
     * lives in its arena): the child lets its copy go, so the application writes to those
     * pages without copying them and the child's resident size falls as it writes */
    if (!c->drop_source) return;
    uint64_t a = (addr + c->page - 1) & ~(c->page - 1), b = (addr + len) & ~(c->page - 1);
    if (a < b) gc_sys3(SYS_madvise, a, b - a, 4 /* MADV_DONTNEED */);
}

static long copy_range(struct child *c, uint64_t addr, uint64_t len, uint64_t off, int readable)
{
    while (len) {
        uint64_t chunk = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        long w;
        if (readable && c->redact) {
            w = out_scrubbed(c, addr, &chunk, off);
        } else if (readable) {
            w = c->stream ? out_pages(c, (const void *)addr, chunk, off)
                          : out_at(c, (const void *)addr, chunk, off);
        } else {
            if (chunk > BOUNCE_SIZE) chunk = BOUNCE_SIZE;
            long r = gc_pread(c->mem_fd, c->bounce, chunk, addr);
            if (r <= 0) {
                w = -EFAULT;
            } else {
                chunk = (uint64_t)r;
                if (c->redact) gc_redact_apply(c->redact, addr, chunk, c->bounce);
                w = out_at(c, c->bounce, chunk, off);
            }
        }
        if (w == -EINTR) continue;
        if (w > 0) {
            gc_w_release(c, addr, (uint64_t)w, off);
            addr += (uint64_t)w;
            off += (uint64_t)w;
            len -= (uint64_t)w;
            c->written += (uint64_t)w;
            maybe_progress(c);
            continue;
        }
        if (w < 0 && fatal_write_error(w)) return w;
        /* EFAULT (or a zero-length write): this page is not readable through its address. */
        uint64_t step = c->page - (addr & (c->page - 1));
        if (step > len) step = len;
        long r = copy_page_slow(c, addr, step, off);
        if (r < 0) return r;
        addr += step;
        off += step;
        len -= step;
        c->written += step;
    }
    return 0;
}

struct anon_copy {
    struct child *c;
    uint64_t start, file_off; /* the piece: file offset of its first byte */
    int readable;
};

static long copy_run(uint64_t start, uint64_t end, void *arg)
{
    struct anon_copy *a = arg;
    return copy_range(a->c, start, end - start, a->file_off + (start - a->start), a->readable);
}

/* Shared memory is not copied by fork: only pages resident in the shared object (mincore),
 * so that reading never allocates shmem pages in the application's memory. */
static long dump_shared(struct child *c, uint64_t start, uint64_t end, uint64_t file_off)
{
    unsigned char *vec = c->bounce;
    uint64_t at = start;
    while (at < end) {
        uint64_t npages = (end - at) / c->page;
        if (npages > BOUNCE_SIZE / 2) npages = BOUNCE_SIZE / 2;
        if (gc_sys3(SYS_mincore, at, npages * c->page, vec) < 0)
            return copy_range(c, at, end - at, file_off + (at - start), 1);
        uint64_t run = 0;
        for (uint64_t i = 0; i <= npages; i++) {
            if (i < npages && (vec[i] & 1)) {
                run++;
                continue;
            }
            if (run) {
                uint64_t s0 = at + (i - run) * c->page;
                long e = copy_range(c, s0, run * c->page, file_off + (s0 - start), 1);
                if (e < 0) return e;
                run = 0;
            }
        }
        at += npages * c->page;
    }
    return 0;
}

/* The data of one piece: [p->start, p->start + p->filesz) of its VMA. */
long gc_w_dump_piece(struct child *c, const struct piece *p)
{
    const struct gc_vma *v = &c->vmas[p->vma];
    int readable = (v->perms & GC_P_R) != 0;
    uint64_t end = p->start + p->filesz;
    switch (v->how) {
    case GC_DUMP_ANON: {
        /* private anonymous memory: only pages that exist (present or swapped, not the
         * zero page); the others are holes */
        struct anon_copy a = {c, p->start, p->file_off, readable};
        c->drop_source = 1;
        long r = gc_present_runs(&c->runs, p->start, end, copy_run, &a);
        c->drop_source = 0;
        return r;
    }
    case GC_DUMP_SHARED:
        return readable ? dump_shared(c, p->start, end, p->file_off)
                        : copy_range(c, p->start, p->filesz, p->file_off, 0);
    case GC_DUMP_FILE:
        return copy_range(c, p->start, p->filesz, p->file_off, readable);
    default:
        return 0;
    }
}

