"""Tests of mhtest.report."""
