"""Command-line entry point: every subcommand is a `mhtest.cli` plugin."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from mhtest import __version__, exitcodes

LOG = logging.getLogger(__name__)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2, no traceback."""


class CLICommand:
    """Base of a `mhtest.cli` plugin: one subcommand.

    A plugin sets `name` and `help`, adds its options in `configure()` and does its
    work in `run()`, returning the process exit code (see mhtest.exitcodes).
    """

    name: str = ""
    help: str = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this subcommand's options to its parser."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def _load_commands() -> list[CLICommand]:
    from mhtest.plugins import load_plugins

    return [cls() for _, cls in load_plugins("mhtest.cli")]


def build_parser(commands: Sequence[CLICommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhtest", description="Run tests on this machine and on many hosts."
    )
    parser.add_argument("--version", action="version", version=f"mhtest {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages to the console"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the subcommand, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sync"]:
        # A worker's shell sync: one short process, so no plugins (the `sync` plugin's
        # help lists it with the others).
        from mhtest.sync.shell import main as sync_main

        return sync_main(argv[1:])
    early = None
    if argv[:1] == ["run"]:
        # The job's fork server starts before the plugins load (see
        # mhtest.runners.forkserver.fork_server_ahead); `run` finds it in its arguments.
        from mhtest.runners.forkserver import fork_server_ahead

        early = fork_server_ahead(argv[1:])
    try:
        return _main(argv, early)
    finally:
        if early is not None:
            early.close()  # a no-op if the job used and closed it


#: Options whose value is a command line of its own ("-t sleeptest -l logs"): argparse would
#: take a value that starts with one of our short options (-t) for that option.
RAW_VALUE_OPTIONS = ("--args",)


def _raw_values(argv: list[str]) -> list[str]:
    """`--args VALUE` as `--args=VALUE`, whatever VALUE starts with (autoserv's usage)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in RAW_VALUE_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _main(argv: list[str], early_fork_server: object) -> int:
    try:
        commands = _load_commands()
    except Exception as exc:  # noqa: BLE001 - the CLI must say what broke
        print(f"mhtest: cannot load commands: {exc}", file=sys.stderr)
        return exitcodes.CRASH
    parser = build_parser(commands)
    args = parser.parse_args(_raw_values(argv))
    args.early_fork_server = early_fork_server
    console_log = logging.StreamHandler(sys.stderr)
    console_log.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    console_log.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not args.verbose:
        # Libraries' own chatter (paramiko's tracebacks for a silent host, …) stays in
        # job.log; the console gets mhtest's one-line reasons.
        console_log.addFilter(lambda record: record.name.split(".", 1)[0] == "mhtest")
    logging.getLogger().addHandler(console_log)
    cmd = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return exitcodes.JOB_FAIL
    try:
        return cmd.run(args)
    except UsageError as exc:
        print(f"mhtest {cmd.name}: error: {exc}", file=sys.stderr)
        return exitcodes.JOB_FAIL
    except KeyboardInterrupt:
        print("mhtest: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a crash still gets one line and its exit code
        LOG.debug("crash", exc_info=True)
        import traceback

        traceback.print_exc()
        print(f"mhtest {cmd.name}: crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exitcodes.CRASH
