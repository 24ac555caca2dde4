"""Writes results.custom: one `uid status ref` line per test, and counts test ends as they come."""

from __future__ import annotations

from typing import Any


class CustomResult:
    name = "custom"

    def __init__(self) -> None:
        self.ended = 0

    def test_end(self, job: Any, result: Any) -> None:
        self.ended += 1

    def render(self, job: Any) -> None:
        lines = [f"{r.uid} {r.status} {r.ref}" for r in sorted(job.results, key=lambda r: r.uid)]
        lines.append(f"test_end calls: {self.ended}")
        (job.logdir / "results.custom").write_text("\n".join(lines) + "\n", encoding="utf-8")
