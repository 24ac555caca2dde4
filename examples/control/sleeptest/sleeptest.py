"""Autotest's classic client test, as an mhtest test: sleep a while."""

import time

from mhtest import Test


class SleepTest(Test):
    """Sleeps `seconds` (default 0.1) and notes it in the whiteboard."""

    timeout = 60

    def test(self):
        seconds = float(self.params.get("seconds", 0.1))
        self.log.info("sleeping %g s", seconds)
        time.sleep(seconds)
        self.whiteboard = f"slept {seconds:g} s"
