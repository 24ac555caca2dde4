"""Results of tests and jobs: plain data that result writers render."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

from mhtest.events import ERROR, FAILED_STATUSES, STATUSES


@dataclass
class TestResult:
    """The outcome of one test (or of one worker of a multi-host test)."""

    __test__ = False  # not a pytest test class

    uid: int
    name: str
    ref: str
    status: str
    host: str = "local"
    fail_reason: str | None = None
    fail_class: str | None = None
    start: float = 0.0
    end: float = 0.0
    logdir: str = ""
    whiteboard: str = ""
    tags: list[str] = field(default_factory=list)
    children: list[TestResult] = field(default_factory=list)
    #: The uid of the test this result was made in (a control file's run_test), or None.
    parent: int | None = None
    #: When setUp, the test and tearDown ran: [[name, start, end], ...] (instrumented tests).
    phases: list[list[Any]] = field(default_factory=list)
    variant: str | None = None  # the variant's ID (`-m`), also the end of `name`
    #: How many times the test rebooted its host (mhtest.runners.reboot).
    reboots: int = 0

    @property
    def time(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every value, which showed up
        # as the largest cost of rewriting results.json after each test end.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tags"] = list(self.tags)
        data["time"] = round(self.time, 6)
        data["children"] = [c.to_dict() for c in self.children]
        # The keys Avocado 113 writes for a test that mhtest's own do not already hold
        # (its `name`, `tags`, `status` and `fail_reason` are mhtest's: see docs/results.md).
        data["id"] = self.name
        data["logfile"] = f"{self.logdir}/debug.log" if self.logdir else ""
        data["time_start"] = data["actual_time_start"] = self.start
        data["time_end"] = data["actual_time_end"] = self.end
        data["time_elapsed"] = data["time"]
        return data

    @classmethod
    def from_end(
        cls,
        spec: Any,
        event: dict[str, Any],
        name: str | None = None,
        start: float | None = None,
        parent: int | None = None,
    ) -> TestResult:
        """The result of the test `spec` (a TestSpec) from its test.end event."""
        now = time.time()
        return cls(
            uid=spec.uid,
            name=name or spec.name,
            ref=spec.ref,
            status=event.get("status", ERROR),
            host=event.get("host") or spec.host,
            fail_reason=event.get("fail_reason"),
            fail_class=event.get("fail_class"),
            start=event.get("start") or start or now,
            end=event.get("end") or now,
            logdir=spec.logdir,
            whiteboard=event.get("whiteboard") or "",
            tags=list(spec.tags),
            children=[cls.from_dict(c) for c in event.get("children") or []],
            parent=parent,
            phases=phases_of(event.get("phases")),
            variant=(getattr(spec, "variant", None) or {}).get("variant_id"),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known and k != "children"}
        kwargs["children"] = [cls.from_dict(c) for c in data.get("children") or []]
        kwargs["phases"] = phases_of(data.get("phases"))
        return cls(**kwargs)


def phases_of(value: Any) -> list[list[Any]]:
    """Phases as a test reported them, if they are [name, start, end] lists (else none)."""
    if not isinstance(value, list):
        return []
    return [
        [str(p[0]), float(p[1]), float(p[2])]
        for p in value
        if isinstance(p, list)
        and len(p) == 3
        and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in p[1:])
    ]


def count_statuses(results: list[TestResult]) -> dict[str, int]:
    """{status: count} over every status, zeros included, in the console's order."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
