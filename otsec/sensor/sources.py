"""Packet sources of the sensor: a live interface (libpcap) or a directory of rotated captures.

Both hand packets to a *sink* (``set_source(name)`` then ``feed(pkt_no, ts, linktype,
frame)``, the engine's own calls) in bounded batches, and return within ``timeout``
seconds when there is nothing to read, so the run loop can flush, report and react to
signals at any time.

Live capture uses pcapy-ng (see docs/sensor.md for the choice). Its handle is switched to
non-blocking mode and waited on with ``select``: with TPACKET_V3, libpcap's own read
timeout only fires once a packet has arrived, so a silent link would block forever.
Kernel counters (``pcap_stats``: received, dropped for lack of buffer space, dropped by
the interface) restart with each handle, so the source keeps running totals across
reopenings.

Both sources check their input when constructed, before the sensor creates its database:
a missing directory, an interface name that does not exist (a typo: an interface that
disappears later is waited for), a denied capture permission or a bad BPF filter is a
:class:`SourceError` at once, not a retry loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import struct
import time
from pathlib import Path

from otsec.capture import CaptureError, CaptureReader

#: libpcap pcap_activate() results (pcap/pcap.h) that deserve a plain-words message.
ACTIVATE_ERRORS = {
    -1: "generic error", -5: "no such network interface", -6: "monitor mode not supported",
    -8: "permission denied (needs root or CAP_NET_RAW and CAP_NET_ADMIN)",
    -9: "interface is down", -11: "promiscuous mode not permitted",
}
#: Activation failures that retrying cannot fix: the sensor stops with an error instead.
FATAL_ACTIVATE = (-8, -11)
#: Where Linux lists the network interfaces of the sensor's namespace.
SYS_CLASS_NET = Path("/sys/class/net")
#: Interface names listed at most in the "no such network interface" message.
MAX_LISTED = 20
#: Reconnection back-off for a live interface: first delay, factor, ceiling (seconds).
RETRY_FIRST, RETRY_FACTOR, RETRY_MAX = 1.0, 2.0, 30.0
#: Bytes hashed to recognise a capture file again (its header and first packets).
HEAD_BYTES = 4096
#: Seconds between directory scans when idle.
SCAN_INTERVAL = 1.0
#: Names never taken as captures: hidden files and files still being written under a temporary name.
IGNORED_NAME = re.compile(r"^\.|\.(tmp|part|partial|swp)$")
#: pcapy-ng next_batch() metadata record: sec, usec, offset, caplen (native byte order).
_META = struct.Struct("=IIII")


class SourceError(Exception):
    """A source that cannot work at all (bad filter, no permission, missing directory)."""


def network_interfaces() -> list[str] | None:
    """Names of the network interfaces here (sorted), or None when the system cannot say."""
    try:
        return sorted(os.listdir(SYS_CLASS_NET))
    except OSError:
        return None


def check_interface(pcapy, name: str) -> bool:
    """Whether ``name`` is a network interface (True) or a libpcap pseudo-device such as
    ``any`` or ``nflog`` (False); anything else is a typo: :class:`SourceError` naming
    what exists."""
    interfaces = network_interfaces()
    if interfaces is None:
        return False       # the system cannot say: libpcap will
    if name in interfaces:
        return True
    try:
        if name in pcapy.findalldevs():
            return False
    except pcapy.PcapError:
        pass
    listed = interfaces[:MAX_LISTED] + (["..."] if len(interfaces) > MAX_LISTED else [])
    raise SourceError(f"--interface {name}: no such network interface "
                      f"(available: {', '.join(listed) or 'none'})")


class LiveSource:
    """A live interface through libpcap, reopened with back-off when it fails or goes down.

    The first open happens here, so that what retrying cannot fix (a typo in the name, no
    permission, a bad filter) raises :class:`SourceError` before anything is created; an
    interface that exists but cannot be opened yet is reported by :meth:`start` and retried.
    """

    def __init__(self, interface: str, snaplen: int = 262144, promisc: bool = True,
                 bpf: str | None = None, buffer_mb: int = 64, log=None,
                 retry_first: float = RETRY_FIRST):
        try:
            import pcapy   # imported here: only live capture needs the binding
        except ImportError:
            raise SourceError(f"--interface {interface}: live capture needs pcapy-ng "
                              "(python3 -m pip install 'otsec[sensor]')") from None
        #: a real network interface (not ``any``): its absence later means it was deleted
        self.netdev = check_interface(pcapy, interface)
        self.pcapy = pcapy
        self.name = interface
        self.snaplen, self.promisc, self.bpf, self.buffer_mb = snaplen, promisc, bpf, buffer_mb
        self.log = log
        self.handle = None
        self.fd = -1
        self.linktype = 1
        self.pkt_no = 0
        self.retry_first = retry_first
        self.delay = retry_first
        self.retry_at = 0.0
        self.outages = 0
        self._closed_totals = [0, 0, 0]   # received, dropped, interface-dropped of past handles
        self._down_since: float | None = None
        self._first_error: str | None = None
        try:
            self._open()
        except pcapy.PcapError as exc:
            self._first_error = str(exc)

    def _open(self) -> None:
        pcapy = self.pcapy
        h = pcapy.create(self.name)
        h.set_snaplen(self.snaplen)
        h.set_promisc(1 if self.promisc else 0)
        h.set_timeout(100)
        h.set_buffer_size(self.buffer_mb * 1024 * 1024)
        rc = h.activate()
        if rc < 0:
            h.close()
            reason = ACTIVATE_ERRORS.get(rc, f"pcap_activate error {rc}")
            if rc in FATAL_ACTIVATE:
                raise SourceError(f"interface {self.name}: {reason}")
            raise pcapy.PcapError(reason)
        if self.bpf:
            try:
                h.setfilter(self.bpf)
            except pcapy.PcapError as exc:
                h.close()
                raise SourceError(f"--bpf {self.bpf!r}: {exc}") from None
        h.setnonblock(1)
        self.handle, self.fd, self.linktype = h, h.getfd(), h.datalink()

    def start(self) -> None:
        """Report the first open (made by the constructor): capturing, or down and retried
        like a later outage."""
        if self.handle is None:
            self._lost(self._first_error)
        else:
            self._opened()

    def _try_open(self) -> None:
        try:
            self._open()
        except self.pcapy.PcapError as exc:
            self._lost(str(exc))
            return
        self._opened()

    def _opened(self) -> None:
        if self._down_since is not None:
            self.log.warning("interface %s: capturing again after %.0f s", self.name,
                             time.monotonic() - self._down_since)
        self._down_since = None
        self.delay = self.retry_first
        self.log.info("capturing on %s (linktype %d, snaplen %d, %spromiscuous%s)", self.name,
                      self.linktype, self.snaplen, "" if self.promisc else "not ",
                      f", filter {self.bpf!r}" if self.bpf else "")

    def _lost(self, reason: str) -> None:
        if self.netdev and self.name not in (network_interfaces() or [self.name]):
            reason = "no such network interface"   # libpcap says "went down" for a deleted one
        if self.handle is not None:
            self._keep_counters()
            self.handle.close()
            self.handle, self.fd = None, -1
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.outages += 1
        self.log.error("interface %s: %s; retrying in %.0f s", self.name, reason, self.delay)
        self.retry_at = time.monotonic() + self.delay
        self.delay = min(self.delay * RETRY_FACTOR, RETRY_MAX)

    def _keep_counters(self) -> None:
        try:
            recv, drop, ifdrop = self.handle.stats()
        except self.pcapy.PcapError:
            return
        for i, n in enumerate((recv, drop, ifdrop)):
            self._closed_totals[i] += n

    def poll(self, sink, budget: int, timeout: float) -> int:
        if self.handle is None:
            wait = self.retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
                return 0
            self._try_open()
            if self.handle is None:
                return 0
            sink.set_source(self.name)
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return 0
            data, meta = self.handle.next_batch(budget)
        except (self.pcapy.PcapError, OSError, ValueError) as exc:
            self._lost(str(exc))
            return 0
        linktype, feed = self.linktype, sink.feed
        n = len(meta) // 16
        for i in range(n):
            sec, usec, off, caplen = _META.unpack_from(meta, i * 16)
            self.pkt_no += 1
            feed(self.pkt_no, sec + usec / 1e6, linktype, data[off:off + caplen])
        return n

    def counters(self) -> dict[str, int]:
        totals = list(self._closed_totals)
        if self.handle is not None:
            try:
                for i, v in enumerate(self.handle.stats()):
                    totals[i] += v
            except self.pcapy.PcapError:
                pass
        return {"kernel_received": totals[0], "kernel_dropped": totals[1],
                "interface_dropped": totals[2], "outages": self.outages}

    def checkpoint(self) -> list[dict]:
        return []

    def idle(self) -> bool:
        """Packets arrive as they happen: on a quiet link the capture clock runs on."""
        return True

    def close(self) -> None:
        if self.handle is not None:
            self._keep_counters()
            self.handle.close()
            self.handle = None


def _natural(name: str) -> list:
    """``cap2`` before ``cap10`` (tcpdump -C numbering is not zero-padded)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


_EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def _head_sha(path: Path, length: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(length)).hexdigest()


class PcapDirSource:
    """Follows a directory that tcpdump/dumpcap fill with rotated files (``-w`` with ``-C``/``-G``).

    A file is read once it is complete: a newer file exists, or it has not changed size or
    modification time for ``settle`` seconds. Progress (packets read) is kept here for the
    files present in the directory and saved with each flush, so a restart neither repeats a
    file nor loses one, and a database that refuses writes for a while does not make a file
    look unread; a file stopped in the middle resumes after its last saved packet. A file is
    recognised by name plus a hash of its first bytes, so a ring buffer (``-W``) that reuses
    a name, or a file that shrank, is read again as a new file. A file that grows after it
    was read (the writer was only quiet) has its new packets read. A damaged file is read up
    to the damage, reported once, and not read again unless it changes.
    """

    def __init__(self, directory: str | Path, settle: float = 10.0, log=None):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            problem = "not a directory" if self.dir.exists() else "no such directory"
            raise SourceError(f"--pcap-dir {directory}: {problem}")
        self.name = str(self.dir)
        #: the SensorStore that holds the progress rows; set by the sensor once its database
        #: is open (after every input was checked)
        self.store = None
        self.settle = settle
        self.log = log
        self.seen: dict[str, tuple[int, int, float]] = {}   # name -> (size, mtime_ns, unchanged since)
        #: progress rows of the files in the directory (loaded from the store on first sight);
        #: only names still present are kept, so both tables stay as small as the directory
        self.known: dict[str, dict | None] = {}
        self.next_scan = 0.0
        self.waiting = False              # the newest file is settling: its packets are still to come
        self.reader: CaptureReader | None = None
        self.packets = None
        self.current: dict | None = None    # progress row of the file being read
        self.dirty: dict[str, dict] = {}    # progress rows not yet saved
        self.files_done = 0

    def start(self) -> None:
        self.log.info("following %s (a file is read when a newer one exists or after %.0f s "
                      "without change)", self.dir, self.settle)

    def idle(self) -> bool:
        """Nothing being read and nothing waiting to be: the capture clock may run on."""
        return self.reader is None and not self.waiting

    # --- choosing the next file -------------------------------------------------------
    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        try:
            entries = list(os.scandir(self.dir))
        except OSError as exc:
            self.log.error("--pcap-dir %s: %s", self.dir, exc.strerror or exc)
            return out
        for e in entries:
            if IGNORED_NAME.search(e.name):
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue
            out.append((Path(e.path), st))
        out.sort(key=lambda x: (x[1].st_mtime_ns, _natural(x[0].name)))
        names = {path.name for path, _ in out}
        for table in (self.seen, self.known):
            for name in [n for n in table if n not in names]:
                del table[name]
        return out

    def _known(self, path: Path, st: os.stat_result) -> dict | None:
        """The progress of this very file (None for a new file)."""
        if path.name not in self.known:
            self.known[path.name] = self.store.file_row(path.name)
        row = self.known[path.name]
        if row is None:
            return None
        if row["mtime_ns"] == st.st_mtime_ns and row["size"] == st.st_size:
            return row
        if st.st_size < row["size"]:
            self.log.warning("%s shrank (%d -> %d bytes): reading it as a new file", path,
                             row["size"], st.st_size)
            return None
        try:
            if _head_sha(path, row["head_len"]) != row["head_sha256"]:
                return None    # same name, other content: a ring buffer reused the name
        except OSError:
            return None
        return row

    def _next_file(self) -> tuple[Path, dict] | None:
        now = time.monotonic()
        files = self._candidates()
        self.waiting = False
        for i, (path, st) in enumerate(files):
            row = self._known(path, st)
            if row is not None and row["status"] in ("done", "error") and row["size"] == st.st_size \
                    and row["mtime_ns"] == st.st_mtime_ns:
                continue
            size_mtime = (st.st_size, st.st_mtime_ns)
            prev = self.seen.get(path.name)
            if prev is None or prev[:2] != size_mtime:
                self.seen[path.name] = (*size_mtime, now)
                prev = self.seen[path.name]
            newer_exists = i < len(files) - 1
            if not newer_exists and now - prev[2] < self.settle:
                self.waiting = True
                return None     # the newest file may still be written
            if row is None:
                row = {"name": path.name, "packets": 0, "error": None}
            elif row["status"] == "done":
                self.log.warning("%s grew after it was read; reading its new packets", path)
            row.update(size=st.st_size, mtime_ns=st.st_mtime_ns, status="partial")
            self.known[path.name] = row
            head_len = min(st.st_size, HEAD_BYTES)
            try:
                row.update(head_len=head_len, head_sha256=_head_sha(path, head_len))
            except OSError as exc:       # reported once: the row says so until the file changes
                error = f"{path}: cannot read: {exc.strerror or exc}"
                row.update(head_len=0, head_sha256=_EMPTY_SHA, status="error", error=error)
                self.dirty[path.name] = row
                self.log.error("%s", error)
                continue
            return path, row
        return None

    # --- reading ----------------------------------------------------------------------
    def poll(self, sink, budget: int, timeout: float) -> int:
        if self.reader is None:
            if time.monotonic() < self.next_scan:
                time.sleep(min(timeout, self.next_scan - time.monotonic()))
                return 0
            nxt = self._next_file()
            if nxt is None:
                self.next_scan = time.monotonic() + min(SCAN_INTERVAL, self.settle / 2 or SCAN_INTERVAL)
                return 0
            path, row = nxt
            try:
                self.reader = CaptureReader(path)
            except (CaptureError, OSError) as exc:
                row.update(status="error", error=str(exc))
                self.dirty[row["name"]] = row
                self.log.error("%s", exc)
                return 0
            self.current = row
            self.packets = iter(self.reader)
            sink.set_source(str(path))
            if row["packets"]:
                self.log.info("%s: resuming after packet %d", path, row["packets"])
            else:
                self.log.info("reading %s", path)
        row = self.current
        done, n = row["packets"], 0
        feed = sink.feed
        try:
            for pkt_no, ts, linktype, frame in self.packets:
                if pkt_no <= done:
                    continue
                feed(pkt_no, ts, linktype, frame)
                row["packets"] = pkt_no
                n += 1
                if n >= budget:
                    self.dirty[row["name"]] = row
                    return n
        except OSError as exc:   # the file became unreadable (I/O error, network share gone)
            self._finish_file(row, f"{self.reader.path}: cannot read after packet "
                                   f"{row['packets']}: {exc.strerror or exc}")
            return n
        self._finish_file(row, self.reader.error)
        return n

    def _finish_file(self, row: dict, error: str | None) -> None:
        if error:
            self.log.warning("%s (packets before it were read; the file is not read again "
                             "unless it changes)", error)
        row.update(status="done", error=error)
        self.dirty[row["name"]] = row
        self.reader.close()
        self.reader = self.packets = self.current = None
        self.files_done += 1
        self.next_scan = 0.0

    def counters(self) -> dict[str, int]:
        return {"files_done": self.files_done}

    def checkpoint(self) -> list[dict]:
        """Progress rows to save with the next flush (then forgotten here)."""
        rows = [dict(r) for r in self.dirty.values()]
        self.dirty.clear()
        if self.current is not None:
            rows = [r for r in rows if r["name"] != self.current["name"]] + [dict(self.current)]
        return rows

    def close(self) -> None:
        if self.reader is not None:
            self.dirty[self.current["name"]] = self.current
            self.reader.close()
            self.reader = self.packets = self.current = None
