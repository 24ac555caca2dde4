"""results.html: the timeline data of a multi-host test, the page's text, its size and speed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mhtest.plugins.result_html import HTMLResult
from mhtest.report import timeline
from mhtest.report.page import render
from mhtest.report.testing import sample_job
from mhtest.results import TestResult
from mhtest.sync.record import SyncRecord

pytestmark = pytest.mark.timeout(60)


def _worker(name: str, start: float, end: float, **kw) -> TestResult:
    return TestResult(
        uid=0,
        name=name,
        ref="w.py:W.test",
        status=kw.pop("status", "PASS"),
        start=start,
        end=end,
        **kw,
    )


def test_timeline_of_a_recorded_run(tmp_path: Path) -> None:
    record = SyncRecord(["a", "b"])
    t = time.monotonic()
    record.events += [
        ("barrier", t + 1.0, ("go", 1, 2, "done", [("a", t + 0.2), ("b", t + 0.9)], None, None)),
        ("post", t + 1.1, ("a", "msg")),
        ("wait", t + 1.2, (t + 1.05, "b", "msg", "done")),
        ("lock", t + 1.3, (t + 1.3, "a", "disk")),
        ("unlock", t + 1.5, ("a", "disk")),
        ("lock", t + 1.6, (t + 1.55, "b", "disk")),  # never given back
        ("abort", t + 1.7, ("b", "b broke")),
        ("gone", t + 1.8, ("b", "worker b ended FAIL: b broke")),
    ]
    record.write(tmp_path / "sync.jsonl")
    start = record.wall(t)
    result = TestResult(
        uid=1,
        name="1-m.py:M.test",
        ref="m.py:M.test",
        status="FAIL",
        logdir=str(tmp_path),
        children=[
            _worker(
                "a",
                start,
                start + 2,
                phases=[["setUp", start, start + 0.1], ["test", start + 0.1, start + 1.9]],
            ),
            _worker("b", start, start + 2, status="FAIL", fail_reason="b broke"),
        ],
    )
    data = timeline.build(result)
    a, b = data["lanes"]
    assert (a["name"], b["name"], b["status"], b["reason"]) == ("a", "b", "FAIL", "b broke")
    t0 = min(record.wall(record._mono0), start)
    ms = lambda s: round((s - t0) * 1000)  # noqa: E731
    assert a["phases"] == [
        ["setUp", ms(start), ms(start + 0.1)],
        ["test", ms(start + 0.1), ms(start + 1.9)],
    ]
    assert b["phases"] == [["test", ms(start), ms(start + 2)]]  # a simple test: one phase
    ((kind, name, gen, release, outcome, arrivals, last, by, why),) = data["rendezvous"]
    assert (kind, name, gen, outcome, last, by) == ("barrier", "go", 1, "done", 1, "")
    assert [lane for lane, _ in arrivals] == [0, 1]
    assert arrivals[1][1] - arrivals[0][1] == pytest.approx(700, abs=2)
    assert release >= arrivals[1][1]
    assert [w[0] for w in data["waits"]] == [1]
    assert [(lk[0], lk[3]) for lk in data["locks"]] == [(0, "disk"), (1, "disk")]
    assert data["locks"][1][2] == data["span"]  # still held at the end
    kinds = [(m[0], m[2]) for m in data["marks"]]
    assert kinds == [(0, "post"), (1, "abort"), (1, "gone")]


def test_a_test_without_workers_has_no_timeline() -> None:
    assert timeline.build(TestResult(uid=1, name="x", ref="x", status="PASS")) is None


def test_the_page_escapes_what_tests_report(tmp_path: Path) -> None:
    job = sample_job(tmp_path, tests=2, workers=2, barriers=2)
    evil = "</script><script>alert(1)</script> & <b>"
    job.results[0].fail_reason = evil
    job.results[0].whiteboard = evil
    job.results[-1].children[0].fail_reason = evil
    text = render(job)
    assert "<script>alert(1)" not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in text
    # The timeline data is JSON whose "</" cannot end its script element.
    blobs = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', text, re.S)
    assert len(blobs) == 1
    data = json.loads(blobs[0])
    assert data["lanes"][0]["reason"] == evil


def test_ten_thousand_tests(tmp_path: Path) -> None:
    job = sample_job(tmp_path, tests=10_000)
    started = time.perf_counter()
    HTMLResult().render(job)
    took = time.perf_counter() - started
    size = (tmp_path / "results.html").stat().st_size
    assert size < 10_000_000
    assert took < 2.0, f"results.html of 10,000 tests took {took:.2f} s"
    text = (tmp_path / "results.html").read_text()
    assert text.count('<tr class="test ') == 10_000
    assert "http://" not in text and "https://" not in text  # nothing fetched


def test_migrations_from_the_workers_whiteboards(tmp_path: Path) -> None:
    now = time.time()
    move = {
        "id": 1,
        "vm": "vm1",
        "src": "h1",
        "dst": "h2",
        "status": "completed",
        "downtime": 42,
        "total-time": 900,
        "start": now + 1,
        "end": now + 2,
    }
    result = TestResult(
        uid=1,
        name="1-m.py:M.test",
        ref="m.py:M.test",
        status="PASS",
        logdir=str(tmp_path),
        children=[
            _worker("h1", now, now + 3, whiteboard=json.dumps({"migrations": [move]})),
            _worker("h2", now, now + 3, whiteboard="not json"),
        ],
    )
    data = timeline.build(result)
    ((lane, start, end, text, status),) = data["migrations"]
    assert (lane, start, end, status) == (0, 1000, 2000, "completed")
    assert text == "migration 1 of vm1: h1 to h2, completed, downtime 42 ms, total 900 ms"
