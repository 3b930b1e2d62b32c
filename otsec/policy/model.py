"""The declared segmentation design: zones, assets, conduits and rules (IEC 62443).

Everything here is plain immutable data plus the lookups the detections need
(which zone and which asset an address belongs to, which conduit joins two zones,
which allow rule of a conduit covers a message). The YAML form is parsed and checked
in :mod:`otsec.policy.loader`; docs/policy.md documents every key.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from otsec.flow.services import TCP_SERVICES, UDP_SERVICES

#: Purdue levels a zone may declare (3.5 is the IT/OT DMZ).
LEVELS = (0, 1, 2, 3, 3.5, 4, 5)

#: Target security levels of IEC 62443-3-3.
SECURITY_LEVELS = (1, 2, 3, 4)

#: Asset roles; conduits and rules refer to assets by name or by one of these.
ROLES = (
    "plc", "rtu", "ied", "safety_controller", "hmi", "engineering_workstation",
    "historian", "scada_server", "opcua_server", "server", "jump_host", "workstation",
    "network_device", "firewall", "printer", "unknown",
)

CRITICALITIES = ("low", "medium", "high", "critical")

#: Industrial protocols the decoders produce events for.
OT_PROTOCOLS = ("modbus", "s7comm", "s7comm-plus", "opcua")

#: IT services a conduit may allow, identified by the flow layer's service name.
IT_PROTOCOLS = (
    "rdp", "smb", "telnet", "vnc", "ssh", "http", "https", "ftp", "tftp", "dns", "ntp",
    "snmp", "syslog", "ldap", "ldaps", "kerberos", "smtp", "dhcp", "mqtt", "winrm", "icmp",
    "tcp", "udp",  # any service over that transport (narrow it with ports)
)

#: Every name a conduit may allow: the above plus the flow layer's service names.
PROTOCOLS = tuple(dict.fromkeys(
    OT_PROTOCOLS + IT_PROTOCOLS + tuple(TCP_SERVICES.values()) + tuple(UDP_SERVICES.values())))

#: Names the flow layer or decoders may use for a protocol, folded to the policy name
#: (COTP carries S7comm; port-registry names for IT services).
PROTOCOL_ALIASES = {
    "cotp": "s7comm", "iso-tsap": "s7comm", "s7": "s7comm", "s7comm_plus": "s7comm-plus",
    "mbap": "modbus", "modbus-tcp": "modbus", "opc-ua": "opcua", "opcua-tcp": "opcua",
    "ms-wbt-server": "rdp", "microsoft-ds": "smb", "netbios-ssn": "smb", "cifs": "smb",
    "www": "http", "www-http": "http", "http-alt": "http", "rfb": "vnc", "domain": "dns",
    "secure-mqtt": "mqtt", "bootps": "dhcp", "bootpc": "dhcp", "winrm-https": "winrm",
    "https-alt": "https", "vnc-http": "http",
}

#: Fallback when the flow layer could not name the service: the server port's service.
SERVICE_PORTS = {
    502: "modbus", 102: "s7comm", 4840: "opcua", 3389: "rdp", 445: "smb", 139: "smb",
    23: "telnet", 5900: "vnc", 5901: "vnc", 22: "ssh", 80: "http", 8080: "http",
    443: "https", 21: "ftp", 69: "tftp", 53: "dns", 123: "ntp", 161: "snmp", 514: "syslog",
    389: "ldap", 636: "ldaps", 88: "kerberos", 25: "smtp", 67: "dhcp", 1883: "mqtt",
}

#: OPC UA MessageSecurityMode, weakest first.
OPCUA_MODES = ("None", "Sign", "SignAndEncrypt")

#: Target kinds a write_targets entry may name (see otsec.model.Target).
MODBUS_TARGET_KINDS = ("coil", "holding_register", "file_record")


def protocol_name(name: str | None, port: int = 0) -> str:
    """Fold a decoder/flow protocol or service name to the policy's protocol name."""
    name = (name or "").lower()
    name = PROTOCOL_ALIASES.get(name, name)
    if name in PROTOCOLS:
        return name
    return SERVICE_PORTS.get(port, name or "unknown")


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    level: float
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    vlans: tuple[int, ...] = ()
    sl_t: int | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    zone: str
    ip: str | None = None
    mac: str | None = None
    role: str = "unknown"
    criticality: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class WriteTarget:
    """One authorised write destination: a Modbus range, an S7 DB (optionally a byte
    range in it), an OPC UA node id or node id prefix."""

    kind: str                       # coil | holding_register | file_record | db | node | node_prefix
    start: int | None = None
    end: int | None = None          # inclusive
    db: int | None = None
    node: str | None = None

    def __str__(self) -> str:
        if self.kind in ("node", "node_prefix"):
            return f"{self.kind} {self.node}"
        if self.kind == "db":
            return f"DB{self.db}" + (f" bytes {self.start}-{self.end}" if self.start is not None else "")
        return f"{self.kind} {self.start}-{self.end}"

    def covers(self, t) -> bool:
        """Does this entry authorise writing the whole of :class:`otsec.model.Target` ``t``?"""
        if self.kind in MODBUS_TARGET_KINDS:
            return t.kind == self.kind and _within(t.start, t.count, self.start, self.end)
        if self.kind == "db":
            if t.db != self.db:
                return False
            return self.start is None or _within(t.start, t.count, self.start, self.end)
        if self.kind == "node":
            return t.kind == "node" and t.name == self.node
        if self.kind == "node_prefix":
            return t.kind == "node" and (t.name or "").startswith(self.node or "")
        return False


def _within(start, count, lo, hi) -> bool:
    if start is None:
        return False
    last = start + max((count or 1) - 1, 0)
    return lo <= start and last <= hi


@dataclass(frozen=True, slots=True)
class AllowRule:
    protocol: str
    ports: tuple[int, ...] = ()              # empty: any port
    operations: tuple[str, ...] = ()         # empty: any operation class
    sources: tuple[str, ...] = ()            # asset names or roles; empty: any
    destinations: tuple[str, ...] = ()
    write_targets: tuple[WriteTarget, ...] = ()  # empty: writes anywhere (if write allowed)
    opcua_security_mode: str | None = None   # minimum OPC UA MessageSecurityMode


@dataclass(frozen=True, slots=True)
class Conduit:
    name: str
    zones: tuple[str, str]
    initiator: str                            # a zone name, or "both"
    allow: tuple[AllowRule, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Suppression:
    """Drops findings that match every given field; stops applying after ``expires``."""

    rule: str                                 # a rule id, or a prefix ending in "*"
    reason: str
    src: str | None = None                    # asset name, role, IP or CIDR
    dst: str | None = None
    protocol: str | None = None
    expires: _dt.date | None = None
    line: int = 0


#: Operation classes that are unsafe for every protocol unless a protocol overrides it.
DEFAULT_UNSAFE_OP_CLASSES = ("write", "program", "control")

#: Functions unsafe whatever class a decoder gives them (address-space and method changes).
DEFAULT_UNSAFE_FUNCTIONS = {
    "opcua": ("Call", "AddNodes", "DeleteNodes", "AddReferences", "DeleteReferences"),
}


@dataclass(frozen=True, slots=True)
class UnsafeSpec:
    op_classes: tuple[str, ...] = DEFAULT_UNSAFE_OP_CLASSES
    functions: tuple[str, ...] = ()           # function names, case-insensitive, "Request" suffix ignored
    function_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    unsafe: dict[str, UnsafeSpec] = field(default_factory=dict)  # per protocol, defaults filled in
    program_roles: tuple[str, ...] = ("engineering_workstation",)
    control_roles: tuple[str, ...] = ("engineering_workstation",)
    write_roles: tuple[str, ...] = ()         # empty: any declared asset the conduit allows
    it_admin_protocols: tuple[str, ...] = ("rdp", "smb", "telnet", "vnc", "ssh", "http")
    it_admin_max_level: float = 2
    external_ot_max_level: float = 3.5
    external_allowed: tuple = ()              # networks OT hosts may reach outside every zone
    cleartext_deny: bool = False
    cleartext_protocols: tuple[str, ...] = ("modbus", "s7comm")
    cleartext_except_conduits: tuple[str, ...] = ()
    function_sweep_min: int = 5
    unit_id_sweep_min: int = 5
    suppressions: tuple[Suppression, ...] = ()

    def unsafe_spec(self, protocol: str) -> UnsafeSpec:
        spec = self.unsafe.get(protocol)
        if spec is None:
            return UnsafeSpec(functions=DEFAULT_UNSAFE_FUNCTIONS.get(protocol, ()))
        return spec


def normalise_function(name: str | None) -> str:
    """``WriteRequest``/``Write``/``write`` all compare equal."""
    n = (name or "").strip().lower().replace(" ", "")
    for suffix in ("request", "response"):
        if n.endswith(suffix) and len(n) > len(suffix):
            n = n[: -len(suffix)]
    return n


@dataclass(frozen=True, slots=True)
class Located:
    """Where an address sits in the design."""

    zone: Zone | None
    asset: Asset | None

    @property
    def zone_name(self) -> str | None:
        return self.zone.name if self.zone else None


class Policy:
    """A validated policy with the lookups detections need (cached: called per message)."""

    def __init__(self, zones: list[Zone], assets: list[Asset], conduits: list[Conduit],
                 rules: Rules, source: str = "", name: str = ""):
        self.name = name                  # the site, as reports title it
        self.zones = {z.name: z for z in zones}
        self.assets = {a.name: a for a in assets}
        self.conduits = {c.name: c for c in conduits}
        self.rules = rules
        self.source = source
        self._by_ip = {a.ip: a for a in assets if a.ip}
        # assets declared by MAC alone (DHCP hosts, VLAN-only zones) are recognised by it
        self._by_mac = {a.mac.lower(): a for a in assets if a.mac and not a.ip}
        nets = [(net, z) for z in zones for net in z.cidrs]
        nets.sort(key=lambda p: p[0].prefixlen, reverse=True)
        self._nets = nets
        self._conduit_by_pair: dict[frozenset, Conduit] = {}
        for c in conduits:
            self._conduit_by_pair.setdefault(frozenset(c.zones), c)
        self.locate = lru_cache(maxsize=65536)(self._locate)

    def _locate(self, ip: str, mac: str | None = None) -> Located:
        """Zone and asset of an endpoint: by declared IP, else by a MAC-only asset's MAC,
        else by the zone whose CIDRs hold the IP."""
        asset = self._by_ip.get(ip)
        if asset is None and mac is not None and self._by_mac:
            asset = self._by_mac.get(mac.lower())
        if asset is not None:
            return Located(self.zones[asset.zone], asset)
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return Located(None, None)
        for net, zone in self._nets:
            if addr.version == net.version and addr in net:
                return Located(zone, None)
        return Located(None, None)

    def conduit_between(self, zone_a: str, zone_b: str) -> Conduit | None:
        return self._conduit_by_pair.get(frozenset((zone_a, zone_b)))

    def matches_endpoint(self, selectors: tuple[str, ...], asset: Asset | None) -> bool:
        """Empty selectors match anything; otherwise an asset name or role must match."""
        if not selectors:
            return True
        if asset is None:
            return False
        return asset.name in selectors or asset.role in selectors

    def summary(self) -> str:
        rules = sum(len(c.allow) for c in self.conduits.values())
        return (f"{len(self.zones)} zones, {len(self.assets)} assets, {len(self.conduits)} "
                f"conduits ({rules} allow rules), {len(self.rules.suppressions)} suppressions")
