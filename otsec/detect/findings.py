"""Findings: aggregated, bounded, suppressible.

A detection reports *occurrences*; the :class:`Aggregator` folds every occurrence with
the same key (rule, source, destination, protocol, port, rule-specific part) into one
:class:`Finding` with a count, first/last time and packet, and a few evidence samples.
Memory is bounded: at most ``MAX_FINDINGS`` findings, ``MAX_SAMPLES`` distinct values
per evidence field; what does not fit is counted, never silently lost.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from otsec.detect.rules import RULES, severity_rank
from otsec.policy.model import Located, Policy, Suppression

MAX_FINDINGS = 10_000
MAX_SAMPLES = 8


@dataclass(slots=True)
class Endpoint:
    ip: str | None
    name: str | None = None        # asset name when declared
    zone: str | None = None
    mac: str | None = None
    role: str | None = None

    @classmethod
    def of(cls, ip: str | None, loc: Located | None, mac: str | None = None) -> "Endpoint":
        if loc is None:
            return cls(ip, mac=mac)
        a = loc.asset
        return cls(ip, a.name if a else None, loc.zone_name, mac, a.role if a else None)

    @property
    def label(self) -> str:
        return self.name or self.ip or "-"

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "name": self.name, "zone": self.zone, "mac": self.mac}


@dataclass(slots=True)
class Finding:
    rule_id: str
    src: Endpoint
    dst: Endpoint | None
    protocol: str | None
    port: int | None
    explanation: str
    count: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    first_packet: int = 0
    last_packet: int = 0
    first_capture: str | None = None
    last_capture: str | None = None
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    samples_dropped: int = 0
    suppressed: Suppression | None = None

    @property
    def severity(self) -> str:
        return RULES[self.rule_id].severity

    @property
    def kind(self) -> str:
        return RULES[self.rule_id].kind

    def add(self, ts: float, packet: int, capture: str | None, samples: dict[str, Any] | None,
            count: int = 1) -> None:
        """Count occurrences with their evidence: ``samples`` maps a field to its value (None
        or "" for none; other values are counted as text)."""
        if samples:
            self.tally(ts, packet, capture, samples.keys(), samples.values(), count)
        else:
            self.tally(ts, packet, capture, (), (), count)

    def _tally_python(self, ts: float, packet: int, capture: str | None, names: Iterable[str],
                      values: Iterable[Any], count: int = 1) -> None:
        """:meth:`add` with the evidence as fields and their values, which a caller reporting the
        same fields again and again keeps as tuples (runs for most checked events: kept to
        plain dict operations). ``tally`` is its compiled twin (otsec/detect/_findings.c)
        where that was built; this stays the reference."""
        if not self.count:
            self.first_ts, self.first_packet, self.first_capture = ts, packet, capture
            self.last_ts, self.last_packet, self.last_capture = ts, packet, capture
        elif ts >= self.last_ts:          # first_ts <= last_ts: not also earlier than the first
            self.last_ts, self.last_packet, self.last_capture = ts, packet, capture
        elif ts < self.first_ts:
            self.first_ts, self.first_packet, self.first_capture = ts, packet, capture
        self.count += count
        buckets = self.samples
        for name, value in zip(names, values):
            if value is None or value == "":
                continue
            if value.__class__ is not str:
                value = str(value)
            bucket = buckets.get(name)
            if bucket is None:
                bucket = buckets[name] = {}
            seen = bucket.get(value)
            if seen is not None:
                bucket[value] = seen + 1
            elif len(bucket) < MAX_SAMPLES:
                bucket[value] = 1
            else:
                self.samples_dropped += 1

    tally = _tally_python

    def to_dict(self) -> dict[str, Any]:
        rule = RULES[self.rule_id]
        return {
            "rule": self.rule_id, "severity": rule.severity, "kind": rule.kind,
            "title": rule.title, "explanation": self.explanation,
            "src": self.src.to_dict(), "dst": self.dst.to_dict() if self.dst else None,
            "zones": [self.src.zone, self.dst.zone if self.dst else None],
            "protocol": self.protocol, "port": self.port,
            "evidence": {
                "count": self.count, "first_ts": self.first_ts, "last_ts": self.last_ts,
                "first_packet": self.first_packet, "last_packet": self.last_packet,
                "first_capture": self.first_capture, "last_capture": self.last_capture,
                "samples": self.samples, "samples_dropped": self.samples_dropped,
            },
            "suppressed": None if self.suppressed is None else {
                "reason": self.suppressed.reason, "rule": self.suppressed.rule,
                "expires": self.suppressed.expires.isoformat() if self.suppressed.expires else None,
            },
        }


try:
    from otsec.detect._findings import bind as _compiled_tally
except ImportError:   # built without a C compiler: the Python method counts
    pass
else:
    Finding.tally = _compiled_tally(Finding, MAX_SAMPLES)


class Aggregator:
    """Folds occurrences into findings by key; bounded by ``MAX_FINDINGS``."""

    def __init__(self, max_findings: int = MAX_FINDINGS):
        self.findings: dict[tuple, Finding] = {}
        self.max_findings = max_findings
        self.dropped = 0

    def add(self, rule_id: str, src: Endpoint, dst: Endpoint | None, protocol: str | None,
            port: int | None, explanation: str | Callable[[], str], ts: float, packet: int, capture: str | None,
            samples: dict[str, Any] | None = None, extra: Any = None, count: int = 1) -> Finding | None:
        """Fold one occurrence in. ``explanation`` may be a function returning the text, called
        only when the occurrence starts a finding (later ones keep the first text)."""
        key = (rule_id, src.ip, dst.ip if dst else None, protocol, port, extra)
        f = self.findings.get(key)
        if f is None:
            if len(self.findings) >= self.max_findings:
                self.dropped += 1
                return None
            if callable(explanation):
                explanation = explanation()
            f = self.findings[key] = Finding(rule_id, src, dst, protocol, port, explanation)
        f.add(ts, packet, capture, samples, count)
        return f

    def sorted(self) -> list[Finding]:
        """Most severe first, then in order of first appearance."""
        return sorted(self.findings.values(), key=lambda f: (-severity_rank(f.severity), f.first_ts, f.rule_id))


def _endpoint_matches(selector: str | None, ep: Endpoint | None, policy: Policy) -> bool:
    if selector is None:
        return True
    if ep is None:
        return False
    if selector in (ep.name, ep.role, ep.ip):
        return True
    if selector in policy.assets:
        return False
    try:
        return ep.ip is not None and ipaddress.ip_address(ep.ip) in ipaddress.ip_network(selector, strict=False)
    except ValueError:
        return False


def suppression_for(f: Finding, policy: Policy, today: dt.date) -> Suppression | None:
    """The first suppression of the policy that matches ``f`` and has not expired."""
    for s in policy.rules.suppressions:
        if s.expires is not None and today > s.expires:
            continue
        if s.rule.endswith("*"):
            if not f.rule_id.startswith(s.rule[:-1]):
                continue
        elif s.rule != f.rule_id:
            continue
        if s.protocol is not None and s.protocol != f.protocol:
            continue
        if _endpoint_matches(s.src, f.src, policy) and _endpoint_matches(s.dst, f.dst, policy):
            return s
    return None


def apply_suppressions(findings: list[Finding], policy: Policy, today: dt.date | None = None) -> None:
    today = today or dt.date.today()
    for f in findings:
        f.suppressed = suppression_for(f, policy, today)
