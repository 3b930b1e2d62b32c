"""S7 decoder (TPKT/COTP, S7comm, S7comm-plus) on byte literals, prefixes and fuzzed input."""

from __future__ import annotations

import json
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


# --- Userdata contents from the corpus (tshark 4.0 shows the same fields per frame) ---
UD_RESPONSE_HEAD = "000112081284"     # param head, len 8, method 0x12 (Res), type 8 group 4
# ALARM query request (iti_wincc_s300_alarm_read_write frame 11): param 000112 len 4 method
# 0x11 type 4 group 4 sub 19 (0x13) seq 0 | data rc ff size 09 len 12 | function 00, 1 object:
# 12 len 8 syntax 1A (ALARM_QUERYREQ) | 00 | query type 1 (ByAlarmtype) | 34 | alarm type 4 (ALARM_S)
ALARM_QUERY_REQ = tpkt(bytes.fromhex(
    "32070000000100080010" "0001120411441300" "ff09000c" "0001" "12081a" "00" "01" "34" "00000004"))
# ALARM query answer, nothing pending (frame 12): pduref 1, param len 12, data len 10 |
# sub 19 seq 2, data unit 0, last unit 0 (yes), error 0 | rc ff size 09 len 6 |
# function 00, 1 object, return code 0A (Object does not exist), size 0, complete length 0
ALARM_QUERY_NONE = tpkt(bytes.fromhex(
    "320700000001000c000a" + UD_RESPONSE_HEAD + "13020000" "0000" "ff090006" "0001" "0a" "00" "0000"))
# ALARM query answer with 4 ALARM_8 alarms (iti_wincc_s400_production frame 18): rc ff size 09
# len 54 | function 00, 1 | rc ff, size 09, complete length 48 | 4 objects of 12 bytes:
# dataset len 0A, 0000, alarm type 2 (ALARM_8), event id, 00, event state, ack going, ack coming
ALARM_QUERY_ALARM8 = tpkt(bytes.fromhex(
    "320700000a00000c003a" + UD_RESPONSE_HEAD + "138a0000" "0000" "ff090036" "0001" "ff09" "0030"
    "0a000002" "0000002f" "00" "00cfcf" "0a000002" "000000af" "00" "01fefe"
    "0a000002" "000000bb" "00" "04fffb" "0a000002" "000000c2" "00" "30ffcf"))
# ALARM_8 indication (push, sub 5) of event 0xAF (frame 19): param len 8, data len 74 |
# rc ff size 09 len 70 | time 94-01-06 00:27:20.397 weekday 5 | function 40, 1 object:
# 12 len 0A syntax 16 (ALARM_IND) | 8 associated values | event id 000000AF | event state 00,
# state 00 | ack going FE, ack coming FE | 8 values: rc ff, size 04 (bits), 0010 (16 bits), 2 bytes
ALARM8_IND = tpkt(bytes.fromhex(
    "3207000000000008004a" "0001120411040500" "ff090046" "9401060027203975" "4001" "120a16"
    "08" "000000af" "0000" "fefe" "ff0400100001" + "ff040010ffff" * 7))
# NOTIFY indication (push, sub 6) of event 1 (frame 351): time, function 40, 1 object:
# 12 0A 16 | 3 values | event id 00000001 | event state 01, state 00 | ack going 01, coming 01 |
# values: rc ff size 04 length 0100 (256 bits = 32 bytes), then two of 0020 (32 bits = 4 bytes)
NOTIFY_IND = tpkt(bytes.fromhex(
    "3207000000000008004e" "0001120411040600" "ff09004a" "9401060047426975" "4001" "120a16"
    "03" "00000001" "0100" "0101" "ff040100") + bytes(32)
    + bytes.fromhex("ff04002000000000" "ff04002000000000"))
# Programmer-command push, result of a Modify variable job (iti_step7_s300_rwvartab frame 7):
# param len 12 | 000112 08 12 | type 0 group 1 (0x01) | sub 8 | seq 2 | unit 0, last 0, error 0 |
# rc ff size 09 len 14 | TIS param size 4, data size 6 | param 0100 0002 | 3 items: ff ff ff | fill
TIS_MODIFY_PUSH = tpkt(bytes.fromhex(
    "32070000000000" "0c0012" "000112081201080200000000" "ff09000e" "0004" "0006" "01000002"
    "0003" "ffffff" "00"))
# Variable status push (frame 20): TIS param size 4, data size 18 | 2 items: rc ff, size 09
# (octet string), length 6, value 4133851fdead | rc ff, size 09, length 1, value 02, fill 00
TIS_STATUS_PUSH = tpkt(bytes.fromhex(
    "32070000000000" "0c001e" "000112081201020200000000" "ff09001a" "0004" "0012" "01000001"
    "0002" "ff0900064133851fdead" "ff0900010200"))
# Read SZL 0x001C in two data units (icsnpp_snap7_s300_everything frames 6-8): the first
# answer (pduref 0x0200, data unit ref D5, last unit 01 "No") starts with SZL id 001C, index 0,
# record length 0x22, 10 records; the client asks for the rest (pduref 0x0300, type 4 with
# method 0x12, rc 0A, no data); the last unit (ref D5, last 00) carries the other records.
SZL_UNIT_1 = tpkt(bytes.fromhex(
    "320700000200000c00da" "0001120812840102d5010000" "ff0900d6"
    "001c00000022000a000153373330302f45543230304d2073746174696f6e5f3100000000000000000000"
    "0002504c435f310000000000000000000000000000000000000000000000000000000003000000000000"
    "000000000000000000000000000000000000000000000000000000044f726967696e616c205369656d65"
    "6e732045717569706d656e7400000000000000055320432d423155333933313432303131000000000000"
    "000000000000000000000007435055203331352d3220504e2f4450000000000000000000000000000000"
    "00000008"))
SZL_NEXT_REQ = tpkt(bytes.fromhex("320700000300000c00040001120812440102000000000a000000"))
SZL_UNIT_2 = tpkt(bytes.fromhex(
    "320700000300000c008a" "0001120812840102d5000000" "ff090086"
    "4d4d4320344131414330313900000000000000000000000000000000000000000009002af60000010000"
    "000000000000000000000000000000000000000000000000000a00000000000000000000000000000000"
    "00000000000000000000000000000000000b000000000000000000000000000000000000000000000000"
    "0000000000000000"))

USERDATA_CONTENTS = [ALARM_QUERY_REQ, ALARM_QUERY_NONE, ALARM_QUERY_ALARM8, ALARM8_IND, NOTIFY_IND,
                     TIS_MODIFY_PUSH, TIS_STATUS_PUSH, SZL_UNIT_1, SZL_NEXT_REQ, SZL_UNIT_2]
ALL_MESSAGES = [COTP_CR, SETUP, READ_REQ, READ_RESP, WRITE_REQ, PLC_STOP, DOWNLOAD, SZL_RESP,
                SET_CLOCK, PASSWORD, PLUS_STOP, PLUS_SESSION, MODIFY_VAR, CYCLIC_SUB,
                *USERDATA_CONTENTS]


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


def _alarm_codes(ev) -> list[int]:
    """Return codes of an alarm message in wire order (as tshark lists them)."""
    alarm = ev.detail.get("alarm", {})
    codes = [alarm["return_code"]] if "return_code" in alarm else []
    for obj in alarm.get("objects", ()):
        codes += [obj["return_code"]] if "return_code" in obj else []
        codes += obj.get("value_return_codes", [])
    return codes


def test_alarm_query_request_names_the_alarm_type():
    ev = one(ALARM_QUERY_REQ)
    assert (ev.function, ev.kind, ev.function_code) == ("ALARM query", "request", 0x0413)
    assert ev.detail["alarm"] == {"function": 0, "object_count": 1, "objects": [
        {"syntax_id": "ALARM_QUERYREQ", "query_type": "ByAlarmtype", "alarm_type": "ALARM_S"}]}
    json.dumps(ev.to_dict())


def test_alarm_query_answer_without_alarms():
    state = D.new_state()
    one(ALARM_QUERY_REQ, True, state)
    ev = one(ALARM_QUERY_NONE, False, state)
    assert (ev.kind, ev.result, ev.detail["return_code"]) == ("response", "ok", 0xFF)
    # the answer's own return code 0x0A: no alarm of that type is pending (not a failure)
    assert ev.detail["alarm"] == {"function": 0, "object_count": 1, "return_code": 0x0A}
    assert _alarm_codes(ev) == [0x0A]


def test_alarm_query_answer_lists_pending_alarms():
    ev = one(ALARM_QUERY_ALARM8, False)
    alarm = ev.detail["alarm"]
    assert (alarm["return_code"], alarm["object_count"]) == (0xFF, 1)
    assert [(o["alarm_type"], o["event_id"], o["event_state"], o["ack_state_going"],
             o["ack_state_coming"]) for o in alarm["objects"]] == [
        ("ALARM_8", 0x2F, 0x00, 0xCF, 0xCF), ("ALARM_8", 0xAF, 0x01, 0xFE, 0xFE),
        ("ALARM_8", 0xBB, 0x04, 0xFF, 0xFB), ("ALARM_8", 0xC2, 0x30, 0xFF, 0xCF)]
    assert _alarm_codes(ev) == [0xFF] and ev.anomalies == []


def test_alarm_query_answer_alarm_s_objects_carry_times_and_values():
    # rc ff size 09 len 46 | function 00, 1 | rc ff, size 09, complete length 40 | object:
    # 0A 0000 | type 4 (ALARM_S) | event id 0x42 | 00 | event state 01, going 00, coming 01 |
    # coming 2026-11-23 10:15:30.000 | value ff 04 0010 1234 | going 10:16:00.000 | ff 04 0010 5678
    msg = tpkt(bytes.fromhex(
        "320700000b00000c0032" + UD_RESPONSE_HEAD + "13010000" "0000" "ff09002e" "0001" "ff09"
        "0028" "0a000004" "00000042" "00" "010001" "2611231015300005" "ff0400101234"
        "2611231016000002" "ff0400105678"))
    ev = one(msg, False)
    assert ev.detail["alarm"]["objects"] == [{
        "alarm_type": "ALARM_S", "event_id": 0x42, "event_state": 1, "ack_state_going": 0,
        "ack_state_coming": 1, "timestamp_coming": "2026-11-23T10:15:30.000",
        "timestamp_going": "2026-11-23T10:16:00.000", "value_return_codes": [0xFF, 0xFF]}]
    assert ev.anomalies == []


def test_alarm8_indication_event_states_and_associated_values():
    ev = one(ALARM8_IND, False)
    assert (ev.function, ev.kind, ev.op_class) == ("ALARM_8 indication", "notification",
                                                   "diagnostic")
    alarm = ev.detail["alarm"]
    assert (alarm["timestamp"], alarm["function"], alarm["object_count"]) == (
        "1994-01-06T00:27:20.397", 0x40, 1)
    assert alarm["objects"] == [{
        "syntax_id": "ALARM_IND", "event_id": 0xAF, "event_state": 0, "state": 0,
        "ack_state_going": 0xFE, "ack_state_coming": 0xFE, "value_count": 8,
        "value_return_codes": [0xFF] * 8}]
    json.dumps(ev.to_dict())


def test_notify_indication_values_of_different_lengths():
    ev = one(NOTIFY_IND, False)
    obj = ev.detail["alarm"]["objects"][0]
    assert (ev.function, obj["event_id"], obj["event_state"], obj["value_count"]) == (
        "NOTIFY indication", 1, 1, 3)
    assert obj["value_return_codes"] == [0xFF] * 3 and ev.anomalies == []


def test_alarm_ack_response_fails_on_an_object_return_code():
    # ALARM ack (sub 0x0B) response: rc ff size 09 len 4 | function 09, 2 objects | ff, 0a
    msg = tpkt(bytes.fromhex("320700000700000c0008" + UD_RESPONSE_HEAD + "0b010000" "0000"
                             "ff090004" "0902" "ff0a"))
    ev = one(msg, False)
    assert ev.function == "ALARM ack"
    assert ev.detail["alarm"]["objects"] == [{"return_code": 0xFF}, {"return_code": 0x0A}]
    assert (ev.result, ev.status) == ("error", "Object does not exist (0x0a)")


def test_alarm_objects_are_capped_and_the_rest_counted():
    n = s7comm.MAX_ALARM_OBJECTS + 4
    # ALARM_8 lock request (sub 7): function 0A, n objects 12 08 15 (ALARM_LOCKFREE) 00 id
    content = bytes([0x0A, n]) + b"".join(bytes.fromhex("12081500") + i.to_bytes(4, "big")
                                           for i in range(1, n + 1))
    msg = tpkt(bytes.fromhex("3207000008000008") + (4 + len(content)).to_bytes(2, "big")
               + bytes.fromhex("0001120411440700" "ff09") + len(content).to_bytes(2, "big")
               + content)
    alarm = one(msg).detail["alarm"]
    assert [o["event_id"] for o in alarm["objects"]] == list(range(1, s7comm.MAX_ALARM_OBJECTS + 1))
    assert alarm["objects_dropped"] == 4
    # an ALARM query answer with n ALARM_8 objects: the same cap, counted while read
    objects = b"".join(bytes.fromhex("0a000002") + i.to_bytes(4, "big") + bytes(4)
                       for i in range(n))
    content = bytes.fromhex("0001ff09") + len(objects).to_bytes(2, "big") + objects
    answer = tpkt(bytes.fromhex("32070000090000" "0c") + (4 + len(content)).to_bytes(2, "big")
                  + bytes.fromhex(UD_RESPONSE_HEAD + "13010000" "0000" "ff09")
                  + len(content).to_bytes(2, "big") + content)
    alarm = one(answer, False).detail["alarm"]
    assert len(alarm["objects"]) == s7comm.MAX_ALARM_OBJECTS and alarm["objects_dropped"] == 4


def test_tis_pushes_give_the_return_code_of_each_item():
    ev = one(TIS_MODIFY_PUSH, False)
    assert (ev.function, ev.kind, ev.detail["item_count"]) == ("Modify variable", "notification", 3)
    assert ev.detail["item_return_codes"] == ["Success"] * 3
    ev = one(TIS_STATUS_PUSH, False)
    assert (ev.function, ev.detail["item_count"]) == ("Variable status", 2)
    assert ev.detail["item_return_codes"] == ["Success"] * 2 and ev.anomalies == []
    # the same Modify variable result with its second item refused
    failed = one(tpkt(TIS_MODIFY_PUSH[7:].replace(bytes.fromhex("ffffff00"),
                                                  bytes.fromhex("ff05ff00"))), False)
    assert failed.detail["item_return_codes"] == ["Success", "Invalid address", "Success"]
    assert (failed.result, failed.status) == ("error", "Invalid address (0x05)")


def test_szl_answer_in_data_units_is_decoded_at_its_last_unit():
    state = D.new_state()
    first = one(SZL_UNIT_1, False, state)
    assert (first.function, first.result, first.detail["data_unit_ref"]) == ("Read SZL", "ok", 0xD5)
    assert first.detail["last_data_unit"] is False
    assert "szl_id" not in first.detail and first.identity is None
    follow_up = one(SZL_NEXT_REQ, True, state)
    assert (follow_up.kind, follow_up.detail["return_code"]) == ("request", 0x0A)
    last = one(SZL_UNIT_2, False, state)
    assert (last.detail["szl_id"], last.detail["record_count"], last.op_class) == (
        0x001C, 10, "identify")
    assert last.targets == [Target(kind="szl", name="0x001c", start=0)]
    # records of both units: the memory card serial is in the second one
    assert last.identity == {
        "vendor": "Siemens", "system_name": "S7300/ET200M station_1", "module_name": "PLC_1",
        "copyright": "Original Siemens Equipment", "serial_number": "S C-B1U393142011",
        "module_type": "CPU 315-2 PN/DP", "memory_card_serial": "MMC 4A1AC019"}
    assert state.data_units == {}


def test_single_data_unit_with_a_reference_is_decoded_alone():
    # the SZL 0x0011 answer, data unit reference 5 and "last unit": nothing to wait for
    ev = one(tpkt(SZL_RESP[7:].replace(bytes.fromhex("0100" "00000000"),
                                       bytes.fromhex("0100" "05000000"), 1)), False)
    assert (ev.detail["data_unit_ref"], ev.detail["szl_id"]) == (5, 0x0011)
    assert ev.identity["order_number"] == "6ES7 315-2EH14-0AB0"


def _szl_unit(ref: int, more: bool, payload: bytes) -> bytes:
    """A Read SZL answer data unit: header, param with data unit ref/last unit, data."""
    return tpkt(bytes.fromhex("32070000020000" "0c") + (4 + len(payload)).to_bytes(2, "big")
                + bytes.fromhex(UD_RESPONSE_HEAD + "0102") + bytes([ref, int(more)])
                + bytes(2) + bytes.fromhex("ff09") + len(payload).to_bytes(2, "big") + payload)


def test_data_unit_reassembly_is_bounded():
    state = D.new_state()
    for ref in range(1, s7comm.MAX_DATA_UNIT_ANSWERS + 4):
        one(_szl_unit(ref, True, bytes(8)), False, state)
        assert len(state.data_units) <= s7comm.MAX_DATA_UNIT_ANSWERS
    state = D.new_state()
    unit = _szl_unit(9, True, bytes(1000))
    events = [one(unit, False, state) for _ in range(s7comm.MAX_DATA_UNIT_BYTES // 1000 + 1)]
    assert [e.anomalies for e in events if e.anomalies] == [["s7comm.reassembly_overflow"]]
    assert events[-1].anomalies and state.data_units == {}


def _cut_content(msg: bytes, n: int) -> bytes:
    """The userdata PDU of ``msg`` with its data content cut to ``n`` bytes, every length
    field (data length, data item length) made to agree, so the cut reaches the parsers."""
    pdu = msg[7:]
    plen = int.from_bytes(pdu[6:8], "big")
    data = pdu[10 + plen:]
    return tpkt(pdu[:8] + (4 + n).to_bytes(2, "big") + pdu[10:10 + plen] + data[:2]
                + n.to_bytes(2, "big") + data[4:4 + n])


def _contents(ev) -> tuple:
    return ev.detail.get("alarm"), ev.detail.get("item_return_codes"), _alarm_codes(ev)


@pytest.mark.parametrize("msg", [ALARM_QUERY_REQ, ALARM_QUERY_NONE, ALARM_QUERY_ALARM8, ALARM8_IND,
                                 NOTIFY_IND, TIS_MODIFY_PUSH, TIS_STATUS_PUSH])
def test_every_prefix_of_userdata_contents_is_flagged_when_it_loses_anything(msg):
    full = one(msg, False)
    assert full.anomalies == []
    size = int.from_bytes(msg[7 + 10 + int.from_bytes(msg[13:15], "big") + 2:][:2], "big")
    for n in range(1, size):
        ev = one(_cut_content(msg, n), False)
        assert set(ev.anomalies) <= {"s7comm.truncated_pdu"}, n
        codes = _alarm_codes(ev)
        assert codes == _alarm_codes(full)[:len(codes)], n      # what was read is kept
        if _contents(ev) != _contents(full):
            assert ev.anomalies == ["s7comm.truncated_pdu"], n
        json.dumps(ev.to_dict())


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


def test_block_number_of_non_ascii_digits_is_an_invalid_file_name():
    # "²" is a digit to str.isdigit() but not to int(): the name is invalid, not a cut PDU
    msg = DOWNLOAD.replace(b"_0A00001P", "_0A0000\u00b2P".encode("latin-1"))
    ev = one(msg)
    assert ev.anomalies == ["s7comm.invalid_block_filename"] and ev.targets[0].kind == "block"


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


@settings(max_examples=250, deadline=None)
@given(st.lists(st.sampled_from(USERDATA_CONTENTS), min_size=1, max_size=6), st.data())
def test_fuzz_mutated_userdata_sequences(msgs, data):
    """Alarm, TIS and SZL data-unit messages mutated inside their data part and fed in turn
    to one connection state: only anomaly flags, JSON-safe details, bounded state."""
    state = D.new_state()
    for msg in msgs:
        mutated = bytearray(msg)
        for _ in range(data.draw(st.integers(1, 4))):
            mutated[data.draw(st.integers(17, len(msg) - 1))] = data.draw(st.integers(0, 255))
        for ev in D.decode(bytes(mutated), data.draw(st.booleans()), state):
            assert ev.op_class in OP_CLASSES
            json.dumps(ev.to_dict())
            assert len(ev.detail.get("alarm", {}).get("objects", ())) <= s7comm.MAX_ALARM_OBJECTS
        assert len(state.data_units) <= s7comm.MAX_DATA_UNIT_ANSWERS
