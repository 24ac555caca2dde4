"""This process's limits for running tests at once: one event pipe per running test."""

from __future__ import annotations

import logging
import os
import resource

LOG = logging.getLogger(__name__)
#: Open files the runner keeps beside one event pipe per running test.
FD_HEADROOM = 64


class ParallelismError(Exception):
    """More tests at once than this process may hold event pipes for."""


def ensure_open_files(parallel: int) -> None:
    """Make room for `parallel` running tests: one event pipe each, under RLIMIT_NOFILE.

    Raises the soft limit up to the hard one when the tests need more than it allows (a
    fork server started before keeps the usual limit for its tests); ParallelismError
    when even the hard limit is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 0
    need = parallel + open_now + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    problem = None
    if hard != resource.RLIM_INFINITY and need > hard:
        problem = f"the hard limit is {hard} (ulimit -Hn)"
    else:
        try:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard)
            )
        except (OSError, ValueError) as exc:
            problem = f"cannot raise the limit of {soft} (ulimit -n): {exc}"
    if problem is not None:
        raise ParallelismError(
            f"{parallel} tests at once need about {need} open files here, but {problem}: "
            "run fewer at once (--max-parallel) or raise the limit"
        )
    LOG.debug("open files limit raised from %d for %d tests at once", soft, parallel)
