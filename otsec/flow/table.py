"""The bidirectional flow table: connections, their reassembly and their decoder session.

Each packet is looked up once: the table keeps the 5-tuple of both directions pointing at
the same entry, with a flag saying whether that direction is client → server. A new
connection's protocol is detected by content (the decoders' probes, trying the ones
registered for the server port first), so Modbus on a non-standard port is found and
non-Modbus bytes on port 502 are left alone.

State is bounded: idle connections time out, a cap on the number of connections
evicts the least recently active ones, and reassembly/session buffers have their own
caps. Every connection ends as one :class:`otsec.model.Flow` record.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import socket
import struct
import sys
from operator import attrgetter
from typing import Callable

from otsec.capture import parse_packet
from otsec.decoders.base import NEED_MORE, Decoder
from otsec.flow.reassembly import Stream
from otsec.flow.services import service_name
from otsec.flow.session import Health, Session
from otsec.model import Event, Flow

TCP, UDP = 6, 17
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
#: Windows of a connection's first bytes tried for protocol detection before it is
#: labelled by its port only (a capture may start in the middle of a message).
DETECTION_ATTEMPTS = 8
#: Bytes a direction may collect while waiting for a recognisable message start,
#: and while waiting for the rest of a recognised first message off its usual port.
DETECTION_WINDOW = 64
MAX_MESSAGE_AWAITED = 16 * 1024
#: Segment ends remembered for the bytes held while awaiting detection.
MAX_HELD_SEGMENTS = 64
NOTHING_HELD: tuple[bytes, list | None] = (b"", None)
#: Bounds on the table (EngineConfig exposes them): connections held at once (~3 KB each),
#: seconds without a packet before a TCP/UDP conversation is retired (Zeek's TCP inactivity
#: timeout is 5 minutes; industrial polling is far more frequent), and how long a closed
#: connection lingers for late retransmissions.
DEFAULT_MAX_FLOWS = 10_000
DEFAULT_TCP_IDLE = 300.0
DEFAULT_UDP_IDLE = 60.0
CLOSED_LINGER = 5.0
#: Seconds of capture time between two sweeps for idle connections.
SWEEP_INTERVAL = 10.0
_TRANSPORT = {TCP: "tcp", UDP: "udp", 1: "icmp", 58: "icmp6"}
_LAST_ACTIVE = attrgetter("flow.last_ts")


def community_id(saddr: bytes, daddr: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 of a flow, the key Zeek, Suricata and Malcolm use for correlation."""
    if (saddr, sport) > (daddr, dport):
        saddr, daddr, sport, dport = daddr, saddr, dport, sport
    data = struct.pack("!H", seed) + saddr + daddr + struct.pack("!BB", proto, 0)
    if proto in (TCP, UDP, 132):
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def ip_text(packed: bytes) -> str:
    """An address as text, one shared object per address (interned, freed with its last
    holder): the summary's counts hold host pairs for the whole run, one copy per host
    instead of one per connection that made a key."""
    return sys.intern(socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed))


def mac_text(mac: bytes | None) -> str | None:
    return sys.intern(mac.hex(":")) if mac else None


def _decodes_cleanly(dec: Decoder, msg: bytes, from_client: bool) -> bool:
    """Trial decode of a connection's first message on a scratch state."""
    try:
        events = dec.decode(msg, from_client, dec.new_state())
    except Exception:
        return False
    return bool(events) and not any(ev.anomalies for ev in events)


def port_maps(decoders: tuple[Decoder, ...], ports: dict[str, tuple[int, ...]]
              ) -> tuple[dict[int, list[Decoder]], dict[str, frozenset[int]]]:
    """The decoders registered on each port, and each decoder's server ports (``ports``
    overrides a decoder's defaults)."""
    by_port: dict[int, list[Decoder]] = {}
    ports_of: dict[str, frozenset[int]] = {}
    for dec in decoders:
        ports_of[dec.name] = frozenset(ports.get(dec.name, dec.ports))
        for port in ports_of[dec.name]:
            by_port.setdefault(port, []).append(dec)
    return by_port, ports_of


def shard_of(pkt: tuple, count: int) -> int:
    """Shard owning a packet's connection: symmetric in direction, stable across processes."""
    return (pkt[2][-1] + pkt[3][-1] + pkt[5] + pkt[6]) % count


def detect(decoders: tuple[Decoder, ...], by_port: dict[int, list[Decoder]], flow: Flow,
           data: bytes, from_client: bool) -> Decoder | bool:
    """Pick the decoder for a new connection from its first bytes.

    On a port registered for the decoder a passing probe is enough (as in Wireshark).
    Off its ports the first message must also frame and decode without anomaly flags,
    so look-alike bytes on arbitrary ports are not taken for an industrial protocol.
    Returns the decoder, or whether a probe passed on a message not yet complete.
    """
    on_port = by_port.get(flow.server_port, []) + by_port.get(flow.client_port, [])
    for dec in on_port:
        # offset 1 too: a connection picked up mid-stream may begin with the byte of a
        # TCP keep-alive probe (seq = next - 1), which cannot be told apart from data
        if dec.probe(data, 0) or (len(data) > 1 and dec.probe(data, 1)):
            return dec
    incomplete = False
    for dec in decoders:
        if dec not in on_port and dec.probe(data, 0):
            n = dec.frame(data, 0)
            if n == NEED_MORE:
                incomplete = True
            elif n > 0 and _decodes_cleanly(dec, data[:n], from_client):
                return dec
    return incomplete


def new_flow(by_port: dict[int, list[Decoder]], pkt_no: int, ts: float, sip: bytes, dip: bytes,
             proto: int, sport: int, dport: int, flags: int) -> tuple[Flow, bool]:
    """The record of a connection first seen in this packet, and whether its sender is
    the client (known from a SYN, else guessed from the ports)."""
    known = proto == TCP and bool(flags & SYN)
    if known:
        sender_is_client = not flags & ACK
    else:
        sender_is_client = _looks_like_client(by_port, proto, sport, dport)
    if sender_is_client:
        cip, cport, sip_, sport_ = sip, sport, dip, dport
    else:
        cip, cport, sip_, sport_ = dip, dport, sip, sport
    transport = _TRANSPORT.get(proto, f"ip-{proto}")
    flow = Flow(
        flow_id=community_id(sip, dip, proto, sport, dport),
        transport=transport, client_ip=ip_text(cip), client_port=cport,
        server_ip=ip_text(sip_), server_port=sport_, initiator_known=known,
        app=service_name(transport, sport_) or "unknown",
        first_ts=ts, last_ts=ts, first_packet=pkt_no, last_packet=pkt_no,
    )
    return flow, sender_is_client


def _looks_like_client(by_port: dict[int, list[Decoder]], proto: int, sport: int, dport: int) -> bool:
    """Without a handshake, the side on a known service port is the server."""
    transport = _TRANSPORT.get(proto, "")
    d_known = dport in by_port or service_name(transport, dport) is not None
    s_known = sport in by_port or service_name(transport, sport) is not None
    if d_known != s_known:
        return d_known
    return sport >= dport


class FlowState:
    """Live state of one connection."""

    __slots__ = ("flow", "keys", "order", "streams", "session", "flip", "attempts", "undetected",
                 "fins", "closed")

    def __init__(self, flow: Flow, keys: tuple, order: tuple[int, int]):
        self.flow = flow
        self.keys = keys                  # (client→server key, server→client key)
        self.order = order                # (source index, packet) of the first packet
        self.streams = [Stream(), Stream()]  # index 1: client → server, 0: server → client
        self.session: Session | None = None
        self.flip = False                 # decoder's client is the connection's server
        self.attempts = DETECTION_ATTEMPTS
        self.undetected = [NOTHING_HELD, NOTHING_HELD]  # per direction: first bytes awaiting
        # detection, with the packets they came in (as Stream.bounds)
        self.fins = 0
        self.closed = False


class FlowTable:
    """Tracks connections and turns their payload into events."""

    def __init__(self, decoders: tuple[Decoder, ...], ports: dict[str, tuple[int, ...]],
                 on_event: Callable[[Event], None], on_flow: Callable[[Flow], None],
                 health: Health, *, max_flows: int = DEFAULT_MAX_FLOWS,
                 tcp_idle: float = DEFAULT_TCP_IDLE, udp_idle: float = DEFAULT_UDP_IDLE,
                 closed_linger: float = CLOSED_LINGER, shard: tuple[int, int] | None = None):
        self.decoders = decoders
        self.by_port, self.ports_of = port_maps(decoders, ports)
        self.shard = shard
        self.on_event = on_event
        self.on_flow = on_flow
        self.health = health
        self.max_flows = max_flows
        self.tcp_idle = tcp_idle
        self.udp_idle = udp_idle
        self.closed_linger = closed_linger
        self.index: dict[tuple, tuple[FlowState, bool]] = {}
        self.states: dict[int, FlowState] = {}
        self.capture = ""
        self.source_index = 0
        #: the packet being processed, and the connection whose output is being emitted:
        #: together they order the output of parallel shards (see engine.analyze)
        self.clock_packet: float = 0
        self.emitting: tuple[int, int] = (0, 0)
        self.counters = {"flows": 0, "flows_timed_out": 0, "flows_evicted": 0,
                         "retransmitted_bytes": 0, "overlap_conflicts": 0, "gap_bytes": 0}
        self._next_sweep = 0.0
        self._sweep_floor = float("-inf")   # a packet older than this means the clock stepped back

    # --- per packet ------------------------------------------------------------------

    @property
    def clock(self) -> tuple[int, float]:
        """(source index, packet) being processed: orders the output of parallel shards."""
        return (self.source_index, self.clock_packet)

    def tick(self, pkt_no: int, ts: float) -> None:
        """Advance time: retire idle connections. Called for every packet, including those
        another shard owns, so that every shard retires the same connections at the same
        packet; what it emits is ordered just before that packet's own output."""
        if ts >= self._next_sweep:
            self.clock_packet = pkt_no - 0.5
            self._sweep(ts)
        elif ts < self._sweep_floor:
            self._next_sweep = ts   # the clock was stepped back: sweep from the new time on
            self._sweep_floor = ts - 2 * SWEEP_INTERVAL

    def frame(self, pkt_no: int, ts: float, linktype: int, frame: bytes) -> str | None:
        """Parse a captured frame and process it; returns why it carries no usable IP
        packet (a capture.REASONS string), else None. With a ``shard`` (index, count), a
        packet of a connection another shard owns only advances time."""
        pkt = parse_packet(linktype, frame)
        if pkt.__class__ is str:
            return pkt
        shard = self.shard
        if shard is not None and shard_of(pkt, shard[1]) != shard[0]:
            self.tick(pkt_no, ts)
        else:
            self.packet(pkt_no, ts, pkt)
        return None

    def packet(self, pkt_no: int, ts: float, pkt: tuple) -> None:
        src_mac, dst_mac, sip, dip, proto, sport, dport, flags, seq, ack, payload = pkt
        if not self._sweep_floor <= ts < self._next_sweep:
            self.tick(pkt_no, ts)
        self.clock_packet = pkt_no
        entry = self.index.get((sip, sport, dip, dport, proto))
        if entry is None or (proto == TCP and flags & SYN and not flags & ACK and self._is_reuse(entry[0])):
            if entry is not None:
                self._end(entry[0])
            entry = self._new(pkt_no, ts, pkt)
        st, from_client = entry
        flow = st.flow
        flow.last_ts = ts
        flow.last_packet = pkt_no
        if from_client:
            flow.packets_c2s += 1
            flow.bytes_c2s += len(payload)
            if flow.client_mac is None and src_mac:
                flow.client_mac = mac_text(src_mac)
            if flow.server_mac is None and dst_mac:  # the first request already shows it
                flow.server_mac = mac_text(dst_mac)
        else:
            flow.packets_s2c += 1
            flow.bytes_s2c += len(payload)
            if flow.server_mac is None and src_mac:
                flow.server_mac = mac_text(src_mac)
            if flow.client_mac is None and dst_mac:
                flow.client_mac = mac_text(dst_mac)
        if proto == TCP:
            self._tcp(st, from_client, pkt_no, ts, flags, seq, ack, payload)

    def _tcp(self, st: FlowState, from_client: bool, pkt_no: int, ts: float, flags: int,
             seq: int, ack: int, payload: bytes) -> None:
        stream = st.streams[from_client]
        if flags & SYN:
            stream.syn(seq)
        if flags & ACK:
            # first what this ACK gives up waiting for: the peer sent it before this packet
            other = st.streams[not from_client]
            if other.queue:
                data = other.acked(ack)
                if data:
                    self._deliver(st, not from_client, data, True, pkt_no, ts, other.bounds)
        if payload and (st.session is not None or st.attempts > 0):  # else: nothing to decode
            data = stream.push(seq, payload, pkt_no, ts)
            if data:
                self._deliver(st, from_client, data, stream.gapped, pkt_no, ts, stream.bounds)
        if flags & (FIN | RST) and not st.closed:
            # ended, but a retransmission may still fill a hole: the queued data is only
            # given up when the flow is retired (linger timeout, reuse, end of input)
            st.fins += 1 if flags & FIN else 2
            st.closed = st.fins >= 2

    def _deliver(self, st: FlowState, from_client: bool, data: bytes, gapped: bool,
                 pkt_no: int, ts: float, bounds: list[tuple[int, int, float]] | None = None) -> None:
        """Decode a direction's new bytes: completed by packet ``pkt_no``, or, when released
        from the reassembly queue, by the segments listed in ``bounds`` (Stream.bounds)."""
        session = st.session
        if session is None:
            data, bounds = self._await_detection(st, from_client, data, gapped, pkt_no, ts, bounds)
            if not data:
                return
            session = st.session
            gapped = False
            # the other direction's first bytes, held while undetected, are decoded too
            # (the session resynchronises if they do not start with a message), each
            # message at the packet that brought its last byte
            (other, other_bounds), st.undetected = st.undetected[not from_client], [NOTHING_HELD, NOTHING_HELD]
            if other:
                events = session.feed(other, from_client == st.flip, False, pkt_no, ts, other_bounds)
                if events:
                    self._emit(st, not from_client, events)
        events = session.feed(data, from_client != st.flip, gapped, pkt_no, ts, bounds)
        if events:
            self._emit(st, from_client, events)

    def _await_detection(self, st: FlowState, from_client: bool, data: bytes, gapped: bool,
                         pkt_no: int, ts: float, bounds: list | None) -> tuple[bytes, list | None]:
        """Collect a direction's first bytes until a decoder recognises them.

        Returns the bytes to decode once a decoder is attached (with their segments'
        packets, as Stream.bounds), else b"". A window that fills up without a match (a
        capture starting mid-message, or another protocol) is dropped and counts as one
        failed attempt.
        """
        if st.attempts <= 0:
            return b"", None
        held, held_bounds = NOTHING_HELD if gapped else st.undetected[from_client]
        own = bounds if bounds is not None else [(len(data), pkt_no, ts)]
        if held:
            shift = len(held)
            # a stream of tiny segments keeps only its latest ends: earlier bytes then
            # count as the first kept segment's
            bounds = (held_bounds + [(end + shift, p, t) for end, p, t in own])[-MAX_HELD_SEGMENTS:]
            data = held + data
        else:
            bounds = own
        found = self._detect(st, data, from_client)
        if isinstance(found, Session):
            return data, bounds
        if len(data) >= (MAX_MESSAGE_AWAITED if found else DETECTION_WINDOW):
            st.attempts -= 1
            st.undetected[from_client] = NOTHING_HELD
        else:
            st.undetected[from_client] = (data, bounds)
        if st.attempts <= 0:
            st.undetected = [NOTHING_HELD, NOTHING_HELD]   # given up: nothing more is held
        return b"", None

    def _emit(self, st: FlowState, from_client: bool, events: list[Event]) -> None:
        """Report decoded events (the session set the packet that completed each) with
        their connection's context."""
        flow = st.flow
        if from_client:
            src = (flow.client_ip, flow.client_port, flow.client_mac)
            dst = (flow.server_ip, flow.server_port, flow.server_mac)
        else:
            src = (flow.server_ip, flow.server_port, flow.server_mac)
            dst = (flow.client_ip, flow.client_port, flow.client_mac)
        session = st.session
        self.emitting = st.order
        for ev in events:
            ev.capture = self.capture
            ev.flow_id = flow.flow_id
            ev.src_ip, ev.src_port, ev.src_mac = src
            ev.dst_ip, ev.dst_port, ev.dst_mac = dst
            session.pair(ev)
            flow.events += 1
            self.on_event(ev)

    def _detect(self, st: FlowState, data: bytes, from_client: bool) -> Session | bool:
        found = detect(self.decoders, self.by_port, st.flow, data, from_client)
        return self._attach(st, found) if isinstance(found, Decoder) else found

    def _attach(self, st: FlowState, dec: Decoder) -> Session:
        """Start decoding. If the initiator sits on the protocol's server port (a device that
        connects out from port 502, say), the decoder's client is the other side."""
        ports = self.ports_of[dec.name]
        st.flip = st.flow.client_port in ports and st.flow.server_port not in ports
        st.session = Session(dec, self.health)
        st.flow.decoded = True
        st.flow.app = dec.name
        return st.session

    @property
    def open_count(self) -> int:
        """Connections tracked now."""
        return len(self.states)

    def open_flows(self) -> list[Flow]:
        """The connections tracked now, as their (still growing) flow records."""
        return [st.flow for st in self.states.values()]

    # --- connection lifecycle ------------------------------------------------------

    @staticmethod
    def _is_reuse(st: FlowState) -> bool:
        """A new SYN on a known 5-tuple starts a new connection once the old one ended or carried data."""
        return st.closed or st.flow.bytes_c2s > 0 or st.flow.bytes_s2c > 0

    def _new(self, pkt_no: int, ts: float, pkt: tuple) -> tuple[FlowState, bool]:
        _, _, sip, dip, proto, sport, dport, flags, _, _, _ = pkt
        flow, sender_is_client = new_flow(self.by_port, pkt_no, ts, sip, dip, proto, sport, dport, flags)
        if sender_is_client:
            c2s, s2c = (sip, sport, dip, dport, proto), (dip, dport, sip, sport, proto)
        else:
            c2s, s2c = (dip, dport, sip, sport, proto), (sip, sport, dip, dport, proto)
        st = FlowState(flow, (c2s, s2c), (self.source_index, pkt_no))
        self.index[c2s] = (st, True)
        self.index[s2c] = (st, False)
        self.states[id(st)] = st
        self.counters["flows"] += 1
        if len(self.states) > self.max_flows:
            self._evict(ts)
        return st, sender_is_client

    def _end(self, st: FlowState) -> None:
        """Retire a connection: give up on holes, deliver what is queued, report the flow."""
        for from_client in (True, False):
            stream = st.streams[from_client]
            while stream.queue:
                data = stream.skip_gap()
                if data:
                    _, pkt_no, ts = stream.bounds[-1]
                    self._deliver(st, from_client, data, True, pkt_no, ts, stream.bounds)
        if st.session is not None:
            st.session.finish()
        for key in st.keys:
            self.index.pop(key, None)
        self.states.pop(id(st), None)
        flow = st.flow
        for stream in st.streams:
            flow.gaps += stream.gaps
            self.counters["retransmitted_bytes"] += stream.retransmitted_bytes
            self.counters["overlap_conflicts"] += stream.overlap_conflicts
            self.counters["gap_bytes"] += stream.gap_bytes
        if any(s.overlap_conflicts for s in st.streams):
            flow.anomalies.append("tcp.overlap_conflict")
        if st.session is not None and len(st.session.protocols) == 1:
            flow.app = next(iter(st.session.protocols))
        flow.capture = self.capture
        self.emitting = st.order
        self.on_flow(flow)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        self._sweep_floor = now - SWEEP_INTERVAL
        for st in list(self.states.values()):
            idle = now - st.flow.last_ts
            limit = self.closed_linger if st.closed else (
                self.tcp_idle if st.flow.transport == "tcp" else self.udp_idle)
            if idle > limit:
                self.counters["flows_timed_out"] += 1
                self._end(st)

    def _evict(self, now: float) -> None:
        """Over the cap: end the closed and least recently active tenth of the connections."""
        count = max(1, len(self.states) // 10)
        closed = [st for st in self.states.values() if st.closed]
        if len(closed) >= count:
            victims = heapq.nsmallest(count, closed, key=_LAST_ACTIVE)
        else:  # every closed one, then the least recently active open ones
            still_open = [st for st in self.states.values() if not st.closed]
            victims = sorted(closed, key=_LAST_ACTIVE) + heapq.nsmallest(
                count - len(closed), still_open, key=_LAST_ACTIVE)
        for st in victims:
            self.counters["flows_evicted"] += 1
            self._end(st)

    def retire_all(self, pkt_no: float) -> None:
        """Report every connection still open (their output is ordered before ``pkt_no``)."""
        self.clock_packet = pkt_no - 0.5
        for st in list(self.states.values()):
            self._end(st)

    def finish(self) -> None:
        """End of input: every connection still open is reported."""
        self.retire_all(float("inf"))
