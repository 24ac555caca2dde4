"""Running a server control file: one test of the job, run here, spanning the job's hosts.

    mhtest run netperf.srv --hosts h1,h2        # -m h1,h2 too
    mhtest run run_test.srv -m h1,h2 --args "-t sleeptest -l logs"

The control file runs in the test's own child process (mhtest.runners.child), with one dict
as its globals and locals (mhtest.autoserv.namespace). What it runs is a result of the job
each (mhtest.autoserv.nested); it is itself one more result, which:

- passes when it ran to its end (or `sys.exit(0)`) and everything it ran passed;
- fails when something it ran did not pass (the reason names them), or on `sys.exit(n)`,
  `assert`, error.TestFail;
- is ERROR on any other exception, with one line: the control file, the line it stopped at,
  and what happened (a host that is down, a test that is not found, Python 2's `raise
  "text"`);
- is INTERRUPT when the job is stopped (what it ran is stopped too, and recorded).

`print` goes to the test's `stdout` file; its logging and mhtest's to its debug.log.
`execute()` is shared with client control files (mhtest.autoserv.client).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable

from mhtest import events
from mhtest.autoserv.controlfile import compile_control
from mhtest.autoserv.errors import ControlError
from mhtest.autoserv.imports import AutotestImports, module_table
from mhtest.autoserv.runtime import Runtime
from mhtest.hosts.errors import HostError
from mhtest.runners.lifecycle import status_of
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: How many of the results that did not pass a control file's reason names.
MAX_NAMED = 5


def run_server_control(spec: TestSpec, emit: Callable[..., None]) -> dict[str, Any]:
    """Run the server control file `spec` here; its outcome (status, fail_reason…)."""
    from mhtest.autoserv.namespace import server_namespace

    runtime = Runtime(spec, emit, display=spec.ref)
    try:
        return execute(runtime, server_namespace)
    finally:
        runtime.close()


def execute(
    runtime: Runtime, make_namespace: Callable[[Runtime, str], dict[str, Any]]
) -> dict[str, Any]:
    """Compile and run a control file with the globals `make_namespace` gives; its outcome."""
    try:
        with open(runtime.filename, encoding="utf-8") as control:
            source = control.read()
        code = compile_control(source, runtime.filename, runtime.display)
    except (OSError, UnicodeDecodeError) as exc:
        return _outcome(events.ERROR, f"cannot read {runtime.display}: {exc}", type(exc).__name__)
    except ControlError as exc:
        return _outcome(events.ERROR, str(exc), type(exc).__name__)
    namespace = make_namespace(runtime, source)
    imports = AutotestImports(module_table(namespace)).install()
    ended: dict[str, Any] | None = None
    try:
        exec(code, namespace)  # noqa: S102 - running the user's control file is the point
    except SystemExit as exc:
        ended = _exited(runtime, exc)
    except BaseException as exc:  # noqa: BLE001 - every way it ends is its outcome
        LOG.error("%s stopped:\n%s", runtime.display, traceback.format_exc())
        ended = _raised(runtime, exc)
    finally:
        imports.remove()
        sys.stdout.flush()
    return verdict(runtime, ended)


def verdict(runtime: Runtime, ended: dict[str, Any] | None) -> dict[str, Any]:
    """The control file's outcome: how it ended, and whether everything it ran passed."""
    tally = runtime.results.tally()
    failed = [t for t in tally if t.get("status") in events.FAILED_STATUSES]
    summary = ""
    if failed:
        named = ", ".join(
            f"{t['name']} {t['status']}"
            + (f" ({_first(t.get('fail_reason'))})" if t.get("fail_reason") else "")
            for t in failed[:MAX_NAMED]
        )
        more = f" and {len(failed) - MAX_NAMED} more" if len(failed) > MAX_NAMED else ""
        summary = f"{len(failed)} of {len(tally)} results did not pass: {named}{more}"
    if ended is not None:
        if failed and ended["status"] != events.INTERRUPT:
            count = f"{len(failed)} of {len(tally)} results did not pass"
            ended["fail_reason"] = f"{ended['fail_reason']}; {count}"
        return ended
    if failed:
        return _outcome(events.FAIL, summary, "ControlFail")
    LOG.info("%s ran to its end; %d result(s), all passed", runtime.display, len(tally))
    return _outcome(events.PASS, None, None)


def _exited(runtime: Runtime, exc: SystemExit) -> dict[str, Any] | None:
    code = exc.code
    if code in (None, 0):
        return None
    where = _line_of(runtime, exc)
    text = code if isinstance(code, str) else f"exit status {code}"
    return _outcome(events.FAIL, f"{where}: sys.exit: {text}", "SystemExit")


def _raised(runtime: Runtime, exc: BaseException) -> dict[str, Any]:
    """A control file's exception as its outcome: status, and one line saying where."""
    where = _line_of(runtime, exc)
    text = _first(str(exc)) or type(exc).__name__
    if isinstance(exc, ControlError):
        reason = text if text.startswith(runtime.display) else f"{where}: {text}"
    elif isinstance(exc, HostError):
        reason = f"{where}: {text}"
    elif isinstance(exc, TypeError) and "must derive from BaseException" in text:
        reason = (
            f"{where}: TypeError: {text} (Python 2's raise of a string: raise an exception, "
            "e.g. raise error.JobError('...'))"
        )
    else:
        reason = f"{where}: {type(exc).__name__}: {text}"
    if isinstance(exc, KeyboardInterrupt):
        return _outcome(events.INTERRUPT, reason, type(exc).__name__)
    return _outcome(status_of(exc), reason, type(exc).__name__)


def _line_of(runtime: Runtime, exc: BaseException) -> str:
    """ "file:line": the control file's innermost line in `exc`'s traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == runtime.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{runtime.display}:{line}" if line else runtime.display


def _first(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:500] if lines else ""


def _outcome(status: str, reason: str | None, fail_class: str | None) -> dict[str, Any]:
    return {"status": status, "fail_reason": reason, "fail_class": fail_class}
