"""The flow table, both implementations (Python reference and compiled twin): direction,
content-based detection, connection reuse, bounds, Community ID."""

import socket

import pytest

from otsec.flow.session import Health
from otsec.flow.table import ACK, FIN, RST, SYN, community_id
from tests.flow_impls import IMPLEMENTATIONS, table_class
from tests.toy_protocol import TOY, msg

A, B, C = (socket.inet_aton(ip) for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
MAC_A, MAC_B = bytes.fromhex("001b1b000001"), bytes.fromhex("0080f4000002")


@pytest.fixture(params=IMPLEMENTATIONS)
def flow_table_class(request):
    """Each FlowTable implementation: the Python reference and the compiled twin."""
    return table_class(request.param)


def pkt(src, sport, dst, dport, flags=ACK, seq=0, ack=0, payload=b"", proto=6):
    macs = (MAC_A, MAC_B) if src == A else (MAC_B, MAC_A)
    return (*macs, src, dst, proto, sport, dport, flags, seq, ack, payload)


class Run:
    """A FlowTable (of the implementation under test) with the toy decoder, fed packets 1, 2, ..."""

    def __init__(self, table_class, **kw):
        self.events, self.flows = [], []
        self.health = Health()
        self.table = table_class((TOY,), {}, self.events.append, self.flows.append, self.health, **kw)
        self.n = 0

    def __call__(self, packet, ts=None):
        self.n += 1
        self.table.packet(self.n, float(self.n) if ts is None else ts, packet)


def handshake(run, sport=40000, dport=9999):
    run(pkt(A, sport, B, dport, SYN, seq=100))
    run(pkt(B, dport, A, sport, SYN | ACK, seq=500, ack=101))
    run(pkt(A, sport, B, dport, ACK, seq=101, ack=501))


def test_community_id_matches_the_published_spec_vector():
    saddr, daddr = socket.inet_aton("128.232.110.120"), socket.inet_aton("66.35.250.204")
    assert community_id(saddr, daddr, 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(daddr, saddr, 6, 80, 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_handshake_sets_client_and_events_get_per_message_direction(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    run(pkt(A, 40000, B, 9999, ACK, seq=101, ack=501, payload=msg(b"q", 1, b"rd")))
    run(pkt(B, 9999, A, 40000, ACK, seq=501, ack=108, payload=msg(b"r", 1, b"rd")))
    run.table.finish()
    req, resp = run.events
    assert (req.src_ip, req.dst_ip, req.src_port, req.dst_port) == ("10.0.0.1", "10.0.0.2", 40000, 9999)
    assert (resp.src_ip, resp.dst_ip) == ("10.0.0.2", "10.0.0.1")
    assert req.src_mac == "00:1b:1b:00:00:01" and resp.src_mac == "00:80:f4:00:00:02"
    assert (req.packet, resp.packet, resp.request_packet) == (4, 5, 4)
    (flow,) = run.flows
    assert flow.initiator_known and flow.client_ip == "10.0.0.1" and flow.decoded
    assert flow.app == "toy" and flow.events == 2 and flow.packets_c2s == 3


def test_content_detection_on_any_port_and_not_by_port_alone(flow_table_class):
    run = Run(flow_table_class)
    run(pkt(A, 40001, B, 12345, payload=msg(b"q", 1, b"x"), seq=1))     # toy on an odd port: found
    run(pkt(A, 40002, B, 9999, payload=b"GET / HTTP/1.1\r\n\r\n", seq=1))  # toy's port, not toy: ignored
    run.table.finish()
    assert [e.function for e in run.events] == ["x"]
    apps = {f.server_port: (f.app, f.decoded) for f in run.flows}
    assert apps == {12345: ("toy", True), 9999: ("unknown", False)}


def test_without_handshake_the_well_known_port_side_is_the_server(flow_table_class):
    run = Run(flow_table_class)
    run(pkt(B, 9999, A, 40000, payload=msg(b"r", 1, b"x"), seq=7))
    run.table.finish()
    (flow,) = run.flows
    assert not flow.initiator_known and flow.server_ip == "10.0.0.2" and flow.server_port == 9999
    assert run.events[0].kind == "response" and run.events[0].anomalies == ["toy.unpaired_response"]


def test_new_syn_after_close_starts_a_new_connection(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    run(pkt(A, 40000, B, 9999, FIN | ACK, seq=101, ack=501))
    run(pkt(B, 9999, A, 40000, FIN | ACK, seq=501, ack=102))
    handshake(run)
    run.table.finish()
    assert len(run.flows) == 2


def test_rst_closes_and_idle_flows_time_out(flow_table_class):
    run = Run(flow_table_class, tcp_idle=60.0)
    handshake(run)
    run(pkt(A, 40000, B, 9999, RST, seq=101), ts=4.0)
    run(pkt(A, 40001, C, 9999, SYN, seq=1), ts=5.0)
    run(pkt(A, 40002, C, 9999, SYN, seq=1), ts=200.0)   # sweep: both earlier flows ended
    assert len(run.flows) == 2 and run.table.counters["flows_timed_out"] == 2


def test_flow_cap_evicts_least_recently_active(flow_table_class):
    run = Run(flow_table_class, max_flows=20)
    for i in range(30):
        run(pkt(A, 1000 + i, B, 9999, SYN, seq=1))
    assert run.table.open_count <= 20
    assert run.table.counters["flows_evicted"] >= 10
    evicted_ports = {f.client_port for f in run.flows}
    assert 1000 in evicted_ports and 1029 not in evicted_ports


def test_hole_acknowledged_by_peer_becomes_gap_and_decoding_resumes(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    first, second, third = msg(b"q", 1, b"a"), msg(b"q", 2, b"b"), msg(b"q", 3, b"c")
    run(pkt(A, 40000, B, 9999, seq=101, payload=first))
    # `second` is never captured; `third` arrives and the server acknowledges both
    run(pkt(A, 40000, B, 9999, seq=101 + len(first) + len(second), payload=third))
    run(pkt(B, 9999, A, 40000, ACK, seq=501, ack=101 + len(first) + len(second) + len(third)))
    run.table.finish()
    assert [e.function for e in run.events] == ["a", "c"]
    assert run.health.gaps == 1 and run.flows[0].gaps == 1


def test_udp_and_other_ip_are_tracked_as_flows(flow_table_class):
    run = Run(flow_table_class)
    run(pkt(A, 5353, B, 53, 0, payload=b"q", proto=17))
    run(pkt(B, 53, A, 5353, 0, payload=b"r", proto=17))
    run(pkt(A, 0, B, 0, 0, payload=b"\x08\x00", proto=1))
    run.table.finish()
    kinds = sorted((f.transport, f.app, f.server_port) for f in run.flows)
    assert kinds == [("icmp", "unknown", 0), ("udp", "dns", 53)]


def test_first_request_without_handshake_already_names_the_server_mac(flow_table_class):
    run = Run(flow_table_class)
    run(pkt(A, 40000, B, 9999, payload=msg(b"q", 1, b"x"), seq=1))
    run.table.finish()
    (req,) = run.events
    assert req.dst_mac == "00:80:f4:00:00:02" and run.flows[0].server_mac == "00:80:f4:00:00:02"


def test_connections_between_the_same_hosts_share_their_address_texts(flow_table_class):
    """Addresses are kept for the run by whatever counts per host (the summary), so every
    connection holds the same text objects, not a copy each."""
    run = Run(flow_table_class)
    for sport in (40000, 40001):
        handshake(run, sport)
        run(pkt(A, sport, B, 9999, payload=msg(b"q", 1, b"x"), seq=101, ack=501))
    run.table.finish()
    first, second = run.flows
    assert (first.client_ip, first.client_mac) == ("10.0.0.1", "00:1b:1b:00:00:01")
    for name in ("client_ip", "server_ip", "client_mac", "server_mac"):
        assert getattr(first, name) is getattr(second, name), name
    assert run.events[0].src_ip is run.events[1].src_ip is first.client_ip


def test_data_held_behind_a_gap_is_released_before_the_packet_that_acknowledges_it(flow_table_class):
    """A request after uncaptured bytes comes out before its response, at its own packet."""
    run = Run(flow_table_class)
    handshake(run)
    lost, req, resp = msg(b"q", 1, b"lost"), msg(b"q", 2, b"req"), msg(b"r", 2, b"req")
    run(pkt(A, 40000, B, 9999, seq=101 + len(lost), payload=req))          # packet 4, after a hole
    run(pkt(B, 9999, A, 40000, ACK, seq=501, ack=101 + len(lost) + len(req), payload=resp))  # 5
    run.table.finish()
    (request, response) = run.events
    assert (request.kind, request.packet, request.ts) == ("request", 4, 4.0)
    assert response.kind == "response" and response.request_packet == 4 and not response.anomalies


def test_idle_sweeps_resume_after_the_clock_is_stepped_back(flow_table_class):
    run = Run(flow_table_class, tcp_idle=60.0)
    run(pkt(A, 40001, B, 9999, SYN, seq=1), ts=10_000.0)
    run(pkt(A, 40002, B, 9999, SYN, seq=1), ts=100.0)      # NTP stepped the clock back
    run(pkt(A, 40003, B, 9999, SYN, seq=1), ts=200.0)      # 100 s later: 40002 is idle
    assert {f.client_port for f in run.flows} == {40002}


def _client(run, offset, payload, ack=501):
    """A client segment starting ``offset`` bytes into the client's stream (ISN 100)."""
    run(pkt(A, 40000, B, 9999, ACK, seq=101 + offset, ack=ack, payload=payload))


def test_messages_queued_behind_a_filled_hole_keep_their_own_packets(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)                                             # packets 1-3
    m1, m2, m3 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two"), msg(b"q", 3, b"three")
    _client(run, len(m1), m2)                                  # 4: after a hole (m1 late)
    _client(run, len(m1) + len(m2), m3)                        # 5
    _client(run, 0, m1)                                        # 6: fills the hole
    run.table.finish()
    assert [(e.function, e.packet, e.ts) for e in run.events] == [
        ("one", 6, 6.0), ("two", 4, 4.0), ("three", 5, 5.0)]


def test_message_split_around_a_hole_completes_at_the_segment_with_its_last_byte(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    m1, m2, m3 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two"), msg(b"q", 3, b"three")
    cut = len(m1) + 4                                          # inside m2
    _client(run, cut, (m1 + m2 + m3)[cut:])                    # 4: end of m2, all of m3
    _client(run, 0, (m1 + m2)[:cut])                           # 5: m1, start of m2
    run.table.finish()
    assert [(e.function, e.packet) for e in run.events] == [("one", 5), ("two", 4), ("three", 4)]


def test_messages_after_a_hole_given_up_by_an_ack_keep_their_own_packets(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    m1, lost, m3, m4 = (msg(b"q", k, b"x" * k) for k in (1, 2, 3, 4))
    _client(run, 0, m1)                                        # 4
    _client(run, len(m1) + len(lost), m3)                      # 5: `lost` never captured
    _client(run, len(m1) + len(lost) + len(m3), m4)            # 6
    end = 101 + len(m1) + len(lost) + len(m3) + len(m4)
    run(pkt(B, 9999, A, 40000, ACK, seq=501, ack=end))         # 7: acknowledges past the hole
    run.table.finish()
    assert [(e.pair_key, e.packet) for e in run.events] == [(1, 4), (3, 5), (4, 6)]
    assert run.health.gaps == 1


def test_queued_messages_given_up_at_the_end_of_the_input_keep_their_own_packets(flow_table_class):
    run = Run(flow_table_class)
    handshake(run)
    m1, m2, m3 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two"), msg(b"q", 3, b"three")
    _client(run, len(m1), m2)                                  # 4: m1 never captured
    _client(run, len(m1) + len(m2), m3)                        # 5
    run.table.finish()
    assert [(e.function, e.packet, e.ts) for e in run.events] == [("two", 4, 4.0), ("three", 5, 5.0)]


def test_first_bytes_awaiting_detection_then_a_filled_hole(flow_table_class):
    """Detection sees held bytes + released segments: the packets still line up."""
    run = Run(flow_table_class)
    handshake(run)
    m1, m2, m3 = msg(b"q", 1, b"one"), msg(b"q", 2, b"two"), msg(b"q", 3, b"three")
    _client(run, 0, m1[:3])                                    # 4: too short to recognise
    _client(run, len(m1) + len(m2), m3)                        # 5: after a hole
    _client(run, 3, m1[3:] + m2)                               # 6: fills it
    run.table.finish()
    assert [(e.function, e.packet) for e in run.events] == [("one", 6), ("two", 6), ("three", 5)]


def test_the_other_directions_bytes_held_until_detection_keep_their_own_packets(flow_table_class):
    """A capture starting mid-connection: the server's first segments are not recognised
    (they begin with the tail of an earlier message) and are held; the client's request
    then identifies the protocol, and the held responses are decoded at their own packets."""
    run = Run(flow_table_class)
    first = b"xx" + msg(b"r", 7, b"a")
    run(pkt(B, 9999, A, 40000, seq=1000, payload=first))                        # 1
    run(pkt(B, 9999, A, 40000, seq=1000 + len(first), payload=msg(b"r", 8, b"b")))  # 2
    run(pkt(A, 40000, B, 9999, seq=50, payload=msg(b"q", 9, b"c")))             # 3: recognised
    run.table.finish()
    assert [(e.function, e.kind, e.packet, e.ts) for e in run.events] == [
        ("a", "response", 1, 1.0), ("b", "response", 2, 2.0), ("c", "request", 3, 3.0)]


def test_an_exception_raised_by_a_callback_propagates_out_of_the_call(flow_table_class):
    """A sink that fails (disk full, a stop request) must stop the run, not be swallowed."""
    class Stop(Exception):
        pass

    def refuse(_item):
        raise Stop

    table = flow_table_class((TOY,), {}, refuse, refuse, Health())
    with pytest.raises(Stop):
        table.packet(1, 1.0, pkt(A, 40000, B, 9999, payload=msg(b"q", 1, b"x"), seq=1))
    with pytest.raises(Stop):
        table.finish()


# -- decoders and callbacks that break their contract (found by reviewing the C twin) --------

def toy_with(**changes):
    import dataclasses
    return dataclasses.replace(TOY, **changes)


def run_with(table_class, decoder, packets):
    events, flows, health = [], [], Health()
    table = table_class((decoder,), {}, events.append, flows.append, health)
    for n, packet in enumerate(packets, 1):
        table.packet(n, float(n), packet)
    table.finish()
    return events, flows, health


def two_messages():
    return [pkt(A, 40000, B, 9999, SYN, seq=0),
            pkt(A, 40000, B, 9999, ACK, seq=1, ack=1, payload=msg(b"q", 1, b"rd") + msg(b"q", 2, b"rd"))]


@pytest.mark.parametrize("claim", [1000, 2**62, 2**64])
def test_a_frame_claiming_more_than_is_held_takes_the_rest(flow_table_class, claim):
    """A buggy frame() must not read past the held bytes: the rest is one message."""
    def frame(buf, pos):
        return claim if pos else len(buf) // 2   # the first message honestly, then too much
    events, flows, health = run_with(flow_table_class, toy_with(frame=frame), two_messages())
    assert [e.function for e in events] == ["rd", "rd"] and health.decoder_errors == 0
    assert flows[0].events == 2


@pytest.mark.parametrize("answer", [-2, -7, -(2**70)])
def test_any_negative_frame_answer_means_unframeable(flow_table_class, answer):
    calls = []

    def frame(buf, pos):
        calls.append(pos)
        return answer if len(calls) == 1 else TOY.frame(buf, pos)
    events, _, health = run_with(flow_table_class, toy_with(frame=frame), two_messages())
    assert health.resyncs >= 1 and [e.function for e in events] == ["rd"]


def test_a_decoder_returning_a_generator_or_none(flow_table_class):
    gen = toy_with(decode=lambda m, f, s: (ev for ev in TOY.decode(m, f, s)))
    events, _, health = run_with(flow_table_class, gen, two_messages())
    assert len(events) == 2 and health.messages == 2
    events, _, health = run_with(flow_table_class, toy_with(decode=lambda m, f, s: None), two_messages())
    assert events == [] and health.decoder_errors == 2


def test_unpaired_responses_are_flagged_whatever_the_event_carries(flow_table_class):
    from otsec.model import Event

    def decode(m, f, s):
        return [Event(protocol=None, kind="response", function="x", op_class="read", pair_key=[1])]
    packets = [pkt(A, 40000, B, 9999, SYN, seq=0),
               pkt(B, 9999, A, 40000, ACK, seq=1, ack=1, payload=msg(b"r", 1, b"rd"))]
    events, _, health = run_with(flow_table_class, toy_with(decode=decode), packets)
    # an unhashable key with nothing pending is simply unpaired (as dict.pop on an empty dict)
    assert events[0].anomalies == ["None.unpaired_response"] and health.unpaired_responses == 1


def test_the_compiled_table_refuses_calls_from_its_own_callbacks():
    table_cls = table_class("compiled")
    caught = []

    def on_event(ev):
        try:
            table.finish()
        except RuntimeError as exc:
            caught.append(str(exc))
    table = table_cls((TOY,), {}, on_event, lambda f: None, Health())
    for n, packet in enumerate(two_messages(), 1):
        table.packet(n, float(n), packet)
    table.finish()
    assert caught == ["FlowTable called again from one of its own callbacks"] * 2


def test_an_uninitialised_compiled_table_refuses_work_instead_of_crashing():
    table_cls = table_class("compiled")
    table = table_cls.__new__(table_cls)
    assert table.capture == "" and table.emitting == (0, 0) and table.open_count == 0
    with pytest.raises(RuntimeError, match="not initialised"):
        table.packet(1, 1.0, two_messages()[0])
    with pytest.raises(ValueError, match="ports"):
        table_cls((TOY,), {}, print, print, Health()).packet(1, 1.0, pkt(A, 70000, B, 9999))
