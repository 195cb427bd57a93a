"""Build the native snapshot engine (C, x86_64 Linux); elsewhere the package is pure Python."""

import platform
import sys
from pathlib import Path

from setuptools import Extension, setup

NATIVE = Path("src/gencore/_native")
ext_modules = []
if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
    ext_modules.append(
        Extension(
            "gencore._native",
            sources=sorted(str(p) for p in NATIVE.glob("*.c")),
            depends=sorted(str(p) for p in NATIVE.glob("*.h")),
            extra_compile_args=["-Wall", "-Wextra", "-O2", "-fno-strict-aliasing", "-std=gnu11"],
        )
    )

setup(ext_modules=ext_modules)
