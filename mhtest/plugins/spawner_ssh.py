"""Spawner plugin: tests run on a host reached over SSH (the RemoteTestRunner)."""

from __future__ import annotations

import threading
from typing import Any, Callable

from mhtest.spec import TestSpec


class SSHSpawner:
    """Places named in --hosts: one RemoteTestRunner per host, run in the job's threads."""

    name = "ssh"

    def __init__(self, config: Any) -> None:
        self.config = config
        self._sources: Any = None
        self._lock = threading.Lock()

    def sources(self) -> Any:
        """mhtest's packed sources, built once for all the job's hosts."""
        from mhtest.runners.remote import Sources

        with self._lock:
            if self._sources is None:
                self._sources = Sources.build()
            return self._sources

    def run(
        self, place: str, specs: list[TestSpec], sink: Callable[[dict], None], stop: threading.Event
    ) -> None:
        from mhtest.hosts.inventory import make_host
        from mhtest.runners.remote import RemoteTestRunner

        hosts = {h.name: h for h in self.config.hosts}
        options = self.config.options
        host = make_host(
            hosts[place], accept_new_host_keys=bool(options.get("accept_new_host_keys"))
        )
        try:
            runner = RemoteTestRunner(
                host,
                sink,
                stop,
                python=options.get("remote_python") or "python3",
                max_parallel=options.get("max_parallel"),
                sources=self.sources(),
                max_results=options.get("max_results"),
            )
            runner.run(specs)
        finally:
            host.close()
