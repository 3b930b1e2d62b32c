"""The streaming engine: capture → packets → flows/reassembly → decoders → events.

One :class:`Engine` serves every way otsec is used — ``analyze`` and ``check`` on files,
and the continuous sensor on a live interface — so there is one implementation of the
data path. It is fed one packet at a time and calls back for each event and each
finished flow; it never holds the events of a capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from otsec.capture import MALFORMED_REASONS, CaptureError, CaptureReader, parse_packet
from otsec.decoders.base import Decoder
from otsec.decoders.registry import BUILTIN
from otsec.flow.session import Health
from otsec.flow.table import FlowTable
from otsec.model import Event, Flow


@dataclass
class EngineConfig:
    """Knobs of the data path; the defaults suit a plant network."""

    decoders: tuple[Decoder, ...] = BUILTIN
    #: Server ports per decoder name, overriding each decoder's defaults (e.g. {"modbus": (502, 5020)}).
    ports: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_flows: int = 100_000
    tcp_idle_timeout: float = 3600.0
    udp_idle_timeout: float = 120.0


def _ignore(_item) -> None:
    return None


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
        self.capture_errors: list[str] = []
        self.source_first_ts: float | None = None

    def set_source(self, name: str) -> None:
        """Name the capture file or interface the next packets come from."""
        self.table.capture = name
        self.source_first_ts = None

    def feed(self, pkt_no: int, ts: float, linktype: int, frame: bytes) -> None:
        self.packets += 1
        self.bytes += len(frame)
        if self.source_first_ts is None:
            self.source_first_ts = ts
            if self.first_ts is None:
                self.first_ts = ts
        self.last_ts = ts
        pkt = parse_packet(linktype, frame)
        if pkt.__class__ is str:
            self.skipped[pkt] = self.skipped.get(pkt, 0) + 1
            return
        self.table.packet(pkt_no, ts, pkt)

    def read_file(self, path: str | Path, progress: Callable[[int, int], None] | None = None) -> CaptureReader:
        """Feed every packet of a capture file; a corrupt tail is recorded, not raised."""
        with CaptureReader(path) as reader:
            self.set_source(str(path))
            feed = self.feed
            if progress is None:
                for pkt_no, ts, linktype, frame in reader:
                    feed(pkt_no, ts, linktype, frame)
            else:
                for pkt_no, ts, linktype, frame in reader:
                    feed(pkt_no, ts, linktype, frame)
                    if not pkt_no & 0x3FFF:
                        progress(reader.offset, reader.size)
                progress(reader.offset, reader.size)
            if reader.error:
                self.capture_errors.append(reader.error)
        return reader

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
            "capture_errors": list(self.capture_errors),
        }


def analyze(paths: Iterable[str | Path], on_event: Callable[[Event], None] | None = None,
            on_flow: Callable[[Flow], None] | None = None, config: EngineConfig | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """Stream capture files through one engine (flows continue across files, as with
    rotated captures of one link). Raises CaptureError only for a file that cannot be
    opened as a capture at all."""
    engine = Engine(config, on_event, on_flow)
    for path in paths:
        engine.read_file(path, progress)
    return engine.finish()


@dataclass
class Result:
    events: list[Event]
    flows: list[Flow]
    stats: dict


def collect(paths: Iterable[str | Path], config: EngineConfig | None = None) -> Result:
    """Everything in memory, for tests and small captures."""
    events: list[Event] = []
    flows: list[Flow] = []
    stats = analyze(paths, events.append, flows.append, config)
    return Result(events, flows, stats)


__all__ = ["Engine", "EngineConfig", "Result", "analyze", "collect", "CaptureError"]
