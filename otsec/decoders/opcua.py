r"""OPC UA binary decoder: UA TCP framing, UA Secure Conversation, the standard services.

Every chunk starts with the UA TCP header (little-endian)::

    0       3      4               8
    +-------+------+---------------+------------------------------------------+
    | type  | chunk| message size  | ...                                      |
    | "HEL" | 'F'  | uint32, incl. |                                          |
    +-------+------+-header--------+------------------------------------------+
    type  HEL/ACK/ERR/RHE  connection handshake, one chunk ('F'), no security
          OPN              OpenSecureChannel: asymmetric security header
          MSG/CLO          service messages / CloseSecureChannel: symmetric header
    chunk 'F' final, 'C' intermediate, 'A' abort (the body is Error + Reason)

    HEL  | ProtocolVersion | ReceiveBufferSize | SendBufferSize | MaxMessageSize |
         | MaxChunkCount | EndpointUrl (String) |
    ACK  | ProtocolVersion | ReceiveBufferSize | SendBufferSize | MaxMessageSize |
         | MaxChunkCount |
    ERR  | Error (StatusCode) | Reason (String) |
    RHE  | ServerUri (String) | EndpointUrl (String) |

    OPN  | SecureChannelId | SecurityPolicyUri | SenderCertificate | ReceiverCert- |
         |   (uint32)      | (String)          | (ByteString)      | Thumbprint    |
         | SequenceNumber | RequestId | body ...                                  |
    MSG  | SecureChannelId | TokenId | SequenceNumber | RequestId | body ...       |
    CLO    \_ symmetric security hdr _/\__ sequence header ___/

    body | TypeId (ExpandedNodeId of the service's binary encoding, e.g. i=631 for
         | ReadRequest) | RequestHeader / ResponseHeader | service fields ...

What is readable depends on the secure channel. With SecurityPolicy None everything
is cleartext. With any other policy the OPN chunks are encrypted with the peers'
public keys, so the channel's MessageSecurityMode cannot be read; MSG chunks are then
cleartext plus a signature in mode Sign and encrypted from the sequence header on in
mode SignAndEncrypt. Like tshark, the decoder infers the mode from the first message
of the channel: when its body starts with a known service type id and its request or
response header parses, the channel is Sign; otherwise SignAndEncrypt, and its
messages are reported as encrypted, never guessed (see docs/protocols/opcua.md).

Per connection the state keeps the channels (policy, mode), the unfinished
multi-chunk messages per request id, and the requests awaiting a response (so a
ServiceFault or an ERR can be classified); every structure has a named cap.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from otsec.decoders.base import NEED_MORE, UNFRAMEABLE, Decoder
from otsec.decoders.opcua_encoding import (
    APPLICATION_TYPES, ATTRIBUTES, IDENTITY_TOKENS, MESSAGE_SECURITY_MODES, NODE_CLASSES,
    POLICY_PREFIX, SECURITY_TOKEN_REQUEST_TYPES, SERVICE_OP_CLASS, SERVICES,
    SIGNATURE_LENGTHS, USER_TOKEN_TYPES, Malformed, Truncated, array_count, bytestring,
    data_value, data_value_status, datetime_iso, expanded_node_id, extension_object, f64,
    localized_text, node_id, numeric_type_id, qualified_name, skip, skip_array,
    skip_bytestring, skip_diagnostic_info, skip_extension_object, skip_variant, status_name,
    status_result, string, ticks_iso, u8, u32, variant,
)
from otsec.model import Event, Target

PROTOCOL = "opcua"
UA_PORT = 4840

# --- framing -----------------------------------------------------------------------
HEADER_LEN = 8
_HEADER = struct.Struct("<3scI")
_FRAME_HEADER = struct.Struct("<3sBI")
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
#: Largest chunk framed. Stacks negotiate buffer sizes of 8 KiB-64 KiB (open62541
#: default 64 KiB); 16 MiB leaves room for big certificates and odd servers while a
#: garbage size field is still rejected.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
#: Smallest valid chunk per message type: header plus the fixed fields.
MIN_CHUNK_SIZE = {b"HEL": 32, b"ACK": 28, b"ERR": 16, b"RHE": 16, b"OPN": 32,
                  b"MSG": 24, b"CLO": 24}
#: The connection-level messages are never chunked.
SINGLE_CHUNK_TYPES = frozenset((b"HEL", b"ACK", b"ERR", b"RHE"))
CHUNK_TYPES = frozenset(b"FCA")
SYMMETRIC_HEADER_END = 24       # header + channel id + token id + sequence header
HELLO_KEY = "hello"             # pair_key of HEL/ACK: one handshake per connection

# --- per-connection caps ---------------------------------------------------------
MAX_CHUNKS_PER_MESSAGE = 256    # C chunks joined into one message before giving up
MAX_MESSAGE_BYTES = 4 * 1024 * 1024   # reassembled body kept per message
MAX_PARTIAL_MESSAGES = 16       # multi-chunk messages in progress per connection
MAX_CHANNELS = 8                # secure channels remembered per connection
MAX_PENDING_REQUESTS = 256      # request ids awaiting a response
HEAD_BYTES = 64                 # start of an overflowed message kept to name its service
MAX_CACHED_CERTIFICATES = 64    # thumbprints remembered (process-wide), emptied when full
MAX_CACHED_CERTIFICATE_BYTES = 8192   # larger certificates (chains, garbage) are hashed each time

# --- caps on what is copied into an event ----------------------------------------
MAX_ITEMS = 32                  # node ids / per-item results listed per message
MAX_ENDPOINTS = 16              # endpoint descriptions listed per message

# --- anomaly flags ---------------------------------------------------------------
A_INVALID_SIZE = "opcua.invalid_size"                # size field below the type's minimum or != chunk length
A_UNKNOWN_MESSAGE_TYPE = "opcua.unknown_message_type"
A_INVALID_CHUNK_TYPE = "opcua.invalid_chunk_type"    # HEL/ACK/ERR/RHE not 'F', or not F/C/A
A_CHUNK_OVERFLOW = "opcua.chunk_overflow"            # multi-chunk message over the caps: body not decoded
A_TRUNCATED_BODY = "opcua.truncated_body"            # a field runs past the end of the message
A_DECODE_ERROR = "opcua.decode_error"                # bytes that are no valid encoding
A_ABORT_CHUNK = "opcua.abort_chunk"                  # sender abandoned a multi-chunk message
A_UNKNOWN_SERVICE = "opcua.unknown_service"          # type id is not a standard service
A_UNSUPPORTED_VERSION = "opcua.unsupported_version"  # HEL/ACK protocol version is not 0
A_UNKNOWN_CHANNEL = "opcua.unknown_secure_channel"   # MSG names a channel this connection never opened

#: Certificate bytes -> thumbprint: endpoints and sessions repeat the same few certificates.
_THUMBPRINTS: dict[bytes, str] = {}

_NONE_POLICY = "None"
_CLEARTEXT_UNKNOWN = "NoneOrSign"   # readable channel whose OPN was not seen


class _Channel:
    """What is known about one secure channel's security."""

    __slots__ = ("policy", "mode", "inferred")

    def __init__(self, policy: str | None, mode: str | None, inferred: bool = False) -> None:
        self.policy = policy        # policy URI suffix ("None", "Basic256Sha256"), None: OPN not seen
        self.mode = mode            # "None"/"Sign"/"SignAndEncrypt"/"NoneOrSign", None: not decided
        self.inferred = inferred    # mode decided from the first message, not read from an OPN

    def describe(self, detail: dict) -> None:
        if self.policy is not None:
            detail["security_policy"] = self.policy
        if self.mode is not None:
            detail["security_mode"] = self.mode
            if self.inferred:
                detail["security_mode_inferred"] = True


class _Partial:
    """A multi-chunk message in progress (one request id, one direction)."""

    __slots__ = ("parts", "size", "chunks", "head", "overflow", "anomalies")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.chunks = 0
        self.head = b""
        self.overflow = False
        self.anomalies: list[str] = []

    def add(self, body: bytes) -> None:
        if not self.chunks:
            self.head = body[:HEAD_BYTES]
        self.chunks += 1
        self.size += len(body)
        if self.overflow:
            return
        if self.chunks > MAX_CHUNKS_PER_MESSAGE or self.size > MAX_MESSAGE_BYTES:
            self.overflow = True
            self.parts = []
        else:
            self.parts.append(body)


class OpcUaState:
    """Per-connection state (both directions), every structure capped."""

    __slots__ = ("channels", "opening", "partials", "encrypted_chunks", "pending",
                 "hello_pending", "reverse")

    def __init__(self) -> None:
        self.channels: dict[int, _Channel] = {}
        self.opening: _Channel | None = None           # policy of the last OPN request
        self.partials: dict[tuple[bool, int], _Partial] = {}
        self.encrypted_chunks = [0, 0]                  # C chunks of the encrypted message in progress, per direction
        self.pending: dict[int, str] = {}               # request id -> op class of the request
        self.hello_pending = False
        self.reverse = False                            # ReverseHello: the TCP client is the UA server


def new_state() -> OpcUaState:
    return OpcUaState()


# --- framing -----------------------------------------------------------------------

def probe(buf: bytes, pos: int) -> bool:
    """A known message type, a chunk type allowed for it and a plausible size;
    HEL and ACK must also announce protocol version 0."""
    if len(buf) - pos < HEADER_LEN:
        return False
    mtype, chunk, size = _HEADER.unpack_from(buf, pos)
    minimum = MIN_CHUNK_SIZE.get(mtype)
    if minimum is None or not minimum <= size <= MAX_CHUNK_SIZE:
        return False
    if mtype in SINGLE_CHUNK_TYPES:
        if chunk != b"F":
            return False
        if mtype in (b"HEL", b"ACK"):
            return len(buf) - pos >= 12 and buf[pos + 8:pos + 12] == b"\0\0\0\0"
        return True
    return chunk[0] in CHUNK_TYPES


def frame(buf: bytes, pos: int) -> int:
    """The chunk's declared size; prefixes that already contradict a header are UNFRAMEABLE."""
    avail = len(buf) - pos
    if avail >= HEADER_LEN:                  # the whole header at hand: one unpack
        mtype, chunk, size = _FRAME_HEADER.unpack_from(buf, pos)
        if mtype not in MIN_CHUNK_SIZE or chunk not in CHUNK_TYPES \
                or not HEADER_LEN <= size <= MAX_CHUNK_SIZE:
            return UNFRAMEABLE
        return size if avail >= size else NEED_MORE
    if avail >= 3 and buf[pos:pos + 3] not in MIN_CHUNK_SIZE:
        return UNFRAMEABLE
    if avail >= 4 and buf[pos + 3] not in CHUNK_TYPES:
        return UNFRAMEABLE
    return NEED_MORE


# --- helpers -------------------------------------------------------------------------

def _flag(exc: Exception) -> str:
    return A_TRUNCATED_BODY if isinstance(exc, Truncated) else A_DECODE_ERROR


def _thumbprint(cert: bytes) -> str:
    """SHA-1 of the first DER certificate (a sender certificate may be a chain), as
    OPC UA thumbprints are computed; the few certificates of a network are cached."""
    if len(cert) > MAX_CACHED_CERTIFICATE_BYTES:
        return _sha1_thumbprint(cert)
    thumb = _THUMBPRINTS.get(cert)
    if thumb is None:
        thumb = _sha1_thumbprint(cert)
        if len(_THUMBPRINTS) >= MAX_CACHED_CERTIFICATES:
            _THUMBPRINTS.clear()
        _THUMBPRINTS[cert] = thumb
    return thumb


def _sha1_thumbprint(cert: bytes) -> str:
    if len(cert) >= 4 and cert[0] == 0x30:
        if cert[1] == 0x82:
            cert = cert[:4 + int.from_bytes(cert[2:4], "big")]
        elif cert[1] == 0x81:
            cert = cert[:3 + cert[2]]
    return hashlib.sha1(cert).hexdigest()


def _policy_name(uri: str | None) -> str | None:
    if not uri:
        return None
    return uri[len(POLICY_PREFIX):] if uri.startswith(POLICY_PREFIX) else uri


def _event(kind: str, function: str, op_class: str, detail: dict, anomalies: list[str],
           **fields) -> Event:
    return Event(protocol=PROTOCOL, kind=kind, function=function, op_class=op_class,
                 detail=detail, anomalies=anomalies, **fields)


def _remember_request(state: OpcUaState, request_id: int, op_class: str) -> None:
    if len(state.pending) >= MAX_PENDING_REQUESTS:
        del state.pending[next(iter(state.pending))]
    state.pending[request_id] = op_class


def _nodes(ev: Event, ids: list[str]) -> None:
    ev.targets.extend(Target(kind="node", name=n) for n in ids[:MAX_ITEMS - len(ev.targets)])


#: Keys of a request item (``detail["items"]``) that name the nodes it operates on.
_TARGET_KEYS = ("node_id", "object_id", "method_id")


def _item_targets(ev: Event) -> None:
    """Targets from the request items decoded so far (also when the message is cut)."""
    _nodes(ev, [item[k] for item in ev.detail.get("items", ()) for k in _TARGET_KEYS if k in item])


def _request_items(buf: bytes, off: int, ev: Event, read_one: Callable[[bytes, int, dict], int]) -> int:
    """A request's array of operations. ``read_one`` fills an item dict field by field,
    and the first MAX_ITEMS dicts are listed in ``detail["items"]`` before they are
    read, so a message cut short keeps everything decoded before the cut."""
    count, off = array_count(buf, off)
    ev.detail["item_count"] = count
    items = ev.detail["items"] = []
    for i in range(count):
        item: dict = {}
        if i < MAX_ITEMS:
            items.append(item)
        off = read_one(buf, off, item)
    return off


def _read_items(buf: bytes, off: int, read_one: Callable) -> tuple[list, int, int]:
    """An array: (first MAX_ITEMS elements, element count, next offset)."""
    count, off = array_count(buf, off)
    items = []
    for i in range(count):
        item, off = read_one(buf, off)
        if i < MAX_ITEMS:
            items.append(item)
    return items, count, off


def _item_statuses(ev: Event, codes: list[int], count: int) -> None:
    """Per-item StatusCodes of a response: names listed, Bad ones counted. When every
    item failed under a Good service result, the operation failed: result error."""
    bad = [c for c in codes if c & 0x80000000]
    ev.detail["item_count"] = count
    ev.detail["item_statuses"] = [status_name(c) for c in codes]
    ev.detail["bad_items"] = len(bad)
    if count and len(bad) == count and ev.result == "ok":
        ev.result = "error"
        ev.status = status_name(bad[0])


def _skip_u32(buf: bytes, off: int) -> int:
    return skip(buf, off, 4)


def _variant_type(buf: bytes, off: int) -> tuple[str, int]:
    vtype, _, off = variant(buf, off)
    return vtype, off


def _data_value_status(buf: bytes, off: int) -> tuple[int, int]:
    code, off = data_value_status(buf, off)
    return code or 0, off


# --- service headers -------------------------------------------------------------------

#: Timestamp and request handle; with the service result for a response header.
_TICKS_U32 = struct.Struct("<qI")
_RESPONSE_FIXED = struct.Struct("<qII")
#: An empty (0) or null (-1) String/array length, and a null ExtensionObject (NodeId
#: i=0, no body): what nearly every header carries in its optional fields.
_EMPTY_LENGTHS = (b"\0\0\0\0", b"\xff\xff\xff\xff")
_NO_EXTENSION = b"\0\0\0"
#: ReadValueId without IndexRange and DataEncoding (null String, QualifiedName 0:null).
_NO_RANGE_NO_ENCODING = b"\xff\xff\xff\xff\0\0\xff\xff\xff\xff"

def _request_header(buf: bytes, off: int, ev: Event) -> int:
    """AuthenticationToken, Timestamp, RequestHandle, ReturnDiagnostics, AuditEntryId,
    TimeoutHint, AdditionalHeader."""
    token, off = node_id(buf, off)
    detail = ev.detail
    end = off + 27
    if end <= len(buf) and buf[off + 16:off + 20] in _EMPTY_LENGTHS \
            and buf[off + 24:end] == _NO_EXTENSION:
        # the usual layout: no audit entry id, no additional header
        ticks, handle = _TICKS_U32.unpack_from(buf, off)
        detail["authentication_token"] = token
        detail["timestamp"] = ticks_iso(ticks)
        detail["request_handle"] = handle
        return end
    detail["authentication_token"] = token
    ev.detail["timestamp"], off = datetime_iso(buf, off)
    ev.detail["request_handle"], off = u32(buf, off)
    off = skip(buf, off, 4)
    off = skip_bytestring(buf, off)
    off = skip(buf, off, 4)
    return skip_extension_object(buf, off)


def _response_header(buf: bytes, off: int, ev: Event) -> int:
    """Timestamp, RequestHandle, ServiceResult, ServiceDiagnostics, StringTable,
    AdditionalHeader."""
    end = off + 24
    if end <= len(buf) and not buf[off + 16] and buf[off + 17:off + 21] in _EMPTY_LENGTHS \
            and buf[off + 21:end] == _NO_EXTENSION:
        # the usual layout: no diagnostics, no string table, no additional header
        ticks, handle, code = _RESPONSE_FIXED.unpack_from(buf, off)
        detail = ev.detail
        detail["timestamp"] = ticks_iso(ticks)
        detail["request_handle"] = handle
        ev.result = status_result(code)
        ev.status = status_name(code)
        detail["service_result"] = f"0x{code:08X}"
        return end
    ev.detail["timestamp"], off = datetime_iso(buf, off)
    ev.detail["request_handle"], off = u32(buf, off)
    code, off = u32(buf, off)
    ev.result = status_result(code)
    ev.status = status_name(code)
    ev.detail["service_result"] = f"0x{code:08X}"
    off = skip_diagnostic_info(buf, off)
    off = skip_array(buf, off, skip_bytestring)
    return skip_extension_object(buf, off)


# --- service bodies ---------------------------------------------------------------------

def _attribute(buf: bytes, off: int, item: dict) -> int:
    attr, off = u32(buf, off)
    name = ATTRIBUTES.get(attr)
    item["attribute"] = name if name is not None else str(attr)
    return off


def _read_value_id(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    end = off + 14
    if buf[off + 4:end] == _NO_RANGE_NO_ENCODING:
        _attribute(buf, off, item)
        return end
    off = _attribute(buf, off, item)
    off = skip_bytestring(buf, off)                # IndexRange
    return skip_bytestring(buf, skip(buf, off, 2))  # DataEncoding (QualifiedName)


def _read_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["max_age"], off = f64(buf, off)
    off = skip(buf, off, 4)                        # TimestampsToReturn
    return _request_items(buf, off, ev, _read_value_id)


def _read_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    codes, count, off = _read_items(buf, off, _data_value_status)
    _item_statuses(ev, codes, count)
    return off


def _write_value(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    off = _attribute(buf, off, item)
    index_range, off = string(buf, off)
    if index_range:
        item["index_range"] = index_range
    value, _, off = data_value(buf, off)
    if value is not None:
        item["value_type"], item["value"] = value
    return off


def _write_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _request_items(buf, off, ev, _write_value)


def _status_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    """Responses whose body is one StatusCode per requested item."""
    codes, count, off = _read_items(buf, off, u32)
    _item_statuses(ev, codes, count)
    return off


def _call_method(buf: bytes, off: int, item: dict) -> int:
    item["object_id"], off = node_id(buf, off)
    item["method_id"], off = node_id(buf, off)
    types, item["input_arguments"], off = _read_items(buf, off, _variant_type)
    item["argument_types"] = types
    return off


def _call_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _request_items(buf, off, ev, _call_method)


def _call_result(buf: bytes, off: int) -> tuple[int, int]:
    code, off = u32(buf, off)
    off = skip_array(buf, off, _skip_u32)             # InputArgumentResults
    off = skip_array(buf, off, skip_diagnostic_info)  # InputArgumentDiagnosticInfos
    return code, skip_array(buf, off, skip_variant)   # OutputArguments


def _call_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    codes, count, off = _read_items(buf, off, _call_result)
    _item_statuses(ev, codes, count)
    return off


def _browse_description(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    off = skip(buf, off, 4)                        # BrowseDirection
    off = node_id(buf, off)[1]                     # ReferenceTypeId
    return skip(buf, off, 9)                       # IncludeSubtypes, NodeClassMask, ResultMask


def _browse_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    view, off = node_id(buf, off)
    off = skip(buf, off, 12)                       # view timestamp + version, max references
    if view != "i=0":
        ev.detail["view_id"] = view
    return _request_items(buf, off, ev, _browse_description)


def _node_item(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    return off


def _node_array(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    """RegisterNodes / UnregisterNodes: NodeId[]."""
    return _request_items(buf, off, ev, _node_item)


def _relative_path_element(buf: bytes, off: int) -> tuple[str, int]:
    off = node_id(buf, off)[1]                     # ReferenceTypeId
    return qualified_name(buf, skip(buf, off, 2))  # IsInverse, IncludeSubtypes, TargetName


def _browse_path(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    names, _, off = _read_items(buf, off, _relative_path_element)
    item["path"] = "/".join(names)
    return off


def _translate_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _request_items(buf, off, ev, _browse_path)


def _is_null_numeric(nid: str) -> bool:
    """Numeric id 0 in any namespace: "let the server assign the id"."""
    return nid == "i=0" or nid.endswith(";i=0")


def _add_nodes_item(buf: bytes, off: int, item: dict) -> int:
    item["parent_node_id"], off = expanded_node_id(buf, off)
    off = node_id(buf, off)[1]                     # ReferenceTypeId
    requested, off = expanded_node_id(buf, off)
    item["requested_node_id"] = requested
    # node_id: the node being created, or the parent when the server is to choose the id
    item["node_id"] = item["parent_node_id"] if _is_null_numeric(requested) else requested
    item["browse_name"], off = qualified_name(buf, off)
    node_class, off = u32(buf, off)
    item["node_class"] = NODE_CLASSES.get(node_class, str(node_class))
    off = skip_extension_object(buf, off)          # NodeAttributes
    item["type_definition"], off = expanded_node_id(buf, off)
    return off


def _add_nodes_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _request_items(buf, off, ev, _add_nodes_item)


def _add_nodes_result(buf: bytes, off: int) -> tuple[tuple[int, str], int]:
    code, off = u32(buf, off)
    nid, off = node_id(buf, off)
    return (code, nid), off


def _add_nodes_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    results, count, off = _read_items(buf, off, _add_nodes_result)
    _item_statuses(ev, [c for c, _ in results], count)
    _nodes(ev, [n for c, n in results if not c & 0x80000000])
    return off


def _delete_nodes_item(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)
    flag, off = u8(buf, off)
    item["delete_target_references"] = bool(flag)
    return off


def _delete_nodes_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _request_items(buf, off, ev, _delete_nodes_item)


def _add_reference(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)       # SourceNodeId
    off = node_id(buf, off)[1]                     # ReferenceTypeId
    off = skip(buf, off, 1)                        # IsForward
    off = skip_bytestring(buf, off)                # TargetServerUri
    item["target_node_id"], off = expanded_node_id(buf, off)
    return skip(buf, off, 4)                       # TargetNodeClass


def _delete_reference(buf: bytes, off: int, item: dict) -> int:
    item["node_id"], off = node_id(buf, off)       # SourceNodeId
    off = node_id(buf, off)[1]                     # ReferenceTypeId
    off = skip(buf, off, 1)                        # IsForward
    item["target_node_id"], off = expanded_node_id(buf, off)
    return skip(buf, off, 1)                       # DeleteBidirectional


def _references_request(read_one: Callable) -> Callable:
    def decode(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
        return _request_items(buf, off, ev, read_one)
    return decode


def _application_description(buf: bytes, off: int) -> tuple[dict, int]:
    uri, off = string(buf, off)
    product, off = string(buf, off)
    name, off = localized_text(buf, off)
    app_type, off = u32(buf, off)
    off = skip_bytestring(buf, off)                # GatewayServerUri
    off = skip_bytestring(buf, off)                # DiscoveryProfileUri
    off = skip_array(buf, off, skip_bytestring)    # DiscoveryUrls
    desc = {"application_uri": uri, "product_uri": product, "application_name": name,
            "application_type": APPLICATION_TYPES.get(app_type, str(app_type))}
    return {k: v for k, v in desc.items() if v}, off


def _user_token_policy(buf: bytes, off: int) -> tuple[str, int]:
    off = skip_bytestring(buf, off)                # PolicyId
    token_type, off = u32(buf, off)
    for _ in range(3):                             # IssuedTokenType, IssuerEndpointUrl, SecurityPolicyUri
        off = skip_bytestring(buf, off)
    return USER_TOKEN_TYPES.get(token_type, str(token_type)), off


def _endpoint_description(buf: bytes, off: int) -> tuple[dict, int]:
    url, off = string(buf, off)
    server, off = _application_description(buf, off)
    cert, off = bytestring(buf, off)
    mode, off = u32(buf, off)
    policy, off = string(buf, off)
    tokens, _, off = _read_items(buf, off, _user_token_policy)
    off = skip_bytestring(buf, off)                # TransportProfileUri
    level, off = u8(buf, off)
    endpoint = {"endpoint_url": url, "security_mode": MESSAGE_SECURITY_MODES.get(mode, str(mode)),
                "security_policy": _policy_name(policy), "security_level": level,
                "user_token_types": sorted(set(tokens)), "server": server}
    if cert:
        endpoint["server_certificate_thumbprint"] = _thumbprint(cert)
    return endpoint, off


def _endpoints(buf: bytes, off: int, ev: Event) -> int:
    """EndpointDescription[]: the offered (mode, policy) pairs, and the server's
    ApplicationDescription as the sender's identity."""
    count, off = array_count(buf, off)
    endpoints = []
    for _ in range(count):
        endpoint, off = _endpoint_description(buf, off)
        server = endpoint.pop("server")
        if ev.identity is None and server:
            ev.identity = server
        if len(endpoints) < MAX_ENDPOINTS:
            endpoints.append(endpoint)
    ev.detail["endpoint_count"] = count
    ev.detail["endpoints"] = endpoints
    return off


def _get_endpoints_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["endpoint_url"], off = string(buf, off)
    off = skip_array(buf, off, skip_bytestring)    # LocaleIds
    return skip_array(buf, off, skip_bytestring)   # ProfileUris


def _get_endpoints_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _endpoints(buf, off, ev)


def _find_servers_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    servers, count, off = _read_items(buf, off, _application_description)
    ev.detail["server_count"] = count
    ev.detail["servers"] = servers
    return off


def _create_session_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    client, off = _application_description(buf, off)
    ev.identity = client or None
    off = skip_bytestring(buf, off)                # ServerUri
    ev.detail["endpoint_url"], off = string(buf, off)
    ev.detail["session_name"], off = string(buf, off)
    off = skip_bytestring(buf, off)                # ClientNonce
    cert, off = bytestring(buf, off)
    if cert:
        ev.detail["client_certificate_thumbprint"] = _thumbprint(cert)
    ev.detail["requested_session_timeout"], off = f64(buf, off)
    return skip(buf, off, 4)                       # MaxResponseMessageSize


def _create_session_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["session_id"], off = node_id(buf, off)
    off = node_id(buf, off)[1]                     # AuthenticationToken
    ev.detail["revised_session_timeout"], off = f64(buf, off)
    off = skip_bytestring(buf, off)                # ServerNonce
    cert, off = bytestring(buf, off)
    if cert:
        ev.detail["server_certificate_thumbprint"] = _thumbprint(cert)
    return _endpoints(buf, off, ev)


def _skip_signature_data(buf: bytes, off: int) -> int:
    return skip_bytestring(buf, skip_bytestring(buf, off))


def _activate_session_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    off = _skip_signature_data(buf, off)           # ClientSignature
    off = skip_array(buf, off, _skip_signature_data)   # ClientSoftwareCertificates
    locales, _, off = _read_items(buf, off, string)
    if locales:
        ev.detail["locale_ids"] = locales
    type_id, body, off = extension_object(buf, off)
    token = IDENTITY_TOKENS.get(type_id)
    ev.detail["identity_token"] = token or (f"i={type_id}" if type_id is not None else "unknown")
    if body is not None:
        ev.detail["identity_policy_id"], boff = string(body, 0)
        if token == "UserName":                    # the password that follows is never read
            ev.detail["user_name"], boff = string(body, boff)
        elif token == "X509":
            cert, boff = bytestring(body, boff)
            if cert:
                ev.detail["user_certificate_thumbprint"] = _thumbprint(cert)
    return _skip_signature_data(buf, off)          # UserTokenSignature


def _activate_session_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    return _status_response(buf, skip_bytestring(buf, off), ev, state)   # after ServerNonce


def _open_channel_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["client_protocol_version"], off = u32(buf, off)
    req_type, off = u32(buf, off)
    mode, off = u32(buf, off)
    ev.detail["request_type"] = SECURITY_TOKEN_REQUEST_TYPES.get(req_type, str(req_type))
    ev.detail["security_mode"] = MESSAGE_SECURITY_MODES.get(mode, str(mode))
    off = skip_bytestring(buf, off)                # ClientNonce
    ev.detail["requested_lifetime"], off = u32(buf, off)
    return off


def _open_channel_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["server_protocol_version"], off = u32(buf, off)
    ev.detail["channel_id"], off = u32(buf, off)
    ev.detail["token_id"], off = u32(buf, off)
    off = skip(buf, off, 8)                        # CreatedAt
    ev.detail["revised_lifetime"], off = u32(buf, off)
    return skip_bytestring(buf, off)               # ServerNonce


def _create_subscription_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["publishing_interval"], off = f64(buf, off)
    off = skip(buf, off, 12)                       # lifetime, keep-alive, max notifications
    enabled, off = u8(buf, off)
    ev.detail["publishing_enabled"] = bool(enabled)
    ev.detail["priority"], off = u8(buf, off)
    return off


def _create_subscription_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["subscription_id"], off = u32(buf, off)
    ev.detail["publishing_interval"], off = f64(buf, off)
    return skip(buf, off, 8)                       # revised lifetime, keep-alive counts


def _monitored_item_create(buf: bytes, off: int, item: dict) -> int:
    off = _read_value_id(buf, off, item)
    off = skip(buf, off, 8)                        # MonitoringMode, ClientHandle
    item["sampling_interval"], off = f64(buf, off)
    off = skip_extension_object(buf, off)          # Filter
    return skip(buf, off, 5)                       # QueueSize, DiscardOldest


def _create_monitored_items_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["subscription_id"], off = u32(buf, off)
    off = skip(buf, off, 4)                        # TimestampsToReturn
    return _request_items(buf, off, ev, _monitored_item_create)


def _monitored_item_result(buf: bytes, off: int) -> tuple[int, int]:
    code, off = u32(buf, off)
    off = skip(buf, off, 16)                       # item id, revised sampling interval, queue size
    return code, skip_extension_object(buf, off)   # FilterResult


def _create_monitored_items_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    codes, count, off = _read_items(buf, off, _monitored_item_result)
    _item_statuses(ev, codes, count)
    return off


def _publish_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["acknowledgements"], off = array_count(buf, off)
    return skip(buf, off, 8 * ev.detail["acknowledgements"])


def _publish_response(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ev.detail["subscription_id"], off = u32(buf, off)
    off = skip_array(buf, off, _skip_u32)          # AvailableSequenceNumbers
    more, off = u8(buf, off)
    ev.detail["more_notifications"] = bool(more)
    ev.detail["sequence_number"], off = u32(buf, off)
    ev.detail["publish_time"], off = datetime_iso(buf, off)
    ev.detail["notifications"], off = array_count(buf, off)
    for _ in range(ev.detail["notifications"]):
        off = skip_extension_object(buf, off)
    return off


def _subscription_ids(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    ids, count, off = _read_items(buf, off, u32)
    ev.detail["subscription_ids"] = ids
    ev.detail["item_count"] = count
    return off


def _close_session_request(buf: bytes, off: int, ev: Event, state: OpcUaState) -> int:
    flag, off = u8(buf, off)
    ev.detail["delete_subscriptions"] = bool(flag)
    return off


#: Service body decoders by encoding id; services absent here get only their header.
BODY_DECODERS: dict[int, Callable[[bytes, int, Event, OpcUaState], int]] = {
    631: _read_request, 634: _read_response,
    673: _write_request, 676: _status_response,
    712: _call_request, 715: _call_response,
    527: _browse_request, 554: _translate_request,
    560: _node_array, 566: _node_array,
    488: _add_nodes_request, 491: _add_nodes_response,
    500: _delete_nodes_request, 503: _status_response,
    494: _references_request(_add_reference), 497: _status_response,
    506: _references_request(_delete_reference), 509: _status_response,
    428: _get_endpoints_request, 431: _get_endpoints_response,
    422: _get_endpoints_request, 425: _find_servers_response,
    461: _create_session_request, 464: _create_session_response,
    467: _activate_session_request, 470: _activate_session_response,
    473: _close_session_request,
    446: _open_channel_request, 449: _open_channel_response,
    787: _create_subscription_request, 790: _create_subscription_response,
    751: _create_monitored_items_request, 754: _create_monitored_items_response,
    826: _publish_request, 829: _publish_response,
    847: _subscription_ids, 850: _status_response,
}


# --- message bodies --------------------------------------------------------------------

def _service_info(name: str) -> tuple[str, bool, str, str | None]:
    """(service name, is a request, function name, op class or None for ServiceFault)."""
    if name == "ServiceFault":
        return name, False, name, None
    if name.endswith("Request"):
        function = name[:-len("Request")]
        return name, True, function, SERVICE_OP_CLASS[function]
    function = name[:-len("Response")]
    return name, False, function, SERVICE_OP_CLASS[function]


#: Everything a service's type id decides, by type id.
_SERVICE_INFO = {sid: _service_info(name) for sid, name in SERVICES.items()}

def _service_header_ok(body: bytes, ua_client: bool) -> bool:
    """Does a body look like cleartext: a known service type id whose direction matches
    the sender, followed by a parsable request/response header? (mode inference)"""
    try:
        sid, off = numeric_type_id(body, 0)
        name = SERVICES.get(sid)
        if name is None or name.endswith("Request") != ua_client:
            return False
        probe_ev = _event("request", "", "other", {}, [])
        (_request_header if ua_client else _response_header)(body, off, probe_ev)
    except (Truncated, Malformed):
        return False
    return True


def _service_event(body: bytes, ua_client: bool, state: OpcUaState, detail: dict,
                   anomalies: list[str], request_id: int, complete: bool = True) -> Event:
    """The event of one cleartext service message; with ``complete`` False (the start
    of an overflowed message) only its service is named, no field is decoded."""
    try:
        sid, off = numeric_type_id(body, 0)
    except (Truncated, Malformed) as exc:
        return _event("request" if ua_client else "response", "Malformed message", "other",
                      detail, anomalies + [_flag(exc)])
    info = _SERVICE_INFO.get(sid)
    if info is None:
        return _event("request" if ua_client else "response", "Unknown service", "other",
                      detail, anomalies + [A_UNKNOWN_SERVICE], function_code=sid,
                      pair_key=request_id)
    name, is_request, function, op_class = info
    detail["service"] = name
    if op_class is None:                   # ServiceFault: the class of what failed
        op_class = state.pending.get(request_id, "other")
    ev = Event(PROTOCOL, "request" if is_request else "response", function, op_class, sid,
               anomalies=anomalies, detail=detail, pair_key=request_id)
    if is_request:
        _remember_request(state, request_id, op_class)
    else:
        state.pending.pop(request_id, None)
    if not complete:
        return ev
    try:
        off = (_request_header if is_request else _response_header)(body, off, ev)
        decode_body = BODY_DECODERS.get(sid)
        if decode_body is not None:
            decode_body(body, off, ev, state)
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    if "items" in detail:
        _item_targets(ev)
    return ev


def _abort_event(body: bytes, ua_client: bool, partial: _Partial | None, detail: dict,
                 anomalies: list[str], request_id: int) -> Event:
    """An 'A' chunk: the sender gave up on a multi-chunk message (body: Error, Reason)."""
    anomalies.append(A_ABORT_CHUNK)
    op_class = "other"
    detail["chunks"] = (partial.chunks if partial is not None else 0) + 1
    if partial is not None:
        try:
            name = SERVICES.get(numeric_type_id(partial.head, 0)[0])
        except (Truncated, Malformed):
            name = None
        if name:
            detail["aborted_service"] = name
            op_class = SERVICE_OP_CLASS.get(name.removesuffix("Request").removesuffix("Response"), "other")
    ev = _event("request" if ua_client else "response", "Abort", op_class, detail, anomalies,
                pair_key=None if ua_client else request_id)
    try:
        code, off = u32(body, 0)
        ev.status = status_name(code)
        ev.result = None if ua_client else "error"
        detail["reason"] = string(body, off)[0]
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    return ev


def _cleartext_chunk(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState,
                     channel: _Channel | None, detail: dict, anomalies: list[str],
                     header_end: int) -> list[Event]:
    """Sequence header, chunk reassembly per request id, then the service message."""
    try:
        if len(msg) >= header_end + 8:
            seq, request_id = _U32X2.unpack_from(msg, header_end)
            off = header_end + 8
        else:
            seq, off = u32(msg, header_end)
            request_id, off = u32(msg, off)
    except Truncated:
        return [_event("request" if ua_client else "response", "Malformed message", "other",
                       detail, anomalies + [A_TRUNCATED_BODY])]
    detail["sequence_number"] = seq
    detail["request_id"] = request_id
    body = msg[off:]
    key = (ua_client, request_id)
    if chunk == "C":
        if channel is not None and channel.mode == "Sign":
            body = body[:len(body) - SIGNATURE_LENGTHS.get(channel.policy or "", 0)]
        partial = state.partials.get(key)
        if partial is None:
            partial = _Partial()
            if len(state.partials) >= MAX_PARTIAL_MESSAGES:
                del state.partials[next(iter(state.partials))]
                partial.anomalies.append(A_CHUNK_OVERFLOW)
            state.partials[key] = partial
        partial.add(body)
        return []
    partial = state.partials.pop(key, None)
    if chunk == "A":
        return [_abort_event(body, ua_client, partial, detail, anomalies, request_id)]
    detail["chunks"] = 1
    if partial is not None:
        anomalies.extend(partial.anomalies)
        detail["chunks"] = partial.chunks + 1
        if partial.overflow:
            detail["reassembled_bytes"] = partial.size + len(body)
            return [_service_event(partial.head, ua_client, state, detail,
                                   anomalies + [A_CHUNK_OVERFLOW], request_id, complete=False)]
        partial.parts.append(body)
        body = b"".join(partial.parts)
    return [_service_event(body, ua_client, state, detail, anomalies, request_id)]


def _encrypted_chunk(mtype: bytes, chunk: str, ua_client: bool, state: OpcUaState,
                     detail: dict, anomalies: list[str]) -> list[Event]:
    """A chunk whose sequence header and body are encrypted: counted, never decoded."""
    direction = 1 if ua_client else 0
    if chunk == "C":
        state.encrypted_chunks[direction] += 1
        return []
    detail["encrypted"] = True
    detail["chunks"] = state.encrypted_chunks[direction] + 1
    state.encrypted_chunks[direction] = 0
    if chunk == "A":
        anomalies.append(A_ABORT_CHUNK)
    if mtype == b"MSG":
        function, op_class = "Encrypted message", "other"
    else:
        function, op_class = ("OpenSecureChannel" if mtype == b"OPN" else "CloseSecureChannel"), "session"
    return [_event("request" if ua_client else "response", function, op_class, detail, anomalies)]


# --- message types -------------------------------------------------------------------

def _hello(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
           anomalies: list[str]) -> list[Event]:
    ev = _event("request", "Hello", "session", detail, anomalies, pair_key=HELLO_KEY)
    state.hello_pending = True
    try:
        _connection_limits(msg, ev)
        detail["endpoint_url"] = string(msg, 28)[0]
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    return [ev]


def _connection_limits(msg: bytes, ev: Event) -> None:
    """The five uint32 fields HEL and ACK share."""
    version, off = u32(msg, 8)
    ev.detail["protocol_version"] = version
    if version != 0:
        ev.anomalies.append(A_UNSUPPORTED_VERSION)
    for name in ("receive_buffer_size", "send_buffer_size", "max_message_size", "max_chunk_count"):
        ev.detail[name], off = u32(msg, off)


def _acknowledge(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
                 anomalies: list[str]) -> list[Event]:
    ev = _event("response", "Acknowledge", "session", detail, anomalies, pair_key=HELLO_KEY,
                result="ok", status="Good")
    state.hello_pending = False
    try:
        _connection_limits(msg, ev)
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    return [ev]


def _error(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
           anomalies: list[str]) -> list[Event]:
    """ERR ends the connection. It answers the HEL when no ACK came, else the newest
    request still waiting (the server failed on it), whose op class it takes."""
    if state.hello_pending:
        key, op_class = HELLO_KEY, "session"
        state.hello_pending = False
    elif state.pending:
        key = next(reversed(state.pending))
        op_class = state.pending.pop(key)
    else:
        key, op_class = None, "session"
    ev = _event("response", "Error", op_class, detail, anomalies, pair_key=key, result="error")
    try:
        code, off = u32(msg, 8)
        ev.status = status_name(code)
        detail["error"] = f"0x{code:08X}"
        detail["reason"] = string(msg, off)[0]
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    return [ev]


def _reverse_hello(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
                   anomalies: list[str]) -> list[Event]:
    """RHE: a server behind a firewall opened the TCP connection to its client."""
    ev = _event("notification", "ReverseHello", "session", detail, anomalies)
    try:
        uri, off = string(msg, 8)
        detail["server_uri"] = uri
        detail["endpoint_url"] = string(msg, off)[0]
        if uri:
            ev.identity = {"application_uri": uri}
    except (Truncated, Malformed) as exc:
        ev.anomalies.append(_flag(exc))
    return [ev]


def _open_channel(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
                  anomalies: list[str]) -> list[Event]:
    """OPN: asymmetric security header; the body is cleartext only under policy None."""
    try:
        scid, off = u32(msg, 8)
        detail["secure_channel_id"] = scid
        uri, off = string(msg, off)
        cert, off = bytestring(msg, off)
        thumb, off = bytestring(msg, off)
    except (Truncated, Malformed) as exc:
        return [_event("request" if ua_client else "response", "OpenSecureChannel", "session",
                       detail, anomalies + [_flag(exc)])]
    policy = _policy_name(uri)
    detail["security_policy_uri"] = uri
    detail["sender_certificate"] = bool(cert)
    if cert:
        detail["sender_certificate_thumbprint"] = _thumbprint(cert)
    if thumb:
        detail["receiver_certificate_thumbprint"] = thumb.hex()
    if ua_client:
        channel = state.opening = _Channel(policy, _NONE_POLICY if policy == _NONE_POLICY else None)
    else:
        channel = state.opening or _Channel(policy, _NONE_POLICY if policy == _NONE_POLICY else None)
        if scid and (scid in state.channels or len(state.channels) < MAX_CHANNELS):
            state.channels[scid] = channel
    channel.describe(detail)
    if policy != _NONE_POLICY:
        return _encrypted_chunk(b"OPN", chunk, ua_client, state, detail, anomalies)
    return _cleartext_chunk(msg, chunk, ua_client, state, channel, detail, anomalies, off)


def _infer_mode(msg: bytes, chunk: str, ua_client: bool, channel: _Channel) -> bool:
    """Decide an undecided channel's mode from a chunk; True when it is cleartext.

    A chunk whose body starts like a service message decides Sign (NoneOrSign when the
    policy is unknown). A final chunk that does not decides SignAndEncrypt, but only
    when the OPN was seen: without it the capture may have started mid-message, so the
    decision waits for the next chunk.
    """
    body = msg[SYMMETRIC_HEADER_END:]
    if chunk != "A" and _service_header_ok(body, ua_client):
        channel.mode = "Sign" if channel.policy not in (None, _NONE_POLICY) else _CLEARTEXT_UNKNOWN
        channel.inferred = True
        return True
    if chunk == "F" and channel.policy is not None:
        channel.mode = "SignAndEncrypt"
        channel.inferred = True
    return False


def _symmetric(msg: bytes, chunk: str, ua_client: bool, state: OpcUaState, detail: dict,
               anomalies: list[str]) -> list[Event]:
    """MSG and CLO: symmetric security header, then cleartext or encrypted by channel mode."""
    if len(msg) >= 16:
        scid, token = _U32X2.unpack_from(msg, 8)
        off = 16
    else:
        scid, off = u32(msg, 8)
        token, off = u32(msg, off)
    detail["secure_channel_id"] = scid
    detail["token_id"] = token
    channel = state.channels.get(scid)
    if channel is None:
        if state.channels:
            anomalies.append(A_UNKNOWN_CHANNEL)
        channel = state.opening or _Channel(None, None)
        if len(state.channels) < MAX_CHANNELS:
            state.channels[scid] = channel
    if channel.mode is None:
        cleartext = _infer_mode(msg, chunk, ua_client, channel)
    else:
        cleartext = channel.mode != "SignAndEncrypt"
    channel.describe(detail)
    if not cleartext:
        return _encrypted_chunk(msg[:3], chunk, ua_client, state, detail, anomalies)
    return _cleartext_chunk(msg, chunk, ua_client, state, channel, detail, anomalies, off)


_HANDLERS = {b"HEL": _hello, b"ACK": _acknowledge, b"ERR": _error, b"RHE": _reverse_hello,
             b"OPN": _open_channel, b"MSG": _symmetric, b"CLO": _symmetric}
_MESSAGE_TYPE_NAMES = {mtype: mtype.decode("ascii") for mtype in _HANDLERS}


def decode(msg: bytes, from_client: bool, state: OpcUaState) -> list[Event]:
    """Decode one framed chunk. C chunks return no event until their message is final."""
    if state is None:
        state = OpcUaState()
    mtype = msg[:3]
    if mtype == b"RHE":     # sent by the UA server: if it opened the TCP connection, roles flip
        state.reverse = from_client
    ua_client = from_client != state.reverse
    handler = _HANDLERS.get(mtype)
    if handler is None or len(msg) < HEADER_LEN:
        return [_event("request" if ua_client else "response", "Unknown message", "other",
                       {"message_type": mtype.decode("latin-1")}, [A_UNKNOWN_MESSAGE_TYPE])]
    chunk = chr(msg[3])
    size = _U32.unpack_from(msg, 4)[0]
    detail = {"message_type": _MESSAGE_TYPE_NAMES[mtype], "chunk_type": chunk}
    anomalies = []
    if size != len(msg) or size < MIN_CHUNK_SIZE[mtype]:
        anomalies.append(A_INVALID_SIZE)
    if chunk not in "FCA" or (mtype in SINGLE_CHUNK_TYPES and chunk != "F"):
        anomalies.append(A_INVALID_CHUNK_TYPE)
        chunk = "F"
    try:
        return handler(msg, chunk, ua_client, state, detail, anomalies)
    except (Truncated, Malformed, struct.error, IndexError, ValueError) as exc:
        return [_event("request" if ua_client else "response", "Malformed message", "other",
                       detail, anomalies + [_flag(exc)])]


DECODER = Decoder(name=PROTOCOL, ports=(UA_PORT,), probe=probe, frame=frame,
                  new_state=new_state, decode=decode)
