"""The ``otsec`` command line: thin commands over the library.

Exit codes: 0 success; 1 the input was damaged (partial results were still reported) or,
for ``check``, a finding at or above ``--fail-on``; 2 usage, input or policy errors;
3 an internal error (a bug: one line, OTSEC_DEBUG=1 shows the traceback) or a --jobs worker
that was killed; 130 interrupted (SIGINT), 143 terminated (SIGTERM), 141 stdout's reader left.
What only one command or output needs is imported when it runs: the fixed cost of every
run stays small (tests/test_cli_startup_imports.py).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from otsec import __version__
from otsec.cli.check import baseline_app, check, policy_app
from otsec.cli.report import report
from otsec.cli.sensor import sensor
from otsec.cli.common import (check_inputs, check_output, err, fail, open_database, parse_ports, report_damage,
                              run_engine)
from otsec.engine import EngineConfig
from otsec.model import Event
from otsec.report.indented_json import write_indented

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="OT network security monitor and segmentation auditor.")


def open_capture_set(db: Path, captures: list[Path]):
    """Storage for this run's captures (imported here: SQLite is only needed with --db)."""
    from otsec.store.db import CaptureSet, StoreError

    try:
        return CaptureSet(open_database(db), captures)
    except StoreError as exc:
        raise fail(str(exc)) from None


@app.command()
def analyze(
    captures: List[Path] = typer.Argument(..., metavar="CAPTURE...", help="pcap or pcapng files, analysed as one stream in the order given"),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="write every decoded message as JSON lines to this file ('-' for stdout)"),
    db: Optional[Path] = typer.Option(None, "--db", metavar="FILE", help="store messages and flows in this SQLite database"),
    output_format: str = typer.Option("table", "--format", metavar="table|json", help="summary format"),
    port: Optional[List[str]] = typer.Option(None, "--port", metavar="NAME=PORT[,PORT]", help="extra server ports for a decoder, e.g. modbus=5020 (repeatable)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on large files"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="N", help="processes to use: connections are split between them; the output is the same as with one while the flow table does not overflow"),
    max_flows: int = typer.Option(EngineConfig.max_flows, "--max-flows", min=100, metavar="N", help="connections tracked at once, per --jobs process (memory bound; beyond it the least recently active are retired)"),
) -> None:
    """Decode Modbus/TCP, S7comm/S7comm-plus and OPC UA in captures and summarise what talks to what."""
    from otsec.analysis.inventory import Summary

    if output_format not in ("table", "json"):
        raise fail(f"--format {output_format!r}: expected table or json")
    check_inputs(captures)
    if json_out is not None and str(json_out) == "-" and output_format == "json":
        raise fail("--json - and --format json would both write to stdout: send one of them to a file")
    config = EngineConfig(ports=parse_ports(port), max_flows=max_flows)
    check_output(json_out)
    out = None
    if json_out is not None:
        try:
            out = sys.stdout if str(json_out) == "-" else open(json_out, "w", encoding="utf-8")
        except OSError as exc:
            raise fail(f"{json_out}: cannot write: {exc.strerror or exc}") from None
    stored = open_capture_set(db, captures) if db is not None else None
    if stored is not None:
        from otsec.store.db import event_row, flow_row

    def prepare(item) -> tuple:
        """What the outputs need of an event or flow, built where it is decoded (in a
        --jobs worker): (capture, JSON line, database row)."""
        if isinstance(item, Event):
            line = json.dumps(item.to_dict(), separators=(",", ":"), default=str) + "\n" if out else None
            return item.capture, line, event_row(item) if stored else None
        return item.capture, None, flow_row(item) if stored else None

    def on_event(prepared: tuple) -> None:
        capture, line, row = prepared
        if line is not None:
            try:
                out.write(line)
            except OSError as exc:  # a full disk: stop, the JSON lines would be incomplete
                raise fail(f"{json_out}: cannot write: {exc.strerror or exc}") from None
        if row is not None:
            stored.add_event_row(capture, row)

    def on_flow(prepared: tuple) -> None:
        capture, _, row = prepared
        if row is not None:
            stored.add_flow_row(capture, row)

    # with --jobs each process folds its own share of the summary and prepares the
    # output of its own connections; this one only writes them out in order
    streamed = out is not None or stored is not None
    summary, stats = run_engine(captures, on_event if streamed else None, on_flow if stored else None,
                                config, progress, jobs, reducer=Summary, prepare=prepare)
    if stored is not None:
        stored.finish(stats, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if out is not None and out is not sys.stdout:
        try:
            out.close()
        except OSError as exc:  # the last buffered lines could not be written
            raise fail(f"{json_out}: cannot write: {exc.strerror or exc}") from None
    document = summary.report(stats, [str(p) for p in captures])
    if output_format == "json":
        _write_json(document, sys.stdout)
    else:
        from rich.console import Console

        from otsec.report.console import render_summary

        to_stderr = json_out is not None and str(json_out) == "-"  # stdout carries the JSON lines
        out_console = Console(highlight=False, stderr=to_stderr)
        if not out_console.is_terminal:
            out_console = Console(highlight=False, stderr=to_stderr, width=160)
        render_summary(document, out_console)
    if report_damage(stats):
        raise typer.Exit(1)


#: Pieces of encoded JSON joined per write (a line or a small object each: ~30 KiB per
#: write on the benchmark): few writes, and never the whole document's pieces in one
#: list (json.dumps with an indent lists them all: ~40 MiB on 2M packets).
JSON_PIECES_PER_WRITE = 1024


def _write_json(document: dict, out) -> None:
    """``print(json.dumps(document, indent=2, default=str))``, written as it is encoded."""
    write_indented(document, out.write, JSON_PIECES_PER_WRITE)
    out.write("\n")


def version_callback(value: bool) -> None:
    if value:
        from otsec.engine import CompiledFlowTable

        layer = ("compiled flow layer" if CompiledFlowTable is not None else
                 "pure-Python flow layer: the C extension was not built, several times slower")
        print(f"otsec {__version__} ({layer})")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="show the version and exit")) -> None:
    """OT network security monitor and segmentation auditor."""


app.add_typer(policy_app, name="policy")
app.add_typer(baseline_app, name="baseline")
app.command("check")(check)
app.command("report")(report)
app.command("sensor")(sensor)


def _command_path(argv: list[str]) -> str:
    """The command a usage error belongs to when click does not say (a missing option value)."""
    command, path = typer.main.get_command(app), ["otsec"]
    for word in argv:
        command = getattr(command, "commands", {}).get(word)
        if command is None:
            break
        path.append(word)
    return " ".join(path)


class _Stdout:
    """stdout whose reader going away (``otsec ... | head``) ends the command quietly with
    exit code 141, as a C tool killed by SIGPIPE would, instead of an error about the pipe."""

    #: Larger writes go out in pieces of this size, each flushed: CPython reports one large
    #: write to a pipe whose reader left midway as complete, and the error is lost.
    PIECE = 1 << 16

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            if len(text) <= self.PIECE:
                return self._stream.write(text)
            for start in range(0, len(text), self.PIECE):
                self._stream.write(text[start:start + self.PIECE])
                self._stream.flush()
            return len(text)
        except BrokenPipeError:
            raise self._reader_gone() from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise self._reader_gone() from None

    def _reader_gone(self) -> typer.Exit:
        # what is still buffered goes to /dev/null, so the interpreter's last flush is silent
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        return typer.Exit(141)

    def __getattr__(self, name):
        return getattr(self._stream, name)


#: Collector thresholds for otsec's processes (Python's default first one is 700). The
#: engine allocates millions of short-lived, acyclic objects (packets, events); what the
#: collector walks is what lives a little longer (connections' flow records and decoder
#: state, the summary's keys). With 50,000 it walked ~70,000 such objects every few
#: hundred thousand packets (0.1 s of a 1M-packet analyze, 4 %); with 200,000 a run of
#: 1M packets needs no collection, and garbage cycles (a few hundred per run: exception
#: tracebacks) still cannot pile up beyond ~200,000 objects (~20 MB).
GC_THRESHOLDS = (200_000, 20, 20)


class _Terminated(BaseException):
    """SIGTERM (a service manager, `timeout`): unwinds like Ctrl-C, so that --jobs workers
    are stopped and temporary files removed; `otsec sensor` installs its own handler."""


def _terminate(_signum, _frame) -> None:
    raise _Terminated


def run() -> None:
    """The ``otsec`` entry point: usage errors and crashes also end in one line and a code."""
    sys.stdout = _Stdout(sys.stdout)
    gc.freeze()                       # the start-up objects (modules, CLI) are never garbage
    gc.set_threshold(*GC_THRESHOLDS)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False, prog_name="otsec")
        sys.stdout.flush()   # what is still buffered: its reader may have gone (exit 141)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("otsec: interrupted", markup=False)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer's click): one line, not a panel
        ctx = getattr(exc, "ctx", None)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `otsec`, `otsec policy`: the help, as help
            err.print(message, markup=False)
        elif message:
            where = ctx.command_path if ctx is not None else _command_path(sys.argv[1:])
            fail(f"{message} (see '{where} --help')")
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("otsec: interrupted", markup=False)
        sys.exit(130)
    except _Terminated:
        err.print("otsec: terminated; the output is incomplete", markup=False)
        sys.exit(143)
    except Exception as exc:  # a bug: say so in one line; the traceback is one variable away
        if os.environ.get("OTSEC_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (run with OTSEC_DEBUG=1 for the traceback "
             "and please report it)", 3)
        sys.exit(3)
    if code == 130:  # typer turns Ctrl-C inside a command into exit code 130
        err.print("otsec: interrupted; the output is incomplete (a --db database keeps what was "
                  "stored, with the capture marked unfinished)", markup=False)
    sys.exit(code or 0)


if __name__ == "__main__":
    run()
