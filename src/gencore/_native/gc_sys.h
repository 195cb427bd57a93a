/* Raw system calls and tiny helpers usable in the snapshot child and in signal handlers.
 *
 * Nothing here touches errno, TLS, locks or the heap: every call returns the kernel's
 * result (a negative errno on failure). That is what lets the snapshot child and the
 * freeze handler run while other threads are parked holding arbitrary libc locks.
 */
#ifndef GC_SYS_H
#define GC_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
static inline long gc_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
static inline long gc_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory", "cc");
    return x0;
}
#else
#error "the native snapshot engine supports x86_64 and aarch64 Linux"
#endif

#define gc_sys0(n) gc_sys6((n), 0, 0, 0, 0, 0, 0)
#define gc_sys1(n, a) gc_sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define gc_sys2(n, a, b) gc_sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define gc_sys3(n, a, b, c) gc_sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define gc_sys4(n, a, b, c, d) gc_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define gc_sys5(n, a, b, c, d, e) \
    gc_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_renameat2
#if defined(__x86_64__)
#define SYS_renameat2 316
#else
#define SYS_renameat2 276
#endif
#endif

#define GC_AT_FDCWD (-100)

static inline long gc_open(const char *path, int flags) { return gc_sys4(SYS_openat, GC_AT_FDCWD, path, flags, 0); }
static inline long gc_close(int fd) { return gc_sys1(SYS_close, fd); }
static inline long gc_read(int fd, void *buf, size_t n) { return gc_sys3(SYS_read, fd, buf, n); }
static inline long gc_pread(int fd, void *buf, size_t n, uint64_t off) { return gc_sys4(SYS_pread64, fd, buf, n, off); }
static inline long gc_pwrite(int fd, const void *buf, size_t n, uint64_t off) { return gc_sys4(SYS_pwrite64, fd, buf, n, off); }
static inline long gc_write(int fd, const void *buf, size_t n) { return gc_sys3(SYS_write, fd, buf, n); }
static inline long gc_gettid(void) { return gc_sys0(SYS_gettid); }
static inline long gc_getpid(void) { return gc_sys0(SYS_getpid); }
static inline long gc_readlink(const char *path, char *buf, size_t n) { return gc_sys4(SYS_readlinkat, GC_AT_FDCWD, path, buf, n); }

/* poll(2) with a timeout in milliseconds, as ppoll (the only form every architecture has) */
static inline long gc_poll(void *fds, unsigned long n, long timeout_ms)
{
    struct {
        long sec, nsec;
    } ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
    return gc_sys5(SYS_ppoll, fds, n, timeout_ms < 0 ? 0 : &ts, 0, 8);
}

/* Freestanding memory helpers: the compiler may not turn these into libc calls we
 * cannot audit, so they are written out (and kept simple; the hot paths use the kernel). */
static inline void gc_memzero(void *p, size_t n)
{
    volatile unsigned char *d = p;
    while (n--) *d++ = 0;
}

/* memcpy itself is async-signal-safe (no locks, no allocation) and much faster than a byte loop
 * for the XSAVE areas copied in the freeze handler. */
static inline void gc_memcopy(void *dst, const void *src, size_t n) { __builtin_memcpy(dst, src, n); }

static inline size_t gc_strlen(const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static inline int gc_strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

static inline int gc_startswith(const char *s, const char *prefix)
{
    while (*prefix) {
        if (*s++ != *prefix++) return 0;
    }
    return 1;
}

static inline int gc_endswith(const char *s, size_t n, const char *suffix)
{
    size_t m = gc_strlen(suffix);
    if (m > n) return 0;
    for (size_t i = 0; i < m; i++) {
        if (s[n - m + i] != suffix[i]) return 0;
    }
    return 1;
}

/* Append the decimal form of v to buf at *pos (bounded by cap), zero-padded to width. */
static inline void gc_fmt_u64_pad(char *buf, size_t cap, size_t *pos, uint64_t v, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width && n < (int)sizeof tmp) tmp[n++] = '0';
    while (n && *pos + 1 < cap) buf[(*pos)++] = tmp[--n];
}

static inline void gc_fmt_u64(char *buf, size_t cap, size_t *pos, uint64_t v)
{
    gc_fmt_u64_pad(buf, cap, pos, v, 0);
}

static inline void gc_fmt_str(char *buf, size_t cap, size_t *pos, const char *s)
{
    while (*s && *pos + 1 < cap) buf[(*pos)++] = *s++;
}

static inline uint64_t gc_now_ns(void)
{
    struct {
        long sec, nsec;
    } ts;
    gc_sys2(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, &ts);
    return (uint64_t)ts.sec * 1000000000ull + (uint64_t)ts.nsec;
}

#endif
