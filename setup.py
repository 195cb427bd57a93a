"""Build the native snapshot engine (C, Linux on x86_64 and aarch64) as one abi3 extension;
elsewhere, or with GENCORE_PURE=1, the package is pure Python (it reads cores; dumping raises
UnsupportedPlatformError). GENCORE_TARGET_ARCH names the target of a cross build (the
compiler comes from CC; scripts/build-wheels does this)."""

import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup

NATIVE = Path("src/gencore/_native")
LIMITED_API = 0x03090000  # the stable ABI of CPython 3.9: one wheel for 3.9 and every later one
PURE = os.environ.get("GENCORE_PURE") == "1"

ext_modules = []
options = {}
ARCH = os.environ.get("GENCORE_TARGET_ARCH") or platform.machine()
if (
    not PURE
    and sys.platform.startswith("linux")
    and ARCH in ("x86_64", "AMD64", "aarch64", "arm64")
):
    ext_modules.append(
        Extension(
            "gencore._native",
            sources=sorted(str(p) for p in NATIVE.glob("*.c")),
            depends=sorted(str(p) for p in NATIVE.glob("*.h")),
            define_macros=[("Py_LIMITED_API", hex(LIMITED_API))],
            py_limited_api=True,
            extra_compile_args=[
                "-Wall",
                "-Wextra",
                "-O2",
                "-fno-strict-aliasing",
                "-std=gnu11",
                "-ffile-prefix-map=" + os.getcwd() + "=.",  # no build paths in the binary
            ],
        )
    )
    options["bdist_wheel"] = {"py_limited_api": "cp39"}

setup(ext_modules=ext_modules, options=options)
