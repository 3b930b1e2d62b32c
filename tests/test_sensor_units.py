"""Sensor building blocks without a process: durations, RFC 5424/CEF text, syslog
transports on local sockets, evidence pcaps and their size bound."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from otsec.capture import CaptureReader
from otsec.sensor.evidence import EvidenceRecorder
from otsec.sensor.outputs import (
    OutputError, SyslogOutput, cef_escape_header, cef_escape_value, format_cef, format_rfc5424,
    parse_target,
)
from otsec.sensor.runner import parse_duration

INCIDENT = Path(__file__).resolve().parent.parent / "pcaps" / "plant_incident.pcap"

RECORD = {
    "type": "finding", "state": "new", "run": 3, "seq": 7, "rule": "OTSEC-UNSAFE-003",
    "severity": "critical", "kind": "unsafe operation", "title": "unauthorised run-state control",
    "explanation": 'PLC Stop on plc-s7 from hmi-1 [x="y"] a=b|c\\d', "protocol": "s7comm", "port": 102,
    "src": {"ip": "10.40.0.10", "name": "hmi-1", "zone": "control", "mac": None},
    "dst": {"ip": "10.50.0.30", "name": "plc-s7", "zone": "field", "mac": None},
    "evidence": {"count": 2, "first_ts": 1767708080.5, "last_ts": 1767708081.25, "first_packet": 104,
                 "last_packet": 110, "first_capture": "sens0", "last_capture": "sens0"},
    "suppressed": None, "evidence_pcap": "/var/lib/otsec/evidence/x.pcap",
}


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("12h", 43200), ("7d", 604800),
                                          ("90s", 90), ("1.5h", 5400), ("2w", 1209600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "-1d", "0h", "7y", "soon"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rfc5424_header_structured_data_and_escaping():
    msg = format_rfc5424(RECORD, facility=20, hostname="sensor 1", msg_format="rfc5424")
    # <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
    m = re.match(r"<(\d+)>1 (\S+) (\S+) otsec (\d+) (\S+) (\[(?:[^\]\\]|\\.)*\]) (.*)$", msg)
    assert m, msg
    assert m.group(1) == "162"                                  # local4 * 8 + crit
    assert m.group(2) == "2026-01-06T14:01:21.250000Z"          # the finding's last time, UTC
    assert m.group(3) == "sensor_1"                             # no spaces in HOSTNAME
    assert m.group(5) == "OTSEC-UNSAFE-003"
    sd = m.group(6)
    assert sd.startswith("[otsec@32473 rule=\"OTSEC-UNSAFE-003\" severity=\"critical\" state=\"new\"")
    assert 'src="hmi-1/control"' in sd and 'dst="plc-s7/field"' in sd and 'count="2"' in sd
    assert m.group(7) == RECORD["explanation"]


def test_sd_param_escapes_quote_backslash_bracket():
    rec = {**RECORD, "protocol": 'a"b]c\\d'}
    msg = format_rfc5424(rec, 16, "h", "rfc5424")
    assert 'protocol="a\\"b\\]c\\\\d"' in msg


def test_cef_line_fields_and_escaping():
    line = format_cef(RECORD)
    head = line.split("|")
    assert head[:5] == ["CEF:0", "otsec", "otsec", head[3], "OTSEC-UNSAFE-003"]
    assert head[5] == "unauthorised run-state control" and head[6] == "10"
    ext = line.split("|", 7)[7]
    assert "src=10.40.0.10" in ext and "dst=10.50.0.30" in ext and "dpt=102" in ext
    assert "cnt=2" in ext and "rt=1767708081250" in ext and "cs1Label=srcZone cs1=control" in ext
    assert "msg=PLC Stop on plc-s7 from hmi-1 [x\\=\"y\"] a\\=b|c\\\\d" in ext
    assert cef_escape_header("a|b\\c") == "a\\|b\\\\c"
    assert cef_escape_value("x=1\ny") == "x\\=1\\ny"


@pytest.mark.parametrize("target,expected", [
    ("udp://127.0.0.1:514", ("udp", ("127.0.0.1", 514))),
    ("tcp://[::1]:6514", ("tcp", ("::1", 6514))),
    ("unix:/dev/log", ("unix", "/dev/log")),
])
def test_parse_target(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["udp://host", "http://h:1", "tcp://h:0", "unix:", "h:514"])
def test_parse_target_rejects(target):
    with pytest.raises(OutputError):
        parse_target(target)


def test_syslog_udp_one_datagram_per_finding_and_suppressed_skipped():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    out = SyslogOutput(f"udp://127.0.0.1:{rx.getsockname()[1]}", "local0", "cef")
    out.write({**RECORD, "suppressed": {"reason": "accepted"}})
    out.write(RECORD)
    data = rx.recv(65536).decode()
    assert data.startswith("<130>1 ") and "CEF:0|otsec|otsec|" in data
    assert out.sent == 1
    out.close()
    rx.close()


def test_syslog_tcp_octet_counting_and_dead_collector_does_not_raise():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = bytearray()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(2)
        while True:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got.extend(chunk)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    out = SyslogOutput(f"tcp://127.0.0.1:{port}")
    out.write(RECORD)
    out.write({**RECORD, "state": "update"})
    out.close()
    t.join(5)
    srv.close()
    frames, pos = [], 0
    while pos < len(got):                              # LEN SP MSG, LEN SP MSG
        space = got.index(b" ", pos)
        n = int(got[pos:space])
        frames.append(bytes(got[space + 1:space + 1 + n]).decode())
        pos = space + 1 + n
    assert len(frames) == 2 and all(f.startswith("<162>1 ") for f in frames)
    assert 'state="update"' in frames[1]

    dead = SyslogOutput(f"tcp://127.0.0.1:{port}")     # nobody listens any more
    dead.write(RECORD)
    assert dead.sent == 0 and len(dead.pending) == 1
    dead.close()
    assert dead.dropped == 1


def _packets():
    with CaptureReader(INCIDENT) as reader:
        return [(ts, lt, frame) for _, ts, lt, frame in reader]


def test_evidence_holds_only_the_findings_conversation(tmp_path):
    rec = EvidenceRecorder(tmp_path, max_bytes=1 << 20, per_finding_bytes=1 << 20)
    packets = _packets()
    for ts, lt, frame in packets[:110]:
        rec.packet(ts, lt, frame)
    path = rec.start("1-1", "OTSEC-UNSAFE-003", "10.40.0.10", "10.50.0.30", 102, packets[109][0])
    for ts, lt, frame in packets[110:]:
        rec.packet(ts, lt, frame)
    rec.close()
    with CaptureReader(path) as reader:
        frames = [f for _, _, _, f in reader]
    def conversation(f: bytes) -> bool:
        return ({f[26:30], f[30:34]} == {bytes([10, 40, 0, 10]), bytes([10, 50, 0, 30])}
                and 102 in (int.from_bytes(f[34:36], "big"), int.from_bytes(f[36:38], "big")))

    expected = [f for _, _, f in packets if conversation(f)]
    lead_up = [f for _, _, f in packets[:130] if conversation(f)]
    # the lead-up from the ring, what followed, and nothing after 120 s of quiet
    assert lead_up and frames[:len(lead_up)] == lead_up
    assert frames == expected[:len(frames)] and len(frames) < len(expected)


def test_evidence_directory_stays_under_its_cap(tmp_path):
    cap = 20_000
    rec = EvidenceRecorder(tmp_path, max_bytes=cap, per_finding_bytes=8_000)
    packets = _packets()
    for i, (ts, lt, frame) in enumerate(packets):
        rec.packet(ts, lt, frame)
        if i % 20 == 19:   # a finding every 20 packets, on whatever host sent this one
            src = ".".join(str(b) for b in frame[26:30])
            rec.start(f"1-{i}", "OTSEC-DEVICE-001", src, None, None, ts)
    rec.close()
    files = list(tmp_path.glob("otsec-evidence-*.pcap"))
    assert rec.files_written > len(files) and rec.files_deleted > 0
    assert sum(f.stat().st_size for f in files) <= cap
    assert all(f.stat().st_size <= 8_000 + 1600 for f in files)   # cap + at most one frame
