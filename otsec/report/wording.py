"""Small wording helpers shared by every renderer (terminal, HTML, Markdown)."""


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 flow', '2 flows', '0 flows'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: How a terminal names the side of a finding or baseline entry that lies in no zone.
EXTERNAL = "external"


def zone_label(zone: str | None) -> str:
    """A zone name, or ``external`` for an address outside every zone (check, baseline)."""
    return zone or EXTERNAL
