"""The compiled Finding.tally (otsec/detect/_findings.c) against its Python reference,
Finding._tally_python: the same calls leave two findings equal in every field.

The checker counts every repeated occurrence of a finding through tally, so the twin
must agree on first/last occurrence (also when time goes backwards, repeats or is NaN),
the count, and the evidence samples (values as text, None and "" skipped, the first
MAX_SAMPLES distinct values per field kept, the rest counted as dropped)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings, strategies as st

from otsec.detect import findings
from otsec.detect.findings import MAX_SAMPLES, Endpoint, Finding

from tests.flow_impls import COMPILED_REQUIRED


@pytest.fixture(autouse=True)
def _compiled():
    """Skip without the compiled twin, or fail where it is required (scripts/test.sh)."""
    if Finding.tally is Finding._tally_python:
        why = "otsec.detect._findings is not built (python setup.py build_ext --inplace)"
        if COMPILED_REQUIRED:
            pytest.fail(f"OTSEC_REQUIRE_COMPILED=1 but {why}", pytrace=False)
        pytest.skip(why)


class Text(str):
    """A str subclass: counted by its str() like any other non-str value."""


VALUES = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]),
                   st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=False, width=16),
                   st.builds(Text, st.sampled_from(["", "a", "x"])))
NAMES = st.sampled_from(["mac", "activity", "function", "flag"])
TIMES = st.one_of(st.floats(min_value=0, max_value=50, width=16), st.integers(0, 50), st.just(math.nan))
CALLS = st.lists(st.tuples(TIMES, st.integers(1, 10**6), st.sampled_from(["a.pcap", "b.pcap", None]),
                           st.lists(st.tuples(NAMES, VALUES), max_size=4), st.integers(0, 3),
                           st.booleans()), max_size=40)


def fresh() -> Finding:
    return Finding("OTSEC-DEVICE-001", Endpoint("10.0.0.1"), None, "modbus", 502, "x")


def same(a: Finding, b: Finding) -> None:
    left, right = dataclasses.asdict(a), dataclasses.asdict(b)
    for k in ("first_ts", "last_ts"):   # NaN != NaN: compare what they are
        x, y = left.pop(k), right.pop(k)
        assert repr(x) == repr(y) and type(x) is type(y), k
    assert left == right
    assert [list(v) for v in a.samples.values()] == [list(v) for v in b.samples.values()]   # order


@settings(max_examples=400, deadline=None)
@given(CALLS)
def test_compiled_tally_equals_python(calls):
    compiled, python = fresh(), fresh()
    for ts, packet, capture, evidence, count, as_views in calls:
        names, values = tuple(n for n, _ in evidence), tuple(v for _, v in evidence)
        if as_views:   # add() passes a dict's views; zip() stops at the shorter
            d = dict(evidence)
            names, values = d.keys(), list(d.values())[:max(0, len(d) - 1)]
        compiled.tally(ts, packet, capture, names, values, count)
        python._tally_python(ts, packet, capture, names, values, count)
        same(compiled, python)


def test_samples_keep_the_first_values_and_count_the_rest_as_dropped():
    f = fresh()
    for i in range(MAX_SAMPLES + 3):
        f.tally(float(i), i, None, ("flag", "mac"), (f"v{i}", None))
    f.tally(99.0, 99, None, ("flag",), ("v0",), count=2)
    assert list(f.samples["flag"]) == [f"v{i}" for i in range(MAX_SAMPLES)] and "mac" not in f.samples
    assert (f.samples["flag"]["v0"], f.samples_dropped, f.count) == (2, 3, MAX_SAMPLES + 5)


def test_wrong_calls_are_type_errors_not_crashes():
    f = fresh()
    with pytest.raises(TypeError):
        f.tally(1.0, 1, None, ("a",))
    with pytest.raises(TypeError):
        f.tally(1.0, 1, None, ("a",), ("b",), colour=1)
    f.samples = ["not", "a", "dict"]
    with pytest.raises(TypeError, match="samples must be a dict"):
        f.tally(1.0, 1, None, ("a",), ("b",))
    with pytest.raises(TypeError):
        Finding.tally(object(), 1.0, 1, None, (), ())   # not a Finding: the descriptor refuses
    del f.count
    with pytest.raises(AttributeError, match="count"):
        f.tally(1.0, 1, None, (), ())


def test_the_compiled_tally_is_the_one_installed():
    assert findings.Finding.tally is not findings.Finding._tally_python
    assert type(findings.Finding.__dict__["tally"]).__name__ == "method_descriptor"
