"""`policy init` drafting on hand-built traffic: zones per /24, roles from behaviour,
conduits from cross-zone traffic, shared (router) MACs left out, always valid."""

from __future__ import annotations

import yaml

from otsec.policy.draft import Drafter
from otsec.policy.loader import parse_policy
from tests.detect_helpers import ev, fl


def draft(events=(), flows=()):
    d = Drafter()
    for e in events:
        d.on_event(e)
    for f in flows:
        d.on_flow(f)
    text = d.draft(["t.pcap"])
    return text, yaml.safe_load(text)


def test_roles_levels_and_conduits():
    text, doc = draft(
        [ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", src_mac="00:0e:8c:28:00:0a"),
         ev("eng-ws", "plc-s7", "s7comm", "PLC Stop", "control"),
         ev("historian", "opcua-server", "opcua", "Read", "read")],
        [fl("jump-host", "eng-ws", 3389, "rdp"), fl("plc-modbus", "internet", 443, "https")])
    policy = parse_policy(text, "draft.yaml")        # a draft always validates
    roles = {a["ip"]: a["role"] for a in doc["assets"]}
    assert roles == {"10.20.0.10": "workstation", "10.30.0.20": "historian", "10.30.0.30": "engineering_workstation",
                     "10.40.0.10": "hmi", "10.50.0.20": "plc", "10.50.0.30": "plc", "10.50.0.40": "opcua_server"}
    levels = {z["cidrs"][0]: z["level"] for z in doc["zones"]}
    assert levels == {"10.20.0.0/24": 4, "10.30.0.0/24": 3, "10.40.0.0/24": 2, "10.50.0.0/24": 1}
    assert "203.0.113" not in text                    # the internet is not drafted as a zone
    hmi = policy.conduit_between("zone-10-40-0-0", "zone-10-50-0-0")
    (rule,) = hmi.allow
    assert (hmi.initiator, rule.protocol, rule.ports, rule.operations) == ("zone-10-40-0-0", "modbus", (502,), ("read",))
    assert rule.sources == ("hmi-10-40-0-10",) and rule.destinations == ("plc-10-50-0-20",)
    rdp = policy.conduit_between("zone-10-20-0-0", "zone-10-30-0-0").allow[0]
    assert (rdp.protocol, rdp.operations) == ("rdp", ())


def test_shared_mac_is_left_out_and_both_directions_make_initiator_both():
    _, doc = draft([ev("hmi-1", "plc-modbus", "modbus", "Read Coils", "read", src_mac="00:00:5e:00:01:01"),
                    ev("eng-ws", "plc-modbus", "modbus", "Read Coils", "read", src_mac="00:00:5e:00:01:01"),
                    ev("plc-s7", "hmi-1", "modbus", "Read Coils", "read")])
    assert all("mac" not in a for a in doc["assets"] if a["ip"] in ("10.40.0.10", "10.30.0.30"))
    c = next(c for c in doc["conduits"] if set(c["zones"]) == {"zone-10-40-0-0", "zone-10-50-0-0"})
    assert c["initiator"] == "both"


def test_empty_traffic_gives_a_valid_empty_draft():
    text, doc = draft()
    assert doc["zones"] == [] and doc["conduits"] == []
    parse_policy(text, "draft.yaml")


def test_icmp_between_zones_drafts_a_rule_without_ports():
    """ICMP has no ports (the flow's port is 0): the drafted rule names the protocol only,
    and the draft validates (it used to say 'bad port 0')."""
    icmp = fl("hmi-1", "plc-modbus", 0, "unknown", transport="icmp")
    icmp.client_port = 0
    text, doc = draft([], [icmp])
    policy = parse_policy(text, "draft.yaml")
    (rule,) = policy.conduit_between("zone-10-40-0-0", "zone-10-50-0-0").allow
    assert (rule.protocol, rule.ports) == ("icmp", ())
    assert "ports" not in doc["conduits"][0]["allow"][0]
