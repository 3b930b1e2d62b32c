"""What every command shares: the one-line error, input checks, and running the engine.

Every user error ends as ``otsec: error: <what and where>`` on stderr and an exit code,
never a traceback; a damaged capture is a warning after the partial results.
"""

from __future__ import annotations

import gc
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import typer

from otsec.capture import CaptureError, CaptureReader
from otsec.engine import EngineConfig, WorkerError, analyze, reduce
from otsec.model import Event, Flow
from otsec.paths import unwritable

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich Console made on first use: a command that prints nothing through it
    (``analyze --format json``) does not pay for importing rich."""

    def __init__(self, **options):
        self._options = options

    @cached_property
    def real(self) -> Console:
        from rich.console import Console

        return Console(**self._options)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


err = LazyConsole(stderr=True, highlight=False, soft_wrap=True)

#: Inputs above this size get a progress bar (when stderr is a terminal).
PROGRESS_MIN_BYTES = 16 * 1024 * 1024


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr and return the exit to raise."""
    err.print(f"otsec: error: {message}", markup=False)
    return typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"otsec: warning: {message}", markup=False)


def load_policy_or_exit(path: Path):
    """The policy, or every problem as FILE:LINE: message on stderr and exit 2."""
    from otsec.policy.loader import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        for line in exc.errors:
            err.print(line, markup=False)
        raise typer.Exit(2) from None


def write_output(output: Path | None, text: str) -> bool:
    """Write a command's document to ``output`` ('-' or None: stdout); True if it went to a file."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return False
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{output}: cannot write: {exc.strerror or exc}") from None
    return True


def check_output(output: Path | None) -> None:
    """Refuse an output file that cannot be created before any work is done, so that a
    long run does not end in 'cannot write' with its results lost."""
    if output is None or str(output) == "-":
        return
    why = unwritable(output)
    if why:
        raise fail(f"{output}: cannot write: {why}")


def open_database(path: Path):
    """The otsec database at ``path`` (created if needed), or one line and exit 2."""
    from otsec.store.db import StoreError, open_db

    try:
        return open_db(path)
    except StoreError as exc:
        raise fail(str(exc)) from None


def check_inputs(paths: list[Path]) -> None:
    """Every capture exists and opens as pcap/pcapng: checked before a database or an
    output is touched, so that a bad last file does not waste the run of the others."""
    for path in paths:
        if not path.exists():
            raise fail(f"{path}: no such capture file")
        if path.is_dir():
            raise fail(f"{path}: is a directory (give the capture files)")
        try:
            CaptureReader(path).close()
        except CaptureError as exc:
            raise fail(str(exc)) from None


def parse_ports(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``--port modbus=502,5020`` → {"modbus": (502, 5020)}."""
    from otsec.decoders.registry import BUILTIN

    known = {d.name for d in BUILTIN}
    ports: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, _, nums = value.partition("=")
        if name not in known or not nums:
            raise fail(f"--port {value!r}: expected NAME=PORT[,PORT...] with NAME one of {', '.join(sorted(known))}")
        try:
            parsed = tuple(int(n) for n in nums.split(","))
        except ValueError:
            raise fail(f"--port {value!r}: ports must be numbers") from None
        if not all(0 < p < 65536 for p in parsed):
            raise fail(f"--port {value!r}: ports must be between 1 and 65535")
        ports[name] = ports.get(name, ()) + parsed
    return ports


class _Progress:
    """A rich progress bar over the bytes of the capture files, shown on big inputs only."""

    def __init__(self, paths: list[Path], enabled: bool):
        total = sum(p.stat().st_size for p in paths)
        self.bar = None
        if enabled and total >= PROGRESS_MIN_BYTES and err.is_terminal:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                console=err.real, transient=True)
            self.task = self.bar.add_task("decoding", total=total)
            self.done = 0

    def callback(self) -> Callable[[int, int], None] | None:
        if self.bar is None:
            return None

        def update(offset: int, size: int) -> None:
            self.bar.update(self.task, completed=self.done + offset)
            if offset >= size:
                self.done += size
        return update

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def run_engine(paths: list[Path], on_event: Callable[[Event], None] | None,
               on_flow: Callable[[Flow], None] | None, config: EngineConfig | None = None,
               progress: bool = True, jobs: int = 1, reducer: Callable | None = None,
               prepare: Callable | None = None):
    """Stream the captures through the engine and return its statistics, or with
    ``reducer`` (see engine.reduce) the pair (aggregate, statistics); ``prepare`` as in
    engine.analyze. Unreadable input becomes exit 2."""
    check_inputs(paths)
    # what the command imported and built so far (decoders, policy, baseline, output
    # modules) is never garbage: frozen like the start-up objects (see main.run), the
    # collector does not walk it again while millions of events pass (~0.1 s on 1M packets)
    gc.freeze()
    try:
        with _Progress(paths, progress and jobs == 1) as bar:
            if reducer is not None:
                return reduce(paths, reducer, config, jobs, bar.callback(), on_event, on_flow, prepare)
            return analyze(paths, on_event, on_flow, config, bar.callback(), jobs, prepare)
    except CaptureError as exc:
        raise fail(str(exc)) from None
    except WorkerError as exc:   # killed (out of memory?) or failed: not the input's fault
        raise fail(str(exc), 3) from None


def report_damage(stats: dict) -> bool:
    """Warn about damaged captures (after the results); True when there was any."""
    for message in stats["capture_errors"]:
        warn(f"{message} (the results cover the packets before it)")
    return bool(stats["capture_errors"])
