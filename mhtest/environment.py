"""The environment variables a test runs with: mhtest's names, and Avocado's beside them.

A test (simple or instrumented) finds its paths and its job's ids here, under
MHTEST_* names and under the AVOCADO_* names Avocado gives, so that scripts written for
Avocado run unchanged. A simple test also gets its params, as Avocado gives them.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

#: The Avocado release whose behaviour mhtest follows: AVOCADO_VERSION's value.
AVOCADO_VERSION = "113.0"
ENV_JOB_ID = "MHTEST_JOB_ID"
#: A directory shared by the tests of one job at one place (Test.teststmpdir).
ENV_COMMON_TMPDIR = "MHTEST_TESTS_COMMON_TMPDIR"
AVOCADO_COMMON_TMPDIR = "AVOCADO_TESTS_COMMON_TMPDIR"


def common_tmpdir_variables(path: str) -> dict[str, str]:
    """The variables that name the job's shared temporary directory."""
    return {ENV_COMMON_TMPDIR: path, AVOCADO_COMMON_TMPDIR: path}


def test_variables(name: str, path: str, logdir: str) -> dict[str, str]:
    """The variables of one test: its ID, version, and paths (as Test has them)."""
    from mhtest import __version__

    paths = {
        "TEST_BASEDIR": os.path.dirname(path),
        "TEST_WORKDIR": os.path.join(logdir, "work"),
        "TEST_LOGDIR": logdir,
        "TEST_LOGFILE": os.path.join(logdir, "debug.log"),
        "TEST_OUTPUTDIR": os.path.join(logdir, "data"),
    }
    env = {"MHTEST_VERSION": __version__, "AVOCADO_VERSION": AVOCADO_VERSION}
    env["MHTEST_TEST_ID"] = name
    for key, value in paths.items():
        env[f"MHTEST_{key}"] = env[f"AVOCADO_{key}"] = value
    return env


def param_variables(params: Mapping[str, Any]) -> dict[str, str]:
    """A simple test's params as variables (str(value)), as Avocado passes them; names
    and values an environment cannot hold ('=' or NUL in a name, NUL in a value) are left out."""
    env = {}
    for key, value in params.items():
        name, text = str(key), str(value)
        if name and "=" not in name and "\0" not in name and "\0" not in text:
            env[name] = text
    return env
