"""Test names in control files: `job.run_test("sleeptest")` → the tests it means.

A name resolves to, in the first directory that has one:

- `NAME.py`: an mhtest test file (every test in it);
- `NAME/`: its client control file `NAME/control` if there is one, else `NAME/NAME.py`;

searching the control file's own directory, then each directory of --tests-path, then of
MHTEST_TESTS_PATH (os.pathsep-separated). A name that is an mhtest reference itself (it has a
`/`, ends in `.py` or names `FILE.py:Class.method`) is taken as a path, relative to those
directories too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mhtest.autoserv.errors import TestNotFound
from mhtest.spec import TestSpec

#: Where a user can add directories of tests, beside --tests-path.
ENV_TESTS_PATH = "MHTEST_TESTS_PATH"


@dataclass
class Found:
    """What a test name resolved to: the specs to run (one per test), from `path`."""

    path: str
    specs: list[TestSpec]


def search_dirs(control_path: str | None, tests_path: list[str]) -> list[str]:
    """The directories a control file's test names are looked up in, in order."""
    dirs = [os.path.dirname(os.path.abspath(control_path))] if control_path else []
    dirs += [os.path.abspath(d) for d in tests_path]
    dirs += [os.path.abspath(d) for d in os.environ.get(ENV_TESTS_PATH, "").split(os.pathsep) if d]
    seen: list[str] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_test(name: str, dirs: list[str], where: str) -> Found:
    """The tests `name` means (see the module docstring); TestNotFound naming `where` (the
    control file and line) and the directories searched, when it means none."""
    from mhtest.resolver import ResolutionError, builtin_resolvers, resolve

    if not isinstance(name, str) or not name.strip():
        raise TestNotFound(f"{where}: a test name must be a non-empty string, not {name!r}")
    for candidate in _candidates(name, dirs):
        path = candidate.split(":", 1)[0]
        if not os.path.exists(path):
            continue
        try:
            specs = resolve(candidate, builtin_resolvers())
        except ResolutionError as exc:
            raise TestNotFound(f"{where}: test {name!r}: {exc}") from None
        return Found(path=path, specs=specs)
    searched = ", ".join(dirs) or "no directory"
    raise TestNotFound(
        f"{where}: no test named {name!r} (looked for {name}.py and {name}/ in {searched}); "
        "put it beside the control file or add its directory with --tests-path"
    )


def _candidates(name: str, dirs: list[str]) -> list[str]:
    """The files `name` may mean, in the order they are tried."""
    path_part = name.split(":", 1)[0]
    if "/" in path_part or path_part.endswith(".py") or ":" in name:
        if os.path.isabs(path_part):
            return [name]
        return [os.path.join(d, name) for d in dirs] + [name]
    found = []
    for d in dirs:
        base = Path(d)
        found.append(str(base / f"{name}.py"))
        folder = base / name
        if folder.is_dir():
            control = folder / "control"
            found.append(str(control if control.is_file() else folder / f"{name}.py"))
    return found
