"""Old jobs through the real CLI: `mhtest jobs list/show`, `mhtest replay`, `--failfast`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TESTS = {
    "mixed.py": """
        from mhtest import Test


        class Mixed(Test):
            def test_1_pass(self):
                self.whiteboard = str(self.params.get("x"))

            def test_2_fail(self):
                self.fail("failed with x=%s" % self.params.get("x"))

            def test_3_error(self):
                raise RuntimeError("size %s" % self.params.get("size", "*/arch/*"))

            def test_4_pass(self):
                pass
    """,
}

VARIANTS = """
arch: !mux
    small:
        size: 1
    big:
        size: 2
"""


def _names(run) -> list[tuple[str, str, str | None]]:
    tests = sorted(run.results()["tests"], key=lambda t: t["uid"])
    return [(t["name"].split("-", 1)[1], t["status"], t["fail_reason"]) for t in tests]


def test_failfast_stops_at_the_first_test_that_does_not_pass(mhtest, write_tests) -> None:
    tests = write_tests(TESTS)
    run = mhtest("run", "mixed.py", "--failfast", "--max-parallel", "1", cwd=tests)
    reason = "not started: failfast: 2-mixed.py:Mixed.test_2_fail ended FAIL"
    assert [(n.split(":")[1], s, r) for n, s, r in _names(run)] == [
        ("Mixed.test_1_pass", "PASS", None),
        ("Mixed.test_2_fail", "FAIL", "failed with x=None"),
        ("Mixed.test_3_error", "INTERRUPT", reason),
        ("Mixed.test_4_pass", "INTERRUPT", reason),
    ], run
    assert run.code == 1 | 8, run  # tests failed, job interrupted: Avocado's 9 too
    assert "Job interrupted: failfast: 2-mixed.py:Mixed.test_2_fail ended FAIL" in run.stdout
    # Without it, everything runs.
    run = mhtest("run", str(tests / "mixed.py"), "--max-parallel", "1")
    assert [s for _, s, _ in _names(run)] == ["PASS", "FAIL", "ERROR", "PASS"]


def test_jobs_list_and_show(mhtest, write_tests) -> None:
    tests = write_tests(TESTS)
    first = mhtest("run", str(tests / "mixed.py:test_1")).results()["job_id"]
    second = mhtest("run", str(tests / "mixed.py"), "-m", str(_yaml(tests)))
    results = ["--job-results-dir", str(second.results_dir)]
    listed = mhtest("jobs", "list", *results)
    assert listed.code == 0, listed
    ids = [line.split()[0] for line in listed.stdout.splitlines()]
    assert ids == [second.results()["job_id"], first]
    assert listed.stdout.splitlines()[0].endswith(" 8 (4/0/2/2)")
    for job in ("latest", second.results()["job_id"][:7], str(second.job_dir)):
        shown = mhtest("jobs", "show", job, *results)
        assert shown.code == 0, shown
        assert f"JOB ID     : {second.results()['job_id']}" in shown.stdout
        assert "COMMAND    : mhtest run " in shown.stdout
        assert "RESULTS    : PASS 4 | FAIL 2 | ERROR 2 |" in shown.stdout
        row = next(line for line in shown.stdout.splitlines() if line.startswith("6-"))
        assert row.startswith("6-t/mixed.py:Mixed.test_3_error;run-arch-big-"), row
        assert row.split()[-3:] == ["ERROR", "size", "2"], row
    missing = mhtest("jobs", "show", "abcdef0123", *results)
    assert missing.code == 2 and "no job abcdef0123" in missing.stderr


def _yaml(tests: Path) -> Path:
    path = tests / "variants.yaml"
    path.write_text(VARIANTS)
    return path


def test_replay_runs_the_same_tests_with_their_params_and_variants(mhtest, write_tests) -> None:
    tests = write_tests(TESTS)
    yaml = _yaml(tests)
    old = mhtest("run", "mixed.py", "-m", str(yaml), "-p", "x=7", "-p", "db_password=pw", cwd=tests)
    results = ["--job-results-dir", str(old.results_dir)]
    old_names, old_id, old_dir = _names(old), old.results()["job_id"], old.job_dir
    yaml.unlink()  # a replay takes the variants from the job, not from the file
    again = mhtest("replay", *results, cwd=tests.parent)  # it goes where the old job ran
    assert again.code == 1, again
    assert again.results()["job_id"] != old_id
    assert _names(again) == old_names
    wb = {n: t["whiteboard"] for n, t in _by_name(again).items() if "test_1" in n}
    assert set(wb.values()) == {"7"}
    assert "db_password" in again.stderr  # a secret is not kept: said so
    replay = json.loads((again.job_dir / "jobdata" / "replay.json").read_text())
    assert replay["source"] == old_id
    # Only what failed or errored, with a param given again.
    only = mhtest("replay", old_id, "--status", "fail,ERROR", "-p", "x=8", *results)
    assert only.code == 1, only
    assert [(n, s) for n, s, _ in _names(only)] == [
        (n, s) for n, s, _ in old_names if s in ("FAIL", "ERROR")
    ]
    assert {r for _, s, r in _names(only) if s == "FAIL"} == {"failed with x=8"}
    # A replay of that replay keeps to its tests; statuses name none: one line, exit 2.
    assert len(mhtest("replay", *results).results()["tests"]) == 4
    none = mhtest("replay", str(old_dir), "--status", "WARN", *results)
    assert none.code == 2 and "nothing to replay" in none.stderr
    bad = mhtest("replay", "--status", "GREAT", *results)
    assert bad.code == 2 and "unknown status 'GREAT'" in bad.stderr


def _by_name(run) -> dict:
    return {t["name"]: t for t in run.results()["tests"]}


@pytest.mark.slow
def test_replay_on_the_same_hosts_with_variants(mhtest, write_tests, warm_hosts) -> None:
    """Variants travel to hosts with their tests; a replay goes back to the same hosts."""
    (info,) = warm_hosts(1)
    tests = write_tests(TESTS)
    hosts = ["--hosts", f"{info.alias},local", "--ssh-config", info.ssh_config]
    refs = [str(tests / "mixed.py:test_[13]"), "-m", str(_yaml(tests))]
    old = mhtest("run", *refs, *hosts, timeout=300)
    outcomes = sorted(
        ((t["host"], t["status"], t["fail_reason"]) for t in old.results()["tests"]), key=str
    )
    failed = [(host, "ERROR", f"size {size}") for host in (info.alias, "local") for size in (1, 2)]
    passed = [(host, "PASS", None) for host in (info.alias, "local") for _ in (1, 2)]
    assert outcomes == sorted(failed + passed, key=str), old
    results = ["--job-results-dir", str(old.results_dir)]
    again = mhtest("replay", "--status", "ERROR", *results, timeout=300)
    outcomes = sorted(
        ((t["host"], t["status"], t["fail_reason"]) for t in again.results()["tests"]), key=str
    )
    assert outcomes == sorted(failed, key=str), again
