"""What a test's processes find in their environment beyond the spec's variables.

- A worker of a multi-host test (MHTEST_WORKER and MHTEST_SYNC_ADDRESS set) gets a bin
  directory first on its PATH holding `mhtest` (whose `mhtest sync …` starts lean: see
  mhtest.sync.shell) and LAVA's and restraint's sync commands (mhtest.sync.compat). They
  are there for that worker's processes only: nothing is installed on the host's PATH.
- A worker also gets a variable per role of its run listing the workers that have it, as
  Beaker does for restraint scripts ($SERVERS, $CLIENTS), unless the name is taken, and (on
  Linux) MHTEST_SYNC_AGENT, the name of its sync agent's socket (mhtest.sync.agent).
- A test run by a remote host's executor, which may reboot its host, gets the same bin
  directory for `mhtest-reboot` (tmt-reboot, rstrnt-reboot): see mhtest.runners.reboot.
- (A simple test's params become environment variables as Avocado makes them: see
  mhtest.environment.param_variables.)

The bin directory is made once per Python interpreter and mhtest location, in mhtest's
cache ($MHTEST_CACHE_DIR, else ~/.cache/mhtest; a private directory in /tmp when neither can
be written): small
shell scripts that run that interpreter without site initialisation (-S: it costs more than
the sync call) on the launcher next to them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from mhtest import __version__
from mhtest.runners.reboot import COMMANDS as REBOOT_COMMANDS
from mhtest.runners.reboot import SOCKET_VAR
from mhtest.sync.compat import COMMANDS

LOG = logging.getLogger(__name__)

#: The commands a worker finds first on its PATH (and a test that may reboot its host, the
#: reboot commands: mhtest.runners.reboot).
WORKER_COMMANDS = ("mhtest", *COMMANDS, *REBOOT_COMMANDS)
_LAYOUT = "2"  # bump when the scripts change


def _launcher(roots: list[str], extra: list[str]) -> str:
    return (
        "# Made by mhtest (mhtest.runners.workerbin): runs a worker's sync command.\n"
        "import sys\n"
        f"sys.path[1:1] = {roots!r}\n"
        f"sys.path += {extra!r}\n"
        "from mhtest.sync.shell import launch\n"
        "sys.exit(launch(sys.argv[1], sys.argv[2:]))\n"
    )


def _script(python: str, launcher: str, command: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# {command} for the processes of an mhtest worker (mhtest.runners.workerbin)\n"
        f'exec {shlex.quote(python)} -SE {shlex.quote(launcher)} {command} "$@"\n'
    )


def _paths() -> tuple[list[str], list[str]]:
    """Where mhtest is, and where ZeroMQ is (site-packages), for an interpreter without site."""
    root = str(Path(__file__).resolve().parents[2])
    extra = []
    found = importlib.util.find_spec("zmq")
    if found is not None and found.origin:
        extra.append(str(Path(found.origin).resolve().parents[1]))
    return [root], extra


def _cache_root() -> Path:
    """mhtest's cache on this machine ($MHTEST_CACHE_DIR, else ~/.cache/mhtest)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = Path(os.environ.get("MHTEST_CACHE_DIR") or os.path.join(xdg, "mhtest"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"mhtest-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{private} is not a private directory of this user")
    return private


def bin_dir() -> str:
    """The directory of a worker's commands for this interpreter and mhtest (made once)."""
    roots, extra = _paths()
    python = sys.executable
    key = hashlib.sha256(
        json.dumps([python, roots, extra, __version__, _LAYOUT]).encode()
    ).hexdigest()[:16]
    target = _cache_root() / f"worker-bin-{key}"
    if (target / ".complete").exists():
        return str(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        launcher = str(target / ".launch.py")
        (tmp / ".launch.py").write_text(_launcher(roots, extra), encoding="utf-8")
        for command in WORKER_COMMANDS:
            path = tmp / command
            path.write_text(_script(python, launcher, command), encoding="utf-8")
            path.chmod(0o755)
        (tmp / ".complete").write_text("", encoding="utf-8")
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:  # made meanwhile by another worker (or half made: replace it)
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `env`, a test's environment, when the test is a multi-host
    worker: its sync commands first on PATH, the agent's name, the roles' variables; when
    it may reboot its host (a remote host's test): the reboot commands first on PATH.

    (A simple test's params become variables as Avocado makes them: mhtest.environment.)
    """
    extra: dict[str, str] = {}
    worker = bool(env.get("MHTEST_WORKER") and env.get("MHTEST_SYNC_ADDRESS"))
    if worker:
        extra.update(_role_variables(env, extra))
        if sys.platform.startswith("linux"):
            # The worker's sync agent, started by its first `mhtest sync` (mhtest.sync.agent):
            # always a new one (an agent named in the environment is an outer worker's).
            extra["MHTEST_SYNC_AGENT"] = f"@mhtest-sync-{secrets.token_hex(16)}"
    if worker or env.get(SOCKET_VAR):
        try:
            extra["PATH"] = os.pathsep.join([bin_dir(), env.get("PATH") or os.defpath])
        except OSError as exc:
            LOG.warning(
                "no sync or reboot commands for this test: cannot make their directory: %s", exc
            )
    return extra


def _role_variables(env: Mapping[str, str], taken: Mapping[str, str]) -> dict[str, str]:
    try:
        roles = json.loads(env.get("MHTEST_SYNC_ROLES") or "{}")
    except ValueError:
        return {}
    grouped: dict[str, list[str]] = {}
    for name, role in roles.items() if isinstance(roles, dict) else ():
        grouped.setdefault(str(role), []).append(str(name))
    return {
        role: " ".join(names)
        for role, names in grouped.items()
        if role.isidentifier() and role not in env and role not in taken
    }
