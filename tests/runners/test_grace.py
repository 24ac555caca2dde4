"""The waits after a stop, in the order they must keep: each longer than what it waits for.

A remote test that ignores SIGTERM is killed by its host's runner, whose results must
reach the controller before the controller kills that runner; a multi-host test waits for
its workers' runners; the job waits for everything. If a wait were shorter than the one
below it, results would be lost at Ctrl-C (they were: 10 s against 10 s).
"""

from __future__ import annotations

from mhtest import dispatch
from mhtest.runners import executor, fanout, local, remote

#: Time to kill a test, pack its results and send them over a loaded link.
SEND = 2.0


def test_each_wait_outlasts_the_one_it_waits_for() -> None:
    chain = [
        ("host runner: SIGTERM to SIGKILL", executor.STOP_GRACE + SEND),
        ("controller: stop to killing the host runner", remote.STOP_GRACE),
        ("multi-host test: stop to giving up on its workers", fanout.INTERRUPT_GRACE),
        ("job runner: SIGTERM to SIGKILL of a multi-host test", local.MULTIHOST_STOP_GRACE),
        ("job: interrupt to giving up on its places", dispatch.INTERRUPT_GRACE),
    ]
    for (inner, inner_wait), (outer, outer_wait) in zip(chain, chain[1:]):
        assert inner_wait + 1 < outer_wait, f"{outer} ({outer_wait} s) <= {inner} ({inner_wait} s)"
    # A plain local test keeps its tearDown time; a host's runner kills sooner.
    assert executor.STOP_GRACE < local.STOP_GRACE < dispatch.INTERRUPT_GRACE
