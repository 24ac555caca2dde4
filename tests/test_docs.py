"""The docs stay true: links resolve, the options they name exist, their Python parses and
imports what it says from mhtest."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SUBCOMMANDS = (
    "run",
    "list",
    "sync-server",
    "variants",
    "jobs",
    "replay",
    *(f"sync {op}" for op in ("barrier", "exchange", "post", "wait", "lock", "abort", "whoami")),
    "queue watch",
    "queue start-all",
    "queue mirror",
    "queue status",
)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@pytest.fixture(scope="module")
def cli_options() -> set[str]:
    found: set[str] = set()
    for command in SUBCOMMANDS:
        help_text = subprocess.run(
            [sys.executable, "-m", "mhtest", *command.split(), "--help"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        found |= set(re.findall(r"--[a-z][a-z-]+", help_text))
    return found


def test_there_are_docs_for_each_topic() -> None:
    names = {p.name for p in PAGES}
    for page in ("writing-tests.md", "multihost-and-sync.md", "hosts.md", "results.md"):
        assert page in names
    assert "plugins.md" in names and "python-api.md" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_options_named_exist(page: Path, cli_options: set[str]) -> None:
    text = page.read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+[a-z]", text))
    named -= {"--hosts=h1", "--no-deps", "--no-index", "--target", "--norc", "--noprofile"}
    named -= {"--any"}  # restraint's rstrnt-sync-block option
    unknown = sorted(o for o in named if o not in cli_options)
    assert not unknown, f"{page.name} names options mhtest does not have: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_parse_and_their_mhtest_imports_exist(page: Path) -> None:
    for code in blocks(page.read_text(), "python"):
        tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mhtest"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{page.name}: {node.module}.{alias.name}"
