"""Third-party plugins: installed for real with pip, found through their entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import user_errors

PLUGINS = Path(__file__).resolve().parents[1] / "data" / "plugins"

PASS_PY = """
from mhtest import Test


class Pass(Test):
    def test(self):
        pass

    def test_two(self):
        pass
"""


def build_wheel(package: Path, wheel_dir: Path) -> Path:
    """Pack `package` (modules + entry_points.txt) into a pure-Python wheel, as a build would.

    Done here rather than by setuptools so the test needs no network and no `wheel` package.
    """
    import base64
    import hashlib
    import zipfile

    dist = package.name.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    files = {p.name: p.read_bytes() for p in sorted(package.glob("*.py"))}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {package.name}\nVersion: 1.0\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: mhtest-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = (package / "entry_points.txt").read_bytes()
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = wheel_dir / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory) -> dict[str, Path]:
    """pip-install each package of tests/data/plugins into its own --target directory."""
    base = tmp_path_factory.mktemp("plugins")
    targets, procs = {}, []
    for package in sorted(p for p in PLUGINS.iterdir() if p.is_dir()):
        wheel = build_wheel(package, base)
        target = base / package.name
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        cmd += ["--target", str(target), str(wheel)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append((package.name, proc))
        targets[package.name] = target
    for name, proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"pip could not install the test plugin {name}:\n{out}")
    return targets


@pytest.mark.timeout(180)
def test_third_party_result_writer_is_used(mhtest, write_tests, installed_plugins):
    target = installed_plugins["mhtest-custom-result"]
    assert (target / "mhtest_custom_result.py").exists()
    assert list(target.glob("mhtest_custom_result-1.0.dist-info"))
    write_tests({"pass.py": PASS_PY})
    run = mhtest("run", "t/pass.py", env={"PYTHONPATH": str(target)})
    assert run.code == 0, run
    assert user_errors(run.stderr) == [] and "custom" not in run.stderr, run
    custom = (run.job_dir / "results.custom").read_text()
    assert custom == (
        "1 PASS t/pass.py:Pass.test\n2 PASS t/pass.py:Pass.test_two\ntest_end calls: 2\n"
    )
    # The built-in writers still run beside it.
    assert run.results()["pass"] == 2
    assert (run.job_dir / "results.xml").exists()


@pytest.mark.timeout(180)
def test_broken_plugins_warn_and_the_job_still_runs(mhtest, write_tests, installed_plugins):
    write_tests({"pass.py": PASS_PY})
    path = (
        f"{installed_plugins['mhtest-broken-plugins']}:{installed_plugins['mhtest-custom-result']}"
    )
    run = mhtest("run", "t/pass.py", env={"PYTHONPATH": path})
    assert run.code == 0, run
    warnings = [ln for ln in run.stderr.splitlines() if "broken-import" in ln]
    assert warnings == [
        "mhtest: warning: plugin 'broken-import' (mhtest.result) failed to load: "
        "RuntimeError: this plugin is broken on purpose"
    ], run
    # A writer that fails at the end is reported on the console; the others still write.
    assert "WARNING: result plugin 'broken-render' failed: disk on fire" in run.stdout, run
    assert run.results()["pass"] == 2
    assert (run.job_dir / "results.custom").exists()
    assert (run.job_dir / "results.tap").exists()


@pytest.mark.timeout(180)
def test_failing_writer_gives_no_traceback_on_the_console(mhtest, write_tests, installed_plugins):
    write_tests({"pass.py": PASS_PY})
    target = installed_plugins["mhtest-broken-plugins"]
    run = mhtest("run", "t/pass.py", env={"PYTHONPATH": str(target)})
    assert run.code == 0, run
    assert "disk on fire" in (run.job_dir / "job.log").read_text()
    assert "Traceback" not in run.stderr and "disk on fire" not in run.stderr, run


@pytest.mark.timeout(180)
def test_broken_plugin_does_not_stop_list(mhtest, write_tests, installed_plugins):
    write_tests({"pass.py": PASS_PY})
    target = installed_plugins["mhtest-broken-plugins"]
    run = mhtest("list", "t/pass.py", env={"PYTHONPATH": str(target)})
    assert run.code == 0, run
    assert run.stdout.split() == [
        "instrumented",
        "t/pass.py:Pass.test",
        "instrumented",
        "t/pass.py:Pass.test_two",
    ]
