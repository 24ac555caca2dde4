"""Ctrl-C during remote tests: every test's results come back, however it takes SIGTERM.

The grace periods are staggered: the host's runner kills a test that ignores SIGTERM and
sends its results well before the controller stops waiting for them, and the waits above
(a multi-host test's workers, the job) are longer still.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import MHTEST, wait_for

pytestmark = pytest.mark.timeout(120)

STUBBORN_PY = '''
import os
import signal
import time

from mhtest import MultiHostTest, Test


class Stubborn(Test):
    """Ignores SIGTERM: only a kill stops it."""

    def test(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(os.path.join(self.outputdir, "marker"), "w") as out:
            out.write("written before Ctrl-C")
        self.log.info("ignoring SIGTERM from now on")
        server = os.environ["SSH_CONNECTION"].split()[2]
        with open(os.path.join(self.params.get("marks"), server + self.name[-3:]), "w") as out:
            out.write(str(os.getpid()))
        time.sleep(120)


class Fanout(MultiHostTest):
    def test(self):
        self.run_workers([self.worker("stubborn.py:Stubborn.test", h) for h in self.hosts])
'''


def interrupt(ref: str, infos: list, tmp_path: Path) -> list[dict]:
    """Run REF on `infos`, Ctrl-C it once a test per host has started; the results."""
    marks = tmp_path / "marks"
    marks.mkdir()
    results = tmp_path / "results"
    args = [
        *MHTEST,
        "run",
        ref,
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
        "-p",
        f"marks={marks}",
        "--job-results-dir",
        str(results),
    ]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    ) as proc:
        try:
            wait_for(lambda: len(list(marks.iterdir())) == len(infos), 60, "the tests to start")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    assert proc.returncode & 8, f"exit {proc.returncode}\n{out}\n{err}"
    return json.loads((results / "latest" / "results.json").read_text())["tests"]


def assert_stopped_with_its_files(result: dict) -> None:
    assert result["status"] == "INTERRUPT", result
    logdir = Path(result["logdir"])
    assert (logdir / "data" / "marker").read_text() == "written before Ctrl-C", result
    assert "ignoring SIGTERM" in (logdir / "debug.log").read_text()


def test_ctrl_c_brings_back_the_results_of_tests_that_ignore_sigterm(
    write_tests, warm_hosts, tmp_path
) -> None:
    """Three such tests at once (one per host): each ends INTERRUPT with its files."""
    infos = warm_hosts(3)
    tests = write_tests({"stubborn.py": STUBBORN_PY})
    results = interrupt(f"{tests / 'stubborn.py'}:Stubborn", infos, tmp_path)
    assert sorted(t["host"] for t in results) == sorted(i.alias for i in infos)
    for result in results:
        assert_stopped_with_its_files(result)


def test_ctrl_c_stops_remote_workers_as_interrupt_with_their_results(
    write_tests, warm_hosts, tmp_path
) -> None:
    infos = warm_hosts(2)
    tests = write_tests({"stubborn.py": STUBBORN_PY})
    (result,) = interrupt(f"{tests / 'stubborn.py'}:Fanout", infos, tmp_path)
    assert result["status"] == "INTERRUPT", result
    children = result["children"]
    assert sorted(c["host"] for c in children) == sorted(i.alias for i in infos), result
    for child in children:
        assert_stopped_with_its_files(child)
