"""The sensor's run loop: source → Engine → Checker (+ Learner) → SQLite, JSON lines, syslog.

One pass of the loop::

    poll the source (at most BATCH packets, at most POLL_TIMEOUT s when idle)
      └─ each packet: evidence ring, then Engine.feed → on_event/on_flow → Checker/Learner
    learning period over?   → save the baseline, give it to the Checker, log the switch
    SIGHUP seen?            → reload the policy (an invalid file keeps the old one)
    every FLUSH_INTERVAL s  → idle connections retired by the capture clock (below), then
                              new/changed findings to SQLite (one transaction) and the outputs
    every stats interval    → a stats row and the status line
    SIGTERM/SIGINT          → close the source, end every flow, final flush, exit 0

Time is capture time (packet timestamps) everywhere: the learning period, idle timeouts,
evidence. When the source is quiet (a silent link, a pcap directory with nothing left to
read), no packet advances that clock, so the sensor runs it on from the last packet's
timestamp by the monotonic time elapsed since: idle connections then end and are judged
as they would have with traffic, a replay of old files behaves like a live run, and a
step of the wall clock (NTP, a wrong RTC) cannot retire or freeze them all.

The database may refuse writes (disk full, another writer holding the lock): the sensor
waits at most ``DB_BUSY_MS`` for it, so capture never stalls, keeps what is unsaved in
memory (stats rows capped) and retries every ``DB_RETRY`` seconds; only the final flush
waits longer.

The Checker aggregates findings for a whole run; the sensor swaps its aggregator for
:class:`TrackingAggregator`, which remembers which findings changed, so a finding is
stored and sent while the sensor runs instead of at exit. JSON/syslog get a finding when it
is new, and again ("update") when its count grew, at most once per ``update_interval``
and always once more at shutdown, so the last record of a finding carries its final count.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sqlite3
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from otsec.detect.baseline import Baseline, Learner
from otsec.detect.checker import Checker
from otsec.detect.findings import Aggregator, Finding, suppression_for
from otsec.engine import Engine, EngineConfig
from otsec.policy.loader import PolicyError, load_policy
from otsec.report.wording import one_line
from otsec.sensor.evidence import EvidenceRecorder
from otsec.sensor.outputs import (
    JsonLinesOutput, SyslogOutput, check_directory, check_file, check_syslog_options,
)
from otsec.sensor.sources import LiveSource, PcapDirSource
from otsec.sensor.status import decode_errors
from otsec.sensor.store import SensorStore, get_time
from otsec.store import detect_store
from otsec.store.db import check_db_path, open_db

#: Packets handed over by the source per poll, and the longest wait when it has none:
#: together they bound how late a flush, a stats row or a signal is handled.
BATCH = 512
POLL_TIMEOUT = 0.25
FLUSH_INTERVAL = 1.0
#: While learning, the learned baseline is merged into SQLite this often (seconds), so a
#: crash loses at most this much learning.
BASELINE_CHECKPOINT = 600.0
#: How long one database write may wait for a lock (ms), and for the last one at shutdown.
DB_BUSY_MS = 250
DB_FINAL_BUSY_MS = 15_000
#: Seconds between write attempts while the database refuses them.
DB_RETRY = 5.0
#: Stats rows kept while the database refuses writes (a day at the default interval);
#: older ones are dropped and counted.
MAX_UNSAVED_STATS = 1440
MODES = ("learn", "detect")
STATE_LEARN_STARTED = "learn_started_ts"
STATE_LEARN_FINISHED = "learn_finished_ts"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    text = text.strip().lower()
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else ""
    number = text[: len(text) - len(unit)] if unit else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r}: expected a duration like 30m, 12h or 7d") from None
    if not unit or value <= 0:
        raise ValueError(f"{text!r}: expected a positive duration with a unit (s, m, h, d, w)")
    return value * _DURATION_UNITS[unit]


@dataclass
class SensorConfig:
    policy: Path
    db: Path
    interface: str | None = None
    pcap_dir: Path | None = None
    bpf: str | None = None
    snaplen: int = 262144
    promisc: bool = True
    buffer_mb: int = 64
    mode: str = "detect"
    learn_seconds: float | None = None
    json_path: Path | None = None
    syslog: str | None = None
    syslog_facility: str = "local4"
    syslog_format: str = "rfc5424"
    evidence_dir: Path | None = None
    evidence_max_bytes: int = 1024 * 1024 * 1024
    evidence_per_finding_bytes: int = 16 * 1024 * 1024
    stats_interval: float = 60.0
    update_interval: float = 300.0
    settle: float = 10.0
    retry_first: float = 1.0
    engine: EngineConfig = field(default_factory=EngineConfig)


class TrackingAggregator(Aggregator):
    """The Checker's aggregator, also noting which findings changed since the last look."""

    def __init__(self) -> None:
        super().__init__()
        self.dirty: dict[tuple, Finding] = {}

    def add(self, rule_id, src, dst, protocol, port, explanation, ts, packet, capture,
            samples=None, extra=None, count=1):
        f = super().add(rule_id, src, dst, protocol, port, explanation, ts, packet, capture,
                        samples, extra, count)
        if f is not None:
            self.dirty[(rule_id, src.ip, dst.ip if dst else None, protocol, port, extra)] = f
        return f

    def take(self) -> dict[tuple, Finding]:
        dirty, self.dirty = self.dirty, {}
        return dirty


@dataclass(slots=True)
class _Emitted:
    seq: int
    evidence: str | None
    count: int          # count in the last JSON/syslog record
    at: float           # monotonic time of that record


class Sensor:
    """A configured sensor; :meth:`run` until SIGTERM/SIGINT (or :meth:`stop`)."""

    def __init__(self, cfg: SensorConfig, log: logging.Logger | None = None, view=None):
        if (cfg.interface is None) == (cfg.pcap_dir is None):
            raise ValueError("give exactly one source: an interface or a pcap directory")
        if cfg.mode not in MODES:
            raise ValueError(f"mode {cfg.mode!r}: expected learn or detect")
        self.cfg = cfg
        self.log = log or logging.getLogger("otsec.sensor")
        self.view = view
        # every input is checked before anything is created: a typo leaves no database,
        # run record or output file behind
        self.policy = load_policy(cfg.policy)        # PolicyError: the caller reports it
        check_syslog_options(cfg.syslog_facility, cfg.syslog_format)
        # from here on, a step that fails closes what the steps before it opened (the
        # capture handle, the syslog output, the database) before the error propagates
        with ExitStack() as opened:
            self.syslog = None
            if cfg.syslog:
                self.syslog = opened.enter_context(closing(
                    SyslogOutput(cfg.syslog, cfg.syslog_facility, cfg.syslog_format, self.log)))
            if cfg.json_path is not None:
                check_file(cfg.json_path, "--json")
            if cfg.evidence_dir is not None:
                check_directory(cfg.evidence_dir, "--evidence-dir")
            check_db_path(cfg.db)
            if cfg.interface is not None:          # last: a live source opens its handle here
                source = LiveSource(cfg.interface, cfg.snaplen, cfg.promisc, cfg.bpf,
                                    cfg.buffer_mb, self.log, cfg.retry_first)
            else:
                source = PcapDirSource(cfg.pcap_dir, cfg.settle, self.log)
            self.source = opened.enter_context(closing(source))
            self.db = open_db(cfg.db)
            opened.callback(self.db.conn.close)
            self.db.execute(f"PRAGMA busy_timeout = {DB_BUSY_MS}")
            self.outputs: list = []
            if cfg.json_path is not None:
                json_out = JsonLinesOutput(cfg.json_path, self.log)
                self.outputs.append(opened.enter_context(closing(json_out)))
            self.evidence = None
            if cfg.evidence_dir is not None:
                self.evidence = EvidenceRecorder(cfg.evidence_dir, cfg.evidence_max_bytes,
                                                 cfg.evidence_per_finding_bytes, self.log)
            self.learning, stored = self._initial_mode()
            self.agg = TrackingAggregator()
            self.checker = Checker(self.policy, None if self.learning else stored, self.agg)
            self.learner = Learner(self.policy) if self.learning else None
            # one per-source stats entry: a sensor reads a file a minute for months
            self.engine = Engine(replace(cfg.engine, source_history=1), self._on_event, self._on_flow)
            self._feed_packet = self._feed_with_evidence if self.evidence else self.engine.feed
            timed = self.learning and cfg.learn_seconds is not None
            self.feed = self._feed_learning if timed else self._feed_packet
            self.learn_deadline: float | None = None
            if timed and (started := get_time(self.db, STATE_LEARN_STARTED)) is not None:
                self.learn_deadline = started + cfg.learn_seconds
            # last: a run record is started only by a sensor that will run
            self.store = SensorStore(self.db, self.source.name, "learn" if self.learning else "detect",
                                     str(cfg.policy), str(cfg.db) if stored else None)
            if cfg.pcap_dir is not None:
                self.source.store = self.store
            opened.pop_all()      # constructed: _shutdown() closes source and outputs
        self.events = 0
        self.emitted: dict[tuple, _Emitted] = {}
        self.held: set[tuple] = set()            # findings with an update not yet sent
        self.new_in_interval = 0
        self.stop_reason: str | None = None
        self.reload_requested = False
        self._unsaved_findings: dict[int, tuple] = {}
        self._unsaved_stats: list[dict] = []
        self._unsaved_files: dict[str, dict] = {}
        self._unsaved_state: dict[str, str] = {}
        self._unsaved_baseline: Baseline | None = None
        self.stats_dropped = 0
        self._db_failing = False
        self._db_retry_at = 0.0
        self._last_stats = time.monotonic()
        #: capture clock: the last packet's timestamp and the monotonic time it was seen
        self._clock = (None, 0.0)

    # --- modes ---------------------------------------------------------------------------
    def _initial_mode(self):
        """(learning?, stored baseline or None), from the options and what the DB remembers."""
        stored = detect_store.load_baseline(self.db)
        has = stored if (stored.entries or stored.devices) else None
        size = f"{len(stored.entries)} communications, {len(stored.devices)} devices"
        cfg = self.cfg
        finished = get_time(self.db, STATE_LEARN_FINISHED)
        if cfg.mode == "learn":
            self.log.info("mode: learning until stopped (policy checks active); stored baseline: %s", size)
            return True, has
        if cfg.learn_seconds is not None and finished is None:
            self.log.info("mode: learning for %s of capture time, then detecting (policy checks "
                          "active from the first packet); stored baseline: %s",
                          _human(cfg.learn_seconds), size)
            return True, has
        if cfg.learn_seconds is not None:
            self.log.info("learning period already ended at %s; detecting", _utc(finished))
        self.log.info("mode: detecting with %s", f"the stored baseline ({size})" if has
                      else "the policy only (no baseline stored yet)")
        return False, has

    def _feed_learning(self, pkt_no: int, ts: float, linktype: int, frame: bytes) -> None:
        """Feed during a timed learning period: the packet at the deadline is detected on."""
        if self.learning:
            if self.learn_deadline is None:
                self.learn_deadline = ts + self.cfg.learn_seconds
                self._unsaved_state[STATE_LEARN_STARTED] = repr(ts)
            if ts >= self.learn_deadline:
                self._finish_learning(ts)
        self._feed_packet(pkt_no, ts, linktype, frame)

    def _save_baseline(self) -> None:
        """Merge what was learned since the last save into SQLite; if the database refuses,
        it is kept and merged at the next flush."""
        learned = self.learner.baseline
        self.learner = Learner(self.learner.policy)
        if self._unsaved_baseline is not None:
            self._unsaved_baseline.merge(learned)
        else:
            self._unsaved_baseline = learned
        self._write()

    def _finish_learning(self, ts: float) -> None:
        for flow in self.engine.open_flows():
            self.learner.on_flow(flow)   # conversations still open were seen while learning
        self._save_baseline()
        try:
            baseline = detect_store.load_baseline(self.db)
        except sqlite3.Error:
            baseline = Baseline()
        if self._unsaved_baseline is not None:   # the database refused it: detect with it anyway
            baseline.merge(self._unsaved_baseline)
        self.checker.baseline = baseline
        self.learner = None
        self.learning = False
        self.feed = self._feed_packet
        self._unsaved_state[STATE_LEARN_FINISHED] = repr(ts)
        self.log.info("learning period over at %s: baseline has %d communications, %d devices; "
                      "detecting", _utc(ts), len(baseline.entries), len(baseline.devices))
        self._emit({"type": "sensor", "event": "learning_finished", "ts": ts,
                    "communications": len(baseline.entries), "devices": len(baseline.devices)})

    # --- the engine's callbacks ------------------------------------------------------
    def _on_event(self, ev) -> None:
        self.events += 1
        self.checker.on_event(ev)
        if self.learner is not None:
            self.learner.on_event(ev)

    def _on_flow(self, flow) -> None:
        self.checker.on_flow(flow)
        if self.learner is not None:
            self.learner.on_flow(flow)

    # --- the sink the sources feed -----------------------------------------------------
    def set_source(self, name: str) -> None:
        self.engine.set_source(name)
        self.checker.capture = name

    def _tick_clock(self, now: float) -> None:
        """Run the capture clock on while the source is quiet (see the module docstring);
        a learning period that ends meanwhile ends at its deadline, not at the next packet."""
        last = self.engine.last_ts
        if last is not None and last != self._clock[0]:
            self._clock = (last, now)
            return
        if not self.source.idle():
            return
        if last is not None:
            clock = last + (now - self._clock[1])
        elif self.cfg.interface is not None:
            clock = time.time()     # no packet yet: a live source stamps them with this clock
        else:
            return                  # a pcap directory has no time before its first packet
        deadline = self.learn_deadline
        if self.learning and deadline is not None and clock >= deadline:
            if last is not None:
                self.engine.sweep(deadline)   # what ended before the deadline is learned
            self._finish_learning(deadline)
        if last is not None:
            self.engine.sweep(clock)

    def _feed_with_evidence(self, pkt_no: int, ts: float, linktype: int, frame: bytes) -> None:
        self.evidence.packet(ts, linktype, frame)
        self.engine.feed(pkt_no, ts, linktype, frame)

    # --- policy --------------------------------------------------------------------------
    def reload_policy(self) -> None:
        """SIGHUP: reopen the JSON-lines file (after logrotate) and reload the policy."""
        self.reload_requested = False
        for out in self.outputs:
            try:
                out.reopen()
            except OSError as exc:
                self.log.error("--json %s: cannot reopen: %s", out.path, exc.strerror or exc)
        try:
            policy = load_policy(self.cfg.policy)
        except PolicyError as exc:
            self.log.error("policy reload rejected, keeping the previous policy: %s",
                           "; ".join(exc.errors))
            self._emit({"type": "sensor", "event": "policy_rejected", "errors": exc.errors})
            return
        self.policy = policy
        self.checker.set_policy(policy)
        if self.learner is not None:
            self.learner.policy = policy
        self.log.info("policy reloaded from %s: %s", self.cfg.policy, policy.summary())
        self._emit({"type": "sensor", "event": "policy_reloaded", "summary": policy.summary()})

    # --- outputs -------------------------------------------------------------------------
    def _emit(self, record: dict) -> None:
        for out in self.outputs:
            out.write(record)
        if self.syslog is not None and record["type"] == "finding":
            self.syslog.write(record)

    def _record(self, f: Finding, e: _Emitted, state: str) -> dict:
        return {"type": "finding", "state": state, "run": self.store.run_id, "seq": e.seq,
                **f.to_dict(), "evidence_pcap": e.evidence}

    def flush(self, final: bool = False, stats: bool = False) -> None:
        """Store and send what changed; with ``stats`` also a stats row (and status line)."""
        now = time.monotonic()
        today = dt.date.today()
        for key, f in self.agg.take().items():
            f.suppressed = suppression_for(f, self.policy, today)
            e = self.emitted.get(key)
            if e is None:
                seq = len(self.emitted) + 1
                evidence = None
                if self.evidence is not None and f.suppressed is None:
                    evidence = self.evidence.start(f"{self.store.run_id}-{seq}", f.rule_id, f.src.ip,
                                                   f.dst.ip if f.dst else None, f.port, f.last_ts)
                e = self.emitted[key] = _Emitted(seq, evidence, f.count, now)
                self.new_in_interval += 1
                self._emit(self._record(f, e, "new"))
                if f.suppressed is None:
                    # the log is what an operator watching the terminal or journal sees
                    dst = f" -> {f.dst.label}" if f.dst else ""
                    self.log.warning("finding %s %s: %s", f.severity, f.rule_id, one_line(
                        f"{f.src.label}{dst} {f.protocol or '-'}: {f.explanation}"))
            elif f.count != e.count:
                self.held.add(key)
            self._unsaved_findings[e.seq] = (e.seq, f, e.evidence)
        for key in list(self.held):
            e = self.emitted[key]
            if final or now - e.at >= self.cfg.update_interval:
                f = self.agg.findings[key]
                e.count, e.at = f.count, now
                self.held.discard(key)
                self._emit(self._record(f, e, "update"))
        for row in self.source.checkpoint():
            self._unsaved_files[row["name"]] = row
        if stats:
            row = self.snapshot()
            self._unsaved_stats.append(row)
            if len(self._unsaved_stats) > MAX_UNSAVED_STATS:
                del self._unsaved_stats[0]
                self.stats_dropped += 1
            self._emit({"type": "stats", **{k: v for k, v in row.items() if k != "detail"}})
            if self.view is not None:
                self.view.stats(row)
        if final:
            self.db.execute(f"PRAGMA busy_timeout = {DB_FINAL_BUSY_MS}")
        self._write(final)
        if self.syslog is not None:
            self.syslog.flush()

    def _write(self, final: bool = False) -> None:
        """Everything unsaved in one transaction (the baseline in its own); on refusal it
        stays in memory and the next attempt waits ``DB_RETRY`` s."""
        if self._db_failing and not final and time.monotonic() < self._db_retry_at:
            return
        active = sum(1 for f in self.agg.findings.values() if f.suppressed is None)
        try:
            if self._unsaved_baseline is not None:
                detect_store.save_baseline(self.db, self._unsaved_baseline, {})
                self._unsaved_baseline = None
            self.store.write(list(self._unsaved_findings.values()), self._unsaved_stats,
                             list(self._unsaved_files.values()),
                             (active, len(self.agg.findings) - active), self._unsaved_state)
        except sqlite3.Error as exc:
            if not self._db_failing or final:
                self.log.error("database %s: %s; %s", self.cfg.db, exc,
                               f"{len(self._unsaved_findings)} findings and {len(self._unsaved_stats)} "
                               f"stats rows not stored (the JSON lines have them)" if final else
                               "keeping findings and stats in memory, retrying")
            self._db_failing = True
            self._db_retry_at = time.monotonic() + DB_RETRY
            return
        if self._db_failing:
            self.log.info("database %s: writable again", self.cfg.db)
        self._db_failing = False
        self._unsaved_findings.clear()
        self._unsaved_stats.clear()
        self._unsaved_files.clear()
        self._unsaved_state.clear()

    def snapshot(self) -> dict:
        """The counters of a stats row (also what the status line and --tui show)."""
        now = time.monotonic()
        interval, self._last_stats = now - self._last_stats, now
        st = self.engine.stats()
        counters = self.source.counters()
        per_min = self.new_in_interval * 60.0 / interval if interval > 0 else 0.0
        self.new_in_interval = 0
        detail = {"engine": st, "source": counters, "mode": "learn" if self.learning else "detect",
                  "findings_dropped": self.agg.dropped,
                  "sweep_pairs_dropped": self.checker.sweep_pairs_dropped,
                  "stats_rows_dropped": self.stats_dropped}
        if self.syslog is not None:
            detail["syslog"] = {"sent": self.syslog.sent, "dropped": self.syslog.dropped}
        if self.outputs:
            detail["json_dropped"] = sum(out.dropped for out in self.outputs)
        if self.evidence is not None:
            detail["evidence"] = {"files": self.evidence.files_written,
                                  "deleted": self.evidence.files_deleted,
                                  "failed": self.evidence.files_failed}
        return {
            "ts": time.time(), "interval": round(interval, 3), "packets": st["packets"],
            "bytes": st["bytes"], "kernel_received": counters.get("kernel_received"),
            "kernel_dropped": counters.get("kernel_dropped"),
            "interface_dropped": counters.get("interface_dropped"),
            "flows_active": self.engine.open_count, "flows_total": st["flows"],
            "events": self.events,
            "decode_errors": decode_errors(st),
            "findings": len(self.agg.findings), "findings_per_min": round(per_min, 2),
            "detail": json.dumps(detail, default=str),
        }

    # --- running -------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        self.stop_reason = reason

    def _signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop(signal.Signals(signum).name)

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signal)

    def run(self) -> None:
        """Capture until stopped; everything is flushed before returning."""
        self.source.start()
        self._emit({"type": "sensor", "event": "started", "run": self.store.run_id,
                    "source": self.source.name, "mode": "learn" if self.learning else "detect"})
        now = time.monotonic()
        next_flush, next_stats = now + FLUSH_INTERVAL, now + self.cfg.stats_interval
        next_checkpoint = now + BASELINE_CHECKPOINT
        try:
            while self.stop_reason is None:
                self.source.poll(self, BATCH, POLL_TIMEOUT)
                if self.reload_requested:
                    self.reload_policy()
                now = time.monotonic()
                self._tick_clock(now)
                if now >= next_flush:
                    stats = now >= next_stats
                    if stats:
                        next_stats = now + self.cfg.stats_interval
                    self.flush(stats=stats)
                    if self.view is not None:
                        self.view.tick(self)
                    next_flush = now + FLUSH_INTERVAL
                if self.learner is not None and now >= next_checkpoint:
                    self._save_baseline()
                    next_checkpoint = now + BASELINE_CHECKPOINT
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        reason = self.stop_reason or "error"
        self.source.close()
        self.engine.finish()          # every open flow ends now and is judged
        if self.learner is not None:
            self._save_baseline()
        self.flush(final=True, stats=True)
        if self.view is not None:
            self.view.tick(self)      # the live view's last frame shows the final counts
        if self.evidence is not None:
            self.evidence.close()
        try:
            self.store.stop(reason)
        except sqlite3.Error as exc:
            self.log.error("database %s: cannot record the stop: %s", self.cfg.db, exc)
        self._emit({"type": "sensor", "event": "stopped", "reason": reason,
                    "findings": len(self.agg.findings), "packets": self.engine.packets})
        if self.syslog is not None:
            self.syslog.close()
        for out in self.outputs:
            out.close()
        self.log.info("stopped (%s): %d packets, %d findings stored in %s", reason,
                      self.engine.packets, len(self.agg.findings), self.cfg.db)


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _human(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        n = _DURATION_UNITS[unit]
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"
