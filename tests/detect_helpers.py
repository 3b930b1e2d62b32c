"""Hand-built events and flows for the detection tests (addresses of docs/example-plant.md)."""

from __future__ import annotations

from pathlib import Path

from otsec.model import Event, Flow, Target
from otsec.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = ROOT / "policies" / "example-plant.yaml"

IP = {
    "corp-pc": "10.10.0.50", "jump-host": "10.20.0.10", "historian": "10.30.0.20",
    "eng-ws": "10.30.0.30", "hmi-1": "10.40.0.10", "plc-modbus": "10.50.0.20",
    "plc-s7": "10.50.0.30", "opcua-server": "10.50.0.40",
    "rogue": "10.40.0.99", "internet": "203.0.113.5",
}

PORT = {"modbus": 502, "s7comm": 102, "cotp": 102, "opcua": 4840}


def example_policy():
    return load_policy(EXAMPLE_POLICY)


def ev(src: str, dst: str, protocol: str, function: str, op_class: str, *, kind: str = "request",
       fc: int | None = None, targets=(), detail=None, anomalies=(), result=None, ts: float = 1.0,
       packet: int = 1, identity=None, src_mac=None, port: int | None = None) -> Event:
    """An event from host ``src`` to ``dst`` (names of IP or literal addresses). Requests
    go to the protocol's port; responses come from it."""
    srv_port = port or PORT[protocol]
    sport, dport = (40000, srv_port) if kind == "request" else (srv_port, 40000)
    return Event(protocol=protocol, kind=kind, function=function, op_class=op_class, function_code=fc,
                 targets=list(targets), result=result, anomalies=list(anomalies), detail=dict(detail or {}),
                 identity=identity, ts=ts, packet=packet, flow_id="f", src_ip=IP.get(src, src),
                 src_port=sport, src_mac=src_mac, dst_ip=IP.get(dst, dst), dst_port=dport)


def fl(client: str, server: str, port: int, app: str, *, transport: str = "tcp", events: int = 0,
       packets_s2c: int = 3, anomalies=(), first_ts: float = 1.0, last_ts: float = 2.0,
       first_packet: int = 1, last_packet: int = 9) -> Flow:
    return Flow(flow_id="f", transport=transport, client_ip=IP.get(client, client), client_port=50000,
                server_ip=IP.get(server, server), server_port=port, initiator_known=True, app=app,
                decoded=events > 0, first_ts=first_ts, last_ts=last_ts, first_packet=first_packet,
                last_packet=last_packet, packets_c2s=3, packets_s2c=packets_s2c, events=events,
                anomalies=list(anomalies))


def hr(start: int, count: int) -> Target:
    return Target("holding_register", start=start, count=count)


def found(findings) -> set[tuple[str, str | None, str | None]]:
    """(rule, source label, destination label) of every active finding."""
    return {(f.rule_id, f.src.label, f.dst.label if f.dst else None) for f in findings if f.suppressed is None}
