"""TPKT (RFC 1006) and COTP (ISO 8073 class 0) framing under S7comm / S7comm-plus.

Pure helpers used by :mod:`otsec.decoders.s7comm`; this module exports no ``DECODER``.

Wire layout::

    TPKT   +---------+----------+----------------+
           | ver = 3 | res = 0  | length (BE16)  |   length counts the whole TPKT (>= 7)
           +---------+----------+----------------+
    COTP   +----+------+-------------------------------------------+
           | LI | code | rest of header (LI - 1 bytes)            | user data ...
           +----+------+-------------------------------------------+
      DT (class 0): LI = 2, code 0xF0, byte 0x80 = EOT | TPDU-NR
      CR/CC       : LI, code 0xE0/0xD0 (low nibble = credit), dst-ref(2), src-ref(2),
                    class/options(1), then parameters  code(1) len(1) value:
                    0xC0 TPDU size (2^value), 0xC1 calling (source) TSAP, 0xC2 called (destination) TSAP
      DR          : LI, code 0x80, dst-ref(2), src-ref(2), reason(1)

S7 destination TSAPs are two bytes: connection type (1 PG, 2 OP, 3 S7 basic) then
``rack << 5 | slot``. S7comm-plus uses text TSAPs such as ``SIMATIC-ROOT-ES``.
"""

from __future__ import annotations

TPKT_VERSION = 3
TPKT_HEADER_LEN = 4
TPKT_MIN_LEN = 7                 # TPKT header + the shortest COTP header (DT: LI, code, EOT)

COTP_CR = 0xE0
COTP_CC = 0xD0
COTP_DR = 0x80
COTP_DC = 0xC0
COTP_DT = 0xF0
COTP_ED = 0x10
COTP_AK = 0x60
COTP_EA = 0x20
COTP_RJ = 0x50
COTP_ER = 0x70

#: TPDU code (high nibble of the code byte) -> name as Wireshark's ``cotp.type``.
COTP_TYPE_NAMES = {
    COTP_ED: "ED Expedited Data",
    COTP_EA: "EA Expedited Data Acknowledgement",
    COTP_RJ: "RJ Reject",
    COTP_AK: "AK Data Acknowledgement",
    COTP_ER: "ER TPDU Error",
    COTP_DR: "DR Disconnect Request",
    COTP_DC: "DC Disconnect Confirm",
    COTP_CC: "CC Connect Confirm",
    COTP_CR: "CR Connect Request",
    COTP_DT: "DT Data",
}

DT_EOT = 0x80
PARAM_TPDU_SIZE = 0xC0
PARAM_SRC_TSAP = 0xC1
PARAM_DST_TSAP = 0xC2
S7_TSAP_PARAMS = frozenset({PARAM_SRC_TSAP, PARAM_DST_TSAP})

#: First byte of a two-byte S7 TSAP -> connection resource type.
TSAP_CONNECTION_TYPES = {1: "PG", 2: "OP", 3: "S7 Basic"}


def tpkt_length(buf: bytes, pos: int) -> int:
    """Declared TPKT length at ``pos``; 0 if fewer than 4 bytes, -1 if not a TPKT header."""
    if len(buf) - pos < TPKT_HEADER_LEN:
        return 0
    if buf[pos] != TPKT_VERSION or buf[pos + 1] != 0:
        return -1
    length = (buf[pos + 2] << 8) | buf[pos + 3]
    return length if length >= TPKT_MIN_LEN else -1


def tpdu_code(code_byte: int) -> int:
    """The TPDU type of a COTP code byte: the high nibble (the low one is credit or flags)."""
    return code_byte & 0xF0


def parse_params(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    """COTP variable-part parameters between ``start`` and ``end``; stops at a bad length."""
    params: dict[int, bytes] = {}
    i = start
    while i + 2 <= end:
        code, plen = buf[i], buf[i + 1]
        if i + 2 + plen > end:
            break
        params[code] = bytes(buf[i + 2:i + 2 + plen])
        i += 2 + plen
    return params


def tsap_detail(value: bytes) -> dict:
    """JSON-safe description of a TSAP: hex, printable text when it is text, S7 rack/slot."""
    out: dict = {"hex": value.hex()}
    if len(value) > 2 and all(0x20 <= b < 0x7F for b in value):
        out["text"] = value.decode("ascii")
    if len(value) == 2:
        out["connection_type"] = TSAP_CONNECTION_TYPES.get(value[0], f"0x{value[0]:02x}")
        out["rack"] = value[1] >> 5
        out["slot"] = value[1] & 0x1F
    return out


def probe_cotp(buf: bytes, pos: int, payload_ok) -> bool:
    """Is there a TPKT + COTP header at ``pos`` that can only be S7 traffic?

    CR/CC must carry an S7 TSAP parameter (RDP's CR carries a cookie instead); DT must
    start a TSDU accepted by ``payload_ok(buf, start, end, eot)``. Other TPDU types are
    not accepted as a starting point: they cannot be told apart from other TPKT users.
    """
    length = tpkt_length(buf, pos)
    if length <= 0 or len(buf) - pos < TPKT_HEADER_LEN + 2:
        return False
    li = buf[pos + 4]
    if li < 2 or li + 1 > length - TPKT_HEADER_LEN:
        return False
    code = tpdu_code(buf[pos + 5])
    end = pos + length
    if code == COTP_DT:
        if li != 2 or len(buf) < pos + 7:
            return False
        return bool(payload_ok(buf, pos + 7, end, bool(buf[pos + 6] & DT_EOT)))
    if code in (COTP_CR, COTP_CC):
        if li < 6 or len(buf) < pos + 5 + li:
            return False
        return bool(S7_TSAP_PARAMS & parse_params(buf, pos + 11, pos + 5 + li).keys())
    return False
