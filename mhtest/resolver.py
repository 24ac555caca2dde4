"""References → TestSpecs, without importing the test files.

A reference is a file, a directory (searched recursively) or `file.py:Filter`, where
the part after the colon is a regular expression that keeps the tests whose
`Class.method` name it matches (re.search, Avocado's rule: `f.py:C.test_(a|b)`). Each
file is offered to the resolver plugins in order; the first that recognises it wins.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Protocol

from mhtest.safeloader import MULTIHOST_BASES, TEST_BASES, Finder, TestClass, tag_list
from mhtest.spec import BROKEN, INSTRUMENTED, SIMPLE, TestSpec

__all__ = ["MULTIHOST_BASES", "TEST_BASES", "ResolutionError", "analyse_python", "resolve"]

LOG = logging.getLogger(__name__)

_SKIP_DIRS = {"__pycache__", ".git", ".tox", ".venv", "venv", "node_modules"}


class ResolutionError(Exception):
    """A reference cannot be resolved: one line naming it and what to do."""


class Resolver(Protocol):
    """A `mhtest.resolver` plugin: turns one file into TestSpecs, or None if not its kind."""

    name: str

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None: ...


def analyse_python(source: str, filename: str) -> list[TestClass]:
    """The test classes of a Python file (see mhtest.safeloader).

    Raises SyntaxError for a file that does not parse.
    """
    return Finder().test_classes(source, filename)


def split_reference(ref: str) -> tuple[str, str | None]:
    """`file.py:Class.method` → (file, filter); a path that exists as given wins."""
    if ":" in ref and not os.path.exists(ref):
        path, _, flt = ref.rpartition(":")
        if path:
            return path, flt or None
    return ref, None


def broken_spec(path: str, display: str, reason: str) -> TestSpec:
    return TestSpec(ref=display, kind=BROKEN, path=path, error=reason)


def _walk(directory: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def resolve(
    references: str | Iterable[str],
    resolvers: list[Resolver] | None = None,
    tags: Iterable[str] = (),
    include_empty: bool = False,
    include_empty_key: bool = False,
) -> list[TestSpec]:
    """References (files, directories, FILE.py:Filter) → TestSpecs: the public entry point.

    `resolvers` default to every `mhtest.resolver` plugin; `tags` are --filter-by-tags
    expressions. Raises ResolutionError naming a reference that is not a test.
    """
    refs = [references] if isinstance(references, (str, os.PathLike)) else list(references)
    specs = resolve_references([str(r) for r in refs], resolvers or plugin_resolvers())
    return filter_by_tags(specs, list(tags), include_empty, include_empty_key)


def plugin_resolvers() -> list[Resolver]:
    """The resolver plugins, in the order they are asked (python, control, then exec).

    The built-in ones are always there, registered or not (an installation made before a
    built-in resolver was added lacks its entry point until it is installed again).
    """
    from mhtest.plugins import load_plugins

    found = [cls() for _, cls in load_plugins("mhtest.resolver")]
    names = {getattr(r, "name", None) for r in found}
    found += [r for r in builtin_resolvers() if r.name not in names]
    return sorted(found, key=lambda r: getattr(r, "priority", 30))


def builtin_resolvers() -> list[Resolver]:
    """The built-in resolvers, without loading any plugin (what workers need, and fast)."""
    from mhtest.autoserv.controlfile import ControlResolver

    return [PythonResolver(), ControlResolver(), ExecResolver()]


def resolve_references(references: Iterable[str], resolvers: list[Resolver]) -> list[TestSpec]:
    """Turn every reference into TestSpecs, in order; raise ResolutionError for a bad one."""
    specs: list[TestSpec] = []
    for ref in references:
        path_text, flt = split_reference(ref)
        pattern = _compile(ref, flt)
        path = Path(path_text)
        if not path.exists():
            raise ResolutionError(f"reference {ref!r}: no such file or directory (check the path)")
        if path.is_dir():
            if flt:
                raise ResolutionError(f"reference {ref!r}: a filter needs a file, not a directory")
            for file in _walk(path):
                # Worker tests need a multi-host test (or --sync) around them: they run
                # when named, and a directory walk leaves them out.
                found = _resolve_file(file, None, resolvers, explicit=False)
                specs += [s for s in found if not s.worker_only]
            continue
        found = _resolve_file(path, pattern, resolvers, explicit=True)
        if pattern is None and any(not s.worker_only for s in found):
            # A file with a multi-host test and its workers runs the multi-host test; its
            # workers run when it names them (or when the user names their class).
            found = [s for s in found if not s.worker_only]
        if not found:
            raise ResolutionError(
                f"reference {ref!r}: no tests found (not a test class file nor an executable; "
                "make it executable to run it as a simple test)"
                if flt is None
                else f"reference {ref!r}: no test matches {flt!r}"
            )
        specs += found
    return specs


def _compile(ref: str, flt: str | None) -> re.Pattern[str] | None:
    if flt is None:
        return None
    try:
        return re.compile(flt)
    except re.error as exc:
        raise ResolutionError(
            f"reference {ref!r}: {flt!r} is not a valid regular expression ({exc})"
        ) from None


def _resolve_file(
    path: Path, pattern: re.Pattern[str] | None, resolvers: list[Resolver], explicit: bool
) -> list[TestSpec]:
    display = _display(path)
    for resolver in resolvers:
        found = resolver.resolve(path, display)
        if found is None:
            continue
        if pattern is not None:
            found = [s for s in found if s.kind == BROKEN or pattern.search(_test_part(s))]
        return found
    return []


def _test_part(spec: TestSpec) -> str:
    return f"{spec.class_name}.{spec.method}" if spec.class_name else spec.ref


def filter_by_tags(
    specs: list[TestSpec],
    expressions: list[str],
    include_empty: bool = False,
    include_empty_key: bool = False,
) -> list[TestSpec]:
    """Avocado's tag filter (avocado.core.tags).

    In one expression, comma-separated tags must all match: `tag` (the test has it),
    `-tag` (it has not, as a tag nor as a key), `key:value` (its `key` tags include
    `value`), `key:-value` (they do not); several expressions are alternatives. Untagged
    tests are kept only with `include_empty`; with `include_empty_key`, a `key:value`
    matches a test that has no `key` tags at all.
    """
    if not expressions:
        return specs
    parsed = [_parse_expression(expr) for expr in expressions]
    kept = []
    for spec in specs:
        tags = _tag_dict(spec.tags)
        if not tags:
            if include_empty:
                kept.append(spec)
        elif any(_matches(tags, *p, include_empty_key) for p in parsed):
            kept.append(spec)
    return kept


def _parse_expression(expr: str) -> tuple[set[str], set[str], dict[str, str]]:
    must, must_not, key_values = set(), set(), {}
    for tag in filter(None, expr.split(",")):
        if tag.startswith("-"):
            must_not.add(tag[1:])
        elif ":" in tag:
            key, value = tag.split(":", 1)
            key_values[key] = value
        else:
            must.add(tag)
    return must, must_not, key_values


def _matches(
    tags: dict[str, Any], must: set, must_not: set, key_values: dict, include_empty_key: bool
) -> bool:
    if must_not & tags.keys() or not must <= tags.keys():
        return False
    for key, value in key_values.items():
        if key not in tags:
            if include_empty_key:
                continue
            return False
        values = tags[key] or set()
        if value.startswith("-") and value[1:] in values:
            return False
        if not value.startswith("-") and value not in values:
            return False
    return True


def _tag_dict(tags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep:
            out[key] = (out.get(key) or set()) | {value}
        else:
            out.setdefault(tag, None)
    return out


class PythonResolver:
    """A .py file whose classes derive from mhtest.Test: one spec per test method."""

    name = "python"
    priority = 10

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None:
        if path.suffix != ".py":
            return None
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return [broken_spec(str(path), display, f"cannot read {display}: {exc}")]
        try:
            classes = analyse_python(source, str(path))
        except SyntaxError as exc:
            reason = f"{display}:{exc.lineno}: syntax error: {exc.msg}"
            return [broken_spec(str(path), display, reason)]
        specs = []
        for found in classes:
            info = found.info
            for method, tags in found.methods:
                specs.append(
                    TestSpec(
                        ref=f"{display}:{info.name}.{method}",
                        kind=INSTRUMENTED,
                        path=str(path.resolve()),
                        class_name=info.name,
                        method=method,
                        tags=tag_list(tags),
                        timeout=found.timeout,
                        multihost=found.multihost,
                        worker_only="worker" in info.directives,
                    )
                )
        return specs or None


class ExecResolver:
    """An executable regular file is one simple test (exit status 0 is PASS)."""

    name = "exec"
    priority = 50

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None:
        if not path.is_file() or not os.access(path, os.X_OK):
            return None
        return [TestSpec(ref=display, kind=SIMPLE, path=str(path.resolve()))]
