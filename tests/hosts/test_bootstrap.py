"""ensure_mhtest: a cached environment on a real sshd host, cold then warm, and its faults."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mhtest.hosts import HostError, LocalHost, bootstrap
from mhtest.hosts.bootstrap import RemoteEnv, ensure_mhtest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def host_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A host-side cache directory shared by this module's tests (fresh each session)."""
    return str(tmp_path_factory.mktemp("host-cache") / "cache")


SHELL = """
from mhtest.hosts.shell import REMOTE_SHELL, shell_session
session = shell_session(REMOTE_SHELL, prompt=r"^MHTEST-PROMPT\\$ ?$")
session.read_up_to_prompt(timeout=20)
print(session.cmd_output("echo $((6*7))").strip())
session.close()
"""


def run_mhtest(host, env: RemoteEnv, code: str) -> str:
    return host.run(f"{env.python} -c", args=[code], env=env.env, timeout=60).stdout


@pytest.fixture
def frozen_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A snapshot of mhtest's sources: others may edit the tree while the test runs."""
    copy = tmp_path / "frozen" / "mhtest"
    shutil.copytree(bootstrap.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bootstrap, "PACKAGE_DIR", copy)
    return copy


def test_cold_then_warm_on_a_fresh_host_cache(ssh_host, host_cache: str, frozen_sources) -> None:
    cache = host_cache
    started = time.monotonic()
    cold = ensure_mhtest(ssh_host, remote_cache=cache)
    cold_time = time.monotonic() - started
    assert cold.cold and cold.python.startswith(cache)
    # the host runs mhtest from the shipped sources, with its dependencies and plugins
    out = run_mhtest(
        ssh_host,
        cold,
        "import mhtest, paramiko, zmq, yaml; from importlib.metadata import entry_points; "
        "print(mhtest.__file__); print(sorted(e.name for e in entry_points(group='mhtest.cli')))",
    )
    assert out.splitlines()[0].startswith(cold.env["PYTHONPATH"] + "/mhtest/")
    assert "'run'" in out.splitlines()[1]
    assert ssh_host.run(f"{cold.python} -m mhtest --help", env=cold.env).ok
    # the environment's scripts run where it was moved to: aexpect's helper (a VM console, a
    # shell) is found there on a PATH that has no other one
    out = run_mhtest(ssh_host, replace(cold, env={**cold.env, "PATH": "/usr/bin:/bin"}), SHELL)
    assert out == "42\n"

    ssh_host.close()  # warm path with a fresh connection, as a second job would
    started = time.monotonic()
    warm = ensure_mhtest(ssh_host, remote_cache=cache)
    warm_time = time.monotonic() - started
    assert not warm.cold and (warm.python, warm.env) == (cold.python, cold.env)
    assert warm_time < cold_time / 2  # one probe command, nothing installed


def test_changed_sources_do_not_rebuild_the_dependency_env(
    ssh_host, host_cache: str, frozen_sources: Path
) -> None:
    cache = host_cache
    first = ensure_mhtest(ssh_host, remote_cache=cache)
    marker = Path(first.python).parent.parent / bootstrap.READY
    stamp = marker.stat().st_mtime_ns
    (frozen_sources / "hosts" / "edited_marker.py").write_text("EDITED = True\n")
    second = ensure_mhtest(ssh_host, remote_cache=cache)
    assert second.cold  # new sources were sent...
    assert second.python == first.python  # ...into the same dependency environment
    assert marker.stat().st_mtime_ns == stamp
    assert second.env["PYTHONPATH"] != first.env["PYTHONPATH"]
    out = run_mhtest(
        ssh_host, second, "from mhtest.hosts.edited_marker import EDITED; print(EDITED)"
    )
    assert out == "True\n"


def test_sources_nobody_used_for_a_week_go_when_new_ones_come(
    ssh_host, host_cache: str, frozen_sources: Path
) -> None:
    """A host kept every version of mhtest's sources it was ever sent."""
    ensure_mhtest(ssh_host, remote_cache=host_cache)
    old, recent = Path(host_cache) / "src-0ld", Path(host_cache) / "src-recent"
    for directory, age_days in ((old, 10), (recent, 2)):
        directory.mkdir()
        (directory / bootstrap.READY).touch()
        stamp = time.time() - age_days * 86400
        os.utime(directory / bootstrap.READY, (stamp, stamp))
    (frozen_sources / "hosts" / "edited_again.py").write_text("AGAIN = True\n")
    fresh = ensure_mhtest(ssh_host, remote_cache=host_cache)
    assert fresh.cold
    assert not old.exists() and recent.exists()
    assert Path(fresh.env["PYTHONPATH"]).exists()


def test_host_without_that_python_is_a_one_line_error(ssh_host, tmp_path: Path) -> None:
    with pytest.raises(HostError) as err:
        ensure_mhtest(ssh_host, python="/nonexistent/python3", remote_cache=str(tmp_path))
    message = str(err.value)
    assert "/nonexistent/python3 not found" in message and ssh_host.name in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs for the full-disk case needs root")
def test_full_disk_is_reported(ssh_host, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(HostError) as err:
            ensure_mhtest(ssh_host, remote_cache=str(small / "cache"))
        message = str(err.value)
        assert "disk full" in message and ssh_host.name in message and "\n" not in message
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_local_host_needs_nothing_installed() -> None:
    env = ensure_mhtest(LocalHost())
    host = LocalHost()
    assert env.python and not env.cold
    out = host.run(f"{env.python} -m mhtest --help", env=env.env)
    assert "usage" in out.stdout


def test_the_wheelhouse_is_built_once_when_hosts_ask_together(tmp_path, monkeypatch) -> None:
    """Three hosts set up at once built the controller's wheels three times, racing."""
    import threading

    monkeypatch.setenv("MHTEST_CACHE_DIR", str(tmp_path / "cache"))
    builds = []

    def fake_pip(command, **kwargs):  # the slow part, replaced: count the builds
        builds.append(command)
        time.sleep(0.5)
        wheel_dir = Path(command[command.index("--wheel-dir") + 1])
        (wheel_dir / "pip-1-py3-none-any.whl").write_text("")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bootstrap.subprocess, "run", fake_pip)
    import platform
    import sys

    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    got = []
    threads = [
        threading.Thread(
            target=lambda: got.append(bootstrap.wheelhouse(version, platform.machine()))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(builds) == 1, f"built {len(builds)} times"
    assert len(set(got)) == 1 and (got[0] / bootstrap.READY).exists()
