"""CLI plugin: `mhtest replay JOB|latest [--status FAIL,ERROR]`, an old job's tests again.

The old job's jobdata/ says what it ran: its references and tag filters (resolved again,
in the directory it ran from), its variants (as they were, not read again from the YAML
files), its params, hosts and options. `--status` keeps the tests that ended so in the
old job (results.json). Secret values were never written down (mhtest.secrets): a replay
runs without them unless they are given again with -p.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from mhtest.cli import CLICommand, UsageError

LOG = logging.getLogger(__name__)


def _key(ref: Any, host: Any, variant: Any) -> tuple[str, str, str]:
    """A test of a job, whatever its number: reference, place and variant."""
    return str(ref), str(host or "local"), str(variant or "")


class ReplayCommand(CLICommand):
    """Run the tests of an old job again."""

    name = "replay"
    help = (
        "run the tests of an old job again (JOB: an ID, 'latest', a path), with its params, "
        "hosts and variants"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", nargs="?", default="latest", metavar="JOB")
        parser.add_argument(
            "--status",
            metavar="S1,S2",
            help="only the tests that ended with these statuses (e.g. FAIL,ERROR,INTERRUPT)",
        )
        from mhtest.plugins.cli_run import add_param_option

        add_param_option(
            parser, "a test parameter over the old job's (repeatable; secrets were not kept)"
        )
        parser.add_argument("--max-parallel", type=int, default=None, metavar="N")
        parser.add_argument(
            "--failfast", action="store_true", help="stop at the first test that does not pass"
        )
        parser.add_argument(
            "--job-results-dir",
            default=None,
            metavar="DIR",
            help="where the old job is and the new one goes (default: ~/mhtest/job-results)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from mhtest.jobs import JobNotFound, find_job

        if args.max_parallel is not None and args.max_parallel < 1:
            raise UsageError("--max-parallel must be 1 or more")
        try:
            job = find_job(args.job, args.job_results_dir)
        except JobNotFound as exc:
            raise UsageError(str(exc)) from None
        references = job.jobdata("references")
        if not isinstance(references, list) or not references:
            raise UsageError(f"{job.path} has no jobdata/references.json: it cannot be replayed")
        results_dir = os.path.abspath(
            os.path.expanduser(args.job_results_dir or "~/mhtest/job-results")
        )
        pwd = job.jobdata("pwd")
        if isinstance(pwd, str) and os.path.isdir(pwd):
            os.chdir(pwd)  # the references are relative to where the old job ran
        plan = self._plan(args, job, references)
        from mhtest.plugins.cli_run import RunCommand

        command = RunCommand()
        parser = argparse.ArgumentParser()
        command.configure(parser)
        run_args = parser.parse_args(["--", *references])
        run_args.plan = plan
        run_args.job_results_dir = results_dir
        run_args.failfast = args.failfast
        return command.run(run_args)

    def _plan(self, args: argparse.Namespace, job: Any, references: list[str]) -> Any:
        from mhtest import params as params_mod
        from mhtest.hosts.inventory import HostConfig
        from mhtest.places import Options
        from mhtest.plugins.cli_run import Plan
        from mhtest.resolver import ResolutionError, resolve

        selection = job.jobdata("selection") or {"tags": job.jobdata("tags") or []}
        try:
            specs = resolve(
                references,
                tags=selection.get("tags") or [],
                include_empty=bool(selection.get("include_empty")),
                include_empty_key=bool(selection.get("include_empty_key")),
            )
        except ResolutionError as exc:
            raise UsageError(f"replaying {job.id[:7]}: {exc}") from None
        mux = job.jobdata("mux") or {}
        variants = [v for v in job.jobdata("variants") or [] if isinstance(v, dict)]
        if variants:
            from mhtest.variants import multiply

            specs = multiply(specs, variants, mux.get("execution_order") or "variants-per-test")
        try:
            extra = dict(params_mod.parse_assignment(p) for p in args.param)
        except params_mod.ParamsError as exc:
            raise UsageError(str(exc)) from None
        params = {**_unmasked(job.jobdata("params") or {}, "the job's params"), **extra}
        hosts = []
        for data in job.jobdata("hosts") or []:
            known = {k: v for k, v in data.items() if k in HostConfig.__dataclass_fields__}
            known["params"] = _unmasked(known.get("params") or {}, f"host {data.get('name')}")
            hosts.append(HostConfig(**known))
        options = Options.from_dict(job.jobdata("options"))
        if args.max_parallel is not None:
            options.max_parallel = args.max_parallel
        kept = self._kept(args, job)
        jobdata = {
            key: job.jobdata(key)
            for key in ("references", "tags", "selection", "params", "hosts", "options", "mux")
            if job.jobdata(key) is not None
        }
        jobdata["options"] = options.to_dict()
        jobdata["variants"] = variants
        jobdata["cmdline"] = ["mhtest", *sys.argv[1:]]
        jobdata["replay"] = {
            "source": job.id,
            "source_dir": str(job.path),
            "status": args.status,
            "tests": sorted(kept) if kept is not None else None,
        }
        keep = None
        if kept is not None:
            chosen = set(kept)

            def keep(spec: Any) -> bool:
                return _key(spec.ref, spec.host, (spec.variant or {}).get("variant_id")) in chosen

        return Plan(specs, hosts, params, options, jobdata, keep)

    @staticmethod
    def _kept(args: argparse.Namespace, job: Any) -> set[tuple[str, str, str]] | None:
        """The old job's tests to run again (None: all): --status, and an earlier replay's."""
        from mhtest.jobs import status_of, statuses

        earlier = (job.jobdata("replay") or {}).get("tests")
        kept = {_key(*k) for k in earlier} if isinstance(earlier, list) else None
        if args.status is None:
            return kept
        try:
            wanted = statuses(args.status)
        except ValueError as exc:
            raise UsageError(f"--status: {exc}") from None
        chosen = {
            _key(t.get("ref"), t.get("host"), t.get("variant"))
            for t in job.tests()
            if status_of(t) in wanted
        }
        kept = chosen if kept is None else kept & chosen
        if not kept:
            listed = ", ".join(sorted(wanted))
            raise UsageError(f"no test of job {job.id[:7]} ended {listed}: nothing to replay")
        return kept


def _unmasked(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Params without the values that were masked when the job was recorded (with a warning)."""
    from mhtest.secrets import MASK

    hidden = sorted(k for k, v in params.items() if v == MASK)
    if hidden:
        LOG.warning(
            "%s: secret, so not kept: %s (give them again with -p NAME=VALUE)",
            where,
            ", ".join(hidden),
        )
    return {k: v for k, v in params.items() if v != MASK}
