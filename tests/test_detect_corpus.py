"""Detections on real public captures, cross-checked with the tshark ground truth:
a real Modbus function-code sweep, a real S7 PLC stop and block download, a real OPC UA
method call over a SecurityPolicy#None channel."""

from __future__ import annotations

import textwrap

from otsec.detect.checker import Checker
from otsec.engine import analyze
from otsec.policy.loader import parse_policy
from tests.corpus import capture, truth

#: Everything in one level-1 zone and nothing declared: every unsafe operation is unauthorised.
ONE_ZONE = parse_policy("zones:\n  - {name: plant, level: 1, cidrs: [0.0.0.0/0]}\n", "one.yaml")


def check(path, policy=ONE_ZONE):
    c = Checker(policy)
    analyze([path], c.on_event, c.on_flow)
    return c.finish()


def by_rule(findings, rule):
    return [f for f in findings if f.rule_id == rule]


def test_real_modbus_function_code_sweep():
    path = capture("modbus/quickdraw_modbus_part2_funcsweep.pcap")
    fcs = truth(path)["protocols"]["modbus"]["func_codes"]
    rejected = {int(fc) for fc, v in fcs.items() if v["exception_resp"]}
    (sweep,) = by_rule(check(path), "OTSEC-ANOMALY-003")
    assert (sweep.src.ip, sweep.dst.ip) == ("192.168.66.235", "166.161.16.230")
    assert {int(fc) for fc in sweep.samples["function_code"]} <= rejected
    assert 5 <= sweep.count <= sum(v["exception_resp"] for v in fcs.values())


def test_real_s7_plc_stop_is_unauthorised_control():
    path = capture("s7comm/iti_step7_s300_stop.pcapng")
    stops = truth(path)["protocols"]["s7comm"]["job_functions"]["0x29"]["count"]
    (f,) = by_rule(check(path), "OTSEC-UNSAFE-003")
    assert f.count == stops and f.samples["function"] == {"PLC Stop": stops}
    assert (f.src.ip, f.dst.ip) == ("134.249.62.199", "134.249.61.163")   # station -> PLC


def test_real_s7_download_is_one_program_finding_of_the_station():
    path = capture("s7comm/iti_s7comm_download_block_db1.pcap")
    (f,) = by_rule(check(path), "OTSEC-UNSAFE-002")
    # the PLC sends the "Download block" jobs, but the download belongs to the station's connection
    assert (f.src.ip, f.dst.ip) == ("192.168.1.10", "192.168.1.40")
    assert {"Request download", "Download block", "Download ended"} <= set(f.samples["function"])


def test_real_opcua_call_on_an_unencrypted_channel():
    path = capture("opcua/iti_opcua_method_call.pcap")
    t = truth(path)["protocols"]["opcua"]
    calls = t["services"]["712"]["count"]
    assert set(t["opn_security_policies"]) == {"http://opcfoundation.org/UA/SecurityPolicy#None"}
    policy = parse_policy(textwrap.dedent("""\
        zones:
          - {name: ops, level: 3, cidrs: [192.168.41.176/32]}
          - {name: field, level: 1, cidrs: [192.168.41.212/32]}
        conduits:
          - name: ops-to-field
            zones: [ops, field]
            initiator: ops
            allow:
              - protocol: opcua
                operations: [read, identify]
                require: {opcua_security_mode: SignAndEncrypt}
        """), "p.yaml")
    findings = check(path, policy)
    (insecure,) = by_rule(findings, "OTSEC-INSECURE-001")
    assert insecure.samples["security_mode"].keys() == {"None"}
    (call,) = by_rule(findings, "OTSEC-UNSAFE-003")
    assert call.count == calls and (call.src.ip, call.dst.ip) == ("192.168.41.176", "192.168.41.212")
    (conduit,) = by_rule(findings, "OTSEC-CONDUIT-005")
    assert conduit.samples["function"] == {"Call (control)": calls}
