"""The compiled OPC UA decoder (otsec/decoders/_opcua.c) against the Python reference.

The twin either returns exactly the Python decode's events (every field, detail keys in
the same order, pair_key) having changed the per-connection state exactly as Python
would, or NotImplemented with the state untouched. Checked on every message of the
real captures and the benchmark capture, on hostile bytes (hypothesis), and on
annotated byte literals. The module-level caches of the Python decoder (_NODE_TEXT,
_SECOND_TEXT, _THUMBPRINTS) only memoise formatting, so they are not compared.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.decoders import opcua
from otsec.engine import EngineConfig, analyze
from tests.corpus import captures
from tests.flow_impls import COMPILED_REQUIRED, NOT_BUILT, _fast

REPO = Path(__file__).resolve().parent.parent
BENCH_SCRIPT = Path("/work/shared/bench/make_bench_pcap.py")
BENCH_PCAPS = Path("/work/shared/bench/pcaps")
#: Share of the benchmark capture's OPC UA messages the twin must cover (it covers all
#: of them today; below this it has silently stopped covering a common message).
BENCH_COVERAGE_FLOOR = 0.97


@pytest.fixture(scope="module")
def twin():
    decode = getattr(_fast, "decode_opcua", None)
    if decode is None:
        if COMPILED_REQUIRED:
            pytest.fail("OTSEC_REQUIRE_COMPILED=1 but otsec.flow._fast.decode_opcua is missing",
                        pytrace=False)
        pytest.skip(NOT_BUILT)
    return decode


# --- comparison -------------------------------------------------------------------------

def canon(value):
    """A comparable form that keeps dict key order, types and NaN floats."""
    if isinstance(value, dict):
        return ("dict", [(k, canon(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [canon(v) for v in value])
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if dataclasses.is_dataclass(value):
        return (type(value).__name__,
                [(f.name, canon(getattr(value, f.name))) for f in dataclasses.fields(value)])
    return (type(value).__name__, value)


def state_canon(state: opcua.OpcUaState):
    """Every field of the state, channels by value plus which ones are the same object."""
    ids: dict[int, int] = {}

    def channel(c):
        if c is None:
            return None
        return (c.policy, c.mode, c.inferred, ids.setdefault(id(c), len(ids)))

    return canon({
        "channels": [(k, channel(c)) for k, c in state.channels.items()],
        "opening": channel(state.opening),
        "partials": [(k, p.parts, p.size, p.chunks, p.head, p.overflow, p.anomalies)
                     for k, p in state.partials.items()],
        "encrypted_chunks": list(state.encrypted_chunks),
        "pending": list(state.pending.items()),
        "hello_pending": state.hello_pending,
        "reverse": state.reverse,
    })


def first_difference(a, b, where="") -> str | None:
    """Where two canon() forms first differ, with both sides (cut to a readable size)."""
    if a == b:
        return None
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 2 and a[0] == b[0]:
        x, y = a[1], b[1]
        if isinstance(x, list) and isinstance(y, list):
            for i, (u, v) in enumerate(zip(x, y)):
                diff = first_difference(u, v, f"{where}[{i}]")
                if diff:
                    return diff
            return f"{where}: {len(x)} items in python, {len(y)} compiled"
        return first_difference(x, y, f"{where}/{a[0]}")
    return f"{where}: python {repr(a)[:300]} != compiled {repr(b)[:300]}"


def compare(twin, msg: bytes, from_client: bool, py_state, c_state) -> tuple[list, bool]:
    """Python on py_state, the twin on c_state (Python after a NotImplemented): equal
    events and states, and a NotImplemented left the state alone. Returns the Python
    events and whether the twin covered the message."""
    before = state_canon(c_state)
    py = opcua.decode(msg, from_client, py_state)
    c = twin(msg, from_client, c_state)
    covered = c is not NotImplemented
    if not covered:
        assert state_canon(c_state) == before, f"NotImplemented but state changed for {msg!r}"
        c = opcua.decode(msg, from_client, c_state)
    assert isinstance(c, list)
    diff = first_difference(canon(py), canon(c), "events") \
        or first_difference(state_canon(py_state), state_canon(c_state), "state")
    assert diff is None, f"{diff}\n  message {msg!r} from_client={from_client}"
    assert [e.pair_key for e in py] == [e.pair_key for e in c]
    return py, covered


def run_capture(path, on_message) -> None:
    """The pure-Python engine over a capture, every OPC UA message (with the
    connection's state) handed to on_message, which returns the events."""
    wrapped = dataclasses.replace(opcua.DECODER, decode=on_message)
    analyze([str(path)], config=EngineConfig(compiled=False, decoders=(wrapped,)))


def differential(twin, path) -> tuple[int, int]:
    """(messages, covered by the twin) of a capture, each compared with Python."""
    twin_states: dict[int, tuple] = {}
    counts = [0, 0]

    def decode(msg, from_client, state):
        pair = twin_states.get(id(state))
        if pair is None:      # keeps the engine's state alive too, so ids stay unique
            pair = twin_states[id(state)] = (state, opcua.new_state())
        events, covered = compare(twin, msg, from_client, state, pair[1])
        counts[0] += 1
        counts[1] += covered
        return events

    run_capture(path, decode)
    return counts[0], counts[1]


# --- 1. real captures ------------------------------------------------------------------

REPO_PCAPS = [pytest.param(Path(p), id=Path(p).name) for p in sorted(glob.glob(str(REPO / "pcaps" / "*.pcap*")))]


@pytest.mark.parametrize("path", captures() + REPO_PCAPS)
def test_capture_messages_identical(twin, path):
    differential(twin, path)


@pytest.fixture(scope="session")
def bench_20k(tmp_path_factory):
    if not BENCH_SCRIPT.exists() or not BENCH_PCAPS.is_dir():
        pytest.skip("benchmark inputs (/work/shared/bench) absent")
    out = tmp_path_factory.mktemp("bench") / "bench_20k.pcap"
    subprocess.run([sys.executable, str(BENCH_SCRIPT), str(BENCH_PCAPS), "-o", str(out),
                    "--packets", "20000"], check=True, capture_output=True)
    return out


def test_benchmark_messages_identical_and_covered(twin, bench_20k):
    messages, covered = differential(twin, bench_20k)
    assert messages > 1000, "the benchmark capture should carry OPC UA traffic"
    assert covered / messages >= BENCH_COVERAGE_FLOOR, f"twin covers {covered}/{messages}"


# --- 2. hostile input --------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples():
    """Real messages, each with a copy of its connection's state just before it (the
    pre-filled states: channels known, requests pending, handshake done)."""
    found: list[tuple[bytes, bool, opcua.OpcUaState]] = []

    def decode(msg, from_client, state):
        found.append((msg, from_client, copy.deepcopy(state)))
        return opcua.decode(msg, from_client, state)

    paths = [p.values[0] for p in captures("opcua") if p.values and p.values[0] is not None]
    for path in paths + [p.values[0] for p in REPO_PCAPS]:
        run_capture(path, decode)
    assert len(found) > 50
    return found


def _states(sample_state):
    """Fresh, the sample's own, and states built to reach the other branches."""
    fresh = opcua.new_state()
    encrypted = opcua.new_state()
    encrypted.channels[1] = opcua._Channel("Basic256Sha256", "SignAndEncrypt", True)
    encrypted.encrypted_chunks = [2, 1]
    undecided = opcua.new_state()
    undecided.opening = opcua._Channel("Basic128Rsa15", None)
    undecided.channels[7] = undecided.opening
    busy = copy.deepcopy(sample_state)
    busy.reverse = not busy.reverse
    busy.hello_pending = True
    for i in range(opcua.MAX_PENDING_REQUESTS):
        busy.pending[i] = "read"
    for i in range(opcua.MAX_CHANNELS):
        busy.channels.setdefault(100 + i, opcua._Channel("None", "None"))
    partial = copy.deepcopy(sample_state)
    for rid in range(4):
        p = opcua._Partial()
        p.add(b"\x01\x00\x77\x02")
        partial.partials[(True, rid)] = partial.partials[(False, rid)] = p
    return [fresh, sample_state, encrypted, undecided, busy, partial]


def _mutate(data, msg: bytes) -> bytes:
    buf = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length", "size"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 8))]
        elif op == "length" and len(buf) >= pos + 4:
            value = data.draw(st.sampled_from([-2, -1, 0, 1, 3, 16, 255, 0x7FFFFFFF, len(buf) - pos]))
            struct.pack_into("<i", buf, pos, value)
        if len(buf) >= 8 and data.draw(st.booleans(), label="fix size"):
            struct.pack_into("<I", buf, 4, len(buf))     # keep the chunk framed
    return bytes(buf)


def _hostile_check(twin, msg, from_client, states):
    for state in states:
        compare(twin, msg, from_client, copy.deepcopy(state), copy.deepcopy(state))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_messages(twin, samples, data):
    msg, from_client, state = data.draw(st.sampled_from(samples), label="sample")
    _hostile_check(twin, _mutate(data, msg), from_client, _states(state))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mtype=st.sampled_from([b"MSG", b"CLO", b"OPN", b"HEL", b"ACK", b"ERR", b"RHE", b"XYZ"]),
       chunk=st.sampled_from(b"FFFCA?"), body=st.binary(max_size=200), fix_size=st.booleans(),
       from_client=st.booleans(), raw=st.binary(max_size=40))
def test_random_bytes(twin, samples, mtype, chunk, body, fix_size, from_client, raw):
    msg = mtype + bytes([chunk]) + struct.pack("<I", 8 + len(body) if fix_size else len(body)) + body
    states = _states(samples[len(body) % len(samples)][2])
    _hostile_check(twin, msg, from_client, states)
    _hostile_check(twin, raw, from_client, states[:2])


def test_every_truncation_of_real_messages(twin, samples):
    """One real message per message type and service, cut at every length, with the
    size field as cut or fixed up to the new length."""
    kinds = {}
    for msg, from_client, state in samples:
        kinds.setdefault((msg[:4], msg[24:28], from_client), (msg, from_client, state))
    assert len(kinds) > 20
    for msg, from_client, state in kinds.values():
        for cut in range(len(msg)):
            short = bytearray(msg[:cut])
            _hostile_check(twin, bytes(short), from_client, [state])
            if cut >= 8:
                struct.pack_into("<I", short, 4, cut)
                _hostile_check(twin, bytes(short), from_client, [state])


# --- 3. annotated byte literals ---------------------------------------------------------------

#: 2024-01-01T00:00:01.234567Z as DateTime ticks (100 ns since 1601-01-01).
TICKS_2024 = 0x01DA3C457689C000 + 12_345_670   # + 1.234567 s


def _chunk(mtype: bytes, rest: bytes) -> bytes:
    return mtype + b"F" + struct.pack("<I", 8 + len(rest)) + rest


def _msg(request_id: int, body: bytes, channel: int = 5) -> bytes:
    return _chunk(b"MSG", struct.pack("<IIII", channel, 1, 40 + request_id, request_id) + body)


REQUEST_HEADER = (
    b"\x00\x00"                               # AuthenticationToken: two-byte NodeId i=0
    + struct.pack("<q", TICKS_2024)           # Timestamp
    + struct.pack("<I", 3)                    # RequestHandle
    + b"\0\0\0\0"                             # ReturnDiagnostics
    + b"\xff\xff\xff\xff"                     # AuditEntryId: null String
    + b"\x10\x27\0\0"                         # TimeoutHint 10000 ms
    + b"\x00\x00\x00")                        # AdditionalHeader: null ExtensionObject
RESPONSE_HEADER_GOOD = (
    struct.pack("<q", TICKS_2024) + struct.pack("<I", 3)
    + b"\0\0\0\0"                             # ServiceResult Good
    + b"\x00"                                 # ServiceDiagnostics: empty mask
    + b"\xff\xff\xff\xff"                     # StringTable: null array
    + b"\x00\x00\x00")                        # AdditionalHeader

READ_REQUEST = _msg(9,
    b"\x01\x00\x77\x02"                       # TypeId: four-byte NodeId ns=0;i=631 ReadRequest
    + REQUEST_HEADER
    + struct.pack("<d", 500.0)                # MaxAge
    + b"\x02\0\0\0"                           # TimestampsToReturn: Neither
    + b"\x01\0\0\0"                           # NodesToRead: 1 ReadValueId
    + b"\x01\x02\x05\x00"                     #   NodeId four-byte ns=2;i=5
    + b"\x0d\0\0\0"                           #   AttributeId 13 (Value)
    + b"\xff\xff\xff\xff"                     #   IndexRange null
    + b"\x00\x00\xff\xff\xff\xff")            #   DataEncoding: QualifiedName 0:null
READ_RESPONSE_ALL_BAD = _msg(9,
    b"\x01\x00\x7a\x02"                       # TypeId i=634 ReadResponse
    + RESPONSE_HEADER_GOOD
    + b"\x01\0\0\0"                           # Results: 1 DataValue
    + b"\x02" + struct.pack("<I", 0x80340000) #   mask: StatusCode only, BadNodeIdUnknown
    + b"\xff\xff\xff\xff")                    # DiagnosticInfos: null
WRITE_REQUEST = _msg(11,
    b"\x01\x00\xa1\x02"                       # TypeId i=673 WriteRequest
    + REQUEST_HEADER
    + b"\x01\0\0\0"                           # NodesToWrite: 1 WriteValue
    + b"\x03\x01\x00\x04\0\0\0Pump"           #   NodeId string ns=1;s=Pump
    + b"\x0d\0\0\0"                           #   AttributeId Value
    + b"\xff\xff\xff\xff"                     #   IndexRange null
    + b"\x01\x0b" + struct.pack("<d", 42.5))  #   DataValue mask Value: Variant Double 42.5
SERVICE_FAULT = _msg(11,
    b"\x01\x00\x8d\x01"                       # TypeId i=397 ServiceFault
    + struct.pack("<q", TICKS_2024) + struct.pack("<I", 3)
    + struct.pack("<I", 0x801F0000)           # ServiceResult BadUserAccessDenied
    + b"\x00\xff\xff\xff\xff\x00\x00\x00")
HELLO = _chunk(b"HEL", struct.pack("<IIIII", 0, 65536, 65536, 0, 0)
               + struct.pack("<I", 22) + b"opc.tcp://plc.local:48")
ENCRYPTED = _msg(2, b"\x9a" * 40, channel=6)


def _known_channels() -> opcua.OpcUaState:
    state = opcua.new_state()
    state.channels[5] = opcua._Channel("None", "None")
    state.channels[6] = opcua._Channel("Basic256Sha256", "SignAndEncrypt", True)
    return state


def _twin_events(twin, msg, from_client, state):
    """Checks the twin covers msg exactly like Python (on copies of state), then runs
    it on state itself and returns its events."""
    _, covered = compare(twin, msg, from_client, copy.deepcopy(state), copy.deepcopy(state))
    assert covered, f"not covered: {msg!r}"
    return twin(msg, from_client, state)


def test_literal_read_request_and_all_bad_response(twin):
    state = _known_channels()
    (ev,) = _twin_events(twin, READ_REQUEST, True, state)
    assert (ev.kind, ev.function, ev.op_class, ev.function_code, ev.pair_key) == \
        ("request", "Read", "read", 631, 9)
    assert list(ev.detail.items()) == [
        ("message_type", "MSG"), ("chunk_type", "F"), ("secure_channel_id", 5),
        ("token_id", 1), ("security_policy", "None"), ("security_mode", "None"),
        ("sequence_number", 49), ("request_id", 9), ("chunks", 1), ("service", "ReadRequest"),
        ("authentication_token", "i=0"), ("timestamp", "2024-01-01T00:00:01.234567Z"),
        ("request_handle", 3), ("max_age", 500.0), ("item_count", 1),
        ("items", [{"node_id": "ns=2;i=5", "attribute": "Value"}])]
    assert [(t.kind, t.name) for t in ev.targets] == [("node", "ns=2;i=5")]
    assert state.pending == {9: "read"}
    (resp,) = _twin_events(twin, READ_RESPONSE_ALL_BAD, False, state)
    # a Good service result whose every item failed is an error, named by the first item
    assert (resp.kind, resp.result, resp.status, resp.pair_key) == \
        ("response", "error", "BadNodeIdUnknown", 9)
    assert resp.detail["service_result"] == "0x00000000"
    assert resp.detail["item_statuses"] == ["BadNodeIdUnknown"]
    assert resp.detail["bad_items"] == 1
    assert state.pending == {}


def test_literal_write_then_service_fault(twin):
    state = _known_channels()
    (ev,) = _twin_events(twin, WRITE_REQUEST, True, state)
    assert (ev.function, ev.op_class) == ("Write", "write")
    assert ev.detail["items"] == [{"node_id": "ns=1;s=Pump", "attribute": "Value",
                                   "value_type": "Double", "value": 42.5}]
    (fault,) = _twin_events(twin, SERVICE_FAULT, False, state)
    # the fault takes the op class of the request it answers
    assert (fault.function, fault.op_class, fault.result, fault.status, fault.pair_key) == \
        ("ServiceFault", "write", "error", "BadUserAccessDenied", 11)
    assert fault.detail["service"] == "ServiceFault"
    assert state.pending == {}


def test_literal_hello_and_encrypted_message(twin):
    state = _known_channels()
    (hello,) = _twin_events(twin, HELLO, True, state)
    assert (hello.kind, hello.function, hello.pair_key) == ("request", "Hello", "hello")
    assert hello.detail["endpoint_url"] == "opc.tcp://plc.local:48"
    assert hello.detail["receive_buffer_size"] == 65536 and state.hello_pending is True
    state.encrypted_chunks = [0, 2]          # two 'C' chunks of this message came before
    (enc,) = _twin_events(twin, ENCRYPTED, True, state)
    assert (enc.function, enc.op_class, enc.pair_key) == ("Encrypted message", "other", None)
    assert enc.detail["encrypted"] is True and enc.detail["chunks"] == 3
    assert enc.detail["security_mode_inferred"] is True
    assert state.encrypted_chunks == [0, 0]


def test_not_covered_leaves_state_alone(twin):
    """A 'C' chunk (reassembly) and a truncated body are Python's, the state untouched."""
    state = _known_channels()
    before = state_canon(state)
    chunk = b"MSGC" + READ_REQUEST[4:]
    assert twin(chunk, True, state) is NotImplemented
    cut = bytearray(READ_REQUEST[:-3])
    struct.pack_into("<I", cut, 4, len(cut))
    assert twin(bytes(cut), True, state) is NotImplemented
    assert state_canon(state) == before
