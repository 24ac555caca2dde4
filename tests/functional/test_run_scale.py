"""Many local tests at once: thousands running together, and the open-files limit.

The tests here are held at a barrier: each marks that it runs, then waits for a shared
lock that this test holds (`flock -s`, no CPU spent waiting) until every one of them has
marked. So they all run at the same moment, each holding its event pipe in the runner.
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Run, mhtest_command, running_mhtest, user_errors

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1)")

HELD_SH = """\
#!/bin/sh
echo "$(ulimit -Sn)" > "$MARKS/$$"
exec flock -s "$LOCK" true
"""

CROWD_PY = """\
from mhtest import MultiHostTest


class Crowd(MultiHostTest):
    default_local_workers = {workers}

    def test(self):
        self.run_workers([self.worker("held.sh", host) for host in self.hosts], timeout=200)
"""


def held_tests(base: Path, count: int) -> list[str]:
    """`count` copies of HELD_SH in `base`, their paths."""
    base.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = base / f"held{i:04d}.sh"
        path.write_text(HELD_SH)
        path.chmod(0o755)
        paths.append(str(path))
    return paths


class Barrier:
    """The lock the held tests wait for, and the marks they leave as they start."""

    def __init__(self, tmp_path: Path) -> None:
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.lock = tmp_path / "lock"
        self._fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.env = {"MARKS": str(self.marks), "LOCK": str(self.lock)}

    def wait_all(self, count: int, timeout: float) -> float:
        """Wait until `count` tests run at once (each has marked); how long it took."""
        started = time.monotonic()
        seen = 0
        while time.monotonic() - started < timeout:
            seen = len(os.listdir(self.marks))
            if seen >= count:
                return time.monotonic() - started
            time.sleep(0.1)
        pytest.fail(f"only {seen} of {count} tests were running after {timeout} s")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def limits_seen(self) -> set[str]:
        """The soft open-files limits the tests saw."""
        return {p.read_text().strip() for p in self.marks.iterdir()}


@pytest.fixture
def barrier(tmp_path: Path) -> Iterator[Barrier]:
    held = Barrier(tmp_path)
    try:
        yield held
    finally:
        held.release()


def finish(proc, args: list[str], results_dir: Path, timeout: float) -> Run:
    stdout, stderr = proc.communicate(timeout=timeout)
    return Run(args, proc.returncode, stdout, stderr, results_dir)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_2000_simple_tests_run_at_once(tmp_path, barrier) -> None:
    """Every test starts (no hang at ~500 on the fork server's socket) and all pass."""
    count = 2000
    refs = held_tests(tmp_path / "t", count)
    args = ["run", "--max-parallel", str(count), *refs]
    results = tmp_path / "results"
    with running_mhtest(args, tmp_path, results, env=barrier.env) as proc:
        took = barrier.wait_all(count, timeout=120)
        barrier.release()
        run = finish(proc, args, results, timeout=60)
    assert run.code == 0, run
    statuses = run.statuses()
    assert len(statuses) == count and set(statuses.values()) == {"PASS"}, run.stdout[-2000:]
    print(f"{count} tests running at once after {took:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_multihost_test_with_1000_local_workers(tmp_path, barrier) -> None:
    count = 1000
    base = tmp_path / "t"
    held_tests(base, 1)
    (base / "held0000.sh").rename(base / "held.sh")
    (base / "crowd.py").write_text(CROWD_PY.format(workers=count))
    args = ["run", str(base / "crowd.py")]
    results = tmp_path / "results"
    with running_mhtest(args, tmp_path, results, env=barrier.env) as proc:
        barrier.wait_all(count, timeout=120)
        barrier.release()
        run = finish(proc, args, results, timeout=90)
    assert run.code == 0, run
    crowd = run.result("crowd.py:Crowd.test")
    assert crowd["status"] == "PASS", crowd["fail_reason"]
    assert len(crowd["children"]) == count
    assert {c["status"] for c in crowd["children"]} == {"PASS"}


def limited(soft: int, hard: int | None = None):
    """A preexec_fn that sets RLIMIT_NOFILE (hard: unchanged when None)."""

    def apply() -> None:
        _, current = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current if hard is None else hard))

    return apply


def run_limited(args: list[str], tmp_path: Path, env: dict, preexec) -> object:
    import subprocess

    return subprocess.Popen(
        mhtest_command(args, tmp_path / "results"),
        cwd=tmp_path,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


@pytest.mark.timeout(120)
def test_soft_open_files_limit_is_raised_for_the_runner_only(tmp_path, barrier) -> None:
    """300 tests at once under a soft limit of 128: the runner raises its own; tests keep 128."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard open-files limit ({hard}) is too low for this test")
    count = 300
    args = ["run", "--max-parallel", str(count), *held_tests(tmp_path / "t", count)]
    proc = run_limited(args, tmp_path, barrier.env, limited(128))
    try:
        barrier.wait_all(count, timeout=60)
        barrier.release()
        run = finish(proc, args, tmp_path / "results", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert run.code == 0, run
    assert set(run.statuses().values()) == {"PASS"}
    assert barrier.limits_seen() == {"128"}


@pytest.mark.timeout(60)
def test_more_tests_at_once_than_the_hard_limit_allows_is_a_one_line_error(tmp_path) -> None:
    count = 300
    args = ["run", "--max-parallel", str(count), *held_tests(tmp_path / "t", count)]
    proc = run_limited(args, tmp_path, {}, limited(128, 128))
    run = finish(proc, args, tmp_path / "results", timeout=50)
    assert run.code == 2, run
    lines = user_errors(run.stderr)
    assert len(lines) == 1, run
    assert lines[0].startswith("mhtest run: error: 300 tests at once need about "), lines
    assert "the hard limit is 128 (ulimit -Hn)" in lines[0]
    assert "--max-parallel" in lines[0]
    assert not (tmp_path / "results").exists()  # no job started
