"""`otsec sensor`: run continuously on a live interface or a directory of rotated captures.

A thin command over :mod:`otsec.sensor`. Exit codes: 0 after SIGTERM/SIGINT (everything
flushed); 2 for a usage, policy, database, output or capture-setup error (one line, no
traceback). Registered in otsec/cli/main.py as ``app.command("sensor")(sensor)``; also
runnable as ``python -m otsec.cli.sensor``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from otsec.cli.common import fail, parse_ports
from otsec.engine import EngineConfig

LOG_FORMAT = "%(asctime)s otsec sensor %(levelname)s: %(message)s"


def sensor(
    interface: Optional[str] = typer.Option(None, "--interface", "-i", metavar="IFACE", help="Capture live on this interface (SPAN/mirror port)."),
    pcap_dir: Optional[Path] = typer.Option(None, "--pcap-dir", metavar="DIR", help="Instead of an interface: follow the rotated capture files tcpdump/dumpcap write here."),
    policy_file: Path = typer.Option(..., "--policy", "-p", help="Policy YAML (reloaded on SIGHUP)."),
    db_path: Path = typer.Option(..., "--db", help="SQLite database for findings, stats, baseline and pcap-dir progress (WAL mode)."),
    bpf: Optional[str] = typer.Option(None, "--bpf", metavar="FILTER", help="BPF capture filter, e.g. 'tcp port 502 or tcp port 102'."),
    snaplen: int = typer.Option(262144, "--snaplen", min=64, metavar="BYTES", help="Bytes captured per packet."),
    promisc: bool = typer.Option(True, "--promisc/--no-promisc", help="Promiscuous mode."),
    buffer_mb: int = typer.Option(64, "--buffer-mb", min=1, metavar="MIB", help="Kernel capture buffer (MiB); raise it if kernel drops appear."),
    learn: Optional[str] = typer.Option(None, "--learn", metavar="DURATION", help="Learn the baseline for this long (30m, 12h, 7d) of capture time, then detect."),
    mode: Optional[str] = typer.Option(None, "--mode", metavar="learn|detect", help="learn (until stopped) or detect (with the stored baseline)."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Append findings, stats and sensor events as JSON lines to this file."),
    syslog: Optional[str] = typer.Option(None, "--syslog", metavar="TARGET", help="Send findings to syslog: udp://HOST:PORT, tcp://HOST:PORT or unix:PATH."),
    syslog_format: str = typer.Option("rfc5424", "--syslog-format", metavar="rfc5424|cef", help="rfc5424 (plain message) or cef (CEF in the message)."),
    syslog_facility: str = typer.Option("local4", "--syslog-facility", metavar="FACILITY", help="Syslog facility (local0-local7, daemon, auth, user)."),
    evidence_dir: Optional[Path] = typer.Option(None, "--evidence-dir", metavar="DIR", help="Write the packets of flows behind each finding to pcaps here."),
    evidence_max_mb: int = typer.Option(1024, "--evidence-max-mb", min=1, metavar="MIB", help="Total size of the evidence directory; oldest files are deleted."),
    evidence_per_finding_mb: int = typer.Option(16, "--evidence-per-finding-mb", min=1, metavar="MIB", help="Largest evidence pcap of one finding."),
    stats_interval: float = typer.Option(60.0, "--stats-interval", min=1.0, metavar="SECONDS", help="Seconds between stats rows and status lines."),
    update_interval: float = typer.Option(300.0, "--update-interval", min=0.0, metavar="SECONDS", help="Resend a finding whose count grew at most this often (seconds)."),
    settle: float = typer.Option(10.0, "--settle", min=0.0, metavar="SECONDS", help="--pcap-dir: seconds without change before the newest file counts as complete."),
    port: Optional[List[str]] = typer.Option(None, "--port", metavar="NAME=PORT[,PORT]", help="Extra server ports for a decoder, e.g. modbus=5020 (repeatable)."),
    max_flows: int = typer.Option(EngineConfig.max_flows, "--max-flows", min=100, metavar="N", help="Connections tracked at once (memory bound)."),
    tui: bool = typer.Option(False, "--tui", help="Live view on the terminal instead of a status line per interval."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Monitor continuously: policy checks from the first packet, baseline learning, findings to SQLite/JSON/syslog."""
    # imported here so that the other commands do not pay for the sensor's start-up
    import logging

    from otsec.policy.loader import PolicyError
    from otsec.sensor.outputs import OutputError
    from otsec.sensor.runner import MODES, Sensor, SensorConfig, parse_duration
    from otsec.sensor.sources import SourceError
    from otsec.sensor.status import StatusLine, TuiView
    from otsec.store.db import StoreError

    if (interface is None) == (pcap_dir is None):
        raise fail("give exactly one of --interface or --pcap-dir")
    if mode is not None and mode not in MODES:
        raise fail(f"--mode {mode!r}: expected learn or detect")
    if learn is not None and mode is not None:
        raise fail("--learn already means 'learn, then detect': drop --mode")
    learn_seconds = None
    if learn is not None:
        try:
            learn_seconds = parse_duration(learn)
        except ValueError as exc:
            raise fail(f"--learn {exc}") from None
    cfg = SensorConfig(
        policy=policy_file, db=db_path, interface=interface, pcap_dir=pcap_dir, bpf=bpf,
        snaplen=snaplen, promisc=promisc, buffer_mb=buffer_mb, mode=mode or "detect",
        learn_seconds=learn_seconds, json_path=json_path, syslog=syslog,
        syslog_facility=syslog_facility, syslog_format=syslog_format, evidence_dir=evidence_dir,
        evidence_max_bytes=evidence_max_mb << 20, evidence_per_finding_bytes=evidence_per_finding_mb << 20,
        stats_interval=stats_interval, update_interval=update_interval, settle=settle,
        engine=EngineConfig(ports=parse_ports(port), max_flows=max_flows),
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    log = logging.getLogger("otsec.sensor")
    view = TuiView(log_handler=handler) if tui else StatusLine(log)
    try:
        s = Sensor(cfg, log, view)
    except PolicyError as exc:
        for line in exc.errors:
            sys.stderr.write(line + "\n")
        raise typer.Exit(2) from None
    except (StoreError, OutputError, SourceError, OSError) as exc:
        raise fail(str(exc)) from None
    s.install_signals()
    try:
        if tui:
            with view:
                s.run()
        else:
            s.run()
    except SourceError as exc:
        raise fail(str(exc)) from None


if __name__ == "__main__":
    typer.run(sensor)
