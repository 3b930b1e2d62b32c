"""Modbus/TCP decoder on byte literals: every function code, exceptions, framing, fuzzing.

Each literal is written field by field; the ADUs come from the Modbus Application
Protocol v1.1b3 examples or from the corpus captures named beside them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import dpkt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.decoders import modbus as mb
from otsec.decoders.base import NEED_MORE, UNFRAMEABLE
from otsec.model import OP_CLASSES, Target


def adu(*fields: str) -> bytes:
    """Join hex fields (one per wire field, annotated at the call site)."""
    return bytes.fromhex("".join(fields))


def one(msg: bytes, from_client: bool, state=None):
    events = mb.decode(msg, from_client, state)
    assert len(events) == 1
    return events[0]


ALL_FLAGS = {v for k, v in vars(mb).items() if k.startswith("A_")}

# --- requests: (id, ADU, expected fields) ------------------------------------------
REQUESTS = [
    ("fc1", adu("0001", "0000", "0006",  # tid 1, proto 0, length 6
                "11", "01",              # unit 17, Read Coils
                "0013", "0013"),         # start 19, quantity 19
     dict(function="Read Coils", op_class="read", targets=[Target("coil", 19, 19)],
          detail={"start": 19, "quantity": 19})),
    ("fc2", adu("0002", "0000", "0006", "11", "02",
                "00c4", "0016"),         # start 196, quantity 22
     dict(function="Read Discrete Inputs", op_class="read",
          targets=[Target("discrete_input", 196, 22)])),
    ("fc3", adu("0003", "0000", "0006", "11", "03",
                "006b", "0003"),         # start 107, quantity 3
     dict(function="Read Holding Registers", op_class="read",
          targets=[Target("holding_register", 107, 3)])),
    ("fc4", adu("0004", "0000", "0006", "11", "04",
                "0008", "0001"),         # start 8, quantity 1
     dict(function="Read Input Registers", op_class="read",
          targets=[Target("input_register", 8, 1)])),
    ("fc5", adu("0005", "0000", "0006", "11", "05",
                "00ac", "ff00"),         # coil 172 ON
     dict(function="Write Single Coil", op_class="write", targets=[Target("coil", 172, 1)],
          detail={"start": 172, "values": [1]})),
    ("fc6", adu("0006", "0000", "0006", "11", "06",
                "0001", "0003"),         # register 1 := 3
     dict(function="Write Single Register", op_class="write",
          targets=[Target("holding_register", 1, 1)], detail={"values": [3]})),
    ("fc7", adu("0007", "0000", "0002", "11", "07"),  # no data
     dict(function="Read Exception Status", op_class="diagnostic", targets=[])),
    ("fc8-return-query", adu("0008", "0000", "0006", "11", "08",
                             "0000", "a537"),  # sub 0 Return Query Data, data 0xA537
     dict(function="Diagnostics", op_class="diagnostic",
          detail={"sub_function": 0, "sub_function_name": "Return Query Data", "data": [0xA537]})),
    ("fc8-restart", adu("0009", "0000", "0006", "11", "08",
                        "0001", "ff00"),  # sub 1 Restart Communications Option, clear log
     dict(op_class="control", detail={"sub_function_name": "Restart Communications Option"})),
    ("fc8-listen-only", adu("000a", "0000", "0006", "0a", "08",
                            "0004", "0000"),  # sub 4 (quickdraw_modbus_part1 frame 8)
     dict(op_class="control", detail={"sub_function_name": "Force Listen Only Mode"})),
    ("fc11", adu("000b", "0000", "0002", "11", "0b"),
     dict(function="Get Comm. Event Counters", op_class="diagnostic")),
    ("fc12", adu("000c", "0000", "0002", "11", "0c"),
     dict(function="Get Comm. Event Log", op_class="diagnostic")),
    ("fc15", adu("000f", "0000", "0009", "11", "0f",
                 "0013", "000a",         # start 19, quantity 10
                 "02",                   # byte count 2
                 "cd01"),                # coils 20..27 = 1011 0011 (LSB first), 28..29 = 10
     dict(function="Write Multiple Coils", op_class="write", targets=[Target("coil", 19, 10)],
          detail={"byte_count": 2, "values": [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]})),
    ("fc16", adu("0010", "0000", "000b", "11", "10",
                 "0001", "0002",         # start 1, quantity 2
                 "04",                   # byte count 4
                 "000a", "0102"),        # values 10, 258
     dict(function="Write Multiple Registers", op_class="write",
          targets=[Target("holding_register", 1, 2)], detail={"values": [10, 258]})),
    ("fc17", adu("0011", "0000", "0002", "11", "11"),
     dict(function="Report Slave ID", op_class="identify")),
    ("fc20", adu("0014", "0000", "0011", "11", "14",
                 "0e",                   # byte count 14: two sub-requests
                 "06", "0004", "0001", "0002",   # ref 6, file 4, record 1, length 2
                 "06", "0003", "0009", "0002"),  # ref 6, file 3, record 9, length 2
     dict(function="Read File Record", op_class="read",
          targets=[Target("file_record", 1, 2, name="file:4"), Target("file_record", 9, 2, name="file:3")])),
    ("fc21", adu("0015", "0000", "0010", "11", "15",
                 "0d",                   # request data length 13
                 "06", "0004", "0007", "0003",   # ref 6, file 4, record 7, length 3
                 "06af", "04be", "100d"),        # record data
     dict(function="Write File Record", op_class="write",
          targets=[Target("file_record", 7, 3, name="file:4")],
          detail={"records": [{"reference_type": 6, "file": 4, "record": 7, "length": 3,
                               "values": [0x06AF, 0x04BE, 0x100D]}]})),
    ("fc22", adu("0016", "0000", "0008", "11", "16",
                 "0004", "00f2", "0025"),  # register 4, AND 0x00F2, OR 0x0025
     dict(function="Mask Write Register", op_class="write",
          targets=[Target("holding_register", 4, 1)],
          detail={"and_mask": 0xF2, "or_mask": 0x25})),
    ("fc23", adu("0017", "0000", "0011", "11", "17",
                 "0003", "0006",         # read start 3, quantity 6
                 "000e", "0003",         # write start 14, quantity 3
                 "06",                   # write byte count 6
                 "00ff", "00ff", "00ff"),
     dict(function="Read Write Register", op_class="write",
          targets=[Target("holding_register", 3, 6), Target("holding_register", 14, 3)],
          detail={"values": [255, 255, 255]})),
    ("fc24", adu("0018", "0000", "0004", "11", "18",
                 "04de"),                # FIFO pointer address 1246
     dict(function="Read FIFO Queue", op_class="read",
          targets=[Target("holding_register", 1246)])),
    ("fc43-14", adu("002b", "0000", "0005", "11", "2b",
                    "0e", "01", "00"),   # MEI 14, basic device id, from object 0
     dict(function="Encapsulated Interface Transport", op_class="identify",
          detail={"mei_type": 14, "mei": "Read Device Identification",
                  "read_device_id": 1, "object_id": 0})),
    ("fc43-13", adu("002c", "0000", "0005", "11", "2b",
                    "0d", "0102"),       # MEI 13 CANopen, opaque data
     dict(op_class="other", detail={"mei": "CANopen Request/Response", "data": "0102"})),
    ("fc90-stop", adu("005a", "0000", "0004", "00", "5a",
                      "12", "41"),       # pairing key 0x12, UMAS STOP_PLC
     dict(function="Unity (Schneider)", op_class="control",
          detail={"umas_code": 0x41, "umas_function": "STOP_PLC", "umas_pairing_key": 0x12})),
    ("fc90-read-id", adu("0000", "0000", "0004", "00", "5a",
                         "00", "02"),    # iti_modicon_umas frame 4
     dict(op_class="identify", detail={"umas_function": "READ_ID"})),
    ("fc90-download", adu("0001", "0000", "0005", "00", "5a", "00", "34", "ab"),
     dict(op_class="program", detail={"umas_function": "DOWNLOAD_BLOCK", "data": "ab"})),
    ("fc90-unknown", adu("0001", "0000", "0004", "00", "5a", "00", "99"),
     dict(op_class="other", detail={"umas_function": "UNKNOWN_0x99"})),
    ("fc65-user", adu("0041", "0000", "0004", "01", "41", "beef"),
     dict(function="User-defined function (65)", op_class="other",
          anomalies=[mb.A_USER_DEFINED], detail={"category": "user_defined", "data": "beef"})),
    ("fc9-reserved", adu("0009", "0000", "0006", "01", "09", "00000000"),
     dict(function="Reserved function (9)", anomalies=[mb.A_RESERVED], detail={"category": "reserved"})),
    ("fc30-unassigned", adu("001e", "0000", "0002", "01", "1e"),
     dict(function="Unassigned function (30)", anomalies=[mb.A_UNASSIGNED])),
    ("fc0", adu("0000", "0000", "0006", "01", "00", "00000000"),  # quickdraw sweep frame 6
     dict(function="Invalid function (0)", function_code=0, anomalies=[mb.A_INVALID_FC])),
]

# --- responses ----------------------------------------------------------------------
RESPONSES = [
    ("fc1", adu("0001", "0000", "0006", "11", "01",
                "03",                    # byte count 3
                "cd6b05"),               # coil status bits
     dict(detail={"byte_count": 3, "values": [1, 0, 1, 1, 0, 0, 1, 1] + [1, 1, 0, 1, 0, 1, 1, 0]
                  + [1, 0, 1, 0, 0, 0, 0, 0]})),
    ("fc2", adu("0002", "0000", "0004", "11", "02", "01", "ac"),
     dict(op_class="read", detail={"byte_count": 1})),
    ("fc3", adu("0003", "0000", "0009", "11", "03",
                "06",                    # byte count 6
                "022b", "0000", "0064"),  # registers 555, 0, 100
     dict(detail={"values": [555, 0, 100]})),
    ("fc4", adu("0004", "0000", "0005", "11", "04", "02", "000a"),
     dict(detail={"values": [10]})),
    ("fc5", adu("0005", "0000", "0006", "11", "05", "00ac", "ff00"),
     dict(op_class="write", targets=[], detail={"start": 172, "values": [1]})),
    ("fc6", adu("0006", "0000", "0006", "11", "06", "0001", "0003"),
     dict(detail={"start": 1, "values": [3]})),
    ("fc7", adu("0007", "0000", "0003", "11", "07", "6d"),
     dict(detail={"exception_status": 0x6D})),
    ("fc8", adu("0008", "0000", "0006", "11", "08", "0000", "a537"),
     dict(detail={"sub_function": 0, "data": [0xA537]})),
    ("fc11", adu("000b", "0000", "0006", "11", "0b",
                 "ffff", "0108"),        # status busy, event count 264
     dict(detail={"comm_status": 0xFFFF, "event_count": 264})),
    ("fc12", adu("000c", "0000", "000b", "11", "0c",
                 "08",                   # byte count 8
                 "0000", "0108", "0121",  # status, event count 264, message count 289
                 "2000"),                # two event bytes
     dict(detail={"byte_count": 8, "event_count": 264, "message_count": 289, "events": "2000"})),
    ("fc15", adu("000f", "0000", "0006", "11", "0f", "0013", "000a"),
     dict(detail={"start": 19, "quantity": 10})),
    ("fc16", adu("0010", "0000", "0006", "11", "10", "0001", "0002"),
     dict(detail={"start": 1, "quantity": 2})),
    ("fc17", adu("0000", "0000", "0015", "0a", "11",
                 "12",                   # byte count 18
                 "00", "ff",             # server id 0, run indicator ON
                 "57696e6770617468204c696d69746564"),  # "Wingpath Limited" (quickdraw part1)
     dict(identity={"server_id": "Wingpath Limited"},
          detail={"server_id": 0, "run_indicator": "on", "text": "Wingpath Limited"})),
    ("fc20", adu("0014", "0000", "000f", "11", "14",
                 "0c",                   # response data length 12
                 "05", "06", "0df0", "0085",          # file resp length 5, ref 6, 2 words
                 "05", "06", "3360", "0025"),
     dict(detail={"records": [{"reference_type": 6, "values": [0x0DF0, 0x85]},
                              {"reference_type": 6, "values": [0x3360, 0x25]}]})),
    ("fc21", adu("0015", "0000", "0010", "11", "15",
                 "0d", "06", "0004", "0007", "0003", "06af", "04be", "100d"),
     dict(targets=[], detail={"byte_count": 13})),
    ("fc22", adu("0016", "0000", "0008", "11", "16", "0004", "00f2", "0025"),
     dict(targets=[], detail={"start": 4, "and_mask": 0xF2})),
    ("fc23", adu("0017", "0000", "000f", "11", "17",
                 "0c",                   # byte count 12
                 "00fe", "0acd", "0001", "0003", "000d", "00ff"),
     dict(detail={"values": [0xFE, 0xACD, 1, 3, 0xD, 0xFF]})),
    ("fc24", adu("0018", "0000", "000a", "11", "18",
                 "0006",                 # byte count 6
                 "0002",                 # FIFO count 2
                 "01b8", "1284"),
     dict(detail={"fifo_count": 2, "values": [440, 4740]})),
    ("fc43-14", adu("0017", "0000", "003d", "01", "2b",
                    "0e", "01", "83",    # MEI 14, basic, conformity 0x83
                    "00", "00", "03",    # more follows 0, next object 0, 3 objects
                    "00", "10", "5a65656b204d6f646275732054657374",  # VendorName
                    "01", "18", "50726f746f636f6c2050617273696e672069732066756e21",  # ProductCode
                    "02", "07", "312e322e332e36"),  # MajorMinorRevision (icsnpp_modbus_example frame 94)
     dict(op_class="identify",
          identity={"vendor": "Zeek Modbus Test", "product_code": "Protocol Parsing is fun!",
                    "revision": "1.2.3.6"},
          detail={"conformity_level": 0x83, "number_of_objects": 3,
                  "objects": {"VendorName": "Zeek Modbus Test",
                              "ProductCode": "Protocol Parsing is fun!",
                              "MajorMinorRevision": "1.2.3.6"}})),
    ("fc90-ok", adu("0001", "0000", "0005", "00", "5a",
                    "00", "fe", "00"),  # pairing key 0, status OK, one data byte
     dict(result="ok", detail={"umas_status": 0xFE})),
    ("fc90-error", adu("0001", "0000", "0005", "00", "5a", "00", "fd", "01"),
     dict(result="error", status="UMAS error (0xFD)")),
    ("fc42-unknown", adu("0001", "0000", "0006", "0a", "2a", "0e040101"),  # quickdraw part1 frame 111
     dict(function="Reserved function (42)", op_class="other", result="ok",
          anomalies=[mb.A_RESERVED], detail={"data": "0e040101"})),
]


def check(ev, expected: dict) -> None:
    for key, value in expected.items():
        got = getattr(ev, key)
        if key == "detail":
            for dkey, dvalue in value.items():
                assert got.get(dkey) == dvalue, (dkey, got)
        else:
            assert got == value, (key, got)


@pytest.mark.parametrize("name,msg,expected", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request(name, msg, expected):
    ev = one(msg, True)
    assert ev.kind == "request" and ev.result is None
    assert ev.function_code == msg[7]
    assert ev.pair_key == (int.from_bytes(msg[:2], "big"), msg[6])
    expected.setdefault("anomalies", [])
    check(ev, expected)
    json.dumps(ev.to_dict())


@pytest.mark.parametrize("name,msg,expected", RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response(name, msg, expected):
    ev = one(msg, False)
    assert ev.kind == "response" and ev.function_code == msg[7]
    expected.setdefault("anomalies", [])
    expected.setdefault("result", "ok")
    check(ev, expected)
    json.dumps(ev.to_dict())


def test_every_public_function_code_has_a_request_and_response_case():
    public = {fc for fc in mb.FUNCTION_NAMES}
    assert public <= {m[7] for _, m, _ in REQUESTS}
    assert public <= {m[7] for _, m, _ in RESPONSES}


# --- exceptions ---------------------------------------------------------------------

@pytest.mark.parametrize("code,name", sorted(mb.EXCEPTION_NAMES.items()))
def test_exception_response(code, name):
    msg = adu("0003", "0000", "0003", "11",
              "83",                      # FC 3 | 0x80
              "%02x" % code)
    ev = one(msg, False)
    assert (ev.function_code, ev.function, ev.op_class) == (3, "Read Holding Registers", "read")
    assert ev.result == "exception" and ev.status == "%s (%d)" % (name, code)
    assert ev.detail["exception_code"] == code and ev.detail["raw_function_code"] == 0x83
    assert ev.anomalies == [] and ev.targets == []


def test_exception_named_like_wireshark():
    ev = one(adu("0001", "0000", "0003", "01", "81", "02"), False)
    assert ev.status == "Illegal data address (2)"


def test_unknown_exception_code():
    ev = one(adu("0001", "0000", "0003", "01", "81", "07"), False)
    assert ev.status == "Unknown exception (7)" and ev.anomalies == [mb.A_UNKNOWN_EXCEPTION]


def test_exception_with_trailing_byte():
    # quickdraw_modbus_part1 frame 91: length 4, exception 6 then a stray 0x00
    ev = one(adu("0001", "0000", "0004", "0a", "81", "06", "00"), False)
    assert ev.status == "Slave device busy (6)" and ev.anomalies == [mb.A_INVALID_LENGTH]


def test_exception_without_its_code_byte_is_still_an_exception():
    # length 2: unit id and function code 0x83 only; the code byte is cut off
    ev = one(adu("0001", "0000", "0002", "01", "83"), False)
    assert ev.result == "exception" and ev.status is None and mb.A_TRUNCATED in ev.anomalies


def test_exception_to_fc0_keeps_masked_code():
    # quickdraw sweep frame 9: 0x80 = exception to FC 0 (tshark counts it under FC 0)
    ev = one(adu("0000", "0000", "0003", "01", "80", "01"), False)
    assert ev.function_code == 0 and ev.result == "exception" and mb.A_INVALID_FC in ev.anomalies


def test_exception_bit_in_request_is_flagged():
    ev = one(adu("0001", "0000", "0003", "01", "83", "02"), True)
    assert ev.kind == "request" and mb.A_INVALID_FC in ev.anomalies
    assert ev.detail["raw_function_code"] == 0x83


def test_device_id_exception_keeps_identify_class_through_state():
    # zeek_modbus_eit_devid frames 3/4: 43/14 request, then exception 4 to it
    state = mb.new_state()
    req = one(adu("0000", "0000", "0005", "ff", "2b", "0e", "01", "00"), True, state)
    rsp = one(adu("0000", "0000", "0003", "ff", "ab", "04"), False, state)
    assert req.op_class == rsp.op_class == "identify"
    assert rsp.status == "Slave device failure (4)" and state == {}


def test_device_id_exception_without_state_is_other():
    rsp = one(adu("0000", "0000", "0003", "ff", "ab", "04"), False)
    assert rsp.op_class == "other" and rsp.function == "Encapsulated Interface Transport"


# --- state: context a response cannot carry itself ------------------------------------

def test_umas_response_inherits_request_code():
    state = mb.new_state()
    one(adu("0007", "0000", "0004", "00", "5a", "00", "41"), True, state)  # STOP_PLC
    rsp = one(adu("0007", "0000", "0004", "00", "5a", "00", "fe"), False, state)
    assert rsp.op_class == "control" and rsp.detail["umas_function"] == "STOP_PLC"


def test_exception_to_restart_keeps_control_class():
    state = mb.new_state()
    one(adu("0000", "0000", "0006", "0a", "08", "0001", "0000"), True, state)  # quickdraw part1 frame 15
    rsp = one(adu("0000", "0000", "0003", "0a", "88", "0b"), False, state)      # frame 16
    assert rsp.op_class == "control" and rsp.result == "exception"


def test_umas_response_without_state_is_other():
    rsp = one(adu("0007", "0000", "0004", "00", "5a", "00", "fe"), False)
    assert rsp.op_class == "other" and "umas_function" not in rsp.detail


def test_read_response_gets_request_start():
    state = mb.new_state()
    one(REQUESTS[2][1], True, state)     # FC 3 start 107
    rsp = one(adu("0003", "0000", "0009", "11", "03", "06", "022b", "0000", "0064"), False, state)
    assert rsp.detail["request_start"] == 107


def test_response_with_other_function_ignores_request_context():
    state = mb.new_state()
    one(adu("0007", "0000", "0004", "00", "5a", "00", "41"), True, state)
    rsp = one(adu("0007", "0000", "0006", "00", "06", "0001", "0003"), False, state)
    assert rsp.op_class == "write" and "umas_code" not in rsp.detail


def test_pending_table_is_bounded():
    state = mb.new_state()
    for tid in range(mb.MAX_PENDING * 3):
        one(adu("%04x" % tid, "0000", "0006", "01", "03", "0000", "0001"), True, state)
    assert len(state) == mb.MAX_PENDING
    assert (mb.MAX_PENDING * 3 - 1, 1) in state and (0, 1) not in state


# --- malformed messages: flags, not exceptions --------------------------------------

@pytest.mark.parametrize("msg,from_client,flags", [
    (adu("0001", "0000", "0006", "01", "03", "0000", "007e"), True, [mb.A_INVALID_LENGTH]),  # 126 > 125
    (adu("0001", "0000", "0006", "01", "01", "0000", "0000"), True, [mb.A_INVALID_LENGTH]),  # quantity 0
    (adu("0001", "0000", "0006", "01", "05", "0001", "1234"), True, [mb.A_INVALID_VALUE]),   # coil value
    (adu("0001", "0000", "0004", "01", "03", "0000"), True, [mb.A_TRUNCATED]),               # no quantity
    (adu("0001", "0000", "0009", "01", "10", "0000", "0002", "02", "0001"), True,            # bc 2 != 2*2
     [mb.A_INVALID_LENGTH]),
    (adu("0001", "0000", "0009", "01", "10", "0000", "0002", "04", "0001"), True,            # bc 4, 2 bytes
     [mb.A_TRUNCATED]),
    (adu("0001", "0000", "0007", "01", "06", "0001", "0003", "ff"), True, [mb.A_INVALID_LENGTH]),
    (adu("0001", "0000", "0006", "01", "03", "03", "000100"), False, [mb.A_INVALID_LENGTH]),   # odd bc
    (adu("0001", "0000", "0003", "01", "14", "00"), True, [mb.A_INVALID_LENGTH]),            # icsnpp frame 64
    (adu("0001", "0001", "0006", "01", "03", "0000", "0001"), True, [mb.A_PROTOCOL_ID]),
    (adu("0001", "0000", "0009", "01", "03", "0000", "0001"), True, [mb.A_INVALID_LENGTH]),  # length field lies
    (adu("0001", "0000", "0004", "01", "2b", "0e", "01"), True, [mb.A_TRUNCATED]),
    (adu("0001", "0000", "0004", "01", "2b", "05", "00"), True, [mb.A_RESERVED]),            # MEI 5
    (adu("0001", "0000", "000b", "01", "2b", "0e", "01", "01", "00", "00", "02", "00", "05", "41"),
     False, [mb.A_TRUNCATED]),                                                                # object cut short
    (adu("0001", "0000", "0002", "01", "5a"), True, [mb.A_TRUNCATED]),                       # UMAS w/o code
])
def test_malformed_is_flagged(msg, from_client, flags):
    assert one(msg, from_client).anomalies == flags


def test_truncated_pdu_keeps_fields_read_so_far():
    ev = one(adu("0001", "0000", "0007", "01", "10", "0005", "0003", "06"), True)
    assert ev.targets == [Target("holding_register", 5, 3)] and ev.anomalies == [mb.A_TRUNCATED]


#: PDUs cut inside their fields, the MBAP length matching the cut (a sender that stopped
#: short): the fields that survive at each cut, per range of data bytes after the function
#: code. tshark 4.0.17 on the same ADUs shows the reference number once its two bytes are
#: there, the count once its two bytes are there, and written values only when the whole
#: value block is; a cut inside the address shows neither. Every cut but the last is
#: also `modbus.truncated_pdu`.
CUTS = [
    ("fc5-request", True, 5, "00ac" "ff00",          # coil 172, value ON
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 172, "quantity": 1}, [Target("coil", 172, 1)]),
      (range(4, 5), {"start": 172, "quantity": 1, "values": [1]}, [Target("coil", 172, 1)])]),
    ("fc6-request", True, 6, "0001" "0003",          # register 1, value 3
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 1, "quantity": 1}, [Target("holding_register", 1, 1)]),
      (range(4, 5), {"start": 1, "quantity": 1, "values": [3]},
       [Target("holding_register", 1, 1)])]),
    ("fc15-request", True, 15, "0013" "000a" "02" "cd01",  # start 19, 10 coils, 2 bytes
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 19}, [Target("coil", 19)]),
      (range(4, 5), {"start": 19, "quantity": 10}, [Target("coil", 19, 10)]),
      (range(5, 7), {"start": 19, "quantity": 10, "byte_count": 2}, [Target("coil", 19, 10)]),
      (range(7, 8), {"start": 19, "quantity": 10, "byte_count": 2,
                     "values": [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]}, [Target("coil", 19, 10)])]),
    ("fc16-request", True, 16, "0001" "0002" "04" "000a" "0102",  # start 1, 2 registers
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 1}, [Target("holding_register", 1)]),
      (range(4, 5), {"start": 1, "quantity": 2}, [Target("holding_register", 1, 2)]),
      (range(5, 9), {"start": 1, "quantity": 2, "byte_count": 4},
       [Target("holding_register", 1, 2)]),
      (range(9, 10), {"start": 1, "quantity": 2, "byte_count": 4, "values": [10, 258]},
       [Target("holding_register", 1, 2)])]),
    ("fc3-request", True, 3, "006b" "0003",          # start 107, 3 registers
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 107}, [Target("holding_register", 107)]),
      (range(4, 5), {"start": 107, "quantity": 3}, [Target("holding_register", 107, 3)])]),
    ("fc22-request", True, 22, "0004" "00f2" "0025",  # register 4, AND 0x00F2, OR 0x0025
     [(range(0, 2), {}, []),
      (range(2, 6), {"start": 4}, [Target("holding_register", 4, 1)]),
      (range(6, 7), {"start": 4, "and_mask": 0xF2, "or_mask": 0x25},
       [Target("holding_register", 4, 1)])]),
    ("fc16-response", False, 16, "0001" "0002",      # echo: start 1, 2 registers
     [(range(0, 2), {}, []),
      (range(2, 4), {"start": 1}, []),
      (range(4, 5), {"start": 1, "quantity": 2}, [])]),
]
_HEADER_KEYS = {"transaction_id", "unit_id", "category"}


def cut_adu(fc: int, data: bytes, cut: int) -> bytes:
    """tid 1, proto 0, length = unit id + FC + the ``cut`` data bytes kept, unit 1."""
    return adu("0001", "0000", "%04x" % (2 + cut), "01", "%02x" % fc) + data[:cut]


@pytest.mark.parametrize("name,from_client,fc,data,expected", CUTS, ids=[c[0] for c in CUTS])
def test_cut_pdu_keeps_exactly_the_fields_whose_bytes_arrived(name, from_client, fc, data,
                                                              expected):
    data = bytes.fromhex(data)
    assert sorted(c for cuts, _, _ in expected for c in cuts) == list(range(len(data) + 1))
    for cuts, fields, targets in expected:
        for cut in cuts:
            msg = cut_adu(fc, data, cut)
            assert mb.frame(msg, 0) == len(msg)
            ev = one(msg, from_client)
            assert ev.function_code == fc
            assert {k: v for k, v in ev.detail.items() if k not in _HEADER_KEYS} == fields, cut
            assert ev.targets == targets, cut
            assert ev.anomalies == ([] if cut == len(data) else [mb.A_TRUNCATED]), cut


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_cut_pdus_show_the_reference_and_counts_tshark_shows(tmp_path):
    """The CUTS table's ADUs, one per TCP segment, through tshark: its reference number,
    word count and bit count per packet equal otsec's start and quantity."""
    path = tmp_path / "cuts.pcap"
    seq = {True: 1000, False: 5000}
    adus = [(from_client, cut_adu(fc, bytes.fromhex(data), cut))
            for _, from_client, fc, data, _ in CUTS
            for cut in range(len(data) // 2 + 1)]          # data is hex: 2 digits a byte
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f)
        for n, (from_client, msg) in enumerate(adus):
            ports = (40000, 502) if from_client else (502, 40000)
            hosts = (b"\x0a\0\0\x01", b"\x0a\0\0\x02")[::1 if from_client else -1]
            tcp = dpkt.tcp.TCP(sport=ports[0], dport=ports[1], seq=seq[from_client],
                               flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=msg)
            seq[from_client] += len(msg)
            ip = dpkt.ip.IP(src=hosts[0], dst=hosts[1], p=dpkt.ip.IP_PROTO_TCP, data=tcp)
            ip.len = len(bytes(ip))
            writer.writepkt(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip), ts=n)
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields",
                          "-e", "modbus.reference_num", "-e", "modbus.word_cnt",
                          "-e", "modbus.bit_cnt"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(adus)
    for line, (from_client, msg) in zip(out, adus):
        ev = one(msg, from_client)
        fc, d = ev.function_code, ev.detail
        ours = (d.get("start"), d.get("quantity") if fc in (3, 4, 16) else None,
                d.get("quantity") if fc in (1, 2, 15) else None)
        theirs = tuple(int(v) if v else None for v in line.split("\t"))
        assert ours == theirs, msg.hex()


def test_cut_read_request_still_gives_its_response_the_start():
    state = mb.new_state()
    one(adu("0003", "0000", "0004", "11", "03", "006b"), True, state)  # start 107, no quantity
    rsp = one(adu("0003", "0000", "0009", "11", "03", "06", "022b", "0000", "0064"), False, state)
    assert rsp.detail["request_start"] == 107


def test_oversized_umas_adu_is_framed_and_flagged():
    # iti_modicon_umas frame 19: length 255 (spec max 254)
    msg = adu("0007", "0000", "00ff", "00", "5a", "00", "0a") + bytes(range(251))
    assert mb.frame(msg, 0) == len(msg) == 261
    assert not mb.probe(msg, 0)  # resync/detection wants a spec-conformant header
    ev = one(msg, True)
    assert ev.anomalies == [mb.A_OVERSIZED] and ev.detail["umas_function"] == "REPEAT"


def test_header_shorter_than_a_function_code():
    ev = one(b"\x00\x01\x00\x00\x00", True)
    assert ev.anomalies == [mb.A_TRUNCATED, mb.A_INVALID_LENGTH] and ev.function == "Malformed ADU"


@pytest.mark.parametrize("header, size", [("000100000001" "01", 7)])
def test_adu_too_short_for_a_function_code_is_framed_and_flagged(header, size):
    """Length 1 (unit id, no function code) still frames: the stream stays in step and the ADU is reported."""
    msg = bytes.fromhex(header)
    assert mb.frame(msg + bytes(20), 0) == size
    assert not mb.probe(msg + bytes(20), 0)
    assert one(msg[:size], True).anomalies == [mb.A_TRUNCATED, mb.A_INVALID_LENGTH]


def test_values_are_bounded():
    msg = adu("0001", "0000", "00fd", "01", "03", "fa") + bytes(250)  # 125 registers
    assert len(one(msg, False).detail["values"]) == mb.MAX_DETAIL_VALUES
    msg = adu("0001", "0000", "00fd", "01", "01", "fa") + bytes(250)  # 2000 coils
    assert len(one(msg, False).detail["values"]) == mb.MAX_DETAIL_VALUES


# --- framing and probing ------------------------------------------------------------

ALL_MESSAGES = [m for _, m, _ in REQUESTS + RESPONSES]


@pytest.mark.parametrize("msg", ALL_MESSAGES)
def test_frame_whole_message_and_every_prefix(msg):
    assert mb.frame(msg, 0) == len(msg)
    assert mb.frame(b"junk" + msg + b"next", 4) == len(msg)
    for cut in range(len(msg)):
        assert mb.frame(msg[:cut], 0) == NEED_MORE, cut
        mb.decode(msg[:cut], True, mb.new_state())
        mb.decode(msg[:cut], False, mb.new_state())


@pytest.mark.parametrize("header", [
    "0001" "0001" "0006",   # protocol id 1
    "0001" "0000" "0105",   # length 261 > tolerated 260
    "0001" "0000" "0000",   # length 0: not even a unit id
    "1603" "0100" "a501",   # TLS record header
])
def test_unframeable_headers(header):
    assert mb.frame(bytes.fromhex(header) + bytes(300), 0) == UNFRAMEABLE
    assert not mb.probe(bytes.fromhex(header) + bytes(300), 0)


def test_protocol_id_decides_before_length_arrives():
    assert mb.frame(bytes.fromhex("00010001"), 0) == UNFRAMEABLE
    assert mb.frame(bytes.fromhex("00010000"), 0) == NEED_MORE


def test_probe_is_strict_at_stream_start():
    assert mb.probe(REQUESTS[0][1], 0)
    assert not mb.probe(REQUESTS[0][1][:7], 0)           # function code not there yet
    assert not mb.probe(adu("0000", "0000", "0006", "01", "00", "00000000"), 0)  # FC 0
    assert mb.probe(adu("0000", "0000", "0003", "01", "80", "01"), 0)  # exception to FC 0: byte 0x80
    assert not mb.probe(REQUESTS[0][1], 20) and not mb.probe(REQUESTS[0][1], -1)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n",
    bytes.fromhex("160301020001"),                        # TLS ClientHello
    bytes.fromhex("05000b0310000000"),                    # DCE/RPC bind
    bytes.fromhex("0300001611e00000000100c0010ac1020100c2020102"),  # TPKT/COTP CR
    b"\x00" * 64,
    b"\xff" * 64,
])
def test_garbage_on_port_502_is_not_probed_as_modbus(garbage):
    assert not any(mb.probe(garbage, p) for p in range(len(garbage)))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=64))
def test_probe_rejects_random_bytes(data):
    if mb.probe(data, 0):  # only a zero protocol id and a sane length get through
        assert data[2:4] == b"\0\0" and 2 <= int.from_bytes(data[4:6], "big") <= mb.LENGTH_SPEC_MAX


# --- fuzzing ------------------------------------------------------------------------

def _assert_sane(events):
    for ev in events:
        assert set(ev.anomalies) <= ALL_FLAGS
        assert ev.op_class in OP_CLASSES and ev.kind in ("request", "response")
        json.dumps(ev.to_dict())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_decode_random_bytes(data, from_client):
    _assert_sane(mb.decode(data, from_client, mb.new_state()))
    _assert_sane(mb.decode(data, from_client, None))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_MESSAGES), st.integers(0, 300), st.binary(min_size=1, max_size=4),
       st.booleans())
def test_fuzz_decode_mutated_real_messages(msg, where, patch, from_client):
    pos = where % len(msg)
    mutated = msg[:pos] + patch + msg[pos + len(patch):]
    _assert_sane(mb.decode(mutated, from_client, mb.new_state()))
    n = mb.frame(mutated, 0)
    assert n in (NEED_MORE, UNFRAMEABLE) or 7 <= n <= 6 + mb.LENGTH_TOLERATED_MAX


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 310))
def test_fuzz_frame(data, pos):
    n = mb.frame(data, pos)
    assert n in (NEED_MORE, UNFRAMEABLE) or (7 <= n <= len(data) - pos)
    assert mb.probe(data, pos) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ALL_MESSAGES), min_size=1, max_size=8))
def test_stream_of_messages_frames_back_exactly(msgs):
    stream = b"".join(msgs)
    pos, out = 0, []
    while pos < len(stream):
        n = mb.frame(stream, pos)
        assert n > 0
        out.append(stream[pos:pos + n])
        pos += n
    assert out == msgs


# --- the doc page names every flag --------------------------------------------------

def test_doc_lists_every_anomaly_flag_and_op_class_row():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocols" / "modbus.md").read_text()
    for flag in ALL_FLAGS:
        assert "`%s`" % flag in doc, flag
    for fc, name in mb.FUNCTION_NAMES.items():
        assert re.search(r"\|\s*%d\b.*%s" % (fc, re.escape(name)), doc), name
