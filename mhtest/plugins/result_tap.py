"""Result plugin: results.tap (Test Anything Protocol, version 13)."""

from __future__ import annotations

from typing import Any

from mhtest import events
from mhtest.plugins.result_json import write_atomic


class TAPResult:
    """results.tap: one `ok`/`not ok` line per test, SKIP/CANCEL as directives."""

    name = "tap"

    def render(self, job: Any) -> None:
        lines = ["TAP version 13", f"1..{len(job.results)}"]
        for i, r in enumerate(sorted(job.results, key=lambda r: r.uid), 1):
            desc = r.name.replace("#", "_")
            reason = (r.fail_reason or "").replace("\n", " ")
            if r.status in (events.PASS, events.WARN):
                line = f"ok {i} - {desc}" + (" # WARN " + reason if r.status == events.WARN else "")
            elif r.status in (events.SKIP, events.CANCEL):
                line = f"ok {i} - {desc} # SKIP {r.status}: {reason}"
            else:
                line = f"not ok {i} - {desc}"
            lines.append(line)
            if r.status in (events.FAIL, events.ERROR, events.INTERRUPT):
                lines.append(
                    f"  ---\n  status: {r.status}\n  reason: {reason!r}\n  host: {r.host}\n  ..."
                )
        write_atomic(job.logdir / "results.tap", "\n".join(lines) + "\n")
