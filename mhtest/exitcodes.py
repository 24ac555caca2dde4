"""The exit code of `mhtest`: a bit field scripts can take apart."""

from __future__ import annotations

OK = 0
TESTS_FAIL = 1  # a test failed, errored or was interrupted by its timeout
JOB_FAIL = 2  # the job could not run as asked (bad input)
CRASH = 4  # mhtest itself crashed
INTERRUPTED = 8  # the user interrupted the job (Ctrl-C, SIGTERM)
