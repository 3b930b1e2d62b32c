"""Counting events by key, so that an aggregator need not see every event.

An aggregator such as the analyze summary reads a few values of each event and adds one
to some counters. It declares what it reads as a :class:`Tally`: a few keys, each a tuple
of event values, and keeps one dict per key (key tuple -> number of events). Its tables
(hosts, who talks to whom, functions) are derived from those counts when asked for.

Counted in Python, each event passes through :meth:`Tally.count`. The compiled flow layer
counts them itself (``FlowTable.tally_by``): one dict lookup per key and a C counter, no
Python call, and the counts are added to the aggregator's dicts in batches and at the end.
Only the events that carry something a count cannot hold (an ``apart`` field set: a
device identity, anomaly flags) are also handed to the aggregator's ``add_apart``.
The two count the same keys (tests/test_tally.py compares them on every corpus capture).

A key is a tuple of names (and may count only the events whose field has a given value,
``when``):

* an :class:`~otsec.model.Event` field, e.g. ``"src_ip"``;
* ``"detail.<entry>"``: that entry of the event's detail, None when absent;
* ``"by_client"``: whether the connection's client sent the event
  (:func:`otsec.analysis.sides.sent_by_client`), so that counts can be oriented by
  connection without the ports (which would make a key per connection).

Flows are counted the same way (``record=Flow``), by their fields only.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, NamedTuple

from otsec.analysis.sides import sent_by_client, server_ports
from otsec.model import Event

BY_CLIENT = "by_client"
DETAIL = "detail."


class Tally(NamedTuple):
    """The keys an aggregator counts events by (see the module docstring)."""

    keys: tuple[tuple[str, ...], ...]
    #: Event fields that, when set (non-empty), send the event to ``add_apart`` as well
    apart: tuple[str, ...] = ()
    #: per key, (field, value): the key counts only the events whose field equals the
    #: value; None (or no entry): every event
    when: tuple[tuple[str, object] | None, ...] = ()
    #: what is counted: model.Event, or model.Flow (keys of its fields only)
    record: type = Event

    @property
    def server_ports(self) -> Callable[[str], frozenset[int]]:
        """What ``by_client`` is computed from: a protocol's registered server ports."""
        return server_ports

    def counters(self) -> tuple[dict, ...]:
        """Empty counts, one dict per key."""
        return tuple({} for _ in self.keys)

    def counter(self) -> Callable[[tuple[dict, ...], Event], bool]:
        """``count(counts, record)``: add the record to each key's count; True when it
        also has an ``apart`` field set. The function is written out for these keys (as
        dataclasses writes ``__init__``): a generic loop over key functions cost half as
        much again per event."""
        names = frozenset(f.name for f in fields(self.record))
        conditions = (*self.when, *[None] * (len(self.keys) - len(self.when)))
        namespace: dict = {"by_client": sent_by_client}
        lines = ["def count(counts, ev):", "    " + "".join(f"c{i}, " for i in range(len(self.keys)))
                 + "= counts"]
        for i, (key, when) in enumerate(zip(self.keys, conditions)):
            indent = "    "
            if when is not None:
                field, namespace[f"w{i}"] = when
                _check_field(field, names, self.record, "condition")
                lines.append(f"    if ev.{field} == w{i}:")
                indent = "        "
            lines.append(f"{indent}k = ({''.join(_value_source(n, names, self.record) + ', ' for n in key)})")
            lines.append(f"{indent}c{i}[k] = c{i}.get(k, 0) + 1")
        for field in self.apart:
            _check_field(field, names, self.record, "apart field")
        lines.append(f"    return {' or '.join(f'bool(ev.{f})' for f in self.apart) or 'False'}")
        exec("\n".join(lines), namespace)   # names checked above: fields, or a detail entry's repr
        return namespace["count"]


def add_counts(into: tuple[dict, ...], other: tuple[dict, ...]) -> None:
    """Add another aggregator's counts (a --jobs shard's) to these."""
    for mine, theirs in zip(into, other):
        for key, n in theirs.items():
            mine[key] = mine.get(key, 0) + n


def _check_field(name: str, fields_of: frozenset[str], record: type, what: str) -> None:
    if name not in fields_of:
        raise ValueError(f"tally {what}: {name!r} is not a field of model.{record.__name__}")


def _value_source(name: str, fields_of: frozenset[str], record: type) -> str:
    """The expression of a key's value for the written-out counter (see Tally.counter)."""
    if name in fields_of:
        return f"ev.{name}"
    if record is Event and name == BY_CLIENT:
        return "by_client(ev)"
    if record is Event and name.startswith(DETAIL):
        return f"ev.detail.get({name[len(DETAIL):]!r})"
    also = f", '{BY_CLIENT}' or '{DETAIL}<entry>'" if record is Event else ""
    raise ValueError(f"tally key: {name!r} is not a field of model.{record.__name__}{also}")
