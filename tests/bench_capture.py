"""The 200,000-packet benchmark capture for tests, made with the shared generator
(../shared/bench, deterministic: the same bytes as bench/run.py's) in a temporary
directory, with the benchmark policy for it, so that tests needing the benchmark's shape
(hundreds of hosts, tens of thousands of connections) run on a clean checkout too."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO.parent / "shared" / "bench" / "make_bench_pcap.py"
PACKETS = 200_000


def make_bench_capture(directory: Path) -> Path:
    """The capture (and its generator summary beside it), or a skip without ../shared."""
    if not GENERATOR.is_file():
        pytest.skip(f"benchmark generator not found at {GENERATOR}")
    path = directory / f"bench_{PACKETS}.pcap"
    subprocess.run([sys.executable, str(GENERATOR), str(GENERATOR.parent / "pcaps"), "-o", str(path),
                    "--packets", str(PACKETS), "-q"], check=True)
    return path


def bench_policy(capture: Path) -> Path:
    """bench/run.py's policy for the generator's zones, written beside the capture."""
    spec = importlib.util.spec_from_file_location("otsec_bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bench_policy(capture, capture.parent)
