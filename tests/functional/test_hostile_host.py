"""A host that sends back what it likes: mhtest on it is patched, the controller must hold.

Each test gives a real sshd host a private mhtest cache whose executor is rewritten to send
a crafted results archive instead of the test's own, as an attacker with the host (or a
test running as its user) can; the controller runs unpatched, through the real CLI.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from runners.test_untrusted import cve_2025_4517  # tests/ is on sys.path (rootdir)

from mhtest.hosts import bootstrap

from .conftest import mhtest_command

pytestmark = pytest.mark.timeout(120)

PASS_PY = """
from mhtest import Test


class Passes(Test):
    def test(self):
        self.log.info("honest work")
"""


def patched_cache(tmp_path: Path, send_instead: str) -> Path:
    """A host cache (MHTEST_REMOTE_CACHE) whose executor sends `send_instead`'s output.

    `send_instead` is the body of `pack_results(logdir, out)` on the host. The dependency
    environment is the warm one, linked; the sources are this checkout's, patched.
    """
    cache = tmp_path / "host-cache"
    cache.mkdir()
    real = Path(bootstrap.REMOTE_CACHE).expanduser()
    for env in real.glob(f"env-{bootstrap.deps_key()}-*"):
        (cache / env.name).symlink_to(env)
    src_key, archive = bootstrap.source_archive()
    src = cache / f"src-{src_key}"
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(src, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(
            src
        )
    executor = src / "mhtest" / "runners" / "executor.py"
    body = "\n".join("    " + line for line in send_instead.strip().splitlines())
    code, main = executor.read_text().split('\nif __name__ == "__main__":')
    patch = f"\n\ndef pack_results(logdir, out):\n{body}\n\n"
    executor.write_text(code + patch + 'if __name__ == "__main__":' + main, encoding="utf-8")
    (src / bootstrap.READY).touch()
    return cache


def run_on(host, tests: Path, cache: Path, tmp_path: Path, *extra: str):
    """`mhtest run` of tests/passes.py on `host` with the patched cache; (Run-like, maxrss KiB)."""
    results = tmp_path / "results"
    command = mhtest_command(
        [
            "run",
            str(tests / "passes.py"),
            "--hosts",
            host.alias,
            "--ssh-config",
            host.ssh_config,
            *extra,
        ],
        results,
    )
    # A wrapper reports the peak RSS of the controller (its own children are small).
    wrapper = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "file=sys.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        cwd=tmp_path,
        env={**os.environ, "MHTEST_REMOTE_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=100,
    )
    maxrss = int(proc.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return proc, (results / "latest").resolve(), maxrss


def only_result(job: Path) -> dict:
    import json

    (result,) = json.loads((job / "results.json").read_text())["tests"]
    return result


def test_a_host_cannot_plant_a_file_outside_the_test_directory(
    write_tests, warm_hosts, tmp_path
) -> None:
    (host,) = warm_hosts(1)
    evil = tmp_path / "evil.tar"
    # `escape` leads 2 levels up from the test's directory: into the job directory.
    evil.write_bytes(cve_2025_4517(up=2))
    cache = patched_cache(tmp_path, f"out.write(open({str(evil)!r}, 'rb').read())")
    tests = write_tests({"passes.py": PASS_PY})
    proc, job, _ = run_on(host, tests, cache, tmp_path)
    result = only_result(job)
    planted = [p for p in tmp_path.rglob("planted")]
    test_dir = Path(result["logdir"])
    assert all(p.is_relative_to(test_dir) for p in planted), f"planted outside: {planted}"
    assert not [p for p in test_dir.rglob("*") if p.is_symlink()]
    assert result["status"] == "ERROR", proc.stdout
    assert "not plain files inside the test's directory" in result["fail_reason"]
    assert "the test itself ended PASS" in result["fail_reason"]
    assert result["fail_reason"].startswith(f"{host.alias}: ")
    assert proc.returncode == 1


def test_results_over_the_limit_are_error_and_the_start_is_kept(
    write_tests, warm_hosts, tmp_path
) -> None:
    (host,) = warm_hosts(1)
    cache = patched_cache(
        tmp_path,
        """
import io, tarfile
with tarfile.open(fileobj=out, mode="w|") as tar:
    for i in range(5):
        info = tarfile.TarInfo(f"part{i}")
        info.size = 1 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
""",
    )
    tests = write_tests({"passes.py": PASS_PY})
    proc, job, _ = run_on(host, tests, cache, tmp_path, "--max-results-size", "2.5M")
    result = only_result(job)
    assert result["status"] == "ERROR", proc.stdout + proc.stderr
    assert "over the 2.5 MiB limit (--max-results-size)" in result["fail_reason"]
    kept = sorted(p.name for p in Path(result["logdir"]).iterdir() if p.name.startswith("part"))
    assert kept == ["part0", "part1"]


def test_a_flood_of_results_does_not_fill_the_controller_memory(
    write_tests, warm_hosts, tmp_path
) -> None:
    """400 MiB of results from a host: before, the controller held them all (and more)."""
    (host,) = warm_hosts(1)
    cache = patched_cache(
        tmp_path,
        """
import tarfile
class Zeros:
    left = 400 << 20
    def read(self, size=-1):
        size = min(size if size >= 0 else self.left, self.left, 1 << 20)
        self.left -= size
        return bytes(size)
with tarfile.open(fileobj=out, mode="w|") as tar:
    info = tarfile.TarInfo("big")
    info.size = Zeros.left
    tar.addfile(info, Zeros())
""",
    )
    tests = write_tests({"passes.py": PASS_PY})
    proc, job, maxrss = run_on(host, tests, cache, tmp_path, "--max-results-size", "100M")
    result = only_result(job)
    assert result["status"] == "ERROR", proc.stdout + proc.stderr
    assert "over the 100 MiB limit" in result["fail_reason"]
    assert maxrss < 150 * 1024, f"the controller peaked at {maxrss // 1024} MiB"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # (the wrapper measured it)


TIMED_PY = """
from mhtest import Test


class Passes(Test):
    timeout = 3

    def test(self):
        self.log.info("honest work")
"""


def test_a_host_dribbling_results_cannot_hold_the_test(write_tests, warm_hosts, tmp_path) -> None:
    """Tiny results pieces, one a second, for 90 s: they keep the test waited for during the
    grace only (untrusted.RESULTS_RATE_GRACE), not at a few bytes a second for ever."""
    import time

    (host,) = warm_hosts(1)
    cache = patched_cache(
        tmp_path,
        """
import time
until = time.monotonic() + 90
while time.monotonic() < until:
    out.emit("eA==", False)
    time.sleep(1)
""",
    )
    tests = write_tests({"passes.py": TIMED_PY})
    started = time.monotonic()
    proc, job, _ = run_on(host, tests, cache, tmp_path)
    took = time.monotonic() - started
    result = only_result(job)
    assert result["status"] in ("ERROR", "INTERRUPT"), result
    assert "did not report the end" in result["fail_reason"], result
    # timeout 3 s + the deadline's margin (20 s) + the results' grace (20 s) + the stop's.
    assert took < 70, (took, proc.stdout)
    assert proc.returncode != 0
