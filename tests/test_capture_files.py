"""CaptureReader: classic pcap and pcapng variants built byte by byte, damage at every
byte cut, agreement with dpkt on the real corpus, and fuzzing."""

from __future__ import annotations

import re
import struct
from fractions import Fraction

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otsec.capture import CaptureError, CaptureReader
from otsec.capture import files
from tests.corpus import captures, truth

# -- builders ------------------------------------------------------------------------

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


def pcap_file(records, order="<", magic=MAGIC_US, linktype=1, snaplen=65535):
    """Classic pcap: records are (sec, frac, frame) or (sec, frac, frame, caplen_override)."""
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, frame = rec[:3]
        caplen = rec[3] if len(rec) > 3 else len(frame)
        out.append(struct.pack(order + "IIII", sec, frac, caplen, len(frame)) + frame)
    return b"".join(out)


def block(order, btype, body):
    """One pcapng block: type, total length, body padded to 4, total length."""
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def option(order, code, value):
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order, options=b""):
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def idb(order, linktype, snaplen=0, tsresol=None, tsoffset=None):
    opts = b""
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += option(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order, ifid, units, frame, caplen=None):
    caplen = len(frame) if caplen is None else caplen
    body = struct.pack(order + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, caplen, len(frame))
    return block(order, 6, body + frame)


def pb(order, ifid, units, frame):
    body = struct.pack(order + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
    return block(order, 2, body + frame)


def spb(order, frame, origlen=None):
    return block(order, 3, struct.pack(order + "I", len(frame) if origlen is None else origlen) + frame)


def write(tmp_path, data, name="capture.pcap"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path):
    with CaptureReader(path) as reader:
        items = list(reader)
    return items, reader


FRAMES = [bytes([i]) * (40 + 7 * i) for i in range(1, 6)]   # distinct lengths and contents

# -- classic pcap ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("magic,per_sec", [(MAGIC_US, 10**6), (MAGIC_NS, 10**9)], ids=["usec", "nsec"])
def test_classic_pcap_variants(tmp_path, order, magic, per_sec):
    stamps = [(1_700_000_000, 0), (1_700_000_000, 1), (1_700_000_001, per_sec - 1),
              (4_294_967_295, per_sec // 3), (0, 0)]
    records = [(sec, frac, frame) for (sec, frac), frame in zip(stamps, FRAMES)]
    path = write(tmp_path, pcap_file(records, order, magic, linktype=113))
    items, reader = read_all(path)
    assert [n for n, *_ in items] == [1, 2, 3, 4, 5]
    assert [lt for _, _, lt, _ in items] == [113] * 5
    assert [f for *_, f in items] == FRAMES
    for (_, ts, _, _), (sec, frac) in zip(items, stamps):
        # exact: the float nearest to the rational sec + frac/per_sec
        assert ts == float(Fraction(sec * per_sec + frac, per_sec))
    assert (reader.format, reader.packets, reader.error) == ("pcap", 5, None)
    assert reader.offset == reader.size == path.stat().st_size


def test_microsecond_timestamps_keep_every_microsecond(tmp_path):
    records = [(1_700_000_000, usec, b"\0" * 20) for usec in range(0, 1_000_000, 9973)]
    items, _ = read_all(write(tmp_path, pcap_file(records)))
    assert [round((ts - 1_700_000_000) * 10**6) for _, ts, _, _ in items] == [r[1] for r in records]


def test_linktype_fcs_bits_are_masked(tmp_path):
    # bits 26-28 of the header's linktype word carry "FCS present" information
    path = write(tmp_path, pcap_file([(1, 0, FRAMES[0])], linktype=(1 << 28) | (4 << 26) | 1))
    (item,), _ = read_all(path)
    assert item[2] == 1


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_reads_across_refills(tmp_path, monkeypatch, chunk):
    """Tiny read chunks force a refill inside record headers and frames: same result."""
    monkeypatch.setattr(files, "CHUNK_SIZE", chunk)
    records = [(i, i, bytes([i % 256]) * (i * 37 % 1500)) for i in range(200)]
    items, reader = read_all(write(tmp_path, pcap_file(records)))
    assert [(ts, f) for _, ts, _, f in items] == [(sec + frac / 10**6, f) for sec, frac, f in records]
    # frames are copies, not slices of the reused read buffer (a bytearray)
    assert {type(f) for _, _, _, f in items} == {bytes}
    assert reader.error is None and reader.offset == reader.size


def test_progress_counters_are_live(tmp_path):
    path = write(tmp_path, pcap_file([(1, 0, f) for f in FRAMES]))
    with CaptureReader(path) as reader:
        assert (reader.offset, reader.packets) == (24, 0)
        seen = [(reader.packets, reader.offset) for _ in reader]
    ends = [24 + sum(16 + len(f) for f in FRAMES[:i + 1]) for i in range(5)]
    assert seen == list(zip(range(1, 6), ends))


def test_caplen_beyond_limit_stops_with_error(tmp_path):
    data = pcap_file([(1, 0, FRAMES[0]), (2, 0, FRAMES[1], 262145)], snaplen=1500)
    items, reader = read_all(write(tmp_path, data))
    assert len(items) == 1
    at = 24 + 16 + len(FRAMES[0])
    assert reader.error == (
        f"{tmp_path / 'capture.pcap'}: corrupt packet record at byte {at} (packet 2): "
        "captured length 262145 exceeds limit 262144"
    )


def test_snaplen_above_default_raises_the_limit(tmp_path):
    big = b"\x55" * 300_000
    items, reader = read_all(write(tmp_path, pcap_file([(1, 0, big)], snaplen=300_000)))
    assert reader.error is None and items[0][3] == big


def small_pcap():
    return pcap_file([(10, 5, FRAMES[0]), (11, 6, FRAMES[1]), (12, 7, FRAMES[2])])


def test_truncated_pcap_at_every_byte(tmp_path):
    data = small_pcap()
    starts = [24, 24 + 16 + len(FRAMES[0]), 24 + 32 + len(FRAMES[0]) + len(FRAMES[1]), len(data)]
    for cut in range(len(data) + 1):
        path = write(tmp_path, data[:cut])
        if cut < 24:
            with pytest.raises(CaptureError):
                CaptureReader(path)
            continue
        items, reader = read_all(path)
        complete = sum(1 for end in starts[1:] if end <= cut)
        assert [f for *_, f in items] == FRAMES[:complete], cut
        assert reader.packets == complete
        if cut in starts:
            assert reader.error is None, cut
            continue
        record = starts[complete]
        in_header = cut - record < 16
        assert reader.error == (
            f"{path}: truncated packet record{' header' if in_header else ''} at byte {record} "
            f"(packet {complete + 1}): "
            + (f"16 bytes needed, {cut - record} present" if in_header
               else f"header says {len(FRAMES[complete])} bytes, {cut - record - 16} present")
        ), cut


# -- opening errors ---------------------------------------------------------------------


def test_not_a_capture(tmp_path):
    path = write(tmp_path, b"<html><body>not a capture</body></html>", "capture.pcap")
    with pytest.raises(CaptureError) as err:
        CaptureReader(path)
    assert str(err.value) == f"{path}: not a pcap or pcapng file (magic 0x3c68746d at byte 0)"


@pytest.mark.parametrize("make,expect", [
    (lambda p: p / "missing.pcap", r"missing\.pcap: cannot open: No such file or directory$"),
    (lambda p: p, r": cannot open: Is a directory$"),
    (lambda p: write(p, b"", "empty.pcap"), r"empty\.pcap: not a pcap or pcapng file \(0 bytes long\)$"),
    (lambda p: write(p, pcap_file([])[:10], "short.pcap"),
     r"short\.pcap: truncated pcap file header: 24 bytes needed, 10 present$"),
    (lambda p: write(p, b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x11\x22\x33\x44" + b"\0" * 16, "bom.pcapng"),
     r"bom\.pcapng: not a pcap or pcapng file \(pcapng byte-order magic 0x11223344 at byte 8\)$"),
])
def test_open_errors_are_one_line(tmp_path, make, expect):
    with pytest.raises(CaptureError) as err:
        CaptureReader(make(tmp_path))
    assert re.search(expect, str(err.value)) and "\n" not in str(err.value)


# -- pcapng -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
def test_pcapng_interfaces_blocks_and_resolutions(tmp_path, order):
    units_us = 1_700_000_000_123_456
    units_ns = 1_700_000_000_987_654_321
    units_p2 = (1_700_000_002 << 10) + 512          # 2^-10 resolution: .5 s
    data = b"".join([
        shb(order),
        idb(order, 1, 65535),                                   # 0: Ethernet, default µs
        block(order, 4, b"\x01\0\x04\0\x0a\0\0\x01host\0\0\0\0"),  # NRB: skipped
        idb(order, 113, 65535, tsresol=9),                       # 1: SLL, ns
        idb(order, 101, 65535, tsresol=0x80 | 10, tsoffset=-2),  # 2: raw IP, 2^-10 s, offset -2 s
        epb(order, 0, units_us, FRAMES[0]),
        block(order, 0x0BAD0BAD, b"unknown block body"),         # unknown: skipped
        epb(order, 1, units_ns, FRAMES[1]),
        pb(order, 2, units_p2, FRAMES[2]),                       # obsolete packet block
        spb(order, FRAMES[3]),                                   # interface 0, no timestamp
        block(order, 5, b"\0" * 12),                             # ISB: skipped
    ])
    items, reader = read_all(write(tmp_path, data, "capture.pcapng"))
    assert reader.error is None and reader.format == "pcapng"
    assert [(n, lt, f) for n, _, lt, f in items] == [
        (1, 1, FRAMES[0]), (2, 113, FRAMES[1]), (3, 101, FRAMES[2]), (4, 1, FRAMES[3])]
    assert items[0][1] == float(Fraction(units_us, 10**6))
    assert items[1][1] == float(Fraction(units_ns, 10**9))
    assert items[2][1] == 1_700_000_000.5
    assert items[3][1] == items[2][1]      # SPB: the last timestamp carries on
    assert reader.offset == reader.size


def test_pcapng_sections_switch_byte_order_and_restart_interfaces(tmp_path):
    data = b"".join([
        shb("<"), idb("<", 1), epb("<", 0, 5_000_000, FRAMES[0]),
        shb(">"), idb(">", 229, tsresol=3), epb(">", 0, 7_250, FRAMES[1]),
        shb("<"), epb("<", 0, 1, FRAMES[2]),                       # no IDB in this section
    ])
    items, reader = read_all(write(tmp_path, data, "capture.pcapng"))
    assert [(ts, lt, f) for _, ts, lt, f in items] == [(5.0, 1, FRAMES[0]), (7.25, 229, FRAMES[1])]
    third_epb = len(data) - len(epb("<", 0, 1, FRAMES[2]))
    assert reader.error == (
        f"{tmp_path / 'capture.pcapng'}: corrupt packet block at byte {third_epb} (packet 3): "
        "packet for undefined interface 0"
    )


def test_spb_caplen_is_bounded_by_snaplen_and_origlen(tmp_path):
    frame = bytes(range(64))
    data = shb("<") + idb("<", 1, snaplen=20) + spb("<", frame) + spb("<", frame, origlen=10)
    items, _ = read_all(write(tmp_path, data, "capture.pcapng"))
    assert [f for *_, f in items] == [frame[:20], frame[:10]]


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:-4] + struct.pack("<I", len(b) + 4),
     "corrupt block at byte {at} (packet 2): trailing length {n4} differs from leading length {n}"),
    (lambda b: b[:4] + struct.pack("<I", len(b) - 2) + b[8:],
     "corrupt block at byte {at} (packet 2): total length {n2} (type 0x00000006)"),
    (lambda b: b[:4] + struct.pack("<I", 8) + b[8:],
     "corrupt block at byte {at} (packet 2): total length 8 (type 0x00000006)"),
    (lambda b: b[:4] + struct.pack("<I", 1 << 30) + b[8:],
     "corrupt block at byte {at} (packet 2): total length 1073741824 (type 0x00000006)"),
    (lambda b: b[:8] + struct.pack("<I", 7) + b[12:],
     "corrupt packet block at byte {at} (packet 2): packet for undefined interface 7"),
    (lambda b: b[:20] + struct.pack("<I", 1000) + b[24:],
     "corrupt packet block at byte {at} (packet 2): captured length 1000 overruns the block"),
    (lambda b: block("<", 6, b"\0" * 8),
     "corrupt packet block at byte {at} (packet 2): block of 20 bytes too short for a packet"),
])
def test_pcapng_corrupt_block_keeps_earlier_packets(tmp_path, damage, message):
    good = epb("<", 0, 1, FRAMES[0])
    bad = epb("<", 0, 2, FRAMES[1])
    head = shb("<") + idb("<", 1) + good
    path = write(tmp_path, head + damage(bad) + epb("<", 0, 3, FRAMES[2]), "capture.pcapng")
    items, reader = read_all(path)
    assert [f for *_, f in items] == [FRAMES[0]]
    n = len(bad)
    assert reader.error == f"{path}: " + message.format(at=len(head), n=n, n2=n - 2, n4=n + 4)


def test_pcapng_idb_option_overrun(tmp_path):
    bad_idb = block("<", 1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200))
    path = write(tmp_path, shb("<") + bad_idb + epb("<", 0, 1, FRAMES[0]), "capture.pcapng")
    items, reader = read_all(path)
    assert items == []
    assert reader.error == (
        f"{path}: corrupt interface description block at byte 28 (packet 1): "
        "option 9 of 200 bytes overruns the block"
    )


@pytest.mark.parametrize("tail,message", [
    (shb("<") + spb("<", FRAMES[1]),
     "corrupt packet block at byte 88 (packet 1): simple packet block before any interface"),
    (shb("<")[:8] + b"\x11\x22\x33\x44" + shb("<")[12:],
     "corrupt section header block at byte 60 (packet 1): byte-order magic 0x11223344"),
], ids=["spb_without_idb", "bad_byte_order_magic"])
def test_pcapng_second_section_damage(tmp_path, tail, message):
    path = write(tmp_path, shb("<") + block("<", 5, b"\0" * 20) + tail, "capture.pcapng")
    items, reader = read_all(path)
    assert items == [] and reader.error == f"{path}: {message}"


def test_truncated_pcapng_at_every_byte(tmp_path):
    blocks = [shb("<"), idb("<", 1), epb("<", 0, 1, FRAMES[0]), block("<", 5, b"\0" * 12),
              epb("<", 0, 2, FRAMES[1]), spb("<", FRAMES[2])]
    data = b"".join(blocks)
    starts, packet_blocks, pos = [], [], 0
    for b in blocks:
        starts.append(pos)
        packet_blocks.append(b[:4] in (b"\x06\0\0\0", b"\x03\0\0\0"))
        pos += len(b)
    expected = [FRAMES[0], FRAMES[1], FRAMES[2]]
    for cut in range(len(data) + 1):
        path = write(tmp_path, data[:cut], "capture.pcapng")
        if cut < len(blocks[0]):
            with pytest.raises(CaptureError):
                CaptureReader(path)
            continue
        items, reader = read_all(path)
        whole = [i for i, s in enumerate(starts) if s + len(blocks[i]) <= cut]
        complete = sum(packet_blocks[i] for i in whole)
        assert [f for *_, f in items] == expected[:complete], cut
        if cut in starts or cut == len(data):
            assert reader.error is None, cut
            continue
        at = starts[len(whole)]
        present = cut - at
        detail = (f"12 bytes needed, {present} present" if present < 12
                  else f"header says {len(blocks[len(whole)])} bytes, {present} present")
        kind = "truncated block header" if present < 12 else "truncated block"
        assert reader.error == f"{path}: {kind} at byte {at} (packet {complete + 1}): {detail}", cut


# -- real corpus against dpkt --------------------------------------------------------------


def dpkt_packets(path):
    """(ts, frame) of every packet as dpkt reads it: the reference reader."""
    with open(path, "rb") as f:
        pcapng = f.read(4) == b"\x0a\x0d\x0d\x0a"
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if pcapng else dpkt.pcap.Reader(f)
        return [(float(ts), buf) for ts, buf in reader]


@pytest.mark.corpus
@pytest.mark.parametrize("path", captures())
def test_corpus_matches_dpkt_and_tshark_count(path):
    items, reader = read_all(path)
    ref = dpkt_packets(path)
    assert reader.error is None and reader.offset == reader.size
    assert len(items) == len(ref) == truth(path)["packets"]
    for (n, ts, _, frame), (ref_ts, ref_frame) in zip(items, ref):
        assert frame == ref_frame, n
        assert abs(ts - ref_ts) < 5e-7, n   # dpkt rounds twice (sec + usec/1e6); same microsecond


# -- fuzz --------------------------------------------------------------------------------

SEED_FILES = [
    small_pcap(),
    pcap_file([(1, 2, FRAMES[0]), (3, 4, FRAMES[1])], ">", MAGIC_NS),
    shb("<") + idb("<", 1, tsresol=9) + epb("<", 0, 5, FRAMES[0]) + spb("<", FRAMES[1])
    + block("<", 5, b"\0" * 12) + pb("<", 0, 6, FRAMES[2]),
    shb(">") + idb(">", 113) + epb(">", 0, 7, FRAMES[3]) + shb("<") + idb("<", 1) + epb("<", 0, 8, FRAMES[4]),
]
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_never_raises(tmp_path, data):
    path = write(tmp_path, data, "fuzz.cap")
    try:
        reader = CaptureReader(path)
    except CaptureError as err:
        assert "\n" not in str(err)
        return
    with reader:
        items = list(reader)
    assert reader.packets == len(items)
    assert [n for n, *_ in items] == list(range(1, len(items) + 1))
    assert reader.error is None or reader.error.startswith(f"{path}: ") and "\n" not in reader.error


@FUZZ
@given(magic=st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"]),
       rest=st.binary(max_size=400))
def test_fuzz_random_files(tmp_path, magic, rest):
    check_never_raises(tmp_path, magic + rest)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_files(tmp_path, data):
    raw = bytearray(data.draw(st.sampled_from(SEED_FILES)))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    check_never_raises(tmp_path, bytes(raw[:cut]))


def test_a_read_error_mid_file_ends_iteration_with_one_line_naming_it(tmp_path, monkeypatch):
    """EIO (a failing disk, a network share gone) is reported like damage, never raised."""
    import errno
    from otsec.capture import files as capture_files

    path = tmp_path / "eio.pcap"
    frames = [bytes(60)] * 3
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(head + b"".join(struct.pack("<IIII", 1, 0, 60, 60) + f for f in frames))
    monkeypatch.setattr(capture_files, "CHUNK_SIZE", 64)
    reader = capture_files.CaptureReader(path)
    real_readinto = reader._file.readinto
    calls = []

    def failing_readinto(into):
        calls.append(len(into))
        if len(calls) > 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_readinto(into)
    reader._file.readinto = failing_readinto
    got = list(reader)
    assert 0 < len(got) < 3
    assert reader.error.startswith(f"{path}: read error after byte ") and "Input/output error" in reader.error
