"""The one protocol-agnostic event that every later stage consumes.

A decoder fills the protocol half of an :class:`Event` (what was asked or answered);
the flow layer fills the context half (when, which packet, who to whom). Policy,
baseline, detections, storage and reports read only this model, never decoder
internals, so a new protocol needs no change outside its decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What an operation does to the process, whatever the protocol. Policy rules and
#: the "unsafe operation" detection are written against these, not function codes.
OP_CLASSES = (
    "read",        # reads process values / memory
    "write",       # changes process values (registers, coils, DB bytes, OPC UA Write)
    "program",     # changes or extracts logic/configuration (block download/upload/delete)
    "control",     # changes the device's run state (PLC stop/start, restart, method call)
    "diagnostic",  # diagnostics, counters, alarms, clock, status lists
    "identify",    # reveals device identity (Modbus 43/14, S7 SZL, OPC UA endpoints)
    "session",     # connection/session/channel management
    "other",       # anything else, including unknown/user-defined functions
)

#: Message kinds. A request is paired with its response by the flow layer.
KINDS = ("request", "response", "notification")

#: Results of a response. Requests carry ``None``.
RESULTS = ("ok", "exception", "error")


@dataclass(slots=True)
class Target:
    """What an operation touches: an address range, a memory area, a block or a node.

    ``kind`` names the address space, e.g. ``holding_register``, ``coil``,
    ``discrete_input``, ``input_register``, ``file_record`` (Modbus); ``area``
    (S7 memory area with ``area`` = DB/M/I/Q/..., ``db`` for data blocks,
    ``start`` = byte offset, ``count`` = bytes), ``block`` (S7 block, ``name`` like
    ``DB1``/``OB1``), ``pi_service`` (``name`` like ``P_PROGRAM``), ``szl``;
    ``node`` (OPC UA node id in ``name``, e.g. ``ns=2;i=5``), ``object``/``variable``
    (S7comm-plus ids in ``name``).
    """

    kind: str
    start: int | None = None
    count: int | None = None
    area: str | None = None
    db: int | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@dataclass(slots=True)
class Event:
    """One decoded industrial protocol message (a request, a response or a notification)."""

    # --- protocol half, filled by the decoder -------------------------------------
    protocol: str                      # "modbus", "s7comm", "s7comm-plus", "cotp", "opcua"
    kind: str                          # one of KINDS
    function: str                      # human name, e.g. "Write Multiple Registers"
    op_class: str                      # one of OP_CLASSES
    function_code: int | None = None   # the protocol's numeric code where it has one
    targets: list[Target] = field(default_factory=list)
    result: str | None = None          # one of RESULTS for responses, None for requests
    status: str | None = None          # protocol status/exception/error text, e.g. "Illegal Data Address (2)"
    anomalies: list[str] = field(default_factory=list)  # named flags, e.g. "modbus.invalid_length"
    detail: dict[str, Any] = field(default_factory=dict)  # protocol-specific fields (JSON-safe values)
    identity: dict[str, str] | None = None  # identity of the *sender* this message reveals
    pair_key: Any = None               # request/response correlation key within one connection
    # --- context half, filled by the flow layer -----------------------------------
    ts: float = 0.0                    # capture time of the packet that completed the message
    packet: int = 0                    # 1-based packet number of that packet in its capture
    flow_id: str = ""                  # Community ID v1 of the connection
    src_ip: str = ""
    src_port: int = 0
    src_mac: str | None = None
    dst_ip: str = ""
    dst_port: int = 0
    dst_mac: str | None = None
    request_packet: int | None = None  # for a paired response: packet number of its request
    capture: str = ""                  # capture file (or interface) the packet came from

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the schema is documented in docs/events.md."""
        return {
            "ts": self.ts,
            "packet": self.packet,
            "flow_id": self.flow_id,
            "src": {"ip": self.src_ip, "port": self.src_port, "mac": self.src_mac},
            "dst": {"ip": self.dst_ip, "port": self.dst_port, "mac": self.dst_mac},
            "protocol": self.protocol,
            "kind": self.kind,
            "function_code": self.function_code,
            "function": self.function,
            "op_class": self.op_class,
            "targets": [t.to_dict() for t in self.targets],
            "result": self.result,
            "status": self.status,
            "anomalies": list(self.anomalies),
            "detail": self.detail,
            "identity": self.identity,
            "request_packet": self.request_packet,
            "capture": self.capture,
        }


@dataclass(slots=True)
class Flow:
    """One connection (TCP) or conversation (UDP/other IP), reported when it ends.

    Client/server are the initiator and responder when the handshake was seen
    (``initiator_known``); otherwise the side on the well-known/lower port is taken
    as the server. ``app`` is the decoded OT protocol when a decoder recognised the
    content, else the service the server port is registered for (``rdp``, ``telnet``,
    ``https``...), else ``unknown``.
    """

    flow_id: str
    transport: str                     # "tcp", "udp", "icmp", "ip-<n>"
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    client_mac: str | None = None
    server_mac: str | None = None
    initiator_known: bool = False
    app: str = "unknown"
    decoded: bool = False              # True when a decoder produced the events of this flow
    first_ts: float = 0.0
    last_ts: float = 0.0
    first_packet: int = 0
    last_packet: int = 0
    packets_c2s: int = 0
    packets_s2c: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    events: int = 0
    gaps: int = 0                      # capture gaps (missing TCP bytes) in either direction
    anomalies: list[str] = field(default_factory=list)  # flow-level decode problems
    capture: str = ""                  # capture file (or interface) in which the flow ended

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

