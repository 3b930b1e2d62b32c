#!/usr/bin/env python3
"""Differential fuzzing of the two engines: randomly damaged real captures through the
pure-Python flow layer and the compiled one (with the decoder twins), which must give the
same events, flows and statistics, or fail the same way.

The tests run a few hundred such cases; this runs for as long as asked, and is most useful
under AddressSanitizer, which turns a silent memory error in the C code into a report:

    CFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g' \\
        python setup.py build_ext --inplace --force
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
    ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc python scripts/fuzz_engines.py --seconds 900
    python setup.py build_ext --inplace --force          # the normal build again

Inputs that differ are kept in --out for reproduction; the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otsec.engine import CompiledFlowTable, EngineConfig, collect  # noqa: E402

#: Captures larger than this are skipped: the point is many cases, not long ones.
MAX_CAPTURE_BYTES = 400_000


def outcome(path: Path, compiled: bool):
    """Everything a run leaves, comparable; or the exception it raised."""
    try:
        r = collect([path], config=EngineConfig(compiled=compiled))
    except Exception as exc:  # noqa: BLE001 - both engines must fail alike
        return repr(exc)
    return ([e.to_dict() for e in r.events], [f.to_dict() for f in r.flows], r.stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("OTSEC_CORPUS", ROOT.parent / "shared" / "corpus")))
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("fuzz-differences"))
    args = parser.parse_args()
    if CompiledFlowTable is None:
        print("fuzz_engines: the compiled flow layer is not built (python setup.py build_ext --inplace)", file=sys.stderr)
        return 2
    captures = sorted(p for p in args.corpus.rglob("*") if p.suffix in (".pcap", ".pcapng")
                      and p.stat().st_size <= MAX_CAPTURE_BYTES)
    if not captures:
        print(f"fuzz_engines: no captures under {args.corpus}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.out / "case"
    deadline = time.monotonic() + args.seconds
    runs = differences = 0
    while time.monotonic() < deadline:
        source = rng.choice(captures)
        data = bytearray(source.read_bytes())
        for _ in range(rng.randint(1, 40)):   # bytes overwritten past the file header
            data[rng.randrange(min(24, len(data) - 1), len(data))] = rng.randrange(256)
        case = scratch.with_suffix(source.suffix)
        case.write_bytes(data)
        runs += 1
        if outcome(case, False) != outcome(case, True):
            differences += 1
            kept = args.out / f"difference-{differences}{source.suffix}"
            case.replace(kept)
            print(f"difference: {source} damaged -> {kept}", flush=True)
    for leftover in args.out.glob("case.*"):
        leftover.unlink()
    print(f"{runs} damaged captures, {differences} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
