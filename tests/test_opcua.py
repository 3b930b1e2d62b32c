"""OPC UA binary decoder: byte-literal messages, framing, channel security, fuzzing."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.decoders import opcua
from otsec.decoders import opcua_encoding as enc
from otsec.decoders.base import NEED_MORE, UNFRAMEABLE
from otsec.model import KINDS, OP_CLASSES, RESULTS

TS_2024 = "00c08976453cda01"          # DateTime 2024-01-01T00:00:00Z (100 ns ticks since 1601)
POLICY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"

HEL = bytes.fromhex(
    "48454c" "46"                      # "HEL", chunk F
    "33000000"                         # message size 51
    "00000000"                         # protocol version 0
    "00000100"                         # receive buffer size 65536
    "00000100"                         # send buffer size 65536
    "00000000"                         # max message size 0 (no limit)
    "00000000"                         # max chunk count 0 (no limit)
    "13000000") + b"opc.tcp://plc1:4840"   # endpoint URL, String of 19

ACK = bytes.fromhex(
    "41434b" "46" "1c000000"           # "ACK", F, size 28
    "00000000"                         # protocol version 0
    "00000100" "00000100"              # receive / send buffer size 65536
    "00000001"                         # max message size 16 MiB
    "00000000")                        # max chunk count

ERR = bytes.fromhex(
    "455252" "46" "19000000"           # "ERR", F, size 25
    "00008080"                         # error 0x80800000 BadTcpMessageTooLarge
    "09000000") + b"too large"         # reason, String of 9

OPN_REQUEST = bytes.fromhex(
    "4f504e" "46" "84000000"           # "OPN", F, size 132
    "00000000"                         # secure channel id 0: not assigned yet
    "2f000000") + POLICY_NONE.encode() + bytes.fromhex(  # SecurityPolicyUri, String of 47
    "ffffffff"                         # sender certificate: null ByteString
    "ffffffff"                         # receiver certificate thumbprint: null
    "01000000" "01000000"              # sequence number 1, request id 1
    "0100be01"                         # type id: four-byte NodeId ns=0 i=446 OpenSecureChannelRequest
    "0000"                             #   RequestHeader.AuthenticationToken: two-byte i=0
    + TS_2024 +                        #   Timestamp
    "00000000"                         #   RequestHandle 0
    "00000000"                         #   ReturnDiagnostics
    "ffffffff"                         #   AuditEntryId null
    "10270000"                         #   TimeoutHint 10000 ms
    "000000"                           #   AdditionalHeader: null ExtensionObject
    "00000000"                         # ClientProtocolVersion 0
    "00000000"                         # RequestType 0 Issue
    "01000000"                         # SecurityMode 1 None
    "00000000"                         # ClientNonce: empty ByteString
    "40771b00")                        # RequestedLifetime 1800000 ms

OPN_RESPONSE = bytes.fromhex(
    "4f504e" "46" "87000000"           # "OPN", F, size 135
    "05000000"                         # secure channel id 5
    "2f000000") + POLICY_NONE.encode() + bytes.fromhex(
    "ffffffff" "ffffffff"              # no certificate, no thumbprint
    "01000000" "01000000"              # sequence number 1, request id 1
    "0100c101"                         # type id i=449 OpenSecureChannelResponse
    + TS_2024 +                        #   ResponseHeader.Timestamp
    "00000000"                         #   RequestHandle 0
    "00000000"                         #   ServiceResult Good
    "00"                               #   ServiceDiagnostics: empty DiagnosticInfo
    "ffffffff"                         #   StringTable null
    "000000"                           #   AdditionalHeader null
    "00000000"                         # ServerProtocolVersion 0
    "05000000" "07000000"              # SecurityToken: channel id 5, token id 7
    + TS_2024 +                        #   CreatedAt
    "40771b00"                         #   RevisedLifetime 1800000
    "00000000")                        # ServerNonce: empty

# RequestHeader shared by the service requests below (31 bytes)
REQUEST_HEADER = (
    "0101e803"                         # AuthenticationToken: four-byte ns=1;i=1000
    + TS_2024 +                        # Timestamp
    "02000000"                         # RequestHandle 2
    "00000000" "ffffffff" "10270000"   # ReturnDiagnostics, AuditEntryId null, TimeoutHint
    "000000")                          # AdditionalHeader null
SETPOINT = "03" "0200" "0e000000" + b"Line1.Setpoint".hex()   # NodeId string ns=2 "Line1.Setpoint"

READ_REQUEST = bytes.fromhex(
    "4d5347" "46" "80000000"           # "MSG", F, size 128
    "05000000" "07000000"              # secure channel id 5, token id 7
    "02000000" "02000000"              # sequence number 2, request id 2
    "01007702"                         # type id i=631 ReadRequest
    + REQUEST_HEADER +
    "0000000000000000"                 # MaxAge 0.0
    "03000000"                         # TimestampsToReturn Neither
    "02000000"                         # NodesToRead: 2 ReadValueIds
    + SETPOINT +                       #   [0] NodeId ns=2;s=Line1.Setpoint
    "0d000000"                         #       AttributeId 13 Value
    "ffffffff" "0000" "ffffffff"       #       IndexRange null, DataEncoding null QualifiedName
    "0100d208"                         #   [1] NodeId four-byte ns=0 i=2258 (Server_CurrentTime)
    "0d000000" "ffffffff" "0000" "ffffffff")

WRITE_REQUEST = bytes.fromhex(
    "4d5347" "46" "66000000"           # "MSG", F, size 102
    "05000000" "07000000" "03000000" "03000000"   # channel 5, token 7, seq 3, request id 3
    "0100a102"                         # type id i=673 WriteRequest
    + REQUEST_HEADER +
    "01000000"                         # NodesToWrite: 1 WriteValue
    + SETPOINT +                       #   NodeId ns=2;s=Line1.Setpoint
    "0d000000"                         #   AttributeId 13 Value
    "ffffffff"                         #   IndexRange null
    "01"                               #   DataValue mask: value present
    "0b" "0000000000404540")           #     Variant Double 42.5

WRITE_RESPONSE = bytes.fromhex(
    "4d5347" "46" "40000000"           # "MSG", F, size 64
    "05000000" "07000000" "02000000" "03000000"   # channel 5, token 7, seq 2, request id 3
    "0100a402"                         # type id i=676 WriteResponse
    + TS_2024 + "02000000" "00000000"  # ResponseHeader: timestamp, handle 2, ServiceResult Good
    "00" "ffffffff" "000000"           #   no diagnostics, no string table, no additional header
    "01000000" "00003b80"              # Results: [0x803B0000 BadNotWritable]
    "00000000")                        # DiagnosticInfos: empty

CALL_REQUEST = bytes.fromhex(
    "4d5347" "46" "53000000"           # "MSG", F, size 83
    "05000000" "07000000" "04000000" "04000000"   # channel 5, token 7, seq 4, request id 4
    "0100c802"                         # type id i=712 CallRequest
    + REQUEST_HEADER +
    "01000000"                         # MethodsToCall: 1 CallMethodRequest
    "0102e803"                         #   ObjectId four-byte ns=2;i=1000
    "020200d2040000"                   #   MethodId numeric ns=2;i=1234
    "01000000" "06" "2a000000")        #   InputArguments: [Int32 42]

SERVICE_FAULT = bytes.fromhex(
    "4d5347" "46" "34000000"           # "MSG", F, size 52
    "05000000" "07000000" "03000000" "02000000"   # channel 5, token 7, seq 3, request id 2
    "01008d01"                         # type id i=397 ServiceFault
    + TS_2024 + "02000000"             # ResponseHeader: timestamp, handle 2
    "00003480"                         #   ServiceResult 0x80340000 BadNodeIdUnknown
    "00" "ffffffff" "000000")

LITERALS = {"HEL": HEL, "ACK": ACK, "ERR": ERR, "OPN_REQUEST": OPN_REQUEST,
            "OPN_RESPONSE": OPN_RESPONSE, "READ_REQUEST": READ_REQUEST,
            "WRITE_REQUEST": WRITE_REQUEST, "WRITE_RESPONSE": WRITE_RESPONSE,
            "CALL_REQUEST": CALL_REQUEST, "SERVICE_FAULT": SERVICE_FAULT}


def chunk(mtype: bytes, ctype: bytes, body: bytes, *, scid: int = 5, token: int = 7,
          seq: int = 9, rid: int = 2) -> bytes:
    """A MSG/CLO chunk around ``body`` (sequence header included)."""
    payload = struct.pack("<IIII", scid, token, seq, rid) + body
    return mtype + ctype + struct.pack("<I", 8 + len(payload)) + payload


def ua_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<i", len(raw)) + raw


def opened_state() -> opcua.OpcUaState:
    """A connection whose None-policy channel 5 is open."""
    state = opcua.new_state()
    opcua.decode(OPN_REQUEST, True, state)
    opcua.decode(OPN_RESPONSE, False, state)
    return state


def one(msg: bytes, from_client: bool, state=None):
    events = opcua.decode(msg, from_client, state if state is not None else opened_state())
    assert len(events) == 1
    return events[0]


# --- byte literals -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LITERALS))
def test_literal_sizes_frame_and_probe(name):
    msg = LITERALS[name]
    assert struct.unpack_from("<I", msg, 4)[0] == len(msg)
    assert opcua.frame(msg, 0) == len(msg)
    assert opcua.probe(msg, 0)
    assert opcua.frame(b"xx" + msg + b"tail", 2) == len(msg)


def test_hello():
    ev = one(HEL, True, opcua.new_state())
    assert (ev.kind, ev.function, ev.op_class, ev.pair_key) == ("request", "Hello", "session", "hello")
    assert ev.detail["endpoint_url"] == "opc.tcp://plc1:4840"
    assert ev.detail["receive_buffer_size"] == 65536 and ev.detail["max_chunk_count"] == 0
    assert ev.anomalies == []


def test_acknowledge():
    ev = one(ACK, False, opcua.new_state())
    assert (ev.kind, ev.function, ev.result, ev.pair_key) == ("response", "Acknowledge", "ok", "hello")
    assert ev.detail["max_message_size"] == 16 * 1024 * 1024


def test_error_answers_the_hello_when_no_ack_came():
    state = opcua.new_state()
    opcua.decode(HEL, True, state)
    ev = one(ERR, False, state)
    assert (ev.kind, ev.function, ev.result, ev.status) == ("response", "Error", "error", "BadTcpMessageTooLarge")
    assert ev.pair_key == "hello" and ev.op_class == "session"
    assert ev.detail["reason"] == "too large" and ev.detail["error"] == "0x80800000"


def test_error_answers_the_newest_pending_request():
    state = opened_state()
    opcua.decode(READ_REQUEST, True, state)
    ev = one(ERR, False, state)
    assert ev.pair_key == 2 and ev.op_class == "read"


def test_open_secure_channel_none():
    state = opcua.new_state()
    req = one(OPN_REQUEST, True, state)
    assert (req.kind, req.function, req.function_code, req.op_class) == (
        "request", "OpenSecureChannel", 446, "session")
    assert req.pair_key == 1
    d = req.detail
    assert d["service"] == "OpenSecureChannelRequest" and d["security_policy"] == "None"
    assert d["request_type"] == "Issue" and d["security_mode"] == "None"
    assert d["requested_lifetime"] == 1800000 and d["sender_certificate"] is False
    assert d["timestamp"] == "2024-01-01T00:00:00Z" and d["authentication_token"] == "i=0"
    resp = one(OPN_RESPONSE, False, state)
    assert (resp.kind, resp.function_code, resp.result, resp.status) == ("response", 449, "ok", "Good")
    assert resp.detail["channel_id"] == 5 and resp.detail["token_id"] == 7
    assert resp.detail["revised_lifetime"] == 1800000
    assert state.channels[5].mode == "None"


def test_read_request():
    ev = one(READ_REQUEST, True)
    assert (ev.kind, ev.function, ev.function_code, ev.op_class) == ("request", "Read", 631, "read")
    assert ev.detail["service"] == "ReadRequest" and ev.pair_key == 2
    assert [t.name for t in ev.targets] == ["ns=2;s=Line1.Setpoint", "i=2258"]
    assert {t.kind for t in ev.targets} == {"node"}
    assert ev.detail["items"][0] == {"node_id": "ns=2;s=Line1.Setpoint", "attribute": "Value"}
    assert ev.detail["authentication_token"] == "ns=1;i=1000" and ev.detail["request_handle"] == 2
    assert (ev.detail["secure_channel_id"], ev.detail["token_id"], ev.detail["sequence_number"]) == (5, 7, 2)
    assert ev.detail["security_mode"] == "None" and ev.anomalies == []


def test_write_request_with_string_node_id():
    ev = one(WRITE_REQUEST, True)
    assert (ev.function, ev.function_code, ev.op_class) == ("Write", 673, "write")
    assert [t.name for t in ev.targets] == ["ns=2;s=Line1.Setpoint"]
    assert ev.detail["items"] == [{"node_id": "ns=2;s=Line1.Setpoint", "attribute": "Value",
                                   "value_type": "Double", "value": 42.5}]
    assert ev.anomalies == []


def test_write_response_all_items_bad_is_an_error():
    ev = one(WRITE_RESPONSE, False)
    assert (ev.kind, ev.function, ev.pair_key) == ("response", "Write", 3)
    assert ev.result == "error" and ev.status == "BadNotWritable"
    assert ev.detail["service_result"] == "0x00000000"
    assert ev.detail["item_statuses"] == ["BadNotWritable"] and ev.detail["bad_items"] == 1
    assert ev.anomalies == []


def test_call_request():
    ev = one(CALL_REQUEST, True)
    assert (ev.function, ev.function_code, ev.op_class) == ("Call", 712, "control")
    assert [t.name for t in ev.targets] == ["ns=2;i=1000", "ns=2;i=1234"]
    assert ev.detail["items"][0]["argument_types"] == ["Int32"]
    assert ev.anomalies == []


def test_service_fault_takes_the_op_class_of_its_request():
    state = opened_state()
    opcua.decode(READ_REQUEST, True, state)
    ev = one(SERVICE_FAULT, False, state)
    assert (ev.kind, ev.function, ev.function_code, ev.op_class) == ("response", "ServiceFault", 397, "read")
    assert (ev.result, ev.status, ev.pair_key) == ("error", "BadNodeIdUnknown", 2)
    assert ev.anomalies == []


def test_activate_session_records_user_name_never_password():
    token_body = ua_string("username_policy") + ua_string("operator1") + ua_string(b"s3cret!") + ua_string("")
    body = (bytes.fromhex("0100d301" + REQUEST_HEADER)              # i=467 ActivateSessionRequest
            + bytes.fromhex("ffffffff" "ffffffff")                  # ClientSignature: null alg, null sig
            + bytes.fromhex("00000000")                             # ClientSoftwareCertificates: none
            + struct.pack("<i", 1) + ua_string("en")                # LocaleIds
            + bytes.fromhex("01004401" "01") + ua_string(token_body)  # ExtensionObject i=324 UserName
            + bytes.fromhex("ffffffff" "ffffffff"))                 # UserTokenSignature
    ev = one(chunk(b"MSG", b"F", body), True)
    assert (ev.function, ev.op_class) == ("ActivateSession", "session")
    assert ev.detail["identity_token"] == "UserName" and ev.detail["user_name"] == "operator1"
    assert "s3cret" not in json.dumps(ev.to_dict())


def test_get_endpoints_response_identifies_the_server():
    app = (ua_string("urn:plc1:server") + ua_string("urn:vendor:product")
           + b"\x02" + ua_string("PLC 1") + struct.pack("<I", 0)     # LocalizedText text only; Server
           + bytes.fromhex("ffffffff" "ffffffff" "ffffffff"))        # gateway, profile, discovery urls
    cert = b"\x30\x82\x00\x04DER!" + b"chained-issuer-cert"
    endpoint = (ua_string("opc.tcp://plc1:4840") + app + ua_string(cert)
                + struct.pack("<I", 3) + ua_string("http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256")
                + struct.pack("<i", 1) + ua_string("anon") + struct.pack("<I", 0)
                + bytes.fromhex("ffffffff" "ffffffff" "ffffffff")   # UserTokenPolicy tail
                + ua_string("http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary") + b"\x64")
    body = (bytes.fromhex("0100af01" + TS_2024 + "01000000" "00000000" "00" "ffffffff" "000000")
            + struct.pack("<i", 1) + endpoint)
    ev = one(chunk(b"MSG", b"F", body), False)
    assert (ev.function, ev.function_code, ev.op_class) == ("GetEndpoints", 431, "identify")
    assert ev.identity == {"application_uri": "urn:plc1:server", "product_uri": "urn:vendor:product",
                           "application_name": "PLC 1", "application_type": "Server"}
    assert ev.detail["endpoints"] == [{
        "endpoint_url": "opc.tcp://plc1:4840", "security_mode": "SignAndEncrypt",
        "security_policy": "Basic256Sha256", "security_level": 100, "user_token_types": ["Anonymous"],
        "server_certificate_thumbprint": hashlib.sha1(cert[:8]).hexdigest()}]
    assert ev.anomalies == []


# --- node ids and encoding primitives -------------------------------------------------

@pytest.mark.parametrize("raw, text", [
    ("00" "2a", "i=42"),                                       # two-byte
    ("01" "02" "e803", "ns=2;i=1000"),                         # four-byte
    ("02" "0100" "a0860100", "ns=1;i=100000"),                 # numeric
    ("03" "0100" "03000000" "466f6f", "ns=1;s=Foo"),           # string
    ("04" "0100" "78563412" "3412" "7856" "0102030405060708",
     "ns=1;g=12345678-1234-5678-0102-030405060708"),          # guid (little-endian fields)
    ("05" "0100" "03000000" "010203", "ns=1;b=AQID"),         # bytestring, base64
])
def test_node_id_encodings(raw, text):
    buf = bytes.fromhex(raw)
    assert enc.node_id(buf, 0) == (text, len(buf))


def test_expanded_node_id_with_uri_and_server_index():
    buf = bytes.fromhex("c1" "00" "0500") + ua_string("urn:x") + struct.pack("<I", 3)
    assert enc.expanded_node_id(buf, 0) == ("svr=3;nsu=urn:x;i=5", len(buf))


def test_primitives_raise_named_errors():
    with pytest.raises(enc.Truncated):
        enc.node_id(bytes.fromhex("0300"), 0)
    with pytest.raises(enc.Malformed):
        enc.node_id(b"\x07\x00\x00", 0)
    with pytest.raises(enc.Truncated):
        enc.string(struct.pack("<i", 100) + b"abc", 0)
    nested = b"\x18" * (enc.MAX_NESTING + 3) + b"\x00"             # Variant in Variant in ...
    with pytest.raises(enc.Malformed):
        enc.variant(nested, 0)


def test_tables_use_wireshark_names():
    expected = {631: "ReadRequest", 634: "ReadResponse", 673: "WriteRequest", 712: "CallRequest",
                461: "CreateSessionRequest", 467: "ActivateSessionRequest", 428: "GetEndpointsRequest",
                527: "BrowseRequest", 488: "AddNodesRequest", 500: "DeleteNodesRequest",
                787: "CreateSubscriptionRequest", 826: "PublishRequest", 397: "ServiceFault"}
    assert {k: enc.SERVICES[k] for k in expected} == expected
    assert len(enc.SERVICES) == 83                  # every binary encoding tshark 4.0 names
    for name in enc.SERVICES.values():
        base = name.removesuffix("Request").removesuffix("Response")
        assert name == "ServiceFault" or enc.SERVICE_OP_CLASS[base] in OP_CLASSES
    assert enc.status_name(0x80340000) == "BadNodeIdUnknown"
    assert enc.status_name(0x803B0400) == "BadNotWritable"        # info bits ignored
    assert enc.status_name(0x8FFF0000) == "0x8FFF0000"


# --- chunking ------------------------------------------------------------------------

def test_chunked_message_is_reassembled_per_request_id():
    state = opened_state()
    body = READ_REQUEST[24:]
    first, second = body[:40], body[40:]
    assert opcua.decode(chunk(b"MSG", b"C", first, rid=9, seq=3), True, state) == []
    # an unrelated single-chunk message between the chunks of request 9
    assert one(chunk(b"MSG", b"F", WRITE_REQUEST[24:], rid=10, seq=4), True, state).function == "Write"
    ev = one(chunk(b"MSG", b"F", second, rid=9, seq=5), True, state)
    assert ev.function == "Read" and ev.detail["chunks"] == 2 and ev.pair_key == 9
    assert [t.name for t in ev.targets] == ["ns=2;s=Line1.Setpoint", "i=2258"]
    assert ev.anomalies == [] and state.partials == {}


def test_abort_chunk_ends_the_message_with_an_anomaly():
    state = opened_state()
    opcua.decode(chunk(b"MSG", b"C", WRITE_REQUEST[24:60], rid=11), True, state)
    abort_body = struct.pack("<I", 0x80AB0000) + ua_string("user cancelled")
    ev = one(chunk(b"MSG", b"A", abort_body, rid=11), True, state)
    assert ev.function == "Abort" and opcua.A_ABORT_CHUNK in ev.anomalies
    assert ev.detail["aborted_service"] == "WriteRequest" and ev.op_class == "write"
    assert ev.status == "BadInvalidArgument" and ev.detail["reason"] == "user cancelled"
    assert ev.detail["chunks"] == 2 and state.partials == {}


def test_chunk_overflow_is_bounded_and_still_names_the_service():
    state = opened_state()
    body = READ_REQUEST[24:]
    for _ in range(opcua.MAX_CHUNKS_PER_MESSAGE + 1):
        opcua.decode(chunk(b"MSG", b"C", body, rid=12), True, state)
    assert state.partials[(True, 12)].parts == []            # memory released at the cap
    ev = one(chunk(b"MSG", b"F", b"", rid=12), True, state)
    assert ev.function == "Read" and opcua.A_CHUNK_OVERFLOW in ev.anomalies
    assert ev.detail["chunks"] == opcua.MAX_CHUNKS_PER_MESSAGE + 2
    assert ev.targets == []                                    # body not decoded


def test_partial_messages_per_connection_are_capped():
    state = opened_state()
    for rid in range(100, 100 + opcua.MAX_PARTIAL_MESSAGES + 1):
        opcua.decode(chunk(b"MSG", b"C", READ_REQUEST[24:40], rid=rid), True, state)
    assert len(state.partials) == opcua.MAX_PARTIAL_MESSAGES
    assert (True, 100) not in state.partials
    last = 100 + opcua.MAX_PARTIAL_MESSAGES
    ev = one(chunk(b"MSG", b"F", READ_REQUEST[40:], rid=last), True, state)
    assert opcua.A_CHUNK_OVERFLOW in ev.anomalies and ev.function == "Read"


# --- channel security ---------------------------------------------------------------

def secured_opn(from_client: bool, scid: int, cert: bytes = b"\x30\x81\x03abc") -> bytes:
    """OPN under Basic256Sha256: asymmetric header, then ciphertext."""
    uri = b"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
    payload = (struct.pack("<I", scid) + ua_string(uri) + ua_string(cert)
               + ua_string(bytes(range(20))) + bytes(range(200, 256)) * 4)
    return b"OPNF" + struct.pack("<I", 8 + len(payload)) + payload


def secured_state() -> opcua.OpcUaState:
    state = opcua.new_state()
    req = one(secured_opn(True, 0), True, state)
    resp = one(secured_opn(False, 5), False, state)
    for ev in (req, resp):
        assert ev.detail["encrypted"] is True and ev.function_code is None
        assert ev.function == "OpenSecureChannel" and "service" not in ev.detail
        assert ev.detail["security_policy"] == "Basic256Sha256"
        assert ev.detail["receiver_certificate_thumbprint"] == bytes(range(20)).hex()
    assert req.detail["sender_certificate_thumbprint"] == hashlib.sha1(b"\x30\x81\x03abc").hexdigest()
    return state


def test_sign_and_encrypt_is_inferred_and_never_decoded():
    state = secured_state()
    ciphertext = bytes((i * 37 + 11) % 256 for i in range(300))
    for from_client in (True, False, True):
        ev = one(b"MSGF" + struct.pack("<III", 16 + len(ciphertext), 5, 7) + ciphertext, from_client, state)
        assert (ev.function, ev.op_class, ev.function_code) == ("Encrypted message", "other", None)
        assert ev.detail["encrypted"] is True and ev.pair_key is None
        assert ev.detail["security_mode"] == "SignAndEncrypt" and ev.detail["security_mode_inferred"]
        assert ev.kind == ("request" if from_client else "response") and ev.targets == []
    # a body that happens to be readable later is still not decoded: the channel is encrypted
    ev = one(READ_REQUEST, True, state)
    assert ev.function == "Encrypted message" and "service" not in ev.detail


def test_encrypted_chunks_are_counted_per_message():
    state = secured_state()
    state.channels[5].mode = "SignAndEncrypt"
    assert opcua.decode(chunk(b"MSG", b"C", b"\xaa" * 64), True, state) == []
    assert opcua.decode(chunk(b"MSG", b"C", b"\xbb" * 64), True, state) == []
    ev = one(chunk(b"MSG", b"F", b"\xcc" * 64), True, state)
    assert ev.detail["chunks"] == 3 and ev.detail["encrypted"]


def test_sign_mode_is_inferred_from_a_readable_body_and_signatures_are_stripped():
    state = secured_state()
    signature = b"\x5a" * enc.SIGNATURE_LENGTHS["Basic256Sha256"]
    body = READ_REQUEST[24:]
    assert opcua.decode(chunk(b"MSG", b"C", body[:50] + signature, rid=20), True, state) == []
    assert state.channels[5].mode == "Sign"
    ev = one(chunk(b"MSG", b"F", body[50:] + signature, rid=20), True, state)
    assert ev.function == "Read" and ev.anomalies == []
    assert [t.name for t in ev.targets] == ["ns=2;s=Line1.Setpoint", "i=2258"]
    assert ev.detail["security_mode"] == "Sign" and ev.detail["security_mode_inferred"] is True


def test_without_handshake_a_mid_message_chunk_does_not_lock_the_channel_encrypted():
    state = opcua.new_state()
    ev = one(chunk(b"MSG", b"F", b"\x99" * 40, rid=30), True, state)     # tail of a lost message
    assert ev.detail["encrypted"] is True and "security_mode" not in ev.detail
    ev = one(READ_REQUEST, True, state)
    assert ev.function == "Read" and ev.detail["security_mode"] == "NoneOrSign"
    assert "security_policy" not in ev.detail


def test_reverse_hello_flips_the_roles():
    state = opcua.new_state()
    rhe = b"RHEF" + struct.pack("<I", 8 + 4 + 15 + 4 + 19) + ua_string("urn:plc1:server") + ua_string("opc.tcp://plc1:4840")
    ev = one(rhe, True, state)          # the UA server opened the TCP connection
    assert (ev.kind, ev.function, ev.identity) == ("notification", "ReverseHello", {"application_uri": "urn:plc1:server"})
    opn = one(secured_opn(False, 0), False, state)   # sent by the TCP server = UA client
    assert opn.kind == "request"


def test_message_on_unknown_channel_is_flagged():
    state = opened_state()
    ev = one(chunk(b"MSG", b"F", READ_REQUEST[24:], scid=99), True, state)
    assert opcua.A_UNKNOWN_CHANNEL in ev.anomalies and ev.function == "Read"


# --- framing and robustness ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LITERALS))
def test_every_prefix_needs_more_and_never_raises(name):
    msg = LITERALS[name]
    for cut in range(len(msg)):
        prefix = msg[:cut]
        assert opcua.frame(prefix, 0) == NEED_MORE, cut
        opcua.probe(prefix, 0)
        if cut >= 8:
            events = opcua.decode(prefix, True, opened_state())
            for ev in events:
                assert ev.anomalies, cut


def test_frame_rejects_what_cannot_start_a_message():
    assert opcua.frame(b"GET / HTTP/1.1\r\n", 0) == UNFRAMEABLE
    assert opcua.frame(b"MSGX", 0) == UNFRAMEABLE                     # chunk type
    assert opcua.frame(b"MSGF\x04\x00\x00\x00", 0) == UNFRAMEABLE     # size < 8
    assert opcua.frame(b"MSGF" + struct.pack("<I", opcua.MAX_CHUNK_SIZE + 1), 0) == UNFRAMEABLE
    assert not opcua.probe(b"HELF\x20\x00\x00\x00\x01\x00\x00\x00", 0)   # protocol version 1
    assert not opcua.probe(b"HELC" + HEL[4:], 0)                      # HEL is never chunked
    assert not opcua.probe(b"MSGF\x10\x00\x00\x00", 0)                # below the MSG minimum


def test_declared_size_mismatch_and_short_types_are_flagged():
    ev = one(b"ACKF\x0c\x00\x00\x00\x00\x00\x00\x00", False, opcua.new_state())
    assert opcua.A_INVALID_SIZE in ev.anomalies and opcua.A_TRUNCATED_BODY in ev.anomalies
    ev = one(b"XYZF\x08\x00\x00\x00", True, opcua.new_state())
    assert ev.anomalies == [opcua.A_UNKNOWN_MESSAGE_TYPE]


def test_unknown_service_is_named_and_flagged():
    ev = one(chunk(b"MSG", b"F", bytes.fromhex("0100ffff") + bytes(40)), True)
    assert ev.function == "Unknown service" and ev.function_code == 0xFFFF
    assert ev.anomalies == [opcua.A_UNKNOWN_SERVICE]


ANOMALIES = {v for k, v in vars(opcua).items() if k.startswith("A_")}


def check_events(events):
    for ev in events:
        assert ev.kind in KINDS and ev.op_class in OP_CLASSES
        assert ev.result is None or ev.result in RESULTS
        assert set(ev.anomalies) <= ANOMALIES
        json.dumps(ev.to_dict())
        assert all(isinstance(v, str) for v in (ev.identity or {}).values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_random_bytes(data, from_client):
    opcua.probe(data, 0)
    opcua.frame(data, 0)
    check_events(opcua.decode(data, from_client, opened_state()))
    check_events(opcua.decode(b"MSGF" + struct.pack("<I", 8 + len(data)) + data, from_client, opened_state()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(LITERALS)), st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)),
                                                    min_size=1, max_size=6), st.booleans())
def test_fuzz_mutated_real_messages(name, flips, from_client):
    msg = bytearray(LITERALS[name])
    for pos, value in flips:
        msg[8 + pos % (len(msg) - 8)] = value          # keep the header: mutate the fields
    state = opened_state()
    check_events(opcua.decode(bytes(msg), from_client, state))
    check_events(opcua.decode(bytes(msg[:3]) + b"C" + bytes(msg[4:]), from_client, state))
