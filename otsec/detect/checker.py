"""Judge a stream of events and flows against a policy (and optionally a baseline).

The :class:`Checker` is fed the engine's callbacks one event/flow at a time and keeps
only aggregated findings and small bounded per-pair counters, so it runs on captures
of any size and, unchanged, behind the live sensor.

Which input each detection reads:

    request events  -> conduit (incl. operation class), unsafe operation, cleartext,
                       new communication, new device
    any OPC UA event-> insecure OPC UA security mode
    any event       -> decoder anomalies, unpaired responses, sweeps, identities
    flows           -> conduit / new communication for conversations with no decoded
                       events (RDP, HTTPS, Telnet...), IT admin protocols, external
                       connections, new device

"New communication" is the residual finding: it is raised only for traffic that no
other rule reported, so an incident is reported once for its cause, not again as
"never seen before".
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from otsec.analysis.sides import Sides, sides
from otsec.detect.baseline import Baseline, event_key, flow_key
from otsec.detect.findings import Aggregator, Endpoint, Finding, apply_suppressions
from otsec.model import Event, Flow, Target
from otsec.policy.model import (
    OPCUA_MODES, AllowRule, Conduit, Located, Policy, normalise_function, protocol_name,
)

#: Per-pair sweep trackers kept at most (pairs beyond this are not tracked).
MAX_SWEEP_PAIRS = 50_000

#: Entries per memo (endpoints, conduit verdicts); a full memo is emptied and refilled.
MAX_MEMO = 65_536

#: Rule id per unsafe operation class; function-listed operations of another class use UNSAFE-004.
UNSAFE_RULE = {"write": "OTSEC-UNSAFE-001", "program": "OTSEC-UNSAFE-002", "control": "OTSEC-UNSAFE-003"}

#: OPC UA modes as observed by the decoder -> the strongest mode they may be.
#: A mode the table does not know (``Invalid``, an undefined number) offers no security.
OPCUA_MODE_CEILING = {"None": 0, "NoneOrSign": 1, "Sign": 1, "SignAndEncrypt": 2}

#: Carrier protocols whose session messages open connections for several policy protocols:
#: COTP (ISO-on-TCP) connects both S7comm and S7comm-plus, so a rule for either covers it.
CARRIED = {"cotp": ("s7comm", "s7comm-plus")}

UNPAIRED_SUFFIX = ".unpaired_response"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the conduit model says about one communication."""

    rule_id: str | None                 # a CONDUIT-* id when violated
    reason: str = ""
    conduit: Conduit | None = None
    rules: tuple[AllowRule, ...] = ()   # allow rules that cover it (when not violated)
    cross_zone: bool = False


#: The verdict for a pair that is not judged by conduits (same zone, or outside every zone).
NOT_JUDGED = Verdict(None)


def _fmt_zone(loc: Located) -> str:
    z = loc.zone
    level = f"{z.level:g}" if z else "?"
    return f"{z.name} (level {level})" if z else "outside every zone"


def _routable_external(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (a.is_multicast or a.is_unspecified or a.is_link_local or a.is_loopback
                or (a.version == 4 and a == ipaddress.IPv4Address("255.255.255.255")))


class Checker:
    """Streaming detections; call :meth:`on_event`/:meth:`on_flow`, then :meth:`finish`."""

    def __init__(self, policy: Policy, baseline: Baseline | None = None,
                 aggregator: Aggregator | None = None):
        self.policy = policy
        self.rules = policy.rules
        self.baseline = baseline
        self.agg = aggregator if aggregator is not None else Aggregator()
        self.capture: str | None = None   # capture file of the item being checked (evidence)
        self._fc_sweeps: dict[tuple, dict] = {}
        self._unit_sweeps: dict[tuple, dict] = {}
        self.sweep_pairs_dropped = 0
        self._clear_memos()

    def set_policy(self, policy: Policy) -> None:
        """Judge what comes next against a new policy (the sensor's reload on SIGHUP)."""
        self.policy = policy
        self.rules = policy.rules
        self._clear_memos()

    def _clear_memos(self) -> None:
        """The memos hold answers of one policy; a new policy starts them afresh."""
        self._endpoints: dict[tuple, tuple[Located, Endpoint]] = {}
        self._verdicts: dict[tuple, Verdict] = {}
        self._unsafe_specs: dict[str, tuple] = {}

    # --- helpers ----------------------------------------------------------------------
    def _ep(self, ip: str, mac: str | None = None) -> tuple[Located, Endpoint]:
        key = (ip, mac)
        hit = self._endpoints.get(key)
        if hit is None:
            if len(self._endpoints) >= MAX_MEMO:
                self._endpoints.clear()
            loc = self.policy.locate(ip, mac)
            hit = self._endpoints[key] = (loc, Endpoint.of(ip, loc, mac))
        return hit

    def verdict(self, src: Located, dst: Located, protocol: str, port: int,
                transport: str = "tcp", op_class: str | None = None, carried: tuple[str, ...] = ()) -> Verdict:
        """Conduit decision for ``src`` opening/asking ``dst``; no decision outside zones.
        Memoised: the answer depends only on the zones, the assets and the message's
        protocol, port, transport and class, and the policy does not change under it.
        ``carried``: further protocols whose rules also cover the message (see ``CARRIED``)."""
        if src.zone is None or dst.zone is None or src.zone is dst.zone:
            return NOT_JUDGED
        key = (src.zone.name, dst.zone.name, src.asset.name if src.asset else None,
               dst.asset.name if dst.asset else None, protocol, port, transport, op_class, carried)
        v = self._verdicts.get(key)
        if v is None:
            if len(self._verdicts) >= MAX_MEMO:
                self._verdicts.clear()
            v = self._verdicts[key] = self._judge(src, dst, protocol, port, transport, op_class,
                                                  carried or (protocol,))
        return v

    def _judge(self, src: Located, dst: Located, protocol: str, port: int, transport: str,
               op_class: str | None, names: tuple[str, ...]) -> Verdict:
        c = self.policy.conduit_between(src.zone.name, dst.zone.name)
        where = f"{_fmt_zone(src)} -> {_fmt_zone(dst)}"
        if c is None:
            return Verdict("OTSEC-CONDUIT-001", f"no conduit joins {where}; everything between them is denied",
                           cross_zone=True)
        if c.initiator not in ("both", src.zone.name):
            return Verdict("OTSEC-CONDUIT-002", f"conduit '{c.name}' lets only zone '{c.initiator}' open "
                                                f"connections, but {src.zone.name} did", c, cross_zone=True)
        rules = tuple(r for r in c.allow
                      if (r.protocol in names or r.protocol == transport)
                      and (not r.ports or port in r.ports))
        if not rules:
            return Verdict("OTSEC-CONDUIT-003", f"conduit '{c.name}' does not allow {protocol}/{port}",
                           c, cross_zone=True)
        rules = tuple(r for r in rules if self.policy.matches_endpoint(r.sources, src.asset)
                      and self.policy.matches_endpoint(r.destinations, dst.asset))
        if not rules:
            who = src.asset.name if src.asset else "an undeclared host"
            to = dst.asset.name if dst.asset else "an undeclared host"
            return Verdict("OTSEC-CONDUIT-004", f"conduit '{c.name}' allows {protocol} but not from {who} "
                                                f"to {to}", c, cross_zone=True)
        if op_class is not None and op_class != "session":
            allowed = tuple(r for r in rules if not r.operations or op_class in r.operations)
            if not allowed:
                ops = sorted({o for r in rules for o in r.operations} | {"session"})
                return Verdict("OTSEC-CONDUIT-005", f"conduit '{c.name}' allows only {'/'.join(ops)} "
                                                    f"operations for {protocol}, not {op_class}",
                               c, cross_zone=True)
            rules = allowed
        return Verdict(None, conduit=c, rules=rules, cross_zone=True)

    def _add(self, rule_id: str, src: Endpoint, dst: Endpoint | None, protocol, port, explanation,
             ts: float, packet: int, samples=None, extra=None, count: int = 1) -> Finding | None:
        return self.agg.add(rule_id, src, dst, protocol, port, explanation, ts, packet,
                            self.capture, samples, extra, count)

    def _unknown(self, ip: str, loc: Located) -> bool:
        """Does ``ip`` sit in a zone, undeclared and not in the baseline?"""
        return (loc.zone is not None and loc.asset is None
                and (self.baseline is None or ip not in self.baseline.devices))

    def _new_device(self, device: Endpoint, loc: Located, ts: float, packet: int,
                    doing: str | None, identity: dict | None) -> None:
        """Report ``device`` (from :meth:`_ep`), which :meth:`_unknown` found unknown, as a
        new device."""
        ip, mac = device.ip, device.mac
        samples = {"mac": mac, "activity": doing}
        for k, v in (identity or {}).items():
            samples[f"identity.{k}"] = v
        known = "not declared in the policy" + (" and not in the baseline" if self.baseline else "")
        self._add("OTSEC-DEVICE-001", device, None, None, None,
                  lambda: f"unknown device {ip}{f' (MAC {mac})' if mac else ''} in zone {loc.zone_name}: {known}",
                  ts, packet, samples)

    # --- events -----------------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        self.capture = ev.capture
        sd = sides(ev)
        c_loc, client = self._ep(sd.client_ip, sd.client_mac)
        s_loc, server = self._ep(sd.server_ip, sd.server_mac)
        reported = False
        if ev.anomalies:
            reported = self._anomalies(ev, sd, client, server)
        if ev.kind == "response" and ev.result in ("exception", "error") and ev.function_code is not None:
            self._track(self._fc_sweeps, ev.function_code, ev, sd, client, server,
                        self.rules.function_sweep_min, "OTSEC-ANOMALY-003", "function_code",
                        f"{client.label} tried many {sd.protocol} function codes on {server.label} "
                        f"that were rejected (reconnaissance of supported functions)")
        if sd.protocol == "opcua":
            reported |= self._opcua_mode(ev, sd, c_loc, s_loc, client, server)
        sender_loc = c_loc if sd.from_client else s_loc
        if self._unknown(ev.src_ip, sender_loc):
            sender, peer = (client, server) if sd.from_client else (server, client)
            self._new_device(sender, sender_loc, ev.ts, ev.packet,
                             f"{sd.protocol} {ev.function} ({ev.kind}) with {peer.label}", ev.identity)
            reported = True
        if ev.kind != "request":
            return
        if "unit_id" in ev.detail and sd.from_client:
            self._track(self._unit_sweeps, ev.detail["unit_id"], ev, sd, client, server,
                        self.rules.unit_id_sweep_min, "OTSEC-ANOMALY-004", "unit_id",
                        f"{client.label} addressed many {sd.protocol} unit ids through {server.label} "
                        f"(scanning for devices behind a gateway)")
        reported |= self._unknown(sd.client_ip, c_loc) or self._unknown(sd.server_ip, s_loc)
        opaque = bool(ev.detail.get("encrypted"))
        v = self.verdict(c_loc, s_loc, sd.protocol, sd.port, op_class=None if opaque else ev.op_class,
                         carried=CARRIED.get(ev.protocol, ()))
        if v.rule_id:
            self._add(v.rule_id, client, server, sd.protocol, sd.port, v.reason, ev.ts, ev.packet,
                      {"function": f"{ev.function} ({ev.op_class})"})
            reported = True
        if not opaque:
            reported |= self._unsafe(ev, sd, c_loc, s_loc, client, server, v)
        if (v.cross_zone and self.rules.cleartext_deny and sd.protocol in self.rules.cleartext_protocols
                and not opaque and not (v.conduit and v.conduit.name in self.rules.cleartext_except_conduits)):
            self._add("OTSEC-INSECURE-002", client, server, sd.protocol, sd.port,
                      f"cleartext {sd.protocol} crosses from zone {c_loc.zone_name} to {s_loc.zone_name}; "
                      f"the policy forbids it", ev.ts, ev.packet, {"function": f"{ev.function} ({ev.op_class})"})
            reported = True
        if not reported and self.baseline is not None:
            self._new_communication(ev, sd, client, server)

    def _unsafe(self, ev: Event, sd: Sides, src_loc: Located, dst_loc: Located,
                src: Endpoint, dst: Endpoint, v: Verdict) -> bool:
        protocol = sd.protocol
        op_classes, functions, codes = self._unsafe_spec(protocol)
        if ev.op_class not in op_classes and not (
                (functions and normalise_function(ev.function) in functions)
                or (ev.function_code is not None and ev.function_code in codes)):
            return False
        op = ev.op_class
        rule_id = UNSAFE_RULE.get(op, "OTSEC-UNSAFE-004")
        roles = {"program": self.rules.program_roles, "control": self.rules.control_roles,
                 "write": self.rules.write_roles}.get(op, ())
        asset = src_loc.asset
        why = None
        if asset is None:
            why = "from an undeclared station"
        elif roles and asset.role not in roles:
            why = f"from {asset.name}, a {asset.role}; only {'/'.join(roles)} may {op}"
        elif src_loc.zone is None or dst_loc.zone is None:
            why = "across the boundary of the declared zones"
        elif v.cross_zone and v.rule_id:
            why = f"not authorised by the conduits ({v.reason})"
        elif v.cross_zone and op == "write":
            bounded = [r for r in v.rules if r.write_targets]
            if bounded and len(bounded) == len(v.rules):
                written = _written(ev)
                ok = written and any(all(any(w.covers(t) for w in r.write_targets) for t in written)
                                     for r in bounded)
                if not ok:
                    allowed = ", ".join(str(w) for r in bounded for w in r.write_targets)
                    why = (f"to {_targets_text(written) or 'an undecoded target'} outside the allowed "
                           f"write targets ({allowed})")
        if why is None:
            return False
        target = _targets_text(ev.targets)
        self._add(rule_id, src, dst, protocol, sd.port,
                  f"{ev.function} ({op}) on {dst.label} {why}", ev.ts, ev.packet,
                  {"function": ev.function, "target": target})
        return True

    def _unsafe_spec(self, protocol: str) -> tuple:
        """(op classes, normalised function names, codes) that are unsafe for ``protocol``."""
        spec = self._unsafe_specs.get(protocol)
        if spec is None:
            s = self.rules.unsafe_spec(protocol)
            spec = self._unsafe_specs[protocol] = (
                frozenset(s.op_classes), frozenset(normalise_function(f) for f in s.functions),
                frozenset(s.function_codes))
        return spec

    def _new_communication(self, ev: Event, sd: Sides, src: Endpoint, dst: Endpoint) -> None:
        key, _, _ = event_key(self.policy, ev)
        entry = self.baseline.entries.get(key)
        sample = {"function": ev.function, "target": _targets_text(ev.targets)}
        what = f"{src.label} -> {dst.label} {sd.protocol} {ev.function} ({ev.op_class})"
        if entry is None:
            self._add("OTSEC-NEWCOMM-001", src, dst, sd.protocol, sd.port,
                      f"{what} was never seen in the baseline", ev.ts, ev.packet, sample,
                      extra=(ev.op_class, ev.function))
        elif not all(entry.covers(t) for t in ev.targets):
            self._add("OTSEC-NEWCOMM-002", src, dst, sd.protocol, sd.port,
                      f"{what} touches targets outside those seen in the baseline "
                      f"({entry.targets_text() or 'none'})", ev.ts, ev.packet, sample,
                      extra=(ev.op_class, ev.function))

    def _opcua_mode(self, ev: Event, sd: Sides, c_loc: Located, s_loc: Located,
                    client: Endpoint, server: Endpoint) -> bool:
        mode = ev.detail.get("security_mode")
        if mode is None:
            return False
        v = self.verdict(c_loc, s_loc, "opcua", sd.port)
        required = [r.opcua_security_mode for r in v.rules if r.opcua_security_mode]
        if not required:
            return False
        need = max(required, key=OPCUA_MODES.index)
        if OPCUA_MODE_CEILING.get(mode, 0) >= OPCUA_MODES.index(need):
            return False
        self._add("OTSEC-INSECURE-001", client, server, "opcua", sd.port,
                  f"OPC UA channel {client.label} -> {server.label} uses security mode {mode}; "
                  f"conduit '{v.conduit.name}' requires {need}", ev.ts, ev.packet,
                  {"security_mode": mode, "security_policy": ev.detail.get("security_policy"),
                   "function": ev.function})
        return True

    # --- anomalies and sweeps ---------------------------------------------------------
    def _anomalies(self, ev: Event, sd: Sides, client: Endpoint, server: Endpoint) -> bool:
        for flag in ev.anomalies:
            if flag.endswith(UNPAIRED_SUFFIX):
                self._add("OTSEC-ANOMALY-002", client, server, sd.protocol, sd.port,
                          f"{sd.protocol} responses between {client.label} and {server.label} answer no "
                          f"request seen (injected or spoofed responses, or a capture that started late)",
                          ev.ts, ev.packet, {"function": ev.function})
            else:
                self._add("OTSEC-ANOMALY-001", client, server, sd.protocol, sd.port,
                          f"malformed or invalid {sd.protocol} messages between {client.label} and "
                          f"{server.label}", ev.ts, ev.packet, {"flag": flag, "function": ev.function})
        return True

    def _track(self, table: dict, value, ev: Event, sd: Sides, client: Endpoint, server: Endpoint,
               minimum: int, rule_id: str, field: str, text: str) -> None:
        """Distinct ``value``s per (client, server, protocol); at ``minimum`` a sweep is reported
        with the evidence of all of them, and every later one adds to that finding."""
        key = (sd.client_ip, sd.server_ip, sd.protocol)
        st = table.get(key)
        if st is None:
            if len(table) >= MAX_SWEEP_PAIRS:
                self.sweep_pairs_dropped += 1
                return
            st = table[key] = {"seen": [], "reported": False}
        if st["reported"]:
            self._add(rule_id, client, server, sd.protocol, sd.port, text, ev.ts, ev.packet, {field: value})
            return
        if all(v != value for v, _, _ in st["seen"]):
            st["seen"].append((value, ev.ts, ev.packet))
        if len(st["seen"]) >= minimum:
            st["reported"] = True
            for v, ts, packet in st["seen"]:
                self._add(rule_id, client, server, sd.protocol, sd.port, text, ts, packet, {field: v})
            st["seen"] = []

    # --- flows ------------------------------------------------------------------------
    def on_flow(self, flow: Flow) -> None:
        self.capture = flow.capture
        c_loc, client = self._ep(flow.client_ip, flow.client_mac)
        s_loc, server = self._ep(flow.server_ip, flow.server_mac)
        protocol = protocol_name(flow.app, flow.server_port)
        port = flow.server_port
        reported = False
        doing = f"{protocol} {flow.client_ip} -> {flow.server_ip}:{port}"
        if self._unknown(flow.client_ip, c_loc):
            self._new_device(client, c_loc, flow.first_ts, flow.first_packet,
                             doing, None)
            reported = True
        if flow.packets_s2c and self._unknown(flow.server_ip, s_loc):
            self._new_device(server, s_loc, flow.first_ts, flow.first_packet,
                             f"answered {doing}", None)
            reported = True
        reported |= self._external(flow, c_loc, s_loc, client, server, protocol)
        for flag in flow.anomalies:
            self._flow_finding("OTSEC-ANOMALY-001", flow, client, server, protocol,
                               f"malformed or invalid {protocol} messages between {client.label} and "
                               f"{server.label}", flag=flag)
            reported = True
        levels_ok = s_loc.zone is not None and s_loc.zone.level <= self.rules.it_admin_max_level
        if (protocol in self.rules.it_admin_protocols and levels_ok and c_loc.zone is not s_loc.zone):
            self._flow_finding("OTSEC-INSECURE-003", flow, client, server, protocol,
                               f"{protocol} (IT remote access/admin) from {client.label} into {server.label} "
                               f"in {_fmt_zone(s_loc)}")
            reported = True
        if flow.events:
            return   # decoded conversations were judged message by message
        v = self.verdict(c_loc, s_loc, protocol, port, flow.transport)
        if v.rule_id and not flow.initiator_known:
            # Without the handshake the opener is a guess (the server is the well-known or
            # lower port); when the conduits allow the other orientation, nothing is proven.
            back = self.verdict(s_loc, c_loc, protocol_name(None, flow.client_port), flow.client_port,
                                flow.transport)
            if back.rule_id is None:
                return
        if v.rule_id:
            self._flow_finding(v.rule_id, flow, client, server, protocol, v.reason + (
                "" if flow.initiator_known else f" (handshake not seen: {client.label} is taken as the "
                                                f"opener because {server.label} holds the server port)"))
            reported = True
        if not reported and self.baseline is not None and (c_loc.zone or s_loc.zone):
            key, _, _ = flow_key(self.policy, flow)
            if key not in self.baseline.entries:
                self._flow_finding("OTSEC-NEWCOMM-001", flow, client, server, protocol,
                                   f"{client.label} -> {server.label} {protocol}/{port} was never seen in the "
                                   f"baseline", extra=("", ""))

    def _flow_finding(self, rule_id: str, flow: Flow, client: Endpoint, server: Endpoint,
                      protocol: str, text: str, extra=None, flag: str | None = None) -> None:
        """One conversation as evidence: counted once, first and last packet of the flow."""
        f = self._add(rule_id, client, server, protocol, flow.server_port, text, flow.first_ts,
                      flow.first_packet, {"transport": flow.transport, "flag": flag,
                                          "handshake": "seen" if flow.initiator_known else "not seen"},
                      extra)
        if f is not None:
            f.add(flow.last_ts, flow.last_packet, self.capture, None, count=0)
            if flow.initiator_known and f.samples["handshake"].get("seen") == 1:
                # the first connection whose opener is known states the direction; one
                # without a handshake could only guess it
                f.explanation = text

    def _external(self, flow: Flow, c_loc: Located, s_loc: Located, client: Endpoint,
                  server: Endpoint, protocol: str) -> bool:
        ext_ip = None
        if c_loc.zone is not None and s_loc.zone is None:
            ot, ext_ip = c_loc, flow.server_ip
        elif s_loc.zone is not None and c_loc.zone is None:
            ot, ext_ip = s_loc, flow.client_ip
        if ext_ip is None or ot.zone.level > self.rules.external_ot_max_level or not _routable_external(ext_ip):
            return False
        addr = ipaddress.ip_address(ext_ip)
        if any(addr.version == n.version and addr in n for n in self.rules.external_allowed):
            return False
        if not flow.initiator_known:
            direction = "exchanged traffic (handshake not seen, opener unknown) with"
        else:
            direction = "opened a connection to" if ot is c_loc else "accepted a connection from"
        who = client if ot is c_loc else server
        self._flow_finding("OTSEC-EXTERNAL-001", flow, client, server, protocol,
                           f"{who.label} in OT zone {ot.zone_name} {direction} {ext_ip} ({protocol}/"
                           f"{flow.server_port}), outside every declared zone")
        return True

    # --- results ----------------------------------------------------------------------
    def finish(self, today: dt.date | None = None) -> list[Finding]:
        """All findings, most severe first, with suppressions applied (as of ``today``)."""
        findings = self.agg.sorted()
        apply_suppressions(findings, self.policy, today)
        return findings


def _written(ev: Event) -> list[Target]:
    """The targets a write changes. A combined read/write (Modbus FC 23) also names the
    range it reads; ``write_targets`` authorise only what is written."""
    d = ev.detail
    if "write_start" in d:
        written = [t for t in ev.targets if t.start == d["write_start"] and t.count == d.get("write_quantity")]
        if written:
            return written
    return ev.targets


def _targets_text(targets: list[Target]) -> str:
    """Targets as an engineer writes them: ``holding_register 4000-4009``, ``DB10 4-5``,
    ``ns=2;s=Line1.Setpoint``, ``szl 0x001c``."""
    parts = []
    for t in targets[:4]:
        if t.kind in ("node", "block") and t.name:
            parts.append(t.name)
        elif t.name:
            parts.append(f"{t.kind} {t.name}")
        else:
            space = f"DB{t.db}" if t.db is not None else (t.area or t.kind)
            if t.start is None:
                parts.append(space)
            else:
                end = t.start + max((t.count or 1) - 1, 0)
                parts.append(f"{space} {t.start}" + (f"-{end}" if end != t.start else ""))
    return ", ".join(parts)
