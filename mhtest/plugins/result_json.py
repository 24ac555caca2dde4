"""Result plugin: results.json, rewritten atomically after every test end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mhtest.results import count_statuses


def job_summary(job: Any) -> dict[str, Any]:
    """The job's results as plain data (Avocado's results.json keys, plus hosts)."""
    results = sorted(job.results, key=lambda r: r.uid)
    counts = count_statuses(results)
    return {
        "job_id": job.unique_id,
        "debuglog": str(job.log_file),
        "start": job.start_time,
        "end": job.end_time or None,
        "time": round(job.time_elapsed, 6),
        "total": len(job.specs),
        "pass": counts["PASS"],
        "failures": counts["FAIL"],
        "errors": counts["ERROR"],
        "skip": counts["SKIP"],
        "warn": counts["WARN"],
        "cancel": counts["CANCEL"],
        "interrupt": counts["INTERRUPT"],
        "interrupted": job.interrupted,
        "tests": [r.to_dict() for r in results],
    }


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class JSONResult:
    """results.json in the job's directory."""

    name = "json"

    def _write(self, job: Any) -> None:
        write_atomic(job.logdir / "results.json", json.dumps(job_summary(job), indent=1))

    def job_start(self, job: Any) -> None:
        self._write(job)

    def test_end(self, job: Any, result: Any) -> None:
        self._write(job)

    def render(self, job: Any) -> None:
        self._write(job)
