"""S7 decoder (TPKT/COTP, S7comm, S7comm-plus) on byte literals, prefixes and fuzzed input."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.decoders import s7comm
from otsec.decoders.base import NEED_MORE, UNFRAMEABLE
from otsec.model import OP_CLASSES, Target

D = s7comm.DECODER


def tpkt(payload: bytes, eot: bool = True) -> bytes:
    """TPKT v3 + COTP DT (LI 2, code 0xF0, EOT flag) around ``payload``."""
    return struct.pack(">BBH", 3, 0, 7 + len(payload)) + bytes([2, 0xF0, 0x80 if eot else 0]) + payload


def one(msg: bytes, from_client: bool = True, state=None):
    events = D.decode(msg, from_client, state if state is not None else D.new_state())
    assert len(events) == 1, events
    return events[0]


# COTP CR: TPKT len 22 | LI 17, CR 0xE0, dst-ref 0, src-ref 1, class 0 |
# C0 01 0A (TPDU 1024) | C1 02 0100 (calling TSAP) | C2 02 0102 (called: PG, rack 0, slot 2)
COTP_CR = bytes.fromhex("03000016" "11e0" "0000" "0001" "00" "c0010a" "c1020100" "c2020102")
# Setup communication: job, pduref 0, param 8: F0 00 | amq 1 | amq 1 | PDU 480
SETUP = tpkt(bytes.fromhex("32010000000000080000" "f000" "0001" "0001" "01e0"))
# Read Var DB10.DBB0, 20 bytes: job pduref 0x0100 | 04 01 | 12 0a 10 BYTE(02) count 20 DB10 area 84 addr 0
READ_REQ = tpkt(bytes.fromhex("320100000100000e0000" "0401" "120a10020014000a84000000"))
# Ack_Data pduref 0x0100, no error | 04 01 | item: ff (success) 04 (BYTE/WORD) 00a0 (160 bits) + 20 bytes
READ_RESP = tpkt(bytes.fromhex("320300000100000200180000" "0401" "ff0400a0") + bytes(range(20)))
# Write Var DB10.DBW4: 05 01 | 12 0a 10 WORD(04) count 1 DB10 area 84 addr 4<<3 | data 00 04 0010 1234
WRITE_REQ = tpkt(bytes.fromhex("320100000200000e0006" "0501" "120a10040001000a84000020" "0004" "0010" "1234"))
# PLC Stop: job pduref 0x3500 | 29 + 5 unknown bytes | 09 "P_PROGRAM"
PLC_STOP = tpkt(bytes.fromhex("32010000350000100000" "29" "0000000000" "09") + b"P_PROGRAM")
# Request download of DB1 (STEP 7): 1A status 00 | 0100 | 00000000 | 09 "_0A00001P" | length part
DOWNLOAD = tpkt(bytes.fromhex("320100000e0000200000" "1a00" "0100" "00000000" "09")
                + b"_0A00001P" + bytes.fromhex("0d") + b"1000500000400")
# Userdata Read SZL response (icsnpp s7ident frame 11): SZL 0x0011 with 4 records
SZL_RESP = tpkt(bytes.fromhex(
    "320700000100000c007c000112081284010000000000ff09007800110000001c0004"
    "000136455337203331352d32454831342d304142302000c00004000100063645533720"
    "3331352d32454831342d304142302000c000040001000720202020202020202020202020"
    "2020202020202000c0560302060081426f6f74204c6f616465722020202020202020200000"
    "41200909"))
# Userdata Set clock request (snap7 frame 47): group 7 subfunction 2, BCD time in data
SET_CLOCK = tpkt(bytes.fromhex("3207000017000008000e0001120411470200ff09000a00191602082308100002"))
# Userdata PLC password request (STEP 7): group 5 subfunction 1, 8 obfuscated bytes
PASSWORD = tpkt(bytes.fromhex("3207000006000008000c0001120411450100ff090008213a1b1d6e681b1d"))
# S7comm-plus V3 SetVariable on object 0x34 attribute 2167 value 1 (CPU to STOP)
PLUS_STOP = tpkt(bytes.fromhex(
    "720300562055f3c3a2762bea7b89f5d378cafa9dbbdb91b347e4205804c29f41d14a824c54"
    "31000004f20000003a000003943400000034019077000801000004e88969001200000000"
    "896a001300896b00040000000e0000000072030000"))
# S7comm-plus V1 CreateObject response (session creation) carrying the order number + firmware
PLUS_SESSION = tpkt(bytes.fromhex(
    "7201007a32000004ca00000001361102873e8723a100000120821f0000a381690015"
    "00a3823200170000013a823b00048200823c00048140823d00048480c040823e0004"
    "8480c040823f00151b313b36455337203231312d31424533312d30584230203b56332e"
    "308240001505323b32383882410003000300a20000000072010000"))

# Userdata "Modify variable" request (programmer commands, group 1 subfunction 8), as a
# STEP 7 variable table sends it: param 0x000112 len 8 method 0x12 | type 4 group 1 | sub 8 |
# seq 0 | dunit 0 | last 0 | error 0; data rc 0xff, size 0x09, length 34 |
# TIS param size 4, data size 26 | 4 param bytes | item count 2 |
# MW (0x02) x1, DB 0, start 4 | DBB (0x71) x2, DB 5, start 10 |
# data item rc 0, size 9, len 2, 0xdead | data item rc 0, size 9, len 2, 0xbeef
MODIFY_VAR = tpkt(bytes.fromhex(
    "32070000aa01000c0026" "000112081241080000000000" "ff090022"
    "0004001a" "00000001" "0002" "020100000004" "71020005000a"
    "00090002dead" "00090002beef"))
# Userdata "Change driven transfer" subscription (group 2 subfunction 5): data rc 0xff,
# size 9, length 16 | item count 1 | timebase 1, factor 2 | S7ANY item DB7.DBB 20 BYTE 4
CYCLIC_SUB = tpkt(bytes.fromhex(
    "3207000055010008" "0014" "0001120411420500" "ff090010"
    "0001" "0102" "120a100200040007840000a0"))

ALL_MESSAGES = [COTP_CR, SETUP, READ_REQ, READ_RESP, WRITE_REQ, PLC_STOP, DOWNLOAD, SZL_RESP,
                SET_CLOCK, PASSWORD, PLUS_STOP, PLUS_SESSION, MODIFY_VAR, CYCLIC_SUB]


def test_modify_variable_is_a_write_with_area_targets():
    ev = one(MODIFY_VAR)
    assert (ev.kind, ev.function, ev.op_class) == ("request", "Modify variable", "write")
    assert ev.targets == [Target(kind="area", area="M", start=4, count=2),
                          Target(kind="area", area="DB", db=5, start=10, count=2)]
    assert [v["value"] for v in ev.detail["values"]] == ["dead", "beef"]


def test_cyclic_subscription_targets_its_items():
    ev = one(CYCLIC_SUB)
    assert (ev.function, ev.op_class, ev.detail["item_count"]) == ("Change driven transfer", "read", 1)
    assert ev.targets == [Target(kind="area", area="DB", db=7, start=20, count=4)]


def test_cotp_connect_request_tsaps_and_rack_slot():
    assert D.probe(COTP_CR, 0) and D.frame(COTP_CR, 0) == len(COTP_CR)
    ev = one(COTP_CR)
    assert (ev.protocol, ev.kind, ev.function, ev.op_class) == (
        "cotp", "request", "Connection Request", "session")
    assert ev.detail["src_tsap"]["hex"] == "0100"
    assert ev.detail["dst_tsap"]["hex"] == "0102"
    assert (ev.detail["rack"], ev.detail["slot"], ev.detail["tpdu_size"]) == (0, 2, 1024)
    assert ev.anomalies == []


def test_setup_communication():
    ev = one(SETUP)
    assert (ev.protocol, ev.kind, ev.function, ev.function_code, ev.op_class) == (
        "s7comm", "request", "Setup communication", 0xF0, "session")
    assert ev.detail["pdu_length"] == 480 and ev.detail["max_amq_calling"] == 1


def test_read_var_request_and_response_pair():
    state = D.new_state()
    req = one(READ_REQ, True, state)
    assert (req.function, req.op_class, req.kind) == ("Read Var", "read", "request")
    assert req.targets == [Target(kind="area", area="DB", db=10, start=0, count=20)]
    assert req.detail["items"][0]["area_name"] == "Data blocks (DB)"
    resp = one(READ_RESP, False, state)
    assert (resp.kind, resp.result, resp.function) == ("response", "ok", "Read Var")
    assert resp.pair_key == req.pair_key
    assert resp.detail["item_return_codes"] == ["Success"]
    assert resp.targets == req.targets


def test_read_var_failed_item_is_an_error():
    bad = tpkt(bytes.fromhex("320300000100000200040000" "0401" "0a000000"))
    ev = one(bad, False)
    assert ev.result == "error" and ev.status == "Object does not exist (0x0a)"


def test_write_var_target_and_bounded_value():
    ev = one(WRITE_REQ)
    assert (ev.function, ev.op_class) == ("Write Var", "write")
    assert ev.targets == [Target(kind="area", area="DB", db=10, start=4, count=2)]
    assert ev.detail["values"] == [{"return_code": 0, "transport_size": 4, "length": 2, "value": "1234"}]


def test_plc_stop_is_control_with_pi_target():
    ev = one(PLC_STOP)
    assert (ev.function, ev.function_code, ev.op_class) == ("PLC Stop", 0x29, "control")
    assert ev.targets == [Target(kind="pi_service", name="P_PROGRAM")]


def test_request_download_block_target():
    ev = one(DOWNLOAD)
    assert (ev.function, ev.op_class) == ("Request download", "program")
    assert ev.targets == [Target(kind="block", name="DB1")]
    assert ev.detail["block_type"] == "DB" and ev.detail["block_number"] == 1


def test_pi_service_insert_block_is_program():
    # PI _INSE with one block "0A00001P" (STEP 7 download, frame 58)
    msg = tpkt(bytes.fromhex("320100000f00001a0000" "28000000000000fd" "000a" "0100" "3041303030303150"
                             "05") + b"_INSE")
    ev = one(msg)
    assert (ev.function, ev.op_class) == ("PI-Service", "program")
    assert ev.targets == [Target(kind="pi_service", name="_INSE"), Target(kind="block", name="DB1")]


def test_szl_response_identity():
    ev = one(SZL_RESP, False)
    assert (ev.function, ev.kind, ev.result, ev.op_class) == ("Read SZL", "response", "ok", "identify")
    assert ev.identity == {"vendor": "Siemens", "order_number": "6ES7 315-2EH14-0AB0",
                           "firmware": "V3.2.6"}
    assert ev.detail["szl_id"] == 0x0011


def test_set_clock_is_control():
    ev = one(SET_CLOCK)
    assert (ev.function, ev.op_class, ev.kind, ev.function_code) == (
        "Set clock", "control", "request", 0x0702)
    assert ev.detail["group_name"] == "Time functions"


def test_password_attempt_is_session_and_not_stored():
    ev = one(PASSWORD)
    assert (ev.function, ev.op_class) == ("PLC password", "session")
    assert ev.detail["password_attempt"] is True
    assert "213a1b1d" not in repr(ev.to_dict())


def test_header_error_status_uses_wireshark_names():
    ack = tpkt(bytes.fromhex("320200000600000000008104"))
    ev = one(ack, False)
    assert ev.result == "error"
    assert ev.status == ("Application relationship (0x81): This service is not implemented on "
                         "the module or a frame error was reported (0x8104)")


@pytest.mark.parametrize("errcls,errcod,status", [
    (0x82, 0x05, "Object definition (0x82): A copied block already exists and is not linked "
                 "(0x8205)"),
    (0x83, 0x04, "No resources available (0x83): No further parallel upload possible. There "
                 "is a resource bottleneck (0x8304)"),
    (0x84, 0x05, "Error on service processing (0x84): Remote block is in DISABLE state (CFB). "
                 "The function cannot be performed (0x8405)"),
    (0x85, 0x03, "Error on supplies (0x85): Alarm from the module: Service canceled prematurely "
                 "(0x8503)"),
    (0x87, 0x02, "Access error (0x87): The requested service is not supported by the module "
                 "(0x8702)"),
    # classes Wireshark's header field does not name still have named combined codes
    (0x01, 0x20, "Unknown error class (0x01): End of block list (0x0120)"),
    (0xD0, 0xC2, "Unknown error class (0xd0): Change to STOP/HOLD mode (0xd0c2)"),
    (0xD2, 0x16, "Unknown error class (0xd2): Invalid user program - reset module (0xd216)"),
    (0xEF, 0x02, "Unknown error class (0xef): S7 protocol error: Error at ID2; set of resources "
                 "does not exist (0xef02)"),
    # a code Wireshark does not name keeps its number
    (0x81, 0x99, "Application relationship (0x81): Unknown error code (0x8199)"),
], ids=lambda v: "%02x" % v if isinstance(v, int) else None)
def test_header_error_codes_across_classes_are_named_like_wireshark(errcls, errcod, status):
    # Ack: 32 | ROSCTR 2 | redundancy 0000 | pduref 0600 | param len 0 | data len 0 | class | code
    ev = one(tpkt(bytes.fromhex("32020000060000000000") + bytes([errcls, errcod])), False)
    assert (ev.result, ev.status) == ("error", status)
    assert (ev.detail["error_class"], ev.detail["error_code"]) == (errcls, errcod)


def test_userdata_parameter_error_code_is_named_like_wireshark():
    # Userdata response to the PLC password request: header 32 07 0000 0600, param len 12,
    # data len 4 | param 000112 len 8, method 0x12 (response), type 8 group 5, subfunction 1,
    # seq 0, data unit ref 0, last unit 0, error 0xD603 | data rc 0x0a, size 0, length 0
    ev = one(tpkt(bytes.fromhex("32070000060000" "0c0004" "0001120812850100" "0000" "d603"
                                "0a000000")), False)
    assert (ev.function, ev.result) == ("PLC password", "error")
    assert ev.status == ("Unknown error class (0xd6): The connection has already been "
                         "legitimized (0xd603)")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_error_tables_are_wiresharks():
    """Every name the tshark build of the corpus truth gives these fields, and no other."""
    out = subprocess.run(["tshark", "-G", "values"], capture_output=True, text=True,
                         check=True).stdout

    def names(field: str) -> dict[int, str]:   # value-string rows: V <field> <value> <name>
        rows = (line.split("\t") for line in out.splitlines() if f"\t{field}\t" in line)
        return {int(r[2], 0): r[3] for r in rows if r[0] == "V"}

    codes = names("s7comm.param.errcod")
    assert len(codes) > 200 and s7comm.ERROR_CODE_NAMES == codes
    assert s7comm.ERROR_CLASS_NAMES == names("s7comm.header.errcls")


def test_cotp_reassembly_of_split_tsdu():
    payload = READ_RESP[7:]
    state = D.new_state()
    assert D.decode(tpkt(payload[:10], eot=False), False, state) == []
    ev = one(tpkt(payload[10:]), False, state)
    assert ev.function == "Read Var" and ev.anomalies == []


def test_cotp_reassembly_is_bounded():
    state = D.new_state()
    chunk = tpkt(b"\x32" + bytes(1000), eot=False)
    out = []
    for _ in range(s7comm.MAX_TSDU_FRAGMENTS + 1):
        out += D.decode(chunk, True, state)
    assert [e.anomalies for e in out] == [["cotp.reassembly_overflow"]]


def test_plus_cpu_stop_is_control():
    ev = one(PLUS_STOP)
    assert (ev.protocol, ev.function, ev.function_code, ev.op_class) == (
        "s7comm-plus", "SetVariable", 0x04F2, "control")
    assert ev.detail["cpu_state_request"] == "STOP"
    assert ev.detail["integrity"] is True and ev.detail["session_id"] == 0x394
    assert ev.targets == [Target(kind="variable", name="0x00000034.2167")]


def test_plus_session_response_identity():
    ev = one(PLUS_SESSION, False)
    assert (ev.function, ev.kind, ev.result) == ("CreateObject", "response", "ok")
    assert ev.identity == {"vendor": "Siemens", "order_number": "6ES7 211-1BE31-0XB0",
                           "firmware": "V3.0"}


def test_plus_fragments_reported_once_with_count():
    head = bytes.fromhex("72020010" "31000005420000000700000394")   # no trailer: 4 + 16 bytes
    head += bytes(20 - len(head))
    middle = bytes.fromhex("72020004") + bytes(4)
    last = bytes.fromhex("72020004") + bytes(4) + bytes.fromhex("72020000")
    state = D.new_state()
    assert D.decode(tpkt(head), True, state) == []
    assert D.decode(tpkt(middle), True, state) == []
    ev = one(tpkt(last), True, state)
    assert (ev.function, ev.op_class, ev.detail["continuation_fragments"]) == ("SetMultiVariables", "write", 2)


def test_unknown_cotp_payload_is_an_anomaly():
    ev = one(tpkt(b"\x7f\x65\x82\x01"))
    assert ev.anomalies == ["cotp.unknown_payload"]


def test_probe_rejects_rdp_and_random_tpkt():
    rdp_cr = bytes.fromhex("0300002f2ae00000000000436f6f6b69653a206d737473686173683d465442434f5c"
                           "4137300d0a0100080000000000")
    rdp_cc = bytes.fromhex("030000130ed000001234000300080002000000")
    mcs = tpkt(bytes.fromhex("7f658201"))
    for msg in (rdp_cr, rdp_cc, mcs):
        assert not D.probe(msg, 0)
    for msg in (COTP_CR, SETUP, READ_REQ, PLUS_STOP):
        assert D.probe(msg, 0)


def test_frame_rejects_non_tpkt():
    assert D.frame(b"\x04\x00\x00\x10" + bytes(12), 0) == UNFRAMEABLE
    assert D.frame(b"\x03\x00\x00\x03", 0) == UNFRAMEABLE


def test_every_proper_prefix_needs_more():
    for msg in ALL_MESSAGES:
        for cut in range(len(msg)):
            assert D.frame(msg[:cut], 0) == NEED_MORE, (msg.hex(), cut)
            D.probe(msg[:cut], 0)
            D.decode(msg[:cut], True, D.new_state())


def _check(events):
    for ev in events:
        assert ev.op_class in OP_CLASSES
        ev.to_dict()


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_random_bytes(data, from_client):
    D.probe(data, 0)
    D.frame(data, 0)
    _check(D.decode(data, from_client, D.new_state()))
    _check(D.decode(tpkt(data), from_client, D.new_state()))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_MESSAGES), st.data())
def test_fuzz_mutated_messages(msg, data):
    mutated = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 6))):
        mutated[data.draw(st.integers(7, len(msg) - 1))] = data.draw(st.integers(0, 255))
    state = D.new_state()
    for direction in (True, False, True):
        _check(D.decode(bytes(mutated), direction, state))
