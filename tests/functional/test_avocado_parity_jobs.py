"""Jobs as Avocado 113 has them: results.json's keys, Avocado's own `jobs` command reading
mhtest's results, and --failfast, each run under both and compared."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .avocado_parity import avocado_bin, run_both, write_both

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STATUSES_PY = """
import logging

from FRAMEWORK import Test, skip


class Statuses(Test):
    def test_pass(self):
        self.whiteboard = "done"

    def test_fail(self):
        self.fail("it failed")

    def test_error(self):
        raise ValueError("broken")

    @skip("not today")
    def test_skip(self):
        pass

    def test_cancel(self):
        self.cancel("no hardware")

    def test_warn(self):
        self.log.warning("careful")
"""


def _raw(base: Path, where: str) -> dict:
    return json.loads((base / where / "latest" / "results.json").read_text())


def test_results_json_has_every_key_avocado_writes(tmp_path: Path) -> None:
    write_both(tmp_path, {"statuses.py": STATUSES_PY})
    both = run_both(tmp_path, ["statuses.py"])
    avocado, mhtest = _raw(tmp_path, "av-results"), _raw(tmp_path, "mh-results")
    assert set(avocado) - set(mhtest) == set(), both.mhtest_output
    for key in ("total", "pass", "failures", "errors", "skip", "warn", "cancel", "interrupt"):
        assert mhtest[key] == avocado[key], key
    av_tests = {t["id"]: t for t in avocado["tests"]}
    mh_tests = {t["id"]: t for t in mhtest["tests"]}
    assert sorted(mh_tests) == sorted(av_tests)
    for test_id, av in av_tests.items():
        mh = mh_tests[test_id]
        assert set(av) - set(mh) == set(), test_id
        assert (mh["status"], mh["whiteboard"]) == (av["status"], av["whiteboard"]), test_id
        assert Path(mh["logfile"]) == Path(mh["logdir"]) / "debug.log"
        assert Path(mh["logfile"]).is_file()
        assert mh["time_elapsed"] >= 0 and mh["actual_time_end"] >= mh["actual_time_start"]
        # mhtest's own spellings of the keys both have (docs/results.md): the name keeps its
        # number, a missing reason is null, tags are a list.
        assert mh["name"] == test_id and av["name"] == test_id.split("-", 1)[1]
        assert (mh["fail_reason"] or "<unknown>") == av["fail_reason"], test_id


def _avocado_jobs(args: list[str], logs_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "avocado-jobs.conf"
    config.write_text(f"[datadir.paths]\nlogs_dir = {logs_dir}\n")
    command = [str(avocado_bin()), "--config", str(config), "jobs", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_avocados_jobs_command_reads_mhtest_jobs(tmp_path: Path) -> None:
    write_both(tmp_path, {"statuses.py": STATUSES_PY})
    run_both(tmp_path, ["statuses.py"])
    mhtest = _raw(tmp_path, "mh-results")
    listed = _avocado_jobs(["list"], tmp_path / "mh-results", tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(mhtest["job_id"]))
    assert line.split()[-2:] == ["6", "(1/1/1/1)"]  # total (pass/skip/errors/failures)
    job_dir = (tmp_path / "mh-results" / "latest").resolve()
    for ref in (str(job_dir), mhtest["job_id"][:10]):
        shown = _avocado_jobs(["show", ref], tmp_path / "mh-results", tmp_path)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        for test in mhtest["tests"]:
            row = next(ln for ln in shown.stdout.splitlines() if ln.startswith(test["id"]))
            assert row.split()[-1] == test["status"], row
        assert "PASS 1 | ERROR 1 | FAIL 1 | SKIP 1 |WARN 1 | INTERRUPT 0 | CANCEL 1" in shown.stdout


FAILFAST_PY = """
from FRAMEWORK import Test


class Fast(Test):
    def test_1(self):
        pass

    def test_2(self):
        self.fail("first failure")

    def test_3(self):
        pass

    def test_4(self):
        self.fail("never runs")
"""


def test_failfast_is_avocados(tmp_path: Path) -> None:
    write_both(tmp_path, {"fast.py": FAILFAST_PY})
    both = run_both(
        tmp_path,
        ["fast.py"],
        ("--failfast",),
        mhtest_args=("--max-parallel", "1"),
        avocado_args=("--max-parallel-tasks", "1"),
    )
    # The tests that ran end alike; Avocado leaves those not started out of its list and
    # counts them SKIP, mhtest lists them INTERRUPT "not started" (as a Ctrl-C does).
    assert sorted(both.avocado) == ["fast.py:Fast.test_1", "fast.py:Fast.test_2"]
    for name in both.avocado:
        assert both.outcome("mhtest", name) == both.outcome("avocado", name)
    for name in ("fast.py:Fast.test_3", "fast.py:Fast.test_4"):
        status, reason = both.outcome("mhtest", name)
        assert status == "INTERRUPT"
        assert reason == "not started: failfast: 2-fast.py:Fast.test_2 ended FAIL"
    assert _raw(tmp_path, "av-results")["skip"] == _raw(tmp_path, "mh-results")["interrupt"] == 2
    codes = [out.splitlines()[1] for out in (both.avocado_output, both.mhtest_output)]
    assert codes == ["exit 9", "exit 9"]  # tests failed | job interrupted, in both
