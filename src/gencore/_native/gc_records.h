/* The records Python and C exchange, described field by field (gc_records.c). */
#ifndef GC_RECORDS_H
#define GC_RECORDS_H

#include <stddef.h>

struct gc_field_desc {
    const char *name;
    size_t offset, size;
    int is_signed, count; /* count 0: a nested record of the same name */
};

struct gc_record {
    const char *name;
    size_t size;
    const struct gc_field_desc *fields; /* ends with a NULL name */
};

extern const struct gc_record gc_records[];
extern const size_t gc_nrecords;

#endif
