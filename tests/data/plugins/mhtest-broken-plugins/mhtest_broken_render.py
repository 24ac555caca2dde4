"""A result plugin that loads but fails when the job ends."""

from __future__ import annotations

from typing import Any


class Result:
    name = "broken-render"

    def render(self, job: Any) -> None:
        raise OSError("disk on fire")
