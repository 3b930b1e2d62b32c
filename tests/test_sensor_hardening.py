"""What a plant operator hits first: a typo in an option (one line, exit 2, nothing created),
an interface deleted and re-created under the sensor, a learning period that ends on a
silent link, and the --tui live view.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otsec.sensor import runner
from otsec.sensor.runner import STATE_LEARN_FINISHED, STATE_LEARN_STARTED, Sensor, SensorConfig, _utc
from otsec.sensor.sources import SYS_CLASS_NET
from otsec.store import detect_store
from otsec.store.db import StoreError, open_db

from tests.test_sensor_resilience import db_rows, drain, log, make_sensor  # noqa: F401 (fixture)
from tests.test_sensor_run import (  # noqa: F401 (fixtures)
    INCIDENT, LIVE_MARKER, POLICY, ROOT, _files_done, _root_netns_ok, _started, db_findings,
    expected_findings, netns, replay, run_sensor, wait_for,
)
from tests.test_sensor_units import _packets

#: Escape sequences rich writes to a terminal (colours, cursor moves, line erases).
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def otsec_sensor(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otsec.cli.main", "sensor", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=20, **kwargs)


# --- every input is checked before anything is created -------------------------------------

@pytest.mark.parametrize("args,message", [
    # a typo in the interface name: before, the sensor retried it for ever
    pytest.param(["--interface", "nosuch0"],
                 "--interface nosuch0: no such network interface (available: {interfaces})", id="interface"),
    pytest.param(["--interface", "../.."],
                 "--interface ../..: no such network interface (available: {interfaces})", id="interface-path"),
    # syslog options without --syslog: before, accepted silently
    pytest.param(["--pcap-dir", "{t}/spool", "--syslog-format", "leef"],
                 "--syslog-format 'leef': expected rfc5424 or cef", id="syslog-format"),
    pytest.param(["--pcap-dir", "{t}/spool", "--syslog-facility", "local9"],
                 "--syslog-facility 'local9': expected one of user, daemon, auth, local0, local1, "
                 "local2, local3, local4, local5, local6, local7", id="syslog-facility"),
    # before, each of these left a database with a started run behind
    pytest.param(["--pcap-dir", "{t}/nodir"], "--pcap-dir {t}/nodir: no such directory", id="pcap-dir"),
    pytest.param(["--pcap-dir", "{t}/spool", "--json", "{t}/nodir/f.jsonl"],
                 "--json {t}/nodir/f.jsonl: cannot write: no such directory {t}/nodir", id="json-dir"),
    pytest.param(["--pcap-dir", "{t}/spool", "--json", "{t}/spool"],
                 "--json {t}/spool: cannot write: is a directory", id="json-is-dir"),
    pytest.param(["--pcap-dir", "{t}/spool", "--evidence-dir", "{t}/spool/a.pcap/evidence"],
                 "--evidence-dir {t}/spool/a.pcap/evidence: not a directory ({t}/spool/a.pcap is a file)",
                 id="evidence-dir"),
    pytest.param(["--pcap-dir", "{t}/spool", "--db", "{t}/spool"],
                 "{t}/spool: is a directory, not a database", id="db-is-dir"),
    # the syslog output exists by then: it is closed on the way out (see the unit test below)
    pytest.param(["--pcap-dir", "{t}/spool", "--db", "{t}/spool/a.pcap", "--syslog", "udp://127.0.0.1:5514"],
                 "{t}/spool/a.pcap: cannot use as an otsec database: file is not a database",
                 id="db-not-sqlite"),
])
def test_a_bad_option_is_one_line_and_creates_nothing(tmp_path, args, message):
    if args[0] == "--interface":
        pytest.importorskip("pcapy", reason="needs pcapy-ng for --interface")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "a.pcap").write_bytes(INCIDENT.read_bytes())
    before = sorted(tmp_path.rglob("*"))
    fill = {"t": tmp_path, "interfaces": ", ".join(sorted(os.listdir(SYS_CLASS_NET)))}
    r = otsec_sensor("-p", POLICY, "--db", tmp_path / "s.db", *(a.format(**fill) for a in args))
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {message.format(**fill)}\n"
    assert sorted(tmp_path.rglob("*")) == before          # no database, JSON file or directory


def test_a_bad_bpf_filter_is_refused_before_the_database_is_created(tmp_path):
    reason = _root_netns_ok()
    if reason:
        pytest.skip(reason)
    r = otsec_sensor("--interface", "lo", "--bpf", "tcp port", "-p", POLICY, "--db", tmp_path / "s.db")
    assert r.returncode == 2
    assert r.stderr == "otsec: error: --bpf 'tcp port': can't parse filter expression: syntax error\n"
    assert not (tmp_path / "s.db").exists()


def _recording(cls, opened: list):
    """``cls`` noting each instance in ``opened`` and whether close() was called on it."""
    class Recorded(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed = False
            opened.append(self)

        def close(self):
            super().close()
            self.closed = True
    return Recorded


@pytest.mark.parametrize("source", ["pcap-dir", "interface"])
@pytest.mark.parametrize("failure", ["db-not-sqlite", "stored-state"])
def test_a_constructor_failing_late_closes_what_it_opened(tmp_path, log, monkeypatch, source, failure):
    """The capture handle, syslog and JSON outputs and the database are opened before the
    stored mode is read: a failure there (or in open_db) must not leak them."""
    if source == "interface" and (reason := _root_netns_ok()):
        pytest.skip(reason)
    opened: list = []
    for name in ("LiveSource", "PcapDirSource", "SyslogOutput", "JsonLinesOutput"):
        monkeypatch.setattr(runner, name, _recording(getattr(runner, name), opened))
    dbs = []
    monkeypatch.setattr(runner, "open_db", lambda path: dbs.append(open_db(path)) or dbs[-1])
    db = tmp_path / "s.db"
    if failure == "db-not-sqlite":
        db.write_text("not a database\n")
        error = pytest.raises(StoreError, match="cannot use as an otsec database")
    else:      # a learning end time no one can read: _initial_mode fails after open_db
        store = open_db(db)
        store["sensor_state"].insert({"key": STATE_LEARN_FINISHED, "value": "garbage"})
        store.conn.close()
        error = pytest.raises(StoreError, match="sensor state 'learn_finished_ts' in the database is not a "
                                                 "time: 'garbage'")
    (tmp_path / "spool").mkdir()
    where = {"interface": "lo", "bpf": "tcp port 9"} if source == "interface" \
        else {"pcap_dir": tmp_path / "spool"}
    cfg = SensorConfig(policy=POLICY, db=db, syslog="udp://127.0.0.1:5514", json_path=tmp_path / "s.jsonl",
                       learn_seconds=60.0, **where)
    with error:
        Sensor(cfg, log[0])
    kinds = {type(o).__mro__[1].__name__: o for o in opened}
    expected = {"LiveSource" if source == "interface" else "PcapDirSource", "SyslogOutput"}
    if failure == "stored-state":
        expected.add("JsonLinesOutput")     # opened after the database
    assert set(kinds) == expected
    assert all(o.closed for o in opened)
    if source == "interface":
        assert kinds["LiveSource"].handle is None
    if failure == "stored-state":
        assert kinds["JsonLinesOutput"].fd == -1
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            dbs[0].execute("SELECT 1")
    assert len(dbs) == (failure == "stored-state")


def test_a_learning_start_no_one_can_read_starts_no_run_record(tmp_path, log):
    """The stored learning start is read before the run record is written: a sensor that
    cannot start leaves no sensor_runs row without a stop time."""
    db = tmp_path / "s.db"
    store = open_db(db)
    store["sensor_state"].insert({"key": STATE_LEARN_STARTED, "value": "garbage"})
    store.conn.close()
    (tmp_path / "spool").mkdir()
    cfg = SensorConfig(policy=POLICY, db=db, pcap_dir=tmp_path / "spool", learn_seconds=60.0)
    with pytest.raises(StoreError, match="sensor state 'learn_started_ts' in the database is not a time"):
        Sensor(cfg, log[0])
    assert db_rows(db, "SELECT count(*) FROM sensor_runs") == [(0,)]


# --- an interface deleted and re-created while the sensor runs ----------------------------

def _finding_count(db: Path, rule: str) -> int:
    try:
        rows = db_rows(db, f"SELECT count FROM findings WHERE rule = '{rule}'")
    except sqlite3.OperationalError:
        return 0
    return rows[0][0] if rows else 0


def test_live_interface_deleted_and_recreated_is_waited_for(netns, tmp_path, run_sensor):
    db, out = tmp_path / "s.db", tmp_path / "s.jsonl"
    s = run_sensor(["--interface", "sens0", "--policy", str(POLICY), "--db", str(db), "--json", str(out)],
                   prefix=["ip", "netns", "exec", netns])
    wait_for(lambda: _started(out), 20, "the sensor to start capturing")
    replay(netns, INCIDENT)
    wait_for(lambda: _finding_count(db, LIVE_MARKER) == 1, 10, "the incident decoded before the deletion")
    subprocess.run(["ip", "-n", netns, "link", "del", "sens0"], check=True)   # takes feed0 with it
    wait_for(lambda: "interface sens0: no such network interface; retrying" in s.log(), 10,
             "the deletion report")
    assert s.proc.poll() is None
    for cmd in (["link", "add", "sens0", "type", "veth", "peer", "name", "feed0"],
                ["link", "set", "sens0", "up"], ["link", "set", "feed0", "up"]):
        subprocess.run(["ip", "-n", netns, *cmd], check=True, capture_output=True)
    wait_for(lambda: "interface sens0: capturing again" in s.log(), 10, "the capture on the new interface")
    replay(netns, INCIDENT)
    wait_for(lambda: _finding_count(db, LIVE_MARKER) == 2, 10, "the incident decoded after re-creation")
    assert s.stop() == 0, s.log()
    con = sqlite3.connect(db)
    (packets,), = con.execute("SELECT packets FROM sensor_stats ORDER BY ts DESC LIMIT 1").fetchall()
    con.close()
    assert packets == 2 * 328


def test_live_interface_down_at_start_is_retried_and_captured_once_up(netns, tmp_path, run_sensor):
    """An interface that exists but is administratively down when the sensor starts is no
    typo: reported, retried, and captured from once someone brings it up."""
    subprocess.run(["ip", "-n", netns, "link", "set", "sens0", "down"], check=True)
    db, out = tmp_path / "s.db", tmp_path / "s.jsonl"
    s = run_sensor(["--interface", "sens0", "--policy", str(POLICY), "--db", str(db), "--json", str(out)],
                   prefix=["ip", "netns", "exec", netns])
    wait_for(lambda: "ERROR: interface sens0: interface is down; retrying in 1 s" in s.log(), 10,
             "the report of the down interface")
    wait_for(lambda: _started(out), 5, "the run to go on (the 'started' record)")
    assert s.proc.poll() is None and "capturing on sens0" not in s.log()
    subprocess.run(["ip", "-n", netns, "link", "set", "sens0", "up"], check=True)
    wait_for(lambda: "interface sens0: capturing again after" in s.log(), 10, "the capture to begin")
    replay(netns, INCIDENT)
    wait_for(lambda: _finding_count(db, LIVE_MARKER) == 1, 10, "the incident decoded")
    assert s.stop() == 0, s.log()
    assert "Traceback" not in s.log()
    assert db_findings(db) == expected_findings(INCIDENT)
    con = sqlite3.connect(db)
    (packets,), = con.execute("SELECT packets FROM sensor_stats ORDER BY ts DESC LIMIT 1").fetchall()
    assert con.execute("SELECT exit_reason FROM sensor_runs").fetchall() == [("SIGTERM",)]
    con.close()
    assert packets == 328


# --- a learning period that ends while the link is silent ----------------------------------

def test_learning_ends_at_its_deadline_when_no_packet_follows(tmp_path, log):
    first, last = _packets()[0][0], _packets()[-1][0]
    s = make_sensor(tmp_path, log, learn_seconds=(last - first) + 60.0)
    deadline = first + (last - first) + 60.0
    (tmp_path / "spool" / "a.pcap").write_bytes(INCIDENT.read_bytes())
    drain(s)
    t = time.monotonic()
    s._tick_clock(t)                              # the last packet is seen now
    s._tick_clock(t + 59.0)                       # capture clock: 1 s before the deadline
    assert s.learning
    s._tick_clock(t + 61.0)                       # past it, and still no packet
    assert not s.learning and s.feed == s._feed_packet
    assert s.checker.baseline.entries
    assert log[1].count(f"learning period over at {_utc(deadline)}") == 1
    s.flush()
    state = dict(db_rows(tmp_path / "s.db", "SELECT key, value FROM sensor_state"))
    assert state == {STATE_LEARN_STARTED: repr(first), STATE_LEARN_FINISHED: repr(deadline)}
    assert detect_store.load_baseline(open_db(tmp_path / "s.db")).entries


def test_learning_ends_on_a_live_link_silent_since_a_restart(tmp_path, log):
    """No packet at all since the restart: a live source's capture time is the wall clock."""
    reason = _root_netns_ok()
    if reason:
        pytest.skip(reason)
    db = open_db(tmp_path / "s.db")
    started = time.time() - 120.0
    db["sensor_state"].insert({"key": STATE_LEARN_STARTED, "value": repr(started)})
    db.conn.close()
    cfg = SensorConfig(policy=POLICY, db=tmp_path / "s.db", interface="lo", bpf="tcp port 9",
                       learn_seconds=100.0)
    s = Sensor(cfg, log[0])
    assert s.learning and s.learn_deadline == started + 100.0
    s._tick_clock(time.monotonic())
    assert not s.learning
    assert log[1].count(f"learning period over at {_utc(started + 100.0)}") == 1
    s.source.close()


# --- the live view ------------------------------------------------------------------------

@pytest.mark.parametrize("sig,mode,shown", [(signal.SIGINT, "detect", "detecting"),
                                            (signal.SIGTERM, "learn", "learning")],
                         ids=["SIGINT-detect", "SIGTERM-learn"])
def test_tui_shows_packets_findings_and_mode_and_stops_cleanly(tmp_path, run_sensor, sig, mode, shown):
    spool, db = tmp_path / "spool", tmp_path / "s.db"
    spool.mkdir()
    (spool / "a.pcap").write_bytes(INCIDENT.read_bytes())
    # rich draws the live view into a file when TTY_COMPATIBLE says its reader is a terminal
    s = run_sensor(["--pcap-dir", str(spool), "--policy", str(POLICY), "--db", str(db),
                    "--settle", "0", "--mode", mode, "--tui"],
                   prefix=["env", "TERM=xterm-256color", "TTY_COMPATIBLE=1", "COLUMNS=160"])
    wait_for(lambda: "a.pcap" in _files_done(db), 10, "the capture to be read")
    wait_for(lambda: "findings (" in ANSI.sub("", s.log()), 5, "a frame with the findings")
    s.signal(sig)
    assert s.proc.wait(15) == 0, s.log()
    text = ANSI.sub("", s.log())
    assert "Traceback" not in text
    assert f"stopped ({sig.name}): 328 packets" in text
    last = text[text.rindex("otsec sensor on "):]          # the final frame
    title, _ = last.split("\n", 1)
    assert f" - {shown} - up " in title
    counters = re.search(r"^│ +(\d+) │", last, re.M)            # the first row: the counters
    assert counters and counters.group(1) == "328"
    expected = expected_findings(INCIDENT)
    assert f"findings ({len(expected)} active, 0 suppressed" in last
    rows = re.findall(r"^│ (critical|high|medium|low|info) +│ (OTSEC-[A-Z]+-\d+) ", last, re.M)
    assert ("critical", LIVE_MARKER) in rows and ("critical", "OTSEC-UNSAFE-002") in rows
    assert {rule for _, rule in rows} <= {k[0] for k in expected}
