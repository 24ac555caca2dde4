"""Benchmark: a host whose connection drops and comes back, and what journaling costs.

    python3 bench/survive.py [--rounds 3] [--tests 100] [--pairs 7] [--base REV]

1. Back (target: under 2 s). A test on a host ends while its connection is down; the
   time from the host being reachable again to the test's result line on mhtest's console:
   - cut: the host is in a network namespace (mhtest.hosts.netns; root only) whose link is
     cut; once mhtest has found the connection lost (job.log says so), the link stays
     down 3 s more, then comes back: timed from then;
   - killed: the sshd session serving the host is killed (SIGKILL); sshd itself still
     listens, so the host is reachable at once: timed from the kill.
2. Cost (target: under 5%). 100 trivial tests on one loopback sshd host (warm cache), by
   this tree against the same run by REV, a tree without the journal (default: the parent
   of the commit that added mhtest/runners/journal.py), alternating in pairs; the medians
   of the wall times, and of the CPU time spent on the host (everything below its sshd:
   sshd reaps the session, which reaps the rest) and by the controller, with the medians
   of the pairs' ratios. On a machine shared with other work the wall times swing more
   than the cost; the CPU times do not.

Hosts are started by the script (mhtest.hosts.testing.SshdPool) and stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mhtest.hosts.testing import HostInfo, SshdPool  # noqa: E402

WAITER = """\
import os
import time

from mhtest import Test


class Waiter(Test):
    def test(self):
        marks = self.params.get("marks")
        open(os.path.join(marks, "started"), "w").close()
        while not os.path.exists(os.path.join(marks, "go")):
            time.sleep(0.02)
"""


def mhtest(args: list[str], tree: Path, results: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "mhtest", "run", *args, "--job-results-dir", str(results)]
    return subprocess.Popen(command, env=env, cwd=results.parent, **popen)


def hosts_args(info: HostInfo) -> list[str]:
    return ["--hosts", info.alias, "--ssh-config", info.ssh_config]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


class Console:
    """mhtest's stdout, read in a thread: when each line came."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append((time.monotonic(), line))

    def when(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)

    def job_log(self) -> Path | None:
        for _, line in self.lines:
            if line.startswith("JOB LOG"):
                return Path(line.split(":", 1)[1].strip())
        return None


def one_drop(work: Path, test: Path, info: HostInfo, cut, restore, name: str) -> float:
    """Seconds from the host being back to the test's result (see module docstring)."""
    marks = work / f"marks-{name}"
    marks.mkdir()
    results = work / f"results-{name}"
    results.mkdir()
    args = [str(test), *hosts_args(info), "-p", f"marks={marks}"]
    proc = mhtest(args, ROOT, results, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    console = Console(proc)
    try:
        wait_for(lambda: (marks / "started").exists(), 60, "the test to start")
        back = cut()
        (marks / "go").write_text("")  # it ends while its host is away
        if back is None:
            log = lambda: console.job_log()  # noqa: E731

            def lost() -> bool:
                path = log()
                return path is not None and "connection lost at" in path.read_text()

            wait_for(lost, 60, "mhtest to find the connection lost")
            time.sleep(3)
            restore()
            back = time.monotonic()
        wait_for(lambda: console.when(": PASS") is not None, 60, "the result")
        proc.wait(60)
        return console.when(": PASS") - back  # type: ignore[operator]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def bench_back(work: Path, rounds: int) -> dict[str, list[float]]:
    from mhtest.hosts.netns import NetnsHost, available
    from tests.functional.test_remote_deadline import sshd_processes

    test = work / "tests" / "waiter.py"
    test.parent.mkdir(exist_ok=True)
    test.write_text(WAITER)
    times: dict[str, list[float]] = {"killed": [], "cut": []}
    with SshdPool(work / "sshd") as pool:
        (info,) = pool.hosts(1)

        def kill() -> float:
            for pid in sshd_processes(info.pid):
                os.kill(pid, signal.SIGKILL)
            return time.monotonic()

        for r in range(rounds):
            times["killed"].append(one_drop(work, test, info, kill, None, f"killed-{r}"))
    why = available()
    if why:
        print(f"cut: skipped ({why})")
        return times
    with NetnsHost(work / "netns") as net:
        for r in range(rounds):

            def cut() -> None:
                net.cut()

            times["cut"].append(one_drop(work, test, net.info, cut, net.restore, f"cut-{r}"))
    return times


def base_tree(rev: str | None, work: Path) -> tuple[str, Path]:
    """REV's sources, exported; REV defaults to the last commit without the journal."""
    if rev is None:
        added = subprocess.run(
            ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--"]
            + ["mhtest/runners/journal.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        rev = f"{added[-1]}^"
    tree = work / "base"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return rev, tree


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children `pid` has reaped (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def timed_run(
    tree: Path, test: Path, info: HostInfo, results: Path, count: int
) -> tuple[float, float, float]:
    """(wall, host CPU, controller CPU) seconds of one `mhtest run`."""
    import resource

    results.mkdir()
    host_before = reaped_cpu(info.pid)
    mine = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = mhtest([str(test), *hosts_args(info)], tree, results, stdout=subprocess.DEVNULL)
    code = proc.wait(600)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = after.ru_utime + after.ru_stime - mine.ru_utime - mine.ru_stime
    time.sleep(0.3)  # sshd reaps the session
    tests = json.loads((results / "latest" / "results.json").read_text())["tests"]
    passed = sum(t["status"] == "PASS" for t in tests)
    if code or passed != count:
        raise SystemExit(f"{tree}: exit {code}, {passed} of {count} passed")
    return took, reaped_cpu(info.pid) - host_before, controller


def bench_cost(work: Path, count: int, pairs: int, rev: str | None) -> None:
    rev, base = base_tree(rev, work)
    test = work / "tests" / "many.py"
    test.parent.mkdir(exist_ok=True)
    methods = "".join(f"    def test_{i:03d}(self):\n        pass\n\n" for i in range(count))
    test.write_text(f"from mhtest import Test\n\n\nclass Many(Test):\n{methods}")
    with SshdPool(work / "sshd-cost") as pool:
        (info,) = pool.hosts(1)
        for tree in (base, ROOT):  # warm-up: each tree's sources installed on the host
            timed_run(tree, test, info, work / f"warm-{tree.name}", count)
        runs: dict[str, list[tuple[float, float, float]]] = {"base": [], "journal": []}
        for p in range(pairs):
            order = [("base", base), ("journal", ROOT)]
            for name, tree in order if p % 2 == 0 else order[::-1]:
                runs[name].append(timed_run(tree, test, info, work / f"r-{name}-{p}", count))
    print(f"\ncost: {count} trivial tests on 1 host, {pairs} pairs, base {rev}")
    ratios = {}
    for i, what in enumerate(("wall", "host CPU", "controller CPU")):
        for name, rows in runs.items():
            values = [row[i] for row in rows]
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {what:14} {name:8} median {statistics.median(values):.2f} s  ({shown})")
        pair = [j[i] / b[i] for j, b in zip(runs["journal"], runs["base"]) if b[i]]
        ratios[what] = statistics.median(pair)
        print(
            f"  {what:14} journal/base: median {ratios[what]:.3f} "
            f"(pairs {min(pair):.3f} .. {max(pair):.3f})"
        )
    cpu = (ratios["host CPU"] + ratios["controller CPU"]) / 2
    verdict = "met" if max(ratios["host CPU"], ratios["controller CPU"]) < 1.05 else "NOT met"
    print(
        f"  target (CPU under 5% more): {verdict} (host {ratios['host CPU'] - 1:+.1%}, "
        f"controller {ratios['controller CPU'] - 1:+.1%}; mean {cpu - 1:+.1%})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="drops of each kind")
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--base", default=None, metavar="REV")
    parser.add_argument("--only", choices=("back", "cost"), default=None)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-survive-") as tmp:
        work = Path(tmp)
        if opts.only != "cost":
            times = bench_back(work, opts.rounds)
            print("back: from the host reachable again to the result")
            for name, values in times.items():
                if values:
                    shown = ", ".join(f"{v:.2f}" for v in values)
                    verdict = "met" if max(values) < 2 else "NOT met"
                    print(
                        f"  {name:7} median {statistics.median(values):.2f} s ({shown}); "
                        f"target under 2 s: {verdict}"
                    )
        if opts.only != "back":
            bench_cost(work, opts.tests, opts.pairs, opts.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
