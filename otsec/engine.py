"""The streaming engine: capture → packets → flows/reassembly → decoders → events.

One :class:`Engine` serves every way otsec is used — ``analyze`` and ``check`` on files,
and the continuous sensor on a live interface — so there is one implementation of the
data path. It is fed one packet at a time and calls back for each event and each
finished flow; it never holds the events of a capture.

``analyze(..., jobs=N)`` runs N engines in parallel, each owning the connections whose
endpoints hash to it (every shard reads every packet but decodes only its own flows),
and merges their output back into exactly the order one engine would have produced.
"""

from __future__ import annotations

import heapq
import multiprocessing
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from otsec.capture import MALFORMED_REASONS, CaptureError, CaptureReader, parse_packet
from otsec.decoders.base import Decoder
from otsec.decoders.registry import BUILTIN
from otsec.flow.session import Health
from otsec.flow.table import DEFAULT_MAX_FLOWS, DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE, FlowTable
from otsec.model import Event, Flow


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

#: A source whose first packet is this much older than the last packet seen does not
#: continue the traffic so far (an unrelated capture, a ring buffer reused): the open
#: connections are ended first, so a reused 5-tuple is not taken for the same connection.
SOURCE_CLOCK_SLACK = 1.0


def _ignore(_item) -> None:
    return None


def shard_of(pkt: tuple, count: int) -> int:
    """Shard owning a packet's connection: symmetric in direction, stable across processes."""
    return (pkt[2][-1] + pkt[3][-1] + pkt[5] + pkt[6]) % count


class Engine:
    """Feed packets in, get events and flows out (sans-IO: the caller owns the source)."""

    def __init__(self, config: EngineConfig | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 on_flow: Callable[[Flow], None] | None = None):
        self.config = config or EngineConfig()
        self.health = Health()
        self.table = FlowTable(
            self.config.decoders, self.config.ports, on_event or _ignore, on_flow or _ignore,
            self.health, max_flows=self.config.max_flows,
            tcp_idle=self.config.tcp_idle_timeout, udp_idle=self.config.udp_idle_timeout)
        self.packets = 0
        self.bytes = 0
        self.skipped: dict[str, int] = {}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        #: one entry per capture file or interface: name, packets, first/last ts, error
        self.sources: list[dict] = []
        self.sources_restarted = 0         # sources that did not continue the traffic so far
        self._source_starts = False        # the next packet is its source's first

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
            if self.last_ts is not None and ts < self.last_ts - SOURCE_CLOCK_SLACK:
                self.sources_restarted += 1
                self.table.retire_all(pkt_no)
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        pkt = parse_packet(linktype, frame)
        if pkt.__class__ is str:
            self.skipped[pkt] = self.skipped.get(pkt, 0) + 1
            return
        shard = self.config.shard
        if shard is not None and shard_of(pkt, shard[1]) != shard[0]:
            self.table.tick(pkt_no, ts)
            return
        self.table.packet(pkt_no, ts, pkt)

    def read_file(self, path: str | Path, progress: Callable[[int, int], None] | None = None) -> None:
        """Feed every packet of a capture file; a corrupt tail is recorded, not raised."""
        with CaptureReader(path) as reader:
            self.set_source(str(path))
            source = self.sources[-1]
            first_ts = None
            feed = self.feed
            for pkt_no, ts, linktype, frame in reader:
                if first_ts is None:
                    first_ts = ts
                feed(pkt_no, ts, linktype, frame)
                if progress is not None and not pkt_no & 0x3FFF:
                    progress(reader.offset, reader.size)
            if progress is not None:
                progress(reader.offset, reader.size)
            source.update(packets=reader.packets, first_ts=first_ts,
                          last_ts=self.last_ts if first_ts is not None else None, error=reader.error)

    def sweep(self, now: float) -> None:
        """Retire connections idle at ``now`` (a live source calls this on a quiet link,
        where no packet arrives to advance time)."""
        self.table.tick(self.table.clock[1], now)

    def open_flows(self) -> list[Flow]:
        """The connections being tracked now, as their (still growing) flow records."""
        return [st.flow for st in self.table.states.values()]

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
            progress: Callable[[int, int], None] | None = None, jobs: int = 1) -> dict:
    """Stream capture files through one engine (flows continue across files, as with
    rotated captures of one link) and return the run's statistics.

    With ``jobs`` > 1 the work is split by connection over that many processes; the
    callbacks then see the same items in the same order as with one process (as long as
    the flow cap is not reached, since each shard has its own table). Raises
    CaptureError only for a file that cannot be opened as a capture at all.
    """
    paths = [Path(p) for p in paths]
    if jobs > 1:
        return _analyze_parallel(paths, on_event or _ignore, on_flow or _ignore,
                                 config or EngineConfig(), jobs)
    engine = Engine(config, on_event, on_flow)
    for path in paths:
        engine.read_file(path, progress)
    return engine.finish()


# --- parallel shards ------------------------------------------------------------------

def _run_shard(paths: list[Path], config: EngineConfig, index: int, count: int, out: str) -> dict:
    """One shard: decode its connections, spill (order key, item) records to ``out``."""
    config = EngineConfig(**{**config.__dict__, "shard": (index, count)})
    seq = 0
    with open(out, "wb", buffering=1 << 20) as spill:
        def record(item) -> None:
            # one pickle per record: a shared Pickler would memoise every item it ever wrote
            nonlocal seq
            seq += 1
            pickle.dump(((engine.table.clock, engine.table.emitting, seq), item), spill,
                        protocol=pickle.HIGHEST_PROTOCOL)

        engine = Engine(config, record, record)
        for path in paths:
            engine.read_file(path)
        return engine.finish()


def _records(path: str) -> Iterator[tuple]:
    with open(path, "rb", buffering=1 << 20) as spill:
        load = pickle.load
        while True:
            try:
                yield load(spill)
            except EOFError:
                return


def _analyze_parallel(paths: list[Path], on_event, on_flow, config: EngineConfig, jobs: int) -> dict:
    for path in paths:  # fail early, in the parent, with the same error as one process
        CaptureReader(path).close()
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="otsec-shards-") as tmp:
        spills = [f"{tmp}/shard-{i}.pickle" for i in range(jobs)]
        with ctx.Pool(jobs) as pool:
            stats = pool.starmap(_run_shard, [(paths, config, i, jobs, spills[i]) for i in range(jobs)])
        for _key, item in heapq.merge(*map(_records, spills), key=lambda rec: rec[0]):
            (on_event if isinstance(item, Event) else on_flow)(item)
    return _merge_stats(stats)


def reduce(paths: Iterable[str | Path], make_reducer: Callable, config: EngineConfig | None = None,
           jobs: int = 1, progress: Callable[[int, int], None] | None = None):
    """Fold the captures' events and flows into an aggregate and return (aggregate, stats).

    ``make_reducer()`` builds an object with ``add_event``, ``add_flow`` and
    ``merge(other)``. With ``jobs`` > 1 each shard folds its own connections and only the
    aggregates travel back to be merged, so the parallel run scales with the cores
    (shipping every event to one process instead would make that process the bottleneck).
    """
    paths = [Path(p) for p in paths]
    if jobs <= 1:
        reducer = make_reducer()
        return reducer, analyze(paths, reducer.add_event, reducer.add_flow, config, progress)
    for path in paths:
        CaptureReader(path).close()
    config = config or EngineConfig()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.starmap(_reduce_shard, [(paths, config, i, jobs, make_reducer) for i in range(jobs)])
    reducer = results[0][0]
    for other, _ in results[1:]:
        reducer.merge(other)
    return reducer, _merge_stats([stats for _, stats in results])


def _reduce_shard(paths: list[Path], config: EngineConfig, index: int, count: int, make_reducer):
    reducer = make_reducer()
    engine = Engine(EngineConfig(**{**config.__dict__, "shard": (index, count)}),
                    reducer.add_event, reducer.add_flow)
    for path in paths:
        engine.read_file(path)
    return reducer, engine.finish()


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


__all__ = ["Engine", "EngineConfig", "Result", "analyze", "collect", "reduce", "CaptureError"]
