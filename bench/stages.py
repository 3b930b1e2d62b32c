#!/usr/bin/env python3
"""Where each microsecond goes: the engine's cost per stage and per kind of packet.

bench/run.py says how fast otsec is; this script says why, so that the next step of the
fast path is chosen from measurements. In one process, on one capture, it times:

* the record walk alone, then the walk plus link/IP/TCP parsing;
* the engine per packet, by what the packet is to the flow table (the first packet of a
  connection, a packet without payload, payload of a connection being decoded, payload
  no decoder wants, a packet that is not TCP/UDP/IP);
* the analyze summary per event and flow, and the checks per event and flow (with the
  benchmark policy from bench/run.py when a bench capture is given).

    python bench/stages.py bench/out/bench_200000.pcap
    python bench/stages.py CAPTURE --policy POLICY.yaml

The per-kind table profiles the pure-Python flow layer (the reference, and what runs
without a C compiler). It then times the compiled flow layer the engine uses by default:
whole, without its decoders' work (the packet layer alone), with the Python decoders
only (their compiled twins switched off), and with the analyze summary counted in as the
command does (events counted by key, see FlowTable.tally_by), so the share of each part
is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otsec.analysis.inventory import Summary  # noqa: E402
from otsec.capture import CaptureReader, parse_packet  # noqa: E402
from otsec.cli.main import GC_THRESHOLDS  # noqa: E402
from otsec.decoders.registry import BUILTIN  # noqa: E402
from otsec.engine import CompiledFlowTable, Engine, EngineConfig, collect  # noqa: E402

KINDS = ("new connection", "no payload", "payload, decoded connection", "payload, not decoded",
         "not TCP/UDP/IP")


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def walk(path: Path) -> None:
    with CaptureReader(path) as reader:
        for _ in reader:
            pass


def walk_and_parse(path: Path) -> None:
    with CaptureReader(path) as reader:
        for _, _, linktype, frame in reader:
            parse_packet(linktype, frame)


def kind_of(engine: Engine, linktype: int, frame: bytes) -> str:
    """What the packet is to the flow table, looked up before the engine sees it."""
    pkt = parse_packet(linktype, frame)
    if pkt.__class__ is str:
        return KINDS[4]
    entry = engine.table.index.get((pkt[2], pkt[5], pkt[3], pkt[6], pkt[4]))
    if entry is None:
        return KINDS[0]
    if not pkt[10]:
        return KINDS[1]
    st = entry[0]
    return KINDS[2] if st.session is not None or st.attempts > 0 else KINDS[3]


def engine_by_kind(path: Path) -> tuple[dict, dict]:
    """Engine time per kind of packet (the lookup that classifies is not timed). Events
    and flows go nowhere, as in a streaming run: kept, they would make the collector
    walk them all and inflate every stage."""
    engine = Engine(EngineConfig(compiled=False))
    count = dict.fromkeys(KINDS, 0)
    spent = dict.fromkeys(KINDS, 0.0)
    clock = time.perf_counter
    with CaptureReader(path) as reader:
        engine.set_source(str(path))
        for pkt_no, ts, linktype, frame in reader:
            kind = kind_of(engine, linktype, frame)
            start = clock()
            engine.feed(pkt_no, ts, linktype, frame)
            spent[kind] += clock() - start
            count[kind] += 1
    start = clock()
    engine.finish()
    spent[KINDS[0]] += clock() - start   # retiring connections belongs to their lifecycle
    return count, spent


def feed(on_event, on_flow, events: list, flows: list) -> None:
    for ev in events:
        on_event(ev)
    for flow in flows:
        on_flow(flow)


def main() -> int:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)   # as the otsec command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", type=Path)
    parser.add_argument("--policy", type=Path, help="policy for the checks (default: the bench policy "
                        "next to a bench capture, else the checks are not timed)")
    args = parser.parse_args()
    path = args.capture
    policy_path = args.policy or (path.parent / "bench-policy.yaml")

    # the compiled layer first, while the process holds nothing (the per-event stages
    # below keep every event of the capture in memory)
    compiled = None if CompiledFlowTable is None else (
        engine_seconds(path), engine_seconds(path, decoders=_silent(BUILTIN)),
        engine_seconds(path, twins=False), engine_seconds(path, reducer=Summary))
    t_walk = _seconds(lambda: walk(path))
    t_parse = _seconds(lambda: walk_and_parse(path)) - t_walk
    count, spent = engine_by_kind(path)
    packets = sum(count.values())
    result = collect([path])
    events, flows = result.events, result.flows
    gc.freeze()   # the collected events are not garbage: keep the collector off them
    summary = Summary()
    t_summary = _seconds(lambda: feed(summary.add_event, summary.add_flow, events, flows))
    t_check = None
    if policy_path.exists():
        from otsec.detect.checker import Checker
        from otsec.policy.loader import load_policy

        policy = load_policy(policy_path)
        checker = Checker(policy)
        t_check = _seconds(lambda: feed(checker.on_event, checker.on_flow, events, flows))

    us = 1e6
    print(f"{path.name}: {packets:,} packets, {len(events):,} events, {len(flows):,} connections\n")
    print(f"{'stage':44s} {'count':>10s} {'seconds':>8s} {'us each':>8s}")
    print(f"{'record walk':44s} {packets:10,d} {t_walk:8.3f} {t_walk / packets * us:8.2f}")
    print(f"{'link/IP/TCP parse':44s} {packets:10,d} {t_parse:8.3f} {t_parse / packets * us:8.2f}")
    for kind in KINDS:
        n = count[kind]
        each = spent[kind] / n * us if n else 0.0
        print(f"{'engine: ' + kind:44s} {n:10,d} {spent[kind]:8.3f} {each:8.2f}")
    print(f"{'summary, one by one (per event and connection)':44s} {len(events):10,d} {t_summary:8.3f} "
          f"{t_summary / max(len(events), 1) * us:8.2f}")
    if t_check is not None:
        print(f"{'checks (per event and connection)':44s} {len(events):10,d} {t_check:8.3f} "
              f"{t_check / max(len(events), 1) * us:8.2f}")

    engine_total = sum(spent.values())
    analyze = t_walk + engine_total + t_summary   # the engine's feed includes the parse
    print(f"\nanalyze in one process, Python flow layer: {analyze:.2f} s, {packets / analyze:,.0f} packets/s")
    if CompiledFlowTable is None:
        print("compiled flow layer: not built")
        return 0
    full, packet_layer, python_decoders, summarised = compiled
    print(f"\n{'compiled flow layer':44s} {'packets':>10s} {'seconds':>8s} {'us each':>8s}")
    for label, seconds in (("engine (twins + Python decoders)", full),
                           ("engine, decoders answering nothing", packet_layer),
                           ("engine, Python decoders only (no twins)", python_decoders),
                           ("engine + summary (events counted by key)", summarised)):
        print(f"{label:44s} {packets:10,d} {seconds:8.3f} {seconds / packets * us:8.2f}")
    print(f"analyze in one process, compiled flow layer: {summarised:.2f} s, "
          f"{packets / summarised:,.0f} packets/s (start-up and report not counted)")
    return 0


def engine_seconds(path: Path, decoders=None, twins: bool = True, reducer=None) -> float:
    """Best of two runs of the compiled engine over the capture (events go nowhere, or
    into a fresh ``reducer()``, as analyze counts its summary)."""
    config = EngineConfig(decoders=decoders or BUILTIN)
    if not twins:   # the same functions under new identities: the compiled layer does not
        # recognise them, so probing, framing and decoding stay in Python
        config = EngineConfig(decoders=tuple(
            dataclasses.replace(d, decode=_relay(d.decode), frame=_relay(d.frame), probe=_relay(d.probe))
            for d in config.decoders))
    times = []
    for _ in range(2):
        engine = Engine(config, reducer=reducer() if reducer else None)
        times.append(_seconds(lambda: (engine.read_file(path), engine.finish())))
    return min(times)


def _relay(function):
    """A decoder function under another identity (the compiled layer calls a twin only in
    place of the very function it mirrors)."""
    return lambda *args: function(*args)


def _silent(decoders):
    """The decoders, probing and framing as usual, decoding into no events."""
    return tuple(dataclasses.replace(d, decode=lambda msg, from_client, state: []) for d in decoders)


if __name__ == "__main__":
    sys.exit(main())
