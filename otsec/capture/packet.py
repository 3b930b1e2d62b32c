"""Link, IP and TCP/UDP header parsing: one frame in, one flat tuple (or a reason) out.

Link layers (LINKTYPE_* numbers from the pcap registry)::

    1   Ethernet   dst mac(6) src mac(6) ethertype(2), then any stack of 4-byte tags
                   (802.1Q 0x8100, 802.1ad 0x88a8, old QinQ 0x9100): TPID(2) TCI(2)
    113 Linux SLL  pkttype(2) arphrd(2) addrlen(2) addr(8) protocol(2)            = 16
    276 Linux SLL2 protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1)
                   addrlen(1) addr(8)                                             = 20
    0   BSD NULL   address family(4) in the capturing host's byte order
    108 OpenBSD LOOP  the same, always big-endian (told apart by the same swap test)
    101, 12, 14  raw IP, version from the first nibble; 228 raw IPv4; 229 raw IPv6

IPv4 (20..60 bytes) and IPv6 (40 bytes + extension headers)::

    IPv4 ver|ihl(1) tos(1) total length(2) id(2) flags|frag offset(2) ttl(1) proto(1)
         checksum(2) src(4) dst(4) options
    IPv6 ver|tc|flow(4) payload length(2) next header(1) hop limit(1) src(16) dst(16)
         hop-by-hop 0 / routing 43 / dest options 60: next(1) len(1) = (len+1)*8 bytes
         fragment 44: next(1) reserved(1) offset<<3|res|M(2) id(4)

TCP: sport(2) dport(2) seq(4) ack(4) data offset<<4(1) flags(1) ...
UDP: sport(2) dport(2) length(2) checksum(2).

The payload is cut at the IP total length (so Ethernet padding never reaches TCP) and at
what was captured (a snaplen-cut packet yields the part that is there). Ethernet + IPv4 +
TCP costs three ``unpack_from`` calls and two function calls; short headers are detected
by the ``struct.error``/``IndexError`` they raise, so the hot path carries no length test.
"""

from __future__ import annotations

import struct

# -- reasons a frame yields no IP packet (counted by the engine) ------------------------
NON_IP = "non_ip"                      # ARP, LLDP, PROFINET RT/DCP, STP...: normal, not an error
IP_FRAGMENT = "ip_fragment"            # any IPv4/IPv6 fragment: not reassembled
TRUNCATED = "truncated"                # the capture ends inside a header
BAD_HEADER = "bad_header"              # wrong IP version, IHL/TCP offset too small, lengths disagree
UNSUPPORTED_LINKTYPE = "unsupported_linktype"
REASONS = (NON_IP, IP_FRAGMENT, TRUNCATED, BAD_HEADER, UNSUPPORTED_LINKTYPE)
#: Reasons that mean the packet itself is malformed (the others are expected traffic).
MALFORMED_REASONS = (TRUNCATED, BAD_HEADER)

# -- link types -------------------------------------------------------------------------
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD12 = 12
LINKTYPE_RAW_BSD14 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
RAW_IP_LINKTYPES = frozenset((LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14))
LOOPBACK_LINKTYPES = frozenset((LINKTYPE_NULL, LINKTYPE_LOOP))

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
BSD_AF_INET = 2
BSD_AF_INET6 = frozenset((24, 28, 30))  # NetBSD/OpenBSD, FreeBSD, Darwin
ARPHRD_ADDR_LEN_ETHER = 6

# -- IP ---------------------------------------------------------------------------------
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV6_FRAGMENT = 44
IPV6_SKIPPED_EXT = frozenset((0, 43, 60))   # hop-by-hop, routing, destination options
IPV4_FRAG_MASK = 0x3FFF                     # MF flag + fragment offset
IPV6_FRAG_MASK = 0xFFF9                     # fragment offset + M flag (not the reserved bits)

_ETH = struct.Struct("!6s6sH").unpack_from            # dst, src, ethertype
_U16 = struct.Struct("!H").unpack_from
_SLL = struct.Struct("!4xH8sH").unpack_from            # addrlen, addr, protocol
_SLL2 = struct.Struct("!H6x2xxB8s").unpack_from        # protocol, addrlen, addr
_AF_LE = struct.Struct("<I").unpack_from
_AF_BE = struct.Struct(">I").unpack_from
_IPV4 = struct.Struct("!BxH2xHxB2x4s4s").unpack_from  # ver|ihl, length, flags|frag, proto, src, dst
_IPV6 = struct.Struct("!B3xHBx16s16s").unpack_from    # ver|tc, payload len, next header, src, dst
_IPV6_FRAG = struct.Struct("!BxH").unpack_from         # next header, offset|M
_TCP = struct.Struct("!HHIIBB").unpack_from            # sport, dport, seq, ack, offset<<4, flags
_UDP = struct.Struct("!HHH").unpack_from               # sport, dport, length

SLL_LEN = 16
SLL2_LEN = 20
NULL_LEN = 4
ETH_LEN = 14
VLAN_TAG_LEN = 4
IPV6_HEADER_LEN = 40


def parse_packet(linktype: int, frame: bytes):
    """Returns ``(src_mac, dst_mac, src_ip, dst_ip, proto, sport, dport, tcp_flags, seq,
    ack, payload)`` or one of :data:`REASONS` when the frame carries no usable IP packet.

    MACs are 6-byte bytes or None (no Ethernet header; SLL gives the sender's only);
    IPs are packed (4 or 16 bytes); ports are 0 off TCP/UDP, flags/seq/ack 0 off TCP;
    payload is the TCP/UDP payload, or the IP payload for any other protocol.
    Never raises for any bytes.
    """
    try:
        if linktype == LINKTYPE_ETHERNET:
            dst_mac, src_mac, ethertype = _ETH(frame, 0)
            if ethertype == ETHERTYPE_IPV4:
                return _ipv4(frame, ETH_LEN, src_mac, dst_mac)
            off = ETH_LEN
        elif linktype == LINKTYPE_LINUX_SLL:
            addrlen, addr, ethertype = _SLL(frame, 0)
            src_mac = addr[:6] if addrlen == ARPHRD_ADDR_LEN_ETHER else None
            dst_mac = None
            off = SLL_LEN
        elif linktype == LINKTYPE_LINUX_SLL2:
            ethertype, addrlen, addr = _SLL2(frame, 0)
            src_mac = addr[:6] if addrlen == ARPHRD_ADDR_LEN_ETHER else None
            dst_mac = None
            off = SLL2_LEN
        elif linktype in LOOPBACK_LINKTYPES:
            (family,) = _AF_LE(frame, 0)
            if family & 0xFFFF0000:   # written big-endian: families are small numbers
                (family,) = _AF_BE(frame, 0)
            if family == BSD_AF_INET:
                return _ipv4(frame, NULL_LEN, None, None)
            if family in BSD_AF_INET6:
                return _ipv6(frame, NULL_LEN, None, None)
            return NON_IP
        elif linktype in RAW_IP_LINKTYPES:
            version = frame[0] >> 4
            if version == 4:
                return _ipv4(frame, 0, None, None)
            if version == 6:
                return _ipv6(frame, 0, None, None)
            return BAD_HEADER
        elif linktype == LINKTYPE_IPV4:
            return _ipv4(frame, 0, None, None)
        elif linktype == LINKTYPE_IPV6:
            return _ipv6(frame, 0, None, None)
        else:
            return UNSUPPORTED_LINKTYPE
        while ethertype in VLAN_TPIDS:
            (ethertype,) = _U16(frame, off + 2)
            off += VLAN_TAG_LEN
        if ethertype == ETHERTYPE_IPV4:
            return _ipv4(frame, off, src_mac, dst_mac)
        if ethertype == ETHERTYPE_IPV6:
            return _ipv6(frame, off, src_mac, dst_mac)
        return NON_IP
    except (struct.error, IndexError):
        return TRUNCATED


def _overrun(frame: bytes, pos: int) -> str:
    """Why a header ending at ``pos`` is past the usable end: capture cut or lying length."""
    return TRUNCATED if pos > len(frame) else BAD_HEADER


def _ipv4(frame, off, src_mac, dst_mac):
    ver_ihl, total, frag, proto, src, dst = _IPV4(frame, off)
    ihl = (ver_ihl & 0x0F) << 2
    if ver_ihl >> 4 != 4 or ihl < 20:
        return BAD_HEADER
    captured = len(frame)
    if total:
        if total < ihl:
            return BAD_HEADER
        end = off + total
        if end > captured:
            end = captured
    else:   # 0 = length left to TSO offload by the capturing host: take what is there
        end = captured
    if frag & IPV4_FRAG_MASK:
        return IP_FRAGMENT
    off += ihl
    if off > end:
        return TRUNCATED
    return _transport(frame, off, end, proto, src_mac, dst_mac, src, dst)


def _ipv6(frame, off, src_mac, dst_mac):
    ver, plen, proto, src, dst = _IPV6(frame, off)
    if ver >> 4 != 6:
        return BAD_HEADER
    off += IPV6_HEADER_LEN
    captured = len(frame)
    end = off + plen if plen else captured   # 0: jumbogram or TSO, take what is there
    if end > captured:
        end = captured
    while True:
        if proto in IPV6_SKIPPED_EXT:
            proto = frame[off]
            off += (frame[off + 1] + 1) << 3
        elif proto == IPV6_FRAGMENT:
            proto, frag = _IPV6_FRAG(frame, off)
            if frag & IPV6_FRAG_MASK:
                return IP_FRAGMENT
            off += 8   # atomic fragment (offset 0, M=0): the whole packet follows
        else:
            break
        if off > end:
            return _overrun(frame, off)
    return _transport(frame, off, end, proto, src_mac, dst_mac, src, dst)


def _transport(frame, off, end, proto, src_mac, dst_mac, src, dst):
    if proto == IPPROTO_TCP:
        sport, dport, seq, ack, data_off, flags = _TCP(frame, off)
        header = (data_off >> 4) << 2
        if header < 20:
            return BAD_HEADER
        data = off + header
        if data > end:
            return _overrun(frame, data)
        return (src_mac, dst_mac, src, dst, proto, sport, dport, flags, seq, ack, frame[data:end])
    if proto == IPPROTO_UDP:
        sport, dport, length = _UDP(frame, off)
        data = off + 8
        if data > end:
            return _overrun(frame, data)
        if 8 <= length and off + length < end:   # UDP says less than IP: trust UDP
            end = off + length
        return (src_mac, dst_mac, src, dst, proto, sport, dport, 0, 0, 0, frame[data:end])
    return (src_mac, dst_mac, src, dst, proto, 0, 0, 0, 0, 0, frame[off:end])
