"""The compliance report as one self-contained HTML file (inline CSS, inline SVG, no script).

Escaping discipline: every string is escaped by :func:`el` unless it is :class:`Markup`,
and only :func:`el` itself, the fixed stylesheet and the sanitised diagram SVG
(:func:`otsec.report.diagram.sanitize`) create Markup. Device names, OPC UA application
names and S7 module strings come from the wire and are plain ``str`` everywhere, so they
are escaped wherever they land. A Content-Security-Policy without script sources is a
second line of defence, not the first.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Iterable

from otsec.report.compliance import OUTSIDE, STATUS_LABELS
from otsec.report.wording import count

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
#: Elements without content or end tag.
VOID = frozenset({"br", "meta"})


class Markup(str):
    """A string that is already safe HTML."""


def esc(value) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(escape("" if value is None else str(value), quote=True))


def el(tag: str, *children, **attrs) -> Markup:
    """``<tag attrs>children</tag>``; ``class_`` for class. Strings and numbers escaped."""
    parts = [f"<{tag}"]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f' {name}="{esc(value)}"')
    parts.append(">")
    if tag in VOID:
        return Markup("".join(parts))
    for child in _flatten(children):
        parts.append(esc(child))
    parts.append(f"</{tag}>")
    return Markup("".join(parts))


def _flatten(items) -> Iterable:
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        elif item is not None:
            yield item


STYLE = Markup("""
:root{--ink:#1b1f23;--muted:#57606a;--line:#d0d7de;--met:#1a7f37;--partly:#9a6700;--not:#c00000;--na:#57606a}
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);margin:0;line-height:1.45;font-size:14px}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;border-bottom:2px solid var(--line);padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin:18px 0 6px}
.meta{color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa;white-space:nowrap}
tr.flag td{background:#fdecea}
.status{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:12px;white-space:nowrap}
.st-met{background:var(--met)}.st-partly_met{background:var(--partly)}.st-not_met{background:var(--not)}.st-not_assessable{background:var(--na)}
.res{font-weight:600;text-transform:uppercase;font-size:11px}
.res-pass{color:var(--met)}.res-fail{color:var(--not)}.res-info,.res-n\\/a{color:var(--muted)}
section.principle{border:1px solid var(--line);border-radius:8px;padding:4px 16px 12px;margin:16px 0}
section.principle h2{border:none;margin-top:12px}
.asks{font-style:italic;color:var(--muted)}
ul.items{margin:4px 0 8px 18px;padding:0}ul.items li{margin:1px 0}
.matrix td{text-align:center;font-size:12px}
.cell-violation{background:#f4c7c3;font-weight:600}.cell-allowed-used{background:#d4edda}
.cell-conduit-unused{background:#fdecea}.cell-observed-not-allowed{background:#f4c7c3}
.cell-denied{color:var(--muted)}.cell-intra-zone{background:#f6f8fa}
.diagram{border:1px solid var(--line);border-radius:8px;padding:8px;text-align:center}
.diagram svg{max-width:100%;height:auto}
.legend span{margin-right:16px}
.sw{display:inline-block;width:22px;height:0;border-top:3px solid;vertical-align:middle;margin-right:4px}
code{font-size:12px}
@media print{
 body{font-size:10.5pt}main{max-width:none;padding:0}
 nav{display:none}
 section.principle,table,.diagram{break-inside:avoid}
 h2{break-after:avoid}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 @page{size:A4;margin:14mm}
}
""")


def _status(status: str) -> Markup:
    return el("span", STATUS_LABELS[status], class_=f"status st-{status}")


def _time(ts) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(t: dict) -> Markup:
    head = el("tr", [el("th", c) for c in t["columns"]])
    rows = [el("tr", [el("td", v) for v in row], class_="flag" if flag else None)
            for row, flag in zip(t["rows"], t["flagged"])]
    if not rows:
        rows = [el("tr", el("td", "none observed", colspan=len(t["columns"])))]
    return Markup(el("h3", t["title"]) + el("table", el("thead", head), el("tbody", rows)))


def _principle(p: dict) -> Markup:
    checks = []
    for c in p["checks"]:
        crit = " (critical)" if c["critical"] else ""
        checks.append(el("tr",
                         el("td", c["id"]),
                         el("td", el("span", c["result"], class_=f"res res-{c['result']}")),
                         el("td", el("strong", c["title"] + crit), el("br"), c["summary"],
                            el("ul", [el("li", i) for i in c["items"]], class_="items") if c["items"] else None),
                         class_="flag" if c["result"] == "fail" else None))
    body = [
        el("h2", f"P{p['number']}. {p['title']} ", _status(p["status"])),
        el("p", p["asks"], class_="asks"),
        el("p", el("strong", "Why this status: "), p["status_reason"]),
        el("table", el("thead", el("tr", el("th", "check"), el("th", "result"), el("th", "evidence"))),
           el("tbody", checks)),
        [_table(t) for t in p["tables"]],
        el("h3", "Recommendations"), el("ul", [el("li", r) for r in p["recommendations"]]),
        el("h3", "What traffic cannot show: please supply"),
        el("ul", [el("li", s) for s in p["user_must_supply"]]),
    ]
    return el("section", body, class_="principle", id=f"p{p['number']}")


def _assets(assets: list[dict]) -> Markup:
    cols = ["name", "IP", "zone", "declared role", "observed role", "vendor", "product", "firmware",
            "identity", "MAC", "status"]
    rows = []
    for a in assets:
        ident = "; ".join(f"{k}={v}" for k, v in sorted(a["identity"].items()))
        rows.append(el("tr", [el("td", v or "-") for v in (
            a["name"], a["ip"], a["zone"] or "outside every zone", a["declared_role"],
            a["observed_role"], a["vendor"], a["product"], a["firmware"], ident, ", ".join(a["macs"]), a["status"])],
            class_="flag" if a["status"] != "declared, seen" else None))
    return el("table", el("thead", el("tr", [el("th", c) for c in cols])), el("tbody", rows))


def _zone_label(z: str) -> str:
    return "outside every zone" if z == OUTSIDE else z


def _matrix(m: dict) -> Markup:
    zones = m["zones"]
    cells = {(c["from"], c["to"]): c for c in m["cells"]}
    head = el("tr", el("th", "from \\ to"), [el("th", _zone_label(z)) for z in zones])
    rows = []
    for a in zones:
        tds = []
        for b in zones:
            c = cells[(a, b)]
            lines = [c["state"]]
            if c["conduit"] and c["state"] != "denied":
                lines.append(f"conduit {c['conduit']}")
            if c["observed_flows"]:
                lines.append(f"{count(c['observed_flows'], 'flow')}: {', '.join(c['services'])}")
            if c["violation_rules"]:
                lines.append(", ".join(c["violation_rules"]))
            parts = []
            for i, line in enumerate(lines):
                if i:
                    parts.append(el("br"))
                parts.append(line)
            tds.append(el("td", parts, class_="cell-" + c["state"].replace(", ", "-").replace(" ", "-")))
        rows.append(el("tr", el("th", _zone_label(a)), tds))
    return el("table", el("thead", head), el("tbody", rows), class_="matrix")


def _findings(findings: list[dict]) -> Markup:
    cols = ["rule", "severity", "source", "destination", "service", "count", "explanation", "status"]
    rows = []
    for f in findings:
        dst = f["dst"]
        rows.append(el("tr", [el("td", v) for v in (
            f["rule"], f["severity"], f"{f['src']['name'] or f['src']['ip']} ({f['src']['zone'] or 'outside'})",
            f"{dst['name'] or dst['ip']} ({dst['zone'] or 'outside'})" if dst else "-",
            f"{f['protocol']}/{f['port']}" if f["protocol"] else "-", f["evidence"]["count"], f["explanation"],
            "accepted: " + f["suppressed"]["reason"] if f["suppressed"] else "active")]))
    return el("table", el("thead", el("tr", [el("th", c) for c in cols])), el("tbody", rows))


def render(report: dict, svg: str | None, diagram_problem: str | None = None) -> str:
    """The HTML document. ``svg`` must come from :func:`otsec.report.diagram.render_svg`."""
    site, scope = report["site"], report["scope"]
    overview = el("table", el("thead", el("tr", el("th", "principle"), el("th", "status"), el("th", "why"))),
                  el("tbody", [el("tr", el("td", el("a", f"P{p['number']}. {p['title']}", href=f"#p{p['number']}")),
                                  el("td", _status(p["status"])), el("td", p["status_reason"]))
                               for p in report["principles"]]))
    caps = el("ul", [el("li", f"{c['path']} - {c['packets']} packets, {_time(c['first_ts'])} to {_time(c['last_ts'])}"
                            + (f" - damaged: {c['error']}" if c["error"] else ""))
                     for c in scope["captures"]]
              + [el("li", f"stored check run {r['id']} ({r['started_at']}), findings only: {', '.join(r['captures'])}")
                 for r in scope["stored_check_runs"]])
    baseline = scope["baseline"]
    diagram = (el("div", Markup(svg), class_="diagram") if svg is not None
               else el("p", f"Diagram not drawn: {diagram_problem}", class_="meta"))
    legend = el("p", el("span", el("span", "", class_="sw", style="border-color:#1f4e79"), "observed, allowed"),
                el("span", el("span", "", class_="sw", style="border-color:#c00000"), "observed with a violation"),
                el("span", el("span", "", class_="sw", style="border-color:#8c8c8c;border-top-style:dashed"),
                   "declared conduit, no traffic"), class_="legend")
    conduits = el("table", el("thead", el("tr", [el("th", c) for c in ("conduit", "zones", "initiator", "allows", "observed flows")])),
                  el("tbody", [el("tr", el("td", c["name"]), el("td", " - ".join(c["zones"])), el("td", c["initiator"]),
                                  el("td", el("ul", [el("li", a) for a in c["allow"]], class_="items") if c["allow"] else "nothing"),
                                  el("td", c["observed_flows"]), class_=None if c["used"] else "flag")
                               for c in report["conduits"]]))
    main = el("main",
              el("h1", f"Secure connectivity assessment: {site['name']}"),
              el("p", f"Against the {report['framework']}. Policy {site['policy']} ({site['zones']} zones, "
                      f"{site['assets']} assets, {site['conduits']} conduits). Generated {report['generated_at']}.",
                 class_="meta"),
              el("p", f"Traffic: {count(scope['flows'], 'flow')} and {count(scope['events'], 'decoded message')} from "
                      f"{_time(scope['first_ts'])} to {_time(scope['last_ts'])}. Baseline: "
                      + (f"{baseline['communications']} communications, {baseline['devices']} devices."
                         if baseline else "none."), class_="meta"),
              caps,
              el("h2", "Summary"), overview,
              el("h2", "Zones, conduits and observed flows"), legend, diagram,
              el("h2", "Zone x zone conduit matrix"),
              el("p", "Rows: the zone that opened the connection; columns: the zone that answered.", class_="meta"),
              _matrix(report["conduit_matrix"]),
              el("h3", "Declared conduits"), conduits,
              el("h2", "Principles"),
              [_principle(p) for p in report["principles"]],
              el("h2", "Asset inventory"), _assets(report["assets"]),
              el("h2", "Findings"), _findings(report["findings"]) if report["findings"] else el("p", "No findings."))
    head = el("head", el("meta", charset="utf-8"),
              el("meta", http_equiv="Content-Security-Policy", content=CSP),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("title", f"Secure connectivity assessment: {site['name']}"),
              el("style", STYLE))
    return "<!DOCTYPE html>\n" + el("html", head, el("body", main), lang="en") + "\n"
