"""TestSpec: what to run, where and with which params. Plain data, JSON-able."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from mhtest.testid import TestID

__all__ = ["BROKEN", "INSTRUMENTED", "SIMPLE", "TestID", "TestSpec", "dir_name"]

#: Kinds of test a resolver produces.
INSTRUMENTED = "instrumented"
SIMPLE = "simple"
#: A reference that could not be turned into a test (syntax error…): reported as ERROR.
BROKEN = "broken"
#: Autoserv control files (mhtest.autoserv): a server one runs here and spans the hosts,
#: a client one runs at each place.
CONTROL_SERVER = "control-server"
CONTROL_CLIENT = "control-client"
#: A result a test made while it ran (a control file's run_test): see events.TEST_NESTED.
NESTED = "nested"


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
    # Param names to keep out of files (beside those that look secret: mhtest.secrets).
    secrets: list[str] = field(default_factory=list)
    # A control file's test directories (--tests-path), sent to hosts with the test.
    tests_path: list[str] = field(default_factory=list)
    # The variant this test runs with (`-m`, see mhtest.variants), in Avocado's dumped
    # shape: {"variant_id", "paths", "variant": [[leaf path, [[origin, key, value], …]], …]}.
    variant: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The test's name in results: its number and reference (and host, when remote)."""
        return str(self.test_id)

    @property
    def test_id(self) -> TestID:
        """The test's name in Avocado's TestID shape, `UID-REF[@HOST][;VARIANT]`."""
        suffix = f"@{self.host}" if self.host != "local" else ""
        return TestID(self.uid, f"{self.ref}{suffix}", (self.variant or {}).get("variant_id"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def masked_dict(self) -> dict[str, Any] | None:
        """to_dict() with secret params masked (see mhtest.secrets); None when it has none."""
        from mhtest.secrets import masked, masked_variant, secret_names

        hosts = [(h.get("params") or {}, h.get("secrets") or ()) for h in self.hosts]
        variant = masked_variant(self.variant, self.secrets)
        if (
            not secret_names(self.params, self.secrets)
            and not secret_names(self.env)
            and not any(secret_names(params, marked) for params, marked in hosts)
            and variant is None
        ):
            return None
        data = self.to_dict()
        data["variant"] = variant or data["variant"]
        data["params"] = masked(self.params, self.secrets)
        data["env"] = masked(self.env)
        for host, (params, marked) in zip(data["hosts"], hosts):
            host["params"] = masked(params, marked)
        return data

    def mask_file(self, path: str | os.PathLike[str]) -> None:
        """Rewrite the spec file at `path` with secret params masked, once they are read."""
        import json

        data = self.masked_dict()
        if data is None:
            return
        tmp = f"{path}.masked"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def dir_name(name: str) -> str:
    """A test name made safe as one directory name (Avocado's shape: '/' becomes '_')."""
    safe = name.replace("/", "_").replace("\0", "_")
    return safe[:200]
