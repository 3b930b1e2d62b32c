"""The contract between the flow layer and a protocol decoder.

A decoder is sans-IO: the flow layer hands it bytes of one TCP direction that it has
already put in order, and the decoder answers with plain values. It never reads a
socket or a file, never blocks and never raises on hostile input.

The contract has three parts, mirroring how Suricata/SAWP parsers are driven:

``probe(buf, pos) -> bool``
    Does a message of this protocol plausibly *start* at ``buf[pos:]``? Used to
    detect the protocol of a new connection by content (not only port) and to
    resynchronise after a capture gap. Must be strict enough that random bytes
    rarely pass, and must return False (not raise) when ``buf`` is too short.

``frame(buf, pos) -> int``
    Length of the complete message starting at ``pos``: a positive number when it
    is all there, :data:`NEED_MORE` when more bytes are needed, :data:`UNFRAMEABLE`
    when the bytes at ``pos`` cannot be the start of a message (the flow layer then
    resynchronises with ``probe``). A malformed but *framed* message still returns
    its declared length so the stream stays in step; the problem is reported by
    ``decode`` as an anomaly flag.

``decode(msg, from_client, state) -> list[Event]``
    Decode one framed message. ``state`` is the per-connection object from
    ``new_state()`` (fragment reassembly, channel security, ...); it is plain data,
    owned by the flow layer, bounded by the decoder. Returns zero or more events
    with only the protocol half of :class:`otsec.model.Event` filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from otsec.model import Event

NEED_MORE = 0
UNFRAMEABLE = -1


@dataclass(frozen=True, slots=True)
class Decoder:
    """A protocol decoder as registered in :mod:`otsec.decoders`."""

    name: str                                   # registry name, used for --ports overrides
    ports: tuple[int, ...]                      # default server ports (a hint, not a rule)
    probe: Callable[[bytes, int], bool]
    frame: Callable[[bytes, int], int]
    new_state: Callable[[], Any]
    decode: Callable[[bytes, bool, Any], list[Event]]
