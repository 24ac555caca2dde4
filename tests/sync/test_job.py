"""`mhtest run`'s sync options (mhtest.sync.job) and the `mhtest sync-server` command."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mhtest.spec import TestSpec
from mhtest.sync import SyncClient, SyncTimeout, SyncUnavailable
from mhtest.sync.errors import SyncOptionError
from mhtest.sync.job import add_run_options, default_participant, job_sync, set_participants
from mhtest.sync.keys import create_keys

pytestmark = pytest.mark.timeout(60)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return parser.parse_args(list(argv))


def test_no_sync_options_yield_no_variables() -> None:
    with job_sync(_args()) as env:
        assert env == {}


def test_sync_server_serves_the_job_and_stops_after_it(tmp_path: Path) -> None:
    lines: list[str] = []
    args = _args("--sync-server", "--sync-count", "2", "--sync-participant", "h1")
    with job_sync(args, announce=lines.append) as env:
        assert lines == [f"SYNC SERVER: {env['MHTEST_SYNC_ADDRESS']}"]
        assert env["MHTEST_SYNC_COUNT"] == "2" and env["MHTEST_SYNC_PARTICIPANT"] == "h1"
        with SyncClient.from_environment(env) as client:
            assert client.exchange("x", 1, count=1) == {"h1": 1}
    with pytest.raises(SyncUnavailable):
        SyncClient(env["MHTEST_SYNC_ADDRESS"], "late", connect_timeout=1)


def test_sync_joins_with_keys(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys")
    with job_sync(_args("--sync", "127.0.0.1:5555", "--sync-keys", str(keys))) as env:
        assert env == {
            "MHTEST_SYNC_ADDRESS": "tcp://127.0.0.1:5555",
            "MHTEST_SYNC_KEYS": str(keys.resolve()),
        }
    with (
        pytest.raises(SyncOptionError, match="server.key is missing"),
        job_sync(_args("--sync", "127.0.0.1:5555", "--sync-keys", str(tmp_path))),
    ):
        pass


def test_sync_group_reaches_the_tests_and_keeps_them_in_their_group() -> None:
    with job_sync(_args("--sync-server", "--sync-group", "nightly-7")) as env:
        assert env["MHTEST_SYNC_GROUP"] == "nightly-7"
        with (
            SyncClient.from_environment({**env, "MHTEST_SYNC_PARTICIPANT": "a"}) as a,
            SyncClient(env["MHTEST_SYNC_ADDRESS"], "b") as b,
        ):
            assert a.group == "nightly-7" and b.group == ""
            a.post("hello", 1)
            assert a.wait("hello", timeout=1) == {"a": 1}
            with pytest.raises(SyncTimeout):
                b.wait("hello", timeout=0.3)


def test_server_keys_missing_is_an_option_error(tmp_path: Path) -> None:
    with (
        pytest.raises(SyncOptionError, match="--sync-server 127.0.0.1:0: .*server.key_secret"),
        job_sync(_args("--sync-server", "--sync-keys", str(tmp_path))),
    ):
        pass


def test_default_participant_is_the_ref_without_directories() -> None:
    assert default_participant("examples/tests/a.py:A.test") == "a.py:A.test"
    assert default_participant("/abs/true.sh") == "true.sh"
    specs = [
        TestSpec("x/a.py:A.test", "instrumented", "x/a.py"),
        TestSpec("b.sh", "simple", "b.sh"),
    ]
    specs[1].env["MHTEST_SYNC_PARTICIPANT"] = "mine"
    set_participants(specs, {"MHTEST_SYNC_ADDRESS": "tcp://127.0.0.1:1"})
    assert [s.env["MHTEST_SYNC_PARTICIPANT"] for s in specs] == ["a.py:A.test", "mine"]
    named = [TestSpec("x/a.py:A.test", "instrumented", "x/a.py")]
    set_participants(named, {"MHTEST_SYNC_ADDRESS": "a", "MHTEST_SYNC_PARTICIPANT": "h1"})
    assert "MHTEST_SYNC_PARTICIPANT" not in named[0].env  # the job-wide name applies


def test_sync_server_command_runs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhtest", "sync-server", "--participants", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("SYNC SERVER: tcp://127.0.0.1:"), line
        with SyncClient(line.split()[-1], "solo") as client:
            client.barrier("alone")  # count from --participants
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "sync server stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_sync_server_command_refuses_bad_input() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mhtest", "sync-server", "--bind", "127.0.0.1:99999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "mhtest sync-server: error: sync server: bad bind address '127.0.0.1:99999': "
        "the port must be a number from 0 to 65535"
    ]
