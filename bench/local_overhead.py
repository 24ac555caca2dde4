"""Benchmark: the cost of running local tests with mhtest, Avocado 113 and pytest.

For each tool and kind of test, the wall time of one whole command running 1 test (T1,
"startup") and 100 trivial tests (T100), and the per-test overhead (T100 - T1) / 99:

  - instrumented: 100 test methods of one class (mhtest.Test / avocado.Test)
  - simple:       100 executable `#!/bin/sh` scripts that exit 0
  - pytest:       100 test functions in one file (no process isolation)

Rounds alternate the tools (median kept) so they share the machine's load. Avocado runs from
its own virtual environment (bench/.venv-avocado, created with `pip install
avocado-framework==113.0` when missing) at its default parallelism; mhtest at its default
(--max-parallel = CPU count). CPU time (user + sys of the command and its children) is
printed beside the wall time: it is far less sensitive to other load on the machine.

Targets (issue 2): mhtest's per-test overhead at most 1/40 of Avocado's; mhtest's startup at
most 1.5x pytest's.

    python3 bench/local_overhead.py [--rounds 3] [--avocado-rounds 1] [--tests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
AVOCADO_VENV = HERE / ".venv-avocado"
AVOCADO_VERSION = "113.0"


@dataclass
class Timing:
    """Wall and CPU seconds of repeated runs of one command."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def command_env() -> dict[str, str]:
    """The environment the tools run in: this one, minus PYTHONDONTWRITEBYTECODE.

    With it set, Python recompiles every module without a .pyc on each start: the tools
    installed from wheels (pytest, Avocado) carry .pyc files, an editable mhtest does not,
    so the variable would measure the checkout rather than the tool.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed_run(cmd: list[str], cwd: Path, expect_tests: int, check) -> tuple[float, float]:
    """Run `cmd`; return (wall, cpu) seconds. `check(cwd, stdout)` must confirm the count."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=command_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0 or not check(cwd, proc.stdout, expect_tests):
        raise SystemExit(
            f"benchmark command failed or ran the wrong tests: {' '.join(cmd)}\n"
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return wall, cpu


# --- the test trees -------------------------------------------------------------------------


def write_trees(base: Path, count: int) -> None:
    methods = "".join(f"\n    def test_{i:03d}(self):\n        pass\n" for i in range(count))
    (base / "mh").mkdir()
    (base / "mh" / "trivial.py").write_text(
        f"from mhtest import Test\n\n\nclass Trivial(Test):{methods}"
    )
    (base / "av").mkdir()
    (base / "av" / "trivial.py").write_text(
        f"from avocado import Test\n\n\nclass Trivial(Test):{methods}"
    )
    (base / "simple").mkdir()
    for i in range(count):
        script = base / "simple" / f"s{i:03d}.sh"
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    (base / "py").mkdir()
    (base / "py" / "pytest.ini").write_text("[pytest]\n")
    (base / "py" / "test_trivial.py").write_text(
        "".join(f"def test_{i:03d}():\n    pass\n\n\n" for i in range(count))
    )


# --- the tools ------------------------------------------------------------------------------


def _latest_json(results: Path) -> dict:
    return json.loads((results / "latest" / "results.json").read_text())


def check_mhtest(cwd: Path, stdout: str, expected: int) -> bool:
    data = _latest_json(cwd / "mh-results")
    return data["total"] == data["pass"] == expected


def check_avocado(cwd: Path, stdout: str, expected: int) -> bool:
    data = _latest_json(cwd / "av-results")
    return data["total"] == data["pass"] == expected


def check_pytest(cwd: Path, stdout: str, expected: int) -> bool:
    return f"{expected} passed" in stdout


def avocado_bin() -> Path:
    """bench/.venv-avocado/bin/avocado, installing Avocado there first if needed."""
    avocado = AVOCADO_VENV / "bin" / "avocado"
    if avocado.exists():
        return avocado
    print(f"installing avocado-framework=={AVOCADO_VERSION} into {AVOCADO_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(AVOCADO_VENV)], check=True)
    subprocess.run(
        [
            str(AVOCADO_VENV / "bin" / "pip"),
            "install",
            "-q",
            f"avocado-framework=={AVOCADO_VERSION}",
        ],
        check=True,
    )
    return avocado


def commands(base: Path, count: int) -> dict[str, dict[str, tuple[list[str], Path, object]]]:
    """{case: {"T1"|"TN": (command, cwd, check)}} for every tool and kind."""
    mh = [sys.executable, "-m", "mhtest", "run", "--job-results-dir", str(base / "mh-results")]
    av = [str(avocado_bin()), "run", "--job-results-dir", str(base / "av-results")]
    simple_all = [f"simple/s{i:03d}.sh" for i in range(count)]
    return {
        "mhtest instrumented": {
            "T1": ([*mh, "mh/trivial.py:Trivial.test_000"], base, check_mhtest),
            "TN": ([*mh, "mh/trivial.py"], base, check_mhtest),
        },
        "mhtest simple": {
            "T1": ([*mh, "simple/s000.sh"], base, check_mhtest),
            "TN": ([*mh, *simple_all], base, check_mhtest),
        },
        "avocado instrumented": {
            "T1": ([*av, "av/trivial.py:Trivial.test_000"], base, check_avocado),
            "TN": ([*av, "av/trivial.py"], base, check_avocado),
        },
        "avocado simple": {
            "T1": ([*av, "simple/s000.sh"], base, check_avocado),
            "TN": ([*av, *simple_all], base, check_avocado),
        },
        "pytest functions": {
            "T1": (
                [sys.executable, "-m", "pytest", "-q", "test_trivial.py::test_000"],
                base / "py",
                check_pytest,
            ),
            "TN": (
                [sys.executable, "-m", "pytest", "-q", "test_trivial.py"],
                base / "py",
                check_pytest,
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds for mhtest and pytest")
    parser.add_argument("--avocado-rounds", type=int, default=1, help="rounds for Avocado")
    parser.add_argument("--tests", type=int, default=100, help="tests per T_N run")
    opts = parser.parse_args()
    count = opts.tests

    with tempfile.TemporaryDirectory(prefix="mhtest-bench-overhead-") as tmp:
        base = Path(tmp)
        write_trees(base, count)
        cases = commands(base, count)
        timings = {(case, which): Timing() for case in cases for which in ("T1", "TN")}
        # Warm the page cache and Python's bytecode caches once per tool, untimed.
        for cmds in cases.values():
            cmd, cwd, check = cmds["T1"]
            timed_run(cmd, cwd, 1, check)
        for rnd in range(max(opts.rounds, opts.avocado_rounds)):
            for case, cmds in cases.items():
                for which, (cmd, cwd, check) in cmds.items():
                    slow = case.startswith("avocado") and which == "TN"
                    if rnd >= (opts.avocado_rounds if slow else opts.rounds):
                        continue
                    wall, cpu = timed_run(cmd, cwd, 1 if which == "T1" else count, check)
                    timings[case, which].wall.append(wall)
                    timings[case, which].cpu.append(cpu)
            print(f"round {rnd + 1} done", file=sys.stderr, flush=True)

    load = os.getloadavg()[0]
    print(f"local test overhead, {count} trivial tests, {os.cpu_count()} CPUs, load {load:.1f}")
    print(
        f"medians of {opts.rounds} rounds ({opts.avocado_rounds} for Avocado's T{count}); "
        "wall (cpu) s"
    )
    header = f"{'':22} {'T1 (startup)':>16} {f'T{count}':>16} {'per test':>20}"
    print(header)
    per_test: dict[str, float] = {}
    per_test_cpu: dict[str, float] = {}
    startup: dict[str, float] = {}
    for case in cases:
        t1, tn = timings[case, "T1"], timings[case, "TN"]
        per = (tn.median - t1.median) / (count - 1)
        per_cpu = (tn.cpu_median - t1.cpu_median) / (count - 1)
        per_test[case], per_test_cpu[case], startup[case] = per, per_cpu, t1.median
        t1_text = f"{t1.median:8.3f} ({t1.cpu_median:5.2f})"
        tn_text = f"{tn.median:8.3f} ({tn.cpu_median:5.2f})"
        print(f"{case:22} {t1_text} {tn_text} {per * 1000:9.2f} ms ({per_cpu * 1000:5.2f})")
    print()
    ok = True
    for kind in ("instrumented", "simple"):
        ratio = per_test[f"mhtest {kind}"] / per_test[f"avocado {kind}"]
        target = ratio <= 1 / 40
        ok &= target
        cpu_ratio = per_test_cpu[f"mhtest {kind}"] / per_test_cpu[f"avocado {kind}"]
        print(
            f"per-test overhead, {kind:12}: mhtest/avocado = 1/{1 / ratio:.0f} wall, "
            f"1/{1 / cpu_ratio:.0f} cpu; target <= 1/40 (wall): {'met' if target else 'MISSED'}"
        )
    ratio = startup["mhtest instrumented"] / startup["pytest functions"]
    target = ratio <= 1.5
    ok &= target
    print(
        f"startup (T1), instrumented: mhtest/pytest = {ratio:.2f}x; "
        f"target <= 1.5x: {'met' if target else 'MISSED'}"
    )
    ratio = startup["mhtest simple"] / startup["pytest functions"]
    print(f"startup (T1), simple:       mhtest/pytest = {ratio:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
