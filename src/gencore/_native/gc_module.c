/* CPython binding: the only file that uses the Python API, and only its limited (stable) part,
 * so that one abi3 build serves every CPython from 3.9 on (setup.py sets Py_LIMITED_API). */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* as pyconfig.h defines it */
#endif
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stddef.h>
#include <time.h>

#include "gc_altstack.h"
#include "gc_config.h"
#include "gc_job.h"
#include "gc_kernel.h"
#include "gc_names.h"
#include "gc_records.h"
#include "gc_redact.h"
#include "gc_snapshot.h"
#include "gc_sys.h"
#include "gc_trigger.h"

/* {name: (size, ((field, offset, size, signed, count), ...))}: gc_records.c's tables */
static PyObject *layouts(void)
{
    PyObject *d = PyDict_New();
    for (size_t r = 0; d && r < gc_nrecords; r++) {
        PyObject *fields = PyList_New(0);
        for (const struct gc_field_desc *f = gc_records[r].fields; fields && f->name; f++) {
            PyObject *item = Py_BuildValue("(snnii)", f->name, (Py_ssize_t)f->offset,
                                           (Py_ssize_t)f->size, f->is_signed, f->count);
            if (!item || PyList_Append(fields, item) < 0) Py_CLEAR(fields);
            Py_XDECREF(item);
        }
        Py_ssize_t size = (Py_ssize_t)gc_records[r].size;
        PyObject *entry = fields ? Py_BuildValue("(nN)", size, fields) : NULL;
        if (!entry || PyDict_SetItemString(d, gc_records[r].name, entry) < 0) Py_CLEAR(d);
        Py_XDECREF(entry);
    }
    return d;
}

/* A record from Python: exactly size bytes, else a ValueError naming it. */
static const void *record_arg(const char *buf, Py_ssize_t len, size_t size, const char *what)
{
    if ((size_t)len != size) {
        PyErr_Format(PyExc_ValueError, "%s record has %zd bytes, the engine expects %zu", what,
                     len, size);
        return NULL;
    }
    return buf;
}

static PyObject *thread_list(const struct gc_snapshot_summary *sum)
{
    PyObject *tlist = PyList_New(0);
    for (uint32_t i = 0; tlist && i < sum->n; i++) {
        const struct gc_thread_summary *t = &sum->threads[i];
        PyObject *item = Py_BuildValue("(is)", t->tid, gc_thread_state_name(t->state));
        if (!item || PyList_Append(tlist, item) < 0) Py_CLEAR(tlist);
        Py_XDECREF(item);
    }
    return tlist;
}

/* Between attempts while a triggered snapshot holds the freeze: the GIL goes meanwhile. */
static void busy_wait_gil(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    Py_BEGIN_ALLOW_THREADS;
    nanosleep(&ts, NULL);
    Py_END_ALLOW_THREADS;
}

static const char *const JOB_STAGES[] = {"", "name", "open", "fork"};

PyDoc_STRVAR(job_start_doc,
             "job_start(*, options, data, dir_fd, name=None) -> dict: Start one core: options is "
             "the packed 'core' record, data its blob (note, the compressor's argv); name the "
             "final file name (None: a new core_<stamp> name). Freezes the threads, forks the "
             "snapshot child, releases the threads and returns {job, pid, rfd, final, partial, "
             "freeze_ns, fork_ns, parked, timed_out, threads}, or {error: errno, stage: "
             "'name'|'open'|'fork'} with nothing left behind. rfd is the status pipe (gc_status "
             "records); pass job to job_end, which closes it.");

static PyObject *py_job_start(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"options", "data", "dir_fd", "name", NULL};
    const char *opt, *data, *name = NULL;
    Py_ssize_t opt_len, data_len;
    int dir_fd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y#y#i|z", kwlist, &opt, &opt_len, &data,
                                     &data_len, &dir_fd, &name))
        return NULL;
    const struct gc_core_options *o = record_arg(opt, opt_len, sizeof *o, "core options");
    if (!o) return NULL;
    struct gc_argv *argv = malloc(sizeof *argv);
    if (!argv) return PyErr_NoMemory();
    struct gc_job_spec spec;
    if (gc_job_spec_init(&spec, argv, o, (const unsigned char *)data, (size_t)data_len) < 0) {
        free(argv);
        PyErr_SetString(PyExc_ValueError, "core options: another engine version, or a bad blob");
        return NULL;
    }
    spec.busy_wait = busy_wait_gil;
    struct gc_job j;
    struct gc_cause cause = {0, NULL, NULL, 0, 0};
    struct gc_snapshot_summary sum = {NULL, 0};
    /* The GIL stays held: snapshots from Python threads are serialised by it, and the caller's
     * Python state cannot change under the freeze. */
    int rc = gc_job_start(&j, &spec, dir_fd, name, &cause, &sum);
    free(argv); /* the child has its own copy */
    if (rc < 0) {
        free(sum.threads);
        return Py_BuildValue("{s:i,s:s}", "error", -rc, "stage", JOB_STAGES[j.failed_stage]);
    }
    PyObject *threads = thread_list(&sum);
    free(sum.threads);
    if (!threads) return NULL;
    return Py_BuildValue("{s:y#,s:i,s:i,s:s,s:s,s:K,s:K,s:I,s:I,s:N}", "job", (const char *)&j,
                         (Py_ssize_t)sizeof j, "pid", j.pid, "rfd", j.rfd, "final", j.final,
                         "partial", j.partial, "freeze_ns", (unsigned long long)j.freeze_ns,
                         "fork_ns", (unsigned long long)j.fork_ns, "parked", j.parked,
                         "timed_out", j.timed_out, "threads", threads);
}

static int job_arg(const char *buf, Py_ssize_t len, struct gc_job *j)
{
    if (!record_arg(buf, len, sizeof *j, "job")) return -1;
    memcpy(j, buf, sizeof *j);
    return 0;
}

PyDoc_STRVAR(job_end_doc,
             "job_end(job, published=False, block=True) -> int | None: Reap the job's snapshot "
             "child (waitpid __WALL, the GIL released), close its status pipe and remove its "
             "partial file unless the core was published. Returns the wait status, -1 if someone "
             "else reaped it, None while it runs (block=False).");

static PyObject *py_job_end(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"job", "published", NULL};
    struct gc_job j;
    const char *buf;
    Py_ssize_t len;
    int published = 0, status = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y#|p", kwlist, &buf, &len, &published) ||
        job_arg(buf, len, &j) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS;
    gc_job_end(&j, published, 1, &status);
    Py_END_ALLOW_THREADS;
    return PyLong_FromLong(status);
}

PyDoc_STRVAR(min_core_size_doc,
             "min_core_size(note_len, max_size) -> int: The smallest max_size a core of this "
             "process can have now, with note_len bytes of GENCORE note: the snapshot child's "
             "own accounting of headers and notes.");

static PyObject *py_min_core_size(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"note_len", "max_size", NULL};
    unsigned long long note_len, max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KK", kwlist, &note_len, &max_size)) return NULL;
    return PyLong_FromUnsignedLongLong(gc_min_core_size(note_len, max_size));
}

PyDoc_STRVAR(dumpable_doc,
             "dumpable() -> int: prctl(PR_GET_DUMPABLE).");

static PyObject *py_dumpable(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
}

PyDoc_STRVAR(kernel_fork_doc,
             "kernel_fork(dir_fd, make_dumpable) -> pid: Fork a copy of this thread that dies by "
             "SIGSEGV in dir_fd so the kernel writes its core there (the original technique). "
             "Reap it with reap(pid, ...).");

static PyObject *py_kernel_fork(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"dir_fd", "make_dumpable", NULL};
    int dir_fd, dumpable;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ip", kwlist, &dir_fd, &dumpable)) return NULL;
    long pid = gc_kernel_fork(dir_fd, dumpable);
    if (pid < 0) {
        errno = (int)-pid;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(pid);
}

/* Called with the GIL, in a probe thread, when the helper thread has news for Python. */
static PyObject *g_probe_callback;

/* A probe: a short-lived thread that shows the interpreter can still hand over the GIL (the
 * watchdog times how long it waits) and lets Python deliver finished cores. It is started by
 * the helper thread and keeps that thread's signal mask (trigger signals blocked). */
static void *probe_main(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "gencore-probe", 0, 0, 0);
    PyGILState_STATE g = PyGILState_Ensure();
    if (gc_trigger_probe_done() && g_probe_callback) {
        PyObject *r = PyObject_CallObject(g_probe_callback, NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable(g_probe_callback);
    }
    PyGILState_Release(g);
    return NULL;
}

static int start_probe(void)
{
    pthread_attr_t a;
    pthread_t t;
    if (pthread_attr_init(&a) != 0) return -ENOMEM;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, probe_main, NULL);
    pthread_attr_destroy(&a);
    return -rc;
}

PyDoc_STRVAR(trigger_install_doc,
             "trigger_install(*, config, data, probe_callback=None): Install the signal and "
             "crash handlers and start the helper thread (reaper and watchdog). config is the "
             "packed 'trigger' record (its 'core' part: how every triggered core is taken), data "
             "its blob (notes, the compressor's and the helper's commands). probe_callback is "
             "called with the GIL from a short-lived thread when finished cores wait in the "
             "notify pipe.");

static PyObject *py_trigger_install(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"config", "data", "probe_callback", NULL};
    const char *cfg, *data;
    Py_ssize_t cfg_len, data_len;
    PyObject *callback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y#y#|O", kwlist, &cfg, &cfg_len, &data,
                                     &data_len, &callback))
        return NULL;
    const struct gc_trigger_config *c = record_arg(cfg, cfg_len, sizeof *c, "trigger");
    if (!c) return NULL;
    if (callback != Py_None && !PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "probe_callback must be callable");
        return NULL;
    }
    if (callback != Py_None) {
        /* never released: a probe thread started earlier may still be about to call it */
        Py_INCREF(callback);
        g_probe_callback = callback;
    }
    int r = gc_trigger_install(c, (const unsigned char *)data, (size_t)data_len, start_probe);
    if (r < 0) {
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *py_altstack_adopt(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(gc_altstack_adopt());
}

static PyObject *py_trigger_quiesce(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    gc_trigger_quiesce();
    Py_RETURN_NONE;
}

static PyObject *py_watch_heartbeat(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    gc_watch_heartbeat((int32_t)gc_gettid());
    Py_RETURN_NONE;
}

static PyObject *py_watch_loop(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"slot", "running", NULL};
    int slot, running;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ip", kwlist, &slot, &running)) return NULL;
    if (!running) {
        gc_watch_loop_stop(slot);
    } else if (gc_watch_loop_beat(slot, (int32_t)gc_gettid()) < 0) {
        PyErr_SetString(PyExc_ValueError, "no such loop slot");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_trigger_rechain(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(gc_trigger_rechain());
}

static PyObject *py_watch_deadline_arm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"seconds", "name", NULL};
    double seconds;
    const char *name;
    Py_ssize_t len;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dy#", kwlist, &seconds, &name, &len)) return NULL;
    if (!(seconds > 0 && seconds < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "seconds must be positive");
        return NULL;
    }
    int h = gc_watch_deadline_arm((uint64_t)(seconds * 1e9), (int32_t)gc_gettid(), name,
                                  (size_t)len);
    if (h < 0) {
        errno = -h;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(h);
}

/* watch_deadline_state / watch_deadline_end: (passed, core name) */
static PyObject *deadline_result(PyObject *args, PyObject *kw,
                                 int (*fn)(int, char *, size_t))
{
    static char *kwlist[] = {"handle", NULL};
    int handle;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i", kwlist, &handle)) return NULL;
    char core[GC_NAME_CAP];
    int passed = fn(handle, core, sizeof core);
    return Py_BuildValue("(Ns)", PyBool_FromLong(passed), core);
}

static PyObject *py_watch_deadline_state(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return deadline_result(args, kw, gc_watch_deadline_state);
}

static PyObject *py_watch_deadline_end(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return deadline_result(args, kw, gc_watch_deadline_end);
}

static PyObject *py_trigger_uninstall(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    int32_t pids[64];
    int n;
    Py_BEGIN_ALLOW_THREADS;
    gc_trigger_uninstall(); /* waits for a core in flight */
    n = gc_trigger_leftover_helpers(pids, 64);
    Py_END_ALLOW_THREADS;
    PyObject *out = PyList_New(0);
    for (int i = 0; out && i < n; i++) {
        PyObject *pid = PyLong_FromLong(pids[i]);
        if (!pid || PyList_Append(out, pid) < 0) Py_CLEAR(out);
        Py_XDECREF(pid);
    }
    return out;
}

static PyObject *py_trigger_stats(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    struct gc_trigger_stats st;
    gc_trigger_get_stats(&st);
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:i,s:I,s:I,s:I,s:I}", "cores",
                         st.cores, "merged", st.merged, "skipped_max_cores", st.skipped_limit,
                         "skipped_min_interval", st.skipped_interval, "skipped_free_space", st.skipped_space, "failed",
                         st.failed, "last_start_ns", (unsigned long long)st.last_start_ns,
                         "active", gc_trigger_active(), "altstacks", st.altstacks, "hangs",
                         st.hangs, "memory", st.memory, "probes", st.probes);
}

static PyObject *py_trigger_claim(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(gc_trigger_claim_python());
}

static PyObject *py_trigger_after_fork_child(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    gc_trigger_after_fork_child();
    Py_RETURN_NONE;
}

static PyObject *py_trigger_set_tz(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"offset", NULL};
    long long off;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L", kwlist, &off)) return NULL;
    gc_trigger_set_tz(off);
    Py_RETURN_NONE;
}

/* gencore.exclude: a range every snapshot child writes as zeros (gc_scrub.c's table) */
static PyObject *py_exclude_range(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"addr", "length", "add", NULL};
    unsigned long long addr, len;
    int add, rc;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKp", kwlist, &addr, &len, &add)) return NULL;
    if ((rc = gc_exclude_range(addr, len, add)))
        return errno = -rc, PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *py_next_seq(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromUnsignedLong(gc_next_seq());
}

PyDoc_STRVAR(gc_list_tail_doc,
             "gc_list_tail() -> int: The _gc_next word of a list object tracked just now (flag "
             "bits cleared): new objects are linked last in the youngest GC list, so this is "
             "that list's head. Nothing runs between the allocation and the read.");

static PyObject *py_gc_list_tail(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *probe = PyList_New(0);
    if (probe == NULL) return NULL;
    uintptr_t next = ((const uintptr_t *)(const void *)probe)[-2];
    Py_DECREF(probe);
    return PyLong_FromUnsignedLongLong((unsigned long long)(next & ~(uintptr_t)7));
}

/* ---- this process's own interpreter, for the in-process layouts (no ctypes needed) ---- */

static void *symbol(const char *name) { return dlsym(RTLD_DEFAULT, name); }

PyDoc_STRVAR(self_symbol_doc,
             "self_symbol(name) -> int: the address of a symbol of this process (dlsym), 0 if");

static PyObject *py_self_symbol(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"name", NULL};
    const char *name;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s", kwlist, &name)) return NULL;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)symbol(name));
}

typedef void *(*ptr_fn)(void);
typedef void *(*ptr_fn1)(void *);

PyDoc_STRVAR(thread_states_doc,
             "thread_states() -> (interp, current, [thread states]): The main interpreter's "
             "address, this thread's state and every thread state of the main interpreter, in "
             "its list's order (the GIL is held meanwhile).");

static PyObject *py_thread_states(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    ptr_fn main_fn = (ptr_fn)symbol("PyInterpreterState_Main");
    ptr_fn1 head_fn = (ptr_fn1)symbol("PyInterpreterState_ThreadHead");
    ptr_fn1 next_fn = (ptr_fn1)symbol("PyThreadState_Next");
    void *interp = main_fn ? main_fn() : (void *)PyInterpreterState_Get();
    void *current = (void *)PyThreadState_Get();
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (void *ts = head_fn ? head_fn(interp) : NULL; ts && next_fn; ts = next_fn(ts)) {
        PyObject *v = PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)ts);
        if (!v || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(v);
    }
    return Py_BuildValue("(KKN)", (unsigned long long)(uintptr_t)interp,
                         (unsigned long long)(uintptr_t)current, list);
}

PyDoc_STRVAR(interpreters_doc,
             "interpreters() -> (current, [(id, address), ...]): This thread's interpreter's "
             "address and every interpreter of the process.");

static PyObject *py_interpreters(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    ptr_fn head_fn = (ptr_fn)symbol("PyInterpreterState_Head");
    ptr_fn1 next_fn = (ptr_fn1)symbol("PyInterpreterState_Next");
    PyInterpreterState *current = PyInterpreterState_Get();
    PyObject *list = PyList_New(0);
    for (void *i = head_fn ? head_fn() : NULL; list && i && next_fn; i = next_fn(i)) {
        PyObject *v = Py_BuildValue("(LK)", (long long)PyInterpreterState_GetID(i),
                                    (unsigned long long)(uintptr_t)i);
        if (!v || PyList_Append(list, v) < 0) Py_CLEAR(list);
        Py_XDECREF(v);
    }
    if (!list) return NULL;
    return Py_BuildValue("(KN)", (unsigned long long)(uintptr_t)current, list);
}

PyDoc_STRVAR(core_stem_doc,
             "core_stem(time, tz_offset, pid, seq) -> str: core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>: "
             "the one definition of core names, shared with the signal handler. time is seconds "
             "since the epoch, tz_offset seconds east of UTC.");

static PyObject *py_core_stem(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"time", "tz_offset", "pid", "seq", NULL};
    unsigned long long t;
    long long tz;
    int pid;
    unsigned int seq;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KLiI", kwlist, &t, &tz, &pid, &seq)) return NULL;
    char buf[96];
    gc_core_stem(buf, sizeof buf, t, tz, pid, seq);
    return PyUnicode_FromString(buf);
}

/* ---- The heap walker (gc_heap*.c, no Python API): a handle and one request entry point;
 * requests and answers are arrays of 64-bit words; the walk runs without the GIL. ---- */
#include "gc_heap.h"

struct heap_handle {
    struct gc_heap *h;
    int busy;
};

static void heap_capsule_free(PyObject *cap)
{
    struct heap_handle *hh = PyCapsule_GetPointer(cap, "gencore.heap");
    if (hh) gc_heap_close(hh->h);
    free(hh);
}

static PyObject *heap_error(int rc, const char *msg)
{
    PyObject *v = Py_BuildValue("(is)", rc, msg && *msg ? msg : "heap walk failed");
    if (v) PyErr_SetObject(PyExc_RuntimeError, v);
    Py_XDECREF(v);
    return NULL;
}

static PyObject *py_heap_open(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, err = 0;
    const char *cfg;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iy#", &fd, &cfg, &len)) return NULL;
    struct heap_handle *hh = calloc(1, sizeof *hh);
    if (!hh) return PyErr_NoMemory();
    if (!(hh->h = gc_heap_open(fd, (const uint64_t *)(const void *)cfg, (size_t)len / 8, &err))) {
        free(hh);
        return heap_error(err, err == GC_HEAP_EIO ? "cannot map the core" : "bad configuration");
    }
    PyObject *cap = PyCapsule_New(hh, "gencore.heap", heap_capsule_free);
    if (!cap) gc_heap_close(hh->h), free(hh);
    return cap;
}

static PyObject *py_heap_op(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap;
    int op, rc;
    const char *in;
    Py_ssize_t len;
    uint64_t *out = NULL;
    size_t nout = 0;
    if (!PyArg_ParseTuple(args, "Oiy#", &cap, &op, &in, &len)) return NULL;
    struct heap_handle *hh = PyCapsule_GetPointer(cap, "gencore.heap");
    if (!hh) return NULL;
    if (hh->busy) return heap_error(GC_HEAP_EINVAL, "the heap walker is busy in another thread");
    hh->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    rc = gc_heap_op(hh->h, op, (const uint64_t *)(const void *)in, (size_t)len / 8, &out, &nout);
    Py_END_ALLOW_THREADS;
    hh->busy = 0;
    if (rc < 0) return heap_error(rc, gc_heap_error(hh->h));
    PyObject *res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(nout * 8));
    free(out);
    return res;
}

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

static PyMethodDef methods[] = {
    {"core_stem", KW(py_core_stem), core_stem_doc},
    {"self_symbol", KW(py_self_symbol), self_symbol_doc},
    {"thread_states", py_thread_states, METH_NOARGS, thread_states_doc},
    {"interpreters", py_interpreters, METH_NOARGS, interpreters_doc},
    {"trigger_install", KW(py_trigger_install), trigger_install_doc},
    {"trigger_uninstall", py_trigger_uninstall, METH_NOARGS,
     "Restore the handlers; waits for a core in flight; stops the helper thread. Returns the\n"
     "pids of helper processes still running, for the caller to reap."},
    {"trigger_stats", py_trigger_stats, METH_NOARGS, "Counters of the triggers."},
    {"trigger_claim", py_trigger_claim, METH_NOARGS,
     "Apply the trigger guards to a dump decided in Python: 0 go, 1 max_cores, 2 min_interval,\n"
     "3 free space."},
    {"trigger_after_fork_child", py_trigger_after_fork_child, METH_NOARGS,
     "Forget the parent's trigger state in a forked child."},
    {"trigger_set_tz", KW(py_trigger_set_tz),
     "Set the UTC offset (seconds east) used in signal-triggered core names."},
    {"altstack_adopt", py_altstack_adopt, METH_NOARGS,
     "altstack_adopt() -> int: the calling thread gets the crash handler's alternate stack\n"
     "now (0), or -errno (-ENOENT: no crash trigger installed)."},
    {"trigger_quiesce", py_trigger_quiesce, METH_NOARGS,
     "Interpreter exit: the helper thread starts no more probe threads."},
    {"watch_heartbeat", py_watch_heartbeat, METH_NOARGS,
     "The application is alive (heartbeat_timeout); records the calling thread."},
    {"watch_loop", KW(py_watch_loop),
     "watch_loop(slot, running): the loop in slot ran a callback just now, or stopped."},
    {"watch_deadline_arm", KW(py_watch_deadline_arm),
     "watch_deadline_arm(seconds, name): a deadline for the calling thread; name is JSON\n"
     "string text. Returns its handle."},
    {"watch_deadline_state", KW(py_watch_deadline_state),
     "watch_deadline_state(handle) -> (passed, core name or '')."},
    {"watch_deadline_end", KW(py_watch_deadline_end),
     "watch_deadline_end(handle) -> (passed, core name or ''): the deadline is over."},
    {"trigger_rechain", py_trigger_rechain, METH_NOARGS,
     "Take chained signals back from handlers installed since: returns how many."},
    {"gc_list_tail", py_gc_list_tail, METH_NOARGS, gc_list_tail_doc},
    {"exclude_range", KW(py_exclude_range), "exclude_range(addr, length, add)"},
    {"next_seq", py_next_seq, METH_NOARGS, "The next per-process core sequence number."},
    {"kernel_fork", KW(py_kernel_fork), kernel_fork_doc},
    {"job_start", KW(py_job_start), job_start_doc},
    {"job_end", KW(py_job_end), job_end_doc},
    {"min_core_size", KW(py_min_core_size), min_core_size_doc},
    {"dumpable", py_dumpable, METH_NOARGS, dumpable_doc},
    {"heap_open", py_heap_open, METH_VARARGS, "heap_open(fd, config) -> handle: map a core."},
    {"heap_op", py_heap_op, METH_VARARGS, "heap_op(handle, op, request) -> bytes (gc_heap.h)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "gencore._native", "Native snapshot engine of gencore.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    gc_regs_init();
    if (PyModule_AddIntConstant(m, "ABI_VERSION", GC_ABI_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_REASON_CAP", (long)GC_WATCH_REASON_CAP) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_DETAIL_CAP", (long)GC_WATCH_DETAIL_CAP) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_LOOPS", (long)GC_WATCH_LOOPS) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_NAME_CAP", (long)GC_DEADLINE_NAME_CAP) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_DEADLINES", (long)GC_WATCH_DEADLINES) < 0 ||
        PyModule_AddIntConstant(m, "STATUS_MAGIC", (long)GC_STATUS_MAGIC) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *lay = layouts();
    if (!lay || PyModule_AddObject(m, "LAYOUTS", lay) < 0) { /* steals lay on success */
        Py_XDECREF(lay);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
