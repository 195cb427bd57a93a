/* The records Python and C exchange: options in, status out. No Python API here.
 *
 * Every record is declared once, as an X-macro list of its fields: the struct is built from
 * it, and gc_module.c exports the same list (name, offset, size, signedness, count) so that
 * Python packs and unpacks records by field name with C's own offsets. Adding an option is a
 * line here, the Python option that fills it, and the code that uses it.
 *
 * F(type, name): one field. A(type, name, count): an array.
 */
#ifndef GC_CONFIG_H
#define GC_CONFIG_H

#include <stdint.h>

/* Bumped when a record changes meaning; Python refuses an engine of another version. */
#define GC_ABI_VERSION 5
#define GC_TRIGGER_MAX_SIGNALS 8

/* Where the interpreter keeps what pystack and py-spy follow, found and checked in the
 * process (gencore/capture/caplayout.py) so that a capped core's child can walk its own copy
 * of memory: thread states from the interpreter, frames from each thread state, code objects
 * and their names from each frame. Offsets are in bytes; -1 means absent. */
#define GC_PYLAYOUT_FIELDS(F, A)                                                          \
    F(uint64_t, runtime)      /* _PyRuntime */                                            \
    F(uint64_t, runtime_size)                                                             \
    A(uint64_t, objects, 4)   /* objects readers check the interpreter by (builtins...) */ \
    F(uint64_t, r_debug)      /* the dynamic loader's struct r_debug: the link_map list */ \
    F(uint64_t, interp)       /* the caller's PyInterpreterState */                       \
    F(uint64_t, code_type)    /* &PyCode_Type: a frame's code must point to a code */     \
    F(uint64_t, code_mask)    /* clears the tag bits of a frame's code reference */       \
    F(uint32_t, interp_keep)  /* bytes kept from interp */                                \
    F(int32_t, interp_threads)                                                            \
    F(int32_t, interp_head)   /* in _PyRuntime: the newest interpreter; -1: interp only */ \
    F(int32_t, interp_next)   /* in an interpreter: the next (older) one */               \
    A(int32_t, interp_dicts, 3) /* in an interpreter: sysdict, builtins, modules */        \
    F(int32_t, ts_next)                                                                   \
    F(int32_t, ts_interp)                                                                 \
    F(uint32_t, ts_keep)                                                                  \
    F(int32_t, ts_frame)       /* the current frame, or its cframe (3.11, 3.12) */        \
    F(int32_t, cframe_current) /* in the cframe: the current frame; -1 without */         \
    F(int32_t, frame_back)                                                                \
    F(int32_t, frame_code)                                                                \
    F(uint32_t, frame_keep) /* bytes kept from each frame (frame objects: + 8 per item) */ \
    F(int32_t, frame_var)   /* frames are variable-size objects (3.9, 3.10) */            \
    F(uint32_t, code_basicsize)                                                           \
    F(uint32_t, code_itemsize)                                                            \
    A(int32_t, code_fields, 6) /* name, qualname, filename, linetable, code, varnames */  \
    F(uint32_t, tuple_items)   /* where a tuple's items start */

/* Redaction (redact=): what the snapshot child scrubs in its copy of memory on the way out,
 * and the layout it finds values by, found and checked in the process
 * (gencore/capture/redact.py). The child looks for objects by their type pointer: types[i]
 * is a type whose instances are of kinds[i] (GC_RK_*). Offsets are in bytes; -1: absent. */
#define GC_REDACT_MAX_TYPES 64
enum gc_redact_policy { GC_REDACT_OFF = 0, GC_REDACT_ENV = 1, GC_REDACT_VALUES = 2 };
enum gc_redact_kind {
    GC_RK_STR = 1, /* scrubbed unless interned, static or kept */
    GC_RK_BYTES = 2,
    GC_RK_BYTEARRAY = 3,
    /* objects whose own fields' strings stay (sizes[i] bytes of each): code objects (name,
     * qualname, file name, line tables), heap types (name, qualname), modules (name) */
    GC_RK_CODE = 4,
    GC_RK_TYPE = 5, /* types[i] is a metaclass */
    GC_RK_MODULE = 6,
};
#define GC_REDACT_FIELDS(F, A)                                                            \
    F(uint32_t, policy) /* enum gc_redact_policy */                                       \
    F(uint32_t, ntypes)                                                                   \
    A(uint64_t, types, GC_REDACT_MAX_TYPES)                                               \
    A(uint32_t, kinds, GC_REDACT_MAX_TYPES)                                               \
    A(uint32_t, sizes, GC_REDACT_MAX_TYPES) /* code, type, module: bytes whose strings stay */ \
    F(uint32_t, str_state)    /* the state bit field */                                   \
    F(uint32_t, str_ascii_data)   /* where a compact ASCII string's characters start */   \
    F(uint32_t, str_compact_data) /* other compact strings' */                            \
    F(int32_t, str_utf8)          /* PyCompactUnicodeObject.utf8 */                       \
    F(int32_t, str_utf8_length)                                                           \
    F(int32_t, str_wstr)          /* 3.9-3.11: the wchar_t copy */                        \
    F(int32_t, str_data)          /* PyUnicodeObject.data.any (subclass instances) */     \
    F(uint32_t, str_keep_mask)    /* state bits of interned or static strings */          \
    F(uint32_t, str_compact_bit)                                                          \
    F(uint32_t, str_ascii_bit)                                                            \
    F(uint32_t, bytes_data)                                                               \
    F(uint32_t, ba_alloc)                                                                 \
    F(uint32_t, ba_bytes)                                                                 \
    F(uint32_t, ba_start)                                                                 \
    F(uint32_t, pool_size) /* the small-object allocator's pools; 0: not in use */        \
    F(uint32_t, type_dict) /* tp_dict: a heap type's __module__ value stays */             \
    F(uint64_t, module_key) /* the interned "__module__", the key in types' dicts */       \
    F(uint64_t, dict_type)  /* &PyDict_Type: a type's tp_dict and a module's md_dict */    \
    F(uint32_t, code_name)  /* PyCodeObject.co_name: a str */                             \
    F(uint32_t, module_dict) /* PyModuleObject.md_dict */                                 \
    F(uint64_t, hash_secret) /* _Py_HashSecret: zeroed, so stored hashes reveal nothing */ \
    F(uint32_t, hash_secret_len)                                                          \
    F(uint32_t, list_off) /* in the blob: nkeep objects kept, then nscrub scrubbed */      \
    F(uint32_t, nkeep)                                                                    \
    F(uint32_t, nscrub)

/* The options of one core (gencore.capture.options.CoreOptions, native part). Variable-size
 * parts live in a data blob sent with the record, at (off, len). */
#define GC_CORE_OPTIONS_FIELDS(F, A)                                                      \
    F(uint32_t, abi) /* GC_ABI_VERSION */                                                 \
    F(uint32_t, filter)                                                                   \
    F(int32_t, want_threads)                                                              \
    F(int32_t, freeze_signal)                                                             \
    F(uint64_t, freeze_timeout_ns)                                                        \
    F(uint64_t, timeout_ns) /* kill the snapshot child after this; 0: never */            \
    F(uint64_t, max_size)   /* 0: no cap */                                               \
    F(int32_t, have_pylayout)                                                             \
    F(uint32_t, note_off)   /* the GENCORE JSON note */                                   \
    F(uint32_t, note_len)                                                                 \
    F(uint32_t, pipe_off)   /* the compressor's argv, NUL-separated; 0 length: none */    \
    F(uint32_t, pipe_len)                                                                 \
    F(uint32_t, suffix_off) /* the file name's suffix (".core.zst.age"); 0 length: .core */ \
    F(uint32_t, suffix_len)                                                               \
    F(uint64_t, max_total)  /* the directory's budget, made room for before publishing */ \
    F(uint64_t, keep_free)                                                                \
    F(int32_t, uploads)     /* files without an upload marker are pending uploads */      \
    F(uint32_t, kinds_off)  /* the suffixes of gencore's files, NUL-separated */          \
    F(uint32_t, kinds_len)                                                                \
    F(int32_t, cgroup_version) /* 1, 2: the memory cgroup at cgroup_off; 0: none */      \
    F(uint32_t, cgroup_off)                                                               \
    F(uint32_t, cgroup_len)                                                               \
    F(int32_t, page_cache)  /* 0: bounded when the cgroup's headroom asks; 1 always; 2 never */

/* What install() asks of the signal and crash handlers and of the helper thread. The signal
 * trigger's note is core.note; the other notes, the helper's command line, live in the blob. */
#define GC_TRIGGER_FIELDS(F, A)                                                           \
    F(uint32_t, abi)                                                                      \
    F(int32_t, dir_fd)    /* where cores go */                                            \
    F(int32_t, events_fd) /* O_APPEND events file for `gencore trigger`, or -1 */         \
    F(int32_t, notify_fd) /* pipe to the Python listener, or -1 */                        \
    A(int32_t, signals, GC_TRIGGER_MAX_SIGNALS)                                           \
    F(int32_t, nsignals)                                                                  \
    A(int32_t, crash_signals, GC_TRIGGER_MAX_SIGNALS)                                     \
    F(int32_t, ncrash)                                                                    \
    A(int32_t, chain_signals, GC_TRIGGER_MAX_SIGNALS) /* dump, then the previous handler */ \
    F(int32_t, nchain)                                                                    \
    F(int32_t, altstack_signal) /* gives threads an alternate stack (0: none) */          \
    F(uint32_t, max_cores)      /* 0: unlimited */                                        \
    F(uint64_t, min_interval_ns)                                                          \
    F(uint64_t, min_free_bytes) /* beyond the resident size */                            \
    F(uint64_t, crash_timeout_ns)                                                         \
    F(int64_t, tz_offset) /* seconds east of UTC, for file names */                       \
    F(uint64_t, hang_timeout_ns)                                                          \
    F(uint64_t, heartbeat_timeout_ns)                                                     \
    F(uint64_t, rss_limit_bytes)                                                          \
    F(uint64_t, rss_interval_ns)                                                          \
    F(int32_t, memory_high) /* a core when the cgroup's memory.high is breached (v2) */   \
    F(int64_t, note_time_offset) /* where the 17-character time goes in core.note */      \
    F(uint32_t, crash_note_off)                                                           \
    F(uint32_t, crash_note_len)                                                           \
    F(int64_t, crash_note_time_offset)                                                    \
    F(uint32_t, watch_note_off)                                                           \
    F(uint32_t, watch_note_len)                                                           \
    F(int64_t, watch_note_time_offset)                                                    \
    F(int64_t, watch_note_reason_offset)                                                  \
    F(int64_t, watch_note_detail_offset)                                                  \
    F(uint32_t, helper_off) /* command run after each core, NUL-separated; 0: none */     \
    F(uint32_t, helper_len)

/* Status records sent by the snapshot child on the status pipe (atomic pipe writes). */
#define GC_STATUS_FIELDS(F, A)                                                            \
    F(uint32_t, magic)                                                                    \
    F(uint32_t, kind)                                                                     \
    F(int32_t, err) /* positive errno for GC_ST_ERROR */                                  \
    F(uint32_t, stage)                                                                    \
    F(uint64_t, written)   /* bytes of memory written so far */                           \
    F(uint64_t, total)     /* bytes of memory to write (upper bound, holes included) */   \
    F(uint64_t, file_size) /* GC_ST_ERROR with EFBIG: the least max_size that fits */     \
    F(uint64_t, nsegments)

/* What the helper thread tells the Python listener about each triggered core. */
#define GC_TRIGGER_RESULT_FIELDS(F, A)                                                    \
    F(int32_t, kind) /* 1 done, 2 error, 3 not honoured (name: why) */                                                \
    F(int32_t, err)                                                                       \
    F(uint32_t, stage)                                                                    \
    F(uint32_t, pad)                                                                      \
    F(uint64_t, written)                                                                  \
    F(uint64_t, total)                                                                    \
    F(uint64_t, file_size)                                                                \
    F(uint64_t, elapsed_ns)                                                               \
    A(char, name, 96)

#define GC_FIELD_(type, name) type name;
#define GC_ARRAY_(type, name, n) type name[n];

struct gc_pylayout {
    GC_PYLAYOUT_FIELDS(GC_FIELD_, GC_ARRAY_)
};

struct gc_redact_layout {
    GC_REDACT_FIELDS(GC_FIELD_, GC_ARRAY_)
};

struct gc_core_options {
    GC_CORE_OPTIONS_FIELDS(GC_FIELD_, GC_ARRAY_)
    struct gc_pylayout pylayout; /* with have_pylayout: a capped core's Python walk */
    struct gc_redact_layout redact; /* policy GC_REDACT_OFF: nothing scrubbed */
};

struct gc_trigger_config {
    GC_TRIGGER_FIELDS(GC_FIELD_, GC_ARRAY_)
    struct gc_core_options core; /* how every triggered core is taken */
};

#define GC_STATUS_MAGIC 0x47435354u
enum gc_status_kind { GC_ST_PROGRESS = 1, GC_ST_DONE = 2, GC_ST_ERROR = 3 };
enum gc_stage {
    GC_STAGE_SETUP = 1,
    GC_STAGE_MAPS = 2,
    GC_STAGE_NOTES = 3,
    GC_STAGE_MEMORY = 4,
    GC_STAGE_PUBLISH = 5,
};

struct gc_status {
    GC_STATUS_FIELDS(GC_FIELD_, GC_ARRAY_)
};

struct gc_trigger_result {
    GC_TRIGGER_RESULT_FIELDS(GC_FIELD_, GC_ARRAY_)
};

#endif
