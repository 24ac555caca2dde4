"""The startup probe's remembered interpreter version (mhtest.hosts.bootstrap.probe_script).

A warm start must not run an extra Python, but a stale hint must never pick an
environment that is not there: the probe then asks the interpreter itself.
Run with the real `sh`, as a host's login shell runs it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mhtest.hosts.bootstrap import READY, probe_script

THEN = 'echo "OK=$ok FRESH=$fresh"'


def probe(cache: Path, python: str) -> dict[str, str]:
    out = subprocess.run(
        ["sh", "-c", probe_script(python, "K", "S", str(cache), then=THEN)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def make_env(cache: Path, version: str, machine: str) -> None:
    env = cache / f"env-K-{version}-{machine}"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / READY).touch()
    (cache / "src-S").mkdir(exist_ok=True)
    (cache / "src-S" / READY).touch()


def test_hint_is_written_when_ready_and_then_trusted(tmp_path: Path) -> None:
    python = shutil.which("python3") or sys.executable
    cache = tmp_path / "cache"
    cache.mkdir()
    asked = probe(cache, python)
    version, machine = asked["PY"].split()[1:]
    assert asked["OK=0"] == "FRESH=1"  # nothing installed: no hint written
    hint = cache / f"python-{hashlib.sha256(python.encode()).hexdigest()[:12]}"
    assert not hint.exists()
    make_env(cache, version, machine)
    assert probe(cache, python)["OK=1"] == "FRESH=1"
    assert hint.read_text().split() == [asked["PY"].split()[0], version, machine]
    assert probe(cache, python)["OK=1"] == "FRESH="  # warm: no Python was asked


def test_stale_hint_without_environment_asks_the_interpreter(tmp_path: Path) -> None:
    python = shutil.which("python3") or sys.executable
    cache = tmp_path / "cache"
    cache.mkdir()
    real = probe(cache, python)["PY"].split()
    hint = cache / f"python-{hashlib.sha256(python.encode()).hexdigest()[:12]}"
    hint.write_text(f"{real[0]} 3.99 {real[2]}\n")
    os.utime(hint)
    seen = probe(cache, python)
    assert seen["PY"].split()[1] == real[1]  # the interpreter's own version, not 3.99
    assert seen["ENV"].endswith(f"env-K-{real[1]}-{real[2]}")
    # and a hint naming another path is not used either
    make_env(cache, "3.99", real[2])
    hint.write_text(f"/elsewhere/python3 3.99 {real[2]}\n")
    assert probe(cache, python)["PY"].split()[1] == real[1]
