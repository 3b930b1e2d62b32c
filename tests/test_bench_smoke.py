"""CI smoke run of the benchmark: it runs end to end on a 200k-packet capture, and otsec's
decoded-operation counts equal tshark's within the documented differences. Speed is
measured by bench/run.py, never asserted here."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"


@pytest.mark.skipif(not (SHARED_BENCH / "make_bench_pcap.py").exists(),
                    reason=f"shared benchmark generator not found at {SHARED_BENCH}")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (scripts/install-system-deps.sh)")
def test_benchmark_runs_and_counts_match_tshark():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--packets", "200000",
                        "--rounds", "1", "--check-counts"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    for tool in ("otsec analyze", "otsec check", "tshark -T fields", "dpkt decode loop"):
        assert tool in r.stdout
    assert r.stdout.count(" ok (tolerance") == 3, r.stdout


def test_stage_profile_accounts_for_every_packet():
    """bench/stages.py times each stage; its rows cover every packet of the capture once."""
    capture = ROOT / "pcaps" / "plant_incident.pcap"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "stages.py"), str(capture),
                        "--policy", str(ROOT / "policies" / "example-plant.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {line[:44].strip(): line[44:].split() for line in r.stdout.splitlines() if line.startswith("engine: ")}
    assert set(rows) == {"engine: new connection", "engine: no payload", "engine: payload, decoded connection",
                         "engine: payload, not decoded", "engine: not TCP/UDP/IP"}
    assert sum(int(v[0].replace(",", "")) for v in rows.values()) == 328   # packets in the capture
    assert r.stdout.startswith("plant_incident.pcap: 328 packets, 131 events, 13 connections")
    assert "analyze in one process, Python flow layer" in r.stdout
    from otsec.engine import CompiledFlowTable
    if CompiledFlowTable is not None:
        rows = [line for line in r.stdout.splitlines() if line.startswith("engine, ") or line.startswith("engine (")]
        assert len(rows) == 3 and all(int(row[44:].split()[0]) == 328 for row in rows), r.stdout
