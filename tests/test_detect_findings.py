"""Aggregation (one finding per key, counts, first/last, bounded samples and findings)
and suppressions (matching by rule/prefix, source, destination, protocol; expiry)."""

from __future__ import annotations

import datetime as dt
import json

from otsec.detect.checker import Checker
from otsec.detect.findings import MAX_SAMPLES, Aggregator, Endpoint
from otsec.policy.loader import parse_policy
from tests.detect_helpers import EXAMPLE_POLICY, IP, ev, example_policy, found, hr

POLICY = example_policy()


def test_identical_occurrences_fold_into_one_finding():
    c = Checker(POLICY)
    for i in range(1, 1001):
        c.on_event(ev("corp-pc", "plc-modbus", "modbus", "Read Holding Registers", "read",
                      fc=3, targets=[hr(i, 1)], ts=100.0 + i, packet=2 * i))
    (f,) = c.finish()
    assert (f.rule_id, f.count, f.first_packet, f.last_packet) == ("OTSEC-CONDUIT-001", 1000, 2, 2000)
    assert (f.first_ts, f.last_ts) == (101.0, 1100.0)
    assert f.samples["function"] == {"Read Holding Registers (read)": 1000}
    d = f.to_dict()
    assert d["zones"] == ["enterprise", "field"] and d["src"]["name"] == "corp-pc"
    assert d["evidence"]["count"] == 1000 and d["severity"] == "high"
    json.dumps(d)   # JSON-safe


def test_samples_are_bounded_and_overflow_counted():
    agg = Aggregator()
    src, dst = Endpoint("10.0.0.1"), Endpoint("10.0.0.2")
    for i in range(MAX_SAMPLES + 5):
        agg.add("OTSEC-ANOMALY-001", src, dst, "modbus", 502, "x", float(i), i, "c.pcap", {"flag": f"f{i}"})
    (f,) = agg.findings.values()
    assert len(f.samples["flag"]) == MAX_SAMPLES and f.samples_dropped == 5 and f.count == MAX_SAMPLES + 5


def test_out_of_order_timestamps_keep_first_and_last():
    agg = Aggregator()
    src = Endpoint("10.0.0.1")
    for ts, pkt in ((5.0, 50), (1.0, 10), (9.0, 90), (3.0, 30)):
        agg.add("OTSEC-DEVICE-001", src, None, None, None, "x", ts, pkt, "c.pcap")
    (f,) = agg.findings.values()
    assert (f.first_ts, f.first_packet, f.last_ts, f.last_packet) == (1.0, 10, 9.0, 90)


def test_finding_cap_counts_what_it_drops():
    agg = Aggregator(max_findings=3)
    for i in range(5):
        agg.add("OTSEC-DEVICE-001", Endpoint(f"10.0.0.{i}"), None, None, None, "x", 0.0, 1, None)
    assert len(agg.findings) == 3 and agg.dropped == 2


def test_sorted_most_severe_first():
    c = Checker(POLICY)
    c.on_event(ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", ts=1.0))               # high
    c.on_event(ev("hmi-1", "plc-s7", "s7comm", "PLC Stop", "control", ts=2.0))                   # critical + high
    assert [f.severity for f in c.finish()] == ["critical", "high", "high"]


def suppressing(entries: str):
    text = EXAMPLE_POLICY.read_text().replace("  suppressions: []\n", "  suppressions:\n" + entries)
    return parse_policy(text, "s.yaml")


EVENTS = [ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read"),
          ev("hmi-1", "plc-s7", "s7comm", "PLC Stop", "control")]


def check(policy, today):
    c = Checker(policy)
    for e in EVENTS:
        c.on_event(e)
    return c.finish(today=today)


def test_suppression_by_rule_and_source_with_reason():
    p = suppressing("    - {rule: OTSEC-CONDUIT-001, src: corp-pc, reason: vendor audit VA-12}\n")
    out = check(p, dt.date(2026, 1, 1))
    sup = [f for f in out if f.suppressed]
    assert [(f.rule_id, f.suppressed.reason) for f in sup] == [("OTSEC-CONDUIT-001", "vendor audit VA-12")]
    assert sup[0].to_dict()["suppressed"] == {"reason": "vendor audit VA-12", "rule": "OTSEC-CONDUIT-001",
                                              "expires": None}
    assert found(out) == {("OTSEC-UNSAFE-003", "hmi-1", "plc-s7"), ("OTSEC-CONDUIT-005", "hmi-1", "plc-s7")}


def test_suppression_expiry():
    p = suppressing("    - {rule: OTSEC-UNSAFE-003, src: hmi, dst: plc, reason: commissioning, expires: 2026-02-01}\n")
    assert any(f.suppressed for f in check(p, dt.date(2026, 2, 1)))        # last day still applies
    assert not any(f.suppressed for f in check(p, dt.date(2026, 2, 2)))    # expired: the finding is back


def test_suppression_prefix_cidr_and_protocol():
    p = suppressing("    - {rule: OTSEC-CONDUIT-*, dst: 10.50.0.0/24, protocol: s7comm, reason: lab}\n")
    out = check(p, dt.date(2026, 1, 1))
    assert {f.rule_id for f in out if f.suppressed} == {"OTSEC-CONDUIT-005"}
    p = suppressing("    - {rule: OTSEC-CONDUIT-*, dst: 10.60.0.0/24, reason: lab}\n")
    assert not any(f.suppressed for f in check(p, dt.date(2026, 1, 1)))
    p = suppressing(f"    - {{rule: OTSEC-CONDUIT-001, src: {IP['corp-pc']}, dst: plc-s7, reason: wrong dst}}\n")
    assert not any(f.suppressed for f in check(p, dt.date(2026, 1, 1)))
