"""Mistakes real users make, and what each command answers: one line naming what and where,
a non-zero exit code, no traceback, nothing half-written, and no results thrown away."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "example-plant.yaml"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"
SHOWCASE = ROOT / "pcaps" / "protocols_showcase.pcap"
PCAP_HEADER_LEN = 24
RECORD_HEADER = struct.Struct("<IIII")   # ts_sec, ts_usec, caplen, origlen (little-endian pcap)


def otsec(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "otsec.cli.main", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


@pytest.fixture
def text_pcap(tmp_path) -> Path:
    path = tmp_path / "notes.pcap"
    path.write_text("hello, these are my notes, not a capture\n")
    return path


def test_no_arguments_shows_the_help_not_an_error():
    for args, usage in (((), "Usage: otsec [OPTIONS] COMMAND"), (("policy",), "Usage: otsec policy [OPTIONS]")):
        r = otsec(*args)
        assert r.returncode == 2
        assert r.stderr.startswith(usage) and "otsec: error" not in r.stderr


def test_missing_option_value_points_at_the_subcommand_help():
    r = otsec("analyze", SHOWCASE, "--jobs")
    assert r.returncode == 2
    assert r.stderr == "otsec: error: Option '--jobs' requires an argument. (see 'otsec analyze --help')\n"


@pytest.mark.parametrize("command", [
    ["analyze", INCIDENT, "{bad}", "--db", "{db}"],
    ["check", INCIDENT, "{bad}", "-p", POLICY, "--db", "{db}"],
    ["baseline", "learn", INCIDENT, "{bad}", "-p", POLICY, "--db", "{db}"],
    ["report", "-p", POLICY, "--db", "{db}", "--from", INCIDENT, "--from", "{bad}", "-o", "{out}"],
])
def test_a_bad_later_capture_is_refused_before_any_work(tmp_path, text_pcap, command):
    """Every capture is opened before the database is touched: no empty database is left
    behind, and the first file's run is not wasted on the second file's error."""
    db = tmp_path / "site.db"
    fill = {"{bad}": text_pcap, "{db}": db, "{out}": tmp_path / "r.html"}
    r = otsec(*(fill.get(a, a) for a in command))
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {text_pcap}: not a pcap or pcapng file (magic 0x68656c6c at byte 0)\n"
    assert not db.exists()


def test_baseline_learn_names_a_directory_as_such(tmp_path):
    captures = tmp_path / "captures"
    captures.mkdir()
    r = otsec("baseline", "learn", captures, "-p", POLICY, "--db", tmp_path / "b.db")
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {captures}: is a directory (give the capture files)\n"
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize("side", ["--old", "--new"])
def test_baseline_diff_names_both_kinds_a_side_may_be(tmp_path, side):
    """--old/--new take a baseline database or captures: a text file is neither, said so
    (the capture reader's "not a pcap ... (magic ...)" told only half of it)."""
    notdb = tmp_path / "notdb.db"
    notdb.write_text("just some notes\n")
    sides = {"--old": INCIDENT, "--new": INCIDENT, side: notdb}
    r = otsec("baseline", "diff", "--old", sides["--old"], "--new", sides["--new"], "-p", POLICY)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"otsec: error: {side} {notdb}: neither an otsec baseline database nor a pcap/pcapng capture\n"


def test_baseline_diff_keeps_the_specific_error_of_a_damaged_capture(tmp_path):
    """A file with a pcap magic is a capture: its damage is named, not reworded as 'neither'."""
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(INCIDENT.read_bytes()[:10])
    r = otsec("baseline", "diff", "--old", cut, "--new", INCIDENT, "-p", POLICY)
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {cut}: truncated pcap file header: 24 bytes needed, 10 present\n"


@pytest.mark.parametrize("command", [
    ["analyze", SHOWCASE, "--json", "{out}"],
    ["check", INCIDENT, "-p", POLICY, "--json", "{out}", "--db", "{db}"],
    ["report", "-p", POLICY, "--db", "{db}", "--from", INCIDENT, "-o", "{out}"],
    ["policy", "init", "--from", INCIDENT, "-o", "{out}"],
])
def test_output_in_a_missing_directory_is_refused_before_the_run(tmp_path, command):
    out = tmp_path / "reports" / "out.txt"
    db = tmp_path / "site.db"
    r = otsec(*({"{out}": out, "{db}": db}.get(a, a) for a in command))
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {out}: cannot write: no such directory {out.parent}\n"
    assert not db.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_while_writing_json_lines_is_an_output_error_not_a_crash():
    r = otsec("analyze", INCIDENT, "--json", "/dev/full")
    assert r.returncode == 2
    assert r.stderr == "otsec: error: /dev/full: cannot write: No space left on device\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_check_still_shows_its_findings_when_the_json_file_cannot_be_written():
    r = otsec("check", INCIDENT, "-p", POLICY, "--json", "/dev/full", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 2
    assert "OTSEC-UNSAFE-003" in r.stdout and "findings" in r.stdout
    assert r.stderr == "otsec: error: /dev/full: cannot write: No space left on device\n"


def test_database_paths_that_cannot_be_databases(tmp_path):
    r = otsec("analyze", SHOWCASE, "--db", tmp_path / "nodir" / "x.db")
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {tmp_path / 'nodir' / 'x.db'}: cannot create the database: " \
                       f"no such directory {tmp_path / 'nodir'}\n"
    r = otsec("check", INCIDENT, "-p", POLICY, "--db", tmp_path)
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {tmp_path}: is a directory, not a database\n"


def test_report_baseline_that_exists_but_is_not_a_database(tmp_path):
    notdb = tmp_path / "baseline.db"
    notdb.write_text("not sqlite\n")
    r = otsec("report", "-p", POLICY, "--db", tmp_path / "site.db", "--from", INCIDENT,
              "--baseline", notdb, "-o", tmp_path / "r.html")
    assert r.returncode == 2
    assert r.stderr == f"otsec: error: {notdb}: not an otsec database\n"
    assert not (tmp_path / "site.db").exists()


def test_policy_init_on_a_damaged_capture_writes_the_draft_and_exits_1(tmp_path):
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(INCIDENT.read_bytes()[:20000])
    draft = tmp_path / "draft.yaml"
    r = otsec("policy", "init", "--from", broken, "-o", draft)
    assert r.returncode == 1
    assert f"otsec: warning: {broken}: truncated packet record at byte 19934 (packet 163)" in r.stderr
    assert draft.read_text().startswith(f"# Draft policy from: {broken}")
    assert "Traceback" not in r.stderr


def test_json_lines_on_stdout_are_not_mixed_with_the_summary_table():
    r = otsec("analyze", SHOWCASE, "--json", "-")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events and all("protocol" in e for e in events)
    assert "Decode health" in r.stderr


def test_sensor_pcap_dir_that_is_a_file(tmp_path):
    r = otsec("sensor", "--pcap-dir", SHOWCASE, "-p", POLICY, "--db", tmp_path / "s.db", timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == f"otsec: error: --pcap-dir {SHOWCASE}: not a directory"


def _big_capture(path: Path, copies: int) -> None:
    """The incident capture repeated ``copies`` times, each copy an hour later."""
    data = INCIDENT.read_bytes()
    records, off = [], PCAP_HEADER_LEN
    while off < len(data):
        sec, usec, caplen, origlen = RECORD_HEADER.unpack_from(data, off)
        records.append((sec, usec, caplen, origlen, data[off + 16: off + 16 + caplen]))
        off += 16 + caplen
    with open(path, "wb") as f:
        f.write(data[:PCAP_HEADER_LEN])
        for i in range(copies):
            f.write(b"".join(RECORD_HEADER.pack(sec + 3600 * i, usec, caplen, origlen) + body
                             for sec, usec, caplen, origlen, body in records))


def test_ctrl_c_in_a_large_analyze_exits_130_with_one_line(tmp_path):
    big = tmp_path / "big.pcap"
    _big_capture(big, 3000)            # 984,000 packets: a few seconds of work with --json
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "otsec.cli.main", "analyze", str(big), "--json", str(events)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (events.exists() and events.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the analysis ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.startswith("otsec: interrupted") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`otsec analyze ... --json - | head -1`: exit 141 as a C tool killed by SIGPIPE, no
    error line about the pipe (the output was cut on purpose)."""
    # about 130 KB of JSON lines: more than a pipe and the reader's buffer hold, so the
    # writer is still writing when the reader leaves
    proc = subprocess.Popen([sys.executable, "-m", "otsec.cli.main", "analyze", str(INCIDENT), str(SHOWCASE),
                             "--json", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert json.loads(first)["protocol"]
    assert proc.wait(timeout=60) == 141
    assert "error" not in stderr and "Traceback" not in stderr


def _children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def _start_jobs_run(tmp_path, *extra) -> tuple[subprocess.Popen, list[int], Path]:
    """A --jobs 2 analyze of a large capture, returned with both workers started and then
    stopped (SIGSTOP), so that however fast they are they cannot finish before the test
    acts; the test continues them (_resume). Temporary files go to the test's own directory."""
    big = tmp_path / "big.pcap"
    _big_capture(big, 1000)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "otsec.cli.main", "analyze", str(big), "--jobs", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.monotonic() + 60
    while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    assert proc.poll() is None and len(workers) == 2, "the workers did not start in time"
    return proc, workers, tmp


def _resume(workers: list[int]) -> None:
    for pid in workers:
        if not _gone(pid):
            os.kill(pid, signal.SIGCONT)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="pgrep (procps) not installed")
def test_sigterm_stops_the_jobs_workers_and_removes_their_files(tmp_path):
    """A service manager or `timeout` stopping a --jobs run: exit 143 with one line, the
    worker processes ended and their spill files removed."""
    proc, workers, tmp = _start_jobs_run(tmp_path, "--json", tmp_path / "events.jsonl")
    proc.send_signal(signal.SIGTERM)
    _resume(workers)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (143, "otsec: terminated; the output is incomplete\n")
    assert all(_gone(pid) for pid in workers)
    assert list(tmp.iterdir()) == []


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="pgrep (procps) not installed")
def test_a_killed_jobs_worker_is_reported_at_once_in_one_line(tmp_path):
    """The out-of-memory killer takes a worker: the run stops (it does not wait for the
    other worker to finish) with exit 3 and one line that says what happened."""
    proc, workers, tmp = _start_jobs_run(tmp_path)
    os.kill(workers[-1], signal.SIGKILL)
    _resume(workers[:-1])
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (
        3, "otsec: error: a --jobs worker process was killed by signal 9 (SIGKILL; out of memory?)\n")
    assert all(_gone(pid) for pid in workers)
    assert list(tmp.iterdir()) == []


def test_one_large_write_to_a_pipe_whose_reader_left_is_not_reported_as_written():
    """CPython returns from one large write() to a pipe whose reader left midway as if it
    had all been written; stdout's wrapper writes in flushed pieces so the command still
    ends with exit 141 (`otsec check ... | head` used to exit 0)."""
    import io
    import threading

    import typer

    from otsec.cli.main import _Stdout

    read_fd, write_fd = os.pipe()
    stream = _Stdout(io.TextIOWrapper(io.FileIO(write_fd, "w"), encoding="utf-8"))

    def read_a_little_then_leave():
        os.read(read_fd, 100)
        os.close(read_fd)
    reader = threading.Thread(target=read_a_little_then_leave)
    reader.start()
    with pytest.raises(typer.Exit) as ended:
        stream.write("x" * 900_000)
        stream.flush()
    reader.join()
    assert ended.value.exit_code == 141
