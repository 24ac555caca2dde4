"""The Autotest object of server control files: client tests and client control files on hosts.

    at = autotest.Autotest(host)            # `autotest_remote.Autotest` is the same
    at.install()                            # optional: mhtest's own bootstrap of the host
    at.run_test("sleeptest", tag="quick", seconds=1)          # True when it passed
    at.run('job.run_test("sleeptest")', "results-h1", host)   # a client control file

"Installing Autotest" on a host is mhtest's bootstrap (mhtest.hosts.bootstrap): mhtest and
its dependencies in a cached environment there, done once per host and version, and done
anyway by the first test run there when `install()` was not called. `get(location)` is
accepted: a directory there with `tests/` or `site_tests/` (an Autotest client tree) adds
them to where test names are looked up; nothing is fetched.

`run_test` runs the named test on the host through mhtest's executor, exactly as
`mhtest run TEST --hosts HOST` does; `run` runs a client control file there (text, or a
path), which is a result of its own as well as each of its run_tests. Results land under the
control file's directory: `<results_dir>/<machine>/<test>` (results_dir "." : none).
`run` raises AutotestRunError when the client control file did not run to its end (a host
that is down, a syntax error, an exception in it); `run_test` records such a failure as the
test's result and returns False.
"""

from __future__ import annotations

import logging
import os
import tempfile
import types
from pathlib import Path
from typing import Any

from mhtest import events
from mhtest.autoserv.controlfile import compile_control, control_spec
from mhtest.autoserv.errors import AutotestRunError, ControlError, ControlSyntaxError
from mhtest.autoserv.job import PASSED, record_result, run_named, test_label
from mhtest.autoserv.runner import ControlRunner
from mhtest.autoserv.runtime import Runtime
from mhtest.spec import CONTROL_CLIENT, TestSpec

LOG = logging.getLogger(__name__)


def autotest_module(runtime: Runtime, runner: ControlRunner) -> types.ModuleType:
    """A fresh `autotest` module for one control file, its Autotest class bound to it."""

    class Autotest(_Autotest):
        __doc__ = _Autotest.__doc__
        _runtime = runtime
        _runner = runner

    module = types.ModuleType("autotest", "Autotest on hosts: mhtest's executor.")
    module.Autotest = Autotest  # type: ignore[attr-defined]
    module.BaseAutotest = Autotest  # type: ignore[attr-defined]
    return module


class _Autotest:
    """Autotest(host=None): client tests and client control files on a host."""

    _runtime: Runtime
    _runner: ControlRunner

    def __init__(self, host: Any = None) -> None:
        self.host = host
        self.source: str | None = None

    # -- installing ---------------------------------------------------------------------------
    def get(self, location: str | None = None) -> None:
        """Note where Autotest's client is; its tests/ and site_tests/ join the tests path."""
        self.source = location
        if location and os.path.isdir(location):
            for sub in ("tests", "site_tests", "."):
                path = os.path.abspath(os.path.join(location, sub))
                if os.path.isdir(path) and path not in self._runtime.tests_dirs:
                    self._runtime.tests_dirs.append(path)
        LOG.info("Autotest.get(%r): mhtest installs itself; tests are looked up there", location)

    def install(self, host: Any = None, autodir: str | None = None, **kwargs: Any) -> None:
        """Make sure mhtest is ready on the host (its cached environment)."""
        from mhtest.hosts.bootstrap import REMOTE_CACHE, ensure_mhtest
        from mhtest.hosts.errors import HostError
        from mhtest.runners.remote import ENV_REMOTE_CACHE

        where = self._runtime.where()
        target = self._host(host, "install")
        options = self._runtime.options
        cache = os.environ.get(ENV_REMOTE_CACHE) or REMOTE_CACHE
        try:
            ensure_mhtest(target, python=options.remote_python or "python3", remote_cache=cache)
        except HostError as exc:
            raise AutotestRunError(f"{where}: cannot install mhtest: {exc}") from None

    # -- running ------------------------------------------------------------------------------
    def run_test(
        self,
        test_name: str,
        results_dir: str = ".",
        host: Any = None,
        tag: str | None = None,
        timeout: float | None = None,
        **dargs: Any,
    ) -> bool:
        """Run test `test_name` on the host; True when it passed (PASS or WARN)."""
        from mhtest.autoserv.hosts import place_of

        place = place_of(self._runtime, self._host(host, "run_test"))
        if timeout is not None:
            dargs["timeout"] = timeout
        return run_named(
            self._runtime,
            self._runner,
            test_name,
            place,
            tag=tag,
            dargs=dargs,
            subdir=self._subdir(results_dir),
        )

    def run_timed_test(
        self,
        test_name: str,
        results_dir: str = ".",
        host: Any = None,
        timeout: float | None = None,
        **dargs: Any,
    ) -> bool:
        """run_test with a timeout (Autotest's name)."""
        return self.run_test(test_name, results_dir, host, timeout=timeout, **dargs)

    def run(
        self,
        control_file: str,
        results_dir: str = ".",
        host: Any = None,
        timeout: float | None = None,
        tag: str | None = None,
        **kwargs: Any,
    ) -> bool:
        """Run a client control file (its text, or a path) on the host.

        True when everything it ran passed, False when some test did not; AutotestRunError
        when the control file did not run to its end there.
        """
        from mhtest.autoserv.hosts import place_of

        runtime = self._runtime
        where = runtime.where()
        place = place_of(runtime, self._host(host, "run"))
        spec, label = self._client_spec(str(control_file), where, place.name, tag)
        name = f"{place.name}/{test_label(label, tag)}"
        params = {"timeout": timeout} if timeout else {}
        if runtime.args:
            params["args"] = list(runtime.args)
        planned = self._runner.plan(place, spec, name, params, self._subdir(results_dir))
        result = self._runner.run([planned])[0]
        if result.status in (events.ERROR, events.INTERRUPT):
            raise AutotestRunError(
                f"{where}: client control file {label} on {place.name}: {result.status}: "
                f"{result.fail_reason or 'no reason given'}"
            )
        return result.status in PASSED

    # -- helpers ------------------------------------------------------------------------------
    def _host(self, host: Any, what: str) -> Any:
        target = host if host is not None else self.host
        if target is None:
            raise ControlError(
                f"{self._runtime.where()}: Autotest.{what}: no host; give host= or Autotest(host)"
            )
        if isinstance(target, str):
            from mhtest.autoserv.hosts import hosts_module

            target = hosts_module(self._runtime).create_host(target)
        return target

    def _subdir(self, results_dir: str | None) -> str | None:
        """results_dir as a directory under the control file's ('.' or none: none)."""
        if not results_dir or results_dir == ".":
            return None
        path = os.path.abspath(results_dir)
        base = os.path.abspath(self._runtime.logdir)
        if os.path.isabs(results_dir):
            if path.startswith(base + os.sep):
                return os.path.relpath(path, base)
            LOG.warning(
                "results_dir %s is outside the job's results: using %s under the control "
                "file's directory",
                results_dir,
                os.path.basename(path),
            )
            return os.path.basename(path) or None
        return os.path.normpath(results_dir).lstrip("./") or None

    def _client_spec(
        self, control: str, where: str, machine: str, tag: str | None
    ) -> tuple[TestSpec, str]:
        """The spec of a client control file given as text or a path, and its name.

        One that does not compile is an ERROR result here, and AutotestRunError."""
        path = self._find_file(control)
        label = path.name if path is not None else "control"
        what = ""  # how the error is introduced in AutotestRunError
        if path is not None:
            spec = control_spec(path, label, CONTROL_CLIENT)
            problem = spec.error
        else:
            try:
                compile_control(control, "control", label)
                problem = None
            except ControlSyntaxError as exc:
                problem, what = str(exc), "client control text: "
            directory = Path(tempfile.mkdtemp(prefix="control-", dir=self._work_dir()))
            (directory / "control").write_text(control, encoding="utf-8")
            spec = TestSpec(ref=label, kind=CONTROL_CLIENT, path=str(directory / "control"))
        if problem:
            name = f"{machine}/{test_label(label, tag)}"
            record_result(self._runtime, events.ERROR, name, problem, "ControlSyntaxError")
            raise AutotestRunError(f"{where}: {what}{problem}")
        return spec, label

    def _find_file(self, control: str) -> Path | None:
        """`control` as an existing file (beside the control file, or as given), else None."""
        if "\n" in control or len(control) > 4096:
            return None
        for base in (os.path.dirname(self._runtime.filename), os.getcwd()):
            path = Path(base, control)
            if path.is_file():
                return path.resolve()
        return None

    def _work_dir(self) -> str:
        return self._runtime.work_dir
