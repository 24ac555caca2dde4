"""Tests of mhtest.autoserv."""
