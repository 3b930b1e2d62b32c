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

A key is a tuple of names:

* an :class:`~otsec.model.Event` field, e.g. ``"src_ip"``;
* ``"detail.<entry>"``: that entry of the event's detail, None when absent;
* ``"by_client"``: whether the connection's client sent the event
  (:func:`otsec.analysis.sides.sent_by_client`), so that counts can be oriented by
  connection without the ports (which would make a key per connection).
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Callable, NamedTuple

from otsec.analysis.sides import sent_by_client, server_ports
from otsec.model import Event

BY_CLIENT = "by_client"
DETAIL = "detail."
_EVENT_FIELDS = frozenset(f.name for f in fields(Event))


class Tally(NamedTuple):
    """The keys an aggregator counts events by (see the module docstring)."""

    keys: tuple[tuple[str, ...], ...]
    #: Event fields that, when set (non-empty), send the event to ``add_apart`` as well
    apart: tuple[str, ...] = ()

    @property
    def server_ports(self) -> Callable[[str], frozenset[int]]:
        """What ``by_client`` is computed from: a protocol's registered server ports."""
        return server_ports

    def counters(self) -> tuple[dict, ...]:
        """Empty counts, one dict per key."""
        return tuple({} for _ in self.keys)

    def counter(self) -> Callable[[tuple[dict, ...], Event], bool]:
        """``count(counts, event)``: add the event to each key's count; True when it
        also has an ``apart`` field set."""
        key_of = [_key_function(names) for names in self.keys]
        apart = attrgetter(*self.apart) if self.apart else None
        several = len(self.apart) > 1

        def count(counts: tuple[dict, ...], ev: Event) -> bool:
            for into, key in zip(counts, key_of):
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


def _key_function(names: tuple[str, ...]) -> Callable[[Event], tuple]:
    """ev -> the key tuple of these names (attrgetter when they are all plain fields)."""
    for name in names:
        if name != BY_CLIENT and not name.startswith(DETAIL) and name not in _EVENT_FIELDS:
            raise ValueError(f"tally key: {name!r} is not a field of model.Event, "
                             f"'{BY_CLIENT}' or '{DETAIL}<entry>'")
    if all(name in _EVENT_FIELDS for name in names):
        get = attrgetter(*names)
        return get if len(names) > 1 else (lambda ev: (get(ev),))
    parts = [_value_function(name) for name in names]
    return lambda ev: tuple([part(ev) for part in parts])


def _value_function(name: str) -> Callable[[Event], object]:
    if name == BY_CLIENT:
        return sent_by_client
    if name.startswith(DETAIL):
        entry = name[len(DETAIL):]
        return lambda ev: ev.detail.get(entry)
    return attrgetter(name)
