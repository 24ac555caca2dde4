"""What goes to a host with a test (mhtest.runners.payload), through the real CLI.

Only what the test needs, minus .mhtestignore and --remote-exclude; once per host (cached
there by content); streamed, so a large tree goes at the speed of a file transfer, in
bounded memory, and Ctrl-C stops it (and every other phase) at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mhtest.hosts import bootstrap

from .conftest import mhtest_command, wait_for

pytestmark = pytest.mark.timeout(120)

LISTS_PY = '''
import os

import helpers
from tools import fmt

from mhtest import Test


class Lists(Test):
    """Records the files beside it, as the host has them."""

    def test(self):
        here = os.path.dirname(os.path.abspath(__file__))
        found = []
        for top, dirs, files in os.walk(here):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found += [os.path.relpath(os.path.join(top, f), here) for f in files]
        with open(os.path.join(here, "named.txt")) as named:
            self.whiteboard = fmt(helpers.VALUE + named.read().strip())
        with open(os.path.join(self.outputdir, "files.json"), "w") as out:
            json_text = "[" + ",".join(f'"{name}"' for name in sorted(found)) + "]"
            out.write(json_text)
'''

LIB_SH = "#!/bin/sh\nfind . -type f | sort\ncat input.txt\n"


def suite(base: Path) -> Path:
    """A test directory: what the test needs, and what it does not."""
    files = {
        "lists.py": LISTS_PY,
        "helpers.py": "import deep\nVALUE = deep.PART\n",
        "deep.py": "PART = 'v'\n",
        "tools/__init__.py": "from .fmt import fmt\n",
        "tools/fmt.py": "def fmt(text):\n    return f'<{text}>'\n",
        "named.txt": "n\n",
        "lists.py.data/input.txt": "in\n",
        "lists.py.data/noise.log": "x\n",
        "unused.py": "",
        "unrelated.bin": "x" * 1000,
        "other_test.py": "",
        ".mhtestignore": "# logs stay here\n*.log\n",
    }
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def files_sent(result: dict) -> list[str]:
    return json.loads((Path(result["logdir"]) / "data" / "files.json").read_text())


def private_cache(tmp_path: Path) -> Path:
    """A host cache of its own (the warm environment and sources linked in)."""
    cache = tmp_path / "host-cache"
    cache.mkdir()
    real = Path(bootstrap.REMOTE_CACHE).expanduser()
    src_key = bootstrap.source_archive()[0]
    for entry in [*real.glob(f"env-{bootstrap.deps_key()}-*"), real / f"src-{src_key}"]:
        if entry.is_dir() and not entry.name.endswith((".tmp", ".wheels")):
            (cache / entry.name).symlink_to(entry)
    return cache


def test_only_what_the_test_needs_goes_and_only_once(mhtest, warm_hosts, tmp_path) -> None:
    (info,) = warm_hosts(1)
    tests = suite(tmp_path / "t")
    cache = private_cache(tmp_path)
    env = {"MHTEST_REMOTE_CACHE": str(cache)}
    args = ["run", str(tests / "lists.py"), "--hosts", info.alias, "--ssh-config", info.ssh_config]
    run = mhtest(*args, env=env)
    assert run.code == 0, run
    (result,) = run.results()["tests"]
    assert result["whiteboard"] == "<vn>"
    assert files_sent(result) == sorted(
        [
            "lists.py",
            "helpers.py",
            "deep.py",
            "tools/__init__.py",
            "tools/fmt.py",
            "named.txt",
            "lists.py.data/input.txt",
        ]
    )
    assert "of test files in" in (run.job_dir / "job.log").read_text()
    (cached,) = cache.glob("payload-*")
    assert not list(cache.glob("run-*")), "the run's private tree was left behind"
    # The same files again: nothing is sent.
    run = mhtest(*args, env=env)
    assert run.code == 0, run
    assert "of test files in" not in (run.job_dir / "job.log").read_text()
    # A changed file: sent again, under another key; an excluded one, and the whole
    # directory on request.
    (tests / "deep.py").write_text("PART = 'w'\n")
    run = mhtest(*args, "--remote-exclude", "named.txt", env=env)
    assert run.code == 1, run
    (result,) = run.results()["tests"]
    assert "named.txt" in result["fail_reason"]  # the test could not read it: excluded
    assert len(list(cache.glob("payload-*"))) == 2
    run = mhtest(*args, "--remote-send-dir", "--remote-exclude", "/unrelated.bin", env=env)
    assert run.code == 0, run
    sent = files_sent(run.results()["tests"][0])
    assert "unused.py" in sent and "other_test.py" in sent and ".mhtestignore" in sent
    assert "unrelated.bin" not in sent and "lists.py.data/noise.log" not in sent
    assert cached.exists()


def test_a_simple_test_gets_the_files_its_script_names(mhtest, warm_hosts, tmp_path) -> None:
    (info,) = warm_hosts(1)
    base = tmp_path / "t"
    base.mkdir()
    (base / "check.sh").write_text("#!/bin/sh\n. ./lib.sh\n")
    (base / "check.sh").chmod(0o755)
    (base / "lib.sh").write_text(LIB_SH)
    (base / "input.txt").write_text("in\n")
    (base / "unrelated.txt").write_text("no\n")
    run = mhtest(
        "run",
        str(base / "check.sh"),
        "--hosts",
        info.alias,
        "--ssh-config",
        info.ssh_config,
        env={"MHTEST_REMOTE_CACHE": str(private_cache(tmp_path))},
    )
    assert run.code == 0, run
    (result,) = run.results()["tests"]
    listed = (Path(result["logdir"]) / "stdout").read_text().split()
    assert listed == ["./check.sh", "./input.txt", "./lib.sh", "in"], listed


BIG = 300 << 20


def big_suite(tmp_path: Path) -> Path:
    base = tmp_path / "big"
    (base / "pass.py.data").mkdir(parents=True)
    (base / "pass.py").write_text(
        "from mhtest import Test\n\n\nclass Pass(Test):\n    def test(self):\n        pass\n"
    )
    with open(base / "pass.py.data" / "image.bin", "wb") as out:
        block = os.urandom(1 << 20)
        for _ in range(BIG >> 20):
            out.write(block)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["connect", "install", "upload", "run"])
def test_ctrl_c_ends_a_remote_run_within_2_s_in_every_phase(warm_hosts, tmp_path, phase) -> None:
    (info,) = warm_hosts(1)
    cache = tmp_path / "fresh-cache" if phase == "install" else private_cache(tmp_path)
    config = info.ssh_config
    silent = None
    if phase == "upload":
        test = big_suite(tmp_path) / "pass.py"
    else:
        test = tmp_path / "sleeps.py"
        test.write_text(
            "import time\n\nfrom mhtest import Test\n\n\nclass Sleeps(Test):\n"
            "    def test(self):\n        open(self.params.get('mark'), 'w').close()\n"
            "        time.sleep(60)\n"
        )
    if phase == "connect":  # a host that accepts the connection and never speaks SSH
        silent = socket.socket()
        silent.bind((info.address, 0))
        silent.listen(8)
        config = str(tmp_path / "ssh_config")
        Path(config).write_text(
            f"Host {info.alias}\n    HostName {info.address}\n"
            f"    Port {silent.getsockname()[1]}\n    User {info.user}\n"
        )
    results = tmp_path / "results"
    mark = tmp_path / "started"
    args = ["run", str(test), "--hosts", info.alias, "--ssh-config", config, "-p", f"mark={mark}"]
    env = {**os.environ, "MHTEST_REMOTE_CACHE": str(cache)}
    try:
        with subprocess.Popen(
            mhtest_command(args, results),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        ) as proc:
            try:
                started = _wait_for_phase(phase, proc, mark, cache)
                proc.send_signal(signal.SIGINT)
                asked = time.monotonic()
                out, err = proc.communicate(timeout=60)
                took = time.monotonic() - asked
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=30)
    finally:
        if silent is not None:
            silent.close()
    assert proc.returncode & 8, f"exit {proc.returncode}\n{out}\n{err}"
    assert took < 2, f"Ctrl-C in the {phase} phase took {took:.2f} s ({started})\n{out}\n{err}"
    (result,) = json.loads((results / "latest" / "results.json").read_text())["tests"]
    assert result["status"] == "INTERRUPT", result
    if phase == "upload":  # nothing half-received is left in the host's cache
        wait_for(lambda: not list(cache.glob("payload-*")), 10, "the partial payload to go")
        wait_for(lambda: not list(cache.glob("run-*")), 10, "the run's tree to go")


def _wait_for_phase(phase: str, proc: subprocess.Popen, mark: Path, cache: Path) -> Any:
    """Return once the run is in `phase`: what was seen."""
    if phase == "connect":
        time.sleep(1.5)
        return "connecting"
    if phase == "install":
        return wait_for(
            lambda: [p.name for p in cache.glob("env-*") if not p.name.endswith("-ready")],
            90,
            "the install to start",
        )[0]
    if phase == "upload":
        assert proc.stderr is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "of test files" in line:
                return line.strip()
        pytest.fail("the upload never started")
    return wait_for(mark.exists, 60, "the test to start")
