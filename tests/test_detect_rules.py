"""Each detection rule on hand-built events and flows against the example plant policy:
what triggers it, what must not, and who is named as source and destination."""

from __future__ import annotations

import dataclasses

import pytest

from otsec.analysis.sides import sides
from otsec.detect.baseline import Learner
from otsec.detect.checker import Checker
from otsec.detect.rules import RULES, SEVERITIES
from otsec.model import Target
from otsec.policy.loader import parse_policy
from tests.detect_helpers import EXAMPLE_POLICY, IP, ev, example_policy, fl, found, hr

POLICY = example_policy()


def run(events=(), flows=(), policy=POLICY, baseline=None):
    c = Checker(policy, baseline)
    for e in events:
        c.on_event(e)
    for f in flows:
        c.on_flow(f)
    return c.finish()


def policy_with_rules(extra: str):
    text = EXAMPLE_POLICY.read_text().split("\nrules:\n")[0] + "\nrules:\n" + extra
    return parse_policy(text, "test.yaml")


def test_rule_catalogue_is_consistent():
    assert all(r.severity in SEVERITIES for r in RULES.values())
    assert all(rid.startswith("OTSEC-") and rid.count("-") == 2 for rid in RULES)


# --- conduit violations ----------------------------------------------------------------

def test_no_conduit_between_zones():
    out = run([ev("corp-pc", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(0, 10)])])
    assert found(out) == {("OTSEC-CONDUIT-001", "corp-pc", "plc-modbus")}
    assert "no conduit joins enterprise (level 4) -> field (level 1)" in out[0].explanation


def test_wrong_direction():
    out = run([ev("plc-modbus", "hmi-1", "modbus", "Read Coils", "read", fc=1)])
    assert found(out) == {("OTSEC-CONDUIT-002", "plc-modbus", "hmi-1")}


def test_protocol_or_port_not_allowed():
    assert found(run(flows=[fl("hmi-1", "plc-modbus", 443, "https")])) == {
        ("OTSEC-CONDUIT-003", "hmi-1", "plc-modbus")}
    # modbus allowed on 502 only
    assert found(run([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", port=5020)])) == {
        ("OTSEC-CONDUIT-003", "hmi-1", "plc-modbus")}


def test_source_or_destination_not_allowed():
    assert found(run([ev("historian", "plc-s7", "s7comm", "Read Var", "read")])) == {
        ("OTSEC-CONDUIT-004", "historian", "plc-s7")}


def test_operation_class_not_allowed_and_session_always_allowed():
    assert found(run([ev("eng-ws", "plc-s7", "s7comm", "Setup communication", "session"),
                      ev("eng-ws", "plc-s7", "cotp", "Connection Request", "session"),
                      ev("eng-ws", "plc-s7", "s7comm", "Read SZL", "identify")])) == set()
    out = run([ev("eng-ws", "plc-s7", "s7comm", "Write Var", "write",
                  targets=[Target("area", area="DB", db=10, start=0, count=2)])])
    assert found(out) == {("OTSEC-CONDUIT-005", "eng-ws", "plc-s7"), ("OTSEC-UNSAFE-001", "eng-ws", "plc-s7")}


def test_allowed_traffic_is_silent():
    events = [ev("hmi-1", "plc-modbus", "modbus", "Write Single Register", "write", fc=6, targets=[hr(150, 1)]),
              ev("hmi-1", "plc-s7", "s7comm", "Write Var", "write", targets=[Target("area", area="DB", db=10, start=4, count=2)]),
              ev("eng-ws", "plc-s7", "s7comm", "Request download", "program", targets=[Target("block", name="DB1")]),
              ev("eng-ws", "plc-s7", "s7comm", "PLC Stop", "control")]
    flows = [fl("jump-host", "eng-ws", 3389, "rdp"), fl("corp-pc", "jump-host", 443, "https"),
             fl("hmi-1", "plc-modbus", 502, "modbus", events=4)]
    assert run(events, flows) == []


def test_decoded_flow_is_judged_by_its_events_not_twice():
    out = run([ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read")],
              [fl("corp-pc", "plc-modbus", 502, "modbus", events=2)])
    assert [(f.rule_id, f.count) for f in out] == [("OTSEC-CONDUIT-001", 1)]


# --- new device ------------------------------------------------------------------------

def test_new_device_with_activity_and_identity():
    out = run([ev("rogue", "plc-s7", "s7comm", "Setup communication", "session", src_mac="00:0c:29:aa:bb:cc",
                  identity={"hostname": "ENG-LAPTOP"})])
    dev = [f for f in out if f.rule_id == "OTSEC-DEVICE-001"]
    assert len(dev) == 1 and dev[0].src.ip == IP["rogue"] and dev[0].dst is None
    assert dev[0].samples["mac"] == {"00:0c:29:aa:bb:cc": 1}
    assert dev[0].samples["identity.hostname"] == {"ENG-LAPTOP": 1}
    assert "s7comm Setup communication (request) with plc-s7" in dev[0].samples["activity"]


def test_known_device_from_baseline_and_outside_zones_are_not_new():
    learner = Learner(POLICY)
    learner.on_event(ev("rogue", "hmi-1", "modbus", "Read Coils", "read"))
    out = run([ev("rogue", "hmi-1", "modbus", "Read Coils", "read")], baseline=learner.baseline)
    assert found(out) == set()
    assert found(run(flows=[fl("plc-modbus", "internet", 443, "https")])) == {
        ("OTSEC-EXTERNAL-001", "plc-modbus", IP["internet"])}


def test_undeclared_server_is_new_only_when_it_answers():
    assert found(run(flows=[fl("hmi-1", "10.40.0.77", 502, "modbus", packets_s2c=0)])) == set()
    assert found(run(flows=[fl("hmi-1", "10.40.0.77", 502, "modbus")])) == {("OTSEC-DEVICE-001", "10.40.0.77", None)}


# --- new communication -----------------------------------------------------------------

def test_new_communication_needs_a_baseline_and_is_residual():
    learner = Learner(POLICY)
    learner.on_event(ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(0, 20)]))
    learner.on_flow(fl("jump-host", "eng-ws", 3389, "rdp"))
    b = learner.baseline
    same = ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(5, 10)])
    new_fn = ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1, targets=[Target("coil", start=0, count=8)])
    new_target = ev("hmi-1", "plc-modbus", "modbus", "Read Holding Registers", "read", fc=3, targets=[hr(100, 5)])
    assert run([same], [fl("jump-host", "eng-ws", 3389, "rdp")], baseline=b) == []
    assert found(run([new_fn, new_target], baseline=b)) == {
        ("OTSEC-NEWCOMM-001", "hmi-1", "plc-modbus"), ("OTSEC-NEWCOMM-002", "hmi-1", "plc-modbus")}
    assert run([new_fn]) == []                       # without a baseline there is nothing to compare
    # a violation is reported for its cause, not again as "new"
    assert found(run([ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read")], baseline=b)) == {
        ("OTSEC-CONDUIT-001", "corp-pc", "plc-modbus")}
    assert found(run(flows=[fl("corp-pc", "jump-host", 443, "https")], baseline=b)) == {
        ("OTSEC-NEWCOMM-001", "corp-pc", "jump-host")}


# --- unsafe operations -----------------------------------------------------------------

def test_write_outside_allowed_targets():
    out = run([ev("hmi-1", "plc-modbus", "modbus", "Write Multiple Registers", "write", fc=16, targets=[hr(4000, 10)]),
               ev("hmi-1", "plc-modbus", "modbus", "Write Multiple Registers", "write", fc=16, targets=[hr(190, 20)])])
    assert found(out) == {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}
    assert out[0].count == 2 and out[0].samples["target"] == {"holding_register 4000-4009": 1, "holding_register 190-209": 1}
    assert "outside the allowed write targets (holding_register 100-199)" in out[0].explanation


def test_write_without_decoded_target_is_not_authorised_by_bounded_rule():
    assert found(run([ev("hmi-1", "plc-modbus", "modbus", "Write Single Register", "write", fc=6)])) == {
        ("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}


def test_program_and_control_need_the_roles():
    out = run([ev("hmi-1", "plc-s7", "s7comm", "PLC Stop", "control", targets=[Target("pi_service", name="P_PROGRAM")]),
               ev("rogue", "plc-s7", "s7comm", "Request download", "program", targets=[Target("block", name="DB1")])])
    assert found(out) >= {("OTSEC-UNSAFE-003", "hmi-1", "plc-s7"), ("OTSEC-UNSAFE-002", IP["rogue"], "plc-s7")}
    stop = next(f for f in out if f.rule_id == "OTSEC-UNSAFE-003")
    assert "only engineering_workstation may control" in stop.explanation
    assert stop.severity == "critical"


def test_s7_jobs_sent_by_the_plc_belong_to_the_stations_connection():
    # During a download the PLC sends "Download block" jobs to the station (from port 102).
    e = ev("plc-s7", "rogue", "s7comm", "Download block", "program", targets=[Target("block", name="DB1")])
    e.src_port, e.dst_port = 102, 50999
    sd = sides(e)
    assert (sd.client_ip, sd.server_ip, sd.port, sd.from_client) == (IP["rogue"], IP["plc-s7"], 102, False)
    assert ("OTSEC-UNSAFE-002", IP["rogue"], "plc-s7") in found(run([e]))


def test_function_listed_as_unsafe_whatever_its_class():
    out = run([ev("historian", "opcua-server", "opcua", "AddNodes", "other")])
    assert ("OTSEC-UNSAFE-004", "historian", "opcua-server") in found(out)
    custom = policy_with_rules("  unsafe_operations:\n    modbus: {function_codes: [8]}\n")
    out = run([ev("hmi-1", "plc-modbus", "modbus", "Diagnostics", "diagnostic", fc=8)], policy=custom)
    # also outside the conduit's read/write operations
    assert found(out) == {("OTSEC-UNSAFE-004", "hmi-1", "plc-modbus"), ("OTSEC-CONDUIT-005", "hmi-1", "plc-modbus")}
    # the override replaces the defaults for that protocol: writes are no longer unsafe
    out = run([ev("hmi-1", "plc-modbus", "modbus", "Write Single Register", "write", fc=6)], policy=custom)
    assert found(out) == set()


def test_intra_zone_write_by_declared_asset_is_fine_but_not_by_undeclared():
    assert run([ev("plc-s7", "plc-modbus", "modbus", "Write Single Register", "write", fc=6, targets=[hr(1, 1)])]) == []
    out = run([ev("10.50.0.77", "plc-modbus", "modbus", "Write Single Register", "write", fc=6, targets=[hr(1, 1)])])
    assert found(out) == {("OTSEC-UNSAFE-001", "10.50.0.77", "plc-modbus"), ("OTSEC-DEVICE-001", "10.50.0.77", None)}


# --- insecure protocols ----------------------------------------------------------------

@pytest.mark.parametrize("mode,expected", [("None", True), ("Sign", True), ("NoneOrSign", True),
                                           ("SignAndEncrypt", False)])
def test_opcua_security_mode(mode, expected):
    out = run([ev("historian", "opcua-server", "opcua", "OpenSecureChannel", "session",
                  detail={"security_mode": mode, "security_policy": "None"}),
               ev("opcua-server", "historian", "opcua", "OpenSecureChannel", "session", kind="response",
                  detail={"security_mode": mode})])
    hits = [f for f in out if f.rule_id == "OTSEC-INSECURE-001"]
    assert bool(hits) is expected
    if expected:
        assert (hits[0].src.label, hits[0].dst.label, hits[0].count) == ("historian", "opcua-server", 2)
        assert f"uses security mode {mode}; conduit 'ops-to-field' requires SignAndEncrypt" in hits[0].explanation


def test_encrypted_opcua_messages_are_not_judged_by_operation():
    assert run([ev("historian", "opcua-server", "opcua", "Encrypted message", "other",
                   detail={"encrypted": True, "security_mode": "SignAndEncrypt"})]) == []


def test_cleartext_across_zones_when_forbidden():
    deny = policy_with_rules("  cleartext_across_zones: {deny: true}\n")
    read = ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1)
    assert found(run([read], policy=deny)) == {("OTSEC-INSECURE-002", "hmi-1", "plc-modbus")}
    excepted = policy_with_rules("  cleartext_across_zones: {deny: true, except_conduits: [hmi-to-field]}\n")
    assert run([read], policy=excepted) == []
    assert run([read]) == []


def test_it_admin_protocols_into_control_levels():
    out = run(flows=[fl("corp-pc", "hmi-1", 23, "telnet")])
    assert found(out) == {("OTSEC-INSECURE-003", "corp-pc", "hmi-1"), ("OTSEC-CONDUIT-001", "corp-pc", "hmi-1")}
    # ops-to-control is declared without allow rules: VNC is not allowed on it either
    assert found(run(flows=[fl("eng-ws", "hmi-1", 5900, "vnc")])) == {
        ("OTSEC-INSECURE-003", "eng-ws", "hmi-1"), ("OTSEC-CONDUIT-003", "eng-ws", "hmi-1")}
    # http-alt folds to http; level 3 targets and same-zone sessions are not "into" a control level
    assert ("OTSEC-INSECURE-003", "eng-ws", "hmi-1") in found(run(flows=[fl("eng-ws", "hmi-1", 8080, "http-alt")]))
    assert run(flows=[fl("jump-host", "eng-ws", 3389, "rdp")]) == []
    assert found(run(flows=[fl("10.40.0.11", "hmi-1", 5900, "vnc")])) == {("OTSEC-DEVICE-001", "10.40.0.11", None)}


# --- external connections --------------------------------------------------------------

def test_external_connections():
    assert found(run(flows=[fl("plc-modbus", "internet", 443, "https")])) == {
        ("OTSEC-EXTERNAL-001", "plc-modbus", IP["internet"])}
    inbound = run(flows=[fl("internet", "plc-modbus", 502, "modbus")])
    assert found(inbound) == {("OTSEC-EXTERNAL-001", IP["internet"], "plc-modbus")}
    assert "accepted a connection from 203.0.113.5" in inbound[0].explanation
    assert run(flows=[fl("corp-pc", "internet", 443, "https")]) == []          # level 4 is IT
    assert run(flows=[fl("plc-modbus", "239.1.2.3", 5000, "unknown", transport="udp")]) == []
    allowed = policy_with_rules("  external: {allowed: [203.0.113.0/24]}\n")
    assert run(flows=[fl("plc-modbus", "internet", 443, "https")], policy=allowed) == []


# --- protocol anomalies ----------------------------------------------------------------

def test_decoder_anomalies_are_oriented_client_first():
    out = run([ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", anomalies=["modbus.invalid_length"]),
               ev("plc-modbus", "corp-pc", "modbus", "Read Coils", "read", kind="response",
                  anomalies=["modbus.invalid_length"], result="ok")])
    a = [f for f in out if f.rule_id == "OTSEC-ANOMALY-001"]
    assert len(a) == 1 and (a[0].src.label, a[0].dst.label, a[0].count) == ("corp-pc", "plc-modbus", 2)
    assert a[0].samples["flag"] == {"modbus.invalid_length": 2}


def test_unpaired_responses():
    out = run([ev("plc-modbus", "hmi-1", "modbus", "Read Coils", "read", kind="response", result="ok",
                  anomalies=["modbus.unpaired_response"])])
    assert found(out) == {("OTSEC-ANOMALY-002", "hmi-1", "plc-modbus")}


def test_flow_level_anomalies():
    out = run(flows=[fl("hmi-1", "plc-modbus", 502, "modbus", events=3, anomalies=["tcp.overlap_conflict"])])
    assert found(out) == {("OTSEC-ANOMALY-001", "hmi-1", "plc-modbus")}


def _exception(fc, packet):
    return ev("plc-modbus", "hmi-1", "modbus", f"fc {fc}", "other", kind="response", fc=fc,
              result="exception", packet=packet, ts=float(packet))


def test_function_code_sweep_threshold_and_evidence():
    assert run([_exception(fc, i) for i, fc in enumerate([60, 61, 62, 63, 63, 63], 1)]) == []   # 4 distinct
    out = run([_exception(fc, i) for i, fc in enumerate(range(60, 71), 10)])
    assert found(out) == {("OTSEC-ANOMALY-003", "hmi-1", "plc-modbus")}
    sweep = out[0]
    assert (sweep.count, sweep.first_packet, sweep.last_packet) == (11, 10, 20)
    assert list(sweep.samples["function_code"])[:3] == ["60", "61", "62"]


def test_unit_id_sweep():
    events = [ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1, detail={"unit_id": u}, packet=u)
              for u in range(1, 7)]
    out = run(events)
    assert found(out) == {("OTSEC-ANOMALY-004", "hmi-1", "plc-modbus")}
    assert out[0].count == 6 and out[0].first_packet == 1
    assert run(events[:4]) == []


def test_sweep_thresholds_come_from_the_policy():
    strict = policy_with_rules("  anomalies: {function_sweep_min: 3}\n")
    assert found(run([_exception(fc, fc) for fc in (60, 61, 62)], policy=strict)) == {
        ("OTSEC-ANOMALY-003", "hmi-1", "plc-modbus")}


def test_events_are_not_mutated():
    e = ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", anomalies=["modbus.invalid_length"])
    before = dataclasses.replace(e, anomalies=list(e.anomalies), detail=dict(e.detail))
    run([e])
    assert e == before


# --- robustness --------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from otsec.model import KINDS, OP_CLASSES, Event, Flow  # noqa: E402

ADDRS = st.sampled_from(list(IP.values()) + ["10.40.0.200", "198.51.100.1", "224.0.0.1", "::1", "fe80::1", "bogus"])
PORTS = st.sampled_from([0, 23, 102, 443, 502, 3389, 4840, 5900, 40000, 65535])
TARGETS = st.lists(st.builds(Target, st.sampled_from(["holding_register", "coil", "area", "node", "block", "szl"]),
                             st.one_of(st.none(), st.integers(0, 70000)), st.one_of(st.none(), st.integers(0, 2000)),
                             st.one_of(st.none(), st.sampled_from(["DB", "M"])), st.one_of(st.none(), st.integers(0, 99)),
                             st.one_of(st.none(), st.text(max_size=12))), max_size=3)
EVENTS = st.builds(
    Event, protocol=st.sampled_from(["modbus", "s7comm", "cotp", "s7comm-plus", "opcua", "weird"]),
    kind=st.sampled_from(KINDS), function=st.text(max_size=20), op_class=st.sampled_from(OP_CLASSES),
    function_code=st.one_of(st.none(), st.integers(0, 300)), targets=TARGETS,
    result=st.sampled_from([None, "ok", "exception", "error"]),
    anomalies=st.lists(st.sampled_from(["modbus.invalid_length", "opcua.unpaired_response"]), max_size=2),
    detail=st.fixed_dictionaries({}, optional={
        "unit_id": st.integers(0, 255), "encrypted": st.booleans(),
        "security_mode": st.sampled_from(["None", "Sign", "SignAndEncrypt", "NoneOrSign", "Invalid", "7"])}),
    src_ip=ADDRS, dst_ip=ADDRS, src_port=PORTS, dst_port=PORTS, ts=st.floats(0, 2e9), packet=st.integers(1, 10**6))
FLOWS = st.builds(
    Flow, flow_id=st.just("f"), transport=st.sampled_from(["tcp", "udp", "icmp", "ip-47"]), client_ip=ADDRS,
    client_port=PORTS, server_ip=ADDRS, server_port=PORTS,
    app=st.sampled_from(["unknown", "telnet", "rdp", "http-alt", "modbus", "s7comm", "opcua", "dns"]),
    events=st.integers(0, 3), packets_s2c=st.integers(0, 3),
    anomalies=st.lists(st.sampled_from(["tcp.overlap_conflict"]), max_size=1))


@settings(max_examples=250, deadline=None)
@given(st.lists(EVENTS, max_size=12), st.lists(FLOWS, max_size=6), st.booleans())
def test_any_events_and_flows_give_aggregated_findings_never_exceptions(events, flows, with_baseline):
    learner = Learner(POLICY)
    for e in events:
        learner.on_event(e)
    for f in flows:
        learner.on_flow(f)
    findings = run(events, flows, baseline=learner.baseline if with_baseline else None)
    keys = [(f.rule_id, f.src.ip, f.dst.ip if f.dst else None, f.protocol, f.port) for f in findings]
    assert all(f.rule_id in RULES and f.count >= 1 and f.first_ts <= f.last_ts for f in findings)
    # learning exactly this traffic then checking them never yields "new communication"
    if with_baseline:
        assert not any(f.rule_id.startswith("OTSEC-NEWCOMM") for f in findings), keys


def test_every_rule_is_documented_with_its_severity():
    doc = (EXAMPLE_POLICY.parents[1] / "docs" / "detections.md").read_text()
    for rule in RULES.values():
        assert f"### {rule.id} — " in doc and f"({rule.severity})" in doc.split(f"### {rule.id} — ")[1].split("\n")[0]
