"""Spawner plugin: tests run on this machine, each in its own child process."""

from __future__ import annotations

import threading
from typing import Any, Callable

from mhtest.runners.local import LocalRunner
from mhtest.spec import TestSpec


class LocalSpawner:
    """The `local` place: the fork-server runner."""

    name = "local"

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(
        self, place: str, specs: list[TestSpec], sink: Callable[[dict], None], stop: threading.Event
    ) -> None:
        server, self.config.fork_server = self.config.fork_server, None
        LocalRunner(self.config.max_parallel, sink, stop, server).run(specs)
