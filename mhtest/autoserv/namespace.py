"""The globals of a server control file (one dict, its globals and locals), and `utils`.

machines            the job's hosts as given (--hosts/-m), duplicates dropped
args                --args, split like a shell line
job                 mhtest.autoserv.job.ServerJob
hosts               create_host, SSHHost, LocalHost, KVMGuest (mhtest.autoserv.hosts)
kvm, deb_kernel, rpm_kernel   KVM, DEBKernel, RPMKernel (mhtest.autoserv.machine_modules)
autotest, autotest_remote   the Autotest object (mhtest.autoserv.autotest)
parallel, parallel_simple, subcommand   (mhtest.autoserv.tasks)
barrier             Autotest's barrier (mhtest.autoserv.barrier)
sh_escape, error, utils, os, sys, logging
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
import types
from typing import Any, Callable

from mhtest.autoserv.autotest import autotest_module
from mhtest.autoserv.barrier import Endpoint, barrier_class
from mhtest.autoserv.errors import error_module
from mhtest.autoserv.hosts import hosts_module
from mhtest.autoserv.job import ServerJob
from mhtest.autoserv.machine_modules import kernel_modules, kvm_module
from mhtest.autoserv.runner import ControlRunner
from mhtest.autoserv.runtime import Runtime
from mhtest.autoserv.tasks import make_tasks

LOG = logging.getLogger(__name__)


def sh_escape(command: str) -> str:
    """Escape `command` for use inside double quotes in a shell line (Autotest's sh_escape)."""
    for char, escaped in (("\\", "\\\\"), ("$", "\\$"), ('"', '\\"'), ("`", "\\`")):
        command = command.replace(char, escaped)
    return command


def default_mappings(machines: list[Any]) -> tuple[dict[str, list[Any]], list[Any]]:
    """Every machine under one key, no failures: form_ntuples_from_machines' default."""
    return ({"ident": list(machines)} if machines else {}), []


def form_ntuples_from_machines(
    machines: list[Any], n: int = 2, mapping_func: Callable[..., Any] = default_mappings
) -> tuple[list[list[Any]], list[tuple[Any, str]]]:
    """Autotest's: machines grouped in n-tuples of the same mapping, and (machine, reason) for
    those left over ("machine can not be tupled")."""
    ntuples: list[list[Any]] = []
    mappings, failures = mapping_func(machines)
    failures = list(failures)
    for key in mappings:
        group = list(mappings[key])
        while len(group) >= n:
            ntuples.append(group[:n])
            group = group[n:]
        failures += [(machine, "machine can not be tupled") for machine in group]
    return ntuples, failures


def utils_module() -> types.ModuleType:
    """The `utils` module of control files (Autotest's names that make sense here)."""
    from mhtest.hosts.local import LocalHost

    def run(
        command: str, timeout: float | None = None, ignore_status: bool = False, **kwargs: Any
    ) -> Any:
        """Run a command on this machine: a CmdResult (CmdError when it fails)."""
        return LocalHost().run(command, timeout=timeout, ignore_status=ignore_status)

    def system(command: str, ignore_status: bool = False) -> int:
        return run(command, ignore_status=ignore_status).exit_status

    def system_output(command: str, ignore_status: bool = False) -> str:
        return run(command, ignore_status=ignore_status).stdout.rstrip("\n")

    module = types.ModuleType("utils", "Autotest's utils for control files.")
    for func in (
        sh_escape,
        default_mappings,
        form_ntuples_from_machines,
        run,
        system,
        system_output,
    ):
        setattr(module, func.__name__, func)
    return module


def prepare_for_fork(runtime: Runtime, source: str) -> None:
    """Before tasks fork: make ready what they must share (sources for hosts, the barrier
    server), judged from the control file's text (a forked task cannot start them for all)."""
    text = source.lower()
    if "autotest" in text:
        runtime.sources()
    if "autotest" in text or "barrier" in text:
        _sync(runtime)


def _sync(runtime: Runtime) -> Any:
    from mhtest.autoserv.barrier import ControlSync

    if runtime.sync is None:
        runtime.sync = ControlSync.start()
    return runtime.sync


def server_namespace(runtime: Runtime, source: str) -> dict[str, Any]:
    """A server control file's globals (see the module docstring)."""
    runner = ControlRunner(runtime)
    tasks = make_tasks(runtime, lambda: prepare_for_fork(runtime, source))
    runtime.barrier = barrier_class(
        lambda: Endpoint.from_environment() or _sync(runtime).endpoint(), runtime.where
    )
    autotest = autotest_module(runtime, runner)
    names: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": runtime.filename,
        "__builtins__": builtins,
        "machines": list(runtime.machines),
        "args": list(runtime.args),
        "job": ServerJob(runtime, runner, tasks["parallel_simple"]),
        "hosts": hosts_module(runtime),
        "autotest": autotest,
        "autotest_remote": autotest,
        "kvm": kvm_module(runtime),
        **kernel_modules(),
        "barrier": runtime.barrier,
        "sh_escape": sh_escape,
        "error": error_module(),
        "utils": utils_module(),
        "os": os,
        "sys": sys,
        "logging": logging,
        **tasks,
    }
    return names
