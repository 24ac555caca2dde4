"""Tests of mhtest.sync."""
