"""Result plugin: results.json, rewritten atomically after every test end."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from mhtest import events
from mhtest.results import count_statuses

LOG = logging.getLogger(__name__)


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
        "pass": counts[events.PASS],
        "failures": counts[events.FAIL],
        "errors": counts[events.ERROR],
        "skip": counts[events.SKIP],
        "warn": counts[events.WARN],
        "cancel": counts[events.CANCEL],
        "interrupt": counts[events.INTERRUPT],
        "interrupted": job.interrupted,
    }


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)  # no half-written temp file left behind (a full disk)
        except OSError:
            pass
        raise


class BackgroundWriter:
    """Writes the latest text it was given to a file, atomically, from a thread of its own.

    Replacing a file by rename costs ext4 a writeback of the new data (about 1-2 ms, most of
    it waiting): done inline, the job's runner thread paid it at every test end. Texts that
    arrive while a write is in progress are coalesced: only the newest is written. The
    thread ends when `close()` is called, or once the main thread is gone (so an mhtest
    that dies still writes what it had).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, text: str) -> None:
        with self._cond:
            self._raise_error()
            self._pending = text
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"writer-{self.path.name}", daemon=False
                )
                self._thread.start()

    def _loop(self) -> None:
        main = threading.main_thread()
        while True:
            with self._cond:
                while self._pending is None and not self._closed and main.is_alive():
                    self._cond.wait(0.2)
                text, self._pending = self._pending, None
                if text is None:
                    return
            try:
                write_atomic(self.path, text)
            except OSError as exc:
                LOG.debug("cannot write %s", self.path, exc_info=True)
                with self._cond:
                    self._error = exc

    def close(self) -> None:
        """Write what is pending, stop the thread; raise the first write error, if any."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(60)
        with self._cond:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class JSONResult:
    """results.json in the job's directory, one line per test.

    It is rewritten after every test end (by a BackgroundWriter, so the runner does not
    wait for the disk); each finished test is encoded once and kept, so a rewrite costs a
    string join rather than encoding every result again (a job of N tests would otherwise
    spend O(N^2) on it). The final render encodes everything afresh and writes it inline.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoded: dict[int, tuple[Any, str]] = {}  # uid -> (result, its JSON)
        self._writer: BackgroundWriter | None = None

    def _test_json(self, result: Any) -> str:
        cached = self._encoded.get(result.uid)
        if cached is None or cached[0] is not result:
            cached = (result, json.dumps(result.to_dict()))
            self._encoded[result.uid] = cached
        return cached[1]

    def _text(self, job: Any) -> str:
        results = sorted(job.results, key=lambda r: r.uid)
        head = json.dumps(summary_fields(job, results), indent=1)
        tests = ",\n  ".join(self._test_json(r) for r in results)
        return f'{head[:-2]},\n "tests": [\n  {tests}\n ]\n}}\n'

    def job_start(self, job: Any) -> None:
        write_atomic(job.logdir / "results.json", self._text(job))
        self._writer = BackgroundWriter(job.logdir / "results.json")

    def test_end(self, job: Any, result: Any) -> None:
        if self._writer is None:
            self.job_start(job)
        else:
            self._writer.submit(self._text(job))

    def render(self, job: Any) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            self._encoded.clear()
            write_atomic(job.logdir / "results.json", self._text(job))
