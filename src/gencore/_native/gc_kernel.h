#ifndef GC_KERNEL_H
#define GC_KERNEL_H
/* Fork a copy of the caller that dies by SIGSEGV in dir_fd, leaving the kernel's core there.
 * Returns the child's pid or a negative errno. */
long gc_kernel_fork(int dir_fd, int make_dumpable);
#endif
