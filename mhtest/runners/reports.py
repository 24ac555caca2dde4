"""What a host's run reports, taken in: one start and one end per test, results on disk first.

The RemoteTestRunner (mhtest.runners.remote) hands every event line of a host's run to
`HostReports`: the events it uses are checked and bounded (mhtest.runners.untrusted) and
passed on under this side's test ids; each test's results archive is spooled piece by
piece and extracted before its end is passed on; what arrives for a test that has ended
(or twice) is dropped, so a run followed again after a dropped connection reports each
test once.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from typing import Callable

from mhtest import events
from mhtest.runners import untrusted
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: How many lines that are not events are logged per host.
MAX_BAD_LINES = 10


class HostReports:
    """One host's events and results as they arrive (`sink` gets what is passed on)."""

    def __init__(self, host: str, sink: Callable[[dict], None], max_results: int) -> None:
        self.host = host
        self.sink = sink
        self.max_results = max_results
        self.ended: set[int] = set()
        self.started: set[int] = set()
        #: Tests run again after their host's reboot: their next start is passed on too.
        self.resumed: set[int] = set()
        self.spools: dict[int, tuple[TestSpec, untrusted.ResultsSpool]] = {}
        self.files_done: set[int] = set()
        #: Why a test's results were refused: its end becomes ERROR with that reason.
        self.refused: dict[int, str] = {}
        self.bad_lines = 0
        self.info_seen = False
        self.last_piece = 0.0  # when a piece of results last arrived in time (monotonic)
        #: Each test's results so far: [when the first piece came (monotonic), bytes].
        self.flow: dict[int, list[float]] = {}
        self.nested_made: dict[int, int] = {}  # results each test made as it ran

    def bad_line(self, exc: Exception, line: bytes) -> None:
        """Log the first few lines that are not events (a host could send any number)."""
        self.bad_lines += 1
        if self.bad_lines <= MAX_BAD_LINES:
            LOG.warning("%s: bad event line (%s): %.200r", self.host, exc, line)
        elif self.bad_lines == MAX_BAD_LINES + 1:
            LOG.warning("%s: more bad event lines; no longer logging them", self.host)

    def event(self, event: dict, by_uid: dict[int, tuple[TestSpec, TestSpec]]) -> None:
        if event["type"] == events.HOST_INFO:
            self.host_info(event)
            return
        pair = by_uid.get(event.get("uid"))
        if pair is None or pair[0].uid in self.ended:
            return  # not one of this host's tests, or already ended: nothing more counts
        local, _remote = pair
        kind = event["type"]
        if kind == events.TEST_FILES:
            self.receive_files(local, event)
            return
        if kind == events.TEST_START:
            if local.uid in self.started and local.uid not in self.resumed:
                return
            self.resumed.discard(local.uid)
            self.started.add(local.uid)
        elif kind in (events.TEST_END, events.TEST_SKIPPED):
            self.ended.add(local.uid)
            self.results_done(local)
        elif kind == events.TEST_NESTED:
            self.nested(local, event)
            return
        else:
            return  # no other event from a host is used
        event = untrusted.bound_end(event, self.host)
        event["host"] = self.host
        event["uid"] = local.uid
        refused = self.refused.pop(local.uid, None)
        if refused and kind == events.TEST_END:
            was = event.get("status")
            event.update(
                status=events.ERROR,
                fail_class=None,
                fail_reason=f"{self.host}: {refused} (the test itself ended {was})",
            )
        self.sink(event)

    def nested(self, spec: TestSpec, event: dict) -> None:
        """A result the test made as it ran (a client control file's run_test), bounded.

        Its files come with the test's own, before the test's end.
        """
        made = self.nested_made.get(spec.uid, 0)
        if made >= untrusted.MAX_NESTED:
            if made == untrusted.MAX_NESTED:
                LOG.warning(
                    "%s: %s made over %d results: the rest are left out", self.host, spec.name, made
                )
                self.nested_made[spec.uid] = made + 1
            return
        self.nested_made[spec.uid] = made + 1
        event = untrusted.bound_nested(event, self.host)
        event["host"] = self.host
        event["uid"] = spec.uid
        self.sink(event)

    def host_info(self, event: dict) -> None:
        """The host's facts (kernel, distribution, …), once, checked and bounded."""
        from mhtest import sysinfo

        if self.info_seen:
            return
        self.info_seen = True
        facts = sysinfo.bounded(event.get("facts"))
        self.sink({"type": events.HOST_INFO, "host": self.host, "facts": facts})

    def receive_files(self, spec: TestSpec, event: dict) -> None:
        """A piece of the test's results archive: spooled; the last one is extracted."""
        if spec.uid in self.files_done:
            return  # extracted (or refused) already: more from the host is ignored
        if spec.uid not in self.spools:
            parent = os.path.dirname(spec.logdir.rstrip("/")) or "."
            spool = untrusted.ResultsSpool(parent, self.max_results)
            self.spools[spec.uid] = (spec, spool)
        spool = self.spools[spec.uid][1]
        size = 0
        try:
            data = base64.b64decode(event.get("data", ""), validate=True)
            size = len(data)
            spool.add(data)
        except (ValueError, TypeError) as exc:
            self.refused.setdefault(spec.uid, f"its results data is not base64 ({exc})")
        now = time.monotonic()
        flow = self.flow.setdefault(spec.uid, [now, 0])
        flow[1] += size
        elapsed = now - flow[0]
        if (
            elapsed <= untrusted.RESULTS_RATE_GRACE
            or flow[1] >= untrusted.MIN_RESULTS_RATE * elapsed
        ):
            self.last_piece = now
            self.sink({"type": events.TEST_FILES, "uid": spec.uid})  # progress: its end is coming
        if event.get("last") is True:
            self.results_done(spec)

    def forget_files(self, spec: TestSpec) -> None:
        """Drop what arrived of the test's results so far (its host sends them whole again)."""
        pending = self.spools.pop(spec.uid, None)
        if pending is not None:
            pending[1].close()
        self.flow.pop(spec.uid, None)

    def results_done(self, spec: TestSpec) -> None:
        """Extract what arrived of the test's results (at its last piece, or at its end)."""
        self.files_done.add(spec.uid)
        pending = self.spools.pop(spec.uid, None)
        if pending is None:
            return
        try:
            problem = pending[1].extract(spec.logdir).problem(self.max_results)
        except OSError as exc:
            problem = f"cannot write its results here: {exc}"
        if problem:
            LOG.warning("%s: %s: %s", self.host, spec.name, problem)
            self.refused.setdefault(spec.uid, problem)

    def fail_rest(self, specs: list[TestSpec], reason: str, status: str = events.ERROR) -> None:
        for spec in specs:
            if spec.uid in self.ended:
                continue
            self.ended.add(spec.uid)
            self.sink(events.synthetic_end(spec.uid, status, reason, host=self.host))

    def close(self) -> None:
        """Results cut off (a lost connection, a stop): keep what arrived of them."""
        for spec, _spool in list(self.spools.values()):
            self.results_done(spec)
