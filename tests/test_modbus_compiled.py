"""The compiled Modbus decoder (otsec/decoders/_modbus.c) against the Python one, message by message.

The twin must give, for every message it covers, the event the Python decode gives (every
field, detail keys in the same order at every level, targets as Target objects) and leave
the pending-request table exactly as Python leaves it; what it does not cover it must
answer NotImplemented without touching the state. It covers every message the flow layer
passes, so the tests also require full coverage: a twin that silently falls back fails.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.decoders import modbus as mb
from otsec.engine import EngineConfig, analyze
from otsec.model import Event, Target
from tests.corpus import captures
from tests.flow_impls import COMPILED_REQUIRED, NOT_BUILT, _fast

TWIN = getattr(_fast, "decode_modbus", None)
REPO = Path(__file__).resolve().parents[1]
BENCH_MAKER = Path("/work/shared/bench/make_bench_pcap.py")
BENCH_INPUTS = Path("/work/shared/bench/pcaps")
#: The twin covers every message the flow layer hands the Modbus decoder.
MIN_COVERAGE = 1.0


@pytest.fixture(scope="module")
def twin():
    if TWIN is None:
        if COMPILED_REQUIRED:
            pytest.fail("OTSEC_REQUIRE_COMPILED=1 but otsec.flow._fast.decode_modbus is missing; "
                        "build it with: python setup.py build_ext --inplace", pytrace=False)
        pytest.skip(NOT_BUILT)
    return TWIN


def adu(*fields: str) -> bytes:
    """Join hex fields (one per wire field, annotated at the call site)."""
    return bytes.fromhex("".join(fields))


# --- comparison -------------------------------------------------------------------

def _ordered(value):
    """JSON text keeping dict key order at every level (types show: 1 is not true)."""
    return json.dumps(value)


def event_difference(py: Event, c) -> str | None:
    """The first field in which the twin's event differs from Python's, readably."""
    if type(c) is not Event:
        return f"twin gave a {type(c).__name__}, not an Event"
    for f in dataclasses.fields(Event):
        a, b = getattr(py, f.name), getattr(c, f.name)
        if f.name == "targets":
            if [type(t) for t in b] != [Target] * len(b):
                return f"targets: not all Target objects: {b!r}"
            a, b = [t.to_dict() for t in a], [t.to_dict() for t in b]
        elif f.name in ("detail", "identity", "anomalies"):
            a, b = _ordered(a), _ordered(b)
        if a != b or type(a) is not type(b):
            return f"{f.name}: python {a!r} != twin {b!r}"
    if py.to_dict() != c.to_dict():
        return "to_dict differs"
    return None


def state_difference(py: dict, c: dict) -> str | None:
    """Pending tables must hold the same requests, in the same order, with the same context."""
    a = [(k, list(v.items())) for k, v in py.items()]
    b = [(k, list(v.items())) for k, v in c.items()]
    if a != b:
        return f"state: python {a!r} != twin {b!r}"
    return None


class Differential:
    """Runs Python and twin side by side on one message with their own states."""

    def __init__(self, decode_c):
        self.decode_c = decode_c
        self.total = self.covered = 0
        self.failures: list[str] = []

    def run(self, msg: bytes, from_client: bool, py_state, c_state) -> list[Event]:
        py = mb.decode(msg, from_client, py_state)
        c = self.decode_c(msg, from_client, c_state)
        self.total += 1
        if c is NotImplemented:
            c = mb.decode(msg, from_client, c_state)
        else:
            self.covered += 1
        why = None
        if not isinstance(c, list) or len(c) != len(py):
            why = f"twin gave {c!r}"
        else:
            why = next((d for p, q in zip(py, c) if (d := event_difference(p, q))), None)
        if why is None and py_state is not None:
            why = state_difference(py_state, c_state)
        if why and len(self.failures) < 5:
            self.failures.append(f"{'request' if from_client else 'response'} {msg.hex()}: {why}")
        return py

    def check(self, what: str) -> None:
        assert not self.failures, f"{what}: twin differs from Python:\n" + "\n".join(self.failures)


def run_capture(path: Path, decode_c) -> Differential:
    """Every Modbus message of a capture through both decoders, one state pair per connection."""
    diff = Differential(decode_c)
    twin_states: dict[int, tuple[dict, dict]] = {}

    def decode(msg, from_client, state):
        pair = twin_states.get(id(state))
        if pair is None:        # holding the state keeps its id unique for the run
            pair = twin_states[id(state)] = (state, mb.new_state())
        return diff.run(bytes(msg), from_client, state, pair[1])

    wrapped = dataclasses.replace(mb.DECODER, decode=decode)
    analyze([path], config=EngineConfig(compiled=False, decoders=(wrapped,)))
    return diff


# --- 1. every message of real captures ------------------------------------------------

EXAMPLES = sorted((REPO / "pcaps").glob("*.pcap*"))


@pytest.mark.parametrize("path", captures() + [pytest.param(p, id=f"pcaps/{p.name}") for p in EXAMPLES])
def test_every_message_of_real_captures(twin, path):
    diff = run_capture(path, twin)
    diff.check(path.name)
    assert diff.covered == diff.total, f"{diff.total - diff.covered} of {diff.total} not covered"


@pytest.fixture(scope="session")
def bench_20k(tmp_path_factory):
    if not BENCH_MAKER.is_file():
        pytest.skip(f"{BENCH_MAKER} absent")
    out = tmp_path_factory.mktemp("bench") / "bench_20k.pcap"
    subprocess.run([sys.executable, str(BENCH_MAKER), str(BENCH_INPUTS), "-o", str(out),
                    "--packets", "20000"], check=True, capture_output=True)
    return out


def test_every_message_of_the_benchmark_capture(twin, bench_20k):
    diff = run_capture(bench_20k, twin)
    diff.check("bench_20k")
    assert diff.total > 1000, "the benchmark capture should carry Modbus"
    assert diff.covered >= MIN_COVERAGE * diff.total, (
        f"twin covered {diff.covered} of {diff.total} benchmark messages")


# --- 3. byte literals, one request and response per function code (also fuzz seeds) ---

SEEDS: list[tuple[bytes, bool]] = [
    (adu("0001", "0000", "0006", "11", "03",    # tid 1, proto 0, length 6, unit 17, FC 3
         "006b", "0003"), True),                # start 107, quantity 3
    (adu("0001", "0000", "0009", "11", "03",    # its response, FC 3
         "06", "022b", "0000", "0064"), False),  # 6 bytes: 555, 0, 100
    (adu("0002", "0000", "0006", "11", "01", "0013", "0013"), True),   # coils 19..37
    (adu("0002", "0000", "0006", "11", "01", "03", "cd6b05"), False),  # 3 bytes of bits
    (adu("0003", "0000", "0006", "11", "02", "00c4", "0016"), True),   # inputs 196..217
    (adu("0003", "0000", "0006", "11", "02", "03", "acdb35"), False),
    (adu("0004", "0000", "0006", "11", "04", "0008", "0001"), True),   # input reg 8
    (adu("0004", "0000", "0005", "11", "04", "02", "000a"), False),
    (adu("0005", "0000", "0006", "11", "05", "00ac", "ff00"), True),   # coil 172 ON
    (adu("0005", "0000", "0006", "11", "05", "00ac", "ff00"), False),  # echo
    (adu("0006", "0000", "0006", "11", "06", "0001", "0003"), True),   # reg 1 := 3
    (adu("0006", "0000", "0006", "11", "06", "0001", "0003"), False),
    (adu("0007", "0000", "0002", "11", "07"), True),                    # no data
    (adu("0007", "0000", "0003", "11", "07", "6d"), False),             # status 0x6D
    (adu("0008", "0000", "0006", "11", "08", "0001", "ff00"), True),   # restart (control)
    (adu("0008", "0000", "0006", "11", "08", "0001", "ff00"), False),
    (adu("0009", "0000", "0002", "11", "0b"), True),
    (adu("0009", "0000", "0006", "11", "0b", "ffff", "0108"), False),  # status, 264 events
    (adu("000a", "0000", "0002", "11", "0c"), True),
    (adu("000a", "0000", "000b", "11", "0c", "08", "0000", "0108", "0121", "2000"), False),
    (adu("000b", "0000", "0009", "11", "0f", "0013", "000a",   # coils 19..28
         "02", "cd01"), True),                                  # 2 bytes of bits
    (adu("000b", "0000", "0006", "11", "0f", "0013", "000a"), False),
    (adu("000c", "0000", "000b", "11", "10", "0001", "0002",   # regs 1..2
         "04", "000a", "0102"), True),                          # 4 bytes: 10, 258
    (adu("000c", "0000", "0006", "11", "10", "0001", "0002"), False),
    (adu("000d", "0000", "0002", "11", "11"), True),
    (adu("000d", "0000", "000d", "11", "11", "0a",             # 10 bytes:
         "ff", "ff", "4d6f646275732020"), False),             # id 255, run on, "Modbus  "
    (adu("000e", "0000", "0011", "11", "14", "0e",             # byte count 14:
         "06", "0004", "0001", "0002",                          # ref 6, file 4, rec 1, len 2
         "06", "0003", "0009", "0002"), True),                  # ref 6, file 3, rec 9, len 2
    (adu("000e", "0000", "000f", "11", "14", "0c",
         "05", "06", "0df8", "0a20",                            # len 5, ref 6, 2 words
         "05", "06", "33cd", "0040"), False),
    (adu("000f", "0000", "000e", "11", "15", "0b",             # byte count 11:
         "06", "0004", "0007", "0002", "06af", "04be"), True),  # file 4 rec 7, 2 words
    (adu("000f", "0000", "000e", "11", "15", "0b",
         "06", "0004", "0007", "0002", "06af", "04be"), False),
    (adu("0010", "0000", "0008", "11", "16", "0004", "00f2", "0025"), True),  # and/or masks
    (adu("0010", "0000", "0008", "11", "16", "0004", "00f2", "0025"), False),
    (adu("0011", "0000", "0011", "11", "17", "0003", "0006",   # read 3..8
         "000e", "0003", "06", "00ff00ff00ff"), True),          # write 14..16
    (adu("0011", "0000", "000f", "11", "17", "0c",
         "00fe0acd000100030d0000ff"), False),
    (adu("0012", "0000", "0004", "11", "18", "04de"), True),   # FIFO at 1246
    (adu("0012", "0000", "000a", "11", "18", "0006", "0002", "01b8", "1284"), False),
    (adu("0013", "0000", "0005", "11", "2b", "0e", "01", "00"), True),  # MEI 14 basic, obj 0
    (adu("0013", "0000", "0019", "11", "2b", "0e", "01", "01",  # basic, conformity 1
         "00", "00", "03",                                      # no more, next 0, 3 objects
         "00", "05", "41434d4520",                              # VendorName "ACME "
         "01", "04", "50433031",                                 # ProductCode "PC01"
         "07", "02", "6869"), False),                           # object 7 "hi"
    (adu("0014", "0000", "0004", "11", "5a", "00", "41"), True),       # UMAS STOP_PLC
    (adu("0014", "0000", "0005", "11", "5a", "00", "fe", "00"), False),  # ok
    (adu("0015", "0000", "0004", "11", "5a", "00", "02"), True),       # UMAS READ_ID
    (adu("0015", "0000", "0004", "11", "5a", "00", "fd"), False),      # UMAS error
    (adu("0016", "0000", "0006", "11", "03", "0000", "0800"), True),   # 2048 registers
    (adu("0016", "0000", "0003", "11", "83", "02"), False),            # exception 2
    (adu("0017", "0000", "0003", "11", "8b", "0c"), False),            # unknown exception 12
    (adu("0018", "0000", "0002", "11", "83"), True),                   # exception bit in request
    (adu("0019", "0000", "0004", "11", "41", "dead"), True),           # user-defined FC 65
    (adu("0019", "0000", "0003", "11", "00", "01"), False),            # FC 0
    (adu("001a", "0001", "00ff", "11", "5a", "00", "58"), True),       # proto 1, length 255
    (adu("001a", "0000"), False),                                      # too short
    # caps: 36 file sub-requests (35 kept), 40 one-byte read-file records, 126 registers
    # and 160 bits (125 kept), device-id text with NUL/tab/NBSP/VT and beyond 128 chars
    (adu("001b", "0000", "00ff", "11", "14", "fc",             # byte count 252:
         "06" "0001" "0002" "0003" * 36), True),               # 36 x (ref 6, file 1, rec 2, len 3)
    (adu("001b", "0000", "0053", "11", "14", "50",             # byte count 80:
         "0106" * 40), False),                                  # 40 x (len 1, ref 6, no words)
    (adu("001c", "0000", "00ff", "11", "03", "fc", "0001" * 126), False),
    (adu("001d", "0000", "0017", "11", "01", "14", "a5" * 20), False),
    (adu("001e", "0000", "00a2", "11", "2b", "0e", "03", "83",  # extended, conformity 0x83
         "00", "00", "02",                                      # no more, next 0, 2 objects
         "04", "06", "09a0410020" "0b",                         # ProductName "\t\xa0A\0 \v"
         "05", "90", "61" * 144), False),                       # ModelName, 144 x "a"
]


def literal(tid: int, from_client: bool) -> bytes:
    """The seed with this transaction id and direction."""
    return next(m for m, c in SEEDS if c == from_client and m[:2] == tid.to_bytes(2, "big"))


def test_literals_are_decoded_as_python_does(twin):
    """Each seed in order through one state pair, so responses meet their request context."""
    diff = Differential(twin)
    py_state, c_state = mb.new_state(), mb.new_state()
    for msg, from_client in SEEDS:
        diff.run(msg, from_client, py_state, c_state)
        diff.run(msg, from_client, None, None)
    diff.check("literals")
    assert diff.covered == diff.total


def test_read_response_carries_request_context(twin):
    state = mb.new_state()
    [req] = twin(literal(1, True), True, state)
    assert req.targets == [Target("holding_register", 107, 3)]
    assert state == {(1, 17): {"start": 107, "fc": 3, "op_class": "read"}}
    [resp] = twin(literal(1, False), False, state)
    assert list(resp.detail) == ["transaction_id", "unit_id", "category", "request_start",
                                 "byte_count", "values"]
    assert resp.detail["values"] == [555, 0, 100] and resp.targets == [] and state == {}


def test_device_identification_and_server_id(twin):
    [ev] = twin(literal(0x13, False), False, None)
    assert ev.detail["objects"] == {"VendorName": "ACME", "ProductCode": "PC01", "object_7": "hi"}
    assert ev.identity == {"vendor": "ACME", "product_code": "PC01"}
    [ev] = twin(literal(0x0d, False), False, None)
    assert (ev.detail["server_id"], ev.detail["run_indicator"]) == (255, "on")
    assert ev.identity == {"server_id": "Modbus"}


def test_exceptions_and_umas_status(twin):
    state = mb.new_state()
    twin(literal(0x16, True), True, state)                 # 2048 registers requested
    [ev] = twin(literal(0x16, False), False, state)
    assert (ev.result, ev.status, ev.op_class) == ("exception", "Illegal data address (2)", "read")
    twin(literal(0x15, True), True, state)
    [ev] = twin(literal(0x15, False), False, state)
    assert (ev.result, ev.status, ev.detail["umas_function"]) == ("error", "UMAS error (0xFD)",
                                                                  "READ_ID")


def test_pending_table_cap_and_order(twin):
    """The oldest pending request goes first once MAX_PENDING are waiting."""
    py_state, c_state = mb.new_state(), mb.new_state()
    diff = Differential(twin)
    for tid in range(mb.MAX_PENDING + 10):
        msg = adu("%04x" % tid, "0000", "0006", "01", "03", "0000", "0001")
        diff.run(msg, True, py_state, c_state)
    diff.run(adu("0005", "0000", "0006", "01", "03", "0000", "0001"), True, py_state, c_state)
    diff.check("cap")
    assert len(c_state) == mb.MAX_PENDING and next(iter(c_state)) == (11, 1)


def test_state_not_made_by_decode_is_left_to_python(twin):
    resp = literal(1, False)
    for ctx in ({"start": 1}, {"fc": "3", "op_class": "read"}, None, {"fc": 3}):
        state = {(1, 17): ctx}
        assert twin(resp, False, state) is NotImplemented
        assert state == {(1, 17): ctx}
    assert twin(resp, False, []) is NotImplemented


# --- 2. hostile input: random and mutated messages, fresh and pre-filled states --------

def _states(kind: str) -> tuple[dict | None, dict | None]:
    """A pair of equal states: none, fresh, pending every seed request, or full (capped)."""
    if kind == "none":
        return None, None
    pair = mb.new_state(), mb.new_state()
    if kind == "fresh":
        return pair
    requests = [m for m, c in SEEDS if c]
    if kind == "full":
        requests += [adu("%04x" % t, "0000", "0002", "11", "07") for t in range(0x100, 0x100 + mb.MAX_PENDING)]
    for state in pair:
        for msg in requests:
            mb.decode(msg, True, state)
    return pair


STATES = st.sampled_from(["none", "fresh", "pending", "full"])
SEED = st.sampled_from(SEEDS)


def _check_one(twin, msg: bytes, from_client: bool, kind: str) -> None:
    diff = Differential(twin)
    diff.run(msg, from_client, *_states(kind))
    diff.check(kind)


@given(st.binary(max_size=300), st.booleans(), STATES)
@settings(max_examples=300, deadline=None)
def test_fuzz_random_bytes(twin, data, from_client, kind):
    _check_one(twin, data, from_client, kind)


REQUEST_SEEDS = [m for m, c in SEEDS if c]


@given(st.binary(min_size=2, max_size=40), st.integers(0, 255), st.booleans(),
       st.sampled_from(REQUEST_SEEDS))
@settings(max_examples=300, deadline=None)
def test_fuzz_random_pdu_after_valid_header(twin, pdu, fc, from_client, pending):
    """Random PDUs behind a consistent MBAP header reach every field parser, with a request
    of any function pending under the same (transaction id, unit id)."""
    msg = adu("0001", "0000", "%04x" % (len(pdu) + 2), "11") + bytes([fc]) + pdu
    states = mb.new_state(), mb.new_state()
    for state in states:
        mb.decode(adu("0001") + pending[2:6] + adu("11") + pending[7:], True, state)
    diff = Differential(twin)
    diff.run(msg, from_client, *states)
    diff.check("random pdu")


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 300), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 300), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 300), st.integers(1, 8)),
    st.tuples(st.just("length"), st.integers(0, 300), st.integers(0, 0xFFFF)),
    st.tuples(st.just("count"), st.integers(8, 300), st.integers(0, 255)),
)


def _mutate(msg: bytes, mutation) -> bytes:
    op, at, arg = mutation
    b = bytearray(msg)
    at = at % (len(b) + 1)
    if op == "flip" and at < len(b):
        b[at] ^= arg
    elif op == "insert":
        b[at:at] = arg
    elif op == "delete":
        del b[at:at + arg]
    elif op == "length" and len(b) >= 6:        # the MBAP length field
        b[4:6] = arg.to_bytes(2, "big")
    elif op == "count" and len(b) > 8:          # a byte count / quantity / object length
        b[8 + at % (len(b) - 8)] = arg
    return bytes(b)


@given(SEED, st.lists(MUTATIONS, min_size=1, max_size=3), STATES)
@settings(max_examples=300, deadline=None)
def test_fuzz_mutated_real_messages(twin, seed, mutations, kind):
    msg, from_client = seed
    for m in mutations:
        msg = _mutate(msg, m)
    _check_one(twin, msg, from_client, kind)


def test_every_truncation_of_every_literal(twin):
    diff = Differential(twin)
    for msg, from_client in SEEDS:
        for cut in range(len(msg)):
            for kind in ("none", "pending"):
                diff.run(msg[:cut], from_client, *_states(kind))
    diff.check("truncations")
    assert diff.covered == diff.total
