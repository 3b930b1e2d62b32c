"""Events and flows counted by key (otsec.analysis.tally): the compiled flow layer's
counting (FlowTable.tally_by) equals Python's, and the analyze summary built on it equals
the one the Python engine builds event by event.

The compiled table counts each event (flow) under the summary's ``TALLY`` (``FLOW_TALLY``)
keys itself and hands the summary only events with an ``apart`` field set; the Python
engine calls ``add_event`` and ``add_flow`` for every one. Both must give the same counts
(also when the slots run out and are handed over often, and with ``--jobs``), the same
apart events in the same order, and so the same report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import otsec.engine as engine_module
from otsec.analysis.inventory import Summary
from otsec.analysis.sides import sent_by_client
from otsec.analysis.tally import Tally
from otsec.engine import Engine, EngineConfig, reduce
from otsec.model import Flow
from otsec.flow.session import Health
from otsec.flow.table import ACK, SYN, TCP
from tests.corpus import captures
from tests.flow_impls import require_compiled
from tests.toy_protocol import TOY, msg

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(REPO.glob("pcaps/*.pcap*"))


def report(summary: Summary, stats: dict) -> str:
    return json.dumps(summary.report(stats, ["x"]), sort_keys=True, default=str)


def state(summary: Summary) -> tuple:
    """Everything the summary holds, in order where order is kept."""
    known = {ip: dataclasses.asdict(h) for ip, h in summary.known.items()}
    return ([list(c.items()) for c in summary.counts], [list(c.items()) for c in summary.flow_counts],
            known, list(summary.anomalies.items()))


# --- the compiled engine's summary equals the one counted event by event --------------------

SOURCES = [pytest.param(p, id=f"pcaps/{p.name}") for p in EXAMPLES] + [*captures()]


@pytest.mark.parametrize("path", SOURCES)
def test_compiled_counts_equal_python_counts(path, monkeypatch):
    require_compiled()
    python = reduce([path], Summary, EngineConfig(compiled=False))
    compiled = reduce([path], Summary, EngineConfig())
    assert state(compiled[0]) == state(python[0])
    assert report(*compiled) == report(*python)
    monkeypatch.setattr(engine_module, "TALLY_SLOTS", 2)   # slots handed over every 2 keys
    assert state(reduce([path], Summary, EngineConfig())[0]) == state(python[0])


def test_counts_on_the_benchmark_also_with_jobs(bench_200k):
    require_compiled()
    python = reduce([bench_200k], Summary, EngineConfig(compiled=False))
    compiled = reduce([bench_200k], Summary, EngineConfig())
    assert compiled[0].events == python[0].events > 50_000
    assert state(compiled[0]) == state(python[0])
    assert report(*compiled) == report(*python)
    # shards differ from one process where the flow table overflows (each has its own cap)
    sharded = reduce([bench_200k], Summary, EngineConfig(), jobs=2)
    assert report(*sharded) == report(*reduce([bench_200k], Summary, EngineConfig(compiled=False), jobs=2))


# --- the Python side of the contract ---------------------------------------------------------

def test_a_key_names_event_fields_detail_entries_or_by_client():
    with pytest.raises(ValueError, match="'colour' is not a field of model.Event"):
        Tally(keys=(("function", "colour"),)).counter()
    with pytest.raises(ValueError, match="'by_client' is not a field of model.Flow$"):
        Tally(keys=(("app", "by_client"),), record=Flow).counter()
    with pytest.raises(ValueError, match="condition: 'colour' is not a field of model.Event"):
        Tally(keys=(("function",),), when=(("colour", 1),)).counter()
    from otsec.model import Event
    ev = Event("modbus", "request", "Read Coils", "read", src_ip="a", src_port=40000, dst_port=502,
               detail={"unit_id": 1}, anomalies=["x"])
    counts = Tally(keys=(("function",), ("detail.unit_id", "detail.nowhere", "by_client"))).counters()
    apart = Tally(keys=(("function",), ("detail.unit_id", "detail.nowhere", "by_client")),
                  apart=("identity", "anomalies")).counter()(counts, ev)
    assert counts == ({("Read Coils",): 1}, {(1, None, True): 1}) and apart is True
    only_responses = Tally(keys=(("function",), ("kind",)), when=(None, ("kind", "response")))
    counts = only_responses.counters()
    assert only_responses.counter()(counts, ev) is False and counts == ({("Read Coils",): 1}, {})


# --- the table's side of the contract --------------------------------------------------------

CLIENT, SERVER = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"


def _sized_decode(message, from_client, state):
    """The toy protocol's events, with the message's length in their detail."""
    events = TOY.decode(message, from_client, state)
    for ev in events:
        ev.detail["length"] = len(message)
    return events


SIZED_TOY = dataclasses.replace(TOY, decode=_sized_decode)


class Recorder:
    """What the table hands over: apart events and whole events."""

    def __init__(self, tally: Tally):
        self.counts = tally.counters()
        self.apart: list = []
        self.whole: list = []


def toy_table(tally: Tally, seen: list, limit: int = 100, decoder=SIZED_TOY, flows: list | None = None):
    table_class = require_compiled()
    table = table_class((decoder,), {}, seen.append, flows.append if flows is not None else None, Health())
    rec = Recorder(tally)
    table.tally_by(tally, rec.counts, rec.apart.append, rec.whole.append, limit)
    return table, rec


def toy_packets(table, *payloads: bytes, client_port: int = 40000, server_port: int = TOY.ports[0],
                answers: tuple[bytes, ...] = ()) -> None:
    """A client's SYN, then each payload as one client segment, then the server's answers."""
    def pkt(src, dst, sport, dport, seq, flags, data=b""):
        return (None, None, src, dst, TCP, sport, dport, flags, seq, 0, data)

    table.packet(1, 1.0, pkt(CLIENT, SERVER, client_port, server_port, 100, SYN))
    seq, n = 101, 2
    for data in payloads:
        table.packet(n, float(n), pkt(CLIENT, SERVER, client_port, server_port, seq, ACK, data))
        seq, n = seq + len(data), n + 1
    seq = 5000
    for data in answers:
        table.packet(n, float(n), pkt(SERVER, CLIENT, server_port, client_port, seq, ACK, data))
        seq, n = seq + len(data), n + 1


def python_counts(tally: Tally, events: list) -> tuple[dict, ...]:
    counts = tally.counters()
    count = tally.counter()
    for ev in events:
        count(counts, ev)
    return counts


KEYS = Tally(keys=(("function", "src_ip"), ("kind", "detail.length", "detail.nowhere")))


def test_events_are_counted_by_each_key_and_added_at_finish():
    seen: list = []
    table, rec = toy_table(KEYS, seen)
    toy_packets(table, msg(b"q", 1, b"aa"), msg(b"q", 2, b"aa"), msg(b"q", 3, b"cc"), msg(b"q", 4, b"aa"))
    toy_packets(table, msg(b"q", 5, b"aa"), client_port=40001)   # a second connection
    assert rec.counts == ({}, {})                 # counted, not yet added
    table.finish()
    # each message's function is its own, equal, str object: keys are compared by value
    assert seen[0].function == seen[1].function and seen[0].function is not seen[1].function
    assert len(seen) == 5 and rec.counts == python_counts(KEYS, seen)
    assert rec.counts[0] == {("aa", "10.0.0.1"): 4, ("cc", "10.0.0.1"): 1}
    assert rec.counts[1] == {("request", 7, None): 5}
    assert rec.apart == rec.whole == []


def test_a_key_with_a_condition_counts_only_the_events_that_meet_it():
    seen: list = []
    tally = Tally(keys=(("function",), ("function", "kind")), when=(("kind", "response"), None))
    table, rec = toy_table(tally, seen)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"b"), answers=(msg(b"r", 1, b"a"),))
    table.finish()
    assert rec.counts == python_counts(tally, seen) == ({("a",): 1}, {
        ("a", "request"): 1, ("b", "request"): 1, ("a", "response"): 1})


def test_flows_are_counted_by_their_fields():
    seen: list = []
    flows: list = []
    tally = Tally(keys=(("app",), ("client_ip", "server_port", "packets_c2s")), record=Flow)
    table, rec = toy_table(tally, seen, flows=flows)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"b"))
    toy_packets(table, msg(b"q", 3, b"c"), client_port=40001)
    table.finish()
    assert len(flows) == 2 and rec.counts == python_counts(tally, flows)
    assert rec.counts[0] == {("toy",): 2} and rec.apart == rec.whole == []


def test_full_slots_are_added_and_counting_goes_on():
    seen: list = []
    table, rec = toy_table(KEYS, seen, limit=1)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2, b"b"), msg(b"q", 3, b"b"), msg(b"q", 4, b"a"))
    table.finish()
    assert rec.counts == python_counts(KEYS, seen)
    assert list(rec.counts[0]) == [("a", "10.0.0.1"), ("b", "10.0.0.1")]   # first seen first


def test_events_with_an_apart_field_set_are_counted_and_handed_over_in_order():
    seen: list = []
    tally = Tally(keys=(("function",),), apart=("function",))
    table, rec = toy_table(tally, seen)
    toy_packets(table, msg(b"q", 1, b"a"), msg(b"q", 2), msg(b"q", 3, b"b"))
    table.finish()
    assert rec.apart == [seen[0], seen[2]] and rec.counts == python_counts(tally, seen)


@pytest.mark.parametrize("client_port, server_port", [
    (40000, 9999), (9999, 40000), (40000, 502), (502, 40000), (80, 40000), (40000, 80),
    (1000, 2000), (2000, 1000), (40000, 40001)])
def test_by_client_is_sides_sent_by_client(client_port, server_port):
    """The compiled twin of sides._client_sent on every branch: registered port on either
    side, a port below 1024 against one above, and neither (requests against responses)."""
    seen: list = []
    for protocol in ("toy", "modbus"):
        decoder = dataclasses.replace(SIZED_TOY, decode=_as(protocol))
        tally = Tally(keys=(("kind", "by_client"),))
        table, rec = toy_table(tally, seen, decoder=decoder)
        toy_packets(table, msg(b"q", 1, b"a"), client_port=client_port, server_port=server_port,
                    answers=(msg(b"r", 1, b"a"), msg(b"q", 2, b"b")))
        table.finish()
        events = seen[-3:]
        assert len(events) == 3
        assert rec.counts == python_counts(tally, events)
        assert sorted(rec.counts[0]) == sorted({(ev.kind, sent_by_client(ev)) for ev in events})


def _as(protocol: str):
    def decode(message, from_client, state):
        events = _sized_decode(message, from_client, state)
        for ev in events:
            ev.protocol = protocol
        return events
    return decode


def test_tally_by_refuses_what_it_cannot_do():
    seen: list = []
    table, rec = toy_table(KEYS, seen)
    with pytest.raises(RuntimeError, match="events are already counted"):
        table.tally_by(KEYS, KEYS.counters(), print, print, 10)
    flow_keys = Tally(keys=(("app",),), record=Flow)
    table.tally_by(flow_keys, flow_keys.counters(), print, print, 10)   # flows: a tally of their own
    with pytest.raises(RuntimeError, match="flows are already counted"):
        table.tally_by(flow_keys, flow_keys.counters(), print, print, 10)
    table_class = require_compiled()

    def fresh():
        return table_class((SIZED_TOY,), {}, None, lambda flow: None, Health())
    with pytest.raises(ValueError, match="'colour' is not a field of model.Event"):
        fresh().tally_by(Tally(keys=(("function", "colour"),)), ({},), print, print, 10)
    with pytest.raises(ValueError, match="'colour' is not a field of model.Event"):
        fresh().tally_by(Tally(keys=(("function",),), apart=("colour",)), ({},), print, print, 10)
    for limit in (0, 2**24 + 1):
        with pytest.raises(TypeError, match="tally_by"):
            fresh().tally_by(KEYS, KEYS.counters(), print, print, limit)
    with pytest.raises(ValueError, match="one counts dict per key"):
        fresh().tally_by(KEYS, ({},), print, print, 10)
    with pytest.raises(TypeError, match="counts must be dicts"):
        fresh().tally_by(KEYS, ({}, []), print, print, 10)
    with pytest.raises(ValueError, match="'by_client' is not a field of model.Flow"):
        fresh().tally_by(Tally(keys=(("by_client",),), record=Flow), ({},), print, print, 10)
    with pytest.raises(ValueError, match="'colour' is not a field of model.Event"):
        fresh().tally_by(Tally(keys=(("kind",),), when=(("colour", 1),)), ({},), print, print, 10)
    with pytest.raises(TypeError, match="a condition is"):
        fresh().tally_by(Tally(keys=(("kind",),), when=("kind",)), ({},), print, print, 10)
    from otsec.model import Target
    with pytest.raises(ValueError, match="counts model.Event or model.Flow"):
        fresh().tally_by(Tally(keys=(("kind",),), record=Target), ({},), print, print, 10)


def test_an_error_in_add_apart_comes_out_of_the_packet_that_caused_it():
    def add_apart(ev):
        raise KeyError("aggregator bug")

    table_class = require_compiled()
    table = table_class((SIZED_TOY,), {}, None, lambda flow: None, Health())
    table.tally_by(Tally(keys=(("function",),), apart=("function",)), ({},), add_apart, print, 10)
    with pytest.raises(KeyError, match="aggregator bug"):
        toy_packets(table, msg(b"q", 1, b"a"))


def test_the_engine_counts_by_key_only_on_the_compiled_layer():
    require_compiled()

    class Counting:
        TALLY = Summary.TALLY

        def __init__(self):
            self.counts = self.TALLY.counters()
            self.calls = self.apart_calls = self.flows = 0

        def add_event(self, ev):
            self.calls += 1
            if self.TALLY.counter()(self.counts, ev):
                self.add_apart(ev)

        def add_apart(self, ev):
            self.apart_calls += 1

        def add_flow(self, flow):
            self.flows += 1   # no FLOW_TALLY: every flow, also on the compiled layer

    path = next(p for p in EXAMPLES if "incident" in p.name)
    compiled, python = Counting(), Counting()
    for reducer, config in ((compiled, EngineConfig()), (python, EngineConfig(compiled=False))):
        engine = Engine(config, reducer=reducer)
        engine.read_file(path)
        engine.finish()
    assert compiled.counts == python.counts and compiled.apart_calls == python.apart_calls > 0
    assert compiled.calls == 0 and python.calls == sum(python.counts[1].values())
    assert compiled.flows == python.flows > 0
