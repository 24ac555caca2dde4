"""Resolver plugin: simple tests, any executable file (exit status 0 is PASS)."""

from __future__ import annotations

import os
from pathlib import Path

from mhtest.spec import SIMPLE, TestSpec


class ExecResolver:
    """An executable regular file is one simple test."""

    name = "exec"
    priority = 50

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None:
        if not path.is_file() or not os.access(path, os.X_OK):
            return None
        return [TestSpec(ref=display, kind=SIMPLE, path=str(path.resolve()))]
