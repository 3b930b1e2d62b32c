"""A toy length-prefixed protocol that keeps flow-layer tests independent of real decoders.

Wire format: ``b"OT" + length byte + kind byte ('q' request / 'r' response) + key byte + body``.
"""

from otsec.decoders.base import NEED_MORE, UNFRAMEABLE, Decoder
from otsec.model import Event


def _probe(buf, pos):
    return len(buf) - pos >= 5 and buf[pos:pos + 2] == b"OT" and buf[pos + 3] in b"qr"


def _frame(buf, pos):
    if len(buf) - pos < 3:
        return NEED_MORE if buf[pos:pos + 2] in (b"O", b"OT") else UNFRAMEABLE
    if buf[pos:pos + 2] != b"OT":
        return UNFRAMEABLE
    n = buf[pos + 2]
    return n if len(buf) - pos >= n else NEED_MORE


def _decode(msg, from_client, state):
    kind = "request" if msg[3:4] == b"q" else "response"
    return [Event(protocol="toy", kind=kind, function=msg[5:].decode(), op_class="read",
                  pair_key=msg[4])]


TOY = Decoder("toy", (9999,), _probe, _frame, lambda: None, _decode)


def msg(kind, key, body=b""):
    return b"OT" + bytes([5 + len(body)]) + kind + bytes([key]) + body


