"""The compiled walk over read buffers (CaptureReader.packets_left with the compiled table's
walk_pcap/walk_pcapng) against the Python iteration: for every file shape and every kind of
damage, the engine must end with the same packets, statistics, errors and events.

The files carry real frames (the example plant's Modbus/S7/OPC UA traffic), so the walked
packets go through the whole flow layer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.capture import CaptureReader, files
from otsec.engine import Engine, EngineConfig
from tests.flow_impls import require_compiled
from tests.test_capture_files import MAGIC_NS, MAGIC_US, block, epb, idb, pb, pcap_file, shb, spb

SHOWCASE = "pcaps/protocols_showcase.pcap"


def showcase_frames(limit: int = 60) -> list[tuple[int, bytes]]:
    """(microseconds since the first packet, frame) of the example's first packets."""
    with CaptureReader(SHOWCASE) as reader:
        items = [(ts, frame) for _, ts, _, frame in reader][:limit]
    t0 = items[0][0]
    return [(round((ts - t0) * 1e6), frame) for ts, frame in items]


FRAMES = showcase_frames()
BASE_SEC = 1_700_000_000


def run(paths, compiled: bool) -> dict:
    """Everything a run leaves: statistics, events and flows as dicts."""
    events, flows = [], []
    engine = Engine(EngineConfig(compiled=compiled), on_event=events.append, on_flow=flows.append)
    for path in paths:
        engine.read_file(path)
    stats = engine.finish()
    return {"stats": stats, "events": [e.to_dict() for e in events], "flows": [f.to_dict() for f in flows]}


def same(paths) -> dict:
    require_compiled()
    python, compiled = run(paths, False), run(paths, True)
    for part in ("stats", "events", "flows"):
        assert compiled[part] == python[part], f"{part} differ for {[str(p) for p in paths]}"
    return python


def write(tmp_path, data: bytes, name: str):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def classic(order="<", magic=MAGIC_US, start=0, frames=FRAMES) -> bytes:
    per_sec = 10**9 if magic == MAGIC_NS else 10**6
    records = []
    for us, frame in frames:
        units = (start + us) * (per_sec // 10**6)
        records.append((BASE_SEC + units // per_sec, units % per_sec, frame))
    return pcap_file(records, order=order, magic=magic)


def pcapng(order="<", tsresol=None, tsoffset=None, frames=FRAMES, kinds="e") -> bytes:
    """A section with one Ethernet interface; packet i is an EPB, PB or SPB per ``kinds``
    (cycled: e/p/s)."""
    exp = 6 if tsresol is None else tsresol
    per_sec = 2 ** (exp & 0x7F) if exp & 0x80 else 10 ** exp
    out = [shb(order), idb(order, 1, tsresol=tsresol, tsoffset=tsoffset)]
    for i, (us, frame) in enumerate(frames):
        units = (BASE_SEC * 10**6 + us) * per_sec // 10**6
        kind = kinds[i % len(kinds)]
        out.append(epb(order, 0, units, frame) if kind == "e" else
                   pb(order, 0, units, frame) if kind == "p" else spb(order, frame))
    return b"".join(out)


def test_walked_run_reports_the_packets_and_events():
    result = same([SHOWCASE])
    with CaptureReader(SHOWCASE) as reader:
        assert result["stats"]["packets"] == sum(1 for _ in reader)
    assert len(result["events"]) > 50 and result["stats"]["decode"]["messages"] == len(result["events"])


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("magic", [MAGIC_US, MAGIC_NS], ids=["usec", "nsec"])
def test_classic_pcap_variants(tmp_path, order, magic):
    result = same([write(tmp_path, classic(order, magic), "c.pcap")])
    assert result["stats"]["packets"] == len(FRAMES)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("tsresol,tsoffset", [(None, None), (9, None), (0x80 | 20, None), (6, 3600), (3, None)],
                         ids=["usec", "nsec", "binary", "offset", "msec"])
@pytest.mark.parametrize("kinds", ["e", "eps", "ppe"])
def test_pcapng_variants(tmp_path, order, tsresol, tsoffset, kinds):
    data = pcapng(order, tsresol, tsoffset, kinds=kinds)
    result = same([write(tmp_path, data, "c.pcapng")])
    assert result["stats"]["packets"] == len(FRAMES)


def test_pcapng_sections_and_interfaces_change_mid_file(tmp_path):
    half = len(FRAMES) // 2
    first = pcapng("<", frames=FRAMES[:half])
    # a second section, big-endian, with two interfaces (packets on the second, nanoseconds)
    second = [shb(">"), idb(">", 1), idb(">", 1, tsresol=9)]
    for us, frame in FRAMES[half:]:
        second.append(epb(">", 1, (BASE_SEC * 10**6 + us) * 1000, frame))
    second.append(epb(">", 2, 5, FRAMES[0][1]))    # undefined interface: the file ends here
    result = same([write(tmp_path, first + b"".join(second), "c.pcapng")])
    assert "undefined interface 2" in result["stats"]["sources"][0]["error"]


@pytest.mark.parametrize("chunk", [64, 1000, 4096])
def test_records_across_refills(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(files, "CHUNK_SIZE", chunk)
    paths = [write(tmp_path, classic(), "c.pcap"), write(tmp_path, pcapng(kinds="eeps"), "c.pcapng")]
    same(paths)


def test_truncated_at_every_byte(tmp_path):
    frames = FRAMES[:6]
    for name, data in (("c.pcap", classic(frames=frames)), ("c.pcapng", pcapng(frames=frames, kinds="eeps"))):
        header = 24 if name.endswith(".pcap") else len(shb("<"))
        for cut in range(header, len(data) + 1):
            result = same([write(tmp_path, data[:cut], name)])
            assert result["stats"]["packets"] <= len(frames)


def test_corrupt_records_end_the_file_with_the_same_error(tmp_path):
    data = bytearray(classic())
    struct.pack_into("<I", data, 24 + 16 + len(FRAMES[0][1]) + 8, 10**7)   # 2nd record: huge caplen
    result = same([write(tmp_path, bytes(data), "c.pcap")])
    assert result["stats"]["packets"] == 1 and "exceeds limit" in result["stats"]["sources"][0]["error"]
    ng = bytearray(pcapng())
    ng[-1] ^= 0xFF                                                         # last block's trailer
    result = same([write(tmp_path, bytes(ng), "c.pcapng")])
    assert "trailing length" in result["stats"]["sources"][0]["error"]


def test_a_source_older_than_the_last_restarts_the_connections(tmp_path):
    late = write(tmp_path, classic(start=10**9), "late.pcap")
    early = write(tmp_path, pcapng(), "early.pcapng")
    result = same([late, early])
    assert result["stats"]["sources_restarted"] == 1


def test_timestamps_beyond_double_precision_round_as_python_does(tmp_path):
    # nanoseconds since 1970 exceed 2**53: the division must still be correctly rounded
    records = [(BASE_SEC + i, 999_999_999 - i, frame) for i, (_, frame) in enumerate(FRAMES[:20])]
    same([write(tmp_path, pcap_file(records, magic=MAGIC_NS), "ns.pcap")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_agree(tmp_path, data):
    base = data.draw(st.sampled_from([classic(frames=FRAMES[:8]), pcapng(frames=FRAMES[:8], kinds="eps")]))
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    name = "m.pcap" if base[:4] != b"\x0a\x0d\x0d\x0a" else "m.pcapng"
    path = write(tmp_path, bytes(blob), name)
    try:
        CaptureReader(path).close()
    except files.CaptureError:
        return   # not a capture any more: refused before any walk
    same([path])


def test_a_record_of_exactly_the_caplen_limit_is_walked(tmp_path):
    big = FRAMES[0][1] + bytes(files.MIN_CAPLEN_LIMIT - len(FRAMES[0][1]))
    records = [(BASE_SEC, 0, FRAMES[1][1]), (BASE_SEC, 1, big), (BASE_SEC, 2, FRAMES[2][1])]
    result = same([write(tmp_path, pcap_file(records), "big.pcap")])
    assert result["stats"]["packets"] == 3 and result["stats"]["sources"][0]["error"] is None


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_progress_reports_where_the_walk_is_and_the_end_once(tmp_path, monkeypatch, compiled):
    """The progress bar's offsets rise with the work done (the compiled walk reports a
    buffer once processed, not the one before), and the end is reported once, even when
    the last packet's number falls on a reporting boundary (2 x 16,384 packets here)."""
    if compiled:
        require_compiled()
    monkeypatch.setattr(files, "CHUNK_SIZE", 64 * 1024)
    frames = [(i * 10, FRAMES[i % len(FRAMES)][1]) for i in range(2 * 16384)]
    path = write(tmp_path, classic(frames=frames), "p.pcap")
    size = path.stat().st_size
    calls = []
    engine = Engine(EngineConfig(compiled=compiled))
    engine.read_file(path, lambda offset, total: calls.append((offset, total)))
    offsets = [offset for offset, total in calls]
    assert all(total == size for _, total in calls) and offsets == sorted(offsets)
    assert offsets.count(size) == 1 and offsets[-1] == size
    assert len(offsets) >= 2 and offsets[0] > 64 * 1024 // 2   # the first report comes after work
