"""CLI plugin: `mhtest jobs list` and `mhtest jobs show JOB|latest`, as Avocado's `jobs`."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from mhtest import exitcodes
from mhtest.cli import CLICommand, UsageError


def add_results_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job-results-dir",
        default=None,
        metavar="DIR",
        help="where the jobs are (default: ~/mhtest/job-results)",
    )


def _when(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A time from results.json (mhtest's seconds, or Avocado's text) for a person."""
    if isinstance(value, (int, float)) and value > 0:
        return datetime.datetime.fromtimestamp(value).strftime(fmt)
    return str(value) if value not in (None, "") else "<unknown>"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


class JobsCommand(CLICommand):
    """List old jobs, or show one."""

    name = "jobs"
    help = "list the jobs in the results directory, or show one (JOB: an ID, 'latest', a path)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND")
        sub.required = True
        listing = sub.add_parser("list", help="the jobs, newest first")
        add_results_dir_option(listing)
        show = sub.add_parser("show", help="a job's tests and results")
        show.add_argument("job", nargs="?", default="latest", metavar="JOB")
        add_results_dir_option(show)

    def run(self, args: argparse.Namespace) -> int:
        if args.jobs_command == "list":
            return self._list(args)
        return self._show(args)

    @staticmethod
    def _list(args: argparse.Namespace) -> int:
        from mhtest.jobs import all_jobs

        for job in all_jobs(args.job_results_dir):
            data = job.results()
            counts = "/".join(str(data.get(k, "?")) for k in ("pass", "skip", "errors", "failures"))
            start, total = _when(data.get("start")), data.get("total", "?")
            print(f"{job.id:<40} {start:<26} {total:>3} ({counts})")
        return exitcodes.OK

    @staticmethod
    def _show(args: argparse.Namespace) -> int:
        from mhtest.jobs import JobNotFound, find_job, status_of

        try:
            job = find_job(args.job, args.job_results_dir)
        except JobNotFound as exc:
            raise UsageError(str(exc)) from None
        data = job.results()
        if not data:
            raise UsageError(f"{job.path} has no readable results.json")
        cmdline = job.jobdata("cmdline")
        print(f"JOB ID     : {job.id}")
        print(f"JOB DIR    : {job.path}")
        print(f"JOB LOG    : {data.get('debuglog', '<unknown>')}")
        if isinstance(cmdline, list):
            print(f"COMMAND    : {' '.join(map(str, cmdline))}")
        print()
        rows = [("Test ID", "End Time", "Run Time", "Status", "Reason")]
        for test in data.get("tests") or []:
            reason = str(test.get("fail_reason") or "")
            reason = "" if reason == "<unknown>" else reason.splitlines()[0][:100] if reason else ""
            end = test.get("end", test.get("actual_time_end"))
            run_time = test.get("time", test.get("time_elapsed"))
            rows.append(
                (
                    str(test.get("id") or test.get("name") or "<unknown>"),
                    _when(end, "%Y/%m/%d %H:%M:%S"),
                    f"{float(run_time):.6f}" if isinstance(run_time, (int, float)) else "<unknown>",
                    status_of(test) or "<unknown>",
                    reason,
                )
            )
        for line in _table(rows):
            print(line)
        counts = [
            ("PASS", "pass"),
            ("FAIL", "failures"),
            ("ERROR", "errors"),
            ("SKIP", "skip"),
            ("WARN", "warn"),
            ("CANCEL", "cancel"),
            ("INTERRUPT", "interrupt"),
        ]
        print()
        print("RESULTS    : " + " | ".join(f"{n} {data.get(k, 0)}" for n, k in counts))
        sys.stdout.flush()
        return exitcodes.OK
