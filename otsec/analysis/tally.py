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
from operator import attrgetter
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
        also has an ``apart`` field set."""
        names = frozenset(f.name for f in fields(self.record))
        key_of = [_key_function(key, names, self.record) for key in self.keys]
        when = [_condition(c, names, self.record)
                for c in (*self.when, *[None] * (len(self.keys) - len(self.when)))]
        apart = attrgetter(*self.apart) if self.apart else None
        several = len(self.apart) > 1

        def count(counts: tuple[dict, ...], ev) -> bool:
            for into, key, applies in zip(counts, key_of, when):
                if applies is None or applies(ev):
                    k = key(ev)
                    into[k] = into.get(k, 0) + 1
            if apart is None:
                return False
            return any(apart(ev)) if several else bool(apart(ev))
        return count


def add_counts(into: tuple[dict, ...], other: tuple[dict, ...]) -> None:
    """Add another aggregator's counts (a --jobs shard's) to these."""
    for mine, theirs in zip(into, other):
        for key, n in theirs.items():
            mine[key] = mine.get(key, 0) + n


def _key_function(names: tuple[str, ...], fields_of: frozenset[str], record: type) -> Callable:
    """record -> the key tuple of these names (attrgetter when they are all plain fields)."""
    for name in names:
        if name not in fields_of and (record is not Event or name != BY_CLIENT and not name.startswith(DETAIL)):
            also = f", '{BY_CLIENT}' or '{DETAIL}<entry>'" if record is Event else ""
            raise ValueError(f"tally key: {name!r} is not a field of model.{record.__name__}{also}")
    if all(name in fields_of for name in names):
        get = attrgetter(*names)
        return get if len(names) > 1 else (lambda ev: (get(ev),))
    parts = [_value_function(name) for name in names]
    return lambda ev: tuple([part(ev) for part in parts])


def _condition(when: tuple[str, object] | None, fields_of: frozenset[str], record: type) -> Callable | None:
    if when is None:
        return None
    name, value = when
    if name not in fields_of:
        raise ValueError(f"tally condition: {name!r} is not a field of model.{record.__name__}")
    get = attrgetter(name)
    return lambda ev: get(ev) == value


def _value_function(name: str) -> Callable[[Event], object]:
    if name == BY_CLIENT:
        return sent_by_client
    if name.startswith(DETAIL):
        entry = name[len(DETAIL):]
        return lambda ev: ev.detail.get(entry)
    return attrgetter(name)
