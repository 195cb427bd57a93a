/* CPython binding: the only file that uses the Python API. */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gc_kernel.h"
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

static void fill_procinfo(struct gc_procinfo *p)
{
    p->pid = getpid();
    p->ppid = getppid();
    p->pgrp = getpgrp();
    p->sid = getsid(0);
    p->uid = getuid();
    p->gid = getgid();
    p->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    memset(p->comm, 0, sizeof p->comm);
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, p->comm, sizeof p->comm - 1);
        close(fd);
        if (n > 0 && p->comm[n - 1] == '\n') p->comm[n - 1] = 0;
    }
}

PyDoc_STRVAR(snapshot_doc,
             "snapshot(core_fd, dir_fd, status_fd, partial_name, final_name, note, threads, filter,\n"
             "         freeze_timeout, freeze_signal, signo=0, code=0, addr=0, sender=0) -> dict\n\n"
             "Freeze the threads, fork the snapshot child that writes the core, release the threads.\n"
             "Returns as soon as the child exists; the child reports on status_fd.");

static PyObject *py_snapshot(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"core_fd", "dir_fd", "status_fd", "partial_name", "final_name",
                             "note", "threads", "filter", "freeze_timeout", "freeze_signal",
                             "signo", "code", "addr", "sender", NULL};
    int core_fd, dir_fd, status_fd, threads, freeze_signal;
    const char *partial, *final;
    Py_buffer note = {0};
    unsigned int filter;
    double freeze_timeout;
    int signo = 0, code = 0, sender = 0;
    unsigned long long addr = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiyyz*pIdi|iiKi", kwlist, &core_fd, &dir_fd,
                                     &status_fd, &partial, &final, &note, &threads, &filter,
                                     &freeze_timeout, &freeze_signal, &signo, &code, &addr,
                                     &sender))
        return NULL;

    struct gc_snapshot s;
    memset(&s, 0, sizeof s);
    s.core_fd = core_fd;
    s.dir_fd = dir_fd;
    s.status_fd = status_fd;
    s.partial_name = partial;
    s.final_name = final;
    s.note = note.buf;
    s.note_len = note.buf ? (size_t)note.len : 0;
    s.filter = filter;
    s.want_threads = threads;
    s.freeze_signal = freeze_signal;
    s.freeze_timeout_ns = freeze_timeout <= 0 ? 0 : (uint64_t)(freeze_timeout * 1e9);
    s.siginfo.signo = signo;
    s.siginfo.code = code;
    s.siginfo.addr = addr;
    s.siginfo.sender_pid = sender;
    fill_procinfo(&s.proc);

    pid_t pid = -1;
    /* The GIL stays held: snapshots from Python threads are serialised by it, and the caller's
     * Python state cannot change under the freeze. */
    int rc = gc_snapshot_run(&s, &pid);
    if (note.buf) PyBuffer_Release(&note);
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

static PyObject *py_reap(PyObject *self, PyObject *args)
{
    (void)self;
    int pid, block, status = 0;
    if (!PyArg_ParseTuple(args, "ip", &pid, &block)) return NULL;
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

static PyObject *py_kernel_fork(PyObject *self, PyObject *args)
{
    (void)self;
    int dir_fd, dumpable;
    if (!PyArg_ParseTuple(args, "ip", &dir_fd, &dumpable)) return NULL;
    long pid = gc_kernel_fork(dir_fd, dumpable);
    if (pid < 0) {
        errno = (int)-pid;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(pid);
}

static PyMethodDef methods[] = {
    {"kernel_fork", py_kernel_fork, METH_VARARGS, kernel_fork_doc},
    {"snapshot", (PyCFunction)(void (*)(void))py_snapshot, METH_VARARGS | METH_KEYWORDS,
     snapshot_doc},
    {"reap", py_reap, METH_VARARGS, reap_doc},
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
        PyModule_AddIntConstant(m, "STATUS_MAGIC", (long)GC_STATUS_MAGIC) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_FREEZE_SIGNAL", (long)(SIGRTMAX - 3)) < 0 ||
        PyModule_AddIntConstant(m, "SIGRTMIN", (long)SIGRTMIN) < 0 ||
        PyModule_AddIntConstant(m, "SIGRTMAX", (long)SIGRTMAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
