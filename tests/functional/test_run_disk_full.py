"""A results disk that fills up during a job: one clear line, the right exit code, every result.

The results directory is a real 1 MiB tmpfs (mounting needs root, as CI runs); the tests
fill it with their own output until writes fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import MHTEST

pytestmark = pytest.mark.timeout(90)

BIG_PY = """
from mhtest import Test


class Big(Test):
    def test(self):
        with open(self.outputdir + "/blob", "wb") as out:
            out.write(b"x" * 60000)
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the full-disk test needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_results_disk_is_one_line_and_results_json_has_every_test(
    small_disk: Path, write_tests, tmp_path
) -> None:
    tests = write_tests({"big.py": BIG_PY})
    count = 30
    proc = subprocess.run(
        [*MHTEST, "run", *[str(tests / "big.py")] * count, "--max-parallel", "2"]
        + ["--job-results-dir", str(small_disk)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode & 4 == 0, f"mhtest crashed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 3, proc  # tests failed (could not write), results incomplete
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ""
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR      :")]
    assert len(errors) == 1 and "--job-results-dir" in errors[0], proc.stdout
    job = (small_disk / "latest").resolve()
    results = json.loads((job / "results.json").read_text())
    assert len(results["tests"]) == count
    console = proc.stdout.splitlines()
    summary = next(ln for ln in console if ln.startswith("RESULTS"))
    on_disk = {s: sum(t["status"] == s for t in results["tests"]) for s in ("PASS", "ERROR")}
    assert f"PASS {on_disk['PASS']} " in summary and f"ERROR {on_disk['ERROR']} " in summary
    assert on_disk["PASS"] > 0 and on_disk["ERROR"] > 0
    for test in results["tests"]:
        if test["status"] == "ERROR":
            assert "No space left on device" in test["fail_reason"], test
    leftovers = [p for p in small_disk.rglob("*") if ".tmp" in p.name or p.name == ".space-reserve"]
    assert leftovers == []
