"""SSHHost faults against real sshd hosts: host keys, authentication, unreachable hosts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mhtest.hosts import AuthenticationError, HostKeyError, HostUnreachable

pytestmark = pytest.mark.timeout(60)


def test_changed_host_key_is_refused_naming_host_and_file(broken_host) -> None:
    info = broken_host("changed-host-key")
    with pytest.raises(HostKeyError) as err, info.make_host() as host:
        host.run("true")
    message = str(err.value)
    assert "CHANGED" in message
    assert f"[{info.address}]:{info.port}" in message
    assert info.known_hosts in message
    # even accept_new_host_keys never accepts a changed key
    with pytest.raises(HostKeyError), info.make_host(accept_new_host_keys=True) as host:
        host.run("true")


def test_unknown_host_key_refused_unless_accepted_then_recorded(broken_host) -> None:
    info = broken_host("unknown-host-key")
    with pytest.raises(HostKeyError, match="unknown host key") as err, info.make_host() as host:
        host.run("true")
    assert info.known_hosts in str(err.value)
    with info.make_host(accept_new_host_keys=True) as host:
        assert host.run("echo ok").stdout == "ok\n"
    recorded = Path(info.known_hosts).read_text()
    assert recorded.startswith(f"[{info.address}]:{info.port} ssh-ed25519 ")
    # now known: a strict connection works
    with info.make_host() as host:
        assert host.run("true").ok


def test_authentication_failure_names_key_and_fix(broken_host) -> None:
    info = broken_host("bad-key")
    with pytest.raises(AuthenticationError) as err, info.make_host() as host:
        host.run("true")
    message = str(err.value)
    assert info.key_file in message
    assert "authorized_keys" in message and "ssh-copy-id" in message
    assert err.value.keys == (info.key_file,)


def test_missing_key_file_is_reported(sshd_host, tmp_path) -> None:
    missing = str(tmp_path / "no-such-key")
    host = sshd_host.make_host(key_file=missing)
    with pytest.raises(AuthenticationError, match="could not be read"), host:
        host.run("true")


def test_refused_connection_is_unreachable_quickly(broken_host) -> None:
    info = broken_host("refused")
    started = time.monotonic()
    host = info.make_host()
    with pytest.raises(HostUnreachable, match="connection refused") as err, host:
        host.run("true")
    assert str(info.port) in str(err.value)
    assert time.monotonic() - started < 5
    with info.make_host() as host:
        assert host.is_up() is False
        assert host.wait_up(timeout=1) is False


def test_unknown_host_name_is_unreachable(sshd_host) -> None:
    from mhtest.hosts import SSHHost

    host = SSHHost("no-such-host.invalid", key_file=sshd_host.key_file)
    with pytest.raises(HostUnreachable, match="unknown host name"), host:
        host.run("true")


def test_silent_server_times_out_instead_of_hanging(sshd_host) -> None:
    """A port that accepts connections but never speaks SSH (a hung host)."""
    import socket

    from mhtest.hosts import SSHHost

    with socket.socket() as silent:
        silent.bind((sshd_host.address, 0))
        silent.listen(5)
        host = SSHHost(
            sshd_host.address,
            port=silent.getsockname()[1],
            key_file=sshd_host.key_file,
            known_hosts=sshd_host.known_hosts,
            connect_timeout=1,
        )
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="no SSH answer within 1 s"), host:
            host.run("true")
        assert time.monotonic() - started < 5


def test_connection_lost_mid_command(tmp_path: Path) -> None:
    """The host's sshd session dies under a running command: an error, not a hang."""
    import os
    import signal
    import subprocess
    import threading

    from mhtest.hosts.testing import SshdPool

    with SshdPool(tmp_path / "sshd") as pool:
        info = pool.hosts(1)[0]
        with info.make_host() as host:
            host.run("true")

            def cut() -> None:
                # Every sshd process serving connections of this test's own sshd (as root one
                # of them holds the socket, as a user another one does): the link drops.
                todo, found = [info.pid], []
                while todo:
                    children = subprocess.run(
                        ["pgrep", "-P", str(todo.pop())], capture_output=True, text=True
                    ).stdout.split()
                    todo += [int(c) for c in children]
                    found += [int(c) for c in children]
                for pid in found:
                    try:
                        if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                            os.kill(pid, signal.SIGKILL)
                    except (FileNotFoundError, ProcessLookupError):
                        pass  # already gone

            threading.Timer(0.5, cut).start()
            with pytest.raises(HostUnreachable, match="connection lost while running 'sleep 5'"):
                host.run("sleep 5", timeout=20)
            assert host.run("echo reconnected").stdout == "reconnected\n"


SILENT_SCRIPT = """
import socket
import sys

from mhtest.hosts import HostUnreachable, SSHHost

silent = socket.create_server(("127.0.0.1", 0))
host = SSHHost("127.0.0.1", port=silent.getsockname()[1], key_file=sys.argv[1],
               known_hosts=sys.argv[2], connect_timeout=1)
try:
    host.run("true")
except HostUnreachable as exc:
    print(exc)
host.close()
"""


def test_a_script_without_logging_gets_no_paramiko_traceback(sshd_host, tmp_path) -> None:
    """A silent port, as a rebooting guest's is, from a program that set up no logging:
    mhtest's one-line error, not paramiko's transport thread's traceback on stderr."""
    import subprocess
    import sys

    script = tmp_path / "silent.py"
    script.write_text(SILENT_SCRIPT)
    args = [sys.executable, str(script), sshd_host.key_file, sshd_host.known_hosts]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert "no SSH answer within 1 s" in done.stdout, done
    assert done.stderr == "", done.stderr
