"""The results a control file makes as it runs, each a result of the job of its own.

How they reach the job: the control file runs as one test in a child process (see
mhtest.runners.child); each `run_test` or `job.record` ends in a `test.nested` event on that
test's event stream (mhtest.events), carrying the result's status, reason and times, its
name relative to the control file's reference (`<machine>/<test>[.<tag>]`) and its directory
relative to the control file's own. The job's collector (mhtest.job.Job.sink) gives each the
job's next number, the reference `<control>/<machine>/<test>[.<tag>]` and the directory
inside the control file's, and records it like any test's end: a line on the console, an
entry of results.json (with `parent`: the control file's number), xunit, tap. A client
control file on a host sends them the same way, through the SSH channel (bounded there by
mhtest.runners.untrusted like any event from a host); run from a server control file
(Autotest.run), its results pass through the server control file's runner on their way.

This was chosen over the `children` of a multi-host test's result (which the console and
the counts do not show) so that every test a control file runs is a result a user sees,
counts and filters like any other, as it ends, while the control file still runs.

The control file's process may fork (parallel, parallel_simple): each result is one write of
one line under a lock that holds across processes (lockf) and threads, and each is also kept
in `results.jsonl` in the control file's directory, from which the control file's own status
is decided at its end (it passes when everything it ran passed).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mhtest import events

LOG = logging.getLogger(__name__)
#: The file in a control file's results directory holding one line per result it made.
TALLY = "results.jsonl"
#: Longest reason kept in results.jsonl (the event carries the whole reason).
MAX_TALLY_REASON = 2000


class NestedResults:
    """Sends a control file's results to the job and keeps their tally (see module docstring).

    `emit` is the control file's event writer (mhtest.runners.child.EventWriter), `logdir`
    its results directory.
    """

    def __init__(self, emit: Callable[..., None], logdir: str | os.PathLike[str]) -> None:
        self.emit = emit
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._tally_path = self.logdir / TALLY
        self._fd = os.open(self._tally_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def claim_dir(self, *parts: str) -> tuple[str, Path]:
        """A new directory for a result, `parts` under the control file's (".2", ".3"…
        appended when taken, by this or another process): (relative name, path)."""
        clean = [_safe_part(p) for p in parts if p and p != "."]
        base = self.logdir.joinpath(*clean[:-1]) if len(clean) > 1 else self.logdir
        base.mkdir(parents=True, exist_ok=True)
        leaf = clean[-1] if clean else "result"
        for n in range(1, 10_000):
            name = leaf if n == 1 else f"{leaf}.{n}"
            try:
                (base / name).mkdir()
            except FileExistsError:
                continue
            rel = "/".join([*clean[:-1], name])
            return rel, base / name
        raise OSError(f"cannot find a free directory name for {leaf} in {base}")

    def add(self, name: str, logdir: str, outcome: dict[str, Any]) -> None:
        """One result: `name` relative to the control file's reference, `logdir` relative to
        its directory, `outcome` the fields of a test end (status, fail_reason, start, end…)."""
        now = time.time()
        fields = {
            "status": outcome.get("status") or events.ERROR,
            "fail_reason": outcome.get("fail_reason"),
            "fail_class": outcome.get("fail_class"),
            "start": outcome.get("start") or now,
            "end": outcome.get("end") or now,
            "whiteboard": outcome.get("whiteboard") or "",
            "children": outcome.get("children") or [],
            "host": outcome.get("host"),
        }
        reason = fields["fail_reason"]
        tally = {
            "name": name,
            "status": fields["status"],
            "fail_reason": reason[:MAX_TALLY_REASON] if isinstance(reason, str) else reason,
            "logdir": logdir,
        }
        line = (json.dumps(tally, default=str) + "\n").encode()
        with self._locked():
            self.emit(events.TEST_NESTED, name=name, logdir=logdir, **fields)
            os.write(self._fd, line)
        LOG.info("%s: %s%s", name, fields["status"], f" ({reason})" if reason else "")

    def tally(self) -> list[dict[str, Any]]:
        """Every result made so far, by this process and the ones it forked."""
        found = []
        try:
            text = self._tally_path.read_text(encoding="utf-8")
        except OSError as exc:
            LOG.warning("cannot read %s: %s", self._tally_path, exc)
            return []
        for line in text.splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                LOG.warning("bad line in %s: %.200r", self._tally_path, line)
        return found

    def _locked(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's threads do not exist here
            self._lock = threading.Lock()
            self._pid = os.getpid()
        return _Held(self._lock, self._fd)


class _Held:
    """The thread lock, then the lockf lock on the tally file (held across processes)."""

    def __init__(self, lock: threading.Lock, fd: int) -> None:
        self.lock = lock
        self.fd = fd

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            self.lock.release()


def _safe_part(part: str) -> str:
    """One path component from a name a control file chose (no '/', no '..', bounded)."""
    text = str(part).replace("/", "_").replace("\0", "_").strip() or "result"
    if text in (".", ".."):
        text = text.replace(".", "_")
    return text[:120]
