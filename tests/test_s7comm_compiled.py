"""The compiled S7 decoder (otsec.flow._fast.decode_s7comm) is a twin of otsec.decoders.s7comm.

For every message it must return exactly the Python decode's events (every field, types
and detail key order included) and leave the per-connection state exactly as Python
leaves it, or return NotImplemented without touching the state (Python then decodes).

* every message of every real capture (shared corpus, pcaps/, a 20k-packet benchmark
  capture), run through the pure-Python engine with a decoder that decodes each message
  both ways on two states and compares events and states after every message; the share
  of benchmark messages the twin covers has a floor;
* hypothesis: random bytes and mutated real messages, on fresh and pre-filled states;
* byte-literal messages annotated field by field.

Without the extension these tests skip ("compiled flow layer not built"); with
OTSEC_REQUIRE_COMPILED=1 they fail instead.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.decoders import s7comm
from otsec.decoders.base import Decoder
from otsec.engine import EngineConfig, analyze
from otsec.model import Event, Target
from tests.corpus import captures
from tests.flow_impls import _fast, require_compiled

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path("/work/shared/bench")
#: Share of the benchmark capture's S7 messages the twin must decode itself (measured:
#: about 0.99; alarm messages, TIS jobs and multi-unit userdata answers are left to Python).
BENCH_COVERAGE_FLOOR = 0.9


def twin_decode():
    """The compiled twin; skips (or fails when required) without the extension."""
    require_compiled()
    return _fast.decode_s7comm


# --------------------------------------------------------------------------- comparing

def first_difference(a, b, path: str = "") -> str | None:
    """Where two decoder outputs or states differ, or None: types must match exactly
    (True is not 1 in JSON), dicts in key order, dataclasses field by field."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            found = first_difference(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if found:
                return found
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            found = first_difference(a[k], b[k], f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def check_one(twin, msg: bytes, fc: bool, py_state, twin_state) -> tuple[bool, str | None, list]:
    """Decode msg with Python on py_state and with the twin (Python where it declines) on
    twin_state -> (covered by the twin, first difference in events or states, Python's events)."""
    py = s7comm.decode(msg, fc, py_state)
    before = copy.deepcopy(twin_state)
    got = twin(msg, fc, twin_state)
    covered = got is not NotImplemented
    if not covered:
        found = first_difference(before, twin_state, "state (twin declined)")
        if found:
            return covered, f"NotImplemented but the state changed: {found}", py
        got = s7comm.decode(msg, fc, twin_state)
    found = first_difference(py, got, "events") or first_difference(py_state, twin_state, "state")
    if found is None:
        found = _json_difference(py, got)
    return covered, found, py


def _json_difference(py: list[Event], got: list[Event]) -> str | None:
    for a, b in zip(py, got):
        if json.dumps(a.to_dict()) != json.dumps(b.to_dict()) or a.pair_key != b.pair_key:
            return f"JSON differs: {a.to_dict()} != {b.to_dict()}"
    return None


class Differential:
    """A Decoder whose decode runs Python and the twin side by side on two states."""

    def __init__(self, twin):
        self.twin = twin
        self.states: dict[int, tuple] = {}
        self.messages = self.covered = 0
        self.failures: list[str] = []

    def decode(self, msg, fc, state):
        pair = self.states.get(id(state))
        if pair is None or pair[0] is not state:
            pair = self.states[id(state)] = (state, s7comm.new_state())
        covered, found, events = check_one(self.twin, bytes(msg), fc, state, pair[1])
        self.messages += 1
        self.covered += covered
        if found and len(self.failures) < 5:
            self.failures.append(f"message {self.messages} ({bytes(msg).hex()}, from_client={fc}): "
                                 f"{found}")
        return events

    def decoder(self) -> Decoder:
        return dataclasses.replace(s7comm.DECODER, decode=self.decode)


def run_capture(path: Path, twin) -> Differential:
    diff = Differential(twin)
    analyze([path], config=EngineConfig(compiled=False, decoders=(diff.decoder(),)))
    return diff


# --------------------------------------------------------------------------- real captures

REAL = captures() + [pytest.param(p, id=f"pcaps/{p.name}") for p in sorted((REPO / "pcaps").glob("*.pcap*"))]


@pytest.mark.parametrize("path", REAL)
def test_real_capture_messages_identical(path):
    diff = run_capture(path, twin_decode())
    assert not diff.failures, "\n".join(diff.failures)


@pytest.fixture(scope="session")
def bench_20k(tmp_path_factory) -> Path:
    if not BENCH_DIR.is_dir():
        pytest.skip(f"{BENCH_DIR} absent")
    out = tmp_path_factory.mktemp("bench") / "bench_20k.pcap"
    subprocess.run([sys.executable, str(BENCH_DIR / "make_bench_pcap.py"), str(BENCH_DIR / "pcaps"),
                    "-o", str(out), "--packets", "20000"], check=True, capture_output=True)
    return out


def test_benchmark_messages_identical_and_covered(bench_20k):
    diff = run_capture(bench_20k, twin_decode())
    assert not diff.failures, "\n".join(diff.failures)
    assert diff.messages > 1000
    assert diff.covered / diff.messages >= BENCH_COVERAGE_FLOOR, \
        f"the twin decoded only {diff.covered} of {diff.messages} benchmark messages"


# --------------------------------------------------------------------------- hostile input

class _Recorder:
    def __init__(self):
        self.messages: list[tuple[bytes, bool]] = []

    def decode(self, msg, fc, state):
        self.messages.append((bytes(msg), fc))
        return s7comm.decode(msg, fc, state)


def _seed_messages() -> list[tuple[bytes, bool]]:
    """Every S7 message of the example captures (pcaps/, in the repo) and the byte literals."""
    rec = _Recorder()
    decoder = dataclasses.replace(s7comm.DECODER, decode=rec.decode)
    analyze(sorted((REPO / "pcaps").glob("*.pcap*")),
            config=EngineConfig(compiled=False, decoders=(decoder,)))
    unique = dict.fromkeys(rec.messages + [(m, fc) for _, m, fc in LITERALS])
    return list(unique)


_SEEDS: list[tuple[bytes, bool]] = []


def seeds() -> list[tuple[bytes, bool]]:
    if not _SEEDS:
        _SEEDS.extend(_seed_messages())
    return _SEEDS


def _fix_tpkt(msg: bytearray) -> bytes:
    if len(msg) >= 4:
        msg[2:4] = min(len(msg), 0xFFFF).to_bytes(2, "big")
    return bytes(msg)


@st.composite
def mutated(draw) -> tuple[bytes, bool]:
    msg, fc = draw(st.sampled_from(seeds()))
    buf = bytearray(msg)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "u16"]))
        at = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 8))]
        elif op == "u16" and at + 2 <= len(buf):
            # length fields: TPKT (2), S7 param/data length (13, 15), -plus data length (9)
            at = draw(st.sampled_from([2, 9, 13, 15, at]))
            if at + 2 <= len(buf):
                value = draw(st.sampled_from([0, 1, 0xFFFF, len(buf), len(buf) - 17,
                                              draw(st.integers(0, 0xFFFF))]))
                buf[at:at + 2] = (value % 0x10000).to_bytes(2, "big")
    if draw(st.booleans()):
        return _fix_tpkt(buf), fc
    return bytes(buf), fc


@st.composite
def state_pair(draw):
    """A fresh state, or one filled by decoding a few real messages (pending requests,
    COTP fragments, S7comm-plus fragments, uploads); the twin gets a deep copy."""
    state = s7comm.new_state()
    for msg, fc in draw(st.lists(st.sampled_from(seeds()), max_size=6)):
        s7comm.decode(msg, fc, state)
    if draw(st.booleans()):      # a COTP TSDU left open in one direction
        s7comm.decode(bytes.fromhex("0300000902f000320100"), draw(st.booleans()), state)
    return state, copy.deepcopy(state)


def _assert_same(msg: bytes, fc: bool, py_state, twin_state) -> bool:
    covered, found, _ = check_one(twin_decode(), msg, fc, py_state, twin_state)
    assert found is None, f"{msg.hex()} from_client={fc}: {found}"
    return covered


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=80), fix=st.booleans(), fc=st.booleans(), states=state_pair())
def test_random_bytes(body, fix, fc, states):
    msg = bytes(_fix_tpkt(bytearray(b"\x03\x00\x00\x00" + body))) if fix else body
    _assert_same(msg, fc, *states)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=mutated(), states=state_pair())
def test_mutated_real_messages(message, states):
    _assert_same(message[0], message[1], *states)


def test_every_truncation_of_real_messages():
    """Each real message cut at every length (TPKT length fixed up, and not)."""
    covered = 0
    for msg, fc in seeds():
        for cut in range(len(msg)):
            for fix in (False, True):
                cut_msg = _fix_tpkt(bytearray(msg[:cut])) if fix else msg[:cut]
                py_state, twin_state = s7comm.new_state(), s7comm.new_state()
                covered += _assert_same(cut_msg, fc, py_state, twin_state)
    assert covered > 100


def test_a_message_sequence_in_one_state():
    """All seed messages through one state, both directions swapped too: pending tables,
    uploads and fragments carried from message to message."""
    for swap in (False, True):
        py_state, twin_state = s7comm.new_state(), s7comm.new_state()
        for msg, fc in seeds():
            _assert_same(msg, fc != swap, py_state, twin_state)


def test_pending_table_cap_evicts_oldest_first():
    """MAX_PENDING + 5 unanswered Read Var jobs: the twin evicts as Python does."""
    py_state, twin_state = s7comm.new_state(), s7comm.new_state()
    for ref in range(s7comm.MAX_PENDING + 5):
        job = bytearray(LITERALS[0][1])
        job[11:13] = ref.to_bytes(2, "big")
        assert _assert_same(bytes(job), True, py_state, twin_state)
    assert len(twin_state.pending) == s7comm.MAX_PENDING
    assert next(iter(twin_state.pending)) == ("s7comm", True, 5)


# --------------------------------------------------------------------------- annotated bytes

#: (what, message, from_client), decoded by the twin alone below.
LITERALS = [
    ("read var job",
     bytes.fromhex("0300001f" "02f080"              # TPKT len 31 | COTP DT, EOT
                   "32 01 0000 0100 000e 0000"      # S7 Job, PDU ref 0x0100, param 14, data 0
                   "04 01"                          # Read Var, 1 item
                   "12 0a 10 02 0004 0001 84 000010".replace(" ", "")),  # S7ANY BYTE x4 DB1.DBB2
     True),
    ("read var ack_data",
     bytes.fromhex("0300001d" "02f080"
                   "32 03 0000 0100 0002 0008 0000"  # Ack_Data, ref 0x0100, param 2, data 8, no error
                   "04 01"                          # Read Var, 1 item
                   "ff 04 0020 01020304".replace(" ", "")),  # Success, BYTE/WORD, 32 bits, value
     False),
    ("write var job",
     bytes.fromhex("03000024" "02f080"
                   "32 01 0000 0200 000e 0005 "     # Job, ref 0x0200, param 14, data 5
                   "05 01"                          # Write Var, 1 item
                   "12 0a 10 01 0001 0000 82 000003"  # S7ANY BIT x1 Q0.3
                   "00 03 0001 01".replace(" ", "")),  # data: reserved, BIT, 1 bit, value 01
     True),
    ("write var ack_data, access refused",
     bytes.fromhex("03000016" "02f080"
                   "32 03 0000 0200 0002 0001 0000"
                   "05 01"
                   "03".replace(" ", "")),          # item return code 0x03 not allowed
     False),
    ("setup communication job",
     bytes.fromhex("03000019" "02f080"
                   "32 01 0000 ffff 0008 0000"
                   "f0 00 0001 0001 01e0".replace(" ", "")),  # AmQ 1/1, PDU 480
     True),
    ("ack_data with header error",
     bytes.fromhex("03000013" "02f080"
                   "32 03 0000 0300 0000 0000 8104".replace(" ", "")),  # class 0x81 code 0x04
     False),
    ("SZL request 0x0011",
     bytes.fromhex("03000021" "02f080"
                   "32 07 0000 0400 0008 0008"      # Userdata, param 8, data 8
                   "000112 04 11 44 01 00"          # head, len 4, method 0x11, request CPU, Read SZL, seq 0
                   "ff 09 0004 0011 0000".replace(" ", "")),  # data: SZL id 0x0011, index 0
     True),
    ("COTP connection request, rack 0 slot 2",
     bytes.fromhex("03000016" "11 e0 0000 0001 00"  # CR, dst-ref 0, src-ref 1, class 0
                   "c0 01 0a" "c1 02 0100" "c2 02 0102".replace(" ", "")),  # TPDU 1024, TSAPs
     True),
    ("S7comm-plus notification",
     bytes.fromhex("03000014" "02f080"
                   "72 02 0005 33 00000000"         # V2, data 5, opcode Notification
                   "72 02 0000".replace(" ", "")),  # trailer
     False),
]


@pytest.mark.parametrize("what,msg,fc", LITERALS, ids=[w for w, _, _ in LITERALS])
def test_literal_identical_to_python(what, msg, fc):
    assert _assert_same(msg, fc, s7comm.new_state(), s7comm.new_state()), f"{what} not covered"


def test_literal_read_var_pair_fields():
    twin = twin_decode()
    state = s7comm.new_state()
    (job,) = twin(LITERALS[0][1], True, state)
    assert (job.protocol, job.kind, job.function, job.op_class, job.function_code) == \
        ("s7comm", "request", "Read Var", "read", 4)
    assert job.pair_key == ("s7comm", True, 0x0100)
    assert job.targets == [Target(kind="area", area="DB", db=1, start=2, count=4)]
    assert job.detail["items"] == [{"syntax_id": "S7ANY", "area": "DB", "area_name": "Data blocks (DB)",
                                    "transport_size": "BYTE", "length": 4, "address": 2, "bit": 0,
                                    "db": 1}]
    assert list(state.pending) == [("s7comm", True, 0x0100)]
    (ack,) = twin(LITERALS[1][1], False, state)
    assert (ack.kind, ack.result, ack.status, ack.op_class) == ("response", "ok", None, "read")
    assert ack.targets == job.targets and ack.targets is not job.targets
    assert ack.detail["item_return_codes"] == ["Success"]
    assert not state.pending


def test_literal_write_refused_and_header_error():
    twin = twin_decode()
    state = s7comm.new_state()
    (job,) = twin(LITERALS[2][1], True, state)
    assert job.targets == [Target(kind="area", area="Q", start=0, count=1)]
    assert job.detail["values"] == [{"return_code": 0, "transport_size": 3, "length": 1, "value": "01"}]
    (ack,) = twin(LITERALS[3][1], False, state)
    assert (ack.result, ack.status) == ("error", "Accessing the object not allowed (0x03)")
    (err,) = twin(LITERALS[5][1], False, state)
    assert err.status == ("Application relationship (0x81): "
                          "This service is not implemented on the module or a frame error was "
                          "reported (0x8104)")
    assert (err.function, err.detail["error_class"]) == ("Ack", 0x81)


def test_literal_setup_szl_cotp_plus():
    twin = twin_decode()
    state = s7comm.new_state()
    (setup,) = twin(LITERALS[4][1], True, state)
    assert setup.detail["pdu_length"] == 480 and setup.op_class == "session"
    (szl,) = twin(LITERALS[6][1], True, state)
    assert (szl.function, szl.op_class, szl.targets) == \
        ("Read SZL", "identify", [Target(kind="szl", start=0, name="0x0011")])
    assert szl.pair_key == ("s7comm-ud", True, 0x0400, 4, 1)
    (cr,) = twin(LITERALS[7][1], True, state)
    assert (cr.protocol, cr.function, cr.detail["rack"], cr.detail["slot"], cr.detail["tpdu_size"]) == \
        ("cotp", "Connection Request", 0, 2, 1024)
    (note,) = twin(LITERALS[8][1], False, state)
    assert (note.protocol, note.function, note.kind, note.op_class) == \
        ("s7comm-plus", "Notification", "notification", "read")


def test_cotp_fragments_reassembled_like_python():
    """A Read Var job split over two DT TPDUs: nothing, then the job; the tsdu entry goes."""
    twin = twin_decode()
    whole = LITERALS[0][1]
    head = _fix_tpkt(bytearray(b"\x03\x00\x00\x00\x02\xf0\x00" + whole[7:15]))
    tail = _fix_tpkt(bytearray(whole[:7] + whole[15:]))
    state = s7comm.new_state()
    assert twin(head, True, state) == [] and list(state.tsdu) == [True]
    (job,) = twin(tail, True, state)
    assert job.function == "Read Var" and not state.tsdu


def _s7(rosctr: int, ref: int, param: bytes, data: bytes, error: bytes = b"") -> bytes:
    """TPKT + COTP DT (EOT) + S7 header (error bytes for Ack_Data) + param + data."""
    pdu = bytes([0x32, rosctr, 0, 0]) + ref.to_bytes(2, "big") + len(param).to_bytes(2, "big") \
        + len(data).to_bytes(2, "big") + error + param + data
    return _fix_tpkt(bytearray(b"\x03\x00\x00\x00\x02\xf0\x80" + pdu))


def test_item_caps_past_max_detail_items():
    """40 items (more than MAX_DETAIL_ITEMS) in a Write Var job and a Read Var answer with
    failures after the cap: items, targets, values and return codes are cut alike, and the
    status still counts every failure."""
    n = s7comm.MAX_DETAIL_ITEMS + 8
    item = bytes.fromhex("120a10020001000184") + (8 * 3).to_bytes(3, "big")   # DB1.DBB3, 1 byte
    value = bytes.fromhex("0004000801")                                       # BYTE, 8 bits, 01
    write = _s7(1, 7, bytes([5, n]) + item * n, (value + b"\x00") * (n - 1) + value)
    read = _s7(1, 8, bytes([4, n]) + item * n, b"")
    answer = _s7(3, 8, bytes([4, n]), (bytes.fromhex("ff04000801") + b"\x00") * (n - 2)
                 + bytes.fromhex("0a000000") + bytes.fromhex("05000000"), b"\x00\x00")
    py_state, twin_state = s7comm.new_state(), s7comm.new_state()
    for msg, fc in ((write, True), (read, True), (answer, False)):
        assert _assert_same(msg, fc, py_state, twin_state)
    (ev,) = s7comm.decode(answer, False, s7comm.new_state())
    assert len(ev.detail["item_return_codes"]) == s7comm.MAX_DETAIL_ITEMS
    assert ev.status == "Object does not exist (0x0a) and 1 more"
