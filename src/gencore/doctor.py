"""``gencore doctor``: what would stop core dumps of this process on this machine.

Each check reports OK, WARN or FAIL with a sentence saying what to do. The checks look at the
calling process (rlimits, dumpable flag, seccomp are per process) and the machine.
"""

from __future__ import annotations

import os
import resource
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ._common import default_directory, format_size
from ._procfs import resident_bytes
from .capture import engine as _engine
from .capture import kernel as _kernel

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    """One finding: ``level`` is OK, WARN or FAIL; ``advice`` says what to do about it."""

    name: str
    level: str
    message: str
    advice: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def _status_field(name: str) -> Optional[str]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _fmt_limit(v: int) -> str:
    return "unlimited" if v == resource.RLIM_INFINITY else f"{v} bytes"


def check_platform() -> Check:
    if not _engine.available():
        u = os.uname()
        return Check(
            "platform",
            FAIL,
            f"the native snapshot engine is not available on {u.sysname} {u.machine}",
            "gencore's writer supports Linux on x86_64 and aarch64",
        )
    return Check("platform", OK, f"native snapshot engine available (Linux {os.uname().machine})")


def check_directory(directory: Path, rss: int) -> list[Check]:
    out = []
    if not directory.is_dir():
        return [
            Check(
                "directory",
                FAIL,
                f"{directory} does not exist or is not a directory",
                "create it, or pass --directory / set GENCORE_DIR",
            )
        ]
    try:
        fd, probe = tempfile.mkstemp(prefix=".gencore-doctor-", dir=directory)
        os.close(fd)
        os.unlink(probe)
        out.append(Check("directory", OK, f"{directory} is writable"))
    except OSError as e:
        out.append(
            Check(
                "directory",
                FAIL,
                f"cannot create files in {directory}: {e.strerror}",
                "fix its permissions, or pass --directory / set GENCORE_DIR",
            )
        )
        return out
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < rss:
        out.append(
            Check(
                "free space",
                FAIL,
                f"{format_size(free)} free in {directory}, the process has "
                f"{format_size(rss)} resident",
                "free space or choose a larger filesystem",
            )
        )
    elif free < 2 * rss:
        out.append(
            Check(
                "free space",
                WARN,
                f"{format_size(free)} free in {directory} for {format_size(rss)} resident",
                "cores of a growing process may not fit",
            )
        )
    else:
        out.append(
            Check(
                "free space",
                OK,
                f"{format_size(free)} free in {directory} ({format_size(rss)} resident)",
            )
        )
    return out


def check_rlimits() -> list[Check]:
    out = []
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if fsize != resource.RLIM_INFINITY:
        out.append(
            Check(
                "RLIMIT_FSIZE",
                WARN,
                f"files are limited to {_fmt_limit(fsize)}: larger cores fail with EFBIG",
                "raise it (ulimit -f unlimited)",
            )
        )
    else:
        out.append(Check("RLIMIT_FSIZE", OK, "unlimited"))
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        out.append(
            Check(
                "RLIMIT_CORE",
                WARN,
                "hard limit 0: method='kernel' and kernel cores on "
                "crash are impossible (method='native' is not affected)",
                "ulimit -H -c unlimited, or LimitCORE=infinity in systemd",
            )
        )
    elif soft == 0:
        out.append(
            Check(
                "RLIMIT_CORE",
                OK,
                f"soft limit 0 (hard {_fmt_limit(hard)}): "
                "method='kernel' raises it itself; native cores are not affected",
            )
        )
    else:
        out.append(Check("RLIMIT_CORE", OK, _fmt_limit(soft)))
    return out


def check_dumpable() -> Check:
    value = _engine.native.dumpable() if _engine.available() else 1
    if value == 0:
        return Check(
            "dumpable",
            FAIL,
            "the process is non-dumpable (prctl PR_SET_DUMPABLE 0, "
            "or it changed credentials): gencore refuses to dump it",
            "pass force=True if a core is really wanted (it may hold secrets)",
        )
    return Check("dumpable", OK, f"PR_GET_DUMPABLE = {value}")


def check_core_pattern() -> Check:
    pattern = _kernel.read_core_pattern()
    problem = _kernel.core_pattern_problem(pattern)
    if problem:
        return Check(
            "core_pattern",
            WARN,
            problem + ": method='kernel' cannot collect cores (method='native' is not affected)",
            "use method='native' (the default)",
        )
    return Check("core_pattern", OK, f"{pattern!r}: kernel cores land in the working directory")


def check_seccomp() -> Check:
    mode = _status_field("Seccomp")
    if mode == "2":
        return Check(
            "seccomp",
            WARN,
            "a seccomp filter is active: clone, tgkill, rt_sigaction, "
            "process_vm_readv or ioctl may be refused",
            "run `gencore doctor --try` to test a real snapshot",
        )
    return Check("seccomp", OK, "no seccomp filter" if mode in (None, "0") else f"mode {mode}")


def check_kernel() -> list[Check]:
    out = []
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        major, minor = 0, 0
    if (major, minor) >= (6, 7):
        out.append(Check("PAGEMAP_SCAN", OK, f"kernel {release}: holes found with PAGEMAP_SCAN"))
    else:
        out.append(
            Check(
                "PAGEMAP_SCAN",
                WARN,
                f"kernel {release} < 6.7: holes are found with "
                "/proc/self/pagemap, slower on large sparse processes",
                "newer kernel",
            )
        )
    if (major, minor) < (5, 9):
        out.append(
            Check(
                "close_range",
                WARN,
                f"kernel {release} < 5.9: no close_range, the "
                "snapshot child closes descriptors one by one",
                "newer kernel",
            )
        )
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            oc = f.read().strip()
    except OSError:
        oc = ""
    if oc == "2":
        out.append(
            Check(
                "overcommit",
                WARN,
                "vm.overcommit_memory=2: the fork of a large process may fail with ENOMEM",
                "check CommitLimit in /proc/meminfo",
            )
        )
    else:
        out.append(Check("overcommit", OK, f"vm.overcommit_memory={oc or '?'}"))
    return out


def check_trial(directory: Path) -> Check:
    """Write a real core of this process (one thread) and read it back."""
    from .analysis.core import open_core
    from .capture.snapshot import create_core
    from .errors import GencoreError

    try:
        path = create_core(directory, threads=False, python_stacks=False, timeout=120)
    except GencoreError as e:
        return Check("trial", FAIL, f"a trial core failed: {e}", e.advice or "")
    try:
        with open_core(path) as core:
            n = len(core.threads)
        return Check("trial", OK, f"a trial core was written and read back ({n} threads)")
    except GencoreError as e:
        return Check("trial", FAIL, f"the trial core is unreadable: {e}", "report this")
    finally:
        path.unlink()


def run_checks(
    directory: Optional[Union[str, os.PathLike[str]]] = None, trial: bool = False
) -> list[Check]:
    """Every check, for this process and ``directory`` (default: where cores would go)."""
    d = Path(directory) if directory is not None else default_directory()
    checks = [check_platform()]
    checks += check_directory(d, resident_bytes())
    checks += check_rlimits()
    checks.append(check_dumpable())
    checks.append(check_core_pattern())
    checks.append(check_seccomp())
    checks += check_kernel()
    if trial and _engine.available() and not any(c.level == FAIL for c in checks):
        checks.append(check_trial(d))
    return checks
