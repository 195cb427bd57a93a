"""The options of one core, validated once by the public functions and carried to the end."""

from __future__ import annotations

import dataclasses
import os
import signal
from dataclasses import dataclass
from typing import Any, Optional, TypedDict, Union

from .._common import (
    DEFAULT_FILTER,
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_TIMEOUT,
    PathLike,
    ProgressCallback,
)
from ..errors import FreezeError

METHODS = ("native", "kernel")
COMPRESSIONS = (None, "zstd")


class CoreOptionArgs(TypedDict, total=False):
    """The keyword arguments every core-taking function accepts (see ``create_core``)."""

    name: Optional[str]
    threads: bool
    python_stacks: bool
    filter: int
    freeze_timeout: float
    timeout: Optional[float]
    freeze_signal: Optional[int]
    force: bool
    on_progress: Optional[ProgressCallback]
    method: str
    upload: Optional[str]
    keep_local: bool
    compress: Optional[str]
    max_size: Union[int, str, None]


@dataclass(frozen=True)
class CoreOptions:
    """How to take one core; built (and checked) by :meth:`build` before anything is forked.

    ``reason``, ``extra`` and ``siginfo`` are set by the triggers, not by the public API.
    """

    directory: Optional[PathLike] = None
    name: Optional[str] = None
    threads: bool = True
    python_stacks: bool = True
    filter: int = DEFAULT_FILTER
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    timeout: Optional[float] = DEFAULT_TIMEOUT
    freeze_signal: Optional[int] = None
    force: bool = False
    on_progress: Optional[ProgressCallback] = None
    method: str = "native"
    upload: Optional[str] = None
    keep_local: bool = False
    compress: Optional[str] = None
    max_size: int = 0
    reason: str = "api"
    extra: Optional[dict[str, Any]] = None
    siginfo: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def build(
        cls, directory: Optional[PathLike], options: CoreOptionArgs, **internal: Any
    ) -> CoreOptions:
        """Check the public options (unknown names are a ``TypeError``, bad values a
        ``ValueError``) and return the frozen options."""
        for key in options:
            if key not in CoreOptionArgs.__annotations__:
                raise TypeError(f"unexpected keyword argument {key!r}")
        values: dict[str, Any] = {**options, **internal}
        values["max_size"] = max_size_bytes(values.get("max_size"))
        opts = cls(directory=directory, **values)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise ``ValueError`` for impossible values."""
        if self.method not in METHODS:
            raise ValueError(f"method must be 'native' or 'kernel', got {self.method!r}")
        if not isinstance(self.filter, int) or not 0 <= self.filter <= 0x1FF:
            raise ValueError(f"filter must be coredump_filter bits 0..0x1ff, got {self.filter!r}")
        if self.name is not None:
            from .._common import core_names

            core_names(self.name)
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {self.timeout!r}")
        if self.upload is not None and (
            not isinstance(self.upload, str) or "://" not in self.upload
        ):
            raise ValueError(
                f"upload must be a URL such as s3://bucket/prefix/, got {self.upload!r}"
            )
        if self.compress not in COMPRESSIONS:
            raise ValueError(f"compress must be None or 'zstd', got {self.compress!r}")
        if self.max_size and self.method == "kernel":
            raise ValueError("max_size needs method='native': the kernel writes whole cores")
        if self.compress and self.method == "kernel":
            raise ValueError("compress='zstd' needs method='native': the kernel writes plain cores")
        if self.freeze_timeout < 0:
            raise ValueError(f"freeze_timeout must be >= 0 seconds, got {self.freeze_timeout!r}")

    def replace(self, **changes: Any) -> CoreOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def max_size_bytes(value: Union[int, float, str, None]) -> int:
    """``max_size`` in bytes (0: no cap) from bytes or text such as ``"64M"`` or ``"2G"``.

    Raises:
        ValueError: negative, zero or not a size.
    """
    from .watch import size_bytes

    if value is None:
        return 0
    n = size_bytes(value, "max_size")
    if n <= 0:
        raise ValueError(f"max_size must be a positive size such as 64M, got {value!r}")
    return n


def check_max_size(max_size: int, note_len: int) -> None:
    """Raise ``ValueError`` when ``max_size`` cannot hold even this process's headers and
    notes (before anything is forked)."""
    from .._common import format_size
    from .caplayout import minimum_size

    if not max_size:
        return
    need = minimum_size(note_len, max_size)
    if max_size < need:
        raise ValueError(
            f"max_size {format_size(max_size)} ({max_size} bytes) is below the "
            f"{format_size(need)} ({need} bytes) this process's headers and notes need: pass "
            "at least that"
        )


def freeze_signal(value: Optional[int]) -> int:
    """The real-time signal that parks threads: the argument, ``$GENCORE_FREEZE_SIGNAL`` or
    ``SIGRTMAX-3``."""
    if value is None:
        env = os.environ.get("GENCORE_FREEZE_SIGNAL")
        value = int(env) if env else signal.SIGRTMAX - 3
    sig = int(value)
    if not (signal.SIGRTMIN <= sig <= signal.SIGRTMAX):
        raise FreezeError(
            f"freeze signal {sig} is not a real-time signal",
            advice=f"choose one in {int(signal.SIGRTMIN)}..{int(signal.SIGRTMAX)}",
            stage="preflight",
        )
    return sig
