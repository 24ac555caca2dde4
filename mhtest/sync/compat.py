"""LAVA's MultiNode and restraint's sync commands, on mhtest's sync server.

A worker of a multi-host test finds these first on its PATH (mhtest.runners.workerbin), so
that scripts written for LAVA or Beaker/restraint run unchanged. The arguments and outputs
are those the two projects document:

LAVA (MultiNode API; a worker's "device" is its worker name, its role the worker's `role`
param, else its name):

    lava-self                    prints this worker's name
    lava-role [list]             prints its role; `list`: every role of the run
    lava-group [ROLE]            "NAME<TAB>ROLE" per worker; with ROLE the names with it
                                 (exit 1, nothing printed, when none has it)
    lava-send ID [KEY=VALUE …]   sends the message ID with its data; does not wait
    lava-wait ID                 waits until any other worker sent ID; its KEY=VALUE lines
                                 go to the cache file
    lava-wait-all ID [ROLE]      waits until every other worker (of ROLE) sent ID; the
                                 cache file gets NAME:KEY=VALUE lines of every sender
    lava-sync ID                 lava-send ID, then lava-wait-all ID

The cache file is LAVA's /tmp/lava_multi_node_cache.txt, or $LAVA_MULTI_NODE_CACHE. Message
IDs last for the whole run, as in LAVA: a later wait for an ID already sent returns at once.

restraint (a "system" is a worker name; role variables such as $SERVERS list the workers
of a role, see mhtest.runners.workerbin):

    rstrnt-sync-set -s STATE
    rstrnt-sync-block -s STATE [-s STATE …] [--timeout S] [--retry S] [--any] NAME [NAME …]
        returns when every NAME (or, with --any, one) has set one of the STATEs

Messages are posts named "lava:ID" and states posts named "rstrnt:STATE" (mhtest.sync);
their timeouts, aborts and exit codes are those of `mhtest sync` (mhtest.sync.shell).
"""

from __future__ import annotations

import os
import sys
import time

from mhtest.sync.shell import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ShellSyncError,
    call,
    default_timeout,
    participant,
    reporting,
    roles,
)

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

LAVA_CACHE = "/tmp/lava_multi_node_cache.txt"  # noqa: S108 - LAVA's documented path
ENV_LAVA_CACHE = "LAVA_MULTI_NODE_CACHE"
#: LAVA's and restraint's commands wait this long unless MHTEST_SYNC_TIMEOUT says otherwise
#: (they have no timeout argument, or none by default; the worker's own timeout ends sooner).
COMPAT_TIMEOUT = 3600.0
#: rstrnt-sync-block with several states looks at each for this long in turn.
STATE_POLL = 0.2


# -- LAVA --------------------------------------------------------------------------------


def _lava_data(pairs: Sequence[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ShellSyncError(f"{pair!r} is not KEY=VALUE", EXIT_USAGE)
        data[key] = value
    return data


def _write_cache(lines: list[str]) -> None:
    """Write the LAVA cache file (only when the message carried data, as LAVA does)."""
    if not lines:
        return
    path = os.environ.get(ENV_LAVA_CACHE) or LAVA_CACHE
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
    except OSError as exc:
        raise ShellSyncError(f"cannot write the cache file {path}: {exc.strerror}") from None


def _pairs(data: Any) -> list[str]:
    return [f"{k}={v}" for k, v in data.items()] if isinstance(data, dict) else []


def lava_send(args: list[str]) -> int:
    if not args:
        raise ShellSyncError("usage: lava-send <message-id> [key1=val1 [key2=val2] ...]", 2)
    data = _lava_data(args[1:])
    call(lambda c: c.post(f"lava:{args[0]}", data))
    return EXIT_OK


def lava_wait(args: list[str]) -> int:
    if len(args) != 1:
        raise ShellSyncError("usage: lava-wait <message-id>", EXIT_USAGE)
    me = participant()
    others = [n for n in roles() if n != me]
    if not others:
        raise ShellSyncError("no other worker in this run sends anything")
    timeout = default_timeout(COMPAT_TIMEOUT)
    posts = call(lambda c: c.wait(f"lava:{args[0]}", 1, timeout, others))
    lines: list[str] = []
    for sender, data in posts.items():
        if sender != me:
            lines += _pairs(data)
    _write_cache(lines)
    return EXIT_OK


def _wait_all(message: str, role: str | None) -> None:
    me = participant()
    group = roles()
    if role is not None and role not in group.values():
        raise ShellSyncError(f"no worker has the role {role!r} (roles: {' '.join(group.values())})")
    senders = [n for n, r in group.items() if n != me and (role is None or r == role)]
    if not senders:
        return  # nobody else to wait for
    timeout = default_timeout(COMPAT_TIMEOUT)
    posts = call(lambda c: c.wait(f"lava:{message}", len(senders), timeout, senders))
    _write_cache([f"{sender}:{pair}" for sender, data in posts.items() for pair in _pairs(data)])


def lava_wait_all(args: list[str]) -> int:
    if len(args) not in (1, 2):
        raise ShellSyncError("usage: lava-wait-all <message-id> [<role>]", EXIT_USAGE)
    _wait_all(args[0], args[1] if len(args) == 2 else None)
    return EXIT_OK


def lava_sync(args: list[str]) -> int:
    if len(args) != 1:
        raise ShellSyncError("usage: lava-sync <message>", EXIT_USAGE)
    call(lambda c: c.post(f"lava:{args[0]}", {}))
    _wait_all(args[0], None)
    return EXIT_OK


def lava_self(args: list[str]) -> int:
    print(participant())
    return EXIT_OK


def lava_role(args: list[str]) -> int:
    if args == ["list"]:
        print(" ".join(dict.fromkeys(roles().values())))
    elif not args:
        print(roles().get(participant(), participant()))
    else:
        raise ShellSyncError("usage: lava-role [list]", EXIT_USAGE)
    return EXIT_OK


def lava_group(args: list[str]) -> int:
    group = roles()
    if not args:
        sys.stdout.write("".join(f"{name}\t{role}\n" for name, role in group.items()))
        return EXIT_OK
    if len(args) != 1:
        raise ShellSyncError("usage: lava-group [role]", EXIT_USAGE)
    names = [name for name, role in group.items() if role == args[0]]
    if not names:
        return EXIT_ERROR  # LAVA: no such role, exit non-zero and print nothing
    sys.stdout.write("".join(f"{name}\n" for name in names))
    return EXIT_OK


# -- restraint ---------------------------------------------------------------------------


def _rstrnt_parser(prog: str, block: bool) -> Any:
    import argparse  # here: the LAVA commands need none

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("-s", "--state", dest="states", action="append", required=True)
    if block:
        parser.add_argument("--timeout", type=float)
        parser.add_argument("--retry", type=float, help="accepted; mhtest does not poll")
        parser.add_argument("--any", action="store_true")
        parser.add_argument("hosts", nargs="+", metavar="NAME")
    return parser


def rstrnt_sync_set(args: list[str]) -> int:
    opts = _rstrnt_parser("rstrnt-sync-set", block=False).parse_args(args)
    for state in opts.states:
        call(lambda c, s=state: c.post(f"rstrnt:{s}"))
    return EXIT_OK


def rstrnt_sync_block(args: list[str]) -> int:
    opts = _rstrnt_parser("rstrnt-sync-block", block=True).parse_args(args)
    # "$SERVERS" may hold several names: split them as the shell would unquoted.
    hosts = list(dict.fromkeys(n for arg in opts.hosts for n in arg.split()))
    if not hosts:
        raise ShellSyncError("give the names of the systems to wait for", EXIT_USAGE)
    unknown = [h for h in hosts if h not in roles()]
    if unknown:
        raise ShellSyncError(
            f"{', '.join(unknown)}: not a worker of this run ({' '.join(roles())})"
        )
    timeout = opts.timeout if opts.timeout is not None else default_timeout(COMPAT_TIMEOUT)
    need = 1 if opts.any else len(hosts)
    if len(opts.states) == 1:
        call(lambda c: c.wait(f"rstrnt:{opts.states[0]}", need, timeout, hosts))
        return EXIT_OK
    call(lambda c: _block_any_state(c, opts.states, hosts, need, timeout))
    return EXIT_OK


def _block_any_state(client: Any, states: list[str], hosts: list[str], need: int, t: float) -> None:
    """Wait until `need` of `hosts` have each set one of `states` (looking at each in turn)."""
    from mhtest.sync.errors import SyncTimeout

    reached: set[str] = set()
    deadline = time.monotonic() + t
    while True:
        for state in states:
            left = [h for h in hosts if h not in reached]
            try:
                posts = client.wait(f"rstrnt:{state}", 1, STATE_POLL, left)
            except SyncTimeout:
                posts = {}
            reached.update(h for h in left if h in posts)
            if len(reached) >= need:
                return
        if time.monotonic() >= deadline:
            raise ShellSyncError(
                f"timeout: states {', '.join(states)} not set within {t:g} s by "
                f"{', '.join(h for h in hosts if h not in reached)}",
                EXIT_TIMEOUT,
            )


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "lava-send": lava_send,
    "lava-wait": lava_wait,
    "lava-wait-all": lava_wait_all,
    "lava-sync": lava_sync,
    "lava-self": lava_self,
    "lava-role": lava_role,
    "lava-group": lava_group,
    "rstrnt-sync-set": rstrnt_sync_set,
    "rstrnt-sync-block": rstrnt_sync_block,
}


def main(command: str, argv: list[str]) -> int:
    """Run LAVA's or restraint's `command` with its arguments; its exit code."""
    func = COMMANDS.get(command)
    if func is None:
        print(f"mhtest: {command}: not a sync command", file=sys.stderr)
        return EXIT_USAGE
    return reporting(command, lambda: func(argv))
