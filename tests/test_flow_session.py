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
