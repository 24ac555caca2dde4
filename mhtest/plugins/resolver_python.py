"""Resolver plugin: instrumented tests (mhtest.Test subclasses) found by reading the AST."""

from __future__ import annotations

from mhtest.resolver import PythonResolver

__all__ = ["PythonResolver"]
