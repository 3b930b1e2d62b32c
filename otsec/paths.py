"""Checks on output paths, made before a command or the sensor creates anything, so that a
long run does not end in "cannot write" with its results lost."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be created or written as a file, or None when it can."""
    if path.is_dir():
        return "is a directory"
    if not path.parent.is_dir():
        return f"no such directory {path.parent}"
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        return "permission denied"
    return None
