"""Separate `mhtest run` commands that meet through a sync server (--sync-server / --sync).

The RFC's case of jobs started by other tools: one run starts the server and a TCP sink
test, another joins with a client test that measures throughput to it. Both are real
processes; the TCP port travels through an exchange.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import running_mhtest, user_errors

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tests"
SERVER_TEST = str(EXAMPLES / "sync_tcp_server.py")
CLIENT_TEST = str(EXAMPLES / "sync_tcp_client.py")

pytestmark = pytest.mark.timeout(120)


def _read_sync_address(proc, timeout: float = 20.0) -> str:
    """The address a `--sync-server` run prints on stderr ("SYNC SERVER: tcp://…")."""
    deadline = time.monotonic() + timeout
    seen = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            match = re.match(r"SYNC SERVER: tcp://([\d.]+):(\d+)$", line.strip())
            if match:
                return f"{match.group(1)}:{match.group(2)}"
    pytest.fail(f"no SYNC SERVER line on stderr within {timeout} s: {seen}")


def _finish(proc, timeout: float = 60.0) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    return out, err


def _whiteboard(results: dict, name: str) -> dict:
    (test,) = [t for t in results["tests"] if name in t["ref"]]
    assert test["status"] == "PASS", test
    return json.loads(test["whiteboard"])


def _check_pair(server_results: dict, client_results: dict) -> None:
    client = _whiteboard(client_results, "SyncTCPClient")
    server = _whiteboard(server_results, "SyncTCPServer")
    assert client["throughput_mbit_s"] > 0 and client["seconds"] > 0.5
    assert client["bytes_sent"] > 0
    assert server["bytes_received"] == client["bytes_sent"]


def test_server_run_and_client_run_meet(tmp_path: Path, mhtest) -> None:
    server_dir = tmp_path / "server-results"
    args = ["run", SERVER_TEST, "--sync-server", "127.0.0.1:0", "-p", "duration=1"]
    with running_mhtest(args, tmp_path, server_dir) as server:
        address = _read_sync_address(server)
        client = mhtest("run", CLIENT_TEST, "--sync", address, "-p", "duration=1", timeout=90)
        out, err = _finish(server)
        assert server.returncode == 0, f"server run: {out}\n{err}"
    assert client.code == 0, client
    assert "PASS" in client.stdout
    server_results = json.loads((server_dir / "latest" / "results.json").read_text())
    _check_pair(server_results, client.results())
    whiteboard_file = next((client.job_dir / "test-results").glob("*SyncTCPClient*/whiteboard"))
    assert "throughput_mbit_s" in whiteboard_file.read_text()


def test_client_run_may_start_first_on_a_fixed_port(tmp_path: Path, mhtest) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client_dir = tmp_path / "client-results"
    client_args = ["run", CLIENT_TEST, "--sync", f"127.0.0.1:{port}", "-p", "duration=0.6"]
    with running_mhtest(client_args, tmp_path, client_dir) as client:
        time.sleep(1.0)  # the client job is up and knocking before the server exists
        server = mhtest("run", SERVER_TEST, "--sync-server", f"127.0.0.1:{port}", timeout=90)
        out, err = _finish(client)
        assert client.returncode == 0, f"client run: {out}\n{err}"
    assert server.code == 0, server
    assert f"SYNC SERVER: tcp://127.0.0.1:{port}" in server.stderr
    client_results = json.loads((client_dir / "latest" / "results.json").read_text())
    _check_pair(server.results(), client_results)


@contextlib.contextmanager
def _shared_server(tmp_path: Path) -> Iterator[str]:
    """A standalone `mhtest sync-server`; its HOST:PORT."""
    with running_mhtest(["sync-server"], tmp_path, tmp_path / "unused") as server:
        with selectors.DefaultSelector() as sel:
            sel.register(server.stdout, selectors.EVENT_READ)
            assert sel.select(20), "mhtest sync-server printed no address"
        line = server.stdout.readline()
        assert line.startswith("SYNC SERVER: tcp://"), line
        yield line.split("tcp://")[1].strip()
        server.terminate()
        server.communicate(timeout=30)


def test_pairs_of_runs_share_one_server_each_in_its_group(tmp_path: Path) -> None:
    """Two pairs of the same tests (the same participant names) on one standalone server:
    each pair meets in its own --sync-group, and neither disturbs the other."""
    runs = {}
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(_shared_server(tmp_path))
        for group in ("nightly-1", "nightly-2"):
            for test in (SERVER_TEST, CLIENT_TEST):
                name = f"{group}-{Path(test).stem}"
                args = ["run", test, "--sync", address, "--sync-group", group]
                runs[name] = stack.enter_context(
                    running_mhtest([*args, "-p", "duration=0.6"], tmp_path, tmp_path / name)
                )
        for name, proc in runs.items():
            out, err = _finish(proc, timeout=90)
            assert proc.returncode == 0, f"{name}: {out}\n{err}"
    for group in ("nightly-1", "nightly-2"):
        server, client = (
            json.loads((tmp_path / f"{group}-{side}" / "latest" / "results.json").read_text())
            for side in ("sync_tcp_server", "sync_tcp_client")
        )
        _check_pair(server, client)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sync", "127.0.0.1"], "--sync 127.0.0.1: give the server's HOST:PORT"),
        (["--sync", "udp://h:1"], "only tcp:// addresses are supported"),
        (["--sync-server", "--sync", "127.0.0.1:5"], "--sync to join one, not both"),
        (["--sync-participant", "h1"], "--sync-participant needs --sync HOST:PORT"),
        (["--sync", "127.0.0.1:5", "--sync-keys", "/nonexistent"], "is not a directory"),
        (["--sync-server", "--sync-count", "0"], "--sync-count must be at least 1"),
        (["--sync-group", "a"], "--sync-group needs --sync HOST:PORT"),
        (["--sync", "127.0.0.1:5", "--sync-group", " "], "--sync-group must be a name"),
    ],
)
def test_sync_option_mistakes_are_one_line_errors(mhtest, args: list[str], message: str) -> None:
    run = mhtest("run", str(EXAMPLES / "passtest.py"), *args)
    assert run.code == 2, run
    errors = user_errors(run.stderr)
    assert len(errors) == 1 and message in errors[0], run


def test_sync_server_port_in_use_is_a_one_line_error(mhtest) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = mhtest("run", str(EXAMPLES / "passtest.py"), "--sync-server", f"127.0.0.1:{port}")
    assert run.code == 2, run
    errors = user_errors(run.stderr)
    assert len(errors) == 1 and "Address already in use" in errors[0], run
