"""Reading ``/proc`` from Python: the one place that parses maps, status, stat, statm, the
environment and the cgroup files (the snapshot child has its own raw-syscall readers in C).

Every function tolerates a process that exits meanwhile: it returns an empty or ``None``
answer rather than raising.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

Pid = Union[int, str]
"""A process id, or ``"self"``."""

__all__ = [
    "MapRow",
    "Pid",
    "alive",
    "CgroupMemory",
    "cgroup_memory",
    "cgroup_memory_limits",
    "cgroup_mounts",
    "children",
    "cmdline",
    "descendants",
    "environ",
    "executable",
    "exit_signal",
    "maps",
    "ppid",
    "resident_bytes",
    "start_time",
    "stat_fields",
    "status",
]


@dataclass(frozen=True)
class MapRow:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str

    @property
    def readable(self) -> bool:
        """Whether the mapping can be read through its address."""
        return self.perms.startswith("r")


def maps(pid: Pid = "self") -> list[MapRow]:
    """The mappings of ``pid``, in address order ([] if it cannot be read)."""
    rows: list[MapRow] = []
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return rows
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        lo, _, hi = fields[0].partition(b"-")
        path = fields[5].strip().decode(errors="surrogateescape") if len(fields) == 6 else ""
        rows.append(
            MapRow(
                int(lo, 16),
                int(hi, 16),
                fields[1].decode(),
                int(fields[2], 16),
                int(fields[4]),
                path,
            )
        )
    return rows


def status(pid: Pid = "self") -> dict[str, str]:
    """``/proc/PID/status`` as ``{field: value}`` ({} if it cannot be read)."""
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def stat_fields(pid: Pid = "self") -> Optional[list[bytes]]:
    """The fields of ``/proc/PID/stat`` after the command name: index 0 is the state (field
    3), index 19 the start time (field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def start_time(pid: Pid) -> Optional[int]:
    """The process start time in clock ticks: tells a reused pid apart."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def alive(pid: int, started: Optional[int]) -> bool:
    """True while process ``pid`` is the one that started at ``started`` (not a zombie)."""
    fields = stat_fields(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    return started is None or start_time(pid) == started


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``), 0 if unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def environ(pid: Pid) -> dict[bytes, bytes]:
    """The environment ``pid`` started with ({} if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(item.split(b"=", 1) for item in items if b"=" in item)


def cmdline(pid: Pid) -> list[bytes]:
    """The command line of ``pid`` ([] if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return []


def cgroup_mounts() -> dict[str, tuple[str, str]]:
    """``{"v2": (root, mount point), "v1": (root, mount point)}`` of the cgroup file systems
    that can hold memory limits, from ``/proc/self/mountinfo``."""
    out: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            out.setdefault("v2", (fields[3], fields[4]))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            out.setdefault("v1", (fields[3], fields[4]))
    return out


def cgroup_dirs() -> list[tuple[str, str]]:
    """This process's memory cgroup directories, its own first, then its ancestors', as
    ``(version, path)`` with version ``"v2"`` or ``"v1"``."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    mounts = cgroup_mounts()
    out: list[tuple[str, str]] = []
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hid == "0" and controllers == "" and "v2" in mounts:
            version = "v2"
        elif "memory" in controllers.split(",") and "v1" in mounts:
            version = "v1"
        else:
            continue
        root, base = mounts[version]
        if root != "/" and path.startswith(root):
            path = path[len(root) :]  # a container's view: its own group is the mount's root
        parts = [p for p in path.split("/") if p]
        out.extend(
            (version, os.path.join(base, *parts[:depth])) for depth in range(len(parts), -1, -1)
        )
    return out


def read_number(path: str) -> Optional[int]:
    """A cgroup file holding one number; None for ``max``, "no limit" or an unreadable file."""
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError:
        return None
    if not value.isdigit() or int(value) >= 1 << 62:  # v1 "no limit" is about 2**63
        return None
    return int(value)


def cgroup_memory_limits() -> list[int]:
    """The memory limits of this process's cgroup and its ancestors (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``)."""
    out = []
    for version, d in cgroup_dirs():
        name = "memory.max" if version == "v2" else "memory.limit_in_bytes"
        n = read_number(os.path.join(d, name))
        if n is not None:
            out.append(n)
    return out


@dataclass(frozen=True)
class CgroupMemory:
    """The memory cgroup whose limit applies to this process, read now.

    ``limit`` is the hard limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), ``high``
    v2's throttling threshold (``memory.high``; None on v1 or when unset), ``usage`` what the
    group holds now, ``peak`` its highest usage (v2 ``memory.peak``, v1
    ``memory.max_usage_in_bytes``; None when the kernel has none), ``oom_kills`` the OOM
    kills so far and ``high_events`` how often usage went past ``high`` (v2 only).
    """

    version: str
    path: str
    limit: Optional[int]
    high: Optional[int]
    usage: int
    peak: Optional[int]
    oom_kills: int
    high_events: int

    @property
    def headroom(self) -> Optional[int]:
        """Bytes left before the lower of the limits (None without one)."""
        limits = [v for v in (self.limit, self.high) if v is not None]
        return max(0, min(limits) - self.usage) if limits else None


def _counters(path: str) -> dict[str, int]:
    """A cgroup ``key value`` file (``memory.events``, v1 ``memory.oom_control``)."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


def read_cgroup_memory(version: str, path: str) -> CgroupMemory:
    """The memory files of the cgroup directory ``path`` (``"v1"`` or ``"v2"``)."""
    if version == "v2":
        events = _counters(os.path.join(path, "memory.events"))
        return CgroupMemory(
            version,
            path,
            read_number(os.path.join(path, "memory.max")),
            read_number(os.path.join(path, "memory.high")),
            read_number(os.path.join(path, "memory.current")) or 0,
            read_number(os.path.join(path, "memory.peak")),
            events.get("oom_kill", 0),
            events.get("high", 0),
        )
    return CgroupMemory(
        version,
        path,
        read_number(os.path.join(path, "memory.limit_in_bytes")),
        None,
        read_number(os.path.join(path, "memory.usage_in_bytes")) or 0,
        read_number(os.path.join(path, "memory.max_usage_in_bytes")),
        _counters(os.path.join(path, "memory.oom_control")).get("oom_kill", 0),
        0,
    )


def cgroup_memory() -> Optional[CgroupMemory]:
    """The nearest memory cgroup of this process (its own, else an ancestor) with a limit,
    or None. ``$GENCORE_CGROUP`` (``v2:/path`` or ``v1:/path``) names another directory: a
    seam for tests on recorded files."""
    seam = os.environ.get("GENCORE_CGROUP")
    if seam and ":" in seam:
        version, _, path = seam.partition(":")
        return read_cgroup_memory(version, path)
    for version, path in cgroup_dirs():
        mem = read_cgroup_memory(version, path)
        if mem.limit is not None or mem.high is not None:
            return mem
    return None


def ppid(pid: Pid) -> Optional[int]:
    """The parent of ``pid`` (None if it cannot be read)."""
    fields = stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (ValueError, IndexError):
        return None


def children(pid: Pid) -> list[int]:
    """The children of ``pid``, from every thread's ``children`` list ([] if gone)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(kids))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents before their children."""
    out, todo, seen = [], [pid], set()
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(children(p))
    return out


def executable(pid: Pid) -> Optional[str]:
    """The path of the program ``pid`` runs (``/proc/PID/exe``), None if it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def exit_signal(pid: Pid) -> Optional[int]:
    """The signal ``pid`` sends its parent when it exits (field 38 of ``stat``): 0 for
    gencore's snapshot children (and threads), SIGCHLD for ordinary processes."""
    fields = stat_fields(pid)
    try:
        return int(fields[35]) if fields else None
    except (ValueError, IndexError):
        return None
