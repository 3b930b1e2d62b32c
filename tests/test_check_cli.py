"""End to end: `otsec policy`, `otsec baseline` and `otsec check` on the example plant
(docs/example-plant.md). The normal period yields nothing; the incident period yields
exactly the planted findings; policy and usage errors exit 2 with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from otsec.cli.check import baseline_app, check, policy_app

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "example-plant.yaml"
NORMAL = ROOT / "pcaps" / "plant_normal.pcap"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"

# The same registration otsec/cli/main.py does.
app = typer.Typer()
app.add_typer(policy_app, name="policy")
app.add_typer(baseline_app, name="baseline")
app.command("check")(check)

runner = CliRunner()

#: Planted incidents of docs/example-plant.md -> (rule, source, destination) expected.
PLANTED = {
    1: {("OTSEC-CONDUIT-001", "corp-pc", "plc-modbus")},           # the sweep (#9) adds to the same finding
    2: {("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")},
    3: {("OTSEC-UNSAFE-003", "hmi-1", "plc-s7"), ("OTSEC-CONDUIT-005", "hmi-1", "plc-s7")},
    4: {("OTSEC-DEVICE-001", "10.40.0.99", None), ("OTSEC-UNSAFE-002", "10.40.0.99", "plc-s7"),
        ("OTSEC-CONDUIT-004", "10.40.0.99", "plc-s7")},
    5: {("OTSEC-INSECURE-001", "historian", "opcua-server"), ("OTSEC-UNSAFE-001", "historian", "opcua-server"),
        ("OTSEC-CONDUIT-005", "historian", "opcua-server")},
    6: {("OTSEC-EXTERNAL-001", "plc-modbus", "203.0.113.5")},
    7: {("OTSEC-INSECURE-003", "corp-pc", "hmi-1"), ("OTSEC-CONDUIT-001", "corp-pc", "hmi-1")},
    8: {("OTSEC-NEWCOMM-001", "hmi-1", "plc-s7")},
    9: {("OTSEC-ANOMALY-003", "corp-pc", "plc-modbus"), ("OTSEC-ANOMALY-001", "corp-pc", "plc-modbus")},
}


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def baseline_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("baseline") / "baseline.db"
    r = invoke("baseline", "learn", NORMAL, "--policy", POLICY, "--db", db)
    assert r.exit_code == 0, r.output
    assert "communications" in r.stdout and "(1 capture learned)" in r.stdout
    return db


def findings_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def key(f: dict) -> tuple:
    dst = f["dst"]
    return (f["rule"], f["src"]["name"] or f["src"]["ip"], (dst["name"] or dst["ip"]) if dst else None)


def test_normal_period_has_no_findings(baseline_db, tmp_path):
    out = tmp_path / "f.jsonl"
    r = invoke("check", NORMAL, "--policy", POLICY, "--baseline", baseline_db, "--json", out, "--fail-on", "info")
    assert r.exit_code == 0, r.output
    assert "no findings" in r.stdout and out.read_text() == ""


def test_incident_yields_exactly_the_planted_findings(baseline_db, tmp_path):
    out, db = tmp_path / "f.jsonl", tmp_path / "check.db"
    r = invoke("check", INCIDENT, "--policy", POLICY, "--baseline", baseline_db, "--json", out,
               "--db", db, "--fail-on", "high")
    assert r.exit_code == 1, r.output
    findings = findings_of(out)
    got = [key(f) for f in findings]
    assert len(got) == len(set(got)), "findings must be aggregated, never repeated"
    for n, expected in PLANTED.items():
        assert expected <= set(got), f"planted incident {n} not found: {expected - set(got)}"
    assert set(got) == set().union(*PLANTED.values())     # nothing else
    by = {key(f): f for f in findings}
    assert by[("OTSEC-UNSAFE-001", "hmi-1", "plc-modbus")]["evidence"]["samples"]["target"] == {
        "holding_register 4000-4009": 1}
    assert by[("OTSEC-UNSAFE-001", "historian", "opcua-server")]["evidence"]["samples"]["target"] == {
        "ns=2;s=Line1.Setpoint": 1}
    assert by[("OTSEC-NEWCOMM-001", "hmi-1", "plc-s7")]["evidence"]["samples"]["target"] == {"szl 0x001c": 1}
    assert by[("OTSEC-DEVICE-001", "10.40.0.99", None)]["evidence"]["samples"]["mac"] == {"00:0c:29:aa:bb:cc": 6}
    assert set(by[("OTSEC-UNSAFE-002", "10.40.0.99", "plc-s7")]["evidence"]["samples"]["function"]) == {
        "Request download", "Download block", "Download ended"}
    assert by[("OTSEC-INSECURE-001", "historian", "opcua-server")]["evidence"]["samples"]["security_mode"] == {"None": 8}
    sweep = by[("OTSEC-ANOMALY-003", "corp-pc", "plc-modbus")]["evidence"]
    assert set(sweep["samples"]["function_code"]) >= {"60", "61", "62"} and sweep["count"] == 11
    for f in findings:
        ev = f["evidence"]
        assert ev["count"] >= 1 and 1 <= ev["first_packet"] <= ev["last_packet"]
        assert ev["first_capture"] == str(INCIDENT) and f["explanation"]
    import sqlite3
    rows = sqlite3.connect(db).execute("SELECT rule, severity FROM findings").fetchall()
    assert len(rows) == len(findings)
    assert "OTSEC-UNSAFE-003" in r.stdout   # the terminal table


def test_fail_on_thresholds(baseline_db):
    assert invoke("check", INCIDENT, "--policy", POLICY, "--baseline", baseline_db).exit_code == 0
    assert invoke("check", INCIDENT, "--policy", POLICY, "--fail-on", "critical").exit_code == 1
    r = invoke("check", INCIDENT, "--policy", POLICY, "--fail-on", "severe")
    assert r.exit_code == 2 and "--fail-on 'severe': expected one of info, low, medium, high, critical" in r.stderr


def test_without_baseline_no_new_communication(tmp_path):
    out = tmp_path / "f.jsonl"
    assert invoke("check", INCIDENT, "--policy", POLICY, "--json", out).exit_code == 0
    rules = {f["rule"] for f in findings_of(out)}
    assert "OTSEC-NEWCOMM-001" not in rules and "OTSEC-DEVICE-001" in rules


def test_suppressed_findings_are_listed_with_reason_and_do_not_fail(tmp_path, baseline_db):
    text = POLICY.read_text().replace("  suppressions: []\n", (
        "  suppressions:\n"
        "    - {rule: OTSEC-EXTERNAL-001, src: plc-modbus, reason: vendor cloud telemetry (CHG-42)}\n"
        "    - {rule: OTSEC-NEWCOMM-001, reason: expired exception, expires: 2020-01-01}\n"))
    policy = tmp_path / "p.yaml"
    policy.write_text(text)
    out = tmp_path / "f.jsonl"
    invoke("check", INCIDENT, "--policy", policy, "--baseline", baseline_db, "--json", out)
    sup = [f for f in findings_of(out) if f["suppressed"]]
    assert [(f["rule"], f["suppressed"]["reason"]) for f in sup] == [
        ("OTSEC-EXTERNAL-001", "vendor cloud telemetry (CHG-42)")]
    assert any(f["rule"] == "OTSEC-NEWCOMM-001" and not f["suppressed"] for f in findings_of(out))


def test_broken_policy_exits_2_with_every_located_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    lines = POLICY.read_text().splitlines()
    text = "\n".join(lines) + "\n"
    text = text.replace("cidrs: [10.50.0.0/24]", "cidrs: [10.50.0.0/33]").replace(
        "zones: [control, field]", "zones: [control, feild]")
    bad.write_text(text)
    line_cidr = next(i for i, l in enumerate(text.splitlines(), 1) if "10.50.0.0/33" in l)
    line_zone = next(i for i, l in enumerate(text.splitlines(), 1) if "feild" in l)
    for args in (("policy", "validate", bad), ("check", INCIDENT, "--policy", bad)):
        r = invoke(*args)
        assert r.exit_code == 2
        assert f"{bad}:{line_cidr}: zone 'field': bad CIDR '10.50.0.0/33'" in r.stderr
        assert f"{bad}:{line_zone}: conduit 'hmi-to-field': unknown zone 'feild' (did you mean 'field'?)" in r.stderr
        assert "Traceback" not in r.output


@pytest.mark.parametrize("content", ["", "zones: [\n", "\x00\x01 binary"])
def test_unusable_policy_files_never_traceback(tmp_path, content):
    p = tmp_path / "p.yaml"
    p.write_text(content)
    r = invoke("policy", "validate", p)
    assert r.exit_code == 2 and r.stderr.startswith(f"{p}:") and "Traceback" not in r.output


def test_usage_errors_exit_2(tmp_path):
    r = invoke("policy", "validate", tmp_path / "missing.yaml")
    assert r.exit_code == 2 and r.stderr.strip() == f"{tmp_path / 'missing.yaml'}: policy file not found"
    r = invoke("check", tmp_path / "none.pcap", "--policy", POLICY)
    assert r.exit_code == 2 and f"{tmp_path / 'none.pcap'}: no such capture file" in r.stderr
    notcap = tmp_path / "x.pcap"
    notcap.write_text("hello")
    r = invoke("check", notcap, "--policy", POLICY)
    assert r.exit_code == 2 and "not a pcap or pcapng file" in r.stderr
    r = invoke("check", INCIDENT, "--policy", POLICY, "--baseline", tmp_path / "nobase.db")
    assert r.exit_code == 2 and "no such database" in r.stderr
    r = invoke("check", INCIDENT, "--policy", POLICY, "--baseline", notcap)
    assert r.exit_code == 2 and "not an otsec database" in r.stderr


def test_policy_validate_summary():
    r = invoke("policy", "validate", POLICY)
    assert r.exit_code == 0
    assert r.stdout.strip() == f"{POLICY}: valid: 5 zones, 9 assets, 5 conduits (7 allow rules), 0 suppressions"


def test_policy_init_drafts_a_valid_policy_that_fits_its_traffic(tmp_path):
    draft = tmp_path / "draft.yaml"
    r = invoke("policy", "init", "--from", NORMAL, "-o", draft)
    assert r.exit_code == 0, r.output
    assert invoke("policy", "validate", draft).exit_code == 0
    text = draft.read_text()
    assert "cidrs: [10.50.0.0/24]" in text and "role: plc" in text and "role: opcua_server" in text
    out = tmp_path / "f.jsonl"
    assert invoke("check", NORMAL, "--policy", draft, "--json", out).exit_code == 0
    assert not [f for f in findings_of(out) if f["rule"].startswith("OTSEC-CONDUIT")]
    r = invoke("policy", "init", "--from", NORMAL)      # to stdout
    assert r.exit_code == 0 and r.stdout.startswith("# Draft policy from:")


def test_baseline_learn_is_idempotent_and_show(baseline_db):
    r = invoke("baseline", "learn", NORMAL, "--policy", POLICY, "--db", baseline_db)
    assert r.exit_code == 0 and "already learned, skipped" in r.stderr and "(0 captures learned)" in r.stdout
    r = invoke("baseline", "show", "--db", baseline_db, "--json")
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    comms = [x for x in rows if x["type"] == "communication"]
    fc3 = next(x for x in comms if x["function"] == "Read Holding Registers")
    assert (fc3["src"], fc3["dst"], fc3["src_zone"], fc3["dst_zone"], fc3["port"]) == (
        "hmi-1", "plc-modbus", "control", "field", 502)
    assert fc3["targets"] == [{"kind": "holding_register", "ranges": [[0, 19]]}]
    assert any(x["type"] == "device" and x["name"] == "plc-s7" for x in rows)
    r = invoke("baseline", "show", "--db", baseline_db)
    assert r.exit_code == 0 and "Read Holding Registers" in r.stdout


def test_baseline_diff_db_vs_captures(baseline_db, tmp_path):
    r = invoke("baseline", "diff", "--old", baseline_db, "--new", INCIDENT, "--policy", POLICY, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    added = {(x["src"] or x["src_ip"], x["function"]) for x in rows if x["change"] == "added"}
    assert ("10.40.0.99", "Request download") in added and ("hmi-1", "PLC Stop") in added
    assert any(x["change"] == "device_added" and x["ip"] == "10.40.0.99" for x in rows)
    same = invoke("baseline", "diff", "--old", NORMAL, "--new", NORMAL, "--policy", POLICY)
    assert same.exit_code == 0 and same.stdout.startswith("0 added, 0 removed, 0 with new targets")
    r = invoke("baseline", "diff", "--old", NORMAL, "--new", INCIDENT)
    assert r.exit_code == 2 and "comparing captures needs --policy" in r.stderr


def test_check_and_baseline_diff_name_the_side_outside_every_zone_alike(baseline_db, tmp_path):
    # incident #6: plc-modbus opens HTTPS to 203.0.113.5, an address in no zone
    r = invoke("check", INCIDENT, "--policy", POLICY)
    line = next(l for l in r.stdout.splitlines() if "OTSEC-EXTERNAL-001" in l)
    assert "plc-modbus [field] -> 203.0.113.5 [external]" in line
    r = invoke("baseline", "diff", "--old", baseline_db, "--new", INCIDENT, "--policy", POLICY)
    assert r.exit_code == 0, r.output
    assert "field -> external  plc-modbus -> 203.0.113.5  https/443" in r.stdout
    assert " -> -  " not in r.stdout and "- -> " not in r.stdout


def test_findings_written_to_a_file_are_what_rich_would_print():
    """Off a terminal the findings text is written directly (rich takes a second for 10,000
    findings): the characters must be the ones rich prints, tabs and wire text included."""
    import io

    from rich.console import Console

    from otsec.cli.check import _findings_text, _print_text
    from otsec.detect.checker import Checker
    from otsec.engine import analyze
    from otsec.policy.loader import load_policy

    checker = Checker(load_policy(POLICY))
    analyze([INCIDENT], on_event=checker.on_event, on_flow=checker.on_flow)
    findings = checker.finish()
    findings[0].explanation += "\twith a tab, \x1b[31man escape\x1b[0m and [bold]markup[/bold]"
    outputs = []
    for write in (lambda c, t: c.print(t), _print_text):
        buf = io.StringIO()
        write(Console(file=buf, highlight=False, soft_wrap=True), _findings_text(findings))
        outputs.append(buf.getvalue())
    assert outputs[0] == outputs[1] and "[bold]markup[/bold]" in outputs[1]
    # control characters from the wire are shown as escapes, never sent to the terminal
    assert "\x1b" not in outputs[1] and "\t" not in outputs[1] and "\\twith a tab, \\x1b[31man escape" in outputs[1]
    explanations = [line for line in outputs[1].splitlines() if line.startswith("         ")]
    assert len(explanations) == len(findings)   # one line each, whatever the wire put in them
