"""The sensor over months: what breaks around it (database locked or full, JSON file rotated,
evidence directory removed, syslog collector down or black-holed, damaged or replaced
capture files) costs at most what it names, never the capture, and memory stays bounded.

The sensor runs in-process here, driven poll by poll, so each case is exact and fast; the
subprocess tests (test_sensor_run.py) cover signals and live capture.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from otsec.detect.findings import Endpoint
from otsec.engine import EngineConfig
from otsec.sensor import outputs, runner
from otsec.sensor.evidence import EvidenceRecorder
from otsec.report.wording import one_line
from otsec.sensor.outputs import JsonLinesOutput, SyslogOutput, format_cef, format_rfc5424
from otsec.sensor.runner import Sensor, SensorConfig

from tests.test_sensor_run import INCIDENT, NORMAL, POLICY, expected_findings, split_pcap
from tests.test_sensor_units import RECORD, _packets


class ListLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


@pytest.fixture
def log():
    logger = logging.getLogger(f"otsec.sensor.test{time.monotonic_ns()}")
    logger.propagate = False
    handler = ListLog()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, handler


def make_sensor(tmp: Path, log, **kw) -> Sensor:
    spool = tmp / "spool"
    spool.mkdir(exist_ok=True)
    cfg = SensorConfig(policy=POLICY, db=kw.pop("db", tmp / "s.db"), pcap_dir=spool, settle=0.0, **kw)
    s = Sensor(cfg, log[0])
    s.source.start()
    return s


def drain(s: Sensor, scans: int = 3) -> None:
    """Poll until every complete file is read, then scan ``scans`` more times."""
    idle = 0
    while idle < scans:
        s.source.next_scan = 0.0
        n = s.source.poll(s, runner.BATCH, 0.0)
        idle = idle + 1 if n == 0 and s.source.reader is None else 0


def db_rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# --- database ----------------------------------------------------------------------------

def test_locked_database_neither_stalls_the_loop_nor_rereads_files(tmp_path, log):
    s = make_sensor(tmp_path, log)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")            # another writer holds the lock
    (tmp_path / "spool" / "a.pcap").write_bytes(INCIDENT.read_bytes())
    drain(s)
    t0 = time.monotonic()
    s.flush(stats=True)
    assert time.monotonic() - t0 < 2.0           # short busy timeout, not sqlite's 30 s
    assert log[1].count("keeping findings and stats in memory") == 1
    for _ in range(3):                            # progress is remembered although unsaved
        drain(s)
        s.flush()
    assert s.engine.packets == 328
    assert log[1].count("reading ") == 1
    blocker.execute("COMMIT")
    blocker.close()
    s._db_retry_at = 0.0
    s.flush()
    assert log[1].count("writable again") == 1
    assert db_rows(tmp_path / "s.db", "SELECT name, packets, status FROM sensor_files") == [("a.pcap", 328, "done")]
    s.source.close()
    s.engine.finish()
    s.flush(final=True)
    got = set(db_rows(tmp_path / "s.db", "SELECT rule, src_ip, dst_ip, protocol, port, count FROM findings"))
    assert got == expected_findings(INCIDENT)


def test_learning_start_is_stored_even_when_the_first_packet_meets_a_locked_database(tmp_path, log):
    s = make_sensor(tmp_path, log, learn_seconds=3600.0)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    (tmp_path / "spool" / "a.pcap").write_bytes(INCIDENT.read_bytes())
    drain(s)                                      # used to block 30 s, then crash
    blocker.execute("COMMIT")
    blocker.close()
    s._db_retry_at = 0.0
    s.flush()
    first_ts = _packets()[0][0]
    assert db_rows(tmp_path / "s.db", "SELECT value FROM sensor_state") == [(repr(first_ts),)]
    s.source.close()
    s.flush(final=True)
    # a restart continues the same period (capture time), not a new one
    again = make_sensor(tmp_path, log, learn_seconds=3600.0)
    assert again.learning and again.learn_deadline == first_ts + 3600.0


def test_unsaved_stats_rows_are_capped_while_the_database_refuses(tmp_path, log, monkeypatch):
    s = make_sensor(tmp_path, log)
    monkeypatch.setattr(runner, "MAX_UNSAVED_STATS", 5)

    def refuse(*_a, **_k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(s.store, "write", refuse)
    for _ in range(12):
        s._db_retry_at = 0.0
        s.flush(stats=True)
    assert len(s._unsaved_stats) == 5 and s.stats_dropped == 7
    assert json.loads(s.snapshot()["detail"])["stats_rows_dropped"] == 7


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MiB tmpfs that the test can fill to the last byte."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_costs_nothing_that_cannot_be_written_later(tiny_fs, tmp_path, log):
    db, out, ev = tiny_fs / "s.db", tiny_fs / "s.jsonl", tiny_fs / "evidence"
    s = make_sensor(tmp_path, log, db=db, json_path=out, evidence_dir=ev)
    s.flush()
    out_before = out.read_bytes()
    filler = fill(tiny_fs)
    (tmp_path / "spool" / "a.pcap").write_bytes(INCIDENT.read_bytes())
    drain(s)                                      # evidence and JSON fail, the capture goes on
    s.flush(stats=True)
    assert s.engine.packets == 328
    assert s._db_failing and s._unsaved_findings
    assert s.outputs[0].dropped > 0 and s.evidence.files_failed > 0
    assert log[1].count("keeping findings and stats in memory") == 1
    filler.unlink()
    s._db_retry_at = 0.0
    s.source.close()
    s.engine.finish()
    s.flush(final=True, stats=True)
    got = set(db_rows(db, "SELECT rule, src_ip, dst_ip, protocol, port, count FROM findings"))
    assert got == expected_findings(INCIDENT)
    assert db_rows(db, "SELECT packets, status FROM sensor_files") == [(328, "done")]
    lines = out.read_bytes()[len(out_before):].decode().splitlines()
    assert json.loads(lines[-1])["type"] == "stats"   # not glued to a line cut by the full disk


# --- pcap directory ----------------------------------------------------------------------

def test_damaged_and_unreadable_files_are_reported_once_and_skipped(tmp_path, log):
    s = make_sensor(tmp_path, log)
    spool = tmp_path / "spool"
    data = INCIDENT.read_bytes()
    (spool / "a_truncated.pcap").write_bytes(data[:5000])
    os.utime(spool / "a_truncated.pcap", ns=(1, 1_000_000_000))
    (spool / "b_garbage.pcap").write_bytes(b"this is not a capture at all" * 10)
    os.utime(spool / "b_garbage.pcap", ns=(1, 2_000_000_000))
    for _ in range(4):
        drain(s)
        s.flush()
    truncated = [line for line in log[1].lines if "a_truncated.pcap" in line and "at byte" in line]
    assert len(truncated) == 1 and "(packet " in truncated[0]
    assert log[1].count("b_garbage.pcap: not a pcap or pcapng file") == 1
    read_before_damage = s.engine.packets
    assert 0 < read_before_damage < 328
    drain(s)
    assert s.engine.packets == read_before_damage
    rows = dict(db_rows(tmp_path / "s.db", "SELECT name, status FROM sensor_files"))
    assert rows == {"a_truncated.pcap": "done", "b_garbage.pcap": "error"}


def test_a_file_replaced_by_a_smaller_one_is_read_as_new(tmp_path, log):
    s = make_sensor(tmp_path, log)
    path = tmp_path / "spool" / "ring0.pcap"
    path.write_bytes(INCIDENT.read_bytes())
    drain(s)
    assert s.engine.packets == 328
    smaller = split_pcap(NORMAL, 4)[0]
    assert len(smaller) < INCIDENT.stat().st_size
    path.write_bytes(INCIDENT.read_bytes()[:24] + smaller[24:])   # same file header, other packets
    drain(s)
    assert log[1].count("shrank") == 1
    with_packets = sum(1 for _ in _records(smaller))
    assert s.engine.packets == 328 + with_packets   # all of it, not only beyond packet 328


def _records(pcap: bytes):
    pos = 24
    while pos < len(pcap):
        yield pos
        pos += 16 + int.from_bytes(pcap[pos + 8:pos + 12], "little")


def test_a_file_from_the_past_does_not_continue_the_open_connections(tmp_path, log):
    s = make_sensor(tmp_path, log)
    spool = tmp_path / "spool"
    (spool / "a.pcap").write_bytes(INCIDENT.read_bytes())
    os.utime(spool / "a.pcap", ns=(1, 1_000_000_000))
    drain(s)
    flows_once = s.engine.stats()["flows"]
    (spool / "b.pcap").write_bytes(INCIDENT.read_bytes())       # the same traffic again
    drain(s)
    assert s.engine.stats()["sources_restarted"] == 1
    assert s.engine.stats()["flows"] == 2 * flows_once


def test_idle_directory_retires_flows_by_the_capture_clock(tmp_path, log):
    s = make_sensor(tmp_path, log, engine=EngineConfig(tcp_idle_timeout=30.0, udp_idle_timeout=30.0))
    spool = tmp_path / "spool"
    (spool / "a.pcap").write_bytes(INCIDENT.read_bytes())
    drain(s)
    assert s.engine.open_flows()
    t = time.monotonic()
    s._tick_clock(t)                               # the last packet is seen now
    s.source.settle = 3600.0                       # a file being written: its packets are still to come
    (spool / "b.pcap").write_bytes(split_pcap(NORMAL, 1)[0][:24])
    s.source.next_scan = 0.0
    s.source.poll(s, runner.BATCH, 0.0)
    assert not s.source.idle()
    s._tick_clock(t + 120.0)
    assert s.engine.open_flows(), "flows retired while their next packets may be in the file being written"
    (spool / "b.pcap").unlink()
    s.source.next_scan = 0.0
    s.source.poll(s, runner.BATCH, 0.0)
    assert s.source.idle()
    s._tick_clock(t + 120.0)                       # 120 s after the last packet, capture time
    assert s.engine.open_flows() == []
    assert s.snapshot()["flows_active"] == 0


def test_engine_keeps_one_source_entry_however_many_files(tmp_path, log):
    s = make_sensor(tmp_path, log)
    for i in range(50):
        s.set_source(f"cap{i}")
    assert len(s.engine.sources) == 1 and s.engine.sources[0]["name"] == "cap49"


# --- JSON lines --------------------------------------------------------------------------

def test_json_lines_follow_logrotate_moves_deletes_and_sighup(tmp_path, log):
    path = tmp_path / "f.jsonl"
    out = JsonLinesOutput(path, log[0])
    out.write({"n": 1})
    path.rename(tmp_path / "f.jsonl.1")            # logrotate without copytruncate
    out.write({"n": 2})
    path.unlink()                                  # deleted outright
    out.write({"n": 3})
    assert (tmp_path / "f.jsonl.1").read_text() == '{"n":1}\n'
    assert path.read_text() == '{"n":3}\n'
    os.truncate(path, 0)                           # copytruncate: appending goes on at the end
    out.write({"n": 4})
    assert path.read_text() == '{"n":4}\n'
    path.rename(tmp_path / "f.jsonl.2")
    out.reopen()                                   # SIGHUP
    out.write({"n": 5})
    assert path.read_text() == '{"n":5}\n'
    out.close()


def test_sighup_reopens_the_json_file(tmp_path, log):
    out = tmp_path / "s.jsonl"
    s = make_sensor(tmp_path, log, json_path=out)
    out.rename(tmp_path / "s.jsonl.1")
    s.reload_policy()
    assert [json.loads(line)["event"] for line in out.read_text().splitlines()] == ["policy_reloaded"]


# --- syslog ------------------------------------------------------------------------------

def _frames(data: bytes) -> list[str]:
    frames, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        n = int(data[pos:space])
        assert space + 1 + n <= len(data), "a frame cut short"
        frames.append(data[space + 1:space + 1 + n].decode())
        pos = space + 1 + n
    return frames


def test_syslog_tcp_black_hole_never_blocks_the_caller():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    first = socket.create_connection(srv.getsockname(), timeout=1)   # fills the accept queue
    out = SyslogOutput(f"tcp://127.0.0.1:{srv.getsockname()[1]}")
    t0 = time.monotonic()
    for _ in range(5):
        out.write(RECORD)
        out.flush()
    assert time.monotonic() - t0 < 0.5            # SYNs go unanswered: no blocking connect
    assert out.sent == 0 and len(out.pending) == 5
    first.close()
    srv.close()
    out.close()


def test_syslog_tcp_backlog_keeps_frames_whole_and_survives_a_collector_restart(monkeypatch):
    monkeypatch.setattr(outputs, "RECONNECT_SECONDS", 0.05)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a slow collector: small window
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    big = {**RECORD, "explanation": "x" * 8000}
    out = SyslogOutput(f"tcp://127.0.0.1:{port}")
    out.write(big)
    conn, _ = srv.accept()
    for _ in range(900):                           # the collector does not read: buffers fill
        out.write(big)
    assert out.pending and out.sent < 901
    got = bytearray()
    conn.settimeout(0.5)
    deadline = time.monotonic() + 10
    while (out.pending or out._offset) and time.monotonic() < deadline:
        out.flush()
        try:
            got += conn.recv(1 << 20)
        except socket.timeout:
            pass
    while True:
        try:
            chunk = conn.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    frames = _frames(bytes(got))
    assert len(frames) == out.sent == 901 and all(f.endswith("x" * 8000) for f in frames)
    # the collector restarts while the sensor is quiet: the next finding is not lost
    conn.close()
    time.sleep(0.1)
    out.write({**RECORD, "state": "update"})
    srv.settimeout(5)
    conn2 = None
    deadline = time.monotonic() + 5
    while out.pending and time.monotonic() < deadline:
        time.sleep(0.06)
        out.flush()
        if conn2 is None:
            try:
                srv.settimeout(0.05)
                conn2, _ = srv.accept()
            except socket.timeout:
                pass
    assert conn2 is not None and not out.pending
    conn2.settimeout(2)
    assert 'state="update"' in _frames(conn2.recv(65536))[0]
    conn2.close()
    srv.close()
    out.close()


def test_syslog_udp_cuts_long_messages_at_a_character_boundary():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    out = SyslogOutput(f"udp://localhost:{rx.getsockname()[1]}")
    for pad in ("", "a"):       # one of the two puts byte 2048 inside a 2-byte 'Ü'
        out.write({**RECORD, "explanation": pad + "Ü" * 2000})
        data = rx.recv(65536)
        assert outputs.MAX_UDP_MESSAGE - 1 <= len(data) <= outputs.MAX_UDP_MESSAGE
        assert data.decode("utf-8").endswith("Ü")   # strict decode: no split character
    assert out.sent == 2
    out.close()
    rx.close()


def test_wire_text_cannot_break_lines_in_syslog_cef_or_the_log(tmp_path, log):
    evil = "PLC Stop\nJan 1 00:00:00 host sshd: Accepted\r\x1b[2J|a=b"
    rec = {**RECORD, "explanation": evil, "title": "t\nx|y"}
    msg = format_rfc5424(rec, 20, "sensör\nhost", "rfc5424")
    assert "\n" not in msg and "\r" not in msg and "\x1b" not in msg
    assert " sens_r_host otsec " in msg and msg.endswith(one_line(evil))
    cef = format_cef(rec)
    assert "\n" not in cef and "\r" not in cef and "\x1b" not in cef
    assert "|t x\\|y|" in cef
    assert "msg=PLC Stop\\nJan 1 00:00:00 host sshd: Accepted\\r [2J|a\\=b" in cef
    s = make_sensor(tmp_path, log)
    s.agg.add("OTSEC-UNSAFE-003", Endpoint("10.0.0.1"), Endpoint("10.0.0.2"), "s7comm", 102, evil,
              1.0, 1, "x")
    s.flush()
    finding_lines = [line for line in log[1].lines if line.startswith("finding ")]
    assert len(finding_lines) == 1 and "\n" not in finding_lines[0] and "\\nJan 1" in finding_lines[0]


# --- evidence ----------------------------------------------------------------------------

def test_evidence_directory_removed_while_running_is_made_again(tmp_path, log):
    ev = tmp_path / "evidence"
    rec = EvidenceRecorder(ev, 1 << 20, 1 << 20, log[0])
    packets = _packets()
    for ts, lt, frame in packets[:110]:
        rec.packet(ts, lt, frame)
    first = rec.start("1-1", "OTSEC-UNSAFE-003", "10.40.0.10", "10.50.0.30", 102, packets[109][0])
    rec.close()
    for p in ev.iterdir():
        p.unlink()
    ev.rmdir()                                     # an operator cleaned up
    for ts, lt, frame in packets[110:200]:
        rec.packet(ts, lt, frame)
    second = rec.start("1-2", "OTSEC-UNSAFE-003", "10.40.0.10", "10.50.0.30", 102, packets[199][0])
    assert first and second and Path(second).exists() and rec.files_failed == 0
    rec.close()
    assert rec.files_deleted == 0                  # the file removed by hand is not counted


def test_evidence_index_is_read_once_and_rotation_does_not_list_the_directory(tmp_path, monkeypatch):
    cap = 20_000
    rec = EvidenceRecorder(tmp_path, max_bytes=cap, per_finding_bytes=8_000)
    calls = []
    monkeypatch.setattr(Path, "glob", lambda *a, **k: calls.append(a) or iter(()))
    packets = _packets()
    for i, (ts, lt, frame) in enumerate(packets):
        rec.packet(ts, lt, frame)
        if i % 20 == 19:
            rec.start(f"1-{i}", "OTSEC-DEVICE-001", ".".join(str(b) for b in frame[26:30]), None, None, ts)
    rec.close()
    monkeypatch.undo()
    assert calls == []
    assert sum(p.stat().st_size for p in tmp_path.glob("otsec-evidence-*.pcap")) <= cap
    # a restart finds the files already there and keeps counting them against the cap
    again = EvidenceRecorder(tmp_path, max_bytes=cap, per_finding_bytes=8_000)
    assert again.closed_bytes == sum(p.stat().st_size for p in tmp_path.glob("otsec-evidence-*.pcap"))
