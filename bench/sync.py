#!/usr/bin/env python3
"""Benchmark: barrier latency through mhtest's sync server vs a raw pyzmq ROUTER barrier.

    python3 bench/sync.py [--sizes 2,8,32] [--rounds N] [--repeats 6] [--big 1000]

For each size N, N participant processes loop on a barrier; every call's time is one
sample. The floor is the same loop over a bare ROUTER/DEALER pair (one-byte messages, no
JSON, no heartbeats, no bookkeeping) in the same run on the same machine, the two
alternating in back-to-back pairs so that both see the same background load. Prints p50,
p99, barriers/s and the ratio of the p50s: the median over the pairs, with their range
(target: mhtest <= 1.5x raw). Then a barrier of --big participants (threads, one
SyncClient each) must complete, and the server's resident memory is read from /proc
while they are all connected (target < 100 MB).

Then `mhtest sync barrier` from a shell loop (--shell rounds): two `sh` loops, as two
workers of a multi-host run would (their own CurveZMQ keys, the commands a worker finds on
its PATH, its sync agent: mhtest.sync.agent), each timing every call with `date +%s%N`; p50
of all calls (target < 100 ms). Beside it: the same without the agent (each command imports
pyzmq and connects itself), through `python -m mhtest sync barrier` (the interpreter's
start-up with site), and what a command is made of, in the same kind of loop: a bare start
of the interpreter (python -SE -c pass), with site, and with `import zmq`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP = 20
BARRIER_TIMEOUT = 60.0


# -- raw pyzmq floor ---------------------------------------------------------------------


def raw_server(port_queue: Any, size: int, stop: Any) -> None:
    """Reply to everybody once `size` participants sent their one-byte arrival."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    port_queue.put(port)
    waiting: list[bytes] = []
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(200):
            continue
        while True:
            try:
                identity, _ = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            waiting.append(identity)
            if len(waiting) == size:
                for ident in waiting:
                    sock.send_multipart([ident, b"G"])
                waiting.clear()
    sock.close(0)
    ctx.term()


def raw_participant(port: int, rounds: int, out: Any, start: Any) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    start.wait()  # a multiprocessing.Barrier: everybody connected, and the clock starts
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sock.send(b"B")
        if not sock.poll(int(BARRIER_TIMEOUT * 1000)):
            raise SystemExit("raw barrier timed out")
        sock.recv()
        samples.append(time.perf_counter() - t0)
    out.put(samples)
    sock.close(0)
    ctx.term()


# -- mhtest ------------------------------------------------------------------------------


def mhtest_server(port_queue: Any, size: int, stop: Any) -> None:
    from mhtest.sync.server import SyncServer

    # Recording what happens (sync.jsonl), as a multi-host run's server does.
    try:
        from mhtest.sync.record import SyncRecord
    except ImportError:  # an mhtest from before the record: the "before" figures
        record = {}
    else:
        record = {"record": SyncRecord()}
    with SyncServer(expected=size, **record) as server:
        port_queue.put(server.port)
        stop.wait()


def mhtest_participant(port: int, rounds: int, out: Any, start: Any, name: str) -> None:
    from mhtest.sync.client import SyncClient

    with SyncClient(f"tcp://127.0.0.1:{port}", name, timeout=BARRIER_TIMEOUT) as client:
        start.wait()  # connected (hello answered)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            client.barrier("bench")
            samples.append(time.perf_counter() - t0)
        out.put(samples)  # before closing, as the raw participant does


# -- driver ------------------------------------------------------------------------------


def run_size(kind: str, size: int, rounds: int) -> tuple[list[float], float]:
    """One run of `rounds` barriers of `size` processes: (call times, barriers/s)."""
    ctx = mp.get_context("fork")
    ports, out = ctx.Queue(), ctx.Queue()
    stop, start = ctx.Event(), ctx.Barrier(size + 1, timeout=120)
    server_fn = raw_server if kind == "raw" else mhtest_server
    server = ctx.Process(target=server_fn, args=(ports, size, stop), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    procs = []
    for i in range(size):
        args: tuple = (port, rounds, out, start)
        if kind == "raw":
            target: Any = raw_participant
        else:
            target, args = mhtest_participant, (*args, f"p{i}")
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        procs.append(proc)
    start.wait()  # everybody connected
    t0 = time.perf_counter()
    results = [out.get(timeout=BARRIER_TIMEOUT * 2) for _ in procs]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join(30)
    stop.set()
    server.join(30)
    return [s for r in results for s in r[WARMUP:]], rounds / wall


def measure(size: int, rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Alternate raw and mhtest runs so that both see the same machine load.

    Each repeat is a pair of runs back to back; the ratio reported is the median over
    the pairs of (mhtest p50 / raw p50), so that a burst of load from other processes
    on the machine lands on both sides of a pair rather than on one tool.
    """
    samples: dict[str, list[float]] = {"raw": [], "mhtest": []}
    rates: dict[str, list[float]] = {"raw": [], "mhtest": []}
    pair_ratios = []
    for i in range(repeats):
        p50 = {}
        for kind in ("raw", "mhtest") if i % 2 == 0 else ("mhtest", "raw"):
            got, rate = run_size(kind, size, rounds // repeats + WARMUP)
            samples[kind] += got
            rates[kind].append(rate)
            p50[kind] = statistics.median(got)
        pair_ratios.append(p50["mhtest"] / p50["raw"])
    out: dict[str, dict[str, float]] = {}
    for kind, values in samples.items():
        values.sort()
        out[kind] = {
            "p50_ms": statistics.median(values) * 1e3,
            "p99_ms": values[int(len(values) * 0.99) - 1] * 1e3,
            "per_s": statistics.median(rates[kind]),
        }
    out["mhtest"]["ratio"] = statistics.median(pair_ratios)
    out["mhtest"]["ratio_min"] = min(pair_ratios)
    out["mhtest"]["ratio_max"] = max(pair_ratios)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_barrier(size: int) -> dict[str, float]:
    """`size` threads, one SyncClient each, meet once; the server runs in its own process."""
    import zmq

    from mhtest.sync.client import SyncClient

    mpctx = mp.get_context("fork")
    ports = mpctx.Queue()
    stop = mpctx.Event()
    server = mpctx.Process(target=mhtest_server, args=(ports, size, stop), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    idle_rss = rss_mb(server.pid)
    zctx = zmq.Context()
    zctx.set(zmq.MAX_SOCKETS, size * 2 + 64)
    clients: list[Any] = [None] * size
    joined = threading.Barrier(size + 1, timeout=120)
    finished: list[float] = []
    errors: list[BaseException] = []

    def participant(i: int) -> None:
        try:
            clients[i] = SyncClient(
                f"tcp://127.0.0.1:{port}", f"t{i}", heartbeat=5.0, context=zctx, timeout=120
            )
            joined.wait()
            clients[i].barrier("all")
            finished.append(time.perf_counter())
        except BaseException as exc:  # noqa: BLE001 - counted and reported
            errors.append(exc)
            joined.abort()

    threads = [threading.Thread(target=participant, args=(i,), daemon=True) for i in range(size)]
    for t in threads:
        t.start()
    joined.wait()
    connected_rss = rss_mb(server.pid)
    t0 = time.perf_counter()
    for t in threads:
        t.join(180)
    done = max(finished) - t0 if finished else float("nan")
    after_rss = rss_mb(server.pid)
    for c in clients:
        if c is not None:
            c.close()
    zctx.term()
    stop.set()
    server.join(30)
    if errors:
        raise SystemExit(f"{len(errors)} participants failed: {errors[0]}")
    return {
        "completed": len(finished),
        "seconds": done,
        "rss_idle": idle_rss,
        "rss_connected": connected_rss,
        "rss_after": after_rss,
    }


SHELL_LOOP = (
    "for i in $(seq {rounds}); do t0=$(date +%s%N); {command} >/dev/null || exit 1; "
    "t1=$(date +%s%N); echo $((t1 - t0)); done"
)


def shell_loop(command: str, rounds: int) -> float:
    """p50 (ms) of `command` run `rounds` times by a sh loop."""
    import subprocess

    script = SHELL_LOOP.format(rounds=rounds, command=command)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=600)
    return statistics.median(int(x) / 1e6 for x in out.stdout.split())


def shell_barrier(rounds: int) -> dict[str, float]:
    """p50 (ms) of `mhtest sync barrier` by two shell workers, and of what it is made of."""
    import subprocess

    from mhtest.runners.workerbin import bin_dir
    from mhtest.sync.keys import make_run_keys
    from mhtest.sync.server import SyncServer

    names = ["w1", "w2"]
    keys = make_run_keys(names)
    path = bin_dir() + os.pathsep + os.environ.get("PATH", os.defpath)
    python = sys.executable
    result: dict[str, float] = {}
    with SyncServer(expected=names, run_keys=keys) as server:

        def worker_env(name: str, agent: bool) -> dict[str, str]:
            env = {
                **os.environ,
                **keys.client_env(name),
                "MHTEST_SYNC_ADDRESS": server.address,
                "MHTEST_SYNC_PARTICIPANT": name,
                "MHTEST_SYNC_COUNT": "2",
                "PATH": path,
            }
            env.pop("MHTEST_SYNC_AGENT", None)
            if agent:  # as mhtest.runners.workerbin gives each worker
                env["MHTEST_SYNC_AGENT"] = f"@mhtest-sync-{secrets.token_hex(16)}"
            return env

        def barrier_p50(command: str, agent: bool = True) -> float:
            script = SHELL_LOOP.format(rounds=rounds, command=command)
            procs = [
                subprocess.Popen(
                    ["sh", "-c", script],
                    env=worker_env(n, agent),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for n in names
            ]
            out = [p.communicate(timeout=900)[0] for p in procs]
            if any(p.returncode for p in procs):
                raise SystemExit(f"{command} failed in the shell loop")
            return statistics.median(int(x) / 1e6 for o in out for x in o.split())

        result["barrier"] = barrier_p50("mhtest sync barrier b")
        result["direct"] = barrier_p50("mhtest sync barrier c", agent=False)
        result["full_cli"] = barrier_p50(f"{python} -m mhtest sync barrier d")
    result["python"] = shell_loop(f"{python} -SE -c pass", rounds)
    result["site"] = shell_loop(f"{python} -c pass", rounds)
    result["zmq"] = shell_loop(f"{python} -c 'import zmq'", rounds)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,8,32")
    parser.add_argument("--rounds", type=int, default=0, help="barriers per size (default by size)")
    parser.add_argument("--repeats", type=int, default=6, help="alternating run pairs per size")
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--shell", type=int, default=40, help="shell barriers per worker (0: none)")
    opts = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 16384)), hard))
    print(f"sync barrier benchmark, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'N':>4} {'tool':<7} {'p50 ms':>8} {'p99 ms':>8} {'barriers/s':>11}  p50 ratio")
    ratios: dict[int, float] = {}
    spreads: dict[int, tuple[float, float]] = {}
    for size in (int(s) for s in opts.sizes.split(",") if s):
        rounds = opts.rounds or {2: 2000, 8: 800}.get(size, 400)
        both = measure(size, rounds, opts.repeats)
        raw, ours = both["raw"], both["mhtest"]
        ratios[size] = ours["ratio"]
        spreads[size] = (ours["ratio_min"], ours["ratio_max"])
        for tool, r in (("raw", raw), ("mhtest", ours)):
            ratio = ""
            if tool == "mhtest":
                low, high = spreads[size]
                ratio = f"{ratios[size]:.2f}x (pairs {low:.2f}-{high:.2f})"
            print(
                f"{size:>4} {tool:<7} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                f"{r['per_s']:>11.0f}  {ratio}"
            )
    if opts.big:
        big = big_barrier(opts.big)
        print(
            f"{opts.big}-participant barrier (threads): {big['completed']} completed in "
            f"{big['seconds']:.2f} s; server RSS {big['rss_idle']:.1f} MB idle, "
            f"{big['rss_connected']:.1f} MB with all connected, {big['rss_after']:.1f} MB after"
        )
    if opts.shell:
        shell = shell_barrier(opts.shell)
        print(
            f"`mhtest sync barrier` from a shell loop, 2 workers: p50 {shell['barrier']:.1f} ms "
            f"(target < 100 ms); each command connecting itself (no agent): "
            f"{shell['direct']:.1f} ms; through `python -m mhtest`: {shell['full_cli']:.1f} ms. "
            f"Parts: python -SE -c pass {shell['python']:.1f} ms, python -c pass "
            f"{shell['site']:.1f} ms, python -c 'import zmq' {shell['zmq']:.1f} ms"
        )
    worst = max(ratios.values()) if ratios else float("nan")
    print(
        f"target: mhtest p50 <= 1.5x raw at each size (median of the pairs' ratios); "
        f"worst {worst:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
