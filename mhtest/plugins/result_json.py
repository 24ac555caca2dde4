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
    return {**summary_fields(job, results), "tests": [r.to_dict() for r in results]}


def summary_fields(job: Any, results: list[Any]) -> dict[str, Any]:
    """Everything in results.json but the list of tests."""
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
    }


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class JSONResult:
    """results.json in the job's directory, one line per test.

    It is rewritten after every test end; each finished test is encoded once and kept, so
    a rewrite costs a string join rather than encoding every result again (a job of N tests
    would otherwise spend O(N^2) on it). The final render encodes everything afresh.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoded: dict[int, tuple[Any, str]] = {}  # uid -> (result, its JSON)

    def _test_json(self, result: Any) -> str:
        cached = self._encoded.get(result.uid)
        if cached is None or cached[0] is not result:
            cached = (result, json.dumps(result.to_dict()))
            self._encoded[result.uid] = cached
        return cached[1]

    def _write(self, job: Any) -> None:
        results = sorted(job.results, key=lambda r: r.uid)
        head = json.dumps(summary_fields(job, results), indent=1)
        tests = ",\n  ".join(self._test_json(r) for r in results)
        text = f'{head[:-2]},\n "tests": [\n  {tests}\n ]\n}}\n'
        write_atomic(job.logdir / "results.json", text)

    def job_start(self, job: Any) -> None:
        self._write(job)

    def test_end(self, job: Any, result: Any) -> None:
        self._write(job)

    def render(self, job: Any) -> None:
        self._encoded.clear()
        self._write(job)
