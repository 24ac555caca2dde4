"""Starting mhtest on a host: the startup probe, installing mhtest, the executor, its follower.

One SSH command does it on a warm host: a shell script finds the interpreter, checks the
cached environment (mhtest.hosts.bootstrap) and whether the host holds the tests' files
already (mhtest.runners.payload) and, when it is ready, prints EXEC_MARK and execs the
executor (mhtest.runners.executor) in the same channel. A cold host (nothing cached, or
other sources) costs more: the probe's output says what is missing, bootstrap installs
it, and the command is started again. After a dropped connection the same probe starts
the follower of the run instead (mhtest.runners.attach).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from mhtest.runners import reattach
from mhtest.runners.exec_stream import ExecStream

LOG = logging.getLogger(__name__)
#: Printed by the launch script right before it execs the executor.
EXEC_MARK = b"MHTEST-EXEC"
#: After it, "cached" when the host holds the payload (KEY: hex digits, nothing to quote).
LAUNCH = (
    '[ "$ok" = 1 ] && {{ p=; [ -f "$cache/payload-{key}/.mhtest-ready" ] && p=cached; '
    'echo "MHTEST-EXEC $p"; export PYTHONPATH="$src"; '
    'exec "$env/bin/python" -m mhtest.runners.executor --cache "$cache" '
    "--run {run} --wait {wait:g}{preload}; }}"
)
#: Bound on the probe's answer (a loaded host runs its login scripts first).
PROBE_TIMEOUT = 120.0
#: Bound on installing mhtest on a cold host.
INSTALL_TIMEOUT = 900.0
#: Host-side cache directory, when not the hosts' ~/.cache/mhtest.
ENV_REMOTE_CACHE = "MHTEST_REMOTE_CACHE"


class Interrupted(Exception):
    """The job was stopped before the host's tests began."""


@dataclass
class Sources:
    """What every host needs from this machine to run mhtest; built once per job."""

    src_key: str
    archive: bytes
    deps_key: str

    @classmethod
    def build(cls) -> Sources:
        from mhtest.hosts import bootstrap

        src_key, archive = bootstrap.source_archive()
        return cls(src_key=src_key, archive=archive, deps_key=bootstrap.deps_key())


class Launcher:
    """Starts the executor, or the follower of a run, on `host` (see module docstring).

    `phase(text)` reports how far it got; `stop` set ends the waits (Interrupted).
    """

    def __init__(
        self,
        host: Any,
        stop: threading.Event,
        phase: Callable[[str], None],
        python: str = "python3",
        remote_cache: str | None = None,
        sources: Sources | None = None,
    ) -> None:
        from mhtest.hosts.bootstrap import REMOTE_CACHE

        self.host = host
        self.stop = stop
        self.phase = phase
        self.python = python
        self.remote_cache = remote_cache or os.environ.get(ENV_REMOTE_CACHE) or REMOTE_CACHE
        self._sources = sources

    def sources(self) -> Sources:
        if self._sources is None:
            self._sources = Sources.build()
        return self._sources

    def start(
        self, run_id: str, wait: float, preload: tuple[str, ...] = (), key: str = ""
    ) -> tuple[Any, ExecStream, bool]:
        """Start the executor of run `run_id`: one command on a warm host; install first
        on a cold one. `wait`: how long the controller waits for the host after a drop.

        Returns the process, its stream, and whether the host holds payload `key`.
        """
        from mhtest.hosts import bootstrap
        from mhtest.hosts.errors import HostError

        sources = self.sources()
        # Module names and hex keys only (constants here), so nothing to quote.
        launch = LAUNCH.format(
            key=key or "-",
            run=run_id,
            wait=wait,
            preload=f" --preload {','.join(preload)}" if preload else "",
        )
        script = bootstrap.probe_script(
            self.python, sources.deps_key, sources.src_key, self.remote_cache, then=launch
        )
        for attempt in (1, 2):
            self.phase("checking Python and mhtest")
            proc = self.host.start(script)
            stream = ExecStream(proc.channel)
            found, text, cached = self.read_probe(stream)
            if found:
                return proc, stream, cached
            proc.close()
            probe = bootstrap.parse_probe(self.host, self.python, text)
            if attempt == 2 or (probe["env_ok"] and probe["src_ok"]):
                why = stream.stderr_line() or text.strip().replace("\n", " | ")[-300:]
                raise HostError(f"{self.host.name}: cannot start mhtest there: {why}")
            started = time.monotonic()
            missing = "dependencies and sources" if not probe["env_ok"] else "sources"
            self.phase(f"installing mhtest ({missing})")
            self._interruptible(
                bootstrap.complete,
                self.host,
                probe,
                sources.archive,
                self.remote_cache,
                INSTALL_TIMEOUT,
            )
            what = (("dependencies", probe["env_ok"]), ("sources", probe["src_ok"]))
            LOG.info(
                "%s: mhtest installed in %s (%s, %.2f s)",
                self.host.name,
                self.remote_cache,
                " and ".join(w for w, ok in what if not ok),
                time.monotonic() - started,
            )
        raise AssertionError("unreachable")

    def _interruptible(self, func: Callable[..., Any], *args: Any) -> Any:
        """func(*args) in a thread of its own; a stop drops the host's connection at once.

        For the long steps that wait on the host (installing mhtest there): Ctrl-C must not
        wait for them. What they leave half-done on the host, they clean up or redo.
        """
        done = threading.Event()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append((True, func(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=call, name=f"install-{self.host.name}", daemon=True).start()
        while not done.wait(0.1):
            if self.stop.is_set():
                drop = getattr(self.host, "drop_connection", None)
                if drop is not None:
                    drop()
                raise Interrupted()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def read_probe(
        self, stream: ExecStream, deadline: float | None = None, stoppable: bool = True
    ) -> tuple[bool, str, bool]:
        """Read the probe's lines up to EXEC_MARK: (mark seen, what was printed before,
        whether the host holds the payload). A stop ends the wait when `stoppable`."""
        seen: list[bytes] = []
        if deadline is None:
            deadline = time.monotonic() + PROBE_TIMEOUT
        while not stream.eof:
            if stoppable and self.stop.is_set():
                stream.channel.close()
                raise Interrupted()
            if time.monotonic() > deadline:
                stream.channel.close()
                from mhtest.hosts.errors import HostError

                raise HostError(
                    f"{self.host.name}: no answer from the startup probe within "
                    f"{PROBE_TIMEOUT:g} s",
                    self.host.name,
                )
            lines = stream.read(0.2)
            for i, line in enumerate(lines):
                words = line.split()
                if words[:1] == [EXEC_MARK]:
                    stream.pending = lines[i + 1 :]  # the executor's own output
                    stream.journal = True
                    text = b"\n".join(seen).decode("utf-8", "replace")
                    return True, text, words[1:] == [b"cached"]
                seen.append(line)
        return False, b"\n".join(seen).decode("utf-8", "replace"), False

    def follow(self, run_id: str, offset: int, deadline: float) -> tuple[Any, ExecStream]:
        """Start the follower of run `run_id` on the host, from byte `offset` of its journal
        (mhtest.runners.attach): the host is back after a drop."""
        from mhtest.hosts import bootstrap
        from mhtest.hosts.errors import HostError

        sources = self.sources()
        script = bootstrap.probe_script(
            self.python,
            sources.deps_key,
            sources.src_key,
            self.remote_cache,
            then=reattach.attach_command(run_id, offset),
        )
        proc = self.host.start(script)
        stream = ExecStream(proc.channel)
        found, text, _ = self.read_probe(stream, deadline, stoppable=False)
        if not found:
            proc.close()
            why = stream.stderr_line() or text.strip().replace("\n", " | ")[-300:]
            raise HostError(f"{self.host.name}: cannot follow its run: {why}", self.host.name)
        return proc, stream
