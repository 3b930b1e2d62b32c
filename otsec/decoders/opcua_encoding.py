"""OPC UA binary encoding (IEC 62541-6 §5.2) primitives and the protocol's name tables.

Every reader takes ``(buf, off)`` and returns ``(value, next_off)``. All integers are
little-endian. Readers raise :class:`Truncated` when the data ends inside a value and
:class:`Malformed` when the bytes cannot be a valid encoding (unknown NodeId encoding,
absurd array length, nesting too deep); the decoder turns both into anomaly flags.

Variable-length values::

    String / ByteString / XmlElement   int32 length (-1 = null) | bytes
    Array                              int32 count (-1 = null)  | count x element
    NodeId                             byte encoding | fields by encoding:
        0x00 two-byte   | uint8 id                       -> "i=<id>"
        0x01 four-byte  | uint8 ns | uint16 id           -> "ns=<ns>;i=<id>"
        0x02 numeric    | uint16 ns | uint32 id
        0x03 string     | uint16 ns | String             -> "ns=<ns>;s=<text>"
        0x04 guid       | uint16 ns | Guid (16)          -> "ns=<ns>;g=<guid>"
        0x05 bytestring | uint16 ns | ByteString         -> "ns=<ns>;b=<base64>"
    ExpandedNodeId                     NodeId with flags 0x80 (+ NamespaceUri String)
                                       and 0x40 (+ uint32 ServerIndex) in the encoding byte
    ExtensionObject                    NodeId type | byte encoding (0 none, 1 binary,
                                       2 xml) | int32 length | body
    Variant                            byte mask (type id in bits 0-5, 0x80 array,
                                       0x40 array dimensions) | value(s) | [dimensions]
    DataValue / DiagnosticInfo         byte mask | the fields the mask announces
"""

from __future__ import annotations

import base64
import math
import struct
from datetime import datetime, timedelta

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_GUID = struct.Struct("<IHH8s")
_NUMERIC_NODE = struct.Struct("<HI")

#: Nesting allowed for Variant/DataValue/DiagnosticInfo inside each other; real
#: messages use 2-3 levels, hostile ones could recurse until the stack breaks.
MAX_NESTING = 8
#: Strings longer than this are cut in event details (the bytes are still skipped).
MAX_TEXT = 256

#: A DateTime is 100 ns ticks since 1601-01-01 UTC (naive: the text gets a "Z" suffix).
_EPOCH_1601 = datetime(1601, 1, 1)
_TICKS_PER_SECOND = 10_000_000
#: Formatted "YYYY-MM-DDTHH:MM:SS" by whole second: messages of one capture share seconds.
_SECOND_TEXT: dict[int, str] = {}
#: Formatted NodeIds by their encoded bytes, for the encodings that cost a format call
#: (string, guid, opaque); session tokens and browsed nodes repeat message after message.
_NODE_TEXT: dict[bytes, str] = {}
MAX_CACHED = 4096               # entries per formatting cache (emptied when full)
MAX_CACHED_NODE_BYTES = 128     # longer encoded NodeIds are formatted every time
#: "i=<id>" of every two-byte NodeId.
_TWO_BYTE_IDS = tuple(f"i={i}" for i in range(256))


class Truncated(ValueError):
    """The data ends inside a value."""


class Malformed(ValueError):
    """The bytes cannot be a valid OPC UA binary encoding."""


def u8(buf: bytes, off: int) -> tuple[int, int]:
    if off >= len(buf):
        raise Truncated
    return buf[off], off + 1


def u16(buf: bytes, off: int) -> tuple[int, int]:
    if off + 2 > len(buf):
        raise Truncated
    return _U16.unpack_from(buf, off)[0], off + 2


def u32(buf: bytes, off: int) -> tuple[int, int]:
    if off + 4 > len(buf):
        raise Truncated
    return _U32.unpack_from(buf, off)[0], off + 4


def i32(buf: bytes, off: int) -> tuple[int, int]:
    if off + 4 > len(buf):
        raise Truncated
    return _I32.unpack_from(buf, off)[0], off + 4


def f64(buf: bytes, off: int) -> tuple[float, int]:
    if off + 8 > len(buf):
        raise Truncated
    return _F64.unpack_from(buf, off)[0], off + 8


def skip(buf: bytes, off: int, n: int) -> int:
    """Offset after ``n`` fixed bytes."""
    if off + n > len(buf):
        raise Truncated
    return off + n


def _length(buf: bytes, off: int) -> tuple[int, int]:
    """An int32 length prefix: -1 (null) or a count that fits in the remaining bytes."""
    off += 4
    if off > len(buf):
        raise Truncated
    n = _I32.unpack_from(buf, off - 4)[0]
    if n < -1:
        raise Malformed
    if n > len(buf) - off:
        raise Truncated
    return n, off


def bytestring(buf: bytes, off: int) -> tuple[bytes | None, int]:
    n, off = _length(buf, off)
    if n < 0:
        return None, off
    return buf[off:off + n], off + n


def string(buf: bytes, off: int) -> tuple[str | None, int]:
    """A UTF-8 String, cut to :data:`MAX_TEXT` characters for event details."""
    n, off = _length(buf, off)
    if n < 0:
        return None, off
    return buf[off:off + min(n, MAX_TEXT)].decode("utf-8", "replace"), off + n


def skip_bytestring(buf: bytes, off: int) -> int:
    """Offset after a String/ByteString, with the checks of :func:`_length`."""
    end = off + 4
    if end > len(buf):
        raise Truncated
    n = _I32.unpack_from(buf, off)[0]
    if n <= 0:
        if n < -1:
            raise Malformed
        return end
    end += n
    if end > len(buf):
        raise Truncated
    return end


def array_count(buf: bytes, off: int) -> tuple[int, int]:
    """An array's element count (null arrays count 0); each element takes ≥ 1 byte."""
    n, off = _length(buf, off)
    return max(n, 0), off


def datetime_iso(buf: bytes, off: int) -> tuple[str | None, int]:
    """DateTime as ISO 8601 UTC; 0 and out-of-range values (spec: 'no time') give None."""
    if off + 8 > len(buf):
        raise Truncated
    return ticks_iso(_I64.unpack_from(buf, off)[0]), off + 8


def ticks_iso(ticks: int) -> str | None:
    """The ISO 8601 text of a DateTime's ticks (microsecond precision, like isoformat)."""
    if ticks <= 0:
        return None
    seconds, rest = divmod(ticks, _TICKS_PER_SECOND)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        try:
            text = (_EPOCH_1601 + timedelta(seconds=seconds)).isoformat()
        except OverflowError:
            return None
        if len(_SECOND_TEXT) >= MAX_CACHED:
            _SECOND_TEXT.clear()
        _SECOND_TEXT[seconds] = text
    micro = rest // 10
    return f"{text}.{micro:06d}Z" if micro else text + "Z"


def guid(buf: bytes, off: int) -> tuple[str, int]:
    if off + 16 > len(buf):
        raise Truncated
    d1, d2, d3, d4 = _GUID.unpack_from(buf, off)
    return f"{d1:08x}-{d2:04x}-{d3:04x}-{d4[:2].hex()}-{d4[2:].hex()}", off + 16


def _ns(ns: int) -> str:
    return f"ns={ns};" if ns else ""


def node_id_parts(buf: bytes, off: int) -> tuple[int, int, object, int]:
    """(encoding byte, namespace, identifier, next offset) of a NodeId or ExpandedNodeId.

    The identifier is an int for numeric ids, else the formatted ``s=``/``g=``/``b=`` part.
    """
    enc, off = u8(buf, off)
    kind = enc & 0x3F
    if kind == 0x00:
        ident, off = u8(buf, off)
        return enc, 0, ident, off
    if kind == 0x01:
        ns, off = u8(buf, off)
        ident, off = u16(buf, off)
        return enc, ns, ident, off
    if kind > 0x05:
        raise Malformed
    ns, off = u16(buf, off)
    if kind == 0x02:
        ident, off = u32(buf, off)
        return enc, ns, ident, off
    if kind == 0x03:
        text, off = string(buf, off)
        return enc, ns, "s=" + (text or ""), off
    if kind == 0x04:
        text, off = guid(buf, off)
        return enc, ns, "g=" + text, off
    raw, off = bytestring(buf, off)
    return enc, ns, "b=" + base64.b64encode(raw or b"").decode("ascii"), off


def _format(ns: int, ident: object) -> str:
    return f"{_ns(ns)}i={ident}" if isinstance(ident, int) else _ns(ns) + str(ident)


def node_id(buf: bytes, off: int) -> tuple[str, int]:
    """A NodeId formatted the OPC UA way: ``i=2258``, ``ns=2;i=5``, ``ns=1;s=Foo``."""
    size = len(buf)
    if off < size:
        enc = buf[off]
        if enc == 0x00 and off + 2 <= size:
            return _TWO_BYTE_IDS[buf[off + 1]], off + 2
        if enc == 0x01 and off + 4 <= size:
            ns = buf[off + 1]
            ident = buf[off + 2] | buf[off + 3] << 8
            return (f"ns={ns};i={ident}" if ns else f"i={ident}"), off + 4
        if enc == 0x02 and off + 7 <= size:
            ns, ident = _NUMERIC_NODE.unpack_from(buf, off + 1)
            return (f"ns={ns};i={ident}" if ns else f"i={ident}"), off + 7
        if 0x03 <= enc <= 0x05 and off + 7 <= size:
            end = off + 19 if enc == 0x04 else off + 7 + _I32.unpack_from(buf, off + 3)[0]
            if off + 7 <= end <= size and end - off <= MAX_CACHED_NODE_BYTES:
                raw = buf[off:end]
                text = _NODE_TEXT.get(raw)
                if text is None:
                    text = _format(*node_id_parts(buf, off)[1:3])
                    if len(_NODE_TEXT) >= MAX_CACHED:
                        _NODE_TEXT.clear()
                    _NODE_TEXT[raw] = text
                return text, end
    enc, ns, ident, off = node_id_parts(buf, off)
    if enc & 0xC0:
        raise Malformed  # expanded-node-id flags are not allowed in a plain NodeId
    return _format(ns, ident), off


def expanded_node_id(buf: bytes, off: int) -> tuple[str, int]:
    """An ExpandedNodeId: ``nsu=<uri>;`` replaces ``ns=`` when a namespace URI is given,
    ``svr=<index>;`` prefixes ids of other servers."""
    enc, ns, ident, off = node_id_parts(buf, off)
    text = _format(ns, ident)
    if enc & 0x80:
        uri, off = string(buf, off)
        text = f"nsu={uri or ''};" + _format(0, ident)
    if enc & 0x40:
        index, off = u32(buf, off)
        text = f"svr={index};" + text
    return text, off


def numeric_type_id(buf: bytes, off: int) -> tuple[int | None, int]:
    """The numeric identifier of an ExpandedNodeId in namespace 0 (service and
    ExtensionObject type ids), else None."""
    if off + 4 <= len(buf):                # the encodings type ids use: two- and four-byte
        enc = buf[off]
        if enc == 0x01:
            return (buf[off + 2] | buf[off + 3] << 8 if buf[off + 1] == 0 else None), off + 4
        if enc == 0x00:
            return buf[off + 1], off + 2
    enc, ns, ident, off = node_id_parts(buf, off)
    if enc & 0x80:
        off = skip_bytestring(buf, off)
        ns = -1
    if enc & 0x40:
        off = skip(buf, off, 4)
    return (ident if ns == 0 and isinstance(ident, int) else None), off


def qualified_name(buf: bytes, off: int) -> tuple[str, int]:
    ns, off = u16(buf, off)
    name, off = string(buf, off)
    return (f"{ns}:{name or ''}" if ns else name or ""), off


def localized_text(buf: bytes, off: int) -> tuple[str | None, int]:
    """The text of a LocalizedText (mask 0x01 locale, 0x02 text); the locale is skipped."""
    mask, off = u8(buf, off)
    if mask & 0x01:
        off = skip_bytestring(buf, off)
    text = None
    if mask & 0x02:
        text, off = string(buf, off)
    return text, off


def extension_object(buf: bytes, off: int) -> tuple[int | None, bytes | None, int]:
    """(numeric type id in ns 0 or None, binary body or None, next offset)."""
    type_id, off = numeric_type_id(buf, off)
    enc, off = u8(buf, off)
    if enc == 0:
        return type_id, None, off
    if enc not in (1, 2):
        raise Malformed
    body, off = bytestring(buf, off)
    return type_id, (body if enc == 1 else None), off


def skip_extension_object(buf: bytes, off: int) -> int:
    off = numeric_type_id(buf, off)[1]
    enc, off = u8(buf, off)
    if enc == 0:
        return off
    if enc not in (1, 2):
        raise Malformed
    return skip_bytestring(buf, off)


#: Built-in type ids (§5.1.2) → (name, fixed size or None for variable-length types).
BUILTIN_TYPES: dict[int, tuple[str, int | None]] = {
    1: ("Boolean", 1), 2: ("SByte", 1), 3: ("Byte", 1), 4: ("Int16", 2), 5: ("UInt16", 2),
    6: ("Int32", 4), 7: ("UInt32", 4), 8: ("Int64", 8), 9: ("UInt64", 8), 10: ("Float", 4),
    11: ("Double", 8), 12: ("String", None), 13: ("DateTime", 8), 14: ("Guid", 16),
    15: ("ByteString", None), 16: ("XmlElement", None), 17: ("NodeId", None),
    18: ("ExpandedNodeId", None), 19: ("StatusCode", 4), 20: ("QualifiedName", None),
    21: ("LocalizedText", None), 22: ("ExtensionObject", None), 23: ("DataValue", None),
    24: ("Variant", None), 25: ("DiagnosticInfo", None),
}
_SCALAR_FORMATS = {1: "<?", 2: "<b", 3: "<B", 4: "<h", 5: "<H", 6: "<i", 7: "<I",
                   8: "<q", 9: "<Q", 10: "<f", 11: "<d"}
_SCALAR_STRUCTS = {t: struct.Struct(f) for t, f in _SCALAR_FORMATS.items()}


def _skip_builtin(buf: bytes, off: int, type_id: int, depth: int) -> int:
    size = BUILTIN_TYPES[type_id][1]
    if size is not None:
        return skip(buf, off, size)
    if type_id in (12, 15, 16):
        return skip_bytestring(buf, off)
    if type_id == 17:
        return node_id(buf, off)[1]
    if type_id == 18:
        return expanded_node_id(buf, off)[1]
    if type_id == 20:
        return skip_bytestring(buf, skip(buf, off, 2))
    if type_id == 21:
        return localized_text(buf, off)[1]
    if type_id == 22:
        return skip_extension_object(buf, off)
    if type_id == 23:
        return data_value_status(buf, off, depth + 1)[1]
    if type_id == 24:
        return skip_variant(buf, off, depth + 1)
    return skip_diagnostic_info(buf, off, depth + 1)


def skip_variant(buf: bytes, off: int, depth: int = 0) -> int:
    """Offset after a Variant, with the checks of :func:`variant` but no value rendered."""
    if depth > MAX_NESTING:
        raise Malformed
    if off >= len(buf):
        raise Truncated
    mask = buf[off]
    off += 1
    type_id = mask & 0x3F
    if type_id == 0:
        return off
    info = BUILTIN_TYPES.get(type_id)
    if info is None:
        raise Malformed
    if not mask & 0x80:
        return _skip_builtin(buf, off, type_id, depth)
    count, off = array_count(buf, off)
    size = info[1]
    if size is not None:
        off = skip(buf, off, size * count)
    else:
        for _ in range(count):
            off = _skip_builtin(buf, off, type_id, depth)
    if mask & 0x40:
        dims, off = array_count(buf, off)
        off = skip(buf, off, 4 * dims)
    return off


def _scalar_value(buf: bytes, off: int, type_id: int) -> object:
    """A JSON-safe rendering of a scalar written or returned value (numbers, booleans,
    short strings); None for types that carry no simple value."""
    fmt = _SCALAR_STRUCTS.get(type_id)
    if fmt is not None:
        value = fmt.unpack_from(buf, off)[0]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if type_id == 12:
        return string(buf, off)[0]
    if type_id == 19:
        return status_name(_U32.unpack_from(buf, off)[0])
    if type_id == 13:
        return datetime_iso(buf, off)[0]
    return None


def variant(buf: bytes, off: int, depth: int = 0) -> tuple[str, object, int]:
    """(type name with ``[]`` for arrays, scalar value or array length, next offset)."""
    if depth > MAX_NESTING:
        raise Malformed
    mask, off = u8(buf, off)
    type_id = mask & 0x3F
    if type_id == 0:
        return "Null", None, off
    if type_id not in BUILTIN_TYPES:
        raise Malformed
    name = BUILTIN_TYPES[type_id][0]
    if mask & 0x80:
        count, off = array_count(buf, off)
        for _ in range(count):
            off = _skip_builtin(buf, off, type_id, depth)
        if mask & 0x40:
            dims, off = array_count(buf, off)
            off = skip(buf, off, 4 * dims)
        return name + "[]", count, off
    end = _skip_builtin(buf, off, type_id, depth)
    return name, _scalar_value(buf, off, type_id), end


#: DataValue mask bits in wire order → size of the field (None = Variant).
_DATA_VALUE_FIELDS = ((0x01, None), (0x02, 4), (0x04, 8), (0x10, 2), (0x08, 8), (0x20, 2))


def data_value(buf: bytes, off: int, depth: int = 0) -> tuple[tuple[str, object] | None, int | None, int]:
    """((value type, value) or None, status code or None, next offset)."""
    if depth > MAX_NESTING:
        raise Malformed
    mask, off = u8(buf, off)
    value = status = None
    for bit, size in _DATA_VALUE_FIELDS:
        if not mask & bit:
            continue
        if size is None:
            vtype, v, off = variant(buf, off, depth + 1)
            value = (vtype, v)
        elif bit == 0x02:
            status, off = u32(buf, off)
        else:
            off = skip(buf, off, size)
    return value, status, off


#: Bytes of the fixed-size DataValue fields (timestamps, picoseconds) a mask announces.
_DATA_VALUE_FIXED = tuple(sum(size for bit, size in _DATA_VALUE_FIELDS if size and bit != 0x02
                              and mask & bit) for mask in range(256))


def data_value_status(buf: bytes, off: int, depth: int = 0) -> tuple[int | None, int]:
    """(status code or None, next offset) of a DataValue whose value is not needed."""
    if depth > MAX_NESTING:
        raise Malformed
    if off >= len(buf):
        raise Truncated
    mask = buf[off]
    off += 1
    status = None
    if mask & 0x01:
        off = skip_variant(buf, off, depth + 1)
    if mask & 0x02:
        status, off = u32(buf, off)
    return status, skip(buf, off, _DATA_VALUE_FIXED[mask])


def skip_diagnostic_info(buf: bytes, off: int, depth: int = 0) -> int:
    """DiagnosticInfo: mask 0x01/0x02/0x04/0x08 int32 fields, 0x10 String,
    0x20 inner StatusCode, 0x40 inner DiagnosticInfo."""
    if depth > MAX_NESTING:
        raise Malformed
    mask, off = u8(buf, off)
    off = skip(buf, off, 4 * bin(mask & 0x0F).count("1"))
    if mask & 0x10:
        off = skip_bytestring(buf, off)
    if mask & 0x20:
        off = skip(buf, off, 4)
    if mask & 0x40:
        off = skip_diagnostic_info(buf, off, depth + 1)
    return off


def skip_array(buf: bytes, off: int, skip_one) -> int:
    count, off = array_count(buf, off)
    for _ in range(count):
        off = skip_one(buf, off)
    return off


def status_name(code: int) -> str:
    """The StatusCode's symbolic name (info bits in the low 16 bits are ignored), or hex."""
    name = STATUS_CODES.get(code & 0xFFFF0000)
    return name if name is not None else f"0x{code:08X}"


def status_result(code: int) -> str:
    """Model result of a StatusCode: severity Bad (top bits 10/11) is an error."""
    return "error" if code & 0x80000000 else "ok"


#: Service encodings (numeric ids of the DefaultBinary encoding nodes, ns=0), named as
#: Wireshark's opcua dissector names them (the values of ``opcua.servicenodeid.numeric``).
SERVICES: dict[int, str] = {
    397: "ServiceFault",
    410: "TestStackRequest", 413: "TestStackResponse",
    416: "TestStackExRequest", 419: "TestStackExResponse",
    422: "FindServersRequest", 425: "FindServersResponse",
    12208: "FindServersOnNetworkRequest", 12209: "FindServersOnNetworkResponse",
    428: "GetEndpointsRequest", 431: "GetEndpointsResponse",
    437: "RegisterServerRequest", 440: "RegisterServerResponse",
    12211: "RegisterServer2Request", 12212: "RegisterServer2Response",
    446: "OpenSecureChannelRequest", 449: "OpenSecureChannelResponse",
    452: "CloseSecureChannelRequest", 455: "CloseSecureChannelResponse",
    461: "CreateSessionRequest", 464: "CreateSessionResponse",
    467: "ActivateSessionRequest", 470: "ActivateSessionResponse",
    473: "CloseSessionRequest", 476: "CloseSessionResponse",
    479: "CancelRequest", 482: "CancelResponse",
    488: "AddNodesRequest", 491: "AddNodesResponse",
    494: "AddReferencesRequest", 497: "AddReferencesResponse",
    500: "DeleteNodesRequest", 503: "DeleteNodesResponse",
    506: "DeleteReferencesRequest", 509: "DeleteReferencesResponse",
    527: "BrowseRequest", 530: "BrowseResponse",
    533: "BrowseNextRequest", 536: "BrowseNextResponse",
    554: "TranslateBrowsePathsToNodeIdsRequest", 557: "TranslateBrowsePathsToNodeIdsResponse",
    560: "RegisterNodesRequest", 563: "RegisterNodesResponse",
    566: "UnregisterNodesRequest", 569: "UnregisterNodesResponse",
    615: "QueryFirstRequest", 618: "QueryFirstResponse",
    621: "QueryNextRequest", 624: "QueryNextResponse",
    631: "ReadRequest", 634: "ReadResponse",
    664: "HistoryReadRequest", 667: "HistoryReadResponse",
    673: "WriteRequest", 676: "WriteResponse",
    700: "HistoryUpdateRequest", 703: "HistoryUpdateResponse",
    712: "CallRequest", 715: "CallResponse",
    751: "CreateMonitoredItemsRequest", 754: "CreateMonitoredItemsResponse",
    763: "ModifyMonitoredItemsRequest", 766: "ModifyMonitoredItemsResponse",
    769: "SetMonitoringModeRequest", 772: "SetMonitoringModeResponse",
    775: "SetTriggeringRequest", 778: "SetTriggeringResponse",
    781: "DeleteMonitoredItemsRequest", 784: "DeleteMonitoredItemsResponse",
    787: "CreateSubscriptionRequest", 790: "CreateSubscriptionResponse",
    793: "ModifySubscriptionRequest", 796: "ModifySubscriptionResponse",
    799: "SetPublishingModeRequest", 802: "SetPublishingModeResponse",
    826: "PublishRequest", 829: "PublishResponse",
    832: "RepublishRequest", 835: "RepublishResponse",
    841: "TransferSubscriptionsRequest", 844: "TransferSubscriptionsResponse",
    847: "DeleteSubscriptionsRequest", 850: "DeleteSubscriptionsResponse",
}

#: Operation class per service (the name without Request/Response). Subscriptions,
#: monitored items and Publish exist to deliver process values, so they are "read".
SERVICE_OP_CLASS: dict[str, str] = {
    **dict.fromkeys(("Read", "HistoryRead", "Browse", "BrowseNext", "TranslateBrowsePathsToNodeIds",
                     "RegisterNodes", "UnregisterNodes", "QueryFirst", "QueryNext",
                     "CreateSubscription", "ModifySubscription", "DeleteSubscriptions",
                     "TransferSubscriptions", "SetPublishingMode", "CreateMonitoredItems",
                     "ModifyMonitoredItems", "DeleteMonitoredItems", "SetMonitoringMode",
                     "SetTriggering", "Publish", "Republish"), "read"),
    "Write": "write", "HistoryUpdate": "write",
    "Call": "control",
    **dict.fromkeys(("AddNodes", "DeleteNodes", "AddReferences", "DeleteReferences"), "program"),
    **dict.fromkeys(("CreateSession", "ActivateSession", "CloseSession", "Cancel",
                     "OpenSecureChannel", "CloseSecureChannel"), "session"),
    **dict.fromkeys(("GetEndpoints", "FindServers", "FindServersOnNetwork", "RegisterServer",
                     "RegisterServer2"), "identify"),
    **dict.fromkeys(("TestStack", "TestStackEx"), "diagnostic"),
}

#: ExtensionObject encodings of the user identity tokens in ActivateSession.
IDENTITY_TOKENS: dict[int, str] = {
    321: "Anonymous", 324: "UserName", 327: "X509", 940: "IssuedToken",
}

MESSAGE_SECURITY_MODES = {0: "Invalid", 1: "None", 2: "Sign", 3: "SignAndEncrypt"}
SECURITY_TOKEN_REQUEST_TYPES = {0: "Issue", 1: "Renew"}
APPLICATION_TYPES = {0: "Server", 1: "Client", 2: "ClientAndServer", 3: "DiscoveryServer"}
USER_TOKEN_TYPES = {0: "Anonymous", 1: "UserName", 2: "Certificate", 3: "IssuedToken"}
ATTRIBUTES = {
    1: "NodeId", 2: "NodeClass", 3: "BrowseName", 4: "DisplayName", 5: "Description",
    6: "WriteMask", 7: "UserWriteMask", 8: "IsAbstract", 9: "Symmetric", 10: "InverseName",
    11: "ContainsNoLoops", 12: "EventNotifier", 13: "Value", 14: "DataType", 15: "ValueRank",
    16: "ArrayDimensions", 17: "AccessLevel", 18: "UserAccessLevel",
    19: "MinimumSamplingInterval", 20: "Historizing", 21: "Executable", 22: "UserExecutable",
    23: "DataTypeDefinition", 24: "RolePermissions", 25: "UserRolePermissions",
    26: "AccessRestrictions", 27: "AccessLevelEx",
}
NODE_CLASSES = {0: "Unspecified", 1: "Object", 2: "Variable", 4: "Method", 8: "ObjectType",
                16: "VariableType", 32: "ReferenceType", 64: "DataType", 128: "View"}

#: Security policy URI suffix → length of the symmetric signature (HMAC) appended to
#: every chunk of a signed channel; needed to join the bodies of multi-chunk messages.
POLICY_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"
SIGNATURE_LENGTHS = {
    "None": 0, "Basic128Rsa15": 20, "Basic256": 20, "Basic256Sha256": 32,
    "Aes128_Sha256_RsaOaep": 32, "Aes256_Sha256_RsaPss": 32,
}

#: StatusCodes most seen on the wire (IEC 62541-6 Annex A / StatusCode.csv), by the
#: code with its info bits cleared. Others are shown as hex.
STATUS_CODES: dict[int, str] = {
    0x00000000: "Good", 0x40000000: "Uncertain", 0x80000000: "Bad",
    0x80010000: "BadUnexpectedError", 0x80020000: "BadInternalError",
    0x80030000: "BadOutOfMemory", 0x80040000: "BadResourceUnavailable",
    0x80050000: "BadCommunicationError", 0x80060000: "BadEncodingError",
    0x80070000: "BadDecodingError", 0x80080000: "BadEncodingLimitsExceeded",
    0x80B80000: "BadRequestTooLarge", 0x80B90000: "BadResponseTooLarge",
    0x80090000: "BadUnknownResponse", 0x800A0000: "BadTimeout",
    0x800B0000: "BadServiceUnsupported", 0x800C0000: "BadShutdown",
    0x800D0000: "BadServerNotConnected", 0x800E0000: "BadServerHalted",
    0x800F0000: "BadNothingToDo", 0x80100000: "BadTooManyOperations",
    0x80DB0000: "BadTooManyMonitoredItems", 0x80110000: "BadDataTypeIdUnknown",
    0x80120000: "BadCertificateInvalid", 0x80130000: "BadSecurityChecksFailed",
    0x81140000: "BadCertificatePolicyCheckFailed", 0x80140000: "BadCertificateTimeInvalid",
    0x80150000: "BadCertificateIssuerTimeInvalid", 0x80160000: "BadCertificateHostNameInvalid",
    0x80170000: "BadCertificateUriInvalid", 0x80180000: "BadCertificateUseNotAllowed",
    0x80190000: "BadCertificateIssuerUseNotAllowed", 0x801A0000: "BadCertificateUntrusted",
    0x801B0000: "BadCertificateRevocationUnknown",
    0x801C0000: "BadCertificateIssuerRevocationUnknown", 0x801D0000: "BadCertificateRevoked",
    0x801E0000: "BadCertificateIssuerRevoked", 0x810D0000: "BadCertificateChainIncomplete",
    0x801F0000: "BadUserAccessDenied", 0x80200000: "BadIdentityTokenInvalid",
    0x80210000: "BadIdentityTokenRejected", 0x80220000: "BadSecureChannelIdInvalid",
    0x80230000: "BadInvalidTimestamp", 0x80240000: "BadNonceInvalid",
    0x80250000: "BadSessionIdInvalid", 0x80260000: "BadSessionClosed",
    0x80270000: "BadSessionNotActivated", 0x80280000: "BadSubscriptionIdInvalid",
    0x802A0000: "BadRequestHeaderInvalid", 0x802B0000: "BadTimestampsToReturnInvalid",
    0x802C0000: "BadRequestCancelledByClient", 0x80E50000: "BadTooManyArguments",
    0x80EE0000: "BadServerTooBusy", 0x00EF0000: "GoodPasswordChangeRequired",
    0x002D0000: "GoodSubscriptionTransferred", 0x002E0000: "GoodCompletesAsynchronously",
    0x002F0000: "GoodOverload", 0x00300000: "GoodClamped",
    0x80310000: "BadNoCommunication", 0x80320000: "BadWaitingForInitialData",
    0x80330000: "BadNodeIdInvalid", 0x80340000: "BadNodeIdUnknown",
    0x80350000: "BadAttributeIdInvalid", 0x80360000: "BadIndexRangeInvalid",
    0x80370000: "BadIndexRangeNoData", 0x80EA0000: "BadIndexRangeDataMismatch",
    0x80380000: "BadDataEncodingInvalid", 0x80390000: "BadDataEncodingUnsupported",
    0x803A0000: "BadNotReadable", 0x803B0000: "BadNotWritable", 0x803C0000: "BadOutOfRange",
    0x803D0000: "BadNotSupported", 0x803E0000: "BadNotFound", 0x803F0000: "BadObjectDeleted",
    0x80400000: "BadNotImplemented", 0x80410000: "BadMonitoringModeInvalid",
    0x80420000: "BadMonitoredItemIdInvalid", 0x80430000: "BadMonitoredItemFilterInvalid",
    0x80440000: "BadMonitoredItemFilterUnsupported", 0x80450000: "BadFilterNotAllowed",
    0x80460000: "BadStructureMissing", 0x80470000: "BadEventFilterInvalid",
    0x80480000: "BadContentFilterInvalid", 0x804A0000: "BadContinuationPointInvalid",
    0x804B0000: "BadNoContinuationPoints", 0x804C0000: "BadReferenceTypeIdInvalid",
    0x804D0000: "BadBrowseDirectionInvalid", 0x804E0000: "BadNodeNotInView",
    0x804F0000: "BadServerUriInvalid", 0x80500000: "BadServerNameMissing",
    0x80510000: "BadDiscoveryUrlMissing", 0x80530000: "BadRequestTypeInvalid",
    0x80540000: "BadSecurityModeRejected", 0x80550000: "BadSecurityPolicyRejected",
    0x80560000: "BadTooManySessions", 0x80570000: "BadUserSignatureInvalid",
    0x80580000: "BadApplicationSignatureInvalid", 0x80590000: "BadNoValidCertificates",
    0x80C60000: "BadIdentityChangeNotSupported", 0x805A0000: "BadRequestCancelledByRequest",
    0x805B0000: "BadParentNodeIdInvalid", 0x805C0000: "BadReferenceNotAllowed",
    0x805D0000: "BadNodeIdRejected", 0x805E0000: "BadNodeIdExists",
    0x805F0000: "BadNodeClassInvalid", 0x80600000: "BadBrowseNameInvalid",
    0x80610000: "BadBrowseNameDuplicated", 0x80620000: "BadNodeAttributesInvalid",
    0x80630000: "BadTypeDefinitionInvalid", 0x80640000: "BadSourceNodeIdInvalid",
    0x80650000: "BadTargetNodeIdInvalid", 0x80660000: "BadDuplicateReferenceNotAllowed",
    0x80670000: "BadInvalidSelfReference", 0x80680000: "BadReferenceLocalOnly",
    0x80690000: "BadNoDeleteRights", 0x806B0000: "BadViewIdUnknown",
    0x806D0000: "BadTooManyMatches", 0x806F0000: "BadNoMatch",
    0x80700000: "BadMaxAgeInvalid", 0x80E60000: "BadSecurityModeInsufficient",
    0x80710000: "BadHistoryOperationInvalid", 0x80720000: "BadHistoryOperationUnsupported",
    0x80730000: "BadWriteNotSupported", 0x80740000: "BadTypeMismatch",
    0x80750000: "BadMethodInvalid", 0x80760000: "BadArgumentsMissing",
    0x81110000: "BadNotExecutable", 0x80770000: "BadTooManySubscriptions",
    0x80780000: "BadTooManyPublishRequests", 0x80790000: "BadNoSubscription",
    0x807A0000: "BadSequenceNumberUnknown", 0x807B0000: "BadMessageNotAvailable",
    0x807C0000: "BadInsufficientClientProfile", 0x807D0000: "BadTcpServerTooBusy",
    0x807E0000: "BadTcpMessageTypeInvalid", 0x807F0000: "BadTcpSecureChannelUnknown",
    0x80800000: "BadTcpMessageTooLarge", 0x80810000: "BadTcpNotEnoughResources",
    0x80820000: "BadTcpInternalError", 0x80830000: "BadTcpEndpointUrlInvalid",
    0x80840000: "BadRequestInterrupted", 0x80850000: "BadRequestTimeout",
    0x80860000: "BadSecureChannelClosed", 0x80870000: "BadSecureChannelTokenUnknown",
    0x80880000: "BadSequenceNumberInvalid", 0x80BE0000: "BadProtocolVersionUnsupported",
    0x80890000: "BadConfigurationError", 0x808A0000: "BadNotConnected",
    0x808B0000: "BadDeviceFailure", 0x808C0000: "BadSensorFailure",
    0x808D0000: "BadOutOfService", 0x808E0000: "BadDeadbandFilterInvalid",
    0x809B0000: "BadNoData", 0x80E40000: "BadRequestNotAllowed",
    0x80AB0000: "BadInvalidArgument", 0x80AC0000: "BadConnectionRejected",
    0x80AD0000: "BadDisconnect", 0x80AE0000: "BadConnectionClosed",
    0x80AF0000: "BadInvalidState", 0x80B70000: "BadMaxConnectionsReached",
    0x00A90000: "GoodCallAgain", 0x00A50000: "GoodNoData", 0x00A60000: "GoodMoreData",
}
