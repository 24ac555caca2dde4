"""mhtest: Avocado-style tests, Autotest host control and multi-host tests.

The public API a test imports. Heavy parts (MultiHostTest, sync, hosts) load lazily
so that a plain local test never pays for paramiko or ZeroMQ.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from mhtest.test import (  # noqa: E402
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

_LAZY = {
    "MultiHostTest": ("mhtest.runners.multihost", "MultiHostTest"),
    "Worker": ("mhtest.runners.multihost", "Worker"),
}

__all__ = [
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
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mhtest' has no attribute {name!r}")
