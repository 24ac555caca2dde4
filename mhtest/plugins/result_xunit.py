"""Result plugin: results.xml in the JUnit shape Jenkins reads."""

from __future__ import annotations

import datetime
import socket
from typing import Any
from xml.etree import ElementTree as ET

from mhtest import events
from mhtest.plugins.result_json import write_atomic
from mhtest.results import count_statuses

MAX_TEXT = 100_000


def _clean(text: str) -> str:
    """Drop characters XML 1.0 cannot carry."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r"
        or 0x20 <= ord(ch) <= 0xD7FF
        or 0xE000 <= ord(ch) <= 0xFFFD
        or 0x10000 <= ord(ch) <= 0x10FFFF
    )


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return ""
    return _clean(data[-MAX_TEXT:].decode("utf-8", "replace"))


class XUnitResult:
    """results.xml: a <testsuite> with one <testcase> per test."""

    name = "xunit"

    def render(self, job: Any) -> None:
        results = sorted(job.results, key=lambda r: r.uid)
        counts = count_statuses(results)
        suite = ET.Element(
            "testsuite",
            name="mhtest",
            tests=str(len(results)),
            errors=str(counts[events.ERROR] + counts[events.INTERRUPT]),
            failures=str(counts[events.FAIL]),
            skipped=str(counts[events.SKIP] + counts[events.CANCEL]),
            time=f"{job.time_elapsed:.3f}",
            timestamp=datetime.datetime.fromtimestamp(job.start_time).strftime("%Y-%m-%dT%H:%M:%S"),
            hostname=socket.gethostname(),
        )
        for r in results:
            classname, _, name = r.ref.rpartition(":")
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_clean(classname or "simple")
                + (f"@{r.host}" if r.host != "local" else ""),
                name=_clean(name or r.ref),
                time=f"{r.time:.3f}",
            )
            reason = _clean(r.fail_reason or "")
            if r.status == events.FAIL:
                ET.SubElement(case, "failure", type=r.fail_class or "TestFail", message=reason)
            elif r.status in (events.ERROR, events.INTERRUPT):
                ET.SubElement(case, "error", type=r.fail_class or r.status, message=reason)
            elif r.status in (events.SKIP, events.CANCEL):
                ET.SubElement(case, "skipped", message=f"{r.status}: {reason}")
            if r.status not in (events.PASS, events.SKIP):
                debug = _tail(f"{r.logdir}/debug.log")
                if debug:
                    ET.SubElement(case, "system-out").text = debug
        ET.indent(suite)
        text = ET.tostring(suite, encoding="unicode", xml_declaration=False)
        write_atomic(
            job.logdir / "results.xml", '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
        )
