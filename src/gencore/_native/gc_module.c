/* CPython binding: the only file that uses the Python API, and only its limited (stable) part,
 * so that one abi3 build serves every CPython from 3.9 on (setup.py sets Py_LIMITED_API). */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* as pyconfig.h defines it */
#endif
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gc_kernel.h"
#include "gc_trigger.h"
#include "gc_snapshot.h"
#include "gc_sys.h"

static const char *state_name(int st)
{
    switch (st) {
    case GC_T_CALLER:
        return "caller";
    case GC_T_PARKED:
        return "parked";
    case GC_T_TIMEOUT:
        return "incomplete";
    default:
        return "gone";
    }
}

PyDoc_STRVAR(snapshot_doc,
             "snapshot(core_fd, dir_fd, status_fd, partial_name, final_name, note, threads, filter,\n"
             "         freeze_timeout, freeze_signal, signo=0, code=0, addr=0, sender=0) -> dict\n\n"
             "Freeze the threads, fork the snapshot child that writes the core, release the threads.\n"
             "Returns as soon as the child exists; the child reports on status_fd.");

/* gencore._caplayout's tuple, in struct gc_pylayout's field order. Returns 1 (filled),
 * 0 (None) or -1 with an exception set. */
static int parse_pylayout(PyObject *t, struct gc_pylayout *L)
{
    memset(L, 0, sizeof *L);
    if (t == Py_None) return 0;
    long long v[10 + 13 + 6 + 1];
    const Py_ssize_t n = (Py_ssize_t)(sizeof v / sizeof v[0]);
    if (!PyTuple_Check(t) || PyTuple_Size(t) != n) {
        PyErr_SetString(PyExc_TypeError, "pylayout must be a tuple of 30 integers");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GetItem(t, i);
        v[i] = i < 10 ? (long long)PyLong_AsUnsignedLongLong(item) : PyLong_AsLongLong(item);
        if (PyErr_Occurred()) return -1;
    }
    const long long *w = v + 7;
    L->runtime = (uint64_t)v[0];
    L->runtime_size = (uint64_t)v[1];
    for (int k = 0; k < 4; k++) L->objects[k] = (uint64_t)v[2 + k];
    L->r_debug = (uint64_t)v[6];
    L->interp = (uint64_t)w[0];
    L->code_type = (uint64_t)w[1];
    L->code_mask = (uint64_t)w[2];
    L->interp_keep = (uint32_t)w[3];
    L->interp_threads = (int32_t)w[4];
    L->ts_next = (int32_t)w[5];
    L->ts_interp = (int32_t)w[6];
    L->ts_keep = (uint32_t)w[7];
    L->ts_frame = (int32_t)w[8];
    L->cframe_current = (int32_t)w[9];
    L->frame_back = (int32_t)w[10];
    L->frame_code = (int32_t)w[11];
    L->frame_keep = (uint32_t)w[12];
    L->frame_var = (int32_t)w[13];
    L->code_basicsize = (uint32_t)w[14];
    L->code_itemsize = (uint32_t)w[15];
    for (int k = 0; k < 6; k++) L->code_fields[k] = (int32_t)w[16 + k];
    L->tuple_items = (uint32_t)w[22];
    if (L->interp_threads < 0 || L->ts_frame < 0 || L->frame_back < 0 || L->frame_code < 0) {
        PyErr_SetString(PyExc_ValueError, "pylayout: a required offset is missing");
        return -1;
    }
    return 1;
}

static PyObject *py_snapshot(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"core_fd", "dir_fd", "status_fd", "partial_name", "final_name",
                             "note", "threads", "filter", "freeze_timeout", "freeze_signal",
                             "signo", "code", "addr", "sender", "pipe_argv", "max_size",
                             "pylayout", NULL};
    int core_fd, dir_fd, status_fd, threads, freeze_signal;
    const char *partial, *final;
    const char *note = NULL;
    Py_ssize_t note_len = 0;
    unsigned int filter;
    double freeze_timeout;
    int signo = 0, code = 0, sender = 0;
    unsigned long long addr = 0;
    PyObject *pipe_argv = Py_None, *pylayout = Py_None;
    unsigned long long max_size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiyyz#pIdi|iiKiOKO", kwlist, &core_fd, &dir_fd,
                                     &status_fd, &partial, &final, &note, &note_len, &threads,
                                     &filter,
                                     &freeze_timeout, &freeze_signal, &signo, &code, &addr,
                                     &sender, &pipe_argv, &max_size, &pylayout))
        return NULL;
    struct gc_pylayout layout;
    int have_layout = parse_pylayout(pylayout, &layout);
    if (have_layout < 0) return NULL;
    /* The filter's argv: pointers into the bytes objects, which the call keeps alive. */
    char **argv = NULL;
    if (pipe_argv != Py_None) {
        if (!PyTuple_Check(pipe_argv) || PyTuple_Size(pipe_argv) < 1) {
            PyErr_SetString(PyExc_TypeError, "pipe_argv must be a non-empty tuple of bytes");
            return NULL;
        }
        Py_ssize_t n = PyTuple_Size(pipe_argv);
        argv = calloc((size_t)n + 1, sizeof *argv);
        if (!argv) return PyErr_NoMemory();
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GetItem(pipe_argv, i);
            if (!PyBytes_Check(item)) {
                free(argv);
                PyErr_SetString(PyExc_TypeError, "pipe_argv must be a non-empty tuple of bytes");
                return NULL;
            }
            argv[i] = PyBytes_AsString(item);
        }
    }

    struct gc_snapshot s;
    memset(&s, 0, sizeof s);
    s.core_fd = core_fd;
    s.dir_fd = dir_fd;
    s.status_fd = status_fd;
    s.partial_name = partial;
    s.final_name = final;
    s.note = (const unsigned char *)note;
    s.note_len = note ? (size_t)note_len : 0;
    s.filter = filter;
    s.want_threads = threads;
    s.freeze_signal = freeze_signal;
    s.freeze_timeout_ns = freeze_timeout <= 0 ? 0 : (uint64_t)(freeze_timeout * 1e9);
    s.siginfo.signo = signo;
    s.siginfo.code = code;
    s.siginfo.addr = addr;
    s.siginfo.sender_pid = sender;
    s.pipe_argv = argv;
    s.max_size = max_size;
    s.pylayout = have_layout ? &layout : NULL;
    gc_procinfo_fill(&s.proc);

    pid_t pid = -1;
    /* The GIL stays held: snapshots from Python threads are serialised by it, and the caller's
     * Python state cannot change under the freeze. */
    int rc = gc_snapshot_run(&s, &pid);
    /* the child has its own copy of argv; clone returned after the copy was made */
    free(argv);
    if (rc < 0) {
        errno = -rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *tlist = PyList_New(0);
    if (!tlist) return NULL;
    for (uint32_t i = 0; i < s.nsummary; i++) {
        PyObject *item = Py_BuildValue("(is)", s.summary[i].tid, state_name(s.summary[i].state));
        if (!item || PyList_Append(tlist, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(tlist);
            return NULL;
        }
        Py_DECREF(item);
    }
    free(s.summary);
    return Py_BuildValue("{s:i,s:K,s:K,s:I,s:I,s:N}", "pid", (int)pid, "freeze_ns",
                         (unsigned long long)s.freeze_ns, "fork_ns", (unsigned long long)s.fork_ns,
                         "parked", s.parked, "timed_out", s.timed_out, "threads", tlist);
}

PyDoc_STRVAR(reap_doc, "reap(pid, block) -> int | None\n\n"
                       "waitpid(pid, __WALL) for the snapshot child (it has exit signal 0).\n"
                       "Returns the wait status, None if it is still running (block=False),\n"
                       "or -1 if it was already reaped by someone else (ECHILD).");

static PyObject *py_reap(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"pid", "block", NULL};
    int pid, block, status = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ip", kwlist, &pid, &block)) return NULL;
    pid_t r;
    Py_BEGIN_ALLOW_THREADS;
    do {
        r = waitpid(pid, &status, __WALL | (block ? 0 : WNOHANG));
    } while (r < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS;
    if (r == 0) Py_RETURN_NONE;
    if (r < 0) {
        if (errno == ECHILD) return PyLong_FromLong(-1);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(status);
}

PyDoc_STRVAR(dumpable_doc, "dumpable() -> int: prctl(PR_GET_DUMPABLE).");

static PyObject *py_dumpable(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
}

PyDoc_STRVAR(kernel_fork_doc,
             "kernel_fork(dir_fd, make_dumpable) -> pid\n\n"
             "Fork a copy of this thread that dies by SIGSEGV in dir_fd so the kernel writes its\n"
             "core there (the original technique). Reap it with reap(pid, ...).");

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

static int int_tuple(PyObject *seq, int *out, int *n)
{
    Py_ssize_t len = PySequence_Size(seq);
    if (len < 0) return -1;
    if (len > GC_TRIGGER_MAX_SIGNALS) {
        PyErr_SetString(PyExc_ValueError, "too many signals");
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_GetItem(seq, i);
        if (!item) return -1;
        long v = PyLong_AsLong(item);
        Py_DECREF(item);
        if (v == -1 && PyErr_Occurred()) return -1;
        out[i] = (int)v;
    }
    *n = (int)len;
    return 0;
}

static uint64_t seconds_ns(double v) { return v <= 0 ? 0 : (uint64_t)(v * 1e9); }

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
             "trigger_install(*, dir_fd, events_fd, notify_fd, signals, crash_signals, note,\n"
             "                note_time_offset, crash_note, crash_note_time_offset, filter,\n"
             "                freeze_signal, freeze_timeout, timeout, crash_timeout, max_cores,\n"
             "                min_interval, min_free, tz_offset, helper_argv=None,\n"
             "                altstack_signal=0, hang_timeout=0, heartbeat_timeout=0, rss_limit=0,\n"
             "                rss_interval=0.5, watch_note=b'', watch_note_time_offset=-1,\n"
             "                watch_note_reason_offset=-1, watch_note_detail_offset=-1,\n"
             "                probe_callback=None, pipe_argv=None, max_size=0, pylayout=None)\n\n"
             "Install the signal and crash handlers and start the helper thread (reaper and\n"
             "watchdog). helper_argv is the NUL-separated command run after each signal dump,\n"
             "with the core's name appended; pipe_argv (NUL-separated too) the compressor the\n"
             "snapshot child writes through. probe_callback is called with the GIL from a\n"
             "short-lived thread when finished cores wait in the notify pipe.");

static PyObject *py_trigger_install(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"dir_fd", "events_fd", "notify_fd", "signals", "crash_signals",
                             "note", "note_time_offset", "crash_note", "crash_note_time_offset",
                             "filter", "freeze_signal", "freeze_timeout", "timeout",
                             "crash_timeout", "max_cores", "min_interval", "min_free",
                             "tz_offset", "helper_argv", "altstack_signal", "hang_timeout",
                             "heartbeat_timeout", "rss_limit", "rss_interval", "watch_note",
                             "watch_note_time_offset", "watch_note_reason_offset",
                             "watch_note_detail_offset", "probe_callback", "pipe_argv",
                             "max_size", "pylayout", NULL};
    struct gc_trigger_config c;
    memset(&c, 0, sizeof c);
    PyObject *sigs, *crash, *callback = Py_None;
    const char *note, *crash_note, *helper = NULL, *watch_note = NULL, *pipe = NULL;
    Py_ssize_t note_len, crash_note_len, helper_len = 0, watch_note_len = 0, pipe_len = 0;
    double freeze_timeout, timeout, crash_timeout, min_interval;
    double hang = 0, heartbeat = 0, rss_interval = 0.5;
    unsigned long long min_free, rss_limit = 0, max_size = 0;
    PyObject *pylayout = Py_None;
    long long tz;
    c.watch_note_time_offset = c.watch_note_reason_offset = c.watch_note_detail_offset = -1;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "iiiOOy#ly#lIidddIdKL|z#iddKdy#lllOz#KO", kwlist, &c.dir_fd, &c.events_fd,
            &c.notify_fd, &sigs, &crash, &note, &note_len, &c.note_time_offset, &crash_note,
            &crash_note_len, &c.crash_note_time_offset, &c.filter, &c.freeze_signal,
            &freeze_timeout, &timeout, &crash_timeout, &c.max_cores, &min_interval, &min_free,
            &tz, &helper, &helper_len, &c.altstack_signal, &hang, &heartbeat, &rss_limit,
            &rss_interval, &watch_note, &watch_note_len, &c.watch_note_time_offset,
            &c.watch_note_reason_offset, &c.watch_note_detail_offset, &callback, &pipe,
            &pipe_len, &max_size, &pylayout))
        return NULL;
    struct gc_pylayout layout;
    int have_layout = parse_pylayout(pylayout, &layout);
    if (have_layout < 0) return NULL;
    c.max_size = max_size;
    c.pylayout = have_layout ? &layout : NULL; /* copied by gc_trigger_install */
    if (int_tuple(sigs, c.signals, &c.nsignals) < 0 ||
        int_tuple(crash, c.crash_signals, &c.ncrash) < 0)
        return NULL;
    if (callback != Py_None && !PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "probe_callback must be callable");
        return NULL;
    }
    c.pid = getpid();
    c.note = (unsigned char *)note; /* copied by gc_trigger_install */
    c.note_len = (size_t)note_len;
    c.crash_note = (unsigned char *)crash_note;
    c.crash_note_len = (size_t)crash_note_len;
    c.watch_note = (unsigned char *)watch_note;
    c.watch_note_len = watch_note ? (size_t)watch_note_len : 0;
    c.helper_argv = helper;
    c.helper_argv_len = helper ? (size_t)helper_len : 0;
    c.pipe_argv = pipe;
    c.pipe_argv_len = pipe ? (size_t)pipe_len : 0;
    c.freeze_timeout_ns = seconds_ns(freeze_timeout);
    c.timeout_ns = seconds_ns(timeout);
    c.crash_timeout_ns = seconds_ns(crash_timeout);
    c.min_interval_ns = seconds_ns(min_interval);
    c.min_free_bytes = min_free;
    c.tz_offset = tz;
    c.hang_timeout_ns = seconds_ns(hang);
    c.heartbeat_timeout_ns = seconds_ns(heartbeat);
    c.rss_limit_bytes = rss_limit;
    c.rss_interval_ns = seconds_ns(rss_interval);
    c.start_probe = start_probe;
    if (callback != Py_None) {
        /* never released: a probe thread started earlier may still be about to call it */
        Py_INCREF(callback);
        g_probe_callback = callback;
    }
    int r = gc_trigger_install(&c); /* copies the notes and the helper command */
    if (r < 0) {
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
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

static PyObject *py_watch_loop_beat(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"slot", NULL};
    int slot;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i", kwlist, &slot)) return NULL;
    if (gc_watch_loop_beat(slot, (int32_t)gc_gettid()) < 0) {
        PyErr_SetString(PyExc_ValueError, "no such loop slot");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_watch_loop_stop(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"slot", NULL};
    int slot;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i", kwlist, &slot)) return NULL;
    gc_watch_loop_stop(slot);
    Py_RETURN_NONE;
}

static PyObject *py_trigger_uninstall(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    Py_BEGIN_ALLOW_THREADS;
    gc_trigger_uninstall(); /* waits for a dump in flight */
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *py_trigger_stats(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    struct gc_trigger_stats st;
    gc_trigger_get_stats(&st);
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:i,s:I,s:I,s:I,s:I}", "cores", st.cores, "merged",
                         st.merged, "skipped_max_cores", st.skipped_limit, "skipped_min_interval",
                         st.skipped_interval, "skipped_free_space", st.skipped_space, "failed",
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

static PyObject *py_next_seq(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromUnsignedLong(gc_next_seq());
}

PyDoc_STRVAR(gc_list_tail_doc,
             "gc_list_tail() -> int\n\n"
             "The _gc_next word of a list object tracked just now (flag bits cleared): new\n"
             "objects are linked last in the youngest GC list, so this is that list's head.\n"
             "Nothing runs between the allocation and the read.");

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

PyDoc_STRVAR(core_stem_doc,
             "core_stem(time, tz_offset, pid, seq) -> str\n\n"
             "core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>: the one definition of core names, shared with\n"
             "the signal handler. time is seconds since the epoch, tz_offset seconds east of UTC.");

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

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

static PyMethodDef methods[] = {
    {"core_stem", KW(py_core_stem), core_stem_doc},
    {"trigger_install", KW(py_trigger_install), trigger_install_doc},
    {"trigger_uninstall", py_trigger_uninstall, METH_NOARGS,
     "Restore the handlers; waits for a dump in flight; stops the reaper."},
    {"trigger_stats", py_trigger_stats, METH_NOARGS, "Counters of the triggers."},
    {"trigger_claim", py_trigger_claim, METH_NOARGS,
     "Apply the trigger guards to a dump decided in Python: 0 go, 1 max_cores, 2 min_interval,\n"
     "3 free space."},
    {"trigger_after_fork_child", py_trigger_after_fork_child, METH_NOARGS,
     "Forget the parent's trigger state in a forked child."},
    {"trigger_set_tz", KW(py_trigger_set_tz),
     "Set the UTC offset (seconds east) used in signal-triggered core names."},
    {"trigger_quiesce", py_trigger_quiesce, METH_NOARGS,
     "Interpreter exit: the helper thread starts no more probe threads."},
    {"watch_heartbeat", py_watch_heartbeat, METH_NOARGS,
     "The application is alive (heartbeat_timeout); records the calling thread."},
    {"watch_loop_beat", KW(py_watch_loop_beat),
     "watch_loop_beat(slot): the event loop in slot ran a callback just now (arms the slot)."},
    {"watch_loop_stop", KW(py_watch_loop_stop),
     "watch_loop_stop(slot): the loop in slot stopped running; no hang is reported for it."},
    {"gc_list_tail", py_gc_list_tail, METH_NOARGS, gc_list_tail_doc},
    {"next_seq", py_next_seq, METH_NOARGS, "The next per-process core sequence number."},
    {"kernel_fork", KW(py_kernel_fork), kernel_fork_doc},
    {"snapshot", KW(py_snapshot), snapshot_doc},
    {"reap", KW(py_reap), reap_doc},
    {"dumpable", py_dumpable, METH_NOARGS, dumpable_doc},
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
    if (PyModule_AddIntConstant(m, "STATUS_SIZE", (long)sizeof(struct gc_status)) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_REASON_CAP", (long)GC_WATCH_REASON_CAP) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_DETAIL_CAP", (long)GC_WATCH_DETAIL_CAP) < 0 ||
        PyModule_AddIntConstant(m, "WATCH_LOOPS", (long)GC_WATCH_LOOPS) < 0 ||
        PyModule_AddIntConstant(m, "STATUS_MAGIC", (long)GC_STATUS_MAGIC) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_FREEZE_SIGNAL", (long)(SIGRTMAX - 3)) < 0 ||
        PyModule_AddIntConstant(m, "SIGRTMIN", (long)SIGRTMIN) < 0 ||
        PyModule_AddIntConstant(m, "SIGRTMAX", (long)SIGRTMAX) < 0 ||
        PyModule_AddIntConstant(m, "TRIGGER_RESULT_SIZE",
                                (long)sizeof(struct gc_trigger_result)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
