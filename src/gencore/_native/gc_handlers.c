/* The signal and crash handlers of the triggers.
 *
 * Signal trigger: the handler claims the trigger, applies the guards, starts the core (freeze,
 * fork) and hands it to the helper thread. Everything here is a raw system call on memory
 * prepared at install time: no malloc, no locks, no stdio.
 *
 * Chained signal (a prefork server's timeout signal, e.g. gunicorn's SIGABRT): the core as for
 * a trigger signal, then, once it is written (bounded by crash_timeout), the handler that was
 * there before (the application's, Python's), or the default action.
 *
 * Crash trigger: the faulting thread's handler takes the core with the real signal in
 * NT_SIGINFO and pr_cursig and itself first, waits for it (bounded), restores the previous
 * action and lets the signal kill the process as it would have. It runs on an alternate
 * stack (gc_altstack.c), so a stack overflow gets a core too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "gc_sys.h"
#include "gc_trigger_int.h"

static struct {
    struct sigaction old[GC_TRIGGER_MAX_SIGNALS];
    int old_valid[GC_TRIGGER_MAX_SIGNALS];
    struct sigaction crash_old[GC_TRIGGER_MAX_SIGNALS];
    int crash_old_valid[GC_TRIGGER_MAX_SIGNALS];
    struct sigaction chain_old[GC_TRIGGER_MAX_SIGNALS];
    int chain_old_valid[GC_TRIGGER_MAX_SIGNALS];
    int crashing;   /* the first crash wins */
    int crash_done; /* ... and the others wait for its core before dying */
} g_h;

static void trigger_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno;
    struct gc_job j;
    if (gc_trig_claim()) {
        struct gc_cause cause = {sig, info, uc, 0, 1};
        /* The helper thread owns the core (and the claim) from here. */
        if (gc_trig_start(&j, &cause, GC_NOTE_SIGNAL) < 0)
            gc_trig_release();
        else if (gc_reaper_submit(&j) < 0)
            gc_reaper_finish(&j); /* cannot happen with a live helper thread: no zombie */
    }
    errno = saved_errno;
}

static int index_of(const int32_t *sigs, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (sigs[i] == sig) return i;
    return -1;
}

static void nap_ms(long ms)
{
    struct {
        long sec, nsec;
    } ts = {0, ms * 1000000};
    gc_sys2(SYS_nanosleep, &ts, 0);
}

static int ignored_by_default(int sig)
{
    return sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH;
}

static void chain_handler(int sig, siginfo_t *info, void *uc);

/* The previous action of a chained signal: called as a function, or the default action
 * (the signal again, delivered at once: SA_NODEFER), then ours back if the process lives. */
static void chain_previous(int idx, int sig, siginfo_t *info, void *uc)
{
    if (idx < 0 || !g_h.chain_old_valid[idx]) return;
    const struct sigaction *old = &g_h.chain_old[idx];
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) old->sa_sigaction(sig, info, uc);
        return;
    }
    if (old->sa_handler == SIG_IGN || (old->sa_handler == SIG_DFL && ignored_by_default(sig)))
        return;
    if (old->sa_handler != SIG_DFL) {
        old->sa_handler(sig);
        return;
    }
    struct sigaction dfl, ours;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, &ours);
    gc_sys3(SYS_tgkill, gc_getpid(), gc_gettid(), sig); /* dies or stops here */
    sigaction(sig, &ours, NULL);
}

static void chain_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno;
    const struct gc_trigger_config *c = gc_trig_config();
    struct gc_job j;
    if (gc_trig_claim()) {
        struct gc_cause cause = {sig, info, uc, 0, 1};
        if (gc_trig_start(&j, &cause, GC_NOTE_SIGNAL) < 0) {
            gc_trig_release();
        } else {
            if (gc_reaper_submit(&j) < 0) gc_reaper_finish(&j);
            /* The previous handler may end the process (a worker told to quit): the core,
             * its events and its helper first. The helper thread releases the claim. */
            uint64_t until = gc_now_ns() + c->crash_timeout_ns;
            while (gc_trig_claimed() && gc_now_ns() < until) nap_ms(5);
        }
    }
    chain_previous(index_of(c->chain_signals, c->nchain, sig), sig, info, uc);
    errno = saved_errno;
}

static void say(const char *a, const char *b)
{
    char line[256];
    size_t pos = 0;
    gc_fmt_str(line, sizeof line, &pos, "gencore: ");
    gc_fmt_str(line, sizeof line, &pos, a);
    if (b) gc_fmt_str(line, sizeof line, &pos, b);
    line[pos++] = '\n';
    gc_write(2, line, pos);
}

/* The first crashing thread: its core, followed here (the helper thread may be the one that
 * crashed, or be parked by the freeze). */
static void crash_core(int sig, siginfo_t *info, void *uc)
{
    const struct gc_trigger_config *c = gc_trig_config();
    struct gc_job j;
    struct gc_status last;
    struct gc_cause cause = {sig, info, uc, 0, 1};
    int rc = gc_trig_start(&j, &cause, GC_NOTE_CRASH);
    if (rc == 0) {
        rc = gc_job_follow(&j, c->crash_timeout_ns, NULL, NULL, &last);
        int status;
        gc_job_end(&j, rc == 0, 1, &status);
    }
    if (rc == 0) {
        gc_event("done", j.final, 0, 0, 0);
        say("crash core written: ", j.final);
    } else {
        gc_event("error", j.final, -rc, 0, 1);
        say("crash core failed", NULL);
    }
}

static void crash_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno; /* restored on the one way out, as faulthandler does */
    const struct gc_trigger_config *c = gc_trig_config();
    int idx = index_of(c->crash_signals, c->ncrash, sig);
    int expected = 0;
    int first = __atomic_compare_exchange_n(&g_h.crashing, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE);
    if (first && gc_trig_is_active() && !gc_trig_guard(0)) crash_core(sig, info, uc);
    if (first) {
        __atomic_store_n(&g_h.crash_done, 1, __ATOMIC_RELEASE);
    } else {
        /* Another thread crashed first and is writing the core: let it finish (bounded). */
        uint64_t until = gc_now_ns() + (c->crash_timeout_ns ? c->crash_timeout_ns
                                                             : 60000000000ull);
        while (!__atomic_load_n(&g_h.crash_done, __ATOMIC_ACQUIRE) && gc_now_ns() < until)
            nap_ms(10);
    }
    /* Die as we would have: the previous action comes back and the signal is raised again.
     * A fault re-executes the faulting instruction on return; a sent signal is re-sent. */
    if (idx >= 0 && g_h.crash_old_valid[idx]) {
        sigaction(sig, &g_h.crash_old[idx], NULL);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    }
    if (!info || info->si_code <= 0) gc_sys3(SYS_tgkill, gc_getpid(), gc_gettid(), sig);
    errno = saved_errno;
}

/* Install handler for every signal of sigs, keeping the previous actions. */
static int set_handlers(const int32_t *sigs, int n, void (*handler)(int, siginfo_t *, void *),
                        int flags, struct sigaction *old, int *valid)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < n; i++) {
        if (sigaction(sigs[i], &sa, &old[i]) < 0) return -errno;
        valid[i] = 1;
    }
    return 0;
}

int gc_handlers_install(const struct gc_trigger_config *c)
{
    int rc = set_handlers(c->signals, c->nsignals, trigger_handler, SA_RESTART, g_h.old,
                          g_h.old_valid);
    if (rc == 0)
        rc = set_handlers(c->crash_signals, c->ncrash, crash_handler, SA_NODEFER | SA_ONSTACK,
                          g_h.crash_old, g_h.crash_old_valid);
    if (rc == 0)
        rc = set_handlers(c->chain_signals, c->nchain, chain_handler, SA_RESTART | SA_NODEFER,
                          g_h.chain_old, g_h.chain_old_valid);
    return rc;
}

int gc_handlers_rechain(const struct gc_trigger_config *c)
{
    int taken = 0;
    for (int i = 0; i < c->nchain; i++) {
        struct sigaction cur;
        if (!g_h.chain_old_valid[i] || sigaction(c->chain_signals[i], NULL, &cur) < 0) continue;
        if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == chain_handler) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = chain_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        g_h.chain_old_valid[i] = 0; /* a signal arriving meanwhile runs no stale handler */
        g_h.chain_old[i] = cur;
        g_h.chain_old_valid[i] = 1;
        if (sigaction(c->chain_signals[i], &sa, NULL) == 0) taken++;
    }
    return taken;
}

void gc_handlers_reset(void)
{
    __atomic_store_n(&g_h.crashing, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_h.crash_done, 0, __ATOMIC_RELEASE);
}

static void restore(int sig, struct sigaction *old, int *valid, void *ours)
{
    if (!*valid) return;
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        (void *)cur.sa_sigaction == ours)
        sigaction(sig, old, NULL); /* only if nobody replaced us since */
    *valid = 0;
}

void gc_handlers_uninstall(const struct gc_trigger_config *c)
{
    for (int i = 0; i < c->nsignals; i++)
        restore(c->signals[i], &g_h.old[i], &g_h.old_valid[i], (void *)trigger_handler);
    for (int i = 0; i < c->ncrash; i++)
        restore(c->crash_signals[i], &g_h.crash_old[i], &g_h.crash_old_valid[i],
                (void *)crash_handler);
    for (int i = 0; i < c->nchain; i++)
        restore(c->chain_signals[i], &g_h.chain_old[i], &g_h.chain_old_valid[i],
                (void *)chain_handler);
}

void gc_handlers_forget(const struct gc_trigger_config *c)
{
    for (int i = 0; i < c->nsignals; i++)
        if (g_h.old_valid[i]) sigaction(c->signals[i], &g_h.old[i], NULL);
    for (int i = 0; i < c->ncrash; i++)
        if (g_h.crash_old_valid[i]) sigaction(c->crash_signals[i], &g_h.crash_old[i], NULL);
    for (int i = 0; i < c->nchain; i++)
        if (g_h.chain_old_valid[i]) sigaction(c->chain_signals[i], &g_h.chain_old[i], NULL);
    memset(&g_h, 0, sizeof g_h);
}
