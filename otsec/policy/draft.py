"""Draft a policy from observed traffic (`otsec policy init --from CAPTURE...`).

The draft is a starting point for the engineer, not a judgement: one zone per observed
private /24 (IPv6 /64), a Purdue level guessed from the roles found in it, one asset per
host with a role inferred from what it does, and one conduit per pair of zones that
talked, allowing exactly what was seen. It always passes ``otsec policy validate``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict

import yaml

from otsec.analysis.sides import sides
from otsec.model import Event, Flow
from otsec.policy.model import PROTOCOLS, protocol_name

#: Role -> guessed Purdue level of the zone it lives in (the lowest role wins).
ROLE_LEVEL = {"plc": 1, "opcua_server": 1, "hmi": 2, "engineering_workstation": 3, "historian": 3,
              "server": 4, "workstation": 4, "unknown": 4}

#: Evidence -> role, strongest first: a host is given the first role it has evidence for.
ROLE_ORDER = ("plc", "opcua_server", "engineering_workstation", "hmi", "historian", "server", "workstation")

CONTROLLER_PROTOCOLS = ("modbus", "s7comm", "s7comm-plus")
MAX_HOSTS = 4096
MAX_COMMS = 16384


class Drafter:
    """Collects hosts and who-talks-to-whom from the engine's callbacks."""

    def __init__(self) -> None:
        self.macs: dict[str, Counter] = defaultdict(Counter)
        self.evidence: dict[str, set[str]] = defaultdict(set)
        self.comms: dict[tuple, set[str]] = {}

    def _host(self, ip: str, mac: str | None, industrial: bool = False) -> bool:
        """Track a plant host: a private address, or any unicast one that speaks an
        industrial protocol (plants numbered from public ranges exist)."""
        if ip not in self.macs and (len(self.macs) >= MAX_HOSTS or not _site(ip, industrial)):
            return False
        counter = self.macs[ip]   # creates the host even when no MAC is known
        if mac:
            counter[mac.lower()] += 1
        return True

    def _comm(self, client: str, server: str, protocol: str, port: int, transport: str, op: str | None) -> None:
        key = (client, server, protocol, port, transport)
        ops = self.comms.get(key)
        if ops is None:
            if len(self.comms) >= MAX_COMMS:
                return
            ops = self.comms[key] = set()
        if op:
            ops.add(op)

    def on_event(self, ev: Event) -> None:
        sd = sides(ev)
        known_c = self._host(sd.client_ip, sd.client_mac, True)
        known_s = self._host(sd.server_ip, sd.server_mac, True)
        if ev.kind != "request" or not (known_c and known_s):
            return
        if sd.protocol in CONTROLLER_PROTOCOLS:
            self.evidence[sd.server_ip].add("plc")
            if ev.op_class in ("program", "control", "identify"):
                self.evidence[sd.client_ip].add("engineering_workstation")
            elif ev.op_class in ("read", "write", "diagnostic"):
                self.evidence[sd.client_ip].add("hmi")
        elif sd.protocol == "opcua":
            self.evidence[sd.server_ip].add("opcua_server")
            self.evidence[sd.client_ip].add("historian")
        self._comm(sd.client_ip, sd.server_ip, sd.protocol, sd.port, "tcp", ev.op_class)

    def on_flow(self, flow: Flow) -> None:
        known_c = self._host(flow.client_ip, flow.client_mac)
        known_s = self._host(flow.server_ip, flow.server_mac)
        if not (known_c and known_s) or flow.events:
            return
        self.evidence[flow.client_ip].add("workstation")
        if flow.packets_s2c:
            self.evidence[flow.server_ip].add("server")
        self._comm(flow.client_ip, flow.server_ip, protocol_name(flow.app, flow.server_port),
                   flow.server_port, flow.transport, None)

    # --- the draft ---------------------------------------------------------------------
    def role(self, ip: str) -> str:
        return next((r for r in ROLE_ORDER if r in self.evidence.get(ip, ())), "unknown")

    def draft(self, sources: list[str]) -> str:
        """The policy as YAML text with a header telling the user what to review."""
        nets: dict = defaultdict(list)
        for ip in sorted(self.macs, key=ipaddress.ip_address):
            nets[_subnet(ip)].append(ip)
        zone_of, zones = {}, []
        for net, ips in sorted(nets.items(), key=lambda kv: (kv[0].version, kv[0])):
            name = "zone-" + str(net.network_address).replace(".", "-").replace(":", "-").strip("-")
            level = min(ROLE_LEVEL[self.role(ip)] for ip in ips)
            zones.append({"name": name, "level": level, "cidrs": [str(net)], "sl_t": 2,
                          "description": f"drafted from {len(ips)} host(s) seen in {net}"})
            for ip in ips:
                zone_of[ip] = name
        mac_users = Counter(c.most_common(1)[0][0] for c in self.macs.values() if c)
        assets, name_of = [], {}
        for ip in sorted(self.macs, key=ipaddress.ip_address):
            role = self.role(ip)
            name = name_of[ip] = f"{'host' if role == 'unknown' else role.replace('_', '-')}-" + \
                ip.replace(".", "-").replace(":", "-")
            asset = {"name": name, "ip": ip}
            if self.macs[ip]:
                mac = self.macs[ip].most_common(1)[0][0]
                if mac_users[mac] == 1:   # a router's MAC fronts many hosts: leave it out
                    asset["mac"] = mac
            asset.update(zone=zone_of[ip], role=role)
            assets.append(asset)
        conduits: dict[frozenset, dict] = {}
        for (client, server, protocol, port, transport), ops in sorted(self.comms.items()):
            zc, zs = zone_of.get(client), zone_of.get(server)
            if zc is None or zs is None or zc == zs:
                continue
            c = conduits.setdefault(frozenset((zc, zs)), {
                "name": f"{zc}-to-{zs}", "zones": [zc, zs], "initiator": zc, "allow": []})
            if c["initiator"] != zc:
                c["initiator"] = "both"
            proto = protocol if protocol in PROTOCOLS else transport
            if proto not in PROTOCOLS:
                continue
            # ICMP and other port-less protocols: a rule without ports (port 0 is no port)
            rule = {"protocol": proto, "ports": [port]} if port else {"protocol": proto}
            if ops:
                rule["operations"] = sorted(ops)
            rule.update(sources=[name_of[client]], destinations=[name_of[server]])
            c["allow"].append(rule)
        doc = {"version": 1, "name": "draft", "description": "drafted by otsec policy init",
               "zones": zones, "assets": assets, "conduits": list(conduits.values())}
        header = (
            "# Draft policy from: " + ", ".join(sources) + "\n"
            "# Review before use: zone names and Purdue levels are guesses from roles, roles are\n"
            "# inferred from traffic, and each conduit allows exactly what was observed (add\n"
            "# write_targets and require: blocks, remove what should not happen). See docs/policy.md.\n"
        )
        return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


#: Address blocks a plant's own hosts live in (RFC 1918, RFC 6598 shared space, IPv6 ULA);
#: other addresses become zones only when they speak an industrial protocol.
SITE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _site(ip: str, industrial: bool) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if a.is_multicast or a.is_unspecified or a.is_loopback or a.is_link_local or (
            a.version == 4 and (int(a) & 0xFF) in (0, 255)):   # network/broadcast of the drafted /24
        return False
    return industrial or any(a.version == n.version and a in n for n in SITE_NETWORKS)


def _subnet(ip: str):
    a = ipaddress.ip_address(ip)
    return ipaddress.ip_network(f"{ip}/{24 if a.version == 4 else 64}", strict=False)
