"""Resolver plugin: simple tests, any executable file (exit status 0 is PASS)."""

from __future__ import annotations

from mhtest.resolver import ExecResolver

__all__ = ["ExecResolver"]
