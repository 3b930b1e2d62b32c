"""SQLite storage: numbered schema migrations and the event/flow tables.

Every stage that persists something (analyze, baseline, check, sensor, report) opens the
database through :func:`open_db`, which applies pending migrations in order. Migrations
are append-only: a released one is never edited, a schema change is a new numbered one.

Captures are identified by the SHA-256 of their content, so analysing the same file
twice replaces its rows instead of duplicating them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable

import sqlite_utils

from otsec.model import Event, Flow

MIGRATIONS = sqlite_utils.Migrations("otsec")

#: Modules that register their own tables' migrations on MIGRATIONS. open_db imports them
#: all, so every command brings a database to the same, complete schema.
MIGRATION_MODULES = ("otsec.store.detect_store", "otsec.sensor.store")


@MIGRATIONS(name="0001_captures_events_flows")
def _m0001(db: sqlite_utils.Database) -> None:
    db["captures"].create(
        {"id": int, "sha256": str, "path": str, "size": int, "packets": int,
         "first_ts": float, "last_ts": float, "analyzed_at": str, "error": str},
        pk="id", not_null={"sha256", "path"},
    )
    db["captures"].create_index(["sha256"], unique=True)
    db["events"].create(
        {"capture_id": int, "seq": int, "ts": float, "packet": int, "flow_id": str,
         "src_ip": str, "src_port": int, "src_mac": str, "dst_ip": str, "dst_port": int,
         "dst_mac": str, "protocol": str, "kind": str, "function_code": int, "function": str,
         "op_class": str, "targets": str, "result": str, "status": str, "anomalies": str,
         "detail": str, "identity": str, "request_packet": int},
        pk=("capture_id", "seq"), foreign_keys=[("capture_id", "captures", "id")],
    )
    db["events"].create_index(["protocol", "function"])
    db["events"].create_index(["src_ip", "dst_ip"])
    db["flows"].create(
        {"capture_id": int, "flow_id": str, "first_packet": int, "transport": str,
         "client_ip": str, "client_port": int, "client_mac": str, "server_ip": str,
         "server_port": int, "server_mac": str, "initiator_known": int, "app": str,
         "decoded": int, "first_ts": float, "last_ts": float, "last_packet": int,
         "packets_c2s": int, "packets_s2c": int, "bytes_c2s": int, "bytes_s2c": int,
         "events": int, "gaps": int, "anomalies": str},
        pk=("capture_id", "flow_id", "first_packet"),
        foreign_keys=[("capture_id", "captures", "id")],
    )


class StoreError(Exception):
    """A database that cannot be opened or written; the message names the file."""


def check_db_path(path: Path) -> None:
    """A database file that exists or can be created (checked before anything is created,
    and by :func:`open_db`, so every command words these cases alike)."""
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a database")
    if not path.parent.is_dir():
        raise StoreError(f"{path}: cannot create the database: no such directory {path.parent}")
    if not path.exists() and not os.access(path.parent, os.W_OK):
        raise StoreError(f"{path}: cannot create the database: permission denied")


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) an otsec database in WAL mode with all migrations applied."""
    check_db_path(Path(path))
    for module in MIGRATION_MODULES:
        importlib.import_module(module)
    conn = None
    try:
        conn = sqlite3.connect(str(path), timeout=30)
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        MIGRATIONS.apply(db)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise StoreError(f"{path}: cannot use as an otsec database: {exc}") from None
    return db


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def event_row(ev: Event) -> dict:
    """An event as its database row, less the capture id and sequence number the writer adds
    (built where the event is, in a --jobs worker; written where the capture's writer is)."""
    return {
        "ts": ev.ts, "packet": ev.packet,
        "flow_id": ev.flow_id, "src_ip": ev.src_ip, "src_port": ev.src_port,
        "src_mac": ev.src_mac, "dst_ip": ev.dst_ip, "dst_port": ev.dst_port,
        "dst_mac": ev.dst_mac, "protocol": ev.protocol, "kind": ev.kind,
        "function_code": ev.function_code, "function": ev.function, "op_class": ev.op_class,
        "targets": _json([t.to_dict() for t in ev.targets]), "result": ev.result,
        "status": ev.status, "anomalies": _json(ev.anomalies), "detail": _json(ev.detail),
        "identity": _json(ev.identity), "request_packet": ev.request_packet,
    }


def flow_row(flow: Flow) -> dict:
    """A flow as its database row, less the capture id the writer adds."""
    row = flow.to_dict()
    del row["capture"]           # the row's capture_id says it
    row["initiator_known"] = int(flow.initiator_known)
    row["decoded"] = int(flow.decoded)
    row["anomalies"] = _json(flow.anomalies)
    return row


class CaptureWriter:
    """Streams one capture's events and flows into the database in batches.

    Rows of an earlier analysis of the same content (same SHA-256) are replaced.
    ``analyzed_at`` is set only by :meth:`finish`, so a capture whose run was
    interrupted is recognisable (NULL) and is replaced whole by the next run.
    """

    BATCH = 2000

    def __init__(self, db: sqlite_utils.Database, path: str | Path):
        self.db = db
        self.path = str(path)
        self.sha256 = file_sha256(path)
        self._events: list[dict] = []
        self._flows: list[dict] = []
        self._seq = 0
        existing = db.execute("SELECT id FROM captures WHERE sha256 = ?", [self.sha256]).fetchone()
        if existing:
            self.capture_id = existing[0]
            db.execute("DELETE FROM events WHERE capture_id = ?", [self.capture_id])
            db.execute("DELETE FROM flows WHERE capture_id = ?", [self.capture_id])
        else:
            self.capture_id = db["captures"].insert(
                {"sha256": self.sha256, "path": self.path}).last_pk
        db["captures"].update(self.capture_id, {"analyzed_at": None})

    def add_event_row(self, row: dict) -> None:
        self._seq += 1
        row["capture_id"], row["seq"] = self.capture_id, self._seq
        self._events.append(row)
        if len(self._events) >= self.BATCH:
            self._flush()

    def add_flow_row(self, row: dict) -> None:
        row["capture_id"] = self.capture_id
        self._flows.append(row)
        if len(self._flows) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._events:
            self.db["events"].insert_all(self._events, replace=True)
            self._events.clear()
        if self._flows:
            self.db["flows"].insert_all(self._flows, replace=True)
            self._flows.clear()

    def finish(self, packets: int, first_ts: float | None, last_ts: float | None,
               error: str | None, analyzed_at: str) -> None:
        self._flush()
        self.db["captures"].update(self.capture_id, {
            "path": self.path, "size": Path(self.path).stat().st_size, "packets": packets,
            "first_ts": first_ts, "last_ts": last_ts, "error": error,
            "analyzed_at": analyzed_at,
        })


class CaptureSet:
    """The writers of one run's captures: each event and flow goes to the capture it came
    from (a flow to the file in which it ended), and each capture is closed with its own
    packet count, times and error from the engine's statistics."""

    def __init__(self, db: sqlite_utils.Database, paths: Iterable[str | Path]):
        self.writers = {str(p): CaptureWriter(db, p) for p in dict.fromkeys(paths)}

    def add_event(self, ev: Event) -> None:
        self.add_event_row(ev.capture, event_row(ev))

    def add_flow(self, flow: Flow) -> None:
        self.add_flow_row(flow.capture, flow_row(flow))

    def add_event_row(self, capture: str, row: dict) -> None:
        self.writers[capture].add_event_row(row)

    def add_flow_row(self, capture: str, row: dict) -> None:
        self.writers[capture].add_flow_row(row)

    def finish(self, stats: dict, analyzed_at: str) -> list[int]:
        """Close every capture; returns their ids."""
        for source in stats["sources"]:
            self.writers[source["name"]].finish(source["packets"], source["first_ts"],
                                                source["last_ts"], source["error"], analyzed_at)
        return [w.capture_id for w in self.writers.values()]


def iter_event_rows(db: sqlite_utils.Database, capture_ids: Iterable[int] | None = None):
    """Stored events as dicts with JSON columns decoded, in capture/sequence order."""
    sql = "SELECT * FROM events"
    params: list = []
    if capture_ids is not None:
        ids = list(capture_ids)
        sql += f" WHERE capture_id IN ({','.join('?' * len(ids))})"
        params = ids
    for row in db.query(sql + " ORDER BY capture_id, seq", params):
        for col in ("targets", "anomalies", "detail", "identity"):
            if row[col] is not None:
                row[col] = json.loads(row[col])
        yield row
