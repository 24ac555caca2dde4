"""Where a queued file's results go, and what its jobs ended with.

    <results>/<file>[.<timestamp>]/     one per queued file (timestamped when taken)
      queue.json                        the queue, file, machines, times, each job's end
      <file>                            a copy of the file as it was queued
      <machine>/latest -> job-…/        a client control file: a job per machine
      latest -> job-…/                  a server control file (`*.srv`): one job

Each job tree is an ordinary one (mhtest.job): results.json, job.log, test-results/.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from mhtest import events

QUEUE_JSON = "queue.json"
#: The status of a file from those of its jobs: the first of these any job has.
WORST_FIRST = (
    events.ERROR,
    events.INTERRUPT,
    events.FAIL,
    events.WARN,
    events.CANCEL,
    events.SKIP,
    events.PASS,
)


def make_results_dir(results: Path, name: str, now: float | None = None) -> Path:
    """`<results>/<name>`, or `<name>.<timestamp>` when that exists (`.2`… after it): made
    here (mkdir wins or fails, so two watchers never share one); OSError if it cannot be."""
    if results.exists() and not results.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(results))
    results.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time() if now is None else now)
    candidates = [name, f"{name}.{stamp}", *(f"{name}.{stamp}.{n}" for n in range(2, 1000))]
    for candidate in candidates:
        path = results / candidate
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{results}: no free results directory for {name}")


class QueueRecord:
    """queue.json of one queued file, rewritten whole (atomically) at each change."""

    def __init__(self, directory: Path, **fields: Any) -> None:
        self.path = directory / QUEUE_JSON
        self.data: dict[str, Any] = {**fields, "jobs": fields.get("jobs", [])}
        self._lock = threading.Lock()
        self.write()

    @classmethod
    def load(cls, directory: Path) -> QueueRecord | None:
        """The record of an earlier run (a watcher that died), or None."""
        try:
            data = json.loads((directory / QUEUE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        record = cls.__new__(cls)
        record.path = directory / QUEUE_JSON
        record.data = data if isinstance(data, dict) else {"jobs": []}
        record._lock = threading.Lock()
        return record

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
        self.write()

    def job(self, index: int, **fields: Any) -> None:
        """Update job `index` (in the order they were added)."""
        with self._lock:
            self.data["jobs"][index].update(fields)
        self.write()

    def write(self) -> None:
        with self._lock:
            text = json.dumps(self.data, indent=1, default=str) + "\n"
            tmp = self.path.with_name(f".{QUEUE_JSON}.tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise


def job_outcome(job_results: Path) -> dict[str, Any]:
    """What the job under `job_results` (its `latest`) ended with: status, counts, job dir,
    and whether it finished writing its results (`complete`).

    The status is that of the job's top results (the control file's own); a job that
    recorded none, or whose results cannot be read, is ERROR with the reason.
    """
    latest = job_results / "latest"
    try:
        job_dir = latest.resolve(strict=True)
        data = json.loads((job_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {
            "status": events.ERROR,
            "reason": f"no results in {job_results}: {exc}",
            "complete": False,
        }
    tests = data.get("tests") or []
    tops = [t for t in tests if t.get("parent") is None]
    counts = {s: sum(1 for t in tests if t.get("status") == s) for s in events.STATUSES}
    outcome: dict[str, Any] = {
        "job": job_dir.name,
        "status": worst([str(t.get("status")) for t in tops]) if tops else events.ERROR,
        "counts": {s: n for s, n in counts.items() if n},
        "interrupted": bool(data.get("interrupted")),
        "complete": data.get("end") is not None,  # the job wrote its final results
    }
    reasons = [t.get("fail_reason") for t in tops if t.get("fail_reason")]
    if reasons:
        outcome["reason"] = str(reasons[0])
    elif not tops:
        outcome["reason"] = "the job recorded no results"
    return outcome


def worst(statuses: list[str]) -> str:
    """The status that stands for all of `statuses` (see WORST_FIRST); PASS for none."""
    for status in WORST_FIRST:
        if status in statuses:
            return status
    return statuses[0] if statuses else events.PASS
