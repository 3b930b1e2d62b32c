"""Baseline learning, target-range merging, persistence (migrations 0002/0003) and diff."""

from __future__ import annotations

import json

from otsec.detect.baseline import MAX_RANGES_PER_SPACE, Baseline, Entry, Key, Learner, diff
from otsec.detect.checker import Checker
from otsec.model import Target
from otsec.store import detect_store
from otsec.store.db import open_db
from tests.detect_helpers import IP, ev, example_policy, fl, hr

POLICY = example_policy()


def learn(events=(), flows=()):
    learner = Learner(POLICY)
    for e in events:
        learner.on_event(e)
    for f in flows:
        learner.on_flow(f)
    return learner.baseline


def test_learns_requests_per_zone_pair_with_merged_ranges():
    b = learn([ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(0, 10)], ts=5.0),
               ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(10, 10)], ts=9.0),
               ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(40, 2)], ts=7.0),
               ev("plc-modbus", "hmi-1", "modbus", "Read Holding Registers", "read", kind="response", result="ok")],
              [fl("jump-host", "eng-ws", 3389, "rdp"), fl("hmi-1", "plc-modbus", 502, "modbus", events=3)])
    key = Key("control", "field", IP["hmi-1"], IP["plc-modbus"], "modbus", 502, "read", "Read Holding Registers")
    e = b.entries[key]
    assert (e.count, e.first_seen, e.last_seen, e.src_name, e.dst_name) == (3, 5.0, 9.0, "hmi-1", "plc-modbus")
    assert e.targets_list() == [{"kind": "holding_register", "ranges": [[0, 19], [40, 41]]}]
    assert e.targets_text() == "holding_register 0-19,40-41"
    assert e.covers(hr(5, 15)) and not e.covers(hr(15, 10))
    rdp = Key("dmz", "operations", IP["jump-host"], IP["eng-ws"], "rdp", 3389, "", "")
    assert set(b.entries) == {key, rdp}      # responses and decoded flows add no entries
    assert set(b.devices) == {IP["hmi-1"], IP["plc-modbus"], IP["jump-host"], IP["eng-ws"]}


def test_named_targets_and_range_cap():
    e = Entry(Key("a", "b", "1", "2", "opcua", 4840, "write", "Write"))
    e.add(1.0, [Target("node", name="ns=2;s=A"), Target("szl", start=0, name="0x0011")])
    assert e.covers(Target("node", name="ns=2;s=A")) and not e.covers(Target("node", name="ns=2;s=B"))
    assert not e.covers(Target("szl", start=0, name="0x001c"))
    for i in range(MAX_RANGES_PER_SPACE + 10):
        e.add(2.0, [hr(i * 10, 1)])
    ranges = e.targets[("holding_register", None, None, None)]
    assert len(ranges) == MAX_RANGES_PER_SPACE and ranges[0][0] == 0 and ranges[-1][1] == (MAX_RANGES_PER_SPACE + 9) * 10


def test_store_roundtrip_and_merge(tmp_path):
    db = open_db(tmp_path / "b.db")
    b1 = learn([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1,
                   targets=[Target("coil", start=0, count=16)], ts=1.0, src_mac="00:0e:8c:28:00:0a")])
    detect_store.save_baseline(db, b1, {"aa": "one.pcap"})
    b2 = learn([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1,
                   targets=[Target("coil", start=100, count=1)], ts=0.5)])
    detect_store.save_baseline(db, b2, {"bb": "two.pcap"})
    stored = detect_store.load_baseline(open_db(tmp_path / "b.db"))
    (e,) = stored.entries.values()
    assert (e.count, e.first_seen, e.last_seen) == (2, 0.5, 1.0)
    assert e.targets_list() == [{"kind": "coil", "ranges": [[0, 15], [100, 100]]}]
    assert stored.devices[IP["hmi-1"]].macs == {"00:0e:8c:28:00:0a"}
    assert detect_store.learned_captures(db) == {"aa", "bb"}
    names = {m["name"] for m in db.query("SELECT name FROM _sqlite_migrations")}
    assert {"0002_baseline", "0003_findings"} <= names


def test_findings_are_stored_per_run(tmp_path):
    db = open_db(tmp_path / "f.db")
    c = Checker(POLICY)
    c.on_event(ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", packet=7))
    run_id = detect_store.save_findings(db, c.finish(), "p.yaml", None, ["x.pcap"])
    (row,) = db.query("SELECT * FROM findings WHERE run_id = ?", [run_id])
    assert (row["rule"], row["src_name"], row["dst_name"], row["first_packet"]) == (
        "OTSEC-CONDUIT-001", "corp-pc", "plc-modbus", 7)
    assert json.loads(row["samples"]) == {"function": {"Read Coils (read)": 1}}
    (run,) = db.query("SELECT * FROM check_runs")
    assert (run["findings"], run["suppressed"], json.loads(run["captures"])) == (1, 0, ["x.pcap"])


def test_diff_added_removed_changed():
    old = learn([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", targets=[Target("coil", start=0, count=8)]),
                 ev("hmi-1", "plc-modbus", "modbus", "Write Single Register", "write", targets=[hr(150, 1)])])
    new = learn([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", targets=[Target("coil", start=0, count=9)]),
                 ev("rogue", "plc-s7", "s7comm", "PLC Stop", "control")])
    d = diff(old, new)
    assert [e.key.function for e in d.added] == ["PLC Stop"]
    assert [e.key.function for e in d.removed] == ["Write Single Register"]
    assert [(o.targets_text(), n.targets_text()) for o, n in d.changed] == [("coil 0-7", "coil 0-8")]
    assert [x.ip for x in d.devices_added] == [IP["rogue"]]
    empty = diff(new, new)
    assert (empty.added, empty.removed, empty.changed, empty.devices_added) == ([], [], [], [])


def test_baseline_merge_counts():
    a, b = Baseline(), learn([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", ts=3.0)])
    a.merge(b)
    a.merge(b)
    (e,) = a.entries.values()
    assert (e.count, e.first_seen) == (2, 3.0)
