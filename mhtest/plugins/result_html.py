"""Result plugin: results.html, one self-contained page (mhtest.report)."""

from __future__ import annotations

from typing import Any

from mhtest.plugins.result_json import write_atomic


class HTMLResult:
    """results.html: summary, a filterable table of tests, timelines of multi-host tests."""

    name = "html"

    def render(self, job: Any) -> None:
        from mhtest.report.page import render

        write_atomic(job.logdir / "results.html", render(job))
