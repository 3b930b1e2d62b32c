"""What an operator watching the sensor sees: one quiet log line per stats interval, or
with ``--tui`` a rich Live panel refreshed every second.

Both show the same counters as a ``sensor_stats`` row: packets, kernel drops, flows,
decode problems (malformed packets, messages with anomaly flags, decoder errors), findings
and new findings per minute. The live panel adds the mode and the most severe, most recent
active findings::

    otsec sensor on eth1 - detecting - up 42 s
    | packets | kernel drops | flows active | ... | findings | new findings/min |
    findings (15 active, 0 suppressed)
    | severity | rule | source | destination | protocol | count | last seen (UTC) |
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from otsec.detect.rules import severity_rank
from otsec.report.wording import one_line

#: Window over which --tui computes "findings per minute".
RATE_WINDOW = 60.0
#: Findings listed in the live panel (the rest are counted in its title).
TUI_FINDINGS = 12


def decode_errors(stats: dict) -> int:
    """Decode trouble in engine stats: anomalous messages, decoder errors, malformed packets."""
    decode = stats["decode"]
    return decode["anomalous"] + decode["decoder_errors"] + stats["malformed_packets"]


def status_text(row: dict) -> str:
    drops = row.get("kernel_dropped")
    return (f"{row['packets']} packets, kernel drops {'-' if drops is None else drops}, "
            f"flows {row['flows_active']} active / {row['flows_total']} total, "
            f"decode problems {row['decode_errors']}, findings {row['findings']} "
            f"({row['findings_per_min']:g}/min)")


class StatusLine:
    """Logs one status line per stats interval (journald keeps it with a timestamp)."""

    def __init__(self, log: logging.Logger):
        self.log = log

    def stats(self, row: dict) -> None:
        self.log.info("status: %s", status_text(row))

    def tick(self, sensor) -> None:
        return None


class TuiView:
    """A live table on the terminal; the log handler given keeps printing above it."""

    def __init__(self, console: Console | None = None, log_handler: logging.StreamHandler | None = None):
        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, redirect_stderr=True,
                         transient=False)
        self.log_handler = log_handler
        self._log_stream = None
        self.history: deque[tuple[float, int]] = deque()
        self.started = time.monotonic()

    def __enter__(self):
        self.live.start()
        if self.log_handler is not None:
            # rich's stderr stand-in prints each line above the table instead of through it
            self._log_stream = self.log_handler.setStream(sys.stderr)
        return self

    def __exit__(self, *exc):
        self.live.stop()
        if self.log_handler is not None:
            self.log_handler.setStream(self._log_stream)

    def stats(self, row: dict) -> None:
        return None

    def tick(self, sensor) -> None:
        now = time.monotonic()
        findings = len(sensor.agg.findings)
        self.history.append((now, findings))
        while self.history and now - self.history[0][0] > RATE_WINDOW:
            self.history.popleft()
        span = max(now - self.history[0][0], 1.0)
        rate = (findings - self.history[0][1]) * 60.0 / span
        st = sensor.engine.stats()
        counters = sensor.source.counters()
        header = Text(f"otsec sensor on {sensor.source.name} - "
                      f"{'learning' if sensor.learning else 'detecting'} - "
                      f"up {int(now - self.started)} s", style="bold")
        t = Table()
        for col in ("packets", "kernel drops", "flows active", "flows total", "decode problems",
                    "findings", "new findings/min"):
            t.add_column(col, justify="right")
        t.add_row(str(st["packets"]), str(counters.get("kernel_dropped", "-")),
                  str(sensor.engine.open_count), str(st["flows"]), str(decode_errors(st)),
                  str(findings), f"{rate:.1f}")
        self.live.update(Group(header, t, findings_table(sensor.agg.findings.values())), refresh=True)


def findings_table(findings) -> Table:
    """The ``TUI_FINDINGS`` most severe, then most recent, active findings."""
    active = [f for f in findings if f.suppressed is None]
    shown = sorted(active, key=lambda f: (-severity_rank(f.severity), -f.last_ts))[:TUI_FINDINGS]
    more = f", {len(active) - len(shown)} not shown" if len(active) > len(shown) else ""
    t = Table(title=f"findings ({len(active)} active, {len(findings) - len(active)} suppressed{more})",
              title_justify="left")
    for col in ("severity", "rule", "source", "destination", "protocol", "count", "last seen (UTC)"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for f in shown:
        cells = (f.severity, f.rule_id, f.src.label, f.dst.label if f.dst else "-", f.protocol or "-",
                 str(f.count), dt.datetime.fromtimestamp(f.last_ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
        t.add_row(*(Text(one_line(c)) for c in cells))   # Text: a '[' from the wire is not markup
    return t
