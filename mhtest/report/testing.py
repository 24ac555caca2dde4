"""A headless Chromium driven over the DevTools protocol, for the tests and bench/report.py.

    with Chromium() as browser:
        browser.open(Path("results.html"))
        lanes = browser.evaluate("document.querySelectorAll('.lane').length")
        browser.screenshot(Path("page.png"))

The browser is the machine's own (Debian's `chromium`; nothing is downloaded), started with
a fresh profile directory and everything that would reach the network turned off. It is
spoken to over --remote-debugging-pipe (file descriptors 3 and 4: JSON messages ended by a
NUL byte), so no port is opened at all. Every wait has a timeout.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Puts the pipes where the browser looks for them (fds 3 and 4), then becomes the browser.
_ONTO_3_AND_4 = """
import fcntl, os, sys
given = [int(sys.argv[1]), int(sys.argv[2])]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in given]
for fd in given:
    os.close(fd)
for target, fd in zip((3, 4), high):
    os.dup2(fd, target)
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class BrowserError(Exception):
    """The browser did not start, answer or do what it was asked (says which)."""


def find_chromium() -> str | None:
    """The path of a Chromium on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium with one page (see module docstring)."""

    def __init__(
        self, binary: str | None = None, width: int = 1400, height: int = 900, timeout: float = 30
    ) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError(f"no Chromium on PATH (looked for {', '.join(CANDIDATES)})")
        self.size = (width, height)
        self.timeout = timeout
        self._ids = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self.session = ""
        self.proc: subprocess.Popen | None = None
        self.profile = ""

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="mhtest-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        width, height = self.size
        args = [*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ONTO_3_AND_4, str(to_browser_r), str(from_browser_w)]
                + [self.binary, *args, "about:blank"],
                pass_fds=(to_browser_r, from_browser_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def close(self) -> None:
        """Close the browser (its whole process group) and remove its profile."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.call("Browser.close", session=False, timeout=5)
            except BrowserError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        for fd in (getattr(self, "_to_browser", -1), getattr(self, "_from_browser", -1)):
            if fd >= 0:
                os.close(fd)
        self._to_browser = self._from_browser = -1
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- the protocol --------------------------------------------------------------------

    def call(
        self, method: str, session: bool = True, timeout: float | None = None, **params: Any
    ) -> dict[str, Any]:
        """Send one command; its result (BrowserError for an error or no answer in time)."""
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._next(deadline, method)
            if reply.get("id") == self._ids:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result") or {}
            self._events.append(reply)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The next event `method` (one that came already, or the next to come)."""
        for i, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self._next(deadline, method)
            if event.get("method") == method:
                return event
            self._events.append(event)

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{what}: no answer from the browser in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"{what}: the browser exited")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # -- what the tests use --------------------------------------------------------------

    def open(self, path: Path, timeout: float | None = None) -> float:
        """Load a file and wait for its load event; the seconds it took."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        started = time.monotonic()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_event("Page.loadEventFired", timeout)
        return time.monotonic() - started

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:60]!r}: {text}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (all of it, or the window)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics.get("contentSize")
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": min(size["width"], 4000),
                "height": min(size["height"], 8000),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        target = Path(path)
        target.write_bytes(base64.b64decode(data))
        return target


# -- made-up jobs, for the tests and bench/report.py ------------------------------------


@dataclass
class SampleJob:
    """What the report reads of a job (mhtest.job.Job's attributes), made up."""

    logdir: Path
    results: list[Any] = field(default_factory=list)
    unique_id: str = "0" * 40
    start_time: float = 0.0
    time_elapsed: float = 0.0
    interrupted: str | None = None


def sample_job(logdir: Path, tests: int = 0, workers: int = 0, barriers: int = 0) -> SampleJob:
    """A job of `tests` plain tests (every status, reasons, whiteboards) and, with
    `workers`, one multi-host test whose workers met at `barriers` barriers (its
    sync.jsonl written as the sync server writes it). The last worker fails."""
    from mhtest.results import TestResult

    statuses = ["PASS"] * 6 + ["FAIL", "ERROR", "SKIP", "WARN"]
    now = time.time()
    job = SampleJob(Path(logdir), unique_id="f" * 40, start_time=now, time_elapsed=tests * 0.01)
    for uid in range(1, tests + 1):
        status = statuses[uid % len(statuses)]
        job.results.append(
            TestResult(
                uid=uid,
                name=f"{uid}-tests/suite_{uid % 37}.py:Case{uid % 11}.test_{uid}",
                ref=f"tests/suite_{uid % 37}.py:Case{uid % 11}.test_{uid}",
                status=status,
                fail_reason=None if status == "PASS" else f"{status.lower()}: value {uid} != 0",
                start=now + uid * 0.01,
                end=now + uid * 0.01 + 0.005,
                logdir=str(Path(logdir) / "test-results" / f"{uid}-suite_{uid % 37}"),
                whiteboard=f'{{"iteration": {uid}}}' if uid % 5 == 0 else "",
                phases=[["setUp", now, now], ["test", now, now + 0.004], ["tearDown", now, now]],
            )
        )
    if workers:
        job.results.append(_multihost(Path(logdir), tests + 1, workers, barriers, now))
    return job


def _multihost(logdir: Path, uid: int, workers: int, barriers: int, now: float) -> Any:
    from mhtest.results import TestResult
    from mhtest.sync.record import SyncRecord

    names = [f"h{i}" for i in range(1, workers + 1)]
    test_dir = logdir / "test-results" / f"{uid}-multihost.py:Many.test"
    record = SyncRecord(names)
    mono = time.monotonic()
    step = 0.01
    for n in range(barriers):
        # Everyone arrives within a few ms; who comes last changes from one to the next.
        arrivals = [
            (name, mono + n * step + ((i * 7 + n * 3) % workers) * 0.0002)
            for i, name in enumerate(names)
        ]
        record.events.append(
            (
                "barrier",
                mono + n * step + workers * 0.0002,
                (f"step-{n % 10}", n // 10 + 1, workers, "done", arrivals, None, None),
            )
        )
    end = mono + barriers * step
    record.events.append(("abort", end, (names[-1], f"{names[-1]} failed")))
    test_dir.mkdir(parents=True, exist_ok=True)
    record.write(test_dir / "sync.jsonl")
    wall_end = record.wall(end)
    children = [
        TestResult(
            uid=i,
            name=name,
            ref="worker.py:Worker.test",
            status="FAIL" if name == names[-1] else "PASS",
            host=f"host{i}",
            fail_reason=f"{name} failed" if name == names[-1] else None,
            start=now,
            end=wall_end,
            logdir=str(test_dir / "workers" / f"{i}-{name}"),
            phases=[
                ["setUp", now, now + 0.01],
                ["test", now + 0.01, wall_end - 0.01],
                ["tearDown", wall_end - 0.01, wall_end],
            ],
        )
        for i, name in enumerate(names, 1)
    ]
    return TestResult(
        uid=uid,
        name=f"{uid}-multihost.py:Many.test",
        ref="multihost.py:Many.test",
        status="FAIL",
        fail_reason=f"worker {names[-1]} on host{workers}: FAIL: {names[-1]} failed",
        start=now,
        end=wall_end,
        logdir=str(test_dir),
        children=children,
    )
