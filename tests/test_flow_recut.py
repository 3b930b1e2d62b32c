"""Property: however the TCP streams of a real capture are cut into segments, duplicated
and locally reordered, the decoded events are exactly the same."""

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from otsec.capture import CaptureReader, parse_packet
from otsec.engine import Engine
from tests.corpus import capture

CAPTURES = (
    "modbus/icsnpp_modbus_example.pcap",
    "s7comm/iti_s7comm_download_block_db1.pcap",
    "s7commplus/iti_s7-1200_upload_ob1_tiav12.pcap",
    "opcua/icsnpp_open62541_mainloop.pcap",
    "opcua/iti_opcua_method_call.pcap",
)
SEQ, PAYLOAD = 8, 10


def load(relpath):
    with CaptureReader(capture(relpath)) as reader:
        rows = [(n, ts, parse_packet(lt, frame)) for n, ts, lt, frame in reader]
    return [(n, ts, p) for n, ts, p in rows if not isinstance(p, str)]


def recut(packets, rng):
    """Split payloads at random points, duplicate some pieces, swap neighbours within a direction."""
    out = []
    seen_data = set()
    for n, ts, p in packets:
        payload = p[PAYLOAD]
        if p[4] != 6 or len(payload) < 2:
            out.append((n, ts, p))
            continue
        cuts = sorted(rng.sample(range(1, len(payload)), k=min(len(payload) - 1, rng.randint(0, 4))))
        bounds = [0, *cuts, len(payload)]
        pieces = [p[:SEQ] + ((p[SEQ] + a) & 0xFFFFFFFF,) + p[SEQ + 1:PAYLOAD] + (payload[a:b],)
                  for a, b in zip(bounds, bounds[1:])]
        direction = p[2:4] + p[5:7]
        first_of_direction = direction not in seen_data
        seen_data.add(direction)
        if len(pieces) > 2 and not first_of_direction and rng.random() < 0.5:
            i = rng.randrange(1, len(pieces) - 1)
            pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        if rng.random() < 0.3:
            pieces.append(rng.choice(pieces))
        out.extend((n, ts, piece) for piece in pieces)
    return out


def decoded(packets):
    events = []
    engine = Engine(on_event=events.append)
    for n, ts, p in packets:
        engine.table.packet(n, ts, p)
    engine.finish()
    return [(e.protocol, e.kind, e.function_code, e.function, e.op_class, e.result, e.status,
             e.src_ip, e.src_port, e.dst_ip, e.dst_port, [t.to_dict() for t in e.targets],
             sorted(e.anomalies), e.identity, e.request_packet, e.packet) for e in events]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from(CAPTURES))
def test_recut_streams_decode_to_the_same_events(seed, which):
    packets = load(which)
    expected = decoded(packets)
    assert expected, f"{which} decodes to no events"
    assert decoded(recut(packets, random.Random(seed))) == expected
