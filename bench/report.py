#!/usr/bin/env python3
"""Benchmark: results.html for a large job, and a big timeline drawn in a real browser.

    python3 bench/report.py [--tests 10000] [--workers 32] [--barriers 1000] [--rounds 3]

1. A job of --tests tests (every status, reasons, whiteboards): the time the html result
   plugin takes to render and write results.html, and its size (targets: < 2 s, < 10 MB).
2. A multi-host test of --workers workers that met at --barriers barriers (its sync.jsonl
   as the sync server writes it): results.html opened in headless Chromium (Debian's,
   driven over the DevTools pipe, mhtest.report.testing); the time from navigation to the
   timeline drawn (the page's own performance.now() when its script is done) and to the
   load event (target: < 2 s). Medians of --rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhtest.plugins.result_html import HTMLResult  # noqa: E402
from mhtest.report.testing import Chromium, sample_job  # noqa: E402


def write_big(tests: int, rounds: int) -> tuple[float, int]:
    times, size = [], 0
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-report-") as tmp:
        job = sample_job(Path(tmp), tests=tests)
        for _ in range(rounds):
            started = time.perf_counter()
            HTMLResult().render(job)
            times.append(time.perf_counter() - started)
            size = (Path(tmp) / "results.html").stat().st_size
    return statistics.median(times), size


def draw_timeline(workers: int, barriers: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-report-") as tmp:
        job = sample_job(Path(tmp), tests=0, workers=workers, barriers=barriers)
        started = time.perf_counter()
        HTMLResult().render(job)
        write = time.perf_counter() - started
        page = Path(tmp) / "results.html"
        drawn, loads, spans = [], [], 0
        with Chromium() as browser:
            for _ in range(rounds):
                loads.append(browser.open(page))
                drawn.append(float(browser.evaluate("document.body.dataset.rendered")) / 1000)
                spans = browser.evaluate("document.querySelectorAll('.span.barrier').length")
        return {
            "write": write,
            "size": page.stat().st_size,
            "drawn": statistics.median(drawn),
            "load": statistics.median(loads),
            "spans": spans,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--barriers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    seconds, size = write_big(opts.tests, opts.rounds)
    print(
        f"results.html of {opts.tests} tests: written in {seconds:.2f} s, {size / 1e6:.1f} MB "
        "(targets: < 2 s, < 10 MB)"
    )
    t = draw_timeline(opts.workers, opts.barriers, opts.rounds)
    print(
        f"timeline of {opts.workers} workers x {opts.barriers} barriers ({t['spans']} spans): "
        f"page written in {t['write']:.2f} s, {t['size'] / 1e6:.1f} MB; in Chromium drawn "
        f"{t['drawn']:.2f} s after navigation, load event after {t['load']:.2f} s (target < 2 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
