"""Resolver plugin: Autoserv control files (`*.srv`, `control`, `*.control`)."""

from __future__ import annotations

from mhtest.autoserv.controlfile import ControlResolver

__all__ = ["ControlResolver"]
