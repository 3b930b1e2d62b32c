"""The end of ``otsec check``: the findings' Text is made in one piece (one string and its
spans) and one_line skips printable text; both give what they gave before, character for
character and style for style."""

import io
import random
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from otsec.cli.check import SEVERITY_STYLE, _findings_text, _print_text
from otsec.detect.checker import Checker
from otsec.engine import analyze
from otsec.policy.loader import load_policy
from otsec.report.wording import CONTROL_CHARS, one_line, zone_label

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "example-plant.yaml"
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"


def scanned(text: str) -> str:
    """one_line as it was: every character scanned."""
    return CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], text)


def test_one_line_on_every_basic_plane_character_and_random_text():
    for code in range(0x10000):
        c = chr(code)
        assert one_line(c) == scanned(c) and one_line(f"a{c}b") == scanned(f"a{c}b"), hex(code)
    rng = random.Random(4)
    for _ in range(2000):
        text = "".join(chr(rng.choice((rng.randrange(0x80), rng.randrange(0x110000)))) for _ in range(12))
        assert one_line(text) == scanned(text)
    assert one_line(7) == "7" and one_line(None) == "None"
    assert one_line("dev\x1b[2J\u202etxt\n") == "dev\\x1b[2J\\u202etxt\\n"


def appended(findings) -> Text:
    """The findings' Text as it was built before: one append per piece."""
    text = Text(f"{len(findings)} findings\n", style="bold")
    for f in findings:
        packets = str(f.first_packet) if f.first_packet == f.last_packet else f"{f.first_packet}-{f.last_packet}"
        src = f"{f.src.label} [{zone_label(f.src.zone)}]"
        dst = f"{f.dst.label} [{zone_label(f.dst.zone)}]" if f.dst else "-"
        proto = f"{f.protocol}/{f.port}" if f.protocol else "-"
        text.append(f"\n{f.severity.upper():8s} ", style=SEVERITY_STYLE[f.severity])
        text.append(f"{f.rule_id}  ", style="bold")
        text.append(one_line(f"{src} -> {dst}  {proto}  x{f.count}  packets {packets}") + "\n")
        text.append(f"         {one_line(f.explanation)}\n")
    return text


@pytest.fixture(scope="module")
def findings():
    checker = Checker(load_policy(POLICY))
    analyze([INCIDENT], on_event=checker.on_event, on_flow=checker.on_flow)
    found = checker.finish()
    assert len({f.severity for f in found}) >= 3      # several styles to place
    found[0].explanation += "\twith a tab, \x1b[31man escape\x1b[0m, a bell\x07, a CR\r and [bold]markup[/bold]"
    found[-1].explanation += "\u00e9\u65e5\U0001f600 wide and accented"
    return found


def render(text: Text, terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, highlight=False, soft_wrap=True, force_terminal=terminal, width=120,
                      color_system="truecolor" if terminal else None)
    _print_text(console, text)
    return buf.getvalue()


def test_findings_text_is_the_appended_text(findings):
    ours, before = _findings_text(findings), appended(findings)
    assert ours.plain == before.plain and ours.spans == before.spans and ours.style == before.style
    for terminal in (True, False):
        assert render(ours, terminal) == render(before, terminal)
    assert "\x1b[" in render(ours, True) and "\x1b" not in render(ours, False)   # styled only on a terminal


def test_no_findings_and_one(findings):
    assert _findings_text([]).plain == appended([]).plain == "0 findings\n"
    one = _findings_text(findings[:1])
    assert one.plain == appended(findings[:1]).plain and one.spans == appended(findings[:1]).spans
