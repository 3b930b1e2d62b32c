"""The streaming engine: capture → packets → flows/reassembly → decoders → events.

One :class:`Engine` serves every way otsec is used — ``analyze`` and ``check`` on files,
and the continuous sensor on a live interface — so there is one implementation of the
data path. It is fed one packet at a time and calls back for each event and each
finished flow; it never holds the events of a capture.

The flow table is the compiled one (otsec/flow/_fast.c) when it was built, else its
Python reference (otsec/flow/table.py); both give the same events, flows and statistics.
With the compiled table, capture files are walked a read buffer at a time (``_walker``).

``analyze(..., jobs=N)`` runs N engines in parallel, each owning the connections whose
endpoints hash to it (every shard reads every packet but decodes only its own flows),
and merges their output back into exactly the order one engine would have produced.
"""

from __future__ import annotations

import ctypes
import heapq
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from otsec.capture import MALFORMED_REASONS, CaptureError, CaptureReader
from otsec.decoders.base import Decoder
from otsec.decoders.registry import BUILTIN
from otsec.flow.session import Health
from otsec.flow.table import DEFAULT_MAX_FLOWS, DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE, FlowTable
from otsec.model import Event, Flow

try:
    from otsec.flow._fast import FlowTable as CompiledFlowTable
except ImportError:  # built without a C compiler: the pure-Python flow layer serves
    CompiledFlowTable = None


@dataclass
class EngineConfig:
    """Knobs of the data path; the defaults suit a plant network."""

    decoders: tuple[Decoder, ...] = BUILTIN
    #: Server ports per decoder name, overriding each decoder's defaults (e.g. {"modbus": (502, 5020)}).
    ports: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Connections tracked at once. Beyond it the least recently active are retired
    #: (counted as evicted); about 3 KB each, so the default bounds the table near 30 MB.
    max_flows: int = DEFAULT_MAX_FLOWS
    #: Seconds without a packet before a connection is retired.
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE
    udp_idle_timeout: float = DEFAULT_UDP_IDLE
    #: (index, count): decode only the connections of this shard (set by analyze(jobs=N)).
    shard: tuple[int, int] | None = None
    #: Per-source entries kept in the statistics (None: all; a sensor that reads a file a
    #: minute for months keeps only the current one).
    source_history: int | None = None
    #: Use the compiled flow layer when it was built (False: the pure-Python reference,
    #: which gives the same results, several times slower).
    compiled: bool = True

#: A source whose first packet is this much older than the last packet seen does not
#: continue the traffic so far (an unrelated capture, a ring buffer reused): the open
#: connections are ended first, so a reused 5-tuple is not taken for the same connection.
SOURCE_CLOCK_SLACK = 1.0
#: Keys the compiled flow layer counts events under before it adds the counts to the
#: reducer's dicts (about 250 bytes each; a plant's keys mostly fit, so most events only
#: find their key's slot).
TALLY_SLOTS = 8_192


def _ignore(_item) -> None:
    return None


def _both(first: Callable | None, then: Callable | None) -> Callable | None:
    """One callback that calls ``first`` and then ``then`` (either may be None)."""
    if first is None or then is None:
        return first or then

    def both(item) -> None:
        first(item)
        then(item)
    return both


class Engine:
    """Feed packets in, get events and flows out (sans-IO: the caller owns the source)."""

    def __init__(self, config: EngineConfig | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 on_flow: Callable[[Flow], None] | None = None, reducer=None):
        """``reducer`` (see :func:`reduce`) is given every event and flow before the
        callbacks see them; the compiled flow layer counts the events and flows by the
        reducer's ``TALLY`` and ``FLOW_TALLY`` keys itself (see otsec.analysis.tally) and
        hands it only what the counts cannot hold."""
        self.config = config or EngineConfig()
        self.health = Health()
        compiled = self.config.compiled and CompiledFlowTable is not None
        tally = getattr(reducer, "TALLY", None) if compiled else None
        flow_tally = getattr(reducer, "FLOW_TALLY", None) if compiled else None
        if reducer is not None:
            on_event = _both(None if tally else reducer.add_event, on_event)
            on_flow = _both(None if flow_tally else reducer.add_flow, on_flow)
        # the compiled table takes None for "no callback" and then makes no call per item
        nothing = None if compiled else _ignore
        self.table = (CompiledFlowTable if compiled else FlowTable)(
            self.config.decoders, self.config.ports, on_event or nothing, on_flow or nothing,
            self.health, max_flows=self.config.max_flows,
            tcp_idle=self.config.tcp_idle_timeout, udp_idle=self.config.udp_idle_timeout,
            shard=self.config.shard)
        if tally:
            self.table.tally_by(tally, reducer.counts, reducer.add_apart, reducer.add_event, TALLY_SLOTS)
        if flow_tally:
            self.table.tally_by(flow_tally, reducer.flow_counts, reducer.add_flow, reducer.add_flow, TALLY_SLOTS)
        self.packets = 0
        self.bytes = 0
        self.skipped: dict[str, int] = {}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        #: one entry per capture file or interface: name, packets, first/last ts, error
        self.sources: list[dict] = []
        self.sources_restarted = 0         # sources that did not continue the traffic so far
        self._source_starts = False        # the next packet is its source's first
        self._source_first_ts: float | None = None

    @property
    def capture_errors(self) -> list[str]:
        return [s["error"] for s in self.sources if s["error"]]

    def set_source(self, name: str) -> None:
        """Name the capture file or interface the next packets come from."""
        if self.sources:
            self.table.source_index += 1
        self.table.capture = name
        self.sources.append({"name": name, "packets": 0, "first_ts": None, "last_ts": None, "error": None})
        keep = self.config.source_history
        if keep is not None and len(self.sources) > keep:
            del self.sources[:-keep]
        self._source_starts = True

    def feed(self, pkt_no: int, ts: float, linktype: int, frame: bytes) -> None:
        self.packets += 1
        self.bytes += len(frame)
        if self._source_starts:
            self._source_starts = False
            self._source_first_ts = ts
            if self.last_ts is not None and ts < self.last_ts - SOURCE_CLOCK_SLACK:
                self.sources_restarted += 1
                self.table.retire_all(pkt_no)
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        reason = self.table.frame(pkt_no, ts, linktype, frame)
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def read_file(self, path: str | Path, progress: Callable[[int, int], None] | None = None) -> None:
        """Feed every packet of a capture file; a corrupt tail is recorded, not raised."""
        with CaptureReader(path) as reader:
            self.set_source(str(path))
            source = self.sources[-1]
            feed = self.feed
            take = self._walker(reader, progress) if hasattr(self.table, "walk_pcap") else None
            for pkt_no, ts, linktype, frame in reader.packets_left(take):
                feed(pkt_no, ts, linktype, frame)
                if progress is not None and not pkt_no & 0x3FFF and reader.offset < reader.size:
                    progress(reader.offset, reader.size)
            if progress is not None:   # the end, once
                progress(reader.offset, reader.size)
            first_ts = None if self._source_starts else self._source_first_ts
            source.update(packets=reader.packets, first_ts=first_ts,
                          last_ts=self.last_ts if first_ts is not None else None, error=reader.error)

    def _walker(self, reader: CaptureReader, progress: Callable[[int, int], None] | None) -> Callable:
        """The compiled table's walk over a read buffer, as CaptureReader.packets_left
        takes it: the same bookkeeping as feed() does per packet, once per buffer."""
        skipped = self.skipped
        if reader.format == "pcap":
            walk_pcap = self.table.walk_pcap
            swapped = (reader.byte_order == "<") != (sys.byteorder == "little")
            layout = (reader.per_sec, reader.linktype, reader.caplen_limit)

            def walk(buf, pos, number, restart_below):
                return walk_pcap(buf, pos, number, swapped, *layout, skipped, restart_below)
        else:
            walk_pcapng = self.table.walk_pcapng

            def walk(buf, pos, number, restart_below, order, interfaces):
                swapped = (order == "<") != (sys.byteorder == "little")
                return walk_pcapng(buf, pos, number, swapped, interfaces, skipped, restart_below)

        def take(buf: bytes, pos: int, number: int, *layout) -> tuple[int, int, float | None]:
            restart_below = None
            if self._source_starts and self.last_ts is not None:
                restart_below = self.last_ts - SOURCE_CLOCK_SLACK
            new_pos, new_number, nbytes, first, last, restarted = walk(buf, pos, number, restart_below, *layout)
            if new_number > number:
                if self._source_starts:
                    self._source_starts = False
                    self._source_first_ts = first
                self.sources_restarted += restarted
                self.packets += new_number - number
                self.bytes += nbytes
                if self.first_ts is None:
                    self.first_ts = first
                self.last_ts = last
                offset = reader.offset + new_pos - pos   # the reader moves its offset after
                if progress is not None and offset < reader.size:
                    progress(offset, reader.size)
            return new_pos, new_number, last

        return take

    def sweep(self, now: float) -> None:
        """Retire connections idle at ``now`` (a live source calls this on a quiet link,
        where no packet arrives to advance time)."""
        self.table.tick(self.table.clock[1], now)

    @property
    def open_count(self) -> int:
        """Connections tracked now (cheaper than len(open_flows()))."""
        return self.table.open_count

    def open_flows(self) -> list[Flow]:
        """The connections being tracked now, as their (still growing) flow records."""
        return self.table.open_flows()

    def finish(self) -> dict:
        """End of input: report every open connection and return the run's statistics."""
        self.table.finish()
        return self.stats()

    def stats(self) -> dict:
        malformed = sum(n for reason, n in self.skipped.items() if reason in MALFORMED_REASONS)
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "skipped": dict(self.skipped),
            "malformed_packets": malformed,
            **self.table.counters,
            "decode": self.health.as_dict(),
            "sources": [dict(s) for s in self.sources],
            "sources_restarted": self.sources_restarted,
            "capture_errors": self.capture_errors,
        }


def analyze(paths: Iterable[str | Path], on_event: Callable[[Event], None] | None = None,
            on_flow: Callable[[Flow], None] | None = None, config: EngineConfig | None = None,
            progress: Callable[[int, int], None] | None = None, jobs: int = 1,
            prepare: Callable | None = None) -> dict:
    """Stream capture files through one engine (flows continue across files, as with
    rotated captures of one link) and return the run's statistics.

    With ``jobs`` > 1 the work is split by connection over that many processes; the
    callbacks then see the same items in the same order as with one process (as long as
    the flow cap is not reached, since each shard has its own table). ``prepare``, when
    given, turns each event and flow into what the callbacks receive; with ``jobs`` > 1
    it runs in the worker processes, so per-item work such as serialising is shared out
    instead of piling up in the one process that merges (its result must pickle).
    Raises CaptureError only for a file that cannot be opened as a capture at all.
    """
    return _run(paths, None, on_event, on_flow, prepare, config, progress, jobs)[1]


def reduce(paths: Iterable[str | Path], make_reducer: Callable, config: EngineConfig | None = None,
           jobs: int = 1, progress: Callable[[int, int], None] | None = None,
           on_event: Callable | None = None, on_flow: Callable | None = None,
           prepare: Callable | None = None):
    """Fold the captures' events and flows into an aggregate and return (aggregate, stats).

    ``make_reducer()`` builds an object with ``add_event``, ``add_flow`` and
    ``merge(other)``. With ``jobs`` > 1 each shard folds its own connections and only the
    aggregates travel back to be merged, so the parallel run scales with the cores.
    The items (prepared, see :func:`analyze`) may also be streamed to callbacks in order.
    """
    return _run(paths, make_reducer, on_event, on_flow, prepare, config, progress, jobs)


def _run(paths, make_reducer, on_event, on_flow, prepare, config, progress, jobs):
    paths = [Path(p) for p in paths]
    config = config or EngineConfig()
    if jobs > 1:
        return _run_parallel(paths, make_reducer, on_event, on_flow, prepare, config, jobs)
    reducer = make_reducer() if make_reducer is not None else None
    return reducer, _read_all(Engine(config, *_prepared(on_event, on_flow, prepare), reducer), paths, progress)


def _read_all(engine: Engine, paths: list[Path], progress=None) -> dict:
    """Feed every capture through ``engine`` and end the input: the run's statistics."""
    for path in paths:
        engine.read_file(path, progress)
    return engine.finish()


def _prepared(on_event, on_flow, prepare) -> tuple[Callable | None, Callable | None]:
    """The callbacks, each given ``prepare(item)`` instead of the item when it is set."""
    def given(deliver):
        if deliver is None or prepare is None:
            return deliver
        return lambda item: deliver(prepare(item))
    return given(on_event), given(on_flow)


# --- parallel shards ------------------------------------------------------------------

EVENT, FLOW = 0, 1
PR_SET_PDEATHSIG = 1   # prctl(2) option
#: Records a shard pickles at once: one pickle per record made the merging process
#: spend most of its time in pickle.load.
SPILL_BATCH = 1024


def _run_shard(paths: list[Path], config: EngineConfig, index: int, count: int,
               make_reducer, spill_path: str | None, prepare):
    """One shard: decode its connections, fold them into its own aggregate, and spill
    (order key, kind, prepared item) records to ``spill_path`` for the ordered merge."""
    config = EngineConfig(**{**config.__dict__, "shard": (index, count)})
    reducer = make_reducer() if make_reducer is not None else None
    if spill_path is None:
        return reducer, _read_all(Engine(config, reducer=reducer), paths)
    batch: list[tuple] = []
    with open(spill_path, "wb", buffering=1 << 20) as spill:
        def recorder(kind: int):
            def record(item) -> None:
                # (packet, connection) orders the shards' records; one connection's records
                # are all in one shard, already in order, so no tie needs a sequence number
                batch.append(((engine.table.clock, engine.table.emitting), kind, item))
                if len(batch) >= SPILL_BATCH:
                    dump()
            return record

        def dump() -> None:
            # one pickle per batch: a shared Pickler would memoise every item it ever wrote
            pickle.dump(batch, spill, protocol=pickle.HIGHEST_PROTOCOL)
            batch.clear()

        engine = Engine(config, *_prepared(recorder(EVENT), recorder(FLOW), prepare), reducer)
        stats = _read_all(engine, paths)
        dump()
        return reducer, stats


class WorkerError(RuntimeError):
    """A --jobs worker process failed or was killed; str() is one line saying how."""


def _shard_process(send, inherited: list, parent: int, *args) -> None:
    """Body of a forked shard: run it and send back (True, result) or (False, why).

    It closes the read ends of the result pipes it inherited (else a parent that died
    would leave it blocked on a full pipe that nobody can read), asks the kernel to end it
    with its parent, and lets SIGTERM end it at once (the parent's terminate())."""
    for receive in inherited:
        receive.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)
    try:
        send.send((True, _run_shard(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        try:
            send.send((False, f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass   # the parent is gone
    finally:
        send.close()


def _end_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return   # not Linux: the closed pipes still end the worker when it is done
    if os.getppid() != parent:   # the parent died before the request took effect
        os._exit(1)


def _records(path: str) -> Iterator[tuple]:
    with open(path, "rb", buffering=1 << 20) as spill:
        load = pickle.load
        while True:
            try:
                yield from load(spill)
            except EOFError:
                return


def _run_parallel(paths: list[Path], make_reducer, on_event, on_flow, prepare,
                  config: EngineConfig, jobs: int):
    """Fork one process per shard (forked, not pickled: ``prepare`` may be a closure),
    collect their aggregates and merge their spilled items back into stream order."""
    for path in paths:  # fail early, in the parent, with the same error as one process
        CaptureReader(path).close()
    streamed = on_event is not None or on_flow is not None
    ctx = multiprocessing.get_context("fork")
    sys.stdout.flush()   # a child must not inherit (and flush again) what is buffered
    sys.stderr.flush()
    with tempfile.TemporaryDirectory(prefix="otsec-shards-") as tmp:
        spills = [f"{tmp}/shard-{i}.pickle" if streamed else None for i in range(jobs)]
        workers: dict = {}   # result pipe -> (shard index, process)
        try:
            for i in range(jobs):
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_shard_process, daemon=True,
                                   args=(send, [*workers, receive], os.getpid(), paths, config, i, jobs,
                                         make_reducer, spills[i], prepare))
                proc.start()
                send.close()
                workers[receive] = (i, proc)
            results = _results(workers, jobs)
        finally:
            for receive, (_, proc) in workers.items():
                if proc.is_alive():
                    proc.terminate()
                proc.join()
                receive.close()
        if streamed:
            deliver = (on_event or _ignore, on_flow or _ignore)
            for _key, kind, item in heapq.merge(*map(_records, spills), key=lambda rec: rec[0]):
                deliver[kind](item)
    reducer = results[0][0]
    if reducer is not None:
        for other, _ in results[1:]:
            reducer.merge(other)
    return reducer, _merge_stats([stats for _, stats in results])


def _results(workers: dict, jobs: int) -> list:
    """Every shard's (aggregate, statistics), in shard order; the first failure is raised
    as soon as it happens, not after the shards before it have finished."""
    results: list = [None] * jobs
    waiting = dict(workers)
    while waiting:
        for receive in multiprocessing.connection.wait(list(waiting)):
            index, proc = waiting.pop(receive)
            try:
                ok, value = receive.recv()
            except EOFError:
                proc.join()
                code = proc.exitcode
                why = (f"was killed by signal {-code} ({signal.Signals(-code).name}; out of memory?)"
                       if code is not None and code < 0 else f"ended without a result (exit code {code})")
                raise WorkerError(f"a --jobs worker process {why}") from None
            if not ok:
                raise WorkerError(f"a --jobs worker process failed: {value}")
            results[index] = value
    return results


def _merge_stats(shards: list[dict]) -> dict:
    """Packet-level figures are the same in every shard; connection-level ones add up."""
    merged = dict(shards[0])
    for key in ("flows", "flows_timed_out", "flows_evicted", "retransmitted_bytes",
                "overlap_conflicts", "gap_bytes"):
        merged[key] = sum(s[key] for s in shards)
    merged["decode"] = {k: sum(s["decode"][k] for s in shards) for k in shards[0]["decode"]}
    return merged


@dataclass
class Result:
    events: list[Event]
    flows: list[Flow]
    stats: dict


def collect(paths: Iterable[str | Path], config: EngineConfig | None = None, jobs: int = 1) -> Result:
    """Everything in memory, for tests and small captures."""
    events: list[Event] = []
    flows: list[Flow] = []
    stats = analyze(paths, events.append, flows.append, config, jobs=jobs)
    return Result(events, flows, stats)


__all__ = ["Engine", "EngineConfig", "Result", "WorkerError", "analyze", "collect", "reduce", "CaptureError"]
