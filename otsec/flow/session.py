"""Drives one decoder over one TCP connection: framing, resync after gaps, pairing.

The decoder only frames and decodes; everything that depends on the stream's history
lives here, once, for every protocol:

* per-direction buffers of bytes not yet framed (bounded);
* resynchronisation: after a capture gap, or bytes that cannot start a message, the
  session searches forward for the next position the decoder's ``probe`` accepts,
  instead of going deaf for the rest of the connection;
* request/response pairing by the decoder's ``pair_key`` (bounded pending table);
* decode-health counters (gaps, resyncs, unframeable bytes, unpaired responses,
  messages truncated at the end of the capture).
"""

from __future__ import annotations

from otsec.decoders.base import NEED_MORE, Decoder
from otsec.model import Event

#: Bytes of an unfinished message kept per direction before giving up on it (an OPC UA
#: chunk may legally be larger; such a chunk is counted as a buffer overflow).
MAX_BUFFERED_BYTES = 4 << 20
#: Bytes kept while searching for a message start, for probes that need a whole header.
SYNC_TAIL = 512
#: Requests awaiting their response per connection; the oldest is dropped beyond this.
MAX_PENDING_REQUESTS = 1024


class Health:
    """Decode-health counters, summed over all sessions of a run."""

    __slots__ = ("messages", "anomalous", "gaps", "resyncs", "unframeable_bytes",
                 "buffer_overflows", "unpaired_responses", "unanswered_requests",
                 "truncated_at_eof", "decoder_errors")

    def __init__(self) -> None:
        self.messages = 0             # messages decoded
        self.anomalous = 0            # messages carrying at least one anomaly flag
        self.gaps = 0                 # holes in a TCP stream (bytes never captured)
        self.resyncs = 0              # times the framing was re-found by probing
        self.unframeable_bytes = 0    # bytes skipped while resynchronising
        self.buffer_overflows = 0     # unfinished messages dropped for exceeding the cap
        self.unpaired_responses = 0   # responses whose request was never seen
        self.unanswered_requests = 0  # requests whose response was never seen
        self.truncated_at_eof = 0     # connections ending inside a message
        self.decoder_errors = 0       # decoder bugs caught (a decoder must never raise)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Session:
    """The decoding state of one connection (both directions)."""

    __slots__ = ("decoder", "state", "health", "bufs", "syncing", "pending", "protocols")

    def __init__(self, decoder: Decoder, health: Health) -> None:
        self.decoder = decoder
        self.state = decoder.new_state()
        self.health = health
        self.bufs = [b"", b""]          # index 1: client → server, 0: server → client
        self.syncing = [True, True]     # look for a message start before framing
        self.pending: dict = {}
        self.protocols: set[str] = set()

    def feed(self, data: bytes, from_client: bool, gapped: bool, packet: int = 0, ts: float = 0.0,
             bounds: list[tuple[int, int, float]] | None = None) -> list[Event]:
        """Add contiguous stream bytes of one direction; return the completed messages, each
        with the packet (number and time) that completed it.

        That is ``packet`` for all of them, or, when ``data`` ends with segments released
        from the reassembly queue (``bounds``: their end offsets, packets and times, as
        :attr:`Stream.bounds`), the segment holding the message's last byte. Bytes before
        the listed segments (held from earlier deliveries) count as the first segment's.
        """
        i = 1 if from_client else 0
        if gapped:
            self.health.gaps += 1
            self.bufs[i] = b""
            self.syncing[i] = True
        held = self.bufs[i]
        if bounds is None and not held and not self.syncing[i] and self.decoder.frame(data, 0) == len(data):
            return self._decode(data, from_client, packet, ts)  # the common case: one whole message
        buf = held + data if held else data
        events: list[Event] = []
        pos = 0
        end = len(buf)
        frame = self.decoder.frame
        if bounds is not None:
            seg = 0                      # the segment holding the last byte of the message
            base = end - bounds[-1][0]   # bounds are offsets into the tail of buf
        while pos < end:
            if self.syncing[i]:
                start = self._find_start(buf, pos)
                if start < 0:
                    # keep a tail: a probe may need more of a message than has arrived
                    keep = max(pos, end - SYNC_TAIL)
                    self.health.unframeable_bytes += keep - pos
                    pos = keep
                    break
                if start > pos:
                    self.health.resyncs += 1
                    self.health.unframeable_bytes += start - pos
                pos = start
                self.syncing[i] = False
            n = frame(buf, pos)
            if n > end - pos:   # a frame() claiming more than is here: the rest is the message
                n = end - pos
            if n > 0:
                if bounds is not None:
                    while bounds[seg][0] < pos + n - base:
                        seg += 1
                    _, packet, ts = bounds[seg]
                events.extend(self._decode(buf[pos:pos + n] if (pos or n != end) else buf,
                                           from_client, packet, ts))
                pos += n
            elif n == NEED_MORE:
                break
            else:  # UNFRAMEABLE: lost step with the stream; search for the next message
                self.syncing[i] = True
                self.health.resyncs += 1
                pos += 1
                self.health.unframeable_bytes += 1
        rest = buf[pos:] if pos else buf
        if len(rest) > MAX_BUFFERED_BYTES:
            self.health.buffer_overflows += 1
            rest = b""
            self.syncing[i] = True
        self.bufs[i] = rest
        return events

    def _find_start(self, buf: bytes, pos: int) -> int:
        probe = self.decoder.probe
        for p in range(pos, len(buf)):
            if probe(buf, p):
                return p
        return -1

    def _decode(self, msg: bytes, from_client: bool, packet: int, ts: float) -> list[Event]:
        try:
            events = self.decoder.decode(msg, from_client, self.state)
            if events.__class__ is not list:   # the contract says list; take any iterable
                events = list(events)
        except Exception:  # a decoder bug must not stop the sensor; it is counted
            self.health.decoder_errors += 1
            return []
        for ev in events:
            ev.packet = packet
            ev.ts = ts
            self.health.messages += 1
            self.protocols.add(ev.protocol)
        return events

    def pair(self, ev: Event) -> None:
        """Match a response to its request; call once the event's context is filled in."""
        key = ev.pair_key
        if key is not None:
            if ev.kind == "request":
                if len(self.pending) >= MAX_PENDING_REQUESTS:
                    del self.pending[next(iter(self.pending))]
                    self.health.unanswered_requests += 1
                self.pending[key] = ev
            elif ev.kind == "response":
                req = self.pending.pop(key, None)
                if req is None:
                    self.health.unpaired_responses += 1
                    ev.anomalies.append(f"{ev.protocol}.unpaired_response")
                else:
                    ev.request_packet = req.packet
                    if not ev.targets:
                        ev.targets = req.targets
        if ev.anomalies:
            self.health.anomalous += 1

    def finish(self) -> None:
        """End of the connection or of the input: count what was left incomplete."""
        for buf in self.bufs:
            if buf:
                self.health.truncated_at_eof += 1
        self.bufs = [b"", b""]
        self.health.unanswered_requests += len(self.pending)
        self.pending.clear()
