"""CLI plugins: `mhtest sync-server` (a sync server in the foreground until Ctrl-C/SIGTERM)
and `mhtest sync` (a worker's barriers, messages and locks from a shell: mhtest.sync.shell)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from mhtest import exitcodes
from mhtest.cli import CLICommand, UsageError


class SyncCommand(CLICommand):
    """`mhtest sync OPERATION …` for the processes of a multi-host test's workers.

    mhtest.cli runs it straight (without loading the plugins); this plugin gives it its
    place in `mhtest --help` and runs it when called through the plugin table.
    """

    name = "sync"
    help = "barriers, exchanges, messages and locks for a worker's processes (shell tests)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="see mhtest sync --help")

    def run(self, args: argparse.Namespace) -> int:
        from mhtest.sync.shell import main

        return main(args.arguments)


class SyncServerCommand(CLICommand):
    """Run a sync server that separate `mhtest run --sync HOST:PORT` jobs can join."""

    name = "sync-server"
    help = "run a sync server (barriers, data exchange, locks) until interrupted"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--bind",
            default="127.0.0.1:0",
            metavar="ADDR:PORT",
            help="address to listen on (default 127.0.0.1, any free port); bind a non-loopback "
            "address only on a trusted network or with --sync-keys",
        )
        parser.add_argument(
            "--sync-keys",
            metavar="DIR",
            help="CurveZMQ keys directory: accept only the client keys in DIR/clients",
        )
        parser.add_argument(
            "--participants",
            type=int,
            metavar="N",
            help="how many participants barriers wait for when a client gives no count",
        )

    def run(self, args: argparse.Namespace) -> int:
        from mhtest.sync.coordinator import SHARED_IDLE_EXPIRY
        from mhtest.sync.errors import SyncError
        from mhtest.sync.server import SyncServer

        if args.participants is not None and args.participants < 1:
            raise UsageError(f"--participants must be at least 1, not {args.participants}")
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                server = SyncServer(
                    args.bind,
                    keys_dir=args.sync_keys,
                    expected=args.participants,
                    idle_expiry=SHARED_IDLE_EXPIRY,  # runs come and go, each in its group
                )
                server.start()
            except SyncError as exc:
                raise UsageError(str(exc)) from None
            try:
                print(f"SYNC SERVER: {server.bound}", flush=True)
                while not stop.wait(0.5):
                    pass
            finally:
                server.stop()
            print("sync server stopped", file=sys.stderr, flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exitcodes.OK
