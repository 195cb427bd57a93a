/* The records Python and C exchange, field by field (gc_config.h's X-macros): what the
 * binding exports as LAYOUTS, so that Python packs and unpacks them by name. No Python API. */
#include <stddef.h>
#include <stdint.h>

#include "gc_config.h"
#include "gc_records.h"
#include "gc_redact.h"

#define SIGNED_(type) _Generic((type)0, int32_t: 1, int64_t: 1, default: 0)
#define FIELD_(type, name) {#name, offsetof(RECORD_, name), sizeof(type), SIGNED_(type), 1},
#define ARRAY_(type, name, n) {#name, offsetof(RECORD_, name), sizeof(type), SIGNED_(type), n},

#define RECORD_ struct gc_pylayout
static const struct gc_field_desc pylayout_fields[] = {GC_PYLAYOUT_FIELDS(FIELD_, ARRAY_){NULL, 0, 0, 0, 0}};
#undef RECORD_
#define RECORD_ struct gc_redact_layout
static const struct gc_field_desc redact_fields[] = {GC_REDACT_FIELDS(FIELD_, ARRAY_){NULL, 0, 0, 0, 0}};
#undef RECORD_
#define RECORD_ struct gc_core_options
static const struct gc_field_desc core_fields[] = {
    GC_CORE_OPTIONS_FIELDS(FIELD_, ARRAY_){"pylayout", offsetof(RECORD_, pylayout),
                                           sizeof(struct gc_pylayout), 0, 0},
    {"redact", offsetof(RECORD_, redact), sizeof(struct gc_redact_layout), 0, 0},
    {NULL, 0, 0, 0, 0}};
#undef RECORD_
#define RECORD_ struct gc_trigger_config
static const struct gc_field_desc trigger_fields[] = {
    GC_TRIGGER_FIELDS(FIELD_, ARRAY_){"core", offsetof(RECORD_, core),
                                      sizeof(struct gc_core_options), 0, 0},
    {NULL, 0, 0, 0, 0}};
#undef RECORD_
#define RECORD_ struct gc_status
static const struct gc_field_desc status_fields[] = {GC_STATUS_FIELDS(FIELD_, ARRAY_){NULL, 0, 0, 0, 0}};
#undef RECORD_
#define RECORD_ struct gc_trigger_result
static const struct gc_field_desc result_fields[] = {
    GC_TRIGGER_RESULT_FIELDS(FIELD_, ARRAY_){NULL, 0, 0, 0, 0}};
#undef RECORD_

const struct gc_record gc_records[] = {
    {"pylayout", sizeof(struct gc_pylayout), pylayout_fields},
    {"redact", sizeof(struct gc_redact_layout), redact_fields},
    {"core", sizeof(struct gc_core_options), core_fields},
    {"trigger", sizeof(struct gc_trigger_config), trigger_fields},
    {"status", sizeof(struct gc_status), status_fields},
    {"trigger_result", sizeof(struct gc_trigger_result), result_fields},
};
const size_t gc_nrecords = sizeof gc_records / sizeof gc_records[0];
