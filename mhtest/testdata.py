"""Test data files: where Test.get_data() looks for them, as Avocado's does.

Beside a test file `disk.py` lives `disk.py.data/`: files for every test of the file,
and `disk.py.data/Class.method/` for one test (and, with variants, a directory per
variant inside that). Sources are searched from the most specific: variant, test, file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

SOURCES = ("variant", "test", "file")
SUFFIX = ".data"


def data_dir(test: Any, source: str) -> str | None:
    """The directory of `source` for `test`, or None when it has none (no file, no variant)."""
    filename = test.filename
    if filename is None or not _name_fits(filename):
        return None
    parts = [filename + SUFFIX]
    if source in ("variant", "test"):
        parts.append(f"{type(test).__name__}.{test._testMethodName}")
    if source == "variant":
        variant = getattr(test.name, "variant", None)
        if variant is None:
            return None
        parts.append(variant)
    return os.path.join(*(p if os.path.isabs(p) else p.replace("/", "_") for p in parts))


def get_data(
    test: Any, filename: str, source: str | None = None, must_exist: bool = True
) -> str | None:
    """The path of data file `filename` for `test` (its directory when `filename` is
    empty), from `source` or the first of SOURCES that has it; None if none has."""
    if source is not None and source not in SOURCES:
        raise ValueError(
            f"data file source requested ({source}) is not one of: {', '.join(SOURCES)}"
        )
    log: logging.Logger = test.log
    sources = [source] if source else list(SOURCES)
    for attempt in sources:
        directory = data_dir(test, attempt)
        if directory is None:
            continue
        path = os.path.join(directory, filename) if filename else directory
        if not must_exist:
            log.debug(
                "DATA (filename=%s) => %s (assumed in the %s source)", filename, path, attempt
            )
            return path
        if os.path.exists(path):
            log.debug("DATA (filename=%s) => %s (found in the %s source)", filename, path, attempt)
            return path
    log.debug("DATA (filename=%s) => NOT FOUND (data sources: %s)", filename, ", ".join(sources))
    return None


def _name_fits(filename: str) -> bool:
    """Whether `filename` + SUFFIX is a valid file name on its file system."""
    try:
        limit = os.pathconf(os.path.dirname(filename) or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return len(os.path.basename(filename)) <= limit - len(SUFFIX)
