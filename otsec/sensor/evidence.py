"""Evidence capture: the packets of the conversations that raised a finding, as pcap files.

Each new finding opens one file ``otsec-evidence-<UTC time>-<rule>-<run>-<seq>.pcap`` in the
evidence directory. It receives the matching packets still in a small ring of recent
traffic (what led up to the finding) and then every later matching packet, until the
conversation has been quiet for ``WATCH_IDLE`` seconds or the file reaches its own cap.
A packet matches a finding when it goes between the finding's source and destination
(either direction; only to/from the source when the finding has no destination) and, when
the finding names a port, uses that port. The directory is a ring: when the files written
by otsec exceed the total cap, the oldest closed ones are deleted. The files are indexed in
memory (one directory listing at start), so a burst of findings does not list the
directory once per finding. Evidence is best effort: a full disk or a removed directory
costs evidence files (logged, counted in ``files_failed``), never the capture.

Classic pcap, microsecond timestamps, little-endian::

    global header: a1b2c3d4 | 2.4 | thiszone 0 | sigfigs 0 | snaplen | linktype
    record:        ts sec | ts usec | caplen | origlen | frame
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import struct
from collections import OrderedDict, deque
from pathlib import Path

from otsec.capture import parse_packet

PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_USEC = 0xA1B2C3D4
SNAPLEN = 262144
#: Recent packets kept for the lead-up of a finding (bounded by bytes and by count).
RING_BYTES = 4 * 1024 * 1024
RING_PACKETS = 20_000
#: A finding's file is closed after this many seconds (capture time) without a match.
WATCH_IDLE = 120.0
#: Findings whose conversations are followed at once; the oldest is closed beyond it.
MAX_WATCHES = 64
FILE_PREFIX = "otsec-evidence-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _packed(ip: str | None) -> bytes | None:
    if not ip:
        return None
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except OSError:
        return None


class _Watch:
    __slots__ = ("path", "fh", "a", "b", "port", "linktype", "size", "last_ts", "skipped")

    def __init__(self, path: Path, a: bytes, b: bytes | None, port: int | None, linktype: int, ts: float):
        self.path = path
        self.fh = open(path, "wb")
        self.fh.write(PCAP_HEADER.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, linktype))
        self.size = PCAP_HEADER.size
        self.a, self.b, self.port, self.linktype = a, b, port, linktype
        self.last_ts = ts
        self.skipped = 0

    def matches(self, pkt: tuple) -> bool:
        sip, dip, sport, dport = pkt[2], pkt[3], pkt[5], pkt[6]
        a, b = self.a, self.b
        if b is None:
            hit = sip == a or dip == a
        else:
            hit = (sip == a and dip == b) or (sip == b and dip == a)
        return hit and (self.port is None or self.port == sport or self.port == dport)

    def write(self, ts: float, linktype: int, frame: bytes) -> int:
        if linktype != self.linktype:   # one link type per pcap file
            self.skipped += 1
            return 0
        sec = int(ts)
        self.fh.write(PCAP_RECORD.pack(sec, int(round((ts - sec) * 1e6)) % 1_000_000,
                                       len(frame), len(frame)))
        self.fh.write(frame)
        self.last_ts = ts
        n = PCAP_RECORD.size + len(frame)
        self.size += n
        return n


class EvidenceRecorder:
    """Writes per-finding pcaps into ``directory``, keeping the directory under ``max_bytes``."""

    def __init__(self, directory: str | Path, max_bytes: int, per_finding_bytes: int, log=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.per_finding_bytes = min(per_finding_bytes, max_bytes)
        self.log = log
        self.ring: deque[tuple[float, int, bytes]] = deque()
        self.ring_bytes = 0
        self.watches: dict[object, _Watch] = {}
        self.files_written = 0
        self.files_deleted = 0
        self.files_failed = 0
        #: closed evidence files, oldest first, with their sizes
        self.closed: OrderedDict[Path, int] = OrderedDict()
        self.closed_bytes = 0
        self._unchecked = 0
        found = []
        for path in self.dir.glob(FILE_PREFIX + "*.pcap"):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_mtime_ns, path.name, path, st.st_size))
        for _, _, path, size in sorted(found):
            self.closed[path] = size
            self.closed_bytes += size

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        """Every captured packet: into the ring, and into the files of matching findings."""
        self.ring.append((ts, linktype, frame))
        self.ring_bytes += len(frame)
        while self.ring_bytes > RING_BYTES or len(self.ring) > RING_PACKETS:
            self.ring_bytes -= len(self.ring.popleft()[2])
        if not self.watches:
            return
        pkt = parse_packet(linktype, frame)
        if pkt.__class__ is str:
            return
        for key, w in list(self.watches.items()):
            if w.matches(pkt):
                self._write(key, w, ts, linktype, frame)
            elif ts - w.last_ts > WATCH_IDLE:
                self._close(key)

    def start(self, key: object, rule: str, src_ip: str | None, dst_ip: str | None,
              port: int | None, ts: float) -> str | None:
        """Open the evidence file of a new finding; returns its path (None without a source
        IP, or when the file cannot be written)."""
        a = _packed(src_ip)
        if a is None or not self.ring:
            return None
        if len(self.watches) >= MAX_WATCHES:
            oldest = min(self.watches, key=lambda k: self.watches[k].last_ts)
            self._close(oldest)
        stamp = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = _UNSAFE.sub("_", f"{FILE_PREFIX}{stamp}-{rule}-{key}.pcap")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)   # removed while running: made again
            w = _Watch(self.dir / name, a, _packed(dst_ip), port, self.ring[-1][1], ts)
        except OSError as exc:
            self._failed(self.dir / name, exc)
            return None
        self.watches[key] = w
        self.files_written += 1
        for rts, linktype, frame in list(self.ring):
            pkt = parse_packet(linktype, frame)
            if pkt.__class__ is not str and w.matches(pkt):
                self._write(key, w, rts, linktype, frame)
                if key not in self.watches:
                    break
        self._rotate()
        return str(w.path)

    def _failed(self, path: Path, exc: OSError) -> None:
        self.files_failed += 1
        if self.log is not None:
            self.log.error("evidence %s: cannot write: %s", path, exc.strerror or exc)

    def _write(self, key: object, w: _Watch, ts: float, linktype: int, frame: bytes) -> None:
        try:
            self._unchecked += w.write(ts, linktype, frame)
        except OSError as exc:       # disk full: the file keeps what it has, the finding its path
            self._failed(w.path, exc)
            self._close(key)
            return
        if w.size >= self.per_finding_bytes:
            self._close(key)
        elif self._unchecked >= self.max_bytes // 16:
            self._rotate()

    def _close(self, key: object) -> None:
        w = self.watches.pop(key)
        try:
            w.fh.close()
        except OSError as exc:
            self._failed(w.path, exc)
        self.closed[w.path] = w.size
        self.closed_bytes += w.size

    def _rotate(self) -> None:
        """Delete the oldest closed evidence files until the directory is under its cap."""
        self._unchecked = 0
        total = self.closed_bytes + sum(w.size for w in self.watches.values())
        while total > self.max_bytes and self.closed:
            path, size = self.closed.popitem(last=False)
            self.closed_bytes -= size
            total -= size
            try:
                path.unlink()
            except FileNotFoundError:
                continue             # removed by someone else: nothing to free, nothing to count
            except OSError:
                continue
            self.files_deleted += 1

    def close(self) -> None:
        for key in list(self.watches):
            self._close(key)
        self._rotate()
