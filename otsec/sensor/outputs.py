"""Where the sensor's findings go besides SQLite: JSON lines and syslog (RFC 5424, CEF).

A finding is emitted as a *record*: the finding's JSON (as ``otsec check --json`` writes
it) plus ``type``, ``state`` ("new" the first time, "update" when its count grew),
``run``/``seq`` (its identity in SQLite) and ``evidence_pcap``.

RFC 5424 message, as sent::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID param="v" ...] MSG
    <131>1 2026-01-06T14:00:05.120000Z sensor-1 otsec 4242 OTSEC-UNSAFE-003
        [otsec@32473 rule="OTSEC-UNSAFE-003" severity="critical" ...] PLC Stop on ...

    PRI = facility * 8 + syslog severity; SD-ID uses the documentation enterprise number
    32473 (RFC 5612); in param values '"', '\\' and ']' are escaped with a backslash.

CEF (ArcSight Common Event Format, carried as the syslog MSG with ``--syslog-format cef``)::

    CEF:0|otsec|otsec|VERSION|RULE-ID|TITLE|SEVERITY 0-10|key=value key=value ...

    header fields escape '\\' and '|'; extension values escape '\\', '=' and newlines.

Transports: UDP (one message per datagram, RFC 5426, cut at a character boundary), TCP
with octet-counting framing (``LEN SP MSG``, RFC 6587), or a local unix socket (datagram,
as /dev/log). Every transport is non-blocking: a collector that is down, slow or
black-holed costs queued messages, never capture time.

Text from the wire (names, OPC UA node ids in an explanation) may hold control characters;
:func:`one_line` makes them visible escapes wherever a line-oriented reader follows.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import select
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

from otsec import __version__
from otsec.paths import unwritable
from otsec.report.wording import CONTROL_CHARS, one_line

#: Syslog facilities by name (RFC 5424 table 1).
FACILITIES = {"user": 1, "daemon": 3, "auth": 4, "local0": 16, "local1": 17, "local2": 18,
              "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}
#: otsec severity -> syslog severity (2 crit, 3 err, 4 warning, 5 notice, 6 info).
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
#: otsec severity -> CEF severity (0-10).
CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3, "info": 1}
SD_ID = "otsec@32473"
#: Longest message sent in one UDP datagram (RFC 5426 asks receivers for 2048 at least).
MAX_UDP_MESSAGE = 2048
#: Messages kept while a TCP collector is unreachable; older ones are dropped (and counted).
MAX_PENDING = 1000
#: Seconds between reconnection attempts, so a dead collector never slows the capture loop.
RECONNECT_SECONDS = 5.0
#: A TCP connection attempt still pending after this many seconds is given up (black hole).
CONNECT_TIMEOUT = 5.0
#: At shutdown, how long the queue may take to drain to a reachable collector.
CLOSE_GRACE = 2.0
SYSLOG_FORMATS = ("rfc5424", "cef")
#: RFC 5424 HOSTNAME is 1-255 printable US-ASCII characters.
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


class OutputError(Exception):
    """An output that cannot be set up (bad target, unwritable file)."""


def check_syslog_options(facility: str, msg_format: str) -> None:
    """``--syslog-facility``/``--syslog-format``, checked even without ``--syslog``: a typo
    in a unit file must not wait for the day a collector is added."""
    if facility not in FACILITIES:
        raise OutputError(f"--syslog-facility {facility!r}: expected one of {', '.join(FACILITIES)}")
    if msg_format not in SYSLOG_FORMATS:
        raise OutputError(f"--syslog-format {msg_format!r}: expected rfc5424 or cef")


def check_file(path: Path, option: str) -> None:
    """A file that can be created or appended to; checked before anything is created."""
    why = unwritable(path)
    if why:
        raise OutputError(f"{option} {path}: cannot write: {why}")


def check_directory(path: Path, option: str) -> None:
    """A writable directory, or one that can be made (its nearest existing ancestor is a
    writable directory); checked before anything is created."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise OutputError(f"{option} {path}: not a directory{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write: permission denied")


# --- JSON lines --------------------------------------------------------------------------

class JsonLinesOutput:
    """Appends one JSON object per line, written straight to the file (tail -f friendly).

    The file is reopened when its name no longer points at the open file (logrotate moved
    or deleted it) and on :meth:`reopen` (SIGHUP). A failed write (disk full) is counted
    in ``dropped`` and logged once; the sensor keeps running, and a line cut short by
    the failure is ended before the next record so that each later line parses.
    """

    def __init__(self, path: str | Path, log=None):
        self.path = Path(path)
        self.log = log
        self.dropped = 0
        self._failing = False
        self._cut = False          # the last write stopped inside a line
        self.fd = -1
        try:
            self._open()
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        own = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._cut = False
        self._open()

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        try:
            if self.fd < 0 or self._moved():
                self.reopen()
            if self._cut:
                data = b"\n" + data
            view = memoryview(data)
            while view:
                self._cut = True
                view = view[os.write(self.fd, view):]
            self._cut = False
        except OSError as exc:
            self.dropped += 1
            if not self._failing and self.log is not None:
                self.log.error("--json %s: %s; records are lost until it is writable again "
                               "(SQLite keeps the findings)", self.path, exc.strerror or exc)
            self._failing = True
            return
        if self._failing and self.log is not None:
            self.log.info("--json %s: writable again", self.path)
        self._failing = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- formatting --------------------------------------------------------------------------

def _sd_value(value: Any) -> str:
    text = one_line(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _endpoint(ep: dict | None) -> str:
    if not ep:
        return "-"
    return f"{ep.get('name') or ep.get('ip')}" + (f"/{ep['zone']}" if ep.get("zone") else "")


def cef_escape_header(text: str) -> str:
    """Header field: '\\' and '|' escaped; a header cannot hold line breaks or controls."""
    return CONTROL_CHARS.sub(" ", str(text).replace("\\", "\\\\").replace("|", "\\|"))


def cef_escape_value(text: Any) -> str:
    """Extension value: '\\' and '=' escaped, line breaks as \\n / \\r, other controls as spaces."""
    text = (str(text).replace("\\", "\\\\").replace("=", "\\=")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r"))
    return CONTROL_CHARS.sub(" ", text)


def format_cef(record: dict[str, Any]) -> str:
    """One finding record as a CEF:0 line (keys from the CEF dictionary, cs1-cs6 labelled)."""
    ev = record["evidence"]
    src, dst = record.get("src") or {}, record.get("dst") or {}
    ext: list[tuple[str, Any]] = [
        ("rt", int(ev["last_ts"] * 1000)), ("start", int(ev["first_ts"] * 1000)),
        ("end", int(ev["last_ts"] * 1000)), ("cnt", ev["count"]), ("cat", record["kind"]),
        ("src", src.get("ip")), ("shost", src.get("name")), ("smac", src.get("mac")),
        ("dst", dst.get("ip")), ("dhost", dst.get("name")), ("dmac", dst.get("mac")),
        ("dpt", record.get("port")), ("app", record.get("protocol")),
        ("cs1Label", "srcZone"), ("cs1", src.get("zone")),
        ("cs2Label", "dstZone"), ("cs2", dst.get("zone")),
        ("cs3Label", "evidencePcap"), ("cs3", record.get("evidence_pcap")),
        ("cs4Label", "findingState"), ("cs4", record.get("state")),
        ("externalId", f"{record.get('run')}-{record.get('seq')}"),
        ("msg", record["explanation"]),
    ]
    body = " ".join(f"{k}={cef_escape_value(v)}" for k, v in ext if v is not None and v != "")
    header = "|".join(cef_escape_header(x) for x in (
        "CEF:0", "otsec", "otsec", __version__, record["rule"], record["title"],
        str(CEF_SEVERITY[record["severity"]])))
    return f"{header}|{body}"


def format_rfc5424(record: dict[str, Any], facility: int, hostname: str, msg_format: str,
                   now: float | None = None) -> str:
    """One finding record as an RFC 5424 syslog message (MSG plain text or CEF)."""
    pri = facility * 8 + SYSLOG_SEVERITY[record["severity"]]
    ts = dt.datetime.fromtimestamp(now if now is not None else record["evidence"]["last_ts"],
                                   dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ev = record["evidence"]
    params = {
        "rule": record["rule"], "severity": record["severity"], "state": record.get("state"),
        "src": _endpoint(record.get("src")), "dst": _endpoint(record.get("dst")),
        "protocol": record.get("protocol"), "port": record.get("port"), "count": ev["count"],
        "first_packet": ev["first_packet"], "capture": ev["last_capture"],
        "evidence": record.get("evidence_pcap"),
    }
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()
                               if v is not None) + "]"
    msg = format_cef(record) if msg_format == "cef" else one_line(record["explanation"])
    host = _NOT_PRINTUSASCII.sub("_", hostname or "-")[:255]
    return f"<{pri}>1 {ts} {host} otsec {os.getpid()} {record['rule']} {sd} {msg}"


# --- syslog transport --------------------------------------------------------------------

def parse_target(target: str) -> tuple[str, Any]:
    """``udp://HOST:PORT``, ``tcp://HOST:PORT`` or ``unix:PATH`` -> (scheme, address)."""
    if target.startswith("unix:"):
        path = target[5:].removeprefix("//")
        if not path:
            raise OutputError(f"--syslog {target!r}: expected unix:PATH")
        return "unix", path
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in ("udp", "tcp"):
        raise OutputError(f"--syslog {target!r}: expected udp://HOST:PORT, tcp://HOST:PORT or unix:PATH")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OutputError(f"--syslog {target!r}: expected a host and a port between 1 and 65535")
    return scheme, (host, int(port))


class SyslogOutput:
    """Sends finding records to a syslog collector; never raises and never blocks once constructed.

    A collector that is down costs messages, not the sensor: UDP datagrams are
    fire-and-forget, TCP and unix-socket messages wait in a bounded queue and go out when
    the collector is back (a message in flight when a TCP connection breaks is sent again,
    whole, on the next one, so the octet-counting frames stay intact). ``sent``/``dropped``
    count what happened. RFC 6587 has no acknowledgements: what the kernel had accepted
    for a collector that then died is lost without notice.
    """

    def __init__(self, target: str, facility: str = "local4", msg_format: str = "rfc5424",
                 log=None):
        check_syslog_options(facility, msg_format)
        self.scheme, self.address = parse_target(target)
        self.target = target
        self.facility = FACILITIES[facility]
        self.msg_format = msg_format
        self.hostname = socket.gethostname()
        self.log = log
        self.sock: socket.socket | None = None
        self.pending: deque[bytes] = deque()
        self.sent = 0
        self.dropped = 0
        self._offset = 0               # bytes of pending[0] already sent on this connection
        self._connecting_since: float | None = None
        self._udp_addr = None          # resolved once (a hostname would be looked up per datagram)
        self._failing = False
        self._retry_at = 0.0

    def _resolve(self, kind: int) -> tuple:
        host, port = self.address
        family, _, proto, _, addr = socket.getaddrinfo(host, port, type=kind)[0]
        return family, proto, addr

    def _connect(self) -> socket.socket:
        if self.scheme == "tcp":
            family, proto, addr = self._resolve(socket.SOCK_STREAM)
            s = socket.socket(family, socket.SOCK_STREAM, proto)
            s.setblocking(False)
            err = s.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                s.close()
                raise OSError(err, os.strerror(err))
            self._connecting_since = time.monotonic() if err else None
            return s
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(self.address)
        except OSError:
            s.close()
            raise
        s.setblocking(False)   # a full receiver queue must not stall the capture loop
        return s

    def write(self, record: dict[str, Any]) -> None:
        if record.get("suppressed"):
            return   # accepted risks stay in SQLite/JSON, they do not page anyone
        data = format_rfc5424(record, self.facility, self.hostname, self.msg_format).encode("utf-8")
        if self.scheme == "udp":
            # cut at a character boundary: a split UTF-8 sequence would make the MSG invalid
            self._send_datagram(data[:MAX_UDP_MESSAGE].decode("utf-8", "ignore").encode("utf-8"))
            return
        if self.scheme == "tcp":
            data = str(len(data)).encode() + b" " + data
        self.pending.append(data)
        if len(self.pending) > MAX_PENDING:
            # never the message half sent on this connection: its frame must be completed
            del self.pending[1 if self._offset else 0]
            self.dropped += 1
        self.flush()

    def _send_datagram(self, data: bytes) -> None:
        try:
            if self._udp_addr is None:
                if time.monotonic() < self._retry_at:
                    self.dropped += 1
                    return
                family, _, addr = self._resolve(socket.SOCK_DGRAM)
                self.sock = socket.socket(family, socket.SOCK_DGRAM)
                self.sock.setblocking(False)
                self._udp_addr = addr
            self.sock.sendto(data, self._udp_addr)
            self.sent += 1
            self._recovered()
        except OSError as exc:
            self.dropped += 1
            if self._udp_addr is None:
                self._retry_at = time.monotonic() + RECONNECT_SECONDS
            self._failed(exc)

    def _connected(self) -> bool:
        """Whether the socket can carry data now (a pending TCP connect may have finished)."""
        s = self.sock
        if self._connecting_since is not None:
            _, writable, _ = select.select([], [s], [], 0)
            if not writable:
                if time.monotonic() - self._connecting_since > CONNECT_TIMEOUT:
                    raise TimeoutError(errno.ETIMEDOUT, "connection timed out")
                return False
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            self._connecting_since = None
        elif self.scheme == "tcp" and select.select([s], [], [], 0)[0] and not s.recv(4096):
            raise ConnectionResetError(errno.ECONNRESET, "closed by the collector")
        return True

    def flush(self) -> None:
        """Send what is queued (TCP/unix) without blocking; what cannot go now waits."""
        while self.pending:
            if self.sock is None and time.monotonic() < self._retry_at:
                return
            try:
                if self.sock is None:
                    self.sock = self._connect()
                if not self._connected():
                    return
                head = self.pending[0]
                if self.scheme == "tcp":
                    self._offset += self.sock.send(memoryview(head)[self._offset:])
                    if self._offset < len(head):
                        continue
                else:
                    self.sock.send(head)
            except BlockingIOError:
                return      # the receiver is busy: the queue waits for the next flush
            except OSError as exc:
                self._down(exc)
                return
            self.pending.popleft()
            self._offset = 0
            self.sent += 1
            self._recovered()

    def _down(self, exc: OSError) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._offset = 0
        self._connecting_since = None
        self._retry_at = time.monotonic() + RECONNECT_SECONDS
        self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if not self._failing and self.log is not None:
            self.log.error("syslog %s: %s; findings are kept in SQLite, syslog retries",
                           self.target, exc.strerror or exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing and self.log is not None:
            self.log.info("syslog %s: reachable again", self.target)
        self._failing = False

    def close(self) -> None:
        """One last attempt, for at most ``CLOSE_GRACE`` seconds, to send what is queued."""
        self._retry_at = 0.0
        deadline = time.monotonic() + CLOSE_GRACE
        while self.pending and time.monotonic() < deadline:
            self.flush()
            if self.sock is None:
                break
            if self.pending:
                select.select([], [self.sock], [], 0.05)
        if self.pending:
            self.dropped += len(self.pending)
            self.pending.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
