"""Helpers for running the real `mhtest` CLI as a subprocess and reading what it leaves.

``mhtest`` (function fixture)
    ``mhtest(*args, cwd=None, env=None, timeout=50) -> Run``: runs ``python3 -m mhtest ARGS``
    in ``cwd`` (default: the test's tmp_path); for ``run``, ``--job-results-dir`` points into
    tmp_path unless the test gives its own. ``Run`` has ``code``, ``stdout``, ``stderr``,
    ``job_dir`` (the directory ``latest`` names), ``results()`` (results.json) and
    ``result(ref_part)`` (the results.json entry whose ref is, or else contains, ``ref_part``).
``running_mhtest(args, cwd, results_dir, env)`` (context manager)
    The same command started in the background, for tests that act while it runs.
``write_tests`` (function fixture)
    ``write_tests({"name.py": source, ...}, executable=("x.sh",)) -> Path``: files in
    ``tmp_path/t`` (dedented), the directory returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MHTEST = [sys.executable, "-m", "mhtest"]


def user_errors(stderr: str) -> list[str]:
    """Lines of stderr other than plugin-load warnings (tested on their own)."""
    return [ln for ln in stderr.splitlines() if not ln.startswith("mhtest: warning: plugin ")]


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Wait until every pid is gone; return those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if pid_alive(p)]
        if alive:
            time.sleep(0.05)
    return alive


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `predicate` until it returns something true; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")


def fork_servers_ahead(argvs: list[list[str]]) -> list:
    """fork_server_ahead(argv) for each argv, in a new process of this Python (a job's fork
    server is forked only from a single-threaded process, and this one may have threads of
    earlier tests' connections): for each, None (no server) or [serving?, its args[1:]]."""
    code = (
        "import json, sys\n"
        "from mhtest.runners.forkserver import fork_server_ahead\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    server = fork_server_ahead(argv)\n"
        "    if server is None:\n"
        "        out.append(None)\n"
        "        continue\n"
        "    try:\n"
        "        out.append([server.proc.poll() is None, list(server.proc.args[1:])])\n"
        "    finally:\n"
        "        server.close()\n"
        "    assert server.proc.returncode is not None\n"
        "print(json.dumps(out))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Run:
    """A finished `mhtest` command."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    results_dir: Path

    @property
    def job_dir(self) -> Path:
        return (self.results_dir / "latest").resolve()

    def results(self) -> dict[str, Any]:
        return json.loads((self.job_dir / "results.json").read_text())

    def result(self, ref_part: str) -> dict[str, Any]:
        tests = self.results()["tests"]
        found = [t for t in tests if t["ref"] == ref_part] or [
            t for t in tests if ref_part in t["ref"]
        ]
        assert len(found) == 1, f"{ref_part!r} matches {[t['ref'] for t in found]}"
        return found[0]

    def statuses(self) -> dict[str, str]:
        """{ref: status} from results.json."""
        return {t["ref"]: t["status"] for t in self.results()["tests"]}

    def __str__(self) -> str:
        return (
            f"$ mhtest {' '.join(self.args)}\nexit {self.code}\n--- stdout\n{self.stdout}"
            f"--- stderr\n{self.stderr}"
        )


def mhtest_command(args: list[str], results_dir: Path) -> list[str]:
    """The command line for `mhtest ARGS`, with the results dir added to `run`."""
    if args and args[0] == "run" and "--job-results-dir" not in args:
        args = [*args, "--job-results-dir", str(results_dir)]
    return [*MHTEST, *args]


@contextlib.contextmanager
def running_mhtest(
    args: list[str], cwd: Path, results_dir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """`mhtest ARGS` started in the background (text pipes); killed if still running at exit."""
    with subprocess.Popen(
        mhtest_command(args, results_dir),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)


@pytest.fixture
def mhtest(tmp_path: Path) -> Callable[..., Run]:
    results_dir = tmp_path / "results"

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout=50
    ) -> Run:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            mhtest_command(list(args), results_dir),
            cwd=cwd or tmp_path,
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(list(args), proc.returncode, proc.stdout, proc.stderr, results_dir)

    return run


@pytest.fixture
def write_tests(tmp_path: Path) -> Callable[..., Path]:
    def write(files: dict[str, str], executable: Iterable[str] = ()) -> Path:
        base = tmp_path / "t"
        for name, source in files.items():
            path = base / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).lstrip("\n"))
            if name in executable:
                path.chmod(0o755)
        return base

    return write
