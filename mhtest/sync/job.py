"""Sync for `mhtest run`: --sync-server starts a server for the job, --sync joins one.

Separate runs meet this way (the RFC's case of jobs started by other tools):

    mhtest run server_side.py --sync-server 127.0.0.1:5555     # prints SYNC SERVER: tcp://…
    mhtest run client_side.py --sync 127.0.0.1:5555

On a server that several pairs of runs share (`mhtest sync-server`), each pair names its
own group, and meets nobody else there:

    mhtest run server_side.py --sync 127.0.0.1:5555 --sync-group nightly-42
    mhtest run client_side.py --sync 127.0.0.1:5555 --sync-group nightly-42

Each test process of the job gets MHTEST_SYNC_* variables (see `job_sync`) from which
`SyncClient.from_environment()` builds the test's `self.sync`.

Participant names: `--sync-participant NAME` names every test of the job NAME. Without it,
each test is named after its reference, without directories:
"sync_tcp_server.py:SyncTCPServer.test" (see `default_participant`), which is stable from
run to run and unique within a job unless the same test runs twice at the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mhtest.sync.client import ENV_ADDRESS, ENV_COUNT, ENV_GROUP, ENV_KEYS, ENV_PARTICIPANT
from mhtest.sync.coordinator import SHARED_IDLE_EXPIRY
from mhtest.sync.errors import SyncError, SyncOptionError
from mhtest.sync.protocol import MAX_NAME_CHARS

DEFAULT_SERVER_BIND = "127.0.0.1:0"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the sync options to `mhtest run`."""
    group = parser.add_argument_group("sync (barriers and data exchange between separate runs)")
    group.add_argument(
        "--sync-server",
        nargs="?",
        const=DEFAULT_SERVER_BIND,
        metavar="ADDR:PORT",
        help="start a sync server for this job (default 127.0.0.1, any free port) and print "
        "its address; bind a non-loopback address only on a trusted network or with --sync-keys",
    )
    group.add_argument(
        "--sync", metavar="HOST:PORT", help="join the sync server another run started"
    )
    group.add_argument(
        "--sync-group",
        metavar="NAME",
        help="on a sync server that several runs share, meet only the runs of this group "
        "(default: one group common to all)",
    )
    group.add_argument(
        "--sync-keys",
        metavar="DIR",
        help="CurveZMQ keys directory (server.key, server.key_secret, clients/NAME.key…): "
        "the server accepts only the client keys listed there",
    )
    group.add_argument(
        "--sync-participant",
        metavar="NAME",
        help="this job's participant name (default: each test's file:Class.method)",
    )
    group.add_argument(
        "--sync-count",
        metavar="N",
        type=int,
        help="how many participants a barrier waits for by default (all of them)",
    )


def default_participant(ref: str) -> str:
    """The participant name of a test when none is given: its reference minus directories."""
    path, sep, rest = ref.partition(":")
    return os.path.basename(path) + sep + rest


def set_participants(specs: Iterable[Any], sync_env: dict[str, str]) -> None:
    """Give each test spec its default participant name when the job has sync but no name."""
    if ENV_ADDRESS not in sync_env or ENV_PARTICIPANT in sync_env:
        return
    for spec in specs:
        spec.env.setdefault(ENV_PARTICIPANT, default_participant(spec.ref))


def _usage_error(message: str) -> Exception:
    return SyncOptionError(message)


def _check(args: argparse.Namespace) -> None:
    server, join = getattr(args, "sync_server", None), getattr(args, "sync", None)
    if server is not None and join is not None:
        raise _usage_error(
            "use --sync-server to start a sync server or --sync to join one, not both"
        )
    if server is None and join is None:
        # (--sync-keys alone serves the sync servers of the job's multi-host tests.)
        for option in ("sync_participant", "sync_count", "sync_group"):
            if getattr(args, option, None) is not None:
                flag = "--" + option.replace("_", "-")
                raise _usage_error(f"{flag} needs --sync HOST:PORT or --sync-server")
    count = getattr(args, "sync_count", None)
    if count is not None and count < 1:
        raise _usage_error(f"--sync-count must be at least 1, not {count}")
    sync_group = getattr(args, "sync_group", None)
    if sync_group is not None and not 0 < len(sync_group.strip()) <= MAX_NAME_CHARS:
        raise _usage_error(f"--sync-group must be a name of 1 to {MAX_NAME_CHARS} characters")
    keys = getattr(args, "sync_keys", None)
    if keys is not None and not Path(keys).is_dir():
        raise _usage_error(f"--sync-keys: {keys} is not a directory")


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def job_sync(
    args: argparse.Namespace, announce: Callable[[str], None] = _stderr_line
) -> Iterator[dict[str, str]]:
    """Start the job's sync server if asked; yield the MHTEST_SYNC_* variables for its tests.

    Yields {} when the job uses no sync. A mistake (bad address, port taken, missing
    keys) raises SyncOptionError with a one-line message. With only --sync-keys, the
    keys directory is for the job's multi-host tests, whose servers then use it.
    """
    _check(args)
    server_bind, join = getattr(args, "sync_server", None), getattr(args, "sync", None)
    if server_bind is None and join is None:
        keys_only = getattr(args, "sync_keys", None)
        yield {ENV_KEYS: str(Path(keys_only).resolve())} if keys_only else {}
        return
    env: dict[str, str] = {}
    keys = getattr(args, "sync_keys", None)
    if keys is not None:
        env[ENV_KEYS] = str(Path(keys).resolve())
    if getattr(args, "sync_participant", None):
        env[ENV_PARTICIPANT] = args.sync_participant
    count = getattr(args, "sync_count", None)
    if count is not None:
        env[ENV_COUNT] = str(count)
    if getattr(args, "sync_group", None):
        env[ENV_GROUP] = args.sync_group.strip()
    if join is not None:
        yield {**env, ENV_ADDRESS: _join_address(join, keys)}
        return
    from mhtest.sync.server import SyncServer

    try:
        # Other runs may join it, each in its group: forget the groups that have left.
        server = SyncServer(
            server_bind, keys_dir=keys, expected=count, idle_expiry=SHARED_IDLE_EXPIRY
        ).start()
    except SyncError as exc:
        raise _usage_error(f"--sync-server {server_bind}: {exc}") from None
    try:
        announce(f"SYNC SERVER: {server.bound}")
        yield {**env, ENV_ADDRESS: server.address}
    finally:
        server.stop()


def _join_address(text: str, keys: str | None) -> str:
    from mhtest.sync import protocol

    try:
        host, port = protocol.parse_endpoint(text, default_port=-1)
    except ValueError as exc:
        raise _usage_error(f"--sync: {exc}") from None
    if port <= 0:
        raise _usage_error(f"--sync {text}: give the server's HOST:PORT")
    if keys is not None:
        from mhtest.sync.keys import check_client_dir

        try:
            check_client_dir(keys)
        except SyncError as exc:
            raise _usage_error(f"--sync-keys: {exc}") from None
    return f"tcp://{host}:{port}"
