"""What an operator watching the sensor sees: one quiet log line per stats interval, or
with ``--tui`` a rich Live panel refreshed every second.

Both show the same counters as a ``sensor_stats`` row: packets, kernel drops, flows,
decode problems (malformed packets, messages with anomaly flags, decoder errors), findings
and new findings per minute.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.table import Table

#: Window over which --tui computes "findings per minute".
RATE_WINDOW = 60.0


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
    """A live table on the terminal; logging keeps printing above it."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, redirect_stderr=True,
                         transient=False)
        self.history: deque[tuple[float, int]] = deque()
        self.started = time.monotonic()

    def __enter__(self):
        self.live.start()
        return self

    def __exit__(self, *exc):
        self.live.stop()

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
        t = Table(title=f"otsec sensor on {sensor.source.name} - "
                        f"{'learning' if sensor.learning else 'detecting'} - "
                        f"up {int(now - self.started)} s", title_justify="left")
        for col in ("packets", "kernel drops", "flows active", "flows total", "decode problems",
                    "findings", "new findings/min"):
            t.add_column(col, justify="right")
        t.add_row(str(st["packets"]), str(counters.get("kernel_dropped", "-")),
                  str(len(sensor.engine.open_flows())), str(st["flows"]), str(decode_errors(st)),
                  str(findings), f"{rate:.1f}")
        self.live.update(t, refresh=True)
