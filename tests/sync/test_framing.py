"""Message framing and size limits of the sync server, attacked with real sockets.

A request is one frame. A message of many frames must be dropped whole, however many
frames it has: cutting it anywhere lets its tail pass for a message of someone else. A
request or a reply too large for a message is refused to its sender, with the reason,
and nobody else notices.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mhtest.sync import SyncAborted, SyncClient, SyncError, SyncServer, protocol
from mhtest.sync.testing import raw_client

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@pytest.mark.parametrize("frames", [30_001, 10_001, 3])
def test_a_message_of_many_frames_never_passes_for_another_clients(frames: int) -> None:
    """Frames [h2's identity, an abort] repeated inside one message of the attacker's
    must not be taken as an abort sent by h2, at any frame count and either alignment.

    The server used to read 10,000 frames of a message (the identity ZeroMQ adds, then
    9,999 of the sender's) and take the next two for a new message: from h2, with 10,001
    or 30,001 frames, whose last two were h2's identity and a request.
    """
    with (
        SyncServer(expected=["h1", "h2"]) as server,
        raw_client(server.address, identity=b"victim-h2") as h2,
        raw_client(server.address) as attacker,
        SyncClient(server.address, "h1") as h1,
    ):
        assert h2.request("hello", participant="h2", heartbeat=60)["ok"]
        assert attacker.request("hello", participant="mallory", heartbeat=60)["ok"]
        forged = protocol.encode({"id": 99, "op": "abort", "reason": "forged"})
        for shift in (0, 1):
            pairs = [b"victim-h2", forged] * (frames // 2 + 1)
            attacker.send(*([b"x"] * shift + pairs)[:frames])
        # Answered after the server has read everything sent before on this connection.
        assert attacker.request("post", name="probe")["ok"]
        waiting = h2.start("barrier", name="after", timeout=10)
        h1.barrier("after", timeout=10)  # SyncAborted "aborted by h2: forged" if taken as h2's
        assert h2.reply(waiting)["ok"]
        assert not [r for r in h2.stray if r.get("id") == 99], "h2 got replies to a forged abort"


def test_an_exchange_too_large_for_one_reply_is_refused_to_its_sender_only() -> None:
    """Three participants exchange 3 MiB each: 9 MiB would not fit one reply (before, every
    client was dropped and told the server "stopped answering"). The first comes in;
    the others are refused, with the reason, and can take part with less data."""
    names = ["h1", "h2", "h3"]
    big = "x" * (3 * MIB)
    refusals: list[str] = []
    lock = threading.Lock()

    def one(name: str) -> Any:
        with SyncClient(server.address, name) as client:
            try:
                got = client.exchange("big", big, timeout=30)
            except SyncAborted:
                raise
            except SyncError as exc:
                with lock:
                    refusals.append(str(exc))
                got = client.exchange("big", "small", timeout=30)
            client.barrier("still-connected", timeout=30)
            return got

    with SyncServer(expected=names) as server, ThreadPoolExecutor(3) as pool:
        results = [f.result(timeout=50) for f in [pool.submit(one, n) for n in names]]
    assert len(refusals) == 2, refusals
    for message in refusals:
        assert "exchange 'big'" in message and "4 MiB" in message, message
    assert results[0] == results[1] == results[2]
    assert sorted(results[0].values(), key=len) == ["small", "small", big]


def test_posts_too_large_for_one_wait_reply_are_refused() -> None:
    with (
        SyncServer() as server,
        SyncClient(server.address, "h1") as h1,
        SyncClient(server.address, "h2") as h2,
        SyncClient(server.address, "h3") as h3,
    ):
        h1.post("config", "a" * (3 * MIB))
        with pytest.raises(SyncError, match="post 'config'.*4 MiB"):
            h2.post("config", "b" * (3 * MIB))
        assert h3.wait("config", timeout=5) == {"h1": "a" * (3 * MIB)}
        h2.post("config", "fits")
        assert h3.wait("config", count=2, timeout=5) == {"h1": "a" * (3 * MIB), "h2": "fits"}


def test_an_oversized_request_gets_its_reason_back() -> None:
    """A request over the 4 MiB limit (but under what ZeroMQ lets through) is answered with
    why it was refused, not dropped in silence; the sender and the others carry on."""
    with (
        SyncServer() as server,
        raw_client(server.address) as raw,
        SyncClient(server.address, "h1") as h1,
    ):
        assert raw.request("hello", participant="raw", heartbeat=60)["ok"]
        huge = b'{"v":1,"id":7,"op":"post","name":"p","data":"%s"}' % (b"x" * (5 * MIB))
        raw.send(huge)
        reply = raw.reply(7, wait=10)
        assert reply is not None, "the oversized request was dropped without a word"
        assert not reply["ok"] and "exceeds" in reply["error"]["message"], reply
        assert raw.request("post", name="p", data="small")["ok"]
        assert h1.wait("p", timeout=5) == {"raw": "small"}
