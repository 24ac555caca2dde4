"""CLI plugin: `mhtest list`, what `mhtest run` would run, with the kind of each test."""

from __future__ import annotations

import argparse
from typing import Any

from mhtest.cli import CLICommand
from mhtest.plugins.cli_run import add_selection_options, resolve_selection


class ListCommand(CLICommand):
    """List the tests that references resolve to, without running them."""

    name = "list"
    help = "list the tests the references resolve to (nothing is run or imported)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_selection_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        specs = resolve_selection(args)
        width = max(len(_kind(s)) for s in specs)
        for spec in specs:
            kind = _kind(spec)
            tags = f"  [{','.join(spec.tags)}]" if spec.tags else ""
            error = f"  ({spec.error})" if spec.error else ""
            print(f"{kind:<{width}}  {spec.ref}{tags}{error}")
        return 0


def _kind(spec: Any) -> str:
    """A spec's kind as listed: instrumented, simple, instrumented/multihost, control-server…"""
    from mhtest.spec import INSTRUMENTED

    return spec.kind + ("/multihost" if spec.multihost and spec.kind == INSTRUMENTED else "")
