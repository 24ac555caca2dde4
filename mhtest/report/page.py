"""Render results.html from a finished job; its stylesheet and script are in templates/ here.

One page, nothing fetched: the stylesheet, the script and each multi-host test's timeline
data are inline. The test table is rendered here (it reads without a script); the script
filters it, opens a test's details and draws the timelines (mhtest.report.timeline).
"""

from __future__ import annotations

import functools
import html
import json
import os
import time
from pathlib import Path
from typing import Any

from mhtest import __version__, events
from mhtest.report import timeline
from mhtest.results import count_statuses

TEMPLATES = Path(__file__).parent / "templates"
#: A whiteboard or reason longer than this is cut on the page (the files keep it whole).
MAX_TEXT = 20_000


@functools.lru_cache(maxsize=1)
def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _cut(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


def _json_script(data: Any) -> str:
    """JSON safe inside a <script> element: no "<" at all (nothing can end it early or put
    the HTML parser in another state), nor "&" or ">"."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _row(result: Any, base: Path) -> dict[str, Any]:
    try:
        logdir = os.path.relpath(result.logdir, base) if result.logdir else ""
    except ValueError:
        logdir = result.logdir
    return {
        "uid": result.uid,
        "name": result.name,
        "status": result.status,
        "host": result.host,
        "time": result.time,
        "reason": _cut(result.fail_reason),
        "whiteboard": _cut(result.whiteboard),
        "logdir": logdir,
        "workers": [_row(c, base) for c in result.children],
    }


def render(job: Any) -> str:
    """The text of results.html for `job` (a finished mhtest.job.Job)."""
    results = sorted(job.results, key=lambda r: r.uid)
    base = Path(job.logdir)
    timelines = {}
    for r in results:
        if r.children:
            data = timeline.build(r)
            if data is not None:
                timelines[r.uid] = _json_script(data)
    counts = count_statuses(results)
    total = len(results)
    failed = sum(counts[s] for s in events.FAILED_STATUSES)
    job_id = _e(job.unique_id[:12])
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time or time.time()))
    interrupted = getattr(job, "interrupted", None)
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>mhtest job {job_id}: {failed} of {total} not passed</title>\n"
        f'<style>{_asset("report.css")}</style>\n</head>\n<body>\n<header id="summary">\n'
        f"  <h1>mhtest job <code>{job_id}</code></h1>\n"
        f'  <p class="meta">started {start} · {_seconds(job.time_elapsed)} s · {total} '
        f"test{'' if total == 1 else 's'}\n"
    ]
    if interrupted:
        out.append(f' · <strong class="INTERRUPT">interrupted: {_e(interrupted)}</strong>')
    out.append(f'  · mhtest {_e(__version__)}</p>\n  <p class="counts">\n')
    for status, count in counts.items():
        if count:
            status = _e(status)
            out.append(
                f'    <button type="button" class="status {status}" data-status="{status}" '
                f'aria-pressed="false">{status} {count}</button>\n'
            )
    out.append(
        '  </p>\n</header>\n<main>\n<div class="filter">\n'
        '  <input id="filter" type="search" placeholder="filter: name, host, status or reason" '
        'aria-label="filter tests">\n'
        f'  <span id="shown">{total} shown</span>\n</div>\n<table id="tests">\n'
        "<thead><tr><th>#</th><th>test</th><th>status</th><th>host</th><th>time (s)</th>"
        "<th>reason</th></tr></thead>\n<tbody>\n"
    )
    for result in results:
        _test_rows(out, _row(result, base), timelines)
    out.append(f"</tbody>\n</table>\n</main>\n<script>{_asset('report.js')}</script>\n")
    out.append("</body>\n</html>")
    return "".join(out)


def _e(value: Any) -> str:
    """Text for HTML (an element's content or a quoted attribute)."""
    return html.escape(str(value if value is not None else ""), quote=True)


def _seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else _e(value)


def _links(logdir: str, names: tuple[str, ...]) -> str:
    if not logdir:
        return ""
    where = _e(logdir)
    links = [f'<a href="{where}/{name}">{name}</a>' for name in names]
    return " · ".join(links)


def _test_rows(out: list[str], r: dict[str, Any], timelines: dict[int, str]) -> None:
    """The two rows of one test in the table: its line and its (hidden) details."""
    uid, status = _e(r["uid"]), _e(r["status"])
    workers = r["workers"]
    tag = f' <span class="tag">{len(workers)} workers</span>' if workers else ""
    out.append(
        f'<tr class="test {status}" id="t{uid}" data-uid="{uid}" data-status="{status}" '
        f'tabindex="0">\n<td>{uid}</td><td class="name">{_e(r["name"])}{tag}</td>\n'
        f'<td><span class="status {status}">{status}</span></td><td>{_e(r["host"])}</td>'
        f'<td class="num">{_seconds(r["time"])}</td>\n'
        f'<td class="reason">{_e(r["reason"])}</td></tr>\n'
        f'<tr class="details" id="d{uid}" hidden><td colspan="6">\n<p class="links">'
    )
    links = _links(r["logdir"], ("debug.log", "stdout", "stderr"))
    if links:
        links += f' · <a href="{_e(r["logdir"])}/">results directory</a>'
    out.append(f"{links}</p>\n")
    if r["reason"]:
        out.append(f'<pre class="reason">{_e(r["reason"])}</pre>\n')
    if r["whiteboard"]:
        out.append(f'<h3>whiteboard</h3><pre class="whiteboard">{_e(r["whiteboard"])}</pre>\n')
    if r["uid"] in timelines:
        out.append(
            f'<h3>timeline</h3>\n<div class="timeline" data-uid="{uid}"></div>\n'
            f'<script type="application/json" class="timeline-data" data-uid="{uid}">'
            f"{timelines[r['uid']]}</script>\n"
        )
    if workers:
        out.append(
            '<h3>workers</h3>\n<table class="workers"><thead><tr><th>worker</th><th>host</th>'
            "<th>status</th><th>time (s)</th><th>reason</th><th>logs</th></tr></thead><tbody>\n"
        )
        for w in workers:
            ws = _e(w["status"])
            board = ""
            if w["whiteboard"]:
                board = (
                    f" <details><summary>whiteboard</summary><pre>{_e(w['whiteboard'])}</pre>"
                    "</details>"
                )
            out.append(
                f'<tr class="worker {ws}" data-worker="{_e(w["name"])}"><td>{_e(w["name"])}</td>'
                f'<td>{_e(w["host"])}</td><td><span class="status {ws}">{ws}</span></td>'
                f'<td class="num">{_seconds(w["time"])}</td><td class="reason">{_e(w["reason"])}'
                f"</td>\n<td>{_links(w['logdir'], ('debug.log', 'stdout'))}{board}</td></tr>\n"
            )
        out.append("</tbody></table>\n")
    out.append("</td></tr>\n")
