"""results.html in a real headless Chromium (Debian's): a multi-host run's timeline, its
lanes, barrier spans, who came last, the failing worker's reason, the abort it caused; the
table's filter. A screenshot of the page stays in the test's directory (results.png).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mhtest.report.testing import Chromium, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="no Chromium (scripts/setup --test installs Debian's)"
)

MEETING = '''
import time

from mhtest import MultiHostTest, Test


class Meeting(MultiHostTest):
    default_local_workers = 3

    def test(self):
        self.run_workers([
            self.worker("meeting.py:Member.test", host, {"fail": i == 2}, name=f"m{i + 1}")
            for i, host in enumerate(self.hosts)
        ])


class Member(Test):
    """:mhtest: worker"""

    def setUp(self):
        time.sleep(0.05)

    def test(self):
        me = self.params.get("host")
        rank = int(me[1:])
        for _ in range(3):
            time.sleep(0.4 if rank == 3 else 0.01)  # m3 comes last to every round
            self.sync.barrier("round", timeout=30)
        self.sync.exchange("ports", 8000 + rank, timeout=30)
        with self.sync.lock("disk", timeout=30):
            time.sleep(0.03)
        if self.params.get("fail"):
            time.sleep(0.5)  # the others wait at the next barrier meanwhile
            self.fail(f"{me} found a broken disk")
        self.sync.barrier("after-disk", timeout=30)  # aborted: m3 failed

    def tearDown(self):
        time.sleep(0.02)
'''


def dom(browser: Chromium, expression: str):
    return browser.evaluate(expression)


@pytest.mark.timeout(120)
def test_results_html_in_chromium(mhtest, write_tests, tmp_path) -> None:
    base = write_tests(
        {"meeting.py": MEETING, "plain.sh": "#!/bin/sh\necho plain\n"}, executable=("plain.sh",)
    )
    run = mhtest("run", str(base / "meeting.py"), str(base / "plain.sh"))
    assert run.code == 1, run
    page = run.job_dir / "results.html"
    uid = run.result("meeting.py:Meeting.test")["uid"]
    with Chromium(width=1400, height=900) as browser:
        browser.open(page)
        assert dom(browser, "document.body.dataset.rendered") is not None
        lanes = f'.timeline[data-uid="{uid}"] .lane'
        assert dom(
            browser, f"[...document.querySelectorAll('{lanes}')].map(l => l.dataset.worker)"
        ) == ["m1", "m2", "m3"]
        # Every member's three arrivals at "round", from arrival to release; m3 came last.
        rounds = dom(
            browser,
            f"""[...document.querySelectorAll('{lanes} .span.barrier[data-name="round"]')]
            .map(s => [s.closest('.lane').dataset.worker, s.classList.contains('last'),
                       s.dataset.outcome, parseFloat(s.style.width)])""",
        )
        assert len(rounds) == 9
        assert sorted(w for w, last, _, _ in rounds if last) == ["m3", "m3", "m3"]
        assert {o for _, _, o, _ in rounds} == {"done"}
        assert all(width > 0 for w, last, _, width in rounds if w == "m1")  # m1 waited
        # The barrier after the disk: m1 and m2 arrived, it was aborted by m3's failure.
        aborted = dom(
            browser,
            f"""[...document.querySelectorAll('{lanes} .span.barrier[data-name="after-disk"]')]
            .map(s => [s.closest('.lane').dataset.worker, s.dataset.outcome])""",
        )
        assert sorted(aborted) == [["m1", "aborted"], ["m2", "aborted"]]
        assert (
            dom(browser, f"document.querySelectorAll('{lanes} .mark.abort[data-by=\"m3\"]').length")
            >= 1
        )
        # The failing worker's reason on its lane and in the workers' table.
        reason = dom(
            browser,
            f"document.querySelector('{lanes}[data-worker=\"m3\"] .label .reason').textContent",
        )
        assert "m3 found a broken disk" in reason
        cell = dom(
            browser, "document.querySelector('tr.worker[data-worker=\"m3\"] .reason').textContent"
        )
        assert "m3 found a broken disk" in cell
        # setUp, test and tearDown of each member; the exchange; the lock held by each.
        for kind, count in (
            ("phase.setUp", 3),
            ("phase.test", 3),
            ("phase.tearDown", 3),
            ("exchange", 3),
            ("lock", 3),
        ):
            assert (
                dom(browser, f"document.querySelectorAll('{lanes} .span.{kind}').length") == count
            ), kind
        browser.screenshot(tmp_path / "results.png")
        # The table: filtered by a word of a reason, then by a status button.
        dom(
            browser,
            "(() => { const f = document.getElementById('filter'); f.value = 'broken disk';"
            " f.dispatchEvent(new Event('input')); })()",
        )
        assert dom(browser, "document.getElementById('shown').textContent") == "1 shown"
        dom(
            browser,
            "(() => { const f = document.getElementById('filter'); f.value = '';"
            " f.dispatchEvent(new Event('input'));"
            " document.querySelector('button.status[data-status=\"PASS\"]').click(); })()",
        )
        visible = dom(
            browser,
            "[...document.querySelectorAll('tr.test')]"
            ".filter(r => !r.hidden).map(r => r.dataset.status)",
        )
        assert visible == ["PASS"]
        # Whiteboard and logs a click away: a click opens the plain test's details.
        dom(browser, "document.querySelector('tr.test[data-status=\"PASS\"]').click()")
        links = dom(
            browser,
            "[...document.querySelector('tr.test[data-status=PASS]')"
            ".nextElementSibling.querySelectorAll('a')].map(a => a.getAttribute('href'))",
        )
        assert any(href.endswith("/stdout") for href in links)
        stdout = (page.parent / next(h for h in links if h.endswith("/stdout"))).read_text()
        assert stdout == "plain\n"
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    print(f"screenshot: {tmp_path / 'results.png'}")
    # The page needs no network: no src= or href= leaves the results directory.
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    record = [
        json.loads(line)
        for line in (Path(run.result("meeting.py:Meeting.test")["logdir"]) / "sync.jsonl")
        .read_text()
        .splitlines()
    ]
    assert any(e["event"] == "barrier" and e["name"] == "round" for e in record)
