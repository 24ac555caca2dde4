"""The RemoteTestRunner: runs TestSpecs on a host over SSH and streams their events back.

For one host: connect, make sure mhtest is there (a cached environment, see
mhtest.hosts.bootstrap), send the test files, start the executor (the same local
runner, on the host), relay its events to the job as they come, and fetch each test's
results directory into the job's tree as soon as the test ends.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from mhtest import events
from mhtest.spec import TestSpec, dir_name

LOG = logging.getLogger(__name__)
EventSink = Callable[[dict], None]


class RemoteTestRunner:
    """Runs specs on one host: `run(specs)` returns when all have ended or failed."""

    def __init__(
        self,
        host: Any,
        sink: EventSink,
        stop: threading.Event,
        *,
        python: str = "python3",
        max_parallel: int | None = None,
    ) -> None:
        self.host = host
        self.sink = sink
        self.stop = stop
        self.python = python
        self.max_parallel = max_parallel
        self.ended: set[int] = set()

    def run(self, specs: list[TestSpec]) -> None:
        try:
            self._run(specs)
        except Exception as exc:  # noqa: BLE001 - any host fault ends this host's tests only
            LOG.debug("%s: remote run failed", self.host.name, exc_info=True)
            self._fail_rest(specs, _one_line(exc, self.host.name))

    def _run(self, specs: list[TestSpec]) -> None:
        from mhtest.hosts.bootstrap import ensure_mhtest

        started = time.monotonic()
        env = ensure_mhtest(self.host, python=self.python)
        LOG.info(
            "%s: mhtest ready in %.2f s (%s)",
            self.host.name,
            time.monotonic() - started,
            "installed" if env.cold else "cached",
        )
        root = self.host.get_tmp_dir()
        remote_specs = self._send_tests(specs, root)
        proc = self.host.start(f"{env.python} -m mhtest.runners.executor", env=env.env)
        proc.read_pgid(timeout=10)
        header = {"max_parallel": self.max_parallel or self.host.get_num_cpu()}
        lines = [json.dumps(header)] + [json.dumps(s.to_dict()) for s in remote_specs] + ["END"]
        proc.channel.sendall(("\n".join(lines) + "\n").encode())
        by_uid = {s.uid: (local, s) for local, s in zip(specs, remote_specs)}
        self._relay(proc, by_uid)
        proc.channel.close()
        missing = [s for s in specs if s.uid not in self.ended]
        if missing:
            reason = (
                "interrupted by the user"
                if self.stop.is_set()
                else (
                    f"{self.host.name}: the remote runner ended before the test did "
                    f"(exit status {proc.channel.recv_exit_status() if proc.channel.exit_status_ready() else 'unknown'})"
                )
            )
            self._fail_rest(missing, reason, "INTERRUPT" if self.stop.is_set() else "ERROR")

    def _send_tests(self, specs: list[TestSpec], root: str) -> list[TestSpec]:
        """Send each test file's directory once; specs rewritten to the host's paths."""
        dirs: dict[str, str] = {}
        remote = []
        for spec in specs:
            local_dir = os.path.dirname(spec.path)
            if local_dir not in dirs:
                target = posixpath.join(root, f"t{len(dirs)}")
                self.host.send_file(local_dir.rstrip("/") + "/", target)
                dirs[local_dir] = target
            remote.append(
                replace(
                    spec,
                    path=posixpath.join(dirs[local_dir], os.path.basename(spec.path)),
                    logdir=posixpath.join(root, "results", dir_name(spec.name)),
                )
            )
        return remote

    def _relay(self, proc: Any, by_uid: dict[int, tuple[TestSpec, TestSpec]]) -> None:
        channel = proc.channel
        channel.settimeout(0.2)
        buffer = events.LineBuffer()
        killed = False
        while True:
            if self.stop.is_set() and not killed:
                killed = True
                threading.Thread(target=proc.kill, daemon=True).start()
            try:
                chunk = channel.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:
                if "timed out" in str(exc):
                    continue
                raise
            if not chunk:
                return
            for line in buffer.feed(chunk):
                try:
                    event = events.decode(line)
                except events.EventError as exc:
                    LOG.warning("%s: bad event line (%s): %.200r", self.host.name, exc, line)
                    continue
                self._event(event, by_uid)

    def _event(self, event: dict, by_uid: dict[int, tuple[TestSpec, TestSpec]]) -> None:
        pair = by_uid.get(event.get("uid"))
        if pair is None:
            return
        local, remote = pair
        event["host"] = self.host.name
        if event["type"] == "test.end":
            self._fetch(remote.logdir, local.logdir)
            self.ended.add(local.uid)
        self.sink(event)

    def _fetch(self, remote_dir: str, local_dir: str) -> None:
        os.makedirs(local_dir, exist_ok=True)
        try:
            self.host.get_file(remote_dir.rstrip("/") + "/", local_dir)
        except Exception as exc:  # noqa: BLE001 - the result still counts; say what is missing
            LOG.warning("%s: cannot fetch %s: %s", self.host.name, remote_dir, exc)

    def _fail_rest(self, specs: list[TestSpec], reason: str, status: str = "ERROR") -> None:
        now = time.time()
        for spec in specs:
            if spec.uid in self.ended:
                continue
            self.ended.add(spec.uid)
            self.sink(
                {
                    "type": "test.end",
                    "uid": spec.uid,
                    "status": status,
                    "fail_reason": reason,
                    "host": self.host.name,
                    "start": now,
                    "end": now,
                }
            )


def _one_line(exc: BaseException, host: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if host in text else f"{host}: {text}"
