"""Zone/conduit edge cases an auditor meets on a real plant, each with the exact findings:
selectors by role or name, VLAN-only zones, connections whose handshake was not captured,
protocols on non-standard ports, COTP under S7comm-plus, OPC UA channels of unknown or
invalid security, write ranges across the allowed boundary (and Modbus FC 23), suppression
matching and expiry, IPv6 hosts, and external hosts on either side of a connection."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from otsec.detect.checker import Checker
from otsec.model import Target
from otsec.policy.loader import parse_policy
from tests.detect_helpers import EXAMPLE_POLICY, IP, ev, example_policy, fl, found, hr

POLICY = example_policy()
BASE = EXAMPLE_POLICY.read_text()


def run(events=(), flows=(), policy=POLICY, today=None):
    c = Checker(policy)
    for e in events:
        c.on_event(e)
    for f in flows:
        c.on_flow(f)
    return c.finish(today)


def edited(*pairs: tuple[str, str]):
    """The example policy with each (old, new) text replaced (each old must occur)."""
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_policy(text, "edited.yaml")


def add_conduit(yaml: str):
    return edited(("\nrules:\n", "\n" + yaml + "\nrules:\n"))


# --- selectors: asset name vs role -----------------------------------------------------

ROLE_POLICY = edited(("        sources: [hmi-1]\n        destinations: [plc-modbus]",
                      "        sources: [hmi]\n        destinations: [plc]"),
                     ("  - {name: hmi-1,", "  - {name: hmi-2, ip: 10.40.0.12, zone: control, role: hmi}\n"
                                          "  - {name: ws-ctl, ip: 10.40.0.13, zone: control, role: workstation}\n"
                                          "  - {name: hmi-1,"))


def test_role_selector_admits_every_asset_of_the_role_and_no_other():
    read = dict(fc=3, targets=[hr(0, 10)])
    assert run([ev("10.40.0.12", "plc-modbus", "modbus", "Read Holding Registers", "read", **read)],
               policy=ROLE_POLICY) == []
    # the role covers the other PLC as destination too
    assert run([ev("hmi-1", "plc-s7", "modbus", "Read Holding Registers", "read", **read)],
               policy=ROLE_POLICY) == []
    assert found(run([ev("10.40.0.13", "plc-modbus", "modbus", "Read Holding Registers", "read", **read)],
                     policy=ROLE_POLICY)) == {("OTSEC-CONDUIT-004", "ws-ctl", "plc-modbus")}
    # an undeclared host has no role: a role selector does not admit it
    assert found(run([ev("10.40.0.77", "plc-modbus", "modbus", "Read Holding Registers", "read", **read)],
                     policy=ROLE_POLICY)) == {("OTSEC-CONDUIT-004", "10.40.0.77", "plc-modbus"),
                                              ("OTSEC-DEVICE-001", "10.40.0.77", None)}


def test_name_selector_admits_only_that_asset():
    named = edited(("  - {name: hmi-1,", "  - {name: hmi-2, ip: 10.40.0.12, zone: control, role: hmi}\n"
                                        "  - {name: hmi-1,"))
    assert found(run([ev("10.40.0.12", "plc-modbus", "modbus", "Read Coils", "read", fc=1)], policy=named)) == {
        ("OTSEC-CONDUIT-004", "hmi-2", "plc-modbus")}


# --- VLAN-only zones -------------------------------------------------------------------

VLAN_POLICY = edited(
    ("zones:\n", "zones:\n  - name: safety\n    level: 1\n    vlans: [60]\n"),
    ("  - {name: hmi-1,", "  - {name: sis-1, ip: 10.60.0.5, zone: safety, role: safety_controller}\n"
                         "  - {name: hmi-1,"),
    ("\nrules:\n", "\n  - name: control-to-safety\n    zones: [control, safety]\n    initiator: control\n"
                   "    allow:\n      - {protocol: modbus, ports: [502], operations: [read], sources: [hmi-1]}\n"
                   "\nrules:\n"))


def test_vlan_only_zone_members_are_its_declared_assets():
    assert run([ev("hmi-1", "10.60.0.5", "modbus", "Read Coils", "read", fc=1)], policy=VLAN_POLICY) == []
    out = run([ev("hmi-1", "10.60.0.5", "modbus", "Write Single Coil", "write", fc=5,
                  targets=[Target("coil", start=1, count=1)])], policy=VLAN_POLICY)
    assert found(out) == {("OTSEC-CONDUIT-005", "hmi-1", "sis-1"), ("OTSEC-UNSAFE-001", "hmi-1", "sis-1")}
    # wrong side: the safety controller may not open to the control zone
    assert found(run([ev("10.60.0.5", "hmi-1", "modbus", "Read Coils", "read", fc=1)], policy=VLAN_POLICY)) == {
        ("OTSEC-CONDUIT-002", "sis-1", "hmi-1")}


def test_undeclared_host_of_a_vlan_only_zone_is_outside_every_zone():
    # captures carry no VLAN id to the detections: an undeclared address is in no zone,
    # so a control-level host talking to it is an external connection, not a new device
    assert found(run(flows=[fl("hmi-1", "10.60.0.6", 502, "modbus")], policy=VLAN_POLICY)) == {
        ("OTSEC-EXTERNAL-001", "hmi-1", "10.60.0.6")}


# --- initiator direction without the handshake -----------------------------------------

def _unknown_opener(flow):
    return dataclasses.replace(flow, initiator_known=False)


def test_wrong_side_without_handshake_says_the_opener_is_inferred():
    out = run(flows=[_unknown_opener(fl("plc-modbus", "hmi-1", 40001, "unknown"))])
    assert found(out) == {("OTSEC-CONDUIT-002", "plc-modbus", "hmi-1")}
    assert "handshake not seen: plc-modbus is taken as the opener because hmi-1 holds the server port" \
        in out[0].explanation
    assert out[0].samples["handshake"] == {"not seen": 1}


def test_without_handshake_the_allowed_orientation_is_not_reported():
    # ops-to-control allows any TCP from eng-ws to hmi-1: a connection whose handshake was
    # missed and whose ports make hmi-1 look like the opener may be eng-ws's, so nothing is proven
    anytcp = edited(("    description: declared for HMI maintenance; unused in the example captures\n",
                     "    description: maintenance\n    allow:\n"
                     "      - {protocol: tcp, sources: [eng-ws], destinations: [hmi-1]}\n"))
    flow = fl("hmi-1", "eng-ws", 40001, "unknown")
    assert run(flows=[_unknown_opener(flow)], policy=anytcp) == []
    # with the handshake seen, hmi-1 did open it: against the conduit's direction
    assert found(run(flows=[flow], policy=anytcp)) == {("OTSEC-CONDUIT-002", "hmi-1", "eng-ws")}


# --- protocols on non-standard ports ---------------------------------------------------

def test_conduit_listing_a_protocol_on_a_non_standard_port():
    moved = edited(("        ports: [502]\n        operations: [read, write]",
                    "        ports: [5020]\n        operations: [read, write]"))
    req = ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1, port=5020)
    resp = ev("plc-modbus", "hmi-1", "modbus", "Read Coils", "read", fc=1, port=5020, kind="response", result="ok")
    assert run([req, resp], policy=moved) == []
    assert found(run([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", fc=1)], policy=moved)) == {
        ("OTSEC-CONDUIT-003", "hmi-1", "plc-modbus")}
    # an undecoded conversation on the moved port is judged by its transport's rule, not allowed here
    assert found(run(flows=[fl("hmi-1", "plc-modbus", 5020, "unknown")], policy=moved)) == {
        ("OTSEC-CONDUIT-003", "hmi-1", "plc-modbus")}


# --- S7comm-plus -----------------------------------------------------------------------

S7PLUS = edited(("      - protocol: s7comm\n        ports: [102]\n        operations: [read, identify, diagnostic, "
                 "program, control]", "      - protocol: s7comm-plus\n        ports: [102]\n        operations: "
                 "[read, identify, diagnostic, program, control]"))


def test_cotp_connect_of_an_s7comm_plus_connection_is_covered_by_the_s7comm_plus_rule():
    events = [ev("eng-ws", "plc-s7", "cotp", "Connection Request", "session"),
              ev("eng-ws", "plc-s7", "s7comm-plus", "CreateObject", "session", port=102),
              ev("eng-ws", "plc-s7", "s7comm-plus", "GetMultiVariables", "read", port=102)]
    assert run(events, policy=S7PLUS) == []
    # classic S7 on the same conduit is a different protocol
    assert found(run([ev("eng-ws", "plc-s7", "s7comm", "Read Var", "read")], policy=S7PLUS)) == {
        ("OTSEC-CONDUIT-003", "eng-ws", "plc-s7")}


def test_s7comm_plus_writes_and_control():
    out = run([ev("eng-ws", "plc-s7", "s7comm-plus", "SetMultiVariables", "write", port=102,
                  targets=[Target("variable", name="0x1234")])], policy=S7PLUS)
    assert found(out) == {("OTSEC-CONDUIT-005", "eng-ws", "plc-s7"), ("OTSEC-UNSAFE-001", "eng-ws", "plc-s7")}
    assert run([ev("eng-ws", "plc-s7", "s7comm-plus", "SetVariable", "control", port=102)], policy=S7PLUS) == []
    out = run([ev("hmi-1", "plc-s7", "s7comm-plus", "SetVariable", "control", port=102)])
    assert found(out) == {("OTSEC-CONDUIT-003", "hmi-1", "plc-s7"), ("OTSEC-UNSAFE-003", "hmi-1", "plc-s7")}


# --- OPC UA security mode unknown or invalid -------------------------------------------

def test_opcua_channel_without_a_seen_open_is_not_judged():
    assert run([ev("historian", "opcua-server", "opcua", "ReadRequest", "read")]) == []


@pytest.mark.parametrize("mode", ["Invalid", "7"])
def test_opcua_invalid_or_undefined_mode_is_below_any_requirement(mode):
    out = run([ev("historian", "opcua-server", "opcua", "OpenSecureChannel", "session",
                  detail={"security_mode": mode, "security_policy": "None"})])
    assert found(out) == {("OTSEC-INSECURE-001", "historian", "opcua-server")}
    assert f"uses security mode {mode}; conduit 'ops-to-field' requires SignAndEncrypt" in out[0].explanation


# --- Modbus writes at the edges of the allowed range -----------------------------------

@pytest.mark.parametrize("start,count,expected", [
    (100, 100, set()), (199, 1, set()),
    (99, 2, {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}),
    (199, 2, {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}),
    (50, 200, {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}),
])
def test_write_range_straddling_the_allowed_boundary(start, count, expected):
    out = run([ev("hmi-1", "plc-modbus", "modbus", "Write Multiple Registers", "write", fc=16,
                  targets=[hr(start, count)])])
    assert found(out) == expected


def test_read_write_registers_is_authorised_by_its_written_range_only():
    def fc23(read, write):
        return ev("hmi-1", "plc-modbus", "modbus", "Read Write Register", "write", fc=23,
                  targets=[hr(*read), hr(*write)],
                  detail={"read_start": read[0], "read_quantity": read[1],
                          "write_start": write[0], "write_quantity": write[1]})
    assert run([fc23((0, 10), (150, 2))]) == []
    out = run([fc23((150, 2), (4000, 2))])
    assert found(out) == {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")}
    assert "to holding_register 4000-4001 outside the allowed write targets" in out[0].explanation


# --- suppressions ----------------------------------------------------------------------

def _suppressing(item: str):
    return edited(("  suppressions: []", "  suppressions:\n    - " + item))


def test_suppression_applies_through_its_expiry_date_and_not_after():
    p = _suppressing("{rule: OTSEC-EXTERNAL-001, src: plc, dst: 203.0.113.0/24, protocol: https, "
                     "reason: vendor telemetry, expires: 2026-06-30}")
    flow = fl("plc-modbus", "internet", 443, "https")
    on_day = run(flows=[flow], policy=p, today=dt.date(2026, 6, 30))
    assert found(on_day) == set() and on_day[0].suppressed.reason == "vendor telemetry"
    assert found(run(flows=[flow], policy=p, today=dt.date(2026, 7, 1))) == {
        ("OTSEC-EXTERNAL-001", "plc-modbus", IP["internet"])}


def test_suppression_fields_must_all_match():
    p = _suppressing("{rule: 'OTSEC-CONDUIT-*', src: corp-pc, protocol: modbus, reason: lab test}")
    read = ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", fc=1)
    assert found(run([read], policy=p)) == set()
    # another protocol, another source: not covered
    assert found(run(flows=[fl("corp-pc", "hmi-1", 23, "telnet")], policy=p)) == {
        ("OTSEC-CONDUIT-001", "corp-pc", "hmi-1"), ("OTSEC-INSECURE-003", "corp-pc", "hmi-1")}
    assert found(run([ev("10.10.0.2", "plc-modbus", "modbus", "Read Coils", "read", fc=1)], policy=p)) == {
        ("OTSEC-CONDUIT-001", "corp-dns", "plc-modbus")}


# --- IPv6 ------------------------------------------------------------------------------

V6 = edited(("cidrs: [10.50.0.0/24]", "cidrs: [10.50.0.0/24, 'fd00:50::/64']"),
            ("{name: plc-s7, ip: 10.50.0.30,", "{name: plc-s7, ip: 'FD00:50:0::0030',"),
            ("  suppressions: []", "  suppressions:\n    - {rule: OTSEC-EXTERNAL-001, dst: '2001:db8:1::/48', "
                                   "reason: vendor v6 gateway}"))


def test_ipv6_assets_match_whatever_the_spelling_in_the_policy():
    assert run([ev("hmi-1", "fd00:50::30", "s7comm", "Read Var", "read")], policy=V6) == []
    out = run([ev("hmi-1", "fd00:50::30", "s7comm", "PLC Stop", "control")], policy=V6)
    assert found(out) == {("OTSEC-CONDUIT-005", "hmi-1", "plc-s7"), ("OTSEC-UNSAFE-003", "hmi-1", "plc-s7")}


def test_ipv6_new_device_external_and_link_local():
    assert found(run([ev("fd00:50::99", "plc-s7", "s7comm", "Read Var", "read")], policy=V6)) == {
        ("OTSEC-DEVICE-001", "fd00:50::99", None)}
    assert found(run(flows=[fl("fd00:50::30", "2001:db8:2::1", 443, "https")], policy=V6)) == {
        ("OTSEC-EXTERNAL-001", "plc-s7", "2001:db8:2::1")}
    # the suppression's IPv6 CIDR covers this one
    assert found(run(flows=[fl("fd00:50::30", "2001:db8:1::7", 443, "https")], policy=V6)) == set()
    assert run(flows=[fl("fd00:50::30", "fe80::1", 546, "dhcpv6-client", transport="udp")], policy=V6) == []
    assert run(flows=[fl("fd00:50::30", "ff02::1:2", 547, "dhcpv6-server", transport="udp")], policy=V6) == []


# --- external hosts on either side -----------------------------------------------------

def test_external_host_opening_to_ot_and_ot_opening_to_it():
    inbound = run(flows=[fl("internet", "plc-s7", 102, "s7comm")])
    assert found(inbound) == {("OTSEC-EXTERNAL-001", IP["internet"], "plc-s7")}
    assert "plc-s7 in OT zone field accepted a connection from 203.0.113.5" in inbound[0].explanation
    outbound = run(flows=[fl("plc-s7", "internet", 443, "https")])
    assert found(outbound) == {("OTSEC-EXTERNAL-001", "plc-s7", IP["internet"])}
    assert "plc-s7 in OT zone field opened a connection to 203.0.113.5" in outbound[0].explanation
    guessed = run(flows=[_unknown_opener(fl("internet", "plc-s7", 5555, "unknown"))])
    assert found(guessed) == {("OTSEC-EXTERNAL-001", IP["internet"], "plc-s7")}
    assert "exchanged traffic (handshake not seen, opener unknown) with 203.0.113.5" in guessed[0].explanation


def test_external_host_writing_to_a_plc_is_also_an_unsafe_operation():
    out = run([ev("internet", "plc-modbus", "modbus", "Write Single Register", "write", fc=6, targets=[hr(150, 1)])],
              [fl("internet", "plc-modbus", 502, "modbus", events=1)])
    assert found(out) == {("OTSEC-EXTERNAL-001", IP["internet"], "plc-modbus"),
                          ("OTSEC-UNSAFE-001", IP["internet"], "plc-modbus")}


# --- memoised verdicts follow a policy reload ------------------------------------------

def test_set_policy_forgets_the_verdicts_of_the_old_policy():
    c = Checker(POLICY)
    read = ev("corp-pc", "plc-modbus", "modbus", "Read Coils", "read", fc=1)
    c.on_event(read)
    opened = add_conduit("  - name: ent-to-field\n    zones: [enterprise, field]\n    initiator: enterprise\n"
                         "    allow:\n      - {protocol: modbus, ports: [502], operations: [read]}\n")
    c.set_policy(opened)
    c.on_event(dataclasses.replace(read, packet=2, ts=2.0))
    out = c.finish()
    assert [(f.rule_id, f.count) for f in out] == [("OTSEC-CONDUIT-001", 1)]


def test_an_asset_declared_by_mac_alone_is_recognised_by_its_mac():
    from otsec.policy.loader import parse_policy

    policy = parse_policy("""
zones:
  - {name: cell, level: 1, cidrs: [10.5.0.0/24]}
assets:
  - {name: dhcp-plc, mac: "00:80:F4:00:00:07", zone: cell, role: plc}
conduits: []
""", "p.yaml")
    assert policy.locate("10.5.0.9", "00:80:f4:00:00:07").asset.name == "dhcp-plc"
    assert policy.locate("10.5.0.9", "00:80:f4:00:00:08").asset is None
    assert policy.locate("10.5.0.9").zone.name == "cell"
