"""The HTML report in a real browser (headless Chromium): it renders with no console message,
the diagram SVG is in the DOM, nothing is fetched from outside; and everything from the wire
is escaped: a Modbus device whose vendor name is a script tag shows as text in HTML,
Markdown and the diagram sanitiser."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from otsec.cli.report import report
from otsec.report import diagram, markdown

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "example-plant.yaml"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"
HOSTILE_PRODUCT = "<img src=x onerror=alert(2)>|**x**"

app = typer.Typer()
app.command("report")(report)
app.command("unused")(lambda: None)
runner = CliRunner()

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed "
                                    "(scripts/install-system-deps.sh installs it)")
needs_dot = pytest.mark.skipif(subprocess.run(["which", "dot"], capture_output=True).returncode != 0,
                               reason="Graphviz dot not installed (scripts/install-system-deps.sh installs it)")


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """Load ``page`` headless; stdout is the DOM after load, stderr the browser log
    (console messages appear there as ``CONSOLE`` lines)."""
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r":CONSOLE[:(]", line)]


def make_report(tmp: Path, fmt: str, *captures: Path) -> Path:
    out = tmp / f"report.{fmt}"
    args = ["report", "--policy", POLICY, "--db", tmp / "site.db", "--format", fmt, "-o", out]
    for c in captures:
        args += ["--from", c]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return out


def hostile_capture(path: Path) -> Path:
    """hmi-1 asks plc-modbus for its identity (FC 43/14); the PLC answers with a vendor
    name and product code that are HTML."""
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "pcaps" / "make_examples.py")
    mk = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_examples", mk)   # its dataclasses look their module up
    spec.loader.exec_module(mk)
    cap = mk.Capture("hostile", mk.INCIDENT_START, mk.SEED)
    conn = mk.TcpConnection(cap, cap.at(1), mk.asset("hmi-1"), mk.asset("plc-modbus"), 49999, 502,
                            1000, 2000).open()
    conn.exchange(mk.mbap(1, mk.modbus_read_device_id_request()),
                  mk.mbap(1, mk.modbus_read_device_id_response([(0, HOSTILE), (1, HOSTILE_PRODUCT), (2, "v1")])))
    conn.close()
    cap.write(path)
    return path


@needs_chromium
def test_console_detection_works(tmp_path):
    """Control: the log parsing used below does see a console message."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("marker-123")</script>')
    r = chromium(page, tmp_path, "--dump-dom")
    assert any("marker-123" in line for line in console_lines(r.stderr)), r.stderr


@needs_chromium
@needs_dot
def test_html_renders_without_console_messages_and_with_the_diagram(tmp_path):
    page = make_report(tmp_path, "html", INCIDENT)
    text = page.read_text()
    assert not re.search(r"<(script|link|img|iframe)\b", text), "the report must be self-contained, with no script"
    assert not re.search(r"(src|href)=\"(https?:|//)", text)
    r = chromium(page, tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr
    assert console_lines(r.stderr) == []
    dom = r.stdout
    assert dom.count('<section class="principle"') == 8
    svg = re.search(r"<svg\b.*?</svg>", dom, re.S)
    assert svg, "diagram SVG missing from the rendered DOM"
    assert svg.group(0).count('class="node"') == 6        # five zones and "outside every zone"
    assert 'stroke="#c00000"' in svg.group(0)              # violations drawn in red
    assert "enterprise" in svg.group(0) and "https/443 (1)" in svg.group(0)
    shot = tmp_path / "shot.png"
    r = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.stat().st_size > 50_000                    # a real page, not a blank one


@needs_chromium
@needs_dot
def test_hostile_device_names_are_escaped(tmp_path):
    cap = hostile_capture(tmp_path / "hostile.pcap")
    page = make_report(tmp_path, "html", cap)
    text = page.read_text()
    assert HOSTILE not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    r = chromium(page, tmp_path, "--dump-dom")
    assert console_lines(r.stderr) == []                   # neither alert() nor a CSP report
    assert "<script" not in r.stdout and "<img" not in r.stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.stdout   # shown as text in the inventory
    md = make_report(tmp_path, "md").read_text()           # the same database, no --from
    assert r"\<script>alert(1)\</script>" in md and r"\<img src=x onerror=alert(2)>\|\*\*x\*\*" in md
    shown = render_markdown(md)                            # as a CommonMark viewer (raw HTML on) shows it
    assert "<script" not in shown and "<img" not in shown and "<strong>x" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown


def render_markdown(text: str) -> str:
    """HTML of ``text`` as a CommonMark viewer that passes raw HTML through renders it."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


@pytest.mark.parametrize("wire,raw", [
    ("hmi-1 -> plc-modbus", "hmi-1 -> plc-modbus"),         # readable: no entities, no needless escapes
    ("a < b & R&D", "a < b & R&D"),
    ("a|b *c* _d_ `e` ~f~ [g](h)", r"a\|b \*c\* \_d\_ \`e\` \~f\~ \[g\](h)"),
    ("<b>x</b> &lt; &#60;", r"\<b>x\</b> \&lt; \&#60;"),
    ("<!-- c --> <?php ?> <http://evil>", r"\<!-- c --> \<?php ?> \<http://evil>"),
    ("# heading", r"\# heading"), ("> quote", r"\> quote"), ("- item", r"\- item"), ("1. item", r"1\. item"),
    ("-", r"\-"), ("2026-01-05", "2026-01-05"), ("two\nlines", "two lines"),
])
def test_markdown_escaping_keeps_wire_text_literal_and_readable(wire, raw):
    assert markdown.md(wire) == raw
    # in a list item and in a table cell the viewer shows exactly the wire text
    item = render_markdown("- " + markdown.md(wire))
    assert html.unescape(re.sub(r"<[^>]+>", "", item)).strip() == " ".join(wire.split())
    cell = render_markdown(f"| a |\n|---|\n| {markdown.md(wire)} |\n")
    assert html.unescape(re.sub(r"<[^>]+>", "", cell)).split() == ["a"] + wire.split()


def test_svg_sanitiser_keeps_shapes_and_drops_everything_active():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" '
           'onload="alert(1)"><script>alert(2)</script><g id="n1" class="node"><title>&lt;script&gt;</title>'
           '<a xlink:href="javascript:alert(3)"><text x="1" y="2">link</text></a>'
           '<polygon fill="url(javascript:alert(4))" stroke="#c00000" points="0,0 1,1"/>'
           '<foreignObject><div>html</div></foreignObject><text x="1" y="2">ok &amp; &lt;b&gt;</text></g></svg>')
    out = diagram.sanitize(svg)
    for bad in ("onload", "<script", "alert(2)", "javascript", "foreignObject", "<div", "href", "url("):
        assert bad not in out
    assert 'stroke="#c00000"' in out and "ok &amp; &lt;b&gt;" in out and "&lt;script&gt;" in out
    assert out.startswith("<svg") and 'width="10"' in out


@needs_dot
def test_dot_labels_cannot_break_out():
    d = {"nodes": [{"id": "a", "label": 'x" shape=none label="pwn', "level": 1, "detail": "\\N <b>"},
                   {"id": "b", "label": "b", "level": 2, "detail": ""}],
         "edges": [{"from": "a", "to": "b", "kind": "observed", "label": "</text><script>", "conduit": None,
                    "violation": True}]}
    out = diagram.render_svg(d)
    assert "<script" not in out and "&lt;/text&gt;&lt;script&gt;" in out
    assert 'x" shape=none label="pwn' in out.replace("&quot;", '"') and "\\N &lt;b&gt;" in out
