"""Whole-engine properties on every real capture of the shared corpus."""

import pytest

from otsec.engine import collect
from tests.corpus import captures, truth

OT_PROTOCOLS = {"modbus", "s7comm", "s7comm-plus", "cotp", "opcua"}


@pytest.mark.parametrize("path", captures())
def test_every_packet_is_read_and_no_decoder_fails(path):
    result = collect([path])
    assert result.stats["packets"] == truth(path)["packets"]
    assert result.stats["decode"]["decoder_errors"] == 0
    assert result.stats["capture_errors"] == []
    assert all(e.protocol in OT_PROTOCOLS and e.packet > 0 and e.flow_id.startswith("1:") for e in result.events)


@pytest.mark.parametrize("path", captures("it"))
def test_it_traffic_is_never_taken_for_an_industrial_protocol(path):
    result = collect([path])
    assert result.events == []
    assert not any(f.decoded for f in result.flows)


@pytest.mark.parametrize("path", captures("mixed"))
def test_two_processes_give_the_same_events_and_flows(path):
    one, two = collect([path]), collect([path], jobs=2)
    assert [e.to_dict() for e in one.events] == [e.to_dict() for e in two.events]
    assert [f.to_dict() for f in one.flows] == [f.to_dict() for f in two.flows]
    assert one.stats["decode"] == two.stats["decode"]


def test_unrelated_captures_given_together_do_not_merge_connections():
    """Reused 5-tuples in captures from different times are separate connections."""
    paths = [p.values[0] for p in captures("modbus")]
    if paths[0] is None:
        pytest.skip("corpus absent")
    together = collect(paths)
    assert len(together.events) == sum(len(collect([p]).events) for p in paths)


@pytest.mark.parametrize("path", captures("mixed"))
def test_summaries_folded_per_process_equal_one_process(path):
    from otsec.analysis.inventory import Summary
    from otsec.engine import reduce

    (one, s1), (two, s2) = reduce([path], Summary), reduce([path], Summary, jobs=2)
    assert one.report(s1, []) == two.report(s2, [])
