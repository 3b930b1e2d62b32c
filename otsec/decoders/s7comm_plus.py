"""S7comm-plus (S7-1200/1500, protocol id 0x72) header decoding; used by :mod:`otsec.decoders.s7comm`.

Only the cleartext header of each PDU is decoded (what a passive monitor can rely on);
the body is read only for a few security-relevant cases. Layout (one COTP TSDU)::

    +------+---------+-------------+---------------------------+------------------+---------+
    | 0x72 | version | data length | [V3: digest len, digest]  | data             | trailer |
    |      | 1 byte  | BE16        |  1 + 32 bytes             |                  | 72 vv 00 00
    +------+---------+-------------+---------------------------+------------------+---------+
    data (request):  opcode 0x31 | reserved(2) | function(2) | reserved(2) | sequence(2) |
                     session id(4) | transport flags(1) | body ...
    data (response): opcode 0x32 (or 0x02 "Response2") | reserved(2) | function(2) |
                     reserved(2) | sequence(2) | transport flags(1) | return value (VLQ) ...
    notification:    opcode 0x33 | subscription data ...

Versions: 0x01 V1 (connection setup), 0x02 V2, 0x03 V3 (firmware >= 1.5: a 32-byte
integrity digest precedes the data; the data itself is cleartext), 0xFE short system PDU
without trailer, 0xFF keep-alive. Newer firmware (TIA V17+, "TLS") wraps everything in
TLS inside COTP: such TSDUs do not start with 0x72 and are reported as opaque.

A large PDU is split into several 0x72 frames of which only the last has a trailer;
the frames in between are *continuation fragments*. The PDU is reported once, when the
fragment with the trailer arrives, carrying ``detail["continuation_fragments"]``.

Variable-length quantities (VLQ) use 7 bits per byte, high bit = more bytes follow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from otsec.model import Event, Target

PLUS_ID = 0x72
HEADER_LEN = 4
TRAILER_LEN = 4
V3_DIGEST_LEN = 32

PDU_CONNECT = 0x01
PDU_DATA = 0x02
PDU_DATA_FW15 = 0x03
PDU_SYSTEM = 0xFE
PDU_KEEPALIVE = 0xFF
#: PDU type (version byte) -> name, as the corpus truth names them.
PDU_TYPE_NAMES = {
    PDU_CONNECT: "Connect(V1)",
    PDU_DATA: "Data(V2)",
    PDU_DATA_FW15: "DataFW1_5(V3)",
    PDU_SYSTEM: "System (0xfe)",
    PDU_KEEPALIVE: "KeepAlive",
}
_FRAMED_TYPES = frozenset({PDU_CONNECT, PDU_DATA, PDU_DATA_FW15})

OP_REQUEST = 0x31
OP_RESPONSE = 0x32
OP_NOTIFICATION = 0x33
OP_RESPONSE2 = 0x02
OPCODE_NAMES = {OP_REQUEST: "Request", OP_RESPONSE: "Response",
                OP_NOTIFICATION: "Notification", OP_RESPONSE2: "Response2"}
_OPCODE_KIND = {OP_REQUEST: "request", OP_RESPONSE: "response",
                OP_RESPONSE2: "response", OP_NOTIFICATION: "notification"}

F_EXPLORE = 0x04BB
F_CREATE_OBJECT = 0x04CA
F_DELETE_OBJECT = 0x04D4
F_SET_VARIABLE = 0x04F2
#: Function code -> (name, operation class). CreateObject/DeleteObject are refined per object.
FUNCTIONS = {
    F_EXPLORE: ("Explore", "read"),
    F_CREATE_OBJECT: ("CreateObject", "program"),
    F_DELETE_OBJECT: ("DeleteObject", "program"),
    F_SET_VARIABLE: ("SetVariable", "write"),
    0x04FC: ("GetVariable", "read"),
    0x0506: ("AddLink", "session"),
    0x051A: ("RemoveLink", "session"),
    0x0524: ("GetLink", "read"),
    0x0542: ("SetMultiVariables", "write"),
    0x054C: ("GetMultiVariables", "read"),
    0x0556: ("BeginSequence", "program"),
    0x0560: ("EndSequence", "program"),
    0x056B: ("Invoke", "control"),
    0x057C: ("SetVarSubStreamed", "write"),
    0x0586: ("GetVarSubStreamed", "read"),
    0x0590: ("GetVariablesAddress", "read"),
    0x059A: ("Abort", "session"),
    0x05A9: ("Error", "other"),
}

#: Object ids / class ids of the S7comm-plus object model that decide an operation class.
OBJECT_NULL_SERVER_SESSION = 0x120   # session id of requests sent before a session exists
CLASS_SERVER_SESSION = 287
CLASS_SUBSCRIPTION = 1001
OBJECT_CPU_EXEC_UNIT = 0x34          # "theCPUexecUnit": the CPU's run-state object
ATTR_OPERATING_STATE_REQ = 2167      # its "operatingStateREQ" attribute (1 STOP, 3 RUN)
CPU_STATE_REQUEST_NAMES = {1: "STOP", 3: "RUN"}
_CLASS_OP = {CLASS_SERVER_SESSION: "session", CLASS_SUBSCRIPTION: "read"}
ITEM_START_OBJECT = 0xA1

#: Operation header after opcode and 2 reserved bytes: function, 2 reserved, sequence.
_OPERATION = struct.Struct(">HxxH")

MAX_CONTINUATION_FRAGMENTS = 1024    # per PDU; the corpus peaks at a few dozen
MAX_TRACKED_OBJECTS = 256            # created-object ids remembered per connection
MAX_PENDING_CREATES = 64             # CreateObject requests awaiting their response


@dataclass(slots=True)
class _PendingPdu:
    """A fragmented PDU whose trailer has not arrived yet (one per direction)."""
    event: Event
    continuations: int = 0


@dataclass(slots=True)
class PlusState:
    """Per-connection S7comm-plus state; every map is capped by a named constant."""
    pending: dict[bool, _PendingPdu] = field(default_factory=dict)   # by from_client
    session_id: int | None = None
    creates: dict[int, str] = field(default_factory=dict)   # request sequence -> op class
    objects: dict[int, str] = field(default_factory=dict)   # created object id -> op class


def plausible_start(buf: bytes, start: int, end: int) -> bool:
    """Does an S7comm-plus PDU (or fragment) start at ``start``? Used by the probe."""
    if min(end, len(buf)) - start < HEADER_LEN or buf[start] != PLUS_ID:
        return False
    ptype = buf[start + 1]
    if ptype == PDU_KEEPALIVE:
        return True
    if ptype not in _FRAMED_TYPES and ptype != PDU_SYSTEM:
        return False
    dlen = (buf[start + 2] << 8) | buf[start + 3]
    return 0 < dlen <= end - start - HEADER_LEN


def vlq(buf: bytes, pos: int, limit: int = 10) -> tuple[int, int]:
    """Decode an unsigned VLQ at ``pos`` -> (value, next position). IndexError if cut."""
    value = 0
    for i in range(limit):
        b = buf[pos + i]
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos + i + 1
    return value, pos + limit


def _remember(table: dict, key: int, value: str, cap: int) -> None:
    if key not in table and len(table) >= cap:
        table.pop(next(iter(table)))
    table[key] = value


def decode_plus(tsdu: bytes, from_client: bool, st: PlusState) -> list[Event]:
    """Decode one COTP TSDU that starts with 0x72; fragments are held until the trailer."""
    ptype = tsdu[1] if len(tsdu) > 1 else None
    if len(tsdu) < HEADER_LEN:
        return [_event("Truncated PDU", "other", "notification", ptype, ["s7comm-plus.truncated_pdu"])]
    dlen = tsdu[2] << 8 | tsdu[3]
    if ptype == PDU_KEEPALIVE:
        return [_event("Keep Alive", "session", "notification", ptype)]
    if ptype not in _FRAMED_TYPES:
        ev = _event("System PDU" if ptype == PDU_SYSTEM else f"Unknown PDU type 0x{ptype:02x}",
                    "session" if ptype == PDU_SYSTEM else "other", "notification", ptype,
                    [] if ptype == PDU_SYSTEM else ["s7comm-plus.unknown_pdu_type"])
        ev.detail["data_length"] = dlen
        return [ev]
    has_trailer = len(tsdu) > dlen + HEADER_LEN
    pending = st.pending.get(from_client) if st.pending else None
    if pending is not None:
        pending.continuations += 1
        if has_trailer or pending.continuations >= MAX_CONTINUATION_FRAGMENTS:
            del st.pending[from_client]
            pending.event.detail["continuation_fragments"] = pending.continuations
            if not has_trailer:
                pending.event.anomalies.append("s7comm-plus.too_many_fragments")
            return [pending.event]
        return []
    try:
        ev = _decode_pdu(tsdu, ptype, dlen, from_client, st)
    except (IndexError, ValueError):
        ev = _event("Truncated PDU", "other", "notification", ptype, ["s7comm-plus.truncated_pdu"])
    if has_trailer:
        return [ev]
    st.pending[from_client] = _PendingPdu(ev)
    return []


def _event(function: str, op_class: str, kind: str, ptype: int | None,
           anomalies: list[str] | None = None) -> Event:
    detail = {"pdu_type": ptype, "pdu_type_name": PDU_TYPE_NAMES.get(ptype, "unknown")}
    return Event(protocol="s7comm-plus", kind=kind, function=function, op_class=op_class,
                 anomalies=anomalies or [], detail=detail)


def _decode_pdu(b: bytes, ptype: int, dlen: int, from_client: bool, st: PlusState) -> Event:
    off = HEADER_LEN
    integrity = ptype == PDU_DATA_FW15
    if integrity:
        off += 1 + b[off]
    opcode = b[off]
    kind = _OPCODE_KIND.get(opcode)
    if kind is None:
        ev = _event(f"Unknown opcode 0x{opcode:02x}", "other", "notification", ptype,
                    ["s7comm-plus.unknown_opcode"])
    elif opcode == OP_NOTIFICATION:
        ev = _event("Notification", "read", kind, ptype)
    else:
        ev = _decode_operation(b, off, opcode, kind, ptype, st)
    detail = ev.detail
    detail["opcode"] = opcode
    detail["opcode_name"] = OPCODE_NAMES.get(opcode, "unknown")
    detail["data_length"] = dlen
    if integrity:
        detail["integrity"] = True
    return ev


def _decode_operation(b: bytes, off: int, opcode: int, kind: str, ptype: int,
                      st: PlusState) -> Event:
    if off + 9 > len(b):
        raise IndexError("operation header cut")
    function, seq = _OPERATION.unpack_from(b, off + 3)
    known = FUNCTIONS.get(function)
    if known is None:
        ev = _event(f"Unknown function 0x{function:04x}", "other", kind, ptype,
                    ["s7comm-plus.unknown_function"])
    else:
        ev = _event(known[0], known[1], kind, ptype, [])
    ev.function_code = function
    ev.pair_key = ("s7comm-plus", seq)
    ev.detail["sequence"] = seq
    body = off + 9
    if kind == "request":
        session = int.from_bytes(b[body:body + 4], "big")
        ev.detail["session_id"] = session
        _classify_request(ev, b, body + 5, function, seq, session, st)
    else:
        _decode_response(ev, b, body + 1, function, seq, ptype, st)
    return ev


def _classify_request(ev: Event, b: bytes, body: int, function: int, seq: int,
                      session: int, st: PlusState) -> None:
    """Refine the op class of requests whose meaning depends on the object they touch."""
    if function == F_CREATE_OBJECT:
        ev.op_class = _created_class_op(b, body, session)
        _remember(st.creates, seq, ev.op_class, MAX_PENDING_CREATES)
    elif function == F_DELETE_OBJECT:
        obj = int.from_bytes(b[body:body + 4], "big")
        ev.targets.append(_object_target(obj))
        if obj == st.session_id:
            ev.op_class = "session"
        else:
            ev.op_class = st.objects.pop(obj, ev.op_class)
    elif function == F_SET_VARIABLE:
        obj = int.from_bytes(b[body:body + 4], "big")
        _, pos = vlq(b, body + 4)          # item count
        attr, pos = vlq(b, pos)
        ev.targets.append(_object_target(obj, attr))
        if obj == OBJECT_CPU_EXEC_UNIT and attr == ATTR_OPERATING_STATE_REQ:
            value, _ = vlq(b, pos + 2)      # value flags(1), datatype(1), value
            ev.op_class = "control"
            ev.detail["cpu_state_request"] = CPU_STATE_REQUEST_NAMES.get(value, value)


def _created_class_op(b: bytes, body: int, session: int) -> str:
    """Op class of a CreateObject: by the class id of the object it creates."""
    if session == OBJECT_NULL_SERVER_SESSION:
        return "session"
    start = b.find(bytes([ITEM_START_OBJECT]), body, body + 16)
    if start < 0:
        return FUNCTIONS[F_CREATE_OBJECT][1]
    class_id, _ = vlq(b, start + 5)        # start-of-object, relation id(4), class id
    return _CLASS_OP.get(class_id, FUNCTIONS[F_CREATE_OBJECT][1])


def _object_target(obj: int, attr: int | None = None) -> Target:
    name = f"0x{obj:08x}" if attr is None else f"0x{obj:08x}.{attr}"
    return Target(kind="object" if attr is None else "variable", name=name)


def _decode_response(ev: Event, b: bytes, pos: int, function: int, seq: int, ptype: int,
                     st: PlusState) -> None:
    retval, pos = vlq(b, pos)
    error_code = retval & 0xFFFF
    failed = error_code >= 0x8000          # the low 16 bits are a signed error code
    ev.result = "error" if failed else "ok"
    ev.detail["return_value"] = retval
    if failed:
        ev.status = f"Error {error_code - 0x10000} (return value 0x{retval:x})"
    if function != F_CREATE_OBJECT:
        return
    op_class = st.creates.pop(seq, None)
    if op_class is not None:
        ev.op_class = op_class
    count = b[pos]
    if count:
        obj, _ = vlq(b, pos + 1)
        ev.targets.append(_object_target(obj))
        if op_class == "session" or ptype == PDU_CONNECT:
            st.session_id = obj
        elif op_class is not None:
            _remember(st.objects, obj, op_class, MAX_TRACKED_OBJECTS)
    if ptype == PDU_CONNECT:
        ev.identity = _connect_identity(b)


def _connect_identity(b: bytes) -> dict[str, str] | None:
    """The PLC's order number and firmware from the session-creation response.

    The ServerSession object carries a string ``"<n>;<order number> ;V<major>.<minor>"``.
    """
    at = b.find(b";6E")
    if at < 0:
        return None
    end = b.find(b";V", at + 1, at + 40)
    if end < 0:
        return None
    order = b[at + 1:end].decode("ascii", "replace").strip()
    stop = end + 2
    while stop < len(b) and stop < end + 14 and (b[stop:stop + 1].isdigit() or b[stop] == 0x2E):
        stop += 1
    identity = {"vendor": "Siemens", "order_number": order}
    if stop > end + 2:
        identity["firmware"] = "V" + b[end + 2:stop].decode("ascii")
    return identity
