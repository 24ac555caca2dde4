"""Interactive shells on hosts: an aexpect ShellSession over the OpenSSH `ssh` client."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sysconfig
from typing import Any

from mhtest.hosts.connection import Connection
from mhtest.hosts.errors import HostError

log = logging.getLogger(__name__)

PROMPT_TEXT = "MHTEST-PROMPT$ "
# A shell without rc files and with a prompt we can recognise (bash if present, else sh).
REMOTE_SHELL = (
    "if command -v bash >/dev/null 2>&1; then "
    f"exec env PS1={shlex.quote(PROMPT_TEXT)} PROMPT_COMMAND= bash --norc --noprofile -i; "
    f"else exec env PS1={shlex.quote(PROMPT_TEXT)} sh -i; fi"
)


def shell_session(command: str, **options: Any) -> Any:
    """An aexpect ShellSession running `command` (`options` go to it), closed when dropped.

    aexpect starts each session through its `aexpect_helper` script, which it looks for on PATH
    only; a virtual environment's scripts directory is there only when the environment is
    activated, not when mhtest runs as `.venv/bin/mhtest` or `.venv/bin/python -m mhtest`. So
    that directory (this interpreter's) is added to the end of PATH when the helper is missing.
    """
    import aexpect

    scripts = sysconfig.get_path("scripts")
    if shutil.which("aexpect_helper") is None and os.path.isfile(
        os.path.join(scripts, "aexpect_helper")
    ):
        log.debug("aexpect_helper is not on PATH: adding %s to it", scripts)
        os.environ["PATH"] = os.pathsep.join(p for p in (os.environ.get("PATH"), scripts) if p)
    return aexpect.ShellSession(command, auto_close=True, **options)


def open_shell(
    host: Connection, timeout: float = 30, prompt: str = r"^MHTEST-PROMPT\$ ?$", pty: bool = True
) -> Any:
    """Start `ssh` to `host` in an aexpect ShellSession and wait for the first prompt.

    The session uses the host's port, key files and known_hosts; close() it when done. With
    `pty=False` the remote shell gets no terminal (`ssh -T`): needed when sshd cannot hand out
    one, e.g. an sshd that does not run as root.
    """
    import aexpect

    if shutil.which("ssh") is None:
        raise HostError(f"{host.name}: shell() needs the OpenSSH client `ssh` (openssh-client)")
    flags = ["-tt" if pty else "-T", "-o", "LogLevel=ERROR"]
    command = shlex.join(host.ssh_command(flags) + [REMOTE_SHELL + ("" if pty else " 2>&1")])
    session = shell_session(command, prompt=prompt)
    try:
        session.read_up_to_prompt(timeout=timeout)
    except aexpect.ExpectError as exc:
        output = session.get_output()
        session.close()
        raise HostError(
            f"{host.name}: interactive shell did not start within {timeout:g} s: "
            f"{exc}; output: {output[-300:]!r}",
            host.name,
        ) from None
    return session
