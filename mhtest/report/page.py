"""Render results.html from a finished job with Jinja2 (templates/ beside this module).

One page, nothing fetched: the stylesheet, the script and each multi-host test's timeline
data are inline. The test table is rendered here (it reads without a script); the script
filters it, opens a test's details and draws the timelines (mhtest.report.timeline).
"""

from __future__ import annotations

import functools
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
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = lambda v: f"{v:.2f}"
    return env


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
    return (
        _environment()
        .get_template("results.html.j2")
        .render(
            job_id=job.unique_id,
            start=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time or time.time())),
            elapsed=job.time_elapsed,
            interrupted=getattr(job, "interrupted", None),
            counts=[(s, n) for s, n in counts.items() if n],
            total=len(results),
            failed=sum(counts[s] for s in events.FAILED_STATUSES),
            rows=[_row(r, base) for r in results],
            timelines=timelines,
            css=_asset("report.css"),
            script=_asset("report.js"),
            version=__version__,
        )
    )
