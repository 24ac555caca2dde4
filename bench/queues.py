"""Benchmark: the spool queue (`mhtest queue start-all`) against `mhtest run` in a shell loop.

Starts its own loopback sshd hosts (mhtest.hosts.testing.SshdPool), 4 queues of 2 hosts
each, warms the host cache with one untimed run, then:

- latency: each queue fed one file at a time (the next dropped once the one before ended),
  `--files` trivial client control files in all; the time from a file's drop (renamed into
  its spool) to its start (its first job's Job running, queue.json) and to its claim, p50
  and p99. Target: p50 under 0.5 s.
- throughput: the same number of files dropped at once, a quarter in each queue: the time
  from the first drop to the last end, against the same files run by hand, one after the
  other, by a bash loop of `mhtest run FILE --hosts H1,H2` (each file on its queue's two
  hosts). Target: at most 1.1x.

The hosts are this machine: the figures depend on its load, printed with them. Every
process it starts is stopped by its PID at the end.

    python3 bench/queues.py [--files 200]

(Named queues.py: a bench/queue.py would hide the standard library's queue module.)
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_fanout import PASSTEST  # noqa: E402

from mhtest.hosts.testing import HostInfo, SshdPool  # noqa: E402

QUEUES = 4
PER_QUEUE = 2
LATENCY_TARGET = 0.5
TOTAL_TARGET = 1.1
TRIVIAL = 'job.record("GOOD", None, "trivial", "ran")\n'
MHTEST = [sys.executable, "-m", "mhtest"]


def drop(spool: Path, name: str) -> float:
    tmp = spool / f".{name}.part"
    tmp.write_text(TRIVIAL)
    os.replace(tmp, spool / name)
    return time.time()


def record(results: Path, name: str) -> dict | None:
    try:
        return json.loads((results / name / "queue.json").read_text())
    except (OSError, ValueError):
        return None


def wait_all(results: Path, names: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for name in names:
            if name not in done:
                found = record(results, name)
                if found and found.get("status"):
                    done[name] = found
        if len(done) == len(names):
            return done
        time.sleep(0.05)
    raise SystemExit(f"timed out: {len(done)} of {len(names)} files ended in {results}")


def check(done: dict[str, dict]) -> None:
    bad = {n: r["status"] for n, r in done.items() if r["status"] != "PASS"}
    if bad:
        raise SystemExit(f"files that did not pass: {bad}")


class Queues:
    """TOP/queue/q1..q4 and `mhtest queue start-all TOP` running."""

    def __init__(self, top: Path, groups: list[list[HostInfo]]) -> None:
        self.top = top
        self.results = top / "results"
        self.spools = []
        for n, group in enumerate(groups, 1):
            spool = top / "queue" / f"q{n}"
            spool.mkdir(parents=True)
            (spool / ".machines").write_text("".join(f"{h.alias}\n" for h in group))
            self.spools.append(spool)
        self.console = open(top / "console", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*MHTEST, "queue", "start-all", str(top), "--ssh-config", groups[0][0].ssh_config],
            stdout=self.console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while (top / "console").read_text().count("watching") < QUEUES:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"start-all did not start:\n{(top / 'console').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.console.close()


def latency(queues: Queues, files: int) -> tuple[list[float], list[float], float]:
    """Each queue fed a file at a time; (drop→start, drop→claim) of each, and the wall time."""
    per_queue = files // QUEUES
    dropped: dict[str, float] = {}
    pending: dict[int, str] = {}
    sent = [0] * QUEUES
    started_at = time.monotonic()
    while len(dropped) < per_queue * QUEUES or pending:
        for q, spool in enumerate(queues.spools):
            name = pending.get(q)
            if name is not None:
                found = record(queues.results, name)
                if not found or not found.get("status"):
                    continue
                del pending[q]
            if sent[q] < per_queue:
                name = f"lat-q{q + 1}-{sent[q]:03d}"
                dropped[name] = drop(spool, name)
                pending[q] = name
                sent[q] += 1
        time.sleep(0.01)
    wall = time.monotonic() - started_at
    done = wait_all(queues.results, list(dropped), 60)
    check(done)
    starts = [done[n]["started"] - dropped[n] for n in dropped]
    claims = [done[n]["claimed"] - dropped[n] for n in dropped]
    return starts, claims, wall


def throughput(queues: Queues, files: int) -> float:
    """Every file dropped at once; seconds from the first drop to the last end."""
    names = []
    first = time.time()
    for n in range(files):
        name = f"all-{n:03d}"
        drop(queues.spools[n % QUEUES], name)
        names.append(name)
    done = wait_all(queues.results, names, 3600)
    check(done)
    return max(r["ended"] for r in done.values()) - first


def shell_loop(work: Path, groups: list[list[HostInfo]], files: int) -> float:
    """The same files run by hand: a bash loop of `mhtest run`, one file after the other."""
    folder = work / "by-hand"
    lines = ["set -e"]
    for n in range(files):
        group = groups[n % QUEUES]
        path = folder / f"all-{n:03d}.control"  # a name `mhtest run` takes as a control file
        path.parent.mkdir(exist_ok=True)
        path.write_text(TRIVIAL)
        hosts = ",".join(h.alias for h in group)
        lines.append(
            f"{' '.join(MHTEST)} run {path} --hosts {hosts} --ssh-config {group[0].ssh_config} "
            f"--job-results-dir {work / 'by-hand-results' / str(n)} > /dev/null"
        )
    script = work / "loop.sh"
    script.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    subprocess.run(["bash", str(script)], check=True, timeout=7200, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    opts = parser.parse_args()
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-queue-") as tmp:
        work = Path(tmp)
        with SshdPool(work / "sshd") as pool:
            infos = pool.hosts(QUEUES * PER_QUEUE)
            groups = [infos[i * PER_QUEUE : (i + 1) * PER_QUEUE] for i in range(QUEUES)]
            (work / "passtest.py").write_text(PASSTEST)
            warm = [*MHTEST, "run", str(work / "passtest.py"), "--hosts"]
            warm += [",".join(i.alias for i in infos), "--ssh-config", infos[0].ssh_config]
            warm += ["--job-results-dir", str(work / "warm")]
            subprocess.run(warm, check=True, capture_output=True, timeout=900)
            queues = Queues(work / "top", groups)
            try:
                starts, claims, lat_wall = latency(queues, opts.files)
                loads.append(os.getloadavg()[0])
                ours = throughput(queues, opts.files)
                loads.append(os.getloadavg()[0])
            finally:
                queues.stop()
            theirs = shell_loop(work, groups, opts.files)
            loads.append(os.getloadavg()[0])
    p50, p99 = statistics.median(starts), percentile(starts, 0.99)
    print(
        f"{opts.files} trivial client control files, {QUEUES} queues of {PER_QUEUE} loopback hosts"
    )
    c50, c99 = statistics.median(claims), percentile(claims, 0.99)
    print(
        f"drop to start (first job running): p50 {p50:.3f} s, p99 {p99:.3f} s "
        f"(drop to claim: p50 {c50:.3f} s, p99 {c99:.3f} s)"
        f"; target p50 < {LATENCY_TARGET} s: {'met' if p50 < LATENCY_TARGET else 'NOT met'}"
    )
    print(f"  (fed a file at a time per queue: {lat_wall:.1f} s for {len(starts)} files)")
    ratio = ours / theirs
    met = "met" if ratio <= TOTAL_TARGET else "NOT met"
    print(
        f"all at once: queue {ours:.1f} s, `mhtest run` in a shell loop {theirs:.1f} s: "
        f"{ratio:.2f}x; target at most {TOTAL_TARGET}x: {met}"
    )
    print(f"(load average {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
