"""The watcher of one spool (Autotest's monitor_queue): files in, jobs run, results out.

    Watcher(spool, WatchConfig(results=Path("/srv/testing/results")), locks, stop).run()

It waits for files (inotify through watchdog, a rescan every `poll` seconds besides, for
files other controllers write over NFS; polling alone without watchdog), takes the oldest
that is complete (closed by its writer, or unchanged for `settle` seconds), first the
queue's machines (mhtest.queue.scheduler), then the file (an atomic claim), and runs its
jobs (mhtest.queue.jobs) into `<results>/<file>[.timestamp]/` (mhtest.queue.resultsdir).
One file at a time per watcher, as monitor_queue did.

Everything it does is a line in `<spool>/.log` and on the console. Bad input (a file that
does not compile, a `.machines` naming an unknown host, a results directory that cannot be
written) fails that file: moved to `<spool>/failed/` with a `.reason`; a spool that
disappears is waited for. The watcher goes on in every case.

Stopping it (`stop` set: Ctrl-C, SIGTERM) stops the jobs running (they end INTERRUPT, their
results kept) and leaves the files waiting in the spool. When a watcher died instead, the
next one (this one at its start, or another on the same spool) takes its claim over: back
into the spool when its jobs had not started, else recorded as interrupted.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mhtest import events
from mhtest.autoserv.controlfile import control_spec
from mhtest.dispatch import Options
from mhtest.queue.fsevents import Completion, DirEvents
from mhtest.queue.jobs import STOP_GRACE, JobProcess, JobRequest, JobSet
from mhtest.queue.machines import Machine, MachinesError, MachinesUnavailable, queue_machines
from mhtest.queue.resultsdir import QUEUE_JSON, QueueRecord, job_outcome, make_results_dir, worst
from mhtest.queue.scheduler import MachineLocks
from mhtest.queue.spool import Claims, Owner, Spool, Waiting, is_server_file, pid_start
from mhtest.spec import BROKEN, CONTROL_CLIENT, CONTROL_SERVER, TestSpec

LOG = logging.getLogger(__name__)
#: Rescan the spool this often even when inotify is there (files written over NFS).
POLL = 2.0
#: Without inotify, rescan this often.
POLL_ALONE = 0.5
#: A file no writer closed is complete once unchanged this long.
SETTLE = 0.5
#: How often claims of watchers that died are looked for.
RECOVER_EVERY = 5.0
#: How often a spool that disappeared is looked for.
GONE_POLL = 1.0
#: How long the jobs of a watcher that died get to stop (they learn it from their stdin).
RECOVER_WAIT = STOP_GRACE + 15.0
#: After an unexpected error, how long a watcher waits before it goes on.
ERROR_PAUSE = 1.0
#: What a watcher prints a line with (the console).
Say = Callable[[str], None]


@dataclass
class WatchConfig:
    """How a watcher runs its files: where results go, how machines are reached."""

    results: Path
    options: Options = field(default_factory=Options)  # ssh_config, inventory, host keys…
    tests_path: list[str] = field(default_factory=list)  # where control files' tests are
    poll: float = POLL
    settle: float = SETTLE


class QueueLog:
    """`<spool>/.log` (appended to, so watchers share it) and the console, a line each."""

    def __init__(self, spool: Spool, who: str, say: Say | None = None) -> None:
        self.spool = spool
        self.who = who
        self.say = say

    def __call__(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.spool.log_path, "a", encoding="utf-8") as log:
                log.write(f"{stamp} {self.who}: {text}\n")
        except OSError as exc:
            LOG.debug("cannot write %s: %s", self.spool.log_path, exc)
        LOG.info("%s: %s", self.spool.name, text)
        if self.say is not None:
            self.say(f"{self.spool.name}: {text}")


class Watcher:
    """Watches one spool and runs its files (see the module docstring)."""

    def __init__(
        self,
        spool: str | os.PathLike[str],
        config: WatchConfig,
        locks: MachineLocks,
        stop: threading.Event,
        say: Say | None = None,
        force: threading.Event | None = None,
    ) -> None:
        self.spool = Spool(spool)
        self.force = force or threading.Event()  # set after `stop`: kill the jobs at once
        self.config = config
        self.locks = locks
        self.stop = stop
        self.claims = Claims(self.spool)
        self.log = QueueLog(self.spool, self.claims.owner.id, say)
        self._wake = threading.Event()
        self.events = DirEvents(self.spool.path, self._wake)
        self.completion = Completion(config.settle, self.events)
        self._polling: str | None = None
        self._gone: float | None = None
        self._next_recovery = 0.0
        self._closing = threading.Event()
        self._unavailable: str | None = None  # the name service's failure said last

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Watch until `stop` is set; returns once the job running then has ended."""
        self._open()
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - a watcher goes on, whatever happens
                    LOG.debug("watcher of %s", self.spool.path, exc_info=True)
                    self.log(f"error: {type(exc).__name__}: {exc} (going on)")
                    self.stop.wait(ERROR_PAUSE)
        finally:
            self._closing.set()
            self.events.stop()
            self.claims.close()
            beat.join(5.0)
            self.log("watcher stopped")

    def step(self) -> None:
        """One turn: look at the spool, run the oldest complete file, or wait."""
        if not self.spool.exists():
            self._spool_gone()
            return
        if self._gone is not None:
            self._spool_back()
        now = time.monotonic()
        if now >= self._next_recovery:
            self.recover()
            self._next_recovery = time.monotonic() + RECOVER_EVERY
        ready, wake_at = self._ready()
        if ready:
            self._take(ready)
            return
        poll = POLL_ALONE if self._polling else self.config.poll
        timeout = poll if wake_at is None else max(0.01, min(poll, wake_at - time.monotonic()))
        self._wake.wait(timeout)
        self._wake.clear()

    def _open(self) -> None:
        try:
            self.claims.open()
        except OSError as exc:
            LOG.debug("cannot open the claim area of %s: %s", self.spool.path, exc)
        self._polling = self.events.start()
        how = f"polling every {POLL_ALONE:g} s ({self._polling})" if self._polling else "inotify"
        self.log(f"watching {self.spool.path} ({how}); results in {self.config.results}")

    def _heartbeat(self) -> None:
        from mhtest.queue.spool import HEARTBEAT

        while not self._closing.wait(HEARTBEAT):
            try:
                self.claims.beat()
            except OSError as exc:
                LOG.debug("heartbeat of %s: %s", self.spool.path, exc)

    def _ready(self) -> tuple[list[Waiting], float | None]:
        """The complete files, oldest first, and when to look again for the others."""
        try:
            waiting = self.spool.waiting()
        except OSError:
            return [], None  # gone: the next step says so
        seen = [(str(w.path), w.mtime_ns, w.size) for w in waiting]
        complete, wake_at = self.completion.check(seen, time.monotonic())
        done = set(complete)
        return [w for w in waiting if str(w.path) in done], wake_at

    # -- taking a file ------------------------------------------------------------------------
    def _take(self, ready: list[Waiting]) -> None:
        """The queue's machines, then the oldest file still there, then its jobs."""
        try:
            machines = queue_machines(
                self.spool, self.config.options.inventory, self.config.options.ssh_config
            )
        except MachinesUnavailable as exc:
            if self._unavailable != str(exc):
                self._unavailable = str(exc)
                self.log(f"{exc}: waiting")
            self.stop.wait(self.config.poll)
            return
        except MachinesError as exc:
            self._fail_first(ready, str(exc))
            return
        self._unavailable = None
        names = {m.key: m.name for m in machines}

        def on_wait(key: str, holder: dict[str, Any] | None) -> None:
            who = f" (busy: queue {holder.get('queue')})" if holder else " (busy)"
            self.log(f"waiting for machine {names.get(key, key)}{who}")

        holder = {
            "queue": self.spool.name,
            "spool": str(self.spool.path),
            "watcher": self.claims.owner.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        held = self.locks.acquire(machines, holder, self.stop, on_wait)
        if held is None:
            return
        with held:
            ready, _ = self._ready()  # another watcher may have taken some meanwhile
            for item in ready:
                path = self.claims.claim(item.name)
                if path is None:
                    continue
                try:
                    self._run(path, machines, item.mtime)
                except Exception as exc:
                    if path.exists():  # not run: failed, not left in the claim area
                        self._failed(path, f"mhtest queue: {type(exc).__name__}: {exc}")
                    raise
                return

    def _fail_first(self, ready: list[Waiting], reason: str) -> None:
        for item in ready:
            path = self.claims.claim(item.name)
            if path is not None:
                self._failed(path, reason)
                return

    def _failed(self, path: Path, reason: str) -> None:
        try:
            target = self.spool.fail(path, reason)
        except OSError as exc:
            self.log(f"{path.name}: failed: {reason} (and cannot be moved to failed/: {exc})")
            return
        self.log(f"{path.name}: failed: {reason} (moved to failed/{target.name})")

    # -- running a file -------------------------------------------------------------------------
    def _run(self, path: Path, machines: list[Machine], arrived: float) -> None:
        name = path.name
        claimed = time.time()
        kind = CONTROL_SERVER if is_server_file(name) else CONTROL_CLIENT
        spec = control_spec(path, name, kind)
        if spec.kind == BROKEN:
            self._failed(path, spec.error or f"{name}: not a control file")
            return
        spec.tests_path = list(self.config.tests_path)
        try:
            results = make_results_dir(self.config.results, name)
            shutil.copyfile(path, results / name)
            record = QueueRecord(
                results,
                queue=self.spool.name,
                spool=str(self.spool.path),
                file=name,
                kind="server" if kind == CONTROL_SERVER else "client",
                machines=[m.name for m in machines],
                watcher=self.claims.owner.id,
                arrived=arrived,
                claimed=claimed,
            )
        except OSError as exc:
            why = exc.strerror or str(exc)
            where = exc.filename or self.config.results
            self._failed(path, f"cannot write the results directory {where}: {why}")
            return
        self.claims.write_run({"file": name, "results": str(results), "pids": []})
        requests = self._requests(spec, machines, results)
        record.update(jobs=[{"machine": r.machine, "dir": str(r.results_dir)} for r in requests])
        jobs = JobSet(requests, self._job_said(record))
        pids: list[list[Any]] = []

        def spawned(job: JobProcess) -> None:
            record.job(len(pids), pid=job.pid)
            pids.append([job.pid, pid_start(job.pid)])
            self.claims.write_run({"file": name, "results": str(results), "pids": pids})

        on = ", ".join(m.name for m in machines)
        self.log(f"{name}: starting on {on} (results: {results})")
        jobs.start(spawned)
        stopped = jobs.wait(self.stop, self.force)
        status, summary = self._ended(record, jobs.jobs)
        took = time.time() - claimed
        how = "interrupted (the watcher was stopped)" if stopped else "ended"
        self.log(f"{name}: {how} in {took:.1f} s: {summary} (results: {results})")
        record.update(ended=time.time(), status=status)
        self._release(path)

    def _requests(self, spec: TestSpec, machines: list[Machine], results: Path) -> list[JobRequest]:
        """A job per machine for a client control file; one for a server control file."""
        about = {
            "queue": self.spool.name,
            "spool": str(self.spool.path),
            "file": spec.ref,
            "machines": [m.name for m in machines],
            "watcher": self.claims.owner.id,
        }
        options = self.config.options
        if spec.kind == CONTROL_SERVER:
            places = [m.config for m in machines]
            jobdata = {"queue": about, "references": [spec.ref]}
            return [JobRequest(None, results, [spec], places, options, jobdata)]
        requests = []
        for machine in machines:
            jobdata = {"queue": {**about, "machine": machine.name}, "references": [spec.ref]}
            where = results / machine_dir(machine.name, spec.ref)
            places = [machine.config]
            requests.append(JobRequest(machine.name, where, [spec], places, options, jobdata))
        return requests

    @staticmethod
    def _job_said(record: QueueRecord) -> Callable[[int, JobProcess, dict], None]:
        def said(index: int, job: JobProcess, line: dict) -> None:
            if "started" in line:
                record.job(index, started=job.started, job=job.job_dir)
                if record.data.get("started") is None:
                    record.update(started=job.started)
            if "error" in line:
                record.job(index, error=job.error)

        return said

    @staticmethod
    def _ended(record: QueueRecord, jobs: list[JobProcess]) -> tuple[str, str]:
        """Each job's end into the record; the file's status and a summary line."""
        statuses, parts = [], []
        for index, job in enumerate(jobs):
            outcome = job_outcome(job.request.results_dir)
            if job.error:
                outcome.update(status=events.ERROR, reason=job.error)
            elif "job" not in outcome and job.stderr_tail():
                outcome["reason"] = f"{outcome.get('reason')}; the job said: {job.stderr_tail()}"
            record.job(index, exit=job.exit_code, ended=job.ended or time.time(), **outcome)
            statuses.append(outcome["status"])
            label = f"{job.request.machine} " if job.request.machine else ""
            parts.append(f"{label}{outcome['status']}")
        return worst(statuses), ", ".join(parts)

    def _release(self, path: Path) -> None:
        try:
            self.claims.done(path)
        except OSError as exc:
            self.log(f"{path.name}: cannot remove its claim: {exc}")

    # -- the spool coming and going -------------------------------------------------------------
    def _spool_gone(self) -> None:
        if self._gone is None:
            self._gone = time.time()
            self.events.stop()
            self.log(f"the spool {self.spool.path} disappeared: waiting for it to come back")
        self.stop.wait(GONE_POLL)

    def _spool_back(self) -> None:
        since = time.strftime("%H:%M:%S", time.localtime(self._gone))
        self._gone = None
        self.completion.clear()
        self.events.stop()
        self._open()
        self.log(f"the spool is back (it had disappeared at {since})")

    # -- claims of watchers that died -----------------------------------------------------------
    def recover(self) -> None:
        """Take over the claims of watchers that died (see the module docstring)."""
        for ident in self.claims.stale():
            for path, run, owner in self.claims.take_stale(ident):
                if run is None or not run.get("pids"):
                    self._put_back(path, run, ident)
                else:
                    self._interrupted(path, run, ident, owner)
            self.claims.forget(ident)

    def _put_back(self, path: Path, run: dict[str, Any] | None, ident: str) -> None:
        if run and run.get("results"):
            _remove_unstarted(Path(run["results"]))
        try:
            back = self.claims.put_back(path)
        except OSError as exc:
            self.log(f"{path.name}: cannot go back to the queue: {exc} (it is in {path})")
            return
        self.log(f"{back.name}: back in the queue (its watcher {ident} died before it started)")

    def _interrupted(
        self, path: Path, run: dict[str, Any], ident: str, owner: Owner | None
    ) -> None:
        """A file whose jobs ran when their watcher died: their end recorded, INTERRUPT when
        they had none (they stop themselves: their stdin ended with the watcher)."""
        if owner is not None and owner.host == socket.gethostname():
            deadline = time.monotonic() + RECOVER_WAIT
            alive = [(p, s) for p, s in run["pids"] if s is not None and pid_start(p) == s]
            while alive and time.monotonic() < deadline and not self.stop.wait(0.2):
                alive = [(p, s) for p, s in alive if pid_start(p) == s]
        results = Path(str(run.get("results")))
        record = QueueRecord.load(results)
        reason = f"its watcher {ident} died while it ran"
        if record is None:
            self.log(f"{path.name}: {reason}; its results in {results} cannot be read")
            self._release(path)
            return
        statuses, parts = [], []
        for index, job in enumerate(record.data.get("jobs") or []):
            outcome = job_outcome(Path(job.get("dir") or results))
            if not outcome.get("complete"):
                outcome.update(status=events.INTERRUPT, reason=reason)
            record.job(index, **outcome)
            statuses.append(outcome["status"])
            parts.append(" ".join(filter(None, [job.get("machine"), outcome["status"]])))
        status = worst(statuses) if statuses else events.INTERRUPT
        record.update(ended=time.time(), status=status, recovered_by=self.claims.owner.id)
        self.log(f"{path.name}: {reason}: {', '.join(parts) or status} (results: {results})")
        self._release(path)


def machine_dir(machine: str, file_name: str) -> str:
    """A machine's directory name in a file's results (never the file's copy, queue.json)."""
    name = machine.replace(os.sep, "_").replace("\0", "_")
    if name in ("", ".", "..", file_name, QUEUE_JSON):
        name = f"machine-{name.strip('.')}"
    return name


def _remove_unstarted(results: Path) -> None:
    """A results directory made for a file whose jobs never started (no job tree in it):
    removed, so that the file's next run takes its name."""
    if results.is_dir() and not any(results.rglob("latest")):
        shutil.rmtree(results, ignore_errors=True)
