"""parse_packet: scapy-built frames compared field by field, every reason, every prefix,
agreement with dpkt and with tshark's counts on the real corpus, and fuzzing."""

from __future__ import annotations

import socket
import struct
from collections import Counter

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

from otsec.capture import CaptureReader, parse_packet
from otsec.capture.packet import (
    BAD_HEADER,
    IP_FRAGMENT,
    MALFORMED_REASONS,
    NON_IP,
    REASONS,
    TRUNCATED,
    UNSUPPORTED_LINKTYPE,
)
from tests.corpus import captures, truth

FIELDS = ("src_mac", "dst_mac", "src_ip", "dst_ip", "proto", "sport", "dport",
          "tcp_flags", "seq", "ack", "payload")
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276)
MAC_A, MAC_B = "02:00:0a:00:00:01", "02:00:0a:00:00:02"
SLL_ADDR = bytes.fromhex("02000a0000010000")


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def eth(**fields):
    """Ethernet with fixed addresses (scapy would otherwise look routes up)."""
    return Ether(src=MAC_A, dst=MAC_B, **fields)


def expected(pkt, src_mac=None, dst_mac=None):
    """The 11 fields read off scapy's own dissection of ``pkt``."""
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    family = socket.AF_INET if IP in pkt else socket.AF_INET6
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP] if UDP in pkt else None
    if IP in pkt:
        proto = ip.proto
    else:   # the last next-header of the extension chain
        layer = ip
        while hasattr(layer, "nh"):
            proto, layer = layer.nh, layer.payload
    return {
        "src_mac": src_mac, "dst_mac": dst_mac,
        "src_ip": socket.inet_pton(family, ip.src), "dst_ip": socket.inet_pton(family, ip.dst),
        "proto": proto,
        "sport": l4.sport if l4 else 0, "dport": l4.dport if l4 else 0,
        "tcp_flags": int(l4.flags) if TCP in pkt else 0,
        "seq": l4.seq if TCP in pkt else 0, "ack": l4.ack if TCP in pkt else 0,
        "payload": bytes(l4.payload) if l4 else bytes(layer if IP not in pkt else ip.payload),
    }


def parsed(linktype, frame):
    result = parse_packet(linktype, frame)
    assert isinstance(result, tuple), result
    return dict(zip(FIELDS, result))


TCP_SEG = TCP(sport=49152, dport=502, seq=0xDEADBEEF, ack=0x01020304, flags="PA",
              options=[("MSS", 1460), ("NOP", None), ("NOP", None)]) / b"\x00\x01\x00\x00\x00\x06\x01\x03"
V4 = IP(src="10.0.0.1", dst="10.1.2.3")
V6 = IPv6(src="fd00::1", dst="fd00::2:3")

ETHERNET_CASES = {
    "ipv4_tcp": eth() / V4 / TCP_SEG,
    "ipv4_options_udp": eth() / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_NOP()] * 8
                                   ) / UDP(sport=5353, dport=53) / b"query",
    "ipv4_df_not_fragment": eth() / IP(flags="DF") / TCP_SEG,
    "ipv4_icmp": eth() / V4 / ICMP() / b"ping",
    "dot1q": eth() / Dot1Q(vlan=10) / V4 / TCP_SEG,
    "qinq_88a8": eth() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / V4 / TCP_SEG,
    "qinq_9100": eth(type=0x9100) / Dot1Q(vlan=7) / Dot1Q(vlan=8) / V4 / TCP_SEG,
    "ipv6_tcp": eth() / V6 / TCP_SEG,
    "ipv6_ext_chain_udp": eth() / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(
        addresses=["fd00::9"]) / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(offset=0, m=0) / UDP(
        sport=4840, dport=50000) / b"atomic fragment",
    "ipv6_icmpv6": eth() / V6 / ICMPv6EchoRequest(data=b"hello"),
}


@pytest.mark.parametrize("name", ETHERNET_CASES)
def test_ethernet_frames_field_by_field(name):
    pkt = ETHERNET_CASES[name]
    assert parsed(1, bytes(pkt)) == expected(pkt, mac(MAC_A), mac(MAC_B))


def test_ethernet_padding_never_reaches_the_payload():
    pkt = eth() / V4 / TCP(flags="A")          # 54 bytes, padded to 60
    assert parsed(1, bytes(pkt) + b"\xaa" * 6)["payload"] == b""
    pkt = eth() / V6 / UDP(sport=1, dport=2) / b"x"
    assert parsed(1, bytes(pkt) + b"\xaa" * 9)["payload"] == b"x"


def test_udp_length_shorter_than_ip_wins():
    pkt = eth() / V4 / UDP(sport=1, dport=2, len=8 + 3) / b"abcdef"
    assert parsed(1, bytes(pkt))["payload"] == b"abc"


def test_ipv4_total_length_zero_is_tso():
    frame = bytearray(bytes(eth() / V4 / TCP_SEG))
    frame[16:18] = b"\0\0"       # IPv4 total length left to the NIC
    assert parsed(1, bytes(frame))["payload"] == bytes(TCP_SEG.payload)


def test_snaplen_cut_keeps_the_captured_part_of_the_payload():
    frame = bytes(eth() / V4 / TCP(options=[]) / (b"P" * 100))
    assert parsed(1, frame[:54 + 5])["payload"] == b"PPPPP"


@pytest.mark.parametrize("linktype,header,src_mac", [
    (113, bytes(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=SLL_ADDR, proto=0x0800)), SLL_ADDR[:6]),
    (113, bytes(CookedLinux(pkttype=0, lladdrtype=772, lladdrlen=0, src=b"\0" * 8, proto=0x0800)), None),
    (276, bytes(CookedLinuxV2(proto=0x0800, lladdrtype=1, lladdrlen=6, src=SLL_ADDR)), SLL_ADDR[:6]),
    (0, struct.pack("<I", 2), None),
    (0, struct.pack(">I", 2), None),
    (108, struct.pack(">I", 2), None),
    (101, b"", None), (12, b"", None), (14, b"", None), (228, b"", None),
], ids=["sll", "sll_no_addr", "sll2", "null_le", "null_be", "loop", "raw101", "raw12", "raw14", "ipv4_228"])
def test_other_link_types_ipv4(linktype, header, src_mac):
    pkt = V4 / TCP_SEG
    assert parsed(linktype, header + bytes(pkt)) == expected(pkt, src_mac)


@pytest.mark.parametrize("linktype,header", [
    (113, bytes(CookedLinux(lladdrlen=6, src=SLL_ADDR, proto=0x86DD))),
    (276, bytes(CookedLinuxV2(proto=0x86DD, lladdrlen=6, src=SLL_ADDR))),
    (0, struct.pack("<I", 24)), (0, struct.pack("<I", 28)), (0, struct.pack(">I", 30)),
    (101, b""), (229, b""),
], ids=["sll", "sll2", "null_24", "null_28", "null_30_be", "raw101", "ipv6_229"])
def test_other_link_types_ipv6(linktype, header):
    pkt = V6 / IPv6ExtHdrHopByHop() / TCP_SEG
    src_mac = SLL_ADDR[:6] if linktype in (113, 276) else None
    assert parsed(linktype, header + bytes(pkt)) == expected(pkt, src_mac)


def test_sll_carries_vlan_tags_too():
    frame = bytes(CookedLinux(lladdrlen=6, src=SLL_ADDR, proto=0x8100) / Dot1Q(vlan=3) / V4 / TCP_SEG)
    assert parsed(113, frame)["dport"] == 502


@pytest.mark.parametrize("linktype,frame,reason", [
    (1, bytes(eth() / ARP()), NON_IP),
    (1, bytes(eth(type=0x88CC) / (b"\x02\x07\x04" + b"\0" * 40)), NON_IP),       # LLDP
    (1, bytes(eth(type=0x8892) / (b"\xfe\xfe\x05\x00" + b"\0" * 40)), NON_IP),   # PROFINET DCP
    (1, bytes(eth(type=0x0026) / (b"\x42\x42\x03" + b"\0" * 40)), NON_IP),       # 802.3 + LLC (STP)
    (1, bytes(eth() / Dot1Q(type=0x0806) / ARP()), NON_IP),
    (0, struct.pack("<I", 7) + bytes(V4 / TCP_SEG), NON_IP),
    (113, bytes(CookedLinux(proto=0x0806) / ARP()), NON_IP),
    (1, bytes(eth() / IP(flags="MF") / TCP_SEG), IP_FRAGMENT),
    (1, bytes(eth() / IP(frag=185) / (b"\0" * 40)), IP_FRAGMENT),
    (1, bytes(eth() / V6 / IPv6ExtHdrFragment(offset=0, m=1, nh=6) / TCP_SEG), IP_FRAGMENT),
    (1, bytes(eth() / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=7, m=0, nh=6) / (b"x" * 8)),
     IP_FRAGMENT),
    (1, bytes(eth() / IP(version=5) / TCP_SEG), BAD_HEADER),
    (1, bytes(eth() / IP(ihl=4) / TCP_SEG), BAD_HEADER),
    (1, bytes(eth() / IP(len=19) / TCP_SEG), BAD_HEADER),
    (1, bytes(eth() / IP(len=30) / TCP_SEG), BAD_HEADER),           # TCP header past IP end
    (1, bytes(eth() / V4 / TCP(dataofs=4)), BAD_HEADER),
    (1, bytes(eth() / IPv6(version=4) / TCP_SEG), BAD_HEADER),
    (1, bytes(eth(type=0x0800) / IPv6() / TCP_SEG), BAD_HEADER),    # IPv6 behind the IPv4 ethertype
    (1, bytes(eth() / IPv6(plen=8) / IPv6ExtHdrDestOpt(len=1) / TCP_SEG), BAD_HEADER),
    (101, b"\x70" + b"\0" * 40, BAD_HEADER),                     # IP version 7
    (228, bytes(V6 / TCP_SEG), BAD_HEADER),
    (229, bytes(V4 / TCP_SEG), BAD_HEADER),
    (1, b"\0" * 13, TRUNCATED),
    (101, b"", TRUNCATED),
    (0, b"\x02\0", TRUNCATED),
    (147, bytes(eth() / V4 / TCP_SEG), UNSUPPORTED_LINKTYPE),      # USER0
    (127, bytes(eth() / V4 / TCP_SEG), UNSUPPORTED_LINKTYPE),      # radiotap
])
def test_reasons(linktype, frame, reason):
    assert parse_packet(linktype, frame) == reason


def test_reason_constants():
    assert set(MALFORMED_REASONS) == {TRUNCATED, BAD_HEADER} and set(MALFORMED_REASONS) < set(REASONS)
    assert len(set(REASONS)) == 5


@pytest.mark.parametrize("linktype,frame,headers", [
    (1, bytes(eth() / Dot1Q() / V4 / TCP_SEG), 14 + 4 + 20 + 28),     # TCP: 20 + MSS, NOP, NOP, pad
    (1, bytes(eth() / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP() / b"0123456789"),
     14 + 40 + 8 + 8 + 8),
    (276, bytes(CookedLinuxV2(proto=0x0800) / V4 / UDP() / b"0123456789"), 20 + 20 + 8),
    (0, struct.pack("<I", 2) + bytes(IP(options=[IPOption_NOP()] * 4) / TCP_SEG), 4 + 24 + 28),
], ids=["dot1q_tcp", "ipv6_ext_udp", "sll2_udp", "null_ipv4_options_tcp"])
def test_every_prefix(linktype, frame, headers):
    """A prefix shorter than the headers is TRUNCATED; a longer one keeps the captured payload."""
    full = parsed(linktype, frame)
    assert len(frame) - len(full["payload"]) == headers
    for cut in range(len(frame)):
        result = parse_packet(linktype, frame[:cut])
        if cut < headers:
            assert result == TRUNCATED, cut
        else:
            assert result[:10] == tuple(full.values())[:10] and result[10] == full["payload"][:cut - headers]


# -- real corpus ----------------------------------------------------------------------------

DPKT_LINK = {1: dpkt.ethernet.Ethernet, 113: dpkt.sll.SLL, 0: dpkt.loopback.Loopback}


def dpkt_ip(linktype, frame):
    """dpkt's IP layer and the (src, dst) MACs we should report for this link."""
    link = DPKT_LINK[linktype](frame)
    if linktype == 1:
        return link.data, (link.src, link.dst)
    if linktype == 113:   # SLL: only the sender's address
        return link.data, (link.hdr[:6] if link.hlen == 6 else None, None)
    return link.data, (None, None)


@pytest.mark.corpus
@pytest.mark.parametrize("path", captures())
def test_corpus_agrees_with_dpkt(path):
    """dpkt is the reference parser: every packet gets the same addresses, ports, TCP
    numbers and payload, and our reasons match what dpkt sees."""
    with CaptureReader(path) as reader:
        for number, _, linktype, frame in reader:
            ours = parse_packet(linktype, frame)
            ip, macs = dpkt_ip(linktype, frame)
            if ours == NON_IP:
                assert not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)), number
                continue
            if ours == IP_FRAGMENT:
                assert isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset), number
                continue
            got = dict(zip(FIELDS, ours))
            l4 = ip.data
            proto = ip.p    # for IP6, dpkt sets p to the header after the extension chain
            assert (got["src_mac"], got["dst_mac"]) == macs, number
            assert (got["src_ip"], got["dst_ip"], got["proto"]) == (ip.src, ip.dst, proto), number
            if isinstance(l4, dpkt.tcp.TCP):
                assert (got["sport"], got["dport"], got["seq"], got["ack"], got["tcp_flags"]) == (
                    l4.sport, l4.dport, l4.seq, l4.ack, l4.flags & 0xFF), number  # dpkt adds the NS bit
                assert got["payload"] == l4.data, number
            elif isinstance(l4, dpkt.udp.UDP):
                assert (got["sport"], got["dport"]) == (l4.sport, l4.dport), number
                assert got["payload"] == l4.data[:l4.ulen - 8], number
            else:
                assert got["sport"] == got["dport"] == 0 and got["payload"] == bytes(l4), number


@pytest.mark.corpus
@pytest.mark.parametrize("path", captures())
def test_corpus_counts_match_tshark(path):
    """TCP and UDP packet counts equal tshark's frame.protocols counts; IP-bearing packets
    equal its ip + ipv6 frames. Exception: tshark reassembles IP fragments and shows the
    datagram's UDP at the last fragment; we count fragments instead (not reassembled)."""
    counts = Counter()
    last_fragments = 0
    with CaptureReader(path) as reader:
        for _, _, linktype, frame in reader:
            result = parse_packet(linktype, frame)
            counts[result if isinstance(result, str) else result[4]] += 1
            if result == IP_FRAGMENT:
                ip, _ = dpkt_ip(linktype, frame)
                last_fragments += not ip.mf
    frames = truth(path)["protocol_frames"]
    assert not any(counts[r] for r in MALFORMED_REASONS + (UNSUPPORTED_LINKTYPE,))
    assert counts[6] == frames.get("tcp", 0)
    assert counts[17] + last_fragments == frames.get("udp", 0)
    ip_packets = reader.packets - counts[NON_IP]
    assert ip_packets == frames.get("ip", 0) + frames.get("ipv6", 0)


# -- fuzz ------------------------------------------------------------------------------------


def check_result(result, frame):
    if isinstance(result, str):
        assert result in REASONS
        return
    assert len(result) == 11
    src_mac, dst_mac, src_ip, dst_ip, proto, sport, dport, flags, seq, ack, payload = result
    assert src_mac is None or len(src_mac) == 6
    assert dst_mac is None or len(dst_mac) == 6
    assert len(src_ip) == len(dst_ip) in (4, 16)
    assert 0 <= proto < 256 and 0 <= sport < 65536 and 0 <= dport < 65536 and 0 <= flags < 256
    assert isinstance(payload, bytes) and payload in frame


FUZZ = settings(max_examples=300, deadline=None)
SEED_FRAMES = [(1, bytes(p)) for p in ETHERNET_CASES.values()] + [
    (113, bytes(CookedLinux(lladdrlen=6, src=SLL_ADDR) / V4 / TCP_SEG)),
    (276, bytes(CookedLinuxV2(proto=0x86DD) / V6 / IPv6ExtHdrDestOpt() / TCP_SEG)),
    (0, struct.pack("<I", 30) + bytes(V6 / TCP_SEG)),
    (101, bytes(V4 / UDP() / b"x")),
]


@FUZZ
@given(linktype=st.sampled_from(LINKTYPES + (147,)), frame=st.binary(max_size=120))
def test_fuzz_random_frames(linktype, frame):
    check_result(parse_packet(linktype, frame), frame)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_frames(data):
    linktype, frame = data.draw(st.sampled_from(SEED_FRAMES))
    frame = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    frame = bytes(frame[:data.draw(st.integers(0, len(frame)))])
    check_result(parse_packet(linktype, frame), frame)


@FUZZ
@given(sport=st.integers(0, 65535), dport=st.integers(0, 65535), seq=st.integers(0, 2**32 - 1),
       ack=st.integers(0, 2**32 - 1), flags=st.integers(0, 255), payload=st.binary(max_size=64),
       padding=st.binary(max_size=20), tags=st.lists(st.sampled_from([Dot1Q, Dot1AD]), max_size=3))
def test_fuzz_valid_tcp_frames_match_scapy(sport, dport, seq, ack, flags, payload, padding, tags):
    pkt = eth()
    for tag in tags:
        pkt = pkt / tag(vlan=5)
    pkt = pkt / V4 / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags) / payload
    assert parsed(1, bytes(pkt) + padding) == expected(pkt, mac(MAC_A), mac(MAC_B))
