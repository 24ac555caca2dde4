"""Tests of mhtest.hosts."""
