"""Access to the shared real-capture corpus (../shared/corpus), never copied into the repo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CORPUS_DIR = Path(
    os.environ.get("OTSEC_CORPUS", Path(__file__).resolve().parents[1].parent / "shared" / "corpus")
)
ABSENT_REASON = f"shared corpus not found at {CORPUS_DIR} (set OTSEC_CORPUS or place ../shared beside the repo)"


def captures(*subdirs: str) -> list:
    """pytest params for every capture under the given corpus subfolders (all when none).

    When the corpus is absent, one skipped param carries the reason, so the skip is visible.
    """
    if not CORPUS_DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT_REASON), id="corpus-absent")]
    folders = [CORPUS_DIR / s for s in subdirs] if subdirs else [CORPUS_DIR]
    found = sorted(
        p for folder in folders for p in folder.rglob("*")
        if p.suffix in (".pcap", ".pcapng")
    )
    return [pytest.param(p, id=str(p.relative_to(CORPUS_DIR))) for p in found]


def capture(relpath: str) -> Path:
    """One corpus capture by path relative to the corpus; skips the test when absent."""
    path = CORPUS_DIR / relpath
    if not path.is_file():
        pytest.skip(ABSENT_REASON if not CORPUS_DIR.is_dir() else f"{path} missing from the corpus")
    return path


def truth(path: Path) -> dict:
    """The tshark ground truth computed beside a corpus capture."""
    return json.loads(Path(str(path) + ".truth.json").read_text())
