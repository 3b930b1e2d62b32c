r"""Modbus/TCP decoder: MBAP framing, every public function code, Schneider UMAS header.

Wire format (big-endian)::

    0        2        4        6      7      8
    +--------+--------+--------+------+------+--------------------------+
    | trans  | proto  | length | unit | func | function data ...        |
    | id     | id = 0 |        | id   | code |                          |
    +--------+--------+--------+------+------+--------------------------+
    \________ MBAP header (7) _______/\_______ PDU (1..253 bytes) ______/
    length counts unit id + PDU, so 2..254 by the spec.

A server answers with the request's function code, or with ``code | 0x80`` and one
exception-code byte. Function 43 carries an MEI type (13 CANopen, 14 Read Device
Identification); function 90 carries Schneider UMAS::

    request:  | 0x5A | pairing key (1) | UMAS code (1)          | data ... |
    response: | 0x5A | pairing key (1) | 0xFE ok / 0xFD error   | data ... |

Decoding is per message; the only state is a small table of pending requests so a
response (which carries no addresses, MEI type or UMAS code) can be described with
the request's context. It is optional: with ``state=None`` every message still decodes.
"""

from __future__ import annotations

import struct

from otsec.decoders.base import NEED_MORE, UNFRAMEABLE, Decoder
from otsec.model import Event, Target

# --- framing limits --------------------------------------------------------------
MBAP_LEN = 7                    # header including the unit id
LENGTH_MIN = 2                  # unit id + function code
LENGTH_FRAMED_MIN = 1           # unit id only: still framed (and flagged) to stay in step;
                                # 0 cannot be an ADU and is left to resynchronisation
LENGTH_SPEC_MAX = 254           # unit id + 253-byte PDU (Modbus Application Protocol v1.1b3)
#: Largest length field still framed. Vendor stacks overrun the spec (Schneider UMAS
#: sends length 255); beyond the 260-byte ADU size the bytes are taken as not Modbus.
LENGTH_TOLERATED_MAX = 260

# --- spec quantity limits ---------------------------------------------------------
MAX_READ_BITS = 2000            # FC 1, 2
MAX_READ_REGISTERS = 125        # FC 3, 4, 23 (read part)
MAX_WRITE_COILS = 1968          # FC 15
MAX_WRITE_REGISTERS = 123       # FC 16
MAX_RW_WRITE_REGISTERS = 121    # FC 23 (write part)
MAX_FIFO_COUNT = 31             # FC 24
FILE_SUBREQ_LEN = 7             # FC 20 sub-request: ref type, file, record, length
FILE_REF_TYPE = 6
FILE_READ_MAX = 0xF5            # FC 20 byte count: 35 sub-requests
FILE_WRITE_MIN, FILE_WRITE_MAX = 0x09, 0xFB   # FC 21 request data length
COIL_ON, COIL_OFF = 0xFF00, 0x0000

# --- caps on what is copied into an event ------------------------------------------
MAX_DETAIL_VALUES = 125         # register/coil values listed per message
MAX_DETAIL_RAW = 64             # bytes of opaque data shown as hex
MAX_FILE_RECORDS = 35           # sub-requests per file-record message (245 / 7)
MAX_OBJECT_CHARS = 128          # characters kept per device-identification object
MIN_ID_TEXT = 4                 # printable characters for Report Slave ID data to count as text
MAX_PENDING = 64                # requests remembered per connection for their responses

# --- anomaly flags ----------------------------------------------------------------
A_INVALID_LENGTH = "modbus.invalid_length"          # count/quantity/size mismatch or out of range
A_TRUNCATED = "modbus.truncated_pdu"                # PDU ends before its function's fields do
A_OVERSIZED = "modbus.oversized_adu"                # length field above the spec's 254
A_PROTOCOL_ID = "modbus.invalid_protocol_id"        # MBAP protocol id is not 0
A_INVALID_VALUE = "modbus.invalid_value"            # e.g. a coil value other than 0xFF00/0x0000
A_UNKNOWN_EXCEPTION = "modbus.unknown_exception_code"
A_RESERVED = "modbus.reserved_function"             # FC/MEI reserved for legacy products
A_USER_DEFINED = "modbus.user_defined_function"     # FC 65-72, 100-110
A_UNASSIGNED = "modbus.unassigned_function"         # public range, never assigned
A_INVALID_FC = "modbus.invalid_function_code"       # FC 0, or the exception bit in a request

# --- tables (names as Wireshark/tshark shows them) --------------------------------
FUNCTION_NAMES = {
    1: "Read Coils", 2: "Read Discrete Inputs", 3: "Read Holding Registers",
    4: "Read Input Registers", 5: "Write Single Coil", 6: "Write Single Register",
    7: "Read Exception Status", 8: "Diagnostics", 11: "Get Comm. Event Counters",
    12: "Get Comm. Event Log", 15: "Write Multiple Coils", 16: "Write Multiple Registers",
    17: "Report Slave ID", 20: "Read File Record", 21: "Write File Record",
    22: "Mask Write Register", 23: "Read Write Register", 24: "Read FIFO Queue",
    43: "Encapsulated Interface Transport", 90: "Unity (Schneider)",
}
UMAS_FC = 90
MEI_FC = 43
USER_DEFINED_FCS = frozenset(range(65, 73)) | frozenset(range(100, 111))
#: Reserved for legacy products (spec annex A); 90 is decoded as UMAS instead.
RESERVED_FCS = frozenset({9, 10, 13, 14, 41, 42, 91, 125, 126, 127})

OP_CLASS = {
    1: "read", 2: "read", 3: "read", 4: "read", 20: "read", 24: "read",
    5: "write", 6: "write", 15: "write", 16: "write", 21: "write", 22: "write", 23: "write",
    7: "diagnostic", 8: "diagnostic", 11: "diagnostic", 12: "diagnostic",
    17: "identify",
}

EXCEPTION_NAMES = {
    1: "Illegal function", 2: "Illegal data address", 3: "Illegal data value",
    4: "Slave device failure", 5: "Acknowledge", 6: "Slave device busy",
    8: "Memory parity error", 10: "Gateway path unavailable",
    11: "Gateway target device failed to respond",
}

DIAGNOSTIC_NAMES = {
    0: "Return Query Data", 1: "Restart Communications Option",
    2: "Return Diagnostic Register", 3: "Change ASCII Input Delimiter",
    4: "Force Listen Only Mode", 10: "Clear Counters and Diagnostic Register",
    11: "Return Bus Message Count", 12: "Return Bus Communication Error Count",
    13: "Return Bus Exception Error Count", 14: "Return Slave Message Count",
    15: "Return Slave No Response Count", 16: "Return Slave NAK Count",
    17: "Return Slave Busy Count", 18: "Return Bus Character Overrun Count",
    20: "Clear Overrun Counter and Flag",
}
#: Diagnostics sub-functions that change the device's run state rather than report.
DIAGNOSTIC_CONTROL = frozenset({1, 4})

MEI_CANOPEN, MEI_DEVICE_ID = 13, 14
MEI_NAMES = {MEI_CANOPEN: "CANopen Request/Response", MEI_DEVICE_ID: "Read Device Identification"}
MEI_OP_CLASS = {MEI_CANOPEN: "other", MEI_DEVICE_ID: "identify"}
READ_DEVICE_ID_CODES = {1: "Basic", 2: "Regular", 3: "Extended", 4: "Specific"}
#: Device-identification objects 0-6 and the Event.identity key each one fills.
DEVICE_ID_OBJECTS = {
    0: ("VendorName", "vendor"), 1: ("ProductCode", "product_code"),
    2: ("MajorMinorRevision", "revision"), 3: ("VendorURL", "vendor_url"),
    4: ("ProductName", "product_name"), 5: ("ModelName", "model_name"),
    6: ("UserApplicationName", "user_application_name"),
}

UMAS_OK, UMAS_ERROR = 0xFE, 0xFD
#: Schneider UMAS codes (names as in Wireshark's UMAS dissector) and their op class.
UMAS_FUNCTIONS = {
    0x01: ("INIT_COMM", "session"), 0x02: ("READ_ID", "identify"),
    0x03: ("READ_PROJECT_INFO", "identify"), 0x04: ("READ_PLC_INFO", "diagnostic"),
    0x06: ("READ_CARD_INFO", "diagnostic"), 0x0A: ("REPEAT", "diagnostic"),
    0x10: ("TAKE_PLC_RESERVATION", "session"), 0x11: ("RELEASE_PLC_RESERVATION", "session"),
    0x12: ("KEEP_ALIVE", "session"), 0x20: ("READ_MEMORY_BLOCK", "read"),
    0x22: ("READ_VARIABLES", "read"), 0x23: ("WRITE_VARIABLES", "write"),
    0x24: ("READ_COILS_REGISTERS", "read"), 0x25: ("WRITE_COILS_REGISTERS", "write"),
    0x26: ("DATA_DICTIONARY", "read"), 0x30: ("INITIALIZE_UPLOAD", "program"),
    0x31: ("UPLOAD_BLOCK", "program"), 0x32: ("END_STRATEGY_UPLOAD", "program"),
    0x33: ("INITIALIZE_DOWNLOAD", "program"), 0x34: ("DOWNLOAD_BLOCK", "program"),
    0x35: ("END_STRATEGY_DOWNLOAD", "program"), 0x39: ("READ_ETH_MASTER_DATA", "read"),
    0x40: ("START_PLC", "control"), 0x41: ("STOP_PLC", "control"),
    0x50: ("MONITOR_PLC", "read"), 0x58: ("CHECK_PLC", "diagnostic"),
    0x70: ("READ_IO_OBJECT", "read"), 0x71: ("WRITE_IO_OBJECT", "write"),
    0x73: ("GET_STATUS_MODULE", "diagnostic"),
}

def _umas(code: int) -> tuple[str, str]:
    """Name and operation class of a UMAS code."""
    return UMAS_FUNCTIONS.get(code) or ("UNKNOWN_0x%02X" % code, "other")


_HEADER = struct.Struct(">HHHBB")       # trans id, proto id, length, unit id, function code
_U16 = struct.Struct(">H")
_U16X2 = struct.Struct(">HH")
_U16X3 = struct.Struct(">HHH")


# --- framing ------------------------------------------------------------------------

def probe(buf: bytes, pos: int) -> bool:
    """A plausible MBAP header with a function code starts at ``pos`` (detection/resync).

    Stricter than :func:`frame`: only the spec's length range, and FC 0 is refused (it
    is never sent in normal traffic and makes zero-filled bytes look like Modbus).
    Once in step, ``frame``/``decode`` still handle both.
    """
    if pos < 0 or len(buf) - pos < MBAP_LEN + 1:
        return False
    _, proto, length, _, fc = _HEADER.unpack_from(buf, pos)
    return proto == 0 and LENGTH_MIN <= length <= LENGTH_SPEC_MAX and fc != 0


def frame(buf: bytes, pos: int) -> int:
    """Size of the ADU at ``pos`` (6 + length field), NEED_MORE or UNFRAMEABLE."""
    avail = len(buf) - pos
    if avail < 4:
        return NEED_MORE
    if buf[pos + 2] or buf[pos + 3]:
        return UNFRAMEABLE
    if avail < 6:
        return NEED_MORE
    length = (buf[pos + 4] << 8) | buf[pos + 5]
    if not LENGTH_FRAMED_MIN <= length <= LENGTH_TOLERATED_MAX:
        return UNFRAMEABLE
    return 6 + length if avail >= 6 + length else NEED_MORE


def new_state() -> dict:
    """Pending requests by (transaction id, unit id), oldest first, at most MAX_PENDING."""
    return {}


# --- helpers ------------------------------------------------------------------------

def _category(fc: int) -> str:
    if fc in FUNCTION_NAMES:
        return "vendor" if fc == UMAS_FC else "public"
    if fc in USER_DEFINED_FCS:
        return "user_defined"
    if fc in RESERVED_FCS:
        return "reserved"
    return "invalid" if fc == 0 else "unassigned"


_CATEGORY_FLAG = {"user_defined": A_USER_DEFINED, "reserved": A_RESERVED,
                  "unassigned": A_UNASSIGNED, "invalid": A_INVALID_FC}
_CATEGORY_LABEL = {"user_defined": "User-defined function", "reserved": "Reserved function",
                   "unassigned": "Unassigned function", "invalid": "Invalid function"}


def _fc_info(fc: int) -> tuple[str, str, str, str | None]:
    """(function name, op class, category, category anomaly flag or None) of a code."""
    category = _category(fc)
    name = FUNCTION_NAMES.get(fc) or "%s (%d)" % (_CATEGORY_LABEL[category], fc)
    return name, OP_CLASS.get(fc, "other"), category, _CATEGORY_FLAG.get(category)


#: Everything the header's function code decides, per code (exception bit cleared).
_FC_INFO = tuple(_fc_info(fc) for fc in range(0x80))
#: Bits of each byte value, least significant first (coil/input order on the wire).
_BYTE_BITS = tuple(tuple((b >> i) & 1 for i in range(8)) for b in range(256))
#: Big-endian register arrays by length, up to the detail cap.
_WORDS = tuple(struct.Struct(">%dH" % n) for n in range(MAX_DETAIL_VALUES + 1))
_FILE_SUBREQ = struct.Struct(">BHHH")
_U16X4 = struct.Struct(">HHHH")
_U8X5 = struct.Struct(">BBBBB")


def _hex(data: bytes) -> str:
    return data[:MAX_DETAIL_RAW].hex()


def _words(data: bytes) -> list[int]:
    n = min(len(data) >> 1, MAX_DETAIL_VALUES)
    return list(_WORDS[n].unpack_from(data)) if n else []


def _bits(data: bytes, count: int) -> list[int]:
    count = min(count, len(data) * 8, MAX_DETAIL_VALUES)
    out: list[int] = []
    for byte in data[:(count + 7) >> 3]:
        out += _BYTE_BITS[byte]
    del out[count:]
    return out


def _text(raw: bytes) -> str:
    return raw[:MAX_OBJECT_CHARS].decode("latin-1").replace("\x00", "").strip()


def _exact(ev: Event, data: bytes, size: int) -> None:
    """The fields ended at ``size``: flag a PDU that is longer (a shorter one raised already)."""
    if len(data) > size:
        ev.anomalies.append(A_INVALID_LENGTH)
        ev.detail["trailing_bytes"] = len(data) - size


def _need(data: bytes, size: int) -> None:
    if len(data) < size:
        raise IndexError(size)


def _start(ev: Event, data: bytes, kind: str, count: int | None = None) -> Target | None:
    """The leading start address, kept (with a request's target; a response names none)
    before any later field is read: a PDU cut after it still names what it addresses, as
    Wireshark still shows its reference number. A cut inside the address raises before
    anything is kept."""
    start = _U16.unpack_from(data)[0]
    ev.detail["start"] = start
    if ev.kind != "request":
        return None
    target = Target(kind, start, count)
    ev.targets.append(target)
    return target


def _quantity(ev: Event, data: bytes, target: Target | None) -> int:
    """The quantity after the start address, completing the request target :func:`_start` made."""
    qty = ev.detail["quantity"] = _U16.unpack_from(data, 2)[0]
    if target is not None:
        target.count = qty
    return qty


# --- requests -----------------------------------------------------------------------

def _req_read(kind: str, limit: int):
    def parse(ev: Event, data: bytes, ctx: dict) -> None:
        target = _start(ev, data, kind)
        ctx["start"] = target.start
        if not 1 <= _quantity(ev, data, target) <= limit:
            ev.anomalies.append(A_INVALID_LENGTH)
        if len(data) > 4:
            _exact(ev, data, 4)
    return parse


def _write_single(kind: str):
    """FC 5/6 request and its echo: address and value (a coil's value is ON/OFF)."""
    coil = kind == "coil"

    def parse(ev: Event, data: bytes, ctx: dict) -> None:
        _start(ev, data, kind, 1)
        ev.detail["quantity"] = 1
        value = _U16.unpack_from(data, 2)[0]
        if coil:
            if value == COIL_ON:
                value = 1
            elif value == COIL_OFF:
                value = 0
            else:
                ev.anomalies.append(A_INVALID_VALUE)
        ev.detail["values"] = [value]
        if len(data) > 4:
            _exact(ev, data, 4)
    return parse


def _written_values(ev: Event, data: bytes, at: int, expected: int, unpack) -> None:
    """The byte count at ``at`` (checked against what the quantity implies), then the
    values it announces, which end the PDU: the tail of every multi-value write."""
    count = data[at]
    ev.detail["byte_count"] = count
    if count != expected:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, at + 1 + count)
    ev.detail["values"] = unpack(data[at + 1:at + 1 + count])
    _exact(ev, data, at + 1 + count)


def _req_write_coils(ev: Event, data: bytes, ctx: dict) -> None:
    qty = _quantity(ev, data, _start(ev, data, "coil"))
    if not 1 <= qty <= MAX_WRITE_COILS:
        ev.anomalies.append(A_INVALID_LENGTH)
    _written_values(ev, data, 4, (qty + 7) // 8, lambda raw: _bits(raw, qty))


def _req_write_registers(ev: Event, data: bytes, ctx: dict) -> None:
    qty = _quantity(ev, data, _start(ev, data, "holding_register"))
    if not 1 <= qty <= MAX_WRITE_REGISTERS:
        ev.anomalies.append(A_INVALID_LENGTH)
    _written_values(ev, data, 4, 2 * qty, _words)


def _no_data(ev: Event, data: bytes, ctx: dict) -> None:
    _exact(ev, data, 0)


def _diagnostics(ev: Event, data: bytes, ctx: dict) -> None:
    """Request and response alike: sub-function + data words (usually echoed)."""
    sub = _U16.unpack_from(data)[0]
    ev.detail["sub_function"] = sub
    ev.detail["sub_function_name"] = DIAGNOSTIC_NAMES.get(sub, "Reserved (%d)" % sub)
    if sub in DIAGNOSTIC_CONTROL:
        ev.op_class = "control"
    rest = data[2:]
    ev.detail["data"] = _words(rest) if len(rest) % 2 == 0 else _hex(rest)


def _req_read_file(ev: Event, data: bytes, ctx: dict) -> None:
    count = data[0]
    ev.detail["byte_count"] = count
    if count % FILE_SUBREQ_LEN or not FILE_SUBREQ_LEN <= count <= FILE_READ_MAX:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 1 + count)
    records = []
    for off in range(1, 1 + count - FILE_SUBREQ_LEN + 1, FILE_SUBREQ_LEN):
        ref, file_no, record, length = _FILE_SUBREQ.unpack_from(data, off)
        if len(records) < MAX_FILE_RECORDS:
            records.append({"reference_type": ref, "file": file_no, "record": record,
                            "length": length})
            ev.targets.append(Target(kind="file_record", start=record, count=length,
                                     name="file:%d" % file_no))
        if ref != FILE_REF_TYPE:
            ev.anomalies.append(A_INVALID_VALUE)
    ev.detail["records"] = records
    _exact(ev, data, 1 + count)


def _write_file(ev: Event, data: bytes, ctx: dict) -> None:
    """Write File Record request (and its echoed response): records with their data."""
    count = data[0]
    ev.detail["byte_count"] = count
    if not FILE_WRITE_MIN <= count <= FILE_WRITE_MAX:
        ev.anomalies.append(A_INVALID_LENGTH)
    records = []
    off = 1
    end = 1 + count
    while off < end:
        ref, file_no, record, length = _FILE_SUBREQ.unpack_from(data, off)
        values = data[off + FILE_SUBREQ_LEN:off + FILE_SUBREQ_LEN + 2 * length]
        _need(values, 2 * length)
        if len(records) < MAX_FILE_RECORDS:
            records.append({"reference_type": ref, "file": file_no, "record": record,
                            "length": length, "values": _words(values)})
            if ev.kind == "request":
                ev.targets.append(Target(kind="file_record", start=record, count=length,
                                         name="file:%d" % file_no))
        if ref != FILE_REF_TYPE:
            ev.anomalies.append(A_INVALID_VALUE)
        off += FILE_SUBREQ_LEN + 2 * length
    ev.detail["records"] = records
    if off != end:
        ev.anomalies.append(A_INVALID_LENGTH)
    _exact(ev, data, end)


def _mask_write(ev: Event, data: bytes, ctx: dict) -> None:
    """FC 22 request and echo: register address, AND mask, OR mask."""
    _start(ev, data, "holding_register", 1)
    ev.detail["and_mask"], ev.detail["or_mask"] = _U16X2.unpack_from(data, 2)
    _exact(ev, data, 6)


def _req_read_write(ev: Event, data: bytes, ctx: dict) -> None:
    rstart, rqty, wstart, wqty = _U16X4.unpack_from(data)
    detail = ev.detail
    detail["read_start"] = rstart
    detail["read_quantity"] = rqty
    detail["write_start"] = wstart
    detail["write_quantity"] = wqty
    ev.targets.append(Target("holding_register", rstart, rqty))
    ev.targets.append(Target("holding_register", wstart, wqty))
    ctx["start"] = rstart
    if not 1 <= rqty <= MAX_READ_REGISTERS:
        ev.anomalies.append(A_INVALID_LENGTH)
    if not 1 <= wqty <= MAX_RW_WRITE_REGISTERS:
        ev.anomalies.append(A_INVALID_LENGTH)
    _written_values(ev, data, 8, 2 * wqty, _words)


def _req_fifo(ev: Event, data: bytes, ctx: dict) -> None:
    addr = _U16.unpack_from(data)[0]
    ev.detail["fifo_address"] = addr
    ev.targets.append(Target(kind="holding_register", start=addr))
    _exact(ev, data, 2)


def _req_mei(ev: Event, data: bytes, ctx: dict) -> None:
    mei = data[0]
    _mei_common(ev, mei)
    if mei == MEI_DEVICE_ID:
        code, obj = data[1], data[2]
        ev.detail.update(read_device_id=code, read_device_id_name=READ_DEVICE_ID_CODES.get(code),
                         object_id=obj)
        if code not in READ_DEVICE_ID_CODES:
            ev.anomalies.append(A_INVALID_VALUE)
        _exact(ev, data, 3)
    else:
        ev.detail["data"] = _hex(data[1:])


def _umas_request(ev: Event, data: bytes, ctx: dict) -> None:
    key, code = data[0], data[1]
    name, ev.op_class = _umas(code)
    ev.detail.update(umas_pairing_key=key, umas_code=code, umas_function=name, data=_hex(data[2:]))
    ctx["umas_code"] = code


def _opaque(ev: Event, data: bytes, ctx: dict) -> None:
    ev.detail["data"] = _hex(data)
    ev.detail["data_length"] = len(data)


REQUEST_PARSERS = {
    1: _req_read("coil", MAX_READ_BITS), 2: _req_read("discrete_input", MAX_READ_BITS),
    3: _req_read("holding_register", MAX_READ_REGISTERS),
    4: _req_read("input_register", MAX_READ_REGISTERS),
    5: _write_single("coil"), 6: _write_single("holding_register"), 7: _no_data, 8: _diagnostics,
    11: _no_data, 12: _no_data, 15: _req_write_coils, 16: _req_write_registers, 17: _no_data,
    20: _req_read_file, 21: _write_file, 22: _mask_write, 23: _req_read_write, 24: _req_fifo,
    43: _req_mei, 90: _umas_request,
}


# --- responses ----------------------------------------------------------------------

def _resp_bits(ev: Event, data: bytes, ctx: dict) -> None:
    count = data[0]
    detail = ev.detail
    detail["byte_count"] = count
    if not 1 <= count <= (MAX_READ_BITS + 7) // 8:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 1 + count)
    detail["values"] = _bits(data[1:1 + count], count * 8)
    if len(data) > 1 + count:
        _exact(ev, data, 1 + count)


def _resp_registers(ev: Event, data: bytes, ctx: dict) -> None:
    count = data[0]
    detail = ev.detail
    detail["byte_count"] = count
    if count % 2 or not 2 <= count <= 2 * MAX_READ_REGISTERS:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 1 + count)
    detail["values"] = _words(data[1:1 + count])
    if len(data) > 1 + count:
        _exact(ev, data, 1 + count)


def _resp_write_multiple(kind: str):
    """FC 15/16 response: the start and quantity the request wrote, echoed."""
    def parse(ev: Event, data: bytes, ctx: dict) -> None:
        _quantity(ev, data, _start(ev, data, kind))
        if len(data) > 4:
            _exact(ev, data, 4)
    return parse


def _resp_exception_status(ev: Event, data: bytes, ctx: dict) -> None:
    ev.detail["exception_status"] = data[0]
    _exact(ev, data, 1)


def _resp_event_counter(ev: Event, data: bytes, ctx: dict) -> None:
    status, count = _U16X2.unpack_from(data)
    ev.detail.update(comm_status=status, event_count=count)
    _exact(ev, data, 4)


def _resp_event_log(ev: Event, data: bytes, ctx: dict) -> None:
    count = data[0]
    status, events, messages = _U16X3.unpack_from(data, 1)
    ev.detail.update(byte_count=count, comm_status=status, event_count=events,
                     message_count=messages)
    if count < 6:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 1 + count)
    ev.detail["events"] = _hex(data[7:1 + count])
    _exact(ev, data, 1 + count)


def _resp_server_id(ev: Event, data: bytes, ctx: dict) -> None:
    """Server id, run indicator (0x00 off / 0xFF on), device-specific data; layouts vary,
    so the printable characters are kept as text (often vendor and version)."""
    count = data[0]
    ev.detail["byte_count"] = count
    if count == 0:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 1 + count)
    body = data[1:1 + count]
    ev.detail.update(server_id=body[0], data=_hex(body))
    if count >= 2 and body[1] in (0x00, 0xFF):
        ev.detail["run_indicator"] = "on" if body[1] == 0xFF else "off"
    text = "".join(chr(b) for b in body if 32 <= b < 127)[:MAX_OBJECT_CHARS].strip()
    if len(text) >= MIN_ID_TEXT:
        ev.detail["text"] = text
        ev.identity = {"server_id": text}
    _exact(ev, data, 1 + count)


def _resp_read_file(ev: Event, data: bytes, ctx: dict) -> None:
    count = data[0]
    ev.detail["byte_count"] = count
    records = []
    off = 1
    end = 1 + count
    while off < end:
        length, ref = data[off], data[off + 1]
        values = data[off + 2:off + 1 + length]
        _need(values, length - 1)
        if len(records) < MAX_FILE_RECORDS:
            records.append({"reference_type": ref, "values": _words(values)})
        if length < 1 or (length - 1) % 2:
            ev.anomalies.append(A_INVALID_LENGTH)
        if ref != FILE_REF_TYPE:
            ev.anomalies.append(A_INVALID_VALUE)
        off += 1 + max(length, 1)
    ev.detail["records"] = records
    if off != end:
        ev.anomalies.append(A_INVALID_LENGTH)
    _exact(ev, data, end)


def _resp_fifo(ev: Event, data: bytes, ctx: dict) -> None:
    count, fifo = _U16X2.unpack_from(data)
    ev.detail.update(byte_count=count, fifo_count=fifo)
    if fifo > MAX_FIFO_COUNT or count != 2 + 2 * fifo:
        ev.anomalies.append(A_INVALID_LENGTH)
    _need(data, 2 + count)
    ev.detail["values"] = _words(data[4:2 + count])
    _exact(ev, data, 2 + count)


def _resp_mei(ev: Event, data: bytes, ctx: dict) -> None:
    mei = data[0]
    _mei_common(ev, mei)
    if mei != MEI_DEVICE_ID:
        ev.detail["data"] = _hex(data[1:])
        return
    code, conformity, more, next_id, number = _U8X5.unpack_from(data, 1)
    ev.detail.update(read_device_id=code, read_device_id_name=READ_DEVICE_ID_CODES.get(code),
                     conformity_level=conformity, more_follows=more, next_object_id=next_id,
                     number_of_objects=number)
    objects: dict[str, str] = {}
    identity: dict[str, str] = {}
    ev.detail["objects"] = objects
    off = 6
    for _ in range(number):
        obj, length = data[off], data[off + 1]
        raw = data[off + 2:off + 2 + length]
        _need(raw, length)
        name, key = DEVICE_ID_OBJECTS.get(obj, ("object_%d" % obj, None))
        objects[name] = _text(raw)
        if key:
            identity[key] = objects[name]
        off += 2 + length
    if identity:
        ev.identity = identity
    _exact(ev, data, off)


def _umas_response(ev: Event, data: bytes, ctx: dict) -> None:
    key, status = data[0], data[1]
    ev.detail.update(umas_pairing_key=key, umas_status=status, data=_hex(data[2:]))
    if status == UMAS_ERROR:
        ev.result, ev.status = "error", "UMAS error (0xFD)"
    elif status != UMAS_OK:
        ev.anomalies.append(A_INVALID_VALUE)


RESPONSE_PARSERS = {
    1: _resp_bits, 2: _resp_bits, 3: _resp_registers, 4: _resp_registers,
    5: _write_single("coil"), 6: _write_single("holding_register"),
    7: _resp_exception_status, 8: _diagnostics,
    11: _resp_event_counter, 12: _resp_event_log, 15: _resp_write_multiple("coil"),
    16: _resp_write_multiple("holding_register"), 17: _resp_server_id, 20: _resp_read_file, 21: _write_file,
    22: _mask_write, 23: _resp_registers, 24: _resp_fifo, 43: _resp_mei, 90: _umas_response,
}


def _mei_common(ev: Event, mei: int) -> None:
    ev.detail["mei_type"] = mei
    ev.detail["mei"] = MEI_NAMES.get(mei, "Reserved (%d)" % mei)
    ev.op_class = MEI_OP_CLASS.get(mei, "other")
    if mei not in MEI_NAMES:
        ev.anomalies.append(A_RESERVED)


def _apply_request_context(ev: Event, ctx: dict) -> None:
    """Describe a response with what only its request said: the operation class (UMAS
    code, MEI type, diagnostics sub-function), the UMAS code, the start of a read."""
    ev.op_class = ctx["op_class"]
    if "umas_code" in ctx:
        code = ctx["umas_code"]
        ev.detail.update(umas_code=code, umas_function=_umas(code)[0])
    if "start" in ctx:
        ev.detail["request_start"] = ctx["start"]


# --- decode -------------------------------------------------------------------------

def decode(msg: bytes, from_client: bool, state: dict | None) -> list[Event]:
    """Decode one ADU (as framed by :func:`frame`) into one event; never raises."""
    size = len(msg)
    if size < MBAP_LEN + 1:
        return [Event(protocol="modbus", kind="request" if from_client else "response",
                      function="Malformed ADU", op_class="other",
                      result=None if from_client else "error",
                      anomalies=[A_TRUNCATED, A_INVALID_LENGTH], detail={"data": _hex(msg)})]
    tid, proto, length, unit, raw_fc = _HEADER.unpack_from(msg)
    fc = raw_fc & 0x7F
    function, op_class, category, category_flag = _FC_INFO[fc]
    flags = [category_flag] if category_flag else []
    if proto != 0:
        flags.append(A_PROTOCOL_ID)
    if length != size - 6:
        flags.append(A_INVALID_LENGTH)
    if length > LENGTH_SPEC_MAX:
        flags.append(A_OVERSIZED)
    pair_key = (tid, unit)
    ev = Event(
        protocol="modbus",
        kind="request" if from_client else "response",
        function=function,
        op_class=op_class,
        function_code=fc,
        result=None if from_client else "ok",
        anomalies=flags,
        pair_key=pair_key,
        detail={"transaction_id": tid, "unit_id": unit, "category": category},
    )
    data = msg[MBAP_LEN + 1:]
    if from_client:
        if raw_fc & 0x80:  # the exception bit has no meaning in a request
            ev.detail["raw_function_code"] = raw_fc
            flags.append(A_INVALID_FC)
            _opaque(ev, data, {})
        else:
            ctx: dict = {}
            _run(REQUEST_PARSERS.get(fc, _opaque), ev, data, ctx)
            if state is not None:
                state.pop(pair_key, None)
                if len(state) >= MAX_PENDING:
                    del state[next(iter(state))]
                ctx["fc"] = fc
                ctx["op_class"] = ev.op_class
                state[pair_key] = ctx
    else:
        ctx = state.pop(pair_key, None) if state is not None else None
        if ctx is not None and ctx.pop("fc") == fc:
            _apply_request_context(ev, ctx)
        if raw_fc & 0x80:
            ev.detail["raw_function_code"] = raw_fc
            _run(_exception, ev, data, None)
        else:
            _run(RESPONSE_PARSERS.get(fc, _opaque), ev, data, None)
    if len(flags) > 1:
        ev.anomalies = list(dict.fromkeys(flags))
    return [ev]


def _exception(ev: Event, data: bytes, ctx: dict) -> None:
    ev.result = "exception"   # the function code says so, even if the code byte is cut off
    code = data[0]
    name = EXCEPTION_NAMES.get(code)
    ev.status = "%s (%d)" % (name or "Unknown exception", code)
    ev.detail["exception_code"] = code
    if name is None:
        ev.anomalies.append(A_UNKNOWN_EXCEPTION)
    _exact(ev, data, 1)


def _run(parse, ev: Event, data: bytes, ctx: dict | None) -> None:
    """Run one field parser; a PDU that ends early keeps the fields read so far."""
    try:
        parse(ev, data, ctx)
    except (struct.error, IndexError):
        ev.anomalies.append(A_TRUNCATED)


DECODER = Decoder(name="modbus", ports=(502,), probe=probe, frame=frame,
                  new_state=new_state, decode=decode)
