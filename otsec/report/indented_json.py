"""``json.dumps(document, indent=2, default=str)``, written in pieces and about three times
faster.

With an indent the standard library encodes in pure Python, one generator step per value
(~60 ms for the 2 MB summary of the 1M-packet benchmark). Here only the containers that
hold containers are walked in Python; a container of scalars is one call of the C encoder
with the item separator that the indented layout puts between its items::

    {"src": "10.0.0.1", "operations": {"read": 3, "write": 1}}     the document
    {                                                             walked in Python
      "src": "10.0.0.1",
      "operations": {                                             one C call with the item
        "read": 3,                                                separator ",\\n    ",
        "write": 1                                                then the brackets on
      }                                                           their own lines
    }

The C and Python encoders write every scalar and key alike (``float.__repr__``,
``int.__repr__``, NaN/Infinity, ASCII escapes, ``default`` for other objects); with
``ensure_ascii`` no encoded string holds a raw newline, so the layout is the separators'.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Callable

#: Spaces per nesting level (json.dumps's ``indent``).
INDENT = 2

#: What the encoder lays out as an array or an object (json.encoder treats them so).
CONTAINERS = (list, tuple, dict)


def write_indented(document, write: Callable[[str], object], pieces_per_write: int) -> None:
    """Write ``json.dumps(document, indent=2, default=str)`` through ``write``, a join of
    at most about ``pieces_per_write`` pieces at a time. ``document`` is a tree (a
    container inside itself recurses until RecursionError, not json's ValueError)."""
    pieces: list[str] = []
    append = pieces.append
    scalar = json.JSONEncoder(default=str).encode
    flat_encoders: dict[int, Callable[[object], str]] = {}

    def container(obj, depth: int) -> None:
        is_dict = isinstance(obj, dict)
        if not obj:
            append("{}" if is_dict else "[]")
            return
        inner = "\n" + " " * (INDENT * (depth + 1))
        closing = "\n" + " " * (INDENT * depth) + ("}" if is_dict else "]")
        for item in obj.values() if is_dict else obj:
            if isinstance(item, CONTAINERS):
                break
        else:                               # scalars only: one C call
            encode = flat_encoders.get(depth + 1)
            if encode is None:
                encode = flat_encoders[depth + 1] = json.JSONEncoder(
                    separators=("," + inner, ": "), default=str).encode
            text = encode(obj)
            append(text[0] + inner + text[1:-1] + closing)
            return
        separator = ("{" if is_dict else "[") + inner
        for k, v in obj.items() if is_dict else enumerate(obj):
            if is_dict:                     # keys as json writes them (int, float, bool, None too)
                head = separator + (encode_basestring_ascii(k) if type(k) is str else
                                    scalar({k: None})[1:-len(": null}")]) + ": "
            else:
                head = separator
            separator = "," + inner
            kind = type(v)
            if kind is str:
                append(head + encode_basestring_ascii(v))
            elif kind is int:
                append(head + int.__repr__(v))
            elif v is None:
                append(head + "null")
            elif isinstance(v, CONTAINERS):
                append(head)
                container(v, depth + 1)
            else:                           # bool, float, subclasses, default=str objects
                append(head + scalar(v))
            if len(pieces) >= pieces_per_write:
                write("".join(pieces))
                pieces.clear()
        append(closing)

    if isinstance(document, CONTAINERS):
        container(document, 0)
    else:
        append(scalar(document))
    if pieces:
        write("".join(pieces))
