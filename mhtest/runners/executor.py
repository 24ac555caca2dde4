"""The executor: runs TestSpecs sent on stdin, reports their events on stdout.

This is what a remote host runs (`python -m mhtest.runners.executor`), started over
SSH by the RemoteTestRunner: the very same LocalRunner as `mhtest run` uses here, with
the event stream going back over the SSH channel.

Input, one JSON object per line: {"max_parallel": N} (optional, first), then one
TestSpec per line, then the line "END". The controller keeps stdin open while it
listens: end of input before the job is done means it went away, and the running
tests are stopped. SIGTERM and SIGHUP stop them too.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from mhtest import events
from mhtest.runners.local import LocalRunner
from mhtest.spec import TestSpec

END = "END"


class _Output:
    """Event lines to stdout; a controller that went away stops the job."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.lock = threading.Lock()
        self.fd = sys.stdout.fileno()

    def __call__(self, event: dict[str, Any]) -> None:
        fields = {k: v for k, v in event.items() if k not in ("v", "type")}
        data = events.encode(event["type"], **fields)
        with self.lock:
            try:
                os.write(self.fd, data)
            except OSError:
                self.stop.set()


def read_specs(stream: Any) -> tuple[int, list[TestSpec]]:
    """Read the header and specs up to END from `stream` (a text file)."""
    max_parallel = os.cpu_count() or 1
    specs: list[TestSpec] = []
    for line in stream:
        line = line.strip()
        if not line:
            continue
        if line == END:
            break
        data = json.loads(line)
        if "max_parallel" in data and "ref" not in data:
            max_parallel = int(data["max_parallel"])
        else:
            specs.append(TestSpec.from_dict(data))
    return max_parallel, specs


def main() -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stdin = os.fdopen(os.dup(0), "r", encoding="utf-8")
    max_parallel, specs = read_specs(stdin)

    def watch_controller() -> None:
        # Anything after END is ignored; end of input means the controller is gone.
        while stdin.readline():
            pass
        stop.set()

    threading.Thread(target=watch_controller, daemon=True).start()
    LocalRunner(max_parallel, _Output(stop), stop).run(specs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
