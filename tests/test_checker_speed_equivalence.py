"""The memoised checker reports exactly what working every answer out afresh reports.

otsec.detect.checker keeps, per connection direction, per function and per kind of request,
what the policy says (endpoints, unknown devices, conduit verdicts, unsafe operations) and
the findings already reached, so that a repeat only counts an occurrence. The reference
here is the same checker with its memos off (``memo_entries=0``: every decision is made
again for every message) and an aggregator that overrides ``add`` (as the sensor's does),
so every occurrence goes through ``Aggregator.add`` with a fresh evidence dict. Both must
give the same findings, byte for byte once serialised: rule, endpoints, explanation,
count, first/last time, packet and capture, samples in their order, dropped counts.

Inputs: every corpus capture and the example captures, in the engine's streaming order
(events and connections interleaved), against policies that exercise each path: one zone
without assets (everyone unknown: new devices, sweeps, anomalies), two zones split by
address with a conduit bounding operations, write targets and the OPC UA security mode and
cleartext denied (conduit, unsafe, cleartext, insecure findings), a policy drafted from
the capture itself (declared assets and roles), the example plant's; each with and without
a baseline learnt from the first half of the stream (new communications).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.analysis.sides import sent_by_client, sides
from otsec.detect.baseline import Learner
from otsec.detect.checker import MAX_MEMO, Checker
from otsec.detect.findings import Aggregator, Finding, Endpoint, MAX_FINDINGS
from otsec.engine import analyze
from otsec.model import Event
from otsec.policy.draft import Drafter
from otsec.policy.loader import parse_policy
from otsec.policy.model import SERVICE_PORTS, protocol_name
from otsec.sensor.runner import TrackingAggregator
from tests.bench_capture import bench_policy
from tests.corpus import captures
from tests.detect_helpers import EXAMPLE_POLICY, ev, example_policy, hr
from tests.test_detect_rules import EVENTS, FLOWS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [pytest.param(p, id=p.name) for p in sorted((ROOT / "pcaps").glob("*.pcap"))]
TODAY = dt.date(2025, 1, 1)

ONE_ZONE = parse_policy("""
zones:
  - {name: plant, level: 1, cidrs: [0.0.0.0/0, "::/0"]}
rules:
  anomalies: {function_sweep_min: 3, unit_id_sweep_min: 3}
""", "one-zone.yaml")

SPLIT = parse_policy("""
zones:
  - {name: low, level: 1, cidrs: [0.0.0.0/1, "::/1"]}
  - {name: high, level: 3, cidrs: [128.0.0.0/1, "8000::/1"]}
conduits:
  - name: high-to-low
    zones: [high, low]
    initiator: high
    allow:
      - protocol: modbus
        ports: [502]
        operations: [read, write]
        write_targets:
          - holding_register: 0-99
      - protocol: opcua
        ports: [4840]
        require:
          opcua_security_mode: SignAndEncrypt
      - protocol: s7comm
        ports: [102]
        operations: [read, session, identify]
rules:
  cleartext_across_zones: {deny: true}
  anomalies: {function_sweep_min: 3, unit_id_sweep_min: 3}
""", "split.yaml")


class EveryOccurrence(Aggregator):
    """Overrides ``add``: the checker then hands it every occurrence, as to the sensor's."""

    def add(self, *args, **kwargs):
        return super().add(*args, **kwargs)


@lru_cache(maxsize=None)
def stream(path: Path) -> tuple:
    """Events and connection records of a capture in the order the engine hands them out."""
    items: list = []
    analyze([path], items.append, items.append)
    return tuple(items)


def feed(checker: Checker, items) -> None:
    for item in items:
        if isinstance(item, Event):
            checker.on_event(item)
        else:
            checker.on_flow(item)


def learnt(policy, items):
    learner = Learner(policy)
    feed(learner, items)
    return learner.baseline


def drafted(path: Path, items):
    drafter = Drafter()
    feed(drafter, items)
    return parse_policy(drafter.draft([str(path)]), "draft.yaml")


def result(checker: Checker) -> tuple:
    return [f.to_dict() for f in checker.finish(TODAY)], checker.agg.dropped, checker.sweep_pairs_dropped


def memoised(policy, items, baseline=None, aggregator=None, memo_entries=MAX_MEMO) -> tuple:
    checker = Checker(policy, baseline, aggregator or Aggregator(), memo_entries)
    feed(checker, items)
    return result(checker)


def reference(policy, items, baseline=None, max_findings=MAX_FINDINGS) -> tuple:
    checker = Checker(policy, baseline, EveryOccurrence(max_findings), memo_entries=0)
    feed(checker, items)
    return result(checker)


def assert_same(policy, items, baseline=None) -> None:
    got, want = memoised(policy, items, baseline), reference(policy, items, baseline)
    assert got == want
    assert repr(got) == repr(want)     # same order of keys and samples, not only equal


@pytest.mark.parametrize("path", captures() + EXAMPLES)
def test_every_capture_and_policy_gives_the_reference_findings(path):
    items = stream(path)
    policies = [ONE_ZONE, SPLIT, drafted(path, items), example_policy()]
    for policy in policies:
        assert_same(policy, items)
        assert_same(policy, items, learnt(policy, items[: len(items) // 2]))


def test_the_checks_find_something_to_compare():
    """The comparison is not vacuous: the inputs raise most rules, repeatedly."""
    rules: dict[str, int] = {}
    for path in [p.values[0] for p in captures() + EXAMPLES if p.values[0] is not None]:
        items = stream(path)
        for policy in (ONE_ZONE, SPLIT, example_policy()):
            for f in memoised(policy, items, learnt(policy, items[: len(items) // 2]))[0]:
                rules[f["rule"]] = rules.get(f["rule"], 0) + f["evidence"]["count"]
    expected = {"OTSEC-DEVICE-001", "OTSEC-CONDUIT-001", "OTSEC-UNSAFE-001", "OTSEC-UNSAFE-003",
                "OTSEC-INSECURE-001", "OTSEC-ANOMALY-001", "OTSEC-NEWCOMM-001"}
    assert expected <= set(rules), rules
    assert all(rules[r] > 1 for r in expected), rules


def test_benchmark_capture_with_its_policy(bench_200k):
    from otsec.policy.loader import load_policy

    items = stream(bench_200k)
    assert_same(load_policy(bench_policy(bench_200k)), items)


@pytest.mark.parametrize("path", EXAMPLES)
def test_full_aggregator_drops_the_same_occurrences(path):
    items = stream(path)
    for policy in (ONE_ZONE, SPLIT):
        got = memoised(policy, items, aggregator=Aggregator(3))
        assert got == reference(policy, items, max_findings=3)
        assert got[1] > 0      # occurrences were dropped: the cap was in play


@pytest.mark.parametrize("path", EXAMPLES)
def test_tiny_memos_that_keep_emptying_give_the_same_findings(path):
    items = stream(path)
    for policy in (ONE_ZONE, SPLIT, example_policy()):
        checker = Checker(policy, None, Aggregator(), memo_entries=2)
        feed(checker, items)
        memos = (checker._endpoints, checker._verdicts, checker._pairs, checker._functions, checker._flow_pairs)
        assert max(len(m) for m in memos) <= 2 and all(len(p.requests) <= 2 for p in checker._pairs.values())
        assert result(checker) == reference(policy, items)


def test_cotp_is_judged_as_the_protocols_it_carries():
    """COTP and S7comm messages of one connection share the policy's protocol name but not
    their verdict: a conduit allowing only S7comm-plus covers COTP (which carries it)."""
    s7_rule = "      - protocol: s7comm\n        ports: [102]\n        operations: [read, identify, diagnostic, program, control]"
    policy = parse_policy(EXAMPLE_POLICY.read_text().replace(
        s7_rule, "      - protocol: s7comm-plus\n        ports: [102]", 1), "plus.yaml")
    events = [ev("eng-ws", "plc-s7", protocol, "Connect", "session", ts=float(i), packet=i + 1)
              for i, protocol in enumerate(["cotp", "s7comm", "cotp", "s7comm"])]
    got = memoised(policy, events)
    assert got == reference(policy, events)
    assert [(f["rule"], f["evidence"]["count"]) for f in got[0]] == [("OTSEC-CONDUIT-003", 2)]


def test_requests_on_one_connection_are_judged_by_class_code_encryption_and_targets():
    """One connection, requests differing only in operation class, function code, being
    encrypted or the registers written: each is judged on its own, however they repeat."""
    policy = parse_policy(EXAMPLE_POLICY.read_text().replace(
        "rules:\n", "rules:\n  unsafe_operations:\n    modbus: {op_classes: [write, program, control], "
                    "function_codes: [8]}\n", 1), "codes.yaml")
    kinds = [("Read Coils", "read", 1, {}, 0), ("Diagnostics", "diagnostic", 8, {}, 0),
             ("Diagnostics", "diagnostic", 9, {}, 0), ("Write Single Register", "write", 6, {}, 150),
             ("Write Single Register", "write", 6, {}, 500), ("Write Single Register", "write", 6,
             {"encrypted": True}, 500), ("Read Coils", "read", 1, {"encrypted": True}, 0)]
    events = [ev(src, "plc-modbus", "modbus", function, op, fc=fc, detail=detail, targets=[hr(start, 1)],
                 ts=float(i), packet=i + 1)
              for i, (src, (function, op, fc, detail, start)) in enumerate(
                  (src, k) for _ in range(2) for src in ("hmi-1", "eng-ws") for k in kinds)]
    got = memoised(policy, events)
    assert got == reference(policy, events)
    assert {(f["rule"], f["src"]["name"], f["evidence"]["count"]) for f in got[0]} == {
        ("OTSEC-CONDUIT-005", "hmi-1", 4),           # diagnostic: not an operation the conduit allows
        ("OTSEC-UNSAFE-004", "hmi-1", 2),            # function code 8 only, not 9
        ("OTSEC-UNSAFE-001", "hmi-1", 2),            # register 500 only, not 150 nor encrypted
        ("OTSEC-CONDUIT-003", "eng-ws", 14),         # every request: its conduit allows no Modbus
        ("OTSEC-UNSAFE-004", "eng-ws", 2),
        ("OTSEC-UNSAFE-001", "eng-ws", 4),           # plaintext writes, whatever the register
    }


def test_sensor_aggregator_is_told_of_every_occurrence():
    """The sensor's aggregator overrides add to note which findings changed since it last
    looked: it must still be given every occurrence (a finding counted past it would not
    be sent again), and the findings must be the reference's."""
    items = stream(ROOT / "pcaps" / "plant_incident.pcap")
    tracking = TrackingAggregator()
    checker = Checker(ONE_ZONE, None, tracking)
    counts: dict = {}
    for item in items:
        feed(checker, [item])
        changed = {k for k, f in tracking.findings.items() if f.count != counts.get(k)}
        assert tracking.take().keys() == changed
        counts = {k: f.count for k, f in tracking.findings.items()}
    assert result(checker) == reference(ONE_ZONE, items)


def test_policy_reload_and_baseline_midstream_start_memos_afresh():
    """set_policy (SIGHUP) and a baseline given once learning ends change the answers;
    what was memoised before must not leak into what comes after."""
    items = stream(ROOT / "pcaps" / "plant_incident.pcap")
    half = len(items) // 2
    baseline = learnt(example_policy(), items[:half])

    def run(make):
        checker = make()
        feed(checker, items[:half])
        checker.set_policy(SPLIT)
        feed(checker, items[half: half + half // 2])
        checker.baseline = baseline
        feed(checker, items[half + half // 2:])
        return result(checker)

    got = run(lambda: Checker(ONE_ZONE))
    want = run(lambda: Checker(ONE_ZONE, None, EveryOccurrence(), memo_entries=0))
    assert got == want
    # the switches mattered: checking everything against ONE_ZONE alone differs
    assert got != memoised(ONE_ZONE, items)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=30), st.lists(FLOWS, max_size=8), st.booleans(), st.integers(0, 2))
def test_any_events_and_flows_give_the_reference_findings(events, flows, with_baseline, which):
    policy = (example_policy(), ONE_ZONE, SPLIT)[which]
    # repeats are what memos are for: each event comes again later at a new time
    items = events + flows + [dataclasses.replace(e, ts=e.ts + 1, packet=e.packet + 1) for e in events]
    baseline = learnt(policy, events[: len(events) // 2]) if with_baseline else None
    assert memoised(policy, items, baseline) == reference(policy, items, baseline)


# --- the pieces the memoised path relies on --------------------------------------------

def _client_sent_as_documented(ev: Event) -> bool:
    """The rule of otsec.analysis.sides, written out plainly: the server is the side on the
    protocol's registered port; failing that, the lower port below 1024; failing that,
    the receiver of a request."""
    proto = protocol_name(ev.protocol)
    src_srv, dst_srv = SERVICE_PORTS.get(ev.src_port) == proto, SERVICE_PORTS.get(ev.dst_port) == proto
    if src_srv != dst_srv:
        return dst_srv
    low, high = sorted((ev.src_port, ev.dst_port))
    if low < 1024 <= high:
        return ev.dst_port == low
    return ev.kind != "response"


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_sides_follow_the_documented_orientation(ev):
    sd = sides(ev)
    assert sent_by_client(ev) == sd.from_client == _client_sent_as_documented(ev)
    client = (ev.src_ip, ev.src_mac) if sd.from_client else (ev.dst_ip, ev.dst_mac)
    server = (ev.dst_ip, ev.dst_mac, ev.dst_port) if sd.from_client else (ev.src_ip, ev.src_mac, ev.src_port)
    assert (sd.client_ip, sd.client_mac) == client and (sd.server_ip, sd.server_mac, sd.port) == server
    assert sd.protocol == protocol_name(ev.protocol, sd.port)
    assert type(sd) is type(sides(ev)) and sd == sides(ev) and hash(sd) == hash(sides(ev))


@pytest.mark.parametrize("path", EXAMPLES)
def test_sides_of_real_events(path):
    for event in (i for i in stream(path) if isinstance(i, Event)):
        assert sent_by_client(event) == sides(event).from_client == _client_sent_as_documented(event)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.0, 2.0, 3.5, 1e9]), st.integers(1, 99)), min_size=1,
                max_size=12))
def test_finding_keeps_the_earliest_first_and_the_latest_last_occurrence(occurrences):
    """First: the earliest time, the first of equals; last: the latest, the last of equals."""
    f = Finding("OTSEC-DEVICE-001", Endpoint("10.0.0.1"), None, None, None, "x")
    for ts, packet in occurrences:
        f.add(ts, packet, f"c{packet}", None)
    first = min(occurrences, key=lambda o: o[0])
    last = max(reversed(occurrences), key=lambda o: o[0])
    assert (f.first_ts, f.first_packet, f.first_capture) == (first[0], first[1], f"c{first[1]}")
    assert (f.last_ts, f.last_packet, f.last_capture) == (last[0], last[1], f"c{last[1]}")
    assert f.count == len(occurrences)
