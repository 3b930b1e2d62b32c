"""The compiled twins of the decoders' frame() (otsec/decoders/_<name>.c) against the
Python functions: the same answer (length, NEED_MORE, UNFRAMEABLE) for every position of
real messages cut at every length, and for hostile bytes. The flow layer frames every
message with them, so a difference would split the stream differently."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.decoders import modbus, opcua, s7comm
from otsec.engine import collect, EngineConfig
from tests.flow_impls import require_compiled

PYTHON_FRAMES = {"modbus": modbus.frame, "s7comm": s7comm.frame, "opcua": opcua.frame}
SAMPLES = "pcaps/protocols_showcase.pcap"


def twin(name: str):
    require_compiled()
    from otsec.flow import _fast
    return getattr(_fast, f"frame_{name}")


def stream_bytes(name: str) -> bytes:
    """Every message of the example capture for this decoder, concatenated (client side)."""
    captured: list[bytes] = []
    dec = next(d for d in EngineConfig().decoders if d.name == name)

    def decode(msg, from_client, state):
        captured.append(msg)
        return dec.decode(msg, from_client, state)

    import dataclasses
    collect([SAMPLES], config=EngineConfig(compiled=False, decoders=(dataclasses.replace(dec, decode=decode),)))
    assert captured, f"no {name} messages in {SAMPLES}"
    return b"".join(captured)


@pytest.mark.parametrize("name", sorted(PYTHON_FRAMES))
def test_every_position_and_cut_of_real_messages(name):
    frame, reference = twin(name), PYTHON_FRAMES[name]
    data = stream_bytes(name)
    for cut in range(0, len(data) + 1, 7):
        buf = data[:cut]
        for pos in range(0, min(len(buf) + 2, 300)):
            assert frame(buf, pos) == reference(buf, pos), (name, cut, pos)
    positions = 0
    pos = 0
    while pos < len(data):          # walking the stream message by message agrees too
        n = frame(data, pos)
        assert n == reference(data, pos) and n > 0
        pos += n
        positions += 1
    assert positions > 5


@pytest.mark.parametrize("name", sorted(PYTHON_FRAMES))
@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=40), pos=st.integers(0, 45))
def test_hostile_bytes(name, data, pos):
    assert twin(name)(data, pos) == PYTHON_FRAMES[name](data, pos)


@pytest.mark.parametrize("name", sorted(PYTHON_FRAMES))
def test_declared_lengths_around_the_limits(name):
    """Headers declaring every length up to past the limits (and the extremes), followed by
    fewer, exactly as many and more bytes than they say."""
    frame, reference = twin(name), PYTHON_FRAMES[name]
    for length in [*range(0, 300), 0x7FFF, 0xFFFF, opcua.MAX_CHUNK_SIZE, opcua.MAX_CHUNK_SIZE + 1]:
        for head in (b"\0\0", b"\x03\x00", b"\x03\x01", b"\xff\x00", b"MSGF", b"HELF", b"MSGX", b"MSGC", b"XYZA"):
            if name == "opcua":   # message type, chunk type, little-endian size
                header = head + (length & 0xFFFFFFFF).to_bytes(4, "little")
            elif name == "modbus":
                header = head + b"\0\0" + (length & 0xFFFF).to_bytes(2, "big")
            else:
                header = head + (length & 0xFFFF).to_bytes(2, "big")
            for extra in (length - 8, length - 7, length - 6, length - 4, length, length + 3):
                buf = header + bytes(max(min(extra, 1 << 17), 0))
                assert frame(buf, 0) == reference(buf, 0), (name, length, head, extra)


# --- probe() twins: detection and resynchronisation ask them first ----------------------

PYTHON_PROBES = {"modbus": modbus.probe, "s7comm": s7comm.probe, "opcua": opcua.probe}


def probe_twin(name: str):
    require_compiled()
    from otsec.flow import _fast
    return getattr(_fast, f"probe_{name}")


def assert_probe_agrees(name: str, buf: bytes, pos: int) -> None:
    """The twin says what the Python probe says, or leaves it to it (None)."""
    answer = probe_twin(name)(buf, pos)
    assert answer is None or answer == bool(PYTHON_PROBES[name](buf, pos)), (name, buf[pos:pos + 16], pos)


@pytest.mark.parametrize("name", sorted(PYTHON_PROBES))
def test_probe_twins_on_every_position_and_cut_of_real_messages(name):
    data = stream_bytes(name)
    for cut in range(0, len(data) + 1, 11):
        buf = data[:cut]
        for pos in range(0, min(len(buf) + 2, 200)):
            assert_probe_agrees(name, buf, pos)
    # message starts are recognised (S7: left to the Python probe), the rest mostly refused
    answers = [probe_twin(name)(data, pos) for pos in range(len(data))]
    assert answers[0] is not False and answers.count(False) > len(data) // 2, name


@pytest.mark.parametrize("name", sorted(PYTHON_PROBES))
@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=40), pos=st.integers(0, 45))
def test_probe_twins_on_hostile_bytes(name, data, pos):
    assert_probe_agrees(name, data, pos)


@pytest.mark.parametrize("name", sorted(PYTHON_PROBES))
def test_probe_twins_around_the_header_limits(name):
    for length in [*range(0, 300), 0xFFFF, opcua.MAX_CHUNK_SIZE, opcua.MAX_CHUNK_SIZE + 1, 0xFFFFFFFF]:
        for head in (b"\0\0", b"\x03\x00", b"\x03\x01", b"HELF", b"ACKF", b"ERRF", b"OPNF", b"MSGC",
                     b"MSGA", b"HELC", b"CLOF", b"MSGX", b"XYZA"):
            if name == "opcua":
                header = head + (length & 0xFFFFFFFF).to_bytes(4, "little")
            elif name == "modbus":
                header = head + b"\0\0" + (length & 0xFFFF).to_bytes(2, "big")
            else:
                header = head + (length & 0xFFFF).to_bytes(2, "big")
            versions = [bytes(i) + b"\x01" + bytes(3 - i) for i in range(4)]   # HEL/ACK version != 0
            for tail in (b"", b"\0", b"\0\0\0\0", *versions, b"\x11\xe0\0\0\0\x01\0\xc1\x02\x01\x00",
                         b"\x02\xf0\x80\x32\x01\0\0\0\0\0\x0e\0\0"):
                assert_probe_agrees(name, header + tail, 0)
