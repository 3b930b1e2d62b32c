"""SQLite persistence of baselines and check findings (migrations 0002 and 0003).

Importing this module registers its migrations on :data:`otsec.store.db.MIGRATIONS`,
so any :func:`~otsec.store.db.open_db` afterwards creates the tables. A baseline
database may be the same file as the analysis database or a separate one.

Tables::

    baseline           one row per (zones, src, dst, protocol, port, op class, function)
    baseline_devices   one row per IP seen in a zone (MACs, identity)
    baseline_captures  SHA-256 of every capture learned, so re-learning a file is a no-op
    check_runs         one row per `otsec check`
    findings           the aggregated findings of a run (suppressed ones flagged)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlite_utils

from otsec.detect.baseline import Baseline, Device, Entry, Key
from otsec.detect.findings import Finding
from otsec.store.db import MIGRATIONS

BASELINE_PK = ("src_zone", "dst_zone", "src_ip", "dst_ip", "protocol", "port", "op_class", "function")


@MIGRATIONS(name="0002_baseline")
def _m0002(db: sqlite_utils.Database) -> None:
    db["baseline"].create(
        {"src_zone": str, "dst_zone": str, "src_ip": str, "dst_ip": str, "protocol": str,
         "port": int, "op_class": str, "function": str, "src_name": str, "dst_name": str,
         "targets": str, "count": int, "first_seen": float, "last_seen": float},
        pk=BASELINE_PK,
    )
    db["baseline_devices"].create(
        {"ip": str, "zone": str, "name": str, "macs": str, "identity": str, "count": int,
         "first_seen": float, "last_seen": float},
        pk="ip",
    )
    db["baseline_captures"].create(
        {"sha256": str, "path": str, "learned_at": str}, pk="sha256",
    )


@MIGRATIONS(name="0003_findings")
def _m0003(db: sqlite_utils.Database) -> None:
    db["check_runs"].create(
        {"id": int, "started_at": str, "policy": str, "baseline": str, "captures": str,
         "findings": int, "suppressed": int},
        pk="id",
    )
    db["findings"].create(
        {"run_id": int, "seq": int, "rule": str, "severity": str, "kind": str,
         "src_ip": str, "src_name": str, "src_zone": str, "dst_ip": str, "dst_name": str,
         "dst_zone": str, "protocol": str, "port": int, "count": int, "first_ts": float,
         "last_ts": float, "first_packet": int, "last_packet": int, "first_capture": str,
         "last_capture": str, "samples": str, "explanation": str, "suppressed_reason": str},
        pk=("run_id", "seq"), foreign_keys=[("run_id", "check_runs", "id")],
    )
    db["findings"].create_index(["rule"])


def learned_captures(db: sqlite_utils.Database) -> set[str]:
    return {r["sha256"] for r in db.query("SELECT sha256 FROM baseline_captures")}


def save_baseline(db: sqlite_utils.Database, learned: Baseline, captures: dict[str, str]) -> None:
    """Merge ``learned`` into the stored baseline and record the captures (sha256 -> path)."""
    with db.conn:
        stored = load_baseline(db)
        stored.merge(learned)
        db["baseline"].insert_all((_entry_row(e) for e in stored.entries.values()), replace=True)
        db["baseline_devices"].insert_all((_device_row(d) for d in stored.devices.values()), replace=True)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        db["baseline_captures"].insert_all(
            ({"sha256": sha, "path": path, "learned_at": now} for sha, path in captures.items()),
            replace=True)


def _entry_row(e: Entry) -> dict:
    row = dict(zip(BASELINE_PK, (e.key.src_zone, e.key.dst_zone, e.key.src_ip, e.key.dst_ip,
                                 e.key.protocol, e.key.port, e.key.op_class, e.key.function)))
    row.update(src_name=e.src_name, dst_name=e.dst_name, targets=json.dumps(e.targets_list()),
               count=e.count, first_seen=e.first_seen, last_seen=e.last_seen)
    return row


def _device_row(d: Device) -> dict:
    return {"ip": d.ip, "zone": d.zone, "name": d.name, "macs": json.dumps(sorted(d.macs)),
            "identity": json.dumps(d.identity), "count": d.count, "first_seen": d.first_seen,
            "last_seen": d.last_seen}


def load_baseline(db: sqlite_utils.Database) -> Baseline:
    b = Baseline()
    for row in db.query("SELECT * FROM baseline"):
        key = Key(*(row[c] for c in BASELINE_PK))
        e = Entry(key, row["src_name"], row["dst_name"], row["count"], row["first_seen"],
                  row["last_seen"], Entry.targets_from_list(json.loads(row["targets"] or "[]")))
        b.entries[key] = e
    for row in db.query("SELECT * FROM baseline_devices"):
        b.devices[row["ip"]] = Device(row["ip"], row["zone"], row["name"], set(json.loads(row["macs"] or "[]")),
                                      json.loads(row["identity"] or "{}"), row["count"],
                                      row["first_seen"], row["last_seen"])
    return b


def save_findings(db: sqlite_utils.Database, findings: list[Finding], policy: str,
                  baseline: str | None, captures: list[str]) -> int:
    """Store one check run and its findings; returns the run id."""
    with db.conn:
        run_id = db["check_runs"].insert({
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "policy": str(policy), "baseline": baseline, "captures": json.dumps([str(c) for c in captures]),
            "findings": sum(1 for f in findings if f.suppressed is None),
            "suppressed": sum(1 for f in findings if f.suppressed is not None),
        }).last_pk
        db["findings"].insert_all(finding_row(run_id, i, f) for i, f in enumerate(findings, 1))
    return run_id


def finding_row(run_id: int, seq: int, f: Finding) -> dict:
    d = f.to_dict()
    ev = d["evidence"]
    dst = d["dst"] or {}
    return {
        "run_id": run_id, "seq": seq, "rule": f.rule_id, "severity": f.severity, "kind": f.kind,
        "src_ip": f.src.ip, "src_name": f.src.name, "src_zone": f.src.zone,
        "dst_ip": dst.get("ip"), "dst_name": dst.get("name"), "dst_zone": dst.get("zone"),
        "protocol": f.protocol, "port": f.port, "count": f.count, "first_ts": f.first_ts,
        "last_ts": f.last_ts, "first_packet": f.first_packet, "last_packet": f.last_packet,
        "first_capture": ev["first_capture"], "last_capture": ev["last_capture"],
        "samples": json.dumps(ev["samples"]), "explanation": f.explanation,
        "suppressed_reason": f.suppressed.reason if f.suppressed else None,
    }


def is_sqlite(path: str | Path) -> bool:
    """True for an SQLite file (used to tell a baseline database from a capture)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False
