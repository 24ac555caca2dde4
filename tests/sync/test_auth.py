"""CurveZMQ on the sync server: per-run keys bound to participant names, keys directories,
and what a client that is turned away is told. Real sockets, raw clients as attackers."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from mhtest.sync import SyncClient, SyncError, SyncServer, SyncUnavailable
from mhtest.sync.keys import RunKeys, create_keys, make_run_keys
from mhtest.sync.testing import raw_client

pytestmark = pytest.mark.timeout(60)


def _env(keys: RunKeys, server: SyncServer, name: str) -> dict[str, str]:
    return {
        **keys.client_env(name),
        "MHTEST_SYNC_ADDRESS": server.address,
        "MHTEST_SYNC_PARTICIPANT": name,
    }


def _curve(keys: RunKeys, name: str) -> tuple[bytes, bytes, bytes]:
    mine = keys.client_keys(name)
    return mine.server_public, mine.public, mine.secret


@contextlib.contextmanager
def _run_server(names: list[str]) -> Iterator[tuple[RunKeys, SyncServer]]:
    keys = make_run_keys(names)
    with SyncServer(expected=names, run_keys=keys) as server:
        yield keys, server


@contextlib.contextmanager
def _all_logs() -> Iterator[list[str]]:
    """Every log line of the process, at every level, while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_per_run_keys_let_the_workers_meet() -> None:
    with _all_logs() as logs, _run_server(["h1", "h2"]) as (keys, server):
        got: dict[str, object] = {}

        def worker(name: str) -> None:
            with SyncClient.from_environment(_env(keys, server, name)) as client:
                client.barrier("started", timeout=10)
                got[name] = client.exchange("ports", name.upper(), timeout=10)

        threads = [threading.Thread(target=worker, args=(n,)) for n in ("h1", "h2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert got == {n: {"h1": "H1", "h2": "H2"} for n in ("h1", "h2")}
    secrets = [keys.client_env(n)["MHTEST_SYNC_CLIENT_SECRET"] for n in ("h1", "h2")]
    assert not [line for line in logs for s in secrets if s in line]
    assert not any(s in repr(keys) for s in secrets)


def test_a_client_without_a_key_is_refused() -> None:
    """Before: anyone on the host could reach the forwarded port and join as a worker."""
    with _run_server(["h1", "h2"]) as (_, server), raw_client(server.address) as intruder:
        request = intruder.start("hello", participant="h2", heartbeat=60)
        assert intruder.reply(request, wait=2) is None
        with pytest.raises(SyncUnavailable, match="requires CurveZMQ keys"):
            SyncClient(server.address, "h2", connect_timeout=10)


def test_a_client_with_a_key_of_another_run_is_refused() -> None:
    other = make_run_keys(["h1"])
    with _run_server(["h1"]) as (keys, server):
        stranger = (keys.server_public, *_curve(other, "h1")[1:])
        with raw_client(server.address, curve=stranger) as intruder:
            assert intruder.reply(intruder.start("hello", participant="h1"), wait=2) is None
        env = {**_env(keys, server, "h1"), **other.client_env("h1")}
        env["MHTEST_SYNC_SERVER_KEY"] = keys.client_env("h1")["MHTEST_SYNC_SERVER_KEY"]
        started = time.monotonic()
        with pytest.raises(SyncUnavailable, match="did not accept this client's key"):
            SyncClient.from_environment(env)
        assert time.monotonic() - started < 5  # told at once, not after the connect timeout


def test_a_workers_key_cannot_register_as_another_worker() -> None:
    with (
        _run_server(["h1", "h2"]) as (keys, server),
        raw_client(server.address, curve=_curve(keys, "h1")) as h1_key,
    ):
        reply = h1_key.request("hello", participant="h2", heartbeat=60)
        assert reply["error"]["type"] == "refused", reply
        assert "key of participant 'h1'" in reply["error"]["message"], reply
        with pytest.raises(SyncError, match="key of participant 'h1'"):
            env = {**_env(keys, server, "h1"), "MHTEST_SYNC_PARTICIPANT": "h2"}
            SyncClient.from_environment(env)
        # With its own name it may join: the refusals above cost it nothing.
        assert h1_key.request("hello", participant="h1", heartbeat=60)["ok"]


def test_a_workers_key_cannot_speak_on_another_workers_connection() -> None:
    """h1's key with h2's ZeroMQ identity (ROUTER_HANDOVER hands h2's routing over to it):
    its requests are refused, as they come from h1's key, not h2's."""
    with (
        _run_server(["h1", "h2"]) as (keys, server),
        raw_client(server.address, identity=b"h2-conn", curve=_curve(keys, "h2")) as h2,
    ):
        assert h2.request("hello", participant="h2", heartbeat=60)["ok"]
        with raw_client(server.address, identity=b"h2-conn", curve=_curve(keys, "h1")) as thief:
            reply = thief.request("abort", reason="forged")
            assert reply["error"]["type"] == "refused", reply
            assert "key of participant 'h1'" in reply["error"]["message"]


def test_run_keys_are_checked_and_handed_out_by_name() -> None:
    keys = make_run_keys(["h1", "h2"])
    env = keys.client_env("h1")
    assert sorted(env) == [
        "MHTEST_SYNC_CLIENT_KEY",
        "MHTEST_SYNC_CLIENT_SECRET",
        "MHTEST_SYNC_SERVER_KEY",
    ]
    assert env["MHTEST_SYNC_CLIENT_KEY"] != keys.client_env("h2")["MHTEST_SYNC_CLIENT_KEY"]
    with pytest.raises(SyncError, match="no key for participant 'h3'"):
        keys.client_env("h3")
    with pytest.raises(SyncError, match="not both"):
        SyncServer(keys_dir="/nonexistent", run_keys=keys)
    with pytest.raises(SyncError, match="MHTEST_SYNC_CLIENT_SECRET"):
        SyncClient.from_environment(
            {"MHTEST_SYNC_ADDRESS": "tcp://127.0.0.1:1", "MHTEST_SYNC_CLIENT_KEY": "x"}
        )


# -- what a refused client is told (keys directories, --sync-keys) ---------------------------


def test_a_key_the_server_does_not_list_is_told_so_at_once(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys", clients=["h1"])
    stranger = create_keys(tmp_path / "other", clients=["h1"])
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    with SyncServer(keys_dir=keys, expected=1) as server:
        started = time.monotonic()
        with pytest.raises(SyncUnavailable) as refused:
            SyncClient(server.address, "h1", keys_dir=stranger, connect_timeout=10)
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert message.count("\n") == 0
        assert f"sync server at {server.address} did not accept this client's key" in message
        assert "--sync-keys" in message


def test_a_client_without_keys_is_told_the_server_wants_them(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys")
    with (
        SyncServer(keys_dir=keys, expected=1) as server,
        pytest.raises(SyncUnavailable, match="requires CurveZMQ keys.*--sync-keys"),
    ):
        SyncClient(server.address, "h1", connect_timeout=10)


def test_a_client_with_keys_is_told_the_server_has_none(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys")
    with (
        SyncServer(expected=1) as server,
        pytest.raises(SyncUnavailable, match="does not use CurveZMQ keys"),
    ):
        SyncClient(server.address, "h1", keys_dir=keys, connect_timeout=10)


def test_a_wrong_server_key_is_named_when_the_wait_ends(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys")
    other = create_keys(tmp_path / "other")
    (other / "clients" / "client.key_secret").write_bytes(
        (keys / "clients" / "client.key_secret").read_bytes()
    )
    with (
        SyncServer(keys_dir=keys, expected=1) as server,
        pytest.raises(SyncUnavailable, match="CurveZMQ handshake.*server.key"),
    ):
        SyncClient(server.address, "h1", keys_dir=other, connect_timeout=1.5)


def test_keys_directories_still_admit_their_clients(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys", clients=["h1", "h2"])
    with (
        SyncServer(keys_dir=keys, expected=["h1", "h2"]) as server,
        SyncClient(server.address, "h1", keys_dir=keys) as h1,
        SyncClient(server.address, "h2", keys_dir=keys) as h2,
    ):
        done = threading.Thread(target=h2.barrier, args=("b",), kwargs={"timeout": 10})
        done.start()
        h1.barrier("b", timeout=10)
        done.join(10)
        assert not done.is_alive()
