"""CLI plugin: `mhtest queue`, the spool-queue scheduler (Autotest's monitor_queue,
start_all_queues and mirror; see mhtest.queue).

    mhtest queue watch SPOOL RESULTS        # one queue
    mhtest queue start-all TOP              # a watcher per TOP/queue/<dir>, results in TOP/results
    mhtest queue mirror [--clients F] MIRROR QUEUES
    mhtest queue status TOP [--json]

`watch`, `start-all` and `mirror` run in the foreground until Ctrl-C or SIGTERM: the jobs
running then end INTERRUPT, their results kept; a second signal kills what is left.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mhtest import exitcodes
from mhtest.cli import CLICommand, UsageError

#: How often start-all looks for queues added under TOP/queue.
RESCAN = 2.0


class QueueCommand(CLICommand):
    """Spool directories of control files run on their queue's machines."""

    name = "queue"
    help = "run control files dropped into spool directories (Autotest's scheduler)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="queue_action", metavar="ACTION")
        watch = sub.add_parser(
            "watch",
            help="watch one spool directory and run its files (monitor_queue)",
            description="Run the control files dropped into SPOOL on the queue's machines "
            "(SPOOL/.machines, else the machine named as SPOOL), results into RESULTS.",
        )
        watch.add_argument("spool", metavar="SPOOL")
        watch.add_argument("results", metavar="RESULTS")
        _run_options(watch)
        start = sub.add_parser(
            "start-all",
            help="a watcher for every queue under TOP/queue, results in TOP/results",
            description="One process watching every directory of TOP/queue (and those added "
            "later), results into TOP/results; Ctrl-C or SIGTERM stops it.",
        )
        start.add_argument("top", metavar="TOP")
        _run_options(start)
        mirror = sub.add_parser(
            "mirror",
            help="queue control files for each new kernel release (the mirror script)",
            description="Watch MIRROR (or fill it with --rsync) and, for each new kernel "
            "release, queue the control files the mapping file names into QUEUES/<queue>.",
        )
        mirror.add_argument("mirror", metavar="MIRROR")
        mirror.add_argument("queues", metavar="QUEUES")
        _mirror_options(mirror)
        status = sub.add_parser("status", help="queues, machines busy or free, files")
        status.add_argument("top", metavar="TOP")
        status.add_argument("--json", action="store_true", help="print JSON")
        _host_options(status)
        status.add_argument("--locks", default=None, metavar="DIR", help=LOCKS_HELP)
        parser.set_defaults(_queue_parser=parser)

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "queue_action", None)
        if action is None:
            args._queue_parser.print_help()
            return exitcodes.JOB_FAIL
        if action == "status":
            return _status(args)
        if action == "mirror":
            return _foreground(lambda stop, force: _mirror(args, stop))
        return _foreground(lambda stop, force: _watch(args, action, stop, force))


LOCKS_HELP = (
    "where machines are marked busy, shared by every watcher that may use them "
    "(default: .busy beside the queues)"
)


def _host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory", default=None, metavar="FILE.yaml", help="an inventory naming the hosts"
    )
    parser.add_argument(
        "--ssh-config", default=None, metavar="FILE", help="ssh_config for host aliases"
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    _host_options(parser)
    parser.add_argument(
        "--ssh-accept-new-host-keys",
        action="store_true",
        help="accept (and record) host keys not in known_hosts",
    )
    parser.add_argument(
        "--remote-python", default="python3", metavar="PATH", help="the hosts' interpreter"
    )
    parser.add_argument(
        "--tests-path",
        action="append",
        default=[],
        metavar="DIRS",
        help="directories (':'-separated) where control files' test names are looked up "
        "(also: MHTEST_TESTS_PATH)",
    )
    parser.add_argument("--locks", default=None, metavar="DIR", help=LOCKS_HELP)
    parser.add_argument(
        "--poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="rescan the spools this often besides inotify (default 2; for NFS)",
    )


def _mirror_options(parser: argparse.ArgumentParser) -> None:
    from mhtest.queue.mirror import DEFAULT_CLIENTS

    parser.add_argument(
        "-c",
        "--clients",
        default=DEFAULT_CLIENTS,
        metavar="FILE",
        help=f"the mapping file: `queue control-file …` lines (default {DEFAULT_CLIENTS})",
    )
    parser.add_argument(
        "-f",
        "--config",
        default=None,
        metavar="FILE",
        help="`queue-or-machine path` lines: the kernel config to build source releases with",
    )
    parser.add_argument(
        "-e", "--email", default=None, metavar="ADDRS", help="mail a notice to these (a,b)"
    )
    parser.add_argument("--smtp", default="localhost:25", metavar="HOST[:PORT]")
    parser.add_argument("--email-from", default=None, metavar="ADDR")
    parser.add_argument(
        "--rsync", default=None, metavar="SOURCE", help="fill MIRROR from this rsync source"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="rsync this often (default 600)",
    )
    parser.add_argument("--once", action="store_true", help="scan (and rsync) once, then exit")


# -- running in the foreground ------------------------------------------------------------------
def _foreground(body: Callable[[threading.Event, threading.Event], int]) -> int:
    """Run `body(stop, force)` with SIGINT/SIGTERM setting `stop` (then `force`)."""
    stop, force = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        # Only events here: the threads that print may hold stdout's lock.
        (force if stop.is_set() else stop).set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return body(stop, force)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_SAY_LOCK = threading.Lock()


def _say(text: str) -> None:
    with _SAY_LOCK:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def _watch(args: argparse.Namespace, action: str, stop: threading.Event, force: Any) -> int:
    from mhtest.queue.scheduler import LOCKS_DIR, MachineLocks
    from mhtest.queue.status import queue_dirs
    from mhtest.queue.watcher import Watcher

    config = _watch_config(args, action)
    if action == "watch":
        spool = Path(os.path.abspath(args.spool))
        if not spool.is_dir():
            raise UsageError(f"{args.spool}: no such spool directory")
        spools, top = [spool], None
        locks_dir = Path(args.locks) if args.locks else spool.parent / LOCKS_DIR
    else:
        top = Path(os.path.abspath(args.top))
        if not (top / "queue").is_dir():
            raise UsageError(f"{args.top}: no queue directory in it ({top / 'queue'})")
        spools = queue_dirs(top)
        locks_dir = Path(args.locks) if args.locks else top / "queue" / LOCKS_DIR
    locks = MachineLocks(locks_dir)
    threads: dict[Path, threading.Thread] = {}

    def start(spool: Path) -> None:
        watcher = Watcher(spool, config, locks, stop, _say, force=force)
        thread = threading.Thread(target=watcher.run, name=f"watch-{spool.name}", daemon=True)
        threads[spool] = thread
        thread.start()

    for spool in spools:
        start(spool)
    if top is not None and not spools:
        _say(f"no queues in {top / 'queue'} yet: waiting for directories there")
    while not stop.wait(RESCAN):
        if top is not None:
            for spool in queue_dirs(top):
                if spool not in threads:
                    start(spool)
    _say("stopping: jobs running end INTERRUPT once their results are in (again: kill them)")
    told = False
    for thread in threads.values():
        while thread.is_alive():
            thread.join(0.2)
            if force.is_set() and not told:
                told = True
                _say("stopping now: killing the jobs still running")
    _say("stopped")
    return exitcodes.OK


def _watch_config(args: argparse.Namespace, action: str) -> Any:
    from mhtest.autoserv.names import ENV_TESTS_PATH
    from mhtest.dispatch import Options
    from mhtest.queue.watcher import POLL, WatchConfig

    dirs = [d for item in args.tests_path for d in item.split(os.pathsep) if d]
    dirs += [d for d in os.environ.get(ENV_TESTS_PATH, "").split(os.pathsep) if d]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise UsageError(f"--tests-path: {missing[0]} is not a directory")
    if args.poll is not None and args.poll <= 0:
        raise UsageError("--poll must be more than 0 seconds")
    results = args.results if action == "watch" else os.path.join(args.top, "results")
    options = Options(
        accept_new_host_keys=args.ssh_accept_new_host_keys,
        remote_python=args.remote_python,
        inventory=os.path.abspath(args.inventory) if args.inventory else None,
        ssh_config=os.path.abspath(args.ssh_config) if args.ssh_config else None,
    )
    return WatchConfig(
        results=Path(os.path.abspath(results)),
        options=options,
        tests_path=[os.path.abspath(d) for d in dirs],
        poll=args.poll or POLL,
    )


def _mirror(args: argparse.Namespace, stop: threading.Event) -> int:
    from mhtest.queue.mirror import Mirror, MirrorConfig, MirrorError, load_clients, smtp_address

    queues = Path(os.path.abspath(args.queues))
    if not queues.is_dir():
        raise UsageError(f"{args.queues}: no such queue directory")
    clients = Path(os.path.expanduser(args.clients))
    try:
        load_clients(clients)
        smtp_address(args.smtp)
    except MirrorError as exc:
        raise UsageError(str(exc)) from None
    except ValueError:
        raise UsageError(f"--smtp {args.smtp}: write HOST or HOST:PORT") from None
    config = MirrorConfig(
        mirror=Path(os.path.abspath(args.mirror)),
        queues=queues,
        clients=clients,
        configs=Path(os.path.abspath(args.config)) if args.config else None,
        email=[a.strip() for a in (args.email or "").split(",") if a.strip()],
        smtp=args.smtp,
        sender=args.email_from,
        rsync=args.rsync,
        interval=args.interval,
    )
    Mirror(config, _say).run(stop, once=args.once)
    return exitcodes.OK


def _status(args: argparse.Namespace) -> int:
    from mhtest.queue.scheduler import LOCKS_DIR
    from mhtest.queue.status import collect, render

    top = Path(os.path.abspath(args.top))
    if not (top / "queue").is_dir():
        raise UsageError(f"{args.top}: no queue directory in it ({top / 'queue'})")
    locks = Path(args.locks) if args.locks else top / "queue" / LOCKS_DIR
    statuses = collect(top, locks, args.inventory, args.ssh_config)
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=1))
    else:
        sys.stdout.write(render(statuses))
    return exitcodes.OK
