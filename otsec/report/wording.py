"""Small wording helpers shared by every renderer (terminal, HTML, Markdown)."""

import re
from typing import Any

#: Characters written as escapes so that a value from the wire cannot start a new line or
#: drive a terminal: C0 and C1 controls and DEL (latin-1 text from a device can hold C1's
#: CSI, 0x9b), the Unicode line and paragraph separators, and the bidirectional overrides
#: and isolates that reorder what is displayed.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(text: Any) -> str:
    """``text`` with control characters as escapes (``\\n``, ``\\x1b``): one line, always.
    (Every CONTROL_CHARS character is unprintable: printable text is returned unscanned.)"""
    text = str(text)
    return text if text.isprintable() else CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], text)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 flow', '2 flows', '0 flows'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: How a terminal names the side of a finding or baseline entry that lies in no zone.
EXTERNAL = "external"


def zone_label(zone: str | None) -> str:
    """A zone name, or ``external`` for an address outside every zone (check, baseline)."""
    return zone or EXTERNAL
