"""What a capture shows: hosts and their roles, who talks to whom, function tables.

:class:`Summary` is a streaming aggregator: it takes events and flows one at a time and
keeps only per-host, per-pair and per-function counters, so its memory grows with the
size of the plant, not of the capture.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from otsec.analysis.tally import BY_CLIENT, Tally, add_counts
from otsec.model import Event, Flow
from otsec.analysis.vendors import mac_vendor

#: Protocols whose server side is a controller (PLC/RTU) rather than a general server.
CONTROLLER_PROTOCOLS = frozenset({"modbus", "s7comm", "s7comm-plus"})
#: Who-talks-to-whom counts a transport's connection setup under the protocol it carries.
TRANSPORT_OF = {"cotp": "s7comm"}
#: Identity keys that only a controller reports about itself.
CONTROLLER_IDENTITY_KEYS = frozenset({"order_number", "module", "product_code", "firmware"})
ROLES = ("plc", "engineering_workstation", "hmi", "historian", "scanner", "server", "unknown")
#: A client whose requests were mostly rejected (exception/error answers) is probing, not
#: operating: at least this many requests, at least half of them rejected.
SCANNER_MIN_REQUESTS = 5


#: Virtual-router MAC prefixes (VRRP, HSRP v1/v2): such a MAC is a gateway's, never a host's.
VIRTUAL_ROUTER_PREFIXES = ("00:00:5e:00:01:", "00:00:5e:00:02:", "00:00:0c:07:ac:", "00:00:0c:9f:f")
#: A MAC seen for more IP addresses than this belongs to a router, not to those hosts.
MAX_IPS_PER_HOST_MAC = 2


@dataclass
class Host:
    ip: str
    macs: set[str] = field(default_factory=set)
    identity: dict[str, str] = field(default_factory=dict)
    served: Counter = field(default_factory=Counter)       # protocol -> messages answered as server
    used: Counter = field(default_factory=Counter)         # protocol -> requests sent as client
    sent_classes: Counter = field(default_factory=Counter)  # op_class of requests this host sent
    peers_as_client: set[str] = field(default_factory=set)  # controllers/servers it queried
    clients: set[str] = field(default_factory=set)
    rejected: int = 0                                        # its requests answered with an exception/error
    flows: int = 0
    identity_at: dict[str, tuple] = field(default_factory=dict)  # field -> (ts, packet, value) shown

    def learn_identity(self, fields: dict, when: tuple) -> None:
        """Keep the latest value of each identity field, by capture time and packet (ties:
        the larger value), so that the result does not depend on the order in which
        events or --jobs shards arrive."""
        for key, value in fields.items():
            if value:
                seen = (*when, str(value))   # comparable whatever a decoder put there
                if seen > self.identity_at.get(key, ()):
                    self.identity_at[key] = seen
                    self.identity[key] = seen[-1]

    def absorb(self, other: "Host") -> None:
        """Add what another record of this host holds (a --jobs shard's, or what flows
        and identities said of it)."""
        self.macs |= other.macs
        for key, (ts, packet, value) in other.identity_at.items():
            self.learn_identity({key: value}, (ts, packet))
        self.served.update(other.served)
        self.used.update(other.used)
        self.sent_classes.update(other.sent_classes)
        self.peers_as_client |= other.peers_as_client
        self.clients |= other.clients
        self.rejected += other.rejected
        self.flows += other.flows

    def role(self) -> tuple[str, str]:
        """Inferred role and the evidence for it."""
        # A PLC mostly answers; an S7 engineering station also answers the PLC's own
        # "download block" jobs during a download, so compare both directions.
        answered = sum(n for p, n in self.served.items() if p in CONTROLLER_PROTOCOLS)
        asked = sum(n for p, n in self.used.items() if p in CONTROLLER_PROTOCOLS)
        if answered > asked or CONTROLLER_IDENTITY_KEYS & self.identity.keys():
            what = ", ".join(sorted(p for p in self.served if p in CONTROLLER_PROTOCOLS))
            return "plc", f"answers {what or 'controller'} requests"
        sent = self.sent_classes
        requests = sum(self.used.values())
        if requests >= SCANNER_MIN_REQUESTS and 2 * self.rejected >= requests:
            return "scanner", f"{self.rejected} of its {requests} requests were rejected"
        ot_used = sorted(p for p in self.used if p in CONTROLLER_PROTOCOLS)
        if sent["program"] or (sent["control"] and not sent["write"]):
            return "engineering_workstation", (
                f"sent {sent['program']} program and {sent['control']} control operations")
        if ot_used and not (sent["read"] or sent["write"]) and (sent["identify"] or sent["diagnostic"]):
            return "engineering_workstation", "queries controller identity and diagnostics only"
        if ot_used and sent["write"]:
            return "hmi", f"reads and writes process values over {', '.join(ot_used)}"
        if self.used.get("opcua") or (ot_used and len(self.peers_as_client) >= 3):
            return "historian", f"collects data from {len(self.peers_as_client)} server(s)"
        if ot_used:
            return "hmi", f"polls {', '.join(ot_used)}"
        if self.served:
            return "server", f"serves {', '.join(sorted(self.served))}"
        return "unknown", "no industrial protocol role observed"


class Summary:
    """Streaming aggregation of events and flows into the analyze report.

    Events are counted by key (see :mod:`otsec.analysis.tally`): per sender and MAC, per
    function, and who asked whom for what (requests) and with what result (responses),
    each oriented by its connection; flows per application and per client and server. The
    hosts, who-talks-to-whom, function and security tables are derived from those counts
    when the report asks; what a count cannot hold (identities, anomaly flags) is kept in
    ``known`` hosts and ``anomalies`` as it comes."""

    TALLY = Tally(
        keys=(("src_ip", "src_mac"),
              ("protocol", "function_code", "function", "kind", "result", "detail.security_mode"),
              ("src_ip", "dst_ip", BY_CLIENT, "protocol", "op_class"),
              ("src_ip", "dst_ip", BY_CLIENT, "protocol", "result")),
        when=(None, None, ("kind", "request"), ("kind", "response")),
        apart=("identity", "anomalies"))
    #: Flows: per application, and per client and server with their MACs.
    FLOW_TALLY = Tally(keys=(("app",), ("client_ip", "client_mac"), ("server_ip", "server_mac")),
                       record=Flow)
    _count = staticmethod(TALLY.counter())
    _count_flow = staticmethod(FLOW_TALLY.counter())

    def __init__(self) -> None:
        #: per TALLY (FLOW_TALLY) key: key tuple -> events (flows); the compiled flow layer
        #: adds to these dicts
        self.counts = self.TALLY.counters()
        self.flow_counts = self.FLOW_TALLY.counters()
        #: what identities said of hosts; the counts are added by hosts
        self.known: dict[str, Host] = {}
        self.anomalies: Counter = Counter()

    def _known(self, ip: str) -> Host:
        host = self.known.get(ip)
        if host is None:
            host = self.known[ip] = Host(ip)
        return host

    def add_event(self, ev: Event) -> None:
        if self._count(self.counts, ev):
            self.add_apart(ev)

    def add_apart(self, ev: Event) -> None:
        """What the counts of an event cannot hold: the identity its sender reveals and
        its anomaly flags."""
        if ev.identity:
            self._known(ev.src_ip).learn_identity(ev.identity, (ev.ts, ev.packet))
        for flag in ev.anomalies:
            self.anomalies[flag] += 1

    def add_flow(self, flow: Flow) -> None:
        self._count_flow(self.flow_counts, flow)

    @property
    def events(self) -> int:
        return sum(self.counts[1].values())

    @property
    def flows(self) -> int:
        return sum(self.flow_counts[0].values())

    @property
    def apps(self) -> Counter:
        """Flows per application, in the order the applications were first seen."""
        return Counter({app: n for (app,), n in self.flow_counts[0].items()})

    @property
    def hosts(self) -> dict[str, Host]:
        """Every host, with its counts: each sender, and each side of the connections
        whose requests (and rejected requests) were seen. Who asks whom for what follows
        the connection's client and server: the "Download block" jobs an S7 PLC sends
        during a download are the engineering station's operation, as in ``otsec check``."""
        return self._hosts(self.pairs)

    def _hosts(self, pairs: dict[tuple[str, str, str], Counter]) -> dict[str, Host]:
        hosts: dict[str, Host] = {}

        def host(ip: str) -> Host:
            h = hosts.get(ip)
            if h is None:
                h = hosts[ip] = Host(ip)
                known = self.known.get(ip)
                if known is not None:
                    h.absorb(known)
            return h

        senders, _, _, responses = self.counts
        for src_ip, src_mac in senders:
            sender = host(src_ip)
            if src_mac:
                sender.macs.add(src_mac)
        for (client, server, protocol), classes in pairs.items():
            asker = host(client)
            asker.used[protocol] += sum(classes.values())
            asker.sent_classes.update(classes)
            asker.peers_as_client.add(server)
            host(server).clients.add(client)
        for (*ends, result), n in responses.items():
            client, server, protocol = _oriented(*ends)
            host(server).served[protocol] += n
            if result in ("exception", "error"):
                host(client).rejected += n
        for sides in self.flow_counts[1:]:
            for (ip, mac), n in sides.items():
                if _group_address(ip):
                    continue  # multicast/broadcast destinations are not hosts
                h = host(ip)
                h.flows += n
                if mac:
                    h.macs.add(mac)
        for ip in self.known.keys() - hosts.keys():
            host(ip)
        return hosts

    @property
    def pairs(self) -> dict[tuple[str, str, str], Counter]:
        """(client, server, protocol) -> requests per operation class."""
        pairs: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
        for (*ends, op_class), n in self.counts[2].items():
            pairs[_oriented(*ends)][op_class] += n
        return pairs

    @property
    def functions(self) -> dict[tuple[str, int | None, str], Counter]:
        """(protocol, code, name) -> requests, responses, exceptions, notifications."""
        functions: dict[tuple[str, int | None, str], Counter] = defaultdict(Counter)
        for (protocol, code, name, kind, result, _), n in self.counts[1].items():
            fn = functions[(protocol, code, name)]
            if kind == "request":
                fn["requests"] += n
            elif kind == "response":
                fn["responses"] += n
                if result in ("exception", "error"):
                    fn["exceptions"] += n
            else:
                fn["notifications"] += n
        return functions

    @property
    def security(self) -> Counter:
        """OPC UA messages per security mode."""
        security: Counter = Counter()
        for (protocol, _, _, _, _, mode), n in self.counts[1].items():
            if protocol == "opcua" and mode:
                security[f"opcua {mode}"] += n
        return security

    def function_table(self) -> dict[str, list[dict]]:
        """Per protocol, one row per function name: a request and its response are one row
        even where they have different codes (OPC UA encodes each with its own node id);
        the row shows the lowest code seen (the request's)."""
        rows: dict[tuple[str, str], dict] = {}
        for (proto, code, name), c in self.functions.items():
            row = rows.setdefault((proto, name), {"code": None, "function": name, "count": 0, "requests": 0,
                                                 "responses": 0, "exceptions": 0, "notifications": 0})
            if code is not None and (row["code"] is None or code < row["code"]):
                row["code"] = code
            for key in ("requests", "responses", "exceptions", "notifications"):
                row[key] += c[key]
            row["count"] += c["requests"] + c["responses"] + c["notifications"]
        table: dict[str, list[dict]] = defaultdict(list)
        for (proto, _), row in sorted(rows.items(), key=lambda kv: (kv[0][0], -1 if kv[1]["code"] is None else kv[1]["code"], kv[0][1])):
            table[proto].append(row)
        return dict(table)

    @staticmethod
    def gateway_macs(hosts: dict[str, Host]) -> set[str]:
        """MACs that stand for routed traffic: a virtual-router MAC, or one seen for many IPs.
        They say which router a host is reached through, not what the host is."""
        ips_per_mac: Counter = Counter(mac for h in hosts.values() for mac in h.macs)
        return {mac for mac, n in ips_per_mac.items()
                if n > MAX_IPS_PER_HOST_MAC or mac.startswith(VIRTUAL_ROUTER_PREFIXES)}

    def merge(self, other: "Summary") -> None:
        """Add another shard's aggregate (connections are disjoint between shards)."""
        add_counts(self.counts, other.counts)
        add_counts(self.flow_counts, other.flow_counts)
        for ip, theirs in other.known.items():
            self._known(ip).absorb(theirs)
        self.anomalies.update(other.anomalies)

    def report(self, stats: dict, captures: list[str]) -> dict:
        """The analyze summary as plain data (rendered as rich tables or JSON)."""
        pairs = self.pairs
        by_ip = self._hosts(pairs)
        gateways = self.gateway_macs(by_ip)
        hosts = []
        for ip in sorted(by_ip, key=_ip_sort_key):
            h = by_ip[ip]
            role, why = h.role()
            macs = sorted(h.macs - gateways)
            hosts.append({
                "ip": ip, "macs": macs, "via_gateway": sorted(h.macs & gateways),
                "vendor": next((v for v in map(mac_vendor, macs) if v), None),
                "identity": h.identity, "role": role, "role_evidence": why,
                "serves": sorted(h.served), "uses": sorted(h.used), "flows": h.flows,
            })
        talks = [
            {"src": s, "dst": d, "protocol": p, "operations": dict(sorted(c.items())),
             "requests": sum(c.values())}
            for (s, d, p), c in sorted(pairs.items(), key=lambda kv: (_ip_sort_key(kv[0][0]), _ip_sort_key(kv[0][1]), kv[0][2]))
        ]
        functions = self.function_table()
        decode = stats.get("decode", {})
        return {
            "captures": captures,
            "packets": stats.get("packets", 0),
            "bytes": stats.get("bytes", 0),
            "first_ts": stats.get("first_ts"),
            "last_ts": stats.get("last_ts"),
            "events": self.events,
            "flows": self.flows,
            "applications": dict(self.apps.most_common()),
            "gateway_macs": {mac: mac_vendor(mac) for mac in sorted(gateways)},
            "hosts": hosts,
            "communications": talks,
            "functions": functions,
            "security": dict(self.security),
            "health": {
                "malformed_packets": stats.get("malformed_packets", 0),
                "skipped_packets": stats.get("skipped", {}),
                "messages_with_anomalies": decode.get("anomalous", 0),
                "anomalies": dict(self.anomalies.most_common()),
                "capture_gaps": decode.get("gaps", 0),
                "gap_bytes": stats.get("gap_bytes", 0),
                "resyncs": decode.get("resyncs", 0),
                "unframeable_bytes": decode.get("unframeable_bytes", 0),
                "truncated_at_eof": decode.get("truncated_at_eof", 0),
                "unpaired_responses": decode.get("unpaired_responses", 0),
                "unanswered_requests": decode.get("unanswered_requests", 0),
                "buffer_overflows": decode.get("buffer_overflows", 0),
                "decoder_errors": decode.get("decoder_errors", 0),
                "retransmitted_bytes": stats.get("retransmitted_bytes", 0),
                "overlap_conflicts": stats.get("overlap_conflicts", 0),
                "flows_evicted": stats.get("flows_evicted", 0),
                "capture_errors": stats.get("capture_errors", []),
            },
        }


@lru_cache(maxsize=1 << 16)   # parsing the text costs 5 us; a flow's IPs repeat
def _oriented(src_ip: str, dst_ip: str, by_client: bool, protocol: str) -> tuple[str, str, str]:
    """(client, server, protocol as the tables name it) of a request or response count's key."""
    client, server = (src_ip, dst_ip) if by_client else (dst_ip, src_ip)
    return client, server, TRANSPORT_OF.get(protocol, protocol)


def _group_address(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address.is_multicast or ip == "255.255.255.255"


@lru_cache(maxsize=1 << 16)   # the communication table sorts by both ends' addresses
def _ip_sort_key(ip: str) -> tuple:
    if ":" in ip:
        return (6, ip)
    try:
        return (4, tuple(int(p) for p in ip.split(".")))
    except ValueError:
        return (9, ip)
