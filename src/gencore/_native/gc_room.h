/* Making room in the core directory before a new file appears (gc_room.c). No Python API. */
#ifndef GC_ROOM_H
#define GC_ROOM_H

#include <stddef.h>
#include <stdint.h>

#include "gc_procfs.h"

struct gc_room {
    int dir_fd;
    int events_fd; /* "removed NAME BYTES" / "removed-unuploaded NAME BYTES", or -1 */
    uint64_t max_total; /* gencore's files in the directory at most this many bytes; 0: off */
    uint64_t keep_free; /* the file system keeps this free; 0: off */
    int uploads;        /* uploads are on: a file without its .NAME.uploaded marker is pending */
    const char *kinds;  /* the suffixes of gencore's files, NUL-separated */
    size_t kinds_len;
};

/* Remove the oldest of gencore's files until they and new_bytes fit max_total and keep_free
 * holds. Returns how many were removed, or -errno. */
long gc_make_room(const struct gc_room *r, uint64_t new_bytes, struct gc_arena *a);

#endif
