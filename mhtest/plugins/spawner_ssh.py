"""Spawner plugin: places of kind "ssh", tests run by the RemoteTestRunner over SSH."""

from __future__ import annotations

from typing import Any


class SSHSpawner:
    """One RemoteTestRunner per host, on the connection the dispatcher opened."""

    kind = "ssh"

    def run(self, place: Any) -> None:
        """Run `place.specs` (a mhtest.dispatch.Place) on its host; ends go to place.sink."""
        from mhtest import events
        from mhtest.runners.remote import RemoteTestRunner

        place.sink(events.host_phase(place.config.name, "connecting"))
        try:
            host = place.connect()
        except BaseException:
            place.sink(events.host_phase(place.config.name, "done"))
            raise
        try:
            with place.entered(host) as on_reconnect:
                options = place.options
                RemoteTestRunner(
                    host,
                    place.sink,
                    place.stop,
                    python=options.remote_python or "python3",
                    max_parallel=place.max_parallel,
                    sources=place.sources(),
                    max_results=options.max_results,
                    payload=place.payload(),
                    reconnect_timeout=options.reconnect_timeout,
                    on_reconnect=on_reconnect,
                ).run(place.specs)
        finally:
            place.sink(events.host_phase(place.config.name, "done"))
            host.close()
