"""Build the native snapshot engine (C, Linux on x86_64 and aarch64) as one abi3 extension;
elsewhere, or with GENCORE_PURE=1, the package is pure Python (it reads cores; dumping raises
UnsupportedPlatformError). GENCORE_TARGET_ARCH names the target of a cross build (the
compiler comes from CC; scripts/build-wheels does this)."""

import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# `gencore run` arms every Python process it starts (spawn, forkserver, --children): the
# wheel puts this .pth next to the package, where site runs it at every start; it does
# nothing unless $GENCORE_RUN is set.
AUTOARM_PTH = "gencore-autoarm.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(Path("src") / AUTOARM_PTH), str(Path(self.build_lib) / AUTOARM_PTH))
        if getattr(self, "editable_mode", False):
            # an editable wheel holds only a path .pth: ours goes into its .data/purelib,
            # which pip installs into site-packages (the wheel's scripts dir is its sibling)
            scripts = self.distribution.get_command_obj("build").build_scripts
            data = Path(scripts or "").parent
            if data.name.endswith(".data"):
                (data / "purelib").mkdir(parents=True, exist_ok=True)
                self.copy_file(str(Path("src") / AUTOARM_PTH), str(data / "purelib" / AUTOARM_PTH))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / AUTOARM_PTH)]

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

setup(ext_modules=ext_modules, options=options, cmdclass={"build_py": BuildPyWithPth})
