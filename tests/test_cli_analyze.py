"""`otsec analyze` as a user runs it: outputs, storage, exit codes and error lines."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOWCASE = ROOT / "pcaps" / "protocols_showcase.pcap"


def otsec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "otsec.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_table_summary_names_hosts_roles_and_functions():
    r = otsec("analyze", SHOWCASE)
    assert r.returncode == 0, r.stderr
    for text in ("Hosts", "10.50.0.20", "plc", "TELEMECANIQUE", "Schneider Electric",
                 "Write Multiple Registers", "PLC Stop", "Decode health"):
        assert text in r.stdout
    assert r.stderr == ""


def test_json_summary_and_json_lines_agree(tmp_path):
    lines = tmp_path / "events.jsonl"
    r = otsec("analyze", SHOWCASE, "--json", lines, "--format", "json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    events = [json.loads(line) for line in lines.read_text().splitlines()]
    assert summary["events"] == len(events) > 0
    per_function = {(f["function"]): f["count"] for f in summary["functions"]["modbus"]}
    counted = sum(1 for e in events if e["protocol"] == "modbus" and e["function"] == "Write Multiple Registers")
    assert per_function["Write Multiple Registers"] == counted == 2
    write = next(e for e in events if e["function"] == "Write Multiple Registers" and e["kind"] == "request")
    assert write["op_class"] == "write" and write["targets"][0]["kind"] == "holding_register"
    assert write["src"]["ip"] == "10.40.0.10" and write["dst"]["port"] == 502
    assert write["flow_id"].startswith("1:")
    roles = {h["ip"]: h["role"] for h in summary["hosts"]}
    assert roles["10.50.0.20"] == "plc" and roles["10.40.0.10"] == "hmi"


def test_db_rerun_replaces_rows_instead_of_duplicating(tmp_path):
    db = tmp_path / "otsec.db"
    assert otsec("analyze", SHOWCASE, "--db", db).returncode == 0
    conn = sqlite3.connect(db)
    first = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    flows = conn.execute("SELECT count(*) FROM flows").fetchone()[0]
    assert first > 0 and flows > 0
    assert otsec("analyze", SHOWCASE, "--db", db).returncode == 0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == first
    assert conn.execute("SELECT count(*) FROM flows").fetchone()[0] == flows
    assert conn.execute("SELECT count(*), min(analyzed_at) IS NOT NULL FROM captures").fetchone() == (1, 1)


def test_truncated_capture_reports_partial_results_and_where_it_broke(tmp_path):
    broken = tmp_path / "broken.pcap"
    data = SHOWCASE.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    r = otsec("analyze", broken, "--format", "json")
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert 0 < summary["packets"] < 122 and summary["events"] > 0
    (line,) = r.stderr.strip().splitlines()
    assert "broken.pcap" in line and "byte" in line and "packet" in line
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["analyze", "nope.pcap"], "nope.pcap: no such capture file"),
    (["analyze", "pyproject.toml"], "pyproject.toml: not a pcap or pcapng file"),
    (["analyze", "pcaps"], "pcaps: is a directory"),
    (["analyze", "pcaps/protocols_showcase.pcap", "--port", "dnp3=20000"], "--port 'dnp3=20000'"),
    (["analyze", "pcaps/protocols_showcase.pcap", "--port", "modbus=70000"], "between 1 and 65535"),
    (["analyze", "pcaps/protocols_showcase.pcap", "--format", "xml"], "--format 'xml'"),
    (["analyze", "--bogus", "x.pcap"], "No such option: --bogus"),
    (["analyze", "pcaps/protocols_showcase.pcap", "--jobs", "0"], "--jobs"),
    (["check", "pcaps/plant_incident.pcap"], "Missing option '--policy'"),
    (["analyze", "pcaps/protocols_showcase.pcap", "--json", "-", "--format", "json"], "both write to stdout"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(args, message):
    r = otsec(*args, cwd=ROOT)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_port_option_finds_modbus_on_a_custom_port(tmp_path):
    from scapy.all import IP, TCP, Ether, wrpcap

    adu = bytes.fromhex("000100000006010300000002")
    pkts = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=5020, flags="PA", seq=1) / adu]
    # one unusual-port ADU with a malformed length would not be taken for Modbus without --port
    path = tmp_path / "custom.pcap"
    wrpcap(str(path), pkts)
    r = otsec("analyze", path, "--format", "json", "--port", "modbus=5020")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["functions"]["modbus"][0]["function"] == "Read Holding Registers"


def test_jobs_give_the_same_output_as_one_process(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    captures = [ROOT / "pcaps" / "plant_normal.pcap", ROOT / "pcaps" / "plant_incident.pcap", SHOWCASE]
    r1 = otsec("analyze", *captures, "--json", one, "--format", "json")
    r2 = otsec("analyze", *captures, "--json", two, "--format", "json", "--jobs", "2")
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    assert one.read_text() == two.read_text() and one.stat().st_size > 0
    assert json.loads(r1.stdout) == json.loads(r2.stdout)


def test_jobs_store_the_same_database_as_one_process(tmp_path):
    """With --db the workers build the rows of their own connections; the stored events
    and flows are the same, in the same order, as one process stores."""
    import sqlite3

    captures = [ROOT / "pcaps" / "plant_normal.pcap", ROOT / "pcaps" / "plant_incident.pcap", SHOWCASE]
    dumps = []
    for jobs in ("1", "2"):
        db = tmp_path / f"jobs{jobs}.db"
        r = otsec("analyze", *captures, "--db", db, "--jobs", jobs)
        assert r.returncode == 0, r.stderr
        con = sqlite3.connect(db)
        dumps.append([con.execute("SELECT * FROM events ORDER BY capture_id, seq").fetchall(),
                      con.execute("SELECT * FROM flows ORDER BY rowid").fetchall(),
                      con.execute("SELECT path, packets, first_ts, last_ts FROM captures ORDER BY id").fetchall()])
        con.close()
    assert dumps[0] == dumps[1] and len(dumps[0][0]) > 300 and len(dumps[0][1]) > 20


def test_jobs_summary_only_equals_one_process():
    """Without --json/--db each process folds its own share and only summaries are merged."""
    captures = [ROOT / "pcaps" / "plant_normal.pcap", ROOT / "pcaps" / "plant_incident.pcap", SHOWCASE]
    r1 = otsec("analyze", *captures, "--format", "json")
    r2 = otsec("analyze", *captures, "--format", "json", "--jobs", "2")
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    assert json.loads(r1.stdout) == json.loads(r2.stdout)


def test_every_command_brings_a_database_to_the_full_schema(tmp_path):
    """A database created by analyze can be used by baseline, check, report and sensor."""
    db = tmp_path / "site.db"
    assert otsec("analyze", SHOWCASE, "--db", db, "--format", "json").returncode == 0
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"captures", "events", "flows", "baseline_captures", "findings"} <= tables


def test_damaged_capture_exits_1_in_every_command(tmp_path):
    broken = tmp_path / "broken.pcap"
    broken.write_bytes((ROOT / "pcaps" / "plant_incident.pcap").read_bytes()[:3000])
    policy = ROOT / "policies" / "example-plant.yaml"
    for args in (["analyze", broken], ["check", broken, "-p", policy],
                 ["baseline", "learn", broken, "-p", policy, "--db", tmp_path / "b.db"],
                 ["report", "-p", policy, "--db", tmp_path / "r.db", "--from", broken, "-o", tmp_path / "r.html"]):
        r = otsec(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert "broken.pcap: truncated packet record at byte" in r.stderr and "Traceback" not in r.stderr


def test_check_refuses_a_baseline_database_without_a_baseline_and_accepts_any_case_severity(tmp_path):
    db = tmp_path / "analysed.db"
    assert otsec("analyze", SHOWCASE, "--db", db, "--format", "json").returncode == 0
    policy = ROOT / "policies" / "example-plant.yaml"
    r = otsec("check", ROOT / "pcaps" / "plant_incident.pcap", "-p", policy, "--baseline", db)
    assert r.returncode == 2 and f"{db}: holds no baseline" in r.stderr
    r = otsec("check", ROOT / "pcaps" / "plant_normal.pcap", "-p", policy, "--fail-on", "HIGH")
    assert r.returncode == 0, r.stderr


def test_version_says_which_flow_layer_runs():
    from otsec.engine import CompiledFlowTable

    r = otsec("--version")
    assert r.returncode == 0, r.stderr
    if CompiledFlowTable is None:
        assert "pure-Python flow layer" in r.stdout
    else:
        assert r.stdout.strip().endswith("(compiled flow layer)")


def test_wire_text_with_control_characters_cannot_drive_the_terminal():
    """A device that reports an identity holding an escape sequence: the summary shows it
    as an escape, on one line."""
    import io

    from rich.console import Console

    from otsec.analysis.inventory import Summary
    from otsec.engine import reduce
    from otsec.report.console import render_summary

    summary, stats = reduce([SHOWCASE], Summary)
    host = next(h for h in summary.known.values() if h.identity)
    host.learn_identity({"vendor": "evil\x1b[2J\x1b]0;owned\x07\nsecond line\x9b2J\u202etxt.exe",
                         "firmware": "V1.0"}, (float("inf"), 0))   # the latest the device said
    buf = io.StringIO()
    render_summary(summary.report(stats, [str(SHOWCASE)]), Console(file=buf, width=400))
    shown = buf.getvalue()
    assert not any(c in shown for c in "\x1b\x07\x9b\u202e")
    assert "vendor: evil\\x1b[2J\\x1b]0;owned\\x07\\nsecond line\\x9b2J\\u202etxt.exe" in shown
    # the cell's own line breaks stay line breaks: one identity field per line
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if "firmware: V1.0" in line)
    assert "product_code: " in lines[at + 1] and "product_code" not in lines[at]


def test_the_json_summary_is_written_as_it_is_encoded(monkeypatch):
    """--format json writes the document in pieces (the whole list of encoded pieces cost
    ~40 MiB on the 2M-packet benchmark): the bytes are json.dumps's, indented."""
    import io

    from otsec.analysis.inventory import Summary
    from otsec.cli import main as cli_main
    from otsec.engine import reduce

    summary, stats = reduce([SHOWCASE], Summary)
    document = summary.report(stats, [str(SHOWCASE)])
    writes = []

    class Out(io.StringIO):
        def write(self, text):
            writes.append(len(text))
            return super().write(text)

    monkeypatch.setattr(cli_main, "JSON_PIECES_PER_WRITE", 10)
    out = Out()
    cli_main._write_json(document, out)
    assert out.getvalue() == json.dumps(document, indent=2, default=str) + "\n"
    assert len(writes) > 10
