"""Which side of its connection an event belongs to.

A request is not always sent by the connection's client: an S7 PLC sends the "Download
block" jobs of a download that the engineering station started, on the station's
connection. Inventory, baseline, checks and reports all orient events by the connection
(who serves the protocol), through :func:`sides`, so they agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from otsec.model import Event
from otsec.policy.model import SERVICE_PORTS, protocol_name


@dataclass(frozen=True, slots=True)
class Sides:
    """The connection an event belongs to, client (initiator) first."""

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
    from_client, port, protocol = _orientation(ev.protocol, ev.src_port, ev.dst_port, ev.kind == "response")
    if from_client:
        return Sides(ev.src_ip, ev.src_mac, ev.dst_ip, ev.dst_mac, port, protocol, True)
    return Sides(ev.dst_ip, ev.dst_mac, ev.src_ip, ev.src_mac, port, protocol, False)


def sent_by_client(ev: Event) -> bool:
    """Did the connection's client send this event? (:func:`sides` without the rest.)"""
    return _client_sent(ev.protocol, ev.src_port, ev.dst_port, ev.kind == "response")


def _orientation(protocol: str, src_port: int, dst_port: int, response: bool) -> tuple[bool, int, str]:
    """(sent by the client?, server port, policy protocol name) for :func:`sides`."""
    if _client_sent(protocol, src_port, dst_port, response):
        return True, dst_port, protocol_name(protocol, dst_port)
    return False, src_port, protocol_name(protocol, src_port)


def _client_sent(protocol: str, src_port: int, dst_port: int, response: bool) -> bool:
    """The server is the side on the protocol's registered port; failing that, the lower
    port below 1024; failing that, the receiver of a request. Not memoised by ports: a
    cache keyed by port pairs would grow to the number of connections (17 MiB on the
    1M-packet benchmark)."""
    proto = _POLICY_NAMES.get(protocol)
    if proto is None:
        proto = _POLICY_NAMES[protocol] = protocol_name(protocol, 0)
    src_srv = SERVICE_PORTS.get(src_port) == proto
    dst_srv = SERVICE_PORTS.get(dst_port) == proto
    if src_srv == dst_srv:
        low = min(src_port, dst_port)
        if low < 1024 <= max(src_port, dst_port):
            return dst_port == low
        return not response
    return dst_srv


#: Event protocol -> policy protocol name (as many entries as decoders name protocols).
_POLICY_NAMES: dict[str, str] = {}
