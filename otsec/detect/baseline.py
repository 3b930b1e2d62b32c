"""Per-zone-pair baseline: who talks to whom, how, and on what, during a learning period.

A baseline entry is keyed by (source zone, destination zone, source IP, destination IP,
protocol, server port, operation class, function) and carries counts, first/last seen and
the union of the target ranges touched (``holding_register 0-19``, ``DB10 0-19``,
``node ns=2;s=Line1.Setpoint``). Requests are learned from decoded events; conversations
no decoder understood (RDP, HTTPS, ...) from flow records, with empty operation/function.
Devices seen (IP, MAC, identity) are learned too, so a later check knows which hosts are
familiar even when the policy does not declare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from otsec.analysis.sides import sides
from otsec.model import Event, Flow, Target
from otsec.policy.model import Policy, protocol_name

#: Bounds so a long learning period cannot exhaust memory.
MAX_ENTRIES = 200_000
MAX_DEVICES = 65_536
MAX_RANGES_PER_SPACE = 64      # disjoint ranges kept per address space; more are bridged


@dataclass(frozen=True, slots=True)
class Key:
    src_zone: str
    dst_zone: str
    src_ip: str
    dst_ip: str
    protocol: str
    port: int
    op_class: str
    function: str


#: An address space inside one entry: (kind, area, db, name). Numeric targets keep ranges.
Space = tuple


def target_space(t: Target) -> tuple[Space, tuple[int, int] | None]:
    """Address space of a target and its inclusive range (None for named things)."""
    space = (t.kind, t.area, t.db, t.name)
    if t.start is None:
        return space, None
    return space, (t.start, t.start + max((t.count or 1) - 1, 0))


def _merge(ranges: list[list[int]], lo: int, hi: int) -> list[list[int]]:
    ranges = sorted(ranges + [[lo, hi]])
    out: list[list[int]] = []
    for r in ranges:
        if out and r[0] <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], r[1])
        else:
            out.append(list(r))
    while len(out) > MAX_RANGES_PER_SPACE:  # bridge the smallest gap
        i = min(range(len(out) - 1), key=lambda j: out[j + 1][0] - out[j][1])
        out[i:i + 2] = [[out[i][0], out[i + 1][1]]]
    return out


@dataclass(slots=True)
class Entry:
    key: Key
    src_name: str | None = None
    dst_name: str | None = None
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    targets: dict[Space, list[list[int]] | None] = field(default_factory=dict)

    def add(self, ts: float, targets: Iterable[Target] = (), count: int = 1) -> None:
        if self.count == 0 or ts < self.first_seen:
            self.first_seen = ts
        self.last_seen = max(self.last_seen, ts)
        self.count += count
        for t in targets:
            self.add_target(*target_space(t))

    def add_target(self, space: Space, rng: tuple[int, int] | None) -> None:
        if rng is None:
            self.targets.setdefault(space, None)
        else:
            self.targets[space] = _merge(self.targets.get(space) or [], *rng)

    def covers(self, t: Target) -> bool:
        space, rng = target_space(t)
        if space not in self.targets:
            return False
        if rng is None:
            return True
        return any(lo <= rng[0] and rng[1] <= hi for lo, hi in self.targets[space] or ())

    def merge(self, other: "Entry") -> None:
        self.first_seen = other.first_seen if self.count == 0 else min(self.first_seen, other.first_seen)
        self.count += other.count
        self.last_seen = max(self.last_seen, other.last_seen)
        for space, ranges in other.targets.items():
            if ranges is None:
                self.targets.setdefault(space, None)
            else:
                for lo, hi in ranges:
                    self.add_target(space, (lo, hi))

    def targets_list(self) -> list[dict[str, Any]]:
        """JSON form: one item per address space, e.g. {"kind": "holding_register", "ranges": [[0, 19]]}."""
        out = []
        for (kind, area, db, name), ranges in sorted(self.targets.items(), key=lambda kv: repr(kv[0])):
            item = {k: v for k, v in (("kind", kind), ("area", area), ("db", db), ("name", name)) if v is not None}
            if ranges is not None:
                item["ranges"] = ranges
            out.append(item)
        return out

    def targets_text(self) -> str:
        parts = []
        for item in self.targets_list():
            label = " ".join(str(item[k]) for k in ("kind", "area", "db", "name") if k in item)
            rngs = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in item.get("ranges", ()))
            parts.append(f"{label} {rngs}".strip())
        return "; ".join(parts)

    @staticmethod
    def targets_from_list(items: list[dict[str, Any]]) -> dict[Space, list[list[int]] | None]:
        out: dict[Space, list[list[int]] | None] = {}
        for item in items:
            space = (item.get("kind"), item.get("area"), item.get("db"), item.get("name"))
            out[space] = [list(r) for r in item["ranges"]] if "ranges" in item else None
        return out


@dataclass(slots=True)
class Device:
    ip: str
    zone: str | None
    name: str | None = None
    macs: set[str] = field(default_factory=set)
    identity: dict[str, str] = field(default_factory=dict)
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def add(self, ts: float, mac: str | None, identity: dict | None = None) -> None:
        if self.count == 0 or ts < self.first_seen:
            self.first_seen = ts
        self.last_seen = max(self.last_seen, ts)
        self.count += 1
        if mac and len(self.macs) < 8:
            self.macs.add(mac.lower())
        for k, v in (identity or {}).items():
            if len(self.identity) < 16:
                self.identity.setdefault(str(k), str(v))


class Baseline:
    """A set of entries and devices, learned from traffic or loaded from SQLite."""

    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}
        self.devices: dict[str, Device] = {}
        self.dropped = 0

    def entry(self, key: Key, src_name: str | None = None, dst_name: str | None = None) -> Entry | None:
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= MAX_ENTRIES:
                self.dropped += 1
                return None
            e = self.entries[key] = Entry(key, src_name, dst_name)
        return e

    def device(self, ip: str, zone: str | None, name: str | None) -> Device | None:
        d = self.devices.get(ip)
        if d is None:
            if len(self.devices) >= MAX_DEVICES:
                self.dropped += 1
                return None
            d = self.devices[ip] = Device(ip, zone, name)
        return d

    def merge(self, other: "Baseline") -> None:
        for key, e in other.entries.items():
            mine = self.entry(key, e.src_name, e.dst_name)
            if mine is not None:
                mine.merge(e)
        for ip, d in other.devices.items():
            mine = self.device(ip, d.zone, d.name)
            if mine is not None:
                first = mine.count == 0
                mine.count += d.count
                mine.first_seen = d.first_seen if first else min(mine.first_seen, d.first_seen)
                mine.last_seen = max(mine.last_seen, d.last_seen)
                mine.macs |= d.macs
                for k, v in d.identity.items():
                    mine.identity.setdefault(k, v)


def event_key(policy: Policy, ev: Event) -> tuple[Key, str | None, str | None] | None:
    """Baseline key of a request event, client first (None for responses/notifications)."""
    if ev.kind != "request":
        return None
    sd = sides(ev)
    s, d = policy.locate(sd.client_ip), policy.locate(sd.server_ip)
    key = Key(s.zone_name or "", d.zone_name or "", sd.client_ip, sd.server_ip,
              sd.protocol, sd.port, ev.op_class, ev.function)
    return key, s.asset.name if s.asset else None, d.asset.name if d.asset else None


def flow_key(policy: Policy, flow: Flow) -> tuple[Key, str | None, str | None]:
    s, d = policy.locate(flow.client_ip), policy.locate(flow.server_ip)
    key = Key(s.zone_name or "", d.zone_name or "", flow.client_ip, flow.server_ip,
              protocol_name(flow.app, flow.server_port), flow.server_port, "", "")
    return key, s.asset.name if s.asset else None, d.asset.name if d.asset else None


class Learner:
    """Streaming baseline learner: feed it the engine's callbacks."""

    def __init__(self, policy: Policy, baseline: Baseline | None = None):
        self.policy = policy
        self.baseline = baseline or Baseline()

    def _device(self, ip: str, ts: float, mac: str | None, identity=None) -> None:
        loc = self.policy.locate(ip)
        if loc.zone is None:
            return
        d = self.baseline.device(ip, loc.zone_name, loc.asset.name if loc.asset else None)
        if d is not None:
            d.add(ts, mac, identity)

    def on_event(self, ev: Event) -> None:
        self._device(ev.src_ip, ev.ts, ev.src_mac, ev.identity)
        k = event_key(self.policy, ev)
        if k is None:
            return
        e = self.baseline.entry(*k)
        if e is not None:
            e.add(ev.ts, ev.targets)

    def on_flow(self, flow: Flow) -> None:
        self._device(flow.client_ip, flow.first_ts, flow.client_mac)
        if flow.packets_s2c:
            self._device(flow.server_ip, flow.first_ts, flow.server_mac)
        if flow.events:
            return
        e = self.baseline.entry(*flow_key(self.policy, flow))
        if e is not None:
            e.add(flow.first_ts)


def order(e: Entry) -> tuple:
    k = e.key
    return (k.src_zone, k.dst_zone, k.src_ip, k.dst_ip, k.protocol, k.port, k.op_class, k.function)


@dataclass(slots=True)
class Diff:
    added: list[Entry]
    removed: list[Entry]
    changed: list[tuple[Entry, Entry]]     # (old, new) with different targets
    devices_added: list[Device]
    devices_removed: list[Device]


def diff(old: Baseline, new: Baseline) -> Diff:
    """What ``new`` has that ``old`` lacks, and the reverse; target ranges compared too."""
    added = [e for k, e in new.entries.items() if k not in old.entries]
    removed = [e for k, e in old.entries.items() if k not in new.entries]
    changed = [(old.entries[k], e) for k, e in new.entries.items()
               if k in old.entries and old.entries[k].targets != e.targets]
    return Diff(sorted(added, key=order), sorted(removed, key=order),
                sorted(changed, key=lambda p: order(p[1])),
                sorted((d for ip, d in new.devices.items() if ip not in old.devices), key=lambda d: d.ip),
                sorted((d for ip, d in old.devices.items() if ip not in new.devices), key=lambda d: d.ip))
