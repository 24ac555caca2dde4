"""The results tree of `mhtest run`: names, links, logs, results.json/.tap/.xml, console."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import mhtest_command, running_mhtest, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"

MIXED_PY = '''
from mhtest import Test, skip


class Mixed(Test):
    """:mhtest: tags=mixed"""

    def test_pass(self):
        self.whiteboard = "wb"

    def test_fail(self):
        self.fail('bad <xml> & "quotes" ]]> \\x00\\x1b[31m nul and escape \\ud7ff\\ufffe end')

    def test_error(self):
        raise KeyError("x")

    @skip("later")
    def test_skip(self):
        pass

    def test_warn(self):
        self.log.warning("careful")

    def test_cancel(self):
        self.cancel("not here")


class Slow(Test):
    timeout = 1

    def test(self):
        import time

        time.sleep(10)
'''

STATUS_OF = {
    "Mixed.test_pass": "PASS",
    "Mixed.test_fail": "FAIL",
    "Mixed.test_error": "ERROR",
    "Mixed.test_skip": "SKIP",
    "Mixed.test_warn": "WARN",
    "Mixed.test_cancel": "CANCEL",
    "Slow.test": "INTERRUPT",
}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """Two jobs of MIXED_PY into one results dir (the second is `latest`)."""
    import textwrap

    from .conftest import Run

    base = tmp_path_factory.mktemp("mixed")
    (base / "t").mkdir()
    (base / "t" / "mixed.py").write_text(textwrap.dedent(MIXED_PY))
    runs = []
    for _ in range(2):
        args = ["run", "t/mixed.py", "--max-parallel", "4"]
        proc = subprocess.run(
            mhtest_command(args, base / "results"),
            cwd=base,
            capture_output=True,
            text=True,
            timeout=50,
            stdin=subprocess.DEVNULL,
        )
        runs.append(Run(args, proc.returncode, proc.stdout, proc.stderr, base / "results"))
    return runs


def _job_id(run) -> str:
    return re.search(r"^JOB ID +: ([0-9a-f]+)$", run.stdout, re.M).group(1)


@pytest.mark.timeout(120)
def test_results_tree_names_latest_and_id(mixed_run):
    first, second = mixed_run
    assert first.code == second.code == 1, first
    jobs = sorted(p for p in first.results_dir.iterdir() if p.name.startswith("job-"))
    assert len(jobs) == 2
    for run in mixed_run:
        job_id = _job_id(run)
        assert re.fullmatch(r"[0-9a-f]{40}", job_id)
        job = first.results_dir / [j.name for j in jobs if j.name.endswith(job_id[:7])][0]
        assert re.fullmatch(r"job-\d{4}-\d\d-\d\dT\d\d\.\d\d-[0-9a-f]{7}", job.name)
        assert (job / "id").read_text().strip() == job_id
        assert json.loads((job / "results.json").read_text())["job_id"] == job_id
        log_line = re.search(r"^JOB LOG +: (.*)$", run.stdout, re.M).group(1)
        assert Path(log_line) == job / "job.log"
        assert job_id in (job / "job.log").read_text()
    latest = first.results_dir / "latest"
    assert latest.is_symlink()
    assert latest.resolve().name.endswith(_job_id(second)[:7])
    # No temporary link left behind by the atomic update.
    assert sorted(p.name for p in first.results_dir.iterdir() if not p.name.startswith("job-")) == [
        "latest"
    ]


@pytest.mark.timeout(120)
def test_per_test_directories(mixed_run):
    run = mixed_run[1]
    data = run.results()
    dirs = sorted(p.name for p in (run.job_dir / "test-results").iterdir())
    expected = sorted(f"{t['uid']}-t_mixed.py:{t['ref'].split(':', 1)[1]}" for t in data["tests"])
    assert dirs == expected
    for test in data["tests"]:
        test_dir = Path(test["logdir"])
        assert test_dir.parent == run.job_dir / "test-results"
        assert "START" in (test_dir / "debug.log").read_text()
        assert (test_dir / "data").is_dir()
        if test["status"] != "INTERRUPT":  # a killed test never wrote its whiteboard
            assert (test_dir / "whiteboard").read_text() == test["whiteboard"]
    assert run.result("Mixed.test_pass")["whiteboard"] == "wb"


@pytest.mark.timeout(120)
def test_results_json_contents(mixed_run):
    run = mixed_run[1]
    data = run.results()
    assert {t["ref"].split(":", 1)[1]: t["status"] for t in data["tests"]} == STATUS_OF
    assert [t["uid"] for t in data["tests"]] == list(range(1, 8))
    assert (data["total"], data["pass"], data["failures"], data["errors"]) == (7, 1, 1, 1)
    assert (data["skip"], data["warn"], data["cancel"], data["interrupt"]) == (1, 1, 1, 1)
    assert data["interrupted"] is False
    assert data["end"] >= data["start"] and data["time"] > 0.9
    fail = run.result("Mixed.test_fail")
    assert fail["fail_reason"].startswith('bad <xml> & "quotes" ]]> \x00\x1b[31m')
    assert fail["tags"] == ["mixed"]
    assert all(t["end"] >= t["start"] > 0 for t in data["tests"])


@pytest.mark.timeout(120)
def test_results_xml_is_valid_junit(mixed_run):
    from lxml import etree

    run = mixed_run[1]
    schema = etree.XMLSchema(etree.parse(str(DATA / "junit.xsd")))
    doc = etree.parse(str(run.job_dir / "results.xml"))
    assert schema.validate(doc), schema.error_log
    suite = doc.getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures")) == ("7", "1")
    assert suite.get("errors") == "2"  # ERROR and INTERRUPT
    assert suite.get("skipped") == "2"  # SKIP and CANCEL
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(STATUS_OF)
    assert all(c.get("classname") == "t/mixed.py" for c in cases.values())
    failure = cases["Mixed.test_fail"].find("failure")
    # The characters XML can carry arrive intact; those it cannot are dropped, not fatal.
    assert failure.get("message").startswith('bad <xml> & "quotes" ]]> [31m nul and escape')
    assert failure.get("message").endswith("\ud7ff end")
    assert cases["Slow.test"].find("error").get("message") == "Test interrupted: Timeout reached"
    assert cases["Mixed.test_pass"].find("failure") is None
    assert cases["Mixed.test_skip"].find("skipped") is not None
    assert cases["Mixed.test_cancel"].find("skipped") is not None


def parse_tap(text: str) -> list[tuple[bool, int, str, str]]:
    """A strict reader for TAP 13: [(ok, number, description, directive)]."""
    lines = text.splitlines()
    assert lines[0] == "TAP version 13"
    plan = re.fullmatch(r"1\.\.(\d+)", lines[1])
    assert plan, lines[1]
    tests, in_yaml = [], False
    for line in lines[2:]:
        if in_yaml:
            assert line.startswith("  "), line
            in_yaml = line != "  ..."
            continue
        if line == "  ---":
            in_yaml = True
            continue
        m = re.fullmatch(r"(not ok|ok) (\d+) - ([^#]*?)(?: # (.*))?", line)
        assert m, f"not a TAP test line: {line!r}"
        tests.append((m.group(1) == "ok", int(m.group(2)), m.group(3), m.group(4) or ""))
    assert not in_yaml
    assert [t[1] for t in tests] == list(range(1, int(plan.group(1)) + 1))
    return tests


@pytest.mark.timeout(120)
def test_results_tap_parses(mixed_run):
    run = mixed_run[1]
    tests = parse_tap((run.job_dir / "results.tap").read_text())
    by_name = {desc.split(":", 1)[1]: (ok, directive) for ok, _, desc, directive in tests}
    assert set(by_name) == set(STATUS_OF)
    for name, status in STATUS_OF.items():
        ok, directive = by_name[name]
        assert ok == (status in ("PASS", "WARN", "SKIP", "CANCEL")), name
        if status in ("SKIP", "CANCEL"):
            assert directive.startswith("SKIP"), name


@pytest.mark.timeout(120)
def test_console_on_a_pipe_is_plain_lines(mixed_run):
    for run in mixed_run:
        assert "\r" not in run.stdout and "\x1b" not in run.stdout.replace("\x1b[31m", "")
        # The only escape allowed is the one the test itself put in its fail reason.
        lines = [ln for ln in run.stdout.splitlines() if re.match(r" \(\d+/7\) ", ln)]
        assert len(lines) == 7
        assert not any("\x1b" in ln for ln in lines if "test_fail" not in ln)


LONG_PY = """
import os
import time

from mhtest import Test


class Quick(Test):
    def test(self):
        pass


class Waits(Test):
    def test(self):
        # Holds the job open until the test suite creates the release file (or 20 s pass).
        release = os.environ["RELEASE"]
        for _ in range(2000):
            if os.path.exists(release):
                return
            time.sleep(0.01)
        self.fail("never released")
"""


@pytest.mark.timeout(60)
def test_results_json_is_updated_after_every_test_end(write_tests, tmp_path):
    write_tests({"long.py": LONG_PY})
    release = tmp_path / "release"
    results = tmp_path / "results"
    args = ["run", "t/long.py", "--max-parallel", "2"]
    with running_mhtest(args, tmp_path, results, {"RELEASE": str(release)}) as proc:
        try:

            def quick_done():
                path = results / "latest" / "results.json"
                if not path.exists():
                    return None
                data = json.loads(path.read_text())  # never a half-written file
                return data if data["tests"] else None

            data = wait_for(quick_done, timeout=20, what="a results.json listing Quick")
            assert proc.poll() is None, "the job ended before the check"
            assert [(t["ref"], t["status"]) for t in data["tests"]] == [
                ("t/long.py:Quick.test", "PASS")
            ]
            assert data["total"] == 2 and data["pass"] == 1
        finally:
            release.touch()
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    final = json.loads((results / "latest" / "results.json").read_text())
    assert [t["status"] for t in final["tests"]] == ["PASS", "PASS"]


@pytest.mark.timeout(60)
def test_console_on_a_terminal_shows_a_live_line(write_tests, tmp_path):
    """On a terminal: colours and a live `running:` line that each result line replaces."""
    import pty
    import select

    write_tests({"long.py": LONG_PY})
    release = tmp_path / "release"
    master, slave = pty.openpty()
    cmd = mhtest_command(["run", "t/long.py:Waits", "--max-parallel", "1"], tmp_path / "results")
    env = {**os.environ, "RELEASE": str(release)}
    output = b""
    with subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    ) as proc:
        os.close(slave)
        try:
            # The live line appears while the test waits; then the test is released.
            deadline = time.monotonic() + 20
            while b"running:" not in output and time.monotonic() < deadline:
                if select.select([master], [], [], 0.1)[0]:
                    output += os.read(master, 65536)
            release.touch()
            while True:
                if select.select([master], [], [], 0.1)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # the terminal closed: mhtest is done
                        break
                    if not chunk:
                        break
                    output += chunk
                elif proc.poll() is not None:
                    break
                elif time.monotonic() > deadline + 20:
                    pytest.fail("mhtest did not finish on the terminal")
        finally:
            release.touch()
            os.close(master)
            proc.wait(timeout=30)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert re.search(r"\[0/1\] running: 1-t/long.py:Waits.test \(\d+s\)", text), text
    # The result line erases the live line first (ESC[2K) and is coloured (green: PASS).
    assert re.search(
        r"\x1b\[2K(\x1b\[[0-9;]*m)*\x1b\[32m \(1/1\) t/long.py:Waits.test: PASS", text
    ), text


@pytest.mark.timeout(60)
def test_default_results_dir_is_under_home(write_tests, tmp_path):
    from .conftest import MHTEST

    write_tests({"long.py": LONG_PY})
    home = tmp_path / "home"
    proc = subprocess.run(
        [*MHTEST, "run", "t/long.py:Quick"],
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    latest = home / "mhtest" / "job-results" / "latest"
    assert json.loads((latest / "results.json").read_text())["pass"] == 1
    assert f"JOB LOG    : {latest.resolve()}/job.log" in proc.stdout
