"""`otsec report` on the example plant (docs/example-plant.md): every principle's status and
evidence against what was planted, the JSON schema, the three formats carrying the same
content, the database-only path, and user errors (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

from otsec.cli.report import report
from otsec.detect.baseline import Learner
from otsec.detect.checker import Checker
from otsec.engine import analyze
from otsec.model import Flow
from otsec.policy.loader import load_policy
from otsec.report.compliance import Evidence, build
from otsec.report.schema import SCHEMA
from otsec.store import detect_store
from otsec.store.db import open_db

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "example-plant.yaml"
NORMAL = ROOT / "pcaps" / "plant_normal.pcap"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"

# The registration otsec/cli/main.py does.
app = typer.Typer()
app.command("report")(report)
app.command("unused")(lambda: None)   # a second command keeps "report" a sub-command
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def learned_db(path: Path) -> Path:
    """A database holding the baseline learned from the normal period."""
    learner = Learner(load_policy(POLICY))
    analyze([NORMAL], learner.on_event, learner.on_flow)
    detect_store.save_baseline(open_db(path), learner.baseline, {"normal": str(NORMAL)})
    return path


@pytest.fixture(scope="module")
def incident(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("incident")
    db = learned_db(tmp / "site.db")
    r = invoke("report", "--policy", POLICY, "--db", db, "--from", INCIDENT, "--format", "json", "-o", tmp / "r.json")
    assert r.exit_code == 0, r.output
    return json.loads((tmp / "r.json").read_text()), db


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("normal")
    db = learned_db(tmp / "site.db")
    r = invoke("report", "--policy", POLICY, "--db", db, "--from", NORMAL, "--format", "json", "-o", tmp / "r.json")
    assert r.exit_code == 0, r.output
    return json.loads((tmp / "r.json").read_text())


def principle(rep: dict, n: int) -> dict:
    return rep["principles"][n - 1]


def check(rep: dict, check_id: str) -> dict:
    p = principle(rep, int(check_id[1]))
    return next(c for c in p["checks"] if c["id"] == check_id)


def statuses(rep: dict) -> dict[int, str]:
    return {p["number"]: p["status"] for p in rep["principles"]}


def test_incident_statuses(incident):
    rep, _ = incident
    assert statuses(rep) == {1: "not_met", 2: "not_met", 3: "not_met", 4: "not_met", 5: "not_met",
                             6: "not_met", 7: "met", 8: "not_met"}


def test_normal_period_statuses(normal):
    # P1/P8 need documents; P2 fails only on the unused ops-to-control conduit, P4 only on the
    # cleartext Modbus/S7 between control/operations and field that the policy accepts.
    assert statuses(normal) == {1: "not_assessable", 2: "partly_met", 3: "met", 4: "partly_met",
                                5: "met", 6: "met", 7: "met", 8: "not_assessable"}
    assert check(normal, "P2.5")["items"] == [
        "conduit 'ops-to-control' (operations -> control) carried no observed traffic"]
    assert all("accepted by the policy" in i for i in check(normal, "P4.3")["items"])
    assert check(normal, "P4.2")["result"] == "pass"
    assert [r[2:4] for r in principle(normal, 4)["tables"][1]["rows"]] == [["Basic256Sha256", "SignAndEncrypt"]]
    assert not normal["findings"]
    for p in normal["principles"]:
        assert p["user_must_supply"] and p["recommendations"]


def items(rep: dict, check_id: str) -> str:
    return "\n".join(check(rep, check_id)["items"])


def test_incident_evidence_matches_the_planted_violations(incident):
    rep, _ = incident
    # 1 and 7: enterprise straight into field/control, no conduit
    assert "corp-pc (enterprise) -> plc-modbus (field) modbus/502" in items(rep, "P2.1")
    assert "corp-pc (enterprise) -> hmi-1 (control) telnet/23" in items(rep, "P2.1")
    assert items(rep, "P1.1").count("OTSEC-CONDUIT-001") == 2
    # 6: the PLC talks to the internet
    assert "outbound from OT" in items(rep, "P2.2") and "203.0.113.5" in items(rep, "P2.2")
    assert check(rep, "P3.1")["result"] == "fail" and "plc-modbus (field) -> 203.0.113.5" in items(rep, "P3.1")
    entry = {r[0]: r[1] for r in principle(rep, 3)["tables"][0]["rows"]}
    assert entry == {"jump-host (dmz)": "dmz", "hmi-1 (control)": "ot", "plc-modbus (field)": "ot"}
    # 5: OPC UA with security None where SignAndEncrypt is required
    assert "OTSEC-INSECURE-001" in items(rep, "P4.1") and "historian -> opcua-server" in items(rep, "P4.1")
    assert "policy None, mode None (no security)" in items(rep, "P4.2")
    # 7: Telnet is legacy cleartext and IT admin into level 2
    assert "telnet/23" in items(rep, "P4.4") and "OTSEC-INSECURE-003" in items(rep, "P5.2")
    # 1, 3, 4, 5: services outside the allow-lists
    for rule in ("OTSEC-CONDUIT-001", "OTSEC-CONDUIT-004", "OTSEC-CONDUIT-005"):
        assert rule in items(rep, "P5.1")
    # 3 and 4: PLC stop from the HMI, download from the unknown station
    assert "OTSEC-UNSAFE-003" in items(rep, "P6.2") and "OTSEC-UNSAFE-002" in items(rep, "P6.2")
    eng = {(r[0], r[3], r[6]) for r in principle(rep, 6)["tables"][0]["rows"]}
    assert ("hmi-1 (control)", "PLC Stop", "not an authorised station") in eng
    assert ("10.40.0.99 (control)", "Request download", "not an authorised station") in eng
    # 2 and 5: writes outside the authorised targets
    assert "holding_register 4000-4009" in items(rep, "P6.3") and "opcua-server" in items(rep, "P6.3")
    # 4: the unknown device
    assert "10.40.0.99" in items(rep, "P6.4") and "00:0c:29:aa:bb:cc" in items(rep, "P6.4")
    # 8: the new SZL read is not in the baseline (P7.4 coverage), the sensor saw every zone
    assert check(rep, "P7.4")["result"] == "pass" and "(60%)" in check(rep, "P7.4")["summary"]
    assert check(rep, "P7.1")["result"] == "pass"
    # the isolation inventory names every boundary-crossing dependency, undeclared ones flagged
    deps = principle(rep, 8)["tables"][0]
    undeclared = {(r[0], r[1]) for r, f in zip(deps["rows"], deps["flagged"]) if f}
    assert undeclared == {("corp-pc (enterprise)", "plc-modbus (field)"), ("corp-pc (enterprise)", "hmi-1 (control)"),
                          ("plc-modbus (field)", "203.0.113.5 (outside every zone)")}


def test_inventory_matrix_and_diagram(incident):
    rep, _ = incident
    assets = {a["ip"]: a for a in rep["assets"]}
    plc = assets["10.50.0.30"]
    assert (plc["name"], plc["zone"], plc["declared_role"], plc["product"], plc["firmware"]) == (
        "plc-s7", "field", "plc", "6ES7 315-2EH14-0AB0", "V3.2.6")
    assert plc["identity"]["module_name"] == "CPU 315-2 PN/DP"
    assert assets["10.50.0.40"]["identity"]["application_name"] == "Line 1 OPC UA server"
    assert assets["10.40.0.99"]["status"] == "undeclared" and assets["10.40.0.99"]["zone"] == "control"
    assert assets["10.50.0.20"]["vendor"] == "TELEMECANIQUE ELECTRIQUE"
    cells = {(c["from"], c["to"]): c for c in rep["conduit_matrix"]["cells"]}
    assert rep["conduit_matrix"]["zones"] == ["enterprise", "dmz", "operations", "control", "field", "(outside)"]
    assert cells[("enterprise", "field")]["state"] == "violation"
    assert cells[("enterprise", "field")]["violation_rules"] == ["OTSEC-CONDUIT-001"]
    assert cells[("operations", "control")]["state"] == "conduit, unused"
    assert cells[("enterprise", "dmz")]["state"] == "allowed, used"
    assert cells[("field", "(outside)")]["violation_rules"] == ["OTSEC-EXTERNAL-001"]
    assert cells[("field", "control")]["state"] == "denied"
    edges = {(e["from"], e["to"]): e for e in rep["diagram"]["edges"]}
    assert edges[("enterprise", "field")]["violation"] and edges[("enterprise", "field")]["kind"] == "observed"
    assert not edges[("enterprise", "dmz")]["violation"]
    assert edges[("operations", "control")]["kind"] == "declared"


def test_json_matches_the_schema(incident, normal):
    jsonschema.validate(incident[0], SCHEMA)
    jsonschema.validate(normal, SCHEMA)
    broken = json.loads(json.dumps(normal))
    broken["principles"][0]["status"] = "compliant"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_database_only_report_equals_the_from_report(incident, tmp_path):
    rep, db = incident
    out = tmp_path / "again.json"
    r = invoke("report", "--policy", POLICY, "--db", db, "--format", "json", "-o", out)
    assert r.exit_code == 0, r.output
    again = json.loads(out.read_text())
    assert again["principles"] == rep["principles"]
    assert again["assets"] == rep["assets"] and again["conduit_matrix"] == rep["conduit_matrix"]
    assert again["scope"]["stored_check_runs"] == []       # the stored run's traffic is replayed instead
    runs = sqlite3.connect(db).execute("SELECT captures FROM check_runs").fetchall()
    assert runs == [(json.dumps([str(INCIDENT)]),)]


def test_findings_only_database(incident, tmp_path):
    """A database written by `otsec check --db` alone: its findings still drive the checks."""
    _, db = incident
    only = tmp_path / "findings.db"
    src, dst = sqlite3.connect(db), open_db(only)
    for table in ("check_runs", "findings"):
        rows = src.execute(f"SELECT * FROM {table}").fetchall()   # table names are literals here
        dst[table].insert_all([dict(zip([d[0] for d in src.execute(f"SELECT * FROM {table}").description], r))
                               for r in rows])
    out = tmp_path / "f.json"
    r = invoke("report", "--policy", POLICY, "--db", only, "--format", "json", "-o", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    jsonschema.validate(rep, SCHEMA)
    assert len(rep["scope"]["stored_check_runs"]) == 1 and rep["scope"]["captures"] == []
    assert statuses(rep)[6] == "not_met" and "OTSEC-UNSAFE-003" in items(rep, "P6.2")
    assert "stored check run(s) without their traffic" in items(rep, "P7.3")


def test_markdown_carries_the_same_content(incident, tmp_path):
    _, db = incident
    out = tmp_path / "r.md"
    assert invoke("report", "--policy", POLICY, "--db", db, "--format", "md", "-o", out).exit_code == 0
    text = out.read_text()
    rep = incident[0]
    for p in rep["principles"]:
        assert f"### P{p['number']}. {p['title']}: {p['status_label']}" in text
        for c in p["checks"]:
            assert f"**{c['id']} {c['result'].upper()}**" in text
    assert "6ES7 315-2EH14-0AB0" in text and "OTSEC-EXTERNAL-001" in text
    assert "| **(!)** enterprise | field | observed |" in text and "| enterprise | dmz | observed |" in text


@pytest.mark.parametrize("args, message", [
    (("--db", "{tmp}/missing.db"), "missing.db: no such database"),
    (("--db", "{tmp}/empty.db"), "empty.db: holds no analysed traffic"),
    (("--db", "{tmp}/empty.db", "--from", "{tmp}/none.pcap"), "none.pcap: no such capture file"),
    (("--db", "{tmp}/empty.db", "--format", "pdf"), "--format 'pdf': expected one of html, md, json"),
    (("--db", "{tmp}/text.db"), "text.db: not an otsec database"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, message):
    open_db(tmp_path / "empty.db")
    (tmp_path / "text.db").write_text("hello")
    r = invoke("report", "--policy", POLICY, *[a.format(tmp=tmp_path) for a in args], "-o", tmp_path / "o.html")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    expected = f"otsec: error: {message}" if message[0] == "-" else f"otsec: error: {tmp_path}/{message}"
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "Traceback" not in r.output and not (tmp_path / "o.html").exists()


def test_missing_policy_exit_2(tmp_path):
    r = invoke("report", "--policy", tmp_path / "nope.yaml", "--db", tmp_path / "x.db", "-o", tmp_path / "o.html")
    assert r.exit_code == 2 and r.stderr.strip() == f"{tmp_path}/nope.yaml: policy file not found"


# --- P2.2: the direction of an external connection, with and without its handshake -------

PLC, EXTERNAL = "10.50.0.20", "203.0.113.5"   # plc-modbus (field, level 1); outside every zone
P2_2_FAILED = "1 connection(s) between OT/DMZ hosts and addresses outside every zone"


def flow(n: int, client: str, client_port: int, server: str, server_port: int,
         initiator_known: bool) -> Flow:
    """A TCP flow as the flow table reports it; without the handshake the client is the
    side that does not hold the service port (a guess the report must not present as fact)."""
    return Flow(f"f{n}", "tcp", client, client_port, server, server_port,
                initiator_known=initiator_known, first_ts=1000.0 + n, last_ts=1001.0 + n,
                first_packet=n, last_packet=n, packets_c2s=3, packets_s2c=3)


def p2_2(*flows: Flow) -> tuple[str, dict]:
    """Principle 2's status and its P2.2 check, the flows run through the report's evidence
    aggregator and the checker as `otsec report` replays them."""
    policy = load_policy(POLICY)
    evidence, checker = Evidence(policy), Checker(policy)
    for f in flows:
        evidence.on_flow(f)
        checker.on_flow(f)
    rep = build(policy, evidence, [f.to_dict() for f in checker.finish()], None, captures=[],
                policy_path=str(POLICY), generated_at="2026-11-23T00:00:00+00:00")
    return principle(rep, 2)["status"], check(rep, "P2.2")


@pytest.mark.parametrize("client,client_port,server,server_port,item", [
    (PLC, 49152, EXTERNAL, 443,
     "direction unknown (handshake not seen): OTSEC-EXTERNAL-001 (high): plc-modbus in OT zone "
     "field exchanged traffic (handshake not seen, opener unknown) with 203.0.113.5 (https/443), "
     "outside every declared zone [1x]"),
    (EXTERNAL, 50000, PLC, 502,   # the external side only guessed to be the opener
     "direction unknown (handshake not seen): OTSEC-EXTERNAL-001 (high): plc-modbus in OT zone "
     "field exchanged traffic (handshake not seen, opener unknown) with 203.0.113.5 (modbus/502), "
     "outside every declared zone [1x]"),
], ids=["ot-holds-client-port", "external-holds-client-port"])
def test_p2_2_without_handshake_says_direction_unknown(client, client_port, server, server_port, item):
    status, chk = p2_2(flow(1, client, client_port, server, server_port, initiator_known=False))
    assert (chk["result"], chk["summary"], chk["items"]) == ("fail", P2_2_FAILED, [item])
    assert chk["critical"] and status == "not_met"


@pytest.mark.parametrize("client,client_port,server,server_port,item", [
    (PLC, 49152, EXTERNAL, 443,
     "outbound from OT: OTSEC-EXTERNAL-001 (high): plc-modbus in OT zone field opened a "
     "connection to 203.0.113.5 (https/443), outside every declared zone [1x]"),
    (EXTERNAL, 50000, PLC, 502,
     "inbound: OT host reachable from outside: OTSEC-EXTERNAL-001 (high): plc-modbus in OT zone "
     "field accepted a connection from 203.0.113.5 (modbus/502), outside every declared zone [1x]"),
], ids=["outbound", "inbound"])
def test_p2_2_with_handshake_names_the_direction(client, client_port, server, server_port, item):
    status, chk = p2_2(flow(1, client, client_port, server, server_port, initiator_known=True))
    assert (chk["result"], chk["summary"], chk["items"]) == ("fail", P2_2_FAILED, [item])
    assert status == "not_met"


def test_p2_2_one_seen_handshake_decides_the_direction_of_the_finding():
    # Two connections folded into one finding; the second one's handshake proves who opened.
    _, chk = p2_2(flow(1, PLC, 49152, EXTERNAL, 443, initiator_known=False),
                  flow(2, PLC, 49153, EXTERNAL, 443, initiator_known=True))
    # and its explanation is that connection's, not the first one's guess
    assert (chk["result"], chk["items"]) == ("fail", [
        "outbound from OT: OTSEC-EXTERNAL-001 (high): plc-modbus in OT zone field opened a "
        "connection to 203.0.113.5 (https/443), outside every declared zone [2x]"])


def test_p2_2_passes_without_external_traffic():
    _, chk = p2_2(flow(1, "10.40.0.10", 49152, PLC, 502, initiator_known=False))  # hmi-1 -> plc
    assert (chk["result"], chk["summary"], chk["items"]) == (
        "pass", "no connection between an OT/DMZ host and an address outside every zone", [])
