/* Test helper: keep a marker on this thread's C stack and block in read(2) until released.
 * Called through ctypes.CDLL, so the GIL is released while it blocks. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

volatile uintptr_t stackmark_addr;

long stackmark_park(const char *marker, size_t n, int fd, char *after)
{
    volatile char local[4096];
    if (n > sizeof local) n = sizeof local;
    for (size_t i = 0; i < n; i++) local[i] = marker[i];
    stackmark_addr = (uintptr_t)local;
    char c;
    long r = read(fd, &c, 1); /* restarted by SA_RESTART: must not see EINTR */
    /* overwrite the marker right away, so the core can only have it from the snapshot */
    for (size_t i = 0; i < n; i++) local[i] = after[i];
    return r;
}
