"""The FlowTable implementations under test: the Python reference, and the compiled twin
(otsec.flow._fast) when it is built.

Tests parametrize over :data:`IMPLEMENTATIONS` (ids "python" and "compiled") and resolve
the class with :func:`table_class`. Without the extension the compiled case skips, unless
``OTSEC_REQUIRE_COMPILED=1`` (set in CI, where the extension must have been built): then
it fails, so a silently missing build is caught.
"""

from __future__ import annotations

import os

import pytest

from otsec.flow.table import FlowTable as PythonFlowTable

COMPILED_REQUIRED = os.environ.get("OTSEC_REQUIRE_COMPILED") == "1"
NOT_BUILT = "compiled flow layer not built"

try:
    from otsec.flow import _fast
except ImportError as exc:
    _fast = None
    _WHY_NOT = f"{type(exc).__name__}: {exc}"

CompiledFlowTable = getattr(_fast, "FlowTable", None)

#: pytest params naming the implementations; resolve one with :func:`table_class`.
IMPLEMENTATIONS = [pytest.param("python", id="python"), pytest.param("compiled", id="compiled")]


def require_compiled() -> type:
    """The compiled FlowTable; skips the calling test without it (fails when required)."""
    if CompiledFlowTable is None:
        if COMPILED_REQUIRED:
            pytest.fail(f"OTSEC_REQUIRE_COMPILED=1 but otsec.flow._fast.FlowTable is missing "
                        f"({_WHY_NOT if _fast is None else 'module has no FlowTable'}); "
                        f"build it with: python setup.py build_ext --inplace", pytrace=False)
        pytest.skip(NOT_BUILT)
    return CompiledFlowTable


def table_class(name: str) -> type:
    """The FlowTable class of an implementation named as in :data:`IMPLEMENTATIONS`."""
    return PythonFlowTable if name == "python" else require_compiled()


def available() -> dict[str, type]:
    """Every implementation importable here, by name (the Python one always)."""
    found = {"python": PythonFlowTable}
    if CompiledFlowTable is not None:
        found["compiled"] = CompiledFlowTable
    return found
