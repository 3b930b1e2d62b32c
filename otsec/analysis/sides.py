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
    if _client_sent(ev.protocol, ev.src_port, ev.dst_port, ev.kind == "response"):
        port = ev.dst_port
        protocol = _protocol_at(ev.protocol, port)
        return Sides(ev.src_ip, ev.src_mac, ev.dst_ip, ev.dst_mac, port, protocol, True)
    port = ev.src_port
    return Sides(ev.dst_ip, ev.dst_mac, ev.src_ip, ev.src_mac, port, _protocol_at(ev.protocol, port), False)


def sent_by_client(ev: Event) -> bool:
    """Did the connection's client send this event? (:func:`sides` without the rest.)"""
    return _client_sent(ev.protocol, ev.src_port, ev.dst_port, ev.kind == "response")


def _client_sent(protocol: str, src_port: int, dst_port: int, response: bool) -> bool:
    """The server is the side on the protocol's registered port; failing that, the lower
    port below 1024; failing that, the receiver of a request. Not memoised by ports: a
    cache keyed by port pairs would grow to the number of connections (17 MiB on the
    1M-packet benchmark)."""
    proto = _POLICY_NAMES.get(protocol) or _policy_name(protocol)
    src_srv = SERVICE_PORTS.get(src_port) == proto
    dst_srv = SERVICE_PORTS.get(dst_port) == proto
    if src_srv == dst_srv:
        low = min(src_port, dst_port)
        if low < 1024 <= max(src_port, dst_port):
            return dst_port == low
        return not response
    return dst_srv


def _protocol_at(protocol: str, port: int) -> str:
    """``protocol_name(protocol, port)``: the port matters only for a protocol the policy
    does not name."""
    proto = _policy_name(protocol)
    return proto if proto in PROTOCOLS else SERVICE_PORTS.get(port, proto)


def _policy_name(protocol: str) -> str:
    """``protocol_name(protocol)``, memoised (as many entries as decoders name protocols)."""
    proto = _POLICY_NAMES.get(protocol)
    if proto is None:
        proto = _POLICY_NAMES[protocol] = protocol_name(protocol, 0)
    return proto


_POLICY_NAMES: dict[str, str] = {}
