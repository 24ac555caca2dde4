"""Resolver plugin: instrumented tests (mhtest.Test subclasses) found by reading the AST."""

from __future__ import annotations

from pathlib import Path

from mhtest.resolver import analyse_python, broken_spec
from mhtest.spec import INSTRUMENTED, TestSpec


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
            return [
                broken_spec(
                    str(path),
                    display,
                    f"{display}:{exc.lineno}: syntax error: {exc.msg}",
                )
            ]
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
