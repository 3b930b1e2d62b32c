"""The sensor's SQLite tables (migration 0010) and its one writer.

Findings go to the same ``check_runs``/``findings`` tables as ``otsec check`` (one run per
sensor start), so reports and queries need not know where a finding came from; the
migration adds the ``evidence`` column (pcap of the flows behind the finding) to them.
Everything is written in one transaction per flush, so a stats row, the findings it
counts and the pcap-dir progress it reflects are stored together or not at all.

Tables added::

    sensor_runs    one row per sensor start: source, mode, policy, start/stop, exit reason
    sensor_stats   one row per stats interval (and a last one at shutdown)
    sensor_files   pcap-dir progress: one row per capture file name (identity, packets read)
    sensor_state   key/value facts that outlive a run (when learning started / ended)
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import sqlite_utils

from otsec.detect.findings import Finding
from otsec.store import detect_store  # registers 0002/0003 before ours: 0010 alters `findings`
from otsec.store.db import MIGRATIONS, StoreError

#: Stats columns, in the order of the status line; values come from :meth:`Sensor.snapshot`.
STATS_COLUMNS = {
    "packets": int, "bytes": int, "kernel_received": int, "kernel_dropped": int,
    "interface_dropped": int, "flows_active": int, "flows_total": int, "events": int,
    "decode_errors": int, "findings": int, "findings_per_min": float,
}


@MIGRATIONS(name="0010_sensor")
def _m0010(db: sqlite_utils.Database) -> None:
    db["findings"].add_column("evidence", str)
    db["sensor_runs"].create(
        {"run_id": int, "source": str, "mode": str, "policy": str, "started_at": str,
         "stopped_at": str, "exit_reason": str},
        pk="run_id", foreign_keys=[("run_id", "check_runs", "id")],
    )
    db["sensor_stats"].create(
        {"run_id": int, "ts": float, "interval": float, **STATS_COLUMNS, "detail": str},
        pk=("run_id", "ts"), foreign_keys=[("run_id", "check_runs", "id")],
    )
    db["sensor_files"].create(
        {"name": str, "head_sha256": str, "head_len": int, "size": int, "mtime_ns": int,
         "packets": int, "status": str, "error": str, "run_id": int, "updated_at": str},
        pk="name",
    )
    db["sensor_state"].create({"key": str, "value": str}, pk="key")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class SensorStore:
    """Writes one sensor run: the run rows, findings (upserted by their sequence number),
    stats rows, pcap-dir progress and durable state."""

    def __init__(self, db: sqlite_utils.Database, source: str, mode: str, policy: str,
                 baseline: str | None):
        self.db = db
        try:
            with db.conn:
                self.run_id = db["check_runs"].insert({
                    "started_at": now_iso(), "policy": policy, "baseline": baseline,
                    "captures": json.dumps([source]), "findings": 0, "suppressed": 0,
                }).last_pk
                db["sensor_runs"].insert({"run_id": self.run_id, "source": source, "mode": mode,
                                          "policy": policy, "started_at": now_iso()})
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a sensor run in the database: {exc}") from None

    def write(self, findings: list[tuple[int, Finding, str | None]], stats: list[dict],
              files: list[dict], totals: tuple[int, int] | None = None,
              state: dict[str, str] | None = None) -> None:
        """One flush: changed findings as (seq, finding, evidence path), stats rows,
        pcap-dir progress rows, the run's finding totals (active, suppressed) and durable
        facts (:func:`get_time` keys)."""
        with self.db.conn:
            if state:
                self.db["sensor_state"].insert_all(
                    ({"key": k, "value": v} for k, v in state.items()), replace=True)
            if findings:
                rows = []
                for seq, f, evidence in findings:
                    row = detect_store.finding_row(self.run_id, seq, f)
                    row["evidence"] = evidence
                    rows.append(row)
                self.db["findings"].insert_all(rows, replace=True)
            if stats:
                self.db["sensor_stats"].insert_all(({"run_id": self.run_id, **row} for row in stats),
                                                   replace=True)
            if files:
                self.db["sensor_files"].insert_all(
                    ({**row, "run_id": self.run_id, "updated_at": now_iso()} for row in files),
                    replace=True)
            if totals is not None:
                self.db["check_runs"].update(self.run_id, {"findings": totals[0], "suppressed": totals[1]})

    def stop(self, reason: str) -> None:
        with self.db.conn:
            self.db["sensor_runs"].update(self.run_id, {"stopped_at": now_iso(), "exit_reason": reason})

    def file_row(self, name: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sensor_files WHERE name = ?", [name]))
        return rows[0] if rows else None


def get_time(db: sqlite_utils.Database, key: str) -> float | None:
    """A durable sensor time (e.g. when learning started), None when never set; a value
    that is not a time is a StoreError naming the key, not a crash."""
    row = db.execute("SELECT value FROM sensor_state WHERE key = ?", [key]).fetchone()
    if row is None:
        return None
    try:
        return float(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"sensor state {key!r} in the database is not a time: {row[0]!r} "
                         f"(delete that row of sensor_state to start afresh)") from None
