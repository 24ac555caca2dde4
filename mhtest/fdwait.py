"""Waiting for files, sockets and SSH channels to be ready, with no limit on their numbers.

select.select() refuses a file descriptor of 1024 or more (ValueError): a controller with
hundreds of hosts (a socket and channel pipes each) or a thousand tests gets there. poll()
has no such limit and keeps nothing open between calls.
"""

from __future__ import annotations

import select
from typing import Any, Sequence

_READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR


def readable(items: Sequence[Any], timeout: float | None) -> list[Any]:
    """Those of `items` (file descriptors, or objects with fileno()) that can be read now
    or within `timeout` seconds (None: no limit), as select.select() gives them."""
    return _wait(items, timeout, _READ)


def writable(items: Sequence[Any], timeout: float | None) -> list[Any]:
    """Those of `items` that can be written (a connecting socket: that has connected or
    failed) now or within `timeout` seconds."""
    return _wait(items, timeout, _WRITE)


def _wait(items: Sequence[Any], timeout: float | None, mask: int) -> list[Any]:
    poller = select.poll()
    by_fd: dict[int, list[Any]] = {}
    for item in items:
        fd = item if isinstance(item, int) else item.fileno()
        by_fd.setdefault(fd, []).append(item)
        poller.register(fd, mask)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [item for fd, _ in poller.poll(ms) for item in by_fd.get(fd, ())]
