"""mhtest: Avocado-style tests, Autotest host control and multi-host tests.

The public API a test imports. Every part loads on first use (PEP 562), so that a plain
local test never pays for paramiko or ZeroMQ, and a `mhtest sync` command only for sync.
"""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False

__version__ = "0.1.0"

if TYPE_CHECKING:
    from typing import Any

    from mhtest.runners.multihost import MultiHostTest, Worker
    from mhtest.test import (
        Test,
        TestCancel,
        TestError,
        TestFail,
        TestSkip,
        cancel_on,
        fail_on,
        skip,
        skipIf,
        skipUnless,
    )

_TEST_NAMES = (
    "Test",
    "TestCancel",
    "TestError",
    "TestFail",
    "TestSkip",
    "cancel_on",
    "fail_on",
    "skip",
    "skipIf",
    "skipUnless",
)
# Loaded on first use, like the rest: `mhtest sync` in a shell worker imports mhtest.sync
# only, and every import of a submodule runs this file first.
_LAZY = {
    **{name: ("mhtest.test", name) for name in _TEST_NAMES},
    "MultiHostTest": ("mhtest.runners.multihost", "MultiHostTest"),
    "Worker": ("mhtest.runners.multihost", "Worker"),
}

__all__ = [  # spelled out: linters and type checkers read it
    "Test",
    "TestCancel",
    "TestError",
    "TestFail",
    "TestSkip",
    "cancel_on",
    "fail_on",
    "skip",
    "skipIf",
    "skipUnless",
    "MultiHostTest",
    "Worker",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # the next use is a plain attribute
        return value
    raise AttributeError(f"module 'mhtest' has no attribute {name!r}")
