"""A controller with many files open (hundreds of hosts, a thousand tests): waits on SSH
channels and sockets still work once their descriptors are past 1024, where select() stops."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from mhtest import fdwait


@pytest.fixture
def fds_past_1024():
    """Opens descriptors until the next one is past 1024 (the limit raised if need be)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"the open-files hard limit is {hard}: cannot get past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    held = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd > 1100:
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_readable_and_writable_past_1024(fds_past_1024) -> None:
    a, b = socket.socketpair()
    with a, b:
        assert a.fileno() > 1024
        assert fdwait.readable([a], 0.05) == []
        b.sendall(b"x")
        assert fdwait.readable([a, a.fileno()], 1) == [a, a.fileno()]
        assert fdwait.writable([b], 0) == [b]


def test_ssh_commands_with_descriptors_past_1024(ssh_host, fds_past_1024) -> None:
    """A new connection's socket and channel pipes are all past 1024."""
    ssh_host.drop_connection()
    assert ssh_host.run("echo many").stdout == "many\n"
    proc = ssh_host.start("sleep 0.3; echo later")
    assert proc.communicate(timeout=10).stdout == "later\n"
