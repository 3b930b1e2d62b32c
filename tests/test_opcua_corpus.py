"""OPC UA decoder on the real captures of corpus/opcua, compared with tshark's truth.

tshark_truth.py records one record per OPC UA *chunk* tshark dissected. otsec emits one
event per complete *message* and counts its chunks in ``detail["chunks"]``; so chunk
counts per message type are compared through that field, and service counts (which
tshark takes from final chunks) per event.
"""

from __future__ import annotations

import collections
import shutil

import pytest

from tests.corpus import capture, captures, truth

engine = pytest.importorskip("otsec.engine")

pytestmark = pytest.mark.corpus

#: Where otsec legitimately sees more than tshark: (file, service id) -> extra messages.
#: icsnpp_opcua_with_gap.pcap: the 1460 bytes at server seq 10384 appear only in frame 26,
#: which tshark flags as a spurious retransmission and does not reassemble, so it loses
#: the 14 kB CreateSessionResponse (frames 12-30). otsec's reassembler takes the first copy
#: of those bytes it sees, which is the only copy in the capture, and decodes the message.
EXTRA_IN_OTSEC = {("icsnpp_opcua_with_gap.pcap", 464): 1}

_CACHE: dict = {}


def opcua_events(path):
    if path not in _CACHE:
        _CACHE[path] = [e for e in engine.collect([path]).events if e.protocol == "opcua"]
    return _CACHE[path]


def mode_name(inferred_mode: str) -> str:
    """truth 'SignAndEncrypt (inferred: ...)' -> 'SignAndEncrypt'."""
    return inferred_mode.split(" ", 1)[0]


@pytest.mark.parametrize("path", captures("opcua"))
def test_service_counts_equal_tshark(path):
    t = truth(path)["protocols"]["opcua"]
    ours = collections.Counter(e.function_code for e in opcua_events(path)
                               if e.detail.get("message_type") in ("OPN", "MSG", "CLO")
                               and e.function_code is not None)
    expected = collections.Counter({int(k): v["count"] for k, v in t["services"].items()})
    for (name, sid), extra in EXTRA_IN_OTSEC.items():
        if name == path.name:
            expected[sid] += extra
    assert ours == expected


@pytest.mark.parametrize("path", captures("opcua"))
def test_names_and_chunk_counts_per_message_type(path):
    t = truth(path)["protocols"]["opcua"]
    events = opcua_events(path)
    chunks = collections.Counter()
    for e in events:
        chunks[e.detail["message_type"]] += e.detail["chunks"] if "chunks" in e.detail else 1
    expected = collections.Counter(t["message_types"])
    expected["MSG"] += sum(n for (name, _), n in EXTRA_IN_OTSEC.items() if name == path.name)
    assert chunks == expected
    names = {int(k): v["name"] for k, v in t["services"].items()}
    for e in events:
        if e.function_code in names:
            assert e.detail["service"] == names[e.function_code]


@pytest.mark.parametrize("path", captures("opcua"))
def test_secure_channel_policies_and_modes(path):
    """Per channel (client port, server port, channel id): policy and mode as tshark infers."""
    t = truth(path)["protocols"]["opcua"]
    ours = {}
    for e in opcua_events(path):
        if e.detail.get("message_type") == "MSG":
            ports = tuple(sorted((e.src_port, e.dst_port)))
            ours[(ports, e.detail["secure_channel_id"])] = (
                e.detail.get("security_policy"), e.detail.get("security_mode"))
    for key, chan in t["secure_channels"].items():
        ends, scid = key.rsplit(" scid=", 1)
        ports = tuple(sorted(int(end.rsplit(":", 1)[1]) for end in ends.split("<->")))
        policy = chan["policy"].rsplit("#", 1)[1]
        assert ours[(ports, int(scid))] == (policy, mode_name(chan["inferred_mode"]))


@pytest.mark.parametrize("path", captures("opcua"))
def test_encrypted_bodies_are_counted_never_decoded(path):
    t = truth(path)["protocols"]["opcua"]
    encrypted = [e for e in opcua_events(path) if e.detail.get("encrypted")]
    assert sum(e.detail["chunks"] for e in encrypted) == t["final_chunks_without_service_id"]
    for e in encrypted:
        assert e.function_code is None and "service" not in e.detail and e.targets == []
        assert e.function in ("Encrypted message", "OpenSecureChannel", "CloseSecureChannel")


@pytest.mark.parametrize("path", captures("opcua"))
def test_err_messages_and_clean_decoding(path):
    t = truth(path)["protocols"]["opcua"]
    errors = collections.Counter(int(e.detail["error"], 16) for e in opcua_events(path)
                                 if e.function == "Error")
    assert errors == collections.Counter({int(k): v for k, v in t["err_messages"].items()})
    flagged = [(e.packet, e.function, e.anomalies) for e in opcua_events(path)
               if set(e.anomalies) - {"opcua.unpaired_response"}]
    if path.name == "iti_opcua_method_call.pcap":
        # the two CallRequests that froze old Wiresharks: tshark 4.0 marks frame 42
        # "Malformed Packet" too (MethodId String length past the end); frame 84 carries an
        # invalid encoding the server itself rejects with BadDecodingError
        assert flagged == [(42, "Call", ["opcua.truncated_body"]), (84, "Call", ["opcua.decode_error"])]
    else:
        assert flagged == []


def test_mainloop_identities_and_operations():
    events = opcua_events(capture("opcua/icsnpp_open62541_mainloop.pcap"))
    endpoints = [e for e in events if e.detail.get("service") == "GetEndpointsResponse"]
    assert len(endpoints) == 2
    for e in endpoints:
        assert e.identity["application_uri"] == "urn:open62541.server.application"
        assert e.identity["application_name"] == "open62541-based OPC UA Application"
        assert e.detail["endpoints"][0]["security_policy"] == "None"
    create = next(e for e in events if e.detail.get("service") == "CreateSessionRequest")
    assert create.identity == {"application_uri": "urn:unconfigured:application", "application_type": "Client"}
    activate = next(e for e in events if e.function == "ActivateSession" and e.kind == "request")
    assert activate.detail["identity_token"] == "UserName" and activate.detail["user_name"] == "user1"
    writes = [e for e in events if e.function == "Write" and e.kind == "request"]
    assert [i["value"] for e in writes for i in e.detail["items"]] == [1, 2]
    assert {t.name for e in writes for t in e.targets} == {"ns=1;s=the.answer"}
    call = next(e for e in events if e.function == "Call" and e.kind == "request")
    assert [t.name for t in call.targets] == ["i=85", "ns=1;i=62541"] and call.op_class == "control"
    classes = collections.Counter(e.op_class for e in events)
    assert classes["program"] == 8 and classes["write"] == 4 and classes["identify"] == 4


def test_encrypted_capture_endpoints_offer_every_mode():
    events = opcua_events(capture("opcua/icsnpp_open62541_encrypted_basic128rsa15.pcap"))
    offered = {(ep["security_mode"], ep["security_policy"]) for e in events
               for ep in e.detail.get("endpoints", ())}
    assert ("None", "None") in offered and ("SignAndEncrypt", "Basic128Rsa15") in offered
    opn = [e for e in events if e.function == "OpenSecureChannel" and e.detail.get("encrypted")]
    assert len(opn) == 2 and all(e.detail["sender_certificate_thumbprint"] for e in opn)
    # each side's certificate is the other's receiver thumbprint
    assert opn[0].detail["sender_certificate_thumbprint"] == opn[1].detail["receiver_certificate_thumbprint"]


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_differential_against_pyshark():
    """Per message, in stream order: packet, message type, service id, request id."""
    pyshark = pytest.importorskip("pyshark")
    path = capture("opcua/icsnpp_python_minimal.pcap")
    cap = pyshark.FileCapture(str(path), display_filter="opcua")
    try:
        theirs = []
        for pkt in cap:
            for layer in pkt.get_multiple_layers("opcua"):
                sid = layer.get_field_value("servicenodeid_numeric")
                rid = layer.get_field_value("security_rqid")
                theirs.append((int(pkt.number), layer.get_field_value("transport_type"),
                               int(sid) if sid else None, int(rid) if rid else None))
    finally:
        cap.close()
    ours = [(e.packet, e.detail["message_type"], e.function_code, e.detail.get("request_id"))
            for e in opcua_events(path)]
    assert ours == theirs
