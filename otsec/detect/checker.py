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

Cost per event: most events repeat what an earlier one said (the same device talking to
the same peer, the same function on the same connection), so the decisions that do not
depend on the message's contents are worked out once and kept in bounded memos:

    (ip, mac)                        -> zone, asset, endpoint, "unknown device" report
    Sides (connection, direction)    -> _Pair: both endpoints, OPC UA mode required,
      (op class, encrypted, carried)   -> _Request: conduit, unsafe operation and
                                          cleartext reports of a kind of request
    (protocol, function, kind, code) -> _Function: evidence texts, "is it unsafe"
    (client, server, app, port)      -> _FlowPair: both endpoints of connection records

A repeat then only counts an occurrence, with its per-message evidence (time, packet,
targets), into the finding it reached before (a :class:`_Site`). Each memo holds at most
``MAX_MEMO`` entries, and a new policy or baseline starts them afresh. With
``memo_entries=0`` the checker decides everything again for every message: the
reference its tests compare the memoised answers with.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Callable

from otsec.analysis.sides import Sides, sides
from otsec.detect.baseline import Baseline, event_key, flow_key
from otsec.detect.findings import Aggregator, Endpoint, Finding, apply_suppressions
from otsec.model import Event, Flow, Target
from otsec.policy.model import (
    OPCUA_MODES, AllowRule, Conduit, Located, Policy, normalise_function, protocol_name,
)

#: Per-pair sweep trackers kept at most (pairs beyond this are not tracked).
MAX_SWEEP_PAIRS = 50_000

#: Entries per memo (endpoints, verdicts, pairs, functions...); a full memo is emptied and
#: refilled. On the 2M-packet benchmark 4,096 is as fast as 65,536 and keeps `otsec check`
#: at 99 MiB instead of 143 (the memos hold endpoints and prepared evidence per pair).
MAX_MEMO = 4_096

#: Rule id per unsafe operation class; function-listed operations of another class use UNSAFE-004.
UNSAFE_RULE = {"write": "OTSEC-UNSAFE-001", "program": "OTSEC-UNSAFE-002", "control": "OTSEC-UNSAFE-003"}

#: OPC UA modes as observed by the decoder -> the strongest mode they may be.
#: A mode the table does not know (``Invalid``, an undefined number) offers no security.
OPCUA_MODE_CEILING = {"None": 0, "NoneOrSign": 1, "Sign": 1, "SignAndEncrypt": 2}

#: Carrier protocols whose session messages open connections for several policy protocols:
#: COTP (ISO-on-TCP) connects both S7comm and S7comm-plus, so a rule for either covers it.
CARRIED = {"cotp": ("s7comm", "s7comm-plus")}

UNPAIRED_SUFFIX = ".unpaired_response"

#: Explanation of a sweep finding, per rule.
SWEEP_TEXT = {
    "OTSEC-ANOMALY-003": "{client} tried many {protocol} function codes on {server} that were rejected "
                         "(reconnaissance of supported functions)",
    "OTSEC-ANOMALY-004": "{client} addressed many {protocol} unit ids through {server} (scanning for "
                         "devices behind a gateway)",
}


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


class _Sweep:
    """The distinct values (function codes, unit ids) one client used towards one server in
    one protocol, until ``minimum`` of them make a sweep; then ``reported``."""

    __slots__ = ("seen", "reported")

    def __init__(self):
        self.seen: dict = {}        # each value -> (ts, packet) of its first occurrence, in order
        self.reported = False


class _Site:
    """One finding key (rule, source, destination, protocol, port) that a memo reports into
    again and again, with the same evidence fields (``names``); ``finding`` is the Finding
    once the aggregator has made it, so that a repeat only counts into it, and ``refused``
    tells that the aggregator, full, had no room for it (it never will: it only grows)."""

    __slots__ = ("rule_id", "src", "dst", "protocol", "port", "names", "text", "finding", "refused")

    def __init__(self, rule_id: str, src: Endpoint, dst: Endpoint | None, protocol: str | None,
                 port: int | None, names: tuple[str, ...], text: str | Callable[[], str] = ""):
        self.rule_id, self.src, self.dst, self.protocol, self.port = rule_id, src, dst, protocol, port
        self.names = names
        self.text = text            # the explanation (or what makes it), when the message does not matter
        self.finding: Finding | None = None
        self.refused = False


@dataclass(slots=True)
class _Pair:
    """One connection in one direction (a :class:`Sides`): who the sides are, the "unknown
    device" report of the sender when it is one, and what its requests were judged."""

    c_loc: Located
    client: Endpoint
    s_loc: Located
    server: Endpoint
    device: _Site | None        # the sender's OTSEC-DEVICE-001, when it is unknown
    mac: str | None             # the sender's MAC (evidence)
    with_peer: str              # " with <peer>", the end of the activity evidence
    unknown: bool               # either side unknown: its requests count as reported
    opcua: tuple[str, str] | None   # (mode, conduit) an OPC UA channel must at least have
    requests: dict              # (op class, encrypted, carried) -> _Request (a few at most)
    sweeps: dict                # rule id -> _Site of a function-code or unit-id sweep
    tracked: dict               # rule id -> the _Sweep of its client, server and protocol


@dataclass(slots=True)
class _Request:
    """What the conduits say about one kind of request on a :class:`_Pair`: its reports."""

    conduit: _Site | None       # the CONDUIT-* report, when violated
    unsafe: _Site | None        # the UNSAFE-* report, when an unsafe function may be reported
    why: str | None             # why an unsafe function is not authorised (None: it is) ...
    bounded: tuple[AllowRule, ...]  # ... unless the written targets tell: the rules bounding them
    cleartext: _Site | None     # the INSECURE-002 report


@dataclass(slots=True)
class _Function:
    """One function of a protocol as a message kind: its evidence texts and whether the
    policy counts it as unsafe."""

    activity: str               # "<protocol> <function> (<kind>)", the start of the activity evidence
    evidence: tuple[str]        # ("<function> (<op class>)",): the evidence of a conduit finding
    unsafe: bool
    carried: tuple[str, ...]    # CARRIED protocols of the decoder's protocol


@dataclass(slots=True)
class _FlowPair:
    """The sides of connections between two endpoints on one service, and what the policy
    says of them whatever the connection."""

    c_loc: Located
    client: Endpoint
    s_loc: Located
    server: Endpoint
    protocol: str
    doing: str                  # activity evidence of the client ...
    client_device: _Site | None
    answered: str               # ... and of the server
    server_device: _Site | None
    external: tuple[Located, str] | None   # (the OT side, the outside address) of an EXTERNAL-001
    admin: bool                 # IT remote access/admin into a low level of another zone
    verdict: Verdict | None     # the conduits' word, the server taken as the opener (when asked)


class Checker:
    """Streaming detections; call :meth:`on_event`/:meth:`on_flow`, then :meth:`finish`.

    ``memo_entries``: entries each memo keeps; 0 works every answer out afresh, message by
    message (the reference the memoised checker is tested against)."""

    def __init__(self, policy: Policy, baseline: Baseline | None = None,
                 aggregator: Aggregator | None = None, memo_entries: int = MAX_MEMO):
        self.policy = policy
        self.rules = policy.rules
        self.agg = aggregator if aggregator is not None else Aggregator()
        # an aggregator that overrides add (the sensor's notes what changed) is given every
        # occurrence; the plain one is bypassed for repeats, which only count
        self._direct = type(self.agg).add is Aggregator.add
        self.memo_entries = memo_entries
        self.capture: str | None = None   # capture file of the item being checked (evidence)
        self._fc_sweeps: dict[tuple, _Sweep] = {}
        self._unit_sweeps: dict[tuple, _Sweep] = {}
        self.sweep_pairs_dropped = 0
        self.baseline = baseline

    @property
    def baseline(self) -> Baseline | None:
        return self._baseline

    @baseline.setter
    def baseline(self, baseline: Baseline | None) -> None:
        """A baseline (the sensor's, once learnt) changes who is unknown: memos start afresh."""
        self._baseline = baseline
        self._clear_memos()

    def set_policy(self, policy: Policy) -> None:
        """Judge what comes next against a new policy (the sensor's reload on SIGHUP)."""
        self.policy = policy
        self.rules = policy.rules
        self._clear_memos()

    def _clear_memos(self) -> None:
        """The memos hold answers of one policy and baseline; a new one starts them afresh."""
        self._endpoints: dict[tuple, tuple[Located, Endpoint, _Site | None]] = {}
        self._verdicts: dict[tuple, Verdict] = {}
        self._unsafe_specs: dict[str, tuple] = {}
        self._pairs: dict[Sides, _Pair] = {}
        self._functions: dict[tuple, _Function] = {}
        self._flow_pairs: dict[tuple, _FlowPair] = {}

    def _keep(self, memo: dict, key, value):
        """Remember ``value`` under ``key``: a full memo is emptied first, and none keeps
        anything when memos are off."""
        if len(memo) >= self.memo_entries:
            memo.clear()
            if not self.memo_entries:
                return value
        memo[key] = value
        return value

    # --- helpers ----------------------------------------------------------------------
    def _ep(self, ip: str, mac: str | None = None) -> tuple[Located, Endpoint, _Site | None]:
        """Where ``ip`` sits, as a finding names it, and its "unknown device" report when it
        is one (:meth:`_unknown`)."""
        hit = self._endpoints.get((ip, mac))
        if hit is None:
            loc = self.policy.locate(ip, mac)
            ep = Endpoint.of(ip, loc, mac)
            hit = self._keep(self._endpoints, (ip, mac),
                             (loc, ep, self._device_site(ep, loc) if self._unknown(ip, loc) else None))
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
            v = self._keep(self._verdicts, key, self._judge(src, dst, protocol, port, transport, op_class,
                                                            carried or (protocol,)))
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

    def _report(self, site: _Site, ts: float, packet: int, values: tuple, explanation=None) -> None:
        """One occurrence at a memoised finding key, with ``values`` of the site's evidence
        fields; ``explanation`` when not ``site.text``."""
        f = site.finding
        if f is not None:
            f.tally(ts, packet, self.capture, site.names, values)
            return
        if site.refused:
            self.agg.dropped += 1
            return
        f = self.agg.add(site.rule_id, site.src, site.dst, site.protocol, site.port,
                         site.text if explanation is None else explanation, ts, packet, self.capture,
                         dict(zip(site.names, values)))
        if self._direct:
            site.finding, site.refused = f, f is None

    def _unknown(self, ip: str, loc: Located) -> bool:
        """Does ``ip`` sit in a zone, undeclared and not in the baseline?"""
        return (loc.zone is not None and loc.asset is None
                and (self._baseline is None or ip not in self._baseline.devices))

    def _device_site(self, device: Endpoint, loc: Located) -> _Site:
        """Where ``device``, which :meth:`_unknown` found unknown, is reported as a new device."""
        ip, mac = device.ip, device.mac
        known = "not declared in the policy" + (" and not in the baseline" if self._baseline else "")
        return _Site("OTSEC-DEVICE-001", device, None, None, None, ("mac", "activity"),
                     f"unknown device {ip}{f' (MAC {mac})' if mac else ''} in zone {loc.zone_name}: {known}")

    # --- events -----------------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        self.capture = ev.capture
        sd = sides(ev)
        p = self._pairs.get(sd)
        if p is None:
            p = self._pair(sd)
        kind = ev.kind
        key = (sd.protocol, ev.protocol, kind, ev.function, ev.op_class, ev.function_code)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._function(key, ev)
        client, server = p.client, p.server
        reported = False
        if ev.anomalies:
            reported = self._anomalies(ev, sd, client, server)
        if kind == "response" and ev.result in ("exception", "error") and ev.function_code is not None:
            self._track(self._fc_sweeps, ev.function_code, ev, sd, p, "OTSEC-ANOMALY-003",
                        self.rules.function_sweep_min, "function_code")
        detail = ev.detail
        if p.opcua is not None:
            mode = detail.get("security_mode")
            if mode is not None:
                reported |= self._opcua_mode(ev, sd, p, mode)
        device = p.device
        if device is not None:
            if ev.identity:   # what the sender reveals of itself (vendor, model, firmware...)
                samples = {"mac": p.mac, "activity": fn.activity + p.with_peer}
                for k, v in ev.identity.items():
                    samples[f"identity.{k}"] = v
                self._add(device.rule_id, device.src, None, None, None, device.text, ev.ts, ev.packet, samples)
            elif device.finding is not None:   # the common case, without _report's call
                device.finding.tally(ev.ts, ev.packet, ev.capture, device.names, (p.mac, fn.activity + p.with_peer))
            else:
                self._report(device, ev.ts, ev.packet, (p.mac, fn.activity + p.with_peer))
            reported = True
        if kind != "request":
            return
        if "unit_id" in detail and sd.from_client:
            self._track(self._unit_sweeps, detail["unit_id"], ev, sd, p, "OTSEC-ANOMALY-004",
                        self.rules.unit_id_sweep_min, "unit_id")
        reported |= p.unknown
        opaque = bool(detail.get("encrypted"))
        rq = p.requests.get((ev.op_class, opaque, fn.carried))
        if rq is None:
            rq = self._request(p, sd, ev.op_class, opaque, fn.carried)
        if rq.conduit is not None:
            self._report(rq.conduit, ev.ts, ev.packet, fn.evidence)
            reported = True
        if fn.unsafe and rq.unsafe is not None:
            why = _outside_write_targets(rq.bounded, ev) if rq.bounded else rq.why
            if why is not None:
                self._report(rq.unsafe, ev.ts, ev.packet, (ev.function, _targets_text(ev.targets)),
                             lambda: f"{ev.function} ({ev.op_class}) on {server.label} {why}")
                reported = True
        if rq.cleartext is not None:
            self._report(rq.cleartext, ev.ts, ev.packet, fn.evidence)
            reported = True
        if not reported and self._baseline is not None:
            self._new_communication(ev, sd, client, server)

    def _pair(self, sd: Sides) -> _Pair:
        c_loc, client, c_device = self._ep(sd.client_ip, sd.client_mac)
        s_loc, server, s_device = self._ep(sd.server_ip, sd.server_mac)
        sender, device, peer = (client, c_device, server) if sd.from_client else (server, s_device, client)
        return self._keep(self._pairs, sd, _Pair(
            c_loc, client, s_loc, server, device, sender.mac, f" with {peer.label}",
            c_device is not None or s_device is not None,
            self._opcua_need(c_loc, s_loc, sd.port) if sd.protocol == "opcua" else None, {}, {}, {}))

    def _function(self, key: tuple, ev: Event) -> _Function:
        protocol = key[0]
        op_classes, functions, codes = self._unsafe_spec(protocol)
        unsafe = (ev.op_class in op_classes or bool(functions and normalise_function(ev.function) in functions)
                  or (ev.function_code is not None and ev.function_code in codes))
        return self._keep(self._functions, key, _Function(
            f"{protocol} {ev.function} ({ev.kind})", (f"{ev.function} ({ev.op_class})",),
            unsafe, CARRIED.get(ev.protocol, ())))

    def _request(self, p: _Pair, sd: Sides, op_class: str, opaque: bool, carried: tuple[str, ...]) -> _Request:
        client, server, protocol, port = p.client, p.server, sd.protocol, sd.port
        v = self.verdict(p.c_loc, p.s_loc, protocol, port, op_class=None if opaque else op_class,
                         carried=carried)
        conduit = _Site(v.rule_id, client, server, protocol, port, ("function",), v.reason) if v.rule_id else None
        unsafe, why, bounded = None, None, ()
        if not opaque:
            why, bounded = self._unsafe_why(op_class, p.c_loc, p.s_loc, v)
            if why is not None or bounded:
                unsafe = _Site(UNSAFE_RULE.get(op_class, "OTSEC-UNSAFE-004"), client, server, protocol, port,
                               ("function", "target"))
        cleartext = None
        if (v.cross_zone and self.rules.cleartext_deny and protocol in self.rules.cleartext_protocols
                and not opaque and not (v.conduit and v.conduit.name in self.rules.cleartext_except_conduits)):
            cleartext = _Site("OTSEC-INSECURE-002", client, server, protocol, port, ("function",),
                              f"cleartext {protocol} crosses from zone {p.c_loc.zone_name} to "
                              f"{p.s_loc.zone_name}; the policy forbids it")
        return self._keep(p.requests, (op_class, opaque, carried),
                          _Request(conduit, unsafe, why, bounded, cleartext))

    def _unsafe_why(self, op: str, src_loc: Located, dst_loc: Located,
                    v: Verdict) -> tuple[str | None, tuple[AllowRule, ...]]:
        """Why an unsafe operation of class ``op`` from ``src_loc`` to ``dst_loc`` is not
        authorised (None: it is); when only the written targets can tell, the conduit rules
        that bound them instead."""
        roles = {"program": self.rules.program_roles, "control": self.rules.control_roles,
                 "write": self.rules.write_roles}.get(op, ())
        asset = src_loc.asset
        if asset is None:
            return "from an undeclared station", ()
        if roles and asset.role not in roles:
            return f"from {asset.name}, a {asset.role}; only {'/'.join(roles)} may {op}", ()
        if src_loc.zone is None or dst_loc.zone is None:
            return "across the boundary of the declared zones", ()
        if v.cross_zone and v.rule_id:
            return f"not authorised by the conduits ({v.reason})", ()
        if v.cross_zone and op == "write":
            bounded = tuple(r for r in v.rules if r.write_targets)
            if bounded and len(bounded) == len(v.rules):
                return None, bounded
        return None, ()

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
        entry = self._baseline.entries.get(key)
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

    def _opcua_need(self, c_loc: Located, s_loc: Located, port: int) -> tuple[str, str] | None:
        """The security mode the conduit rules covering an OPC UA channel require at least,
        and the conduit (None: no requirement)."""
        v = self.verdict(c_loc, s_loc, "opcua", port)
        required = [r.opcua_security_mode for r in v.rules if r.opcua_security_mode]
        return (max(required, key=OPCUA_MODES.index), v.conduit.name) if required else None

    def _opcua_mode(self, ev: Event, sd: Sides, p: _Pair, mode: str) -> bool:
        need, conduit = p.opcua
        if OPCUA_MODE_CEILING.get(mode, 0) >= OPCUA_MODES.index(need):
            return False
        client, server = p.client, p.server
        self._add("OTSEC-INSECURE-001", client, server, "opcua", sd.port,
                  f"OPC UA channel {client.label} -> {server.label} uses security mode {mode}; "
                  f"conduit '{conduit}' requires {need}", ev.ts, ev.packet,
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

    def _track(self, table: dict, value, ev: Event, sd: Sides, p: _Pair, rule_id: str, minimum: int,
               field: str) -> None:
        """Distinct ``value``s per (client, server, protocol); at ``minimum`` a sweep is reported
        with the evidence of all of them, and every later one adds to that finding."""
        st = p.tracked.get(rule_id)
        if st is None:
            key = (sd.client_ip, sd.server_ip, sd.protocol)
            st = table.get(key)
            if st is None:
                if len(table) >= MAX_SWEEP_PAIRS:
                    self.sweep_pairs_dropped += 1
                    return
                st = table[key] = _Sweep()
            p.tracked[rule_id] = st
        if st.reported:
            self._report(p.sweeps.get(rule_id) or self._sweep_site(p, sd, field, rule_id), ev.ts, ev.packet,
                         (value,))
            return
        if value in st.seen:
            return
        st.seen[value] = (ev.ts, ev.packet)
        if len(st.seen) >= minimum:
            st.reported = True
            site = p.sweeps.get(rule_id) or self._sweep_site(p, sd, field, rule_id)
            for v, (ts, packet) in st.seen.items():
                self._report(site, ts, packet, (v,))
            st.seen = {}

    def _sweep_site(self, p: _Pair, sd: Sides, field: str, rule_id: str) -> _Site:
        client, server, protocol = p.client, p.server, sd.protocol
        text = SWEEP_TEXT[rule_id]
        site = p.sweeps[rule_id] = _Site(rule_id, client, server, protocol, sd.port, (field,),
                                         lambda: text.format(client=client.label, protocol=protocol,
                                                             server=server.label))
        return site

    # --- flows ------------------------------------------------------------------------
    def on_flow(self, flow: Flow) -> None:
        self.capture = flow.capture
        key = (flow.client_ip, flow.client_mac, flow.server_ip, flow.server_mac, flow.app, flow.server_port,
               flow.transport)
        fp = self._flow_pairs.get(key)
        if fp is None:
            fp = self._flow_pair(key, flow)
        client, server, protocol = fp.client, fp.server, fp.protocol
        reported = False
        if fp.client_device is not None:
            self._report(fp.client_device, flow.first_ts, flow.first_packet, (client.mac, fp.doing))
            reported = True
        if flow.packets_s2c and fp.server_device is not None:
            self._report(fp.server_device, flow.first_ts, flow.first_packet, (server.mac, fp.answered))
            reported = True
        if fp.external is not None:
            self._external(flow, fp)
            reported = True
        for flag in flow.anomalies:
            self._flow_finding("OTSEC-ANOMALY-001", flow, client, server, protocol,
                               f"malformed or invalid {protocol} messages between {client.label} and "
                               f"{server.label}", flag=flag)
            reported = True
        if fp.admin:
            self._flow_finding("OTSEC-INSECURE-003", flow, client, server, protocol,
                               f"{protocol} (IT remote access/admin) from {client.label} into {server.label} "
                               f"in {_fmt_zone(fp.s_loc)}")
            reported = True
        if flow.events:
            return   # decoded conversations were judged message by message
        v = fp.verdict
        if v is None:
            v = fp.verdict = self.verdict(fp.c_loc, fp.s_loc, protocol, flow.server_port, flow.transport)
        if v.rule_id and not flow.initiator_known:
            # Without the handshake the opener is a guess (the server is the well-known or
            # lower port); when the conduits allow the other orientation, nothing is proven.
            back = self.verdict(fp.s_loc, fp.c_loc, protocol_name(None, flow.client_port), flow.client_port,
                                flow.transport)
            if back.rule_id is None:
                return
        if v.rule_id:
            self._flow_finding(v.rule_id, flow, client, server, protocol, v.reason + (
                "" if flow.initiator_known else f" (handshake not seen: {client.label} is taken as the "
                                                f"opener because {server.label} holds the server port)"))
            reported = True
        if not reported and self._baseline is not None and (fp.c_loc.zone or fp.s_loc.zone):
            key, _, _ = flow_key(self.policy, flow)
            if key not in self._baseline.entries:
                self._flow_finding("OTSEC-NEWCOMM-001", flow, client, server, protocol,
                                   f"{client.label} -> {server.label} {protocol}/{flow.server_port} was never "
                                   f"seen in the baseline", extra=("", ""))

    def _flow_pair(self, key: tuple, flow: Flow) -> _FlowPair:
        c_loc, client, c_device = self._ep(flow.client_ip, flow.client_mac)
        s_loc, server, s_device = self._ep(flow.server_ip, flow.server_mac)
        protocol = protocol_name(flow.app, flow.server_port)
        doing = f"{protocol} {flow.client_ip} -> {flow.server_ip}:{flow.server_port}"
        rules = self.rules
        admin = (protocol in rules.it_admin_protocols and s_loc.zone is not None
                 and s_loc.zone.level <= rules.it_admin_max_level and c_loc.zone is not s_loc.zone)
        return self._keep(self._flow_pairs, key, _FlowPair(
            c_loc, client, s_loc, server, protocol, doing, c_device, f"answered {doing}", s_device,
            self._outside(c_loc, s_loc, flow.client_ip, flow.server_ip), admin, None))

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

    def _outside(self, c_loc: Located, s_loc: Located, client_ip: str, server_ip: str) -> tuple[Located, str] | None:
        """(the OT side, the outside address) when a conversation joins a low OT zone and a
        routable address outside every zone that the policy does not allow; else None."""
        if c_loc.zone is not None and s_loc.zone is None:
            ot, ext_ip = c_loc, server_ip
        elif s_loc.zone is not None and c_loc.zone is None:
            ot, ext_ip = s_loc, client_ip
        else:
            return None
        if ot.zone.level > self.rules.external_ot_max_level or not _routable_external(ext_ip):
            return None
        addr = ipaddress.ip_address(ext_ip)
        if any(addr.version == n.version and addr in n for n in self.rules.external_allowed):
            return None
        return ot, ext_ip

    def _external(self, flow: Flow, fp: _FlowPair) -> None:
        ot, ext_ip = fp.external
        if not flow.initiator_known:
            direction = "exchanged traffic (handshake not seen, opener unknown) with"
        else:
            direction = "opened a connection to" if ot is fp.c_loc else "accepted a connection from"
        who = fp.client if ot is fp.c_loc else fp.server
        self._flow_finding("OTSEC-EXTERNAL-001", flow, fp.client, fp.server, fp.protocol,
                           f"{who.label} in OT zone {ot.zone_name} {direction} {ext_ip} ({fp.protocol}/"
                           f"{flow.server_port}), outside every declared zone")

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


def _outside_write_targets(bounded: tuple[AllowRule, ...], ev: Event) -> str | None:
    """Why a write is not authorised when every conduit rule allowing it bounds its targets
    (None: one rule's targets cover all that it writes)."""
    written = _written(ev)
    if written and any(all(any(w.covers(t) for w in r.write_targets) for t in written) for r in bounded):
        return None
    allowed = ", ".join(str(w) for r in bounded for w in r.write_targets)
    return (f"to {_targets_text(written) or 'an undecoded target'} outside the allowed "
            f"write targets ({allowed})")


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
