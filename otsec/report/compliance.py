"""Assess a site against the NCSC secure connectivity principles for OT (January 2026).

Input: the declared design (a :class:`~otsec.policy.model.Policy`), what the sensor saw
(events and flows, replayed from the database), the findings of the same
:class:`~otsec.detect.checker.Checker` that ``otsec check`` runs, and the stored baseline.
Output: one plain dict (:func:`build`) that the HTML, Markdown and JSON renderers share,
so the three formats carry the same content. Its shape is :data:`otsec.report.schema.SCHEMA`.

How a principle's status is decided (docs/report.md explains each check)::

    check results      pass | fail | info (evidence only) | n/a (nothing to judge)
    any critical check failed                     -> not met
    principle traffic cannot prove (P1, P8)       -> not assessable from traffic
    no check could be judged                      -> not assessable from traffic
    any other check failed                        -> partly met
    otherwise                                     -> met

Suppressed findings never fail a check; they are listed as accepted, with the reason.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from otsec.analysis.inventory import Summary
from otsec.analysis.sides import sides
from otsec.detect.baseline import Baseline
from otsec.detect.checker import Checker
from otsec.model import Event, Flow
from otsec.policy.model import Conduit, Located, Policy, Zone, protocol_name
from otsec.report import source
from otsec.analysis.vendors import mac_vendor
from otsec.report.wording import count

SCHEMA_ID = "otsec-compliance-report/1"
FRAMEWORK = "NCSC secure connectivity principles for operational technology (January 2026)"

#: Status ids and their labels, best first.
STATUS_LABELS = {
    "met": "met",
    "partly_met": "partly met",
    "not_met": "not met",
    "not_assessable": "not assessable from traffic",
}
RESULTS = ("pass", "fail", "info", "n/a")

#: Key of the pseudo-zone for addresses outside every declared zone (not a valid zone name).
OUTSIDE = "(outside)"

#: Matrix state of a declared conduit that carried no traffic: flagged like the conduit table
#: and P2.5 flag it (an open path nobody uses is exposure, or a link the sensor does not see).
UNUSED = "conduit, unused"

#: Remote-access and administration services (flow-layer / policy protocol names).
REMOTE_ACCESS = frozenset({"rdp", "vnc", "ssh", "telnet", "winrm", "smb"})
#: Legacy services that carry credentials or commands in clear text.
LEGACY_CLEARTEXT = frozenset({"telnet", "ftp", "tftp", "http"})
#: Industrial protocols without authentication or encryption on the wire.
CLEARTEXT_OT = frozenset({"modbus", "s7comm"})
#: Services whose payload is protected in transit (TLS or SSH); OPC UA is judged per channel.
PROTECTED = frozenset({"https", "ssh", "ldaps", "rdp", "winrm"})
#: OPC UA security policies the OPC Foundation deprecated (UA 1.04), and no security at all.
OPCUA_DEPRECATED = frozenset({"Basic128Rsa15", "Basic256"})
OPCUA_NO_SECURITY = "None"
#: Finding kinds that breach the declared design (highlighted in the matrix and diagram).
VIOLATION_KINDS = frozenset({"conduit violation", "unsafe operation", "insecure protocol",
                             "external connection"})
#: Identity keys shown as the product and as the firmware, in order of preference.
PRODUCT_KEYS = ("order_number", "product_code", "model_name", "product_name", "module_name",
                "module", "module_type", "application_name", "application_uri")
FIRMWARE_KEYS = ("firmware", "revision")
#: Items listed per check before the rest are counted.
MAX_ITEMS = 50


@dataclass(frozen=True)
class Principle:
    number: int
    title: str
    asks: str                      # what the principle asks, in one sentence
    process: bool                  # True: traffic cannot prove it (it needs documents)
    supply: tuple[str, ...]        # what the user must supply


PRINCIPLES = (
    Principle(1, "Balance the risks and opportunities",
              "Every connection to OT has a documented business need whose risk an accountable "
              "owner has accepted.", True,
              ("A business case for each declared conduit: what it is for and who needs it.",
               "A risk assessment per conduit signed off by the accountable risk owner.",
               "A review date for each connection and evidence of the last review.")),
    Principle(2, "Limit the exposure of your connectivity",
              "Connections are opened from the inside out, never from the internet straight into "
              "OT, and only for as long as they are needed.", False,
              ("The firewall rule base of each boundary (to confirm default deny and that it "
               "matches the conduits).",
               "How remote access is approved, time-limited and authenticated (MFA, just-in-time).",
               "The list of third parties (vendors, cloud services) with connectivity.")),
    Principle(3, "Centralise and standardise network connections",
              "All IT/OT connectivity goes through a small number of managed entry points in a "
              "DMZ, built to a standard pattern.", False,
              ("The standard connection patterns and the architecture of the DMZ.",
               "How a new connection is requested, designed and approved.")),
    Principle(4, "Use standardised and secure protocols",
              "Connections use open, current protocols with authentication and encryption; "
              "legacy cleartext protocols are confined or wrapped.", False,
              ("Certificate management for OPC UA and TLS endpoints (issuer, rotation, revocation).",
               "The upgrade or compensating-control plan for devices that only speak cleartext protocols.")),
    Principle(5, "Harden your OT boundary",
              "The boundary allows only the services on its allow-list and no legacy or IT "
              "administration protocols.", False,
              ("Hardening and patch state of the boundary devices (firewalls, jump hosts).",
               "The allow-list review record of the boundary firewalls.")),
    Principle(6, "Limit the impact of compromise",
              "Segmentation contains an attacker: no lateral paths between cells, and "
              "engineering actions only from authorised stations.", False,
              ("The engineering workstation inventory and how its use is authorised.",
               "Backups of PLC programs and configurations, and how they are verified.")),
    Principle(7, "Ensure all connectivity is logged and monitored",
              "Every connection is visible to monitoring, with a baseline of normal behaviour "
              "to detect change.", False,
              ("Where the sensors are placed and which links they do not see.",
               "Log retention, SIEM forwarding and who responds to alerts, in what time.")),
    Principle(8, "Establish an isolation plan",
              "The site knows what depends on connectivity and can isolate OT in a planned, "
              "practised way.", True,
              ("The isolation plan: triggers, who decides, which devices are switched and how.",
               "Which dependencies must keep working while isolated (time, updates, historian "
               "buffering, remote support) and for how long the site can run isolated.",
               "The date and outcome of the last isolation exercise, and the restoration procedure.")),
)


# --- where things sit ---------------------------------------------------------------------

@dataclass(frozen=True)
class Party:
    """One end of a communication as the design sees it."""

    ip: str
    name: str | None
    zone: str | None
    level: float | None
    role: str | None

    @property
    def area(self) -> str:
        """it (level >= 4), dmz (3.5), ot (<= 3) or outside (no zone)."""
        if self.level is None:
            return "outside"
        if self.level >= 4:
            return "it"
        return "dmz" if self.level == 3.5 else "ot"

    @property
    def zone_key(self) -> str:
        return self.zone or OUTSIDE

    @property
    def label(self) -> str:
        return f"{self.name or self.ip} ({self.zone or 'outside every zone'})"


def party(policy: Policy, ip: str) -> Party:
    loc: Located = policy.locate(ip)
    return Party(ip, loc.asset.name if loc.asset else None, loc.zone_name,
                 loc.zone.level if loc.zone else None, loc.asset.role if loc.asset else None)


@dataclass
class Comm:
    """Every flow and request between one client and one server on one service."""

    client: Party
    server: Party
    protocol: str
    port: int
    transport: str = "tcp"
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    ops: Counter = field(default_factory=Counter)        # op_class -> requests
    functions: Counter = field(default_factory=Counter)  # (op_class, function) -> requests
    findings: list[dict] = field(default_factory=list)   # active findings on it

    @property
    def cross_zone(self) -> bool:
        return self.client.zone_key != self.server.zone_key

    @property
    def service(self) -> str:
        return f"{self.protocol}/{self.port}"

    def text(self) -> str:
        n = f"{self.flows} flow{'s' if self.flows != 1 else ''}" if self.flows else "requests only"
        return f"{self.client.label} -> {self.server.label} {self.service} ({n})"

    def seen(self, ts: float) -> None:
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)


class Evidence:
    """Streaming aggregation of replayed events and flows; bounded by the plant's size."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.summary = Summary()
        self.comms: dict[tuple, Comm] = {}
        self.opcua: dict[tuple, Counter] = defaultdict(Counter)  # (client, server) -> (policy, mode) -> msgs
        self.gaps = 0
        self.flow_anomalies: Counter = Counter()
        self.events = 0
        self.flows = 0

    def comm(self, client_ip: str, server_ip: str, protocol: str, port: int, transport: str = "tcp") -> Comm:
        key = (client_ip, server_ip, protocol, port)
        c = self.comms.get(key)
        if c is None:
            c = self.comms[key] = Comm(party(self.policy, client_ip), party(self.policy, server_ip),
                                       protocol, port, transport)
        return c

    def on_event(self, ev: Event) -> None:
        self.events += 1
        self.summary.add_event(ev)
        sd = sides(ev)
        if sd.protocol == "opcua":
            mode = ev.detail.get("security_mode")
            pol = ev.detail.get("security_policy")
            if mode or pol:
                self.opcua[(sd.client_ip, sd.server_ip)][(pol or "unknown", mode or "unknown")] += 1
        if ev.kind == "request":
            c = self.comm(sd.client_ip, sd.server_ip, sd.protocol, sd.port)
            c.ops[ev.op_class] += 1
            c.functions[(ev.op_class, ev.function)] += 1
            c.seen(ev.ts)

    def on_flow(self, flow: Flow) -> None:
        self.flows += 1
        self.summary.add_flow(flow)
        c = self.comm(flow.client_ip, flow.server_ip, protocol_name(flow.app, flow.server_port),
                      flow.server_port, flow.transport)
        c.flows += 1
        c.packets += flow.packets_c2s + flow.packets_s2c
        c.bytes += flow.bytes_c2s + flow.bytes_s2c
        c.seen(flow.first_ts)
        c.seen(flow.last_ts)
        self.gaps += flow.gaps
        self.flow_anomalies.update(flow.anomalies)


# --- checks --------------------------------------------------------------------------------

@dataclass
class Check:
    id: str
    title: str
    critical: bool
    result: str = "n/a"
    summary: str = ""
    items: list[str] = field(default_factory=list)

    def judge(self, failures: list[str], passed: str, failed: str, items: Iterable[str] = (),
              notes: Iterable[str] = ()) -> "Check":
        """Fail with ``failures`` as items, or pass listing ``items`` as the evidence;
        ``notes`` (accepted exceptions) are listed either way."""
        shown = failures if failures else list(items)
        self.result = "fail" if failures else "pass"
        self.summary = failed.format(n=len(failures)) if failures else passed
        self.items = _capped(shown + list(notes))
        return self

    def info(self, summary: str, items: Iterable[str] = ()) -> "Check":
        self.result, self.summary, self.items = "info", summary, _capped(list(items))
        return self

    def not_applicable(self, summary: str) -> "Check":
        self.result, self.summary = "n/a", summary
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "critical": self.critical, "result": self.result,
                "summary": self.summary, "items": self.items}


def _capped(items: list[str]) -> list[str]:
    if len(items) <= MAX_ITEMS:
        return items
    return items[:MAX_ITEMS] + [f"... and {len(items) - MAX_ITEMS} more"]


def table(title: str, columns: list[str], rows: list[list[str]], flagged: list[bool] | None = None) -> dict:
    return {"title": title, "columns": columns, "rows": rows,
            "flagged": flagged if flagged is not None else [False] * len(rows)}


def decide(principle: Principle, checks: list[Check]) -> tuple[str, str]:
    """Status and the reason for it (the rule in the module docstring)."""
    failed_critical = [c.id for c in checks if c.result == "fail" and c.critical]
    failed = [c.id for c in checks if c.result == "fail" and not c.critical]
    judged = [c for c in checks if c.result in ("pass", "fail")]
    if failed_critical:
        return "not_met", f"critical check(s) failed: {', '.join(failed_critical)}"
    if principle.process:
        return "not_assessable", ("the traffic shows no breach, but this principle is about process and "
                                  "documents the sensor cannot see; supply the items listed")
    if not judged:
        return "not_assessable", "nothing in the observed traffic or the policy could be judged"
    if failed:
        return "partly_met", f"check(s) failed: {', '.join(failed)}"
    return "met", f"all {len(judged)} checks passed on the observed traffic and the declared policy"


# --- the assessment -----------------------------------------------------------------------

class Assessment:
    """Builds the report dict from evidence, findings and the policy."""

    def __init__(self, policy: Policy, ev: Evidence, findings: list[dict], baseline: Baseline | None):
        self.policy = policy
        self.ev = ev
        self.findings = findings
        self.active = [f for f in findings if f["suppressed"] is None]
        self.accepted = [f for f in findings if f["suppressed"] is not None]
        self.baseline = baseline
        self.comms = sorted(ev.comms.values(), key=lambda c: (
            _ip_key(c.client.ip), _ip_key(c.server.ip), c.protocol, c.port))
        index = defaultdict(list)
        for f in self.active:
            dst = f["dst"] or {}
            index[(f["src"]["ip"], dst.get("ip"), f["protocol"], f["port"])].append(f)
        for c in self.comms:
            c.findings = index.get((c.client.ip, c.server.ip, c.protocol, c.port), [])

    # helpers
    def rules_hit(self, prefixes: tuple[str, ...], pred: Callable[[dict], bool] | None = None) -> list[dict]:
        return [f for f in self.active if f["rule"].startswith(prefixes) and (pred is None or pred(f))]

    def accepted_items(self, prefixes: tuple[str, ...]) -> list[str]:
        return [f"accepted by the policy ({f['suppressed']['reason']}): {finding_text(f)}"
                for f in self.accepted if f["rule"].startswith(prefixes)]

    def conduit_of(self, c: Comm) -> Conduit | None:
        if c.client.zone is None or c.server.zone is None or not c.cross_zone:
            return None
        return self.policy.conduit_between(c.client.zone, c.server.zone)

    def boundary(self) -> list[Comm]:
        """Communications between IT/internet and the DMZ/OT (the IT/OT boundary)."""
        return [c for c in self.comms if {c.client.area, c.server.area} & {"it", "outside"}
                and {c.client.area, c.server.area} & {"dmz", "ot"}]

    def cross(self) -> list[Comm]:
        return [c for c in self.comms if c.cross_zone]

    # --- the eight principles ---------------------------------------------------------
    def p1(self) -> tuple[list[Check], list[dict], list[str]]:
        unmapped = self.rules_hit(("OTSEC-CONDUIT-001", "OTSEC-CONDUIT-002", "OTSEC-EXTERNAL-001"))
        rows, flagged = [], []
        for c in self.cross():
            conduit = self.conduit_of(c)
            bad = [f["rule"] for f in c.findings if f["rule"] in (
                "OTSEC-CONDUIT-001", "OTSEC-CONDUIT-002", "OTSEC-EXTERNAL-001")]
            rows.append([c.client.label, c.server.label, c.service, str(c.flows),
                         conduit.name if conduit else "none", ", ".join(bad) or "mapped"])
            flagged.append(bool(bad))
        mapped = [f"{c.text()} on conduit '{self.conduit_of(c).name}'" for c in self.cross()
                  if self.conduit_of(c) is not None]
        chk = Check("P1.1", "Every zone-crossing connection maps to a declared conduit", True).judge(
            [finding_text(f) for f in unmapped],
            f"{len(rows)} zone-crossing communication(s), all on declared conduits",
            "{n} zone-crossing communication(s) with no conduit, against its direction, or to "
            "addresses outside every zone", mapped,
            self.accepted_items(("OTSEC-CONDUIT-001", "OTSEC-CONDUIT-002", "OTSEC-EXTERNAL-001")))
        recs = []
        if unmapped:
            recs.append("For each connection listed under P1.1 decide whether the business needs it: "
                        "declare a conduit with a documented justification and risk owner, or block it.")
        names = ", ".join(sorted(self.policy.conduits)) or "none declared"
        recs.append(f"Record the business case and the accepted risk of each declared conduit ({names}).")
        tables = [table("Zone-crossing communications and their conduits",
                        ["client", "server", "service", "flows", "conduit", "verdict"], rows, flagged)]
        return [chk], tables, recs

    def p2(self) -> tuple[list[Check], list[dict], list[str]]:
        inward = [c for c in self.comms if c.client.area in ("it", "outside") and c.server.area == "ot"]
        ext = self.rules_hit(("OTSEC-EXTERNAL-001",))
        ext_items = []
        for f in ext:
            if "seen" not in f["evidence"]["samples"].get("handshake", {"seen": 1}):
                direction = "direction unknown (handshake not seen)"
            elif f["src"]["zone"]:
                direction = "outbound from OT"
            else:
                direction = "inbound: OT host reachable from outside"
            ext_items.append(f"{direction}: {finding_text(f)}")
        remote = [c for c in self.comms if c.protocol in REMOTE_ACCESS and c.server.area in ("ot", "dmz")
                  and c.cross_zone]
        remote_bad = [c for c in remote if c.server.area == "ot" and c.client.area != "dmz"]
        both = [c for c in self.policy.conduits.values() if c.initiator == "both"]
        used = {self.conduit_of(c).name for c in self.cross() if self.conduit_of(c)}
        unused = [c for c in self.policy.conduits.values() if c.name not in used]
        checks = [
            Check("P2.1", "No connection from the enterprise or the internet straight into OT", True).judge(
                [c.text() for c in inward], "no IT or internet host opened a connection into a zone at level 3 or below",
                "{n} connection(s) opened from IT or the internet straight into OT"),
            Check("P2.2", "No OT or DMZ host talks to addresses outside every zone", True).judge(
                ext_items, "no connection between an OT/DMZ host and an address outside every zone",
                "{n} connection(s) between OT/DMZ hosts and addresses outside every zone",
                notes=self.accepted_items(("OTSEC-EXTERNAL-001",))),
            Check("P2.3", "Remote access into OT is brokered by the DMZ", False).judge(
                [c.text() for c in remote_bad],
                f"{len(remote)} remote-access communication(s) into the DMZ/OT; those reaching OT come from the DMZ",
                "{n} remote-access communication(s) reach OT without passing a DMZ host",
                [c.text() for c in remote]),
            Check("P2.4", "Every conduit opens in one direction only", False).judge(
                [f"conduit '{c.name}' ({' <-> '.join(c.zones)}) lets either side open connections" for c in both],
                f"all {len(self.policy.conduits)} conduits name the zone that initiates",
                "{n} conduit(s) may be opened from either side"),
            Check("P2.5", "Every declared conduit is used", False).judge(
                [f"conduit '{c.name}' ({' -> '.join(c.zones)}) carried no observed traffic" for c in unused],
                f"all {len(self.policy.conduits)} declared conduits carried traffic",
                "{n} declared conduit(s) carried no traffic: each open path is exposure"),
        ]
        if not remote:
            checks[2].not_applicable("no remote-access protocol into the DMZ or OT was observed")
        rows, flagged = [], []
        for c in self.boundary() + [c for c in self.cross() if {c.client.area, c.server.area} == {"dmz", "ot"}]:
            rows.append([f"{c.client.zone or 'outside'} ({c.client.area})", f"{c.server.zone or 'outside'} ({c.server.area})",
                         c.client.name or c.client.ip, c.server.name or c.server.ip, c.service, str(c.flows)])
            flagged.append(bool(c.findings))
        recs = []
        if inward:
            recs.append("Block connections from the enterprise network into OT; route necessary access "
                        "through a DMZ service that OT hosts pull from or a brokered jump host.")
        if ext:
            recs.append("Remove direct internet connectivity of OT hosts; if a vendor cloud is needed, "
                        "proxy it through the DMZ and declare it (rules.external.allowed) with an owner.")
        if remote_bad:
            recs.append("Terminate all remote access on the DMZ jump host with MFA and session recording.")
        if both:
            recs.append("Give each bidirectional conduit a single initiating zone.")
        if unused:
            recs.append("Close the unused conduits in the firewall (or confirm the sensor cannot see them, see P7).")
        if not recs:
            recs.append("Keep the conduits one-directional and time-limit remote access sessions.")
        tables = [table("Connections across the IT/OT boundary, by initiator",
                        ["initiating zone", "responding zone", "client", "server", "service", "flows"], rows, flagged)]
        return checks, tables, recs

    def entry_points(self) -> dict[str, tuple[Party, set[str]]]:
        """OT/DMZ hosts with traffic to or from IT or the internet, and their peers."""
        points: dict[str, tuple[Party, set[str]]] = {}
        for c in self.boundary():
            inner, outer = (c.server, c.client) if c.server.area in ("dmz", "ot") else (c.client, c.server)
            points.setdefault(inner.ip, (inner, set()))[1].add(outer.name or outer.ip)
        return points

    def p3(self) -> tuple[list[Check], list[dict], list[str]]:
        bypass = [c for c in self.boundary() if "ot" in (c.client.area, c.server.area)]
        points = self.entry_points()
        dmz_zones = [z for z in self.policy.zones.values() if z.level == 3.5]
        direct = [c for c in self.policy.conduits.values() if _areas(self.policy, c) == {"it", "ot"}]
        policy_fail = ([] if dmz_zones else ["the policy declares no DMZ zone (level 3.5)"]) + [
            f"conduit '{c.name}' joins {c.zones[0]} and {c.zones[1]} without a DMZ" for c in direct]
        checks = [
            Check("P3.1", "All IT/OT traffic passes through the DMZ", True).judge(
                [c.text() for c in bypass],
                f"{len(points)} IT/OT entry point(s), all in the DMZ",
                "{n} communication(s) between IT/internet and OT bypass the DMZ",
                [f"{p.label} serves {', '.join(sorted(peers))}" for p, peers in points.values()]),
            Check("P3.2", "The design puts a DMZ between IT and OT", False).judge(
                policy_fail, f"DMZ zone(s) {', '.join(z.name for z in dmz_zones)}; no conduit joins IT and OT directly",
                "{n} design gap(s)"),
            Check("P3.3", "IT/OT entry points", False).info(
                f"{len(points)} distinct host(s) inside the DMZ/OT exchange traffic with IT or the internet",
                [f"{p.label}: {'DMZ' if p.area == 'dmz' else 'OT - bypasses the DMZ'}; peers "
                 f"{', '.join(sorted(peers))}" for p, peers in sorted(points.values(), key=lambda x: _ip_key(x[0].ip))]),
        ]
        if not self.boundary():
            checks[0].not_applicable("no traffic between IT/internet and the DMZ/OT was observed")
        recs = []
        if bypass:
            recs.append("Move every IT/OT exchange onto DMZ services (data replication, jump host, patch "
                        "server) so the OT firewall has a single, standard set of rules.")
        if policy_fail:
            recs.append("Introduce a DMZ (level 3.5) and replace direct IT-OT conduits by DMZ-mediated ones.")
        recs.append(f"Keep the number of entry points minimal (now {len(points)}) and build each to a "
                    "documented standard pattern.")
        rows = [[p.label, p.area, ", ".join(sorted(peers))] for p, peers in points.values()]
        tables = [table("IT/OT entry points", ["host", "area", "peers in IT or outside"], rows,
                        [p.area != "dmz" for p, _ in points.values()])]
        return checks, tables, recs

    def p4(self) -> tuple[list[Check], list[dict], list[str]]:
        insecure = self.rules_hit(("OTSEC-INSECURE-001",))
        channels, rows, flagged, weak = [], [], [], []
        for (cip, sip), modes in sorted(self.ev.opcua.items(), key=lambda kv: (_ip_key(kv[0][0]), _ip_key(kv[0][1]))):
            cl, sv = party(self.policy, cip), party(self.policy, sip)
            for (pol, mode), n in sorted(modes.items()):
                if mode == "unknown" and any(p == pol and m != "unknown" for p, m in modes):
                    continue   # the OPN names only the policy; the channel's messages carry the mode
                verdict = opcua_verdict(pol, mode)
                rows.append([cl.label, sv.label, pol, mode, str(n), verdict])
                flagged.append(verdict != "ok")
                channels.append((cl, sv, pol, mode))
                if verdict != "ok":
                    weak.append(f"{cl.label} -> {sv.label}: policy {pol}, mode {mode} ({verdict})")
        clear_ot = [c for c in self.cross() if c.protocol in CLEARTEXT_OT]
        accepted = not self.policy.rules.cleartext_deny
        clear_it = [c for c in self.comms if c.protocol in LEGACY_CLEARTEXT and (
            "ot" in (c.client.area, c.server.area) or (c.cross_zone and "dmz" in (c.client.area, c.server.area)))]
        checks = [
            Check("P4.1", "OPC UA channels meet the security mode their conduit requires", True).judge(
                [finding_text(f) for f in insecure],
                "every OPC UA channel met its conduit's required security mode",
                "{n} OPC UA channel(s) below the required security mode"),
            Check("P4.2", "OPC UA channels are signed and encrypted with a current policy", False).judge(
                weak, f"{len(channels)} OPC UA channel configuration(s), all SignAndEncrypt with a current policy",
                "{n} OPC UA channel configuration(s) with no security, signing only, or a deprecated policy"),
            Check("P4.3", "Industrial protocols crossing zones are protected", False).judge(
                [c.text() + (" - accepted by the policy (rules.cleartext_across_zones.deny: false)"
                             if accepted and self.conduit_of(c) else "") for c in clear_ot],
                "no cleartext industrial protocol (Modbus/TCP, S7comm) crosses a zone boundary",
                "{n} cleartext industrial communication(s) cross a zone boundary"),
            Check("P4.4", "No legacy cleartext IT protocols in or into OT", False).judge(
                [c.text() for c in clear_it], "no Telnet, FTP, TFTP or HTTP touches the OT or crosses into the DMZ",
                "{n} legacy cleartext communication(s) (Telnet/FTP/TFTP/HTTP) in or into OT"),
        ]
        if not self.ev.opcua:
            checks[0].not_applicable("no OPC UA traffic was observed")
            checks[1].not_applicable("no OPC UA traffic was observed")
        inv_rows, inv_flag = [], []
        per: dict[str, Counter] = defaultdict(Counter)
        for c in self.cross():
            conduit = self.conduit_of(c)
            where = f"{conduit.name} ({c.client.zone} -> {c.server.zone})" if conduit else \
                f"no conduit ({c.client.zone or 'outside'} -> {c.server.zone or 'outside'})"
            per[where][c.service] += max(c.flows, 1)
        for where, services in sorted(per.items()):
            for svc, n in sorted(services.items()):
                proto = svc.split("/")[0]
                inv_rows.append([where, svc, str(n), protection(proto)])
                inv_flag.append(where.startswith("no conduit") or protection(proto) == "cleartext")
        recs = []
        if insecure or weak:
            recs.append("Configure OPC UA servers to offer only SignAndEncrypt with Basic256Sha256, "
                        "Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss, and remove the None endpoint.")
        if clear_ot:
            recs.append("Protect the cleartext industrial links that cross zones: Modbus/TCP Security "
                        "(TLS, port 802), S7comm-plus with TLS on current firmware, or an encrypting "
                        "conduit (IPsec/MACsec) between the zones.")
        if clear_it:
            recs.append("Replace Telnet/FTP/TFTP/HTTP to OT devices by SSH, SFTP and HTTPS, or disable them.")
        if not recs:
            recs.append("Keep the protocol inventory under review as devices are added.")
        tables = [table("Protocol inventory per conduit", ["conduit (zones)", "service", "flows", "protection"],
                        inv_rows, inv_flag)]
        if rows:
            tables.append(table("OPC UA secure channels", ["client", "server", "security policy", "security mode",
                                                           "messages", "assessment"], rows, flagged))
        return checks, tables, recs

    def p5(self) -> tuple[list[Check], list[dict], list[str]]:
        conduit_f = self.rules_hit(("OTSEC-CONDUIT-",))
        admin = self.rules_hit(("OTSEC-INSECURE-003",))
        legacy = [c for c in self.comms if c.protocol in ("telnet", "ftp", "tftp") and c.server.area == "ot"
                  and not any(f["rule"] == "OTSEC-INSECURE-003" for f in c.findings)]
        checks = [
            Check("P5.1", "Services reached across zone boundaries are on the conduit allow-lists", True).judge(
                [finding_text(f) for f in conduit_f],
                "every service reached across a zone boundary is allowed by its conduit",
                "{n} zone-crossing communication(s) outside the allow-lists",
                notes=self.accepted_items(("OTSEC-CONDUIT-",))),
            Check("P5.2", "No legacy or IT administration protocols into the control levels", True).judge(
                [finding_text(f) for f in admin] + [c.text() for c in legacy],
                f"no {'/'.join(self.policy.rules.it_admin_protocols)} into level "
                f"{self.policy.rules.it_admin_max_level:g} or below, no Telnet/FTP/TFTP to OT hosts",
                "{n} legacy or IT administration connection(s) into the control levels"),
        ]
        rows, flagged = [], []
        services: dict[tuple, list] = {}
        for c in self.cross():
            services.setdefault((c.server.ip, c.service), [c.server, set(), set()])
            services[(c.server.ip, c.service)][1].add(c.client.name or c.client.ip)
            services[(c.server.ip, c.service)][2].update(f["rule"] for f in c.findings if f["rule"].startswith("OTSEC-CONDUIT-"))
        for (ip, svc), (srv, clients, bad) in sorted(services.items(), key=lambda kv: (_ip_key(kv[0][0]), kv[0][1])):
            rows.append([srv.label, svc, ", ".join(sorted(clients)), "not allowed: " + ", ".join(sorted(bad)) if bad else "allowed"])
            flagged.append(bool(bad))
        recs = []
        if conduit_f:
            recs.append("Tighten the boundary firewalls to the conduit allow-lists (source, destination, "
                        "port and, with an industrial-protocol-aware firewall, operation class).")
        if admin or legacy:
            recs.append("Disable Telnet/FTP/TFTP on OT devices and allow administration protocols only from "
                        "the DMZ jump host to level 3.")
        if not recs:
            recs.append("Review the allow-lists periodically against this service list.")
        tables = [table("Services reached across zone boundaries", ["server", "service", "clients", "allow-list"],
                        rows, flagged)]
        return checks, tables, recs

    def p6(self) -> tuple[list[Check], list[dict], list[str]]:
        lateral = self.rules_hit(("OTSEC-CONDUIT-001", "OTSEC-CONDUIT-004"))
        eng = self.rules_hit(("OTSEC-UNSAFE-002", "OTSEC-UNSAFE-003"))
        writes = self.rules_hit(("OTSEC-UNSAFE-001", "OTSEC-UNSAFE-004"))
        devices = self.rules_hit(("OTSEC-DEVICE-001",), lambda f: _zone_area(self.policy, f["src"]["zone"]) in ("ot", "dmz"))
        rules = self.policy.rules
        rows, flagged = [], []
        for c in self.comms:
            for (op, fn), n in sorted(c.functions.items()):
                if op not in ("program", "control"):
                    continue
                roles = rules.program_roles if op == "program" else rules.control_roles
                ok = c.client.role in roles or (c.client.name is not None and c.client.name in roles)
                rows.append([c.client.label, c.client.role or "undeclared", c.server.label, fn, op, str(n),
                             "authorised station" if ok else "not an authorised station"])
                flagged.append(not ok)
        checks = [
            Check("P6.1", "No lateral paths between zones or to hosts the conduits do not list", True).judge(
                [finding_text(f) for f in lateral], "all zone-crossing traffic follows declared conduits between declared hosts",
                "{n} lateral path(s) outside the conduits"),
            Check("P6.2", "Engineering actions come only from authorised engineering stations", True).judge(
                [finding_text(f) for f in eng],
                f"{len(rows)} engineering action type(s) observed, all from authorised stations",
                "{n} engineering action(s) (program/control) from unauthorised stations"),
            Check("P6.3", "Writes stay within the authorised targets", False).judge(
                [finding_text(f) for f in writes], "no write outside the authorised targets",
                "{n} unauthorised write(s) or unsafe function(s)"),
            Check("P6.4", "No unknown devices in the DMZ or OT zones", False).judge(
                [finding_text(f) for f in devices], "every device seen in the DMZ/OT zones is declared or in the baseline",
                "{n} unknown device(s) in the DMZ/OT zones"),
        ]
        recs = []
        if lateral:
            recs.append("Enforce the zone boundaries (firewall or VLAN ACLs) so hosts outside a conduit's "
                        "source list cannot reach the cell.")
        if eng:
            recs.append("Allow program/control operations (download, PLC stop) only from the engineering "
                        "workstations, enable the PLC's access protection and keep the run switch in RUN.")
        if writes:
            recs.append("Restrict write access on the PLCs/servers to the authorised address ranges and nodes.")
        if devices:
            recs.append("Identify the unknown devices; enable port security/802.1X on OT switches.")
        if not recs:
            recs.append("Keep engineering access limited to the declared workstations and review it after changes.")
        tables = [table("Engineering actions observed (program / control)",
                        ["client", "declared role", "server", "function", "class", "requests", "assessment"],
                        rows, flagged)]
        return checks, tables, recs

    def p7(self, captures: list[dict], runs_without_traffic: int) -> tuple[list[Check], list[dict], list[str]]:
        seen_zones: dict[str, set[str]] = defaultdict(set)
        for ip, host in self.ev.summary.hosts.items():
            z = party(self.policy, ip).zone
            if z:
                seen_zones[z].add(ip)
        unseen = [z for z in self.policy.zones if z not in seen_zones]
        used = {self.conduit_of(c).name for c in self.cross() if self.conduit_of(c)}
        conduit_items = [f"{c.name}: {'traffic seen' if c.name in used else 'no traffic seen (unused, or the sensor does not see this link)'}"
                         for c in self.policy.conduits.values()]
        problems = []
        if self.ev.gaps:
            problems.append(f"{self.ev.gaps} capture gap(s) (missing TCP bytes): the sensor dropped packets")
        for cap in captures:
            if cap["error"]:
                problems.append(f"{cap['path']}: {cap['error']}")
        for flag, n in sorted(self.ev.flow_anomalies.items()):
            problems.append(f"{n} flow(s) with '{flag}'")
        if runs_without_traffic:
            problems.append(f"{runs_without_traffic} stored check run(s) without their traffic: only their "
                            "findings are in this report (run otsec analyze --db on those captures)")
        first = min((c["first_ts"] for c in captures if c["first_ts"] is not None), default=None)
        last = max((c["last_ts"] for c in captures if c["last_ts"] is not None), default=None)
        span = [f"{count(len(captures), 'capture')}, {count(self.ev.flows, 'flow')}, {count(self.ev.events, 'decoded message')}"]
        if first is not None and last is not None:
            span.append(f"from {_time(first)} to {_time(last)} ({_duration(last - first)})")
        keys = {(c.client.ip, c.server.ip, c.protocol, c.port) for c in self.comms}
        checks = [
            Check("P7.1", "The sensor sees every declared zone", False).judge(
                [f"zone '{z}': no host seen" for z in unseen],
                f"hosts seen in all {len(self.policy.zones)} declared zones",
                "{n} declared zone(s) not seen by the sensor",
                [f"{z}: {len(ips)} host(s)" for z, ips in sorted(seen_zones.items())]),
            Check("P7.2", "Conduits with observed traffic", False).info(
                f"{len(used)} of {len(self.policy.conduits)} declared conduits carried traffic", conduit_items),
            Check("P7.3", "Complete capture: no gaps, drops or damaged files", False).judge(
                problems, "no capture gaps, dropped packets or damaged capture files", "{n} capture problem(s)", span),
        ]
        if self.baseline is None or not self.baseline.entries:
            checks.append(Check("P7.4", "A baseline of normal communications exists", False).judge(
                ["no baseline stored: new-communication detection is off (otsec baseline learn)"], "", "no baseline"))
        else:
            covered = {k for k in keys if any(
                e.src_ip == k[0] and e.dst_ip == k[1] and e.protocol == k[2] and e.port == k[3]
                for e in self._baseline_index().get((k[0], k[1]), ()))}
            pct = 100.0 * len(covered) / len(keys) if keys else 100.0
            new = sorted(c.text() for c in self.comms if (c.client.ip, c.server.ip, c.protocol, c.port) not in covered)
            checks.append(Check("P7.4", "A baseline of normal communications exists", False).judge(
                [], f"baseline of {len(self.baseline.entries)} communications and {len(self.baseline.devices)} "
                    f"devices; it covers {len(covered)} of {len(keys)} observed communications ({pct:.0f}%)",
                "", [f"not in the baseline: {t}" for t in new]))
        recs = []
        if unseen:
            recs.append("Add sensor coverage (SPAN/TAP) for the zones the sensor does not see.")
        if problems:
            recs.append("Fix the capture losses (SPAN oversubscription, ring buffer size) so monitoring is complete.")
        if self.baseline is None or not self.baseline.entries:
            recs.append("Learn a baseline from a normal operating period (otsec baseline learn) and check against it.")
        recs.append("Run the sensor continuously and forward its findings to the SIEM with an owner for each alert.")
        zone_rows = [[z.name, f"{z.level:g}", str(len(seen_zones.get(z.name, ()))), "seen" if z.name in seen_zones else "not seen"]
                     for z in sorted(self.policy.zones.values(), key=lambda z: -z.level)]
        tables = [table("Sensor coverage per zone", ["zone", "level", "hosts seen", "coverage"], zone_rows,
                        [r[3] == "not seen" for r in zone_rows])]
        return checks, tables, recs

    def _baseline_index(self) -> dict[tuple[str, str], list]:
        if not hasattr(self, "_bindex"):
            idx: dict[tuple[str, str], list] = defaultdict(list)
            for k in self.baseline.entries:
                idx[(k.src_ip, k.dst_ip)].append(k)
            self._bindex = idx
        return self._bindex

    def p8(self) -> tuple[list[Check], list[dict], list[str]]:
        undeclared = self.rules_hit(("OTSEC-CONDUIT-001", "OTSEC-CONDUIT-002", "OTSEC-EXTERNAL-001"),
                                    lambda f: "ot" in (_zone_area(self.policy, f["src"]["zone"]),
                                                       _zone_area(self.policy, (f["dst"] or {}).get("zone"))))
        deps = [c for c in self.cross() if c.client.area != c.server.area]
        rows, flagged = [], []
        for c in deps:
            areas = {c.client.area, c.server.area}
            cut = "OT boundary" if "ot" in areas else "IT/DMZ boundary"
            conduit = self.conduit_of(c)
            rows.append([c.client.label, c.server.label, c.service, str(c.flows), cut,
                         conduit.name if conduit else "undeclared"])
            flagged.append(conduit is None)
        checks = [
            Check("P8.1", "Every dependency across the OT boundary is declared", True).judge(
                [finding_text(f) for f in undeclared],
                f"{len(deps)} dependency(ies) across the IT/DMZ/OT boundaries, all on declared conduits",
                "{n} undeclared dependency(ies) across the OT boundary: an isolation plan built from the "
                "design would miss them"),
            Check("P8.2", "What an isolation would cut", False).info(
                f"{len(deps)} communication(s) cross the IT/DMZ/OT boundaries", [c.text() for c in deps]),
        ]
        recs = ["Write down, for each dependency in the table, what happens to the process when it is cut "
                "and how the site keeps running (local time source, buffering, local engineering)."]
        if undeclared:
            recs.insert(0, "Remove or declare the undeclared dependencies before relying on an isolation plan.")
        tables = [table("Dependencies an isolation would cut",
                        ["client", "server", "service", "flows", "cut at", "conduit"], rows, flagged)]
        return checks, tables, recs

    # --- inventory, matrix, diagram ---------------------------------------------------
    def assets(self) -> list[dict]:
        """Declared assets, then undeclared hosts seen; identity observed now completes the
        identity the baseline learned (e.g. firmware read during the learning period)."""
        hosts = {h["ip"]: h for h in self.ev.summary.report({}, [])["hosts"]}
        for ip, dev in (self.baseline.devices.items() if self.baseline else ()):
            if ip in hosts and dev.identity:
                hosts[ip]["identity"] = {**dev.identity, **hosts[ip]["identity"]}
        out = []
        declared_ips = set()
        for a in self.policy.assets.values():
            if a.ip:
                declared_ips.add(a.ip)
            h = hosts.get(a.ip or "")
            out.append(_asset_row(self.policy, a.ip, a.name, a.zone, a.role, a.criticality, h))
        for ip, h in hosts.items():
            if ip in declared_ips:
                continue
            p = party(self.policy, ip)
            out.append(_asset_row(self.policy, ip, None, p.zone, None, None, h))
        order = {z: -self.policy.zones[z].level for z in self.policy.zones}
        out.sort(key=lambda r: (order.get(r["zone"], 1), _ip_key(r["ip"] or "")))
        return out

    def zone_order(self) -> list[str]:
        zones = [z.name for z in sorted(self.policy.zones.values(), key=lambda z: (-z.level, z.name))]
        if any(c.client.zone is None or c.server.zone is None for c in self.comms):
            zones.append(OUTSIDE)
        return zones

    def matrix(self) -> dict:
        zones = self.zone_order()
        cells = []
        observed: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for c in self.comms:
            observed[(c.client.zone_key, c.server.zone_key)][c.service] += max(c.flows, 1)
        viol: dict[tuple[str, str], set] = defaultdict(set)
        for f in self.active:
            if f["kind"] in VIOLATION_KINDS and f["dst"] is not None:
                viol[(f["src"]["zone"] or OUTSIDE, f["dst"]["zone"] or OUTSIDE)].add(f["rule"])
        for a in zones:
            for b in zones:
                conduit = None if a == b or OUTSIDE in (a, b) else self.policy.conduit_between(a, b)
                allowed = conduit is not None and conduit.initiator in ("both", a)
                obs = observed.get((a, b), Counter())
                rules = sorted(viol.get((a, b), ()))
                if rules:
                    state = "violation"
                elif a == b:
                    state = "intra-zone"
                elif allowed and obs:
                    state = "allowed, used"
                elif allowed:
                    state = UNUSED
                elif obs:
                    state = "observed, not allowed"
                else:
                    state = "denied"
                cells.append({"from": a, "to": b, "conduit": conduit.name if conduit else None,
                              "allowed": allowed, "observed_flows": sum(obs.values()),
                              "services": sorted(obs), "violations": len(rules), "violation_rules": rules,
                              "state": state})
        return {"zones": zones, "cells": cells}

    def conduits(self) -> list[dict]:
        flows = Counter()
        for c in self.cross():
            conduit = self.conduit_of(c)
            if conduit:
                flows[conduit.name] += c.flows
        out = []
        for c in self.policy.conduits.values():
            out.append({"name": c.name, "zones": list(c.zones), "initiator": c.initiator,
                        "allow": [allow_text(r) for r in c.allow], "description": c.description,
                        "observed_flows": flows.get(c.name, 0), "used": flows.get(c.name, 0) > 0})
        return out

    def diagram(self, matrix: dict) -> dict:
        nodes = []
        for name in matrix["zones"]:
            if name == OUTSIDE:
                nodes.append({"id": name, "label": "outside every zone", "level": None, "detail": "internet / undeclared"})
                continue
            z: Zone = self.policy.zones[name]
            nets = ", ".join(str(n) for n in z.cidrs)
            sl = f", SL-T {z.sl_t}" if z.sl_t else ""
            nodes.append({"id": name, "label": name, "level": z.level, "detail": f"level {z.level:g}{sl}; {nets}".strip("; ")})
        edges = []
        for cell in matrix["cells"]:
            if cell["from"] == cell["to"]:
                continue
            if cell["observed_flows"]:
                label = ", ".join(cell["services"][:4]) + (" ..." if len(cell["services"]) > 4 else "")
                edges.append({"from": cell["from"], "to": cell["to"], "kind": "observed",
                              "label": f"{label} ({cell['observed_flows']})", "conduit": cell["conduit"],
                              "violation": cell["violations"] > 0})
            elif cell["allowed"]:
                edges.append({"from": cell["from"], "to": cell["to"], "kind": "declared",
                              "label": f"{cell['conduit']} (unused)", "conduit": cell["conduit"],
                              "violation": False})
        return {"nodes": nodes, "edges": edges}


# --- helpers ------------------------------------------------------------------------------

def _areas(policy: Policy, c: Conduit) -> set[str]:
    return {_zone_area(policy, z) for z in c.zones}


def _zone_area(policy: Policy, zone: str | None) -> str:
    z = policy.zones.get(zone or "")
    if z is None:
        return "outside"
    return "it" if z.level >= 4 else ("dmz" if z.level == 3.5 else "ot")


def opcua_verdict(policy: str, mode: str) -> str:
    if policy == OPCUA_NO_SECURITY or mode == "None":
        return "no security"
    if policy in OPCUA_DEPRECATED:
        return "deprecated policy"
    if mode in ("Sign", "NoneOrSign"):
        return "signed only" if mode == "Sign" else "not encrypted"
    if mode == "SignAndEncrypt":
        return "ok"
    return "unknown"


def protection(protocol: str) -> str:
    if protocol in CLEARTEXT_OT or protocol in LEGACY_CLEARTEXT:
        return "cleartext"
    if protocol in PROTECTED:
        return "encrypted"
    if protocol == "opcua":
        return "per channel (see OPC UA table)"
    return "unknown"


def allow_text(r) -> str:
    parts = [r.protocol + (f"/{','.join(map(str, r.ports))}" if r.ports else "")]
    if r.operations:
        parts.append(" ".join(r.operations))
    if r.sources or r.destinations:
        parts.append(f"{','.join(r.sources) or 'any'} -> {','.join(r.destinations) or 'any'}")
    if r.write_targets:
        parts.append("writes: " + ", ".join(str(w) for w in r.write_targets))
    if r.opcua_security_mode:
        parts.append(f"requires {r.opcua_security_mode}")
    return "; ".join(parts)


def finding_text(f: dict) -> str:
    return f"{f['rule']} ({f['severity']}): {f['explanation']} [{f['evidence']['count']}x]"


def _asset_row(policy: Policy, ip, name, zone, role, criticality, h: dict | None) -> dict:
    identity = dict((h or {}).get("identity") or {})
    macs = list((h or {}).get("macs") or [])
    vendor = identity.get("vendor") or (h or {}).get("vendor") or next(
        (v for v in map(mac_vendor, macs) if v), None)
    status = ("declared, seen" if h else "declared, not seen") if name else "undeclared"
    return {
        "ip": ip, "name": name, "zone": zone, "declared_role": role, "criticality": criticality,
        "observed_role": (h or {}).get("role"), "role_evidence": (h or {}).get("role_evidence"),
        "vendor": vendor, "product": next((identity[k] for k in PRODUCT_KEYS if identity.get(k)), None),
        "firmware": next((identity[k] for k in FIRMWARE_KEYS if identity.get(k)), None),
        "identity": {str(k): str(v) for k, v in identity.items()}, "macs": macs,
        "flows": (h or {}).get("flows", 0), "status": status,
    }


def _ip_key(ip: str) -> tuple:
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a))
    except ValueError:
        return (9, 0, ip)


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def build(policy: Policy, evidence: Evidence, findings: list[dict], baseline: Baseline | None, *,
          captures: list[dict], policy_path: str, site_name: str | None = None,
          stored_runs: list[dict] | None = None, generated_at: str | None = None) -> dict:
    """The whole report as plain data (see :data:`otsec.report.schema.SCHEMA`)."""
    a = Assessment(policy, evidence, findings, baseline)
    stored_runs = stored_runs or []
    parts = {1: a.p1, 2: a.p2, 3: a.p3, 4: a.p4, 5: a.p5, 6: a.p6,
             7: lambda: a.p7(captures, len(stored_runs)), 8: a.p8}
    principles = []
    for p in PRINCIPLES:
        checks, tables, recs = parts[p.number]()
        status, reason = decide(p, checks)
        principles.append({
            "number": p.number, "title": p.title, "asks": p.asks, "traffic_can_prove": not p.process,
            "status": status, "status_label": STATUS_LABELS[status], "status_reason": reason,
            "checks": [c.to_dict() for c in checks], "tables": tables, "recommendations": recs,
            "user_must_supply": list(p.supply),
        })
    matrix = a.matrix()
    firsts = [c["first_ts"] for c in captures if c["first_ts"] is not None]
    lasts = [c["last_ts"] for c in captures if c["last_ts"] is not None]
    return {
        "schema": SCHEMA_ID,
        "framework": FRAMEWORK,
        "generated_at": generated_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "site": {"name": site_name or policy_path, "policy": policy_path,
                 "zones": len(policy.zones), "assets": len(policy.assets), "conduits": len(policy.conduits)},
        "scope": {
            "captures": captures, "stored_check_runs": stored_runs,
            "first_ts": min(firsts) if firsts else None, "last_ts": max(lasts) if lasts else None,
            "flows": evidence.flows, "events": evidence.events,
            "baseline": None if baseline is None else {"communications": len(baseline.entries),
                                                       "devices": len(baseline.devices)},
        },
        "overall": {s: sum(1 for p in principles if p["status"] == s) for s in STATUS_LABELS},
        "principles": principles,
        "assets": a.assets(),
        "conduits": a.conduits(),
        "conduit_matrix": matrix,
        "diagram": a.diagram(matrix),
        "findings": findings,
    }



def from_db(db, policy: Policy, baseline: Baseline | None, *, policy_path: str,
            capture_ids: list[int] | None = None, site_name: str | None = None,
            generated_at: str | None = None) -> dict:
    """Replay the stored traffic (all, or the given captures) through the evidence
    aggregator and the checker, add stored findings that have no traffic, and build."""
    caps = source.captures(db, capture_ids)
    evidence = Evidence(policy)
    checker = Checker(policy, baseline)
    for cap in caps:
        checker.capture = cap.path
        for ev in source.iter_events(db, cap):
            evidence.on_event(ev)
            checker.on_event(ev)
        for flow in source.iter_flows(db, cap):
            evidence.on_flow(flow)
            checker.on_flow(flow)
    findings = [f.to_dict() for f in checker.finish()]
    runs = source.StoredRuns() if capture_ids is not None else source.stored_runs(db, {c.path for c in caps})
    findings += runs.findings
    return build(policy, evidence, findings, baseline, captures=[c.to_dict() for c in caps],
                 policy_path=policy_path, site_name=site_name, stored_runs=runs.runs,
                 generated_at=generated_at)
