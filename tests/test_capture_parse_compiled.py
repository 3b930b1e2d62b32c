"""The compiled parse_packet (otsec/flow/_parse.h, exposed by otsec.flow._fast) against its
reference otsec.capture.packet.parse_packet: the same tuple or the very same reason string
for hypothesis-made frames of every link type cut at every length, for every frame of the
corpus and of pcaps/, and for annotated byte literals."""

from __future__ import annotations

import ctypes
import mmap
import struct
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.capture import CaptureReader
from otsec.capture import packet as reference
from tests.corpus import captures

fast = pytest.importorskip("otsec.flow._fast", reason="compiled flow layer not built")

LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276)
TPIDS = (0x8100, 0x88A8, 0x9100)
PCAPS = sorted((Path(__file__).resolve().parents[1] / "pcaps").glob("*.pcap*"))
FUZZ = settings(max_examples=300, deadline=None)
GUARDED_CAPACITY = 1 << 20   # beyond any snaplen in the corpus
PROT_NONE = 0                # mprotect(2): no access (the mmap module names only the others)


@cache
def guarded_area():
    """A readable area followed by a PROT_NONE page: a frame copied to its very end makes
    any read past the frame's last byte a segmentation fault instead of a silent success."""
    area = mmap.mmap(-1, GUARDED_CAPACITY + mmap.PAGESIZE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(base + GUARDED_CAPACITY, mmap.PAGESIZE, PROT_NONE) == 0
    return memoryview(area)


def at_guard_page(frame):
    assert len(frame) <= GUARDED_CAPACITY
    area = guarded_area()
    start = GUARDED_CAPACITY - len(frame)
    area[start:GUARDED_CAPACITY] = frame
    return area[start:GUARDED_CAPACITY]


def agree(linktype, frame):
    """Asserts both twins give the same answer (reasons: the same object), also with the
    frame ending at a guard page, and returns it."""
    want = reference.parse_packet(linktype, frame)
    got = fast.parse_packet(linktype, frame)
    assert fast.parse_packet(linktype, at_guard_page(frame)) == got
    if isinstance(want, str):
        assert got is want, (linktype, frame.hex())
    else:
        assert type(got) is tuple and got == want, (linktype, frame.hex(), got, want)
        assert all(type(a) is type(b) for a, b in zip(got, want)), (got, want)
    return got


def agree_on_every_prefix(linktype, frame):
    for cut in range(len(frame) + 1):
        agree(linktype, frame[:cut])


# -- structured frames: valid headers with drawn (often wrong) lengths, offsets, versions --

def u16(value):
    return value.to_bytes(2, "big")


def mostly(value, other):
    """``value`` four times in five, else something from ``other``: most drawn frames then
    get past the link and IP checks, so the deeper ones are reached too."""
    return st.integers(0, 4).flatmap(lambda pick: other if pick == 0 else st.just(value))


PROTOS = st.sampled_from((6, 6, 6, 17, 17, 1, 58, 0, 44))   # mostly TCP/UDP
BYTE = st.integers(0, 255)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def transport(draw, proto):
    payload = draw(st.binary(max_size=24))
    ports = (draw(U16), draw(U16))
    if proto == 6:
        words = draw(mostly(5, st.integers(0, 15)))
        header = struct.pack("!HHIIBBHHH", *ports, draw(U32), draw(U32), words << 4, draw(BYTE),
                             8192, 0, 0)
        return header + bytes(max(0, words * 4 - 20)) + payload
    if proto == 17:
        true_length = 8 + len(payload)
        odd = st.sampled_from((0, 7, 8, 9)) | st.integers(0, true_length + 8) | U16
        length = draw(mostly(true_length, odd))
        return struct.pack("!HHHH", *ports, length, 0) + payload
    return payload


@st.composite
def ipv4(draw):
    proto = draw(PROTOS)
    body = draw(transport(proto))
    ihl = draw(mostly(5, st.integers(0, 15)))
    options = bytes(max(0, ihl * 4 - 20))
    true_total = 20 + len(options) + len(body)
    odd = st.sampled_from((0, 20)) | st.integers(0, true_total + 8) | U16
    total = draw(mostly(true_total, odd))
    frag = draw(mostly(0x4000, st.sampled_from((0, 0x2000, 0x0001, 0x8000)) | U16))
    version = draw(mostly(4, st.integers(0, 15)))
    return struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, total, 1, frag, 64, proto, 0,
                       bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))) + options + body


@st.composite
def ipv6(draw):
    proto = draw(PROTOS)
    body = draw(transport(proto))
    chain = draw(st.lists(st.sampled_from((0, 43, 60, 44)), max_size=3))
    extensions, next_header = b"", proto
    for kind in reversed(chain):
        if kind == 44:   # fragment: mostly atomic (offset 0, M 0), reserved bits set sometimes
            field = draw(mostly(0, st.sampled_from((1, 2, 4, 6, 8, 0xFFF8)) | U16))
            header = struct.pack("!BBHI", next_header, 0, field, 7)
        else:
            words = draw(st.integers(0, 2))
            header = bytes((next_header, words)) + bytes(6 + 8 * words)
        extensions, next_header = header + extensions, kind
    true_plen = len(extensions) + len(body)
    plen = draw(mostly(true_plen, st.just(0) | st.integers(0, true_plen + 16)))
    version = draw(mostly(6, st.integers(0, 15)))
    return struct.pack("!IHBB16s16s", version << 28, plen, next_header, 64,
                       bytes(15) + b"\x01", bytes(15) + b"\x02") + extensions + body


@st.composite
def link_frames(draw):
    """(linktype, frame): a link header carrying a drawn IP packet, some bytes mutated."""
    linktype = draw(st.sampled_from(LINKTYPES))
    version = {228: 4, 229: 6}.get(linktype, draw(st.sampled_from((4, 6))))
    packet = draw(mostly(version, st.sampled_from((4, 6))).flatmap(
        lambda v: ipv4() if v == 4 else ipv6()))
    if version == 4:
        ethertype, family = 0x0800, 2
    else:
        ethertype, family = 0x86DD, draw(st.sampled_from((24, 28, 30)))
    types = draw(st.lists(st.sampled_from(TPIDS), max_size=3))
    types.append(draw(mostly(ethertype, st.sampled_from((0x0800, 0x86DD, 0x0806, 0x8892)) | U16)))
    tags = b"".join(u16(5) + u16(t) for t in types[1:])   # TCI then the next type
    if linktype == 1:
        header = bytes.fromhex("020000000002" "020000000001") + u16(types[0]) + tags
    elif linktype == 113:
        addrlen = draw(mostly(6, U16))
        header = struct.pack("!HHH8sH", 0, 1, addrlen, bytes(range(1, 9)), types[0]) + tags
    elif linktype == 276:
        addrlen = draw(mostly(6, BYTE))
        header = struct.pack("!HHIHBB8s", types[0], 0, 3, 1, 0, addrlen, bytes(range(1, 9))) + tags
    elif linktype in (0, 108):
        family = draw(mostly(family, st.sampled_from((2, 24, 28, 30, 0x1000000)) | U32))
        header = struct.pack(draw(st.sampled_from(("<I", ">I"))), family)
    else:
        header = b""
    frame = bytearray(header + packet + draw(st.binary(max_size=8)))
    for _ in range(draw(mostly(0, st.integers(1, 3)))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(BYTE)
    return linktype, bytes(frame)


@FUZZ
@given(linktype=st.sampled_from(LINKTYPES + (147, -1)), frame=st.binary(max_size=120))
def test_random_bytes_agree(linktype, frame):
    agree(linktype, frame)


@FUZZ
@given(sample=link_frames())
def test_structured_frames_agree_at_every_length(sample):
    agree_on_every_prefix(*sample)


@FUZZ
@given(linktype=st.integers(-2**70, 2**70), frame=st.binary(max_size=40))
def test_any_integer_linktype_agrees(linktype, frame):
    agree(linktype, frame)


# -- real captures ------------------------------------------------------------------------

def agree_on_capture(path):
    reader = CaptureReader(path)
    parsed = sum(isinstance(agree(linktype, frame), tuple) for _, _, linktype, frame in reader)
    assert reader.packets > 0 and parsed > 0, path


@pytest.mark.parametrize("path", captures())
def test_every_corpus_frame_agrees(path):
    agree_on_capture(path)


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_every_example_pcap_frame_agrees(path):
    agree_on_capture(path)


# -- annotated literals -------------------------------------------------------------------

MAC_1, MAC_2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")

VLAN_STACKED_TCP = bytes.fromhex(
    "020000000002" "020000000001"  # dst, src MAC
    "88a8" "0064"                  # 802.1ad S-tag, VLAN 100
    "8100" "0005"                  # 802.1Q C-tag, VLAN 5
    "0800"                         # IPv4
    "45" "00" "002d"               # version 4, IHL 5; TOS; total length 45 = 20 + 20 + 5
    "1234" "4000"                  # id; DF, offset 0
    "40" "06" "0000"               # TTL 64; TCP; checksum
    "0a000001" "0a000002"          # 10.0.0.1 -> 10.0.0.2
    "c000" "01f6"                  # sport 49152, dport 502
    "00000001" "00000002"          # seq 1, ack 2
    "50" "18" "2000" "0000" "0000"  # data offset 5; PSH|ACK; window; checksum; urgent
    "68656c6c6f"                   # "hello"
    "0000"                         # Ethernet padding: past the IP length, not payload
)

IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT = bytes.fromhex(
    "020000000002" "020000000001" "86dd"  # dst, src MAC; IPv6
    "60000000" "001b" "00" "40"    # version 6; payload length 27 = 8 + 8 + 8 + 3; HBH; hop 64
    "20010db8000000000000000000000001"  # 2001:db8::1
    "20010db8000000000000000000000002"  # 2001:db8::2
    "2c" "00" "010400000000"       # hop-by-hop: next = fragment, 8 bytes, PadN
    "11" "00" "0000" "12345678"    # fragment: next = UDP, offset 0, M 0 (atomic), id
    "14e9" "bac0" "000b" "0000"    # sport 5353, dport 47808, length 11, checksum
    "616263"                       # "abc"
)

SLL2_UDP = bytes.fromhex(
    "0800" "0000" "00000003"       # protocol IPv4; reserved; ifindex 3
    "0001" "00" "06"               # ARPHRD_ETHER; to us; address length 6
    "0200000000010000"             # sender MAC, padded to 8
    "45000024" "00000000" "40110000"  # IPv4, total 36; no fragment; TTL 64, UDP
    "c0a8010a" "c0a80114"          # 192.168.1.10 -> 192.168.1.20
    "00a1" "9c40" "000c" "0000"    # sport 161, dport 40000, UDP length 12 (< IP's 16)
    "01020304" "ffffffff"          # payload; then bytes IP counts but UDP does not
)

BSD_NULL_BIG_ENDIAN_TSO = bytes.fromhex(
    "00000002"                     # AF_INET written big-endian (the LE read has high bits)
    "4500" "0000"                  # IPv4, total length 0: TSO, take what was captured
    "00004000" "40060000"          # DF; TTL 64, TCP
    "7f000001" "7f000001"          # 127.0.0.1 -> 127.0.0.1
    "0066" "d431"                  # sport 102 (S7), dport 54321
    "ffffffff" "00000000"          # seq 2**32 - 1, ack 0
    "60" "02" "ffff0000" "0000"    # data offset 6 (one option word); SYN
    "020405b4"                     # MSS option
    "0300001602"                   # payload: TPKT start
)

LITERALS = {
    "vlan_stacked_ipv4_tcp": (1, VLAN_STACKED_TCP, (
        MAC_1, MAC_2, bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)),
        6, 49152, 502, 0x18, 1, 2, b"hello")),
    "ipv6_hop_by_hop_atomic_fragment": (1, IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, (
        MAC_1, MAC_2, bytes.fromhex("20010db8" + "00" * 11 + "01"),
        bytes.fromhex("20010db8" + "00" * 11 + "02"), 17, 5353, 47808, 0, 0, 0, b"abc")),
    "sll2_udp_length_wins": (276, SLL2_UDP, (
        MAC_1, None, bytes((192, 168, 1, 10)), bytes((192, 168, 1, 20)),
        17, 161, 40000, 0, 0, 0, bytes.fromhex("01020304"))),
    "bsd_null_big_endian_tso": (0, BSD_NULL_BIG_ENDIAN_TSO, (
        None, None, bytes((127, 0, 0, 1)), bytes((127, 0, 0, 1)),
        6, 102, 54321, 0x02, 0xFFFFFFFF, 0, bytes.fromhex("0300001602"))),
}


@pytest.mark.parametrize("name", LITERALS)
def test_literal_frames(name):
    linktype, frame, want = LITERALS[name]
    assert reference.parse_packet(linktype, frame) == want
    assert agree(linktype, frame) == want
    agree_on_every_prefix(linktype, frame)


def patch(frame, offset, hex_bytes):
    """``frame`` with the bytes at ``offset`` replaced by ``hex_bytes``."""
    new = bytes.fromhex(hex_bytes)
    return frame[:offset] + new + frame[offset + len(new):]


# Offsets: VLAN_STACKED_TCP has IPv4 at 22, TCP at 42; IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT has
# IPv6 at 14, hop-by-hop at 54, fragment at 62, UDP at 70; SLL2_UDP has IPv4 at 20, UDP at 40;
# BSD_NULL_BIG_ENDIAN_TSO has IPv4 at 4, TCP at 24.
V4_PACKET, V6_PACKET = VLAN_STACKED_TCP[22:67], IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT[14:]
EDGE_CASES = {   # each boundary of the reference, checked at every length of the frame
    "ipv4_total_zero_takes_padding": (1, patch(VLAN_STACKED_TCP, 24, "0000")),
    "ipv4_total_below_ihl": (1, patch(VLAN_STACKED_TCP, 24, "0013")),
    "ipv4_options_past_capture": (1, patch(patch(VLAN_STACKED_TCP, 22, "4f"), 24, "00ff")),
    "ipv4_ihl_below_5": (1, patch(VLAN_STACKED_TCP, 22, "44")),
    "ipv4_more_fragments": (1, patch(VLAN_STACKED_TCP, 28, "2000")),
    "ipv4_fragment_offset": (1, patch(VLAN_STACKED_TCP, 28, "0001")),
    "ipv4_reserved_flag_only": (1, patch(VLAN_STACKED_TCP, 28, "8000")),
    "tcp_offset_below_5": (1, patch(VLAN_STACKED_TCP, 54, "40")),
    "tcp_offset_past_capture": (1, patch(VLAN_STACKED_TCP, 54, "f0")),
    "tcp_options_past_ip_length": (0, patch(patch(BSD_NULL_BIG_ENDIAN_TSO, 6, "0028"), 36, "60")),
    "old_qinq_tpid": (1, patch(VLAN_STACKED_TCP, 12, "9100")),
    "vlan_to_arp": (1, patch(VLAN_STACKED_TCP, 20, "0806")),
    "udp_length_8_empties_payload": (276, patch(SLL2_UDP, 44, "0008")),
    "udp_length_7_ignored": (276, patch(SLL2_UDP, 44, "0007")),
    "udp_length_past_ip_ignored": (276, patch(SLL2_UDP, 44, "0100")),
    "udp_header_past_ip_length": (276, patch(SLL2_UDP, 22, "001a")),
    "sll2_address_not_ethernet": (276, patch(SLL2_UDP, 11, "04")),
    "sll_vlan_tagged": (113, bytes.fromhex("0000" "0001" "0006" "0200000000010000" "8100"
                                           "0005" "0800") + SLL2_UDP[20:]),
    "sll_address_not_ethernet": (113, bytes.fromhex("0000" "0001" "0004" "0200000000010000"
                                                    "0800") + SLL2_UDP[20:]),
    "ipv6_payload_length_zero": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 18, "0000")),
    "ipv6_version_wrong": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 14, "40")),
    "ipv6_routing_header": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 20, "2b")),
    "ipv6_dest_options_header": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 20, "3c")),
    "ipv6_fragment_first": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 20, "2c")),
    "ipv6_extension_past_payload_length": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 18, "0004")),
    "ipv6_extension_past_capture": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 55, "ff")),
    "ipv6_fragment_reserved_bits_atomic": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 64, "0006")),
    "ipv6_more_fragments": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 64, "0001")),
    "ipv6_fragment_offset": (1, patch(IPV6_HOP_BY_HOP_ATOMIC_FRAGMENT, 64, "0008")),
    "null_little_endian_darwin_ipv6": (0, bytes.fromhex("1e000000") + V6_PACKET),
    "loop_big_endian_freebsd_ipv6": (108, bytes.fromhex("0000001c") + V6_PACKET),
    "loop_netbsd_ipv6": (108, bytes.fromhex("00000018") + V6_PACKET),
    "null_unknown_family": (0, bytes.fromhex("07000000") + V4_PACKET),
    "raw_ipv4": (101, V4_PACKET),
    "raw_bsd12_ipv6": (12, V6_PACKET),
    "raw_bsd14_ipv4": (14, V4_PACKET),
    "raw_version_5": (101, patch(V4_PACKET, 0, "55")),
    "linktype_228_ipv4": (228, V4_PACKET),
    "linktype_228_given_ipv6": (228, V6_PACKET),
    "linktype_229_ipv6": (229, V6_PACKET),
    "linktype_229_given_ipv4": (229, V4_PACKET),
    "unsupported_linktype": (147, V4_PACKET),
}


@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_cases_agree_at_every_length(name):
    agree_on_every_prefix(*EDGE_CASES[name])


@pytest.mark.parametrize("name", LITERALS)
def test_buffer_objects_parse_like_bytes(name):
    linktype, frame, want = LITERALS[name]
    for view in (bytearray(frame), memoryview(frame), memoryview(b"xx" + frame)[2:]):
        got = fast.parse_packet(linktype, view)
        assert got == want and type(got[-1]) is bytes


def test_reasons_are_the_reference_objects():
    assert fast.parse_packet(1, b"") is reference.TRUNCATED
    assert fast.parse_packet(147, b"") is reference.UNSUPPORTED_LINKTYPE
    assert fast.parse_packet(101, b"\x50") is reference.BAD_HEADER
    assert fast.parse_packet(0, b"\x07\x00\x00\x00") is reference.NON_IP
    assert fast.parse_packet(1, VLAN_STACKED_TCP[:28] + b"\x20\x00" + VLAN_STACKED_TCP[30:]) \
        is reference.IP_FRAGMENT


@pytest.mark.parametrize("args", [(), (1,), (1, b"", 2), ("1", b""), (1.0, b""), (1, "ab"),
                                  (1, None), (1, [1, 2])])
def test_wrong_arguments_raise_type_error(args):
    with pytest.raises(TypeError):
        fast.parse_packet(*args)
