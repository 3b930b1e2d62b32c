"""Small wording helpers shared by every renderer (terminal, HTML, Markdown)."""


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 flow', '2 flows', '0 flows'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
