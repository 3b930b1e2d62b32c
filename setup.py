"""Builds otsec's compiled flow layer (otsec.flow._fast), the fast path of the engine, and
the compiled counting of findings (otsec.detect._findings).

Everything else is declared in pyproject.toml. Without a C compiler the build still
succeeds and otsec runs on its pure-Python flow layer (the reference implementation),
several times slower: `otsec --version` says which one is in use.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Fall back to the pure-Python flow layer when the extension cannot be compiled."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: go without
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(f"otsec: compiled flow layer not built ({exc}); using the pure-Python one",
              file=sys.stderr)


COMPILE_ARGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers"]

setup(
    ext_modules=[Extension(
        "otsec.flow._fast",
        sources=["otsec/flow/_fast.c", "otsec/_model.c", "otsec/decoders/_modbus.c", "otsec/decoders/_s7comm.c",
                 "otsec/decoders/_opcua.c"],
        depends=["otsec/flow/_parse.h", "otsec/flow/_newflow.h", "otsec/decoders/_cdecode.h", "otsec/_slots.h"],
        include_dirs=["otsec/decoders"],
        extra_compile_args=COMPILE_ARGS,
    ), Extension(
        "otsec.detect._findings",
        sources=["otsec/detect/_findings.c"],
        depends=["otsec/_slots.h"],
        extra_compile_args=COMPILE_ARGS,
    )],
    cmdclass={"build_ext": OptionalBuildExt},
)
