"""The indented JSON writer of ``otsec analyze --format json`` (otsec/report/indented_json.py)
writes exactly ``json.dumps(document, indent=2, default=str)``: on real summaries (the
examples, every corpus capture, the benchmark when generated) and on values where the C
and Python encoders could part ways."""

import collections
import datetime as dt
import decimal
import enum
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from otsec.analysis.inventory import Summary
from otsec.cli import main as cli_main
from otsec.engine import reduce
from otsec.report.indented_json import write_indented
from tests.corpus import captures

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "pcaps").glob("*.pcap"))


def written(document, pieces_per_write: int = 1024) -> tuple[str, list[str]]:
    writes: list[str] = []
    write_indented(document, writes.append, pieces_per_write)
    return "".join(writes), writes


def assert_same(document) -> None:
    assert written(document)[0] == json.dumps(document, indent=2, default=str)


def summary_of(path: Path) -> dict:
    summary, stats = reduce([path], Summary)
    return summary.report(stats, [str(path)])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_summaries(path):
    assert_same(summary_of(path))


@pytest.mark.corpus
@pytest.mark.parametrize("path", captures())
def test_corpus_summaries(path):
    assert_same(summary_of(path))


def test_benchmark_summary(bench_200k):
    """The benchmark's shape: hundreds of hosts, thousands of communications, nested counts."""
    document = summary_of(bench_200k)
    assert len(document["communications"]) > 1000
    assert_same(document)


class Level(enum.IntEnum):
    HIGH = 7


class Mode(str, enum.Enum):
    NONE = "None"


class Ratio(float):
    pass


class Name(str):
    pass


class Opaque:
    def __str__(self) -> str:
        return "opaque \u00e9\n\"quoted\""


TRICKY = {
    "ascii and not": ["plain", "caf\u00e9", "\u65e5\u672c", "\U0001f600", "tab\tnewline\n", "quote\"back\\slash",
                      "\x00\x1f\x7f", "\u2028\u2029", ""],
    "floats": [0.0, -0.0, 1.5, 1e300, 1e-300, 123456789.123456789, float("nan"), float("inf"), float("-inf"),
               Ratio(2.5), Ratio("nan")],
    "ints": [0, -1, 2 ** 64, -(2 ** 63), True, False, None, Level.HIGH],
    "empties": [{}, [], (), [[]], [{}], {"a": {}}, {"a": []}, [[], {}], {"e": {"f": {"g": []}}}],
    "keys": {3: "int", 2.5: "float", True: "bool", None: "none", float("nan"): "nan",
             float("inf"): "inf", Level.HIGH: "intenum", Name("sub"): "str subclass", "": "empty"},
    "default=str": [Opaque(), dt.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("1.10"), {1, 2}, frozenset({"a"}),
                    Path("/tmp/x"), b"bytes", Mode.NONE],
    "subclasses": [collections.Counter(a=2, b=1), collections.OrderedDict(z=1, a=2),
                   collections.defaultdict(list, k=[1, (2, 3)]), (1, "two", (3.0,))],
    "deep": [[[[[[{"x": [1, {"y": [2, [3, {}]]}]}]]]]]],
    "mixed flat and nested": {"a": 1, "b": [1, 2], "c": "s", "d": {"e": None}, "f": [], "g": 2.0},
}


@pytest.mark.parametrize("name", list(TRICKY))
def test_tricky_values(name):
    assert_same(TRICKY[name])
    assert_same({name: TRICKY[name]})


def test_the_whole_tricky_document_and_scalars():
    assert_same(TRICKY)
    for scalar in ("x\u00e9", 1, 1.5, float("nan"), None, True, Opaque(), Level.HIGH, {}, []):
        assert_same(scalar)


@pytest.mark.parametrize("document", [{"a": [1, {(1, 2): "in a flat object"}]},
                                      {"a": [1, {(1, 2): ["in a nested object"]}]}])
def test_errors_are_jsons(document):
    """A key json refuses is refused with json's error, in either path of the writer."""
    with pytest.raises(TypeError) as ours:
        written(document)
    with pytest.raises(TypeError) as theirs:
        json.dumps(document, indent=2, default=str)
    assert str(ours.value) == str(theirs.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=4) | st.integers() | st.floats() | st.booleans() | st.none(),
                      children, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_documents(document):
    assert_same(document)


def test_written_in_bounded_pieces():
    """A long list of small records is written as it goes, not joined whole at its end."""
    document = {"rows": [{"n": i, "tags": {"k": "v"}} for i in range(2000)],
                "flat_rows": [{"n": i} for i in range(2000)]}
    text, writes = written(document, pieces_per_write=50)
    assert text == json.dumps(document, indent=2, default=str)
    assert len(writes) > 60 and max(len(w) for w in writes) < 50 * 40


def test_analyze_writes_the_document_and_a_newline():
    out = io.StringIO()
    cli_main._write_json(TRICKY, out)
    assert out.getvalue() == json.dumps(TRICKY, indent=2, default=str) + "\n"


def test_nan_and_infinity_stay_jsons_spelling():
    text = written({"v": [math.nan, math.inf]})[0]
    assert text == '{\n  "v": [\n    NaN,\n    Infinity\n  ]\n}'
