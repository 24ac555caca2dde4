"""`mhtest sync …`: the sync API for any process of a worker, shell scripts included.

    mhtest sync barrier NAME [--count N] [--timeout S]
    mhtest sync exchange NAME VALUE [--json]    prints {"participant": value, …} (JSON)
    mhtest sync post NAME VALUE [--json]
    mhtest sync wait NAME [--from P …] [--count N] [--all]   prints the value (see `wait`)
    mhtest sync lock NAME [--timeout S] -- CMD [ARG…]        runs CMD holding the lock
    mhtest sync abort REASON                    aborts every participant's waits
    mhtest sync whoami                          prints this worker's participant name

The server, the participant name and its keys come from the MHTEST_SYNC_* variables a
multi-host test gives each worker (see SyncClient.from_environment). A command speaks for the
worker without being it (a "transient" participant, see mhtest.sync.namespace): its end is not
the worker's. With MHTEST_SYNC_AGENT (every worker on Linux) the call goes through the
worker's sync agent (mhtest.sync.agent), which the first command starts; else the command
connects itself.

Exit codes (EXIT_*): 0 done; 1 a sync error (no server in the environment, cannot reach it,
refused); 2 bad usage; 124 the wait timed out; 125 it was aborted (a worker died, failed or
called abort). `lock` exits with CMD's status (126: CMD cannot be run, 127: not found).
Any failure prints one line on stderr: what, and why.

This module is the lean entry point: it imports the sync client and nothing else of
mhtest (see mhtest.runners.workerbin for the `mhtest` and LAVA/restraint commands a
worker finds first on its PATH, and mhtest.cli for the same command through the full CLI).
"""

from __future__ import annotations

import os
import sys

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_ABORTED = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
#: Seconds a command waits unless told (--timeout); MHTEST_SYNC_TIMEOUT sets another.
DEFAULT_TIMEOUT = 120.0
ENV_TIMEOUT = "MHTEST_SYNC_TIMEOUT"
ENV_ROLES = "MHTEST_SYNC_ROLES"


class ShellSyncError(Exception):
    """A command cannot do what it was asked: one line, and its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def default_timeout(fallback: float = DEFAULT_TIMEOUT) -> float:
    """MHTEST_SYNC_TIMEOUT when set, else `fallback`."""
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return fallback
    try:
        return float(text)
    except ValueError:
        raise ShellSyncError(f"{ENV_TIMEOUT}={text!r} is not a number of seconds") from None


def participant() -> str:
    """This worker's participant name (MHTEST_SYNC_PARTICIPANT)."""
    name = os.environ.get("MHTEST_SYNC_PARTICIPANT", "").strip()
    if not name:
        raise ShellSyncError(
            "not a worker of a multi-host test: MHTEST_SYNC_PARTICIPANT is not set "
            "(run this from a worker's test, or set MHTEST_SYNC_ADDRESS and _PARTICIPANT)"
        )
    return name


def roles() -> dict[str, str]:
    """{worker: role} of this run, in the workers' order (MHTEST_SYNC_ROLES)."""
    text = os.environ.get(ENV_ROLES, "").strip()
    if not text:
        me = participant()
        return {me: me}
    try:
        import json

        value = json.loads(text)
    except ValueError:
        raise ShellSyncError(f"{ENV_ROLES} is not JSON: {text[:60]!r}") from None
    if not isinstance(value, dict):
        raise ShellSyncError(f"{ENV_ROLES} is not a JSON object of worker: role")
    return {str(k): str(v) for k, v in value.items()}


def connect() -> Any:
    """This worker's sync client (ShellSyncError if there is no server): its agent's
    (mhtest.sync.agent) when it has one, else a transient SyncClient of its own."""
    participant()
    agent = os.environ.get("MHTEST_SYNC_AGENT", "")
    if agent and os.environ.get("MHTEST_SYNC_ADDRESS"):
        from mhtest.sync.agent import AgentClient

        return AgentClient(agent)
    from mhtest.sync.client import SyncClient

    client = SyncClient.from_environment(transient=True)
    if client is None:
        raise ShellSyncError("not a worker of a multi-host test: MHTEST_SYNC_ADDRESS is not set")
    return client


def call(what: Callable[[Any], Any]) -> Any:
    """Connect, run `what(client)`, leave; sync errors become ShellSyncError."""
    from mhtest.sync.errors import SyncAborted, SyncError, SyncTimeout

    try:
        with connect() as client:
            return what(client)
    except SyncTimeout as exc:
        raise ShellSyncError(f"timeout: {exc}", EXIT_TIMEOUT) from None
    except SyncAborted as exc:
        raise ShellSyncError(f"aborted: {exc}", EXIT_ABORTED) from None
    except SyncError as exc:
        raise ShellSyncError(str(exc)) from None


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    import json

    try:
        return json.loads(text)
    except ValueError as exc:
        raise ShellSyncError(f"--json: {text[:60]!r} is not JSON: {exc}", EXIT_USAGE) from None


def _show(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


# -- the commands ------------------------------------------------------------------------


def _barrier(args: Any) -> int:
    call(lambda c: c.barrier(args.name, args.count, args.timeout))
    return EXIT_OK


def _exchange(args: Any) -> int:
    value = _value(args.value, args.json)
    print(_show(call(lambda c: c.exchange(args.name, value, args.count, args.timeout))))
    return EXIT_OK


def _post(args: Any) -> int:
    value = _value(args.value, args.json)
    call(lambda c: c.post(args.name, value))
    return EXIT_OK


def _wait(args: Any) -> int:
    senders = args.senders or None
    posts = call(lambda c: c.wait(args.name, args.count, args.timeout, senders))
    if args.all or (args.count or 1) > 1 or (senders and len(senders) > 1):
        print(_show(posts))
        return EXIT_OK
    # One post waited for: print its value (a string as it is), the sender's if named.
    first = senders[0] if senders and senders[0] in posts else next(iter(posts))
    print(_show(posts[first]))
    return EXIT_OK


def _lock(args: Any) -> int:
    import subprocess

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ShellSyncError("lock: give the command to run after --", EXIT_USAGE)

    def run(client: Any) -> int:
        with client.lock(args.name, args.timeout):
            try:
                return subprocess.call(command)
            except FileNotFoundError:
                raise ShellSyncError(f"lock: {command[0]}: not found", EXIT_NOT_FOUND) from None
            except OSError as exc:
                raise ShellSyncError(
                    f"lock: {command[0]}: {exc.strerror}", EXIT_CANNOT_RUN
                ) from None

    return call(run)


def _abort(args: Any) -> int:
    call(lambda c: c.abort(args.reason))
    return EXIT_OK


def _whoami(args: Any) -> int:
    print(participant())
    return EXIT_OK


def build_parser(prog: str = "mhtest sync") -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Barriers, data exchange, messages and locks for the processes of a "
        "multi-host test's workers. Exit codes: 0 done, 1 sync error, 2 usage, "
        f"{EXIT_TIMEOUT} timeout, {EXIT_ABORTED} aborted.",
    )
    sub = parser.add_subparsers(dest="op", metavar="OPERATION", required=True)

    def add(name: str, func: Callable[[Any], int], text: str) -> Any:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=func)
        return p

    def timed(p: Any, count: bool = True) -> None:
        if count:
            p.add_argument("--count", type=int, help="participants (default: every worker)")
        p.add_argument(
            "--timeout", type=float, help=f"seconds (default {DEFAULT_TIMEOUT:g}, {ENV_TIMEOUT})"
        )

    p = add("barrier", _barrier, "return when every worker (or --count) reached NAME")
    p.add_argument("name")
    timed(p)
    p = add("exchange", _exchange, "a barrier that swaps values: prints them all as JSON")
    p.add_argument("name")
    p.add_argument("value")
    p.add_argument("--json", action="store_true", help="VALUE is JSON, not a string")
    timed(p)
    p = add("post", _post, "publish VALUE under NAME (does not wait)")
    p.add_argument("name")
    p.add_argument("value", nargs="?", default="")
    p.add_argument("--json", action="store_true", help="VALUE is JSON, not a string")
    p = add("wait", _wait, "wait for posts of NAME; prints the value (JSON of all with --all)")
    p.add_argument("name")
    p.add_argument(
        "--from", dest="senders", action="append", metavar="WORKER", help="wait for its post"
    )
    p.add_argument("--all", action="store_true", help="print {worker: value} of every post")
    timed(p)
    p = add("lock", _lock, "run CMD holding the lock NAME (released when CMD ends)")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD")
    timed(p, count=False)
    p = add("abort", _abort, "abort every worker's waits with REASON")
    p.add_argument("reason")
    add("whoami", _whoami, "print this worker's participant name")
    return parser


#: The commands and flags a shell loop repeats, read without argparse (see `_quick`).
_QUICK = {"barrier": (1, 1), "post": (1, 2), "wait": (1, 1), "whoami": (0, 0)}
_QUICK_FUNCS = {"barrier": "_barrier", "post": "_post", "wait": "_wait", "whoami": "_whoami"}


def _quick(argv: Sequence[str]) -> Any:
    """The parsed arguments of a plain barrier, post, wait or whoami; None for anything else.

    argparse costs a short command more than its call. Whatever this does not read (help,
    a mistake, another command or flag) goes to argparse, which says what is wrong.
    """
    from types import SimpleNamespace

    if not argv or argv[0] not in _QUICK:
        return None
    op, rest = argv[0], list(argv[1:])
    args = SimpleNamespace(op=op, count=None, timeout=None, json=False, senders=[], all=False)
    words = []
    try:
        while rest:
            word = rest.pop(0)
            if word in ("--count", "--timeout", "--from"):
                value = rest.pop(0)
                if word == "--count":
                    args.count = int(value)
                elif word == "--timeout":
                    args.timeout = float(value)
                else:
                    args.senders.append(value)
            elif word in ("--json", "--all"):
                setattr(args, word[2:], True)
            elif word.startswith("-"):
                return None
            else:
                words.append(word)
    except (IndexError, ValueError):
        return None
    low, high = _QUICK[op]
    if not low <= len(words) <= high:
        return None
    if op != "whoami":
        args.name = words[0]
        args.value = words[1] if len(words) > 1 else ""
    args.func = globals()[_QUICK_FUNCS[op]]
    return args


def main(argv: Sequence[str] | None = None, prog: str = "mhtest sync") -> int:
    """Run one `mhtest sync` command; returns its exit code (see module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _quick(argv) or build_parser(prog).parse_args(argv)

    def run() -> int:
        if getattr(args, "timeout", False) is None:
            args.timeout = default_timeout()
        return args.func(args)

    return reporting(f"{prog} {args.op}", run)


def reporting(what: str, run: Callable[[], int]) -> int:
    """`run()`'s exit code; a ShellSyncError's (or Ctrl-C's) with its one line on stderr."""
    try:
        return run()
    except ShellSyncError as exc:
        print(f"{what}: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print(f"{what}: interrupted", file=sys.stderr, flush=True)
        return 130


def launch(command: str, argv: Sequence[str]) -> int:
    """What a worker's PATH commands run (mhtest.runners.workerbin): `command` ARGV."""
    if command == "mhtest":
        if argv[:1] == ["sync"]:
            return main(argv[1:])
        os.execv(sys.executable, [sys.executable, "-m", "mhtest", *argv])
    if command.endswith("-reboot"):
        from mhtest.runners import reboot

        return reboot.main(command, list(argv))
    from mhtest.sync import compat

    return compat.main(command, list(argv))
