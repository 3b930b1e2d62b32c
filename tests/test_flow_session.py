"""The session driver: framing loop, resync after gaps and junk, pairing, health counters."""

from otsec.decoders.base import Decoder
from otsec.flow.session import Health, Session
from tests.toy_protocol import TOY, _frame, _probe, msg


def names(events):
    return [e.function for e in events]


def test_several_messages_in_one_chunk_and_one_message_over_many():
    s = Session(TOY, Health())
    assert names(s.feed(msg(b"q", 1, b"a") + msg(b"q", 2, b"b"), True, False)) == ["a", "b"]
    whole = msg(b"q", 3, b"long")
    out = []
    for i in range(len(whole)):
        out += s.feed(whole[i:i + 1], True, False)
    assert names(out) == ["long"]


def test_gap_discards_partial_message_and_resyncs_on_next_header():
    h = Health()
    s = Session(TOY, h)
    first = msg(b"q", 1, b"lost")
    assert s.feed(first[:4], True, False) == []
    # the rest of the first message was never captured; the stream resumes mid-junk
    events = s.feed(b"\x00junk" + msg(b"q", 2, b"next"), True, True)
    assert names(events) == ["next"]
    assert h.gaps == 1 and h.resyncs == 1 and h.unframeable_bytes == 5


def test_unframeable_bytes_do_not_make_the_session_deaf():
    h = Health()
    s = Session(TOY, h)
    events = s.feed(b"garbage!!" + msg(b"q", 7, b"ok"), True, False)
    assert names(events) == ["ok"] and h.unframeable_bytes == 9


def test_pairing_sets_request_packet_and_flags_unpaired_responses():
    h = Health()
    s = Session(TOY, h)
    (req,) = s.feed(msg(b"q", 9, b"x"), True, False)
    req.packet = 11
    s.pair(req)
    (resp,) = s.feed(msg(b"r", 9, b"x"), False, False)
    s.pair(resp)
    assert resp.request_packet == 11 and not resp.anomalies
    (stray,) = s.feed(msg(b"r", 42, b"y"), False, False)
    s.pair(stray)
    assert stray.anomalies == ["toy.unpaired_response"] and h.unpaired_responses == 1


def test_finish_counts_truncated_and_unanswered():
    h = Health()
    s = Session(TOY, h)
    (req,) = s.feed(msg(b"q", 1), True, False)
    s.pair(req)
    s.feed(msg(b"q", 2, b"abc")[:6], True, False)
    s.finish()
    assert h.truncated_at_eof == 1 and h.unanswered_requests == 1


def test_decoder_exception_is_counted_not_raised():
    def boom(msg, from_client, state):
        raise ValueError("bug")
    h = Health()
    s = Session(Decoder("bad", (), _probe, _frame, lambda: None, boom), h)
    assert s.feed(msg(b"q", 1), True, False) == [] and h.decoder_errors == 1


def test_events_carry_the_packet_given_with_the_bytes():
    s = Session(TOY, Health())
    events = s.feed(msg(b"q", 1, b"a") + msg(b"q", 2, b"b"), True, False, 12, 1.5)
    assert [(e.packet, e.ts) for e in events] == [(12, 1.5), (12, 1.5)]


def test_released_segments_give_each_message_the_packet_of_its_last_byte():
    s = Session(TOY, Health())
    m1, m2, m3 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two"), msg(b"q", 3, b"three")
    data = m1 + m2 + m3
    # segments as the reassembler released them: m1 + the first 3 bytes of m2 arrived last
    # (packet 9, it filled the hole); the rest of m2 came in packet 6, m3 in packet 7
    bounds = [(len(m1) + 3, 9, 9.0), (len(m1) + len(m2), 6, 6.0), (len(data), 7, 7.0)]
    events = s.feed(data, True, False, 9, 9.0, bounds)
    assert [(e.function, e.packet, e.ts) for e in events] == [
        ("one", 9, 9.0), ("two", 6, 6.0), ("three", 7, 7.0)]


def test_bytes_held_from_an_earlier_delivery_complete_where_their_last_byte_is():
    s = Session(TOY, Health())
    m1, m2 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two")
    assert s.feed(m1[:4], True, False, 3, 3.0) == []       # held: the start of m1
    rest = m1[4:]
    events = s.feed(rest + m2, True, False, 8, 8.0, [(len(rest), 8, 8.0), (len(rest) + len(m2), 5, 5.0)])
    assert [(e.function, e.packet) for e in events] == [("one", 8), ("two", 5)]


def test_one_released_message_spanning_segments_gets_the_last_one():
    s = Session(TOY, Health())
    m = msg(b"r", 4, b"long body")
    (ev,) = s.feed(m, False, False, 10, 10.0, [(2, 10, 10.0), (6, 4, 4.0), (len(m), 5, 5.0)])
    assert (ev.packet, ev.ts) == (5, 5.0)
