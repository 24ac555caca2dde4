"""References → TestSpecs, without importing the test files.

A reference is a file, a directory (searched recursively) or `file.py:Filter`, where
the part after the colon keeps the tests whose `Class.method` name contains it
(Avocado's rule). Each file is offered to the resolver plugins in order; the first
that recognises it wins.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

from mhtest.spec import BROKEN, INSTRUMENTED, SIMPLE, TestSpec

LOG = logging.getLogger(__name__)

#: Base classes that make a class an instrumented test.
TEST_BASES = {"Test", "MultiHostTest", "MultihostMigration"}
MULTIHOST_BASES = {"MultiHostTest", "MultihostMigration"}
#: Framework bases that bring their own test method: a subclass that writes none runs it.
INHERITED_METHODS = {"MultihostMigration": ["test"]}
_DIRECTIVE = re.compile(r":(?:mhtest|avocado):\s*(\w+)(?:=(\S*))?")
_SKIP_DIRS = {"__pycache__", ".git", ".tox", ".venv", "venv", "node_modules"}


class ResolutionError(Exception):
    """A reference cannot be resolved: one line naming it and what to do."""


class Resolver(Protocol):
    """A `mhtest.resolver` plugin: turns one file into TestSpecs, or None if not its kind."""

    name: str

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None: ...


@dataclass
class ClassInfo:
    """What the AST says about one class of a test file."""

    name: str
    bases: list[str]
    methods: list[str]
    tags: set[str] = field(default_factory=set)
    method_tags: dict[str, set[str]] = field(default_factory=dict)
    directives: set[str] = field(default_factory=set)
    timeout: float | None = None


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _docstring_directives(node: ast.AST) -> tuple[set[str], set[str]]:
    doc = ast.get_docstring(node) or ""  # type: ignore[arg-type]
    tags: set[str] = set()
    directives: set[str] = set()
    for key, value in _DIRECTIVE.findall(doc):
        if key == "tags":
            tags.update(t for t in value.split(",") if t)
        else:
            directives.add(key)
    return tags, directives


def _class_info(node: ast.ClassDef) -> ClassInfo:
    tags, directives = _docstring_directives(node)
    info = ClassInfo(
        node.name, [_base_name(b) for b in node.bases], [], tags, directives=directives
    )
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith(
            "test"
        ):
            info.methods.append(item.name)
            info.method_tags[item.name] = _docstring_directives(item)[0]
        elif isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
            targets = [t.id for t in item.targets if isinstance(t, ast.Name)]
            if "timeout" in targets and isinstance(item.value.value, (int, float)):
                info.timeout = float(item.value.value)
    return info


def analyse_python(source: str, filename: str) -> list[tuple[ClassInfo, bool, list[str]]]:
    """The test classes of a Python file: [(class, is_multihost, methods incl. inherited)].

    Raises SyntaxError for a file that does not parse.
    """
    tree = ast.parse(source, filename=filename)
    classes = {n.name: _class_info(n) for n in tree.body if isinstance(n, ast.ClassDef)}

    def lineage(name: str, seen: frozenset[str] = frozenset()) -> list[ClassInfo]:
        info = classes.get(name)
        if info is None or name in seen:
            return []
        chain = [info]
        for base in info.bases:
            chain += lineage(base, seen | {name})
        return chain

    found = []
    for info in classes.values():
        chain = lineage(info.name)
        bases = {b for c in chain for b in c.bases}
        if "disable" in info.directives:
            continue
        if not (bases & TEST_BASES or "enable" in info.directives):
            continue
        methods: list[str] = []
        for c in chain:
            methods += [m for m in c.methods if m not in methods]
        if not methods:
            methods = next(
                (INHERITED_METHODS[b] for b in sorted(bases) if b in INHERITED_METHODS), []
            )
        if info.timeout is None:
            info.timeout = next((c.timeout for c in chain if c.timeout is not None), None)
        found.append((info, bool(bases & MULTIHOST_BASES), methods))
    return found


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
) -> list[TestSpec]:
    """References (files, directories, FILE.py:Filter) → TestSpecs: the public entry point.

    `resolvers` default to every `mhtest.resolver` plugin; `tags` are --filter-by-tags
    expressions. Raises ResolutionError naming a reference that is not a test.
    """
    refs = [references] if isinstance(references, (str, os.PathLike)) else list(references)
    specs = resolve_references([str(r) for r in refs], resolvers or plugin_resolvers())
    return filter_by_tags(specs, list(tags), include_empty)


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
        found = _resolve_file(path, flt, resolvers, explicit=True)
        if flt is None and any(not s.worker_only for s in found):
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


def _resolve_file(
    path: Path, flt: str | None, resolvers: list[Resolver], explicit: bool
) -> list[TestSpec]:
    display = _display(path)
    for resolver in resolvers:
        found = resolver.resolve(path, display)
        if found is None:
            continue
        if flt is not None:
            found = [s for s in found if s.kind == BROKEN or flt in _test_part(s)]
        return found
    return []


def _test_part(spec: TestSpec) -> str:
    return f"{spec.class_name}.{spec.method}" if spec.class_name else spec.ref


def filter_by_tags(
    specs: list[TestSpec], expressions: list[str], include_empty: bool = False
) -> list[TestSpec]:
    """Avocado's tag filter: comma-separated tags must all match ('-tag': must not have);
    several expressions are alternatives. Untagged tests go only with include_empty."""
    if not expressions:
        return specs
    kept = []
    for spec in specs:
        tags = set(spec.tags)
        if not tags:
            if include_empty:
                kept.append(spec)
            continue
        for expr in expressions:
            wanted = [t for t in expr.split(",") if t]
            if all((t[1:] not in tags) if t.startswith("-") else (t in tags) for t in wanted):
                kept.append(spec)
                break
    return kept


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
        for info, multihost, methods in classes:
            for method in methods:
                specs.append(
                    TestSpec(
                        ref=f"{display}:{info.name}.{method}",
                        kind=INSTRUMENTED,
                        path=str(path.resolve()),
                        class_name=info.name,
                        method=method,
                        tags=sorted(info.tags | info.method_tags.get(method, set())),
                        timeout=info.timeout,
                        multihost=multihost,
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
