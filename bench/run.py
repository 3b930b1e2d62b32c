#!/usr/bin/env python3
"""Throughput and memory benchmark: otsec against tshark and a dpkt decode loop.

Builds the benchmark captures with the shared generator (../shared/bench), then runs each
tool as a whole process on the same file, alternating (A B C A B C ...) so that a busy
neighbour slows every tool alike, and prints medians of packets/s, the speed relative to
tshark's OT field extraction, and each process's own peak RSS (from wait4, not the
children's maximum).

    python bench/run.py                          # 200k and 1M packets, 3 rounds
    python bench/run.py --packets 200000 --rounds 1 --check-counts   # CI smoke run
    python bench/run.py --packets 200000 --repeat 10   # peak RSS: one plant, 10x the packets

``--check-counts`` also compares otsec's decoded-operation counts per protocol with
tshark's on the benchmark capture, allowing only the documented differences.

``--repeat N`` also measures otsec's peak RSS on the capture given N times in a row (one
run, N times the packets of the same plant): the generator's larger captures also hold a
larger plant (more hosts and host pairs), so they alone cannot show that memory does not
grow with the length of a capture.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = Path(os.environ.get("OTSEC_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
OUT = ROOT / "bench" / "out"

TSHARK_FIELDS = ["frame.number", "ip.src", "ip.dst", "modbus.func_code", "s7comm.param.func",
                 "opcua.servicenodeid.numeric"]


def build_capture(packets: int) -> Path:
    """The shared generator's capture of this size (cached: same options give the same bytes)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"bench_{packets}.pcap"
    if not path.exists():
        subprocess.run([sys.executable, str(SHARED_BENCH / "make_bench_pcap.py"),
                        str(SHARED_BENCH / "pcaps"), "-o", str(path), "--packets", str(packets), "-q"],
                       check=True)
    return path


def bench_policy(capture: Path, out: Path = OUT) -> Path:
    """A policy for the generator's zone table, so `otsec check` is measured on a plant
    whose normal traffic is allowed: SCADA clients may use the OT protocols towards every
    cell, office clients the IT services of the server zone; the generator's planted
    violations (about 2 % of connections) remain findings."""
    meta = json.loads(Path(str(capture) + ".json").read_text())
    levels = {"it_client": 4, "it_server": 4, "ot_client": 3, "ot_server": 1}
    lines = ["zones:"]
    for zone in meta["zones"]:
        lines += [f"  - name: {zone['zone']}", f"    level: {levels.get(zone['role'], 2)}", "    cidrs:"]
        lines += [f"      - {net}" for net in zone["subnets"]]
    by_role: dict[str, list[str]] = {}
    for zone in meta["zones"]:
        by_role.setdefault(zone["role"], []).append(zone["zone"])
    ot_rules = ["modbus:502", "s7comm:102", "opcua:4840"]
    it_rules = ["https:443", "http:80", "dns:53", "smb:445"]
    lines.append("conduits:")
    for clients, servers, rules in ((by_role.get("ot_client", []), by_role.get("ot_server", []), ot_rules),
                                    (by_role.get("it_client", []), by_role.get("it_server", []), it_rules)):
        for client in clients:
            for server in servers:
                lines += [f"  - name: {client}-to-{server}", f"    zones: [{client}, {server}]",
                          f"    initiator: {client}", "    allow:"]
                for rule in rules:
                    proto, port = rule.split(":")
                    lines += [f"      - protocol: {proto}", f"        ports: [{port}]"]
    path = out / "bench-policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and this process's peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(cmd[:3])}... failed ({proc.returncode}): {stderr.strip()[:300]}")
    return elapsed, usage.ru_maxrss / 1024


def tools(capture: Path, with_check: bool) -> dict[str, list[str]]:
    otsec = [sys.executable, "-m", "otsec.cli.main"]
    found = {"otsec analyze": otsec + ["analyze", str(capture), "--no-progress", "--format", "json"]}
    if with_check:
        found["otsec check"] = otsec + ["check", str(capture), "--policy", str(bench_policy(capture))]
    if shutil.which("tshark"):
        found["tshark -T fields (6 OT fields)"] = ["tshark", "-r", str(capture), "-T", "fields"] + [
            x for f in TSHARK_FIELDS for x in ("-e", f)]
    baseline = SHARED_BENCH / "baseline_dpkt.py"
    if baseline.exists():
        found["dpkt decode loop (--mode full)"] = [sys.executable, str(baseline), str(capture), "--mode", "full"]
    return found


def tshark_operation_counts(capture: Path) -> dict[str, int]:
    out = subprocess.run(["tshark", "-r", str(capture), "-T", "fields", "-e", "modbus.func_code",
                          "-e", "s7comm.header.rosctr", "-e", "opcua.transport.type"],
                         capture_output=True, text=True, check=True).stdout
    counts = {"modbus": 0, "s7comm": 0, "opcua": 0}
    for line in out.splitlines():
        for proto, field in zip(counts, line.split("\t")):
            if field:
                counts[proto] += len(field.split(","))
    return counts


def otsec_operation_counts(capture: Path) -> dict[str, int]:
    sys.path.insert(0, str(ROOT))
    from otsec.engine import analyze

    counts = {"modbus": 0, "s7comm": 0, "opcua": 0}

    def count(ev):
        if ev.protocol in counts:
            counts[ev.protocol] += 1
    analyze([capture], on_event=count)
    return counts


#: Where otsec and tshark legitimately disagree on the benchmark capture, as a fraction of
#: tshark's count. The generator replays the corpus captures, so their documented
#: differences (tests/test_*_corpus.py) repeat with every copy: Modbus ADUs after stray
#: bytes that tshark skips and bytes only a retransmission carried; OPC UA messages whose
#: bytes only a spurious retransmission carried (opcua_with-gap). S7comm agrees exactly.
COUNT_TOLERANCE = {"modbus": 0.001, "s7comm": 0.0, "opcua": 0.002}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", default="200000,1000000", help="comma-separated capture sizes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-counts", action="store_true", help="compare decoded counts with tshark")
    parser.add_argument("--no-check-command", action="store_true", help="skip measuring `otsec check`")
    parser.add_argument("--repeat", type=int, default=0, metavar="N",
                        help="also peak RSS of otsec on the capture given N times (same plant, N x the packets)")
    args = parser.parse_args()
    if not (SHARED_BENCH / "make_bench_pcap.py").exists():
        print(f"bench: skipped: the shared benchmark generator is not at {SHARED_BENCH}")
        return 0
    # otsec's bytecode, as an installed package has it (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, every run would compile the sources again (~0.1 s)
    compileall.compile_dir(ROOT / "otsec", quiet=1)
    failed = False
    for packets in (int(p) for p in args.packets.split(",")):
        capture = build_capture(packets)
        cmds = tools(capture, with_check=not args.no_check_command and _has_check())
        times: dict[str, list[float]] = {name: [] for name in cmds}
        rss: dict[str, float] = {name: 0.0 for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                elapsed, peak = run_measured(cmd)
                times[name].append(elapsed)
                rss[name] = max(rss[name], peak)
        ref = next((statistics.median(t) for n, t in times.items() if n.startswith("tshark")), None)
        print(f"\n{packets:,} packets ({capture.stat().st_size / 2**20:.0f} MiB), median of {args.rounds} alternating runs")
        print(f"{'tool':34s} {'seconds':>8s} {'pkt/s':>10s} {'vs tshark':>10s} {'peak RSS MiB':>13s}")
        for name, t in times.items():
            med = statistics.median(t)
            ratio = f"{ref / med:.2f}x" if ref else "-"
            print(f"{name:34s} {med:8.2f} {packets / med:10,.0f} {ratio:>10s} {rss[name]:13.0f}")
        if args.repeat > 1:
            print(f"peak RSS MiB, the same plant: the capture once, then {args.repeat} times in one run "
                  f"({args.repeat * packets:,} packets)")
            for name, cmd in cmds.items():
                if name.startswith("otsec"):
                    at = cmd.index(str(capture))
                    repeated = cmd[:at] + [str(capture)] * args.repeat + cmd[at + 1:]
                    print(f"{name:34s} {rss[name]:8.0f} -> {run_measured(repeated)[1]:.0f}")
        if args.check_counts and shutil.which("tshark"):
            ours, theirs = otsec_operation_counts(capture), tshark_operation_counts(capture)
            for proto in ours:
                tol = COUNT_TOLERANCE[proto] * max(theirs[proto], 1)
                ok = abs(ours[proto] - theirs[proto]) <= tol
                failed |= not ok
                print(f"counts {proto:7s} otsec {ours[proto]:8d} tshark {theirs[proto]:8d} "
                      f"{'ok' if ok else 'DIFFERENT'} (tolerance {COUNT_TOLERANCE[proto]:.1%})")
    return 1 if failed else 0


def _has_check() -> bool:
    return (ROOT / "otsec" / "cli" / "check.py").exists()


if __name__ == "__main__":
    sys.exit(main())
