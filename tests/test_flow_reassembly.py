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


def test_released_segments_are_listed_with_the_packet_each_came_in():
    s = Stream()
    s.syn(0)
    assert s.push(1, b"ab", 2, 2.0) == b"ab" and s.bounds is None   # in order: no list
    assert s.push(6, b"fgh", 3, 3.0) == b""                          # after a hole at 3..5
    assert s.push(9, b"ij", 4, 4.0) == b""
    assert s.push(3, b"cde", 5, 5.0) == b"cdefghij"                  # fills it
    #              end offset, packet, ts:  cde -> 5,  fgh -> 3,  ij -> 4
    assert s.bounds == [(3, 5, 5.0), (6, 3, 3.0), (8, 4, 4.0)]
    assert s.push(11, b"k", 6, 6.0) == b"k" and s.bounds is None and s.arrival == {}


def test_segments_released_by_a_gap_start_at_the_first_queued_one():
    s = Stream()
    s.syn(0)
    s.push(1, b"aa", 2, 2.0)
    s.push(10, b"zz", 3, 3.0)        # bytes 3..9 never captured
    s.push(12, b"y", 4, 4.0)
    assert s.acked(13) == b"zzy" and s.bounds == [(2, 3, 3.0), (3, 4, 4.0)]


def test_queued_copies_keep_the_packet_of_their_last_byte():
    s = Stream()
    s.syn(0)
    s.push(5, b"ef", 2, 2.0)
    s.push(5, b"ef", 3, 3.0)          # the same bytes again: packet 2 brought them first
    s.push(7, b"g", 4, 4.0)
    s.push(7, b"gh", 5, 5.0)          # a longer copy: its last byte came in packet 5
    assert s.push(1, b"abcd", 6, 6.0) == b"abcdefgh"
    assert s.bounds == [(4, 6, 6.0), (6, 2, 2.0), (8, 5, 5.0)]


def test_queued_segment_overlapping_the_head_is_listed_for_its_new_bytes():
    s = Stream()
    s.syn(0)
    s.push(4, b"defg", 2, 2.0)
    assert s.push(1, b"abcde", 3, 3.0) == b"abcdefg"   # "de" delivered by packet 3
    assert s.bounds == [(5, 3, 3.0), (7, 2, 2.0)] and s.retransmitted_bytes == 2


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
    out = b""
    for packet, (seq, seg) in enumerate(segs):
        got = s.push(seq, seg, packet, float(packet))
        if not got:
            continue
        # every released byte is attributed to a packet that carried it
        start = 0
        for end, came_in, ts in s.bounds or [(len(got), packet, float(packet))]:
            first = (segs[came_in][0] - isn - 1) & 0xFFFFFFFF
            assert first <= len(out) + start and len(out) + end <= first + len(segs[came_in][1])
            assert ts == came_in and end > start
            start = end
        assert start == len(got)
        out += got
    assert out == data and s.gaps == 0 and s.arrival == {}
