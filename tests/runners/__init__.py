"""Tests of mhtest.runners."""
