"""Helpers for tests of `mhtest queue` through the real CLI: a watcher or mirror in the
background, files dropped into spools as users drop them, and what the results say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from .conftest import MHTEST, wait_for


class Watching:
    """`mhtest queue ARGS` in the background, its console in a file; stopped by its pid."""

    def __init__(self, args: list[str], console: Path, cwd: Path) -> None:
        self.console_path = console
        with open(console, "w") as out:
            self.proc = subprocess.Popen(
                [*MHTEST, "queue", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )

    def console(self) -> str:
        return self.console_path.read_text()

    def wait_line(self, text: str, timeout: float = 60, count: int = 1) -> str:
        def found() -> list[str]:
            lines = [line for line in self.console().splitlines() if text in line]
            return lines if len(lines) >= count else []

        return wait_for(found, timeout, f"{text!r} on the console:\n{self.console()}")[-1]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def __enter__(self) -> Watching:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def drop(spool: Path, name: str, text: str) -> float:
    """Put a file in a queue as a user would (written aside, renamed in); when it arrived."""
    tmp = spool / f".{name}.part"
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, spool / name)
    return time.time()


def record(results: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((results / name / "queue.json").read_text())
    except (OSError, ValueError):
        return None


def wait_done(results: Path, names: list[str], timeout: float = 120) -> dict[str, dict]:
    """queue.json of each file once its jobs are over."""

    def done() -> dict[str, dict] | None:
        found = {n: record(results, n) for n in names}
        return found if all(r and r.get("status") for r in found.values()) else None

    return wait_for(done, timeout, f"{names} to end in {results}")


def wait_started(results: Path, name: str, timeout: float = 60) -> dict[str, Any]:
    def started() -> dict | None:
        found = record(results, name)
        jobs = (found or {}).get("jobs") or []
        return found if jobs and all(j.get("started") for j in jobs) else None

    return wait_for(started, timeout, f"{name} to start")


def job_results(directory: Path) -> dict[str, dict]:
    """{ref: result} of the job tree whose `latest` is in `directory`."""
    data = json.loads((directory / "latest" / "results.json").read_text())
    return {t["ref"]: t for t in data["tests"]}
