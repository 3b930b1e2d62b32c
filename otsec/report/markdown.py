"""The compliance report as Markdown: the same sections and content as the HTML.

Every string goes through :func:`md`, which neutralises both Markdown syntax and raw
HTML (many Markdown viewers pass HTML through), so a device name from the wire is
shown as text. The diagram is given as its list of edges (Markdown cannot carry the
SVG portably); the matrix and the edges hold the same information.
"""

from __future__ import annotations

import datetime as dt
import re

from otsec.report.compliance import OUTSIDE, STATUS_LABELS, UNUSED
from otsec.report.wording import count

#: Characters that open or close inline Markdown syntax (emphasis, code, links, tables,
#: strike-through); links cannot form without an unescaped ``[``.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")

#: ``<`` that could open raw HTML, a comment, a processing instruction or an autolink, and
#: ``&`` that could form a character reference: backslash-escaped (CommonMark shows them as
#: text). A ``>`` closes nothing once no ``<`` opened, so ``hmi-1 -> plc`` stays as it is.
_MD_HTML = re.compile(r"(<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;))")

#: Block syntax at the start of a list item's text: heading, quote, bullet, ordered list.
_MD_LEADING = re.compile(r"^(#{1,6}(?=\s|$)|>|[-+](?=\s|$)|\d{1,9}(?=[.)](?:\s|$)))")


def md(value) -> str:
    """Text shown as text in Markdown: inline syntax, HTML and leading block markers escaped,
    everything else (``->``, ``a < b``, ``R&D``) left readable."""
    text = "" if value is None else str(value)
    text = " ".join(text.split())               # no line breaks inside a cell or a list item
    text = _MD_HTML.sub(r"\\\1", _MD_SPECIAL.sub(r"\\\1", text))
    m = _MD_LEADING.match(text)
    if m:
        text = (text[:m.end()] + "\\" + text[m.end():]) if text[0].isdigit() else "\\" + text
    return text


def _time(ts) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(columns: list[str], rows: list[list], flagged: list[bool] | None = None) -> list[str]:
    flagged = flagged or [False] * len(rows)
    out = ["| " + " | ".join(md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    if not rows:
        out.append("| " + " | ".join(["none observed"] + [""] * (len(columns) - 1)) + " |")
    for row, flag in zip(rows, flagged):
        cells = [md(v) if v not in (None, "") else "-" for v in row]
        if flag:
            cells[0] = "**(!)** " + cells[0]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def _zone(z: str) -> str:
    return "outside every zone" if z == OUTSIDE else z


def render(report: dict) -> str:
    site, scope = report["site"], report["scope"]
    L: list[str] = []
    L += [f"# Secure connectivity assessment: {md(site['name'])}", "",
          f"Against the {md(report['framework'])}. Policy {md(site['policy'])} ({site['zones']} zones, "
          f"{site['assets']} assets, {site['conduits']} conduits). Generated {md(report['generated_at'])}.", "",
          f"Traffic: {count(scope['flows'], 'flow')} and {count(scope['events'], 'decoded message')} from "
          f"{md(_time(scope['first_ts']))} to {md(_time(scope['last_ts']))}. Baseline: "
          + (f"{scope['baseline']['communications']} communications, {scope['baseline']['devices']} devices."
             if scope["baseline"] else "none."), ""]
    for c in scope["captures"]:
        L.append(f"- {md(c['path'])}: {c['packets']} packets, {md(_time(c['first_ts']))} to {md(_time(c['last_ts']))}"
                 + (f", damaged: {md(c['error'])}" if c["error"] else ""))
    for r in scope["stored_check_runs"]:
        L.append(f"- stored check run {r['id']} ({md(r['started_at'])}), findings only: {md(', '.join(r['captures']))}")
    L += ["", "**(!)** marks a row that breaches the design or needs attention.", "", "## Summary", ""]
    L += _table(["principle", "status", "why"],
                [[f"P{p['number']}. {p['title']}", STATUS_LABELS[p["status"]], p["status_reason"]]
                 for p in report["principles"]])
    L += ["## Zones, conduits and observed flows", "", "Edges of the diagram (the HTML report draws them):", ""]
    L += _table(["from", "to", "kind", "label", "conduit", "violation"],
                [[_zone(e["from"]), _zone(e["to"]), e["kind"], e["label"], e["conduit"] or "none",
                  "yes" if e["violation"] else "no"] for e in report["diagram"]["edges"]],
                [e["violation"] for e in report["diagram"]["edges"]])
    m = report["conduit_matrix"]
    cells = {(c["from"], c["to"]): c for c in m["cells"]}
    L += ["## Zone x zone conduit matrix", "", "Rows: the zone that opened the connection; columns: the zone that answered.", ""]
    rows, flags = [], []
    for a in m["zones"]:
        row = [_zone(a)]
        for b in m["zones"]:
            c = cells[(a, b)]
            text = c["state"]
            if c["conduit"] and c["state"] != "denied":
                text += f"; conduit {c['conduit']}"
            if c["observed_flows"]:
                text += f"; {count(c['observed_flows'], 'flow')}: {', '.join(c['services'])}"
            if c["violation_rules"]:
                text += "; " + ", ".join(c["violation_rules"])
            row.append(text)
        rows.append(row)
        flags.append(any(cells[(a, b)]["violations"] or cells[(a, b)]["state"] == UNUSED for b in m["zones"]))
    L += _table(["from \\ to"] + [_zone(z) for z in m["zones"]], rows, flags)
    L += ["### Declared conduits", ""]
    L += _table(["conduit", "zones", "initiator", "allows", "observed flows"],
                [[c["name"], " - ".join(c["zones"]), c["initiator"], "; ".join(c["allow"]) or "nothing",
                  c["observed_flows"]] for c in report["conduits"]],
                [not c["used"] for c in report["conduits"]])
    L += ["## Principles", ""]
    for p in report["principles"]:
        L += [f"### P{p['number']}. {md(p['title'])}: {STATUS_LABELS[p['status']]}", "",
              f"_{md(p['asks'])}_", "", f"**Why this status:** {md(p['status_reason'])}", ""]
        for c in p["checks"]:
            crit = " (critical)" if c["critical"] else ""
            L.append(f"- **{md(c['id'])} {c['result'].upper()}** {md(c['title'])}{crit}: {md(c['summary'])}")
            L += [f"    - {md(i)}" for i in c["items"]]
        L.append("")
        for t in p["tables"]:
            L += [f"#### {md(t['title'])}", ""] + _table(t["columns"], t["rows"], t["flagged"])
        L += ["#### Recommendations", ""] + [f"- {md(r)}" for r in p["recommendations"]] + [""]
        L += ["#### What traffic cannot show: please supply", ""] + [f"- {md(s)}" for s in p["user_must_supply"]] + [""]
    L += ["## Asset inventory", ""]
    L += _table(["name", "IP", "zone", "declared role", "observed role", "vendor", "product", "firmware",
                 "identity", "MAC", "status"],
                [[a["name"], a["ip"], a["zone"] or "outside every zone", a["declared_role"], a["observed_role"],
                  a["vendor"], a["product"], a["firmware"],
                  "; ".join(f"{k}={v}" for k, v in sorted(a["identity"].items())), ", ".join(a["macs"]), a["status"]]
                 for a in report["assets"]],
                [a["status"] != "declared, seen" for a in report["assets"]])
    L += ["## Findings", ""]
    if report["findings"]:
        L += _table(["rule", "severity", "source", "destination", "service", "count", "explanation", "status"],
                    [[f["rule"], f["severity"], f"{f['src']['name'] or f['src']['ip']} ({f['src']['zone'] or 'outside'})",
                      f"{f['dst']['name'] or f['dst']['ip']} ({f['dst']['zone'] or 'outside'})" if f["dst"] else "-",
                      f"{f['protocol']}/{f['port']}" if f["protocol"] else "-", f["evidence"]["count"],
                      f["explanation"], "accepted: " + f["suppressed"]["reason"] if f["suppressed"] else "active"]
                     for f in report["findings"]])
    else:
        L += ["No findings.", ""]
    return "\n".join(L).rstrip() + "\n"
