"""What `mhtest run` shows: a ticking line that fits the terminal, and what did not pass."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from .conftest import MHTEST

pytestmark = pytest.mark.timeout(60)

SLOW_PY = """
import time

from mhtest import Test


class Slow(Test):
    def test(self):
        time.sleep(2.6)


class Broken(Test):
    def test(self):
        raise RuntimeError("the flux capacitor")
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def run_in_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """Run mhtest on a pseudo-terminal `columns` wide; everything it drew."""
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*MHTEST, *args], cwd=cwd, stdin=sub, stdout=sub, stderr=sub, env=env, close_fds=True
    )
    os.close(sub)
    out = b""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(main)
    return out.decode("utf-8", "replace")


def test_the_running_line_ticks_and_fits_the_terminal(write_tests, tmp_path) -> None:
    tests = write_tests({"slow.py": SLOW_PY})
    drawn = run_in_terminal(
        ["run", f"{tests / 'slow.py'}:Slow", "--job-results-dir", str(tmp_path / "r")],
        tmp_path,
        columns=50,
    )
    plain = ANSI.sub("\n", drawn)
    frames = [ln for ln in plain.splitlines() if "running:" in ln]
    assert any("(1s)" in f for f in frames) and any("(2s)" in f for f in frames), drawn
    for frame in frames:  # a redrawn line that wrapped would leave stale rows behind
        assert len(frame) <= 50, f"{len(frame)} columns: {frame!r}"
    assert "Slow.test: PASS" in plain
    assert "RESULTS    : PASS 1" in plain


def test_what_did_not_pass_is_listed_at_the_end(mhtest, write_tests) -> None:
    tests = write_tests({"slow.py": SLOW_PY})
    run = mhtest("run", f"{tests / 'slow.py'}:Broken", str(tests / "slow.py"))
    assert run.code == 1, run
    tail = run.stdout.split("NOT PASSED :\n", 1)[1].splitlines()
    assert (
        tail[0].startswith(" ERROR     1-")
        and tail[0].endswith("slow.py:Broken.test: RuntimeError: the flux capacitor")
        or "the flux capacitor" in tail[0]
    ), run.stdout
    assert tail[1].startswith(" ERROR     3-"), run.stdout  # the same test, run again
    assert tail[2].startswith("RESULTS    : PASS 1 | FAIL 0 | ERROR 2")
