"""Tests of mhtest.virt."""
