"""TCP reassembly: order, retransmission, overlap (first copy wins), gaps, wrap-around, caps."""

import random

from hypothesis import given, settings, strategies as st

from otsec.flow import reassembly
from otsec.flow.reassembly import Stream, seq_diff


def test_in_order_segments_pass_through_unchanged():
    s = Stream()
    s.syn(999)
    assert s.push(1000, b"abc") == b"abc"
    assert s.push(1003, b"def") == b"def"
    assert s.next_seq == 1006 and not s.gapped


def test_out_of_order_segment_waits_for_the_hole():
    s = Stream()
    s.syn(0)
    assert s.push(4, b"efg") == b""
    assert s.push(1, b"abc") == b"abcefg"
    assert s.queue == {} and s.queued_bytes == 0


def test_retransmission_is_dropped_and_counted():
    s = Stream()
    s.syn(0)
    s.push(1, b"hello")
    assert s.push(1, b"hello") == b""
    assert s.retransmitted_bytes == 5


def test_overlap_keeps_first_copy_and_delivers_only_new_bytes():
    s = Stream()
    s.syn(0)
    assert s.push(1, b"abcd") == b"abcd"
    assert s.push(3, b"XXef") == b"ef"   # bytes 3-4 already delivered: first copy wins


def test_conflicting_queued_copy_is_flagged():
    s = Stream()
    s.syn(0)
    s.push(5, b"good")
    s.push(5, b"evil")
    assert s.overlap_conflicts == 1
    assert s.push(1, b"1234") == b"1234good"


def test_ack_beyond_hole_declares_gap_and_skips():
    s = Stream()
    s.syn(0)
    s.push(1, b"aa")
    s.push(10, b"zz")              # bytes 3..9 never captured
    out = s.acked(12)
    assert out == b"zz" and s.gapped and s.gaps == 1 and s.gap_bytes == 7


def test_queue_cap_forces_gap():
    s = Stream()
    s.syn(0)
    out = b""
    for i in range(reassembly.MAX_QUEUED_SEGMENTS + 1):
        out += s.push(100 + i, b"x")
    assert s.gaps == 1 and out == b"x" * (reassembly.MAX_QUEUED_SEGMENTS + 1)


def test_sequence_wraparound():
    s = Stream()
    s.syn(0xFFFFFFFD)
    assert s.push(0xFFFFFFFE, b"ab") == b"ab"
    assert s.next_seq == 0
    assert s.push(0, b"cd") == b"cd"
    assert seq_diff(5, 0xFFFFFFFF) == 6


def test_first_segment_without_syn_starts_the_stream():
    s = Stream()
    assert s.push(777, b"mid") == b"mid"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), seed=st.integers(0, 2**32 - 1),
       isn=st.integers(0, 2**32 - 1))
def test_any_cut_order_and_duplication_yields_the_original_stream(data, seed, isn):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 12)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    segs = [((isn + 1 + a) & 0xFFFFFFFF, data[a:b]) for a, b in zip(bounds, bounds[1:])]
    segs += rng.sample(segs, k=rng.randint(0, len(segs)))          # duplicates
    rng.shuffle(segs)
    s = Stream()
    s.syn(isn)
    out = b"".join(s.push(seq, seg) for seq, seg in segs)
    assert out == data and s.gaps == 0
