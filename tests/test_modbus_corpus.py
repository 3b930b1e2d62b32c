"""Modbus decoding of real captures through the engine, compared with tshark 4.0.

The truth files count one record per ADU tshark dissected, per masked function code:
``req`` (sent to port 502), ``resp`` (from 502, no exception code) and
``exception_resp`` (from 502 with an exception code; an exception to FC 0 is counted
under "0"). Bytes tshark flags as retransmitted are never dissected by it.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest

from otsec.decoders import modbus as mb
from otsec.engine import collect
from tests.corpus import CORPUS_DIR, capture, captures, truth

pytestmark = pytest.mark.corpus

#: Per file: {function code: (requests, responses, exceptions) otsec counts minus tshark's}.
#: Every entry was checked packet by packet; the reason says whose view is right.
KNOWN_DIFFERENCES: dict[str, tuple[dict[str, tuple[int, int, int]], str]] = {
    "modbus/quickdraw_modbus_part1.pcap": (
        {"42": (0, 1, 0)},
        "packet 111 carries 3 bytes after its 11-byte ADU; tshark prepends them to packet "
        "113's ADU, reads a bad header and skips it; otsec resynchronises and decodes it"),
    "modbus/quickdraw_modbus_part2_funcsweep.pcap": (
        {"0": (-1, 0, 0)},
        "packet 6, the first ADU of the connection, has FC 0: the probe refuses FC 0 at a "
        "stream start by design, so detection starts at the next ADU"),
    "modbus/zeek_modbus_fuzz72.pcap": (
        {"34": (1, 0, 0)},
        "packet 6 carries 2 bytes after its ADU; tshark prepends them to packet 7, reads "
        "length 0 and skips the FC 34 request; otsec resynchronises"),
    "mixed/iti_mb2_modbus_s7_enip.pcap": (
        {"4": (4, 2, 0), "2": (0, 1, 0)},
        "packet 1131: tshark calls it a retransmission but 48 of its 60 bytes are new "
        "(FC 4 requests, transaction ids 22506-22509), +4 req; packet 13176: retransmission "
        "whose original was never captured (FC 4 tid 9824, FC 2 tid 9825 responses), +1/+1 "
        "resp; packet 3674 (FIN) retransmits server bytes 371-670 whose first 13 bytes (the "
        "FC 4 response to tid 22505) were never captured before: otsec decodes it from the "
        "retransmission, tshark does not re-dissect retransmitted bytes, +1 resp"),
}

KINDS = ("req", "resp", "exception_resp")


def _kind(ev) -> str:
    if ev.kind == "request":
        return "req"
    return "exception_resp" if ev.result == "exception" else "resp"


def _counts(events) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for ev in events:
        counts[str(ev.function_code)][KINDS.index(_kind(ev))] += 1
    return dict(counts)


@pytest.fixture(scope="module")
def results():
    """One engine run per capture, shared by the tests of this module."""
    cache: dict[Path, list] = {}

    def get(path: Path):
        if path not in cache:
            cache[path] = [e for e in collect([path]).events if e.protocol == "modbus"]
        return cache[path]
    return get


@pytest.mark.parametrize("path", captures("modbus", "mixed"))
def test_function_code_counts_match_tshark(path, results):
    events = results(path)
    expected_truth = truth(path)["protocols"].get("modbus", {"func_codes": {}, "pdus": 0})
    expected = {fc: [c[k] for k in KINDS] for fc, c in expected_truth["func_codes"].items()}
    delta, _reason = KNOWN_DIFFERENCES.get(str(path.relative_to(CORPUS_DIR)), ({}, ""))
    for fc, d in delta.items():
        expected[fc] = [a + b for a, b in zip(expected.get(fc, [0, 0, 0]), d)]
    expected = {fc: c for fc, c in expected.items() if any(c)}
    assert _counts(events) == expected
    assert len(events) == expected_truth["pdus"] + sum(sum(d) for d in delta.values())


@pytest.mark.parametrize("path", captures("modbus", "mixed"))
def test_exception_codes_match_tshark(path, results):
    got = collections.Counter(str(e.detail["exception_code"]) for e in results(path)
                              if e.result == "exception")
    want = {k: v["count"] for k, v in truth(path)["protocols"].get("modbus", {})
            .get("exception_codes", {}).items()}
    assert dict(got) == want


@pytest.mark.parametrize("rel", ["modbus/iti_modbustcp_multi_adu.pcap",
                                 "mixed/iti_mb2_modbus_s7_enip.pcap",
                                 "mixed/agentcarter_plant_modbus_s7_profinet.pcapng",
                                 "modbus/zeek_modbus_and_nonmodbus_p502.pcap"])
def test_clean_production_traffic_raises_no_decoder_flags(rel, results):
    flags = collections.Counter(a for e in results(capture(rel)) for a in e.anomalies
                                if a.startswith("modbus.") and a != "modbus.unpaired_response")
    assert flags == {}


def test_device_identification_strings_become_identity(results):
    path = capture("modbus/icsnpp_modbus_example.pcap")
    ids = [e.identity for e in results(path) if e.identity and e.function_code == mb.MEI_FC]
    assert ids == [{"vendor": "Zeek Modbus Test", "product_code": "Protocol Parsing is fun!",
                    "revision": "1.2.3.6"}]
    assert set(ids[0].values()) == set(truth(path)["protocols"]["modbus"]["device_id_strings"])


def test_umas_session_is_classified(results):
    events = results(capture("modbus/iti_modicon_umas.pcap"))
    ops = collections.Counter((e.kind, e.detail["umas_function"], e.op_class) for e in events)
    assert ops[("request", "DOWNLOAD_BLOCK", "program")] == 53
    assert ops[("response", "DOWNLOAD_BLOCK", "program")] == 53   # code taken from the request
    assert ops[("request", "INITIALIZE_DOWNLOAD", "program")] == 1
    assert ops[("request", "READ_ID", "identify")] == 2
    assert all(e.detail["umas_function"].isupper() and "UNKNOWN" not in e.detail["umas_function"]
               for e in events)
    assert collections.Counter(a for e in events for a in e.anomalies) == {mb.A_OVERSIZED: 2}


def test_diagnostics_restart_and_listen_only_are_control(results):
    events = results(capture("modbus/quickdraw_modbus_part1.pcap"))
    subs = collections.Counter((e.detail.get("sub_function"), e.op_class)
                               for e in events if e.kind == "request" and e.function_code == 8)
    assert subs == {(4, "control"): 3, (1, "control"): 3, (10, "diagnostic"): 2}


# --- per-PDU differential against tshark (via pyshark) ------------------------------

#: tshark field → otsec detail key, per message kind.
FIELD_MAP = {
    "reference_num": ("start", "fifo_address"),
    "word_cnt": ("quantity", "fifo_count"),
    "bit_cnt": ("quantity",),
    "byte_cnt": ("byte_count",),
    "exception_code": ("exception_code",),
    "read_reference_num": ("read_start",),
    "read_word_cnt": ("read_quantity",),
    "write_reference_num": ("write_start",),
    "write_word_cnt": ("write_quantity",),
    "diagnostic_code": ("sub_function",),
    "mei": ("mei_type",),
    "read_device_id": ("read_device_id",),
}


def _tshark_pdus(path: Path) -> dict:
    pyshark = pytest.importorskip("pyshark")
    pdus = {}
    cap = pyshark.FileCapture(str(path), display_filter="mbtcp", keep_packets=False)
    try:
        for pkt in cap:
            for head, body in zip(pkt.get_multiple_layers("mbtcp"), pkt.get_multiple_layers("modbus")):
                key = (int(pkt.number), int(head.get_field("trans_id")), int(head.get_field("unit_id")))
                fields = {name: int(body.get_field(name)) for name in FIELD_MAP
                          if body.get_field(name) is not None}
                fields["func_code"] = int(body.get_field("func_code"))
                pdus[key] = fields
    finally:
        cap.close()
    return pdus


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("rel", ["modbus/icsnpp_modbus_example.pcap", "modbus/zeek_modbus_eit_devid.pcap"])
def test_per_pdu_fields_match_tshark(rel, results):
    path = capture(rel)
    ours = {(e.packet, e.detail["transaction_id"], e.detail["unit_id"]): e for e in results(path)}
    theirs = _tshark_pdus(path)
    assert sorted(ours) == sorted(theirs)
    compared = 0
    for key, fields in theirs.items():
        ev = ours[key]
        assert ev.function_code == fields.pop("func_code"), key
        for name, value in fields.items():
            got = [ev.detail[k] for k in FIELD_MAP[name] if k in ev.detail]
            assert got and got[0] == value, (key, name, value, ev.detail)
            compared += 1
    assert compared >= len(theirs)   # most PDUs carry at least one compared field
