"""LocalHost: the Host API for this machine (the host named `local`), via subprocess."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from mhtest.hosts.base import Host, build_command
from mhtest.hosts.errors import CmdTimeout, HostError, TransferError
from mhtest.hosts.result import CmdResult

log = logging.getLogger(__name__)

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL


def _login_shell() -> str:
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.access(shell, os.X_OK) else "/bin/sh"


class LocalHost(Host):
    """This machine, with the same API as SSHHost (commands run in their own process group)."""

    def __init__(self, name: str = "local", params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.name = name
        self.hostname = "localhost"
        self.shell_path = _login_shell()

    def __repr__(self) -> str:
        return f"LocalHost({self.name!r})"

    def run(
        self,
        command: str,
        timeout: float | None = None,
        ignore_status: bool = False,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> CmdResult:
        """Run `command` with the login shell; same contract as SSHHost.run()."""
        full, shown = build_command(command, env=env, args=args)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        started = time.monotonic()
        with subprocess.Popen(
            [self.shell_path, "-c", full],
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(data, timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = _kill_group(proc)
                out, err = proc.communicate()
                result = CmdResult(
                    shown,
                    -1,
                    out.decode("utf-8", "replace"),
                    err.decode("utf-8", "replace"),
                    time.monotonic() - started,
                    killed,
                )
                raise CmdTimeout(result, self.name, timeout or 0.0) from None
            except BaseException:
                # Interrupted (Ctrl-C, a parallel() task stopped): take the command with us.
                _kill_group(proc)
                raise
        code = proc.returncode
        result = CmdResult(
            command=shown,
            exit_status=code if code >= 0 else -1,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration=time.monotonic() - started,
            aborted=-code if code < 0 else 0,
        )
        return self.check_result(result, ignore_status)

    def is_up(self) -> bool:
        return True

    def wait_down(self, timeout: float = 60, old_boot_id: str | None = None) -> bool:
        """This machine never goes down under us: False after `timeout`."""
        time.sleep(max(0.0, min(timeout, 1.0)))
        return False

    def reboot(self, timeout: float = 600, reboot_cmd: str = "reboot", **_: Any) -> None:
        raise HostError(f"{self.name}: mhtest does not reboot the machine it runs on", self.name)

    def send_file(
        self, source: str | Sequence[str], dest: str, timeout: float | None = None
    ) -> None:
        """Copy local paths to `dest` with the same rules as SSHHost.send_file()."""
        copy_paths(source, dest, self.name)

    def get_file(
        self, source: str | Sequence[str], dest: str, timeout: float | None = None
    ) -> None:
        """Copy local paths to `dest` with the same rules as SSHHost.get_file()."""
        copy_paths(source, dest, self.name)


def _kill_group(proc: subprocess.Popen) -> int:
    """SIGTERM the process group, SIGKILL after a grace period; the signal that ended it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        return signal.SIGKILL if proc.poll() is None else signal.SIGTERM
    except ProcessLookupError:
        return signal.SIGTERM


def copy_paths(source: str | Sequence[str], dest: str, host: str = "local") -> None:
    """scp-like copy on this machine (trailing slash on a directory = its contents)."""
    sources = [source] if isinstance(source, str) else list(source)
    if len(sources) > 1:
        os.makedirs(dest, exist_ok=True)
    for src in sources:
        if not os.path.exists(src):
            raise TransferError(f"{host}: cannot copy {src}: no such file", host)
        name = os.path.basename(os.path.normpath(src))
        try:
            if os.path.isdir(src):
                if src.endswith("/"):
                    target = dest
                else:
                    target = os.path.join(dest, name) if os.path.isdir(dest) else dest
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
                shutil.copystat(src, target)
            else:
                target = os.path.join(dest, name) if os.path.isdir(dest) else dest
                shutil.copy2(src, target)
        except OSError as exc:
            raise TransferError(f"{host}: copying {src} to {dest} failed: {exc}", host) from None
