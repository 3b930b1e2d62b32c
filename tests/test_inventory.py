"""Host inventory: roles inferred from behaviour, identity, OUI vendor, function tables."""

from otsec.analysis.inventory import Summary, mac_vendor
from otsec.model import Event


def ev(src, dst, kind, op, protocol="modbus", function="Read Holding Registers", **kw):
    return Event(protocol=protocol, kind=kind, function=function, op_class=op,
                 src_ip=src, dst_ip=dst, **kw)


def roles(events):
    s = Summary()
    for e in events:
        s.add_event(e)
    return {h["ip"]: h["role"] for h in s.report({}, [])["hosts"]}


def exchange(client, server, op, protocol="modbus", n=1):
    out = []
    for _ in range(n):
        out += [ev(client, server, "request", op, protocol), ev(server, client, "response", op, protocol)]
    return out


def test_roles_follow_behaviour():
    events = (exchange("10.0.0.10", "10.0.0.20", "read", n=3) + exchange("10.0.0.10", "10.0.0.20", "write")
              + exchange("10.0.0.30", "10.0.0.40", "program", "s7comm")
              + exchange("10.0.0.50", "10.0.0.60", "read", "opcua")
              + exchange("10.0.0.70", "10.0.0.40", "identify", "s7comm"))
    assert roles(events) == {
        "10.0.0.10": "hmi", "10.0.0.20": "plc", "10.0.0.30": "engineering_workstation",
        "10.0.0.40": "plc", "10.0.0.50": "historian", "10.0.0.60": "server",
        "10.0.0.70": "engineering_workstation"}


def test_station_answering_a_plc_download_job_is_not_a_plc():
    # During an S7 download the PLC sends "Download block" jobs to the engineering station.
    events = (exchange("10.0.0.30", "10.0.0.40", "program", "s7comm", n=3)
              + exchange("10.0.0.40", "10.0.0.30", "program", "s7comm", n=2))
    assert roles(events) == {"10.0.0.30": "engineering_workstation", "10.0.0.40": "plc"}


def test_identity_and_vendor_are_reported_for_the_sender():
    s = Summary()
    s.add_event(ev("10.0.0.20", "10.0.0.10", "response", "identify", function="Read Device Identification",
                   identity={"vendor": "Schneider Electric", "product_code": "BMX P34 2020"},
                   src_mac="00:80:f4:32:00:14"))
    (host,) = [h for h in s.report({}, [])["hosts"] if h["ip"] == "10.0.0.20"]
    assert host["identity"]["product_code"] == "BMX P34 2020"
    assert host["vendor"] == "TELEMECANIQUE ELECTRIQUE" and host["role"] == "plc"


def test_function_table_counts_requests_responses_and_exceptions():
    s = Summary()
    for e in exchange("a", "b", "read", n=2):
        s.add_event(e)
    s.add_event(ev("b", "a", "response", "read", result="exception"))
    (row,) = s.report({}, [])["functions"]["modbus"]
    assert (row["requests"], row["responses"], row["exceptions"], row["count"]) == (2, 3, 1, 5)


def test_unknown_or_absent_mac_has_no_vendor():
    assert mac_vendor(None) is None and mac_vendor("02:00:00:00:00:01") is None


def test_a_mac_shared_by_many_ips_or_a_virtual_router_mac_is_a_gateway_not_a_host():
    s = Summary()
    for ip in ("10.1.0.1", "10.2.0.1", "10.3.0.1"):
        s.add_event(ev(ip, "10.9.0.9", "request", "read", src_mac="08:5b:0e:fc:4b:10"))
    s.add_event(ev("203.0.113.5", "10.9.0.9", "request", "read", src_mac="00:00:5e:00:01:32"))
    s.add_event(ev("10.9.0.9", "10.1.0.1", "response", "read", src_mac="00:80:f4:32:00:14"))
    report = s.report({}, [])
    hosts = {h["ip"]: h for h in report["hosts"]}
    assert set(report["gateway_macs"]) == {"08:5b:0e:fc:4b:10", "00:00:5e:00:01:32"}
    assert hosts["10.1.0.1"]["macs"] == [] and hosts["10.1.0.1"]["via_gateway"] == ["08:5b:0e:fc:4b:10"]
    assert hosts["10.1.0.1"]["vendor"] is None and hosts["203.0.113.5"]["vendor"] is None
    assert hosts["10.9.0.9"]["macs"] == ["00:80:f4:32:00:14"]


def test_request_and_response_with_different_codes_are_one_row():
    s = Summary()
    s.add_event(ev("a", "b", "request", "read", "opcua", "Read", function_code=631))
    s.add_event(ev("b", "a", "response", "read", "opcua", "Read", function_code=634))
    s.add_event(ev("b", "a", "response", "read", "opcua", "Read", function_code=634, result="error"))
    (row,) = s.report({}, [])["functions"]["opcua"]
    assert (row["code"], row["requests"], row["responses"], row["exceptions"]) == (631, 1, 2, 1)


def test_cotp_connection_setup_counts_under_s7comm():
    s = Summary()
    s.add_event(ev("a", "b", "request", "session", "cotp", "Connection Request"))
    s.add_event(ev("a", "b", "request", "read", "s7comm", "Read Var"))
    (pair,) = s.report({}, [])["communications"]
    assert pair["protocol"] == "s7comm" and pair["operations"] == {"read": 1, "session": 1}


def test_a_client_whose_requests_are_mostly_rejected_is_a_scanner():
    events = []
    for fc in range(60, 66):
        events += [ev("10.0.0.5", "10.0.0.20", "request", "other"),
                   ev("10.0.0.20", "10.0.0.5", "response", "other", result="exception")]
    assert roles(events)["10.0.0.5"] == "scanner"


def test_multicast_destinations_are_not_hosts():
    from otsec.model import Flow

    s = Summary()
    s.add_flow(Flow("1:x", "udp", "10.0.0.5", 5000, "239.255.255.250", 1900))
    assert [h["ip"] for h in s.report({}, [])["hosts"]] == ["10.0.0.5"]


def test_plc_download_jobs_count_as_the_stations_operation():
    """The PLC sends the "Download block" jobs of a download on the station's connection
    (station port 49152 -> PLC port 102): who talks to whom shows only the station asking
    the PLC, and the station does not "serve" S7comm by answering those jobs."""
    station, plc = "10.0.0.30", "10.0.0.40"
    events = [ev(station, plc, "request", "program", "s7comm", "Request download", src_port=49152, dst_port=102),
              ev(plc, station, "response", "program", "s7comm", "Request download", src_port=102, dst_port=49152),
              ev(plc, station, "request", "program", "s7comm", "Download block", src_port=102, dst_port=49152),
              ev(station, plc, "response", "program", "s7comm", "Download block", src_port=49152, dst_port=102)]
    s = Summary()
    for e in events:
        s.add_event(e)
    report = s.report({}, [])
    assert [(c["src"], c["dst"], c["operations"]) for c in report["communications"]] == [
        (station, plc, {"program": 2})]
    hosts = {h["ip"]: h for h in report["hosts"]}
    assert (hosts[station]["uses"], hosts[station]["serves"]) == (["s7comm"], [])
    assert (hosts[plc]["uses"], hosts[plc]["serves"]) == ([], ["s7comm"])
    assert (hosts[station]["role"], hosts[plc]["role"]) == ("engineering_workstation", "plc")


def test_identity_is_the_latest_whatever_order_the_shards_merge_in():
    """--jobs folds one summary per process: a host's identity must not depend on which
    one is merged last. The latest value (capture time, packet) wins."""
    old = ev("10.0.0.20", "10.0.0.10", "response", "identify", identity={"firmware": "V2.1"}, ts=10.0, packet=5)
    new = ev("10.0.0.20", "10.0.0.11", "response", "identify", identity={"firmware": "V3.0"}, ts=20.0, packet=9)
    results = []
    for first, second in ((old, new), (new, old)):
        a, b = Summary(), Summary()
        a.add_event(first)
        b.add_event(second)
        a.merge(b)
        results.append(a.hosts["10.0.0.20"].identity)
    one = Summary()
    for e in (new, old):            # one process that saw them out of time order
        one.add_event(e)
    assert results == [{"firmware": "V3.0"}] * 2 and one.hosts["10.0.0.20"].identity == {"firmware": "V3.0"}
