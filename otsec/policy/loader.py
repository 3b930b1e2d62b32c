"""Load a policy YAML file and check it, reporting every problem as ``FILE:LINE: message``.

The YAML is parsed with PyYAML's safe loader in two steps: ``compose`` builds the node
tree (each node keeps its start mark), then :func:`_plain` turns it into dicts and lists
that remember the line of every key and item. Validation walks those and collects
errors instead of stopping at the first, so a user fixes a file in one pass::

    policies/plant.yaml:14: zone 'field': bad CIDR '10.50.0.0/33'
    policies/plant.yaml:41: conduit 'hmi-to-field': unknown zone 'feild'
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from otsec.model import OP_CLASSES
from otsec.policy.model import (
    CRITICALITIES, LEVELS, MODBUS_TARGET_KINDS, OPCUA_MODES, PROTOCOLS, ROLES,
    SECURITY_LEVELS, AllowRule, Asset, Conduit, Policy, Rules, Suppression, UnsafeSpec,
    WriteTarget, Zone,
)

#: Allowed keys per section; anything else is reported as a probable typo.
KEYS = {
    "top": ("version", "name", "description", "zones", "assets", "conduits", "rules"),
    "zone": ("name", "level", "cidrs", "vlans", "sl_t", "description"),
    "asset": ("name", "ip", "mac", "zone", "role", "criticality", "description"),
    "conduit": ("name", "zones", "initiator", "allow", "description"),
    "allow": ("protocol", "ports", "operations", "sources", "destinations", "write_targets",
              "require"),
    "require": ("opcua_security_mode",),
    "write_target": MODBUS_TARGET_KINDS + ("db", "bytes", "node", "node_prefix"),
    "rules": ("unsafe_operations", "program_roles", "control_roles", "write_roles",
              "it_admin_protocols", "external", "cleartext_across_zones", "anomalies",
              "suppressions"),
    "unsafe": ("op_classes", "functions", "function_codes"),
    "it_admin": ("protocols", "max_level"),
    "external": ("ot_max_level", "allowed"),
    "cleartext": ("deny", "protocols", "except_conduits"),
    "anomalies": ("function_sweep_min", "unit_id_sweep_min"),
    "suppression": ("rule", "reason", "src", "dst", "protocol", "expires"),
}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class PolicyError(Exception):
    """The policy cannot be used; ``errors`` holds every ``FILE:LINE: message``."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class LMap(dict):
    """A mapping that remembers its own line and the line of each key."""

    line: int
    lines: dict


class LList(list):
    """A sequence that remembers its own line and the line of each item."""

    line: int
    lines: list


def _plain(node: yaml.Node, loader: yaml.SafeLoader, errors: list[tuple[int, str]]) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = LMap()
        out.line, out.lines = line, {}
        for knode, vnode in node.value:
            key = _plain(knode, loader, errors)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                errors.append((knode.start_mark.line + 1, "mapping keys must be plain scalars"))
                continue
            if key in out:
                errors.append((knode.start_mark.line + 1, f"duplicate key '{key}'"))
            out[key] = _plain(vnode, loader, errors)
            out.lines[key] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        out = LList(_plain(n, loader, errors) for n in node.value)
        out.line, out.lines = line, [n.start_mark.line + 1 for n in node.value]
        return out
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:   # e.g. a date like 2026-13-40
        errors.append((line, f"bad value {node.value!r}: {exc}"))
        return node.value


def load_policy(path: str | Path) -> Policy:
    """Read, parse and validate ``path``; raise :class:`PolicyError` with every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([f"{path}: policy file not found"]) from None
    except IsADirectoryError:
        raise PolicyError([f"{path}: is a directory, not a policy file"]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{path}: not a text (UTF-8) file: byte {exc.start}"]) from None
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read policy: {exc.strerror or exc}"]) from None
    return parse_policy(text, path)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    raw_errors: list[tuple[int, str]] = []
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        doc = None if node is None else _plain(node, loader, raw_errors)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        # an unclosed bracket or quote is noticed lines later: say where it was opened
        start = exc.context_mark.line + 1 if exc.context and exc.context_mark else line
        opened = f" ({exc.context} started on line {start})" if start != line else ""
        raise PolicyError([f"{source}:{line}: YAML syntax error: {exc.problem or exc}{opened}"]) from None
    except yaml.reader.ReaderError as exc:   # control characters / bad encoding, located by offset
        line = text.count("\n", 0, exc.position) + 1
        raise PolicyError([f"{source}:{line}: not a text file: {exc.reason} "
                           f"(character {exc.character!r})"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}:1: YAML error: {exc}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    v = _Validator(source)
    for line, msg in raw_errors:
        v.err(line, msg)
    if doc is None:
        v.err(1, "policy is empty (expected a mapping with 'zones', 'assets', 'conduits', 'rules')")
    elif not isinstance(doc, LMap):
        v.err(getattr(doc, "line", 1), "policy must be a mapping with 'zones', 'assets', 'conduits', 'rules'")
    else:
        policy = v.policy(doc)
        if not v.errors:
            return policy
    raise PolicyError(sorted(v.errors, key=_line_of))


def _line_of(error: str) -> int:
    m = re.search(r":(\d+): ", error)
    return int(m.group(1)) if m else 0


class _Validator:
    def __init__(self, source: str):
        self.source = source
        self.errors: list[str] = []

    def err(self, line: int, msg: str) -> None:
        self.errors.append(f"{self.source}:{line}: {msg}")

    # --- generic helpers --------------------------------------------------------------
    def keys(self, m: LMap, section: str, what: str) -> None:
        allowed = KEYS[section]
        for key in m:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                tail = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.err(m.lines[key], f"{what}: unknown key '{key}'{tail}")

    def mapping(self, value, line: int, what: str) -> LMap | None:
        if isinstance(value, LMap):
            return value
        self.err(line, f"{what}: expected a mapping")
        return None

    def seq(self, m: LMap, key: str, what: str, scalar_ok: bool = True) -> list[tuple[Any, int]]:
        """Items of ``m[key]`` with their lines; a lone scalar counts as a one-item list."""
        if key not in m or m[key] is None:
            return []
        value, line = m[key], m.lines[key]
        if isinstance(value, LList):
            items = list(zip(value, value.lines))
        elif scalar_ok and not isinstance(value, LMap):
            items = [(value, line)]
        else:
            self.err(line, f"{what}: '{key}' must be a list")
            return []
        if not scalar_ok:
            return items
        for item, iline in items:
            if isinstance(item, (LMap, LList)):
                self.err(iline, f"{what}: '{key}' items must be single values, not a nested list or mapping")
        return [(item, iline) for item, iline in items if not isinstance(item, (LMap, LList))]

    def name(self, m: LMap, what: str, seen: dict[str, int]) -> str | None:
        name = m.get("name")
        if name is None:
            self.err(m.line, f"{what} without a 'name'")
            return None
        line = m.lines["name"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            self.err(line, f"{what}: bad name {name!r} (letters, digits, '.', '_', '-')")
            return None
        if name in seen:
            self.err(line, f"duplicate {what} name '{name}' (first defined on line {seen[name]})")
            return None
        seen[name] = line
        return name

    def str_choice(self, value, line: int, choices, what: str) -> bool:
        if value in choices:
            return True
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        tail = f" (did you mean '{hint[0]}'?)" if hint else f" (one of: {', '.join(map(str, choices))})"
        self.err(line, f"{what} {value!r}{tail}")
        return False

    def level(self, value, line: int, what: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in LEVELS:
            self.err(line, f"{what}: bad Purdue level {value!r} (one of: 0, 1, 2, 3, 3.5, 4, 5)")
            return None
        return float(value)

    def positive_int(self, value, line: int, what: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.err(line, f"{what}: expected a positive integer, got {value!r}")
            return None
        return value

    def int_range(self, value, line: int, what: str) -> tuple[int, int] | None:
        if isinstance(value, int) and not isinstance(value, bool):
            lo = hi = value
        else:
            m = RANGE_RE.match(str(value))
            if not m:
                self.err(line, f"{what}: bad range {value!r} (e.g. 100-199 or 150)")
                return None
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo < 0 or hi < lo or hi > 0xFFFFFFFF:
            self.err(line, f"{what}: bad range {value!r}")
            return None
        return lo, hi

    # --- sections ---------------------------------------------------------------------
    def policy(self, doc: LMap) -> Policy:
        self.keys(doc, "top", "policy")
        if "version" in doc and doc["version"] != 1:
            self.err(doc.lines["version"], f"unsupported policy version {doc['version']!r} (expected 1)")
        if "zones" not in doc:
            self.err(doc.line, "policy has no 'zones'")
        zones = self.zones(doc)
        assets = self.assets(doc, zones)
        conduits = self.conduits(doc, zones, assets)
        rules = self.rules(doc, assets, conduits)
        return Policy(list(zones.values()), list(assets.values()), list(conduits.values()),
                      rules, self.source, str(doc.get("name") or ""))

    def zones(self, doc: LMap) -> dict[str, Zone]:
        zones: dict[str, Zone] = {}
        seen: dict[str, int] = {}
        nets: list[tuple[Any, str, int]] = []
        for item, line in self.seq(doc, "zones", "policy", scalar_ok=False):
            z = self.mapping(item, line, "zone")
            if z is None:
                continue
            name = self.name(z, "zone", seen)
            what = f"zone '{name or '?'}'"
            self.keys(z, "zone", what)
            level = None
            if "level" not in z:
                self.err(z.line, f"{what}: missing 'level' (Purdue level 0-5 or 3.5)")
            else:
                level = self.level(z["level"], z.lines["level"], what)
            cidrs = []
            for value, vline in self.seq(z, "cidrs", what):
                try:
                    net = ipaddress.ip_network(str(value), strict=True)
                except ValueError as exc:
                    self.err(vline, f"{what}: bad CIDR {value!r} ({exc})")
                    continue
                for other, oname, oline in nets:
                    if other.version == net.version and other.overlaps(net):
                        self.err(vline, f"{what}: CIDR {net} overlaps {other} of zone '{oname}' (line {oline})")
                nets.append((net, name or "?", vline))
                cidrs.append(net)
            vlans = []
            for value, vline in self.seq(z, "vlans", what):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4094:
                    self.err(vline, f"{what}: bad VLAN id {value!r} (1-4094)")
                else:
                    vlans.append(value)
            if "cidrs" not in z and "vlans" not in z:
                self.err(z.line, f"{what}: needs 'cidrs' and/or 'vlans'")
            sl_t = z.get("sl_t")
            if sl_t is not None and (isinstance(sl_t, bool) or sl_t not in SECURITY_LEVELS):
                self.err(z.lines["sl_t"], f"{what}: bad SL-T {sl_t!r} (1-4)")
                sl_t = None
            if name:  # registered even when broken, so references to it do not cascade
                zones[name] = Zone(name, level if level is not None else -1.0, tuple(cidrs),
                                   tuple(vlans), sl_t, str(z.get("description") or ""))
        return zones

    def assets(self, doc: LMap, zones: dict[str, Zone]) -> dict[str, Asset]:
        assets: dict[str, Asset] = {}
        seen: dict[str, int] = {}
        ips: dict[str, tuple[str, int]] = {}
        macs: dict[str, tuple[str, int]] = {}
        for item, line in self.seq(doc, "assets", "policy", scalar_ok=False):
            a = self.mapping(item, line, "asset")
            if a is None:
                continue
            name = self.name(a, "asset", seen)
            what = f"asset '{name or '?'}'"
            self.keys(a, "asset", what)
            zone = a.get("zone")
            if zone is None:
                self.err(a.line, f"{what}: missing 'zone'")
            elif not isinstance(zone, str) or zone not in zones:
                self.str_choice(zone, a.lines["zone"], list(zones), f"{what}: unknown zone")
            ip = a.get("ip")
            if ip is not None:
                try:
                    addr = ipaddress.ip_address(str(ip))
                except ValueError:
                    self.err(a.lines["ip"], f"{what}: bad IP address {ip!r}")
                else:
                    ip = str(addr)
                    if ip in ips:
                        self.err(a.lines["ip"], f"{what}: IP {ip} already used by asset "
                                                f"'{ips[ip][0]}' (line {ips[ip][1]})")
                    ips.setdefault(ip, (name, a.lines["ip"]))
                    z = zones.get(zone) if isinstance(zone, str) else None
                    if z is not None and z.cidrs and not any(
                            addr.version == n.version and addr in n for n in z.cidrs):
                        self.err(a.lines["ip"], f"{what}: IP {ip} is outside zone '{zone}' "
                                                f"({', '.join(map(str, z.cidrs))})")
            mac = a.get("mac")
            if mac is not None:
                mac = str(mac).lower().replace("-", ":")
                if not MAC_RE.match(mac):
                    self.err(a.lines["mac"], f"{what}: bad MAC address {a['mac']!r}")
                elif mac in macs:
                    self.err(a.lines["mac"], f"{what}: MAC {mac} already used by asset "
                                             f"'{macs[mac][0]}' (line {macs[mac][1]})")
                macs.setdefault(mac, (name, a.lines["mac"]))
            if ip is None and mac is None:
                self.err(a.line, f"{what}: needs 'ip' and/or 'mac'")
            role = a.get("role", "unknown")
            self.str_choice(role, a.lines.get("role", a.line), ROLES, f"{what}: unknown role")
            crit = a.get("criticality")
            if crit is not None:
                self.str_choice(crit, a.lines["criticality"], CRITICALITIES, f"{what}: unknown criticality")
            if name:  # registered even when broken, so references to it do not cascade
                known_zone = zone if isinstance(zone, str) and zone in zones else ""
                assets[name] = Asset(name, known_zone, ip, mac, role, crit, str(a.get("description") or ""))
        return assets

    def selectors(self, m: LMap, key: str, what: str, assets: dict[str, Asset],
                  zones: tuple[str, ...] = (), allow_addresses: bool = False) -> tuple[str, ...]:
        out = []
        for value, line in self.seq(m, key, what):
            if value == "any":
                continue
            if value in assets:
                if zones and assets[value].zone and assets[value].zone not in zones:
                    self.err(line, f"{what}: asset '{value}' is in zone '{assets[value].zone}', "
                                   f"not in {' or '.join(zones)}")
                out.append(value)
            elif value in ROLES:
                out.append(value)
            elif allow_addresses and _is_network(value):
                out.append(str(value))
            else:
                hint = difflib.get_close_matches(str(value), list(assets) + list(ROLES), n=1)
                tail = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.err(line, f"{what}: '{key}' entry {value!r} is neither an asset name nor a role{tail}")
        return tuple(out)

    def conduits(self, doc: LMap, zones: dict[str, Zone], assets: dict[str, Asset]) -> dict[str, Conduit]:
        conduits: dict[str, Conduit] = {}
        seen: dict[str, int] = {}
        pairs: dict[frozenset, tuple[str, int]] = {}
        for item, line in self.seq(doc, "conduits", "policy", scalar_ok=False):
            c = self.mapping(item, line, "conduit")
            if c is None:
                continue
            name = self.name(c, "conduit", seen)
            what = f"conduit '{name or '?'}'"
            self.keys(c, "conduit", what)
            ok = name is not None
            czones = [(v, ln) for v, ln in self.seq(c, "zones", what)]
            if len(czones) != 2 or czones[0][0] == czones[1][0]:
                self.err(c.lines.get("zones", c.line), f"{what}: 'zones' must name two different zones")
                ok = False
            for zname, zline in czones:
                if zname not in zones:
                    self.str_choice(zname, zline, list(zones), f"{what}: unknown zone")
                    ok = False
            if ok:
                pair = frozenset(z for z, _ in czones)
                if pair in pairs:
                    self.err(c.lines["zones"], f"{what}: zones already joined by conduit "
                                               f"'{pairs[pair][0]}' (line {pairs[pair][1]})")
                    ok = False
                pairs.setdefault(pair, (name, c.lines["zones"]))
            zone_names = tuple(z for z, _ in czones)
            initiator = c.get("initiator", "both")
            if initiator != "both" and initiator not in zone_names:
                self.err(c.lines.get("initiator", c.line),
                         f"{what}: initiator {initiator!r} must be one of its zones or 'both'")
                ok = False
            rules = []
            for ritem, rline in self.seq(c, "allow", what, scalar_ok=False):
                r = self.mapping(ritem, rline, f"{what} allow rule")
                if r is None:
                    ok = False
                    continue
                # with an unknown zone, 'asset X is not in A or B' would only repeat that error
                known = zone_names if all(z in zones for z in zone_names) else ()
                rule = self.allow_rule(r, f"{what} allow rule", assets, known)
                if rule is None:
                    ok = False
                else:
                    rules.append(rule)
            if name:  # registered even when broken, so references to it do not cascade
                conduits[name] = Conduit(name, (zone_names + ("", ""))[:2], initiator,
                                         tuple(rules), str(c.get("description") or ""))
        return conduits

    def allow_rule(self, r: LMap, what: str, assets, zone_names) -> AllowRule | None:
        self.keys(r, "allow", what)
        n = len(self.errors)
        proto = r.get("protocol")
        if proto is None:
            self.err(r.line, f"{what}: missing 'protocol'")
        else:
            self.str_choice(proto, r.lines["protocol"], PROTOCOLS, f"{what}: unknown protocol")
        ports = []
        for value, line in self.seq(r, "ports", what):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                self.err(line, f"{what}: bad port {value!r} (1-65535)")
            else:
                ports.append(value)
        ops, ops_ok = [], True
        for value, line in self.seq(r, "operations", what):
            if self.str_choice(value, line, OP_CLASSES, f"{what}: unknown operation class"):
                ops.append(value)
            else:
                ops_ok = False
        sources = self.selectors(r, "sources", what, assets, zone_names)
        destinations = self.selectors(r, "destinations", what, assets, zone_names)
        targets = []
        for value, line in self.seq(r, "write_targets", what, scalar_ok=False):
            t = self.write_target(value, line, what)
            if t is not None:
                targets.append(t)
        if targets and ops and ops_ok and "write" not in ops:  # a misspelt 'write' is reported once
            self.err(r.lines["write_targets"],
                     f"{what}: 'write_targets' given but 'write' is not an allowed operation")
        mode = None
        if "require" in r:
            req = self.mapping(r["require"], r.lines["require"], f"{what} require")
            if req is not None:
                self.keys(req, "require", f"{what} require")
                if "opcua_security_mode" in req:
                    mode = req["opcua_security_mode"]
                    self.str_choice(mode, req.lines["opcua_security_mode"], OPCUA_MODES,
                                    f"{what}: unknown OPC UA security mode")
                    if proto != "opcua":
                        self.err(req.lines["opcua_security_mode"],
                                 f"{what}: 'opcua_security_mode' needs protocol opcua")
        if len(self.errors) != n:
            return None
        return AllowRule(proto, tuple(ports), tuple(ops), sources, destinations, tuple(targets), mode)

    def write_target(self, value, line: int, what: str) -> WriteTarget | None:
        what = f"{what} write target"
        m = self.mapping(value, line, what)
        if m is None:
            return None
        self.keys(m, "write_target", what)
        kinds = [k for k in m if k in MODBUS_TARGET_KINDS + ("db", "node", "node_prefix")]
        if len(kinds) != 1:
            self.err(m.line, f"{what}: name exactly one of "
                             f"{', '.join(MODBUS_TARGET_KINDS)}, db, node, node_prefix")
            return None
        kind = kinds[0]
        kline = m.lines[kind]
        if kind in MODBUS_TARGET_KINDS:
            rng = self.int_range(m[kind], kline, what)
            return WriteTarget(kind, rng[0], rng[1]) if rng else None
        if kind == "db":
            db = m["db"]
            if isinstance(db, bool) or not isinstance(db, int) or not 0 <= db <= 65535:
                self.err(kline, f"{what}: bad DB number {db!r}")
                return None
            if "bytes" in m:
                rng = self.int_range(m["bytes"], m.lines["bytes"], what)
                return WriteTarget("db", rng[0], rng[1], db=db) if rng else None
            return WriteTarget("db", db=db)
        if "bytes" in m:
            self.err(m.lines["bytes"], f"{what}: 'bytes' only applies to 'db'")
        node = m[kind]
        if not isinstance(node, str) or not node:
            self.err(kline, f"{what}: '{kind}' must be a node id string like 'ns=2;s=Line1.Setpoint'")
            return None
        return WriteTarget(kind, node=node)

    def rules(self, doc: LMap, assets, conduits) -> Rules:
        if "rules" not in doc or doc["rules"] is None:
            return Rules()
        r = self.mapping(doc["rules"], doc.lines["rules"], "rules")
        if r is None:
            return Rules()
        self.keys(r, "rules", "rules")
        kw: dict[str, Any] = {}
        unsafe = {}
        if "unsafe_operations" in r:
            u = self.mapping(r["unsafe_operations"], r.lines["unsafe_operations"], "rules.unsafe_operations")
            for proto, spec in (u or {}).items():
                what = f"rules.unsafe_operations.{proto}"
                self.str_choice(proto, u.lines[proto], PROTOCOLS, "rules.unsafe_operations: unknown protocol")
                s = self.mapping(spec, u.lines[proto], what)
                if s is None:
                    continue
                self.keys(s, "unsafe", what)
                ops = tuple(v for v, ln in self.seq(s, "op_classes", what)
                            if self.str_choice(v, ln, OP_CLASSES, f"{what}: unknown operation class"))
                funcs = tuple(str(v) for v, _ in self.seq(s, "functions", what))
                codes = tuple(v for v, ln in self.seq(s, "function_codes", what)
                              if self.positive_int(v, ln, what) is not None)
                unsafe[proto] = UnsafeSpec(ops, funcs, codes)
        kw["unsafe"] = unsafe
        for key in ("program_roles", "control_roles", "write_roles"):
            if key in r:
                kw[key] = tuple(v for v, ln in self.seq(r, key, "rules")
                                if self.str_choice(v, ln, ROLES, f"rules.{key}: unknown role"))
        if "it_admin_protocols" in r:
            m = self.mapping(r["it_admin_protocols"], r.lines["it_admin_protocols"], "rules.it_admin_protocols")
            if m is not None:
                self.keys(m, "it_admin", "rules.it_admin_protocols")
                if "protocols" in m:
                    kw["it_admin_protocols"] = tuple(
                        v for v, ln in self.seq(m, "protocols", "rules.it_admin_protocols")
                        if self.str_choice(v, ln, PROTOCOLS, "rules.it_admin_protocols: unknown protocol"))
                if "max_level" in m:
                    lvl = self.level(m["max_level"], m.lines["max_level"], "rules.it_admin_protocols")
                    if lvl is not None:
                        kw["it_admin_max_level"] = lvl
        if "external" in r:
            m = self.mapping(r["external"], r.lines["external"], "rules.external")
            if m is not None:
                self.keys(m, "external", "rules.external")
                if "ot_max_level" in m:
                    lvl = self.level(m["ot_max_level"], m.lines["ot_max_level"], "rules.external")
                    if lvl is not None:
                        kw["external_ot_max_level"] = lvl
                nets = []
                for v, ln in self.seq(m, "allowed", "rules.external"):
                    try:
                        nets.append(ipaddress.ip_network(str(v), strict=False))
                    except ValueError:
                        self.err(ln, f"rules.external: bad CIDR {v!r}")
                kw["external_allowed"] = tuple(nets)
        if "cleartext_across_zones" in r:
            what = "rules.cleartext_across_zones"
            m = self.mapping(r["cleartext_across_zones"], r.lines["cleartext_across_zones"], what)
            if m is not None:
                self.keys(m, "cleartext", what)
                if "deny" in m:
                    if not isinstance(m["deny"], bool):
                        self.err(m.lines["deny"], f"{what}: 'deny' must be true or false")
                    else:
                        kw["cleartext_deny"] = m["deny"]
                if "protocols" in m:
                    kw["cleartext_protocols"] = tuple(
                        v for v, ln in self.seq(m, "protocols", what)
                        if self.str_choice(v, ln, PROTOCOLS, f"{what}: unknown protocol"))
                exc = []
                for v, ln in self.seq(m, "except_conduits", what):
                    if self.str_choice(v, ln, list(conduits), f"{what}: unknown conduit"):
                        exc.append(v)
                kw["cleartext_except_conduits"] = tuple(exc)
        if "anomalies" in r:
            m = self.mapping(r["anomalies"], r.lines["anomalies"], "rules.anomalies")
            if m is not None:
                self.keys(m, "anomalies", "rules.anomalies")
                for key in ("function_sweep_min", "unit_id_sweep_min"):
                    if key in m:
                        val = self.positive_int(m[key], m.lines[key], f"rules.anomalies.{key}")
                        if val is not None:
                            kw[key] = max(val, 2)
        kw["suppressions"] = tuple(self.suppressions(r, assets))
        return Rules(**kw)

    def suppressions(self, r: LMap, assets) -> list[Suppression]:
        from otsec.detect.rules import RULES  # the catalogue is data only; no import cycle at load time

        out = []
        for item, line in self.seq(r, "suppressions", "rules", scalar_ok=False):
            what = "suppression"
            s = self.mapping(item, line, what)
            if s is None:
                continue
            self.keys(s, "suppression", what)
            n = len(self.errors)
            rule = s.get("rule")
            if rule is None:
                self.err(s.line, f"{what}: missing 'rule' (a rule id such as OTSEC-NEWCOMM-001)")
            elif not (isinstance(rule, str) and (rule in RULES or (
                    rule.endswith("*") and any(k.startswith(rule[:-1]) for k in RULES)))):
                self.str_choice(rule, s.lines["rule"], list(RULES), f"{what}: unknown rule id")
            reason = s.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                self.err(s.lines.get("reason", s.line), f"{what}: needs a non-empty 'reason'")
            expires = s.get("expires")
            if expires is not None and not (isinstance(expires, dt.date) and not isinstance(expires, dt.datetime)):
                self.err(s.lines["expires"], f"{what}: 'expires' must be a date like 2026-06-30")
            for key in ("src", "dst"):
                if key in s and not isinstance(s[key], str):
                    self.err(s.lines[key], f"{what}: '{key}' must be one asset name, role, IP or CIDR")
                elif key in s:
                    self.selectors(s, key, what, assets, allow_addresses=True)
            proto = s.get("protocol")
            if proto is not None:
                self.str_choice(proto, s.lines["protocol"], PROTOCOLS, f"{what}: unknown protocol")
            if len(self.errors) == n:
                out.append(Suppression(rule, reason.strip(), _opt_str(s.get("src")), _opt_str(s.get("dst")),
                                       proto, expires, s.line))
        return out


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _is_network(value) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True
