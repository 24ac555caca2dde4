"""Autotest's barrier over mhtest's sync: members meet by host id, timeouts say who is missing."""

from __future__ import annotations

import threading

import pytest

from mhtest.autoserv.barrier import BarrierError, ControlSync, barrier_class
from mhtest.sync.client import SyncClient
from mhtest.sync.errors import SyncError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sync():
    server = ControlSync.start()
    yield server
    server.close()


def meet_in_threads(cls: type, calls: list) -> dict[str, object]:
    """Run each (hostid, method, ids) call in a thread of its own; what each raised (or None)."""
    outcome: dict[str, object] = {}

    def one(hostid: str, method: str, ids: tuple) -> None:
        try:
            getattr(cls(hostid, "start", 10), method)(*ids)
            outcome[hostid] = None
        except Exception as exc:  # noqa: BLE001 - compared below
            outcome[hostid] = exc

    threads = [threading.Thread(target=one, args=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcome


def test_members_meet_by_host_id_and_again_under_the_same_tag(sync: ControlSync) -> None:
    cls = barrier_class(sync.endpoint, lambda: "net.srv:4")
    ids = ("server", "h1", "h2")
    calls = [
        ("server", "rendezvous_servers", ids),
        ("h1", "rendezvous", ids),
        ("h2", "rendezvous", ids),
    ]
    assert meet_in_threads(cls, calls) == {"server": None, "h1": None, "h2": None}
    assert meet_in_threads(cls, calls) == {"server": None, "h1": None, "h2": None}
    assert cls.barrier is cls  # barrier.barrier(...), as Autotest's module was used


def test_a_timeout_names_who_did_not_come(sync: ControlSync) -> None:
    cls = barrier_class(sync.endpoint, lambda: "net.srv:9")
    with pytest.raises(BarrierError) as caught:
        cls("h1", "lonely", 1).rendezvous("h1", "h2")
    assert str(caught.value) == (
        "net.srv:9: barrier 'lonely' of h1: timed out after 1 s waiting for h2 (arrived: h1)"
    )


def test_without_a_sync_server_the_error_says_what_to_do() -> None:
    cls = barrier_class(lambda: None, lambda: "control:2")
    with pytest.raises(BarrierError, match="control:2: barrier 'x': no sync server to meet at"):
        cls("h1", "x", 1).rendezvous("h1", "h2")


def test_a_stranger_without_the_key_cannot_join(sync: ControlSync) -> None:
    with pytest.raises(SyncError):
        SyncClient(sync.server.address, "h1", connect_timeout=1.5)
