"""A VM's serial console as an aexpect shell session (QEMU's console socket, bridged).

aexpect runs a command in a pseudo terminal; the command here is a small Python bridge that
copies bytes between that terminal and the console's unix socket.
"""

from __future__ import annotations

import base64
import shlex
import sys
import time
from typing import Any

# Copies bytes between the console socket and stdin/stdout, so that aexpect (which runs a
# command in a pseudo terminal) can drive QEMU's serial port. Runs as `python -c`.
_CONSOLE_BRIDGE = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
while True:
    r, _, _ = select.select([0, s], [], [])
    if 0 in r:
        data = os.read(0, 4096)
        if not data:
            break
        s.sendall(data)
    if s in r:
        data = s.recv(4096)
        if not data:
            break
        os.write(1, data)
"""


def open_console(socket_path: str, prompt: str) -> Any:
    """A ShellSession on the console socket ``socket_path`` (not yet waited for)."""
    from mhtest.hosts.shell import shell_session

    # aexpect's server reads the command as one line: ship the bridge base64-encoded.
    code = base64.b64encode(_CONSOLE_BRIDGE.encode()).decode()
    bridge = f"import base64; exec(base64.b64decode('{code}'))"
    command = shlex.join([sys.executable, "-c", bridge, socket_path])
    return shell_session(command, prompt=prompt, linesep="\n")


def wait_prompt(session: Any, timeout: float) -> Any:
    """Poke the console until the shell prompt shows; ``session``, or TimeoutError."""
    import aexpect

    deadline = time.monotonic() + timeout
    while True:
        session.sendline("")
        try:
            session.read_up_to_prompt(timeout=min(5.0, max(0.1, timeout)))
            return session
        except aexpect.ExpectError as exc:
            if not session.is_alive() or time.monotonic() > deadline:
                raise TimeoutError(str(exc)) from None
