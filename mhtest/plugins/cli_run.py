"""CLI plugin: `mhtest run`, run tests here or on hosts and write the results tree."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

from mhtest.cli import CLICommand, UsageError
from mhtest.plugins import load_plugins
from mhtest.plugins.cli_variants import add_mux_options, load_variants
from mhtest.spec import TestSpec


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `list`: what to run."""
    parser.add_argument(
        "references",
        nargs="*",
        metavar="REF",
        help="test files, directories, or FILE.py:REGEX (matched against Class.method); "
        "Autoserv control files: *.srv (server), control and *.control (client)",
    )
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="FILE",
        help="a server control file, whatever its name (repeatable)",
    )
    parser.add_argument(
        "-t",
        "--filter-by-tags",
        action="append",
        default=[],
        metavar="TAGS",
        help="keep tests with all these comma-separated tags ('-tag': without; "
        "'key:value', 'key:-value'); repeat for alternatives",
    )
    parser.add_argument(
        "--filter-by-tags-include-empty",
        action="store_true",
        help="with --filter-by-tags, also keep tests without tags",
    )
    parser.add_argument(
        "--filter-by-tags-include-empty-key",
        action="store_true",
        help="with --filter-by-tags, a key:value also keeps tests without tags of that key",
    )


def add_param_option(parser: argparse.ArgumentParser, text: str) -> None:
    """-p/--param KEY=VALUE (`run`, `replay`)."""
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help=text
    )


def resolve_selection(args: argparse.Namespace) -> list[TestSpec]:
    """References and tag filters → TestSpecs, or UsageError."""
    from mhtest.resolver import ResolutionError, resolve

    if not args.references and not args.control:
        raise UsageError("name the tests to run: files, directories, or --control FILE")
    try:
        specs = (
            resolve(
                args.references,
                tags=args.filter_by_tags,
                include_empty=args.filter_by_tags_include_empty,
                include_empty_key=args.filter_by_tags_include_empty_key,
            )
            if args.references
            else []
        )
    except ResolutionError as exc:
        raise UsageError(str(exc)) from None
    specs += _server_controls(args.control)
    if not specs:
        raise UsageError(
            "nothing to run: no tests found in "
            + ", ".join(args.references)
            + (" with the given tags" if args.filter_by_tags else "")
        )
    return specs


def _server_controls(paths: list[str]) -> list[TestSpec]:
    """The specs of --control FILE: server control files whatever their names."""
    from pathlib import Path

    from mhtest.autoserv.controlfile import control_spec
    from mhtest.resolver import _display
    from mhtest.spec import CONTROL_SERVER

    specs = []
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"--control {text}: no such file (check the path)")
        specs.append(control_spec(path, _display(path), CONTROL_SERVER))
    return specs


def _sync_module() -> Any:
    try:
        from mhtest.sync import job as sync_job
    except ImportError:
        return None
    return sync_job


@dataclass
class Plan:
    """What a job runs: its tests (variants multiplied in), places, params, options, and
    how it was asked for (jobdata). `mhtest run` makes one from its command line,
    `mhtest replay` from an old job's jobdata/."""

    specs: list[TestSpec]
    hosts: list[Any]
    params: dict[str, Any]
    options: Any
    jobdata: dict[str, Any]
    #: Which placed tests to run (replay --status): all when None.
    keep: Callable[[TestSpec], bool] | None = None


class RunCommand(CLICommand):
    """Run tests and record their results."""

    name = "run"
    help = "run tests (here, or on --hosts) and record their results"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_selection_options(parser)
        add_param_option(parser, "a test parameter (repeatable); values are strings")
        parser.add_argument(
            "--params",
            action="append",
            default=[],
            metavar="FILE.yaml",
            help="a YAML file of parameters (repeatable; types kept)",
        )
        parser.add_argument(
            "--max-parallel",
            type=int,
            default=None,
            metavar="N",
            help="tests run at once per place (default: that place's CPU count)",
        )
        parser.add_argument(
            "--failfast",
            action="store_true",
            help="stop at the first test that does not pass (FAIL, ERROR, INTERRUPT): "
            "the tests not started end INTERRUPT",
        )
        parser.add_argument(
            "--job-results-dir",
            default=None,
            metavar="DIR",
            help="where job results go (default: ~/mhtest/job-results)",
        )
        hosts = parser.add_argument_group("hosts")
        hosts.add_argument(
            "--hosts",
            "--machines",
            dest="hosts",
            default=None,
            metavar="H1,H2",
            help="run on these hosts: [user@]name[:port], ssh_config aliases, "
            "inventory names, or 'local' (a server control file's `machines`)",
        )
        parser.add_argument(
            "-m",
            nargs="+",
            action=MachinesOrMux,
            metavar="FILE|H1,H2",
            help="YAML-to-mux files (as Avocado's -m), or machines (as autoserv's -m: "
            "the same as --hosts)",
        )
        hosts.add_argument(
            "--inventory",
            default=None,
            metavar="FILE.yaml",
            help="an Ansible-style YAML inventory naming the hosts",
        )
        hosts.add_argument(
            "--ssh-config",
            default=None,
            metavar="FILE",
            help="an OpenSSH client config for host aliases (default: ~/.ssh/config)",
        )
        hosts.add_argument(
            "--ssh-accept-new-host-keys",
            action="store_true",
            help="accept (and record) host keys not in known_hosts",
        )
        hosts.add_argument(
            "--remote-python",
            default="python3",
            metavar="PATH",
            help="the interpreter to use on the hosts (default: python3)",
        )
        hosts.add_argument(
            "--max-results-size",
            default=None,
            metavar="SIZE",
            help="the most a host may send back as one test's results (default 1G; "
            "e.g. 200M): past it the test is ERROR and the rest is dropped",
        )
        hosts.add_argument(
            "--remote-exclude",
            action="append",
            default=[],
            metavar="PATTERN",
            help="do not send files matching PATTERN to the hosts (repeatable; a "
            ".mhtestignore line, relative to each test's directory: *.iso, build/, /big/)",
        )
        hosts.add_argument(
            "--remote-send-dir",
            action="store_true",
            help="send each test's whole directory to the hosts, not only what the test "
            "needs (its file, <file>.data/, the modules it imports, the files it names)",
        )
        hosts.add_argument(
            "--sync-direct",
            action="store_true",
            help="multi-host workers reach the sync server directly instead "
            "of through their SSH connection",
        )
        control = parser.add_argument_group("control files (Autoserv)")
        control.add_argument(
            "--args",
            default=None,
            metavar="TEXT",
            help="the `args` of control files, split like a shell line (the `args` param)",
        )
        control.add_argument(
            "--tests-path",
            action="append",
            default=[],
            metavar="DIRS",
            help="directories (':'-separated, repeatable) where control files' test names "
            "are looked up after the control file's own (also: MHTEST_TESTS_PATH)",
        )
        add_mux_options(parser, short=False)
        parser.add_argument(
            "--execution-order",
            choices=("variants-per-test", "tests-per-variant"),
            default="variants-per-test",
            help="with -m: each test with every variant (default), or each variant's tests",
        )
        sync_job = _sync_module()
        if sync_job is not None:
            sync_job.add_run_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        plan = getattr(args, "plan", None) or self.plan(args)
        return self.launch(args, plan)

    def plan(self, args: argparse.Namespace) -> Plan:
        """What the command line asks to run (or UsageError)."""
        from mhtest import params as params_mod
        from mhtest.dispatch import Options
        from mhtest.secrets import masked_variant

        if args.max_parallel is not None and args.max_parallel < 1:
            raise UsageError("--max-parallel must be 1 or more")
        try:
            layers = [params_mod.load_yaml(f) for f in args.params]
            cli_params = dict(params_mod.parse_assignment(p) for p in args.param)
        except params_mod.ParamsError as exc:
            raise UsageError(str(exc)) from None
        base_params = params_mod.merge(*layers, cli_params)
        if args.args is not None:
            base_params["args"] = args.args
        max_results = None
        if args.max_results_size is not None:
            from mhtest.runners.untrusted import parse_size

            try:
                max_results = parse_size(args.max_results_size)
            except ValueError as exc:
                raise UsageError(f"--max-results-size: {exc}") from None
        specs = resolve_selection(args)
        _set_tests_path(specs, args.tests_path)
        variants = load_variants(args)
        dumps = []
        if variants is not None:
            from mhtest.variants import multiply

            dumps = [variant.dump() for variant in variants]
            specs = multiply(specs, dumps, args.execution_order)
        hosts = self._hosts(args)
        options = Options(
            max_parallel=args.max_parallel,
            accept_new_host_keys=args.ssh_accept_new_host_keys,
            remote_python=args.remote_python,
            sync_direct=args.sync_direct,
            inventory=args.inventory,
            ssh_config=args.ssh_config,
            max_results=max_results,
            remote_exclude=list(args.remote_exclude),
            remote_send_dir=args.remote_send_dir,
        )
        jobdata = _jobdata(args, base_params, hosts, options)
        jobdata["variants"] = [masked_variant(d) or d for d in dumps]
        return Plan(specs, hosts, base_params, options, jobdata)

    def launch(self, args: argparse.Namespace, plan: Plan) -> int:
        """Run a plan as a job: results tree, console, result writers, sync."""
        from mhtest.console import Console
        from mhtest.dispatch import place
        from mhtest.job import DEFAULT_RESULTS_DIR, JobConfig

        plan.options.failfast = bool(args.failfast)
        config = JobConfig(
            results_dir=args.job_results_dir or DEFAULT_RESULTS_DIR,
            options=plan.options,
            jobdata=plan.jobdata,
            # Started by the CLI before the plugins loaded, if this job runs tests here.
            fork_server=getattr(args, "early_fork_server", None),
        )
        assignments = place(plan.specs, plan.hosts, plan.params, plan.options)
        if plan.keep is not None:
            assignments = [(where, spec) for where, spec in assignments if plan.keep(spec)]
        here = sum(where.is_local for where, _ in assignments)
        self._room_for(here, plan.options.max_parallel or os.cpu_count() or 1)
        console = Console()
        writers = [cls() for _, cls in load_plugins("mhtest.result")]
        sync_job = _sync_module()
        sync_ctx = sync_job.job_sync(args) if sync_job is not None else contextlib.nullcontext({})
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return self._run_job(config, assignments, sync_job, sync_ctx, writers, console)
        finally:
            signal.signal(signal.SIGTERM, previous)

    @staticmethod
    def _run_job(
        config: Any, assignments: list, sync_job: Any, sync_ctx: Any, writers: list, console: Any
    ) -> int:
        from mhtest.job import Job, JobError
        from mhtest.sync.errors import SyncOptionError

        try:
            with sync_ctx as sync_env:
                config.env.update(sync_env or {})
                if sync_job is not None:
                    # Each test meets the others under a stable name from its reference.
                    sync_job.set_participants([s for _, s in assignments], sync_env or {})
                try:
                    job = Job(config, writers, console)
                except JobError as exc:
                    raise UsageError(str(exc)) from None
                job.add(assignments)
                return job.run()
        except SyncOptionError as exc:
            raise UsageError(str(exc)) from None

    @staticmethod
    def _hosts(args: argparse.Namespace) -> list[Any]:
        if not args.hosts and not args.inventory:
            return []
        from mhtest.hosts.inventory import HostSpecError, resolve_hosts

        try:
            hosts = resolve_hosts(
                args.hosts or "all", inventory_path=args.inventory, ssh_config_path=args.ssh_config
            )
        except HostSpecError as exc:
            raise UsageError(str(exc)) from None
        if not hosts:
            raise UsageError("--hosts/--inventory named no hosts")
        return hosts

    @staticmethod
    def _room_for(here: int, max_parallel: int) -> None:
        """Room for the `here` tests that run on this machine (open files), or one line."""
        if not here:
            return
        from mhtest.runners.limits import ParallelismError, ensure_open_files

        try:
            ensure_open_files(min(max_parallel, here))
        except ParallelismError as exc:
            raise UsageError(str(exc)) from None


def _set_tests_path(specs: list[TestSpec], given: list[str]) -> None:
    """--tests-path (then MHTEST_TESTS_PATH) on every control file's spec."""
    import os

    from mhtest.autoserv.names import ENV_TESTS_PATH
    from mhtest.spec import CONTROL_CLIENT, CONTROL_SERVER

    dirs = [d for item in given for d in item.split(os.pathsep) if d]
    dirs += [d for d in os.environ.get(ENV_TESTS_PATH, "").split(os.pathsep) if d]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise UsageError(f"--tests-path: {missing[0]} is not a directory")
    for spec in specs:
        if spec.kind in (CONTROL_SERVER, CONTROL_CLIENT):
            spec.tests_path = [os.path.abspath(d) for d in dirs]


class MachinesOrMux(argparse.Action):
    """`-m`: Avocado's YAML-to-mux files and autoserv's machines share the letter.

    A value that names a YAML file ([WHERE:]FILE.yaml, or an existing file) goes to
    --mux-yaml; any other value is a comma-separated list of hosts for --hosts.
    """

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        for value in values:
            path = value.rsplit(":", 1)[-1]
            if path.endswith((".yaml", ".yml")) or os.path.isfile(path):
                namespace.mux_yaml = [*(getattr(namespace, "mux_yaml", None) or []), value]
            else:
                given = getattr(namespace, "hosts", None)
                namespace.hosts = f"{given},{value}" if given else value


def _jobdata(args: argparse.Namespace, params: dict, hosts: list[Any], options: Any) -> dict:
    """How this job was asked for, for jobdata/ (secret params masked)."""
    import dataclasses

    from mhtest.secrets import masked

    places = []
    for host in hosts:
        place = dataclasses.asdict(host)
        place["params"] = masked(host.params, host.secrets)
        places.append(place)
    return {
        "cmdline": ["mhtest", *_masked_argv(sys.argv[1:])],
        "references": list(args.references),
        "tags": list(args.filter_by_tags),
        "selection": {
            "tags": list(args.filter_by_tags),
            "include_empty": args.filter_by_tags_include_empty,
            "include_empty_key": args.filter_by_tags_include_empty_key,
        },
        "mux": {
            "files": list(args.mux_yaml),
            "filter_only": list(args.mux_filter_only),
            "filter_out": list(args.mux_filter_out),
            "paths": list(args.mux_path),
            "inject": list(args.mux_inject),
            "execution_order": args.execution_order,
        },
        "params": masked(params),
        "hosts": places,
        "options": options.to_dict(),
    }


def _masked_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret-looking `-p NAME=VALUE` params masked."""
    from mhtest.secrets import MASK, looks_secret

    out = []
    after_p = False
    for arg in argv:
        prefix, text = "", arg
        if not after_p:
            for flag in ("--param=", "-p"):
                if arg.startswith(flag) and arg not in ("-p",):
                    prefix, text = flag, arg[len(flag) :]
                    break
        name, eq, _value = text.partition("=")
        if (after_p or prefix) and eq and looks_secret(name):
            arg = f"{prefix}{name}={MASK}"
        out.append(arg)
        after_p = arg in ("-p", "--param")
    return out


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stderr(text: str) -> None:
    print(text, file=sys.stderr)
