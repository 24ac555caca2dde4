"""TestSpec: what to run, where and with which params. Plain data, JSON-able."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mhtest.testid import TestID

__all__ = ["BROKEN", "INSTRUMENTED", "SIMPLE", "TestID", "TestSpec", "dir_name"]

#: Kinds of test a resolver produces.
INSTRUMENTED = "instrumented"
SIMPLE = "simple"
#: A reference that could not be turned into a test (syntax error…): reported as ERROR.
BROKEN = "broken"


@dataclass
class TestSpec:
    """One test to run: a reference, its kind, its params and the place it runs."""

    __test__ = False  # not a pytest test class

    ref: str  # what the user sees: "examples/tests/passtest.py:PassTest.test"
    kind: str  # INSTRUMENTED, SIMPLE or BROKEN
    path: str  # the test file
    class_name: str | None = None
    method: str | None = None
    tags: list[str] = field(default_factory=list)
    timeout: float | None = None  # from the class attribute, when the resolver can see it
    params: dict[str, Any] = field(default_factory=dict)
    host: str = "local"
    error: str | None = None  # BROKEN: why
    multihost: bool = False  # the class is a MultiHostTest
    worker_only: bool = False  # ":mhtest: worker": run when named, not found in directories
    # Filled in by the job: the test's number, its results directory, env for the child.
    uid: int = 0
    logdir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # A multi-host test's places (HostConfig fields, as dicts) and how to reach them
    # (mhtest.dispatch.Options fields): filled in by mhtest.dispatch.place().
    hosts: list[dict[str, Any]] = field(default_factory=list)
    host_options: dict[str, Any] = field(default_factory=dict)
    # Filled in by the runner that starts the test: when its timeout began (time.time()).
    started: float | None = None

    @property
    def name(self) -> str:
        """The test's name in results: its number and reference (and host, when remote)."""
        return str(self.test_id)

    @property
    def test_id(self) -> TestID:
        """The test's name in Avocado's TestID shape, `UID-REF[@HOST]`."""
        suffix = f"@{self.host}" if self.host != "local" else ""
        return TestID(self.uid, f"{self.ref}{suffix}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def dir_name(name: str) -> str:
    """A test name made safe as one directory name (Avocado's shape: '/' becomes '_')."""
    safe = name.replace("/", "_").replace("\0", "_")
    return safe[:200]
