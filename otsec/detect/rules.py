"""The detection catalogue: stable rule ids, severities and titles.

Ids are part of the user contract (suppressions, SIEM rules and pipelines refer to
them), so an id is never reused or renumbered; a retired rule keeps its id reserved.
docs/detections.md describes every rule: what triggers it, evidence, how to respond.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Severities in increasing order; ``--fail-on`` compares positions in this tuple.
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: str          # the detection family, as in the issue: conduit, device, ...
    severity: str
    title: str


_RULES = (
    Rule("OTSEC-CONDUIT-001", "conduit violation", "high", "traffic between zones with no conduit"),
    Rule("OTSEC-CONDUIT-002", "conduit violation", "high", "connection opened from the wrong side of a conduit"),
    Rule("OTSEC-CONDUIT-003", "conduit violation", "high", "protocol or port not allowed on the conduit"),
    Rule("OTSEC-CONDUIT-004", "conduit violation", "high", "source or destination not allowed on the conduit"),
    Rule("OTSEC-CONDUIT-005", "conduit violation", "high", "operation class not allowed on the conduit"),
    Rule("OTSEC-DEVICE-001", "new device", "medium", "undeclared device not in the baseline"),
    Rule("OTSEC-NEWCOMM-001", "new communication", "low", "communication never seen in the baseline"),
    Rule("OTSEC-NEWCOMM-002", "new communication", "low", "known communication touching new targets"),
    Rule("OTSEC-UNSAFE-001", "unsafe operation", "high", "unauthorised write to process values"),
    Rule("OTSEC-UNSAFE-002", "unsafe operation", "critical", "unauthorised program/configuration change"),
    Rule("OTSEC-UNSAFE-003", "unsafe operation", "critical", "unauthorised run-state control"),
    Rule("OTSEC-UNSAFE-004", "unsafe operation", "high", "unauthorised unsafe function"),
    Rule("OTSEC-INSECURE-001", "insecure protocol", "high",
         "OPC UA security mode below the conduit's requirement"),
    Rule("OTSEC-INSECURE-002", "insecure protocol", "medium",
         "cleartext industrial protocol across a zone boundary"),
    Rule("OTSEC-INSECURE-003", "insecure protocol", "high",
         "IT remote-access/admin protocol into a control level"),
    Rule("OTSEC-EXTERNAL-001", "external connection", "high", "OT host talking to an address outside every zone"),
    Rule("OTSEC-ANOMALY-001", "protocol anomaly", "medium", "malformed or invalid protocol message"),
    Rule("OTSEC-ANOMALY-002", "protocol anomaly", "low", "response without a matching request"),
    Rule("OTSEC-ANOMALY-003", "protocol anomaly", "high", "function-code sweep"),
    Rule("OTSEC-ANOMALY-004", "protocol anomaly", "high", "unit-id sweep"),
)

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
