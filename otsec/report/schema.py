"""JSON Schema (draft 2020-12) of the compliance report that ``otsec report --format json``
writes; the HTML and Markdown renderers read the same structure. Bump
:data:`otsec.report.compliance.SCHEMA_ID` on any incompatible change."""

from __future__ import annotations

from otsec.report.compliance import RESULTS, SCHEMA_ID, STATUS_LABELS

_str = {"type": "string"}
_opt_str = {"type": ["string", "null"]}
_int = {"type": "integer", "minimum": 0}
_ts = {"type": ["number", "null"]}
_strs = {"type": "array", "items": _str}


def _obj(required: dict, optional: dict | None = None) -> dict:
    props = {**required, **(optional or {})}
    return {"type": "object", "properties": props, "required": sorted(required), "additionalProperties": False}


_endpoint = _obj({"ip": _opt_str, "name": _opt_str, "zone": _opt_str, "mac": _opt_str})

TABLE = _obj({
    "title": _str, "columns": _strs,
    "rows": {"type": "array", "items": {"type": "array", "items": _str}},
    "flagged": {"type": "array", "items": {"type": "boolean"}},
})

CHECK = _obj({
    "id": {"type": "string", "pattern": r"^P[1-8]\.[0-9]+$"}, "title": _str, "critical": {"type": "boolean"},
    "result": {"enum": list(RESULTS)}, "summary": _str, "items": _strs,
})

PRINCIPLE = _obj({
    "number": {"type": "integer", "minimum": 1, "maximum": 8}, "title": _str, "asks": _str,
    "traffic_can_prove": {"type": "boolean"}, "status": {"enum": list(STATUS_LABELS)},
    "status_label": {"enum": list(STATUS_LABELS.values())}, "status_reason": _str,
    "checks": {"type": "array", "items": CHECK, "minItems": 1}, "tables": {"type": "array", "items": TABLE},
    "recommendations": {"type": "array", "items": _str, "minItems": 1},
    "user_must_supply": {"type": "array", "items": _str, "minItems": 1},
})

ASSET = _obj({
    "ip": _opt_str, "name": _opt_str, "zone": _opt_str, "declared_role": _opt_str, "criticality": _opt_str,
    "observed_role": _opt_str, "role_evidence": _opt_str, "vendor": _opt_str, "product": _opt_str,
    "firmware": _opt_str, "identity": {"type": "object", "additionalProperties": _str},
    "macs": _strs, "flows": _int, "status": {"enum": ["declared, seen", "declared, not seen", "undeclared"]},
})

CELL = _obj({
    "from": _str, "to": _str, "conduit": _opt_str, "allowed": {"type": "boolean"}, "observed_flows": _int,
    "services": _strs, "violations": _int, "violation_rules": _strs,
    "state": {"enum": ["violation", "intra-zone", "allowed, used", "conduit, unused", "observed, not allowed",
                       "denied"]},
})

FINDING = _obj({
    "rule": {"type": "string", "pattern": r"^OTSEC-[A-Z]+-[0-9]{3}$"}, "severity": _str, "kind": _str,
    "title": _str, "explanation": _str, "src": _endpoint, "dst": {"anyOf": [_endpoint, {"type": "null"}]},
    "zones": {"type": "array", "items": _opt_str}, "protocol": _opt_str,
    "port": {"type": ["integer", "null"]},
    "evidence": _obj({"count": _int, "first_ts": _ts, "last_ts": _ts,
                      "first_packet": {"type": ["integer", "null"]}, "last_packet": {"type": ["integer", "null"]},
                      "first_capture": _opt_str, "last_capture": _opt_str,
                      "samples": {"type": "object", "additionalProperties": {
                          "type": "object", "additionalProperties": {"type": "integer"}}},
                      "samples_dropped": _int}),
    "suppressed": {"anyOf": [{"type": "null"}, _obj({"reason": _str, "rule": _opt_str, "expires": _opt_str})]},
})

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"urn:otsec:{SCHEMA_ID}",
    "title": "otsec compliance report (NCSC secure connectivity principles for OT)",
    **_obj({
        "schema": {"const": SCHEMA_ID},
        "framework": _str,
        "generated_at": _str,
        "site": _obj({"name": _str, "policy": _str, "zones": _int, "assets": _int, "conduits": _int}),
        "scope": _obj({
            "captures": {"type": "array", "items": _obj({
                "path": _str, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "packets": {"type": ["integer", "null"]}, "first_ts": _ts, "last_ts": _ts,
                "error": _opt_str, "analyzed_at": _opt_str})},
            "stored_check_runs": {"type": "array", "items": _obj({
                "id": _int, "started_at": _opt_str, "policy": _opt_str, "captures": _strs})},
            "first_ts": _ts, "last_ts": _ts, "flows": _int, "events": _int,
            "baseline": {"anyOf": [{"type": "null"}, _obj({"communications": _int, "devices": _int})]},
        }),
        "overall": _obj({s: _int for s in STATUS_LABELS}),
        "principles": {"type": "array", "items": PRINCIPLE, "minItems": 8, "maxItems": 8},
        "assets": {"type": "array", "items": ASSET},
        "conduits": {"type": "array", "items": _obj({
            "name": _str, "zones": {"type": "array", "items": _str, "minItems": 2, "maxItems": 2},
            "initiator": _str, "allow": _strs, "description": _str, "observed_flows": _int,
            "used": {"type": "boolean"}})},
        "conduit_matrix": _obj({"zones": _strs, "cells": {"type": "array", "items": CELL}}),
        "diagram": _obj({
            "nodes": {"type": "array", "items": _obj({"id": _str, "label": _str,
                                                      "level": {"type": ["number", "null"]}, "detail": _str})},
            "edges": {"type": "array", "items": _obj({
                "from": _str, "to": _str, "kind": {"enum": ["observed", "declared"]}, "label": _str,
                "conduit": _opt_str, "violation": {"type": "boolean"}})},
        }),
        "findings": {"type": "array", "items": FINDING},
    }),
}
