"""Small wording helpers shared by every renderer (terminal, HTML, Markdown)."""

import re
from typing import Any

#: C0 controls and DEL: written as escapes so a value from the wire cannot start a new line
#: or drive a terminal.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: Any) -> str:
    """``text`` with control characters as escapes (``\\n``, ``\\x1b``): one line, always."""
    return CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], str(text))


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 flow', '2 flows', '0 flows'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: How a terminal names the side of a finding or baseline entry that lies in no zone.
EXTERNAL = "external"


def zone_label(zone: str | None) -> str:
    """A zone name, or ``external`` for an address outside every zone (check, baseline)."""
    return zone or EXTERNAL
