"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest

from tests.bench_capture import make_bench_capture


@pytest.fixture(scope="session")
def bench_200k(tmp_path_factory) -> Path:
    """The 200,000-packet benchmark capture (skips without ../shared/bench)."""
    return make_bench_capture(tmp_path_factory.mktemp("bench"))
