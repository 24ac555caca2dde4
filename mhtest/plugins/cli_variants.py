"""CLI plugin: `mhtest variants -m FILE`, the variants of YAML-to-mux files, as Avocado's."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mhtest import exitcodes
from mhtest.cli import CLICommand, UsageError


def add_mux_options(parser: argparse.ArgumentParser, short: bool = True) -> None:
    """Avocado's yaml_to_mux options (`run` and `variants`).

    Without `short`, no `-m`: `run` gives it both meanings (YAML files, or machines as
    autoserv's `-m`) through cli_run.MachinesOrMux.
    """
    group = parser.add_argument_group("variants (YAML to mux)")
    group.add_argument(
        *(("-m",) if short else ()),
        "--mux-yaml",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="YAML-to-mux files ([WHERE:]FILE, under /run unless WHERE is absolute): "
        "each test runs once per variant",
    )
    for flag, metavar, text in (
        (
            "--mux-filter-only",
            "FILTER",
            "keep only these paths of the tree (and what is beside them)",
        ),
        ("--mux-filter-out", "FILTER", "drop these paths of the tree"),
        (
            "--mux-path",
            "PATH",
            "where params.get() looks when no path is given, in order (default: /run/*)",
        ),
        (
            "--mux-inject",
            "PATH_KEY_NODE",
            "set [path:]key:value in the tree (the value a Python literal, else text)",
        ),
    ):
        group.add_argument(flag, nargs="+", action="extend", default=[], metavar=metavar, help=text)


def load_variants(args: argparse.Namespace) -> Any:
    """The variants the options name (mhtest.variants.Variants), or UsageError; None without -m."""
    if not args.mux_yaml and not args.mux_inject:
        return None
    from mhtest.mux import MuxError
    from mhtest.variants import Variants

    try:
        return Variants.from_files(
            args.mux_yaml,
            filter_only=args.mux_filter_only,
            filter_out=args.mux_filter_out,
            paths=args.mux_path or None,
            injected=args.mux_inject,
        )
    except MuxError as exc:
        raise UsageError(str(exc)) from None


def _level(text: str) -> int:
    from mhtest.variants import verbosity

    try:
        return verbosity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class VariantsCommand(CLICommand):
    """List the variants of YAML-to-mux files."""

    name = "variants"
    help = "show the variants of YAML-to-mux files (-m), as `avocado variants` does"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_mux_options(parser)
        levels = "a number or none, brief, normal, verbose, full, max"
        parser.add_argument(
            "--summary", type=_level, default=0, help=f"how much of the tree to show ({levels})"
        )
        parser.add_argument(
            "--variants",
            type=_level,
            default=1,
            help=f"how much of each variant to show ({levels})",
        )
        parser.add_argument(
            "-c", "--contents", action="store_true", help="show the values (as --variants 3)"
        )
        parser.add_argument(
            "-t", "--tree", action="store_true", help="show the tree only (as --summary 1)"
        )
        parser.add_argument(
            "-i", "--inherit", action="store_true", help="with --tree, the inherited values too"
        )
        parser.add_argument(
            "--json-variants-dump",
            metavar="FILE",
            help="write the variants to FILE as JSON (Avocado's shape)",
        )

    def run(self, args: argparse.Namespace) -> int:
        if args.inherit and not args.tree:
            raise UsageError("--inherit can be used only with --tree")
        variants = load_variants(args)
        summary, shown = args.summary, args.variants
        if args.tree:  # Avocado's older options, mapped as Avocado maps them
            shown, summary = 0, summary + 1 + args.contents + 2 * args.inherit
        elif args.contents:
            shown += 2
        if variants is None:
            return exitcodes.OK
        if args.json_variants_dump:
            dumped = [variant.dump() for variant in variants]
            try:
                with open(args.json_variants_dump, "w", encoding="utf-8") as out:
                    json.dump(dumped, out)
            except OSError as exc:
                raise UsageError(
                    f"cannot write {args.json_variants_dump}: {exc.strerror}"
                ) from None
        for line in variants.to_str(summary=summary, variants=shown).splitlines():
            print(line)
        return exitcodes.OK
