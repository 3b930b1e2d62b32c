"""Events counted by key in the compiled flow layer (FlowTable.fold_by) fold into the
analyze summary exactly as one by one.

The compiled table hands the summary one stand-in event per group of events that agree on
``Summary.FOLD_KEY`` with the group's size. That is only right while ``add_events`` reads
nothing else of an event, and while n events at once count as n events one by one: both
are checked here, then the whole summary of the compiled engine (groups, tiny batches,
``--jobs``) against the Python engine, which folds event by event.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import otsec.engine as engine_module
from otsec.analysis.inventory import Summary
from otsec.engine import Engine, EngineConfig, collect, reduce
from otsec.flow.session import Health
from otsec.flow.table import ACK, SYN, TCP
from otsec.model import Event
from tests.corpus import captures
from tests.flow_impls import require_compiled
from tests.toy_protocol import TOY, msg

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(REPO.glob("pcaps/*.pcap*"))


def report(summary: Summary, stats: dict) -> str:
    return json.dumps(summary.report(stats, ["x"]), sort_keys=True, default=str)


# --- the summary reads only its fold key ----------------------------------------------------

class Reading:
    """An event that records which fields and detail entries are read of it."""

    def __init__(self, event: Event):
        object.__setattr__(self, "_event", event)
        object.__setattr__(self, "fields", set())
        object.__setattr__(self, "detail_keys", set())

    def __getattr__(self, name):
        self.fields.add(name)
        value = getattr(self._event, name)
        if name == "detail":
            seen = self.detail_keys

            class Detail(dict):
                def get(self, key, default=None):
                    seen.add(key)
                    return super().get(key, default)

                def __getitem__(self, key):
                    seen.add(key)
                    return super().__getitem__(key)

                def __contains__(self, key):
                    seen.add(key)
                    return super().__contains__(key)
            return Detail(value)
        return value


def example_events() -> list[Event]:
    return [ev for path in EXAMPLES for ev in collect([path], EngineConfig(compiled=False)).events]


def test_add_events_reads_only_the_fold_key():
    key = Summary.FOLD_KEY
    events = example_events()
    assert {ev.protocol for ev in events} >= {"modbus", "s7comm", "opcua"}
    grouped = 0
    for ev in events:
        reading = Reading(ev)
        Summary().add_events(reading, 1)
        if any(getattr(ev, name) for name in key.only_without):
            continue   # folded alone: it may read anything
        grouped += 1
        assert reading.fields <= set(key.fields) | set(key.only_without) | {"detail"}, ev
        assert reading.detail_keys <= set(key.detail), ev
    assert grouped > len(events) // 2


def test_n_events_at_once_count_as_n_one_by_one():
    events = example_events()
    once, singly = Summary(), Summary()
    for ev in events:
        once.add_events(ev, 3)
        for _ in range(3):
            singly.add_event(ev)
    stats = {"packets": 0}
    assert report(once, stats) == report(singly, stats)
    assert once.events == 3 * len(events)


# --- the compiled engine's summary equals the one folded event by event ---------------------

SOURCES = [pytest.param(p, id=f"pcaps/{p.name}") for p in EXAMPLES] + [
    *captures()]


@pytest.mark.parametrize("path", SOURCES)
def test_grouped_summary_equals_one_by_one(path, monkeypatch):
    require_compiled()
    expected = report(*reduce([path], Summary, EngineConfig(compiled=False)))
    assert report(*reduce([path], Summary, EngineConfig())) == expected
    monkeypatch.setattr(engine_module, "FOLD_GROUPS", 2)   # a batch handed over every 2 groups
    assert report(*reduce([path], Summary, EngineConfig())) == expected


def test_grouped_summary_on_the_benchmark_also_with_jobs(bench_200k):
    require_compiled()
    one_by_one = reduce([bench_200k], Summary, EngineConfig(compiled=False))
    grouped = reduce([bench_200k], Summary, EngineConfig())
    assert grouped[0].events == one_by_one[0].events > 50_000
    assert report(*grouped) == report(*one_by_one)
    # shards differ from one process where the flow table overflows (each has its own cap)
    sharded = reduce([bench_200k], Summary, EngineConfig(), jobs=2)
    assert report(*sharded) == report(*reduce([bench_200k], Summary, EngineConfig(compiled=False), jobs=2))


# --- the table's side of the contract --------------------------------------------------------

CLIENT, SERVER = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"


def _sized_decode(message, from_client, state):
    """The toy protocol's events, with the message's length in their detail."""
    events = TOY.decode(message, from_client, state)
    for ev in events:
        ev.detail["length"] = len(message)
    return events


SIZED_TOY = dataclasses.replace(TOY, decode=_sized_decode)


def toy_table(folds: list, on_event=None, **fold):
    table_class = require_compiled()
    table = table_class((SIZED_TOY,), {}, on_event or (lambda ev: None), lambda flow: None, Health())
    spec = {"fields": ("function", "src_ip"), "detail": (), "only_without": ("anomalies",),
            "limit": 100, **fold}
    table.fold_by(spec["fields"], spec["detail"], spec["only_without"],
                  lambda ev, n: folds.append((ev, n)), spec["limit"])
    return table


def toy_packets(table, *payloads: bytes) -> None:
    """A client's SYN, then each payload as one client segment."""
    def pkt(seq, flags, data=b""):
        return (None, None, CLIENT, SERVER, TCP, 40000, TOY.ports[0], flags, seq, 0, data)

    table.packet(1, 1.0, pkt(100, SYN))
    seq = 101
    for i, data in enumerate(payloads):
        table.packet(2 + i, 2.0 + i, pkt(seq, ACK, data))
        seq += len(data)


def test_like_events_reach_the_fold_once_with_their_count():
    folds, seen = [], []
    table = toy_table(folds, seen.append)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"a"), msg(b"q", 3, b"c"), msg(b"q", 4, b"a"))
    assert folds == []                        # counted, not yet handed over
    table.finish()
    got = sorted((ev.function, ev.src_ip, n) for ev, n in folds)
    want = sorted({(ev.function, ev.src_ip) for ev in seen})
    assert [(f, ip) for f, ip, _ in got] == want
    assert sum(n for *_, n in got) == len(seen) == 4
    stand_in = folds[0][0]
    assert stand_in.packet == 0 and stand_in.kind is None and stand_in.detail == {}   # only the key


def test_a_full_batch_is_handed_over_and_counting_goes_on():
    folds, seen = [], []
    table = toy_table(folds, seen.append, limit=1)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"b"), msg(b"q", 3, b"b"), msg(b"q", 4, b"a"))
    table.finish()
    assert [n for _, n in folds] == [1, 2, 1]
    assert [ev.function for ev, _ in folds] == [seen[0].function, seen[1].function, seen[3].function]


def test_events_with_anomalies_are_folded_alone_and_at_once():
    folds, seen = [], []
    table = toy_table(folds, seen.append, only_without=("function",))
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"a"))
    assert [(ev, n) for ev, n in folds] == [(seen[0], 1), (seen[1], 1)]   # the events themselves


def test_detail_entries_in_the_key_and_absent_ones_stay_absent():
    folds, seen = [], []
    table = toy_table(folds, seen.append, fields=("protocol",), detail=("length", "nowhere"))
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"bb"), msg(b"q", 3, b"c"))
    table.finish()
    short, long = seen[0].detail["length"], seen[1].detail["length"]
    assert sorted((ev.detail["length"], ev.detail, n) for ev, n in folds) == [
        (short, {"length": short}, 2), (long, {"length": long}, 1)]


def test_fold_by_refuses_what_it_cannot_do():
    folds: list = []
    table = toy_table(folds)
    with pytest.raises(RuntimeError, match="already folded"):
        table.fold_by(("function",), (), (), lambda ev, n: None, 10)
    table_class = require_compiled()
    fresh = table_class((SIZED_TOY,), {}, lambda ev: None, lambda flow: None, Health())
    with pytest.raises(ValueError, match="'colour' is not a field of model.Event"):
        fresh.fold_by(("function", "colour"), (), (), lambda ev, n: None, 10)
    with pytest.raises(TypeError, match="fold_by"):
        fresh.fold_by(("function",), (), (), lambda ev, n: None, 0)
    with pytest.raises(TypeError, match="fold_by"):
        fresh.fold_by(("function",), ["detail must be a tuple"], (), lambda ev, n: None, 10)


def test_an_error_in_the_fold_comes_out_of_finish():
    def fold(ev, n):
        raise KeyError("aggregator bug")

    table_class = require_compiled()
    table = table_class((SIZED_TOY,), {}, lambda ev: None, lambda flow: None, Health())
    table.fold_by(("function",), (), (), fold, 10)
    toy_packets(table, msg(b"q", 1, b"a"))
    with pytest.raises(KeyError, match="aggregator bug"):
        table.finish()


def test_the_engine_folds_by_key_only_on_the_compiled_layer():
    require_compiled()

    class Counting:
        FOLD_KEY = Summary.FOLD_KEY

        def __init__(self):
            self.calls = self.events = 0

        def add_event(self, ev):
            self.add_events(ev, 1)

        def add_events(self, ev, n):
            self.calls += 1
            self.events += n

        def add_flow(self, flow):
            pass

    path = next(p for p in EXAMPLES if "normal" in p.name)
    compiled, python = Counting(), Counting()
    for reducer, config in ((compiled, EngineConfig()), (python, EngineConfig(compiled=False))):
        engine = Engine(config, reducer=reducer)
        engine.read_file(path)
        engine.finish()
    assert compiled.events == python.events == python.calls
    assert compiled.calls < python.calls / 2
