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

Transports: UDP (one message per datagram, RFC 5426), TCP with octet-counting framing
(``LEN SP MSG``, RFC 6587), or a local unix socket (datagram, as /dev/log).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from otsec import __version__

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
SYSLOG_FORMATS = ("rfc5424", "cef")


class OutputError(Exception):
    """An output that cannot be set up (bad target, unwritable file)."""


# --- JSON lines --------------------------------------------------------------------------

class JsonLinesOutput:
    """Appends one JSON object per line and flushes after every write (tail -f friendly)."""

    def __init__(self, path: str | Path):
        try:
            self.fh: IO[str] = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


# --- formatting --------------------------------------------------------------------------

def _sd_value(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _endpoint(ep: dict | None) -> str:
    if not ep:
        return "-"
    return f"{ep.get('name') or ep.get('ip')}" + (f"/{ep['zone']}" if ep.get("zone") else "")


def cef_escape_header(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|")


def cef_escape_value(text: Any) -> str:
    return (str(text).replace("\\", "\\\\").replace("=", "\\=")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


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
    msg = format_cef(record) if msg_format == "cef" else record["explanation"]
    host = (hostname or "-")[:255].replace(" ", "_")
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
    """Sends finding records to a syslog collector; never raises once constructed.

    A collector that is down costs messages, not the sensor: UDP and unix datagrams
    are fire-and-forget, TCP messages wait in a bounded queue and go out on reconnect.
    ``sent``/``dropped`` count what happened.
    """

    def __init__(self, target: str, facility: str = "local4", msg_format: str = "rfc5424",
                 log=None):
        if facility not in FACILITIES:
            raise OutputError(f"--syslog-facility {facility!r}: expected one of {', '.join(FACILITIES)}")
        if msg_format not in SYSLOG_FORMATS:
            raise OutputError(f"--syslog-format {msg_format!r}: expected rfc5424 or cef")
        self.scheme, self.address = parse_target(target)
        self.target = target
        self.facility = FACILITIES[facility]
        self.msg_format = msg_format
        self.hostname = socket.gethostname()
        self.log = log
        self.sock: socket.socket | None = None
        self.pending: list[bytes] = []
        self.sent = 0
        self.dropped = 0
        self._failing = False
        self._retry_at = 0.0
        if self.scheme == "udp":
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_DGRAM)

    def _connect(self) -> socket.socket:
        if self.scheme == "tcp":
            return socket.create_connection(self.address, timeout=2)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(self.address)
        s.setblocking(False)   # a full receiver queue must not stall the capture loop
        return s

    def write(self, record: dict[str, Any]) -> None:
        if record.get("suppressed"):
            return   # accepted risks stay in SQLite/JSON, they do not page anyone
        data = format_rfc5424(record, self.facility, self.hostname, self.msg_format).encode("utf-8")
        if self.scheme == "udp":
            self._send_datagram(data[:MAX_UDP_MESSAGE])
            return
        if self.scheme == "tcp":
            data = str(len(data)).encode() + b" " + data
        self.pending.append(data)
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]
            self.dropped += 1
        self.flush()

    def _send_datagram(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.address)
            self.sent += 1
            self._recovered()
        except OSError as exc:
            self.dropped += 1
            self._failed(exc)

    def flush(self) -> None:
        """Send what is queued (TCP/unix); on failure keep it for the next call."""
        while self.pending:
            if self.sock is None and time.monotonic() < self._retry_at:
                return
            try:
                if self.sock is None:
                    self.sock = self._connect()
                if self.scheme == "tcp":
                    self.sock.sendall(self.pending[0])
                else:
                    self.sock.send(self.pending[0])
            except BlockingIOError:
                return      # the local receiver is busy: the queue waits for the next flush
            except OSError as exc:
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                self._retry_at = time.monotonic() + RECONNECT_SECONDS
                self._failed(exc)
                return
            self.pending.pop(0)
            self.sent += 1
            self._recovered()

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
        self._retry_at = 0.0   # one last attempt for what is queued
        self.flush()
        if self.pending:
            self.dropped += len(self.pending)
            self.pending.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
