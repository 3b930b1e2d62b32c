"""S7comm / S7comm-plus events from real captures, counted against the tshark truth."""

from __future__ import annotations

import shutil
from collections import Counter
from functools import lru_cache

import pytest

from otsec.engine import collect
from tests.corpus import capture, captures, truth


@lru_cache(maxsize=None)
def _events(path):
    return tuple(collect([path]).events)


def s7_counts(events) -> dict[str, Counter]:
    """Our S7comm events counted the way tshark_truth.py counts S7comm PDUs."""
    c = {k: Counter() for k in ("rosctr", "job", "ack_data", "userdata", "errors")}
    for ev in events:
        if ev.protocol != "s7comm" or "rosctr" not in ev.detail:
            continue
        d = ev.detail
        c["rosctr"][d["rosctr"]] += 1
        if d["rosctr"] == 1 and ev.function_code is not None:
            c["job"][ev.function_code] += 1
        elif d["rosctr"] == 3 and d["param_length"] and ev.function_code is not None:
            c["ack_data"][ev.function_code] += 1
        elif d["rosctr"] == 7:
            c["userdata"][(d["funcgroup"], d.get("subfunc"), d["type"].lower())] += 1
        if d.get("error_class"):
            c["errors"][(d["error_class"], d["error_code"])] += 1
    return c


def s7_truth(t: dict) -> dict[str, Counter]:
    c = {k: Counter() for k in ("rosctr", "job", "ack_data", "userdata", "errors")}
    s = t["protocols"].get("s7comm")
    if s:
        c["rosctr"].update({int(k): v["count"] for k, v in s["rosctr"].items()})
        c["job"].update({int(k, 16): v["count"] for k, v in s["job_functions"].items()})
        c["ack_data"].update({int(k, 16): v["count"] for k, v in s["ack_data_functions"].items()})
        for u in s["userdata"]:
            c["userdata"][(u["funcgroup"], u["subfunc"], u["type"])] += u["count"]
        for h in s["header_errors"]:
            c["errors"][(int(h["errcls"], 16), int(h["errcod"], 16))] += h["count"]
    return c


def plus_counts(events) -> dict[str, Counter]:
    """S7comm-plus: every 0x72 frame counts as a PDU type (continuations included, as the
    truth does); opcodes/functions only for PDUs with a parsed header."""
    c = {k: Counter() for k in ("pdu_types", "opcodes", "functions")}
    for ev in events:
        if ev.protocol != "s7comm-plus":
            continue
        d = ev.detail
        c["pdu_types"][d["pdu_type"]] += 1 + d.get("continuation_fragments", 0)
        if "opcode" in d:
            c["opcodes"][d["opcode"]] += 1
            if d["opcode"] != 0x33 and ev.function_code is not None:
                c["functions"][(d["opcode"], ev.function_code)] += 1
    return c


def plus_truth(t: dict) -> dict[str, Counter]:
    c = {k: Counter() for k in ("pdu_types", "opcodes", "functions")}
    s = t["protocols"].get("s7commplus")
    if s:
        c["pdu_types"].update({int(k, 16): v["count"] for k, v in s["pdu_types"].items()})
        c["opcodes"].update({int(k, 16): v["count"] for k, v in s["opcodes"].items()})
        for f in s["functions"]:
            c["functions"][(int(f["opcode"], 16), int(f["function"], 16))] += f["count"]
    return c


CORPUS = captures("s7comm", "s7commplus", "mixed")

@pytest.mark.parametrize("path", CORPUS)
def test_s7comm_counts_match_tshark(path):
    assert s7_counts(_events(path)) == s7_truth(truth(path))


@pytest.mark.parametrize("path", CORPUS)
def test_s7comm_plus_counts_match_truth(path):
    assert plus_counts(_events(path)) == plus_truth(truth(path))


@pytest.mark.parametrize("path", CORPUS)
def test_no_decoder_anomalies_on_real_captures(path):
    """The decoder flags nothing on real traffic. ``*.unpaired_response`` is the flow layer's
    and expected where the capture lost the request (wincc, authpassword: lost segments)."""
    anomalies = Counter(a for ev in _events(path) if ev.protocol in ("s7comm", "s7comm-plus", "cotp")
                        for a in ev.anomalies if not a.endswith(".unpaired_response"))
    assert not anomalies


def test_unpaired_responses_only_where_requests_were_lost():
    for rel in ("s7comm/icsnpp_snap7_s300_everything.pcap", "s7comm/iti_s7comm_download_block_db1.pcap",
                "s7commplus/iti_s7-1200_upload_ob1_tiav12.pcap"):
        events = _events(capture(rel))
        assert not [a for ev in events for a in ev.anomalies], rel


def test_rdp_tpkt_is_not_s7():
    path = capture("it/zeek_rdp_proprietary_encryption.pcap")
    events = _events(path)
    assert not [ev for ev in events if ev.protocol in ("s7comm", "s7comm-plus", "cotp")]


def test_cotp_connects_match_tshark():
    path = capture("s7commplus/iti_v13_1200_tp1200_timer_sync.pcapng")
    cotp = Counter(ev.function for ev in _events(path) if ev.protocol == "cotp")
    assert cotp == {"Connection Request": 2, "Connection Confirm": 2}
    tsaps = {ev.detail["dst_tsap"].get("text") for ev in _events(path) if ev.protocol == "cotp"}
    assert tsaps == {"SIMATIC-ROOT-HMI"}


def test_stop_start_is_recognised_in_v3():
    path = capture("s7commplus/agentcarter_s71200_online_stop_start.pcapng")
    controls = [ev.detail["cpu_state_request"] for ev in _events(path) if ev.op_class == "control"]
    assert controls == ["STOP", "RUN"]


def test_identity_from_szl():
    path = capture("s7comm/icsnpp_s7ident.pcap")
    ids = [ev.identity for ev in _events(path) if ev.identity]
    assert {"vendor": "Siemens", "order_number": "6ES7 315-2EH14-0AB0", "firmware": "V3.2.6"} in ids
    assert any(i.get("serial_number") == "S C-C2UR28922012" for i in ids)


def test_responses_pair_with_requests():
    path = capture("s7comm/icsnpp_snap7_s300_everything.pcap")
    responses = [ev for ev in _events(path) if ev.kind == "response"]
    assert responses and all(ev.request_packet is not None for ev in responses)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_differential_pyshark_pdu_refs_and_functions():
    """Per-packet comparison with tshark (via pyshark) on a small capture."""
    pyshark = pytest.importorskip("pyshark")
    path = capture("s7comm/iti_libnodave_varservice.pcap")
    cap = pyshark.FileCapture(str(path), display_filter="s7comm")
    try:
        theirs = sorted((int(p.number), int(p.s7comm.header_pduref), int(p.s7comm.header_rosctr))
                        for p in cap)
    finally:
        cap.close()
    ours = sorted((ev.packet, ev.detail["pdu_ref"], ev.detail["rosctr"])
                  for ev in _events(path) if ev.protocol == "s7comm")
    assert ours == theirs
