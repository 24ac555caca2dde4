"""Spawner plugin: places of kind "local", tests in child processes on this machine."""

from __future__ import annotations

import os
from typing import Any

from mhtest.runners.local import LocalRunner


class LocalSpawner:
    """The fork-server runner, one per local place."""

    kind = "local"

    def run(self, place: Any) -> None:
        """Run `place.specs` (a mhtest.dispatch.Place) here; every end goes to place.sink."""
        with place.entered(None):
            runner = LocalRunner(
                place.max_parallel or os.cpu_count() or 1,
                place.sink,
                place.stop,
                place.take_fork_server(),
                failfast=place.options.failfast,
            )
            runner.run(place.specs)
