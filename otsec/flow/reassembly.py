"""Per-direction TCP stream reassembly with bounded memory.

A :class:`Stream` turns the segments of one TCP direction, as they appear on a SPAN
port (out of order, retransmitted, overlapping, with capture losses), into the byte
stream the sender wrote:

* in-order data is passed through without copying (the common case on a LAN);
* retransmitted and overlapping bytes are dropped: the first copy wins, as in
  Suricata's default policy (a later, different copy is counted as an overlap
  conflict, a classic evasion sign);
* out-of-order segments wait in a small queue until the hole is filled;
* a hole that cannot be filled any more (queue over its cap, the receiver already
  acknowledged past it, or the flow ends) becomes a *gap*: the stream skips ahead and
  says so, and the session layer resynchronises on the next message header.

Data released from the queue joins segments that arrived in different packets. The
stream then lists where each one ends, so that every message can be reported at the
packet holding its last byte, as Wireshark reports each segment at its own packet::

    released:  | current segment | queued seg (pkt 7) | queued seg (pkt 9) |
    bounds:    (12, cur, ts)      (40, 7, ts7)         (52, 9, ts9)
               end offset of each segment in the released bytes, its packet and time

Sequence numbers are compared modulo 2**32, so wrap-around is handled.
"""

from __future__ import annotations

#: Out-of-order queue caps per direction. Beyond them the oldest hole is declared a gap.
MAX_QUEUED_SEGMENTS = 64
MAX_QUEUED_BYTES = 256 * 1024

_MOD = 1 << 32
_HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in sequence space."""
    d = (a - b) & 0xFFFFFFFF
    return d - _MOD if d >= _HALF else d


class Stream:
    """One direction of a TCP connection."""

    __slots__ = ("next_seq", "queue", "arrival", "queued_bytes", "gaps", "gap_bytes",
                 "overlap_conflicts", "retransmitted_bytes", "gapped", "bounds")

    def __init__(self) -> None:
        self.next_seq: int | None = None   # next byte expected; None until the first segment/SYN
        self.queue: dict[int, bytes] | None = None  # out-of-order segments by seq (made when needed)
        self.arrival: dict[int, tuple[int, float]] = {}  # queued seq -> (packet, ts) it came in
        self.queued_bytes = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.overlap_conflicts = 0
        self.retransmitted_bytes = 0
        self.gapped = False                # set when the data returned last follows a gap
        #: for data returned last from the queue: (end offset, packet, ts) of each segment
        #: joined into it, in order (at most MAX_QUEUED_SEGMENTS + 1); None when the data
        #: returned is the current segment alone
        self.bounds: list[tuple[int, int, float]] | None = None

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number: data starts at seq + 1."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & 0xFFFFFFFF

    def push(self, seq: int, data: bytes, packet: int = 0, ts: float = 0.0) -> bytes:
        """Add a segment (arrived in ``packet`` at ``ts``); return the bytes that became
        contiguous (possibly empty), with :attr:`bounds` set if queued segments joined it."""
        self.gapped = False
        self.bounds = None
        if self.next_seq is None:
            self.next_seq = seq
        d = seq_diff(seq, self.next_seq)
        if d == 0 and not self.queue:
            self.next_seq = (seq + len(data)) & 0xFFFFFFFF
            return data
        if d < 0:
            if -d >= len(data):
                self.retransmitted_bytes += len(data)
                return b""
            self.retransmitted_bytes += -d
            data = data[-d:]
            seq = self.next_seq
            d = 0
        if d == 0:
            self.next_seq = (seq + len(data)) & 0xFFFFFFFF
            if not self.queue:
                return data
            self.bounds = [(len(data), packet, ts)]
            return self._drain([data])
        self._enqueue(seq, data, (packet, ts))
        if len(self.queue) > MAX_QUEUED_SEGMENTS or self.queued_bytes > MAX_QUEUED_BYTES:
            return self.skip_gap()
        return b""

    def acked(self, ack: int) -> bytes:
        """The peer acknowledged up to ``ack``: a queued hole below it will never be filled.

        Called only while segments are queued; returns data released by the gap
        (its segments in :attr:`bounds`).
        """
        if self.queue and self.next_seq is not None and seq_diff(ack, self.next_seq) > 0:
            return self.skip_gap()
        return b""

    def skip_gap(self) -> bytes:
        """Give up on the current hole: jump to the first queued segment and drain."""
        if not self.queue:
            return b""
        first = min(self.queue, key=lambda s: seq_diff(s, self.next_seq))
        missing = seq_diff(first, self.next_seq)
        self.gaps += 1
        self.gap_bytes += max(missing, 0)
        self.next_seq = first
        self.bounds = []
        out = self._drain([])
        self.gapped = True
        return out

    def _enqueue(self, seq: int, data: bytes, when: tuple[int, float]) -> None:
        if self.queue is None:
            self.queue = {}
        held = self.queue.get(seq)
        if held is not None:
            if len(held) >= len(data):
                if held[:len(data)] != data:
                    self.overlap_conflicts += 1
                self.retransmitted_bytes += len(data)
                return
            if data[:len(held)] != held:
                self.overlap_conflicts += 1
            data = held + data[len(held):]  # first copy wins for the bytes it covered
            self.queued_bytes -= len(held)
        self.queue[seq] = data
        self.arrival[seq] = when           # the packet that brought the segment's last byte
        self.queued_bytes += len(data)

    def _drain(self, parts: list[bytes]) -> bytes:
        """Append every queued segment that now touches or overlaps the stream head to
        ``parts`` (and its end to :attr:`bounds`); return them joined."""
        queue = self.queue
        bounds = self.bounds
        size = bounds[-1][0] if bounds else 0
        while queue:
            seq = self.next_seq
            seg = queue.pop(seq, None)
            if seg is None:
                seq, seg = self._pop_overlapping()
                if seg is None:
                    break
            else:
                self.queued_bytes -= len(seg)
            size += len(seg)
            bounds.append((size, *self.arrival.pop(seq)))
            parts.append(seg)
            self.next_seq = (self.next_seq + len(seg)) & 0xFFFFFFFF
        return b"".join(parts)

    def _pop_overlapping(self) -> tuple[int, bytes | None]:
        """A queued segment starting before the head: return its seq and new bytes, drop
        covered ones."""
        for seq in list(self.queue):
            d = seq_diff(seq, self.next_seq)
            if d < 0:
                seg = self.queue.pop(seq)
                self.queued_bytes -= len(seg)
                if -d < len(seg):
                    self.retransmitted_bytes += -d
                    return seq, seg[-d:]
                del self.arrival[seq]
                self.retransmitted_bytes += len(seg)
        return 0, None
