"""Streaming readers for classic pcap and pcapng capture files.

Classic pcap (one link type, one timestamp resolution per file)::

    global header, 24 bytes
    +--------+-------+-------+---------+---------+---------+----------+
    | magic  | major | minor | thiszone| sigfigs | snaplen | linktype |
    |   4    |   2   |   2   |    4    |    4    |    4    |    4     |
    +--------+-------+-------+---------+---------+---------+----------+
    then per packet: 16-byte record header + caplen bytes of frame
    +--------+----------------+--------+---------+------------------+
    | ts sec | ts usec / nsec | caplen | origlen | frame (caplen)   |
    +--------+----------------+--------+---------+------------------+

    magic a1b2c3d4 = microseconds, a1b23c4d = nanoseconds; read in the file's byte
    order, so d4c3b2a1 / 4d3cb2a1 mean "swap".

pcapng (a sequence of blocks, each framed by its length twice)::

    +------------+--------------+-------------------------+--------------+
    | block type | total length | body (padded to 4)      | total length |
    |     4      |      4       |                         |      4       |
    +------------+--------------+-------------------------+--------------+

    SHB 0x0a0d0d0a  starts a section; its byte-order magic 0x1a2b3c4d sets the byte
                    order of every block up to the next SHB; interfaces restart at 0
    IDB 0x00000001  linktype(2) reserved(2) snaplen(4) options (if_tsresol 9, if_tsoffset 14)
    EPB 0x00000006  interface(4) ts high(4) ts low(4) caplen(4) origlen(4) frame options
    SPB 0x00000003  origlen(4) frame -- interface 0, no timestamp, caplen from snaplen
    PB  0x00000002  obsolete: interface(2) drops(2) ts high(4) ts low(4) caplen(4) origlen(4) frame
    anything else (NRB, ISB, DSB, custom, unknown) is checked for framing and skipped

The file is read in large chunks and walked with precompiled ``struct`` objects: no mmap
(its page cache counts against the sensor's memory) and never the whole file at once.
A damaged file never raises during iteration: the reader records one ``error`` line
naming the file, the byte offset and the packet number, and stops; every packet before
it has been delivered.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Iterator

#: Bytes asked of the OS per read: large enough that refills are rare per packet.
CHUNK_SIZE = 1 << 20
#: Smallest caplen limit for classic pcap records (Wireshark uses the same 256 KiB);
#: a file whose snaplen is larger raises the limit to its snaplen.
MIN_CAPLEN_LIMIT = 262144
#: Largest pcapng block accepted (Wireshark's limit); a bigger length means corruption,
#: and refusing it keeps a corrupt length field from asking for gigabytes of memory.
MAX_BLOCK_SIZE = 16 * 1024 * 1024

PCAP_MAGICS = {
    # first 4 bytes as read: (byte order prefix, timestamp fraction units per second)
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
}
PCAP_HEADER_LEN = 24
PCAP_RECORD_LEN = 16

PCAPNG_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAPNG_BYTE_ORDER = {b"\x1a\x2b\x3c\x4d": ">", b"\x4d\x3c\x2b\x1a": "<"}
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002
BT_SPB = 0x00000003
BT_EPB = 0x00000006
SHB_MIN_LEN = 28          # type, length, byte-order magic, version, section length, trailer
OPT_END = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
DEFAULT_TSRESOL = 1_000_000  # units per second when an IDB has no if_tsresol

#: Fixed bytes between a packet block's length field and its frame (EPB and the
#: obsolete PB share the 20: their interface/drops fields split the same 4 bytes).
EPB_FIXED = 20
SPB_FIXED = 4


#: Per byte order: block header (type, length), EPB fixed part, one 32-bit word.
_PCAPNG_STRUCTS = {
    order: (struct.Struct(order + "II").unpack_from, struct.Struct(order + "IIIII").unpack_from,
            struct.Struct(order + "I").unpack_from)
    for order in "<>"
}


def has_capture_magic(path: str | Path) -> bool:
    """Whether ``path`` starts like a pcap or pcapng file (True also when it cannot be
    read: opening it as a capture then says why). For options that take a capture or
    something else, to tell which was meant before reading it."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return True
    return magic in PCAP_MAGICS or magic == PCAPNG_SHB_MAGIC


class CaptureError(Exception):
    """The file cannot be read as a capture at all; str() is one line naming the file."""


class _Interface:
    """What an IDB says about the packets that reference it."""

    __slots__ = ("linktype", "snaplen", "per_sec", "offset_units")

    def __init__(self, linktype: int, snaplen: int, per_sec: int, offset_sec: int):
        self.linktype = linktype
        self.snaplen = snaplen
        self.per_sec = per_sec                 # timestamp units per second
        self.offset_units = offset_sec * per_sec  # if_tsoffset, in the same units


class CaptureReader:
    """Streams packets from a classic pcap or pcapng file without loading it.

    Iterate once; each item is ``(packet_number, ts, linktype, frame)`` with the packet
    number starting at 1 and ``ts`` in seconds since the epoch (correctly rounded from
    the file's integer units). ``offset``, ``packets`` and ``error`` are live while
    iterating, for progress bars and for the end-of-file report.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.packets = 0
        self.error: str | None = None
        self._block = bytearray()   # the read buffer, reused by every refill
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        try:
            self.size = self._file.seek(0, 2)
            self._file.seek(0)
            head = self._file.read(PCAP_HEADER_LEN)
        except OSError as exc:
            self._file.close()
            raise CaptureError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        magic = head[:4]
        if magic in PCAP_MAGICS:
            self._open_pcap(head, *PCAP_MAGICS[magic])
        elif magic == PCAPNG_SHB_MAGIC:
            self._open_pcapng(head)
        else:
            self._file.close()
            if len(head) < 4:
                raise CaptureError(
                    f"{self.path}: not a pcap or pcapng file ({len(head)} bytes long)"
                )
            raise CaptureError(
                f"{self.path}: not a pcap or pcapng file (magic 0x{magic.hex()} at byte 0)"
            )

    # -- opening ---------------------------------------------------------------------

    def _fail_open(self, what: str):
        self._file.close()
        raise CaptureError(f"{self.path}: {what}")

    def _open_pcap(self, head: bytes, order: str, per_sec: int):
        if len(head) < PCAP_HEADER_LEN:
            self._fail_open(
                f"truncated pcap file header: {PCAP_HEADER_LEN} bytes needed, {len(head)} present"
            )
        snaplen, linktype = struct.unpack_from(order + "II", head, 16)
        self.format = "pcap"
        #: classic pcap: byte order ("<"/">"), timestamp units per second, link type and
        #: the largest record accepted (for readers that walk the buffer themselves)
        self.byte_order = order
        self.per_sec = per_sec
        self.linktype = linktype & 0xFFFF   # upper bits carry FCS-length flags
        self.caplen_limit = max(snaplen, MIN_CAPLEN_LIMIT)
        self._buf = b""
        self.offset = PCAP_HEADER_LEN

    def _open_pcapng(self, head: bytes):
        self.format = "pcapng"
        self._buf = head
        if len(head) < 12:
            self._buf += self._file.read(12 - len(head))
        if len(self._buf) < 12:
            self._fail_open(
                f"truncated pcapng section header: {SHB_MIN_LEN} bytes needed, "
                f"{len(self._buf)} present"
            )
        order = PCAPNG_BYTE_ORDER.get(self._buf[8:12])
        if order is None:
            self._fail_open(
                "not a pcap or pcapng file "
                f"(pcapng byte-order magic 0x{self._buf[8:12].hex()} at byte 8)"
            )
        (length,) = struct.unpack_from(order + "I", self._buf, 4)
        if length < SHB_MIN_LEN or length % 4 or length > MAX_BLOCK_SIZE:
            self._fail_open(f"corrupt pcapng section header at byte 0: total length {length}")
        if len(self._buf) < length:
            self._buf += self._file.read(length - len(self._buf))
        if len(self._buf) < length:
            self._fail_open(
                f"truncated pcapng section header: header says {length} bytes, "
                f"{len(self._buf)} present"
            )

    # -- reading ---------------------------------------------------------------------

    def _refill(self, buf: bytearray | bytes, pos: int, need: int) -> bytearray:
        """``buf[pos:]`` followed by what the file holds next, at least ``need`` bytes
        unless the file ends first, in the reader's one read buffer (which ``buf`` may
        be). Reading into the same buffer every time, instead of a new bytes object per
        read joined to the rest of the last one, spares the copy and the fresh pages: it
        took a tenth of the time of a 1M-packet analyze. Nothing may keep a view of the
        buffer across refills; frames are sliced (copied) out of it."""
        block = self._block
        rest = len(buf) - pos
        block[:rest] = buf[pos:]   # the tail of the last buffer comes first
        size = max(CHUNK_SIZE, need)
        if len(block) != size:
            block[rest:] = bytes(size - rest)
        have = rest
        with memoryview(block) as view:
            while have < size:
                try:
                    got = self._file.readinto(view[have:])
                except OSError as exc:  # EIO, a network share gone: the file ends here, said once
                    if self.error is None:
                        self.error = (f"{self.path}: read error after byte {self.offset + have} "
                                      f"(packet {self.packets + 1}): {exc.strerror or exc}")
                    break
                if not got:
                    break
                have += got
        del block[have:]
        return block

    def __iter__(self) -> Iterator[tuple[int, float, int, bytes]]:
        return self.packets_left(None)

    def packets_left(self, take: Callable | None) -> Iterator[tuple[int, float, int, bytes]]:
        """The packets, as iteration gives them, except those ``take`` processes itself.

        ``take`` (the compiled flow layer's walker) is offered the read buffer before each
        record or block: ``take(buf, pos, number)`` for classic pcap, ``take(buf, pos,
        number, byte_order, interfaces)`` for pcapng. It processes every plain packet
        record (pcapng: enhanced packet block) it can from ``pos``, numbering them after
        ``number``, with no Python object per packet, and returns ``(pos, number,
        last_ts)`` after them (last_ts None if it took none). Whatever it leaves (other
        block kinds, anything irregular) is yielded or reported here, and refills and
        damage are handled by the same code either way.
        """
        if self.format == "pcap":
            return self._iter_pcap(take)
        return self._iter_pcapng(take)

    def _fail(self, offset: int, what: str, detail: str):
        """Records why iteration stops at the record or block starting at ``offset``
        (a read error recorded first is the real cause and is kept)."""
        if self.error is None:
            self.error = f"{self.path}: {what} at byte {offset} (packet {self.packets + 1}): {detail}"

    def _iter_pcap(self, take: Callable | None):
        unpack_record = struct.Struct(self.byte_order + "IIII").unpack_from
        per_sec = self.per_sec
        linktype = self.linktype
        limit = self.caplen_limit
        buf, pos, base = self._buf, 0, self.offset   # base = file offset of buf[0]
        number = 0
        while True:
            if take is not None:
                pos, number, _ = take(buf, pos, number)
                self.packets = number
                self.offset = base + pos
            if len(buf) - pos >= PCAP_RECORD_LEN:
                sec, frac, caplen, _ = unpack_record(buf, pos)
                stop = pos + PCAP_RECORD_LEN + caplen
                if caplen <= limit and stop <= len(buf):
                    number += 1
                    self.packets = number
                    self.offset = base + stop
                    yield number, (sec * per_sec + frac) / per_sec, linktype, bytes(buf[pos + PCAP_RECORD_LEN:stop])
                    pos = stop
                    continue
            buf, pos, base = self._next_pcap_buffer(buf, pos, base)
            if buf is None:
                return

    def _next_pcap_buffer(self, buf: bytes, pos: int, base: int) -> tuple[bytes | None, int, int]:
        """The record at ``buf[pos]`` is not whole in the buffer, or is corrupt: refill so
        that it is whole, or record why the walk ends there (buf None)."""
        if len(buf) - pos < PCAP_RECORD_LEN:
            base += pos
            buf, pos = self._refill(buf, pos, PCAP_RECORD_LEN), 0
            if not buf:
                return None, 0, base
            if len(buf) < PCAP_RECORD_LEN:
                self._fail(base, "truncated packet record header",
                           f"{PCAP_RECORD_LEN} bytes needed, {len(buf)} present")
                return None, 0, base
        caplen = struct.unpack_from(self.byte_order + "I", buf, pos + 8)[0]
        if caplen > self.caplen_limit:
            self._fail(base + pos, "corrupt packet record",
                       f"captured length {caplen} exceeds limit {self.caplen_limit}")
            return None, 0, base
        if pos + PCAP_RECORD_LEN + caplen > len(buf):
            base += pos
            buf, pos = self._refill(buf, pos, PCAP_RECORD_LEN + caplen), 0
            if PCAP_RECORD_LEN + caplen > len(buf):
                self._fail(base, "truncated packet record",
                           f"header says {caplen} bytes, {len(buf) - PCAP_RECORD_LEN} present")
                return None, 0, base
        return buf, pos, base

    def _iter_pcapng(self, take: Callable | None):
        buf, pos, base = self._buf, 0, 0
        end_buf = len(buf)
        order = ">"
        head, epb, u32 = _PCAPNG_STRUCTS[">"]
        interfaces: list[_Interface] = []
        last_ts = 0.0
        number = 0
        while True:
            if take is not None and interfaces:
                pos, number, taken_ts = take(buf, pos, number, order, interfaces)
                if taken_ts is not None:
                    last_ts = taken_ts
                    self.packets = number
                    self.offset = base + pos
            if end_buf - pos < 12:
                base += pos
                buf, pos = self._refill(buf, pos, 12), 0
                end_buf = len(buf)
                if end_buf == 0:
                    return
                if end_buf < 12:
                    self._fail(base, "truncated block header",
                               f"12 bytes needed, {end_buf} present")
                    return
            btype, length = head(buf, pos)
            if btype == BT_SHB:   # same value in both byte orders: the section sets the order
                section_order = PCAPNG_BYTE_ORDER.get(bytes(buf[pos + 8:pos + 12]))
                if section_order is None:
                    self._fail(base + pos, "corrupt section header block",
                               f"byte-order magic 0x{buf[pos + 8:pos + 12].hex()}")
                    return
                order = section_order
                head, epb, u32 = _PCAPNG_STRUCTS[order]
                btype, length = head(buf, pos)
                interfaces = []
            if length < 12 or length % 4 or length > MAX_BLOCK_SIZE or (
                btype == BT_SHB and length < SHB_MIN_LEN
            ):
                self._fail(base + pos, "corrupt block",
                           f"total length {length} (type 0x{btype:08x})")
                return
            stop = pos + length
            if stop > end_buf:
                base += pos
                buf, pos = self._refill(buf, pos, length), 0
                end_buf = len(buf)
                stop = length
                if stop > end_buf:
                    self._fail(base, "truncated block",
                               f"header says {length} bytes, {end_buf} present")
                    return
            (trailer,) = u32(buf, stop - 4)
            if trailer != length:
                self._fail(base + pos, "corrupt block",
                           f"trailing length {trailer} differs from leading length {length}")
                return
            body = pos + 8
            body_end = stop - 4
            problem = None
            if btype == BT_EPB or btype == BT_PB:
                if body_end - body < EPB_FIXED:
                    problem = f"block of {length} bytes too short for a packet"
                else:
                    if btype == BT_EPB:
                        ifid, ts_hi, ts_lo, caplen, _ = epb(buf, body)
                    else:   # obsolete PB: 2-byte interface id and a drops count
                        ifid, _, ts_hi, ts_lo, caplen, _ = struct.unpack_from(
                            order + "HHIIII", buf, body)
                    start = body + EPB_FIXED
                    if ifid >= len(interfaces):
                        problem = f"packet for undefined interface {ifid}"
                    elif start + caplen > body_end:
                        problem = f"captured length {caplen} overruns the block"
                    else:
                        iface = interfaces[ifid]
                        last_ts = ((ts_hi << 32 | ts_lo) + iface.offset_units) / iface.per_sec
                        frame = bytes(buf[start:start + caplen])
            elif btype == BT_SPB:
                if not interfaces:
                    problem = "simple packet block before any interface"
                elif body_end - body < SPB_FIXED:
                    problem = f"block of {length} bytes too short for a packet"
                else:
                    (origlen,) = u32(buf, body)
                    iface = interfaces[0]
                    start = body + SPB_FIXED
                    caplen = min(origlen, body_end - start)
                    if iface.snaplen:
                        caplen = min(caplen, iface.snaplen)
                    frame = bytes(buf[start:start + caplen])   # no timestamp: last_ts carries on
            else:
                if btype == BT_IDB:
                    iface = self._interface(buf, body, body_end, order)
                    if isinstance(iface, str):
                        self._fail(base + pos, "corrupt interface description block", iface)
                        return
                    interfaces.append(iface)
                self.offset = base + stop
                pos = stop
                continue
            if problem is not None:
                self._fail(base + pos, "corrupt packet block", problem)
                return
            number += 1
            self.packets = number
            self.offset = base + stop
            yield number, last_ts, iface.linktype, frame
            pos = stop

    @staticmethod
    def _interface(buf: bytes, body: int, body_end: int, order: str) -> _Interface | str:
        """Parses an IDB body; a str says what is wrong with it."""
        if body_end - body < 8:
            return f"body of {body_end - body} bytes, 8 needed"
        linktype, _, snaplen = struct.unpack_from(order + "HHI", buf, body)
        per_sec, offset_sec = DEFAULT_TSRESOL, 0
        opt = body + 8
        while opt + 4 <= body_end:
            code, olen = struct.unpack_from(order + "HH", buf, opt)
            value = opt + 4
            if value + olen > body_end:
                return f"option {code} of {olen} bytes overruns the block"
            if code == OPT_END:
                break
            if code == OPT_IF_TSRESOL and olen >= 1:
                resol = buf[value]
                per_sec = 2 ** (resol & 0x7F) if resol & 0x80 else 10 ** resol
            elif code == OPT_IF_TSOFFSET and olen >= 8:
                (offset_sec,) = struct.unpack_from(order + "q", buf, value)
            opt = value + (olen + 3) // 4 * 4
        return _Interface(linktype, snaplen, per_sec, offset_sec)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
