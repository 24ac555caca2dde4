"""The child process that runs one job of a queued file: `python -m mhtest.queue.jobproc`.

A watcher starts one per job (mhtest.queue.jobs), each in a session of its own, and writes
one line of JSON on its stdin: the job's results directory, specs, places, options and
jobdata. The job is an ordinary mhtest Job (mhtest.job: its tree, job.log, result files,
the dispatcher); its own process keeps its log and its interrupts apart from the other
jobs the watcher runs. It answers on stdout, a JSON line each: `{"started": TIME, "job":
DIR}` as the job starts, `{"ended": TIME, "code": N}` at its end, `{"error": TEXT}` when
the job cannot be made (its results directory cannot be written).

SIGTERM stops the job as Ctrl-C does (tests end INTERRUPT, results kept); so does the end
of its stdin, which is how it learns that its watcher died (SIGKILL included). Before the
job exists, SIGTERM ends the process at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from mhtest import exitcodes

#: Why a job stops when its watcher is gone, and when the watcher stops it (SIGTERM).
WATCHER_GONE = "the queue's watcher is gone"
STOPPED = "the queue's watcher was stopped"


def main() -> int:
    """Read the request, run the job, say how it went; the exit code is the job's."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    request = json.loads(sys.stdin.readline() or "{}")
    fork_server = _fork_server_ahead(request)
    try:
        return _run(request, fork_server)
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    finally:
        if fork_server is not None:
            fork_server.close()


def _run(request: dict[str, Any], fork_server: Any) -> int:
    from mhtest.dispatch import Options, place
    from mhtest.hosts.inventory import HostConfig
    from mhtest.job import Job, JobConfig, JobError
    from mhtest.plugins import load_plugins
    from mhtest.spec import TestSpec

    options = Options.from_dict(request.get("options"))
    specs = [TestSpec.from_dict(s) for s in request.get("specs", [])]
    places = [HostConfig(**p) for p in request.get("places", [])]
    config = JobConfig(
        results_dir=request["results_dir"],
        options=options,
        jobdata=request.get("jobdata") or {},
        fork_server=fork_server,
    )
    writers = [cls() for _, cls in load_plugins("mhtest.result")]
    try:
        job = Job(config, writers)
    except JobError as exc:
        _tell(error=str(exc))
        return exitcodes.JOB_FAIL
    job.add(place(specs, places, {}, options))
    signal.signal(signal.SIGTERM, lambda signum, frame: job.interrupt(STOPPED))
    threading.Thread(target=_watch_parent, args=(job,), name="parent", daemon=True).start()
    _tell(started=time.time(), job=str(job.logdir))
    code = job.run()
    _tell(ended=time.time(), code=code)
    return code


def _fork_server_ahead(request: dict[str, Any]) -> Any:
    """A fork server for the tests that run here, started before the job's imports (as
    `mhtest run` does): a server control file's, or a local machine's; None for hosts."""
    from mhtest.runners.forkserver import CONTROL_PRELOAD, ForkServer
    from mhtest.spec import CONTROL_SERVER

    specs = request.get("specs") or []
    if any(s.get("kind") == CONTROL_SERVER for s in specs):
        return ForkServer(preload=CONTROL_PRELOAD, fork=True)
    if any(p.get("kind") == "local" for p in request.get("places") or []):
        return ForkServer(fork=True)
    return None


def _watch_parent(job: Any) -> None:
    """Interrupt the job when stdin ends: the watcher that started it is gone."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    job.interrupt(WATCHER_GONE)


def _tell(**fields: Any) -> None:
    try:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the watcher is gone: the results say it all


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    code = main()
    # The job's files are written: skip the interpreter's teardown (paramiko, zmq).
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
