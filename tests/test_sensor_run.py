"""The sensor as a user runs it: a subprocess on a veth pair (live) or a pcap directory,
stopped with SIGTERM, reloaded with SIGHUP. Findings must equal what the offline Checker
(the `otsec check` pipeline) finds in the same capture: same rule, endpoints and counts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from otsec.capture import CaptureReader
from otsec.detect.checker import Checker
from otsec.engine import analyze
from otsec.policy.loader import load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "example-plant.yaml"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"
NORMAL = ROOT / "pcaps" / "plant_normal.pcap"
#: One finding per planted incident kind that the live test waits for before SIGTERM
#: (raised by a message, so it must arrive while the sensor runs, not only at exit).
LIVE_MARKER = "OTSEC-UNSAFE-003"


def expected_findings(*paths: Path) -> set[tuple]:
    checker = Checker(load_policy(POLICY))
    analyze(paths, checker.on_event, checker.on_flow)
    return {_key(f.to_dict()) for f in checker.finish()}


def _key(d: dict) -> tuple:
    return (d["rule"], d["src"]["ip"], (d["dst"] or {}).get("ip"), d["protocol"], d["port"],
            d["evidence"]["count"])


def db_findings(db: Path) -> set[tuple]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT rule, src_ip, dst_ip, protocol, port, count FROM findings").fetchall()
    con.close()
    return set(rows)


def json_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_json_findings(path: Path) -> set[tuple]:
    """The last record of every finding (its final count)."""
    last = {}
    for r in json_records(path):
        if r["type"] == "finding":
            last[(r["run"], r["seq"])] = r
    return {_key(r) for r in last.values()}


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class SensorProc:
    """`python -m otsec.cli.sensor ...` with stderr captured to a file."""

    def __init__(self, tmp: Path, args: list[str], prefix: list[str] = ()):
        self.err_path = tmp / f"sensor-{time.monotonic_ns()}.log"
        self.err = open(self.err_path, "w")
        cmd = [*prefix, sys.executable, "-m", "otsec.cli.sensor", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def log(self) -> str:
        return self.err_path.read_text()

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.err.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


@pytest.fixture
def run_sensor(tmp_path):
    procs: list[SensorProc] = []

    def start(args: list[str], prefix: list[str] = ()) -> SensorProc:
        p = SensorProc(tmp_path, args, prefix)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


# --- live capture on a veth pair inside a private network namespace ----------------------

def _root_netns_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespace, raw capture)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/install-system-deps.sh)"
    try:
        import pcapy  # noqa: F401
    except ImportError:
        return "needs pcapy-ng (pip install pcapy-ng)"
    return None


@pytest.fixture
def netns():
    """A namespace holding both ends of a veth pair (no addresses: frames only cross the pair)."""
    reason = _root_netns_ok()
    if reason:
        pytest.skip(reason)
    name = f"otsec-test-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        for cmd in (["link", "add", "sens0", "type", "veth", "peer", "name", "feed0"],
                    ["link", "set", "sens0", "up"], ["link", "set", "feed0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        for key in ("all", "default", "sens0", "feed0"):   # no IPv6 chatter on the pair
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw",
                            f"net.ipv6.conf.{key}.disable_ipv6=1"], capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def replay(ns: str, pcap: Path) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", "feed0", "--pps", "1000",
                    str(pcap)], check=True, capture_output=True, timeout=30)


def _started(path: Path) -> bool:
    return any(r["type"] == "sensor" and r["event"] == "started" for r in json_records(path))


def _collect(sock: socket.socket, messages: list[str]) -> None:
    """A syslog collector on a unix datagram socket: read until quiet for 2 s after the first."""
    idle = 0.0
    while idle < 2.0:
        try:
            messages.append(sock.recv(65536).decode())
            idle = 0.0
        except socket.timeout:
            idle += 0.2 if messages else 0.0


def test_live_replay_findings_reach_sqlite_json_syslog_and_evidence(netns, tmp_path, run_sensor):
    db, out, ev = tmp_path / "s.db", tmp_path / "s.jsonl", tmp_path / "evidence"
    sock_path = str(tmp_path / "syslog.sock")
    collector = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    collector.bind(sock_path)
    collector.settimeout(0.2)
    messages: list[str] = []
    listener = threading.Thread(target=_collect, args=(collector, messages), daemon=True)
    listener.start()
    s = run_sensor(["--interface", "sens0", "--policy", str(POLICY), "--db", str(db), "--json", str(out),
                    "--syslog", f"unix:{sock_path}", "--syslog-format", "cef", "--evidence-dir", str(ev),
                    "--stats-interval", "1"], prefix=["ip", "netns", "exec", netns])
    wait_for(lambda: _started(out), 20, "the sensor to start capturing")
    replay(netns, INCIDENT)
    # a message-level finding arrives while the sensor still runs
    wait_for(lambda: any(r["type"] == "finding" and r["rule"] == LIVE_MARKER for r in json_records(out)),
             10, f"{LIVE_MARKER} in the JSON lines while running")
    assert s.proc.poll() is None
    assert s.stop() == 0, s.log()

    expected = expected_findings(INCIDENT)
    assert db_findings(db) == expected
    assert final_json_findings(out) == expected
    con = sqlite3.connect(db)
    (packets, dropped), = con.execute(
        "SELECT packets, kernel_dropped FROM sensor_stats ORDER BY ts DESC LIMIT 1").fetchall()
    assert packets == 328 and dropped == 0
    assert con.execute("SELECT exit_reason FROM sensor_runs").fetchone() == ("SIGTERM",)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # evidence: the PLC stop's pcap holds packets between hmi-1 and plc-s7 only
    (evidence,), = con.execute("SELECT evidence FROM findings WHERE rule = ?", [LIVE_MARKER]).fetchall()
    con.close()
    with CaptureReader(evidence) as reader:
        frames = [frame for _, _, _, frame in reader]
    assert frames and all({frame[26:30], frame[30:34]} == {bytes([10, 40, 0, 10]), bytes([10, 50, 0, 30])}
                          for frame in frames)
    # syslog: RFC 5424 header with CEF in the message, one per active finding (at least)
    listener.join(5)
    collector.close()
    stop_msgs = [m for m in messages if f" {LIVE_MARKER} " in m]
    assert stop_msgs and stop_msgs[0].startswith("<162>1 ")   # local4 (20) * 8 + crit (2)
    assert "CEF:0|otsec|otsec|" in stop_msgs[0] and "|OTSEC-UNSAFE-003|" in stop_msgs[0]
    assert {m.split(" ")[5] for m in messages} >= {k[0] for k in expected}


def test_live_interface_down_is_reported_and_retried(netns, tmp_path, run_sensor):
    db, out = tmp_path / "s.db", tmp_path / "s.jsonl"
    s = run_sensor(["--interface", "sens0", "--policy", str(POLICY), "--db", str(db), "--json", str(out)],
                   prefix=["ip", "netns", "exec", netns])
    wait_for(lambda: _started(out), 20, "the sensor to start capturing")
    subprocess.run(["ip", "-n", netns, "link", "set", "sens0", "down"], check=True)
    wait_for(lambda: "interface sens0: The interface went down; retrying" in s.log(), 10, "the outage report")
    subprocess.run(["ip", "-n", netns, "link", "set", "sens0", "up"], check=True)
    wait_for(lambda: "capturing again" in s.log(), 15, "the capture to resume")
    replay(netns, INCIDENT)
    wait_for(lambda: any(r["type"] == "finding" and r["rule"] == LIVE_MARKER for r in json_records(out)),
             10, "findings after the outage")
    assert s.stop() == 0, s.log()
    assert db_findings(db) == expected_findings(INCIDENT)


# --- pcap directory ------------------------------------------------------------------------

def split_pcap(src: Path, parts: int) -> list[bytes]:
    """A classic pcap cut into ``parts`` valid pcap files (same header, consecutive records)."""
    data = src.read_bytes()
    header, pos, offsets = data[:24], 24, []
    little = data[:4] == b"\xd4\xc3\xb2\xa1"
    while pos < len(data):
        offsets.append(pos)
        caplen = int.from_bytes(data[pos + 8:pos + 12], "little" if little else "big")
        pos += 16 + caplen
    per = -(-len(offsets) // parts)
    cuts = offsets[::per] + [len(data)]
    return [header + data[a:b] for a, b in zip(cuts, cuts[1:])]


def _files_done(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(db)
        rows = con.execute("SELECT name, packets FROM sensor_files WHERE status = 'done'").fetchall()
        con.close()
    except sqlite3.OperationalError:
        return {}
    return dict(rows)


def test_pcap_dir_follows_rotation_and_never_reads_a_file_twice(tmp_path, run_sensor):
    d, db, out = tmp_path / "spool", tmp_path / "s.db", tmp_path / "s.jsonl"
    d.mkdir()
    parts = split_pcap(INCIDENT, 3)
    args = ["--pcap-dir", str(d), "--policy", str(POLICY), "--db", str(db), "--json", str(out),
            "--settle", "1.5"]
    s = run_sensor(args)
    (d / "cap_00001.pcap").write_bytes(parts[0])
    time.sleep(0.3)
    # the newest file is still "being written": half of it now, the rest later
    (d / "cap_00002.pcap").write_bytes(parts[1][: len(parts[1]) // 2])
    wait_for(lambda: "cap_00001.pcap" in _files_done(db), 10, "the first file (a newer one exists)")
    assert "cap_00002.pcap" not in _files_done(db)
    with open(d / "cap_00002.pcap", "ab") as fh:
        fh.write(parts[1][len(parts[1]) // 2:])
    time.sleep(0.3)
    (d / "cap_00003.pcap").write_bytes(parts[2])
    (d / ".cap_00004.pcap.tmp").write_bytes(b"not yet")
    wait_for(lambda: len(_files_done(db)) == 3, 10, "the last file (settled)")
    assert s.stop() == 0, s.log()
    done = _files_done(db)
    assert sum(done.values()) == 328
    expected = expected_findings(INCIDENT)
    assert db_findings(db) == expected
    assert final_json_findings(out) == expected

    # a restart reads nothing again; a file added later is read
    s2 = run_sensor(args)
    (d / "cap_00005.pcap").write_bytes(split_pcap(NORMAL, 1)[0])
    wait_for(lambda: "cap_00005.pcap" in _files_done(db), 10, "the file added after the restart")
    assert s2.stop() == 0, s2.log()
    reads = [line for line in s2.log().splitlines() if "INFO: reading " in line or "resuming" in line]
    assert len(reads) == 1 and reads[0].endswith("cap_00005.pcap")
    con = sqlite3.connect(db)
    runs = con.execute("SELECT run_id, json_extract(detail, '$.engine.packets') FROM sensor_stats "
                       "WHERE rowid IN (SELECT max(rowid) FROM sensor_stats GROUP BY run_id)").fetchall()
    con.close()
    assert [n for _, n in sorted(runs)] == [328, 604]


def test_sighup_reload_keeps_old_policy_when_invalid_and_applies_a_valid_one(tmp_path, run_sensor):
    d, db, out = tmp_path / "spool", tmp_path / "s.db", tmp_path / "s.jsonl"
    d.mkdir()
    policy = tmp_path / "policy.yaml"
    original = POLICY.read_text()
    policy.write_text(original)
    s = run_sensor(["--pcap-dir", str(d), "--policy", str(policy), "--db", str(db), "--json", str(out),
                    "--settle", "0.5", "--update-interval", "0"])
    wait_for(lambda: _started(out), 20, "the sensor to start")

    policy.write_text(original.replace("zones:\n", "zones:\n  - name: broken\n    level: banana\n", 1))
    s.signal(signal.SIGHUP)
    line = wait_for(lambda: [l for l in s.log().splitlines() if "policy reload rejected" in l], 10,
                    "the rejection")
    assert len(line) == 1 and f"{policy}:" in line[0] and "keeping the previous policy" in line[0]
    assert s.proc.poll() is None
    (d / "a.pcap").write_bytes(INCIDENT.read_bytes())
    wait_for(lambda: "a.pcap" in _files_done(db), 10, "the first capture")
    wait_for(lambda: any(r["type"] == "finding" and r["rule"] == LIVE_MARKER for r in json_records(out)),
             5, "findings under the kept policy")

    policy.write_text(original.replace(
        "  suppressions: []",
        "  suppressions:\n    - rule: OTSEC-UNSAFE-003\n      reason: planned PLC restart CHG-7"))
    s.signal(signal.SIGHUP)
    wait_for(lambda: "policy reloaded" in s.log(), 10, "the reload")
    (d / "b.pcap").write_bytes(INCIDENT.read_bytes())     # the incident again, under the new policy
    wait_for(lambda: "b.pcap" in _files_done(db), 10, "the second capture")
    assert s.stop() == 0, s.log()

    records = [r for r in json_records(out) if r["type"] == "finding" and r["rule"] == LIVE_MARKER]
    assert records[0]["suppressed"] is None
    assert records[-1]["suppressed"]["reason"] == "planned PLC restart CHG-7"
    assert records[-1]["evidence"]["count"] == 2
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT rule, suppressed_reason FROM findings").fetchall())
    con.close()
    assert rows[LIVE_MARKER] == "planned PLC restart CHG-7"
    assert rows["OTSEC-UNSAFE-002"] is None
