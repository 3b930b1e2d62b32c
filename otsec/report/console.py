"""Terminal rendering of the analyze summary with rich.

Everything shown comes from the wire, so it is printed as plain text (markup off),
never interpreted as rich markup.
"""

from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table
from rich.text import Text

from otsec.report.wording import one_line

#: Identity fields worth a column; the JSON summary carries all of them.
IDENTITY_SHOWN = frozenset({"vendor", "product_code", "product", "revision", "order_number",
                            "module", "module_type", "firmware", "serial_number", "plant_id",
                            "application_name", "application_uri"})
#: Rows of the communication table in the terminal; the JSON summary has every pair.
MAX_PAIRS_SHOWN = 100
OP_ORDER = ("read", "write", "program", "control", "diagnostic", "identify", "session", "other")


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold cyan")
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def add_plain_row(table: Table, *cells) -> None:
    """Add a row whose cells are shown as plain text: wire data is never rich markup, and
    its control characters are shown as escapes (a device name cannot drive the terminal).
    A cell given as a list is shown as one line per item."""
    table.add_row(*(Text("\n".join(map(one_line, c)) if isinstance(c, list) else
                         "" if c is None else one_line(c)) for c in cells))


def _code_text(protocol: str, code: int | None) -> str:
    """Codes as Wireshark users read them: Modbus decimal, S7 userdata as group/subfunction,
    S7 jobs and S7comm-plus hex, OPC UA the service's numeric node id."""
    if code is None:
        return ""
    if protocol == "modbus" or protocol == "opcua":
        return str(code)
    if protocol == "s7comm" and code > 0xFF:
        return f"{code >> 8}/{code & 0xFF}"
    return f"0x{code:02x}"


def render_summary(summary: dict, console: Console) -> None:
    s = summary
    duration = (s["last_ts"] - s["first_ts"]) if s["first_ts"] is not None and s["last_ts"] is not None else 0.0
    head = _table("Capture", "files", "packets", "bytes", "from", "to", "duration", "decoded messages", "flows")
    add_plain_row(head, list(s["captures"]), s["packets"], s["bytes"], _time(s["first_ts"]),
         _time(s["last_ts"]), f"{duration:.1f} s", s["events"], s["flows"])
    console.print(head)

    hosts = _table("Hosts", "IP", "MAC", "vendor (OUI)", "role", "protocols", "identity")
    for column in hosts.columns[:2] + hosts.columns[3:4]:   # addresses and roles never split
        column.no_wrap = True
    for h in s["hosts"]:
        identity = [f"{k}: {v}" for k, v in sorted(h["identity"].items()) if k in IDENTITY_SHOWN]
        mac = list(h["macs"]) or [line for m in h["via_gateway"] for line in ("via gateway", m)]
        protocols = ([f"serves {', '.join(h['serves'])}"] * bool(h["serves"]) +
                     [f"uses {', '.join(h['uses'])}"] * bool(h["uses"]))
        add_plain_row(hosts, h["ip"], mac, h["vendor"] or "", h["role"], protocols, identity)
    console.print(hosts)

    talks = _table("Who talks to whom", "source", "destination", "protocol", "requests", "operations")
    pairs = s["communications"]
    busiest = {id(t) for t in sorted(pairs, key=lambda t: -t["requests"])[:MAX_PAIRS_SHOWN]}
    for t in (t for t in pairs if id(t) in busiest):
        ops = ", ".join(f"{op} {t['operations'][op]}" for op in OP_ORDER if op in t["operations"])
        add_plain_row(talks, t["src"], t["dst"], t["protocol"], t["requests"], ops)
    if len(pairs) > len(busiest):
        talks.caption = f"the {MAX_PAIRS_SHOWN} busiest of {len(pairs)} pairs; --format json lists all"
    if pairs:
        console.print(talks)
    else:
        console.print("No industrial protocol traffic was decoded (see Flows by application below).")

    for proto, rows in s["functions"].items():
        table = _table(f"{proto} functions", "code", "function", "count", "requests", "responses",
                       "exceptions/errors", "notifications")
        for r in rows:
            code = _code_text(proto, r["code"])
            add_plain_row(table, code, r["function"], r["count"], r["requests"], r["responses"],
                 r["exceptions"], r["notifications"])
        console.print(table)

    if s["applications"]:
        apps = _table("Flows by application", "application", "flows")
        for app, n in s["applications"].items():
            add_plain_row(apps, app, n)
        console.print(apps)

    h = s["health"]
    health = _table("Decode health", "measure", "value")
    for label, key in (("malformed packets (link/IP/TCP headers)", "malformed_packets"),
                       ("messages with anomaly flags", "messages_with_anomalies"),
                       ("capture gaps (missing TCP data)", "capture_gaps"),
                       ("bytes missing in gaps", "gap_bytes"),
                       ("resynchronisations", "resyncs"),
                       ("unframeable bytes skipped", "unframeable_bytes"),
                       ("messages truncated at end of capture", "truncated_at_eof"),
                       ("responses without request", "unpaired_responses"),
                       ("requests without response", "unanswered_requests"),
                       ("retransmitted bytes ignored", "retransmitted_bytes"),
                       ("conflicting overlaps", "overlap_conflicts"),
                       ("buffer overflows", "buffer_overflows"),
                       ("flows evicted (table full)", "flows_evicted"),
                       ("decoder errors", "decoder_errors")):
        add_plain_row(health, label, h[key])
    for reason, n in sorted(h["skipped_packets"].items()):
        add_plain_row(health, f"packets skipped: {reason}", n)
    for flag, n in h["anomalies"].items():
        add_plain_row(health, f"anomaly {flag}", n)
    console.print(health)
