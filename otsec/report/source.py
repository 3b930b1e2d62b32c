"""Read what an otsec database holds back into the objects the analysis stages consume.

The report is always built from the database, whether ``otsec report --from`` has just
stored the captures or ``otsec analyze --db`` / ``otsec check --db`` did so earlier, so
both paths give the same report. Stored events and flows are replayed through the same
:class:`~otsec.detect.checker.Checker` that ``otsec check`` runs, with the policy given
now; findings stored by ``otsec check --db`` are used only for check runs whose captures
the database holds no traffic of (they cannot be recomputed).

All SQL is parameterised; JSON columns are decoded with :mod:`json` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import sqlite_utils

from otsec.detect.rules import RULES
from otsec.model import Event, Flow, Target
from otsec.store.db import iter_event_rows

#: Flow columns that are not :class:`otsec.model.Flow` fields.
_FLOW_EXTRA = ("capture_id",)


@dataclass
class Capture:
    id: int
    path: str
    sha256: str
    packets: int | None
    first_ts: float | None
    last_ts: float | None
    error: str | None
    analyzed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "packets": self.packets,
                "first_ts": self.first_ts, "last_ts": self.last_ts, "error": self.error,
                "analyzed_at": self.analyzed_at}


@dataclass
class StoredRuns:
    """Findings of ``otsec check --db`` runs whose traffic the database does not hold."""

    runs: list[dict] = field(default_factory=list)       # {id, started_at, policy, captures}
    findings: list[dict] = field(default_factory=list)   # Finding.to_dict() shape


def captures(db: sqlite_utils.Database, ids: list[int] | None = None) -> list[Capture]:
    """Completely analysed captures (all of them, or those with the given ids)."""
    sql = ("SELECT id, path, sha256, packets, first_ts, last_ts, error, analyzed_at FROM captures "
           "WHERE analyzed_at IS NOT NULL")
    params: list = []
    if ids is not None:
        sql += f" AND id IN ({','.join('?' * len(ids))})"
        params = list(ids)
    return [Capture(**row) for row in db.query(sql + " ORDER BY first_ts, id", params)]


def event_from_row(row: dict, capture: str) -> Event:
    return Event(
        protocol=row["protocol"], kind=row["kind"], function=row["function"] or "",
        op_class=row["op_class"] or "other", function_code=row["function_code"],
        targets=[Target(**t) for t in row["targets"] or ()], result=row["result"],
        status=row["status"], anomalies=list(row["anomalies"] or ()), detail=row["detail"] or {},
        identity=row["identity"], ts=row["ts"] or 0.0, packet=row["packet"] or 0,
        flow_id=row["flow_id"] or "", src_ip=row["src_ip"], src_port=row["src_port"] or 0,
        src_mac=row["src_mac"], dst_ip=row["dst_ip"], dst_port=row["dst_port"] or 0,
        dst_mac=row["dst_mac"], request_packet=row["request_packet"], capture=capture)


def iter_events(db: sqlite_utils.Database, capture: Capture) -> Iterator[Event]:
    for row in iter_event_rows(db, [capture.id]):
        yield event_from_row(row, capture.path)


def iter_flows(db: sqlite_utils.Database, capture: Capture) -> Iterator[Flow]:
    for row in db.query("SELECT * FROM flows WHERE capture_id = ? ORDER BY first_ts, first_packet",
                        [capture.id]):
        for col in _FLOW_EXTRA:
            row.pop(col)
        row["initiator_known"] = bool(row["initiator_known"])
        row["decoded"] = bool(row["decoded"])
        row["anomalies"] = json.loads(row["anomalies"]) if row["anomalies"] else []
        yield Flow(**row, capture=capture.path)


def _has_table(db: sqlite_utils.Database, name: str) -> bool:
    return db[name].exists()


def stored_runs(db: sqlite_utils.Database, covered_paths: set[str]) -> StoredRuns:
    """The latest check run per distinct capture set that no analysed capture covers."""
    out = StoredRuns()
    if not (_has_table(db, "check_runs") and _has_table(db, "findings")):
        return out
    latest: dict[str, dict] = {}
    for run in db.query("SELECT id, started_at, policy, captures FROM check_runs ORDER BY id"):
        paths = json.loads(run["captures"] or "[]")
        if paths and all(p in covered_paths for p in paths):
            continue
        latest[json.dumps(sorted(paths))] = {**run, "captures": paths}
    for run in sorted(latest.values(), key=lambda r: r["id"]):
        out.runs.append(run)
        for row in db.query("SELECT * FROM findings WHERE run_id = ? ORDER BY seq", [run["id"]]):
            if row["rule"] in RULES:
                out.findings.append(finding_from_row(row))
    return out


def finding_from_row(row: dict) -> dict:
    """A stored finding in the shape of :meth:`otsec.detect.findings.Finding.to_dict`."""
    rule = RULES[row["rule"]]
    dst = None
    if row["dst_ip"] is not None or row["dst_name"] is not None:
        dst = {"ip": row["dst_ip"], "name": row["dst_name"], "zone": row["dst_zone"], "mac": None}
    return {
        "rule": rule.id, "severity": rule.severity, "kind": rule.kind, "title": rule.title,
        "explanation": row["explanation"] or "",
        "src": {"ip": row["src_ip"], "name": row["src_name"], "zone": row["src_zone"], "mac": None},
        "dst": dst, "zones": [row["src_zone"], dst["zone"] if dst else None],
        "protocol": row["protocol"], "port": row["port"],
        "evidence": {"count": row["count"] or 0, "first_ts": row["first_ts"], "last_ts": row["last_ts"],
                     "first_packet": row["first_packet"], "last_packet": row["last_packet"],
                     "first_capture": row["first_capture"], "last_capture": row["last_capture"],
                     "samples": json.loads(row["samples"] or "{}"), "samples_dropped": 0},
        "suppressed": None if row["suppressed_reason"] is None else {
            "reason": row["suppressed_reason"], "rule": None, "expires": None},
    }


def holds_anything(db: sqlite_utils.Database) -> bool:
    """True when the database has an analysed capture or a stored check run."""
    if _has_table(db, "captures") and db.execute(
            "SELECT 1 FROM captures WHERE analyzed_at IS NOT NULL LIMIT 1").fetchone():
        return True
    return _has_table(db, "check_runs") and db.execute("SELECT 1 FROM check_runs LIMIT 1").fetchone() is not None
