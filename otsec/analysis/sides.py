"""Which side of its connection an event belongs to.

A request is not always sent by the connection's client: an S7 PLC sends the "Download
block" jobs of a download that the engineering station started, on the station's
connection. Inventory, baseline, checks and reports all orient events by the connection
(who serves the protocol), through :func:`sides`, so they agree with each other.
"""

from __future__ import annotations

from typing import NamedTuple

from otsec.model import Event
from otsec.policy.model import PROTOCOLS, SERVICE_PORTS, protocol_name


class Sides(NamedTuple):
    """The connection an event belongs to, client (initiator) first (a named tuple: one
    is made per event checked, and it is three times cheaper than a frozen dataclass)."""

    client_ip: str
    client_mac: str | None
    server_ip: str
    server_mac: str | None
    port: int                    # the server's port
    protocol: str                # policy protocol name
    from_client: bool


def sides(ev: Event) -> Sides:
    """Orient an event by its connection, not by who asked: an S7 PLC sends the
    "Download block" jobs of a download the engineering station started, and such an
    operation belongs to the station's connection. The server is the side on the
    protocol's registered port; failing that, the lower port below 1024; failing that,
    the receiver of a request."""
    proto, ports, named = _KNOWN.get(ev.protocol) or _know(ev.protocol)
    src_port, dst_port = ev.src_port, ev.dst_port
    # built as a plain tuple of the class: a NamedTuple's own __new__ is a Python function
    if _client_sent(ports, src_port, dst_port, ev.kind):
        return _tuple_new(Sides, (ev.src_ip, ev.src_mac, ev.dst_ip, ev.dst_mac, dst_port,
                                  proto if named else SERVICE_PORTS.get(dst_port, proto), True))
    return _tuple_new(Sides, (ev.dst_ip, ev.dst_mac, ev.src_ip, ev.src_mac, src_port,
                              proto if named else SERVICE_PORTS.get(src_port, proto), False))


def sent_by_client(ev: Event) -> bool:
    """Did the connection's client send this event? (:func:`sides` without the rest.)"""
    return _client_sent((_KNOWN.get(ev.protocol) or _know(ev.protocol))[1], ev.src_port, ev.dst_port, ev.kind)


def server_ports(protocol: str) -> frozenset[int]:
    """The registered server ports of a decoder's protocol (what orienting compares)."""
    return (_KNOWN.get(protocol) or _know(protocol))[1]


def _client_sent(ports: frozenset[int], src_port: int, dst_port: int, kind: str) -> bool:
    """The server is the side on the protocol's registered port (one of ``ports``); failing
    that, the lower port below 1024; failing that, the receiver of a request. Not memoised
    by ports: a cache keyed by port pairs would grow to the number of connections (17 MiB on
    the 1M-packet benchmark)."""
    src_srv = src_port in ports
    if src_srv is not (dst_port in ports):
        return not src_srv
    low = min(src_port, dst_port)
    if low < 1024 <= max(src_port, dst_port):
        return dst_port == low
    return kind != "response"


def _know(protocol: str) -> tuple[str, frozenset[int], bool]:
    """What orienting needs of a decoder's protocol name, memoised (as many entries as
    decoders name protocols): its policy name (``protocol_name(protocol)``), the registered
    ports of that name, and whether the policy names it (else the port names the service:
    ``protocol_name(protocol, port)``)."""
    proto = protocol_name(protocol, 0)
    known = _KNOWN[protocol] = (proto, frozenset(p for p, name in SERVICE_PORTS.items() if name == proto),
                                proto in PROTOCOLS)
    return known


_KNOWN: dict[str, tuple[str, frozenset[int], bool]] = {}
_tuple_new = tuple.__new__
