#!/usr/bin/env python3
"""Write the example-plant captures described in docs/example-plant.md.

Three files, byte-identical on every run (fixed seed, fixed clock, fixed ISNs and ports):

* ``plant_normal.pcap``       ten minutes of ordinary operation (the learning period)
* ``plant_incident.pcap``     the nine planted violations, one per detection kind
* ``protocols_showcase.pcap`` every decoder feature the public corpus lacks

Layers, bottom up::

    payload builders   pure functions -> bytes, one per protocol message
                       (Modbus MBAP+PDU, TPKT/COTP/S7comm, OPC UA binary, TLS records, Telnet)
    TcpConnection      handshake, seq/ack bookkeeping, FIN close -> scapy packets
    Capture            packet list with explicit times; sorted, IP ids assigned, written
    scenarios          normal_period(), incident(), showcase(): which message, when

Modbus/TCP ADU::

    +--------+--------+--------+------+----------+-----------+
    | tid u16| pid u16| len u16| unit | fc u8    | data ...  |   len = 1 + len(PDU)
    +--------+--------+--------+------+----------+-----------+

S7comm on ISO-on-TCP (RFC 1006)::

    TPKT 03 00 len16 | COTP DT 02 F0 80 | 32 rosctr 0000 pduref plen dlen [errcls errcod] | param | data

OPC UA binary chunk::

    type[3] chunktype[1] size u32 | channel u32 | security header | sequence header | body

The frames pretend one switched segment seen by a SPAN port: every asset uses its own
MAC; traffic to the documentation address 203.0.113.5 goes via a VRRP gateway MAC.

Usage: ``python pcaps/make_examples.py [--out DIR]`` (default: this script's folder).
"""

from __future__ import annotations

import argparse
import random
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

SEED = 62443
NORMAL_START = datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc)
INCIDENT_START = datetime(2026, 1, 6, 14, 0, 0, tzinfo=timezone.utc)
SHOWCASE_START = datetime(2026, 1, 7, 10, 0, 0, tzinfo=timezone.utc)

NORMAL_DURATION_S = 600
POLL_PERIOD_S = 25
INCIDENT_SPACING_S = 30


# --------------------------------------------------------------------------- hosts

@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    mac: str
    ttl: int = 64


ASSETS = {h.name: h for h in (
    Host("corp-pc", "10.10.0.50", "00:1b:21:0a:00:32", 128),
    Host("jump-host", "10.20.0.10", "00:50:56:14:00:0a", 128),
    Host("historian", "10.30.0.20", "00:50:56:1e:00:14", 128),
    Host("eng-ws", "10.30.0.30", "00:1b:1b:1e:00:1e", 128),
    Host("hmi-1", "10.40.0.10", "00:0e:8c:28:00:0a", 128),
    Host("plc-modbus", "10.50.0.20", "00:80:f4:32:00:14", 64),
    Host("plc-s7", "10.50.0.30", "00:1b:1b:32:00:1e", 30),
    Host("opcua-server", "10.50.0.40", "00:0e:8c:32:00:28", 64),
)}
#: Hosts that are not plant assets: the enterprise resolver, the intruder of incident #4,
#: and the external peer of incident #6 (reached through the field gateway's VRRP MAC).
CORP_DNS = Host("corp-dns", "10.10.0.2", "00:1b:21:0a:00:02", 128)
ROGUE = Host("rogue-10.40.0.99", "10.40.0.99", "00:0c:29:aa:bb:cc", 128)
EXTERNAL = Host("external-203.0.113.5", "203.0.113.5", "00:00:5e:00:01:32", 52)


def asset(name: str) -> Host:
    return ASSETS[name]


# --------------------------------------------------------------------------- Modbus/TCP

MODBUS_PORT = 502
MODBUS_UNIT = 1


def mbap(tid: int, pdu: bytes, unit: int = MODBUS_UNIT, length: int | None = None) -> bytes:
    """MBAP header + PDU; ``length`` overrides the length field (malformed ADUs)."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, unit) + pdu


def modbus_read_request(fc: int, start: int, quantity: int) -> bytes:
    """FC 1/2/3/4 request PDU."""
    return struct.pack(">BHH", fc, start, quantity)


def pack_bits(bits: list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def modbus_read_bits_response(fc: int, bits: list[int]) -> bytes:
    """FC 1/2 response PDU: byte count + packed bits (LSB first)."""
    data = pack_bits(bits)
    return bytes([fc, len(data)]) + data


def modbus_read_registers_response(fc: int, values: list[int]) -> bytes:
    """FC 3/4 response PDU: byte count + big-endian registers."""
    return bytes([fc, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


def modbus_write_single(fc: int, address: int, value: int) -> bytes:
    """FC 5/6 request PDU; the normal response echoes it."""
    return struct.pack(">BHH", fc, address, value)


def modbus_write_multiple_coils_request(start: int, bits: list[int]) -> bytes:
    """FC 15 request PDU."""
    data = pack_bits(bits)
    return struct.pack(">BHHB", 15, start, len(bits), len(data)) + data


def modbus_write_multiple_registers_request(start: int, values: list[int]) -> bytes:
    """FC 16 request PDU."""
    return struct.pack(f">BHHB{len(values)}H", 16, start, len(values), 2 * len(values), *values)


def modbus_write_multiple_response(fc: int, start: int, quantity: int) -> bytes:
    """FC 15/16 response PDU."""
    return struct.pack(">BHH", fc, start, quantity)


def modbus_mask_write_register(address: int, and_mask: int, or_mask: int) -> bytes:
    """FC 22 request PDU; the normal response echoes it."""
    return struct.pack(">BHHH", 22, address, and_mask, or_mask)


def modbus_read_write_registers_request(read_start: int, read_qty: int,
                                        write_start: int, values: list[int]) -> bytes:
    """FC 23 request PDU: read range, then write range with its values."""
    return struct.pack(f">BHHHHB{len(values)}H", 23, read_start, read_qty, write_start,
                       len(values), 2 * len(values), *values)


def modbus_diagnostics(subfunction: int, data: int) -> bytes:
    """FC 8 PDU (request, and the echoed response)."""
    return struct.pack(">BHH", 8, subfunction, data)


def modbus_read_device_id_request(code: int = 1, object_id: int = 0) -> bytes:
    """FC 43 / MEI 14 request PDU."""
    return bytes([43, 14, code, object_id])


def modbus_read_device_id_response(objects: list[tuple[int, str]], code: int = 1) -> bytes:
    """FC 43 / MEI 14 response PDU: conformity 0x01, no more follows, object list."""
    body = b"".join(bytes([oid, len(v)]) + v.encode() for oid, v in objects)
    return bytes([43, 14, code, 0x01, 0x00, 0x00, len(objects)]) + body


def modbus_exception(fc: int, code: int) -> bytes:
    """Exception response PDU: fc | 0x80, exception code."""
    return bytes([fc | 0x80, code])


# --------------------------------------------------------------------------- S7comm

S7_PORT = 102
S7_JOB, S7_ACK_DATA, S7_USERDATA = 0x01, 0x03, 0x07
S7_AREA_DB = 0x84
S7_TSIZE_BYTE, S7_TSIZE_WORD = 0x02, 0x04          # item transport sizes (request)
S7_DSIZE_BYTE_WORD_DWORD, S7_DSIZE_OCTET = 0x04, 0x09  # data transport sizes
S7_BLOCK_DB, S7_BLOCK_OB = b"0A", b"08"
S7_SZL_MODULE_ID, S7_SZL_COMPONENT_ID = 0x0011, 0x001C
TSAP_PG, TSAP_RACK0_SLOT2 = 0x0100, 0x0102


def tpkt(payload: bytes) -> bytes:
    """RFC 1006 TPKT: version 3, reserved, total length."""
    return struct.pack(">BBH", 3, 0, len(payload) + 4) + payload


def cotp_connect(pdu_type: int, dst_ref: int, src_ref: int, src_tsap: int, dst_tsap: int) -> bytes:
    """COTP CR (0xE0) or CC (0xD0), class 0, TPDU size 1024 and both TSAPs."""
    params = (bytes([0xC0, 1, 0x0A]) + bytes([0xC1, 2]) + struct.pack(">H", src_tsap)
              + bytes([0xC2, 2]) + struct.pack(">H", dst_tsap))
    fixed = struct.pack(">BHHB", pdu_type, dst_ref, src_ref, 0x00)
    return tpkt(bytes([len(fixed) + len(params)]) + fixed + params)


def cotp_dt(s7pdu: bytes) -> bytes:
    """COTP DT, last data unit, wrapped in TPKT."""
    return tpkt(b"\x02\xf0\x80" + s7pdu)


def s7_pdu(rosctr: int, pdu_ref: int, param: bytes, data: bytes = b"") -> bytes:
    """S7comm header (+ error class/code for Ack_Data) followed by parameter and data."""
    header = struct.pack(">BBHHHH", 0x32, rosctr, 0, pdu_ref, len(param), len(data))
    if rosctr == S7_ACK_DATA:
        header += b"\x00\x00"
    return header + param + data


def s7_setup_communication(pdu_length: int = 480) -> bytes:
    """Setup communication parameter (job and ack are identical)."""
    return struct.pack(">BBHHH", 0xF0, 0, 1, 1, pdu_length)


def s7_any_item(area: int, db: int, byte_offset: int, count: int, tsize: int) -> bytes:
    """S7ANY variable specification: 12 0A 10, size, count, DB, area, bit address."""
    return (struct.pack(">BBBBHHB", 0x12, 0x0A, 0x10, tsize, count, db, area)
            + (byte_offset * 8).to_bytes(3, "big"))


def s7_var_param(fc: int, items: list[bytes]) -> bytes:
    """Read Var (0x04) / Write Var (0x05) job parameter."""
    return bytes([fc, len(items)]) + b"".join(items)


def s7_data_item(payload: bytes, return_code: int = 0x00) -> bytes:
    """Data item of a Write Var job (return code 0) or Read Var ack (0xFF): length in bits."""
    return struct.pack(">BBH", return_code, S7_DSIZE_BYTE_WORD_DWORD, 8 * len(payload)) + payload


def s7_write_var_ack_data(count: int) -> bytes:
    return b"\xff" * count


def s7_plc_stop_param() -> bytes:
    """PLC Stop (0x29): 5 unknown zero bytes, then the PI service name."""
    name = b"P_PROGRAM"
    return b"\x29" + bytes(5) + bytes([len(name)]) + name


def s7_pi_start_param(service: str, argument: bytes = b"") -> bytes:
    """PI-Service (0x28): 7 unknown bytes, parameter block, service name."""
    name = service.encode()
    return (b"\x28" + bytes(6) + b"\xfd" + struct.pack(">H", len(argument)) + argument
            + bytes([len(name)]) + name)


def s7_block_filename(block_type: bytes, number: int, filesystem: bytes = b"P") -> bytes:
    """Length-prefixed block file name, e.g. ``_0A00001P`` (DB 1, passive filesystem)."""
    name = b"_" + block_type + b"%05d" % number + filesystem
    return bytes([len(name)]) + name


def s7_request_download_param(block_type: bytes, number: int, load_len: int, mc7_len: int) -> bytes:
    """Request download (0x1A) job: status, unknowns, file name, lengths as ASCII."""
    part2 = b"1" + b"%06d" % load_len + b"%06d" % mc7_len
    return (b"\x1a\x00\x01\x00" + bytes(4) + s7_block_filename(block_type, number)
            + bytes([len(part2)]) + part2)


def s7_download_block_param(block_type: bytes, number: int) -> bytes:
    """Download block (0x1B) job, sent by the PLC to pull the block from the PG."""
    return b"\x1b\x00\x01\x00" + bytes(4) + s7_block_filename(block_type, number)


def s7_download_ended_param(block_type: bytes, number: int) -> bytes:
    """Download ended (0x1C) job, sent by the PLC: status, error code 0, file name."""
    return b"\x1c\x00\x00\x00" + bytes(4) + s7_block_filename(block_type, number)


def s7_download_block_ack_data(block: bytes) -> bytes:
    """Data part of the PG's Download block ack: length, 00 FB, block bytes."""
    return struct.pack(">H", len(block)) + b"\x00\xfb" + block


def s7_userdata_param(method: int, type_group: int, subfunc: int, seq: int) -> bytes:
    """Userdata parameter: head 00 01 12, length, method, type|group, subfunction, seq."""
    if method == 0x11:
        return bytes([0x00, 0x01, 0x12, 0x04, method, type_group, subfunc, seq])
    return bytes([0x00, 0x01, 0x12, 0x08, method, type_group, subfunc, seq, 0x00, 0x00, 0x00, 0x00])


def s7_szl_request(szl_id: int, index: int, seq: int = 0) -> tuple[bytes, bytes]:
    """Read SZL request (type 4 request, group 4 CPU functions, subfunction 1)."""
    data = struct.pack(">BBHHH", 0xFF, S7_DSIZE_OCTET, 4, szl_id, index)
    return s7_userdata_param(0x11, 0x44, 0x01, seq), data


def s7_szl_response(szl_id: int, index: int, records: list[bytes], seq: int = 1) -> tuple[bytes, bytes]:
    """Read SZL response: SZL header (id, index, record length, count) and records."""
    rec_len = len(records[0])
    body = struct.pack(">HHHH", szl_id, index, rec_len, len(records)) + b"".join(records)
    data = struct.pack(">BBH", 0xFF, S7_DSIZE_OCTET, len(body)) + body
    return s7_userdata_param(0x12, 0x84, 0x01, seq), data


def szl_0011_record(index: int, mlfb: str, bgtyp: int, ausbg: int, ausbe: int) -> bytes:
    """SZL 0x0011 record: index, 20-char order number, module type, two version words."""
    return struct.pack(">H20sHHH", index, mlfb.ljust(20).encode(), bgtyp, ausbg, ausbe)


def szl_001c_record(index: int, text: str) -> bytes:
    """SZL 0x001C record: index and a 32-byte NUL-padded name."""
    return struct.pack(">H32s", index, text.encode())


S7_ORDER_NUMBER = "6ES7 315-2EH14-0AB0"
SZL_MODULE_ID_RECORDS = [
    szl_0011_record(0x0001, S7_ORDER_NUMBER, 0x0000, 0x0001, 0x0001),   # module
    szl_0011_record(0x0006, S7_ORDER_NUMBER, 0x0000, 0x0001, 0x0001),   # basic hardware
    szl_0011_record(0x0007, "", 0x0000, 0x5603, 0x0206),                # firmware 'V' 3.2.6
]
SZL_COMPONENT_ID_RECORDS = [
    szl_001c_record(0x0001, "LINE1_CPU"),
    szl_001c_record(0x0002, "CPU 315-2 PN/DP"),
    szl_001c_record(0x0003, "Line 1 packaging"),
    szl_001c_record(0x0004, "Original Siemens Equipment"),
    szl_001c_record(0x0005, "S C-X4U421302009"),
]


# --------------------------------------------------------------------------- OPC UA binary

OPCUA_PORT = 4840
OPCUA_URL = "opc.tcp://10.50.0.40:4840/"
OPCUA_SERVER_URI = "urn:example:opcua-server"
OPCUA_CLIENT_URI = "urn:example:historian"
POLICY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"
POLICY_B256SHA256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
UA_TCP_PROFILE = "http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary"
MODE_NONE, MODE_SIGN_AND_ENCRYPT = 1, 3
SETPOINT_NODE = "Line1.Setpoint"

#: DefaultBinary encoding ids (namespace 0) of the structures written here.
UA_ID = {
    "AnonymousIdentityToken": 321, "ObjectAttributes": 354,
    "GetEndpointsRequest": 428, "GetEndpointsResponse": 431,
    "OpenSecureChannelRequest": 446, "OpenSecureChannelResponse": 449,
    "CloseSecureChannelRequest": 452,
    "CreateSessionRequest": 461, "CreateSessionResponse": 464,
    "ActivateSessionRequest": 467, "ActivateSessionResponse": 470,
    "CloseSessionRequest": 473, "CloseSessionResponse": 476,
    "AddNodesRequest": 488, "AddNodesResponse": 491,
    "DeleteNodesRequest": 500, "DeleteNodesResponse": 503,
    "WriteRequest": 673, "WriteResponse": 676,
    "CallRequest": 712, "CallResponse": 715,
}
UA_HAS_COMPONENT, UA_BASE_OBJECT_TYPE = 47, 58
UA_ATTR_VALUE = 13
UA_VARIANT_UINT32, UA_VARIANT_DOUBLE = 7, 11
UA_EPOCH_OFFSET_S = 11644473600  # 1601-01-01 -> 1970-01-01
UA_SERVER_DELAY = Decimal("0.0015")  # response timestamps trail their requests


def ua_u8(v: int) -> bytes: return struct.pack("<B", v)
def ua_u16(v: int) -> bytes: return struct.pack("<H", v)
def ua_u32(v: int) -> bytes: return struct.pack("<I", v)
def ua_i32(v: int) -> bytes: return struct.pack("<i", v)
def ua_double(v: float) -> bytes: return struct.pack("<d", v)
def ua_bool(v: bool) -> bytes: return b"\x01" if v else b"\x00"


def ua_string(s: str | None) -> bytes:
    """String: int32 length (-1 = null) + UTF-8."""
    if s is None:
        return ua_i32(-1)
    raw = s.encode()
    return ua_i32(len(raw)) + raw


def ua_bytestring(b: bytes | None) -> bytes:
    return ua_i32(-1) if b is None else ua_i32(len(b)) + b


def ua_array(items: list[bytes] | None) -> bytes:
    """Array of already encoded elements: int32 count (-1 = null) + elements."""
    return ua_i32(-1) if items is None else ua_i32(len(items)) + b"".join(items)


def ua_datetime(ts: Decimal) -> bytes:
    """DateTime: 100 ns ticks since 1601-01-01 UTC."""
    return struct.pack("<q", int((ts + UA_EPOCH_OFFSET_S) * 10_000_000))


def ua_nodeid(identifier: int | str, ns: int = 0) -> bytes:
    """NodeId in its most compact encoding (two-byte, four-byte, numeric or string)."""
    if isinstance(identifier, str):
        return b"\x03" + ua_u16(ns) + ua_string(identifier)
    if ns == 0 and identifier <= 0xFF:
        return bytes([0x00, identifier])
    if ns <= 0xFF and identifier <= 0xFFFF:
        return bytes([0x01, ns]) + ua_u16(identifier)
    return b"\x02" + ua_u16(ns) + ua_u32(identifier)


def ua_type(name: str) -> bytes:
    return ua_nodeid(UA_ID[name])


def ua_localized_text(text: str) -> bytes:
    return b"\x02" + ua_string(text)


def ua_qualified_name(name: str, ns: int) -> bytes:
    return ua_u16(ns) + ua_string(name)


def ua_extension_object(type_name: str | None, body: bytes = b"") -> bytes:
    """ExtensionObject: type NodeId + encoding (0 = no body, 1 = binary body)."""
    if type_name is None:
        return b"\x00\x00\x00"
    return ua_type(type_name) + b"\x01" + ua_i32(len(body)) + body


def ua_variant(type_id: int, value: bytes) -> bytes:
    return ua_u8(type_id) + value


def ua_signature_data() -> bytes:
    """Empty SignatureData (security mode None): null algorithm, null signature."""
    return ua_string(None) + ua_bytestring(None)


def ua_request_header(ts: Decimal, handle: int, auth_token: bytes = b"\x00\x00") -> bytes:
    return (auth_token + ua_datetime(ts) + ua_u32(handle) + ua_u32(0) + ua_string(None)
            + ua_u32(10000) + ua_extension_object(None))


def ua_response_header(ts: Decimal, handle: int, status: int = 0) -> bytes:
    return (ua_datetime(ts) + ua_u32(handle) + ua_u32(status) + b"\x00" + ua_array(None)
            + ua_extension_object(None))


def ua_chunk(msg_type: bytes, rest: bytes, chunk: bytes = b"F") -> bytes:
    """Transport header: 3-byte type, chunk type, total size."""
    return msg_type + chunk + ua_u32(len(rest) + 8) + rest


def ua_hello(url: str) -> bytes:
    return ua_chunk(b"HEL", ua_u32(0) + ua_u32(65535) + ua_u32(65535) + ua_u32(0) + ua_u32(0)
                    + ua_string(url))


def ua_acknowledge() -> bytes:
    return ua_chunk(b"ACK", ua_u32(0) + ua_u32(65535) + ua_u32(65535) + ua_u32(2097152) + ua_u32(0))


def ua_open(channel: int, policy: str, sender_cert: bytes | None, thumbprint: bytes | None,
            rest: bytes) -> bytes:
    """OPN chunk: asymmetric security header, then ``rest`` (sequence header + body, or ciphertext)."""
    return ua_chunk(b"OPN", ua_u32(channel) + ua_string(policy) + ua_bytestring(sender_cert)
                    + ua_bytestring(thumbprint) + rest)


def ua_sequence(seq: int, request_id: int) -> bytes:
    return ua_u32(seq) + ua_u32(request_id)


def ua_symmetric(msg_type: bytes, channel: int, token: int, rest: bytes) -> bytes:
    """MSG/CLO chunk: channel id, token id, then ``rest``."""
    return ua_chunk(msg_type, ua_u32(channel) + ua_u32(token) + rest)


def ua_open_secure_channel_request(ts: Decimal, handle: int, mode: int, nonce: bytes) -> bytes:
    return (ua_type("OpenSecureChannelRequest") + ua_request_header(ts, handle) + ua_u32(0)
            + ua_u32(0) + ua_u32(mode) + ua_bytestring(nonce) + ua_u32(600000))


def ua_open_secure_channel_response(ts: Decimal, handle: int, channel: int, token: int,
                                    nonce: bytes) -> bytes:
    return (ua_type("OpenSecureChannelResponse") + ua_response_header(ts, handle) + ua_u32(0)
            + ua_u32(channel) + ua_u32(token) + ua_datetime(ts) + ua_u32(600000)
            + ua_bytestring(nonce))


def ua_close_secure_channel_request(ts: Decimal, handle: int) -> bytes:
    return ua_type("CloseSecureChannelRequest") + ua_request_header(ts, handle)


def ua_application_description(uri: str, product: str, name: str, app_type: int,
                               discovery_urls: list[str] | None) -> bytes:
    urls = None if discovery_urls is None else [ua_string(u) for u in discovery_urls]
    return (ua_string(uri) + ua_string(product) + ua_localized_text(name) + ua_u32(app_type)
            + ua_string(None) + ua_string(None) + ua_array(urls))


SERVER_DESCRIPTION = ua_application_description(
    OPCUA_SERVER_URI, "urn:example:line1", "Line 1 OPC UA server", 0, [OPCUA_URL])
CLIENT_DESCRIPTION = ua_application_description(
    OPCUA_CLIENT_URI, "urn:example:historian:collector", "Plant historian", 1, None)


def ua_endpoint_description(mode: int, policy: str, security_level: int) -> bytes:
    anonymous = (ua_string("anonymous") + ua_u32(0) + ua_string(None) + ua_string(None)
                 + ua_string(None))
    return (ua_string(OPCUA_URL) + SERVER_DESCRIPTION + ua_bytestring(None) + ua_u32(mode)
            + ua_string(policy) + ua_array([anonymous]) + ua_string(UA_TCP_PROFILE)
            + ua_u8(security_level))


SERVER_ENDPOINTS = [
    ua_endpoint_description(MODE_NONE, POLICY_NONE, 0),
    ua_endpoint_description(MODE_SIGN_AND_ENCRYPT, POLICY_B256SHA256, 3),
]


def ua_get_endpoints_request(ts: Decimal, handle: int) -> bytes:
    return (ua_type("GetEndpointsRequest") + ua_request_header(ts, handle) + ua_string(OPCUA_URL)
            + ua_array([]) + ua_array([]))


def ua_get_endpoints_response(ts: Decimal, handle: int) -> bytes:
    return ua_type("GetEndpointsResponse") + ua_response_header(ts, handle) + ua_array(SERVER_ENDPOINTS)


def ua_create_session_request(ts: Decimal, handle: int, nonce: bytes) -> bytes:
    return (ua_type("CreateSessionRequest") + ua_request_header(ts, handle) + CLIENT_DESCRIPTION
            + ua_string(None) + ua_string(OPCUA_URL) + ua_string("historian-collector")
            + ua_bytestring(nonce) + ua_bytestring(None) + ua_double(1200000.0) + ua_u32(0))


def ua_create_session_response(ts: Decimal, handle: int, session_id: bytes, auth_token: bytes,
                               nonce: bytes) -> bytes:
    return (ua_type("CreateSessionResponse") + ua_response_header(ts, handle) + session_id
            + auth_token + ua_double(1200000.0) + ua_bytestring(nonce) + ua_bytestring(None)
            + ua_array(SERVER_ENDPOINTS) + ua_array([]) + ua_signature_data() + ua_u32(0))


def ua_activate_session_request(ts: Decimal, handle: int, auth_token: bytes) -> bytes:
    identity = ua_extension_object("AnonymousIdentityToken", ua_string("anonymous"))
    return (ua_type("ActivateSessionRequest") + ua_request_header(ts, handle, auth_token)
            + ua_signature_data() + ua_array([]) + ua_array([ua_string("en-US")]) + identity
            + ua_signature_data())


def ua_activate_session_response(ts: Decimal, handle: int, nonce: bytes) -> bytes:
    return (ua_type("ActivateSessionResponse") + ua_response_header(ts, handle)
            + ua_bytestring(nonce) + ua_array([]) + ua_array([]))


def ua_status_results_response(type_name: str, ts: Decimal, handle: int, count: int) -> bytes:
    """Write/DeleteNodes response: Good for each item, no diagnostics."""
    return (ua_type(type_name) + ua_response_header(ts, handle) + ua_array([ua_u32(0)] * count)
            + ua_array([]))


def ua_write_request(ts: Decimal, handle: int, auth_token: bytes, node: str, value: float) -> bytes:
    data_value = b"\x01" + ua_variant(UA_VARIANT_DOUBLE, ua_double(value))
    write_value = ua_nodeid(node, 2) + ua_u32(UA_ATTR_VALUE) + ua_string(None) + data_value
    return ua_type("WriteRequest") + ua_request_header(ts, handle, auth_token) + ua_array([write_value])


def ua_call_request(ts: Decimal, handle: int, auth_token: bytes, obj: str, method: str,
                    argument: int) -> bytes:
    call = (ua_nodeid(obj, 2) + ua_nodeid(method, 2)
            + ua_array([ua_variant(UA_VARIANT_UINT32, ua_u32(argument))]))
    return ua_type("CallRequest") + ua_request_header(ts, handle, auth_token) + ua_array([call])


def ua_call_response(ts: Decimal, handle: int) -> bytes:
    result = ua_u32(0) + ua_array([ua_u32(0)]) + ua_array([]) + ua_array([])
    return ua_type("CallResponse") + ua_response_header(ts, handle) + ua_array([result]) + ua_array([])


def ua_add_nodes_request(ts: Decimal, handle: int, auth_token: bytes, parent: str, new_node: str,
                         browse_name: str) -> bytes:
    attributes = (ua_u32(0x40) + ua_localized_text(browse_name) + ua_localized_text("")
                  + ua_u32(0) + ua_u32(0) + ua_u8(0))
    item = (ua_nodeid(parent, 2) + ua_nodeid(UA_HAS_COMPONENT) + ua_nodeid(new_node, 2)
            + ua_qualified_name(browse_name, 2) + ua_u32(1)
            + ua_extension_object("ObjectAttributes", attributes) + ua_nodeid(UA_BASE_OBJECT_TYPE))
    return ua_type("AddNodesRequest") + ua_request_header(ts, handle, auth_token) + ua_array([item])


def ua_add_nodes_response(ts: Decimal, handle: int, new_node: str) -> bytes:
    result = ua_u32(0) + ua_nodeid(new_node, 2)
    return ua_type("AddNodesResponse") + ua_response_header(ts, handle) + ua_array([result]) + ua_array([])


def ua_delete_nodes_request(ts: Decimal, handle: int, auth_token: bytes, node: str) -> bytes:
    item = ua_nodeid(node, 2) + ua_bool(True)
    return ua_type("DeleteNodesRequest") + ua_request_header(ts, handle, auth_token) + ua_array([item])


def ua_close_session_request(ts: Decimal, handle: int, auth_token: bytes) -> bytes:
    return ua_type("CloseSessionRequest") + ua_request_header(ts, handle, auth_token) + ua_bool(True)


def ua_close_session_response(ts: Decimal, handle: int) -> bytes:
    return ua_type("CloseSessionResponse") + ua_response_header(ts, handle)


def der_looking_certificate(rng: random.Random, size: int = 1000) -> bytes:
    """Bytes shaped like a DER X.509 certificate (SEQUENCE of SEQUENCE), content random."""
    inner = rng.randbytes(size - 8)
    tbs = b"\x30\x82" + struct.pack(">H", len(inner)) + inner
    return b"\x30\x82" + struct.pack(">H", len(tbs)) + tbs


# --------------------------------------------------------------------------- TLS, Telnet

TLS12 = 0x0303
TLS_HANDSHAKE, TLS_CCS, TLS_APPDATA = 0x16, 0x14, 0x17


def tls_record(content_type: int, body: bytes) -> bytes:
    return struct.pack(">BHH", content_type, TLS12, len(body)) + body


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def tls_extension(ext_type: int, body: bytes) -> bytes:
    return struct.pack(">HH", ext_type, len(body)) + body


def tls_client_hello(rng: random.Random, server_name: str | None, session_id: bytes) -> bytes:
    """TLS 1.2 ClientHello record with ECDHE-GCM suites, SNI, groups, signature algorithms."""
    suites = struct.pack(">5H", 0xC02F, 0xC030, 0xC02B, 0xC02C, 0x009C)
    exts = b""
    if server_name:
        name = server_name.encode()
        entry = b"\x00" + struct.pack(">H", len(name)) + name
        exts += tls_extension(0x0000, struct.pack(">H", len(entry)) + entry)
    exts += tls_extension(0x000A, struct.pack(">HHH", 4, 0x0017, 0x0018))
    exts += tls_extension(0x000B, b"\x01\x00")
    exts += tls_extension(0x000D, struct.pack(">HHH", 4, 0x0401, 0x0804))
    exts += tls_extension(0x0017, b"")
    body = (struct.pack(">H", TLS12) + rng.randbytes(32) + bytes([len(session_id)]) + session_id
            + struct.pack(">H", len(suites)) + suites + b"\x01\x00"
            + struct.pack(">H", len(exts)) + exts)
    return tls_record(TLS_HANDSHAKE, tls_handshake(1, body))


def tls_server_hello(rng: random.Random, session_id: bytes) -> bytes:
    """TLS 1.2 ServerHello record choosing ECDHE-RSA-AES128-GCM-SHA256.

    Echoing the client's session id makes this an abbreviated (resumed) handshake, so
    the certificate exchange is legitimately absent.
    """
    exts = tls_extension(0xFF01, b"\x00") + tls_extension(0x0017, b"")
    body = (struct.pack(">H", TLS12) + rng.randbytes(32) + bytes([len(session_id)]) + session_id
            + struct.pack(">HB", 0xC02F, 0) + struct.pack(">H", len(exts)) + exts)
    return tls_record(TLS_HANDSHAKE, tls_handshake(2, body))


def tls_finish(rng: random.Random) -> bytes:
    """ChangeCipherSpec + encrypted Finished, as both sides send them."""
    return tls_record(TLS_CCS, b"\x01") + tls_record(TLS_HANDSHAKE, rng.randbytes(40))


def tls_resumed_handshake(conn: "TcpConnection", server_name: str | None) -> None:
    """ClientHello; ServerHello + CCS + Finished; client CCS + Finished."""
    rng = conn.cap.rng
    session_id = rng.randbytes(32)
    conn.exchange(tls_client_hello(rng, server_name, session_id),
                  tls_server_hello(rng, session_id) + tls_finish(rng))
    conn.send(True, tls_finish(rng))
    conn.wait(*conn.latency_us)


def tls_appdata(rng: random.Random, size: int) -> bytes:
    return tls_record(TLS_APPDATA, rng.randbytes(size))


TELNET_IAC, TELNET_DO, TELNET_WILL = 0xFF, 0xFD, 0xFB
TELNET_ECHO, TELNET_SGA, TELNET_TTYPE = 1, 3, 24


def telnet_option(command: int, option: int) -> bytes:
    return bytes([TELNET_IAC, command, option])


# --------------------------------------------------------------------------- TCP / capture

def to_epoch(dt: datetime) -> Decimal:
    return Decimal(int(dt.timestamp()))


class Capture:
    """Packets with explicit times and labels; written sorted by time."""

    def __init__(self, name: str, start: datetime, seed: int):
        self.name = name
        self.start = to_epoch(start)
        self.rng = random.Random(f"{seed}:{name}")
        self.packets: list[tuple[Decimal, int, object, str | None]] = []
        self.label: str | None = None

    def add(self, t: Decimal, pkt) -> None:
        self.packets.append((t, len(self.packets), pkt, self.label))

    def at(self, offset_s: float | int | str) -> Decimal:
        return self.start + Decimal(str(offset_s))

    def jitter(self, lo_us: int, hi_us: int) -> Decimal:
        return Decimal(self.rng.randint(lo_us, hi_us)) / 1_000_000

    def ordered(self) -> list[tuple[Decimal, object, str | None]]:
        """Time-sorted packets with IP ids assigned per sender in that order."""
        ip_ids: dict[str, int] = {}
        out = []
        for t, _, pkt, label in sorted(self.packets, key=lambda p: (p[0], p[1])):
            if IP in pkt:
                src = pkt[IP].src
                ip_ids[src] = ip_ids.get(src, (sum(map(int, src.split("."))) * 97) & 0xFFFF) + 1
                pkt[IP].id = ip_ids[src] & 0xFFFF
            pkt.time = t
            out.append((t, pkt, label))
        return out

    def write(self, path: Path) -> list[tuple[Decimal, object, str | None]]:
        packets = self.ordered()
        writer = PcapWriter(str(path), linktype=1, sync=False)
        for _, pkt, _ in packets:
            writer.write(pkt)
        writer.close()
        return packets


def ether(src: Host, dst: Host):
    return Ether(src=src.mac, dst=dst.mac)


def ip(src: Host, dst: Host):
    return IP(src=src.ip, dst=dst.ip, ttl=src.ttl, flags="DF")


def arp_exchange(cap: Capture, t: Decimal, asker: Host, target: Host) -> Decimal:
    """Broadcast who-has and the unicast reply."""
    cap.add(t, Ether(src=asker.mac, dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=1, hwsrc=asker.mac, psrc=asker.ip, hwdst="00:00:00:00:00:00", pdst=target.ip))
    t += cap.jitter(200, 900)
    cap.add(t, Ether(src=target.mac, dst=asker.mac)
            / ARP(op=2, hwsrc=target.mac, psrc=target.ip, hwdst=asker.mac, pdst=asker.ip))
    return t + cap.jitter(500, 2000)


def dns_lookup(cap: Capture, t: Decimal, client: Host, qid: int, name: str, answer: str) -> Decimal:
    sport = 50000 + qid % 10000
    cap.add(t, ether(client, CORP_DNS) / ip(client, CORP_DNS) / UDP(sport=sport, dport=53)
            / DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype="A")))
    t += cap.jitter(400, 3000)
    cap.add(t, ether(CORP_DNS, client) / ip(CORP_DNS, client) / UDP(sport=53, dport=sport)
            / DNS(id=qid, qr=1, aa=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"),
                  an=DNSRR(rrname=name, type="A", ttl=300, rdata=answer)))
    return t


class TcpConnection:
    """One TCP connection with correct sequence and acknowledgement numbers.

    ``t`` is the connection's own clock; every method emits packets at ``t`` and
    moves it forward by a small deterministic jitter.
    """

    MSS = 1460

    def __init__(self, cap: Capture, t: Decimal, client: Host, server: Host, sport: int,
                 dport: int, isn_client: int, isn_server: int, latency_us=(800, 6000)):
        self.cap, self.t = cap, t
        self.hosts = {True: client, False: server}
        self.ports = {True: sport, False: dport}
        self.next_seq = {True: isn_client, False: isn_server}
        self.window = {True: 64240, False: 8192}
        self.latency_us = latency_us

    def _segment(self, from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None,
                 options=None):
        src, dst = self.hosts[from_client], self.hosts[not from_client]
        ack = self.next_seq[not from_client] if "A" in flags else 0
        tcp = TCP(sport=self.ports[from_client], dport=self.ports[not from_client],
                  seq=self.next_seq[from_client] if seq is None else seq, ack=ack, flags=flags,
                  window=self.window[from_client], options=options or [])
        pkt = ether(src, dst) / ip(src, dst) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        self.cap.add(self.t, pkt)

    def wait(self, lo_us: int, hi_us: int) -> None:
        self.t += self.cap.jitter(lo_us, hi_us)

    def open(self) -> "TcpConnection":
        """Three-way handshake; SYN and SYN/ACK carry MSS."""
        self._segment(True, "S", options=[("MSS", self.MSS)])
        self.next_seq[True] += 1
        self.wait(*self.latency_us)
        self._segment(False, "SA", options=[("MSS", self.MSS)])
        self.next_seq[False] += 1
        self.wait(100, 400)
        self._segment(True, "A")
        self.wait(200, 800)
        return self

    def send(self, from_client: bool, payload: bytes) -> None:
        """One PSH/ACK data segment; sequence advances."""
        self._segment(from_client, "PA", payload)
        self.next_seq[from_client] += len(payload)

    def send_raw(self, from_client: bool, payload: bytes, seq: int) -> None:
        """A data segment at an explicit sequence number (retransmission, reordering)."""
        self._segment(from_client, "PA", payload, seq=seq)

    def ack(self, from_client: bool) -> None:
        self._segment(from_client, "A")

    def exchange(self, request: bytes, response: bytes | None, from_client: bool = True) -> None:
        """Request, response (which acks it) and the requester's ACK; no response -> bare ACK."""
        self.send(from_client, request)
        self.wait(*self.latency_us)
        if response is None:
            self.ack(not from_client)
        else:
            self.send(not from_client, response)
            self.wait(150, 900)
            self.ack(from_client)
        self.wait(300, 1500)

    def close(self, from_client: bool = True) -> Decimal:
        """FIN/ACK, FIN/ACK, ACK."""
        self.wait(500, 3000)
        self._segment(from_client, "FA")
        self.next_seq[from_client] += 1
        self.wait(*self.latency_us)
        self._segment(not from_client, "FA")
        self.next_seq[not from_client] += 1
        self.wait(100, 500)
        self._segment(from_client, "A")
        return self.t


class S7Session:
    """An S7comm connection: COTP connect, setup communication, then jobs with PDU refs."""

    def __init__(self, conn: TcpConnection, src_ref: int):
        self.conn, self.pdu_ref = conn.open(), 0
        conn.exchange(cotp_connect(0xE0, 0, src_ref, TSAP_PG, TSAP_RACK0_SLOT2),
                      cotp_connect(0xD0, src_ref, 0x0044, TSAP_PG, TSAP_RACK0_SLOT2))
        self.job(s7_setup_communication(), b"", s7_setup_communication())

    def next_ref(self) -> int:
        self.pdu_ref += 1
        return 0x0400 + self.pdu_ref

    def job(self, param: bytes, data: bytes, ack_param: bytes, ack_data: bytes = b"") -> None:
        ref = self.next_ref()
        self.conn.exchange(cotp_dt(s7_pdu(S7_JOB, ref, param, data)),
                           cotp_dt(s7_pdu(S7_ACK_DATA, ref, ack_param, ack_data)))

    def plc_job(self, param: bytes, ack_param: bytes, ack_data: bytes = b"") -> None:
        """A job the PLC sends to the PG (block download), answered by the PG."""
        ref = 0x8000 + self.next_ref()
        self.conn.exchange(cotp_dt(s7_pdu(S7_JOB, ref, param)),
                           cotp_dt(s7_pdu(S7_ACK_DATA, ref, ack_param, ack_data)), from_client=False)

    def userdata(self, request: tuple[bytes, bytes], response: tuple[bytes, bytes]) -> None:
        ref = self.next_ref()
        self.conn.exchange(cotp_dt(s7_pdu(S7_USERDATA, ref, *request)),
                           cotp_dt(s7_pdu(S7_USERDATA, ref, *response)))

    def read_db(self, db: int, start: int, values: bytes) -> None:
        self.job(s7_var_param(0x04, [s7_any_item(S7_AREA_DB, db, start, len(values), S7_TSIZE_BYTE)]),
                 b"", b"\x04\x01", s7_data_item(values, 0xFF))

    def write_db_word(self, db: int, start: int, value: int) -> None:
        self.job(s7_var_param(0x05, [s7_any_item(S7_AREA_DB, db, start, 1, S7_TSIZE_WORD)]),
                 s7_data_item(struct.pack(">H", value)), b"\x05\x01", s7_write_var_ack_data(1))

    def plc_stop(self) -> None:
        self.job(s7_plc_stop_param(), b"", b"\x29")

    def pi_start_program(self) -> None:
        self.job(s7_pi_start_param("P_PROGRAM"), b"", b"\x28")

    def download_block(self, block_type: bytes, number: int, block: bytes) -> None:
        """Request download (PG job), Download block and Download ended (PLC jobs)."""
        self.job(s7_request_download_param(block_type, number, len(block) + 36, len(block)),
                 b"", b"\x1a")
        self.plc_job(s7_download_block_param(block_type, number), b"\x1b\x00",
                     s7_download_block_ack_data(block))
        self.plc_job(s7_download_ended_param(block_type, number), b"\x1c")

    def read_szl(self, szl_id: int, records: list[bytes]) -> None:
        self.userdata(s7_szl_request(szl_id, 0x0000), s7_szl_response(szl_id, 0x0000, records))


class UaChannel:
    """An OPC UA SecureChannel with SecurityPolicy None: plaintext chunks over one connection."""

    def __init__(self, conn: TcpConnection, channel_id: int):
        self.conn, self.channel, self.token = conn.open(), channel_id, 1
        self.rng = conn.cap.rng
        self.client_seq, self.server_seq, self.request_id, self.handle = 50, 0, 0, 0
        self.auth_token = b"\x00\x00"
        conn.exchange(ua_hello(OPCUA_URL), ua_acknowledge())
        client_seq, server_seq, request_id, handle = self._next()
        conn.exchange(
            ua_open(0, POLICY_NONE, None, None, ua_sequence(client_seq, request_id)
                    + ua_open_secure_channel_request(conn.t, handle, MODE_NONE, b"")),
            ua_open(channel_id, POLICY_NONE, None, None, ua_sequence(server_seq, request_id)
                    + ua_open_secure_channel_response(conn.t + UA_SERVER_DELAY, handle, channel_id,
                                                      self.token, b"")))

    def _next(self) -> tuple[int, int, int, int]:
        """Advance both sequence numbers, the request id and the request handle."""
        self.client_seq += 1
        self.server_seq += 1
        self.request_id += 1
        self.handle += 1
        return self.client_seq, self.server_seq, self.request_id, self.handle

    def call(self, request, response) -> None:
        """One service call: ``request``/``response`` take (ts, handle) and return the body."""
        client_seq, server_seq, request_id, handle = self._next()
        req = ua_symmetric(b"MSG", self.channel, self.token,
                           ua_sequence(client_seq, request_id) + request(self.conn.t, handle))
        resp = ua_symmetric(b"MSG", self.channel, self.token,
                            ua_sequence(server_seq, request_id)
                            + response(self.conn.t + UA_SERVER_DELAY, handle))
        self.conn.exchange(req, resp)

    def create_and_activate_session(self) -> None:
        session_id, token = ua_nodeid(0x1000 + self.channel, 1), ua_nodeid(0x2000 + self.channel, 1)
        self.call(lambda ts, h: ua_create_session_request(ts, h, self.rng.randbytes(32)),
                  lambda ts, h: ua_create_session_response(ts, h, session_id, token,
                                                           self.rng.randbytes(32)))
        self.auth_token = token
        self.call(lambda ts, h: ua_activate_session_request(ts, h, token),
                  lambda ts, h: ua_activate_session_response(ts, h, self.rng.randbytes(32)))

    def write_setpoint(self, value: float) -> None:
        self.call(lambda ts, h: ua_write_request(ts, h, self.auth_token, SETPOINT_NODE, value),
                  lambda ts, h: ua_status_results_response("WriteResponse", ts, h, 1))

    def close_channel(self) -> None:
        """CLO: the server answers by closing the TCP connection."""
        client_seq, _, request_id, handle = self._next()
        self.conn.send(True, ua_symmetric(b"CLO", self.channel, self.token,
                                          ua_sequence(client_seq, request_id)
                                          + ua_close_secure_channel_request(self.conn.t, handle)))
        self.conn.wait(*self.conn.latency_us)


# --------------------------------------------------------------------------- background traffic

def rdp_session(cap: Capture, t: Decimal, sport: int, isn: tuple[int, int], bursts: list[Decimal],
                end: Decimal) -> None:
    """jump-host -> eng-ws: opaque TLS-framed records only (no X.224 negotiation, so no
    TPKT/COTP bytes that an S7 decoder could mistake for its own)."""
    conn = TcpConnection(cap, t, asset("jump-host"), asset("eng-ws"), sport, 3389, *isn).open()
    rng = cap.rng
    for b in bursts:
        conn.t = b
        conn.exchange(tls_appdata(rng, rng.randint(40, 160)), tls_appdata(rng, rng.randint(200, 600)))
        conn.send(False, tls_appdata(rng, rng.randint(300, 900)))
        conn.wait(200, 900)
        conn.ack(True)
    conn.t = end
    conn.close()


def https_visit(cap: Capture, t: Decimal, sport: int, isn: tuple[int, int]) -> None:
    """corp-pc -> jump-host TLS 1.2 session with a few application records."""
    conn = TcpConnection(cap, t, asset("corp-pc"), asset("jump-host"), sport, 443, *isn).open()
    rng = cap.rng
    tls_resumed_handshake(conn, "jump-host.dmz.example")
    for _ in range(2):
        conn.exchange(tls_appdata(rng, rng.randint(200, 400)), tls_appdata(rng, rng.randint(600, 1200)))
    conn.close()


def modbus_poll(conn: TcpConnection, tid: int) -> int:
    """The HMI's cycle: FC 3 holding 0-19, FC 1 coils 0-15, FC 6 setpoint register 150."""
    rng = conn.cap.rng
    regs = [rng.randint(0, 1000) for _ in range(20)]
    conn.exchange(mbap(tid, modbus_read_request(3, 0, 20)),
                  mbap(tid, modbus_read_registers_response(3, regs)))
    coils = [rng.randint(0, 1) for _ in range(16)]
    conn.exchange(mbap(tid + 1, modbus_read_request(1, 0, 16)),
                  mbap(tid + 1, modbus_read_bits_response(1, coils)))
    setpoint = modbus_write_single(6, 150, 700 + rng.randint(0, 50))
    conn.exchange(mbap(tid + 2, setpoint), mbap(tid + 2, setpoint))
    return tid + 3


# --------------------------------------------------------------------------- scenarios

def normal_period(seed: int) -> Capture:
    cap = Capture("plant_normal", NORMAL_START, seed)
    rng = cap.rng
    hmi, plc_mb, plc_s7 = asset("hmi-1"), asset("plc-modbus"), asset("plc-s7")
    historian, opcua, eng = asset("historian"), asset("opcua-server"), asset("eng-ws")

    t = cap.at("0.010")
    for asker, target in ((hmi, plc_mb), (hmi, plc_s7), (historian, opcua), (eng, plc_s7),
                          (asset("jump-host"), eng), (asset("corp-pc"), CORP_DNS)):
        t = arp_exchange(cap, t, asker, target)

    cycles = range(0, NORMAL_DURATION_S - 10, POLL_PERIOD_S)
    modbus = TcpConnection(cap, cap.at("0.5"), hmi, plc_mb, 49710, MODBUS_PORT,
                           0x1A2B0000, 0x00C0FFEE).open()
    tid = 1
    for c in cycles:
        modbus.t = max(modbus.t, cap.at(c + 1) + cap.jitter(0, 20000))
        tid = modbus_poll(modbus, tid)
    modbus.t = cap.at(NORMAL_DURATION_S - 3)
    modbus.close()

    s7 = S7Session(TcpConnection(cap, cap.at("0.8"), hmi, plc_s7, 49711, S7_PORT,
                                 0x2B3C0000, 0x5EED0001), src_ref=0x000A)
    for c in cycles:
        s7.conn.t = max(s7.conn.t, cap.at(c + 2) + cap.jitter(0, 20000))
        s7.read_db(10, 0, rng.randbytes(20))
        s7.write_db_word(10, 4, rng.randint(0, 0x7FFF))
    s7.conn.t = cap.at(NORMAL_DURATION_S - 2)
    s7.conn.close()
    for i, start in enumerate((120, 480)):
        szl = S7Session(TcpConnection(cap, cap.at(start), eng, plc_s7, 50110 + i, S7_PORT,
                                      0x3C4D0000 + i * 0x100000, 0x5EED2000 + i * 0x100000),
                        src_ref=0x0020 + i)
        szl.read_szl(S7_SZL_MODULE_ID, SZL_MODULE_ID_RECORDS)
        szl.conn.close()

    ua = TcpConnection(cap, cap.at("1.2"), historian, opcua, 51200, OPCUA_PORT,
                       0x4D5E0000, 0x6F700000).open()
    encrypted_channel(ua, cycles, cap)

    rdp_session(cap, cap.at(50), 51830, (0x5E6F0000, 0x70810000),
                [cap.at(s) for s in range(70, 560, 45)], cap.at(565))
    for i, start in enumerate((100, 400)):
        t = dns_lookup(cap, cap.at(start), asset("corp-pc"), 0x3A00 + i, "jump-host.dmz.example",
                       "10.20.0.10")
        https_visit(cap, t + Decimal("0.01"), 52400 + i, (0x6F700000 + i, 0x81920000 + i))
    dns_lookup(cap, cap.at(250), asset("corp-pc"), 0x3A10, "intranet.corp.example", "10.10.0.80")
    return cap


def encrypted_channel(conn: TcpConnection, cycles, cap: Capture) -> None:
    """historian -> opcua-server, Basic256Sha256 SignAndEncrypt: everything after the
    asymmetric/symmetric security headers is ciphertext (deterministic random bytes)."""
    rng = cap.rng
    conn.exchange(ua_hello(OPCUA_URL), ua_acknowledge())
    client_cert, server_cert = der_looking_certificate(rng), der_looking_certificate(rng)
    conn.exchange(ua_open(0, POLICY_B256SHA256, client_cert, rng.randbytes(20), rng.randbytes(512)),
                  ua_open(0x0B, POLICY_B256SHA256, server_cert, rng.randbytes(20), rng.randbytes(512)))
    for c in cycles:
        conn.t = max(conn.t, cap.at(c + 3) + cap.jitter(0, 20000))
        conn.exchange(ua_symmetric(b"MSG", 0x0B, 1, rng.randbytes(16 * rng.randint(6, 8))),
                      ua_symmetric(b"MSG", 0x0B, 1, rng.randbytes(16 * rng.randint(10, 14))))
    conn.t = cap.at(NORMAL_DURATION_S - 1)
    conn.send(True, ua_symmetric(b"CLO", 0x0B, 1, rng.randbytes(96)))
    conn.wait(*conn.latency_us)
    conn.close(from_client=False)


#: Incident numbers, in the order of docs/example-plant.md, with their offset in seconds.
INCIDENT_OFFSETS = {n: 20 + (n - 1) * INCIDENT_SPACING_S for n in range(1, 10)}
MALFORMED_TID = 0x00FF


def incident(seed: int) -> Capture:
    cap = Capture("plant_incident", INCIDENT_START, seed)
    rng = cap.rng
    hmi, plc_mb, plc_s7, corp = asset("hmi-1"), asset("plc-modbus"), asset("plc-s7"), asset("corp-pc")
    end = INCIDENT_OFFSETS[9] + 30

    cap.label = "background"
    t = cap.at("0.010")
    for asker, target in ((hmi, plc_mb), (hmi, plc_s7), (asset("jump-host"), asset("eng-ws"))):
        t = arp_exchange(cap, t, asker, target)
    poll = TcpConnection(cap, cap.at("0.5"), hmi, plc_mb, 49810, MODBUS_PORT, 0x11110000, 0x22220000).open()
    tid = 1
    for c in range(0, end, POLL_PERIOD_S):
        poll.t = max(poll.t, cap.at(c + 1) + cap.jitter(0, 20000))
        tid = modbus_poll(poll, tid)
    poll.t = cap.at(end)
    poll.close()
    rdp_session(cap, cap.at(5), 51930, (0x33330000, 0x44440000),
                [cap.at(s) for s in range(15, end - 20, 60)], cap.at(end - 10))
    t = dns_lookup(cap, cap.at(8), corp, 0x4B00, "jump-host.dmz.example", "10.20.0.10")
    https_visit(cap, t + Decimal("0.01"), 52500, (0x55550000, 0x66660000))

    def start(n: int) -> Decimal:
        cap.label = f"incident {n}"
        return cap.at(INCIDENT_OFFSETS[n])

    # 1: enterprise PC reads holding registers straight from the field PLC.
    c = TcpConnection(cap, start(1), corp, plc_mb, 53001, MODBUS_PORT, 0x01010000, 0x01020000).open()
    c.exchange(mbap(0x0001, modbus_read_request(3, 0, 10)),
               mbap(0x0001, modbus_read_registers_response(3, [rng.randint(0, 999) for _ in range(10)])))
    c.close()

    # 2: HMI writes holding registers 4000-4009, outside the allowed 100-199.
    c = TcpConnection(cap, start(2), hmi, plc_mb, 49820, MODBUS_PORT, 0x02010000, 0x02020000).open()
    c.exchange(mbap(0x0101, modbus_write_multiple_registers_request(4000, list(range(1, 11)))),
               mbap(0x0101, modbus_write_multiple_response(16, 4000, 10)))
    c.close()

    # 3: HMI stops the S7 PLC.
    s7 = S7Session(TcpConnection(cap, start(3), hmi, plc_s7, 49830, S7_PORT, 0x03010000, 0x03020000),
                   src_ref=0x0030)
    s7.plc_stop()
    s7.conn.close()

    # 4: unknown station downloads DB1.
    t = arp_exchange(cap, start(4), ROGUE, plc_s7)
    s7 = S7Session(TcpConnection(cap, t, ROGUE, plc_s7, 50999, S7_PORT, 0x04010000, 0x04020000),
                   src_ref=0x0040)
    s7.download_block(S7_BLOCK_DB, 1, rng.randbytes(64))
    s7.conn.close()

    # 5: historian opens an insecure OPC UA channel and writes the setpoint.
    ua = UaChannel(TcpConnection(cap, start(5), asset("historian"), asset("opcua-server"), 51300,
                                 OPCUA_PORT, 0x05010000, 0x05020000), channel_id=0x21)
    ua.create_and_activate_session()
    ua.write_setpoint(72.5)
    ua.conn.close()

    # 6: the Modbus PLC talks to an address outside every zone.
    c = TcpConnection(cap, start(6), plc_mb, EXTERNAL, 40123, 443, 0x06010000, 0x06020000,
                      latency_us=(18000, 30000)).open()
    tls_resumed_handshake(c, "update.example.net")
    c.exchange(tls_appdata(rng, 180), tls_appdata(rng, 96))
    c.close()

    # 7: Telnet from the enterprise into the control zone.
    c = TcpConnection(cap, start(7), corp, hmi, 53007, 23, 0x07010000, 0x07020000).open()
    c.send(False, telnet_option(TELNET_DO, TELNET_TTYPE) + telnet_option(TELNET_WILL, TELNET_ECHO)
           + telnet_option(TELNET_WILL, TELNET_SGA))
    c.wait(1000, 3000)
    c.exchange(telnet_option(TELNET_WILL, TELNET_TTYPE) + telnet_option(TELNET_DO, TELNET_ECHO)
               + telnet_option(TELNET_DO, TELNET_SGA), b"\r\nhmi-1 login: ")
    c.exchange(b"admin\r\n", b"Password: ")
    c.close()

    # 8: HMI reads the component identification SZL, never seen in the learning period.
    s7 = S7Session(TcpConnection(cap, start(8), hmi, plc_s7, 49840, S7_PORT, 0x08010000, 0x08020000),
                   src_ref=0x0080)
    s7.read_szl(S7_SZL_COMPONENT_ID, SZL_COMPONENT_ID_RECORDS)
    s7.conn.close()

    # 9: function-code sweep 60-70 (exception 1 each), then an ADU with length field 1.
    c = TcpConnection(cap, start(9), corp, plc_mb, 53009, MODBUS_PORT, 0x09010000, 0x09020000).open()
    for fc in range(60, 71):
        c.exchange(mbap(fc, bytes([fc])), mbap(fc, modbus_exception(fc, 1)))
    c.send(True, mbap(MALFORMED_TID, b"", length=1))
    c.wait(*c.latency_us)
    c.ack(False)
    c.wait(2000, 5000)
    c.close()
    cap.label = None
    return cap


#: Transaction ids of the TCP-level cases in the showcase (one FC 3 request each).
TID_SPLIT = 0x0101           # one ADU over three segments
TID_COALESCED = (0x0102, 0x0103)   # two ADUs in one segment (both directions)
TID_RETRANSMITTED = 0x0104   # request segment sent twice
TID_OUT_OF_ORDER = (0x0105, 0x0106)  # second segment captured before the first
DEVICE_IDENTITY = [(0, "Schneider Electric"), (1, "BMX P34 2020"), (2, "v3.1")]


def showcase(seed: int) -> Capture:
    cap = Capture("protocols_showcase", SHOWCASE_START, seed)
    rng = cap.rng
    hmi, plc_mb, plc_s7 = asset("hmi-1"), asset("plc-modbus"), asset("plc-s7")

    # Modbus: identification, every write kind, diagnostics.
    cap.label = "modbus functions"
    c = TcpConnection(cap, cap.at(1), hmi, plc_mb, 49900, MODBUS_PORT, 0xA0010000, 0xA0020000).open()
    c.exchange(mbap(1, modbus_read_device_id_request()),
               mbap(1, modbus_read_device_id_response(DEVICE_IDENTITY)))
    c.exchange(mbap(2, modbus_write_single(5, 10, 0xFF00)), mbap(2, modbus_write_single(5, 10, 0xFF00)))
    c.exchange(mbap(3, modbus_write_single(6, 150, 725)), mbap(3, modbus_write_single(6, 150, 725)))
    c.exchange(mbap(4, modbus_write_multiple_coils_request(20, [1, 0, 1, 1, 0, 0, 1, 0, 1, 1])),
               mbap(4, modbus_write_multiple_response(15, 20, 10)))
    c.exchange(mbap(5, modbus_write_multiple_registers_request(100, [11, 22, 33, 44, 55])),
               mbap(5, modbus_write_multiple_response(16, 100, 5)))
    c.exchange(mbap(6, modbus_mask_write_register(120, 0x00F2, 0x0025)),
               mbap(6, modbus_mask_write_register(120, 0x00F2, 0x0025)))
    c.exchange(mbap(7, modbus_read_write_registers_request(0, 4, 160, [0x1234, 0x5678])),
               mbap(7, modbus_read_registers_response(23, [100, 200, 300, 400])))
    c.exchange(mbap(8, modbus_diagnostics(0x0001, 0x0000)), mbap(8, modbus_diagnostics(0x0001, 0x0000)))
    c.exchange(mbap(9, modbus_diagnostics(0x0004, 0x0000)), None)  # listen-only: no response
    c.close()

    cap.label = "modbus tcp cases"
    c = TcpConnection(cap, cap.at(5), hmi, plc_mb, 49901, MODBUS_PORT, 0xB0010000, 0xB0020000).open()

    def regs(n: int) -> bytes:
        return modbus_read_registers_response(3, [rng.randint(0, 999) for _ in range(n)])

    split = mbap(TID_SPLIT, modbus_read_request(3, 0, 10))
    for part in (split[:8], split[8:10], split[10:]):  # tshark needs 8 bytes to claim a segment
        c.send(True, part)
        c.wait(2000, 6000)
    c.wait(*c.latency_us)
    c.send(False, mbap(TID_SPLIT, regs(10)))
    c.wait(200, 900)
    c.ack(True)
    c.wait(5000, 9000)
    a, b = (mbap(tid, modbus_read_request(3, 20 * i, 5)) for i, tid in enumerate(TID_COALESCED))
    c.exchange(a + b, mbap(TID_COALESCED[0], regs(5)) + mbap(TID_COALESCED[1], regs(5)))
    c.wait(5000, 9000)
    retrans = mbap(TID_RETRANSMITTED, modbus_read_request(3, 40, 2))
    seq = c.next_seq[True]
    c.send(True, retrans)
    c.t += Decimal("0.2")
    c.send_raw(True, retrans, seq)
    c.wait(*c.latency_us)
    c.send(False, mbap(TID_RETRANSMITTED, regs(2)))
    c.wait(200, 900)
    c.ack(True)
    c.wait(5000, 9000)
    first, second = (mbap(tid, modbus_read_request(3, 50 + i, 1)) for i, tid in enumerate(TID_OUT_OF_ORDER))
    seq = c.next_seq[True]
    c.send_raw(True, second, seq + len(first))
    c.wait(50, 200)
    c.send_raw(True, first, seq)
    c.next_seq[True] = seq + len(first) + len(second)
    c.wait(*c.latency_us)
    c.send(False, mbap(TID_OUT_OF_ORDER[0], regs(1)))
    c.wait(100, 300)
    c.send(False, mbap(TID_OUT_OF_ORDER[1], regs(1)))
    c.wait(200, 900)
    c.ack(True)
    c.close()

    # S7: write var, stop, download, start.
    cap.label = "s7comm"
    s7 = S7Session(TcpConnection(cap, cap.at(10), asset("eng-ws"), plc_s7, 50200, S7_PORT,
                                 0xC0010000, 0xC0020000), src_ref=0x00C0)
    s7.write_db_word(10, 4, 1500)
    s7.plc_stop()
    s7.download_block(S7_BLOCK_OB, 1, rng.randbytes(96))
    s7.pi_start_program()
    s7.conn.close()

    # OPC UA: SecurityPolicy None session with every service the decoders classify.
    cap.label = "opcua"
    ua = UaChannel(TcpConnection(cap, cap.at(15), asset("historian"), asset("opcua-server"), 51400,
                                 OPCUA_PORT, 0xD0010000, 0xD0020000), channel_id=0x31)
    ua.call(ua_get_endpoints_request, ua_get_endpoints_response)
    ua.create_and_activate_session()
    ua.write_setpoint(80.0)
    token = ua.auth_token
    ua.call(lambda ts, h: ua_call_request(ts, h, token, "Line1", "Line1.ResetCounters", 1),
            ua_call_response)
    ua.call(lambda ts, h: ua_add_nodes_request(ts, h, token, "Line1", "Line1.Debug", "Debug"),
            lambda ts, h: ua_add_nodes_response(ts, h, "Line1.Debug"))
    ua.call(lambda ts, h: ua_delete_nodes_request(ts, h, token, "Line1.Debug"),
            lambda ts, h: ua_status_results_response("DeleteNodesResponse", ts, h, 1))
    ua.call(lambda ts, h: ua_close_session_request(ts, h, token), ua_close_session_response)
    ua.close_channel()
    ua.conn.close(from_client=False)
    cap.label = None
    return cap


SCENARIOS = {
    "plant_normal.pcap": normal_period,
    "plant_incident.pcap": incident,
    "protocols_showcase.pcap": showcase,
}


def label_ranges(packets) -> dict[str, tuple[int, int, Decimal, Decimal]]:
    """First/last 1-based packet number and time of each labelled group."""
    ranges: dict[str, tuple[int, int, Decimal, Decimal]] = {}
    for number, (t, _, label) in enumerate(packets, 1):
        if label is None:
            continue
        first = ranges.get(label, (number, number, t, t))
        ranges[label] = (first[0], number, first[2], t)
    return ranges


def generate(out: Path, seed: int = SEED) -> dict[str, dict[str, tuple[int, int, Decimal, Decimal]]]:
    """Write the three captures into ``out``; return the labelled packet ranges per file."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for filename, scenario in SCENARIOS.items():
        packets = scenario(seed).write(out / filename)
        summary[filename] = label_ranges(packets)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder of this script)")
    args = parser.parse_args(argv)
    for filename, ranges in generate(args.out).items():
        print(filename)
        for label, (first, last, t0, t1) in ranges.items():
            stamp = lambda t: datetime.fromtimestamp(float(t), timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            print(f"  {label:<18} packets {first:>4}-{last:<4} {stamp(t0)}-{stamp(t1)} UTC")


if __name__ == "__main__":
    main()
