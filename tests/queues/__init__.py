"""Tests of mhtest.queue (named queues: a tests/queue package would hide the stdlib's queue)."""
