"""The README's first command on a fresh machine: Debian's externally managed python3, a new HOME.

A clone of this repository's last commit runs `scripts/demo` with nothing set up: no venv, no
pip cache, PATH with only the system's directories. It must make its own virtual environment,
run the examples, say where mhtest went, and leave the system's Python alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def externally_managed() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    stdlib = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_runs_on_a_fresh_debian_python(tmp_path: Path) -> None:
    if not externally_managed():
        pytest.skip("needs Debian's externally managed /usr/bin/python3 (PEP 668)")
    if shutil.which("git") is None:
        pytest.skip("git is needed to clone the repository")
    clone = tmp_path / "mhtest"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TERM": "dumb"}
    for name in ("http_proxy", "https_proxy", "no_proxy", "PIP_INDEX_URL", "SSL_CERT_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    before = subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "pip", "list"], capture_output=True, text=True, env=env
    ).stdout
    demo = subprocess.run(
        ["scripts/demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=500
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "RESULTS    : PASS 5 |" in demo.stdout, demo.stdout
    said = demo.stdout + demo.stderr
    assert f"mhtest is {clone}/.venv/bin/mhtest" in said, said
    assert f". {clone}/.venv/bin/activate" in said, said  # how to put it on PATH
    assert (home / "mhtest" / "job-results" / "latest" / "results.json").exists()
    after = subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "pip", "list"], capture_output=True, text=True, env=env
    ).stdout
    assert after == before and "mhtest" not in after, "the system's Python was changed"
