"""Old jobs in a results directory: finding one, reading its results and its jobdata/.

A job is named as Avocado names one: `latest`, its ID or the start of it (7 characters
or more), or the path of its directory. `mhtest jobs` and `mhtest replay` read jobs
through here; the files are mhtest's own (results.json, jobdata/*.json), and a job
written by Avocado 113 is read too (its results.json and `id`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhtest import events

#: Avocado's names of statuses that mhtest spells otherwise.
STATUS_ALIASES = {"INTERRUPTED": events.INTERRUPT}


class JobNotFound(LookupError):
    """No job (or more than one) answers to the name given: the message says which."""


@dataclass
class OldJob:
    """A job's directory, its results (results.json) and how it was run (jobdata/)."""

    path: Path

    @property
    def id(self) -> str:
        try:
            return (self.path / "id").read_text(encoding="utf-8").strip()
        except OSError:
            return str(self.results().get("job_id") or self.path.name)

    def results(self) -> dict[str, Any]:
        """results.json, or {} when the job has none (yet)."""
        try:
            data = json.loads((self.path / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def tests(self) -> list[dict[str, Any]]:
        tests = self.results().get("tests") or []
        return [t for t in tests if isinstance(t, dict)]

    def jobdata(self, key: str, default: Any = None) -> Any:
        """jobdata/KEY.json, or `default` when the job did not record it."""
        try:
            text = (self.path / "jobdata" / f"{key}.json").read_text(encoding="utf-8")
            return json.loads(text)
        except (OSError, ValueError):
            return default


def results_base(results_dir: str | None) -> Path:
    from mhtest.job import DEFAULT_RESULTS_DIR

    return Path(os.path.expanduser(results_dir or DEFAULT_RESULTS_DIR))


def all_jobs(results_dir: str | None = None) -> list[OldJob]:
    """The jobs in a results directory, the newest first (by results.json's time)."""
    base = results_base(results_dir)
    try:
        found = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    found = [p for p in found if (p / "id").is_file() or (p / "results.json").is_file()]
    return [OldJob(p) for p in sorted(found, key=_mtime, reverse=True)]


def _mtime(path: Path) -> float:
    for name in ("results.json", "id"):
        try:
            return (path / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def find_job(name: str, results_dir: str | None = None) -> OldJob:
    """The job named `latest`, by ID (or its first 7+ characters), or by its directory."""
    path = Path(os.path.expanduser(name))
    if path.is_dir() and ((path / "id").is_file() or (path / "results.json").is_file()):
        return OldJob(path.resolve())
    base = results_base(results_dir)
    if name == "latest":
        latest = base / "latest"
        if latest.is_dir():
            return OldJob(latest.resolve())
        raise JobNotFound(f"no latest job in {base}")
    if len(name) < 7:
        raise JobNotFound(f"{name!r}: give 7 characters of the job ID or more, or 'latest'")
    matches = [job for job in all_jobs(results_dir) if job.id.startswith(name)]
    if not matches:
        raise JobNotFound(f"no job {name} in {base}")
    if len(matches) > 1:
        names = ", ".join(job.path.name for job in matches[:5])
        raise JobNotFound(
            f"{name!r} names {len(matches)} jobs in {base} ({names}): give more of the ID"
        )
    return matches[0]


def statuses(text: str) -> set[str]:
    """`--status FAIL,ERROR`: status names (Avocado's INTERRUPTED is INTERRUPT), or ValueError."""
    wanted = set()
    for word in (w.strip().upper() for w in text.split(",") if w.strip()):
        word = STATUS_ALIASES.get(word, word)
        if word not in events.STATUSES:
            raise ValueError(f"unknown status {word!r}: use {', '.join(events.STATUSES)}")
        wanted.add(word)
    if not wanted:
        raise ValueError("no status given: use e.g. FAIL,ERROR")
    return wanted


def status_of(test: dict[str, Any]) -> str:
    status = str(test.get("status") or "")
    return STATUS_ALIASES.get(status, status)
