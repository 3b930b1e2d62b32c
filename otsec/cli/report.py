"""`otsec report`: the compliance report against the NCSC secure connectivity principles
for OT, as HTML, Markdown or JSON. A thin command over :mod:`otsec.report`.

With ``--from`` the captures are analysed by the same engine as ``otsec analyze``, stored
in ``--db`` (and their findings as a check run) and the report covers exactly them;
without it the report covers everything the database holds. Exit codes: 0 written;
2 usage, input, policy or database errors (one clear line each, never a traceback).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from otsec.cli.common import (check_inputs, check_output, err, fail, load_policy_or_exit, open_database,
                               report_damage, run_engine, warn, write_output)

if TYPE_CHECKING:
    from otsec.policy.model import Policy

FORMATS = ("html", "md", "json")


def _store(db, paths: list[Path], policy: Policy, baseline, policy_file: Path) -> tuple[list[int], bool]:
    """Analyse ``paths`` into ``db`` as ``otsec analyze --db`` does, and store their
    findings as ``otsec check --db`` does; returns the captures' ids and whether one was
    damaged (already warned)."""
    from otsec.detect.checker import Checker
    from otsec.store import detect_store
    from otsec.store.db import CaptureSet

    stored = CaptureSet(db, paths)
    checker = Checker(policy, baseline)

    def on_event(ev) -> None:
        stored.add_event(ev)
        checker.on_event(ev)

    def on_flow(flow) -> None:
        stored.add_flow(flow)
        checker.on_flow(flow)

    stats = run_engine(paths, on_event, on_flow, progress=False)
    ids = stored.finish(stats, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    detect_store.save_findings(db, checker.finish(), str(policy_file), None, [str(p) for p in dict.fromkeys(paths)])
    return ids, report_damage(stats)


def report(
    policy_file: Path = typer.Option(..., "--policy", "-p", help="Policy YAML (zones, assets, conduits)."),
    db_path: Path = typer.Option(..., "--db", help="otsec database: read, and with --from also written."),
    captures: Optional[List[Path]] = typer.Option(None, "--from", metavar="CAPTURE", help="Analyse these captures into --db and report on them (repeatable)."),
    output_format: str = typer.Option("html", "--format", "-f", metavar="html|md|json", help="html, md or json."),
    output: Path = typer.Option(..., "-o", "--output", help="Write the report here ('-' for stdout)."),
    baseline_db: Optional[Path] = typer.Option(None, "--baseline", help="Baseline database (default: the baseline stored in --db, if any)."),
) -> None:
    """Assess the site against the NCSC secure connectivity principles for OT."""
    import sqlite3

    from otsec.report import compliance, diagram, html, markdown, source
    from otsec.store import detect_store
    from otsec.store.db import StoreError, open_db

    if output_format not in FORMATS:
        raise fail(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}")
    policy = load_policy_or_exit(policy_file)
    check_inputs(list(captures or ()))
    check_output(output)
    if not captures:
        if not db_path.is_file():
            raise fail(f"{db_path}: no such database (create it with otsec analyze --db, or pass --from)")
        if not detect_store.is_sqlite(db_path):
            raise fail(f"{db_path}: not an otsec database")
    if baseline_db is not None:
        if not baseline_db.is_file():
            raise fail(f"{baseline_db}: no such baseline database")
        if not detect_store.is_sqlite(baseline_db):
            raise fail(f"{baseline_db}: not an otsec database")
    try:
        db = open_database(db_path)
        baseline = detect_store.load_baseline(open_db(baseline_db) if baseline_db else db)
        baseline = baseline if baseline.entries or baseline.devices else None
        ids, damaged = _store(db, list(captures), policy, baseline, policy_file) if captures else (None, False)
        if ids is None and not source.holds_anything(db):
            raise fail(f"{db_path}: holds no analysed traffic (run otsec analyze --db {db_path} CAPTURE, or pass --from)")
        data = compliance.from_db(db, policy, baseline, policy_path=str(policy_file), capture_ids=ids,
                                  site_name=policy.name or None)
    except StoreError as exc:
        raise fail(str(exc)) from None
    except sqlite3.Error as exc:
        raise fail(f"{db_path}: database error: {exc}") from None
    if output_format == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    elif output_format == "md":
        text = markdown.render(data)
    else:
        try:
            text = html.render(data, diagram.render_svg(data["diagram"]))
        except diagram.DiagramUnavailable as exc:
            warn(f"{exc}; the report has no diagram")
            text = html.render(data, None, str(exc))
    if write_output(output, text):
        counts = ", ".join(f"{n} {compliance.STATUS_LABELS[s]}" for s, n in data["overall"].items() if n)
        err.print(f"wrote {output}: {counts}", markup=False)
    if damaged:
        raise typer.Exit(1)
