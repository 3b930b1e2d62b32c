"""`otsec policy`, `otsec baseline` and `otsec check`: thin commands over otsec.policy,
otsec.detect and otsec.store._store().

Exit codes: 0 success (for ``check``: no finding at or above ``--fail-on``); 1 a finding
at or above ``--fail-on``, or a damaged capture (results cover the packets before the
damage); 2 usage, input, policy or database errors (one clear line each, never a traceback).
What only some commands need (rich, the detectors, the policy loader) is imported where it
is used: ``otsec analyze`` imports this module for the registration of the commands.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import typer

from otsec.capture import has_capture_magic
from otsec.detect.rules import SEVERITIES, severity_rank
from otsec.engine import EngineConfig
from otsec.cli.common import (LazyConsole, check_inputs, check_output, err, fail, load_policy_or_exit,
                              open_database, report_damage, run_engine, write_output)
from otsec.model import Event, Flow
from otsec.report.wording import count, one_line, zone_label

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from otsec.detect.baseline import Baseline
    from otsec.detect.findings import Finding
    from otsec.policy.model import Policy

policy_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                         help="Validate or draft a zones-and-conduits policy.")
baseline_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                           help="Learn, show and compare per-zone communication baselines.")

out = LazyConsole(highlight=False, soft_wrap=True)


def _store():
    """The SQLite layer, imported on first use: commands run without a database skip its
    start-up cost (sqlite-utils pulls in numpy when it is installed)."""
    from otsec.store import detect_store
    return detect_store


def _baseline_db(path: Path) -> Baseline:
    """The baseline stored in ``path``; a database without one is an error, not an empty baseline."""
    baseline = _store().load_baseline(_existing_db(path))
    if not baseline.entries and not baseline.devices:
        raise fail(f"{path}: holds no baseline (learn one with: otsec baseline learn CAPTURE --policy P --db {path})")
    return baseline


def _existing_db(path: Path):
    if not path.is_file():
        raise fail(f"{path}: no such database")
    if not _store().is_sqlite(path):
        raise fail(f"{path}: not an otsec database")
    return open_database(path)


def _run(paths: list[Path], on_event: Callable[[Event], None], on_flow: Callable[[Flow], None],
         max_flows: int = EngineConfig.max_flows) -> bool:
    """Stream the captures through the engine; True when a capture was damaged (warned)."""
    return report_damage(run_engine(paths, on_event, on_flow, EngineConfig(max_flows=max_flows)))


# --- otsec policy ------------------------------------------------------------------------

@policy_app.command("validate")
def policy_validate(file: Path = typer.Argument(..., metavar="POLICY", help="Policy YAML file.")) -> None:
    """Check a policy; print every problem as FILE:LINE: message (exit 2) or a summary (exit 0)."""
    policy = load_policy_or_exit(file)
    out.print(f"{file}: valid: {policy.summary()}", markup=False)


@policy_app.command("init")
def policy_init(
    captures: List[Path] = typer.Option(..., "--from", metavar="CAPTURE", help="Capture(s) to draft the policy from (repeatable)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the draft here (default: stdout)."),
) -> None:
    """Draft a policy from observed subnets, hosts and cross-zone communications."""
    from otsec.policy.draft import Drafter
    from otsec.policy.loader import PolicyError, parse_policy

    check_inputs(captures)
    check_output(output)
    drafter = Drafter()
    damaged = _run(captures, drafter.on_event, drafter.on_flow)
    text = drafter.draft([str(c) for c in captures])
    try:
        parse_policy(text, str(output or "<draft>"))
    except PolicyError as exc:   # a drafting bug must not hand the user a broken file
        raise fail("the drafted policy does not validate: " + "; ".join(exc.errors)) from None
    if write_output(output, text):
        err.print(f"wrote draft policy {output}; review it, then: otsec policy validate {output}", markup=False)
    if damaged:
        raise typer.Exit(1)


# --- otsec baseline ----------------------------------------------------------------------

def _learn(paths: list[Path], policy: Policy) -> tuple[Baseline, bool]:
    """The baseline of ``paths``, and whether a capture was damaged (already warned)."""
    from otsec.detect.baseline import Learner

    learner = Learner(policy)
    damaged = _run(paths, learner.on_event, learner.on_flow)
    return learner.baseline, damaged


@baseline_app.command("learn")
def baseline_learn(
    captures: List[Path] = typer.Argument(..., metavar="CAPTURE...", help="Capture(s) of the learning period."),
    policy_file: Path = typer.Option(..., "--policy", "-p", help="Policy YAML (zones for the zone pairs)."),
    db_path: Path = typer.Option(..., "--db", help="Baseline database (created if needed; learning adds to it)."),
) -> None:
    """Record who talks to whom, per zone pair, into the baseline database."""
    from otsec.store.db import file_sha256

    policy = load_policy_or_exit(policy_file)
    check_inputs(captures)
    db = open_database(db_path)
    done = _store().learned_captures(db)
    todo: dict[str, Path] = {}
    for p in captures:
        sha = file_sha256(p)
        if sha in done or sha in todo:
            err.print(f"{p}: already learned, skipped", markup=False)
        else:
            todo[sha] = p
    damaged = False
    if todo:
        learned, damaged = _learn(list(todo.values()), policy)
        _store().save_baseline(db, learned, {sha: str(p) for sha, p in todo.items()})
    stored = _store().load_baseline(db)
    out.print(f"{db_path}: {len(stored.entries)} communications, {len(stored.devices)} devices "
              f"({count(len(todo), 'capture')} learned)", markup=False)
    if damaged:
        raise typer.Exit(1)


def _entry_dict(e) -> dict:
    k = e.key
    return {"src_zone": k.src_zone, "dst_zone": k.dst_zone, "src_ip": k.src_ip, "src": e.src_name,
            "dst_ip": k.dst_ip, "dst": e.dst_name, "protocol": k.protocol, "port": k.port,
            "op_class": k.op_class, "function": k.function, "targets": e.targets_list(),
            "count": e.count, "first_seen": e.first_seen, "last_seen": e.last_seen}


def _ts(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _entries_text(title: str, entries) -> Text:
    """Learned communications as two-line blocks, readable at any terminal width."""
    from rich.text import Text

    text = Text(f"{title}\n", style="bold")
    for e in entries:
        k = e.key
        text.append(f"\n{zone_label(k.src_zone)} -> {zone_label(k.dst_zone)}  ", style="cyan")
        text.append(f"{e.src_name or k.src_ip} -> {e.dst_name or k.dst_ip}  {k.protocol}/{k.port}  "
                    f"{k.op_class or '-'}  {k.function or '-'}  x{e.count}\n")
        text.append(f"    targets {e.targets_text() or '-'}; seen {_ts(e.first_seen)} .. {_ts(e.last_seen)}\n")
    return text


def _devices_text(devices) -> Text:
    from rich.text import Text

    text = Text(f"\n{len(devices)} devices\n", style="bold")
    for d in devices:
        text.append(f"{d.ip}  {d.name or '(undeclared)'}  {zone_label(d.zone)}  {', '.join(sorted(d.macs)) or '-'}\n")
        if d.identity:
            text.append("    " + ", ".join(f"{k}={v}" for k, v in d.identity.items()) + "\n")
    return text


@baseline_app.command("show")
def baseline_show(
    db_path: Path = typer.Option(..., "--db", help="Baseline database."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """List the learned communications (and devices) of a baseline."""
    b = _baseline_db(db_path)
    entries = sorted(b.entries.values(), key=_order)
    if as_json:
        for e in entries:
            sys.stdout.write(json.dumps({"type": "communication", **_entry_dict(e)}) + "\n")
        for d in sorted(b.devices.values(), key=lambda d: d.ip):
            sys.stdout.write(json.dumps({"type": "device", "ip": d.ip, "name": d.name, "zone": d.zone,
                                         "macs": sorted(d.macs), "identity": d.identity, "count": d.count,
                                         "first_seen": d.first_seen, "last_seen": d.last_seen}) + "\n")
        return
    out.print(_entries_text(f"Baseline {db_path}: {len(entries)} communications", entries))
    out.print(_devices_text(sorted(b.devices.values(), key=lambda d: d.ip)))


def _order(e) -> tuple:
    k = e.key
    return (k.src_zone, k.dst_zone, k.src_ip, k.dst_ip, k.protocol, k.port, k.op_class, k.function)


def _side(paths: list[Path], policy_file: Path | None, label: str) -> tuple[Baseline, bool]:
    """A baseline database, or captures learned on the fly (needs --policy)."""
    if len(paths) == 1 and _store().is_sqlite(paths[0]):
        return _baseline_db(paths[0]), False
    if any(_store().is_sqlite(p) for p in paths):
        raise fail(f"{label}: give one baseline database or only captures, not both")
    for path in paths:
        # the option takes either kind: name both rather than the capture reader's magic bytes
        if path.is_file() and not has_capture_magic(path):
            raise fail(f"{label} {path}: neither an otsec baseline database nor a pcap/pcapng capture")
    check_inputs(paths)
    if policy_file is None:
        raise fail(f"{label}: comparing captures needs --policy (for the zones)")
    return _learn(paths, load_policy_or_exit(policy_file))


@baseline_app.command("diff")
def baseline_diff_cmd(
    old: List[Path] = typer.Option(..., "--old", metavar="DB|CAPTURE", help="Baseline database, or capture(s) (repeatable)."),
    new: List[Path] = typer.Option(..., "--new", metavar="DB|CAPTURE", help="Baseline database, or capture(s) (repeatable)."),
    policy_file: Optional[Path] = typer.Option(None, "--policy", "-p", help="Policy, needed for captures."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of tables."),
) -> None:
    """What the NEW side has that the OLD side lacks, what disappeared, and what changed."""
    from otsec.detect.baseline import diff as baseline_diff

    (a, old_damaged), (b, new_damaged) = _side(old, policy_file, "--old"), _side(new, policy_file, "--new")
    _print_diff(baseline_diff(a, b), as_json)
    if old_damaged or new_damaged:
        raise typer.Exit(1)


def _print_diff(d, as_json: bool) -> None:
    if as_json:
        for change, entries in (("added", d.added), ("removed", d.removed)):
            for e in entries:
                sys.stdout.write(json.dumps({"change": change, **_entry_dict(e)}) + "\n")
        for o, n in d.changed:
            sys.stdout.write(json.dumps({"change": "targets", **_entry_dict(n),
                                         "old_targets": o.targets_list()}) + "\n")
        for change, devices in (("device_added", d.devices_added), ("device_removed", d.devices_removed)):
            for dev in devices:
                sys.stdout.write(json.dumps({"change": change, "ip": dev.ip, "name": dev.name,
                                             "zone": dev.zone, "macs": sorted(dev.macs)}) + "\n")
        return
    out.print(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} with new targets, "
              f"{count(len(d.devices_added), 'new device')}, {count(len(d.devices_removed), 'device')} gone", markup=False)
    if d.added:
        out.print(_entries_text("Added (in --new only)", d.added))
    if d.removed:
        out.print(_entries_text("Removed (in --old only)", d.removed))
    if d.changed:
        out.print(_entries_text("Targets changed (shown: --new)", [n for _, n in d.changed]))
    for title, devices in (("New devices", d.devices_added), ("Devices gone", d.devices_removed)):
        if devices:
            out.print(f"{title}: " + ", ".join(f"{x.ip} ({x.name or 'undeclared'})" for x in devices),
                      markup=False)


# --- otsec check -------------------------------------------------------------------------

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _findings_text(findings: list[Finding]) -> Text:
    """Findings as two-line blocks (readable at any terminal width); wire-derived text is
    appended as plain text, never parsed as rich markup, with control characters as
    visible escapes (a device name cannot move the cursor or recolour the terminal).
    Made as one string and its styled spans (appending 40,000 pieces to a Text one by one
    costs 0.1 s): one_line leaves no control code that Text would strip and shift them."""
    from rich.text import Span, Text

    parts = [f"{len(findings)} findings\n"]
    spans = []
    end = len(parts[0])
    for f in findings:
        packets = str(f.first_packet) if f.first_packet == f.last_packet else f"{f.first_packet}-{f.last_packet}"
        src = f"{f.src.label} [{zone_label(f.src.zone)}]"
        dst = f"{f.dst.label} [{zone_label(f.dst.zone)}]" if f.dst else "-"
        proto = f"{f.protocol}/{f.port}" if f.protocol else "-"
        severity, rule = f"\n{f.severity.upper():8s} ", f"{f.rule_id}  "
        lines = (one_line(f"{src} -> {dst}  {proto}  x{f.count}  packets {packets}") + "\n"
                 f"         {one_line(f.explanation)}\n")
        spans.append(Span(end, end + len(severity), SEVERITY_STYLE[f.severity]))
        spans.append(Span(end + len(severity), end + len(severity) + len(rule), "bold"))
        end += len(severity) + len(rule) + len(lines)
        parts += (severity, rule, lines)
    return Text("".join(parts), style="bold", spans=spans)


def _print_text(console: Console, text: Text) -> None:
    """Print findings: through rich on a terminal (colours); elsewhere (a file, a pipe) the
    same characters written directly, as rich would lay them out without styles: rendering
    10,000 findings through rich takes a second."""
    if console.is_terminal:
        console.print(text)
    else:
        text.expand_tabs()
        console.file.write(text.plain + "\n")


def check(
    captures: List[Path] = typer.Argument(..., metavar="CAPTURE...", help="Capture file(s) to check."),
    policy_file: Path = typer.Option(..., "--policy", "-p", help="Policy YAML."),
    baseline_db: Optional[Path] = typer.Option(
        None, "--baseline", help="Baseline database (enables new-communication findings)."),
    db_path: Optional[Path] = typer.Option(None, "--db", help="Store the run and its findings here."),
    json_file: Optional[str] = typer.Option(
        None, "--json", metavar="FILE", help="Write findings as JSON lines to FILE ('-' for stdout)."),
    fail_on: Optional[str] = typer.Option(
        None, "--fail-on", metavar="SEVERITY", help="Exit 1 when a finding this severe or worse exists: " + ", ".join(SEVERITIES)),
    max_flows: int = typer.Option(EngineConfig.max_flows, "--max-flows", min=100, metavar="N",
                                  help="Connections tracked at once (memory bound)."),
) -> None:
    """Check captures against the policy (and baseline); report aggregated findings."""
    from otsec.detect.checker import Checker

    fail_on = fail_on.lower() if fail_on is not None else None
    if fail_on is not None and fail_on not in SEVERITIES:
        raise fail(f"--fail-on {fail_on!r}: expected one of {', '.join(SEVERITIES)}")
    policy = load_policy_or_exit(policy_file)
    check_inputs(captures)
    json_path = Path(json_file) if json_file is not None else None
    check_output(json_path)
    baseline = _baseline_db(baseline_db) if baseline_db else None
    db = open_database(db_path) if db_path else None
    checker = Checker(policy, baseline)
    damaged = _run(captures, checker.on_event, checker.on_flow, max_flows)
    findings = checker.finish()
    active = [f for f in findings if f.suppressed is None]
    if db is not None:
        _store().save_findings(db, findings, str(policy_file), str(baseline_db) if baseline_db else None,
                                   [str(c) for c in captures])
    console = err if json_file == "-" else out
    if active:
        _print_text(console, _findings_text(active))
    else:
        console.print("no findings", markup=False)
    suppressed = len(findings) - len(active)
    if suppressed:
        console.print(f"{suppressed} finding(s) suppressed by the policy", markup=False)
    if checker.agg.dropped or checker.sweep_pairs_dropped:
        console.print(f"warning: {checker.agg.dropped} occurrences not aggregated (finding cap reached), "
                      f"{checker.sweep_pairs_dropped} client/server pairs not tracked for sweeps",
                      markup=False)
    if json_path is not None:  # after the terminal output: a full disk must not hide the findings
        write_output(json_path, "".join(json.dumps(f.to_dict()) + "\n" for f in findings))
    if damaged or (fail_on is not None and
                   any(severity_rank(f.severity) >= severity_rank(fail_on) for f in active)):
        raise typer.Exit(1)
